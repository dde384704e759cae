//! Looking inside backups without restoring: `dbackup ls` (one backup's entries under a path) and `dbackup find`
//! (which backups hold paths matching a pattern, and in which versions). Read-only: a drive backup is read through
//! its index alone (never its archive), a local snapshot by walking it without following a symlink.
//!
//! Built on restore's building blocks: [`crate::restore::catalog`] (the local snapshots and the drives present),
//! [`crate::restore::select`] (`--date`), [`crate::restore::index_search`] (an index searched by path),
//! [`crate::restore::keys`] (the keys of an encrypted index). [`pattern`] is `find`'s pure matching.

pub mod choose;
pub mod cloud;
pub mod output;
pub mod pattern;

use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::archive::index::{IndexReader, read_line_bounded};
use crate::archive::{ArchiveFiles, Keys};
use crate::restore::catalog::{self, Drive};
use crate::restore::content::entry_of_index;
use crate::restore::engine::source::SnapshotTree;
use crate::restore::index_search::{SortedIndex, is_under, parse_line};
use crate::restore::keys::{Ask, KeyRing};
use crate::restore::select::Kept;
use crate::restore::{EntryKind, RestoreEntry};
use crate::settings::Settings;
use crate::snapshot;
use crate::stdx::show;

pub(crate) use output::{FindOutput, Found, LsBackup, LsOutput, Version, render_find, render_ls};
pub use pattern::Pattern;

/// The key of a name that is not UTF-8: such a line is always parsed.
static PATH_B64: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"path_b64\""));

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub local: bool,
    pub external: bool,
    /// Only this set.
    pub set: Option<String>,
    /// `--drive DIR` instead of the configured destinations.
    pub drive: Option<PathBuf>,
    /// `--source cloud[:NAME]`: the bucket instead of all of the above (`Some(None)`: the one cloud destination).
    pub cloud: Option<Option<String>>,
}

