//! Rotation on a destination through the real binary: `retention.external` in the forms of `retention.local`, chains
//! (fixtures carrying `depends_on`) kept whole, image-only backups judged apart, and `--dry-run` giving every reason.

use std::fs;
use std::path::Path;

use dbackup::{ArchiveKind, BACKUP_META_FILE, BackupMeta, backup_meta_bytes, read_backup_meta};

use crate::fixtures::drive::{backups, drive_listing, external, new_backup, sample};
use crate::fixtures::history::drive_backup;
use crate::harness::Test;

/// A home with both sample sets collected and a plain-directory destination `drive` with `retention` (JSON).
fn world(retention: &str) -> Test {
    let t = Test::new().config("{}");
    let drive = t.path("drive");
    fs::create_dir_all(&drive).unwrap();
    let cfg = format!(
        r#"{{ "backup_root": "{{root}}", "retention": {{ "local": 3, "external": {retention} }},
             "backup_sets": [
               {{ "name": "config", "sources": ["~/.config", "~/.secrets"] }},
               {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "drive", "path": "{}", "require_mount": false }} ] }}"#,
        drive.display()
    );
    fs::write(t.path("config.json"), t.expand(&cfg)).unwrap();
    sample(&t, 0);
    t.cmd().args(["collect"]).status(0);
    t
}

/// A verified fixture backup of both sets at `time` on `drive`, depending on `deps` (stamps).
fn fixture(drive: &Path, time: &str, deps: &[&str]) -> String {
    let stamp = drive_backup(
        drive,
        time,
        &[("config", "config-x"), ("data", "data-x")],
        2 << 20,
    );
    edit(drive, &stamp, |m| {
        m.depends_on = deps.iter().map(|d| d.to_string()).collect();
        if let Some(base) = deps.last() {
            for s in &mut m.sets {
                s.kind = ArchiveKind::Incremental;
                s.base = Some(base.to_string());
            }
        }
    });
    stamp
}

/// Runs the external (exit 0): retention removes exactly `removed`, in that order; returns the new backup's stamp.
fn run_removes(t: &Test, removed: &[&str]) -> String {
    let report = external(t, &[], 0);
    let gone: Vec<&str> = report.destinations[0]
        .removed
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(gone, removed);
    report.destinations[0].backup.clone().unwrap()
}

fn edit(drive: &Path, stamp: &str, f: impl FnOnce(&mut BackupMeta)) {
    let p = drive.join("backups").join(stamp).join(BACKUP_META_FILE);
    let mut m = read_backup_meta(&p).unwrap();
    f(&mut m);
    fs::write(&p, backup_meta_bytes(&m)).unwrap();
}

