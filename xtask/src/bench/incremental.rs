//! `cargo xtask bench external`'s drive-history half (issue 15): incremental archives against fulls and against
//! GNU tar's own incrementals (`--listed-incremental`), the change detection alone, one file from the newest backup
//! of a chain, and peak memory, all in one run on one emulated exFAT T9 (a loop device made here, mounted with
//! mount.exfat-fuse, removed on drop).
//!
//! How each figure is taken:
//! - full and incremental: the bench tree (1 GiB, 20,000 files by default) seen through a tree of hard links
//!   (`cp -al`, so the shared tree is never modified); 1% of its files are rewritten (new bytes, same size, new
//!   mtime, by rename) between two `dbackup collect`s; `dbackup external --full` then `dbackup external` (an
//!   incremental on that full) are timed, their backup directories on the drive measured; against GNU tar level 0
//!   and level 1 of the same tree streamed into `dd conv=fsync` on the drive (no hash, no read-back).
//! - the change detection: `dbackup --json external --dry-run` (which runs the incremental's change detection to size
//!   it: one walk of the snapshot, stats only, beside the base's index) on a no-change snapshot of 100,000 files,
//!   without the recovery kit (`image.kit: false`); the phase alone is the run's own clock (its plan's
//!   `timings.detection_seconds`), the whole run its upper bound, and the part beyond a plain scan the run minus
//!   `--dry-run --full`; against GNU tar level 1 of the same tree into /dev/null (GNU tar then stats and never
//!   reads). `--only detect` runs this and peak memory alone, on a drive of their own.
//! - the recovery kit's share: the kit's tools run in every external backup, full or incremental (the dry run gathers
//!   it too): the same dry run with and without it; the time ratio is printed with and without that share.
//! - one file from the newest backup of a chain of 10: the bytes read from the drive are the loop device's own
//!   counter (`/sys/block/loopN/stat`, sectors read: everything the FUSE daemon read, metadata included), and the
//!   process's `rchar` (bytes its read calls returned, from `/proc/<pid>/io` taken after exit, before reaping);
//!   before each run the drive's caches are dropped for the files this bench made only (`posix_fadvise
//!   DONTNEED` on every file in `backups/` and on the drive's image, `blockdev --flushbufs` on the loop device),
//!   never the machine's. Against the GNU-tar-only way of docs/RESTORE.md: `tar -xpf` of each archive of the
//!   chain in order with the file's name, after checking that the newest index lists it.
//! - peak memory: the maximum resident set size of the `dbackup external` process, from `wait4`.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::loopdev::Drive;

use super::measure::Cache;
use super::tree::{TreeSpec, TreeStats};
use crate::util::{heading, human_bytes, remove_dir_if_exists};

/// Issue 15's goals.
const GOAL_TIME: f64 = 0.1;
const GOAL_BYTES: f64 = 0.03;
const GOAL_DETECT_SECS: f64 = 1.0;
const GOAL_MEMORY: u64 = 64 << 20;

const MIB: u64 = 1 << 20;
const SET: &str = "bench";
const MEM_SET: &str = "mem";

/// The options of this half (flattened into `bench external`'s).
#[derive(Debug, clap::Args)]
pub struct IncrementalArgs {
    /// Backups in the chain the one-file restore reads (a full and N-1 incrementals)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=50))]
    pub chain: u64,
    /// Percent of the tree's small files rewritten before each incremental
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub changed_percent: u64,
}

/// One child process, measured: times from `wait4`, bytes from `/proc/<pid>/io` read before it was reaped.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub wall: Duration,
    /// User + system time of the process and the children it waited for.
    pub cpu: Duration,
    pub max_rss: u64,
    /// Bytes its read calls returned (and its waited-for children's).
    pub rchar: u64,
    pub stdout: String,
}

/// Runs `cmd` to completion and measures it; fails with its stderr when it fails (unless `ok` accepts the code).
pub fn measure(cmd: &mut Command, what: &str, ok: &[i32]) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    let pid = child.id() as libc::pid_t;
    // Wait for the exit without reaping, so that /proc/<pid>/io still answers.
    // SAFETY: a zeroed siginfo_t is valid; waitid writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; the pointer is valid.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    anyhow::ensure!(
        r == 0,
        "waitid for {what}: {}",
        std::io::Error::last_os_error()
    );
    let wall = start.elapsed();
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unreaped child; the pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(
        r == pid,
        "wait4 for {what}: {}",
        std::io::Error::last_os_error()
    );
    // The child is reaped: std must not wait for it again (it does not: `Child` is dropped without a wait).
    drop(child);
    let status = std::process::ExitStatus::from_raw(status);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() && !status.code().is_some_and(|c| ok.contains(&c)) {
        let mut err = String::new();
        std::fs::File::open(&err_path)?.read_to_string(&mut err)?;
        bail!("{what} failed ({status}): {}", err.trim());
    }
    Ok(Measured {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss: usage.ru_maxrss as u64 * 1024,
        rchar,
        stdout,
    })
}

