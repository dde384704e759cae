//! Writing an archive: scan the snapshot (size estimate, hard links), then stream it as tar through the stage and
//! sink on a writer thread, with the index written alongside.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::incremental::{self, BaseCursor, BaseError, Decision, IncrementalBase, Seen};
use super::index::{IndexEnd, IndexEntry, IndexHeader, IndexWriter, SparseRecord};
use super::sink::{Chain, Digest, Sink, Stage, ThreadedSink, WRITE_BUFFER, WrittenFile};
use super::sparse::{self, SparseMap};
use super::tarfmt::{self, EntryKind, HeaderSpec};
use super::walk::{Meta, Step, Walk, Walked, Warning};

/// Blocks in flight between the tar thread and the writer thread (each [`WRITE_BUFFER`] bytes).
const PIPELINE_DEPTH: usize = 4;
/// At most this many warnings are kept in a summary (all are counted and passed to [`Progress::warning`]).
const MAX_KEPT_WARNINGS: usize = 100;

/// Receives progress of long work (scan, write, verify). Every method has a do-nothing default.
pub trait Progress {
    /// An entry was reached (archived, scanned or verified).
    fn entry(&mut self, _path: &[u8], _kind: EntryKind, _size: u64) {}
    /// `n` more content bytes were read.
    fn bytes(&mut self, _n: u64) {}
    /// Something was skipped or archived differently; see [`Warning`].
    fn warning(&mut self, _warning: &Warning) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Why writing an archive failed. Nothing it wrote may be used: the caller removes it.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path} is not a directory; give the snapshot directory to archive")]
    NotADirectory { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed while it was archived ({detail}); snapshots must not change: is another program writing into it?"
    )]
    Changed { path: PathBuf, detail: String },
    #[error("cannot write {target}: {source}")]
    Write { target: String, source: io::Error },
    #[error(transparent)]
    Base(#[from] BaseError),
}

/// What a scan found: the sizes to expect, before anything is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEstimate {
    /// Archive entries (everything but the root and skipped sockets).
    pub entries: u64,
    /// Regular files whose content is archived (second names of hard-linked files not counted).
    pub files: u64,
    /// Content bytes of those files.
    pub file_bytes: u64,
    /// Entries that will be archived as hard links to an earlier name.
    pub hard_links: u64,
    /// The exact length of the tar stream if the snapshot does not change (before any stage).
    pub tar_bytes: u64,
    /// The approximate length of the index.
    pub index_bytes: u64,
    /// Entries that will be skipped with a warning (sockets, unreadable).
    pub skipped: u64,
    /// Incremental: the files (and their bytes) left in earlier archives, as far as the scan can tell (a content
    /// comparison may leave more).
    #[serde(default)]
    pub referenced_files: u64,
    #[serde(default)]
    pub referenced_bytes: u64,
}

/// A scanned snapshot, ready to be written: see [`scan`] and [`write_archive`].
#[derive(Debug, Clone)]
pub struct ArchivePlan {
    pub root: PathBuf,
    pub estimate: ArchiveEstimate,
    /// (dev, ino) of files and symlinks with more than one name inside this snapshot, sorted. Only these are tracked while
    /// writing, so memory stays small even though every file of a hard-linked snapshot has nlink > 1.
    linked: Vec<(u64, u64)>,
}

/// Options of [`write_archive`].
#[derive(Default)]
pub struct ArchiveOptions<'a> {
    /// A stage between tar and the sinks (encryption, compression), applied to both the archive and the index.
    pub stage: Option<&'a dyn Stage>,
    /// Write an incremental archive against this base (the index becomes a complete manifest, version 2).
    pub base: Option<&'a IncrementalBase>,
    /// Where the index's plaintext also goes, before any stage: an encrypted set's local copy, which the next
    /// incremental reads as its base manifest without the identity (`external::index_copy`).
    pub index_copy: Option<&'a dyn Fn() -> io::Result<Box<dyn Sink>>>,
    /// Files left out, as paths inside the snapshot: a secret key going to an unencrypted destination. Left out by
    /// inode, so none of their names in the snapshot is stored.
    pub leave_out: &'a [PathBuf],
}

/// What a finished archive holds and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
    pub hard_links: u64,
    /// Length and sha256 of the tar stream (before any stage), as recorded at the end of the index. No hash for an
    /// encrypted archive (age authenticates the stream; a plaintext hash would let a guess be confirmed).
    pub tar_bytes: u64,
    pub tar_sha256: Option<Digest>,
    /// The archive file(s) as written to the drive, each with the sha256 of its bytes.
    pub archive_files: Vec<WrittenFile>,
    /// The index file(s).
    pub index_files: Vec<WrittenFile>,
    /// How many warnings there were, and the first ones.
    pub warning_count: u64,
    pub warnings: Vec<Warning>,
    /// Incremental: the files and bytes left in earlier archives, and every stamp the manifest may point into.
    pub referenced_files: u64,
    pub referenced_bytes: u64,
    pub depends_on: Vec<String>,
    /// The index's plaintext copy, when [`ArchiveOptions::index_copy`] asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_copy: Option<WrittenFile>,
}

fn kind_of(meta: &Meta) -> Option<EntryKind> {
    match meta.kind() {
        Some(EntryKind::Other(_)) | None => None, // sockets
        kind => kind,
    }
}

/// The walk of a snapshot, with the base's snapshot beside it when there is one (see [`super::walk`]).
fn walk(root: &Path, base: Option<&IncrementalBase>) -> Result<Walk, ArchiveError> {
    Walk::new(root, base.and_then(|b| b.snapshot.as_deref())).map_err(|source| ArchiveError::Read {
        path: root.into(),
        source,
    })
}

