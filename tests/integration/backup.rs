//! `dbackup backup` end to end without root: the schedule decided from the backups' metadata (with the hidden `--now`),
//! both phases under one lock onto a plain directory destination (`require_mount: false`), a missing drive, `manual`,
//! failed sets, the dry run, and every notification event through a command sink, an HTTP server on 127.0.0.1 and
//! failing sinks. The exFAT T9 versions are in `loopdev_backup.rs`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{Local, TimeDelta};
use dbackup::{
    ArchiveKind, BackupPlan, BackupReport, DeliveryOutcome, DriveBackup, EventKind, ExternalAction,
    list_drive_backups, read_runlog, read_snapshot_meta,
};

use crate::fixtures::backup::{
    ALL_EVENTS, DEMO_SETS, demo_home, kinds, notifications, received, sink_script,
};
use crate::fixtures::snapshots;
use crate::harness::{self, Output, Test};

fn report(out: &Output) -> BackupReport {
    out.json()
}

/// `dbackup --json backup <args>` expecting `code`.
#[track_caller]
fn backup(t: &Test, args: &[&str], code: i32) -> BackupReport {
    report(&t.cmd().args(["--json", "backup"]).args(args).status(code))
}

/// An RFC 3339 time `days` from now.
fn days_from_now(days: i64) -> String {
    (Local::now().fixed_offset() + TimeDelta::days(days)).to_rfc3339()
}

/// The verified backups in a destination directory, oldest first.
fn drive_backups(dest: &Path) -> Vec<DriveBackup> {
    list_drive_backups(&dest.join("backups"))
        .unwrap()
        .verified()
        .cloned()
        .collect()
}

/// A config with the demo's sets, a plain-directory destination at `{tmp}/drive` (absent unless created), the given
/// `schedule.external`, and `notifications`.
/// The demo home with every event sent to the sink, backing up to the plain directory `<tmp>/drive` on `external`'s
/// schedule; the directory is not made (the drive is absent until a test makes it).
fn demo_world(external: &str) -> Test {
    let t = Test::new();
    demo_home(&t);
    let n = notifications(&t, ALL_EVENTS, 0);
    let c = demo_config(&t, external, &n);
    t.config(&c)
}

/// The demo home and a config of the demo's sets, then `more` (the keys after `backup_sets`, each with its leading
/// comma, made for the test).
fn demo_sets_world(more: impl FnOnce(&Test) -> String) -> Test {
    let t = Test::new();
    demo_home(&t);
    let more = more(&t);
    let c = format!(r#"{{ "backup_root": "{{root}}", "backup_sets": [ {DEMO_SETS} ]{more} }}"#);
    t.config(&c)
}

fn demo_config(t: &Test, external: &str, notifications: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {DEMO_SETS} ],
             "schedule": {{ "external": "{external}" }},
             "destinations": [ {{ "name": "drive", "path": "{}", "require_mount": false }} ],
             {notifications} }}"#,
        t.path("drive").display()
    )
}

