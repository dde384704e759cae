//! The run log: one JSON line per run appended under `$XDG_STATE_HOME/dbackup/`.
//!
//! `<state_dir>/log.jsonl` holds one [`RunRecord`] per line, oldest first. Past [`MAX_BYTES`] it is rotated to
//! `log.jsonl.1` (replacing the previous one), so the log stays bounded. Dry runs are not logged.
//!
//! The state directory is per user, so two configs of one user share the log: each line names the backup root of the
//! config that ran it ([`RunRecord::backup_root`]), and a config reads only its own lines ([`RunRecord::is_of`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::interrupt::Interrupted;

/// Beyond this size the log is rotated before the next line is appended.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// The most items of any one list a line keeps (the files a run could not read, that vanished, ...): the snapshot's
/// metadata holds the whole list; the log keeps each line, and so itself, bounded.
pub const MAX_LIST_ITEMS: usize = 100;
pub const FILE_NAME: &str = "log.jsonl";

/// One run of any command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `collect`, `external`, `backup`, ...
    pub command: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// The process exit code (see `src/exit.rs`).
    pub exit: u8,
    /// The error that ended the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pid: u32,
    pub dbackup_version: String,
    /// Per-set results, as the command reports them (for collect: the `--json` report's `sets`).
    #[serde(default)]
    pub sets: serde_json::Value,
    /// The signal that interrupted the run (`SIGINT`, `SIGTERM`); its exit is then 128 + the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// The backup root of the config that ran it: whose run this is, when configs share the log. The root, not the
    /// config file (its path and bytes change with each NixOS or home-manager rebuild): where a config's snapshots
    /// are, what its run lock is taken on, and what each of its backups is made from. `None` in a line of an older
    /// version: then it counts for every config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<String>,
}

impl RunRecord {
    /// A record of a run of `command` that started at `started` and finishes now, in this process.
    pub fn new(
        command: &str,
        started: DateTime<FixedOffset>,
        exit: u8,
        error: Option<String>,
        sets: serde_json::Value,
    ) -> RunRecord {
        RunRecord {
            command: command.into(),
            started,
            finished: chrono::Local::now().fixed_offset(),
            exit,
            error,
            pid: std::process::id(),
            dbackup_version: env!("CARGO_PKG_VERSION").into(),
            sets,
            interrupted: None,
            backup_root: None,
        }
    }

    /// This record as the run of the config whose backup root is `root`.
    pub fn of_root(mut self, root: &Path) -> RunRecord {
        self.backup_root = Some(root_name(root));
        self
    }

    /// Whether this is a run of the config whose backup root is `root` (see [`names_root`]).
    pub fn is_of(&self, root: &Path) -> bool {
        names_root(self.backup_root.as_deref(), root)
    }

    /// This record as the line of a run that `why` interrupted: exit 128 + the signal, the signal named, and an
    /// error saying so (unless one is already there).
    pub fn interrupted_by(mut self, why: Interrupted) -> RunRecord {
        self.exit = why.exit_code();
        self.interrupted = Some(why.signal_name().to_string());
        if self.error.is_none() {
            self.error = Some(format!("{why}; the next run resumes"));
        }
        self
    }
}

