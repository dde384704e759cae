//! Feeding the engine: a tar archive (planned from its headers, then streamed) and a snapshot directory (walked, then
//! each file opened), the two sources a restore reads.
//!
//! An indexed archive needs nothing from here: plan from the index's entries, then for each
//! [`PlanItem`](super::PlanItem) that [needs content](super::PlanItem::needs_content) seek to its
//! [`locator`](super::RestoreEntry::locator) and hand `file.take(size)` to [`Applier::apply`](super::Applier::apply).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::RestoreError;
use super::entry::RestoreEntry;
#[cfg(test)]
use {
    super::entry::{EntryKind, show},
    super::tarscan::{Member, Owners, Scanner},
    super::{Applier, Plan, Planner},
    std::io::{Read, Seek},
};

/// Which entries to restore: `|_| true` for all. The same selection must be used for both passes.
#[cfg(test)]
pub trait Select: FnMut(&RestoreEntry) -> bool {}
#[cfg(test)]
impl<F: FnMut(&RestoreEntry) -> bool> Select for F {}

/// Pass 1 over a tar archive that can seek (a file): every selected entry's header is planned; content is
/// skipped with seeks, so this costs one read per header. The archive is read as GNU tar reads it ([`Scanner`]).
#[cfg(test)]
pub fn plan_tar<R: Read + Seek>(archive: R, planner: &mut Planner) -> Result<(), RestoreError> {
    plan_tar_selected(archive, planner, |_: &RestoreEntry| true)
}

/// [`plan_tar`] for the selected entries only.
#[cfg(test)]
pub fn plan_tar_selected<R: Read + Seek>(
    archive: R,
    planner: &mut Planner,
    select: impl Select,
) -> Result<(), RestoreError> {
    let mut scanner =
        Scanner::seekable(archive).map_err(|e| source_error("the start of the archive", e))?;
    each_selected(&mut scanner, select, |_, _, e| planner.add(e).map(drop))
}

/// Pass 2: streams a tar archive and applies each selected entry with its content.
#[cfg(test)]
pub fn apply_tar<R: Read>(archive: R, applier: &mut Applier<'_>) -> Result<(), RestoreError> {
    apply_tar_selected(archive, applier, |_: &RestoreEntry| true)
}

/// [`apply_tar`] for the selected entries only.
#[cfg(test)]
pub fn apply_tar_selected<R: Read>(
    archive: R,
    applier: &mut Applier<'_>,
    select: impl Select,
) -> Result<(), RestoreError> {
    let mut scanner = Scanner::new(archive);
    each_selected(&mut scanner, select, |scanner, m, e| {
        // A sparse member: the scanner read its map; its content is its data segments, written with holes.
        match m.sparse_map().filter(|_| e.kind == EntryKind::File) {
            Some(map) => applier.apply_sparse(&e, map, &mut scanner.content()),
            None => applier.apply(&e, Some(&mut scanner.content())),
        }
    })
}

