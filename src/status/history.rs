//! The history `status --json --history N` adds, and the status page draws: the last runs from the run log, the
//! newest snapshots of each set (new bytes per snapshot, outliers), failures since each set's last good snapshot, and
//! the backups on each present drive. Built from the gathered facts and `now`; pure.

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::gather::{Facts, SnapshotFacts};
use crate::media::Presence;
use crate::runlog::RunRecord;
use crate::schedule::{Due, Period, external_period};
use crate::settings::Settings;

/// A snapshot copies more than this many times the median of its neighbours (and at least [`OUTLIER_FLOOR`] more):
/// flagged, because a sudden jump is how a misplaced download folder or a runaway log shows up.
pub const OUTLIER_FACTOR: u64 = 4;
/// Jumps smaller than this are never flagged.
pub const OUTLIER_FLOOR: u64 = 10 << 20;

/// What the status page draws beyond the status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The machine's name.
    pub host: String,
    /// The config file the settings came from (none: the built-in default), for the restore commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// How many runs (and snapshots per set) were asked for.
    pub limit: usize,
    /// Past this age the page is stale (the collect schedule's overdue threshold): its script shows a banner.
    pub stale_after_seconds: i64,
    /// The newest runs of `collect`, `external` and `backup`, newest first; runs that found nothing to do are left out.
    pub runs: Vec<RunEntry>,
    pub sets: Vec<SetTrend>,
    pub destinations: Vec<DriveHistory>,
}

/// One run, as the strip shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    pub command: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub exit: u8,
    pub outcome: RunOutcome,
    /// Its error, or why no drive was there (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Ok,
    Warning,
    Failed,
    /// The external phase was due and no drive was present (exit 5, or a `backup` that reported it).
    MissingDrive,
    /// Another run held the lock (exit 4): nothing was done, nothing failed.
    Locked,
    /// Stopped by SIGINT or SIGTERM (exit 130, 143): the next run resumes.
    Interrupted,
}

/// One set over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetTrend {
    pub set: String,
    /// Its sources (expanded), for the restore commands.
    pub sources: Vec<PathBuf>,
    /// Restore points that exist now: snapshots under the backup root.
    pub local_restore_points: usize,
    /// ... and verified backups holding this set on the drives present now.
    pub drive_restore_points: usize,
    /// The newest snapshots, newest first.
    pub snapshots: Vec<SnapshotPoint>,
    /// Runs since the newest complete snapshot in which this set failed, newest first.
    pub failures: Vec<Failure>,
    /// Collect is due now.
    pub due: bool,
    /// When collect becomes due, when it is not due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<FixedOffset>>,
    /// Past this age the newest complete snapshot is overdue.
    pub overdue_after_seconds: i64,
}

/// One snapshot, as the sparkline draws it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    pub name: String,
    pub time: DateTime<FixedOffset>,
    pub complete: bool,
    pub full: bool,
    /// No earlier snapshot to hard-link from: everything was copied.
    pub first: bool,
    pub files: u64,
    /// The size of everything in it (most of it shared with the previous snapshot).
    pub bytes: u64,
    /// New bytes: what it copied; the rest is hard-linked, so the sum of these is what the snapshots take.
    pub copied_bytes: u64,
    /// Copied far more than its neighbours ([`OUTLIER_FACTOR`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
}

/// A run in which a set failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub command: String,
    pub finished: DateTime<FixedOffset>,
    pub message: String,
}

/// One destination's backups, when it is present (from each `backup.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriveHistory {
    pub name: String,
    pub present: bool,
    /// About what the next backup needs: the newest backup's size, else the snapshots'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_bytes: Option<u64>,
    /// The next backup fits in the free space (present drives whose need is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fits: Option<bool>,
    /// Past this age its newest backup is overdue (none for `always` and `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_after_seconds: Option<i64>,
    /// Verified backups, newest first.
    pub backups: Vec<DriveBackup>,
}

/// A verified backup on a drive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriveBackup {
    pub stamp: String,
    pub time: DateTime<FixedOffset>,
    pub bytes: u64,
    /// The sets it holds and the snapshot of each.
    pub sets: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// The history of the status report (`due` is the report's, for `now`).
