//! Pure plans of the image room: what goes into a backup's `system/` folder (the kit, which devices are imaged and
//! which are refused, and why), and what an image restore will do to its target (the partition table, each image,
//! the growth of the last filesystem, what is overwritten, refusals). Built from observed facts only; `--dry-run`
//! prints them (`--json`: as JSON) and stops.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::layout::{self, FsIds, ImageRecord, Refusal, SystemRecord};
use super::observe::{DeviceFacts, TargetFacts, TargetKind};
use super::table::Table;
use crate::stdx;

/// One partition (or whole-device filesystem) to image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlan {
    /// The image's name (the kernel name: `nvme0n1p2`).
    pub name: String,
    pub device: String,
    pub path: PathBuf,
    pub fs_type: String,
    /// The partclone program.
    pub tool: PathBuf,
    /// Its filesystem's identity (three fields of this record in the JSON).
    #[serde(flatten)]
    pub ids: FsIds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    pub device_bytes: u64,
    /// The image file in `system/` (`<name>.img.zst`, `.age` when encrypted).
    pub file: String,
    /// Mounted read-only: imaged as it is (a read-only mount does not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounted_read_only: Option<PathBuf>,
    /// partclone's count of the bytes in use, read before imaging (none: it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// The most the image file can take on the drive: partclone's stream bound (the device's size when the used
    /// bytes are unknown) as zstd may at worst store it, age's overhead added when encrypted. zstd's real output is
    /// unknown until written; usually far less.
    pub bound_bytes: u64,
    /// Why the used bytes are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_error: Option<String>,
}

/// What goes into `system/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemPlan {
    /// The recovery kit is written.
    pub kit: bool,
    pub images: Vec<ImagePlan>,
    /// Devices that are not imaged, and why.
    pub refused: Vec<Refusal>,
    pub encrypted: bool,
}

impl SystemPlan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.kit && self.images.is_empty()
    }

    /// An upper bound of the bytes the images take on the drive: their devices' sizes (partclone stores only used
    /// blocks, and zstd compresses them, so the real size is usually far less).
    pub fn device_bytes(&self) -> u64 {
        self.images.iter().map(|i| i.device_bytes).sum()
    }

    /// What the images may take on a drive whose files are rounded up to `block` bytes: each image's
    /// [`ImagePlan::bound_bytes`], rounded up, with a block for its directory entry. The kit is small and counted by
    /// the caller.
    pub fn bound_bytes(&self, block: u64) -> u64 {
        let block = block.max(512);
        self.images
            .iter()
            .map(|i| i.bound_bytes.div_ceil(block).saturating_mul(block) + block)
            .fold(0u64, u64::saturating_add)
    }
}

/// The most an image file of a partclone stream of `stream` bytes takes: zstd's worst case (incompressible data),
/// then age's overhead when `recipients` is some.
pub fn image_bound(stream: u64, recipients: Option<usize>) -> u64 {
    let zstd = usize::try_from(stream)
        .map(|n| zstd::zstd_safe::compress_bound(n) as u64)
        .unwrap_or(u64::MAX);
    match recipients {
        Some(n) => crate::archive::crypt::encrypted_len(zstd, n),
        None => zstd,
    }
}

/// Why one device cannot be imaged, or `None`.
pub(crate) fn refusal(
    d: &DeviceFacts,
    destination_device: Option<&std::path::Path>,
) -> Option<String> {
    if let Some(dest) = destination_device {
        let dest = std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
        if dest == d.path || d.partitions.iter().any(|p| std::path::Path::new(p) == dest) {
            return Some("it holds the backup drive itself".into());
        }
    }
    if let Some(m) = d.usage.read_write() {
        let at = crate::stdx::show(m.mount_point.as_os_str().as_encoded_bytes());
        let remount = match m.namespace {
            None => format!("mount -o remount,ro {at}"),
            Some(pid) => format!("nsenter -t {pid} -m mount -o remount,ro {at}"),
        };
        return Some(format!(
            "it is mounted read-write at {}: an image of a filesystem in use is inconsistent; remount it read-only \
             ({remount}), unmount it, or image it from rescue media",
            m.place()
        ));
    }
    if !d.usage.swap.is_empty() {
        return Some(
            "it is active swap: nothing to image (the kit records its UUID for mkswap -U)".into(),
        );
    }
    if !d.usage.holders.is_empty() {
        return Some(format!(
            "it is held by {} (device-mapper, LVM or RAID): image the device on top of it instead",
            d.usage.holders.join(", ")
        ));
    }
    let Some(fs) = d.fs_type.as_deref() else {
        if !d.partitions.is_empty() {
            return Some(format!(
                "it is a whole disk: name its partitions instead ({})",
                d.partitions.join(", ")
            ));
        }
        return Some("blkid finds no filesystem on it".into());
    };
    match fs {
        "swap" => {
            return Some(
                "it is swap: nothing to image (the kit records its UUID for mkswap -U)".into(),
            );
        }
        "crypto_LUKS" => {
            return Some(
                "it is a LUKS container: partclone cannot see inside it; image the opened /dev/mapper device instead"
                    .into(),
            );
        }
        "LVM2_member" => {
            return Some("it is an LVM physical volume: image its logical volumes instead".into());
        }
        _ => {}
    }
    match super::observe::partclone_for(fs) {
        None => Some(format!("partclone cannot image a {fs} filesystem")),
        Some(tool) if d.tool.is_none() => Some(format!(
            "{tool} is not installed (Debian package partclone)"
        )),
        Some(_) => None,
    }
}