/// Medians of several measurements.
#[derive(Default)]
struct Runs(Vec<Measured>);

impl Runs {
    fn median_by(&self, f: impl Fn(&Measured) -> f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn wall(&self) -> f64 {
        self.median_by(|m| m.wall.as_secs_f64())
    }
    fn cpu(&self) -> f64 {
        self.median_by(|m| m.cpu.as_secs_f64())
    }
    /// `1.23 s (0.98 s CPU)`
    fn cell(&self) -> String {
        format!("{:.3} s ({:.2} s CPU)", self.wall(), self.cpu())
    }
}

/// Bytes read from the drive: the loop device's counter and the process's read calls.
#[derive(Debug, Clone, Copy, Default)]
struct ReadBytes {
    device: u64,
    rchar: u64,
}

/// The paths of this half's run.
struct World<'a> {
    bin: &'a Path,
    work: PathBuf,
    drive: &'a Drive,
    /// The tree of hard links the set backs up, and the files rewritten in it.
    src: PathBuf,
    small_files: u64,
}

// The bench's inputs as `bench external` has them (its tree, build and repetitions): one call site.
#[allow(clippy::too_many_arguments)]
pub fn run(
    args: &IncrementalArgs,
    bin: &Path,
    bench: &Path,
    tree: &Path,
    spec: &TreeSpec,
    stats: TreeStats,
    reps: usize,
    detect_files: u64,
) -> Result<()> {
    let work = bench.join("external-incremental");
    remove_dir_if_exists(&work)?;
    for d in ["home", "state", "xdg-config", "tar"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    // A full, GNU tar's level 0 beside it, the chain and the 100,000-file backups (sparse).
    let image = 2 * (stats.bytes + stats.files * 2048) + detect_files * 4096 + 1024 * MIB;
    heading(&format!(
        "bench external (incremental): an exFAT drive of {} on a loop device",
        human_bytes(image)
    ));
    let drive = Drive::exfat("T9", image);
    let result = run_on(
        args,
        bin,
        bench,
        tree,
        spec,
        stats,
        reps,
        detect_files,
        &work,
        &drive,
    );
    drop(drive);
    remove_dir_if_exists(&work)?;
    result
}

#[allow(clippy::too_many_arguments)]
fn run_on(
    args: &IncrementalArgs,
    bin: &Path,
    bench: &Path,
    tree: &Path,
    spec: &TreeSpec,
    stats: TreeStats,
    reps: usize,
    detect_files: u64,
    work: &Path,
    drive: &Drive,
) -> Result<()> {
    let load_before = loadavg();
    let src = work.join("src");
    heading("bench external (incremental): a tree of hard links to the bench tree (cp -al)");
    let status = Command::new("cp").arg("-al").arg(tree).arg(&src).status()?;
    anyhow::ensure!(status.success(), "cp -al failed");
    let w = World {
        bin,
        work: work.to_path_buf(),
        drive,
        src: src.clone(),
        small_files: spec.small_files,
    };
    let config = w.config(SET, &src, args.chain, true)?;
    let config_nokit = w.config(SET, &src, args.chain, false)?;
    let every = (100 / args.changed_percent).max(1);

    // Full, then an incremental on it, in each repetition; GNU tar's levels 0 and 1 beside them.
    let mut full = Runs::default();
    let mut inc = Runs::default();
    let mut tar0 = Runs::default();
    let mut tar1 = Runs::default();
    let (mut full_bytes, mut inc_bytes, mut tar0_bytes, mut tar1_bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cycle = 0u64;
    let mut changed = (0u64, 0u64);
    w.collect(&config)?;
    for rep in 0..reps {
        heading(&format!(
            "bench external (incremental): repetition {} of {reps}: full, {}% changed, incremental",
            rep + 1,
            args.changed_percent
        ));
        w.clear_drive()?;
        let tar_first = rep % 2 == 1;
        for who in if tar_first { [1, 0] } else { [0, 1] } {
            Cache::Warm.prepare()?;
            if who == 0 {
                let m = w.external(&config, &["--full"], "full")?;
                full_bytes.push(w.newest_backup_bytes()?);
                full.0.push(m);
            } else {
                let m = w.tar_level(0)?;
                tar0_bytes.push(std::fs::metadata(w.tar_out(0))?.len());
                tar0.0.push(m);
            }
        }
        changed = w.change(cycle, every)?;
        cycle += 1;
        w.collect(&config)?;
        for who in if tar_first { [1, 0] } else { [0, 1] } {
            Cache::Warm.prepare()?;
            if who == 0 {
                let m = w.external(&config, &[], "incremental")?;
                inc_bytes.push(w.newest_backup_bytes()?);
                inc.0.push(m);
            } else {
                let m = w.tar_level(1)?;
                tar1_bytes.push(std::fs::metadata(w.tar_out(1))?.len());
                tar1.0.push(m);
            }
        }
        w.clear_tar()?;
        eprintln!(
            "  full {:.2}s, incremental {:.2}s; tar level 0 {:.2}s, level 1 {:.2}s",
            full.0.last().unwrap().wall.as_secs_f64(),
            inc.0.last().unwrap().wall.as_secs_f64(),
            tar0.0.last().unwrap().wall.as_secs_f64(),
            tar1.0.last().unwrap().wall.as_secs_f64()
        );
    }

    // The chain: the last repetition left a full and one incremental; the rest follow.
    heading(&format!(
        "bench external (incremental): a chain of {} backups",
        args.chain
    ));
    let mut later = Runs::default();
    for _ in 2..args.chain {
        w.change(cycle, every)?;
        cycle += 1;
        w.collect(&config)?;
        Cache::Warm.prepare()?;
        later.0.push(w.external(&config, &[], "incremental")?);
    }
    let chain = w.chain()?;
    anyhow::ensure!(
        chain.len() as u64 == args.chain,
        "the newest backup's chain has {} backups, not {}: {chain:?}",
        chain.len(),
        args.chain
    );
    let newest = chain.last().unwrap().clone();
    let index_bytes =
        std::fs::metadata(w.backups().join(&newest).join(format!("{SET}.index.jsonl")))?.len();
    // A small file never rewritten (its bytes are in the full), and one rewritten last (in the newest archive).
    let kept = pick_unchanged(w.small_files, every, cycle).with_context(|| {
        format!("every small file was rewritten by {cycle} changes of 1 in {every}: lower --chain or --reps")
    })?;
    let kept = w.small_file(kept);
    let fresh = w.small_file(cycle - 1 + every * (w.small_files / every / 2));
    let mut one = [Runs::default(), Runs::default()];
    let mut one_tar = [Runs::default(), Runs::default()];
    let mut one_bytes = [Vec::new(), Vec::new()];
    let mut one_tar_bytes = [Vec::new(), Vec::new()];
    for (i, file) in [&kept, &fresh].into_iter().enumerate() {
        heading(&format!(
            "bench external (incremental): one file from the newest backup: {}",
            file.display()
        ));
        for rep in 0..reps {
            for tar in super::measure::turns(rep) {
                let (m, b) = if tar {
                    w.tar_one(&chain, file)?
                } else {
                    w.restore_one(file)?
                };
                if tar {
                    one_tar[i].0.push(m);
                    one_tar_bytes[i].push(b);
                } else {
                    one[i].0.push(m);
                    one_bytes[i].push(b);
                }
            }
        }
    }
    // The recovery kit's share: the same dry run (an incremental planned on the chain) with and without it.
    heading(
        "bench external (incremental): the recovery kit's fixed cost (dry runs with and without it)",
    );
    let mut dry_kit = Runs::default();
    let mut dry_nokit = Runs::default();
    for rep in 0..reps.max(3) {
        for nokit in super::measure::turns(rep) {
            if nokit {
                dry_nokit.0.push(w.dry_run(&config_nokit, false)?);
            } else {
                dry_kit.0.push(w.dry_run(&config, false)?);
            }
        }
    }
    let entry_bytes = |f: &Path| -> Result<u64> {
        let len = std::fs::metadata(f)?.len();
        // The entry: its header (pax records included, a few blocks at most) and its content, padded.
        Ok(3 * 512 + len.div_ceil(512) * 512)
    };
    let ideal = [entry_bytes(&kept)?, entry_bytes(&fresh)?];

    let det = detection(&w, bench, detect_files, args.chain, reps)?;
    let load_after = loadavg();

    // The report.
    let median_u = |v: &[u64]| -> f64 {
        let mut v = v.to_vec();
        v.sort_unstable();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2] as f64,
            n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
        }
    };
    let (fb, ib) = (median_u(&full_bytes), median_u(&inc_bytes));
    let (t0b, t1b) = (median_u(&tar0_bytes), median_u(&tar1_bytes));
    let time_ratio = inc.wall() / full.wall();
    let cpu_ratio = inc.cpu() / full.cpu();
    let bytes_ratio = ib / fb;
    let kit = dry_kit.wall() - dry_nokit.wall();
    let kit_cpu = dry_kit.cpu() - dry_nokit.cpu();
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let mib = |b: f64| format!("{:.1} MiB", b / MIB as f64);
    let kib = |b: f64| format!("{:.0} KiB", b / 1024.0);

    println!();
    println!(
        "bench external (incremental): {}; {} of the small files ({} files, {}) rewritten before each \
         incremental",
        spec.describe(stats),
        format_args!("1 in {every}"),
        changed.0,
        human_bytes(changed.1)
    );
    println!(
        "drive: exFAT (mount.exfat-fuse) on {} (a loop device over a sparse image on the local disk); {reps} \
         repetitions (medians); source in the page cache (warm), every backup fsynced and read back by dbackup; \
         release build; load average {} before, {} after ({} cores, shared)",
        drive.device().display(),
        load_before,
        load_after,
        cores()
    );
    print_table_head();
    println!(
        "| full external, {} files | {} | GNU tar -g level 0 \\| dd conv=fsync (no hash, no read-back) | {} | {:.2} | |",
        stats.files,
        full.cell(),
        tar0.cell(),
        full.wall() / tar0.wall()
    );
    println!(
        "| incremental external, {}% changed | {} | GNU tar -g level 1 \\| dd conv=fsync | {} | {:.2} | |",
        args.changed_percent,
        inc.cell(),
        tar1.cell(),
        inc.wall() / tar1.wall()
    );
    println!(
        "| incremental / full, time | {time_ratio:.3} (CPU {cpu_ratio:.3}) | GNU tar level 1 / level 0 | {:.3} | | <= {GOAL_TIME}: {} |",
        tar1.wall() / tar0.wall(),
        verdict(time_ratio <= GOAL_TIME)
    );
    println!(
        "| drive bytes, full | {} | GNU tar level 0 | {} | {:.3} | |",
        mib(fb),
        mib(t0b),
        fb / t0b
    );
    println!(
        "| drive bytes, incremental | {} (index {}) | GNU tar level 1 | {} | {:.3} | |",
        mib(ib),
        mib(index_bytes as f64),
        mib(t1b),
        ib / t1b
    );
    println!(
        "| incremental / full, drive bytes | {bytes_ratio:.4} | GNU tar level 1 / level 0 | {:.4} | | <= {GOAL_BYTES}: {} |",
        t1b / t0b,
        verdict(bytes_ratio <= GOAL_BYTES)
    );
    println!(
        "| incrementals 3..{} of the chain | {} | | | | |",
        args.chain,
        later.cell()
    );
    println!(
        "| the recovery kit's share of every run (dry run with the kit {} minus without {}) | {kit:.3} s ({kit_cpu:.2} s CPU) | | | | |",
        dry_kit.cell(),
        dry_nokit.cell(),
    );
    println!(
        "| incremental / full, time, without the kit's share | {:.3} (CPU {:.3}) | | | | <= {GOAL_TIME}: {} |",
        (inc.wall() - kit) / (full.wall() - kit),
        (inc.cpu() - kit_cpu) / (full.cpu() - kit_cpu),
        verdict((inc.wall() - kit) / (full.wall() - kit) <= GOAL_TIME)
    );
    for (i, what) in ["kept in the full", "stored in the newest"]
        .iter()
        .enumerate()
    {
        let dev = median_u(&one_bytes[i].iter().map(|b| b.device).collect::<Vec<_>>());
        let rchar = median_u(&one_bytes[i].iter().map(|b| b.rchar).collect::<Vec<_>>());
        let tdev = median_u(
            &one_tar_bytes[i]
                .iter()
                .map(|b| b.device)
                .collect::<Vec<_>>(),
        );
        let trchar = median_u(&one_tar_bytes[i].iter().map(|b| b.rchar).collect::<Vec<_>>());
        println!(
            "| one file {what}, newest of a chain of {}: time | {} | GNU tar -xpf of each archive in order (docs/RESTORE.md) | {} | {:.3} | |",
            args.chain,
            one[i].cell(),
            one_tar[i].cell(),
            one[i].wall() / one_tar[i].wall()
        );
        println!(
            "| one file {what}: bytes read from the drive (loop device) / by the process (rchar) | {} / {} | the same, GNU tar | {} / {} | {:.4} | one index ({}) + one entry ({}) = {}: {} |",
            kib(dev),
            kib(rchar),
            kib(tdev),
            kib(trchar),
            dev / tdev,
            kib(index_bytes as f64),
            kib(ideal[i] as f64),
            kib((index_bytes + ideal[i]) as f64),
            verdict(dev <= (index_bytes + ideal[i]) as f64 * 1.1)
        );
    }
    det.print_rows(detect_files);
    println!(
        "\nbytes read: the loop device's sectors read (everything the FUSE daemon fetched, file system metadata and \
         read-ahead included) and rchar (what the process's read calls returned: the config and /proc files too); \
         the drive's caches dropped before each run for the bench's own files only"
    );
    Ok(())
}