/// How what the state directory keeps names the config it is of (a run's line, a damage record): by its backup root,
/// as text (a root that is not UTF-8 lossily).
pub fn root_name(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

/// Whether `named` (a [`root_name`], or none: written by an older version) is of the config whose backup root is
/// `root`: the same path, written alike or not (`/b/` is `/b`); what names none is of every config.
pub fn names_root(named: Option<&str>, root: &Path) -> bool {
    named.is_none_or(|r| Path::new(r) == Path::new(&root_name(root)))
}

/// The run this process is doing, registered by the commands that log their runs ([`begin`]) until its line is
/// written ([`end`]), so that a panic or a second signal still leaves a line ([`abandon`]).
struct Current {
    state_dir: PathBuf,
    backup_root: PathBuf,
    command: String,
    started: DateTime<FixedOffset>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

fn current() -> std::sync::MutexGuard<'static, Option<Current>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the run of `command` by the config whose backup root is `backup_root` that starts now; returns its
/// start time.
pub fn begin(state_dir: &Path, backup_root: &Path, command: &str) -> DateTime<FixedOffset> {
    let started = chrono::Local::now().fixed_offset();
    *current() = Some(Current {
        state_dir: state_dir.to_path_buf(),
        backup_root: backup_root.to_path_buf(),
        command: command.to_string(),
        started,
    });
    started
}

/// The run's line is being written the ordinary way: nothing is left for [`abandon`].
pub fn end() {
    current().take();
}

/// Writes the line of a registered run that ends abnormally (a panic, a second signal), if its line was not written
/// yet. Returns whether a line was written. Best effort: the process is ending.
pub fn abandon(exit: u8, error: String, interrupted: Option<Interrupted>) -> bool {
    let Some(run) = current().take() else {
        return false;
    };
    let mut record = RunRecord::new(
        &run.command,
        run.started,
        exit,
        Some(error),
        serde_json::Value::Null,
    )
    .of_root(&run.backup_root);
    if let Some(why) = interrupted {
        record = record.interrupted_by(why);
    }
    append(&run.state_dir, &record).is_ok()
}

/// The log file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Appends one record (creating `state_dir` 0700 if needed), rotating the file first when it is too big; one run at
/// a time ([`crate::stdx::locked`]).
pub fn append(state_dir: &Path, record: &RunRecord) -> io::Result<PathBuf> {
    crate::stdx::fs::create_private_dir(state_dir)?;
    let path = path(state_dir);
    let record = RunRecord {
        sets: bounded(record.sets.clone()),
        ..record.clone()
    };
    let mut line = serde_json::to_string(&record).map_err(io::Error::other)?;
    line.push('\n');
    // One run at a time: two that found the log full would each rotate it, the second replacing the rotated log (every
    // earlier line) with the first's one line; and a line cut off again below is no other run's.
    crate::stdx::locked::change(&path, || {
        let full = fs::metadata(&path)
            .map(|m| m.len() >= MAX_BYTES)
            .unwrap_or(false);
        crate::stdx::locked::test_point(FILE_NAME);
        if full {
            fs::rename(&path, state_dir.join(format!("{FILE_NAME}.1")))?;
        }
        write_line(&path, line)
    })?;
    Ok(path)
}

/// Appends `line` to the log at `path`.
fn write_line(path: &Path, mut line: String) -> io::Result<()> {
    // Never blocking on a FIFO someone put there (open for writing waits for a reader), and only into a regular file.
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file: no run is logged there; remove it",
            crate::stdx::show_path(path)
        )));
    }
    // A line an earlier run could write only in part (a crash) is ended first: this one is not glued onto it.
    let len = f.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)?;
    }
    if last != [b'\n'] {
        line.insert(0, '\n');
    }
    // One write of the whole line. A full filesystem can take a part of it: that part is cut off again, so that the
    // log holds whole lines only.
    if let Err(e) = f.write_all(line.as_bytes()) {
        let _ = f.set_len(len);
        return Err(e);
    }
    Ok(())
}

/// `value` with every list longer than [`MAX_LIST_ITEMS`] cut to that many; a cut list `key` of an object gets a
/// sibling `key_total` saying how many items it had.
fn bounded(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .take(MAX_LIST_ITEMS)
                .map(bounded)
                .collect(),
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, v) in map {
                if let Value::Array(items) = &v
                    && items.len() > MAX_LIST_ITEMS
                {
                    out.insert(format!("{key}_total"), items.len().into());
                }
                out.insert(key, bounded(v));
            }
            Value::Object(out)
        }
        other => other,
    }
}

/// The most of a log file that is read (checked before reading). The log is rotated at [`MAX_BYTES`], so only a
/// file that is not dbackup's comes near it.
pub const MAX_READ_BYTES: u64 = 64 << 20;

