//! `cargo xtask bench find`: `dbackup find` over 50 drive backups of 100,000 files each (issue 14 item 9: read-only
//! and fast, the indexes only), against the plain tools over the same files: `grep -c -F` over the 50 index files
//! (the floor: one pass over the bytes, no parsing) and `tar -tf | grep -c` over the 50 archives (what finding a
//! name costs without an index; one repetition, it reads every archive).
//!
//! The fixture is made cheaply from one real run: a tree of `--files` empty files, `dbackup collect` and `dbackup
//! external` onto a plain directory once, then the backup directory cloned under older stamps with hard links (`cp
//! -al`'s way), each with its own `backup.json` (stamp and times), so every clone is a verified backup whose index
//! and archive are the real ones.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::measure::{Cache, Samples, Table};
use super::status::clone_drive_backups;
use crate::packages::Need;
use crate::util::{heading, remove_dir_if_exists};

#[derive(Debug, clap::Args)]
pub struct FindArgs {
    /// Drive backups (one a day)
    #[arg(long, default_value_t = 50)]
    pub backups: usize,
    /// Files in each backup (empty files, 1,000 to a directory)
    #[arg(long, default_value_t = 100_000)]
    pub files: usize,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Repetitions of the `tar -tf` baseline (0: skip it)
    #[arg(long, default_value_t = 1)]
    pub tar_reps: usize,
    /// How the page cache is treated before each timed run
    #[arg(long, value_enum, default_value_t = Cache::Warm)]
    pub cache: Cache,
}

struct World {
    bin: PathBuf,
    work: PathBuf,
    config: PathBuf,
    drive: PathBuf,
}

