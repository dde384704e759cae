//! Read-back verification: re-read files just written to the drive from the device, not from the page cache, and
//! compare their length and sha256 with what was computed while writing them.
//!
//! Each file is fsynced, its cached pages are dropped (`posix_fadvise(DONTNEED)`), and it is read with `O_DIRECT`
//! where the filesystem supports it; elsewhere (FUSE filesystems such as exfat-fuse often refuse `O_DIRECT`) it is
//! read through the now-empty page cache, dropping pages behind the read so a large archive does not evict
//! everything else. Note: a FUSE filesystem's daemon may still be served by the cache of the block device under it;
//! [`drop_device_cache`] drops that one too, for callers that know the device.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::sink::{Digest, WrittenFile};
use crate::stdx::fs::Dir;

/// How a file was read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadBackMethod {
    /// `O_DIRECT`: straight from the device.
    Direct,
    /// Through the page cache, after dropping the file's cached pages.
    DroppedCache,
}

/// A file on the drive that does not hold what was written.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("cannot read back {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} reads back as {actual} bytes, {expected} were written; the drive lost data")]
    Length {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{path} reads back with sha256 {actual}, {expected} was written; the drive corrupted it"
    )]
    Mismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
}

/// Reads every file back from the drive and compares it with what was written. Returns how each was read.
pub fn read_back(files: &[WrittenFile]) -> Result<Vec<ReadBackMethod>, ReadBackError> {
    read_back_with(files, |f| {
        let (dir, name) = split(&f.path)?;
        hash_uncached_in(&dir, name)
    })
}

/// [`read_back`] of files that were written in the open directory `dir` (each opened there by its file name, never
/// through a symlink).
pub fn read_back_in(
    dir: &Dir,
    files: &[WrittenFile],
) -> Result<Vec<ReadBackMethod>, ReadBackError> {
    read_back_in_with(dir, files, &mut |_| {})
}

