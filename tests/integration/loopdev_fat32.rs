//! FAT32 end to end, on an emulated stick (a real loop device formatted by `mkfs.fat -F 32`, mounted by `fusefat`):
//! a set whose archive exceeds FAT32's largest file (4 GiB - 1 byte) is split into parts, verified, restored (one
//! file from the second part, and the whole set), and restored again with nothing but `cat`, GNU tar and sha256sum,
//! as docs/RESTORE.md says. The big file is generated (incompressible, from a seed) and compared by regenerating it,
//! never kept twice on disk.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use dbackup::archive::FAT32_MAX_PART_BYTES;
use dbackup::external::DestinationStatus;
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::drive::{assert_same_tree, backups, external, listing};
use crate::harness::Test;
use crate::restore::{guide_blocks, run_guide};

const MIB: u64 = 1 << 20;

/// A config with one set `data` (`~/data`) and the stick `STICK` at `mp`.
fn stick_config(mp: &Path) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "retention": {{ "local": 2, "external": 2 }},
             "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "STICK", "path": "{}", "fs_label": "STICK" }} ] }}"#,
        mp.display()
    )
}

/// A few small files, and the needle that sorts after everything else (`zz-needle.txt`).
fn small_files(t: &Test) {
    t.write("home/data/docs/a.txt", "alpha\n");
    t.write("home/data/docs/b.txt", "beta\n".repeat(1000));
    t.write(
        "home/data/zz-needle.txt",
        "the needle, after the big file\n",
    );
}

