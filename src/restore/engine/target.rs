//! The restore target as a directory handle: every path below it is reached one component at a time with
//! `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink (from the backup or planted at the destination) is never followed.
//!
//! The target root itself is opened by path and may be reached through symlinks: it is the user's choice. Below it,
//! nothing is followed. A component that is a symlink is reported as [`WalkError::Symlink`]; one that is another
//! non-directory as [`WalkError::NotDir`]. The most recent chain of open directories is cached (archives and walks
//! list a directory's entries together), and is dropped below any path the applier removes or replaces.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::entry::Mtime;
use super::safety::RelPath;

/// What is at a destination path (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: FoundKind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Mtime,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FoundKind {
    pub fn word(self) -> &'static str {
        match self {
            FoundKind::File => "file",
            FoundKind::Dir => "directory",
            FoundKind::Symlink => "symlink",
            FoundKind::Fifo => "fifo",
            FoundKind::Socket => "socket",
            FoundKind::CharDevice => "char device",
            FoundKind::BlockDevice => "block device",
            FoundKind::Unknown => "file of unknown type",
        }
    }
}

#[allow(clippy::unnecessary_cast)] // Stat's field types differ between architectures
impl From<rustix::fs::Stat> for Found {
    fn from(st: rustix::fs::Stat) -> Found {
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => FoundKind::File,
            FileType::Directory => FoundKind::Dir,
            FileType::Symlink => FoundKind::Symlink,
            FileType::Fifo => FoundKind::Fifo,
            FileType::Socket => FoundKind::Socket,
            FileType::CharacterDevice => FoundKind::CharDevice,
            FileType::BlockDevice => FoundKind::BlockDevice,
            _ => FoundKind::Unknown,
        };
        Found {
            kind,
            mode: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime: Mtime::new(st.st_mtime as i64, st.st_mtime_nsec as u32),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
        }
    }
}

/// Why a directory below the target could not be reached.
#[derive(Debug)]
pub enum WalkError {
    /// This component is a symlink: nothing is ever written through it.
    Symlink(RelPath),
    /// This component is something else than a directory.
    NotDir(RelPath, FoundKind),
    /// This component does not exist (only when not creating).
    Missing(RelPath),
    Io(RelPath, io::Error),
}

