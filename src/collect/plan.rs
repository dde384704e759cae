//! The collect plan: pure, serialisable, one entry per set, made for the run's [`Options`]. Built from what
//! [`super::observe`] saw; `--dry-run` prints it (`--json`: as JSON) and [`super::exec`] carries it out.

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::observe::{SetWorld, SourceKind, SourceState, World, newest_complete};
use crate::config::RetentionPolicy;
use crate::exit::Exit;
use crate::retention::{self, Decision, SnapshotInfo};
use crate::rsync::{self, ArgvSpec};
use crate::rsync_args;
use crate::settings::SetSettings;
use crate::snapshot::{self, Layout, SnapshotState, SourceRecord};
use crate::stdx;
use crate::ui;

/// A shrunken source is refused when it had at least this many top-level entries before...
pub const SHRINK_MIN_BEFORE: u64 = 4;
/// ...and now has fewer than `before / SHRINK_FACTOR`.
pub const SHRINK_FACTOR: u64 = 2;

/// What a collect run is asked to do (from `dbackup collect`'s arguments, or from `dbackup backup`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The sets to collect, by name; empty: every set.
    pub sets: Vec<String>,
    /// Compare file contents (rsync `--checksum`) instead of trusting size and mtime.
    pub full: bool,
    /// Accept a source that is empty or much smaller than its last snapshot.
    pub allow_shrink: bool,
}

/// What one `dbackup collect` will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectPlan {
    pub backup_root: PathBuf,
    /// The backup root does not exist yet and will be created with mode 0700.
    pub create_root: bool,
    /// The time the snapshot names carry (local time, `YYYY-MM-DD-HHMMSS`).
    pub stamp: String,
    /// The same time, RFC 3339 with the local offset.
    pub time: DateTime<FixedOffset>,
    /// `--full`: compare contents (`rsync --checksum`).
    pub full: bool,
    pub allow_shrink: bool,
    pub rsync_version: String,
    /// Whether ACLs (-A) and extended attributes (-X) are copied.
    pub acls: bool,
    pub xattrs: bool,
    /// The local retention policy, described (`last 7`).
    pub retention: String,
    /// Remarks about the whole run (missing ACL support, an open backup root, ...).
    pub notes: Vec<String>,
    pub sets: Vec<SetPlan>,
}

/// What happens to one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPlan {
    pub set: String,
    /// `collect`, or `refuse` (with `refusal` saying why; the set fails, the others go on).
    pub action: SetAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The new snapshot's name and where it will be.
    pub snapshot: String,
    pub snapshot_path: PathBuf,
    pub metadata_path: PathBuf,
    /// Where rsync writes until the copy is promoted.
    pub in_progress: PathBuf,
    /// An interrupted run's copy, reused as a `--link-dest` basis (moved here from `in_progress` first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<PathBuf>,
    /// `--link-dest` directories, in rsync's order.
    pub link_dest: Vec<PathBuf>,
    /// Sparse files copied into the in-progress snapshot before rsync runs, reading only their data (rsync then
    /// finds them up to date): see [`super::sparse`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_copy: Vec<super::sparse::PreCopy>,
    pub sources: Vec<SourcePlan>,
    /// The rsync patterns excluded, in order (recorded in the snapshot's metadata): the set's `exclusions` and
    /// `exclude_from` rules (an include as `!pattern`), then one anchored `/path/` per directory in `skipped`.
    #[serde(default)]
    pub exclusions: Vec<String>,
    /// Directories left out for what they hold (`exclude_caches`, `exclude_if_present`), found by collect's walk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<super::marked::SkippedDir>,
    /// Where they are written as filter rules for rsync (`--filter=merge`) while it runs, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_file: Option<PathBuf>,
    pub shrink_checks: Vec<ShrinkCheck>,
    /// The full rsync command line (`argv[0]` is `rsync`). Empty when the set is refused.
    pub rsync_argv: Vec<String>,
    /// The entries the newest complete snapshot held (rsync's "Number of files"), which the progress line's ETA
    /// counts against; `None` for a first snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_entries: Option<u64>,
    /// Retention after this run, assuming the new snapshot completes: every snapshot of the set, newest first.
    pub retention: Vec<Decision>,
    /// Problems that make the run end with warnings (exit 3): missing sources, an accepted shrink.
    pub warnings: Vec<String>,
    /// Remarks that do not: snapshots without usable metadata (never used nor removed).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetAction {
    Collect,
    Refuse,
}

