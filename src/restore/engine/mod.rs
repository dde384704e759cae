//! The restore engine: plans and safely applies backup entries (from a tar archive or a snapshot) into a target
//! directory; the hostile-input rules and the writer, knowing nothing of drives, backups or the command line.
//!
//! # Shape
//! A restore is two passes over the same entries, whatever their source:
//! 1. **Plan** ([`Planner`]): every entry's metadata is checked ([`safety`]) and compared with what is at the
//!    destination now, giving a [`Plan`]: `create`, `replace`, `unchanged`, `skip` or `refuse` (with the reason)
//!    for each entry (a [`PlanItem`], [`item`]). Planning writes nothing; `--dry-run` prints the plan ([`Plan::render`], or its JSON).
//! 2. **Apply** ([`Applier`]): the same entries are handed over again, in the same order, each file with a reader
//!    for its content; the applier writes what the plan says, and [`Applier::finish`] gives a [`Summary`].
//!
//! A tar archive without an index is read twice, by [`tarscan`] (GNU tar's rules, every header counted): headers
//! only for the plan (content skipped with seeks), then streamed (or read by seeking to each file). An indexed archive plans from its index and applies by seeking to each
//! entry that needs content ([`RestoreEntry::locator`]). A snapshot is walked, then each planned file is opened.
//! [`source`] has the helpers for all three.
//!
//! # Hostile input
//! - **Refuse first, then write**: when the plan holds any refusal, [`Applier::new`] refuses to start and nothing
//!   at all is written ([`RestoreError::Refused`] names the count and the first; the plan lists them all). With
//!   [`RestoreOptions::apply_despite_refusals`] the rest is applied and the summary still fails, listing every
//!   refusal. A restore is never half-applied silently: a refused, failed or missing entry always makes
//!   [`Summary::exit`] non-zero.
//! - **Never through a symlink**: every path below the target is walked with `openat(O_NOFOLLOW | O_DIRECTORY)`
//!   at apply time ([`target`]), so a symlink created by an earlier entry, already on disk, or planted between
//!   planning and applying cannot redirect a write; the plan's checks are a first line, this is the guarantee.
//! - **Symlinks are data**: a symlink is recreated with its target verbatim, absolute or not (a backup of
//!   `/home/u` legitimately holds `~/.config/x -> /etc/foo`, and restoring to the original location must bring it
//!   back); it is never followed by the restore. One that leads outside the target once the restore is done
//!   (resolved through the plan's own symlinks and those already in the target: [`links`]) is listed in the plan
//!   with where it leads, and refused under [`RestoreOptions::refuse_escaping_symlinks`].
//! - **Hard links** may only point at a file, symlink or fifo restored (or found unchanged) by the same run, inside
//!   the target.
//! - Names with `..`, absolute names (unless the caller strips a known prefix, [`RestoreOptions::strip_prefix`]),
//!   empty names, NUL, device files and unknown entry types are refused. Setuid/setgid bits are dropped unless
//!   privileged with `preserve_special` ([`safety::restored_mode`]).
//!
//! # Writing
//! A file is written to a temporary name (`.dbackup-restore-<pid>-<n>`) in its directory, created with mode 0600,
//! fsynced, given its owner (when privileged), mode and mtime, and renamed into place; the temporaries a killed
//! restore left in a directory are removed when a restore next writes into it (not those of a restore still
//! running). A sparse file (a GNU sparse member, or a local snapshot's file with holes) is handed over with its map
//! ([`Applier::apply_sparse`]): its data is written at its offsets and its size set with `ftruncate`, so its holes stay holes. Symlinks, hard links and
//! fifos are made at a temporary name and renamed too. Directories are made 0700 and get their final owner, mode
//! and mtime at the end, deepest first; a directory of the (unprivileged) user's already there that does not let
//! them write (0500, restored before) is opened to them (0700) while filled and given back its mode and mtime after. A directory is never removed unless empty and `--overwrite always`; a
//! non-directory is replaced by a directory (or the reverse) only with `--overwrite always`. Files at the
//! destination that are not in the backup are left alone.

pub mod apply;
pub mod attrs;
pub mod displace;
pub mod entry;
pub mod item;
pub mod links;
pub mod owners;
pub mod plan;
pub mod safety;
pub mod source;
pub mod target;
pub mod tarscan;

use std::path::PathBuf;

use serde::{Serialize, Serializer};

pub use apply::{Applier, Summary};
pub use entry::{EntryKind, RestoreEntry, show};
pub use item::{Action, PlanItem};
pub use plan::{Counts, Plan, Planner};
pub use safety::RelPath;
// What only the unit tests use.
#[cfg(test)]
pub use {entry::Mtime, safety::Refusal};

