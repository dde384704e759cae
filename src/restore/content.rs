//! One set of a chosen backup as the restore command reads it: a local snapshot directory, an archive on the drive
//! with its index (random access: one seek per file), or an archive without an index (GNU tar's, read by scanning
//! its headers). Looks names up, gathers the entries of each [`Selection`] renamed for its target, and feeds a plan's
//! content to the [`Applier`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::engine::entry::{EntryKind, Mtime, RestoreEntry, show};
use super::engine::safety::{self, RelPath};
use super::engine::source::SnapshotTree;
use super::engine::tarscan::{HeaderCounts, Owners, Scanner};
use super::index_search::{SearchError, SortedIndex, is_under};
use super::{Action, Applier, Plan, RestoreError};
use crate::archive::sparse::{self, MapError, SparseLoc};
use crate::archive::{self, ArchiveFiles, Attrs, IndexEntry, Keys};

/// Where one set's content is read from.
#[derive(Debug, Clone)]
pub enum SetContent {
    /// A local snapshot directory: files are copied out of it, never hard-linked.
    Snapshot { root: PathBuf },
    /// An archive on the drive, with its index when there is one, and for an incremental, the same set's archives
    /// in the backups its manifest points into (by stamp).
    Archive {
        archive: ArchiveFiles,
        index: Option<ArchiveFiles>,
        chain: Vec<(String, ArchiveFiles)>,
    },
}

/// Why a set's content could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(
        "cannot read the archive {path} at {after}: {source}; the archive may be truncated or damaged \
         (check it with --verify)"
    )]
    Archive {
        path: String,
        after: String,
        source: io::Error,
    },
    /// The index does not describe the archive under a path being restored: an entry left out, one the archive
    /// lacks, a field that differs, a hard link that points elsewhere. The restore stops before writing anything.
    #[error(
        "cannot restore {path}: the index {index} does not match the archive {archive}: {problem}; the backup is \
         damaged or was changed, so nothing was restored (check it with --verify)"
    )]
    Mismatch {
        path: String,
        index: String,
        archive: String,
        problem: String,
    },
}

/// One thing to restore: a name in one set's content, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Which set (an index into the caller's list).
    pub set: usize,
    /// The name inside the backup (`data/projects/important`); the root for everything.
    pub name: RelPath,
    /// The directory the plan restores into.
    pub target: PathBuf,
    /// The leading part of names that `target` stands for (the root when `target` is `--target DIR`).
    pub strip: RelPath,
    /// Ancestors of `name` below `strip` that are missing at the destination: restored from the backup (their
    /// owner, mode and mtime) so that `name` has its real parents. Shallowest first.
    pub ancestors: Vec<RelPath>,
}

impl Selection {
    /// Whether an entry (by its checked name) belongs to this selection.
    fn wants(&self, rel: &RelPath) -> bool {
        rel.starts_with(&self.name) || self.ancestors.contains(rel)
    }

    /// The name relative to the target: `strip` removed.
    pub fn rename(&self, rel: &RelPath) -> Vec<u8> {
        if self.strip.is_root() {
            return rel.as_bytes().to_vec();
        }
        let n = self.strip.as_bytes().len();
        match rel.as_bytes().get(n..) {
            Some([b'/', rest @ ..]) if rel.as_bytes().starts_with(self.strip.as_bytes()) => {
                rest.to_vec()
            }
            _ => rel.as_bytes().to_vec(),
        }
    }
}

/// What a lookup found for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(EntryKind),
    /// Not there; the entries nearest to it (children of its deepest existing ancestor).
    Missing {
        near: Vec<RelPath>,
    },
}

/// What a hard link shares with its first name: a file's content, or a symlink's target.
#[derive(Debug, Clone)]
enum Shared {
    /// A file's content: its data offset, size and sha256, and (a sparse file) its map and data, so that a copy
    /// keeps the holes.
    Content {
        data: u64,
        size: u64,
        sha256: Option<[u8; 32]>,
        /// `sha256` is a sparse member's stored digest ([`RestoreEntry::sha256_stored`]).
        sha256_stored: bool,
        sparse: Option<SparseLoc>,
    },
    /// A symlink's target, its mode, owner and mtime.
    Symlink(RestoreEntry),
}

impl Shared {
    /// What a later hard link to `e` (a file, with `sparse` when it is a sparse one, or a symlink) shares with it.
    fn of(e: &RestoreEntry, sparse: Option<SparseLoc>) -> Shared {
        match e.kind {
            EntryKind::Symlink => Shared::Symlink(e.clone()),
            _ => Shared::Content {
                data: e.locator.unwrap_or(0),
                size: e.size,
                sha256: e.sha256,
                sha256_stored: e.sha256_stored,
                sparse,
            },
        }
    }
}

/// An archive entry with what a hard link needs to become an entry of its own: what its first name holds.
#[derive(Clone)]
struct ArchEntry {
    entry: RestoreEntry,
    /// For a hard link: what it shares with its first name, as the archive itself gives it (a scanned archive: the
    /// first name's header; an indexed one: the first name's index line, checked against its header, see
    /// [`RunCheck::link_outside`]). `None` leaves the hard link for the planner.
    shared: Option<Shared>,
    /// The index line it comes from (indexed archives): checked against the archive's header before it is applied.
    index: Option<IndexEntry>,
    /// The index line of the file whose content `shared` is (indexed archives).
    content: Option<IndexEntry>,
    /// A sparse file's map and data.
    sparse: Option<SparseLoc>,
}

/// Where an archive entry's content is, and the index line its header must agree with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub data: u64,
    pub index: Option<IndexEntry>,
    /// For a hard link restored as a copy (its first name is not restored): the index line of the file whose
    /// content it shares. Its header is checked before the content is read at its data offset, so that only
    /// content the archive's own header vouches for is written.
    pub content: Option<IndexEntry>,
    /// A sparse file's content: its map and data segments, restored with holes (`data` is then unused).
    pub sparse: Option<SparseLoc>,
}

/// One selection's entries, renamed for its target, in the order the planner wants them. Archive entries carry in
/// their `locator` an index into `locs`.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub entries: Vec<RestoreEntry>,
    pub locs: Vec<Loc>,
    /// For an archive read by scanning: every header it read (each entry is in `entries` or outside the selection).
    pub scanned: Option<HeaderCounts>,
}

impl Gathered {
    fn push(&mut self, mut e: RestoreEntry, loc: Option<Loc>) {
        e.locator = loc.map(|l| {
            self.locs.push(l);
            (self.locs.len() - 1) as u64
        });
        self.entries.push(e);
    }
}

/// Lines of the index read at most when looking for the names near a missing one.
const NEAR_SCAN_LIMIT: usize = 100_000;

