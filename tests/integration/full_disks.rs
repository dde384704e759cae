//! A full filesystem at each place dbackup writes that the drive and backup-root modules do not cover: the state
//! directory (the run log, the status page), the config directory (`config init`, `keygen`), `report --out`,
//! `systemd render --out`, and a restore target. Each on a small tmpfs the test mounts itself: the run's exit code as
//! README says, nothing half-written under a final name, and the next run after freeing space is right. Root only
//! (skips with a message otherwise).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::fixtures::mounted::Mounted;
use crate::harness::Test;

const CONFIG: &str = r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ] }"#;

/// A log whose last page has fewer bytes left than a run's line: on a full tmpfs, the line fits only in part. The
/// padding is a line of spaces (no record; readers skip it).
fn leave_less_than_a_line(log: &Path) {
    let len = fs::metadata(log).unwrap().len();
    let pad = (4096 - 64 - len % 4096 + 4096) % 4096;
    let mut f = fs::OpenOptions::new().append(true).open(log).unwrap();
    if pad > 0 {
        f.write_all(&[&vec![b' '; pad as usize - 1][..], b"\n"].concat())
            .unwrap();
    }
}

/// A full state directory: the backup itself succeeds (exit 0) and says the run log could not be written, and no
/// part of that run's line is left in the log. After space is freed, the next run (a failure) is the last run status
/// reports. Before: the line was written in part, the next run's line was glued onto it, and neither could be read:
/// status said the last run was the good one before, hiding the failure.
#[test]
fn a_full_state_directory_neither_fails_a_good_run_nor_hides_the_next_failure() {
    if !testkit::require_root() {
        return;
    }
    let t = Test::new().config(CONFIG);
    t.write("home/data/a", vec![b'a'; 50_000]);
    let state = Mounted::tmpfs(&t.path("state"), "64k");
    t.cmd().args(["collect"]).status(0);
    let log = t.path("state/dbackup/log.jsonl");
    leave_less_than_a_line(&log);
    let before = fs::read(&log).unwrap();

    let fill = state.fill();
    let out = t.cmd().args(["collect"]).status(0);
    out.stderr_has(&format!(
        "cannot write the run log in {}",
        t.path("state/dbackup").display()
    ));
    let after = fs::read(&log).unwrap();
    assert!(
        after == before,
        "nothing of the run's line is left; the log ends: {:?}",
        String::from_utf8_lossy(&after[after.len().saturating_sub(200)..])
    );

    fs::remove_file(fill).unwrap();
    fs::rename(t.path("home/data"), t.path("home/gone")).unwrap();
    t.cmd().args(["collect"]).status(1);
    let status: serde_json::Value = t.cmd().args(["--json", "status"]).output().json();
    assert_eq!(status["last_run"]["exit"], 1, "{}", status["last_run"]);
    assert_eq!(status["last_run"]["result"], "failed");
}
