//! How a run ends, through the real binary: a closed stdout pipe, a panic caught at the top, SIGINT and SIGTERM
//! during collect, external and restore (130/143, one line, an `interrupted` run log line, nothing half-written
//! promoted or listed), and notification URLs whose secrets appear in no output and no log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use dbackup::{RunRecord, read_runlog};

use crate::fixtures::drive::signal;
use crate::harness::{self, Test};

pub(crate) fn config(extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ] {extra} }}"#
    )
}

pub(crate) const DRIVE: &str =
    r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ]"#;

pub(crate) fn log(t: &Test) -> Vec<RunRecord> {
    read_runlog(&t.path("state/dbackup")).unwrap()
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for `child`; (exit code, or 128 + the signal that killed it; stderr).
pub(crate) fn finish(mut child: Child) -> (i32, String) {
    let stderr = harness::read_stderr(&mut child);
    let status = child.wait().unwrap();
    let code = status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap());
    (code, stderr)
}

/// What a panic or a backtrace looks like in Rust's own words.
fn assert_no_panic(stderr: &str) {
    for raw in [
        "panicked at",
        "stack backtrace",
        "RUST_BACKTRACE",
        "Broken pipe",
    ] {
        assert!(!stderr.contains(raw), "{raw:?} in stderr:\n{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Closed pipes

/// Every printing command writes into a pipe whose reader is gone (`dbackup status | true`, `dbackup --json restore
/// --list | head -1` when head exits first): each ends quietly with its own exit code (0 here). Before: every one
/// panicked in `println!` ("failed printing to stdout: Broken pipe"), exit 101.
#[test]
fn a_closed_stdout_ends_quietly() {
    let t = Test::new().config(&config(DRIVE));
    t.write("home/data/file", "x");
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["--json", "restore", "--list"],
        &["restore", "--list"],
        &["config", "check"],
        &["--dry-run", "collect"],
        &["collect"],
        &["systemd", "render", "--user"],
    ] {
        let mut child = t.cmd().args(args).spawn();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let (code, stderr) = finish(child);
        assert_eq!(code, 0, "dbackup {args:?}: {stderr}");
        assert_no_panic(&stderr);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A panic caught at the top

/// A panic (provoked in debug builds with `DBACKUP_TEST_PANIC=<command>` as the run starts) ends with exit 1, one
/// "internal error: ... please report" line and no backtrace, and the run log gets the run's line; with
/// `RUST_BACKTRACE=1` the backtrace is shown. Before: Rust's own "thread 'main' panicked at" message and its
/// backtrace note, exit 101, and no run log line (the variable did nothing, and `status` on a `backup.json` with
/// sizes of 2^64-1 panicked so).
#[test]
fn a_panic_is_an_internal_error_with_a_run_log_line() {
    let t = Test::new().config(&config(""));
    t.write("home/data/file", "x");
    let out = t
        .cmd()
        .env("DBACKUP_TEST_PANIC", "collect")
        .args(["collect"])
        .status(1);
    assert_no_panic(&out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("dbackup: internal error: DBACKUP_TEST_PANIC=collect")
            && lines[0].contains("please report it"),
        "{}",
        out.stderr
    );
    let log = log(&t);
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].command.as_str(), log[0].exit), ("collect", 1));
    assert!(
        log[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("internal error: DBACKUP_TEST_PANIC=collect")),
        "{:?}",
        log[0]
    );
    // This config's run, as every other line (two configs of one user share the log).
    assert_eq!(
        log[0].backup_root.as_deref(),
        Some(t.root().to_str().unwrap())
    );

    let out = t
        .cmd()
        .env("DBACKUP_TEST_PANIC", "collect")
        .env("RUST_BACKTRACE", "1")
        .args(["collect"])
        .status(1);
    assert!(
        out.stderr.contains("dbackup::commands::"),
        "a backtrace when asked for:\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------------------------
// SIGINT and SIGTERM

/// The interrupted run's stderr: exactly the one line, with the signal's name.
fn assert_one_line(stderr: &str, signal: &str) {
    assert_only_line(
        stderr,
        &format!("dbackup: interrupted ({signal}); the next run resumes"),
    );
}

/// stderr is exactly `line` (beside the backup root's or a config file's mode note, from before).
pub(crate) fn assert_only_line(stderr: &str, line: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("has mode 07"))
        .collect();
    assert_eq!(lines, [line], "{stderr}");
}

/// The run log's last line is the interrupted run's.
pub(crate) fn assert_logged(t: &Test, command: &str, signal: &str, exit: u8) {
    let log = log(t);
    let last = log.last().expect("a run log line");
    assert_eq!(
        (
            last.command.as_str(),
            last.exit,
            last.interrupted.as_deref()
        ),
        (command, exit, Some(signal)),
        "{last:?}"
    );
}

/// rsync processes working for this test (their command line names its backup root).
fn rsyncs_of(t: &Test) -> Vec<u32> {
    let root = t.root().display().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.starts_with("rsync ") && cmdline.contains(&root)).then_some(pid)
        })
        .collect()
}

