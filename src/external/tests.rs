//! Unit tests of the external plan: snapshot choice, space and splitting, latest, leftovers, retention in the plan,
//! unused destinations, and the rendered plan.

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::layout::{self, DriveBackup, DriveListing, LatestKind, Leftover, LeftoverKind};
use super::plan::{
    self, DestinationAction, DestinationWorld, RunOptions, SetWorld, SnapshotSummary, World,
    choose_snapshot,
};
use super::sets::SetAction;
use crate::archive::ArchiveEstimate;
use crate::config::ExternalMode;
use crate::exit::Exit;
use crate::media::{Absence, Detected, Found, Marker, MediaInfo, Presence};
use crate::settings::DestinationSettings;
use crate::snapshot::{SnapshotState, parse_stamp};

const MIB: u64 = 1 << 20;

fn t(s: &str) -> NaiveDateTime {
    parse_stamp(s).unwrap()
}

fn snap(set: &str, stamp: &str, state: SnapshotState, unreadable: u64) -> SnapshotSummary {
    SnapshotSummary {
        name: format!("{set}-{stamp}"),
        time: t(stamp),
        state,
        unreadable,
        missing_sources: vec![],
    }
}

#[test]
fn snapshot_choice() {
    use SnapshotState::*;
    let d1 = snap("data", "2025-04-01-000000", Complete, 0);
    let d2 = snap("data", "2025-04-02-000000", Incomplete, 3);
    let d3 = snap("data", "2025-04-03-000000", Unknown, 0);
    let d0 = snap("data", "2025-03-31-000000", Incomplete, 1);
    // Made while the clock was years ahead; `now` below is 2025-04-10.
    let ahead = snap("data", "2027-01-01-000000", Complete, 0);
    // (what, snapshots, allow_incomplete, chosen, complete, warning fragment)
    type Case<'a> = (
        &'a str,
        Vec<SnapshotSummary>,
        bool,
        Option<&'a str>,
        bool,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "none at all",
            vec![],
            false,
            None,
            false,
            "no complete snapshot yet; run `dbackup collect` first",
        ),
        (
            "only one without metadata",
            vec![d3.clone()],
            false,
            None,
            false,
            "no complete snapshot yet",
        ),
        (
            "newest complete, any order",
            vec![d3.clone(), d1.clone(), d0.clone()],
            false,
            Some("data-2025-04-01-000000"),
            true,
            "",
        ),
        (
            "one dated in the future is not the newest",
            vec![ahead.clone(), d1.clone()],
            false,
            Some("data-2025-04-01-000000"),
            true,
            "",
        ),
        (
            "a newer incomplete one is passed over, with a warning",
            vec![d1.clone(), d2.clone()],
            false,
            Some("data-2025-04-01-000000"),
            true,
            "the newest snapshot data-2025-04-02-000000 is incomplete (3 files could not be read); exporting the older complete data-2025-04-01-000000",
        ),
        (
            "--allow-incomplete takes it",
            vec![d1.clone(), d2.clone()],
            true,
            Some("data-2025-04-02-000000"),
            false,
            "exporting the incomplete snapshot data-2025-04-02-000000 (3 files could not be read when it was made), as --allow-incomplete asks",
        ),
        (
            "--allow-incomplete does not prefer an older incomplete one",
            vec![d1.clone(), d0.clone()],
            true,
            Some("data-2025-04-01-000000"),
            true,
            "",
        ),
        (
            "a newer one without a source is passed over, saying which",
            vec![
                d1.clone(),
                SnapshotSummary {
                    missing_sources: vec!["~/photos".into()],
                    ..snap("data", "2025-04-02-000000", Incomplete, 0)
                },
            ],
            false,
            Some("data-2025-04-01-000000"),
            true,
            "the newest snapshot data-2025-04-02-000000 is incomplete (source ~/photos was missing); exporting the older complete data-2025-04-01-000000",
        ),
        (
            "only incomplete: skipped, naming the flag",
            vec![d2.clone()],
            false,
            None,
            false,
            "skipped: it has no complete snapshot; the newest, data-2025-04-02-000000, is incomplete (3 files could not be read); fix that and collect again, or use --allow-incomplete",
        ),
    ];
    for (what, snaps, allow, want, complete, warning) in cases {
        let c = choose_snapshot(&snaps, allow, t("2025-04-10-000000"));
        assert_eq!(c.snapshot.as_deref(), want, "{what}");
        assert_eq!(c.complete, complete, "{what}");
        if warning.is_empty() {
            assert!(c.warnings.is_empty(), "{what}: {:?}", c.warnings);
        } else {
            assert_eq!(c.warnings.len(), 1, "{what}");
            assert!(c.warnings[0].contains(warning), "{what}: {}", c.warnings[0]);
        }
    }
}

