//! The read side of the drive for restore: the backups under `<drive>/backups/`, what each one's `backup.json` says
//! (sets, their sources, archive and index names) and where `latest` points.
//!
//! Layout (written by the external phase, see `src/external/layout.rs`):
//! `<drive>/backups/<YYYY-MM-DD-HHMMSS>/` holding `<set>.tar` (or `<set>.tar.part000`, ...), `<set>.index.jsonl`,
//! `backup.json` and `verification.sha256`; `backups/latest` (a symlink) or `backups/LATEST` (a text file).
//!
//! Restore is lenient where writing is strict: a stamp directory without usable metadata is still listed (as
//! `unverified`) and can be restored when named exactly (its sets are then the `*.tar` files found in it, restored by
//! scanning), because on the worst day a damaged `backup.json` must not hide the archives beside it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::archive::sums::SUMS_FILE;
use crate::snapshot::{self, SourceRecord};

/// The directory on a drive that holds the backups.
pub const BACKUPS_DIR: &str = "backups";
/// Each backup's metadata file.
pub const METADATA_FILE: &str = "backup.json";
/// The metadata format this dbackup reads.
pub const BACKUP_FORMAT: u32 = 1;
/// Prefix of a backup still being written (never restored from; listed as incomplete).
const TEMP_PREFIX: &str = ".tmp-";

/// `<set>.tar`.
pub fn archive_name(set: &str) -> String {
    format!("{set}.tar")
}

/// `<set>.index.jsonl`.
pub fn index_name(set: &str) -> String {
    format!("{set}.index.jsonl")
}

/// One backup directory on a drive.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveBackup {
    /// The directory name: its stamp.
    pub name: String,
    pub time: NaiveDateTime,
    pub path: PathBuf,
    /// What `backup.json` says, when it is readable, names this backup, and says it was verified.
    pub meta: Option<BackupInfo>,
    /// Why there is no usable metadata.
    pub meta_error: Option<String>,
    /// The sets found: from the metadata, else from the `*.tar` files in the directory.
    pub sets: Vec<DriveSet>,
    /// A backup being written (`.tmp-<stamp>-<pid>`): listed as incomplete, never restored from.
    pub in_progress: bool,
    /// Sets left out by `--set` (see [`DriveBackup::only`]): their files are neither read nor checked.
    pub excluded: Vec<String>,
}

impl DriveBackup {
    pub fn verified(&self) -> bool {
        self.meta.is_some()
    }

    pub fn set(&self, name: &str) -> Option<&DriveSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// The bytes of its archives on the drive.
    pub fn bytes(&self) -> u64 {
        self.sets.iter().map(|s| s.archive_bytes).sum()
    }

    /// This backup with only the set `name` (the others recorded as excluded).
    pub fn only(&self, name: &str) -> DriveBackup {
        let mut b = self.clone();
        let (keep, drop): (Vec<DriveSet>, Vec<DriveSet>) =
            b.sets.into_iter().partition(|s| s.name == name);
        b.sets = keep;
        b.excluded = drop.into_iter().map(|s| s.name).collect();
        b
    }

    /// Whether a file of this backup's directory belongs to an excluded set (`<set>.tar*`, `<set>.index.jsonl`).
    pub fn is_excluded_file(&self, name: &[u8]) -> bool {
        self.excluded.iter().any(|set| {
            name.strip_prefix(set.as_bytes())
                .is_some_and(|rest| rest.starts_with(b".tar") || rest == b".index.jsonl")
        })
    }
}

/// What restore uses of `backup.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub destination: String,
    pub host: String,
    pub dbackup_version: String,
    pub finished: Option<DateTime<FixedOffset>>,
}

