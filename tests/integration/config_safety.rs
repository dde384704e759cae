//! Issue 11 §4 through the real binary: the config cannot turn a backup into a deletion. The `rsync_args`
//! allow-list, exclusions through a filter file, a config with a byte-order mark, and a set whose source is missing
//! (incomplete, reported, its last copy kept by retention).

use std::fs;

use dbackup::{
    CollectPlan, CollectReport, SetStatus, Snapshot, SnapshotMeta, SnapshotState, StatusReport,
    list_snapshots, read_snapshot_meta,
};

use crate::harness::Test;

/// A config with one set `data` of `~/data`, `extra` more set keys (`, "rsync_args": [...]`) and `last` local snapshots.
fn one_set(extra: &str, last: u32) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "retention": {{ "local": {last} }},
             "backup_sets": [ {{ "name": "data", "sources": ["~/data"]{extra} }} ] }}"#
    )
}

fn snapshots(t: &Test, set: &str) -> Vec<Snapshot> {
    list_snapshots(&t.root(), set).unwrap()
}

/// The snapshot the collect of `report` made of its first set, and where `~/data` landed in it.
fn snapshot_and_data(t: &Test, report: &CollectReport) -> (String, std::path::PathBuf) {
    let name = report.sets[0].snapshot.clone().unwrap();
    let data = t
        .root()
        .join(&name)
        .join(t.home().join("data").strip_prefix("/").unwrap());
    (name, data)
}

fn meta(t: &Test, name: &str) -> SnapshotMeta {
    read_snapshot_meta(&t.root().join(format!("{name}.json"))).unwrap()
}

