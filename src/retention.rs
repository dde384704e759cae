//! Retention as a pure function: (snapshots, policy, the sources missing now, now) -> keep or remove, each with its
//! reasons. Does no IO.
//!
//! Semantics (restic-like):
//! - Snapshots count towards the policy when they are complete, or incomplete only because a source was missing
//!   (the sources they hold are whole copies). `last: N` keeps the newest N; `hourly`/`daily`/`weekly`/`monthly`/
//!   `yearly: N` keep the newest snapshot of each of the N most recent hours/days/ISO weeks/months/years that have
//!   one. A snapshot is kept when any rule keeps it; every reason is given.
//! - Retention counts per source: while a configured source is missing, the newest snapshot that holds it is never
//!   removed, and the policy is applied again to the snapshots that hold it (its history stays as it was).
//! - Never removed: the newest complete snapshot, the target of `<set>-latest`, anything newer than `now`
//!   (a clock that went back), and snapshots without dbackup metadata (not ours to judge).
//! - A snapshot left incomplete by unreadable files is removed once a newer snapshot that counts exists, and kept
//!   otherwise.

use std::path::PathBuf;

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

use crate::config::RetentionPolicy;
use crate::snapshot::SnapshotState;

/// What retention needs to know about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub time: NaiveDateTime,
    pub state: SnapshotState,
    /// `<set>-latest` points at it.
    pub latest: bool,
    /// The sources (expanded paths, as configured) whose data it holds: those present when it was made.
    pub holds: Vec<PathBuf>,
    /// Some files could not be read when it was made (rsync exit 23).
    pub unreadable: bool,
}

impl SnapshotInfo {
    /// Whether it counts towards the policy: complete, or incomplete only because a source was missing.
    fn counts(&self) -> bool {
        match self.state {
            SnapshotState::Complete => true,
            SnapshotState::Incomplete => !self.unreadable,
            SnapshotState::Unknown => false,
        }
    }
}

/// Keep or remove one snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// A snapshot (collect) or a drive's or bucket's backup (external) that was removed, with the reasons: what the
/// run reports say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub name: String,
    pub reasons: Vec<String>,
}

/// Why a snapshot without dbackup metadata is kept.
pub const NO_METADATA: &str =
    "no dbackup metadata: not judged; remove it by hand if it is not needed";

/// The decisions a plan lists one by one: every one but those kept for `unjudged` (why a snapshot or backup without
/// metadata is kept) past the first [`stdx::NAMED`](crate::stdx::NAMED) of them; and how many of those it leaves out.
pub fn listed<'d>(
    decisions: impl IntoIterator<Item = &'d Decision>,
    unjudged: &str,
) -> (Vec<&'d Decision>, usize) {
    let mut seen = 0;
    let listed = decisions
        .into_iter()
        .filter(|d| {
            if !d.reasons.iter().any(|r| r == unjudged) {
                return true;
            }
            seen += 1;
            seen <= crate::stdx::NAMED
        })
        .collect();
    (listed, seen.saturating_sub(crate::stdx::NAMED))
}

/// The names `decisions` remove, in their order.
pub fn removed(decisions: &[Decision]) -> impl Iterator<Item = &str> {
    decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.name.as_str())
}

