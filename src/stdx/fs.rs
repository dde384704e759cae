//! Reading and writing below a directory that someone else controls (a drive) without being redirected: directories
//! reached one name at a time with `openat(O_NOFOLLOW | O_DIRECTORY)` and checked to be on their parent's filesystem,
//! files opened without following symlinks and checked to be regular files on the opened descriptor, and files read
//! with a size limit checked before reading ([`Dir::read_bounded`], [`read_bounded`]).
//!
//! A FIFO, a device or a socket is refused before it is opened (opening one can block, or act), and again on the
//! descriptor, so a name swapped in between is refused too. Errors name the path and what was found there, never
//! what a refused file holds.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::escape::{show, show_path};

/// Why something below a directory could not be opened, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot {action} {}: {}", show_path(.path), message(.error))]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} {}: refused, dbackup follows no link it finds there", show_path(.path), self.what())]
    Symlink {
        path: PathBuf,
        target: Option<Vec<u8>>,
    },
    #[error("{} is a {found}, not a {wanted}: refused", show_path(.path))]
    WrongKind {
        path: PathBuf,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("{} {}: refused, dbackup crosses no mount point it finds there", show_path(.path), self.what())]
    OtherFilesystem { path: PathBuf, parent: PathBuf },
    #[error("{} is {size} bytes, more than the {limit} bytes it may have: refused", show_path(.path))]
    TooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{} is nested more than {MAX_DEPTH} directories deep: refused", show_path(.path))]
    TooDeep { path: PathBuf },
}

/// How deep [`Dir::remove_tree`] and [`Dir::tree_bytes`] go.
pub const MAX_DEPTH: usize = 64;

/// An I/O error as a lower-case phrase without the `(os error N)` suffix.
pub fn message(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s.to_string(),
    }
}

impl FsError {
    /// Whether the name was simply not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }

    /// Whether the user running may not do it (`EACCES`, `EPERM`): a directory of another user's, say.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, FsError::Io { error, .. } if error.kind() == io::ErrorKind::PermissionDenied)
    }

    /// Whether it is the refusal of a name that exists already (a rename or creation that does not replace).
    pub fn is_exists(&self) -> bool {
        matches!(self, FsError::Io { error, .. } if error.kind() == io::ErrorKind::AlreadyExists)
    }

    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. }
            | FsError::Symlink { path, .. }
            | FsError::WrongKind { path, .. }
            | FsError::OtherFilesystem { path, .. }
            | FsError::TooBig { path, .. }
            | FsError::TooDeep { path } => path,
        }
    }

    /// What was found at the path, as a phrase to follow it: `is a symbolic link (to /etc)`.
    pub fn what(&self) -> String {
        match self {
            FsError::Io { error, .. } => format!("cannot be used: {}", message(error)),
            FsError::Symlink { target, .. } => format!(
                "is a symbolic link{}",
                target
                    .as_deref()
                    .map(|t| format!(" (to {})", show(t)))
                    .unwrap_or_default()
            ),
            FsError::WrongKind { found, wanted, .. } => format!("is a {found}, not a {wanted}"),
            FsError::OtherFilesystem { parent, .. } => format!(
                "is a mount point (another filesystem or mount than {})",
                show_path(parent)
            ),
            FsError::TooBig { size, limit, .. } => {
                format!("is {size} bytes, more than the {limit} bytes it may have")
            }
            FsError::TooDeep { .. } => format!("is nested more than {MAX_DEPTH} directories deep"),
        }
    }

    /// Whether the drive tried to send dbackup elsewhere (a link, a mount point), rather than failed.
    pub fn is_redirect(&self) -> bool {
        matches!(
            self,
            FsError::Symlink { .. } | FsError::OtherFilesystem { .. }
        )
    }
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> io::Error {
        let kind = match &e {
            FsError::Io { error, .. } => error.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

fn io_err(action: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> FsError {
    move |e| FsError::Io {
        action,
        path,
        error: e.into(),
    }
}

/// The word for a file type in messages.
pub fn kind_word(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

#[allow(clippy::unnecessary_cast)] // st_dev's type differs between architectures
fn dev_of(st: &rustix::fs::Stat) -> u64 {
    st.st_dev as u64
}

fn type_of(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// An open directory: the handle everything below it is reached through, its path (for messages), its device and
/// its mount. Cheap to clone (the descriptor is shared).
#[derive(Debug, Clone)]
pub struct Dir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    dev: u64,
    /// The mount it is on (`statx` `STATX_MNT_ID`, Linux 5.8), which tells a bind mount of the same filesystem apart.
    mnt: Option<u64>,
}

/// The mount id of an open file, when the kernel tells it.
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    use rustix::fs::StatxFlags;
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok()?;
    StatxFlags::from_bits_retain(st.stx_mask)
        .contains(StatxFlags::MNT_ID)
        .then_some(st.stx_mnt_id)
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens `path` as the root of what follows. The path is resolved as the system does (symlinks in it are the
    /// user's choice: a configured destination, a `--drive` argument); nothing below it will be.
    pub fn open(path: &Path) -> Result<Dir, FsError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open", path.to_path_buf()))?;
        Dir::from_fd(fd, path.to_path_buf())
    }

    fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<Dir, FsError> {
        let st = rustix::fs::fstat(&fd).map_err(io_err("inspect", path.clone()))?;
        Ok(Dir {
            mnt: mount_id(&fd),
            fd: Arc::new(fd),
            path,
            dev: dev_of(&st),
        })
    }

    /// The path this handle was opened as (for messages and for tools that take paths).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device of the filesystem it is on.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `path/name`, for messages.
    pub fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// What a refused non-directory or non-file is, for the error.
    fn refusal(&self, name: &OsStr, st: &rustix::fs::Stat, wanted: &'static str) -> FsError {
        let path = self.join(name);
        match type_of(st) {
            FileType::Symlink => FsError::Symlink {
                target: rustix::fs::readlinkat(self, name, Vec::new())
                    .ok()
                    .map(|t| t.into_bytes()),
                path,
            },
            t => FsError::WrongKind {
                path,
                found: kind_word(t),
                wanted,
            },
        }
    }

    /// The directory `name` in this one: never through a symlink, and only on this directory's filesystem.
    pub fn sub(&self, name: impl AsRef<OsStr>) -> Result<Dir, FsError> {
        let name = name.as_ref();
        let path = self.join(name);
        let fd = match rustix::fs::openat(self, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                return Err(
                    match rustix::fs::statat(self, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => self.refusal(name, &st, "directory"),
                        Err(_) => io_err("open", path)(e),
                    },
                );
            }
            Err(e) => return Err(io_err("open", path)(e)),
        };
        let dir = Dir::from_fd(fd, path)?;
        let other_mount = matches!((dir.mnt, self.mnt), (Some(a), Some(b)) if a != b);
        if dir.dev != self.dev || other_mount {
            return Err(FsError::OtherFilesystem {
                path: dir.path,
                parent: self.path.clone(),
            });
        }
        Ok(dir)
    }

    /// Creates the directory `name` here with `mode` (it must not exist), and opens it as [`Dir::sub`] does.
    pub fn create_sub(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<Dir, FsError> {
        let name = name.as_ref();
        rustix::fs::mkdirat(self, name, Mode::from_raw_mode(mode))
            .map_err(io_err("create", self.join(name)))?;
        self.sub(name)
    }

    /// [`Dir::sub`], creating the directory first when it is missing. Returns whether it was created.
    pub fn sub_or_create(
        &self,
        name: impl AsRef<OsStr>,
        mode: u32,
    ) -> Result<(Dir, bool), FsError> {
        let name = name.as_ref();
        match rustix::fs::mkdirat(self, name, Mode::from_raw_mode(mode)) {
            Ok(()) => Ok((self.sub(name)?, true)),
            Err(Errno::EXIST) => Ok((self.sub(name)?, false)),
            Err(e) => Err(io_err("create", self.join(name))(e)),
        }
    }

    /// What `name` is, not following a symlink; `None` when there is nothing by that name.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<rustix::fs::Stat>, FsError> {
        let name = name.as_ref();
        match rustix::fs::statat(self, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err("inspect", self.join(name))(e)),
        }
    }

    /// The type of `name` (not following a symlink); `None` when it does not exist.
    pub fn file_type(&self, name: impl AsRef<OsStr>) -> Result<Option<FileType>, FsError> {
        Ok(self.stat(name)?.map(|st| type_of(&st)))
    }

    /// Opens the regular file `name` for reading (see the module documentation).
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> Result<File, FsError> {
        self.open_file_with(name.as_ref(), OFlags::empty())
    }

    /// [`Dir::open_file`] with extra open flags (`O_DIRECT`).
    pub fn open_file_with(&self, name: &OsStr, extra: OFlags) -> Result<File, FsError> {
        let path = self.join(name);
        // Looked at first: a FIFO or a device is never opened.
        let st = rustix::fs::statat(self, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("open", path.clone()))?;
        if type_of(&st) != FileType::RegularFile {
            return Err(self.refusal(name, &st, "regular file"));
        }
        let flags = OFlags::RDONLY
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC
            | extra;
        let fd = rustix::fs::openat(self, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP => FsError::Symlink {
                path: path.clone(),
                target: None,
            },
            e => io_err("open", path.clone())(e),
        })?;
        // Checked again on what was opened: the name may have changed since it was looked at.
        let st = rustix::fs::fstat(&fd).map_err(io_err("inspect", path.clone()))?;
        if type_of(&st) != FileType::RegularFile {
            return Err(FsError::WrongKind {
                path,
                found: kind_word(type_of(&st)),
                wanted: "regular file",
            });
        }
        if dev_of(&st) != self.dev {
            return Err(FsError::OtherFilesystem {
                path,
                parent: self.path.clone(),
            });
        }
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(io_err("open", path.clone()))?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(io_err("open", path))?;
        Ok(File::from(fd))
    }

    /// The whole of the regular file `name`, refused without reading when it is larger than `limit` bytes.
    pub fn read_bounded(&self, name: impl AsRef<OsStr>, limit: u64) -> Result<Vec<u8>, FsError> {
        let name = name.as_ref();
        let file = self.open_file(name)?;
        read_file_bounded(file, &self.join(name), limit)
    }

    /// Creates the file `name` for writing (it must not exist; a symlink there is not followed).
    pub fn create_file(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File, FsError> {
        let name = name.as_ref();
        let fd = rustix::fs::openat(
            self,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(io_err("create", self.join(name)))?;
        Ok(File::from(fd))
    }

    /// Where the symlink `name` points; `None` when there is nothing by that name.
    pub fn read_link(&self, name: impl AsRef<OsStr>) -> Result<Option<Vec<u8>>, FsError> {
        let name = name.as_ref();
        match rustix::fs::readlinkat(self, name, Vec::new()) {
            Ok(t) => Ok(Some(t.into_bytes())),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err("read the link", self.join(name))(e)),
        }
    }

    /// Makes the symlink `name` pointing at `target`.
    pub fn symlink(&self, target: impl AsRef<OsStr>, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::symlinkat(target.as_ref(), self, name.as_ref()).map_err(Into::into)
    }

    /// Renames `from` to `to`, both in this directory; with `no_replace`, fails when `to` exists (checked, then
    /// renamed, on filesystems without `RENAME_NOREPLACE`: callers hold the run lock).
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
        no_replace: bool,
    ) -> Result<(), FsError> {
        self.rename_into(from, self, to, no_replace)
    }

    /// [`Dir::rename`] from this directory into `into` (on the same filesystem): `from` here becomes `to` there.
    pub fn rename_into(
        &self,
        from: impl AsRef<OsStr>,
        into: &Dir,
        to: impl AsRef<OsStr>,
        no_replace: bool,
    ) -> Result<(), FsError> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let err = |e: Errno| FsError::Io {
            action: "rename",
            path: self.join(from),
            error: io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "to {}: {}",
                    if into.path == self.path {
                        show(to.as_bytes())
                    } else {
                        show_path(&into.join(to))
                    },
                    message(&e.into())
                ),
            ),
        };
        if !no_replace {
            return rustix::fs::renameat(self, from, into, to).map_err(err);
        }
        match rustix::fs::renameat_with(self, from, into, to, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(Errno::INVAL | Errno::NOSYS) => {
                if into.stat(to)?.is_some() {
                    return Err(err(Errno::EXIST));
                }
                rustix::fs::renameat(self, from, into, to).map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Removes the file or symlink `name` (not a directory).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> Result<(), FsError> {
        let name = name.as_ref();
        rustix::fs::unlinkat(self, name, AtFlags::empty())
            .map_err(io_err("remove", self.join(name)))
    }

    /// fsyncs the directory, so that creations and renames in it are durable. Filesystems that cannot fsync a
    /// directory (some FUSE ones answer `EINVAL` or `ENOSYS`) are accepted as they are.
    pub fn fsync(&self) -> Result<(), FsError> {
        match rustix::fs::fsync(self) {
            Ok(()) | Err(Errno::INVAL | Errno::NOSYS) => Ok(()),
            Err(e) => Err(io_err("fsync", self.path.clone())(e)),
        }
    }

    /// The names in this directory and their types (symlinks as symlinks), `.` and `..` left out, in no order.
    pub fn entries(&self) -> Result<Vec<(OsString, FileType)>, FsError> {
        let list_err = io_err("list", self.path.clone());
        let dir = rustix::fs::Dir::read_from(self).map_err(list_err)?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(io_err("list", self.path.clone()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from_vec(name.to_vec());
            let kind = match entry.file_type() {
                FileType::Unknown => match self.file_type(&name)? {
                    Some(t) => t,
                    None => continue,
                },
                t => t,
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Removes `name` and everything below it, never following a symlink and never crossing into another
    /// filesystem (a mount point below it is refused, and nothing on it is touched). Missing: nothing to do.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<(), FsError> {
        self.remove_tree_at(name.as_ref(), 0)
    }

    fn remove_tree_at(&self, name: &OsStr, depth: usize) -> Result<(), FsError> {
        let Some(st) = self.stat(name)? else {
            return Ok(());
        };
        if type_of(&st) != FileType::Directory {
            return match self.unlink(name) {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            };
        }
        if depth >= MAX_DEPTH {
            return Err(FsError::TooDeep {
                path: self.join(name),
            });
        }
        let sub = self.sub(name)?;
        #[allow(clippy::unnecessary_cast)] // st_mode's type differs between architectures
        let mode = st.st_mode as u32 & 0o7777;
        if mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&sub, Mode::from_raw_mode(mode | 0o700))
                .map_err(io_err("change the mode of", sub.path.clone()))?;
        }
        for (child, kind) in sub.entries()? {
            if kind == FileType::Directory {
                sub.remove_tree_at(&child, depth + 1)?;
            } else {
                match sub.unlink(&child) {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
        }
        drop(sub);
        rustix::fs::unlinkat(self, name, AtFlags::REMOVEDIR)
            .map_err(io_err("remove", self.join(name)))
    }

    /// The bytes of the regular files under `name` (itself when it is one), not following symlinks and staying on
    /// this filesystem; what removing it frees, roughly. Unreadable parts count as nothing.
    pub fn tree_bytes(&self, name: impl AsRef<OsStr>) -> u64 {
        self.tree_bytes_at(name.as_ref(), 0)
    }

    fn tree_bytes_at(&self, name: &OsStr, depth: usize) -> u64 {
        let Ok(Some(st)) = self.stat(name) else {
            return 0;
        };
        match type_of(&st) {
            FileType::RegularFile => st.st_size.max(0) as u64,
            FileType::Directory if depth < MAX_DEPTH => {
                let Ok(sub) = self.sub(name) else { return 0 };
                sub.entries()
                    .unwrap_or_default()
                    .iter()
                    .map(|(child, _)| sub.tree_bytes_at(child, depth + 1))
                    .fold(0u64, u64::saturating_add)
            }
            _ => 0,
        }
    }
}

/// Said of a run that found a drive full after its space check found room (`external`, `image create`).
pub const FILLED_UP: &str = "; the drive filled up while writing (the space check before writing found room, so \
                             something else was written to it meanwhile): free space on it and run again";

/// An error as one message: the building blocks put their I/O error in their own message and also give it as the
/// `source`, which `{:#}` would print twice. The kind of that I/O error is kept (a full drive: [`filled_up`]).
pub fn flat(e: impl std::error::Error + 'static) -> anyhow::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return anyhow::Error::new(io::Error::new(io.kind(), e.to_string()));
        }
        source = s.source();
    }
    anyhow::anyhow!("{e}")
}

/// Whether `e` was caused by a full filesystem (or quota).
pub fn filled_up(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| matches!(io.kind(), StorageFull | QuotaExceeded))
    })
}

