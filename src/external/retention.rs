//! Retention on a drive as a pure function: (backups, keep count, now) -> keep or remove, each with its reasons.
//!
//! Rules, in the order they are checked (a backup is kept when any keeping rule applies; every reason is given):
//! - Only verified backups (a directory named exactly a stamp, holding `backup.json` with `verified: true`) are
//!   judged. A stamp-named directory without usable metadata is someone else's (or damaged): never removed.
//! - The newest `keep` verified backups are kept; the newest verified one is kept whatever `keep` says.
//! - The newest verified backup holding each set is kept, so that a set which stopped being exported (its snapshots
//!   failed for a while) still has its last copy on the drive.
//! - A backup newer than `now` (a clock that went back) and the target of `latest` are kept.
//! - Everything else that is verified is removed.
//!
//! The caller applies this only after the new backup was verified and renamed into place.

use std::collections::BTreeSet;

use chrono::NaiveDateTime;

use crate::retention::Decision;

/// What retention needs to know about one backup on the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub name: String,
    pub time: NaiveDateTime,
    /// Carries readable, verified dbackup metadata.
    pub verified: bool,
    /// The sets it holds (from its metadata).
    pub sets: Vec<String>,
    /// `latest`/`LATEST` names it.
    pub latest: bool,
}

/// Decides, for every backup on a drive, whether to keep it. The result is ordered newest first.
pub fn decide(backups: &[BackupInfo], keep: u32, now: NaiveDateTime) -> Vec<Decision> {
    let mut order: Vec<&BackupInfo> = backups.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];

    let judged: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].verified && order[i].time <= now)
        .collect();
    for (rank, &i) in judged.iter().enumerate() {
        if rank == 0 {
            reasons[i].push("newest verified backup".to_string());
        }
        if (rank as u64) < u64::from(keep) {
            reasons[i].push(format!("one of the newest {keep} verified"));
        }
    }
    let mut sets_seen: BTreeSet<&str> = BTreeSet::new();
    for &i in &judged {
        for set in &order[i].sets {
            if sets_seen.insert(set.as_str()) && reasons[i].is_empty() {
                reasons[i].push(format!("newest backup holding set {set:?}"));
            }
        }
    }
    for (i, b) in order.iter().enumerate() {
        if !b.verified {
            reasons[i]
                .push("no verified dbackup metadata: not dbackup's to judge, never touched".into());
        } else if b.time > now {
            reasons[i].push(format!(
                "newer than now ({now}): the clock may have gone back"
            ));
        }
        if b.latest {
            reasons[i].push("target of latest".into());
        }
    }
    order
        .iter()
        .zip(reasons)
        .map(|(b, mut why)| {
            let keep_it = !why.is_empty();
            if !keep_it {
                why.push(format!("older than the newest {keep} verified"));
            }
            Decision {
                name: b.name.clone(),
                keep: keep_it,
                reasons: why,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::parse_stamp;

    fn b(name: &str, verified: bool, sets: &[&str]) -> BackupInfo {
        BackupInfo {
            name: name.into(),
            time: parse_stamp(name).unwrap(),
            verified,
            sets: sets.iter().map(|s| s.to_string()).collect(),
            latest: false,
        }
    }

    fn day(d: u32) -> String {
        format!("2025-04-{d:02}-000000")
    }

    /// (name, keep, first reason) newest first.
    fn run(backups: &[BackupInfo], keep: u32, now: &str) -> Vec<(String, bool, String)> {
        decide(backups, keep, parse_stamp(now).unwrap())
            .into_iter()
            .map(|d| (d.name, d.keep, d.reasons.join("; ")))
            .collect()
    }

    #[test]
    fn table() {
        let ds = ["data"];
        let both = ["data", "config"];
        struct Case {
            what: &'static str,
            backups: Vec<BackupInfo>,
            keep: u32,
            now: String,
            /// Names removed, oldest first.
            removed: Vec<String>,
        }
        let seven: Vec<BackupInfo> = (1..=7).map(|d| b(&day(d), true, &both)).collect();
        let cases = vec![
            Case {
                what: "seven verified, keep five: the two oldest go",
                backups: seven.clone(),
                keep: 5,
                now: day(7),
                removed: vec![day(1), day(2)],
            },
            Case {
                what: "fewer than keep: nothing goes",
                backups: seven[..3].to_vec(),
                keep: 5,
                now: day(7),
                removed: vec![],
            },
            Case {
                what: "keep 1 keeps only the newest",
                backups: seven[..3].to_vec(),
                keep: 1,
                now: day(7),
                removed: vec![day(1), day(2)],
            },
            Case {
                what: "directories without verified metadata never count and never go",
                backups: vec![
                    b(&day(1), false, &[]),
                    b(&day(2), true, &both),
                    b(&day(3), false, &[]),
                    b(&day(4), true, &both),
                    b(&day(5), true, &both),
                ],
                keep: 1,
                now: day(9),
                removed: vec![day(2), day(4)],
            },
            Case {
                what: "the last copy of a set that stopped being exported stays",
                backups: vec![
                    b(&day(1), true, &both),
                    b(&day(2), true, &both),
                    b(&day(3), true, &ds),
                    b(&day(4), true, &ds),
                    b(&day(5), true, &ds),
                ],
                keep: 2,
                now: day(9),
                removed: vec![day(1), day(3)],
            },
            Case {
                what: "a backup from the future (clock went back) is kept and not counted",
                backups: vec![
                    b(&day(1), true, &both),
                    b(&day(2), true, &both),
                    b(&day(20), true, &both),
                ],
                keep: 1,
                now: day(3),
                removed: vec![day(1)],
            },
            Case {
                what: "nothing verified: nothing goes",
                backups: vec![b(&day(1), false, &[]), b(&day(2), false, &[])],
                keep: 1,
                now: day(3),
                removed: vec![],
            },
        ];
        for c in cases {
            let got = run(&c.backups, c.keep, &c.now);
            let mut removed: Vec<String> = got
                .iter()
                .filter(|(_, keep, _)| !keep)
                .map(|(n, ..)| n.clone())
                .collect();
            removed.reverse();
            assert_eq!(removed, c.removed, "{}: {got:#?}", c.what);
            assert_eq!(
                got.len(),
                c.backups.len(),
                "{}: every backup decided",
                c.what
            );
        }
    }

    #[test]
    fn reasons_say_why() {
        let mut backups: Vec<BackupInfo> = (1..=4).map(|d| b(&day(d), true, &["data"])).collect();
        backups[1].latest = true;
        backups.push(b(&day(5), false, &[]));
        let got = run(&backups, 2, &day(9));
        assert_eq!(
            got,
            [
                (
                    day(5),
                    true,
                    "no verified dbackup metadata: not dbackup's to judge, never touched".into()
                ),
                (
                    day(4),
                    true,
                    "newest verified backup; one of the newest 2 verified".into()
                ),
                (day(3), true, "one of the newest 2 verified".into()),
                (day(2), true, "target of latest".into()),
                (day(1), false, "older than the newest 2 verified".into()),
            ]
        );
    }
}
