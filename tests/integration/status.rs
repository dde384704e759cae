//! `dbackup status` on fixtures with chosen timestamps (snapshot metadata, `backup.json` on a plain-directory
//! destination, run log records), reported for a chosen `--now`: ages, overdue, the last run, `--check`, the table.

use std::fs;

use dbackup::{KnownFrom, SnapshotState, StatusReport};

use crate::fixtures::history::{at, drive_backup, first_snap, log_bare, log_written, snap};
use crate::harness::Test;

const NOW: &str = "2025-04-10T09:00:00+00:00";

/// The fixture: `data` fresh, `config` with an incomplete newest snapshot and a 3-day-old complete one, the T9
/// (present, a plain directory) with backups 21 and 12 days old, `old` absent, last written 16 days ago per the log.
fn fixture() -> Test {
    let t = Test::new();
    let t9 = t.path("media/T9");
    fs::create_dir_all(&t9).unwrap();
    let c = format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "data", "sources": ["/data"] }}, {{ "name": "config", "sources": ["~/.config"] }} ],
             "schedule": {{ "incremental": "daily", "full": "weekly", "external": "weekly" }},
             "destinations": [ {{ "name": "T9", "path": "{}", "require_mount": false, "priority": 10 }},
                               {{ "name": "old", "path": "{{tmp}}/media/old" }} ],
             "notifications": {{ "low_disk_percent": 0 }} }}"#,
        t9.display()
    );
    let t = t.config(&c);
    let g = 1 << 30;
    first_snap(&t, "data", "2025-04-08T03:15:00+00:00", 10 * g);
    snap(
        &t,
        "data",
        "2025-04-09T03:15:00+00:00",
        false,
        false,
        10 * g,
        9 * g,
        0,
    );
    snap(
        &t,
        "data",
        "2025-04-10T03:15:00+00:00",
        false,
        true,
        10 * g,
        9 * g,
        0,
    );
    let c1 = first_snap(&t, "config", "2025-04-07T03:15:00+00:00", 20 << 20);
    snap(
        &t,
        "config",
        "2025-04-10T03:15:00+00:00",
        false,
        false,
        20 << 20,
        19 << 20,
        2,
    );
    drive_backup(
        &t9,
        "2025-03-20T03:15:00+00:00",
        &[("data", "data-2025-03-20-031500"), ("config", "x")],
        8 * g,
    );
    drive_backup(
        &t9,
        "2025-03-29T03:15:00+00:00",
        &[("data", "data-2025-03-29-031500"), ("config", &c1)],
        9 * g,
    );
    // The log: an external run that wrote to `old`, a failed collect, then the last backup run with warnings.
    log_written(&t, "old", "2025-03-25T03:15:00+00:00");
    log_bare(&t, "collect", "2025-04-09T12:00:00+00:00", 1, Some("boom"));
    log_bare(&t, "backup", "2025-04-10T03:15:00+00:00", 3, None);
    t
}

fn status(t: &Test, now: &str) -> StatusReport {
    t.run_json(&["status", "--now", now])
}

#[test]
fn status_reports_ages_and_overdue_for_chosen_times() {
    let t = fixture();
    let r = status(&t, NOW);
    assert_eq!(r.now, at(NOW));
    assert!(!r.ok);

    let data = &r.sets[0];
    assert_eq!(data.snapshots, 3);
    let n = data.newest.as_ref().unwrap();
    assert_eq!(n.name, "data-2025-04-10-031500");
    assert_eq!(n.age_seconds, 5 * 3600 + 45 * 60);
    assert_eq!(n.state, SnapshotState::Complete);
    assert!(n.full);
    assert_eq!(
        (n.bytes, n.shared_bytes, n.copied_bytes),
        (10 << 30, Some(9 << 30), 1 << 30)
    );
    assert!(data.newest_complete.is_none(), "the newest is complete");

    let config = &r.sets[1];
    let n = config.newest.as_ref().unwrap();
    assert_eq!((n.state, n.unreadable), (SnapshotState::Incomplete, 2));
    let c = config.newest_complete.as_ref().unwrap();
    assert_eq!(c.name, "config-2025-04-07-031500");
    assert_eq!(c.age_seconds, 3 * 86400 + 5 * 3600 + 45 * 60);
    assert_eq!(c.shared_bytes, None, "a first snapshot shares nothing");

    let t9 = &r.destinations[0];
    assert!(t9.present);
    assert_eq!(t9.backups, Some(2));
    let b = t9.newest.as_ref().unwrap();
    assert_eq!(b.stamp, "2025-03-29-031500");
    assert_eq!(b.age_seconds, 12 * 86400 + 5 * 3600 + 45 * 60);
    assert_eq!(b.known_from, KnownFrom::Drive);
    assert_eq!(b.bytes, Some(9 << 30));
    let old = &r.destinations[1];
    assert!(!old.present);
    assert_eq!(old.absent_kind.as_deref(), Some("not_mounted"));
    let b = old.newest.as_ref().unwrap();
    assert_eq!(
        (b.stamp.as_str(), b.known_from),
        ("2025-03-25-031500", KnownFrom::RunLog)
    );
    assert_eq!(b.age_seconds, 16 * 86400 + 5 * 3600 + 45 * 60);

    let last = r.last_run.as_ref().unwrap();
    assert_eq!(
        (last.command.as_str(), last.exit, last.failed),
        ("backup", 3, false)
    );
    assert_eq!(last.result, "warnings");
    assert_eq!(last.age_seconds, 5 * 3600 + 40 * 60);

    let overdue: Vec<&str> = r.overdue.iter().map(|o| o.message.as_str()).collect();
    assert_eq!(
        overdue,
        [
            "no complete snapshot of set config for 3 days, schedule is daily",
            "no external backup for 12 days, schedule is weekly",
        ]
    );
    assert!(
        r.warnings.iter().any(|w| w.starts_with(
            "the newest snapshot of set config, config-2025-04-10-031500, is incomplete: 2 files could not be read"
        )),
        "{:?}",
        r.warnings
    );
    // What `backup` would do now: config (its newest complete snapshot is 3 days old) and the T9.
    let collect: Vec<(&str, bool)> = r
        .due
        .sets
        .iter()
        .map(|s| (s.set.as_str(), s.collect))
        .collect();
    assert_eq!(collect, [("data", false), ("config", true)]);
    assert_eq!(r.due.external.targets, ["T9"]);

    // Two days later, measured from that `now`: data is overdue too, and the external backups are two days older.
    let r = status(&t, "2025-04-12T09:00:00+00:00");
    let overdue: Vec<&str> = r.overdue.iter().map(|o| o.message.as_str()).collect();
    assert_eq!(
        overdue,
        [
            "no complete snapshot of set data for 2 days, schedule is daily",
            "no complete snapshot of set config for 5 days, schedule is daily",
            "no external backup for 14 days, schedule is weekly",
        ]
    );
    assert_eq!(
        r.sets[0].newest.as_ref().unwrap().age_seconds,
        2 * 86400 + 5 * 3600 + 45 * 60
    );
}

