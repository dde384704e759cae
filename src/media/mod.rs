//! Destinations: the only place that decides whether a drive is present (mounted, the right filesystem, writable).
//!
//! [`detect`] looks at one configured destination and answers [`Presence::Present`] with what the writer needs to know
//! about the filesystem ([`MediaInfo`]: device, real filesystem type, label, uuid, space, largest file, symlinks), or
//! [`Presence::Absent`] with the reason ([`Absence`]), which reads as a sentence for the user. [`select`] then picks the
//! destinations to write to by `external.mode`; it is pure.
//!
//! The checks, in order:
//! 1. `path` exists (else *not mounted*) and is a directory (else *not a directory*). An error other than "not found"
//!    (a dead fuse daemon answers `ENOTCONN`) makes it *unreachable*.
//! 2. With `require_mount` (the default), `path` must be the root of a mounted filesystem: listed as a mount point in
//!    `/proc/self/mountinfo` and either on the device that entry names or on a device other than its parent
//!    directory's (a mount shadowed by a later mount over a parent does not count). Without mountinfo, only the device
//!    comparison with the parent is used. An empty directory on the parent's filesystem is the usual "drive not
//!    plugged in" case and is reported as such; it is never written to.
//! 3. The filesystem's identity: for a fuse mount (`fuseblk`, as `mount.exfat-fuse` makes) the real type, and for
//!    every block device the label and uuid, come from [`blkid`]. `fs_uuid` (case-insensitive) and `fs_label` (exact)
//!    must match when configured, else *other drive*.
//! 4. `backups/` (when it exists) must be a directory of this filesystem and mount, not a symlink nor a mount point:
//!    else *redirected*, since every read and write there would go somewhere else than the drive. Then the marker
//!    ([`marker`], a regular file of at most 64 KiB): a drive whose marker names another destination is refused.
//! 5. Read-only mounts (`ro` in the mount or superblock options, or `ST_RDONLY`) are *read-only*; less than
//!    [`MIN_FREE_BYTES`] available is *full*.
//! 6. The writability probe: an empty file `.dbackup-probe-<pid>-<nanos>` is created at `path` and removed at once.
//!    This is the only thing detection ever writes, and only on a filesystem that passed every check above. A dry
//!    run ([`detect_for_plan`]) asks the kernel instead (`access(W_OK)`) and writes nothing.
//!
//! `require_mount: false` (a NAS share, a plain directory in tests) skips step 2 but keeps the others; the
//! information then describes the filesystem that holds `path`.
//!
//! Writers call [`MediaInfo::check_still_present`] before they create anything, and [`ensure_marker`] on first use.

pub mod blkid;
pub mod devices;
pub mod marker;
pub mod mountinfo;

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::config::ExternalMode;
use crate::exit::{CodedError, Exit};
use crate::settings::DestinationSettings;

pub use marker::{MARKER_PATH, Marker, MarkerError};

/// Below this much available space a destination is *full*: not even the marker and an index would fit.
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// The largest file FAT12/16/32 can hold.
pub const FAT_MAX_FILE_SIZE: u64 = (4 << 30) - 1;

/// Whether a destination can be written to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[allow(clippy::large_enum_variant)] // a handful per run
pub enum Presence {
    Present(MediaInfo),
    Absent(Absence),
}

/// What is known about a present destination's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaInfo {
    /// The destination path as configured.
    pub path: PathBuf,
    /// `path` with symlinks resolved.
    pub resolved: PathBuf,
    /// The mount point of the filesystem holding `path` (equal to `resolved` when `require_mount`).
    pub mount_point: PathBuf,
    /// Whether `path` is itself the root of a mounted filesystem.
    pub is_mount_point: bool,
    /// The mount source as mountinfo gives it (`/dev/loop0`, `server:/export`); empty when unknown.
    pub source: String,
    /// The block device behind the mount, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// The filesystem type the kernel reports (`fuseblk` for a fuse-mounted exFAT drive).
    pub mount_fs_type: String,
    /// The real filesystem type (`exfat`, `ext4`, `xfs`, `btrfs`, `vfat`, ...).
    pub fs_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// `st_dev` of `path`, to notice later that another filesystem (or none) is there.
    pub dev: u64,
    /// Bytes available to this process (`f_bavail`).
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The largest file the filesystem can hold; `None` when effectively unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
    /// Whether symlinks can be created (exFAT and FAT: no; then `LATEST` is a text file).
    pub symlinks: bool,
    /// Whether hard links can be created (exFAT and FAT: no).
    pub hard_links: bool,
    /// The destination marker, when the drive has been used before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<Marker>,
}

