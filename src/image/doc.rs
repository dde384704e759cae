//! `RESTORE-SYSTEM.md`: the rebuild of this machine, step by step, generated from the kit's facts (a pure function;
//! its output is pinned by a snapshot with fixed inputs). Boot loader reinstallation is printed as steps, never
//! automated.

use std::fmt::Write as _;

use super::kit::{Disk, Facts};
use super::layout::{ImageRecord, KitRecord, TableRecord};
use super::table::push_some;
use crate::stdx;

/// Everything the guide is made from.
#[derive(Debug, Clone)]
pub struct DocInput<'a> {
    pub facts: &'a Facts,
    pub pieces: &'a [KitRecord],
    pub images: &'a [ImageRecord],
    pub tables: &'a [TableRecord],
    /// The backup it sits in, and the destination (none for `dbackup image kit --out`).
    pub stamp: Option<&'a str>,
    pub destination: Option<&'a str>,
    /// The sets (name and sources) the config backs up.
    pub sets: &'a [(String, Vec<String>)],
    /// The kit is encrypted (every file ends in `.age`).
    pub encrypted: bool,
    /// The images `--grow` can grow (by name): each disk's last partition's, imaged with a filesystem dbackup grows
    /// (and no logical partitions on the disk), and such images of filesystems without a partition table. Others are
    /// restored without it (the plan refuses `--grow` for them).
    pub grow: &'a [String],
    /// When it was generated (shown as given).
    pub generated: &'a str,
}

fn have(input: &DocInput, name: &str) -> bool {
    input
        .pieces
        .iter()
        .any(|p| p.name == name && p.file.is_some())
}

fn file(input: &DocInput, name: &str) -> String {
    if input.encrypted {
        format!("{name}.age")
    } else {
        name.to_string()
    }
}

fn disk_section(out: &mut String, d: &Disk) {
    let _ = writeln!(
        out,
        "- `/dev/{}`: {}{}{}",
        d.name,
        stdx::bytes(d.bytes),
        d.model
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default(),
        d.table
            .as_deref()
            .map(|t| format!(", {t} partition table"))
            .unwrap_or_default()
    );
    for p in &d.partitions {
        let mut line = format!("  - `{}` {}", p.name, stdx::bytes(p.bytes));
        push_some(&mut line, " ", &p.fs_type, "");
        push_some(&mut line, " UUID=", &p.ids.uuid, "");
        push_some(&mut line, " LABEL=", &p.ids.label, "");
        push_some(&mut line, " PARTUUID=", &p.ids.partuuid, "");
        if !p.mount_points.is_empty() {
            let _ = write!(line, " mounted at {}", p.mount_points.join(", "));
        }
        let _ = writeln!(out, "{}", crate::stdx::show_str(&line));
    }
}