/// One source of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePlan {
    pub configured: String,
    pub path: PathBuf,
    /// Symlinks resolved: what rsync copies. `None` when missing.
    pub resolved: Option<PathBuf>,
    /// `directory`, `file`, `other` or `missing` (skipped with a warning).
    pub kind: String,
    /// Where it lands inside the snapshot.
    pub in_snapshot: Option<PathBuf>,
    /// Top-level entries (directories).
    pub entries: Option<u64>,
}

/// The shrink guard's look at one directory source against the newest complete snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShrinkCheck {
    pub path: PathBuf,
    pub entries: u64,
    pub previous_entries: u64,
    pub previous_snapshot: String,
    /// `ok`, `refused`, or `allowed` (would be refused, but `--allow-shrink`).
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CollectPlan {
    /// What a run of this plan would exit with at best: 1 when a set is refused, 3 with warnings, else 0.
    pub fn expected_exit(&self) -> Exit {
        self.sets.iter().fold(Exit::Ok, |acc, s| {
            acc.worst(match s.action {
                SetAction::Refuse => Exit::Failed,
                SetAction::Collect if !s.warnings.is_empty() => Exit::Warnings,
                SetAction::Collect => Exit::Ok,
            })
        })
    }
}

impl SetPlan {
    /// The `--link-dest` directories' names (the snapshots linked against), in rsync's order: what the plan shows
    /// and the snapshot's metadata records.
    pub(crate) fn link_dest_names(&self) -> Vec<String> {
        self.link_dest
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// Why a directory that had `before` entries and now has `now` is suspicious, if it is.
pub fn shrink_problem(
    what: impl std::fmt::Display,
    now: u64,
    before: u64,
    snapshot: &str,
) -> Option<String> {
    if before == 0 {
        return None;
    }
    let said = if now == 0 {
        format!(
            "{what} is empty but the last snapshot ({snapshot}) had {}",
            stdx::counted(before, "entry", "entries")
        )
    } else if before >= SHRINK_MIN_BEFORE && now.saturating_mul(SHRINK_FACTOR) < before {
        format!(
            "{what} has {} entries but the last snapshot ({snapshot}) had {}",
            stdx::count(now),
            stdx::count(before)
        )
    } else {
        return None;
    };
    Some(format!(
        "{said}: is the drive mounted? use --allow-shrink to accept"
    ))
}

/// Everything about the run that does not depend on a set.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    pub options: &'a Options,
    pub policy: &'a RetentionPolicy,
    /// The time the new snapshots are named after (seconds precision), also retention's `now`.
    pub now: NaiveDateTime,
    /// Add `--info=progress2` (a progress bar will be drawn).
    pub progress: bool,
}

/// What retention needs to know about an existing snapshot.
pub fn retention_info(s: &snapshot::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        time: s.time,
        state: s.state(),
        latest: false,
        holds: s.metadata.as_ref().map(|m| m.holds()).unwrap_or_default(),
        unreadable: s.metadata.as_ref().is_some_and(|m| m.has_unreadable()),
    }
}

/// Plans the run. Pure: everything it needs is in `world`.
pub fn plan(world: &World, sets: &[&SetSettings], opts: RunOptions) -> CollectPlan {
    let acls = world.rsync.acls && world.fs.acls;
    let xattrs = world.rsync.xattrs && world.fs.xattrs;
    let mut notes = Vec::new();
    for (what, flag, by_rsync, by_fs) in [
        ("ACLs", "-A", world.rsync.acls, world.fs.acls),
        (
            "extended attributes",
            "-X",
            world.rsync.xattrs,
            world.fs.xattrs,
        ),
    ] {
        if !by_rsync {
            notes.push(format!(
                "{what} are not copied ({flag} dropped): this rsync was built without them"
            ));
        } else if !by_fs {
            notes.push(format!("{what} are not copied ({flag} dropped): the filesystem of {} does not support them", world.root.display()));
        }
    }
    notes.extend(
        world
            .root_mode
            .and_then(|mode| open_root_note(&world.root, mode)),
    );
    let set_plans = sets
        .iter()
        .map(|set| {
            let set_world = world
                .sets
                .iter()
                .find(|w| w.name == set.name)
                .expect("observed every selected set");
            plan_set(world, set, set_world, &opts, acls, xattrs)
        })
        .collect();
    CollectPlan {
        backup_root: world.root.clone(),
        create_root: !world.root_exists,
        stamp: snapshot::stamp(opts.now),
        time: crate::json::localize(opts.now),
        full: opts.options.full,
        allow_shrink: opts.options.allow_shrink,
        rsync_version: world.rsync.version.clone(),
        acls,
        xattrs,
        retention: retention::describe(opts.policy),
        notes,
        sets: set_plans,
    }
}

