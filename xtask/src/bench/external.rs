//! `cargo xtask bench external`: `dbackup external` (tar streamed to the drive, read back and compared) against the
//! seed's three passes (`tar -cf` to the local disk, `rsync` to the drive, `sha256sum` of the local tar) and against
//! the drive's own limit (`dd bs=1M` writing, then reading with `iflag=direct`, the same number of bytes), all on one
//! snapshot and one emulated exFAT T9 (a loop device made here, mounted with mount.exfat-fuse, removed on drop).
//! Then the peak memory of `dbackup external` on a snapshot of 100,000 files (`/usr/bin/time -v`).
//!
//! Goals (issue 3): at least 2x faster than the three passes, within 1.5x of dd, under 64 MiB with 100,000 files.
//! Then (unless `--only full`) the drive-history half, issue 15's figures: `incremental.rs` (`--only detect`: its
//! change detection and peak memory alone).
//!
//! A fifth contender, `dbackup external` encrypting with age (the same snapshot and drive, a config whose
//! `encryption.recipients` holds the recipient of an identity made by `dbackup keygen`), is compared with the plain
//! one (issue 7's goal: encrypted/plain within 1.2x).
//!
//! A fourth row, `tar -c | dd` (GNU tar streaming the snapshot straight into 1 MiB writes on the drive, fsynced, no
//! hashing and no read-back), shows what streaming this snapshot costs at all: reading many small files competes with
//! the drive's FUSE daemon for the CPU, which dd writing one stream of zeros does not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::loopdev::Drive;

use super::measure::{Cache, Samples, dbackup_command, timed};
use super::tree::{self, TreeSpec};
use crate::packages::Need;
use crate::util::{
    find_program, heading, human_bytes, human_duration, remove_dir_if_exists, target_dir,
};

/// At least this much faster than the three passes.
const GOAL_THREE_PASS: f64 = 2.0;
/// At most this much slower than dd writing and reading the same bytes.
const GOAL_DD: f64 = 1.5;
/// Encrypted with age at most this much slower than plain.
const GOAL_AGE: f64 = 1.2;
/// Peak memory with 100,000 files.
const GOAL_MEMORY: u64 = 64 << 20;

const MIB: u64 = 1 << 20;

/// The contenders of one repetition, in the order they run: 0 dbackup, 1 three-pass, 2 tar | dd, 3 dd, 4 dbackup
/// with age. Who goes first rotates, so drift on a shared machine favours nobody; plain and encrypted dbackup always
/// run back to back (which of them first alternates), so their per-repetition ratio sees the same machine.
fn run_order(rep: usize) -> Vec<usize> {
    let pair = if rep.is_multiple_of(2) {
        [0, 4]
    } else {
        [4, 0]
    };
    let mut units: Vec<Vec<usize>> = vec![pair.to_vec(), vec![1], vec![2], vec![3]];
    units.rotate_left(rep % 4);
    units.concat()
}

#[derive(Debug, clap::Args)]
pub struct ExternalArgs {
    #[command(flatten)]
    pub tree: TreeSpec,
    /// Timed repetitions of each contender (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// How the page cache is treated before each timed run (the same for every contender)
    #[arg(long, value_enum, default_value_t = Cache::Warm)]
    pub cache: Cache,
    /// Files in the snapshot of the memory measurement and of the incremental half's change detection (0: skip
    /// the memory measurement of the full half)
    #[arg(long, default_value_t = 100_000)]
    pub memory_files: u64,
    /// Run one half only: `full` (dbackup external vs the seed's three passes, dd and age: issues 3 and 7),
    /// `incremental` (incrementals vs fulls and GNU tar's incrementals, the change detection, one file from a chain,
    /// peak memory: issue 15) or `detect` (the change detection and peak memory alone, in minutes)
    #[arg(long, value_enum)]
    pub only: Option<Half>,
    #[command(flatten)]
    pub incremental: super::incremental::IncrementalArgs,
}

/// The two halves of `bench external`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Half {
    Full,
    Incremental,
    Detect,
}

