//! Backups that `restore --verify` found damaged, remembered in the state directory (`damaged.json`) so the next
//! external run does not extend a chain through them: damage that keeps a file's size (a flipped bit) is invisible
//! to the external's own look at a drive (one `lstat` per file), and reading a drive never writes to it. A later
//! `--verify` that finds the backup intact forgets it; records of backups no longer on the drive are ignored.

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
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    format: u32,
    records: Vec<Record>,
}

/// The records in `state_dir` (none when the file is missing, too big or unparsable).
pub fn read(state_dir: &Path) -> Vec<Record> {
    crate::stdx::fs::read_bounded(&state_dir.join(FILE_NAME), MAX_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<Records>(&b).ok())
        .map(|r| r.records)
        .unwrap_or_default()
}

/// Remembers what a `--verify` of `backup` on `destination` found: `problem` when damaged, `None` when intact
/// (which forgets an earlier record).
pub fn note(
    state_dir: &Path,
    destination: &str,
    backup: &str,
    problem: Option<&str>,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> std::io::Result<()> {
    let mut records = read(state_dir);
    let before = records.len();
    records.retain(|r| !(r.destination == destination && r.backup == backup));
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
    });
    let excess = records.len().saturating_sub(MAX_RECORDS);
    records.drain(..excess);
    write(state_dir, records)
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
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let text = serde_json::to_vec_pretty(&Records { format: 1, records })
        .map_err(std::io::Error::other)?;
    crate::snapshot::write_atomic(&state_dir.join(FILE_NAME), &text, 0o600)
        .map_err(std::io::Error::other)
}

/// The backups of `destination` still on the drive that a `--verify` found damaged, with why (for
/// [`super::chain::facts`]).
pub fn on_destination(
    records: &[Record],
    destination: &str,
    listing: &DriveListing,
) -> BTreeMap<String, String> {
    records
        .iter()
        .filter(|r| r.destination == destination)
        .filter(|r| listing.backups.iter().any(|b| b.name == r.backup))
        .map(|r| (r.backup.clone(), note_text(r)))
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
            "T9",
            "2026-12-01-031500",
            Some("data.tar: damaged"),
            now(),
        )
        .unwrap();
        let records = read(&state);
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
        note(&state, "T9", "2026-12-01-031500", None, now()).unwrap();
        assert!(read(&state).is_empty());
        // Stored escaped, shown as stored; a raw ESC (a file edited by hand) escaped; a long problem cut.
        let record = |problem: &str| Record {
            destination: "T9".into(),
            backup: "2026-12-01-031500".into(),
            found: "2026-12-05T18:00:00+01:00".into(),
            problem: problem.into(),
        };
        let shown = |problem: &str| note_text(&record(problem));
        let once = shown(r"/m/a\x1b\\b: damaged");
        assert!(once.ends_with(r"+01:00: /m/a\x1b\\b: damaged"), "{once}");
        let raw = shown("/m/a\u{1b}[2J: damaged");
        assert!(raw.ends_with(r"+01:00: /m/a\x1b[2J: damaged"), "{raw}");
        assert_eq!(bounded(&"\u{e9}".repeat(600)).len(), 1024 + 3);
        std::fs::write(state.join(FILE_NAME), "not json").unwrap();
        assert!(read(&state).is_empty());
    }
}
