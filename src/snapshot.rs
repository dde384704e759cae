//! Local snapshots under the backup root: their names, listing, metadata files, `latest` links and in-progress directories.
//!
//! Layout of a backup root (every name here is fixed; nothing else is ever listed as a snapshot):
//!
//! ```text
//! <root>/.lock                              the run lock (src/lock.rs)
//! <root>/<set>-2025-04-01-031500/           a snapshot: mirrors absolute source paths (data/..., home/<user>/...)
//! <root>/<set>-2025-04-01-031500.json       its metadata (SnapshotMeta), beside it, never inside
//! <root>/<set>-latest -> <set>-2025-...     relative symlink to the newest promoted snapshot, replaced atomically
//! <root>/.<set>.in-progress/                the run that is copying now (or crashed: becomes .partial next run)
//! <root>/.<set>.partial/                    what an interrupted run left; only a --link-dest basis for the next run
//! <root>/.<set>.filter                      the set's exclusions as rsync filter rules, while its rsync runs
//! <root>/.trash-...                         a deletion in progress; removed by the next run if a crash interrupted it
//! <root>/.index-copies/<destination>/...    plaintext copies of encrypted indexes (src/external/index_copy.rs)
//! ```
//!
//! Snapshot names have one-second resolution. Two runs of the same set within one second cannot collide:
//! the second waits (at most a second) for the clock to reach a fresh stamp ([`fresh_stamp`]).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// `strftime` format of the stamp in snapshot names: local time, no `:` (exFAT forbids it).
pub const STAMP_FORMAT: &str = "%Y-%m-%d-%H%M%S";
/// Length of a stamp (`2025-04-01-031500`).
pub const STAMP_LEN: usize = 17;
/// The version of [`SnapshotMeta`]'s format written by this dbackup.
pub const METADATA_FORMAT: u32 = 1;
/// Prefix of entries being deleted.
pub const TRASH_PREFIX: &str = ".trash-";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read snapshot metadata {path}: {message}")]
    BadMetadata { path: PathBuf, message: String },
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// The stamp of a time: `2025-04-01-031500`.
pub fn stamp(time: NaiveDateTime) -> String {
    time.format(STAMP_FORMAT).to_string()
}

/// Parses a stamp; only the exact format is accepted (`2025-04-01-031500`, nothing before or after).
pub fn parse_stamp(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() != STAMP_LEN {
        return None;
    }
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 | 10 => *c == b'-',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    NaiveDateTime::parse_from_str(s, STAMP_FORMAT).ok()
}

/// `<set>-<stamp>`.
pub fn snapshot_name(set: &str, time: NaiveDateTime) -> String {
    format!("{set}-{}", stamp(time))
}

/// The time of a snapshot name of `set`, if `name` is exactly `<set>-<stamp>`.
pub fn parse_snapshot_name(set: &str, name: &str) -> Option<NaiveDateTime> {
    name.strip_prefix(set)?
        .strip_prefix('-')
        .and_then(parse_stamp)
}

/// Paths of everything dbackup keeps in a backup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    pub fn snapshot(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    /// `<root>/<name>.json`, beside the snapshot.
    pub fn metadata(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }
    /// `<root>/<set>-latest`.
    pub fn latest(&self, set: &str) -> PathBuf {
        self.root.join(format!("{set}-latest"))
    }
    /// `<root>/.<set>.in-progress`: where rsync writes.
    pub fn in_progress(&self, set: &str) -> PathBuf {
        self.root.join(format!(".{set}.in-progress"))
    }
    /// `<root>/.<set>.partial`: an interrupted run's copy, used only as a `--link-dest` basis.
    pub fn partial(&self, set: &str) -> PathBuf {
        self.root.join(format!(".{set}.partial"))
    }
    /// `<root>/.<set>.filter`: the set's exclusions as rsync filter rules, while its rsync runs.
    pub fn filter(&self, set: &str) -> PathBuf {
        self.root.join(format!(".{set}.filter"))
    }
}

/// Counts from rsync's `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStats {
    /// Entries in the snapshot: files, directories, symlinks, ... (rsync's "Number of files").
    pub files: u64,
    pub regular_files: u64,
    pub directories: u64,
    /// Regular files copied (new or changed); the others were hard-linked from the previous snapshot.
    pub transferred_files: u64,
    /// Size of every regular file in the snapshot.
    pub total_bytes: u64,
    /// Size of the files copied.
    pub transferred_bytes: u64,
    /// `total_bytes - transferred_bytes`: what was hard-linked from the previous snapshot instead of copied.
    pub linked_bytes: u64,
}

