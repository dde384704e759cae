//! What a backup run says: the summary lines with their levels, the events of a finished run (`success`,
//! `warning`, `failure`, `missing_media`, `low_disk`, `overdue`) and their delivery, the run log's line.

use chrono::{DateTime, FixedOffset, Local};

use super::BackupReport;
use crate::collect::{self, SetStatus};
use crate::config::EventKind;
use crate::exit::Exit;
use crate::external::{self, DestinationStatus};
use crate::notify::{self, Delivery, Event, Outcome};
use crate::process;
use crate::runlog::RunRecord;
use crate::schedule::{Due, ExternalAction};
use crate::settings::Settings;
use crate::status::Facts;
use crate::ui::{self, Ui};

/// Says on stderr what became of each notification.
pub fn show_deliveries(deliveries: &[Delivery], ui: &Ui) {
    for d in deliveries {
        let msg = d.message.as_deref().unwrap_or("");
        match d.outcome {
            Outcome::Sent => ui.step(format_args!(
                "notification {} sent to {}",
                notify::kind_word(d.event),
                d.sink
            )),
            Outcome::Skipped => ui.step(format_args!(
                "notification {} not sent to {}: {msg}",
                notify::kind_word(d.event),
                d.sink
            )),
            Outcome::Failed => ui.warn(format_args!(
                "notification {} could not be sent ({} sink): {msg}",
                notify::kind_word(d.event),
                d.sink
            )),
        }
    }
}

/// The lines that say what the run did, each with its level.
pub fn outcome_lines(report: &BackupReport) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    for c in &report.collect {
        for (s, line) in c.sets.iter().zip(collect::exec::summary_lines(c)) {
            let level = match s.status {
                SetStatus::Failed | SetStatus::Refused => Level::Error,
                SetStatus::Incomplete => Level::Warning,
                SetStatus::Complete if !s.warnings.is_empty() => Level::Warning,
                SetStatus::Complete => Level::Info,
            };
            out.push((level, format!("collect {line}")));
        }
    }
    let collected = collected_sets(report);
    for s in &report.due.sets {
        if !s.collect {
            out.push((
                Level::Info,
                format!("collect {}: not due: {}", s.set, s.reason),
            ));
        } else if !collected.contains(&s.set.as_str())
            && !report
                .problems
                .iter()
                .any(|p| p.phase == "collect" && p.subject.split(", ").any(|n| n == s.set))
        {
            out.push((Level::Error, format!("collect {}: did not run", s.set)));
        }
    }
    for p in &report.problems {
        out.push((
            Level::Error,
            format!("{} {}: FAILED: {}", p.phase, p.subject, p.message),
        ));
    }
    for s in &report.external_rewritten {
        out.push((Level::Info, format!("external {s}")));
    }
    for e in &report.external {
        for s in &e.sets {
            for w in &s.warnings {
                out.push((Level::Warning, format!("external {}: {w}", s.set)));
            }
        }
        for d in &e.destinations {
            let level = match d.status {
                DestinationStatus::Written if d.exit == 0 => Level::Info,
                DestinationStatus::Written => Level::Warning,
                _ => Level::Error,
            };
            out.push((
                level,
                format!("external {}", external::exec::summary_line(d)),
            ));
        }
    }
    for s in &report.external_skipped {
        out.push((Level::Info, format!("external {s}")));
    }
    let e = &report.due.external;
    match e.action {
        ExternalAction::NotDue => {
            out.push((Level::Info, format!("external: not due: {}", e.reason)))
        }
        ExternalAction::Manual => out.push((Level::Info, format!("external: {}", e.reason))),
        ExternalAction::NoDestinations | ExternalAction::Write | ExternalAction::MissingMedia => {}
    }
    if let Some(m) = &report.missing_media {
        let mut lines = m.lines();
        out.push((
            Level::Warning,
            format!(
                "external: no drive present: {}",
                lines.next().unwrap_or_default()
            ),
        ));
        for l in lines {
            out.push((Level::Warning, format!("  {l}")));
        }
    }
    for o in &report.overdue {
        out.push((Level::Warning, format!("overdue: {}", o.message)));
    }
    for l in &report.low_disk {
        out.push((Level::Warning, l.message.clone()));
    }
    out
}

/// A summary line's weight (and its syslog priority under systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn prefix(self) -> &'static str {
        match self {
            Level::Error => "<3>",
            Level::Warning => "<4>",
            Level::Info => "<6>",
        }
    }
}

/// The sets the run collected (each with its outcome), in order.
fn collected_sets(report: &BackupReport) -> Vec<&str> {
    let sets = report.collect.iter().flat_map(|c| &c.sets);
    sets.map(|s| s.set.as_str()).collect()
}

/// The run's result in a few words: the summary's last line.
pub fn verdict(report: &BackupReport) -> String {
    match report.exit() {
        Exit::Ok => "ok".to_string(),
        Exit::Warnings => "finished with warnings (exit 3)".to_string(),
        e => format!("FAILED (exit {})", e.code()),
    }
}

