//! `restore --overwrite if-changed` (the default) and a file whose only change is an ACL or an xattr (issue 12): it
//! counts as changed and is rewritten with the backup's attributes, from the drive and from the local snapshot; a
//! file left alone still counts as unchanged.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::Test;

/// The set `docs` (`~/docs`) and the plain-directory drive `<tmp>/T9`.
const CONFIG: &str = r#"{ "backup_root": "{root}",
    "backup_sets": [ { "name": "docs", "sources": ["~/docs"] } ],
    "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#;

fn run(cmd: &str, args: &[&str], p: &Path) -> Result<String, String> {
    let out = Command::new(cmd).args(args).arg(p).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn xattr(p: &Path) -> String {
    run("getfattr", &["-n", "user.tag", "--only-values"], p).unwrap()
}

fn acl(p: &Path) -> String {
    run("getfacl", &["-n", "--omit-header"], p).unwrap()
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// Puts `p`'s mtime back to `m`'s (setfattr and setfacl change only the ctime, but be sure).
fn keep_mtime(p: &Path, m: &fs::Metadata) {
    let t = libc::timespec {
        tv_sec: m.mtime(),
        tv_nsec: m.mtime_nsec(),
    };
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    // SAFETY: a valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
    assert_eq!(rc, 0);
}

/// A home with `docs/a.txt` tagged `user.tag=one` and shared with uid 1001 through an access ACL, collected and
/// written to the drive; `None` (skipped) when the tools or the filesystem's xattrs are missing.
fn setup() -> Option<(Test, PathBuf)> {
    if !testkit::require_tools(
        &["getfacl", "setfacl", "getfattr", "setfattr"],
        "apt-get install acl attr; the CI command installs them",
    ) {
        return None;
    }
    let t = Test::new().config(CONFIG);
    let file = t.write("home/docs/a.txt", "the same content\n");
    if let Err(e) = run("setfattr", &["-n", "user.tag", "-v", "one"], &file)
        .and_then(|_| run("setfacl", &["-m", "u:1001:r--"], &file))
    {
        testkit::skip(&format!(
            "{} holds no xattrs or ACLs ({e})",
            t.dir.path().display()
        ));
        return None;
    }
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    Some((t, file))
}

/// From the drive and from the local snapshot: a restored file whose xattr value changed, then one whose ACL
/// changed (content, size, mode and mtime the same) is rewritten with the backup's (a new inode); restored again
/// with nothing changed it is left alone (same inode). Before: `if-changed` compared content, size, mode, owner and
/// mtime only, so both counted as unchanged and kept the changed attribute.
#[test]
fn a_file_whose_only_change_is_an_acl_or_an_xattr_is_rewritten_by_if_changed() {
    let Some((t, file)) = setup() else {
        return;
    };
    let want = (xattr(&file), acl(&file));
    for source in ["external", "local"] {
        let target = t.path(&format!("into-{source}"));
        let restore = || {
            t.cmd()
                .args(["restore", "--source", source, "--target"])
                .args([&target])
                .status(0)
        };
        restore();
        let got = target.join(file.strip_prefix("/").unwrap());
        assert_eq!(
            (xattr(&got), acl(&got)),
            want,
            "{source}: restored with them"
        );
        let first = ino(&got);
        restore();
        assert_eq!(ino(&got), first, "{source}: nothing changed: left alone");

        let m = fs::metadata(&got).unwrap();
        run("setfattr", &["-n", "user.tag", "-v", "two"], &got).unwrap();
        keep_mtime(&got, &m);
        restore();
        assert_ne!(
            ino(&got),
            first,
            "{source}: only an xattr changed: rewritten"
        );
        assert_eq!(
            (xattr(&got), acl(&got)),
            want,
            "{source}: the backup's xattr again"
        );

        let second = ino(&got);
        let m = fs::metadata(&got).unwrap();
        // Another user added with the same rights, the mask not recalculated: the mode stays as it was.
        run("setfacl", &["-n", "-m", "u:1002:r--"], &got).unwrap();
        keep_mtime(&got, &m);
        assert_eq!(
            fs::metadata(&got).unwrap().mode() & 0o7777,
            m.mode() & 0o7777,
            "{source}: the ACL change keeps the mode (else the test would prove nothing)"
        );
        restore();
        assert_ne!(
            ino(&got),
            second,
            "{source}: only the ACL changed: rewritten"
        );
        assert_eq!(
            (xattr(&got), acl(&got)),
            want,
            "{source}: the backup's ACL again"
        );
    }
}
