//! End-to-end tests of the archive engine against GNU tar, sha256sum and damaged archives.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

mod attrs;
mod incremental;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Sets a path's mtime (and atime) to the nanosecond, without following symlinks.
fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

/// `mode` holds the file type (`S_IFIFO`, ...) and the permissions, as mknod(2) takes them.
fn mknod(p: &Path, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::from_raw_mode(mode),
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

fn content(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A snapshot with everything an archive must keep: see the list below. The root mirrors absolute paths.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("snap");
        let r = |p: &str| root.join(p);
        let u = r("home/u");
        fs::create_dir_all(u.join("docs")).unwrap();
        fs::create_dir_all(r("data/projects/important")).unwrap();
        fs::write(u.join(".secrets"), b"TOKEN=hunter2\n").unwrap();
        fs::set_permissions(u.join(".secrets"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(u.join("docs/a.txt"), b"hello\n").unwrap();
        fs::write(u.join("docs/empty"), b"").unwrap();
        // Crosses the writer's 1 MiB blocks, and is not a multiple of 512.
        fs::write(
            r("data/projects/important/big.bin"),
            content(3 * 1024 * 1024 + 123, 1),
        )
        .unwrap();
        fs::write(r("data/projects/important/exact512"), content(512, 2)).unwrap();
        fs::create_dir(u.join("empty-dir")).unwrap();
        fs::create_dir(u.join("private")).unwrap();
        fs::write(u.join("private/x"), b"x").unwrap();
        fs::set_permissions(u.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(u.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(u.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::create_dir(r("tmp")).unwrap();
        fs::set_permissions(r("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        // Symlinks: relative, absolute and dangling, long target.
        symlink("docs/a.txt", u.join("link")).unwrap();
        symlink("/nonexistent/target", u.join("dangling")).unwrap();
        symlink("d/".repeat(80), u.join("long-link")).unwrap();
        // Hard links: three names of one file, in different directories.
        fs::write(u.join("docs/h1"), b"linked content\n").unwrap();
        fs::hard_link(u.join("docs/h1"), u.join("h2")).unwrap();
        fs::hard_link(u.join("docs/h1"), r("data/h3")).unwrap();
        // A 200-byte path whose last component is long too, and a 240-byte component.
        let deep = u.join(format!("{}/{}", "n".repeat(60), "m".repeat(60)));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f".repeat(70)), b"deep\n").unwrap();
        fs::write(u.join("L".repeat(240)), b"long component\n").unwrap();
        // Names that are not UTF-8, short and long.
        fs::write(u.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name\n").unwrap();
        let long_bad = u.join(OsStr::from_bytes(
            &[b"\xff".repeat(10), b"/".to_vec(), b"z\xfe".repeat(60)].concat(),
        ));
        fs::create_dir(long_bad.parent().unwrap()).unwrap();
        fs::write(&long_bad, b"binary long name\n").unwrap();
        fs::write(u.join("back\\slash and\nnewline"), b"odd\n").unwrap();
        // A FIFO; devices when root.
        mknod(&u.join("fifo"), libc::S_IFIFO | 0o640, 0);
        if is_root() {
            mknod(
                &r("dev-null"),
                libc::S_IFCHR | 0o666,
                rustix::fs::makedev(1, 3),
            );
            mknod(
                &r("dev-loop"),
                libc::S_IFBLK | 0o660,
                rustix::fs::makedev(7, 200),
            );
            lchown(&u, 1000, 1000);
            lchown(&u.join(".secrets"), 1000, 1000);
            lchown(&u.join("link"), 1000, 1001);
            lchown(&u.join("docs/a.txt"), 4_000_000, 5_000_000); // beyond ustar's 7 octal digits
        }
        // A socket: skipped with a warning.
        let _ = std::os::unix::net::UnixListener::bind(u.join("sock")).unwrap();

        // mtimes last, deepest first, with nanoseconds, one before 1970.
        let mut all: Vec<PathBuf> = walkdir::WalkDir::new(&root)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for (i, p) in all.iter().enumerate() {
            set_mtime(
                p,
                1_600_000_000 + i as i64 * 1000,
                (i as i64 * 123_456_789) % 1_000_000_000,
            );
        }
        set_mtime(&u.join("docs/a.txt"), -86_400 * 365, 250_000_000);
        set_mtime(&u.join("docs/empty"), 1_700_000_000, 0);
        Fixture { _dir: dir, root }
    }
}

/// Everything a tree comparison looks at, for one path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: String,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: (i64, i64),
    content: Option<Digest>,
    link: Option<PathBuf>,
    rdev: u64,
}

/// Walks a tree and describes every path under it (sockets left out), with hard-link groups as sets of paths.
fn describe(root: &Path, owners: bool) -> (BTreeMap<PathBuf, Node>, Vec<Vec<PathBuf>>) {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            continue;
        }
        let kind = format!("{:o}", m.mode() & libc::S_IFMT);
        let content = ft
            .is_file()
            .then(|| Digest::of_bytes(&fs::read(e.path()).unwrap()));
        let link = ft.is_symlink().then(|| fs::read_link(e.path()).unwrap());
        if ft.is_file() {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            owner: owners.then(|| (m.uid(), m.gid())),
            mtime: (m.mtime(), m.mtime_nsec()),
            content,
            link,
            rdev: m.rdev(),
        };
        nodes.insert(rel, node);
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes.into_values().filter(|g| g.len() > 1).collect();
    groups.iter_mut().for_each(|g| g.sort());
    groups.sort();
    (nodes, groups)
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    let owners = is_root();
    if !owners {
        println!("not root: owners are not compared");
    }
    let (a, ga) = describe(expected, owners);
    let (b, gb) = describe(actual, owners);
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, na) in &a {
        assert_eq!(na, &b[k], "{}", k.display());
    }
    assert_eq!(ga, gb, "hard-link groups");
    assert!(!ga.is_empty(), "the fixture has hard links");
}

/// Collects warnings.
#[derive(Default)]
struct Recorder {
    warnings: Vec<Warning>,
    entries: u64,
}

impl Progress for Recorder {
    fn entry(&mut self, _: &[u8], _: EntryKind, _: u64) {
        self.entries += 1;
    }
    fn warning(&mut self, w: &Warning) {
        self.warnings.push(w.clone());
    }
}

/// An archive written to files in its own directory.
pub(in crate::archive) struct Written {
    pub(in crate::archive) dir: tempfile::TempDir,
    pub(in crate::archive) summary: ArchiveSummary,
    pub(in crate::archive) plan: ArchivePlan,
}

impl Written {
    fn tar(&self) -> PathBuf {
        self.dir.path().join("data.tar")
    }
    fn index(&self) -> PathBuf {
        self.dir.path().join("data.index.jsonl")
    }
    /// The entry of `path` in this archive's index.
    fn entry(&self, path: &[u8]) -> IndexEntry {
        entry_of(&self.index(), path)
    }
    /// What the verifier says of this archive, which it must refuse.
    fn verify_err(&self) -> VerifyError {
        verify_files(&self.tar(), &self.index()).unwrap_err()
    }
    /// What the one-file reader says of `e`, which it must refuse.
    fn read_error(&self, e: &IndexEntry) -> ReadError {
        let mut archive = ArchiveFiles::discover(self.dir.path(), "data.tar")
            .unwrap()
            .open()
            .unwrap();
        read_entry(&mut archive, e, &mut io::sink()).unwrap_err()
    }
}

/// Writes `plan` as `data.tar` and `data.index.jsonl` in `out`, through `stage`.
pub(in crate::archive) fn write_plan(
    plan: &ArchivePlan,
    out: &Path,
    stage: Option<&dyn Stage>,
    progress: &mut dyn Progress,
) -> ArchiveSummary {
    let archive = Box::new(FileSink::create(out.join("data.tar")).unwrap());
    let index = Box::new(FileSink::create(out.join("data.index.jsonl")).unwrap());
    write_archive(
        plan,
        archive,
        index,
        &ArchiveOptions {
            stage,
            ..Default::default()
        },
        progress,
    )
    .unwrap()
}

pub(in crate::archive) fn write_to_files(root: &Path, stage: Option<&dyn Stage>) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let plan = scan(root, &mut NoProgress).unwrap();
    let mut rec = Recorder::default();
    let summary = write_plan(&plan, dir.path(), stage, &mut rec);
    assert_eq!(summary.warning_count as usize, rec.warnings.len());
    Written { dir, summary, plan }
}

/// Runs `cmd` (`runs` says what must start: the program, its package) and asserts it succeeded, its stderr the
/// message when not.
pub(in crate::archive) fn run_ok(cmd: &mut Command, runs: &str) -> std::process::Output {
    let out = cmd.output().expect(runs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn gnu_tar(args: &[&str]) -> std::process::Output {
    let out = Command::new("tar")
        .args(args)
        .output()
        .expect("GNU tar runs");
    // GNU tar warns about the fixture's mtime before 1970, and still sets it.
    let complaints: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("tar: home/u/docs/a.txt: implausibly old time stamp"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "tar {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn gnu_tar_extracts_an_identical_tree() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    assert_eq!(w.summary.warning_count, 1, "{:?}", w.summary.warnings);
    assert!(
        w.summary.warnings[0].message.contains("socket"),
        "{:?}",
        w.summary.warnings
    );
    let out = tempfile::tempdir().unwrap();
    let tar = w.tar();
    gnu_tar(&[
        "-xpf",
        tar.to_str().unwrap(),
        "-C",
        out.path().to_str().unwrap(),
        "--numeric-owner",
    ]);
    assert_same_tree(&fx.root, out.path());
}

#[test]
fn gnu_tar_lists_every_entry_without_complaint() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let out = gnu_tar(&["-tvf", w.tar().to_str().unwrap()]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listing.lines().count() as u64,
        w.summary.entries,
        "{listing}"
    );
    assert!(listing.contains("home/u/h2 link to data/h3"), "{listing}");
    assert!(
        listing.contains("home/u/docs/h1 link to data/h3"),
        "{listing}"
    );
    assert!(listing.contains("home/u/link -> docs/a.txt"), "{listing}");
}

#[test]
fn the_scan_predicts_the_archive() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let est = &w.plan.estimate;
    assert_eq!(est.entries, w.summary.entries);
    assert_eq!(
        (est.files, est.file_bytes),
        (w.summary.files, w.summary.file_bytes)
    );
    assert_eq!(est.hard_links, 2);
    assert_eq!(w.summary.hard_links, 2);
    assert_eq!(est.tar_bytes, w.summary.tar_bytes);
    assert_eq!(w.summary.tar_bytes % 10240, 0);
    assert_eq!(fs::metadata(w.tar()).unwrap().len(), w.summary.tar_bytes);
    let index_len = fs::metadata(w.index()).unwrap().len();
    assert!(
        index_len <= est.index_bytes && index_len * 2 > est.index_bytes,
        "{index_len} vs {}",
        est.index_bytes
    );
}

#[test]
fn archives_are_deterministic() {
    let fx = Fixture::new();
    let a = write_to_files(&fx.root, None);
    let b = write_to_files(&fx.root, None);
    assert_eq!(fs::read(a.tar()).unwrap(), fs::read(b.tar()).unwrap());
    assert_eq!(a.summary.tar_sha256, b.summary.tar_sha256);
}

#[test]
fn index_offsets_reach_every_file_with_one_seek() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    assert_eq!(
        w.summary.archive_files[0].sha256,
        Digest::of_bytes(&fs::read(w.tar()).unwrap())
    );
    assert_eq!(
        w.summary.tar_sha256,
        Some(w.summary.archive_files[0].sha256)
    );
    let files = ArchiveFiles::discover(w.dir.path(), "data.tar").unwrap();
    let mut archive = files.open().unwrap();
    let index = io::BufReader::new(fs::File::open(w.index()).unwrap());
    let mut checked = 0;
    for e in IndexReader::new(index).unwrap() {
        let e = e.unwrap();
        let source = fx.root.join(e.rel_path());
        match e.kind {
            EntryKind::File | EntryKind::Hardlink => {
                let mut got = Vec::new();
                read_entry(&mut archive, &e, &mut got).unwrap();
                assert_eq!(got, fs::read(&source).unwrap(), "{}", e.display_path());
                checked += 1;
            }
            _ => {
                let err = read_entry(&mut archive, &e, &mut Vec::new()).unwrap_err();
                assert!(matches!(err, ReadError::NotAFile { .. }), "{err}");
            }
        }
    }
    assert_eq!(checked, w.summary.files + w.summary.hard_links);

    // Lookup by path, for a name that is not UTF-8.
    let index = io::BufReader::new(fs::File::open(w.index()).unwrap());
    let e = IndexReader::new(index)
        .unwrap()
        .find(b"home/u/caf\xe9")
        .unwrap()
        .expect("found");
    let mut got = Vec::new();
    read_entry(&mut archive, &e, &mut got).unwrap();
    assert_eq!(got, b"latin-1 name\n");
    assert_eq!(e.mode, 0o644 & !umask());
}

fn umask() -> u32 {
    // Read by setting and setting back at once.
    let m = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(m);
    m.bits()
}

/// The entry of `path` in an index file.
fn entry_of(index: &Path, path: &[u8]) -> IndexEntry {
    let r = io::BufReader::new(fs::File::open(index).unwrap());
    IndexReader::new(r)
        .unwrap()
        .find(path)
        .unwrap()
        .expect("in the index")
}

fn verify_files(tar: &Path, index: &Path) -> Result<VerifyReport, VerifyError> {
    let archive = fs::File::open(tar).unwrap();
    let index = io::BufReader::new(fs::File::open(index).unwrap());
    verify_archive("data.tar", archive, index, &mut NoProgress)
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

/// The fixture written to files, then the byte at `at(entry)` flipped, `entry` being that of `path`.
fn written_flipped(path: &[u8], at: impl Fn(&IndexEntry) -> u64) -> (Written, IndexEntry) {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let e = w.entry(path);
    flip(&w.tar(), at(&e));
    (w, e)
}

#[test]
fn the_verifier_accepts_an_intact_archive() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let report = verify_files(&w.tar(), &w.index()).unwrap();
    assert_eq!(report.entries, w.summary.entries);
    assert_eq!(report.files, w.summary.files);
    assert_eq!(report.hard_links, 2);
    assert_eq!(Some(report.tar_sha256), w.summary.tar_sha256);
}

/// A file left out (a secret key bound for an unencrypted destination) is in neither the archive nor the index,
/// under none of its names (a hard link elsewhere in the snapshot included); the archive still verifies.
#[test]
fn a_file_left_out_is_stored_under_none_of_its_names() {
    let src = tempfile::tempdir().unwrap();
    let key = b"AGE-SECRET-KEY-1LEFTOUTLEFTOUTLEFTOUT";
    fs::create_dir_all(src.path().join("cfg/dbackup")).unwrap();
    fs::write(src.path().join("cfg/dbackup/identity.txt"), key).unwrap();
    fs::hard_link(
        src.path().join("cfg/dbackup/identity.txt"),
        src.path().join("other-name"),
    )
    .unwrap();
    fs::write(src.path().join("cfg/kept"), "kept").unwrap();
    let plan = scan(src.path(), &mut NoProgress).unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = write_archive(
        &plan,
        Box::new(FileSink::create(out.path().join("data.tar")).unwrap()),
        Box::new(FileSink::create(out.path().join("data.index.jsonl")).unwrap()),
        &ArchiveOptions {
            leave_out: &[PathBuf::from("cfg/dbackup/identity.txt")],
            ..Default::default()
        },
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!((summary.files, summary.hard_links), (1, 0));
    for name in ["data.tar", "data.index.jsonl"] {
        let bytes = fs::read(out.path().join(name)).unwrap();
        assert!(!bytes.windows(key.len()).any(|w| w == key), "{name}");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("identity.txt") && !text.contains("other-name"),
            "{name}"
        );
    }
    let tar = out.path().join("data.tar");
    verify_files(&tar, &out.path().join("data.index.jsonl")).unwrap();
}

#[test]
fn the_verifier_names_a_flipped_content_byte() {
    let (w, e) = written_flipped(b"data/projects/important/big.bin", |e| {
        e.data_offset + 2_000_000
    });
    let err = w.verify_err();
    assert!(
        matches!(*err.problem, VerifyProblem::Content { .. }),
        "{err}"
    );
    assert_eq!(
        err.entry.as_deref(),
        Some("data/projects/important/big.bin")
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("archive data.tar: entry data/projects/important/big.bin (offset "),
        "{msg}"
    );
    // The one-file reader sees it too.
    let err = w.read_error(&e);
    assert!(matches!(err, ReadError::Content { .. }), "{err}");
}

#[test]
fn the_verifier_names_a_flipped_header_byte() {
    let (w, e) = written_flipped(b"home/u/.secrets", |e| e.header_offset + 100); // the mode field
    let err = w.verify_err();
    assert_eq!(err.entry.as_deref(), Some("home/u/.secrets"), "{err}");
    let err = w.read_error(&e);
    assert!(matches!(err, ReadError::Header { .. }), "{err}");
}

#[test]
fn the_verifier_catches_a_flip_in_padding() {
    // Zero padding after the content.
    let (w, e) = written_flipped(b"home/u/docs/a.txt", |e| e.data_offset + e.size + 10);
    let err = w.verify_err();
    assert!(
        matches!(*err.problem, VerifyProblem::StreamHash { .. }),
        "{err}"
    );
    flip(&w.tar(), e.data_offset + e.size + 10);
    flip(&w.tar(), w.summary.tar_bytes - 1); // end-of-archive padding
    let err = w.verify_err();
    assert!(
        matches!(*err.problem, VerifyProblem::StreamHash { .. }),
        "{err}"
    );
}

#[test]
fn the_verifier_catches_truncation_anywhere() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let full = fs::read(w.tar()).unwrap();
    let big = w.entry(b"data/projects/important/big.bin");
    let exact = w.entry(b"data/projects/important/exact512");
    let cases = [
        (
            big.data_offset + 1000,
            Some("data/projects/important/big.bin"),
        ), // inside content
        (
            exact.header_offset,
            Some("data/projects/important/exact512"),
        ), // at a header boundary
        (w.summary.tar_bytes - 512, None), // inside the end blocks
        (0, Some("data")),
    ];
    for (cut, entry) in cases {
        fs::write(w.tar(), &full[..cut as usize]).unwrap();
        let err = w.verify_err();
        assert_eq!(err.entry.as_deref(), entry, "cut at {cut}: {err}");
        assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
    }
}

/// Rewrites the index file, replacing `from` by `to` in the line of `path`.
fn edit_index(index: &Path, path: &str, from: &str, to: &str) {
    let text = fs::read_to_string(index).unwrap();
    let needle = format!("\"path\":\"{path}\"");
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains(&needle) {
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(edited.join("\n") + "\n", text, "the edit applies");
    fs::write(index, edited.join("\n") + "\n").unwrap();
}

#[test]
fn the_verifier_catches_an_index_that_disagrees() {
    let fx = Fixture::new();
    let pristine = write_to_files(&fx.root, None);
    let original = fs::read(pristine.index()).unwrap();
    let e = entry_of(&pristine.index(), b"home/u/.secrets");
    let sha = e.sha256.unwrap().to_string();
    let edits = [
        ("\"mode\":384", "\"mode\":420", "mode"),
        (
            &sha[..],
            "0000000000000000000000000000000000000000000000000000000000000000",
            "content sha256",
        ),
        ("\"size\":14", "\"size\":15", "size"),
        ("\"mtime\":", "\"mtime\":1", "mtime"),
    ];
    for (from, to, what) in edits {
        fs::write(pristine.index(), &original).unwrap();
        edit_index(&pristine.index(), "home/u/.secrets", from, to);
        let err = pristine.verify_err();
        assert_eq!(
            err.entry.as_deref(),
            Some("home/u/.secrets"),
            "{what}: {err}"
        );
    }
    // A line removed: the archive has an entry the index does not list.
    fs::write(pristine.index(), &original).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"path\":\"home/u/.secrets\""))
        .collect();
    fs::write(pristine.index(), kept.join("\n") + "\n").unwrap();
    let err = pristine.verify_err();
    assert!(err.to_string().contains("home/u/.secrets"), "{err}");
    // The end line cut off.
    let lines: Vec<&str> = text.lines().collect();
    fs::write(pristine.index(), lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let err = pristine.verify_err();
    assert!(
        matches!(
            *err.problem,
            VerifyProblem::Index(IndexError::Truncated { .. })
        ),
        "{err}"
    );
}

/// A hard link's line pointed at another file's data, with that file's size and sha256: the archive links the name
/// to `data/h3`, so the verifier (keeping every file, or only the linked ones read from the index first) says which
/// field differs from what the archive gives. A hard link's line with a sparse record its target's storage does not
/// have is caught the same way (before the merge with h-sparse's verifier, a hard link's record went unchecked).
/// Writes `text` (an index) to `index` with the line of `path` changed by `edit`.
fn forge_line(index: &Path, text: &str, path: &str, edit: impl Fn(&mut serde_json::Value)) {
    let forged: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["path"] == path {
                edit(&mut v);
            }
            v.to_string() + "\n"
        })
        .collect();
    fs::write(index, forged).unwrap();
}

/// Asserts the verifier refused the entry `path` because its `field` differs between the index and the archive.
#[track_caller]
fn assert_field_refused(err: &VerifyError, path: &str, field: &str) {
    assert_eq!(err.entry.as_deref(), Some(path), "{err}");
    assert!(
        matches!(&*err.problem, VerifyProblem::Field { field: f, .. } if *f == field),
        "{err}"
    );
}

#[test]
fn the_verifier_checks_a_hard_link_against_the_file_it_links_to() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let index = w.index();
    let link = entry_of(&index, b"home/u/h2");
    assert_eq!(link.kind, EntryKind::Hardlink);
    assert_eq!(link.link.as_deref(), Some(&b"data/h3"[..]));
    let other = entry_of(&index, b"home/u/.secrets");
    let text = fs::read_to_string(&index).unwrap();
    forge_line(&index, &text, "home/u/h2", |v| {
        v["data_offset"] = other.data_offset.into();
        v["size"] = other.size.into();
        v["sha256"] = other.sha256.unwrap().to_string().into();
    });
    assert_field_refused(
        &verify_files(&w.tar(), &index).unwrap_err(),
        "home/u/h2",
        "data offset",
    );
    let links = HardLinkTargets::read(io::BufReader::new(fs::File::open(&index).unwrap())).unwrap();
    assert_eq!(
        links,
        HardLinkTargets::Named([b"data/h3".to_vec()].into_iter().collect())
    );
    let err = verify_archive_with(
        "data.tar",
        fs::File::open(w.tar()).unwrap(),
        io::BufReader::new(fs::File::open(&index).unwrap()),
        &links,
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.entry.as_deref(), Some("home/u/h2"), "{err}");
    // Without its target among the files kept, a hard link cannot be vouched for.
    let err = verify_archive_with(
        "data.tar",
        fs::File::open(w.tar()).unwrap(),
        io::BufReader::new(fs::File::open(&index).unwrap()),
        &HardLinkTargets::Named(Default::default()),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(&*err.problem, VerifyProblem::LinkTarget { .. }),
        "{err}"
    );
    // A hard link's line saying its content is stored sparse, where the file it links to is stored whole: the
    // index must describe the storage of the very member the link shares (a restore reads it by that record).
    forge_line(&index, &text, "home/u/h2", |v| {
        v["sparse"] = serde_json::json!({
            "stored": 512,
            "stored_sha256": link.sha256.unwrap().to_string(),
        });
    });
    assert_field_refused(
        &verify_files(&w.tar(), &index).unwrap_err(),
        "home/u/h2",
        "storage",
    );
}

