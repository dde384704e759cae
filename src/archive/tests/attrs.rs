//! Extended attributes and ACLs through the archive engine: stored as GNU tar stores them, read back by GNU tar and
//! by the verifier, never mistaken for other records whatever their values hold.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::run_ok;
use crate::archive::*;

/// `getfattr -d -m - -e hex` of every path below `root` (sorted, names relative): what GNU tools see.
pub(crate) fn getfattr_dump(root: &Path) -> String {
    let mut paths: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    paths.sort();
    let out = run_ok(
        Command::new("getfattr")
            .args(["--absolute-names", "-h", "-d", "-m", "-", "-e", "hex"])
            .args(&paths),
        "getfattr runs (the attr package)",
    );
    String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", root.display()), "")
}

fn setfacl(args: &[&str], path: &Path) {
    run_ok(
        Command::new("setfacl").args(args).arg(path),
        "setfacl runs (the acl package)",
    );
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// A tree whose attributes try everything: values with newlines that spell pax records, ACLs (text with
/// newlines), and, as root, `trusted.*` and `security.capability`.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("shared/sub")).unwrap();
    fs::write(root.join("shared/plain"), b"no attributes").unwrap();
    fs::write(root.join("shared/f"), b"hello").unwrap();
    fs::write(root.join("g"), b"world").unwrap();
    setxattr(
        &root.join("shared/f"),
        "user.note",
        b"one\n13 path=evil\n12 size=99\nx",
    );
    setxattr(
        &root.join("shared/f"),
        "user.bin",
        &[0, 0xff, b'\n', b'=', 0],
    );
    setxattr(&root.join("shared/f"), "user.a=b%c", b"odd name");
    setxattr(&root.join("shared"), "user.dir", b"on a directory");
    setfacl(&["-m", "u:1000:rwx,g:100:r-x"], &root.join("shared/f"));
    setfacl(
        &["-m", "u:1001:r-x", "-d", "-m", "u:1000:rwx"],
        &root.join("shared"),
    );
    // With a newline in its name and an ACL: the name's record is broken for the tar crate too.
    let odd = root.join("shared/new\nline");
    fs::write(&odd, b"odd").unwrap();
    setfacl(&["-m", "g:100:rw-"], &odd);
    if rustix::process::geteuid().is_root() {
        setxattr(&root.join("g"), "trusted.t", &[1, 2, 3]);
        // cap_net_raw+ep, as `setcap` writes it.
        let cap = data_encoding::HEXLOWER
            .decode(b"0100000200200000000000000000000000000000")
            .unwrap();
        setxattr(&root.join("g"), "security.capability", &cap);
    }
    dir
}

fn write(root: &Path) -> (tempfile::TempDir, ArchiveSummary, ArchivePlan) {
    let w = super::write_to_files(root, None);
    (w.dir, w.summary, w.plan)
}

fn index_entries(index: &Path) -> Vec<IndexEntry> {
    IndexReader::new(io::BufReader::new(fs::File::open(index).unwrap()))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

use std::io;

/// Before: the archive held no attributes at all, and GNU tar restored none.
#[test]
fn gnu_tar_restores_the_attributes_and_acls_of_an_archive() {
    let src = tree();
    let (dir, summary, plan) = write(src.path());
    assert_eq!(summary.warning_count, 0, "{:?}", summary.warnings);
    assert_eq!(
        plan.estimate.tar_bytes, summary.tar_bytes,
        "the scan counts the attribute records"
    );
    let out = tempfile::tempdir().unwrap();
    let tar = dir.path().join("data.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "--numeric-owner",
                "-xpf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(out.path()),
        "tar runs",
    );
    let want = getfattr_dump(src.path());
    assert!(want.contains("system.posix_acl_default"), "{want}");
    assert_eq!(getfattr_dump(out.path()), want);
}

/// The `tar` crate (which the verifier and restore use for the ustar fields) is not fooled by values that spell
/// records, and the verifier parses the real records. Before: no records, so nothing to check.
#[test]
fn the_verifier_reads_every_record_whatever_the_values_hold() {
    let src = tree();
    let (dir, summary, _) = write(src.path());
    let entries = index_entries(&dir.path().join("data.index.jsonl"));
    let f = entries.iter().find(|e| e.path == b"shared/f").unwrap();
    let a = f.attrs.as_deref().expect("recorded in the index");
    assert_eq!(
        a.xattrs.get(&b"user.note"[..]).map(Vec::as_slice),
        Some(&b"one\n13 path=evil\n12 size=99\nx"[..])
    );
    assert_eq!(
        a.acl_access.as_deref(),
        Some("user::rw-\nuser:1000:rwx\ngroup::r--\ngroup:100:r-x\nmask::rwx\nother::r--")
    );
    let shared = entries.iter().find(|e| e.path == b"shared").unwrap();
    let a = shared.attrs.as_deref().unwrap();
    assert_eq!(
        a.acl_default.as_deref(),
        Some("user::rwx\nuser:1000:rwx\ngroup::r-x\nmask::rwx\nother::r-x")
    );
    assert!(
        entries
            .iter()
            .find(|e| e.path == b"shared/plain")
            .unwrap()
            .attrs
            .is_none()
    );

    let mut ar = tar::Archive::new(fs::File::open(dir.path().join("data.tar")).unwrap());
    let names: Vec<Vec<u8>> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert_eq!(names.len() as u64, summary.entries, "{names:?}");
    assert!(!names.iter().any(|n| n.as_slice() == b"evil"), "{names:?}");

    let report = verify_archive(
        "data.tar",
        fs::File::open(dir.path().join("data.tar")).unwrap(),
        io::BufReader::new(fs::File::open(dir.path().join("data.index.jsonl")).unwrap()),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(report.entries, summary.entries);
}

/// An index whose attributes disagree with the archive's records fails verification, naming the entry.
#[test]
fn the_verifier_catches_attributes_that_disagree() {
    let src = tree();
    let (dir, _, _) = write(src.path());
    let index = dir.path().join("data.index.jsonl");
    let text = fs::read_to_string(&index).unwrap();
    let changed = text.replace("user:1000:rwx\\ngroup::r--", "user:1000:r--\\ngroup::r--");
    assert_ne!(text, changed);
    fs::write(&index, changed).unwrap();
    let err = verify_archive(
        "data.tar",
        fs::File::open(dir.path().join("data.tar")).unwrap(),
        io::BufReader::new(fs::File::open(&index).unwrap()),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.entry.as_deref(), Some("shared/f"), "{err}");
    assert!(err.to_string().contains("access ACL differs"), "{err}");
}