/// The rsync that `parent` (dbackup) started: one of [`rsyncs_of`] whose parent it is.
fn rsync_child_of(t: &Test, parent: u32) -> u32 {
    let ppid = |pid: u32| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let found: Vec<u32> = rsyncs_of(t)
        .into_iter()
        .filter(|&pid| ppid(pid) == Some(parent))
        .collect();
    assert_eq!(found.len(), 1, "dbackup's rsync: {found:?}");
    found[0]
}

/// The signals pending for `pid`, the process's and its main thread's (bit `n - 1` for signal `n`).
fn pending_signals(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ShdPnd:")
                .or_else(|| l.strip_prefix("SigPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .fold(0, |all, bits| all | bits)
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| p.is_file()).collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A collect slowed down by rsync's `--bwlimit=200` over 40 files of 50,000 bytes (file `i` filled with
/// `byte(i)`), started with `args` and returned once rsync has copied two files into `.data.in-progress` (also
/// returned).
fn slow_collect(args: &[&str], byte: impl Fn(usize) -> u8) -> (Test, Child, PathBuf) {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"], "rsync_args": ["--bwlimit=200"] } ] }"#,
    );
    for i in 0..40 {
        t.write(&format!("home/data/f{i:02}"), vec![byte(i); 50_000]);
    }
    let child = t.cmd().args(args).spawn();
    let in_progress = t.root().join(".data.in-progress");
    wait_for("rsync to copy a file", Duration::from_secs(60), || {
        files_under(&in_progress).len() >= 2
    });
    (t, child, in_progress)
}

/// SIGINT while rsync copies: rsync is stopped with dbackup (none is left when dbackup has exited), one line on
/// stderr, exit 130, an `interrupted` run log line, nothing promoted and the copy kept where the next run resumes
/// it. Before: dbackup died of the signal at once (no line, no run log line, exit by signal).
#[test]
fn sigint_during_collect_stops_rsync_and_the_next_run_resumes() {
    let (t, child, in_progress) = slow_collect(&["collect"], |i| b'a' + i as u8 % 26);
    assert!(!rsyncs_of(&t).is_empty(), "rsync is running");
    signal(&child, libc::SIGINT); // to dbackup alone: it hands the signal on to rsync
    let (code, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(rsyncs_of(&t).is_empty(), "rsync stopped with dbackup");
    assert_one_line(&stderr, "SIGINT");
    assert_logged(&t, "collect", "SIGINT", 130);
    let names: Vec<String> = fs::read_dir(t.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data-"))
        .collect();
    assert!(names.is_empty(), "nothing promoted: {names:?}");
    assert!(in_progress.is_dir(), "the copy so far is kept");

    fs::write(t.path("config.json"), t.expand(&config(""))).unwrap();
    let out = t.cmd().args(["--json", "collect"]).status(0);
    let r: dbackup::CollectReport = out.json();
    assert!(r.sets[0].resumed, "the next run resumes");
}

/// A second signal while the first is being handled stops at once: rsync is killed, one line on stderr ("twice;
/// stopped at once"), exit 128 + the first signal, and the run log still gets the interrupted run's line. Before:
/// no test ran this path (it moved from `interrupt.rs` to `process::stop_at_once` when `interrupt` stopped naming
/// the run log).
#[test]
fn a_second_signal_stops_at_once_and_still_logs_the_run() {
    let (t, child, in_progress) = slow_collect(&["collect"], |_| b'y');
    // Two different signals, so that the second is not merged into the first while it is pending. Sent back to back,
    // two of dbackup's threads may take them in either order (seen: SIGTERM first, 1 run in 7). So dbackup's rsync is
    // frozen first, and SIGTERM goes only once dbackup has handed SIGINT on to it (pending in the frozen rsync): the
    // run's signal is SIGINT for sure. The second signal's SIGKILL ends the frozen rsync all the same.
    let rsync = rsync_child_of(&t, child.id());
    // SAFETY: kill has no memory-safety preconditions; the pid is dbackup's running rsync.
    assert_eq!(unsafe { libc::kill(rsync as i32, libc::SIGSTOP) }, 0);
    crate::fixtures::drive::wait_stopped(rsync);
    signal(&child, libc::SIGINT);
    wait_for(
        "dbackup to hand SIGINT on to rsync",
        Duration::from_secs(60),
        || pending_signals(rsync) & (1 << (libc::SIGINT - 1)) != 0,
    );
    signal(&child, libc::SIGTERM);
    let (code, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains(
            "dbackup: interrupted (SIGINT, twice); stopped at once; the next run resumes"
        ),
        "{stderr}"
    );
    wait_for("rsync to be gone", Duration::from_secs(60), || {
        rsyncs_of(&t).is_empty()
    });
    assert_logged(&t, "collect", "SIGINT", 130);
    assert!(in_progress.is_dir(), "the copy so far is kept");
}

/// SIGTERM during a `--json` collect: stdout holds exactly the error object (`docs/json/error.json`) with exit 143,
/// and nothing else (no half report). Before this test, only the human line on stderr was checked for an
/// interrupted run; the error object was tested for usage errors, failures and panics.
#[test]
fn sigterm_during_a_json_collect_prints_the_error_object() {
    let (_t, mut child, _) = slow_collect(&["--json", "collect"], |_| b'x');
    signal(&child, libc::SIGTERM);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, 143, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"));
    assert!(
        crate::json::validator("error").is_valid(&v),
        "docs/json/error.json: {stdout}"
    );
    assert_eq!(v["format"], 1, "{stdout}");
    assert_eq!(v["exit"], 143, "{stdout}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("interrupted (SIGTERM)"),
        "{stdout}"
    );
    assert_one_line(&stderr, "SIGTERM");
}

/// A config with the drive `T9` (a directory there), [`bulk`]'s 24 files, collected.
fn collected_for_the_drive() -> Test {
    let t = Test::new().config(&config(DRIVE));
    bulk(&t, 24);
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t
}

/// Makes `n` files of 4 MiB under `~/data`: enough for an archive or a restore to be caught while it writes.
pub(crate) fn bulk(t: &Test, n: usize) {
    for i in 0..n {
        t.write(&format!("home/data/big{i:02}"), vec![i as u8; 4 << 20]);
    }
}

/// Stops `child` (SIGSTOP) as soon as `ready`, so a signal sent next arrives in the middle of the work whatever the
/// machine's speed; `resume` sends SIGCONT.
pub(crate) fn freeze_when(child: &Child, what: &str, ready: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(120), ready);
    signal(child, libc::SIGSTOP);
}

/// SIGTERM to a run `freeze_when` stopped, then SIGCONT: it ends with exit 143, the one line, and `command`'s
/// interrupted run log line.
#[track_caller]
fn terminate_frozen(child: Child, t: &Test, command: &str) {
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGCONT);
    let (code, stderr) = finish(child);
    assert_eq!(code, 143, "{stderr}");
    assert_one_line(&stderr, "SIGTERM");
    assert_logged(t, command, "SIGTERM", 143);
}

/// SIGTERM while the archive is written to the drive: exit 143, one line, an `interrupted` run log line, and the
/// drive holds no new backup and no temporary directory (the partial one is removed); a `.tmp-...` directory that
/// a killed run left is not listed by `restore --list`. Before: dbackup died of SIGTERM at once, leaving
/// `.tmp-<stamp>-<pid>` on the drive with no run log line, and `restore --list` showed that directory as an
/// (incomplete) backup.
#[test]
fn sigterm_during_external_promotes_nothing_and_lists_nothing_half_written() {
    let t = collected_for_the_drive();
    let backups = t.path("T9/backups");
    let child = t.cmd().args(["external"]).spawn();
    let temp = |b: &Path| {
        fs::read_dir(b)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
    };
    freeze_when(&child, "the archive to be written", || temp(&backups));
    terminate_frozen(child, &t, "external");
    let left: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.starts_with(".tmp-") && !n.starts_with("20")),
        "nothing promoted, nothing half-written left: {left:?}"
    );

    // A complete backup, then what a kill -9 in the middle of the next one leaves: never listed.
    t.cmd().args(["external"]).status(0);
    let done: Vec<PathBuf> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("20"))
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    let stamp = done[0].file_name().unwrap().to_string_lossy().into_owned();
    let tmp = backups.join(format!(".tmp-{stamp}-999999"));
    fs::create_dir(&tmp).unwrap();
    fs::copy(done[0].join("data.tar"), tmp.join("data.tar")).unwrap();
    let listing = crate::fixtures::drive::drive_listing(&t);
    let stamps: Vec<&str> = listing.backups.iter().map(|b| b.stamp.as_str()).collect();
    assert_eq!(stamps, [stamp.as_str()], "{listing:?}");
    assert_eq!(listing.destinations[0].backups, 1);
    let table = t.cmd().args(["restore", "--list"]).status(0).stdout;
    assert!(!table.contains(".tmp-"), "{table}");
}

