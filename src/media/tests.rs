//! Unit tests of destination detection on plain directories, of selection, and of the messages people read.

use super::*;

fn dest(name: &str, path: &Path, priority: i32) -> DestinationSettings {
    DestinationSettings {
        priority,
        ..DestinationSettings::example(name, path)
    }
}

fn plain(name: &str, path: &Path) -> DestinationSettings {
    DestinationSettings {
        require_mount: false,
        ..dest(name, path, 0)
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn absent(p: Presence) -> Absence {
    match p {
        Presence::Absent(a) => a,
        Presence::Present(info) => panic!("expected absent, got present: {info:?}"),
    }
}

fn present(p: Presence) -> MediaInfo {
    match p {
        Presence::Present(info) => info,
        Presence::Absent(a) => panic!("expected present, got absent: {a}"),
    }
}

fn now() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2025-11-26T02:14:00+01:00").unwrap()
}

#[test]
fn missing_path_is_not_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("media/payne/T9");
    let why = absent(detect(&dest("T9", &path, 0)));
    assert_eq!(
        why,
        Absence::NotMounted {
            path: path.clone(),
            found: Found::Missing
        }
    );
    assert_eq!(why.kind(), "not_mounted");
    assert!(!path.exists(), "detection never creates the mount point");
}

#[test]
fn empty_directory_on_the_parent_filesystem_is_not_mounted_and_stays_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("T9");
    std::fs::create_dir(&path).unwrap();
    let why = absent(detect(&dest("T9", &path, 0)));
    let Absence::NotMounted {
        found: Found::EmptyDirectory { on },
        ..
    } = &why
    else {
        panic!("{why:?}")
    };
    assert!(
        path.starts_with(on),
        "{} is on {}",
        path.display(),
        on.display()
    );
    assert!(why.to_string().starts_with(&format!(
        "not mounted: {} is an empty directory on {}",
        path.display(),
        on.display()
    )));
    assert!(
        entries(&path).is_empty(),
        "nothing was written into the mount point"
    );
}

#[test]
fn non_empty_directory_that_is_no_mount_point_is_not_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("stray"), "x").unwrap();
    let why = absent(detect(&dest("T9", tmp.path(), 0)));
    assert!(
        matches!(
            why,
            Absence::NotMounted {
                found: Found::Directory { .. },
                ..
            }
        ),
        "{why:?}"
    );
    assert!(
        why.to_string().contains("\"require_mount\": false"),
        "{why}"
    );
    assert_eq!(entries(tmp.path()), ["stray"]);
}

#[test]
fn a_file_is_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("T9");
    std::fs::write(&file, "").unwrap();
    assert_eq!(
        absent(detect(&dest("T9", &file, 0))),
        Absence::NotADirectory { path: file.clone() }
    );
    assert_eq!(
        absent(detect(&plain("T9", &file))).kind(),
        "not_a_directory"
    );
}

#[test]
fn plain_directory_without_require_mount_is_present_and_probe_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let info = present(detect(&plain("nas", tmp.path())));
    assert_eq!(info.path, tmp.path());
    assert!(!info.is_mount_point);
    assert!(info.resolved.starts_with(&info.mount_point));
    assert!(!info.mount_fs_type.is_empty());
    assert!(
        info.total_bytes >= info.free_bytes && info.free_bytes >= MIN_FREE_BYTES,
        "{info:?}"
    );
    assert_eq!(info.marker, None);
    assert!(
        entries(tmp.path()).is_empty(),
        "the writability probe was removed"
    );
}

#[test]
fn symlinked_path_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
    let info = present(detect(&plain("nas", &tmp.path().join("link"))));
    assert_eq!(info.path, tmp.path().join("link"));
    assert_eq!(
        info.resolved,
        std::fs::canonicalize(tmp.path().join("real")).unwrap()
    );
}

#[test]
fn label_or_uuid_mismatch_is_another_drive() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DestinationSettings {
        fs_label: Some("NO-SUCH-LABEL".into()),
        ..plain("T9", tmp.path())
    };
    let why = absent(detect(&d));
    let Absence::OtherDrive { expected, .. } = &why else {
        panic!("{why:?}")
    };
    assert_eq!(expected.label.as_deref(), Some("NO-SUCH-LABEL"));
    assert!(
        why.to_string().contains("expected label \"NO-SUCH-LABEL\""),
        "{why}"
    );
    let d = DestinationSettings {
        fs_uuid: Some("0000-0000".into()),
        ..plain("T9", tmp.path())
    };
    assert_eq!(absent(detect(&d)).kind(), "other_drive");
}

