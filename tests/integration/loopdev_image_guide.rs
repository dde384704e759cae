//! RESTORE-SYSTEM.md walked as written, on real loop devices: a GPT disk (an ESP and an ext4 root holding files) is
//! imaged to the emulated T9 plain and encrypted; then every command of the guide's section 2 is copied out of the
//! generated file (decrypted with age when encrypted), only `/mnt/backup` (where the guide mounts the drive),
//! `/dev/NEWDISK` and `/dev/NEWDISK-<name>` substituted, and run: dbackup's way onto a larger blank disk (the dry run
//! first, which writes nothing), the plain tools' way (sha256sum, sfdisk, zstd, partclone.restore, age) onto one of
//! the same size, and onto a larger one followed by its lines that grow the last partition and its filesystem (grown);
//! each gives back filesystems that fsck passes and a root whose every file matches. A smaller disk is
//! refused with the sizes, a mounted one and the disk this system runs on as in use, and a damaged image (a byte
//! flipped in its middle) is found, both ways, before anything is written. A backup of two disks' partitions is walked
//! the same way, each disk onto a blank disk of its own.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use dbackup::BackupMeta;
use testkit::loopdev::Drive;

use crate::harness::Test;
use crate::loopdev_image::{
    LoopDisk, MIB, RoMount, Root, blkid, config, disk_with_root, image_backup, look_at_root,
    manifest, partitioned, require, root_tree,
};

/// The tools the guide's plain way names, beyond the imaging tests'.
const PLAIN_TOOLS: &[&str] = &["partclone.restore", "zstd", "age", "sha256sum", "bash"];

/// The indented command lines of the guide between the paragraph starting with `from` and the one starting with
/// `to`.
fn commands(guide: &str, from: &str, to: &str) -> Vec<String> {
    let section = guide
        .split(&format!("\n{from}"))
        .nth(1)
        .unwrap_or_else(|| panic!("no paragraph {from:?} in the guide:\n{guide}"));
    section
        .split(&format!("\n{to}"))
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::to_string)
        .collect()
}

/// A blank disk image file of `size` bytes at `<tmp>/<name>`, attached with its partitions.
fn blank_disk(t: &Test, name: &str, size: u64) -> LoopDisk {
    let path = t.path(name);
    fs::File::create(&path).unwrap().set_len(size).unwrap();
    LoopDisk::attach(&path)
}

/// Bytes of the disk image file behind `disk` that were ever written (it was created sparse), after flushing the
/// loop device's buffers.
fn written(t: &Test, name: &str, disk: &LoopDisk) -> u64 {
    let _ = testkit::try_run(
        "blockdev",
        ["--flushbufs".as_ref(), disk.device.as_os_str()],
    );
    fs::metadata(t.path(name)).unwrap().blocks() * 512
}

/// `line` with the drive's mount point for `/mnt/backup`, and the guide's devices for blank `targets` (one per disk
/// of the backup's tables, in their order; the first for images without a partition table): `/dev/NEWDISK-<disk>`
/// (the guide of several disks) and `/dev/NEWDISK` for the disk's target, `/dev/NEWDISK-<name>` for its target's
/// partition of the image's number, as the guide says. Longest first, so `-loop1` never replaces a part of
/// `-loop10p1`. A partition node is waited for (and `partx -a` run when it is missing, as the guide says) only when
/// the line names it.
fn substitute(line: &str, t9: &Drive, meta: &BackupMeta, targets: &[&LoopDisk]) -> String {
    let mut line = line.replace("/mnt/backup", &t9.mount_point().display().to_string());
    let system = meta.system.as_ref().unwrap();
    let target_of = |disk: Option<&str>| {
        let k = disk
            .and_then(|d| system.tables.iter().position(|t| t.disk == d))
            .unwrap_or(0);
        targets[k]
    };
    let mut names: Vec<(String, Option<&str>, Option<u32>)> = (system.tables.iter())
        .map(|t| (t.disk.clone(), Some(t.disk.as_str()), None))
        .chain((system.images.iter()).map(|i| (i.name.clone(), i.disk.as_deref(), i.partition)))
        .collect();
    names.sort_by_key(|(name, _, _)| std::cmp::Reverse(name.len()));
    for (name, disk, partition) in names {
        let placeholder = format!("/dev/NEWDISK-{name}");
        if line.contains(&placeholder) {
            let target = target_of(disk);
            // A disk, or an image without a partition table, goes onto a device of its own.
            let node = match partition {
                Some(n) => target.part(n),
                None => target.device.clone(),
            };
            line = line.replace(&placeholder, &node.display().to_string());
        }
    }
    let line = line.replace("/dev/NEWDISK", &targets[0].device.display().to_string());
    assert!(!line.contains("NEWDISK"), "{line}");
    line
}

