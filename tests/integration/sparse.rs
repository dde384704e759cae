//! Sparse files end to end (issue 12): collect keeps holes (rsync `--sparse`), `external` stores sparse members that
//! GNU tar extracts with their holes, restore (from the drive, plain and age, and from local snapshots) recreates
//! the holes, a one-file restore of a sparse file still seeks, `--verify` checks sparse members; and archives made in
//! the test by GNU tar (`--format=gnu|oldgnu`, `--format=posix` with `--sparse-version=0.0|0.1|1.0`) and bsdtar
//! restore through the scan path exactly as GNU tar extracts them, or are refused with a reason when hostile.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use dbackup::Digest;

use crate::fixtures::demo::{break_every_header_but, drive_with_tar, index_name};
use crate::harness::{Output, Test, run_ok};

const MIB: u64 = 1 << 20;

/// Writes a file of `size` bytes holding `chunks` (offset, bytes) and holes everywhere else.
fn holey(path: &Path, size: u64, chunks: &[(u64, &[u8])]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (at, bytes) in chunks {
        f.write_all_at(bytes, *at).unwrap();
    }
    f.sync_all().unwrap();
}

/// Deterministic non-zero bytes.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) | 1)
        .collect()
}

/// Bytes allocated to a file (what `du` counts).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn sha(path: &Path) -> Digest {
    Digest::of_bytes(&fs::read(path).unwrap())
}

/// Whether this filesystem makes holes of what is never written; tests that need holes skip without (`t9::skip`:
/// recorded, and a failure under CI).
fn holes_supported(dir: &Path) -> bool {
    let probe = dir.join(".hole-probe");
    holey(&probe, 8 * MIB, &[(4 * MIB, b"x")]);
    let ok = allocated(&probe) < 4 * MIB;
    fs::remove_file(&probe).unwrap();
    if !ok {
        testkit::skip(&format!(
            "the filesystem of {} allocates holes",
            dir.display()
        ));
    }
    ok
}

/// The 1 GiB VM disk with 3 data extents of the issue's matrix, scaled down: 64 MiB, data at the start, in the middle
/// and at the very end.
fn vm_disk(path: &Path) {
    holey(
        path,
        64 * MIB,
        &[
            (0, &pattern(200_000, 1)),
            (40 * MIB, &pattern(5000, 2)),
            (64 * MIB - 3, b"end"),
        ],
    );
}

/// Asserts `got` has the content of `want` and holes (well under its size allocated).
#[track_caller]
fn assert_sparse_copy(want: &Path, got: &Path) {
    assert_eq!(sha(got), sha(want), "{}", got.display());
    let (a, size) = (allocated(got), fs::metadata(got).unwrap().len());
    assert!(
        a < size / 8,
        "{}: {a} bytes allocated for a {size}-byte file with holes",
        got.display()
    );
}

/// The set `vm` (`~/vm`) and the plain-directory drive `<tmp>/T9`, with `extra` top-level keys.
fn config_with(extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "vm", "sources": ["~/vm"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false }} ]
             {extra} }}"#
    )
}

/// The snapshot's copy of `abs` (the newest snapshot of the set `vm`).
fn in_snapshot(t: &Test, abs: &Path) -> PathBuf {
    let snap = t.root().join("vm-latest");
    snap.join(abs.strip_prefix("/").unwrap())
}

/// Before: rsync ran without `--sparse`, and the snapshot's copy of a 64 MiB file with 200 KiB of data took 64 MiB.
#[test]
fn collect_keeps_a_sparse_file_sparse_in_the_snapshot() {
    let t = Test::new();
    if !holes_supported(t.dir.path()) {
        return;
    }
    let t = t.config(&config_with(""));
    let disk = t.home().join("vm/disk.img");
    vm_disk(&disk);
    t.cmd().args(["collect"]).status(0);
    assert_sparse_copy(&disk, &in_snapshot(&t, &disk));
}

/// A collected home with the VM disk and a small file, written to the plain-directory drive `<tmp>/T9` by
/// `external` (encrypted to a new key when `age`), with a restore command ready for it.
struct RoundTrip {
    t: Test,
    disk: PathBuf,
    key: Option<PathBuf>,
}