/// A complete temporary file in `dir` (a name starting with `prefix`) holding `text`, mode `mode`, synced to disk: the
/// caller moves it into place (`persist`, or `persist_noclobber` never to replace a file). A SIGINT or SIGTERM caught
/// meanwhile ([`crate::interrupt`]) is returned as the error, the temporary removed.
pub fn complete_temp(
    dir: &Path,
    prefix: &str,
    mode: u32,
    text: &str,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let tmp = written_temp(dir, prefix, mode, text)?;
    crate::interrupt::test_stop("temp-written");
    crate::interrupt::check()?;
    Ok(tmp)
}

/// [`complete_temp`] whatever the signals: for what a run already interrupted still writes as it ends (its status
/// page, whose last run then says so).
pub fn written_temp(
    dir: &Path,
    prefix: &str,
    mode: u32,
    text: &str,
) -> anyhow::Result<tempfile::NamedTempFile> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    remove_dead_temporaries(dir, prefix);
    // `<prefix><pid>-<random>`: a run killed before the rename leaves a name the next run knows to be nobody's.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // tempfile creates 0600; set the mode anyway so it does not depend on that.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Removes from `dir` the temporary files named `<prefix><pid>` or `<prefix><pid>-<anything>` whose process no longer
/// runs: what a run killed between writing a file and renaming it into place left (for `keygen`, a whole secret
/// key), and a dead restore's mark. Another running process's are left to it; anything but a regular file is left
/// alone (the grow's empty mount points have their own sweep, which asks every mount namespace first).
pub fn remove_dead_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .map(|rest| rest.split_once('-').map_or(rest, |(pid, _)| pid))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !super::process_gone(pid) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Creates `path` and its missing parents, each one it creates owner-only (0700); one already there is left as it is.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Opens the regular file at `path` for reading, not following a symlink at its last component and refusing
/// anything but a regular file (the directories above it are resolved as the system does).
pub fn open_regular(path: &Path) -> Result<File, FsError> {
    let (dir, name) = split(path)?;
    dir.open_file(name)
}