/// One set of a drive backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriveSet {
    pub name: String,
    /// The local snapshot it was made from (`<set>-<stamp>`), when the metadata says.
    pub snapshot: Option<String>,
    /// The sources inside the archive, when the metadata says.
    pub sources: Vec<SourceRecord>,
    /// The archive's base name (`data.tar`; parts are `data.tar.part000`, ...).
    pub archive: String,
    /// The index's base name, when the metadata lists one or the file is there.
    pub index: Option<String>,
    /// Bytes of the archive file(s).
    pub archive_bytes: u64,
    /// Files and their content bytes, when the metadata says.
    pub files: Option<u64>,
    pub file_bytes: Option<u64>,
    /// The metadata's records of its files (name, bytes, sha256), to cross-check the sums file.
    #[serde(skip)]
    pub records: Vec<FileRecordWire>,
}

/// A file as `backup.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecordWire {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The fields of `backup.json` restore reads (unknown fields are ignored, as the format allows).
#[derive(Debug, Deserialize)]
struct MetaWire {
    format: u32,
    stamp: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    dbackup_version: String,
    #[serde(default)]
    finished: Option<DateTime<FixedOffset>>,
    verified: bool,
    sets: Vec<SetWire>,
}

#[derive(Debug, Deserialize)]
struct SetWire {
    set: String,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    sources: Vec<SourceRecord>,
    #[serde(default)]
    archive: Vec<FileRecordWire>,
    #[serde(default)]
    index: Vec<FileRecordWire>,
    #[serde(default)]
    files: Option<u64>,
    #[serde(default)]
    file_bytes: Option<u64>,
}

/// The base name of a list of parts: `data.tar.part000` -> `data.tar`.
fn base_name(records: &[FileRecordWire]) -> Option<String> {
    let first = &records.first()?.name;
    Some(match first.strip_suffix(".part000") {
        Some(base) if records.len() > 1 || first.ends_with(".part000") => base.to_string(),
        _ => first.clone(),
    })
}

/// Reads one backup directory (`path`, named `name`).
pub fn read_backup(path: &Path, name: &str, time: NaiveDateTime) -> DriveBackup {
    let (meta, meta_error, sets) = match read_meta(&path.join(METADATA_FILE)) {
        Ok(m) if m.stamp != name => (
            None,
            Some(format!("its {METADATA_FILE} describes backup {}", m.stamp)),
            None,
        ),
        Ok(m) if !m.verified => (
            None,
            Some(format!("its {METADATA_FILE} says it was not verified")),
            None,
        ),
        Ok(m) => {
            let info = BackupInfo {
                destination: m.destination.clone(),
                host: m.host.clone(),
                dbackup_version: m.dbackup_version.clone(),
                finished: m.finished,
            };
            let sets = m
                .sets
                .into_iter()
                .map(|s| {
                    let archive = base_name(&s.archive).unwrap_or_else(|| archive_name(&s.set));
                    let index = base_name(&s.index).or_else(|| {
                        let n = index_name(&s.set);
                        path.join(&n).is_file().then_some(n)
                    });
                    let archive_bytes = if s.archive.is_empty() {
                        archive_bytes_on_disk(path, &archive)
                    } else {
                        s.archive.iter().map(|r| r.bytes).sum()
                    };
                    let mut records = s.archive.clone();
                    records.extend(s.index.iter().cloned());
                    DriveSet {
                        name: s.set,
                        snapshot: s.snapshot,
                        sources: s.sources,
                        archive,
                        index,
                        archive_bytes,
                        files: s.files,
                        file_bytes: s.file_bytes,
                        records,
                    }
                })
                .collect();
            (Some(info), None, Some(sets))
        }
        Err(e) => (None, Some(e), None),
    };
    let sets = sets.unwrap_or_else(|| sets_from_files(path));
    DriveBackup {
        name: name.to_string(),
        time,
        path: path.to_path_buf(),
        meta,
        meta_error,
        sets,
        in_progress: false,
        excluded: Vec::new(),
    }
}

fn read_meta(path: &Path) -> Result<MetaWire, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("it has no {METADATA_FILE}"));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let m: MetaWire = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not valid backup metadata: {e}", path.display()))?;
    if m.format != BACKUP_FORMAT {
        return Err(format!(
            "{} has format {}, this dbackup reads format {BACKUP_FORMAT}; use a newer dbackup",
            path.display(),
            m.format
        ));
    }
    Ok(m)
}