impl RoundTrip {
    fn new(age: bool) -> Option<RoundTrip> {
        let t = Test::new();
        if !holes_supported(t.dir.path()) {
            return None;
        }
        let key = age.then(|| t.keygen("key.txt"));
        let extra = match &key {
            Some((_, recipient)) => {
                format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#)
            }
            None => String::new(),
        };
        let t = t.config(&config_with(&extra));
        let disk = t.home().join("vm/disk.img");
        vm_disk(&disk);
        // A second name, first in the archive's order: `disk.img` is archived as a hard link to it, so restoring
        // `disk.img` alone makes a sparse copy of `a-link.img`'s content.
        fs::hard_link(&disk, t.home().join("vm/a-link.img")).unwrap();
        t.write("home/vm/notes.txt", "notes\n");
        fs::create_dir_all(t.path("T9")).unwrap();
        t.cmd().args(["collect"]).status(0);
        t.cmd().args(["external"]).status(0);
        Some(RoundTrip {
            t,
            disk,
            key: key.map(|k| k.0),
        })
    }

    fn restore(&self, args: &[&str], code: i32) -> Output {
        let mut cmd = self.t.cmd().args(["restore"]).args(args);
        if let Some(k) = &self.key {
            cmd = cmd.args(["--identity"]).args([k]);
        }
        cmd.status(code)
    }

    /// Restores the disk image alone from the drive's backup into `target` (with `extra` arguments), expecting `code`.
    fn restore_disk(&self, target: &Path, extra: &[&str], code: i32) -> Output {
        let path = ["--path", self.disk.to_str().unwrap()];
        let target = ["--target", target.to_str().unwrap()];
        let args = [&["--source", "external"][..], &path, &target, extra].concat();
        self.restore(&args, code)
    }

    /// The one backup on the drive.
    fn backup_dir(&self) -> PathBuf {
        let backups = self.t.path("T9/backups");
        let mut dirs: Vec<PathBuf> = fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.symlink_metadata().unwrap().is_dir())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }

    fn restored(&self, target: &Path) -> PathBuf {
        target.join(self.disk.strip_prefix("/").unwrap())
    }
}

fn round_trip(age: bool) {
    let Some(rt) = RoundTrip::new(age) else {
        return;
    };
    let t = &rt.t;
    // The drive holds the data, not the size.
    let dir = rt.backup_dir();
    let archive: u64 = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(archive < 4 * MIB, "{archive} bytes on the drive");
    // One file, through the index; then the whole set; then from the local snapshot.
    let one = t.path("one");
    rt.restore_disk(&one, &[], 0);
    assert_sparse_copy(&rt.disk, &rt.restored(&one));
    let whole = t.path("whole");
    rt.restore(
        &["--source", "external", "--target", whole.to_str().unwrap()],
        0,
    );
    assert_sparse_copy(&rt.disk, &rt.restored(&whole));
    let link = rt.restored(&whole).with_file_name("a-link.img");
    assert_eq!(
        fs::metadata(&link).unwrap().ino(),
        fs::metadata(rt.restored(&whole)).unwrap().ino(),
        "the two names are one file again"
    );
    let local = t.path("local");
    rt.restore(
        &["--source", "local", "--target", local.to_str().unwrap()],
        0,
    );
    assert_sparse_copy(&rt.disk, &rt.restored(&local));
    // The full verification reads the sparse member against both its hashes.
    let out = rt.restore(&["--source", "external", "--verify"], 0);
    assert!(out.stdout.contains("vm"), "{}", out.stdout);
}

/// One file (a hard link whose first name is not restored: a copy of the sparse content), the whole set and the
/// local snapshot all come back with their holes. Before: the archive held the whole 64 MiB and every restore wrote
/// 64 MiB of zeros.
#[test]
fn a_sparse_file_keeps_its_holes_through_collect_external_and_restore() {
    round_trip(false);
}

/// The same through an age-encrypted backup.
#[test]
fn a_sparse_file_keeps_its_holes_through_an_encrypted_backup() {
    round_trip(true);
}

/// GNU tar extracts the drive's archive with the holes (`tar -xf` on the PAX 1.0 members dbackup writes). Before: the
/// member was a plain file, and GNU tar wrote all 64 MiB.
#[test]
fn gnu_tar_extracts_the_drives_archive_with_its_holes() {
    let Some(rt) = RoundTrip::new(false) else {
        return;
    };
    let into = rt.t.path("gnu");
    fs::create_dir(&into).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(rt.backup_dir().join("vm.tar"))
            .arg("-C")
            .arg(&into),
    );
    assert_sparse_copy(&rt.disk, &rt.restored(&into));
}

