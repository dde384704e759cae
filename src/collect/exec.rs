//! Carrying out a collect plan: rsync into the in-progress directory, write metadata, promote by rename, move
//! `latest`, then apply retention (crash-safe deletion through trash names). Also the run's preparation: the
//! backup root (0700), the lock, and the clean-up of what crashed runs left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};

use super::plan::{CollectPlan, SetAction, SetPlan};
use crate::config::RetentionPolicy;
use crate::exit::{CodedError, Exit};
use crate::lock::RunLock;
use crate::retention::{self, Removed, SnapshotInfo};
use crate::rsync::{self, Event, RsyncExit};
use crate::snapshot::TransferStats;
use crate::snapshot::{self, FileProblem, Layout, RsyncRecord, SnapshotMeta, SourceRecord};
use crate::stdx;
use crate::ui::{self, Ui};

/// What a run did, per set. Printed with `--json` and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReport {
    /// The process exit code: the worst of the sets.
    pub exit: u8,
    pub backup_root: PathBuf,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// Leftovers of crashed runs removed before starting (trash, orphan metadata).
    pub cleaned: Vec<String>,
    pub sets: Vec<SetReport>,
}

/// The outcome for one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    pub set: String,
    pub status: SetStatus,
    /// This set's exit code (0, 1 or 3).
    pub exit: u8,
    /// The new snapshot's name and path (complete or incomplete runs).
    pub snapshot: Option<String>,
    pub path: Option<PathBuf>,
    pub full: bool,
    pub resumed: bool,
    /// rsync's exit code, when it ran.
    pub rsync_exit: Option<i32>,
    pub stats: Option<TransferStats>,
    pub seconds: f64,
    pub unreadable: Vec<FileProblem>,
    pub vanished: Vec<PathBuf>,
    /// Sources that were missing (as configured): the snapshot lacks them, so it is incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_sources: Vec<String>,
    pub warnings: Vec<String>,
    /// Snapshots removed by retention, with the reason.
    pub removed: Vec<Removed>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// A new complete snapshot.
    Complete,
    /// A new snapshot without some unreadable files (rsync exit 23).
    Incomplete,
    /// Refused before rsync ran (all sources missing, shrunken source, ...).
    Refused,
    /// rsync or a later step failed; nothing was promoted.
    Failed,
}

impl CollectReport {
    pub fn exit(&self) -> Exit {
        Exit::of_phase(self.exit)
    }
}

/// What holds the run together: the lock, and what was cleaned up.
#[derive(Debug)]
pub struct Prepared {
    #[expect(
        dead_code,
        reason = "held, never read: dropping it releases the run lock"
    )]
    pub lock: RunLock,
    pub cleaned: Vec<String>,
    /// The note said on a backup root other users can read ([`super::plan::open_root_note`]).
    pub root_note: Option<String>,
}

/// Creates the backup root (0700) if missing, notes when an existing one is open to others, takes the lock and
/// removes leftovers of crashed runs.
pub fn prepare(root: &Path, state_dir: &Path, sets: &[&str], ui: &Ui) -> anyhow::Result<Prepared> {
    if let Some(gone) = vanished_root(root, state_dir) {
        return Err(CodedError::new(
            Exit::Failed,
            format!(
                "the backup root {} holds none of the snapshots earlier runs made there ({} for one): is the \
                 disk it lives on mounted? Mount it and run again; nothing was written. If they are gone for good, \
                 start afresh by moving the run log aside: mv {log} {log}.old",
                root.display(),
                gone.display(),
                log = crate::runlog::path(state_dir).display()
            ),
        )
        .into());
    }
    let mut root_note = None;
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {
            root_note = super::plan::open_root_note(root, m.permissions().mode() & 0o7777);
            if let Some(n) = &root_note {
                ui.info(format_args!("dbackup: note: {n}"));
            }
        }
        Ok(_) => anyhow::bail!(
            "the backup root {} exists but is not a directory; move it away or set backup_root",
            root.display()
        ),
        Err(_) => {
            snapshot::create_private_dir(root).context("creating the backup root")?;
            ui.step(format_args!(
                "created the backup root {} (mode 0700)",
                root.display()
            ));
        }
    }
    let lock = RunLock::acquire(root)?;
    let lacks = snapshot::root_lacks(root).context("probing the backup root")?;
    if let [rest @ .., last] = lacks.as_slice() {
        let lacks = match rest {
            [] => last.to_string(),
            _ => format!("{} and {last}", rest.join(", ")),
        };
        return Err(CodedError::new(
            Exit::Usage,
            format!(
                "the backup root {} is on a filesystem without {lacks} (exFAT or FAT?): every snapshot would be a \
                 full copy, and private files readable by all; put backup_root on a Linux filesystem (ext4, xfs, \
                 btrfs), and a removable drive under destinations",
                root.display(),
            ),
        )
        .into());
    }
    let cleaned = snapshot::clean_leftovers(root, sets)
        .context("removing what an interrupted run left behind")?
        .removed;
    for c in &cleaned {
        ui.step(format_args!("removed leftover {c}"));
    }
    Ok(Prepared {
        lock,
        cleaned,
        root_note,
    })
}

