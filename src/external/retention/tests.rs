//! Table tests of drive rotation: retention with chains and image-only backups, and space-aware rotation.

use super::*;
use crate::snapshot::parse_stamp;
use std::path::{Path, PathBuf};

fn day(d: u32) -> String {
    format!("2025-04-{d:02}-000000")
}

/// A verified backup of `sets` made on day `d`, depending on the days `deps`, taking `mib` MiB.
fn b(d: u32, sets: &[&str], deps: &[u32], mib: u64) -> BackupInfo {
    let name = day(d);
    BackupInfo {
        time: parse_stamp(&name).unwrap(),
        name,
        verified: true,
        damaged: None,
        broken: None,
        sets: sets.iter().map(|s| s.to_string()).collect(),
        sources: BTreeMap::new(),
        system: false,
        latest: false,
        depends_on: deps.iter().map(|&x| day(x)).collect(),
        bytes: mib << 20,
    }
}

fn set(d: u32) -> BackupInfo {
    b(d, &["data"], &[], 10)
}

/// An incremental of `data` on day `d` depending on `deps`.
fn incr(d: u32, deps: &[u32]) -> BackupInfo {
    b(d, &["data"], deps, 1)
}

/// Two chains of `data`: a full on day 1 with incrementals on days 2 and 3, a full on day 4 with one on day 5.
fn two_chains() -> Vec<BackupInfo> {
    vec![
        set(1),
        incr(2, &[1]),
        incr(3, &[1, 2]),
        set(4),
        incr(5, &[4]),
    ]
}

fn image(d: u32) -> BackupInfo {
    BackupInfo {
        system: true,
        ..b(d, &[], &[], 100)
    }
}

fn unverified(d: u32) -> BackupInfo {
    BackupInfo {
        verified: false,
        sets: vec![],
        ..b(d, &[], &[], 0)
    }
}

fn last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        last: Some(n),
        ..Default::default()
    }
}

/// The days removed, oldest first.
fn removed(decisions: &[Decision]) -> Vec<String> {
    let mut out: Vec<String> = crate::retention::removed(decisions)
        .map(str::to_string)
        .collect();
    out.reverse();
    out
}

fn days(ds: &[u32]) -> Vec<String> {
    ds.iter().map(|&d| day(d)).collect()
}