/// Metadata of one snapshot, stored beside it as `<root>/<name>.json`. Read by status, external and restore.
///
/// Versioned by `format`; readers ignore fields they do not know, so fields may be added without a new format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Always [`METADATA_FORMAT`] (1) for this layout.
    pub format: u32,
    pub set: String,
    /// The snapshot's directory name (`<set>-<stamp>`).
    pub name: String,
    /// True when every source was there and rsync copied everything (exit 0 or 24); false when a source was missing
    /// (see `sources[].present`) or some files were unreadable (exit 23). Read it through [`SnapshotMeta::is_complete`].
    pub complete: bool,
    /// True when file contents were compared (`--full`, rsync `--checksum`); false for an incremental (size and mtime) run.
    pub full: bool,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// Every configured source, present or not, with where it sits inside the snapshot.
    pub sources: Vec<SourceRecord>,
    /// The exclusion patterns rsync was given (one `- <pattern>` rule each, through its filter file), in order.
    #[serde(default)]
    pub exclusions: Vec<String>,
    /// Names of the snapshots (or the interrupted run's `.partial` directory) unchanged files were hard-linked from.
    #[serde(default)]
    pub link_dest: Vec<String>,
    /// True when an interrupted run's copy was reused.
    #[serde(default)]
    pub resumed: bool,
    pub rsync: RsyncRecord,
    pub stats: TransferStats,
    /// Everything worth a look: missing sources, vanished files, unreadable files, ACL/xattr support.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Files rsync could not read (exit 23): they are missing from this snapshot.
    #[serde(default)]
    pub unreadable: Vec<FileProblem>,
    /// Files that disappeared while rsync ran (exit 24).
    #[serde(default)]
    pub vanished: Vec<PathBuf>,
    pub dbackup_version: String,
}

/// A source as recorded in a snapshot's metadata. Restore accepts either name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// As written in the config (`~/data`).
    pub configured: String,
    /// Expanded (`/home/payne/data`).
    pub path: PathBuf,
    /// Symlinks resolved (`/data`): what rsync copied.
    pub resolved: PathBuf,
    /// Where it is inside the snapshot, relative to the snapshot directory (`data`).
    pub in_snapshot: PathBuf,
    /// False when the source was missing and skipped.
    pub present: bool,
}

/// How rsync ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsyncRecord {
    pub exit_code: i32,
    pub argv: Vec<String>,
    pub version: String,
    /// Whether ACLs (-A) and xattrs (-X) were copied (only where the backup root's filesystem supports them).
    pub acls: bool,
    pub xattrs: bool,
}

/// A file rsync reported a problem with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProblem {
    pub path: PathBuf,
    /// rsync's own message (`send_files failed to open "...": Permission denied (13)`).
    pub message: String,
}

impl SnapshotMeta {
    /// Complete: rsync copied every file and every source was there. (Metadata written before a missing source made
    /// a snapshot incomplete may say `complete` with a source absent: it is not.)
    pub fn is_complete(&self) -> bool {
        self.complete && self.sources.iter().all(|s| s.present)
    }

    /// The sources that were missing when it was made (as configured: `~/photos`).
    pub fn missing_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| !s.present)
            .map(|s| s.configured.as_str())
            .collect()
    }

    /// The sources it holds (their expanded paths).
    pub fn holds(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .filter(|s| s.present)
            .map(|s| s.path.clone())
            .collect()
    }

    /// Some files could not be read (rsync exit 23): incomplete for another reason than a missing source.
    pub fn has_unreadable(&self) -> bool {
        self.rsync.exit_code == 23
            || !self.unreadable.is_empty()
            || (!self.complete && self.sources.iter().all(|s| s.present))
    }

    /// Why it is incomplete, in words (empty when it is complete): `source ~/photos was missing; 2 files could not
    /// be read`.
    pub fn incompleteness(&self) -> String {
        let mut why = Vec::new();
        let missing = self.missing_sources();
        if !missing.is_empty() {
            let (word, verb) = if missing.len() == 1 {
                ("source", "was")
            } else {
                ("sources", "were")
            };
            why.push(format!("{word} {} {verb} missing", missing.join(", ")));
        }
        if self.has_unreadable() {
            why.push(format!(
                "{} could not be read",
                crate::stdx::counted(self.unreadable.len() as u64, "file", "files")
            ));
        }
        why.join("; ")
    }
}

impl SourceRecord {
    /// Where an absolute path lands inside a snapshot made with `rsync --relative`: `/data/x` -> `data/x`.
    pub fn in_snapshot_path(resolved: &Path) -> PathBuf {
        resolved.strip_prefix("/").unwrap_or(resolved).to_path_buf()
    }
}