fn plan_source(s: &SourceState) -> SourcePlan {
    let kind = match s.kind {
        SourceKind::Directory => "directory",
        SourceKind::File => "file",
        SourceKind::Other => "other",
        SourceKind::Missing => "missing",
    };
    SourcePlan {
        configured: s.source.configured.clone(),
        path: s.source.path.clone(),
        resolved: s.resolved.clone(),
        kind: kind.into(),
        in_snapshot: s.resolved.as_deref().map(SourceRecord::in_snapshot_path),
        entries: s.entries,
    }
}

/// What planning a set has to say so far: its warnings (exit 3), notes, and refusals (joined into the set's refusal).
#[derive(Default)]
struct Said {
    warnings: Vec<String>,
    notes: Vec<String>,
    refusals: Vec<String>,
}

/// One set, in the order its decisions depend on each other: the sources, the shrink check against the previous
/// snapshot, the name, what to link against and resume, the exclusions, rsync's command line, retention; each step
/// adding its refusals and notes.
fn plan_set(
    world: &World,
    set: &SetSettings,
    sw: &SetWorld,
    opts: &RunOptions,
    acls: bool,
    xattrs: bool,
) -> SetPlan {
    let layout = Layout::new(&world.root);
    let name = snapshot::snapshot_name(&set.name, opts.now);
    let mut said = Said::default();

    let sources: Vec<SourcePlan> = sw.sources.iter().map(plan_source).collect();
    let missing: Vec<&SourcePlan> = sources.iter().filter(|s| s.resolved.is_none()).collect();
    check_missing(set, &sources, &missing, &mut said);

    let previous = newest_complete(&sw.snapshots);
    let shrink_checks = shrink_checks(sw, previous, opts, &mut said);
    check_snapshots(sw, &name, &mut said);
    check_same_name(set, sw, &mut said);

    let mut link_dest = link_dest(sw, previous);
    let resume_from = (sw.in_progress || sw.partial).then(|| layout.partial(&set.name));
    if let Some(r) = &resume_from {
        link_dest.push(r.clone());
    }

    let Said {
        warnings,
        mut notes,
        refusals,
    } = said;
    let mut refusal = (!refusals.is_empty()).then(|| refusals.join("; "));
    let in_progress = layout.in_progress(&set.name);
    let exclusions = exclusions(set, sw, &mut notes);
    let filter_file = (!exclusions.is_empty()).then(|| layout.filter(&set.name));
    let pre_copy = if refusal.is_none() {
        let eligible =
            super::observe::sparse_prepass_allowed(&world.rsync.version, set, opts.options.full);
        super::sparse::plan(&sw.sparse, &exclusions, eligible)
    } else {
        Vec::new()
    };
    let rsync_argv = if refusal.is_none() {
        let present: Vec<PathBuf> = sources.iter().filter_map(|s| s.resolved.clone()).collect();
        let spec = ArgvSpec {
            sources: &present,
            filter: filter_file.as_deref(),
            link_dest: &link_dest,
            dest: &in_progress,
            full: opts.options.full,
            acls: acls && !rsync_args::turns_off(&set.rsync_args, 'A'),
            xattrs: xattrs && !rsync_args::turns_off(&set.rsync_args, 'X'),
            progress: opts.progress,
            sparse: rsync::sparse_allowed(&world.rsync.version, &set.rsync_args),
            extra: &set.rsync_args,
        };
        rsync::build_argv(&spec).unwrap_or_else(|e| {
            refusal = Some(e.to_string());
            Vec::new()
        })
    } else {
        Vec::new()
    };

    let retention = if refusal.is_none() {
        retention_after(sw, &name, opts, &sources, &missing)
    } else {
        Vec::new()
    };

    SetPlan {
        action: if refusal.is_some() {
            SetAction::Refuse
        } else {
            SetAction::Collect
        },
        refusal,
        rsync_argv,
        retention,
        exclusions,
        skipped: sw.marked.skipped.clone(),
        filter_file,
        expected_entries: previous
            .and_then(|p| p.metadata.as_ref())
            .map(|m| m.stats.files),
        pre_copy,
        ..base_plan(
            set,
            &layout,
            &name,
            in_progress,
            resume_from,
            link_dest,
            sources,
            shrink_checks,
            warnings,
            notes,
        )
    }
}