#[test]
fn check_exits_1_when_overdue_or_the_last_run_failed() {
    let t = fixture();
    let out = t.cmd().args(["status", "--check", "--now", NOW]).status(1);
    out.stdout_has("\noverdue:\n  no complete snapshot of set config for 3 days, schedule is daily\n  no external backup for 12 days, schedule is weekly\n");
    out.stderr_has("dbackup: status check failed: no complete snapshot of set config for 3 days, schedule is daily; no external backup for 12 days, schedule is weekly");
    // Without --check the same state exits 0.
    t.cmd().args(["status", "--now", NOW]).status(0);

    // Nothing overdue, the last run ok: 0; then a failed run: 1.
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["/data"] } ],
             "notifications": { "low_disk_percent": 0 } }"#,
    );
    first_snap(&t, "data", "2025-04-10T03:15:00+00:00", 100);
    log_bare(&t, "backup", "2025-04-10T03:15:00+00:00", 0, None);
    let r: StatusReport = t.run_json(&["status", "--check", "--now", NOW]);
    assert!(r.ok && r.overdue.is_empty());
    log_bare(
        &t,
        "collect",
        "2025-04-10T08:00:00+00:00",
        1,
        Some("collect data: rsync failed"),
    );
    let out = t.cmd().args(["status", "--check", "--now", NOW]).status(1);
    out.stdout_has("last run: collect finished 2025-04-10 08:05 (55 minutes ago): FAILED: collect data: rsync failed\n");
    out.stderr_has("status check failed: the last run (collect) failed");
    // A run that found the lock held is not a failure.
    log_bare(
        &t,
        "backup",
        "2025-04-10T08:30:00+00:00",
        4,
        Some("another dbackup run holds it"),
    );
    t.cmd().args(["status", "--check", "--now", NOW]).status(0);
}

#[test]
fn the_table_reads_at_a_glance() {
    let t = fixture();
    let mut r = status(&t, NOW);
    // What depends on this machine: the test's directory, free space, the filesystem type.
    let tmp = t.dir.path().display().to_string();
    let text = serde_json::to_string(&r).unwrap().replace(&tmp, "/tmp/t");
    r = serde_json::from_str(&text).unwrap();
    r.root_free_bytes = Some(120 << 30);
    r.root_total_bytes = Some(500 << 30);
    r.destinations[0].free_bytes = Some(412 << 30);
    r.destinations[0].total_bytes = Some(1863 << 30);
    r.destinations[0].fs_type = Some("exfat".into());
    // Low-disk warnings come from this machine's real free space (a nearly full disk here added one).
    r.warnings.retain(|w| !w.starts_with("low disk"));
    insta::assert_snapshot!("status_table", dbackup::render_status(&r));

    // The binary prints the same table.
    let out = t.cmd().args(["status", "--now", NOW]).status(0).stdout;
    assert!(
        out.starts_with("status: ATTENTION: 2 overdue (2025-04-10 09:00)\n"),
        "{out}"
    );
    assert!(out.contains("  T9           present ("), "{out}");
}

#[test]
fn status_of_a_fresh_install() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["/data"] } ],
             "notifications": { "low_disk_percent": 0 } }"#,
    );
    let out = t.cmd().args(["status", "--now", NOW]).status(0).stdout;
    let root = t.root().display().to_string();
    let out = out.replace(&root, "/root");
    let free = out.lines().nth(1).unwrap().to_string();
    assert!(
        free.starts_with("backup root /root (does not exist yet), "),
        "{free}"
    );
    let rest: Vec<&str> = out.lines().skip(2).collect();
    insta::assert_snapshot!("status_fresh", rest.join("\n"));
}