/// Deterministic incompressible bytes: xorshift64 words from `seed`, block `n` of 1 MiB.
fn block(seed: u64, n: u64, out: &mut [u8]) {
    let mut x = (seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    for w in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// Writes `len` bytes (a multiple of 1 MiB) of [`block`]s to `path`.
fn generate(path: &Path, len: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for n in 0..len / MIB {
        block(seed, n, &mut buf);
        f.write_all(&buf).unwrap();
    }
}

/// Whether `path` holds exactly what [`generate`] wrote.
fn same_as_generated(path: &Path, len: u64, seed: u64) -> bool {
    let mut f = File::open(path).unwrap();
    if f.metadata().unwrap().len() != len {
        return false;
    }
    let (mut want, mut got) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for n in 0..len / MIB {
        block(seed, n, &mut want);
        f.read_exact(&mut got).unwrap();
        if got != want {
            return false;
        }
    }
    true
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
fn available(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).unwrap();
    s.f_bavail * s.f_frsize
}

/// Whether the stick's driver keeps a directory's contents when the directory is renamed (what promotion does):
/// Debian's fusefat 0.1a does not, the kernel's vfat does.
fn keeps_renamed_directories(mp: &Path) -> bool {
    let (from, to) = (mp.join("probe-from"), mp.join("probe-to"));
    fs::create_dir(&from).unwrap();
    fs::write(from.join("f"), "x").unwrap();
    fs::rename(&from, &to).unwrap();
    let kept = to.join("f").exists();
    let _ = fs::remove_file(to.join("f"));
    fs::remove_dir(&to).unwrap();
    kept
}

/// Through a driver that drops a renamed directory's contents, the run must not claim a backup that is gone: it
/// fails naming the lost backup, leaves no stamp directory and does not write `LATEST`.
#[track_caller]
fn assert_lost_and_said(t: &Test, mp: &Path) -> String {
    let out = t.cmd().args(["--json", "external"]).status(1);
    let r: dbackup::external::ExternalReport = out.json();
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Failed);
    let why = d.error.as_deref().unwrap();
    assert!(
        why.contains("the drive lost backup ")
            && why.contains("when it was renamed into place")
            && why.contains("the empty directory was removed"),
        "{why}"
    );
    assert_eq!(backups(mp), Vec::<String>::new());
    let names = listing(&mp.join("backups"));
    assert!(
        !names.iter().any(|n| n == "LATEST" || n.starts_with("20")),
        "{names:?}"
    );
    out.stderr
}

/// A backup onto the FAT32 stick. Through a driver that renames directories correctly: detected as vfat (no
/// symlinks: `LATEST`), verified, `sha256sum -c` passes, restored identically. Through Debian's fusefat 0.1a (the only
/// FAT driver here: the kernel has no vfat module), whose rename of a directory drops its contents, the run fails
/// naming the lost backup ([`assert_lost_and_said`]). Before: no test wrote to FAT32, and on fusefat `external`
/// reported "verified and in place" for an empty directory.
#[test]
fn fat32_stick_takes_a_verified_backup_or_says_the_driver_lost_it() {
    if !loopdev::require(&[Fs::Fat32]) {
        return;
    }
    let stick = Drive::new(Fs::Fat32, "STICK", 300 * MIB);
    let mp = stick.mount_point().to_path_buf();
    let t = Test::new().config(&stick_config(&mp));
    small_files(&t);
    t.cmd().args(["collect"]).status(0);
    if !keeps_renamed_directories(&mp) {
        assert_lost_and_said(&t, &mp);
        return;
    }
    let r = external(&t, &[], 0);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Written, "{:?}", d.error);
    let stamp = d.backup.clone().unwrap();
    assert!(listing(&mp.join("backups")).contains(&"LATEST".to_string()));
    let dir = mp.join("backups").join(&stamp);
    let out = std::process::Command::new("sha256sum")
        .args(["-c", "verification.sha256"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let target = t.path("restored");
    t.cmd()
        .args([
            "restore", "--source", "external", "--set", "data", "--target",
        ])
        .args([target.as_os_str()])
        .status(0);
    let home = t.home();
    assert_same_tree(
        &target.join(home.join("data").strip_prefix("/").unwrap()),
        &home.join("data"),
    );
}

/// The issue's FAT32 test: a 4 GiB + 64 MiB file makes `data.tar` larger than FAT32's largest file, so the stick
/// gets `data.tar.part000` (4 GiB - 1 MiB) and `.part001`; the backup is read back and verified; the needle, whose
/// bytes the index places in the second part, is restored alone; the whole set is restored; and the guide's GNU-tar
/// blocks (`sha256sum -c`, then `cat data.tar.part* | tar -x`) restore it too. Before: the split writer was only
/// tested on plain directories; nothing had written to FAT32. Through fusefat, which drops a renamed directory's
/// contents, the test checks what it can: both parts written to the stick, read back and verified, then the run failing
/// because the promoted backup is gone ([`assert_lost_and_said`]).
#[test]
fn fat32_splits_a_set_larger_than_4_gib_and_restores_it() {
    if !loopdev::require(&[Fs::Fat32]) {
        return;
    }
    // The source, the snapshot and the stick each hold the big file for a while; never more than two at once.
    let scratch = std::env::temp_dir();
    if available(&scratch) < 10 << 30 {
        return testkit::skip(&format!(
            "the FAT32 split test needs 10 GiB free in {} (it writes a 4.06 GiB archive)",
            scratch.display()
        ));
    }
    let big_len = (4 << 30) + 64 * MIB;
    let seed = 4242;
    let stick = Drive::new(Fs::Fat32, "STICK", 5 << 30);
    let mp = stick.mount_point().to_path_buf();
    let t = Test::new().config(&stick_config(&mp));
    small_files(&t);
    let big = t.home().join("data/a-big.bin");
    generate(&big, big_len, seed);
    t.cmd().args(["collect"]).status(0);
    // The snapshot holds it now; the source's copy is not needed any more.
    fs::remove_file(&big).unwrap();

    if !keeps_renamed_directories(&mp) {
        // fusefat: the parts are written, read back from the stick and verified; then promotion loses them.
        let stderr = assert_lost_and_said(&t, &mp);
        assert!(
            stderr.contains("-> data.tar.part* (2 parts): ") && stderr.contains(": verified"),
            "{stderr}"
        );
        return;
    }
    let r = external(&t, &[], 0);
    let d = &r.destinations[0];
    assert_eq!(d.status, DestinationStatus::Written, "{:?}", d.error);
    let set = &d.sets[0];
    let parts: Vec<(&str, u64)> = set
        .archive
        .iter()
        .map(|f| (f.name.as_str(), f.bytes))
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0], ("data.tar.part000", FAT32_MAX_PART_BYTES));
    assert_eq!(parts[1].0, "data.tar.part001");
    assert!(set.tar_bytes > (4 << 30) - 1, "{}", set.tar_bytes);
    let stamp = d.backup.clone().unwrap();
    let dir = mp.join("backups").join(&stamp);
    // The snapshot's copy goes too: from here on only the stick holds the big file.
    let snapshot = t.root().join(&set.snapshot);
    fs::remove_file(snapshot.join(big.strip_prefix("/").unwrap())).unwrap();

    // The needle's bytes are in the second part (the index says where).
    let needle = t.home().join("data/zz-needle.txt");
    let rel = needle
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let index = fs::read_to_string(dir.join("data.index.jsonl")).unwrap();
    let line: serde_json::Value = index
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == rel.as_str())
        .unwrap_or_else(|| panic!("{rel} not in the index"));
    let offset = line["data_offset"].as_u64().unwrap();
    assert!(offset > FAT32_MAX_PART_BYTES, "{line}");

    // One file from the second part.
    let one = t.path("one");
    t.cmd()
        .args(["restore", "--source", "external", "--path"])
        .args([
            needle.as_os_str(),
            std::ffi::OsStr::new("--target"),
            one.as_os_str(),
        ])
        .status(0);
    assert_eq!(
        fs::read(one.join(&rel)).unwrap(),
        fs::read(&needle).unwrap()
    );

    // The whole set.
    let all = t.path("all");
    t.cmd()
        .args([
            "restore", "--source", "external", "--set", "data", "--target",
        ])
        .args([all.as_os_str()])
        .status(0);
    let restored = all.join(t.home().join("data").strip_prefix("/").unwrap());
    assert!(same_as_generated(
        &restored.join("a-big.bin"),
        big_len,
        seed
    ));
    fs::remove_file(restored.join("a-big.bin")).unwrap();
    assert_same_tree(&restored, &t.home().join("data"));
    fs::remove_dir_all(&all).unwrap();

    // Nothing but sha256sum, cat and GNU tar: the guide's first block (check) and its scratch restore.
    let blocks = guide_blocks("tar-only");
    let check = &blocks[0];
    let extract = blocks
        .iter()
        .find(|b| b.contains(".part000"))
        .expect("a block for split archives");
    let dest = t.path("guide");
    let stdout = run_guide(
        &t,
        &format!("{check}\n{extract}"),
        &[("DRIVE", &mp), ("DEST", &dest)],
    );
    assert!(
        stdout.contains("data.tar.part000: OK") && stdout.contains("data.tar.part001: OK"),
        "{stdout}"
    );
    let restored = dest.join(t.home().join("data").strip_prefix("/").unwrap());
    assert!(same_as_generated(
        &restored.join("a-big.bin"),
        big_len,
        seed
    ));
    fs::remove_file(restored.join("a-big.bin")).unwrap();
    assert_same_tree(&restored, &t.home().join("data"));
    fs::remove_dir_all(&dest).unwrap();
}
