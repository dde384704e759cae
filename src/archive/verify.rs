//! The full verifier behind `restore --verify`: reads a whole archive and its index side by side, checking every
//! entry's header against the index, every file's content sha256, and the whole stream's length and sha256.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use super::index::{IndexEntry, IndexError, IndexReader, SparseRecord};
use super::sink::{Digest, WRITE_BUFFER};
use super::sparse::{self, PaxSparse, TarSparse};
use super::tarfmt::{self, EntryKind};
use super::writer::Progress;
use super::xattrs::HeaderTap;
use crate::stdx::{HashingReader, show};

/// What a successful verification checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
    pub hard_links: u64,
    pub tar_bytes: u64,
    pub tar_sha256: Digest,
}

/// An archive that is not intact: which archive, the first bad entry (when one is to blame), and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("archive {archive}: {}{problem}", .entry.as_ref().map(|e| format!("entry {e} (offset {}): ", .offset.unwrap_or(0))).unwrap_or_default())]
pub struct VerifyError {
    pub archive: String,
    /// The first entry found bad, as its path (non-UTF-8 bytes escaped).
    pub entry: Option<String>,
    /// Where that entry's header starts in the tar stream, as the index says.
    pub offset: Option<u64>,
    pub problem: Box<VerifyProblem>,
}

/// What is wrong with an archive (see [`VerifyError`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyProblem {
    #[error("bad index: {0}")]
    Index(#[from] IndexError),
    #[error("cannot read: {0}")]
    Read(#[from] io::Error),
    #[error("the archive is damaged here: {0}")]
    Malformed(String),
    #[error("the archive has an entry {found} that the index does not list here")]
    NotInIndex { found: String },
    #[error("the archive ends before this entry: it is truncated")]
    Missing,
    #[error("{field} differs: the index says {index}, the archive has {archive}")]
    Field {
        field: &'static str,
        index: String,
        archive: String,
    },
    #[error("the archive ends after {got} of its {expected} content bytes: it is truncated")]
    Truncated { got: u64, expected: u64 },
    #[error("content sha256 is {actual}, the index says {expected}: the content is damaged")]
    Content { expected: Digest, actual: Digest },
    #[error(
        "it is a hard link to {target}, which is not a file or symlink earlier in the archive: a restore could not \
         vouch for its content"
    )]
    LinkTarget { target: String },
    #[error(
        "the index lists more hard-linked names than verify keeps track of ({0}): the index is not plausible"
    )]
    TooManyLinks(usize),
    #[error("it is kept in an earlier backup of the chain, and {0}")]
    Referenced(String),
    #[error("the index's totals say {index}, the archive has {archive}")]
    Totals { index: String, archive: String },
    #[error(
        "the archive is {actual} bytes long, the index says {expected}: it is truncated or has trailing data"
    )]
    Length { expected: u64, actual: u64 },
    #[error(
        "the archive's sha256 is {actual}, the index says {expected}: bytes outside file contents are damaged"
    )]
    StreamHash { expected: Digest, actual: Digest },
}

/// The files whose data offset, size and sha256 [`verify_archive_with`] keeps as it reads, to check each hard link
/// against the very file the archive links it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardLinkTargets {
    /// Every file (memory grows with the number of files: tests, small archives).
    All,
    /// The names hard links point to, from a first read of the same index ([`HardLinkTargets::read`]).
    Named(HashSet<Vec<u8>>),
}

impl HardLinkTargets {
    fn wants(&self, path: &[u8]) -> bool {
        match self {
            HardLinkTargets::All => true,
            HardLinkTargets::Named(names) => names.contains(path),
        }
    }
}

/// At most this many bytes of hard-link target names are kept (about a million names): an index that lists more is
/// refused as implausible rather than let grow memory without bound.
const MAX_LINK_TARGET_BYTES: usize = 256 << 20;