/// The guide's text.
// Stays long: one document written top to bottom in reading order; its pieces already live in the helpers above.
pub fn render(input: &DocInput) -> String {
    let f = input.facts;
    let mut o = String::new();
    let _ = writeln!(o, "# Rebuilding {}\n", f.host);
    let _ = writeln!(
        o,
        "Written by dbackup {} on {}{}.",
        env!("CARGO_PKG_VERSION"),
        input.generated,
        match (input.stamp, input.destination) {
            (Some(s), Some(d)) => format!(" into backup {s} on destination {d}"),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        o,
        "System: {}; booted with {}.\n",
        f.os.as_deref().unwrap_or("unknown (no /etc/os-release)"),
        if f.efi { "UEFI" } else { "BIOS (legacy)" }
    );
    if input.encrypted {
        let _ = writeln!(
            o,
            "Every file of this kit is encrypted with age to the same recipients as the backup sets: read one with \
             `age -d -i identity.txt FILE.age`.\n"
        );
    }

    let _ = writeln!(o, "## The disks as they were\n");
    if f.disks.is_empty() {
        let _ = writeln!(
            o,
            "lsblk listed no disk; see `{}`.",
            file(input, "lsblk.json")
        );
    }
    for d in &f.disks {
        disk_section(&mut o, d);
    }
    let _ = writeln!(
        o,
        "\nThe exact layout of each disk is in `sfdisk-<disk>.dump` (`sfdisk --dump`), the filesystems in `blkid.txt` \
         and `lsblk.json`, the mounts in `fstab`.\n"
    );

    let _ = writeln!(o, "## 1. Start from rescue media\n");
    let _ = writeln!(
        o,
        "Boot a live system (the {} installer or any Linux live USB), plug in the backup drive and mount it \
         (`mkdir -p /mnt/backup`, then for exFAT `mount.exfat-fuse /dev/sdX1 /mnt/backup`). Get dbackup onto the live system (`cargo install --path .` \
         from its source, or copy the binary from another machine).\n",
        if f.nixos { "NixOS" } else { "Debian" }
    );

    let _ = writeln!(o, "## 2. Partitions and filesystems\n");
    if several_disks(input) {
        let _ = writeln!(
            o,
            "Each disk below gets a new disk of its own: `/dev/NEWDISK-<disk>` stands for the one that takes the \
             place of `<disk>`, and `/dev/NEWDISK-<name>` for its partition that takes the place of `<name>`.\n"
        );
    }
    if !input.images.is_empty() {
        restore_commands(&mut o, input);
        let _ = writeln!(o, "| image | filesystem | UUID | size | in use |");
        let _ = writeln!(o, "|---|---|---|---|---|");
        for i in input.images {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | {} | {} |",
                file(input, &i.file_name_plain()),
                i.fs_type,
                i.ids.uuid.as_deref().unwrap_or("-"),
                stdx::bytes(i.device_bytes),
                stdx::bytes(i.used_bytes)
            );
        }
        plain_tools(&mut o, input);
        let _ = writeln!(
            o,
            "Filesystems that have no image are recreated empty (below) and filled from the backup sets.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "This backup holds no partition images: recreate the layout, then the filesystems.\n"
        );
    }
    // A disk whose table is in the backup gets it with its images: its dump is not written again after them.
    let imaged_disk = |disk: &str| input.tables.iter().any(|t| t.disk == disk);
    let dumps: Vec<&KitRecord> = input
        .pieces
        .iter()
        .filter(|p| p.file.is_some())
        .filter(|p| dump_disk(&p.name).is_some_and(|disk| !imaged_disk(disk)))
        .collect();
    if dumps.is_empty() && input.tables.is_empty() {
        let _ = writeln!(
            o,
            "No partition table was recorded (sfdisk needs root: run `dbackup image kit` as root once); recreate the \
             partitions from the sizes above with `fdisk` or `gdisk`.\n"
        );
    } else if !dumps.is_empty() {
        for p in dumps {
            let _ = writeln!(
                o,
                "- `{}`: delete its `last-lba:` line (a new disk has its own end) and run `sfdisk {} < {}`; \
                 this keeps the partition UUIDs that `/etc/fstab` or the boot loader may name.",
                file(input, &p.name),
                new_disk(input, dump_disk(&p.name).unwrap_or_default()),
                p.name
            );
        }
        let _ = writeln!(o);
    }
    let mut mkfs = Vec::new();
    for d in &f.disks {
        for p in &d.partitions {
            let (Some(fs), Some(uuid)) = (&p.fs_type, &p.ids.uuid) else {
                continue;
            };
            // Its image restores it: a mkfs after that would wipe it.
            if input.images.iter().any(|i| i.name == p.name) {
                continue;
            }
            // From the disks (a plugged-in drive's too): each one shell word in a command to be pasted.
            let label = p.ids.label.as_deref().map(crate::stdx::shell_word);
            let uuid = crate::stdx::shell_word(uuid);
            let name = crate::stdx::show_str(&p.name);
            let cmd = match fs.as_str() {
                "ext2" | "ext3" | "ext4" => format!(
                    "mkfs.{fs} -U {uuid}{} /dev/NEWDISK-{}",
                    label.map(|l| format!(" -L {l}")).unwrap_or_default(),
                    name
                ),
                "vfat" => format!(
                    "mkfs.fat -F 32 -i {}{} /dev/NEWDISK-{}",
                    uuid.replace('-', ""),
                    label.map(|l| format!(" -n {l}")).unwrap_or_default(),
                    name
                ),
                "btrfs" => format!(
                    "mkfs.btrfs -U {uuid}{} /dev/NEWDISK-{}",
                    label.map(|l| format!(" -L {l}")).unwrap_or_default(),
                    name
                ),
                "xfs" => format!(
                    "mkfs.xfs -m uuid={uuid}{} /dev/NEWDISK-{}",
                    label.map(|l| format!(" -L {l}")).unwrap_or_default(),
                    name
                ),
                "swap" => format!("mkswap -U {uuid} /dev/NEWDISK-{name}"),
                "crypto_LUKS" => format!(
                    "cryptsetup luksFormat --uuid {uuid} /dev/NEWDISK-{} (then open it as /etc/crypttab says)",
                    name
                ),
                _ => continue,
            };
            mkfs.push(cmd);
        }
    }
    if mkfs.is_empty() {
        let _ = writeln!(
            o,
            "No filesystem is to be recreated: each one comes back with its image.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Recreate each filesystem with its old UUID and label, so `/etc/fstab` and the boot loader find it \
             again:\n"
        );
        // Every part is visible already (the words above; a kernel name): escaping it again would break them.
        for cmd in mkfs {
            let _ = writeln!(o, "    {cmd}");
        }
        let _ = writeln!(
            o,
            "\n(`/dev/NEWDISK-<name>` stands for the new partition that takes the place of `<name>`.) Then mount \
             them under `/mnt` as `fstab` says.\n"
        );
    }

    let _ = writeln!(o, "## 3. The operating system\n");
    if f.nixos {
        let _ = writeln!(
            o,
            "NixOS: copy the kit's configuration back to `/mnt/etc/nixos/` ({}) and install:\n",
            [
                "nixos-flake.nix",
                "nixos-flake.lock",
                "nixos-configuration.nix",
                "nixos-hardware-configuration.nix"
            ]
            .iter()
            .filter(|n| have(input, n))
            .map(|n| format!(
                "`{}` as `{}`",
                file(input, n),
                n.trim_start_matches("nixos-")
            ))
            .collect::<Vec<_>>()
            .join(", ")
        );
        if f.flake {
            let _ = writeln!(o, "    nixos-install --flake /mnt/etc/nixos#{}\n", f.host);
        } else {
            let _ = writeln!(o, "    nixos-install\n");
        }
        let _ = writeln!(
            o,
            "`nixos-version.json` and `current-system.txt` name the exact system that ran; with the flake's \
             `flake.lock` the same inputs are built again. If the disks changed, regenerate \
             `hardware-configuration.nix` with `nixos-generate-config --root /mnt` and compare.\n"
        );
    } else if f.debian {
        let _ = writeln!(
            o,
            "Debian: install the same release (see `os-release`) onto the new filesystems (the installer, or \
             `debootstrap`), then bring back the package selection inside the new system (`chroot /mnt`):\n"
        );
        let _ = writeln!(
            o,
            "    dpkg --set-selections < {}\n    apt-get dselect-upgrade\n    apt-mark manual $(cat {})\n",
            file(input, "dpkg-selections.txt"),
            file(input, "apt-manual.txt")
        );
    } else {
        let _ = writeln!(
            o,
            "Install the same system (see `os-release`) onto the new filesystems, or restore the images above.\n"
        );
    }

    let _ = writeln!(o, "## 4. Your data\n");
    if input.sets.is_empty() {
        let _ = writeln!(
            o,
            "Restore the backup sets with `dbackup restore --drive /mnt/backup --list` to see them.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Restore each backup set from the drive into the new system (`--target /mnt` keeps the absolute paths \
             under it; `--dry-run` first shows what would be written):\n"
        );
        for (name, sources) in input.sets {
            for s in sources {
                let _ = writeln!(
                    o,
                    "    dbackup restore --drive /mnt/backup --set {} --path {} --target /mnt{}",
                    crate::stdx::shell_word(name),
                    crate::stdx::shell_word(s),
                    identity_arg(input)
                );
            }
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## 5. The boot loader (by hand)\n");
    if f.efi {
        let _ = writeln!(
            o,
            "UEFI: the ESP's files come back with its image (or reinstall them), but the firmware's boot entries live \
             in the machine, not on the disk. From the new system (`chroot /mnt`, with /boot or /boot/efi mounted):\n"
        );
        if have(input, "bootctl-status.txt") {
            let _ = writeln!(
                o,
                "    bootctl install          # systemd-boot, as `bootctl-status.txt` shows"
            );
        }
        let _ = writeln!(
            o,
            "    grub-install --target=x86_64-efi --efi-directory=/boot/efi   # GRUB\n    update-grub\n"
        );
        if have(input, "efibootmgr.txt") {
            let _ = writeln!(
                o,
                "The old entries are in `{}`; add a missing one with `efibootmgr --create --disk {} --part N \
                 --label NAME --loader '\\EFI\\...'`{}.\n",
                file(input, "efibootmgr.txt"),
                boot_new_disk(input),
                if boot_disk(f).is_none() && several_disks(input) {
                    " (`<disk>`: the disk that holds the ESP)"
                } else {
                    ""
                }
            );
        }
        if f.nixos {
            let _ = writeln!(
                o,
                "On NixOS, `nixos-install` installs the boot loader itself.\n"
            );
        }
    } else {
        let _ = writeln!(
            o,
            "BIOS: reinstall GRUB into {} from the new system (`chroot /mnt`):\n\n    \
             grub-install {}\n    update-grub\n",
            if boot_disk(f).is_none() && several_disks(input) {
                "the boot sector of the new disk the machine boots from (`<disk>`)"
            } else {
                "the new disk's boot sector"
            },
            boot_new_disk(input)
        );
    }
    let _ = writeln!(
        o,
        "Before rebooting, check that every UUID in `/mnt/etc/fstab` (and `/mnt/etc/crypttab`) is in `blkid` \
         output.\n"
    );

    let _ = writeln!(o, "## What this kit holds\n");
    for p in input.pieces {
        let what = match (&p.file, p.status.as_str()) {
            (Some(_), _) => format!("`{}`", file(input, &p.name)),
            _ => format!("{} (none)", p.name),
        };
        let mut line = format!("- {what}: {} ({})", p.source, p.status);
        if let Some(n) = &p.note {
            let _ = write!(line, ": {n}");
        }
        let _ = writeln!(o, "{}", crate::stdx::show_str(&line));
    }
    o
}

/// The `dbackup image restore` commands: the partition images with their table onto the new disk; each image of a
/// filesystem without a partition table (a whole disk's, an LVM volume's) onto a device of its own.
fn restore_commands(o: &mut String, input: &DocInput) {
    let (tabled, tableless): (Vec<&ImageRecord>, Vec<&ImageRecord>) =
        input.images.iter().partition(|i| i.disk.is_some());
    // Names from backup.json: one shell word each in a command to be pasted.
    let names = |images: &[&ImageRecord]| -> String {
        images
            .iter()
            .map(|i| format!(" --name {}", stdx::shell_word(&i.name)))
            .collect()
    };
    let grows = |name: &str| grows(input, name);
    // A disk's restore grows when its last partition's image does.
    let disk_grows = |disk: &str| {
        (input.images.iter()).any(|i| i.disk.as_deref() == Some(disk) && grows(&i.name))
    };
    let pair = |o: &mut String, args: &str, grow: bool| {
        let _ = writeln!(
            o,
            "    dbackup image restore --drive /mnt/backup --from {0}{1}{2} --dry-run\n    \
             dbackup image restore --drive /mnt/backup --from {0}{1}{2}{3}",
            input.stamp.unwrap_or("STAMP"),
            args,
            identity_arg(input),
            if grow { " --grow" } else { "" }
        );
    };
    if !tabled.is_empty() {
        let disks: Vec<&str> = input.tables.iter().map(|t| t.disk.as_str()).collect();
        // dbackup restores one disk a run: with several, each gets its own pair, naming its images.
        let mut by_disk: Vec<(&str, Vec<&ImageRecord>)> = Vec::new();
        for i in &tabled {
            let disk = i.disk.as_deref().unwrap_or_default();
            match by_disk.iter_mut().find(|(d, _)| *d == disk) {
                Some((_, images)) => images.push(i),
                None => by_disk.push((disk, vec![i])),
            }
        }
        let _ = writeln!(
            o,
            "This backup holds partition images{}. {}:\n",
            if disks.is_empty() {
                String::new()
            } else {
                format!(" of {}", disks.join(", "))
            },
            match (
                by_disk.len() > 1,
                by_disk.iter().any(|(d, _)| disk_grows(d))
            ) {
                (true, true) => {
                    "Restore each disk's images, with its partition table, onto a new disk of its own, one disk a run \
                     (each must be at least as large as its disk; `--grow` grows the last filesystem to the end of a \
                     larger one)"
                }
                (true, false) => {
                    "Restore each disk's images, with its partition table, onto a new disk of its own, one disk a run \
                     (each must be at least as large as its disk)"
                }
                (false, true) => {
                    "Restore them, with their partition table, onto the new disk (it must be at least as large; \
                     `--grow` grows the last filesystem to the end of a larger one)"
                }
                (false, false) => {
                    "Restore them, with their partition table, onto the new disk (it must be at least as large)"
                }
            }
        );
        for (disk, images) in &by_disk {
            // Beside images without a table or of another disk, these are named: a disk's restore takes the images of
            // one disk.
            let named = if tableless.is_empty() && by_disk.len() == 1 {
                String::new()
            } else {
                names(images)
            };
            pair(
                o,
                &format!("{named} --to {}", new_disk(input, disk)),
                disk_grows(disk),
            );
        }
        let _ = writeln!(o);
    }
    if !tableless.is_empty() {
        let _ = writeln!(
            o,
            "This backup holds images of filesystems without a partition table (a whole disk's, an LVM volume's). \
             Restore each onto a device of its own, at least as large (`/dev/NEWDISK-<name>` stands for the one \
             that takes the place of `<name>`; `--grow` grows the filesystem to the end of a larger one):\n"
        );
        for i in &tableless {
            pair(
                o,
                &format!(
                    "{} --to /dev/NEWDISK-{}",
                    names(&[*i]),
                    stdx::shell_word(&i.name)
                ),
                grows(&i.name),
            );
        }
        let _ = writeln!(o);
    }
}

/// The images' restore with only sha256sum, sfdisk, zstd, partclone.restore (and age): commands to paste, naming
/// this backup's files on the drive, every file checked before the first write; and what a pipe stopped mid-way
/// leaves.
fn plain_tools(o: &mut String, input: &DocInput) {
    let dir = format!(
        "/mnt/backup/{}/{}",
        crate::media::marker::BACKUPS_DIR,
        input.stamp.unwrap_or("STAMP")
    );
    // Names from backup.json: one shell word each in a command to be pasted.
    let path = |name: &str| stdx::shell_word(&format!("{dir}/system/{}", file(input, name)));
    let _ = writeln!(
        o,
        "\nWithout dbackup, with only sha256sum, sfdisk, zstd and partclone.restore{}: first check every file of the \
         backup against its recorded sum, so a damaged image is found before anything is written (stop at any \
         `FAILED`); then write the table (without its `last-lba:` line: the new disk has its own end) and each image \
         onto its partition. `/dev/NEWDISK-<name>` is the new disk's partition of the same number as `<name>` \
         (`/dev/sdb2`, `/dev/nvme1n1p2`; for an image without a partition table, a device of its own): check that \
         `lsblk {disk}` lists it before writing to it (if not, `partx -a {disk}`), or partclone writes a file under \
         /dev instead.\n",
        if input.encrypted {
            " (and age, with the identity in `identity.txt`)"
        } else {
            ""
        },
        disk = if several_disks(input) {
            "/dev/NEWDISK-<disk>"
        } else {
            "/dev/NEWDISK"
        }
    );
    let _ = writeln!(
        o,
        "    (cd {} && sha256sum --quiet -c verification.sha256)",
        stdx::shell_word(&dir)
    );
    // `SOURCE | `: the file itself, or age's output.
    let source = |name: &str| match input.encrypted {
        true => format!("age -d -i identity.txt {} | ", path(name)),
        false => String::new(),
    };
    let arg = |name: &str| match input.encrypted {
        true => String::new(),
        false => format!(" {}", path(name)),
    };
    for t in input.tables {
        let name = super::layout::table_file(&t.disk);
        let _ = writeln!(
            o,
            "    {}grep -v '^last-lba:'{} | sfdisk {}",
            source(&name),
            arg(&name),
            new_disk(input, &t.disk)
        );
    }
    for i in input.images {
        let name = i.file_name_plain();
        let _ = writeln!(
            o,
            "    {}zstd -dc{} | partclone.restore -s - -o /dev/NEWDISK-{}",
            source(&name),
            arg(&name),
            stdx::shell_word(&i.name)
        );
    }
    let _ = writeln!(
        o,
        "\nA pipe that stops with an error (age, zstd, or partclone's `CRC error`) has left that partition holding \
         part of a filesystem: do not mount it; write it again from an intact copy of the image. What was written \
         before it is whole.\n"
    );
    grow_plain(o, input);
}

/// Whether `--grow` grows the image `name` ([`DocInput::grow`]).
fn grows(input: &DocInput, name: &str) -> bool {
    input.grow.iter().any(|g| g == name)
}

/// The plain tools' way of what `--grow` does, for a larger new disk: each grown image's partition (the disk's last)
/// to the disk's end with sfdisk, then its filesystem to the partition's end; a filesystem without a partition table
/// to its device's end. Nothing where `--grow` is not offered.
fn grow_plain(o: &mut String, input: &DocInput) {
    let grown: Vec<&ImageRecord> = (input.images.iter())
        .filter(|i| grows(input, &i.name))
        .collect();
    if grown.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "On a larger new disk, what the plain tools wrote keeps its old size. To grow the last partition to the end \
         of the disk, and its filesystem with it, as `--grow` does (xfs and btrfs grow only while mounted):\n"
    );
    for i in grown {
        // As the restore lines name it: one shell word (the name is from the drive).
        let node = format!("/dev/NEWDISK-{}", stdx::shell_word(&i.name));
        if let (Some(disk), Some(n)) = (&i.disk, i.partition) {
            let disk = new_disk(input, disk);
            let _ = writeln!(
                o,
                "    echo ', +' | sfdisk --no-reread -N {n} {disk}\n    partx -u {disk}"
            );
        }
        let _ = match i.fs_type.as_str() {
            "ext2" | "ext3" | "ext4" => {
                writeln!(o, "    e2fsck -f -p {node}\n    resize2fs {node}")
            }
            "xfs" => writeln!(
                o,
                "    mkdir -p /tmp/grow && mount {node} /tmp/grow && xfs_growfs /tmp/grow && umount /tmp/grow"
            ),
            "btrfs" => writeln!(
                o,
                "    mkdir -p /tmp/grow && mount {node} /tmp/grow && btrfs filesystem resize max /tmp/grow && umount \
                 /tmp/grow"
            ),
            _ => Ok(()),
        };
    }
    let _ = writeln!(o);
}

/// The disk whose `sfdisk --dump` the kit's piece `name` (`sfdisk-<disk>.dump`) is.
fn dump_disk(name: &str) -> Option<&str> {
    name.strip_prefix("sfdisk-")?.strip_suffix(".dump")
}

/// The disks whose partition tables the guide writes: the backup's tables, and the kit's dumps of the others.
fn written_disks<'a>(input: &'a DocInput) -> std::collections::BTreeSet<&'a str> {
    let dumps = (input.pieces.iter())
        .filter(|p| p.file.is_some())
        .filter_map(|p| dump_disk(&p.name));
    (input.tables.iter().map(|t| t.disk.as_str()))
        .chain(dumps)
        .collect()
}