/// Counts read with thousands separators everywhere (issue 14 item 14: one style, indicatif's `HumanCount`), the
/// number of backups that still fit on a drive too. (Before: "about 121450 more of 22.1 KiB ... fit".)
#[test]
fn how_many_more_backups_fit_is_a_count_with_separators() {
    let t = crate::harness::Test::new();
    t.write("src/data/a.txt", "a");
    let t = t.config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["{tmp}/src/data"] } ],
             "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#,
    );
    std::fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let out = t.cmd().args(["status"]).status(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("(the recent average) fit"))
        .unwrap_or_else(|| panic!("no line on what fits: {}", out.stdout));
    let n = line
        .split("about ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let digits = n.replace(',', "");
    assert!(digits.len() > 3, "a small drive here? {line}");
    assert_eq!(
        n,
        indicatif::HumanCount(digits.parse().unwrap()).to_string(),
        "{line}"
    );
}

/// The page (`report --out -`) and `status --check` of the same world: the page's headline says what `--check` says
/// about the drive's backups.
#[track_caller]
fn page_and_check_agree(t: &Test, says: &str) {
    let out = t.cmd().args(["status", "--check"]).status(1);
    out.stderr_has(says);
    let page = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    assert!(page.contains("Attention: "), "{page}");
    assert!(page.contains(says), "{says} not on the page: {page}");
}

/// `--history` only adds to the JSON report: without `--json` it is a usage error saying so (before: accepted and
/// ignored, the table printed as if it were not given).
#[test]
fn history_without_json_is_a_usage_error() {
    let t = Test::new().config(crate::harness::DATA_ONLY);
    let out = t.cmd().args(["status", "--history", "3"]).status(2);
    out.stderr_has("dbackup status --json --history N");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    t.cmd()
        .args(["--json", "status", "--history", "3"])
        .status(0);
}

/// A directory drive with a full and an incremental on it (which keeps big.bin in the full's archive), both good:
/// the test, the drive, and the two stamps.
fn a_full_and_an_incremental() -> (Test, std::path::PathBuf, String, String) {
    use crate::fixtures::chain::chain_config;
    use crate::fixtures::drive::{collect, content, new_backup};
    let t = Test::new().config("{}");
    let drive = chain_config(&t, 3, 5, "");
    collect(&t);
    let first = new_backup(&t);
    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(&t);
    let second = new_backup(&t);
    t.cmd().args(["status", "--check"]).status(0);
    (t, drive, first, second)
}

/// A drive backup that `restore --verify` found damaged (one byte of its archive flipped, the size unchanged) is no
/// restore point, nor is the incremental on it: `status` marks it DAMAGED and the incremental BROKEN with what `--verify` found (text and `--json`), it is no longer the
/// newest verified backup (none is left), `status --check` exits 1 naming it, the status page says the same, and
/// `restore --list` says DAMAGED and BROKEN with why. (Before, on main: status "ok" and `--check` 0, the backup
/// listed as a normal restore point and the newest verified one, `restore --list` "verified" for both: nothing
/// read `damaged.json`.)
#[test]
fn a_backup_found_damaged_is_no_restore_point() {
    use crate::fixtures::chain::verify_backup;
    let (t, drive, first, second) = a_full_and_an_incremental();

    crate::harness::flip_middle_byte(&drive.join("backups").join(&first).join("data.tar"));
    verify_backup(&t, &first, false, 1);

    let says = format!(
        "destination drive: backup {first} is DAMAGED (restore --verify found it damaged on "
    );
    page_and_check_agree(&t, &says);
    let out = t.cmd().args(["status"]).status(0);
    out.stdout_has("status: ATTENTION: 1 overdue, 2 backups damaged or broken");
    // Not counted: the drive holds no good backup, so the external is overdue at once.
    out.stdout_has("overdue:\n  no external backup yet, schedule is weekly\n");
    out.stdout_has(
        "drive: 0 restore points (and 1 damaged backup and 1 broken backup, not counted)",
    );
    out.stdout_has(&format!("  {first}  full "));
    out.stdout_has("DAMAGED: restore --verify found it damaged on ");
    // The incremental on it is broken: its chain goes through the damaged backup.
    out.stdout_has(&format!(
        "BROKEN, it depends on {first}, which restore --verify found damaged"
    ));
    let r: StatusReport = t.run_json(&["status"]);
    assert!(!r.ok);
    let d = &r.destinations[0];
    assert_eq!(
        d.newest, None,
        "a damaged backup is not the newest verified one"
    );
    let p = &d.restore_points[0];
    assert!(p.damaged && !p.good(), "{p:?}");
    let q = &d.restore_points[1];
    assert!(q.stamp == second && q.broken && !q.damaged, "{q:?}");

    let list = t
        .cmd()
        .args(["restore", "--source", "external", "--list"])
        .status(0);
    list.stdout_has("DAMAGED  ");
    list.stdout_has("BROKEN, latest");
    list.stdout_has("note: restore --verify found it damaged on ");
    list.stdout_has(&format!(
        "note: its chain is broken: it depends on {first}, which restore --verify found damaged"
    ));
    assert!(p.problem.as_deref().unwrap().contains("data.tar"), "{p:?}");
}

/// An incremental whose full `restore --verify` found damaged is no restore point either: `backup` writes a fresh
/// backup there, and its plan says why in one line. Before: the plan said only "(would be written)".
#[test]
fn backup_plans_a_fresh_backup_over_an_incremental_whose_full_is_damaged() {
    use crate::fixtures::chain::verify_backup;
    let (t, drive, first, second) = a_full_and_an_incremental();
    crate::harness::flip_middle_byte(&drive.join("backups").join(&first).join("data.tar"));
    verify_backup(&t, &first, false, 1);
    let plan = t.cmd().args(["--dry-run", "backup", "--force"]).status(0);
    plan.stdout_has("    drive (would be written): present: ");
    plan.stdout_has(&format!(
        "      its newest backup {second} has a broken chain, no restore point: writing a fresh one\n"
    ));
}

