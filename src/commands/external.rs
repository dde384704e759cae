//! `dbackup external`: settings, lock, detection, plan per destination, then execute (or print the plan on --dry-run).
//!
//! stdout: the plan (dry run) or the directory of each new backup, one per line; with `--json`, the [`ExternalPlan`](crate::external::ExternalPlan)
//! or the [`ExternalReport`]. stderr: warnings, progress, one summary line per set and per destination. Every real
//! run appends a line to the run log (`<state_dir>/log.jsonl`) whose `sets` holds the report's `sets` and
//! `destinations`.
//!
//! Exit: 0 ok; 3 with warnings (a set skipped or exported from an older snapshot, archive warnings, retention
//! failures); 1 when a destination failed or was refused (not enough space) or no set has a snapshot; 2 for a bad
//! config, an unknown `--set` or `--destination`; 4 when another run holds the lock; 5 when no destination is present.
//! A dry run exits with what the run would at best.

use crate::cli::{ExternalArgs, GlobalArgs};
use crate::exit::Exit;
use crate::external::{self, DestinationStatus, ExternalReport, exec};
use crate::settings::Settings;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: ExternalArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let options = external::Options {
        sets: args.sets,
        destination: args.destination,
        allow_incomplete: args.allow_incomplete,
        full: args.full,
        now: args
            .now
            .map(|t| t.with_timezone(&chrono::Local).naive_local()),
    };
    run_with_settings(&settings, &options)
}

/// Everything after loading the settings (tests call this with hand-made settings).
pub fn run_with_settings(settings: &Settings, options: &external::Options) -> anyhow::Result<Exit> {
    let ui = Ui::new(&settings.output);
    if settings.output.dry_run {
        super::reading("external --dry-run");
        let plan = external::dry_run(settings, options, &ui)?;
        super::print(&plan, ui.json, external::plan::render)?;
        return Ok(plan.expected_exit());
    }

    let started = super::begin_run(settings, &ui, "external");
    let outcome = external::run(settings, options, &ui).map(|(_, report)| report);
    let report = super::end_run(settings, &ui, "external", started, true, outcome, |r| {
        let sets = serde_json::json!({ "sets": r.sets, "destinations": r.destinations });
        (r.exit(), sets)
    })?;
    print_report(&report, &ui)?;
    Ok(report.exit())
}

fn print_report(report: &ExternalReport, ui: &Ui) -> anyhow::Result<()> {
    for d in &report.destinations {
        let line = exec::summary_line(d);
        match d.status {
            DestinationStatus::Written => ui.info(line),
            DestinationStatus::Failed | DestinationStatus::Refused => ui.error(line),
        }
    }
    let paths = report
        .destinations
        .iter()
        .filter_map(|d| d.backup_path.as_deref());
    super::print_paths(report, ui.json, paths)
}