fn archive_bytes_on_disk(dir: &Path, archive: &str) -> u64 {
    crate::archive::ArchiveFiles::discover(dir, archive)
        .map(|a| a.len())
        .unwrap_or(0)
}

/// The sets of a backup without metadata: every `<set>.tar` or `<set>.tar.part000` in it.
fn sets_from_files(dir: &Path) -> Vec<DriveSet> {
    let mut names = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let stem = n
                .strip_suffix(".tar.part000")
                .or_else(|| n.strip_suffix(".tar"));
            if let Some(stem) = stem
                && !stem.is_empty()
                && !stem.starts_with('.')
            {
                names.insert(stem.to_string());
            }
        }
    }
    names
        .into_iter()
        .map(|set| {
            let archive = archive_name(&set);
            let index = index_name(&set);
            DriveSet {
                archive_bytes: archive_bytes_on_disk(dir, &archive),
                index: dir.join(&index).is_file().then_some(index),
                archive,
                name: set,
                snapshot: None,
                sources: Vec::new(),
                files: None,
                file_bytes: None,
                records: Vec::new(),
            }
        })
        .collect()
}

/// What a drive's `backups/` holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriveListing {
    /// Backups (stamp directories) and backups being written, oldest first.
    pub backups: Vec<DriveBackup>,
    /// What `latest`/`LATEST` names.
    pub latest: Option<String>,
}

/// Lists a `backups/` directory. A missing directory lists nothing.
pub fn list(backups_dir: &Path) -> io::Result<DriveListing> {
    let entries = match fs::read_dir(backups_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DriveListing::default()),
        Err(e) => return Err(e),
    };
    let mut out = DriveListing::default();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        if let Some(time) = snapshot::parse_stamp(&name) {
            out.backups.push(read_backup(&entry.path(), &name, time));
        } else if let Some(rest) = name.strip_prefix(TEMP_PREFIX)
            && let Some(time) = rest
                .get(..snapshot::STAMP_LEN)
                .and_then(snapshot::parse_stamp)
        {
            out.backups.push(DriveBackup {
                name: name.clone(),
                time,
                path: entry.path(),
                meta: None,
                meta_error: Some(
                    "it is still being written, or its writing was interrupted".into(),
                ),
                sets: sets_from_files(&entry.path()),
                in_progress: true,
                excluded: Vec::new(),
            });
        }
    }
    out.backups
        .sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.name.cmp(&b.name)));
    out.latest = read_latest(backups_dir);
    Ok(out)
}

/// The stamp `latest` (a symlink) or `LATEST` (a text file) names, when it is a stamp.
pub fn read_latest(backups_dir: &Path) -> Option<String> {
    let from_link = fs::read_link(backups_dir.join("latest"))
        .ok()
        .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_owned));
    let from_file = || {
        let text = fs::read_to_string(backups_dir.join("LATEST")).ok()?;
        Some(text.lines().next()?.trim().to_string())
    };
    from_link
        .or_else(from_file)
        .filter(|s| snapshot::parse_stamp(s).is_some())
}