#[test]
fn the_schedule_decides_from_the_backups_metadata() {
    let t = demo_world("weekly");
    fs::create_dir_all(t.path("drive")).unwrap();

    // The first run: everything is due; a first snapshot copies everything, so contents are not compared.
    let first = backup(&t, &[], 0);
    let sets: Vec<(&str, bool, bool)> = first
        .due
        .sets
        .iter()
        .map(|s| (s.set.as_str(), s.collect, s.full))
        .collect();
    assert_eq!(sets, [("data", true, false), ("config", true, false)]);
    assert_eq!(first.due.external.action, ExternalAction::Write);
    assert_eq!(first.due.external.targets, ["drive"]);
    assert_eq!(first.external.len(), 1);
    let on_drive = drive_backups(&t.path("drive"));
    assert_eq!(on_drive.len(), 1);
    let meta = on_drive[0].meta.as_ref().unwrap();
    assert_eq!(
        meta.sets
            .iter()
            .map(|s| s.snapshot.clone())
            .collect::<Vec<_>>(),
        [
            snapshots(&t, "data")[0].clone(),
            snapshots(&t, "config")[0].clone()
        ]
    );
    assert_eq!(kinds(&received(&t)), [EventKind::Success]);

    // At once again: nothing is due, nothing is written, no event.
    let again = backup(&t, &[], 0);
    assert!(again.due.sets.iter().all(|s| !s.collect), "{:?}", again.due);
    assert_eq!(again.due.external.action, ExternalAction::NotDue);
    assert!(again.collect.is_empty() && again.external.is_empty());
    assert_eq!(snapshots(&t, "data").len(), 1);
    assert_eq!(received(&t).len(), 1, "nothing ran: no success event");

    // Two days later: collect, by size and mtime (the first snapshot's contents count as compared); no external.
    let later = backup(&t, &["--now", &days_from_now(2)], 0);
    assert!(later.due.sets.iter().all(|s| s.collect && !s.full));
    assert!(
        later.due.sets[0]
            .reason
            .contains("is 2 days old; schedule.incremental is daily"),
        "{}",
        later.due.sets[0].reason
    );
    assert_eq!(later.due.external.action, ExternalAction::NotDue);
    assert_eq!(snapshots(&t, "data").len(), 2);
    let newest = snapshots(&t, "data").pop().unwrap();
    let m = read_snapshot_meta(&t.root().join(format!("{newest}.json"))).unwrap();
    assert!(!m.full && !m.rsync.argv.contains(&"--checksum".to_string()));

    // Eight days later: collect compares contents (weekly full), and the external phase is due again.
    let week = backup(&t, &["--now", &days_from_now(8)], 0);
    assert!(week.due.sets.iter().all(|s| s.collect && s.full));
    assert!(
        week.due.sets[0]
            .full_reason
            .as_deref()
            .unwrap()
            .starts_with("contents were last compared 8 days ago"),
        "{:?}",
        week.due.sets[0].full_reason
    );
    assert_eq!(week.due.external.action, ExternalAction::Write);
    let newest = snapshots(&t, "data").pop().unwrap();
    let m = read_snapshot_meta(&t.root().join(format!("{newest}.json"))).unwrap();
    assert!(m.full && m.rsync.argv.contains(&"--checksum".to_string()));
    assert_eq!(drive_backups(&t.path("drive")).len(), 2);

    // --force: both phases now, whatever the schedule says.
    let forced = backup(&t, &["--force"], 0);
    assert!(forced.due.forced && forced.due.sets.iter().all(|s| s.collect));
    assert_eq!(forced.external.len(), 1);
    assert_eq!(drive_backups(&t.path("drive")).len(), 3);

    // Every run is in the run log.
    let log = read_runlog(&t.path("state/dbackup")).unwrap();
    let runs: Vec<(&str, u8)> = log.iter().map(|r| (r.command.as_str(), r.exit)).collect();
    assert_eq!(runs, [("backup", 0); 5]);
}

#[test]
fn without_the_drive_it_collects_exits_0_and_raises_missing_media() {
    let t = demo_world("weekly");
    let out = t.cmd().args(["--json", "backup"]).status(0);
    let r = report(&out);
    assert_eq!(r.due.external.action, ExternalAction::MissingMedia);
    assert!(r.external.is_empty());
    assert_eq!(snapshots(&t, "data").len(), 1);
    assert_eq!(snapshots(&t, "config").len(), 1);
    assert!(
        !t.path("drive").exists(),
        "nothing was created for the drive"
    );
    out.stderr_has("external: no drive present: no external backup yet; schedule.external is weekly; but no destination is present");

    let events = received(&t);
    assert_eq!(
        kinds(&events),
        // The external backup overdue for the same missing drive is told in missing_media, not a second event.
        [EventKind::Success, EventKind::MissingMedia]
    );
    let missing = &events[1];
    assert!(
        missing
            .summary
            .ends_with("the external backup is due but no drive is present (drive)"),
        "{}",
        missing.summary
    );
    assert!(
        missing.details.contains(&format!(
            "drive: not mounted: {} does not exist; plug in the drive",
            t.path("drive").display()
        )),
        "{}",
        missing.details
    );
    assert!(
        missing
            .details
            .ends_with("\nno external backup yet, schedule is weekly"),
        "{}",
        missing.details
    );

    // With other warnings the exit is 3, and missing_media is still raised.
    fs::remove_file(t.home().join("env.sh")).unwrap();
    let r = backup(&t, &["--force"], 3);
    assert!(r.missing_media.is_some());
    assert_eq!(
        kinds(&received(&t)[2..]),
        [EventKind::Warning, EventKind::MissingMedia]
    );
}

