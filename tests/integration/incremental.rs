//! Incremental drive archives (issue 15) through the real binary, without root: a plain directory as the drive
//! (`require_mount: false`). What `external` writes when `external.incremental` is on, what `--dry-run` says, and
//! `--full`.

use std::fs;
use std::path::{Path, PathBuf};

use dbackup::{ArchiveKind, IndexReader};

use crate::fixtures::chain::{
    assert_each_restores_its_snapshot, chain_config, restore_backup, restore_file, verify_backup,
};
use crate::fixtures::drive::{
    assert_same_tree, assert_sums_pass, collect, content, external, meta_of, new_backup,
};
use crate::fixtures::guide::run_tar_chain;
use crate::harness::Test;

/// The sample home collected once, backing up to `{tmp}/drive` with incrementals on, keeping `local` snapshots and
/// `keep` backups.
fn incremental_world(local: u32, keep: u32) -> (Test, PathBuf) {
    let t = Test::new().config("{}");
    let drive = chain_config(&t, local, keep, "");
    collect(&t);
    (t, drive)
}

/// A first backup, then `projects/p03.txt` changed and collected, and a second backup (an incremental on the first):
/// their stamps.
fn full_then_incremental(t: &Test) -> (String, String) {
    let first = new_backup(t);
    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(t);
    (first, new_backup(t))
}

/// Every set of the backup `stamp` on `drive` is a full.
#[track_caller]
fn assert_all_full(drive: &Path, stamp: &str) {
    let m = meta_of(&drive.join("backups").join(stamp));
    assert!(m.sets.iter().all(|s| s.kind == ArchiveKind::Full), "{m:?}");
}

/// A second external backup after one file changed is an incremental on the first: `backup.json` says so
/// (`kind`, `base`, `depends_on`, change detection `inode`: the first backup's snapshot is still here), its `data`
/// archive holds the changed file and not the unchanged 600 KiB one, its index lists every file (the unchanged ones
/// pointing into the first backup), the sums still check, and `--dry-run` said why beforehand. `--full` writes a
/// full again. (Before: every external backup was full; there was no `external.incremental` nor `--full`.)
#[test]
fn a_second_backup_is_an_incremental_on_the_first() {
    let (t, drive) = incremental_world(3, 5);
    let first = new_backup(&t);
    let m1 = meta_of(&drive.join("backups").join(&first));
    assert!(
        m1.sets
            .iter()
            .all(|s| s.kind == ArchiveKind::Full && s.base.is_none())
    );

    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(&t);
    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!(
            "incremental on {first} (chain 2 of 7): 2 files to store (2.0 KiB), 23 kept in earlier \
             backups"
        ));

    let second = new_backup(&t);
    let dir = drive.join("backups").join(&second);
    let m2 = meta_of(&dir);
    assert_eq!(m2.depends_on, vec![first.clone()]);
    let data = m2.sets.iter().find(|s| s.set == "data").unwrap();
    let data1 = m1.sets.iter().find(|s| s.set == "data").unwrap();
    assert_eq!(data.kind, ArchiveKind::Incremental);
    assert_eq!(data.base.as_deref(), Some(first.as_str()));
    assert_eq!(data.change_detection.as_deref(), Some("inode"));
    assert!(
        data.tar_bytes * 5 < data1.tar_bytes,
        "{} vs {}",
        data.tar_bytes,
        data1.tar_bytes
    );
    assert_sums_pass(&dir);

    let index = fs::read(dir.join("data.index.jsonl")).unwrap();
    let entries: Vec<_> = IndexReader::new(&index[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let at = |p: &str| {
        entries
            .iter()
            .find(|e| e.path.ends_with(p.as_bytes()))
            .unwrap_or_else(|| panic!("{p} listed"))
    };
    assert_eq!(at("projects/p03.txt").stored_in, None);
    assert_eq!(
        at("data/big.bin").stored_in.as_deref(),
        Some(first.as_str())
    );
    assert!(at("projects/needle.txt").stored_in.is_some());

    // Listed as what it is.
    let out = t
        .cmd()
        .args(["restore", "--source", "external", "--list"])
        .status(0);
    out.stdout_has(&format!("data (incremental on {first})"));

    // Verified: its own archive, and every file it keeps in the first backup checked there.
    verify_backup(&t, &second, false, 0).stdout_has("intact");

    // Restored whole from the incremental: exactly the snapshot it was made from, the unchanged files read from
    // the first backup's archive.
    let target = t.path("restored");
    restore_backup(&t, &second, &target);
    let snap = t.root().join(&data.snapshot);
    let rel = t.home().join("data");
    let rel = rel.strip_prefix("/").unwrap();
    assert_same_tree(&snap.join(rel), &target.join(rel));
    // One file kept in the first backup's archive, and the changed one.
    for (i, f) in ["big.bin", "projects/p03.txt"].iter().enumerate() {
        let one = t.path(&format!("one{i}"));
        let path = t.home().join("data").join(f);
        restore_file(&t, &second, &path, &one, 0);
        let got = fs::read(one.join(path.strip_prefix("/").unwrap())).unwrap();
        assert_eq!(got, fs::read(&path).unwrap(), "{f}");
    }

    // The restoration guide's GNU-tar-only rebuild of the chain gives the same tree.
    if testkit::require_tools(&["jq"], "apt-get install jq") {
        let dest = t.path("chain");
        run_tar_chain(&t, &drive, &second, &dest, &[&first, &second]);
        assert_same_tree(&snap.join(rel), &dest.join(rel));
    }

    let third = external(&t, &["--full"], 0).destinations[0]
        .backup
        .clone()
        .unwrap();
    assert!(
        meta_of(&drive.join("backups").join(&third))
            .depends_on
            .is_empty()
    );
    assert_all_full(&drive, &third);
}

/// A base whose archive was deleted by hand is not extended: the dry run says why and the next backup is full.
#[test]
fn a_damaged_base_gets_a_full() {
    let (t, drive) = incremental_world(3, 5);
    let first = new_backup(&t);
    fs::remove_file(drive.join("backups").join(&first).join("data.tar")).unwrap();
    collect(&t);
    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!(
            "full: backup {first} of the chain is damaged: data.tar cannot be read"
        ));
    assert_all_full(&drive, &new_backup(&t));
}

