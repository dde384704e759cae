//! Keeping what a restore replaces: a file at the destination that differs from the backup is first kept at
//! `<backup_root>/displaced/<stamp>/<its absolute path>`, with its mode, owner (as root) and mtime, and only then
//! does the restored file take its place. Nothing a restore replaces is lost unless the user asked for that
//! (`--overwrite always --no-keep`).
//!
//! How a file is kept: on the same filesystem as the backup root, a hard link to it is made there (so the name at
//! the destination is never missing: the restored file is then renamed over it, and the kept name holds the old
//! file, the very inode); on another filesystem (the usual case: the backup root is on a second disk), it is copied
//! there (its holes, extended attributes and ACLs too; a temporary name, fsynced, renamed into place) before it is
//! replaced. When neither works (the backup root
//! is full, read-only, missing), the file is not replaced: the entry fails with the reason, and the rest goes on.
//! Directories below the run's directory are made owner-only (0700); nothing under it is ever followed through a
//! symlink ([`TargetDir`]).
//!
//! While a restore may still set files aside, its run's directory holds its mark, `.restore-running-<pid>`, removed
//! once the run has listed what it kept (in its output; stopped by a signal, it says where they are and its run log
//! lists them). A mark whose process no longer runs is a restore killed before it could list them: the next restore
//! says where they are ([`unlisted`]), once.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::Serialize;

use super::entry::show;
use super::safety::RelPath;
use super::target::{Found, FoundKind, TargetDir, WalkError, times, with_temp_name};

/// The directory of the backup root that holds what restores replaced.
pub const DISPLACED_DIR: &str = "displaced";

/// The mark of a restore that may still set files aside in a run's directory: `.restore-running-<pid>`.
const RUNNING: &str = ".restore-running-";

/// This process's mark.
fn running_mark() -> String {
    format!("{RUNNING}{}", std::process::id())
}

/// Removes this run's mark from `run_dir`: what it kept is listed now (in its output and the run log).
pub fn listed(run_dir: &Path) {
    let _ = std::fs::remove_file(run_dir.join(running_mark()));
}

/// The directories of `<backup_root>/displaced/` in which a restore that was killed before it could list them set
/// files aside (its mark is there, and its process no longer runs), by name.
pub fn unlisted(backup_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(backup_root.join(DISPLACED_DIR)) else {
        return Vec::new();
    };
    let dead_mark = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(RUNNING))
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| {
                        e.file_type().is_ok_and(|t| t.is_file()) && crate::stdx::process_gone(pid)
                    })
            })
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|d| dead_mark(d))
        .collect();
    dirs.sort();
    dirs
}

/// What a user is told of `dir`, one of [`unlisted`] (by `restore` and `status`).
pub fn unlisted_line(dir: &Path) -> String {
    format!(
        "files set aside by an interrupted restore are in {} (it was stopped before it could list them): copy back \
         what you need with cp -a, and delete the directory once you no longer need it",
        crate::stdx::show_path(dir)
    )
}

/// Forgets that `dir` was left unlisted, once the user was told where it is: the marks of the dead runs removed.
pub fn told(dir: &Path) {
    crate::stdx::fs::remove_dead_temporaries(dir, RUNNING);
}

/// One file a restore replaced, and where the one that was there is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Displaced {
    /// Where it was (and where the restored file now is).
    pub path: String,
    /// Where the one that was there is now.
    pub kept: String,
    /// `link` (same filesystem: the very file) or `copy` (another filesystem).
    pub how: &'static str,
}

/// The directory for one restore's kept files: `<backup_root>/displaced/<stamp>`, or `<stamp>-2`, `<stamp>-3`, ...
/// when an earlier run of the same second has it already.
pub fn run_dir(backup_root: &Path, stamp: &str) -> PathBuf {
    let base = backup_root.join(DISPLACED_DIR);
    let mut dir = base.join(stamp);
    let mut n = 2;
    while std::fs::symlink_metadata(&dir).is_ok() {
        dir = base.join(format!("{stamp}-{n}"));
        n += 1;
    }
    dir
}

