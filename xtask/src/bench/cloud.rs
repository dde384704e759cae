//! `cargo xtask bench cloud`: dbackup against rclone and restic on one Garage (a real S3 server on 127.0.0.1,
//! `testkit::objstore`), release build, the benchmark tree of the other benches:
//!
//! - upload: `dbackup external` of the tree's snapshot to a bucket, age-encrypted and plain (`allow_unencrypted`),
//!   against `rclone copyto` of a tar of the same snapshot (made once, untimed). Each timed upload goes to a fresh
//!   Garage (started untimed, removed after), so a run never pays for the previous one's data and the disk holds one
//!   copy at a time. Peak memory: the max RSS of the `dbackup external` process (`wait4`).
//! - one file from the encrypted backup: `dbackup restore --source cloud --path FILE` against `restic restore
//!   --include FILE` from a restic repository of the same snapshot in the same bucket (restic with its local cache,
//!   as it runs by default, and with `--no-cache`). Requests are counted on the server's side (Garage's own log
//!   line per request); bytes downloaded by a byte-counting TCP proxy in front of Garage (HTTP headers included).
//!
//! Goals (issue 16): upload within 1.2x of rclone; one file 5x faster than restic, the index plus one ranged GET;
//! an upload's peak memory under 128 MiB. Debian's rclone 1.60 fails every S3 call while `AWS_CA_BUNDLE` is set:
//! rclone and restic run without it; dbackup runs with the environment as it is.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::objstore::{Garage, REGION};

use super::measure::{Samples, dbackup_command, fresh_work_dir};
use super::tree::{self, TreeSpec};
use crate::packages::Need;
use crate::tools::{GARAGE, GARAGE_FEATURES};
use crate::util::{heading, human_bytes, target_dir};

/// dbackup's upload at most this much slower than rclone's copy of a tar of the same bytes.
const GOAL_UPLOAD: f64 = 1.2;
/// dbackup's one-file restore at least this much faster than restic's.
const GOAL_RESTORE: f64 = 5.0;
/// Peak memory of an upload.
const GOAL_MEMORY: u64 = 128 << 20;

const RESTIC_PASSWORD: &str = "bench-cloud-restic";

#[derive(Debug, clap::Args)]
pub struct CloudArgs {
    #[command(flatten)]
    pub tree: TreeSpec,
    /// Timed repetitions of each upload (each to a fresh Garage; the median is reported; 0: the restores only)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Timed repetitions of each one-file restore
    #[arg(long, default_value_t = 5)]
    pub restore_reps: usize,
    /// Keep the work directory (snapshot, tar, restored files) under target/bench/cloud
    #[arg(long)]
    pub keep: bool,
}

/// One process run to its end: wall and CPU time (user + system, its waited-for children included), peak RSS.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    max_rss: u64,
}

/// Runs `cmd` with stdin closed, stdout into `out` (when given) and stderr into `err`, and measures it with
/// `wait4`; fails with the end of its stderr when it fails.
fn measure(cmd: &mut Command, what: &str, err: &Path, out: Option<&Path>) -> Result<Run> {
    cmd.stdin(Stdio::null())
        .stderr(std::fs::File::create(err)?)
        .stdout(match out {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        });
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; `pid` is our own child, not yet reaped (std never reaps behind our back).
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    anyhow::ensure!(
        got == pid,
        "wait4 on {what}: {}",
        std::io::Error::last_os_error()
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let run = Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss: usage.ru_maxrss as u64 * 1024,
    };
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = std::fs::read_to_string(err).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed (wait status {status}):\n{}", tail.join("\n"));
    }
    Ok(run)
}

