//! Applying an entry's extended attributes and ACLs to what the restore wrote, and counting what could not be:
//! `trusted.*`, `security.*` and other `system.*` names only when privileged (root), `user.*` and the ACLs as the
//! owner; a filesystem that cannot hold them (exFAT, FAT, a full xattr block) is counted, and the restore gives one
//! warning with the count ([`AttrTally::warnings`]), never silence and never one line per file.
//!
//! Order matters, and the applier keeps it: content, owner (`chown` clears file capabilities), mode, then these
//! (setting an access ACL sets the mode's group bits to its mask, which the ACL read from the same file agrees with),
//! then the mtime. A new file that inherited an ACL from a directory's default ACL, while the backup has none for
//! it, has that ACL removed: the restore gives back what was backed up.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::fs::XattrFlags;
use rustix::io::Errno;
use serde::Serialize;

use crate::archive::acl;
use crate::archive::xattrs::{ACL_ACCESS, ACL_DEFAULT, Attrs};

/// What happened to the attributes of a restore's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttrTally {
    /// Attributes (each xattr, each ACL) set.
    pub restored: u64,
    /// Not set: the filesystem cannot hold them (not supported there, or no room).
    pub not_held: u64,
    /// Not set: `trusted.*`, `security.*` and `system.*` names need root.
    pub need_root: u64,
    /// Not set for another reason (the first is in `first_problem`).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_problem: Option<String>,
}

impl AttrTally {
    /// Counts `other` in too (another path of the same restore into the same target).
    pub fn add(&mut self, other: &AttrTally) {
        self.restored += other.restored;
        self.not_held += other.not_held;
        self.need_root += other.need_root;
        self.failed += other.failed;
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
    }

    /// One warning per kind of shortfall, with its count (empty when every attribute was restored).
    pub fn warnings(&self, target: &str) -> Vec<String> {
        let n = |k: u64| {
            if k == 1 {
                "1 extended attribute or ACL was".to_string()
            } else {
                format!("{k} extended attributes or ACLs were")
            }
        };
        let mut out = Vec::new();
        if self.not_held > 0 {
            out.push(format!(
                "{} not restored: the filesystem of {target} cannot hold them (restore onto ext4, xfs or btrfs to \
                 keep them)",
                n(self.not_held)
            ));
        }
        if self.need_root > 0 {
            out.push(format!(
                "{} not restored: trusted.*, security.* and system.* attributes (file capabilities, SELinux labels) \
                 can only be set by root",
                n(self.need_root)
            ));
        }
        if self.failed > 0 {
            out.push(format!(
                "{} not restored: {}",
                n(self.failed),
                self.first_problem.as_deref().unwrap_or("failed")
            ));
        }
        out
    }

    fn problem(&mut self, what: String) {
        self.failed += 1;
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    fn outcome(&mut self, name: &str, result: Result<(), Errno>) {
        match result {
            Ok(()) => self.restored += 1,
            // Not supported by the filesystem (or for this kind of file: `user.*` on a symlink or fifo), no room
            // left in the inode's xattr space, a value larger than the filesystem allows.
            Err(Errno::NOTSUP | Errno::NOSPC | Errno::TOOBIG | Errno::RANGE | Errno::DQUOT) => {
                self.not_held += 1
            }
            Err(Errno::PERM) if name.starts_with("user.") => self.not_held += 1,
            Err(e) => self.problem(format!("{name}: {e}")),
        }
    }
}

/// Where attributes are set: an open file or directory, or (symlinks, fifos) a name in a directory, reached through
/// `/proc/self/fd` so that the directory handle, checked when it was opened, is what the name is looked up in.
pub enum On<'a> {
    Fd(BorrowedFd<'a>),
    Name { dir: BorrowedFd<'a>, name: &'a str },
}

impl On<'_> {
    fn set(&self, name: &str, value: &[u8]) -> Result<(), Errno> {
        match self {
            On::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            On::Name { dir, name: n } => rustix::fs::lsetxattr(
                format!("/proc/self/fd/{}/{n}", dir.as_fd().as_raw_fd()),
                name,
                value,
                XattrFlags::empty(),
            ),
        }
    }

