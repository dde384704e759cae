//! The external phase: each set's latest complete snapshot written as one verified tar archive (and its index) onto
//! a detected removable drive, under `backups/<stamp>/`, keeping the newest N.
//!
//! - [`layout`]: the names on the drive, listing them, `backup.json` ([`layout::BackupMeta`]), `latest`/`LATEST`.
//! - [`observe`]: snapshots and their scans, destination detection (through [`crate::media`]), the drive listings.
//! - [`sets`]: what a run writes: each set's snapshot ([`sets::SetPlan`]) and its files on a destination.
//! - [`plan`]: the pure, serialisable plan (`--dry-run` prints it) and the snapshot choice.
//! - [`retention`]: which backups a drive keeps, and which go first for space, as pure functions.
//! - [`bucket`]: a bucket's listing, its backups with their `backup.json`, and retention on a bucket.
//! - [`cloud`]: a bucket as a destination: its world and the pure plan of one upload; [`upload`] carries it out.
//! - [`chain`]: a set's chain of archives on a drive, and whether the next archive is full or incremental (pure).
//! - [`index_copy`]: local plaintext copies of encrypted sets' indexes, the next incremental's base manifest.
//! - [`resume`]: the local journal of an upload's finished parts, so an interrupted upload to a bucket resumes.
//! - [`report`]: what a run did; [`record`]: what `backup.json` records of a backup just written.
//! - [`exec`]: carrying the plan out, destination by destination.
//!
//! Imports run one way, up from [`layout`]: a lower file never imports a higher one (ARCHITECTURE.md lists the order).
//!
//! Order of a real run: take the lock on the backup root, observe (exit 5 when no destination is present), pick the
//! stamp, plan, execute. A dry run observes and plans; it takes no lock and writes nothing (detection's probe file,
//! created and removed at once, aside).

pub mod bucket;
pub mod chain;
pub mod cloud;
pub mod damage;
pub mod exec;
pub mod index_copy;
pub mod layout;
pub mod observe;
pub mod plan;
pub mod record;
pub mod report;
pub mod resume;
pub mod retention;
pub mod sets;
pub mod upload;
pub mod upload_marker;

use chrono::{Local, NaiveDateTime};

pub use plan::{ExternalPlan, Options};
pub use report::{DestinationStatus, ExternalReport};

use crate::exit::{CodedError, Exit};
use crate::lock::RunLock;
use crate::settings::Settings;
use crate::snapshot;
use crate::ui::Ui;

fn now() -> NaiveDateTime {
    Local::now().naive_local()
}

