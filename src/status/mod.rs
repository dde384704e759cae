//! `dbackup status`: the state of every set and destination, the last run, what is due and what is overdue.
//!
//! [`gather`] reads metadata only (snapshot metadata files, `backup.json`, the run log, `statvfs`); [`build`] turns
//! those facts into a [`StatusReport`] for a given `now` (pure); [`render`] writes the human table. `--json` prints
//! the report itself.

pub mod backups;
pub mod cloud;
pub mod gather;
pub mod history;

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, TimeDelta};
use serde::{Deserialize, Serialize};

use crate::config::Schedule;
use crate::media::{Absence, Presence};
use crate::schedule::{self, Due, Overdue};
use crate::settings::Settings;
use crate::snapshot::SnapshotState;
use crate::stdx;
use crate::stdx::table;
use backups::{
    fit_more, newest_and_points, newest_cells, others_words, recent_average, render_points,
};

pub use backups::{ExternalStatus, KnownFrom, LogDamaged, RestorePoint};
pub use gather::{CloudLook, Facts, Look, gather_for, gather_with};
pub use history::History;

/// What `dbackup status` reports (`--json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub now: DateTime<FixedOffset>,
    /// True when nothing is overdue, the last run did not fail, no set's newest snapshot lacks a source, no drive or
    /// bucket backup is damaged or broken, and nothing is in `unseen` (what `--check` exits 0 on).
    pub ok: bool,
    pub backup_root: PathBuf,
    pub root_exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_total_bytes: Option<u64>,
    /// The pid of a dbackup run holding the lock right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    pub schedule: Schedule,
    pub sets: Vec<SetStatus>,
    pub destinations: Vec<DestinationStatus>,
    /// The cloud destinations (looked at by `status`: a listing and each `backup.json`; the status page's are what the
    /// run log says, `not_looked_at`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clouds: Vec<cloud::CloudStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// What `dbackup backup` would run now, and why.
    pub due: Due,
    pub overdue: Vec<Overdue>,
    pub low_disk: Vec<LowDisk>,
    /// Everything else worth a look (incomplete snapshots, unreadable metadata, leftovers, low disk).
    pub warnings: Vec<String>,
    /// What could not be looked at (the backup root, a bucket that could not be listed, a drive whose backups could
    /// not be read, the run log), so whether it is overdue or failed is unknown: `ok` is false while any is here
    /// (`--check` exits 3).
    /// Each is also in the destinations table or among `warnings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<Unseen>,
    /// With `--history N`: recent runs, snapshots and drive backups (what the status page draws).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

/// A place `status` could not look at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unseen {
    /// `the backup root`, `destination offsite`, `the run log`.
    pub what: String,
    /// The error, with what to do.
    pub why: String,
}

/// One set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetStatus {
    pub set: String,
    /// Snapshot directories (with or without metadata).
    pub snapshots: usize,
    /// The newest snapshot with metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<SnapshotStatus>,
    /// The newest complete snapshot, when the newest is not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_complete: Option<SnapshotStatus>,
    /// Its snapshots could not be looked at (the backup root cannot be read): what it holds is unknown, not none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unseen: bool,
}

/// One snapshot, from its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub name: String,
    pub time: DateTime<FixedOffset>,
    pub age_seconds: i64,
    pub state: SnapshotState,
    /// Contents were compared (`--full`).
    pub full: bool,
    pub files: u64,
    /// Size of every file in it.
    pub bytes: u64,
    /// Bytes hard-linked from the previous snapshot (shared with it); none for a first snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_bytes: Option<u64>,
    /// Bytes copied when it was made.
    pub copied_bytes: u64,
    pub unreadable: u64,
    /// Sources that were missing when it was made (as configured): it lacks their data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_sources: Vec<String>,
}

/// One destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    pub path: PathBuf,
    pub present: bool,
    /// Why it is not present (`not_mounted`, `other_drive`, ...), and the sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Verified backups on the drive (present only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<usize>,
    /// The newest good backup (one found damaged or whose chain is broken is no restore point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<ExternalStatus>,
    /// Every verified backup on the drive, oldest first, with its chain (present only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePoint>,
    /// The average size of the newest few backups holding sets ([`backups::RECENT`]), on the drive (present only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_average_bytes: Option<u64>,
    /// How many more backups of that size fit in the free space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_more: Option<u64>,
    /// Verified backups on the drive of another config that names it alike (holding sets, none of this config's):
    /// not in `backups`, `newest` nor `restore_points`, but they take the same free space.
    #[serde(default, skip_serializing_if = "backups::is_zero")]
    pub other_configs_backups: usize,
    /// Its newest backup is unknown, not none: it is there but its backups could not be looked at (in `unseen`), or
    /// the run log's newest on it is `log_damaged`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unseen: bool,
    /// It was not listed, and the newest backup the run log names on it is one `restore --verify` found damaged:
    /// its stamp and what was found (no newest is known then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_damaged: Option<LogDamaged>,
    /// The newest backup the run log tells of here wrote nothing (failed, or refused for room), and no newer backup
    /// is known: a problem until a backup is written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed: Option<gather::Attempt>,
}

