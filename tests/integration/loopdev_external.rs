//! `dbackup external` end to end: real snapshots (collected with rsync) written to emulated drives on real loop devices
//! (exFAT through mount.exfat-fuse, ext4), checked with GNU tar and sha256sum; and every fault of the issue: drive
//! absent, wrong drive, full before and during the write, pulled, killed fuse daemon, corruption, kill -9, two
//! destinations. Root-only tests skip with a message; the tests at the end need no root (plain directories with
//! `require_mount: false`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dbackup::{
    ArchiveFiles, BACKUP_META_FILE, DestinationStatus, ExternalPlan, LATEST_FILE, LATEST_LINK,
    NoProgress, WrittenFile, drop_device_cache, list_drive_backups, list_snapshots, parse_stamp,
    read_back, read_drive_latest, verify_archive,
};
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::drive::{
    assert_nothing_promoted, assert_old_backup_intact, assert_same_tree, assert_sums_cover,
    assert_sums_pass, backups, collect, collected_for, collected_for_t9, collected_on, config,
    content, describe, destination, external, gnu_extract, listing, meta_of, needle, new_backup,
    report, sample, sha256sum_check, snapshot_dir, spawn_caught_writing, stopped_while_writing,
    t9_and_spare,
};
use crate::harness::Test;

const MIB: u64 = 1 << 20;