/// The engine's entry for an index line: content at `data_offset`, checked against the index's sha256.
pub fn entry_of_index(e: &IndexEntry) -> RestoreEntry {
    let kind = e.kind;
    let file = kind == EntryKind::File;
    RestoreEntry {
        name: e.path.clone(),
        kind,
        mode: e.mode & 0o7777,
        uid: u32::try_from(e.uid).unwrap_or(u32::MAX),
        gid: u32::try_from(e.gid).unwrap_or(u32::MAX),
        mtime: Mtime::new(e.mtime, e.mtime_nsec),
        size: if file { e.size } else { 0 },
        link: e.link.clone(),
        sha256: if file { e.sha256.map(|d| d.0) } else { None },
        sha256_stored: file && e.sha256_is_stored(),
        locator: Some(e.data_offset),
        attrs: e.attrs.clone(),
    }
}

/// Whether `rel` is a proper ancestor of `name` (or the root, for any non-root name).
fn is_ancestor(rel: &RelPath, name: &RelPath) -> bool {
    rel != name && name.starts_with(rel)
}

impl SetContent {
    /// The same content, its archives (and index, and chain) decrypted with `keys`.
    pub fn with_keys(self, keys: Option<&Arc<Keys>>) -> SetContent {
        match self {
            SetContent::Snapshot { .. } => self,
            SetContent::Archive {
                archive,
                index,
                chain,
            } => SetContent::Archive {
                archive: archive.with_keys(keys.cloned()),
                index: index.map(|i| i.with_keys(keys.cloned())),
                chain: (chain.into_iter())
                    .map(|(stamp, a)| (stamp, a.with_keys(keys.cloned())))
                    .collect(),
            },
        }
    }

    /// For messages: the snapshot directory or the archive's file name.
    pub fn label(&self) -> String {
        match self {
            SetContent::Snapshot { root } => root.display().to_string(),
            SetContent::Archive { archive, .. } => archive.label(),
        }
    }

    /// Whether content is reached through an index (one seek per file) rather than by scanning.
    pub fn indexed(&self) -> bool {
        matches!(self, SetContent::Archive { index: Some(_), .. })
    }

    /// Visits every entry of an archive without an index, reading its headers as GNU tar does ([`Scanner`]:
    /// contents are skipped with seeks). `f` returns false to stop. Returns the headers read.
    fn scan_entries(
        &self,
        mut f: impl FnMut(ArchEntry) -> bool,
    ) -> Result<HeaderCounts, ContentError> {
        let SetContent::Archive { archive, .. } = self else {
            unreachable!("only archives are scanned")
        };
        let label = archive.label();
        let file = archive.open().map_err(|source| ContentError::Io {
            path: label.clone(),
            source,
        })?;
        let mut last = String::from("its start");
        let arch_err = |after: &str, source| ContentError::Archive {
            path: label.clone(),
            after: after.to_string(),
            source,
        };
        let mut scanner = Scanner::seekable(BufReader::with_capacity(64 << 10, file))
            .map_err(|e| arch_err(&last, e))?;
        let mut owners = Owners::by_name();
        // Files and symlinks by name, so that a hard link to one that is not restored can become a copy of it.
        let mut shared: HashMap<RelPath, Shared> = HashMap::new();
        while let Some(m) = scanner
            .next_member()
            .map_err(|e| arch_err(&format!("the entry after {last}"), e.into_io()))?
        {
            let e = m.entry(&mut owners);
            last = e.display_name();
            // A sparse member: its map was read (and checked) by the scanner; a bad one made it an entry the plan
            // refuses.
            let sparse = m
                .sparse_map()
                .filter(|_| e.kind == EntryKind::File)
                .map(|map| SparseLoc::Mapped {
                    data: m.data_offset,
                    map: map.clone(),
                });
            let copy = match e.kind {
                EntryKind::File | EntryKind::Symlink => {
                    if let Ok(rel) = safety::check_name(&e.name, None) {
                        shared.insert(rel, Shared::of(&e, sparse.clone()));
                    }
                    None
                }
                EntryKind::Hardlink => e
                    .link
                    .as_deref()
                    .and_then(|l| safety::check_name(l, None).ok())
                    .and_then(|t| shared.get(&t))
                    .cloned(),
                _ => None,
            };
            if !f(ArchEntry {
                entry: e,
                shared: copy,
                index: None,
                content: None,
                sparse,
            }) {
                break;
            }
        }
        Ok(scanner.counts())
    }

    fn search(&self) -> Result<Option<SortedIndex>, ContentError> {
        match self {
            SetContent::Archive {
                index: Some(index), ..
            } => Ok(Some(SortedIndex::open(index)?)),
            _ => Ok(None),
        }
    }

