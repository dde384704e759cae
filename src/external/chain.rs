//! Chains of archives on a destination: what the backups there say about a set's chain ([`facts`]), and whether the
//! next archive of the set is a full or an incremental on which base ([`choose`]). Pure: no IO, `now` passed in,
//! table-tested.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::layout::{ArchiveKind, DriveListing};
use super::retention::{Owner, recorded_paths};
use crate::archive::EncryptionRecord;
use crate::config::IncrementalPolicy;

/// What the destination says about the chain a new archive of one set would extend.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainFacts {
    /// The newest verified backup holding the set: the base an incremental would have.
    pub base: String,
    /// The local snapshot the base's archive was made from (`<set>-<stamp>`).
    pub base_snapshot: String,
    pub base_encryption: Option<EncryptionRecord>,
    /// The base's index is one plain file (an incremental reads it as its base manifest).
    pub base_index_single: bool,
    /// Incrementals from the chain's full to the base (0: the base is the full).
    pub incrementals: u32,
    pub full: String,
    pub full_time: NaiveDateTime,
    pub full_bytes: u64,
    /// The tar bytes of the incrementals since the full.
    pub incremental_bytes: u64,
    /// The newest backup of the chain whose archive was checked against content: a full, or an incremental whose
    /// change detection was `content`.
    pub content_checked: NaiveDateTime,
    /// Why the chain cannot be extended (a backup in it missing, unverified or damaged).
    pub broken: Option<String>,
}

/// The facts of `set`'s chain on a destination: `None` when no verified backup holds the set as the `owner`'s (a
/// record of a set of that name whose sources share no path with the config's is another config's, [`Owner`]).
/// `damaged` names the backups whose files are missing or not their recorded size (found by the observer), with why.
pub fn facts(
    listing: &DriveListing,
    (set, owner): (&str, Owner),
    damaged: &BTreeMap<String, String>,
) -> Option<ChainFacts> {
    let verified = |stamp: &str| {
        listing
            .backups
            .iter()
            .find(|b| b.name == stamp)
            .and_then(|b| Some((b, b.meta.as_ref()?)))
    };
    let (newest, meta) = listing.backups.iter().rev().find_map(|b| {
        let m = b.meta.as_ref()?;
        m.sets.iter().any(|s| owns(owner, set, s)).then_some((b, m))
    })?;
    let rec = meta.sets.iter().find(|s| s.set == set)?;
    let mut f = ChainFacts {
        base: newest.name.clone(),
        base_snapshot: rec.snapshot.clone(),
        base_encryption: rec.encryption.clone(),
        base_index_single: rec.index.len() == 1,
        incrementals: 0,
        full: newest.name.clone(),
        full_time: newest.time,
        full_bytes: rec.tar_bytes,
        incremental_bytes: 0,
        content_checked: newest.time,
        broken: None,
    };
    let mut content_seen = false;
    let (mut at, mut at_rec, mut at_time, mut at_meta) =
        (newest.name.clone(), rec, newest.time, meta);
    // Stamps only go back in time (`BackupMeta::check`), so this ends; bounded all the same.
    for _ in 0..=crate::archive::index::MAX_DEPENDS_ON {
        if let Some(why) = damaged.get(&at) {
            f.broken = Some(format!("backup {at} of the chain is damaged: {why}"));
            return Some(f);
        }
        for d in &at_meta.depends_on {
            if verified(d).is_none() {
                f.broken = Some(format!(
                    "backup {at} depends on {d}, which is missing or unverified"
                ));
                return Some(f);
            }
        }
        let checked = at_rec.kind == ArchiveKind::Full
            || at_rec.change_detection.as_deref() == Some("content");
        if checked && !content_seen {
            f.content_checked = at_time;
            content_seen = true;
        }
        match (&at_rec.kind, &at_rec.base) {
            (ArchiveKind::Full, _) => {
                f.full = at.clone();
                f.full_time = at_time;
                f.full_bytes = at_rec.tar_bytes;
                return Some(f);
            }
            (ArchiveKind::Incremental, Some(base)) => {
                f.incrementals += 1;
                f.incremental_bytes = f.incremental_bytes.saturating_add(at_rec.tar_bytes);
                let Some((b, m)) = verified(base) else {
                    f.broken = Some(format!(
                        "the base {base} of backup {at} is missing or unverified"
                    ));
                    return Some(f);
                };
                let Some(r) = m.sets.iter().find(|s| s.set == set) else {
                    f.broken = Some(format!(
                        "the base {base} of backup {at} does not hold set {set}"
                    ));
                    return Some(f);
                };
                (at, at_rec, at_time, at_meta) = (base.clone(), r, b.time, m);
            }
            (ArchiveKind::Incremental, None) => {
                f.broken = Some(format!("backup {at} is incremental without a base"));
                return Some(f);
            }
        }
    }
    f.broken = Some("the chain is longer than any dbackup writes".into());
    Some(f)
}