/// What to do with an entry that already exists at the destination (`--overwrite`: the variants' comments are its
/// `--help`). "Differs" is told by [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Replace what differs from the backup (keeping it first), leave what is the same
    #[default]
    IfChanged,
    /// Rewrite everything; what differs from the backup is kept first, unless --no-keep
    Always,
    /// Leave whatever is there
    Never,
}

/// How `--overwrite if-changed` tells an unchanged file (`--compare`: the variants' comments are its `--help`).
/// `Metadata`: the owner when privileged (without privileges, only the group the user can give:
/// [`owners::Me::regroups`]), the mtime to the nanosecond; both compare the xattrs and ACLs a restore would set
/// ([`attrs::differ`]). `Content` needs the backup's hash ([`RestoreEntry::sha256`]); an entry without one is
/// compared by metadata, with a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// Same type, size, mode, owner, mtime, xattrs and ACLs (fast)
    #[default]
    Metadata,
    /// Same type, size, mode, owner, xattrs, ACLs and sha256 of the content, whatever the mtime (reads local files;
    /// drive only)
    Content,
}

/// Everything the engine is told. Built by the restore command from its `Settings`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOptions {
    pub overwrite: Overwrite,
    pub compare: Compare,
    /// Running as root: owners are restored, and setuid/setgid may be kept with `preserve_special`.
    /// Defaults to `geteuid() == 0`; tests set it to see the unprivileged behaviour as root.
    pub privileged: bool,
    /// The running user: without privileges, an entry is given its group when they are in it ([`owners::Me`]).
    #[serde(skip)]
    pub me: owners::Me,
    pub preserve_special: bool,
    /// A prefix removed from names before they are checked, chosen deliberately by the caller (`/` for an archive
    /// made with `tar -P`); without it an absolute name is refused.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub strip_prefix: Option<Vec<u8>>,
    /// Refuse the symlinks that lead outside the target once the restore is done (resolved against the plan and
    /// the target: [`links`]), rather than restoring them as they are and listing them.
    pub refuse_escaping_symlinks: bool,
    /// Apply the entries that were not refused when the plan refuses some (the summary still fails).
    pub apply_despite_refusals: bool,
    /// fsync every file before renaming it into place, and the directories at the end.
    pub fsync: bool,
    /// Where a file the restore replaces is kept first when it differs from the backup (the run's directory under
    /// `<backup_root>/displaced/`, see [`displace`]); `None` replaces without keeping (`--no-keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_displaced: Option<PathBuf>,
    /// Whether the target's filesystem keeps the modes and owners it is given; when not (FAT, exFAT: the caller
    /// asks `media::capabilities_at`), none are set and a mode or owner found there is no difference.
    pub modes_and_owners: bool,
    /// The step in which the target's filesystem keeps mtimes, in nanoseconds (1: exact); mtimes found there are
    /// compared with the backup's at it.
    pub mtime_step_ns: u32,
}

impl Default for RestoreOptions {
    fn default() -> RestoreOptions {
        RestoreOptions {
            overwrite: Overwrite::default(),
            compare: Compare::default(),
            privileged: rustix::process::geteuid().is_root(),
            me: owners::Me::current(),
            preserve_special: false,
            strip_prefix: None,
            refuse_escaping_symlinks: false,
            apply_despite_refusals: false,
            fsync: true,
            keep_displaced: None,
            modes_and_owners: true,
            mtime_step_ns: 1,
        }
    }
}

fn ser_opt_bytes<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&show(b)),
        None => s.serialize_none(),
    }
}

/// Errors that stop a restore. Problems with single entries are not errors: they are in the [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot open the restore target {path}: {source}")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot look at {path} to plan the restore: {source}{hint}")]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
        /// What to do, when there is something (a directory of the user's that does not let them in).
        hint: &'static str,
    },
    #[error(
        "{count} {entries} of the backup refused ({first}), so nothing was restored into {target}; \
         the plan lists every refusal (see --dry-run)",
        entries = if *count == 1 { "entry" } else { "entries" }
    )]
    Refused {
        count: usize,
        first: String,
        target: PathBuf,
    },
    /// (`error` is not the error's `source`: its text is in the message already.)
    #[error("cannot read the backup at {name}: {error}; the archive may be truncated or damaged")]
    Source { name: String, error: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the backup handed over an entry that is not in the plan ({name}); it changed between the two passes, \
         so the restore stopped"
    )]
    NotInPlan { name: String },
    #[error(
        "the backup's entry {name} differs from the one planned ({what}); it changed between the two passes, \
         so the restore stopped"
    )]
    ChangedSincePlan { name: String, what: &'static str },
    #[error("cannot walk the snapshot at {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SIGINT or SIGTERM: the restore stopped between entries (or blocks); what was restored is in place, the entry
    /// being written is not (its temporary file is removed).
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}