/// Whether a snapshot can be trusted as a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// rsync copied everything.
    Complete,
    /// Promoted, but some files were unreadable (rsync exit 23).
    Incomplete,
    /// No readable metadata: not made by dbackup, or damaged. Never used, never removed.
    Unknown,
}

/// A snapshot found in the backup root.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub set: String,
    pub name: String,
    pub time: NaiveDateTime,
    pub path: PathBuf,
    pub metadata: Option<SnapshotMeta>,
    /// Why the metadata could not be read, when it could not.
    pub metadata_error: Option<String>,
}

impl Snapshot {
    pub fn state(&self) -> SnapshotState {
        match &self.metadata {
            Some(m) if m.is_complete() => SnapshotState::Complete,
            Some(_) => SnapshotState::Incomplete,
            None => SnapshotState::Unknown,
        }
    }
}

/// The snapshots of `set` in `root`, oldest first: directories (not symlinks) named exactly `<set>-<stamp>`.
/// In-progress, partial and trash directories, `latest` links and metadata files are never listed.
/// A missing root lists nothing.
pub fn list(root: &Path, set: &str) -> Result<Vec<Snapshot>, SnapshotError> {
    let layout = Layout::new(root);
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", root)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(time) = parse_snapshot_name(set, &name) else {
            continue;
        };
        let file_type = entry
            .file_type()
            .map_err(io_err("inspect", &entry.path()))?;
        if !file_type.is_dir() {
            continue;
        }
        let (metadata, metadata_error) = match read_metadata(&layout.metadata(&name)) {
            Ok(m) if m.name == name && m.set == set => (Some(m), None),
            Ok(m) => (
                None,
                Some(format!("it describes {} of set {}", m.name, m.set)),
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        out.push(Snapshot {
            set: set.to_string(),
            name,
            time,
            path: entry.path(),
            metadata,
            metadata_error,
        });
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The largest snapshot metadata file read (checked before reading). It lists every unreadable and vanished file,
/// so it grows with them; a million of them is about 150 MiB.
pub const MAX_METADATA_BYTES: u64 = 256 << 20;

/// Reads a metadata file: a regular file (never through a symlink, never a FIFO or a device) of at most
/// [`MAX_METADATA_BYTES`].
pub fn read_metadata(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let text = crate::stdx::fs::read_bounded(path, MAX_METADATA_BYTES).map_err(|e| {
        SnapshotError::BadMetadata {
            path: path.to_path_buf(),
            message: match &e {
                crate::stdx::fs::FsError::Io { error, .. } => error.to_string(),
                other => other.what(),
            },
        }
    })?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&text).map_err(|e| SnapshotError::BadMetadata {
            path: path.to_path_buf(),
            message: crate::stdx::show_str(&e.to_string()),
        })?;
    if meta.format != METADATA_FORMAT {
        return Err(SnapshotError::BadMetadata {
            path: path.to_path_buf(),
            message: format!(
                "format {} is not supported by this dbackup (it reads format {METADATA_FORMAT})",
                meta.format
            ),
        });
    }
    Ok(meta)
}

/// Writes a snapshot's metadata beside it, atomically: temporary name, fsync, rename, fsync of the directory.
pub fn write_metadata(root: &Path, meta: &SnapshotMeta) -> Result<PathBuf, SnapshotError> {
    let path = Layout::new(root).metadata(&meta.name);
    let mut text = serde_json::to_string_pretty(meta).expect("metadata serialises");
    text.push('\n');
    write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Writes `bytes` to `path` through a temporary name in the same directory, fsynced before and after the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SnapshotError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = format!(
        ".{}.tmp-",
        path.file_name()
            .unwrap_or(OsStr::new("file"))
            .to_string_lossy()
    );
    crate::stdx::fs::remove_dead_temporaries(dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", path)(e));
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    fsync_dir(dir)
}

/// fsyncs a directory, so that renames inside it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), SnapshotError> {
    let f = File::open(dir).map_err(io_err("open", dir))?;
    rustix::fs::fsync(&f).map_err(|e| io_err("fsync", dir)(e.into()))
}

/// Flushes everything written to the filesystem holding `dir` (one `syncfs`, instead of an fsync per file).
pub fn sync_filesystem(dir: &Path) -> Result<(), SnapshotError> {
    let f = File::open(dir).map_err(io_err("open", dir))?;
    rustix::fs::syncfs(&f).map_err(|e| io_err("sync the filesystem of", dir)(e.into()))
}

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`; plain rename would replace an empty directory).
pub fn rename_no_replace(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(SnapshotError::Exists {
            path: to.to_path_buf(),
        }),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // Filesystems without RENAME_NOREPLACE (some FUSE): check, then rename; we hold the run lock.
            if fs::symlink_metadata(to).is_ok() {
                return Err(SnapshotError::Exists {
                    path: to.to_path_buf(),
                });
            }
            fs::rename(from, to).map_err(io_err("rename", from))
        }
        Err(e) => Err(io_err("rename", from)(e.into())),
    }
}

/// Promotes the finished in-progress directory to its snapshot name and makes the rename durable.
pub fn promote(root: &Path, in_progress: &Path, name: &str) -> Result<PathBuf, SnapshotError> {
    let target = Layout::new(root).snapshot(name);
    rename_no_replace(in_progress, &target)?;
    fsync_dir(root)?;
    Ok(target)
}

/// The snapshot `<set>-latest` points at, if it is a symlink to one of that set's snapshot names.
pub fn read_latest(root: &Path, set: &str) -> Option<String> {
    let target = fs::read_link(Layout::new(root).latest(set)).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    parse_snapshot_name(set, &name).map(|_| name)
}

/// Points `<set>-latest` at `name` (relative target), atomically: a new link at a temporary name renamed over the old one.
pub fn set_latest(root: &Path, set: &str, name: &str) -> Result<(), SnapshotError> {
    let link = Layout::new(root).latest(set);
    let tmp = root.join(format!(".{set}-latest.tmp"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).map_err(io_err("create symlink", &tmp))?;
    fs::rename(&tmp, &link).map_err(io_err("replace", &link))?;
    fsync_dir(root)
}

/// Moves `path` (inside `root`) out of the way under a trash name, durably; the caller then removes the trash.
pub fn move_to_trash(root: &Path, path: &Path) -> Result<PathBuf, SnapshotError> {
    let base = path
        .file_name()
        .unwrap_or(OsStr::new("entry"))
        .to_string_lossy()
        .trim_start_matches('.')
        .to_string();
    for n in 0..1000u32 {
        let trash = root.join(format!("{TRASH_PREFIX}{base}-{}-{n}", std::process::id()));
        match rename_no_replace(path, &trash) {
            Ok(()) => {
                fsync_dir(root)?;
                return Ok(trash);
            }
            Err(SnapshotError::Exists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SnapshotError::Exists {
        path: root.join(format!("{TRASH_PREFIX}{base}")),
    })
}

/// Deletes a snapshot crash-safely: rename to trash (so it is never half-listed), remove its metadata, then the tree.
pub fn delete_snapshot(root: &Path, name: &str) -> Result<(), SnapshotError> {
    let layout = Layout::new(root);
    let trash = move_to_trash(root, &layout.snapshot(name))?;
    match fs::remove_file(layout.metadata(name)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &layout.metadata(name))(e)),
    }
    remove_tree(&trash).map_err(io_err("remove", &trash))
}

/// Removes a directory tree (or a single file or link) without following symlinks. Directories that are not
/// writable (read-only trees such as Go's module cache) are made writable first; files' modes are never touched,
/// since they may be hard links shared with other snapshots.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(
            path,
            fs::Permissions::from_mode((meta.permissions().mode() | 0o700) & 0o7777),
        )?;
    }
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        } else {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    fs::remove_dir(path)
}

/// What [`clean_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    pub removed: Vec<String>,
}