/// A restore from the drive reads the backup `--date` picks even when `restore --verify` found it damaged (or its
/// chain is broken): it says so first and names the newest good backup before it; a damaged file is not written
/// (exit 1) and the good backup named gives it back; what is intact in a damaged backup comes back. Before: no
/// word that the chosen backup was known damaged, nor of the good one beside it; the user learned only that the file
/// failed its sha256.
#[test]
fn a_restore_from_a_damaged_backup_names_the_newest_good_one() {
    use crate::fixtures::chain::{restore_file, verify_backup};
    use crate::fixtures::drive::content;
    let (t, drive, first, second) = a_full_and_an_incremental();
    let path = |name: &str| t.home().join("data/projects").join(name);
    let restored =
        |target: &str, name: &str| t.path(target).join(path(name).strip_prefix("/").unwrap());
    let restore = |target: &str, name: &str, code: i32| {
        t.restore_from_drive()
            .args(["--path".as_ref(), path(name).as_os_str()])
            .args(["--target".as_ref(), t.path(target).as_os_str()])
            .status(code)
    };

    // One byte of p03.txt's new content flipped in the incremental's archive.
    let archive = drive.join("backups").join(&second).join("data.tar");
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &content(2000, 333)[..64])
        .expect("the incremental stores p03.txt");
    bytes[at + 10] ^= 0x20;
    fs::write(&archive, bytes).unwrap();
    verify_backup(&t, &second, false, 1);

    let out = restore("newest", "p03.txt", 1);
    out.stderr_has(&format!(
        "backup {second} is DAMAGED (restore --verify found it damaged on "
    ));
    out.stderr_has(&format!(
        "its files are each checked against their sha256 and a damaged one is not restored; the newest good backup \
         is {first} (`--date {first}`)"
    ));
    assert!(
        !restored("newest", "p03.txt").exists(),
        "a damaged file is never written"
    );
    restore_file(&t, &first, &path("p03.txt"), &t.path("older"), 0);
    assert_eq!(
        fs::read(restored("older", "p03.txt")).unwrap(),
        content(1000 + 3 * 37, 3)
    );

    // The full damaged too (the incremental's chain is then broken): what is intact still comes back.
    crate::harness::flip_middle_byte(&drive.join("backups").join(&first).join("data.tar"));
    verify_backup(&t, &first, false, 1);
    let out = restore("intact", "p05.txt", 0);
    out.stderr_has(&format!("backup {second} is DAMAGED ("));
    out.stderr_has("a damaged one is not restored; no older backup there is a restore point");
    assert_eq!(
        fs::read(restored("intact", "p05.txt")).unwrap(),
        content(1000 + 5 * 37, 5)
    );
}

/// What `restore --verify` found, noted in `damaged.json` and shown again by `status` and `restore --list`, is escaped
/// exactly once: the drive's path here holds an ESC and a backslash, and the note shows `\x1b` and `\\` (never the raw
/// ESC, never `\\x1b`). Before, the note was stored escaped and escaped again when shown: `\\x1b` and `\\\\`.
#[test]
fn a_damage_note_is_escaped_exactly_once() {
    use crate::fixtures::chain::verify_backup;
    let (t, drive, first, _) = a_full_and_an_incremental();
    let hostile = t.path("dr\u{1b}[2Jive\\x");
    fs::rename(&drive, &hostile).unwrap();
    let config = fs::read_to_string(t.path("config.json")).unwrap();
    let quoted = serde_json::to_string(hostile.to_str().unwrap()).unwrap();
    let config = config.replace(&format!("\"{}\"", drive.display()), &quoted);
    assert!(config.contains(r"\u001b[2Jive\\x"), "{config}");
    fs::write(t.path("config.json"), config).unwrap();

    crate::harness::flip_middle_byte(&hostile.join("backups").join(&first).join("data.tar"));
    let verify = verify_backup(&t, &first, false, 1);
    let once = r"dr\x1b[2Jive\\x";
    verify.stdout_has(once);
    let status = t.cmd().args(["status"]).status(0);
    let list = t
        .cmd()
        .args(["restore", "--source", "external", "--list"])
        .status(0);
    for (what, out) in [("status", &status.stdout), ("restore --list", &list.stdout)] {
        let note = out
            .lines()
            .find(|l| l.contains("restore --verify found it damaged on "))
            .unwrap_or_else(|| panic!("{what}: no damage note: {out}"));
        assert!(note.contains(once), "{what}: not escaped once: {note}");
        assert!(!note.contains(r"\\x1b"), "{what}: escaped twice: {note}");
        assert!(!note.contains('\u{1b}'), "{what}: a raw ESC: {note}");
    }
}

/// When `restore --verify` finds a backup damaged but cannot note it (here `damaged.json` is a directory), the
/// warning says what that costs and what to do: the next external cannot know, so `external --full`. Before, it
/// said only "cannot note the result in ...".
#[test]
fn damage_that_cannot_be_noted_says_to_start_a_new_chain() {
    use crate::fixtures::chain::verify_backup;
    let (t, drive, first, _) = a_full_and_an_incremental();
    crate::harness::flip_middle_byte(&drive.join("backups").join(&first).join("data.tar"));
    fs::create_dir_all(t.path("state/dbackup/damaged.json/x")).unwrap();
    let out = verify_backup(&t, &first, false, 1);
    out.stderr_has("cannot note the result in ");
    out.stderr_has("run `dbackup external --full` to start a new chain");
}

