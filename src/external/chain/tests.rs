//! The chain facts of a listing, and the full-or-incremental decision, as tables.

use std::collections::BTreeMap;

use super::*;
use crate::external::layout::tests::meta;
use crate::external::layout::{DriveBackup, DriveListing};

fn t(stamp: &str) -> NaiveDateTime {
    crate::snapshot::parse_stamp(stamp).unwrap()
}

/// A listing: each backup (stamp, kind of its `data` archive, base, tar bytes, change detection).
type Row<'a> = (&'a str, ArchiveKind, Option<&'a str>, u64, Option<&'a str>);

fn listing(backups: &[Row]) -> DriveListing {
    DriveListing {
        exists: true,
        backups: backups
            .iter()
            .map(|(stamp, kind, base, bytes, method)| {
                let mut m = meta(stamp, &["data"]);
                m.sets[0].kind = *kind;
                m.sets[0].base = base.map(String::from);
                m.sets[0].tar_bytes = *bytes;
                m.sets[0].change_detection = method.map(String::from);
                m.sets[0].index = vec![crate::archive::FileRecord {
                    name: "data.index.jsonl".into(),
                    bytes: 1,
                    sha256: crate::archive::Digest([0; 32]),
                    age_head: None,
                }];
                m.depends_on = base.iter().map(|b| b.to_string()).collect();
                DriveBackup {
                    name: stamp.to_string(),
                    time: t(stamp),
                    path: format!("/d/backups/{stamp}").into(),
                    meta: Some(m),
                    meta_error: None,
                }
            })
            .collect(),
        ..Default::default()
    }
}

const D1: &str = "2026-12-01-031500";
const D2: &str = "2026-12-02-031500";
const D3: &str = "2026-12-03-031500";
use ArchiveKind::{Full, Incremental};

/// The chain is followed through each base to its full: its length, the bytes since the full, the last content
/// check, and what breaks it (a base gone or unverified, a damaged backup).
#[test]
fn facts_follow_the_chain_to_its_full() {
    let none = BTreeMap::new();
    let l = listing(&[
        (D1, Full, None, 1000, None),
        (D2, Incremental, Some(D1), 100, Some("content")),
        (D3, Incremental, Some(D2), 50, Some("inode")),
    ]);
    let f = facts(&l, ("data", Owner::Anyone), &none).unwrap();
    assert_eq!((f.base.as_str(), f.full.as_str()), (D3, D1));
    assert_eq!(
        (f.incrementals, f.incremental_bytes, f.full_bytes),
        (2, 150, 1000)
    );
    assert_eq!(f.content_checked, t(D2));
    assert_eq!(f.base_snapshot, format!("data-{D3}"));
    assert_eq!(f.broken, None);
    assert!(facts(&l, ("other", Owner::Anyone), &none).is_none());

    let mut gone = l.clone();
    gone.backups.remove(1);
    let f = facts(&gone, ("data", Owner::Anyone), &none).unwrap();
    assert!(
        f.broken
            .unwrap()
            .contains(&format!("depends on {D2}, which is missing"))
    );

    let mut unverified = l.clone();
    unverified.backups[0].meta = None;
    let f = facts(&unverified, ("data", Owner::Anyone), &none).unwrap();
    assert!(f.broken.unwrap().contains(D1), "the full is unverified");

    let damaged = BTreeMap::from([(D1.to_string(), "data.tar is missing".to_string())]);
    let f = facts(&l, ("data", Owner::Anyone), &damaged).unwrap();
    assert_eq!(
        f.broken.as_deref(),
        Some("backup 2026-12-01-031500 of the chain is damaged: data.tar is missing")
    );
}