/// A one-file restore reaches the sparse member through the index (every header broken but the file's own and its
/// first name's, whose header vouches for the content the hard link shares), and a flipped byte in its data fails
/// `--verify` naming it and fails its restore, writing nothing. Before: the file was stored whole (a 64 MiB read
/// for 200 KiB of data) and restored with every block allocated.
#[test]
fn a_one_file_restore_of_a_sparse_file_seeks_and_damage_is_caught() {
    let Some(rt) = RoundTrip::new(false) else {
        return;
    };
    let t = &rt.t;
    let dir = rt.backup_dir();
    let name = index_name(&rt.disk);
    let pristine = fs::read(dir.join("vm.tar")).unwrap();
    let first = index_name(&rt.disk.with_file_name("a-link.img"));
    break_every_header_but(&dir, "vm", &[&name, &first]);
    // The sums no longer match: name the backup by its stamp, as for any backup being rescued.
    let stamp = dir.file_name().unwrap().to_str().unwrap().to_string();
    let drive = t.path("T9");
    let one = t.path("one");
    let args = |target: &Path| {
        vec![
            "--drive".to_string(),
            drive.to_str().unwrap().to_string(),
            "--date".into(),
            stamp.clone(),
            "--path".into(),
            rt.disk.to_str().unwrap().to_string(),
            "--target".into(),
            target.to_str().unwrap().to_string(),
        ]
    };
    let a = args(&one);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    rt.restore(&a, 0);
    assert_sparse_copy(&rt.disk, &rt.restored(&one));

    // A flipped data byte of the sparse member.
    let entry = {
        let text = fs::read_to_string(dir.join("vm.index.jsonl")).unwrap();
        let r = dbackup::IndexReader::new(text.as_bytes()).unwrap();
        r.find(&name).unwrap().unwrap()
    };
    let record = entry.sparse.expect("stored as a sparse member");
    let mut bytes = pristine.clone();
    let at = (entry.data_offset + record.stored - 2) as usize;
    bytes[at] ^= 0x40;
    fs::write(dir.join("vm.tar"), &bytes).unwrap();
    // The member is `a-link.img`'s (the first name); `disk.img` shares it.
    let out = rt.restore(&["--source", "external", "--verify"], 1);
    assert!(out.stderr.contains("a-link.img"), "{}", out.stderr);
    let two = t.path("two");
    let a = args(&two);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = rt.restore(&a, 1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("disk.img") && said.contains("damaged"),
        "{said}"
    );
    assert!(!rt.restored(&two).exists(), "nothing written for it");
}

// ---------------------------------------------------------------------------------------------------------------
// Archives made by GNU tar and bsdtar, read by scanning (no index)

/// A drive `<tmp>/<name>` with one backup `2025-04-01-031500` holding the set `gnu` as `tar` (no index), with sums.
fn drive_with(t: &Test, name: &str, tar: &[u8]) -> PathBuf {
    drive_with_tar(t, name, "gnu", tar, 0, 0)
}

/// Restores everything of the drive's backup into `target`.
fn restore_drive(t: &Test, drive: &Path, target: &Path, code: i32) -> Output {
    t.restore_from_drive()
        .args(["--drive"])
        .args([drive])
        .args(["--date", "2025-04-01", "--target"])
        .args([target])
        .status(code)
}

/// The files of the source tree GNU tar archives: a file with 30 data extents (old GNU needs extension headers for
/// more than 4), one with 2 and a hole at the end, one ending in data, and an ordinary file after them (whose bytes
/// the old reader handed over as a sparse file's content).
const FILES: [&str; 4] = ["many.img", "two.img", "ends-in-data.img", "z-after.txt"];

/// A world holding the source tree GNU tar archives at `<tmp>/src`; `None` (the test skips) where the filesystem
/// allocates holes.
fn world_with_gnu_source() -> Option<(Test, PathBuf)> {
    let t = Test::new();
    if !holes_supported(t.dir.path()) {
        return None;
    }
    let src = t.path("src");
    gnu_source(&src);
    Some((t, src))
}

/// GNU tar's archive `tar` of `files` in `src`, sparse files stored as such (`--sparse`), in the format `args` name.
fn gnu_sparse_tar(tar: &Path, args: &[&str], src: &Path, files: &[&str]) {
    run_ok(
        Command::new("tar")
            .arg("--sparse")
            .args(args)
            .arg("-cf")
            .arg(tar)
            .arg("-C")
            .arg(src)
            .args(files),
    );
}