/// A TCP proxy on 127.0.0.1 in front of a server, counting the bytes each way: what a client really downloaded.
struct Proxy {
    port: u16,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: u16) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, u, s) = (down.clone(), up.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (d, u) = (d.clone(), u.clone());
                std::thread::spawn(move || pump(server, c2, &d));
                std::thread::spawn(move || pump(client, s2, &u));
            }
        });
        Ok(Proxy {
            port,
            down,
            up,
            stop,
            accept: Some(accept),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes (server to client, client to server) so far.
    fn bytes(&self) -> (u64, u64) {
        (
            self.down.load(Ordering::SeqCst),
            self.up.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to`, counting, until `from` ends; then ends `to`'s writing side.
fn pump(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The load averages (1, 5, 15 minutes) as `/proc/loadavg` says them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time (user + system) a process of ours has used so far (`/proc/PID/stat`), e.g. the server's.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of stat(5); `after` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Paths and programs of one bench run.
struct World {
    bin: PathBuf,
    work: PathBuf,
    source: PathBuf,
    snapshot: PathBuf,
    tar: PathBuf,
    identity: PathBuf,
    recipient: String,
}

/// What a config's one destination is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Encrypted,
}

impl World {
    /// A config with the bench set and one s3 destination `offsite` at `endpoint`.
    fn config(&self, endpoint: &str, bucket: &str, kind: Kind) -> Result<PathBuf> {
        let mut dest = serde_json::json!({
            "name": "offsite", "kind": "s3", "endpoint": endpoint, "bucket": bucket, "region": REGION,
            "prefix": "dbackup",
        });
        let name = match kind {
            Kind::Plain => {
                dest["allow_unencrypted"] = true.into();
                "config-plain.json"
            }
            Kind::Encrypted => {
                dest["encryption"] = serde_json::json!({ "recipients": [self.recipient] });
                "config-age.json"
            }
        };
        let config = serde_json::json!({
            "backup_root": self.work.join("root"),
            "backup_sets": [{ "name": "bench", "sources": [self.source] }],
            "destinations": [dest],
        });
        let path = self.work.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(path)
    }

    fn dbackup(&self, config: &Path, g: &Garage) -> Command {
        let mut c = dbackup_command(&self.bin, &self.work, config);
        c.env("AWS_ACCESS_KEY_ID", &g.key.id)
            .env("AWS_SECRET_ACCESS_KEY", &g.key.secret);
        c
    }

    /// `dbackup --json external` to `g` (through `endpoint`): measured, and checked to have written its backup.
    fn upload(&self, g: &Garage, endpoint: &str, kind: Kind) -> Result<Run> {
        let config = self.config(endpoint, &g.bucket, kind)?;
        let out = self.work.join("external.json");
        let run = measure(
            self.dbackup(&config, g).args(["--json", "external"]),
            "dbackup external",
            &self.work.join("external.err"),
            Some(&out),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)
            .context("dbackup external --json printed something else")?;
        let d = &v["destinations"][0];
        anyhow::ensure!(
            d["status"] == "written",
            "dbackup external did not write its backup: {d}"
        );
        Ok(run)
    }

    /// `rclone copyto` of the tar to `g`'s bucket, configured through the environment.
    fn rclone(&self, g: &Garage, endpoint: &str) -> Command {
        let mut c = Command::new("rclone");
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", self.work.join("rclone.conf"))
            .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
            .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
            .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &g.key.id)
            .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &g.key.secret)
            .env("RCLONE_CONFIG_GARAGE_ENDPOINT", endpoint)
            .env("RCLONE_CONFIG_GARAGE_REGION", REGION)
            .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true");
        c
    }

    fn rclone_copy(&self, g: &Garage) -> Result<Run> {
        let dest = format!("garage:{}/rclone/bench.tar", g.bucket);
        let run = measure(
            self.rclone(g, &g.endpoint())
                .arg("copyto")
                .arg(&self.tar)
                .arg(&dest),
            "rclone copyto",
            &self.work.join("rclone.err"),
            None,
        )?;
        let size = self
            .rclone(g, &g.endpoint())
            .args(["size", "--json", &dest])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&size.stdout).unwrap_or_default();
        let want = std::fs::metadata(&self.tar)?.len();
        anyhow::ensure!(
            v["bytes"].as_u64() == Some(want),
            "rclone copyto stored {} bytes of {want}",
            v["bytes"]
        );
        Ok(run)
    }

    /// restic against the repository `restic/` in `g`'s bucket through `endpoint`.
    fn restic(&self, g: &Garage, endpoint: &str) -> Command {
        let mut c = Command::new("restic");
        c.env_remove("AWS_CA_BUNDLE")
            .env(
                "RESTIC_REPOSITORY",
                format!("s3:{endpoint}/{}/restic", g.bucket),
            )
            .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
            .env("RESTIC_CACHE_DIR", self.work.join("restic-cache"))
            .env("AWS_ACCESS_KEY_ID", &g.key.id)
            .env("AWS_SECRET_ACCESS_KEY", &g.key.secret)
            .env("AWS_DEFAULT_REGION", REGION)
            .args(["-o", &format!("s3.region={REGION}"), "--quiet"]);
        c
    }
}

/// The upload contenders, in the order of the table.
const UPLOADS: [&str; 3] = [
    "dbackup external, age",
    "dbackup external, plain",
    "rclone copyto (tar)",
];

#[derive(Default, Clone)]
struct Cell {
    wall: Samples,
    cpu: Samples,
    server_cpu: Samples,
    max_rss: u64,
    requests: Vec<u64>,
    down: Vec<u64>,
}

impl Cell {
    fn push(&mut self, run: Run) {
        self.wall.push(run.wall);
        self.cpu.push(run.cpu);
        self.max_rss = self.max_rss.max(run.max_rss);
    }
}

fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn run(args: CloudArgs) -> Result<()> {
    anyhow::ensure!(args.restore_reps >= 1, "--restore-reps must be at least 1");
    let (sh, bin) = super::measure::prepare(
        "cloud",
        None,
        Need::Bench,
        &["tar", "rclone", "restic"],
        " (Debian: apt-get install rclone restic; `cargo xtask bench` installs them when run as root)",
    )?;
    crate::tools::ensure_with(&sh, &GARAGE, GARAGE_FEATURES)?;
    let load_before = load_average();

    let bench = target_dir(&sh)?.join("bench");
    std::fs::create_dir_all(&bench)?;
    let bench = bench.canonicalize()?;
    heading("bench cloud: the tree");
    let source = bench.join("tree");
    let stats = tree::ensure(&source, &args.tree)?;
    let work = fresh_work_dir(&sh, "cloud")?;
    for d in ["home", "state", "xdg-config"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let result = bench_in(&args, bin, &work, source, stats, &load_before);
    if !args.keep {
        crate::util::remove_dir_if_exists(&work)?;
    }
    result
}

fn bench_in(
    args: &CloudArgs,
    bin: PathBuf,
    work: &Path,
    source: PathBuf,
    stats: tree::TreeStats,
    load_before: &str,
) -> Result<()> {
    let identity = work.join("identity.txt");
    let mut keygen = Command::new(&bin);
    keygen
        .env("HOME", work.join("home"))
        .env("XDG_CONFIG_HOME", work.join("xdg-config"));
    let recipient = super::measure::keygen(keygen, &identity)?;
    let mut w = World {
        bin,
        work: work.to_path_buf(),
        source,
        snapshot: PathBuf::new(),
        tar: work.join("bench.tar"),
        identity,
        recipient,
    };

    heading("bench cloud: the snapshot (dbackup collect) and a tar of it (untimed)");
    let config = w.config("http://127.0.0.1:1", "unused", Kind::Plain)?;
    // Keys that are never used (collect does not talk to the bucket), so the config's destination has some.
    let out = dbackup_command(&w.bin, work, &config)
        .env("AWS_ACCESS_KEY_ID", "unused")
        .env("AWS_SECRET_ACCESS_KEY", "unused")
        .arg("collect")
        .output()
        .context("cannot run dbackup collect")?;
    anyhow::ensure!(
        out.status.success(),
        "dbackup collect failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    w.snapshot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    anyhow::ensure!(
        w.snapshot.is_dir(),
        "dbackup collect printed {} instead of its snapshot",
        w.snapshot.display()
    );
    // The snapshot holds the source under its own absolute path; the tar holds the same bytes.
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&w.tar)
        .arg("-C")
        .arg(&w.snapshot)
        .arg(".")
        .status()?;
    anyhow::ensure!(status.success(), "tar -cf failed");
    let tar_bytes = std::fs::metadata(&w.tar)?.len();

    heading("bench cloud: uploads (warm-up, untimed: one of each)");
    for who in (0..UPLOADS.len()).filter(|_| args.reps > 0) {
        upload_once(&w, who)?;
    }
    heading(&format!(
        "bench cloud: uploads, {} repetitions, each to a fresh Garage",
        args.reps
    ));
    let mut uploads = vec![Cell::default(); UPLOADS.len()];
    for rep in 0..args.reps {
        let mut order: Vec<usize> = (0..UPLOADS.len()).collect();
        order.rotate_left(rep % UPLOADS.len());
        for who in order {
            let (run, server) = upload_once(&w, who)?;
            eprintln!(
                "  rep {}: {:<26} {:>7.2} s wall, {:>6.2} s CPU, {} peak",
                rep + 1,
                UPLOADS[who],
                run.wall.as_secs_f64(),
                run.cpu.as_secs_f64(),
                human_bytes(run.max_rss)
            );
            uploads[who].push(run);
            if let Some(s) = server {
                uploads[who].server_cpu.push(s);
            }
        }
    }
    // The tar is not needed past here: 1 GiB less on the disk.
    std::fs::remove_file(&w.tar)?;

    let restores = restore_bench(args, &w)?;
    let load_after = load_average();

    println!();
    println!(
        "## bench cloud: Garage {} on 127.0.0.1, release build",
        GARAGE.version
    );
    println!();
    println!(
        "tree: {}; snapshot archived as {} of tar; load average (1 5 15 min) before {load_before}, after \
         {load_after}; {} cores",
        args.tree.describe(stats),
        human_bytes(tar_bytes),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "Upload ({} repetitions, each to a fresh Garage; page cache warm). Wall and CPU (user + system of the \
         client process): median (min-max); server CPU: Garage's own during that upload.",
        args.reps
    );
    println!();
    println!(
        "| upload | wall s | client CPU s | server CPU s | peak RSS | wall / rclone | CPU / rclone |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rclone = &uploads[2];
    for (name, c) in UPLOADS.iter().zip(&uploads).filter(|_| args.reps > 0) {
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {:.2} |",
            c.wall.cell(),
            c.cpu.cell(),
            c.server_cpu.cell(),
            human_bytes(c.max_rss),
            c.wall.median() / rclone.wall.median(),
            c.cpu.median() / rclone.cpu.median(),
        );
    }
    println!();
    println!(
        "One file from the encrypted backup ({} repetitions). Requests: counted by Garage (one log line per \
         request it served); bytes down: counted by a TCP proxy in front of Garage (HTTP headers included).",
        args.restore_reps
    );
    println!();
    println!(
        "| one-file restore | file | wall s | client CPU s | requests | bytes down | wall / dbackup |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &restores {
        let ours = restores
            .iter()
            .find(|o| o.file == r.file && o.who == RESTORERS[0])
            .map_or(f64::NAN, |o| o.cell.wall.median());
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {:.1} |",
            r.who,
            r.file,
            human_bytes(r.size),
            r.cell.wall.cell(),
            r.cell.cpu.cell(),
            median_u64(&r.cell.requests),
            human_bytes(median_u64(&r.cell.down)),
            r.cell.wall.median() / ours,
        );
    }
    for r in restores.iter().filter(|r| r.who == RESTORERS[0]) {
        let (choose, index, archive) = request_kinds(&r.request_lines);
        println!();
        println!(
            "dbackup, {}: requests as Garage logged them: {} ({choose} to choose the backup: the listing, \
             backup.json, its sums line; {index} of the index; {archive} of the archive)",
            r.file,
            r.request_lines.join(", ")
        );
    }

    println!();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for (who, c) in uploads.iter().take(2).enumerate().filter(|_| args.reps > 0) {
        let ratio = c.wall.median() / rclone.wall.median();
        println!(
            "goal: {} within {GOAL_UPLOAD}x of rclone: {} ({ratio:.2}x)",
            UPLOADS[who],
            verdict(ratio <= GOAL_UPLOAD)
        );
    }
    for r in restores.iter().filter(|r| r.who == RESTORERS[1]) {
        let ours = restores
            .iter()
            .find(|o| o.file == r.file && o.who == RESTORERS[0])
            .map_or(f64::NAN, |o| o.cell.wall.median());
        let ratio = r.cell.wall.median() / ours;
        println!(
            "goal: one file ({}) {GOAL_RESTORE}x faster than restic: {} ({ratio:.1}x)",
            r.file,
            verdict(ratio >= GOAL_RESTORE)
        );
    }
    // The small file (the first picked): the index in one GET, its bytes in one ranged GET of the archive.
    if let Some(r) = restores.iter().find(|r| r.who == RESTORERS[0]) {
        let (_, index, archive) = request_kinds(&r.request_lines);
        println!(
            "goal: one file ({}) costs the index plus one ranged GET: {} ({index} GET of the index, {archive} of \
             the archive)",
            r.file,
            verdict(index == 1 && archive == 1)
        );
    }
    let peak = uploads[..2].iter().map(|c| c.max_rss).max().unwrap_or(0);
    if args.reps > 0 {
        println!(
            "goal: an upload's peak memory under {}: {} ({})",
            human_bytes(GOAL_MEMORY),
            verdict(peak < GOAL_MEMORY),
            human_bytes(peak)
        );
    }
    Ok(())
}

/// One upload by contender `who` to a fresh Garage; the run and Garage's CPU time during it.
fn upload_once(w: &World, who: usize) -> Result<(Run, Option<Duration>)> {
    let g = Garage::start().map_err(|e| anyhow::anyhow!("cannot start Garage: {e}"))?;
    let cpu_before = g.pid().and_then(process_cpu);
    let run = match who {
        0 => w.upload(&g, &g.endpoint(), Kind::Encrypted)?,
        1 => w.upload(&g, &g.endpoint(), Kind::Plain)?,
        _ => w.rclone_copy(&g)?,
    };
    let server = match (g.pid().and_then(process_cpu), cpu_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok((run, server))
}

/// The one-file restorers, in the order of the table.
const RESTORERS: [&str; 3] = [
    "dbackup restore --source cloud",
    "restic restore --include (its cache)",
    "restic restore --include --no-cache",
];

struct RestoreRow {
    who: &'static str,
    file: String,
    size: u64,
    cell: Cell,
    request_lines: Vec<String>,
}

/// A restore's requests (`GET <object name>`, as `restore_bench` writes them) by what they read: (choosing the
/// backup: the listing, `backup.json`, its sums; the index; the archive).
fn request_kinds(lines: &[String]) -> (usize, usize, usize) {
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let (index, archive) = (count(".index"), count(".tar"));
    (lines.len() - index - archive, index, archive)
}

/// Files to restore: the small file in the middle of the tree's order, and its largest file.
fn pick_files(snapshot_source: &Path) -> Result<Vec<(String, u64)>> {
    let mut files: Vec<(String, u64)> = walkdir::WalkDir::new(snapshot_source)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(snapshot_source).ok()?;
            Some((rel.to_string_lossy().into_owned(), e.metadata().ok()?.len()))
        })
        .collect();
    anyhow::ensure!(!files.is_empty(), "the snapshot holds no file");
    let small: Vec<&(String, u64)> = files
        .iter()
        .filter(|(_, s)| *s > 1024 && *s < 65536)
        .collect();
    let mid = small
        .get(small.len() / 2)
        .map(|f| (*f).clone())
        .unwrap_or_else(|| files[files.len() / 2].clone());
    files.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
    Ok(vec![mid, files[0].clone()])
}

fn restore_bench(args: &CloudArgs, w: &World) -> Result<Vec<RestoreRow>> {
    heading(
        "bench cloud: one file from the encrypted backup vs restic (one Garage, both repositories)",
    );
    let g = Garage::start_logging_requests()
        .map_err(|e| anyhow::anyhow!("cannot start Garage: {e}"))?;
    let proxy = Proxy::start(g.port)?;
    let endpoint = proxy.endpoint();
    w.upload(&g, &endpoint, Kind::Encrypted)?;
    let config = w.config(&endpoint, &g.bucket, Kind::Encrypted)?;
    eprintln!("restic init and backup of the same snapshot (untimed)");
    let err = w.work.join("restic.err");
    measure(
        w.restic(&g, &endpoint).arg("init"),
        "restic init",
        &err,
        None,
    )?;
    measure(
        w.restic(&g, &endpoint).arg("backup").arg(&w.snapshot),
        "restic backup",
        &err,
        None,
    )?;

    // The source's files as the snapshot holds them (under the source's absolute path).
    let source_rel = w.source.strip_prefix("/").unwrap_or(&w.source);
    let in_snapshot = w.snapshot.join(source_rel);
    let files = pick_files(&in_snapshot)?;
    let mut rows = Vec::new();
    for (file, size) in &files {
        for who in RESTORERS {
            rows.push(RestoreRow {
                who,
                file: file.clone(),
                size: *size,
                cell: Cell::default(),
                request_lines: Vec::new(),
            });
        }
    }
    let target = w.work.join("restored");
    for rep in 0..=args.restore_reps {
        for (file, _) in &files {
            let mut order: Vec<usize> = (0..RESTORERS.len()).collect();
            order.rotate_left(rep % RESTORERS.len());
            for who in order {
                crate::util::remove_dir_if_exists(&target)?;
                std::fs::create_dir_all(&target)?;
                let logged_before = g.requests_logged().len();
                let (down_before, _) = proxy.bytes();
                let (run, restored) = match who {
                    0 => {
                        let path = w.source.join(file);
                        let run = measure(
                            w.dbackup(&config, &g)
                                .args(["restore", "--source", "cloud", "--path"])
                                .arg(&path)
                                .arg("--target")
                                .arg(&target)
                                .arg("--identity")
                                .arg(&w.identity),
                            "dbackup restore",
                            &w.work.join("restore.err"),
                            None,
                        )?;
                        (run, target.join(source_rel).join(file))
                    }
                    _ => {
                        let include = in_snapshot.join(file);
                        let mut c = w.restic(&g, &endpoint);
                        if who == 2 {
                            c.arg("--no-cache");
                        }
                        let run = measure(
                            c.args(["restore", "latest", "--target"])
                                .arg(&target)
                                .arg("--include")
                                .arg(&include),
                            "restic restore",
                            &err,
                            None,
                        )?;
                        let rel = include.strip_prefix("/").unwrap_or(&include);
                        (run, target.join(rel))
                    }
                };
                // Garage writes its log line as it answers: give it a moment to reach the file.
                std::thread::sleep(Duration::from_millis(200));
                let logged = g.requests_logged();
                let (down_after, _) = proxy.bytes();
                let want = std::fs::read(in_snapshot.join(file))?;
                anyhow::ensure!(
                    std::fs::read(&restored).ok().as_ref() == Some(&want),
                    "{}: {} was not restored byte for byte at {}",
                    RESTORERS[who],
                    file,
                    restored.display()
                );
                let row = rows
                    .iter_mut()
                    .find(|r| r.who == RESTORERS[who] && &r.file == file)
                    .expect("a row per restorer and file");
                if rep == 0 {
                    // Warm-up (untimed): the first run of each fills the page cache (and restic's own cache).
                    continue;
                }
                row.cell.push(run);
                row.cell
                    .requests
                    .push((logged.len() - logged_before) as u64);
                row.cell.down.push(down_after - down_before);
                row.request_lines = logged[logged_before..]
                    .iter()
                    .map(|r| {
                        let name = r.path.split('?').next().unwrap_or(&r.path);
                        let name = name.rsplit('/').next().unwrap_or(name);
                        format!("{} {}", r.method, if name.is_empty() { "/" } else { name })
                    })
                    .collect();
            }
        }
    }
    crate::util::remove_dir_if_exists(&target)?;
    Ok(rows)
}
