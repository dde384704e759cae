//! `dbackup backup` (also `backup`): what is due, in order, under one lock: collect the sets that are due (with
//! `--checksum` for those whose `full` schedule is due), then the external phase when it is due and a destination is
//! present. Then notifications, the run log, and a summary.
//!
//! What is due comes from [`crate::schedule`], fed with the metadata [`crate::status::gather`] reads. The drives are
//! not even looked at when `schedule.external` is `manual` (without `--force`).
//!
//! stdout: the new snapshots and external backup directories, one per line (`--json`: the [`BackupReport`]); with
//! `--dry-run` what would run and why ([`BackupPlan`]). stderr: progress and warnings as the phases go, then a summary:
//! for people on a terminal, plain lines with a syslog priority prefix (`<3>`, `<4>`, `<6>`) under systemd.
//!
//! Exit: the worst of the phases (0 ok, 3 warnings, 1 a set or destination failed); a due external phase without a
//! drive is not a failure (a `missing_media` notification). 4 when another run holds the lock, 2 for a bad config.
//! Notifications never change the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};

use crate::cli::{BackupArgs, CollectArgs, ExternalArgs, GlobalArgs};
use crate::collect::{self, CollectPlan, CollectReport, SetStatus};
use crate::config::{EventKind, ExternalSchedule};
use crate::exit::{self, Exit};
use crate::external::{self, DestinationStatus, ExternalReport};
use crate::media::Presence;
use crate::notify::{self, Delivery, Event, Outcome};
use crate::runlog::RunRecord;
use crate::schedule::{self, Due, ExternalAction, Overdue, Seen};
use crate::settings::{Env, SetSettings, Settings};
use crate::status::{self, Facts, LowDisk, gather};
use crate::ui::{self, Ui};

/// What `dbackup --dry-run backup` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPlan {
    /// What is due, and why.
    pub due: Due,
    /// The collect plans: one for the sets whose contents are compared, one for the others.
    pub collect: Vec<CollectPlan>,
    /// Every destination: whether it was looked at, present or why not, and whether it would be written.
    pub destinations: Vec<DestinationView>,
}

/// A destination as this run sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationView {
    pub name: String,
    pub path: PathBuf,
    /// `None`: not looked at (`schedule.external` is manual).
    pub present: Option<bool>,
    /// `present: /media/payne/T9 (exfat on /dev/sdb1, label "T9", 412 GiB free of 1.8 TiB)`, or why it is absent.
    pub description: String,
    /// This run writes to it.
    pub target: bool,
}

/// What a run did. Printed with `--json` and logged (the run log's `sets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupReport {
    pub exit: u8,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub due: Due,
    /// One collect report per group of sets (contents compared or not).
    pub collect: Vec<CollectReport>,
    /// One external report per destination written to.
    pub external: Vec<ExternalReport>,
    /// Destinations not written although due, and why (their newest backup already holds these snapshots).
    pub external_skipped: Vec<String>,
    /// Failures of a whole phase step (rsync missing, nothing to export, ...).
    pub problems: Vec<Problem>,
    /// Set when the external phase was due but no destination was present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_media: Option<String>,
    pub overdue: Vec<Overdue>,
    pub low_disk: Vec<LowDisk>,
    pub events: Vec<EventKind>,
    pub notifications: Vec<Delivery>,
}

/// A phase step that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `collect` or `external`.
    pub phase: String,
    /// The sets or the destination concerned.
    pub subject: String,
    pub exit: u8,
    pub message: String,
}

impl BackupReport {
    pub fn exit(&self) -> Exit {
        exit_of(self.exit)
    }
}

fn exit_of(code: u8) -> Exit {
    match code {
        0 => Exit::Ok,
        2 => Exit::Usage,
        3 => Exit::Warnings,
        4 => Exit::Locked,
        5 => Exit::NoDestination,
        _ => Exit::Failed,
    }
}

pub fn run(global: &GlobalArgs, args: BackupArgs) -> anyhow::Result<Exit> {
    let settings = Settings::load(global, &Env::from_process())?;
    run_with_settings(&settings, &args)
}

/// Whether this run looks at the drives at all.
fn looks_at_drives(settings: &Settings, force: bool) -> bool {
    !settings.destinations.is_empty()
        && (settings.schedule.external != ExternalSchedule::Manual || force)
}