/// SIGTERM while a restore writes: exit 143, one line, an `interrupted` run log line; every file in the target is
/// either whole or absent, and no temporary file is left. Before: dbackup died of the signal at once, with no run
/// log line and the temporary file being written left in the target.
#[test]
fn sigterm_during_restore_leaves_whole_files_only() {
    let t = Test::new().config(&config(""));
    bulk(&t, 24);
    t.cmd().args(["collect"]).status(0);
    let target = t.path("target");
    let child = t
        .cmd()
        .args(["restore", "--path", "~/data", "--target"])
        .args([&target])
        .spawn();
    freeze_when(&child, "the restore to write", || {
        !files_under(&target).is_empty()
    });
    terminate_frozen(child, &t, "restore");
    let files = files_under(&target);
    assert!(files.len() < 24, "the restore stopped early: {files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let i: u8 = name
            .strip_prefix("big")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a file that is not the backup's: {}", f.display()));
        assert!(
            fs::read(f).unwrap() == vec![i; 4 << 20],
            "{} is not whole",
            f.display()
        );
    }
}

/// SIGTERM while an in-place restore replaces newer work: the files it kept in `displaced/` before the signal are in
/// the interrupted run's log line (each where it was and where it is kept, and there), and stderr says where they
/// are. Before: the run log line had `"sets": null` and stderr only the interrupted line, so nothing said that the
/// newer files had been moved to `displaced/`.
#[test]
fn sigterm_during_an_in_place_restore_still_lists_what_it_kept() {
    let t = Test::new().config(&config(""));
    bulk(&t, 24);
    t.cmd().args(["collect"]).status(0);
    for i in 0..24 {
        t.write(&format!("home/data/big{i:02}"), format!("newer work {i}\n"));
    }
    let displaced = t.root().join("displaced");
    let child = t.cmd().args(["restore", "--path", "~/data"]).spawn();
    freeze_when(&child, "the restore to keep a file", || {
        !files_under(&displaced).is_empty()
    });
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGCONT);
    let (code, stderr) = finish(child);
    assert_eq!(code, 143, "{stderr}");
    assert!(
        stderr.contains("dbackup: interrupted (SIGTERM); the next run resumes"),
        "{stderr}"
    );
    assert_logged(&t, "restore", "SIGTERM", 143);
    let kept_files = files_under(&displaced);
    assert!(
        stderr.contains(&format!("kept in {}", displaced.display())),
        "stderr says where the kept files are:\n{stderr}"
    );
    let last = log(&t).pop().unwrap();
    let logged: Vec<&serde_json::Value> = last
        .sets
        .as_array()
        .unwrap_or_else(|| panic!("the run log line lists what was restored: {last:?}"))
        .iter()
        .flat_map(|s| s["displaced"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(logged.len(), kept_files.len(), "{last:?}");
    for d in logged {
        let kept = Path::new(d["kept"].as_str().unwrap());
        assert!(kept_files.iter().any(|f| f == kept), "{d}");
        assert!(fs::read_to_string(kept).unwrap().starts_with("newer work"));
    }
}

/// Whether the process `pid` has a file open whose path holds `part`.
pub(crate) fn has_open(pid: u32, part: &str) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .any(|p| p.to_string_lossy().contains(part))
}