/// Every source missing: a refusal (nothing to back up); some: a warning for each (the snapshot is incomplete).
fn check_missing(
    set: &SetSettings,
    sources: &[SourcePlan],
    missing: &[&SourcePlan],
    said: &mut Said,
) {
    if missing.len() == sources.len() {
        let names: Vec<&str> = missing.iter().map(|s| s.configured.as_str()).collect();
        said.refusals.push(format!(
            "every source of set {} is missing ({}); nothing to back up",
            set.name,
            names.join(", ")
        ));
    } else {
        for m in missing {
            said.warnings.push(format!(
                "source {} ({}) is missing: skipped, so the snapshot will be incomplete and the newest copy of it \
                 is kept; is its drive mounted?",
                m.configured,
                m.path.display()
            ));
        }
    }
}

/// The shrink guard: each directory source against the newest complete snapshot; a shrunken one refused, or a
/// warning under `--allow-shrink`.
fn shrink_checks(
    sw: &SetWorld,
    previous: Option<&snapshot::Snapshot>,
    opts: &RunOptions,
    said: &mut Said,
) -> Vec<ShrinkCheck> {
    let mut checks = Vec::new();
    for s in &sw.sources {
        let (Some(resolved), Some(now), Some(before), Some(prev)) =
            (&s.resolved, s.entries, s.previous_entries, previous)
        else {
            continue;
        };
        let problem = shrink_problem(resolved.display(), now, before, &prev.name);
        let verdict = match (&problem, opts.options.allow_shrink) {
            (None, _) => "ok",
            (Some(p), false) => {
                said.refusals.push(p.clone());
                "refused"
            }
            (Some(p), true) => {
                said.warnings
                    .push(format!("{p} (accepted: --allow-shrink)"));
                "allowed"
            }
        };
        checks.push(ShrinkCheck {
            path: resolved.clone(),
            entries: now,
            previous_entries: before,
            previous_snapshot: prev.name.clone(),
            verdict: verdict.into(),
            message: problem,
        });
    }
    checks
}

/// The new name taken already (a refusal), and the snapshots without usable metadata (a note each for the first
/// [`stdx::NAMED`](crate::stdx::NAMED), one counting the rest: a messy backup root may hold any number of them).
fn check_snapshots(sw: &SetWorld, name: &str, said: &mut Said) {
    if sw.snapshots.iter().any(|s| s.name == name) {
        said.refusals.push(format!(
            "snapshot {name} already exists; run again in a second"
        ));
    }
    let unusable: Vec<(&str, &String)> = (sw.snapshots.iter())
        .filter(|s| s.state() == SnapshotState::Unknown)
        .filter_map(|s| Some((s.name.as_str(), s.metadata_error.as_ref()?)))
        .collect();
    for (name, err) in unusable.iter().take(crate::stdx::NAMED) {
        said.notes.push(format!(
            "snapshot {name} has no usable metadata ({err}): it is never linked against nor removed"
        ));
    }
    let more = unusable.len().saturating_sub(crate::stdx::NAMED);
    if more > 0 {
        said.notes.push(format!(
            "{} of this set have no usable metadata: they are never linked against nor removed",
            crate::stdx::counted(more as u64, "more snapshot", "more snapshots")
        ));
    }
}

