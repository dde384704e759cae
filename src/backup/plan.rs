//! The backup phase's plan, pure: which sets are collected in which group, the destinations as this run sees them,
//! the dry run in words, and the rule that skips a drive whose newest good backup already holds what would be
//! exported ([`skip_target`], fed by [`on_drive`] for the run and its dry run alike).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::collect::{self, CollectPlan};
use crate::exit::Exit;
use crate::external::chain::Unsound;
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
    /// The destinations this run would write, in order: `due.external.targets` less those whose newest good backup
    /// already holds these snapshots (their `note` says so). Empty when nothing would be written.
    #[serde(default)]
    pub writes: Vec<String>,
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
    /// A due target: why it is not written (its newest good backup already holds these snapshots), or why it is
    /// written though its backups may be unchanged (its newest backup is no restore point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
        note: None,
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
            note: None,
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
        ExternalAction::Write => {
            // Said as the destinations' own lines say it: a target whose newest good backup already holds these
            // snapshots is not written.
            let kept: Vec<&str> = (e.targets.iter())
                .filter(|t| !plan.writes.contains(t))
                .map(String::as_str)
                .collect();
            match (plan.writes.is_empty(), kept.is_empty()) {
                (true, _) => format!("due, nothing new to write to {}", kept.join(", ")),
                (false, true) => format!("yes, to {}", plan.writes.join(", ")),
                (false, false) => format!(
                    "yes, to {} (nothing new to write to {})",
                    plan.writes.join(", "),
                    kept.join(", ")
                ),
            }
        }
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
        for line in [&d.due, &d.note].into_iter().flatten() {
            let _ = writeln!(w, "      {line}");
        }
    }
    if !plan.writes.is_empty() && !plan.collect.is_empty() {
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

/// A backup on a target as the skip rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The backup's stamp.
    pub stamp: String,
    /// Set -> the snapshot it holds.
    pub sets: BTreeMap<String, String>,
    /// Encrypted as the config asks for now (recipients compared as sets); a backup encrypted otherwise (encryption
    /// just turned on, a recipient added) does not count as holding these snapshots.
    pub same_encryption: bool,
}

/// What a target drive or bucket holds, as the run sees it before writing to it: `status`'s judgement of its
/// backups (`status::gather`: found damaged, chains).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnDrive {
    /// Its newest good backup (a restore point: verified, not found damaged, its chain whole), if any.
    pub good: Option<Held>,
    /// Its newest backup when that one is no restore point (newer than `good`).
    pub unsound: Option<Unsound>,
}

/// What the external step does with a due target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not written, and why.
    Skip(String),
    /// Written; why, when its newest backup is no restore point.
    Write(Option<String>),
}