/// SIGTERM right after `backup`'s first write (the empty probe file it creates and removes at the drive's root to see
/// that it can write there, while it looks at the drives before its run starts): the probe is still removed, and
/// the run stops as every run does, with one line and an interrupted run log line. Before: the signal handler was
/// installed only once the run started, so the signal's default action killed dbackup there and left
/// `.dbackup-probe-<pid>-<nanos>` on the drive, with no line and no run log line. (`DBACKUP_TEST_STOP` stops the
/// process at that point, debug builds only.)
#[test]
fn a_signal_at_backups_first_write_leaves_nothing_on_the_drive() {
    let t = Test::new().config(&config(DRIVE));
    t.write("home/data/file", "x");
    fs::create_dir_all(t.path("T9")).unwrap();
    let child = t
        .cmd()
        .env("DBACKUP_TEST_STOP", "drive-probe")
        .args(["backup", "--force"])
        .spawn();
    crate::fixtures::drive::wait_stopped(child.id());
    let probes = || -> Vec<String> {
        fs::read_dir(t.path("T9"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".dbackup-probe-"))
            .collect()
    };
    assert_eq!(probes().len(), 1, "stopped right after the probe was made");
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGCONT);
    let (code, stderr) = finish(child);
    assert_eq!(code, 143, "{stderr}");
    assert_eq!(probes(), Vec::<String>::new(), "the probe is removed");
    assert_one_line(&stderr, "SIGTERM");
    assert_logged(&t, "backup", "SIGTERM", 143);
}

