//! The backup phase (`dbackup backup`): what is due, in order, under one lock: collect the sets that are due (with
//! `--checksum` for those whose `full` schedule is due), then the external phase when it is due and a destination is
//! present; then what is overdue and low on space, the events and their notifications.
//!
//! - [`plan`]: pure: the groups of sets, the destinations as the run sees them, the dry run in words, and the rule that
//!   skips a drive whose newest good backup already holds these snapshots ([`plan::skip_target`]).
//! - [`exec`]: the run under one lock (`collect::run_prepared`, then `external::run_locked` per destination), then
//!   [`exec::finish`].
//! - [`events`]: what a run says: its summary lines, its events, their delivery, its run log record.
//!
//! What is due comes from [`crate::schedule`], fed with the metadata [`crate::status::gather`] reads. The drives are
//! not even looked at when `schedule.external` is `manual` (without `--force`).

pub mod events;
pub mod exec;
pub mod plan;

use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};

pub use plan::BackupPlan;

use crate::collect::{self, CollectReport};
use crate::config::{EventKind, ExternalSchedule};
use crate::exit::Exit;
use crate::external::ExternalReport;
use crate::notify::Delivery;
use crate::schedule::{self, Due, Overdue};
use crate::settings::Settings;
use crate::status::{self, Facts, LowDisk, gather};
use crate::ui::Ui;

/// What a backup run is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Run both phases now, whatever the schedule says (even with `"external": "manual"`).
    pub force: bool,
    /// Decide what is due as if it were this time (tests).
    pub now: Option<DateTime<FixedOffset>>,
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
    /// Destinations not written although due, and why (their newest good backup already holds these snapshots).
    pub external_skipped: Vec<String>,
    /// Destinations written whose newest backup is no restore point (found damaged, or its chain broken), and why:
    /// one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_rewritten: Vec<String>,
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

pub(crate) fn exit_of(code: u8) -> Exit {
    match code {
        0 => Exit::Ok,
        2 => Exit::Usage,
        3 => Exit::Warnings,
        4 => Exit::Locked,
        5 => Exit::NoDestination,
        _ => Exit::Failed,
    }
}

/// Whether this run looks at the drives at all: when one of them is written on a schedule (its own, or
/// `schedule.external`) other than manual, or with `--force`.
fn looks_at_drives(settings: &Settings, force: bool) -> bool {
    settings.destinations.iter().any(|d| {
        force || d.schedule.unwrap_or(settings.schedule.external) != ExternalSchedule::Manual
    })
}

/// How a run looks at the drives and the buckets.
pub(crate) fn look(settings: &Settings, force: bool) -> (bool, status::CloudLook) {
    (
        looks_at_drives(settings, force),
        status::CloudLook::Newest { force },
    )
}

/// What the run looked at before deciding anything: the backups' metadata (and the drives, when it looks at them),
/// and what is due.
#[derive(Debug)]
pub struct Observed {
    pub facts: Facts,
    pub due: Due,
    /// The drives were looked at (not when every drive's schedule is manual, without `--force`).
    pub drives: bool,
    /// `--force` (the buckets are looked at again after the run as before it).
    pub force: bool,
}

/// Reads the metadata (and looks at the drives unless `schedule.external` is manual) and decides what is due.
pub fn observe(settings: &Settings, options: &Options) -> Observed {
    let now = options.now.unwrap_or_else(|| Local::now().fixed_offset());
    let (drives, clouds) = look(settings, options.force);
    let look = if drives && settings.output.dry_run {
        status::Look::Plan
    } else if drives {
        status::Look::Probe
    } else {
        status::Look::Skip
    };
    let facts = status::gather_with(settings, look, 0, clouds);
    let due = schedule::decide(
        &settings.schedule,
        settings.external_mode,
        &gather::set_histories(&facts),
        &gather::destination_histories(&facts),
        now,
        options.force,
    );
    Observed {
        facts,
        due,
        drives,
        force: options.force,
    }
}

/// Looks and plans; changes nothing.
pub fn dry_run(settings: &Settings, observed: &Observed, ui: &Ui) -> anyhow::Result<BackupPlan> {
    let due = &observed.due;
    let mut plans = Vec::new();
    for (full, sets) in plan::collect_groups(settings, due) {
        plans.push(collect::dry_run(
            settings,
            &sets,
            &plan::collect_options(full, &sets),
            ui,
        )?);
    }
    // What the run would export: each set's newest complete snapshot, unless a collect runs first.
    let exported = (!due.sets.iter().any(|s| s.collect)).then(|| {
        (observed.facts.sets.iter())
            .filter_map(|s| Some((s.set.clone(), s.newest_complete.as_ref()?.name.clone())))
            .collect()
    });
    let mut destinations = plan::views(&observed.facts, due);
    for d in destinations.iter_mut().filter(|d| d.target) {
        let on_drive = plan::on_drive(&observed.facts, &d.name);
        match plan::skip_target(exported.as_ref(), &on_drive, observed.force) {
            plan::Verdict::Skip(line) => (d.target, d.note) = (false, Some(line)),
            plan::Verdict::Write(why) => d.note = why,
        }
    }
    let writes = (due.external.targets.iter())
        .filter(|t| destinations.iter().any(|d| &d.name == *t && d.target))
        .cloned()
        .collect();
    Ok(BackupPlan {
        writes,
        destinations,
        due: due.clone(),
        collect: plans,
    })
}
