//! One set of a chosen backup as the restore command reads it: a local snapshot directory, an archive on the drive
//! with its index (random access: one seek per file), or an archive without an index (GNU tar's, read by scanning
//! its headers). Looks names up, gathers the entries of each [`Selection`] renamed for its target, and feeds a plan's
//! content to the [`Applier`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::entry::{EntryKind, Mtime, RestoreEntry, show};
use super::safety::{self, RelPath};
use super::source::Snapshot;
use super::{Applier, Plan, RestoreError};
use crate::archive::index::IndexReader;
use crate::archive::{self, ArchiveFiles, IndexEntry};

/// Where one set's content is read from.
#[derive(Debug, Clone)]
pub enum SetContent {
    /// A local snapshot directory: files are copied out of it, never hard-linked.
    Snapshot { root: PathBuf },
    /// An archive on the drive, with its index when there is one.
    Archive {
        archive: ArchiveFiles,
        index: Option<ArchiveFiles>,
    },
}

/// Why a set's content could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot read the index {path}: {source}")]
    Index {
        path: String,
        source: archive::IndexError,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "cannot read the archive {path} at {after}: {source}; the archive may be truncated or damaged \
         (check it with --verify)"
    )]
    Archive {
        path: String,
        after: String,
        source: io::Error,
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

/// An archive entry with what a hard link needs to become a file of its own: its first name's content.
struct ArchEntry {
    entry: RestoreEntry,
    /// For a hard link: the data offset, size and sha256 of the content it shares.
    shared: Option<(u64, u64, Option<[u8; 32]>)>,
}

/// The engine's kind for an index (or archive writer) kind.
pub fn kind_of_index(k: archive::EntryKind) -> EntryKind {
    match k {
        archive::EntryKind::File => EntryKind::File,
        archive::EntryKind::Hardlink => EntryKind::Hardlink,
        archive::EntryKind::Symlink => EntryKind::Symlink,
        archive::EntryKind::Dir => EntryKind::Dir,
        archive::EntryKind::Fifo => EntryKind::Fifo,
        archive::EntryKind::Char => EntryKind::CharDevice,
        archive::EntryKind::Block => EntryKind::BlockDevice,
    }
}

/// The engine's entry for an index line: content at `data_offset`, checked against the index's sha256.
pub fn entry_of_index(e: &IndexEntry) -> RestoreEntry {
    let kind = kind_of_index(e.kind);
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
        locator: Some(e.data_offset),
    }
}

/// Whether `rel` is a proper ancestor of `name` (or the root, for any non-root name).
fn is_ancestor(rel: &RelPath, name: &RelPath) -> bool {
    rel != name && name.starts_with(rel)
}

impl SetContent {
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