/// Why a device holding dbackup's own secret files is not imaged to a destination that does not encrypt: a block
/// image cannot leave one file out.
fn holds_secrets(secrets: &[crate::settings::SecretFile]) -> String {
    let files_named: Vec<String> = (secrets.iter())
        .map(|f| format!("{} ({})", f.path.display(), f.named_by.phrase(&f.field)))
        .collect();
    let (them, files) = match secrets.len() {
        1 => ("that secret", "file"),
        _ => ("those secrets", "files"),
    };
    format!(
        "it holds {}, and this destination is not encrypted: its image would carry {them} in the clear; give the \
         destination an `encryption` (its images are then age-encrypted), or keep the {files} on another filesystem",
        files_named.join(", "),
    )
}

/// The system plan: the kit when `kit`, and each device imaged or refused. `destination_device` is the backup
/// drive's own device (never imaged onto itself); `recipients`: the destination encrypts, to this many recipients
/// (0 for a passphrase).
pub fn plan_system(
    kit: bool,
    devices: &[Result<DeviceFacts, String>],
    destination_device: Option<&std::path::Path>,
    recipients: Option<usize>,
) -> SystemPlan {
    let encrypted = recipients.is_some();
    let mut plan = SystemPlan {
        kit,
        images: Vec::new(),
        refused: Vec::new(),
        encrypted,
    };
    let mut names = BTreeSet::new();
    // A device named again (the same node through another link, or the same unreadable name) was judged already:
    // one line per device.
    let mut seen = BTreeSet::new();
    for d in devices {
        let key = match d {
            Ok(d) => Ok(&d.path),
            Err(e) => Err(e),
        };
        if !seen.insert(key) {
            continue;
        }
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                let (device, reason) = e.split_once(": ").unwrap_or(("", e.as_str()));
                plan.refused.push(Refusal {
                    device: device.to_string(),
                    reason: reason.to_string(),
                });
                continue;
            }
        };
        let refuse = |plan: &mut SystemPlan, reason: String| {
            plan.refused.push(Refusal {
                device: d.given.clone(),
                reason,
            })
        };
        if let Some(why) = refusal(d, destination_device) {
            refuse(&mut plan, why);
            continue;
        }
        if !encrypted && !d.secrets.is_empty() {
            refuse(&mut plan, holds_secrets(&d.secrets));
            continue;
        }
        if !layout::is_plain_name(&d.kname) || !names.insert(d.kname.clone()) {
            refuse(&mut plan, format!("{} is named twice", d.kname));
            continue;
        }
        plan.images.push(ImagePlan {
            name: d.kname.clone(),
            device: d.given.clone(),
            path: d.path.clone(),
            fs_type: d.fs_type.clone().unwrap_or_default(),
            tool: d.tool.clone().unwrap_or_default(),
            ids: d.ids.clone(),
            disk: d.disk.clone(),
            disk_bytes: d.disk_bytes,
            partition: d.partition,
            device_bytes: d.bytes,
            file: layout::stored_name(&layout::image_file(&d.kname), encrypted),
            mounted_read_only: d.usage.mounts.first().map(|m| m.mount_point.clone()),
            used_bytes: d.used_bytes,
            bound_bytes: image_bound(d.stream_bound.unwrap_or(d.bytes), recipients),
            used_error: d.used_error.clone(),
        });
    }
    plan
}

/// The lines of a system plan, for the dry run.
pub fn render_system(plan: &SystemPlan, out: &mut String, indent: &str) {
    if plan.kit {
        let _ = writeln!(
            out,
            "{indent}kit       system/: partition tables, lsblk, blkid, fstab, crypttab, LVM, boot loader, packages, \
             RESTORE-SYSTEM.md{}",
            if plan.encrypted { " (encrypted)" } else { "" }
        );
    }
    for i in &plan.images {
        let _ = writeln!(
            out,
            "{indent}image     {} ({} {}, {}{}) with {} -> system/{}",
            i.device,
            i.fs_type,
            i.ids.uuid.as_deref().unwrap_or("no uuid"),
            stdx::bytes(i.device_bytes),
            i.mounted_read_only
                .as_ref()
                .map(|m| format!(", mounted read-only at {}", m.display()))
                .unwrap_or_default(),
            i.tool.file_name().unwrap_or_default().to_string_lossy(),
            i.file
        );
        let space = match (i.used_bytes, &i.used_error) {
            (Some(used), _) => format!(
                "{} in use (partclone's count): the image takes at most {} on the drive, counted so in the space \
                 check; its compressed size is known only once written",
                stdx::bytes(used),
                stdx::bytes(i.bound_bytes)
            ),
            (None, e) => format!(
                "the bytes in use are unknown{}: counted at its whole size, at most {} on the drive",
                e.as_deref()
                    .map(|e| format!(" ({})", stdx::show_str(e)))
                    .unwrap_or_default(),
                stdx::bytes(i.bound_bytes)
            ),
        };
        let _ = writeln!(out, "{indent}          {space}");
    }
    for r in &plan.refused {
        let _ = writeln!(out, "{indent}REFUSED   {}: {}", r.device, r.reason);
    }
}