/// The change detection on a no-change snapshot of `files` files, and peak memory: what `--only detect` runs alone
/// and the incremental half runs last.
struct Detection {
    /// The phase as each dry run timed it itself (`timings.detection_seconds` of its `--json` plan).
    phase: Vec<f64>,
    /// The whole dry run (kit off), the same with `--full` (no comparison), and GNU tar level 1 into /dev/null.
    dry: Runs,
    dry_full: Runs,
    tar: Runs,
    mem_full: Measured,
    mem_inc: Measured,
}

/// A full of a tree of `files` small files on the drive, a second snapshot with no change, then (at least 3
/// times, turns about with GNU tar) the dry runs planning an incremental on it; last, the incremental itself.
fn detection(w: &World, bench: &Path, files: u64, chain: u64, reps: usize) -> Result<Detection> {
    heading(&format!(
        "bench external (incremental): {files} files: full, no change, detection"
    ));
    let mem_tree = bench.join(format!("memtree-{files}"));
    super::tree::ensure_memory_tree(&mem_tree, files)?;
    let mem_config = w.config(MEM_SET, &mem_tree, chain, true)?;
    // The detection is timed without the recovery kit, whose tools (blkid probing every block device, apt-mark)
    // cost more than the walk and vary with the machine.
    let mem_nokit = w.config(MEM_SET, &mem_tree, chain, false)?;
    w.collect(&mem_config)?;
    Cache::Warm.prepare()?;
    let mem_full = w.external(&mem_config, &["--full"], "full")?;
    w.collect(&mem_config)?;
    let mut d = Detection {
        phase: Vec::new(),
        dry: Runs::default(),
        dry_full: Runs::default(),
        tar: Runs::default(),
        mem_full,
        mem_inc: Measured::default(),
    };
    let tar = |snar: &Path, what: &str| -> Result<Measured> {
        measure(
            Command::new("tar")
                .arg("-c")
                .arg("-g")
                .arg(snar)
                .arg("-f")
                .arg("/dev/null")
                .arg("-C")
                .arg(&mem_tree)
                .arg("."),
            what,
            &[],
        )
    };
    let snar0 = w.work.join("tar/mem.snar0");
    tar(&snar0, "tar -g (level 0)")?;
    for rep in 0..reps.max(3) {
        for theirs in super::measure::turns(rep) {
            if theirs {
                let snar = w.work.join("tar/mem.snar1");
                std::fs::copy(&snar0, &snar)?;
                d.tar.0.push(tar(&snar, "tar -g (level 1 into /dev/null)")?);
            } else {
                let m = w.dry_run(&mem_nokit, false)?;
                d.phase.push(planned_incremental(&m.stdout)?);
                d.dry.0.push(m);
                d.dry_full.0.push(w.dry_run(&mem_nokit, true)?);
            }
        }
    }
    Cache::Warm.prepare()?;
    d.mem_inc = w.external(&mem_config, &[], "incremental")?;
    Ok(d)
}