/// A filesystem's label and uuid: what a destination expects, or what a drive has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// What was found at a destination path that is not a mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Found {
    /// Nothing at all.
    Missing,
    /// An empty directory on the filesystem mounted at `on`: a mount point without its drive.
    EmptyDirectory { on: PathBuf },
    /// A directory with contents on the filesystem mounted at `on`.
    Directory { on: PathBuf },
}

/// Why a destination is absent. `Display` gives the sentence for the user (without the destination's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Absence {
    NotMounted {
        path: PathBuf,
        found: Found,
    },
    NotADirectory {
        path: PathBuf,
    },
    /// `path` cannot even be looked at: an I/O error, or a dead fuse mount (`Transport endpoint is not connected`).
    Unreachable {
        path: PathBuf,
        error: String,
    },
    OtherDrive {
        path: PathBuf,
        fs_type: String,
        expected: Identity,
        found: Identity,
    },
    OtherDestination {
        path: PathBuf,
        marker: PathBuf,
        destination: String,
    },
    BadMarker {
        path: PathBuf,
        error: String,
    },
    /// `backups/` is a symlink or a mount point: writing or reading there would go somewhere else than this drive.
    /// `link` is the redirecting path, `what` says what it is (`is a symbolic link (to /root)`).
    Redirected {
        path: PathBuf,
        link: PathBuf,
        what: String,
    },
    ReadOnly {
        path: PathBuf,
        cause: String,
    },
    Full {
        path: PathBuf,
        free_bytes: u64,
        total_bytes: u64,
    },
}

impl Absence {
    /// A short, stable name for the reason (`not_mounted`, `other_drive`, `read_only`, `full`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Absence::NotMounted { .. } => "not_mounted",
            Absence::NotADirectory { .. } => "not_a_directory",
            Absence::Unreachable { .. } => "unreachable",
            Absence::OtherDrive { .. } => "other_drive",
            Absence::OtherDestination { .. } => "other_destination",
            Absence::BadMarker { .. } => "bad_marker",
            Absence::Redirected { .. } => "redirected",
            Absence::ReadOnly { .. } => "read_only",
            Absence::Full { .. } => "full",
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Absence::NotMounted { path, .. }
            | Absence::NotADirectory { path }
            | Absence::Unreachable { path, .. }
            | Absence::OtherDrive { path, .. }
            | Absence::OtherDestination { path, .. }
            | Absence::BadMarker { path, .. }
            | Absence::Redirected { path, .. }
            | Absence::ReadOnly { path, .. }
            | Absence::Full { path, .. } => path,
        }
    }
}

impl fmt::Display for Absence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Absence::NotMounted {
                path,
                found: Found::Missing,
            } => {
                write!(
                    f,
                    "not mounted: {} does not exist; plug in the drive",
                    path.display()
                )
            }
            Absence::NotMounted {
                path,
                found: Found::EmptyDirectory { on },
            } => {
                write!(
                    f,
                    "not mounted: {} is an empty directory on {}; plug in the drive",
                    path.display(),
                    on.display()
                )
            }
            Absence::NotMounted {
                path,
                found: Found::Directory { on },
            } => write!(
                f,
                "not mounted: {} is a directory on {}, not a mounted drive; mount the drive there, or set \
                 \"require_mount\": false to back up into a plain directory",
                path.display(),
                on.display()
            ),
            Absence::NotADirectory { path } => write!(
                f,
                "not a directory: {} is not a directory; fix \"path\" in the config",
                path.display()
            ),
            Absence::Unreachable { path, error } => {
                write!(f, "unreachable: cannot look at {}: {error}", path.display())?;
                if error.contains("not connected") {
                    write!(
                        f,
                        " (was the drive pulled out? unmount it and plug it in again)"
                    )?;
                }
                Ok(())
            }
            Absence::OtherDrive {
                path,
                fs_type,
                expected,
                found,
            } => write!(
                f,
                "other drive: the {fs_type} filesystem at {} has {}, expected {}; plug in the right drive, or fix \
                 \"fs_label\"/\"fs_uuid\" in the config",
                path.display(),
                describe_identity(found, expected),
                describe_identity(expected, expected)
            ),
            Absence::OtherDestination {
                path: _,
                marker,
                destination,
            } => write!(
                f,
                "other destination: the drive belongs to destination \"{}\" (see {}); plug in the right drive, or \
                 delete that file to give this drive to this destination",
                crate::stdx::show_str(destination),
                marker.display()
            ),
            Absence::BadMarker { path: _, error } => write!(f, "bad marker: {error}"),
            Absence::Redirected { link, what, .. } => write!(
                f,
                "redirected: {} {what}; dbackup reads and writes only inside the drive: remove it from the drive \
                 (or unmount it) and rerun; nothing was written",
                crate::stdx::show(link.as_os_str().as_encoded_bytes())
            ),
            Absence::ReadOnly { path, cause } => write!(f, "read-only: {} {cause}", path.display()),
            Absence::Full {
                path,
                free_bytes,
                total_bytes,
            } => write!(
                f,
                "full: {} has {} free of {}; delete something from it or use another drive",
                path.display(),
                crate::stdx::bytes(*free_bytes),
                crate::stdx::bytes(*total_bytes)
            ),
        }
    }
}

