//! Faults during and after incremental backups on emulated drives (real loop devices, exFAT through
//! mount.exfat-fuse, and ext4 for kill -9 and the corrupted base): kill -9 and the drive pulled (lazy unmount, the
//! fuse daemon killed) while an incremental is written, and a base archive deleted by hand or corrupted behind the
//! filesystem.

use std::fs;
use std::path::{Path, PathBuf};

use dbackup::ArchiveKind;
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::drive::{
    assert_nothing_promoted, assert_same_tree, assert_sums_pass, backups, collect, collected_for,
    content, external, listing, meta_of, needle, new_backup, spawn_caught_writing,
    stopped_while_writing,
};
use crate::harness::{Output, Test};

const MIB: u64 = 1 << 20;

/// A chain on a 256 MiB drive: a full of the sample home, then an incremental after `p03.txt` changed; then
/// collected again, with a new 96 MiB file when `big` (the next, incremental, run then writes long enough to be
/// caught in the act).
struct World {
    t9: Drive,
    t: Test,
    mp: PathBuf,
    full: String,
    incremental: String,
}

/// The [`World`] on a drive of `fs`, or `None` (the test skips) without root, loop devices or that filesystem.
fn chain_world(fs: Fs, big: bool) -> Option<World> {
    if !loopdev::require(&[fs]) {
        return None;
    }
    let t9 = Drive::new(fs, "T9", 256 * MIB);
    let mp = t9.mount_point().to_path_buf();
    let t = collected_for("T9", &mp, 0);
    let full = new_backup(&t);
    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(&t);
    let incremental = new_backup(&t);
    let set = data_set(&mp, &incremental);
    assert_eq!(
        set.kind,
        ArchiveKind::Incremental,
        "incrementals are on by default"
    );
    assert_eq!(set.base.as_deref(), Some(full.as_str()));
    if big {
        t.write("home/data/big.bin", content(96 * MIB as usize, 7));
    }
    collect(&t);
    Some(World {
        t9,
        t,
        mp,
        full,
        incremental,
    })
}

fn data_set(mp: &Path, stamp: &str) -> dbackup::SetRecord {
    meta_of(&mp.join("backups").join(stamp))
        .sets
        .into_iter()
        .find(|s| s.set == "data")
        .unwrap()
}

/// `restore --source external --date <stamp> <args>`, expecting `code`.
fn restore(t: &Test, stamp: &str, args: &[&str], code: i32) -> Output {
    t.cmd()
        .args(["restore", "--source", "external", "--date", stamp])
        .args(args)
        .status(code)
}

/// One file of the sample's data set restored from `stamp` into a new directory, expecting `code`; the file's
/// bytes when restored.
fn restore_one(t: &Test, stamp: &str, file: &str, code: i32) -> (Option<Vec<u8>>, Output) {
    let target = t.path(&format!("one-{stamp}-{}", file.replace('/', "-")));
    let path = t.home().join("data").join(file);
    let out = restore(
        t,
        stamp,
        &[
            "--path",
            path.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ],
        code,
    );
    (
        fs::read(target.join(path.strip_prefix("/").unwrap())).ok(),
        out,
    )
}

/// The chain before the fault is whole: both backups listed, `LATEST` names the incremental, the sums pass, it
/// verifies through its base, and it restores to the snapshot it was made from.
fn assert_chain_intact(w: &World) {
    assert_eq!(backups(&w.mp), [w.full.clone(), w.incremental.clone()]);
    assert_eq!(
        dbackup::read_drive_latest(&w.mp.join("backups")).as_deref(),
        Some(w.incremental.as_str())
    );
    for b in [&w.full, &w.incremental] {
        assert_sums_pass(&w.mp.join("backups").join(b));
    }
    restore(&w.t, &w.incremental, &["--verify"], 0).stdout_has("intact");
    let target = w.t.path("intact");
    restore(
        &w.t,
        &w.incremental,
        &["--target", target.to_str().unwrap()],
        0,
    );
    let snap = w.t.root().join(data_set(&w.mp, &w.incremental).snapshot);
    let rel = w.t.home().join("data");
    let rel = rel.strip_prefix("/").unwrap();
    assert_same_tree(&snap.join(rel), &target.join(rel));
    fs::remove_dir_all(target).unwrap();
}