/// One contender's repetitions: total, and the parts it is made of.
#[derive(Default)]
struct Timings {
    total: Samples,
    /// CPU time (user + system) of the contender's processes (not of the drive's FUSE daemon, which serves all).
    cpu: Samples,
    parts: Vec<(&'static str, Samples)>,
}

impl Timings {
    fn part(&mut self, name: &'static str, d: Duration) {
        match self.parts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => s.push(d),
            None => {
                let mut s = Samples::default();
                s.push(d);
                self.parts.push((name, s));
            }
        }
    }
}

/// Paths and programs of one bench run.
struct World {
    bin: PathBuf,
    work: PathBuf,
    drive: Drive,
    snapshot: PathBuf,
    local_tar: PathBuf,
}

pub fn run(args: ExternalArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    // The loop-device tools are the tests' packages (exfat-fuse, exfatprogs, util-linux) plus rsync.
    let (sh, bin) = super::measure::prepare(
        "external",
        Some("it makes a loop device with an exFAT filesystem (the emulated T9); run it as root"),
        Need::Test,
        &[
            "tar",
            "rsync",
            "sha256sum",
            "dd",
            "blockdev",
            "mkfs.exfat",
            "mount.exfat-fuse",
        ],
        "",
    )?;
    let time_v = find_program("time")
        .filter(|p| p.starts_with("/usr/bin"))
        .or_else(|| Some(PathBuf::from("/usr/bin/time")).filter(|p| p.is_file()));

    let bench = target_dir(&sh)?.join("bench");
    std::fs::create_dir_all(&bench)?;
    let bench = bench.canonicalize()?;
    if args.only == Some(Half::Detect) {
        return super::incremental::run_detect(
            &bin,
            &bench,
            args.reps,
            args.memory_files.max(1),
            args.incremental.chain,
        );
    }
    heading("bench external: the tree");
    let stats = tree::ensure(&bench.join("tree"), &args.tree)?;
    let incremental = || {
        super::incremental::run(
            &args.incremental,
            &bin,
            &bench,
            &bench.join("tree"),
            &args.tree,
            stats,
            args.reps,
            args.memory_files.max(1),
        )
    };
    if args.only == Some(Half::Incremental) {
        return incremental();
    }

    let work = bench.join("external");
    remove_dir_if_exists(&work)?;
    std::fs::create_dir_all(&work)?;
    // Room for the largest contender's output (one archive, or the seed's tar copy) and some slack; sparse.
    let image = (stats.bytes + stats.files * 2048) * 3 / 2 + 512 * MIB;
    heading(&format!(
        "bench external: an exFAT drive of {} on a loop device",
        human_bytes(image)
    ));
    let drive = Drive::exfat("T9", image);
    eprintln!(
        "{} on {}, mounted at {}",
        drive.image().display(),
        drive.device().display(),
        drive.mount_point().display()
    );

    heading("bench external: the snapshot (dbackup collect)");
    let config = write_config(
        &work,
        "bench",
        &bench.join("tree"),
        drive.mount_point(),
        None,
    )?;
    let snapshot = collect(&bin, &work, &config, "bench")?;
    // The same set, root (so the same snapshot) and drive, encrypted to a new identity's recipient.
    let recipient = keygen(&bin, &work)?;
    let config_age = write_config(
        &work,
        "bench",
        &bench.join("tree"),
        drive.mount_point(),
        Some(&recipient),
    )?;
    let w = World {
        bin: bin.clone(),
        local_tar: work.join("seed.tar"),
        work,
        drive,
        snapshot,
    };

    heading("bench external: warm-up (untimed), and the archive's size");
    let report = w.dbackup(&config)?;
    let tar_bytes = report.tar_bytes;
    let sets_ok = report.verified;
    anyhow::ensure!(sets_ok, "the warm-up backup was not written and verified");
    w.clear_drive()?;
    let report = w.dbackup(&config_age)?;
    anyhow::ensure!(
        report.verified && report.tar_bytes == tar_bytes,
        "the encrypted warm-up backup was not written and verified, or archived another snapshot"
    );
    anyhow::ensure!(
        w.has_encrypted_archive("bench")?,
        "the encrypted backup left no bench.tar.age on the drive"
    );
    w.clear_drive()?;
    w.three_pass()?;
    w.clear_drive()?;
    let count = tar_bytes.div_ceil(MIB);
    w.dd(count)?;
    w.clear_drive()?;

    heading(&format!(
        "bench external: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let mut dbackup = Timings::default();
    let mut seed = Timings::default();
    let mut dd = Timings::default();
    let mut stream = Timings::default();
    let mut age = Timings::default();
    // Plain and encrypted back to back in each repetition, so their per-repetition ratio sees the same machine.
    let mut age_ratios = Samples::default();
    for rep in 0..args.reps {
        for who in run_order(rep) {
            let cpu_before = children_cpu();
            match who {
                0 | 4 => {
                    let (config, t, name) = if who == 0 {
                        (&config, &mut dbackup, "dbackup    ")
                    } else {
                        (&config_age, &mut age, "dbackup age")
                    };
                    args.cache.prepare()?;
                    let start = Instant::now();
                    let r = w.dbackup(config)?;
                    let total = start.elapsed();
                    anyhow::ensure!(r.verified, "dbackup external did not verify its backup");
                    t.total.push(total);
                    t.part(
                        if who == 0 {
                            "write (tar, sha256)"
                        } else {
                            "write (tar, age, sha256)"
                        },
                        secs(r.write_seconds),
                    );
                    t.part("read back, compare", secs(r.read_back_seconds));
                    eprintln!("  rep {}: {name} {:>8}", rep + 1, human_duration(total));
                }
                1 => {
                    args.cache.prepare()?;
                    let (tar, rsync, sum) = w.three_pass()?;
                    let total = tar + rsync + sum;
                    seed.total.push(total);
                    seed.part("tar -cf to local disk", tar);
                    seed.part("rsync to the drive", rsync);
                    seed.part("sha256sum of local tar", sum);
                    eprintln!(
                        "  rep {}: three-pass  {:>8}",
                        rep + 1,
                        human_duration(total)
                    );
                }
                2 => {
                    args.cache.prepare()?;
                    let total = w.tar_into_dd()?;
                    stream.total.push(total);
                    eprintln!(
                        "  rep {}: tar -c | dd {:>8}",
                        rep + 1,
                        human_duration(total)
                    );
                }
                _ => {
                    args.cache.prepare()?;
                    let (write, read) = w.dd(count)?;
                    dd.total.push(write + read);
                    dd.part("write, conv=fsync", write);
                    dd.part("read, iflag=direct", read);
                    eprintln!(
                        "  rep {}: dd          {:>8}",
                        rep + 1,
                        human_duration(write + read)
                    );
                }
            }
            let cpu = children_cpu().saturating_sub(cpu_before);
            [&mut dbackup, &mut seed, &mut stream, &mut dd, &mut age][who]
                .cpu
                .push(cpu);
            w.clear_drive()?;
        }
        let (plain, enc) = (&dbackup.total.0[rep], &age.total.0[rep]);
        age_ratios.push(Duration::from_secs_f64(
            enc.as_secs_f64() / plain.as_secs_f64(),
        ));
    }

    let memory = if args.memory_files > 0 {
        heading(&format!(
            "bench external: peak memory with {} files",
            args.memory_files
        ));
        match &time_v {
            Some(time) => Some(w.memory(&bench, time, args.memory_files)?),
            None => {
                eprintln!(
                    "/usr/bin/time is not installed (apt-get install time): memory not measured"
                );
                None
            }
        }
    } else {
        None
    };
    remove_dir_if_exists(&w.work)?;

    println!();
    println!(
        "bench external: {}; archive {}",
        args.tree.describe(stats),
        human_bytes(tar_bytes)
    );
    println!(
        "drive: exFAT (mount.exfat-fuse) on {}, image {} (sparse, on the local disk); {} repetitions, {}; {} cores",
        w.drive.device().display(),
        human_bytes(image),
        args.reps,
        args.cache.describe(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "seconds: median (min-max) of the repetitions; MiB/s of the archive's bytes; CPU: user + system seconds of \
         the contender's own processes (median)"
    );
    println!();
    let base = dbackup.total.median();
    let rows = [
        ("dbackup external", &dbackup),
        ("dbackup external, age", &age),
        ("three-pass (seed)", &seed),
        ("dd bs=1M (limit)", &dd),
        ("tar -c | dd (stream only)", &stream),
    ];
    println!(
        "{:<28} {:>20} {:>10} {:>12} {:>8}",
        "", "seconds", "MiB/s", "vs dbackup", "CPU"
    );
    for (name, t) in rows {
        let m = t.total.median();
        println!(
            "{:<28} {:>20} {:>10.1} {:>12.2} {:>8.2}",
            name,
            t.total.cell(),
            tar_bytes as f64 / MIB as f64 / m,
            m / base,
            t.cpu.median()
        );
        for (part, s) in &t.parts {
            println!(
                "  {:<26} {:>20} {:>10.1}",
                part,
                s.cell(),
                tar_bytes as f64 / MIB as f64 / s.median()
            );
        }
    }
    println!();
    // Medians decide; the ratio of the fastest runs (each contender's least disturbed one) is shown beside them,
    // since on a busy machine the spread can be wider than the differences.
    let best = |t: &Timings| t.total.min_max().0;
    let speedup = seed.total.median() / base;
    let vs_dd = base / dd.total.median();
    println!(
        "goal: three-pass/dbackup >= {GOAL_THREE_PASS:.1}: {} ({speedup:.2}; fastest runs {:.2})",
        verdict(speedup >= GOAL_THREE_PASS),
        best(&seed) / best(&dbackup)
    );
    println!(
        "goal: dbackup/dd <= {GOAL_DD:.1}: {} ({vs_dd:.2}; fastest runs {:.2})",
        verdict(vs_dd <= GOAL_DD),
        best(&dbackup) / best(&dd)
    );
    let vs_plain = age.total.median() / base;
    println!(
        "goal: encrypted/plain (dbackup external with age / without) <= {GOAL_AGE:.1}: {} ({vs_plain:.2}; \
         median of the per-repetition ratios {:.2}; fastest runs {:.2})",
        verdict(vs_plain <= GOAL_AGE),
        age_ratios.median(),
        best(&age) / best(&dbackup)
    );
    if let Some((files, peak)) = memory {
        println!(
            "goal: peak memory of dbackup external with {files} files < {}: {} ({})",
            human_bytes(GOAL_MEMORY),
            verdict(peak < GOAL_MEMORY),
            human_bytes(peak)
        );
    }
    drop(w);
    if args.only.is_none() {
        incremental()?;
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// A config with one set and the drive as its only destination (retention 1: the drive holds one backup), encrypted
/// to `recipient` when given (the same backup root either way, so both archive the same snapshot).
fn write_config(
    work: &Path,
    set: &str,
    source: &Path,
    mount_point: &Path,
    recipient: Option<&str>,
) -> Result<PathBuf> {
    let mut config = serde_json::json!({
        "backup_root": work.join(format!("root-{set}")),
        "backup_sets": [{ "name": set, "sources": [source] }],
        "destinations": [{ "name": "T9", "path": mount_point, "fs_label": "T9", "retention": 1 }],
    });
    let mut name = format!("config-{set}.json");
    if let Some(r) = recipient {
        config["encryption"] = serde_json::json!({ "recipients": [r] });
        name = format!("config-{set}-age.json");
    }
    let path = work.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    for d in ["home", "state", "xdg-config"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    Ok(path)
}

/// Runs `dbackup collect` and returns the snapshot it made.
fn collect(bin: &Path, work: &Path, config: &Path, set: &str) -> Result<PathBuf> {
    let out = dbackup_command(bin, work, config)
        .arg("collect")
        .output()
        .context("cannot run dbackup collect")?;
    if !out.status.success() {
        bail!(
            "dbackup collect failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(path);
    anyhow::ensure!(
        path.is_dir()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{set}-"))),
        "dbackup collect printed {} instead of its snapshot",
        path.display()
    );
    Ok(path)
}

/// `dbackup keygen` writes a new identity into the work directory; returns its recipient. Backing up reads only the
/// recipient: the identity is not in the config.
fn keygen(bin: &Path, work: &Path) -> Result<String> {
    let mut dbackup = Command::new(bin);
    dbackup
        .env("HOME", work.join("home"))
        .env("XDG_CONFIG_HOME", work.join("xdg-config"));
    super::measure::keygen(dbackup, &work.join("identity.txt"))
}

/// What the bench needs from a `dbackup --json external` report.
struct Report {
    verified: bool,
    tar_bytes: u64,
    write_seconds: f64,
    read_back_seconds: f64,
}

fn parse_report(json: &[u8]) -> Result<Report> {
    let v: serde_json::Value =
        serde_json::from_slice(json).context("dbackup external --json printed something else")?;
    let d = &v["destinations"][0];
    let sets = d["sets"].as_array().context("no sets in the report")?;
    let sum = |key: &str| sets.iter().filter_map(|s| s[key].as_f64()).sum::<f64>();
    Ok(Report {
        verified: d["status"] == "written",
        tar_bytes: sets.iter().filter_map(|s| s["tar_bytes"].as_u64()).sum(),
        write_seconds: sum("write_seconds"),
        read_back_seconds: sum("read_back_seconds"),
    })
}

impl World {
    fn mount_point(&self) -> &Path {
        self.drive.mount_point()
    }

    /// One `dbackup external` run.
    fn dbackup(&self, config: &Path) -> Result<Report> {
        let out = dbackup_command(&self.bin, &self.work, config)
            .args(["--json", "external"])
            .stderr(Stdio::piped())
            .output()
            .context("cannot run dbackup external")?;
        if !out.status.success() {
            bail!(
                "dbackup external failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_report(&out.stdout)
    }

    /// Whether the drive's newest backup holds `<set>.tar.age` (and no plain `<set>.tar`).
    fn has_encrypted_archive(&self, set: &str) -> Result<bool> {
        let backups = self.mount_point().join("backups");
        let stamp = std::fs::read_to_string(backups.join("LATEST"))
            .context("the external phase left no LATEST on the drive")?;
        let dir = backups.join(stamp.trim());
        Ok(
            dir.join(format!("{set}.tar.age")).is_file()
                && !dir.join(format!("{set}.tar")).exists(),
        )
    }

    /// The seed's three passes: (tar, rsync, sha256sum).
    fn three_pass(&self) -> Result<(Duration, Duration, Duration)> {
        let _ = std::fs::remove_file(&self.local_tar);
        let seed_dir = self.mount_point().join("seed");
        std::fs::create_dir_all(&seed_dir)?;
        let tar = timed(
            Command::new("tar")
                .arg("-cf")
                .arg(&self.local_tar)
                .arg("-C")
                .arg(&self.snapshot)
                .arg("."),
            "tar -cf",
        )?;
        let rsync = timed(
            Command::new("rsync")
                .arg("-a")
                .arg(&self.local_tar)
                .arg(format!("{}/", seed_dir.display())),
            "rsync",
        )?;
        let sum = timed(Command::new("sha256sum").arg(&self.local_tar), "sha256sum")?;
        std::fs::remove_file(&self.local_tar)?;
        Ok((tar, rsync, sum))
    }

    /// GNU tar streams the snapshot into dd, which writes it to the drive in 1 MiB blocks and fsyncs: no hash, no
    /// read-back.
    fn tar_into_dd(&self) -> Result<Duration> {
        let file = self.mount_point().join("stream.tar");
        let d = timed(
            Command::new("bash").arg("-c").arg(format!(
                "set -eo pipefail; tar -cf - -C '{}' . | dd of='{}' bs=1M iflag=fullblock conv=fsync status=none",
                self.snapshot.display(),
                file.display()
            )),
            "tar -c | dd",
        )?;
        std::fs::remove_file(&file)?;
        Ok(d)
    }

    /// dd writes `count` MiB to the drive (fsynced), then reads them back past the caches: (write, read).
    fn dd(&self, count: u64) -> Result<(Duration, Duration)> {
        let file = self.mount_point().join("dd.bin");
        let write = timed(
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", file.display()))
                .args([
                    "bs=1M",
                    &format!("count={count}"),
                    "conv=fsync",
                    "status=none",
                ]),
            "dd write",
        )?;
        // As dbackup does before reading back: the device's cache goes too (the fuse daemon reads through it).
        timed(
            Command::new("blockdev")
                .arg("--flushbufs")
                .arg(self.drive.device()),
            "blockdev --flushbufs",
        )?;
        let read = |direct: bool| {
            let mut c = Command::new("dd");
            c.arg(format!("if={}", file.display()))
                .args(["of=/dev/null", "bs=1M", "status=none"]);
            if direct {
                c.arg("iflag=direct");
            }
            timed(&mut c, "dd read")
        };
        let read = match read(true) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "dd iflag=direct failed ({e:#}); reading through the emptied cache instead"
                );
                read(false)?
            }
        };
        std::fs::remove_file(&file)?;
        Ok((write, read))
    }

    /// Removes what the contenders wrote on the drive (untimed): backups and the seed's copy.
    fn clear_drive(&self) -> Result<()> {
        let backups = self.mount_point().join("backups");
        if let Ok(entries) = std::fs::read_dir(&backups) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("20") && e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                }
            }
        }
        remove_dir_if_exists(&self.mount_point().join("seed"))?;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    }

    /// Peak memory (bytes) of `dbackup external` on a snapshot of `files` small files.
    fn memory(&self, bench: &Path, time: &Path, files: u64) -> Result<(u64, u64)> {
        let source = bench.join(format!("memtree-{files}"));
        super::tree::ensure_memory_tree(&source, files)?;
        let config = write_config(&self.work, "mem", &source, self.mount_point(), None)?;
        collect(&self.bin, &self.work, &config, "mem")?;
        let out = Command::new(time)
            .arg("-v")
            .arg(&self.bin)
            .arg("--config")
            .arg(&config)
            .arg("external")
            .env("HOME", self.work.join("home"))
            .env("XDG_STATE_HOME", self.work.join("state"))
            .env("XDG_CONFIG_HOME", self.work.join("xdg-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .context("cannot run /usr/bin/time -v dbackup external")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("dbackup external (memory run) failed: {}", stderr.trim());
        }
        let kib: u64 = stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .and_then(|v| v.trim().parse().ok())
            .context("no \"Maximum resident set size\" in the output of /usr/bin/time -v")?;
        self.clear_drive()?;
        Ok((files, kib * 1024))
    }
}

/// CPU time (user + system) of all the children this process has waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_sizes_and_phase_times() {
        let json = br#"{ "exit": 0, "destinations": [ { "status": "written", "sets": [
            { "set": "a", "tar_bytes": 1000, "write_seconds": 1.5, "read_back_seconds": 0.5 },
            { "set": "b", "tar_bytes": 24, "write_seconds": 0.5, "read_back_seconds": 0.25 } ] } ] }"#;
        let r = parse_report(json).unwrap();
        assert!(r.verified);
        assert_eq!(r.tar_bytes, 1024);
        assert_eq!((r.write_seconds, r.read_back_seconds), (2.0, 0.75));
        let failed = br#"{ "destinations": [ { "status": "failed", "sets": [] } ] }"#;
        assert!(!parse_report(failed).unwrap().verified);
    }

    #[test]
    fn every_contender_runs_once_per_repetition_with_plain_and_age_adjacent() {
        for rep in 0..8 {
            let order = run_order(rep);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3, 4], "rep {rep}: {order:?}");
            let (p, a) = (
                order.iter().position(|&w| w == 0).unwrap(),
                order.iter().position(|&w| w == 4).unwrap(),
            );
            assert_eq!(p.abs_diff(a), 1, "rep {rep}: {order:?}");
        }
        assert_eq!(run_order(0)[0], 0);
        assert_eq!(run_order(1)[0], 1);
        assert_eq!(run_order(3)[0], 3);
        assert_eq!(run_order(4)[..2], [0, 4]);
        assert_eq!(run_order(5)[3..], [4, 0]);
    }
}