impl HardLinkTargets {
    /// Reads `index` through and keeps the `link` of every hard-link line.
    pub fn read(index: impl BufRead) -> Result<HardLinkTargets, VerifyProblem> {
        let mut idx = IndexReader::new(index)?;
        let mut names = HashSet::new();
        let mut bytes = 0usize;
        while let Some(e) = idx.next_entry()? {
            if e.kind == EntryKind::Hardlink
                && let Some(l) = e.link
            {
                bytes = bytes.saturating_add(l.len() + 64);
                if bytes > MAX_LINK_TARGET_BYTES {
                    return Err(VerifyProblem::TooManyLinks(names.len()));
                }
                names.insert(l);
            }
        }
        Ok(HardLinkTargets::Named(names))
    }
}

/// [`verify_archive_with`] keeping every file for the hard links to be checked against (memory grows with the
/// number of files). `restore --verify` reads the hard links' targets from the index first instead.
pub fn verify_archive(
    label: &str,
    archive: impl Read,
    index: impl BufRead,
    progress: &mut dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    verify_archive_with(label, archive, index, &HardLinkTargets::All, progress)
}

/// Verifies the tar stream `archive` (already joined from its parts and through any stage) against `index`.
/// `label` names the archive in errors. Memory grows with the number of hard-linked files only (`links`, read
/// from the same index first with [`HardLinkTargets::read`]), never with the number of entries.
///
/// Checks, for every entry in order: path, type, mode, owner, mtime, size, link target, device numbers, extended
/// attributes and ACLs (parsed from the raw pax records, [`super::xattrs::HeaderTap`]), the header and data offsets
/// the index gives, and the sha256 of every file's content; for a hard link, that the file the archive links it to
/// is a file earlier in the archive whose data offset, size and sha256 are the ones the index gives the link (a
/// restore reads a hard link's content there); then that the index's `end` line matches the number of entries, the
/// stream's length and its sha256 (which covers headers and padding). A hard link whose target is not in `links`
/// fails: read `links` from the same index.
pub fn verify_archive_with(
    label: &str,
    archive: impl Read,
    index: impl BufRead,
    links: &HardLinkTargets,
    progress: &mut dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut none = |e: &IndexEntry| {
        Err(format!(
            "no archive of backup {} was given to check it in",
            e.stored_in.as_deref().unwrap_or_default()
        ))
    };
    verify_archive_in_chain(label, archive, index, links, &mut none, progress)
}

/// [`verify_archive_with`] for an incremental's manifest too: each file kept in an earlier backup of the chain
/// (its line's `in`) is handed to `referenced`, which checks it in that backup's archive (an error names what is
/// wrong there); the others are walked in `archive` as always. The `end` line's totals count both.
pub fn verify_archive_in_chain(
    label: &str,
    archive: impl Read,
    index: impl BufRead,
    links: &HardLinkTargets,
    referenced: &mut dyn FnMut(&IndexEntry) -> Result<(), String>,
    progress: &mut dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let fail = |entry: Option<&IndexEntry>, problem: VerifyProblem| VerifyError {
        archive: label.to_string(),
        entry: entry.map(|e| e.display_path()),
        offset: entry.map(|e| e.header_offset),
        problem: Box::new(problem),
    };
    let mut idx = IndexReader::new(index).map_err(|e| fail(None, e.into()))?;
    let reader = HashingReader::new(BufReader::with_capacity(WRITE_BUFFER, archive));
    let (reader, tap) = HeaderTap::new(reader, 0);
    let mut ar = tar::Archive::new(reader);
    let mut walk = Walk {
        links,
        linked: HashMap::new(),
        totals: Totals::default(),
        next_offset: 0,
        buf: vec![0u8; WRITE_BUFFER],
    };
    let (mut kept_files, mut kept_bytes) = (0u64, 0u64);
    // The next entry stored in this archive; those kept in earlier ones are checked there on the way.
    let mut next_here = |idx: &mut IndexReader<_>,
                         progress: &mut dyn Progress|
     -> Result<Option<IndexEntry>, VerifyError> {
        loop {
            match idx.next_entry().map_err(|e| fail(None, e.into()))? {
                Some(e) if e.stored_in.is_some() => {
                    progress.entry(&e.path, e.kind, e.size);
                    referenced(&e).map_err(|why| fail(Some(&e), VerifyProblem::Referenced(why)))?;
                    kept_files += 1;
                    kept_bytes = kept_bytes.saturating_add(e.size);
                }
                other => return Ok(other),
            }
        }
    };
    {
        let tar_entries = ar.entries().map_err(|e| fail(None, e.into()))?;
        for item in tar_entries {
            let expected = next_here(&mut idx, progress)?;
            let mut te = match item {
                Ok(te) => te,
                Err(e) => {
                    return Err(fail(
                        expected.as_ref(),
                        VerifyProblem::Malformed(e.to_string()),
                    ));
                }
            };
            // A sparse member is named by its `GNU.sparse.name` record (its header holds `GNUSparseFile.0/...`).
            let (path, sparse) = sparse_member(&mut te).map_err(|p| fail(expected.as_ref(), p))?;
            let Some(ie) = expected else {
                let found = show(&path);
                return Err(fail(None, VerifyProblem::NotInIndex { found }));
            };
            walk.entry(&mut te, &ie, &path, sparse.as_ref(), &tap, progress)
                .map_err(|p| fail(Some(&ie), p))?;
        }
    }
    if let Some(ie) = next_here(&mut idx, progress)? {
        return Err(fail(Some(&ie), VerifyProblem::Missing));
    }
    let end = idx
        .end()
        .expect("the index reader stops at its end line")
        .clone();
    if (kept_files, kept_bytes) != (end.referenced_files, end.referenced_bytes) {
        return Err(fail(
            None,
            VerifyProblem::Totals {
                index: format!(
                    "{} files ({} bytes) kept in earlier backups",
                    end.referenced_files, end.referenced_bytes
                ),
                archive: format!("{kept_files} ({kept_bytes} bytes) listed"),
            },
        ));
    }
    walk.totals.entries += kept_files;
    let mut reader = ar.into_inner().into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(|e| fail(None, e.into()))?;
    walk.totals
        .check_end(&end, reader)
        .map_err(|p| fail(None, p))
}