    /// Looks each name up (a name must be reached through real directories of the backup: a name below a symlink
    /// in the backup is missing). For a missing name, the nearest entries are given.
    pub fn lookup(&self, names: &[RelPath]) -> Result<Vec<Lookup>, ContentError> {
        match self {
            SetContent::Snapshot { root } => {
                Ok(names.iter().map(|n| lookup_dir(root, n)).collect())
            }
            SetContent::Archive { .. } => {
                if let Some(mut idx) = self.search()? {
                    return names.iter().map(|n| lookup_index(&mut idx, n)).collect();
                }
                let mut found: Vec<Option<EntryKind>> = vec![None; names.len()];
                // Per name: the deepest ancestor seen as a directory, and the children of each ancestor.
                let mut children: Vec<HashMap<RelPath, Vec<RelPath>>> =
                    vec![HashMap::new(); names.len()];
                let mut dirs: Vec<Vec<RelPath>> = vec![Vec::new(); names.len()];
                self.scan_entries(|a| {
                    let Ok(rel) = safety::check_name(&a.entry.name, None) else {
                        return true;
                    };
                    for (i, n) in names.iter().enumerate() {
                        if rel == *n {
                            found[i] = Some(a.entry.kind);
                        } else if let Some((parent, _)) = rel.split_last()
                            && is_ancestor(&parent, n)
                        {
                            if a.entry.kind.is_dir() && is_ancestor(&rel, n) {
                                dirs[i].push(rel.clone());
                            }
                            children[i].entry(parent).or_default().push(rel.clone());
                        }
                    }
                    true
                })?;
                Ok(names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| match found[i] {
                        Some(k) => Lookup::Found(k),
                        None => {
                            // The deepest ancestor that is a directory in the backup (else the root).
                            let deepest = dirs[i]
                                .iter()
                                .max_by_key(|d| d.depth())
                                .cloned()
                                .unwrap_or_default();
                            let pool = children[i].remove(&deepest).unwrap_or_default();
                            Lookup::Missing {
                                near: super::select::nearest_names(n, &pool, 3),
                            }
                        }
                    })
                    .collect())
            }
        }
    }

    /// Gathers the entries of each selection (which must all be of this set), renamed for their targets, in the
    /// order the engine wants them (parents first). From an indexed archive, each selection's entries are found by
    /// binary search in the index and read in order from there; an archive without one is scanned once. A name
    /// that cannot be checked (`..`, absolute, ...) is given to the first selection as it is, so that its plan
    /// refuses it loudly.
    pub fn gather(&self, sels: &[&Selection]) -> Result<Vec<Gathered>, ContentError> {
        let mut out: Vec<Gathered> = vec![Gathered::default(); sels.len()];
        match self {
            SetContent::Snapshot { root } => {
                for (i, sel) in sels.iter().enumerate() {
                    for anc in &sel.ancestors {
                        let path = root.join(std::ffi::OsStr::from_bytes(anc.as_bytes()));
                        if let Ok(meta) = std::fs::symlink_metadata(&path)
                            && meta.is_dir()
                        {
                            let mut e = RestoreEntry::from_metadata(sel.rename(anc), &meta, None);
                            e.attrs = crate::archive::xattrs::read(&path).map_err(|source| {
                                ContentError::Io {
                                    path: path.display().to_string(),
                                    source,
                                }
                            })?;
                            out[i].push(e, None);
                        }
                    }
                    let under = Path::new(std::ffi::OsStr::from_bytes(sel.name.as_bytes()));
                    for e in SnapshotTree::new(root).entries(under) {
                        let mut e = e.map_err(|e| ContentError::Io {
                            path: root.display().to_string(),
                            source: io::Error::other(e.to_string()),
                        })?;
                        let rel = safety::check_name(&e.name, None).unwrap_or_default();
                        e.name = sel.rename(&rel);
                        if e.kind == EntryKind::Hardlink
                            && let Some(t) = e
                                .link
                                .as_deref()
                                .and_then(|l| safety::check_name(l, None).ok())
                        {
                            e.link = Some(sel.rename(&t));
                        }
                        out[i].push(e, None);
                    }
                }
            }
            SetContent::Archive {
                archive,
                index,
                chain,
            } => match self.search()? {
                Some(mut idx) => {
                    let mut check = RunCheck {
                        archive,
                        index_label: index.as_ref().map(ArchiveFiles::label).unwrap_or_default(),
                        reader: None,
                        chain,
                        chain_readers: HashMap::new(),
                    };
                    for (i, sel) in sels.iter().enumerate() {
                        for anc in &sel.ancestors {
                            if let Some(e) = idx.find(anc.as_bytes())? {
                                take(&mut out[i], sel, arch_entry(e));
                            }
                        }
                        let mut run: Vec<IndexEntry> = Vec::new();
                        let pos = idx.lower_bound(sel.name.as_bytes())?;
                        idx.read_from(pos, |e| {
                            if !is_under(&e.path, sel.name.as_bytes()) {
                                return false;
                            }
                            run.push(e);
                            true
                        })?;
                        // What is restored under a directory is exactly what the archive holds there.
                        let dir = sel.name.is_root()
                            || run.first().is_some_and(|e| e.kind == EntryKind::Dir);
                        // An incremental's files kept in earlier archives are checked against their headers
                        // there; the rest is walked in this archive.
                        let (elsewhere, here): (Vec<&IndexEntry>, Vec<&IndexEntry>) =
                            run.iter().partition(|e| e.stored_in.is_some());
                        if dir {
                            let here: Vec<IndexEntry> = here.into_iter().cloned().collect();
                            check.run(&sel.name, &here)?;
                        }
                        for e in elsewhere {
                            check.referenced(e)?;
                        }
                        for e in run {
                            let a = arch_entry(e);
                            if safety::check_name(&a.entry.name, None).is_err() {
                                // Below the selection but not a name that can be checked: refused by its plan.
                                out[i].push(a.entry, None);
                                continue;
                            }
                            let a = check.link_outside(&mut idx, sel, a)?;
                            take(&mut out[i], sel, a);
                        }
                    }
                }
                None => {
                    let counts = self.scan_entries(|a| {
                        let Ok(rel) = safety::check_name(&a.entry.name, None) else {
                            if !out.is_empty() {
                                out[0].push(a.entry, None);
                            }
                            return true;
                        };
                        for (i, sel) in sels.iter().enumerate() {
                            if sel.wants(&rel) {
                                take(&mut out[i], sel, a.clone());
                            }
                        }
                        true
                    })?;
                    for g in &mut out {
                        g.scanned = Some(counts);
                    }
                }
            },
        }
        Ok(out)
    }

    /// Hands every entry of `plan` (gathered from this content for `sel`, with `gathered`'s locations) to
    /// `applier`, with the content of each file the plan writes: read from the snapshot, or from the archive with
    /// one seek. From an indexed archive, every entry written is first checked against its header in the archive
    /// (name, type, size, mode, owner, mtime, link): the index and the archive must agree, or the restore stops.
    /// `done` is told the content bytes of each entry applied.
    pub fn apply(
        &self,
        sel: &Selection,
        plan: &Plan,
        gathered: &Gathered,
        applier: &mut Applier<'_>,
        done: &mut dyn FnMut(u64),
    ) -> Result<(), RestoreError> {
        match self {
            SetContent::Snapshot { root } => {
                let base = root.join(std::ffi::OsStr::from_bytes(sel.strip.as_bytes()));
                let snap = SnapshotTree::new(base);
                for item in plan.items.iter().filter(|i| !i.implicit) {
                    if item.needs_content() {
                        let file =
                            snap.open(&item.entry)
                                .map_err(|source| RestoreError::Source {
                                    name: show(&item.entry.name),
                                    error: source,
                                })?;
                        applier.apply_file(&item.entry, &file)?;
                        done(item.entry.size);
                    } else {
                        applier.apply(&item.entry, None)?;
                    }
                }
            }
            SetContent::Archive { archive, chain, .. } => {
                apply_archive(archive, chain, plan, gathered, applier, done)
                    .map_err(|e| in_archive(e, &archive.label()))?;
            }
        }
        Ok(())
    }
    /// Every entry of a snapshot (full names, walk order), for verification; stops when `f` returns false.
    pub fn walk_entries(
        &self,
        mut f: impl FnMut(&RestoreEntry) -> bool,
    ) -> Result<(), ContentError> {
        let SetContent::Snapshot { root } = self else {
            unreachable!("archives are verified by the archive verifier")
        };
        for e in SnapshotTree::new(root).entries(Path::new("")) {
            let e = e.map_err(|e| ContentError::Io {
                path: root.display().to_string(),
                source: io::Error::other(e.to_string()),
            })?;
            if !f(&e) {
                break;
            }
        }
        Ok(())
    }
}