fn info(path: &str, fs_type: &str, free: u64) -> MediaInfo {
    let caps = crate::media::capabilities(fs_type);
    MediaInfo {
        path: path.into(),
        resolved: path.into(),
        mount_point: path.into(),
        is_mount_point: true,
        source: "/dev/sdz1".into(),
        device: Some("/dev/sdz1".into()),
        mount_fs_type: if fs_type == "exfat" {
            "fuseblk".into()
        } else {
            fs_type.into()
        },
        fs_type: fs_type.into(),
        label: Some("T9".into()),
        uuid: Some("FF4F-F609".into()),
        dev: 7,
        free_bytes: free,
        total_bytes: 2 << 30,
        max_file_size: caps.max_file_size,
        symlinks: caps.symlinks,
        hard_links: caps.hard_links,
        marker: None,
    }
}

fn dest(name: &str, path: &str, retention: u32) -> DestinationSettings {
    DestinationSettings {
        name: name.into(),
        path: path.into(),
        priority: 0,
        fs_uuid: None,
        fs_label: None,
        retention: crate::config::RetentionPolicy::last(retention),
        keep_at_least: 2,
        require_mount: true,
        encryption: None,
        schedule: None,
    }
}

fn estimate(tar_bytes: u64) -> ArchiveEstimate {
    ArchiveEstimate {
        entries: 120,
        files: 100,
        file_bytes: tar_bytes - 100 * 1024,
        hard_links: 2,
        tar_bytes,
        index_bytes: 40_000,
        skipped: 0,
        ..Default::default()
    }
}

fn backup(stamp: &str, verified: bool, sets: &[&str]) -> DriveBackup {
    DriveBackup {
        name: stamp.into(),
        time: t(stamp),
        path: PathBuf::from("/media/T9/backups").join(stamp),
        meta: verified.then(|| layout::tests::meta(stamp, sets)),
        meta_error: (!verified).then(|| "cannot read backup.json: no such file".to_string()),
    }
}

/// Two sets (data with a complete snapshot, config without), one exFAT drive with four old backups, a leftover and
/// foreign entries, retention 3.
fn world() -> World {
    let root = PathBuf::from("/home/u/.local/share/dbackup");
    let t9 = dest("T9", "/media/T9", 3);
    let listing = DriveListing {
        exists: true,
        backups: vec![
            backup("2025-03-01-000000", true, &["data"]),
            backup("2025-03-02-000000", true, &["data"]),
            backup("2025-03-03-000000", false, &[]),
            backup("2025-03-04-000000", true, &["data"]),
            backup("2025-03-05-000000", true, &["data"]),
        ],
        leftovers: vec![Leftover {
            name: ".tmp-2025-03-06-000000-77".into(),
            kind: LeftoverKind::Temporary,
            bytes: 5 * MIB,
            in_use: false,
        }],
        latest: Some("2025-03-05-000000".into()),
        other: vec!["notes".into()],
    };
    let nas = dest("nas", "/mnt/nas", 5);
    World {
        backup_root: root,
        host: "ws".into(),
        mode: ExternalMode::First,
        only_destination: None,
        allow_incomplete: false,
        sets: vec![
            SetWorld {
                name: "data".into(),
                snapshots: vec![snap(
                    "data",
                    "2025-04-01-031500",
                    SnapshotState::Complete,
                    0,
                )],
                estimate: Some(estimate(300 * MIB)),
                secrets: Vec::new(),
            },
            SetWorld {
                name: "config".into(),
                snapshots: vec![],
                estimate: None,
                secrets: Vec::new(),
            },
        ],
        detected: vec![
            Detected {
                destination: t9.clone(),
                presence: Presence::Present(info("/media/T9", "exfat", 1 << 30)),
            },
            Detected {
                destination: nas.clone(),
                presence: Presence::Absent(Absence::NotMounted {
                    path: "/mnt/nas".into(),
                    found: Found::EmptyDirectory { on: "/".into() },
                }),
            },
        ],
        clouds: Vec::new(),
        clouds_not_chosen: Vec::new(),
        destinations: vec![DestinationWorld {
            settings: t9,
            info: info("/media/T9", "exfat", 1 << 30),
            block_size: 128 * 1024,
            listing,
            encryption: None,
            passphrase_file: None,
            damaged: Default::default(),
            found_damaged: Default::default(),
            incremental: Default::default(),
            index_copies: Vec::new(),
            base_copies: Default::default(),
        }],
        incremental: Default::default(),
        force_full: false,
        content_every: None,
        schedule_full: crate::config::Full::Never,
        choose_at: None,
        index_copies_orphaned: Vec::new(),
        upload_journals_orphaned: Vec::new(),
        own_sets: super::retention::OwnSet::named(&["data", "config"]),
        system: None,
    }
}

