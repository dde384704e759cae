//! The hostile-drive cases that need mounts of their own (issue 11, section 1): on a real ext4 drive on a loop
//! device, a `backups` symlink off the drive, a filesystem mounted over `backups/`, and a leftover of an interrupted
//! run with a filesystem mounted inside it; on a plain directory, a bind mount of the same filesystem over
//! `backups/`. Root only: without root they print why and skip.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use testkit::loopdev::{self, Fs};

use crate::fixtures::drive::listing;
use crate::fixtures::hostile::assert_clean;
use crate::fixtures::mounted::Mounted;
use crate::harness::Test;

fn config(dest: &Path, extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{}"{extra} }} ] }}"#,
        dest.display()
    )
}

/// On an ext4 drive: `backups` a symlink to a directory off the drive, then a tmpfs mounted over `backups/`: each
/// time `external` refuses the drive naming what redirects it (exit 5) and writes nothing there, and `status`
/// says why. Then a leftover of an interrupted run with a filesystem mounted inside it: the cleanup refuses to cross
/// into it (exit 1) and the mounted filesystem keeps its files.
///
/// Before: the backup, its marker and `latest` were written through the symlink onto the root disk and onto the
/// tmpfs (exit 0, "verified ... in place"), and removing the leftover deleted the files of the filesystem mounted
/// inside it.
#[test]
fn t9_ext4_a_drive_cannot_send_writes_or_deletions_off_it() {
    let Some((_t9, mp)) = loopdev::drive_or_skip(Fs::Ext4, "T9", 64 << 20) else {
        return;
    };
    let t = Test::new().config(&config(&mp, ""));
    t.write("home/data/notes.txt", "my notes\n");
    t.cmd().args(["collect"]).status(0);

    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, mp.join("backups")).unwrap();
    let out = t.cmd().args(["external"]).status(5);
    assert_clean(&out);
    out.stderr_has(&format!(
        "T9: redirected: {} is a symbolic link (to {})",
        mp.join("backups").display(),
        elsewhere.display()
    ));
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));
    let out = t.cmd().args(["status"]).output();
    out.stdout_has("absent (redirected)");

    fs::remove_file(mp.join("backups")).unwrap();
    fs::create_dir(mp.join("backups")).unwrap();
    {
        let _over = Mounted::tmpfs(&mp.join("backups"), "4m");
        let out = t.cmd().args(["external"]).status(5);
        assert_clean(&out);
        out.stderr_has(&format!(
            "T9: redirected: {} is a mount point",
            mp.join("backups").display()
        ));
        assert!(
            listing(&mp.join("backups")).is_empty(),
            "nothing on the tmpfs: {:?}",
            listing(&mp.join("backups"))
        );
    }

    // A clean drive again: a backup, then a leftover with a filesystem mounted inside it.
    t.cmd().args(["external"]).status(0);
    let leftover = mp.join("backups/.tmp-2020-01-01-000000-999999");
    fs::create_dir_all(leftover.join("x")).unwrap();
    {
        let _inside = Mounted::tmpfs(&leftover.join("x"), "4m");
        fs::write(leftover.join("x/precious"), "keep me").unwrap();
        let out = t.cmd().args(["external"]).status(1);
        assert_clean(&out);
        out.stderr_has("removing what an interrupted run left on the drive")
            .stderr_has("is a mount point");
        assert_eq!(
            fs::read_to_string(leftover.join("x/precious")).unwrap(),
            "keep me"
        );
    }
    // Unmounted, the leftover is removed by the next run.
    t.cmd().args(["external"]).status(0);
    assert!(!leftover.exists());
}

/// On a plain directory destination: a bind mount of the same filesystem over `backups/` is refused like any mount
/// point (it is told apart by its mount id), and nothing is written into the bound directory.
///
/// Before: `external` wrote the backup into the bind-mounted directory (exit 0).
#[test]
fn t9_a_bind_mount_over_backups_is_refused() {
    if !testkit::require_root() {
        return;
    }
    let t = Test::new();
    let dest = t.path("T9");
    let t = t.config(&config(&dest, r#", "require_mount": false"#));
    t.write("home/data/notes.txt", "my notes\n");
    t.cmd().args(["collect"]).status(0);
    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::create_dir_all(dest.join("backups")).unwrap();
    let _bound = Mounted::bind(&elsewhere, &dest.join("backups"));
    let out = t.cmd().args(["external"]).status(5);
    assert_clean(&out);
    out.stderr_has(&format!(
        "T9: redirected: {} is a mount point",
        dest.join("backups").display()
    ));
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));
}