/// The guide writes the tables of more than one disk: each new disk is named after the one it replaces.
fn several_disks(input: &DocInput) -> bool {
    written_disks(input).len() > 1
}

/// The new disk that takes the place of `disk` in the guide's commands: `/dev/NEWDISK`, or `/dev/NEWDISK-<disk>`
/// when the guide writes several (one shell word: the name is from the drive).
fn new_disk(input: &DocInput, disk: &str) -> String {
    if several_disks(input) {
        stdx::shell_word(&format!("/dev/NEWDISK-{disk}"))
    } else {
        "/dev/NEWDISK".to_string()
    }
}

/// The disk the boot loader goes onto: under UEFI the one holding the ESP (a vfat partition mounted at `/boot/efi`,
/// `/efi` or `/boot`), under BIOS the one holding `/boot`, else `/`. None when the kit saw none of them mounted.
fn boot_disk(f: &Facts) -> Option<&str> {
    let holding = |at: &str, vfat: bool| {
        (f.disks.iter())
            .find(|d| {
                d.partitions.iter().any(|p| {
                    p.mount_points.iter().any(|m| m == at)
                        && (!vfat || p.fs_type.as_deref() == Some("vfat"))
                })
            })
            .map(|d| d.name.as_str())
    };
    if f.efi {
        ["/boot/efi", "/efi", "/boot"]
            .iter()
            .find_map(|at| holding(at, true))
    } else {
        ["/boot", "/"].iter().find_map(|at| holding(at, false))
    }
}

