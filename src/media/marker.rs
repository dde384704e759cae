//! The destination marker: `<path>/backups/.dbackup-destination.json`, written on the first backup to a drive, naming
//! the destination it belongs to so that a drive of another destination is refused.
//!
//! ```json
//! {
//!   "format": 1,
//!   "destination": "t9",
//!   "fs_uuid": "FF4F-F609",
//!   "fs_label": "T9",
//!   "created": "2025-11-26T02:14:00+01:00",
//!   "host": "workstation",
//!   "dbackup_version": "0.1.0"
//! }
//! ```
//!
//! It lives inside `backups/`, the one directory dbackup owns on a drive, so nothing else appears at the drive's root.
//! Unknown fields are ignored when reading, so later versions may add some. Only `destination` decides anything; the
//! rest is there for people (and for a later `status`).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::stdx::fs::{Dir, FsError};
use crate::stdx::show_path;

/// The marker's place, relative to the destination path.
pub const MARKER_PATH: &str = "backups/.dbackup-destination.json";
/// The directory on a destination that dbackup owns.
pub const BACKUPS_DIR: &str = "backups";
/// The marker's file name inside `backups/`.
pub const MARKER_NAME: &str = ".dbackup-destination.json";
/// The largest marker read (checked before reading); one is a few hundred bytes.
pub const MAX_MARKER_BYTES: u64 = 64 << 10;
/// The version of the marker format this dbackup writes.
pub const FORMAT: u32 = 1;

/// What a marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub format: u32,
    /// The `name` of the destination in the config that first wrote to this drive.
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
    pub created: DateTime<FixedOffset>,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub dbackup_version: String,
}

/// Reading or writing a marker failed.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("cannot read destination marker {}: {source}", show_path(.path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "destination marker {} is not valid: {}; fix it or delete it",
        show_path(.path),
        crate::stdx::show_str(&.source.to_string())
    )]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write destination marker {}: {source}", show_path(.path))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `backups/` or the marker is a symlink, a mount point, a FIFO, too large...
    #[error(
        "{0}; dbackup keeps its backups and its marker in the drive's `backups` directory: rename or remove \
         what is there, then rerun"
    )]
    Refused(#[from] FsError),
}

impl Marker {
    /// A marker for destination `name` on a filesystem with this uuid and label, created `now` on `host`.
    pub fn new(
        name: &str,
        fs_uuid: Option<String>,
        fs_label: Option<String>,
        now: DateTime<FixedOffset>,
        host: String,
    ) -> Marker {
        Marker {
            format: FORMAT,
            destination: name.to_string(),
            fs_uuid,
            fs_label,
            created: now,
            host,
            dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The marker file of the destination at `root`.
pub fn marker_path(root: &Path) -> PathBuf {
    root.join(MARKER_PATH)
}

/// Reads the marker of the destination opened as `root`: `backups/` reached without following a symlink and on the
/// same filesystem, the marker a regular file of at most [`MAX_MARKER_BYTES`]. `None` when there is none yet.
pub fn read_in(root: &Dir) -> Result<Option<Marker>, MarkerError> {
    let backups = match root.sub(BACKUPS_DIR) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = match backups.read_bounded(MARKER_NAME, MAX_MARKER_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    parse(&bytes, &backups.join(MARKER_NAME)).map(Some)
}

/// Parses the bytes of a marker found at `path` (named in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Marker, MarkerError> {
    serde_json::from_slice(bytes).map_err(|source| MarkerError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the marker of the destination opened as `root`, creating `backups/` if needed (an existing `backups/` that
/// is a symlink or a mount point is refused): to a temporary name, fsynced, renamed into place without replacing
/// (`RENAME_NOREPLACE`), and the directory fsynced, so that a crash leaves either no marker or a whole one. Returns
/// the marker now on the drive: `marker`, or the one another run wrote first (two configs setting up the same new
/// drive at once), which is kept as it is.
pub fn write_in(root: &Dir, marker: &Marker) -> Result<Marker, MarkerError> {
    let path = root.join(MARKER_PATH);
    let err = |source| MarkerError::Write {
        path: path.clone(),
        source,
    };
    let (dir, created) = root.sub_or_create(BACKUPS_DIR, 0o755)?;
    if created {
        root.fsync()?;
    }
    let tmp = format!("{MARKER_NAME}.tmp-{}", std::process::id());
    let _ = dir.unlink(&tmp);
    // A marker is a few fields of strings and numbers: serialising it cannot fail.
    let mut json = serde_json::to_vec_pretty(marker).expect("a marker always serializes");
    json.push(b'\n');
    let result = (|| -> Result<bool, MarkerError> {
        let mut file = dir.create_file(&tmp, 0o644)?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(err)?;
        drop(file);
        match dir.rename(&tmp, MARKER_NAME, true) {
            Ok(()) => {}
            Err(e) if e.is_exists() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        dir.fsync()?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = dir.unlink(&tmp);
    }
    if result? {
        return Ok(marker.clone());
    }
    let there = dir.read_bounded(MARKER_NAME, MAX_MARKER_BYTES)?;
    parse(&there, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(root: &Path) -> Result<Option<Marker>, MarkerError> {
        read_in(&Dir::open(root)?)
    }

    fn write(root: &Path, marker: &Marker) -> Result<Marker, MarkerError> {
        write_in(&Dir::open(root)?, marker)
    }

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2025-11-26T02:14:00+01:00").unwrap()
    }

    #[test]
    fn round_trips_and_creates_backups_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let m = Marker::new(
            "t9",
            Some("FF4F-F609".into()),
            Some("T9".into()),
            now(),
            "ws".into(),
        );
        assert_eq!(write(dir.path(), &m).unwrap(), m);
        let path = dir.path().join("backups/.dbackup-destination.json");
        assert_eq!(read(dir.path()).unwrap(), Some(m.clone()));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [".dbackup-destination.json"],
            "no temporary file is left behind"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["destination"], "t9");
        assert_eq!(json["created"], "2025-11-26T02:14:00+01:00");
        assert_eq!(json["format"], 1);
    }

    /// Two runs setting up the same new drive at once (two configs naming it differently) each checked that it had no
    /// marker; the second write must not replace the first's: it finds it and returns it, and the drive stays the
    /// first's.
    #[test]
    fn a_marker_already_there_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let nas = Marker::new("nas", None, None, now(), "ws".into());
        let t9 = Marker::new("t9", None, None, now(), "ws".into());
        assert_eq!(write(dir.path(), &nas).unwrap(), nas);
        assert_eq!(
            write(dir.path(), &t9).unwrap(),
            nas,
            "the marker there is returned"
        );
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(nas.clone()),
            "the first marker stays"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [MARKER_NAME], "no temporary file is left behind");
    }

    #[test]
    fn tolerates_unknown_fields_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("backups")).unwrap();
        let file = dir.path().join(MARKER_PATH);
        std::fs::write(
            &file,
            r#"{"format":2,"destination":"nas","created":"2025-01-01T00:00:00Z","future":true}"#,
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().destination, "nas");
        std::fs::write(&file, "{ not json").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
    }
}
