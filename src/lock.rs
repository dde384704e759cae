//! The one lock that keeps two dbackup runs apart: `flock` on `<backup_root>/.lock`, holding the holder's pid.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::exit::{Exit, ExitCoded};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another dbackup run (pid {pid}) holds {path}; wait for it to finish, or stop it")]
    Held { path: PathBuf, pid: String },
    #[error("cannot open lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ExitCoded for LockError {
    fn exit(&self) -> Exit {
        match self {
            LockError::Held { .. } => Exit::Locked,
            LockError::Io { .. } => Exit::Failed,
        }
    }
}

/// Held for the life of a run; the kernel releases the flock when the process ends, even on kill -9.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock in `dir` (which must exist) at once, or fails with [`LockError::Held`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(".lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held(file, path)),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        write_pid(&mut file).map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    /// Takes the lock shared, for a run that only reads backups (a restore, a verify): any number of them at once,
    /// while a run that writes or prunes ([`RunLock::acquire`]) cannot start (exit 4, naming the pid the last
    /// holder wrote) until they end, so that its retention never removes a backup a restore is reading.
    /// `Ok(None)`: `dir` does not exist (no backup root yet: nothing to protect). [`LockError::Held`]: a run that
    /// writes holds it now.
    pub fn share(dir: &Path) -> Result<Option<RunLock>, LockError> {
        let path = dir.join(".lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held(file, path)),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        write_pid(&mut file).map_err(io)?;
        Ok(Some(RunLock { _file: file, path }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file (0600), created when missing.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The holder's pid, for the message of a run that finds the lock held.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// [`LockError::Held`], naming the pid the holder wrote.
fn held(mut file: File, path: PathBuf) -> LockError {
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    let pid = pid.trim().to_string();
    LockError::Held {
        path,
        pid: if pid.is_empty() {
            "unknown".into()
        } else {
            pid
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        match RunLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        RunLock::acquire(dir.path()).expect("free again after drop");
    }

    /// Readers share the lock with each other, never with a run that writes; no backup root, nothing to hold.
    #[test]
    fn a_shared_hold_keeps_writers_out_and_lets_readers_in() {
        let dir = tempfile::tempdir().unwrap();
        let one = RunLock::share(dir.path()).unwrap().expect("held");
        let two = RunLock::share(dir.path()).unwrap().expect("shared twice");
        assert!(matches!(
            RunLock::acquire(dir.path()),
            Err(LockError::Held { .. })
        ));
        drop((one, two));
        let writer = RunLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            RunLock::share(dir.path()),
            Err(LockError::Held { .. })
        ));
        drop(writer);
        assert!(RunLock::share(&dir.path().join("none")).unwrap().is_none());
    }
}
