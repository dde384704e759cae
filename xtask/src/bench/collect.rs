//! `cargo xtask bench collect`: `dbackup collect` against plain `rsync` with exactly the flags dbackup passes
//! (read from `dbackup --dry-run --json collect`), on one deterministic tree, for a first run (empty
//! destination) and a no-change run (`--link-dest` to the first). Prints medians and the ratio dbackup/rsync.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::measure::{Cache, Table};
use super::tree::{self, TreeSpec, TreeStats};
use crate::packages::Need;
use crate::util::{
    find_program, heading, human_bytes, human_duration, remove_dir_if_exists, target_dir,
    wait_for_next_second,
};

/// The goal of issue 2: dbackup's overhead over plain rsync stays within 10%.
const GOAL: f64 = 1.10;

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub tree: TreeSpec,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// How the page cache is treated before each timed run (the same for both)
    #[arg(long, value_enum, default_value_t = Cache::Warm)]
    pub cache: Cache,
}

/// The paths of one bench run, all under `target/bench/`.
struct World {
    bin: PathBuf,
    tree: PathBuf,
    work: PathBuf,
    config: PathBuf,
    dbackup_root: PathBuf,
    rsync_root: PathBuf,
}

/// The set's name in the bench config.
const SET: &str = "bench";

pub fn run(args: CollectArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let (sh, bin) = super::measure::prepare("collect", None, Need::Bench, &[], "")?;
    let rsync = find_program("rsync").context("rsync is not installed: apt-get install rsync")?;

    let bench = target_dir(&sh)?.join("bench");
    std::fs::create_dir_all(&bench)?;
    let bench = bench.canonicalize()?;
    heading("bench collect: the tree");
    let stats = tree::ensure(&bench.join("tree"), &args.tree)?;

    let work = bench.join("collect");
    remove_dir_if_exists(&work)?;
    for d in ["home", "state", "xdg-config"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let w = World {
        bin,
        tree: bench.join("tree"),
        config: work.join("config.json"),
        dbackup_root: work.join("dbackup-root"),
        rsync_root: work.join("rsync-root"),
        work,
    };
    let config = serde_json::json!({
        "backup_root": w.dbackup_root,
        "backup_sets": [{ "name": SET, "sources": [w.tree], "method": "rsync" }],
    });
    std::fs::write(&w.config, serde_json::to_string_pretty(&config)?)?;

    heading("bench collect: the rsync command dbackup runs");
    let first_cmd = w.rsync_plan()?;
    eprintln!("first run: {}", first_cmd.render());
    // Also an untimed warm-up of dbackup: it leaves a snapshot, so the next plan shows --link-dest.
    wait_for_next_second();
    w.dbackup_collect()
        .context("warm-up dbackup collect failed")?;
    let next_cmd = w.rsync_plan()?;
    eprintln!("next runs: {}", next_cmd.render());
    super::measure::remove_backup_root(&w.work, &w.dbackup_root)?;
    // The untimed warm-up of rsync, so both start from the same page cache.
    std::fs::create_dir_all(&w.rsync_root)?;
    w.rsync(&first_cmd, "warm-up", None)?;
    remove_dir_if_exists(&w.rsync_root)?;

    heading(&format!(
        "bench collect: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let mut table = Table::new(
        &["rsync", "rsync+syncfs", "dbackup"],
        &["first run (empty)", "no-change run"],
        &[(DBACKUP, RSYNC), (DBACKUP, RSYNC_SYNCFS)],
    );
    let mut cpu_table = Table::new(
        &["rsync", "dbackup"],
        &["first run (empty)", "no-change run"],
        &[(1, 0)],
    );
    for rep in 0..args.reps {
        // Alternate who goes first, so drift on a shared machine does not favour one.
        let order = super::measure::turns(rep);
        for is_dbackup in order {
            let check = rep == 0;
            let runs = if is_dbackup {
                w.measure_dbackup(args.cache, check, stats)?
            } else {
                w.measure_rsync(&first_cmd, &next_cmd, args.cache, check, stats)?
            };
            for (row, run) in runs.iter().enumerate() {
                cpu_table.push(row, usize::from(is_dbackup), run.cpu);
                if is_dbackup {
                    table.push(row, DBACKUP, run.tool);
                } else {
                    table.push(row, RSYNC, run.tool);
                    table.push(row, RSYNC_SYNCFS, run.tool + run.sync);
                }
            }
            let name = if is_dbackup { "dbackup" } else { "rsync" };
            eprintln!(
                "  rep {}: {name:<7} first {:>8}  no-change {:>8}",
                rep + 1,
                runs[0].describe(),
                runs[1].describe()
            );
        }
    }
    remove_dir_if_exists(&w.work)?;

    println!();
    println!("bench collect: {}", args.tree.describe(stats));
    println!(
        "{} repetitions, {}; {} cores; {}",
        args.reps,
        args.cache.describe(),
        cores(),
        rsync_version(&rsync)
    );
    println!("rsync: {}", next_cmd.render());
    println!(
        "rsync+syncfs: the same, then syncfs(2) of the destination, as dbackup does before promoting"
    );
    println!("\nwall-clock time:");
    table.print();
    println!(
        "\nCPU time (user + system, with children): steadier than wall-clock on a busy machine"
    );
    cpu_table.print();
    let worst = |f: &dyn Fn(usize) -> f64| (0..table.row_count()).map(f).fold(0.0, f64::max);
    let of_medians = worst(&|row| table.ratio(row, (DBACKUP, RSYNC)));
    let paired = worst(&|row| table.paired_ratio(row, (DBACKUP, RSYNC)));
    let verdict = if of_medians <= GOAL { "met" } else { "NOT met" };
    println!(
        "\ngoal: wall-clock dbackup/rsync <= {GOAL:.2}: {verdict} \
         (worst ratio of medians {of_medians:.3}; worst paired ratio {paired:.3})"
    );
    Ok(())
}

/// Columns of the result table.
const RSYNC: usize = 0;
const RSYNC_SYNCFS: usize = 1;
const DBACKUP: usize = 2;

/// The cost of one run: the tool itself, and (plain rsync only) the syncfs that makes its copy durable.
#[derive(Debug, Clone, Copy)]
struct Run {
    tool: Duration,
    cpu: Duration,
    sync: Duration,
}

impl Run {
    fn describe(&self) -> String {
        if self.sync.is_zero() {
            human_duration(self.tool)
        } else {
            format!(
                "{} (+{} syncfs)",
                human_duration(self.tool),
                human_duration(self.sync)
            )
        }
    }
}

impl World {
    fn dbackup(&self) -> Command {
        super::measure::dbackup_command(&self.bin, &self.work, &self.config)
    }

    fn dbackup_collect(&self) -> Result<Timing> {
        let mut c = self.dbackup();
        c.arg("collect");
        timed(&mut c, "dbackup collect")
    }

    /// The rsync argv of dbackup's plan for the bench set, as a template. Without it there is nothing fair to
    /// compare with, so failing to read it fails the bench.
    fn rsync_plan(&self) -> Result<RsyncCommand> {
        let out = self
            .dbackup()
            .args(["--dry-run", "--json", "collect"])
            .output()
            .context("cannot run dbackup")?;
        if !out.status.success() {
            bail!(
                "`dbackup --dry-run --json collect` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let plan: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("the collect plan is not JSON")?;
        let argv =
            find_rsync_argv(&plan).context("no rsync command line found in the collect plan")?;
        RsyncCommand::from_argv(&argv)
    }

    fn rsync(&self, cmd: &RsyncCommand, name: &str, link_dest: Option<&Path>) -> Result<Timing> {
        let dest = self.rsync_root.join(name);
        timed(&mut cmd.command(&dest, link_dest), "rsync")
    }

    /// One first run and one no-change run of plain rsync, from an empty destination, each followed by a
    /// separately timed syncfs of the destination.
    fn measure_rsync(
        &self,
        first: &RsyncCommand,
        next: &RsyncCommand,
        cache: Cache,
        check: bool,
        stats: TreeStats,
    ) -> Result<[Run; 2]> {
        remove_dir_if_exists(&self.rsync_root)?;
        std::fs::create_dir_all(&self.rsync_root)?;
        let mut runs = Vec::new();
        for (cmd, name, link_dest) in [
            (first, "1", None),
            (next, "2", Some(self.rsync_root.join("1"))),
        ] {
            cache.prepare()?;
            let t = self.rsync(cmd, name, link_dest.as_deref())?;
            let sync = syncfs(&self.rsync_root.join(name))?;
            runs.push(Run {
                tool: t.wall,
                cpu: t.cpu,
                sync,
            });
        }
        if check {
            check_copy(
                "rsync",
                &self.rsync_root.join("1"),
                &self.rsync_root.join("2"),
                stats,
            )?;
        }
        remove_dir_if_exists(&self.rsync_root)?;
        Ok([runs[0], runs[1]])
    }

    /// One first run and one no-change run of `dbackup collect`, from an empty backup root.
    fn measure_dbackup(&self, cache: Cache, check: bool, stats: TreeStats) -> Result<[Run; 2]> {
        super::measure::remove_backup_root(&self.work, &self.dbackup_root)?;
        cache.prepare()?;
        let t1 = self.dbackup_collect()?;
        // Snapshot names have one-second resolution (untimed).
        wait_for_next_second();
        cache.prepare()?;
        let t2 = self.dbackup_collect()?;
        if check {
            let snaps = self.snapshots()?;
            let [s1, s2] = &snaps[..] else {
                bail!("dbackup: expected two snapshots, found {snaps:?}")
            };
            check_copy("dbackup", s1, s2, stats)?;
        }
        super::measure::remove_backup_root(&self.work, &self.dbackup_root)?;
        let run = |t: Timing| Run {
            tool: t.wall,
            cpu: t.cpu,
            sync: Duration::ZERO,
        };
        Ok([run(t1), run(t2)])
    }

    fn snapshots(&self) -> Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dbackup_root)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{SET}-"))
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Checks, once, that a contender copied the whole tree and that its second run hard-linked the first.
fn check_copy(who: &str, first: &Path, second: &Path, stats: TreeStats) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in [first, second] {
        let got = tree::measure(dir);
        if (got.files, got.bytes) != (stats.files, stats.bytes) {
            bail!(
                "{who}: {} holds {} files, {} but the tree has {} files, {}",
                dir.display(),
                got.files,
                human_bytes(got.bytes),
                stats.files,
                human_bytes(stats.bytes)
            );
        }
    }
    let unshared = walkdir::WalkDir::new(second)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.metadata().is_ok_and(|m| m.nlink() < 2))
        .count();
    if unshared > 0 {
        bail!("{who}: {unshared} files of the no-change run are not hard-linked to the first run");
    }
    Ok(())
}

/// The cost of one process run: wall-clock time, and the CPU time (user + system) of it and its children.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// CPU time (user + system) of all the children this process has waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs a command to completion and returns its cost; fails with its stderr when it fails.
fn timed(cmd: &mut Command, what: &str) -> Result<Timing> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    let wall = start.elapsed();
    let cpu = children_cpu().saturating_sub(cpu_before);
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Timing { wall, cpu })
}

