//! Exclusions people expect, end to end with real rsync: includes (`!pattern`) in rsync's order, `exclude_from` files,
//! `exclude_caches` (a valid `CACHEDIR.TAG`), `exclude_if_present` (a marker file), and what the snapshot records.

use std::fs;

use dbackup::{CollectPlan, SnapshotMeta, list_snapshots, read_snapshot_meta};

use crate::harness::Test;

const TAG: &str =
    "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n";

fn config(sets: &str) -> String {
    format!(r#"{{ "backup_root": "{{root}}", "backup_sets": [ {sets} ] }}"#)
}

/// The only snapshot of `set` and its metadata.
fn only_snapshot(t: &Test, set: &str) -> (std::path::PathBuf, SnapshotMeta) {
    let list = list_snapshots(&t.root(), set).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let meta = read_snapshot_meta(&t.root().join(format!("{}.json", list[0].name))).unwrap();
    (list[0].path.clone(), meta)
}

/// Every kind of exclusion in one set, and the same include after its exclude in another. On main the new keys were
/// refused as unknown (exit 2), and `!keep.log` was an exclude of a file literally named `!keep.log`, so `keep.log`
/// was left out with every other log.
#[test]
fn includes_files_of_patterns_caches_and_markers() {
    let t = Test::new()
        .config(&config(
            r#"{ "name": "data", "sources": ["~/data"],
                 "exclusions": ["!keep.log", "*.log"],
                 "exclude_from": ["$RULES/excl.txt"],
                 "exclude_caches": true,
                 "exclude_if_present": [".nobackup"] },
               { "name": "late", "sources": ["~/late"], "exclusions": ["*.log", "!keep.log"] }"#,
        ))
        .env("RULES", "/nonexistent-yet");
    for f in ["notes.txt", "a.log", "keep.log", "id.key", "id.pub"] {
        t.write(&format!("home/data/{f}"), f);
    }
    t.write("home/data/proj/build/CACHEDIR.TAG", TAG);
    t.write("home/data/proj/build/obj.o", "object");
    t.write("home/data/proj/fake/CACHEDIR.TAG", "not a tag\n");
    t.write("home/data/proj/fake/kept", "kept");
    t.write("home/data/proj/vm/.nobackup", "");
    t.write("home/data/proj/vm/disk.img", "disk");
    t.write("home/data/proj/src/main.rs", "fn main() {}");
    t.write("home/late/keep.log", "k");
    t.write("home/late/a.log", "a");
    t.write("home/late/b.txt", "b");

    // A missing file of patterns is a config error, for config check and every command.
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("/backup_sets/0/exclude_from/0")
        .stderr_has("/nonexistent-yet/excl.txt: does not exist");
    t.cmd().args(["collect"]).status(2);
    assert!(!t.root().exists());

    let rules = t.write(
        "rules/excl.txt",
        "# keys stay home\n*.key\n\n; another comment\n- *.tmp\n",
    );
    let t = t.env("RULES", rules.parent().unwrap());
    let check = t.cmd().args(["config", "check"]).status(0);
    for line in [
        "include  keep.log",
        "exclude  *.log",
        "exclude  *.key",
        "rules    from ",
        "directories holding a valid CACHEDIR.TAG",
        "directories holding .nobackup",
    ] {
        assert!(
            check.stdout.contains(line),
            "{line:?} in:\n{}",
            check.stdout
        );
    }

    let data = fs::canonicalize(t.home().join("data")).unwrap();
    let plan: CollectPlan = t
        .cmd()
        .args(["--dry-run", "--json", "collect"])
        .status(0)
        .json();
    let skipped: Vec<(String, String)> = plan.sets[0]
        .skipped
        .iter()
        .map(|d| (d.path.display().to_string(), d.holds.clone()))
        .collect();
    assert_eq!(
        skipped,
        [
            (
                format!("{}/proj/build", data.display()),
                "CACHEDIR.TAG".into()
            ),
            (format!("{}/proj/vm", data.display()), ".nobackup".into()),
        ]
    );
    let text = t.cmd().args(["--dry-run", "collect"]).status(0);
    text.stdout_has(&format!(
        "skip      {}/proj/build (holds CACHEDIR.TAG)",
        data.display()
    ));

    t.cmd().args(["collect"]).status(0);
    let (snap, meta) = only_snapshot(&t, "data");
    let inside = snap.join(data.strip_prefix("/").unwrap());
    for kept in [
        "notes.txt",
        "keep.log",
        "id.pub",
        "proj/src/main.rs",
        "proj/fake/kept",
    ] {
        assert!(inside.join(kept).exists(), "{kept} is copied");
    }
    for left in ["a.log", "id.key", "proj/build", "proj/vm"] {
        assert!(!inside.join(left).exists(), "{left} is left out");
    }
    assert_eq!(
        meta.exclusions,
        [
            "!keep.log".to_string(),
            "*.log".into(),
            "*.key".into(),
            "*.tmp".into(),
            format!("{}/proj/build/", data.display()),
            format!("{}/proj/vm/", data.display()),
        ]
    );

    // rsync's order: the first rule that matches wins, so an include after its exclude includes nothing.
    let (late, _) = only_snapshot(&t, "late");
    let late = late.join(
        fs::canonicalize(t.home().join("late"))
            .unwrap()
            .strip_prefix("/")
            .unwrap(),
    );
    assert!(late.join("b.txt").exists());
    assert!(!late.join("keep.log").exists() && !late.join("a.log").exists());
}

/// Bad values are config errors with their place: a marker that is a path, a lone `!`. On main both keys were
/// unknown, and a lone `!` in `exclusions` reached rsync as an exclude of a file named `!`.
#[test]
fn bad_markers_and_lone_bangs_are_refused() {
    let t = Test::new().config(&config(
        r#"{ "name": "data", "sources": ["~/data"], "exclusions": ["!"], "exclude_if_present": ["a/.nobackup"] }"#,
    ));
    t.write("home/data/f", "f");
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("/backup_sets/0/exclusions/0")
        .stderr_has("`!` alone would clear the rules before it");
    out.stderr_has("/backup_sets/0/exclude_if_present/0")
        .stderr_has("is not a file name");
}
