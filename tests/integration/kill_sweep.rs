//! Faults swept through the real binary: each long-running command that writes (restore, external to a drive,
//! collect and its retention) is killed with SIGKILL, and separately stopped with SIGTERM, at several points of its
//! run, picked by watching its files (a temporary file, an archive being written, its record, a backup on its way
//! out). Then the invariants: every backup verified before is still whole (`sha256sum -c`, `restore --verify`),
//! `latest` names only a verified backup, nothing in a restore target is half-written under its final name, and
//! the next run of the same command succeeds and leaves none of the killed run's leftovers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use dbackup::Listing;

use crate::fixtures::drive::{assert_sums_pass, signal};
use crate::harness::Test;
use crate::process::{DRIVE, bulk, config, files_under, finish};

/// The two ways a run is ended from outside: the one it can handle (SIGTERM, systemd stopping the unit) and the
/// one it cannot (SIGKILL, the OOM killer, a power cut as far as the process is concerned).
pub(crate) const SIGNALS: [(&str, i32); 2] =
    [("SIGKILL", libc::SIGKILL), ("SIGTERM", libc::SIGTERM)];

/// Whether `child` has ended (a zombie not yet waited for).
fn ended(child: &Child) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", child.id()))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Stops `child` (SIGSTOP) as soon as `reached`, or returns false when it ended first (a point its run passed too
/// fast to be seen: the invariants are checked all the same).
pub(crate) fn freeze_at(child: &Child, mut reached: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !reached() {
        if ended(child) {
            return false;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(child, libc::SIGSTOP);
    true
}

/// Sends `sig` to a run `freeze_at` stopped (then SIGCONT); its exit code and stderr.
pub(crate) fn end_with(child: Child, sig: i32) -> (i32, String) {
    signal(&child, sig);
    signal(&child, libc::SIGCONT);
    finish(child)
}

/// The names in `dir` (nothing when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------------------------
// restore

/// The temporary files a restore made under `target` (`.dbackup-restore-<pid>-<n>`).
fn restore_temporaries(target: &Path) -> Vec<PathBuf> {
    files_under(target)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".dbackup-restore-")
        })
        .collect()
}

/// Every file under `target` is one of `bulk`'s, whole (`bigNN`, 4 MiB of byte NN), or a restore's temporary.
#[track_caller]
fn assert_whole_or_absent(target: &Path) -> usize {
    let mut whole = 0;
    for f in files_under(target) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".dbackup-restore-") {
            continue;
        }
        let i: u8 = name
            .strip_prefix("big")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a file that is not the backup's: {}", f.display()));
        assert!(
            fs::read(&f).unwrap() == vec![i; 4 << 20],
            "{} is half-written under its final name",
            f.display()
        );
        whole += 1;
    }
    whole
}

/// Sixteen files of 4 MiB under `~/data`, collected once (enough for a restore to be caught while it writes), and the
/// restore's target, not made yet.
fn sixteen_big_files_collected() -> (Test, std::path::PathBuf) {
    big_files_collected(16)
}

/// [`sixteen_big_files_collected`] with `n` files.
fn big_files_collected(n: usize) -> (Test, std::path::PathBuf) {
    let t = Test::new().config(&config(""));
    bulk(&t, n);
    t.cmd().args(["collect"]).status(0);
    let target = t.path("target");
    (t, target)
}