#[test]
// Stays long: a table of cases, one per entry.
fn retention_table() {
    struct Case {
        what: &'static str,
        backups: Vec<BackupInfo>,
        policy: RetentionPolicy,
        now: u32,
        removed: Vec<u32>,
    }
    let both = |d: u32| b(d, &["data", "config"], &[], 10);
    let seven: Vec<BackupInfo> = (1..=7).map(both).collect();
    let cases = vec![
        Case {
            what: "seven verified, keep five: the two oldest go",
            backups: seven.clone(),
            policy: last(5),
            now: 7,
            removed: vec![1, 2],
        },
        Case {
            what: "fewer than keep: nothing goes",
            backups: seven[..3].to_vec(),
            policy: last(5),
            now: 7,
            removed: vec![],
        },
        Case {
            what: "keep 1 keeps only the newest",
            backups: seven[..3].to_vec(),
            policy: last(1),
            now: 7,
            removed: vec![1, 2],
        },
        Case {
            what: "directories without verified metadata never count and never go",
            backups: vec![unverified(1), both(2), unverified(3), both(4), both(5)],
            policy: last(1),
            now: 9,
            removed: vec![2, 4],
        },
        Case {
            what: "the last copy of a set that stopped being exported stays",
            backups: vec![
                both(1),
                both(2),
                b(3, &["data"], &[], 1),
                b(4, &["data"], &[], 1),
                b(5, &["data"], &[], 1),
            ],
            policy: last(2),
            now: 9,
            removed: vec![1, 3],
        },
        Case {
            what: "a backup from the future (clock went back) is kept and not counted",
            backups: vec![both(1), both(2), both(20)],
            policy: last(1),
            now: 3,
            removed: vec![1],
        },
        Case {
            what: "nothing verified: nothing goes",
            backups: vec![unverified(1), unverified(2)],
            policy: last(1),
            now: 3,
            removed: vec![],
        },
        Case {
            what: "daily policy: the newest of each of the last 2 days",
            backups: vec![
                set(1),
                BackupInfo {
                    name: "2025-04-02-010000".into(),
                    time: parse_stamp("2025-04-02-010000").unwrap(),
                    ..set(2)
                },
                set(2),
                set(3),
            ],
            policy: RetentionPolicy {
                daily: Some(2),
                ..Default::default()
            },
            now: 9,
            removed: vec![1, 2],
        },
        Case {
            what: "chains: keep 2 keeps the newest chain (its full as the base of the kept incremental); the old \
                   chain goes whole",
            backups: two_chains(),
            policy: last(2),
            now: 9,
            removed: vec![1, 2, 3],
        },
        Case {
            what: "chains: keep 1 of a full and four incrementals keeps the whole chain as bases",
            backups: vec![
                set(1),
                incr(2, &[1]),
                incr(3, &[1, 2]),
                incr(4, &[1, 2, 3]),
                incr(5, &[1, 2, 3, 4]),
            ],
            policy: last(1),
            now: 9,
            removed: vec![],
        },
        Case {
            what: "chains: only the chain's newest end (its tail) goes; the kept incremental's base chain stays",
            backups: two_chains(),
            policy: RetentionPolicy {
                last: Some(2),
                weekly: Some(2),
                ..Default::default()
            },
            // Days 1 to 5 are all in ISO week 14: weekly 2 keeps only day 5 there.
            now: 9,
            removed: vec![1, 2, 3],
        },
        Case {
            what: "chains: a base named only by a set's base is kept like depends_on (transitively)",
            backups: vec![set(1), incr(2, &[1]), incr(3, &[2])],
            policy: last(1),
            now: 9,
            removed: vec![],
        },
        Case {
            what: "chains: a base that is missing from the drive changes nothing else",
            backups: vec![incr(2, &[1]), set(3), set(4)],
            policy: last(1),
            now: 9,
            removed: vec![2, 3],
        },
        Case {
            what: "hostile metadata: a loop of dependencies and a base newer than its dependent end, kept whole",
            backups: vec![set(1), incr(2, &[3]), incr(3, &[2]), incr(4, &[2])],
            policy: last(1),
            now: 9,
            removed: vec![1],
        },
        Case {
            what: "image-only backups do not push restore points out: keep 5 keeps 5 set backups and the images",
            backups: (1..=7).map(set).chain([image(8), image(9)]).collect(),
            policy: last(5),
            now: 10,
            removed: vec![1, 2],
        },
        Case {
            what: "image-only backups are judged among themselves: keep 1 keeps the newest image and set backup",
            backups: vec![image(1), set(2), image(3), set(4), image(5)],
            policy: last(1),
            now: 10,
            removed: vec![1, 2, 3],
        },
        Case {
            what: "a backup holding sets and system/ is a restore point; the newest holding system/ stays",
            backups: vec![
                BackupInfo {
                    system: true,
                    ..set(1)
                },
                set(2),
                set(3),
            ],
            policy: last(1),
            now: 10,
            removed: vec![2],
        },
    ];
    for c in cases {
        let got = decide(&c.backups, &c.policy, parse_stamp(&day(c.now)).unwrap());
        assert_eq!(removed(&got), days(&c.removed), "{}: {got:#?}", c.what);
        assert_eq!(
            got.len(),
            c.backups.len(),
            "{}: every backup decided",
            c.what
        );
    }
}

