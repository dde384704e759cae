//! `dbackup collect`: settings, lock, plan per set, then execute (or print the plan on --dry-run).
//!
//! stdout: the plan (dry run) or the paths of the new snapshots, one per line; with `--json`, the
//! [`CollectPlan`](crate::collect::CollectPlan) or the [`CollectReport`]. stderr: warnings, progress, and one summary line per set.
//! Every real run appends a line to the run log (`<state_dir>/log.jsonl`).
//!
//! Exit: the worst of the sets (0 ok, 3 warnings such as a skipped source or unreadable files, 1 a failed or
//! refused set); 4 when another run holds the lock; 2 for a bad config or an unknown `--set`. A dry run exits with
//! what the run would at best: 1 when a set would be refused, 3 with warnings, else 0.

use crate::cli::{CollectArgs, GlobalArgs};
use crate::collect::{self, CollectReport, SetStatus, exec};
use crate::exit::Exit;
use crate::settings::Settings;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: CollectArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let options = collect::Options {
        sets: args.sets,
        full: args.full,
        allow_shrink: args.allow_shrink,
    };
    run_with_settings(&settings, &options)
}

/// Everything after loading the settings (tests call this with hand-made settings).
pub fn run_with_settings(settings: &Settings, options: &collect::Options) -> anyhow::Result<Exit> {
    let ui = Ui::new(&settings.output);
    let sets = collect::select_sets(settings, &options.sets)?;
    if settings.output.dry_run {
        super::reading("collect --dry-run");
        let plan = collect::dry_run(settings, &sets, options, &ui)?;
        super::print(&plan, ui.json, collect::plan::render)?;
        return Ok(plan.expected_exit());
    }

    let started = super::begin_run(settings, &ui, "collect");
    let outcome = collect::run(settings, &sets, options, &ui).map(|(_, report)| report);
    // The drives as `backup` would look at them (not at all when schedule.external is manual).
    let drives = !settings.destinations.is_empty()
        && settings.schedule.external != crate::config::ExternalSchedule::Manual;
    let report = super::end_run(settings, &ui, "collect", started, drives, outcome, |r| {
        (r.exit(), serde_json::to_value(&r.sets).unwrap_or_default())
    })?;
    print_report(&report, &ui)?;
    Ok(report.exit())
}

fn print_report(report: &CollectReport, ui: &Ui) -> anyhow::Result<()> {
    for (set, line) in report.sets.iter().zip(exec::summary_lines(report)) {
        match set.status {
            SetStatus::Failed | SetStatus::Refused => ui.error(line),
            SetStatus::Complete | SetStatus::Incomplete => ui.info(line),
        }
    }
    let paths = report.sets.iter().filter_map(|s| s.path.as_deref());
    super::print_paths(report, ui.json, paths)
}