/// Removes what crashed runs left behind: trash entries, temporary `latest` links and metadata files, filter files, and
/// metadata files of `sets` whose snapshot directory does not exist (written just before a promotion that a crash
/// prevented). Call with the run lock held.
pub fn clean_leftovers(root: &Path, sets: &[&str]) -> Result<Cleanup, SnapshotError> {
    let mut cleanup = Cleanup::default();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cleanup),
        Err(e) => return Err(io_err("list", root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        let temporary = name.starts_with(TRASH_PREFIX)
            || name.starts_with(".dbackup-probe-")
            || (name.starts_with('.')
                && (name.ends_with("-latest.tmp") || name.contains(".json.tmp-")));
        let filter = sets.iter().any(|set| name == format!(".{set}.filter"));
        let orphan_metadata = name.strip_suffix(".json").is_some_and(|stem| {
            sets.iter()
                .any(|set| parse_snapshot_name(set, stem).is_some())
                && fs::symlink_metadata(root.join(stem)).is_err()
        });
        let leftover = temporary || filter || orphan_metadata;
        if leftover {
            remove_tree(&path).map_err(io_err("remove leftover", &path))?;
            cleanup.removed.push(name);
        }
    }
    if !cleanup.removed.is_empty() {
        fsync_dir(root)?;
    }
    cleanup.removed.sort();
    Ok(cleanup)
}

