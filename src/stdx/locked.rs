//! Read, change and write back a small state file one process at a time ([`change`]): `flock` on a sibling lock
//! file, waited for a bounded time. Also [`test_point`], where the tests of runs at once hold a run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a run waits for another's change of the same file (each takes milliseconds).
const WAIT: Duration = Duration::from_secs(30);

/// The lock file of `path`: `.<name>.lock` beside it.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.lock"))
}

/// Runs `change` (a read, change and write back of `path`, whose directory must exist) while no other process runs
/// one on the same file: it holds `flock` on [`lock_path`] (created 0600), released when it returns. Another run's
/// change is waited for, up to 30 s; then an error says so. Without it, two runs changing the file at once (two
/// `restore --verify` runs noting what they found) would each write back what it read, and one's change would be
/// lost.
pub fn change<T>(path: &Path, change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    change_within(path, WAIT, change)
}

fn change_within<T>(
    path: &Path,
    wait: Duration,
    change: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the lock file {}: {e}", lock.display()),
            )
        })?;
    hold(&file, &lock, path, wait)?;
    change()
}

/// Takes the lock on `file`, polling until `wait` has passed.
fn hold(file: &File, lock: &Path, path: &Path, wait: Duration) -> io::Result<()> {
    let until = Instant::now() + wait;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot lock {}: {e}", lock.display()),
                ));
            }
            Err(TryLockError::WouldBlock) if Instant::now() >= until => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another dbackup run has been changing {} for {} s (it holds {}); run this again when it \
                         has ended",
                        path.display(),
                        wait.as_secs(),
                        lock.display()
                    ),
                ));
            }
            Err(TryLockError::WouldBlock) => {
                if !waited {
                    waited = true;
                    test_point("locked-wait");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// For the tests of runs at once, in debug builds only: with `DBACKUP_TEST_POINTS=<dir>`, a run reaching the point
/// `name` creates `<dir>/<name>.reached`, and waits there while `<dir>/<name>.hold` exists (at most 5 minutes).
pub fn test_point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(dir) = std::env::var_os("DBACKUP_TEST_POINTS").map(PathBuf::from) else {
        return;
    };
    let _ = std::fs::write(
        dir.join(format!("{name}.reached")),
        std::process::id().to_string(),
    );
    let hold = dir.join(format!("{name}.hold"));
    let until = Instant::now() + Duration::from_secs(300);
    while hold.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change waits for another's (the lock is held by another open file here, as by another process), and when
    /// that does not end in time, fails saying who holds what and what to do; once released, it runs.
    #[test]
    fn a_change_waits_for_anothers_then_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let other = File::create(lock_path(&path)).unwrap();
        other.lock().unwrap();
        let e = change_within(&path, Duration::from_millis(100), || Ok(())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "another dbackup run has been changing {} for 0 s (it holds {}/.state.json.lock); run this again",
                path.display(),
                dir.path().display()
            )),
            "{text}"
        );
        other.unlock().unwrap();
        assert_eq!(
            change_within(&path, Duration::from_millis(100), || Ok(7)).unwrap(),
            7
        );
        // The lock is released when the change returns.
        other.try_lock().expect("free again");
    }
}
