//! Restore: choosing a backup (local snapshots or a drive's), reading it, and handing its entries to the engine.
//!
//! - [`engine`]: the hostile-input rules and the writer (plan every entry, then apply without ever passing through a
//!   symlink), fed by tar streams, indexed archives and snapshot directories alike. It knows nothing of drives,
//!   backups or the command line.
//! - Around it, what a restore reads and how it is chosen: [`catalog`] (local snapshots, drives present for reading),
//!   [`drive`] (a drive's backups), [`choose`] (the backup `--date` picks, its keys, the checks before anything is
//!   written), [`content`] (a set's snapshot or archive), [`job`] (selections, targets, plan, apply), [`list`]
//!   (`--list`), [`outcome`] (what a restore planned or did, as text and JSON), [`select`] (pure: what a restore is
//!   asked, where a backup is kept, dates, paths), [`index_search`], [`keys`], [`verify`] (`--verify`).

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

pub use select::Request;