#[test]
fn marker_of_another_destination_is_refused_and_own_marker_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let nas = plain("nas", tmp.path());
    let info = present(detect(&nas));
    let written = ensure_marker(&nas, &info, now()).unwrap();
    assert_eq!(written.destination, "nas");
    assert_eq!(written.host, hostname());
    let again = present(detect(&nas));
    assert_eq!(again.marker.as_ref(), Some(&written));
    assert_eq!(
        ensure_marker(&nas, &again, now()).unwrap(),
        written,
        "an existing marker is kept"
    );

    let t9 = plain("T9", tmp.path());
    let why = absent(detect(&t9));
    assert_eq!(
        why,
        Absence::OtherDestination {
            path: tmp.path().to_path_buf(),
            marker: tmp.path().join(MARKER_PATH),
            destination: "nas".to_string()
        }
    );
    let err = ensure_marker(&t9, &info, now()).unwrap_err();
    assert!(
        matches!(err, MediaError::OtherDestination { ref destination, .. } if destination == "nas"),
        "{err}"
    );
}

#[test]
fn unreadable_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("backups")).unwrap();
    std::fs::write(tmp.path().join(MARKER_PATH), "garbage").unwrap();
    let why = absent(detect(&plain("T9", tmp.path())));
    assert_eq!(why.kind(), "bad_marker");
    assert!(why.to_string().contains("fix it or delete it"), "{why}");
}

#[test]
fn check_still_present_notices_a_vanished_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("d");
    std::fs::create_dir(&path).unwrap();
    let info = present(detect(&plain("nas", &path)));
    info.check_still_present().unwrap();
    std::fs::remove_dir(&path).unwrap();
    let err = info.check_still_present().unwrap_err();
    assert!(err.to_string().contains("is gone"), "{err}");
    let err = ensure_marker(&plain("nas", &path), &info, now()).unwrap_err();
    assert!(matches!(err, MediaError::Gone { .. }), "{err}");
    assert!(
        !path.exists(),
        "ensure_marker does not recreate a vanished destination"
    );
}

#[test]
fn root_is_a_mount_point() {
    // `/` is always mounted; whatever else it is (read-only, other marker...), it is never "not mounted".
    let presence = detect(&DestinationSettings {
        fs_label: Some("NO-SUCH-LABEL".into()),
        ..dest("root", Path::new("/"), 0)
    });
    assert_eq!(absent(presence).kind(), "other_drive");
}

#[test]
fn capabilities_by_filesystem() {
    assert_eq!(
        capabilities("vfat"),
        Capabilities {
            max_file_size: Some((4 << 30) - 1),
            symlinks: false,
            hard_links: false,
            modes_and_owners: false,
            mtime_step_ns: 2_000_000_000
        }
    );
    assert_eq!(
        capabilities("exfat"),
        Capabilities {
            max_file_size: None,
            symlinks: false,
            hard_links: false,
            modes_and_owners: false,
            mtime_step_ns: 1_000_000_000
        }
    );
    for fs in ["ext4", "xfs", "btrfs", "nfs4"] {
        assert_eq!(
            capabilities(fs),
            Capabilities {
                max_file_size: None,
                symlinks: true,
                hard_links: true,
                modes_and_owners: true,
                mtime_step_ns: 1
            },
            "{fs}"
        );
    }
}

#[test]
fn real_type_of_fuse_mounts_comes_from_the_device() {
    assert_eq!(real_fs_type("fuseblk", Some("exfat")), "exfat");
    assert_eq!(real_fs_type("fuseblk", None), "fuseblk");
    assert_eq!(real_fs_type("ext4", Some("ext4")), "ext4");
    assert_eq!(
        real_fs_type("ntfs3", Some("ntfs")),
        "ntfs3",
        "the kernel's word for kernel filesystems"
    );
}

fn detected(name: &str, priority: i32, here: bool) -> Detected {
    let d = dest(name, &Path::new("/media").join(name), priority);
    let presence = if here {
        Presence::Present(MediaInfo {
            path: d.path.clone(),
            resolved: d.path.clone(),
            mount_point: d.path.clone(),
            is_mount_point: true,
            source: "/dev/sdz1".into(),
            device: Some("/dev/sdz1".into()),
            mount_fs_type: "fuseblk".into(),
            fs_type: "exfat".into(),
            label: Some(name.into()),
            uuid: None,
            dev: 1,
            free_bytes: 1 << 30,
            total_bytes: 2 << 30,
            max_file_size: None,
            symlinks: false,
            hard_links: false,
            marker: None,
        })
    } else {
        Presence::Absent(Absence::NotMounted {
            path: d.path.clone(),
            found: Found::Missing,
        })
    };
    Detected {
        destination: d,
        presence,
    }
}