/// The last run of `collect`, `external` or `backup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub command: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub age_seconds: i64,
    pub exit: u8,
    /// `ok`, `warnings`, `failed`, `config error`, `locked`, `no destination`, `interrupted`.
    pub result: String,
    /// Exit 1 or 2: the run failed (what `--check` looks at).
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A filesystem that is nearly full, or cannot hold the next backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LowDisk {
    /// `backup root`, or the destination's name.
    pub place: String,
    pub path: PathBuf,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The next backup's estimated size, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_bytes: Option<u64>,
    pub message: String,
}

/// The words for an exit code.
pub fn result_word(exit: u8) -> &'static str {
    match exit {
        0 => "ok",
        1 => "failed",
        2 => "config error",
        3 => "warnings",
        4 => "locked",
        5 => "no destination",
        130 | 143 => "interrupted",
        _ => "failed",
    }
}

/// Builds the report for `now`. Pure.
pub fn build(facts: &Facts, settings: &Settings, now: DateTime<FixedOffset>) -> StatusReport {
    let age = |t: DateTime<FixedOffset>| now.signed_duration_since(t).num_seconds();
    let mut warnings = Vec::new();
    let sets: Vec<SetStatus> = facts
        .sets
        .iter()
        .map(|s| set_status(facts, s, now, &mut warnings))
        .collect();
    let destinations: Vec<DestinationStatus> = facts
        .destinations
        .iter()
        .map(|d| destination_status(facts, d, now, &mut warnings))
        .collect();
    let clouds: Vec<cloud::CloudStatus> = facts
        .clouds
        .iter()
        .map(|c| cloud::build(c, &settings.schedule, now, &mut warnings))
        .collect();

    let last_run = facts.runs.last.as_ref().map(|r| LastRun {
        command: r.command.clone(),
        started: r.started,
        finished: r.finished,
        age_seconds: age(r.finished),
        exit: r.exit,
        result: result_word(r.exit).to_string(),
        // Interrupted (130, 143) is not failed: the next run resumes, and what is overdue is reported as such.
        failed: !matches!(r.exit, 0 | 3 | 4 | 5 | 130 | 143),
        error: r.error.clone(),
    });
    warnings.extend(facts.root_error.iter().cloned());
    if let Some(e) = &facts.runs.error {
        warnings.push(e.clone());
    }
    let unseen = unseen_of(facts);
    warnings.extend(
        facts
            .unlisted_displaced
            .iter()
            .map(|d| crate::restore::engine::displace::unlisted_line(d)),
    );

    let set_histories = gather::set_histories(facts);
    let dest_histories = gather::destination_histories(facts);
    let due = schedule::decide(
        &settings.schedule,
        settings.external_mode,
        &set_histories,
        &dest_histories,
        now,
        false,
    );
    let overdue = schedule::overdue(
        &settings.schedule,
        settings.external_mode,
        &set_histories,
        &dest_histories,
        now,
    );
    let low_disk = low_disk(facts, settings.notifications.low_disk_percent);
    warnings.extend(low_disk.iter().map(|l| l.message.clone()));
    // A damaged or broken backup is named among the warnings too (the text shows them; `--check` fails on them).
    warnings.extend(backup_problems(&destinations, &clouds, true));
    warnings.extend(failed_backups(&destinations, &clouds));
    let ok = verdict_of(
        &overdue,
        last_run.as_ref(),
        &sets,
        (&destinations, &clouds),
        &unseen,
    )
    .ok;
    let history = (facts.history > 0).then(|| history::build(facts, settings, &due));
    StatusReport {
        now,
        ok,
        backup_root: facts.backup_root.clone(),
        root_exists: facts.root_exists,
        root_free_bytes: facts.root_space.map(|s| s.free_bytes),
        root_total_bytes: facts.root_space.map(|s| s.total_bytes),
        running: facts.running,
        schedule: settings.schedule.clone(),
        sets,
        destinations,
        clouds,
        last_run,
        due,
        overdue,
        low_disk,
        warnings,
        unseen,
        history,
    }
}

/// What could not be looked at: the backup root, the drives that are there but whose backups could not be listed (an I/O error, a
/// `backups` that is no directory or leads elsewhere), the buckets that could not be (both only when looked at), the
/// run log. A drive that is not plugged in is absent, not unseen.
fn unseen_of(facts: &Facts) -> Vec<Unseen> {
    let drives = facts
        .destinations
        .iter()
        .filter_map(|d| Some((&d.settings.name, d.unseen()?)));
    let clouds = facts
        .clouds
        .iter()
        .filter_map(|c| Some((&c.settings.name, c.unseen()?)));
    let mut out: Vec<Unseen> = drives
        .chain(clouds)
        .map(|(name, why)| Unseen {
            what: format!("destination {name}"),
            why,
        })
        .collect();
    if let Some(e) = &facts.root_error {
        out.insert(
            0,
            Unseen {
                what: "the backup root".to_string(),
                why: e.clone(),
            },
        );
    }
    if let Some(e) = &facts.runs.error {
        out.push(Unseen {
            what: "the run log".to_string(),
            why: e.clone(),
        });
    }
    out
}

