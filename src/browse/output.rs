//! What `ls` and `find` print: their `--json` shapes ([`LsOutput`], [`FindOutput`]) and their tables (paths and
//! names already escaped when they get here; set names escaped on the way out).

use std::fmt::Write as _;

use serde::Serialize;

use super::Shown;
use crate::restore::select::Kept;
use crate::stdx::show;

/// What `ls --json` prints.
#[derive(Debug, Serialize)]
pub struct LsOutput {
    /// The absolute path listed.
    pub path: String,
    pub recursive: bool,
    /// Each set of the chosen backup that holds the path.
    pub backups: Vec<LsBackup>,
}

#[derive(Debug, Serialize)]
pub struct LsBackup {
    pub source: Kept,
    pub stamp: String,
    pub set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// A drive backup: `full`, or `incremental` on `base` (as `restore --list` says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::archive::ArchiveKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub entries: Vec<Shown>,
}

/// What `find --json` prints.
#[derive(Debug, Serialize)]
pub struct FindOutput {
    pub pattern: String,
    /// Backups (one set of one backup each) searched.
    pub searched: usize,
    /// Those that could not be searched, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_searched: Vec<String>,
    /// Sorted by path.
    pub matches: Vec<Found>,
}

/// A matching path and every backup holding it, newest first.
#[derive(Debug, Serialize)]
pub struct Found {
    /// Absolute, escaped.
    pub path: String,
    pub versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
pub struct Version {
    pub source: Kept,
    pub stamp: String,
    pub set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// A drive backup: `full`, or `incremental` on `base` (`kind` is the entry's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_kind: Option<crate::archive::ArchiveKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(flatten)]
    pub entry: Shown,
}

/// The table: a heading per set of the backup, then one line per entry.
pub(crate) fn render_ls(o: &LsOutput) -> String {
    let mut s = String::new();
    for (n, b) in o.backups.iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        let kind = match (b.kind, &b.base) {
            (Some(crate::archive::ArchiveKind::Incremental), Some(base)) => {
                format!(" (incremental on {})", show(base.as_bytes()))
            }
            (Some(k), _) => format!(" ({})", k.name()),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            s,
            "{} {} set {}: {}{kind}",
            b.destination.as_deref().map_or("local", |d| d),
            b.stamp,
            show(b.set.as_bytes()),
            o.path
        );
        table(&mut s, &b.entries);
    }
    s
}

/// An entry's size for people: files and hard links have one, other kinds `-`.
fn size_of(e: &Shown) -> String {
    match e.kind {
        crate::restore::EntryKind::File | crate::restore::EntryKind::Hardlink => {
            crate::stdx::bytes(e.size)
        }
        _ => "-".into(),
    }
}

/// An mtime (RFC 3339) to the minute, `2025-04-01 03:15`; one that does not parse as it is.
fn minute_of(mtime: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(mtime)
        .map(|t| t.format(crate::stdx::MINUTE).to_string())
        .unwrap_or_else(|_| mtime.to_string())
}

/// Entries as `kind mode size mtime path` columns (paths already escaped).
pub(crate) fn table(s: &mut String, entries: &[Shown]) {
    let sizes: Vec<String> = entries.iter().map(size_of).collect();
    let kw = entries
        .iter()
        .map(|e| e.kind.word().len())
        .max()
        .unwrap_or(0);
    let sw = sizes.iter().map(|x| x.len()).max().unwrap_or(0);
    for (e, size) in entries.iter().zip(&sizes) {
        let when = minute_of(&e.mtime);
        let _ = write!(
            s,
            "{:<kw$}  {}  {size:>sw$}  {when}  {}",
            e.kind.word(),
            e.mode,
            e.path
        );
        if let Some(l) = &e.link {
            let _ = write!(s, " -> {l}");
        }
        s.push('\n');
    }
}

/// Each matching path, then one line per backup holding it (newest first).
pub(crate) fn render_find(o: &FindOutput) -> String {
    let mut s = String::new();
    if o.matches.is_empty() {
        let _ = writeln!(
            s,
            "no path matches {} in {}",
            o.pattern,
            crate::stdx::counted(o.searched as u64, "backup", "backups")
        );
        return s;
    }
    for f in &o.matches {
        let _ = writeln!(s, "{}", f.path);
        let rows: Vec<[String; 6]> = f
            .versions
            .iter()
            .map(|v| {
                let size = size_of(&v.entry);
                let when = minute_of(&v.entry.mtime);
                [
                    v.stamp.clone(),
                    v.destination.clone().unwrap_or_else(|| "local".into()),
                    format!("set {}", show(v.set.as_bytes())),
                    v.backup_kind.map_or("snapshot", |k| k.name()).to_string(),
                    format!("{} {}", v.entry.kind.word(), v.entry.mode),
                    format!("{size}  {when}"),
                ]
            })
            .collect();
        let mut w = [0usize; 5];
        for r in &rows {
            for (i, c) in r.iter().take(5).enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        for r in &rows {
            let _ = writeln!(
                s,
                "  {:<a$}  {:<b$}  {:<c$}  {:<d$}  {:<e$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3],
                e = w[4]
            );
        }
    }
    s
}