/// The events of a finished run: its result (`success` only when something ran), then `missing_media`, `low_disk`,
/// `overdue`.
pub fn events(report: &BackupReport, before: &Facts) -> Vec<Event> {
    let host = crate::media::hostname();
    let time = report.finished;
    let lines = outcome_lines(report);
    // The first line of that level.
    let first = |level: Level| -> &str {
        lines
            .iter()
            .find(|(l, _)| *l == level)
            .map_or("", |(_, s)| s.as_str())
    };
    let mut out = Vec::new();
    let ran = !report.collect.is_empty() || !report.external.is_empty();
    let all: Vec<&str> = lines.iter().map(|(_, s)| s.as_str()).collect();
    let result = match report.exit() {
        Exit::Ok if ran => {
            let mut did = Vec::new();
            let sets = collected_sets(report);
            if !sets.is_empty() {
                did.push(format!("collected {}", sets.join(", ")));
            }
            for d in report.external.iter().flat_map(|e| &e.destinations) {
                did.push(format!(
                    "wrote backup {} to {}",
                    d.backup.as_deref().unwrap_or("?"),
                    d.name
                ));
            }
            let title = format!("dbackup backup on {host}: ok: {}", did.join("; "));
            Some((EventKind::Success, title))
        }
        Exit::Ok => None,
        Exit::Warnings => {
            let warning = first(Level::Warning);
            let title = format!("dbackup backup on {host} finished with warnings: {warning}");
            Some((EventKind::Warning, title))
        }
        _ => {
            let error = first(Level::Error);
            Some((
                EventKind::Failure,
                format!("dbackup backup on {host} FAILED: {error}"),
            ))
        }
    };
    if let Some((kind, title)) = result {
        out.push(Event::new(kind, "backup", title, all.join("\n"), time));
    }
    if let Some(last) = out.last_mut() {
        last.exit = Some(report.exit);
    }
    // An external phase overdue because its drive is missing has one cause: it is told in the missing_media event,
    // not in a second notification.
    let mut external_overdue_told = false;
    if let Some(m) = &report.missing_media {
        let mut body = m.clone();
        for o in report
            .overdue
            .iter()
            .filter(|o| o.phase == crate::schedule::Phase::External)
        {
            body.push('\n');
            body.push_str(&o.message);
            external_overdue_told = true;
        }
        let absent: Vec<String> = before
            .destinations
            .iter()
            .filter(|d| !d.is_present())
            .map(|d| d.settings.name.clone())
            .collect();
        out.push(Event::new(
            EventKind::MissingMedia,
            "backup",
            format!(
                "dbackup backup on {host}: the external backup is due but no drive is present ({})",
                absent.join(", ")
            ),
            body,
            time,
        ));
    }
    // One event per kind: the first message its title, every message its body.
    let low_disk: Vec<&str> = report.low_disk.iter().map(|l| l.message.as_str()).collect();
    let overdue: Vec<&str> = report
        .overdue
        .iter()
        .filter(|o| !(external_overdue_told && o.phase == crate::schedule::Phase::External))
        .map(|o| o.message.as_str())
        .collect();
    for (kind, messages) in [
        (EventKind::LowDisk, low_disk),
        (EventKind::Overdue, overdue),
    ] {
        if let Some(first) = messages.first() {
            out.push(Event::new(
                kind,
                "backup",
                format!("dbackup backup on {host}: {first}"),
                messages.join("\n"),
                time,
            ));
        }
    }
    out
}

/// The first failure, for the run log's `error`.
pub fn first_failure(report: &BackupReport) -> Option<String> {
    if report.exit() != Exit::Failed {
        return None;
    }
    outcome_lines(report)
        .into_iter()
        .find(|(l, _)| *l == Level::Error)
        .map(|(_, s)| s)
}

/// The run's line in the run log: the whole report when something ran; a short line when nothing was due, so that an
/// hourly timer does not push the records of real runs (and of the drives' backups) out of the bounded log. `error`:
/// the run log's `error` ([`first_failure`] of a finished run).
pub fn run_record(report: &BackupReport, error: Option<String>) -> RunRecord {
    let idle =
        report.collect.is_empty() && report.external.is_empty() && report.problems.is_empty();
    let sets = if idle {
        serde_json::json!({
            "nothing_due": true,
            "missing_media": report.missing_media,
            "overdue": report.overdue.iter().map(|o| &o.message).collect::<Vec<_>>(),
            "low_disk": report.low_disk.iter().map(|l| &l.message).collect::<Vec<_>>(),
            "external_skipped": report.external_skipped,
            "events": report.events,
            "notifications": report.notifications,
        })
    } else {
        serde_json::to_value(report).unwrap_or_default()
    };
    RunRecord {
        finished: report.finished,
        ..RunRecord::new("backup", report.started, report.exit, error, sets)
    }
}

/// A run that stopped as a whole (`error`): the `failure` event sent (not for another run holding the lock, nor for
/// an interruption: neither is a failure of the backups), and the run's line for the run log.
pub fn stopped(
    settings: &Settings,
    due: &Due,
    started: DateTime<FixedOffset>,
    error: &anyhow::Error,
    ui: &Ui,
) -> RunRecord {
    let code = process::error_exit(error);
    let message = ui::format_error(error);
    let events = if code == Exit::Locked || crate::interrupt::requested().is_some() {
        vec![]
    } else {
        vec![
            Event::new(
                EventKind::Failure,
                "backup",
                format!("dbackup backup on {} FAILED", crate::media::hostname()),
                message.clone(),
                Local::now().fixed_offset(),
            )
            .with_exit(code.code()),
        ]
    };
    let deliveries = notify::send(&settings.notifications, &events);
    show_deliveries(&deliveries, ui);
    RunRecord::new(
        "backup",
        started,
        code.code(),
        Some(message),
        serde_json::json!({ "due": due, "notifications": deliveries }),
    )
}