/// A snapshot as the report shows it, aged at `now`.
fn snapshot_status(s: &gather::SnapshotFacts, now: DateTime<FixedOffset>) -> SnapshotStatus {
    SnapshotStatus {
        name: s.name.clone(),
        time: s.started,
        age_seconds: now.signed_duration_since(s.started).num_seconds(),
        state: if s.complete {
            SnapshotState::Complete
        } else {
            SnapshotState::Incomplete
        },
        full: s.full,
        files: s.files,
        bytes: s.total_bytes,
        shared_bytes: (!s.first).then_some(s.linked_bytes),
        copied_bytes: s.transferred_bytes,
        unreadable: s.unreadable,
        missing_sources: s.missing_sources.clone(),
    }
}

/// A set's line of the report; what is wrong with its snapshots goes to `warnings`.
fn set_status(
    facts: &Facts,
    s: &gather::SetFacts,
    now: DateTime<FixedOffset>,
    warnings: &mut Vec<String>,
) -> SetStatus {
    for (name, why) in &s.unusable {
        warnings.push(format!(
            "snapshot {name} is not used (its metadata is unusable: {why})"
        ));
    }
    if let Some(n) = s.newest.as_ref().filter(|n| !n.complete) {
        warnings.push(format!(
            "the newest snapshot of set {}, {}, is incomplete: {}; see {}.json",
            s.set,
            n.name,
            n.incompleteness,
            facts.backup_root.join(&n.name).display()
        ));
    }
    if s.in_progress && facts.running.is_none() {
        warnings.push(format!(
            "an interrupted collect of set {} left .{}.in-progress in the backup root; the next run resumes it",
            s.set, s.set
        ));
    }
    SetStatus {
        set: s.set.clone(),
        snapshots: s.count,
        newest: s.newest.as_ref().map(|n| snapshot_status(n, now)),
        newest_complete: s
            .newest_complete
            .as_ref()
            .filter(|c| s.newest.as_ref().is_some_and(|n| n.name != c.name))
            .map(|c| snapshot_status(c, now)),
        unseen: facts.root_error.is_some(),
    }
}

/// A destination's line of the report: present or why not, space, its newest backup (from the drive, else from
/// the run log); what is wrong with its listing goes to `warnings`.
fn destination_status(
    facts: &Facts,
    d: &gather::DestinationFacts,
    now: DateTime<FixedOffset>,
    warnings: &mut Vec<String>,
) -> DestinationStatus {
    let info = match &d.presence {
        Some(Presence::Present(i)) => Some(i),
        _ => None,
    };
    let absence = match &d.presence {
        Some(Presence::Absent(a)) => Some(a),
        _ => None,
    };
    if let Some(e) = &d.listing_error {
        warnings.push(format!("destination {}: {e}", d.settings.name));
    }
    if let Some(l) = &d.listing {
        if l.unusable > 0 {
            warnings.push(format!(
                "destination {}: {} in backups/ without usable backup.json (not counted)",
                d.settings.name,
                stdx::counted(l.unusable as u64, "directory", "directories")
            ));
        }
        if l.leftovers > 0 && facts.running.is_none() {
            warnings.push(format!(
                "destination {}: {} of interrupted runs in backups/; the next external run removes them",
                d.settings.name,
                stdx::counted(l.leftovers as u64, "leftover", "leftovers")
            ));
        }
    }
    let (newest, points) = newest_and_points(d.listing.as_ref(), d.from_log.as_ref(), now);
    let average = recent_average(&points);
    DestinationStatus {
        name: d.settings.name.clone(),
        path: d.settings.path.clone(),
        present: info.is_some(),
        absent_kind: absence.map(|a| a.kind().to_string()),
        absent_reason: absence.map(|a| a.to_string()),
        fs_type: info.map(|i| i.fs_type.clone()),
        free_bytes: info.map(|i| i.free_bytes),
        total_bytes: info.map(|i| i.total_bytes),
        backups: d.listing.as_ref().map(|l| l.verified),
        newest,
        fit_more: fit_more(info.map(|i| i.free_bytes), average),
        recent_average_bytes: average,
        restore_points: points,
        other_configs_backups: d.listing.as_ref().map_or(0, |l| l.foreign),
        unseen: d.newest_unknown(),
        log_damaged: LogDamaged::of(d.log_damaged.as_ref()),
        last_failed: d
            .attempt
            .clone()
            .filter(|a| a.failed_after(d.newest().as_ref())),
    }
}

/// Whether the backups are good, and if not what is wrong: what `status --check` exits on, the status page's
/// headline, and `ok` in `status --json`. One function, so that they can never disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Nothing is overdue, the last run did not fail, no set lacks a source and no drive or bucket backup is damaged
    /// or broken.
    pub ok: bool,
    /// What makes it not ok, one sentence each: everything overdue, the failed last run, the sets lacking a source,
    /// the damaged or broken drive and bucket backups.
    pub problems: Vec<String>,
    /// What could not be looked at ([`StatusReport::unseen`]): not ok either, but not known to be wrong.
    pub unseen: Vec<Unseen>,
}