/// A yearly rule over a chain crossing the year: the kept 2024 incremental keeps its full; the 2025 incremental
/// that nothing needs is the tail that goes.
#[test]
fn only_tails_of_chains_go() {
    let at = |s: &str, deps: &[&str]| BackupInfo {
        name: s.into(),
        time: parse_stamp(s).unwrap(),
        verified: true,
        sets: vec!["data".into()],
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    let (f1, i1, i2) = (
        "2024-12-30-000000",
        "2024-12-31-000000",
        "2025-01-01-000000",
    );
    let (f2, i3) = ("2025-01-05-000000", "2025-01-06-000000");
    let backups = vec![
        at(f1, &[]),
        at(i1, &[f1]),
        at(i2, &[f1, i1]),
        at(f2, &[]),
        at(i3, &[f2]),
    ];
    let policy = RetentionPolicy {
        last: Some(1),
        yearly: Some(2),
        ..Default::default()
    };
    let got = decide(&backups, &policy, parse_stamp("2025-02-01-000000").unwrap());
    assert_eq!(removed(&got), [i2], "{got:#?}");
    let reasons = |n: &str| got.iter().find(|d| d.name == n).unwrap().reasons.join("; ");
    assert_eq!(reasons(f1), format!("base of {i1}"));
    assert_eq!(reasons(f2), format!("base of {i3}"));
    assert_eq!(reasons(i1), "yearly: newest of 2024");
}

#[test]
fn reasons_say_why() {
    let mut backups: Vec<BackupInfo> = (1..=4).map(set).collect();
    backups[1].latest = true;
    backups.push(unverified(5));
    backups.push(incr(6, &[4]));
    backups.push(image(7));
    let got: Vec<(String, bool, String)> =
        decide(&backups, &last(2), parse_stamp(&day(9)).unwrap())
            .into_iter()
            .map(|d| (d.name, d.keep, d.reasons.join("; ")))
            .collect();
    assert_eq!(
        got,
        [
            (
                day(7),
                true,
                "newest verified backup; image-only backups: last 2".into()
            ),
            (day(6), true, "last 2".into()),
            (
                day(5),
                true,
                "no verified dbackup metadata: not dbackup's to judge, never touched".into()
            ),
            (day(4), true, format!("last 2; base of {}", day(6))),
            (day(3), false, "not kept by the policy (last 2)".into()),
            (day(2), true, "target of latest".into()),
            (day(1), false, "not kept by the policy (last 2)".into()),
        ]
    );
}

#[test]
// Stays long: a table of cases, one per entry.
fn make_room_table() {
    struct Case {
        what: &'static str,
        backups: Vec<BackupInfo>,
        needed_mib: u64,
        available_mib: u64,
        keep_at_least: u32,
        removed: Vec<u32>,
        fits: bool,
    }
    let cases = vec![
        Case {
            what: "it fits: nothing goes",
            backups: (1..=3).map(set).collect(),
            needed_mib: 10,
            available_mib: 10,
            keep_at_least: 2,
            removed: vec![],
            fits: true,
        },
        Case {
            what: "the oldest go first, only as many as needed",
            backups: (1..=5).map(set).collect(),
            needed_mib: 25,
            available_mib: 8,
            keep_at_least: 2,
            removed: vec![1, 2],
            fits: true,
        },
        Case {
            what: "never below keep_at_least: the newest two stay, even if that refuses",
            backups: (1..=3).map(set).collect(),
            needed_mib: 25,
            available_mib: 8,
            keep_at_least: 2,
            removed: vec![],
            fits: false,
        },
        Case {
            what: "keep_at_least 1 still keeps the newest verified backup",
            backups: (1..=2).map(set).collect(),
            needed_mib: 25,
            available_mib: 8,
            keep_at_least: 1,
            removed: vec![],
            fits: false,
        },
        Case {
            what: "the oldest chain goes whole: a full only with everything that depends on it",
            backups: two_chains()
                .into_iter()
                .chain([set(6), incr(7, &[6])])
                .collect(),
            needed_mib: 10,
            available_mib: 1,
            keep_at_least: 2,
            removed: vec![1, 2, 3],
            fits: true,
        },
        Case {
            what: "the newest keep_at_least restore points protect their whole chain",
            backups: vec![
                set(1),
                incr(2, &[1]),
                set(3),
                incr(4, &[3]),
                incr(5, &[3, 4]),
            ],
            needed_mib: 30,
            available_mib: 1,
            keep_at_least: 2,
            removed: vec![],
            fits: false,
        },
        Case {
            what: "the oldest full goes with the incremental that depends on it",
            backups: vec![set(1), incr(2, &[1]), set(3), set(4), set(5)],
            needed_mib: 5,
            available_mib: 0,
            keep_at_least: 2,
            removed: vec![1, 2],
            fits: true,
        },
        Case {
            what: "latest's target, unverified directories and backups from the future stay",
            backups: vec![
                unverified(1),
                BackupInfo {
                    latest: true,
                    ..set(2)
                },
                set(3),
                set(4),
                set(5),
                set(20),
            ],
            needed_mib: 10,
            available_mib: 0,
            keep_at_least: 2,
            removed: vec![3],
            fits: true,
        },
        Case {
            what: "old image-only backups go in age order; the newest image-only backup stays",
            backups: vec![image(1), set(2), image(3), set(4), set(5), image(6)],
            needed_mib: 150,
            available_mib: 0,
            keep_at_least: 2,
            removed: vec![1, 2, 3],
            fits: true,
        },
    ];
    for c in cases {
        let now = parse_stamp(&day(10)).unwrap();
        let room = make_room(
            &c.backups,
            c.needed_mib << 20,
            c.available_mib << 20,
            c.keep_at_least,
            now,
        );
        let got: Vec<String> = room.removed.iter().map(|d| d.name.clone()).collect();
        assert_eq!(
            (got, room.fits),
            (days(&c.removed), c.fits),
            "{}: {room:#?}",
            c.what
        );
        if c.fits {
            let freed: u64 = c
                .backups
                .iter()
                .filter(|b| c.removed.iter().any(|&d| day(d) == b.name))
                .map(|b| b.bytes)
                .sum();
            assert_eq!(room.freed_bytes, freed, "{}", c.what);
        } else {
            assert!(
                room.removable_bytes < (c.needed_mib - c.available_mib) << 20,
                "{}",
                c.what
            );
        }
    }
}

#[test]
fn room_reasons_name_the_chain() {
    let backups = vec![set(1), incr(2, &[1]), set(3), set(4)];
    let room = make_room(
        &backups,
        20 << 20,
        10 << 20,
        2,
        parse_stamp(&day(9)).unwrap(),
    );
    let got: Vec<(String, String)> = room
        .removed
        .iter()
        .map(|d| (d.name.clone(), d.reasons.join("; ")))
        .collect();
    let space = "for space: the new backup needs 10.0 MiB more than the drive has free; oldest restore points go first";
    assert_eq!(
        got,
        [
            (day(1), space.to_string()),
            (
                day(2),
                format!("{space}; depends on {}, which goes for space", day(1))
            ),
        ]
    );
}

/// A drive shared by two configs (one destination name, different sets): only the owner's backups are judged.
/// Another config's (`notes`) are kept with their reason, never counted among the owner's `last N` nor its
/// `keep_at_least`, never removed for space; an image-only backup is still judged; one warning names them.
#[test]
fn another_configs_backups_are_neither_judged_nor_removed_for_space() {
    let notes = |d: u32| b(d, &["notes"], &[], 10);
    let backups = vec![
        notes(1),
        set(2),
        notes(3),
        incr(4, &[2]),
        set(5),
        b(6, &["notes"], &[3], 1),
        image(7),
        image(8),
    ];
    let own = OwnSet::named(&["data"]);
    let owner = Owner::Sets(&own);
    let now = parse_stamp(&day(9)).unwrap();

    let ds = decide_own(&backups, owner, &last(1), now);
    assert_eq!(removed(&ds), days(&[2, 4, 7]));
    let why = |d: u32| {
        ds.iter()
            .find(|x| x.name == day(d))
            .map(|x| x.reasons.join("; "))
            .unwrap()
    };
    let other = "holds no set of this config: another config's (or this config's from before a set was renamed or \
                 its sources all changed), not judged";
    assert_eq!(why(6), other);
    assert_eq!(why(3), format!("{other}; base of {}", day(6)));
    assert_eq!(why(5), "last 1");
    // Judging everyone, the other config's oldest went (and day 3 stayed only as the base of day 6).
    assert_eq!(
        removed(&decide_own(&backups, Owner::Anyone, &last(1), now)),
        days(&[1, 2, 4, 7])
    );

    // For space: the owner's oldest chain, then its older image-only backup; never `notes`, and keep_at_least 1
    // counts the owner's restore points only.
    let room = make_room_own(&backups, owner, (120 << 20, 10 << 20), 1, now);
    let gone: Vec<String> = room.removed.iter().map(|d| d.name.clone()).collect();
    assert_eq!((gone, room.fits), (days(&[2, 4, 7]), true));
    let room = make_room_own(&backups, owner, (500 << 20, 10 << 20), 1, now);
    assert!(!room.fits && room.removed.is_empty(), "{room:?}");
    assert_eq!(room.removable_bytes, (10 + 1 + 100) << 20);

    let w = foreign_note(
        &backups,
        owner,
        ("drive", "rm -r /media/T9/backups/<stamp>"),
    )
    .unwrap();
    assert_eq!(
        w,
        format!(
            "3 backups on the drive hold no set of this config ({}, {}, {}: set notes): another config's that \
             uses this drive under the same destination name, or this config's from before a set was renamed or \
             its sources all changed; retention leaves them alone. If they are not wanted, delete them by hand \
             (rm -r /media/T9/backups/<stamp>)",
            day(1),
            day(3),
            day(6)
        )
    );
    assert_eq!(foreign_note(&backups, Owner::Anyone, ("drive", "x")), None);
    let mut mine = backups.clone();
    mine.retain(|b| !b.sets.contains(&"notes".to_string()));
    assert_eq!(foreign_note(&mine, owner, ("drive", "x")), None);
}

/// Whose a backup is, by its sets (metadata) or by its files' names (an unfinished upload): another config's holds
/// sets, none of them the owner's; one of no set (images only, or no archive yet) is nobody else's; a set whose
/// name begins like the owner's is not the owner's.
#[test]
fn another_configs_backup_is_told_by_its_sets_or_its_files() {
    let own = OwnSet::named(&["docs", "my.set"]);
    let owner = Owner::Sets(&own);
    let names = |names: &[&'static str]| owner.foreign_sets(names.iter().map(|n| (*n, vec![])));
    assert!(names(&["notes"]));
    assert!(!names(&["notes", "docs"]));
    assert!(!names(&[]));
    let files = |names: &[&'static str]| owner.foreign_files(names.iter().copied());
    assert!(files(&["notes.tar.part000", "notes.index.jsonl"]));
    assert!(files(&["docsx.tar.part003.age"]));
    assert!(!files(&["docs.tar.part000.age", "notes.tar"]));
    assert!(!files(&["my.set.index.age"]));
    assert!(!files(&["verification.sha256"]));
    assert!(!files(&[]));
}

/// Two configs with a set of the same name on one drive: a record of `data` whose sources share no path with this
/// config's `data` is another config's (or this set's before its sources all changed): never judged nor removed for
/// space. A record sharing one path is this config's; a record of no sources (an older `backup.json`) is this
/// config's by its name, as before.
#[test]
fn a_set_of_this_configs_name_from_other_sources_is_another_configs() {
    let from = |mut x: BackupInfo, paths: &[&str]| {
        let paths = paths.iter().map(PathBuf::from).collect();
        x.sources.insert("data".into(), paths);
        x
    };
    let backups = vec![
        set(1),
        from(set(2), &["/b/data"]),
        from(set(3), &["/a/data"]),
        from(set(4), &["/b/data", "/b/more"]),
        from(set(5), &["/a/data"]),
        from(incr(6, &[5]), &["/a/data"]),
        from(set(7), &["/a/other", "/b/data"]),
    ];
    let own = [OwnSet {
        name: "data".into(),
        paths: vec!["/b/data".into(), "/b/else".into()],
    }];
    let owner = Owner::Sets(&own);
    assert!(owner.owns_set("data", &[]));
    assert!(owner.owns_set("data", &[Path::new("/x"), Path::new("/b/data")]));
    assert!(!owner.owns_set("data", &[Path::new("/a/data")]));
    assert!(!owner.owns_set("notes", &[]));
    let now = parse_stamp(&day(9)).unwrap();

    let ds = decide_own(&backups, owner, &last(1), now);
    assert_eq!(removed(&ds), days(&[1, 2, 4]));
    assert_eq!(
        removed(&decide(&backups, &last(1), now)),
        days(&[1, 2, 3, 4, 5, 6])
    );
    let room = make_room_own(&backups, owner, (35 << 20, 10 << 20), 1, now);
    let gone: Vec<String> = room.removed.iter().map(|d| d.name.clone()).collect();
    assert_eq!((gone, room.fits), (days(&[1, 2, 4]), true));
    let room = make_room_own(&backups, owner, (100 << 20, 10 << 20), 1, now);
    assert!(!room.fits && room.removed.is_empty(), "{room:?}");

    let note = foreign_note(&backups, owner, ("drive", "x")).unwrap();
    assert!(
        note.starts_with(&format!(
            "3 backups on the drive hold no set of this config ({}, {}, {}: set data)",
            day(3),
            day(5),
            day(6)
        )),
        "{note}"
    );
    assert!(
        note.contains("or this config's from before a set was renamed or its sources all changed")
    );
}

/// `d` found damaged since it was verified (`restore --verify`, on day 8).
fn damaged(mut x: BackupInfo) -> BackupInfo {
    x.damaged = Some(format!("restore --verify, {}", &day(8)[..10]));
    x
}

/// A backup found damaged is no restore point, as one without verified metadata: retention neither counts it among
/// the N it keeps nor removes it, and says why; the newest verified backup is the newest intact one; an incremental
/// on a damaged full (broken, kept) keeps it as its base. Before: the damaged backups counted among "last 2", so the
/// intact full of day 2 was removed while the damaged ones were kept as the newest restore points.
#[test]
fn a_damaged_backup_is_no_restore_point_for_retention() {
    let now = parse_stamp(&day(9)).unwrap();
    let why = format!(
        "damaged (restore --verify, {}): not a restore point",
        &day(8)[..10]
    );
    let backups = vec![set(1), set(2), set(3), damaged(set(4)), damaged(set(5))];
    let got: Vec<(String, bool, String)> = decide(&backups, &last(2), now)
        .into_iter()
        .map(|d| (d.name, d.keep, d.reasons.join("; ")))
        .collect();
    let never =
        format!("{why}; never removed by retention: delete it by hand when it is not wanted");
    assert_eq!(
        got,
        [
            (day(5), true, never.clone()),
            (day(4), true, never.clone()),
            (day(3), true, "newest verified backup; last 2".into()),
            (day(2), true, "last 2".into()),
            (day(1), false, "not kept by the policy (last 2)".into()),
        ]
    );
    // Calendar rules alike: the damaged backup is not the newest of its day.
    let daily = RetentionPolicy {
        daily: Some(3),
        ..Default::default()
    };
    assert_eq!(
        removed(&decide(&backups, &daily, now)),
        Vec::<String>::new()
    );
    // As rotation reads a drive: the incremental on the damaged full is broken, no restore point either.
    let backups = judged_with(vec![set(1), set(2), set(3), incr(4, &[3]), set(5)], &[3]);
    let ds = decide(&backups, &last(2), now);
    assert_eq!(removed(&ds), days(&[1]));
    let full = ds.iter().find(|d| d.name == day(3)).unwrap();
    assert_eq!(
        full.reasons.join("; "),
        format!("{never}; base of {}", day(4))
    );
}

/// Space-aware rotation never counts a damaged backup among the `keep_at_least` restore points, never removes one
/// (it is not judged), and never removes the newest intact verified backup. Before: with the two newest damaged and
/// `keep_at_least` 2, the intact backups of days 1-3 could all go, the newest intact one among them.
#[test]
fn a_damaged_backup_is_no_restore_point_for_space() {
    let now = parse_stamp(&day(9)).unwrap();
    let backups = vec![set(1), set(2), set(3), damaged(set(4)), damaged(set(5))];
    let room = make_room(&backups, 40 << 20, 0, 2, now);
    assert!(!room.fits && room.removed.is_empty(), "{room:?}");
    assert_eq!(room.removable_bytes, 10 << 20, "only day 1 may go");
    let room = make_room(&backups, 10 << 20, 0, 2, now);
    let gone: Vec<String> = room.removed.iter().map(|d| d.name.clone()).collect();
    assert_eq!((gone, room.fits), (days(&[1]), true));
    // keep_at_least 1: the newest intact backup stays all the same.
    let room = make_room(&backups, 60 << 20, 30 << 20, 1, now);
    assert!(!room.fits && room.removed.is_empty(), "{room:?}");
    assert_eq!(room.removable_bytes, 20 << 20, "days 1 and 2 only");
}

/// `backups` as rotation reads them, the days `damaged` names found damaged (`restore --verify`, on day 8).
fn judged_with(backups: Vec<BackupInfo>, damaged: &[u32]) -> Vec<BackupInfo> {
    let why = format!("restore --verify, {}", &day(8)[..10]);
    let damaged = damaged.iter().map(|&d| (day(d), why.clone())).collect();
    BackupInfo::with_damage(backups, &damaged)
}

/// An incremental whose chain holds a damaged or missing link (`status` calls it BROKEN) is no restore point either:
/// not counted among the "last N" nor the `keep_at_least`, never the newest verified backup, never removed, and the
/// dry run says why. Before: with the full of day 1 intact, the full of day 2 damaged and incrementals on it on days 3
/// and 4, `last 2` and a new full on day 5 kept day 4 (and so 3 and 2) and removed day 1, the only intact restore
/// point but the new one; and so did a chain whose base (day 2) was deleted by hand.
#[test]
fn an_incremental_on_a_damaged_or_missing_base_is_no_restore_point() {
    let now = parse_stamp(&day(9)).unwrap();
    let never = "never removed by retention: delete it by hand when it is not wanted";
    let chain = vec![set(1), set(2), incr(3, &[2]), incr(4, &[2, 3]), set(5)];
    let backups = judged_with(chain.clone(), &[2]);
    let ds = decide(&backups, &last(2), now);
    assert_eq!(removed(&ds), Vec::<String>::new());
    let why = |d: u32| {
        ds.iter()
            .find(|x| x.name == day(d))
            .unwrap()
            .reasons
            .join("; ")
    };
    assert_eq!(why(1), "last 2");
    assert_eq!(why(5), "newest verified backup; last 2");
    assert_eq!(
        why(4),
        format!(
            "broken: its base {} is damaged: not a restore point; {never}",
            day(2)
        )
    );
    assert_eq!(
        why(3),
        format!(
            "broken: its base {} is damaged: not a restore point; {never}; base of {}",
            day(2),
            day(4)
        )
    );
    // Space: the intact full of day 1 is one of the keep_at_least 2; nothing else may go, so nothing does.
    let room = make_room(&backups, 40 << 20, 0, 2, now);
    assert!(!room.fits && room.removed.is_empty(), "{room:?}");
    assert_eq!(room.removable_bytes, 0, "{room:?}");

    // The base of day 2 deleted by hand: days 3 and 4 are broken, day 1 stays.
    let gone: Vec<BackupInfo> = chain.into_iter().filter(|x| x.name != day(2)).collect();
    let ds = decide(&judged_with(gone, &[]), &last(2), now);
    assert_eq!(removed(&ds), Vec::<String>::new());
    let d4 = ds.iter().find(|x| x.name == day(4)).unwrap();
    assert_eq!(
        d4.reasons.join("; "),
        format!(
            "broken: its base {} is missing or unverified: not a restore point; {never}",
            day(2)
        )
    );
    // An incremental on a broken one is broken in turn.
    let longer = vec![set(1), set(2), incr(3, &[2]), incr(6, &[3]), set(7)];
    let ds = decide(&judged_with(longer, &[2]), &last(2), now);
    assert_eq!(removed(&ds), Vec::<String>::new());
    let d6 = ds.iter().find(|x| x.name == day(6)).unwrap();
    assert!(
        d6.reasons[0].starts_with(&format!("broken: its base {} is broken itself", day(3))),
        "{d6:?}"
    );
}