pub fn build(facts: &Facts, settings: &Settings, due: &Due) -> History {
    let limit = facts.history;
    let collect_overdue = Period::from(settings.schedule.incremental).overdue_after();
    let runs = facts
        .runs
        .recent
        .iter()
        .take(limit)
        .map(run_entry)
        .collect();
    let sets = facts
        .sets
        .iter()
        .map(|s| {
            let since = s.newest_complete.as_ref().map(|c| c.finished);
            let sources = settings
                .set(&s.set)
                .map(|c| c.sources.iter().map(|p| p.path.clone()).collect())
                .unwrap_or_default();
            let set_due = due.sets.iter().find(|d| d.set == s.set);
            SetTrend {
                set: s.set.clone(),
                sources,
                local_restore_points: s.count,
                drive_restore_points: facts
                    .destinations
                    .iter()
                    .filter_map(|d| d.listing.as_ref())
                    .flat_map(|l| &l.backups)
                    .filter(|b| b.good() && b.sets.iter().any(|(set, _)| *set == s.set))
                    .count(),
                snapshots: points(&s.recent),
                failures: facts
                    .runs
                    .recent
                    .iter()
                    .filter(|r| since.is_none_or(|t| r.finished > t))
                    .filter_map(|r| {
                        set_failure(r, &s.set).map(|message| Failure {
                            command: r.command.clone(),
                            finished: r.finished,
                            message,
                        })
                    })
                    .collect(),
                due: set_due.is_some_and(|d| d.collect),
                next: set_due.and_then(|d| d.next),
                overdue_after_seconds: collect_overdue.num_seconds(),
            }
        })
        .collect();
    let external_overdue = external_period(settings.schedule.external).map(|p| p.overdue_after());
    let destinations = facts
        .destinations
        .iter()
        .map(|d| {
            let needed = super::gather::needed_on(facts, d);
            let free = match &d.presence {
                Some(Presence::Present(info)) => Some(info.free_bytes),
                _ => None,
            };
            DriveHistory {
                name: d.settings.name.clone(),
                present: d.is_present(),
                needed_bytes: needed,
                fits: free.zip(needed).map(|(f, n)| f >= n),
                overdue_after_seconds: external_overdue.map(|o| o.num_seconds()),
                backups: d
                    .listing
                    .as_ref()
                    .map(|l| {
                        l.backups
                            .iter()
                            .rev()
                            .map(|b| DriveBackup {
                                stamp: b.stamp.clone(),
                                time: b.started,
                                bytes: b.bytes,
                                sets: b.sets.clone(),
                                encrypted: b.encryption.is_some(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    History {
        host: facts.host.clone(),
        config: match &settings.config_source {
            crate::config::load::ConfigSource::File(p) => Some(p.clone()),
            crate::config::load::ConfigSource::BuiltIn => None,
        },
        limit,
        stale_after_seconds: collect_overdue.num_seconds(),
        runs,
        sets,
        destinations,
    }
}

/// The snapshots as points, outliers flagged: a snapshot that copied more than [`OUTLIER_FACTOR`] times the median of
/// the others (first snapshots, which copy everything, aside) and at least [`OUTLIER_FLOOR`] more than it.
pub fn points(recent: &[SnapshotFacts]) -> Vec<SnapshotPoint> {
    let mut copied: Vec<u64> = recent
        .iter()
        .filter(|s| !s.first)
        .map(|s| s.transferred_bytes)
        .collect();
    copied.sort_unstable();
    let median = copied.get(copied.len() / 2).copied().unwrap_or(0);
    recent
        .iter()
        .map(|s| SnapshotPoint {
            name: s.name.clone(),
            time: s.started,
            complete: s.complete,
            full: s.full,
            first: s.first,
            files: s.files,
            bytes: s.total_bytes,
            copied_bytes: s.transferred_bytes,
            outlier: !s.first
                && copied.len() >= 3
                && s.transferred_bytes > median.saturating_mul(OUTLIER_FACTOR)
                && s.transferred_bytes - median >= OUTLIER_FLOOR,
        })
        .collect()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// A run record as the strip shows it.
pub fn run_entry(r: &RunRecord) -> RunEntry {
    let missing = r
        .sets
        .get("missing_media")
        .and_then(|m| m.as_str())
        .map(first_line);
    let (outcome, message) = match r.exit {
        4 => (RunOutcome::Locked, r.error.as_deref().map(first_line)),
        130 | 143 => (
            RunOutcome::Interrupted,
            r.interrupted
                .clone()
                .or_else(|| r.error.as_deref().map(first_line)),
        ),
        5 => (RunOutcome::MissingDrive, r.error.as_deref().map(first_line)),
        0 | 3 if missing.is_some() => (RunOutcome::MissingDrive, missing),
        0 => (RunOutcome::Ok, None),
        3 => (RunOutcome::Warning, r.error.as_deref().map(first_line)),
        _ => (RunOutcome::Failed, r.error.as_deref().map(first_line)),
    };
    RunEntry {
        command: r.command.clone(),
        started: r.started,
        finished: r.finished,
        exit: r.exit,
        outcome,
        message,
    }
}

/// Why `set` failed in this run, if it did: its collect failed or was refused, or a `collect` or `backup` run failed
/// as a whole before any set ran.
pub fn set_failure(r: &RunRecord, set: &str) -> Option<String> {
    let entries: Vec<&serde_json::Value> = match r.command.as_str() {
        "collect" => r
            .sets
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        "backup" => r
            .sets
            .get("collect")
            .and_then(|c| c.as_array())
            .map(|reports| {
                reports
                    .iter()
                    .filter_map(|c| c.get("sets").and_then(|s| s.as_array()))
                    .flatten()
                    .collect()
            })
            .unwrap_or_default(),
        _ => return None,
    };
    for e in &entries {
        if e.get("set").and_then(|s| s.as_str()) != Some(set) {
            continue;
        }
        let status = e.get("status").and_then(|s| s.as_str()).unwrap_or("");
        if matches!(status, "failed" | "refused") {
            let why = e
                .get("error")
                .and_then(|m| m.as_str())
                .map(first_line)
                .unwrap_or_else(|| status.to_string());
            return Some(format!("collect {status}: {why}"));
        }
        return None;
    }
    // A whole phase step that failed (`backup`'s problems), or a run that ended before any set.
    if let Some(problems) = r.sets.get("problems").and_then(|p| p.as_array()) {
        for p in problems {
            let phase = p.get("phase").and_then(|v| v.as_str());
            let subject = p.get("subject").and_then(|v| v.as_str()).unwrap_or("");
            if phase == Some("collect") && subject.split(", ").any(|s| s == set) {
                return p.get("message").and_then(|m| m.as_str()).map(first_line);
            }
        }
    }
    if matches!(r.exit, 1 | 2) && entries.is_empty() {
        return r.error.as_deref().map(first_line);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn record(command: &str, exit: u8, error: Option<&str>, sets: serde_json::Value) -> RunRecord {
        RunRecord {
            finished: at("2025-04-10T03:05:00+00:00"),
            error: error.map(String::from),
            ..crate::runlog::tests::record_at(command, at("2025-04-10T03:00:00+00:00"), exit, sets)
        }
    }

    #[test]
    fn runs_are_classified_for_the_strip() {
        let cases = [
            (
                record("backup", 0, None, serde_json::json!({})),
                RunOutcome::Ok,
                None,
            ),
            (
                record("collect", 3, None, serde_json::json!([])),
                RunOutcome::Warning,
                None,
            ),
            (
                record("collect", 1, Some("boom\nmore"), serde_json::json!([])),
                RunOutcome::Failed,
                Some("boom"),
            ),
            (
                record("backup", 2, Some("bad config"), serde_json::json!({})),
                RunOutcome::Failed,
                Some("bad config"),
            ),
            (
                record(
                    "external",
                    5,
                    Some("no destination"),
                    serde_json::json!(null),
                ),
                RunOutcome::MissingDrive,
                Some("no destination"),
            ),
            (
                record(
                    "backup",
                    0,
                    None,
                    serde_json::json!({ "nothing_due": true, "missing_media": "due\nT9: not mounted" }),
                ),
                RunOutcome::MissingDrive,
                Some("due"),
            ),
            (
                record("backup", 4, Some("locked"), serde_json::json!({})),
                RunOutcome::Locked,
                Some("locked"),
            ),
        ];
        for (r, outcome, message) in cases {
            let e = run_entry(&r);
            assert_eq!(
                (e.outcome, e.message.as_deref()),
                (outcome, message),
                "{r:?}"
            );
        }
        assert!(gather_is_idle(&record(
            "backup",
            0,
            None,
            serde_json::json!({ "nothing_due": true, "missing_media": null })
        )));
        assert!(!gather_is_idle(&record(
            "backup",
            0,
            None,
            serde_json::json!({ "nothing_due": true, "missing_media": "x" })
        )));
        assert!(!gather_is_idle(&record(
            "backup",
            0,
            None,
            serde_json::json!({ "collect": [] })
        )));
    }

    fn gather_is_idle(r: &RunRecord) -> bool {
        super::super::gather::is_idle(r)
    }

    #[test]
    fn a_set_fails_in_its_own_entry_a_backup_problem_or_a_whole_run() {
        let collect = record(
            "collect",
            1,
            Some("x"),
            serde_json::json!([ { "set": "data", "status": "failed", "error": "rsync exited 12" },
                 { "set": "config", "status": "complete" } ]),
        );
        assert_eq!(
            set_failure(&collect, "data").as_deref(),
            Some("collect failed: rsync exited 12")
        );
        assert_eq!(set_failure(&collect, "config"), None);
        let backup = record(
            "backup",
            1,
            None,
            serde_json::json!({ "collect": [ { "sets": [ { "set": "data", "status": "refused", "error": "source shrank" } ] } ],
                 "problems": [ { "phase": "collect", "subject": "config, other", "exit": 1, "message": "rsync missing" } ] }),
        );
        assert_eq!(
            set_failure(&backup, "data").as_deref(),
            Some("collect refused: source shrank")
        );
        assert_eq!(
            set_failure(&backup, "config").as_deref(),
            Some("rsync missing")
        );
        assert_eq!(
            set_failure(&backup, "other").as_deref(),
            Some("rsync missing")
        );
        let whole = record(
            "backup",
            1,
            Some("cannot lock\nthe root"),
            serde_json::json!({ "due": {} }),
        );
        assert_eq!(set_failure(&whole, "data").as_deref(), Some("cannot lock"));
        let external = record("external", 1, Some("drive failed"), serde_json::json!(null));
        assert_eq!(
            set_failure(&external, "data"),
            None,
            "a drive's failure is not a set's"
        );
        assert_eq!(
            set_failure(&record("collect", 0, None, serde_json::json!([])), "data"),
            None
        );
    }

    fn snap(first: bool, copied: u64) -> SnapshotFacts {
        let t = at("2025-04-10T03:15:00+00:00");
        SnapshotFacts {
            name: "s".into(),
            started: t,
            finished: t,
            complete: true,
            full: false,
            first,
            files: 1,
            total_bytes: 100 << 30,
            transferred_bytes: copied,
            linked_bytes: 0,
            unreadable: 0,
            warnings: 0,
            missing_sources: vec![],
            incompleteness: String::new(),
        }
    }

    #[test]
    fn outliers_are_jumps_far_above_the_median() {
        const M: u64 = 1 << 20;
        let flags =
            |s: &[SnapshotFacts]| -> Vec<bool> { points(s).iter().map(|p| p.outlier).collect() };
        // A first snapshot copies everything: never an outlier, and not part of the median.
        assert_eq!(
            flags(&[
                snap(false, 100 * M),
                snap(false, 900 * M),
                snap(false, 110 * M),
                snap(false, 90 * M),
                snap(true, 50_000 * M)
            ]),
            [false, true, false, false, false]
        );
        // Four times a small median but only a few MiB more: not flagged.
        assert_eq!(
            flags(&[
                snap(false, 9 * M),
                snap(false, M),
                snap(false, M),
                snap(false, M)
            ]),
            [false; 4]
        );
        // Too few snapshots to judge.
        assert_eq!(
            flags(&[snap(false, 900 * M), snap(false, M)]),
            [false, false]
        );
    }
}