impl Verdict {
    /// The exit of `status --check`: 0 ok, 1 a problem, 3 no problem seen but something could not be looked at.
    pub fn exit(&self) -> crate::exit::Exit {
        if !self.problems.is_empty() {
            crate::exit::Exit::Failed
        } else if !self.unseen.is_empty() {
            crate::exit::Exit::Warnings
        } else {
            crate::exit::Exit::Ok
        }
    }

    /// "destination offsite, the run log": what could not be looked at.
    pub fn unseen_names(&self) -> String {
        self.unseen
            .iter()
            .map(|u| u.what.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What `status --check` says on stderr, a line each (none when ok): the problems, then what could not be
    /// looked at ("cannot tell whether the backups are good: destination offsite could not be looked at: why").
    pub fn check_lines(&self) -> Vec<String> {
        let unseen = || {
            let why: Vec<&str> = self.unseen.iter().map(|u| u.why.as_str()).collect();
            format!(
                "cannot tell whether the backups are good: {} could not be looked at: {}",
                self.unseen_names(),
                why.join("; ")
            )
        };
        match (self.problems.is_empty(), self.unseen.is_empty()) {
            (true, true) => Vec::new(),
            (true, false) => vec![format!("status check: {}", unseen())],
            (false, true) => vec![format!("status check failed: {}", self.problems.join("; "))],
            (false, false) => vec![
                format!("status check failed: {}", self.problems.join("; ")),
                format!("and {}", unseen()),
            ],
        }
    }
}

/// The verdict of a report.
pub fn verdict(r: &StatusReport) -> Verdict {
    verdict_of(
        &r.overdue,
        r.last_run.as_ref(),
        &r.sets,
        (&r.destinations, &r.clouds),
        &r.unseen,
    )
}

/// A sentence for each destination (drive or bucket) whose newest backup the run log tells of wrote nothing, with no
/// newer backup known there: "the last backup to T9 failed (2025-04-10 04:05): why".
pub fn failed_backups(
    destinations: &[DestinationStatus],
    clouds: &[cloud::CloudStatus],
) -> Vec<String> {
    failed_backup_parts(destinations, clouds)
        .into_iter()
        .map(|(head, why)| format!("{head}: {why}"))
        .collect()
}

/// [`failed_backups`] as ("the last backup to T9 failed (2025-04-10 04:05)", why).
fn failed_backup_parts(
    destinations: &[DestinationStatus],
    clouds: &[cloud::CloudStatus],
) -> Vec<(String, String)> {
    let drives = destinations.iter().map(|d| (&d.name, &d.last_failed));
    let clouds = clouds.iter().map(|c| (&c.name, &c.last_failed));
    drives
        .chain(clouds)
        .filter_map(|(name, a)| {
            let a = a.as_ref()?;
            let why = a.error.as_deref().unwrap_or(&a.status);
            let how = if a.status == "refused" {
                "was refused"
            } else {
                "failed"
            };
            Some((
                format!("the last backup to {name} {how} ({})", when(a.finished)),
                stdx::show_str(why.lines().next().unwrap_or("")),
            ))
        })
        .collect()
}

/// A sentence for each backup on a drive or a bucket that is no restore point: found damaged by `restore --verify`,
/// or whose chain is broken. `all: false` keeps those that fail the verdict: a damaged one (the destination lost
/// data), and a broken one newer than the destination's newest good backup (the newest there is not restorable); an
/// older broken one, with a good backup after it, is a warning only.
pub fn backup_problems(
    destinations: &[DestinationStatus],
    clouds: &[cloud::CloudStatus],
    all: bool,
) -> Vec<String> {
    let damaged = |name: &str, stamp: &str, why: &str| {
        format!(
            "destination {name}: backup {stamp} is DAMAGED ({why}); it is not counted as a restore point: verify it \
             again or remove it"
        )
    };
    let drives = (destinations.iter()).map(|d| {
        (
            &d.name,
            &d.log_damaged,
            &d.newest,
            &d.restore_points,
            "drive",
        )
    });
    let clouds = (clouds.iter()).map(|c| {
        (
            &c.name,
            &c.log_damaged,
            &c.newest,
            &c.restore_points,
            "bucket",
        )
    });
    let mut out = Vec::new();
    for (name, log_damaged, newest, points, place) in drives.chain(clouds) {
        if let Some(l) = log_damaged {
            out.push(damaged(name, &l.stamp, &l.problem));
        }
        let newest_good = newest.as_ref().map(|n| n.time);
        let fails = |p: &&RestorePoint| p.damaged || newest_good.is_none_or(|t| p.time > t);
        for p in points
            .iter()
            .filter(|p| !p.good())
            .filter(|p| all || fails(p))
        {
            let why = match &p.problem {
                Some(why) => why.clone(),
                None => format!("its base is not on the {place}"),
            };
            out.push(if p.damaged {
                damaged(name, &p.stamp, &why)
            } else {
                format!(
                    "destination {name}: backup {} is BROKEN ({why}); it cannot be restored whole and is not counted \
                     as a restore point",
                    p.stamp
                )
            });
        }
    }
    out
}

/// Overdue work, a failed last run, a source missing from a set's newest snapshot (that source is not being backed
/// up: it fails the check at once), and a backup on a drive or bucket found damaged or whose chain is broken; then
/// what could not be looked at.
fn verdict_of(
    overdue: &[Overdue],
    last_run: Option<&LastRun>,
    sets: &[SetStatus],
    (destinations, clouds): (&[DestinationStatus], &[cloud::CloudStatus]),
    unseen: &[Unseen],
) -> Verdict {
    let mut problems: Vec<String> = overdue.iter().map(|o| o.message.clone()).collect();
    if let Some(l) = last_run.filter(|l| l.failed) {
        problems.push(format!(
            "the last run ({}) failed",
            stdx::show_str(&l.command)
        ));
    }
    for s in sets {
        if let Some(n) = s.newest.as_ref().filter(|n| !n.missing_sources.is_empty()) {
            problems.push(format!(
                "the newest snapshot of set {}, {}, lacks {} (missing when it was made)",
                s.set,
                n.name,
                n.missing_sources.join(", ")
            ));
        }
    }
    problems.extend(backup_problems(destinations, clouds, false));
    problems.extend(failed_backups(destinations, clouds));
    Verdict {
        ok: problems.is_empty() && unseen.is_empty(),
        problems,
        unseen: unseen.to_vec(),
    }
}

fn percent(free: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        free as f64 * 100.0 / total as f64
    }
}

/// Filesystems below `threshold` percent free, or without room for the next backup: the backup root's (the next
/// snapshots need about what the newest ones copied, first snapshots aside) and each present destination's (the next
/// backup needs about the size of its newest, else of the newest complete snapshots). A destination detected as full
/// counts too.
pub fn low_disk(facts: &Facts, threshold: u8) -> Vec<LowDisk> {
    let mut out = Vec::new();
    let judge = |place: &str,
                 what: String,
                 path: &std::path::Path,
                 free: u64,
                 total: u64,
                 needed: Option<u64>,
                 out: &mut Vec<LowDisk>| {
        let pct = percent(free, total);
        let mut reasons = Vec::new();
        if pct < f64::from(threshold) {
            reasons.push(format!(
                "{pct:.1}% free ({} of {}), below notifications.low_disk_percent ({threshold}%)",
                stdx::bytes(free),
                stdx::bytes(total)
            ));
        }
        if let Some(n) = needed.filter(|n| *n > free) {
            reasons.push(format!(
                "{} free but the next backup needs about {}",
                stdx::bytes(free),
                stdx::bytes(n)
            ));
        }
        if !reasons.is_empty() {
            out.push(LowDisk {
                place: place.to_string(),
                path: path.to_path_buf(),
                free_bytes: free,
                total_bytes: total,
                needed_bytes: needed,
                message: format!("low disk: {what} has {}", reasons.join("; and ")),
            });
        }
    };
    if let Some(s) = facts.root_space {
        // A first snapshot copied everything; the next one hard-links what did not change, so it says nothing.
        let needed: u64 = facts
            .sets
            .iter()
            .filter_map(|s| s.newest.as_ref())
            .filter(|n| !n.first)
            .map(|n| n.transferred_bytes)
            .fold(0u64, u64::saturating_add);
        judge(
            "backup root",
            format!(
                "the backup root's filesystem ({})",
                facts.backup_root.display()
            ),
            &facts.backup_root,
            s.free_bytes,
            s.total_bytes,
            (needed > 0).then_some(needed),
            &mut out,
        );
    }
    for d in &facts.destinations {
        let name = &d.settings.name;
        match &d.presence {
            Some(Presence::Present(info)) => {
                let needed = gather::needed_on(facts, d);
                judge(
                    name,
                    format!("destination {name} ({})", d.settings.path.display()),
                    &d.settings.path,
                    info.free_bytes,
                    info.total_bytes,
                    needed,
                    &mut out,
                );
            }
            Some(Presence::Absent(
                a @ Absence::Full {
                    free_bytes,
                    total_bytes,
                    ..
                },
            )) => out.push(LowDisk {
                place: name.clone(),
                path: d.settings.path.clone(),
                free_bytes: *free_bytes,
                total_bytes: *total_bytes,
                needed_bytes: None,
                message: format!("low disk: destination {name} is {a}"),
            }),
            _ => {}
        }
    }
    out
}

fn when(t: DateTime<FixedOffset>) -> String {
    t.format(crate::stdx::MINUTE).to_string()
}

/// The human report: a headline, the sets, the destinations, the last run, what is due, what is overdue, warnings.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    render_headline(&mut out, r);
    render_sets(&mut out, r);
    render_destinations(&mut out, r);
    cloud::render(&mut out, &r.clouds);
    render_runs(&mut out, r);
    out
}