#[test]
fn read_back_detects_a_file_changed_on_the_drive() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    let files = [
        w.summary.archive_files.clone(),
        w.summary.index_files.clone(),
    ]
    .concat();
    let methods = read_back(&files).unwrap();
    assert_eq!(methods.len(), 2);
    flip(&w.tar(), 5000);
    let err = read_back(&files).unwrap_err();
    assert!(matches!(err, ReadBackError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("data.tar"), "{err}");
    flip(&w.tar(), 5000);
    read_back(&files).unwrap();
    let f = fs::OpenOptions::new().write(true).open(w.tar()).unwrap();
    f.set_len(w.summary.tar_bytes - 1).unwrap();
    let err = read_back(&files).unwrap_err();
    assert!(matches!(err, ReadBackError::Length { .. }), "{err}");
}

/// `write_archive` of `plan` into the sinks given, with the default options and no progress.
fn write_plain(
    plan: &ArchivePlan,
    archive: Box<dyn Sink>,
    index: Box<dyn Sink>,
) -> Result<ArchiveSummary, writer::ArchiveError> {
    write_archive(
        plan,
        archive,
        index,
        &ArchiveOptions::default(),
        &mut NoProgress,
    )
}

#[test]
fn split_parts_join_into_the_same_archive() {
    let fx = Fixture::new();
    let whole = write_to_files(&fx.root, None);
    let dir = tempfile::tempdir().unwrap();
    let plan = scan(&fx.root, &mut NoProgress).unwrap();
    let part = 700_001; // not a multiple of anything: entries and headers straddle parts
    let archive = Box::new(SplitSink::new(dir.path(), "data.tar", part).unwrap());
    let index = Box::new(FileSink::create(dir.path().join("data.index.jsonl")).unwrap());
    let s = write_plain(&plan, archive, index).unwrap();
    assert_eq!(s.tar_sha256, whole.summary.tar_sha256);
    assert_eq!(
        s.archive_files.len() as u64,
        whole.summary.tar_bytes.div_ceil(part)
    );
    let mut joined = Vec::new();
    for (n, f) in s.archive_files.iter().enumerate() {
        assert_eq!(f.path, dir.path().join(format!("data.tar.part{n:03}")));
        let bytes = fs::read(&f.path).unwrap();
        assert!(bytes.len() as u64 <= part);
        assert_eq!(Digest::of_bytes(&bytes), f.sha256);
        joined.extend(bytes);
    }
    assert_eq!(joined, fs::read(whole.tar()).unwrap());
    read_back(&s.archive_files).unwrap();

    // `cat data.tar.part* > data.tar` and GNU tar agree.
    let cat = Command::new("sh")
        .arg("-c")
        .arg("cat data.tar.part* | tar -tf - | wc -l")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim(),
        s.entries.to_string()
    );

    // The readers work across parts.
    let files = ArchiveFiles::discover(dir.path(), "data.tar").unwrap();
    assert_eq!(files.parts.len(), s.archive_files.len());
    let index = io::BufReader::new(fs::File::open(dir.path().join("data.index.jsonl")).unwrap());
    verify_archive("data.tar", files.open().unwrap(), index, &mut NoProgress).unwrap();
    let e = entry_of(
        &dir.path().join("data.index.jsonl"),
        b"data/projects/important/big.bin",
    );
    let mut got = Vec::new();
    read_entry(&mut files.open().unwrap(), &e, &mut got).unwrap();
    assert_eq!(
        got,
        fs::read(fx.root.join("data/projects/important/big.bin")).unwrap()
    );
}