/// The newest snapshot the run log says was made in `root`, when `root` now holds no snapshot at all and that one is
/// gone too: the disk the root lives on is not mounted (then collect would fill the disk below the mount point with
/// a first full copy), or its snapshots were removed by hand.
fn vanished_root(root: &Path, state_dir: &Path) -> Option<PathBuf> {
    if snapshot::holds_any_snapshot(root) {
        return None;
    }
    let records = crate::runlog::read(state_dir).ok()?;
    crate::runlog::last_snapshot_under(&records, root).filter(|p| fs::symlink_metadata(p).is_err())
}

/// Runs every set of the plan, one after the other. A set's failure does not stop the others.
pub fn execute(
    plan: &CollectPlan,
    policy: &RetentionPolicy,
    ui: &Ui,
    prepared: &Prepared,
) -> CollectReport {
    let started = Local::now().fixed_offset();
    // The open root's note was said once by `prepare`.
    for n in plan
        .notes
        .iter()
        .filter(|n| Some(*n) != prepared.root_note.as_ref())
    {
        ui.step(format_args!("note: {n}"));
    }
    let mut sets: Vec<SetReport> = Vec::new();
    for s in &plan.sets {
        // Interrupted: the sets not started are left for the next run.
        if crate::interrupt::requested().is_some() {
            break;
        }
        sets.push(run_set(plan, s, policy, ui));
    }
    let exit = sets
        .iter()
        .fold(Exit::Ok, |acc, s| acc.worst(Exit::of_phase(s.exit)));
    CollectReport {
        exit: exit.code(),
        backup_root: plan.backup_root.clone(),
        started,
        finished: Local::now().fixed_offset(),
        cleaned: prepared.cleaned.clone(),
        sets,
    }
}

fn blank_report(set: &SetPlan, full: bool) -> SetReport {
    SetReport {
        set: set.set.clone(),
        status: SetStatus::Failed,
        exit: Exit::Failed.code(),
        snapshot: None,
        path: None,
        full,
        resumed: set.resume_from.is_some(),
        rsync_exit: None,
        stats: None,
        seconds: 0.0,
        unreadable: Vec::new(),
        vanished: Vec::new(),
        missing_sources: Vec::new(),
        warnings: set.warnings.clone(),
        removed: Vec::new(),
        error: None,
    }
}

fn run_set(plan: &CollectPlan, set: &SetPlan, policy: &RetentionPolicy, ui: &Ui) -> SetReport {
    let clock = Instant::now();
    let mut report = blank_report(set, plan.full);
    for w in &set.warnings {
        ui.warn(format_args!("{}: {w}", set.set));
    }
    for n in &set.notes {
        ui.info(format_args!("{}: note: {n}", set.set));
    }
    if set.action == SetAction::Refuse {
        report.status = SetStatus::Refused;
        report.error = set.refusal.clone();
        return report;
    }
    if let Err(e) = collect_set(plan, set, policy, ui, &mut report) {
        report.status = SetStatus::Failed;
        report.exit = Exit::Failed.code();
        report.error = Some(ui::format_error(&e));
    }
    report.seconds = clock.elapsed().as_secs_f64();
    report
}