/// The first lines: ok or what needs attention, a run in progress, the backup root and its space.
fn render_headline(w: &mut String, r: &StatusReport) {
    let failed = r.last_run.as_ref().is_some_and(|l| l.failed);
    if r.ok {
        let _ = writeln!(w, "status: ok, nothing is overdue ({})", when(r.now));
    } else {
        let mut what = Vec::new();
        if !r.overdue.is_empty() {
            what.push(format!("{} overdue", r.overdue.len()));
        }
        if failed {
            what.push("the last run failed".to_string());
        }
        let lacking = r
            .sets
            .iter()
            .filter(|s| {
                s.newest
                    .as_ref()
                    .is_some_and(|n| !n.missing_sources.is_empty())
            })
            .count();
        if lacking > 0 {
            what.push(format!(
                "{} without a source",
                stdx::counted(lacking as u64, "set", "sets")
            ));
        }
        // "the last backup to T9 failed (2025-04-10 04:05)": the why is under "warnings:" and in --check.
        what.extend(
            failed_backup_parts(&r.destinations, &r.clouds)
                .into_iter()
                .map(|(head, _)| head),
        );
        let bad = backup_problems(&r.destinations, &r.clouds, false).len();
        if bad > 0 {
            what.push(format!(
                "{} damaged or broken",
                stdx::counted(bad as u64, "backup", "backups")
            ));
        }
        let v = verdict(r);
        if what.is_empty() {
            let _ = writeln!(
                w,
                "status: UNKNOWN: {} could not be looked at, so whether the backups are good is unknown (see \
                 warnings) ({})",
                v.unseen_names(),
                when(r.now)
            );
        } else {
            if !v.unseen.is_empty() {
                what.push(format!("{} could not be looked at", v.unseen_names()));
            }
            let _ = writeln!(
                w,
                "status: ATTENTION: {} ({})",
                what.join(", "),
                when(r.now)
            );
        }
    }
    if let Some(pid) = r.running {
        let _ = writeln!(w, "a dbackup run is in progress (pid {pid})");
    }
    let space = match (r.root_free_bytes, r.root_total_bytes) {
        (Some(f), Some(t)) => format!(", {} free of {}", stdx::bytes(f), stdx::bytes(t)),
        _ => String::new(),
    };
    let missing = if r.root_exists {
        ""
    } else {
        " (does not exist yet)"
    };
    let _ = writeln!(w, "backup root {}{missing}{space}", r.backup_root.display());
}

