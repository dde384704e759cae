//! The drive side of the external phase: every name dbackup uses under `<destination>/backups/`, listing them, the
//! backup metadata file (`backup.json`, [`BackupMeta`]), `latest`/`LATEST`, and crash-safe deletion.
//!
//! Layout of a destination (only `backups/` belongs to dbackup, and `REPORT.html` beside it, the drive's page written
//! by `report::drive` from the `backup.json` files; nothing else on the drive is ever touched):
//!
//! ```text
//! <path>/backups/.dbackup-destination.json     the destination marker (src/media/marker.rs)
//! <path>/backups/2025-04-01-031500/            one verified backup, named by its local-time stamp:
//!     config.tar                               each set's snapshot as one tar (or config.tar.part000, .part001, ...
//!     config.index.jsonl                       on filesystems with a file size limit), and its index
//!     data.tar
//!     data.index.jsonl
//!     backup.json                              what this backup holds (BackupMeta); its presence makes it dbackup's
//!     verification.sha256                      `sha256sum -c verification.sha256` checks every file above
//! <path>/backups/latest -> 2025-04-01-031500   where the filesystem has symlinks (ext4, xfs, btrfs)
//! <path>/backups/LATEST                        elsewhere (exFAT, FAT): a text file holding the stamp and a newline
//! <path>/backups/.tmp-<stamp>-<pid>/           a backup being written; renamed to <stamp> only once verified
//! <path>/backups/.trash-<stamp>-<pid>/         a backup being deleted (renamed first, so it is never half-listed)
//! <path>/backups/.latest.tmp-<pid>             a `latest` link or `LATEST` file being replaced
//! <path>/backups/.LATEST.tmp-<pid>
//! ```
//!
//! A directory counts as a backup only when its name is exactly a stamp, it is a directory (not a symlink), and its
//! `backup.json` is readable, of a known format, names the same stamp and says `verified: true`. Temporary, trash and
//! `latest` temporary names of the exact shapes above are leftovers of interrupted runs, removed by the next run.
//! Everything else in `backups/` (a directory a person made, a file) is listed as *other* and left alone.
//!
//! The drive is hostile until checked: `backups/` is opened with [`open_backups`] (never through a symlink, only on
//! the destination's own mount), everything below it through that handle ([`crate::stdx::fs::Dir`]); `backup.json`
//! is read with a size limit and checked ([`parse_metadata`]: plain file names, the config's set-name rules, sizes
//! whose sums fit) before anything acts on it.

use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::archive::{Digest, FileRecord, ReadBackMethod, Warning};
use crate::snapshot::{self, SourceRecord};
use crate::stdx::fs::{Dir, FsError};
use crate::stdx::show;

/// The directory on a destination that dbackup owns.
pub const BACKUPS_DIR: &str = crate::media::marker::BACKUPS_DIR;
/// The metadata file inside each backup.
pub const METADATA_FILE: &str = "backup.json";
/// The sums file inside each backup (`sha256sum -c` format).
pub const SUMS_FILE: &str = crate::archive::sums::SUMS_FILE;
/// The `latest` symlink (filesystems with symlinks).
pub const LATEST_LINK: &str = "latest";
/// The `LATEST` text file (filesystems without symlinks).
pub const LATEST_FILE: &str = "LATEST";
/// Prefix of a backup being written.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Prefix of a backup being deleted.
pub const TRASH_PREFIX: &str = ".trash-";
/// The version of [`BackupMeta`] this dbackup writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
/// The largest `backup.json` read (checked before reading): a backup of a thousand sets with a thousand parts each
/// and every warning kept is a few MiB.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;
/// The largest `LATEST` file read: a stamp and a newline.
pub const MAX_LATEST_BYTES: u64 = 4 << 10;
/// The largest byte count or total `backup.json` may give: what a file can hold (`off_t`), so that sums of them fit.
pub const MAX_RECORDED_BYTES: u64 = i64::MAX as u64;
/// Room a backup keeps free beyond the estimate of its files: metadata, sums, directory entries and the index
/// estimate's slack.
pub const SPACE_MARGIN: u64 = 1 << 20;

/// `<set>.tar` (`<set>.tar.age` encrypted): the archive's file name (parts append `.part000`, `.part001`, ...).
pub fn archive_name(set: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{set}.tar.age")
    } else {
        format!("{set}.tar")
    }
}

/// `<set>.index.jsonl` (`<set>.index.age` encrypted): the index's file name.
pub fn index_name(set: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{set}.index.age")
    } else {
        format!("{set}.index.jsonl")
    }
}

/// Whether `name` (a file of a backup, or an object under a bucket's stamp) is set `set`'s archive, one of its
/// parts, or its index (`<set>.tar*`, `<set>.index.jsonl`, `<set>.index.age`).
pub fn is_file_of_set(name: &[u8], set: &str) -> bool {
    name.strip_prefix(set.as_bytes()).is_some_and(|rest| {
        rest.starts_with(b".tar") || rest == b".index.jsonl" || rest == b".index.age"
    })
}

/// Whether `name` is some set's archive, one of its parts, or its index ([`is_file_of_set`] of some set).
pub fn is_set_file(name: &[u8]) -> bool {
    name.windows(4).skip(1).any(|w| w == b".tar")
        || name.ends_with(b".index.jsonl")
        || name.ends_with(b".index.age")
}

/// `.tmp-<stamp>-<pid>`: where a run writes its backup until it is verified.
pub fn temp_name(stamp: &str, pid: u32) -> String {
    format!("{TEMP_PREFIX}{stamp}-{pid}")
}

/// `.trash-<stamp>-<pid>`: a backup on its way out.
pub fn trash_name(stamp: &str, pid: u32) -> String {
    format!("{TRASH_PREFIX}{stamp}-{pid}")
}