fn opts() -> RunOptions {
    RunOptions {
        now: t("2025-04-02-101500"),
        pid: 4242,
    }
}

#[test]
fn a_plan_for_the_t9() {
    let p = plan::plan(&world(), opts());
    assert_eq!(p.stamp, "2025-04-02-101500");
    assert_eq!(p.sets[0].action, SetAction::Export);
    assert_eq!(
        p.sets[0].snapshot_path.as_deref(),
        Some(Path::new(
            "/home/u/.local/share/dbackup/data-2025-04-01-031500"
        ))
    );
    assert_eq!(p.sets[1].action, SetAction::Skip);
    assert_eq!(
        p.expected_exit(),
        Exit::Warnings,
        "a skipped set is a warning"
    );

    let d = &p.destinations[0];
    assert_eq!(d.action, DestinationAction::Write);
    assert!(d.write_marker);
    assert_eq!(
        d.temp_dir,
        Path::new("/media/T9/backups/.tmp-2025-04-02-101500-4242")
    );
    assert_eq!(
        d.final_dir,
        Path::new("/media/T9/backups/2025-04-02-101500")
    );
    assert_eq!(d.archives.len(), 1);
    assert_eq!(d.archives[0].archive, "data.tar");
    assert_eq!(d.archives[0].index, "data.index.jsonl");
    assert_eq!(d.archives[0].part_bytes, None, "exFAT holds big files");
    assert_eq!(d.latest.kind, LatestKind::File, "exFAT has no symlinks");
    assert_eq!(d.latest.path, Path::new("/media/T9/backups/LATEST"));
    assert_eq!(d.latest.previous.as_deref(), Some("2025-03-05-000000"));
    assert!(
        d.drop_device_cache,
        "exfat-fuse: the device cache is dropped"
    );
    assert_eq!(d.reclaimable_bytes, 5 * MIB);
    assert_eq!(d.cleanup[0].name, ".tmp-2025-03-06-000000-77");
    // Needs the archive and index rounded to 128 KiB clusters, plus the margin.
    let block = 128 * 1024;
    let want = layout::SPACE_MARGIN
        + 2 * block
        + 300 * MIB
        + block
        + 40_000u64.div_ceil(block) * block
        + block;
    assert_eq!(d.needed_bytes, want);

    // Retention 3 with the new backup: it and the two newest old verified ones stay; the one without metadata
    // is never touched; the older verified ones go.
    let decided: Vec<(&str, bool)> = d
        .decisions
        .iter()
        .map(|x| (x.name.as_str(), x.keep))
        .collect();
    assert_eq!(
        decided,
        [
            ("2025-04-02-101500", true),
            ("2025-03-05-000000", true),
            ("2025-03-04-000000", true),
            ("2025-03-03-000000", true),
            ("2025-03-02-000000", false),
            ("2025-03-01-000000", false),
        ]
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.starts_with("2025-03-03-000000 is not used nor removed"))
    );
    assert!(d.notes.iter().any(|n| {
        n.contains("1 entry in /media/T9/backups not made by dbackup, left alone: notes")
    }));

    assert_eq!(p.unused.len(), 1);
    assert_eq!(p.unused[0].kind, "not_mounted");
}