fn gnu_source(dir: &Path) {
    let many: Vec<(u64, Vec<u8>)> = (0..30)
        .map(|i| (i * 2 * MIB + 4096 * i, pattern(3000 + i as usize, i as u8)))
        .collect();
    let chunks: Vec<(u64, &[u8])> = many.iter().map(|(o, b)| (*o, b.as_slice())).collect();
    holey(&dir.join("many.img"), 62 * MIB, &chunks);
    holey(
        &dir.join("two.img"),
        9 * MIB,
        &[(MIB, &pattern(10_000, 7)), (5 * MIB, &pattern(512, 8))],
    );
    holey(
        &dir.join("ends-in-data.img"),
        3 * MIB + 17,
        &[(3 * MIB, &pattern(17, 9))],
    );
    fs::write(
        dir.join("z-after.txt"),
        "the member after the sparse ones\n",
    )
    .unwrap();
}

/// Compares a restore with GNU tar's own extraction of the same archive: the same files, contents and holes.
#[track_caller]
fn assert_as_gnu_tar_extracts(what: &str, ours: &Path, gnu: &Path) {
    for f in FILES {
        let (a, b) = (gnu.join(f), ours.join(f));
        assert_eq!(sha(&b), sha(&a), "{what}: {f}");
        assert_eq!(
            fs::metadata(&b).unwrap().len(),
            fs::metadata(&a).unwrap().len(),
            "{what}: {f}"
        );
        // The same holes: no more allocated than GNU tar's extraction (one filesystem block of slack per extent).
        assert!(
            allocated(&b) <= allocated(&a) + 31 * 4096,
            "{what}: {f}: {} allocated, GNU tar {}",
            allocated(&b),
            allocated(&a)
        );
    }
    assert!(allocated(&ours.join("many.img")) < 2 * MIB, "{what}: holes");
}

/// Each GNU sparse format GNU tar writes, made in the test and restored through the scan path; compared with GNU
/// tar's extraction. Before: old GNU (`gnu`, `oldgnu`) restored the stored chunks followed by the next member's
/// bytes (exit 0, and `--verify` said intact); PAX 0.0, 0.1 and 1.0 were refused.
#[test]
fn archives_gnu_tar_writes_with_sparse_restore_as_gnu_tar_extracts_them() {
    let Some((t, src)) = world_with_gnu_source() else {
        return;
    };
    let formats: [(&str, &[&str]); 5] = [
        ("gnu", &["--format=gnu"]),
        ("oldgnu", &["--format=oldgnu"]),
        ("posix-0.0", &["--format=posix", "--sparse-version=0.0"]),
        ("posix-0.1", &["--format=posix", "--sparse-version=0.1"]),
        ("posix-1.0", &["--format=posix", "--sparse-version=1.0"]),
    ];
    for (label, args) in formats {
        let tar = t.path(&format!("{label}.tar"));
        gnu_sparse_tar(&tar, args, &src, &FILES);
        check_archive(&t, label, &tar);
    }
}

/// Restores `tar` through the scan path and compares with GNU tar's extraction; `--verify` accepts it.
fn check_archive(t: &Test, label: &str, tar: &Path) {
    let gnu = t.path(&format!("{label}-gnu"));
    fs::create_dir(&gnu).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(&gnu));
    let drive = drive_with(t, &format!("{label}-drive"), &fs::read(tar).unwrap());
    let ours = t.path(&format!("{label}-ours"));
    restore_drive(t, &drive, &ours, 0);
    assert_as_gnu_tar_extracts(label, &ours, &gnu);
    t.restore_from_drive()
        .args(["--drive"])
        .args([&drive])
        .args(["--date", "2025-04-01", "--verify"])
        .status(0);
}