/// `<prefix><stamp>-<digits>` exactly.
fn parse_stamp_pid(name: &str, prefix: &str) -> Option<(NaiveDateTime, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let stamp = rest.get(..snapshot::STAMP_LEN)?;
    let pid = rest.get(snapshot::STAMP_LEN..)?.strip_prefix('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((snapshot::parse_stamp(stamp)?, pid.parse().ok()?))
}

/// The pid in a leftover's name (`.tmp-<stamp>-<pid>`, `.trash-<stamp>-<pid>`, `.latest.tmp-<pid>`).
pub fn leftover_pid(name: &str) -> Option<u32> {
    if let Some((_, pid)) =
        parse_stamp_pid(name, TEMP_PREFIX).or_else(|| parse_stamp_pid(name, TRASH_PREFIX))
    {
        return Some(pid);
    }
    [".latest.tmp-", ".LATEST.tmp-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(|pid| pid.parse().ok())
}

/// Whether the run named in leftover `name` is still going: a dbackup (say with another config) writing to the same
/// drive right now. Not a leftover yet: left alone.
pub fn leftover_in_use(name: &str) -> bool {
    leftover_pid(name).is_some_and(crate::stdx::another_dbackup)
}

/// The kinds of leftovers an interrupted run can leave in `backups/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftoverKind {
    /// A backup that was being written (`.tmp-<stamp>-<pid>`): never verified, never promoted.
    Temporary,
    /// A backup that was being deleted (`.trash-<stamp>-<pid>`).
    Trash,
    /// A `latest` link or `LATEST` file that was being replaced (`.latest.tmp-<pid>`, `.LATEST.tmp-<pid>`).
    LatestTemporary,
}

/// What a name in `backups/` is, by its shape alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Exactly a stamp: a backup, if it is a directory with valid metadata.
    Stamp(NaiveDateTime),
    Leftover(LeftoverKind),
    /// `latest` or `LATEST`.
    Latest,
    /// The destination marker.
    Marker,
    Other,
}

/// Classifies a name in `backups/` (see the module documentation).
pub fn classify(name: &str) -> NameKind {
    if let Some(t) = snapshot::parse_stamp(name) {
        return NameKind::Stamp(t);
    }
    if parse_stamp_pid(name, TEMP_PREFIX).is_some() {
        return NameKind::Leftover(LeftoverKind::Temporary);
    }
    if parse_stamp_pid(name, TRASH_PREFIX).is_some() {
        return NameKind::Leftover(LeftoverKind::Trash);
    }
    for prefix in [".latest.tmp-", ".LATEST.tmp-"] {
        if let Some(pid) = name.strip_prefix(prefix)
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
        {
            return NameKind::Leftover(LeftoverKind::LatestTemporary);
        }
    }
    match name {
        LATEST_LINK | LATEST_FILE => NameKind::Latest,
        _ if Some(name) == crate::media::MARKER_PATH.strip_prefix("backups/") => NameKind::Marker,
        _ => NameKind::Other,
    }
}

/// Whether a set's archive holds everything (`full`) or only what changed since the backup `base` names
/// (`incremental`, whose index is still a complete manifest pointing into earlier archives of its chain).
pub use crate::archive::ArchiveKind;

/// One set in a backup, as `backup.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetRecord {
    pub set: String,
    /// `full` (the default when absent) or `incremental`.
    #[serde(default)]
    pub kind: ArchiveKind,
    /// The stamp of the backup an incremental is based on (none for a full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The local snapshot that was archived (`<set>-<stamp>`).
    pub snapshot: String,
    /// Whether that snapshot was complete (false only with `--allow-incomplete`).
    pub snapshot_complete: bool,
    /// When that snapshot was finished, when its metadata says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_finished: Option<DateTime<FixedOffset>>,
    /// The sources inside the snapshot (and so inside the archive, at the same relative paths).
    #[serde(default)]
    pub sources: Vec<SourceRecord>,
    /// The archive: one file, or its parts in order (`cat` joins them into the tar).
    pub archive: Vec<FileRecord>,
    /// The index (JSON lines).
    pub index: Vec<FileRecord>,
    /// Length and sha256 of the tar stream (equal to the archive file's when it is one plain file; no hash when
    /// encrypted: age authenticates the stream, and a plaintext hash would let a guess of the contents be confirmed).
    pub tar_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_sha256: Option<Digest>,
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
    pub hard_links: u64,
    /// Entries left out or archived differently (sockets, files that vanished), and the first of them.
    #[serde(default)]
    pub warning_count: u64,
    #[serde(default)]
    pub warnings: Vec<Warning>,
    /// Seconds spent writing the archive and reading it back.
    #[serde(default)]
    pub write_seconds: f64,
    #[serde(default)]
    pub read_back_seconds: f64,
    /// How the archive and index are encrypted (public recipients only); none when they are plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::archive::EncryptionRecord>,
    /// How an incremental found what changed since its base (`inode`, `metadata`, `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_detection: Option<String>,
    /// On a bucket, an encrypted archive whose parts are age streams of their own (`<set>.tar.part000.age`, ...):
    /// the plaintext bytes of each part but the last (the tar stream is their plaintexts joined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_plain_bytes: Option<u64>,
}

/// How a backup was verified before it was renamed into place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBackRecord {
    /// How the archives were read back: `direct` (O_DIRECT) or `dropped_cache` (page cache dropped first).
    pub methods: Vec<ReadBackMethod>,
    /// For a FUSE filesystem (exfat-fuse): whether the block device's cache was dropped too, so the read-back reached
    /// the drive; false when it could not be (no permission to open the device), see `note`. Absent for other
    /// filesystems, where O_DIRECT or dropping the file's pages is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cache_dropped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The filesystem a backup was written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemRecord {
    pub fs_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `backups/<stamp>/backup.json`: what one external backup holds. Written only after every archive and index was read
/// back from the drive and matched; its presence (with `verified: true`) is what makes a directory a backup that
/// restore may use and retention may judge.
///
/// Versioned by `format`; readers ignore fields they do not know, so fields may be added without a new format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// Always [`BACKUP_FORMAT`] (1) for this layout.
    pub format: u32,
    /// The backup directory's name.
    pub stamp: String,
    /// The destination (config `name`) it was written for.
    pub destination: String,
    pub host: String,
    pub dbackup_version: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// True: every archive and index was read back from the drive and matched the sha256 computed while writing.
    pub verified: bool,
    pub read_back: ReadBackRecord,
    pub filesystem: FilesystemRecord,
    /// The sums file's name (`verification.sha256`). It covers every archive part, every index and `backup.json`; it
    /// is written after this file, so this file cannot name its hash.
    pub sums_file: String,
    pub sets: Vec<SetRecord>,
    /// The `system/` folder: the recovery kit and partition images (`crate::image`), when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::image::layout::SystemRecord>,
    /// Every other backup (stamp) whose archives this backup's manifests point into: it cannot be restored without
    /// them, so retention keeps them as long as it keeps this one. Empty for a backup of full archives only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl BackupMeta {
    /// The names of the sets this backup holds.
    pub fn set_names(&self) -> Vec<String> {
        self.sets.iter().map(|s| s.set.clone()).collect()
    }
}

