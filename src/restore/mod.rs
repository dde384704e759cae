//! Restore: choosing a backup (local snapshots or a drive's), reading it, and handing its entries to the engine.
//!
//! - [`engine`]: the hostile-input rules and the writer (plan every entry, then apply without ever passing through a
//!   symlink), fed by tar streams, indexed archives and snapshot directories alike. It knows nothing of drives,
//!   backups or the command line.
//! - Around it, what a restore reads and how it is chosen: [`catalog`] (local snapshots, drives present for
//!   reading), [`drive`] (a drive's backups), [`choose`] (the backup `--date` picks, its keys, the checks before
//!   anything is written), [`content`] (a set's snapshot or archive), [`job`] (selections, targets, plan, apply),
//!   [`list`] (`--list`), [`select`] (pure: dates, paths), [`index_search`], [`keys`], [`verify`] (`--verify`).

pub mod catalog;
pub mod content;
pub mod drive;
pub mod engine;
pub mod index_search;
pub mod job;
pub mod keys;
pub mod list;
pub mod select;
pub mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_age;

pub use engine::{
    Action, Applier, Compare, Counts, EntryKind, Mtime, Overwrite, Plan, PlanItem, Planner, Problem,
    Refusal, RelPath, RestoreEntry, RestoreError, RestoreOptions, Summary, Tally, show,
};