/// A base archive truncated after an incremental was written on it: `--verify` of the incremental names the broken
/// link (the backup, the archive and the file), a file the incremental stores itself still restores, one kept in the
/// base is refused (its bytes are not all there) naming the base backup and archive, and the next external writes a
/// full. (Before: there were no chains to break.)
#[test]
fn a_broken_link_is_named_and_the_rest_still_restores() {
    let (t, drive) = incremental_world(3, 5);
    let (first, second) = full_then_incremental(&t);
    // The base's data.tar truncated to its first 10 KiB (same name, wrong size).
    let tar = drive.join("backups").join(&first).join("data.tar");
    let bytes = fs::read(&tar).unwrap();
    fs::write(&tar, &bytes[..10240]).unwrap();

    let out = verify_backup(&t, &second, false, 1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!("in backup {first}'s data.tar")),
        "{text}"
    );

    let restore = |f: &str, code: i32| {
        let one = t.path(&format!("one-{}", f.replace('/', "-")));
        restore_file(&t, &second, &t.home().join("data").join(f), &one, code)
    };
    restore("projects/p03.txt", 0);
    let out = restore("big.bin", 1);
    let text = format!("{}{}", out.stdout, out.stderr);
    // The base backup is named, not only the archive (before: "...; not restored" alone).
    assert!(
        text.contains(&format!(
            "big.bin: the backup holds 2560 bytes for it, 614400 expected; not restored (its content is kept \
             in backup {first}'s data.tar)"
        )),
        "{text}"
    );

    collect(&t);
    assert_all_full(&drive, &new_backup(&t));
}

/// The base of an incremental gone from the drive (moved away by hand): restoring a file the incremental keeps there
/// fails, and the error says what to do next: restore from a whole backup with `--date`, which `restore --list`
/// shows. Before: it said only "check the backup with --verify", which brings no file back.
#[test]
fn a_file_kept_in_a_missing_base_says_how_to_restore_it() {
    let (t, drive) = incremental_world(3, 5);
    let (first, second) = full_then_incremental(&t);
    fs::rename(drive.join("backups").join(&first), t.path("moved-away")).unwrap();
    let out = restore_file(
        &t,
        &second,
        &t.home().join("data/big.bin"),
        &t.path("one"),
        1,
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!(
            "its content is kept in backup {first}, whose archive of this set is missing"
        )) && text.contains(
            "`dbackup restore --list` marks it BROKEN: restore from a whole backup with --date"
        ),
        "{text}"
    );
}