/// Moves an interrupted run's copy to `.<set>.partial` (replacing an older one), where the plan expects it.
fn set_aside_interrupted(root: &Path, set: &SetPlan) -> anyhow::Result<()> {
    let Some(partial) = &set.resume_from else {
        return Ok(());
    };
    if !set.in_progress.exists() {
        return Ok(());
    }
    discard(root, partial)?;
    fs::rename(&set.in_progress, partial).with_context(|| {
        format!(
            "moving the interrupted run's copy {} to {}",
            set.in_progress.display(),
            partial.display()
        )
    })?;
    Ok(())
}

fn collect_set(
    plan: &CollectPlan,
    set: &SetPlan,
    policy: &RetentionPolicy,
    ui: &Ui,
    report: &mut SetReport,
) -> anyhow::Result<()> {
    let root = &plan.backup_root;
    let started = Local::now().fixed_offset();
    set_aside_interrupted(root, set)?;
    snapshot::create_private_dir(&set.in_progress)?;
    if fs::read_dir(&set.in_progress)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty; is another run using it?",
            set.in_progress.display()
        );
    }

    let pre = pre_copy(set, ui)?;
    let run = run_rsync(set, ui)?;
    // Interrupted (rsync heard the signal too): nothing is promoted; the copy stays where the next run resumes it.
    crate::interrupt::check()?;
    report.rsync_exit = Some(run.exit.code());
    let mut run = run;
    if set.link_dest.is_empty() {
        // Nothing to link to: what rsync did not transfer are the source's own hard links (`-H`), not bytes shared
        // with an earlier snapshot. A first collect claims none.
        run.stats.linked_bytes = 0;
    }
    // What the pre-pass copied rsync did not transfer; it is not shared with an earlier snapshot either.
    run.stats.linked_bytes = run.stats.linked_bytes.saturating_sub(pre.size);
    report.stats = Some(run.stats);
    // A full disk's lines name files in the copy, not files rsync could not read (the error says what they say).
    if !run.disk_full() {
        report.unreadable = run.unreadable.clone();
    }
    report.vanished = run.vanished.clone();

    if !run.promotable() {
        let mut msg = format!(
            "{}; nothing was promoted and {}-latest was left alone",
            run.describe(),
            set.set
        );
        if let Some(line) = run.disk_full_line() {
            // What rsync said last (a broken pipe, its exit) only follows from this.
            msg.push_str(&format!("; rsync said: {}", stdx::show_str(line)));
        } else if !run.errors.is_empty() {
            msg.push_str(&format!("; rsync said: {}", run.errors.join(" | ")));
        }
        if run.disk_full() {
            // Kept, the copy would hold the very space the next run needs (and what a new exclusion leaves out).
            let removed = [&set.in_progress]
                .into_iter()
                .chain(&set.resume_from)
                .try_for_each(|p| discard(root, p));
            msg.push_str(&match removed {
                Ok(()) => "; the copy so far was removed to give its space back".to_string(),
                Err(e) => format!(
                    "; the copy so far could not be removed ({}): remove {} to give its space back",
                    ui::format_error(&e),
                    set.in_progress.display()
                ),
            });
        } else {
            msg.push_str(&format!(
                "; the copy so far stays in {} and the next run reuses it",
                set.in_progress.display()
            ));
        }
        anyhow::bail!(msg);
    }

    let missing: Vec<&str> = set
        .sources
        .iter()
        .filter(|s| s.resolved.is_none())
        .map(|s| s.configured.as_str())
        .collect();
    let shrunk = copy_shrank(set, &run, &missing);
    if let Some(problem) = &shrunk
        && !plan.allow_shrink
    {
        anyhow::bail!(
            "{problem}; nothing was promoted and {}-latest was left alone",
            set.set
        );
    }
    let complete = run.exit != RsyncExit::Partial && missing.is_empty();
    report.missing_sources = missing.iter().map(|m| m.to_string()).collect();
    let mut warnings = run_warnings(set, &run, ui);
    if let Some(problem) = shrunk {
        let problem = format!("{problem} (accepted: --allow-shrink)");
        ui.warn(format_args!("{}: {problem}", set.set));
        warnings.push(problem);
    }
    let meta = snapshot_meta(plan, set, &run, complete, started, &warnings);

    // Durable before named: flush the copy, write the metadata, then promote by rename and move `latest`.
    snapshot::sync_filesystem(root)?;
    crate::interrupt::check()?;
    if let Err(e) = snapshot::write_metadata(root, &meta) {
        let e = anyhow::Error::new(e);
        if !stdx::fs::filled_up(&e) {
            return Err(e);
        }
        anyhow::bail!(
            "{}: the backup disk is full; free space or prune snapshots; nothing was promoted and {}-latest was \
             left alone",
            ui::format_error(&e),
            set.set
        );
    }
    if let Err(e) = snapshot::promote(root, &set.in_progress, &set.snapshot) {
        let _ = fs::remove_file(Layout::new(root).metadata(&set.snapshot));
        return Err(e.into());
    }
    report.snapshot = Some(set.snapshot.clone());
    report.path = Some(set.snapshot_path.clone());
    report.status = if complete {
        SetStatus::Complete
    } else {
        SetStatus::Incomplete
    };
    report.exit = if complete && warnings.is_empty() {
        Exit::Ok.code()
    } else {
        Exit::Warnings.code()
    };
    report.warnings = warnings;
    snapshot::set_latest(root, &set.set, &set.snapshot)?;

    if let Some(partial) = &set.resume_from
        && let Err(e) = discard(root, partial)
    {
        report.warnings.push(format!(
            "could not remove {}: {}",
            partial.display(),
            ui::format_error(&e)
        ));
    }

    // Retention waits for a run that was not interrupted.
    if crate::interrupt::requested().is_none() {
        prune(root, &set.set, policy, set, ui, report);
    }
    Ok(())
}

