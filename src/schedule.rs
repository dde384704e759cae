//! What is due and what is overdue: pure functions of the schedule, the existing backups' times (read from their
//! metadata by the caller) and `now`. Does no IO.
//!
//! "Due" is computed from the backups that exist, never from a separate state file:
//!
//! - **collect** of a set is due when its newest *complete* snapshot is at least [`Period::due_after`] old (or there is
//!   none, or it is dated in the future: the clock was changed). An incomplete snapshot does not count: the next run
//!   tries again.
//! - **full** (`rsync --checksum`) is due for a set that is collected when the newest complete snapshot whose contents
//!   were compared (a `--full` run, or a first snapshot, which copies everything) is at least `due_after` old.
//! - **external**: `manual` never (only `dbackup external`); `always` on every run; a period when the newest verified
//!   external backup is at least `due_after` old. With `external.mode` `first` the newest backup on *any* destination
//!   counts (one copy is the goal); with `all`, each destination is judged by its own backups.
//!
//! `due_after` is a little less than the period, so that a timer firing once per period (late or early by a randomized
//! delay) always finds the work due. A phase is *overdue* when its newest backup is older than
//! [`Period::overdue_after`]: half a period late, give or take.

use chrono::{DateTime, FixedOffset, TimeDelta};
use serde::{Deserialize, Serialize};

use crate::config::{ExternalMode, ExternalSchedule, Full, Incremental, Schedule};
use crate::stdx::age_words;

/// The reason of everything `--force` makes due.
pub const FORCED: &str = "--force: now, whatever the schedule says";

/// A backup dated later than `now` by more than this was made under another clock: it does not make anything "not due".
pub const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// The length of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub fn word(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// Work is due once the newest backup is this old: 50 minutes, 20 hours, 6 days, 27 days.
    pub fn due_after(self) -> TimeDelta {
        match self {
            Period::Hourly => TimeDelta::minutes(50),
            Period::Daily => TimeDelta::hours(20),
            Period::Weekly => TimeDelta::days(6),
            Period::Monthly => TimeDelta::days(27),
        }
    }

    /// Past this age the work is overdue: 3 hours, 36 hours, 10 days, 45 days.
    pub fn overdue_after(self) -> TimeDelta {
        match self {
            Period::Hourly => TimeDelta::hours(3),
            Period::Daily => TimeDelta::hours(36),
            Period::Weekly => TimeDelta::days(10),
            Period::Monthly => TimeDelta::days(45),
        }
    }
}

impl From<Incremental> for Period {
    fn from(i: Incremental) -> Period {
        match i {
            Incremental::Hourly => Period::Hourly,
            Incremental::Daily => Period::Daily,
            Incremental::Weekly => Period::Weekly,
            Incremental::Monthly => Period::Monthly,
        }
    }
}

/// The period of `schedule.full`, `None` for `never`.
pub fn full_period(f: Full) -> Option<Period> {
    match f {
        Full::Daily => Some(Period::Daily),
        Full::Weekly => Some(Period::Weekly),
        Full::Monthly => Some(Period::Monthly),
        Full::Never => None,
    }
}

/// The period of `schedule.external`, `None` for `always` and `manual`.
pub fn external_period(e: ExternalSchedule) -> Option<Period> {
    match e {
        ExternalSchedule::Daily => Some(Period::Daily),
        ExternalSchedule::Weekly => Some(Period::Weekly),
        ExternalSchedule::Monthly => Some(Period::Monthly),
        ExternalSchedule::Always | ExternalSchedule::Manual => None,
    }
}

/// A backup, as the schedule sees it: a name and when it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub name: String,
    pub time: DateTime<FixedOffset>,
}

/// One set's snapshots, from their metadata (snapshots without readable metadata do not count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHistory {
    pub set: String,
    /// The newest snapshot, complete or not.
    pub newest: Option<Seen>,
    pub newest_complete: Option<Seen>,
    /// The newest complete snapshot whose contents were compared: a `--full` run, or a first snapshot.
    pub newest_compared: Option<Seen>,
    /// Its snapshots could not be looked at (the backup root cannot be read): none seen is not none made, so it is
    /// not said to be overdue for having none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unseen: bool,
}

/// One destination's verified backups: from the drive when it is present, else from the run log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationHistory {
    pub name: String,
    pub priority: i32,
    /// A drive detected, or a cloud destination (always a candidate: whether it answers is known when uploading).
    pub present: bool,
    pub newest: Option<Seen>,
    /// Its own schedule, replacing `schedule.external` for it (`None`: it follows `schedule.external` and
    /// `external.mode` with the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ExternalSchedule>,
    /// It could not be looked at (a bucket that cannot be listed, a drive whose `backups/` cannot be read): `newest`
    /// is only what the run log says, and without it what it holds is unknown, not none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unseen: bool,
}

/// What `dbackup backup` runs now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    pub now: DateTime<FixedOffset>,
    /// `--force`: both phases now, whatever the schedule says.
    pub forced: bool,
    pub sets: Vec<SetDue>,
    pub external: ExternalDue,
}

/// Whether one set is collected, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDue {
    pub set: String,
    pub collect: bool,
    /// Compare contents (`rsync --checksum`) in this collect.
    pub full: bool,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// When collect becomes due, when it is not due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<FixedOffset>>,
}

/// What the external phase does in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalAction {
    /// Due, and written to `targets`.
    Write,
    /// Due, but no destination is present: not a failure; a `missing_media` notification.
    MissingMedia,
    NotDue,
    /// `schedule.external` is `manual`: no drive is even looked at.
    Manual,
    /// No destination is configured.
    NoDestinations,
}

/// The external phase's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalDue {
    pub action: ExternalAction,
    pub reason: String,
    /// The destinations written to, in order (by priority).
    pub targets: Vec<String>,
    /// Each destination's own view (empty for `manual` and without destinations).
    pub destinations: Vec<DestinationDue>,
    /// When the external phase becomes due, when it is not due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<FixedOffset>>,
    /// The destinations following `schedule.external` were due and none of them was present, while one with its own
    /// schedule is written (`action` is `write`): still a `missing_media` event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_missing: bool,
}

impl ExternalDue {
    pub fn is_due(&self) -> bool {
        matches!(
            self.action,
            ExternalAction::Write | ExternalAction::MissingMedia
        )
    }
}

/// One destination, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationDue {
    pub name: String,
    pub present: bool,
    pub due: bool,
    pub reason: String,
    /// When it becomes due, when it has its own schedule and is not due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<FixedOffset>>,
}

/// Age of `seen` at `now`, judged against `after`: `Ok(age)` when it is at least `after` old or dated in the future
/// beyond [`FUTURE_TOLERANCE`] (a "due" answer), `Err(age)` otherwise.
fn judge(
    seen: &Seen,
    now: DateTime<FixedOffset>,
    after: TimeDelta,
) -> Result<TimeDelta, TimeDelta> {
    let age = now.signed_duration_since(seen.time);
    if age >= after || age < -FUTURE_TOLERANCE {
        Ok(age)
    } else {
        Err(age)
    }
}