/// A full and five incrementals, with files added, changed, deleted, renamed, hard-linked, turned from a file into a
/// directory and back: restoring each backup of the chain afterwards gives exactly the snapshot it was made from
/// (names, types, modes, owners, ns mtimes, symlinks, hard links, contents), each newer one depending on every
/// backup before it in the chain. (Before: every backup was a full; there were no chains.)
#[test]
fn every_backup_of_a_chain_restores_its_snapshot() {
    // Keep every snapshot and backup (chain-aware retention is issue 15's other half).
    let (t, drive) = incremental_world(10, 10);
    let data = t.home().join("data");
    let mut made: Vec<(String, String)> = Vec::new();
    for step in 0..6 {
        change_for_step(&t, step);
        if step > 0 {
            collect(&t);
        }
        let stamp = new_backup(&t);
        let m = meta_of(&drive.join("backups").join(&stamp));
        let set = m.sets.iter().find(|s| s.set == "data").unwrap();
        assert_eq!(set.kind == ArchiveKind::Full, step == 0, "step {step}");
        assert_eq!(m.depends_on.len(), step, "step {step}: {:?}", m.depends_on);
        made.push((stamp, set.snapshot.clone()));
    }
    let rel = data.strip_prefix("/").unwrap().to_path_buf();
    assert_each_restores_its_snapshot(&t, &made, &rel);
    // The newest one, verified through its chain.
    verify_backup(&t, &made[5].0, false, 0);
}

/// Retention never removes a backup that a kept one depends on: with `retention.external` 2 and a chain of four,
/// all four stay and the newest still restores. (Before this guard, retention counted backups, not chains, and would
/// have removed the full the newest incremental is built on.)
#[test]
fn retention_keeps_the_chain_of_a_kept_backup() {
    let (t, drive) = incremental_world(3, 2);
    let mut stamps = Vec::new();
    for i in 0..4 {
        if i > 0 {
            t.write(
                "home/data/projects/p03.txt",
                content(2000 + i, 333 + i as u64),
            );
            collect(&t);
        }
        let r = external(&t, &[], 0);
        assert!(
            r.destinations[0].removed.is_empty(),
            "{:?}",
            r.destinations[0].removed
        );
        stamps.push(r.destinations[0].backup.clone().unwrap());
    }
    let listed = dbackup::list_drive_backups(&drive.join("backups")).unwrap();
    let names: Vec<&str> = listed.verified().map(|b| b.name.as_str()).collect();
    assert_eq!(names, stamps.iter().map(String::as_str).collect::<Vec<_>>());
    restore_backup(&t, &stamps[3], &t.path("r"));
}