#[test]
fn manual_never_looks_at_the_drive() {
    let t = demo_world("manual");
    let drive = t.path("drive");
    fs::create_dir_all(&drive).unwrap();
    let before = fs::metadata(&drive).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let r = backup(&t, &[], 0);
    assert_eq!(r.due.external.action, ExternalAction::Manual);
    assert!(r.due.external.destinations.is_empty());
    assert_eq!(snapshots(&t, "data").len(), 1);
    assert!(
        fs::read_dir(&drive).unwrap().next().is_none(),
        "nothing on the drive"
    );
    assert_eq!(
        fs::metadata(&drive).unwrap().modified().unwrap(),
        before,
        "not even detection's probe file was created there"
    );
    assert_eq!(kinds(&received(&t)), [EventKind::Success]);
    // The dry run does not look either.
    let plan: BackupPlan = t.run_json(&["--dry-run", "backup", "--now", &days_from_now(30)]);
    assert_eq!(plan.destinations[0].present, None);
    assert_eq!(fs::metadata(&drive).unwrap().modified().unwrap(), before);
    // `dbackup external` is how a manual schedule writes.
    t.cmd().args(["external"]).status(0);
    assert_eq!(drive_backups(&drive).len(), 1);
}

#[test]
fn a_failed_set_does_not_stop_the_others_and_is_never_exported() {
    let t = demo_world("always");
    fs::create_dir_all(t.path("drive")).unwrap();
    let first = backup(&t, &[], 0);
    let data_1 = first.collect[0].sets[0].snapshot.clone().unwrap();
    assert!(data_1.starts_with("data-"));

    // ~/data now looks like an unmounted disk: the shrink guard refuses the set; config goes on.
    for e in fs::read_dir(t.path("data")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    t.write(
        "home/.config/app/settings.json",
        "{ \"theme\": \"light\" }\n",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let out = t.cmd().args(["--json", "backup", "--force"]).status(1);
    let r = report(&out);
    let statuses: Vec<(String, String)> = r
        .collect
        .iter()
        .flat_map(|c| &c.sets)
        .map(|s| {
            (
                s.set.clone(),
                serde_json::to_value(s.status)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("data".to_string(), "refused".to_string()),
            ("config".to_string(), "complete".to_string())
        ]
    );
    assert_eq!(
        snapshots(&t, "data"),
        std::slice::from_ref(&data_1),
        "nothing promoted"
    );

    // The drive got the new config snapshot and the older, complete data snapshot: never a failed one.
    let backups = drive_backups(&t.path("drive"));
    assert_eq!(backups.len(), 2);
    let sets: Vec<(String, String)> = backups[1]
        .meta
        .as_ref()
        .unwrap()
        .sets
        .iter()
        .map(|s| (s.set.clone(), s.snapshot.clone()))
        .collect();
    assert_eq!(
        sets,
        [
            ("data".to_string(), data_1),
            ("config".to_string(), snapshots(&t, "config")[1].clone())
        ]
    );
    let events = received(&t);
    assert_eq!(kinds(&events[1..]), [EventKind::Failure]);
    assert!(
        events[1]
            .summary
            .contains("FAILED: collect data: refused: "),
        "{}",
        events[1].summary
    );
    let log = read_runlog(&t.path("state/dbackup")).unwrap();
    assert_eq!(log.last().unwrap().exit, 1);
    assert!(
        log.last()
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .starts_with("collect data: refused: "),
        "{:?}",
        log.last().unwrap().error
    );
}

/// The demo's sets with `schedule.external: always` to the plain directory `<tmp>/drive`, which is there.
fn always_to_a_present_drive() -> Test {
    let t = demo_sets_world(|t| {
        format!(
            r#", "schedule": {{ "external": "always" }},
             "destinations": [ {{ "name": "drive", "path": "{}", "require_mount": false }} ]"#,
            t.path("drive").display()
        )
    });
    fs::create_dir_all(t.path("drive")).unwrap();
    t
}

#[test]
fn an_unchanged_always_run_does_not_write_the_same_snapshots_again() {
    let t = always_to_a_present_drive();
    backup(&t, &[], 0);
    // Collect is not due (daily), the drive already holds the newest snapshots: nothing to write.
    let r = backup(&t, &[], 0);
    assert!(r.collect.is_empty() && r.external.is_empty());
    assert_eq!(r.external_skipped.len(), 1, "{r:?}");
    assert!(
        r.external_skipped[0].contains("already holds these snapshots"),
        "{}",
        r.external_skipped[0]
    );
    assert_eq!(drive_backups(&t.path("drive")).len(), 1);
}

/// A snapshot dated in the future (made while the clock was wrong, then set right) is not the newest: `external`
/// exports, `backup` compares the drive with, `restore` restores by default, and `status` shows the newest snapshot
/// made since. Before: the
/// future-dated one, whose contents are older, was exported, and every later `backup` found the drive already
/// holding it and wrote nothing new until the clock reached its date.
#[test]
fn a_snapshot_dated_in_the_future_is_not_the_newest() {
    let t = always_to_a_present_drive();
    t.cmd().args(["collect"]).status(0);
    let old = snapshots(&t, "data")[0].clone();
    let future = "data-2099-01-01-000000";
    harness::run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(t.root().join(&old))
            .arg(t.root().join(future)),
    );
    let mut meta = read_snapshot_meta(&t.root().join(format!("{old}.json"))).unwrap();
    meta.name = future.into();
    meta.started = chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z").unwrap();
    meta.finished = meta.started;
    fs::write(
        t.root().join(format!("{future}.json")),
        serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    // Collected after the clock was set right: the newest, though its name sorts before the future one.
    fs::write(t.path("data/projects/p0/README.md"), "changed").unwrap();
    let r: dbackup::CollectReport = t.run_json(&["collect", "--set", "data"]);
    let newest = r.sets[0].snapshot.clone().unwrap();

    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!("set data: {newest}:"));
    let out = t
        .cmd()
        .args([
            "--dry-run",
            "restore",
            "--path",
            "~/data/projects/p0/README.md",
            "--target",
        ])
        .args([t.path("restored")])
        .status(0);
    let from = format!("from {}", t.root().join(&newest).display());
    assert!(
        out.stdout.contains(&from),
        "restore's newest is {newest}:\n{}",
        out.stdout
    );
    let status: dbackup::StatusReport = t.run_json(&["status"]);
    let data = status.sets.iter().find(|s| s.set == "data").unwrap();
    assert_eq!(data.newest.as_ref().unwrap().name, newest);
    let r = backup(&t, &[], 0);
    assert!(
        r.collect
            .iter()
            .all(|c| c.sets.iter().all(|s| s.set != "data")),
        "data is not due: {r:?}"
    );
    let written = &drive_backups(&t.path("drive"))[0];
    let data = written
        .meta
        .as_ref()
        .unwrap()
        .sets
        .iter()
        .find(|s| s.set == "data")
        .unwrap();
    assert_eq!(data.snapshot, newest);
    assert!(
        t.root().join(future).is_dir(),
        "kept, as retention keeps what is dated in the future"
    );
}

/// `backup --now` decides the drive's full or incremental at that time, as `external --now` does: a second run at
/// once extends the chain with an incremental, a third 40 days ahead writes a full (the chain's full is then older
/// than `full_after_days`, 30). (Before: `backup` passed no time to the external phase, which chose by the real
/// clock and wrote a third incremental.)
#[test]
fn backup_now_decides_full_or_incremental_at_that_time() {
    let t = demo_world("weekly");
    fs::create_dir_all(t.path("drive")).unwrap();
    backup(&t, &[], 0);
    backup(&t, &["--force"], 0);
    // By the real clock the next would extend the chain.
    let plan = t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    assert!(plan.contains("incremental on "), "{plan}");
    backup(&t, &["--force", "--now", &days_from_now(40)], 0);
    let kinds: Vec<Vec<ArchiveKind>> = drive_backups(&t.path("drive"))
        .iter()
        .map(|b| {
            b.meta
                .as_ref()
                .unwrap()
                .sets
                .iter()
                .map(|s| s.kind)
                .collect()
        })
        .collect();
    use ArchiveKind::{Full, Incremental};
    assert_eq!(
        kinds,
        [
            vec![Full, Full],
            vec![Incremental, Incremental],
            vec![Full, Full]
        ]
    );
}

#[test]
fn the_dry_run_says_what_would_run_and_why_and_changes_nothing() {
    let t = demo_world("weekly");
    fs::create_dir_all(t.path("drive")).unwrap();
    let plan: BackupPlan = t.run_json(&["--dry-run", "backup"]);
    assert!(plan.due.sets.iter().all(|s| s.collect));
    assert_eq!(plan.collect.len(), 1);
    assert_eq!(plan.collect[0].sets.len(), 2);
    assert_eq!(plan.due.external.action, ExternalAction::Write);
    assert!(plan.destinations[0].target && plan.destinations[0].present == Some(true));
    assert!(!t.root().exists(), "a dry run creates nothing");
    assert!(!t.path("state/dbackup").exists(), "nor logs");
    assert!(received(&t).is_empty(), "nor notifies");

    let human = t.cmd().args(["--dry-run", "backup"]).status(0).stdout;
    let expected_start = format!(
        "  collect data: yes, size and mtime: no snapshot yet\n    contents: nothing to compare with: this snapshot copies every file\n  collect config: yes, size and mtime: no snapshot yet\n    contents: nothing to compare with: this snapshot copies every file\n  external: yes, to drive: no external backup yet; schedule.external is weekly\n    drive (would be written): present: {} (",
        t.path("drive").display()
    );
    assert!(human.contains(&expected_start), "{human}");
    assert!(human.contains("\ncollect:\nbackup root "), "{human}");
}

#[test]
fn each_event_kind_reaches_the_command_sink() {
    // warning (a missing source), missing_media, overdue (no external backup yet).
    let t = Test::new();
    demo_home(&t);
    let n = notifications(&t, ALL_EVENTS, 0);
    let sets = r#"{ "name": "ok", "sources": ["~/.config", "~/not-there"] }"#;
    let c = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {sets} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/media/T9" }} ], {n} }}"#
    );
    let t = t.config(&c);
    backup(&t, &[], 3);
    // failure (every source missing), low_disk (below 100% free), overdue (a set without any snapshot).
    let n = notifications(&t, ALL_EVENTS, 100);
    let sets = r#"{ "name": "ok", "sources": ["~/.config"] }, { "name": "broken", "sources": ["~/gone"] }"#;
    let c = format!(r#"{{ "backup_root": "{{root}}", "backup_sets": [ {sets} ], {n} }}"#);
    let t = t.config(&c);
    backup(&t, &["--force"], 1);
    // success.
    let c = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "ok", "sources": ["~/.config"] }} ], {} }}"#,
        notifications(&t, ALL_EVENTS, 0)
    );
    let t = t.config(&c);
    backup(&t, &["--force"], 0);

    let events = received(&t);
    assert_eq!(
        kinds(&events),
        [
            EventKind::Warning,
            EventKind::MissingMedia,
            EventKind::Overdue,
            EventKind::Failure,
            EventKind::LowDisk,
            EventKind::Overdue,
            EventKind::Success,
        ]
    );
    let summaries: Vec<&str> = events.iter().map(|e| e.summary.as_str()).collect();
    let host = &events[0].host;
    let expect = [
        format!("dbackup backup on {host} finished with warnings: collect ok: ok-"),
        format!(
            "dbackup backup on {host}: the external backup is due but no drive is present (T9)"
        ),
        // A snapshot without one of its sources is incomplete: the set has no complete snapshot, which is overdue.
        format!("dbackup backup on {host}: set ok has no complete snapshot (the newest, ok-"),
        format!(
            "dbackup backup on {host} FAILED: collect broken: refused: every source of set broken is missing (~/gone); nothing to back up"
        ),
        format!("dbackup backup on {host}: low disk: the backup root's filesystem ("),
        format!("dbackup backup on {host}: set broken has no snapshot yet, schedule is daily"),
        format!("dbackup backup on {host}: ok: collected ok"),
    ];
    for (got, want) in summaries.iter().zip(&expect) {
        assert!(got.starts_with(want.as_str()), "got  {got}\nwant {want}...");
    }
    assert_eq!(
        events.iter().map(|e| e.exit).collect::<Vec<_>>(),
        [Some(3), None, None, Some(1), None, None, Some(0)]
    );
    assert!(
        events[4]
            .details
            .contains("below notifications.low_disk_percent (100%)"),
        "{}",
        events[4].details
    );
    // The external backup overdue for the missing drive is told in missing_media, not in the overdue event.
    assert!(
        events[1]
            .details
            .ends_with("\nno external backup yet, schedule is weekly"),
        "{}",
        events[1].details
    );
    assert!(
        !events[2].details.contains("no external backup yet"),
        "{}",
        events[2].details
    );
}