/// `retention.external` as a policy (`last 2, weekly 3`) over two chains of fixture backups: the dry run names every
/// backup kept as a base ("base of ...") and the old chain removed whole; the real run removes exactly those. Before
/// (main): `retention.external` took only a count (a policy was a config error), and retention removed the full of
/// a kept incremental, leaving the incremental unrestorable.
#[test]
fn a_policy_keeps_chains_whole_and_says_why() {
    let t = world(r#"{ "last": 2, "weekly": 3 }"#);
    let drive = t.path("drive");
    // ISO weeks of 2026: 43 (old chain), 45 (second chain), 46 (third chain); the new backup is made now.
    let f0 = fixture(&drive, "2026-10-20T03:00:00+00:00", &[]);
    let i0 = fixture(&drive, "2026-10-21T03:00:00+00:00", &[&f0]);
    let f1 = fixture(&drive, "2026-11-02T03:00:00+00:00", &[]);
    let i1 = fixture(&drive, "2026-11-03T03:00:00+00:00", &[&f1]);
    let i2 = fixture(&drive, "2026-11-04T03:00:00+00:00", &[&f1, &i1]);
    let f2 = fixture(&drive, "2026-11-10T03:00:00+00:00", &[]);
    let i3 = fixture(&drive, "2026-11-11T03:00:00+00:00", &[&f2]);

    let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
    for line in [
        format!("  keep      {i3} (last 2; weekly: newest of 2026-W46)"),
        format!("  keep      {f2} (base of {i3})"),
        format!("  keep      {i2} (weekly: newest of 2026-W45)"),
        format!("  keep      {i1} (base of {i2})"),
        format!("  keep      {f1} (base of {i2}, {i1})"),
        format!("  remove    {i0} (not kept by the policy (last 2, weekly 3))"),
        format!("  remove    {f0} (not kept by the policy (last 2, weekly 3))"),
        "  retention last 2, weekly 3: 6 kept, 2 removed after the new backup is verified"
            .to_string(),
    ] {
        assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
    }

    let new = run_removes(&t, &[&i0, &f0]);
    assert_eq!(backups(&drive), [f1, i1, i2, f2, i3, new]);
}

/// Image-only backups (only `system/`, from `dbackup image create`) are judged apart: with `retention.external: 2`,
/// two newer image-only backups do not push the set backups out; the older image-only one goes. Before (main): they
/// counted among the newest 2, so the set backups were removed and only images (and the new one) stayed.
#[test]
fn image_only_backups_do_not_push_restore_points_out() {
    let t = world("2");
    let drive = t.path("drive");
    let set1 = fixture(&drive, "2026-11-01T03:00:00+00:00", &[]);
    let set2 = fixture(&drive, "2026-11-02T03:00:00+00:00", &[]);
    let image = |time: &str| {
        let stamp = fixture(&drive, time, &[]);
        edit(&drive, &stamp, |m| {
            m.sets.clear();
            m.system = Some(serde_json::from_str("{}").unwrap());
        });
        stamp
    };
    let img1 = image("2026-11-03T03:00:00+00:00");
    let img2 = image("2026-11-04T03:00:00+00:00");
    let img3 = image("2026-11-05T03:00:00+00:00");

    let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
    for line in [
        format!("  keep      {set2} (last 2)"),
        format!("  keep      {img3} (image-only backups: last 2)"),
        format!("  keep      {img2} (image-only backups: last 2)"),
        format!("  remove    {img1} (not kept by the policy (last 2))"),
        format!("  remove    {set1} (not kept by the policy (last 2))"),
    ] {
        assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
    }
    let report = external(&t, &[], 0);
    let new = report.destinations[0].backup.clone().unwrap();
    assert_eq!(backups(&drive), [set2, img2, img3, new]);
}

/// A policy that keeps nothing, or a count of 0, is a config error naming `retention.external` (or the
/// destination's `retention`) and `keep_at_least: 0` too. Before (main): a policy object was "expected an integer".
#[test]
fn external_retention_forms_are_checked() {
    for (retention, dest_extra, want) in [
        (
            r#"{ "daily": 0 }"#,
            "",
            "/retention/external: this policy keeps no backups",
        ),
        (
            "0",
            "",
            "/retention/external: 0 is too small; the minimum is 1",
        ),
        (
            "3",
            r#", "retention": { "last": 0 }"#,
            "/destinations/0/retention: this policy keeps no backups",
        ),
        (
            "3",
            r#", "keep_at_least": 0"#,
            "/destinations/0/keep_at_least: 0 is too small",
        ),
    ] {
        let t = Test::new().config(&format!(
            r#"{{ "backup_root": "{{root}}", "retention": {{ "external": {retention} }},
                 "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
                 "destinations": [ {{ "name": "drive", "path": "/media/x"{dest_extra} }} ] }}"#
        ));
        t.cmd().args(["config", "check"]).status(2).stderr_has(want);
    }
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "retention": { "external": { "weekly": 4, "monthly": 6 }, "keep_at_least": 3 },
             "backup_sets": [ { "name": "data", "sources": ["~/data"] } ],
             "destinations": [ { "name": "drive", "path": "/media/x" } ] }"#,
    );
    t.cmd()
        .args(["config", "check"])
        .status(0)
        .stdout_has("external backups per destination: weekly 4, monthly 6 (space-aware rotation keeps at least 3)");
}