/// The run after a fault: the dry run says it removes the leftover and extends the chain, the run does, and the
/// new incremental verifies.
fn next_run_cleans_up_and_extends(w: &World) {
    let leftovers: Vec<String> = listing(&w.mp.join("backups"))
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    let plan = w.t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    for l in &leftovers {
        assert!(
            plan.contains(&format!("cleanup   would remove {l}")),
            "{plan}"
        );
    }
    assert!(
        plan.contains(&format!("incremental on {} (chain 3 of 7)", w.incremental)),
        "{plan}"
    );
    let r = external(&w.t, &[], 0);
    let d = &r.destinations[0];
    assert_eq!(d.cleaned, leftovers);
    let new = d.backup.clone().unwrap();
    assert_eq!(
        backups(&w.mp),
        [w.full.clone(), w.incremental.clone(), new.clone()]
    );
    let set = data_set(&w.mp, &new);
    assert_eq!(set.kind, ArchiveKind::Incremental);
    assert_eq!(set.base.as_deref(), Some(w.incremental.as_str()));
    assert!(
        !listing(&w.mp.join("backups"))
            .iter()
            .any(|n| n.starts_with(".tmp-"))
    );
    restore(&w.t, &new, &["--verify"], 0).stdout_has("intact");
}

/// The drive plugged in again after it went away mid-run (unmounted, mounted): the chain is whole and restores, and
/// the next run cleans up and extends it.
fn plugged_in_again_whole_and_extended(w: &World) {
    w.t9.unmount();
    w.t9.mount();
    assert_chain_intact(w);
    next_run_cleans_up_and_extends(w);
}

/// kill -9 while an incremental's archive is written: nothing is listed as a backup (only a leftover), the chain
/// before it is whole and restores, and the next run removes the leftover (its dry run says so) and writes the
/// incremental; on exFAT and on ext4. (Before: checked for fulls only; then on exFAT only.)
#[test]
fn kill_9_during_an_incremental_leaves_the_chain_whole() {
    for kind in [Fs::Exfat, Fs::Ext4] {
        let Some(w) = chain_world(kind, true) else {
            return;
        };
        let (mut child, temp) = spawn_caught_writing(&w.t, &w.mp, 2 * MIB);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            temp.exists(),
            "{kind:?}: the half-written incremental is still on the drive"
        );
        let l = dbackup::list_drive_backups(&w.mp.join("backups")).unwrap();
        assert_eq!(l.leftovers.len(), 1, "{kind:?}: listed only as a leftover");
        assert_chain_intact(&w);
        next_run_cleans_up_and_extends(&w);
    }
}

/// The drive pulled (`umount -l` of this test's own mount, with the archive open) while an incremental is
/// written: the run fails saying nothing was promoted, nothing reaches the empty mount point; plugged in again the
/// chain is whole and restores, and the next run cleans up and extends it. (Before: checked for fulls only.)
#[test]
fn drive_pulled_during_an_incremental_leaves_the_chain_whole() {
    let Some(w) = chain_world(Fs::Exfat, true) else {
        return;
    };
    let ((), _temp, code, stderr) =
        stopped_while_writing(&w.t, &w.mp, "data.tar", 2 * MIB, || w.t9.pull());
    assert_nothing_promoted(code, &stderr);
    assert!(listing(&w.mp).is_empty(), "{:?}", listing(&w.mp));
    plugged_in_again_whole_and_extended(&w);
}

