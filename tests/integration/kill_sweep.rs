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

use crate::harness::Test;
use crate::process::{bulk, config, files_under, finish, signal};

/// The two ways a run is ended from outside: the one it can handle (SIGTERM, systemd stopping the unit) and the
/// one it cannot (SIGKILL, the OOM killer, a power cut as far as the process is concerned).
const SIGNALS: [(&str, i32); 2] = [("SIGKILL", libc::SIGKILL), ("SIGTERM", libc::SIGTERM)];

/// Whether `child` has ended (a zombie not yet waited for).
fn ended(child: &Child) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", child.id()))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Stops `child` (SIGSTOP) as soon as `reached`, or returns false when it ended first (a point its run passed too
/// fast to be seen: the invariants are checked all the same).
fn freeze_at(child: &Child, mut reached: impl FnMut() -> bool) -> bool {
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
fn end_with(child: Child, sig: i32) -> (i32, String) {
    signal(&child, sig);
    signal(&child, libc::SIGCONT);
    finish(child)
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

/// A restore killed (SIGKILL) or stopped (SIGTERM) while it writes a file: every file under its final name is whole,
/// and the next restore into the same target restores everything and leaves no temporary file behind. Before: a
/// SIGKILLed restore left its half-written `.dbackup-restore-<pid>-<n>` (2 MiB of a 4 MiB file, mode 0600) in the
/// user's directory, and no later restore ever removed it.
#[test]
fn a_restore_killed_mid_file_leaves_no_temporary_after_the_next_restore() {
    for (name, sig) in SIGNALS {
        let t = Test::new().config(&config(""));
        bulk(&t, 16);
        t.cmd().args(["collect"]).status(0);
        let target = t.path("target");
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
