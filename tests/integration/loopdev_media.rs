//! Destination detection (`dbackup::media`) on real loop devices: the emulated exFAT T9 and ext4, xfs, btrfs drives,
//! plugged, pulled, read-only, full, foreign or dead; and the bench's own guards.

use std::fs;
use std::path::{Path, PathBuf};

use dbackup::{
    Absence, DestinationSettings, Detected, ExternalMode, Found, MIN_FREE_BYTES, MediaError,
    MediaInfo, Presence, detect_drive, detect_drives, ensure_marker, select_drives,
    select_drives_or_fail,
};
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::drive::t9_and_spare;

const MIB: u64 = 1 << 20;

fn dest(name: &str, path: &Path, priority: i32) -> DestinationSettings {
    DestinationSettings {
        name: name.to_string(),
        path: path.to_path_buf(),
        priority,
        fs_uuid: None,
        fs_label: None,
        retention: dbackup::RetentionPolicy::last(5),
        keep_at_least: 2,
        require_mount: true,
        encryption: None,
        schedule: None,
    }
}

fn on(drive: &Drive, name: &str) -> DestinationSettings {
    dest(name, drive.mount_point(), 0)
}

/// A 64 MiB exFAT drive labelled T9 and the destination T9 on it; `None` when the test skips.
fn t9_with_settings() -> Option<(Drive, DestinationSettings)> {
    let (t9, _) = loopdev::drive_or_skip(Fs::Exfat, "T9", 64 * MIB)?;
    let settings = on(&t9, "T9");
    Some((t9, settings))
}

#[track_caller]
fn present(p: Presence) -> MediaInfo {
    match p {
        Presence::Present(info) => info,
        Presence::Absent(why) => panic!("expected present, got absent: {why}"),
    }
}

