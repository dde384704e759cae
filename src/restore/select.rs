//! Choosing what to restore, as pure functions over plain values: what `restore` is asked ([`Request`], the command
//! line converted once), where a backup is kept ([`Kept`], `--source`), which backup `--date` means, where a `--path`
//! the user typed lies inside a backup (`~`, relative paths, the alias of a symlinked source), and the nearest names
//! when it is not there.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::engine::safety::{self, RelPath};
use super::engine::{Compare, Overwrite};
use crate::snapshot::{self, SourceRecord};

/// Where a backup is kept (also `restore --source`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    Local,
    /// The drive's backups (also `drive`)
    #[value(alias = "drive")]
    External,
    /// A cloud destination's backups (restore: `cloud:NAME` for one of several)
    Cloud,
}

impl Kept {
    pub fn word(self) -> &'static str {
        match self {
            Kept::Local => "local",
            Kept::External => "external",
            Kept::Cloud => "cloud",
        }
    }
}

/// What `restore` is asked (to list, verify or restore): the command line converted once, by `commands/restore.rs`,
/// into plain values. Nothing below the command sees a clap type.
#[derive(Debug, Clone)]
pub struct Request {
    /// `--source`: local snapshots or the drive's backups; `None` lets [`Request::source`] decide (and `--list`
    /// show both).
    pub source: Option<Kept>,
    /// `--source cloud:NAME`: the cloud destination (`None` with `--source cloud`: the only one, or the first by
    /// priority).
    pub cloud: Option<String>,
    /// `--date`.
    pub date: DateQuery,
    /// `--set`: one set only.
    pub set: Option<String>,
    /// `--drive`: the drive's backups read from this directory instead of the configured destinations.
    pub drive: Option<PathBuf>,
    /// `--path`, made absolute: what to restore (or describe), or every source when empty.
    pub paths: Vec<PathBuf>,
    /// `--target`, made absolute: restore under it, or in place when `None`.
    pub target: Option<PathBuf>,
    /// `--identity`: age identity files, beside the config's.
    pub identities: Vec<PathBuf>,
    pub overwrite: Overwrite,
    pub compare: Compare,
    pub preserve_special: bool,
    /// `--skip-refused`: restore what is not refused.
    pub skip_refused: bool,
    /// `--no-escaping-links`.
    pub refuse_escaping_links: bool,
    /// Keep what a restore replaces in `displaced/` (unless `--no-keep`).
    pub keep: bool,
    /// `--verify --deep`: also read every byte an incremental keeps in earlier backups.
    pub deep: bool,
    /// `--verify`: check the backup, write nothing (a backup of partition images only can be named by its stamp).
    pub verify: bool,
}

impl Request {
    /// Where to read from: `--source`, else the drive with `--drive`, else the local snapshots.
    pub fn source(&self) -> Kept {
        match (self.source, &self.drive) {
            (Some(s), _) => s,
            (None, Some(_)) => Kept::External,
            (None, None) => Kept::Local,
        }
    }
}

/// What `--date` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum DateQuery {
    /// No `--date` (or `latest`): the newest backup.
    Newest,
    /// `2025-04-01`: the newest backup of that day.
    Day(NaiveDate),
    /// `2025-04-01-031500`: exactly that backup.
    Exact(NaiveDateTime),
}

impl FromStr for DateQuery {
    type Err = String;

    fn from_str(s: &str) -> Result<DateQuery, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") || s.eq_ignore_ascii_case("newest") {
            return Ok(DateQuery::Newest);
        }
        if let Some(t) = snapshot::parse_stamp(s) {
            return Ok(DateQuery::Exact(t));
        }
        for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(DateQuery::Exact(t));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            && s.len() == 10
        {
            return Ok(DateQuery::Day(d));
        }
        Err(format!(
            "{s:?} is not a date: give a day (2025-04-01) for that day's newest backup, a backup's stamp \
             (2025-04-01-031500) for exactly that one, or `latest`"
        ))
    }
}

impl fmt::Display for DateQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateQuery::Newest => f.write_str("the newest"),
            DateQuery::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            DateQuery::Exact(t) => f.write_str(&snapshot::stamp(*t)),
        }
    }
}

/// No backup matched: the nearest ones on either side (up to two each, nearest first), as indexes into the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    pub before: Vec<usize>,
    pub after: Vec<usize>,
}

