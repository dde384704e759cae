//! Chains of incremental archives on emulated drives (real loop devices: exFAT through mount.exfat-fuse, and ext4):
//! a full and five incrementals through every kind of change, each backup restored to exactly the snapshot it was
//! made from, and the GNU-tar-only rebuild of docs/RESTORE.md run on the newest.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dbackup::{ArchiveKind, IndexReader};
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::chain::{restore_backup, verify_backup};
use crate::fixtures::drive::{
    Description, assert_described, assert_sums_pass, content, describe, external, meta_of, sample,
};
use crate::fixtures::guide::run_tar_chain;
use crate::harness::Test;

const MIB: u64 = 1 << 20;

/// The sample's two sets backing up to the drive at `mp`, incrementals on, contents compared weekly
/// (`schedule.full`), keeping `local` snapshots and 10 backups.
fn chain_config(mp: &Path, local: u32) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "retention": {{ "local": {local}, "external": 10 }},
             "schedule": {{ "full": "weekly" }},
             "external": {{ "mode": "first", "incremental": {{ "enabled": true }} }},
             "backup_sets": [
               {{ "name": "config", "sources": ["~/.config", "~/.secrets"] }},
               {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{}" }} ] }}"#,
        mp.display()
    )
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Rewrites a file in place with other bytes of the same length and puts its mtime (to the nanosecond) back: size,
/// mtime, mode, owner and inode stay; only a content comparison can tell.
fn change_keeping_size_and_mtime(p: &Path) {
    let m = fs::metadata(p).unwrap();
    let mut bytes = fs::read(p).unwrap();
    bytes.iter_mut().for_each(|b| *b = !*b);
    fs::write(p, &bytes).unwrap();
    set_mtime(p, m.mtime(), m.mtime_nsec());
    let after = fs::metadata(p).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (m.len(), m.mtime(), m.mtime_nsec(), m.ino())
    );
}