/// A short description of a policy: `last 7, daily 14`.
pub fn describe(policy: &RetentionPolicy) -> String {
    let parts: Vec<String> = rules(policy)
        .into_iter()
        .filter_map(|(rule, n)| n.map(|n| format!("{} {n}", rule.name())))
        .collect();
    if parts.is_empty() {
        "no rule".into()
    } else {
        parts.join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The bucket a time falls in, as a label; `None` for `last` (every snapshot is its own bucket).
    fn bucket(self, t: NaiveDateTime) -> Option<String> {
        match self {
            Rule::Last => None,
            Rule::Hourly => Some(format!("{} {:02}:00", t.date(), t.hour())),
            Rule::Daily => Some(t.date().to_string()),
            Rule::Weekly => {
                let w = t.iso_week();
                Some(format!("{}-W{:02}", w.year(), w.week()))
            }
            Rule::Monthly => Some(format!("{}-{:02}", t.year(), t.month())),
            Rule::Yearly => Some(t.year().to_string()),
        }
    }
}

fn rules(p: &RetentionPolicy) -> [(Rule, Option<u32>); 6] {
    [
        (Rule::Last, p.last),
        (Rule::Hourly, p.hourly),
        (Rule::Daily, p.daily),
        (Rule::Weekly, p.weekly),
        (Rule::Monthly, p.monthly),
        (Rule::Yearly, p.yearly),
    ]
}

/// Decides, for every snapshot of one set, whether to keep it; `missing` are the set's sources missing now.
/// The result is ordered newest first.
pub fn decide(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    missing: &[PathBuf],
    now: NaiveDateTime,
) -> Vec<Decision> {
    let mut order: Vec<&SnapshotInfo> = snapshots.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let mut verdicts: Vec<(bool, Vec<String>)> = vec![(false, Vec::new()); order.len()];

    let is_future = |s: &SnapshotInfo| s.time > now;
    // Snapshots that the policy judges, newest first (by index into `order`).
    let counted: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].counts() && !is_future(order[i]))
        .collect();
    let newest_complete = counted
        .iter()
        .copied()
        .find(|&i| order[i].state == SnapshotState::Complete);

    for (i, s) in order.iter().enumerate() {
        if is_future(s) {
            mark(
                &mut verdicts,
                i,
                format!("newer than now ({now}): the clock may have gone back"),
            );
        }
        if s.latest {
            mark(&mut verdicts, i, "target of latest".into());
        }
        if s.state == SnapshotState::Unknown {
            mark(&mut verdicts, i, NO_METADATA.into());
        }
    }
    if let Some(i) = newest_complete {
        mark(&mut verdicts, i, "newest complete snapshot".into());
    }

    if !rules(policy).iter().any(|(_, n)| n.is_some()) {
        for &i in &counted {
            mark(
                &mut verdicts,
                i,
                "no retention rule: everything is kept".into(),
            );
        }
    }
    apply_policy(&order, &counted, policy, &mut verdicts, "");

    // Per source: while a source is missing, its newest copy stays, and so does its history under the policy.
    for source in missing {
        let shown = source.display();
        let holds = |i: &usize| order[*i].holds.contains(source) && !is_future(order[*i]);
        if let Some(i) = (0..order.len())
            .filter(holds)
            .find(|&i| order[i].state != SnapshotState::Unknown)
        {
            mark(
                &mut verdicts,
                i,
                format!("newest copy of {shown}, which is missing now"),
            );
        }
        let view: Vec<usize> = counted.iter().copied().filter(holds).collect();
        apply_policy(
            &order,
            &view,
            policy,
            &mut verdicts,
            &format!("for {shown}: "),
        );
    }

    let newest_counted = counted.first().map(|&i| order[i]);
    for (i, s) in order.iter().enumerate() {
        if verdicts[i].0 {
            continue;
        }
        let reason = match (s.counts(), newest_counted) {
            (true, _) => format!("not kept by the policy ({})", describe(policy)),
            (false, Some(n)) if s.time < n.time => {
                let which = if n.state == SnapshotState::Complete {
                    "the complete "
                } else {
                    ""
                };
                format!(
                    "incomplete (some files were not copied) and older than {which}{}",
                    n.name
                )
            }
            (false, _) => {
                mark(
                    &mut verdicts,
                    i,
                    "incomplete, but no newer snapshot copied every file".into(),
                );
                continue;
            }
        };
        verdicts[i].1.push(reason);
    }

    order
        .iter()
        .zip(verdicts)
        .map(|(s, (keep, reasons))| Decision {
            name: s.name.clone(),
            keep,
            reasons,
        })
        .collect()
}