/// Why reading `backup.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The I/O error is part of the message, and also its `source`, so that its kind is known up the chain (a full
    /// drive: `stdx::fs::filled_up`); `ui::format_error` does not repeat it.
    #[error("cannot {action} {}: {error}", show(.path.as_os_str().as_encoded_bytes()))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{} is not valid backup metadata: {message}", show(.path.as_os_str().as_encoded_bytes()))]
    BadMetadata { path: PathBuf, message: String },
    /// Something on the drive is not what dbackup reads or writes: a symlink, a mount point, a FIFO, too large.
    #[error(transparent)]
    Refused(#[from] FsError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |error| LayoutError::Io {
        action,
        path,
        error,
    }
}

/// Reads a backup's `backup.json` (see [`parse_metadata`]): a regular file, not a symlink, at most
/// [`MAX_METADATA_BYTES`].
pub fn read_metadata(path: &Path) -> Result<BackupMeta, LayoutError> {
    let bytes = crate::stdx::fs::read_bounded(path, MAX_METADATA_BYTES)?;
    parse_metadata(&bytes, path)
}

/// Reads `backup.json` in a backup's directory (see [`read_metadata`]).
pub fn read_metadata_in(dir: &Dir) -> Result<BackupMeta, LayoutError> {
    let bytes = dir.read_bounded(METADATA_FILE, MAX_METADATA_BYTES)?;
    parse_metadata(&bytes, &dir.join(METADATA_FILE))
}

/// Why the directory `name` is not a backup although its `backup.json` was read: it describes another backup, or says
/// that backup was not verified (the run that wrote it did not finish checking it); `None` when it is one. The rule
/// every reader of a drive's backups follows.
pub fn not_a_backup(name: &str, meta: &BackupMeta) -> Option<String> {
    if meta.stamp != name {
        Some(format!(
            "its {METADATA_FILE} describes backup {}",
            show(meta.stamp.as_bytes())
        ))
    } else if !meta.verified {
        Some(format!("its {METADATA_FILE} says it was not verified"))
    } else {
        None
    }
}

/// Parses the bytes of a `backup.json` found at `path` (named in errors): the format checked, then every name and
/// number that is used to open files or add up sizes ([`BackupMeta::check`]).
pub fn parse_metadata(bytes: &[u8], path: &Path) -> Result<BackupMeta, LayoutError> {
    let bad = |message: String| LayoutError::BadMetadata {
        path: path.to_path_buf(),
        message,
    };
    let meta: BackupMeta = serde_json::from_slice(bytes).map_err(|e| bad(show_str_err(&e)))?;
    if meta.format != BACKUP_FORMAT {
        return Err(bad(format!(
            "format {} is not supported by this dbackup (it reads format {BACKUP_FORMAT})",
            meta.format
        )));
    }
    meta.check().map_err(bad)?;
    Ok(meta)
}

/// A JSON error as text safe to print (serde quotes what it found, which comes from the drive).
fn show_str_err(e: &serde_json::Error) -> String {
    crate::stdx::show_str(&e.to_string())
}

/// Whether `name` is a plain file name: not empty, no `/`, not `.` or `..`, no NUL, at most 255 bytes. Every name
/// `backup.json` gives for a file to open must be one, so that it names a file inside the backup's own directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\0'])
}

impl BackupMeta {
    /// Checks what readers act on: the sums file and every archive and index name are plain names
    /// ([`is_plain_name`]); set names follow the config's rules (`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`, at most 64) and
    /// appear once; byte counts and their sums stay within [`MAX_RECORDED_BYTES`]. The error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !is_plain_name(&self.sums_file) {
            return Err(format!(
                "sums_file \"{}\" is not a plain file name",
                show(self.sums_file.as_bytes())
            ));
        }
        let mut total = 0u64;
        let add = |total: u64, n: u64, field: &dyn Fn() -> String| {
            total
                .checked_add(n)
                .filter(|t| *t <= MAX_RECORDED_BYTES)
                .ok_or_else(|| {
                    format!(
                        "{} is {n}: the sizes add up to more than {MAX_RECORDED_BYTES} bytes",
                        field()
                    )
                })
        };
        let mut sums = [0u64; 4];
        for (i, s) in self.sets.iter().enumerate() {
            if !crate::settings::is_safe_name(&s.set) {
                return Err(format!(
                    "sets[{i}].set \"{}\" is not a set name (letters, digits, `_`, `-` and `.`, starting with a \
                     letter, digit or `_`, at most 64 bytes)",
                    show(s.set.as_bytes())
                ));
            }
            if self.sets[..i].iter().any(|o| o.set == s.set) {
                return Err(format!("sets[{i}].set \"{}\" appears twice", s.set));
            }
            for (what, files) in [("archive", &s.archive), ("index", &s.index)] {
                for (j, f) in files.iter().enumerate() {
                    if !is_plain_name(&f.name) {
                        return Err(format!(
                            "sets[{i}].{what}[{j}].name \"{}\" is not a plain file name (it must name a file in the \
                             backup's own directory)",
                            show(f.name.as_bytes())
                        ));
                    }
                    total = add(total, f.bytes, &|| format!("sets[{i}].{what}[{j}].bytes"))?;
                    if let Some(head) = &f.age_head {
                        if !crate::archive::crypt::is_encrypted_name(f.name.as_bytes()) {
                            return Err(format!(
                                "sets[{i}].{what}[{j}].age_head is given for an object that is not an age stream \
                                 (its name does not end in .age): backup.json was altered or damaged"
                            ));
                        }
                        crate::archive::crypt::decode_head(head).map_err(|e| {
                            format!("sets[{i}].{what}[{j}].age_head {e}: backup.json was altered or damaged")
                        })?;
                    }
                }
            }
            for (k, (field, n)) in [
                ("tar_bytes", s.tar_bytes),
                ("file_bytes", s.file_bytes),
                ("entries", s.entries),
                ("files", s.files),
            ]
            .into_iter()
            .enumerate()
            {
                sums[k] = add(sums[k], n, &|| format!("sets[{i}].{field}"))?;
            }
        }
        // Chains: every stamp named is a stamp (a plain name of `backups/`), never the backup itself.
        let stamps = self
            .sets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((format!("sets[{i}].base"), s.base.as_ref()?)))
            .chain(
                self.depends_on
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (format!("depends_on[{i}]"), d)),
            );
        for (field, stamp) in stamps {
            if snapshot::parse_stamp(stamp).is_none() || *stamp == self.stamp {
                return Err(format!(
                    "{field} \"{}\" is not the stamp of another backup (YYYY-MM-DD-HHMMSS)",
                    show(stamp.as_bytes())
                ));
            }
        }
        // The chain: every stamp depended on is a stamp older than this backup's, and each incremental set's base
        // is among them (a backup never depends on itself, so no chain can be a cycle).
        let own = crate::snapshot::parse_stamp(&self.stamp);
        if self.depends_on.len() > crate::archive::index::MAX_DEPENDS_ON {
            return Err(format!(
                "depends_on lists {} backups, more than {}",
                self.depends_on.len(),
                crate::archive::index::MAX_DEPENDS_ON
            ));
        }
        for (i, d) in self.depends_on.iter().enumerate() {
            match crate::snapshot::parse_stamp(d) {
                Some(t) if own.is_none_or(|o| t < o) => {}
                _ => {
                    return Err(format!(
                        "depends_on[{i}] \"{}\" is not the stamp of an earlier backup",
                        show(d.as_bytes())
                    ));
                }
            }
        }
        for (i, s) in self.sets.iter().enumerate() {
            match (s.kind, &s.base) {
                (ArchiveKind::Full, None) => {}
                (ArchiveKind::Incremental, Some(b)) if self.depends_on.contains(b) => {}
                (ArchiveKind::Full, Some(_)) => {
                    return Err(format!("sets[{i}] is a full archive with a base"));
                }
                (ArchiveKind::Incremental, _) => {
                    return Err(format!(
                        "sets[{i}] is incremental without a base that depends_on lists"
                    ));
                }
            }
        }
        // The `system/` folder (crate::image): plain names, each image once, sizes within bounds.
        if let Some(system) = &self.system {
            for (i, image) in system.images.iter().enumerate() {
                if system.images[..i].iter().any(|o| o.name == image.name) {
                    return Err(format!(
                        "system.images[{i}].name \"{}\" appears twice",
                        show(image.name.as_bytes())
                    ));
                }
            }
            for f in system.files() {
                if !is_plain_name(&f.name) {
                    return Err(format!(
                        "system file \"{}\" is not a plain file name",
                        show(f.name.as_bytes())
                    ));
                }
                total = add(total, f.bytes, &|| {
                    format!("system file {}", show(f.name.as_bytes()))
                })?;
            }
        }
        Ok(())
    }

    /// The bytes of every file it records: archives, indexes and `system/` (fits: [`BackupMeta::check`]).
    pub fn bytes_on_drive(&self) -> u64 {
        let system = self
            .system
            .iter()
            .flat_map(|s| s.files())
            .fold(0u64, |t, f| t.saturating_add(f.bytes));
        self.file_bytes_on_drive().saturating_add(system)
    }

    /// The bytes of every archive and index file (fits: [`BackupMeta::check`]).
    pub fn file_bytes_on_drive(&self) -> u64 {
        self.sets
            .iter()
            .flat_map(SetRecord::files)
            .fold(0u64, |t, f| t.saturating_add(f.bytes))
    }
}