/// The user's own edited versions of the first `n` files, in the restore's target where `~/data` lands: that
/// directory.
fn edited_in_target(t: &Test, target: &Path, n: usize) -> PathBuf {
    let inside = target.join(t.home().join("data").strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    for i in 0..n {
        fs::write(inside.join(format!("big{i:02}")), format!("my edit {i}\n")).unwrap();
    }
    inside
}

/// A restore killed (SIGKILL) or stopped (SIGTERM) while it writes a file: every file under its final name is whole,
/// and the next restore into the same target restores everything and leaves no temporary file behind. Before: a
/// SIGKILLed restore left its half-written `.dbackup-restore-<pid>-<n>` (2 MiB of a 4 MiB file, mode 0600) in the
/// user's directory, and no later restore ever removed it.
#[test]
fn a_restore_killed_mid_file_leaves_no_temporary_after_the_next_restore() {
    for (name, sig) in SIGNALS {
        let (t, target) = sixteen_big_files_collected();
        let restore = || {
            t.cmd()
                .args(["restore", "--path", "~/data", "--target"])
                .args([&target])
        };
        let child = restore().spawn();
        let caught = freeze_at(&child, || !restore_temporaries(&target).is_empty());
        assert!(caught, "{name}: the restore was caught writing a file");
        let (code, stderr) = end_with(child, sig);
        assert_eq!(code, 128 + sig, "{name}: {stderr}");
        assert!(
            assert_whole_or_absent(&target) < 16,
            "{name}: stopped early"
        );

        restore().status(0);
        assert_eq!(assert_whole_or_absent(&target), 16, "{name}");
        assert_eq!(
            restore_temporaries(&target),
            Vec::<PathBuf>::new(),
            "{name}: the killed restore's temporary files are removed by the next one"
        );
    }
}

/// The files a restore set aside in its directory of `displaced/` (not dbackup's own dot-files).
fn kept_in(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// The directories of `displaced/` holding files (what restores set aside before replacing them).
fn set_aside(root: &Path) -> Vec<PathBuf> {
    let displaced = root.join("displaced");
    names(&displaced)
        .into_iter()
        .map(|n| displaced.join(n))
        .filter(|d| !kept_in(d).is_empty())
        .collect()
}

/// A restore over the user's own edited versions, killed (SIGKILL) once it has set some of them aside in
/// `displaced/<stamp>/` (replaced by the backup's): it could not list them, so `status` and the next restore say
/// where they are, the restore once (a third restore and `status` then say nothing), and they are all there.
/// Stopped with SIGTERM instead, the run itself says where they are, and neither repeats it. Before: after a kill
/// nothing ever said that the user's versions were set aside, nor where.
#[test]
fn a_restore_killed_after_setting_files_aside_is_told_by_the_next_restore() {
    for (name, sig) in SIGNALS {
        let (t, target) = sixteen_big_files_collected();
        let inside = edited_in_target(&t, &target, 16);
        let restore = || {
            t.cmd()
                .args(["restore", "--path", "~/data", "--target"])
                .args([&target])
        };
        let child = restore().spawn();
        let caught = freeze_at(&child, || !set_aside(&t.root()).is_empty());
        assert!(caught, "{name}: the restore was caught setting files aside");
        let (code, stderr) = end_with(child, sig);
        assert_eq!(code, 128 + sig, "{name}: {stderr}");
        let [dir] = &set_aside(&t.root())[..] else {
            panic!("{name}: one run's directory")
        };
        let told = format!(
            "files set aside by an interrupted restore are in {}",
            dir.display()
        );
        if sig == libc::SIGTERM {
            assert!(
                stderr.contains(&format!("kept in {}", dir.display())),
                "{name}: {stderr}"
            );
        }
        let kept = kept_in(dir).len();
        assert!(kept > 0 && kept < 16, "{name}: {kept} set aside");

        let status = t.cmd().args(["status"]).output();
        let next = restore().status(0);
        if sig == libc::SIGKILL {
            status.stdout_has(&told);
            next.stderr_has(&told);
        } else {
            status.stdout_lacks("interrupted restore");
            next.stderr_lacks("interrupted restore");
        }
        restore().status(0).stderr_lacks("interrupted restore");
        t.cmd()
            .args(["status"])
            .output()
            .stdout_lacks("interrupted restore");
        for i in 0..16 {
            let f = format!("big{i:02}");
            assert_eq!(
                fs::read(inside.join(&f)).unwrap(),
                vec![i as u8; 4 << 20],
                "{name}: {f}"
            );
        }
        // Every edit is kept: by the killed run (in its directory) or by the next one.
        let mut edits: Vec<String> = set_aside(&t.root())
            .iter()
            .flat_map(|d| kept_in(d))
            .map(|f| fs::read_to_string(f).unwrap())
            .collect();
        edits.sort();
        let mut want: Vec<String> = (0..16).map(|i| format!("my edit {i}\n")).collect();
        want.sort();
        assert_eq!(edits, want, "{name}");
    }
}

/// A pipe whose buffer is full: whoever writes to its writer blocks until the reader is read (or dropped).
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    use std::io::Write;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let flags = fcntl_getfl(&writer).unwrap();
    fcntl_setfl(&writer, flags | OFlags::NONBLOCK).unwrap();
    while writer.write(&[b'.'; 4096]).is_ok() {}
    fcntl_setfl(&writer, flags).unwrap();
    (reader, writer)
}

/// Whether a thread of process `pid` is in a `write` to its stdout (blocked on a full pipe).
fn writing_stdout(pid: u32) -> bool {
    let call = format!("{} 0x1 ", libc::SYS_write);
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            fs::read_to_string(task.path().join("syscall")).is_ok_and(|s| s.starts_with(&call))
        })
}