#[test]
fn the_events_filter_decides_what_is_sent() {
    // The default events: no success.
    let t = demo_sets_world(|t| {
        format!(
            r#", "notifications": {{ "command": ["{}"], "low_disk_percent": 0 }}"#,
            sink_script(t).display()
        )
    });
    backup(&t, &[], 0);
    assert!(received(&t).is_empty());
}

#[test]
fn a_failing_sink_does_not_change_the_exit_code() {
    let port = testkit::objstore::closed_port();
    let t = demo_sets_world(|_| {
        format!(
            r#", "notifications": {{ "events": {ALL_EVENTS}, "desktop": true, "low_disk_percent": 0,
              "command": ["sh", "-c", "echo cannot mail >&2; exit 7"],
              "http": "http://127.0.0.1:{port}/topic" }}"#
        )
    });
    let out = t.cmd().args(["--json", "backup"]).status(0);
    let r = report(&out);
    let got: Vec<(&str, DeliveryOutcome)> = r
        .notifications
        .iter()
        .map(|d| (d.sink.as_str(), d.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("desktop", DeliveryOutcome::Skipped),
            ("command", DeliveryOutcome::Failed),
            ("http", DeliveryOutcome::Failed)
        ]
    );
    out.stderr_has("dbackup: warning: notification success could not be sent (command sink): sh -c 'echo cannot mail >&2; exit 7': exited with 7: cannot mail");
    out.stderr_has(&format!(
            "dbackup: warning: notification success could not be sent (http sink): POST to http://127.0.0.1:{port}/***: "
        ));
    // Logged with the run.
    let log = read_runlog(&t.path("state/dbackup")).unwrap();
    let logged: BackupReport = serde_json::from_value(log[0].sets.clone()).unwrap();
    assert_eq!(logged.notifications, r.notifications);
    assert_eq!(log[0].exit, 0);

    // A run with warnings keeps its 3.
    fs::remove_file(t.home().join("env.sh")).unwrap();
    backup(&t, &["--force"], 3);
}

