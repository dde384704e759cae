//! The backup run under one lock: the sets due collected group by group (`collect::run_prepared`), then each target
//! drive written (`external::run_locked`) unless [`plan::skip_target`] says its newest good backup already holds these
//! snapshots; then [`finish`]: what is overdue and low on space now, the events and their delivery.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, Local};

use super::plan::{self, Verdict};
use super::{BackupReport, Observed, Problem, events, exit_of};
use crate::collect::{self, CollectReport, SetStatus};
use crate::exit::Exit;
use crate::external::{self, DestinationStatus, ExternalReport};
use crate::media::Presence;
use crate::notify;
use crate::process;
use crate::schedule::{self, Due, ExternalAction, Seen};
use crate::settings::{SetSettings, Settings};
use crate::status::{self, Facts, gather};
use crate::ui::{self, Ui};

/// The report before anything ran: the missing drives (when the external phase is due) and the drives that would
/// redirect dbackup elsewhere.
fn empty_report(due: &Due, facts: &Facts) -> BackupReport {
    let now = Local::now().fixed_offset();
    let mut report = BackupReport {
        exit: 0,
        started: now,
        finished: now,
        due: due.clone(),
        collect: vec![],
        external: vec![],
        external_skipped: vec![],
        external_rewritten: vec![],
        problems: vec![],
        missing_media: None,
        overdue: vec![],
        low_disk: vec![],
        events: vec![],
        notifications: vec![],
    };
    if due.external.action == ExternalAction::MissingMedia || due.external.shared_missing {
        let mut why = due.external.reason.clone();
        for d in &facts.destinations {
            if let Some(Presence::Absent(a)) = &d.presence {
                let _ = write!(why, "\n{}: {a}", d.settings.name);
            }
        }
        report.missing_media = Some(why);
    }
    // A drive that would redirect dbackup elsewhere (a `backups` symlink or mount point) is a failure, not an
    // absent drive.
    // So is a drive that is there but mounted read-only, when no other drive could be written.
    let nothing_written = due.external.action == ExternalAction::MissingMedia;
    for d in &facts.destinations {
        let refused = match &d.presence {
            Some(Presence::Absent(a @ crate::media::Absence::Redirected { .. })) => Some(a),
            Some(Presence::Absent(a @ crate::media::Absence::ReadOnly { .. }))
                if nothing_written =>
            {
                Some(a)
            }
            _ => None,
        };
        if let Some(a) = refused {
            report.problems.push(Problem {
                phase: "external".into(),
                subject: d.settings.name.clone(),
                exit: Exit::Failed.code(),
                message: a.to_string(),
            });
        }
    }
    report
}

/// Runs what is due under one lock. Errors only for what stops everything (the lock, the backup root).
pub fn execute(
    settings: &Settings,
    observed: &Observed,
    ui: &Ui,
    options: &super::Options,
) -> anyhow::Result<BackupReport> {
    let due = &observed.due;
    let mut report = empty_report(due, &observed.facts);
    let groups = plan::collect_groups(settings, due);
    let writes = due.external.action == ExternalAction::Write;
    if groups.is_empty() && !writes {
        ui.step("nothing is due");
        if !report.problems.is_empty() {
            report.exit = Exit::Failed.code();
        }
        return Ok(report);
    }

    let names: Vec<&str> = settings.sets.iter().map(|s| s.name.as_str()).collect();
    let prepared = collect::exec::prepare(&settings.backup_root, &settings.state_dir, &names, ui)?;
    collect_step(settings, &groups, &prepared, &mut report, ui);
    if writes && crate::interrupt::requested().is_none() {
        // `--now` decides the drives' full or incremental too, as `external --now` does.
        let now = options
            .now
            .map(|t| t.with_timezone(&chrono::Local).naive_local());
        external_step(
            settings,
            observed,
            &names,
            &mut report,
            ui,
            options.force,
            now,
        );
    }
    drop(prepared);

    let exit = report
        .collect
        .iter()
        .map(CollectReport::exit)
        .chain(report.external.iter().map(ExternalReport::exit))
        .chain(report.problems.iter().map(|p| exit_of(p.exit)))
        .fold(Exit::Ok, Exit::worst);
    report.exit = exit.code();
    Ok(report)
}