/// What `dbackup image restore` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Only these images (default: every image of the backup, which must come from one disk).
    pub names: Vec<String>,
    /// Grow the last partition and its filesystem to the end of the target.
    pub grow: bool,
}

/// One image to restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreItem {
    pub name: String,
    /// The file in `system/` (`<name>.img.zst[.age]`).
    pub file: String,
    pub encrypted: bool,
    pub fs_type: String,
    /// The partclone program (`partclone.extfs`).
    pub tool: String,
    /// Its partition number on the target.
    pub partition: u32,
    /// The partition's size on the target (after `--grow` for the last one: at least this).
    pub partition_bytes: u64,
    pub device_bytes: u64,
    pub used_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Grown to the end of the target after it is restored.
    pub grow: bool,
}

impl RestoreItem {
    /// Its filesystem type and UUID as backup.json gives them (from the drive: escaped), for the plan.
    fn filesystem(&self) -> String {
        format!(
            "{} {}",
            stdx::show_str(&self.fs_type),
            self.uuid
                .as_deref()
                .map_or("no uuid".into(), stdx::show_str)
        )
    }
}

/// What an image restore will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// The backup's stamp and directory.
    pub from: String,
    pub backup_dir: PathBuf,
    pub target: PathBuf,
    pub target_kind: TargetKind,
    pub target_bytes: u64,
    /// The disk the images came from, and its table (written first). No table: the target is one partition
    /// (`--to PART`), restored alone, its disk's table left as it is; or, with no disk (empty), a device of its own
    /// for an image of a filesystem without a partition table.
    pub disk: String,
    pub table_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    /// The `sfdisk` script written onto the target.
    pub script: String,
    pub needed_bytes: u64,
    pub items: Vec<RestoreItem>,
    pub grow: bool,
    /// What the target holds now, all of which is overwritten.
    pub overwritten: Vec<String>,
    /// Why nothing will be written (the run fails listing them).
    pub refusals: Vec<String>,
    /// Whether the run asks for confirmation before writing: onto a block device, unless `--yes` was given.
    pub confirm: bool,
}

impl RestorePlan {
    pub fn refused(&self) -> bool {
        !self.refusals.is_empty()
    }
}

/// Filesystems dbackup can grow after a restore, and how.
pub fn can_grow(fs: &str) -> bool {
    matches!(fs, "ext2" | "ext3" | "ext4" | "btrfs" | "xfs")
}

