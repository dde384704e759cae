//! The snapshot walk of the scan and the writer: depth first, each directory's names sorted by bytes (the archive
//! order), never following a symlink, each entry looked at relative to its directory's open handle (`statat` with
//! `AT_SYMLINK_NOFOLLOW`), so the kernel resolves one name per entry instead of the whole path; the same directory
//! of the base snapshot is kept open beside it, for the shared-inode test of an incremental.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use serde::{Deserialize, Serialize};

use super::tarfmt::EntryKind;

/// Something the archive left out or could not do exactly, without failing (exit code 3 material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The path in the snapshot it concerns.
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A file name of the snapshot: escaped, so a name holding a newline or ESC cannot forge a line.
        write!(
            f,
            "{}: {}",
            crate::stdx::show_path(&self.path),
            self.message
        )
    }
}

/// An entry's metadata, as `lstat` gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta(Stat);

// `struct stat`'s field types differ between architectures: the casts are needed on some.
#[allow(clippy::unnecessary_cast)]
impl Meta {
    fn format(&self) -> u32 {
        self.0.st_mode as u32 & libc::S_IFMT
    }
    /// Its kind; `None` for a socket (never archived).
    pub(crate) fn kind(&self) -> Option<EntryKind> {
        match self.format() {
            libc::S_IFREG => Some(EntryKind::File),
            libc::S_IFDIR => Some(EntryKind::Dir),
            libc::S_IFLNK => Some(EntryKind::Symlink),
            libc::S_IFIFO => Some(EntryKind::Fifo),
            libc::S_IFCHR => Some(EntryKind::Char),
            libc::S_IFBLK => Some(EntryKind::Block),
            libc::S_IFSOCK => None,
            _ => Some(EntryKind::Other("unknown file type")),
        }
    }
    pub(crate) fn is_file(&self) -> bool {
        self.format() == libc::S_IFREG
    }
    pub(crate) fn is_dir(&self) -> bool {
        self.format() == libc::S_IFDIR
    }
    pub(crate) fn size(&self) -> u64 {
        self.0.st_size as u64
    }
    pub(crate) fn blocks(&self) -> u64 {
        self.0.st_blocks as u64
    }
    pub(crate) fn mode(&self) -> u32 {
        self.0.st_mode as u32
    }
    pub(crate) fn uid(&self) -> u32 {
        self.0.st_uid
    }
    pub(crate) fn gid(&self) -> u32 {
        self.0.st_gid
    }
    pub(crate) fn mtime(&self) -> i64 {
        self.0.st_mtime as i64
    }
    pub(crate) fn mtime_nsec(&self) -> i64 {
        self.0.st_mtime_nsec as i64
    }
    pub(crate) fn rdev(&self) -> u64 {
        self.0.st_rdev as u64
    }
    pub(crate) fn ino(&self) -> u64 {
        self.0.st_ino as u64
    }
    pub(crate) fn dev(&self) -> u64 {
        self.0.st_dev as u64
    }
    pub(crate) fn nlink(&self) -> u64 {
        self.0.st_nlink as u64
    }
}

/// One walked path.
pub(crate) struct Walked {
    /// Its path relative to the root.
    pub rel: Vec<u8>,
    pub full: PathBuf,
    pub meta: Meta,
    /// A regular file's same path in the base tree is the same inode (`None`: no base tree was given).
    pub same_in_base: Option<bool>,
    /// Its directory's open handle and its name there (for calls relative to it: one name for the kernel to look
    /// up, not the whole path).
    pub dir: Rc<OwnedFd>,
    pub name: CString,
}

impl Walked {
    /// Its xattrs and ACLs ([`super::xattrs::read_at`]).
    pub(crate) fn attrs(&self) -> io::Result<Option<Box<super::xattrs::Attrs>>> {
        super::xattrs::read_at(&self.dir, &self.name, &self.full)
    }
}

/// What the walk yields: an entry, or a warning (an entry that vanished or could not be read).
pub(crate) enum Step {
    Entry(Walked),
    Warn(Warning),
}

/// One open directory: its handle, the base tree's same directory when it has one, the names left (sorted, in
/// reverse: popped from the end), and where it is.
struct Frame {
    dir: Rc<OwnedFd>,
    base: Option<OwnedFd>,
    names: Vec<CString>,
    rel: Vec<u8>,
    full: PathBuf,
}

/// The walk of `root` (its entries, not the root itself), with the base tree `base` beside it.
pub(crate) struct Walk {
    stack: Vec<Frame>,
    /// A directory just yielded, to enter before the next name.
    enter: Option<(CString, Vec<u8>, PathBuf)>,
    with_base: bool,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_dir_at(parent: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?)
}