/// Two `restore --verify` runs at once (they share the run lock), each finding its backup damaged, both note it:
/// the first is held between reading `damaged.json` and writing it back while the second runs. Before, the first
/// wrote back what it had read plus its own record, and the second's record was lost: its damaged backup read as a
/// restore point again.
#[test]
fn two_verify_runs_at_once_both_note_what_they_found() {
    let (t, drive, first, second) = a_full_and_an_incremental();
    for stamp in [&first, &second] {
        crate::harness::flip_middle_byte(&drive.join("backups").join(stamp).join("data.tar"));
    }
    let verify = |stamp: &str| t.restore_from_drive().args(["--date", stamp, "--verify"]);
    for out in crate::harness::at_once(&t, "damaged.json", verify(&first), verify(&second)) {
        assert_eq!(out.code, 1, "{}", out.stderr);
    }
    let noted = fs::read_to_string(t.path("state/dbackup/damaged.json")).unwrap();
    for stamp in [&first, &second] {
        assert!(noted.contains(stamp.as_str()), "{stamp} not noted: {noted}");
    }
    let r: StatusReport = t.run_json(&["status"]);
    let points = &r.destinations[0].restore_points;
    assert!(points.iter().all(|p| p.damaged), "{points:?}");
}

/// A drive backup whose archive is not the size its `backup.json` records (cut short on the drive) is no restore
/// point, nor the incremental on it: `status` marks it DAMAGED saying which file, the incremental BROKEN, and
/// `status --check` exits 1, and `restore --list` says so, as the drive's REPORT.html does. (Before: status "ok" and
/// `restore --list` "verified", both counted as restore points, while the next external, which looks at the sizes,
/// would not extend the chain.)
#[test]
fn a_backup_whose_archive_is_cut_short_is_no_restore_point() {
    let (t, drive, first, second) = a_full_and_an_incremental();
    let len =
        crate::harness::cut_short(&drive.join("backups").join(&first).join("data.tar"), |l| {
            l / 2
        });
    let says = format!(
        "destination drive: backup {first} is DAMAGED (data.tar is {} bytes, not the {len} recorded)",
        len / 2
    );
    page_and_check_agree(&t, &says);
    let r: StatusReport = t.run_json(&["status"]);
    let d = &r.destinations[0];
    assert_eq!(d.newest, None, "{d:?}");
    assert!(d.restore_points[0].damaged, "{:?}", d.restore_points[0]);
    let q = &d.restore_points[1];
    assert!(q.stamp == second && q.broken, "{q:?}");
    // `restore --list` says the same.
    let list = t.restore_from_drive().args(["--list"]).status(0);
    list.stdout_has("DAMAGED  ");
    list.stdout_has("BROKEN, latest");
    list.stdout_has(&format!(
        "note: data.tar is {} bytes, not the {len} recorded",
        len / 2
    ));
    list.stdout_has(&format!(
        "note: its chain is broken: it depends on {first}, which is damaged"
    ));
}

/// The newest drive backup is an incremental whose base is gone from the drive (the full's directory removed by
/// hand): `status` marks it BROKEN and does not count it as the newest verified backup (none is left), `status
/// --check` exits 1 naming it and why, the status page says the same, and `restore --list` says BROKEN with why.
/// (Before, on main: status "ok" and `--check` 0 with the incremental as the newest verified backup, and
/// `restore --list` "verified, latest".)
#[test]
fn an_incremental_whose_base_is_gone_is_broken() {
    let (t, drive, first, second) = a_full_and_an_incremental();
    fs::remove_dir_all(drive.join("backups").join(&first)).unwrap();

    let says = format!(
        "destination drive: backup {second} is BROKEN (it depends on {first}, which is missing or unverified)"
    );
    page_and_check_agree(&t, &says);
    let r: StatusReport = t.run_json(&["status"]);
    assert!(!r.ok);
    let d = &r.destinations[0];
    assert_eq!(
        d.newest, None,
        "a broken backup is not the newest verified one"
    );
    assert!(d.restore_points[0].broken && !d.restore_points[0].good());

    let list = t
        .cmd()
        .args(["restore", "--source", "external", "--list"])
        .status(0);
    list.stdout_has("BROKEN, latest");
    list.stdout_has(&format!(
        "note: its chain is broken: it depends on {first}, which is not on the drive or unverified"
    ));
    assert!(!list.stdout.contains("verified, latest"), "{}", list.stdout);

    // The next external writes a full; the broken incremental is still named, but no longer fails the check: a good
    // backup is newer.
    crate::fixtures::drive::external(&t, &[], 0);
    let out = t.cmd().args(["status", "--check"]).status(0);
    out.stdout_has(&format!("backup {second} is BROKEN"));
}

/// The fixture, with a newer backup of `bytes` on the T9 by another config that names it alike (set `notes`, none
/// of this config's), and its status at `NOW`.
fn with_another_configs_backup_on_t9(bytes: u64) -> (Test, StatusReport) {
    let t = fixture();
    drive_backup(
        &t.path("media/T9"),
        "2025-04-09T03:15:00+00:00",
        &[("notes", "notes-2025-04-09-031500")],
        bytes,
    );
    let r = status(&t, NOW);
    (t, r)
}

/// The T9 also used by another config under the same destination name: its newer backup (set `notes`, none of this
/// config's) is not this config's newest, so the T9 stays 12 days old, overdue and due. Before: the other config's
/// backup made the T9 look fresh, and this config's missing backups went unnoticed.
#[test]
fn another_configs_backup_on_the_drive_is_not_this_configs_newest() {
    let (_, r) = with_another_configs_backup_on_t9(1 << 20);
    let t9 = &r.destinations[0];
    assert_eq!(
        t9.newest.as_ref().map(|b| b.stamp.as_str()),
        Some("2025-03-29-031500")
    );
    assert!(
        r.overdue
            .iter()
            .any(|o| o.message == "no external backup for 12 days, schedule is weekly"),
        "{:?}",
        r.overdue
    );
    assert_eq!(r.due.external.targets, ["T9"]);
}

