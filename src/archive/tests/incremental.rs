//! Incremental archives through the archive engine: what they store, that their manifest finds every file's bytes
//! with one seek into the archive holding them, and that GNU tar rebuilds the newest snapshot from the chain.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    Fixture, NoProgress, Written, assert_same_tree, content, run_ok, set_mtime, write_to_files,
};
use crate::archive::incremental::IncrementalBase;
use crate::archive::*;

const B1: &str = "2026-12-01-031500";

/// A copy of `from` sharing every file's inode, as `rsync --link-dest` makes the next snapshot.
fn link_copy(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-al").arg(from).arg(to), "cp runs");
}

/// Replaces a file by a new inode (what rsync does with a changed file).
fn rewrite(p: &Path, bytes: &[u8]) {
    fs::remove_file(p).unwrap();
    fs::write(p, bytes).unwrap();
}

fn base(dir: &Path, snapshot: Option<PathBuf>, compare_content: bool) -> IncrementalBase {
    let index = dir.join("data.index.jsonl");
    IncrementalBase {
        stamp: B1.into(),
        open_manifest: Box::new(move || {
            Ok(Box::new(io::BufReader::new(fs::File::open(&index)?)) as Box<dyn io::BufRead>)
        }),
        snapshot,
        compare_content,
    }
}

struct Incr {
    dir: tempfile::TempDir,
    summary: ArchiveSummary,
    plan: ArchivePlan,
}

fn write_incremental(root: &Path, base: &IncrementalBase) -> Incr {
    let dir = tempfile::tempdir().unwrap();
    let plan = scan_against(root, Some(base), &mut NoProgress).unwrap();
    let archive = Box::new(FileSink::create(dir.path().join("data.tar")).unwrap());
    let index = Box::new(FileSink::create(dir.path().join("data.index.jsonl")).unwrap());
    let options = ArchiveOptions {
        base: Some(base),
        ..Default::default()
    };
    let summary = write_archive(&plan, archive, index, &options, &mut NoProgress).unwrap();
    Incr { dir, summary, plan }
}

fn manifest(dir: &Path) -> (IndexHeader, Vec<IndexEntry>) {
    let r = io::BufReader::new(fs::File::open(dir.join("data.index.jsonl")).unwrap());
    let mut r = IndexReader::new(r).unwrap();
    let entries = r.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    (r.header().clone(), entries)
}

/// The fixture's full archive, and the next snapshot of it (see [`next_snapshot`]).
fn full_and_next(fx: &Fixture) -> (Written, PathBuf) {
    (write_to_files(&fx.root, None), next_snapshot(&fx.root))
}

/// The next snapshot: a linked copy with files added, changed, deleted, renamed, turned into a directory, and one
/// changed with its size and mtime kept.
fn next_snapshot(s1: &Path) -> PathBuf {
    let s2 = s1.with_file_name("snap2");
    link_copy(s1, &s2);
    let u = s2.join("home/u");
    rewrite(&u.join(".secrets"), b"TOKEN=changed, longer\n");
    fs::write(u.join("new.txt"), content(5000, 9)).unwrap();
    fs::remove_file(u.join("tool")).unwrap();
    fs::rename(u.join("private/x"), u.join("private/y")).unwrap();
    fs::remove_file(u.join("docs/empty")).unwrap();
    fs::create_dir(u.join("docs/empty")).unwrap();
    fs::write(u.join("docs/empty/inside"), b"now a directory\n").unwrap();
    let same = s2.join("data/projects/important/exact512");
    let m = fs::metadata(&same).unwrap();
    rewrite(&same, &content(512, 77));
    set_mtime(&same, m.mtime(), m.mtime_nsec());
    s2
}

/// Reads every file of a manifest from the archive its entry names, with one seek, and compares it with the
/// snapshot. Returns how many came from the base.
fn check_every_file(s2: &Path, manifest: &[IndexEntry], full: &Path, incr: &Path) -> usize {
    let open = |dir: &Path| {
        ArchiveFiles::discover(dir, "data.tar")
            .unwrap()
            .open()
            .unwrap()
    };
    let (mut a1, mut a2) = (open(full), open(incr));
    let mut from_base = 0;
    for e in manifest.iter().filter(|e| e.kind == EntryKind::File) {
        let mut got = Vec::new();
        match e.stored_in.as_deref() {
            Some(B1) => {
                from_base += 1;
                read_entry(&mut a1, e, &mut got).unwrap();
            }
            None => {
                read_entry(&mut a2, e, &mut got).unwrap();
            }
            Some(other) => panic!("points into {other}"),
        }
        assert_eq!(
            got,
            fs::read(s2.join(e.rel_path())).unwrap(),
            "{}",
            e.display_path()
        );
    }
    from_base
}