#[test]
fn not_enough_space_refuses_the_destination_and_says_how_much() {
    let mut w = world();
    w.destinations[0].info.free_bytes = 100 * MIB;
    let p = plan::plan(&w, opts());
    let d = &p.destinations[0];
    assert_eq!(d.action, DestinationAction::Refuse);
    let why = d.refusal.as_deref().unwrap();
    assert!(
        why.starts_with("not enough space: the backup needs 301.6 MiB, /media/T9 has 100.0 MiB free (and 5.0 MiB in leftovers of interrupted runs); removing the oldest restore points would free only 0 B without going below keep_at_least 2"),
        "{why}"
    );
    assert!(why.ends_with("nothing was written"), "{why}");
    assert_eq!(p.expected_exit(), Exit::Failed);

    // Leftovers count: what the previous run left is removed first.
    let mut w = world();
    let needed = plan::plan(&w, opts()).destinations[0].needed_bytes;
    w.destinations[0].info.free_bytes = needed - MIB;
    assert_eq!(
        plan::plan(&w, opts()).destinations[0].action,
        DestinationAction::Write
    );
    w.destinations[0].info.free_bytes = needed - 6 * MIB;
    assert_eq!(
        plan::plan(&w, opts()).destinations[0].action,
        DestinationAction::Refuse
    );
}

/// The space refusal names first the backups that are no restore point (found damaged, or broken: an incremental on a
/// damaged base), since those are the ones to delete by hand; a few by name, the rest counted. Before: it said only
/// "delete some of the 4", as if any of them would do.
#[test]
fn the_space_refusal_names_the_damaged_and_broken_backups_first() {
    let mut w = world();
    let d = &mut w.destinations[0];
    d.info.free_bytes = 100 * MIB;
    d.found_damaged = [(
        "2025-03-04-000000".to_string(),
        "restore --verify, 2025-03-06".to_string(),
    )]
    .into();
    let m = d.listing.backups[4].meta.as_mut().unwrap();
    m.depends_on = vec!["2025-03-04-000000".into()];
    let why = plan::plan(&w, opts()).destinations[0]
        .refusal
        .clone()
        .unwrap();
    assert!(
        why.contains(
            "delete some of the 4 in /media/T9/backups by hand (first the 2 that are no restore point, damaged or \
             broken: 2025-03-04-000000, 2025-03-05-000000), lower keep_at_least"
        ),
        "{why}"
    );
    // Many of them: a few named, the rest counted.
    let d = &mut w.destinations[0];
    for i in 0..30 {
        let stamp = format!("2025-02-{:02}-000000", i % 28 + 1);
        let stamp = if i < 28 {
            stamp
        } else {
            format!("2025-01-{:02}-000000", i)
        };
        d.found_damaged
            .insert(stamp.clone(), "restore --verify, 2025-03-06".into());
        d.listing.backups.push(backup(&stamp, true, &["data"]));
    }
    let why = plan::plan(&w, opts()).destinations[0]
        .refusal
        .clone()
        .unwrap();
    assert!(
        why.contains(&format!(
            "(first the 32 that are no restore point, damaged or broken: 2025-01-28-000000, 2025-01-29-000000, \
             2025-02-01-000000, 2025-02-02-000000, 2025-02-03-000000, 2025-02-04-000000, 2025-02-05-000000, \
             2025-02-06-000000, 2025-02-07-000000, 2025-02-08-000000 and {} more)",
            32 - crate::stdx::NAMED
        )),
        "{why}"
    );
}

/// Leftovers whose sizes add up past `u64` (sparse files of 8 EiB on a drive that allows them: xfs, btrfs, tmpfs)
/// count as the most bytes there are: the plan is made, never an overflow.
#[test]
fn leftovers_of_sizes_past_u64_are_counted_saturating() {
    let mut w = world();
    let big = |n: u32| Leftover {
        name: format!(".tmp-2025-03-0{n}-000000-77"),
        kind: LeftoverKind::Temporary,
        bytes: u64::MAX - 1,
        in_use: false,
    };
    w.destinations[0].listing.leftovers = vec![big(6), big(7), big(8)];
    let p = plan::plan(&w, opts());
    let d = &p.destinations[0];
    assert_eq!(d.reclaimable_bytes, u64::MAX);
    assert_eq!(d.action, DestinationAction::Write, "{:?}", d.refusal);
}

