//! The config file's types (serde + JSON Schema), and its errors. Loading lives in `load.rs`,
//! the built-in default in `default.rs`, the schema in `schema.rs`.
//!
//! These structs mirror the file as written: paths are unexpanded strings. [`crate::settings`]
//! turns them into validated, expanded settings.

pub mod default;
pub mod load;
pub mod schema;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, ExitCoded};

/// A dbackup configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dbackup configuration")]
pub struct Config {
    /// The URL or path of this schema, for editors. Ignored by dbackup.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,

    /// Where snapshots are kept. `~`, `$VAR` and `${VAR}` expand. Default: `$DBACKUP`, else `~/.local/share/dbackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<String>,

    /// What to back up: each set becomes its own series of snapshots and its own archive on the drive.
    #[schemars(length(min = 1))]
    pub backup_sets: Vec<BackupSet>,

    /// How often each phase runs.
    #[serde(default)]
    pub schedule: Schedule,

    /// How many backups to keep.
    #[serde(default)]
    pub retention: Retention,

    /// Removable drives (or other mounted filesystems) that receive the external backups.
    #[serde(default)]
    pub destinations: Vec<Destination>,

    /// How the external phase picks destinations.
    #[serde(default)]
    pub external: ExternalOptions,

    /// Who hears about successes, failures and missing drives.
    #[serde(default)]
    pub notifications: Notifications,
}

/// One backup set: a name and the paths it copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSet {
    /// A safe file name: letters, digits, `_`, `-` and `.`, not starting with `.` or `-`. Names the snapshots (`<name>-<stamp>`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"))]
    pub name: String,

    /// Files or directories to copy. Absolute, or starting with `~` or `$VAR`. A symlinked source is resolved.
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,

    /// How the set is copied. Only `rsync` exists.
    #[serde(default)]
    pub method: Method,

    /// rsync patterns (`*.log`, `tmp/*`) or absolute/`~` paths inside one of the sources (`~/.config/Code/Cache/*`), which are anchored.
    #[serde(default)]
    pub exclusions: Vec<String>,

    /// Extra rsync arguments, appended after dbackup's own (e.g. `--bwlimit=50m`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsync_args: Vec<String>,
}

/// How a set is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// rsync into a hard-linked (`--link-dest`) snapshot.
    #[default]
    Rsync,
}

/// How often each phase runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// How often `collect` runs (the systemd timer uses it).
    #[serde(default = "Schedule::default_incremental")]
    pub incremental: Incremental,
    /// How often a collect compares file contents (`rsync --checksum`) instead of trusting size and mtime.
    #[serde(default = "Schedule::default_full")]
    pub full: Full,
    /// How often the external phase copies to the drive.
    #[serde(default = "Schedule::default_external")]
    pub external: ExternalSchedule,
}