#[test]
fn exfat_t9_gets_verified_archives_that_gnu_tar_extracts() {
    let Some((t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 128 * MIB) else {
        return;
    };
    let t = collected_for_t9(&mp, 3 * MIB);

    let r = external(&t, &[], 0);
    assert_eq!(r.destinations.len(), 1);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Written, "{:?}", d.error);
    let stamp = d.backup.clone().unwrap();
    assert!(parse_stamp(&stamp).is_some(), "{stamp}");
    let dir = mp.join("backups").join(&stamp);
    assert_eq!(d.backup_path.as_deref(), Some(dir.as_path()));
    assert_eq!(
        listing(&dir),
        [
            "backup.json",
            "config.index.jsonl",
            "config.tar",
            "data.index.jsonl",
            "data.tar",
            "system",
            "verification.sha256"
        ]
    );
    assert_eq!(
        listing(&mp.join("backups")),
        [".dbackup-destination.json", &stamp, LATEST_FILE]
    );
    assert_eq!(
        fs::read_to_string(mp.join("backups").join(LATEST_FILE)).unwrap(),
        format!("{stamp}\n")
    );
    assert_eq!(
        listing(&mp),
        ["REPORT.html", "backups"],
        "nothing else at the drive's root but the drive's page"
    );
    assert_sums_cover(
        &dir,
        &[
            "config.tar",
            "config.index.jsonl",
            "data.tar",
            "data.index.jsonl",
            "backup.json",
        ],
    );

    // backup.json says what it holds and how it was verified.
    let meta = meta_of(&dir);
    assert!(meta.verified);
    assert_eq!(meta.stamp, stamp);
    assert_eq!(meta.destination, "T9");
    assert_eq!(meta.filesystem.fs_type, "exfat");
    assert_eq!(meta.filesystem.label.as_deref(), Some("T9"));
    assert_eq!(
        meta.read_back.device_cache_dropped,
        Some(true),
        "exfat-fuse: the loop device's cache was dropped before reading back"
    );
    assert_eq!(meta.set_names(), ["config", "data"]);

    // GNU tar extracts each archive to a tree identical to its snapshot; the library verifier agrees with the index.
    for set in &meta.sets {
        assert!(set.snapshot_complete);
        let files = ArchiveFiles::discover(&dir, &set.archive[0].name).unwrap();
        assert_eq!(files.len(), set.tar_bytes);
        let work = t.path(&format!("extract-{}", set.set));
        let out = gnu_extract(&files, &work);
        assert_same_tree(&snapshot_dir(&t, &set.snapshot), &out);
        let index = fs::File::open(dir.join(&set.index[0].name)).unwrap();
        let v = verify_archive(
            &set.set,
            files.open().unwrap(),
            std::io::BufReader::new(index),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(Some(v.tar_sha256), set.tar_sha256);
    }
    let data = meta.sets.iter().find(|s| s.set == "data").unwrap();
    assert_eq!(
        data.hard_links, 1,
        "the hard-linked pair is one file and a link"
    );
    assert!(
        data.sources[0].in_snapshot.ends_with("home/data"),
        "{:?}",
        data.sources
    );

    // It reached the drive: pulled and plugged in again, every sum still matches.
    t9.unmount();
    t9.mount();
    assert_sums_pass(&dir);
    assert_eq!(backups(&mp), [stamp]);
}

#[test]
fn seven_runs_keep_the_five_newest_and_leave_everything_else_alone() {
    let Some((_t9, mp, t)) = collected_on(Fs::Exfat, "T9", 128 * MIB) else {
        return;
    };
    // Things that are not dbackup's.
    fs::create_dir_all(mp.join("photos/2024")).unwrap();
    fs::write(mp.join("photos/2024/cat.jpg"), content(5000, 1)).unwrap();
    fs::write(mp.join("notes.txt"), "mine\n").unwrap();
    fs::create_dir_all(mp.join("backups/my-old-stuff")).unwrap();
    fs::write(mp.join("backups/my-old-stuff/a"), "a").unwrap();
    fs::create_dir_all(mp.join("backups/2020-01-01-000000")).unwrap();
    fs::write(mp.join("backups/2020-01-01-000000/hand-made"), "h").unwrap();
    fs::write(mp.join("backups/readme.txt"), "r").unwrap();
    let before = describe(&mp);

    let mut stamps = Vec::new();
    // Fulls: retention by count removes the oldest (incrementals would keep their bases, see
    // `incremental::retention_keeps_the_chain_of_a_kept_backup`).
    for run in 0..7 {
        let r = external(&t, &["--full"], 0);
        let d = &r.destinations[0];
        stamps.push(d.backup.clone().unwrap());
        let removed: Vec<&str> = d.removed.iter().map(|x| x.name.as_str()).collect();
        let want: &[&str] = if run >= 5 { &[&stamps[run - 5]] } else { &[] };
        assert_eq!(removed, want, "run {run}");
    }
    assert_eq!(backups(&mp), stamps[2..], "the five newest");
    assert_eq!(
        read_drive_latest(&mp.join("backups")).as_deref(),
        Some(stamps[6].as_str())
    );
    // Every file that was there before is still there, unchanged.
    let after = describe(&mp);
    for (path, node) in before.0.iter().filter(|(p, _)| *p != Path::new("backups")) {
        assert_eq!(after.0.get(path), Some(node), "{} changed", path.display());
    }
    let mut names = listing(&mp.join("backups"));
    names.retain(|n| !stamps.contains(n));
    assert_eq!(
        names,
        [
            ".dbackup-destination.json",
            "2020-01-01-000000",
            LATEST_FILE,
            "my-old-stuff",
            "readme.txt"
        ]
    );
    // The dry run says why the stamp-named directory is left alone.
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    out.stdout_has("note      2020-01-01-000000 is not used nor removed");
}

#[test]
fn ext4_destination_gets_a_latest_symlink() {
    let Some((_drive, mp)) = loopdev::drive_or_skip(Fs::Ext4, "BACKUP", 64 * MIB) else {
        return;
    };
    let t = collected_for("disk", &mp, 0);
    let first = new_backup(&t);
    let second = new_backup(&t);
    let link = mp.join("backups").join(LATEST_LINK);
    assert_eq!(fs::read_link(&link).unwrap(), Path::new(&second));
    assert!(link.join(BACKUP_META_FILE).is_file(), "the link resolves");
    let mode = fs::metadata(mp.join("backups").join(&second))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "a backup directory is private");
    assert!(!mp.join("backups").join(LATEST_FILE).exists());
    assert_eq!(backups(&mp), [first, second.clone()]);
    let meta = meta_of(&mp.join("backups").join(&second));
    assert_eq!(meta.read_back.device_cache_dropped, None);
    assert_eq!(
        meta.read_back.methods,
        [dbackup::ReadBackMethod::Direct],
        "ext4 reads back with O_DIRECT"
    );
    assert_sums_pass(&mp.join("backups").join(&second));
}