/// A restore that set the user's files aside, killed (SIGKILL) while it prints what it did (its stdout a pipe nobody
/// reads, so the list is never seen): `status` and the next restore say where the files are. The mark that makes
/// them say so goes only once the list is printed. Before: the mark was removed just before the list was printed,
/// so a restore killed while printing it was never told of.
#[test]
fn a_restore_killed_while_printing_what_it_set_aside_is_told_by_the_next_restore() {
    let (t, target) = big_files_collected(2);
    edited_in_target(&t, &target, 2);
    let restore = || {
        t.cmd()
            .args(["restore", "--path", "~/data", "--target"])
            .args([&target])
    };
    let (reader, writer) = full_pipe();
    let child = restore().spawn_to(writer.into());
    let caught = freeze_at(&child, || writing_stdout(child.id()));
    assert!(caught, "the restore was caught printing");
    let (code, stderr) = end_with(child, libc::SIGKILL);
    drop(reader);
    assert_eq!(code, 128 + libc::SIGKILL, "{stderr}");
    let [dir] = &set_aside(&t.root())[..] else {
        panic!("one run's directory: {stderr}")
    };
    assert_eq!(kept_in(dir).len(), 2, "{stderr}");
    let told = format!(
        "files set aside by an interrupted restore are in {}",
        dir.display()
    );
    t.cmd().args(["status"]).output().stdout_has(&told);
    restore().status(0).stderr_has(&told);
}

// ---------------------------------------------------------------------------------------------------------------
// external to a drive