/// The change detection's own time from a dry run's `--json` plan, which must plan an incremental.
fn planned_incremental(stdout: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .context("dbackup external --dry-run --json printed something else")?;
    anyhow::ensure!(
        v["destinations"][0]["archives"][0]["kind"] == "incremental",
        "the dry run plans no incremental: {stdout}"
    );
    v["timings"]["detection_seconds"]
        .as_f64()
        .with_context(|| format!("the dry run's plan has no timings.detection_seconds: {stdout}"))
}

impl Detection {
    /// The detection's and peak memory's rows of the result table.
    fn print_rows(&self, files: u64) {
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / MIB as f64);
        let tar_mem = self.tar.0.iter().map(|m| m.max_rss).max().unwrap_or(0);
        let mut phase = self.phase.clone();
        phase.sort_by(f64::total_cmp);
        let phase = phase.get(phase.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "| change detection alone, {files} files, no change: the phase as the run times it (base index checked, one walk of stats beside its manifest) | {phase:.3} s | GNU tar -g level 1 -f /dev/null (stats only) | {} | {:.2} | < {GOAL_DETECT_SECS} s: {} |",
            self.tar.cell(),
            phase / self.tar.wall(),
            verdict(phase < GOAL_DETECT_SECS)
        );
        println!(
            "| the whole dry run, kit off (process start, config, drive detection, the detection, the plan) | {} | the same tar | {} | {:.2} | < {GOAL_DETECT_SECS} s: {} |",
            self.dry.cell(),
            self.tar.cell(),
            self.dry.wall() / self.tar.wall(),
            verdict(self.dry.wall() < GOAL_DETECT_SECS)
        );
        println!(
            "| the dry run beyond a plain scan (dry run minus dry run --full {}) | {:.3} s ({:.2} s CPU) | | | | |",
            self.dry_full.cell(),
            self.dry.wall() - self.dry_full.wall(),
            self.dry.cpu() - self.dry_full.cpu()
        );
        println!(
            "| peak memory, external --full, {files} files | {} | GNU tar -g level 1 -f /dev/null | {} | {:.2} | < {}: {} |",
            mib(self.mem_full.max_rss),
            mib(tar_mem),
            self.mem_full.max_rss as f64 / tar_mem as f64,
            human_bytes(GOAL_MEMORY),
            verdict(self.mem_full.max_rss < GOAL_MEMORY)
        );
        println!(
            "| peak memory, external (incremental, no change), {files} files | {} ({:.2} s, {:.2} s CPU) | | | | < {}: {} |",
            mib(self.mem_inc.max_rss),
            self.mem_inc.wall.as_secs_f64(),
            self.mem_inc.cpu.as_secs_f64(),
            human_bytes(GOAL_MEMORY),
            verdict(self.mem_inc.max_rss < GOAL_MEMORY)
        );
    }
}