/// Before: `--remove-sent-files` (rsync's old name for `--remove-source-files`) passed `config check`, and `collect`
/// deleted the user's files after copying them. Now every command refuses the config (exit 2), naming the option and
/// showing the allowed list, and nothing is touched.
#[test]
fn an_option_that_deletes_the_sources_is_refused_by_every_command() {
    let t = Test::new().config(&one_set(r#", "rsync_args": ["--remove-sent-files"]"#, 7));
    let file = t.write("home/data/thesis.tex", "years of work");
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("/backup_sets/0/rsync_args/0")
        .stderr_has("rsync option --remove-sent-files would delete your files")
        .stderr_has("allowed: --bwlimit=RATE")
        .stderr_has(
            "(options that cannot change what rsync deletes, where it writes or which files",
        )
        .stderr_has("--exclude-from=FILE");
    for cmd in [
        &["collect"][..],
        &["backup"],
        &["status"],
        &["--dry-run", "collect"],
    ] {
        let out = t.cmd().args(cmd).status(2);
        assert!(
            out.stderr.contains("--remove-sent-files"),
            "{cmd:?}: {}",
            out.stderr
        );
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "years of work");
    assert!(!t.root().exists(), "nothing ran");
}

/// Before: `--existing` passed, and `collect` made an empty snapshot (only files already in the new, empty directory
/// were copied) that it reported complete. Now it is refused, as are other options off the list, bundles holding
/// one, and arguments that would be taken as sources.
#[test]
fn options_off_the_allow_list_are_refused_with_the_option_named() {
    let t = Test::new().config(&one_set(
        r#", "rsync_args": ["--existing", "-xn", "--compress-level=9", "/etc", "--info=stats0"]"#,
        7,
    ));
    t.write("home/data/a", "a");
    let out = t.cmd().args(["collect"]).status(2);
    for want in [
        "/backup_sets/0/rsync_args/0: rsync option --existing would copy only files that already exist",
        "/backup_sets/0/rsync_args/1: rsync option \"-xn\" includes -n (--dry-run)",
        "/backup_sets/0/rsync_args/2: rsync option --compress-level is irrelevant",
        "/backup_sets/0/rsync_args/3: rsync argument \"/etc\" is not an option",
        "/backup_sets/0/rsync_args/4: rsync option --info changes rsync's output",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
    assert!(snapshots(&t, "data").is_empty());
}

/// Before: `["--bwlimit", "$RATE"]` was refused ("\"$RATE\" is not an option": values had to follow `=`), `~` and
/// `$VAR` stayed unexpanded in option values (rsync looked for a file named `~/...`), and a bundle was not looked
/// into. Now both forms work, values expand, and an exclude file's patterns apply.
#[test]
fn allowed_options_work_in_every_form_with_their_values_expanded() {
    let t = Test::new()
        .config(&one_set(
            r#", "rsync_args": ["--bwlimit", "$RATE", "-xW", "--exclude-from=~/excluded.txt", "--filter", "dir-merge .nobackup"]"#,
            7,
        ))
        .env("RATE", "100m");
    t.write("home/excluded.txt", "*.iso\n# comment\n");
    t.write("home/data/keep.txt", "k");
    t.write("home/data/disk.iso", "big");
    t.write("home/data/cache/.nobackup", "- *\n");
    t.write("home/data/cache/junk", "j");
    let report: CollectReport = t.run_json(&["collect"]);
    assert_eq!(report.sets[0].status, SetStatus::Complete);
    let (name, data) = snapshot_and_data(&t, &report);
    assert!(data.join("keep.txt").is_file());
    assert!(
        !data.join("disk.iso").exists(),
        "excluded by ~/excluded.txt"
    );
    assert!(
        !data.join("cache/junk").exists(),
        "excluded by the per-directory rules"
    );
    let argv = meta(&t, &name).rsync.argv;
    let excluded = format!("--exclude-from={}", t.home().join("excluded.txt").display());
    for want in [
        "--bwlimit=100m",
        "--one-file-system",
        "--whole-file",
        excluded.as_str(),
        "--filter=dir-merge .nobackup",
    ] {
        assert!(argv.iter().any(|a| a == want), "{want} in {argv:?}");
    }
}

/// Before: a file an option names was not checked: `config check` passed and `collect` failed later (rsync exit 11,
/// "failed to open exclude file"), and a rules file holding `!` silently cleared dbackup's own exclusions. Now the
/// config is refused, naming the file and the rule.
#[test]
fn a_file_an_option_names_must_exist() {
    let t = Test::new().config(&one_set(
        r#", "rsync_args": ["--exclude-from=~/nope.txt", "--filter=merge $HOME/rules"]"#,
        7,
    ));
    t.write("home/rules", "- *.o\n!\n");
    let out = t.cmd().args(["config", "check"]).status(2);
    let nope = t.home().join("nope.txt");
    let rules = t.home().join("rules");
    out.stderr_has(&format!(
        "rsync option --exclude-from: {}: does not exist",
        nope.display()
    ))
    .stderr_has(&format!(
        "rsync option --filter: {}: rule 2 (\"!\") clears the rules before it",
        rules.display()
    ));
}

/// Before: each exclusion became one `--exclude=` argument, and 50,000 paths inside a source (about 4 MB of
/// arguments, twice Linux's limit) failed with "cannot run rsync: Argument list too long". Now they reach rsync
/// through a filter file beside the in-progress copy, removed afterwards, and the metadata records them from the plan.
#[test]
fn fifty_thousand_exclusions_work() {
    const N: usize = 50_000;
    let dir = |i: usize| format!("projects/archive/skip-{i:05}");
    let patterns: Vec<String> = (0..N).map(|i| format!("\"~/data/{}/\"", dir(i))).collect();
    let t = Test::new().config(&one_set(
        &format!(r#", "exclusions": [{}]"#, patterns.join(",")),
        7,
    ));
    t.write("home/data/projects/keep", "k");
    t.write(&format!("home/data/{}/first", dir(0)), "x");
    t.write(&format!("home/data/{}/last", dir(N - 1)), "x");
    t.write("home/data/projects/archive/skip-99999/kept", "not excluded");
    let out = t.cmd().args(["--json", "collect"]).status(0);
    let report: CollectReport = out.json();
    let (name, data) = snapshot_and_data(&t, &report);
    assert!(data.join("projects/keep").is_file());
    assert!(data.join("projects/archive/skip-99999/kept").is_file());
    assert!(!data.join(dir(0)).join("first").exists());
    assert!(!data.join(dir(N - 1)).join("last").exists());
    let m = meta(&t, &name);
    assert_eq!(m.exclusions.len(), N);
    assert!(
        m.exclusions[N - 1].ends_with(&format!("/data/{}/", dir(N - 1))),
        "{}",
        m.exclusions[N - 1]
    );
    assert!(
        m.rsync.argv.len() < 20,
        "no argument per exclusion: {} arguments",
        m.rsync.argv.len()
    );
    let filter = t.root().join(".data.filter");
    assert!(
        m.rsync
            .argv
            .contains(&format!("--filter=merge {}", filter.display())),
        "{:?}",
        m.rsync.argv
    );
    assert!(!filter.exists(), "the filter file is removed after the run");

    // The dry run says what would be excluded without listing 50,000 lines, and writes nothing.
    let out = t.cmd().args(["--dry-run", "collect"]).status(0);
    out.stdout_has("/data/projects/archive/skip-00000/")
        .stdout_has("and 49,992 more");
    let plan: CollectPlan = t
        .cmd()
        .args(["--dry-run", "--json", "collect"])
        .status(0)
        .json();
    assert_eq!(plan.sets[0].exclusions.len(), N);
    assert!(!filter.exists());
}

/// Before: a config saved with a UTF-8 byte-order mark (as some Windows editors do) was a syntax error at 1:1.
/// Now it loads, and errors are still placed where an editor shows them.
#[test]
fn a_config_with_a_byte_order_mark_loads() {
    let t = Test::new();
    let good = t.write("bom.json", format!("\u{feff}{}", t.expand(&one_set("", 7))));
    t.write("home/data/a", "a");
    t.cmd()
        .args(["--config"])
        .args([&good])
        .args(["config", "check"])
        .status(0);
    let bad = t.write(
        "bad.json",
        "\u{feff}{\n  \"backup_sets\": [\n    { \"name\": \"x\", \"sources\": [\"/d\"], \"sauces\": [] }\n  ]\n}\n",
    );
    let out = t
        .cmd()
        .args(["--config"])
        .args([&bad])
        .args(["config", "check"])
        .status(2);
    out.stderr_has(&format!("{}:3:39", bad.display()))
        .stderr_has("sauces");
}

/// Before: with one of a set's two sources removed, three collects (`last 2`) each exited 3 with a warning but
/// marked their snapshots complete, retention pruned every snapshot that held the missing source, `status` said ok
/// and `status --check` exited 0: the last copy of that source was gone. Now each such snapshot is incomplete,
/// the newest copy of the missing source stays, `status` warns and `--check` exits 1.
#[test]
fn a_missing_source_makes_the_snapshot_incomplete_and_its_last_copy_stays() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "retention": { "local": 2 },
             "backup_sets": [ { "name": "work", "sources": ["~/docs", "~/photos"] } ] }"#,
    );
    t.write("home/docs/a.txt", "a");
    t.write("home/photos/p.jpg", "irreplaceable");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["collect"]).status(0);
    let with_photos = snapshots(&t, "work").last().unwrap().name.clone();
    fs::remove_dir_all(t.home().join("photos")).unwrap();
    for _ in 0..3 {
        let report: CollectReport = t.cmd().args(["--json", "collect"]).status(3).json();
        assert_eq!(report.sets[0].status, SetStatus::Incomplete);
        assert_eq!(report.sets[0].missing_sources, ["~/photos"]);
    }
    let snaps = snapshots(&t, "work");
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(snaps.len(), 4, "{names:?}");
    let kept = snaps
        .iter()
        .find(|s| s.name == with_photos)
        .expect("the last copy of ~/photos stays");
    let photo = t.home().join("photos/p.jpg");
    assert_eq!(
        fs::read_to_string(kept.path.join(photo.strip_prefix("/").unwrap())).unwrap(),
        "irreplaceable"
    );
    let newest = snaps.last().unwrap();
    assert_eq!(newest.state(), SnapshotState::Incomplete);
    assert!(!newest.metadata.as_ref().unwrap().complete);

    let report: StatusReport = t.run_json(&["status"]);
    assert!(!report.ok);
    assert_eq!(
        report.sets[0].newest.as_ref().unwrap().missing_sources,
        ["~/photos"]
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("is incomplete: source ~/photos was missing")),
        "{:?}",
        report.warnings
    );
    let out = t.cmd().args(["status"]).status(0);
    assert!(
        out.stdout
            .starts_with("status: ATTENTION: 1 set without a source")
            && out.stdout.contains("source ~/photos was missing"),
        "{}",
        out.stdout
    );
    let out = t.cmd().args(["status", "--check"]).status(1);
    out.stderr_has("lacks ~/photos");
    // A restore of the set from the newest snapshot says where the missing source still is, and the --date that
    // picks it. Before: only that the snapshot is incomplete.
    let out = t
        .cmd()
        .args(["restore", "--set", "work", "--target"])
        .args([t.path("restored")])
        .status(0);
    out.stderr_has(&format!(
        "the newest complete snapshot of set work is {with_photos}: restore what this one lacks with --date {}",
        with_photos.trim_start_matches("work-")
    ));

    // Back again: a complete snapshot, and the old copy ages out like the others.
    t.write("home/photos/p.jpg", "irreplaceable");
    t.cmd().args(["collect"]).status(0);
    assert!(snapshots(&t, "work").iter().all(|s| s.name != with_photos));
    t.cmd().args(["status", "--check"]).status(0);
}