/// A one-request HTTP server on 127.0.0.1; returns the URL and the request's head and body.
fn http_server() -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dbackup", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        answer_request(stream, |head, body| {
            let _ = tx.send((head, String::from_utf8(body).unwrap()));
        });
    });
    (url, rx)
}

/// Reads one HTTP request from `stream`, hands its head (its request line and headers, each ending in CRLF) and body
/// to `keep`, then answers it 200: once dbackup has its answer, the request is kept (kept after the answer, it could
/// be missing when the test looked right after the run).
pub(crate) fn answer_request(stream: std::net::TcpStream, keep: impl FnOnce(String, Vec<u8>)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    keep(head, body);
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
}

#[test]
fn the_http_sink_posts_ntfy_style() {
    let (url, rx) = http_server();
    let t = demo_sets_world(|_| {
        format!(r#", "notifications": {{ "events": ["success"], "http": "{url}" }}"#)
    });
    let r = backup(&t, &[], 0);
    assert_eq!(r.notifications[0].outcome, DeliveryOutcome::Sent);
    let (head, body) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(head.starts_with("POST /dbackup HTTP/1.1\r\n"), "{head}");
    let host = dbackup::hostname();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("title: dbackup on {host}: success\r\n")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-dbackup-event: success\r\n")
    );
    assert!(
        body.starts_with(&format!(
            "dbackup backup on {host}: ok: collected data, config\n\ncollect data: data-"
        )),
        "{body}"
    );
}