fn rdev_of(meta: &Meta) -> (u32, u32) {
    let rdev = meta.rdev();
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

fn entry_for(w: &Walked, kind: EntryKind) -> IndexEntry {
    IndexEntry {
        path: w.rel.clone(),
        kind,
        size: if kind == EntryKind::File {
            w.meta.size()
        } else {
            0
        },
        mode: w.meta.mode() & 0o7777,
        uid: w.meta.uid() as u64,
        gid: w.meta.gid() as u64,
        mtime: w.meta.mtime(),
        mtime_nsec: w.meta.mtime_nsec() as u32,
        link: None,
        sha256: None,
        rdev: matches!(kind, EntryKind::Char | EntryKind::Block).then(|| rdev_of(&w.meta)),
        attrs: None,
        header_offset: 0,
        data_offset: 0,
        sparse: None,
        stored_in: None,
    }
}

/// The bytes a file entry stores after its header: its content, or a sparse member's map and data.
fn stored_len(e: &IndexEntry) -> u64 {
    match (e.kind, e.sparse) {
        (EntryKind::File, Some(r)) => r.stored,
        (EntryKind::File, None) => e.size,
        _ => 0,
    }
}

/// The map to store an opened file with, when it is sparse enough ([`sparse::MIN_HOLE_BYTES`]).
fn sparse_map(file: &File, meta: &Metadata, path: &[u8]) -> io::Result<Option<SparseMap>> {
    if !sparse::worth_checking(meta) || !sparse::name_allows_sparse(path) {
        return Ok(None);
    }
    sparse::detect(file, meta.size(), sparse::MIN_HOLE_BYTES)
}

/// The index's record of a sparse member before it is written (its hash is not known yet).
fn sparse_record(map: &SparseMap) -> SparseRecord {
    SparseRecord {
        stored: map.encode_v1().len() as u64 + map.data_bytes(),
        stored_sha256: Digest([0; 32]),
    }
}

/// `e`'s tar header, encoded into `header` (cleared first): what the scan counts before it predicts offsets.
fn encode_into(header: &mut Vec<u8>, e: &IndexEntry, full: &Path) -> Result<(), ArchiveError> {
    header.clear();
    tarfmt::encode_header(&header_spec(e), header).map_err(|source| ArchiveError::Read {
        path: full.to_path_buf(),
        source,
    })
}

/// The length of the header blocks [`encode_into`] would write for `e` (a scan sizes the archive, writes nothing).
fn header_len(e: &IndexEntry, full: &Path) -> Result<u64, ArchiveError> {
    tarfmt::header_len(&header_spec(e)).map_err(|source| ArchiveError::Read {
        path: full.to_path_buf(),
        source,
    })
}

fn header_spec(e: &IndexEntry) -> HeaderSpec<'_> {
    HeaderSpec {
        path: &e.path,
        kind: e.kind,
        size: stored_len(e),
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
        link: e.link.as_deref(),
        rdev: e.rdev.unwrap_or((0, 0)),
        sparse: (e.kind == EntryKind::File && e.sparse.is_some()).then_some(e.size),
        attrs: e.attrs.as_deref(),
    }
}

/// Whether the entry's path in the base's snapshot is the same inode (`None`: the base's snapshot is gone).
fn same_inode(base: &IncrementalBase, w: &Walked) -> Option<bool> {
    base.snapshot.as_ref()?;
    Some(w.same_in_base.unwrap_or(false))
}

/// Whether `path`'s content hashes to the sha256 of `base`'s entry (a content comparison against the base).
fn content_equals(path: &Path, base: &IndexEntry, progress: &mut dyn Progress) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    // A sparse member's index gives its stored digest (only its data hashed): the file is hashed the same way, as
    // the writer would map it; mapped otherwise, or no longer sparse, it counts as changed.
    if base.sha256_is_stored() {
        return f.metadata().is_ok_and(|m| {
            super::sparse::stored_digest_of(&f, m.len(), &mut |n| progress.bytes(n))
                .is_ok_and(|d| d.is_some() && d == base.sha256)
        });
    }
    let mut buf = vec![0u8; 1 << 20];
    crate::stdx::sha256_reader(&mut f, &mut buf, |n| progress.bytes(n))
        .is_ok_and(|(_, d)| Some(Digest(d)) == base.sha256)
}

fn socket_warning(full: &Path) -> Warning {
    Warning {
        path: full.to_path_buf(),
        message: "is a socket; sockets cannot be archived; skipped".into(),
    }
}

/// Walks the snapshot once: counts entries and bytes, computes the tar length, and finds the files that have more
/// than one name inside the snapshot. Reads metadata and symlinks, not file contents.
pub fn scan(root: &Path, progress: &mut dyn Progress) -> Result<ArchivePlan, ArchiveError> {
    scan_against(root, None, progress)
}

/// [`scan`] of an incremental against `base`: the estimate counts only what will be stored (a file whose content
/// must be compared counts as stored: the estimate is an upper bound).
pub fn scan_against(
    root: &Path,
    base: Option<&IncrementalBase>,
    progress: &mut dyn Progress,
) -> Result<ArchivePlan, ArchiveError> {
    Ok(scan_walk(root, base, progress)?.0)
}

