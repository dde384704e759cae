//! Block devices in use: which mounts (read-write or read-only, in dbackup's mount namespace or in any other one a
//! process is in) sit on a device or any partition of a disk, whether it is active swap or held by device-mapper/md,
//! whether a file lies on a device's filesystem, and which loop devices a disk image file is attached to. The
//! partition imager and the image restore ask here (only `media/` reads mountinfo).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mountinfo::{self, MountEntry};

/// One mount of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountUse {
    /// The device mounted (the disk itself, or one of its partitions).
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub read_only: bool,
    /// Mounted in another mount namespace than dbackup's (where dbackup does not see it): a process in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<u32>,
}

impl MountUse {
    /// Where it is mounted, for people: `/mnt/x`, or `/mnt/x in the mount namespace of process 1234`.
    pub fn place(&self) -> String {
        let at = crate::stdx::show(self.mount_point.as_os_str().as_encoded_bytes());
        match self.namespace {
            Some(pid) => format!("{at} in the mount namespace of process {pid}"),
            None => at,
        }
    }
}

/// How a device (or a disk and its partitions) is in use right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUse {
    pub mounts: Vec<MountUse>,
    /// Devices among them that are active swap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swap: Vec<PathBuf>,
    /// Kernel holders (device-mapper, md): `dm-0`, `md127`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

impl DeviceUse {
    /// Mounted read-write anywhere.
    pub fn read_write(&self) -> Option<&MountUse> {
        self.mounts.iter().find(|m| !m.read_only)
    }

    /// Anything at all uses it (a mount of any kind, swap, a holder).
    pub fn busy(&self) -> bool {
        !self.mounts.is_empty() || !self.swap.is_empty() || !self.holders.is_empty()
    }

    /// What uses it, for a refusal: `/dev/loop3p2 is mounted read-write at /mnt/x`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{} is mounted {} at {}",
                    m.device.display(),
                    if m.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    m.place()
                )
            })
            .collect();
        parts.extend(
            self.swap
                .iter()
                .map(|d| format!("{} is active swap", d.display())),
        );
        if !self.holders.is_empty() {
            parts.push(format!(
                "held by {} (device-mapper or RAID)",
                self.holders.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// The `st_rdev` (major, minor) of a block device node, or `None` when `path` is not one.
pub fn block_rdev(path: &Path) -> Option<(u32, u32)> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type()
        .is_block_device()
        .then(|| (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())))
}

/// Whether mountinfo's entry is a mount of the device `dev` (canonical path) with number `rdev`.
fn entry_is(entry: &MountEntry, dev: &Path, rdev: (u32, u32)) -> bool {
    if (entry.major, entry.minor) == rdev {
        return true;
    }
    let source = Path::new(&entry.source);
    source.is_absolute() && std::fs::canonicalize(source).is_ok_and(|s| s == dev)
}

/// Whether the file `file` (its symlinks resolved) lies on the filesystem of `device` or, when it is a whole disk, of
/// one of its partitions: the file's `st_dev` is the device's number, or the mount the file is under (the longest
/// mount point its resolved path starts with, the last mounted there) is of the device. btrfs needs the second: its
/// files carry a subvolume's number of their own. False when either cannot be looked at.
pub fn holds_file(device: &Path, file: &Path) -> bool {
    let (Ok(meta), Ok(real)) = (std::fs::metadata(file), std::fs::canonicalize(file)) else {
        return false;
    };
    let dev = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
    let Ok(canonical) = std::fs::canonicalize(device) else {
        return false;
    };
    let kname = canonical
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut devices = vec![canonical];
    devices.extend(partitions_of(&kname));
    let mounts = mountinfo::read().unwrap_or_default();
    let under = (mounts.iter())
        .filter(|e| real.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.components().count());
    devices.iter().any(|d| {
        block_rdev(d).is_some_and(|rdev| rdev == dev || under.is_some_and(|e| entry_is(e, d, rdev)))
    })
}

/// The partitions of a disk, from sysfs (`/sys/class/block/<disk>/<part>/partition`), as device paths.
pub fn partitions_of(kname: &str) -> Vec<PathBuf> {
    let dir = Path::new("/sys/class/block").join(kname);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut parts: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = std::fs::read_to_string(e.path().join("partition")).ok()?;
            Some((
                n.trim().parse().ok()?,
                Path::new("/dev").join(e.file_name()),
            ))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, p)| p).collect()
}