/// A stamp that no selected destination already has a backup of: now, or a moment later when a run in this very
/// second already used it (waiting at most about a second). On a bucket an unfinished upload's stamp counts as
/// taken too: a new upload under it would mix its objects with the leftovers of a killed run; so does the stamp of
/// an upload journal kept under the destination's name, which may be another config's sharing the backup root and
/// the name (its upload killed in this very second on another bucket or prefix): one journal file per stamp.
fn fresh_stamp(world: &plan::World, now: impl Fn() -> NaiveDateTime) -> NaiveDateTime {
    let taken = |t: NaiveDateTime| {
        let stamp = snapshot::stamp(t);
        world.destinations.iter().any(|d| {
            d.listing.backups.iter().any(|b| b.name == stamp)
                || std::fs::symlink_metadata(d.info.resolved.join(layout::BACKUPS_DIR).join(&stamp))
                    .is_ok()
        }) || world.clouds.iter().any(|c| {
            c.listing.backups.contains(&stamp)
                || c.listing.unfinished.iter().any(|u| u.stamp == stamp)
                || resume::has_journal(&c.backup_root, &c.settings.name, &stamp)
        })
    };
    let mut t = snapshot::truncate_to_second(now());
    for _ in 0..30 {
        if !taken(t) {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        t = snapshot::truncate_to_second(now());
    }
    t
}

/// Looks and plans; changes nothing.
pub fn dry_run(settings: &Settings, options: &Options, ui: &Ui) -> anyhow::Result<ExternalPlan> {
    let (observed, mut plan) = observe_and_plan(settings, options, ui)?;
    plan.timings = Some(observed.timings);
    Ok(plan)
}

/// Looks (the sets chosen, their snapshots, the destinations) and plans under a fresh stamp, `system/` included:
/// what a dry run shows and a run executes.
fn observe_and_plan(
    settings: &Settings,
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<(observe::Observed, ExternalPlan)> {
    let sets = crate::collect::select_sets(settings, &options.sets)?;
    let observed = observe::observe(settings, &sets, options, ui)?;
    let now = fresh_stamp(&observed.world, now);
    let mut plan = plan::plan(
        &observed.world,
        plan::RunOptions {
            now,
            pid: std::process::id(),
        },
    );
    plan.system = system_plan(settings, &observed, &plan);
    Ok((observed, plan))
}

/// The `system/` plan of the first destination, shown for all when every destination gets the same (each destination
/// plans its own for its drive and encryption: [`plan::DestinationPlan::system`]).
fn system_plan(
    settings: &Settings,
    observed: &observe::Observed,
    plan: &ExternalPlan,
) -> Option<crate::image::SystemPlan> {
    let input = observed.world.system.as_ref()?;
    let first = plan.destinations.first();
    Some(crate::image::plan::plan_system(
        settings.image.kit,
        &input.devices,
        first.and_then(|d| d.device.as_deref()),
        first
            .and_then(|d| d.encryption.as_ref())
            .map(|e| e.recipients.len()),
    ))
}

/// Takes the lock, looks, plans and executes.
pub fn run(
    settings: &Settings,
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<(ExternalPlan, ExternalReport)> {
    // An unknown `--set` is a usage error before anything else.
    crate::collect::select_sets(settings, &options.sets)?;
    let root = &settings.backup_root;
    if !root.is_dir() {
        return Err(CodedError::new(
            Exit::Failed,
            format!(
                "the backup root {} does not exist: nothing has been collected yet; run `dbackup collect` first",
                root.display()
            ),
        )
        .into());
    }
    let lock = RunLock::acquire(root)?;
    let outcome = run_locked(settings, options, ui);
    drop(lock);
    outcome
}

/// Looks, plans and executes, for a caller that already holds the run lock on the backup root (which exists):
/// `dbackup backup` runs both phases under one lock.
pub fn run_locked(
    settings: &Settings,
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<(ExternalPlan, ExternalReport)> {
    let (observed, plan) = observe_and_plan(settings, options, ui)?;
    let mut report = exec::execute(&plan, &observed, ui);
    if let Some(input) = &observed.world.system {
        crate::image::save_kit_cache(settings, input, ui);
    }
    if settings.report.drives {
        drive_pages(&observed.world, &mut report, ui);
    }
    Ok((plan, report))
}

/// Writes `REPORT.html` on each destination this run wrote a backup to, while `media/` says it is still the drive
/// detected (a refused or failed destination gets nothing more). A page that cannot be written makes the run end with
/// warnings; nothing else depends on it.
fn drive_pages(world: &plan::World, report: &mut ExternalReport, ui: &Ui) {
    let now = chrono::Local::now().fixed_offset();
    for d in report
        .destinations
        .iter_mut()
        .filter(|d| d.status == DestinationStatus::Written)
    {
        let Some(w) = world.drive(&d.name) else {
            continue;
        };
        if w.info.check_still_present().is_err() {
            continue;
        }
        match crate::report::drive::refresh(&w.info.resolved, &d.name, w.damaged.keys(), now) {
            Ok(path) => ui.step(format_args!("{}: wrote {}", d.name, path.display())),
            Err(e) => {
                let msg = format!(
                    "cannot write {} on the drive: {e}",
                    w.info
                        .resolved
                        .join(crate::report::drive::FILE_NAME)
                        .display()
                );
                ui.warn(format_args!("{}: {msg}", d.name));
                d.warnings.push(msg);
                d.exit = worst_code(d.exit, Exit::Warnings.code());
            }
        }
    }
    report.exit = report
        .destinations
        .iter()
        .map(|d| d.exit)
        .fold(report.exit, worst_code);
}

/// The worse of two exit codes of destinations (1 failed over 3 warnings over 0).
fn worst_code(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        0 => 0,
        3 => 1,
        _ => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests;