/// [`read_back_in`], telling `progress` each chunk's size as it is read (for a progress line).
pub fn read_back_in_with(
    dir: &Dir,
    files: &[WrittenFile],
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<ReadBackMethod>, ReadBackError> {
    read_back_with(files, |f| {
        let name = f
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        hash_uncached_with(dir, name, progress)
    })
}

fn read_back_with(
    files: &[WrittenFile],
    mut hash: impl FnMut(&WrittenFile) -> io::Result<(u64, Digest, ReadBackMethod)>,
) -> Result<Vec<ReadBackMethod>, ReadBackError> {
    let mut methods = Vec::with_capacity(files.len());
    for f in files {
        let io_err = |source| ReadBackError::Io {
            path: f.path.clone(),
            source,
        };
        let (bytes, sha256, method) = hash(f).map_err(io_err)?;
        if bytes != f.bytes {
            return Err(ReadBackError::Length {
                path: f.path.clone(),
                expected: f.bytes,
                actual: bytes,
            });
        }
        if sha256 != f.sha256 {
            return Err(ReadBackError::Mismatch {
                path: f.path.clone(),
                expected: f.sha256,
                actual: sha256,
            });
        }
        methods.push(method);
    }
    Ok(methods)
}

const CHUNK: usize = 4 << 20;
const ALIGN: usize = 4096;
const DROP_BEHIND: u64 = 64 << 20;

/// The directory holding `path`, opened, and the file name.
fn split(path: &Path) -> io::Result<(Dir, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((Dir::open(parent)?, name))
}

/// Length and sha256 of a file, read past the page cache (see the module docs). The tests' entry; runs use
/// [`hash_uncached_in`].
#[cfg(test)]
pub fn hash_uncached(path: &Path) -> io::Result<(u64, Digest, ReadBackMethod)> {
    let (dir, name) = split(path)?;
    hash_uncached_in(&dir, name)
}

/// `hash_uncached` of the regular file `name` in `dir`, never opened through a symlink.
pub fn hash_uncached_in(dir: &Dir, name: &OsStr) -> io::Result<(u64, Digest, ReadBackMethod)> {
    hash_uncached_with(dir, name, &mut |_| {})
}

/// [`hash_uncached_in`], telling `progress` each chunk's size as it is read. A read that falls back from `O_DIRECT`
/// after its first chunk starts over: `progress` may then hear a few bytes twice.
fn hash_uncached_with(
    dir: &Dir,
    name: &OsStr,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(u64, Digest, ReadBackMethod)> {
    {
        let f = dir.open_file(name)?;
        f.sync_all()?;
        fadvise(&f, 0, 0, rustix::fs::Advice::DontNeed);
    }
    if let Ok(mut f) = dir.open_file_with(name, rustix::fs::OFlags::DIRECT) {
        match hash_reader(&mut f, None, progress) {
            Ok((n, d)) => return Ok((n, d, ReadBackMethod::Direct)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut f = dir.open_file(name)?;
    fadvise(&f, 0, 0, rustix::fs::Advice::DontNeed);
    fadvise(&f, 0, 0, rustix::fs::Advice::Sequential);
    let (n, d) = hash_reader(&mut f, Some(DROP_BEHIND), progress)?;
    Ok((n, d, ReadBackMethod::DroppedCache))
}

/// A buffer aligned for `O_DIRECT`.
struct Aligned {
    store: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let store = vec![0u8; CHUNK + ALIGN];
        let start = store.as_ptr().align_offset(ALIGN);
        Aligned {
            store,
            start,
            len: 0,
        }
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.store[self.start..self.start + CHUNK]
    }

    fn data(&self) -> &[u8] {
        &self.store[self.start..self.start + self.len]
    }
}

/// Reads `f` to its end in [`CHUNK`]s while another thread hashes them, so the drive never waits for the hash.
fn hash_reader(
    f: &mut File,
    drop_behind: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(u64, Digest)> {
    let (full_tx, full_rx) = sync_channel::<Aligned>(2);
    let (free_tx, free_rx) = sync_channel::<Aligned>(3);
    for _ in 0..3 {
        free_tx.send(Aligned::new()).expect("room");
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for block in full_rx {
                hasher.update(block.data());
                let _ = free_tx.send(block);
            }
            Digest::of(hasher)
        });
        let mut total = 0u64;
        let mut dropped = 0u64;
        let read_all: io::Result<()> = (|| {
            loop {
                // SIGINT or SIGTERM: stop between chunks (what was being read back is not promoted).
                crate::interrupt::check_io()?;
                let mut block = free_rx
                    .recv()
                    .map_err(|_| io::Error::other("the read-back hasher stopped"))?;
                let n = loop {
                    match f.read(block.buf()) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                };
                if n == 0 {
                    return Ok(());
                }
                block.len = n;
                total += n as u64;
                progress(n as u64);
                full_tx
                    .send(block)
                    .map_err(|_| io::Error::other("the read-back hasher stopped"))?;
                if let Some(step) = drop_behind
                    && total - dropped >= step
                {
                    fadvise(f, dropped, total - dropped, rustix::fs::Advice::DontNeed);
                    dropped = total;
                }
            }
        })();
        drop(full_tx);
        let digest = hasher
            .join()
            .map_err(|_| io::Error::other("the read-back hasher panicked"))?;
        read_all?;
        if drop_behind.is_some() {
            fadvise(f, 0, 0, rustix::fs::Advice::DontNeed);
        }
        Ok((total, digest))
    })
}

/// Advice to the kernel about a file's cache; best effort (filesystems may ignore it). A `len` of 0 means to the end.
fn fadvise(f: &File, offset: u64, len: u64, advice: rustix::fs::Advice) {
    let _ = rustix::fs::fadvise(f, offset, std::num::NonZeroU64::new(len), advice);
}

/// Drops the clean cached pages of a block device (the device under a FUSE filesystem), so that reading a file
/// back through the filesystem reaches the hardware. Needs read access to the device (root).
pub fn drop_device_cache(device: &Path) -> io::Result<()> {
    let f = File::open(device)?;
    f.sync_all()?;
    fadvise(&f, 0, 0, rustix::fs::Advice::DontNeed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 511, 4096, CHUNK - 1, CHUNK + 1] {
            let p = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            std::fs::write(&p, &bytes).unwrap();
            let (n, d, _) = hash_uncached(&p).unwrap();
            assert_eq!(
                (n, d),
                (len as u64, Digest::of_bytes(&bytes)),
                "{len} bytes"
            );
        }
    }
}