/// Runs the guide's plain-tools lines in order with bash (`-e -o pipefail`, in the test's directory, where
/// `identity.txt` is), stopping at the first that fails: (how many succeeded, that one's output).
fn run_plain(
    t: &Test,
    t9: &Drive,
    meta: &BackupMeta,
    lines: &[String],
    targets: &[&LoopDisk],
) -> (usize, String) {
    for (n, line) in lines.iter().enumerate() {
        let line = substitute(line, t9, meta, targets);
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &line])
            .current_dir(t.path(""))
            .output()
            .unwrap();
        if !out.status.success() {
            return (
                n,
                format!(
                    "{line}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
    }
    (lines.len(), String::new())
}

/// The guide's `plain` lines, then its lines that grow the last partition and its filesystem (the paragraph `On a
/// larger new disk`), run onto a blank disk `<tmp>/plain-larger.img` of `size` bytes, which is returned.
fn plain_and_grown(
    t: &Test,
    t9: &Drive,
    meta: &BackupMeta,
    guide: &str,
    plain: &[String],
    size: u64,
) -> LoopDisk {
    let grow = commands(
        guide,
        "On a larger new disk",
        "Filesystems that have no image",
    );
    assert!(!grow.is_empty(), "{guide}");
    let lines: Vec<String> = plain.iter().chain(&grow).cloned().collect();
    let disk = blank_disk(t, "plain-larger.img", size);
    let (done, failed) = run_plain(t, t9, meta, &lines, &[&disk]);
    assert_eq!(done, lines.len(), "{failed}\n{guide}");
    disk
}

/// A guide's `dbackup ...` line run (on `targets`, as [`substitute`] says; `extra` after it): its output.
fn run_dbackup(
    t: &Test,
    t9: &Drive,
    meta: &BackupMeta,
    line: &str,
    targets: &[&LoopDisk],
    extra: &[&str],
) -> crate::harness::Output {
    let line = substitute(line, t9, meta, targets);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "dbackup", "{line}");
    t.cmd().args(&words[1..]).args(extra).output()
}

/// The disk the root filesystem is on (`/dev/vda`), when it is one.
fn system_disk() -> Option<String> {
    let (ok, source, _, _) = testkit::try_run("findmnt", ["-n", "-o", "SOURCE", "/"]);
    let source = source.trim();
    if !ok || !source.starts_with("/dev/") {
        return None;
    }
    let (_, parent, _, _) = testkit::try_run("lsblk", ["-n", "-d", "-o", "PKNAME", source]);
    let disk = match parent.trim() {
        "" => source.to_string(),
        p => format!("/dev/{p}"),
    };
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(&disk)
        .is_ok_and(|m| m.file_type().is_block_device())
        .then_some(disk)
}

/// Partition 1 (the ESP) and 2 (the root) of `restored` pass fsck, and the root's files are `old`'s.
fn same_disk(t: &Test, old: &LoopDisk, restored: &LoopDisk, at: &str) {
    testkit::run("fsck.fat", ["-n".as_ref(), restored.part(1).as_os_str()]);
    testkit::run(
        "e2fsck",
        ["-f".as_ref(), "-n".as_ref(), restored.part(2).as_os_str()],
    );
    let (want, _) = look_at_root(t, old, "mnt/old");
    let (got, _) = look_at_root(t, restored, at);
    assert!(want.len() > 35, "{want:#?}");
    assert_eq!(want, got, "{at}");
}