/// `status` per destination: free space, every restore point with its chain (a full, two incrementals on it, an
/// image-only backup, an incremental whose base is gone: BROKEN), the recent average size and how many more backups
/// of it fit; the same in `--json` (parsed). Before (main): status showed only the newest backup and a count. The
/// broken one is not counted (before this fix: "5 restore points", and it was the newest verified backup).
#[test]
fn status_shows_restore_points_chains_and_what_fits() {
    let t = Test::new();
    let t9 = t.path("media/T9");
    fs::create_dir_all(&t9).unwrap();
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{}", "require_mount": false }} ],
             "notifications": {{ "low_disk_percent": 0 }} }}"#,
        t9.display()
    ));
    let backup = |time: &str, mib: u64, deps: &[&str]| {
        let stamp = drive_backup(&t9, time, &[("data", "data-x")], 2 * (mib << 20));
        edit(&t9, &stamp, |m| {
            m.depends_on = deps.iter().map(|d| d.to_string()).collect();
            if let Some(base) = deps.last() {
                m.sets[0].kind = ArchiveKind::Incremental;
                m.sets[0].base = Some(base.to_string());
            }
        });
        stamp
    };
    let full = backup("2025-03-01T03:15:00+00:00", 4096, &[]);
    let i1 = backup("2025-03-02T03:15:00+00:00", 200, &[&full]);
    let i2 = backup("2025-03-03T03:15:00+00:00", 300, &[&full, &i1]);
    let images = backup("2025-03-04T03:15:00+00:00", 0, &[]);
    edit(&t9, &images, |m| {
        m.sets.clear();
        m.system = Some(serde_json::from_str("{}").unwrap());
    });
    let broken = backup("2025-03-05T03:15:00+00:00", 100, &["2025-02-01-031500"]);

    let r: dbackup::StatusReport = t.run_json(&["status", "--now", "2025-03-06T09:00:00+00:00"]);
    let d = &r.destinations[0];
    let points: Vec<(&str, &str, &str, bool)> = d
        .restore_points
        .iter()
        .map(|p| {
            (
                p.stamp.as_str(),
                p.kind.as_str(),
                p.chain.as_str(),
                p.broken,
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            (full.as_str(), "full", full.as_str(), false),
            (i1.as_str(), "incremental", full.as_str(), false),
            (i2.as_str(), "incremental", full.as_str(), false),
            (images.as_str(), "images", images.as_str(), false),
            (broken.as_str(), "incremental", "2025-02-01-031500", true),
        ]
    );
    assert_eq!(d.restore_points[2].base.as_deref(), Some(i1.as_str()));
    // The broken one is not the newest verified backup (before: it was), and it fails the check.
    assert_eq!(
        d.newest.as_ref().map(|n| n.stamp.as_str()),
        Some(i2.as_str())
    );
    assert!(!r.ok);
    // The newest four holding sets: (4096 + 200 + 300 + 100) MiB / 4.
    assert_eq!(d.recent_average_bytes, Some((4696 << 20) / 4));
    assert_eq!(d.fit_more, Some(d.free_bytes.unwrap() / ((4696 << 20) / 4)));

    // The text, with this machine's free space replaced.
    let mut r = r;
    r.destinations[0].free_bytes = Some(20 << 30);
    r.destinations[0].total_bytes = Some(32 << 30);
    r.destinations[0].fs_type = Some("exfat".into());
    let text = dbackup::render_status(&r);
    let part = text
        .split("\ndestinations:\n")
        .nth(1)
        .unwrap()
        .split("\nlast run:")
        .next()
        .unwrap()
        .replace(&t.dir.path().display().to_string(), "/tmp/t");
    insta::assert_snapshot!("status_restore_points", part);
}