/// Feeds an archive's entries to `applier` (see [`SetContent::apply`]).
fn apply_archive(
    this: &ArchiveFiles,
    chain: &[(String, ArchiveFiles)],
    plan: &Plan,
    gathered: &Gathered,
    applier: &mut Applier<'_>,
    done: &mut dyn FnMut(u64),
) -> Result<(), RestoreError> {
    // One reader per archive read: this one, and those of the chain an incremental's files are kept in.
    let mut readers: HashMap<Option<String>, Option<archive::ArchiveReader>> = HashMap::new();
    // ` (its content is kept in backup <stamp>'s <archive>)`: where a file an incremental keeps in an earlier backup
    // is read from, for its errors.
    let kept_in = |stamp: &str| {
        let name = chain_archive(chain, stamp)
            .ok()
            .map(|a| a.label())
            .and_then(|l| {
                Path::new(&l)
                    .file_name()
                    .map(|n| format!("'s {}", show(n.as_bytes())))
            })
            .unwrap_or_default();
        format!(
            " (its content is kept in backup {}{name})",
            show(stamp.as_bytes())
        )
    };
    let located = |applier: &mut Applier<'_>, from: usize, stored_in: Option<&str>| {
        if let Some(stamp) = stored_in {
            applier.locate_errors(from, &kept_in(stamp));
        }
    };
    // The item whose content an earlier backup keeps, and the errors before it: its errors name that backup.
    let mut pending: Option<(usize, String)> = None;
    for item in plan.items.iter().filter(|i| !i.implicit) {
        if let Some((from, stamp)) = pending.take() {
            located(applier, from, Some(&stamp));
        }
        let errors_before = applier.summary().errors.len();
        let writes = matches!(item.action, Action::Create | Action::Replace);
        let loc = item
            .entry
            .locator
            .and_then(|l| gathered.locs.get(l as usize));
        // A hard link restored as a copy: the header of the file whose content it is vouches for that content.
        let shares = loc.and_then(|l| l.content.as_ref());
        // Each entry written is checked against its header in the archive, with two exceptions for a remote archive,
        // where a header away from the content read is a request of its own: an entry without content (a
        // directory, a symlink: the index's line, authenticated with the index, is its word), and a hard link
        // restored as a copy (its content's own header is checked, in the same request as the content).
        let check = loc
            .and_then(|l| l.index.as_ref())
            .filter(|_| writes)
            .filter(|_| !this.is_remote() || (item.needs_content() && shares.is_none()));
        if !item.needs_content() && check.is_none() {
            applier.apply(&item.entry, None)?;
            continue;
        }
        let stored_in = loc
            .and_then(|l| l.index.as_ref())
            .and_then(|i| i.stored_in.as_deref());
        pending = stored_in.map(|s| (errors_before, s.to_string()));
        let kept = stored_in.map(kept_in).unwrap_or_default();
        let source_err = |source| RestoreError::Source {
            name: format!("{}{kept}", item.path),
            error: source,
        };
        let archive = match stored_in {
            None => this,
            Some(stamp) => chain_archive(chain, stamp).map_err(source_err)?,
        };
        // A remote archive fetches this entry's header (or its content's, for a hard link made a copy) and content
        // in one request.
        if let Some(l) = loc.filter(|l| item.needs_content() && l.sparse.is_none()) {
            let start = shares
                .or(check)
                .map_or(l.data, |ie| ie.header_offset.min(l.data));
            archive.expect(start..l.data.saturating_add(item.entry.size));
        }
        let reader = readers.entry(stored_in.map(str::to_string)).or_default();
        let r = match reader {
            Some(r) => r,
            None => reader.insert(archive.open().map_err(|source| RestoreError::Source {
                name: archive.label(),
                error: source,
            })?),
        };
        if let Some(ie) = check
            && !header_holds(r, ie, None, &item.entry, applier, &source_err)?
        {
            // age's reader is not to be trusted after a failed chunk: the next entry gets a fresh one.
            *reader = None;
            continue;
        }
        if !item.needs_content() {
            applier.apply(&item.entry, None)?;
            continue;
        }
        if let Some(ce) = shares {
            if !header_holds(r, ce, Some(ce), &item.entry, applier, &source_err)? {
                *reader = None;
                continue;
            }
            if loc.map(|l| l.data) != Some(ce.data_offset) {
                return Err(source_err(io::Error::other(
                    "its content is not where the file it shares it with has it",
                )));
            }
        }
        let failed_before = applier.summary().errors.len();
        if let Some(sp) = loc.and_then(|l| l.sparse.as_ref()) {
            match sparse::open(r, sp) {
                Ok((map, mut data)) => applier.apply_sparse(&item.entry, &map, &mut data)?,
                Err(MapError::Io(e)) if e.kind() != io::ErrorKind::InvalidData => {
                    return Err(source_err(e));
                }
                // The map does not read back as the index describes it (or its encrypted chunk is damaged): this
                // entry is not restored, the others still are.
                Err(e) => applier.fail(
                    &item.entry,
                    format!("its sparse map in the backup is damaged ({e}); not restored"),
                )?,
            }
            if applier.summary().errors.len() > failed_before {
                *reader = None;
            }
            done(item.entry.size);
            continue;
        }
        let offset = loc
            .map(|l| l.data)
            .ok_or_else(|| source_err(io::Error::other("the backup gave no offset for it")))?;
        r.seek(SeekFrom::Start(offset)).map_err(source_err)?;
        applier.apply(&item.entry, Some(&mut r.take(item.entry.size)))?;
        if applier.summary().errors.len() > failed_before {
            // Its content could not be read whole (a damaged chunk): read the next entry with a fresh reader.
            *reader = None;
        }
        done(item.entry.size);
    }
    if let Some((from, stamp)) = pending.take() {
        located(applier, from, Some(&stamp));
    }
    Ok(())
}

/// Checks `ie`'s header in the archive before its content is trusted (`shared`: the header of the file whose content
/// a hard link restored as a copy shares). `Ok(false)`: its part of the archive is damaged (an encrypted chunk that
/// does not authenticate): the entry is failed, not restored, the others still are, and the caller drops the reader.
/// A header that reads but disagrees with the index stops the restore: the backup is damaged.
fn header_holds(
    r: &mut archive::ArchiveReader,
    ie: &IndexEntry,
    shared: Option<&IndexEntry>,
    entry: &RestoreEntry,
    applier: &mut Applier<'_>,
    source_err: &dyn Fn(io::Error) -> RestoreError,
) -> Result<bool, RestoreError> {
    match check_header(r, ie) {
        Ok(()) => Ok(true),
        Err(HeaderError::Read(e)) if e.kind() == io::ErrorKind::InvalidData => {
            let why = match shared {
                None => format!("its header in the backup is damaged ({e}); not restored"),
                Some(ce) => format!(
                    "the header of {}, whose content it shares, is damaged in the backup ({e}); not restored",
                    ce.display_path()
                ),
            };
            applier.fail(entry, why)?;
            Ok(false)
        }
        Err(HeaderError::Read(e)) => Err(source_err(e)),
        Err(HeaderError::Mismatch(problem)) => {
            let whose = if shared.is_some() {
                ", whose content it shares,"
            } else {
                ""
            };
            Err(source_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the archive's header for {} at offset {}{whose} disagrees with the index: {problem}; the \
                     backup is damaged (check it with --verify)",
                    ie.display_path(),
                    ie.header_offset
                ),
            )))
        }
    }
}