/// Everything after loading the settings.
pub fn run_with_settings(settings: &Settings, args: &BackupArgs) -> anyhow::Result<Exit> {
    let journal = ui::journal();
    let mut ui = Ui::new(&settings.output);
    if journal {
        ui.progress = false;
    }
    let now = args.now.unwrap_or_else(|| Local::now().fixed_offset());
    let drives = looks_at_drives(settings, args.force);
    let facts = status::gather(settings, drives);
    let due = schedule::decide(
        &settings.schedule,
        settings.external_mode,
        &gather::set_histories(&facts),
        &gather::destination_histories(&facts),
        now,
        args.force,
    );

    if settings.output.dry_run {
        let plan = dry_run(settings, due, &facts, &ui)?;
        if ui.json {
            crate::outln!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            crate::out!("{}", render_plan(&plan));
        }
        return Ok(plan
            .collect
            .iter()
            .fold(Exit::Ok, |acc, p| acc.worst(p.expected_exit())));
    }

    let started = super::begin_run(settings, &ui, "backup");
    match execute(settings, &due, &facts, &ui, args.force) {
        Ok(mut report) if crate::interrupt::requested().is_some() => {
            // Interrupted: no events and no notifications (stopping is not a failure of the backups); the run log
            // says what was done and that it was interrupted, and `main` the one line.
            report.started = started;
            report.finished = Local::now().fixed_offset();
            log(settings, &report, None, &ui);
            Err(crate::interrupt::check()
                .expect_err("an interruption was requested (the guard above)")
                .into())
        }
        Ok(mut report) => {
            report.started = started;
            finish(settings, &mut report, &facts, drives, args.now, &ui);
            let exit = report.exit();
            log(settings, &report, first_failure(&report), &ui);
            super::refresh_report(settings, &ui, drives);
            print_report(&report, &ui, journal)?;
            Ok(exit)
        }
        Err(e) => {
            let code = exit::classify(&e);
            let message = ui::format_error(&e);
            // Another run holding the lock is not a failure of the backups, and neither is an interruption.
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
            show_deliveries(&deliveries, &ui);
            let record = RunRecord::new(
                "backup",
                started,
                code.code(),
                Some(message),
                serde_json::json!({ "due": due, "notifications": deliveries }),
            );
            super::append_log(settings, &record, &ui);
            super::refresh_report(settings, &ui, drives);
            Err(e)
        }
    }
}

/// The sets to collect, grouped by whether their contents are compared: `(full, sets)`, compared first.
fn collect_groups<'a>(settings: &'a Settings, due: &Due) -> Vec<(bool, Vec<&'a SetSettings>)> {
    let mut groups = Vec::new();
    for full in [true, false] {
        let sets: Vec<&SetSettings> = due
            .sets
            .iter()
            .filter(|s| s.collect && s.full == full)
            .filter_map(|s| settings.set(&s.set))
            .collect();
        if !sets.is_empty() {
            groups.push((full, sets));
        }
    }
    groups
}

fn collect_args(full: bool, sets: &[&SetSettings]) -> CollectArgs {
    CollectArgs {
        sets: sets.iter().map(|s| s.name.clone()).collect(),
        full,
        allow_shrink: false,
    }
}

fn views(facts: &Facts, due: &Due) -> Vec<DestinationView> {
    facts
        .destinations
        .iter()
        .map(|d| DestinationView {
            name: d.settings.name.clone(),
            path: d.settings.path.clone(),
            present: d
                .presence
                .as_ref()
                .map(|p| matches!(p, Presence::Present(_))),
            description: match &d.presence {
                Some(p) => p.to_string(),
                None => "not looked at (schedule.external is manual)".to_string(),
            },
            target: due.external.targets.contains(&d.settings.name),
        })
        .collect()
}

fn dry_run(settings: &Settings, due: Due, facts: &Facts, ui: &Ui) -> anyhow::Result<BackupPlan> {
    let mut plans = Vec::new();
    for (full, sets) in collect_groups(settings, &due) {
        plans.push(collect::dry_run(
            settings,
            &sets,
            &collect_args(full, &sets),
            ui,
        )?);
    }
    Ok(BackupPlan {
        destinations: views(facts, &due),
        due,
        collect: plans,
    })
}