/// What the filesystem of the backup root lacks of what snapshots need, in words (empty: nothing): hard links
/// (each unchanged file is a link to the previous snapshot's), symlinks (`<set>-latest`, and the symlinks backed
/// up) and Unix modes (a 0600 file stays 0600). exFAT and FAT have none of the three. Probed in a temporary
/// directory `.dbackup-probe-*` in `root`, removed at once (and by [`clean_leftovers`] after a crash).
pub fn root_lacks(root: &Path) -> Result<Vec<&'static str>, SnapshotError> {
    let dir = tempfile::Builder::new()
        .prefix(".dbackup-probe-")
        .tempdir_in(root)
        .map_err(io_err("create a probe directory in", root))?;
    let file = dir.path().join("f");
    fs::write(&file, b"").map_err(io_err("create", &file))?;
    let mut lacks = Vec::new();
    let private = fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).is_ok()
        && fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600);
    if !private {
        lacks.push("Unix permissions");
    }
    if fs::hard_link(&file, dir.path().join("l")).is_err() {
        lacks.push("hard links");
    }
    if std::os::unix::fs::symlink("f", dir.path().join("s")).is_err() {
        lacks.push("symlinks");
    }
    Ok(lacks)
}

/// A snapshot name split into its set and time (`data-2025-04-01-031500`: `data`, 2025-04-01 03:15:00), whatever
/// the set; `None` when it is not `<set>-<stamp>` with a set of at least one byte.
pub fn split_snapshot_name(name: &str) -> Option<(&str, NaiveDateTime)> {
    let at = name.len().checked_sub(STAMP_LEN)?;
    let (set, stamp) = (name.get(..at)?.strip_suffix('-')?, name.get(at..)?);
    (!set.is_empty()).then_some(())?;
    Some((set, parse_stamp(stamp)?))
}

/// Whether `root` holds a snapshot directory of any set (`<set>-<stamp>`), read from its listing only.
pub fn holds_any_snapshot(root: &Path) -> bool {
    let Ok(entries) = fs::read_dir(root) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(split_snapshot_name)
            .is_some()
            && e.file_type().is_ok_and(|t| t.is_dir())
    })
}

/// Creates a directory with mode 0700 (and its missing parents).
pub fn create_private_dir(path: &Path) -> Result<(), SnapshotError> {
    crate::stdx::fs::create_private_dir(path).map_err(io_err("create", path))
}