/// The fuse daemon serving this test's drive killed while an incremental is written (the drive dies under the
/// run): the run fails; remounted, the chain is whole and restores, and the next run cleans up and extends it.
/// (Before: checked for fulls only.)
#[test]
fn drive_dying_during_an_incremental_leaves_the_chain_whole() {
    let Some(w) = chain_world(Fs::Exfat, true) else {
        return;
    };
    let (_, _temp, code, stderr) =
        stopped_while_writing(&w.t, &w.mp, "data.tar", 2 * MIB, || w.t9.kill_fuse());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is removed by the next run"), "{stderr}");
    plugged_in_again_whole_and_extended(&w);
}

/// The base (full) archive of an incremental deleted by hand: `--verify` of the incremental fails (exit 1) naming
/// the base backup and its archive; a file the incremental stores itself still restores, one kept in the base is
/// refused (exit 1); the next external's dry run says why it writes a full, and it does. (Before: checked on a
/// plain directory with the archive truncated.)
#[test]
fn a_base_deleted_by_hand_is_named_and_the_next_backup_is_full() {
    let Some(w) = chain_world(Fs::Exfat, false) else {
        return;
    };
    fs::remove_file(w.mp.join("backups").join(&w.full).join("data.tar")).unwrap();
    let named = [format!("backup {}'s data.tar", w.full)];
    broken_base_named_then_full(&w, &w.incremental, &named, "data.tar cannot be read");
}

/// The base (full) archive of an incremental corrupted behind the filesystem (one byte of a file the incremental
/// keeps in the base flipped on the device, same size): `--verify` of the base fails naming the archive and the
/// entry, a file the incremental stores itself still restores and the damaged one is refused, and the next
/// external writes a full, its dry run saying that `restore --verify` found the base damaged. (Before: a damage
/// of the same size was invisible to the next external, which extended the chain on the damaged base; then
/// checked on exFAT only.) On exFAT and on ext4.
#[test]
fn a_base_corrupted_behind_the_fs_is_named_and_the_next_backup_is_full() {
    for kind in [Fs::Exfat, Fs::Ext4] {
        let Some(w) = chain_world(kind, false) else {
            return;
        };
        let found = w.t9.find_on_device(&needle());
        assert_eq!(
            found.len(),
            1,
            "{kind:?}: the needle is in the full's data.tar once: {found:?}"
        );
        w.t9.flip_byte_behind_fs(found[0] + 40);
        // Remounted: no cached page holds the old byte.
        w.t9.unmount();
        w.t9.mount();
        // The incremental's own --verify checks that the base holds each referenced entry's header where its
        // index says (reading the referenced bytes too is `--verify --deep`); the base's --verify reads its whole
        // archive.
        let named = ["data.tar".to_string(), "projects/needle.txt".to_string()];
        let why = format!(
            "full: backup {} of the chain is damaged: restore --verify found it damaged on ",
            w.full
        );
        broken_base_named_then_full(&w, &w.full.clone(), &named, &why);
    }
}

/// `--verify` of `verified` fails naming `named`; then the rest of the chain's checks (see the callers).
fn broken_base_named_then_full(w: &World, verified: &str, named: &[String], why: &str) {
    let out = restore(&w.t, verified, &["--verify"], 1);
    let text = format!("{}{}", out.stdout, out.stderr);
    for n in named {
        assert!(text.contains(n.as_str()), "{n}: {text}");
    }

    // p03.txt is stored in the incremental; needle.txt is kept in the base.
    let (got, _) = restore_one(&w.t, &w.incremental, "projects/p03.txt", 0);
    assert_eq!(got.unwrap(), content(2000, 333));
    let (_, out) = restore_one(&w.t, &w.incremental, "projects/needle.txt", 1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("needle.txt"), "{text}");

    let plan = w.t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    assert!(plan.contains("            full: backup "), "{plan}");
    assert!(plan.contains(why), "{plan}");
    let new = new_backup(&w.t);
    let m = meta_of(&w.mp.join("backups").join(&new));
    assert!(m.depends_on.is_empty(), "{m:?}");
    assert!(m.sets.iter().all(|s| s.kind == ArchiveKind::Full), "{m:?}");
    restore(&w.t, &new, &["--verify"], 0).stdout_has("intact");
}