/// The index of the backup `query` selects among `times` (in any order), or the nearest ones when none matches.
/// Ties (the same second twice) go to the later index. The newest is by [`snapshot::recency`] at the local time now:
/// one dated in the future (a clock that was wrong) is older than what was made since.
pub fn choose(times: &[NaiveDateTime], query: DateQuery) -> Result<usize, NoMatch> {
    let now = chrono::Local::now().naive_local();
    let newest_where = |keep: &dyn Fn(NaiveDateTime) -> bool| {
        times
            .iter()
            .enumerate()
            .filter(|(_, t)| keep(**t))
            .max_by_key(|(i, t)| (snapshot::recency(**t, now), *i))
            .map(|(i, _)| i)
    };
    let found = match query {
        DateQuery::Newest => newest_where(&|_| true),
        DateQuery::Day(d) => newest_where(&|t| t.date() == d),
        DateQuery::Exact(x) => newest_where(&|t| t == x),
    };
    if let Some(i) = found {
        return Ok(i);
    }
    // Where a backup lies relative to what was asked: before (Less) or after (Greater).
    let side = |t: NaiveDateTime| match query {
        DateQuery::Newest => std::cmp::Ordering::Equal,
        DateQuery::Day(d) => t.date().cmp(&d),
        DateQuery::Exact(x) => t.cmp(&x),
    };
    let is_before = |t| side(t) == std::cmp::Ordering::Less;
    let is_after = |t| side(t) == std::cmp::Ordering::Greater;
    let mut before: Vec<usize> = (0..times.len()).filter(|&i| is_before(times[i])).collect();
    before.sort_by_key(|&i| std::cmp::Reverse(times[i]));
    before.truncate(2);
    let mut after: Vec<usize> = (0..times.len()).filter(|&i| is_after(times[i])).collect();
    after.sort_by_key(|&i| times[i]);
    after.truncate(2);
    Err(NoMatch { before, after })
}