#[test]
fn sha256sum_accepts_the_verification_file() {
    let fx = Fixture::new();
    let w = write_to_files(&fx.root, None);
    // A name that sha256sum must escape, to check we escape it the same way.
    let odd = w.dir.path().join("odd\\name");
    fs::copy(w.index(), &odd).unwrap();
    let mut lines: Vec<sums::SumLine> = [&w.summary.archive_files[..], &w.summary.index_files[..]]
        .concat()
        .iter()
        .map(|f| sums::SumLine {
            sha256: f.sha256,
            name: f.path.file_name().unwrap().as_bytes().to_vec(),
        })
        .collect();
    lines.push(sums::SumLine {
        sha256: w.summary.index_files[0].sha256,
        name: b"odd\\name".to_vec(),
    });
    let sums_path = w.dir.path().join(sums::SUMS_FILE);
    sums::write_sums(fs::File::create(&sums_path).unwrap(), &lines).unwrap();
    assert_eq!(sums::read_sums(&sums_path).unwrap(), lines);
    let check = || {
        Command::new("sha256sum")
            .args(["-c", "--strict", sums::SUMS_FILE])
            .current_dir(w.dir.path())
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    flip(&w.tar(), 3);
    assert!(
        !check().status.success(),
        "sha256sum notices a flipped byte"
    );
}

/// A stage that flips every bit, standing in for encryption.
struct Invert;

struct InvertWriter(Box<dyn Sink>);

impl Write for InvertWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let inverted: Vec<u8> = buf.iter().map(|b| !b).collect();
        self.0.write_all(&inverted)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl StageWriter for InvertWriter {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Sink>> {
        Ok(self.0)
    }
}

impl Stage for Invert {
    fn wrap(&self, sink: Box<dyn Sink>) -> io::Result<Box<dyn StageWriter>> {
        Ok(Box::new(InvertWriter(sink)))
    }
}

#[test]
fn a_stage_sits_between_tar_and_the_drive() {
    let fx = Fixture::new();
    let plain = write_to_files(&fx.root, None);
    let staged = write_to_files(&fx.root, Some(&Invert));
    let on_drive = fs::read(staged.tar()).unwrap();
    let plain_bytes = fs::read(plain.tar()).unwrap();
    assert_eq!(
        on_drive.iter().map(|b| !b).collect::<Vec<u8>>(),
        plain_bytes
    );
    // The drive hash is of the bytes on the drive; the index describes the tar stream before the stage.
    assert_eq!(
        staged.summary.archive_files[0].sha256,
        Digest::of_bytes(&on_drive)
    );
    assert!(plain.summary.tar_sha256.is_some());
    assert_eq!(
        staged.summary.tar_sha256, None,
        "no plaintext hash beside a stage's output"
    );
    assert_eq!(staged.summary.tar_bytes, plain.summary.tar_bytes);
    assert_eq!(
        staged.summary.index_files[0].sha256,
        Digest::of_bytes(&fs::read(staged.index()).unwrap())
    );
    read_back(&staged.summary.archive_files).unwrap();
}

/// A sink that fails after `limit` bytes, as a full drive does.
struct FullDrive {
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    limit: usize,
}

impl Write for FullDrive {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.written.lock().unwrap();
        if w.len() + buf.len() > self.limit {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        w.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for FullDrive {
    fn finish(self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
        panic!("a failed archive is never finished")
    }
    fn describe(&self) -> String {
        "/media/T9/data.tar".into()
    }
    fn single_file(&self) -> bool {
        true
    }
}

#[test]
fn a_full_drive_fails_the_archive_and_leaves_no_end_marker() {
    let fx = Fixture::new();
    let plan = scan(&fx.root, &mut NoProgress).unwrap();
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let archive = Box::new(FullDrive {
        written: written.clone(),
        limit: 2 << 20,
    });
    let index_dir = tempfile::tempdir().unwrap();
    let index = Box::new(FileSink::create(index_dir.path().join("i")).unwrap());
    let err = write_plain(&plan, archive, index).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/media/T9/data.tar") && msg.contains("No space left"),
        "{msg}"
    );
    let bytes = written.lock().unwrap();
    assert!(bytes.len() < plan.estimate.tar_bytes as usize);
    let index_text = fs::read_to_string(index_dir.path().join("i")).unwrap();
    assert!(
        !index_text.contains("\"type\":\"end\""),
        "no end line on failure"
    );
}

/// Peak resident memory of this process, from /proc.
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const MEMORY_CHILD: &str = "DBACKUP_ARCHIVE_MEMORY_CHILD";

#[test]
fn memory_stays_flat_with_100k_files() {
    // Peak RSS is per process, and other tests run in this one: measure in a fresh process running only this test.
    if std::env::var_os(MEMORY_CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "archive::tests::memory_stays_flat_with_100k_files",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MEMORY_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}");
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("peak RSS"),
            "the child ran the measurement: {text}"
        );
        return;
    }
    let t0 = std::time::Instant::now();
    // On tmpfs when there is one: this measures memory, not the disk (whose opens are slow on a busy machine).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let root = dir.path().join("snap");
    // 100 directories of 999 small files, and one of 100 more: 100,000 files.
    for d in 0..100 {
        let sub = root.join(format!("home/u/d{d:03}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..999 {
            fs::write(sub.join(format!("file-{f:04}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    let last = root.join("home/u/last");
    fs::create_dir_all(&last).unwrap();
    for f in 0..100 {
        fs::write(last.join(format!("f{f}")), b"x").unwrap();
    }
    let before = peak_rss_kib();
    println!("created in {:?}", t0.elapsed());
    let plan = scan(&root, &mut NoProgress).unwrap();
    assert_eq!(plan.estimate.files, 100_000);
    let out = tempfile::tempdir().unwrap();
    let s = write_plan(&plan, out.path(), None, &mut NoProgress);
    assert_eq!(s.files, 100_000);
    let after_write = peak_rss_kib();
    println!("written in {:?}", t0.elapsed());
    // As `restore --verify` does: the hard links' targets first, so that memory does not grow with the files.
    let index_path = out.path().join("data.index.jsonl");
    let links =
        HardLinkTargets::read(io::BufReader::new(fs::File::open(&index_path).unwrap())).unwrap();
    let index = io::BufReader::new(fs::File::open(&index_path).unwrap());
    verify_archive_with(
        "data.tar",
        fs::File::open(out.path().join("data.tar")).unwrap(),
        index,
        &links,
        &mut NoProgress,
    )
    .unwrap();
    let after_verify = peak_rss_kib();
    println!("verified in {:?}", t0.elapsed());
    println!(
        "peak RSS: {before} KiB before, {after_write} KiB after scan+write, {after_verify} KiB after verify"
    );
    assert!(after_verify < 64 * 1024, "peak RSS {after_verify} KiB");
}