#[test]
fn absent_drive_writes_nothing_and_exits_5() {
    let Some((t9, mp, t)) = collected_on(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    t9.unmount();
    for args in [&["external"][..], &["--dry-run", "external"]] {
        let out = t.cmd().args(args).status(5);
        out.stderr_has(&format!(
            "no external destination present:\n  T9: not mounted: {} is an empty directory on",
            mp.display()
        ));
        assert!(
            listing(&mp).is_empty(),
            "nothing written into the mount point"
        );
    }
}

#[test]
fn wrong_drive_is_refused() {
    // Another label than the destination wants.
    let Some((_other, mp)) = loopdev::drive_or_skip(Fs::Exfat, "SANDISK", 64 * MIB) else {
        return;
    };
    let t = collected_for_t9(&mp, 0);
    let out = t.cmd().args(["external"]).status(5);
    out.stderr_has("T9: other drive: the exfat filesystem at")
        .stderr_has("has label \"SANDISK\", expected label \"T9\"");
    assert!(listing(&mp).is_empty());

    // A drive that belongs to another destination (its marker says so).
    let theirs = Test::new().config(&config(&[destination("OFFSITE", &mp, "")], "first", 5));
    sample(&theirs, 0);
    collect(&theirs);
    external(&theirs, &[], 0);
    let before = listing(&mp.join("backups"));
    let t2 = Test::new().config(&config(&[destination("T9", &mp, "")], "first", 5));
    sample(&t2, 0);
    collect(&t2);
    let out = t2.cmd().args(["external"]).status(5);
    out.stderr_has("T9: other destination: the drive belongs to destination \"OFFSITE\"");
    assert_eq!(listing(&mp.join("backups")), before, "nothing written");
}

#[test]
fn not_enough_space_is_refused_before_anything_is_written() {
    let Some((_t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 16 * MIB) else {
        return;
    };
    let t = collected_for("T9", &mp, 24 * MIB);
    let out = t.cmd().args(["--dry-run", "external"]).status(1);
    out.stdout_has("REFUSED   not enough space");
    let r = external(&t, &[], 1);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Refused);
    let why = d.error.as_deref().unwrap();
    assert!(
        why.starts_with("not enough space: the backup needs 2") && why.contains(" MiB free"),
        "{why}"
    );
    assert!(why.ends_with("nothing was written"), "{why}");
    assert!(
        listing(&mp).is_empty(),
        "not even the marker: {:?}",
        listing(&mp)
    );
}

/// A 256 MiB exFAT drive with one good backup (small data), then a 96 MiB file collected: the next run writes long
/// enough to be caught in the act. The drive, its mount point, the world and the first backup; `None` when skipped.
fn drive_with_one_backup() -> Option<(Drive, PathBuf, Test, String)> {
    let (t9, mp, t) = collected_on(Fs::Exfat, "T9", 256 * MIB)?;
    let first = new_backup(&t);
    t.write("home/data/big.bin", content(96 * MIB as usize, 7));
    collect(&t);
    Some((t9, mp, t, first))
}

#[test]
fn drive_full_mid_archive_fails_cleanly_and_the_next_run_succeeds() {
    let Some((t9, mp, t, old)) = drive_with_one_backup() else {
        return;
    };
    // The space check passes; then, while dbackup is stopped mid-archive, another program fills the drive.
    let (fill, temp, code, stderr) =
        stopped_while_writing(&t, &mp, "data.tar", 2 * MIB, || t9.fill(0));
    eprintln!("{stderr}");
    assert_nothing_promoted(code, &stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("was removed"),
        "the drive is still there, so the partial backup goes at once: {stderr}"
    );
    assert!(
        stderr.contains("the drive filled up while writing")
            && stderr.contains("free space on it and run again"),
        "it says what happened and what to do: {stderr}"
    );
    assert!(!temp.exists());
    assert_old_backup_intact(&mp, &old);

    fs::remove_file(fill).unwrap();
    let r = external(&t, &[], 0);
    let new = r.destinations[0].backup.clone().unwrap();
    assert_eq!(backups(&mp), [old, new.clone()]);
    assert_sums_pass(&mp.join("backups").join(&new));
}

#[test]
fn drive_pulled_mid_archive_fails_and_a_later_run_succeeds() {
    let Some((t9, mp, t, old)) = drive_with_one_backup() else {
        return;
    };
    // umount -l with the archive open: writes go on into a detached filesystem.
    let ((), _temp, code, stderr) =
        stopped_while_writing(&t, &mp, "data.tar", 2 * MIB, || t9.pull());
    eprintln!("{stderr}");
    assert_nothing_promoted(code, &stderr);
    assert!(
        listing(&mp).is_empty(),
        "nothing reached the root disk's mount point: {:?}",
        listing(&mp)
    );
    // Plugged in again: the old backup is whole, the next run removes the leftover and succeeds.
    t9.unmount();
    t9.mount();
    assert_old_backup_intact(&mp, &old);
    let r = external(&t, &[], 0);
    let d = &r.destinations[0];
    let new = d.backup.clone().unwrap();
    assert_eq!(backups(&mp), [old, new]);
    assert!(
        !listing(&mp.join("backups"))
            .iter()
            .any(|n| n.starts_with(".tmp-")),
        "{:?}",
        listing(&mp.join("backups"))
    );
}

#[test]
fn killed_fuse_daemon_mid_archive_fails_and_a_later_run_succeeds() {
    let Some((t9, mp, t, old)) = drive_with_one_backup() else {
        return;
    };
    // The drive dies under the running backup.
    let (_, _temp, code, stderr) =
        stopped_while_writing(&t, &mp, "data.tar", 2 * MIB, || t9.kill_fuse());
    eprintln!("{stderr}");
    assert_eq!(code, 1, "{stderr}");
    // ENOTCONN for calls after the daemon died; ECONNABORTED for the write it was serving when it died.
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("transport endpoint is not connected")
            || lower.contains("software caused connection abort"),
        "{stderr}"
    );
    assert!(stderr.contains("is removed by the next run"), "{stderr}");
    t9.unmount();
    t9.mount();
    assert_old_backup_intact(&mp, &old);
    let r = external(&t, &[], 0);
    let d = &r.destinations[0];
    assert_eq!(backups(&mp), [old, d.backup.clone().unwrap()]);
    assert_eq!(
        d.cleaned.len(),
        1,
        "the dead run's leftover was removed: {d:?}"
    );
    assert!(d.cleaned[0].starts_with(".tmp-"));
}

