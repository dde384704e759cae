//! `cargo xtask bench restore` (root): on the emulated exFAT T9, a backup written by `dbackup collect` and
//! `dbackup external` of the bench tree (at least 600 MiB), then
//! - one file restored: `dbackup restore --path FILE` (one seek through the index) vs `tar -xf ARCHIVE FILE`
//!   (GNU tar reads header after header, skipping contents with seeks); goal: dbackup at least 5x faster;
//! - the whole backup verified: `dbackup restore --verify` (sums, every header and content sha256) vs
//!   `sha256sum ARCHIVE`; goal: within 1.5x;
//! - then the same tree backed up encrypted with age (a config whose `encryption.recipients` holds the recipient of
//!   an identity made by `dbackup keygen`), and one file restored from `data.tar.age`: `dbackup restore --path FILE
//!   --identity KEY` (the index offset mapped to age's 64 KiB chunks, decrypting only those) vs `age -d -i KEY
//!   data.tar.age | tar -xf - FILE` (decrypting the whole archive); goal (issue 7): dbackup at least 5x faster.
//!
//! The file is the archive's last file, the worst case for tar. The page cache is dropped before each timed run by
//! default, so every run reads the drive (through the loop device and exfat-fuse), as a restore days later would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::loopdev::Drive;

use super::measure::{Cache, Table, timed};
use super::tree::{self, TreeSpec};
use crate::packages::Need;
use crate::util::{heading, human_bytes, remove_dir_if_exists, target_dir};

/// Issue 4's goals (and issue 7's for one file from an encrypted archive).
const ONE_FILE_GOAL: f64 = 5.0;
const VERIFY_GOAL: f64 = 1.5;
/// The smallest archive the bench accepts.
const MIN_BYTES: u64 = 600 << 20;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Number of small files in the tree: tar reads one header per entry, so this is what it pays for; a home
    /// directory with its data easily holds 100,000
    #[arg(long, default_value_t = 100_000)]
    pub small_files: u64,
    /// Number of big files (they make the archive at least 600 MiB)
    #[arg(long, default_value_t = 24)]
    pub big_files: u64,
    /// Largest big file, in MiB
    #[arg(long, default_value_t = 64)]
    pub big_max_mib: u64,
    /// Seed of the tree generator
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// How the page cache is treated before each timed run (the same for every contender)
    #[arg(long, value_enum, default_value_t = Cache::Drop)]
    pub cache: Cache,
}

/// The paths of one bench run.
struct World {
    bin: PathBuf,
    work: PathBuf,
    config: PathBuf,
    /// The config that encrypts with age, and the identity that decrypts.
    config_age: PathBuf,
    identity: PathBuf,
    /// The backup's `data.tar` on the drive (then `data.tar.age`).
    archive: PathBuf,
    /// The file restored: its absolute path (in the tree) and its name in the archive.
    file: PathBuf,
    name: String,
}