/// The open target root and the cached chain of directories below it.
pub struct TargetDir {
    path: PathBuf,
    root: Option<OwnedFd>,
    cache: Vec<(Vec<u8>, OwnedFd)>,
    /// Directories created while walking (implicit parents), for the applier to count.
    pub created: Vec<RelPath>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl TargetDir {
    /// Opens the root. A root that does not exist gives a handle through which everything below is missing
    /// (planning a restore into a new directory); [`TargetDir::create_root`] makes it.
    pub fn open(path: &Path) -> io::Result<TargetDir> {
        let root = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(TargetDir {
            path: path.to_path_buf(),
            root,
            cache: Vec::new(),
            created: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.root.is_some()
    }

    /// Creates the root (and its missing parents) owner-only, then opens it.
    pub fn create_root(&mut self) -> io::Result<()> {
        if self.root.is_none() {
            crate::stdx::fs::create_private_dir(&self.path)?;
            self.root = Some(rustix::fs::open(
                &self.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        Ok(())
    }

    /// The directory `rel` (the root when `rel` is empty), reached without following any symlink.
    /// With `create`, missing components are made with mode 0700 and recorded in [`TargetDir::created`].
    pub fn dir(&mut self, rel: &RelPath, create: bool) -> Result<BorrowedFd<'_>, WalkError> {
        let Some(root) = self.root.as_ref() else {
            let first = rel
                .components()
                .next()
                .map(|c| RelPath::root().join(c))
                .unwrap_or_default();
            return Err(WalkError::Missing(first));
        };
        let comps: Vec<&[u8]> = rel.components().collect();
        let mut keep = 0;
        while keep < self.cache.len() && keep < comps.len() && self.cache[keep].0 == comps[keep] {
            keep += 1;
        }
        self.cache.truncate(keep);
        let mut at = RelPath::root();
        for c in &comps[..keep] {
            at = at.join(c);
        }
        for &c in &comps[keep..] {
            at = at.join(c);
            let parent = match self.cache.last() {
                Some((_, fd)) => fd.as_fd(),
                None => root.as_fd(),
            };
            let fd = match rustix::fs::openat(parent, c, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(parent, c, Mode::from_raw_mode(0o700)) {
                        Ok(()) => self.created.push(at.clone()),
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(WalkError::Io(at, e.into())),
                    }
                    rustix::fs::openat(parent, c, DIR_FLAGS, Mode::empty())
                        .map_err(|e| classify(parent, c, at.clone(), e))?
                }
                Err(e) => return Err(classify(parent, c, at, e)),
            };
            self.cache.push((c.to_vec(), fd));
        }
        Ok(match self.cache.last() {
            Some((_, fd)) if !comps.is_empty() => fd.as_fd(),
            _ => root.as_fd(),
        })
    }

    /// Like [`TargetDir::dir`] without creating, but as an owned handle (for operations that need two directories).
    pub fn dir_owned(&mut self, rel: &RelPath) -> Result<OwnedFd, WalkError> {
        let fd = self.dir(rel, false)?;
        fd.try_clone_to_owned()
            .map_err(|e| WalkError::Io(rel.clone(), e))
    }

    /// What is at `rel` now, not following a symlink there; `None` when it (or a parent) does not exist.
    pub fn lstat(&mut self, rel: &RelPath) -> Result<Option<Found>, WalkError> {
        let Some((parent, name)) = rel.split_last() else {
            return match &self.root {
                Some(fd) => rustix::fs::fstat(fd)
                    .map(|st| Some(st.into()))
                    .map_err(|e| WalkError::Io(RelPath::root(), e.into())),
                None => Ok(None),
            };
        };
        let dir = match self.dir(&parent, false) {
            Ok(d) => d,
            Err(WalkError::Missing(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st.into())),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(WalkError::Io(rel.clone(), e.into())),
        }
    }

    /// A symlink's target at `rel`.
    pub fn read_link(&mut self, rel: &RelPath) -> Result<Vec<u8>, WalkError> {
        let (parent, name) = rel.split_last().expect("not the root");
        let dir = self.dir(&parent, false)?;
        rustix::fs::readlinkat(dir, name, Vec::new())
            .map(|c| c.into_bytes())
            .map_err(|e| WalkError::Io(rel.clone(), e.into()))
    }

    /// Whether the directory at `rel` is empty.
    pub fn dir_is_empty(&mut self, rel: &RelPath) -> Result<bool, WalkError> {
        let dir = self
            .dir(rel, false)?
            .try_clone_to_owned()
            .map_err(|e| WalkError::Io(rel.clone(), e))?;
        let mut d =
            rustix::fs::Dir::read_from(&dir).map_err(|e| WalkError::Io(rel.clone(), e.into()))?;
        for ent in &mut d {
            let ent = ent.map_err(|e| WalkError::Io(rel.clone(), e.into()))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The file at `rel`, opened for reading without following a symlink at its name.
    fn open_file(&mut self, rel: &RelPath) -> Result<File, WalkError> {
        let (parent, name) = rel.split_last().expect("not the root");
        let dir = self.dir(&parent, false)?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| WalkError::Io(rel.clone(), e.into()))?;
        Ok(File::from(fd))
    }

    /// The sha256 of the regular file at `rel` (opened without following a symlink).
    pub fn hash_file(&mut self, rel: &RelPath) -> Result<[u8; 32], WalkError> {
        let mut file = self.open_file(rel)?;
        let (_, sum) = crate::stdx::sha256_reader(&mut file, &mut vec![0u8; 256 * 1024], |_| {})
            .map_err(|e| WalkError::Io(rel.clone(), e))?;
        Ok(sum)
    }

    /// The xattrs and ACLs of what is at `rel` (never following a symlink there): `None` when its filesystem holds
    /// none at all (`ENOTSUP`: exFAT, FAT), `Some(None)` when it has none.
    pub fn attrs(
        &mut self,
        rel: &RelPath,
    ) -> Result<Option<Option<Box<crate::archive::xattrs::Attrs>>>, WalkError> {
        use std::os::fd::AsRawFd;
        let (parent, name) = rel.split_last().expect("not the root");
        let dir = self.dir(&parent, false)?;
        // The name looked up in the directory handle checked when it was opened.
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
        match rustix::fs::llistxattr(&path, &mut [0u8; 0][..]) {
            Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Ok(_) | Err(rustix::io::Errno::RANGE) => {}
            Err(e) => return Err(WalkError::Io(rel.clone(), e.into())),
        }
        crate::archive::xattrs::read(&path)
            .map(Some)
            .map_err(|e| WalkError::Io(rel.clone(), e))
    }

    /// The stored digest of the regular file at `rel` (`size` bytes), as a sparse member of an archive would have it
    /// ([`crate::archive::sparse::stored_digest_of`]: only its data read); `None` when it is not sparse enough to be
    /// stored as one.
    pub fn stored_digest(
        &mut self,
        rel: &RelPath,
        size: u64,
    ) -> Result<Option<[u8; 32]>, WalkError> {
        let file = self.open_file(rel)?;
        crate::archive::sparse::stored_digest_of(&file, size, &mut |_| {})
            .map(|d| d.map(|d| d.0))
            .map_err(|e| WalkError::Io(rel.clone(), e))
    }

    /// Forgets cached handles at and below `rel` (call before removing or replacing anything at `rel`).
    pub fn invalidate(&mut self, rel: &RelPath) {
        let depth = rel.depth();
        let mut keep = 0;
        for (c, (cached, _)) in rel.components().zip(&self.cache) {
            if keep + 1 >= depth || c != cached.as_slice() {
                break;
            }
            keep += 1;
        }
        self.cache.truncate(keep);
    }

    /// The path for people: root joined with `rel`.
    pub fn full_path(&self, rel: &RelPath) -> PathBuf {
        full_path(&self.path, rel)
    }
}

/// The target root joined with a checked relative path.
pub fn full_path(root: &Path, rel: &RelPath) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if rel.is_root() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel.as_bytes()))
    }
}

/// Turns a failed `openat(O_DIRECTORY | O_NOFOLLOW)` into the reason.
fn classify(parent: BorrowedFd<'_>, name: &[u8], at: RelPath, e: rustix::io::Errno) -> WalkError {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let found = Found::from(st);
                    if found.kind == FoundKind::Symlink {
                        WalkError::Symlink(at)
                    } else {
                        WalkError::NotDir(at, found.kind)
                    }
                }
                Err(e2) => WalkError::Io(at, e2.into()),
            }
        }
        rustix::io::Errno::NOENT => WalkError::Missing(at),
        e => WalkError::Io(at, e.into()),
    }
}