/// SIGTERM (and SIGINT) to `keygen`, `config init`, `systemd render --out` and `report --out` right after each wrote
/// its complete temporary file, before its rename: the temporary is removed, nothing is at the final name, and the
/// run ends with one line, 128 + the signal. Before: these commands kept the signals' default action, so the signal
/// killed them there and left the temporary beside the file until the next run of the same command (for `keygen`,
/// `.key.txt.tmp-<pid>-<random>`: a whole secret age identity; for `report --out`, `.page.html.tmp-<pid>`).
/// `image kit --out DIR` signalled with its kit written into DIR: the kit's files are removed (DIR too when the run
/// made it; another file in DIR stays). Before: the partial kit stayed in DIR. (`DBACKUP_TEST_STOP` stops the
/// process at that point, debug builds only.)
#[test]
fn a_signal_before_a_files_rename_leaves_no_temporary() {
    let t = Test::new().config(&config(""));
    let writers: [(&str, &[&str], &str); 4] = [
        ("keygen", &["keygen", "--out"], "key.txt"),
        ("report", &["report", "--out"], "page.html"),
        ("config init", &["config", "init"], "new.json"),
        (
            "systemd render",
            &["systemd", "render", "--user", "--out"],
            "dbackup-collect.service",
        ),
    ];
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        for (what, args, file) in writers {
            let dir = t.path(&format!("out/{name}/{}", what.replace(' ', "-")));
            fs::create_dir_all(&dir).unwrap();
            let target = dir.join(file);
            let last = if what == "systemd render" {
                &dir
            } else {
                &target
            };
            let child = t
                .cmd()
                .env("DBACKUP_TEST_STOP", "temp-written")
                .args(args.iter().map(std::ffi::OsStr::new))
                .args([last])
                .spawn();
            crate::fixtures::drive::wait_stopped(child.id());
            let temporaries = || -> Vec<String> {
                fs::read_dir(&dir)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            };
            assert_eq!(
                temporaries().len(),
                1,
                "{what}: stopped with its temporary written"
            );
            let (code, stderr) = continue_with(child, sig);
            assert_eq!(code, 128 + sig, "{what} ({name}): {stderr}");
            assert_eq!(
                temporaries(),
                Vec::<String>::new(),
                "{what} ({name}): the temporary is removed"
            );
            assert!(
                !target.exists(),
                "{what} ({name}): nothing at {}",
                target.display()
            );
            assert_one_line(&stderr, name);
        }
        // `image kit` without `--out` collects the kit in a temporary directory, then prints its guide.
        let tmp = t.path(&format!("tmp-{name}"));
        fs::create_dir_all(&tmp).unwrap();
        let child = t
            .cmd()
            .env("DBACKUP_TEST_STOP", "kit-written")
            .env("TMPDIR", &tmp)
            .args(["image", "kit"])
            .spawn();
        crate::fixtures::drive::wait_stopped(child.id());
        let kits = || fs::read_dir(&tmp).unwrap().count();
        assert_eq!(kits(), 1, "image kit: stopped with its kit collected");
        let (code, stderr) = continue_with(child, sig);
        assert_eq!(code, 128 + sig, "image kit ({name}): {stderr}");
        assert_one_line(&stderr, name);
        assert_eq!(
            kits(),
            0,
            "image kit ({name}): its temporary directory is removed"
        );
        // `image kit --out DIR`: into a new directory (SIGTERM), and into one holding another file (SIGINT).
        let out = t.path(&format!("kit-{name}"));
        if sig == libc::SIGINT {
            fs::create_dir_all(&out).unwrap();
            fs::write(out.join("mine.txt"), "not the kit's").unwrap();
        }
        let child = t
            .cmd()
            .env("DBACKUP_TEST_STOP", "kit-written")
            .args(["image", "kit", "--out"])
            .args([&out])
            .spawn();
        crate::fixtures::drive::wait_stopped(child.id());
        let held = || -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&out)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        assert!(
            held().iter().any(|n| n == "RESTORE-SYSTEM.md"),
            "image kit --out: stopped with its kit written: {:?}",
            held()
        );
        let (code, stderr) = continue_with(child, sig);
        assert_eq!(code, 128 + sig, "image kit --out ({name}): {stderr}");
        assert_one_line(&stderr, name);
        if sig == libc::SIGINT {
            assert_eq!(held(), ["mine.txt"], "image kit --out ({name})");
        } else {
            assert!(
                !out.exists(),
                "image kit --out ({name}): the directory it made is removed: {:?}",
                held()
            );
        }
    }
}