/// When work last done at `seen` becomes due again by `period`, in `now`'s offset: the time the clock shows then (the
/// snapshot's own offset may be another, made before the clocks changed).
fn due_at(seen: &Seen, period: Period, now: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    (seen.time + period.due_after()).with_timezone(now.offset())
}

fn future(seen: &Seen, now: DateTime<FixedOffset>) -> bool {
    now.signed_duration_since(seen.time) < -FUTURE_TOLERANCE
}

/// Decides what `dbackup backup` runs at `now`.
pub fn decide(
    schedule: &Schedule,
    mode: ExternalMode,
    sets: &[SetHistory],
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
    force: bool,
) -> Due {
    Due {
        now,
        forced: force,
        sets: sets
            .iter()
            .map(|s| set_due(schedule, s, now, force))
            .collect(),
        external: external_due(schedule, mode, destinations, now, force),
    }
}

fn set_due(schedule: &Schedule, h: &SetHistory, now: DateTime<FixedOffset>, force: bool) -> SetDue {
    let period = Period::from(schedule.incremental);
    let schedule_words = format!("schedule.incremental is {}", period.word());
    let newer_incomplete = match (&h.newest, &h.newest_complete) {
        (Some(n), Some(c)) if n.name != c.name => format!(" (the newer {} is incomplete)", n.name),
        _ => String::new(),
    };
    let (collect, reason, next) = match &h.newest_complete {
        _ if force => (true, FORCED.to_string(), None),
        None => match &h.newest {
            Some(n) => (
                true,
                format!(
                    "no complete snapshot yet (the newest, {}, is incomplete)",
                    n.name
                ),
                None,
            ),
            None => (true, "no snapshot yet".to_string(), None),
        },
        Some(c) => match judge(c, now, period.due_after()) {
            Ok(_) if future(c, now) => (
                true,
                format!(
                    "the newest complete snapshot {} is dated in the future ({}); was the clock changed?",
                    c.name,
                    c.time.format(crate::stdx::MINUTE)
                ),
                None,
            ),
            Ok(age) => (
                true,
                format!(
                    "the newest complete snapshot {} is {} old{newer_incomplete}; {schedule_words}",
                    c.name,
                    age_words(age)
                ),
                None,
            ),
            Err(age) => (
                false,
                format!(
                    "the newest complete snapshot {} is {} old; {schedule_words}",
                    c.name,
                    age_words(age.max(TimeDelta::zero()))
                ),
                Some(due_at(c, period, now)),
            ),
        },
    };
    let (full, full_reason) = if !collect {
        (false, None)
    } else {
        full_due(schedule, h, now)
    };
    SetDue {
        set: h.set.clone(),
        collect,
        full,
        reason,
        full_reason,
        next,
    }
}

fn full_due(
    schedule: &Schedule,
    h: &SetHistory,
    now: DateTime<FixedOffset>,
) -> (bool, Option<String>) {
    let Some(period) = full_period(schedule.full) else {
        return (false, None);
    };
    if h.newest_complete.is_none() {
        return (
            false,
            Some("nothing to compare with: this snapshot copies every file".to_string()),
        );
    }
    let words = format!("schedule.full is {}", period.word());
    match &h.newest_compared {
        None => (true, Some(format!("contents were never compared; {words}"))),
        Some(c) => match judge(c, now, period.due_after()) {
            Ok(age) if !future(c, now) => (
                true,
                Some(format!(
                    "contents were last compared {} ago ({}); {words}",
                    age_words(age),
                    c.name
                )),
            ),
            Ok(_) => (
                true,
                Some(format!(
                    "the last comparison of contents ({}) is dated in the future; was the clock changed?",
                    c.name
                )),
            ),
            Err(_) => (false, None),
        },
    }
}

/// The destinations that are present, highest priority first (config order on a tie): the order of
/// [`crate::media::select`].
fn present_by_priority(destinations: &[DestinationHistory]) -> Vec<&DestinationHistory> {
    let mut present: Vec<&DestinationHistory> = destinations.iter().filter(|d| d.present).collect();
    present.sort_by_key(|d| std::cmp::Reverse(d.priority));
    present
}

/// The newest of the destinations' newest backups, with the destination's name.
fn newest_anywhere(destinations: &[DestinationHistory]) -> Option<(&str, &Seen)> {
    destinations
        .iter()
        .filter_map(|d| d.newest.as_ref().map(|s| (d.name.as_str(), s)))
        .max_by_key(|(_, s)| s.time)
}

/// The external phase: the destinations without a schedule of their own decided together (by
/// `schedule.external` and `external.mode`: [`shared_due`]), each one with its own `schedule` on its own
/// ([`own_schedule_due`]); the targets are both kinds together.
fn external_due(
    schedule: &Schedule,
    mode: ExternalMode,
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
    force: bool,
) -> ExternalDue {
    let (own, shared): (Vec<DestinationHistory>, Vec<DestinationHistory>) = destinations
        .iter()
        .cloned()
        .partition(|d| d.schedule.is_some());
    if own.is_empty() {
        return shared_due(schedule, mode, &shared, now, force);
    }
    let base = (!shared.is_empty()).then(|| shared_due(schedule, mode, &shared, now, force));
    let mut own_judged: Vec<DestinationDue> = own
        .iter()
        .map(|d| own_schedule_due(d, now, force))
        .collect();
    let mut own_present: Vec<&DestinationHistory> = own.iter().collect();
    own_present.sort_by_key(|d| std::cmp::Reverse(d.priority));
    let own_targets: Vec<String> = own_present
        .iter()
        .filter(|d| d.present && own_judged.iter().any(|j| j.name == d.name && j.due))
        .map(|d| d.name.clone())
        .collect();
    let own_missing = own_judged.iter().any(|j| j.due && !j.present);
    let mut targets: Vec<String> = base.as_ref().map(|b| b.targets.clone()).unwrap_or_default();
    targets.extend(own_targets);
    let mut judged: Vec<DestinationDue> = base
        .as_ref()
        .map(|b| b.destinations.clone())
        .unwrap_or_default();
    judged.append(&mut own_judged);
    // In config order, as the destinations were given.
    judged.sort_by_key(|j| destinations.iter().position(|d| d.name == j.name));
    let mut reasons: Vec<String> = Vec::new();
    if let Some(b) = &base {
        let names: Vec<&str> = shared.iter().map(|d| d.name.as_str()).collect();
        reasons.push(format!("{}: {}", names.join(", "), b.reason));
    }
    for j in judged
        .iter()
        .filter(|j| own.iter().any(|d| d.name == j.name))
    {
        reasons.push(format!("{}: {}", j.name, j.reason));
    }
    let reason = reasons.join("; ");
    let base_missing = base
        .as_ref()
        .is_some_and(|b| b.action == ExternalAction::MissingMedia);
    let action = if !targets.is_empty() {
        ExternalAction::Write
    } else if base_missing || own_missing {
        ExternalAction::MissingMedia
    } else {
        ExternalAction::NotDue
    };
    let next = if action == ExternalAction::NotDue {
        base.as_ref()
            .and_then(|b| b.next)
            .into_iter()
            .chain(judged.iter().filter_map(|j| j.next))
            .min()
    } else {
        None
    };
    ExternalDue {
        shared_missing: base_missing && action == ExternalAction::Write,
        action,
        reason,
        targets,
        destinations: judged,
        next,
    }
}