/// Where a run is stopped: when a file shows it has got there, or (for the steps too short to be seen: one
/// rename) at the `n`th call of a system call, by `strace -e inject`.
#[derive(Clone, Copy)]
enum Point {
    Seen(fn(&Path) -> bool),
    Syscall(&'static str, u32),
}

/// Where an `external` run is stopped (seen in `backups/` on the drive, or its renames: the promotion is its first
/// `renameat2`, moving `latest` its first `renameat`, an old backup's move to `.trash-` its second `renameat2`).
const EXTERNAL_POINTS: [(&str, Point); 5] = [
    (
        "writing the archive",
        Point::Seen(|b| in_temp(b, "data.tar")),
    ),
    (
        "reading the archive back",
        Point::Seen(|b| in_temp(b, "data.index.jsonl")),
    ),
    (
        "the record written, before the rename",
        Point::Seen(|b| in_temp(b, "backup.json")),
    ),
    ("moving latest", Point::Syscall("renameat", 1)),
    ("removing an old backup", Point::Syscall("renameat2", 2)),
];

/// Runs `dbackup <args>` for `t` and ends it with `sig` at `point`: its exit code and stderr, and whether the point
/// was reached (`None` when `strace` is missing).
fn run_until(
    t: &Test,
    args: &[&str],
    watch: &Path,
    point: Point,
    sig: i32,
) -> Option<(i32, String, bool)> {
    match point {
        Point::Seen(reached) => {
            let child = t.cmd().args(args).spawn();
            let caught = freeze_at(&child, || reached(watch));
            let (code, stderr) = end_with(child, sig);
            Some((code, stderr, caught))
        }
        Point::Syscall(call, n) => {
            let inject = format!("inject={call}:signal={}:when={n}", strace_name(sig));
            let (code, stderr) = under_strace(t, &["-e", &inject], args)?;
            Some((code, stderr, true))
        }
    }
}

/// [`run_until`], then the exit code of a run stopped at its point: 128 + the signal, or 0 when SIGTERM came after
/// the last point it stops at. False when the point needs `strace` and it is missing.
#[track_caller]
fn stopped(t: &Test, args: &[&str], watch: &Path, point: Point, sig: i32, what: &str) -> bool {
    let Some((code, stderr, caught)) = run_until(t, args, watch, point, sig) else {
        return false;
    };
    if caught {
        assert!(
            code == 128 + sig || (sig == libc::SIGTERM && code == 0),
            "{what}: exit {code}: {stderr}"
        );
    }
    true
}

/// The next run of the same command (a second later: a new stamp) exits 0 and leaves no dot-name in `dirs` but the
/// lock and the drive's identity.
#[track_caller]
fn next_run_leaves_nothing(t: &Test, args: &[&str], dirs: &[&Path], what: &str) {
    std::thread::sleep(Duration::from_millis(1100));
    let again = t.cmd().args(args).output();
    assert_eq!(again.code, 0, "{what}: the next run:\n{}", again.stderr);
    let left: Vec<String> = dirs
        .iter()
        .flat_map(|d| names(d))
        .filter(|n| n.starts_with('.') && n != ".lock" && n != ".dbackup-destination.json")
        .collect();
    assert!(
        left.is_empty(),
        "{what}: leftovers after the next run: {left:?}"
    );
}

/// The signal's name as `strace -e inject=...:signal=` takes it.
fn strace_name(sig: i32) -> &'static str {
    if sig == libc::SIGKILL { "KILL" } else { "TERM" }
}

/// Runs `dbackup <args>` (with the test's config) under `strace <options>`, to its end: its exit code and stderr
/// (`None` when `strace` is missing).
pub(crate) fn under_strace(t: &Test, options: &[&str], args: &[&str]) -> Option<(i32, String)> {
    let strace = find_program("strace")?;
    let mut command = std::process::Command::new(strace);
    t.environment(&mut command, "tester")
        .current_dir(t.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .args(["-o", "/dev/null"])
        .args(options)
        .arg(crate::harness::BIN)
        .arg("--config")
        .arg(t.path("config.json"))
        .args(args);
    Some(finish(command.spawn().expect("spawn strace")))
}

/// `program` on `$PATH`, when installed (else a line saying the check is skipped).
fn find_program(program: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: {program} is not installed (a kill point at a system call needs it)");
    }
    found
}

/// Whether a temporary backup directory (`.tmp-<stamp>-<pid>`) in `backups` holds `file`.
fn in_temp(backups: &Path, file: &str) -> bool {
    names(backups)
        .iter()
        .any(|n| n.starts_with(".tmp-") && backups.join(n).join(file).exists())
}

/// The backups on the drive (directories named as a stamp).
pub(crate) fn stamps(backups: &Path) -> Vec<String> {
    names(backups)
        .into_iter()
        .filter(|n| n.starts_with("20") && backups.join(n).is_dir())
        .collect()
}