/// The shrink guard on the copy as a whole: rsync's count of its entries against the newest complete snapshot's. The
/// plan's guard sees each source's top level only, not a tree emptied below it (a disk not mounted at
/// `~/data/projects`). Silent when a source is missing (retention keeps that source's copies) or when the plan's
/// guard already spoke.
fn copy_shrank(set: &SetPlan, run: &rsync::RsyncRun, missing: &[&str]) -> Option<String> {
    let before = set.expected_entries?;
    let previous = set.link_dest.first()?.file_name()?.to_string_lossy();
    if !missing.is_empty() || set.shrink_checks.iter().any(|c| c.verdict != "ok") {
        return None;
    }
    super::plan::shrink_problem(
        format_args!("the copy of set {}", set.set),
        run.stats.files,
        before,
        &previous,
    )
}

/// Removes an in-progress or partial copy, if there is one, crash-safely: renamed to a trash name, then removed.
fn discard(root: &Path, path: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let trash = snapshot::move_to_trash(root, path)?;
    snapshot::remove_tree(&trash).with_context(|| format!("removing {}", trash.display()))
}

/// Copies the plan's sparse files into the in-progress copy before rsync runs (only their data read: see
/// [`super::sparse`]); a file left to rsync is said why at `-v`.
fn pre_copy(set: &SetPlan, ui: &Ui) -> anyhow::Result<super::sparse::Copied> {
    if set.pre_copy.is_empty() {
        return Ok(super::sparse::Copied::default());
    }
    ui.step(format_args!(
        "{}: copying {} (their data only) before rsync",
        set.set,
        stdx::counted(set.pre_copy.len() as u64, "sparse file", "sparse files")
    ));
    let done = super::sparse::copy_all(&set.pre_copy, &set.in_progress);
    // Interrupted: nothing more is copied, rsync does not start; the in-progress copy is resumed next time.
    crate::interrupt::check()?;
    for (path, why) in &done.left {
        ui.detail(format_args!(
            "{}: {} is left to rsync: {why}",
            set.set,
            stdx::show_path(path)
        ));
    }
    ui.detail(format_args!(
        "{}: copied {} ({} of data read)",
        set.set,
        stdx::counted(done.files, "sparse file", "sparse files"),
        stdx::bytes(done.data)
    ));
    Ok(done)
}