/// Where the backups are, given a path the user pointed at: a drive's mount point (holding `backups/`), a
/// `backups/` directory, or one backup's directory (returned as its parent, with the backup's name).
pub fn backups_dir_of(path: &Path) -> (PathBuf, Option<String>) {
    if path.join(BACKUPS_DIR).is_dir() {
        return (path.join(BACKUPS_DIR), None);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if snapshot::parse_stamp(name).is_some()
        && (path.join(METADATA_FILE).exists() || path.join(SUMS_FILE).exists())
        && let Some(parent) = path.parent()
    {
        return (parent.to_path_buf(), Some(name.to_string()));
    }
    (path.to_path_buf(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_json(stamp: &str, verified: bool) -> String {
        serde_json::json!({
            "format": 1, "stamp": stamp, "destination": "T9", "host": "ws", "dbackup_version": "0.1.0",
            "started": "2025-04-01T03:15:00+00:00", "finished": "2025-04-01T03:16:00+00:00",
            "verified": verified, "extra_field_from_later": true,
            "sets": [{
                "set": "data", "snapshot": "data-2025-04-01-031500",
                "sources": [{"configured": "~/data", "path": "/home/u/data", "resolved": "/data",
                             "in_snapshot": "data", "present": true}],
                "archive": [{"name": "data.tar.part000", "bytes": 10, "sha256": "00"},
                            {"name": "data.tar.part001", "bytes": 5, "sha256": "00"}],
                "index": [{"name": "data.index.jsonl", "bytes": 3, "sha256": "00"}],
                "files": 2, "file_bytes": 7
            }]
        })
        .to_string()
    }

    #[test]
    fn backups_are_listed_with_their_sets() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        let mk = |name: &str, meta: Option<String>, files: &[&str]| {
            fs::create_dir_all(b.join(name)).unwrap();
            if let Some(m) = meta {
                fs::write(b.join(name).join(METADATA_FILE), m).unwrap();
            }
            for f in files {
                fs::write(b.join(name).join(f), "x").unwrap();
            }
        };
        mk(
            "2025-04-01-031500",
            Some(meta_json("2025-04-01-031500", true)),
            &[],
        );
        mk(
            "2025-03-01-031500",
            None,
            &["data.tar", "config.tar.part000", "notes.txt"],
        );
        mk(
            "2025-03-02-031500",
            Some(meta_json("2025-03-02-031500", false)),
            &["data.tar"],
        );
        mk(
            "2025-03-03-031500",
            Some(meta_json("2025-01-01-000000", true)),
            &[],
        );
        mk(".tmp-2025-04-02-031500-77", None, &["data.tar"]);
        mk("photos", None, &["a.tar"]);
        fs::write(b.join("LATEST"), "2025-04-01-031500\n").unwrap();

        let l = list(b).unwrap();
        let names: Vec<(&str, bool, bool)> = l
            .backups
            .iter()
            .map(|x| (x.name.as_str(), x.verified(), x.in_progress))
            .collect();
        assert_eq!(
            names,
            [
                ("2025-03-01-031500", false, false),
                ("2025-03-02-031500", false, false),
                ("2025-03-03-031500", false, false),
                ("2025-04-01-031500", true, false),
                (".tmp-2025-04-02-031500-77", false, true),
            ]
        );
        assert_eq!(l.latest.as_deref(), Some("2025-04-01-031500"));
        let v = &l.backups[3];
        assert_eq!(v.sets.len(), 1);
        let s = &v.sets[0];
        assert_eq!(
            (s.archive.as_str(), s.index.as_deref()),
            ("data.tar", Some("data.index.jsonl"))
        );
        assert_eq!(s.archive_bytes, 15);
        assert_eq!(s.sources[0].resolved, Path::new("/data"));
        assert_eq!(v.meta.as_ref().unwrap().destination, "T9");
        let found: Vec<&str> = l.backups[0].sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            found,
            ["config", "data"],
            "sets found from the archives when there is no metadata"
        );
        assert!(
            l.backups[0]
                .meta_error
                .as_deref()
                .unwrap()
                .contains("no backup.json")
        );
        assert!(
            l.backups[1]
                .meta_error
                .as_deref()
                .unwrap()
                .contains("not verified")
        );
        assert!(
            l.backups[2]
                .meta_error
                .as_deref()
                .unwrap()
                .contains("describes backup 2025-01-01")
        );
        assert_eq!(list(&b.join("missing")).unwrap(), DriveListing::default());
    }

    #[test]
    fn a_user_may_point_at_the_drive_the_backups_or_one_backup() {
        let dir = tempfile::tempdir().unwrap();
        let drive = dir.path();
        let one = drive.join("backups/2025-04-01-031500");
        fs::create_dir_all(&one).unwrap();
        fs::write(one.join(SUMS_FILE), "").unwrap();
        assert_eq!(backups_dir_of(drive), (drive.join("backups"), None));
        assert_eq!(
            backups_dir_of(&drive.join("backups")),
            (drive.join("backups"), None)
        );
        assert_eq!(
            backups_dir_of(&one),
            (drive.join("backups"), Some("2025-04-01-031500".into()))
        );
    }
}