/// Whether the external step skips a target: without `--force`, when its newest good backup already holds exactly
/// the snapshots the step would export now (`exported`: set -> each set's newest complete snapshot after collect;
/// `None` when a collect runs first: new snapshots), written as the config asks for now. A backup that is no restore
/// point never stands in for a good one: it is passed over, and a target written while its newest backup is one
/// says so.
pub fn skip_target(
    exported: Option<&BTreeMap<String, String>>,
    on_drive: &OnDrive,
    force: bool,
) -> Verdict {
    let unsound = on_drive.unsound.as_ref();
    if let (Some(exported), Some(good)) = (exported, &on_drive.good)
        && !force
        && !exported.is_empty()
        && &good.sets == exported
        && good.same_encryption
    {
        let newer = unsound
            .map(|u| format!(" ({}, newer, {})", u.stamp, unsound_words(u)))
            .unwrap_or_default();
        return Verdict::Skip(format!(
            "its newest {}backup {} already holds these snapshots ({}); nothing new to write{newer}",
            if unsound.is_some() { "good " } else { "" },
            good.stamp,
            exported.values().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Verdict::Write(unsound.map(|u| {
        format!(
            "its newest backup {} {}, no restore point: writing a fresh one",
            u.stamp,
            unsound_words(u)
        )
    }))
}

/// What is wrong with a backup that is no restore point, in a few words.
fn unsound_words(u: &Unsound) -> &'static str {
    match u.damaged {
        true => "is damaged",
        false => "has a broken chain",
    }
}

/// What `target` holds, as the run looked at it before starting: its newest good backup, and a newer one that is no
/// restore point (`status::gather`'s judgement). Not quite pure: a recipients file the config names is read.
pub(crate) fn on_drive(facts: &Facts, target: &str) -> OnDrive {
    let found = |listing: Option<&crate::status::gather::ListingFacts>, now| {
        let held = |b: &crate::status::gather::BackupFacts| Held {
            stamp: b.stamp.clone(),
            sets: b.sets.iter().cloned().collect(),
            same_encryption: same_encryption(now, b.encryption.as_ref()),
        };
        OnDrive {
            good: listing.and_then(|l| l.newest.as_ref()).map(held),
            unsound: listing.and_then(|l| l.unsound.clone()),
        }
    };
    if let Some(c) = facts.clouds.iter().find(|c| c.settings.name == target) {
        return found(c.listing.as_ref(), c.settings.encryption.as_ref());
    }
    (facts.destinations.iter())
        .find(|d| d.settings.name == target)
        .map(|d| found(d.listing.as_ref(), d.settings.encryption.as_ref()))
        .unwrap_or_default()
}

/// Whether a backup encrypted as `written` matches what the config asks for now (recipients compared as sets).
/// A recipients file that cannot be read counts as a change, so the external phase runs and reports it.
fn same_encryption(
    now: Option<&crate::settings::EncryptionSettings>,
    written: Option<&crate::archive::EncryptionRecord>,
) -> bool {
    match (now, written) {
        (None, None) => true,
        (Some(now), Some(written)) => match now.resolve_record() {
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
    use super::*;
    use crate::archive::EncryptionRecord;
    use crate::settings::EncryptionSettings;

    fn sets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(s, n)| (s.to_string(), n.to_string()))
            .collect()
    }

    /// The newest good backup, holding `pairs`, encrypted as the config asks for now.
    fn held(pairs: &[(&str, &str)]) -> Option<Held> {
        Some(Held {
            stamp: "2025-04-01-031500".into(),
            sets: sets(pairs),
            same_encryption: true,
        })
    }

    /// [`held`], encrypted otherwise.
    fn other_encryption(pairs: &[(&str, &str)]) -> Option<Held> {
        held(pairs).map(|h| Held {
            same_encryption: false,
            ..h
        })
    }

    /// A newer backup that is no restore point: found damaged, else its chain broken.
    fn unsound(damaged: bool) -> Option<Unsound> {
        Some(Unsound {
            stamp: "2025-04-02-031500".into(),
            damaged,
        })
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Skip,
        Write,
        /// Written, saying why.
        WriteWhy,
    }

    /// A target is skipped only when its newest good backup holds exactly these snapshots; one that is no restore
    /// point (damaged, its chain broken) never stands in for it, and a target written while its newest backup is one
    /// says so.
    #[test]
    fn a_target_is_skipped_only_when_its_newest_good_backup_holds_exactly_these_snapshots() {
        use Want::*;
        let now = &[("config", "config-2"), ("data", "data-2")];
        let older = &[("config", "config-1"), ("data", "data-2")];
        let fewer = &[("data", "data-2")];
        type Sets<'a> = &'a [(&'a str, &'a str)];
        // (exported (None: a collect runs first), the newest good backup, a newer one that is no restore point,
        // --force, what becomes of the target)
        type Case<'a> = (Option<Sets<'a>>, Option<Held>, Option<Unsound>, bool, Want);
        let cases: &[Case] = &[
            (Some(now), held(now), None, false, Skip),
            (Some(now), held(now), None, true, Write),
            (Some(now), other_encryption(now), None, false, Write),
            (Some(now), held(older), None, false, Write),
            (Some(now), held(fewer), None, false, Write),
            (Some(fewer), held(now), None, false, Write),
            (Some(now), None, None, false, Write),
            (Some(&[]), held(&[]), None, false, Write),
            (None, held(now), None, false, Write),
            // The newest is damaged or broken: an older good one of other snapshots, or none, is no reason to skip.
            (Some(now), None, unsound(true), false, WriteWhy),
            (Some(now), None, unsound(false), false, WriteWhy),
            (Some(now), held(older), unsound(true), false, WriteWhy),
            (Some(now), held(now), unsound(true), true, WriteWhy),
            (None, held(now), unsound(false), false, WriteWhy),
            // An older good backup that holds these snapshots is.
            (Some(now), held(now), unsound(true), false, Skip),
        ];
        for (i, (exported, good, unsound, force, want)) in cases.iter().enumerate() {
            let exported = exported.map(sets);
            let on_drive = OnDrive {
                good: good.clone(),
                unsound: unsound.clone(),
            };
            let verdict = skip_target(exported.as_ref(), &on_drive, *force);
            let got = match verdict {
                Verdict::Skip(_) => Skip,
                Verdict::Write(None) => Write,
                Verdict::Write(Some(_)) => WriteWhy,
            };
            assert_eq!(&got, want, "case {i}: {verdict:?}");
        }
        let on = |unsound| OnDrive {
            good: held(now),
            unsound,
        };
        let words = |exported: Option<Sets>, on_drive: &OnDrive| match skip_target(
            exported.map(sets).as_ref(),
            on_drive,
            false,
        ) {
            Verdict::Skip(line) | Verdict::Write(Some(line)) => line,
            Verdict::Write(None) => String::new(),
        };
        assert_eq!(
            words(Some(now), &on(None)),
            "its newest backup 2025-04-01-031500 already holds these snapshots (config-2, data-2); nothing new to write"
        );
        assert_eq!(
            words(Some(now), &on(unsound(true))),
            "its newest good backup 2025-04-01-031500 already holds these snapshots (config-2, data-2); nothing new \
             to write (2025-04-02-031500, newer, is damaged)"
        );
        assert_eq!(
            words(None, &on(unsound(true))),
            "its newest backup 2025-04-02-031500 is damaged, no restore point: writing a fresh one"
        );
        assert_eq!(
            words(None, &on(unsound(false))),
            "its newest backup 2025-04-02-031500 has a broken chain, no restore point: writing a fresh one"
        );
    }

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