/// The invariants of a drive after any run, finished or killed: every backup on it passes `sha256sum -c` and
/// `restore --verify`, `latest` names one of them, and `restore --list` lists those and nothing else.
#[track_caller]
pub(crate) fn assert_drive_whole(t: &Test, backups: &Path, what: &str) {
    let on_drive = stamps(backups);
    assert!(
        !on_drive.is_empty(),
        "{what}: no backup left: {:?}",
        names(backups)
    );
    for s in &on_drive {
        assert_sums_pass(&backups.join(s));
        let out = t
            .cmd()
            .args(["restore", "--source", "external", "--verify", "--date", s])
            .output();
        assert_eq!(
            out.code, 0,
            "{what}: restore --verify of {s}:\n{}",
            out.stderr
        );
    }
    let latest = fs::read_link(backups.join("latest"))
        .unwrap_or_else(|e| panic!("{what}: latest: {e}: {:?}", names(backups)));
    assert!(
        on_drive.contains(&latest.to_string_lossy().into_owned()),
        "{what}: latest names {latest:?}, not one of {on_drive:?}"
    );
    let listing = crate::fixtures::drive::drive_listing(t);
    let listed: Vec<&str> = listing.backups.iter().map(|b| b.stamp.as_str()).collect();
    assert_eq!(
        listed.len(),
        on_drive.len(),
        "{what}: {listed:?} {on_drive:?}"
    );
    assert!(
        listed.iter().all(|s| on_drive.iter().any(|d| d == s)),
        "{what}: {listed:?}"
    );
}