/// A drive whose `backups/` holds 100,000 entries dbackup did not make: the plan's note counts them all and names a
/// few, not all of them in one line of megabytes.
#[test]
fn many_entries_not_made_by_dbackup_are_counted_and_a_few_named() {
    let mut w = world();
    w.destinations[0].listing.other = (0..100_000).map(|i| format!("junk-{i:06}")).collect();
    let p = plan::plan(&w, opts());
    let note = p.destinations[0]
        .notes
        .iter()
        .find(|n| n.contains("not made by dbackup"))
        .unwrap();
    assert!(
        note.starts_with(
            "100,000 entries in /media/T9/backups not made by dbackup, left alone: junk-000000, "
        ),
        "{note}"
    );
    assert!(
        note.ends_with(" and 99,990 more"),
        "{}",
        &note[note.len().saturating_sub(80)..]
    );
    assert!(note.len() < 500, "{} bytes", note.len());
}

/// Space-aware rotation in the plan: with each old backup holding 100 MiB and the drive 150 MiB short, the two
/// oldest verified backups are removed before writing (not the newest two: keep_at_least 2), shown in the plan and
/// left out of retention's decisions; 250 MiB short, nothing is removed and the drive is refused with the numbers.
/// (Before: any shortfall refused the drive, "delete some by hand".)
#[test]
fn space_aware_rotation_removes_the_oldest_before_writing() {
    let mut w = world();
    for b in &mut w.destinations[0].listing.backups {
        if let Some(m) = &mut b.meta {
            m.sets[0].archive = vec![crate::archive::FileRecord {
                name: "data.tar".into(),
                bytes: 100 * MIB,
                sha256: crate::archive::Digest::of_bytes(b""),
                age_head: None,
            }];
        }
    }
    let needed = plan::plan(&w, opts()).destinations[0].needed_bytes;
    w.destinations[0].info.free_bytes = needed - 150 * MIB - 5 * MIB;
    let p = plan::plan(&w, opts());
    let d = &p.destinations[0];
    assert_eq!(d.action, DestinationAction::Write, "{:?}", d.refusal);
    let gone: Vec<&str> = d.remove_for_space.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(gone, ["2025-03-01-000000", "2025-03-02-000000"]);
    assert_eq!(d.freed_for_space_bytes, 200 * MIB);
    assert!(
        d.decisions.iter().all(|x| !gone.contains(&x.name.as_str())),
        "{:?}",
        d.decisions
    );
    insta::assert_snapshot!("rendered_rotation", plan::render(&p));

    w.destinations[0].info.free_bytes = needed - 250 * MIB - 5 * MIB;
    let d = &plan::plan(&w, opts()).destinations[0];
    assert_eq!(d.action, DestinationAction::Refuse);
    assert!(d.remove_for_space.is_empty());
    let why = d.refusal.as_deref().unwrap();
    assert!(
        why.contains("removing the oldest restore points would free only 200.0 MiB without going below keep_at_least 2"),
        "{why}"
    );
}

#[test]
fn fat32_gets_parts_and_ext4_a_symlink() {
    let mut w = world();
    w.destinations[0].info = info("/media/T9", "vfat", 20 << 30);
    w.sets[0].estimate = Some(estimate(9 << 30));
    let p = plan::plan(&w, opts());
    let a = &p.destinations[0].archives[0];
    assert_eq!(a.part_bytes, Some((4 << 30) - (1 << 20)));
    assert_eq!(a.index_part_bytes, None);
    assert_eq!(p.destinations[0].latest.kind, LatestKind::File);

    let mut w = world();
    w.destinations[0].info = info("/media/T9", "ext4", 1 << 30);
    w.destinations[0].info.marker = Some(Marker::new(
        "T9",
        None,
        None,
        chrono::Local::now().fixed_offset(),
        "ws".into(),
    ));
    let p = plan::plan(&w, opts());
    let d = &p.destinations[0];
    assert_eq!(d.latest.kind, LatestKind::Symlink);
    assert_eq!(d.latest.path, Path::new("/media/T9/backups/latest"));
    assert!(!d.write_marker, "the drive already has its marker");
    assert!(
        !d.drop_device_cache,
        "a kernel filesystem: O_DIRECT reaches the drive"
    );
}