/// The sets' table: each set's newest snapshot, and its newest complete one when that is another.
fn render_sets(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "\nsets:");
    let mut rows = vec![vec![
        "SET".to_string(),
        "NEWEST SNAPSHOT".to_string(),
        "AGE".to_string(),
        "STATE".to_string(),
        "SIZE".to_string(),
        "SHARED WITH PREVIOUS".to_string(),
        "SNAPSHOTS".to_string(),
    ]];
    for s in &r.sets {
        match &s.newest {
            Some(n) => {
                let state = match n.state {
                    SnapshotState::Complete if n.full => "complete, full",
                    SnapshotState::Complete => "complete",
                    SnapshotState::Incomplete => "INCOMPLETE",
                    SnapshotState::Unknown => "unknown",
                };
                let shared = match n.shared_bytes {
                    Some(b) => format!(
                        "{} ({:.0}%)",
                        stdx::bytes(b),
                        if n.bytes == 0 {
                            100.0
                        } else {
                            b as f64 * 100.0 / n.bytes as f64
                        }
                    ),
                    None => "- (first snapshot)".to_string(),
                };
                rows.push(vec![
                    s.set.clone(),
                    n.name.clone(),
                    stdx::age_short(TimeDelta::seconds(n.age_seconds)),
                    state.to_string(),
                    stdx::bytes(n.bytes),
                    shared,
                    s.snapshots.to_string(),
                ]);
            }
            None => rows.push(vec![
                s.set.clone(),
                if s.unseen { "unknown" } else { "none" }.to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                if s.unseen {
                    "?".to_string()
                } else {
                    s.snapshots.to_string()
                },
            ]),
        }
        if let Some(c) = &s.newest_complete {
            rows.push(vec![
                String::new(),
                c.name.clone(),
                stdx::age_short(TimeDelta::seconds(c.age_seconds)),
                "newest complete".to_string(),
                stdx::bytes(c.bytes),
                String::new(),
                String::new(),
            ]);
        }
    }
    out.push_str(&table(&rows));
}