/// `label "T9", uuid FF4F-F609`, showing only the parts `wanted` names (both when it names neither).
fn describe_identity(id: &Identity, wanted: &Identity) -> String {
    let both = wanted.label.is_none() && wanted.uuid.is_none();
    let mut parts = Vec::new();
    if wanted.label.is_some() || both {
        parts.push(match &id.label {
            Some(l) => format!("label \"{}\"", crate::stdx::show_str(l)),
            None => "no label".to_string(),
        });
    }
    if wanted.uuid.is_some() || both {
        parts.push(match &id.uuid {
            Some(u) => format!("uuid {}", crate::stdx::show_str(u)),
            None => "no uuid".to_string(),
        });
    }
    parts.join(", ")
}

impl fmt::Display for MediaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.path.display(), self.fs_type)?;
        if let Some(d) = &self.device {
            write!(f, " on {}", d.display())?;
        }
        // The label is the drive's (udev's links give it back raw): shown escaped.
        if let Some(l) = &self.label {
            write!(f, ", label \"{}\"", crate::stdx::show_str(l))?;
        }
        write!(
            f,
            ", {} free of {})",
            crate::stdx::bytes(self.free_bytes),
            crate::stdx::bytes(self.total_bytes)
        )
    }
}

impl fmt::Display for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presence::Present(info) => write!(f, "present: {info}"),
            Presence::Absent(why) => why.fmt(f),
        }
    }
}

/// One configured destination and what detection found there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    pub destination: DestinationSettings,
    pub presence: Presence,
}

impl Detected {
    pub fn info(&self) -> Option<&MediaInfo> {
        match &self.presence {
            Presence::Present(info) => Some(info),
            Presence::Absent(_) => None,
        }
    }

    pub fn absence(&self) -> Option<&Absence> {
        match &self.presence {
            Presence::Present(_) => None,
            Presence::Absent(why) => Some(why),
        }
    }

    pub fn is_present(&self) -> bool {
        self.info().is_some()
    }
}

impl fmt::Display for Detected {
    /// `T9: not mounted: /media/payne/T9 is an empty directory on /; plug in the drive`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.destination.name, self.presence)
    }
}

/// How far [`examine`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Reading (a restore): checks 1 to 4.
    Read,
    /// Planning a write (a dry run): every check, writability asked of the kernel; nothing written.
    Plan,
    /// Writing: every check, the probe file included.
    Write,
}

/// Detects every destination, in config order: for writing, or for a dry run's plan (`dry_run`: nothing is written,
/// see [`detect_for_plan`]).
pub fn detect_all(destinations: &[DestinationSettings], dry_run: bool) -> Vec<Detected> {
    destinations
        .iter()
        .map(|d| Detected {
            destination: d.clone(),
            presence: if dry_run {
                detect_for_plan(d)
            } else {
                detect(d)
            },
        })
        .collect()
}

/// Decides whether `dest` can be written to now (see the module documentation for the checks). Writes nothing but the
/// documented probe file, and that only on a filesystem that passed every other check.
pub fn detect(dest: &DestinationSettings) -> Presence {
    presence(examine(dest, Intent::Write))
}