#[test]
fn a_temporary_directory_of_a_running_dbackup_is_left_alone() {
    let mut w = world();
    w.destinations[0].listing.leftovers[0].in_use = true;
    let d = &plan::plan(&w, opts()).destinations[0];
    assert!(d.cleanup.is_empty());
    assert_eq!(d.reclaimable_bytes, 0);
    assert!(
        d.notes.contains(
            &".tmp-2025-03-06-000000-77 belongs to a dbackup run still going (pid 77); left alone"
                .to_string()
        ),
        "{:?}",
        d.notes
    );
}

#[test]
fn nothing_exported_is_a_failure() {
    let mut w = world();
    w.sets.truncate(1);
    w.sets[0].snapshots.clear();
    w.sets[0].estimate = None;
    let p = plan::plan(&w, opts());
    assert_eq!(p.expected_exit(), Exit::Failed);
    assert!(p.destinations[0].archives.is_empty());
}

#[test]
fn present_but_not_chosen_is_said() {
    let mut w = world();
    w.detected[1].presence = Presence::Present(info("/mnt/nas", "ext4", 1 << 40));
    let p = plan::plan(&w, opts());
    assert_eq!(p.unused[0].kind, "not_chosen");
    assert_eq!(
        p.unused[0].reason,
        "present, but external.mode is \"first\" and T9 comes first (by priority)"
    );
}

#[test]
fn rendered_plan() {
    let p = plan::plan(&world(), opts());
    insta::assert_snapshot!(plan::render(&p));
    let mut w = world();
    w.destinations[0].info.free_bytes = 100 * MIB;
    insta::assert_snapshot!("rendered_refusal", plan::render(&plan::plan(&w, opts())));
}

#[test]
fn plan_json_round_trips() {
    let p = plan::plan(&world(), opts());
    let json = serde_json::to_string(&p).unwrap();
    let back: plan::ExternalPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["destinations"][0]["latest"]["kind"], "file");
    assert_eq!(v["sets"][1]["action"], "skip");
}

/// A device to image, as observed: a 1 GiB ext4 partition of which partclone counts 300 MiB in use.
fn imaged_device() -> crate::image::observe::DeviceFacts {
    crate::image::observe::DeviceFacts {
        given: "/dev/nvme0n1p2".into(),
        path: "/dev/nvme0n1p2".into(),
        kname: "nvme0n1p2".into(),
        bytes: 1 << 30,
        sector_size: 512,
        fs_type: Some("ext4".into()),
        tool: Some("/usr/sbin/partclone.extfs".into()),
        used_bytes: Some(300 << 20),
        stream_bound: Some((300 << 20) + (1 << 20)),
        ..Default::default()
    }
}