/// The T9 also used by another config under the same destination name: its backups (set `notes`) are not this
/// config's restore points, nor in its count, recent average or "how many more fit" (a big one of theirs would
/// make this config's fit look small); the text says the free space is shared. Before: both configs' backups were
/// listed as this config's restore points and averaged together.
#[test]
fn another_configs_backups_on_the_drive_are_not_this_configs_restore_points() {
    let (t, r) = with_another_configs_backup_on_t9(64 << 20);
    let t9 = &r.destinations[0];
    let points: Vec<&str> = t9.restore_points.iter().map(|p| p.stamp.as_str()).collect();
    assert_eq!(
        points,
        ["2025-03-20-031500", "2025-03-29-031500"],
        "{t9:#?}"
    );
    assert_eq!(t9.backups, Some(2));
    assert!(t9.recent_average_bytes.unwrap() >= 8 << 30, "{t9:#?}");
    let shared = "the free space is shared with 1 backup of another config on the drive (or of this config's sets from \
         before one was renamed or its sources changed; not counted here)";
    let text = t.cmd().args(["status", "--now", NOW]).status(0).stdout;
    assert!(text.contains(shared), "{text}");

    // With none of this config's left on the T9, the text still says whose backups fill it. Before: nothing.
    for own in ["2025-03-20-031500", "2025-03-29-031500"] {
        fs::remove_dir_all(t.path("media/T9/backups").join(own)).unwrap();
    }
    let text = t.cmd().args(["status", "--now", NOW]).status(0).stdout;
    assert!(
        text.contains(&format!("T9: 0 restore points; {shared}")),
        "{text}"
    );
}

/// A drive whose `backups/` cannot be read (here a file in its place) is not "ok", even though the run log knows
/// of its recent backups: `status` headlines that it cannot tell and names the drive, `--json` says `ok: false` and
/// lists it in `unseen`, `--check` exits 3, and the status page says it cannot tell. Before: "status: ok, nothing
/// is overdue", `--check` exit 0 and the page "Backups are good"; the error only under "warnings:".
#[test]
fn a_drive_whose_backups_cannot_be_read_is_not_ok() {
    let (t, drive, _, _) = a_full_and_an_incremental();
    let backups = drive.join("backups");
    fs::rename(&backups, drive.join("backups.moved")).unwrap();
    fs::write(&backups, "not a directory").unwrap();
    let out = t.cmd().args(["status"]).status(0);
    let headline = out.stdout.lines().next().unwrap_or("");
    assert!(
        headline.starts_with("status: UNKNOWN: destination "),
        "{}",
        out.stdout
    );
    let v: serde_json::Value = t.cmd().args(["--json", "status"]).status(0).json();
    crate::json::assert_valid("status", &v);
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["unseen"][0]["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("destination ")),
        "{v}"
    );
    t.cmd().args(["status", "--check"]).status(3).stderr_has(
        "dbackup: status check: cannot tell whether the backups are good: destination ",
    );
    let page = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    assert!(!page.contains("Backups are good"), "{page}");
    assert!(
        page.contains("Cannot tell whether the backups are good"),
        "{page}"
    );
    assert!(page.contains("<title>dbackup: UNKNOWN"), "{page}");
}