/// The prefix of the temporary names made at the target (a crashed restore leaves only such names behind).
pub const TEMP_PREFIX: &str = ".dbackup-restore-";

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_name() -> String {
    format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes from `dir` the temporaries (`.dbackup-restore-<pid>-<n>`: a file, symlink or fifo, never a directory)
/// of restores that no longer run: what a restore killed while writing left behind. Those of a restore still
/// running (restores may run side by side) are left to it.
pub(super) fn remove_dead_temporaries(dir: BorrowedFd<'_>) {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_bytes();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX.as_bytes())
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && crate::stdx::process_gone(pid) {
            let _ = rustix::fs::unlinkat(dir, entry.file_name(), AtFlags::empty());
        }
    }
}

/// Runs `make` with fresh temporary names until one is free.
pub(super) fn with_temp_name(
    mut make: impl FnMut(&str) -> Result<(), Errno>,
) -> io::Result<String> {
    loop {
        let name = temp_name();
        match make(&name) {
            Ok(()) => return Ok(name),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// An entry's mtime as `utimensat`'s times: the access time left as it is, or (`atime_now`: on FAT and exFAT) set to
/// now, since exfat-fuse (libfuse 2) ignores a change of the mtime alone.
pub(super) fn times(m: Mtime, atime_now: bool) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: match atime_now {
                true => rustix::fs::UTIME_NOW,
                false => rustix::fs::UTIME_OMIT,
            },
        },
        last_modification: Timespec {
            tv_sec: m.sec,
            tv_nsec: m.nsec as _,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::of(s)
    }

    /// A target `root` holding `a/b`, beside an empty directory `outside`.
    fn scene() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (tmp, root, outside)
    }

    #[test]
    fn never_follows_a_symlink_below_the_root() {
        let (_tmp, root, outside) = scene();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        std::fs::write(root.join("a/file"), b"x").unwrap();
        let mut t = TargetDir::open(&root).unwrap();

        assert!(t.dir(&rel("a/b"), false).is_ok());
        assert!(
            matches!(t.dir(&rel("a/link"), false), Err(WalkError::Symlink(p)) if p == rel("a/link"))
        );
        assert!(
            matches!(t.dir(&rel("a/link/x"), true), Err(WalkError::Symlink(p)) if p == rel("a/link"))
        );
        assert!(
            matches!(t.dir(&rel("a/file/x"), true), Err(WalkError::NotDir(p, FoundKind::File)) if p == rel("a/file"))
        );
        assert!(
            matches!(t.dir(&rel("a/new"), false), Err(WalkError::Missing(p)) if p == rel("a/new"))
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing was made outside"
        );

        // Creating makes the missing components, owner-only, and records them.
        t.dir(&rel("a/new/deeper"), true).unwrap();
        assert_eq!(t.created, vec![rel("a/new"), rel("a/new/deeper")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("a/new/deeper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700 & !umask());

        // lstat sees the symlink itself, never its target.
        assert_eq!(
            t.lstat(&rel("a/link")).unwrap().unwrap().kind,
            FoundKind::Symlink
        );
        assert!(t.lstat(&rel("a/nothing/x")).unwrap().is_none());
        assert!(matches!(
            t.lstat(&rel("a/link/x")),
            Err(WalkError::Symlink(_))
        ));
    }

    #[test]
    fn the_cache_does_not_outlive_a_replaced_directory() {
        let (_tmp, root, outside) = scene();
        let mut t = TargetDir::open(&root).unwrap();
        t.dir(&rel("a/b"), false).unwrap();
        // Someone (or an earlier entry, with --overwrite always) replaces `a` by a symlink.
        std::fs::remove_dir(root.join("a/b")).unwrap();
        std::fs::remove_dir(root.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        t.invalidate(&rel("a"));
        assert!(matches!(
            t.dir(&rel("a/b"), true),
            Err(WalkError::Symlink(_))
        ));
    }

    #[test]
    fn a_missing_root_has_nothing_below_it() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = TargetDir::open(&tmp.path().join("new")).unwrap();
        assert!(!t.exists());
        assert!(t.lstat(&rel("a/b")).unwrap().is_none());
        assert!(t.lstat(&RelPath::root()).unwrap().is_none());
        t.create_root().unwrap();
        assert!(t.dir(&rel("x/y"), true).is_ok());
        assert!(tmp.path().join("new/x/y").is_dir());
    }

    pub(crate) fn umask() -> u32 {
        // Read without changing it: /proc/self/status has a Umask line on Linux >= 4.7.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }
}