/// The images are counted in the space check at partclone's used bytes as if zstd could not compress them (before,
/// the space check counted only the archives, and a drive too small for the images was written until it filled).
#[test]
fn the_space_check_counts_the_images_at_their_used_bytes() {
    let mut w = world();
    let without = plan::plan(&w, opts()).destinations[0].needed_bytes;
    w.system = Some(crate::image::SystemInput {
        kit: None,
        devices: vec![Ok(imaged_device())],
        sets: vec![],
    });
    let mut p = plan::plan(&w, opts());
    // What `external::dry_run` adds: the system plan shown above the destinations.
    p.system = Some(crate::image::plan::plan_system(
        false,
        &[Ok(imaged_device())],
        None,
        None,
    ));
    let d = &p.destinations[0];
    assert!(d.system_bytes >= 301 << 20, "{}", d.system_bytes);
    assert!(d.system_bytes < 305 << 20, "{}", d.system_bytes);
    assert_eq!(d.needed_bytes, without + d.system_bytes);
    assert_eq!(d.action, DestinationAction::Write);
    assert!(
        plan::render(&p).contains("of which system/ may take 30"),
        "{}",
        plan::render(&p)
    );

    // A drive with room for the archives but not for the image: refused before anything is written.
    w.destinations[0].info.free_bytes = without + (200 << 20);
    let p = plan::plan(&w, opts());
    let d = &p.destinations[0];
    assert_eq!(d.action, DestinationAction::Refuse);
    let why = d.refusal.as_deref().unwrap();
    assert!(why.contains("not enough space"), "{why}");
    assert!(why.contains("partclone finds in use"), "{why}");

    // Unknown used bytes: the device's whole size is counted.
    let mut unknown = imaged_device();
    unknown.used_bytes = None;
    unknown.stream_bound = None;
    unknown.used_error = Some("partclone.extfs stopped before its header".into());
    w.destinations[0].info.free_bytes = 4 << 30;
    w.system = Some(crate::image::SystemInput {
        kit: None,
        devices: vec![Ok(unknown)],
        sets: vec![],
    });
    let d = &plan::plan(&w, opts()).destinations[0];
    assert!(d.system_bytes > 1 << 30, "{}", d.system_bytes);

    // No image: system/ is counted, but the dry run and a refusal speak of no images.
    w.system = Some(crate::image::SystemInput::default());
    w.destinations[0].info.free_bytes = 1 << 10;
    let mut p = plan::plan(&w, opts());
    p.system = Some(crate::image::SystemPlan::default());
    assert!(p.destinations[0].system_bytes > 0);
    assert!(
        !p.destinations[0]
            .refusal
            .as_deref()
            .unwrap()
            .contains("partclone")
    );
    w.destinations[0].info.free_bytes = 4 << 30;
    let mut p = plan::plan(&w, opts());
    p.system = Some(crate::image::SystemPlan::default());
    assert!(
        !plan::render(&p).contains("of which"),
        "{}",
        plan::render(&p)
    );
}

/// A secret file the config names inside the exported snapshot is left out of the plain drive's archive, and the
/// rendered plan says so; an encrypted drive keeps it (pure: the plan decides).
#[test]
fn a_secret_in_the_snapshot_is_left_out_of_a_plain_drive_only() {
    let secret = super::sets::LeftOut {
        path: "/home/u/key".into(),
        field: "identity_file of destination safe".into(),
        named_by: crate::settings::NamedBy::Config,
        in_snapshot: "home/u/.config/dbackup/identity.txt".into(),
    };
    let mut w = world();
    w.sets[0].secrets = vec![secret.clone()];
    let p = plan::plan(&w, opts());
    assert_eq!(p.destinations[0].archives[0].left_out, vec![secret.clone()]);
    let line = "left out of T9: /home/u/key, the config's identity_file of destination safe; this destination is \
                not encrypted";
    assert!(plan::render(&p).contains(line), "{}", plan::render(&p));

    w.destinations[0].encryption = Some(crate::archive::EncryptionRecord {
        format: crate::archive::crypt::AGE_FORMAT.into(),
        recipients: vec!["age1x".into()],
        passphrase: false,
    });
    let p = plan::plan(&w, opts());
    assert!(p.destinations[0].archives[0].left_out.is_empty());
    assert!(!plan::render(&p).contains("left out of"));
}

/// Two configs sharing the backup root and a cloud destination's name, the first's upload killed in this very second
/// on its own bucket or prefix: the second's upload takes the next second, never the stamp of the kept journal (one
/// journal file per stamp: it would be written over, then removed, and the first's upload restart from nothing).
#[test]
fn an_upload_journal_under_the_destinations_name_takes_its_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let first = t("2026-12-07-091000");
    let mut cloud = super::cloud::tests::world(false);
    cloud.backup_root = dir.path().into();
    let mut w = world();
    w.clouds = vec![cloud];
    assert_eq!(super::fresh_stamp(&w, || first), first, "no journal yet");
    let journals = dir
        .path()
        .join(".upload-journals")
        .join(&w.clouds[0].settings.name);
    std::fs::create_dir_all(&journals).unwrap();
    std::fs::write(journals.join("2026-12-07-091000.json"), "{}").unwrap();
    assert_eq!(
        super::fresh_stamp(&w, crate::snapshot::tests::clock_moving_on(first)),
        t("2026-12-07-091001")
    );
}
