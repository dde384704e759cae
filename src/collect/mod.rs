//! The collect phase: a pure plan per set (`plan.rs`) and the step that executes it (`exec.rs`).
//!
//! Order of a real run: create the backup root (0700) if missing, take the lock, remove leftovers of crashed runs,
//! look at sources and snapshots (`observe.rs`), plan every set, then execute set by set. A dry run only looks
//! and plans: it creates nothing, not even the backup root, and needs no lock.

pub mod exec;
pub mod marked;
pub mod observe;
pub mod plan;
pub mod sparse;

use chrono::{Local, NaiveDateTime};

pub use exec::{CollectReport, SetStatus};
pub use plan::{CollectPlan, Options, SetAction};

use crate::exit::{CodedError, Exit};
use crate::settings::{SetSettings, Settings};
use crate::snapshot;
use crate::ui::Ui;

/// The sets named with `--set` (every set when none), in config order. An unknown name is a usage error listing the sets.
pub fn select_sets<'a>(
    settings: &'a Settings,
    names: &[String],
) -> Result<Vec<&'a SetSettings>, CodedError> {
    let known: Vec<&str> = settings.sets.iter().map(|s| s.name.as_str()).collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(CodedError::new(
            Exit::Usage,
            format!(
                "there is no backup set named {bad:?}; the config has: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(settings
        .sets
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect())
}

fn now() -> NaiveDateTime {
    Local::now().naive_local()
}

/// Looks and plans; changes nothing.
pub fn dry_run(
    settings: &Settings,
    sets: &[&SetSettings],
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<CollectPlan> {
    let world = observe::observe(
        settings,
        sets,
        crate::rsync::probe_rsync()?,
        false,
        options.full,
    )?;
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    // The stamp a real run would pick (after a run in this very second, it waits for the next one).
    let now = snapshot::fresh_stamp(&settings.backup_root, &names, now);
    let opts = plan::RunOptions {
        options,
        policy: &settings.retention_local,
        now,
        progress: ui.progress,
    };
    Ok(plan::plan(&world, sets, opts))
}

/// Prepares (root, lock, leftovers), looks, plans and executes.
pub fn run(
    settings: &Settings,
    sets: &[&SetSettings],
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<(CollectPlan, CollectReport)> {
    // Before creating anything: without rsync there is nothing to do.
    crate::rsync::probe_rsync()?;
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let prepared = exec::prepare(&settings.backup_root, &settings.state_dir, &names, ui)?;
    let outcome = run_prepared(settings, sets, options, ui, &prepared);
    drop(prepared);
    outcome
}

/// Looks, plans and executes, for a caller that already holds `prepared` (the root, the lock, leftovers removed):
/// `dbackup backup` runs both phases under one lock.
pub fn run_prepared(
    settings: &Settings,
    sets: &[&SetSettings],
    options: &Options,
    ui: &Ui,
    prepared: &exec::Prepared,
) -> anyhow::Result<(CollectPlan, CollectReport)> {
    let rsync = crate::rsync::probe_rsync()?;
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    // Two runs in the same second would pick the same name: wait for a fresh second instead.
    let now = snapshot::fresh_stamp(&settings.backup_root, &names, now);
    let world = observe::observe(settings, sets, rsync, true, options.full)?;
    let opts = plan::RunOptions {
        options,
        policy: &settings.retention_local,
        now,
        progress: ui.progress,
    };
    let plan = plan::plan(&world, sets, opts);
    let report = exec::execute(&plan, &settings.retention_local, ui, prepared);
    Ok((plan, report))
}

#[cfg(test)]
pub(crate) mod tests;