#[test]
fn another_run_holding_the_lock_is_exit_4_without_a_failure_event() {
    let t = demo_sets_world(|t| format!(", {}", notifications(t, ALL_EVENTS, 0)));
    fs::create_dir_all(t.root()).unwrap();
    let lock = dbackup::RunLock::acquire(&t.root()).unwrap();
    let out = t.cmd().args(["backup"]).status(4);
    out.stderr_has("another dbackup run (pid");
    assert!(received(&t).is_empty());
    drop(lock);
    let log = read_runlog(&t.path("state/dbackup")).unwrap();
    assert_eq!(log[0].exit, 4);
}

#[test]
fn under_systemd_the_summary_is_plain_lines_with_priorities() {
    let t = Test::new();
    demo_home(&t);
    let c = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {DEMO_SETS}, {{ "name": "gone", "sources": ["~/gone"] }} ] }}"#
    );
    let t = t.config(&c);
    let out = t
        .cmd()
        .env("JOURNAL_STREAM", "8:12345")
        .args(["backup"])
        .status(1);
    let summary: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        summary[0].starts_with("<6>collect data: data-"),
        "{summary:?}"
    );
    assert!(
        summary[1].starts_with("<6>collect config: config-"),
        "{summary:?}"
    );
    assert!(
        summary[2].starts_with("<3>collect gone: refused: every source of set gone is missing"),
        "{summary:?}"
    );
    assert_eq!(summary.last().unwrap(), &"<3>backup: FAILED (exit 1)");
    assert!(!out.stderr.contains('\u{1b}'), "no escape sequences");
}

