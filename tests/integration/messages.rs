//! Messages people read: the built-in default config announced once, an OS error printed once, a read-only
//! destination as its own failure, and `config init PATH` pointing at `config check PATH`.

use std::process::Command;

use crate::harness::Test;

/// An OS error appears once. On main: "cannot create .../root: Not a directory (os error 20): Not a directory
/// (os error 20)" (the building block's message holds its source, and `{:#}` printed the source again).
#[test]
fn an_os_error_is_printed_once() {
    let t = Test::new().config(
        r#"{ "backup_root": "{tmp}/blocker/root", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ] }"#,
    );
    t.write("blocker", "a file where a directory should be");
    t.write("home/data/f", "f");
    let out = t.cmd().args(["collect"]).status(1);
    assert_eq!(
        out.stderr.matches("Not a directory (os error 20)").count(),
        1,
        "{}",
        out.stderr
    );
}

/// A run on the built-in default says so, once, on stderr; `status` too. On main `collect` and `status` said
/// nothing about it. The commands that read backups say it too: on the built-in default, "no backups found" or "no
/// path matches" may only mean the config was not found (before: `restore --list`, `snapshots`, `ls` and `find`
/// loaded the default silently).
#[test]
fn the_built_in_default_is_announced_once() {
    let t = Test::new();
    let bk = t.expand("{tmp}/bk");
    let t = t.env("DBACKUP", bk);
    for args in [
        &["status"][..],
        &["--dry-run", "collect"],
        &["restore", "--list"],
        &["snapshots"],
        &["ls"],
        &["find", "x"],
    ] {
        let out = t.cmd().no_config().args(args).output();
        assert_eq!(
            out.stderr
                .matches("using the built-in default config")
                .count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        out.stderr_has("dbackup config init");
    }
    let quiet = t.cmd().no_config().args(["-q", "status"]).output();
    quiet.stderr_lacks("built-in default");
}

/// `config init PATH` suggests checking that PATH (a bare `config check` reads another file). On main it said
/// "run `dbackup config check`", which checked the default path and found no file there.
#[test]
fn config_init_elsewhere_suggests_checking_that_file() {
    let t = Test::new();
    let path = t.path("my config.json");
    // `config <verb> <path>`, which must succeed.
    let config_at = |verb: &str| {
        t.cmd()
            .no_config()
            .args(["config", verb])
            .args([&path])
            .status(0)
    };
    let quoted = format!("'{}'", path.display());
    config_at("init").stderr_has(&format!("run `dbackup config check {quoted}`"));
    config_at("check");
    // The default path keeps the short advice.
    let out = t.cmd().no_config().args(["config", "init"]).status(0);
    out.stderr_has("run `dbackup config check` to see");
}

/// A destination mounted read-only is a failure (exit 1, "read-only"), not "no destination" (exit 5, which the
/// units count as success). On main `external` exited 5 and `backup` 0, with only a missing-media notice.
#[test]
fn a_read_only_destination_fails() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ],
             "schedule": { "external": "always" },
             "destinations": [ { "name": "T9", "path": "{tmp}/drive", "require_mount": false } ] }"#,
    );
    t.write("home/data/f", "f");
    let drive = t.path("drive");
    std::fs::create_dir_all(&drive).unwrap();
    // A read-only bind mount of the test's own directory: made and removed by this test only.
    let mount = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .arg(&drive)
            .arg(&drive)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !mount(&["--bind"]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot bind-mount (not root?)"
        );
        eprintln!("skipped: cannot bind-mount here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&drive);
    assert!(mount(&["-o", "remount,bind,ro"]), "remount read-only");

    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("read-only");
    let out = t.cmd().args(["backup"]).status(1);
    out.stderr_has("read-only");
}

/// The first collect claims no hard-linked bytes (there is no earlier snapshot to link to); the next one does.
/// On main a source holding hard links made the first collect say "... 64.0 KiB hard-linked": rsync's untransferred
/// bytes were taken for bytes shared with a previous snapshot.
#[test]
fn the_first_collect_claims_no_hard_linked_bytes() {
    let t = Test::new().config(crate::harness::DATA_ONLY);
    let a = t.write("home/data/a", vec![7u8; 64 << 10]);
    std::fs::hard_link(&a, t.home().join("data/same-as-a")).unwrap();
    t.write("home/data/b", "b");
    let first = t.cmd().args(["collect"]).status(0);
    first.stderr_has("complete:");
    first.stderr_lacks("hard-linked");
    let second = t.cmd().args(["collect"]).status(0);
    second.stderr_has("hard-linked");
}

/// A missing drive whose external backup is overdue raises one notification (`missing_media`, whose details say it
/// is overdue), not a second `overdue` for the same cause. On main both were sent: "the external backup is due but
/// no drive is present (T9)" and "no external backup yet ...".
#[test]
fn a_missing_drive_is_one_notification_not_two() {
    use crate::fixtures::backup::{ALL_EVENTS, notifications, received};
    use dbackup::EventKind;
    let t = Test::new();
    t.write("home/data/f", "f");
    let n = notifications(&t, ALL_EVENTS, 0);
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/media/T9" }} ], {n} }}"#
    ));
    t.cmd().args(["backup"]).status(0);
    let events = received(&t);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Success, EventKind::MissingMedia],
        "{events:#?}"
    );
    assert!(
        events[1].details.contains("no external backup yet"),
        "{}",
        events[1].details
    );
}