/// A stamp no snapshot of `sets` in `root` already has: `now()`, or, when a run of one of these sets already
/// used this second, the next second (waiting for the clock to reach it, at most about a second).
pub fn fresh_stamp(root: &Path, sets: &[&str], now: impl Fn() -> NaiveDateTime) -> NaiveDateTime {
    let taken = |t: NaiveDateTime| {
        sets.iter().any(|set| {
            let name = snapshot_name(set, t);
            let layout = Layout::new(root);
            fs::symlink_metadata(layout.snapshot(&name)).is_ok()
                || fs::symlink_metadata(layout.metadata(&name)).is_ok()
        })
    };
    let mut t = truncate_to_second(now());
    for _ in 0..30 {
        if !taken(t) {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        t = truncate_to_second(now());
    }
    t
}

/// How recent a snapshot (or drive backup) dated `time` is, as the key that chooses the newest: its date, except
/// that one dated more than [`crate::schedule::FUTURE_TOLERANCE`] after `now` was made while the clock was wrong and
/// counts as older than every other (what was made since the clock was set right is newer, whatever its name says).
pub fn recency(time: NaiveDateTime, now: NaiveDateTime) -> (bool, NaiveDateTime) {
    recency_in(&chrono::Local, time, now)
}

/// [`recency`] with `time` and `now` wall-clock times of the zone `tz`. Whether `time` is after `now` is judged
/// between instants: in the hour a fall-back repeats, `time` at the earliest instant it can name and `now` at the
/// latest, so that a snapshot of the first pass is not "from the future" in the second; a time the zone skips (the
/// hour of the spring-forward, which no clock showed) is compared as it reads.
pub(crate) fn recency_in<Tz: chrono::TimeZone>(
    tz: &Tz,
    time: NaiveDateTime,
    now: NaiveDateTime,
) -> (bool, NaiveDateTime) {
    let earliest = tz
        .from_local_datetime(&time)
        .earliest()
        .map(|t| t.naive_utc());
    let latest = tz.from_local_datetime(&now).latest().map(|t| t.naive_utc());
    let (time_at, now_at) = match (earliest, latest) {
        (Some(t), Some(n)) => (t, n),
        _ => (time, now),
    };
    (time_at <= now_at + crate::schedule::FUTURE_TOLERANCE, time)
}

/// Drops sub-second precision (snapshot names have one-second resolution).
pub fn truncate_to_second(t: NaiveDateTime) -> NaiveDateTime {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// Europe/Berlin in 2026, by hand (chrono has no zone database): CET (+01:00), and CEST (+02:00) from
    /// 2026-03-29 01:00 UTC (02:00 local jumps to 03:00) to 2026-10-25 01:00 UTC (03:00 local falls back to 02:00, so
    /// 02:00-02:59 happens twice).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Berlin2026;

    impl Berlin2026 {
        fn cet() -> FixedOffset {
            FixedOffset::east_opt(3600).unwrap()
        }
        fn cest() -> FixedOffset {
            FixedOffset::east_opt(7200).unwrap()
        }
    }

    impl chrono::TimeZone for Berlin2026 {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Berlin2026
        }

        fn offset_from_local_date(&self, local: &NaiveDate) -> chrono::LocalResult<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_local_datetime(
            &self,
            local: &NaiveDateTime,
        ) -> chrono::LocalResult<FixedOffset> {
            // Each offset that maps `local` to an instant at which that offset is in force (CEST first: its
            // instant is the earlier one).
            let fits: Vec<FixedOffset> = [Self::cest(), Self::cet()]
                .into_iter()
                .filter(|o| self.offset_from_utc_datetime(&(*local - *o)) == *o)
                .collect();
            match fits[..] {
                [o] => chrono::LocalResult::Single(o),
                [a, b] => chrono::LocalResult::Ambiguous(a, b),
                _ => chrono::LocalResult::None,
            }
        }

        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            self.offset_from_utc_datetime(&utc.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            let summer = t(2026, 3, 29, 1, 0, 0)..t(2026, 10, 25, 1, 0, 0);
            if summer.contains(utc) {
                Self::cest()
            } else {
                Self::cet()
            }
        }
    }

    /// Whether a stamp counts as made under a wrong clock (dated after `now`), at the hours the clocks change in a
    /// real zone. At the fall-back the hour 02:00-02:59 happens twice: at 02:10 of the second pass, a snapshot
    /// stamped 02:50 in the first was made 20 minutes ago, and is the newest. Before, its wall-clock time, 40
    /// minutes after 02:10, made it "from the future", older than every other snapshot: the newest became the one
    /// before it, an hourly collect was due again at once (an extra run), and `external` chose the older snapshot.
    #[test]
    fn snapshots_of_a_repeated_or_skipped_hour_are_not_from_the_future() {
        let future =
            |time: NaiveDateTime, now: NaiveDateTime| !recency_in(&Berlin2026, time, now).0;
        // (what, stamp, now, dated in the future)
        let rows = [
            (
                "an hour ago",
                t(2026, 7, 1, 9, 0, 0),
                t(2026, 7, 1, 10, 0, 0),
                false,
            ),
            (
                "within the tolerance",
                t(2026, 7, 1, 10, 4, 0),
                t(2026, 7, 1, 10, 0, 0),
                false,
            ),
            (
                "an hour ahead",
                t(2026, 7, 1, 11, 0, 0),
                t(2026, 7, 1, 10, 0, 0),
                true,
            ),
            // Fall-back: 2026-10-25, 03:00 CEST becomes 02:00 CET.
            (
                "the first 02:50, seen at the second 02:10",
                t(2026, 10, 25, 2, 50, 0),
                t(2026, 10, 25, 2, 10, 0),
                false,
            ),
            (
                "01:59 CEST, seen at the second 02:10",
                t(2026, 10, 25, 1, 59, 0),
                t(2026, 10, 25, 2, 10, 0),
                false,
            ),
            (
                "03:20 CET, seen at 02:10 (of either pass)",
                t(2026, 10, 25, 3, 20, 0),
                t(2026, 10, 25, 2, 10, 0),
                true,
            ),
            // Spring-forward: 2026-03-29, 02:00 CET becomes 03:00 CEST.
            (
                "01:58 CET, seen at 03:01 CEST",
                t(2026, 3, 29, 1, 58, 0),
                t(2026, 3, 29, 3, 1, 0),
                false,
            ),
            (
                "03:01 CEST, seen at 01:58 CET: 3 minutes later, within the tolerance",
                t(2026, 3, 29, 3, 1, 0),
                t(2026, 3, 29, 1, 58, 0),
                false,
            ),
            (
                "03:30 CEST, seen at 01:58 CET: 32 minutes later",
                t(2026, 3, 29, 3, 30, 0),
                t(2026, 3, 29, 1, 58, 0),
                true,
            ),
        ];
        for (what, stamp, now, want) in rows {
            assert_eq!(future(stamp, now), want, "{what}");
        }
    }

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    #[test]
    fn snapshot_names_split_into_set_and_time() {
        let at = t(2025, 4, 1, 3, 15, 0);
        assert_eq!(
            split_snapshot_name("data-2025-04-01-031500"),
            Some(("data", at))
        );
        assert_eq!(
            split_snapshot_name("a-b-2025-04-01-031500"),
            Some(("a-b", at))
        );
        for bad in [
            "-2025-04-01-031500",
            "data2025-04-01-031500",
            "data-2025-04-01-0315",
            "data",
            "é-",
        ] {
            assert_eq!(split_snapshot_name(bad), None, "{bad}");
        }
    }

    pub(crate) fn meta(set: &str, name: &str, complete: bool) -> SnapshotMeta {
        let now = chrono::Local::now().fixed_offset();
        SnapshotMeta {
            format: METADATA_FORMAT,
            set: set.into(),
            name: name.into(),
            complete,
            full: false,
            started: now,
            finished: now,
            sources: vec![],
            exclusions: vec![],
            link_dest: vec![],
            resumed: false,
            rsync: RsyncRecord {
                exit_code: 0,
                argv: vec![],
                version: "3".into(),
                acls: true,
                xattrs: true,
            },
            stats: TransferStats::default(),
            warnings: vec![],
            unreadable: vec![],
            vanished: vec![],
            dbackup_version: "0".into(),
        }
    }

    #[test]
    fn names_round_trip_and_only_exact_names_parse() {
        let time = t(2025, 4, 1, 3, 15, 0);
        assert_eq!(snapshot_name("data", time), "data-2025-04-01-031500");
        assert_eq!(
            parse_snapshot_name("data", "data-2025-04-01-031500"),
            Some(time)
        );
        assert_eq!(
            parse_snapshot_name("my-set", "my-set-2025-04-01-031500"),
            Some(time)
        );
        for bad in [
            "data-latest",
            "data-2025-04-01-031500.json",
            "data-2025-04-01-0315",
            "data-2025-04-01-031500x",
            "data-2025-13-01-031500",
            "data-2025-04-01T031500",
            "data-+025-04-01-031500",
            ".data.in-progress",
            "datax-2025-04-01-031500",
            "data2025-04-01-031500",
        ] {
            assert_eq!(parse_snapshot_name("data", bad), None, "{bad}");
        }
        // A set whose name is a prefix of another's does not claim the other's snapshots.
        assert_eq!(
            parse_snapshot_name("data", "data-x-2025-04-01-031500"),
            None
        );
    }

    #[test]
    fn listing_shows_only_snapshot_directories_with_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "data-2025-04-02-000000",
            "data-2025-04-01-000000",
            "data-2025-04-03-000000",
            "other-2025-04-01-000000",
        ] {
            fs::create_dir(root.join(name)).unwrap();
        }
        for name in [
            ".data.in-progress",
            ".data.partial",
            ".trash-data-2025-04-01-000000-1-0",
        ] {
            fs::create_dir(root.join(name)).unwrap();
        }
        fs::write(
            root.join("data-2025-04-04-000000"),
            "a file, not a snapshot",
        )
        .unwrap();
        std::os::unix::fs::symlink("data-2025-04-03-000000", root.join("data-latest")).unwrap();
        std::os::unix::fs::symlink(
            "data-2025-04-03-000000",
            root.join("data-2025-04-05-000000"),
        )
        .unwrap();
        write_metadata(root, &meta("data", "data-2025-04-02-000000", true)).unwrap();
        write_metadata(root, &meta("data", "data-2025-04-03-000000", false)).unwrap();

        let found = list(root, "data").unwrap();
        let names: Vec<_> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "data-2025-04-01-000000",
                "data-2025-04-02-000000",
                "data-2025-04-03-000000"
            ]
        );
        let states: Vec<_> = found.iter().map(Snapshot::state).collect();
        assert_eq!(
            states,
            [
                SnapshotState::Unknown,
                SnapshotState::Complete,
                SnapshotState::Incomplete
            ]
        );
        assert_eq!(
            read_latest(root, "data").as_deref(),
            Some("data-2025-04-03-000000")
        );
        assert_eq!(read_latest(root, "other"), None);
        assert!(list(&root.join("missing"), "data").unwrap().is_empty());
    }

    #[test]
    fn metadata_is_private_versioned_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta("data", "data-2025-04-02-000000", true);
        let path = write_metadata(dir.path(), &m).unwrap();
        assert_eq!(path, dir.path().join("data-2025-04-02-000000.json"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_metadata(&path).unwrap(), m);
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["format"], 1);
        // Unknown future fields are ignored; another format is refused.
        let mut v2 = v.clone();
        v2["added_later"] = serde_json::json!(true);
        fs::write(&path, v2.to_string()).unwrap();
        assert!(read_metadata(&path).is_ok());
        v2["format"] = serde_json::json!(2);
        fs::write(&path, v2.to_string()).unwrap();
        assert!(
            read_metadata(&path)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn latest_is_a_relative_link_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("data-2025-04-01-000000")).unwrap();
        fs::create_dir(root.join("data-2025-04-02-000000")).unwrap();
        set_latest(root, "data", "data-2025-04-01-000000").unwrap();
        set_latest(root, "data", "data-2025-04-02-000000").unwrap();
        assert_eq!(
            fs::read_link(root.join("data-latest")).unwrap(),
            Path::new("data-2025-04-02-000000")
        );
        assert!(root.join("data-latest").join(".").is_dir());
        assert!(!root.join(".data-latest.tmp").exists());
    }

    #[test]
    fn promotion_never_replaces_an_existing_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let layout = Layout::new(root);
        fs::create_dir(layout.in_progress("data")).unwrap();
        fs::create_dir(layout.snapshot("data-2025-04-01-000000")).unwrap();
        let err = promote(root, &layout.in_progress("data"), "data-2025-04-01-000000").unwrap_err();
        assert!(matches!(err, SnapshotError::Exists { .. }), "{err}");
        promote(root, &layout.in_progress("data"), "data-2025-04-02-000000").unwrap();
        assert!(!layout.in_progress("data").exists());
        assert!(layout.snapshot("data-2025-04-02-000000").is_dir());
    }

    #[test]
    fn deletion_goes_through_trash_and_handles_read_only_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let snap = root.join("data-2025-04-01-000000");
        fs::create_dir_all(snap.join("ro/inner")).unwrap();
        fs::write(snap.join("ro/inner/f"), "x").unwrap();
        fs::write(snap.join("ro/g"), "y").unwrap();
        fs::set_permissions(snap.join("ro/g"), fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(snap.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(snap.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        write_metadata(root, &meta("data", "data-2025-04-01-000000", true)).unwrap();
        delete_snapshot(root, "data-2025-04-01-000000").unwrap();
        let left: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn leftovers_of_crashed_runs_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".trash-data-2025-04-01-000000-7-0/x")).unwrap();
        fs::write(root.join(".data-latest.tmp"), "").unwrap();
        // Orphan metadata (crash between writing it and promoting) goes; metadata of a real snapshot stays.
        write_metadata(root, &meta("data", "data-2025-04-01-000000", true)).unwrap();
        fs::create_dir(root.join("data-2025-04-02-000000")).unwrap();
        write_metadata(root, &meta("data", "data-2025-04-02-000000", true)).unwrap();
        // Files of sets this run does not handle, and unrelated files, are left alone.
        fs::write(root.join("other-2025-04-01-000000.json"), "{}").unwrap();
        fs::write(root.join("notes.json"), "{}").unwrap();
        let cleanup = clean_leftovers(root, &["data"]).unwrap();
        assert_eq!(
            cleanup.removed,
            [
                ".data-latest.tmp",
                ".trash-data-2025-04-01-000000-7-0",
                "data-2025-04-01-000000.json"
            ]
        );
        assert!(root.join("data-2025-04-02-000000.json").exists());
        assert!(root.join("other-2025-04-01-000000.json").exists());
        assert!(root.join("notes.json").exists());
    }

    #[test]
    fn a_second_run_in_the_same_second_gets_the_next_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = t(2025, 4, 1, 3, 15, 0);
        fs::create_dir(root.join(snapshot_name("data", first))).unwrap();
        assert_eq!(
            fresh_stamp(root, &["data"], clock_moving_on(first)),
            t(2025, 4, 1, 3, 15, 1)
        );
        assert_eq!(fresh_stamp(root, &["other"], || first), first);
    }

    /// A clock that reads `first` twice, then 1.2 s later: a run waiting for a fresh stamp sees the next second.
    pub(crate) fn clock_moving_on(first: NaiveDateTime) -> impl Fn() -> NaiveDateTime {
        let calls = std::cell::Cell::new(0);
        move || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                first
            } else {
                first + chrono::Duration::milliseconds(1200)
            }
        }
    }
}