/// The sentence after "no backup matches ...": `the nearest are 2025-03-31-031500 (before) and ... (after)`.
pub fn nearest_sentence(no: &NoMatch, stamp_of: impl Fn(usize) -> String) -> String {
    let list = |v: &[usize]| {
        v.iter()
            .map(|&i| stamp_of(i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (no.before.is_empty(), no.after.is_empty()) {
        (true, true) => "there are none at all".to_string(),
        (false, true) => format!("the nearest before is {} (none after)", list(&no.before)),
        (true, false) => format!("the nearest after is {} (none before)", list(&no.after)),
        (false, false) => format!(
            "the nearest are {} (before) and {} (after)",
            list(&no.before),
            list(&no.after)
        ),
    }
}

/// A `--path` as the user meant it: `~` and `~/...` are the home directory, a relative path is relative to `cwd`;
/// the result is absolute and lexically normalised (`.`, `..` and `//` applied; symlinks are not resolved).
pub fn absolute_path(input: &str, home: &Path, cwd: &Path) -> Result<PathBuf, String> {
    if input.is_empty() {
        return Err("an empty --path; give a file or directory".into());
    }
    let path = if input == "~" {
        home.to_path_buf()
    } else if let Some(rest) = input.strip_prefix("~/") {
        home.join(rest)
    } else if input.starts_with('~') {
        return Err(format!(
            "{input:?} names another user's home (`~user`), which is not supported; write the path out"
        ));
    } else {
        cwd.join(input)
    };
    Ok(crate::expand::normalize(&path))
}

/// The name of an absolute path inside a backup, whose archives and snapshots mirror absolute paths: `/data/x` ->
/// `data/x`; `/` is the root.
pub fn name_of(abs: &Path) -> RelPath {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::new();
    for c in abs.components() {
        if let Component::Normal(n) = c {
            if !bytes.is_empty() {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(n.as_bytes());
        }
    }
    safety::check_name(&bytes, None).unwrap_or_default()
}

/// The absolute path a backup name stands for: `data/x` -> `/data/x`.
pub fn abs_of(name: &RelPath) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    Path::new("/").join(std::ffi::OsStr::from_bytes(name.as_bytes()))
}

/// Where an absolute path lies in a set whose sources are `sources`: the name to look for, when the path is at or
/// below a source under either of its names (the path as configured and expanded, `/home/u/data`, or resolved,
/// `/data`). The deepest matching source wins. `None` when the path is under no source.
pub fn locate_in_sources(abs: &Path, sources: &[SourceRecord]) -> Option<(RelPath, usize)> {
    let mut best: Option<(usize, RelPath, usize)> = None;
    for (i, s) in sources.iter().enumerate() {
        for alias in [&s.resolved, &s.path] {
            if let Ok(rest) = abs.strip_prefix(alias) {
                let depth = alias.components().count();
                let real = if rest.as_os_str().is_empty() {
                    s.resolved.clone()
                } else {
                    s.resolved.join(rest)
                };
                if best.as_ref().is_none_or(|(d, _, _)| depth > *d) {
                    best = Some((depth, name_of(&real), i));
                }
            }
        }
    }
    best.map(|(_, name, i)| (name, i))
}

/// Up to `n` of `candidates` nearest to `wanted` (by the similarity of their last components, then of the whole
/// name), most similar first. Used for "not found" messages.
pub fn nearest_names(wanted: &RelPath, candidates: &[RelPath], n: usize) -> Vec<RelPath> {
    let last = |p: &RelPath| {
        p.split_last()
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default()
    };
    let want_last = last(wanted);
    let want_all = wanted.display();
    let mut scored: Vec<(f64, &RelPath)> = candidates
        .iter()
        .map(|c| {
            let s = strsim::normalized_damerau_levenshtein(&want_last, &last(c)) * 2.0
                + strsim::normalized_damerau_levenshtein(&want_all, &c.display());
            (s, c)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

/// The set names with only `only` kept (itself when it is none of them, so that it is looked for and reported).
pub fn only_set(mut sets: Vec<String>, only: Option<&str>) -> Vec<String> {
    if let Some(o) = only {
        sets.retain(|s| s == o);
        if sets.is_empty() {
            sets.push(o.to_string());
        }
    }
    sets
}

/// THE rule of which backups of a destination `--date` picks among (`restore`, `--verify` and `ls`, on a drive and a
/// bucket alike): with `--set`, those that `hold` it, not one whose record of it is `foreign` (`Some(set)`: another
/// config's set of that name, recorded from other sources) unless none holds it as the owner's; without, those of
/// the `owner`'s sets, not one `foreign` to it (`None`: another config's on a destination both name alike,
/// `external::retention::Owner::foreign_sets`), unless no backup holds one of the owner's sets (a config written
/// anew after a loss, whose set names the destination does not know). A stamp named exactly is taken as it is.
/// Indexes into `all`.
pub fn pickable<T>(
    (all, owner): (&[T], &[String]),
    (set, query): (Option<&str>, DateQuery),
    holds: impl Fn(&T, &str) -> bool,
    foreign: impl Fn(&T, Option<&str>) -> bool,
) -> Vec<usize> {
    let exact = matches!(query, DateQuery::Exact(_));
    let ours = |b: &T, s: &str| holds(b, s) && !foreign(b, Some(s));
    let skip_foreign = !exact && all.iter().any(|b| owner.iter().any(|s| ours(b, s)));
    let skip_foreign_set = set.is_some_and(|s| !exact && all.iter().any(|b| ours(b, s)));
    (0..all.len())
        .filter(|&i| match set {
            Some(s) => holds(&all[i], s) && !(skip_foreign_set && foreign(&all[i], Some(s))),
            None => !(skip_foreign && foreign(&all[i], None)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        snapshot::parse_stamp(s).unwrap()
    }

    #[test]
    fn dates_parse() {
        assert_eq!("latest".parse::<DateQuery>(), Ok(DateQuery::Newest));
        assert_eq!(
            "2025-04-01".parse::<DateQuery>(),
            Ok(DateQuery::Day(NaiveDate::from_ymd_opt(2025, 4, 1).unwrap()))
        );
        assert_eq!(
            "2025-04-01-031500".parse::<DateQuery>(),
            Ok(DateQuery::Exact(t("2025-04-01-031500")))
        );
        assert_eq!(
            "2025-04-01T03:15:00".parse::<DateQuery>(),
            Ok(DateQuery::Exact(t("2025-04-01-031500")))
        );
        for bad in ["2025-4-1", "yesterday", "2025-04-01-0315", "2025-02-30", ""] {
            let e = bad.parse::<DateQuery>().unwrap_err();
            assert!(e.contains("2025-04-01-031500"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_day_selects_its_newest_and_a_stamp_exactly() {
        let times = [
            t("2025-03-30-031500"),
            t("2025-04-01-031500"),
            t("2025-04-01-221500"),
            t("2025-04-01-120000"),
            t("2025-04-03-031500"),
        ];
        assert_eq!(choose(&times, "2025-04-01".parse().unwrap()), Ok(2));
        assert_eq!(choose(&times, "2025-04-01-031500".parse().unwrap()), Ok(1));
        assert_eq!(choose(&times, DateQuery::Newest), Ok(4));
        assert_eq!(
            choose(&[], DateQuery::Newest),
            Err(NoMatch {
                before: vec![],
                after: vec![]
            })
        );
        // No match: the nearest on each side, nearest first.
        assert_eq!(
            choose(&times, "2025-04-02".parse().unwrap()),
            Err(NoMatch {
                before: vec![2, 3],
                after: vec![4]
            })
        );
        assert_eq!(
            choose(&times, "2025-04-01-031501".parse().unwrap()),
            Err(NoMatch {
                before: vec![1, 0],
                after: vec![3, 2]
            })
        );
        assert_eq!(
            choose(&times, "2020-01-01".parse().unwrap()),
            Err(NoMatch {
                before: vec![],
                after: vec![0, 1]
            })
        );
        let no = choose(&times, "2025-04-02".parse().unwrap()).unwrap_err();
        assert_eq!(
            nearest_sentence(&no, |i| snapshot::stamp(times[i])),
            "the nearest are 2025-04-01-221500, 2025-04-01-120000 (before) and 2025-04-03-031500 (after)"
        );
    }

    #[test]
    fn paths_are_made_absolute() {
        let home = Path::new("/home/u");
        let cwd = Path::new("/work/here");
        let abs = |s| absolute_path(s, home, cwd).unwrap();
        assert_eq!(abs("~/.config"), Path::new("/home/u/.config"));
        assert_eq!(abs("~"), Path::new("/home/u"));
        assert_eq!(
            abs("/data/projects/important/"),
            Path::new("/data/projects/important")
        );
        assert_eq!(abs("notes/a.txt"), Path::new("/work/here/notes/a.txt"));
        assert_eq!(abs("../x/./y"), Path::new("/work/x/y"));
        assert_eq!(
            abs("$HOME/x"),
            Path::new("/work/here/$HOME/x"),
            "the shell expands variables, not us"
        );
        assert!(absolute_path("~bob/x", home, cwd).is_err());
        assert!(absolute_path("", home, cwd).is_err());
        assert_eq!(name_of(Path::new("/data/x")).as_bytes(), b"data/x");
        assert!(name_of(Path::new("/")).is_root());
        assert_eq!(abs_of(&name_of(Path::new("/data/x"))), Path::new("/data/x"));
    }

    fn source(configured: &str, path: &str, resolved: &str) -> SourceRecord {
        SourceRecord {
            configured: configured.into(),
            path: path.into(),
            resolved: resolved.into(),
            in_snapshot: SourceRecord::in_snapshot_path(Path::new(resolved)),
            present: true,
        }
    }

    #[test]
    fn a_symlinked_source_is_found_under_either_name() {
        let sources = [
            source("~/data", "/home/u/data", "/data"),
            source("~/.config", "/home/u/.config", "/home/u/.config"),
        ];
        let find =
            |p: &str| locate_in_sources(Path::new(p), &sources).map(|(n, i)| (n.display(), i));
        assert_eq!(find("/home/u/data/x/y"), Some(("data/x/y".into(), 0)));
        assert_eq!(find("/data/x"), Some(("data/x".into(), 0)));
        assert_eq!(find("/home/u/data"), Some(("data".into(), 0)));
        assert_eq!(
            find("/home/u/.config/app"),
            Some(("home/u/.config/app".into(), 1))
        );
        assert_eq!(find("/home/u/datax"), None);
        assert_eq!(find("/home/u"), None);
    }

    #[test]
    fn the_nearest_names_come_first() {
        let n = RelPath::of;
        let candidates = [
            n("data/projects/archive"),
            n("data/projects/important-old"),
            n("data/projects/imported"),
        ];
        let got: Vec<String> = nearest_names(&n("data/projects/importnt"), &candidates, 2)
            .iter()
            .map(RelPath::display)
            .collect();
        assert_eq!(
            got,
            ["data/projects/imported", "data/projects/important-old"]
        );
    }
}