/// Where the file at the absolute path `original` is kept under `run_dir`.
pub fn kept_path(run_dir: &Path, original: &Path) -> PathBuf {
    run_dir.join(original.strip_prefix("/").unwrap_or(original))
}

/// Keeps files before they are replaced (see the module documentation).
pub struct Keeper {
    dir: TargetDir,
    privileged: bool,
    fsync: bool,
    /// This run's mark is in the directory.
    marked: bool,
    /// What was kept, in order.
    pub kept: Vec<Displaced>,
}

impl Keeper {
    /// A keeper into `run_dir` (made, owner-only, when the first file is kept).
    pub fn new(run_dir: &Path, privileged: bool, fsync: bool) -> io::Result<Keeper> {
        Ok(Keeper {
            dir: TargetDir::open(run_dir)?,
            privileged,
            fsync,
            marked: false,
            kept: Vec::new(),
        })
    }

    /// Puts this run's mark in the run's directory (made already), before anything is kept there.
    fn mark(&mut self) -> Result<(), String> {
        if self.marked {
            return Ok(());
        }
        let root = self.dir.dir(&RelPath::root(), false).map_err(walk)?;
        rustix::fs::openat(
            root,
            running_mark().as_str(),
            OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| {
            format!(
                "cannot write {}: {e}",
                show(
                    self.dir
                        .path()
                        .join(running_mark())
                        .as_os_str()
                        .as_encoded_bytes()
                )
            )
        })?;
        self.marked = true;
        Ok(())
    }

    /// Keeps `name` in `parent`, which is `found` (as planned and checked just before) and lies at the absolute
    /// path `original`. On error nothing was kept, and the caller must not replace it.
    pub fn keep(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        found: &Found,
        original: &Path,
    ) -> Result<(), String> {
        let abs = original.as_os_str().as_encoded_bytes();
        let rel = super::safety::check_name(abs, Some(b"/"))
            .map_err(|e| format!("cannot name where to keep it: {e}"))?;
        let kept_at = self.dir.full_path(&rel);
        let shown = show(kept_at.as_os_str().as_encoded_bytes());
        let (drel, dname) = rel
            .split_last()
            .ok_or_else(|| "cannot keep the root directory".to_string())?;
        self.dir
            .create_root()
            .map_err(|e| format!("cannot make {}: {e}", self.dir.path().display()))?;
        self.mark()?;
        let dparent = match self.dir.dir(&drel, true) {
            Ok(fd) => fd,
            Err(WalkError::Symlink(p)) => {
                return Err(format!(
                    "{} is a symlink: nothing is kept through one",
                    show(self.dir.full_path(&p).as_os_str().as_encoded_bytes())
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot make the directory to keep it in: {}",
                    walk(e)
                ));
            }
        };
        let how = match rustix::fs::linkat(parent, name, dparent, dname, AtFlags::empty()) {
            Ok(()) => "link",
            Err(Errno::EXIST) => return Err(format!("{shown} exists already")),
            // Another filesystem, or one (or a policy) that allows no hard link here: a copy.
            Err(Errno::XDEV | Errno::PERM | Errno::OPNOTSUPP | Errno::MLINK | Errno::ACCESS) => {
                copy(
                    parent,
                    name,
                    found,
                    dparent,
                    dname,
                    self.privileged,
                    self.fsync,
                )
                .map_err(|e| format!("cannot copy it to {shown}: {e}"))?;
                "copy"
            }
            Err(e) => return Err(format!("cannot keep it at {shown}: {e}")),
        };
        self.kept.push(Displaced {
            path: show(abs),
            kept: shown,
            how,
        });
        Ok(())
    }
}

