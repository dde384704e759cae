//! The read side of the drive for restore, on top of the external phase's layout ([`crate::external::layout`]): the
//! backups under `<drive>/backups/`, the sets each holds (from `backup.json`) with their sources, archive and index
//! names, and where `latest` points.
//!
//! Restore is lenient where writing is strict: a stamp directory without usable metadata is still listed (as
//! `unverified`) and can be restored when named exactly (its sets are then the `*.tar` files found in it, restored by
//! scanning when they have no index), because on the worst day a damaged `backup.json` must not hide the archives
//! beside it. A backup still being written (`.tmp-<stamp>-<pid>`) is kept here for what needs to know of it, but is
//! never listed by `--list` and never restored from.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::EncryptionRecord;
use crate::archive::FileRecord;
use crate::external::layout::{self, LeftoverKind, SetRecord};
use crate::external::retention::{Owner, recorded_paths};
use crate::snapshot::{self, SourceRecord};
use crate::stdx::fs::Dir;

pub use crate::external::layout::{
    BACKUPS_DIR, METADATA_FILE, SUMS_FILE, archive_name, index_name,
};

/// One backup directory on a drive, as restore reads it: the directory the external phase's layout found (its name,
/// time, path and metadata: [`layout::DriveBackup`]) and the sets it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveBackup {
    /// The directory: its name is its stamp (or the temporary name of one being written).
    pub dir: layout::DriveBackup,
    /// The sets found: from the metadata, else from the `*.tar` files in the directory.
    pub sets: Vec<DriveSet>,
    /// A backup being written (`.tmp-<stamp>-<pid>`): never listed, never restored from.
    pub in_progress: bool,
    /// Sets left out by `--set` (see [`DriveBackup::only`]): their files are neither read nor checked.
    pub excluded: Vec<String>,
}

impl DriveBackup {
    pub fn verified(&self) -> bool {
        self.dir.meta.is_some()
    }

    /// Neither a `backup.json` nor an archive: an empty or junk directory named like a backup, not a backup (it
    /// holds nothing to restore). `restore --list` shows no row for it.
    pub fn holds_nothing(&self) -> bool {
        !self.in_progress
            && self.dir.meta.is_none()
            && self.sets.is_empty()
            && self
                .dir
                .path
                .join(METADATA_FILE)
                .symlink_metadata()
                .is_err()
    }

    pub fn set(&self, name: &str) -> Option<&DriveSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Not the `owner`'s (`None`: holds sets, none of them the owner's; `Some(set)`: holds `set`, recorded from
    /// sources of another config's set of that name), by `Owner`'s rule on its sets and their recorded sources.
    pub fn foreign(&self, owner: Owner, set: Option<&str>) -> bool {
        match set {
            None => owner.foreign_sets(
                (self.sets.iter()).map(|s| (s.name.as_str(), recorded_paths(&s.sources))),
            ),
            Some(set) => self
                .set(set)
                .is_some_and(|s| !owner.owns_set(set, &recorded_paths(&s.sources))),
        }
    }

    /// The bytes of its archives on the drive.
    pub fn bytes(&self) -> u64 {
        self.sets
            .iter()
            .fold(0u64, |t, s| t.saturating_add(s.archive_bytes))
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
        self.excluded
            .iter()
            .any(|set| crate::external::layout::is_file_of_set(name, set))
    }
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
    pub records: Vec<FileRecord>,
    /// How it is encrypted, as `backup.json` says (public recipients, or a passphrase); without metadata, an
    /// archive named `*.age` is encrypted all the same (see [`DriveSet::encrypted`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

impl DriveSet {
    /// Whether its archive is encrypted with age (its name ends in `.age`).
    pub fn encrypted(&self) -> bool {
        crate::archive::crypt::is_encrypted_name(self.archive.as_bytes())
    }
}

/// The base name of a list of parts: `data.tar.part000` -> `data.tar`.
fn base_name(records: &[FileRecord]) -> Option<String> {
    let first = &records.first()?.name;
    Some(match first.strip_suffix(".part000") {
        Some(base) => base.to_string(),
        None => first.clone(),
    })
}

fn set_of_record(dir: &Path, s: &SetRecord) -> DriveSet {
    let encrypted = s.encryption.is_some();
    let archive = base_name(&s.archive).unwrap_or_else(|| archive_name(&s.set, encrypted));
    let index = base_name(&s.index).or_else(|| {
        let n = index_name(&s.set, encrypted);
        is_regular(&dir.join(&n)).then_some(n)
    });
    let archive_bytes = if s.archive.is_empty() {
        archive_bytes_on_disk(dir, &archive)
    } else {
        s.archive_bytes()
    };
    DriveSet {
        name: s.set.clone(),
        snapshot: Some(s.snapshot.clone()),
        sources: s.sources.clone(),
        archive,
        index,
        archive_bytes,
        files: Some(s.files),
        file_bytes: Some(s.file_bytes),
        records: s.archive.iter().chain(&s.index).cloned().collect(),
        encryption: s.encryption.clone(),
    }
}

/// Whether `path` is a regular file (a symlink is not looked through).
fn is_regular(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_file())
}