/// A set of the same name in another config sharing the backup root (the root keeps configs apart by set name only,
/// and a config has no identity of its own): the newest snapshot with metadata copied sources none of which this run
/// copies. Their snapshots would mix (retention counts both, a restore takes the newest), so a warning names both.
/// A set whose sources were all replaced is said so once (its next snapshot shares them); one that gained or lost a
/// source shares the others and is not.
fn check_same_name(set: &SetSettings, sw: &SetWorld, said: &mut Said) {
    let Some((previous, meta)) = sw
        .snapshots
        .iter()
        .rev()
        .find_map(|s| s.metadata.as_ref().map(|m| (s, m)))
    else {
        return;
    };
    let ours = |p: &std::path::Path| {
        sw.sources
            .iter()
            .any(|s| s.source.path == p || s.source.resolved == p)
    };
    if meta.sources.is_empty()
        || sw.sources.is_empty()
        || meta
            .sources
            .iter()
            .any(|r| ours(&r.path) || ours(&r.resolved))
    {
        return;
    }
    let listed = |paths: Vec<&std::path::Path>| -> String {
        let shown: Vec<String> = paths.into_iter().map(stdx::show_path).collect();
        shown.join(", ")
    };
    said.warnings.push(format!(
        "the previous snapshot of set {0}, {1}, copied {2}, none of this run's sources ({3}): is there a set {0} in \
         another config with this backup root? Their snapshots mix (retention counts both, a restore takes the \
         newest): give one of the sets another name or another backup_root. If this set's sources were replaced, \
         this is said once",
        set.name,
        previous.name,
        listed(meta.sources.iter().map(|r| r.path.as_path()).collect()),
        listed(sw.sources.iter().map(|s| s.source.path.as_path()).collect()),
    ));
}

/// Link against the newest complete snapshot, then a newer incomplete one (files it has are whole); the caller adds
/// the interrupted run's copy.
fn link_dest(sw: &SetWorld, previous: Option<&snapshot::Snapshot>) -> Vec<PathBuf> {
    let mut link_dest = Vec::new();
    if let Some(p) = previous {
        link_dest.push(p.path.clone());
    }
    if let Some(newest) = sw
        .snapshots
        .iter()
        .rev()
        .find(|s| s.state() != SnapshotState::Unknown)
        && newest.state() == SnapshotState::Incomplete
        && previous.is_none_or(|p| newest.time > p.time)
    {
        link_dest.push(newest.path.clone());
    }
    link_dest
}

/// The user's rules in order (an include is `!pattern`), then the directories skipped for what they hold; a note
/// for a directory no rule can name and for a walk cut short.
fn exclusions(set: &SetSettings, sw: &SetWorld, notes: &mut Vec<String>) -> Vec<String> {
    let mut exclusions: Vec<String> = set.exclusions.iter().map(|e| e.rule()).collect();
    for d in &sw.marked.skipped {
        match super::marked::rule_for(&d.path) {
            Some(rule) => exclusions.push(rule),
            None => notes.push(format!(
                "{} holds {} but its name cannot be written as an rsync rule; it is copied",
                crate::stdx::show_path(&d.path),
                d.holds
            )),
        }
    }
    if sw.marked.truncated {
        notes.push(format!(
            "looked for directories to skip in the first {} directories only; caches and marked directories \
             beyond them are copied",
            crate::stdx::count(sw.marked.dirs as u64)
        ));
    }
    exclusions
}

/// Retention after this run, assuming the new snapshot completes (incomplete when a source is missing).
fn retention_after(
    sw: &SetWorld,
    name: &str,
    opts: &RunOptions,
    sources: &[SourcePlan],
    missing: &[&SourcePlan],
) -> Vec<Decision> {
    let mut infos: Vec<SnapshotInfo> = sw.snapshots.iter().map(retention_info).collect();
    infos.push(SnapshotInfo {
        name: name.to_string(),
        time: opts.now,
        state: if missing.is_empty() {
            SnapshotState::Complete
        } else {
            SnapshotState::Incomplete
        },
        latest: true,
        holds: sources
            .iter()
            .filter(|s| s.resolved.is_some())
            .map(|s| s.path.clone())
            .collect(),
        unreadable: false,
    });
    let missing: Vec<PathBuf> = missing.iter().map(|s| s.path.clone()).collect();
    retention::decide(&infos, opts.policy, &missing, opts.now)
}

#[allow(clippy::too_many_arguments)]
fn base_plan(
    set: &SetSettings,
    layout: &Layout,
    name: &str,
    in_progress: PathBuf,
    resume_from: Option<PathBuf>,
    link_dest: Vec<PathBuf>,
    sources: Vec<SourcePlan>,
    shrink_checks: Vec<ShrinkCheck>,
    warnings: Vec<String>,
    notes: Vec<String>,
) -> SetPlan {
    SetPlan {
        set: set.name.clone(),
        action: SetAction::Collect,
        refusal: None,
        snapshot: name.to_string(),
        snapshot_path: layout.snapshot(name),
        metadata_path: layout.metadata(name),
        in_progress,
        resume_from,
        link_dest,
        pre_copy: Vec::new(),
        sources,
        exclusions: Vec::new(),
        skipped: Vec::new(),
        filter_file: None,
        shrink_checks,
        rsync_argv: Vec::new(),
        expected_entries: None,
        retention: Vec::new(),
        warnings,
        notes,
    }
}