/// [`detect`] for a dry run: every check, but writability is asked of the kernel (`access(W_OK)`: a read-only
/// filesystem or a directory this user may not write) instead of by the probe file, so nothing at all is written.
pub fn detect_for_plan(dest: &DestinationSettings) -> Presence {
    presence(examine(dest, Intent::Plan))
}

/// Decides whether `dest` can be read now (restore): checks 1 to 4 only, so a read-only or full drive is present, and
/// nothing at all is written.
pub fn detect_for_reading(dest: &DestinationSettings) -> Presence {
    presence(examine(dest, Intent::Read))
}

fn presence(examined: Result<MediaInfo, Absence>) -> Presence {
    match examined {
        Ok(info) => Presence::Present(info),
        Err(why) => Presence::Absent(why),
    }
}

/// Waits until one of `destinations` is mounted (or needs no mount), polling the mount table every 200 ms, at most
/// `timeout`. Returns the first one ready, or `None` when the time ran out (`dbackup systemd wait-for-drive`: the
/// device appears before the desktop mounts it).
pub fn wait_for_mount(
    destinations: &[DestinationSettings],
    timeout: std::time::Duration,
) -> anyhow::Result<Option<&DestinationSettings>> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    loop {
        let table = mountinfo::read().context("cannot read the mount table")?;
        let ready = destinations.iter().find(|d| {
            let canonical = d.path.canonicalize().unwrap_or_else(|_| d.path.clone());
            !d.require_mount || mountinfo::mounted_at(&table, &canonical, None).is_some()
        });
        if ready.is_some() || started.elapsed() >= timeout {
            return Ok(ready);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The destinations to write to: `first` is the present one with the highest priority (the earliest in the config on a
/// tie); `all` is every present one, by priority, highest first. Empty when none is present.
pub fn select(mode: ExternalMode, detected: &[Detected]) -> Vec<&Detected> {
    let mut present: Vec<&Detected> = detected.iter().filter(|d| d.is_present()).collect();
    // Stable: equal priorities keep config order.
    present.sort_by_key(|d| std::cmp::Reverse(d.destination.priority));
    match mode {
        ExternalMode::First => present.into_iter().take(1).collect(),
        ExternalMode::All => present,
    }
}

/// [`select`], or the exit-5 error that says, for each destination, why it is absent.
pub fn select_or_fail(
    mode: ExternalMode,
    detected: &[Detected],
) -> Result<Vec<&Detected>, CodedError> {
    let chosen = select(mode, detected);
    if chosen.is_empty() {
        // A drive that is there but mounted read-only is a failure to fix (exit 1), not an absent drive (exit 5,
        // which the units count as success).
        let read_only = detected
            .iter()
            .any(|d| matches!(d.absence(), Some(Absence::ReadOnly { .. })));
        Err(CodedError::new(
            if read_only {
                Exit::Failed
            } else {
                Exit::NoDestination
            },
            none_present_message(detected),
        ))
    } else {
        Ok(chosen)
    }
}

/// `no external destination present:` followed by one line per destination saying why.
pub fn none_present_message(detected: &[Detected]) -> String {
    if detected.is_empty() {
        return "no external destination is configured; add one to \"destinations\" in the config"
            .to_string();
    }
    let mut msg = String::from("no external destination present:");
    for d in detected {
        msg.push_str(&format!("\n  {d}"));
    }
    msg
}

#[allow(clippy::result_large_err)] // an Absence is an answer, not a rare error
// Stays long: the detection checks in the order they must run (each one an early return with its Absence).
fn examine(dest: &DestinationSettings, intent: Intent) -> Result<MediaInfo, Absence> {
    let for_writing = intent != Intent::Read;
    let path = dest.path.clone();
    let unreachable = |e: std::io::Error| Absence::Unreachable {
        path: dest.path.clone(),
        error: crate::stdx::fs::message(&e),
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Absence::NotMounted {
                path,
                found: Found::Missing,
            });
        }
        Err(e) => return Err(unreachable(e)),
    };
    if !meta.is_dir() {
        return Err(Absence::NotADirectory { path });
    }
    let resolved = std::fs::canonicalize(&path).map_err(unreachable)?;
    let dev = meta.dev();
    let parent_dev = resolved
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    let mounts = mountinfo::read().ok();

    let at = mounts
        .as_deref()
        .and_then(|m| mountinfo::mounted_at(m, &resolved, Some(dev)));
    let is_mount_point = match (&mounts, at) {
        // Listed there, and really what we see there (not shadowed by a mount over a parent directory).
        (Some(_), Some(entry)) => entry.dev() == dev || parent_dev != Some(dev),
        (Some(_), None) => false,
        // No mountinfo: a different device than the parent's, or the root directory.
        (None, _) => parent_dev != Some(dev) || resolved.parent().is_none(),
    };
    let entry = if is_mount_point {
        at
    } else {
        mounts
            .as_deref()
            .and_then(|m| mountinfo::containing(m, &resolved, Some(dev)))
    };

    if !is_mount_point && dest.require_mount {
        let on = entry
            .map(|e| e.mount_point.clone())
            .unwrap_or_else(|| PathBuf::from("/"));
        let empty = std::fs::read_dir(&resolved)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let found = if empty {
            Found::EmptyDirectory { on }
        } else {
            Found::Directory { on }
        };
        return Err(Absence::NotMounted { path, found });
    }

    let mount_fs_type = entry.map(|e| e.fs_type.clone()).unwrap_or_default();
    let source = entry.map(|e| e.source.clone()).unwrap_or_default();
    let device = entry.and_then(block_device);
    let id = device.as_deref().map(blkid::probe).unwrap_or_default();
    let fs_type = real_fs_type(&mount_fs_type, id.fs_type.as_deref());

    let found = Identity {
        label: id.label.clone(),
        uuid: id.uuid.clone(),
    };
    let expected = Identity {
        label: dest.fs_label.clone(),
        uuid: dest.fs_uuid.clone(),
    };
    let uuid_ok = expected.uuid.as_ref().is_none_or(|want| {
        found
            .uuid
            .as_ref()
            .is_some_and(|u| u.eq_ignore_ascii_case(want))
    });
    let label_ok = expected
        .label
        .as_ref()
        .is_none_or(|want| found.label.as_ref() == Some(want));
    if !(uuid_ok && label_ok) {
        return Err(Absence::OtherDrive {
            path,
            fs_type,
            expected,
            found,
        });
    }

    // `backups/` must be a directory of this filesystem: a symlink or a mount point there would take every read
    // and write elsewhere.
    let root = crate::stdx::fs::Dir::open(&resolved).map_err(|e| unreachable(e.into()))?;
    if let Err(e) = root.sub(marker::BACKUPS_DIR)
        && e.is_redirect()
    {
        return Err(Absence::Redirected {
            link: path.join(marker::BACKUPS_DIR),
            what: e.what(),
            path,
        });
    }
    let marker = match marker::read_in(&root) {
        Ok(Some(m)) if m.destination != dest.name => {
            return Err(Absence::OtherDestination {
                marker: marker::marker_path(&path),
                destination: m.destination,
                path,
            });
        }
        Ok(m) => m,
        Err(e) => {
            return Err(Absence::BadMarker {
                path,
                error: e.to_string(),
            });
        }
    };

    let st = rustix::fs::statvfs(&resolved).map_err(|e| unreachable(e.into()))?;
    let read_only = entry.is_some_and(|e| e.read_only())
        || st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY);
    if read_only && for_writing {
        return Err(Absence::ReadOnly {
            path,
            cause: "is mounted read-only; remount it read-write".to_string(),
        });
    }
    let free_bytes = st.f_bavail.saturating_mul(st.f_frsize);
    let total_bytes = st.f_blocks.saturating_mul(st.f_frsize);
    if free_bytes < MIN_FREE_BYTES && for_writing {
        return Err(Absence::Full {
            path,
            free_bytes,
            total_bytes,
        });
    }

    let probed = match intent {
        // Reading needs no more.
        Intent::Read => Ok(()),
        Intent::Plan => {
            rustix::fs::access(&resolved, rustix::fs::Access::WRITE_OK).map_err(Into::into)
        }
        Intent::Write => write_probe(&resolved),
    };
    if let Err(e) = probed {
        return Err(match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Absence::Full {
                path,
                free_bytes,
                total_bytes,
            },
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => Absence::ReadOnly {
                path,
                cause: format!(
                    "cannot be written to: creating a test file failed: {}",
                    crate::stdx::fs::message(&e)
                ),
            },
            _ => unreachable(e),
        });
    }

    let caps = capabilities(&fs_type);
    Ok(MediaInfo {
        path,
        mount_point: entry
            .map(|e| e.mount_point.clone())
            .unwrap_or_else(|| resolved.clone()),
        resolved,
        is_mount_point,
        source,
        device,
        mount_fs_type,
        fs_type,
        label: id.label,
        uuid: id.uuid,
        dev,
        free_bytes,
        total_bytes,
        max_file_size: max_file_size(caps),
        symlinks: caps.symlinks,
        hard_links: caps.hard_links,
        marker,
    })
}