/// Sends `sig` to the stopped `child`'s main thread (`tgkill`), continues it and waits for it ([`finish`]). The main
/// thread takes the signal as it continues, before its next instruction; a signal to the whole process (`kill`) may
/// be taken by another of its threads, on another core, after the main thread went on past the point it stopped at.
fn continue_with(child: Child, sig: i32) -> (i32, String) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: tgkill has no memory-safety preconditions; the pid is our own child, not yet reaped.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, sig) };
    assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
    signal(&child, libc::SIGCONT);
    finish(child)
}

/// SIGTERM (and SIGINT) while `restore --verify` reads a drive backup's archive: it stops at once, exit 143 (130),
/// with one line saying what was interrupted and that nothing was changed. Before: a command that writes nothing
/// caught no signal and died of it, without a line.
#[test]
fn a_signal_during_restore_verify_stops_it_with_one_line() {
    let t = collected_for_the_drive();
    t.cmd().args(["external"]).status(0);
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let child = t
            .cmd()
            .args(["restore", "--verify", "--source", "drive"])
            .spawn();
        let pid = child.id();
        freeze_when(&child, "the verify to read the archive", || {
            has_open(pid, "data.tar")
        });
        signal(&child, sig);
        signal(&child, libc::SIGCONT);
        let (code, stderr) = finish(child);
        assert_eq!(code, 128 + sig, "{stderr}");
        assert_only_line(
            &stderr,
            &format!("dbackup: restore --verify interrupted ({name}); nothing was changed"),
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets in notification URLs

/// A notification URL with user info, a secret topic and a `?token=` (its server down, so delivery fails): only
/// `http://127.0.0.1:<port>/***` is shown by `config check` (text and JSON), `--dry-run backup`, `backup`'s warning,
/// `status`, and the run log. Before: `config check` printed `user:hunter2` and the whole URL, `--json config check`
/// too, and the path and `?token=` appeared in the warning and the run log; a URL without a scheme was quoted whole
/// in the config error.
#[test]
fn notification_url_secrets_appear_nowhere() {
    let port = testkit::objstore::closed_port();
    let url = format!("http://user:hunter2@127.0.0.1:{port}/secret-topic?token=tk_abc123");
    let t = Test::new().config(&config(&format!(
        r#", "notifications": {{ "http": "{url}", "events": ["success", "failure", "warning"] }}"#
    )));
    t.write("home/data/file", "x");
    let shown = format!("http://127.0.0.1:{port}/***");
    let secrets = ["hunter2", "secret-topic", "tk_abc123", "token="];
    let clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s:?}:\n{text}");
        }
    };
    let out = t.cmd().args(["config", "check"]).status(0);
    out.stdout_has(&format!("POST {shown}"));
    clean("config check", &out.stdout);
    let out = t.cmd().args(["--json", "config", "check"]).status(0);
    let json: serde_json::Value = out.json();
    assert_eq!(json["notifications"]["http"], shown.as_str());
    clean("--json config check", &out.stdout);
    for args in [
        &["--dry-run", "backup"][..],
        &["--json", "--dry-run", "backup"],
    ] {
        let out = t.cmd().args(args).status(0);
        clean("--dry-run backup", &(out.stdout + &out.stderr));
    }
    let out = t.cmd().args(["backup"]).status(0);
    out.stderr_has(&format!("(http sink): POST to {shown}: "));
    clean("backup", &(out.stdout + &out.stderr));
    for args in [&["status"][..], &["--json", "status"]] {
        let out = t.cmd().args(args).status(0);
        clean("status", &(out.stdout + &out.stderr));
    }
    let logged = fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap();
    assert!(logged.contains(&shown), "{logged}");
    clean("the run log", &logged);

    // Not a URL at all: the error quotes only what would be its host.
    fs::write(
        t.path("config.json"),
        t.expand(&config(
            r#", "notifications": { "http": "ntfy.sh/secret-topic" }"#,
        )),
    )
    .unwrap();
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("\"ntfy.sh/***\" is not an http:// or https:// URL");
    clean("the config error", &out.stderr);
}