/// A hard link to a sparse file, restored without its first name from an archive GNU tar wrote (old GNU and PAX 1.0,
/// read by scanning), is a copy of the sparse content with its holes. Before (main with the new tar reader): the
/// sparse member was refused, so the copy was too.
#[test]
fn a_hard_link_to_a_sparse_file_restored_alone_keeps_its_holes() {
    let Some((t, src)) = world_with_gnu_source() else {
        return;
    };
    fs::hard_link(src.join("many.img"), src.join("zz-link.img")).unwrap();
    for (label, args) in [
        ("gnu", &["--format=gnu"][..]),
        ("posix-1.0", &["--format=posix", "--sparse-version=1.0"][..]),
    ] {
        let tar = t.path(&format!("{label}-link.tar"));
        gnu_sparse_tar(&tar, args, &src, &["many.img", "zz-link.img"]);
        let drive = drive_with(&t, &format!("{label}-link-drive"), &fs::read(&tar).unwrap());
        let target = t.path(&format!("{label}-link-target"));
        t.restore_from_drive()
            .args(["--drive"])
            .args([&drive])
            .args(["--date", "2025-04-01", "--path", "/zz-link.img", "--target"])
            .args([&target])
            .status(0);
        let got = target.join("zz-link.img");
        assert_eq!(sha(&got), sha(&src.join("many.img")), "{label}");
        assert_eq!(fs::metadata(&got).unwrap().len(), 62 * MIB, "{label}");
        assert!(
            allocated(&got) < 2 * MIB,
            "{label}: {} allocated",
            allocated(&got)
        );
        assert!(!target.join("many.img").exists(), "{label}: only the link");
    }
}