/// The new disk the boot loader steps name: the boot disk's ([`boot_disk`]), as the restore lines name it; with
/// several disks and no boot disk known, `/dev/NEWDISK-<disk>` for the reader to choose.
fn boot_new_disk(input: &DocInput) -> String {
    match boot_disk(input.facts) {
        Some(disk) => new_disk(input, disk),
        None if several_disks(input) => "/dev/NEWDISK-<disk>".to_string(),
        None => "/dev/NEWDISK".to_string(),
    }
}

impl ImageRecord {
    /// The image's file name before encryption.
    pub fn file_name_plain(&self) -> String {
        super::layout::image_file(&self.name)
    }
}

/// ` --identity identity.txt` in the kit's dbackup commands when the backup is encrypted (the file its own `age -d -i
/// identity.txt` names), else nothing.
fn identity_arg(input: &DocInput) -> &'static str {
    if input.encrypted {
        " --identity identity.txt"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Digest;
    use crate::archive::FileRecord;
    use crate::image::kit::DiskPartition;
    use crate::image::layout::FsIds;

    fn rec(name: &str) -> Option<FileRecord> {
        Some(FileRecord {
            name: name.into(),
            bytes: 10,
            sha256: Digest::of_bytes(name.as_bytes()),
            age_head: None,
        })
    }

    fn piece(name: &str, source: &str, status: &str, note: Option<&str>) -> KitRecord {
        KitRecord {
            name: name.into(),
            source: source.into(),
            status: status.into(),
            note: note.map(str::to_string),
            file: (status == "ok").then(|| rec(name)).flatten(),
        }
    }

    fn facts(nixos: bool) -> Facts {
        Facts {
            host: "ws".into(),
            os: Some(
                if nixos {
                    "NixOS 25.05 (Warbler)"
                } else {
                    "Debian GNU/Linux 12 (bookworm)"
                }
                .into(),
            ),
            efi: true,
            debian: !nixos,
            nixos,
            flake: nixos,
            disks: vec![Disk {
                name: "nvme0n1".into(),
                bytes: 512 << 30,
                model: Some("Samsung SSD 980".into()),
                table: Some("gpt".into()),
                partitions: vec![
                    DiskPartition {
                        name: "nvme0n1p1".into(),
                        bytes: 512 << 20,
                        fs_type: Some("vfat".into()),
                        ids: FsIds {
                            uuid: Some("ABCD-1234".into()),
                            label: Some("ESP".into()),
                            partuuid: Some("b56ed884-12d8-2145-8e4b-8d0e1495c7a2".into()),
                        },
                        mount_points: vec!["/boot/efi".into()],
                    },
                    DiskPartition {
                        name: "nvme0n1p2".into(),
                        bytes: 511 << 30,
                        fs_type: Some("ext4".into()),
                        ids: FsIds {
                            uuid: Some("bb62494d-55d0-4a8c-a592-c4d9bed6278f".into()),
                            label: None,
                            partuuid: Some("c66e023f-60c0-4c4a-af13-36d8983fe910".into()),
                        },
                        mount_points: vec!["/".into()],
                    },
                ],
            }],
        }
    }

    fn pieces() -> Vec<KitRecord> {
        vec![
            piece("lsblk.json", "command: lsblk --json", "ok", None),
            piece(
                "sfdisk-nvme0n1.dump",
                "command: sfdisk --dump /dev/nvme0n1",
                "ok",
                None,
            ),
            piece(
                "fstab",
                "file: /etc/fstab",
                "ok",
                Some("1 password option value(s) replaced by REDACTED"),
            ),
            piece(
                "crypttab",
                "file: /etc/crypttab",
                "missing",
                Some("no /etc/crypttab"),
            ),
            piece(
                "lvm.json",
                "command: lvm fullreport",
                "missing",
                Some("lvm is not installed: this system uses no LVM"),
            ),
            piece("bootctl-status.txt", "command: bootctl status", "ok", None),
            piece(
                "efibootmgr.txt",
                "command: efibootmgr -v",
                "failed",
                Some("exit 2: EFI variables are not supported"),
            ),
            piece(
                "dpkg-selections.txt",
                "command: dpkg --get-selections",
                "ok",
                None,
            ),
            piece("apt-manual.txt", "command: apt-mark showmanual", "ok", None),
            piece("nixos-flake.nix", "file: /etc/nixos/flake.nix", "ok", None),
        ]
    }

    /// Each set's name and sources, as the guide names them.
    type SetSources = Vec<(String, Vec<String>)>;

    /// An ESP image of nvme0n1 with its partition table, and the sets config and data: a backup with images.
    fn images_tables_sets() -> (Vec<ImageRecord>, Vec<TableRecord>, SetSources) {
        let images = vec![ImageRecord {
            name: "nvme0n1p1".into(),
            device: "/dev/nvme0n1p1".into(),
            fs_type: "vfat".into(),
            tool: "partclone.vfat".into(),
            ids: FsIds {
                uuid: Some("ABCD-1234".into()),
                label: Some("ESP".into()),
                partuuid: Some("b56ed884-12d8-2145-8e4b-8d0e1495c7a2".into()),
            },
            disk: Some("nvme0n1".into()),
            partition: Some(1),
            device_bytes: 512 << 20,
            used_bytes: 30 << 20,
            stream_bytes: 31 << 20,
            checked: true,
            file: rec("nvme0n1p1.img.zst").unwrap(),
            seconds: 1.0,
        }];
        let tables = vec![TableRecord {
            disk: "nvme0n1".into(),
            label: "gpt".into(),
            disk_bytes: 512 << 30,
            file: rec("nvme0n1.sfdisk").unwrap(),
        }];
        let sets = vec![
            (
                "config".to_string(),
                vec!["/home/payne/.config".to_string()],
            ),
            ("data".to_string(), vec!["/data".to_string()]),
        ];
        (images, tables, sets)
    }

    #[test]
    fn the_guide_for_a_debian_machine_with_images() {
        let f = facts(false);
        let pieces = pieces();
        let (images, tables, sets) = images_tables_sets();
        let text = render(&DocInput {
            facts: &f,
            pieces: &pieces,
            images: &images,
            tables: &tables,
            stamp: Some("2026-12-05-031500"),
            destination: Some("T9"),
            sets: &sets,
            encrypted: false,
            grow: &[],
            generated: "2026-12-05 03:15:00 +01:00",
        });
        insta::assert_snapshot!(text.replace(env!("CARGO_PKG_VERSION"), "[VERSION]"));
    }

    /// The kit of an encrypted backup (read with the identity already): its `dbackup restore` and `dbackup image
    /// restore` commands pass the identity, as its own first lines do for age. Before: they had no `--identity`, so
    /// pasted on a machine without the config each stopped with "no identity was given".
    #[test]
    fn an_encrypted_kits_restore_commands_pass_the_identity() {
        let text = guide_with_images(true);
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("dbackup restore --drive") || l.contains("dbackup image restore")
            })
            .filter(|l| !l.contains("--list"))
            .collect();
        assert_eq!(commands.len(), 4, "{text}");
        for c in commands {
            assert!(c.contains(" --identity identity.txt"), "{c}\n{text}");
        }
    }

    /// The Debian guide of a backup holding the ESP's image and nvme0n1's table, `encrypted` or not.
    fn guide_with_images(encrypted: bool) -> String {
        let (images, tables, _) = images_tables_sets();
        guide_of(&images, &tables, &[], encrypted)
    }

    /// The Debian guide of the backup of `images` and `tables` on the T9 (`grow`: whose restore grows), with the sets
    /// of [`images_tables_sets`].
    fn guide_of(
        images: &[ImageRecord],
        tables: &[TableRecord],
        grow: &[String],
        encrypted: bool,
    ) -> String {
        guide_of_kit(&facts(false), &pieces(), images, tables, grow, encrypted)
    }

    /// [`guide_of`] with the kit's facts `f` and `pieces`.
    fn guide_of_kit(
        f: &Facts,
        pieces: &[KitRecord],
        images: &[ImageRecord],
        tables: &[TableRecord],
        grow: &[String],
        encrypted: bool,
    ) -> String {
        render(&DocInput {
            facts: f,
            pieces,
            images,
            tables,
            stamp: Some("2026-12-05-031500"),
            destination: Some("T9"),
            sets: &images_tables_sets().2,
            encrypted,
            grow,
            generated: "2026-12-05 03:15:00 +01:00",
        })
    }

    /// The indented command lines between the paragraphs that start with `Without dbackup` and `A pipe that stops`.
    fn plain_tool_commands(text: &str) -> Vec<&str> {
        text.split("\nWithout dbackup")
            .nth(1)
            .unwrap_or_default()
            .split("\nA pipe that stops")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .collect()
    }

    /// Followed step by step after `dbackup image restore`, the guide leaves what the images restored alone: the
    /// ESP (imaged) is not recreated with mkfs and nvme0n1's table (in the backup) is not written again from the
    /// kit's dump (whose last partition has its old size: a grown one would shrink under its filesystem); the root
    /// (not imaged) still is. Before, both came after the restore as the next commands to run, and the guide said no
    /// partition table was recorded when the backup held one.
    #[test]
    fn a_guide_with_images_leaves_the_imaged_filesystems_and_their_table_alone() {
        let text = guide_with_images(false);
        assert!(!text.contains("mkfs.fat"), "{text}");
        assert!(
            text.contains(
                "mkfs.ext4 -U bb62494d-55d0-4a8c-a592-c4d9bed6278f /dev/NEWDISK-nvme0n1p2"
            ),
            "{text}"
        );
        assert!(!text.contains("< sfdisk-nvme0n1.dump"), "{text}");
        assert!(!text.contains("No partition table was recorded"), "{text}");
    }

    /// The plain tools' way is commands to paste, naming this backup's files where they are on the drive: every
    /// file checked with sha256sum before anything is written, the table without its `last-lba:` line, each image
    /// through partclone onto its partition; encrypted, each read through `age -d`. Before, it was one line of
    /// placeholders (`<disk>.sfdisk`, `<name>.img.zst`) naming files of neither kind (the tables are `nvme0n1.sfdisk`,
    /// encrypted ones end in `.age`), with no check before the write.
    #[test]
    fn the_plain_tools_commands_name_this_backups_files_and_check_them_first() {
        let dir = "/mnt/backup/backups/2026-12-05-031500";
        let plain = guide_with_images(false);
        assert_eq!(
            plain_tool_commands(&plain),
            [
                format!("(cd {dir} && sha256sum --quiet -c verification.sha256)"),
                format!("grep -v '^last-lba:' {dir}/system/nvme0n1.sfdisk | sfdisk /dev/NEWDISK"),
                format!(
                    "zstd -dc {dir}/system/nvme0n1p1.img.zst | partclone.restore -s - -o /dev/NEWDISK-nvme0n1p1"
                ),
            ],
            "{plain}"
        );
        let age = guide_with_images(true);
        assert_eq!(
            plain_tool_commands(&age),
            [
                format!("(cd {dir} && sha256sum --quiet -c verification.sha256)"),
                format!(
                    "age -d -i identity.txt {dir}/system/nvme0n1.sfdisk.age | grep -v '^last-lba:' | sfdisk \
                     /dev/NEWDISK"
                ),
                format!(
                    "age -d -i identity.txt {dir}/system/nvme0n1p1.img.zst.age | zstd -dc | partclone.restore -s - \
                     -o /dev/NEWDISK-nvme0n1p1"
                ),
            ],
            "{age}"
        );
        assert!(
            age.contains("partition holding part of a filesystem"),
            "what a pipe stopped mid-way leaves: {age}"
        );
    }

    /// The images of two disks (nvme0n1's ESP, sda's first partition, ext4) with both tables.
    fn two_disks() -> (Vec<ImageRecord>, Vec<TableRecord>) {
        let (mut images, mut tables, _) = images_tables_sets();
        let mut sda1 = images[0].clone();
        sda1.name = "sda1".into();
        sda1.device = "/dev/sda1".into();
        sda1.fs_type = "ext4".into();
        sda1.disk = Some("sda".into());
        sda1.ids.uuid = Some("0b5e5c1a-98e4-4d8e-9f55-3b1d7e9a2c11".into());
        sda1.file = rec("sda1.img.zst").unwrap();
        images.push(sda1);
        let mut sda = tables[0].clone();
        sda.disk = "sda".into();
        sda.file = rec("sda.sfdisk").unwrap();
        tables.push(sda);
        (images, tables)
    }

    /// The guide of two disks (nvme0n1 holds the ESP, mounted at /boot/efi) names the ESP's new disk in its boot
    /// loader steps with the placeholder its restore lines use: efibootmgr's `--disk` under UEFI, `grub-install`'s
    /// disk under BIOS (where nvme0n1 holds `/`). Before, both said `/dev/NEWDISK`, a disk the guide of several disks
    /// names nowhere else.
    #[test]
    fn the_guide_of_two_disks_names_the_esps_disk_in_its_boot_loader_steps() {
        let (images, tables) = two_disks();
        let mut pieces = pieces();
        for p in &mut pieces {
            if p.name == "efibootmgr.txt" {
                *p = piece("efibootmgr.txt", "command: efibootmgr -v", "ok", None);
            }
        }
        let mut sections = String::new();
        for efi in [true, false] {
            let mut f = facts(false);
            f.efi = efi;
            let text = guide_of_kit(&f, &pieces, &images, &tables, &[], false);
            let section = text
                .split("## 5.")
                .nth(1)
                .and_then(|s| s.split("## What").next());
            sections.push_str(section.unwrap_or_default());
        }
        assert!(
            sections.contains("efibootmgr --create --disk /dev/NEWDISK-nvme0n1 ")
                && sections.contains("grub-install /dev/NEWDISK-nvme0n1\n"),
            "{sections}"
        );
        insta::assert_snapshot!(sections);
    }

    /// A backup holding the images of two disks (nvme0n1's ESP, sda's first partition) with both tables: its guide
    /// restores each disk onto a new disk of its own, with `dbackup image restore` naming that disk's images (one
    /// disk a run, as the plan takes it) and with the plain tools. Before, it gave one pair onto `/dev/NEWDISK` for
    /// all of them, which the plan refuses ("holds images of several disks"), and wrote both tables onto one disk.
    #[test]
    fn the_guide_of_two_disks_restores_each_onto_a_disk_of_its_own() {
        let (images, tables) = two_disks();
        // sda's last partition is imaged (ext4): its restore grows; nvme0n1's root is not.
        let text = guide_of(&images, &tables, &["sda1".to_string()], false);
        let section = text
            .split("## 2.")
            .nth(1)
            .and_then(|s| s.split("## 3.").next())
            .unwrap_or_default();
        insta::assert_snapshot!(section);
    }

    /// The guide of a kit of `f` without images, on a plain drive, naming `sets`.
    fn plain_guide(f: &Facts, sets: &[(String, Vec<String>)]) -> String {
        render(&DocInput {
            facts: f,
            pieces: &pieces(),
            images: &[],
            tables: &[],
            stamp: None,
            destination: None,
            sets,
            encrypted: false,
            grow: &[],
            generated: "2026-12-05 03:15:00 +01:00",
        })
    }

    /// A filesystem label and a LUKS UUID come from the disks the kit looked at, a plugged-in drive's too: in the
    /// guide's commands (to be pasted into a shell) each is one shell word, whatever it holds. Before, a label was
    /// put between single quotes as it was: `x'; reboot; '` ended the quote and ran `reboot`.
    #[test]
    fn labels_and_uuids_in_the_guides_commands_are_one_shell_word_each() {
        let mut f = facts(false);
        let parts = &mut f.disks[0].partitions;
        parts[1].ids.label = Some("x'; reboot; '".into());
        parts[0].fs_type = Some("crypto_LUKS".into());
        parts[0].ids.uuid = Some("$(reboot)".into());
        let text = plain_guide(&f, &[]);
        assert!(
            text.contains(r#"-L 'x'\''; reboot; '\''' /dev/NEWDISK-nvme0n1p2"#),
            "{text}"
        );
        assert!(
            text.contains("cryptsetup luksFormat --uuid '$(reboot)' /dev/NEWDISK-nvme0n1p1"),
            "{text}"
        );
    }

    /// A source path with a space (or a quote) is one shell word in the guide's restore commands. Before, it was
    /// printed as it was: pasted, `--path /home/payne/My Files` restores `/home/payne/My` and fails on `Files`.
    #[test]
    fn source_paths_in_the_guides_restore_commands_are_one_shell_word_each() {
        let sets = vec![(
            "docs".to_string(),
            vec!["/home/payne/My Files".to_string(), "/srv/it's".to_string()],
        )];
        let text = plain_guide(&facts(false), &sets);
        assert!(
            text.contains("--set docs --path '/home/payne/My Files' --target /mnt"),
            "{text}"
        );
        assert!(text.contains(r#"--path '/srv/it'\''s' --target"#), "{text}");
    }

    #[test]
    fn the_guide_for_an_encrypted_nixos_kit() {
        let f = facts(true);
        let pieces = pieces();
        let text = render(&DocInput {
            facts: &f,
            pieces: &pieces,
            images: &[],
            tables: &[],
            stamp: None,
            destination: None,
            sets: &[],
            encrypted: true,
            grow: &[],
            generated: "2026-12-05 03:15:00 +01:00",
        });
        insta::assert_snapshot!(text.replace(env!("CARGO_PKG_VERSION"), "[VERSION]"));
    }
}