fn walk(e: WalkError) -> String {
    match e {
        WalkError::Io(_, e) => e.to_string(),
        WalkError::Symlink(p) => format!("{} is a symlink", p.display()),
        WalkError::NotDir(p, k) => format!("{} is a {}", p.display(), k.word()),
        WalkError::Missing(p) => format!("{} is missing", p.display()),
    }
}

/// Copies `name` in `parent` (a file, symlink or fifo: `found`) to `dname` in `dparent` with its mode, mtime and
/// (privileged) owner; a file through a temporary name, renamed into place only once complete.
fn copy(
    parent: BorrowedFd<'_>,
    name: &[u8],
    found: &Found,
    dparent: BorrowedFd<'_>,
    dname: &[u8],
    privileged: bool,
    fsync: bool,
) -> io::Result<()> {
    let times = times(found.mtime, false);
    let owner = |fd: BorrowedFd<'_>, at: &[u8], flags: AtFlags| -> Result<(), Errno> {
        if privileged {
            rustix::fs::chownat(
                fd,
                at,
                Some(rustix::fs::Uid::from_raw(found.uid)),
                Some(rustix::fs::Gid::from_raw(found.gid)),
                flags,
            )?;
        }
        Ok(())
    };
    match found.kind {
        FoundKind::File => {
            let src = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = Found::from(rustix::fs::fstat(&src)?);
            if (st.dev, st.ino) != (found.dev, found.ino) {
                return Err(io::Error::other("it changed while being kept"));
            }
            let mut src = File::from(src);
            let mut out = None;
            let tmp = with_temp_name(|t| {
                let fd = rustix::fs::openat(
                    dparent,
                    t,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                out = Some(File::from(fd));
                Ok(())
            })?;
            let result = (|| -> io::Result<()> {
                let mut dst = out.take().ok_or_else(|| io::Error::other("no file"))?;
                copy_content(&mut src, &mut dst)?;
                copy_xattrs(&src, &dst, privileged);
                if fsync {
                    dst.sync_all()?;
                }
                let fd = dst.as_fd();
                if privileged {
                    rustix::fs::fchown(
                        fd,
                        Some(rustix::fs::Uid::from_raw(found.uid)),
                        Some(rustix::fs::Gid::from_raw(found.gid)),
                    )?;
                }
                rustix::fs::fchmod(fd, Mode::from_raw_mode(found.mode))?;
                rustix::fs::futimens(fd, &times)?;
                rustix::fs::renameat_with(
                    dparent,
                    tmp.as_str(),
                    dparent,
                    dname,
                    RenameFlags::NOREPLACE,
                )?;
                Ok(())
            })();
            if result.is_err() {
                let _ = rustix::fs::unlinkat(dparent, tmp.as_str(), AtFlags::empty());
            }
            result
        }
        FoundKind::Symlink => {
            let target = rustix::fs::readlinkat(parent, name, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), dparent, dname)?;
            owner(dparent, dname, AtFlags::SYMLINK_NOFOLLOW)?;
            rustix::fs::utimensat(dparent, dname, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(())
        }
        FoundKind::Fifo => {
            rustix::fs::mknodat(
                dparent,
                dname,
                FileType::Fifo,
                Mode::from_raw_mode(found.mode),
                0,
            )?;
            owner(dparent, dname, AtFlags::SYMLINK_NOFOLLOW)?;
            rustix::fs::chmodat(
                dparent,
                dname,
                Mode::from_raw_mode(found.mode),
                AtFlags::empty(),
            )?;
            rustix::fs::utimensat(dparent, dname, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(())
        }
        other => Err(io::Error::other(format!(
            "a {} cannot be copied to keep it",
            other.word()
        ))),
    }
}

/// The content of `src` into the new file `dst`: a file with holes by its data segments alone (`SEEK_DATA`/
/// `SEEK_HOLE`), so the holes stay holes (a sparse VM disk costs its data, not its size); any other whole.
fn copy_content(src: &mut File, dst: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let meta = src.metadata()?;
    if !crate::archive::sparse::worth_checking_any(&meta) {
        io::copy(src, dst)?;
        return Ok(());
    }
    let map = crate::archive::sparse::map_file(src, meta.len())?;
    let mut buf = vec![0u8; 1 << 20];
    for seg in map.segments() {
        let mut at = seg.offset;
        let end = seg.offset + seg.len;
        while at < end {
            let want = buf.len().min((end - at).min(usize::MAX as u64) as usize);
            let n = match src.read_at(&mut buf[..want], at) {
                Ok(0) => return Err(io::Error::other("it changed while being kept")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dst.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
    }
    dst.set_len(map.size())
}

/// The extended attributes and ACLs of `src` onto `dst`, as the hard link made on the same filesystem keeps them:
/// every name a restore could set (`user.*` and the ACLs; every name when `privileged`). Best effort: one the
/// backup root's filesystem cannot hold is left out, since what must be kept is the content, mode and mtime.
fn copy_xattrs(src: &File, dst: &File, privileged: bool) {
    // XATTR_LIST_MAX and XATTR_SIZE_MAX: the most a list or a value can be.
    let mut names = vec![0u8; 64 << 10];
    let Ok(n) = rustix::fs::flistxattr(src, &mut names) else {
        return;
    };
    let mut value = vec![0u8; 64 << 10];
    for name in names[..n.min(names.len())].split(|&b| b == 0) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let settable = name.starts_with("user.") || name.starts_with("system.posix_acl_");
        if name.is_empty() || !(privileged || settable) {
            continue;
        }
        if let Ok(len) = rustix::fs::fgetxattr(src, name, &mut value) {
            let _ = rustix::fs::fsetxattr(
                dst,
                name,
                &value[..len.min(value.len())],
                rustix::fs::XattrFlags::empty(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn found(dir: &Path, name: &str) -> Found {
        Found::from(rustix::fs::lstat(dir.join(name)).unwrap())
    }

    #[test]
    fn a_run_directory_is_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = run_dir(tmp.path(), "2025-04-01-031500");
        assert_eq!(first, tmp.path().join("displaced/2025-04-01-031500"));
        std::fs::create_dir_all(&first).unwrap();
        assert_eq!(
            run_dir(tmp.path(), "2025-04-01-031500"),
            tmp.path().join("displaced/2025-04-01-031500-2")
        );
        assert_eq!(
            kept_path(&first, Path::new("/home/u/x")),
            first.join("home/u/x")
        );
    }

    #[test]
    fn files_symlinks_and_fifos_are_kept_as_they_were() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("file"), b"newer work").unwrap();
        std::fs::set_permissions(dest.join("file"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("somewhere", dest.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dest.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let parent =
            rustix::fs::open(&dest, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let run = tmp.path().join("root/displaced/1");
        let mut keeper = Keeper::new(&run, false, false).unwrap();

        // Same filesystem: the very file, linked.
        let f = found(&dest, "file");
        keeper
            .keep(parent.as_fd(), b"file", &f, &dest.join("file"))
            .unwrap();
        let kept = kept_path(&run, &dest.join("file"));
        assert_eq!(std::fs::metadata(&kept).unwrap().ino(), f.ino);
        assert_eq!(keeper.kept[0].how, "link");
        // A second keep of the same path is refused, never overwritten.
        let err = keeper
            .keep(parent.as_fd(), b"file", &f, &dest.join("file"))
            .unwrap_err();
        assert!(err.contains("exists already"), "{err}");
        let mode = std::fs::metadata(run.parent().unwrap()).unwrap().mode();
        assert_eq!(mode & 0o077, 0, "displaced/ is owner-only");

        // Copies (another filesystem): content, mode and mtime, whatever the kind.
        let into = tmp.path().join("copies");
        std::fs::create_dir(&into).unwrap();
        for name in ["file", "link", "fifo"] {
            let f = copy_into(&dest, &into, name, true);
            let c = found(&into, name);
            assert_eq!(
                (c.kind, c.mode, c.mtime),
                (f.kind, f.mode, f.mtime),
                "{name}"
            );
            assert_ne!(c.ino, f.ino);
        }
        assert_eq!(std::fs::read(into.join("file")).unwrap(), b"newer work");
        assert_eq!(
            std::fs::read_link(into.join("link")).unwrap(),
            Path::new("somewhere")
        );
        let dparent =
            rustix::fs::open(&into, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(
            copy(
                parent.as_fd(),
                b"file",
                &found(&dest, "file"),
                dparent.as_fd(),
                b"file",
                false,
                true
            )
            .is_err(),
            "never over an existing name"
        );
    }

    /// A temporary directory with `dest/` (the restore's target) and `copies/` (where files are kept) in it.
    fn copy_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (dest, into) = (tmp.path().join("dest"), tmp.path().join("copies"));
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&into).unwrap();
        (tmp, dest, into)
    }

    /// Keeps `name` of directory `dest` by copy into directory `into` (as across filesystems), synced to disk or not;
    /// what was found.
    fn copy_into(dest: &Path, into: &Path, name: &str, fsync: bool) -> Found {
        let parent =
            rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let dparent =
            rustix::fs::open(into, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let f = found(dest, name);
        copy(
            parent.as_fd(),
            name.as_bytes(),
            &f,
            dparent.as_fd(),
            name.as_bytes(),
            false,
            fsync,
        )
        .unwrap();
        f
    }

    /// A sparse file kept by copy (the backup root on another filesystem) keeps its holes: a 64 MiB file holding a
    /// few bytes takes a few KiB in `displaced/`, not 64 MiB. Before: `io::copy` wrote every hole out as zeros.
    #[test]
    fn a_sparse_file_is_copied_with_its_holes() {
        use std::os::unix::fs::FileExt;
        let (_tmp, dest, into) = copy_dirs();
        let f = File::create(dest.join("vm.img")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 20 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(
            allocated(&dest.join("vm.img")) < 1 << 20,
            "the test's filesystem keeps holes"
        );
        let f = copy_into(&dest, &into, "vm.img", false);
        let kept = into.join("vm.img");
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            std::fs::read(dest.join("vm.img")).unwrap()
        );
        assert!(
            allocated(&kept) < 1 << 20,
            "{} bytes allocated for 14 bytes of data",
            allocated(&kept)
        );
        let c = found(&into, "vm.img");
        assert_eq!((c.mode, c.mtime), (f.mode, f.mtime));
    }

    /// A file kept by copy keeps its extended attributes and ACLs, as the hard link made on the same filesystem
    /// does. Before: the copy had its content, mode and mtime only, so the ACL and `user.*` attributes of the
    /// newer work it kept were gone.
    #[test]
    fn a_copy_keeps_the_attributes_and_acls() {
        let (_tmp, dest, into) = copy_dirs();
        std::fs::write(dest.join("shared.txt"), b"newer work").unwrap();
        let acl = crate::archive::acl::from_text(
            "user::rw-\nuser:65534:r--\ngroup::r--\nmask::r--\nother::r--",
        )
        .unwrap();
        let path = dest.join("shared.txt");
        for (name, value) in [
            ("user.color", &b"red"[..]),
            ("system.posix_acl_access", &acl[..]),
        ] {
            rustix::fs::setxattr(&path, name, value, rustix::fs::XattrFlags::empty())
                .expect("the temporary directory's filesystem holds xattrs and ACLs");
        }
        copy_into(&dest, &into, "shared.txt", false);
        let kept = into.join("shared.txt");
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::getxattr(&kept, "user.color", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"red");
        let n = rustix::fs::getxattr(&kept, "system.posix_acl_access", &mut buf).unwrap();
        assert_eq!(&buf[..n], &acl[..]);
    }
}