/// One drive used by two configs under the same destination name, with different sets: this config's retention
/// (`last 2`) judges only its own backups. The other config's (set `notes`) are kept, shown so in the dry run and
/// named in one note on stderr with how to remove them by hand, not a warning (exit 0: two configs may share a
/// drive on purpose); the other config, whose retention keeps more,
/// finds them all, and the drive lists both configs' backups. Before: they counted among this config's `last 2`
/// and all but the newest were removed.
#[test]
fn a_drive_shared_by_two_configs_keeps_the_other_configs_backups() {
    let t = world("2");
    let drive = t.path("drive");
    let notes = |time: &str| drive_backup(&drive, time, &[("notes", "notes-x")], 2 << 20);
    let n1 = notes("2026-11-01T03:00:00+00:00");
    let n2 = notes("2026-11-02T03:00:00+00:00");
    let a1 = fixture(&drive, "2026-11-03T03:00:00+00:00", &[]);
    let a2 = fixture(&drive, "2026-11-04T03:00:00+00:00", &[]);
    let n3 = notes("2026-11-05T03:00:00+00:00");
    let other = "holds no set of this config: another config's (or this config's from before a set was renamed or its \
         sources all changed), not judged";

    let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
    for line in [
        format!("  keep      {n3} ({other})"),
        format!("  keep      {a2} (last 2)"),
        format!("  keep      {n2} ({other})"),
        format!("  keep      {n1} ({other})"),
        format!("  remove    {a1} (not kept by the policy (last 2))"),
    ] {
        assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
    }

    let out = t.cmd().args(["--json", "external"]).status(0);
    let report = crate::fixtures::drive::report(&out);
    let d = &report.destinations[0];
    let removed: Vec<&str> = d.removed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(removed, [a1.as_str()]);
    let new = d.backup.clone().unwrap();
    assert_eq!(
        backups(&drive),
        [n1.clone(), n2.clone(), a2, n3.clone(), new]
    );
    assert_eq!(d.warnings, Vec::<String>::new());
    let w = &out.stderr;
    let theirs = [n1.clone(), n2.clone(), n3.clone()];
    crate::fixtures::drive::names_other_configs_once(w, "drive", &theirs, "notes");
    for part in [
        "another config's that uses this drive under the same destination name".to_string(),
        format!(
            "delete them by hand (rm -r {}/<stamp>)",
            drive.join("backups").display()
        ),
    ] {
        assert!(w.contains(&part), "{part:?} not in {w:?}");
    }
    let listed = drive_listing(&t);
    assert_eq!(listed.backups.len(), 5, "{listed:?}");
}

/// On the drive of [`world`]: this config's backup, then another config's newer one (set `notes`, its own backup root,
/// the same destination name); their stamps.
fn this_then_another_config(t: &Test) -> (String, String) {
    let ours = external(t, &[], 0).destinations[0].backup.clone().unwrap();
    t.write("notes/todo.txt", "buy milk\n");
    let other = t.write(
        "other.json",
        t.expand(
            r#"{ "backup_root": "{tmp}/root-b", "image": { "kit": false },
                 "backup_sets": [ { "name": "notes", "sources": ["{tmp}/notes"] } ],
                 "destinations": [ { "name": "drive", "path": "{tmp}/drive", "require_mount": false } ] }"#,
        ),
    );
    let with_other = || {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), other.as_os_str()])
    };
    with_other().args(["collect"]).status(0);
    // A stamp of its own (stamps are to the second).
    while chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= ours {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    with_other().args(["external"]).status(0);
    let theirs = backups(&t.path("drive")).pop().unwrap();
    assert!(theirs > ours, "{theirs} after {ours}");
    (ours, theirs)
}

/// `ls --source external` on a drive another config shares lists this config's newest backup, not the other's newer
/// one (as `restore` reads). Before: it listed the other config's backup, whose sets are not this config's.
#[test]
fn ls_on_a_shared_drive_lists_this_configs_newest_backup() {
    let t = world("5");
    let (ours, theirs) = this_then_another_config(&t);
    let ls = ls_lists(&t, &ours);
    assert!(!ls.contains("set notes"), "{ls}");
    let ls = (t
        .cmd()
        .args(["ls", "--source", "external", "--date", &theirs]))
    .status(0)
    .stdout;
    assert!(ls.starts_with(&format!("drive {theirs} set notes")), "{ls}");
}

/// `ls --source external`, which must list backup `ours`: its stdout.
fn ls_lists(t: &Test, ours: &str) -> String {
    let ls = (t.cmd().args(["ls", "--source", "external"]).status(0)).stdout;
    assert!(ls.starts_with(&format!("drive {ours} set ")), "{ls}");
    ls
}

