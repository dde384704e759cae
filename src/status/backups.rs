//! A destination's backups as `status` shows them, for a drive and a bucket alike: its newest ([`ExternalStatus`],
//! from the listing or the run log), its restore points with their chains ([`RestorePoint`]), the recent average
//! size and how many more fit, and the restore points' lines of text.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::gather;
use crate::stdx;
use crate::stdx::table;

/// How many of the newest backups the recent average size is taken over.
pub const RECENT: usize = 5;

/// The NEWEST and AGE cells of a destination's row in the text: the stamp (with where it is known from, or that it
/// is encrypted) and its age; "unknown" when none is known and the destination could not be looked at, else "none".
pub fn newest_cells(newest: Option<&ExternalStatus>, unseen: bool) -> (String, String) {
    let Some(n) = newest else {
        let word = if unseen { "unknown" } else { "none" };
        return (word.to_string(), "-".to_string());
    };
    let stamp = if n.known_from == KnownFrom::RunLog {
        format!("{} (run log)", n.stamp)
    } else if n.encrypted {
        format!("{} (age)", n.stamp)
    } else {
        n.stamp.clone()
    };
    (
        stamp,
        stdx::age_short(chrono::TimeDelta::seconds(n.age_seconds)),
    )
}

/// One verified backup on a drive and the chain it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    pub stamp: String,
    pub time: DateTime<FixedOffset>,
    /// `full`, `incremental`, or `images` (only `system/`, from `dbackup image create`).
    pub kind: String,
    /// The backup an incremental is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The full its chain starts at (itself for a full).
    pub chain: String,
    /// Its chain is not whole (a backup it depends on is missing, unverified, damaged or broken itself): this
    /// backup cannot be restored whole and is no restore point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broken: bool,
    /// It is damaged: `restore --verify` found it so, or its files are missing or not the size its `backup.json`
    /// records (a drive's by an `lstat` each, a bucket's objects by its listing). It is no restore point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub damaged: bool,
    /// Why it is damaged or broken, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Every file it holds on the drive.
    pub bytes: u64,
}

/// The verified backups of a drive (oldest first) as restore points, each with its chain followed through `base`
/// within the listing (bounded by the listing's length, so a loop in hostile metadata ends); the damaged and broken
/// ones are marked, and are no restore points ([`RestorePoint::good`]).
pub fn restore_points(backups: &[gather::BackupFacts]) -> Vec<RestorePoint> {
    let find = |stamp: &str| backups.iter().find(|b| b.stamp == stamp);
    backups
        .iter()
        .map(|b| {
            let mut chain = b.stamp.clone();
            let mut broken = false;
            let mut at = b;
            for _ in 0..backups.len() {
                let Some(base) = at.base.as_deref() else {
                    break;
                };
                match find(base) {
                    Some(next) => {
                        chain = next.stamp.clone();
                        at = next;
                    }
                    None => {
                        broken = true;
                        chain = base.to_string();
                        break;
                    }
                }
            }
            RestorePoint {
                stamp: b.stamp.clone(),
                time: b.started,
                kind: if b.image_only {
                    "images"
                } else if b.incremental {
                    "incremental"
                } else {
                    "full"
                }
                .into(),
                base: b.base.clone(),
                chain,
                broken: broken || b.broken.is_some(),
                damaged: b.damaged.is_some(),
                problem: b.damaged.clone().or_else(|| b.broken.clone()),
                bytes: b.drive_bytes,
            }
        })
        .collect()
}

impl RestorePoint {
    /// It can be restored: neither damaged nor broken.
    pub fn good(&self) -> bool {
        !self.damaged && !self.broken
    }
}

/// The newest backup the run log names on a drive or bucket that was not listed, found damaged by `restore --verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDamaged {
    pub stamp: String,
    pub problem: String,
}

impl LogDamaged {
    /// From the facts' (stamp, what was found): [`gather::DestinationFacts::log_damaged`],
    /// [`gather::CloudFacts::log_damaged`].
    pub(crate) fn of(facts: Option<&(String, String)>) -> Option<Self> {
        facts.map(|(stamp, problem)| LogDamaged {
            stamp: stamp.clone(),
            problem: problem.clone(),
        })
    }
}

/// The average size of the newest [`RECENT`] backups holding sets, none without one.
pub fn recent_average(points: &[RestorePoint]) -> Option<u64> {
    let recent: Vec<u64> = points
        .iter()
        .rev()
        .filter(|p| p.kind != "images")
        .take(RECENT)
        .map(|p| p.bytes)
        .collect();
    let n = recent.len() as u64;
    (n > 0).then(|| recent.iter().fold(0u64, |t, b| t.saturating_add(*b)) / n)
}