fn mark(verdicts: &mut [(bool, Vec<String>)], i: usize, why: String) {
    verdicts[i].0 = true;
    verdicts[i].1.push(why);
}

/// Applies every rule of `policy` to the snapshots `view` (indexes into `order`, newest first); reasons start with
/// `prefix`.
fn apply_policy(
    order: &[&SnapshotInfo],
    view: &[usize],
    policy: &RetentionPolicy,
    verdicts: &mut [(bool, Vec<String>)],
    prefix: &str,
) {
    let times: Vec<NaiveDateTime> = view.iter().map(|&i| order[i].time).collect();
    for (k, why) in policy_reasons(&times, policy, prefix)
        .into_iter()
        .enumerate()
    {
        for w in why {
            mark(verdicts, view[k], w);
        }
    }
}

/// THE policy logic, shared by local snapshots and drive backups: applies every rule of `policy` to `times` (newest
/// first, only those the policy judges) and returns, for each, the rules that keep it (empty: none does), each
/// reason starting with `prefix`.
pub(crate) fn policy_reasons(
    times: &[NaiveDateTime],
    policy: &RetentionPolicy,
    prefix: &str,
) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new(); times.len()];
    for (rule, n) in rules(policy) {
        let Some(n) = n else { continue };
        let mut used = 0u32;
        let mut last_bucket: Option<String> = None;
        for (i, t) in times.iter().enumerate() {
            if used >= n {
                break;
            }
            match rule.bucket(*t) {
                None => {
                    used += 1;
                    out[i].push(format!("{prefix}last {n}"));
                }
                Some(b) => {
                    if last_bucket.as_ref() == Some(&b) {
                        continue;
                    }
                    used += 1;
                    out[i].push(format!("{prefix}{}: newest of {b}", rule.name()));
                    last_bucket = Some(b);
                }
            }
        }
    }
    out
}

