//! `dbackup restore` end to end: a demo backup (real collect, dated snapshots, drive backups in the real layout),
//! listing, date and path selection, restores that must be identical to the source, dry runs, overwrite policies,
//! verification of intact and damaged backups, and hostile archives.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dbackup::{Digest, Kept, ListedState, Listing, VerifyReport, list_snapshots};

use crate::fixtures::demo::{
    Pristine, break_every_header_but, config, demo, drive_with_tar, from_external, index_name,
    landed, restore, restore_external, sample, set_mtime,
};
use crate::fixtures::tree::{Tree, assert_same_tree, snapshot_of, tree};
use crate::harness::{Output, Test};

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"dbackup-test-\w+", "[TEST]"),
        (
            r"displaced/\d{4}-\d{2}-\d{2}-\d{6}(-\d+)?",
            "displaced/[STAMP]",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Listing

#[test]
fn list_shows_every_backup_local_and_on_the_drive() {
    let d = demo();
    let out = restore(&d.t).args(["--list", "--json"]).status(0);
    let l: Listing = out.json();
    let rows: Vec<(Kept, &str, ListedState, bool)> = l
        .backups
        .iter()
        .map(|b| (b.source, b.stamp.as_str(), b.state, b.latest))
        .collect();
    assert_eq!(
        rows,
        [
            (
                Kept::Local,
                "2025-04-02-031500",
                ListedState::Complete,
                true
            ),
            (
                Kept::External,
                "2025-04-02-031500",
                ListedState::Verified,
                true
            ),
            (
                Kept::Local,
                "2025-04-01-221500",
                ListedState::Complete,
                false
            ),
            (
                Kept::External,
                "2025-04-01-221500",
                ListedState::Verified,
                false
            ),
            (
                Kept::Local,
                "2025-04-01-031500",
                ListedState::Complete,
                false
            ),
        ]
    );
    let newest = &l.backups[0];
    let sets: Vec<&str> = newest.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(sets, ["config", "data"]);
    assert!(newest.bytes > 1 << 20, "sizes add up: {}", newest.bytes);
    assert_eq!(newest.location, d.t.root());
    let ext = &l.backups[1];
    assert_eq!(ext.location, d.drive.join("backups/2025-04-02-031500"));
    assert_eq!(ext.destination.as_deref(), Some("T9"));
    assert_eq!(
        ext.sets[1].snapshot.as_deref(),
        Some("data-2025-04-02-031500")
    );
    assert!(ext.sets.iter().all(|s| s.bytes > 0 && s.files.is_some()));
    assert_eq!(l.destinations.len(), 1);
    assert!(l.destinations[0].present && l.destinations[0].backups == 2);

    // Only one source, one set, one day.
    let l: Listing = restore_external(&d.t)
        .args(["--list", "--json", "--set", "data", "--date", "2025-04-01"])
        .status(0)
        .json();
    assert_eq!(l.backups.len(), 1);
    assert_eq!(l.backups[0].stamp, "2025-04-01-221500");
    assert_eq!(l.backups[0].sets.len(), 1);
    assert!(l.backup_root.is_none());

    // For people.
    let out = restore(&d.t).args(["--list"]).status(0);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("list", d.t.without_tmp(&out.stdout));
    });
}

