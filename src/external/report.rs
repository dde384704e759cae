//! What an external run did, per destination ([`DestinationReport`]) and in all ([`ExternalReport`]): printed with
//! `--json`, logged, and filled in by the drive's writer ([`super::exec`]) and the bucket's ([`super::upload`])
//! alike.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::layout::{LatestKind, ReadBackRecord, SetRecord};
use super::sets::SetPlan;
use crate::exit::Exit;
use crate::retention::Removed;

/// What a run did. Printed with `--json` and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalReport {
    /// The process exit code: the worst of the sets and destinations.
    pub exit: u8,
    pub stamp: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// Which snapshot of each set was exported (or why it was skipped).
    pub sets: Vec<SetPlan>,
    pub destinations: Vec<DestinationReport>,
}

/// The outcome on one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationReport {
    pub name: String,
    pub path: PathBuf,
    pub status: DestinationStatus,
    /// This destination's exit code (0, 1 or 3).
    pub exit: u8,
    /// The new backup's name and directory, once renamed into place.
    pub backup: Option<String>,
    pub backup_path: Option<PathBuf>,
    /// How `latest` was recorded, once it was.
    pub latest: Option<LatestKind>,
    /// Leftovers of interrupted runs removed first.
    pub cleaned: Vec<String>,
    /// What was written, per set.
    pub sets: Vec<SetRecord>,
    pub read_back: Option<ReadBackRecord>,
    /// Old backups removed by retention, with the reasons.
    pub removed: Vec<Removed>,
    /// Old backups removed for space before the new one was written (space-aware rotation), with the reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_for_space: Vec<Removed>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub seconds: f64,
}

impl DestinationReport {
    /// A destination's report before anything happened: failed until the run says otherwise.
    pub(crate) fn failed(name: String, path: PathBuf) -> DestinationReport {
        DestinationReport {
            name,
            path,
            status: DestinationStatus::Failed,
            exit: Exit::Failed.code(),
            backup: None,
            backup_path: None,
            latest: None,
            cleaned: Vec::new(),
            sets: Vec::new(),
            read_back: None,
            removed: Vec::new(),
            removed_for_space: Vec::new(),
            warnings: Vec::new(),
            error: None,
            seconds: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationStatus {
    /// A new verified backup is in place.
    Written,
    /// Not enough space: nothing was written.
    Refused,
    /// Something failed; nothing was promoted (or, after the rename, `latest` could not be moved).
    Failed,
}

/// Says on `ui` that `destination` no longer holds backup `name` (`removed old backup NAME`, then `how`, such as
/// " for space", and the reasons), and returns its record.
pub(crate) fn say_removed(
    ui: &crate::ui::Ui,
    destination: &str,
    name: &str,
    how: &str,
    reasons: &[String],
) -> Removed {
    ui.step(format_args!(
        "{destination}: removed old backup {name}{how} ({})",
        reasons.join("; ")
    ));
    Removed {
        name: name.to_string(),
        reasons: reasons.to_vec(),
    }
}

impl ExternalReport {
    pub fn exit(&self) -> Exit {
        Exit::of_phase(self.exit)
    }
}