/// The archive of the chain, by the stamp of its backup, that an incremental's manifest points into.
fn chain_archive<'a>(
    chain: &'a [(String, ArchiveFiles)],
    stamp: &str,
) -> io::Result<&'a ArchiveFiles> {
    chain
        .iter()
        .find(|(s, _)| s == stamp)
        .map(|(_, a)| a)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "its content is kept in backup {}, whose archive of this set is missing, so this backup \
                     cannot be restored whole (`dbackup restore --list` marks it BROKEN: restore from a whole \
                     backup with --date)",
                    show(stamp.as_bytes())
                ),
            )
        })
}

/// Names the archive in an error reading it.
fn in_archive(e: RestoreError, label: &str) -> RestoreError {
    match e {
        RestoreError::Source { name, error } if !name.contains(label) => RestoreError::Source {
            name: format!("{name} in {label}"),
            error,
        },
        other => other,
    }
}

/// An index line as an archive entry. A hard link's content is not taken from its own line: see
/// [`RunCheck::link_outside`].
fn arch_entry(e: IndexEntry) -> ArchEntry {
    let sparse = (e.kind == EntryKind::File)
        .then(|| sparse_of_index(&e))
        .flatten();
    ArchEntry {
        entry: entry_of_index(&e),
        shared: None,
        index: Some(e),
        content: None,
        sparse,
    }
}

/// Where a file stored as a sparse member has its map and data, from its index line.
fn sparse_of_index(e: &IndexEntry) -> Option<SparseLoc> {
    e.sparse.map(|r| SparseLoc::Indexed {
        data: e.data_offset,
        stored: r.stored,
        size: e.size,
        sha256: r.stored_sha256,
    })
}

/// Adds an archive entry (whose name checks) to a selection: renamed, and a hard link to a file outside the
/// selection made a copy of that file's content.
fn take(out: &mut Gathered, sel: &Selection, a: ArchEntry) {
    let ArchEntry {
        mut entry,
        shared,
        index,
        mut content,
        mut sparse,
    } = a;
    let Ok(rel) = safety::check_name(&entry.name, None) else {
        out.push(entry, None);
        return;
    };
    let mut data = entry.locator.unwrap_or(0);
    entry.name = sel.rename(&rel);
    if entry.name.is_empty() {
        // The archive's root (`./`, as `tar -C dir .` writes it): the target directory itself.
        entry.name = b".".to_vec();
    }
    if entry.kind == EntryKind::Hardlink {
        let target = entry
            .link
            .as_deref()
            .and_then(|l| safety::check_hardlink_target(l, None).ok());
        match (target, shared) {
            // Linked to a file restored by the same plan: a hard link again.
            (Some(t), _) if t.starts_with(&sel.name) => {
                entry.link = Some(sel.rename(&t));
                content = None;
            }
            // Linked to a file outside what is restored: a copy of its content.
            (
                Some(_),
                Some(Shared::Content {
                    data: offset,
                    size,
                    sha256,
                    sha256_stored,
                    sparse: shared_sparse,
                }),
            ) => {
                entry.kind = EntryKind::File;
                entry.link = None;
                entry.size = size;
                entry.sha256 = sha256;
                entry.sha256_stored = sha256_stored;
                data = offset;
                sparse = shared_sparse;
            }
            // Linked to a symlink outside what is restored: a symlink of its own, with the same target.
            (Some(_), Some(Shared::Symlink(first))) => {
                entry.kind = EntryKind::Symlink;
                entry.link = first.link;
                entry.size = 0;
                entry.sha256 = None;
            }
            // Anything else is left for the planner to refuse.
            _ => content = None,
        }
    } else {
        content = None;
    }
    out.push(
        entry,
        Some(Loc {
            data,
            index,
            content,
            sparse,
        }),
    );
}

/// Looks a name up in a searchable index; for a missing one, the names nearest to it: the children of its deepest
/// ancestor that is a directory in the backup.
fn lookup_index(idx: &mut SortedIndex, name: &RelPath) -> Result<Lookup, ContentError> {
    if name.is_root() {
        return Ok(Lookup::Found(EntryKind::Dir));
    }
    if let Some(e) = idx.find(name.as_bytes())? {
        return Ok(Lookup::Found(e.kind));
    }
    let mut deepest = RelPath::root();
    for anc in name.ancestors() {
        match idx.find(anc.as_bytes())? {
            Some(e) if e.kind == EntryKind::Dir => deepest = anc,
            _ => break,
        }
    }
    let mut pool = Vec::new();
    let mut seen = 0usize;
    let pos = idx.lower_bound(deepest.as_bytes())?;
    idx.read_from(pos, |e| {
        seen += 1;
        if !is_under(&e.path, deepest.as_bytes()) || seen > NEAR_SCAN_LIMIT {
            return false;
        }
        if let Ok(rel) = safety::check_name(&e.path, None)
            && rel
                .split_last()
                .is_some_and(|(parent, _)| parent == deepest)
        {
            pool.push(rel);
        }
        true
    })?;
    Ok(Lookup::Missing {
        near: super::select::nearest_names(name, &pool, 3),
    })
}

/// Checks the header(s) at an index entry's header offset against the index: name, type, size, mode, owner,
/// mtime and link target. Leaves the reader just after the header (at the file's data).
fn check_header(r: &mut archive::ArchiveReader, ie: &IndexEntry) -> Result<(), HeaderError> {
    let len = match ie.kind {
        EntryKind::File => ie
            .data_offset
            .checked_sub(ie.header_offset)
            .filter(|l| *l >= 512 && *l <= MAX_HEADER_BYTES && l % 512 == 0)
            .ok_or_else(|| {
                HeaderError::Mismatch(format!(
                    "header offset {} and data offset {} are inconsistent",
                    ie.header_offset, ie.data_offset
                ))
            })?,
        // A hard link's data offset is its first name's: enough for a pax header (with its attribute records)
        // and the header itself.
        EntryKind::Hardlink => {
            let mut records = Vec::new();
            if let Some(a) = &ie.attrs {
                a.pax_records(&mut records);
            }
            (8 << 10) + 2 * records.len() as u64
        }
        // Other entries without content end where the index says their data would start.
        _ => ie
            .data_offset
            .checked_sub(ie.header_offset)
            .filter(|l| *l >= 512 && *l <= MAX_HEADER_BYTES && l % 512 == 0)
            .unwrap_or(8 << 10),
    };
    r.seek(SeekFrom::Start(ie.header_offset))
        .map_err(HeaderError::Read)?;
    let mut bytes = Vec::with_capacity(len as usize);
    match r.by_ref().take(len).read_to_end(&mut bytes) {
        Ok(_) => compare_header(bytes, ie, len).map_err(HeaderError::Mismatch),
        // An entry without content read a margin past its header: what was read before the error may be enough.
        Err(e) if ie.kind != EntryKind::File && !bytes.is_empty() => {
            compare_header(bytes, ie, len).map_err(|_| HeaderError::Read(e))
        }
        Err(e) => Err(HeaderError::Read(e)),
    }
}