/// The plan for people (what `--dry-run` prints without `--json`).
pub fn render(plan: &CollectPlan) -> String {
    // Stays long: the dry run's text, one section after another in the order it is printed.
    let mut out = String::new();
    let root = plan.backup_root.display();
    if plan.create_root {
        let _ = writeln!(
            out,
            "backup root {root} (does not exist: would be created, mode 0700)"
        );
    } else {
        let _ = writeln!(out, "backup root {root}");
    }
    let copied = match (plan.acls, plan.xattrs) {
        (true, true) => "ACLs and xattrs copied",
        (true, false) => "ACLs copied, xattrs not",
        (false, true) => "xattrs copied, ACLs not",
        (false, false) => "ACLs and xattrs not copied",
    };
    let _ = writeln!(
        out,
        "rsync {}, {copied}, retention: {}",
        plan.rsync_version, plan.retention
    );
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for s in &plan.sets {
        out.push('\n');
        if let Some(why) = &s.refusal {
            let _ = writeln!(out, "set {}: refused: {why}", s.set);
        } else {
            let kind = if plan.full {
                "full: contents compared"
            } else {
                "incremental"
            };
            let _ = writeln!(out, "set {}: would create {} ({kind})", s.set, s.snapshot);
        }
        for src in &s.sources {
            let shown = match &src.resolved {
                Some(r) if *r == src.path => src.configured.clone(),
                Some(r) => format!("{} -> {}", src.configured, r.display()),
                None => src.configured.clone(),
            };
            let detail = match (src.kind.as_str(), src.entries) {
                ("missing", _) => "missing: skipped".to_string(),
                ("directory", Some(n)) => {
                    format!("directory, {}", stdx::counted(n, "entry", "entries"))
                }
                (k, _) => k.to_string(),
            };
            let _ = writeln!(out, "  source    {shown} ({detail})");
        }
        if !s.exclusions.is_empty() {
            const SHOWN: usize = 8;
            let mut shown: Vec<String> = s
                .exclusions
                .iter()
                .take(SHOWN)
                .map(|p| ui::shell_words(&[p.as_str()]))
                .collect();
            if s.exclusions.len() > SHOWN {
                shown.push(format!(
                    "and {} more",
                    stdx::count((s.exclusions.len() - SHOWN) as u64)
                ));
            }
            let _ = writeln!(out, "  exclude   {}", shown.join(" "));
        }
        const SKIPS_SHOWN: usize = 8;
        for d in s.skipped.iter().take(SKIPS_SHOWN) {
            let _ = writeln!(
                out,
                "  skip      {} (holds {})",
                crate::stdx::show_path(&d.path),
                crate::stdx::show_str(&d.holds)
            );
        }
        if s.skipped.len() > SKIPS_SHOWN {
            let _ = writeln!(
                out,
                "  skip      and {} more directories",
                stdx::count((s.skipped.len() - SKIPS_SHOWN) as u64)
            );
        }
        for c in s.shrink_checks.iter().filter(|c| c.verdict != "ok") {
            let _ = writeln!(
                out,
                "  shrink    {}: {}",
                c.verdict,
                c.message.as_deref().unwrap_or("")
            );
        }
        for w in &s.warnings {
            let _ = writeln!(out, "  warning   {w}");
        }
        for n in &s.notes {
            let _ = writeln!(out, "  note      {n}");
        }
        if s.action == SetAction::Refuse {
            continue;
        }
        if let Some(r) = &s.resume_from {
            let _ = writeln!(
                out,
                "  resume    reusing the interrupted run's copy ({})",
                r.display()
            );
        }
        if !s.pre_copy.is_empty() {
            let size: u64 = s.pre_copy.iter().map(|c| c.size).sum();
            let data: u64 = s.pre_copy.iter().map(|c| c.allocated).sum();
            let _ = writeln!(
                out,
                "  sparse    {} of {} copied first, reading about {} of data, not the holes",
                stdx::counted(s.pre_copy.len() as u64, "sparse file", "sparse files"),
                stdx::bytes(size),
                stdx::bytes(data)
            );
        }
        let links = s.link_dest_names();
        if links.is_empty() {
            let _ = writeln!(
                out,
                "  link      nothing to link against: every file is copied"
            );
        } else {
            let _ = writeln!(
                out,
                "  link      unchanged files hard-linked from {}",
                links.join(", ")
            );
        }
        let _ = writeln!(out, "  rsync     {}", ui::shell_words(&s.rsync_argv));
        // The snapshots without metadata: the first few named, as the notes name them.
        let (listed, more) = crate::retention::listed(&s.retention, crate::retention::NO_METADATA);
        for d in listed {
            let verb = if d.keep { "keep" } else { "remove" };
            let new = if d.name == s.snapshot {
                " (this run)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {verb:<9} {}{new}: {}", d.name, d.reasons.join("; "));
        }
        if more > 0 {
            let _ = writeln!(
                out,
                "  keep      {} without dbackup metadata: not judged; remove them by hand if they are not needed",
                crate::stdx::counted(more as u64, "more snapshot", "more snapshots")
            );
        }
    }
    out
}