/// Plans a restore of the images of `system` (from the backup `from` in `backup_dir`) onto `target`. `tables` are
/// the parsed partition tables of the backup, by disk name.
// Stays long: the disk and each partition checked against the target in one pass, every refusal with its reason.
pub fn plan_restore(
    from: &str,
    backup_dir: PathBuf,
    system: &SystemRecord,
    tables: &[(String, Table)],
    target: &TargetFacts,
    opts: &RestoreOptions,
) -> Result<RestorePlan, String> {
    let encrypted = system.encryption.is_some();
    if system.images.is_empty() {
        return Err(format!("backup {from} holds no partition images"));
    }
    let chosen: Vec<&ImageRecord> = if opts.names.is_empty() {
        system.images.iter().collect()
    } else {
        let mut out = Vec::new();
        for n in &opts.names {
            match system.images.iter().find(|i| &i.name == n) {
                Some(i) => out.push(i),
                None => {
                    return Err(format!(
                        "backup {from} has no image {}; it holds {}",
                        crate::stdx::show_str(n),
                        system
                            .images
                            .iter()
                            .map(|i| crate::stdx::show_str(&i.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        out
    };
    if let Some(parent) = &target.partition_of {
        return Ok(plan_onto_partition(
            from,
            backup_dir,
            system,
            &chosen,
            Some(parent),
            target,
            opts,
        ));
    }
    // Filesystems without a partition table (a whole disk's, an LVM volume's): one onto a device of its own, as onto
    // a partition (there is no table to write).
    if chosen.iter().all(|i| i.disk.is_none()) && target.kind == TargetKind::BlockDevice {
        return Ok(plan_onto_partition(
            from, backup_dir, system, &chosen, None, target, opts,
        ));
    }
    let disks: BTreeSet<Option<&str>> = chosen.iter().map(|i| i.disk.as_deref()).collect();
    if disks.len() > 1 {
        return Err(format!(
            "backup {from} holds images of several disks ({}); restore one disk at a time with --name",
            disks
                .iter()
                .map(|d| d.unwrap_or("no partition table").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let Some(disk) = disks.into_iter().next().flatten() else {
        return Err(
            "these images are of filesystems without a partition table: restore each onto a block device of its \
             own (--name NAME --to DEVICE; attach a disk image file with losetup first)"
                .into(),
        );
    };
    let Some((_, table)) = tables.iter().find(|(d, _)| d == disk) else {
        return Err(format!(
            "backup {from} has no partition table of disk {}",
            crate::stdx::show_str(disk)
        ));
    };
    let table_rec = system.tables.iter().find(|t| t.disk == disk);
    let mut refusals = Vec::new();
    if let Some((a, b)) = table.overlapping() {
        let span = |p: &super::table::Partition| {
            format!("{}-{}", p.start, p.start.saturating_add(p.size) - 1)
        };
        refusals.push(format!(
            "the backup's partition table is inconsistent: partitions {} and {} overlap (sectors {} and {})",
            a.number,
            b.number,
            span(a),
            span(b)
        ));
    }
    let needed = table.needed_bytes();
    let mut items = Vec::new();
    let last = table.last().map(|p| p.number);
    for i in &chosen {
        let Some(n) = i.partition else {
            refusals.push(format!(
                "image {} has no partition number",
                crate::stdx::show_str(&i.name)
            ));
            continue;
        };
        let Some(p) = table.partitions.iter().find(|p| p.number == n) else {
            refusals.push(format!(
                "image {} is of partition {n}, which its disk's table does not have",
                crate::stdx::show_str(&i.name)
            ));
            continue;
        };
        let partition_bytes = p.size.saturating_mul(table.sector_size);
        if i.device_bytes > partition_bytes {
            refusals.push(format!(
                "image {} was taken from {} but partition {n} is {}: the backup's metadata is inconsistent",
                crate::stdx::show_str(&i.name),
                stdx::bytes(i.device_bytes),
                stdx::bytes(partition_bytes)
            ));
        }
        let tool = super::observe::partclone_for(&i.fs_type);
        if tool.is_none() {
            refusals.push(format!(
                "partclone cannot restore a {} filesystem",
                crate::stdx::show_str(&i.fs_type)
            ));
        }
        items.push(RestoreItem {
            name: i.name.clone(),
            file: i.file.name.clone(),
            encrypted,
            fs_type: i.fs_type.clone(),
            tool: tool.unwrap_or_default().to_string(),
            partition: n,
            partition_bytes,
            device_bytes: i.device_bytes,
            used_bytes: i.used_bytes,
            uuid: i.ids.uuid.clone(),
            partuuid: p.uuid.clone().or_else(|| i.ids.partuuid.clone()),
            grow: opts.grow && Some(n) == last,
        });
    }
    items.sort_by_key(|i| i.partition);
    if opts.grow {
        match items.iter().find(|i| i.grow) {
            None => refusals.push(format!(
                "--grow grows the last partition ({}) and its filesystem, but this backup has no image of it",
                last.map(|n| n.to_string()).unwrap_or_default()
            )),
            Some(i) if !can_grow(&i.fs_type) => refusals.push(format!(
                "--grow cannot grow a {} filesystem; restore without --grow",
                crate::stdx::show_str(&i.fs_type)
            )),
            Some(_) => {}
        }
        if table.has_extended() {
            refusals.push(
                "--grow cannot grow a logical partition of a dos table; restore without --grow"
                    .into(),
            );
        }
    }
    if target.usage.busy() {
        refusals.push(format!(
            "{} is in use: {}; unmount it first",
            target.path.display(),
            target.usage.describe()
        ));
    }
    if target.bytes < needed {
        refusals.push(format!(
            "{} is {}, smaller than the {} its partitions need: partclone restores each filesystem at its original \
             size, so the target must be at least as large as the disk's used layout{}",
            target.path.display(),
            stdx::bytes(target.bytes),
            stdx::bytes(needed),
            if target.kind == TargetKind::File && target.bytes == 0 {
                format!(" (create the file first: truncate -s {} FILE)", needed)
            } else {
                String::new()
            }
        ));
    }
    if target.sector_size != table.sector_size {
        refusals.push(format!(
            "{} has {}-byte sectors, the table was made for {}-byte sectors",
            target.path.display(),
            target.sector_size,
            table.sector_size
        ));
    }
    let mut overwritten = target.holds.clone();
    if target.kind == TargetKind::BlockDevice && overwritten.is_empty() {
        overwritten.push(format!(
            "{}: no partitions or filesystems blkid knows",
            target.path.display()
        ));
    }
    Ok(RestorePlan {
        from: from.to_string(),
        backup_dir,
        target: target.path.clone(),
        target_kind: target.kind,
        target_bytes: target.bytes,
        disk: disk.to_string(),
        table_file: table_rec.map(|t| t.file.name.clone()).unwrap_or_default(),
        table: Some(table.clone()),
        script: table.script(opts.grow),
        needed_bytes: needed,
        items,
        grow: opts.grow,
        overwritten,
        refusals,
        confirm: target.kind == TargetKind::BlockDevice,
    })
}

/// Plans the restore of one image onto one partition (`--to PART`): no table is written, the partition keeps its
/// PARTUUID (the filesystem's UUID is the image's), and it must hold the filesystem at its original size; `--grow`
/// grows the filesystem to the partition's end.
fn plan_onto_partition(
    from: &str,
    backup_dir: PathBuf,
    system: &SystemRecord,
    chosen: &[&ImageRecord],
    parent: Option<&str>,
    target: &TargetFacts,
    opts: &RestoreOptions,
) -> RestorePlan {
    let mut refusals = Vec::new();
    let image = match chosen {
        [one] => Some(*one),
        _ => {
            let names = chosen
                .iter()
                .map(|i| crate::stdx::show_str(&i.name))
                .collect::<Vec<_>>()
                .join(", ");
            refusals.push(match parent {
                Some(parent) => format!(
                    "{} is a partition (of {parent}): it takes one image, named with --name ({names} of backup \
                     {from}); give the whole disk to restore the partition table with every image",
                    target.path.display(),
                ),
                None => format!(
                    "the images of backup {from} are of filesystems without a partition table ({names}): {} takes \
                     one, named with --name",
                    target.path.display(),
                ),
            });
            None
        }
    };
    let mut items = Vec::new();
    if let Some(i) = image {
        if i.device_bytes > target.bytes {
            refusals.push(format!(
                "{} is {}, smaller than the {} filesystem of image {} (partclone restores a filesystem at its \
                 original size)",
                target.path.display(),
                stdx::bytes(target.bytes),
                stdx::bytes(i.device_bytes),
                crate::stdx::show_str(&i.name)
            ));
        }
        let tool = super::observe::partclone_for(&i.fs_type);
        if tool.is_none() {
            refusals.push(format!(
                "partclone cannot restore a {} filesystem",
                crate::stdx::show_str(&i.fs_type)
            ));
        }
        if opts.grow && !can_grow(&i.fs_type) {
            refusals.push(format!(
                "--grow cannot grow a {} filesystem; restore without --grow",
                crate::stdx::show_str(&i.fs_type)
            ));
        }
        let number = std::fs::read_to_string(
            std::path::Path::new("/sys/class/block")
                .join(target.path.file_name().unwrap_or_default())
                .join("partition"),
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
        items.push(RestoreItem {
            name: i.name.clone(),
            file: i.file.name.clone(),
            encrypted: system.encryption.is_some(),
            fs_type: i.fs_type.clone(),
            tool: tool.unwrap_or_default().to_string(),
            partition: number,
            partition_bytes: target.bytes,
            device_bytes: i.device_bytes,
            used_bytes: i.used_bytes,
            uuid: i.ids.uuid.clone(),
            // The partition is the target's own: its PARTUUID is not the backup's.
            partuuid: None,
            grow: opts.grow,
        });
    }
    if target.usage.busy() {
        refusals.push(format!(
            "{} is in use: {}; unmount it first",
            target.path.display(),
            target.usage.describe()
        ));
    }
    RestorePlan {
        from: from.to_string(),
        backup_dir,
        target: target.path.clone(),
        target_kind: target.kind,
        target_bytes: target.bytes,
        disk: parent.unwrap_or_default().to_string(),
        table_file: String::new(),
        table: None,
        script: String::new(),
        needed_bytes: image.map_or(0, |i| i.device_bytes),
        items,
        grow: opts.grow,
        overwritten: target.holds.clone(),
        refusals,
        confirm: target.kind == TargetKind::BlockDevice,
    }
}

/// The restore plan for people.
pub fn render_restore(p: &RestorePlan) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "image restore from backup {} ({})",
        p.from,
        p.backup_dir.display()
    );
    let _ = writeln!(
        o,
        "  target    {} ({}, {}); the layout needs {}",
        p.target.display(),
        match p.target_kind {
            TargetKind::BlockDevice => "block device",
            TargetKind::File => "disk image file",
        },
        stdx::bytes(p.target_bytes),
        stdx::bytes(p.needed_bytes)
    );
    for w in &p.overwritten {
        let _ = writeln!(o, "  OVERWRITES {w}");
    }
    let Some(table) = &p.table else {
        for i in &p.items {
            let _ = writeln!(
                o,
                "  {} <- system/{} ({}, {} used{})",
                match p.disk.as_str() {
                    "" => format!("device    {} (no partition table)", p.target.display()),
                    disk => format!(
                        "partition {} of {disk} (its table and PARTUUID left as they are)",
                        p.target.display()
                    ),
                },
                i.file,
                i.filesystem(),
                stdx::bytes(i.used_bytes),
                match (i.grow, p.disk.as_str()) {
                    (false, _) => "",
                    (true, "") => ", grown to the device's end",
                    (true, _) => ", grown to the partition's end",
                }
            );
        }
        let _ = writeln!(o, "  then      fsck of the filesystem; its UUID checked");
        render_refusals(p, &mut o);
        return o;
    };
    let _ = writeln!(
        o,
        "  table     {} of disk {} ({}, {} partitions{}), from system/{}",
        table.label,
        p.disk,
        table.label_id.as_deref().unwrap_or("no id"),
        table.partitions.len(),
        if p.grow {
            "; the last grown to the end"
        } else {
            ""
        },
        p.table_file
    );
    for part in &table.partitions {
        let item = p.items.iter().find(|i| i.partition == part.number);
        let _ = writeln!(
            o,
            "    {:>2}  start {:>10}  {:>10}  {}{}",
            part.number,
            part.start,
            stdx::bytes(part.size.saturating_mul(table.sector_size)),
            part.name
                .as_deref()
                .map(|n| format!("\"{}\" ", crate::stdx::show_str(n)))
                .unwrap_or_default(),
            match item {
                Some(i) => format!(
                    "<- system/{} ({}, {} used{})",
                    i.file,
                    i.filesystem(),
                    stdx::bytes(i.used_bytes),
                    if i.grow { ", grown" } else { "" }
                ),
                None => "(left empty: no image)".to_string(),
            }
        );
    }
    let _ = writeln!(
        o,
        "  then      fsck of each restored filesystem; its UUID and the PARTUUIDs checked"
    );
    render_refusals(p, &mut o);
    o
}

/// The plan's last lines: its refusals, or the confirmation it asks for.
fn render_refusals(p: &RestorePlan, o: &mut String) {
    if p.refused() {
        for r in &p.refusals {
            let _ = writeln!(o, "  REFUSED   {r}");
        }
    } else if p.confirm {
        let _ = writeln!(o, "  asks for confirmation before writing (--yes to skip)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Digest;
    use crate::archive::FileRecord;
    use crate::image::layout::TableRecord;
    use crate::media::devices::{DeviceUse, MountUse};

    fn facts(kname: &str, fs: Option<&str>) -> DeviceFacts {
        DeviceFacts {
            given: format!("/dev/{kname}"),
            path: format!("/dev/{kname}").into(),
            kname: kname.into(),
            bytes: 64 << 20,
            sector_size: 512,
            partition: Some(1),
            disk: Some("loop9".into()),
            disk_bytes: Some(256 << 20),
            fs_type: fs.map(str::to_string),
            ids: FsIds {
                uuid: Some("6806-B8C3".into()),
                ..FsIds::default()
            },
            tool: Some("/usr/sbin/partclone.fat".into()),
            ..DeviceFacts::default()
        }
    }

    #[test]
    fn devices_are_imaged_or_refused_with_the_reason() {
        let mut rw = facts("loop9p2", Some("ext4"));
        rw.usage = DeviceUse {
            mounts: vec![MountUse {
                device: "/dev/loop9p2".into(),
                mount_point: "/".into(),
                read_only: false,
                namespace: None,
            }],
            ..DeviceUse::default()
        };
        let mut ro = facts("loop9p1", Some("vfat"));
        ro.used_bytes = Some(3 << 20);
        ro.stream_bound = Some(5 << 20);
        ro.usage.mounts.push(MountUse {
            device: "/dev/loop9p1".into(),
            mount_point: "/boot/efi".into(),
            read_only: true,
            namespace: None,
        });
        let mut no_tool = facts("loop9p3", Some("ext4"));
        no_tool.tool = None;
        let mut disk = facts("loop9", None);
        disk.partitions = vec!["/dev/loop9p1".into()];
        let nope = || Err("/dev/nope: No such file or directory".into());
        let plan = plan_system(
            true,
            &[
                Ok(ro.clone()),
                Ok(rw.clone()),
                Ok(facts("loop9p4", Some("swap"))),
                Ok(facts("loop9p5", Some("crypto_LUKS"))),
                Ok(no_tool),
                Ok(disk),
                // Named again: judged once.
                Ok(ro),
                nope(),
                Ok(rw),
                nope(),
            ],
            None,
            Some(1),
        );
        assert_eq!(plan.images.len(), 1);
        assert_eq!(plan.images[0].file, "loop9p1.img.zst.age");
        let reasons: Vec<String> = plan
            .refused
            .iter()
            .map(|r| format!("{}: {}", r.device, r.reason))
            .collect();
        let mut text = String::new();
        render_system(&plan, &mut text, "  ");
        insta::assert_snapshot!(text);
        // One line per device: each imaged or refused once, however often it is named.
        assert_eq!(reasons.len(), 6, "{reasons:#?}");
    }

    /// A device holding dbackup's own secret files is refused for a destination that does not encrypt, every file
    /// named with what names it; one that encrypts images it.
    #[test]
    fn a_device_holding_secret_files_goes_only_to_an_encrypted_destination() {
        use crate::settings::{NamedBy, SecretFile};
        let mut d = facts("loop9p2", Some("ext4"));
        d.secrets = vec![
            SecretFile {
                path: "/home/u/id.txt".into(),
                field: "identity_file of destination vault".into(),
                named_by: NamedBy::Config,
            },
            SecretFile {
                path: "/home/u/pass".into(),
                field: "the passphrase file $DBACKUP_PASSPHRASE_FILE names".into(),
                named_by: NamedBy::Environment,
            },
        ];
        let devices = [Ok(d), Ok(facts("loop9p1", Some("vfat")))];
        let plain = plan_system(false, &devices, None, None);
        let names: Vec<&str> = plain.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["loop9p1"]);
        assert_eq!(plain.refused.len(), 1);
        assert_eq!(plain.refused[0].device, "/dev/loop9p2");
        assert_eq!(
            plain.refused[0].reason,
            "it holds /home/u/id.txt (the config's identity_file of destination vault), /home/u/pass (the passphrase \
             file $DBACKUP_PASSPHRASE_FILE names), and this destination is not encrypted: its image would carry those \
             secrets in the clear; give the destination an `encryption` (its images are then age-encrypted), or keep \
             the files on another filesystem"
        );
        let encrypted = plan_system(false, &devices, None, Some(1));
        assert_eq!(encrypted.images.len(), 2);
        assert!(encrypted.refused.is_empty());
    }

    fn system() -> (SystemRecord, Vec<(String, Table)>) {
        let dump = "label: gpt\nlabel-id: D6DA4891-2B7A-824D-8793-3DCF3807D0C6\nunit: sectors\nfirst-lba: 2048\n\
                    last-lba: 524254\nsector-size: 512\n\n\
                    /dev/loop9p1 : start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=B56ED884-12D8-2145-8E4B-8D0E1495C7A2, name=\"EFI\"\n\
                    /dev/loop9p2 : start=133120, size=389120, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, uuid=C66E023F-60C0-4C4A-AF13-36D8983FE910, name=\"root\"\n";
        let table = super::super::table::parse(dump.as_bytes()).unwrap();
        let file = |n: &str| FileRecord {
            name: n.into(),
            bytes: 1,
            sha256: Digest::of_bytes(n.as_bytes()),
            age_head: None,
        };
        let image = |name: &str, fs: &str, n: u32, bytes: u64| ImageRecord {
            name: name.into(),
            device: format!("/dev/{name}"),
            fs_type: fs.into(),
            tool: "partclone".into(),
            ids: FsIds {
                uuid: Some(format!("uuid-{name}")),
                ..FsIds::default()
            },
            disk: Some("loop9".into()),
            partition: Some(n),
            device_bytes: bytes,
            used_bytes: bytes / 4,
            stream_bytes: 0,
            checked: true,
            file: file(&format!("{name}.img.zst")),
            seconds: 0.0,
        };
        (
            SystemRecord {
                images: vec![
                    image("loop9p1", "vfat", 1, 131072 * 512),
                    image("loop9p2", "ext4", 2, 389120 * 512),
                ],
                tables: vec![TableRecord {
                    disk: "loop9".into(),
                    label: "gpt".into(),
                    disk_bytes: 256 << 20,
                    file: file("loop9.sfdisk"),
                }],
                ..SystemRecord::default()
            },
            vec![("loop9".to_string(), table)],
        )
    }

    fn target(bytes: u64) -> TargetFacts {
        TargetFacts {
            path: "/tmp/big.img".into(),
            kind: TargetKind::File,
            bytes,
            sector_size: 512,
            partition_of: None,
            holds: vec![],
            usage: DeviceUse::default(),
            loops: vec![],
        }
    }

    /// `plan_restore` of backup "s" in "/d" onto `t`, restoring `names` (all when empty), growing or not.
    fn plan_onto(
        sys: &SystemRecord,
        tables: &[(String, Table)],
        t: &TargetFacts,
        names: &[&str],
        grow: bool,
    ) -> Result<RestorePlan, String> {
        let opts = RestoreOptions {
            names: names.iter().map(|n| n.to_string()).collect(),
            grow,
        };
        plan_restore("s", "/d".into(), sys, tables, t, &opts)
    }

    /// Asserts the plan's first refusal says `needle`.
    #[track_caller]
    fn assert_first_refusal(p: &RestorePlan, needle: &str) {
        assert!(p.refusals[0].contains(needle), "{:?}", p.refusals);
    }

    #[test]
    fn a_restore_onto_a_larger_disk_grows_the_last_partition() {
        let (sys, tables) = system();
        let opts = RestoreOptions {
            names: vec![],
            grow: true,
        };
        let p = plan_restore(
            "2026-12-05-031500",
            "/d/b".into(),
            &sys,
            &tables,
            &target(400 << 20),
            &opts,
        )
        .unwrap();
        assert!(!p.refused(), "{:?}", p.refusals);
        assert_eq!(p.items.len(), 2);
        assert!(p.items[1].grow && !p.items[0].grow);
        assert!(!p.script.contains("size=389120"), "{}", p.script);
        insta::assert_snapshot!(render_restore(&p));
    }

    #[test]
    fn restores_are_refused_with_every_reason() {
        let (sys, tables) = system();
        let mut t = target(200 << 20);
        t.usage.mounts.push(MountUse {
            device: "/dev/loop7p2".into(),
            mount_point: "/mnt".into(),
            read_only: true,
            namespace: None,
        });
        t.sector_size = 4096;
        let p = plan_onto(&sys, &tables, &t, &["loop9p1"], true).unwrap();
        let text = p.refusals.join("\n");
        assert_eq!(p.refusals.len(), 4, "{text}");
        assert!(text.contains("smaller than the"), "{text}");
        assert!(
            text.contains("is in use: /dev/loop7p2 is mounted read-only at /mnt"),
            "{text}"
        );
        assert!(text.contains("no image of it"), "{text}");
        assert!(text.contains("4096-byte sectors"), "{text}");
        let e = plan_onto(&sys, &tables, &t, &["nope"], true).unwrap_err();
        assert!(
            e.contains("has no image nope; it holds loop9p1, loop9p2"),
            "{e}"
        );
        // A vfat last partition cannot grow.
        let (mut sys, tables) = system();
        sys.images[1].fs_type = "vfat".into();
        let p = plan_onto(&sys, &tables, &target(1 << 30), &[], true).unwrap();
        assert_eq!(
            p.refusals,
            ["--grow cannot grow a vfat filesystem; restore without --grow"]
        );
    }

    /// A disk whose partitions are 1 and 3 (2 was deleted): each image goes onto its own partition. Before, the
    /// table numbered them 1 and 2, so the image of partition 3 was refused ("its disk's table does not have").
    #[test]
    fn a_gap_in_the_partition_numbers_is_kept() {
        let (mut sys, _) = system();
        let dump = "label: gpt\nunit: sectors\nsector-size: 512\n\n\
                    /dev/loop9p1 : start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=B56ED884-12D8-2145-8E4B-8D0E1495C7A2\n\
                    /dev/loop9p3 : start=133120, size=389120, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, uuid=C66E023F-60C0-4C4A-AF13-36D8983FE910\n";
        let tables = vec![(
            "loop9".to_string(),
            super::super::table::parse(dump.as_bytes()).unwrap(),
        )];
        sys.images[1].name = "loop9p3".into();
        sys.images[1].partition = Some(3);
        let p = plan_onto(&sys, &tables, &target(400 << 20), &[], false).unwrap();
        assert!(!p.refused(), "{:?}", p.refusals);
        let parts: Vec<(u32, Option<&str>)> = p
            .items
            .iter()
            .map(|i| (i.partition, i.partuuid.as_deref()))
            .collect();
        assert_eq!(
            parts,
            [
                (1, Some("B56ED884-12D8-2145-8E4B-8D0E1495C7A2")),
                (3, Some("C66E023F-60C0-4C4A-AF13-36D8983FE910"))
            ]
        );
        assert!(p.script.contains("part3 : start=133120,"), "{}", p.script);
    }

    /// What backup.json says of an image (its filesystem type and UUID) comes from the drive: the plan prints it
    /// escaped, onto a disk and onto one partition. Before, an ESC or BEL there reached the terminal as it was.
    #[test]
    fn a_hostile_records_type_and_uuid_are_printed_escaped() {
        let (mut sys, tables) = system();
        for i in &mut sys.images {
            i.fs_type = "ext4\u{1b}]0;pwned\u{7}".into();
            i.ids.uuid = Some("\u{1b}[31mred\u{9b}2J".into());
        }
        let mut part = target(300 << 20);
        part.kind = TargetKind::BlockDevice;
        part.path = "/dev/loop7p2".into();
        part.partition_of = Some("loop7".into());
        for (t, names) in [(target(400 << 20), &[][..]), (part, &["loop9p2"][..])] {
            let text = render_restore(&plan_onto(&sys, &tables, &t, names, false).unwrap());
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
            assert!(text.contains("\\x1b[31mred"), "{text}");
        }
    }

    /// A table from the drive whose partitions overlap (as a hostile or damaged backup's may, its sha256 made to
    /// match) is refused in the plan, naming them; a dos table's logical partitions inside its extended one are not an
    /// overlap. Before, the plan passed and sfdisk refused it, saying "Sector 30000 already used" and not that
    /// nothing was written.
    #[test]
    fn a_table_whose_partitions_overlap_is_refused() {
        let (sys, _) = system();
        let dump = "label: gpt\nunit: sectors\nsector-size: 512\n\n\
                    /dev/loop9p1 : start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
                    /dev/loop9p2 : start=100000, size=389120, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F\n";
        let tables = vec![(
            "loop9".to_string(),
            super::super::table::parse(dump.as_bytes()).unwrap(),
        )];
        let p = plan_onto(&sys, &tables, &target(400 << 20), &[], false).unwrap();
        assert_eq!(
            p.refusals,
            [
                "the backup's partition table is inconsistent: partitions 1 and 2 overlap (sectors 2048-133119 and \
              100000-489119)"
            ]
        );
        let dos = "label: dos\nunit: sectors\n\n\
                   /dev/loop9p1 : start=2048, size=131072, type=83\n\
                   /dev/loop9p2 : start=133120, size=389120, type=5\n\
                   /dev/loop9p5 : start=135168, size=300000, type=83\n";
        let tables = vec![(
            "loop9".to_string(),
            super::super::table::parse(dos.as_bytes()).unwrap(),
        )];
        let p = plan_onto(&sys, &tables, &target(400 << 20), &["loop9p1"], false).unwrap();
        assert!(!p.refused(), "{:?}", p.refusals);
    }

    /// `--to PART`: one image onto one partition, no table; before, a partition target was always refused.
    #[test]
    fn one_image_is_restored_onto_one_partition() {
        let (sys, tables) = system();
        let mut t = target(300 << 20);
        t.kind = TargetKind::BlockDevice;
        t.path = "/dev/loop7p2".into();
        t.partition_of = Some("loop7".into());
        let p = plan_onto(&sys, &tables, &t, &["loop9p2"], true).unwrap();
        assert!(!p.refused(), "{:?}", p.refusals);
        assert!(p.table.is_none() && p.script.is_empty());
        assert!(p.confirm);
        assert_eq!(p.items.len(), 1);
        assert!(p.items[0].grow);
        assert_eq!(
            p.items[0].partuuid, None,
            "the partition keeps its own PARTUUID"
        );
        let text = render_restore(&p);
        assert!(
            text.contains("partition /dev/loop7p2 of loop7 (its table and PARTUUID left as they are) <- system/loop9p2.img.zst"),
            "{text}"
        );

        // Every image of the backup onto one partition: refused, saying --name.
        let p = plan_onto(&sys, &tables, &t, &[], false).unwrap();
        assert_eq!(p.refusals.len(), 1, "{:?}", p.refusals);
        assert_first_refusal(&p, "named with --name");
        assert_first_refusal(&p, "(loop9p1, loop9p2 of backup s); give the whole disk");
        // A partition smaller than the filesystem, and a vfat one grown: refused.
        t.bytes = 100 << 20;
        let p = plan_onto(&sys, &tables, &t, &["loop9p2"], false).unwrap();
        assert_first_refusal(
            &p,
            "smaller than the 190.0 MiB filesystem of image loop9p2 (partclone restores a filesystem at its original \
             size)",
        );
        t.bytes = 300 << 20;
        let p = plan_onto(&sys, &tables, &t, &["loop9p1"], true).unwrap();
        assert_eq!(
            p.refusals,
            ["--grow cannot grow a vfat filesystem; restore without --grow"]
        );
    }
}