/// Runs the set's rsync into its in-progress copy, with its filter file beside it and a progress bar on a terminal.
fn run_rsync(set: &SetPlan, ui: &Ui) -> anyhow::Result<rsync::RsyncRun> {
    ui.step(format_args!(
        "{}: copying into {}",
        set.set,
        set.in_progress.display()
    ));
    ui.detail(format_args!(
        "{}: {}",
        set.set,
        ui::shell_words(&set.rsync_argv)
    ));
    // The exclusions reach rsync as a file of filter rules, not as arguments (thousands would overflow the
    // argument list); it lives beside the in-progress copy while rsync runs.
    let filter = match &set.filter_file {
        Some(path) => {
            snapshot::write_atomic(path, rsync::filter_rules(&set.exclusions).as_bytes(), 0o600)?;
            Some(FilterFile(path))
        }
        None => None,
    };
    let mut line = ui.progress.then(|| crate::progress::Line::new(&set.set));
    let verbosity = ui.verbosity;
    let name = set.set.clone();
    let expected = set.expected_entries;
    let mut on_event = |e: Event| match e {
        Event::Progress(p) => {
            if let Some(l) = &mut line {
                l.update(|elapsed| collect_parts(&p, expected, elapsed));
            }
        }
        Event::Stdout(l) if verbosity >= 2 => crate::errln!("{name}: rsync: {l}"),
        Event::Stderr(l) if verbosity >= 1 => match &line {
            Some(b) => b.println(format!("{name}: {l}")),
            None => crate::errln!("{name}: {l}"),
        },
        _ => {}
    };
    let run = rsync::run(&set.rsync_argv, &mut on_event);
    if let Some(l) = line {
        l.finish();
    }
    drop(filter);
    Ok(run?)
}

/// What a collect's progress line says, most useful first: entries checked (of the file list when rsync has it
/// all, else of what the newest complete snapshot held), files and bytes copied, the ETA, a bar, the copy rate (or
/// the checking rate while nothing is copied). rsync counts no bytes for a file it finds unchanged and hard-links,
/// so what was checked is counted in entries; the fraction done is the larger of entries checked and rsync's own
/// (bytes copied of bytes listed, which is the whole story on a first snapshot).
fn collect_parts(
    p: &rsync::Progress,
    expected: Option<u64>,
    elapsed: std::time::Duration,
) -> Vec<crate::progress::Part> {
    use crate::progress::{self, Part};
    let checked = p.checked.unwrap_or(0);
    let total = match (p.listed, expected) {
        (Some((n, true)), _) => Some(n),
        (Some((n, false)), Some(e)) => Some(n.max(e)),
        (None, Some(e)) => Some(e),
        (Some((_, false)), None) | (None, None) => None,
    };
    // rsync's percent is bytes copied of the bytes listed: right on a first snapshot, where everything is copied,
    // and never ahead of the truth on the next ones; entries checked are the measure of a run that copies little.
    let copied = f64::from(p.percent.min(100)) / 100.0;
    let fraction = match total {
        Some(t) if t > 0 => (checked as f64 / t as f64).min(1.0).max(copied),
        _ => copied,
    };
    let mut parts = vec![Part::Text(match total {
        Some(t) => format!("checked {}/{}", stdx::count(checked), stdx::count(t)),
        None => format!("checked {}", stdx::count(checked)),
    })];
    parts.push(Part::Text(if p.files == 0 {
        "nothing copied yet".to_string()
    } else {
        format!("copied {} ({})", stdx::count(p.files), stdx::bytes(p.bytes))
    }));
    if let Some(e) = progress::eta(fraction, elapsed) {
        parts.push(Part::Text(e));
    }
    parts.push(Part::Bar(fraction));
    let rate = if p.bytes > 0 {
        progress::rate(p.bytes, elapsed)
    } else {
        let s = elapsed.as_secs_f64();
        (s >= 0.5).then(|| format!("{} entries/s", stdx::count((checked as f64 / s) as u64)))
    };
    if let Some(r) = rate {
        parts.push(Part::Text(r));
    }
    parts
}