/// bsdtar's sparse members (PAX 1.0, `GNUSparseFile.0`) restore as GNU tar extracts them. Before: refused as an
/// unknown entry type, so nothing was restored.
#[test]
fn archives_bsdtar_writes_with_sparse_restore_as_gnu_tar_extracts_them() {
    let Some((t, src)) = world_with_gnu_source() else {
        return;
    };
    if Command::new("bsdtar").arg("--version").output().is_err() {
        return testkit::skip("bsdtar is not installed (apt-get install libarchive-tools)");
    }
    let tar = t.path("bsd.tar");
    run_ok(
        Command::new("bsdtar")
            .args(["--format=pax", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(FILES),
    );
    let text = String::from_utf8_lossy(&fs::read(&tar).unwrap()).into_owned();
    assert!(
        text.contains("GNU.sparse.major=1"),
        "bsdtar wrote sparse members"
    );
    check_archive(&t, "bsdtar", &tar);
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile sparse members

/// One pax record.
fn record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// A ustar header block.
fn header(name: &str, typ: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::new(typ));
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn padded(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// A PAX sparse member: its records, its fake name and its stored bytes.
fn pax_sparse(records: &[(&str, &str)], name: &str, stored: &[u8]) -> Vec<u8> {
    let recs: Vec<u8> = records.iter().flat_map(|(k, v)| record(k, v)).collect();
    let mut out = header("PaxHeaders/x", b'x', recs.len() as u64);
    out.extend(padded(recs));
    out.extend(header(name, b'0', stored.len() as u64));
    out.extend(padded(stored.to_vec()));
    out
}

/// Restores the archive `tar`; it must exit 1 saying why, and write nothing.
#[track_caller]
fn assert_refused(t: &Test, label: &str, tar: Vec<u8>, why: &str) {
    let mut tar = tar;
    tar.extend(header("ok.txt", b'0', 3));
    tar.extend(padded(b"ok\n".to_vec()));
    tar.extend([0u8; 1024]);
    let drive = drive_with(t, label, &tar);
    let target = t.path(&format!("{label}-target"));
    let out = restore_drive(t, &drive, &target, 1);
    assert!(out.stderr.contains(why), "{label}: {}", out.stderr);
    assert!(!target.exists(), "{label}: nothing written");
}

/// Sparse members dbackup cannot trust are refused with a reason and nothing is written; never are wrong bytes
/// written from a map it does not trust. Before: every PAX sparse member was refused as an unknown type, good or bad.
#[test]
fn hostile_sparse_members_are_refused_and_nothing_is_written() {
    let t = Test::new();
    let v1 = [
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "disk.img"),
        ("GNU.sparse.realsize", "100000"),
    ];
    // The map names 4 KiB of data, the member stores 100 bytes after it.
    let mut short = padded(b"2\n0\n4096\n100000\n0\n".to_vec());
    short.extend([7u8; 100]);
    // Segments out of order.
    let mut order = padded(b"2\n5000\n10\n100\n10\n".to_vec());
    order.extend([7u8; 20]);
    // A map past the file's end, in PAX 0.1.
    let v01 = [
        ("GNU.sparse.size", "100"),
        ("GNU.sparse.name", "disk.img"),
        ("GNU.sparse.map", "50,100"),
    ];
    // A format GNU tar does not write.
    let v2 = [
        ("GNU.sparse.major", "2"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.realsize", "100"),
    ];
    let member = |records: &[(&str, &str)], stored: &[u8]| {
        pax_sparse(records, "GNUSparseFile.0/disk.img", stored)
    };
    let damaged = "sparse file with a damaged map";
    for (label, tar, why) in [
        ("short", member(&v1, &short), damaged),
        ("order", member(&v1, &order), damaged),
        ("past-end", member(&v01, &[7u8; 100]), damaged),
        (
            "v2",
            pax_sparse(&v2, "disk.img", b"x"),
            "unknown GNU sparse version",
        ),
    ] {
        assert_refused(&t, label, tar, why);
    }
}

/// The index's sha256 of a sparse member is its stored digest (map and data; the holes are neither read nor hashed),
/// and every consumer agrees: `restore --source local --verify` compares the snapshot's copy with the drive's index
/// that way, and a second restore from the drive with `--compare content` finds the restored sparse file unchanged
/// (not rewritten: same inode), while one changed data byte (same size, mode and mtime) makes it changed. Before:
/// the digest was the logical content's (64 MiB of holes hashed as zeros by external, its read-back, `--verify` and
/// `--compare content`).
#[test]
fn the_stored_digest_of_a_sparse_file_is_what_verify_and_compare_content_use() {
    let Some(rt) = RoundTrip::new(false) else {
        return;
    };
    let t = &rt.t;
    rt.restore(&["--source", "local", "--verify"], 0);
    let whole = t.path("whole");
    let target = |rt: &RoundTrip| rt.restore_disk(&whole, &["--compare", "content"], 0);
    target(&rt);
    let got = rt.restored(&whole);
    assert_sparse_copy(&rt.disk, &got);
    let ino = fs::metadata(&got).unwrap().ino();
    target(&rt);
    assert_eq!(
        fs::metadata(&got).unwrap().ino(),
        ino,
        "unchanged: not rewritten"
    );
    // One data byte changed, the mtime put back: only the content tells.
    let before = fs::metadata(&got).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&got).unwrap();
    f.write_all_at(b"X", 10).unwrap();
    drop(f);
    let mtime = filetime_of(&before);
    set_mtime(&got, mtime);
    target(&rt);
    assert_ne!(fs::metadata(&got).unwrap().ino(), ino, "changed: rewritten");
    assert_sparse_copy(&rt.disk, &got);
}

/// A file's mtime (seconds, nanoseconds).
fn filetime_of(m: &fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

fn set_mtime(p: &Path, (sec, nsec): (i64, i64)) {
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    // SAFETY: a valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

/// `getfattr -d -m -` and `getfacl -n` of one file, without the `# file:` line (the paths differ).
fn attrs_of(p: &Path) -> (String, String) {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).arg(p).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("# file:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    (
        run("getfattr", &["-d", "-m", "-", "--absolute-names"]),
        run("getfacl", &["-n", "--absolute-names"]),
    )
}

/// Every `stat` field collect must keep, the holes aside.
fn stat_of(p: &Path) -> (u32, u32, u32, i64, i64, u64) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec(),
        m.len(),
    )
}

/// The VM disk with an owner, a mode, an xattr, an ACL and a nanosecond mtime; `None` when the tools or holes are
/// missing (skipped: recorded, and a failure under CI).
fn dressed_disk(t: &Test) -> Option<PathBuf> {
    if !holes_supported(t.dir.path())
        || !testkit::require_tools(
            &["getfacl", "setfacl", "getfattr", "setfattr", "rsync"],
            "apt-get install acl attr rsync; the CI command installs them",
        )
    {
        return None;
    }
    let disk = t.home().join("vm/disk.img");
    vm_disk(&disk);
    fs::set_permissions(&disk, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(&disk, Some(1234), Some(5678)).unwrap();
    }
    for (cmd, args) in [
        ("setfattr", vec!["-n", "user.origin", "-v", "vm-host"]),
        ("setfacl", vec!["-m", "u:1001:r--"]),
    ] {
        let out = Command::new(cmd).args(&args).arg(&disk).output().unwrap();
        if !out.status.success() {
            testkit::skip(&format!(
                "{cmd} failed on {} ({}): the filesystem holds no xattrs or ACLs",
                disk.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
    }
    set_mtime(&disk, (1_700_000_000, 123_456_789));
    Some(disk)
}

/// collect copies a sparse file before rsync (`-v` says so; only its data read), and the snapshot's copy is the one
/// rsync alone makes: the same content, owner, mode, mtime to the nanosecond, xattrs and ACLs (compared with
/// `rsync -aHAX --sparse --numeric-ids` of the same file in the same test), and holes (no more allocated than
/// rsync's copy). Before: rsync read the whole file, holes included (a 10 GiB read for 100 MiB of data).
#[test]
fn collect_copies_a_sparse_file_first_exactly_as_rsync_makes_it() {
    let t = Test::new().config(&config_with(""));
    let Some(disk) = dressed_disk(&t) else {
        return;
    };
    let plan = t.cmd().args(["--dry-run", "collect"]).status(0);
    plan.stdout_has("sparse    1 sparse file of 64.0 MiB copied first");
    let out = t.cmd().args(["-v", "collect"]).status(0);
    out.stderr_has("copying 1 sparse file (their data only) before rsync");
    // rsync found it up to date: it transferred nothing.
    out.stderr_has("checked 1 file, nothing to copy");
    let ours = in_snapshot(&t, &disk);
    let theirs = t.path("rsync-copy");
    fs::create_dir_all(&theirs).unwrap();
    let status = Command::new("rsync")
        .args(["-aHAX", "--sparse", "--numeric-ids"])
        .arg(&disk)
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = theirs.join("disk.img");
    assert_eq!(stat_of(&ours), stat_of(&theirs), "mode, owner, mtime, size");
    assert_eq!(attrs_of(&ours), attrs_of(&theirs), "xattrs and ACLs");
    assert_eq!(sha(&ours), sha(&theirs));
    assert!(
        allocated(&ours) <= allocated(&theirs) + 64 * 1024,
        "holes: ours {} allocated, rsync's {}",
        allocated(&ours),
        allocated(&theirs)
    );
    assert_sparse_copy(&disk, &ours);
}

/// Between two collects: an unchanged sparse file is left to rsync, which hard-links it to the first snapshot; a
/// changed one is copied anew (the first snapshot keeps its old content); one that stopped being sparse (every
/// byte written) is copied by rsync whole. Before: rsync read each of them whole every time.
#[test]
fn a_sparse_file_changed_or_no_longer_sparse_between_two_collects() {
    let t = Test::new().config(&config_with(""));
    if !holes_supported(t.dir.path()) {
        return;
    }
    let kept = t.home().join("vm/kept.img");
    let changed = t.home().join("vm/changed.img");
    let filled = t.home().join("vm/filled.img");
    for p in [&kept, &changed, &filled] {
        vm_disk(p);
    }
    t.cmd().args(["collect"]).status(0);
    let first = fs::read_link(t.root().join("vm-latest")).unwrap();
    let first = t.root().join(first);
    let old_changed = sha(&changed);
    // The next snapshot's name is a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::OpenOptions::new()
        .write(true)
        .open(&changed)
        .unwrap()
        .write_all_at(&pattern(4096, 9), 30 * MIB)
        .unwrap();
    fs::write(&filled, pattern(16 * MIB as usize, 3)).unwrap();
    let plan = t.cmd().args(["--dry-run", "--json", "collect"]).status(0);
    let v: serde_json::Value = plan.json();
    let planned: Vec<String> = v["sets"][0]["pre_copy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        planned,
        [changed.to_str().unwrap()],
        "only the changed sparse file"
    );
    t.cmd().args(["collect"]).status(0);
    let in_first = |p: &Path| first.join(p.strip_prefix("/").unwrap());
    assert_eq!(
        fs::metadata(in_snapshot(&t, &kept)).unwrap().ino(),
        fs::metadata(in_first(&kept)).unwrap().ino(),
        "unchanged: hard-linked to the first snapshot"
    );
    assert_sparse_copy(&changed, &in_snapshot(&t, &changed));
    assert_eq!(
        sha(&in_first(&changed)),
        old_changed,
        "the first snapshot keeps its content"
    );
    assert_eq!(sha(&in_snapshot(&t, &filled)), sha(&filled));
    assert_eq!(
        fs::metadata(in_snapshot(&t, &changed))
            .unwrap()
            .mtime_nsec(),
        fs::metadata(&changed).unwrap().mtime_nsec()
    );
}