#[track_caller]
fn absent(p: Presence) -> Absence {
    match p {
        Presence::Absent(why) => why,
        Presence::Present(info) => panic!("expected absent, got present: {info}"),
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::Local::now().fixed_offset()
}

#[test]
fn exfat_t9_is_present_with_label_uuid_and_no_symlinks() {
    let Some((t9, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    let uuid = t9.uuid();
    let settings = DestinationSettings {
        fs_label: Some("T9".into()),
        fs_uuid: Some(uuid.to_lowercase()),
        ..on(&t9, "T9")
    };
    let info = present(detect_drive(&settings));
    assert_eq!(
        info.mount_fs_type, "fuseblk",
        "mount.exfat-fuse mounts as fuseblk"
    );
    assert_eq!(info.fs_type, "exfat", "the real type comes from the device");
    assert_eq!(info.device.as_deref(), Some(t9.device()));
    assert_eq!(info.source, t9.device().to_string_lossy());
    assert_eq!(info.label.as_deref(), Some("T9"));
    assert_eq!(info.uuid.as_deref(), Some(uuid.as_str()));
    assert!(info.is_mount_point);
    assert_eq!(info.mount_point, t9.mount_point());
    assert!(!info.symlinks && !info.hard_links);
    assert_eq!(info.max_file_size, None);
    assert!(
        info.total_bytes > 60 * MIB && info.total_bytes <= 64 * MIB,
        "{info}"
    );
    assert!(
        info.free_bytes > 50 * MIB && info.free_bytes <= info.total_bytes,
        "{info}"
    );
    assert_eq!(info.marker, None);
    assert!(
        listing(t9.mount_point()).is_empty(),
        "detection left nothing behind: {:?}",
        listing(t9.mount_point())
    );
    assert!(info.to_string().contains("(exfat on /dev/loop"), "{info}");
}

#[test]
fn marker_is_written_once_on_exfat_and_reported_afterwards() {
    let Some((t9, settings)) = t9_with_settings() else {
        return;
    };
    let info = present(detect_drive(&settings));
    let marker = ensure_marker(&settings, &info, now()).unwrap();
    assert_eq!(marker.destination, "T9");
    assert_eq!(marker.fs_label.as_deref(), Some("T9"));
    assert_eq!(marker.fs_uuid, info.uuid);
    assert_eq!(
        listing(&t9.mount_point().join("backups")),
        [".dbackup-destination.json"],
        "no temporary file left"
    );
    let again = present(detect_drive(&settings));
    assert_eq!(again.marker.as_ref(), Some(&marker));
    // The marker survives the drive being pulled and plugged in again (it reached the device).
    t9.unmount();
    t9.mount();
    assert_eq!(present(detect_drive(&settings)).marker, Some(marker));
}

#[test]
fn pulled_t9_leaves_an_empty_directory_that_is_never_written() {
    let Some((t9, settings)) = t9_with_settings() else {
        return;
    };
    let before = present(detect_drive(&settings));
    t9.unmount();
    let why = absent(detect_drive(&settings));
    let Absence::NotMounted {
        found: Found::EmptyDirectory { on },
        ..
    } = &why
    else {
        panic!("{why:?}")
    };
    assert!(t9.mount_point().starts_with(on));
    assert_eq!(why.kind(), "not_mounted");
    let msg = format!("T9: {why}");
    assert!(
        msg.starts_with(&format!(
            "T9: not mounted: {} is an empty directory on {}",
            t9.mount_point().display(),
            on.display()
        )),
        "{msg}"
    );
    // A writer holding the old answer is stopped before it writes anything.
    let err = ensure_marker(&settings, &before, now()).unwrap_err();
    assert!(matches!(err, MediaError::Gone { .. }), "{err}");
    assert!(
        listing(t9.mount_point()).is_empty(),
        "nothing was written into the mount point: {:?}",
        listing(t9.mount_point())
    );
}

#[test]
fn killed_fuse_daemon_is_unreachable() {
    let Some((t9, settings)) = t9_with_settings() else {
        return;
    };
    let info = present(detect_drive(&settings));
    let pid = t9.kill_fuse();
    assert!(pid > 0);
    assert!(t9.is_mounted(), "the dead mount stays listed");
    let why = absent(detect_drive(&settings));
    assert_eq!(why.kind(), "unreachable", "{why}");
    assert!(
        why.to_string()
            .contains("transport endpoint is not connected"),
        "{why}"
    );
    assert!(info.check_still_present().is_err());
    // The guard still cleans up a dead mount; the drive can be mounted again.
    t9.unmount();
    t9.mount();
    present(detect_drive(&settings));
}

#[test]
fn other_label_or_uuid_is_another_drive() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "SANDISK", 64 * MIB) else {
        return;
    };
    let by_label = DestinationSettings {
        fs_label: Some("T9".into()),
        ..on(&drive, "T9")
    };
    let why = absent(detect_drive(&by_label));
    let Absence::OtherDrive { fs_type, found, .. } = &why else {
        panic!("{why:?}")
    };
    assert_eq!(fs_type, "exfat");
    assert_eq!(found.label.as_deref(), Some("SANDISK"));
    assert!(
        why.to_string()
            .contains("has label \"SANDISK\", expected label \"T9\""),
        "{why}"
    );

    let by_uuid = DestinationSettings {
        fs_uuid: Some("0000-0000".into()),
        ..on(&drive, "T9")
    };
    let why = absent(detect_drive(&by_uuid));
    assert!(
        why.to_string().contains(&format!(
            "has uuid {}, expected uuid 0000-0000",
            drive.uuid()
        )),
        "{why}"
    );
    assert!(
        listing(drive.mount_point()).is_empty(),
        "a foreign drive is not written to"
    );
}

#[test]
fn read_only_mounts_are_read_only() {
    if !loopdev::require(&[Fs::Exfat, Fs::Ext4]) {
        return;
    }
    for drive in [Drive::exfat("T9", 64 * MIB), Drive::ext4("T9", 64 * MIB)] {
        let settings = on(&drive, "T9");
        present(detect_drive(&settings));
        drive.remount_ro();
        let why = absent(detect_drive(&settings));
        assert_eq!(why.kind(), "read_only", "{:?}: {why}", drive.fs());
        assert!(why.to_string().contains("is mounted read-only"), "{why}");
        drive.remount_rw();
        present(detect_drive(&settings));
    }
}

#[test]
fn marker_of_another_destination_is_refused() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    let nas = on(&drive, "offsite");
    ensure_marker(&nas, &present(detect_drive(&nas)), now()).unwrap();
    let why = absent(detect_drive(&on(&drive, "T9")));
    let Absence::OtherDestination {
        destination,
        marker,
        ..
    } = &why
    else {
        panic!("{why:?}")
    };
    assert_eq!(destination, "offsite");
    assert_eq!(
        marker,
        &drive
            .mount_point()
            .join("backups/.dbackup-destination.json")
    );
    present(detect_drive(&nas));
}

#[test]
fn full_drive_is_full() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 16 * MIB) else {
        return;
    };
    drive.fill(64 * 1024);
    let why = absent(detect_drive(&on(&drive, "T9")));
    let Absence::Full {
        free_bytes,
        total_bytes,
        ..
    } = why
    else {
        panic!("{why:?}")
    };
    assert!(
        free_bytes < MIN_FREE_BYTES && total_bytes > 15 * MIB,
        "{free_bytes} of {total_bytes}"
    );
}