/// The dry run in words: what is due and why, then the collect plans.
pub fn render_plan(plan: &BackupPlan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "what is due at {}{}:",
        plan.due.now.format("%Y-%m-%d %H:%M"),
        if plan.due.forced { " (--force)" } else { "" }
    );
    for s in &plan.due.sets {
        if s.collect {
            let how = if s.full {
                "compare contents (rsync --checksum)"
            } else {
                "size and mtime"
            };
            let _ = writeln!(w, "  collect {}: yes, {how}: {}", s.set, s.reason);
            if let Some(f) = &s.full_reason {
                let _ = writeln!(w, "    contents: {f}");
            }
        } else {
            let _ = writeln!(w, "  collect {}: not due: {}", s.set, s.reason);
        }
    }
    let e = &plan.due.external;
    let what = match e.action {
        ExternalAction::Write => format!("yes, to {}", e.targets.join(", ")),
        ExternalAction::MissingMedia => "due, but no destination is present".to_string(),
        ExternalAction::NotDue => "not due".to_string(),
        ExternalAction::Manual => "manual".to_string(),
        ExternalAction::NoDestinations => "no destination".to_string(),
    };
    let _ = writeln!(w, "  external: {what}: {}", e.reason);
    for d in &plan.destinations {
        let _ = writeln!(
            w,
            "    {}{}: {}",
            d.name,
            if d.target { " (would be written)" } else { "" },
            d.description
        );
    }
    if e.action == ExternalAction::Write && !plan.collect.is_empty() {
        let _ = writeln!(
            w,
            "    (each set's newest complete snapshot after collect is exported; `dbackup --dry-run external` shows \
             the archives once it exists)"
        );
    }
    for p in &plan.collect {
        out.push_str(&format!(
            "\ncollect{}:\n",
            if p.full { " (compare contents)" } else { "" }
        ));
        out.push_str(&collect::plan::render(p));
    }
    out
}

fn empty_report(due: &Due) -> BackupReport {
    let now = Local::now().fixed_offset();
    BackupReport {
        exit: 0,
        started: now,
        finished: now,
        due: due.clone(),
        collect: vec![],
        external: vec![],
        external_skipped: vec![],
        problems: vec![],
        missing_media: None,
        overdue: vec![],
        low_disk: vec![],
        events: vec![],
        notifications: vec![],
    }
}