/// The allocation unit of the filesystem holding `path`: its fragment size, else its block size; 4096 when
/// `statvfs` cannot tell (what space estimates round each file up to).
pub fn block_size(path: &Path) -> u64 {
    rustix::fs::statvfs(path)
        .map(|st| {
            if st.f_frsize > 0 {
                st.f_frsize
            } else {
                st.f_bsize
            }
        })
        .unwrap_or(4096)
}

/// Creates and removes an empty file at `dir`: the one write detection does.
fn write_probe(dir: &Path) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let probe = dir.join(format!(".dbackup-probe-{}-{nanos}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    crate::interrupt::test_stop("drive-probe");
    std::fs::remove_file(&probe)
}

/// The block device behind a mount: its source when that is a block device, else the device its number names
/// (`/sys/dev/block/<major>:<minor>`).
fn block_device(entry: &mountinfo::MountEntry) -> Option<PathBuf> {
    let source = Path::new(&entry.source);
    if source.is_absolute()
        && std::fs::metadata(source).is_ok_and(|m| m.file_type().is_block_device())
    {
        return Some(source.to_path_buf());
    }
    let uevent = std::fs::read_to_string(format!(
        "/sys/dev/block/{}:{}/uevent",
        entry.major, entry.minor
    ))
    .ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    Some(Path::new("/dev").join(name))
}

/// The filesystem's real type: what the kernel says, except for fuse mounts, where the device knows better.
pub fn real_fs_type(mount_fs_type: &str, probed: Option<&str>) -> String {
    match probed {
        Some(p)
            if mount_fs_type == "fuseblk"
                || mount_fs_type.starts_with("fuse")
                || mount_fs_type.is_empty() =>
        {
            p.to_string()
        }
        _ => mount_fs_type.to_string(),
    }
}

/// The hidden largest-file size (bytes, at least 1 MiB), for tests: archives are split into parts as on FAT32 without
/// writing 4 GiB (this machine's only FAT driver, fusefat, cannot write past 2 GiB in a file). It only ever lowers
/// the filesystem's own limit.
pub const MAX_FILE_BYTES_VAR: &str = "DBACKUP_MAX_FILE_BYTES";

/// The largest file the drive takes: its filesystem type's limit, lowered by [`MAX_FILE_BYTES_VAR`].
fn max_file_size(caps: Capabilities) -> Option<u64> {
    let lowered = std::env::var(MAX_FILE_BYTES_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| n.max(1 << 20));
    match (caps.max_file_size, lowered) {
        (Some(m), Some(n)) => Some(m.min(n)),
        (m, n) => m.or(n),
    }
}

/// What a filesystem type can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `None`: effectively unlimited (exFAT: 16 EiB; ext4 with 4 KiB blocks: 16 TiB; xfs, btrfs: 8 EiB).
    pub max_file_size: Option<u64>,
    pub symlinks: bool,
    pub hard_links: bool,
    /// Whether files keep the mode and owner they are given (FAT and exFAT show the mount's fixed ones on every file).
    pub modes_and_owners: bool,
    /// The step in which mtimes are kept, in nanoseconds: 1 (exact) on POSIX filesystems, 2 s on FAT, 1 s on exFAT
    /// (what exfat-fuse keeps; the kernel's driver keeps 10 ms).
    pub mtime_step_ns: u32,
}