/// `ls` and `find` say which drive backups are full and which incremental (on which base), as text and JSON; a local
/// snapshot is neither. (Before: they listed a backup's entries without saying what kind of archive held them.)
#[test]
fn ls_and_find_show_full_or_incremental() {
    let (t, _drive) = incremental_world(3, 5);
    let (first, second) = full_then_incremental(&t);
    let data = t.home().join("data");
    let ls = |date: &str, json: bool| {
        let mut c = t.cmd();
        if json {
            c = c.args(["--json"]);
        }
        c.args(["ls", "--source", "drive", "--date", date, "--set", "data"])
            .args([&data])
            .status(0)
            .stdout
    };
    let kinds = |text: &str| {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let b = &v["backups"][0];
        (b["kind"].clone(), b["base"].clone())
    };
    assert_eq!(
        kinds(&ls(&second, true)),
        (serde_json::json!("incremental"), serde_json::json!(first))
    );
    assert_eq!(
        kinds(&ls(&first, true)),
        (serde_json::json!("full"), serde_json::Value::Null)
    );
    let text = ls(&second, false);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(&format!(" (incremental on {first})")),
        "{text}"
    );
    assert!(
        ls(&first, false)
            .lines()
            .next()
            .unwrap()
            .ends_with(" (full)")
    );

    let found: serde_json::Value = serde_json::from_str(
        &t.cmd()
            .args(["--json", "find", "projects/p03.txt"])
            .status(0)
            .stdout,
    )
    .unwrap();
    let versions: Vec<(String, String, Option<String>)> = found["matches"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["stamp"].as_str().unwrap().to_string(),
                v["backup_kind"].as_str().unwrap_or("-").to_string(),
                v["base"].as_str().map(str::to_string),
            )
        })
        .filter(|v| v.1 != "-")
        .collect();
    assert_eq!(
        versions,
        vec![
            (second.clone(), "incremental".into(), Some(first.clone())),
            (first.clone(), "full".into(), None),
        ]
    );
    let text = t.cmd().args(["find", "projects/p03.txt"]).status(0).stdout;
    let row = |stamp: &str| {
        text.lines()
            .find(|l| l.contains(stamp) && l.contains(" drive "))
            .unwrap_or_else(|| panic!("{stamp}: {text}"))
            .to_string()
    };
    assert!(row(&second).contains("  incremental  "), "{text}");
    assert!(row(&first).contains("  full  "), "{text}");
    assert!(text.contains("  snapshot  "), "{text}");
}

/// The change the chain tests make before backup number `step` (0: none): files added and changed, one deleted and
/// one renamed, a hard link, a file turned into a directory and back again.
pub(crate) fn change_for_step(t: &Test, step: usize) {
    let data = t.home().join("data");
    match step {
        0 => {}
        1 => {
            t.write("home/data/new/added.txt", content(3000, 1));
            t.write("home/data/projects/p05.txt", content(4321, 2));
        }
        2 => {
            fs::remove_file(data.join("projects/p06.txt")).unwrap();
            fs::rename(data.join("projects/p07.txt"), data.join("renamed.txt")).unwrap();
        }
        3 => fs::hard_link(data.join("projects/p08.txt"), data.join("p08-link")).unwrap(),
        4 => {
            fs::remove_file(data.join("projects/p09.txt")).unwrap();
            t.write("home/data/projects/p09.txt/inside", "a directory now\n");
        }
        _ => {
            fs::remove_dir_all(data.join("projects/p09.txt")).unwrap();
            t.write("home/data/projects/p09.txt", "a file again\n");
        }
    }
}

/// A dry run times its own change detection: `--json` gives `timings` (the detection alone, over every entry of
/// each set's snapshot, within the whole looking), `-v` a line per set; with `--full` nothing is compared and the
/// snapshots are only scanned. (Before: no `timings`; the detection could be timed only as the whole process.)
#[test]
fn a_dry_run_times_its_change_detection() {
    let (t, _drive) = incremental_world(3, 5);
    new_backup(&t);
    collect(&t);
    let plan: dbackup::ExternalPlan = t.run_json(&["--dry-run", "external"]);
    let timings = plan.timings.expect("a dry run's plan has timings");
    let entries: u64 = plan
        .sets
        .iter()
        .filter_map(|s| s.estimate.as_ref())
        .map(|e| e.entries)
        .sum();
    assert!(entries > 20, "{entries}");
    assert_eq!(timings.detection_entries, entries);
    assert!(timings.detection_seconds > 0.0);
    assert!(timings.detection_seconds <= timings.observe_seconds);
    assert_eq!(timings.scan_seconds, 0.0);

    let full: dbackup::ExternalPlan = t.run_json(&["--dry-run", "external", "--full"]);
    let timings = full.timings.expect("a dry run's plan has timings");
    assert_eq!(
        (timings.detection_entries, timings.detection_seconds),
        (0, 0.0)
    );
    assert!(timings.scan_seconds > 0.0);

    let out = t.cmd().args(["-v", "--dry-run", "external"]).status(0);
    for set in &plan.sets {
        out.stderr_has(&format!("{}: change detection on ", set.set));
    }
}