/// Images a disk to the T9 (encrypted to `identity.txt`'s recipient when `encrypted`) and walks its guide, both ways,
/// onto blank disks the same size, larger and smaller, then with the root's image damaged.
fn walk(encrypted: bool) {
    let t = Test::new();
    let (identity, recipient) = t.keygen("identity.txt");
    let t9 = Drive::exfat("T9", 256 * MIB);
    let extra = match encrypted {
        true => format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#),
        false => String::new(),
    };
    let t = t.config(&config(&t9, &extra));
    let disk = disk_with_root(&t, 2 << 20, Root::Ext4);
    let dev = |n: u32| disk.part(n).display().to_string();
    t.cmd()
        .args(["image", "create", "--device", &dev(1), "--device", &dev(2)])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let guide = match encrypted {
        true => testkit::run(
            "age",
            [
                "-d".as_ref(),
                "-i".as_ref(),
                identity.as_os_str(),
                dir.join("system/RESTORE-SYSTEM.md.age").as_os_str(),
            ],
        ),
        false => fs::read_to_string(dir.join("system/RESTORE-SYSTEM.md")).unwrap(),
    };
    let plain = commands(&guide, "Without dbackup", "A pipe that stops");
    let with_dbackup = commands(&guide, "This backup holds", "| image |");
    assert_eq!(
        plain.len(),
        4,
        "the sum check, the table, two images: {guide}"
    );
    assert_eq!(with_dbackup.len(), 2, "{guide}");
    let (dry_run, restore) = (&with_dbackup[0], &with_dbackup[1]);
    assert!(dry_run.ends_with("--dry-run"), "{dry_run}");

    // The plain tools, onto a blank disk of the same size.
    let same = blank_disk(&t, "same.img", 320 * MIB);
    let (done, failed) = run_plain(&t, &t9, &meta, &plain, &[&same]);
    assert_eq!(done, plain.len(), "{failed}\n{guide}");
    same_disk(&t, &disk, &same, "mnt/plain");
    drop(same);

    // The plain tools onto a larger one, then the guide's lines that grow the last partition and its filesystem to
    // its end (as `--grow` does): fsck clean, every file the same, the root grown.
    let plain_larger = plain_and_grown(&t, &t9, &meta, &guide, &plain, 640 * MIB);
    same_disk(&t, &disk, &plain_larger, "mnt/plain-larger");
    let (_, old_size) = look_at_root(&t, &disk, "mnt/old-size");
    let (_, size) = look_at_root(&t, &plain_larger, "mnt/plain-grown");
    assert!(size > old_size + 250 * MIB, "grown: {old_size} -> {size}");
    drop(plain_larger);

    // dbackup, onto a larger one: the dry run writes nothing; the restore (confirmed) gives the same disk back.
    let larger = blank_disk(&t, "larger.img", 640 * MIB);
    run_dbackup(&t, &t9, &meta, dry_run, &[&larger], &[])
        .stdout_has("OVERWRITES")
        .stdout_has("asks for confirmation before writing");
    assert_eq!(written(&t, "larger.img", &larger), 0, "the dry run wrote");
    let out = run_dbackup(&t, &t9, &meta, restore, &[&larger], &["--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Confirmed with --yes: the plan it shows does not say it will ask.
    out.stderr_has("OVERWRITES")
        .stderr_lacks("asks for confirmation");
    same_disk(&t, &disk, &larger, "mnt/larger");
    // Mounted, it is refused (the dry run line: it checks as the restore does), as is the disk this system runs on.
    let mounted = RoMount::new(&larger.part(2), &t.path("mnt/mounted"));
    let out = run_dbackup(&t, &t9, &meta, dry_run, &[&larger], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    out.stderr_has("is in use");
    drop(mounted);
    drop(larger);
    if let Some(system) = system_disk() {
        // The system disk as `--to`, whatever the guide calls the new disk.
        let line = dry_run.replace("/mnt/backup", &t9.mount_point().display().to_string());
        let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let to = words.iter().position(|w| *w == "--to").unwrap() + 1;
        words[to] = &system;
        let out = t.cmd().args(words).output();
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr_has("is in use");
    }

    // A smaller one: refused with the sizes by dbackup, by sfdisk on the plain way; nothing written.
    let smaller = blank_disk(&t, "smaller.img", 200 * MIB);
    let out = run_dbackup(&t, &t9, &meta, restore, &[&smaller], &["--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    out.stderr_has("200.0 MiB, smaller than the 319.0 MiB its partitions need")
        .stderr_has("nothing was written");
    let (done, failed) = run_plain(&t, &t9, &meta, &plain, &[&smaller]);
    assert_eq!(done, 1, "the table does not fit: {failed}");
    assert_eq!(written(&t, "smaller.img", &smaller), 0, "{failed}");
    drop(smaller);

    // The root's image with a byte flipped in its middle: found before anything is written, both ways.
    let image = dir
        .join("system")
        .join(&meta.system.as_ref().unwrap().images[1].file.name);
    let mut bytes = fs::read(&image).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&image, bytes).unwrap();
    let target = blank_disk(&t, "target.img", 320 * MIB);
    let (done, failed) = run_plain(&t, &t9, &meta, &plain, &[&target]);
    assert_eq!(done, 0, "the sum check stops it: {failed}");
    assert!(failed.contains("FAILED"), "{failed}");
    for (line, extra) in [(dry_run, &[][..]), (restore, &["--yes"][..])] {
        let out = run_dbackup(&t, &t9, &meta, line, &[&target], extra);
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr_has("is damaged")
            .stderr_has("nothing was written");
    }
    assert_eq!(written(&t, "target.img", &target), 0);
}

/// The guide of a plain image backup, walked as written (see [`walk`]).
#[test]
fn t9_the_restore_guide_of_a_plain_image_restores_as_written() {
    if !require() || !testkit::require_tools(PLAIN_TOOLS, "apt-get install partclone zstd age") {
        return;
    }
    walk(false);
}

/// The guide of an encrypted image backup, walked as written with `identity.txt` (see [`walk`]).
#[test]
fn t9_the_restore_guide_of_an_encrypted_image_restores_as_written() {
    if !require() || !testkit::require_tools(PLAIN_TOOLS, "apt-get install partclone zstd age") {
        return;
    }
    walk(true);
}

/// A loop device holding an ext4 filesystem with no partition table (a whole disk's, as an LVM volume's would be)
/// imaged, and its guide walked as written: its dbackup commands onto a larger blank device (the dry run writes
/// nothing; grown to its end), its plain-tools commands onto one of the same size and, with its lines that grow the
/// filesystem, onto a larger one (grown); fsck clean, every file the same.
/// Before, the guide gave the whole-disk restore for it, which dbackup refused ("restoring them onto a disk is not
/// supported").
#[test]
fn t9_the_restore_guide_of_a_filesystem_without_a_partition_table_restores_as_written() {
    if !require() || !testkit::require_tools(PLAIN_TOOLS, "apt-get install partclone zstd age") {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 256 * MIB);
    let t = t.config(&config(&t9, ""));
    let tree = t.path("tree");
    root_tree(&tree, 1 << 20);
    let old = blank_disk(&t, "old.img", 128 * MIB);
    testkit::run(
        "mkfs.ext4",
        [
            "-q".as_ref(),
            "-F".as_ref(),
            "-d".as_ref(),
            tree.as_os_str(),
            old.device.as_os_str(),
        ],
    );
    t.cmd()
        .args(["image", "create", "--device"])
        .args([&old.device])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let guide = fs::read_to_string(dir.join("system/RESTORE-SYSTEM.md")).unwrap();
    let plain = commands(&guide, "Without dbackup", "A pipe that stops");
    let with_dbackup = commands(&guide, "This backup holds", "| image |");
    assert_eq!(plain.len(), 2, "the sum check, the image: {guide}");
    assert_eq!(with_dbackup.len(), 2, "{guide}");
    let files = |dev: &LoopDisk, at: &str| {
        testkit::run(
            "e2fsck",
            ["-f".as_ref(), "-n".as_ref(), dev.device.as_os_str()],
        );
        let m = RoMount::new(&dev.device, &t.path(at));
        let st = rustix::fs::statvfs(&m.0).unwrap();
        (manifest(&m.0), st.f_blocks * st.f_frsize)
    };
    let (want, old_size) = files(&old, "mnt/old");
    assert!(want.len() > 35, "{want:#?}");

    let larger = blank_disk(&t, "larger.img", 256 * MIB);
    let out = run_dbackup(&t, &t9, &meta, &with_dbackup[0], &[&larger], &[]);
    assert_eq!(out.code, 0, "{out:?}\n{guide}");
    assert_eq!(written(&t, "larger.img", &larger), 0, "the dry run wrote");
    let out = run_dbackup(&t, &t9, &meta, &with_dbackup[1], &[&larger], &["--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (got, size) = files(&larger, "mnt/larger");
    assert_eq!(want, got);
    assert!(size > old_size + 100 * MIB, "grown: {old_size} -> {size}");
    drop(larger);

    let same = blank_disk(&t, "same.img", 128 * MIB);
    let (done, failed) = run_plain(&t, &t9, &meta, &plain, &[&same]);
    assert_eq!(done, plain.len(), "{failed}\n{guide}");
    assert_eq!(want, files(&same, "mnt/plain").0);
    drop(same);

    // The plain tools onto a larger one, then the guide's lines that grow the filesystem to its end.
    let plain_larger = plain_and_grown(&t, &t9, &meta, &guide, &plain, 256 * MIB);
    let (got, size) = files(&plain_larger, "mnt/plain-larger");
    assert_eq!(want, got);
    assert!(size > old_size + 100 * MIB, "grown: {old_size} -> {size}");
}

/// The ext4 filesystem on partition 1 of `disk` passes fsck; mounted read-only at `<tmp>/<at>` for a moment: its
/// [`manifest`].
fn data_files(t: &Test, disk: &LoopDisk, at: &str) -> std::collections::BTreeMap<String, String> {
    testkit::run(
        "e2fsck",
        ["-f".as_ref(), "-n".as_ref(), disk.part(1).as_os_str()],
    );
    manifest(&RoMount::new(&disk.part(1), &t.path(at)).0)
}

/// A backup holding the partitions of two disks (a GPT disk's ESP and root, another GPT disk's data partition), and
/// its guide walked as written: each disk's `dbackup image restore` pair (the dry run, then the restore) onto a larger
/// blank disk of its own, and the plain tools' commands onto two of the same sizes; both disks come back with
/// filesystems that fsck passes and every file the same. Before, the guide gave one pair for every image onto
/// `/dev/NEWDISK`, which dbackup refused ("holds images of several disks"), and wrote both tables onto the same disk
/// the plain way.
#[test]
fn t9_the_restore_guide_of_two_disks_restores_each_as_written() {
    if !require() || !testkit::require_tools(PLAIN_TOOLS, "apt-get install partclone zstd age") {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 256 * MIB);
    let t = t.config(&config(&t9, ""));
    let first = disk_with_root(&t, 1 << 20, Root::Ext4);
    let second = partitioned(
        &t.path("second.img"),
        128 * MIB,
        "label: gpt\nunit: sectors\n\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, name=\"data\"\n",
    );
    let tree = t.path("tree2");
    root_tree(&tree, 1 << 20);
    testkit::run(
        "mkfs.ext4",
        [
            "-q".as_ref(),
            "-F".as_ref(),
            "-L".as_ref(),
            "data".as_ref(),
            "-d".as_ref(),
            tree.as_os_str(),
            second.part(1).as_os_str(),
        ],
    );
    let dev = |p: std::path::PathBuf| p.display().to_string();
    t.cmd()
        .args(["image", "create", "--device", &dev(first.part(1))])
        .args(["--device", &dev(first.part(2))])
        .args(["--device", &dev(second.part(1))])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let guide = fs::read_to_string(dir.join("system/RESTORE-SYSTEM.md")).unwrap();
    // Blank disks in the order of the backup's tables (as `substitute` takes them), sized per disk (the first's, the
    // second's).
    let tables: Vec<&str> = (meta.system.as_ref().unwrap().tables.iter())
        .map(|t| t.disk.as_str())
        .collect();
    let name = |d: &LoopDisk| d.device.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(tables.len(), 2, "{guide}");
    let blanks = |what: &str, sizes: [u64; 2]| -> Vec<LoopDisk> {
        (tables.iter())
            .map(|disk| {
                let k = usize::from(*disk != name(&first));
                blank_disk(&t, &format!("{what}-{k}.img"), sizes[k])
            })
            .collect()
    };
    // The targets in table order, and which of them takes the first disk's place.
    let first_at = tables.iter().position(|d| *d == name(&first)).unwrap();
    let want_second = data_files(&t, &second, "mnt/old2");
    assert!(want_second.len() > 35, "{want_second:#?}");
    let same_both = |restored: &[LoopDisk], at: &str| {
        same_disk(&t, &first, &restored[first_at], &format!("{at}-first"));
        let got = data_files(&t, &restored[1 - first_at], &format!("{at}-second"));
        assert_eq!(want_second, got, "{at}");
    };

    // dbackup's way: each line as written (the dry runs write nothing), onto larger disks.
    let with_dbackup = commands(&guide, "This backup holds", "| image |");
    let larger = blanks("larger", [400 * MIB, 192 * MIB]);
    let targets: Vec<&LoopDisk> = larger.iter().collect();
    for line in &with_dbackup {
        let extra: &[&str] = if line.ends_with("--dry-run") {
            &[]
        } else {
            &["--yes"]
        };
        let out = run_dbackup(&t, &t9, &meta, line, &targets, extra);
        assert_eq!(out.code, 0, "{line}\n{out:?}\n{guide}");
    }
    assert_eq!(
        with_dbackup.len(),
        4,
        "a dry run and a restore for each disk: {guide}"
    );
    same_both(&larger, "mnt/larger");
    drop(larger);

    // The plain tools' way, onto disks of the same sizes.
    let plain = commands(&guide, "Without dbackup", "A pipe that stops");
    assert_eq!(
        plain.len(),
        6,
        "the sum check, two tables, three images: {guide}"
    );
    let same = blanks("same", [320 * MIB, 128 * MIB]);
    let (done, failed) = run_plain(&t, &t9, &meta, &plain, &same.iter().collect::<Vec<_>>());
    assert_eq!(done, plain.len(), "{failed}\n{guide}");
    same_both(&same, "mnt/plain");
}

/// A backup of a disk's ESP alone (the root, its last partition, not imaged), its guide's `dbackup image restore`
/// lines run as written onto a larger blank disk: the table and the ESP come back (fsck clean, the same UUID). Before,
/// the restore line carried `--grow`, which the plan refuses when the last partition has no image ("--grow grows the
/// last partition (2) and its filesystem, but this backup has no image of it").
#[test]
fn t9_the_restore_guide_of_a_disk_whose_last_partition_has_no_image_restores_as_written() {
    if !require() || !testkit::require_tools(PLAIN_TOOLS, "apt-get install partclone zstd age") {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 256 * MIB);
    let t = t.config(&config(&t9, ""));
    let disk = disk_with_root(&t, 1 << 20, Root::Ext4);
    t.cmd()
        .args([
            "image",
            "create",
            "--device",
            &disk.part(1).display().to_string(),
        ])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let guide = fs::read_to_string(dir.join("system/RESTORE-SYSTEM.md")).unwrap();
    let with_dbackup = commands(&guide, "This backup holds", "| image |");
    assert_eq!(with_dbackup.len(), 2, "{guide}");
    let larger = blank_disk(&t, "larger.img", 640 * MIB);
    for line in &with_dbackup {
        let extra: &[&str] = if line.ends_with("--dry-run") {
            &[]
        } else {
            &["--yes"]
        };
        let out = run_dbackup(&t, &t9, &meta, line, &[&larger], extra);
        assert_eq!(out.code, 0, "{line}\n{out:?}\n{guide}");
    }
    testkit::run("fsck.fat", ["-n".as_ref(), larger.part(1).as_os_str()]);
    assert_eq!(blkid(&larger.part(1), "UUID"), blkid(&disk.part(1), "UUID"));
}