/// One destination with a schedule of its own, judged by its own backups.
fn own_schedule_due(
    d: &DestinationHistory,
    now: DateTime<FixedOffset>,
    force: bool,
) -> DestinationDue {
    let own = d.schedule.unwrap_or(ExternalSchedule::Manual);
    let words = format!("its own schedule is {}", schedule_word(own));
    let (due, reason, next) = match external_period(own) {
        _ if force => (true, FORCED.to_string(), None),
        None if own == ExternalSchedule::Manual => (
            false,
            format!(
                "{words}: only `dbackup external --destination {}` writes to it",
                d.name
            ),
            None,
        ),
        None => (true, words, None),
        Some(p) => {
            let (due, said) = own_due(d, Some(p), now, false);
            let next = match (&d.newest, due) {
                (Some(seen), false) => Some(due_at(seen, p, now)),
                _ => None,
            };
            (due, format!("{said}; {words}"), next)
        }
    };
    DestinationDue {
        name: d.name.clone(),
        present: d.present,
        due,
        reason,
        next,
    }
}

/// `weekly`, `always`, `manual`, ...
pub fn schedule_word(e: ExternalSchedule) -> &'static str {
    match e {
        ExternalSchedule::Always => "always",
        ExternalSchedule::Manual => "manual",
        ExternalSchedule::Daily => "daily",
        ExternalSchedule::Weekly => "weekly",
        ExternalSchedule::Monthly => "monthly",
    }
}

/// The destinations that follow `schedule.external`, decided together as `external.mode` says.
fn shared_due(
    schedule: &Schedule,
    mode: ExternalMode,
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
    force: bool,
) -> ExternalDue {
    let decided = |action, reason: String, targets, destinations, next| ExternalDue {
        shared_missing: false,
        action,
        reason,
        targets,
        destinations,
        next,
    };
    if schedule.external == ExternalSchedule::Manual && !force {
        return decided(
            ExternalAction::Manual,
            "schedule.external is manual: only `dbackup external` writes to a drive".to_string(),
            vec![],
            vec![],
            None,
        );
    }
    if destinations.is_empty() {
        return decided(
            ExternalAction::NoDestinations,
            "no destination is configured; add one to \"destinations\" in the config".to_string(),
            vec![],
            vec![],
            None,
        );
    }
    let period = external_period(schedule.external);
    let judged: Vec<DestinationDue> = destinations
        .iter()
        .map(|d| {
            let (due, reason) = own_due(d, period, now, force);
            DestinationDue {
                name: d.name.clone(),
                present: d.present,
                due,
                reason,
                next: None,
            }
        })
        .collect();
    let present = present_by_priority(destinations);

    // Whether the phase is due, why, and when it will be otherwise.
    let (due, reason, next) = match (period, mode) {
        _ if force => (true, FORCED.to_string(), None),
        (None, _) => (true, "schedule.external is always".to_string(), None),
        (Some(p), ExternalMode::First) => match newest_anywhere(destinations) {
            None => (
                true,
                format!("no external backup yet; schedule.external is {}", p.word()),
                None,
            ),
            Some((dest, seen)) => match judge(seen, now, p.due_after()) {
                Ok(_) if future(seen, now) => (
                    true,
                    format!(
                        "the newest external backup ({dest}: {}) is dated in the future; was the clock changed?",
                        seen.name
                    ),
                    None,
                ),
                Ok(age) => (
                    true,
                    format!(
                        "the newest external backup ({dest}: {}) is {} old; schedule.external is {}",
                        seen.name,
                        age_words(age),
                        p.word()
                    ),
                    None,
                ),
                Err(age) => (
                    false,
                    format!(
                        "the newest external backup ({dest}: {}) is {} old; schedule.external is {}",
                        seen.name,
                        age_words(age.max(TimeDelta::zero())),
                        p.word()
                    ),
                    Some(due_at(seen, p, now)),
                ),
            },
        },
        (Some(p), ExternalMode::All) => {
            let due: Vec<&DestinationDue> = judged.iter().filter(|d| d.due).collect();
            if due.is_empty() {
                let next = destinations
                    .iter()
                    .filter_map(|d| d.newest.as_ref().map(|s| due_at(s, p, now)))
                    .min();
                (
                    false,
                    format!(
                        "every destination has an external backup younger than {}; schedule.external is {}",
                        age_words(p.due_after()),
                        p.word()
                    ),
                    next,
                )
            } else {
                let names: Vec<&str> = due.iter().map(|d| d.name.as_str()).collect();
                (
                    true,
                    format!(
                        "due on {} (external.mode is all); schedule.external is {}",
                        names.join(", "),
                        p.word()
                    ),
                    None,
                )
            }
        }
    };
    if !due {
        return decided(ExternalAction::NotDue, reason, vec![], judged, next);
    }
    let targets: Vec<String> = match mode {
        ExternalMode::First => present.iter().take(1).map(|d| d.name.clone()).collect(),
        ExternalMode::All => present
            .iter()
            .filter(|d| judged.iter().any(|j| j.name == d.name && j.due))
            .map(|d| d.name.clone())
            .collect(),
    };
    if targets.is_empty() {
        let reason = if present.is_empty() {
            format!("{reason}; but no destination is present")
        } else {
            format!("{reason}; but none of those destinations is present")
        };
        return decided(ExternalAction::MissingMedia, reason, vec![], judged, None);
    }
    decided(ExternalAction::Write, reason, targets, judged, None)
}

/// One destination judged by its own backups.
fn own_due(
    d: &DestinationHistory,
    period: Option<Period>,
    now: DateTime<FixedOffset>,
    force: bool,
) -> (bool, String) {
    let Some(p) = period else {
        return (
            true,
            if force {
                FORCED
            } else {
                "schedule.external is always"
            }
            .into(),
        );
    };
    let (due, words) = match &d.newest {
        None => (true, "no external backup yet".to_string()),
        Some(seen) if future(seen, now) => (
            true,
            format!("its newest backup {} is dated in the future", seen.name),
        ),
        Some(seen) => {
            let age = now.signed_duration_since(seen.time);
            (
                age >= p.due_after(),
                format!(
                    "its newest backup {} is {} old",
                    seen.name,
                    age_words(age.max(TimeDelta::zero()))
                ),
            )
        }
    };
    (due || force, words)
}

/// What is overdue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdue {
    pub phase: Phase,
    /// The set (collect) or destination (external, mode `all`) concerned; none for the external phase as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Seconds since the newest backup; none when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    pub schedule: Period,
    /// `no external backup for 12 days, schedule is weekly`
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Collect,
    External,
}

/// Everything overdue at `now`, sets first (in the order given), then the external phase. `always` and `manual`
/// external schedules, and a config without destinations, have no external overdue.
pub fn overdue(
    schedule: &Schedule,
    mode: ExternalMode,
    sets: &[SetHistory],
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
) -> Vec<Overdue> {
    let mut out = Vec::new();
    sets_overdue(schedule, sets, now, &mut out);
    own_schedules_overdue(destinations, now, &mut out);
    shared_schedule_overdue(schedule, mode, destinations, now, &mut out);
    out
}