/// What the entries counted so far add up to (checked against the index's `end` line).
#[derive(Default)]
struct Totals {
    entries: u64,
    files: u64,
    file_bytes: u64,
    hard_links: u64,
}

impl Totals {
    /// The index's `end` line against what was read: entry, file and byte counts, the stream's length and sha256.
    fn check_end<R>(
        self,
        end: &super::index::IndexEnd,
        reader: HashingReader<R>,
    ) -> Result<VerifyReport, VerifyProblem> {
        let Totals {
            entries,
            files,
            file_bytes,
            hard_links,
        } = self;
        if (entries, files, file_bytes) != (end.entries, end.files, end.file_bytes) {
            return Err(VerifyProblem::Totals {
                index: format!(
                    "{} entries, {} files, {} bytes",
                    end.entries, end.files, end.file_bytes
                ),
                archive: format!("{entries} entries, {files} files, {file_bytes} bytes"),
            });
        }
        if reader.count != end.tar_bytes {
            return Err(VerifyProblem::Length {
                expected: end.tar_bytes,
                actual: reader.count,
            });
        }
        let actual = Digest::of(reader.hasher);
        if let Some(expected) = end.tar_sha256
            && actual != expected
        {
            return Err(VerifyProblem::StreamHash { expected, actual });
        }
        Ok(VerifyReport {
            entries,
            files,
            file_bytes,
            hard_links,
            tar_bytes: reader.count,
            tar_sha256: actual,
        })
    }
}

/// A member's name and, when it is stored sparse (PAX 1.0, the format dbackup writes), its sparse description;
/// other sparse formats and bad sparse records are malformed here.
fn sparse_member<R: Read>(
    te: &mut tar::Entry<'_, R>,
) -> Result<(Vec<u8>, Option<PaxSparse>), VerifyProblem> {
    match sparse::inspect(te).map_err(malformed)? {
        TarSparse::No => Ok((te_path(te), None)),
        TarSparse::Pax(p) if p.version == (1, 0) => {
            Ok((p.name.clone().unwrap_or_else(|| te_path(te)), Some(p)))
        }
        TarSparse::Bad(e) => Err(malformed(e)),
        TarSparse::OldGnu | TarSparse::Pax(_) => Err(malformed(
            "a sparse member in a format dbackup does not write",
        )),
    }
}

/// A field that differs between the index and the archive.
fn differs(field: &'static str, index: String, archive: String) -> VerifyProblem {
    VerifyProblem::Field {
        field,
        index,
        archive,
    }
}

