//! `dbackup backup` on the demo with an emulated Samsung T9 (exFAT on a loop device, mounted by mount.exfat-fuse):
//! present, it collects and writes a verified external backup; unplugged, it collects, exits 0 and raises
//! `missing_media`; with `"external": "manual"` it never touches the drive. Root only (skips with a message otherwise).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use dbackup::{
    BACKUP_META_FILE, BackupReport, DestinationStatus, EventKind, ExternalAction, KnownFrom,
    LATEST_FILE, StatusReport, list_drive_backups, read_backup_meta,
};
use testkit::loopdev::{self, Fs};

use crate::fixtures::backup::{ALL_EVENTS, DEMO_SETS, demo_home, kinds, notifications, received};
use crate::fixtures::drive::assert_sums_pass;
use crate::fixtures::snapshots;
use crate::harness::Test;

const MIB: u64 = 1 << 20;

/// The demo's config with the T9 as its destination (identified by its label), `schedule.external`, and every event
/// going to the recording sink.
/// The demo home with every event sent to the sink, backing up to the T9 at `mp` on `external`'s schedule.
fn demo_on_t9(mp: &Path, external: &str) -> Test {
    let t = Test::new();
    demo_home(&t);
    let c = demo_with_t9(&t, mp, external);
    t.config(&c)
}

