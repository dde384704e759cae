//! `dbackup image` end to end: the recovery kit of this machine, the kit in every external backup (plain and
//! encrypted), and partition images of GPT disk images on real loop devices (an ESP made with mkfs.fat and an ext4
//! or btrfs root filled with files, symlinks, hard links, a fifo, xattrs and a 0600 file) written to the emulated T9
//! (exFAT through mount.exfat-fuse) and restored onto a blank larger disk image; and the refusals: a filesystem
//! mounted read-write, a smaller target, a mounted target, a corrupted image, a drive pulled mid-image. Before this
//! room existed, `dbackup image` did not parse and backups held no `system/` folder.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dbackup::{BackupMeta, ImageRestoreReport, list_drive_backups};
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::drive::{assert_sums_pass, caught_writing, content};
use crate::harness::Test;

pub(crate) const MIB: u64 = 1 << 20;

/// The tools the partition tests run, beyond the T9's.
const TOOLS: &[&str] = &[
    "sfdisk",
    "partx",
    "mkfs.fat",
    "fsck.fat",
    "mkfs.ext4",
    "e2fsck",
    "resize2fs",
    "mkfs.btrfs",
    "partclone.fat",
    "partclone.extfs",
    "partclone.btrfs",
    "partclone.chkimg",
    "setfattr",
    "getfattr",
    "mkfifo",
    "mount",
];

/// Root, the T9's tools and the imaging tools; else a message (and a failure under CI).
pub(crate) fn require() -> bool {
    if !loopdev::require(&[Fs::Exfat]) {
        return false;
    }
    match testkit::check_tools(TOOLS, testkit::in_ci()) {
        Ok(()) => true,
        Err(msg) => {
            testkit::skip(&format!(
                "{msg} (apt-get install partclone dosfstools fdisk e2fsprogs btrfs-progs attr)"
            ));
            false
        }
    }
}

/// A sparse disk image attached to a loop device with its partitions (`losetup --find --show -P`, `partx -a` when
/// the nodes are missing); detached on drop while still backed by this image.
pub(crate) struct LoopDisk {
    image: PathBuf,
    pub(crate) device: PathBuf,
}

impl LoopDisk {
    pub(crate) fn attach(image: &Path) -> LoopDisk {
        let dev = testkit::run(
            "losetup",
            [
                "--find".as_ref(),
                "--show".as_ref(),
                "-P".as_ref(),
                image.as_os_str(),
            ],
        );
        LoopDisk {
            image: fs::canonicalize(image).unwrap(),
            device: PathBuf::from(dev.trim()),
        }
    }