/// One argument of the rsync template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Lit(String),
    /// `--link-dest=DIR` (the value is the one from dbackup's plan, replaced by the previous run's destination).
    LinkDest(String),
    /// The destination, always last.
    Dest {
        trailing_slash: bool,
    },
}

/// An rsync command line with holes for the destination and `--link-dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RsyncCommand {
    program: String,
    args: Vec<Arg>,
}

impl RsyncCommand {
    /// From the argv in dbackup's plan: the last argument is the destination; `--link-dest` (either spelling)
    /// becomes a hole; everything else is kept as is.
    fn from_argv(argv: &[String]) -> Result<RsyncCommand> {
        let [program, rest @ .., dest] = argv else {
            bail!("rsync argv too short: {argv:?}")
        };
        let mut args = Vec::new();
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            if let Some(v) = a.strip_prefix("--link-dest=") {
                args.push(Arg::LinkDest(v.to_string()));
            } else if a == "--link-dest" {
                args.push(Arg::LinkDest(
                    it.next().cloned().context("--link-dest without a value")?,
                ));
            } else {
                args.push(Arg::Lit(a.clone()));
            }
        }
        args.push(Arg::Dest {
            trailing_slash: dest.ends_with('/'),
        });
        Ok(RsyncCommand {
            program: program.clone(),
            args,
        })
    }

    /// The command for one run. dbackup may pass several `--link-dest`s (the previous snapshot and a resumed
    /// one); a plain rsync run has one previous run, given at the first of them.
    fn command(&self, dest: &Path, link_dest: Option<&Path>) -> Command {
        let mut c = Command::new(&self.program);
        let mut link_dest = link_dest;
        for a in &self.args {
            match a {
                Arg::Lit(s) => {
                    c.arg(s);
                }
                Arg::LinkDest(_) => {
                    if let Some(l) = link_dest.take() {
                        c.arg(format!("--link-dest={}", l.display()));
                    }
                }
                Arg::Dest { trailing_slash } => {
                    c.arg(format!(
                        "{}{}",
                        dest.display(),
                        if *trailing_slash { "/" } else { "" }
                    ));
                }
            }
        }
        c
    }

    /// The command line for people, with `PREVIOUS` and `DEST` for the holes.
    fn render(&self) -> String {
        let mut out = vec![self.program.clone()];
        for a in &self.args {
            out.push(match a {
                Arg::Lit(s) => quote(s),
                Arg::LinkDest(_) => "--link-dest=PREVIOUS".into(),
                Arg::Dest { .. } => "DEST".into(),
            });
        }
        out.join(" ")
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=,:+-@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The first array of strings in `plan` that is an rsync command line (its first element names rsync).
/// dbackup's plan has it at `/sets/N/rsync_argv`; searching keeps the bench working if the plan's shape moves.
fn find_rsync_argv(plan: &serde_json::Value) -> Option<Vec<String>> {
    match plan {
        serde_json::Value::Array(items) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            if let Some(argv) = strings
                && argv.len() >= 2
                && Path::new(&argv[0])
                    .file_name()
                    .is_some_and(|n| n == "rsync")
            {
                return Some(argv);
            }
            items.iter().find_map(find_rsync_argv)
        }
        serde_json::Value::Object(map) => map.values().find_map(find_rsync_argv),
        _ => None,
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn rsync_version(rsync: &Path) -> String {
    let out = Command::new(rsync).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match text.lines().next() {
        Some(first) => first.split_whitespace().collect::<Vec<_>>().join(" "),
        None => "rsync (version unknown)".into(),
    }
}

/// Flushes the filesystem holding `dir` (what dbackup does once rsync is done) and returns how long it took.
fn syncfs(dir: &Path) -> Result<Duration> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let start = Instant::now();
    // SAFETY: the descriptor is valid for the life of `f`.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncfs {}", dir.display()));
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rsync_argv_is_found_anywhere_in_the_plan() {
        // As dbackup prints it, and nested deeper under another name.
        let plan = serde_json::json!({
            "stamp": "2025-04-01-031500",
            "sets": [{ "name": "data", "rsync_argv": ["rsync", "-aHAX", "--", "/data", "/r/.data.in-progress/"] }]
        });
        assert_eq!(find_rsync_argv(&plan).unwrap()[1], "-aHAX");
        let plan = serde_json::json!({
            "sets": [{ "name": "data", "rsync": { "argv": ["/usr/bin/rsync", "-aH", "/data", "/r/x/"] } }]
        });
        assert_eq!(find_rsync_argv(&plan).unwrap()[1], "-aH");
        assert_eq!(
            find_rsync_argv(&serde_json::json!({ "argv": ["tar", "-c"] })),
            None
        );
    }

    #[test]
    fn the_template_replaces_only_destination_and_link_dest() {
        let argv: Vec<String> = [
            "rsync",
            "-aHAX",
            "--link-dest",
            "/r/data-1",
            "--link-dest=/r/.data-2.partial",
            "--exclude=*.log",
            "--",
            "/data",
            "/r/.data.tmp/",
        ]
        .map(String::from)
        .into();
        let cmd = RsyncCommand::from_argv(&argv).unwrap();
        assert_eq!(
            cmd.render(),
            "rsync -aHAX --link-dest=PREVIOUS --link-dest=PREVIOUS '--exclude=*.log' -- /data DEST"
        );
        let args = |c: Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(cmd.command(Path::new("/b/2"), Some(Path::new("/b/1")))),
            [
                "-aHAX",
                "--link-dest=/b/1",
                "--exclude=*.log",
                "--",
                "/data",
                "/b/2/"
            ],
            "one --link-dest, to the previous run"
        );
        assert_eq!(
            args(cmd.command(Path::new("/b/1"), None)),
            ["-aHAX", "--exclude=*.log", "--", "/data", "/b/1/"],
            "no --link-dest on a first run"
        );
    }
}