fn archive_bytes_on_disk(dir: &Path, archive: &str) -> u64 {
    crate::archive::ArchiveFiles::discover(dir, archive)
        .map(|a| a.len())
        .unwrap_or(0)
}

/// The sets of a backup without metadata: every `<set>.tar` or `<set>.tar.part000` in it, or the same encrypted
/// with age (`<set>.tar.age`, `<set>.tar.age.part000`).
fn sets_from_files(dir: &Path) -> Vec<DriveSet> {
    let mut names = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let plain = n
                .strip_suffix(".tar.part000")
                .or_else(|| n.strip_suffix(".tar"));
            let encrypted = n
                .strip_suffix(".tar.age.part000")
                .or_else(|| n.strip_suffix(".tar.age"));
            // Set names follow the config's rules, wherever they come from.
            if let Some((stem, enc)) = plain.map(|s| (s, false)).or(encrypted.map(|s| (s, true)))
                && crate::settings::is_safe_name(stem)
            {
                names.insert(stem.to_string(), enc);
            }
        }
    }
    names
        .into_iter()
        .map(|(set, encrypted)| {
            let archive = archive_name(&set, encrypted);
            let index = index_name(&set, encrypted);
            DriveSet {
                archive_bytes: archive_bytes_on_disk(dir, &archive),
                index: is_regular(&dir.join(&index)).then_some(index),
                archive,
                name: set,
                snapshot: None,
                sources: Vec::new(),
                files: None,
                file_bytes: None,
                records: Vec::new(),
                encryption: None,
            }
        })
        .collect()
}

/// What a drive's `backups/` holds for restore: its backups with their sets, those being written among them.
pub type DriveListing = layout::DriveListing<DriveBackup>;

/// Lists an open `backups/` directory (see [`layout::list_in`]); `images_only` keeps the backups of partition images
/// only (`dbackup image create`), which hold no set: `dbackup image restore` reads them, and `restore --verify`
/// checks them when named by their stamp.
pub fn list_with(backups: &Dir, images_only: bool) -> io::Result<DriveListing> {
    let l = layout::list_in(backups).map_err(io::Error::other)?;
    let mut all: Vec<DriveBackup> = l
        .backups
        .into_iter()
        .filter(|b| {
            images_only
                || b.meta
                    .as_ref()
                    .is_none_or(|m| !m.sets.is_empty() || m.system.is_none())
        })
        .map(|b| DriveBackup {
            sets: match &b.meta {
                Some(m) => m.sets.iter().map(|s| set_of_record(&b.path, s)).collect(),
                None => sets_from_files(&b.path),
            },
            dir: b,
            in_progress: false,
            excluded: Vec::new(),
        })
        .collect();
    for left in &l.leftovers {
        if left.kind != LeftoverKind::Temporary {
            continue;
        }
        let Some(time) = left
            .name
            .strip_prefix(layout::TEMP_PREFIX)
            .and_then(|r| r.get(..snapshot::STAMP_LEN))
            .and_then(snapshot::parse_stamp)
        else {
            continue;
        };
        let path = backups.join(&left.name);
        all.push(DriveBackup {
            sets: sets_from_files(&path),
            dir: layout::DriveBackup {
                name: left.name.clone(),
                time,
                path,
                meta: None,
                meta_error: Some(
                    "it is still being written, or its writing was interrupted".into(),
                ),
            },
            in_progress: true,
            excluded: Vec::new(),
        });
    }
    all.sort_by(|a, b| (a.dir.time.cmp(&b.dir.time)).then_with(|| a.dir.name.cmp(&b.dir.name)));
    Ok(DriveListing {
        exists: l.exists,
        backups: all,
        leftovers: l.leftovers,
        latest: l.latest,
        other: l.other,
    })
}

/// The backups in `backups` that the user running may not open, by name, sorted: on a drive root wrote on a Linux
/// filesystem their directories are root's, mode 0700 (exFAT shows every file as the mounting user's).
pub fn unreadable(backups: &Dir) -> Vec<String> {
    let Ok(entries) = backups.entries() else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .into_iter()
        .filter(|(_, kind)| *kind == rustix::fs::FileType::Directory)
        .filter_map(|(name, _)| name.to_str().map(str::to_owned))
        .filter(|name| matches!(layout::classify(name), layout::NameKind::Stamp(_)))
        .filter(|name| backups.sub(name).is_err_and(|e| e.is_permission_denied()))
        .collect();
    out.sort();
    out
}