#[test]
fn kernel_filesystems_are_detected_with_their_types() {
    if !loopdev::require(&[Fs::Ext4, Fs::Xfs, Fs::Btrfs]) {
        return;
    }
    for drive in [
        Drive::ext4("EXT", 64 * MIB),
        Drive::xfs("XFS", 0),
        Drive::btrfs("BTR", 0),
    ] {
        let settings = DestinationSettings {
            fs_label: Some(drive.label().into()),
            fs_uuid: Some(drive.uuid()),
            ..on(&drive, "d")
        };
        let info = present(detect_drive(&settings));
        assert_eq!(info.fs_type, drive.fs().name());
        assert_eq!(info.mount_fs_type, drive.fs().name());
        assert_eq!(
            info.device.as_deref(),
            Some(drive.device()),
            "{:?}",
            drive.fs()
        );
        assert_eq!(info.label.as_deref(), Some(drive.label()));
        assert!(info.symlinks && info.hard_links, "{:?}", drive.fs());
        assert_eq!(info.max_file_size, None);
        assert!(info.free_bytes > 0 && info.total_bytes >= info.free_bytes);
        // lost+found on ext4 is the filesystem's own; detection adds nothing.
        let expected: &[&str] = if drive.fs() == Fs::Ext4 {
            &["lost+found"]
        } else {
            &[]
        };
        assert_eq!(listing(drive.mount_point()), expected);
    }
}

#[test]
fn mount_point_with_spaces_is_found_in_mountinfo() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "My T9", 64 * MIB) else {
        return;
    };
    assert!(drive.mount_point().ends_with("My T9"));
    let info = present(detect_drive(&DestinationSettings {
        fs_label: Some("My T9".into()),
        ..on(&drive, "T9")
    }));
    assert_eq!(info.label.as_deref(), Some("My T9"));
    assert!(info.is_mount_point);
}

#[test]
fn directory_on_a_drive_needs_require_mount_false() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    let sub = drive.mount_point().join("dbackup");
    std::fs::create_dir(&sub).unwrap();
    let why = absent(detect_drive(&dest("T9", &sub, 0)));
    assert_eq!(
        why,
        Absence::NotMounted {
            path: sub.clone(),
            found: Found::EmptyDirectory {
                on: drive.mount_point().to_path_buf()
            }
        }
    );
    let info = present(detect_drive(&DestinationSettings {
        require_mount: false,
        ..dest("T9", &sub, 0)
    }));
    assert!(!info.is_mount_point);
    assert_eq!(info.mount_point, drive.mount_point());
    assert_eq!(info.fs_type, "exfat");
    assert_eq!(info.label.as_deref(), Some("T9"));
}

#[test]
fn first_and_all_with_the_first_destination_absent() {
    let Some((t9, spare)) = t9_and_spare() else {
        return;
    };
    let dests = [
        dest("T9", t9.mount_point(), 10),
        dest("spare", spare.mount_point(), 5),
    ];
    let names = |mode, detected: &[Detected]| -> Vec<String> {
        select_drives(mode, detected)
            .iter()
            .map(|d| d.destination.name.clone())
            .collect()
    };

    t9.unmount();
    let detected = detect_drives(&dests, false);
    assert_eq!(
        detected[0].absence().map(Absence::kind),
        Some("not_mounted")
    );
    assert_eq!(names(ExternalMode::First, &detected), ["spare"]);
    assert_eq!(names(ExternalMode::All, &detected), ["spare"]);

    t9.mount();
    let detected = detect_drives(&dests, false);
    assert_eq!(names(ExternalMode::First, &detected), ["T9"]);
    assert_eq!(names(ExternalMode::All, &detected), ["T9", "spare"]);

    t9.unmount();
    spare.unmount();
    let err =
        select_drives_or_fail(ExternalMode::First, &detect_drives(&dests, false)).unwrap_err();
    assert_eq!(err.code, dbackup::Exit::NoDestination);
    assert!(
        err.message.contains(&format!(
            "T9: not mounted: {} is an empty directory",
            t9.mount_point().display()
        )),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&format!(
            "spare: not mounted: {} is an empty directory",
            spare.mount_point().display()
        )),
        "{}",
        err.message
    );
}

// ---- the bench's own guards ----

/// Reads a file with its cached pages dropped first, so the answer comes from the device.
fn read_uncached(path: &Path) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a valid open fd; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    drop(file);
    std::fs::read(path).unwrap()
}

#[test]
fn flip_byte_behind_fs_corrupts_a_file_on_exfat_and_ext4() {
    if !loopdev::require(&[Fs::Exfat, Fs::Ext4]) {
        return;
    }
    for drive in [Drive::exfat("T9", 32 * MIB), Drive::ext4("T9", 32 * MIB)] {
        let needle = format!("dbackup-needle-{:?}-{}", drive.fs(), std::process::id());
        let content: Vec<u8> = needle
            .bytes()
            .chain(std::iter::repeat_n(b'x', 100_000))
            .collect();
        let file = drive.mount_point().join("archive.tar");
        let mut f = std::fs::File::create(&file).unwrap();
        std::io::Write::write_all(&mut f, &content).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let hits = drive.find_on_device(needle.as_bytes());
        assert_eq!(hits.len(), 1, "{:?}: needle found at {hits:?}", drive.fs());
        drive.flip_byte_behind_fs(hits[0] + 3);
        let after = read_uncached(&file);
        assert_eq!(after.len(), content.len());
        let diffs: Vec<usize> = (0..content.len())
            .filter(|&i| after[i] != content[i])
            .collect();
        assert_eq!(
            diffs,
            [3],
            "{:?}: exactly the flipped byte differs",
            drive.fs()
        );
        assert_eq!(after[3], content[3] ^ 0xff);
    }
}