/// The sets whose newest complete snapshot is older than `schedule.incremental` allows (or that have none).
fn sets_overdue(
    schedule: &Schedule,
    sets: &[SetHistory],
    now: DateTime<FixedOffset>,
    out: &mut Vec<Overdue>,
) {
    let p = Period::from(schedule.incremental);
    for h in sets {
        let newest = h.newest_complete.as_ref().map(|c| c.time);
        out.extend(Overdue::check(
            (Phase::Collect, Some(&h.set), p),
            newest,
            h.unseen,
            now,
            || match &h.newest {
                Some(n) => format!(
                    "set {} has no complete snapshot (the newest, {}, is incomplete), schedule is {}",
                    h.set,
                    n.name,
                    p.word()
                ),
                None => format!("set {} has no snapshot yet, schedule is {}", h.set, p.word()),
            },
            |age| {
                format!(
                    "no complete snapshot of set {} for {age}, schedule is {}",
                    h.set,
                    p.word()
                )
            },
        ));
    }
}

/// The destinations with a `schedule` of their own, each overdue by that schedule, on its own.
fn own_schedules_overdue(
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
    out: &mut Vec<Overdue>,
) {
    for d in destinations {
        let Some(p) = d.schedule.and_then(external_period) else {
            continue;
        };
        out.extend(destination_overdue(d, p, now, "its schedule"));
    }
}

/// The destinations that follow `schedule.external` together, by `external.mode`: the newest backup anywhere
/// (`first`) or each destination's (`all`).
fn shared_schedule_overdue(
    schedule: &Schedule,
    mode: ExternalMode,
    destinations: &[DestinationHistory],
    now: DateTime<FixedOffset>,
    out: &mut Vec<Overdue>,
) {
    let shared: Vec<DestinationHistory> = destinations
        .iter()
        .filter(|d| d.schedule.is_none())
        .cloned()
        .collect();
    let destinations = &shared[..];
    let Some(p) = external_period(schedule.external) else {
        return;
    };
    if destinations.is_empty() {
        return;
    }
    match mode {
        // A destination not looked at that the run log knows nothing of may hold a newer backup than any known.
        ExternalMode::First => out.extend(Overdue::check(
            (Phase::External, None, p),
            newest_anywhere(destinations).map(|(_, seen)| seen.time),
            destinations.iter().any(|d| d.unseen && d.newest.is_none()),
            now,
            || format!("no external backup yet, schedule is {}", p.word()),
            |age| format!("no external backup for {age}, schedule is {}", p.word()),
        )),
        ExternalMode::All => {
            for d in destinations {
                out.extend(destination_overdue(d, p, now, "schedule"));
            }
        }
    }
}

/// One destination, overdue by the period `p` of `whose` schedule (`its schedule`: its own; `schedule`: the
/// shared one, in mode `all`).
fn destination_overdue(
    d: &DestinationHistory,
    p: Period,
    now: DateTime<FixedOffset>,
    whose: &str,
) -> Option<Overdue> {
    Overdue::check(
        (Phase::External, Some(&d.name), p),
        d.newest.as_ref().map(|s| s.time),
        d.unseen && d.newest.is_none(),
        now,
        || {
            format!(
                "no external backup on {} yet, {whose} is {}",
                d.name,
                p.word()
            )
        },
        |age| {
            format!(
                "no external backup on {} for {age}, {whose} is {}",
                d.name,
                p.word()
            )
        },
    )
}