/// The same for a URL handed to the notification `command` (`curl ... https://ntfy.sh/topic`, an apprise URL): a
/// command that fails is named in `backup`'s warning and the run log, and `config check` (text and JSON) lists it,
/// each with the URL as `https://ntfy.sh/***`. Before: the whole argv, user info, topic and token, in all four.
#[test]
fn notification_command_url_secrets_appear_nowhere() {
    let url = "https://user:hunter2@ntfy.sh/secret-topic?token=tk_abc123";
    let t = Test::new().config(&config(&format!(
        r#", "notifications": {{ "command": ["/bin/sh", "-c", "exit 3", "--url={url}"], "events": ["success"] }}"#
    )));
    t.write("home/data/file", "x");
    let clean = |what: &str, text: &str| {
        for s in ["hunter2", "secret-topic", "tk_abc123", "token="] {
            assert!(!text.contains(s), "{what} shows {s:?}:\n{text}");
        }
        assert!(
            text.contains("--url=https://ntfy.sh/***"),
            "{what}:\n{text}"
        );
    };
    command_sink_shown(&t, clean);
}

/// What shows a notification command: `config check` (text and JSON), a `backup` whose command sink fails (its
/// warning), and the run log; each checked by `clean(what, text)`.
pub(crate) fn command_sink_shown(t: &Test, clean: impl Fn(&str, &str)) {
    let out = t.cmd().args(["config", "check"]).status(0);
    clean("config check", &out.stdout);
    let out = t.cmd().args(["--json", "config", "check"]).status(0);
    clean("--json config check", &out.stdout);
    let out = t.cmd().args(["backup"]).status(0);
    out.stderr_has("(command sink): ");
    clean("backup", &(out.stdout + &out.stderr));
    clean(
        "the run log",
        &fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap(),
    );
}