impl SetRecord {
    /// Its files: the archive's part(s), then the index's.
    pub fn files(&self) -> impl Iterator<Item = &FileRecord> {
        self.archive.iter().chain(&self.index)
    }

    /// Its files' lines in the sums file (`verification.sha256`).
    pub fn sum_lines(&self) -> impl Iterator<Item = crate::archive::sums::SumLine> + '_ {
        self.files().map(|f| crate::archive::sums::SumLine {
            sha256: f.sha256,
            name: f.name.clone().into_bytes(),
        })
    }

    /// The bytes of its archive file(s) (fits: [`BackupMeta::check`]).
    pub fn archive_bytes(&self) -> u64 {
        self.archive
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.bytes))
    }
}

/// The bytes of a `backup.json` as written: pretty JSON and a newline.
pub fn metadata_bytes(meta: &BackupMeta) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(meta).expect("metadata serialises");
    bytes.push(b'\n');
    bytes
}

/// A backup directory found in `backups/`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveBackup {
    pub name: String,
    pub time: NaiveDateTime,
    pub path: PathBuf,
    /// Its metadata, when readable, of this stamp, and verified.
    pub meta: Option<BackupMeta>,
    /// Why there is no usable metadata.
    pub meta_error: Option<String>,
}

/// A leftover of an interrupted run, with the bytes it holds (what removing it frees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub name: String,
    pub kind: LeftoverKind,
    pub bytes: u64,
    /// The dbackup process named in it is still running on this machine (another config writing to the same
    /// drive): not a leftover yet, left alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_use: bool,
}

/// The bytes removing `leftovers` frees: their sum, saturating (a drive's sparse files may claim 8 EiB each).
pub fn leftover_bytes(leftovers: &[Leftover]) -> u64 {
    leftovers
        .iter()
        .map(|l| l.bytes)
        .fold(0u64, u64::saturating_add)
}

/// Everything in a destination's `backups/`. `B` is what a backup is to the reader: the directory found
/// ([`DriveBackup`]), or restore's view of it with its sets (`restore::drive::DriveBackup`, which adds the backups
/// still being written).
#[derive(Debug, Clone, PartialEq)]
pub struct DriveListing<B = DriveBackup> {
    /// Whether `backups/` exists.
    pub exists: bool,
    /// Directories named exactly a stamp, oldest first (with or without usable metadata).
    pub backups: Vec<B>,
    pub leftovers: Vec<Leftover>,
    /// What `latest`/`LATEST` names now.
    pub latest: Option<String>,
    /// Everything else (never touched), sorted.
    pub other: Vec<String>,
}

impl<B> Default for DriveListing<B> {
    fn default() -> DriveListing<B> {
        DriveListing {
            exists: false,
            backups: Vec::new(),
            leftovers: Vec::new(),
            latest: None,
            other: Vec::new(),
        }
    }
}

impl DriveListing {
    /// The backups that carry verified metadata.
    pub fn verified(&self) -> impl Iterator<Item = &DriveBackup> {
        self.backups.iter().filter(|b| b.meta.is_some())
    }

    /// What the verified backup `backup` records of `set` (from its `backup.json`), when it holds that set.
    pub fn set_record(&self, backup: &str, set: &str) -> Option<&SetRecord> {
        self.backups
            .iter()
            .find(|b| b.name == backup)
            .and_then(|b| b.meta.as_ref())
            .and_then(|m| m.sets.iter().find(|s| s.set == set))
    }
}

/// The one note counting the `more` directories without usable `backup.json` left out of a list that named the first
/// [`stdx::NAMED`](crate::stdx::NAMED) (a junk or messy drive may hold any number of them), saying `what` is done with
/// them; `None` when none was left out.
pub fn unusable_rest(more: usize, what: &str) -> Option<String> {
    (more > 0).then_some(())?;
    Some(format!(
        "{} in {BACKUPS_DIR}/ without usable {METADATA_FILE}, {what}",
        crate::stdx::counted(more as u64, "more directory", "more directories")
    ))
}