/// A directory's names (without `.` and `..`), sorted by bytes, reversed.
fn names_of(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| b.to_bytes().cmp(a.to_bytes()));
    Ok(names)
}

impl Walk {
    /// Opens `root` (and `base` when given; a base that cannot be opened shares nothing).
    pub(crate) fn new(root: &Path, base: Option<&Path>) -> io::Result<Walk> {
        let dir = rustix::fs::open(root, DIR_FLAGS, Mode::empty())?;
        let names = names_of(&dir)?;
        let base_dir = base.and_then(|b| rustix::fs::open(b, DIR_FLAGS, Mode::empty()).ok());
        Ok(Walk {
            stack: vec![Frame {
                dir: Rc::new(dir),
                base: base_dir,
                names,
                rel: Vec::new(),
                full: root.to_path_buf(),
            }],
            enter: None,
            with_base: base.is_some(),
        })
    }

    /// Enters the directory just yielded; a warning when it cannot be read (it is archived without its contents).
    fn enter(&mut self, name: CString, rel: Vec<u8>, full: PathBuf) -> Option<Step> {
        let top = self.stack.last()?;
        let opened = open_dir_at(&top.dir, &name).and_then(|d| Ok((names_of(&d)?, d)));
        let (names, dir) = match opened {
            Ok(x) => x,
            Err(e) => {
                let message = if e.kind() == io::ErrorKind::NotFound {
                    "vanished while archiving; skipped".to_string()
                } else {
                    format!("cannot read: {e}; archived without its contents")
                };
                return Some(Step::Warn(Warning {
                    path: full,
                    message,
                }));
            }
        };
        let base = top.base.as_ref().and_then(|b| open_dir_at(b, &name).ok());
        self.stack.push(Frame {
            dir: Rc::new(dir),
            base,
            names,
            rel,
            full,
        });
        None
    }
}

impl Iterator for Walk {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if let Some((name, rel, full)) = self.enter.take()
            && let Some(warn) = self.enter(name, rel, full)
        {
            return Some(warn);
        }
        loop {
            let top = self.stack.last_mut()?;
            let Some(name) = top.names.pop() else {
                self.stack.pop();
                continue;
            };
            let mut rel = top.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            let full = top.full.join(OsStr::from_bytes(name.to_bytes()));
            let meta = match rustix::fs::statat(&top.dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Meta(st),
                Err(e) => {
                    return Some(Step::Warn(Warning {
                        path: full,
                        message: format!("skipped: {}", io::Error::from(e)),
                    }));
                }
            };
            #[allow(clippy::unnecessary_cast)] // st_ino and st_dev differ by architecture
            let same_in_base = match (&top.base, self.with_base && meta.is_file()) {
                (_, false) => None,
                (None, true) => Some(false),
                (Some(b), true) => Some(
                    rustix::fs::statat(b, &name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|m| {
                        m.st_ino as u64 == meta.ino() && m.st_dev as u64 == meta.dev()
                    }),
                ),
            };
            if meta.is_dir() {
                self.enter = Some((name.clone(), rel.clone(), full.clone()));
            }
            return Some(Step::Entry(Walked {
                rel,
                full,
                meta,
                same_in_base,
                dir: top.dir.clone(),
                name,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk gives walkdir's order (depth first, names sorted by bytes), never follows a symlink, and tells
    /// which files are the same inode in the base tree.
    #[test]
    fn order_symlinks_and_the_base() {
        let t = tempfile::tempdir().unwrap();
        let (root, base) = (t.path().join("root"), t.path().join("base"));
        for d in ["a/b", "a.c", "z"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(base.join("a")).unwrap();
        for f in ["a/b/f", "a/g", "a.c/h", "B"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::hard_link(root.join("a/g"), base.join("a/g")).unwrap();
        std::fs::write(base.join("B"), "other").unwrap();
        std::os::unix::fs::symlink("/", root.join("z/up")).unwrap();
        let got: Vec<(String, Option<bool>)> = Walk::new(&root, Some(&base))
            .unwrap()
            .map(|s| match s {
                Step::Entry(w) => (String::from_utf8(w.rel).unwrap(), w.same_in_base),
                Step::Warn(w) => panic!("{w}"),
            })
            .collect();
        let want: Vec<(String, Option<bool>)> = [
            ("B", Some(false)),
            ("a", None),
            ("a/b", None),
            ("a/b/f", Some(false)),
            ("a/g", Some(true)),
            ("a.c", None),
            ("a.c/h", Some(false)),
            ("z", None),
            ("z/up", None),
        ]
        .into_iter()
        .map(|(p, s)| (p.to_string(), s))
        .collect();
        assert_eq!(got, want);
        let walkdir: Vec<String> = walkdir::WalkDir::new(&root)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), walkdir);
    }
}