#[test]
fn backup_answers_to_its_seed_name() {
    let t = demo_sets_world(|_| String::new());
    let out = t.cmd().argv0("backup").args(["--json"]).status(0);
    let r: BackupReport = out.json();
    assert_eq!(r.collect[0].sets.len(), 2);
}

/// `--dry-run backup` plans what `backup` does with a drive whose newest backup already holds these snapshots: not
/// written, saying why (text and `--json`). Before: the plan said "drive (would be written)", and the run wrote
/// nothing.
#[test]
fn the_dry_run_plans_the_skip_of_a_drive_that_holds_these_snapshots() {
    let t = always_to_a_present_drive();
    backup(&t, &[], 0);
    let newest = drive_backups(&t.path("drive"))[0].name.clone();
    let says = format!("its newest backup {newest} already holds these snapshots (");
    let dry = t.cmd().args(["--dry-run", "backup"]).status(0);
    dry.stdout_has(&format!(
        "    drive: present: {}",
        t.path("drive").display()
    ));
    dry.stdout_has(&format!("      {says}"));
    assert!(!dry.stdout.contains("would be written"), "{}", dry.stdout);
    let plan: serde_json::Value = t.run_json(&["--dry-run", "backup"]);
    let d = &plan["destinations"][0];
    assert_eq!(d["target"], false, "{plan:#}");
    assert!(d["note"].as_str().unwrap().starts_with(&says), "{plan:#}");

    let r = backup(&t, &[], 0);
    assert!(r.external.is_empty(), "{r:?}");
    assert!(
        r.external_skipped[0].starts_with(&format!("drive: {says}")),
        "{r:?}"
    );
}