/// `--only detect`: the change detection and peak memory alone, on a drive of their own (minutes, not the
/// incremental half's hour).
pub fn run_detect(bin: &Path, bench: &Path, reps: usize, files: u64, chain: u64) -> Result<()> {
    let work = bench.join("external-detect");
    remove_dir_if_exists(&work)?;
    for d in ["home", "state", "xdg-config", "tar"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    // A full and an incremental of the small files (headers, padding, the index): sparse.
    let image = files * 8192 + 1024 * MIB;
    heading(&format!(
        "bench external (detect): an exFAT drive of {} on a loop device",
        human_bytes(image)
    ));
    let drive = Drive::exfat("T9", image);
    let w = World {
        bin,
        work: work.clone(),
        drive: &drive,
        src: PathBuf::new(),
        small_files: 0,
    };
    let load_before = loadavg();
    let result = detection(&w, bench, files, chain, reps).map(|d| {
        println!();
        println!(
            "bench external (detect): {files} small files, no change; exFAT (mount.exfat-fuse) on {} (a loop device \
             over a sparse image); {} repetitions (medians); release build; load average {load_before} before, {} \
             after ({} cores, shared)",
            drive.device().display(),
            reps.max(3),
            loadavg(),
            cores()
        );
        print_table_head();
        d.print_rows(files);
    });
    drop(drive);
    remove_dir_if_exists(&work)?;
    result
}

/// A small file `k` that no cycle rewrote (cycle `c` rewrites `k % every == c % every`), if there is one.
fn pick_unchanged(small_files: u64, every: u64, cycles: u64) -> Option<u64> {
    (cycles < every).then(|| (small_files / 2 / every) * every + every - 1)
}

/// The result table's head, after a blank line.
fn print_table_head() {
    println!();
    println!("| figure | dbackup | plain tool | plain | dbackup / plain | goal |");
    println!("|---|---|---|---|---|---|");
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

impl World<'_> {
    fn dbackup(&self, config: &Path) -> Command {
        super::measure::dbackup_command(self.bin, &self.work, config)
    }

    fn backups(&self) -> PathBuf {
        self.drive.mount_point().join("backups")
    }

    /// A config with one set and the drive, incrementals on with a chain of `chain` allowed, retention that keeps
    /// everything the bench makes; without the recovery kit (`image.kit`, on by default) unless `kit`.
    fn config(&self, set: &str, source: &Path, chain: u64, kit: bool) -> Result<PathBuf> {
        let mut config = serde_json::json!({
            "backup_root": self.work.join(format!("root-{set}")),
            "backup_sets": [{ "name": set, "sources": [source] }],
            "retention": { "local": 100, "external": 100 },
            "destinations": [{ "name": "T9", "path": self.drive.mount_point(), "fs_label": "T9", "retention": 100 }],
            "external": { "incremental": {
                "enabled": true, "max_chain": chain - 1, "max_percent": 1000, "full_after_days": 30
            } },
        });
        let mut name = format!("config-{set}.json");
        if !kit {
            config["image"] = serde_json::json!({ "kit": false });
            name = format!("config-{set}-nokit.json");
        }
        let path = self.work.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(path)
    }

    fn collect(&self, config: &Path) -> Result<()> {
        measure(self.dbackup(config).arg("collect"), "dbackup collect", &[])?;
        Ok(())
    }

    /// `dbackup --json external ARGS`, checked to have written and verified a `kind` archive.
    fn external(&self, config: &Path, args: &[&str], kind: &str) -> Result<Measured> {
        let m = measure(
            self.dbackup(config).args(["--json", "external"]).args(args),
            "dbackup external",
            &[],
        )?;
        let v: serde_json::Value = serde_json::from_str(&m.stdout)
            .context("dbackup external --json printed something else")?;
        let d = &v["destinations"][0];
        anyhow::ensure!(
            d["status"] == "written",
            "dbackup external did not write and verify a backup: {}",
            m.stdout
        );
        let got: Vec<&str> = d["sets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["kind"].as_str())
            .collect();
        anyhow::ensure!(
            got == [kind],
            "dbackup external wrote {got:?}, not one {kind}: {}",
            m.stdout
        );
        Ok(m)
    }

    /// `dbackup --json external --dry-run [--full]`.
    fn dry_run(&self, config: &Path, full: bool) -> Result<Measured> {
        let mut c = self.dbackup(config);
        c.args(["--json", "external", "--dry-run"]);
        if full {
            c.arg("--full");
        }
        measure(&mut c, "dbackup external --dry-run", &[])
    }

    fn newest(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.backups().join("LATEST"))
            .context("the external phase left no LATEST on the drive")?
            .trim()
            .to_string())
    }

    /// The bytes of every file of the newest backup's directory.
    fn newest_backup_bytes(&self) -> Result<u64> {
        let dir = self.backups().join(self.newest()?);
        let mut total = 0;
        for e in std::fs::read_dir(&dir)? {
            total += e?.metadata()?.len();
        }
        Ok(total)
    }

    /// The newest backup's chain of the set, oldest first (each backup.json's `base`).
    fn chain(&self) -> Result<Vec<String>> {
        let mut chain = vec![self.newest()?];
        loop {
            let meta = self.backups().join(chain[0].clone()).join("backup.json");
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta)?)?;
            let base = v["sets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["set"] == SET)
                .and_then(|s| s["base"].as_str())
                .map(str::to_string);
            match base {
                Some(b) if chain.len() < 100 => chain.insert(0, b),
                _ => return Ok(chain),
            }
        }
    }

    fn small_file(&self, k: u64) -> PathBuf {
        self.src.join(format!(
            "small/{:03}/{:02}/file-{k:06}.dat",
            k / 1000,
            (k / 100) % 10
        ))
    }

    /// Rewrites the small files `k` with `k % every == cycle % every` (new bytes, same size, by rename, so the
    /// bench tree the links share is never touched); returns (files, bytes).
    fn change(&self, cycle: u64, every: u64) -> Result<(u64, u64)> {
        let (mut files, mut bytes) = (0, 0);
        let mut k = cycle % every;
        while k < self.small_files {
            let path = self.small_file(k);
            let mut data = std::fs::read(&path)?;
            for (i, b) in data.iter_mut().enumerate() {
                *b = b.wrapping_add((i as u8 ^ cycle as u8).wrapping_add(1));
            }
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, &data)?;
            std::fs::rename(&tmp, &path)?;
            files += 1;
            bytes += data.len() as u64;
            k += every;
        }
        Ok((files, bytes))
    }

    fn tar_out(&self, level: u8) -> PathBuf {
        self.drive
            .mount_point()
            .join(format!("tar-level{level}.tar"))
    }

    /// GNU tar's listed-incremental dump of the tree at `level` (1: on level 0's snapshot file), streamed to the
    /// drive by dd and fsynced.
    fn tar_level(&self, level: u8) -> Result<Measured> {
        let snar0 = self.work.join("tar/level0.snar");
        let snar = self.work.join(format!("tar/level{level}.snar"));
        if level == 0 {
            let _ = std::fs::remove_file(&snar0);
        } else {
            std::fs::copy(&snar0, &snar)?;
        }
        measure(
            Command::new("bash")
                .arg("-c")
                .arg(
                    r#"set -eo pipefail; tar -c -g "$1" -f - -C "$2" . | dd of="$3" bs=1M iflag=fullblock conv=fsync status=none"#,
                )
                .arg("bash")
                .arg(&snar)
                .arg(&self.src)
                .arg(self.tar_out(level)),
            "tar -g | dd",
            &[],
        )
    }

    fn clear_tar(&self) -> Result<()> {
        for level in [0, 1] {
            let _ = std::fs::remove_file(self.tar_out(level));
        }
        Ok(())
    }

    /// Removes the set's backups from the drive (untimed).
    fn clear_drive(&self) -> Result<()> {
        if let Ok(entries) = std::fs::read_dir(self.backups()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("20") && e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                }
            }
        }
        self.clear_tar()?;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    }

    /// Drops what the page cache holds of the drive, for this bench's files only: every file under `backups/`
    /// (the FUSE file pages), the loop device's buffers, and the image file under it.
    fn drop_drive_cache(&self) -> Result<()> {
        Cache::Warm.prepare()?;
        for e in walkdir::WalkDir::new(self.backups()).into_iter().flatten() {
            if e.file_type().is_file() {
                fadvise_dontneed(e.path())?;
            }
        }
        let status = Command::new("blockdev")
            .arg("--flushbufs")
            .arg(self.drive.device())
            .status()?;
        anyhow::ensure!(status.success(), "blockdev --flushbufs failed");
        fadvise_dontneed(self.drive.image())?;
        Ok(())
    }

    /// Sectors read by the loop device so far, in bytes.
    fn device_read(&self) -> Result<u64> {
        let name = self
            .drive
            .device()
            .file_name()
            .context("the loop device has no name")?
            .to_string_lossy()
            .into_owned();
        let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat"))?;
        let sectors: u64 = stat
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .context("no sectors read in the loop device's stat")?;
        Ok(sectors * 512)
    }

    fn restore_one(&self, file: &Path) -> Result<(Measured, ReadBytes)> {
        let target = self.work.join("r-dbackup");
        remove_dir_if_exists(&target)?;
        self.drop_drive_cache()?;
        let before = self.device_read()?;
        let m = measure(
            self.dbackup(&self.work.join(format!("config-{SET}.json")))
                .args(["restore", "--source", "external", "--path"])
                .arg(file)
                .arg("--target")
                .arg(&target),
            "dbackup restore --path",
            &[],
        )?;
        let device = self.device_read()? - before;
        self.check_restored(&target, file, "dbackup")?;
        let rchar = m.rchar;
        Ok((m, ReadBytes { device, rchar }))
    }

    /// The GNU-tar-only way (docs/RESTORE.md): the newest index must list the file; then each archive of the
    /// chain, oldest first, extracted with the file's name (an archive that does not hold it says so: ignored).
    fn tar_one(&self, chain: &[String], file: &Path) -> Result<(Measured, ReadBytes)> {
        let target = self.work.join("r-tar");
        remove_dir_if_exists(&target)?;
        std::fs::create_dir_all(&target)?;
        self.drop_drive_cache()?;
        let before = self.device_read()?;
        let name = file.to_string_lossy().trim_start_matches('/').to_string();
        let m = measure(
            Command::new("bash")
                .arg("-c")
                .arg(
                    r#"set -e; cd "$1"; dest=$2; name=$3; shift 3
                    newest=${!#}
                    grep -qF "\"path\":\"$name\"" "$newest/bench.index.jsonl"
                    for b in "$@"; do
                        tar -xpf "$b/bench.tar" -C "$dest" --numeric-owner "$name" 2>/dev/null || true
                    done"#,
                )
                .arg("bash")
                .arg(self.backups())
                .arg(&target)
                .arg(&name)
                .args(chain),
            "tar -xpf along the chain",
            &[],
        )?;
        let device = self.device_read()? - before;
        self.check_restored(&target, file, "tar")?;
        let rchar = m.rchar;
        Ok((m, ReadBytes { device, rchar }))
    }

    fn check_restored(&self, target: &Path, file: &Path, who: &str) -> Result<()> {
        let rel = file.strip_prefix("/").unwrap_or(file);
        let got = std::fs::read(target.join(rel))
            .with_context(|| format!("{who} restored no {}", file.display()))?;
        anyhow::ensure!(
            got == std::fs::read(file)?,
            "{who} restored other bytes than {}",
            file.display()
        );
        let meta = std::fs::metadata(target.join(rel))?;
        anyhow::ensure!(
            meta.mtime() == std::fs::metadata(file)?.mtime(),
            "{who} restored {} with another mtime",
            file.display()
        );
        Ok(())
    }
}

fn fadvise_dontneed(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: a valid open descriptor; DONTNEED only drops clean cached pages.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    anyhow::ensure!(r == 0, "posix_fadvise {}: error {r}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_child_reports_its_reads_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 300_000]).unwrap();
        let m = measure(Command::new("cat").arg(&file), "cat", &[]).unwrap();
        assert_eq!(m.stdout.len(), 300_000);
        assert!(m.rchar >= 300_000, "rchar {}", m.rchar);
        assert!(m.max_rss > 0);
        let err = measure(&mut Command::new("false"), "false", &[]).unwrap_err();
        assert!(err.to_string().contains("false failed"), "{err}");
        measure(&mut Command::new("false"), "false", &[1]).unwrap();
    }

    #[test]
    fn the_file_kept_in_the_full_was_never_rewritten() {
        for (small, every, cycles) in [(20_000, 100, 12), (20_000, 100, 0), (1000, 10, 9)] {
            let k = pick_unchanged(small, every, cycles).unwrap();
            assert!(k < small);
            assert!(
                (0..cycles).all(|c| k % every != c % every),
                "{small} {every} {cycles}: {k}"
            );
        }
        assert_eq!(pick_unchanged(1000, 10, 10), None);
    }
}