/// Whether `policy` has any rule at all.
pub(crate) fn has_rules(policy: &RetentionPolicy) -> bool {
    rules(policy).iter().any(|(_, n)| n.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SnapshotState::{Complete as C, Incomplete as I, Unknown as U};
    use chrono::NaiveDate;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn snaps(list: &[(&str, SnapshotState)]) -> Vec<SnapshotInfo> {
        list.iter()
            .map(|(t, state)| SnapshotInfo {
                name: format!("s-{}", t.replace([' ', ':'], "-")),
                time: at(t),
                state: *state,
                latest: false,
                holds: vec![PathBuf::from("/a")],
                unreadable: *state == I,
            })
            .collect()
    }

    fn last(n: u32) -> RetentionPolicy {
        RetentionPolicy {
            last: Some(n),
            ..Default::default()
        }
    }

    /// The times (as given) of the snapshots kept, oldest first.
    fn kept(list: &[SnapshotInfo], policy: RetentionPolicy, now: &str) -> Vec<String> {
        let d = decide(list, &policy, &[], at(now));
        let mut out: Vec<String> = list
            .iter()
            .filter(|s| d.iter().any(|x| x.name == s.name && x.keep))
            .map(|s| s.time.format(crate::stdx::MINUTE).to_string())
            .collect();
        out.sort();
        out
    }

    fn daily(n: usize, hour: u32) -> Vec<(String, SnapshotState)> {
        (0..n)
            .map(|d| {
                let t = NaiveDate::from_ymd_opt(2025, 4, 1)
                    .unwrap()
                    .and_hms_opt(hour, 0, 0)
                    .unwrap()
                    + chrono::Duration::days(d as i64);
                (t.format(crate::stdx::MINUTE).to_string(), C)
            })
            .collect()
    }

    #[test]
    // Stays long: a table of cases, one per entry.
    fn table() {
        struct Case {
            name: &'static str,
            snaps: Vec<(String, SnapshotState)>,
            latest: Option<&'static str>,
            policy: RetentionPolicy,
            now: &'static str,
            kept: Vec<&'static str>,
        }
        let s = |v: &[(&str, SnapshotState)]| {
            v.iter()
                .map(|(t, st)| (t.to_string(), *st))
                .collect::<Vec<_>>()
        };
        let nine = daily(9, 3);
        let cases = vec![
            Case {
                name: "nine snapshots, last 7: the two oldest go",
                snaps: nine.clone(),
                latest: Some("2025-04-09 03:00"),
                policy: last(7),
                now: "2025-04-09 04:00",
                kept: vec![
                    "2025-04-03 03:00",
                    "2025-04-04 03:00",
                    "2025-04-05 03:00",
                    "2025-04-06 03:00",
                    "2025-04-07 03:00",
                    "2025-04-08 03:00",
                    "2025-04-09 03:00",
                ],
            },
            Case {
                name: "fewer than N: everything stays",
                snaps: daily(3, 3),
                latest: None,
                policy: last(7),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00", "2025-04-03 03:00"],
            },
            Case {
                name: "empty list",
                snaps: vec![],
                latest: None,
                policy: last(7),
                now: "2025-05-01 00:00",
                kept: vec![],
            },
            Case {
                name: "last 1 keeps only the newest",
                snaps: daily(4, 3),
                latest: None,
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-04 03:00"],
            },
            Case {
                name: "the latest target is kept even when the policy would drop it",
                snaps: daily(4, 3),
                latest: Some("2025-04-01 03:00"),
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-04 03:00"],
            },
            Case {
                name: "incomplete snapshots do not count, and go once a newer complete one exists",
                snaps: s(&[
                    ("2025-04-01 03:00", C),
                    ("2025-04-02 03:00", I),
                    ("2025-04-03 03:00", C),
                    ("2025-04-04 03:00", C),
                ]),
                latest: None,
                policy: last(2),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-03 03:00", "2025-04-04 03:00"],
            },
            Case {
                name: "an incomplete snapshot newer than every complete one stays",
                snaps: s(&[
                    ("2025-04-01 03:00", C),
                    ("2025-04-02 03:00", C),
                    ("2025-04-03 03:00", I),
                ]),
                latest: Some("2025-04-03 03:00"),
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-02 03:00", "2025-04-03 03:00"],
            },
            Case {
                name: "an incomplete snapshot newer than the newest complete one stays when it is not the latest \
                       target either",
                snaps: s(&[
                    ("2025-04-01 03:00", C),
                    ("2025-04-02 03:00", C),
                    ("2025-04-03 03:00", I),
                ]),
                latest: Some("2025-04-02 03:00"),
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-02 03:00", "2025-04-03 03:00"],
            },
            Case {
                name: "exactly N snapshots with last N: all stay",
                snaps: daily(3, 3),
                latest: None,
                policy: last(3),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00", "2025-04-03 03:00"],
            },
            Case {
                name: "a snapshot made exactly now is judged, not kept as newer than now",
                snaps: daily(3, 3),
                latest: None,
                policy: last(1),
                now: "2025-04-03 03:00",
                kept: vec!["2025-04-03 03:00"],
            },
            Case {
                name: "only incomplete snapshots: nothing goes",
                snaps: s(&[("2025-04-01 03:00", I), ("2025-04-02 03:00", I)]),
                latest: None,
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00"],
            },
            Case {
                name: "the newest complete snapshot is kept even with last 0",
                snaps: daily(3, 3),
                latest: None,
                policy: last(0),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-03 03:00"],
            },
            Case {
                name: "snapshots newer than now are never removed and do not count",
                snaps: s(&[
                    ("2025-04-01 03:00", C),
                    ("2025-04-02 03:00", C),
                    ("2025-04-03 03:00", C),
                    ("2025-06-01 03:00", C),
                ]),
                latest: None,
                policy: last(1),
                now: "2025-04-05 00:00",
                kept: vec!["2025-04-03 03:00", "2025-06-01 03:00"],
            },
            Case {
                name: "snapshots without metadata are never removed",
                snaps: s(&[
                    ("2025-04-01 03:00", U),
                    ("2025-04-02 03:00", C),
                    ("2025-04-03 03:00", C),
                ]),
                latest: None,
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-03 03:00"],
            },
            Case {
                name: "daily keeps the newest of each day",
                snaps: s(&[
                    ("2025-04-01 01:00", C),
                    ("2025-04-01 13:00", C),
                    ("2025-04-02 01:00", C),
                    ("2025-04-02 13:00", C),
                    ("2025-04-03 01:00", C),
                ]),
                latest: None,
                policy: RetentionPolicy {
                    daily: Some(2),
                    ..Default::default()
                },
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-02 13:00", "2025-04-03 01:00"],
            },
            Case {
                name: "hourly counts hours that have a snapshot, not clock hours",
                snaps: s(&[
                    ("2025-04-01 01:10", C),
                    ("2025-04-01 01:50", C),
                    ("2025-04-01 05:00", C),
                    ("2025-04-01 09:00", C),
                ]),
                latest: None,
                policy: RetentionPolicy {
                    hourly: Some(2),
                    ..Default::default()
                },
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 05:00", "2025-04-01 09:00"],
            },
            Case {
                name: "weekly uses ISO weeks (Mon 2025-03-31 .. Sun 2025-04-06 is W14)",
                snaps: s(&[
                    ("2025-03-30 03:00", C),
                    ("2025-03-31 03:00", C),
                    ("2025-04-06 03:00", C),
                    ("2025-04-07 03:00", C),
                ]),
                latest: None,
                policy: RetentionPolicy {
                    weekly: Some(2),
                    ..Default::default()
                },
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-06 03:00", "2025-04-07 03:00"],
            },
            Case {
                name: "rules combine: last 2 plus monthly 3 plus yearly 2",
                snaps: s(&[
                    ("2023-12-31 03:00", C),
                    ("2024-11-30 03:00", C),
                    ("2024-12-31 03:00", C),
                    ("2025-01-15 03:00", C),
                    ("2025-01-31 03:00", C),
                    ("2025-02-10 03:00", C),
                    ("2025-02-11 03:00", C),
                    ("2025-02-12 03:00", C),
                ]),
                latest: None,
                policy: RetentionPolicy {
                    last: Some(2),
                    monthly: Some(3),
                    yearly: Some(2),
                    ..Default::default()
                },
                now: "2025-05-01 00:00",
                kept: vec![
                    "2024-12-31 03:00",
                    "2025-01-31 03:00",
                    "2025-02-11 03:00",
                    "2025-02-12 03:00",
                ],
            },
            Case {
                name: "no rule at all keeps everything",
                snaps: daily(3, 3),
                latest: None,
                policy: RetentionPolicy::default(),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00", "2025-04-03 03:00"],
            },
        ];
        for case in cases {
            let refs: Vec<(&str, SnapshotState)> =
                case.snaps.iter().map(|(t, s)| (t.as_str(), *s)).collect();
            let mut list = snaps(&refs);
            if let Some(l) = case.latest {
                list.iter_mut().find(|s| s.time == at(l)).unwrap().latest = true;
            }
            assert_eq!(
                kept(&list, case.policy, case.now),
                case.kept,
                "case: {}",
                case.name
            );
        }
    }

    #[test]
    fn every_decision_has_a_reason_and_the_order_is_newest_first() {
        let mut list = snaps(&[
            ("2025-04-01 03:00", I),
            ("2025-04-02 03:00", C),
            ("2025-04-03 03:00", C),
            ("2025-04-04 03:00", C),
        ]);
        list[3].latest = true;
        let d = decide(&list, &last(2), &[], at("2025-05-01 00:00"));
        let got: Vec<(&str, bool, Vec<&str>)> = d
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.keep,
                    d.reasons.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "s-2025-04-04-03-00",
                    true,
                    vec!["target of latest", "newest complete snapshot", "last 2"]
                ),
                ("s-2025-04-03-03-00", true, vec!["last 2"]),
                (
                    "s-2025-04-02-03-00",
                    false,
                    vec!["not kept by the policy (last 2)"]
                ),
                (
                    "s-2025-04-01-03-00",
                    false,
                    vec![
                        "incomplete (some files were not copied) and older than the complete s-2025-04-04-03-00"
                    ]
                ),
            ]
        );
    }

    /// A snapshot for the per-source table: `holds` lists the sources (`a` is /a, `b` is /b).
    fn held(t: &str, state: SnapshotState, holds: &str, unreadable: bool) -> SnapshotInfo {
        SnapshotInfo {
            name: format!("s-{}", t.replace([' ', ':'], "-")),
            time: at(t),
            state,
            latest: false,
            holds: holds
                .chars()
                .map(|c| PathBuf::from(format!("/{c}")))
                .collect(),
            unreadable,
        }
    }

    #[test]
    // Stays long: a table of cases, one per entry.
    fn retention_counts_per_source() {
        struct Case {
            name: &'static str,
            snaps: Vec<SnapshotInfo>,
            missing: &'static [&'static str],
            policy: RetentionPolicy,
            now: &'static str,
            /// Kept, oldest first, with the reasons of those named in `why`.
            kept: Vec<&'static str>,
            why: Vec<(&'static str, &'static str)>,
        }
        let cases = vec![
            Case {
                name: "the issue's run: /b removed, three more collects; its last copies stay while it is missing",
                snaps: vec![
                    held("2025-04-01 03:00", C, "ab", false),
                    held("2025-04-02 03:00", C, "ab", false),
                    held("2025-04-03 03:00", I, "a", false),
                    held("2025-04-04 03:00", I, "a", false),
                    held("2025-04-05 03:00", I, "a", false),
                ],
                missing: &["/b"],
                policy: last(2),
                now: "2025-04-05 03:00",
                kept: vec![
                    "2025-04-01 03:00",
                    "2025-04-02 03:00",
                    "2025-04-04 03:00",
                    "2025-04-05 03:00",
                ],
                why: vec![
                    (
                        "2025-04-02 03:00",
                        "newest complete snapshot; newest copy of /b, which is missing now; for /b: last 2",
                    ),
                    ("2025-04-01 03:00", "for /b: last 2"),
                    ("2025-04-03 03:00", "not kept by the policy (last 2)"),
                    ("2025-04-05 03:00", "last 2"),
                ],
            },
            Case {
                name: "once /b is back, its old copies age out like the others",
                snaps: vec![
                    held("2025-04-01 03:00", C, "ab", false),
                    held("2025-04-02 03:00", C, "ab", false),
                    held("2025-04-03 03:00", I, "a", false),
                    held("2025-04-04 03:00", I, "a", false),
                    held("2025-04-05 03:00", C, "ab", false),
                ],
                missing: &[],
                policy: last(2),
                now: "2025-04-05 03:00",
                kept: vec!["2025-04-04 03:00", "2025-04-05 03:00"],
                why: vec![],
            },
            Case {
                name: "the newest copy may be one with unreadable files, older than a snapshot that counts",
                snaps: vec![
                    held("2025-04-01 03:00", C, "ab", false),
                    held("2025-04-02 03:00", I, "ab", true),
                    held("2025-04-03 03:00", I, "a", false),
                ],
                missing: &["/b"],
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00", "2025-04-03 03:00"],
                why: vec![(
                    "2025-04-02 03:00",
                    "newest copy of /b, which is missing now",
                )],
            },
            Case {
                name: "a snapshot with unreadable files goes once a newer one that counts exists",
                snaps: vec![
                    held("2025-04-01 03:00", C, "ab", false),
                    held("2025-04-02 03:00", I, "ab", true),
                    held("2025-04-03 03:00", I, "a", false),
                ],
                missing: &[],
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-03 03:00"],
                why: vec![(
                    "2025-04-02 03:00",
                    "incomplete (some files were not copied) and older than s-2025-04-03-03-00",
                )],
            },
            Case {
                name: "a copy dated in the future is not the newest copy of a missing source",
                snaps: vec![
                    held("2025-04-01 03:00", C, "ab", false),
                    held("2025-04-02 03:00", C, "ab", false),
                    held("2025-04-03 03:00", I, "a", false),
                    held("2026-01-01 03:00", C, "ab", false),
                ],
                missing: &["/b"],
                policy: last(1),
                now: "2025-04-03 03:00",
                kept: vec!["2025-04-02 03:00", "2025-04-03 03:00", "2026-01-01 03:00"],
                why: vec![(
                    "2025-04-02 03:00",
                    "newest complete snapshot; newest copy of /b, which is missing now; for /b: last 1",
                )],
            },
            Case {
                name: "a missing source that no snapshot holds protects nothing",
                snaps: vec![
                    held("2025-04-01 03:00", C, "a", false),
                    held("2025-04-02 03:00", I, "a", false),
                ],
                missing: &["/b"],
                policy: last(1),
                now: "2025-05-01 00:00",
                kept: vec!["2025-04-01 03:00", "2025-04-02 03:00"],
                why: vec![("2025-04-01 03:00", "newest complete snapshot")],
            },
            Case {
                name: "bucket rules apply per source too",
                snaps: vec![
                    held("2025-04-01 01:00", C, "ab", false),
                    held("2025-04-01 02:00", C, "ab", false),
                    held("2025-04-02 01:00", C, "ab", false),
                    held("2025-04-03 01:00", I, "a", false),
                    held("2025-04-04 01:00", I, "a", false),
                ],
                missing: &["/b"],
                policy: RetentionPolicy {
                    daily: Some(2),
                    ..Default::default()
                },
                now: "2025-05-01 00:00",
                kept: vec![
                    "2025-04-01 02:00",
                    "2025-04-02 01:00",
                    "2025-04-03 01:00",
                    "2025-04-04 01:00",
                ],
                why: vec![("2025-04-01 02:00", "for /b: daily: newest of 2025-04-01")],
            },
        ];
        for case in cases {
            let missing: Vec<PathBuf> = case.missing.iter().map(PathBuf::from).collect();
            let d = decide(&case.snaps, &case.policy, &missing, at(case.now));
            let mut kept: Vec<String> = case
                .snaps
                .iter()
                .filter(|s| d.iter().any(|x| x.name == s.name && x.keep))
                .map(|s| s.time.format(crate::stdx::MINUTE).to_string())
                .collect();
            kept.sort();
            assert_eq!(kept, case.kept, "case: {}", case.name);
            for (t, want) in &case.why {
                let name = format!("s-{}", t.replace([' ', ':'], "-"));
                let got = d
                    .iter()
                    .find(|x| x.name == name)
                    .unwrap()
                    .reasons
                    .join("; ");
                assert_eq!(got, *want, "case: {}: reasons of {t}", case.name);
            }
        }
    }

    #[test]
    fn an_incomplete_snapshot_of_the_same_second_as_the_newest_complete_one_stays() {
        // Only an older one is superseded: same time is not older.
        let mut same = held("2025-04-02 03:00", I, "a", true);
        same.name = "s-same".into();
        let list = vec![
            held("2025-04-01 03:00", C, "a", false),
            held("2025-04-02 03:00", C, "a", false),
            same,
        ];
        let d = decide(&list, &last(1), &[], at("2025-05-01 00:00"));
        let same = d.iter().find(|x| x.name == "s-same").unwrap();
        assert!(same.keep, "{same:?}");
        assert_eq!(
            same.reasons,
            ["incomplete, but no newer snapshot copied every file"]
        );
    }

    #[test]
    fn policies_describe_themselves() {
        assert_eq!(describe(&last(7)), "last 7");
        assert_eq!(
            describe(&RetentionPolicy {
                daily: Some(7),
                weekly: Some(4),
                ..Default::default()
            }),
            "daily 7, weekly 4"
        );
        assert_eq!(describe(&RetentionPolicy::default()), "no rule");
    }
}