/// A full archive, then an incremental against it with the base's snapshot still here (inode comparison): the
/// incremental stores only what changed (the 3 MiB file is not in it), its manifest lists exactly the new snapshot
/// and reaches every file's bytes in the archive that holds them, and GNU tar rebuilds the new snapshot from the
/// two archives as docs/RESTORE.md says. (Before: every archive was full.)
#[test]
fn an_incremental_stores_what_changed_and_its_manifest_is_complete() {
    let fx = Fixture::new();
    let (full, s2) = full_and_next(&fx);
    let b = base(full.dir.path(), Some(fx.root.clone()), false);
    let inc = write_incremental(&s2, &b);
    let (header, entries) = manifest(inc.dir.path());
    assert_eq!(header.kind, ArchiveKind::Incremental);
    assert_eq!(header.depends_on, vec![B1.to_string()]);
    assert_eq!(inc.summary.depends_on, vec![B1.to_string()]);
    assert!(inc.summary.tar_bytes < 1 << 20, "{}", inc.summary.tar_bytes);
    assert!(full.summary.tar_bytes > 3 << 20);
    // The scan predicted it.
    assert_eq!(
        inc.plan.estimate.referenced_files,
        inc.summary.referenced_files
    );
    assert_eq!(inc.plan.estimate.tar_bytes, inc.summary.tar_bytes);

    // Complete: every path of the new snapshot, nothing deleted.
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.rel_path().to_path_buf()).collect();
    let mut want: Vec<PathBuf> = walkdir::WalkDir::new(&s2)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&s2).unwrap().to_path_buf())
        .filter(|p| !p.ends_with("sock"))
        .collect();
    want.sort();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(sorted, want);
    assert!(!paths.iter().any(|p| p.ends_with("tool")));

    let by_path: BTreeMap<&[u8], &IndexEntry> = entries.iter().map(|e| (&e.path[..], e)).collect();
    let stored_here = |p: &str| by_path[p.as_bytes()].stored_in.is_none();
    for changed in [
        "home/u/.secrets",
        "home/u/new.txt",
        "home/u/private/y",
        "home/u/docs/empty/inside",
        "data/projects/important/exact512",
        // Several names: kept together, stored again.
        "home/u/docs/h1",
    ] {
        assert!(stored_here(changed), "{changed}");
    }
    assert!(!stored_here("data/projects/important/big.bin"));
    assert_eq!(by_path[&b"home/u/docs/empty"[..]].kind, EntryKind::Dir);
    let from_base = check_every_file(&s2, &entries, full.dir.path(), inc.dir.path());
    assert_eq!(from_base as u64, inc.summary.referenced_files);
    assert!(from_base >= 5, "{from_base}");

    // GNU tar alone: the full, then for each incremental: remove what its manifest does not list, extract it.
    let out = tempfile::tempdir().unwrap();
    let x = |tar: &Path| {
        let o = Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(out.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success()
                && err
                    .lines()
                    .all(|l| l.contains("implausibly old time stamp")),
            "{err}"
        );
    };
    x(&full.dir.path().join("data.tar"));
    remove_unlisted(out.path(), &paths);
    x(&inc.dir.path().join("data.tar"));
    assert_same_tree(&s2, out.path());
}