/// A chain of three on the drive (a full, then `projects/p03.txt` changed, then `p04.txt`), whose middle backup's
/// archive was damaged where it holds p03.txt (a byte of its content flipped, sizes unchanged), which the newest keeps
/// there: the world, the drive and the three stamps.
fn chain_of_three_damaged_in_the_middle() -> (Test, PathBuf, [String; 3]) {
    let (t, drive) = incremental_world(3, 5);
    let (first, second) = full_then_incremental(&t);
    t.write("home/data/projects/p04.txt", content(3000, 444));
    collect(&t);
    let third = new_backup(&t);
    let p03 = t.home().join("data/projects/p03.txt");
    let rel = p03.strip_prefix("/").unwrap().to_str().unwrap().to_string();
    let index =
        fs::read_to_string(drive.join("backups").join(&second).join("data.index.jsonl")).unwrap();
    let entry: serde_json::Value = index
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["path"].as_str() == Some(&rel))
        .unwrap();
    let tar = drive.join("backups").join(&second).join("data.tar");
    let mut bytes = fs::read(&tar).unwrap();
    bytes[entry["data_offset"].as_u64().unwrap() as usize + 10] ^= 0xff;
    fs::write(&tar, &bytes).unwrap();
    (t, drive, [first, second, third])
}

/// `restore --verify --deep` of the newest backup of that chain finds the damaged file and ends saying what to do
/// next: a restore still brings back every intact file and names the others, which `dbackup find PATH` finds in
/// other backups, or another copy of this one has. Before: "backup X is not intact (1 problem): <problem>" alone.
/// Its line for the newest archive says the check stopped at the problem. Before: "data.tar (data): 0 entries, 0
/// files, 0 B: DAMAGED; every entry checked against its index", and its files kept earlier "every byte read and
/// checked", as if the newest archive were damaged and empty.
#[test]
fn a_verify_that_finds_damage_says_what_to_do_next() {
    let (t, _, [_, second, third]) = chain_of_three_damaged_in_the_middle();
    let out = verify_backup(&t, &third, true, 1);
    // The newest archive itself is not said to be damaged and empty: the check stopped at the problem.
    out.stdout_lacks("0 entries, 0 files, 0 B: DAMAGED")
        .stdout_has("data.tar (data): DAMAGED: checked up to its first problem (below); the rest was not read")
        .stdout_has("kept in earlier backups: checked before the problem");
    out.stderr_has(&format!("in backup {second}'s data.tar"))
        .stderr_has("a restore of this backup still brings back every file that is intact")
        .stderr_has("`dbackup find PATH`")
        .stderr_has("another copy of this backup (a second drive, the bucket)");
}

/// docs/RESTORE.md's GNU-tar-only chain rebuild (`tar-chain`, run as written) on a chain of three whose middle
/// backup's archive was damaged on the drive (a byte of the file the newest keeps there flipped, sizes unchanged):
/// the block checks each backup's sums before extracting it and stops at the damaged one, saying which and what the
/// destination then holds (the backup before it, whole); the damaged file is never written. Before: only the
/// newest backup's sums were checked (step 5's first block), and the rebuild extracted the damaged bytes silently.
#[test]
fn the_guides_chain_rebuild_stops_at_a_damaged_backup() {
    if !testkit::require_tools(&["jq"], "apt-get install jq") {
        return;
    }
    let (t, drive, [first, second, third]) = chain_of_three_damaged_in_the_middle();
    let dest = t.path("chain");
    let out = run_tar_chain(&t, &drive, &third, &dest, &[&first, &second, &third]);
    assert!(
        out.contains(&format!("backup {second} is damaged"))
            && out.contains(&format!("holds backup {first} of data, whole")),
        "{out}"
    );
    let p03 = dest.join(
        t.home()
            .join("data/projects/p03.txt")
            .strip_prefix("/")
            .unwrap(),
    );
    assert_ne!(
        fs::read(&p03).unwrap(),
        fs::read(t.home().join("data/projects/p03.txt")).unwrap()
    );
    assert_eq!(
        fs::read(&p03).unwrap().len(),
        1000 + 3 * 37,
        "the first backup's p03.txt"
    );
}

