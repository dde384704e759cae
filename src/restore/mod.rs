//! Restore: choosing a backup (local snapshots or a drive's), reading it, and handing its entries to the engine.
//!
//! - [`engine`]: the hostile-input rules and the writer (plan every entry, then apply without ever passing through a
//!   symlink), fed by tar streams, indexed archives and snapshot directories alike. It knows nothing of drives,
//!   backups or the command line.
//! - Around it, what a restore reads and how it is chosen: [`catalog`] (local snapshots, drives present for
//!   reading), [`drive`] (a drive's backups), [`choose`] (the backup `--date` picks, its keys, the checks before
//!   anything is written), [`content`] (a set's snapshot or archive), [`job`] (selections, targets, plan, apply),
//!   [`list`] (`--list`), [`outcome`] (what a restore planned or did, as text and JSON), [`select`] (pure: dates, paths), [`index_search`], [`keys`], [`verify`] (`--verify`).

pub mod catalog;
pub mod choose;
pub mod cloud;
pub mod content;
pub mod drive;
pub mod engine;
pub mod index_search;
pub mod job;
pub mod keys;
pub mod list;
pub mod outcome;
pub mod select;
pub mod verify;

#[cfg(test)]
mod tests;

pub use engine::{
    Action, Applier, Compare, Counts, EntryKind, Overwrite, Plan, PlanItem, Planner, RelPath,
    RestoreEntry, RestoreError, RestoreOptions, Summary,
};
// What only the unit tests use.
#[cfg(test)]
pub use engine::{Mtime, Refusal, show};

use std::path::PathBuf;

use list::Kept;
use select::DateQuery;

/// What `restore` is asked (to list, verify or restore): the command line converted once, by `commands/restore.rs`,
/// into plain values. Nothing below the command sees a clap type.
#[derive(Debug, Clone)]
pub struct Request {
    /// `--source`: local snapshots or the drive's backups; `None` lets [`Request::source`] decide (and `--list`
    /// show both).
    pub source: Option<Kept>,
    /// `--source cloud:NAME`: the cloud destination (`None` with `--source cloud`: the only one, or the first by
    /// priority).
    pub cloud: Option<String>,
    /// `--date`.
    pub date: DateQuery,
    /// `--set`: one set only.
    pub set: Option<String>,
    /// `--drive`: the drive's backups read from this directory instead of the configured destinations.
    pub drive: Option<PathBuf>,
    /// `--path`, made absolute: what to restore (or describe), or every source when empty.
    pub paths: Vec<PathBuf>,
    /// `--target`, made absolute: restore under it, or in place when `None`.
    pub target: Option<PathBuf>,
    /// `--identity`: age identity files, beside the config's.
    pub identities: Vec<PathBuf>,
    pub overwrite: Overwrite,
    pub compare: Compare,
    pub preserve_special: bool,
    /// `--skip-refused`: restore what is not refused.
    pub skip_refused: bool,
    /// `--no-escaping-links`.
    pub refuse_escaping_links: bool,
    /// Keep what a restore replaces in `displaced/` (unless `--no-keep`).
    pub keep: bool,
    /// `--verify --deep`: also read every byte an incremental keeps in earlier backups.
    pub deep: bool,
}

impl Request {
    /// Where to read from: `--source`, else the drive with `--drive`, else the local snapshots.
    pub fn source(&self) -> Kept {
        match (self.source, &self.drive) {
            (Some(s), _) => s,
            (None, Some(_)) => Kept::External,
            (None, None) => Kept::Local,
        }
    }
}
