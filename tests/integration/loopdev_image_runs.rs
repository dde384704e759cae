//! `dbackup image` inside the runs around it, on real loop devices and the emulated T9: partition images written by
//! `external` from the config's `image.devices` (in backup.json and verification.sha256, read back before promotion,
//! a read-write mounted device refused while the sets land), encrypted images (nothing on the drive readable without
//! the identity; with it, the same disk back; without it, nothing written), the confirmation asked before a block
//! device is overwritten, and the space check that counts the images. Built on `loopdev_image`'s disks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dbackup::{BackupMeta, ImageRestoreReport, list_drive_backups, read_backup_meta};
use testkit::loopdev::Drive;

use crate::fixtures::drive::{
    assert_sums_pass, caught_writing, content, listing, signal, spawn_caught_writing_file,
};
use crate::harness::{self, Test};
use crate::loopdev_image::{
    LoopDisk, MIB, Root, blkid, disk_with_root, image_backup, look_at_root, make_disk, partitioned,
    require,
};

/// A 1 GiB T9 and a disk whose root holds `big` bytes, both its partitions imaged to the T9 (`image create
/// --device <ESP> --device <root>`): the world and the image backup's metadata.
fn imaged_disk(big: usize) -> (Test, Drive, LoopDisk, BackupMeta) {
    let (t, t9, disk) = disk_and_t9(big);
    let meta = image_both_partitions(&t, &t9, &disk);
    (t, t9, disk, meta)
}

/// `image create --device <ESP> --device <root>` of `disk` to the T9: the image backup's metadata.
fn image_both_partitions(t: &Test, t9: &Drive, disk: &LoopDisk) -> BackupMeta {
    let dev = |n: u32| disk.part(n).display().to_string();
    t.cmd()
        .args(["image", "create", "--device", &dev(1), "--device", &dev(2)])
        .status(0);
    image_backup(t9).1
}

/// [`imaged_disk`] with a btrfs root (grown while mounted, on a mount point in `$TMPDIR`), and `$TMPDIR` a directory
/// of the test's own: the world, the disk, the image backup's metadata and that directory.
fn imaged_btrfs_disk_with_tmpdir(big: usize) -> (Test, Drive, LoopDisk, BackupMeta, PathBuf) {
    let t = Test::new();
    let t9 = Drive::exfat("T9", 1 << 30);
    let disk = disk_with_root(&t, big, Root::Btrfs);
    let tmp = t.path("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let t = t
        .config(&crate::loopdev_image::config(&t9, ""))
        .env("TMPDIR", &tmp);
    let meta = image_both_partitions(&t, &t9, &disk);
    (t, t9, disk, meta, tmp)
}

/// `image restore --yes --grow --from <stamp> --to <target>`.
fn restore_grown(t: &Test, stamp: &str, target: &Path) -> harness::Cmd {
    t.cmd()
        .args([
            "image", "restore", "--yes", "--grow", "--from", stamp, "--to",
        ])
        .args([target])
}

/// The names of the grow mount points (`dbackup-grow-*`) in `tmp`, sorted.
fn grow_dirs(tmp: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dbackup-grow-"))
        .collect();
    v.sort();
    v
}

/// A blank 640 MiB disk image file of the test's, to restore onto: `new.img`.
fn blank_target(t: &Test) -> PathBuf {
    let new = t.path("new.img");
    blank(&new, 640 * MIB);
    new
}

/// [`imaged_disk`] with 1 MiB of data: the world, the T9, the image backup's metadata and directory, and the root's
/// image file.
fn imaged_root() -> (Test, Drive, BackupMeta, PathBuf, PathBuf) {
    let (t, t9, _disk, meta) = imaged_disk(1 << 20);
    let (dir, _) = image_backup(&t9);
    let rec = &meta.system.as_ref().unwrap().images[1];
    let image = dir.join("system").join(&rec.file.name);
    (t, t9, meta, dir, image)
}

/// A 1 GiB T9 and a disk whose ext4 root holds `big` bytes, with a config naming the T9 (nothing imaged yet).
fn disk_and_t9(big: usize) -> (Test, Drive, LoopDisk) {
    let t = Test::new();
    let t9 = Drive::exfat("T9", 1 << 30);
    let disk = disk_with_root(&t, big, Root::Ext4);
    let t = t.config(&crate::loopdev_image::config(&t9, ""));
    (t, t9, disk)
}

/// A config with one set, `image.devices`, and the T9 (`t9_extra` inside its object, `more` destinations after it).
fn config_images(t9: &Drive, t9_extra: &str, devices: &[PathBuf], more: &str) -> String {
    let devices = devices
        .iter()
        .map(|d| format!("\"{}\"", d.display()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "image": {{ "devices": [{devices}] }},
             "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9"{t9_extra} }}{more} ] }}"#,
        t9.mount_point().display()
    )
}