    fn remove(&self, name: &str) -> Result<(), Errno> {
        match self {
            On::Fd(fd) => rustix::fs::fremovexattr(fd, name),
            On::Name { dir, name: n } => rustix::fs::lremovexattr(
                format!("/proc/self/fd/{}/{n}", dir.as_fd().as_raw_fd()),
                name,
            ),
        }
    }
}

/// Sets `attrs` on a restored entry (made by this restore, or a directory it replaces the metadata of). `dir` says
/// whether it is a directory (the only kind with a default ACL). ACLs the entry has but the backup has not (inherited
/// from a default ACL) are removed.
pub fn apply(
    on: On<'_>,
    attrs: Option<&Attrs>,
    dir: bool,
    privileged: bool,
    tally: &mut AttrTally,
) {
    let empty = Attrs::default();
    let attrs = attrs.unwrap_or(&empty);
    for (name, value) in &attrs.xattrs {
        let Ok(name) = std::str::from_utf8(name) else {
            tally.problem(format!(
                "{}: a name that is not UTF-8",
                crate::stdx::show(name)
            ));
            continue;
        };
        if name.contains('\0') {
            tally.problem(format!(
                "{}: a name with a NUL",
                crate::stdx::show_str(name)
            ));
            continue;
        }
        if !privileged && !name.starts_with("user.") {
            tally.need_root += 1;
            continue;
        }
        tally.outcome(name, on.set(name, value));
    }
    let acls = [
        (ACL_ACCESS, attrs.acl_access.as_deref()),
        (ACL_DEFAULT, attrs.acl_default.as_deref().filter(|_| dir)),
    ];
    for (xattr, text) in acls {
        match text {
            Some(text) => match acl::from_text(text) {
                Ok(binary) => tally.outcome(xattr, on.set(xattr, &binary)),
                Err(e) => tally.problem(format!("its {} ACL: {e}", acl_word(xattr))),
            },
            None if xattr == ACL_ACCESS || dir => {
                // None in the backup: one inherited from a default ACL goes (nothing there is fine too).
                match on.remove(xattr) {
                    Ok(()) | Err(Errno::NODATA | Errno::NOTSUP | Errno::PERM | Errno::ACCESS) => {}
                    Err(e) => tally.problem(format!(
                        "removing an inherited {} ACL: {e}",
                        acl_word(xattr)
                    )),
                }
            }
            None => {}
        }
    }
}

/// Whether what a target holds (`found`: its xattrs and ACLs) differs from what the backup gives (`backup`) in what
/// a restore would set (`--overwrite if-changed`): the xattrs this restore may set (`user.*`; every name when
/// `privileged`) with their values, the access ACL and (directories) the default ACL. A name only the target has
/// counts for a file (rewriting it drops the name) but not for a directory (whose metadata is set in place, which
/// adds names and never removes them); `security.*` names only the target has never count (the system assigns
/// them: SELinux labels, IMA).
pub fn differ(found: Option<&Attrs>, backup: Option<&Attrs>, dir: bool, privileged: bool) -> bool {
    let empty = Attrs::default();
    let (f, b) = (found.unwrap_or(&empty), backup.unwrap_or(&empty));
    let settable = |n: &[u8]| privileged || n.starts_with(b"user.");
    let backup_names_differ = b
        .xattrs
        .iter()
        .filter(|(n, _)| settable(n))
        .any(|(n, v)| f.xattrs.get(n) != Some(v));
    let extra_names = !dir
        && f.xattrs
            .keys()
            .filter(|n| settable(n) && !n.starts_with(b"security."))
            .any(|n| !b.xattrs.contains_key(n));
    backup_names_differ
        || extra_names
        || f.acl_access != b.acl_access
        || (dir && f.acl_default != b.acl_default)
}