/// The newest backup of a chain restored whole while a file it keeps in the middle backup was damaged there (a byte
/// flipped, sizes unchanged; no `--verify` ran, so nothing marks it): everything else comes back, the damaged file is
/// not written, and the last line says what to do next: `dbackup find` with the path, which lists the backups
/// holding it, then `--date` (the older version in the first backup comes back so), or another copy of this
/// backup. Before: "1 entry was not restored (listed above), from <archive>" and nothing more.
#[test]
fn a_damaged_file_says_where_else_to_find_it() {
    let (t, _, [first, second, third]) = chain_of_three_damaged_in_the_middle();
    let p03 = t.home().join("data/projects/p03.txt");
    let rel = p03.strip_prefix("/").unwrap().to_path_buf();

    let target = t.path("restored");
    let out = crate::fixtures::chain::restore_from(
        &t,
        &third,
        &["--target".as_ref(), target.as_ref()],
        1,
    );
    assert!(!target.join(&rel).exists());
    assert!(target.join(&rel).with_file_name("p04.txt").exists());
    out.stdout_has(&format!(
        "{}: its content does not match the sha256 the backup lists for it; not restored (its content is kept in \
         backup {second}'s data.tar)",
        target.join(&rel).display()
    ));
    out.stderr_has("`dbackup find PATH` lists every backup holding each")
        .stderr_has("restore it from one with --date STAMP")
        .stderr_has("another copy of this backup (a second drive, the bucket)");

    // What it says works: find names the first backup, and p03.txt's older version comes back from it.
    let found = t
        .cmd()
        .args(["find", "--source", "drive"])
        .args([&p03])
        .status(0);
    found.stdout_has(&first);
    let older = t.path("older");
    crate::fixtures::chain::restore_file(&t, &first, &p03, &older, 0);
    assert_eq!(
        fs::read(older.join(&rel)).unwrap(),
        content(1000 + 3 * 37, 3)
    );
}

/// docs/RESTORE.md step 5 (GNU tar only) on a drive whose newest backup is an incremental: the first block, which
/// picks and checks the backup, says so and points to the chain rebuild, since the blocks after it extract that
/// backup's archives alone, which hold only what changed. The same for step 6's (age). Before: nothing said it, and
/// following the blocks in order restored the changed files only (and tar failed on a file the archive does not
/// hold, "Not found in archive").
#[test]
fn the_guides_first_block_says_when_the_newest_backup_is_incremental() {
    let (t, drive) = incremental_world(3, 5);
    let (first, second) = full_then_incremental(&t);
    for tag in ["tar-only", "age-only"] {
        let block = &crate::fixtures::guide::blocks(tag)[0];
        let run = |stamp: &str| {
            fs::write(drive.join("backups/LATEST"), stamp).unwrap();
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("set -eu\n{block}")])
                .env("DRIVE", &drive)
                .env("KEY", t.path("no-key"))
                .env("HOME", t.home())
                .output()
                .unwrap();
            assert!(out.status.success(), "{tag}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = run(&second);
        assert!(
            out.contains(&format!(
                "{second} is incremental: its archives hold only what changed since the backup it was made on"
            )),
            "{tag}: {out}"
        );
        assert!(!run(&first).contains("is incremental"), "{tag}");
    }
}

/// `restore --verify --deep --drive DIR` where DIR is this config's own drive (docs/RESTORE.md step 4 gives
/// `--drive` to everyone) finds the damage in the chain and remembers it as `--source external` does, so the next
/// `external` writes a full instead of an incremental whose files would point into the damaged archive. Before: a
/// damage found through `--drive` was never noted, and the next backup, "verified", kept the restored file in the
/// damaged archive: it could not be restored from the new backup either.
#[test]
fn damage_found_through_drive_on_a_configured_drive_is_remembered() {
    let (t, drive, [_, second, third]) = chain_of_three_damaged_in_the_middle();
    t.cmd()
        .args(["restore", "--verify", "--deep", "--drive"])
        .args([&drive])
        .status(1);
    t.write("home/data/projects/p05.txt", content(500, 555));
    collect(&t);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    assert!(
        !dry.stdout.contains(&format!("incremental on {third}"))
            && dry
                .stdout
                .contains(&format!("backup {third} of the chain is damaged")),
        "{second}: {}",
        dry.stdout
    );
}
