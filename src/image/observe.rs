//! Looking at block devices before planning (read-only): what a device is (partition of which disk, size, sector
//! size), the filesystem on it (through `media::blkid`), the partclone program for it, and how it is in use (through
//! `media::devices`, the only reader of mountinfo). Also what a restore target holds now.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::FsIds;
use crate::media::devices::{self, DeviceUse};

/// One block device, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// As given (config or `--device`).
    pub given: String,
    /// The device node, symlinks resolved (`/dev/nvme0n1p2`).
    pub path: PathBuf,
    /// The kernel name (`nvme0n1p2`).
    pub kname: String,
    pub bytes: u64,
    /// The logical sector size of its disk.
    pub sector_size: u64,
    /// Its number on its disk, and the disk's kernel name and size, when it is a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Partitions found on it (when it is a whole disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// Its filesystem's identity (three fields of this record in the JSON).
    #[serde(flatten)]
    pub ids: FsIds,
    /// The partclone program for its filesystem, when installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<PathBuf>,
    pub usage: DeviceUse,
    /// partclone's count of the bytes in use (from its header, read before imaging by `image::used_space`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// An upper bound of partclone's stream for it (what zstd compresses): the used bytes, the bitmap, checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_bound: Option<u64>,
    /// Why the used bytes are not known (the device's size stands in for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_error: Option<String>,
    /// The secret files dbackup reads that lie on its filesystem (see `media::devices::holds_file`): its image
    /// would carry them, so it goes only to a destination that encrypts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::settings::SecretFile>,
}

/// The partclone program for a filesystem type (as blkid names it).
pub fn partclone_for(fs_type: &str) -> Option<&'static str> {
    Some(match fs_type {
        "ext2" | "ext3" | "ext4" => "partclone.extfs",
        "vfat" | "msdos" => "partclone.fat",
        "btrfs" => "partclone.btrfs",
        "xfs" => "partclone.xfs",
        "exfat" => "partclone.exfat",
        "ntfs" => "partclone.ntfs",
        "f2fs" => "partclone.f2fs",
        "hfsplus" => "partclone.hfsp",
        "minix" => "partclone.minix",
        _ => return None,
    })
}

/// The filesystem names the partclone program `tool` writes into its images' headers (`partclone.extfs` ->
/// `EXTFS`): an image whose header names another is not what that program restores.
pub fn header_names(tool: &str) -> &'static [&'static str] {
    match tool {
        "partclone.extfs" => &["EXTFS"],
        "partclone.fat" => &["FAT12", "FAT16", "FAT32"],
        "partclone.btrfs" => &["BTRFS"],
        "partclone.xfs" => &["XFS"],
        "partclone.exfat" => &["EXFAT"],
        "partclone.ntfs" => &["NTFS"],
        "partclone.f2fs" => &["F2FS"],
        "partclone.hfsp" => &["HFS Plus"],
        "partclone.minix" => &["MINIX"],
        _ => &[],
    }
}

fn sys_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Looks at the block device `given` (read-only). Fails with a sentence when it is not a block device.
pub fn device(given: &str) -> Result<DeviceFacts, String> {
    let path = std::fs::canonicalize(given).map_err(|e| format!("{given}: {e}"))?;
    if devices::block_rdev(&path).is_none() {
        return Err(format!("{given} is not a block device"));
    }
    let kname = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let sys = Path::new("/sys/class/block").join(&kname);
    let partition = sys_u64(&sys.join("partition")).map(|n| n as u32);
    let disk = partition.and_then(|_| {
        let real = std::fs::canonicalize(&sys).ok()?;
        Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
    });
    let disk_sys = disk
        .as_ref()
        .map(|d| Path::new("/sys/class/block").join(d))
        .unwrap_or_else(|| sys.clone());
    let id = crate::media::blkid::probe(&path);
    let fs_type = id.fs_type.clone();
    let tool = fs_type
        .as_deref()
        .and_then(partclone_for)
        .and_then(crate::stdx::find_program);
    Ok(DeviceFacts {
        given: given.to_string(),
        bytes: sys_u64(&sys.join("size")).unwrap_or(0).saturating_mul(512),
        sector_size: sys_u64(&disk_sys.join("queue/logical_block_size")).unwrap_or(512),
        partition,
        disk_bytes: disk
            .as_ref()
            .and_then(|_| sys_u64(&disk_sys.join("size")))
            .map(|s| s.saturating_mul(512)),
        disk,
        partitions: devices::partitions_of(&kname)
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        fs_type,
        ids: id.into(),
        tool,
        usage: devices::device_use(&path).map_err(|e| format!("{given}: {e}"))?,
        path,
        kname,
        used_bytes: None,
        stream_bound: None,
        used_error: None,
        secrets: Vec::new(),
    })
}