/// `K` in the dry run's `..., K kept in earlier backups` for the data set's archive.
fn kept_in_dry_run(plan: &str) -> u64 {
    let line = plan
        .lines()
        .skip_while(|l| !l.starts_with("  archive   data.tar "))
        .nth(1)
        .filter(|l| l.contains("kept in earlier backups"))
        .unwrap_or_else(|| panic!("no estimate for data:\n{plan}"));
    let before = line.split(" kept in earlier backups").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A full and five incrementals of the sample home on a 64 MiB drive, with, between them: files added, changed in
/// size, in mode, in owner and in mtime alone, a symlink retargeted; a file deleted, one renamed and a directory
/// renamed; a hard link added; a file turned into a directory and back; and one file rewritten with the same size
/// and mtime (ns). That last change is made at step 4 together with `collect --full` (rsync --checksum, so the
/// snapshot holds the new bytes) while `retention.local` is 1, so the base's snapshot is gone and change detection
/// falls back to metadata, which cannot see it: the dry run counts it among the files kept in earlier backups. The
/// schedule is made due with the hidden `--now` a week ahead (`schedule.full` weekly: contents are compared when
/// the chain's last comparison, its full, is 6 days old); the dry run then says "contents compared", and the
/// incremental stores that file (`change_detection: content`, one file fewer kept than the metadata estimate).
///
/// Then every backup of the chain is verified and restored (into a directory on the root disk) and compared with
/// the snapshot it was made from as described when it was made: names, kinds, modes, owners, ns mtimes, symlink
/// targets, hard-link groups, contents. Nothing is relaxed on exFAT: the drive holds tar archives, which keep what
/// exFAT cannot (owners, modes, symlinks, ns mtimes), and the restore writes to the root disk. Last, the
/// `tar-chain` block of docs/RESTORE.md (the block itself, read from the guide) rebuilds the newest backup from the
/// drive with GNU tar and jq: the same tree. (Before: only a plain directory as the drive, and the guide's block
/// run on a chain of two.)
fn chain_on(fs_kind: Fs) {
    if !loopdev::require(&[fs_kind]) || !testkit::require_tools(&["jq"], "apt-get install jq") {
        return;
    }
    let drive = Drive::new(fs_kind, "T9", 64 * MIB);
    let mp = drive.mount_point().to_path_buf();
    let t = Test::new().config(&chain_config(&mp, 10));
    let write_config = |local: u32| {
        fs::write(t.path("config.json"), t.expand(&chain_config(&mp, local))).unwrap();
    };
    // A 2 MiB file keeps the incrementals under external.incremental.max_percent of the full.
    sample(&t, 2 * MIB);
    let data = t.home().join("data");
    chown(&data.join("projects/p11.txt"), 1234, 4321);
    chown(&data.join("private"), 1234, 4321);
    let rel = data.strip_prefix("/").unwrap().to_path_buf();
    let config_rel = t.home().join(".config");
    let config_rel = config_rel.strip_prefix("/").unwrap().to_path_buf();

    // (stamp, the data snapshot described, the config snapshot's .config described)
    let mut made: Vec<(String, Description, Description)> = Vec::new();
    for step in 0..6 {
        let mut collect_args = vec!["collect"];
        let mut external_args: Vec<String> = Vec::new();
        match step {
            0 => {}
            1 => {
                t.write("home/data/new/added.txt", content(3000, 1));
                t.write("home/data/new/deeper/more.txt", content(10, 2));
                t.write("home/data/projects/p05.txt", content(4321, 3));
                fs::set_permissions(
                    data.join("projects/p12.txt"),
                    fs::Permissions::from_mode(0o640),
                )
                .unwrap();
                chown(&data.join("projects/p13.txt"), 2000, 2000);
                fs::remove_file(data.join("link")).unwrap();
                std::os::unix::fs::symlink("projects/p02.txt", data.join("link")).unwrap();
            }
            2 => {
                fs::remove_file(data.join("projects/p06.txt")).unwrap();
                fs::rename(data.join("projects/p07.txt"), data.join("renamed.txt")).unwrap();
                fs::rename(data.join("bin"), data.join("tools")).unwrap();
            }
            3 => {
                fs::hard_link(data.join("projects/p08.txt"), data.join("p08-link")).unwrap();
                set_mtime(&data.join("projects/p14.txt"), 1_700_000_000, 987_654_321);
            }
            4 => {
                fs::remove_file(data.join("projects/p09.txt")).unwrap();
                t.write("home/data/projects/p09.txt/inside", "a directory now\n");
                change_keeping_size_and_mtime(&data.join("projects/p10.txt"));
                collect_args.push("--full");
                write_config(1);
            }
            _ => {
                fs::remove_dir_all(data.join("projects/p09.txt")).unwrap();
                t.write("home/data/projects/p09.txt", "a file again\n");
                write_config(10);
            }
        }
        t.cmd().args(&collect_args).status(0);
        if step == 4 {
            let base = &made[3].0;
            // The base's snapshot went with retention.local 1: metadata alone sees no change in p10.txt.
            let plan = t.cmd().args(["--dry-run", "external"]).status(0).stdout;
            assert!(
                plan.contains(&format!("incremental on {base} (chain 5 of 7): ")),
                "{plan}"
            );
            assert!(!plan.contains("contents compared"), "{plan}");
            let kept_by_metadata = kept_in_dry_run(&plan);
            // A week on, schedule.full (weekly) is due: contents are compared.
            let later = (chrono::Local::now() + chrono::Duration::days(7)).to_rfc3339();
            let plan = t
                .cmd()
                .args(["--dry-run", "external", "--now", &later])
                .status(0)
                .stdout;
            assert!(
                plan.contains(&format!(
                    "incremental on {base} (chain 5 of 7); contents compared (schedule.full)"
                )),
                "{plan}"
            );
            external_args = vec!["--now".into(), later];
            made.push(run_step(&t, &mp, step, &external_args, &rel, &config_rel));
            let dir = mp.join("backups").join(&made[4].0);
            let set = meta_of(&dir)
                .sets
                .into_iter()
                .find(|s| s.set == "data")
                .unwrap();
            assert_eq!(set.change_detection.as_deref(), Some("content"));
            let index = fs::read(dir.join("data.index.jsonl")).unwrap();
            let entries: Vec<_> = IndexReader::new(&index[..])
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let p10 = entries
                .iter()
                .find(|e| e.path.ends_with(b"projects/p10.txt"))
                .unwrap();
            assert_eq!(p10.stored_in, None, "the content comparison caught p10.txt");
            let kept = entries.iter().filter(|e| e.stored_in.is_some()).count() as u64;
            assert_eq!(
                kept + 1,
                kept_by_metadata,
                "metadata alone would have kept p10.txt in an earlier backup"
            );
            continue;
        }
        made.push(run_step(&t, &mp, step, &external_args, &rel, &config_rel));
    }

    let stamps: Vec<&str> = made.iter().map(|m| m.0.as_str()).collect();
    for (i, (stamp, data_tree, config_tree)) in made.iter().enumerate() {
        verify_backup(&t, stamp, false, 0).stdout_has("intact");
        let target = t.path(&format!("restored-{i}"));
        restore_backup(&t, stamp, &target);
        assert_described(data_tree, &target.join(&rel));
        assert_described(config_tree, &target.join(&config_rel));
        fs::remove_dir_all(&target).unwrap();
    }

    // GNU tar and jq alone, the guide's block as written, rebuild the newest backup of the chain.
    let dest = t.path("chain");
    run_tar_chain(&t, &mp, stamps[5], &dest, &stamps);
    assert_described(&made[5].1, &dest.join(&rel));
}

/// One external run of the chain (after its collect): the backup is verified on the drive, full at step 0 and an
/// incremental on the previous backup after, depending on every earlier one; the snapshots it was made from are
/// described now (retention may remove them later).
fn run_step(
    t: &Test,
    mp: &Path,
    step: usize,
    args: &[String],
    rel: &Path,
    config_rel: &Path,
) -> (String, Description, Description) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let plan = t
        .cmd()
        .args(["--dry-run", "external"])
        .args(&args)
        .status(0)
        .stdout;
    let stamp = external(t, &args, 0).destinations[0]
        .backup
        .clone()
        .unwrap();
    let dir = mp.join("backups").join(&stamp);
    assert_sums_pass(&dir);
    let m = meta_of(&dir);
    assert_eq!(m.depends_on.len(), step, "step {step}: {:?}", m.depends_on);
    let snapshot = |set: &str| -> PathBuf {
        let s = m.sets.iter().find(|s| s.set == set).unwrap();
        // The config set's archive (34 bytes of content, 20 KiB of tar) follows max_percent into fulls.
        if set == "config" {
            return t.root().join(&s.snapshot);
        }
        assert_eq!(
            s.kind == ArchiveKind::Full,
            step == 0,
            "step {step}: {plan}"
        );
        if step > 0 && step != 4 {
            assert_eq!(s.change_detection.as_deref(), Some("inode"), "step {step}");
        }
        t.root().join(&s.snapshot)
    };
    let data_tree = describe(&snapshot("data").join(rel));
    let config_tree = describe(&snapshot("config").join(config_rel));
    (stamp, data_tree, config_tree)
}

#[test]
fn exfat_chain_of_six_restores_every_snapshot() {
    chain_on(Fs::Exfat);
}

#[test]
fn ext4_chain_of_six_restores_every_snapshot() {
    chain_on(Fs::Ext4);
}
