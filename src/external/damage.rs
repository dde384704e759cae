//! Backups that `restore --verify` found damaged, remembered in the state directory (`damaged.json`) so the next
//! external run does not extend a chain through them: damage that keeps a file's size (a flipped bit) is invisible
//! to the external's own look at a drive (one `lstat` per file), and reading a drive never writes to it. A later
//! `--verify` that finds the backup intact forgets it; records of backups no longer on the drive are ignored. The
//! state directory is per user: a record names the backup root of the config whose `--verify` found it, and a config
//! reads only its own (and those of older versions, which name none): another config's drive of the same name may
//! hold a backup of the same stamp.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::DriveListing;

pub const FILE_NAME: &str = "damaged.json";
/// The file is read only up to this size; beyond it (or unparsable) it counts as empty.
const MAX_BYTES: u64 = 1 << 20;
/// The newest records kept.
const MAX_RECORDS: usize = 1000;
/// The longest problem a record keeps, in bytes (it is shown on one line).
const MAX_PROBLEM: usize = 1024;

/// One backup found damaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The destination's name in the config.
    pub destination: String,
    /// The backup's stamp.
    pub backup: String,
    /// When `restore --verify` found it (RFC 3339).
    pub found: String,
    /// The first problem it found, as `restore --verify` showed it: its names escaped ([`crate::stdx::show`]).
    pub problem: String,
    /// The backup root of the config whose `--verify` found it ([`crate::runlog::root_name`]); `None` in a record of
    /// an older version: then it is every config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    format: u32,
    records: Vec<Record>,
}

/// The records in `state_dir` of the config whose backup root is `backup_root` (none when the file is missing, too
/// big or unparsable).
pub fn read(state_dir: &Path, backup_root: &Path) -> Vec<Record> {
    let mut records = read_all(state_dir);
    records.retain(|r| r.is_of(backup_root));
    records
}

/// Every config's records in `state_dir`.
fn read_all(state_dir: &Path) -> Vec<Record> {
    crate::stdx::fs::read_bounded(&state_dir.join(FILE_NAME), MAX_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<Records>(&b).ok())
        .map(|r| r.records)
        .unwrap_or_default()
}

impl Record {
    /// Whether this is a record of the config whose backup root is `root`.
    pub fn is_of(&self, root: &Path) -> bool {
        crate::runlog::names_root(self.backup_root.as_deref(), root)
    }
}

/// Remembers what a `--verify` of `backup` on `destination` by the config whose backup root is `backup_root` found:
/// `problem` when damaged, `None` when intact (which forgets an earlier record of this config's). Other configs'
/// records are kept as they are, and so is what another run notes at the same time ([`crate::stdx::locked`]).
pub fn note(
    state_dir: &Path,
    backup_root: &Path,
    destination: &str,
    backup: &str,
    problem: Option<&str>,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> std::io::Result<()> {
    // Nothing to forget: nothing written. Else one run at a time: another's `--verify` may note what it found now.
    let noted =
        |r: &Record| r.destination == destination && r.backup == backup && r.is_of(backup_root);
    if problem.is_none() && !read_all(state_dir).iter().any(noted) {
        return Ok(());
    }
    crate::stdx::fs::create_private_dir(state_dir)?;
    crate::stdx::locked::change(&state_dir.join(FILE_NAME), || {
        let mut records = read_all(state_dir);
        crate::stdx::locked::test_point(FILE_NAME);
        let before = records.len();
        records.retain(|r| !noted(r));
        let Some(problem) = problem else {
            if records.len() == before {
                return Ok(());
            }
            return write(state_dir, records);
        };
        records.push(Record {
            destination: destination.to_string(),
            backup: backup.to_string(),
            found: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            problem: bounded(problem),
            backup_root: Some(crate::runlog::root_name(backup_root)),
        });
        let excess = records.len().saturating_sub(MAX_RECORDS);
        records.drain(..excess);
        write(state_dir, records)
    })
}

/// `problem` cut to [`MAX_PROBLEM`] bytes (at a character's boundary), `...` saying so.
fn bounded(problem: &str) -> String {
    if problem.len() <= MAX_PROBLEM {
        return problem.to_string();
    }
    let mut end = MAX_PROBLEM;
    while !problem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &problem[..end])
}

/// What `status` and `restore --list` say of a backup a record names. Its problem was stored escaped (as `restore
/// --verify` showed it) and is shown as stored: escaped once, not twice. One that holds what escaping leaves out (the
/// file edited by hand: a raw ESC) is escaped, whole.
pub fn note_text(r: &Record) -> String {
    let escaped = crate::stdx::show_str(&r.problem);
    let problem = match escaped == r.problem.replace('\\', "\\\\") {
        true => r.problem.as_str(),
        false => escaped.as_str(),
    };
    format!(
        "restore --verify found it damaged on {}: {problem}",
        crate::stdx::show_str(&r.found)
    )
}

fn write(state_dir: &Path, records: Vec<Record>) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(&Records { format: 1, records })
        .map_err(std::io::Error::other)?;
    crate::snapshot::write_atomic(&state_dir.join(FILE_NAME), &text, 0o600)
        .map_err(std::io::Error::other)
}