impl Overdue {
    /// The one overdue rule: what (`phase`, `subject`, by `schedule`) is overdue when nothing was seen yet
    /// (`never` says so) or the newest seen is older than the schedule allows (`aged` says so, given the age in
    /// words); else nothing. `unknown`: a place that could hold a newer one could not be looked at, so an age past
    /// the schedule, or nothing seen, is not known to be overdue (the report names that place as unseen instead).
    fn check(
        (phase, subject, schedule): (Phase, Option<&String>, Period),
        newest: Option<DateTime<FixedOffset>>,
        unknown: bool,
        now: DateTime<FixedOffset>,
        never: impl FnOnce() -> String,
        aged: impl FnOnce(&str) -> String,
    ) -> Option<Overdue> {
        let age = newest.map(|t| now.signed_duration_since(t));
        if age.is_some_and(|a| a <= schedule.overdue_after()) || unknown {
            return None;
        }
        let message = match age {
            None => never(),
            Some(a) => aged(&age_words(a)),
        };
        Some(Overdue {
            phase,
            subject: subject.cloned(),
            age_seconds: age.map(|a: TimeDelta| a.num_seconds()),
            schedule,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    const NOW: &str = "2025-04-10T09:00:00+02:00";

    fn seen(name: &str, t: &str) -> Option<Seen> {
        Some(Seen {
            name: name.into(),
            time: at(t),
        })
    }

    fn sched(incremental: Incremental, full: Full, external: ExternalSchedule) -> Schedule {
        Schedule {
            incremental,
            full,
            external,
        }
    }

    fn history(newest: Option<Seen>, complete: Option<Seen>, compared: Option<Seen>) -> SetHistory {
        SetHistory {
            set: "data".into(),
            newest,
            newest_complete: complete,
            newest_compared: compared,
            unseen: false,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table
    // Stays long: a table of cases, one per entry.
    fn collect_and_full_due() {
        let daily = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Manual);
        let yesterday = seen("data-2025-04-09-031500", "2025-04-09T03:15:00+02:00");
        let tonight = seen("data-2025-04-10-031500", "2025-04-10T03:15:00+02:00");
        let last_week = seen("data-2025-04-02-031500", "2025-04-02T03:15:00+02:00");
        // (what, schedule, history, force, collect, full, reason starts with, full reason starts with)
        let cases: Vec<(&str, Schedule, SetHistory, bool, bool, bool, &str, &str)> = vec![
            (
                "no snapshot: collect, nothing to compare with",
                daily.clone(),
                history(None, None, None),
                false,
                true,
                false,
                "no snapshot yet",
                "nothing to compare with",
            ),
            (
                "only an incomplete snapshot",
                daily.clone(),
                history(tonight.clone(), None, None),
                false,
                true,
                false,
                "no complete snapshot yet (the newest, data-2025-04-10-031500, is incomplete)",
                "nothing to compare with",
            ),
            (
                "daily, 29h 45m old: due; compared 1 day ago: no full",
                daily.clone(),
                history(yesterday.clone(), yesterday.clone(), yesterday.clone()),
                false,
                true,
                false,
                "the newest complete snapshot data-2025-04-09-031500 is 29 hours old; schedule.incremental is daily",
                "",
            ),
            (
                "daily, 5h 45m old: not due",
                daily.clone(),
                history(tonight.clone(), tonight.clone(), last_week.clone()),
                false,
                false,
                false,
                "the newest complete snapshot data-2025-04-10-031500 is 5 hours old",
                "",
            ),
            (
                "not due, but --force; full is due by its own schedule",
                daily.clone(),
                history(tonight.clone(), tonight.clone(), last_week.clone()),
                true,
                true,
                true,
                "--force",
                "contents were last compared 8 days ago (data-2025-04-02-031500); schedule.full is weekly",
            ),
            (
                "the newest is incomplete: judged by the older complete one",
                daily.clone(),
                history(tonight.clone(), yesterday.clone(), yesterday.clone()),
                false,
                true,
                false,
                "the newest complete snapshot data-2025-04-09-031500 is 29 hours old (the newer data-2025-04-10-031500 is incomplete)",
                "",
            ),
            (
                "contents never compared",
                daily.clone(),
                history(yesterday.clone(), yesterday.clone(), None),
                false,
                true,
                true,
                "the newest",
                "contents were never compared; schedule.full is weekly",
            ),
            (
                "full never",
                sched(Incremental::Daily, Full::Never, ExternalSchedule::Manual),
                history(yesterday.clone(), yesterday.clone(), None),
                false,
                true,
                false,
                "the newest",
                "",
            ),
            (
                "hourly: 50 minutes is due",
                sched(Incremental::Hourly, Full::Never, ExternalSchedule::Manual),
                history(
                    seen("data-2025-04-10-081000", "2025-04-10T08:10:00+02:00"),
                    seen("data-2025-04-10-081000", "2025-04-10T08:10:00+02:00"),
                    None,
                ),
                false,
                true,
                false,
                "the newest complete snapshot data-2025-04-10-081000 is 50 minutes old; schedule.incremental is hourly",
                "",
            ),
            (
                "hourly: 49 minutes is not",
                sched(Incremental::Hourly, Full::Never, ExternalSchedule::Manual),
                history(
                    seen("data-2025-04-10-081100", "2025-04-10T08:11:00+02:00"),
                    seen("data-2025-04-10-081100", "2025-04-10T08:11:00+02:00"),
                    None,
                ),
                false,
                false,
                false,
                "the newest complete snapshot data-2025-04-10-081100 is 49 minutes old",
                "",
            ),
            (
                "weekly: 5 days is not due",
                sched(Incremental::Weekly, Full::Monthly, ExternalSchedule::Manual),
                history(
                    seen("data-2025-04-05-090000", "2025-04-05T09:00:00+02:00"),
                    seen("data-2025-04-05-090000", "2025-04-05T09:00:00+02:00"),
                    None,
                ),
                false,
                false,
                false,
                "the newest complete snapshot data-2025-04-05-090000 is 5 days old; schedule.incremental is weekly",
                "",
            ),
            (
                "monthly: 27 days is due",
                sched(
                    Incremental::Monthly,
                    Full::Monthly,
                    ExternalSchedule::Manual,
                ),
                history(
                    seen("data-2025-03-14-090000", "2025-03-14T09:00:00+02:00"),
                    seen("data-2025-03-14-090000", "2025-03-14T09:00:00+02:00"),
                    seen("data-2025-03-14-090000", "2025-03-14T09:00:00+02:00"),
                ),
                false,
                true,
                true,
                "the newest complete snapshot data-2025-03-14-090000 is 27 days old; schedule.incremental is monthly",
                "contents were last compared 27 days ago",
            ),
            (
                "dated in the future: the clock was changed",
                daily.clone(),
                history(
                    seen("data-2030-01-01-000000", "2030-01-01T00:00:00+02:00"),
                    seen("data-2030-01-01-000000", "2030-01-01T00:00:00+02:00"),
                    seen("data-2030-01-01-000000", "2030-01-01T00:00:00+02:00"),
                ),
                false,
                true,
                true,
                "the newest complete snapshot data-2030-01-01-000000 is dated in the future (2030-01-01 00:00); was the clock changed?",
                "the last comparison of contents (data-2030-01-01-000000) is dated in the future",
            ),
            (
                "a minute in the future is clock jitter, not due",
                daily.clone(),
                history(
                    seen("data-2025-04-10-090100", "2025-04-10T09:01:00+02:00"),
                    seen("data-2025-04-10-090100", "2025-04-10T09:01:00+02:00"),
                    None,
                ),
                false,
                false,
                false,
                "the newest complete snapshot data-2025-04-10-090100 is less than a minute old",
                "",
            ),
        ];
        for (what, schedule, h, force, collect, full, reason, full_reason) in cases {
            let due = decide(&schedule, ExternalMode::First, &[h], &[], at(NOW), force);
            let s = &due.sets[0];
            assert_eq!((s.collect, s.full), (collect, full), "{what}: {s:#?}");
            assert!(
                s.reason.starts_with(reason),
                "{what}: reason {:?}",
                s.reason
            );
            match &s.full_reason {
                Some(r) => assert!(
                    !full_reason.is_empty() && r.starts_with(full_reason),
                    "{what}: full reason {r:?}"
                ),
                None => assert!(full_reason.is_empty(), "{what}: no full reason"),
            }
            assert_eq!(s.next.is_some(), !collect, "{what}: next only when not due");
        }
    }

    /// The hours the clocks change, in a real zone (Europe/Berlin, 2026: 02:00 CET became 03:00 CEST on 29 March,
    /// 03:00 CEST became 02:00 CET on 25 October): ages are between instants, never wall-clock times, so the
    /// repeated or skipped hour neither makes a collect due early nor keeps it from being due; and `next`, when it
    /// is not due, is said in `now`'s offset: the time the clock shows then. Before, `next` kept the snapshot's
    /// offset: at the second 02:10 of the fall-back, "collect at 03:40 (in 30 minutes)" for 02:40.
    #[test]
    #[allow(clippy::type_complexity)] // a table
    fn the_hours_the_clocks_change_are_judged_by_the_instant() {
        let hourly = sched(Incremental::Hourly, Full::Never, ExternalSchedule::Manual);
        let daily = sched(Incremental::Daily, Full::Never, ExternalSchedule::Manual);
        // (what, schedule, the newest complete snapshot, now, collect, next as the clock shows it)
        let rows: Vec<(&str, &Schedule, (&str, &str), &str, bool, Option<&str>)> = vec![
            (
                "fall-back, hourly: the first 02:50, at the second 02:10 (20 minutes)",
                &hourly,
                ("data-2026-10-25-025000", "2026-10-25T02:50:00+02:00"),
                "2026-10-25T02:10:00+01:00",
                false,
                Some("2026-10-25T02:40:00+01:00"),
            ),
            (
                "fall-back, hourly: the first 02:10, at the second 02:05 (55 minutes)",
                &hourly,
                ("data-2026-10-25-021000", "2026-10-25T02:10:00+02:00"),
                "2026-10-25T02:05:00+01:00",
                true,
                None,
            ),
            (
                "fall-back, daily: 08:00 CEST, at 03:30 CET the next day (20 h 30 m; 19 h 30 m by the clock)",
                &daily,
                ("data-2026-10-24-080000", "2026-10-24T08:00:00+02:00"),
                "2026-10-25T03:30:00+01:00",
                true,
                None,
            ),
            (
                "spring-forward, hourly: 01:50 CET, at 03:10 CEST (20 minutes)",
                &hourly,
                ("data-2026-03-29-015000", "2026-03-29T01:50:00+01:00"),
                "2026-03-29T03:10:00+02:00",
                false,
                Some("2026-03-29T03:40:00+02:00"),
            ),
            (
                "spring-forward, hourly: 01:10 CET, at 03:05 CEST (55 minutes)",
                &hourly,
                ("data-2026-03-29-011000", "2026-03-29T01:10:00+01:00"),
                "2026-03-29T03:05:00+02:00",
                true,
                None,
            ),
            (
                "spring-forward, daily: 08:00 CET, at 04:30 CEST the next day (19 h 30 m; 20 h 30 m by the clock)",
                &daily,
                ("data-2026-03-28-080000", "2026-03-28T08:00:00+01:00"),
                "2026-03-29T04:30:00+02:00",
                false,
                Some("2026-03-29T05:00:00+02:00"),
            ),
        ];
        for (what, schedule, (name, time), now, collect, next) in rows {
            let newest = seen(name, time);
            let h = history(newest.clone(), newest.clone(), newest);
            let due = decide(schedule, ExternalMode::First, &[h], &[], at(now), false);
            let s = &due.sets[0];
            assert_eq!(s.collect, collect, "{what}: {}", s.reason);
            let shown = s.next.map(|n| n.to_rfc3339());
            assert_eq!(shown.as_deref(), next, "{what}");
        }
    }

    #[test]
    fn next_collect_is_due_after_from_the_newest() {
        let daily = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Manual);
        let h = history(
            seen("data-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
            seen("data-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
            None,
        );
        let due = decide(&daily, ExternalMode::First, &[h], &[], at(NOW), false);
        assert_eq!(due.sets[0].next, Some(at("2025-04-10T23:15:00+02:00")));
    }

    fn dest(name: &str, priority: i32, present: bool, newest: Option<Seen>) -> DestinationHistory {
        DestinationHistory {
            name: name.into(),
            priority,
            present,
            newest,
            schedule: None,
            unseen: false,
        }
    }

    /// A destination with its own schedule is judged on its own beside the others: a bucket weekly while the
    /// drive is written whenever it is present (`schedule.external: always`), with each one's reason; its own
    /// `manual` never makes it a target; `--force` writes everything present; its overdue is by its own period.
    #[test]
    fn own_schedules_are_judged_beside_the_shared_one() {
        let always = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Always);
        let manual = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Manual);
        let old = seen("2025-03-29-031500", "2025-03-29T03:15:00+02:00"); // 12 days
        let recent = seen("2025-04-08-031500", "2025-04-08T03:15:00+02:00"); // 2 days
        let own = |name: &str, newest: Option<Seen>, s: ExternalSchedule| DestinationHistory {
            schedule: Some(s),
            ..dest(name, 0, true, newest)
        };
        let t9 = dest("T9", 10, true, recent.clone());
        let external = |s: &Schedule, d: &[DestinationHistory], force: bool| {
            decide(s, ExternalMode::First, &[], d, at(NOW), force).external
        };
        // The bucket's last upload is 2 days old: not due; the drive (always) is.
        let due = external(
            &always,
            &[
                t9.clone(),
                own("offsite", recent.clone(), ExternalSchedule::Weekly),
            ],
            false,
        );
        assert_eq!(due.action, ExternalAction::Write);
        assert_eq!(due.targets, ["T9"]);
        let off = due
            .destinations
            .iter()
            .find(|d| d.name == "offsite")
            .unwrap();
        assert!(!off.due);
        assert_eq!(
            off.reason,
            "its newest backup 2025-04-08-031500 is 2 days old; its own schedule is weekly"
        );
        assert_eq!(off.next, Some(at("2025-04-14T03:15:00+02:00")));
        // 12 days: due, and written beside the drive.
        let due = external(
            &always,
            &[
                t9.clone(),
                own("offsite", old.clone(), ExternalSchedule::Weekly),
            ],
            false,
        );
        assert_eq!(due.targets, ["T9", "offsite"]);
        assert!(
            due.reason
                .contains("offsite: its newest backup 2025-03-29-031500 is 12 days old"),
            "{}",
            due.reason
        );
        // The drive is due and absent while the bucket is written: still a missing drive.
        let absent = dest("T9", 10, false, old.clone());
        let due = external(
            &always,
            &[absent, own("offsite", None, ExternalSchedule::Weekly)],
            false,
        );
        assert_eq!(due.action, ExternalAction::Write);
        assert!(due.shared_missing, "{due:?}");
        assert!(
            due.reason
                .starts_with("T9: schedule.external is always; but no destination is present"),
            "{}",
            due.reason
        );
        // schedule.external manual: the drive is not looked at, the bucket still goes by its own schedule.
        let due = external(
            &manual,
            &[t9.clone(), own("offsite", None, ExternalSchedule::Weekly)],
            false,
        );
        assert_eq!(due.targets, ["offsite"]);
        // Its own manual: never a target, unless forced.
        let d = [own("offsite", None, ExternalSchedule::Manual)];
        let due = external(&always, &d, false);
        assert_eq!(due.action, ExternalAction::NotDue);
        assert!(
            due.reason
                .contains("only `dbackup external --destination offsite`"),
            "{}",
            due.reason
        );
        let due = external(&always, &d, true);
        assert_eq!(due.targets, ["offsite"]);
        // Overdue by its own period (weekly: past 10 days), the drive (always) never.
        let got = overdue(
            &always,
            ExternalMode::First,
            &[],
            &[t9, own("offsite", old, ExternalSchedule::Weekly)],
            at(NOW),
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].subject.as_deref(), Some("offsite"));
        assert!(
            got[0].message.contains("its schedule is weekly"),
            "{}",
            got[0].message
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table
    // Stays long: a table of cases, one per entry.
    fn external_due() {
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        let always = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Always);
        let manual = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Manual);
        let daily = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Daily);
        let old = seen("2025-03-29-031500", "2025-03-29T03:15:00+02:00"); // 12 days
        let recent = seen("2025-04-08-031500", "2025-04-08T03:15:00+02:00"); // 2 days
        use ExternalAction::*;
        use ExternalMode::{All, First};
        // (what, schedule, mode, destinations, force, action, targets, reason starts with)
        let cases: Vec<(
            &str,
            Schedule,
            ExternalMode,
            Vec<DestinationHistory>,
            bool,
            ExternalAction,
            &[&str],
            &str,
        )> = vec![
            (
                "manual never looks",
                manual.clone(),
                First,
                vec![dest("T9", 0, true, None)],
                false,
                Manual,
                &[],
                "schedule.external is manual",
            ),
            (
                "manual with --force writes",
                manual.clone(),
                First,
                vec![dest("T9", 0, true, None)],
                true,
                Write,
                &["T9"],
                "--force",
            ),
            (
                "no destinations",
                weekly.clone(),
                First,
                vec![],
                false,
                NoDestinations,
                &[],
                "no destination is configured",
            ),
            (
                "weekly, none yet, present",
                weekly.clone(),
                First,
                vec![dest("T9", 0, true, None)],
                false,
                Write,
                &["T9"],
                "no external backup yet; schedule.external is weekly",
            ),
            (
                "weekly, none yet, absent: missing media",
                weekly.clone(),
                First,
                vec![dest("T9", 0, false, None)],
                false,
                MissingMedia,
                &[],
                "no external backup yet; schedule.external is weekly; but no destination is present",
            ),
            (
                "weekly, 12 days old",
                weekly.clone(),
                First,
                vec![dest("T9", 0, true, old.clone())],
                false,
                Write,
                &["T9"],
                "the newest external backup (T9: 2025-03-29-031500) is 12 days old; schedule.external is weekly",
            ),
            (
                "weekly, 2 days old: not due, even with the drive absent",
                weekly.clone(),
                First,
                vec![dest("T9", 0, false, recent.clone())],
                false,
                NotDue,
                &[],
                "the newest external backup (T9: 2025-04-08-031500) is 2 days old",
            ),
            (
                "daily, 2 days old",
                daily.clone(),
                First,
                vec![dest("T9", 0, true, recent.clone())],
                false,
                Write,
                &["T9"],
                "the newest external backup (T9: 2025-04-08-031500) is 2 days old; schedule.external is daily",
            ),
            (
                "first: a recent backup on another drive counts; the drive present is not written",
                weekly.clone(),
                First,
                vec![
                    dest("T9", 10, false, recent.clone()),
                    dest("old", 0, true, old.clone()),
                ],
                false,
                NotDue,
                &[],
                "the newest external backup (T9: 2025-04-08-031500)",
            ),
            (
                "first: the highest priority present drive is written",
                weekly.clone(),
                First,
                vec![
                    dest("low", 0, true, None),
                    dest("high", 5, true, None),
                    dest("absent", 9, false, None),
                ],
                false,
                Write,
                &["high"],
                "no external backup yet",
            ),
            (
                "all: only the due present drives",
                weekly.clone(),
                All,
                vec![
                    dest("a", 0, true, old.clone()),
                    dest("b", 0, true, recent.clone()),
                    dest("c", 9, true, None),
                    dest("d", 0, false, None),
                ],
                false,
                Write,
                &["c", "a"],
                "due on a, c, d (external.mode is all)",
            ),
            (
                "all: the due drive is absent",
                weekly.clone(),
                All,
                vec![
                    dest("a", 0, false, old.clone()),
                    dest("b", 0, true, recent.clone()),
                ],
                false,
                MissingMedia,
                &[],
                "due on a (external.mode is all); schedule.external is weekly; but none of those destinations is present",
            ),
            (
                "all: nothing due",
                weekly.clone(),
                All,
                vec![
                    dest("a", 0, false, recent.clone()),
                    dest("b", 0, true, recent.clone()),
                ],
                false,
                NotDue,
                &[],
                "every destination has an external backup younger than 6 days",
            ),
            (
                "always, present",
                always.clone(),
                First,
                vec![dest("T9", 0, true, recent.clone())],
                false,
                Write,
                &["T9"],
                "schedule.external is always",
            ),
            (
                "always, absent",
                always.clone(),
                First,
                vec![dest("T9", 0, false, recent.clone())],
                false,
                MissingMedia,
                &[],
                "schedule.external is always; but no destination is present",
            ),
            (
                "all with --force writes every present drive",
                weekly.clone(),
                All,
                vec![
                    dest("a", 0, true, recent.clone()),
                    dest("b", 1, true, recent.clone()),
                ],
                true,
                Write,
                &["b", "a"],
                "--force",
            ),
        ];
        for (what, schedule, mode, dests, force, action, targets, reason) in cases {
            let due = decide(&schedule, mode, &[], &dests, at(NOW), force);
            let e = &due.external;
            assert_eq!(e.action, action, "{what}: {e:#?}");
            assert_eq!(e.targets, targets, "{what}");
            assert!(
                e.reason.starts_with(reason),
                "{what}: reason {:?}",
                e.reason
            );
            assert_eq!(e.is_due(), matches!(action, Write | MissingMedia), "{what}");
        }
    }

    #[test]
    fn not_due_says_when_it_will_be() {
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        let d = dest(
            "T9",
            0,
            true,
            seen("2025-04-08-031500", "2025-04-08T03:15:00+02:00"),
        );
        let due = decide(&weekly, ExternalMode::First, &[], &[d], at(NOW), false);
        assert_eq!(due.external.next, Some(at("2025-04-14T03:15:00+02:00")));
    }

    #[test]
    fn mode_all_judges_each_drive_and_says_when_the_next_is_due() {
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        // Both younger than 6 days: the next due time is the earlier drive's backup plus 6 days.
        let dests = [
            dest("a", 0, true, seen("a-1", "2025-04-08T03:15:00+02:00")),
            dest("b", 0, true, seen("b-1", "2025-04-06T03:15:00+02:00")),
        ];
        let due = decide(&weekly, ExternalMode::All, &[], &dests, at(NOW), false);
        assert_eq!(due.external.action, ExternalAction::NotDue);
        assert_eq!(due.external.next, Some(at("2025-04-12T03:15:00+02:00")));
        // A drive whose newest backup is dated in the future (another clock) is due, as in mode first.
        let dests = [
            dest("a", 0, true, seen("a-1", "2025-04-08T03:15:00+02:00")),
            dest("b", 0, true, seen("b-1", "2030-01-01T00:00:00+02:00")),
        ];
        let due = decide(&weekly, ExternalMode::All, &[], &dests, at(NOW), false);
        assert_eq!(due.external.action, ExternalAction::Write);
        assert_eq!(due.external.targets, ["b"]);
        let b = &due.external.destinations[1];
        assert!(
            b.due && b.reason == "its newest backup b-1 is dated in the future",
            "{b:?}"
        );
        assert_eq!(due.external.next, None);
    }

    #[test]
    fn thresholds_are_exact() {
        let now = at(NOW);
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        let ago = |d: TimeDelta| (now - d).to_rfc3339();
        // Mode all: exactly 6 days old is due, a second less is not.
        for (age, due) in [
            (TimeDelta::days(6), true),
            (TimeDelta::days(6) - TimeDelta::seconds(1), false),
        ] {
            let d = [dest("a", 0, true, seen("a-1", &ago(age)))];
            let e = decide(&weekly, ExternalMode::All, &[], &d, now, false).external;
            assert_eq!(e.destinations[0].due, due, "{age}: {e:?}");
            assert_eq!(e.is_due(), due, "{age}");
        }
        // Exactly FUTURE_TOLERANCE ahead is clock jitter (not due); a second more is another clock (due).
        let daily = sched(Incremental::Daily, Full::Never, ExternalSchedule::Daily);
        for (ahead, due) in [
            (FUTURE_TOLERANCE, false),
            (FUTURE_TOLERANCE + TimeDelta::seconds(1), true),
        ] {
            let t = (now + ahead).to_rfc3339();
            let h = history(seen("data-x", &t), seen("data-x", &t), None);
            let d = [dest("a", 0, true, seen("a-1", &t))];
            for mode in [ExternalMode::First, ExternalMode::All] {
                let got = decide(&daily, mode, std::slice::from_ref(&h), &d, now, false);
                assert_eq!(
                    got.sets[0].collect, due,
                    "{ahead} {mode:?}: {:?}",
                    got.sets[0]
                );
                assert_eq!(
                    got.external.is_due(),
                    due,
                    "{ahead} {mode:?}: {:?}",
                    got.external
                );
                // Due because of the clock, and saying so (not "is in the future old").
                let external_reason = match mode {
                    ExternalMode::First => &got.external.reason,
                    ExternalMode::All => &got.external.destinations[0].reason,
                };
                let said = [
                    got.sets[0].reason.contains("is dated in the future"),
                    external_reason.contains("is dated in the future"),
                ];
                assert_eq!(said, [due, due], "{ahead} {mode:?}: {got:?}");
            }
        }
        // Overdue: exactly 36 hours is not (daily), a second more is; the same per drive in mode all and for
        // the external phase in mode first (weekly: 10 days).
        for (age, overdue_now) in [
            (TimeDelta::hours(36), false),
            (TimeDelta::hours(36) + TimeDelta::seconds(1), true),
        ] {
            let t = ago(age);
            let h = history(seen("data-x", &t), seen("data-x", &t), None);
            let got = overdue(&weekly, ExternalMode::First, &[h], &[], now);
            assert_eq!(!got.is_empty(), overdue_now, "{age}: {got:?}");
        }
        for (age, overdue_now) in [
            (TimeDelta::days(10), false),
            (TimeDelta::days(10) + TimeDelta::seconds(1), true),
        ] {
            let d = [dest("a", 0, true, seen("a-1", &ago(age)))];
            for mode in [ExternalMode::First, ExternalMode::All] {
                let got = overdue(&weekly, mode, &[], &d, now);
                assert_eq!(!got.is_empty(), overdue_now, "{age} {mode:?}: {got:?}");
            }
        }
        // Full: compared exactly 6 days ago is due (weekly), a second less is not.
        let full = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Manual);
        for (age, due) in [
            (TimeDelta::days(6), true),
            (TimeDelta::days(6) - TimeDelta::seconds(1), false),
        ] {
            let old = seen("data-old", &ago(TimeDelta::days(2)));
            let h = history(old.clone(), old, seen("data-c", &ago(age)));
            let got = decide(&full, ExternalMode::First, &[h], &[], now, false);
            assert!(got.sets[0].collect);
            assert_eq!(got.sets[0].full, due, "{age}: {:?}", got.sets[0]);
        }
    }