    /// Visits every archive entry in archive order. `f` returns false to stop.
    fn each_archive_entry(&self, mut f: impl FnMut(ArchEntry) -> bool) -> Result<(), ContentError> {
        let SetContent::Archive { archive, index } = self else {
            unreachable!("only archives have entries to visit")
        };
        match index {
            Some(index) => {
                let label = index.label();
                let io_err = |source| ContentError::Io {
                    path: label.clone(),
                    source,
                };
                let file = index.open().map_err(io_err)?;
                let mut reader = IndexReader::new(BufReader::with_capacity(1 << 20, file))
                    .map_err(|source| ContentError::Index {
                        path: label.clone(),
                        source,
                    })?;
                while let Some(e) = reader.next_entry().map_err(|source| ContentError::Index {
                    path: label.clone(),
                    source,
                })? {
                    let shared = (e.kind == archive::EntryKind::Hardlink)
                        .then(|| (e.data_offset, e.size, e.sha256.map(|d| d.0)));
                    if !f(ArchEntry {
                        entry: entry_of_index(&e),
                        shared,
                    }) {
                        break;
                    }
                }
                Ok(())
            }
            None => {
                let label = archive.label();
                let file = archive.open().map_err(|source| ContentError::Io {
                    path: label.clone(),
                    source,
                })?;
                let mut ar = tar::Archive::new(BufReader::with_capacity(64 << 10, file));
                let mut last = String::from("its start");
                let arch_err = |after: &str, source| ContentError::Archive {
                    path: label.clone(),
                    after: after.to_string(),
                    source,
                };
                let entries = ar.entries_with_seek().map_err(|e| arch_err(&last, e))?;
                // Files by name, so that a hard link to one that is not restored can become a copy of it.
                let mut files: HashMap<RelPath, (u64, u64)> = HashMap::new();
                for te in entries {
                    let mut te = te.map_err(|e| arch_err(&format!("the entry after {last}"), e))?;
                    let Some(e) =
                        RestoreEntry::from_tar(&mut te).map_err(|e| arch_err(&last, e))?
                    else {
                        continue;
                    };
                    last = e.display_name();
                    let shared = match e.kind {
                        EntryKind::File => {
                            if let Ok(rel) = safety::check_name(&e.name, None) {
                                files.insert(rel, (e.locator.unwrap_or(0), e.size));
                            }
                            None
                        }
                        EntryKind::Hardlink => e
                            .link
                            .as_deref()
                            .and_then(|l| safety::check_name(l, None).ok())
                            .and_then(|t| files.get(&t))
                            .map(|&(offset, size)| (offset, size, None)),
                        _ => None,
                    };
                    if !f(ArchEntry { entry: e, shared }) {
                        break;
                    }
                }
                Ok(())
            }
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
                let mut found: Vec<Option<EntryKind>> = vec![None; names.len()];
                // Per name: the deepest ancestor seen as a directory, and the children of each ancestor.
                let mut children: Vec<HashMap<RelPath, Vec<RelPath>>> =
                    vec![HashMap::new(); names.len()];
                let mut dirs: Vec<Vec<RelPath>> = vec![Vec::new(); names.len()];
                self.each_archive_entry(|a| {
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
    /// order the engine wants them (parents first). A name that cannot be checked (`..`, absolute, ...) is given to
    /// the first selection as it is, so that its plan refuses it loudly.
    pub fn gather(&self, sels: &[&Selection]) -> Result<Vec<Vec<RestoreEntry>>, ContentError> {
        let mut out: Vec<Vec<RestoreEntry>> = vec![Vec::new(); sels.len()];
        match self {
            SetContent::Snapshot { root } => {
                for (i, sel) in sels.iter().enumerate() {
                    for anc in &sel.ancestors {
                        let path = root.join(std::ffi::OsStr::from_bytes(anc.as_bytes()));
                        if let Ok(meta) = std::fs::symlink_metadata(&path)
                            && meta.is_dir()
                        {
                            out[i].push(RestoreEntry::from_metadata(sel.rename(anc), &meta, None));
                        }
                    }
                    let under = Path::new(std::ffi::OsStr::from_bytes(sel.name.as_bytes()));
                    for e in Snapshot::new(root).entries(under) {
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
                        out[i].push(e);
                    }
                }
            }
            SetContent::Archive { .. } => {
                self.each_archive_entry(|a| {
                    let ArchEntry { entry, shared } = a;
                    let Ok(rel) = safety::check_name(&entry.name, None) else {
                        if !out.is_empty() {
                            out[0].push(entry);
                        }
                        return true;
                    };
                    for (i, sel) in sels.iter().enumerate() {
                        if !sel.wants(&rel) {
                            continue;
                        }
                        let mut e = entry.clone();
                        e.name = sel.rename(&rel);
                        if e.kind == EntryKind::Hardlink {
                            let target = e
                                .link
                                .as_deref()
                                .and_then(|l| safety::check_hardlink_target(l, None).ok());
                            match (target, shared) {
                                // Linked to a file restored by the same plan: a hard link again.
                                (Some(t), _) if t.starts_with(&sel.name) => {
                                    e.link = Some(sel.rename(&t))
                                }
                                // Linked to a file outside what is restored: a copy of its content.
                                (Some(_), Some((offset, size, sha256))) => {
                                    e.kind = EntryKind::File;
                                    e.link = None;
                                    e.size = size;
                                    e.sha256 = sha256;
                                    e.locator = Some(offset);
                                }
                                // Anything else is left for the planner to refuse.
                                _ => {}
                            }
                        }
                        out[i].push(e);
                    }
                    true
                })?;
            }
        }
        Ok(out)
    }

    /// Hands every entry of `plan` (gathered from this content for `sel`) to `applier`, with the content of each
    /// file the plan writes: read from the snapshot, or from the archive with one seek to its offset. `done` is
    /// told the content bytes of each entry applied.
    pub fn apply(
        &self,
        sel: &Selection,
        plan: &Plan,
        applier: &mut Applier<'_>,
        done: &mut dyn FnMut(u64),
    ) -> Result<(), RestoreError> {
        match self {
            SetContent::Snapshot { root } => {
                let base = root.join(std::ffi::OsStr::from_bytes(sel.strip.as_bytes()));
                let snap = Snapshot::new(base);
                for item in plan.items.iter().filter(|i| !i.implicit) {
                    if item.needs_content() {
                        let mut file =
                            snap.open(&item.entry)
                                .map_err(|source| RestoreError::Source {
                                    name: show(&item.entry.name),
                                    source,
                                })?;
                        applier.apply(&item.entry, Some(&mut file))?;
                        done(item.entry.size);
                    } else {
                        applier.apply(&item.entry, None)?;
                    }
                }
            }
            SetContent::Archive { archive, .. } => {
                let mut reader: Option<archive::PartsReader> = None;
                for item in plan.items.iter().filter(|i| !i.implicit) {
                    if !item.needs_content() {
                        applier.apply(&item.entry, None)?;
                        continue;
                    }
                    let r = match &mut reader {
                        Some(r) => r,
                        None => reader.insert(archive.open().map_err(|source| {
                            RestoreError::Source {
                                name: archive.label(),
                                source,
                            }
                        })?),
                    };
                    let offset = item.entry.locator.ok_or_else(|| RestoreError::Source {
                        name: item.path.clone(),
                        source: io::Error::other("the backup gave no offset for it"),
                    })?;
                    r.seek(SeekFrom::Start(offset))
                        .map_err(|source| RestoreError::Source {
                            name: item.path.clone(),
                            source,
                        })?;
                    applier.apply(&item.entry, Some(&mut r.take(item.entry.size)))?;
                    done(item.entry.size);
                }
            }
        }
        Ok(())
    }

    /// Every entry (full names, archive or walk order) with its kind and size, for `--verify`'s list of what a
    /// restore would write; stops when `f` returns false.
    pub fn walk_entries(
        &self,
        mut f: impl FnMut(&RestoreEntry) -> bool,
    ) -> Result<(), ContentError> {
        match self {
            SetContent::Snapshot { root } => {
                for e in Snapshot::new(root).entries(Path::new("")) {
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
            SetContent::Archive { .. } => self.each_archive_entry(|a| f(&a.entry)),
        }
    }
}

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
