//! The recovery kit in every external backup, without root (a plain directory as the drive): what it keeps
//! between runs (the package lists) and that each backup still holds them.

use std::fs;
use std::path::Path;

use crate::fixtures::drive::{collect, config, destination, new_backup, sample, set_mode};
use crate::harness::Test;

/// The package lists are kept between runs: a second external does not run `apt-mark showmanual` again (a
/// counting stand-in first on `PATH`), says so with `-v`, and both backups' `system/apt-manual.txt` hold its
/// output; the tool changed (its size and times are part of the cache's key, as dpkg's and apt's state files are)
/// makes the third run it again. (Before: every external ran it, about 0.8 s of CPU each time.)
#[test]
fn the_package_lists_are_reused_until_what_they_come_from_changes() {
    if !Path::new("/etc/debian_version").exists() {
        testkit::skip("the package lists are part of the kit on Debian only");
        return;
    }
    let t = Test::new();
    let drive = t.path("drive");
    fs::create_dir_all(&drive).unwrap();
    let runs = t.path("apt-mark-runs");
    let tool = |t: &Test, lines: &str| {
        let p = t.write(
            "bin/apt-mark",
            format!(
                "#!/bin/sh\necho run >> '{}'\nprintf '{lines}'\n",
                runs.display()
            ),
        );
        set_mode(&p, 0o755);
    };
    tool(&t, "editor\\nshell\\n");
    let path = format!(
        "{}:{}",
        t.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = config(
        &[destination("drive", &drive, r#""require_mount": false"#)],
        "first",
        5,
    );
    let t = t.config(&cfg).env("PATH", path);
    sample(&t, 0);
    collect(&t);
    let count = || {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let kept = |stamp: &str| {
        fs::read_to_string(
            drive
                .join("backups")
                .join(stamp)
                .join("system/apt-manual.txt"),
        )
        .unwrap()
    };

    let first = new_backup(&t);
    assert_eq!(count(), 1);
    assert_eq!(kept(&first), "editor\nshell\n");

    let out = t.cmd().args(["-v", "external"]).status(0);
    assert_eq!(count(), 1, "the second run reused the list");
    assert!(
        out.stderr.contains("recovery kit: ")
            && out.stderr.contains("apt-manual.txt")
            && out.stderr.contains("reused from"),
        "{}",
        out.stderr
    );
    let second = dbackup::read_drive_latest(&drive.join("backups")).unwrap();
    assert_ne!(second, first);
    assert_eq!(kept(&second), "editor\nshell\n");

    tool(&t, "editor\\nshell\\nnew-package\\n");
    let third = new_backup(&t);
    assert_eq!(count(), 2, "a changed tool runs again");
    assert_eq!(kept(&third), "editor\nshell\nnew-package\n");
}

/// `--dry-run image kit --out DIR` writes nothing: it says what the kit would hold and where. (Before: the dry run
/// created DIR and wrote every piece of the kit into it.)
#[test]
fn a_dry_run_of_the_kit_writes_nothing() {
    let t = Test::new();
    let out_dir = t.path("kit");
    let out = t
        .cmd()
        .no_config()
        .args(["--dry-run", "image", "kit", "--out"])
        .args([&out_dir])
        .status(0);
    assert!(!out_dir.exists(), "the dry run wrote {}", out_dir.display());
    out.stderr_has("RESTORE-SYSTEM.md");
    out.stderr_has("dry run: would write");
    let json = t
        .cmd()
        .no_config()
        .args(["--json", "--dry-run", "image", "kit", "--out"])
        .args([&out_dir])
        .status(0);
    assert!(!out_dir.exists(), "the dry run wrote {}", out_dir.display());
    let v: serde_json::Value = json.json();
    crate::json::assert_valid("image-kit", &v);
    assert!(!v["pieces"].as_array().unwrap().is_empty());
}