/// A backup root that cannot be read (not this user's, mode 0700) is not taken for one without snapshots: `status`
/// names it as what could not be looked at (`unseen` in `--json`), with the error. Before: "set data has no snapshot
/// yet" as if nothing had ever been collected, and no word of the root; then (named) still "set data has no snapshot
/// yet" among the overdue, "none" in the table and `--check` exit 1.
#[test]
fn a_backup_root_that_cannot_be_read_is_named() {
    use crate::collect::{as_nobody, chown_tree, is_root};
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new().config(crate::harness::DATA_ONLY);
    t.write("home/data/a.txt", "a");
    t.cmd().args(["collect"]).status(0);
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o700)).unwrap();
    let status = |args: &[&str]| {
        if is_root() {
            as_nobody(&t, args)
        } else {
            fs::set_permissions(t.root(), fs::Permissions::from_mode(0o000)).unwrap();
            t.cmd().args(args).output()
        }
    };
    if is_root() {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            return testkit::skip(
                "running as root and setpriv (util-linux) is missing, so the root cannot be unreadable",
            );
        }
        fs::set_permissions(t.path(""), fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["home", "state", "xdg-config"] {
            chown_tree(&t.path(d), 65534);
        }
    }
    let out = status(&["--json", "status"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    crate::json::assert_valid("status", &v);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["unseen"][0]["what"], "the backup root", "{v}");
    let why = v["unseen"][0]["why"].as_str().unwrap_or("");
    assert!(why.contains(&t.root().display().to_string()), "{why}");
    assert!(
        v["warnings"]
            .to_string()
            .contains("cannot read the backup root"),
        "{v}"
    );
    // What the root holds is unknown, not none: no "no snapshot yet" overdue, "unknown" in the table, and
    // `--check` exits 3 (cannot tell), not 1.
    let r: StatusReport = serde_json::from_str(&out.stdout).unwrap();
    assert!(r.overdue.is_empty(), "{:?}", r.overdue);
    assert!(r.sets.iter().all(|s| s.unseen && s.newest.is_none()));
    let out = status(&["status"]);
    assert!(
        out.stdout.lines().next().is_some_and(
            |l| l.starts_with("status: UNKNOWN: the backup root could not be looked at")
        ),
        "{}",
        out.stdout
    );
    says_unknown_not_yet(&out.stdout, &["data", "unknown", "-", "-", "-", "-", "?"]);
    assert_eq!(status(&["status", "--check"]).code, 3);
    let page = status(&["report", "--out", "-"]).stdout;
    assert!(
        page.contains("Cannot tell whether the backups are good"),
        "{page}"
    );
    assert!(
        !page.contains("<span class=\"bad\">none</span>") && page.contains("<td>unknown"),
        "{page}"
    );
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// A bucket that cannot be listed (a closed port here), with nothing in the run log about it: what it holds is
/// unknown, so `status` says only that: not overdue ("no external backup yet"), "unknown" in the table, `unseen` in
/// `--json`, `--check` exits 3 (cannot tell), not 1. Before: "no external backup yet, schedule is weekly" beside
/// "could not be looked at", the headline "ATTENTION: 1 overdue" and `--check` exit 1.
#[test]
fn a_bucket_never_seen_and_not_in_the_run_log_is_unknown_not_empty() {
    let (t, _) = crate::cloud::on_a_closed_port();
    first_snap(&t, "docs", "2025-04-10T03:15:00+00:00", 1 << 20);
    let r: StatusReport = t.run_json(&["status", "--now", NOW]);
    assert_eq!(
        r.unseen.iter().map(|u| u.what.as_str()).collect::<Vec<_>>(),
        ["destination offsite"]
    );
    assert!(r.overdue.is_empty(), "{:?}", r.overdue);
    assert!(!r.ok);
    let out = t.cmd().args(["status", "--now", NOW]).status(0);
    assert!(
        out.stdout.starts_with(
            "status: UNKNOWN: destination offsite could not be looked at, so whether the backups are good is unknown"
        ),
        "{}",
        out.stdout
    );
    says_unknown_not_yet(
        &out.stdout,
        &["offsite", "weekly", "-", "unknown", "-", "-"],
    );
    t.cmd()
        .args(["status", "--check", "--now", NOW])
        .status(3)
        .stderr_has(
            "dbackup: status check: cannot tell whether the backups are good: destination offsite",
        );
}

/// A drive whose newest backup `restore --verify` found damaged, then unplugged: the run log still names that backup
/// as the drive's newest, but it is known damaged (`damaged.json`, in the state directory): `status --check` exits 1
/// naming it, and the page says the same. Before: that backup was the drive's newest verified one (from the run
/// log), `status` "ok", `--check` 0 and the page "Backups are good".
#[test]
fn a_damaged_backup_on_a_drive_since_unplugged_is_not_good() {
    use crate::fixtures::chain::verify_backup;
    let (t, drive, first, second) = a_full_and_an_incremental();
    crate::harness::flip_middle_byte(&drive.join("backups").join(&second).join("data.tar"));
    verify_backup(&t, &second, false, 1);
    t.cmd().args(["status", "--check"]).status(1);
    fs::rename(&drive, t.path("drive.in-a-drawer")).unwrap();
    let r: StatusReport = t.run_json(&["status"]);
    let d = &r.destinations[0];
    assert!(!d.present);
    assert_ne!(
        d.newest.as_ref().map(|n| n.stamp.as_str()),
        Some(second.as_str()),
        "{d:?}"
    );
    assert!(!r.ok, "{r:?}");
    assert!(d.newest.is_none() && d.unseen, "{d:?}");
    let says = format!(
        "destination drive: backup {second} is DAMAGED (restore --verify found it damaged on "
    );
    page_and_check_agree(&t, &says);
    // Its older backup may be good: not "no external backup yet", nor "none yet" on the page.
    assert!(r.overdue.is_empty(), "{:?}", r.overdue);
    let page = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    assert!(!page.contains("none yet"), "{page}");
    assert!(page.contains("<td class=\"muted\">unknown</td>"), "{page}");
    assert!(!first.is_empty());
}

/// `status`'s text says nothing is there "yet", and the table row of `row[0]` reads `row`, word by word.
#[track_caller]
fn says_unknown_not_yet(text: &str, row: &[&str]) {
    assert!(!text.contains("yet"), "{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(row[0]))
        .unwrap_or_default();
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), row, "{text}");
}

/// Config B (this test's) and config A (`a.json`) of one user: other backup roots, each with a set `docs` (other
/// sources) and a drive `usb` of its own (`usb-b`, `usb-a`); B collected and written to its `usb` once.
fn two_configs_of_one_user() -> (Test, std::path::PathBuf) {
    let config = r#"{ "backup_root": "ROOT", "image": { "kit": false },
        "backup_sets": [ { "name": "docs", "sources": ["DOCS"] } ],
        "destinations": [ { "name": "usb", "path": "{tmp}/USB", "require_mount": false } ] }"#;
    let of = |root: &str, docs: &str, usb: &str| {
        config
            .replace("ROOT", root)
            .replace("DOCS", docs)
            .replace("USB", usb)
    };
    let t = Test::new().config(&of("{root}", "~/docs", "usb-b"));
    let a = t.write(
        "a.json",
        t.expand(&of("{tmp}/root-a", "{tmp}/a-docs", "usb-a")),
    );
    t.write("home/docs/b.txt", "this config's\n");
    t.write("a-docs/a.txt", "the other config's\n");
    for usb in ["usb-a", "usb-b"] {
        fs::create_dir_all(t.path(usb)).unwrap();
    }
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    (t, a)
}

