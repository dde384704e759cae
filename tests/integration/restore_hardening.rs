//! Issue 11 through the real binary, restore's part: verify proves what a restore would write (§3), a restore never
//! destroys the user's newer work (§5), and identity-file permissions and secret files under /nix/store (§6).

use std::fs;
use std::path::Path;

use dbackup::archive::Digest;
use dbackup::archive::sums::{SumLine, read_sums, write_sums};
use dbackup::external::layout;

use crate::harness::Test;
use crate::restore::demo;

fn restore(t: &Test) -> crate::harness::Cmd {
    t.cmd().args(["restore"])
}

/// A name of the demo under `data` (the symlinked source), as the index spells it (no leading `/`).
fn data_name(data: &Path, rel: &str) -> String {
    data.join(rel)
        .strip_prefix("/")
        .unwrap()
        .display()
        .to_string()
}

/// Rewrites `<set>.index.jsonl` of the drive backup in `dir` line by line with `edit` (`None` leaves a line out,
/// more lines may be returned joined by newlines), then makes `backup.json` and `verification.sha256` agree with the
/// new index, as a hostile drive would: only the archive itself still tells the truth.
fn forge_index(dir: &Path, set: &str, edit: impl Fn(&str) -> Option<String>) {
    let name = format!("{set}.index.jsonl");
    let path = dir.join(&name);
    let text = fs::read_to_string(&path).unwrap();
    let forged: String = text
        .lines()
        .filter_map(|l| edit(l).map(|l| l + "\n"))
        .collect();
    assert_ne!(text, forged, "the edit changed the index");
    fs::write(&path, &forged).unwrap();
    let index_sha = Digest::of_bytes(forged.as_bytes());
    let meta_path = dir.join(layout::METADATA_FILE);
    let mut meta = layout::read_metadata(&meta_path).unwrap();
    for s in &mut meta.sets {
        for r in &mut s.index {
            if r.name == name {
                r.bytes = forged.len() as u64;
                r.sha256 = index_sha;
            }
        }
    }
    let meta_bytes = layout::metadata_bytes(&meta);
    fs::write(&meta_path, &meta_bytes).unwrap();
    let sums_path = dir.join(layout::SUMS_FILE);
    let sums: Vec<SumLine> = read_sums(&sums_path)
        .unwrap()
        .into_iter()
        .map(|mut l| {
            if l.name == name.as_bytes() {
                l.sha256 = index_sha;
            } else if l.name == layout::METADATA_FILE.as_bytes() {
                l.sha256 = Digest::of_bytes(&meta_bytes);
            }
            l
        })
        .collect();
    let mut out = Vec::new();
    write_sums(&mut out, &sums).unwrap();
    fs::write(&sums_path, out).unwrap();
}

/// The index line of `path` in `line` form, parsed, when `line` is that entry's.
fn line_of(line: &str, path: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["path"] == path).then_some(v)
}

// ---------------------------------------------------------------------------------------------------------------
// §3: verify proves what restore would write

/// The hard-link line of `projects/important/also-photo` (whose first name, `photos/p.jpg`, is outside the restored
/// directory, so a restore copies its content) made to point at the data of `projects/other/c.txt`, with that
/// file's size and sha256, and `backup.json` and the sums file made to agree. Before: `--verify` said "intact" and a
/// restore of `projects/important` wrote "other c" as `also-photo`. Now: `--verify` fails naming the link and the
/// data offset the archive gives it, and the restore stops before writing anything.
#[test]
fn a_hard_link_line_pointing_at_another_files_data_fails_verify_and_stops_the_restore() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    let index = fs::read_to_string(dir.join("data.index.jsonl")).unwrap();
    let other = data_name(&d.data, "projects/other/c.txt");
    let link = data_name(&d.data, "projects/important/also-photo");
    let c = index
        .lines()
        .find_map(|l| line_of(l, &other))
        .expect("c.txt in the index");
    forge_index(&dir, "data", |l| match line_of(l, &link) {
        Some(mut v) => {
            assert_eq!(v["type"], "hardlink");
            for key in ["data_offset", "size", "sha256"] {
                v[key] = c[key].clone();
            }
            Some(v.to_string())
        }
        None => Some(l.to_string()),
    });

    let out = restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
    assert!(
        out.stderr.contains(&format!("entry {link}")) && out.stderr.contains("data offset differs"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("NOT intact"), "{}", out.stdout);

    let target = t.path("r");
    let out = restore(t)
        .args([
            "--source",
            "external",
            "--path",
            "~/data/projects/important",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(1);
    assert!(
        out.stderr.contains("the hard link") && out.stderr.contains(&link),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing was restored"),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "nothing written");
}

/// One line of the index left out (`projects/important/sub/b.txt`), then one added for an entry the archive does not
/// hold, each with `backup.json` and the sums file made to agree. Before: restoring `projects/important` exited 0
/// without `b.txt` (nothing said), and with the added line it wrote the entries before it, then stopped. Now: both
/// stop before writing anything, naming what the index leaves out or adds; `--verify` fails on both (as before).
#[test]
fn an_index_that_leaves_out_or_adds_an_entry_stops_the_restore_of_that_path() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    let pristine: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let b = data_name(&d.data, "projects/important/sub/b.txt");
    let target = t.path("r");
    let restore_important = || {
        restore(t)
            .args([
                "--source",
                "external",
                "--path",
                "~/data/projects/important",
                "--target",
                target.to_str().unwrap(),
            ])
            .status(1)
    };

    forge_index(&dir, "data", |l| {
        line_of(l, &b).is_none().then(|| l.to_string())
    });
    let out = restore_important();
    assert!(
        out.stderr
            .contains(&format!("the archive holds /{b} (its data at offset"))
            && out.stderr.contains("which the index leaves out"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "cannot restore {}",
            d.data.join("projects/important").display()
        )),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "nothing written");
    restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
    // A restore of something else in the same backup is not affected.
    restore(t)
        .args([
            "--source",
            "external",
            "--path",
            "~/data/projects/other",
            "--target",
            target.to_str().unwrap(),
        ])
        .status(0);
    fs::remove_dir_all(&target).unwrap();

    for (p, bytes) in &pristine {
        fs::write(p, bytes).unwrap();
    }
    let forged = data_name(&d.data, "projects/important/sub/b2.txt");
    forge_index(&dir, "data", |l| match line_of(l, &b) {
        Some(mut v) => {
            v["path"] = forged.clone().into();
            Some(format!("{l}\n{v}"))
        }
        None => Some(l.to_string()),
    });
    let out = restore_important();
    assert!(
        out.stderr.contains(&format!("the index lists /{forged}"))
            && out.stderr.contains("which the archive does not hold there"),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "nothing written");
    restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
}