    /// The name of partition `n`'s node (`loop7p2`), as image backups name its image.
    pub(crate) fn part_name(&self, n: u32) -> String {
        self.part(n)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The node of partition `n`, waiting for it (and asking `partx -a` once).
    pub(crate) fn part(&self, n: u32) -> PathBuf {
        let p = PathBuf::from(format!("{}p{n}", self.device.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut asked = false;
        while !p.exists() {
            if !asked {
                let _ = testkit::try_run("partx", ["-a".as_ref(), self.device.as_os_str()]);
                asked = true;
            }
            assert!(Instant::now() < deadline, "{} never appeared", p.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn attached(&self) -> bool {
        loopdev::backed_by(&self.device, &self.image)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.attached() {
            let _ = testkit::try_run("losetup", ["-d".as_ref(), self.device.as_os_str()]);
        }
    }
}

/// A read-only mount of ours, unmounted on drop.
pub(crate) struct RoMount(pub(crate) PathBuf);

impl RoMount {
    pub(crate) fn new(dev: &Path, at: &Path) -> RoMount {
        fs::create_dir_all(at).unwrap();
        testkit::run(
            "mount",
            [
                "-o".as_ref(),
                "ro".as_ref(),
                dev.as_os_str(),
                at.as_os_str(),
            ],
        );
        RoMount(at.to_path_buf())
    }
}

impl Drop for RoMount {
    /// A plain `umount`, else a lazy one (busy: a process of a failed test still reading it), so no test leaves a
    /// mount behind to hold its loop device.
    fn drop(&mut self) {
        if !testkit::try_run("umount", [self.0.as_os_str()]).0 {
            let _ = testkit::try_run("umount", ["-l".as_ref(), self.0.as_os_str()]);
        }
    }
}

/// The root filesystem's tree: files, symlinks (relative, absolute, dangling), a hard-linked pair, a fifo, a file
/// with a user xattr, a 0600 file, an empty directory, and `big` bytes of incompressible data.
pub(crate) fn root_tree(dir: &Path, big: usize) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("home/u/empty")).unwrap();
    fs::write(dir.join("etc/hostname"), "ws\n").unwrap();
    for i in 0..30 {
        fs::write(
            dir.join(format!("home/u/f{i:02}")),
            content(3000 + i * 101, i as u64),
        )
        .unwrap();
    }
    fs::write(dir.join("home/u/big"), content(big, 7)).unwrap();
    std::os::unix::fs::symlink("../../etc/hostname", dir.join("home/u/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("home/u/abs")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", dir.join("home/u/dangling")).unwrap();
    fs::write(dir.join("home/u/h1"), "hard\n").unwrap();
    fs::hard_link(dir.join("home/u/h1"), dir.join("home/u/h2")).unwrap();
    testkit::run("mkfifo", [dir.join("home/u/fifo").as_os_str()]);
    let secret = dir.join("home/u/secret");
    fs::write(&secret, "TOKEN=1\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    testkit::run(
        "setfattr",
        [
            "-n".as_ref(),
            "user.dbackup".as_ref(),
            "-v".as_ref(),
            "kept".as_ref(),
            dir.join("home/u/f01").as_os_str(),
        ],
    );
}

/// Every entry of a mounted tree: type, mode, owner, size, content hash, link target, xattrs, and which entries share
/// an inode (hard links).
pub(crate) fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if rel.is_empty() || rel == "lost+found" || rel.starts_with("lost+found/") {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            let bytes = fs::read(e.path()).unwrap();
            format!("file {} {}", bytes.len(), dbackup::Digest::of_bytes(&bytes))
        };
        let mut xattrs: Vec<String> = Vec::new();
        if !ft.is_symlink() {
            let (_, list, _, _) = testkit::try_run(
                "getfattr",
                [
                    "-d".as_ref(),
                    "--absolute-names".as_ref(),
                    e.path().as_os_str(),
                ],
            );
            xattrs.extend(
                list.lines()
                    .filter(|l| l.starts_with("user."))
                    .map(str::to_string),
            );
        }
        let link = if ft.is_file() && m.nlink() > 1 {
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            format!(" same-inode-as {first}")
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "{what} mode {:o} {}:{}{link} {}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                xattrs.join(",")
            ),
        );
    }
    out
}

/// A new GPT disk image at `path`: a 64 MiB ESP (vfat, made with mkfs.fat) and a root partition filling the rest,
/// made by `root` on the partition's node.
pub(crate) fn make_disk(path: &Path, size: u64) -> LoopDisk {
    let disk = partitioned(
        path,
        size,
        "label: gpt\nunit: sectors\n\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\"\nstart=133120, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, name=\"root\"\n",
    );
    testkit::run(
        "mkfs.fat",
        [
            "-F".as_ref(),
            "32".as_ref(),
            "-n".as_ref(),
            "ESP".as_ref(),
            disk.part(1).as_os_str(),
        ],
    );
    disk
}

/// A new disk image of `size` bytes at `path`, partitioned by the `sfdisk` `script`, attached with its partitions.
pub(crate) fn partitioned(path: &Path, size: u64, script: &str) -> LoopDisk {
    let f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut child = Command::new(testkit::tool("sfdisk").unwrap())
        .args(["--quiet"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    LoopDisk::attach(path)
}

/// A GPT disk at `<tmp>/old.img` ([`make_disk`], 320 MiB) whose root partition holds [`root_tree`] (`big` bytes of
/// incompressible data in `home/u/big`) as an ext4 or btrfs filesystem labelled `root`.
pub(crate) fn disk_with_root(t: &Test, big: usize, root: Root) -> LoopDisk {
    let tree = t.path("tree");
    root_tree(&tree, big);
    let disk = make_disk(&t.path("old.img"), 320 * MIB);
    let (mkfs, force, from) = match root {
        Root::Ext4 => ("mkfs.ext4", "-F", "-d"),
        Root::Btrfs => ("mkfs.btrfs", "-f", "--rootdir"),
    };
    testkit::run(
        mkfs,
        [
            "-q".as_ref(),
            force.as_ref(),
            "-L".as_ref(),
            "root".as_ref(),
            from.as_ref(),
            tree.as_os_str(),
            disk.part(2).as_os_str(),
        ],
    );
    disk
}

/// The root partition (2) of `disk` mounted read-only at `<tmp>/<at>` for a moment: its [`manifest`] and its
/// filesystem's size in bytes.
pub(crate) fn look_at_root(t: &Test, disk: &LoopDisk, at: &str) -> (BTreeMap<String, String>, u64) {
    let m = RoMount::new(&disk.part(2), &t.path(at));
    let st = rustix::fs::statvfs(&m.0).unwrap();
    (manifest(&m.0), st.f_blocks * st.f_frsize)
}

pub(crate) fn blkid(dev: &Path, what: &str) -> String {
    testkit::run(
        "blkid",
        ["-c", "/dev/null", "-s", what, "-o", "value"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([dev.as_os_str()]),
    )
    .trim()
    .to_string()
}

pub(crate) fn config(t9: &Drive, extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9"{extra} }} ] }}"#,
        t9.mount_point().display()
    )
}

/// The one backup directory on the drive whose backup.json holds images.
pub(crate) fn image_backup(t9: &Drive) -> (PathBuf, BackupMeta) {
    let listing = list_drive_backups(&t9.mount_point().join("backups")).unwrap();
    let b = listing
        .verified()
        .filter(|b| {
            b.meta
                .as_ref()
                .unwrap()
                .system
                .as_ref()
                .is_some_and(|s| !s.images.is_empty())
        })
        .last()
        .expect("a backup with images");
    (b.path.clone(), b.meta.clone().unwrap())
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Root {
    Ext4,
    Btrfs,
}

/// Images a GPT disk (ESP + `root`) to the T9 and restores it onto a blank disk image twice its size with --grow:
/// fsck clean, UUIDs and PARTUUIDs equal, the ESP byte for byte, every file of the root identical (read-only loop
/// mounts of both), the last partition and its filesystem grown.
fn round_trip(root: Root) {
    let t = Test::new();
    let t9 = Drive::exfat("T9", 1 << 30);
    let t = t.config(&config(&t9, ""));
    let disk = disk_with_root(&t, 6 << 20, root);
    let fs_name = if root == Root::Ext4 { "ext4" } else { "btrfs" };

    let dev = |n: u32| disk.part(n).display().to_string();
    let out = t
        .cmd()
        .args([
            "--json",
            "image",
            "create",
            "--device",
            &dev(1),
            "--device",
            &dev(2),
        ])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let created: serde_json::Value = out.json();
    let invalid: Vec<String> = crate::json::validator("image-create")
        .iter_errors(&created)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        invalid.is_empty(),
        "docs/json/image-create.json: {invalid:?}\n{created}"
    );
    assert_eq!(created["backup_path"], dir.display().to_string());
    assert!(meta.sets.is_empty());
    let system = meta.system.as_ref().unwrap();
    assert_eq!(system.images.len(), 2, "{system:?}");
    assert!(system.images.iter().all(|i| i.checked), "{system:?}");
    assert_eq!(system.images[1].fs_type, fs_name);
    assert_eq!(system.tables.len(), 1);
    for f in system.files() {
        assert!(dir.join("system").join(&f.name).is_file(), "{}", f.name);
    }
    assert!(dir.join("system/RESTORE-SYSTEM.md").is_file());
    assert_sums_pass(&dir);
    assert!(
        !listing_has_latest(&t9),
        "an image-only backup does not move latest"
    );

    let new = t.path("new.img");
    fs::File::create(&new).unwrap().set_len(640 * MIB).unwrap();
    let stamp = meta.stamp.clone();
    // `image restore --from <stamp> --to new.img --grow`, after these options.
    let grow_onto_new = |options: &[&str]| {
        t.cmd()
            .args(options)
            .args(["image", "restore", "--from", &stamp, "--to"])
            .args([&new])
            .args(["--grow"])
            .status(0)
    };
    grow_onto_new(&["--dry-run"]).stdout_has("the last grown to the end");
    let dry_json: serde_json::Value = grow_onto_new(&["--json", "--dry-run"]).json();
    assert!(
        crate::json::validator("image-restore-plan").is_valid(&dry_json),
        "docs/json/image-restore-plan.json: {dry_json}"
    );
    assert_eq!(
        fs::read(&new).unwrap().iter().filter(|b| **b != 0).count(),
        0,
        "a dry run writes nothing"
    );
    let out = grow_onto_new(&["--json"]);
    let restored_json: serde_json::Value = out.json();
    assert!(
        crate::json::validator("image-restore").is_valid(&restored_json),
        "docs/json/image-restore.json: {restored_json}"
    );
    let report: ImageRestoreReport = out.json();
    assert!(report.ok(), "{report:?}");
    assert!(report.partitions[1].grown);

    let restored = LoopDisk::attach(&new);
    for n in [1, 2] {
        assert_eq!(
            blkid(&restored.part(n), "UUID"),
            blkid(&disk.part(n), "UUID"),
            "partition {n}"
        );
        assert_eq!(
            blkid(&restored.part(n), "PARTUUID"),
            blkid(&disk.part(n), "PARTUUID"),
            "partition {n}"
        );
    }
    testkit::run("fsck.fat", ["-n".as_ref(), restored.part(1).as_os_str()]);
    match root {
        Root::Ext4 => testkit::run(
            "e2fsck",
            ["-f".as_ref(), "-n".as_ref(), restored.part(2).as_os_str()],
        ),
        Root::Btrfs => testkit::run(
            "btrfs",
            [
                "check".as_ref(),
                "--readonly".as_ref(),
                restored.part(2).as_os_str(),
            ],
        ),
    };
    // The ESP: the same bytes (both were blank sparse files before).
    let esp = |d: &LoopDisk| fs::read(d.part(1)).unwrap();
    assert!(esp(&disk) == esp(&restored), "the ESP differs");
    // The root: grown, and every file the same.
    let size = |d: &LoopDisk| {
        fs::read_to_string(format!("/sys/class/block/{}/size", d.part_name(2)))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        size(&restored) > size(&disk) + 200 * 2048,
        "the last partition was grown"
    );
    // One at a time: btrfs does not mount two filesystems with the same UUID at once.
    let (ma, size_a) = look_at_root(&t, &disk, "mnt/old");
    let (mb, size_b) = look_at_root(&t, &restored, "mnt/new");
    assert!(ma.len() > 35, "{ma:#?}");
    assert!(
        ma.values().any(|v| v.contains("user.dbackup=\"kept\"")),
        "{ma:#?}"
    );
    assert!(ma.get("home/u/secret").unwrap().contains("mode 600"));
    assert_eq!(ma, mb);
    assert!(
        size_b > size_a + 200 * MIB,
        "the filesystem was grown: {size_a} -> {size_b}"
    );
}

pub(crate) fn listing_has_latest(t9: &Drive) -> bool {
    list_drive_backups(&t9.mount_point().join("backups"))
        .unwrap()
        .latest
        .is_some()
}

/// An ESP and an ext4 root, imaged and restored onto a larger disk image (see [`round_trip`]).
#[test]
fn t9_image_of_an_ext4_disk_restores_onto_a_larger_disk() {
    if !require() {
        return;
    }
    round_trip(Root::Ext4);
}

/// The same with a btrfs root (grown while mounted on a private mount point).
#[test]
fn t9_image_of_a_btrfs_disk_restores_onto_a_larger_disk() {
    if !require() {
        return;
    }
    round_trip(Root::Btrfs);
}

/// Every refusal: a filesystem mounted read-write is not imaged (nothing promoted); a target smaller than the layout,
/// and a mounted target, are refused before anything is written; a flipped byte in an image is found before the
/// target is touched; a drive pulled mid-image promotes nothing.
#[test]
fn t9_image_refusals() {
    if !require() {
        return;
    }
    let t = Test::new();
    let t9 = Drive::exfat("T9", 1 << 30);
    let t = t.config(&config(&t9, ""));
    let disk = disk_with_root(&t, 96 << 20, Root::Ext4);
    let root_dev = disk.part(2);
    let dev = |n: u32| disk.part(n).display().to_string();
    let stamps = || {
        crate::fixtures::drive::listing(&t9.mount_point().join("backups"))
            .into_iter()
            .filter(|n| n.starts_with("20"))
            .collect::<Vec<_>>()
    };

    // Mounted read-write: refused with the reason, nothing written.
    let mp = t.path("mnt/rw");
    fs::create_dir_all(&mp).unwrap();
    testkit::run("mount", [root_dev.as_os_str(), mp.as_os_str()]);
    let out = t
        .cmd()
        .args(["image", "create", "--device", &dev(2)])
        .output();
    testkit::run("umount", [mp.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    out.stderr_has("mounted read-write at");
    assert!(stamps().is_empty(), "{:?}", stamps());

    // A drive pulled while the image is written: nothing promoted.
    let child = t
        .cmd()
        .args(["image", "create", "--device", &dev(2)])
        .spawn();
    let image = format!("system/{}.img.zst", disk.part_name(2));
    let (mut child, _) = caught_writing(child, t9.mount_point(), &image, 4 * MIB + 1);
    t9.pull();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was promoted"), "{stderr}");
    t9.mount();
    assert!(stamps().is_empty(), "{:?}", stamps());

    // A good image, then the restore refusals.
    t.cmd()
        .args(["image", "create", "--device", &dev(1), "--device", &dev(2)])
        .status(0);
    let (dir, meta) = image_backup(&t9);
    let small = t.path("small.img");
    fs::File::create(&small)
        .unwrap()
        .set_len(200 * MIB)
        .unwrap();
    let out = t
        .cmd()
        .args(["image", "restore", "--from", &meta.stamp, "--to"])
        .args([&small])
        .status(1);
    out.stderr_has("smaller than the");
    let mounted = Drive::ext4("busy", 400 * MIB);
    let out = t
        .cmd()
        .args(["image", "restore", "--yes", "--from", &meta.stamp, "--to"])
        .args([mounted.device()])
        .status(1);
    out.stderr_has("is in use").stderr_has("mounted read-write");
    assert!(mounted.is_mounted());

    // A flipped byte in the middle of the root's image: found before anything is written.
    let image = dir
        .join("system")
        .join(&meta.system.as_ref().unwrap().images[1].file.name);
    crate::harness::flip_middle_byte(&image);
    let new = t.path("new.img");
    fs::File::create(&new).unwrap().set_len(400 * MIB).unwrap();
    let out = t
        .cmd()
        .args(["image", "restore", "--from", &meta.stamp, "--to"])
        .args([&new])
        .status(1);
    out.stderr_has("is damaged")
        .stderr_has("nothing was written");
    assert_eq!(
        fs::read(&new).unwrap().iter().filter(|b| **b != 0).count(),
        0,
        "the target was not touched"
    );
}

/// The kit of this machine (no root needed): every piece is a file of the recorded size or says why it is absent,
/// fstab holds no password, and the guide is there. Run as root too, where the partition tables can be read.
#[test]
fn image_kit_on_this_machine_explains_every_piece() {
    let t = Test::new();
    let out_dir = t.path("kit");
    let out = t
        .cmd()
        .no_config()
        .args(["--json", "image", "kit", "--out"])
        .args([&out_dir])
        .status(0);
    // One object under the JSON contract (`docs/json/image-kit.json`): the pieces beside `format` and `out`.
    let kit: serde_json::Value = out.json();
    assert_eq!(kit["format"], 1);
    let pieces = kit["pieces"].as_array().expect("pieces").clone();
    assert!(pieces.len() >= 10, "{pieces:#?}");
    for p in &pieces {
        let name = p["name"].as_str().unwrap();
        match p["file"].as_object() {
            Some(f) => {
                let m = fs::metadata(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(m.len(), f["bytes"].as_u64().unwrap(), "{name}");
            }
            None => {
                let note = p["note"].as_str().unwrap_or("");
                assert!(!note.is_empty(), "{name} is absent without a reason: {p}");
                assert!(!out_dir.join(name).exists(), "{name}");
            }
        }
    }
    for must in ["lsblk.json", "os-release", "RESTORE-SYSTEM.md", "kit.json"] {
        assert!(out_dir.join(must).is_file(), "{must}");
    }
    if let Ok(fstab) = fs::read_to_string(out_dir.join("fstab")) {
        assert!(!fstab.contains("password=") || fstab.contains("password=REDACTED"));
    }
    let guide = fs::read_to_string(out_dir.join("RESTORE-SYSTEM.md")).unwrap();
    assert!(guide.contains("## 5. The boot loader (by hand)"), "{guide}");

    // Without --json the pieces are a table on stderr: each status starts in the same column, however long the
    // piece's name (before, a name over 28 characters, `nixos-hardware-configuration.nix`, pushed its row out).
    let out = t
        .cmd()
        .no_config()
        .args(["image", "kit", "--out"])
        .args([t.path("kit2")])
        .status(0);
    let columns: std::collections::BTreeSet<usize> = out
        .stderr
        .lines()
        .filter(|l| {
            pieces
                .iter()
                .any(|p| l.trim_start().starts_with(p["name"].as_str().unwrap()))
        })
        .map(|l| {
            let name_end = l.len() - l.trim_start().len() + l.trim_start().find(' ').unwrap();
            name_end + l[name_end..].len() - l[name_end..].trim_start().len()
        })
        .collect();
    assert_eq!(
        columns.len(),
        1,
        "statuses in several columns:\n{}",
        out.stderr
    );
}

/// An external run writes the kit into the backup, named in backup.json and covered by verification.sha256 (and by
/// `restore --verify`); with encryption, every kit file is an age file to the sets' recipients and no plaintext
/// guide is on the drive.
#[test]
fn external_runs_write_the_kit_plain_and_encrypted() {
    let t = Test::new();
    let (identity, recipient) = t.keygen("id.txt");
    let plain = t.path("plain");
    let enc = t.path("enc");
    fs::create_dir_all(&plain).unwrap();
    fs::create_dir_all(&enc).unwrap();
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "external": {{ "mode": "all" }},
             "destinations": [
               {{ "name": "plain", "path": "{}", "require_mount": false }},
               {{ "name": "enc", "path": "{}", "require_mount": false, "encryption": {{ "recipients": ["{recipient}"] }} }} ] }}"#,
        plain.display(),
        enc.display()
    ));
    t.write("home/data/a.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    for (drive, encrypted) in [(&plain, false), (&enc, true)] {
        let b = list_drive_backups(&drive.join("backups")).unwrap();
        let backup = b.verified().last().unwrap();
        let meta = backup.meta.as_ref().unwrap();
        let system = meta.system.as_ref().expect("a system record");
        assert_eq!(system.encryption.is_some(), encrypted);
        let names: Vec<&str> = system.files().map(|f| f.name.as_str()).collect();
        let guide = if encrypted {
            "RESTORE-SYSTEM.md.age"
        } else {
            "RESTORE-SYSTEM.md"
        };
        assert!(names.contains(&guide), "{names:?}");
        for n in &names {
            assert_eq!(n.ends_with(".age"), encrypted, "{n}");
        }
        assert_sums_pass(&backup.path);
        let sums = fs::read_to_string(backup.path.join("verification.sha256")).unwrap();
        assert!(sums.contains(&format!("system/{guide}")), "{sums}");
        if encrypted {
            assert!(!backup.path.join("system/RESTORE-SYSTEM.md").exists());
            let out = Command::new("age")
                .args(["-d", "-i"])
                .arg(&identity)
                .arg(backup.path.join("system").join(guide))
                .output();
            if let Ok(out) = out {
                assert!(String::from_utf8_lossy(&out.stdout).contains("# Rebuilding"));
            }
        } else {
            t.cmd()
                .args(["restore", "--source", "external", "--drive"])
                .args([drive.as_path()])
                .args(["--verify"])
                .status(0);
        }
    }
}