/// `scan_both`, the one walk of an incremental's change detection, gives the same estimates as a full `scan` and
/// `scan_against` on the same snapshot (changed, added, renamed, hard-linked, sparse and unchanged files), and the
/// full one is what a full archive then writes. (Before: `external` walked the snapshot once for each.)
#[test]
fn one_walk_gives_the_full_and_the_incremental_estimates() {
    let fx = Fixture::new();
    let (full, s2) = full_and_next(&fx);
    let b = base(full.dir.path(), Some(fx.root.clone()), false);
    let (plan, inc) = scan_both(&s2, &b, &mut NoProgress).unwrap();
    let alone = scan(&s2, &mut NoProgress).unwrap();
    // The index's size is approximate (an entry's offsets in its line are the incremental's): within 2%.
    let (a, b2) = (plan.estimate.index_bytes, alone.estimate.index_bytes);
    assert!(a.abs_diff(b2) * 50 <= b2, "{a} vs {b2}");
    assert_eq!(
        ArchiveEstimate {
            index_bytes: b2,
            ..plan.estimate.clone()
        },
        alone.estimate
    );
    let against = scan_against(&s2, Some(&b), &mut NoProgress).unwrap();
    assert_eq!(inc, against.estimate);
    assert!(inc.referenced_files >= 5, "{inc:?}");
    assert!(inc.tar_bytes < plan.estimate.tar_bytes / 3, "{inc:?}");
    let written = write_to_files(&s2, None);
    assert_eq!(plan.estimate.tar_bytes, written.summary.tar_bytes);
}

/// What RESTORE.md's loop does: every path below `root` that the manifest does not list is removed.
fn remove_unlisted(root: &Path, listed: &[PathBuf]) {
    let listed: std::collections::BTreeSet<&PathBuf> = listed.iter().collect();
    let mut extra: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
        .filter(|p| !listed.contains(p))
        .collect();
    extra.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in extra {
        let full = root.join(&p);
        if full.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&full).unwrap();
        } else if full.symlink_metadata().is_ok() {
            fs::remove_file(&full).unwrap();
        }
    }
}

/// Without the base's snapshot, metadata decides: the file changed with its size and mtime kept is missed (it
/// points to the base's stale bytes), and only the content comparison catches it; the rename is stored either way.
#[test]
fn without_the_base_snapshot_metadata_decides_and_content_comparison_catches_the_rest() {
    let fx = Fixture::new();
    let (full, s2) = full_and_next(&fx);
    let same = b"data/projects/important/exact512";
    for (compare_content, method, caught) in [
        (false, incremental::ChangeMethod::Metadata, false),
        (true, incremental::ChangeMethod::Content, true),
    ] {
        let b = base(full.dir.path(), None, compare_content);
        assert_eq!(b.method(), method);
        let inc = write_incremental(&s2, &b);
        let (_, entries) = manifest(inc.dir.path());
        let e = entries.iter().find(|e| e.path == same).unwrap();
        assert_eq!(e.stored_in.is_none(), caught, "{method:?}");
        let y = entries
            .iter()
            .find(|e| e.path == b"home/u/private/y")
            .unwrap();
        assert!(y.stored_in.is_none());
        let big = entries
            .iter()
            .find(|e| e.path == b"data/projects/important/big.bin")
            .unwrap();
        assert_eq!(big.stored_in.as_deref(), Some(B1), "{method:?}");
    }
}

/// A sparse file unchanged since its base (its snapshot gone): the content comparison hashes it as the base's index
/// does (its stored digest, only its data read), so it stays in the base like any unchanged file; it was hashed
/// whole with its holes as zeros, never equal to the stored digest, and stored again at every comparison.
#[test]
fn the_content_comparison_keeps_an_unchanged_sparse_file_in_its_base() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let s1 = dir.path().join("snap1");
    fs::create_dir_all(s1.join("vm")).unwrap();
    let f = fs::File::create(s1.join("vm/disk.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&content(70_000, 3), 3 << 20).unwrap();
    f.sync_all().unwrap();
    fs::write(s1.join("vm/notes.txt"), b"plain\n").unwrap();
    let full = write_to_files(&s1, None);
    let in_full = full.entry(b"vm/disk.img");
    if !in_full.sha256_is_stored() {
        return crate::stdx::skip::skip(&format!(
            "the filesystem of {} reports no holes",
            dir.path().display()
        ));
    }
    let s2 = dir.path().join("snap2");
    link_copy(&s1, &s2);
    let b = base(full.dir.path(), None, true);
    assert_eq!(b.method(), incremental::ChangeMethod::Content);
    let inc = write_incremental(&s2, &b);
    let (_, entries) = manifest(inc.dir.path());
    let e = entries.iter().find(|e| e.path == b"vm/disk.img").unwrap();
    assert_eq!(e.stored_in.as_deref(), Some(B1), "{e:?}");
    assert_eq!((e.sha256, e.sparse), (in_full.sha256, in_full.sparse));
}
