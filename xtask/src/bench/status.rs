//! `cargo xtask bench status`: how long `dbackup status` takes with many snapshots and external backups present,
//! however many files the snapshots hold. The goal of issue 5 is under 200 ms with 1,000 snapshots and 50 external
//! backups: status reads metadata only and never walks a snapshot tree.
//!
//! The fixture is made from real ones: `dbackup collect` and `dbackup external` run once on a tiny tree (with TZ=UTC),
//! then their metadata is cloned under older names (one snapshot an hour, one external backup a day), every snapshot
//! directory is filled with hard links (`--files` each, `--newest-files` in the newest of each set, the one a naive
//! status would measure), and the run log is filled to its size bound (plus a rotated file) with real records, with
//! a second, absent destination that no record names, so the log is read to its end. For comparison the table also
//! times a walk of the snapshot trees, which is what status must never do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::measure::{Cache, Table};
use crate::packages::Need;
use crate::util::{heading, remove_dir_if_exists};

/// The goal of issue 5: `dbackup status` answers within this.
const GOAL: Duration = Duration::from_millis(200);
/// The run log's size bound (`src/runlog.rs` MAX_BYTES).
const LOG_BYTES: usize = 1024 * 1024;
const SETS: [&str; 2] = ["data", "config"];

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Snapshots in all, split between two sets (one an hour, going back from now)
    #[arg(long, default_value_t = 1000)]
    pub snapshots: usize,
    /// Verified external backups on the destination (one a day)
    #[arg(long, default_value_t = 50)]
    pub backups: usize,
    /// Files in each snapshot (hard links: they cost directory entries, not space)
    #[arg(long, default_value_t = 100)]
    pub files: usize,
    /// Files in the newest snapshot of each set
    #[arg(long, default_value_t = 100_000)]
    pub newest_files: usize,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    /// How the page cache is treated before each timed run
    #[arg(long, value_enum, default_value_t = Cache::Warm)]
    pub cache: Cache,
}

/// The paths of the bench, under `target/bench/<name>`.
pub(super) struct World {
    bin: PathBuf,
    pub(super) work: PathBuf,
    config: PathBuf,
    root: PathBuf,
    drive: PathBuf,
}

/// Builds the release binary and the fixture under `target/bench/<name>` (see the module documentation), checked.
pub(super) fn fixture(name: &str, args: &StatusArgs) -> Result<World> {
    let (sh, bin) = super::measure::prepare(name, None, Need::Bench, &[], "")?;
    let work = super::measure::fresh_work_dir(&sh, name)?;
    let w = World {
        bin,
        config: work.join("config.json"),
        root: work.join("root"),
        drive: work.join("drive"),
        work,
    };
    heading(&format!("bench {name}: the fixture"));
    let started = Instant::now();
    w.make_fixture(args)?;
    eprintln!(
        "made in {:.1}s: {} snapshots ({} files each, {} in the newest of each set), {} external backups, a full run log",
        started.elapsed().as_secs_f64(),
        args.snapshots,
        args.files,
        args.newest_files,
        args.backups
    );
    w.check(args)?;
    Ok(w)
}