/// `rec` is a record of the `owner`'s `set`.
fn owns(owner: Owner, set: &str, rec: &super::layout::SetRecord) -> bool {
    rec.set == set && owner.owns_set(set, &recorded_paths(&rec.sources))
}

/// [`choose`] on `set`'s chain in `listing` ([`facts`]); a full for want of a chain says so when backups there hold
/// a set of that name recorded from other sources (another config's, or this set's before its sources changed).
pub fn choose_on(
    inputs: ChoiceInputs<'_>,
    (listing, damaged): (&DriveListing, &BTreeMap<String, String>),
    (set, owner): (&str, Owner),
) -> ArchiveChoice {
    let chain = facts(listing, (set, owner), damaged);
    let mut choice = choose(inputs, chain.as_ref());
    let others = listing.verified().filter(|b| {
        b.meta
            .as_ref()
            .is_some_and(|m| m.sets.iter().any(|s| s.set == set && !owns(owner, set, s)))
    });
    let n = others.count() as u64;
    if chain.is_none() && n > 0 && choice.reason == NO_CHAIN {
        choice.reason.push_str(&format!(
            " ({} a set {} recorded from other sources: another config's, or this set's before its sources \
             changed)",
            crate::stdx::counted(n, "backup holds", "backups hold"),
            crate::stdx::show_str(set)
        ));
    }
    choice
}

/// Why an archive is full when the destination holds no chain of its set.
const NO_CHAIN: &str = "full: no earlier backup of this set on this destination";

/// The kind of the next archive of a set, and why (printed by `--dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveChoice {
    pub kind: ArchiveKind,
    /// The base of an incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The local snapshot the base was made from (its inodes decide what changed, when it still exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_snapshot: Option<String>,
    /// Read and hash the files that look unchanged (`schedule.full` is due).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compare_content: bool,
    pub reason: String,
}

impl ArchiveChoice {
    pub(crate) fn full(reason: impl Into<String>) -> ArchiveChoice {
        ArchiveChoice {
            kind: ArchiveKind::Full,
            base: None,
            base_snapshot: None,
            compare_content: false,
            reason: reason.into(),
        }
    }

    /// The local snapshot in `backup_root` the base was made from, when it is still there. Its name comes from the
    /// drive or the bucket: used only when it is exactly `set`'s snapshot name (`<set>-<stamp>`).
    pub(crate) fn base_snapshot_in(
        &self,
        set: &str,
        backup_root: &std::path::Path,
    ) -> Option<std::path::PathBuf> {
        self.base_snapshot
            .as_deref()
            .filter(|n| crate::snapshot::parse_snapshot_name(set, n).is_some())
            .map(|n| backup_root.join(n))
            .filter(|p| p.is_dir())
    }
}

/// Why an archive is full when incrementals are not enabled (the dry run does not repeat it for every archive).
pub const OFF_REASON: &str = "full: incremental archives are off (external.incremental.enabled)";