/// The image a loop device is attached to (its name without the " (deleted)" the kernel adds once it is removed).
fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

#[test]
fn drive_guard_cleans_up_even_when_the_test_panics() {
    if !loopdev::require(&[Fs::Exfat, Fs::Ext4]) {
        return;
    }
    for fs in [Fs::Exfat, Fs::Ext4] {
        let (tx, rx) = std::sync::mpsc::channel();
        let result = std::panic::catch_unwind(move || {
            let drive = Drive::new(fs, "T9", 32 * MIB);
            tx.send((
                drive.device().to_path_buf(),
                drive.image().to_path_buf(),
                drive.mount_point().to_path_buf(),
                drive.dir().to_path_buf(),
            ))
            .unwrap();
            if fs == Fs::Exfat {
                assert_eq!(drive.fuse_pids().len(), 1);
            }
            std::fs::write(drive.mount_point().join("open-file"), "x").unwrap();
            panic!("simulated test failure");
        });
        assert!(result.is_err());
        let (device, image, mount_point, dir) = rx.recv().unwrap();
        assert!(
            loopdev::mounts()
                .iter()
                .all(|m| m.mount_point != mount_point),
            "{:?}: {} is still mounted",
            fs,
            mount_point.display()
        );
        assert_ne!(
            backing_file(&device).as_deref(),
            Some(image.as_path()),
            "{:?}: {} is still attached",
            fs,
            device.display()
        );
        assert!(!dir.exists(), "{:?}: {} was not removed", fs, dir.display());
    }
}

#[test]
fn pull_lazily_unmounts_with_files_open() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 32 * MIB) else {
        return;
    };
    let mut open = std::fs::File::create(drive.mount_point().join("half.tar")).unwrap();
    std::io::Write::write_all(&mut open, b"partial").unwrap();
    drive.pull();
    assert!(!drive.is_mounted());
    assert!(listing(drive.mount_point()).is_empty());
    assert_eq!(
        absent(detect_drive(&on(&drive, "T9"))).kind(),
        "not_mounted"
    );
    drop(open);
}

#[test]
fn missing_tools_skip_outside_ci_and_fail_in_ci() {
    assert_eq!(testkit::check_tools(&["losetup"], false), Ok(()));
    let skip = testkit::check_tools(&["no-such-mkfs"], false).unwrap_err();
    assert!(skip.contains("missing no-such-mkfs"), "{skip}");
    let failed = std::panic::catch_unwind(|| testkit::check_tools(&["no-such-mkfs"], true));
    assert!(failed.is_err(), "in CI a missing tool fails the test");
}

/// A skip says why, leaves a record for the summary of `cargo xtask test` (which lists skipped tests by reason), and
/// under CI fails the test. Before: a skipping test printed a line (or nothing) and libtest reported it as passed,
/// even under CI for the 37 root-only tests.
#[test]
fn a_skip_is_recorded_and_fails_under_ci() {
    let dir = tempfile::tempdir().unwrap();
    testkit::skip_with("needs something\tthat\nis missing", false, Some(dir.path()));
    let records: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(
        records,
        ["loopdev_media::a_skip_is_recorded_and_fails_under_ci\tneeds something that is missing\n"]
    );
    let failed =
        std::panic::catch_unwind(|| testkit::skip_with("needs root", true, Some(dir.path())));
    assert!(failed.is_err(), "under CI a skip fails the test");
}

/// A drive whose loop device a process still holds when the test ends fails that test, naming the process (the
/// guard used to print a line and let the test pass, leaving the device behind). Root only.
#[test]
fn a_leaked_drive_fails_the_test_that_leaked_it() {
    let Some((drive, _)) = loopdev::drive_or_skip(Fs::Ext4, "LEAK", 8 << 20) else {
        return;
    };
    drive.unmount();
    let device = drive.device().to_path_buf();
    let holder = std::process::Command::new("sleep")
        .arg("60")
        .stdin(fs::File::open(&device).unwrap())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(drive)));
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
    let msg = dropped.expect_err("the leak fails the test");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("LEAK leaked") && msg.contains(&format!("processes [{pid}]")),
        "{msg}"
    );
}