/// A sparse file of `size` bytes (a blank disk image).
fn blank(path: &Path, size: u64) {
    fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// Bytes of a file that are allocated on disk: 0 while nothing was ever written into a blank sparse file.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// The backups on the drive (stamps), oldest first.
fn stamps(t9: &Drive) -> Vec<String> {
    listing(&t9.mount_point().join("backups"))
        .into_iter()
        .filter(|n| n.starts_with("20"))
        .collect()
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// With a destination that encrypts, `external` (from `image.devices`) and `image create` both write
/// `system/<name>.img.zst.age`, every `system/` file an age file; no slice of the root's data is anywhere on the
/// drive's device (while the same slices are in a plain image of the same disk); `image restore` without an identity,
/// or with the wrong one, fails before the target is touched; with `--identity` it gives the same disk on a larger
/// blank one (fsck clean, UUIDs and PARTUUIDs kept, every file identical). Before, only plain images were tested
/// end to end.
#[test]
fn t9_encrypted_images_are_unreadable_and_restore_only_with_the_identity() {
    if !require() {
        return;
    }
    let t = Test::new();
    let (identity, recipient) = t.keygen("id.txt");
    let (wrong, _) = t.keygen("wrong.txt");
    let t9 = Drive::exfat("T9", 256 * MIB);
    let disk = disk_with_root(&t, 6 << 20, Root::Ext4);
    let plain = t.path("plain");
    fs::create_dir_all(&plain).unwrap();
    let t = t.config(&config_images(
        &t9,
        &format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#),
        &[disk.part(1), disk.part(2)],
        &format!(
            r#", {{ "name": "plain", "path": "{}", "require_mount": false }}"#,
            plain.display()
        ),
    ));
    t.write("home/data/a.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let (ext_dir, ext_meta) = image_backup(&t9);
    assert_eq!(ext_meta.sets.len(), 1, "the set landed with the images");
    t.cmd().args(["image", "create"]).status(0);
    let (create_dir, _) = image_backup(&t9);
    assert_ne!(create_dir, ext_dir);
    t.cmd()
        .args(["image", "create", "--destination", "plain"])
        .status(0);

    let p2 = disk.part_name(2);
    for dir in [&ext_dir, &create_dir] {
        let meta = read_backup_meta(&dir.join("backup.json")).unwrap();
        let system = meta.system.as_ref().unwrap();
        assert!(system.encryption.is_some(), "{system:?}");
        assert_eq!(system.images.len(), 2, "{system:?}");
        assert!(
            system
                .images
                .iter()
                .any(|i| i.file.name == format!("{p2}.img.zst.age")),
            "{system:?}"
        );
        for f in system.files() {
            assert!(f.name.ends_with(".age"), "{}", f.name);
            let bytes = fs::read(dir.join("system").join(&f.name)).unwrap();
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{} is not an age file",
                f.name
            );
        }
        assert!(!dir.join("system/RESTORE-SYSTEM.md").exists());
        assert_sums_pass(dir);
    }

    // Slices of the root's incompressible data: in the plain image (zstd stores them as they are), nowhere on the
    // encrypted drive.
    let big = content(6 << 20, 7);
    let needles: Vec<&[u8]> = [1usize << 20, 5 << 20]
        .iter()
        .map(|&at| &big[at..at + 64])
        .collect();
    let plain_backup = fs::read_dir(plain.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("backup.json").is_file())
        .expect("the plain backup");
    let plain_image = fs::read(plain_backup.join(format!("system/{p2}.img.zst"))).unwrap();
    for n in &needles {
        assert!(
            has(&plain_image, n),
            "the control: a plain image holds the data"
        );
    }
    t9.unmount();
    for n in &needles {
        assert_eq!(
            t9.find_on_device(n),
            Vec::<u64>::new(),
            "plaintext on the drive"
        );
    }
    t9.mount();

    // Without the identity, and with the wrong one: refused before anything is written.
    let new = blank_target(&t);
    let restore = |json: bool, extra: &[&Path]| {
        let mut cmd = t
            .cmd()
            .args(if json { &["--json"][..] } else { &[][..] })
            .args(["image", "restore", "--from", &ext_meta.stamp, "--to"])
            .args([&new])
            .args(["--grow"]);
        for id in extra {
            cmd = cmd.args(["--identity".as_ref(), id.as_os_str()]);
        }
        cmd
    };
    for (ids, what) in [
        (vec![], "no identity"),
        (vec![wrong.as_path()], "the wrong identity"),
    ] {
        let out = restore(false, &ids).output();
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        out.stderr_has("identit");
        assert_eq!(allocated(&new), 0, "{what}: the target was written to");
    }

    // With it: the same disk.
    let out = restore(true, &[identity.as_path()]).status(0);
    let report: ImageRestoreReport = out.json();
    assert!(report.ok(), "{report:?}");
    let restored = LoopDisk::attach(&new);
    for n in [1, 2] {
        for what in ["UUID", "PARTUUID"] {
            assert_eq!(
                blkid(&restored.part(n), what),
                blkid(&disk.part(n), what),
                "partition {n} {what}"
            );
        }
    }
    testkit::run("fsck.fat", ["-n".as_ref(), restored.part(1).as_os_str()]);
    testkit::run(
        "e2fsck",
        ["-f".as_ref(), "-n".as_ref(), restored.part(2).as_os_str()],
    );
    let look = |d: &LoopDisk, at: &str| look_at_root(&t, d, at).0;
    let before = look(&disk, "mnt/old");
    assert!(before.len() > 35, "{before:#?}");
    assert_eq!(before, look(&restored, "mnt/new"));
}

/// `external` images the config's `image.devices` into each backup beside the sets: `--dry-run` says what they may
/// take; the images are in backup.json and verification.sha256 (`sha256sum -c` passes) and `latest` moves. A device
/// mounted read-write is refused with the reason, the run ends with warnings (exit 3) and the sets and the other image
/// still land. A drive pulled while an image is written leaves nothing promoted and `latest` where it was. Before,
/// only `image create` was tested with images; `external` was tested with the kit alone.
#[test]
fn t9_external_images_the_configured_devices_and_refuses_one_in_use() {
    if !require() {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 1 << 30);
    let disk = disk_with_root(&t, 96 << 20, Root::Ext4);
    let t = t.config(&config_images(&t9, "", &[disk.part(1), disk.part(2)], ""));
    t.write("home/data/a.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);
    let name = |n: u32| disk.part_name(n);

    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("in use (partclone's count)")
        .stdout_has("of which system/ may take");
    assert!(stamps(&t9).is_empty(), "a dry run writes nothing");

    t.cmd().args(["external"]).status(0);
    let (dir, meta) = image_backup(&t9);
    assert_eq!(meta.sets.len(), 1);
    let system = meta.system.as_ref().unwrap();
    assert_eq!(system.images.len(), 2, "{system:?}");
    assert!(system.images.iter().all(|i| i.checked));
    assert!(system.images[1].used_bytes > 96 * MIB, "{system:?}");
    let sums = fs::read_to_string(dir.join("verification.sha256")).unwrap();
    for n in [1, 2] {
        assert!(
            sums.contains(&format!("  system/{}.img.zst\n", name(n))),
            "{sums}"
        );
    }
    assert_sums_pass(&dir);
    let latest = || {
        list_drive_backups(&t9.mount_point().join("backups"))
            .unwrap()
            .latest
    };
    assert_eq!(latest().as_deref(), Some(meta.stamp.as_str()));

    // The root mounted read-write: not imaged, with the reason; the set and the ESP land.
    let mp = t.path("mnt/rw");
    fs::create_dir_all(&mp).unwrap();
    testkit::run("mount", [disk.part(2).as_os_str(), mp.as_os_str()]);
    let out = t.cmd().args(["external"]).output();
    testkit::run("umount", [mp.as_os_str()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    out.stderr_has(&format!("not imaged: {}", disk.part(2).display()))
        .stderr_has("mounted read-write at");
    let (dir2, meta2) = image_backup(&t9);
    assert_ne!(dir2, dir);
    assert_eq!(meta2.sets.len(), 1, "the set still lands");
    let system2 = meta2.system.as_ref().unwrap();
    assert_eq!(system2.images.len(), 1);
    assert_eq!(system2.images[0].name, name(1));
    assert_eq!(system2.refused.len(), 1, "{system2:?}");
    assert!(system2.refused[0].reason.contains("mounted read-write"));
    assert_sums_pass(&dir2);
    let before = stamps(&t9);
    assert_eq!(latest().as_deref(), Some(meta2.stamp.as_str()));

    // The drive pulled while the root's image is written: nothing promoted, latest unchanged.
    let image = format!("system/{}.img.zst", name(2));
    let (mut child, _) = spawn_caught_writing_file(&t, t9.mount_point(), &image, 4 * MIB + 1);
    t9.pull();
    let status = child.wait().unwrap();
    let stderr = harness::read_stderr(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was promoted"), "{stderr}");
    t9.mount();
    assert_eq!(stamps(&t9), before);
    assert_eq!(latest().as_deref(), Some(meta2.stamp.as_str()));
}

/// Runs `dbackup image restore --from STAMP --to DEV` on a pseudo-terminal (`script`), typing `typed`; (exit code,
/// everything printed).
fn restore_on_a_terminal(t: &Test, stamp: &str, target: &Path, typed: &str) -> (i32, String) {
    let args = format!("image restore --from {stamp} --to {}", target.display());
    crate::fixtures::terminal::run(t, &args, typed, 300)
}

/// Whether the first MiB of a block device (where the partition table goes) is all zeros, read past the cache.
fn first_mib_blank(dev: &Path) -> bool {
    let _ = testkit::try_run("blockdev", ["--flushbufs".as_ref(), dev.as_os_str()]);
    let mut buf = vec![0u8; MIB as usize];
    let mut f = fs::File::open(dev).unwrap();
    std::io::Read::read_exact(&mut f, &mut buf).unwrap();
    buf.iter().all(|b| *b == 0)
}

/// `image restore` onto a block device asks first: without a terminal and without `--yes` it is refused naming
/// `--yes` (exit 2); on a terminal, answering "n", "yes" or nothing (end of input) writes nothing and exits 1;
/// typing the device's name restores. The target's first MiB stays blank until then. Before, the prompt was not
/// tested (every test restored onto files, which are not asked about).
#[test]
fn t9_image_restore_onto_a_block_device_asks_first() {
    if !require() {
        return;
    }
    if !crate::fixtures::terminal::available() {
        return;
    }
    let (t, _t9, disk, meta) = imaged_disk(1 << 20);
    let stamp = meta.stamp.clone();
    let blank_file = t.path("blank.img");
    blank(&blank_file, 400 * MIB);
    let target = LoopDisk::attach(&blank_file);

    let out = t
        .cmd()
        .args(["image", "restore", "--from", &stamp, "--to"])
        .args([&target.device])
        .status(2);
    out.stderr_has("no terminal to confirm on")
        .stderr_has("--yes");
    assert!(first_mib_blank(&target.device));
    // With --json too, the plan is on stderr before the question (stdout holds only the JSON): the user does not
    // confirm blind.
    let out = t
        .cmd()
        .args(["--json", "image", "restore", "--from", &stamp, "--to"])
        .args([&target.device])
        .status(2);
    out.stderr_has(&format!("image restore from backup {stamp}"))
        .stderr_has("the layout needs")
        .stderr_has("no terminal to confirm on");
    let _: serde_json::Value = out.json();
    let (code, shown) = crate::fixtures::terminal::run(
        &t,
        &format!(
            "--json image restore --from {stamp} --to {}",
            target.device.display()
        ),
        "n\n",
        300,
    );
    assert_eq!(code, 1, "{shown}");
    let plan = shown
        .find(&format!("image restore from backup {stamp}"))
        .unwrap_or_else(|| panic!("--json: the plan is shown: {shown}"));
    let asked = shown.find("Type the device name").expect("asked");
    assert!(
        plan < asked,
        "--json: the plan comes before the question: {shown}"
    );
    assert!(first_mib_blank(&target.device));

    for (typed, what) in [("n\n", "n"), ("yes\n", "yes"), ("", "end of input")] {
        let (code, out) = restore_on_a_terminal(&t, &stamp, &target.device, typed);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains("Type the device name"), "{what}: {out}");
        assert!(
            out.contains("not confirmed") && out.contains("nothing was written"),
            "{what}: {out}"
        );
        assert!(
            first_mib_blank(&target.device),
            "{what}: the target was written to"
        );
        if what == "yes" {
            assert!(out.contains("type the device name"), "{out}");
        }
    }

    let typed = format!("{}\n", target.device.display());
    let (code, out) = restore_on_a_terminal(&t, &stamp, &target.device, &typed);
    assert_eq!(code, 0, "{out}");
    for n in [1, 2] {
        assert_eq!(blkid(&target.part(n), "UUID"), blkid(&disk.part(n), "UUID"));
    }
}

/// The space check counts the images: a drive with room for the set but not for the root's image (96 MiB in use,
/// incompressible) is refused before anything is written, by `image create` and by `external` (their dry runs say
/// why, naming partclone's count); a drive with room takes them. Before, `image create` wrote until the drive was
/// full and `external` counted only the archives.
#[test]
fn t9_a_drive_too_small_for_the_images_is_refused_before_writing() {
    if !require() {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 64 * MIB);
    let disk = disk_with_root(&t, 96 << 20, Root::Ext4);
    let t = t.config(&config_images(&t9, "", &[disk.part(2)], ""));
    t.write("home/data/a.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);

    let dry = t.cmd().args(["--dry-run", "image", "create"]).status(1);
    dry.stdout_has("REFUSED   not enough space")
        .stdout_has("in use (partclone's count)");
    let out = t.cmd().args(["image", "create"]).status(1);
    out.stderr_has("not enough space")
        .stderr_has("nothing was written");

    let dry = t.cmd().args(["--dry-run", "external"]).output();
    assert_ne!(dry.code, 0, "{}", dry.stdout);
    dry.stdout_has("not enough space")
        .stdout_has("partclone finds in use");
    let out = t.cmd().args(["external"]).output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    out.stderr_has("not enough space");
    assert_eq!(
        listing(&t9.mount_point().join("backups"))
            .iter()
            .filter(|n| !n.starts_with(".dbackup"))
            .count(),
        0,
        "nothing was written: {:?}",
        listing(&t9.mount_point().join("backups"))
    );

    // Without the image, the same drive takes the backup.
    let t = t.config(&config_images(&t9, "", &[], ""));
    t.cmd().args(["external"]).status(0);
}

/// `image restore --name NAME --to PART` puts one image onto an existing partition of another, larger disk: the
/// root's ext4 replaces the vfat there with its UUID and every file, `--grow` fills the partition, the partition
/// keeps its own PARTUUID and the disk's ESP is untouched. Without `--name` (the backup holds two images), or onto a
/// partition smaller than the filesystem, nothing is written. Before, a partition target was always refused ("give
/// the whole disk").
#[test]
fn t9_one_image_restores_onto_one_partition() {
    if !require() {
        return;
    }
    let (t, _t9, disk, meta) = imaged_disk(1 << 20);
    let root_name = disk.part_name(2);

    let target = make_disk(&t.path("other.img"), 640 * MIB);
    testkit::run(
        "mkfs.fat",
        ["-F".as_ref(), "32".as_ref(), target.part(2).as_os_str()],
    );
    let esp_uuid = blkid(&target.part(1), "UUID");
    let partuuid = blkid(&target.part(2), "PARTUUID");
    let restore = |name: Option<&str>, to: &Path| {
        let mut cmd = t
            .cmd()
            .args(["--json", "image", "restore", "--yes", "--from", &meta.stamp]);
        if let Some(n) = name {
            cmd = cmd.args(["--name", n]);
        }
        cmd.args(["--grow".as_ref(), "--to".as_ref(), to.as_os_str()])
    };

    let out = restore(None, &target.part(2)).status(1);
    out.stderr_has("named with --name");
    let out = restore(Some(&root_name), &target.part(1)).status(1);
    out.stderr_has("smaller than the");
    assert_eq!(
        blkid(&target.part(2), "TYPE"),
        "vfat",
        "nothing was written"
    );
    assert_eq!(blkid(&target.part(1), "UUID"), esp_uuid);

    let report: ImageRestoreReport = restore(Some(&root_name), &target.part(2)).status(0).json();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.partitions.len(), 1);
    assert_eq!(blkid(&target.part(2), "TYPE"), "ext4");
    assert_eq!(blkid(&target.part(2), "UUID"), blkid(&disk.part(2), "UUID"));
    assert_eq!(blkid(&target.part(2), "PARTUUID"), partuuid);
    assert_eq!(
        blkid(&target.part(1), "UUID"),
        esp_uuid,
        "the ESP is untouched"
    );
    testkit::run(
        "e2fsck",
        ["-f".as_ref(), "-n".as_ref(), target.part(2).as_os_str()],
    );
    let (before, size_before) = look_at_root(&t, &disk, "mnt/old");
    let (after, size_after) = look_at_root(&t, &target, "mnt/new");
    assert_eq!(before, after);
    assert!(
        size_after > size_before + 200 * MIB,
        "grown to the partition's end: {size_before} -> {size_after}"
    );
}

/// A disk whose partitions are 1 and 3 (2 was deleted, as on many disks that lived a while): both imaged, then
/// restored onto a blank disk image, each onto its own number with its UUID, PARTUUID and files; no partition 2 is
/// made. Before, the table read back from the drive numbered them 1 and 2: the restore was refused ("image ... is of
/// partition 3, which its disk's table does not have"), and `--name` of the third would have written it into the
/// second slot of a renumbered table.
#[test]
fn t9_a_disk_whose_partition_numbers_skip_one_restores_each_onto_its_own() {
    if !require() {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 256 * MIB);
    let t = t.config(&crate::loopdev_image::config(&t9, ""));
    let disk = partitioned(
        &t.path("old.img"),
        96 * MIB,
        "label: gpt\nunit: sectors\n\n\
         /dev/x1 : start=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, name=\"one\"\n\
         /dev/x3 : start=45056, size=81920, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, name=\"three\"\n",
    );
    let tree = t.path("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    fs::write(tree.join("d/f"), "on the third\n").unwrap();
    for (n, label) in [(1, "one"), (3, "three")] {
        testkit::run(
            "mkfs.ext4",
            [
                "-q".as_ref(),
                "-F".as_ref(),
                "-L".as_ref(),
                label.as_ref(),
                "-d".as_ref(),
                tree.as_os_str(),
                disk.part(n).as_os_str(),
            ],
        );
    }
    let dev = |n: u32| disk.part(n).display().to_string();
    t.cmd()
        .args(["image", "create", "--device", &dev(1), "--device", &dev(3)])
        .status(0);
    let (_, meta) = image_backup(&t9);
    let new = t.path("new.img");
    blank(&new, 128 * MIB);
    let report: ImageRestoreReport = t
        .cmd()
        .args(["--json", "image", "restore", "--from", &meta.stamp, "--to"])
        .args([&new])
        .status(0)
        .json();
    assert!(report.ok(), "{report:?}");
    let numbers: Vec<u32> = report.partitions.iter().map(|p| p.partition).collect();
    assert_eq!(numbers, [1, 3]);
    let restored = LoopDisk::attach(&new);
    for n in [1, 3] {
        for what in ["UUID", "PARTUUID", "LABEL"] {
            assert_eq!(
                blkid(&restored.part(n), what),
                blkid(&disk.part(n), what),
                "partition {n}: {what}"
            );
        }
    }
    let dump = testkit::run("sfdisk", ["-d".as_ref(), new.as_os_str()]);
    assert_eq!(dump.matches(" : start=").count(), 2, "{dump}");
    let third = testkit::run(
        "debugfs",
        [
            "-R".as_ref(),
            "cat /d/f".as_ref(),
            restored.part(3).as_os_str(),
        ],
    );
    assert_eq!(third, "on the third\n");
}

/// The plan of a restore onto a disk image file says what the file holds, as it does for a block device: its
/// partition table, the filesystems of the loop device it is attached to, or data blkid does not know; a blank file
/// holds nothing. Before, a file's plan listed nothing to overwrite, whatever it held (a VM's disk, the very disk
/// imaged), and a file is written without asking.
#[test]
fn t9_a_restore_onto_a_disk_image_file_says_what_it_overwrites() {
    if !require() {
        return;
    }
    let (t, _t9, disk, meta) = imaged_disk(1 << 20);
    let plan_onto = |file: &Path| {
        t.cmd()
            .args([
                "--dry-run",
                "image",
                "restore",
                "--from",
                &meta.stamp,
                "--to",
            ])
            .args([file])
            .status(0)
    };
    let old = t.path("old.img");
    let out = plan_onto(&old);
    out.stdout_has(&format!(
        "OVERWRITES {}: a gpt partition table",
        old.display()
    ))
    .stdout_has(&format!(
        "OVERWRITES {} (of {}): ext4 UUID={}",
        disk.part(2).display(),
        old.display(),
        blkid(&disk.part(2), "UUID")
    ));
    let blank_file = t.path("blank.img");
    blank(&blank_file, 640 * MIB);
    plan_onto(&blank_file).stdout_lacks("OVERWRITES");
    fs::write(&blank_file, content(4096, 3)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&blank_file)
        .unwrap()
        .set_len(640 * MIB)
        .unwrap();
    plan_onto(&blank_file).stdout_has(&format!(
        "OVERWRITES {}: data blkid does not recognise",
        blank_file.display()
    ));
}

/// A T9 and a disk whose root holds 96 MiB, `image create --device <root>` caught once the image on the T9 holds
/// 4 MiB: the world, the T9, the disk, the root partition, the run (still going) and its temporary directory.
fn image_create_caught_writing() -> (Test, Drive, LoopDisk, PathBuf, std::process::Child, PathBuf) {
    let (t, t9, disk) = disk_and_t9(96 << 20);
    let root = disk.part(2);
    let name = disk.part_name(2);
    let child = t
        .cmd()
        .args(["image", "create", "--device"])
        .args([&root])
        .spawn();
    let (child, temp) = caught_writing(
        child,
        t9.mount_point(),
        &format!("system/{name}.img.zst"),
        4 * MIB + 1,
    );
    (t, t9, disk, root, child, temp)
}

/// `image create --device <root>` run again after a run that failed: exit 0, and the T9 holds one backup, whose sums
/// pass.
fn run_again_makes_one_verified_backup(t: &Test, t9: &Drive, root: &Path) {
    t.cmd()
        .args(["image", "create", "--device"])
        .args([root])
        .status(0);
    assert_eq!(stamps(t9).len(), 1, "{:?}", stamps(t9));
    let (dir, _) = image_backup(t9);
    assert_sums_pass(&dir);
}

/// What a run left in a drive's `backups/`: its hidden entries but the drive's marker (temporaries, `.tmp-` ones).
fn leftovers(backups: &Path) -> Vec<String> {
    listing(backups)
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".dbackup-destination.json")
        .collect()
}

/// `image create` killed (-9) while the image is written leaves its temporary directory; the next `image create`
/// removes it first (counting its bytes as free, as the external phase does) and writes its backup: no `.tmp-`
/// directory is left and only the verified backup is there. Before, only `external` removed such leftovers: each
/// killed `image create` left its partial image on the drive, and a drive with room for one image then refused the
/// rerun for space (the refusal said to free up space, not where it had gone).
#[test]
fn t9_image_create_killed_mid_image_then_run_again_removes_what_it_left() {
    if !require() {
        return;
    }
    let (t, t9, _disk, root, child, temp) = image_create_caught_writing();
    signal(&child, libc::SIGKILL);
    crate::fixtures::drive::finish(child);
    assert!(temp.exists(), "the killed run left {}", temp.display());
    assert!(
        stamps(&t9).is_empty(),
        "nothing promoted: {:?}",
        stamps(&t9)
    );

    let plan = t
        .cmd()
        .args(["--dry-run", "image", "create", "--device"])
        .args([&root])
        .status(0);
    plan.stdout_has(&format!(
        "remove    leftover {}",
        temp.file_name().unwrap().to_string_lossy()
    ));
    assert!(temp.exists(), "a dry run removes nothing");
    run_again_makes_one_verified_backup(&t, &t9, &root);
    let left = leftovers(&t9.mount_point().join("backups"));
    assert!(left.is_empty(), "left on the drive: {left:?}");
}

/// An image whose partclone header was altered (its filesystem's name; backup.json's size and sha256 made to agree,
/// as a hostile drive can) is refused by the header's own checksum before anything is written: the target file stays
/// blank. Before, the hash check passed, the partition table was written onto the target, and only `partclone -r`
/// then failed ("Invalid header checksum").
#[test]
fn t9_an_image_whose_header_was_altered_is_refused_before_writing() {
    if !require() {
        return;
    }
    let (t, _t9, meta, dir, image) = imaged_root();
    let mut stream = zstd::decode_all(fs::File::open(&image).unwrap()).unwrap();
    stream[36..41].copy_from_slice(b"BTRFS");
    let forged = zstd::encode_all(&stream[..], 3).unwrap();
    forge_root_image(&dir, &meta, &image, &forged);
    refused_before_writing(
        &t,
        &meta.stamp,
        "its checksum does not match (the header was altered)",
    );
}

/// A target whose filesystem is mounted while `image restore` waits for its name to be typed (after the plan found it
/// unused) is refused at the last moment before the first write: the mounted filesystem and the disk's table are
/// left as they were. Before, the target was looked at only when planning: the table was written over a mounted
/// filesystem and its partition overwritten.
#[test]
fn t9_a_target_mounted_while_the_restore_asks_is_refused_before_writing() {
    if !require() || !crate::fixtures::terminal::available() {
        return;
    }
    let (t, _t9, _disk, meta) = imaged_disk(1 << 20);
    let target = make_disk(&t.path("other.img"), 640 * MIB);
    testkit::run(
        "mkfs.ext4",
        ["-q".as_ref(), "-F".as_ref(), target.part(2).as_os_str()],
    );
    let table = testkit::run("sfdisk", ["-d".as_ref(), target.device.as_os_str()]);
    let mut mounted = None;
    let (code, out) = crate::fixtures::terminal::run_after(
        &t,
        &format!(
            "image restore --from {} --to {}",
            meta.stamp,
            target.device.display()
        ),
        "to go on: ",
        || {
            mounted = Some(crate::loopdev_image::RoMount::new(
                &target.part(2),
                &t.path("mnt/t"),
            ))
        },
        &format!("{}\n", target.device.display()),
        300,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is in use now"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    drop(mounted);
    assert_eq!(
        testkit::run("sfdisk", ["-d".as_ref(), target.device.as_os_str()]),
        table
    );
    assert_eq!(blkid(&target.part(2), "TYPE"), "ext4");
}

/// A filesystem mounted read-only is imaged, as the README promises (the ESP, /boot): its used bytes are read for the
/// space check, the image is written and checked, and it restores with the same files. Before, partclone refused the
/// mounted device ("is mounted at"): the space check counted the whole device and the run failed.
#[test]
fn t9_a_filesystem_mounted_read_only_is_imaged() {
    if !require() {
        return;
    }
    let (t, t9, disk) = disk_and_t9(1 << 20);
    let (before, _) = look_at_root(&t, &disk, "mnt/before");
    let mounted = crate::loopdev_image::RoMount::new(&disk.part(2), &t.path("mnt/ro"));
    let plan = t
        .cmd()
        .args(["--dry-run", "image", "create", "--device"])
        .args([disk.part(2)])
        .status(0);
    plan.stdout_has("mounted read-only at")
        .stdout_has("in use (partclone's count)");
    t.cmd()
        .args(["image", "create", "--device"])
        .args([disk.part(2)])
        .status(0);
    drop(mounted);
    let (_, meta) = image_backup(&t9);
    let root = disk.part_name(2);
    let target = make_disk(&t.path("other.img"), 640 * MIB);
    t.cmd()
        .args([
            "image",
            "restore",
            "--yes",
            "--from",
            &meta.stamp,
            "--name",
            &root,
            "--to",
        ])
        .args([target.part(2)])
        .status(0);
    let (after, _) = look_at_root(&t, &target, "mnt/after");
    assert_eq!(before, after);
}

/// `restore --verify --date STAMP` checks a backup of partition images only (`image create`): intact, exit 0; an
/// image with one byte flipped is found damaged (exit 1, the image named) and remembered in `damaged.json` as a
/// damaged archive is, and forgotten once the image is whole again. Before, an image-only backup was not a backup
/// `restore` could choose ("there is no verified backup"): its images could be checked again only by a real `image
/// restore`.
#[test]
fn t9_restore_verify_checks_the_partition_images() {
    if !require() {
        return;
    }
    let (t, _t9, meta, _, image) = imaged_root();
    let verify = || {
        t.cmd().args([
            "restore",
            "--source",
            "external",
            "--verify",
            "--date",
            &meta.stamp,
        ])
    };
    verify().status(0);
    assert!(!t.path("state/dbackup/damaged.json").exists());
    // Without a date, the drive holds no backup of a set: the error names the image backup and how to check or
    // restore it (before: "there is no verified backup on T9; run `dbackup external` first").
    let out = t
        .cmd()
        .args(["restore", "--source", "external", "--verify"])
        .status(1);
    out.stderr_has("hold partition images only, no set");
    out.stderr_has(&format!("`dbackup restore --verify --date {}`", meta.stamp));
    out.stderr_has(&format!(
        "`dbackup image restore --from {} --to DISK`",
        meta.stamp
    ));

    let good = fs::read(&image).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&image, &bytes).unwrap();
    let out = verify().status(1);
    let shown = format!("{}", image.display());
    assert!(
        out.stdout.contains(&shown) || out.stderr.contains(&shown),
        "the damaged image is named: {out:?}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("changed or damaged"),
        "{out:?}"
    );
    let noted = fs::read_to_string(t.path("state/dbackup/damaged.json")).unwrap();
    assert!(noted.contains(&meta.stamp), "{noted}");

    fs::write(&image, &good).unwrap();
    verify().status(0);
    let noted = fs::read_to_string(t.path("state/dbackup/damaged.json")).unwrap_or_default();
    assert!(
        !noted.contains(&meta.stamp),
        "a whole backup is forgotten: {noted}"
    );
}

/// The loop devices a file is attached to (`losetup -j`).
fn loops_of(file: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .filter(|d| !d.is_empty())
        .collect()
}

/// Whether loop device `dev` has the autoclear flag (it is detached at its last close).
fn autoclear(dev: &str) -> bool {
    fs::read_to_string(format!(
        "/sys/block/{}/loop/autoclear",
        dev.trim_start_matches("/dev/")
    ))
    .is_ok_and(|f| f.trim() == "1")
}

/// The loop devices still attached to `file` after up to 60 s (the kernel lets go of an autoclear device once its
/// last user, partclone, has closed it); each is then detached (the test's cleanup) and returned.
fn still_attached(file: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut left = loops_of(file);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = loops_of(file);
    }
    for dev in &left {
        let _ = std::process::Command::new("losetup")
            .args(["-d", dev])
            .status();
    }
    left
}

/// `image restore` onto a disk image file stopped by SIGTERM, by two SIGINTs (the second stops at once), or killed
/// (-9) while it writes: the loop device it attached to the file is detached (by dbackup, or for kill -9 by the
/// kernel: dbackup sets the device's autoclear flag and holds it open while it writes). Before, a signal killed
/// dbackup at once (`image restore` did not catch them) and every one of these left the loop device attached.
#[test]
fn t9_an_interrupted_image_restore_onto_a_file_detaches_its_loop_device() {
    if !require() {
        return;
    }
    let (t, _t9, _disk, meta) = imaged_disk(96 << 20);
    let target = t.path("new.img");
    for (what, signals) in [
        ("SIGTERM", &[libc::SIGTERM][..]),
        ("SIGINT twice", &[libc::SIGINT, libc::SIGINT][..]),
        ("SIGKILL", &[libc::SIGKILL][..]),
    ] {
        blank(&target, 640 * MIB);
        let mut child = t
            .cmd()
            .args(["image", "restore", "--yes", "--from", &meta.stamp, "--to"])
            .args([&target])
            .spawn();
        // Signalled once the restore holds the device it attached, its autoclear flag set (then it writes).
        let mut held = false;
        while child.try_wait().unwrap().is_none() {
            if loops_of(&target).iter().any(|d| autoclear(d)) {
                held = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            held,
            "{what}: the restore ended before a loop device with the autoclear flag was attached"
        );
        for &s in signals {
            signal(&child, s);
        }
        let (code, err) = crate::fixtures::drive::finish(child);
        match signals[0] {
            libc::SIGKILL => {}
            s => assert_eq!(code, 128 + s, "{what}: {err}"),
        }
        let left = still_attached(&target);
        assert!(
            left.is_empty(),
            "{what} left {left:?} attached to the file: {err}"
        );
    }
}

/// `image create` while another program fills the drive (dbackup stopped mid-image, the drive filled, dbackup let
/// go on): exit 1, the message says the drive filled up and what to do, nothing is promoted and no temporary
/// directory is left; after freeing space the next `image create` writes a verified backup.
#[test]
fn t9_image_create_on_a_drive_that_fills_mid_image_fails_cleanly_and_the_next_run_succeeds() {
    if !require() {
        return;
    }
    let (t, t9, _disk, root, child, temp) = image_create_caught_writing();
    signal(&child, libc::SIGSTOP);
    let fill = t9.fill(0);
    signal(&child, libc::SIGCONT);
    let stderr = filled_up_and_nothing_left(child, &t9, &temp);
    assert!(stderr.contains("No space left on device"), "{stderr}");

    fs::remove_file(fill).unwrap();
    run_again_makes_one_verified_backup(&t, &t9, &root);
}

/// `image restore` onto a partition (a block device, so it asks first) whose image file is replaced, while it waits
/// for the device's name, by another valid image of the same partition (a second `image create` after a file
/// changed): as a drive would that returns other bytes the second time it is read (a failing one, or a hostile one).
/// The bytes streamed into partclone are hashed on their way: exit 1, the message says the bytes written are not
/// backup.json's and that the partition now holds a damaged restore, to restore again from a good backup. Before, the
/// file was hashed only before writing and read again unchecked: the restore wrote the other image and exited 0.
#[test]
fn t9_an_image_that_changes_between_its_check_and_its_write_fails_the_restore() {
    if !require() || !crate::fixtures::terminal::available() {
        return;
    }
    let (t, t9, disk, meta) = imaged_disk(1 << 20);
    let root = disk.part(2);
    let name = disk.part_name(2);
    let (first_dir, _) = image_backup(&t9);
    let image = first_dir
        .join("system")
        .join(&meta.system.as_ref().unwrap().images[1].file.name);
    // A second image of the root, one file changed: a valid image, other bytes.
    let rw = t.path("mnt/rw");
    fs::create_dir_all(&rw).unwrap();
    testkit::run("mount", [root.as_os_str(), rw.as_os_str()]);
    fs::write(rw.join("changed.txt"), "not the backed-up root\n").unwrap();
    testkit::run("umount", [rw.as_os_str()]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.cmd()
        .args(["image", "create", "--device"])
        .args([&root])
        .status(0);
    let (second_dir, _) = image_backup(&t9);
    assert_ne!(first_dir, second_dir);
    let other = fs::read(second_dir.join("system").join(image.file_name().unwrap())).unwrap();
    assert_ne!(fs::read(&image).unwrap(), other);

    let target = make_disk(&t.path("other.img"), 640 * MIB);
    let (code, out) = crate::fixtures::terminal::run_after(
        &t,
        &format!(
            "image restore --from {} --name {name} --to {}",
            meta.stamp,
            target.part(2).display()
        ),
        "to go on: ",
        || fs::write(&image, &other).unwrap(),
        &format!("{}\n", target.part(2).display()),
        300,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed while it was restored"), "{out}");
    assert!(
        out.contains(&format!(
            "{} now holds a damaged restore",
            target.part(2).display()
        )),
        "{out}"
    );
    assert!(out.contains("restore it again from a good backup"), "{out}");
}

/// `--dry-run image restore` reads every image and checks it as the real run does before writing: an intact backup
/// says so on stdout (exit 0); an image with one byte flipped is found damaged (exit 1, the image named), and the
/// target is not written either way. Before, a dry run only planned: a damaged image was found only by the real run.
#[test]
fn t9_an_image_restore_dry_run_checks_the_images() {
    if !require() {
        return;
    }
    let (t, _t9, meta, _, image) = imaged_root();
    let new = blank_target(&t);
    let dry_run = || {
        let from = ["--from", &meta.stamp];
        t.cmd()
            .args(["--dry-run", "image", "restore"])
            .args(from)
            .args(["--to".as_ref(), new.as_os_str()])
    };
    dry_run().status(0).stdout_has(
        "dry run: every image was read and matches backup.json (length, sha256, partclone header); \
         nothing was written",
    );
    let mut bytes = fs::read(&image).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&image, &bytes).unwrap();
    dry_run()
        .status(1)
        .stdout_lacks("dry run: every image was read")
        .stderr_has(&format!("{} is damaged", image.display()));
    assert_eq!(allocated(&new), 0, "a dry run writes nothing");
}

/// `image restore` onto a disk image file killed (-9, by `strace -e inject`) at each of its loop-device ioctls and at
/// the one after the last: no loop device is left attached to the file. Before, `losetup` attached the device and
/// dbackup set its autoclear flag after, with two ioctls of its own: killed at either, the device stayed attached
/// until someone ran `losetup -d`. Now the flag is set by the ioctl that attaches (`LOOP_CONFIGURE`).
#[test]
fn t9_an_image_restore_killed_at_any_loop_ioctl_leaves_no_loop_device_attached() {
    if !require() {
        return;
    }
    let (t, _t9, _disk, meta) = imaged_disk(1 << 20);
    let target = t.path("new.img");
    let args = [
        "image",
        "restore",
        "--yes",
        "--from",
        &meta.stamp,
        "--to",
        &target.display().to_string(),
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A whole run, its ioctls listed: the loop ones are where the sweep kills.
    blank(&target, 640 * MIB);
    let log = t.path("ioctls.log");
    let log_arg = log.display().to_string();
    let Some((code, err)) =
        crate::kill_sweep::under_strace(&t, &["-o", &log_arg, "-e", "trace=ioctl"], &args)
    else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    let ioctls: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ioctl("))
        .map(str::to_string)
        .collect();
    let loop_calls: Vec<usize> = (0..ioctls.len())
        .filter(|&i| ioctls[i].contains("LOOP_"))
        .collect();
    assert!(!loop_calls.is_empty(), "no loop ioctl: {ioctls:?}");
    assert!(loops_of(&target).is_empty());
    for n in loop_calls[0] + 1..=loop_calls[loop_calls.len() - 1] + 2 {
        blank(&target, 640 * MIB);
        let inject = format!("inject=ioctl:signal=KILL:when={n}");
        let (code, err) =
            crate::kill_sweep::under_strace(&t, &["-e", &inject], &args).expect("strace");
        let left = still_attached(&target);
        assert!(
            left.is_empty(),
            "killed at ioctl {n} ({}), exit {code}: {left:?} left attached: {err}",
            ioctls.get(n - 1).map_or("past the last", String::as_str)
        );
    }
}

/// A point of a run, reached when it holds (given the run's pid, when it needs it).
type KillPoint<'a> = Box<dyn Fn(u32) -> bool + 'a>;

/// `image create` killed (-9), and stopped with SIGTERM, at each point of its run (the image being written, its
/// record written before the rename): nothing is under a backup's final name but a verified backup, and the next run
/// exits 0, leaves no `.tmp-` directory and writes a backup that passes `sha256sum -c`.
#[test]
fn t9_image_create_killed_at_each_point_leaves_nothing_half_and_the_next_run_succeeds() {
    if !require() {
        return;
    }
    let (t, t9, disk) = disk_and_t9(32 << 20);
    let root = disk.part(2);
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    let mp = t9.mount_point().to_path_buf();
    let backups = mp.join("backups");
    let image_file = format!("system/{name}.img.zst");
    let points: [(&str, KillPoint<'_>); 2] = [
        (
            "writing the image",
            Box::new(|_| {
                crate::fixtures::drive::writing(&mp, &image_file).is_some_and(|(_, n)| n >= MIB)
            }),
        ),
        (
            "the record written, before the rename",
            Box::new(|_| crate::fixtures::drive::writing(&mp, "backup.json").is_some()),
        ),
    ];
    let run = || t.cmd().args(["image", "create", "--device"]).args([&root]);
    for (sig_name, sig) in crate::kill_sweep::SIGNALS {
        for (at, reached) in &points {
            let what = format!("{sig_name} while {at}");
            let child = run().spawn();
            let caught = crate::kill_sweep::freeze_at(&child, || reached(child.id()));
            let (code, err) = crate::kill_sweep::end_with(child, sig);
            assert!(!caught || code == 128 + sig, "{what}: exit {code}: {err}");
            let before = stamps(&t9);
            for s in &before {
                assert_sums_pass(&backups.join(s));
            }
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let again = run().output();
            assert_eq!(again.code, 0, "{what}: the next run: {}", again.stderr);
            let left = leftovers(&backups);
            assert!(left.is_empty(), "{what}: left on the drive: {left:?}");
            assert_eq!(stamps(&t9).len(), before.len() + 1, "{what}");
            for s in stamps(&t9) {
                assert_sums_pass(&backups.join(s));
            }
        }
    }
}

/// The mount points of the private mounts `image restore` makes to grow a filesystem (`dbackup-grow-*`).
fn grow_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains("/dbackup-grow-"))
        .map(str::to_string)
        .collect()
}

/// Whether process `pid` has a child named `comm` running.
fn has_child(pid: u32, comm: &str) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
            st.split_once(" (")
                .and_then(|(_, rest)| rest.rsplit_once(") "))
                .is_some_and(|(name, rest)| {
                    name == comm && rest.split(' ').nth(1) == Some(&pid.to_string())
                })
        })
    })
}

/// `image restore --grow` of a disk with a btrfs root onto a disk image file, killed (-9), and stopped with SIGTERM,
/// at each point of its run (the loop device attached, the root being written, the root mounted and grown by
/// `btrfs`): once its children have ended, nothing it made is left mounted or attached, and the next restore exits
/// 0. Before, killed while it grew the root, its mount (`/tmp/dbackup-grow-*`) stayed, and with it the loop device.
/// The empty mount point the kill leaves (`$TMPDIR/dbackup-grow-<pid>-*`) is removed by the next restore, and only
/// those of processes that are gone: a running one's, and anything not empty, stay. Before, each one stayed.
#[test]
fn t9_image_restore_killed_at_each_point_leaves_nothing_mounted_or_attached() {
    if !require() {
        return;
    }
    let (t, _t9, _disk, meta, tmp) = imaged_btrfs_disk_with_tmpdir(32 << 20);
    // Not the restore's to remove: a running process's (this test's), and a directory that is not empty.
    let running = tmp.join(format!("dbackup-grow-{}-running", std::process::id()));
    fs::create_dir_all(&running).unwrap();
    let full = tmp.join("dbackup-grow-999999999-full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("mine"), "keep me\n").unwrap();
    let mut kept = vec![
        "dbackup-grow-999999999-full".to_string(),
        running.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    kept.sort();
    let target = t.path("new.img");
    let points: [(&str, KillPoint<'_>); 3] = [
        (
            "the loop device attached",
            Box::new(|_| !loops_of(&target).is_empty()),
        ),
        (
            "the root being written",
            Box::new(|_| allocated(&target) > 16 * MIB),
        ),
        (
            "the root mounted to be grown",
            Box::new(|pid| !grow_mounts().is_empty() || has_child(pid, "btrfs")),
        ),
    ];
    let run = || restore_grown(&t, &meta.stamp, &target);
    for (sig_name, sig) in crate::kill_sweep::SIGNALS {
        for (at, reached) in &points {
            let what = format!("{sig_name} while {at}");
            blank(&target, 640 * MIB);
            let child = run().spawn();
            let caught = crate::kill_sweep::freeze_at(&child, || reached(child.id()));
            if !caught {
                eprintln!("{what}: the run passed this point too fast to be seen");
            }
            let (code, err) = crate::kill_sweep::end_with(child, sig);
            assert!(!caught || code == 128 + sig, "{what}: exit {code}: {err}");
            // Its children (partclone, btrfs) may still be finishing: what they hold is let go when they end.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let (mut mounts, mut left) = (grow_mounts(), loops_of(&target));
            while !(mounts.is_empty() && left.is_empty()) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
                (mounts, left) = (grow_mounts(), loops_of(&target));
            }
            for m in &mounts {
                let _ = std::process::Command::new("umount").arg(m).status();
            }
            for d in &left {
                let _ = std::process::Command::new("losetup")
                    .args(["-d", d])
                    .status();
            }
            assert!(
                mounts.is_empty() && left.is_empty(),
                "{what} (caught: {caught}): left mounted {mounts:?}, attached {left:?}: {err}"
            );
            blank(&target, 640 * MIB);
            let again = run().output();
            assert_eq!(again.code, 0, "{what}: the next run: {}", again.stderr);
            assert!(
                loops_of(&target).is_empty() && grow_mounts().is_empty(),
                "{what}"
            );
            assert_eq!(
                grow_dirs(&tmp),
                kept,
                "{what}: only the dead runs' empty mount points are removed"
            );
        }
    }
}

/// `image restore --grow` also removes the empty mount points that versions before the pid-named ones left
/// (`$TMPDIR/dbackup-grow-<random>`), and only those that are empty and nobody's mount point: one holding a file
/// stays, and so does one a filesystem is mounted on in another mount namespace (where a grow tool mounts it),
/// though it looks empty from here. Before: they all stayed, forever.
#[test]
fn t9_image_restore_grow_removes_older_versions_empty_mount_points_and_no_other() {
    if !require() {
        return;
    }
    let (t, _t9, _disk, meta, tmp) = imaged_btrfs_disk_with_tmpdir(6 << 20);
    fs::create_dir(tmp.join("dbackup-grow-aB3xYz")).unwrap();
    fs::create_dir(tmp.join("dbackup-grow-123456")).unwrap();
    fs::create_dir(tmp.join("dbackup-grow-kEEp12")).unwrap();
    fs::write(tmp.join("dbackup-grow-kEEp12/mine"), "keep me\n").unwrap();
    let mounted = tmp.join("dbackup-grow-mNt456");
    fs::create_dir(&mounted).unwrap();
    // A filesystem mounted on it in a mount namespace of its own, by a process that stays until it is dropped.
    let holder = MountedElsewhere::with(&[
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "dbackup-test".as_ref(),
        mounted.as_os_str(),
    ]);

    let target = t.path("new.img");
    blank(&target, 640 * MIB);
    let out = restore_grown(&t, &meta.stamp, &target).output();
    drop(holder);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        grow_dirs(&tmp),
        ["dbackup-grow-kEEp12", "dbackup-grow-mNt456"]
    );
}

/// A filesystem mounted by a process in a mount namespace of its own (`unshare --mount`, as a container or a service
/// with private mounts does), where dbackup's mountinfo does not show it; ended (the mount with it) on drop.
struct MountedElsewhere(std::process::Child);

impl MountedElsewhere {
    /// `dev` mounted read-write at `at` in a new private mount namespace.
    fn new(dev: &Path, at: &Path) -> MountedElsewhere {
        fs::create_dir_all(at).unwrap();
        MountedElsewhere::with(&[dev.as_os_str(), at.as_os_str()])
    }

    /// `mount ARGS` in a new private mount namespace.
    fn with(args: &[&std::ffi::OsStr]) -> MountedElsewhere {
        let mut holder = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount "$@" && echo mounted && exec sleep 600"#)
            .arg("sh")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "mounted\n", "mount {args:?} in its own namespace");
        MountedElsewhere(holder)
    }
}

impl Drop for MountedElsewhere {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A filesystem mounted read-write only in another mount namespace is in use all the same: `image create` refuses
/// it, naming where (nothing promoted), and `image restore` refuses a target disk whose partition is mounted so, in
/// its plan, saying it is in use (its table left as it was). Before, dbackup read only its own mountinfo: the live
/// filesystem was imaged and promoted as a verified backup (an inconsistent image), and the restore stopped only
/// because sfdisk refused ("Umount all file systems ..."), not saying why nor that nothing was written.
#[test]
fn t9_a_filesystem_mounted_in_another_mount_namespace_is_in_use() {
    if !require() {
        return;
    }
    let (t, t9, disk) = disk_and_t9(1 << 20);
    let elsewhere = MountedElsewhere::new(&disk.part(2), &t.path("mnt/ns"));
    let out = t
        .cmd()
        .args(["image", "create", "--device"])
        .args([disk.part(2)])
        .status(1);
    out.stderr_has("mounted read-write at")
        .stderr_has("in the mount namespace of process");
    assert!(stamps(&t9).is_empty(), "{:?}", stamps(&t9));
    drop(elsewhere);

    let meta = image_both_partitions(&t, &t9, &disk);
    let target = make_disk(&t.path("other.img"), 640 * MIB);
    testkit::run(
        "mkfs.ext4",
        ["-q".as_ref(), "-F".as_ref(), target.part(2).as_os_str()],
    );
    let table = testkit::run("sfdisk", ["-d".as_ref(), target.device.as_os_str()]);
    let elsewhere = MountedElsewhere::new(&target.part(2), &t.path("mnt/ns2"));
    let out = t
        .cmd()
        .args(["image", "restore", "--yes", "--from", &meta.stamp, "--to"])
        .args([&target.device])
        .status(1);
    out.stdout_has("REFUSED")
        .stderr_has("image restore refused; nothing was written")
        .stderr_has(&format!(
            "{} is mounted read-write at",
            target.part(2).display()
        ))
        .stderr_has("in the mount namespace of process");
    drop(elsewhere);
    assert_eq!(
        testkit::run("sfdisk", ["-d".as_ref(), target.device.as_os_str()]),
        table
    );
    assert_eq!(blkid(&target.part(2), "TYPE"), "ext4");
}

/// Writes `meta` as the backup.json of the backup in `dir` (as a hostile drive can: nothing on the drive vouches for
/// it).
fn forge_meta(dir: &Path, meta: &BackupMeta) {
    fs::write(
        dir.join(dbackup::BACKUP_META_FILE),
        dbackup::backup_meta_bytes(meta),
    )
    .unwrap();
}

/// Replaces the root's image (the second) with `bytes`, and backup.json's record of it with their length and sha256
/// (as a hostile drive can).
fn forge_root_image(dir: &Path, meta: &BackupMeta, image: &Path, bytes: &[u8]) {
    fs::write(image, bytes).unwrap();
    let mut m = meta.clone();
    let f = &mut m.system.as_mut().unwrap().images[1].file;
    f.bytes = bytes.len() as u64;
    f.sha256 = dbackup::Digest::of_bytes(bytes);
    forge_meta(dir, &m);
}

/// `image restore --from <stamp>` onto a blank disk image file: refused while it checks the images, stderr saying
/// `why`, the file not written.
fn refused_before_writing(t: &Test, stamp: &str, why: &str) {
    let new = blank_target(t);
    t.cmd()
        .args(["image", "restore", "--from", stamp, "--to"])
        .args([&new])
        .status(1)
        .stderr_has("checking the images before writing anything")
        .stderr_has(why);
    assert_eq!(allocated(&new), 0, "nothing was written onto the target");
}

/// An image backup whose backup.json says it was not verified (its run did not finish checking what it wrote) is
/// never restored: refused before anything is written, saying why and what to do. One whose backup.json names an
/// image twice is refused as that, not as "damaged". Before: the unverified backup was restored without a word
/// (`find_backup` looked for a backup.json only), and the second of two records of one name was checked against the
/// first's length and sha256, so the restore said the image "is damaged".
#[test]
fn t9_an_unverified_image_backup_and_one_naming_an_image_twice_are_refused_before_writing() {
    if !require() {
        return;
    }
    let (t, _t9, meta, dir, _image) = imaged_root();
    let new = blank_target(&t);
    let refused = |why: &str| {
        let out = t
            .cmd()
            .args(["image", "restore", "--from", &meta.stamp, "--to"])
            .args([&new])
            .status(1);
        out.stderr_has(why);
        assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
        assert_eq!(allocated(&new), 0, "nothing was written onto the target");
    };
    let mut m = meta.clone();
    m.verified = false;
    forge_meta(&dir, &m);
    refused(&format!(
        "backup {} ({}): its backup.json says it was not verified; an image restore writes whole disks from a \
         verified backup only: choose another (`dbackup restore --list` shows them)",
        meta.stamp,
        dir.display()
    ));

    let mut m = meta.clone();
    let images = &mut m.system.as_mut().unwrap().images;
    let first = images[0].name.clone();
    images[1].name = first.clone();
    forge_meta(&dir, &m);
    refused(&format!("system.images[1].name \"{first}\" appears twice"));
}

/// A backup.json that names the root's ext4 image a vfat one (its image, length and sha256 untouched) is refused
/// before anything is written: the image's own header says which filesystem it holds. Before, partclone.fat
/// restored the ext4 image onto the target without a word, and only the fsck after it failed (exit 1, the target
/// written).
#[test]
fn t9_an_image_of_another_filesystem_than_backup_json_says_is_refused_before_writing() {
    if !require() {
        return;
    }
    let (t, _t9, meta, dir, _image) = imaged_root();
    let mut m = meta.clone();
    let rec = &mut m.system.as_mut().unwrap().images[1];
    assert_eq!(rec.fs_type, "ext4");
    rec.fs_type = "vfat".into();
    rec.tool = "partclone.fat".into();
    forge_meta(&dir, &m);
    refused_before_writing(
        &t,
        &meta.stamp,
        "the image's header says its filesystem is EXTFS, but backup.json says vfat",
    );
}

/// An image cut short whose backup.json was made to agree (its length and sha256: a hostile drive, or one written
/// so) passes the check before writing, which hashes the file and reads its header; `partclone -r` then finds the
/// stream ending early, after the table and the ESP were written. The error says so: the target is partly written,
/// what of it was restored and which partition is incomplete, not to use it. Before, it ended with partclone's "read
/// ERROR" alone, and said nothing of the table and the partition already written over the target.
#[test]
fn t9_an_image_cut_short_with_a_backup_json_to_match_says_the_target_is_partly_written() {
    if !require() {
        return;
    }
    let (t, _t9, meta, dir, image) = imaged_root();
    let stream = zstd::decode_all(fs::File::open(&image).unwrap()).unwrap();
    let cut = zstd::encode_all(&stream[..stream.len() / 2], 3).unwrap();
    forge_root_image(&dir, &meta, &image, &cut);
    let new = blank_target(&t);
    let out = t
        .cmd()
        .args(["image", "restore", "--from", &meta.stamp, "--to"])
        .args([&new])
        .status(1);
    out.stderr_has(&format!(
        "{} is partly written: its partition table and partition 1 were restored, partition 2 is incomplete; do \
         not use it",
        new.display()
    ))
    .stderr_has("partclone.extfs -r failed");
}

/// `image restore`, a dry run or a real one before its first write, stopped by SIGTERM or SIGINT while it reads and
/// checks an image: one line saying it was interrupted and that nothing was changed, exit 128 + the signal, the
/// target untouched. Before, both died of the signal without a word (the dry runs of the other commands already said
/// so), after minutes of reading a large image, perhaps.
#[test]
fn t9_a_signal_while_image_restore_checks_the_images_stops_it_with_one_line() {
    if !require() {
        return;
    }
    let (t, t9, _disk, meta) = imaged_disk(96 << 20);
    let (_, m) = image_backup(&t9);
    let image = m.system.as_ref().unwrap().images[1].file.name.clone();
    let new = blank_target(&t);
    for (dry, what) in [(true, "image restore --dry-run"), (false, "image restore")] {
        for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
            let child = t
                .cmd()
                .args(if dry { &["--dry-run"][..] } else { &[][..] })
                .args(["image", "restore", "--from", &meta.stamp, "--to"])
                .args([&new])
                .spawn();
            let pid = child.id();
            crate::process::freeze_when(&child, "the check to read the image", || {
                crate::process::has_open(pid, &image)
            });
            signal(&child, sig);
            signal(&child, libc::SIGCONT);
            let (code, stderr) = crate::fixtures::drive::finish(child);
            assert_eq!(code, 128 + sig, "{what}, {name}: {stderr}");
            assert_eq!(
                stderr.lines().last(),
                Some(format!("dbackup: {what} interrupted ({name}); nothing was changed").as_str()),
                "{what}, {name}: {stderr}"
            );
            assert_eq!(allocated(&new), 0, "{what}, {name}: the target was written");
        }
    }
}

/// `image create` stopped by SIGTERM or SIGINT while it writes an image stops there as `external` does: its partial
/// backup is removed from the drive, one line says it was interrupted, the run log gets its line (`interrupted`), exit
/// 128 + the signal; the next run succeeds. Before, it died of the signal: no word, no run log line (`status` knew
/// nothing of it), and its partial backup stayed on the drive until the next run.
#[test]
fn t9_image_create_interrupted_mid_image_stops_cleanly_and_says_so() {
    if !require() {
        return;
    }
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let (t, t9, _disk, root, child, temp) = image_create_caught_writing();
        signal(&child, sig);
        let (code, stderr) = crate::fixtures::drive::finish(child);
        assert_eq!(code, 128 + sig, "{name}: {stderr}");
        assert!(
            stderr
                .lines()
                .last()
                .is_some_and(|l| l.contains(&format!("interrupted ({name})"))),
            "{name}: {stderr}"
        );
        assert!(!temp.exists(), "{name}: {} left", temp.display());
        assert!(stamps(&t9).is_empty(), "{name}: {:?}", stamps(&t9));
        crate::process::assert_logged(&t, "image create", name, 128 + sig as u8);
        t.cmd()
            .args(["image", "create", "--device"])
            .args([&root])
            .status(0);
    }
}

/// `image create` on a T9 that fills up after the system folder, at `backup.json` or the sums file (dbackup stopped
/// mid-image, the drive filled to leave room for the rest of `system/` as a run with room wrote it, and one cluster
/// more): exit 1, the message says the drive filled up and what to do, as it does mid-image and as `external` does at
/// its record; nothing is promoted and no temporary directory is left. Before: the record's I/O error was turned
/// into text, its kind lost, and the message did not say the drive had filled up.
#[test]
fn t9_image_create_on_a_drive_that_fills_at_its_record_says_so() {
    if !require() {
        return;
    }
    let (t, t9, disk) = disk_and_t9(96 << 20);
    let root = disk.part(2);
    let run = || t.cmd().args(["image", "create", "--device"]).args([&root]);
    // A run with room, for the sizes its system folder takes on the drive; then removed.
    run().status(0);
    let (dir, _) = image_backup(&t9);
    let cluster = rustix::fs::statvfs(t9.mount_point()).unwrap().f_frsize;
    let on_drive = |p: &Path| fs::metadata(p).map_or(0, |m| m.len().div_ceil(cluster) * cluster);
    let system: Vec<(String, u64)> = fs::read_dir(dir.join("system"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                on_drive(&e.path()),
            )
        })
        .collect();
    fs::remove_dir_all(&dir).unwrap();

    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    let image = format!("{name}.img.zst");
    let (child, temp) = caught_writing(
        run().spawn(),
        t9.mount_point(),
        &format!("system/{image}"),
        4 * MIB + 1,
    );
    signal(&child, libc::SIGSTOP);
    let written: u64 = system
        .iter()
        .map(|(n, _)| on_drive(&temp.join("system").join(n)))
        .sum();
    let wanted: u64 = system.iter().map(|(_, b)| b).sum();
    let fill = t9.fill(wanted - written + cluster);
    signal(&child, libc::SIGCONT);
    let stderr = filled_up_and_nothing_left(child, &t9, &temp);
    assert!(
        stderr.contains("backup.json") || stderr.contains("verification.sha256"),
        "it fails at its record, not in the system folder: {stderr}"
    );
    fs::remove_file(fill).unwrap();
}