/// What [`choose`] decides from, besides the chain.
#[derive(Debug, Clone, Copy)]
pub struct ChoiceInputs<'a> {
    pub policy: IncrementalPolicy,
    /// `external --full`.
    pub force_full: bool,
    /// The encryption the new archive gets.
    pub encryption: Option<&'a EncryptionRecord>,
    /// How long content comparisons may be apart (`schedule.full`; `None`: never).
    pub content_every: Option<chrono::Duration>,
    pub now: NaiveDateTime,
    /// An encrypted set's base manifest is read from the local plaintext copy of the base's index
    /// (`external::index_copy`): whether that copy is here and trusted, else why not. `None`: not looked for.
    pub base_copy: Option<Result<(), &'a str>>,
}

/// Full or incremental, and why: the first reason for a full wins.
pub fn choose(inputs: ChoiceInputs<'_>, chain: Option<&ChainFacts>) -> ArchiveChoice {
    let p = inputs.policy;
    if inputs.force_full {
        return ArchiveChoice::full("full: --full");
    }
    if !p.enabled {
        return ArchiveChoice::full(OFF_REASON);
    }
    let Some(c) = chain else {
        return ArchiveChoice::full(NO_CHAIN);
    };
    if let Some(why) = &c.broken {
        return ArchiveChoice::full(format!("full: {why}"));
    }
    if c.base_encryption.as_ref() != inputs.encryption {
        return ArchiveChoice::full(format!(
            "full: the base {} is encrypted differently",
            c.base
        ));
    }
    if !c.base_index_single {
        return ArchiveChoice::full(format!(
            "full: the index of the base {} is in parts",
            c.base
        ));
    }
    if inputs.encryption.is_some() {
        const NO_COPY: &str = "full: no trusted local copy of the encrypted base index";
        match inputs.base_copy {
            Some(Ok(())) => {}
            Some(Err(why)) => return ArchiveChoice::full(format!("{NO_COPY} ({why})")),
            None => return ArchiveChoice::full(NO_COPY),
        }
    }
    if c.incrementals >= p.max_chain {
        return ArchiveChoice::full(format!(
            "full: chain has {} (external.incremental.max_chain {})",
            c.incrementals + 1,
            p.max_chain
        ));
    }
    let percent = (c.incremental_bytes as u128 * 100)
        .checked_div(c.full_bytes as u128)
        .unwrap_or(u128::MAX);
    if percent > p.max_percent as u128 {
        return ArchiveChoice::full(format!(
            "full: the incrementals since the full {} are {}% of it (external.incremental.max_percent {})",
            c.full,
            percent.min(1_000_000),
            p.max_percent
        ));
    }
    let age = inputs.now - c.full_time;
    if age >= chrono::Duration::days(p.full_after_days as i64) {
        return ArchiveChoice::full(format!(
            "full: the chain's full {} is {} days old (external.incremental.full_after_days {})",
            c.full,
            age.num_days(),
            p.full_after_days
        ));
    }
    let compare_content = inputs
        .content_every
        .is_some_and(|every| inputs.now - c.content_checked >= every);
    ArchiveChoice {
        kind: ArchiveKind::Incremental,
        base: Some(c.base.clone()),
        base_snapshot: Some(c.base_snapshot.clone()),
        compare_content,
        reason: format!(
            "incremental on {} (chain {} of {}){}",
            c.base,
            c.incrementals + 2,
            p.max_chain + 1,
            if compare_content {
                "; contents compared (schedule.full)"
            } else {
                ""
            }
        ),
    }
}