pub fn run(args: StatusArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    anyhow::ensure!(
        args.snapshots >= SETS.len() && args.backups >= 1,
        "--snapshots must be at least 2 and --backups at least 1"
    );
    let w = fixture("status", &args)?;

    heading(&format!(
        "bench status: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let rows = [
        "dbackup status",
        "dbackup --json status",
        "walking the snapshot trees (what status never does)",
    ];
    let mut table = Table::new(&["seconds"], &rows, &[]);
    // Untimed warm-up of each.
    w.status(false)?;
    w.status(true)?;
    let walked = w.walk();
    for rep in 0..args.reps {
        for (row, json) in [(0, false), (1, true)] {
            args.cache.prepare()?;
            table.push(row, 0, w.status(json)?);
        }
        if rep < 3 {
            args.cache.prepare()?;
            let start = Instant::now();
            w.walk();
            table.push(2, 0, start.elapsed());
        }
    }
    remove_dir_if_exists(&w.work)?;

    println!();
    println!(
        "bench status: {} snapshots in {} sets ({} files each, {} in each set's newest: {} entries walked), \
         {} external backups, a run log at its size bound",
        args.snapshots,
        SETS.len(),
        args.files,
        args.newest_files,
        walked,
        args.backups
    );
    println!("{} repetitions; {}", args.reps, args.cache.describe());
    table.print();
    let worst = [0, 1]
        .iter()
        .map(|&r| table.median(r, 0))
        .fold(0.0, f64::max);
    let verdict = if worst < GOAL.as_secs_f64() {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "\ngoal: dbackup status < {} ms: {verdict} (worst median {:.1} ms)",
        GOAL.as_millis(),
        worst * 1000.0
    );
    Ok(())
}

impl World {
    fn dbackup(&self) -> Command {
        let mut c = super::measure::dbackup_command(&self.bin, &self.work, &self.config);
        c.env("TZ", "UTC")
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID");
        c
    }

    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .dbackup()
            .args(args)
            .output()
            .with_context(|| format!("cannot run dbackup {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "dbackup {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// One timed `dbackup status`.
    fn status(&self, json: bool) -> Result<Duration> {
        let mut c = self.dbackup();
        if json {
            c.arg("--json");
        }
        c.arg("status");
        self.timed(c)
    }

    /// One timed run of dbackup with these arguments (after the config).
    pub(super) fn time_args(&self, args: &[&str]) -> Result<Duration> {
        let mut c = self.dbackup();
        c.args(args);
        self.timed(c)
    }

    /// Runs `c` (stdout discarded) and times it; fails when it fails.
    fn timed(&self, mut c: Command) -> Result<Duration> {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = c.output().context("cannot run dbackup")?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "dbackup failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    /// Every entry under the backup root, as a naive status would visit them.
    fn walk(&self) -> u64 {
        walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .count() as u64
    }

    fn make_fixture(&self, args: &StatusArgs) -> Result<()> {
        for d in ["home", "state", "xdg-config", "drive"] {
            std::fs::create_dir_all(self.work.join(d))?;
        }
        for set in SETS {
            for i in 0..3 {
                std::fs::create_dir_all(self.work.join("src").join(set))?;
                std::fs::write(
                    self.work.join(format!("src/{set}/file-{i}")),
                    format!("{set} {i}\n"),
                )?;
            }
        }
        let config = serde_json::json!({
            "backup_root": self.root,
            "backup_sets": SETS.iter().map(|s| serde_json::json!({
                "name": s, "sources": [self.work.join("src").join(s)] })).collect::<Vec<_>>(),
            "destinations": [
                { "name": "drive", "path": self.drive, "require_mount": false },
                { "name": "offsite", "path": self.work.join("offsite"), "priority": -1 },
            ],
        });
        std::fs::write(&self.config, serde_json::to_string_pretty(&config)?)?;
        self.run(&["collect"])?;
        self.run(&["external", "--destination", "drive"])?;

        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let per_set = args.snapshots / SETS.len();
        // Files to hard-link into the snapshots, many of them: ext4 allows 65,000 links to one inode.
        let pool = self.work.join("pool");
        std::fs::create_dir_all(&pool)?;
        for i in 0..POOL {
            std::fs::write(pool.join(format!("f{i}")), format!("pool file {i}\n"))?;
        }
        for set in SETS {
            let (real, template) = self.newest_snapshot(set)?;
            fill(&self.root.join(&real), &pool, args.newest_files)?;
            for i in 1..per_set {
                let t = now - 3600 * i as i64;
                let name = format!("{set}-{}", stamp(t));
                let mut meta = template.clone();
                meta["name"] = Value::from(name.clone());
                meta["started"] = Value::from(rfc3339(t));
                meta["finished"] = Value::from(rfc3339(t + 60));
                meta["link_dest"] = serde_json::json!([format!("{set}-{}", stamp(t - 3600))]);
                std::fs::write(
                    self.root.join(format!("{name}.json")),
                    serde_json::to_vec_pretty(&meta)?,
                )?;
                let dir = self.root.join(&name);
                std::fs::create_dir(&dir)?;
                fill(&dir, &pool, args.files)?;
            }
        }

        clone_drive_backups(&self.drive.join("backups"), args.backups, now, false)?;

        // The run log at its bound, and a rotated one, from the real records.
        let state = self.work.join("state/dbackup");
        let lines: Vec<String> = std::fs::read_to_string(state.join("log.jsonl"))?
            .lines()
            .map(String::from)
            .collect();
        anyhow::ensure!(!lines.is_empty(), "the runs left no log");
        for (file, limit) in [
            ("log.jsonl.1", LOG_BYTES),
            ("log.jsonl", LOG_BYTES * 9 / 10),
        ] {
            let mut text = String::new();
            while text.len() < limit {
                for l in &lines {
                    text.push_str(l);
                    text.push('\n');
                }
            }
            std::fs::write(state.join(file), text)?;
        }
        Ok(())
    }

    /// The newest snapshot of a set and its metadata.
    fn newest_snapshot(&self, set: &str) -> Result<(String, Value)> {
        let name = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{set}-2")) && !n.ends_with(".json"))
            .max()
            .with_context(|| format!("no snapshot of {set}"))?;
        let meta = serde_json::from_slice(&std::fs::read(self.root.join(format!("{name}.json")))?)?;
        Ok((name, meta))
    }

    /// `dbackup --json status` sees every snapshot and backup of the fixture.
    fn check(&self, args: &StatusArgs) -> Result<()> {
        let report: Value = serde_json::from_slice(&self.run(&["--json", "status"])?)?;
        let per_set = (args.snapshots / SETS.len()) as u64;
        for (i, set) in SETS.iter().enumerate() {
            let n = report["sets"][i]["snapshots"].as_u64();
            if n != Some(per_set) {
                bail!("status counts {n:?} snapshots of {set}, the fixture has {per_set}");
            }
        }
        let n = report["destinations"][0]["backups"].as_u64();
        if n != Some(args.backups as u64) {
            bail!(
                "status counts {n:?} backups on the drive, the fixture has {}",
                args.backups
            );
        }
        if report["destinations"][1]["present"] != false {
            bail!("the offsite destination should be absent");
        }
        Ok(())
    }
}

/// Files in the pool that snapshots hard-link.
const POOL: usize = 1000;

/// Puts `n` hard links to the pool's files into `dir`, 1,000 to a subdirectory.
fn fill(dir: &Path, pool: &Path, n: usize) -> Result<()> {
    for i in 0..n {
        let sub = dir.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::hard_link(
            pool.join(format!("f{}", i % POOL)),
            sub.join(format!("f{i}")),
        )
        .with_context(|| format!("cannot link into {}", sub.display()))?;
    }
    Ok(())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The parts of a UTC time.
fn utc(t: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// A snapshot stamp in UTC (dbackup runs with TZ=UTC here): `2025-04-01-031500`.
/// Clones the one real backup in `backups` under older stamps, a day apart before `now`, until there are `count`:
/// each clone's `backup.json` says its own stamp and times; its other files are hard links to the real one's
/// (`link`) or copies, and its directories (`system/`, the recovery kit) copies, as a real backup holds them. The
/// backup directories, newest (the real one) first.
pub(super) fn clone_drive_backups(
    backups: &Path,
    count: usize,
    now: i64,
    link: bool,
) -> Result<Vec<PathBuf>> {
    let real = std::fs::read_dir(backups)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.len() == 17 && n.starts_with('2'))
        .context("dbackup external made no backup")?;
    let template: Value =
        serde_json::from_slice(&std::fs::read(backups.join(&real).join("backup.json"))?)?;
    let mut dirs = vec![backups.join(&real)];
    for i in 1..count {
        let t = now - 86_400 * i as i64;
        let s = stamp(t);
        let dir = backups.join(&s);
        std::fs::create_dir(&dir)?;
        for e in std::fs::read_dir(backups.join(&real))? {
            let e = e?;
            if e.file_name() == "backup.json" {
                continue;
            }
            let to = dir.join(e.file_name());
            if e.file_type()?.is_dir() {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(e.path())
                    .arg(&to)
                    .status()?;
                anyhow::ensure!(status.success(), "cp -a {} failed", e.path().display());
            } else if link {
                std::fs::hard_link(e.path(), to)?;
            } else {
                std::fs::copy(e.path(), to)?;
            }
        }
        let mut meta = template.clone();
        meta["stamp"] = Value::from(s);
        meta["started"] = Value::from(rfc3339(t));
        meta["finished"] = Value::from(rfc3339(t + 600));
        std::fs::write(dir.join("backup.json"), serde_json::to_vec_pretty(&meta)?)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

pub(super) fn stamp(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = utc(t);
    format!("{y:04}-{m:02}-{d:02}-{hh:02}{mm:02}{ss:02}")
}

/// RFC 3339 in UTC: `2025-04-01T03:15:00+00:00`.
pub(super) fn rfc3339(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = utc(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(stamp(0), "1970-01-01-000000");
        assert_eq!(rfc3339(1_743_477_300), "2025-04-01T03:15:00+00:00");
        assert_eq!(stamp(951_782_400), "2000-02-29-000000");
        assert_eq!(stamp(1_709_251_199), "2024-02-29-235959");
    }
}