/// `restore --dry-run` from the drive into `out` with `args`: its stdout.
fn dry_restore(t: &Test, args: &[&str]) -> String {
    t.cmd()
        .args(["--dry-run", "restore", "--source", "external", "--target"])
        .args([t.path("out").as_os_str()])
        .args(args)
        .status(0)
        .stdout
}

/// The same drive, both configs' backups real: a restore of "the newest" from the drive without `--set` is this
/// config's newest backup, not the other config's newer one (`--set` and `--date <stamp>` choose as before).
/// Before: it restored the other config's sets, to their places.
#[test]
fn a_restore_without_a_set_takes_this_configs_newest_backup_on_a_shared_drive() {
    let t = world("5");
    let (ours, theirs) = this_then_another_config(&t);

    let restore = |args: &[&str]| dry_restore(&t, args);
    let out = restore(&[]);
    assert!(out.contains(&format!("backups/{ours}/data.tar")), "{out}");
    assert!(!out.contains("notes"), "{out}");
    let out = restore(&["--date", &theirs]);
    assert!(
        out.contains(&format!("backups/{theirs}/notes.tar")),
        "{out}"
    );
}

/// Two configs on one drive, both with a set `data` from different sources (the other's `{tmp}/a-data`, its own
/// backup root, the same destination name, `retention.external` 5): the other config's `runs` backups, oldest first.
/// This config (`world`, set `data` from `~/data`) has written nothing yet.
fn another_configs_data_first(t: &Test, runs: usize) -> Vec<String> {
    t.write("a-data/a.txt", "the other config's\n");
    let other = t.write(
        "other.json",
        t.expand(
            r#"{ "backup_root": "{tmp}/root-a", "image": { "kit": false }, "retention": { "external": 5 },
                 "external": { "incremental": { "enabled": true } },
                 "backup_sets": [ { "name": "data", "sources": ["{tmp}/a-data"] } ],
                 "destinations": [ { "name": "drive", "path": "{tmp}/drive", "require_mount": false } ] }"#,
        ),
    );
    let before = backups(&t.path("drive"));
    let mut made: Vec<String> = before.clone();
    for _ in 0..runs {
        // A stamp of its own (stamps are to the second).
        while made
            .last()
            .is_some_and(|l| chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= *l)
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let with_other = || (t.cmd().no_config()).args(["--config".as_ref(), other.as_os_str()]);
        with_other().args(["collect"]).status(0);
        with_other().args(["external"]).status(0);
        made = backups(&t.path("drive"));
    }
    made.retain(|b| !before.contains(b));
    assert_eq!(made.len(), runs, "{made:?}");
    made
}

/// This config's `world` with incrementals on, and `retention.external` `retention`.
fn world_with_chains(retention: &str) -> Test {
    let t = world(retention);
    crate::fixtures::drive::incremental_on(&t);
    t
}

/// Another config's set `data` (other sources) on the drive is not this config's `data`: this config's first backup
/// is a full (the dry run says why), its next an incremental on its own, and its `last 1` never removes the other's
/// backups (the run names them in its note). Before: the dry run planned "incremental on" the other config's
/// backup, and `last 1` deleted the other config's backups of `data`.
#[test]
fn another_configs_set_of_the_same_name_is_neither_a_base_nor_pruned() {
    let t = world_with_chains("1");
    let theirs = another_configs_data_first(&t, 2);

    let plan = crate::fixtures::drive::plans_a_full_for_other_sources(&t, (2, "data"));
    for stamp in &theirs {
        assert!(!plan.contains(&format!("incremental on {stamp}")), "{plan}");
    }
    let first = new_backup(&t);
    let meta = |stamp: &str| {
        read_backup_meta(
            &t.path("drive")
                .join("backups")
                .join(stamp)
                .join(BACKUP_META_FILE),
        )
        .unwrap()
    };
    assert!(
        meta(&first)
            .sets
            .iter()
            .all(|s| s.kind == ArchiveKind::Full)
    );
    while chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= first {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    t.write("data/new.txt", "new\n");
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["--json", "external"]).status(0);
    let report = crate::fixtures::drive::report(&out);
    let second = report.destinations[0].backup.clone().unwrap();
    let data = meta(&second)
        .sets
        .into_iter()
        .find(|s| s.set == "data")
        .unwrap();
    assert_eq!(
        (data.kind, data.base.as_deref()),
        (ArchiveKind::Incremental, Some(first.as_str()))
    );
    let mut all = theirs.clone();
    all.extend([first.clone(), second]);
    assert_eq!(backups(&t.path("drive")), all);
    crate::fixtures::drive::names_other_configs_once(&out.stderr, "drive", &theirs, "data");
}