fn malformed(e: impl std::fmt::Display) -> VerifyProblem {
    VerifyProblem::Malformed(e.to_string())
}

/// What a hard link may point to, as the archive has it.
#[derive(Clone, Copy)]
enum Linked {
    /// A file: data offset, size, content sha256 and (stored sparse) the sparse record.
    File(u64, u64, Digest, Option<SparseRecord>),
    /// A symlink: its data offset (where its content would start; it has none).
    Symlink(u64),
}

/// The state of one walk through an archive beside its index.
struct Walk<'l> {
    links: &'l HardLinkTargets,
    /// The files and symlinks hard links point to, as the archive has them.
    linked: HashMap<Vec<u8>, Linked>,
    totals: Totals,
    /// Where the next entry's header must start.
    next_offset: u64,
    buf: Vec<u8>,
}

impl Walk<'_> {
    /// One entry of the archive against the index's line for it: its header, then its content or link target.
    fn entry<R: Read>(
        &mut self,
        te: &mut tar::Entry<'_, R>,
        ie: &IndexEntry,
        path: &[u8],
        sparse: Option<&PaxSparse>,
        tap: &super::xattrs::TapHandle,
        progress: &mut dyn Progress,
    ) -> Result<(), VerifyProblem> {
        let data_offset = te.raw_file_position();
        check_header(te, ie, path, self.next_offset)?;
        // What the entry stores (a sparse member's map and data), then its padding.
        let stored = te.size();
        let show_sparse = |s: Option<u64>| match s {
            Some(n) => format!("a sparse member of {n} bytes"),
            None => "not sparse".to_string(),
        };
        let index_sparse = ie.sparse.filter(|_| ie.kind == EntryKind::File);
        if sparse.map(|_| stored) != index_sparse.map(|r| r.stored) {
            return Err(differs(
                "storage",
                show_sparse(index_sparse.map(|r| r.stored)),
                show_sparse(sparse.map(|_| stored)),
            ));
        }
        let (size, expected_size) = match (sparse, ie.kind) {
            (Some(p), _) => (p.size, ie.size),
            (None, EntryKind::File) => (stored, ie.size),
            (None, _) => (stored, 0),
        };
        if size != expected_size {
            return Err(differs("size", expected_size.to_string(), size.to_string()));
        }
        let next = data_offset
            .checked_add(stored)
            .and_then(|n| n.checked_add(tarfmt::padding(stored)))
            .ok_or_else(|| {
                malformed(format!(
                    "its size {stored} at offset {data_offset} lies past the largest possible archive"
                ))
            })?;
        let attrs = tap
            .take(te.raw_header_position(), data_offset, next)
            .map_err(|e| malformed(format!("its extended attributes: {e}")))?;
        let listed = ie.attrs.as_deref().cloned().unwrap_or_default();
        if let Some(what) = listed.difference(&attrs) {
            return Err(differs(
                "extended attributes",
                format!("{} attributes", listed.count()),
                format!("{} attributes ({what} differs)", attrs.count()),
            ));
        }
        progress.entry(&ie.path, ie.kind, ie.size);
        if let (Some(record), Some(p)) = (index_sparse, sparse) {
            self.check_sparse_content(te, ie, record, p, data_offset, progress)?;
        } else if ie.kind == EntryKind::File {
            self.check_content(te, ie, data_offset, progress)?;
        }
        if ie.kind == EntryKind::Symlink && self.links.wants(&ie.path) {
            // A hard link to a symlink shares nothing but the name it points at: no content to compare.
            self.linked
                .insert(ie.path.clone(), Linked::Symlink(data_offset));
        }
        if ie.kind == EntryKind::Hardlink {
            self.totals.hard_links += 1;
            self.check_link_target(ie)?;
        }
        self.next_offset = next;
        self.totals.entries += 1;
        Ok(())
    }

    /// A sparse member's content: the stored map and data against the sparse record's sha256, the file it stands
    /// for (holes as zeros) against the index's; kept when a hard link may point to it.
    fn check_sparse_content<R: Read>(
        &mut self,
        te: &mut tar::Entry<'_, R>,
        ie: &IndexEntry,
        record: SparseRecord,
        p: &PaxSparse,
        data_offset: u64,
        progress: &mut dyn Progress,
    ) -> Result<(), VerifyProblem> {
        // The index's sha256 is the stored digest (holes not hashed); an older index's is the logical content's.
        let old_index = !ie.sha256_is_stored();
        let (logical, stored) = sparse::hash_v1(te, record.stored, p.size, old_index, &mut |n| {
            progress.bytes(n)
        })
        .map_err(|e| match e {
            sparse::MapError::Io(e) => VerifyProblem::Read(e),
            sparse::MapError::Bad(b) => malformed(b),
        })?;
        if stored != record.stored_sha256 {
            return Err(VerifyProblem::Content {
                expected: record.stored_sha256,
                actual: stored,
            });
        }
        let actual = logical.unwrap_or(stored);
        self.file_hashed(ie, actual, data_offset, p.size, Some(record))
    }

    /// A file's content: its length and sha256 against the index; kept when a hard link may point to it.
    fn check_content<R: Read>(
        &mut self,
        te: &mut tar::Entry<'_, R>,
        ie: &IndexEntry,
        data_offset: u64,
        progress: &mut dyn Progress,
    ) -> Result<(), VerifyProblem> {
        let size = te.size();
        let (got, sum) = crate::stdx::sha256_reader(te, &mut self.buf, |n| progress.bytes(n))?;
        let actual = Digest(sum);
        if got != size {
            return Err(VerifyProblem::Truncated {
                got,
                expected: size,
            });
        }
        self.file_hashed(ie, actual, data_offset, size, None)
    }

    /// A file whose content (`size` bytes, `sparse` as stored) hashed to `actual`: checked against the index's
    /// sha256, kept when a hard link may point to it, counted.
    fn file_hashed(
        &mut self,
        ie: &IndexEntry,
        actual: Digest,
        data_offset: u64,
        size: u64,
        sparse: Option<SparseRecord>,
    ) -> Result<(), VerifyProblem> {
        let Some(expected) = ie.sha256 else {
            return Err(differs("sha256", "none".into(), actual.to_string()));
        };
        if actual != expected {
            return Err(VerifyProblem::Content { expected, actual });
        }
        if self.links.wants(&ie.path) {
            self.linked.insert(
                ie.path.clone(),
                Linked::File(data_offset, size, actual, sparse),
            );
        }
        self.totals.files += 1;
        self.totals.file_bytes = self.totals.file_bytes.saturating_add(size);
        Ok(())
    }

    /// A hard link: the archive's own link (checked equal to the index's) names the file whose content this name
    /// shares, and the index must point at that file's data, with its size and sha256; or it names a symlink, and
    /// the index gives it no content (no size, no sha256) and the symlink's data offset.
    fn check_link_target(&self, ie: &IndexEntry) -> Result<(), VerifyProblem> {
        let target = ie.link.clone().unwrap_or_default();
        let (offset, tsize, digest, tsparse) = match self.linked.get(&target) {
            Some(&Linked::File(offset, size, digest, sparse)) => {
                (offset, size, Some(digest), sparse)
            }
            Some(&Linked::Symlink(offset)) => (offset, 0, None, None),
            None => {
                return Err(VerifyProblem::LinkTarget {
                    target: show(&target),
                });
            }
        };
        let shown_digest =
            |d: Option<Digest>| d.map(|d| d.to_string()).unwrap_or_else(|| "none".into());
        if ie.data_offset != offset {
            return Err(differs(
                "data offset",
                ie.data_offset.to_string(),
                format!("{offset} (the data of {})", show(&target)),
            ));
        }
        if ie.size != tsize {
            return Err(differs(
                "size",
                ie.size.to_string(),
                format!("{tsize} (the size of {})", show(&target)),
            ));
        }
        if ie.sha256 != digest {
            return Err(differs(
                "sha256",
                shown_digest(ie.sha256),
                format!(
                    "{} (the content of {})",
                    shown_digest(digest),
                    show(&target)
                ),
            ));
        }
        if ie.sparse != tsparse {
            let shown = |r: Option<SparseRecord>| match r {
                Some(r) => format!("a sparse member of {} bytes", r.stored),
                None => "not sparse".to_string(),
            };
            return Err(differs(
                "storage",
                shown(ie.sparse),
                format!("{} (as {} is stored)", shown(tsparse), show(&target)),
            ));
        }
        Ok(())
    }
}