impl Schedule {
    fn default_incremental() -> Incremental {
        Incremental::Daily
    }
    fn default_full() -> Full {
        Full::Weekly
    }
    fn default_external() -> ExternalSchedule {
        ExternalSchedule::Weekly
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            incremental: Schedule::default_incremental(),
            full: Schedule::default_full(),
            external: Schedule::default_external(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Incremental {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Full {
    Daily,
    Weekly,
    Monthly,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalSchedule {
    Daily,
    Weekly,
    Monthly,
    /// Copy on every run and whenever the drive appears.
    Always,
    /// Only on `dbackup external`.
    Manual,
}

/// How many backups to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Local snapshots per set: a count (keep the newest N) or a policy (`last`, `hourly`, `daily`, ...).
    #[serde(default)]
    pub local: LocalRetention,
    /// External backups per destination (a destination's own `retention` wins).
    #[serde(default = "Retention::default_external")]
    #[schemars(range(min = 1))]
    pub external: u32,
}

impl Retention {
    fn default_external() -> u32 {
        5
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            local: LocalRetention::default(),
            external: Retention::default_external(),
        }
    }
}

/// Local retention: a plain count, or a time-bucketed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LocalRetention {
    /// Keep the newest N complete snapshots.
    Count(#[schemars(range(min = 1))] u32),
    /// Keep the newest `last`, plus the newest of each of the last `hourly` hours, `daily` days, ...
    Policy(RetentionPolicy),
}

impl Default for LocalRetention {
    fn default() -> Self {
        LocalRetention::Count(7)
    }
}

/// A time-bucketed retention policy; a snapshot is kept when any rule keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    /// Keep the newest of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    /// Keep the newest of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Keep the newest of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// Keep the newest of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    /// Keep the newest of each of the last N years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

/// A removable drive (or any mounted filesystem) that receives external backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// A safe file name for this destination, recorded on the drive in its marker file.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"))]
    pub name: String,
    /// The drive's mount point, e.g. `/media/payne/T9`.
    pub path: String,
    /// Higher is preferred when `external.mode` is `first`.
    #[serde(default)]
    pub priority: i32,
    /// The filesystem UUID the drive must have (as `blkid` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    /// The filesystem label the drive must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
    /// How many verified backups to keep on this drive (default: `retention.external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention: Option<u32>,
    /// Refuse to write unless `path` is the root of a mounted filesystem (default true).
    #[serde(default = "default_true")]
    pub require_mount: bool,
}

fn default_true() -> bool {
    true
}

/// How the external phase picks among present destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalOptions {
    /// `first`: the highest-priority present destination; `all`: every present destination.
    #[serde(default)]
    pub mode: ExternalMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalMode {
    #[default]
    First,
    All,
}

/// Notification events and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// Which events are sent (default: all but `success`).
    #[serde(default = "Notifications::default_events")]
    pub events: Vec<EventKind>,
    /// Show freedesktop desktop notifications (via `notify-send`) when a session bus exists.
    #[serde(default)]
    pub desktop: bool,
    /// A command run for each event, with DBACKUP_EVENT, DBACKUP_SUMMARY and DBACKUP_DETAILS set and the event as JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// An HTTP(S) URL that receives each event as a POST (ntfy-style: the summary as the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Warn when a filesystem has less than this percentage free.
    #[serde(default = "Notifications::default_low_disk_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub low_disk_percent: u8,
}

impl Notifications {
    fn default_events() -> Vec<EventKind> {
        vec![
            EventKind::Failure,
            EventKind::Warning,
            EventKind::MissingMedia,
            EventKind::LowDisk,
            EventKind::Overdue,
        ]
    }
    fn default_low_disk_percent() -> u8 {
        10
    }
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            events: Notifications::default_events(),
            desktop: false,
            command: None,
            http: None,
            low_disk_percent: Notifications::default_low_disk_percent(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Success,
    Failure,
    Warning,
    MissingMedia,
    LowDisk,
    Overdue,
}

/// Where an error in a config file sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Everything that can be wrong with a config. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file is not valid JSON (with comments).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// The file is JSON but does not match the schema (or the Rust types).
    #[error("{}", format_invalid(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },

    /// The values are well-formed but do not make sense together (duplicate names, source inside the root, ...).
    #[error("{path}: {message}")]
    Semantic { path: PathBuf, message: String },

    #[error("config: undefined variable ${name} in {value:?}; set it or write the path out")]
    UndefinedVariable { name: String, value: String },

    #[error("{path} already exists; edit it, or move it away and run `dbackup config init` again")]
    Exists { path: PathBuf },
}

/// One schema violation, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer to the offending value (`/backup_sets/0/exclusions`).
    pub pointer: String,
    pub location: Option<Location>,
    /// What is wrong, what was found and what is allowed.
    pub message: String,
}

fn format_invalid(path: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match &p.location {
            Some(l) => out.push_str(&format!(
                "{}:{}:{}: {} (at {})",
                path.display(),
                l.line,
                l.column,
                p.message,
                pointer_or_root(&p.pointer)
            )),
            None => out.push_str(&format!(
                "{}: {} (at {})",
                path.display(),
                p.message,
                pointer_or_root(&p.pointer)
            )),
        }
    }
    out
}

fn pointer_or_root(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

impl ExitCoded for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}