/// Opens `<root>/backups` for reading or writing: `None` when it does not exist. Refused (with the path named) when
/// it is a symlink, not a directory, or on another filesystem than `root`: everything dbackup reads or writes on a
/// destination stays inside it.
pub fn open_backups(root: &Dir) -> Result<Option<Dir>, LayoutError> {
    match root.sub(BACKUPS_DIR) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// [`open_backups`] of the destination at `root` (opened as the system resolves it: the configured path).
pub fn open_backups_at(root: &Path) -> Result<Option<Dir>, LayoutError> {
    open_backups(&Dir::open(root)?)
}

/// The verified backups with a set whose archive or index file is missing, not a regular file, or not the size
/// `backup.json` records (one `lstat` each: contents are checked by `restore --verify`), with why.
pub fn damaged_files(
    backups_dir: &Path,
    listing: &DriveListing,
) -> std::collections::BTreeMap<String, String> {
    listing
        .backups
        .iter()
        .filter_map(|b| {
            let why = damaged_file(&backups_dir.join(&b.name), b.meta.as_ref()?)?;
            Some((b.name.clone(), why))
        })
        .collect()
}

/// Why the backup in `dir` described by `meta` is damaged to one `lstat` per file (see [`damaged_files`]); `None`
/// when every file is there, of its recorded size.
pub fn damaged_file(dir: &Path, meta: &BackupMeta) -> Option<String> {
    // Names were checked to be plain (`BackupMeta::check`).
    damaged_by(meta, |name| {
        match std::fs::symlink_metadata(dir.join(name)) {
            Ok(md) if md.is_file() => Held::Bytes(md.len()),
            Ok(_) => Held::NotAFile,
            Err(e) => Held::Absent(format!("cannot be read: {e}")),
        }
    })
}

/// What a destination holds under one of a backup's file names, for [`damaged_by`].
pub(crate) enum Held {
    /// A file (an object) of this size.
    Bytes(u64),
    /// Something that is not a regular file.
    NotAFile,
    /// Nothing that can be read, and why ("cannot be read: ...", "is not in the bucket").
    Absent(String),
}

/// Why the backup `meta` describes is damaged: the first of its archive and index files that `held` says is
/// missing, not a file, or not the size `meta` records, in words, escaped (the names and errors come from the
/// destination); `None` when every one is there, of its recorded size. The one verdict for a drive ([`damaged_file`],
/// an `lstat` each) and a bucket (`external::bucket::damaged_objects`, the sizes its listing gave).
pub(crate) fn damaged_by(meta: &BackupMeta, mut held: impl FnMut(&str) -> Held) -> Option<String> {
    meta.sets.iter().flat_map(SetRecord::files).find_map(|f| {
        let why = match held(&f.name) {
            Held::Bytes(n) if n == f.bytes => return None,
            Held::Bytes(n) => format!("{} is {n} bytes, not the {} recorded", f.name, f.bytes),
            Held::NotAFile => format!("{} is not a regular file", f.name),
            Held::Absent(why) => format!("{} {why}", f.name),
        };
        Some(crate::stdx::show_str(&why))
    })
}

/// Lists the `backups/` directory at `backups_dir`, the path trusted as given (tests, tools). dbackup itself lists
/// what [`open_backups`] opened, with [`list_in`]. A missing directory lists nothing.
pub fn list(backups_dir: &Path) -> Result<DriveListing, LayoutError> {
    match Dir::open(backups_dir) {
        Ok(d) => list_in(&d),
        Err(e) if e.is_not_found() => Ok(DriveListing::default()),
        Err(e) => Err(e.into()),
    }
}

/// Lists an open `backups/` (see the module documentation for what counts as what). Each backup's directory is
/// reached without following a symlink and on the same filesystem (else it is *other*), and its `backup.json` read
/// as [`read_metadata_in`] does.
pub fn list_in(backups: &Dir) -> Result<DriveListing, LayoutError> {
    let mut out = DriveListing {
        exists: true,
        ..Default::default()
    };
    for (name, file_type) in backups.entries()? {
        let Some(name) = name.to_str().map(str::to_owned) else {
            out.other.push(show(name.as_encoded_bytes()));
            continue;
        };
        let path = backups.join(&name);
        match classify(&name) {
            NameKind::Stamp(time) if file_type == rustix::fs::FileType::Directory => {
                let dir = match backups.sub(&name) {
                    Ok(d) => d,
                    // A mount point, or swapped for a link since the listing: not a backup, never touched.
                    Err(_) => {
                        out.other.push(name);
                        continue;
                    }
                };
                let (meta, meta_error) = match read_metadata_in(&dir).map_err(|e| e.to_string()) {
                    Ok(m) => match not_a_backup(&name, &m) {
                        Some(why) => (None, Some(why)),
                        None => (Some(m), None),
                    },
                    Err(e) => (None, Some(e)),
                };
                out.backups.push(DriveBackup {
                    name,
                    time,
                    path,
                    meta,
                    meta_error,
                });
            }
            NameKind::Leftover(kind) => {
                let bytes = backups.tree_bytes(&name);
                out.leftovers.push(Leftover {
                    name,
                    kind,
                    bytes,
                    in_use: false,
                });
            }
            NameKind::Latest | NameKind::Marker => {}
            NameKind::Stamp(_) | NameKind::Other => out.other.push(show(name.as_bytes())),
        }
    }
    out.backups
        .sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.name.cmp(&b.name)));
    out.leftovers.sort_by(|a, b| a.name.cmp(&b.name));
    out.other.sort();
    out.latest = read_latest_in(backups);
    Ok(out)
}

/// The backup `latest` (a symlink) or `LATEST` (a text file) in `backups_dir` names (see [`read_latest_in`]).
pub fn read_latest(backups_dir: &Path) -> Option<String> {
    read_latest_in(&Dir::open(backups_dir).ok()?)
}

/// The backup `latest` (a symlink, never followed) or `LATEST` (a regular file of at most [`MAX_LATEST_BYTES`])
/// names, when it names a stamp. The symlink wins.
pub fn read_latest_in(backups: &Dir) -> Option<String> {
    let from_link = backups
        .read_link(LATEST_LINK)
        .ok()
        .flatten()
        .and_then(|t| latest_from_link(&t));
    let from_file = || parse_latest(&backups.read_bounded(LATEST_FILE, MAX_LATEST_BYTES).ok()?);
    from_link.or_else(from_file)
}