/// The same drive: `status`, `restore` (without `--set` and with `--set data`) and `ls --source external` take this
/// config's own backup of `data`, not the other config's newer one; `find` still searches every backup. Before:
/// each took the other config's newer backup of `data` as this config's.
#[test]
fn another_configs_set_of_the_same_name_is_not_this_configs_restore_point() {
    let t = world("5");
    let ours = new_backup(&t);
    while chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= ours {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let theirs = another_configs_data_first(&t, 2);

    let s: serde_json::Value = t.cmd().args(["--json", "status"]).output().json();
    let d = &s["destinations"][0];
    assert_eq!(d["newest"]["stamp"], serde_json::json!(ours), "{d:#}");
    let points: Vec<&serde_json::Value> = (d["restore_points"].as_array().unwrap().iter())
        .map(|p| &p["stamp"])
        .collect();
    assert_eq!(points, [&serde_json::json!(ours)], "{d:#}");
    let text = t.cmd().args(["status"]).output().stdout;
    assert!(
        text.contains(
            "2 backups of another config on the drive (or of this config's sets from before one was renamed or \
             its sources changed; not counted here)"
        ),
        "{text}"
    );

    let restore = |args: &[&str]| dry_restore(&t, args);
    for args in [&[][..], &["--set", "data"]] {
        let out = restore(args);
        assert!(
            out.contains(&format!("backups/{ours}/data.tar")),
            "{args:?}: {out}"
        );
        assert!(!out.contains(&theirs[1]), "{args:?}: {out}");
    }
    ls_lists(&t, &ours);
    let found = (t
        .cmd()
        .args(["find", "--source", "external", "a.txt"])
        .output())
    .stdout;
    assert!(found.contains(&theirs[1]), "{found}");
}

/// A set whose sources were all replaced (`data`: `~/data` then `~/data2`) starts a new chain with a full, once, and
/// the dry run says why without claiming the old backups are another config's; the set left unchanged (`config`)
/// goes on with its chain, and the next backup of `data` is an incremental on the new full.
#[test]
fn a_set_whose_sources_all_changed_starts_a_new_full_once_and_says_why() {
    let t = world_with_chains("5");
    let first = new_backup(&t);
    let path = t.path("config.json");
    let cfg = fs::read_to_string(&path).unwrap();
    fs::write(&path, cfg.replace(r#"["~/data"]"#, r#"["~/data2"]"#)).unwrap();
    t.write("home/data2/x.txt", "x\n");
    let wait = |after: &str| {
        while chrono::Local::now()
            .format("%Y-%m-%d-%H%M%S")
            .to_string()
            .as_str()
            <= after
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait(&first);
    // Five entries where `~/data` had 35: collect's shrink guard asks for this, and warns (exit 3).
    t.cmd().args(["collect", "--allow-shrink"]).status(3);
    let plan = crate::fixtures::drive::plans_a_full_for_other_sources(&t, (1, "data"));
    assert!(plan.contains(&format!("incremental on {first}")), "{plan}");
    let second = new_backup(&t);
    wait(&second);
    t.write("home/data2/y.txt", "y\n");
    t.cmd().args(["collect"]).status(0);
    let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
    assert!(!plan.contains("recorded from other sources"), "{plan}");
    assert!(plan.contains(&format!("incremental on {second}")), "{plan}");
}

/// A backup that `restore --verify` found damaged (noted in the state directory's `damaged.json`) is no restore
/// point for retention, in the count form and per destination: it is not one of the "last 2", it is kept (never
/// removed by retention) and the dry run says why; the older intact backup it pushed out stays. Before: the damaged
/// backup was kept as one of the newest 2 and the intact one before it was removed.
#[test]
fn a_backup_found_damaged_is_not_counted_by_retention() {
    for per_destination in [false, true] {
        let t = world("2");
        if per_destination {
            let cfg = fs::read_to_string(t.path("config.json")).unwrap();
            let cfg = cfg.replace(
                r#""require_mount": false"#,
                r#""require_mount": false, "retention": { "last": 2 }"#,
            );
            fs::write(
                t.path("config.json"),
                cfg.replace(r#""external": 2"#, r#""external": 9"#),
            )
            .unwrap();
        }
        let drive = t.path("drive");
        let old = fixture(&drive, "2026-11-01T03:00:00+00:00", &[]);
        let intact = fixture(&drive, "2026-11-02T03:00:00+00:00", &[]);
        let damaged = fixture(&drive, "2026-11-03T03:00:00+00:00", &[]);
        let records = serde_json::json!({ "format": 1, "records": [{
            "destination": "drive", "backup": damaged, "found": "2026-11-04T10:00:00+01:00",
            "problem": "data.tar: its sha256 differs" }] });
        fs::create_dir_all(t.path("state/dbackup")).unwrap();
        fs::write(t.path("state/dbackup/damaged.json"), records.to_string()).unwrap();

        let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
        for line in [
            format!(
                "  keep      {damaged} (damaged (restore --verify, 2026-11-04): not a restore point; never removed \
                 by retention: delete it by hand when it is not wanted)"
            ),
            format!("  keep      {intact} (last 2)"),
            format!("  remove    {old} (not kept by the policy (last 2))"),
        ] {
            assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
        }
        let new = run_removes(&t, &[&old]);
        assert_eq!(backups(&drive), [intact, damaged, new]);
    }
}

/// An incremental whose chain holds a damaged or missing link (`status` calls it BROKEN) is no restore point for
/// retention: with the full of Nov 1 intact, the full of Nov 2 found damaged by `restore --verify` and incrementals
/// on it of Nov 3 and 4, `last 2` keeps the new backup and the intact full, and the broken ones stay, the dry run
/// saying why; alike when the base was deleted by hand. Before: the incremental of Nov 4 was one of the "last 2" (and
/// kept its chain), and the full of Nov 1, the only intact restore point but the new one, was removed.
#[test]
fn an_incremental_on_a_damaged_or_deleted_base_is_not_counted_by_retention() {
    for deleted in [false, true] {
        let t = world("2");
        let drive = t.path("drive");
        let intact = fixture(&drive, "2026-11-01T03:00:00+00:00", &[]);
        let full = fixture(&drive, "2026-11-02T03:00:00+00:00", &[]);
        let i3 = fixture(&drive, "2026-11-03T03:00:00+00:00", &[&full]);
        let i4 = fixture(&drive, "2026-11-04T03:00:00+00:00", &[&full, &i3]);
        let why = if deleted {
            fs::remove_dir_all(drive.join("backups").join(&full)).unwrap();
            "missing or unverified"
        } else {
            let records = serde_json::json!({ "format": 1, "records": [{
                "destination": "drive", "backup": full, "found": "2026-11-05T10:00:00+01:00",
                "problem": "data.tar: its sha256 differs" }] });
            fs::create_dir_all(t.path("state/dbackup")).unwrap();
            fs::write(t.path("state/dbackup/damaged.json"), records.to_string()).unwrap();
            "damaged"
        };
        let plan = t.cmd().args(["external", "--dry-run"]).status(0).stdout;
        let never = "never removed by retention: delete it by hand when it is not wanted";
        for line in [
            format!(
                "  keep      {i4} (broken: its base {full} is {why}: not a restore point; {never})"
            ),
            format!("  keep      {intact} (last 2)"),
        ] {
            assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
        }
        let new = run_removes(&t, &[]);
        let mut want = vec![intact.clone(), full.clone(), i3.clone(), i4.clone(), new];
        if deleted {
            want.remove(1);
        }
        assert_eq!(backups(&drive), want);
    }
}