#[test]
fn list_says_why_a_drive_is_absent_and_exits_5_for_external_only() {
    let t = Test::new().config(&config(
        r#", "destinations": [ { "name": "T9", "path": "{tmp}/media/T9" } ]"#,
    ));
    fs::create_dir_all(t.path("media/T9")).unwrap();
    sample(&t, &t.path("data"));
    t.cmd().args(["collect"]).status(0);
    let l: Listing = restore(&t).args(["--list", "--json"]).status(0).json();
    assert_eq!(l.backups.len(), 1);
    assert!(!l.destinations[0].present);
    assert!(
        l.destinations[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not mounted"),
        "{l:?}"
    );
    let out = restore_external(&t).args(["--list"]).status(5);
    out.stdout_has("no backups found");
    out.stderr_has("T9: not mounted");
    // A restore from the drive says the same, with exit 5.
    let out = restore_external(&t).args(["--path", "~/.config"]).status(5);
    out.stderr_has("no external destination present");
}

// ---------------------------------------------------------------------------------------------------------------
// Choosing the backup and the paths

#[test]
fn a_day_selects_its_newest_backup_and_a_stamp_exactly_that_one() {
    let d = demo();
    let t = &d.t;
    let a = d.data.join("projects/important/a.txt");
    let target = t.path("r");
    let read = |stamp: &str| {
        let _ = fs::remove_dir_all(&target);
        let mut args = vec![
            "--path",
            a.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ];
        if !stamp.is_empty() {
            args.extend(["--date", stamp]);
        }
        restore(t).args(&args).status(0);
        fs::read_to_string(landed(&target, &a)).unwrap()
    };
    assert_eq!(read("2025-04-01"), "important a, second version");
    assert_eq!(read("2025-04-01-031500"), "important a");
    assert_eq!(
        read(""),
        "important a, third version",
        "the newest by default"
    );
    assert_eq!(read("latest"), "important a, third version");

    let out = restore(t)
        .args(["--date", "2025-04-05", "--path", "~/.config"])
        .status(1);
    out.stderr_has("no local snapshot matches --date 2025-04-05")
        .stderr_has("the nearest before is 2025-04-02-031500, 2025-04-01-221500 (none after)");
    let out = restore_external(t)
        .args(["--date", "2025-04-01-120000", "--path", "~/.config"])
        .status(1);
    out.stderr_has("the nearest after is 2025-04-01-221500, 2025-04-02-031500 (none before)");
    let out = restore(t).args(["--date", "April 1st"]).status(2);
    out.stderr_has("give a day (2025-04-01)");
}

#[test]
fn paths_may_be_tilde_relative_or_through_a_symlinked_source() {
    let d = demo();
    let t = &d.t;
    let target = t.path("r");
    let tgt = target.to_str().unwrap();
    // `~` as typed (not expanded by a shell), and a path relative to the current directory.
    restore(t)
        .args(["--path", "~/.secrets", "--target", tgt])
        .status(0);
    let secrets = landed(&target, &t.home().join(".secrets"));
    assert_eq!(fs::read_to_string(&secrets).unwrap(), "hunter2");
    restore(t)
        .args(["--path", "home/env.sh", "--target", tgt])
        .status(0); // cwd is the test directory
    assert!(landed(&target, &t.home().join("env.sh")).is_file());
    // ~/data is a symlink to the real data directory: its alias finds the files, which land at their real path.
    restore(t)
        .args(["--path", "~/data/photos", "--target", tgt])
        .status(0);
    assert!(landed(&target, &d.data.join("photos/p.jpg")).is_file());
    // The same from the drive.
    let _ = fs::remove_dir_all(&target);
    restore_external(t)
        .args(["--path", "~/data/photos", "--target", tgt])
        .status(0);
    assert!(landed(&target, &d.data.join("photos/p.jpg")).is_file());

    // Not there: the nearest existing paths are named.
    for source in ["local", "external"] {
        let out = restore(t)
            .args([
                "--source",
                source,
                "--path",
                "~/data/projects/importnt",
                "--target",
                tgt,
            ])
            .status(1);
        let want = d.data.join("projects/important");
        assert!(
            out.stderr.contains("is not in")
                && out
                    .stderr
                    .contains(&format!("the nearest there: {}", want.display())),
            "{source}: {}",
            out.stderr
        );
    }
    let out = restore(t)
        .args(["--path", "/etc/passwd", "--target", tgt])
        .status(1);
    out.stderr_has("it is under none of the backed-up sources");
}

#[test]
fn set_restricts_and_unknown_sets_are_refused() {
    let d = demo();
    let t = &d.t;
    // Locally, and from the drive too.
    for (cmd, target) in [(restore(t), "r"), (restore_external(t), "r2")] {
        let target = t.path(target);
        cmd.args(["--set", "config", "--target", target.to_str().unwrap()])
            .status(0);
        assert!(landed(&target, &t.home().join(".secrets")).is_file());
        assert!(!landed(&target, &d.data).exists(), "only the config set");
    }
    // --verify reads only that set's archive.
    let r: VerifyReport = restore_external(t)
        .args(["--set", "data", "--verify", "--json"])
        .status(0)
        .json();
    assert_eq!(r.sets.len(), 1);
    assert_eq!(r.sets[0].set, "data");
    assert_eq!(
        r.sums.unwrap().checked,
        3,
        "data.tar, data.index.jsonl, backup.json"
    );
    let out = restore(t)
        .args(["--set", "music", "--path", "~/x"])
        .status(2);
    out.stderr_has("no backup set named \"music\"");
}

// ---------------------------------------------------------------------------------------------------------------
// Restoring

#[test]
fn a_restored_directory_is_identical_to_the_source_at_backup_time() {
    let d = demo();
    let t = &d.t;
    for source in ["local", "external"] {
        let target = t.path(&format!("r-{source}"));
        restore(t)
            .args([
                "--source",
                source,
                "--date",
                "2025-04-01",
                "--path",
                "~/data/projects/important",
                "--path",
                "~/.config",
                "--target",
                target.to_str().unwrap(),
            ])
            .status(0);
        let got = tree(&landed(&target, &d.data.join("projects/important")));
        assert_same_tree(&got, &d.at_backup["important"]);
        let got = tree(&landed(&target, &t.home().join(".config")));
        assert_same_tree(&got, &d.at_backup["config"]);
        // The hard link whose first name (photos/p.jpg) was not restored is a file of its own.
        let also = target.join(
            d.data
                .join("projects/important/also-photo")
                .strip_prefix("/")
                .unwrap(),
        );
        assert_eq!(fs::read(&also).unwrap(), b"jpeg bytes");
    }
}

/// A restore holds the run lock shared while it reads: a collect (whose retention could remove the snapshot being
/// read) cannot start meanwhile (exit 4), and a restore started while a collect runs goes on, saying so. Before,
/// restore took no lock at all.
#[test]
fn a_restore_and_a_run_that_prunes_keep_apart() {
    let d = demo();
    let t = &d.t;
    let target = t.path("r");
    let reading = dbackup::RunLock::share(&t.root())
        .unwrap()
        .expect("the root exists");
    t.cmd().args(["collect"]).status(4);
    drop(reading);
    let writing = dbackup::RunLock::acquire(&t.root()).unwrap();
    restore(t)
        .args(["--path", "~/.config", "--target", target.to_str().unwrap()])
        .status(0)
        .stderr_has(&format!(
            "a dbackup run (pid {}) is writing backups now",
            std::process::id()
        ));
    drop(writing);
    assert!(
        target
            .join(t.home().join(".config").strip_prefix("/").unwrap())
            .is_dir()
    );
}

#[test]
fn restoring_to_the_original_location_touches_nothing_else() {
    let d = demo();
    let t = &d.t;
    let important = d.data.join("projects/important");
    fs::remove_dir_all(&important).unwrap();
    let other = d.data.join("projects/other");
    let before_other = snapshot_of(&other);
    let projects_meta = fs::metadata(d.data.join("projects")).unwrap();
    restore(t)
        .args([
            "--date",
            "2025-04-01",
            "--path",
            "~/data/projects/important",
        ])
        .status(0);
    assert_same_tree(&tree(&important), &d.at_backup["important"]);
    assert_eq!(snapshot_of(&other), before_other);
    let after = fs::metadata(d.data.join("projects")).unwrap();
    assert_eq!(
        (after.mode(), after.uid()),
        (projects_meta.mode(), projects_meta.uid()),
        "the existing parent keeps its mode"
    );

    // A missing parent comes back with its mode and mtime from the backup.
    fs::remove_dir_all(d.data.join("projects")).unwrap();
    restore_external(t)
        .args(["--path", "~/data/projects/other/c.txt"])
        .status(0);
    assert_eq!(
        fs::read_to_string(d.data.join("projects/other/c.txt")).unwrap(),
        "other c"
    );
    assert!(!important.exists(), "only what was asked for");
}

#[test]
fn files_are_copied_out_of_a_snapshot_never_linked() {
    let d = demo();
    let t = &d.t;
    let target = t.path("r");
    restore(t)
        .args(["--path", "~/.secrets", "--target", target.to_str().unwrap()])
        .status(0);
    let restored = landed(&target, &t.home().join(".secrets"));
    assert_eq!(fs::metadata(&restored).unwrap().nlink(), 1);
    assert_eq!(fs::metadata(&restored).unwrap().mode() & 0o7777, 0o600);
    fs::write(&restored, "edited").unwrap();
    let snap = t
        .root()
        .join("config-2025-04-02-031500")
        .join(t.home().join(".secrets").strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(snap).unwrap(),
        "hunter2",
        "the backup is untouched"
    );
}

#[test]
fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let d = demo();
    let t = &d.t;
    // Some changes at the original location: one file edited, one removed, one new (not in the backup).
    t.write("home/.config/app/state", "changed");
    fs::remove_file(t.home().join(".config/app/settings.json")).unwrap();
    t.write("home/.config/app/new-file", "not in the backup");
    let before = snapshot_of(t.dir.path());
    for source in ["local", "external"] {
        let out = restore(t)
            .args([
                "--dry-run",
                "--source",
                source,
                "--date",
                "2025-04-01",
                "--path",
                "~/.config/app",
            ])
            .status(0);
        assert_eq!(
            snapshot_of(t.dir.path()),
            before,
            "{source}: nothing written"
        );
        if source == "local" {
            insta::with_settings!({ filters => filters() }, {
                insta::assert_snapshot!("dry_run_plan", t.without_tmp(&out.stdout));
            });
        }
        let json = restore(t)
            .args([
                "--dry-run",
                "--json",
                "--source",
                source,
                "--path",
                "~/.config/app",
            ])
            .status(0);
        let v: serde_json::Value = json.json();
        let counts = &v["restores"][0]["plan"]["counts"];
        assert_eq!(counts["create"]["entries"], 1, "{source}: {counts}");
        assert_eq!(
            counts["replace"]["entries"], 2,
            "{source}: the file and its directory's mtime: {counts}"
        );
        assert!(
            counts["unchanged"]["entries"].as_u64().unwrap() >= 3,
            "{source}: {counts}"
        );
        assert_eq!(v["dry_run"], true);
    }
    // Into a target that does not exist: nothing is made.
    let target = t.path("never");
    restore(t)
        .args([
            "--dry-run",
            "--path",
            "~/.config",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    assert!(!target.exists());
}

#[test]
fn overwrite_policies_and_files_absent_from_the_backup() {
    let d = demo();
    let t = &d.t;
    let app = t.home().join(".config/app");
    t.write("home/.config/app/state", "changed");
    t.write("home/.config/app/new-file", "mine");
    restore(t)
        .args(["--path", "~/.config/app", "--overwrite", "never"])
        .status(0);
    assert_eq!(
        fs::read_to_string(app.join("state")).unwrap(),
        "changed",
        "never keeps it"
    );
    restore(t).args(["--path", "~/.config/app"]).status(0);
    assert_eq!(
        fs::read_to_string(app.join("state")).unwrap(),
        "1",
        "if-changed replaces it"
    );
    assert_eq!(
        fs::read_to_string(app.join("new-file")).unwrap(),
        "mine",
        "left alone"
    );
    let ino = fs::metadata(app.join("state")).unwrap().ino();
    restore(t).args(["--path", "~/.config/app"]).status(0);
    assert_eq!(
        fs::metadata(app.join("state")).unwrap().ino(),
        ino,
        "unchanged: not rewritten"
    );
    restore(t)
        .args(["--path", "~/.config/app", "--overwrite", "always"])
        .status(0);
    assert_ne!(
        fs::metadata(app.join("state")).unwrap().ino(),
        ino,
        "always rewrites"
    );
    // --compare content tells an identical file with another mtime.
    set_mtime(&app.join("state"), 1, 0);
    let out = restore(t)
        .args([
            "--dry-run",
            "--json",
            "--source",
            "external",
            "--path",
            "~/.config/app/state",
            "--compare",
            "content",
        ])
        .status(0);
    let v: serde_json::Value = out.json();
    assert_eq!(
        v["restores"][0]["plan"]["counts"]["unchanged"]["entries"], 1,
        "{v}"
    );
}

#[test]
fn the_target_keeps_the_absolute_structure_and_may_not_be_a_backup() {
    let d = demo();
    let t = &d.t;
    let target = t.path("restored");
    let out = restore_external(t)
        .args(["--path", "~/env.sh", "--target", "restored"])
        .status(0);
    out.stdout_has("created");
    let file = landed(&target, &t.home().join("env.sh"));
    assert_eq!(fs::read_to_string(&file).unwrap(), "export A=1\n");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o755);
    let into_backups = t.root().join("x");
    let out = restore(t)
        .args([
            "--path",
            "~/env.sh",
            "--target",
            into_backups.to_str().unwrap(),
        ])
        .status(2);
    out.stderr_has("would change a backup");
}

/// A restore from the local snapshots may not write into a drive's backups either: a `--target` inside a configured
/// destination's `backups/` (a verified backup's own directory, say) is refused like one inside the backup root. Before,
/// only the drive a restore read from was guarded, so `--source local` wrote into the drive backup, where the restored
/// files went with it at its rotation.
#[test]
fn a_local_restore_may_not_target_a_drives_backups() {
    let d = demo();
    let t = &d.t;
    let backup = t.path("T9/backups/2025-04-01-221500");
    let before = snapshot_of(&backup);
    let out = restore(t)
        .args(["--source", "local", "--path", "~/env.sh", "--target"])
        .args([&backup])
        .status(2);
    out.stderr_has("would change a backup");
    assert_eq!(snapshot_of(&backup), before, "nothing written into it");
}

/// In place, a directory of a source that is now a symlink leading elsewhere is never written through: `--path
/// ~/.config/app/state` with `~/.config/app` a symlink to another directory is refused, as `--path ~/.config/app`
/// is, and nothing lands in that directory. Before, the deepest existing directory above the path was resolved
/// through the symlink and the file was written into the directory it leads to, outside the set's sources.
#[test]
fn in_place_a_symlink_inside_a_source_is_never_written_through() {
    let d = demo();
    let t = &d.t;
    let app = t.home().join(".config/app");
    fs::remove_dir_all(&app).unwrap();
    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &app).unwrap();
    for path in ["~/.config/app/state", "~/.config/app"] {
        let out = restore(t).args(["--path", path]).status(1);
        assert!(
            out.stdout.contains("symlink") || out.stderr.contains("symlink"),
            "{path}: {out:?}"
        );
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "{path}: nothing written through the symlink"
        );
    }
}