/// [`check_header`] for the verifier: the header at an index line's offsets in `r` is that line's, or why not.
pub(crate) fn entry_header_matches(
    r: &mut archive::ArchiveReader,
    ie: &IndexEntry,
) -> Result<(), String> {
    check_header(r, ie).map_err(|e| match e {
        HeaderError::Read(e) => format!("cannot be read there: {e}"),
        HeaderError::Mismatch(why) => format!("its header there disagrees with the index: {why}"),
    })
}

/// `--verify --deep` of a file an incremental keeps in an earlier archive: every byte it stores at its line's data
/// offset in `r` read and hashed against its line (a sparse member: its map and data against the stored sha256).
/// Returns the bytes read.
pub(crate) fn entry_content_matches(
    r: &mut archive::ArchiveReader,
    ie: &IndexEntry,
) -> Result<u64, String> {
    let unreadable = |e: io::Error| format!("its content cannot be read there: {e}");
    if let Some(loc) = sparse_of_index(ie) {
        let (_, mut data) = sparse::open(r, &loc).map_err(|e| match e {
            MapError::Io(e) => unreadable(e),
            other => format!("its sparse map there is damaged: {other}"),
        })?;
        let n = io::copy(&mut data, &mut io::sink()).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                format!("its content there does not match the index ({e})")
            } else {
                unreadable(e)
            }
        })?;
        return Ok(n);
    }
    let Some(want) = ie.sha256 else {
        return Err("the index gives no sha256 for it".into());
    };
    r.seek(SeekFrom::Start(ie.data_offset))
        .map_err(unreadable)?;
    let (n, got) =
        crate::stdx::sha256_reader(&mut r.take(ie.size), &mut vec![0u8; 1 << 20], |_| {})
            .map_err(unreadable)?;
    if n != ie.size {
        return Err(format!(
            "the archive holds {n} bytes of it there, {} expected",
            ie.size
        ));
    }
    if archive::Digest(got) != want {
        return Err(format!(
            "its content there has sha256 {}, the index says {want}",
            archive::Digest(got)
        ));
    }
    Ok(n)
}

/// Why an entry's header could not be checked.
enum HeaderError {
    /// It could not be read (a damaged encrypted chunk is `InvalidData`).
    Read(io::Error),
    /// It disagrees with the index.
    Mismatch(String),
}

/// Compares the header bytes read at an index entry's header offset (`len` wanted) with the index.
pub(crate) fn compare_header(mut bytes: Vec<u8>, ie: &IndexEntry, len: u64) -> Result<(), String> {
    if ie.kind == EntryKind::File && bytes.len() as u64 != len {
        return Err("the archive ends inside it: it is truncated".into());
    }
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut entries = ar.entries().map_err(|e| e.to_string())?;
    let mut te = match entries.next() {
        Some(Ok(te)) => te,
        Some(Err(e)) => return Err(format!("no valid header there ({e})")),
        None => return Err("no header there".into()),
    };
    let got = RestoreEntry::from_tar(&mut te)
        .map_err(|e| e.to_string())?
        .ok_or("no entry header there")?;
    if ie.kind == EntryKind::File && te.raw_file_position() != len {
        return Err(format!(
            "its data starts at {}, the index says {}",
            ie.header_offset + te.raw_file_position(),
            ie.data_offset
        ));
    }
    compare_entry(&got, ie)?;
    // What the member stores: a file's content, or a sparse member's map and data.
    let stored = ie.sparse.map_or(ie.size, |r| r.stored);
    if ie.kind == EntryKind::File && te.size() != stored {
        return Err(format!(
            "it stores {} bytes, the index says {stored}{}",
            te.size(),
            if ie.sparse.is_some() {
                " (a sparse member's map and data)"
            } else {
                ""
            }
        ));
    }
    let end = usize::try_from(te.raw_file_position()).unwrap_or(usize::MAX);
    let attrs = Attrs::from_headers(bytes.get(..end).ok_or("its header is cut short")?)
        .map_err(|e| format!("its extended attributes cannot be read: {e}"))?;
    let listed = ie.attrs.as_deref().cloned().unwrap_or_default();
    if let Some(what) = listed.difference(&attrs) {
        return Err(format!(
            "its extended attributes differ from the index's ({what})"
        ));
    }
    Ok(())
}

/// Compares an entry as the archive's header describes it with its index line: name, type, size, mode, owner,
/// mtime and link target.
fn compare_entry(got: &RestoreEntry, ie: &IndexEntry) -> Result<(), String> {
    let want = entry_of_index(ie);
    let name = got.name.strip_suffix(b"/").unwrap_or(&got.name);
    let field = |what: &str, archive: String, index: String| {
        Err(format!(
            "its {what} is {archive} in the archive, {index} in the index"
        ))
    };
    if name != want.name.as_slice() {
        return field("name", show(name), show(&want.name));
    }
    if got.kind != want.kind {
        return field("type", got.kind.to_string(), want.kind.to_string());
    }
    if got.size != want.size {
        return field("size", got.size.to_string(), want.size.to_string());
    }
    if got.mode != want.mode {
        return field(
            "mode",
            format!("{:04o}", got.mode),
            format!("{:04o}", want.mode),
        );
    }
    if (got.uid, got.gid) != (want.uid, want.gid) {
        return field(
            "owner",
            format!("{}:{}", got.uid, got.gid),
            format!("{}:{}", want.uid, want.gid),
        );
    }
    if got.mtime != want.mtime {
        return field(
            "mtime",
            format!("{}.{:09}", got.mtime.sec, got.mtime.nsec),
            format!("{}.{:09}", want.mtime.sec, want.mtime.nsec),
        );
    }
    if got.link != want.link {
        let l = |l: &Option<Vec<u8>>| l.as_deref().map(show).unwrap_or_default();
        return field("link target", l(&got.link), l(&want.link));
    }
    Ok(())
}