/// Each member of the archive that `select` takes, with its entry, in the archive's order: `f` plans or applies it.
#[cfg(test)]
fn each_selected<R: Read>(
    scanner: &mut Scanner<R>,
    mut select: impl Select,
    mut f: impl FnMut(&mut Scanner<R>, &Member, RestoreEntry) -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let mut owners = Owners::by_name();
    let mut last = String::from("the start of the archive");
    while let Some(m) = scanner
        .next_member()
        .map_err(|e| source_error(&format!("the entry after {last}"), e.into_io()))?
    {
        let e = m.entry(&mut owners);
        last = e.display_name();
        if select(&e) {
            f(scanner, &m, e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
fn source_error(name: &str, source: io::Error) -> RestoreError {
    RestoreError::Source {
        name: name.to_string(),
        error: source,
    }
}

/// A local snapshot directory as a source (its tree; `snapshot::Snapshot` is the backup root's record of one). Its
/// files are copied, never hard-linked out of the snapshot.
pub struct SnapshotTree {
    root: PathBuf,
}

impl SnapshotTree {
    pub fn new(root: impl Into<PathBuf>) -> SnapshotTree {
        SnapshotTree { root: root.into() }
    }

    /// The entries at and below `under` (relative to the snapshot's root; empty for all of it, the root itself
    /// excluded), parents before children, names sorted, symlinks never followed. The second and later names of a
    /// hard-linked file come as [`super::EntryKind::Hardlink`] entries naming the first.
    pub fn entries(
        &self,
        under: &Path,
    ) -> impl Iterator<Item = Result<RestoreEntry, RestoreError>> + use<> {
        let root = self.root.clone();
        let start = self.root.join(under);
        let skip_root = under.as_os_str().is_empty();
        let mut first_names: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter(move |e| !(skip_root && e.as_ref().is_ok_and(|e| e.depth() == 0)))
            .map(move |e| {
                let e = e.map_err(|err| {
                    let path = err
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| start.clone());
                    RestoreError::Walk {
                        path,
                        source: err.into(),
                    }
                })?;
                let walk_err = |source| RestoreError::Walk {
                    path: e.path().to_path_buf(),
                    source,
                };
                let meta = e.metadata().map_err(|err| walk_err(err.into()))?;
                let name = e
                    .path()
                    .strip_prefix(&root)
                    .expect("walked below the root")
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                let ft = meta.file_type();
                // The second and later names of a file or symlink with several (`rsync -H` keeps hard-linked
                // symlinks): hard links to the first.
                if (ft.is_file() || ft.is_symlink()) && meta.nlink() > 1 {
                    match first_names.get(&(meta.dev(), meta.ino())) {
                        Some(first) => {
                            let mut e = RestoreEntry::from_metadata(name, &meta, None);
                            e.kind = super::EntryKind::Hardlink;
                            e.link = Some(first.clone());
                            e.size = 0;
                            return Ok(e);
                        }
                        None => {
                            first_names.insert((meta.dev(), meta.ino()), name.clone());
                        }
                    }
                }
                let link = if ft.is_symlink() {
                    Some(
                        std::fs::read_link(e.path())
                            .map_err(walk_err)?
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                    )
                } else {
                    None
                };
                let mut entry = RestoreEntry::from_metadata(name, &meta, link);
                if !meta.file_type().is_socket() {
                    entry.attrs = crate::archive::xattrs::read(e.path()).map_err(|source| {
                        walk_err(io::Error::new(
                            source.kind(),
                            format!("cannot read its extended attributes and ACLs: {source}"),
                        ))
                    })?;
                }
                Ok(entry)
            })
    }

    /// Opens a file entry's content (never following a symlink at its name).
    pub fn open(&self, entry: &RestoreEntry) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.root.join(std::ffi::OsStr::from_bytes(&entry.name)))
    }

    /// Pass 1: plans the entries at and below `under`.
    #[cfg(test)]
    pub fn plan(&self, under: &Path, planner: &mut Planner) -> Result<(), RestoreError> {
        for e in self.entries(under) {
            planner.add(e?)?;
        }
        Ok(())
    }

    /// Pass 2: applies a plan made by [`SnapshotTree::plan`], opening each file that needs content.
    #[cfg(test)]
    pub fn apply(&self, plan: &Plan, applier: &mut Applier<'_>) -> Result<(), RestoreError> {
        for item in plan.items.iter().filter(|i| !i.implicit) {
            if item.needs_content() {
                let file = self
                    .open(&item.entry)
                    .map_err(|source| RestoreError::Source {
                        name: show(&item.entry.name),
                        error: source,
                    })?;
                applier.apply_file(&item.entry, &file)?;
            } else {
                applier.apply(&item.entry, None)?;
            }
        }
        Ok(())
    }
}

/// Whether an entry lies at or below `prefix` (both as names relative to the backup's root, `./` tolerated):
/// the usual [`Select`] for restoring one path.
#[cfg(test)]
pub fn under(prefix: &[u8]) -> impl FnMut(&RestoreEntry) -> bool + use<> {
    let prefix = super::safety::check_name(prefix, None).ok();
    move |e: &RestoreEntry| match (&prefix, super::safety::check_name(&e.name, None)) {
        (Some(p), Ok(n)) => n.starts_with(p),
        // A name that cannot be checked is selected, so that the plan refuses it loudly.
        (_, Err(_)) => true,
        (None, _) => false,
    }
}