/// One set of one backup: a local snapshot, or a set's archive on a drive (read through its index).
#[derive(Debug, Clone)]
pub struct SetBackup {
    pub kept: Kept,
    pub stamp: String,
    pub time: NaiveDateTime,
    pub set: String,
    /// The drive holding it (external).
    pub destination: Option<String>,
    /// Verified (drive), complete or incomplete (local): what `--date` may pick (`restore::choose::by_date`).
    pub standing: crate::restore::choose::Standing,
    /// The set's sources as recorded (a path under a source's configured name is found under its resolved one).
    pub sources: Vec<crate::snapshot::SourceRecord>,
    pub content: Content,
    /// A drive backup's archive: full, or incremental on `base` (none for a local snapshot).
    pub backup_kind: Option<crate::archive::ArchiveKind>,
    pub base: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Content {
    Snapshot(PathBuf),
    Index(ArchiveFiles),
    /// Why it cannot be read without its archive (no index): listed as not searched.
    Unreadable(String),
}

impl SetBackup {
    /// For messages: `local 2025-04-01-031500 set docs` or `T9 2025-04-01-031500 set docs`.
    pub fn label(&self) -> String {
        format!(
            "{} {} set {}",
            self.destination.as_deref().unwrap_or("local"),
            self.stamp,
            show(self.set.as_bytes())
        )
    }
}

/// Errors of looking inside one backup.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error(transparent)]
    Search(#[from] crate::restore::index_search::SearchError),
    #[error("cannot read {label}: {source}")]
    Io { label: String, source: io::Error },
    #[error("{0}")]
    Other(String),
}

/// Every backup in `scope`, one per set, oldest first, and the drives' backups passed over because the user cannot
/// read them (one line each: [`catalog::passed_over`]). When only drives are in scope and none of them is present,
/// the error says so with exit 5 (no destination).
pub fn catalog(
    settings: &Settings,
    scope: &Scope,
) -> anyhow::Result<(Vec<SetBackup>, Vec<String>)> {
    let mut out = Vec::new();
    if scope.local && scope.drive.is_none() {
        let mut sets = catalog::local_set_names(settings);
        if let Some(s) = &scope.set {
            sets.retain(|n| n == s);
        }
        for s in catalog::local_snapshots(&settings.backup_root, &sets)? {
            out.push(SetBackup {
                kept: Kept::Local,
                stamp: snapshot::stamp(s.time),
                time: s.time,
                set: s.set.clone(),
                destination: None,
                standing: crate::restore::choose::Standing::of_snapshot(s.state()),
                sources: s
                    .metadata
                    .as_ref()
                    .map(|m| m.sources.clone())
                    .unwrap_or_default(),
                content: Content::Snapshot(s.path.clone()),
                backup_kind: None,
                base: None,
            });
        }
    }
    let mut drives = Vec::new();
    if scope.external {
        drives = catalog::drives(settings, scope.drive.as_deref())?;
        for (d, b) in catalog::drive_backups(&drives) {
            for s in &b.sets {
                if scope.set.as_ref().is_some_and(|o| *o != s.name) {
                    continue;
                }
                let content = match &s.index {
                    None => Content::Unreadable("it has no index".into()),
                    Some(i) => match ArchiveFiles::discover(&b.dir.path, i) {
                        Ok(f) => index_as_recorded(f, s, i),
                        Err(e) => Content::Unreadable(format!("its index cannot be read: {e}")),
                    },
                };
                let record = b
                    .dir
                    .meta
                    .as_ref()
                    .and_then(|m| m.sets.iter().find(|r| r.set == s.name));
                out.push(SetBackup {
                    kept: Kept::External,
                    stamp: b.dir.name.clone(),
                    time: b.dir.time,
                    set: s.name.clone(),
                    destination: Some(d.name.clone()),
                    standing: crate::restore::choose::Standing::of_drive_backup(b.verified()),
                    sources: s.sources.clone(),
                    content,
                    backup_kind: Some(record.map(|r| r.kind).unwrap_or_default()),
                    base: record.and_then(|r| r.base.clone()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.set.cmp(&b.set)));
    if scope.external && !scope.local && !drives.iter().any(Drive::present) {
        let no_drive = catalog::no_drive_message(&drives);
        return Err(
            crate::exit::CodedError::new(crate::exit::Exit::NoDestination, no_drive).into(),
        );
    }
    Ok((out, catalog::passed_over(&drives).cloned().collect()))
}

/// A drive backup's index, when its length is the one `backup.json` records (as a restore checks before it reads
/// it): an index cut short, or with lines added, is not listed from.
fn index_as_recorded(
    files: ArchiveFiles,
    set: &crate::restore::drive::DriveSet,
    name: &str,
) -> Content {
    match set.records.iter().find(|r| r.name == name) {
        Some(r) if r.bytes != files.len() => Content::Unreadable(format!(
            "its index is {} bytes where backup.json says {}: the backup is damaged or was changed (`dbackup \
             restore --verify` checks it)",
            files.len(),
            r.bytes
        )),
        _ => Content::Index(files),
    }
}

/// Opens the encrypted indexes of `backups` with the keys the ring finds for each destination (its passphrase; read
/// once, only when one is encrypted). `Err` with the reason when they are needed and cannot be had (ending with how
/// to give the identity, once); the plain ones are untouched.
pub fn unlock(backups: &mut [SetBackup], ring: &KeyRing) -> Result<Vec<String>, String> {
    let encrypted = |b: &SetBackup| matches!(&b.content, Content::Index(f) if f.encrypted());
    let mut destinations: Vec<Option<String>> = backups
        .iter()
        .filter(|b| encrypted(b))
        .map(|b| b.destination.clone())
        .collect();
    destinations.sort();
    destinations.dedup();
    let mut warnings: Vec<String> = Vec::new();
    for destination in destinations {
        let on = |b: &SetBackup| encrypted(b) && b.destination == destination;
        let files: Vec<&ArchiveFiles> = backups
            .iter()
            .filter(|b| on(b))
            .filter_map(|b| match &b.content {
                Content::Index(f) => Some(f),
                _ => None,
            })
            .collect();
        let found = ring
            .keys_for(
                destination.as_deref().unwrap_or(""),
                &files,
                false,
                Ask::Always,
            )
            .map_err(|e| {
                let why = e.to_string();
                match why.contains("--identity") {
                    true => why,
                    false => format!("{why}; give the identity with --identity FILE"),
                }
            })?;
        let keys: Option<Arc<Keys>> = found.keys;
        for b in backups.iter_mut().filter(|b| on(b)) {
            if let Content::Index(f) = &mut b.content {
                *f = f.clone().with_keys(keys.clone());
            }
        }
        for w in found.warnings {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
    }
    Ok(warnings)
}

/// An index line as an entry; a hard link keeps the size of the file it names.
fn entry(e: &crate::archive::IndexEntry) -> RestoreEntry {
    let mut r = entry_of_index(e);
    if r.kind == EntryKind::Hardlink {
        r.size = e.size;
    }
    r
}

/// A snapshot walk's second name of a file is a file of its own here (which name comes first depends on where the
/// walk started), with its size.
fn as_file(root: &Path, mut e: RestoreEntry) -> RestoreEntry {
    if e.kind == EntryKind::Hardlink {
        e.kind = EntryKind::File;
        e.link = None;
        e.size = std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(&e.name)))
            .map_or(0, |m| m.len());
    }
    e
}

fn depth(name: &[u8]) -> usize {
    name.split(|&c| c == b'/').filter(|c| !c.is_empty()).count()
}

/// The entries of `b` at `name` (relative: the absolute path without its `/`; empty for the root): the entry itself
/// when it is not a directory, else what is in it (everything below with `recursive`). `Ok(None)` when `b` does not
/// hold `name`.
pub fn ls(
    b: &SetBackup,
    name: &[u8],
    recursive: bool,
) -> Result<Option<Vec<RestoreEntry>>, BrowseError> {
    let below = |e: &[u8]| recursive || depth(e) == depth(name) + 1;
    match &b.content {
        Content::Unreadable(why) => Err(BrowseError::Other(format!(
            "{} cannot be listed: {why}; restore it to look inside",
            b.label()
        ))),
        Content::Index(files) => {
            let mut idx = SortedIndex::open(files)?;
            let mut out = Vec::new();
            if !name.is_empty() {
                match idx.find(name)? {
                    None => return Ok(None),
                    Some(e) if e.kind != EntryKind::Dir => {
                        return Ok(Some(vec![entry(&e)]));
                    }
                    Some(_) => {}
                }
            }
            let pos = idx.lower_bound(name)?;
            idx.read_from(pos, |e| {
                if !is_under(&e.path, name) {
                    return false;
                }
                if depth(&e.path) > depth(name) && below(&e.path) {
                    out.push(entry(&e));
                }
                true
            })?;
            Ok(Some(out))
        }
        Content::Snapshot(root) => {
            // Every component is looked at without following a link: a symlink in the snapshot is listed, never
            // entered.
            let rel = Path::new(std::ffi::OsStr::from_bytes(name));
            let mut at = root.clone();
            let comps: Vec<_> = rel.components().collect();
            for (i, c) in comps.iter().enumerate() {
                at.push(c);
                let md = match std::fs::symlink_metadata(&at) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e)
                        if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
                    {
                        return Ok(None);
                    }
                    Err(source) => {
                        return Err(BrowseError::Io {
                            label: b.label(),
                            source,
                        });
                    }
                };
                if !md.is_dir() {
                    if i + 1 < comps.len() {
                        return Ok(None);
                    }
                    let link = md
                        .file_type()
                        .is_symlink()
                        .then(|| std::fs::read_link(&at).ok())
                        .flatten()
                        .map(|l| l.as_os_str().as_bytes().to_vec());
                    return Ok(Some(vec![RestoreEntry::from_metadata(
                        name.to_vec(),
                        &md,
                        link,
                    )]));
                }
            }
            let mut out = Vec::new();
            for e in SnapshotTree::new(root).entries(rel) {
                let e = e.map_err(|e| BrowseError::Other(format!("{}: {e}", b.label())))?;
                if depth(&e.name) > depth(name) && below(&e.name) {
                    out.push(as_file(root, e));
                }
            }
            Ok(Some(out))
        }
    }
}

/// Visits the entries of `b` whose path matches `pattern`. A drive backup's index is read as a stream, once.
pub fn find(
    b: &SetBackup,
    pattern: &Pattern,
    mut f: impl FnMut(RestoreEntry),
) -> Result<(), BrowseError> {
    match &b.content {
        Content::Unreadable(why) => Err(BrowseError::Other(format!(
            "{} was not searched: {why}",
            b.label()
        ))),
        Content::Index(files) => {
            let label = files.label();
            let damaged = |problem: String| {
                BrowseError::Other(format!("the index {label} is damaged: {problem}"))
            };
            let io_err = |source| BrowseError::Io {
                label: label.clone(),
                source,
            };
            let mut r = BufReader::with_capacity(256 << 10, files.open().map_err(io_err)?);
            // The header line, checked once; each line that may match is parsed with it. A line that cannot hold
            // the pattern's plain part is passed over unparsed: that is what makes a search read at grep's pace.
            let mut header = Vec::new();
            match read_line_bounded(&mut r, &mut header).map_err(io_err)? {
                Some(n) if n > 0 && header.ends_with(b"\n") => {}
                _ => return Err(damaged("its first line is missing or too long".into())),
            }
            IndexReader::new(io::Cursor::new(&header)).map_err(|e| damaged(e.to_string()))?;
            let filter = pattern.line_filter().map(memchr::memmem::Finder::new);
            let mut line = Vec::new();
            let mut at = header.len() as u64;
            loop {
                line.clear();
                match read_line_bounded(&mut r, &mut line).map_err(io_err)? {
                    Some(0) => return Err(damaged("it has no `end` line: it is truncated".into())),
                    Some(_) if line.ends_with(b"\n") => {}
                    Some(_) => return Err(damaged("its last line is cut short".into())),
                    None => return Err(damaged("a line is too long".into())),
                }
                if line.starts_with(b"{\"type\":\"end\"") {
                    let mut rest = [0u8; 1];
                    if io::Read::read(&mut r, &mut rest).map_err(io_err)? != 0 {
                        return Err(damaged("bytes follow its `end` line".into()));
                    }
                    return Ok(());
                }
                let start = at;
                at += line.len() as u64;
                if let Some(f) = &filter
                    && f.find(&line).is_none()
                    && PATH_B64.find(&line).is_none()
                {
                    continue;
                }
                let e = parse_line(&header, &label, &line, start)?;
                if pattern.matches(&e.path) {
                    f(entry(&e));
                }
            }
        }
        Content::Snapshot(root) => {
            for e in SnapshotTree::new(root).entries(Path::new("")) {
                let e = e.map_err(|e| BrowseError::Other(format!("{}: {e}", b.label())))?;
                if pattern.matches(&e.name) {
                    f(as_file(root, e));
                }
            }
            Ok(())
        }
    }
}

/// One entry as `ls` and `find` print it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// Its [`EntryKind::word`] (`char-device`, not the index's `char`).
    #[serde(serialize_with = "EntryKind::serialize_word")]
    pub kind: EntryKind,
    /// Octal permission bits (`0644`).
    pub mode: String,
    pub size: u64,
    /// RFC 3339 with the local offset.
    pub mtime: String,
    /// The absolute path, escaped (see [`crate::stdx::show`]).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Shown {
    pub fn of(e: &RestoreEntry) -> Shown {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(&e.name);
        Shown {
            kind: e.kind,
            mode: format!("{:04o}", e.mode & 0o7777),
            size: e.size,
            mtime: mtime_rfc3339(e.mtime.sec, e.mtime.nsec),
            path: show(&abs),
            link: e.link.as_deref().map(show),
        }
    }
}

/// Seconds and nanoseconds since the epoch, as RFC 3339 with the local offset (the epoch for an impossible time).
pub fn mtime_rfc3339(sec: i64, nsec: u32) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(sec, nsec)
        .single()
        .unwrap_or_default()
        .fixed_offset()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
