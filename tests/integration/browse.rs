//! `dbackup ls`, `dbackup find` and `dbackup snapshots` through the real binary, on the restore demo (three local
//! snapshots, two backups on a plain-directory drive), an encrypted drive, and hostile names. Before issue 14 item
//! 9, main had none of these commands (`dbackup ls`/`find`/`snapshots` were usage errors, exit 2).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fixtures::age::encrypted_backup;
use crate::fixtures::demo::demo;
use crate::fixtures::hostile::assert_escaped;
use crate::harness::Test;

#[derive(Debug, Deserialize)]
struct Ls {
    format: u32,
    path: String,
    backups: Vec<LsBackup>,
}

#[derive(Debug, Deserialize)]
struct LsBackup {
    source: String,
    stamp: String,
    set: String,
    destination: Option<String>,
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    kind: String,
    mode: String,
    size: u64,
    mtime: String,
    path: String,
    link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Find {
    format: u32,
    searched: usize,
    #[serde(default)]
    not_searched: Vec<String>,
    matches: Vec<Found>,
}

#[derive(Debug, Deserialize)]
struct Found {
    path: String,
    versions: Vec<Version>,
}

#[derive(Debug, Deserialize)]
struct Version {
    source: String,
    stamp: String,
    set: String,
    destination: Option<String>,
    kind: String,
    size: u64,
    mtime: String,
}

fn data(d: &crate::fixtures::demo::Demo) -> PathBuf {
    fs::canonicalize(&d.data).unwrap()
}

fn names(b: &LsBackup, under: &Path) -> Vec<String> {
    let prefix = format!("{}/", under.display());
    b.entries
        .iter()
        .map(|e| e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_string())
        .collect()
}

/// The drive's archives are removed: whatever `ls` and `find` say about the drive came from the indexes alone.
fn remove_archives(drive: &Path) {
    for b in fs::read_dir(drive.join("backups")).unwrap().flatten() {
        if !b.path().is_dir() {
            continue;
        }
        for f in fs::read_dir(b.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with(".tar") {
                fs::remove_file(f.path()).unwrap();
            }
        }
    }
}

/// `ls DIR` lists one level of the newest local snapshot (kind, mode, size, mtime), `-R` everything below, `--date`
/// an older snapshot; a file is listed alone; a path in no set exits 1 naming the backup.
#[test]
fn ls_lists_one_level_of_a_local_snapshot_or_all_below() {
    let d = demo();
    let important = data(&d).join("projects/important");
    let ls = |extra: &[&str]| -> Ls {
        let mut args = vec!["--json", "ls"];
        args.extend_from_slice(extra);
        d.t.cmd().args(args).status(0).json()
    };
    let l = ls(&[important.to_str().unwrap()]);
    assert_eq!(l.format, 1);
    assert_eq!(l.path, important.display().to_string());
    assert_eq!(l.backups.len(), 1);
    let b = &l.backups[0];
    assert_eq!(
        (b.source.as_str(), b.stamp.as_str(), b.set.as_str()),
        ("local", "2025-04-02-031500", "data")
    );
    assert_eq!(b.destination, None);
    let top = names(b, &important);
    assert!(
        top.contains(&"a.txt".to_string()) && top.contains(&"sub".to_string()),
        "{top:?}"
    );
    assert!(
        top.iter().all(|n| !n.contains('/')),
        "one level only: {top:?}"
    );
    // The entry whose path ends with `suffix`.
    let entry = |suffix: &str| b.entries.iter().find(|e| e.path.ends_with(suffix)).unwrap();
    let a = entry("/a.txt");
    assert_eq!(
        (a.kind.as_str(), a.size),
        ("file", "important a, third version".len() as u64)
    );
    assert!(
        a.mtime.len() >= 25 && a.mtime.contains('T'),
        "RFC 3339: {}",
        a.mtime
    );
    let sub = entry("/sub");
    assert_eq!((sub.kind.as_str(), sub.mode.as_str()), ("dir", "0750"));
    let link = entry("/to-other");
    assert_eq!(
        (link.kind.as_str(), link.link.as_deref()),
        ("symlink", Some("../other/c.txt"))
    );

    // Through the source's configured name (`~/data` is a symlink to the data directory).
    let via = ls(&["~/data/projects/important"]);
    assert_eq!(via.backups[0].entries.len(), b.entries.len());

    let all = ls(&["-R", important.to_str().unwrap()]);
    let deep = names(&all.backups[0], &important);
    assert!(deep.iter().any(|n| n.starts_with("sub/")), "{deep:?}");
    assert!(deep.len() > top.len());

    let older = ls(&[
        "--date",
        "2025-04-01",
        important.join("a.txt").to_str().unwrap(),
    ]);
    let b = &older.backups[0];
    assert_eq!(b.stamp, "2025-04-01-221500");
    assert_eq!(b.entries.len(), 1);
    assert_eq!(
        b.entries[0].size,
        "important a, second version".len() as u64
    );

    // For people: one line per entry, kind, mode, size, mtime, path.
    let out =
        d.t.cmd()
            .args(["ls", important.to_str().unwrap()])
            .status(0);
    let first = out.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("local 2025-04-02-031500 set data: "),
        "{}",
        out.stdout
    );
    let line = out.stdout.lines().find(|l| l.ends_with("/a.txt")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[..4], ["file", "0644", "26", "B"], "{line}");
    out.stdout_has("/to-other -> ../other/c.txt");