/// Full or incremental: every reason for a full, in order, and the incremental with or without content comparison.
/// (Before: every archive was full.)
#[test]
fn choices_table() {
    // Stays long: a table of cases, one per row.
    let none = BTreeMap::new();
    let chain = |n: usize, bytes: u64| {
        let mut rows = vec![(D1, Full, None, 1000, None)];
        let stamps = [
            D2,
            D3,
            "2026-12-04-031500",
            "2026-12-05-031500",
            "2026-12-06-031500",
            "2026-12-07-031500",
            "2026-12-08-031500",
        ];
        let mut prev = D1;
        for s in stamps.iter().take(n) {
            rows.push((*s, Incremental, Some(prev), bytes, Some("inode")));
            prev = s;
        }
        facts(&listing(&rows), ("data", Owner::Anyone), &none)
    };
    let enc = EncryptionRecord {
        format: "age".into(),
        recipients: vec!["age1x".into()],
        passphrase: false,
    };
    let on = IncrementalPolicy {
        enabled: true,
        ..Default::default()
    };
    let inputs = |now: &str| ChoiceInputs {
        policy: on,
        force_full: false,
        encryption: None,
        content_every: content_every(crate::config::Full::Weekly),
        now: t(now),
        base_copy: None,
    };
    let day4 = "2026-12-04-031500";
    let enc_chain = chain(1, 10).map(|mut c| {
        c.base_encryption = Some(enc.clone());
        c
    });
    type Case<'a> = (&'a str, ChoiceInputs<'a>, Option<ChainFacts>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "extends the chain",
            inputs(day4),
            chain(1, 10),
            "incremental on 2026-12-02-031500 (chain 3 of 7)",
        ),
        (
            "--full",
            ChoiceInputs {
                force_full: true,
                ..inputs(day4)
            },
            chain(1, 10),
            "full: --full",
        ),
        (
            "off",
            ChoiceInputs {
                policy: IncrementalPolicy {
                    enabled: false,
                    ..Default::default()
                },
                ..inputs(day4)
            },
            chain(1, 10),
            "full: incremental archives are off",
        ),
        (
            "encrypted, no local copy of the base's index",
            ChoiceInputs {
                encryption: Some(&enc),
                ..inputs(day4)
            },
            enc_chain.clone(),
            "full: no trusted local copy of the encrypted base index",
        ),
        (
            "encrypted, the copy changed",
            ChoiceInputs {
                encryption: Some(&enc),
                base_copy: Some(Err("it was changed since it was written (size or sha256)")),
                ..inputs(day4)
            },
            enc_chain.clone(),
            "full: no trusted local copy of the encrypted base index (it was changed since",
        ),
        (
            "encrypted, a trusted copy",
            ChoiceInputs {
                encryption: Some(&enc),
                base_copy: Some(Ok(())),
                ..inputs(day4)
            },
            enc_chain.clone(),
            "incremental on 2026-12-02-031500 (chain 3 of 7)",
        ),
        (
            "nothing here",
            inputs(day4),
            None,
            "full: no earlier backup",
        ),
        (
            "chain long",
            inputs("2026-12-09-031500"),
            chain(6, 10),
            "full: chain has 7 (external.incremental.max_chain 6)",
        ),
        (
            "chain one short",
            inputs("2026-12-09-031500"),
            chain(5, 10),
            "incremental on 2026-12-06-031500 (chain 7 of 7); contents compared",
        ),
        (
            "incrementals too big",
            inputs(day4),
            chain(2, 300),
            "full: the incrementals since the full 2026-12-01-031500 are 60% of it",
        ),
        (
            "full too old",
            inputs("2026-12-31-031500"),
            chain(1, 10),
            "full: the chain's full 2026-12-01-031500 is 30 days old",
        ),
        (
            "content due",
            inputs("2026-12-07-031500"),
            chain(1, 10),
            "incremental on 2026-12-02-031500 (chain 3 of 7); contents compared (schedule.full)",
        ),
    ];
    for (name, inputs, facts, want) in cases {
        let c = choose(inputs, facts.as_ref());
        assert!(c.reason.starts_with(want), "{name}: {}", c.reason);
        assert_eq!(
            c.kind == Incremental,
            want.starts_with("incremental"),
            "{name}"
        );
        assert_eq!(c.base.is_some(), c.kind == Incremental, "{name}");
    }
    // A broken chain or a base encrypted differently: a full, saying why.
    let mut broken = chain(1, 10).unwrap();
    broken.broken = Some("the base x is missing".into());
    assert_eq!(
        choose(inputs(day4), Some(&broken)).reason,
        "full: the base x is missing"
    );
    let mut other = chain(1, 10).unwrap();
    other.base_encryption = Some(enc.clone());
    assert!(
        choose(inputs(day4), Some(&other))
            .reason
            .contains("encrypted differently")
    );
}