/// The whole of the regular file at `path` (see [`open_regular`]), refused without reading when it is larger than
/// `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
    let (dir, name) = split(path)?;
    dir.read_bounded(name, limit)
}

/// The directory holding `path`, opened, and the last component.
fn split(path: &Path) -> Result<(Dir, &OsStr), FsError> {
    let name = path.file_name().ok_or_else(|| FsError::WrongKind {
        path: path.to_path_buf(),
        found: "directory",
        wanted: "regular file",
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open(parent)?, name))
}

/// Reads an opened file whole, refusing it when its size (checked first) or what it yields is more than `limit`.
pub fn read_file_bounded(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
    let size = file
        .metadata()
        .map_err(|error| FsError::Io {
            action: "inspect",
            path: path.to_path_buf(),
            error,
        })?
        .len();
    if size > limit {
        return Err(FsError::TooBig {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| FsError::Io {
            action: "read",
            path: path.to_path_buf(),
            error,
        })?;
    let got = bytes.len() as u64;
    if got > limit {
        return Err(FsError::TooBig {
            path: path.to_path_buf(),
            size: got,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    #[test]
    fn files_are_read_whole_below_their_limit_and_refused_above_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"12345").unwrap();
        assert_eq!(read_bounded(&tmp.path().join("f"), 5).unwrap(), b"12345");
        let err = read_bounded(&tmp.path().join("f"), 4).unwrap_err();
        assert!(
            matches!(
                err,
                FsError::TooBig {
                    size: 5,
                    limit: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            read_bounded(&tmp.path().join("missing"), 4)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn links_fifos_and_devices_are_refused_at_once_and_show_nothing_of_their_target() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"TOKEN=hunter2").unwrap();
        symlink(&secret, tmp.path().join("link")).unwrap();
        symlink("/dev/zero", tmp.path().join("zero")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let t = Instant::now();
        for name in ["link", "zero", "fifo"] {
            let err = read_bounded(&tmp.path().join(name), 1 << 20).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("refused"), "{text}");
        }
        assert!(
            read_bounded(&tmp.path().join("link"), 99)
                .unwrap_err()
                .to_string()
                .contains("is a symbolic link (to ")
        );
        assert!(
            read_bounded(&tmp.path().join("fifo"), 99)
                .unwrap_err()
                .to_string()
                .contains("is a FIFO, not a regular file")
        );
        let dir = Dir::open(Path::new("/dev")).unwrap();
        assert!(matches!(
            dir.read_bounded("zero", 99).unwrap_err(),
            FsError::WrongKind {
                found: "character device",
                ..
            }
        ));
        assert!(t.elapsed() < Duration::from_secs(10), "nothing blocked");
    }

    #[test]
    fn subdirectories_are_never_reached_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("alias")).unwrap();
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let root = Dir::open(tmp.path()).unwrap();
        assert!(root.sub("real").is_ok());
        let err = root.sub("alias").unwrap_err();
        assert!(err.is_redirect(), "{err}");
        assert!(
            err.to_string().contains("alias is a symbolic link (to "),
            "{err}"
        );
        assert!(matches!(
            root.sub("file").unwrap_err(),
            FsError::WrongKind {
                found: "regular file",
                ..
            }
        ));
        assert!(root.sub("missing").unwrap_err().is_not_found());
        // A mount point (another filesystem) below a directory is refused: /proc is never the root's filesystem.
        let slash = Dir::open(Path::new("/")).unwrap();
        assert!(matches!(
            slash.sub("proc").unwrap_err(),
            FsError::OtherFilesystem { .. }
        ));
    }

    #[test]
    fn trees_are_removed_without_following_links_out_of_them() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        let t = tmp.path().join("tree");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "12345").unwrap();
        symlink(&outside, t.join("a/out")).unwrap();
        std::fs::set_permissions(
            t.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o500),
        )
        .unwrap();
        let root = Dir::open(tmp.path()).unwrap();
        assert_eq!(root.tree_bytes("tree"), 5);
        root.remove_tree("tree").unwrap();
        assert!(!t.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
        root.remove_tree("tree").unwrap();
    }

    /// `rename_into` moves a name from one directory into another; with `no_replace` it refuses a name there already
    /// (one system call, `RENAME_NOREPLACE`), saying which, and both files stay as they were.
    #[test]
    fn rename_into_another_directory_never_replaces_a_name_there() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("a/one"), b"mine").unwrap();
        std::fs::write(tmp.path().join("a/two"), b"mine too").unwrap();
        std::fs::write(tmp.path().join("b/two"), b"theirs").unwrap();
        let (a, b) = (
            Dir::open(&tmp.path().join("a")).unwrap(),
            Dir::open(&tmp.path().join("b")).unwrap(),
        );
        a.rename_into("one", &b, "one", true).unwrap();
        let e = a.rename_into("two", &b, "two", true).unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert!(
            e.to_string()
                .contains(&tmp.path().join("b/two").display().to_string()),
            "{e}"
        );
        let read = |p: &str| std::fs::read(tmp.path().join(p)).unwrap();
        assert_eq!(read("b/one"), b"mine");
        assert_eq!(read("a/two"), b"mine too");
        assert_eq!(read("b/two"), b"theirs");
        assert!(!tmp.path().join("a/one").exists());
    }

    /// What dead runs left is removed: a file; a running process's file, and any directory, stay.
    #[test]
    fn only_dead_runs_temporary_files_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let at = |n: &str| tmp.path().join(n);
        let dead = 999_999_999;
        let alive = std::process::id();
        std::fs::write(at(&format!("t-{dead}")), b"x").unwrap();
        std::fs::write(at(&format!("t-{alive}-mine")), b"x").unwrap();
        std::fs::create_dir(at(&format!("t-{dead}-empty"))).unwrap();
        std::fs::create_dir(at(&format!("t-{dead}-full"))).unwrap();
        std::fs::write(at(&format!("t-{dead}-full/mine")), b"x").unwrap();
        std::fs::create_dir(at(&format!("t-{alive}-empty"))).unwrap();
        std::fs::create_dir(at("t-nopid")).unwrap();
        remove_dead_temporaries(tmp.path(), "t-");
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!("t-{alive}-mine"),
            format!("t-{dead}-empty"),
            format!("t-{dead}-full"),
            format!("t-{alive}-empty"),
            "t-nopid".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }
}