/// Collects each group of sets (contents compared first); a group that fails as a whole is a problem of the report.
fn collect_step(
    settings: &Settings,
    groups: &[(bool, Vec<&SetSettings>)],
    prepared: &collect::exec::Prepared,
    report: &mut BackupReport,
    ui: &Ui,
) {
    for (full, sets) in groups {
        let subject: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        ui.step(format_args!(
            "collect: {}{}",
            subject.join(", "),
            if *full { " (compare contents)" } else { "" }
        ));
        if crate::interrupt::requested().is_some() {
            break;
        }
        let options = plan::collect_options(*full, sets);
        match collect::run_prepared(settings, sets, &options, ui, prepared) {
            Ok((_, r)) => report.collect.push(r),
            Err(e) => report.problems.push(Problem {
                phase: "collect".into(),
                subject: subject.join(", "),
                exit: process::error_exit(&e).code(),
                message: ui::format_error(&e),
            }),
        }
    }
}

/// Writes each target drive, unless its newest backup already holds what would be exported now.
fn external_step(
    settings: &Settings,
    observed: &Observed,
    names: &[&str],
    report: &mut BackupReport,
    ui: &Ui,
    force: bool,
    now: Option<chrono::NaiveDateTime>,
) {
    let due = &observed.due;
    // What the external phase would export now: each set's newest complete snapshot.
    let exported: BTreeMap<String, String> = gather::list_sets(&settings.backup_root, names)
        .into_iter()
        .filter_map(|s| s.newest_complete.map(|c| (s.set, c.name)))
        .collect();
    for target in &due.external.targets {
        match plan::skip_target(
            Some(&exported),
            &plan::on_drive(&observed.facts, target),
            force,
        ) {
            Verdict::Skip(line) => {
                report.external_skipped.push(format!("{target}: {line}"));
                continue;
            }
            Verdict::Write(Some(why)) => report.external_rewritten.push(format!("{target}: {why}")),
            Verdict::Write(None) => {}
        }
        if crate::interrupt::requested().is_some() {
            break;
        }
        ui.step(format_args!("external: {target}"));
        let options = external::Options {
            destination: Some(target.clone()),
            now,
            ..Default::default()
        };
        match external::run_locked(settings, &options, ui) {
            Ok((_, r)) => report.external.push(r),
            Err(e) if process::error_exit(&e) == Exit::NoDestination => {
                // Pulled between detection and writing: the same as absent.
                report.missing_media = Some(format!(
                    "{}; but {target} went away: {}",
                    due.external.reason,
                    ui::format_error(&e)
                ));
            }
            Err(e) => report.problems.push(Problem {
                phase: "external".into(),
                subject: target.clone(),
                exit: process::error_exit(&e).code(),
                message: ui::format_error(&e),
            }),
        }
    }
}

/// After the run: what is overdue and low on space now, the events, and their delivery.
pub fn finish(
    settings: &Settings,
    report: &mut BackupReport,
    observed: &Observed,
    fake_now: Option<DateTime<FixedOffset>>,
    ui: &Ui,
) {
    let before = &observed.facts;
    let ran = !report.collect.is_empty() || !report.external.is_empty();
    let after_facts;
    let after = if ran {
        let look = if observed.drives {
            status::Look::Probe
        } else {
            status::Look::Skip
        };
        after_facts = status::gather_with(
            settings,
            look,
            0,
            status::CloudLook::Newest {
                force: observed.force,
            },
        );
        &after_facts
    } else {
        before
    };
    let now = fake_now.unwrap_or_else(|| Local::now().fixed_offset());
    // What this run made is fresh, whatever clock `--now` pretends.
    let fresh = Seen {
        name: String::new(),
        time: now,
    };
    let mut sets = gather::set_histories(after);
    for r in report.collect.iter().flat_map(|c| &c.sets) {
        if r.status == SetStatus::Complete
            && let Some(h) = sets.iter_mut().find(|h| h.set == r.set)
        {
            let name = r.snapshot.clone().unwrap_or_default();
            h.newest_complete = Some(Seen {
                name,
                ..fresh.clone()
            });
        }
    }
    let mut dests = gather::destination_histories(after);
    for d in report.external.iter().flat_map(|e| &e.destinations) {
        if d.status == DestinationStatus::Written
            && let Some(h) = dests.iter_mut().find(|h| h.name == d.name)
        {
            h.newest = Some(Seen {
                name: d.backup.clone().unwrap_or_default(),
                ..fresh.clone()
            });
        }
    }
    report.overdue = schedule::overdue(
        &settings.schedule,
        settings.external_mode,
        &sets,
        &dests,
        now,
    );
    report.low_disk = status::low_disk(after, settings.notifications.low_disk_percent);
    report.finished = Local::now().fixed_offset();

    let events = events::events(report, before);
    report.events = events.iter().map(|e| e.kind).collect();
    report.notifications = notify::send(&settings.notifications, &events);
    events::show_deliveries(&report.notifications, ui);
}