/// "; <how> 2 backups of another config on the <place> (or of this config's sets from before ...; not counted
/// here)", or nothing when there are none.
pub fn others_words(others: usize, how: &str, place: &str) -> String {
    match others {
        0 => String::new(),
        n => format!(
            "; {how} {} of another config on the {place} (or of this config's sets from before one was renamed or its \
             sources changed; not counted here)",
            stdx::counted(n as u64, "backup", "backups")
        ),
    }
}

/// For `skip_serializing_if`: a count of none is left out of the JSON.
pub fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How many backups of `average` bytes fit in `free` (none when the average is unknown or zero).
pub fn fit_more(free: Option<u64>, average: Option<u64>) -> Option<u64> {
    Some(free? / average.filter(|a| *a > 0)?)
}

/// The newest verified backup of a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalStatus {
    pub stamp: String,
    pub time: DateTime<FixedOffset>,
    pub age_seconds: i64,
    /// `drive` (its `backup.json`) or `run_log` (the drive is not here to read).
    pub known_from: KnownFrom,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The sets it holds, with their snapshots (from the drive only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<String>,
    /// Encrypted with age (from the drive only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnownFrom {
    Drive,
    RunLog,
}

/// A destination's newest backup ([`newest_backup`]) and its restore points (none when it was not looked at).
pub fn newest_and_points(
    listing: Option<&gather::ListingFacts>,
    from_log: Option<&crate::schedule::Seen>,
    now: DateTime<FixedOffset>,
) -> (Option<ExternalStatus>, Vec<RestorePoint>) {
    let points = listing
        .map(|l| restore_points(&l.backups))
        .unwrap_or_default();
    (newest_backup(listing, from_log, now), points)
}

/// A destination's newest backup: from its listing when it was looked at, else what the run log says was written.
pub fn newest_backup(
    listing: Option<&gather::ListingFacts>,
    from_log: Option<&crate::schedule::Seen>,
    now: DateTime<FixedOffset>,
) -> Option<ExternalStatus> {
    let age = |t: DateTime<FixedOffset>| now.signed_duration_since(t).num_seconds();
    match listing {
        Some(l) => l.newest.as_ref().map(|b| ExternalStatus {
            stamp: b.stamp.clone(),
            time: b.started,
            age_seconds: age(b.started),
            known_from: KnownFrom::Drive,
            bytes: Some(b.bytes),
            sets: b.sets.iter().map(|(_, snap)| snap.clone()).collect(),
            encrypted: b.encryption.is_some(),
        }),
        None => from_log.map(|s| ExternalStatus {
            stamp: s.name.clone(),
            time: s.time,
            age_seconds: age(s.time),
            known_from: KnownFrom::RunLog,
            bytes: None,
            sets: vec![],
            encrypted: false,
        }),
    }
}

/// A destination's restore points under a heading (`NAME: N restore points` and `after`), each with its chain, one
/// line each (`place`: where a broken chain's base is missing).
pub fn render_points(
    out: &mut String,
    name: &str,
    after: &str,
    points: &[RestorePoint],
    place: &str,
) {
    let good = points.iter().filter(|p| p.good()).count() as u64;
    let damaged = points.iter().filter(|p| p.damaged).count() as u64;
    let broken = points.iter().filter(|p| p.broken && !p.damaged).count() as u64;
    let mut bad = Vec::new();
    if damaged > 0 {
        bad.push(stdx::counted(damaged, "damaged backup", "damaged backups"));
    }
    if broken > 0 {
        bad.push(stdx::counted(broken, "broken backup", "broken backups"));
    }
    let bad = match bad.is_empty() {
        true => String::new(),
        false => format!(" (and {}, not counted)", bad.join(" and ")),
    };
    let _ = writeln!(
        out,
        "\n{name}: {}{bad}{after}",
        stdx::counted(good, "restore point", "restore points")
    );
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let chain = match (&p.base, p.broken, &p.problem) {
                _ if p.damaged => format!("DAMAGED: {}", p.problem.as_deref().unwrap_or("?")),
                (_, true, Some(why)) => format!("chain of {}: BROKEN, {why}", p.chain),
                (_, true, None) => format!(
                    "chain of {}: BROKEN, its base is not on the {place}",
                    p.chain
                ),
                (Some(base), false, _) => format!("on {base}, chain of {}", p.chain),
                (None, false, _) => String::new(),
            };
            vec![p.stamp.clone(), p.kind.clone(), stdx::bytes(p.bytes), chain]
        })
        .collect();
    out.push_str(&table(&rows));
}