pub fn run(args: RestoreArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let (sh, bin) = super::measure::prepare(
        "restore",
        Some("it makes a loop device with an exFAT filesystem (the emulated T9)"),
        Need::Bench,
        &[
            "losetup",
            "mkfs.exfat",
            "mount.exfat-fuse",
            "tar",
            "sha256sum",
            "age",
        ],
        ": apt-get install util-linux exfatprogs exfat-fuse tar coreutils age",
    )?;
    let bench = target_dir(&sh)?.join("bench");
    std::fs::create_dir_all(&bench)?;
    let bench = bench.canonicalize()?;
    heading("bench restore: the tree");
    // Its own tree (the other benches use fewer files by default), kept between runs.
    let spec = TreeSpec {
        small_files: args.small_files,
        big_files: args.big_files,
        big_min_mib: 1,
        big_max_mib: args.big_max_mib,
        seed: args.seed,
    };
    let tree_dir = bench.join("tree-restore");
    let stats = tree::ensure(&tree_dir, &spec)?;
    if stats.bytes < MIN_BYTES {
        bail!(
            "the tree holds {}; the bench needs at least {}: raise --big-files or --big-max-mib",
            human_bytes(stats.bytes),
            human_bytes(MIN_BYTES)
        );
    }

    heading("bench restore: the emulated T9 (exFAT on a loop device) and a backup on it");
    // Room for the plain and the encrypted backup side by side (sparse).
    let drive_size = 2 * (stats.bytes + stats.bytes / 4) + (256 << 20);
    let t9 = Drive::exfat("T9", drive_size);
    let work = bench.join("restore");
    remove_dir_if_exists(&work)?;
    for d in ["home", "state", "xdg-config"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let config = work.join("config.json");
    let cfg = serde_json::json!({
        "backup_root": work.join("root"),
        "backup_sets": [{ "name": "data", "sources": [tree_dir], "method": "rsync" }],
        "destinations": [{ "name": "T9", "path": t9.mount_point(), "fs_label": "T9" }],
    });
    std::fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
    let mut w = World {
        bin,
        config_age: work.join("config-age.json"),
        identity: work.join("identity.txt"),
        work,
        config,
        archive: PathBuf::new(),
        file: PathBuf::new(),
        name: String::new(),
    };
    timed(w.dbackup().arg("collect"), "dbackup collect")?;
    timed(w.dbackup().arg("external"), "dbackup external")?;
    let backups = t9.mount_point().join("backups");
    let stamp = std::fs::read_to_string(backups.join("LATEST"))
        .context("the external phase left no LATEST on the drive")?
        .trim()
        .to_string();
    let dir = backups.join(&stamp);
    w.archive = dir.join("data.tar");
    w.name = last_file(&dir.join("data.index.jsonl"))?;
    w.file = Path::new("/").join(&w.name);
    let archive_bytes = std::fs::metadata(&w.archive)?.len();
    eprintln!(
        "backup {stamp}: data.tar {} on {}; the file: {}",
        human_bytes(archive_bytes),
        t9.mount_point().display(),
        w.file.display()
    );

    heading(&format!(
        "bench restore: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let mut one = Table::new(&["dbackup", "tar -xf"], &["one file"], &[(1, 0)]);
    let mut all = Table::new(
        &["dbackup --verify", "sha256sum"],
        &["whole backup"],
        &[(0, 1)],
    );
    for rep in 0..args.reps {
        let order = super::measure::turns(rep);
        for theirs in order {
            let col = usize::from(theirs);
            args.cache.prepare()?;
            let t = if theirs {
                w.tar_one()?
            } else {
                w.dbackup_one()?
            };
            one.push(0, col, t);
            if rep == 0 {
                w.check_one(theirs)?;
            }
            args.cache.prepare()?;
            let v = if theirs {
                w.sha256sum()?
            } else {
                w.dbackup_verify()?
            };
            all.push(0, col, v);
            eprintln!(
                "  rep {}: {:<8} one file {:>7.3}s  whole {:>7.3}s",
                rep + 1,
                if theirs { "tar/sha" } else { "dbackup" },
                t.as_secs_f64(),
                v.as_secs_f64()
            );
        }
    }
    let plain_name = w
        .archive
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();

    // The encrypted half, on the same drive and tree: `--identity` is what restore reads the key from.
    let mut one_age = Table::new(&["dbackup", "age -d | tar -xf"], &["one file"], &[(1, 0)]);
    let age_bytes = {
        heading("bench restore: the same tree backed up encrypted with age");
        let recipient = w.keygen()?;
        let mut cfg_age = cfg.clone();
        cfg_age["encryption"] = serde_json::json!({ "recipients": [recipient] });
        std::fs::write(&w.config_age, serde_json::to_string_pretty(&cfg_age)?)?;
        timed(
            w.dbackup_with(&w.config_age).arg("external"),
            "dbackup external (age)",
        )?;
        let stamp = std::fs::read_to_string(backups.join("LATEST"))
            .context("the external phase left no LATEST on the drive")?
            .trim()
            .to_string();
        w.archive = backups.join(&stamp).join("data.tar.age");
        anyhow::ensure!(
            w.archive.is_file(),
            "the encrypted backup {stamp} holds no data.tar.age"
        );
        let bytes = std::fs::metadata(&w.archive)?.len();
        eprintln!("backup {stamp}: data.tar.age {}", human_bytes(bytes));
        heading(&format!(
            "bench restore: one file from data.tar.age, {} repetitions, {}",
            args.reps,
            args.cache.describe()
        ));
        for rep in 0..args.reps {
            let order = super::measure::turns(rep);
            for theirs in order {
                args.cache.prepare()?;
                let t = if theirs {
                    w.age_tar_one()?
                } else {
                    w.dbackup_one_age()?
                };
                one_age.push(0, usize::from(theirs), t);
                if rep == 0 {
                    w.check_one(theirs)?;
                }
                eprintln!(
                    "  rep {}: {:<8} one file {:>7.3}s",
                    rep + 1,
                    if theirs { "age|tar" } else { "dbackup" },
                    t.as_secs_f64()
                );
            }
        }
        bytes
    };
    remove_dir_if_exists(&w.work)?;
    drop(t9);

    println!();
    println!(
        "bench restore: {}; on the emulated exFAT T9 (loop device, exfat-fuse)",
        spec.describe(stats)
    );
    println!(
        "archive: {} ({}), the file restored: its last file; {} repetitions, {}",
        human_bytes(archive_bytes),
        plain_name,
        args.reps,
        args.cache.describe()
    );
    println!("\nrestoring one file:");
    one.print();
    println!("\nverifying the whole backup:");
    all.print();
    let mb = archive_bytes as f64 / (1 << 20) as f64;
    let median = |t: &Table, c| t.median(0, c);
    println!(
        "throughput: dbackup --verify {:.0} MiB/s, sha256sum {:.0} MiB/s",
        mb / median(&all, 0),
        mb / median(&all, 1)
    );
    let speedup = one.ratio(0, (1, 0));
    let verify = all.ratio(0, (0, 1));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\ngoal: one file, tar/dbackup >= {ONE_FILE_GOAL:.1}: {} ({speedup:.1}x)",
        verdict(speedup >= ONE_FILE_GOAL)
    );
    println!(
        "goal: whole backup, dbackup/sha256sum <= {VERIFY_GOAL:.1}: {} ({verify:.2})",
        verdict(verify <= VERIFY_GOAL)
    );
    println!(
        "\nrestoring one file from the encrypted backup (data.tar.age, {}; dbackup --identity vs age -d | tar):",
        human_bytes(age_bytes)
    );
    one_age.print();
    let speedup = one_age.ratio(0, (1, 0));
    println!(
        "\ngoal: one file encrypted, (age -d | tar)/dbackup >= {ONE_FILE_GOAL:.1}: {} ({speedup:.1}x)",
        verdict(speedup >= ONE_FILE_GOAL)
    );
    Ok(())
}

impl World {
    fn dbackup(&self) -> Command {
        self.dbackup_with(&self.config)
    }

    fn dbackup_with(&self, config: &Path) -> Command {
        super::measure::dbackup_command(&self.bin, &self.work, config)
    }

    fn dbackup_one(&self) -> Result<Duration> {
        let target = self.work.join("r-dbackup");
        remove_dir_if_exists(&target)?;
        let mut c = self.dbackup();
        c.args(["restore", "--source", "external", "--path"])
            .arg(&self.file)
            .arg("--target")
            .arg(&target);
        timed(&mut c, "dbackup restore")
    }

    /// `dbackup keygen` writes the identity into the work directory; returns its recipient.
    fn keygen(&self) -> Result<String> {
        super::measure::keygen(self.dbackup(), &self.identity)
    }

    /// One file from the encrypted backup: dbackup seeks to the chunks that hold it.
    fn dbackup_one_age(&self) -> Result<Duration> {
        let target = self.work.join("r-dbackup");
        remove_dir_if_exists(&target)?;
        let mut c = self.dbackup_with(&self.config_age);
        c.args(["restore", "--source", "external", "--path"])
            .arg(&self.file)
            .arg("--target")
            .arg(&target)
            .arg("--identity")
            .arg(&self.identity);
        timed(&mut c, "dbackup restore --identity")
    }

    /// One file from the encrypted backup without dbackup: `age -d` decrypts the whole archive into `tar -x`.
    fn age_tar_one(&self) -> Result<Duration> {
        let target = self.work.join("r-tar");
        remove_dir_if_exists(&target)?;
        std::fs::create_dir_all(&target)?;
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(r#"set -eo pipefail; age -d -i "$1" "$2" | tar -x -f - -C "$3" "$4""#)
            .arg("bash")
            .arg(&self.identity)
            .arg(&self.archive)
            .arg(&target)
            .arg(&self.name);
        timed(&mut c, "age -d | tar -x")
    }

    fn tar_one(&self) -> Result<Duration> {
        let target = self.work.join("r-tar");
        remove_dir_if_exists(&target)?;
        std::fs::create_dir_all(&target)?;
        let mut c = Command::new("tar");
        c.arg("-xf")
            .arg(&self.archive)
            .arg("-C")
            .arg(&target)
            .arg(&self.name);
        timed(&mut c, "tar -xf")
    }

    /// Both restored the same bytes as the tree holds.
    fn check_one(&self, tar: bool) -> Result<()> {
        let dir = self.work.join(if tar { "r-tar" } else { "r-dbackup" });
        let got = std::fs::read(dir.join(&self.name))
            .with_context(|| format!("the restored file is not in {}", dir.display()))?;
        let want = std::fs::read(&self.file)?;
        anyhow::ensure!(
            got == want,
            "{} restored other bytes than {}",
            if tar { "tar" } else { "dbackup" },
            self.file.display()
        );
        Ok(())
    }

    fn dbackup_verify(&self) -> Result<Duration> {
        let mut c = self.dbackup();
        c.args(["restore", "--source", "external", "--verify"]);
        timed(&mut c, "dbackup restore --verify")
    }

    fn sha256sum(&self) -> Result<Duration> {
        let mut c = Command::new("sha256sum");
        c.arg(&self.archive);
        timed(&mut c, "sha256sum")
    }
}

/// The path of the last regular file of an index (the archive's last file).
fn last_file(index: &Path) -> Result<String> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let mut last = None;
    for line in text.lines().skip(1) {
        let v: serde_json::Value =
            serde_json::from_str(line).context("the index is not JSON lines")?;
        if v["type"] == "file"
            && let Some(p) = v["path"].as_str()
        {
            last = Some(p.to_string());
        }
    }
    last.context("the index lists no file")
}