/// An entry's header against the index: path, type, header and data offsets, mode, owner, mtime, link target,
/// device numbers (size and attributes are checked by the caller, which needs them after).
fn check_header<R: Read>(
    te: &mut tar::Entry<'_, R>,
    ie: &IndexEntry,
    path: &[u8],
    next_offset: u64,
) -> Result<(), VerifyProblem> {
    if path != ie.path {
        return Err(VerifyProblem::NotInIndex { found: show(path) });
    }
    let kind = EntryKind::from_entry_type(te.header().entry_type());
    if kind != Some(ie.kind) {
        let archive = kind
            .map(|k| k.name().to_string())
            .unwrap_or_else(|| format!("{:?}", te.header().entry_type()));
        return Err(differs("type", ie.kind.name().into(), archive));
    }
    let data_offset = te.raw_file_position();
    if ie.header_offset != next_offset {
        return Err(differs(
            "header offset",
            ie.header_offset.to_string(),
            next_offset.to_string(),
        ));
    }
    if ie.kind != EntryKind::Hardlink && ie.data_offset != data_offset {
        return Err(differs(
            "data offset",
            ie.data_offset.to_string(),
            data_offset.to_string(),
        ));
    }
    let h = te.header();
    let mode = h.mode().map_err(malformed)? & 0o7777;
    if mode != ie.mode {
        return Err(differs(
            "mode",
            format!("{:04o}", ie.mode),
            format!("{mode:04o}"),
        ));
    }
    let uid = h.uid().map_err(malformed)?;
    let gid = h.gid().map_err(malformed)?;
    if (uid, gid) != (ie.uid, ie.gid) {
        return Err(differs(
            "owner",
            format!("{}:{}", ie.uid, ie.gid),
            format!("{uid}:{gid}"),
        ));
    }
    let header_mtime = h.mtime().map_err(malformed)?;
    let link = te.link_name_bytes().map(|l| l.into_owned());
    let rdev = match ie.kind {
        EntryKind::Char | EntryKind::Block => {
            let major = h.device_major().ok().flatten();
            let minor = h.device_minor().ok().flatten();
            major.zip(minor)
        }
        _ => None,
    };
    let mtime = pax_mtime(te)
        .map_err(VerifyProblem::Malformed)?
        .unwrap_or((header_mtime as i64, 0));
    if mtime != (ie.mtime, ie.mtime_nsec) {
        return Err(differs(
            "mtime",
            tarfmt::format_pax_time(ie.mtime, ie.mtime_nsec),
            tarfmt::format_pax_time(mtime.0, mtime.1),
        ));
    }
    if matches!(ie.kind, EntryKind::Symlink | EntryKind::Hardlink) && link != ie.link {
        let shown = |l: &Option<Vec<u8>>| l.as_deref().map(show).unwrap_or_else(|| "none".into());
        return Err(differs("link target", shown(&ie.link), shown(&link)));
    }
    if rdev != ie.rdev {
        return Err(differs(
            "device numbers",
            format!("{:?}", ie.rdev),
            format!("{rdev:?}"),
        ));
    }
    Ok(())
}

/// An entry's path without the trailing slash of directories.
fn te_path<R: Read>(te: &tar::Entry<'_, R>) -> Vec<u8> {
    let p = te.path_bytes();
    p.strip_suffix(b"/").unwrap_or(&p).to_vec()
}

/// The pax `mtime` record of an entry, if it has one.
fn pax_mtime<R: Read>(te: &mut tar::Entry<'_, R>) -> Result<Option<(i64, u32)>, String> {
    let Some(exts) = te.pax_extensions().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    // The first `mtime` (pieces of records whose values hold newlines, which the crate cannot parse, are not
    // records: see `xattrs`).
    for ext in exts.flatten() {
        if ext.key_bytes() == b"mtime" {
            let v = ext.value().map_err(|e| e.to_string())?;
            return tarfmt::parse_pax_time(v)
                .map(Some)
                .ok_or_else(|| format!("bad pax mtime {v:?}"));
        }
    }
    Ok(None)
}