/// Why rotation counts a backup a record names as no restore point: `restore --verify, <date>` (the day it was found).
pub fn standing(r: &Record) -> String {
    let date = r.found.get(..10).unwrap_or(&r.found);
    format!("restore --verify, {}", crate::stdx::show_str(date))
}

/// The backups of `destination` still on the drive that a `--verify` found damaged, with why ([`note_text`], for
/// [`super::chain::facts`] and `status`).
pub fn on_destination(
    records: &[Record],
    destination: &str,
    listing: &DriveListing,
) -> BTreeMap<String, String> {
    on_destination_as(records, (destination, listing), note_text)
}

/// [`on_destination`], each said by `text` ([`note_text`], [`standing`]).
pub fn on_destination_as(
    records: &[Record],
    (destination, listing): (&str, &DriveListing),
    text: fn(&Record) -> String,
) -> BTreeMap<String, String> {
    records
        .iter()
        .filter(|r| r.destination == destination)
        .filter(|r| listing.backups.iter().any(|b| b.name == r.backup))
        .map(|r| (r.backup.clone(), text(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339("2026-12-05T18:00:00+01:00").unwrap()
    }

    /// Noted, found for its destination only while the backup is listed, forgotten when intact again; a file that
    /// is not ours counts as empty.
    #[test]
    fn noted_found_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        note(
            &state,
            Path::new("/b"),
            "T9",
            "2026-12-01-031500",
            Some("data.tar: damaged"),
            now(),
        )
        .unwrap();
        let records = read(&state, Path::new("/b"));
        assert_eq!(records.len(), 1);
        let mut listing = DriveListing::default();
        assert!(
            on_destination(&records, "T9", &listing).is_empty(),
            "not on the drive"
        );
        listing.backups.push(crate::external::layout::DriveBackup {
            name: "2026-12-01-031500".into(),
            time: crate::snapshot::parse_stamp("2026-12-01-031500").unwrap(),
            path: "/media/T9/backups/2026-12-01-031500".into(),
            meta: None,
            meta_error: None,
        });
        let found = on_destination(&records, "T9", &listing);
        assert_eq!(
            found["2026-12-01-031500"],
            "restore --verify found it damaged on 2026-12-05T18:00:00+01:00: data.tar: damaged"
        );
        assert!(on_destination(&records, "other", &listing).is_empty());
        note(
            &state,
            Path::new("/b"),
            "T9",
            "2026-12-01-031500",
            None,
            now(),
        )
        .unwrap();
        assert!(read(&state, Path::new("/b")).is_empty());
        // Stored escaped, shown as stored; a raw ESC (a file edited by hand) escaped; a long problem cut.
        let record = |problem: &str| Record {
            destination: "T9".into(),
            backup: "2026-12-01-031500".into(),
            found: "2026-12-05T18:00:00+01:00".into(),
            problem: problem.into(),
            backup_root: None,
        };
        let shown = |problem: &str| note_text(&record(problem));
        let once = shown(r"/m/a\x1b\\b: damaged");
        assert!(once.ends_with(r"+01:00: /m/a\x1b\\b: damaged"), "{once}");
        let raw = shown("/m/a\u{1b}[2J: damaged");
        assert!(raw.ends_with(r"+01:00: /m/a\x1b[2J: damaged"), "{raw}");
        assert_eq!(bounded(&"\u{e9}".repeat(600)).len(), 1024 + 3);
        std::fs::write(state.join(FILE_NAME), "not json").unwrap();
        assert!(read(&state, Path::new("/b")).is_empty());
    }

    /// Two configs of one user share the file: a record is read only by the config whose `--verify` found it (its
    /// backup root), and that config's intact verify of the same stamp on its own drive of that name forgets only
    /// its own record. A record of an older version (no root) is every config's.
    #[test]
    fn a_config_reads_and_forgets_only_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let stamp = "2026-12-01-031500";
        note(state, Path::new("/a"), "usb", stamp, Some("damaged"), now()).unwrap();
        assert!(read(state, Path::new("/b")).is_empty());
        assert_eq!(read(state, Path::new("/a/")).len(), 1);
        note(state, Path::new("/b"), "usb", stamp, None, now()).unwrap();
        assert_eq!(read(state, Path::new("/a")).len(), 1);
        note(state, Path::new("/b"), "usb", stamp, Some("b's"), now()).unwrap();
        assert_eq!(read(state, Path::new("/b"))[0].problem, "b's");
        assert_eq!(read(state, Path::new("/a"))[0].problem, "damaged");

        let older = std::fs::read_to_string(state.join(FILE_NAME))
            .unwrap()
            .replace(r#""backup_root": "/a""#, r#""other": 1"#);
        std::fs::write(state.join(FILE_NAME), older).unwrap();
        assert_eq!(read(state, Path::new("/c")).len(), 1);
        assert_eq!(read(state, Path::new("/b")).len(), 2);
    }
}