/// The stamp a `latest` link's target names: its last component, when that is a stamp.
pub fn latest_from_link(target: &[u8]) -> Option<String> {
    let t = PathBuf::from(std::ffi::OsString::from_vec(target.to_vec()));
    let name = t.file_name()?.to_str()?;
    snapshot::parse_stamp(name).map(|_| name.to_string())
}

/// The stamp a `LATEST` file holds: its first line, trimmed, when that is a stamp.
pub fn parse_latest(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().next()?.trim();
    snapshot::parse_stamp(line).map(|_| line.to_string())
}

/// How `latest` is recorded on a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatestKind {
    /// `backups/latest -> <stamp>`.
    Symlink,
    /// `backups/LATEST` holding `<stamp>\n`.
    File,
}

impl LatestKind {
    pub fn file_name(self) -> &'static str {
        match self {
            LatestKind::Symlink => LATEST_LINK,
            LatestKind::File => LATEST_FILE,
        }
    }
}

/// Points `latest` at `stamp`, atomically (a new link or file at a temporary name, renamed over the old one, the
/// directory fsynced). `Symlink` falls back to `File` when the filesystem refuses symlinks. The other kind, when it
/// exists from an earlier run, is removed afterwards so that it cannot name an older backup. Returns the kind written.
pub fn write_latest(
    backups: &Dir,
    stamp: &str,
    kind: LatestKind,
) -> Result<LatestKind, LayoutError> {
    let pid = std::process::id();
    let written = match kind {
        LatestKind::Symlink => {
            let tmp = format!(".latest.tmp-{pid}");
            let _ = backups.unlink(&tmp);
            match backups.symlink(stamp, &tmp) {
                Ok(()) => {
                    if let Err(e) = backups.rename(&tmp, LATEST_LINK, false) {
                        let _ = backups.unlink(&tmp);
                        return Err(e.into());
                    }
                    LatestKind::Symlink
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                    ) =>
                {
                    write_latest_file(backups, stamp)?
                }
                Err(e) => return Err(io_err("create symlink", &backups.join(&tmp))(e)),
            }
        }
        LatestKind::File => write_latest_file(backups, stamp)?,
    };
    // The other kind, if an earlier run left one, would name an older backup.
    let other = match written {
        LatestKind::Symlink => LATEST_FILE,
        LatestKind::File => LATEST_LINK,
    };
    if let Some(t) = backups.file_type(other)? {
        let ours = match written {
            LatestKind::Symlink => t == rustix::fs::FileType::RegularFile,
            LatestKind::File => t == rustix::fs::FileType::Symlink,
        };
        if ours {
            backups.unlink(other)?;
        }
    }
    backups.fsync()?;
    Ok(written)
}