/// [`scan`] and [`scan_against`] in one walk: the plan with the full archive's estimate (what [`write_archive`]
/// needs, and the size of the full written if the base cannot be used after all), and the incremental's estimate.
/// The change detection of an incremental then costs one walk of the snapshot, not two.
pub fn scan_both(
    root: &Path,
    base: &IncrementalBase,
    progress: &mut dyn Progress,
) -> Result<(ArchivePlan, ArchiveEstimate), ArchiveError> {
    let (mut plan, full) = scan_walk(root, Some(base), progress)?;
    let incremental = std::mem::replace(&mut plan.estimate, full);
    Ok((plan, incremental))
}

/// The one walk of [`scan_against`]: the plan (its estimate the incremental's when there is a base), and the full
/// archive's estimate beside it (the same as the plan's without a base).
// Stays long: one walk, two estimates kept in step; split, they would drift apart.
fn scan_walk(
    root: &Path,
    base: Option<&IncrementalBase>,
    progress: &mut dyn Progress,
) -> Result<(ArchivePlan, ArchiveEstimate), ArchiveError> {
    let mut cursor = base.map(BaseCursor::open).transpose()?;
    let meta = std::fs::metadata(root).map_err(|source| ArchiveError::Read {
        path: root.into(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory { path: root.into() });
    }
    let mut est = ArchiveEstimate::default();
    // What a full archive of the same walk would be: every entry stored.
    let mut full = ArchiveEstimate::default();
    let mut full_offset = 0u64;
    // (dev, ino, content size, stored size, is a file, bytes it would take if stored after all: 0 unless the scan
    // left it in the base) of every file and symlink with nlink > 1 (`ln -P`, `cp -al` and `rsync -H` make
    // hard-linked symlinks): a few dozen bytes each, dropped at the end of the scan.
    let mut multi: Vec<(u64, u64, u64, u64, bool, u64)> = Vec::new();
    let mut offset = 0u64;
    for step in walk(root, base)? {
        let w = match step {
            Step::Entry(w) => w,
            Step::Warn(warn) => {
                progress.warning(&warn);
                continue;
            }
        };
        let Some(kind) = kind_of(&w.meta) else {
            est.skipped += 1;
            progress.warning(&socket_warning(&w.full));
            continue;
        };
        let mut e = entry_for(&w, kind);
        if kind == EntryKind::Symlink {
            match std::fs::read_link(&w.full) {
                Ok(t) => e.link = Some(t.into_os_string().into_vec_bytes()),
                Err(_) => {
                    est.skipped += 1;
                    continue;
                }
            }
            if w.meta.nlink() > 1 {
                multi.push((w.meta.dev(), w.meta.ino(), 0, 0, false, 0));
            }
        }
        // (An error is warned about when writing.)
        e.attrs = w.attrs().ok().flatten();
        if let (Some(c), Some(b), EntryKind::File) = (&mut cursor, base, kind) {
            let found = c.find(&e.path)?;
            let seen = Seen {
                entry: &e,
                linked: false,
                same_inode: same_inode(b, &w),
            };
            if let (Decision::Unchanged, Some(f)) = (
                incremental::decide(seen, found.as_ref(), b.method()),
                &found,
            ) {
                est.referenced_files += 1;
                est.referenced_bytes += e.size;
                est.entries += 1;
                est.index_bytes += IndexWriter::<Vec<u8>>::line_len(&e) + 32;
                // The full stores it as the base does (the same content: sparse or not).
                e.sparse = f.sparse;
                let header = header_len(&e, &w.full)?;
                let stored = stored_len(&e);
                let len = header + stored + tarfmt::padding(stored);
                if w.meta.nlink() > 1 {
                    // Stored after all if it has another name here: see below.
                    multi.push((w.meta.dev(), w.meta.ino(), e.size, stored, true, len));
                }
                e.header_offset = full_offset;
                e.data_offset = full_offset + header;
                e.sha256 = Some(Digest([0; 32]));
                full_offset += len;
                full.files += 1;
                full.file_bytes += e.size;
                full.entries += 1;
                full.index_bytes += IndexWriter::<Vec<u8>>::line_len(&e);
                progress.entry(&e.path, kind, e.size);
                continue;
            }
        }
        if kind == EntryKind::File {
            // A sparse file is opened and mapped now, so that the length predicted is the length written.
            if sparse::worth(w.meta.is_file(), w.meta.blocks(), w.meta.size())
                && let Ok(f) = File::open(&w.full)
                && let Ok(m) = f.metadata()
                && let Ok(Some(map)) = sparse_map(&f, &m, &e.path)
            {
                e.sparse = Some(sparse_record(&map));
            }
            est.files += 1;
            est.file_bytes += e.size;
            full.files += 1;
            full.file_bytes += e.size;
            if w.meta.nlink() > 1 {
                multi.push((w.meta.dev(), w.meta.ino(), e.size, stored_len(&e), true, 0));
            }
        }
        let header = header_len(&e, &w.full)?;
        e.header_offset = offset;
        e.data_offset = offset + header;
        if kind == EntryKind::File {
            e.sha256 = Some(Digest([0; 32]));
        }
        let stored = stored_len(&e);
        let len = header + stored + tarfmt::padding(stored);
        offset = e.data_offset + stored + tarfmt::padding(stored);
        let line = IndexWriter::<Vec<u8>>::line_len(&e);
        est.index_bytes += line;
        est.entries += 1;
        // The same entry in the full (its offsets differ by at most a few digits in the index line).
        full_offset += len;
        full.index_bytes += line;
        full.entries += 1;
        progress.entry(&e.path, kind, e.size);
    }
    multi.sort_unstable();
    let mut linked = Vec::new();
    for group in multi.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        if group.len() > 1 {
            // Names the scan left in the base are stored after all when the file has another name here.
            let left: Vec<_> = group.iter().filter(|g| g.5 > 0).collect();
            let n = left.len() as u64;
            est.referenced_files -= n;
            est.referenced_bytes -= n * group[0].2;
            est.files += n;
            est.file_bytes += n * group[0].2;
            offset += left.iter().map(|g| g.5).sum::<u64>();
            linked.push((group[0].0, group[0].1));
            let extra = group.len() as u64 - 1;
            est.hard_links += extra;
            full.hard_links += extra;
            if group[0].4 {
                est.files -= extra;
                est.file_bytes -= extra * group[0].2;
                full.files -= extra;
                full.file_bytes -= extra * group[0].2;
            }
            // A link has no content; its header is about the size of the file's (the link target may need a
            // pax record the file did not, so this is an estimate by a block or two per link).
            offset -= extra * (group[0].3 + tarfmt::padding(group[0].3));
            full_offset -= extra * (group[0].3 + tarfmt::padding(group[0].3));
        }
    }
    est.tar_bytes = offset + tarfmt::trailer_len(offset);
    est.index_bytes += 1024;
    full.tar_bytes = full_offset + tarfmt::trailer_len(full_offset);
    full.index_bytes += 1024;
    full.skipped = est.skipped;
    Ok((
        ArchivePlan {
            root: root.to_path_buf(),
            estimate: est,
            linked,
        },
        full,
    ))
}