/// A restore target: a block device (a whole disk) or a disk image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFacts {
    pub path: PathBuf,
    pub kind: TargetKind,
    pub bytes: u64,
    pub sector_size: u64,
    /// A block device that is itself a partition (of this disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_of: Option<String>,
    /// What it holds now (its partitions and filesystems), for the plan's "overwritten" lines.
    pub holds: Vec<String>,
    pub usage: DeviceUse,
    /// For a file: the loop devices it is attached to now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    BlockDevice,
    File,
}

fn describe(id: &crate::media::blkid::FsIdentity) -> Option<String> {
    let fs = id.fs_type.as_deref()?;
    let mut s = fs.to_string();
    if let Some(u) = &id.uuid {
        s.push_str(&format!(" UUID={u}"));
    }
    if let Some(l) = &id.label {
        s.push_str(&format!(" LABEL={}", crate::stdx::show_str(l)));
    }
    Some(s)
}

/// What a disk image file holds now, as a block device's partitions and filesystems are listed: its partition table
/// or filesystem, the partitions of the loop devices it is attached to, or, when blkid knows nothing of it, that it
/// is not blank (a file only ever written by `truncate -s` holds no data).
fn file_holds(path: &Path, loops: &[PathBuf]) -> Vec<String> {
    let mut holds = Vec::new();
    let id = crate::media::blkid::probe_file(path);
    if let Some(s) = describe(&id) {
        holds.push(format!("{}: {s}", path.display()));
    }
    if let Some(pt) = &id.pt_type {
        holds.push(format!(
            "{}: a {} partition table",
            path.display(),
            crate::stdx::show_str(pt)
        ));
    }
    for p in loops
        .iter()
        .flat_map(|l| devices::partitions_of(&l.file_name().unwrap_or_default().to_string_lossy()))
    {
        if let Some(s) = describe(&crate::media::blkid::probe(&p)) {
            holds.push(format!("{} (of {}): {s}", p.display(), path.display()));
        }
    }
    let has_data = std::fs::File::open(path)
        .is_ok_and(|f| rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0)).is_ok());
    if holds.is_empty() && has_data {
        holds.push(format!(
            "{}: data blkid does not recognise (it is not a blank file)",
            path.display()
        ));
    }
    holds
}

/// Looks at a restore target (read-only). A file that does not exist yet is a target of size 0 (the plan refuses it:
/// create it first with `truncate -s SIZE`).
pub fn target(path: &Path) -> Result<TargetFacts, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "{}: {e}; for a disk image file, create it first (truncate -s SIZE FILE)",
            path.display()
        )
    })?;
    if meta.is_file() {
        let loops = devices::loops_backed_by(path);
        let mut usage = DeviceUse::default();
        for l in &loops {
            if let Ok(u) = devices::device_use(l) {
                usage.mounts.extend(u.mounts);
                usage.swap.extend(u.swap);
                usage.holders.extend(u.holders);
            }
        }
        return Ok(TargetFacts {
            path: path.to_path_buf(),
            kind: TargetKind::File,
            bytes: meta.len(),
            sector_size: 512,
            partition_of: None,
            holds: file_holds(path, &loops),
            usage,
            loops,
        });
    }
    if devices::block_rdev(path).is_none() {
        return Err(format!(
            "{} is neither a block device nor a disk image file: give a whole disk (/dev/sdb), a partition with \
             --name (/dev/sdb2), or a disk image file (truncate -s SIZE FILE)",
            path.display()
        ));
    }
    let d = device(&path.to_string_lossy())?;
    let mut holds = Vec::new();
    if let Some(s) = d
        .fs_type
        .as_ref()
        .and(describe(&crate::media::blkid::probe(&d.path)))
    {
        holds.push(format!("{}: {s}", d.path.display()));
    }
    for p in &d.partitions {
        let id = crate::media::blkid::probe(Path::new(p));
        holds.push(match describe(&id) {
            Some(s) => format!("{p}: {s}"),
            None => format!("{p}: a partition without a filesystem blkid knows"),
        });
    }
    Ok(TargetFacts {
        path: d.path.clone(),
        kind: TargetKind::BlockDevice,
        bytes: d.bytes,
        sector_size: d.sector_size,
        partition_of: d.disk.clone(),
        holds,
        usage: d.usage,
        loops: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restore target that is neither a block device nor a regular file (a directory, a character device) is
    /// refused saying what a target can be. Before: "/dev/null is not a block device", nothing more.
    #[test]
    fn a_target_of_the_wrong_type_is_refused_saying_what_it_may_be() {
        let dir = tempfile::tempdir().unwrap();
        for p in [dir.path(), Path::new("/dev/null")] {
            let e = target(p).unwrap_err();
            assert!(
                e.contains("is neither a block device nor a disk image file: give a whole disk"),
                "{e}"
            );
        }
    }
}
