//! `dbackup backup` (also `backup`): the arguments converted into [`backup::Options`], then the backup phase
//! ([`crate::backup`]): what is due, run under one lock, then notifications, the run log, and a summary.
//!
//! stdout: the new snapshots and external backup directories, one per line (`--json`: the [`BackupReport`]); with
//! `--dry-run` what would run and why ([`BackupPlan`](crate::backup::plan::BackupPlan)). stderr: progress and warnings as the phases go, then a summary:
//! for people on a terminal, plain lines with a syslog priority prefix (`<3>`, `<4>`, `<6>`) under systemd.
//!
//! Exit: the worst of the phases (0 ok, 3 warnings, 1 a set or destination failed); a due external phase without a
//! drive is not a failure (a `missing_media` notification). 4 when another run holds the lock, 2 for a bad config.
//! Notifications never change the exit code.

use chrono::Local;

use crate::backup::BackupReport;

use crate::backup::{self, events, events::Level};
use crate::cli::{BackupArgs, GlobalArgs};
use crate::exit::Exit;
use crate::settings::Settings;
use crate::ui::{self, Ui};

pub fn run(global: &GlobalArgs, args: BackupArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let options = backup::Options {
        force: args.force,
        now: args.now,
    };
    run_with_settings(&settings, &options)
}

/// Everything after loading the settings.
pub fn run_with_settings(settings: &Settings, options: &backup::Options) -> anyhow::Result<Exit> {
    let journal = ui::journal();
    let mut ui = Ui::new(&settings.output);
    if journal {
        ui.progress = false;
    }
    if settings.output.dry_run {
        super::reading("backup --dry-run");
    } else {
        // Looking at the drives writes (and removes) a probe file on each: signals are caught from before that.
        super::catch_signals(&ui);
    }
    let observed = backup::observe(settings, options);
    if settings.output.dry_run {
        let plan = backup::dry_run(settings, &observed, &ui)?;
        super::print(&plan, ui.json, backup::plan::render_plan)?;
        return Ok(plan.expected_exit());
    }

    let started = super::begin_run(settings, &ui, "backup");
    match backup::exec::execute(settings, &observed, &ui, options) {
        Ok(mut report) if crate::interrupt::requested().is_some() => {
            // Interrupted: no events and no notifications (stopping is not a failure of the backups); the run log
            // says what was done and that it was interrupted, and `main` the one line.
            report.started = started;
            report.finished = Local::now().fixed_offset();
            super::append_log(settings, &events::run_record(&report, None), &ui);
            Err(crate::interrupt::check()
                .expect_err("an interruption was requested (the guard above)")
                .into())
        }
        Ok(mut report) => {
            report.started = started;
            backup::exec::finish(settings, &mut report, &observed, options.now, &ui);
            let record = events::run_record(&report, events::first_failure(&report));
            super::append_log(settings, &record, &ui);
            super::refresh_report(settings, &ui, observed.drives);
            print_report(&report, &ui, journal)?;
            Ok(report.exit())
        }
        Err(e) => {
            let record = events::stopped(settings, &observed.due, started, &e, &ui);
            super::append_log(settings, &record, &ui);
            super::refresh_report(settings, &ui, observed.drives);
            Err(e)
        }
    }
}

/// The summary on stderr (for people on a terminal, with priorities for the journal), the result on stdout.
fn print_report(report: &BackupReport, ui: &Ui, journal: bool) -> anyhow::Result<()> {
    let mut lines = events::outcome_lines(report);
    let level = match report.exit() {
        Exit::Ok => Level::Info,
        Exit::Warnings => Level::Warning,
        _ => Level::Error,
    };
    lines.push((level, format!("backup: {}", events::verdict(report))));
    let terminal = !journal && ui.progress;
    if terminal && ui.verbosity >= 0 {
        crate::errln!();
    }
    for (level, line) in &lines {
        let shown = match level {
            Level::Error => ui.verbosity >= -1,
            Level::Warning | Level::Info => ui.verbosity >= 0,
        };
        if !shown {
            continue;
        }
        if journal {
            crate::errln!("{}{line}", level.prefix());
        } else if terminal {
            let mark = match level {
                Level::Error => "✗ ",
                Level::Warning => "! ",
                Level::Info => "  ",
            };
            crate::errln!("{mark}{line}");
        } else {
            crate::errln!("{line}");
        }
    }
    let snapshots = report.collect.iter().flat_map(|c| &c.sets);
    let backups = report.external.iter().flat_map(|e| &e.destinations);
    let paths = snapshots
        .filter_map(|s| s.path.as_deref())
        .chain(backups.filter_map(|d| d.backup_path.as_deref()));
    super::print_paths(report, ui.json, paths)
}
