//! Space-aware rotation on small emulated drives (real loop devices: exFAT through mount.exfat-fuse, and ext4) that
//! fill after a few backups: the dry run shows what goes before anything is deleted, the run removes the oldest
//! restore points for space, names them (output, report, run log, a warning that notifies), and refuses with the
//! numbers once `keep_at_least` forbids more.

use std::fs;

use dbackup::DestinationStatus;
use testkit::loopdev::{self, Fs};

use crate::fixtures::drive::{
    assert_sums_pass, backups, collect, config, content, destination, external, sample,
};
use crate::harness::Test;

const MIB: u64 = 1 << 20;

/// Full backups (`--full`: unchanged snapshots would otherwise make tiny incrementals) of about 6 MiB (a 6 MiB
/// incompressible file) onto a 32 MiB drive keeping 10: the drive fills after a few. Each run is dry-run first; the first whose plan removes for space must remove exactly what the plan said,
/// oldest first, keep the newest, exit 3 with the names in its warning, and log them; with `keep_at_least` raised
/// to the number of backups on the drive the next run is refused with the numbers, and nothing is removed. Before
/// (main): the first run that did not fit was refused ("delete some backups by hand") and the drive stayed full.
fn fills_and_rotates(fs_kind: Fs) {
    let Some((_drive, mp)) = loopdev::drive_or_skip(fs_kind, "T9", 32 * MIB) else {
        return;
    };
    let cfg = |keep_at_least: u32| {
        config(
            &[destination(
                "T9",
                &mp,
                &format!(r#""keep_at_least": {keep_at_least}"#),
            )],
            "first",
            10,
        )
    };
    let t = Test::new().config(&cfg(2));
    sample(&t, 0);
    t.write("home/data/big.bin", content(6 * MIB as usize, 11));
    collect(&t);

    let mut rotated_at = None;
    for run in 1..=8 {
        let before = backups(&mp);
        let out = t.cmd().args(["--dry-run", "external", "--full"]).output();
        let plan = out.stdout.clone();
        assert_eq!(backups(&mp), before, "a dry run removes nothing");
        let planned: Vec<String> = plan
            .lines()
            .filter(|l| l.starts_with("  remove    ") && l.contains("(for space: "))
            .map(|l| l["  remove    ".len()..][..17].to_string())
            .collect();
        if planned.is_empty() {
            assert_eq!(out.code, 0, "{plan}\n{}", out.stderr);
            let r = external(&t, &["--full"], 0);
            assert!(r.destinations[0].removed_for_space.is_empty());
            continue;
        }
        assert_eq!(out.code, 3, "removing for space is a warning: {plan}");
        assert!(
            plan.contains("  rotate    not enough space: would remove"),
            "{plan}"
        );
        assert!(run >= 3, "the drive holds at least two backups: {plan}");
        assert_eq!(
            planned,
            before[..planned.len()],
            "the oldest go first: {plan}"
        );
        let out = t.cmd().args(["--json", "external", "--full"]).status(3);
        let r: dbackup::ExternalReport = out.json();
        let d = &r.destinations[0];
        assert_eq!(d.status, DestinationStatus::Written, "{:?}", d.error);
        let removed: Vec<String> = d.removed_for_space.iter().map(|x| x.name.clone()).collect();
        assert_eq!(removed, planned);
        for name in &removed {
            assert!(
                out.stderr.contains("warning: the drive was full: removed")
                    && out.stderr.contains(name.as_str()),
                "the summary names it: {}",
                out.stderr
            );
            assert!(d.warnings[0].contains(name.as_str()), "{:?}", d.warnings);
        }
        assert!(
            d.warnings[0].starts_with("the drive was full: removed"),
            "{:?}",
            d.warnings
        );
        let new = d.backup.clone().unwrap();
        let mut want: Vec<String> = before[removed.len()..].to_vec();
        want.push(new.clone());
        assert_eq!(backups(&mp), want);
        assert_sums_pass(&mp.join("backups").join(&new));
        let log = fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap();
        let last = log.lines().last().unwrap();
        assert!(
            last.contains("removed_for_space") && last.contains(&removed[0]),
            "{last}"
        );
        rotated_at = Some(run);
        break;
    }
    assert!(
        rotated_at.is_some(),
        "the drive never filled: {:?}",
        backups(&mp)
    );

    // keep_at_least as many as the drive holds: nothing may go, so the run is refused with the numbers.
    let held = backups(&mp);
    fs::write(t.path("config.json"), t.expand(&cfg(held.len() as u32))).unwrap();
    let r = external(&t, &["--full"], 1);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Refused);
    let why = d.error.as_deref().unwrap();
    assert!(
        why.starts_with("not enough space: the backup needs ")
            && why.contains(&format!(
                "removing the oldest restore points would free only 0 B without going below keep_at_least {}",
                held.len()
            ))
            && why.ends_with("nothing was written"),
        "{why}"
    );
    assert_eq!(
        backups(&mp),
        held,
        "nothing removed when it would not fit anyway"
    );
}

#[test]
fn exfat_drive_that_fills_rotates_the_oldest_out() {
    fills_and_rotates(Fs::Exfat);
}

#[test]
fn ext4_drive_that_fills_rotates_the_oldest_out() {
    fills_and_rotates(Fs::Ext4);
}

