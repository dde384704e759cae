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
    /// `.<set>.in-progress` exists: a run was interrupted.
    pub in_progress: bool,
    /// `.<set>.partial` exists: an earlier interrupted run's copy.
    pub partial: bool,
    /// Directories skipped for what they hold (`exclude_caches`, `exclude_if_present`).
    pub marked: super::marked::Found,
    /// Sparse files rsync would read whole, for the pre-pass ([`super::sparse`]); looked for only when the set
    /// allows it.
    pub sparse: Vec<super::sparse::Candidate>,
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

/// Whether a set may have its sparse files copied before rsync ([`super::sparse`]): rsync gets `--sparse`, no
/// `--full`, and no `rsync_args` of the set's own.
pub fn sparse_prepass_allowed(rsync_version: &str, set: &SetSettings, full: bool) -> bool {
    !full && set.rsync_args.is_empty() && rsync::sparse_allowed(rsync_version, &set.rsync_args)
}

/// The filter rules of a set as the plan writes them (the user's, then the marked directories'), for the pre-pass.
pub fn filter_rules(set: &SetSettings, marked: &super::marked::Found) -> Vec<String> {
    let mut rules: Vec<String> = set.exclusions.iter().map(|e| e.rule()).collect();
    rules.extend(
        marked
            .skipped
            .iter()
            .filter_map(|d| super::marked::rule_for(&d.path)),
    );
    rules
}

/// Looks at the backup root and every selected set, for the installed `rsync` ([`rsync::probe_rsync`]).
/// `write_probe`: probe xattr support by writing (real runs only). `full`: `--full` (no sparse pre-pass).
pub fn observe(
    settings: &Settings,
    sets: &[&SetSettings],
    rsync: Capabilities,
    write_probe: bool,
    full: bool,
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
        let sparse = if sparse_prepass_allowed(&rsync.version, set, full) {
            let present: Vec<(PathBuf, PathBuf)> = sources
                .iter()
                .filter(|s| matches!(s.kind, SourceKind::Directory | SourceKind::File))
                .filter_map(|s| s.resolved.clone())
                .map(|r| {
                    let rel = snapshot::SourceRecord::in_snapshot_path(&r);
                    (r, rel)
                })
                .collect();
            // Every snapshot rsync may link against (the plan picks among these).
            let mut basis: Vec<PathBuf> = previous.map(|p| p.path.clone()).into_iter().collect();
            basis.extend(
                snapshots
                    .iter()
                    .rev()
                    .find(|s| s.state() != SnapshotState::Unknown)
                    .map(|s| s.path.clone()),
            );
            basis.push(layout.partial(&set.name));
            basis.push(layout.in_progress(&set.name));
            super::sparse::find(&present, &filter_rules(set, &marked), &basis)
        } else {
            Vec::new()
        };
        out.push(SetWorld {
            sparse,
            name: set.name.clone(),
            sources,
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