trait IntoVecBytes {
    fn into_vec_bytes(self) -> Vec<u8>;
}

impl IntoVecBytes for std::ffi::OsString {
    fn into_vec_bytes(self) -> Vec<u8> {
        use std::os::unix::ffi::OsStringExt;
        self.into_vec()
    }
}

/// The first name of a hard-linked file or symlink, for its later names.
struct FirstName {
    path: Vec<u8>,
    size: u64,
    /// `None` for a symlink: a hard link to one has no content (the index line carries no sha256).
    sha256: Option<Digest>,
    data_offset: u64,
    sparse: Option<SparseRecord>,
}

impl FirstName {
    /// `e`, a later name of the same inode, as a hard link to this first name (GNU tar's `1` entry: a hard link to a
    /// symlink is one too, as `tar` writes it and `linkat` recreates it).
    fn link(&self, e: &mut IndexEntry) {
        e.kind = EntryKind::Hardlink;
        e.link = Some(self.path.clone());
        e.size = self.size;
        e.sha256 = self.sha256;
        e.sparse = self.sparse;
    }
}

/// Streams the tar bytes to a writer thread in [`WRITE_BUFFER`]-sized blocks; the thread runs the stage and sink, so
/// reading and hashing the snapshot overlaps with encrypting, hashing and writing what reaches the drive. When the
/// sink's own hash is not the tar stream's (a stage, or several parts), the stream is hashed here, on the calling
/// thread, as each block is sent: the writer thread already hashes the sink's bytes and runs the stage, and it is
/// the slower of the two (with age, a second hash there made encrypted backups a third slower on two cores).
struct Pipeline {
    /// The hash of the tar stream, when the sink's own hash is not it.
    hasher: Option<Sha256>,
    tx: Option<SyncSender<Block>>,
    free: Receiver<Block>,
    thread: Option<JoinHandle<io::Result<ThreadOutput>>>,
    block: Block,
    offset: u64,
    target: String,
}

struct Block {
    buf: Box<[u8]>,
    len: usize,
    /// The last block: only after it does the writer thread finish the chain (stage trailer, fsync). A thread whose
    /// channel closes without it drops the chain unfinished, so a failed run never looks complete.
    last: bool,
}

struct ThreadOutput {
    files: Vec<WrittenFile>,
    /// The hash of the tar stream when the pipeline computed it (stage present or several files).
    tar_sha256: Option<Digest>,
}