/// Every target skipped (its newest good backup already holds these snapshots): the dry run's summary line says
/// nothing new is written there, as the destination's own line does, in text and in `--json` (`writes` empty), and
/// the dry run exits as the run does. Before: "external: yes, to drive" above "drive: ... not written".
#[test]
fn the_dry_run_summary_agrees_when_every_target_is_skipped() {
    let t = always_to_a_present_drive();
    backup(&t, &[], 0);
    let dry = t.cmd().args(["--dry-run", "backup"]).status(0);
    let external: Vec<&str> = (dry.stdout.lines())
        .skip_while(|l| !l.starts_with("  external:"))
        .take_while(|l| !l.is_empty())
        .collect();
    insta::with_settings!({ filters => vec![
        (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
        (r"present: \[TMP\]/drive \(.*", "present: [TMP]/drive ([FILESYSTEM])"),
        (r"\(config-\S+, data-\S+\)", "([SNAPSHOTS])"),
    ]}, {
        insta::assert_snapshot!("every_target_skipped_dry_run", t.without_tmp(&external.join("\n")));
    });
    let plan: BackupPlan = t
        .cmd()
        .args(["--json", "--dry-run", "backup"])
        .status(0)
        .json();
    assert_eq!(plan.due.external.action, ExternalAction::Write, "{plan:?}");
    assert!(plan.writes.is_empty(), "{plan:?}");
    assert!(!plan.destinations[0].target, "{plan:?}");
    let r = backup(&t, &[], 0);
    assert!(r.external.is_empty(), "{r:?}");
}

/// A drive whose newest backup `restore --verify` found damaged (one byte of its archive flipped, the size kept) is no
/// restore point: the next `backup` writes these snapshots there again, though they are unchanged, and its summary
/// says why in one line; the dry run plans the same. The fresh backup holds them: the run after writes nothing.
/// Before: written with no word of why (nor in the plan), as if the damaged backup were not there.
#[test]
fn a_drive_whose_newest_backup_was_found_damaged_is_written_again_saying_why() {
    let t = always_to_a_present_drive();
    backup(&t, &[], 0);
    let first = drive_backups(&t.path("drive"))[0].name.clone();
    harness::flip_middle_byte(&t.path("drive/backups").join(&first).join("data.tar"));
    t.restore_from_drive()
        .args(["--date", &first, "--verify"])
        .status(1);
    let why =
        format!("its newest backup {first} is damaged, no restore point: writing a fresh one");
    let dry = t.cmd().args(["--dry-run", "backup"]).status(0);
    dry.stdout_has("    drive (would be written): present: ");
    dry.stdout_has(&format!("      {why}\n"));

    let out = t.cmd().args(["--json", "backup"]).status(0);
    out.stderr_has(&format!("external drive: {why}\n"));
    let r: serde_json::Value = out.json();
    assert_eq!(
        r["external_rewritten"],
        serde_json::json!([format!("drive: {why}")])
    );
    assert_eq!(
        r["external"][0]["destinations"][0]["status"], "written",
        "{r:#}"
    );
    let backups = drive_backups(&t.path("drive"));
    assert_eq!(backups.len(), 2, "{backups:?}");
    let r: serde_json::Value = t.run_json(&["backup"]);
    assert_eq!(r["external"], serde_json::json!([]), "{r:#}");
    let skipped = r["external_skipped"][0].as_str().unwrap();
    assert!(
        skipped.starts_with(&format!(
            "drive: its newest backup {} already holds",
            backups[1].name
        )),
        "{skipped}"
    );
    assert!(r.get("external_rewritten").is_none(), "{r:#}");
}