/// The chain policy in words, each limit with why it is there: the dry run's lines on chains (the first a heading).
pub fn explain(p: IncrementalPolicy, full: crate::config::Full) -> Vec<String> {
    use crate::stdx::{age_words, counted};
    if !p.enabled {
        return vec![
            "chains: none, every archive is full (external.incremental.enabled is false)".into(),
        ];
    }
    let mut lines = vec![
        "chains: each archive is an incremental on the set's previous backup on the destination until one of \
         external.incremental's limits calls for a full:"
            .to_string(),
        format!(
            "max_chain {}: a full after {} (a restore reads at most {} archives, and one damaged archive \
             breaks at most the {} backups after it)",
            p.max_chain,
            counted(u64::from(p.max_chain), "incremental", "incrementals"),
            p.max_chain.saturating_add(1),
            p.max_chain
        ),
        format!(
            "max_percent {}: a full when the incrementals since the full add up to more than {}% of it (past that \
             a new full costs little more than the chain saves)",
            p.max_percent, p.max_percent
        ),
        format!(
            "full_after_days {}: a full when the chain's full is {} days old (a fresh full on every drive at least \
             that often)",
            p.full_after_days, p.full_after_days
        ),
    ];
    lines.push(match content_every(full) {
        None => "schedule.full never: files that look unchanged (size, mtime, mode, owner) are never read, so a \
             change that keeps them is stored only by the next full"
            .into(),
        Some(every) => format!(
            "schedule.full {}: files that look unchanged are read and compared when the chain's last comparison is \
             {} old (a change that keeps size and mtime is caught then)",
            match full {
                crate::config::Full::Daily => "daily",
                crate::config::Full::Weekly => "weekly",
                crate::config::Full::Monthly => "monthly",
                crate::config::Full::Never => "never",
            },
            age_words(every)
        ),
    });
    lines
}

/// How long content comparisons may be apart for `schedule.full` (the thresholds `backup` uses for its periods).
pub fn content_every(full: crate::config::Full) -> Option<chrono::Duration> {
    use crate::config::Full;
    match full {
        Full::Daily => Some(chrono::Duration::hours(20)),
        Full::Weekly => Some(chrono::Duration::days(6)),
        Full::Monthly => Some(chrono::Duration::days(27)),
        Full::Never => None,
    }
}

/// A destination's newest backup of a config's sets when it is no restore point: found damaged (`restore --verify`
/// or its files not as recorded), or its chain broken ([`broken`], [`broken_link`]). Newer than the newest good
/// backup there, which a restore reads instead and `backup` compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsound {
    pub stamp: String,
    /// Found damaged; else its chain is broken.
    pub damaged: bool,
}

/// Why each verified backup of a listing cannot be restored whole: a backup it depends on (its `depends_on`, each
/// set's `base`) is not among the verified backups, is in `damaged` (said as "which {found}"), or is broken itself. Dependencies are older
/// (`BackupMeta::check`), so one pass oldest first sees each one's verdict before its dependants.
pub fn broken(
    l: &DriveListing,
    damaged: &BTreeMap<String, String>,
    found: &str,
) -> BTreeMap<String, String> {
    let mut broken: BTreeMap<String, String> = BTreeMap::new();
    for b in l.verified() {
        let Some(m) = b.meta.as_ref() else {
            continue;
        };
        let listed = |d: &str| l.verified().any(|v| v.name == d);
        let why = broken_link(m, listed, (|d| damaged.contains_key(d), found), &broken);
        if let Some(why) = why {
            broken.insert(b.name.clone(), why);
        }
    }
    broken
}

/// Why backup `m` cannot be restored whole, if it cannot: a backup it depends on (its `depends_on`, each set's
/// `base`) is not `listed` (missing or unverified), is `damaged` (said as "which {found}"), or is in `broken` itself.
/// What [`broken`] says of each backup of a listing, and a bucket's look at its newest `backup.json` alone of that
/// one (the chain's backups each name the whole chain in `depends_on`).
pub fn broken_link(
    m: &crate::external::layout::BackupMeta,
    listed: impl Fn(&str) -> bool,
    (damaged, found): (impl Fn(&str) -> bool, &str),
    broken: &BTreeMap<String, String>,
) -> Option<String> {
    let mut deps = m
        .depends_on
        .iter()
        .chain(m.sets.iter().filter_map(|s| s.base.as_ref()));
    deps.find_map(|d| {
        if !listed(d) {
            Some(format!(
                "it depends on {}, which is missing or unverified",
                crate::stdx::show_str(d)
            ))
        } else if damaged(d) {
            Some(format!(
                "it depends on {}, which {found}",
                crate::stdx::show_str(d)
            ))
        } else if broken.contains_key(d) {
            Some(format!(
                "it depends on {}, whose own chain is broken",
                crate::stdx::show_str(d)
            ))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests;
