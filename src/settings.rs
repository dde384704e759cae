//! The validated settings every phase runs from: the config file merged with the command line,
//! paths expanded, semantic checks passed. Built once, before any phase runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{ExternalMode, Notifications, RetentionPolicy, Schedule};

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
}

/// How much to print and whether to change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Output {
    pub json: bool,
    pub dry_run: bool,
    /// -2 (-qq) .. 0 (default) .. 2 (-vv)
    pub verbosity: i8,
}

/// The process environment that settings depend on, passed in so tests can fake it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    pub home: PathBuf,
    pub cwd: PathBuf,
}

impl Env {
    pub fn from_process() -> Env {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let home = vars
            .get("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Env { vars, home, cwd }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Validated settings for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub config_source: ConfigSource,
    /// Absolute, expanded.
    pub backup_root: PathBuf,
    pub sets: Vec<SetSettings>,
    pub schedule: Schedule,
    /// Local retention, normalised: a plain count N is `last: N`.
    pub retention_local: RetentionPolicy,
    pub retention_external: u32,
    pub destinations: Vec<DestinationSettings>,
    pub external_mode: ExternalMode,
    pub notifications: Notifications,
    /// Where the run log lives: `$XDG_STATE_HOME/dbackup` (`~/.local/state/dbackup`).
    pub state_dir: PathBuf,
    #[serde(skip)]
    pub output: Output,
}

/// One backup set, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetSettings {
    pub name: String,
    pub sources: Vec<SourcePath>,
    pub exclusions: Vec<Exclusion>,
    pub rsync_args: Vec<String>,
}

/// A source as configured, expanded and resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePath {
    /// As written in the config (`~/data`).
    pub configured: String,
    /// Expanded and absolute (`/home/payne/data`).
    pub path: PathBuf,
    /// With symlinks resolved (`/data`); equal to `path` when nothing is a link or the path is missing.
    pub resolved: PathBuf,
}

/// An exclusion, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Exclusion {
    /// An rsync pattern that matches anywhere (`*.log`, `tmp/*`).
    Pattern { pattern: String },
    /// A path inside one of the set's sources, anchored at the transfer root (`/home/payne/.config/Code/Cache/*`).
    Anchored { configured: String, pattern: String },
}

impl Exclusion {
    /// The string to pass as `--exclude=`.
    pub fn rsync_pattern(&self) -> &str {
        match self {
            Exclusion::Pattern { pattern } | Exclusion::Anchored { pattern, .. } => pattern,
        }
    }
}

/// A destination, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationSettings {
    pub name: String,
    /// Absolute, expanded mount point.
    pub path: PathBuf,
    pub priority: i32,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    pub retention: u32,
    pub require_mount: bool,
}

impl Settings {
    /// Finds the config (`--config`, `$DBACKUP_CONFIG`, `$XDG_CONFIG_HOME/dbackup/config.json`, else the built-in default),
    /// validates it and builds the settings for this run.
    pub fn load(
        global: &crate::cli::GlobalArgs,
        env: &Env,
    ) -> Result<Settings, crate::config::ConfigError> {
        let _ = (global, env);
        todo!("config loader")
    }
}