/// Checks, before anything is written, that what an index says about a selection is what the archive holds.
struct RunCheck<'a> {
    archive: &'a ArchiveFiles,
    index_label: String,
    /// The archive, opened on first need.
    reader: Option<archive::ArchiveReader>,
    /// The archives an incremental's manifest points into, and their readers once opened.
    chain: &'a [(String, ArchiveFiles)],
    chain_readers: HashMap<String, archive::ArchiveReader>,
}

impl RunCheck<'_> {
    fn mismatch(&self, path: &[u8], problem: String) -> ContentError {
        ContentError::Mismatch {
            path: abs_shown(path),
            index: self.index_label.clone(),
            archive: self.archive.label(),
            problem,
        }
    }

    fn reader(&mut self) -> Result<&mut archive::ArchiveReader, ContentError> {
        if self.reader.is_none() {
            let r = self.archive.open().map_err(|source| ContentError::Io {
                path: self.archive.label(),
                source,
            })?;
            self.reader = Some(r);
        }
        Ok(self.reader.as_mut().expect("opened above"))
    }

    /// An incremental's file kept in an earlier archive of the chain: its header there must be its line's (name,
    /// type, size, mode, owner, mtime, data offset), or the restore stops before anything is written. In a remote
    /// archive, where reading it now would be a request of its own, it is checked when its content is read, in
    /// the same request (`apply_archive`).
    fn referenced(&mut self, e: &IndexEntry) -> Result<(), ContentError> {
        let stamp = e.stored_in.as_deref().unwrap_or_default();
        let files = chain_archive(self.chain, stamp).map_err(|source| ContentError::Io {
            path: abs_shown(&e.path),
            source,
        })?;
        if files.is_remote() {
            return Ok(());
        }
        if !self.chain_readers.contains_key(stamp) {
            let r = files.open().map_err(|source| ContentError::Io {
                path: files.label(),
                source,
            })?;
            self.chain_readers.insert(stamp.to_string(), r);
        }
        let r = self.chain_readers.get_mut(stamp).expect("opened above");
        match check_header(r, e) {
            Ok(()) => Ok(()),
            Err(HeaderError::Read(source)) => Err(ContentError::Archive {
                path: files.label(),
                after: e.display_path(),
                source,
            }),
            Err(HeaderError::Mismatch(why)) => Err(ContentError::Mismatch {
                path: abs_shown(&e.path),
                index: self.index_label.clone(),
                archive: files.label(),
                problem: why,
            }),
        }
    }

    /// Walks the archive's headers from the first entry of `run` (the index lines of a directory `name` and
    /// everything below it, in order) side by side with the lines: every header must be its line's (name, type,
    /// size, mode, owner, mtime, link target, data offset), and the header after the last line must not lie
    /// under `name` (or the archive ends). So an entry the index leaves out, or lists but the archive lacks there,
    /// stops the restore of `name` before anything is written, instead of being skipped.
    fn run(&mut self, name: &RelPath, run: &[IndexEntry]) -> Result<(), ContentError> {
        let Some(first) = run.first() else {
            return Ok(());
        };
        if name.is_root() && first.header_offset != 0 {
            return Err(self.mismatch(
                name.as_bytes(),
                format!(
                    "its first entry {} is at offset {}, not at the archive's start",
                    first.display_path(),
                    first.header_offset
                ),
            ));
        }
        let label = self.archive.label();
        let base = first.header_offset;
        let read_err = |after: String, source: io::Error| ContentError::Archive {
            path: label.clone(),
            after,
            source,
        };
        let mut problem: Option<(Vec<u8>, String)> = None;
        {
            let r = self.reader()?;
            r.seek(SeekFrom::Start(base))
                .map_err(|e| read_err(first.display_path(), e))?;
            let mut ar = tar::Archive::new(FromOffset::new(r, base));
            let mut entries = ar
                .entries_with_seek()
                .map_err(|e| read_err(first.display_path(), e))?;
            // The next entry of the archive that describes a file (PAX global headers are skipped).
            // `after`: the entry before (named in an error); none before the first.
            let mut next =
                |after: Option<&IndexEntry>| -> Result<Option<(RestoreEntry, u64)>, ContentError> {
                    let shown = || match after {
                        Some(e) => format!(
                            "the entry after {} (offset {})",
                            e.display_path(),
                            e.header_offset
                        ),
                        None => format!("{} (offset {base})", first.display_path()),
                    };
                    loop {
                        match entries.next() {
                            None => return Ok(None),
                            Some(Err(e)) => {
                                return Err(read_err(shown(), e));
                            }
                            Some(Ok(mut te)) => {
                                let got = RestoreEntry::from_tar(&mut te)
                                    .map_err(|e| read_err(shown(), e))?;
                                if let Some(mut got) = got {
                                    if let Some(n) = got.name.strip_suffix(b"/") {
                                        got.name = n.to_vec();
                                    }
                                    return Ok(Some((got, base + te.raw_file_position())));
                                }
                            }
                        }
                    }
                };
            let mut after = None;
            for ie in run {
                match next(after)? {
                    None => {
                        problem = Some((
                            ie.path.clone(),
                            format!(
                                "the index lists {} at offset {}, and the archive ends before it",
                                abs_shown(&ie.path),
                                ie.header_offset
                            ),
                        ));
                        break;
                    }
                    Some((got, data)) => {
                        if got.name != ie.path {
                            let what = if cmp_names(&got.name, &ie.path) == std::cmp::Ordering::Less
                            {
                                format!(
                                    "the archive holds {} (its data at offset {data}), which the index leaves out",
                                    abs_shown(&got.name)
                                )
                            } else {
                                format!(
                                    "the index lists {} at offset {}, which the archive does not hold \
                                     there (it has {})",
                                    abs_shown(&ie.path),
                                    ie.header_offset,
                                    abs_shown(&got.name)
                                )
                            };
                            problem = Some((ie.path.clone(), what));
                            break;
                        }
                        let offset = if ie.kind == EntryKind::Hardlink {
                            Ok(())
                        } else if data != ie.data_offset {
                            Err(format!(
                                "its data starts at {data} in the archive, the index says {}",
                                ie.data_offset
                            ))
                        } else {
                            Ok(())
                        };
                        if let Err(why) = offset.and_then(|()| compare_entry(&got, ie)) {
                            problem =
                                Some((ie.path.clone(), format!("{}: {why}", abs_shown(&ie.path))));
                            break;
                        }
                        after = Some(ie);
                    }
                }
            }
            if problem.is_none()
                && let Some((got, data)) = next(after)?
                && is_under(&got.name, name.as_bytes())
            {
                problem = Some((
                    got.name.clone(),
                    format!(
                        "the archive holds {} (its data at offset {data}), which the index leaves out",
                        abs_shown(&got.name)
                    ),
                ));
            }
        }
        match problem {
            Some((_, why)) => Err(self.mismatch(name.as_bytes(), why)),
            None => Ok(()),
        }
    }

    /// A hard link whose first name is not restored with it becomes a copy of that file's content: the file's own
    /// index line is found and checked against its header in the archive (a remote archive: when its content is
    /// read, in the same request), and must agree with the link's line (data offset, size, sha256). The content then comes from where the archive's header for that file puts it,
    /// never from an offset only the hard link's line gives. A hard link to a symlink becomes a symlink of its own,
    /// with the target the symlink's checked header gives. Other entries pass through.
    fn link_outside(
        &mut self,
        idx: &mut SortedIndex,
        sel: &Selection,
        mut a: ArchEntry,
    ) -> Result<ArchEntry, ContentError> {
        let Some(line) = a.index.as_ref() else {
            return Ok(a);
        };
        if line.kind != EntryKind::Hardlink {
            return Ok(a);
        }
        let Some(target) = line
            .link
            .as_deref()
            .and_then(|l| safety::check_hardlink_target(l, None).ok())
        else {
            return Ok(a); // refused by the planner
        };
        if target.starts_with(&sel.name) {
            return Ok(a); // linked again to the file restored with it
        }
        let path = line.path.clone();
        let shown = line.display_path();
        let Some(t) = idx.find(target.as_bytes())? else {
            return Err(self.mismatch(
                &path,
                format!(
                    "the hard link {shown} points to {}, which the index does not list",
                    target.display()
                ),
            ));
        };
        if !matches!(t.kind, EntryKind::File | EntryKind::Symlink) {
            return Err(self.mismatch(
                &path,
                format!(
                    "the hard link {shown} points to {}, which is a {}, not a file or a symlink",
                    t.display_path(),
                    t.kind.name()
                ),
            ));
        }
        if (line.data_offset, line.size, line.sha256, line.sparse)
            != (t.data_offset, t.size, t.sha256, t.sparse)
        {
            return Err(self.mismatch(
                &path,
                format!(
                    "the hard link {shown} gives its content at offset {} ({} bytes), but the file it links to, \
                     {}, has its content at offset {} ({} bytes)",
                    line.data_offset,
                    line.size,
                    t.display_path(),
                    t.data_offset,
                    t.size
                ),
            ));
        }
        // Its header, here on a local archive; on a remote one, where it would be a request of its own, with the
        // content it vouches for (`apply_archive`), and a symlink's target is the index's word, as a symlink's.
        let checked = if self.archive.is_remote() {
            Ok(())
        } else {
            let r = self.reader()?;
            check_header(r, &t)
        };
        match checked {
            Ok(()) => {}
            Err(HeaderError::Read(e)) => {
                return Err(ContentError::Archive {
                    path: self.archive.label(),
                    after: t.display_path(),
                    source: e,
                });
            }
            Err(HeaderError::Mismatch(why)) => {
                return Err(self.mismatch(
                    &path,
                    format!(
                        "the archive's header for {} (which the hard link {shown} links to) disagrees with the \
                         index: {why}",
                        t.display_path()
                    ),
                ));
            }
        }
        if t.kind == EntryKind::Symlink {
            // A hard link to a symlink: a symlink of its own, with the target the archive's header gives (checked
            // equal to the index's line above).
            a.shared = Some(Shared::Symlink(entry_of_index(&t)));
            return Ok(a);
        }
        a.shared = Some(Shared::Content {
            data: t.data_offset,
            size: t.size,
            sha256: t.sha256.map(|d| d.0),
            sha256_stored: t.sha256_is_stored(),
            sparse: sparse_of_index(&t),
        });
        a.content = Some(t);
        Ok(a)
    }
}