/// The end of an `image create` whose drive filled up under it: exit 1, the message says so and what to do, nothing
/// was promoted and its temporary directory `temp` is gone. Its stderr.
#[track_caller]
fn filled_up_and_nothing_left(child: std::process::Child, t9: &Drive, temp: &Path) -> String {
    let (code, stderr) = crate::fixtures::drive::finish(child);
    eprintln!("{stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the drive filled up while writing")
            && stderr.contains("free space on it and run again"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing was promoted (no partial backup is left on the drive)"),
        "{stderr}"
    );
    assert!(!temp.exists(), "{}", temp.display());
    assert!(stamps(t9).is_empty(), "{:?}", stamps(t9));
    stderr
}

/// A device named more than once (twice in `image.devices`, by its node and by a link to it as `/dev/disk/by-*` names
/// it, and once more with `--device`) is judged once: the dry run of `image create` shows one line per device (the
/// ESP imaged, the partition without a filesystem refused with its reason), the run warns once and backup.json records
/// one image and one refusal. Before, each naming added a line: the refusal three times, and the imaged ESP also
/// "REFUSED ... is named twice".
#[test]
fn t9_a_device_named_twice_gets_one_line() {
    if !require() {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 256 * MIB);
    // Partition 2 has no filesystem: refused.
    let disk = make_disk(&t.path("old.img"), 320 * MIB);
    let (esp, bare) = (disk.part(1), disk.part(2));
    let link = |to: &Path, name: &str| {
        let at = t.path(name);
        std::os::unix::fs::symlink(to, &at).unwrap();
        at
    };
    let devices = [
        esp.clone(),
        bare.clone(),
        link(&bare, "by-partlabel-root"),
        link(&esp, "by-partlabel-EFI"),
    ];
    let t = t.config(&config_images(&t9, "", &devices, ""));
    let dry = t
        .cmd()
        .args(["--dry-run", "image", "create", "--device"])
        .args([&bare])
        .status(3);
    let mut filters = vec![
        (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
        (r"\.tmp-\[STAMP\]-\d+", ".tmp-[STAMP]-[PID]"),
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)", "[SIZE]"),
        (r"/dev/loop\d+", "/dev/[DISK]"),
        (r"\bloop\d+", "[DISK]"),
        (r"\b[0-9A-F]{4}-[0-9A-F]{4}\b", "[UUID]"),
    ];
    let t9_path = t9.mount_point().display().to_string();
    filters.push((&t9_path, "[T9]"));
    let tmp = t.dir.path().display().to_string();
    filters.push((&tmp, "[TMP]"));
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("device_named_twice_dry_run", dry.stdout);
    });
    assert_eq!(dry.stdout.matches("REFUSED").count(), 1, "{}", dry.stdout);

    let out = t
        .cmd()
        .args(["image", "create", "--device"])
        .args([&bare])
        .status(3);
    let refused = format!(
        "not imaged: {}: blkid finds no filesystem on it",
        bare.display()
    );
    assert_eq!(out.stderr.matches(&refused).count(), 1, "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("not imaged").count(),
        1,
        "{}",
        out.stderr
    );
    let (_, meta) = image_backup(&t9);
    let system = meta.system.as_ref().unwrap();
    assert_eq!(system.images.len(), 1, "{system:?}");
    assert_eq!(system.refused.len(), 1, "{system:?}");
}
