//! What several test modules set up the same way, one home each: the restore demo and its drive backups, trees to
//! compare restores with, external runs onto a drive, a drive backup restored or verified by its stamp, the backup
//! demo and its notification sink, records with chosen times, hostile drives and age. A test module keeps only what
//! it alone uses; nothing here asserts a snapshot.

pub mod age;
pub mod backup;
pub mod chain;
pub mod demo;
pub mod drive;
pub mod guide;
pub mod history;
pub mod hostile;
pub mod mounted;
pub mod terminal;
pub mod tree;

use crate::harness::Test;

/// The names of a set's snapshots as dbackup lists them, oldest first.
pub fn snapshots(t: &Test, set: &str) -> Vec<String> {
    dbackup::list_snapshots(&t.root(), set)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}
