//! What a run writes, below the plans that hold it: which snapshot of each set is exported ([`SetPlan`]), and each
//! set's files on one destination, a drive or a bucket ([`ArchiveTarget`]). The drive's plan ([`super::plan`]), the
//! bucket's ([`super::cloud`]), the writers and the reports all name these; they name none of those.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveEstimate;
use crate::settings::NamedBy;

/// Which snapshot of a set goes to the drive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPlan {
    pub set: String,
    pub action: SetAction,
    /// The snapshot archived (`<set>-<stamp>`), and where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<PathBuf>,
    /// Whether that snapshot is complete (false only with `--allow-incomplete`).
    pub complete: bool,
    /// The archive's size, from a scan of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<ArchiveEstimate>,
    /// Why the set is skipped, or why an older snapshot than the newest is used (exit 3).
    pub warnings: Vec<String>,
    /// The secret files the config names that this snapshot holds: an unencrypted destination's archive leaves
    /// them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<LeftOut>,
}

/// A secret file dbackup reads (an identity, a passphrase file, cloud credentials; see
/// [`Settings::secret_files`](crate::settings::Settings::secret_files)), inside a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// As the config (or the variable) names it, expanded.
    pub path: PathBuf,
    /// What names it: the setting (`identity_file of destination usb`) when the config does, else the whole phrase
    /// (`the passphrase file $DBACKUP_PASSPHRASE_FILE names`).
    pub field: String,
    #[serde(default)]
    pub named_by: NamedBy,
    /// Where it is in the snapshot, and so in the archive (its symlinks resolved): `home/payne/.config/x`.
    pub in_snapshot: PathBuf,
}

impl LeftOut {
    /// The line the dry run and the run show for a destination `dest` whose archive leaves it out.
    pub fn line(&self, dest: &str) -> String {
        let named = self.named_by.phrase(&self.field);
        format!(
            "left out of {dest}: {}, {named}; this destination is not encrypted",
            self.path.display()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetAction {
    Export,
    /// No usable snapshot: a warning, the other sets go on.
    Skip,
}

/// One set's files on a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveTarget {
    pub set: String,
    pub snapshot: String,
    /// `<set>.tar`; with `part_bytes`, written as `<set>.tar.part000`, `.part001`, ...
    pub archive: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_bytes: Option<u64>,
    /// `<set>.index.jsonl`; split like the archive when it could exceed the filesystem's file size limit.
    pub index: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_part_bytes: Option<u64>,
    pub tar_bytes: u64,
    pub index_bytes: u64,
    /// Encrypted with age (`<set>.tar.age`, `<set>.index.age`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Full or incremental (on which base), and why.
    #[serde(flatten)]
    pub choice: super::chain::ArchiveChoice,
    /// The secret files the archive leaves out (only when not encrypted): see [`SetPlan::secrets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
}

impl ArchiveTarget {
    /// What the archive leaves out, as paths inside the snapshot.
    pub fn leave_out(&self) -> Vec<PathBuf> {
        self.left_out
            .iter()
            .map(|l| l.in_snapshot.clone())
            .collect()
    }
}