/// The limits of a filesystem type. FAT's 4 GiB file limit is the one that matters for archives; exFAT and FAT have
/// neither symlinks nor hard links, nor modes and owners of their own. Unknown types are assumed to be POSIX
/// filesystems.
pub fn capabilities(fs_type: &str) -> Capabilities {
    let fat = Capabilities {
        max_file_size: None,
        symlinks: false,
        hard_links: false,
        modes_and_owners: false,
        mtime_step_ns: 1_000_000_000,
    };
    match fs_type {
        "vfat" | "msdos" | "fat" | "fat12" | "fat16" | "fat32" | "umsdos" => Capabilities {
            max_file_size: Some(FAT_MAX_FILE_SIZE),
            mtime_step_ns: 2_000_000_000,
            ..fat
        },
        "exfat" => fat,
        _ => Capabilities {
            max_file_size: None,
            symlinks: true,
            hard_links: true,
            modes_and_owners: true,
            mtime_step_ns: 1,
        },
    }
}

/// What the filesystem holding `path` can hold ([`capabilities`] of its type: the mount table's, or for a fuse mount
/// its device's); `path` need not exist yet (its nearest existing ancestor is asked). A POSIX filesystem's when the
/// mount table does not tell.
pub fn capabilities_at(path: &Path) -> Capabilities {
    let fs_type = path
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())
        .and_then(|resolved| {
            let dev = std::fs::metadata(&resolved).ok()?.dev();
            let mounts = mountinfo::read().ok()?;
            let entry = mountinfo::containing(&mounts, &resolved, Some(dev))?;
            let probed = match entry.fs_type.starts_with("fuse") {
                true => block_device(entry).and_then(|d| blkid::probe(&d).fs_type),
                false => None,
            };
            Some(real_fs_type(&entry.fs_type, probed.as_deref()))
        });
    capabilities(fs_type.as_deref().unwrap_or_default())
}