#[test]
fn json_of_a_restore_says_what_was_done() {
    let d = demo();
    let t = &d.t;
    let target = t.path("r");
    let out = restore(t)
        .args([
            "--json",
            "--source",
            "external",
            "--path",
            "~/.config",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    let v: serde_json::Value = out.json();
    assert_eq!(v["source"], "external");
    assert_eq!(v["backup"], "2025-04-02-031500");
    let s = &v["restores"][0]["summary"];
    assert!(
        s["counts"]["create"]["entries"].as_u64().unwrap() > 5,
        "{s}"
    );
    assert_eq!(s["refusals"].as_array().unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the drive

#[test]
fn a_file_is_reached_through_the_index_not_by_scanning() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    let b = d.data.join("projects/important/sub/b.txt");
    let name = index_name(&b);
    break_every_header_but(&dir, "data", &[&name]);
    let target = t.path("r");
    restore_external(t)
        .args([
            "--path",
            b.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    assert_eq!(
        fs::read_to_string(target.join(&*String::from_utf8_lossy(&name))).unwrap(),
        "important b"
    );
    // Verification reads everything, and finds the damage.
    let out = restore_external(t).args(["--verify"]).status(1);
    out.stderr_has("data.tar");
}

#[test]
fn an_archive_without_an_index_restores_by_scanning() {
    let d = demo();
    let t = &d.t;
    // GNU tar's archive of a snapshot, in a backup directory of its own, with only a sums file.
    let dir = t.path("gnu/backups/2025-03-01-120000");
    fs::create_dir_all(&dir).unwrap();
    let snap = t.root().join("data-2025-04-01-221500");
    let status = std::process::Command::new("tar")
        .args([
            "--format=posix",
            "-cf",
            dir.join("data.tar").to_str().unwrap(),
            "-C",
            snap.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let sums = format!(
        "{}  data.tar\n",
        Digest::of_bytes(&fs::read(dir.join("data.tar")).unwrap())
    );
    fs::write(dir.join("verification.sha256"), sums).unwrap();
    let target = t.path("r");
    let drive = t.path("gnu");
    let out = restore_external(t)
        .args([
            "--drive",
            drive.to_str().unwrap(),
            "--date",
            "2025-03-01-120000",
            "--path",
            "~/data/projects/important",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    out.stderr_has("has no index: it is read by scanning");
    out.stderr_has("not known to be verified");
    let got = tree(&landed(&target, &d.data.join("projects/important")));
    assert_same_tree(&got, &d.at_backup["important"]);
    // An unverified backup is chosen only by its exact stamp.
    let out = restore_external(t)
        .args(["--drive", drive.to_str().unwrap(), "--path", "~/.config"])
        .status(1);
    out.stderr_has("no verified backup");
    // It verifies against its sums.
    restore_external(t)
        .args([
            "--drive",
            dir.to_str().unwrap(),
            "--date",
            "2025-03-01-120000",
            "--verify",
        ])
        .status(0);
}

// ---------------------------------------------------------------------------------------------------------------
// Verify

fn verify(t: &Test, extra: &[&str]) -> Output {
    let mut args = vec!["--source", "external", "--date", "2025-04-01", "--verify"];
    args.extend(extra);
    restore(t).args(args).output()
}

#[test]
fn an_intact_backup_verifies_and_reports_what_a_restore_would_write() {
    let d = demo();
    let t = &d.t;
    let out = verify(t, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // The archives hold the test directory's ancestors: their number is $TMPDIR's depth.
    let mut f = filters();
    f.push((r"(\.tar \(\w+\): |total: )\d+ entries", "$1[N] entries"));
    insta::with_settings!({ filters => f }, {
        insta::assert_snapshot!("verify_intact", t.without_tmp(&out.stdout));
    });
    let r: VerifyReport = verify(t, &["--json"]).json();
    assert!(r.intact && r.problems.is_empty());
    assert_eq!(r.backup, "2025-04-01-221500");
    assert!(r.sums.as_ref().unwrap().ok && r.sums.as_ref().unwrap().checked == 5);
    assert_eq!(r.sets.len(), 2);
    assert!(r.sets.iter().all(|s| s.ok && s.indexed));
    assert!(r.files >= 10 && r.bytes > 1 << 20, "{r:?}");
    // With --path, the list of what a restore would write is narrowed; with -v it lists every entry.
    let r: VerifyReport = verify(
        t,
        &["--json", "-v", "--path", "~/data/projects/important/sub"],
    )
    .json();
    assert!(r.intact);
    assert_eq!(r.would_restore.len(), 1);
    let w = &r.would_restore[0];
    assert_eq!(w.path, d.data.join("projects/important/sub"));
    assert_eq!((w.entries, w.files), (4, 3), "{w:?}");
    assert_eq!(w.list.len(), 4);
}

#[test]
fn a_flipped_byte_makes_verify_fail_naming_the_archive_and_the_entry() {
    let d = demo();
    let t = &d.t;
    let tar = d.drive.join("backups/2025-04-01-221500/data.tar");
    let mut bytes = fs::read(&tar).unwrap();
    let at = bytes.windows(11).position(|w| w == b"important b").unwrap();
    bytes[at + 3] ^= 0x01;
    fs::write(&tar, bytes).unwrap();
    let out = verify(t, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let entry = d.data.join("projects/important/sub/b.txt");
    let entry = entry.strip_prefix("/").unwrap().display().to_string();
    out.stderr_has(&format!("{}: entry {entry}", tar.display()))
        .stderr_has("content sha256");
    out.stdout_has("result: NOT intact");
    // The other backup is still intact.
    restore_external(t)
        .args(["--date", "2025-04-02", "--verify"])
        .status(0);
    // Restoring the damaged file refuses to write it.
    let out = restore_external(t)
        .args([
            "--date",
            "2025-04-01",
            "--path",
            &format!("/{entry}"),
            "--target",
            "r",
        ])
        .status(1);
    out.stdout_has("does not match the sha256");
    assert!(!t.path("r").join(&entry).exists());
}

#[test]
fn verify_detects_truncation_a_missing_or_edited_sums_file_and_an_index_that_disagrees() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-01-221500");
    let pristine = Pristine::of(&dir);
    let fails = |what: &str, needle: &str| {
        let out = verify(t, &[]);
        assert_eq!(out.code, 1, "{what}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(needle), "{what}: {}", out.stderr);
    };

    // Truncated archive.
    crate::harness::cut_short(&dir.join("config.tar"), |l| l / 2);
    fails("truncated", "config.tar");
    pristine.reset();

    // Missing sums file.
    fs::remove_file(dir.join("verification.sha256")).unwrap();
    fails("missing sums", "verification.sha256: is missing");
    pristine.reset();

    // An edited sums file: a hash changed, or a line removed.
    let sums = fs::read_to_string(dir.join("verification.sha256")).unwrap();
    let edited: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  data.index.jsonl") {
                format!("{}{}", "0".repeat(64), &l[64..])
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(dir.join("verification.sha256"), edited).unwrap();
    fails("edited sums", "data.index.jsonl: its sha256 is");
    let fewer: String = sums
        .lines()
        .filter(|l| !l.ends_with("  data.tar"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(dir.join("verification.sha256"), fewer).unwrap();
    fails(
        "a line removed",
        "data.tar: is not listed in verification.sha256",
    );
    pristine.reset();

    // An index that disagrees with the archive (and a sums file made to match it).
    let index = dir.join("config.index.jsonl");
    let text = fs::read_to_string(&index).unwrap();
    let edited = text.replacen("\"mode\":384", "\"mode\":420", 1);
    assert_ne!(text, edited, "the 0600 .secrets is in the index");
    fs::write(&index, &edited).unwrap();
    let sums: String = fs::read_to_string(dir.join("verification.sha256"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with("  config.index.jsonl") {
                format!(
                    "{}  config.index.jsonl\n",
                    Digest::of_bytes(edited.as_bytes())
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(dir.join("verification.sha256"), sums).unwrap();
    fails(
        "index",
        "mode differs: the index says 0644, the archive has 0600",
    );
    pristine.reset();
    assert_eq!(verify(t, &[]).code, 0, "intact again");
}

#[test]
fn local_verify_checks_the_snapshot_and_its_drive_backup() {
    let d = demo();
    let t = &d.t;
    let out = restore(t)
        .args(["--source", "local", "--date", "2025-04-01", "--verify"])
        .status(0);
    out.stdout_has("compared with backup 2025-04-01-221500 on T9");
    // A snapshot file changed behind dbackup's back (all hard-linked snapshots share it).
    let f = t.root().join("config-2025-04-01-221500").join(
        t.home()
            .join(".config/app/state")
            .strip_prefix("/")
            .unwrap(),
    );
    let mut file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all(b"2").unwrap();
    drop(file);
    let out = restore(t)
        .args(["--source", "local", "--date", "2025-04-01", "--verify"])
        .status(1);
    out.stderr_has("differs from the drive backup made from it")
        .stderr_has(".config/app/state");
    // An unreadable file is a problem too.
    let g = t
        .root()
        .join("data-2025-04-02-031500")
        .join(d.data.join("photos/p.jpg").strip_prefix("/").unwrap());
    fs::remove_file(&g).unwrap();
    let out = restore(t)
        .args([
            "--source",
            "local",
            "--date",
            "2025-04-02",
            "--set",
            "data",
            "--verify",
        ])
        .status(1);
    out.stderr_has("missing from the snapshot");
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile archives: each in a drive backup whose sums match, so that it reaches the restore itself.

/// One raw tar entry: the name and link are written into the header as they are (no checks, no normalisation).
fn raw_entry(name: &[u8], typ: u8, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_mode(if typ == b'5' { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::new(typ));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A drive with one backup holding the set `evil` made of `entries`.
fn hostile_drive(t: &Test, entries: &[Vec<u8>]) -> PathBuf {
    let mut tar = entries.concat();
    tar.extend_from_slice(&[0u8; 1024]);
    drive_with_tar(t, "evil-drive", "evil", &tar, entries.len() as u64, 1)
}

/// Restores the evil backup into `<tmp>/target`; it must exit 1 saying what was refused, and write nothing at all.
#[track_caller]
fn assert_refused(t: &Test, drive: &Path, why: &str) -> Output {
    let before = snapshot_of(t.dir.path());
    let out = restore_external(t)
        .args([
            "--drive",
            drive.to_str().unwrap(),
            "--date",
            "2025-04-01",
            "--target",
            t.path("target").to_str().unwrap(),
        ])
        .status(1);
    out.stderr_has("refused").stderr_has(why);
    out.stderr_has("nothing was restored");
    // The run log (under state/) records the failed run.
    let outside_state = |v: Vec<(String, u32, i64, String)>| -> Vec<_> {
        let state = t.path("state").display().to_string();
        v.into_iter().filter(|e| !e.0.starts_with(&state)).collect()
    };
    assert_eq!(
        outside_state(snapshot_of(t.dir.path())),
        outside_state(before),
        "nothing written anywhere"
    );
    out
}

#[test]
fn hostile_dotdot_names_are_refused() {
    let t = Test::new().config(&config(""));
    let drive = hostile_drive(
        &t,
        &[
            raw_entry(b"ok.txt", b'0', b"", b"fine"),
            raw_entry(b"../escaped.txt", b'0', b"", b"evil"),
        ],
    );
    assert_refused(&t, &drive, "`..` component");
    assert!(!t.path("escaped.txt").exists());
    // The dry run shows it too, and the verification fails on it.
    let out = restore(&t)
        .args([
            "--dry-run",
            "--source",
            "external",
            "--drive",
            drive.to_str().unwrap(),
            "--target",
            "target",
        ])
        .status(1);
    out.stdout_has("refuse     ../escaped.txt");
    let out = restore_external(&t)
        .args(["--drive", drive.to_str().unwrap(), "--verify"])
        .status(1);
    out.stderr_has("a restore would refuse it");
}

#[test]
fn hostile_absolute_names_are_refused() {
    let t = Test::new().config(&config(""));
    let outside = format!("/tmp/dbackup-hostile-{}", std::process::id());
    let drive = hostile_drive(&t, &[raw_entry(outside.as_bytes(), b'0', b"", b"evil")]);
    assert_refused(&t, &drive, "the name is absolute");
    assert!(!Path::new(&outside).exists());
}

#[test]
fn hostile_symlink_then_a_file_through_it_is_refused() {
    let t = Test::new().config(&config(""));
    let outside = t.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let drive = hostile_drive(
        &t,
        &[
            raw_entry(b"door", b'2', outside.to_str().unwrap().as_bytes(), b""),
            raw_entry(b"door/planted.txt", b'0', b"", b"evil"),
        ],
    );
    assert_refused(&t, &drive, "is a symlink in the backup");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn hostile_hard_link_to_etc_passwd_is_refused() {
    let t = Test::new().config(&config(""));
    let before = fs::metadata("/etc/passwd").unwrap();
    let drive = hostile_drive(&t, &[raw_entry(b"passwd", b'1', b"/etc/passwd", b"")]);
    assert_refused(&t, &drive, "hard link to `/etc/passwd`");
    let after = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        (after.ino(), after.nlink(), after.mtime()),
        (before.ino(), before.nlink(), before.mtime())
    );
}

#[test]
fn a_symlink_planted_in_the_target_is_never_written_through() {
    let t = Test::new().config(&config(""));
    let outside = t.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(t.path("target")).unwrap();
    std::os::unix::fs::symlink(&outside, t.path("target/docs")).unwrap();
    let drive = hostile_drive(
        &t,
        &[
            raw_entry(b"docs/report.txt", b'0', b"", b"benign"),
            raw_entry(b"other.txt", b'0', b"", b"fine"),
        ],
    );
    assert_refused(&t, &drive, "`docs` is a symlink at the destination");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // --skip-refused restores the rest and still fails.
    let out = restore_external(&t)
        .args([
            "--drive",
            drive.to_str().unwrap(),
            "--target",
            "target",
            "--skip-refused",
        ])
        .status(1);
    out.stdout_has("refused");
    assert_eq!(
        fs::read_to_string(t.path("target/other.txt")).unwrap(),
        "fine"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Command line

#[test]
fn contradictory_options_are_usage_errors() {
    let t = Test::new().config(&config(""));
    for (args, needle) in [
        (&["--list", "--path", "/x"][..], "--list shows backups"),
        (&["--verify", "--target", "/x"][..], "takes no --target"),
        (
            &["--source", "local", "--drive", "/x"][..],
            "--drive names a drive",
        ),
        (&["--path", "~bob/x"][..], "another user's home"),
    ] {
        let out = restore(&t).args(args).status(2);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let help = restore(&t).args(["--help"]).status(0);
    help.stdout_has("docs/RESTORE.md");
}

// ---------------------------------------------------------------------------------------------------------------
// The restoration guide

#[test]
fn the_guide_restores_with_nothing_but_tar_and_sha256sum() {
    let d = demo();
    let t = &d.t;
    let blocks = crate::fixtures::guide::blocks("tar-only");
    assert!(blocks.len() >= 5, "{blocks:?}");
    let all = blocks.concat();
    for needle in ["sha256sum -c verification.sha256", "tar -xpf", "-C /"] {
        assert!(all.contains(needle), "the guide uses {needle}");
    }
    assert!(!all.contains("dbackup"), "tar-only blocks need no dbackup");
    // The originals are gone: only the guide brings them back.
    let home = t.home();
    for p in [".config", ".secrets", "env.sh"] {
        let p = home.join(p);
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    fs::remove_dir_all(&d.data).unwrap();
    let scratch = t.path("scratch");
    let stdout = run_guide(
        t,
        &all,
        &[("DRIVE", &d.drive), ("DEST", &scratch), ("DATA", &d.data)],
    );
    assert!(
        stdout.contains("newest backup: 2025-04-02-031500"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data.tar: OK") && stdout.contains("backup.json: OK"),
        "{stdout}"
    );

    // In place and in the scratch directory: exactly what the backup holds.
    let snap = |set: &str, p: &Path| {
        tree(
            &t.root()
                .join(format!("{set}-2025-04-02-031500"))
                .join(p.strip_prefix("/").unwrap()),
        )
    };
    for (set, p) in [
        ("config", home.join(".config")),
        ("config", home.join(".secrets")),
        ("data", d.data.clone()),
    ] {
        let want = snap(set, &p);
        assert_same_tree(&tree(&p), &want);
        assert_same_tree(&tree(&landed(&scratch, &p)), &want);
    }
    assert_eq!(
        fs::metadata(home.join(".secrets")).unwrap().mode() & 0o777,
        0o600
    );
}

/// Runs guide blocks with `sh`, `sudo` being the identity (the test owns everything it restores); fails with the
/// script's output when it fails. Returns stdout.
fn run_guide(t: &Test, script: &str, env: &[(&str, &Path)]) -> String {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &format!("set -eu\nsudo() {{ \"$@\"; }}\n{script}")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", t.home())
        .env("USER", "tester")
        .current_dir(t.dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_guide_restores_an_encrypted_backup_with_nothing_but_age_and_tar() {
    // Debian's age: the test command installs it, so in CI its absence fails the test.
    if let Err(why) = testkit::check_tools(&["age"], testkit::in_ci()) {
        return testkit::skip(&why);
    }
    let t = Test::new();
    let (key, recipient) = t.keygen("identity.txt");
    let t = t.config(&config(&format!(
        r#", "encryption": {{ "recipients": ["{recipient}"] }},
            "destinations": [ {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false }} ]"#
    )));
    let drive = t.path("T9");
    fs::create_dir_all(&drive).unwrap();
    let data = t.path("data");
    sample(&t, &data);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    // A plain directory has symlinks: `latest`, which the guide reads when there is no `LATEST`.
    let link = fs::read_link(drive.join("backups/latest")).unwrap();
    let stamp = link.file_name().unwrap().to_string_lossy().into_owned();
    let dir = drive.join("backups").join(&stamp);
    for f in ["config.tar.age", "data.tar.age", "data.index.age"] {
        assert!(dir.join(f).is_file(), "{f} in {}", dir.display());
    }
    assert!(!dir.join("data.tar").exists());
    let snapshots: BTreeMap<&str, PathBuf> = ["config", "data"]
        .into_iter()
        .map(|set| {
            let name = list_snapshots(&t.root(), set).unwrap().pop().unwrap().name;
            (set, t.root().join(name))
        })
        .collect();
    let snap = |set: &str, p: &Path| tree(&snapshots[set].join(p.strip_prefix("/").unwrap()));
    let home = t.home();
    let wanted = [
        ("config", home.join(".config")),
        ("config", home.join(".secrets")),
        ("data", data.clone()),
    ];
    let want: Vec<Tree> = wanted.iter().map(|(set, p)| snap(set, p)).collect();

    let blocks = crate::fixtures::guide::blocks("age-only");
    assert!(blocks.len() >= 5, "{blocks:?}");
    let all = blocks.concat();
    for needle in [
        "sha256sum -c verification.sha256",
        "age -d -i \"$KEY\"",
        "| tar -xpf - -C /",
        ".part* | age -d",
    ] {
        assert!(all.contains(needle), "the guide uses {needle}");
    }
    assert!(!all.contains("dbackup"), "age-only blocks need no dbackup");
    // The originals are gone: only the guide brings them back.
    for p in [".config", ".secrets", "env.sh"] {
        let p = home.join(p);
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    fs::remove_dir_all(&data).unwrap();
    let scratch = t.path("scratch");
    let stdout = run_guide(
        &t,
        &all,
        &[
            ("DRIVE", &drive),
            ("KEY", &key),
            ("DEST", &scratch),
            ("DATA", &data),
        ],
    );
    assert!(
        stdout.contains(&format!("newest backup: {stamp}")),
        "{stdout}"
    );
    // The sums are of the ciphertext, checked without the key.
    for f in [
        "data.tar.age: OK",
        "config.index.age: OK",
        "backup.json: OK",
    ] {
        assert!(stdout.contains(f), "{f}: {stdout}");
    }
    for ((_, p), want) in wanted.iter().zip(&want) {
        assert_same_tree(&tree(p), want);
        assert_same_tree(&tree(&landed(&scratch, p)), want);
    }
    assert_eq!(
        fs::metadata(home.join(".secrets")).unwrap().mode() & 0o777,
        0o600
    );

    // Split archives (FAT32 drives): the scratch block joins the parts before age.
    let split = t.path("split");
    fs::create_dir_all(&split).unwrap();
    let bytes = fs::read(dir.join("data.tar.age")).unwrap();
    for (i, part) in bytes.chunks(bytes.len() / 3 + 1).enumerate() {
        fs::write(split.join(format!("data.tar.age.part{i:03}")), part).unwrap();
    }
    let scratch_block = blocks
        .iter()
        .find(|b| b.contains(".part000"))
        .expect("a block for split archives");
    let joined = t.path("joined");
    run_guide(
        &t,
        &format!("cd \"$SPLIT\"\n{scratch_block}"),
        &[("SPLIT", &split), ("KEY", &key), ("DEST", &joined)],
    );
    assert_same_tree(&tree(&landed(&joined, &data)), &want[2]);
}

// ---------------------------------------------------------------------------------------------------------------
// With the real external phase

#[test]
fn a_backup_written_by_dbackup_external_lists_verifies_and_restores() {
    let t = Test::new().config(&config(
        r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ]"#,
    ));
    fs::create_dir_all(t.path("T9")).unwrap();
    let data = t.path("data");
    sample(&t, &data);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let l: Listing = restore_external(&t)
        .args(["--list", "--json"])
        .status(0)
        .json();
    assert_eq!(l.backups.len(), 1, "{l:?}");
    let b = &l.backups[0];
    assert_eq!((b.state, b.latest), (ListedState::Verified, true));
    let stamp = b.stamp.clone();
    let r: VerifyReport = restore_external(&t)
        .args(["--verify", "--json"])
        .status(0)
        .json();
    assert!(r.intact && r.sums.as_ref().unwrap().ok, "{r:?}");
    assert_eq!(r.sets.len(), 2);

    let target = t.path("r");
    restore_external(&t)
        .args([
            "--date",
            &stamp,
            "--path",
            "~/data/projects/important",
            "--path",
            "~/.secrets",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    let inside = |p: &Path| landed(&target, p);
    let snap = |set: &str, p: &Path| {
        let name = list_snapshots(&t.root(), set).unwrap().pop().unwrap().name;
        tree(&t.root().join(name).join(p.strip_prefix("/").unwrap()))
    };
    let important = data.join("projects/important");
    assert_same_tree(&tree(&inside(&important)), &snap("data", &important));
    let secrets = t.home().join(".secrets");
    assert_same_tree(&tree(&inside(&secrets)), &snap("config", &secrets));
    // The local snapshot verifies against the drive backup made from it.
    let out = restore(&t)
        .args(["--source", "local", "--verify"])
        .status(0);
    out.stdout_has(&format!("compared with backup {stamp} on T9"));
}

#[test]
fn an_index_that_disagrees_with_the_archive_stops_the_restore() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    // The 0600 .secrets made 0644 in the index, and the sums file made to match: only the archive's header knows.
    let index = dir.join("config.index.jsonl");
    let text = fs::read_to_string(&index).unwrap();
    let secrets = format!(
        "\"path\":\"{}\"",
        t.home()
            .join(".secrets")
            .strip_prefix("/")
            .unwrap()
            .display()
    );
    let edited: String = text
        .lines()
        .map(|l| if l.contains(&secrets) { l.replace("\"mode\":384", "\"mode\":420") } else { l.to_string() } + "\n")
        .collect();
    assert_ne!(text, edited);
    fs::write(&index, &edited).unwrap();
    let sums: String = fs::read_to_string(dir.join("verification.sha256"))
        .unwrap()
        .lines()
        .map(|l| match l.strip_suffix("  config.index.jsonl") {
            Some(_) => format!(
                "{}  config.index.jsonl\n",
                Digest::of_bytes(edited.as_bytes())
            ),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(dir.join("verification.sha256"), sums).unwrap();
    let target = t.path("r");
    let out = from_external(restore(t), "~/.secrets", &target).status(1);
    out.stderr_has("disagrees with the index: its mode is 0600 in the archive, 0644 in the index");
    assert!(!landed(&target, &t.home().join(".secrets")).exists());
}

/// `--source external --set NAME` for a set that no backup on the drive holds: the error says that, and which sets
/// the drive's backups do hold. Before: "there is no verified backup on T9 (...); run `dbackup external` first",
/// while a verified backup was right there (the same `--set` from local snapshots named the set).
#[test]
fn a_set_no_drive_backup_holds_is_named_as_such() {
    let t = crate::fixtures::hostile::world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let out = t.restore_from_drive().args(["--set", "nope"]).status(1);
    out.stderr_has(&format!(
        "no backup on T9 ({}) holds set \"nope\"; the backups there hold: data",
        t.path("T9").display()
    ));
    out.stderr_lacks("run `dbackup external` first");
}