/// A buffered reader seen from `base` on: position 0 is `base` of `inner` (the `tar` crate takes a seekable
/// archive's positions as its own offsets from its start). The short forward seeks over small files' contents stay
/// inside the buffer, so walking the headers of many small files costs few reads.
struct FromOffset<R> {
    inner: io::BufReader<R>,
    base: u64,
    /// The position, relative to `base`.
    pos: u64,
}

impl<R: Read + Seek> FromOffset<R> {
    /// `inner` must be positioned at `base`.
    fn new(inner: R, base: u64) -> FromOffset<R> {
        FromOffset {
            inner: io::BufReader::with_capacity(64 << 10, inner),
            base,
            pos: 0,
        }
    }
}

impl<R: Read> Read for FromOffset<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for FromOffset<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let out_of_range = || io::Error::other("seek position out of range");
        match to {
            SeekFrom::Current(d) => {
                let pos = self.pos.checked_add_signed(d).ok_or_else(out_of_range)?;
                self.inner.seek_relative(d)?;
                self.pos = pos;
            }
            SeekFrom::Start(n) => {
                let at = self.base.checked_add(n).ok_or_else(out_of_range)?;
                self.inner.seek(SeekFrom::Start(at))?;
                self.pos = n;
            }
            SeekFrom::End(_) => {
                let at = self.inner.seek(to)?;
                self.pos = at.checked_sub(self.base).ok_or_else(out_of_range)?;
            }
        }
        Ok(self.pos)
    }
}

/// A backup name shown as the absolute path it was on the backed-up machine.
fn abs_shown(name: &[u8]) -> String {
    let mut p = b"/".to_vec();
    p.extend_from_slice(name);
    show(&p)
}

/// Orders names as the archive does (component by component).
fn cmp_names(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    super::index_search::cmp_paths(a, b)
}

/// Largest header (pax records included) accepted when checking an entry's header.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Looks a name up in a directory tree without following symlinks on the way.
fn lookup_dir(root: &Path, name: &RelPath) -> Lookup {
    let mut at = root.to_path_buf();
    let mut rel = RelPath::root();
    let comps: Vec<&[u8]> = name.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let next = at.join(std::ffi::OsStr::from_bytes(c));
        let meta = std::fs::symlink_metadata(&next);
        let last = i + 1 == comps.len();
        match meta {
            Ok(m) if last => {
                let kind = RestoreEntry::from_metadata(Vec::new(), &m, None).kind;
                return Lookup::Found(kind);
            }
            Ok(m) if m.is_dir() => {
                at = next;
                rel = rel.join(c);
            }
            _ => break,
        }
    }
    if name.is_root() {
        return Lookup::Found(EntryKind::Dir);
    }
    let mut pool = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&at) {
        for e in entries.flatten() {
            pool.push(rel.join(e.file_name().as_bytes()));
        }
    }
    Lookup::Missing {
        near: super::select::nearest_names(name, &pool, 3),
    }
}

/// Opens a file for reading (for verification): content of a snapshot file, never following a symlink at its name.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}