/// The set's warnings after its rsync ran: the plan's, files that vanished, files that could not be read (the first
/// of them shown on stderr).
fn run_warnings(set: &SetPlan, run: &rsync::RsyncRun, ui: &Ui) -> Vec<String> {
    let mut warnings = set.warnings.clone();
    if !run.vanished.is_empty() {
        warnings.push(format!(
            "{} file(s) vanished while rsync ran",
            run.vanished.len()
        ));
    }
    if run.exit == RsyncExit::Partial {
        let n = run.unreadable.len();
        warnings.push(format!(
            "{n} file(s) could not be read and are missing from the snapshot"
        ));
        const SHOWN: usize = 20;
        for p in run.unreadable.iter().take(SHOWN) {
            ui.warn(format_args!(
                "{}: not copied: {}: {}",
                set.set,
                crate::stdx::show_path(&p.path),
                crate::stdx::show_str(&p.message)
            ));
        }
        if n > SHOWN {
            ui.warn(format_args!(
                "{}: ... and {} more not copied; all are listed in {}",
                set.set,
                n - SHOWN,
                set.metadata_path.display()
            ));
        }
        if n == 0 {
            warnings.push(format!("rsync said: {}", run.errors.join(" | ")));
        }
    }
    warnings
}

/// What is written beside the snapshot: its sources, the exclusions of the plan (not rsync's argv), how rsync ran.
fn snapshot_meta(
    plan: &CollectPlan,
    set: &SetPlan,
    run: &rsync::RsyncRun,
    complete: bool,
    started: DateTime<FixedOffset>,
    warnings: &[String],
) -> SnapshotMeta {
    SnapshotMeta {
        format: snapshot::METADATA_FORMAT,
        set: set.set.clone(),
        name: set.snapshot.clone(),
        complete,
        full: plan.full,
        started,
        finished: Local::now().fixed_offset(),
        sources: set
            .sources
            .iter()
            .map(|s| SourceRecord {
                configured: s.configured.clone(),
                path: s.path.clone(),
                resolved: s.resolved.clone().unwrap_or_else(|| s.path.clone()),
                in_snapshot: SourceRecord::in_snapshot_path(
                    s.resolved.as_deref().unwrap_or(&s.path),
                ),
                present: s.resolved.is_some(),
            })
            .collect(),
        exclusions: set.exclusions.clone(),
        link_dest: set.link_dest_names(),
        resumed: set.resume_from.is_some(),
        rsync: RsyncRecord {
            exit_code: run.exit.code(),
            argv: set.rsync_argv.clone(),
            version: plan.rsync_version.clone(),
            // `-A`/`-X` in the flags: where the root keeps them, unless the set's rsync_args turned them off.
            acls: set.rsync_argv.get(1).is_some_and(|f| f.contains('A')),
            xattrs: set.rsync_argv.get(1).is_some_and(|f| f.contains('X')),
        },
        stats: run.stats,
        // The run's notes (ACLs or xattrs not copied, ...) are worth keeping with the snapshot, but are not warnings.
        warnings: warnings.iter().chain(&plan.notes).cloned().collect(),
        unreadable: run.unreadable.clone(),
        vanished: run.vanished.clone(),
        dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The filter file of a running rsync: removed when dropped, whatever happened.
struct FilterFile<'a>(&'a Path);

impl Drop for FilterFile<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Applies retention to the set's snapshots as they are now on disk; failures become warnings (exit 3).
fn prune(
    root: &Path,
    set_name: &str,
    policy: &RetentionPolicy,
    set: &SetPlan,
    ui: &Ui,
    report: &mut SetReport,
) {
    let now = snapshot::parse_snapshot_name(set_name, &set.snapshot).expect("planned names parse");
    let snapshots = match snapshot::list(root, set_name) {
        Ok(s) => s,
        Err(e) => {
            report.warnings.push(format!("retention skipped: {e}"));
            report.exit = Exit::Warnings.code();
            return;
        }
    };
    let latest = snapshot::read_latest(root, set_name);
    let infos: Vec<SnapshotInfo> = snapshots
        .iter()
        .map(|s| SnapshotInfo {
            latest: latest.as_deref() == Some(s.name.as_str()),
            ..super::plan::retention_info(s)
        })
        .collect();
    let missing: Vec<PathBuf> = set
        .sources
        .iter()
        .filter(|s| s.resolved.is_none())
        .map(|s| s.path.clone())
        .collect();
    for d in retention::decide(&infos, policy, &missing, now)
        .into_iter()
        .filter(|d| !d.keep)
    {
        match snapshot::delete_snapshot(root, &d.name) {
            Ok(()) => {
                ui.step(format_args!(
                    "{set_name}: removed {} ({})",
                    d.name,
                    d.reasons.join("; ")
                ));
                report.removed.push(Removed {
                    name: d.name,
                    reasons: d.reasons,
                });
            }
            Err(e) => {
                report
                    .warnings
                    .push(format!("could not remove old snapshot {}: {e}", d.name));
                report.exit = Exit::Warnings.code().max(report.exit);
            }
        }
    }
}

/// One line per set for people, on stderr: `data: data-2025-04-01-031500 complete: 1,234 files, 12.3 MiB copied,
/// 1.2 GiB hard-linked, 3.2s`.
pub fn summary_lines(report: &CollectReport) -> Vec<String> {
    report
        .sets
        .iter()
        .map(|s| {
            let time = stdx::duration(std::time::Duration::from_secs_f64(s.seconds));
            let stats = |st: &TransferStats| {
                let linked = if st.linked_bytes == 0 {
                    String::new()
                } else {
                    format!(", {} hard-linked", stdx::bytes(st.linked_bytes))
                };
                if st.transferred_files == 0 {
                    return format!(
                        "checked {}, nothing to copy{linked}, {time}",
                        stdx::counted(st.regular_files, "file", "files"),
                    );
                }
                format!(
                    "{}, {} copied ({}){linked}, {time}",
                    stdx::counted(st.regular_files, "file", "files"),
                    stdx::count(st.transferred_files),
                    stdx::bytes(st.transferred_bytes),
                )
            };
            let mut line = match (s.status, &s.snapshot, &s.stats) {
                (SetStatus::Complete, Some(n), Some(st)) => {
                    format!("{}: {n} complete: {}", s.set, stats(st))
                }
                (SetStatus::Incomplete, Some(n), Some(st)) => {
                    let mut why = Vec::new();
                    if !s.missing_sources.is_empty() {
                        why.push(format!("{} missing", s.missing_sources.join(", ")));
                    }
                    if s.rsync_exit == Some(RsyncExit::Partial.code()) {
                        why.push(format!("{} unreadable", s.unreadable.len()));
                    }
                    format!(
                        "{}: {n} INCOMPLETE ({}): {}",
                        s.set,
                        why.join(", "),
                        stats(st)
                    )
                }
                (SetStatus::Refused, _, _) => {
                    format!("{}: refused: {}", s.set, s.error.as_deref().unwrap_or(""))
                }
                _ => format!(
                    "{}: FAILED after {time}: {}",
                    s.set,
                    s.error.as_deref().unwrap_or("")
                ),
            };
            if !s.removed.is_empty() {
                line.push_str(&format!(", removed {} old", s.removed.len()));
            }
            if !s.warnings.is_empty()
                && matches!(s.status, SetStatus::Complete | SetStatus::Incomplete)
            {
                line.push_str(&format!(
                    " ({})",
                    stdx::counted(s.warnings.len() as u64, "warning", "warnings")
                ));
            }
            line
        })
        .collect()
}