/// A command of the config `config` (not the test's).
fn as_config(t: &Test, config: &std::path::Path) -> crate::harness::Cmd {
    (t.cmd().no_config()).args(["--config".as_ref(), config.as_os_str()])
}

/// Two configs of one user (other backup roots, each with a set `docs` and a drive `usb` of its own) share the run
/// log, as the state directory is per user. Config A's runs are not config B's: B's `status` (text and `--json`),
/// `--check` and page never take A's failed collect for B's last run, A's backup on A's `usb` for the newest on B's
/// `usb` (unplugged: known from the run log), nor (root: A's `usb` a full tmpfs) A's refused backup for the last
/// backup to B's `usb`. Before: B's last run was A's failed collect and `--check` exited 1 on it; B's unplugged `usb`
/// had A's backup as its newest; A's refusal was "the last backup to usb".
#[test]
fn another_configs_runs_in_the_shared_run_log_are_not_this_configs() {
    let (t, a) = two_configs_of_one_user();
    let with_a = || as_config(&t, &a);
    let ours = crate::fixtures::drive::backups(&t.path("usb-b"));
    while chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= ours[0] {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    with_a().args(["collect"]).status(0);
    with_a().args(["external"]).status(0);
    let theirs = crate::fixtures::drive::backups(&t.path("usb-a"));
    assert!(theirs[0] > ours[0], "{theirs:?} {ours:?}");
    // A's next collect fails (its sources gone).
    fs::rename(t.path("a-docs"), t.path("a-docs.away")).unwrap();
    with_a().args(["collect"]).status(1);
    // B's `usb` in a drawer: what is on it is known from the run log only.
    fs::rename(t.path("usb-b"), t.path("usb-b.in-a-drawer")).unwrap();

    let ours_only = |t: &Test, what: &str| {
        let s: serde_json::Value = t.cmd().args(["--json", "status"]).output().json();
        let (last, usb) = (&s["last_run"], &s["destinations"][0]);
        assert_eq!(
            (&last["command"], &last["exit"]),
            (&serde_json::json!("external"), &serde_json::json!(0)),
            "{what}: {last:#}"
        );
        assert_eq!(
            usb["newest"]["stamp"],
            serde_json::json!(ours[0]),
            "{what}: {usb:#}"
        );
        assert!(usb["last_failed"].is_null(), "{what}: {usb:#}");
        let text = t.cmd().args(["status"]).status(0).stdout;
        assert!(
            text.contains("last run: external finished"),
            "{what}: {text}"
        );
        assert!(
            !text.contains(&theirs[0]) && !text.contains("FAILED"),
            "{what}: {text}"
        );
        t.cmd().args(["status", "--check"]).status(0);
        let page = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
        let none_failed = r#"<i class="failed"></i>failed 0</span>"#;
        assert!(
            !page.contains(&theirs[0]) && page.contains(none_failed),
            "{what}: {page}"
        );
    };
    ours_only(&t, "a failed collect of A's");

    // Root only: A's `usb` refuses A's next backup (a full tmpfs); its line names a destination `usb`.
    if !testkit::require_root() {
        return;
    }
    fs::rename(t.path("a-docs.away"), t.path("a-docs")).unwrap();
    t.write("a-docs/big", crate::fixtures::drive::content(8 << 20, 1));
    fs::rename(t.path("usb-a"), t.path("usb-a.full")).unwrap();
    let full = crate::fixtures::mounted::Mounted::tmpfs(&t.path("usb-a"), "4m");
    with_a().args(["collect"]).status(0);
    let out = with_a().args(["external"]).output();
    assert_ne!(out.code, 0, "{}", out.stderr);
    let log = fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap();
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.contains(r#""name":"usb""#) && !line.contains(r#""status":"written""#),
        "{line}"
    );
    ours_only(&t, "a refused backup of A's");
    drop(full);
}

/// Config A's `restore --verify` finds A's backup on A's `usb` damaged; B's `usb` holds a backup of the same stamp
/// (both configs' runs started in the same second: here a copy), intact. The damage is A's: B's `status` and
/// `--check` never call B's backup damaged, and B's next external builds on it. Before: B's `usb` had "0 restore points (and 1
/// damaged backup)" and `--check` exited 1 on it, as the damage records of the shared state directory were told
/// apart by the destination's name and the stamp only.
#[test]
fn another_configs_damaged_backup_of_the_same_stamp_is_not_this_configs() {
    let (t, a) = two_configs_of_one_user();
    let ours = crate::fixtures::drive::backups(&t.path("usb-b"));
    let copied = std::process::Command::new("cp")
        .args([
            "-a".as_ref(),
            t.path("usb-b/.").as_os_str(),
            t.path("usb-a").as_os_str(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    let tar = t.path("usb-a/backups").join(&ours[0]).join("docs.tar");
    let mut bytes = fs::read(&tar).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&tar, bytes).unwrap();
    let out = as_config(&t, &a)
        .args([
            "restore", "--source", "external", "--verify", "--date", &ours[0],
        ])
        .status(1);
    out.stdout_has("DAMAGED");

    let s: serde_json::Value = t.cmd().args(["--json", "status"]).output().json();
    let usb = &s["destinations"][0];
    assert_eq!(
        usb["newest"]["stamp"],
        serde_json::json!(ours[0]),
        "{usb:#}"
    );
    t.cmd()
        .args(["status", "--check"])
        .status(0)
        .stdout_lacks("DAMAGED");
    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!("incremental on {} (chain 2 of 7)", ours[0]));
}