#[test]
fn kill_9_mid_archive_is_never_listed_and_the_next_run_succeeds() {
    let Some((_t9, mp, t, old)) = drive_with_one_backup() else {
        return;
    };
    let (mut child, temp) = spawn_caught_writing(&t, &mp, 2 * MIB);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        temp.exists(),
        "the half-written backup is still on the drive"
    );
    assert_old_backup_intact(&mp, &old);
    let l = list_drive_backups(&mp.join("backups")).unwrap();
    assert_eq!(l.leftovers.len(), 1, "listed only as a leftover");
    // A dry run says it will go.
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    let temp_name = temp.file_name().unwrap().to_string_lossy().into_owned();
    out.stdout_has(&format!("cleanup   would remove {temp_name}"));
    let r = external(&t, &[], 0);
    let d = &r.destinations[0];
    assert_eq!(d.cleaned, [temp_name]);
    assert!(!temp.exists());
    assert_eq!(backups(&mp), [old, d.backup.clone().unwrap()]);
}

#[test]
fn corruption_behind_the_filesystem_is_detected() {
    let Some((t9, mp, t)) = collected_on(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    let stamp = new_backup(&t);
    let dir = mp.join("backups").join(&stamp);
    let meta = meta_of(&dir);
    let data = meta.sets.iter().find(|s| s.set == "data").unwrap();

    let found = t9.find_on_device(&needle());
    assert_eq!(found.len(), 1, "the needle is in data.tar once: {found:?}");
    t9.flip_byte_behind_fs(found[0] + 40);

    // The read-back dbackup does before promoting (the page cache dropped, the device's too) sees it...
    drop_device_cache(t9.device()).unwrap();
    let written: Vec<WrittenFile> = data
        .archive
        .iter()
        .map(|f| WrittenFile {
            path: dir.join(&f.name),
            bytes: f.bytes,
            sha256: f.sha256,
        })
        .collect();
    let err = read_back(&written).unwrap_err();
    assert!(
        err.to_string().contains("data.tar reads back with sha256"),
        "{err}"
    );
    // ...so do sha256sum and the verifier, which names the file.
    t9.unmount();
    t9.mount();
    let (ok, out) = sha256sum_check(&dir);
    assert!(!ok);
    assert!(
        out.contains("data.tar: FAILED") && out.contains("config.tar: OK"),
        "{out}"
    );
    let files = ArchiveFiles::discover(&dir, "data.tar").unwrap();
    let index = fs::File::open(dir.join("data.index.jsonl")).unwrap();
    let err = verify_archive(
        "data.tar",
        files.open().unwrap(),
        std::io::BufReader::new(index),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("home/data/projects/needle.txt")
            && err.to_string().contains("the content is damaged"),
        "{err}"
    );
}

#[test]
fn two_destinations_first_absent_then_all() {
    let Some((t9, spare)) = t9_and_spare() else {
        return;
    };
    let (a, b) = (
        t9.mount_point().to_path_buf(),
        spare.mount_point().to_path_buf(),
    );
    let dests = [
        destination("T9", &a, r#""priority": 10"#),
        destination("spare", &b, r#""priority": 1"#),
    ];
    let t = Test::new().config(&config(&dests, "first", 5));
    sample(&t, 0);
    collect(&t);

    // first mode, T9 absent: the spare gets it, and the report says why T9 did not.
    t9.unmount();
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    out.stdout_has("destination T9: not used: not mounted:");
    let r = external(&t, &[], 0);
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(r.destinations[0].name, "spare");
    assert_eq!(backups(&b).len(), 1);
    assert!(listing(&a).is_empty());

    // T9 back: first mode prefers it.
    t9.mount();
    let r = external(&t, &[], 0);
    assert_eq!(r.destinations[0].name, "T9");
    assert_eq!((backups(&a).len(), backups(&b).len()), (1, 1));

    // all mode writes both, under one stamp.
    let t = Test::new().config(&config(&dests, "all", 5));
    sample(&t, 0);
    collect(&t);
    let r = external(&t, &[], 0);
    let names: Vec<&str> = r.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["T9", "spare"]);
    assert_eq!((backups(&a).len(), backups(&b).len()), (2, 2));
    assert_eq!(backups(&a)[1], backups(&b)[1]);
    assert!(
        fs::symlink_metadata(b.join("backups/latest"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(a.join("backups/LATEST").is_file());

    // --destination picks one whatever the mode.
    let r = external(&t, &["--destination", "spare"], 0);
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(r.destinations[0].name, "spare");
}

// ---- Without root: plain directories as destinations (`require_mount: false`).

fn plain(t: &Test, keep: u32) -> PathBuf {
    let dest = t.path("dest");
    fs::create_dir_all(&dest).unwrap();
    let cfg = config(
        &[destination("plain", &dest, r#""require_mount": false"#)],
        "first",
        keep,
    );
    fs::write(t.path("config.json"), t.expand(&cfg)).unwrap();
    dest
}

fn plain_test(keep: u32) -> (Test, PathBuf) {
    let t = Test::new().config("{}");
    let dest = plain(&t, keep);
    (t, dest)
}

#[test]
fn dry_run_writes_nothing_and_shows_the_plan() {
    let (t, dest) = plain_test(5);
    sample(&t, 0);
    collect(&t);
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    for want in [
        "set config: config-",
        "set data: data-",
        "destination plain: ",
        "  marker    first use: would write",
        "  archive   config.tar",
        "  archive   data.tar",
        "  latest    ",
        "retention last 5: 1 kept, 0 removed",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in:\n{}", out.stdout);
    }
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
    let plan: ExternalPlan = t
        .cmd()
        .args(["--dry-run", "--json", "external", "--set", "data"])
        .status(0)
        .json();
    assert_eq!(plan.sets.len(), 1);
    assert_eq!(plan.destinations[0].archives[0].archive, "data.tar");
    assert!(plan.destinations[0].needed_bytes > plan.sets[0].estimate.as_ref().unwrap().tar_bytes);
    assert!(listing(&dest).is_empty());
}

#[test]
fn a_plain_directory_gets_a_verified_backup_and_the_run_is_logged() {
    let (t, dest) = plain_test(2);
    sample(&t, 0);
    collect(&t);
    let out = t.cmd().args(["external"]).status(0);
    let stamp = backups(&dest).pop().unwrap();
    assert_eq!(
        out.stdout.trim(),
        dest.join("backups").join(&stamp).display().to_string()
    );
    out.stderr_has("plain: data: data-");
    out.stderr_has(": verified");
    out.stderr_has(&format!("plain: backup {stamp} verified and in place at"));
    assert_sums_pass(&dest.join("backups").join(&stamp));
    let log = dbackup::read_runlog(&t.path("state/dbackup")).unwrap();
    let last = log.last().unwrap();
    assert_eq!((last.command.as_str(), last.exit), ("external", 0));
    assert_eq!(last.sets["destinations"][0]["backup"], stamp.as_str());
    // Retention 2 over three runs, fulls: the oldest goes. (Incrementals would keep it as their base, which
    // `incremental::retention_keeps_the_chain_of_a_kept_backup` checks.)
    external(&t, &["--full"], 0);
    let r = external(&t, &["--full"], 0);
    assert_eq!(r.destinations[0].removed[0].name, stamp);
    assert_eq!(backups(&dest).len(), 2);
}

#[test]
fn incomplete_snapshots_are_passed_over_unless_allowed() {
    let (t, dest) = plain_test(5);
    sample(&t, 0);
    collect(&t);
    // A newer snapshot of data that could not read some files (as rsync exit 23 makes it).
    t.write("home/data/new.txt", "new");
    collect(&t);
    let newest = list_snapshots(&t.root(), "data").unwrap().pop().unwrap();
    let meta_path = t.root().join(format!("{}.json", newest.name));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    v["complete"] = serde_json::json!(false);
    fs::write(&meta_path, v.to_string()).unwrap();

    let out = t.cmd().args(["--json", "external"]).status(3);
    let r = report(&out);
    let data = r.sets.iter().find(|s| s.set == "data").unwrap();
    assert_ne!(data.snapshot.as_deref(), Some(newest.name.as_str()));
    assert!(data.complete);
    out.stderr_has(&format!(
        "data: the newest snapshot {} is incomplete",
        newest.name
    ));
    let r = external(&t, &["--allow-incomplete"], 3);
    let data = r.sets.iter().find(|s| s.set == "data").unwrap();
    assert_eq!(data.snapshot.as_deref(), Some(newest.name.as_str()));
    let stamp = r.destinations[0].backup.clone().unwrap();
    let meta = meta_of(&dest.join("backups").join(stamp));
    assert!(
        !meta
            .sets
            .iter()
            .find(|s| s.set == "data")
            .unwrap()
            .snapshot_complete
    );
}

#[test]
fn usage_and_state_errors() {
    let (t, dest) = plain_test(5);
    // Nothing collected yet.
    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("run `dbackup collect` first");
    sample(&t, 0);
    collect(&t);
    let out = t
        .cmd()
        .args(["external", "--destination", "nope"])
        .status(2);
    out.stderr_has("there is no destination named \"nope\"; the config has: plain");
    let out = t.cmd().args(["external", "--set", "nope"]).status(2);
    out.stderr_has("there is no backup set named \"nope\"");
    // Another run holds the lock.
    let lock = dbackup::RunLock::acquire(&t.root()).unwrap();
    let out = t.cmd().args(["external"]).status(4);
    out.stderr_has("another dbackup run");
    drop(lock);
    assert!(listing(&dest).is_empty());
    // No destination configured at all.
    let t2 = Test::new().config(crate::harness::DATA_ONLY);
    sample(&t2, 0);
    collect(&t2);
    let out = t2.cmd().args(["external"]).status(5);
    out.stderr_has("no external destination is configured");
}

/// What people read, with what varies from run to run replaced.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
        (r"\.tmp-\[STAMP\]-\d+", ".tmp-[STAMP]-[PID]"),
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)(/s)?", "[SIZE]"),
        (r"\d+\.\ds", "[TIME]"),
        (r"host \S+,", "host [HOST],"),
        (r"on /dev/[^\s)]+", "on [DEVICE]"),
        (r"\(ext4|\(xfs|\(btrfs|\(overlay|\(tmpfs", "([FS]"),
    ]
}

#[test]
fn what_people_read() {
    let (t, _dest) = plain_test(5);
    sample(&t, 0);
    collect(&t);
    let tmp = t.dir.path().display().to_string();
    let plan = t.cmd().args(["--dry-run", "external"]).status(0);
    let run = t.cmd().args(["external"]).status(0);
    // The archives hold the test directory's ancestors: their number is $TMPDIR's depth.
    let mut f = filters();
    f.push((r"\b\d+ entries", "[N] entries"));
    insta::with_settings!({ filters => f }, {
        insta::assert_snapshot!("dry_run", plan.stdout.replace(&tmp, "[TMP]"));
    });
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("summary", run.stderr.replace(&tmp, "[TMP]"));
    });
}