#[test]
fn selection_by_mode() {
    // (destinations as (name, priority, present), mode, chosen names)
    type Row<'a> = (&'a [(&'a str, i32, bool)], ExternalMode, &'a [&'a str]);
    let table: &[Row] = &[
        (&[], ExternalMode::First, &[]),
        (&[("a", 0, false)], ExternalMode::First, &[]),
        (&[("a", 0, false)], ExternalMode::All, &[]),
        (
            &[("a", 10, false), ("b", 5, true)],
            ExternalMode::First,
            &["b"],
        ),
        (
            &[("a", 10, false), ("b", 5, true)],
            ExternalMode::All,
            &["b"],
        ),
        (
            &[("a", 1, true), ("b", 5, true)],
            ExternalMode::First,
            &["b"],
        ),
        (
            &[("a", 1, true), ("b", 5, true), ("c", 3, true)],
            ExternalMode::All,
            &["b", "c", "a"],
        ),
        (
            &[("a", 5, true), ("b", 5, true)],
            ExternalMode::First,
            &["a"],
        ),
        (
            &[("b", 5, true), ("a", 5, true)],
            ExternalMode::First,
            &["b"],
        ),
        (
            &[("a", -1, true), ("b", 0, false)],
            ExternalMode::First,
            &["a"],
        ),
    ];
    for (dests, mode, want) in table {
        let ds: Vec<Detected> = dests.iter().map(|&(n, p, h)| detected(n, p, h)).collect();
        let got: Vec<&str> = select(*mode, &ds)
            .iter()
            .map(|d| d.destination.name.as_str())
            .collect();
        assert_eq!(&got, want, "{dests:?} {mode:?}");
    }
}

#[test]
fn select_or_fail_exits_5_with_every_reason() {
    let ds = vec![detected("T9", 10, false), detected("nas", 0, false)];
    let err = select_or_fail(ExternalMode::First, &ds).unwrap_err();
    assert_eq!(err.code, Exit::NoDestination);
    insta::assert_snapshot!(err.message, @r"
    no external destination present:
      T9: not mounted: /media/T9 does not exist; plug in the drive
      nas: not mounted: /media/nas does not exist; plug in the drive
    ");
    let ds = vec![detected("T9", 10, false), detected("nas", 0, true)];
    assert_eq!(select_or_fail(ExternalMode::All, &ds).unwrap().len(), 1);
}

#[test]
fn absence_messages() {
    let p = || PathBuf::from("/media/payne/T9");
    let id = |l: Option<&str>, u: Option<&str>| Identity {
        label: l.map(Into::into),
        uuid: u.map(Into::into),
    };
    let all = [
        Absence::NotMounted { path: p(), found: Found::Missing },
        Absence::NotMounted { path: p(), found: Found::EmptyDirectory { on: "/".into() } },
        Absence::NotMounted { path: p(), found: Found::Directory { on: "/".into() } },
        Absence::NotADirectory { path: p() },
        Absence::Unreachable { path: p(), error: "transport endpoint is not connected".into() },
        Absence::Unreachable { path: p(), error: "input/output error".into() },
        Absence::OtherDrive { path: p(), fs_type: "exfat".into(), expected: id(Some("T9"), None), found: id(Some("SANDISK"), Some("1234-ABCD")) },
        Absence::OtherDrive { path: p(), fs_type: "exfat".into(), expected: id(None, Some("FF4F-F609")), found: id(None, None) },
        Absence::OtherDrive { path: p(), fs_type: "ext4".into(), expected: id(Some("T9"), Some("FF4F-F609")), found: id(Some("T9"), Some("1234-ABCD")) },
        Absence::OtherDestination { path: p(), marker: p().join(MARKER_PATH), destination: "nas".into() },
        Absence::BadMarker { path: p(), error: "destination marker /media/payne/T9/backups/.dbackup-destination.json is not valid: expected value at line 1 column 1; fix it or delete it".into() },
        Absence::ReadOnly { path: p(), cause: "is mounted read-only; remount it read-write".into() },
        Absence::Full { path: p(), free_bytes: 4096, total_bytes: 1_000_204_886_016 },
    ];
    let text: Vec<String> = all.iter().map(|a| format!("{}: {a}", a.kind())).collect();
    insta::assert_snapshot!(text.join("\n"));
}

#[test]
fn presence_serializes_with_state_and_reason() {
    let d = detected("T9", 0, false);
    let json = serde_json::to_value(&d.presence).unwrap();
    assert_eq!(json["state"], "absent");
    assert_eq!(json["reason"], "not_mounted");
    assert_eq!(json["found"]["kind"], "missing");
    let json = serde_json::to_value(&detected("T9", 0, true).presence).unwrap();
    assert_eq!(json["state"], "present");
    assert_eq!(json["fs_type"], "exfat");
}

#[test]
fn io_messages_are_lower_case_without_os_error() {
    let e = std::io::Error::from_raw_os_error(libc::ENOTCONN);
    assert_eq!(
        crate::stdx::fs::message(&e),
        "transport endpoint is not connected"
    );
}