fn demo_with_t9(t: &Test, mp: &Path, external: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {DEMO_SETS} ],
             "schedule": {{ "external": "{external}" }},
             "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9" }} ],
             {} }}"#,
        mp.display(),
        notifications(t, ALL_EVENTS, 0)
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn demo_backup_with_the_t9_present_collects_and_writes_a_verified_backup() {
    let Some((_t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 128 * MIB) else {
        return;
    };
    let t = demo_on_t9(&mp, "weekly");

    let r: BackupReport = t.cmd().args(["--json", "backup"]).status(0).json();
    assert!(r.due.sets.iter().all(|s| s.collect));
    assert_eq!(r.due.external.action, ExternalAction::Write);
    assert_eq!(r.external.len(), 1);
    let d = &r.external[0].destinations[0];
    assert_eq!(d.status, DestinationStatus::Written, "{:?}", d.error);
    let stamp = d.backup.clone().unwrap();

    // The drive holds one verified backup of the snapshots just made; `sha256sum -c` agrees.
    let dir = mp.join("backups").join(&stamp);
    let meta = read_backup_meta(&dir.join(BACKUP_META_FILE)).unwrap();
    assert!(meta.verified);
    assert_eq!(meta.filesystem.fs_type, "exfat");
    let held: Vec<(String, String)> = meta
        .sets
        .iter()
        .map(|s| (s.set.clone(), s.snapshot.clone()))
        .collect();
    assert_eq!(
        held,
        [
            ("data".to_string(), snapshots(&t, "data")[0].clone()),
            ("config".to_string(), snapshots(&t, "config")[0].clone())
        ]
    );
    assert_sums_pass(&dir);
    assert_eq!(
        fs::read_to_string(mp.join("backups").join(LATEST_FILE)).unwrap(),
        format!("{stamp}\n")
    );

    let events = received(&t);
    assert_eq!(kinds(&events), [EventKind::Success]);
    assert!(
        events[0].summary.ends_with(&format!(
            "ok: collected data, config; wrote backup {stamp} to T9"
        )),
        "{}",
        events[0].summary
    );

    // status sees it all, from metadata.
    let s: StatusReport = t.cmd().args(["--json", "status"]).status(0).json();
    assert!(s.ok, "{s:#?}");
    let t9s = &s.destinations[0];
    assert!(t9s.present);
    assert_eq!(t9s.fs_type.as_deref(), Some("exfat"));
    let newest = t9s.newest.as_ref().unwrap();
    assert_eq!(
        (newest.stamp.as_str(), newest.known_from),
        (stamp.as_str(), KnownFrom::Drive)
    );
    assert!(newest.age_seconds < 600);
    assert_eq!(s.last_run.as_ref().unwrap().command, "backup");
    assert_eq!(s.due.external.action, ExternalAction::NotDue);
}

#[test]
fn demo_backup_with_the_t9_unplugged_collects_exits_0_and_raises_missing_media() {
    let Some((t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 128 * MIB) else {
        return;
    };
    t9.unmount();
    let t = demo_on_t9(&mp, "weekly");

    let out = t.cmd().args(["--json", "backup"]).status(0);
    let r: BackupReport = out.json();
    assert_eq!(r.due.external.action, ExternalAction::MissingMedia);
    assert!(r.external.is_empty());
    assert_eq!(snapshots(&t, "data").len(), 1);
    assert_eq!(snapshots(&t, "config").len(), 1);
    assert!(
        names(&mp).is_empty(),
        "nothing written into the mount point"
    );

    let events = received(&t);
    assert_eq!(
        kinds(&events),
        // The external backup overdue for the same missing drive is told in missing_media, not a second event.
        [EventKind::Success, EventKind::MissingMedia]
    );
    assert!(
        events[1].details.contains(&format!(
            "T9: not mounted: {} is an empty directory on ",
            mp.display()
        )),
        "{}",
        events[1].details
    );

    // status says why the drive is absent.
    let s: StatusReport = t.cmd().args(["--json", "status"]).status(0).json();
    assert_eq!(
        s.destinations[0].absent_kind.as_deref(),
        Some("not_mounted")
    );
    assert!(s.destinations[0].newest.is_none());

    // Plugged in again: the next run writes the backup that was due (collect is not due again yet).
    t9.mount();
    let r: BackupReport = t.cmd().args(["--json", "backup"]).status(0).json();
    assert!(r.collect.is_empty());
    assert_eq!(
        r.external[0].destinations[0].status,
        DestinationStatus::Written
    );
    assert_eq!(
        list_drive_backups(&mp.join("backups"))
            .unwrap()
            .verified()
            .count(),
        1
    );
    assert_eq!(kinds(&received(&t)[2..]), [EventKind::Success]);
}

#[test]
fn demo_backup_with_external_manual_never_touches_the_t9() {
    let Some((_t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 128 * MIB) else {
        return;
    };
    let t = demo_on_t9(&mp, "manual");
    let before = mtime(&mp);
    std::thread::sleep(Duration::from_millis(1100));

    let r: BackupReport = t.cmd().args(["--json", "backup"]).status(0).json();
    assert_eq!(r.due.external.action, ExternalAction::Manual);
    assert!(r.external.is_empty() && r.missing_media.is_none());
    assert_eq!(snapshots(&t, "data").len(), 1);
    assert!(names(&mp).is_empty(), "no backups/ on the drive");
    assert_eq!(
        mtime(&mp),
        before,
        "the drive's root was not written (not even detection's probe file)"
    );
    assert_eq!(kinds(&received(&t)), [EventKind::Success]);

    // `status` looks at the drive without writing either (it asks the kernel whether the drive is writable).
    t.cmd().args(["status"]).status(0);
    assert_eq!(mtime(&mp), before, "status wrote to the drive");
    // And `dbackup external` is how a manual schedule writes; the check above can fail: a write shows in the mtime.
    t.cmd().args(["external"]).status(0);
    assert_ne!(mtime(&mp), before, "a write is visible in the mtime");
    assert_eq!(
        list_drive_backups(&mp.join("backups"))
            .unwrap()
            .verified()
            .count(),
        1
    );
}

/// A backup root on an exFAT drive (a careless `backup_root` pointing at the T9) is refused by `collect` and
/// `backup` before anything is copied: exit 2, naming what the filesystem lacks and where the drive belongs. Before,
/// every snapshot was a full copy (no hard links), a 0600 file became 0777 in it, and collect renamed the snapshot
/// into place and then failed on its `<set>-latest` symlink, run after run.
#[test]
fn loopdev_a_backup_root_on_exfat_is_refused_before_anything_is_copied() {
    let Some((_drive, mp)) = loopdev::drive_or_skip(Fs::Exfat, "ROOT", 16 * MIB) else {
        return;
    };
    let t = Test::new();
    t.write("home/docs/a.txt", "a");
    let t = t.config(&format!(
        r#"{{ "backup_root": "{}/backups", "backup_sets": [ {{ "name": "docs", "sources": ["~/docs"] }} ] }}"#,
        mp.display()
    ));
    for command in ["collect", "backup"] {
        let out = t.cmd().args([command]).status(2);
        out.stderr_has(&format!(
            "the backup root {}/backups is on a filesystem without Unix permissions, hard links and symlinks",
            mp.display()
        ))
        .stderr_has("put backup_root on a Linux filesystem");
    }
    let mut left: Vec<String> = fs::read_dir(mp.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".lock"], "nothing but the lock is written");
}