fn acl_word(xattr: &str) -> &'static str {
    if xattr == ACL_ACCESS {
        "access"
    } else {
        "default"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differ_compares_what_a_restore_would_set() {
        let attrs = |x: &[(&str, &str)], acl: Option<&str>| {
            let mut a = Attrs::default();
            for (n, v) in x {
                a.xattrs
                    .insert(n.as_bytes().to_vec(), v.as_bytes().to_vec());
            }
            a.acl_access = acl.map(String::from);
            a
        };
        let acl = "user::rw-\nuser:1001:r--\ngroup::r--\nmask::r--\nother::---";
        let b = attrs(&[("user.a", "1"), ("trusted.t", "x")], Some(acl));
        assert!(!differ(Some(&b), Some(&b), false, true));
        // Only the ACL changed, or only an xattr's value, or an xattr went missing.
        assert!(differ(
            Some(&attrs(&[("user.a", "1"), ("trusted.t", "x")], None)),
            Some(&b),
            false,
            true
        ));
        assert!(differ(
            Some(&attrs(&[("user.a", "2"), ("trusted.t", "x")], Some(acl))),
            Some(&b),
            false,
            true
        ));
        assert!(differ(
            Some(&attrs(&[("trusted.t", "x")], Some(acl))),
            Some(&b),
            false,
            true
        ));
        assert!(differ(None, Some(&b), false, false));
        // Unprivileged: trusted.* can be neither read nor set, so it does not count.
        assert!(!differ(
            Some(&attrs(&[("user.a", "1")], Some(acl))),
            Some(&b),
            false,
            false
        ));
        // A name only the target has: a file's counts (rewriting drops it), a directory's and security.* do not.
        let extra = attrs(
            &[("user.a", "1"), ("trusted.t", "x"), ("user.new", "y")],
            Some(acl),
        );
        assert!(differ(Some(&extra), Some(&b), false, true));
        assert!(!differ(Some(&extra), Some(&b), true, true));
        let label = attrs(
            &[
                ("user.a", "1"),
                ("trusted.t", "x"),
                ("security.selinux", "l"),
            ],
            Some(acl),
        );
        assert!(!differ(Some(&label), Some(&b), false, true));
        // A directory's default ACL counts; a file's cannot exist.
        let mut d = b.clone();
        d.acl_default = Some("user::rwx\ngroup::r-x\nother::r-x".into());
        assert!(differ(Some(&b), Some(&d), true, true));
        assert!(!differ(Some(&b), Some(&d), false, true));
    }

    #[test]
    fn one_warning_per_kind_with_its_count() {
        let mut t = AttrTally::default();
        assert!(t.warnings("/t").is_empty());
        t.not_held = 3;
        t.need_root = 1;
        let w = t.warnings("/mnt/usb");
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with(
            "3 extended attributes or ACLs were not restored: the filesystem of /mnt/usb"
        ));
        assert!(w[1].starts_with("1 extended attribute or ACL was not restored: trusted.*"));
    }

    #[test]
    fn unprivileged_restores_set_user_attributes_and_count_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut a = Attrs::default();
        a.xattrs.insert(b"user.x".to_vec(), b"1".to_vec());
        a.xattrs.insert(b"trusted.y".to_vec(), b"2".to_vec());
        a.xattrs.insert(b"security.capability".to_vec(), vec![1]);
        a.acl_access = Some("user::rw-\nuser:4242:r--\ngroup::---\nmask::r--\nother::---".into());
        let mut t = AttrTally::default();
        apply(On::Fd(f.as_fd()), Some(&a), false, false, &mut t);
        assert_eq!(
            (t.restored, t.need_root, t.failed, t.not_held),
            (2, 2, 0, 0),
            "{t:?}"
        );
        let mut buf = [0u8; 64];
        let n = rustix::fs::fgetxattr(&f, "user.x", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"1");
        let n = rustix::fs::fgetxattr(&f, ACL_ACCESS, &mut buf[..]).unwrap();
        assert_eq!(
            acl::to_text(&buf[..n]).unwrap(),
            "user::rw-\nuser:4242:r--\ngroup::---\nmask::r--\nother::---"
        );
        // The backup has none: the ACL goes.
        apply(On::Fd(f.as_fd()), None, false, false, &mut t);
        assert_eq!(
            rustix::fs::fgetxattr(&f, ACL_ACCESS, &mut buf[..]),
            Err(Errno::NODATA)
        );
    }
}