    /// What could not be looked at is not said to have nothing: a set of an unreadable root, a destination not
    /// looked at that the run log knows nothing of (alone, in mode `all`, or as one of `first`'s). What the run log
    /// knows still ages.
    #[test]
    fn what_could_not_be_looked_at_is_not_overdue_for_having_nothing() {
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        let unseen = |d: DestinationHistory| DestinationHistory { unseen: true, ..d };
        let old = seen("2025-03-01-031500", "2025-03-01T03:15:00+02:00");
        let sets = [SetHistory {
            set: "data".into(),
            unseen: true,
            ..Default::default()
        }];
        let words = |mode, dests: &[DestinationHistory]| -> Vec<String> {
            overdue(&weekly, mode, &sets, dests, at(NOW))
                .into_iter()
                .map(|o| o.message)
                .collect()
        };
        let offsite = unseen(dest("offsite", 0, true, None));
        assert!(words(ExternalMode::First, std::slice::from_ref(&offsite)).is_empty());
        assert!(words(ExternalMode::All, std::slice::from_ref(&offsite)).is_empty());
        // Another destination's old backup: the unseen one may hold a newer one.
        let t9 = dest("T9", 0, false, old.clone());
        assert!(words(ExternalMode::First, &[t9.clone(), offsite.clone()]).is_empty());
        assert_eq!(
            words(ExternalMode::All, &[t9.clone(), offsite]),
            ["no external backup on T9 for 40 days, schedule is weekly"]
        );
        // The run log's last upload there is 40 days old.
        let known = unseen(dest("offsite", 0, true, old));
        assert_eq!(
            words(ExternalMode::First, &[known]),
            ["no external backup for 40 days, schedule is weekly"]
        );
    }