/// How `device` (a block device) and, when it is a whole disk, every partition of it, are in use: mounted here or in
/// another mount namespace (where a mount dbackup cannot see still writes to the device), active swap, held.
pub fn device_use(device: &Path) -> std::io::Result<DeviceUse> {
    let mounts = mountinfo::read()?;
    let others = mountinfo::other_namespaces();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let canonical = std::fs::canonicalize(device)?;
    let kname = canonical
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut devices = vec![canonical.clone()];
    devices.extend(partitions_of(&kname));
    let mut out = DeviceUse::default();
    for dev in &devices {
        let Some(rdev) = block_rdev(dev) else {
            continue;
        };
        // Its mounts here, then those only another mount namespace has (the same mount seen there is not repeated).
        let tables = std::iter::once((None, mounts.as_slice())).chain(
            others
                .iter()
                .filter_map(|(pid, t)| Some((Some(*pid), t.as_deref().ok()?))),
        );
        for (namespace, table) in tables {
            for e in table.iter().filter(|e| entry_is(e, dev, rdev)) {
                let m = MountUse {
                    device: dev.clone(),
                    mount_point: e.mount_point.clone(),
                    read_only: e.read_only(),
                    namespace,
                };
                if !out.mounts.iter().any(|o| {
                    (&o.device, &o.mount_point, o.read_only)
                        == (&m.device, &m.mount_point, m.read_only)
                }) {
                    out.mounts.push(m);
                }
            }
        }
        let in_swap = swaps.lines().skip(1).any(|l| {
            l.split_whitespace().next().is_some_and(|s| {
                std::fs::canonicalize(mountinfo_unescape(s)).is_ok_and(|s| &s == dev)
            })
        });
        if in_swap {
            out.swap.push(dev.clone());
        }
        let name = dev.file_name().unwrap_or_default();
        if let Ok(h) = std::fs::read_dir(Path::new("/sys/class/block").join(name).join("holders")) {
            out.holders.extend(
                h.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    Ok(out)
}

fn mountinfo_unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(mountinfo::unescape(
        s.as_bytes(),
    )))
}

/// The loop devices attached to `file` (a disk image), from `/sys/block/loop*/loop/backing_file`.
pub fn loops_backed_by(file: &Path) -> Vec<PathBuf> {
    let Ok(file) = std::fs::canonicalize(file) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|b| {
                let b = b.trim_end_matches('\n');
                Path::new(b.strip_suffix(" (deleted)").unwrap_or(b)) == file
            })
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_described_for_refusals() {
        let u = DeviceUse {
            mounts: vec![
                MountUse {
                    device: "/dev/sda2".into(),
                    mount_point: "/mnt/a\nb".into(),
                    read_only: false,
                    namespace: None,
                },
                MountUse {
                    device: "/dev/sda4".into(),
                    mount_point: "/srv".into(),
                    read_only: true,
                    namespace: Some(1234),
                },
            ],
            swap: vec!["/dev/sda3".into()],
            holders: vec!["dm-0".into()],
        };
        assert!(u.busy() && u.read_write().is_some());
        assert_eq!(
            u.describe(),
            "/dev/sda2 is mounted read-write at /mnt/a\\nb; /dev/sda4 is mounted read-only at /srv in the mount \
             namespace of process 1234; /dev/sda3 is active swap; held by dm-0 (device-mapper or RAID)"
        );
        assert!(!DeviceUse::default().busy());
        assert!(loops_backed_by(Path::new("/nonexistent/disk.img")).is_empty());
    }
}