/// Another config on the same small (48 MiB) ext4 drive with a set of the same name `data` (other sources), two ~6 MiB
/// backups of its own: this config's space-aware rotation (`keep_at_least` 1) removes only its own oldest backups
/// for space, never the other config's. Before: the other config's backups of `data` were this config's oldest
/// restore points and went first.
#[test]
fn rotation_for_space_never_removes_another_configs_set_of_the_same_name() {
    let Some((_drive, mp, dest, t)) = big_on_ext4(48, 1) else {
        return;
    };
    t.write("a-data/big.bin", content(6 * MIB as usize, 12));
    let other = t.write(
        "other.json",
        t.expand(&format!(
            r#"{{ "backup_root": "{{tmp}}/root-a", "image": {{ "kit": false }}, "retention": {{ "external": 10 }},
                 "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/a-data"] }} ],
                 "destinations": [ {dest} ] }}"#
        )),
    );
    let as_other = || {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), other.as_os_str()])
    };
    as_other().args(["collect"]).status(0);
    let second = std::time::Duration::from_millis(1100);
    for _ in 0..2 {
        as_other().args(["external", "--full"]).status(0);
        std::thread::sleep(second);
    }
    let theirs = backups(&mp);
    assert_eq!(theirs.len(), 2, "{theirs:?}");

    let mut rotated = Vec::new();
    for _ in 0..4 {
        let out = t.cmd().args(["--json", "external", "--full"]).output();
        assert!([0, 3].contains(&out.code), "{}\n{}", out.stdout, out.stderr);
        let r: dbackup::ExternalReport = out.json();
        rotated.extend(
            r.destinations[0]
                .removed_for_space
                .iter()
                .map(|x| x.name.clone()),
        );
        let now = backups(&mp);
        assert!(
            theirs.iter().all(|b| now.contains(b)),
            "{theirs:?} not all in {now:?}"
        );
        std::thread::sleep(second);
    }
    assert!(
        !rotated.is_empty(),
        "the drive never filled: {:?}",
        backups(&mp)
    );
    assert!(rotated.iter().all(|r| !theirs.contains(r)), "{rotated:?}");

    // A backup that cannot fit even so is refused, and the refusal does not count the other config's backups among
    // those to delete by hand.
    t.write("home/data/huge.bin", content(40 * MIB as usize, 13));
    collect(&t);
    let out = t.cmd().args(["external", "--full"]).output();
    assert_ne!(out.code, 0, "{}", out.stderr);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains(
            " by hand (2 more backups there hold no set of this config: another config's"
        ),
        "{said}"
    );
    let now = backups(&mp);
    assert!(theirs.iter().all(|b| now.contains(b)), "{now:?}");
}

/// A 32 MiB ext4 drive filled with ~6 MiB backups, all but the oldest then found damaged by `restore --verify`
/// (noted in `damaged.json`): with `keep_at_least` 2, the next backup that does not fit is refused and nothing is
/// removed, since the oldest is the newest intact verified backup and the damaged ones are no restore points (never
/// counted, never removed). Before: the damaged ones were the 2 restore points kept and the newest verified backup,
/// so the only intact backup was removed for space.
#[test]
fn rotation_for_space_never_removes_the_newest_intact_backup_for_damaged_ones() {
    let Some((_drive, mp, _, t)) = big_on_ext4(32, 2) else {
        return;
    };
    let mut full = false;
    for _ in 0..8 {
        let plan = t.cmd().args(["--dry-run", "external", "--full"]).output();
        if plan.stdout.contains("(for space: ") {
            full = true;
            break;
        }
        external(&t, &["--full"], 0);
    }
    let held = backups(&mp);
    assert!(full && held.len() >= 3, "the drive never filled: {held:?}");
    let records: Vec<serde_json::Value> = held[1..]
        .iter()
        .map(|b| {
            serde_json::json!({ "destination": "T9", "backup": b, "found": "2026-11-04T10:00:00+01:00",
                                "problem": "data.tar: its sha256 differs" })
        })
        .collect();
    let records = serde_json::json!({ "format": 1, "records": records });
    fs::create_dir_all(t.path("state/dbackup")).unwrap();
    fs::write(t.path("state/dbackup/damaged.json"), records.to_string()).unwrap();

    let plan = t.cmd().args(["--dry-run", "external", "--full"]).output();
    assert!(!plan.stdout.contains("(for space: "), "{}", plan.stdout);
    let r = external(&t, &["--full"], 1);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Refused);
    let why = d.error.as_deref().unwrap();
    assert!(
        why.starts_with("not enough space: the backup needs "),
        "{why}"
    );
    // The refusal names the damaged ones first: those are the ones to delete by hand.
    let first = format!(
        "no restore point, damaged or broken: {})",
        held[1..].join(", ")
    );
    assert!(why.contains(&first), "{first:?} not in {why}");
    assert_eq!(backups(&mp), held, "nothing removed for space");
}

/// An ext4 drive `T9` of `mib` MiB and a test writing to it first (keeping `keep_at_least`, retention 10), its sample
/// home with a 6 MiB incompressible `data/big.bin` collected once: the drive (kept while it lives), its mount point,
/// the destination's config text and the test; `None` where loop devices cannot be used.
fn big_on_ext4(
    mib: u64,
    keep_at_least: u32,
) -> Option<(loopdev::Drive, std::path::PathBuf, String, Test)> {
    let (drive, mp) = loopdev::drive_or_skip(Fs::Ext4, "T9", mib * MIB)?;
    let dest = destination("T9", &mp, &format!(r#""keep_at_least": {keep_at_least}"#));
    let t = Test::new().config(&config(std::slice::from_ref(&dest), "first", 10));
    sample(&t, 0);
    t.write("home/data/big.bin", content(6 * MIB as usize, 11));
    collect(&t);
    Some((drive, mp, dest, t))
}