/// The destinations' table, and why each absent one is absent.
fn render_destinations(out: &mut String, r: &StatusReport) {
    let w = &mut *out;
    let _ = writeln!(w, "\ndestinations:");
    if r.destinations.is_empty() && !r.clouds.is_empty() {
        let _ = writeln!(
            w,
            "  no drive configured (the cloud destinations are below)"
        );
    } else if r.destinations.is_empty() {
        let _ = writeln!(
            w,
            "  none configured (add one to \"destinations\" for the external phase)"
        );
    } else {
        let mut rows = vec![vec![
            "DESTINATION".to_string(),
            "STATE".to_string(),
            "FREE".to_string(),
            "NEWEST VERIFIED BACKUP".to_string(),
            "AGE".to_string(),
            "BACKUPS".to_string(),
        ]];
        let mut notes = Vec::new();
        for d in &r.destinations {
            let state = if d.present {
                format!("present ({})", d.fs_type.as_deref().unwrap_or("?"))
            } else {
                match &d.absent_kind {
                    Some(k) => format!("absent ({})", k.replace('_', " ")),
                    None => "not looked at".to_string(),
                }
            };
            let free = match (d.free_bytes, d.total_bytes) {
                (Some(f), Some(t)) => format!("{} of {}", stdx::bytes(f), stdx::bytes(t)),
                _ => "-".to_string(),
            };
            let (newest, age) = newest_cells(d.newest.as_ref(), d.unseen);
            rows.push(vec![
                d.name.clone(),
                state,
                free,
                newest,
                age,
                d.backups.map_or("-".to_string(), |b| b.to_string()),
            ]);
            if let Some(why) = &d.absent_reason {
                notes.push(format!("  {}: {why}", d.name));
            }
        }
        out.push_str(&table(&rows));
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
        // A drive holding only another config's backups still says whose they are (the free space is shared).
        for d in r
            .destinations
            .iter()
            .filter(|d| !d.restore_points.is_empty() || d.other_configs_backups > 0)
        {
            render_restore_points(out, d);
        }
    }
}

/// A present destination's restore points with their chains, and how many more backups fit.
fn render_restore_points(out: &mut String, d: &DestinationStatus) {
    let average = recent_average(&d.restore_points);
    let fit = match (fit_more(d.free_bytes, average), average) {
        (Some(n), Some(a)) => format!(
            "; {} free: about {} more of {} (the recent average) fit",
            d.free_bytes.map_or("?".into(), stdx::bytes),
            stdx::count(n),
            stdx::bytes(a)
        ),
        _ => String::new(),
    };
    let fit = fit
        + &others_words(
            d.other_configs_backups,
            "the free space is shared with",
            "drive",
        );
    render_points(out, &d.name, &fit, &d.restore_points, "drive");
}