/// The note on a backup root other users can read: a note, not a warning (exit 0), since snapshots keep their
/// sources' modes and so expose nothing the sources did not. Said by the dry run and once by the run.
pub(crate) fn open_root_note(root: &std::path::Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "the backup root {} has mode {mode:04o}: other users can read your backups; run `chmod 700 {}`",
            root.display(),
            root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rsync::{Capabilities, FsSupport};
    use crate::settings::SourcePath;
    use crate::snapshot::Snapshot;
    use std::path::Path;

    fn snap(name: &str, complete: Option<bool>) -> Snapshot {
        Snapshot {
            set: "data".into(),
            name: name.into(),
            time: snapshot::parse_snapshot_name("data", name).unwrap(),
            path: Path::new("/b").join(name),
            metadata: complete.map(|c| crate::snapshot::tests::meta("data", name, c)),
            metadata_error: complete.is_none().then(|| "missing".to_string()),
        }
    }

    fn world(fs: FsSupport, snapshots: Vec<Snapshot>, in_progress: bool) -> (World, SetSettings) {
        let source = SourcePath {
            configured: "~/data".into(),
            path: "/h/data".into(),
            resolved: "/data".into(),
        };
        let set = SetSettings {
            name: "data".into(),
            sources: vec![source.clone()],
            exclusions: vec![],
            exclude_from: vec![],
            exclude_caches: false,
            exclude_if_present: vec![],
            rsync_args: vec![],
        };
        let state = SourceState {
            source,
            resolved: Some("/data".into()),
            kind: SourceKind::Directory,
            entries: Some(10),
            previous_entries: Some(10),
        };
        let w = World {
            root: "/b".into(),
            root_exists: true,
            root_mode: Some(0o755),
            rsync: Capabilities {
                version: "3.2.7".into(),
                acls: true,
                xattrs: true,
            },
            fs,
            sets: vec![SetWorld {
                name: "data".into(),
                sources: vec![state],
                snapshots,
                in_progress,
                partial: false,
                marked: Default::default(),
                sparse: Vec::new(),
            }],
        };
        (w, set)
    }

    /// A filesystem with ACLs and extended attributes.
    const SUPPORTED: FsSupport = FsSupport {
        acls: true,
        xattrs: true,
    };

    /// Asserts that one of the notes `holds`.
    fn assert_noted(notes: &[String], holds: impl Fn(&str) -> bool) {
        assert!(notes.iter().any(|n| holds(n)), "{notes:?}");
    }

    fn opts(options: &Options) -> RunOptions<'_> {
        const LAST_2: RetentionPolicy = RetentionPolicy {
            last: Some(2),
            hourly: None,
            daily: None,
            weekly: None,
            monthly: None,
            yearly: None,
        };
        RunOptions {
            options,
            policy: &LAST_2,
            now: snapshot::parse_stamp("2025-04-05-000000").unwrap(),
            progress: false,
        }
    }

    #[test]
    fn without_acl_and_xattr_support_a_and_x_are_dropped_and_noted() {
        let (w, set) = world(
            FsSupport {
                acls: false,
                xattrs: false,
            },
            vec![],
            false,
        );
        let args = Options::default();
        let p = plan(&w, &[&set], opts(&args));
        assert_eq!(p.sets[0].rsync_argv[1], "-aH");
        assert!(!p.acls && !p.xattrs);
        assert_noted(&p.notes, |n| {
            n.starts_with("ACLs are not copied (-A dropped): the filesystem of /b")
        });
        assert_noted(&p.notes, |n| {
            n.starts_with("extended attributes are not copied (-X dropped)")
        });
        assert_noted(&p.notes, |n| {
            n.contains("has mode 0755") && n.contains("chmod 700 /b")
        });
        let (w, set) = world(SUPPORTED, vec![], false);
        assert_eq!(
            plan(&w, &[&set], opts(&args)).sets[0].rsync_argv[1],
            "-aHAX"
        );
    }

    #[test]
    fn link_dest_prefers_complete_then_newer_incomplete_then_the_interrupted_copy() {
        let snaps = vec![
            snap("data-2025-04-01-000000", Some(true)),
            snap("data-2025-04-02-000000", Some(true)),
            snap("data-2025-04-03-000000", Some(false)),
            snap("data-2025-04-04-000000", None),
        ];
        let (w, set) = world(SUPPORTED, snaps, true);
        let args = Options {
            full: true,
            ..Default::default()
        };
        let p = plan(&w, &[&set], opts(&args));
        let s = &p.sets[0];
        assert_eq!(s.action, SetAction::Collect);
        assert_eq!(
            s.link_dest,
            [
                PathBuf::from("/b/data-2025-04-02-000000"),
                "/b/data-2025-04-03-000000".into(),
                "/b/.data.partial".into()
            ]
        );
        assert_eq!(
            s.resume_from.as_deref(),
            Some(Path::new("/b/.data.partial"))
        );
        assert!(s.rsync_argv.contains(&"--checksum".to_string()));
        assert_eq!(s.snapshot, "data-2025-04-05-000000");
        assert!(
            s.notes[0].contains("data-2025-04-04-000000 has no usable metadata"),
            "{:?}",
            s.notes
        );
        let removed: Vec<&str> = crate::retention::removed(&s.retention).collect();
        assert_eq!(
            removed,
            ["data-2025-04-03-000000", "data-2025-04-01-000000"]
        );
        assert_eq!(p.expected_exit(), Exit::Ok);
    }

    #[test]
    fn a_shrunken_source_is_refused_or_allowed() {
        let (mut w, set) = world(
            SUPPORTED,
            vec![snap("data-2025-04-01-000000", Some(true))],
            false,
        );
        w.sets[0].sources[0].entries = Some(0);
        let args = Options::default();
        let p = plan(&w, &[&set], opts(&args));
        assert_eq!(p.sets[0].action, SetAction::Refuse);
        assert!(p.sets[0].rsync_argv.is_empty() && p.sets[0].retention.is_empty());
        assert_eq!(p.sets[0].shrink_checks[0].verdict, "refused");
        assert_eq!(p.expected_exit(), Exit::Failed);
        let args = Options {
            allow_shrink: true,
            ..Default::default()
        };
        let p = plan(&w, &[&set], opts(&args));
        assert_eq!(p.sets[0].action, SetAction::Collect);
        assert_eq!(p.sets[0].shrink_checks[0].verdict, "allowed");
        assert_eq!(p.expected_exit(), Exit::Warnings);
    }

    #[test]
    fn shrink_guard_thresholds() {
        let p = Path::new("/data");
        assert_eq!(
            shrink_problem(p.display(), 0, 1234, "data-x").as_deref(),
            Some(
                "/data is empty but the last snapshot (data-x) had 1,234 entries: is the drive mounted? use --allow-shrink to accept"
            )
        );
        assert_eq!(
            shrink_problem(p.display(), 0, 1, "data-x").as_deref(),
            Some(
                "/data is empty but the last snapshot (data-x) had 1 entry: is the drive mounted? use --allow-shrink to accept"
            )
        );
        // (entries now, entries before, refused, why)
        for (now, before, refused, why) in [
            (0, 1, true, "empty after non-empty is always suspicious"),
            (1, 4, true, "a drop by more than half from 4"),
            (2, 4, false, "exactly half is fine"),
            (1, 3, false, "small directories may shrink"),
            (0, 0, false, "nothing before, nothing now"),
            (10, 5, false, "growth"),
        ] {
            let problem = shrink_problem(p.display(), now, before, "s");
            assert_eq!(problem.is_some(), refused, "{why}: {problem:?}");
        }
    }
}