/// The text of the log file `file` (the current one or the rotated one), `None` when there is none. A FIFO, a
/// device, a symlink or a file larger than [`MAX_READ_BYTES`] is refused at once; a byte that is not UTF-8 spoils
/// only its line.
pub fn read_text(file: &Path) -> Result<Option<String>, crate::stdx::fs::FsError> {
    use crate::stdx::fs::FsError;
    match crate::stdx::fs::read_bounded(file, MAX_READ_BYTES) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(FsError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads every record of the current log file (not the rotated one); unparsable lines are skipped.
pub fn read(state_dir: &Path) -> io::Result<Vec<RunRecord>> {
    let Some(text) = read_text(&path(state_dir)).map_err(io::Error::other)? else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The newest snapshot under `root` that the runs of `records` name (collect's new snapshots, external's exported
/// ones: any string of a record that is `<root>/<set>-<stamp>`), the newest run first: what the backup root held
/// once, for `collect` to notice that it holds none of it now (its disk not mounted).
pub fn last_snapshot_under(records: &[RunRecord], root: &Path) -> Option<PathBuf> {
    fn find(v: &serde_json::Value, root: &Path) -> Option<PathBuf> {
        match v {
            serde_json::Value::String(s) => {
                let p = Path::new(s);
                let name = p.strip_prefix(root).ok()?.to_str()?;
                (!name.contains('/') && crate::snapshot::split_snapshot_name(name).is_some())
                    .then(|| p.to_path_buf())
            }
            serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, root)),
            serde_json::Value::Object(o) => o.values().find_map(|v| find(v, root)),
            _ => None,
        }
    }
    records.iter().rev().find_map(|r| find(&r.sets, root))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of `command` that started and finished `at`, ended with `exit` and `sets`, and no error (pid 1, version
    /// "0", no backup root named).
    pub(crate) fn record_at(
        command: &str,
        at: DateTime<FixedOffset>,
        exit: u8,
        sets: serde_json::Value,
    ) -> RunRecord {
        RunRecord {
            command: command.into(),
            started: at,
            finished: at,
            exit,
            error: None,
            pid: 1,
            dbackup_version: "0".into(),
            sets,
            interrupted: None,
            backup_root: None,
        }
    }

    fn record(n: u8) -> RunRecord {
        let now = chrono::Local::now().fixed_offset();
        let sets = serde_json::json!([{ "set": "data", "pad": "x".repeat(1000) }]);
        record_at("collect", now, n, sets)
    }

    /// The newest run's snapshot under the root, collect's or external's, never a path elsewhere or not a stamp.
    #[test]
    fn the_last_snapshot_under_a_root_comes_from_the_newest_run_naming_one() {
        let mut a = record(0);
        a.sets = serde_json::json!([{ "set": "data", "path": "/b/data-2025-04-01-031500" }]);
        let mut b = record(0);
        b.sets = serde_json::json!({ "sets": [{ "snapshot_path": "/b/data-2025-04-02-031500" }] });
        let mut c = record(1);
        c.sets = serde_json::json!([{ "path": "/b/sub/data-2025-04-03-031500", "x": "/b/notes.txt",
            "y": "/elsewhere/data-2025-04-04-031500", "z": "/b/-2025-04-04-031500" }]);
        let root = Path::new("/b");
        assert_eq!(
            last_snapshot_under(&[a.clone(), b, c.clone()], root),
            Some(PathBuf::from("/b/data-2025-04-02-031500"))
        );
        assert_eq!(
            last_snapshot_under(&[a, c.clone()], root),
            Some(PathBuf::from("/b/data-2025-04-01-031500"))
        );
        assert_eq!(last_snapshot_under(&[c], root), None);
    }

    /// A line is of the config whose backup root it names, written alike or not; a line that names none (an older
    /// version's) is of every config.
    #[test]
    fn a_line_is_of_the_config_whose_backup_root_it_names() {
        let ours = record(0).of_root(Path::new("/home/u/.local/share/dbackup"));
        assert!(ours.is_of(Path::new("/home/u/.local/share/dbackup")));
        assert!(ours.is_of(Path::new("/home/u/.local/share/dbackup/")));
        assert!(ours.is_of(Path::new("/home/u/.local/share/./dbackup")));
        assert!(!ours.is_of(Path::new("/mnt/backup")));
        assert!(!ours.is_of(Path::new("/home/u/.local/share")));
        let older = record(0);
        assert!(older.is_of(Path::new("/mnt/backup")));
        // A root that is not UTF-8 is named lossily, and still its own.
        let odd =
            Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/mnt/b\xff"));
        let line = serde_json::to_string(&record(0).of_root(odd)).unwrap();
        let back: RunRecord = serde_json::from_str(&line).unwrap();
        assert!(back.is_of(odd) && !back.is_of(Path::new("/mnt/b")));
    }

    #[test]
    fn lines_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/dbackup");
        append(&state, &record(0)).unwrap();
        append(&state, &record(3)).unwrap();
        let all = read(&state).unwrap();
        assert_eq!(all.iter().map(|r| r.exit).collect::<Vec<_>>(), [0, 3]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(path(&state)).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    /// A line written only in part (a crash; a full disk before it was cut off again) does not swallow the next
    /// run's line: that one starts on a line of its own and reads back.
    #[test]
    fn a_line_written_in_part_does_not_take_the_next_one_with_it() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &record(0)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        f.write_all(br#"{"command":"collect","star"#).unwrap();
        append(dir.path(), &record(1)).unwrap();
        let all = read(dir.path()).unwrap();
        assert_eq!(all.iter().map(|r| r.exit).collect::<Vec<_>>(), [0, 1]);
    }

    /// A run that could not read 100,000 files (a tree of another user's) logs a line of bounded size, saying how
    /// many there were. Before: every one of them, some 20 MB in one line, which `status` then read on every call.
    #[test]
    fn a_line_keeps_at_most_a_hundred_items_of_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let unreadable: Vec<serde_json::Value> = (0..100_000)
            .map(|i| serde_json::json!({ "path": format!("/data/shared/{i:06}"), "message": "Permission denied (13)" }))
            .collect();
        let sets = serde_json::json!([{ "set": "data", "unreadable": unreadable, "vanished": ["/data/x"] }]);
        append(dir.path(), &RunRecord { sets, ..record(3) }).unwrap();
        let size = fs::metadata(path(dir.path())).unwrap().len();
        assert!(size < 64 << 10, "{size}");
        let logged = &read(dir.path()).unwrap()[0].sets[0];
        assert_eq!(
            logged["unreadable"].as_array().unwrap().len(),
            MAX_LIST_ITEMS
        );
        assert_eq!(logged["unreadable_total"], 100_000);
        assert_eq!(logged["unreadable"][0]["path"], "/data/shared/000000");
        assert_eq!(logged["vanished"], serde_json::json!(["/data/x"]));
        assert!(logged.get("vanished_total").is_none());
    }

    #[test]
    fn the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..1500 {
            append(dir.path(), &record(0)).unwrap();
        }
        let size = fs::metadata(path(dir.path())).unwrap().len();
        let rotated = fs::metadata(dir.path().join("log.jsonl.1")).unwrap().len();
        assert!(size < MAX_BYTES + 2048, "{size}");
        assert!(
            (MAX_BYTES..MAX_BYTES + 2048).contains(&rotated),
            "{rotated}"
        );
        assert!(read(dir.path()).unwrap().len() < 1500);
    }
}