impl MediaInfo {
    /// Opens the destination's root for writing below it: the same filesystem detection found (else
    /// [`MediaError::Gone`]). Everything below is reached through this handle, never by path again.
    pub fn open_root(&self) -> Result<crate::stdx::fs::Dir, MediaError> {
        let gone = |why: String| MediaError::Gone {
            path: self.path.clone(),
            why,
        };
        let root = crate::stdx::fs::Dir::open(&self.resolved).map_err(|e| gone(e.to_string()))?;
        if root.dev() != self.dev {
            return Err(gone("another filesystem is there now".to_string()));
        }
        Ok(root)
    }

    /// Fails unless the same filesystem is still at `path` (and still mounted there, when it was a mount point): call
    /// it right before creating anything, so that a drive pulled since detection is never replaced by the root disk.
    pub fn check_still_present(&self) -> Result<(), MediaError> {
        let gone = |why: String| MediaError::Gone {
            path: self.path.clone(),
            why,
        };
        let meta =
            std::fs::metadata(&self.resolved).map_err(|e| gone(crate::stdx::fs::message(&e)))?;
        if meta.dev() != self.dev {
            return Err(gone("another filesystem is there now".to_string()));
        }
        if self.is_mount_point {
            let mounts = mountinfo::read()
                .map_err(|e| gone(format!("cannot read {}: {e}", mountinfo::MOUNTINFO)))?;
            if mountinfo::mounted_at(&mounts, &self.resolved, Some(self.dev)).is_none() {
                return Err(gone("it is no longer mounted".to_string()));
            }
        }
        Ok(())
    }
}

/// Failures of the few writes this module does.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("destination {path} is gone: {why}; plug the drive in again and rerun")]
    Gone { path: PathBuf, why: String },
    #[error(
        "the drive at {path} belongs to destination \"{}\" (see {marker}); plug in the right drive, or delete that \
         file to give this drive to this destination",
        crate::stdx::show_str(.destination)
    )]
    OtherDestination {
        path: PathBuf,
        marker: PathBuf,
        destination: String,
    },
    #[error(transparent)]
    Marker(#[from] MarkerError),
}

/// Makes sure the destination's marker exists and names `dest`: writes it (atomically) on first use, after checking
/// that the drive is still there. Returns the marker now on the drive.
pub fn ensure_marker(
    dest: &DestinationSettings,
    info: &MediaInfo,
    now: DateTime<FixedOffset>,
) -> Result<Marker, MediaError> {
    if let Some(m) = &info.marker
        && m.destination == dest.name
    {
        return Ok(m.clone());
    }
    info.check_still_present()?;
    let root = info.open_root()?;
    let m = match marker::read_in(&root)? {
        Some(m) => m,
        // Another run (another config) may give the drive to its destination meanwhile: the first marker stays.
        None => marker::write_in(
            &root,
            &Marker::new(
                &dest.name,
                info.uuid.clone(),
                info.label.clone(),
                now,
                hostname(),
            ),
        )?,
    };
    if m.destination != dest.name {
        return Err(MediaError::OtherDestination {
            path: info.path.clone(),
            marker: marker::marker_path(&info.path),
            destination: m.destination,
        });
    }
    Ok(m)
}

/// This machine's host name (`uname -n`).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