    #[test]
    fn overdue_items() {
        let weekly = sched(Incremental::Daily, Full::Weekly, ExternalSchedule::Weekly);
        let sets = [
            history(
                seen("data-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
                seen("data-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
                None,
            ),
            SetHistory {
                set: "config".into(),
                newest: seen("config-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
                newest_complete: seen("config-2025-04-07-031500", "2025-04-07T03:15:00+02:00"),
                newest_compared: None,
                unseen: false,
            },
            SetHistory {
                set: "new".into(),
                ..Default::default()
            },
            SetHistory {
                set: "broken".into(),
                newest: seen("broken-2025-04-10-031500", "2025-04-10T03:15:00+02:00"),
                ..Default::default()
            },
        ];
        let dests = [dest(
            "T9",
            0,
            false,
            seen("2025-03-29-031500", "2025-03-29T03:15:00+02:00"),
        )];
        let got: Vec<String> = overdue(&weekly, ExternalMode::First, &sets, &dests, at(NOW))
            .into_iter()
            .map(|o| o.message)
            .collect();
        assert_eq!(
            got,
            [
                "no complete snapshot of set config for 3 days, schedule is daily",
                "set new has no snapshot yet, schedule is daily",
                "set broken has no complete snapshot (the newest, broken-2025-04-10-031500, is incomplete), schedule is daily",
                "no external backup for 12 days, schedule is weekly",
            ]
        );

        // 35 hours is not overdue for daily; 37 is.
        let h = |t: &str| history(seen("data-x", t), seen("data-x", t), None);
        let at35 = overdue(
            &weekly,
            ExternalMode::First,
            &[h("2025-04-08T22:00:00+02:00")],
            &[],
            at(NOW),
        );
        assert!(at35.is_empty(), "{at35:?}");
        let at37 = overdue(
            &weekly,
            ExternalMode::First,
            &[h("2025-04-08T20:00:00+02:00")],
            &[],
            at(NOW),
        );
        assert_eq!(at37[0].age_seconds, Some(37 * 3600));

        // all: per destination; always and manual: never.
        let dests = [
            dest(
                "a",
                0,
                true,
                seen("2025-04-08-031500", "2025-04-08T03:15:00+02:00"),
            ),
            dest(
                "b",
                0,
                false,
                seen("2025-03-01-031500", "2025-03-01T03:15:00+02:00"),
            ),
            dest("c", 0, false, None),
        ];
        let got: Vec<String> = overdue(&weekly, ExternalMode::All, &[], &dests, at(NOW))
            .into_iter()
            .map(|o| o.message)
            .collect();
        assert_eq!(
            got,
            [
                "no external backup on b for 40 days, schedule is weekly",
                "no external backup on c yet, schedule is weekly",
            ]
        );
        for e in [ExternalSchedule::Always, ExternalSchedule::Manual] {
            let s = sched(Incremental::Daily, Full::Weekly, e);
            assert!(overdue(&s, ExternalMode::All, &[], &dests, at(NOW)).is_empty());
        }
        assert!(overdue(&weekly, ExternalMode::First, &[], &[], at(NOW)).is_empty());
    }
}