/// The dry run's `chains:` lines: incrementals are on by default, each limit is said with its number and why, the
/// content comparison follows `schedule.full`; with incrementals off, one line. (Before: off by default, and the
/// dry run named a limit only when it called for a full.)
#[test]
fn the_defaults_are_explained() {
    use crate::config::Full;
    let p = IncrementalPolicy::default();
    assert!(p.enabled);
    let lines = explain(p, Full::Weekly);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(lines[0].starts_with("chains: each archive is an incremental"));
    assert!(lines[1].starts_with(
        "max_chain 6: a full after 6 incrementals (a restore reads at most 7 archives"
    ));
    assert!(lines[2].starts_with(
        "max_percent 50: a full when the incrementals since the full add up to more than 50%"
    ));
    assert!(
        lines[3].starts_with("full_after_days 30: a full when the chain's full is 30 days old")
    );
    assert!(lines[4].contains("schedule.full weekly: files that look unchanged are read and compared when the chain's last comparison is 6 days old"), "{}", lines[4]);
    assert!(explain(p, Full::Daily)[4].contains("20 hours old"));
    assert!(
        explain(p, Full::Never)[4].starts_with("schedule.full never: files that look unchanged")
    );
    let off = IncrementalPolicy {
        enabled: false,
        ..p
    };
    assert_eq!(
        explain(off, Full::Weekly),
        ["chains: none, every archive is full (external.incremental.enabled is false)"]
    );
}

/// Another config's set of the same name on the destination (its record's sources share no path with this config's
/// set): never a base. This config's older chain is; with none of this config's, the full says why.
#[test]
fn another_configs_set_of_the_same_name_is_never_a_base() {
    let none = BTreeMap::new();
    let mut l = listing(&[
        (D1, Full, None, 1000, None),
        (D2, Full, None, 1000, None),
        (D3, Incremental, Some(D2), 10, Some("inode")),
    ]);
    let from = |path: &str| crate::snapshot::SourceRecord {
        configured: path.into(),
        path: path.into(),
        resolved: path.into(),
        in_snapshot: path.trim_start_matches('/').into(),
        present: true,
    };
    for (b, path) in l.backups.iter_mut().zip(["/b/data", "/a/data", "/a/data"]) {
        b.meta.as_mut().unwrap().sets[0].sources = vec![from(path)];
    }
    let own = [crate::external::retention::OwnSet {
        name: "data".into(),
        paths: vec!["/b/data".into()],
    }];
    let f = facts(&l, ("data", Owner::Sets(&own)), &none).unwrap();
    assert_eq!((f.base.as_str(), f.full.as_str()), (D1, D1));
    assert_eq!(facts(&l, ("data", Owner::Anyone), &none).unwrap().base, D3);

    let inputs = ChoiceInputs {
        policy: IncrementalPolicy {
            enabled: true,
            ..Default::default()
        },
        force_full: false,
        encryption: None,
        content_every: None,
        now: t("2026-12-04-031500"),
        base_copy: None,
    };
    let c = choose_on(inputs, (&l, &none), ("data", Owner::Sets(&own)));
    assert_eq!(c.base.as_deref(), Some(D1), "{c:?}");
    l.backups.remove(0);
    let c = choose_on(inputs, (&l, &none), ("data", Owner::Sets(&own)));
    assert_eq!(
        (c.kind, c.reason.as_str()),
        (
            Full,
            "full: no earlier backup of this set on this destination (2 backups hold a set data recorded from \
             other sources: another config's, or this set's before its sources changed)"
        )
    );
}

/// The base's local snapshot is used only when the name the drive or bucket gives is exactly this set's snapshot
/// name and that directory is still in the backup root: never another set's, a path, or a name that is not a stamp.
#[test]
fn the_base_snapshot_is_only_this_sets_snapshot_still_there() {
    let root = tempfile::tempdir().unwrap();
    for dir in ["data-2026-12-01-031500", "other-2026-12-01-031500"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let choice = |name: &str| ArchiveChoice {
        base_snapshot: Some(name.into()),
        ..ArchiveChoice::full("")
    };
    assert_eq!(
        choice("data-2026-12-01-031500").base_snapshot_in("data", root.path()),
        Some(root.path().join("data-2026-12-01-031500"))
    );
    for name in [
        "other-2026-12-01-031500",
        "data-2026-12-02-031500",
        "../data-2026-12-01-031500",
        "data-2026-12-01-031500/..",
        "data-../../etc",
        "data-",
    ] {
        assert_eq!(
            choice(name).base_snapshot_in("data", root.path()),
            None,
            "{name}"
        );
    }
    assert_eq!(
        ArchiveChoice::full("").base_snapshot_in("data", root.path()),
        None
    );
}
