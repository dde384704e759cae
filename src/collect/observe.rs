//! Looking before planning: what the sources and the backup root hold right now. Reads only; changes nothing
//! (except the xattr probe of a real run, which writes and removes one temporary file in the backup root).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::rsync::{self, Capabilities, FsSupport};
use crate::settings::{SetSettings, Settings, SourcePath};
use crate::snapshot::{self, Layout, Snapshot, SnapshotState};

/// Everything the planner needs to know, gathered once.
#[derive(Debug, Clone)]
pub struct World {
    pub root: PathBuf,
    pub root_exists: bool,
    /// Permission bits of the backup root, when it exists.
    pub root_mode: Option<u32>,
    pub rsync: Capabilities,
    pub fs: FsSupport,
    pub sets: Vec<SetWorld>,
}

/// One set's sources and snapshots.
#[derive(Debug, Clone)]
pub struct SetWorld {
    pub name: String,
    pub sources: Vec<SourceState>,
    /// Oldest first.
    pub snapshots: Vec<Snapshot>,
    /// The snapshot `<set>-latest` points at.
    pub latest: Option<String>,
    /// `.<set>.in-progress` exists: a run was interrupted.
    pub in_progress: bool,
    /// `.<set>.partial` exists: an earlier interrupted run's copy.
    pub partial: bool,
    /// Directories skipped for what they hold (`exclude_caches`, `exclude_if_present`).
    pub marked: super::marked::Found,
}

/// What a source is, seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Directory,
    File,
    /// A device, socket, fifo: rsync copies it as such.
    Other,
    Missing,
}

/// A source, looked at now.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub source: SourcePath,
    /// Symlinks resolved now; `None` when the source (or its link's target) does not exist.
    pub resolved: Option<PathBuf>,
    pub kind: SourceKind,
    /// Top-level entries of a directory source.
    pub entries: Option<u64>,
    /// Top-level entries of the same path in the newest complete snapshot, when it is a directory there.
    pub previous_entries: Option<u64>,
}

/// The newest snapshot whose metadata says it is complete.
pub fn newest_complete(snapshots: &[Snapshot]) -> Option<&Snapshot> {
    snapshots
        .iter()
        .rev()
        .find(|s| s.state() == SnapshotState::Complete)
}

fn count_entries(dir: &Path) -> Option<u64> {
    fs::read_dir(dir).ok().map(|d| d.count() as u64)
}

/// Looks at one source.
pub fn look_at_source(source: &SourcePath, previous: Option<&Snapshot>) -> SourceState {
    let resolved = fs::canonicalize(&source.path).ok();
    let meta = resolved.as_ref().and_then(|r| fs::metadata(r).ok());
    let kind = match &meta {
        None => SourceKind::Missing,
        Some(m) if m.is_dir() => SourceKind::Directory,
        Some(m) if m.is_file() => SourceKind::File,
        Some(_) => SourceKind::Other,
    };
    let (entries, previous_entries) = match (&resolved, kind) {
        (Some(r), SourceKind::Directory) => {
            let before = previous
                .map(|s| s.path.join(snapshot::SourceRecord::in_snapshot_path(r)))
                .filter(|p| p.is_dir());
            (count_entries(r), before.and_then(|p| count_entries(&p)))
        }
        _ => (None, None),
    };
    SourceState {
        source: source.clone(),
        resolved: if kind == SourceKind::Missing {
            None
        } else {
            resolved
        },
        kind,
        entries,
        previous_entries,
    }
}

/// Looks at the backup root and every selected set, for the installed `rsync` ([`rsync::probe_rsync`]).
/// `write_probe`: probe xattr support by writing (real runs only).
pub fn observe(
    settings: &Settings,
    sets: &[&SetSettings],
    rsync: Capabilities,
    write_probe: bool,
) -> anyhow::Result<World> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let root = settings.backup_root.clone();
    let root_meta = fs::metadata(&root).ok();
    let fs = rsync::probe_fs(&root, write_probe && root_meta.is_some());
    let layout = Layout::new(&root);
    let mut out = Vec::new();
    for set in sets {
        let snapshots = snapshot::list(&root, &set.name)
            .with_context(|| format!("listing the snapshots of set {}", set.name))?;
        let previous = newest_complete(&snapshots);
        let sources: Vec<SourceState> = set
            .sources
            .iter()
            .map(|s| look_at_source(s, previous))
            .collect();
        let dirs: Vec<PathBuf> = sources
            .iter()
            .filter(|s| s.kind == SourceKind::Directory)
            .filter_map(|s| s.resolved.clone())
            .collect();
        let marked = super::marked::find(set, &dirs)?;
        out.push(SetWorld {
            name: set.name.clone(),
            sources,
            latest: snapshot::read_latest(&root, &set.name),
            in_progress: layout.in_progress(&set.name).is_dir(),
            partial: layout.partial(&set.name).is_dir(),
            marked,
            snapshots,
        });
    }
    Ok(World {
        root_exists: root_meta.as_ref().is_some_and(|m| m.is_dir()),
        root_mode: root_meta.map(|m| m.permissions().mode() & 0o7777),
        root,
        rsync,
        fs,
        sets: out,
    })
}