    let out = d.t.cmd().args(["ls", "/nowhere/at/all"]).status(1);
    out.stderr_has("/nowhere/at/all is not in local 2025-04-02-031500 set");
}

/// `ls --source drive` reads a drive backup through its index alone: the archives are gone and the listing is the
/// same as the local snapshot it was made from.
#[test]
fn ls_on_the_drive_reads_only_the_index() {
    let d = demo();
    remove_archives(&d.drive);
    let important = data(&d).join("projects/important");
    let p = important.to_str().unwrap();
    let drive: Ls =
        d.t.run_json(&["ls", "--source", "drive", "--date", "2025-04-01", "-R", p]);
    let local: Ls =
        d.t.run_json(&["ls", "--date", "2025-04-01-221500", "-R", p]);
    let b = &drive.backups[0];
    assert_eq!(
        (b.source.as_str(), b.stamp.as_str()),
        ("external", "2025-04-01-221500")
    );
    assert_eq!(b.destination.as_deref(), Some("T9"));
    let key = |l: &LsBackup| {
        l.entries
            .iter()
            // A hard link whose first name is outside the listing is a file in a snapshot's walk.
            .map(|e| {
                let kind = if e.kind == "hardlink" {
                    "file".into()
                } else {
                    e.kind.clone()
                };
                (
                    e.path.clone(),
                    kind,
                    e.mode.clone(),
                    e.size,
                    e.mtime.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(b), key(&local.backups[0]));
    // `--drive DIR` alone means the drive.
    let out =
        d.t.cmd()
            .args([
                "ls",
                "--drive",
                d.drive.to_str().unwrap(),
                important.join("a.txt").to_str().unwrap(),
            ])
            .status(0);
    assert!(
        out.stdout
            .starts_with("--drive 2025-04-02-031500 set data: "),
        "{}",
        out.stdout
    );
}

/// An index on the drive whose length is not the one `backup.json` records (a line added, or cut short) is not
/// listed or searched from, as a restore would not read it: `ls` fails naming both lengths, `find` reports it as
/// not searched (exit 1, as for any backup it could not search). Before, `ls` and `find` read whatever the index held (a restore refused it).
#[test]
fn an_index_changed_on_the_drive_is_not_listed_from() {
    let d = demo();
    let index = d.drive.join("backups/2025-04-02-031500/data.index.jsonl");
    let mut bytes = fs::read(&index).unwrap();
    let recorded = bytes.len();
    bytes.extend_from_slice(b"{\"type\":\"file\",\"path\":\"planted\"}\n");
    fs::write(&index, &bytes).unwrap();
    let p = data(&d).join("projects");
    let out =
        d.t.cmd()
            .args(["ls", "--source", "drive", "--date", "2025-04-02", "-R"])
            .args([p.to_str().unwrap()])
            .status(1);
    out.stderr_has(&format!(
        "its index is {} bytes where backup.json says {recorded}",
        bytes.len()
    ));
    let found: Find =
        d.t.cmd()
            .args(["--json", "find", "--source", "drive", "a.txt"])
            .status(1)
            .json();
    let unsearched = found.not_searched.join("\n");
    assert!(
        unsearched.contains("T9 2025-04-02-031500 set data was not searched: its index is"),
        "{unsearched}"
    );
    assert!(found.searched >= 1, "the other backup is searched");
}

/// `find` groups versions by path, newest first, over local snapshots and the drive's indexes (its archives
/// removed); globs on the name, anchored globs, `**`; nothing found exits 1.
#[test]
fn find_lists_every_version_newest_first_grouped_by_path() {
    let d = demo();
    remove_archives(&d.drive);
    let f: Find = d.t.run_json(&["find", "important/a.txt"]);
    assert_eq!(f.format, 1);
    assert_eq!(f.searched, 10, "5 backups of 2 sets");
    assert!(f.not_searched.is_empty());
    assert_eq!(f.matches.len(), 1, "{:?}", f.matches);
    let m = &f.matches[0];
    assert_eq!(
        m.path,
        data(&d)
            .join("projects/important/a.txt")
            .display()
            .to_string()
    );
    let v: Vec<(&str, &str, Option<&str>, u64)> = m
        .versions
        .iter()
        .map(|v| {
            (
                v.stamp.as_str(),
                v.source.as_str(),
                v.destination.as_deref(),
                v.size,
            )
        })
        .collect();
    let (second, third) = (
        "important a, second version".len() as u64,
        "important a, third version".len() as u64,
    );
    assert_eq!(v[0].0, "2025-04-02-031500");
    assert_eq!(v.len(), 5, "{v:?}");
    assert!(v.contains(&("2025-04-02-031500", "external", Some("T9"), third)));
    assert!(v.contains(&("2025-04-01-221500", "external", Some("T9"), second)));
    assert!(v.contains(&("2025-04-01-221500", "local", None, second)));
    assert_eq!(v[4].0, "2025-04-01-031500");
    assert!(
        m.versions
            .iter()
            .all(|v| v.set == "data" && v.kind == "file" && !v.mtime.is_empty())
    );
    for w in v.windows(2) {
        assert!(w[0].0 >= w[1].0, "newest first: {v:?}");
    }

    // A glob on the name, only the drive.
    let f: Find = d.t.run_json(&["find", "--source", "drive", "*.txt"]);
    assert!(f.matches.iter().all(|m| m.path.ends_with(".txt")));
    assert!(f.matches.iter().any(|m| m.path.ends_with("/other/c.txt")));
    assert!(
        f.matches
            .iter()
            .all(|m| m.versions.iter().all(|v| v.source == "external"))
    );
    // Anchored with `**`, and `*` that stays in a name.
    let root = data(&d);
    let anchored = format!("{}/**/sub", root.display());
    let f: Find = d.t.run_json(&["find", &anchored]);
    assert_eq!(f.matches.len(), 1);
    let one_level = format!("{}/*/a.txt", root.display());
    d.t.cmd().args(["find", &one_level]).status(1);

    // For people: the path, then one line per version.
    let out =
        d.t.cmd()
            .args(["find", "--set", "data", "important/a.txt"])
            .status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].ends_with("/projects/important/a.txt"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].trim_start().starts_with("2025-04-02-031500  "),
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 6, "{}", out.stdout);

    let out = d.t.cmd().args(["find", "no-such-name"]).status(1);
    out.stdout_has("no path matches no-such-name in 10 backups");
}

/// `find` with a file's absolute path, as a restore prints it (`failed /data/x: ...`) and as a user types it: every
/// version, on the drive too. Before: the drive's (and a bucket's) indexes were skipped line by line unless they
/// held the pattern with its leading `/`, which an index's relative paths never do: "no path matches".
#[test]
fn find_takes_an_absolute_path_on_the_drive_too() {
    let d = demo();
    remove_archives(&d.drive);
    let path = data(&d).join("projects/important/a.txt");
    let f: Find =
        d.t.run_json(&["find", "--source", "drive", &path.display().to_string()]);
    assert_eq!(f.matches.len(), 1, "{:?}", f.matches);
    assert_eq!(f.matches[0].path, path.display().to_string());
    assert_eq!(
        f.matches[0].versions.len(),
        2,
        "{:?}",
        f.matches[0].versions
    );
}

/// `snapshots` is `restore --list` under restic's name, with its options.
#[test]
fn snapshots_is_restore_list() {
    let d = demo();
    for args in [
        vec![],
        vec!["--source", "drive", "--date", "2025-04-01"],
        vec!["--set", "config"],
    ] {
        let mut a = vec!["snapshots"];
        a.extend(args.iter().copied());
        let mut b = vec!["restore", "--list"];
        b.extend(
            args.iter()
                .map(|x| if *x == "drive" { "external" } else { x }),
        );
        let snaps = d.t.cmd().args(&a).status(0);
        let list = d.t.cmd().args(&b).status(0);
        assert_eq!(snaps.stdout, list.stdout, "{a:?}");
    }
    let help = d.t.cmd().args(["--help"]).status(0);
    help.stdout_has("snapshots");
}

/// `snapshots --source` takes what `restore --list --source` takes, `cloud:NAME` included (its help says "the same
/// options"). Before: the argument parser refused `snapshots --source cloud:offsite` (exit 2, "invalid value").
#[test]
fn snapshots_takes_every_source_restore_list_takes() {
    let d = demo();
    for source in ["cloud", "cloud:offsite"] {
        let snaps = d.t.cmd().args(["snapshots", "--source", source]).output();
        let list =
            d.t.cmd()
                .args(["restore", "--list", "--source", source])
                .output();
        assert_eq!(
            (snaps.code, &snaps.stdout, &snaps.stderr),
            (list.code, &list.stdout, &list.stderr),
            "--source {source}"
        );
    }
}

/// `--set NAME` for a set neither the config nor any backup has is a usage error (2) naming the sets, in every
/// command that reads backups, local or on the drive (as `collect --set` and `restore --set` say). Before,
/// `ls` said "there is no local snapshot of set music" (1), `find` "no path matches" (1), and `snapshots` and
/// `restore --list` "no backups found" (0).
#[test]
fn a_set_nobody_has_is_a_usage_error_in_every_reading_command() {
    let d = demo();
    for args in [
        &["ls", "--set", "music"][..],
        &["ls", "--source", "drive", "--set", "music"],
        &["find", "--set", "music", "a.txt"],
        &["find", "--source", "drive", "--set", "music", "a.txt"],
        &["snapshots", "--set", "music"],
        &["snapshots", "--source", "drive", "--set", "music"],
        &["restore", "--list", "--set", "music"],
        &["restore", "--set", "music", "--path", "{tmp}/data"],
    ] {
        let args: Vec<String> = args.iter().map(|a| d.t.expand(a)).collect();
        let out = d.t.cmd().args(&args).status(2);
        out.stderr_has(
            "there is no backup set named \"music\"; the config and the backups have: config, data",
        );
    }
}

/// A cloud destination the config does not have is a usage error (2) that `ls`, `find` and `restore` word alike: named
/// (`--source cloud:NAME`), it says there is none by that name; unnamed, that the config has none. Before, `ls` and
/// `find` had their own copy of the choice, which answered `cloud:NAME` with "the config has no cloud destination"
/// where `restore` said that no destination has that name.
#[test]
fn a_cloud_destination_the_config_lacks_is_worded_alike_by_every_reading_command() {
    let d = demo();
    for (source, says) in [
        (
            "cloud:offsite",
            "there is no cloud destination named \"offsite\": the config has no cloud destination",
        ),
        ("cloud", "the config has no cloud destination"),
    ] {
        for args in [
            &["ls", "--source", source][..],
            &["find", "--source", source, "a.txt"],
            &["snapshots", "--source", source],
            &["restore", "--list", "--source", source],
        ] {
            let out = d.t.cmd().args(args).status(2);
            out.stderr_has(says);
        }
    }
}

/// An empty pattern (an unset shell variable, `find "$NAME"`) is a usage error, not a match of every path.
#[test]
fn an_empty_find_pattern_is_a_usage_error() {
    let d = demo();
    let out = d.t.cmd().args(["find", ""]).status(2);
    out.stderr_has("<PATTERN>");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// Names from a backup are printed escaped: a file named with ESC and a newline neither colours the terminal nor
/// forges a line, in `ls` and `find`, text and JSON.
#[test]
fn hostile_names_are_escaped() {
    let t = Test::new().config(crate::harness::DATA_ONLY);
    let data = t.home().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("esc\x1b[31mred"), "x").unwrap();
    fs::write(data.join("nl\nFORGED line"), "y").unwrap();
    t.cmd().args(["collect"]).status(0);
    for args in [
        vec!["ls", data.to_str().unwrap()],
        vec!["--json", "ls", data.to_str().unwrap()],
        vec!["find", "e"],
        vec!["--json", "find", "e"],
    ] {
        let out = t.cmd().args(&args).status(0);
        assert_escaped(&format!("{args:?}"), &out);
        assert!(
            out.stdout.contains("red") && out.stdout.contains("FORGED line"),
            "{args:?}: {}",
            out.stdout
        );
    }
}

/// An encrypted drive backup is listed and searched through its encrypted index with the identity (as restore
/// reads it); without one it is not searched, said so, exit 1.
#[test]
fn encrypted_indexes_need_the_identity() {
    let e = encrypted_backup("");
    let key = e.key.to_str().unwrap().to_string();
    let f: Find = e.t.run_json(&[
        "find",
        "--source",
        "drive",
        "--identity",
        &key,
        "settings.json",
    ]);
    assert_eq!(f.matches.len(), 1, "{:?}", f.matches);
    assert_eq!(f.matches[0].versions[0].source, "external");
    let out =
        e.t.cmd()
            .args(["find", "--source", "drive", "settings.json"])
            .status(1);
    out.stderr_has("encrypted");
    let cfg = e.t.home().join(".config");
    let l: Ls = e.t.run_json(&[
        "ls",
        "--source",
        "drive",
        "--identity",
        &key,
        "-R",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        l.backups[0]
            .entries
            .iter()
            .any(|x| x.path.ends_with("/app/settings.json"))
    );
}

/// Without a usable identity, `ls` and `find` say once how to give one: with the config's identity_file missing,
/// the reason already says "pass the identity with --identity FILE", and both added "give the identity with
/// --identity FILE" again.
#[test]
fn a_missing_identity_is_told_once_how_to_give_one() {
    let e = encrypted_backup(r#", "identity_file": "{tmp}/no-such-key.txt""#);
    let cfg = e.t.home().join(".config");
    for (args, code) in [
        (vec!["ls", "--source", "drive", cfg.to_str().unwrap()], 1),
        (vec!["find", "--source", "drive", "settings.json"], 1),
    ] {
        let out = e.t.cmd().args(&args).status(code);
        out.stderr_has("no-such-key.txt");
        assert!(
            out.stderr.contains("--identity FILE"),
            "{args:?}: {}",
            out.stderr
        );
        for line in out.stderr.lines() {
            assert!(
                line.matches("--identity FILE").count() <= 1,
                "{args:?}: {line}"
            );
        }
    }
}

/// `ls --date` picks the backup `restore --date` reads (one rule, `restore::choose::by_date`): here the newest
/// snapshot of the day is incomplete (a source went missing), and both read it. Before: `ls` had a rule of its own
/// that skipped incomplete snapshots, so `ls --date D` listed an older snapshot than the one `restore --date D`
/// restores from.
#[test]
fn ls_date_picks_the_backup_restore_would() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data", "~/other"] } ] }"#,
    );
    t.write("home/data/a.txt", "a");
    t.write("home/other/o.txt", "o");
    t.cmd().args(["collect"]).status(0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::remove_dir_all(t.home().join("other")).unwrap();
    t.cmd().args(["collect"]).status(3);
    let day = chrono::Local::now().format("%Y-%m-%d").to_string();
    let data = t.home().join("data");
    let ls: Ls = t
        .cmd()
        .args(["--json", "ls", "--date", &day])
        .args([&data])
        .status(0)
        .json();
    let target = t.path("target");
    let plan: serde_json::Value = t
        .cmd()
        .args(["--json", "--dry-run", "restore", "--date", &day, "--path"])
        .args([&data])
        .args(["--target"])
        .args([&target])
        .status(0)
        .json();
    let restored = plan["backup"].as_str().unwrap_or_default().to_string();
    assert_eq!(ls.backups.len(), 1, "{ls:?}");
    assert!(
        restored.contains(&ls.backups[0].stamp),
        "ls --date {day} listed {}, restore --date {day} reads {restored}",
        ls.backups[0].stamp
    );
    let stamps: Vec<String> = fs::read_dir(t.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data-2") && !n.ends_with(".json"))
        .collect();
    let newest = stamps.iter().max().unwrap();
    assert!(
        newest.ends_with(&ls.backups[0].stamp),
        "{newest} vs {}",
        ls.backups[0].stamp
    );
}