/// The last run, the schedule, what is due, what is overdue and the warnings.
fn render_runs(w: &mut String, r: &StatusReport) {
    let _ = writeln!(w);
    match &r.last_run {
        Some(l) => {
            let _ = write!(
                w,
                "last run: {} finished {} ({} ago): {}",
                stdx::show_str(&l.command),
                when(l.finished),
                stdx::age_words(chrono::TimeDelta::seconds(l.age_seconds)),
                if l.failed {
                    l.result.to_uppercase()
                } else {
                    l.result.clone()
                }
            );
            match &l.error {
                Some(e) => {
                    let _ = writeln!(w, ": {}", stdx::show_str(e.lines().next().unwrap_or("")));
                }
                None => {
                    let _ = writeln!(w);
                }
            }
        }
        None => {
            let _ = writeln!(w, "last run: none recorded in the run log");
        }
    }
    let _ = writeln!(
        w,
        "schedule: collect {}, compare contents {}, external {}",
        word(&r.schedule.incremental),
        word(&r.schedule.full),
        word(&r.schedule.external)
    );
    let _ = writeln!(w, "{}", due_line(&r.due, r.now));

    if !r.overdue.is_empty() {
        let _ = writeln!(w, "\noverdue:");
        for o in &r.overdue {
            let _ = writeln!(w, "  {}", o.message);
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(w, "\nwarnings:");
        for m in &r.warnings {
            let _ = writeln!(w, "  {m}");
        }
    }
}

/// `due now: collect (data, config), external (T9)` or `next: collect at 2025-04-10 23:15, external at ...`.
pub fn due_line(due: &Due, now: DateTime<FixedOffset>) -> String {
    let collect: Vec<&str> = due
        .sets
        .iter()
        .filter(|s| s.collect)
        .map(|s| s.set.as_str())
        .collect();
    let mut now_parts = Vec::new();
    let mut later = Vec::new();
    if !collect.is_empty() {
        now_parts.push(format!("collect ({})", collect.join(", ")));
    } else if let Some(next) = due.sets.iter().filter_map(|s| s.next).min() {
        later.push(format!(
            "collect at {} (in {})",
            when(next),
            stdx::age_words(next.signed_duration_since(now))
        ));
    }
    use schedule::ExternalAction::*;
    match due.external.action {
        Write => now_parts.push(format!("external ({})", due.external.targets.join(", "))),
        MissingMedia => now_parts.push("external (no destination present)".to_string()),
        NotDue => {
            if let Some(next) = due.external.next {
                later.push(format!(
                    "external at {} (in {})",
                    when(next),
                    stdx::age_words(next.signed_duration_since(now))
                ));
            }
        }
        Manual => later.push("external only by `dbackup external` (manual)".to_string()),
        NoDestinations => {}
    }
    let mut line = String::new();
    if !now_parts.is_empty() {
        let _ = write!(line, "due now: {}", now_parts.join(", "));
    }
    if !later.is_empty() {
        if !line.is_empty() {
            line.push_str("; ");
        }
        let _ = write!(line, "next: {}", later.join(", "));
    }
    if line.is_empty() {
        line.push_str("due now: nothing");
    }
    line
}

/// A unit enum value as the config spells it.
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::gather::{DestinationFacts, ListingFacts, SetFacts, SnapshotFacts, Space};
    use super::*;
    use crate::media::MediaInfo;
    use crate::settings::DestinationSettings;

    const G: u64 = 1 << 30;

    fn snapshot(first: bool, total: u64, copied: u64) -> SnapshotFacts {
        let t = DateTime::parse_from_rfc3339("2025-04-10T03:15:00+00:00").unwrap();
        SnapshotFacts {
            name: "data-2025-04-10-031500".into(),
            started: t,
            finished: t,
            complete: true,
            full: false,
            first,
            files: 1,
            total_bytes: total,
            transferred_bytes: copied,
            linked_bytes: total - copied,
            unreadable: 0,
            warnings: 0,
            missing_sources: vec![],
            incompleteness: String::new(),
        }
    }

    fn facts(free: u64, total: u64, newest: SnapshotFacts) -> Facts {
        Facts {
            backup_root: "/b".into(),
            root_exists: true,
            root_space: Some(Space {
                free_bytes: free,
                total_bytes: total,
            }),
            sets: vec![SetFacts {
                set: "data".into(),
                count: 1,
                newest: Some(newest.clone()),
                newest_complete: Some(newest),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn destination(presence: Presence, newest_bytes: Option<u64>) -> DestinationFacts {
        DestinationFacts {
            settings: DestinationSettings::example("T9", "/media/T9"),
            presence: Some(presence),
            listing: newest_bytes.map(|bytes| ListingFacts {
                verified: 1,
                newest: Some(gather::BackupFacts {
                    stamp: "2025-04-01-031500".into(),
                    started: DateTime::parse_from_rfc3339("2025-04-01T03:15:00+00:00").unwrap(),
                    finished: DateTime::parse_from_rfc3339("2025-04-01T03:35:00+00:00").unwrap(),
                    bytes,
                    sets: vec![],
                    encryption: None,
                    drive_bytes: bytes,
                    incremental: false,
                    base: None,
                    image_only: false,
                    damaged: None,
                    broken: None,
                }),
                ..Default::default()
            }),
            listing_error: None,
            from_log: None,
            log_damaged: None,
            attempt: None,
        }
    }

    fn present(free: u64, total: u64) -> Presence {
        Presence::Present(MediaInfo {
            path: "/media/T9".into(),
            resolved: "/media/T9".into(),
            mount_point: "/media/T9".into(),
            is_mount_point: true,
            source: "/dev/sdb1".into(),
            device: None,
            mount_fs_type: "fuseblk".into(),
            fs_type: "exfat".into(),
            label: None,
            uuid: None,
            dev: 1,
            free_bytes: free,
            total_bytes: total,
            max_file_size: None,
            symlinks: false,
            hard_links: false,
            marker: None,
        })
    }

    #[test]
    fn low_disk_by_percentage_and_by_the_next_backup() {
        let messages = |f: &Facts, pct| -> Vec<String> {
            low_disk(f, pct).into_iter().map(|l| l.message).collect()
        };
        // 5% free, threshold 10%.
        assert_eq!(
            messages(&facts(5 * G, 100 * G, snapshot(false, G, 1 << 20)), 10),
            [
                "low disk: the backup root's filesystem (/b) has 5.0% free (5.0 GiB of 100.0 GiB), below notifications.low_disk_percent (10%)"
            ]
        );
        assert!(messages(&facts(5 * G, 100 * G, snapshot(false, G, 1 << 20)), 5).is_empty());
        // The last run copied 8 GiB; 6 GiB are free.
        assert_eq!(
            messages(&facts(6 * G, 100 * G, snapshot(false, 20 * G, 8 * G)), 0),
            [
                "low disk: the backup root's filesystem (/b) has 6.0 GiB free but the next backup needs about 8.0 GiB"
            ]
        );
        // A first snapshot copied everything: it does not predict the next one.
        assert!(messages(&facts(6 * G, 100 * G, snapshot(true, 20 * G, 20 * G)), 0).is_empty());

        // A destination: its newest backup's size, else the snapshots' size; a full drive counts too.
        let mut f = facts(50 * G, 100 * G, snapshot(false, 20 * G, G));
        f.destinations = vec![destination(present(15 * G, 1000 * G), Some(18 * G))];
        assert_eq!(
            messages(&f, 2),
            [
                "low disk: destination T9 (/media/T9) has 1.5% free (15.0 GiB of 1000.0 GiB), below notifications.low_disk_percent (2%); and 15.0 GiB free but the next backup needs about 18.0 GiB"
            ]
        );
        f.destinations = vec![destination(present(15 * G, 1000 * G), None)];
        assert_eq!(
            messages(&f, 0),
            [
                "low disk: destination T9 (/media/T9) has 15.0 GiB free but the next backup needs about 20.0 GiB"
            ]
        );
        f.destinations = vec![destination(
            Presence::Absent(Absence::Full {
                path: "/media/T9".into(),
                free_bytes: 1000,
                total_bytes: 1000 * G,
            }),
            None,
        )];
        let got = messages(&f, 0);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("low disk: destination T9 is full: /media/T9 has 1000 B free"),
            "{got:?}"
        );
    }
}