/// Runs what is due under one lock. Errors only for what stops everything (the lock, the backup root).
fn execute(
    settings: &Settings,
    due: &Due,
    facts: &Facts,
    ui: &Ui,
    force: bool,
) -> anyhow::Result<BackupReport> {
    let mut report = empty_report(due);
    if due.external.action == ExternalAction::MissingMedia {
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
    for d in &facts.destinations {
        if let Some(Presence::Absent(a @ crate::media::Absence::Redirected { .. })) = &d.presence {
            report.problems.push(Problem {
                phase: "external".into(),
                subject: d.settings.name.clone(),
                exit: Exit::Failed.code(),
                message: a.to_string(),
            });
        }
    }
    let groups = collect_groups(settings, due);
    let writes = due.external.action == ExternalAction::Write;
    if groups.is_empty() && !writes {
        ui.step("nothing is due");
        if !report.problems.is_empty() {
            report.exit = Exit::Failed.code();
        }
        return Ok(report);
    }

    let names: Vec<&str> = settings.sets.iter().map(|s| s.name.as_str()).collect();
    let prepared = collect::exec::prepare(&settings.backup_root, &names, ui)?;
    for (full, sets) in &groups {
        let subject: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        ui.step(format_args!(
            "collect: {}{}",
            subject.join(", "),
            if *full { " (compare contents)" } else { "" }
        ));
        if crate::interrupt::requested().is_some() {
            break;
        }
        match collect::run_prepared(settings, sets, &collect_args(*full, sets), ui, &prepared) {
            Ok((_, r)) => report.collect.push(r),
            Err(e) => report.problems.push(Problem {
                phase: "collect".into(),
                subject: subject.join(", "),
                exit: exit::classify(&e).code(),
                message: ui::format_error(&e),
            }),
        }
    }

    if writes && crate::interrupt::requested().is_none() {
        // What the external phase would export now: each set's newest complete snapshot.
        let exported: BTreeMap<String, String> = gather::list_sets(&settings.backup_root, &names)
            .into_iter()
            .filter_map(|s| s.newest_complete.map(|c| (s.set, c.name)))
            .collect();
        for target in &due.external.targets {
            let dest = facts
                .destinations
                .iter()
                .find(|d| &d.settings.name == target);
            let newest = dest
                .and_then(|d| d.listing.as_ref())
                .and_then(|l| l.newest.as_ref());
            let on_drive: Option<(String, BTreeMap<String, String>)> =
                newest.map(|b| (b.stamp.clone(), b.sets.iter().cloned().collect()));
            // A backup encrypted otherwise than the config now says (encryption just turned on, a recipient
            // added) does not count as holding these snapshots: the drive gets one written the new way.
            let same_encryption = match (dest, newest) {
                (Some(d), Some(b)) => {
                    same_encryption(d.settings.encryption.as_ref(), b.encryption.as_ref())
                }
                _ => true,
            };
            if let Some((stamp, sets)) = on_drive
                && !force
                && !exported.is_empty()
                && sets == exported
                && same_encryption
            {
                report.external_skipped.push(format!(
                    "{target}: its newest backup {stamp} already holds these snapshots ({}); nothing new to write",
                    exported.values().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            if crate::interrupt::requested().is_some() {
                break;
            }
            ui.step(format_args!("external: {target}"));
            let args = ExternalArgs {
                sets: vec![],
                destination: Some(target.clone()),
                allow_incomplete: false,
            };
            match external::run_locked(settings, &args, ui) {
                Ok((_, r)) => report.external.push(r),
                Err(e) if exit::classify(&e) == Exit::NoDestination => {
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
                    exit: exit::classify(&e).code(),
                    message: ui::format_error(&e),
                }),
            }
        }
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

/// After the run: what is overdue and low on space now, the events, and their delivery.
fn finish(
    settings: &Settings,
    report: &mut BackupReport,
    before: &Facts,
    drives: bool,
    fake_now: Option<DateTime<FixedOffset>>,
    ui: &Ui,
) {
    let ran = !report.collect.is_empty() || !report.external.is_empty();
    let after_facts;
    let after = if ran {
        after_facts = status::gather(settings, drives);
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

    let events = events(report, before);
    report.events = events.iter().map(|e| e.kind).collect();
    report.notifications = notify::send(&settings.notifications, &events);
    show_deliveries(&report.notifications, ui);
}

fn show_deliveries(deliveries: &[Delivery], ui: &Ui) {
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
fn outcome_lines(report: &BackupReport) -> Vec<(Level, String)> {
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
    let collected: Vec<&str> = report
        .collect
        .iter()
        .flat_map(|c| &c.sets)
        .map(|s| s.set.as_str())
        .collect();
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
enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Error => "<3>",
            Level::Warning => "<4>",
            Level::Info => "<6>",
        }
    }
}

fn verdict(report: &BackupReport) -> String {
    match report.exit() {
        Exit::Ok => "ok".to_string(),
        Exit::Warnings => "finished with warnings (exit 3)".to_string(),
        e => format!("FAILED (exit {})", e.code()),
    }
}

/// The events of a finished run: its result (`success` only when something ran), then `missing_media`, `low_disk`,
/// `overdue`.
fn events(report: &BackupReport, before: &Facts) -> Vec<Event> {
    let host = crate::media::hostname();
    let time = report.finished;
    let lines = outcome_lines(report);
    let text = |level: Level| -> Vec<&str> {
        lines
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, s)| s.as_str())
            .collect()
    };
    let mut out = Vec::new();
    let ran = !report.collect.is_empty() || !report.external.is_empty();
    let all: Vec<&str> = lines.iter().map(|(_, s)| s.as_str()).collect();
    match report.exit() {
        Exit::Ok if ran => {
            let mut did = Vec::new();
            let sets: Vec<&str> = report
                .collect
                .iter()
                .flat_map(|c| &c.sets)
                .map(|s| s.set.as_str())
                .collect();
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
            out.push(Event::new(
                EventKind::Success,
                "backup",
                format!("dbackup backup on {host}: ok: {}", did.join("; ")),
                all.join("\n"),
                time,
            ));
        }
        Exit::Ok => {}
        Exit::Warnings => {
            let warnings = text(Level::Warning);
            out.push(Event::new(
                EventKind::Warning,
                "backup",
                format!(
                    "dbackup backup on {host} finished with warnings: {}",
                    warnings.first().copied().unwrap_or_default()
                ),
                all.join("\n"),
                time,
            ));
        }
        _ => {
            let errors = text(Level::Error);
            out.push(Event::new(
                EventKind::Failure,
                "backup",
                format!(
                    "dbackup backup on {host} FAILED: {}",
                    errors.first().copied().unwrap_or_default()
                ),
                all.join("\n"),
                time,
            ));
        }
    }
    if let Some(last) = out.last_mut() {
        last.exit = Some(report.exit);
    }
    if let Some(m) = &report.missing_media {
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
            m.clone(),
            time,
        ));
    }
    if let Some(first) = report.low_disk.first() {
        out.push(Event::new(
            EventKind::LowDisk,
            "backup",
            format!("dbackup backup on {host}: {}", first.message),
            report
                .low_disk
                .iter()
                .map(|l| l.message.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            time,
        ));
    }
    if let Some(first) = report.overdue.first() {
        out.push(Event::new(
            EventKind::Overdue,
            "backup",
            format!("dbackup backup on {host}: {}", first.message),
            report
                .overdue
                .iter()
                .map(|o| o.message.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            time,
        ));
    }
    out
}

/// The first failure, for the run log's `error`.
fn first_failure(report: &BackupReport) -> Option<String> {
    if report.exit() != Exit::Failed {
        return None;
    }
    outcome_lines(report)
        .into_iter()
        .find(|(l, _)| *l == Level::Error)
        .map(|(_, s)| s)
}

/// Appends the run to the log: the whole report when something ran; a short line when nothing was due, so that an
/// hourly timer does not push the records of real runs (and of the drives' backups) out of the bounded log.
fn log(settings: &Settings, report: &BackupReport, error: Option<String>, ui: &Ui) {
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
    let record = RunRecord {
        finished: report.finished,
        ..RunRecord::new("backup", report.started, report.exit, error, sets)
    };
    super::append_log(settings, &record, ui);
}

/// The summary on stderr (for people on a terminal, with priorities for the journal), the result on stdout.
fn print_report(report: &BackupReport, ui: &Ui, journal: bool) -> anyhow::Result<()> {
    let mut lines = outcome_lines(report);
    let level = match report.exit() {
        Exit::Ok => Level::Info,
        Exit::Warnings => Level::Warning,
        _ => Level::Error,
    };
    lines.push((level, format!("backup: {}", verdict(report))));
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
    if ui.json {
        crate::outln!("{}", serde_json::to_string_pretty(report)?);
    } else {
        for s in report.collect.iter().flat_map(|c| &c.sets) {
            if let Some(p) = &s.path {
                crate::outln!("{}", p.display());
            }
        }
        for d in report.external.iter().flat_map(|e| &e.destinations) {
            if let Some(p) = &d.backup_path {
                crate::outln!("{}", p.display());
            }
        }
    }
    Ok(())
}

/// Whether a backup encrypted as `written` matches what the config asks for now (recipients compared as sets).
/// A recipients file that cannot be read counts as a change, so the external phase runs and reports it.
fn same_encryption(
    now: Option<&crate::settings::EncryptionSettings>,
    written: Option<&crate::archive::EncryptionRecord>,
) -> bool {
    match (now, written) {
        (None, None) => true,
        (Some(now), Some(written)) => match crate::archive::crypt::resolve_record(now) {
            Ok(now) => {
                let set = |r: &crate::archive::EncryptionRecord| {
                    r.recipients
                        .iter()
                        .cloned()
                        .collect::<std::collections::BTreeSet<_>>()
                };
                now.passphrase == written.passphrase && set(&now) == set(written)
            }
            Err(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same_encryption;
    use crate::archive::EncryptionRecord;
    use crate::settings::EncryptionSettings;

    const A: &str = "age1z80aqjc05k265e6ytny08074m4xtyelt8su0fglg8yh3grtff4wsq8u4cu";
    const B: &str = "age10ylq4uhfnf4tzmjqk24kyxfhgcne7u752xyfrutf44atuqnhvpyqfn56rp";

    fn now(recipients: &[&str], passphrase: bool) -> EncryptionSettings {
        EncryptionSettings {
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            recipients_file: None,
            identity_file: None,
            passphrase,
            passphrase_file: None,
        }
    }

    fn written(recipients: &[&str], passphrase: bool) -> EncryptionRecord {
        EncryptionRecord {
            format: "age-encryption.org/v1".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            passphrase,
        }
    }

    #[test]
    fn a_backup_counts_only_when_encrypted_as_configured_now() {
        let cases: &[(Option<EncryptionSettings>, Option<EncryptionRecord>, bool)] = &[
            (None, None, true),
            (Some(now(&[A], false)), None, false),
            (None, Some(written(&[A], false)), false),
            (
                Some(now(&[A, B], false)),
                Some(written(&[B, A], false)),
                true,
            ),
            (Some(now(&[A, B], false)), Some(written(&[A], false)), false),
            (Some(now(&[], true)), Some(written(&[], true)), true),
            (Some(now(&[], true)), Some(written(&[A], false)), false),
        ];
        for (i, (n, w, same)) in cases.iter().enumerate() {
            assert_eq!(same_encryption(n.as_ref(), w.as_ref()), *same, "case {i}");
        }
    }
}
