//! The backup phase's plan, pure: which sets are collected in which group, the destinations as this run sees them,
//! the dry run in words, and the rule that skips a drive whose newest backup already holds what would be exported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::collect::{self, CollectPlan};
use crate::exit::Exit;
use crate::media::Presence;
use crate::schedule::{Due, ExternalAction};
use crate::settings::{SetSettings, Settings};
use crate::status::Facts;

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
    /// Whether it is due and why (from its own backups, by its own schedule or `schedule.external`), when it was
    /// judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
}

/// The sets to collect, grouped by whether their contents are compared: `(full, sets)`, compared first.
pub fn collect_groups<'a>(settings: &'a Settings, due: &Due) -> Vec<(bool, Vec<&'a SetSettings>)> {
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

/// The collect phase's options for one group of sets.
pub fn collect_options(full: bool, sets: &[&SetSettings]) -> collect::Options {
    collect::Options {
        sets: sets.iter().map(|s| s.name.clone()).collect(),
        full,
        allow_shrink: false,
    }
}

pub fn views(facts: &Facts, due: &Due) -> Vec<DestinationView> {
    let judged = |name: &str| {
        due.external
            .destinations
            .iter()
            .find(|j| j.name == name)
            .map(|j| {
                let next = j
                    .next
                    .map(|n| format!(" (due from {})", n.format(crate::stdx::MINUTE)))
                    .unwrap_or_default();
                format!(
                    "{}: {}{next}",
                    if j.due { "due" } else { "not due" },
                    j.reason
                )
            })
    };
    let clouds = facts.clouds.iter().map(|c| DestinationView {
        name: c.settings.name.clone(),
        path: c.settings.place().into(),
        present: c.looked.then_some(c.error.is_none()),
        description: match (&c.error, &c.listing) {
            (Some(e), _) => format!("cannot be looked at: {e}"),
            (None, Some(l)) => match &l.newest {
                Some(b) => format!(
                    "{}: {} backups, the newest {} ({} requests)",
                    c.settings.place(),
                    l.verified,
                    b.stamp,
                    c.requests
                ),
                None => format!(
                    "{}: no backup yet ({} requests)",
                    c.settings.place(),
                    c.requests
                ),
            },
            (None, None) => format!(
                "{}: not looked at (its schedule is manual)",
                c.settings.place()
            ),
        },
        target: due.external.targets.contains(&c.settings.name),
        due: judged(&c.settings.name),
    });
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
            due: judged(&d.settings.name),
        })
        .chain(clouds)
        .collect()
}

/// The dry run in words: what is due and why, then the collect plans.
pub fn render_plan(plan: &BackupPlan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "what is due at {}{}:",
        plan.due.now.format(crate::stdx::MINUTE),
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
        if let Some(why) = &d.due {
            let _ = writeln!(w, "      {why}");
        }
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

impl BackupPlan {
    /// What the run would exit with at best: the worst of the collect plans.
    pub fn expected_exit(&self) -> Exit {
        self.collect
            .iter()
            .fold(Exit::Ok, |acc, p| acc.worst(p.expected_exit()))
    }
}

/// What a target drive's newest backup holds, as the run sees it before writing to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDrive {
    /// The backup's stamp.
    pub stamp: String,
    /// Set -> the snapshot it holds.
    pub sets: BTreeMap<String, String>,
    /// Encrypted as the config asks for now (recipients compared as sets); a backup encrypted otherwise (encryption
    /// just turned on, a recipient added) does not count as holding these snapshots.
    pub same_encryption: bool,
}

/// Whether the external step skips `target`: without `--force`, when its newest backup already holds exactly the
/// snapshots the step would export now (`exported`: set -> each set's newest complete snapshot after collect),
/// written as the config asks for now. Returns the summary line that says so.
pub fn skip_target(
    target: &str,
    exported: &BTreeMap<String, String>,
    on_drive: Option<&OnDrive>,
    force: bool,
) -> Option<String> {
    let on_drive = on_drive?;
    if force || exported.is_empty() || &on_drive.sets != exported || !on_drive.same_encryption {
        return None;
    }
    Some(format!(
        "{target}: its newest backup {} already holds these snapshots ({}); nothing new to write",
        on_drive.stamp,
        exported.values().cloned().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(s, n)| (s.to_string(), n.to_string()))
            .collect()
    }

    fn drive(pairs: &[(&str, &str)], same_encryption: bool) -> OnDrive {
        OnDrive {
            stamp: "2025-04-01-031500".into(),
            sets: sets(pairs),
            same_encryption,
        }
    }

    #[test]
    fn a_drive_is_skipped_only_when_its_newest_backup_holds_exactly_these_snapshots() {
        let now = &[("config", "config-2"), ("data", "data-2")];
        let older = &[("config", "config-1"), ("data", "data-2")];
        let fewer = &[("data", "data-2")];
        // (exported, what the drive's newest backup holds, --force, skipped)
        type Sets<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Sets, Option<OnDrive>, bool, bool)] = &[
            (now, Some(drive(now, true)), false, true),
            (now, Some(drive(now, true)), true, false),
            (now, Some(drive(now, false)), false, false),
            (now, Some(drive(older, true)), false, false),
            (now, Some(drive(fewer, true)), false, false),
            (fewer, Some(drive(now, true)), false, false),
            (now, None, false, false),
            (&[], Some(drive(&[], true)), false, false),
        ];
        for (i, (exported, on_drive, force, skipped)) in cases.iter().enumerate() {
            let line = skip_target("T9", &sets(exported), on_drive.as_ref(), *force);
            assert_eq!(line.is_some(), *skipped, "case {i}: {line:?}");
        }
        assert_eq!(
            skip_target("T9", &sets(now), Some(&drive(now, true)), false).unwrap(),
            "T9: its newest backup 2025-04-01-031500 already holds these snapshots (config-2, data-2); nothing new \
             to write"
        );
    }
}