impl Pipeline {
    fn start(sink: Box<dyn Sink>, stage: Option<&dyn Stage>) -> io::Result<Pipeline> {
        let target = sink.describe();
        // A plain archive in parts gets a hash of the whole stream. An encrypted one does not: age authenticates
        // every chunk and the end of the stream, and a hash of the plaintext beside the ciphertext would let anyone
        // holding the drive confirm a guess of the contents (it would also cost a third sha256 pass).
        let hash_stream = stage.is_none() && !sink.single_file();
        // Behind a stage, the sink (its hash and the writes) gets a thread of its own: the stage alone keeps one
        // core busy.
        let sink: Box<dyn Sink> = match stage {
            Some(_) => Box::new(ThreadedSink::spawn(sink)?),
            None => sink,
        };
        let mut chain = Chain::new(sink, stage)?;
        let (tx, rx) = sync_channel::<Block>(PIPELINE_DEPTH);
        let (free_tx, free) = sync_channel::<Block>(PIPELINE_DEPTH + 1);
        for _ in 0..PIPELINE_DEPTH {
            free_tx
                .send(Block {
                    buf: vec![0u8; WRITE_BUFFER].into_boxed_slice(),
                    len: 0,
                    last: false,
                })
                .expect("room");
        }
        let thread = std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || {
                for mut block in rx {
                    chain.write_all(&block.buf[..block.len])?;
                    if block.last {
                        let files = chain.finish()?;
                        return Ok(ThreadOutput {
                            files,
                            tar_sha256: None,
                        });
                    }
                    block.len = 0;
                    let _ = free_tx.send(block);
                }
                Err(io::Error::other("the archive was abandoned before its end"))
            })?;
        Ok(Pipeline {
            hasher: hash_stream.then(Sha256::new),
            tx: Some(tx),
            free,
            thread: Some(thread),
            block: Block {
                buf: vec![0u8; WRITE_BUFFER].into_boxed_slice(),
                len: 0,
                last: false,
            },
            offset: 0,
            target,
        })
    }

    /// The error that stopped the writer thread.
    fn thread_error(&mut self) -> ArchiveError {
        self.tx = None;
        let err = match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the archive writer thread panicked"),
            _ => io::Error::other("the archive writer thread stopped"),
        };
        ArchiveError::Write {
            target: self.target.clone(),
            source: err,
        }
    }

    fn send_block(&mut self) -> Result<(), ArchiveError> {
        // A natural point to stop at: SIGINT or SIGTERM ends the archive here (it is never promoted).
        crate::interrupt::check_io().map_err(|source| ArchiveError::Write {
            target: self.target.clone(),
            source,
        })?;
        let next = match self.free.recv() {
            Ok(b) => b,
            Err(_) => return Err(self.thread_error()),
        };
        let full = std::mem::replace(&mut self.block, next);
        if let Some(h) = &mut self.hasher {
            h.update(&full.buf[..full.len]);
        }
        let sent = self.tx.as_ref().expect("pipeline open").send(full);
        if sent.is_err() {
            return Err(self.thread_error());
        }
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            if self.block.len == self.block.buf.len() {
                self.send_block()?;
            }
            let n = data.len().min(self.block.buf.len() - self.block.len);
            self.block.buf[self.block.len..self.block.len + n].copy_from_slice(&data[..n]);
            self.block.len += n;
            self.offset += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn zeros(&mut self, n: u64) -> Result<(), ArchiveError> {
        const Z: [u8; 512] = [0; 512];
        let mut left = n;
        while left > 0 {
            let k = left.min(512);
            self.write(&Z[..k as usize])?;
            left -= k;
        }
        Ok(())
    }

    /// Reads exactly `len` bytes of `r` straight into the outgoing blocks, hashing them into `hasher`: the one
    /// copy loop of plain and sparse files. A read that ends early means the file changed (`shrank` says how
    /// many bytes had been read; an `UnexpectedEof` says it in its own words).
    fn copy_exact(
        &mut self,
        r: &mut dyn Read,
        path: &Path,
        len: u64,
        hasher: &mut Sha256,
        progress: &mut dyn Progress,
        shrank: &dyn Fn(u64) -> String,
    ) -> Result<(), ArchiveError> {
        let mut left = len;
        while left > 0 {
            if self.block.len == self.block.buf.len() {
                self.send_block()?;
            }
            let room =
                (self.block.buf.len() - self.block.len).min(left.min(usize::MAX as u64) as usize);
            let dst = &mut self.block.buf[self.block.len..self.block.len + room];
            let n = match r.read(dst) {
                Ok(0) => {
                    return Err(ArchiveError::Changed {
                        path: path.into(),
                        detail: shrank(len - left),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ArchiveError::Changed {
                        path: path.into(),
                        detail: e.to_string(),
                    });
                }
                Err(source) => {
                    return Err(ArchiveError::Read {
                        path: path.into(),
                        source,
                    });
                }
            };
            hasher.update(&dst[..n]);
            self.block.len += n;
            self.offset += n as u64;
            left -= n as u64;
            progress.bytes(n as u64);
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` into the stream, read straight into the outgoing blocks, hashing them.
    fn copy_file(
        &mut self,
        file: &mut File,
        path: &Path,
        size: u64,
        progress: &mut dyn Progress,
    ) -> Result<Digest, ArchiveError> {
        let mut hasher = Sha256::new();
        self.copy_exact(file, path, size, &mut hasher, progress, &|read| {
            format!("it shrank: {read} of {size} bytes read")
        })?;
        let mut probe = [0u8; 1];
        if matches!(file.read(&mut probe), Ok(n) if n > 0) {
            return Err(ArchiveError::Changed {
                path: path.into(),
                detail: format!("it grew beyond {size} bytes"),
            });
        }
        Ok(Digest::of(hasher))
    }

    /// Writes a sparse file as the data of a PAX 1.0 member: the map, then each data segment read at its offset.
    /// Returns the sha256 of the file's content (holes hashed as zeros: the index's hash is of what a restore gives
    /// back) and the record of what was stored. A file that shrank or grew since it was mapped is an error.
    fn copy_sparse(
        &mut self,
        file: &File,
        path: &Path,
        map: &SparseMap,
        progress: &mut dyn Progress,
    ) -> Result<(Digest, SparseRecord), ArchiveError> {
        // Only what is stored is hashed (the map and the data): the holes are neither read nor hashed, so the
        // cost follows the data, not the size. The index's `sha256` of a sparse member is this digest.
        let mut stored = Sha256::new();
        let block = map.encode_v1();
        stored.update(&block);
        self.write(&block)?;
        let mut data = sparse::SegmentsReader::new(file, map);
        let mut at = 0u64;
        for seg in map.segments() {
            progress.bytes(seg.offset - at);
            self.copy_exact(&mut data, path, seg.len, &mut stored, progress, &|read| {
                format!(
                    "it shrank: {read} of the {} bytes of data at {} read",
                    seg.len, seg.offset
                )
            })?;
            at = seg.offset + seg.len;
        }
        progress.bytes(map.size() - at);
        match file.metadata() {
            Ok(m) if m.size() == map.size() => {}
            Ok(m) => {
                return Err(ArchiveError::Changed {
                    path: path.into(),
                    detail: format!("its size went from {} to {} bytes", map.size(), m.size()),
                });
            }
            Err(source) => {
                return Err(ArchiveError::Read {
                    path: path.into(),
                    source,
                });
            }
        }
        let digest = Digest::of(stored);
        Ok((
            digest,
            SparseRecord {
                stored: block.len() as u64 + map.data_bytes(),
                stored_sha256: digest,
            },
        ))
    }

    fn finish(mut self) -> Result<ThreadOutput, ArchiveError> {
        let mut last = std::mem::replace(
            &mut self.block,
            Block {
                buf: Box::new([]),
                len: 0,
                last: false,
            },
        );
        last.last = true;
        if let Some(h) = &mut self.hasher {
            h.update(&last.buf[..last.len]);
        }
        if self.tx.as_ref().expect("pipeline open").send(last).is_err() {
            return Err(self.thread_error());
        }
        self.tx = None;
        match self.thread.take().expect("thread").join() {
            Ok(Ok(out)) => Ok(ThreadOutput {
                tar_sha256: self.hasher.take().map(Digest::of),
                ..out
            }),
            Ok(Err(source)) => Err(ArchiveError::Write {
                target: self.target.clone(),
                source,
            }),
            Err(_) => Err(ArchiveError::Write {
                target: self.target.clone(),
                source: io::Error::other("the archive writer thread panicked"),
            }),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // On an error path: stop the thread without finishing the chain, so no end-of-archive is ever written.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The index side: a buffered chain on the calling thread.
struct IndexOut {
    writer: IndexWriter<io::BufWriter<IndexTee>>,
    target: String,
}

/// The index's write chain, and the sink of its plaintext copy when one was asked for: the same bytes to both.
struct IndexTee {
    chain: Chain,
    copy: Option<Box<dyn Sink>>,
}

impl Write for IndexTee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.chain.write(buf)?;
        if let Some(c) = &mut self.copy {
            c.write_all(&buf[..n])?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.chain.flush()?;
        match &mut self.copy {
            Some(c) => c.flush(),
            None => Ok(()),
        }
    }
}

impl IndexOut {
    fn err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Write {
            target: self.target.clone(),
            source,
        }
    }
}

/// Writes the snapshot of `plan` as a tar stream to `archive` and its index to `index`, through `options.stage`.
///
/// Entries are the snapshot's contents relative to its root, in [`scan`]'s order; the root itself is not an entry.
/// Symlinks are stored, never followed; files and symlinks with several names in the snapshot are stored once and
/// then as hard links (a hard link to a symlink as GNU tar writes it); FIFOs and devices are stored; sockets are skipped with a warning, as are files that vanish or
/// cannot be opened. A file that changes size while read is an error.
///
/// On error nothing is finished: no end-of-archive blocks, no `end` line, nothing fsynced. What was written must
/// be removed; only a later read-back or verification says that an archive is good.
// Stays long: one loop holds the tar stream, the index and the hard-link table together; each step is a helper.
pub fn write_archive(
    plan: &ArchivePlan,
    archive: Box<dyn Sink>,
    index: Box<dyn Sink>,
    options: &ArchiveOptions<'_>,
    progress: &mut dyn Progress,
) -> Result<ArchiveSummary, ArchiveError> {
    let archive_single = archive.single_file() && options.stage.is_none();
    let archive_target = archive.describe();
    let index_target = index.describe();
    let mut out =
        Pipeline::start(archive, options.stage).map_err(|source| ArchiveError::Write {
            target: archive_target.clone(),
            source,
        })?;
    let index_chain = Chain::new(index, options.stage).map_err(|source| ArchiveError::Write {
        target: index_target.clone(),
        source,
    })?;
    let index_chain = IndexTee {
        chain: index_chain,
        copy: options
            .index_copy
            .map(|make| make())
            .transpose()
            .map_err(|source| ArchiveError::Write {
                target: index_target.clone(),
                source,
            })?,
    };
    let mut cursor = options.base.map(BaseCursor::open).transpose()?;
    let header = match (options.base, &cursor) {
        (Some(b), Some(c)) => IndexHeader::incremental(
            plan.root.display().to_string(),
            &b.stamp,
            c.depends_on.clone(),
        ),
        _ => IndexHeader::new(plan.root.display().to_string()),
    };
    let depends_on = header.depends_on.clone();
    let writer = IndexWriter::new(
        io::BufWriter::with_capacity(WRITE_BUFFER, index_chain),
        &header,
    )
    .map_err(|source| ArchiveError::Write {
        target: index_target.clone(),
        source,
    })?;
    let mut idx = IndexOut {
        writer,
        target: index_target,
    };

    let mut first_names: HashMap<(u64, u64), FirstName> = HashMap::new();
    let mut summary_warnings = Vec::new();
    let mut warning_count = 0u64;
    let mut warn = |w: Warning, progress: &mut dyn Progress| {
        progress.warning(&w);
        warning_count += 1;
        if summary_warnings.len() < MAX_KEPT_WARNINGS {
            summary_warnings.push(w);
        }
    };
    let (mut entries, mut files, mut file_bytes, mut hard_links) = (0u64, 0u64, 0u64, 0u64);
    let (mut referenced_files, mut referenced_bytes) = (0u64, 0u64);
    let mut header_buf = Vec::with_capacity(4096);
    let left_out: Vec<(u64, u64)> = (options.leave_out.iter())
        .filter_map(|rel| std::fs::symlink_metadata(plan.root.join(rel)).ok())
        .filter(Metadata::is_file)
        .map(|m| (m.dev(), m.ino()))
        .collect();

    for step in walk(&plan.root, options.base)? {
        let w = match step {
            Step::Entry(w) => w,
            Step::Warn(w) => {
                warn(w, progress);
                continue;
            }
        };
        let Some(kind) = kind_of(&w.meta) else {
            warn(socket_warning(&w.full), progress);
            continue;
        };
        let mut e = entry_for(&w, kind);
        let mut file = None;
        let mut map = None;
        let key = (w.meta.dev(), w.meta.ino());
        if kind == EntryKind::File && left_out.contains(&key) {
            continue;
        }
        // Incremental: a file unchanged since the base is only a line of the manifest pointing where it is stored.
        if let (Some(c), Some(b), EntryKind::File) = (&mut cursor, options.base, kind) {
            let found = c.find(&e.path)?;
            // Read here only to compare; read again (and warned about) when it is stored.
            e.attrs = w.attrs().ok().flatten();
            let seen = Seen {
                entry: &e,
                linked: w.meta.nlink() > 1 && plan.linked.binary_search(&key).is_ok(),
                same_inode: same_inode(b, &w),
            };
            let unchanged = match (
                incremental::decide(seen, found.as_ref(), b.method()),
                &found,
            ) {
                (Decision::Unchanged, Some(_)) => true,
                (Decision::CompareContent, Some(f)) => content_equals(&w.full, f, progress),
                _ => false,
            };
            if let (true, Some(f)) = (unchanged, &found) {
                let r = incremental::referenced(&e, f);
                progress.entry(&r.path, r.kind, r.size);
                idx.writer.entry(&r).map_err(|err| idx.err(err))?;
                referenced_files += 1;
                referenced_bytes += r.size;
                entries += 1;
                continue;
            }
        }
        match kind {
            EntryKind::Symlink if first_names.contains_key(&key) => first_names[&key].link(&mut e),
            EntryKind::Symlink => match std::fs::read_link(&w.full) {
                Ok(t) => e.link = Some(t.into_os_string().into_vec_bytes()),
                Err(err) => {
                    warn(
                        Warning {
                            path: w.full,
                            message: format!("cannot read symlink: {err}; skipped"),
                        },
                        progress,
                    );
                    continue;
                }
            },
            EntryKind::File => {
                if let Some(first) = first_names.get(&key) {
                    first.link(&mut e);
                } else {
                    match File::open(&w.full) {
                        Ok(f) => {
                            // Describe the file as opened, in case it was replaced since the walk saw it.
                            match f.metadata() {
                                Ok(m) if m.ino() == w.meta.ino() && m.dev() == w.meta.dev() => {
                                    e.size = m.size();
                                    // A file whose holes cannot be found is stored whole.
                                    map = sparse_map(&f, &m, &e.path).unwrap_or(None);
                                    e.sparse = map.as_ref().map(sparse_record);
                                    file = Some(f);
                                }
                                _ => {
                                    warn(
                                        Warning {
                                            path: w.full,
                                            message: "replaced while archiving; skipped".into(),
                                        },
                                        progress,
                                    );
                                    continue;
                                }
                            }
                        }
                        Err(err) => {
                            let message = if err.kind() == io::ErrorKind::NotFound {
                                "vanished while archiving; skipped".to_string()
                            } else {
                                format!("cannot open: {err}; skipped")
                            };
                            warn(
                                Warning {
                                    path: w.full,
                                    message,
                                },
                                progress,
                            );
                            continue;
                        }
                    }
                }
            }
            _ => {}
        }
        e.attrs = match w.attrs() {
            Ok(a) => a,
            Err(err) => {
                warn(
                    Warning {
                        path: w.full.clone(),
                        message: format!(
                            "cannot read its extended attributes and ACLs: {err}; archived without them"
                        ),
                    },
                    progress,
                );
                None
            }
        };

        encode_into(&mut header_buf, &e, &w.full)?;
        e.header_offset = out.offset;
        out.write(&header_buf)?;
        e.data_offset = out.offset;
        progress.entry(&e.path, e.kind, e.size);
        if let Some(mut f) = file {
            let digest = match &map {
                Some(map) => {
                    let (digest, record) = out.copy_sparse(&f, &w.full, map, progress)?;
                    e.sparse = Some(record);
                    digest
                }
                None => out.copy_file(&mut f, &w.full, e.size, progress)?,
            };
            out.zeros(tarfmt::padding(stored_len(&e)))?;
            e.sha256 = Some(digest);
            files += 1;
            file_bytes += e.size;
            if w.meta.nlink() > 1 && plan.linked.binary_search(&key).is_ok() {
                first_names.insert(
                    key,
                    FirstName {
                        path: e.path.clone(),
                        size: e.size,
                        sha256: Some(digest),
                        data_offset: e.data_offset,
                        sparse: e.sparse,
                    },
                );
            }
        }
        if e.kind == EntryKind::Symlink
            && w.meta.nlink() > 1
            && plan.linked.binary_search(&key).is_ok()
        {
            first_names.insert(
                key,
                FirstName {
                    path: e.path.clone(),
                    size: 0,
                    sha256: None,
                    data_offset: e.data_offset,
                    sparse: None,
                },
            );
        }
        if e.kind == EntryKind::Hardlink {
            e.data_offset = first_names[&key].data_offset;
            hard_links += 1;
        }
        idx.writer.entry(&e).map_err(|err| idx.err(err))?;
        entries += 1;
        if entries == 1 {
            // The archive is open and being written: a test fills the drive here, whatever the machine's speed.
            crate::interrupt::test_stop("archive-writing");
        }
    }

    let end = tarfmt::trailer_len(out.offset);
    out.zeros(end)?;
    let tar_bytes = out.offset;
    let thread_out = out.finish()?;
    let tar_sha256 = match thread_out.tar_sha256 {
        Some(d) => Some(d),
        None if archive_single => Some(thread_out.files[0].sha256),
        None => None, // encrypted: see Pipeline::start
    };
    let end = IndexEnd {
        entries,
        files,
        file_bytes,
        tar_bytes,
        tar_sha256,
        referenced_files,
        referenced_bytes,
    };
    let IndexOut { writer, target } = idx;
    let index_err = |source| ArchiveError::Write {
        target: target.clone(),
        source,
    };
    let buffered = writer.finish(end).map_err(index_err)?;
    let tee = buffered
        .into_inner()
        .map_err(|e| index_err(e.into_error()))?;
    let index_files = tee.chain.finish().map_err(index_err)?;
    let index_copy = match tee.copy {
        Some(c) => c.finish().map_err(index_err)?.pop(),
        None => None,
    };
    Ok(ArchiveSummary {
        entries,
        files,
        file_bytes,
        hard_links,
        tar_bytes,
        tar_sha256,
        archive_files: thread_out.files,
        index_files,
        warning_count,
        warnings: summary_warnings,
        referenced_files,
        referenced_bytes,
        depends_on,
        index_copy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records what reaches it and whether it was finished.
    struct Recording(Arc<Mutex<(Vec<u8>, bool)>>);

    impl Write for Recording {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Recording {
        fn finish(self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
            let mut s = self.0.lock().unwrap();
            s.1 = true;
            Ok(vec![WrittenFile {
                path: "r".into(),
                bytes: s.0.len() as u64,
                sha256: Digest::of_bytes(&s.0),
            }])
        }
        fn describe(&self) -> String {
            "r".into()
        }
        fn single_file(&self) -> bool {
            true
        }
    }

    /// A [`Recording`] that says it writes several files (as numbered parts do).
    struct RecordingParts(Recording);
    impl Write for RecordingParts {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }
    impl Sink for RecordingParts {
        fn finish(self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
            Box::new(self.0).finish()
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn single_file(&self) -> bool {
            false
        }
    }

    #[test]
    fn an_abandoned_pipeline_never_finishes_its_sink() {
        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let mut p = Pipeline::start(Box::new(Recording(state.clone())), None).unwrap();
        p.write(&vec![7u8; WRITE_BUFFER + 10]).unwrap();
        drop(p); // an error path
        let s = state.lock().unwrap();
        assert!(!s.1, "not finished");
        assert_eq!(s.0.len(), WRITE_BUFFER, "only whole blocks were passed on");
    }

    #[test]
    fn a_finished_pipeline_passes_everything_and_finishes() {
        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let mut p = Pipeline::start(Box::new(Recording(state.clone())), None).unwrap();
        p.write(&vec![7u8; WRITE_BUFFER + 10]).unwrap();
        let out = p.finish().unwrap();
        let s = state.lock().unwrap();
        assert!(s.1, "finished");
        assert_eq!(out.files[0].bytes, WRITE_BUFFER as u64 + 10);
        assert_eq!(
            out.tar_sha256, None,
            "a single plain file's own hash is the stream's"
        );
    }

    /// A stage that passes bytes on unchanged.
    struct Pass;
    struct PassWriter(Box<dyn Sink>);
    impl Write for PassWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }
    impl super::super::sink::StageWriter for PassWriter {
        fn finish(self: Box<Self>) -> io::Result<Box<dyn Sink>> {
            Ok(self.0)
        }
    }
    impl Stage for Pass {
        fn wrap(
            &self,
            sink: Box<dyn Sink>,
        ) -> io::Result<Box<dyn super::super::sink::StageWriter>> {
            Ok(Box::new(PassWriter(sink)))
        }
    }

    #[test]
    fn in_parts_the_stream_is_hashed_block_by_block_to_its_last_byte() {
        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let parts = RecordingParts(Recording(state.clone()));
        let mut p = Pipeline::start(Box::new(parts), None).unwrap();
        let data: Vec<u8> = (0..2 * WRITE_BUFFER + 777)
            .map(|i| (i % 251) as u8)
            .collect();
        p.write(&data).unwrap();
        let out = p.finish().unwrap();
        assert_eq!(state.lock().unwrap().0, data);
        assert_eq!(out.tar_sha256, Some(Digest::of_bytes(&data)));
    }

    #[test]
    fn behind_a_stage_the_sink_thread_gets_everything_in_order_or_is_never_finished() {
        let data: Vec<u8> = (0..3 * WRITE_BUFFER + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let mut p = Pipeline::start(Box::new(Recording(state.clone())), Some(&Pass)).unwrap();
        for piece in data.chunks(65_552) {
            p.write(piece).unwrap();
        }
        let out = p.finish().unwrap();
        let s = state.lock().unwrap();
        assert!(s.1, "finished");
        assert_eq!(s.0, data);
        assert_eq!(out.files[0].bytes, data.len() as u64);

        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let mut p = Pipeline::start(Box::new(Recording(state.clone())), Some(&Pass)).unwrap();
        p.write(&data).unwrap();
        drop(p); // an error path
        assert!(
            !state.lock().unwrap().1,
            "an abandoned sink is never finished"
        );
    }

    #[test]
    fn through_a_stage_the_plaintext_stream_is_not_hashed() {
        let state = Arc::new(Mutex::new((Vec::new(), false)));
        let parts = RecordingParts(Recording(state.clone()));
        let mut p = Pipeline::start(Box::new(parts), Some(&Pass)).unwrap();
        p.write(&[1u8; 1000]).unwrap();
        let out = p.finish().unwrap();
        assert_eq!(state.lock().unwrap().0, [1u8; 1000]);
        assert_eq!(
            out.tar_sha256, None,
            "an encrypted archive records no plaintext hash"
        );
    }
}