/// `external` to a drive (a directory) killed with SIGKILL, and stopped with SIGTERM, at each point of its run
/// (writing the archive, reading it back, its record written before the rename, moving `latest`, removing an old
/// backup for retention): the backup verified before it is whole (or was removed only after the new one was in
/// place), `latest` names a verified backup, nothing half-written is listed, and the next run exits 0 and leaves no
/// leftover (`.tmp-`, `.trash-`, `.latest`) on the drive.
#[test]
fn external_killed_at_each_point_keeps_the_drive_whole() {
    for (name, sig) in SIGNALS {
        for (at, point) in EXTERNAL_POINTS {
            let what = format!("{name} while {at}");
            let t = Test::new().config(&config(&format!(
                r#"{DRIVE}, "retention": {{ "external": 1 }}"#
            )));
            bulk(&t, 12);
            let backups = t.path("T9/backups");
            fs::create_dir_all(t.path("T9")).unwrap();
            t.cmd().args(["collect"]).status(0);
            t.cmd().args(["external"]).status(0);
            let before = stamps(&backups);
            assert_eq!(before.len(), 1, "{what}");

            t.write("home/data/big00", vec![7u8; 4 << 20]);
            std::thread::sleep(Duration::from_millis(1100)); // a new stamp (stamps have seconds)
            t.cmd().args(["collect"]).status(0);
            if !stopped(&t, &["external", "--full"], &backups, point, sig, &what) {
                continue;
            }
            assert_drive_whole(&t, &backups, &what);
            let now = stamps(&backups);
            assert!(
                now.contains(&before[0]) || now.len() == 1,
                "{what}: the verified backup {} went before a new one was in place: {now:?}",
                before[0]
            );

            next_run_leaves_nothing(&t, &["external"], &[&backups], &what);
            assert_drive_whole(&t, &backups, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// the commands that write one file (or a few): keygen, config init, systemd render --out, report --out

/// `keygen`, `config init`, `systemd render --out` and `report --out` killed (SIGKILL) at the rename that puts their
/// (first) file in place, their first rename of any kind: nothing is at the final name, and the next run of the same command exits 0 and leaves no
/// temporary file in the directory. Before: each left its complete temporary (`.key.txt.tmp-<random>`, for
/// `keygen` a whole secret age identity, or `.dbackup-render.<random>`) beside the file, and no later run removed
/// it.
#[test]
fn a_file_writer_killed_before_its_rename_leaves_nothing_after_the_next_run() {
    let t = Test::new().config(&config(""));
    t.write("home/data/file", "x");
    t.cmd().args(["collect"]).status(0);
    let out = t.path("out");
    let writers: [(&str, Vec<String>, &str); 4] = [
        ("keygen", vec!["keygen".into(), "--out".into()], "key.txt"),
        (
            "config init",
            vec!["config".into(), "init".into()],
            "new.json",
        ),
        (
            "systemd render",
            vec![
                "systemd".into(),
                "render".into(),
                "--user".into(),
                "--out".into(),
            ],
            "dbackup-collect.service",
        ),
        ("report", vec!["report".into(), "--out".into()], "page.html"),
    ];
    for (what, args, file) in writers {
        let dir = out.join(what.replace(' ', "-"));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join(file);
        let mut args = args;
        args.push(
            if what == "systemd render" {
                &dir
            } else {
                &target
            }
            .display()
            .to_string(),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((code, stderr)) = under_strace(
            &t,
            &[
                "-f",
                "-e",
                "trace=rename,renameat,renameat2,linkat",
                "-e",
                "inject=rename,renameat,renameat2,linkat:signal=KILL:when=1",
            ],
            &args,
        ) else {
            return;
        };
        assert_eq!(code, 137, "{what}: killed at its rename: {stderr}");
        assert!(!target.exists(), "{what}: nothing at {}", target.display());

        let again = t.cmd().args(&args).output();
        assert_eq!(again.code, 0, "{what}: the next run: {}", again.stderr);
        let left: Vec<String> = names(&dir)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{what}: left beside {file}: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// collect and its retention

/// Where a `collect` run is stopped (seen in the backup root, or its renames: the metadata is its first `rename`,
/// the promotion its first `renameat2`, moving `latest` its second `rename`, an old snapshot's move to `.trash-` its
/// second `renameat2`).
const COLLECT_POINTS: [(&str, Point); 6] = [
    (
        "rsync copying",
        Point::Seen(|root| !files_under(&root.join(".data.in-progress")).is_empty()),
    ),
    (
        "the metadata written under its temporary name",
        Point::Syscall("rename", 1),
    ),
    (
        "the metadata written, before the promotion",
        Point::Syscall("renameat2", 1),
    ),
    ("moving latest", Point::Syscall("rename", 2)),
    ("moving an old snapshot out", Point::Syscall("renameat2", 2)),
    (
        "removing an old snapshot",
        Point::Seen(|root| names(root).iter().any(|n| n.starts_with(".trash-"))),
    ),
];

/// The invariants of a backup root after any collect, finished or killed: `data-latest` names a snapshot that is
/// there, with its metadata, holding the files whole; every snapshot `restore --list` shows is there.
#[track_caller]
fn assert_root_whole(t: &Test, what: &str) -> Vec<String> {
    let root = t.root();
    let snapshots: Vec<String> = names(&root)
        .into_iter()
        .filter(|n| n.starts_with("data-20") && root.join(n).is_dir())
        .collect();
    let latest = fs::read_link(root.join("data-latest"))
        .unwrap_or_else(|e| panic!("{what}: data-latest: {e}: {:?}", names(&root)));
    let latest = latest.to_string_lossy().into_owned();
    assert!(
        snapshots.contains(&latest),
        "{what}: data-latest names {latest}: {snapshots:?}"
    );
    assert!(
        root.join(format!("{latest}.json")).is_file(),
        "{what}: {latest} has its metadata"
    );
    let home = t.home();
    let copy = root
        .join(&latest)
        .join(home.strip_prefix("/").unwrap())
        .join("data");
    for i in 0..40 {
        let f = format!("f{i:02}");
        assert_eq!(
            fs::read(copy.join(&f)).ok(),
            Some(vec![b'a' + i as u8 % 26; 50_000]),
            "{what}: {latest}/{f} is whole"
        );
    }
    let listing: Listing = t
        .cmd()
        .args(["--json", "restore", "--list"])
        .status(0)
        .json();
    for b in &listing.backups {
        assert!(
            snapshots.iter().any(|s| s.ends_with(&b.stamp)),
            "{what}: {} is listed but not there: {snapshots:?}",
            b.stamp
        );
    }
    snapshots
}

/// `collect` (with `retention.local` 1) killed with SIGKILL, and stopped with SIGTERM, at each point of its run
/// (rsync copying, its metadata written under its temporary name, then renamed before the promotion, moving
/// `data-latest`, moving an old snapshot out and removing it): `data-latest` names a whole snapshot with its
/// metadata, the snapshot there before is kept until a new one is in place, and the next collect (another stamp)
/// exits 0 and leaves no leftover (`.trash-`, `.in-progress`, the killed run's `.data-<stamp>.json.tmp-<pid>`, a
/// metadata file without its snapshot).
#[test]
fn collect_killed_at_each_point_keeps_the_root_whole() {
    for (name, sig) in SIGNALS {
        for (at, point) in COLLECT_POINTS {
            let what = format!("{name} while {at}");
            let t = Test::new().config(
                r#"{ "backup_root": "{root}", "retention": { "local": 1 },
                     "backup_sets": [ { "name": "data", "sources": ["~/data"] } ] }"#,
            );
            for i in 0..40 {
                t.write(
                    &format!("home/data/f{i:02}"),
                    vec![b'a' + i as u8 % 26; 50_000],
                );
            }
            // Many small files: removing a snapshot takes long enough to be seen.
            for i in 0..1500 {
                t.write(&format!("home/data/many/m{i}"), "m");
            }
            t.cmd().args(["collect"]).status(0);
            let before = assert_root_whole(&t, &what);

            std::thread::sleep(Duration::from_millis(1100)); // a new stamp (stamps have seconds)
            t.write("home/data/new", "new");
            if !stopped(&t, &["collect"], &t.root(), point, sig, &what) {
                continue;
            }
            let now = assert_root_whole(&t, &what);
            assert!(
                now.contains(&before[0]) || now.len() == 1,
                "{what}: {} went before a new snapshot was in place: {now:?}",
                before[0]
            );

            next_run_leaves_nothing(&t, &["collect"], &[&t.root()], &what);
            let after = assert_root_whole(&t, &what);
            let orphans: Vec<String> = names(&t.root())
                .into_iter()
                .filter(|n| {
                    n.strip_suffix(".json")
                        .is_some_and(|s| !after.iter().any(|a| a == s))
                })
                .collect();
            assert!(
                orphans.is_empty(),
                "{what}: metadata without its snapshot: {orphans:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// backup (collect, then external)

/// Where a `backup` run is stopped (seen in the test's directory, or its renames: the collect's promotion is its
/// first `renameat2`, the drive backup's its second).
const BACKUP_POINTS: [(&str, Point); 4] = [
    (
        "collect's rsync copying",
        Point::Seen(|d| !files_under(&d.join("root/.data.in-progress")).is_empty()),
    ),
    ("the snapshot's promotion", Point::Syscall("renameat2", 1)),
    (
        "writing the drive's archive",
        Point::Seen(|d| in_temp(&d.join("T9/backups"), "data.tar")),
    ),
    (
        "the drive backup's promotion",
        Point::Syscall("renameat2", 2),
    ),
];

/// `backup` killed with SIGKILL, and stopped with SIGTERM, in its collect and in its external phase: the drive's
/// backups stay whole with `latest` on a verified one, `data-latest` names a snapshot that is there, and the next
/// `backup` exits 0 and leaves no leftover on the drive or in the backup root.
#[test]
fn backup_killed_in_either_phase_keeps_root_and_drive_whole() {
    for (name, sig) in SIGNALS {
        for (at, point) in BACKUP_POINTS {
            let what = format!("{name} while {at}");
            let t = Test::new().config(&config(DRIVE));
            bulk(&t, 12);
            fs::create_dir_all(t.path("T9")).unwrap();
            let backups = t.path("T9/backups");
            t.cmd().args(["backup", "--force"]).status(0);

            std::thread::sleep(Duration::from_millis(1100)); // a new stamp (stamps have seconds)
            t.write("home/data/big00", vec![7u8; 4 << 20]);
            if !stopped(&t, &["backup", "--force"], t.dir.path(), point, sig, &what) {
                continue;
            }
            assert_drive_whole(&t, &backups, &what);
            let latest = fs::read_link(t.root().join("data-latest")).unwrap();
            assert!(
                t.root().join(&latest).is_dir(),
                "{what}: data-latest names {latest:?}"
            );

            next_run_leaves_nothing(&t, &["backup", "--force"], &[&backups, &t.root()], &what);
            assert_drive_whole(&t, &backups, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// external to a bucket (Garage)

/// `external` to a bucket (retention 1) killed (SIGKILL) while it deletes the old backup retention removes, at its
/// first DELETE: the bucket lists only whole backups (each passes `restore --verify`), and the next run (an
/// incremental on the killed run's backup) exits 0, removes what the killed deletion left, and keeps its base: the
/// bucket holds the listed backups only. Before: retention planned for a bucket saw the new backup as depending on
/// nothing, so `retention: 1` deleted the base of the incremental it had just uploaded, and that backup's
/// `restore --verify` failed ("depends on ..., which cannot be read").
#[test]
fn external_to_a_bucket_killed_while_pruning_lists_only_whole_backups() {
    let Some(g) = testkit::objstore::Garage::start_logging_requests()
        .map_err(|why| testkit::skip(&why))
        .ok()
    else {
        return;
    };
    let Ok(s3) = testkit::objstore::S3Client::for_garage(&g).map_err(|why| testkit::skip(&why))
    else {
        return;
    };
    let t = crate::cloud::with_keys(
        &crate::cloud::config(&g.endpoint(), &g.bucket, r#", "retention": 1"#),
        &g.key.id,
        &g.key.secret,
    );
    crate::cloud::populate(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    std::thread::sleep(Duration::from_millis(1100)); // a new stamp (stamps have seconds)
    t.write("home/notes/todo.txt", "buy bread\n");
    t.cmd().args(["collect"]).status(0);
    let from = g.requests_logged().len();
    let mut child = t.cmd().args(["external", "--full"]).spawn();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out");
        if g.requests_logged()
            .iter()
            .skip(from)
            .any(|r| r.method == "DELETE")
        {
            child.kill().unwrap();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break; // too fast to be caught: the invariants hold all the same
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.wait().unwrap();
    let whole = |what: &str| {
        let listing: Listing = t
            .cmd()
            .args(["--json", "restore", "--list", "--source", "cloud:offsite"])
            .status(0)
            .json();
        for b in &listing.backups {
            let out = t
                .cmd()
                .args([
                    "restore",
                    "--source",
                    "cloud:offsite",
                    "--verify",
                    "--date",
                    &b.stamp,
                ])
                .output();
            assert_eq!(
                out.code, 0,
                "{what}: restore --verify of {}:\n{}",
                b.stamp, out.stderr
            );
        }
        listing
            .backups
            .iter()
            .map(|b| b.stamp.clone())
            .collect::<Vec<String>>()
    };
    let listed = whole("after the kill");
    assert!(!listed.is_empty(), "a backup is left");

    std::thread::sleep(Duration::from_millis(1100));
    t.cmd().args(["external"]).status(0);
    let mut listed = whole("after the next run");
    listed.sort();
    let in_bucket: Vec<String> = s3
        .list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST")
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    assert_eq!(
        in_bucket, listed,
        "the bucket holds the listed backups only"
    );
}