fn write_latest_file(backups: &Dir, stamp: &str) -> Result<LatestKind, LayoutError> {
    let tmp = format!(".LATEST.tmp-{}", std::process::id());
    let _ = backups.unlink(&tmp);
    let result = (|| {
        let mut f = backups.create_file(&tmp, 0o644)?;
        f.write_all(format!("{stamp}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err("write", &backups.join(&tmp))(e))?;
        drop(f);
        backups.rename(&tmp, LATEST_FILE, false)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = backups.unlink(&tmp);
        return Err(e);
    }
    Ok(LatestKind::File)
}

/// Writes a new file `name` in `dir` (never replacing one, never through a symlink), fsyncs it, and returns its
/// record.
pub fn write_new_file(dir: &Dir, name: &str, bytes: &[u8]) -> Result<FileRecord, LayoutError> {
    let mut f = dir.create_file(name, 0o600)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &dir.join(name)))?;
    Ok(FileRecord {
        name: name.to_string(),
        bytes: bytes.len() as u64,
        sha256: Digest::of_bytes(bytes),
        age_head: None,
    })
}

/// Removes a backup crash-safely: renamed to `.trash-<stamp>-<pid>` first (so it is never listed half-deleted; a
/// crash leaves a leftover the next run removes), then its tree. Only a directory named exactly a stamp is accepted.
pub fn delete_backup(backups: &Dir, name: &str) -> Result<(), LayoutError> {
    if snapshot::parse_stamp(name).is_none() {
        return Err(io_err("delete", &backups.join(name))(io::Error::other(
            "not a backup name; refusing to delete it",
        )));
    }
    // A directory on this filesystem, never a link or a mount point.
    drop(backups.sub(name)?);
    let trash = trash_name(name, std::process::id());
    backups.rename(name, &trash, true)?;
    backups.fsync()?;
    remove_leftover(backups, &trash)
}

/// Removes a leftover (by name, which must have a leftover's exact shape) and its tree, following no symlink and
/// crossing no mount point.
pub fn remove_leftover(backups: &Dir, name: &str) -> Result<(), LayoutError> {
    if !matches!(classify(name), NameKind::Leftover(_)) {
        return Err(io_err("remove", &backups.join(name))(io::Error::other(
            "not a leftover of dbackup; refusing to remove it",
        )));
    }
    backups.remove_tree(name)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    fn open(p: &Path) -> Dir {
        Dir::open(p).unwrap()
    }

    /// A leftover of another dbackup binary that runs (another version's, as during an upgrade, whose
    /// `/proc/<pid>/exe` is not this one's) is still in use; one of a process of another name is not.
    #[test]
    fn a_leftover_of_another_dbackup_binary_that_runs_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("dbackup");
        fs::copy("/bin/sleep", &other).unwrap();
        let spawn = |p: &Path| std::process::Command::new(p).arg("30").spawn().unwrap();
        for (program, in_use) in [(other.as_path(), true), (Path::new("/bin/sleep"), false)] {
            let mut child = spawn(program);
            let name = format!(".tmp-2026-12-07-010000-{}", child.id());
            assert_eq!(leftover_in_use(&name), in_use, "{}", program.display());
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(!leftover_in_use(&name), "{} ended", program.display());
        }
        assert!(!leftover_in_use(&format!(
            ".tmp-2026-12-07-010000-{}",
            std::process::id()
        )));
    }

    fn t(s: &str) -> NaiveDateTime {
        snapshot::parse_stamp(s).unwrap()
    }

    pub(crate) fn meta(stamp: &str, sets: &[&str]) -> BackupMeta {
        let now = chrono::Local::now().fixed_offset();
        BackupMeta {
            format: BACKUP_FORMAT,
            depends_on: Vec::new(),
            stamp: stamp.into(),
            destination: "T9".into(),
            host: "ws".into(),
            dbackup_version: "0".into(),
            started: now,
            finished: now,
            verified: true,
            read_back: ReadBackRecord {
                methods: vec![ReadBackMethod::Direct],
                device_cache_dropped: None,
                note: None,
            },
            filesystem: FilesystemRecord {
                fs_type: "exfat".into(),
                label: Some("T9".into()),
                uuid: None,
            },
            sums_file: SUMS_FILE.into(),
            sets: sets
                .iter()
                .map(|s| SetRecord {
                    set: s.to_string(),
                    kind: Default::default(),
                    base: None,
                    snapshot: format!("{s}-{stamp}"),
                    snapshot_complete: true,
                    snapshot_finished: None,
                    sources: vec![],
                    archive: vec![],
                    index: vec![],
                    tar_bytes: 0,
                    tar_sha256: Some(Digest::of_bytes(b"")),
                    entries: 0,
                    files: 0,
                    file_bytes: 0,
                    hard_links: 0,
                    warning_count: 0,
                    warnings: vec![],
                    write_seconds: 0.0,
                    read_back_seconds: 0.0,
                    encryption: None,
                    change_detection: None,
                    part_plain_bytes: None,
                })
                .collect(),
            system: None,
        }
    }

    #[test]
    fn names_are_classified_by_exact_shape() {
        let cases = [
            ("2025-04-01-031500", NameKind::Stamp(t("2025-04-01-031500"))),
            (
                ".tmp-2025-04-01-031500-42",
                NameKind::Leftover(LeftoverKind::Temporary),
            ),
            (
                ".trash-2025-04-01-031500-7",
                NameKind::Leftover(LeftoverKind::Trash),
            ),
            (
                ".latest.tmp-9",
                NameKind::Leftover(LeftoverKind::LatestTemporary),
            ),
            (
                ".LATEST.tmp-9",
                NameKind::Leftover(LeftoverKind::LatestTemporary),
            ),
            ("latest", NameKind::Latest),
            ("LATEST", NameKind::Latest),
            (".dbackup-destination.json", NameKind::Marker),
            // Near misses are someone else's.
            ("2025-04-01-031500x", NameKind::Other),
            ("2025-04-01", NameKind::Other),
            (".tmp-2025-04-01-031500", NameKind::Other),
            (".tmp-2025-04-01-031500-", NameKind::Other),
            (".tmp-2025-04-01-031500-4x", NameKind::Other),
            (".tmp-photos", NameKind::Other),
            (".trash-", NameKind::Other),
            (".latest.tmp-", NameKind::Other),
            ("tmp-2025-04-01-031500-1", NameKind::Other),
            ("photos", NameKind::Other),
            ("latest.txt", NameKind::Other),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name}");
        }
        assert_eq!(
            temp_name("2025-04-01-031500", 42),
            ".tmp-2025-04-01-031500-42"
        );
        assert_eq!(
            classify(&trash_name("2025-04-01-031500", 1)),
            NameKind::Leftover(LeftoverKind::Trash)
        );
    }

    #[test]
    fn listing_sorts_backups_leftovers_and_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        let good = |stamp: &str| {
            fs::create_dir(b.join(stamp)).unwrap();
            fs::write(
                b.join(stamp).join(METADATA_FILE),
                metadata_bytes(&meta(stamp, &["data"])),
            )
            .unwrap();
        };
        good("2025-04-02-000000");
        good("2025-04-01-000000");
        // A stamp-named directory without metadata, with another stamp's, unverified, or garbage.
        fs::create_dir(b.join("2025-04-03-000000")).unwrap();
        fs::create_dir(b.join("2025-04-04-000000")).unwrap();
        fs::write(
            b.join("2025-04-04-000000").join(METADATA_FILE),
            metadata_bytes(&meta("2025-04-01-000000", &["data"])),
        )
        .unwrap();
        fs::create_dir(b.join("2025-04-05-000000")).unwrap();
        let mut unverified = meta("2025-04-05-000000", &["data"]);
        unverified.verified = false;
        fs::write(
            b.join("2025-04-05-000000").join(METADATA_FILE),
            metadata_bytes(&unverified),
        )
        .unwrap();
        fs::create_dir(b.join("2025-04-06-000000")).unwrap();
        fs::write(b.join("2025-04-06-000000").join(METADATA_FILE), "{").unwrap();
        // A file and a symlink with stamp names are not backups.
        fs::write(b.join("2025-04-07-000000"), "file").unwrap();
        std::os::unix::fs::symlink("2025-04-01-000000", b.join("2025-04-08-000000")).unwrap();
        fs::create_dir_all(b.join(".tmp-2025-04-09-000000-5/x")).unwrap();
        fs::write(
            b.join(".tmp-2025-04-09-000000-5/x/data.tar"),
            vec![0u8; 1000],
        )
        .unwrap();
        fs::create_dir(b.join(".trash-2025-03-01-000000-5")).unwrap();
        fs::create_dir(b.join("notes")).unwrap();
        std::os::unix::fs::symlink("2025-04-02-000000", b.join("latest")).unwrap();

        let l = list(b).unwrap();
        assert!(l.exists);
        let names: Vec<(&str, bool)> = l
            .backups
            .iter()
            .map(|x| (x.name.as_str(), x.meta.is_some()))
            .collect();
        assert_eq!(
            names,
            [
                ("2025-04-01-000000", true),
                ("2025-04-02-000000", true),
                ("2025-04-03-000000", false),
                ("2025-04-04-000000", false),
                ("2025-04-05-000000", false),
                ("2025-04-06-000000", false),
            ]
        );
        assert!(
            l.backups[3]
                .meta_error
                .as_deref()
                .unwrap()
                .contains("describes backup 2025-04-01"),
            "{:?}",
            l.backups[3].meta_error
        );
        assert!(
            l.backups[4]
                .meta_error
                .as_deref()
                .unwrap()
                .contains("not verified")
        );
        assert_eq!(
            l.leftovers,
            [
                Leftover {
                    name: ".tmp-2025-04-09-000000-5".into(),
                    kind: LeftoverKind::Temporary,
                    bytes: 1000,
                    in_use: false,
                },
                Leftover {
                    name: ".trash-2025-03-01-000000-5".into(),
                    kind: LeftoverKind::Trash,
                    bytes: 0,
                    in_use: false,
                },
            ]
        );
        assert_eq!(l.other, ["2025-04-07-000000", "2025-04-08-000000", "notes"]);
        assert_eq!(l.latest.as_deref(), Some("2025-04-02-000000"));
        assert_eq!(list(&b.join("missing")).unwrap(), DriveListing::default());
    }

    #[test]
    fn latest_as_symlink_or_file_replaces_the_other_kind() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        assert_eq!(read_latest(b), None);
        assert_eq!(
            write_latest(&open(b), "2025-04-01-000000", LatestKind::File).unwrap(),
            LatestKind::File
        );
        assert_eq!(
            fs::read_to_string(b.join(LATEST_FILE)).unwrap(),
            "2025-04-01-000000\n"
        );
        assert_eq!(read_latest(b).as_deref(), Some("2025-04-01-000000"));
        assert_eq!(
            write_latest(&open(b), "2025-04-02-000000", LatestKind::Symlink).unwrap(),
            LatestKind::Symlink
        );
        assert_eq!(
            fs::read_link(b.join(LATEST_LINK)).unwrap(),
            Path::new("2025-04-02-000000")
        );
        assert!(
            !b.join(LATEST_FILE).exists(),
            "the stale LATEST file is gone"
        );
        assert_eq!(read_latest(b).as_deref(), Some("2025-04-02-000000"));
        write_latest(&open(b), "2025-04-03-000000", LatestKind::File).unwrap();
        assert!(
            fs::symlink_metadata(b.join(LATEST_LINK)).is_err(),
            "the stale link is gone"
        );
        let left: Vec<_> = fs::read_dir(b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [LATEST_FILE], "no temporary left behind");
        // A LATEST that names no stamp is ignored.
        fs::write(b.join(LATEST_FILE), "../../etc\n").unwrap();
        assert_eq!(read_latest(b), None);
    }

    #[test]
    fn deletion_goes_through_trash_and_refuses_foreign_names() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        fs::create_dir_all(b.join("2025-04-01-000000/sub")).unwrap();
        fs::write(b.join("2025-04-01-000000/sub/f"), "x").unwrap();
        fs::create_dir(b.join("photos")).unwrap();
        delete_backup(&open(b), "2025-04-01-000000").unwrap();
        assert!(delete_backup(&open(b), "photos").is_err());
        assert!(remove_leftover(&open(b), "photos").is_err());
        let left: Vec<_> = fs::read_dir(b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["photos"]);
    }

    #[test]
    fn metadata_round_trips_and_refuses_other_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(METADATA_FILE);
        let m = meta("2025-04-01-000000", &["data", "config"]);
        let rec = write_new_file(&open(tmp.path()), METADATA_FILE, &metadata_bytes(&m)).unwrap();
        assert_eq!(rec.name, METADATA_FILE);
        assert_eq!(read_metadata(&p).unwrap(), m);
        assert!(
            write_new_file(&Dir::open(tmp.path()).unwrap(), METADATA_FILE, b"x").is_err(),
            "never overwrites"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        v["added_later"] = serde_json::json!(1);
        fs::write(&p, v.to_string()).unwrap();
        assert!(read_metadata(&p).is_ok(), "unknown fields are ignored");
        v["format"] = serde_json::json!(2);
        fs::write(&p, v.to_string()).unwrap();
        assert!(
            read_metadata(&p)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
    }

    /// The chain fields (`kind`, `base`, `depends_on`): absent in older metadata they mean a full backup depending on
    /// nothing; present they round-trip; a `depends_on` or `base` that is not another backup's stamp is refused.
    #[test]
    fn chain_fields_default_round_trip_and_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(METADATA_FILE);
        let mut m = meta("2025-04-02-000000", &["data"]);
        let mut v = serde_json::to_value(&m).unwrap();
        v["sets"][0].as_object_mut().unwrap().remove("kind");
        assert!(
            v.get("depends_on").is_none(),
            "empty depends_on is not written"
        );
        fs::write(&p, v.to_string()).unwrap();
        let old = read_metadata(&p).unwrap();
        assert_eq!(old.sets[0].kind, ArchiveKind::Full);
        assert_eq!(
            (old.sets[0].base.as_deref(), old.depends_on.len()),
            (None, 0)
        );

        m.sets[0].kind = ArchiveKind::Incremental;
        m.sets[0].base = Some("2025-04-01-000000".into());
        m.depends_on = vec!["2025-04-01-000000".into()];
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["sets"][0]["kind"], "incremental");
        assert_eq!(v["depends_on"][0], "2025-04-01-000000");
        fs::write(&p, v.to_string()).unwrap();
        assert_eq!(read_metadata(&p).unwrap(), m);

        for bad in ["../2025-04-01-000000", "2025-04-02-000000", "latest"] {
            let mut b = m.clone();
            b.depends_on = vec![bad.into()];
            assert!(b.check().unwrap_err().contains("depends_on[0]"), "{bad}");
            let mut b = m.clone();
            b.sets[0].base = Some(bad.into());
            assert!(b.check().unwrap_err().contains("sets[0].base"), "{bad}");
        }
    }

    /// A part's `age_head` (a bucket's encrypted part: its age header and nonce): absent in older metadata, it
    /// round-trips when present; one that is not bounded base64 of an age header, or is given for an object that is
    /// not an age stream, makes the metadata refused (it names the field) rather than reach a restore.
    #[test]
    fn an_age_head_round_trips_and_is_checked() {
        let mut m = meta("2025-04-02-000000", &["data"]);
        m.sets[0].archive = vec![FileRecord {
            name: "data.tar.part000.age".into(),
            bytes: 100,
            sha256: Digest::of_bytes(b"x"),
            age_head: None,
        }];
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["sets"][0]["archive"][0].get("age_head").is_none());
        let head =
            crate::archive::crypt::encode_head(b"age-encryption.org/v1\n-> X25519 a\nb\n--- c\n")
                .unwrap();
        m.sets[0].archive[0].age_head = Some(head);
        m.check().unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(serde_json::from_value::<BackupMeta>(v.clone()).unwrap(), m);
        for bad in ["%%%", "UEsDBA==", &"QUFB".repeat(2000)] {
            m.sets[0].archive[0].age_head = Some(bad.to_string());
            let e = m.check().unwrap_err();
            assert!(e.contains("sets[0].archive[0].age_head"), "{bad}: {e}");
        }
        // Only an age stream has one: a plain part's first bytes are never replaced.
        let mut plain = m.clone();
        plain.sets[0].archive[0].name = "data.tar.part000".into();
        plain.sets[0].archive[0].age_head = v["sets"][0]["archive"][0]["age_head"]
            .as_str()
            .map(String::from);
        assert!(plain.check().unwrap_err().contains("not an age stream"));
    }
}