pub fn run(args: FindArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1 && args.backups >= 1 && args.files >= 1000);
    let (sh, bin) = super::measure::prepare("find", None, Need::Bench, &[], "")?;
    let work = super::measure::fresh_work_dir(&sh, "find")?;
    let w = World {
        bin,
        config: work.join("config.json"),
        drive: work.join("drive"),
        work,
    };
    heading("bench find: the fixture");
    let started = Instant::now();
    let dirs = w.fixture(&args)?;
    let indexes: Vec<PathBuf> = dirs.iter().map(|d| d.join("data.index.jsonl")).collect();
    let archives: Vec<PathBuf> = dirs.iter().map(|d| d.join("data.tar")).collect();
    let index_bytes: u64 = indexes
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "made in {:.1}s: {} backups of {} files, {} MiB of index in all",
        started.elapsed().as_secs_f64(),
        dirs.len(),
        args.files,
        index_bytes >> 20
    );

    // What each row looks for: dbackup's pattern, and grep's fixed string for the same paths.
    let one = format!("file-{:06}.txt", args.files / 2 + 45);
    let rows: [(&str, &str, &str); 3] = [
        ("a literal name (1 path per backup)", &one, &one),
        (
            "a glob on the name, *77.txt (1% of paths)",
            "*77.txt",
            "77.txt\"",
        ),
        ("a name in no backup", "no-such-name", "no-such-name"),
    ];
    // Each row's answer, checked before timing: dbackup finds what grep counts.
    for (label, pattern, fixed) in rows {
        let out = w
            .dbackup()
            .args(["--json", "find", "--source", "drive", pattern])
            .output()?;
        let versions: usize = if out.stdout.is_empty() {
            0
        } else {
            let v: Value = serde_json::from_slice(&out.stdout).context("find --json")?;
            v["matches"].as_array().map_or(0, |m| {
                m.iter()
                    .map(|m| m["versions"].as_array().map_or(0, Vec::len))
                    .sum()
            })
        };
        let counted = grep_count(fixed, &indexes)?;
        if versions as u64 != counted {
            bail!("{label}: dbackup find found {versions} versions, grep counts {counted} lines");
        }
        eprintln!("{label}: {versions} versions");
    }

    heading(&format!(
        "bench find: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let labels: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let mut table = Table::new(&["dbackup find", "grep -c -F"], &labels, &[(0, 1)]);
    for rep in 0..=args.reps {
        for (i, (_, pattern, fixed)) in rows.iter().enumerate() {
            args.cache.prepare()?;
            let d = w.timed(&["find", "--source", "drive", pattern])?;
            args.cache.prepare()?;
            let start = Instant::now();
            grep_count(fixed, &indexes)?;
            let g = start.elapsed();
            // The first round warms the cache, untimed.
            if rep > 0 {
                table.push(i, 0, d);
                table.push(i, 1, g);
            }
        }
    }
    let mut tar = Vec::new();
    for _ in 0..args.tar_reps {
        args.cache.prepare()?;
        let start = Instant::now();
        tar_count(&one, &archives)?;
        tar.push(start.elapsed());
    }
    remove_dir_if_exists(&w.work)?;

    println!();
    println!(
        "bench find: {} drive backups of {} files ({} MiB of index), --source drive; {} repetitions; {}",
        dirs.len(),
        args.files,
        index_bytes >> 20,
        args.reps,
        args.cache.describe()
    );
    table.print();
    if !tar.is_empty() {
        let s = Samples(tar);
        println!(
            "\n`tar -tf | grep -c` over the {} archives (no index), the literal name: {} s ({:.1}x dbackup find)",
            dirs.len(),
            s.cell(),
            s.median() / table.median(0, 0)
        );
    }
    Ok(())
}

/// `grep -c -F fixed` over the files: the lines counted.
fn grep_count(fixed: &str, files: &[PathBuf]) -> Result<u64> {
    let out = Command::new("grep")
        .args(["-c", "-F", "-h", "--", fixed])
        .args(files)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run grep")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}

/// `tar -tf archive | grep -c -F name` for each archive.
fn tar_count(name: &str, archives: &[PathBuf]) -> Result<u64> {
    let mut n = 0;
    for a in archives {
        let out = Command::new("sh")
            .arg("-c")
            .arg("tar -tf \"$1\" | grep -c -F -- \"$2\"; true")
            .arg("sh")
            .arg(a)
            .arg(name)
            .output()
            .context("cannot run tar")?;
        n += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
    }
    Ok(n)
}

impl World {
    fn dbackup(&self) -> Command {
        let mut c = super::measure::dbackup_command(&self.bin, &self.work, &self.config);
        c.env("TZ", "UTC");
        c
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let out = self.dbackup().args(args).output()?;
        if !out.status.success() {
            bail!(
                "dbackup {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// One timed run (stdout discarded; exit 1, nothing found, is an answer too).
    fn timed(&self, args: &[&str]) -> Result<Duration> {
        let mut c = self.dbackup();
        c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = c.output()?;
        let took = start.elapsed();
        if !matches!(out.status.code(), Some(0 | 1)) || !out.stderr.is_empty() {
            bail!(
                "dbackup {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    /// The tree, one real backup, its clones; the backup directories, newest first.
    fn fixture(&self, args: &FindArgs) -> Result<Vec<PathBuf>> {
        for d in ["home", "state", "xdg-config", "drive"] {
            std::fs::create_dir_all(self.work.join(d))?;
        }
        let src = self.work.join("src/data");
        for i in 0..args.files {
            let dir = src.join(format!("d{:03}", i / 1000));
            if i % 1000 == 0 {
                std::fs::create_dir_all(&dir)?;
            }
            std::fs::File::create(dir.join(format!("file-{i:06}.txt")))?;
        }
        let config = serde_json::json!({
            "backup_root": self.work.join("root"),
            "backup_sets": [ { "name": "data", "sources": [src] } ],
            "destinations": [ { "name": "drive", "path": self.drive, "require_mount": false } ],
            "image": { "kit": false },
        });
        std::fs::write(&self.config, serde_json::to_string_pretty(&config)?)?;
        self.run(&["collect"])?;
        self.run(&["external"])?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        // The clones' archives and indexes are hard links: they take no room.
        let dirs = clone_drive_backups(&self.drive.join("backups"), args.backups, now, true)?;
        Ok(dirs)
    }
}