/// The directory of the earlier backup `stamp` an incremental points into, beside it in `backups_dir`, reached as the
/// listing reaches every backup ([`Dir::sub`]): one that is a symlink or another filesystem is refused, so no read
/// of a chain leaves the drive.
pub fn chain_dir(backups_dir: &Path, stamp: &str) -> Result<Dir, crate::stdx::fs::FsError> {
    Dir::open(backups_dir)?.sub(stamp)
}

/// Where the backups are, given a path the user pointed at: a drive's mount point (holding `backups/`), a
/// `backups/` directory, or one backup's directory (returned as its parent, with the backup's name).
pub fn backups_dir_of(path: &Path) -> (PathBuf, Option<String>) {
    // Looked at without following links: a `backups` symlink on the drive is the drive's, and refused when opened.
    let there = |p: PathBuf| p.symlink_metadata().is_ok();
    if there(path.join(BACKUPS_DIR)) {
        return (path.join(BACKUPS_DIR), None);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if snapshot::parse_stamp(name).is_some()
        && (there(path.join(METADATA_FILE)) || there(path.join(SUMS_FILE)))
        && let Some(parent) = path.parent()
    {
        return (parent.to_path_buf(), Some(name.to_string()));
    }
    (path.to_path_buf(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Digest;
    use crate::external::layout::tests::meta;

    fn record(name: &str, bytes: u64) -> FileRecord {
        FileRecord {
            name: name.into(),
            bytes,
            sha256: Digest::of_bytes(name.as_bytes()),
            age_head: None,
        }
    }

    #[test]
    fn backups_are_listed_with_their_sets() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        let mk = |name: &str, meta: Option<Vec<u8>>, files: &[&str]| {
            fs::create_dir_all(b.join(name)).unwrap();
            if let Some(m) = meta {
                fs::write(b.join(name).join(METADATA_FILE), m).unwrap();
            }
            for f in files {
                fs::write(b.join(name).join(f), "x").unwrap();
            }
        };
        let mut m = meta("2025-04-01-031500", &["data"]);
        m.sets[0].archive = vec![
            record("data.tar.part000", 10),
            record("data.tar.part001", 5),
        ];
        m.sets[0].index = vec![record("data.index.jsonl", 3)];
        m.sets[0].sources = vec![SourceRecord {
            configured: "~/data".into(),
            path: "/home/u/data".into(),
            resolved: "/data".into(),
            in_snapshot: "data".into(),
            present: true,
        }];
        mk("2025-04-01-031500", Some(layout::metadata_bytes(&m)), &[]);
        mk(
            "2025-03-01-031500",
            None,
            &["data.tar", "config.tar.part000", "notes.txt"],
        );
        let mut unverified = meta("2025-03-02-031500", &["data"]);
        unverified.verified = false;
        mk(
            "2025-03-02-031500",
            Some(layout::metadata_bytes(&unverified)),
            &["data.tar"],
        );
        mk(".tmp-2025-04-02-031500-77", None, &["data.tar"]);
        mk("photos", None, &["a.tar"]);
        fs::write(b.join("LATEST"), "2025-04-01-031500\n").unwrap();

        let l = list_with(&Dir::open(b).unwrap(), false).unwrap();
        let names: Vec<(&str, bool, bool)> = l
            .backups
            .iter()
            .map(|x| (x.dir.name.as_str(), x.verified(), x.in_progress))
            .collect();
        assert_eq!(
            names,
            [
                ("2025-03-01-031500", false, false),
                ("2025-03-02-031500", false, false),
                ("2025-04-01-031500", true, false),
                (".tmp-2025-04-02-031500-77", false, true),
            ]
        );
        assert_eq!(l.latest.as_deref(), Some("2025-04-01-031500"));
        let v = &l.backups[2];
        let s = &v.sets[0];
        assert_eq!(
            (s.archive.as_str(), s.index.as_deref()),
            ("data.tar", Some("data.index.jsonl"))
        );
        assert_eq!(s.archive_bytes, 15);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.sources[0].resolved, Path::new("/data"));
        let found: Vec<&str> = l.backups[0].sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            found,
            ["config", "data"],
            "sets found from the archives without metadata"
        );
        assert!(
            l.backups[1]
                .dir
                .meta_error
                .as_deref()
                .unwrap()
                .contains("not verified")
        );
        fs::create_dir(b.join("empty")).unwrap();
        assert_eq!(
            list_with(&Dir::open(&b.join("empty")).unwrap(), false).unwrap(),
            DriveListing {
                exists: true,
                ..DriveListing::default()
            }
        );
        // --set keeps one set and remembers the others' files.
        let only = l.backups[0].only("data");
        assert_eq!(only.sets.len(), 1);
        assert!(
            only.is_excluded_file(b"config.tar.part000")
                && only.is_excluded_file(b"config.index.jsonl")
        );
        assert!(!only.is_excluded_file(b"data.tar") && !only.is_excluded_file(b"configx.tar"));
        assert!(
            only.is_excluded_file(b"config.tar.age") && only.is_excluded_file(b"config.index.age")
        );
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
