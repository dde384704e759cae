//! `restore --list`: every backup, local snapshots (grouped by stamp) and the backups on every present drive, with
//! date, sets, size, state and where it is; as a table for people or as [`Listing`] JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::catalog::{self, Drive};
use super::select::{self, DateQuery, Kept, Request};
use crate::external::bucket::BACKUPS;
use crate::external::layout;
use crate::settings::Settings;
use crate::snapshot::{self, Snapshot, SnapshotState};
use crate::stdx::{show_path, show_str};

/// How far a backup can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A local snapshot rsync copied completely.
    Complete,
    /// A local snapshot with files rsync could not read.
    Incomplete,
    /// A drive backup read back from the drive and matched before it was renamed into place.
    Verified,
    /// A drive backup directory without usable metadata: restorable when named exactly, by scanning its archives.
    Unverified,
    /// A verified drive backup whose chain is not whole: a backup it depends on is missing, unverified or damaged.
    Broken,
    /// A verified drive backup that `restore --verify` found damaged (`external::damage`).
    Damaged,
    /// A local snapshot without readable metadata.
    Unknown,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Complete => "complete",
            State::Incomplete => "incomplete",
            State::Verified => "verified",
            State::Unverified => "unverified",
            State::Broken => "BROKEN",
            State::Damaged => "DAMAGED",
            State::Unknown => "unknown",
        }
    }

    fn of_snapshot(s: &Snapshot) -> State {
        match s.state() {
            SnapshotState::Complete => State::Complete,
            SnapshotState::Incomplete => State::Incomplete,
            SnapshotState::Unknown => State::Unknown,
        }
    }

    /// The worse of two (for a backup made of several sets).
    fn worst(self, other: State) -> State {
        let rank = |s: State| match s {
            State::Verified | State::Complete => 0,
            State::Unverified => 1,
            State::Incomplete => 2,
            State::Unknown => 3,
            State::Broken => 4,
            State::Damaged => 5,
        };
        // On a tie, `self`: max_by_key returns its second argument.
        std::cmp::max_by_key(other, self, |s| rank(*s))
    }
}

/// What `--list` shows for `req` (its `--source`, `--drive`, `--set` and `--date`), and when only the drives were
/// asked for and none is present, the message saying so.
pub fn gather(settings: &Settings, req: &Request) -> anyhow::Result<(Listing, Option<String>)> {
    let cloud = req.source == Some(Kept::Cloud);
    let local = !cloud && req.source != Some(Kept::External) && req.drive.is_none();
    let external = !cloud && req.source != Some(Kept::Local);
    let mut listing = Listing {
        backup_root: None,
        backups: Vec::new(),
        destinations: Vec::new(),
        notes: Vec::new(),
        passed_over: Vec::new(),
    };
    if local {
        let sets = select::only_set(catalog::local_set_names(settings), req.set.as_deref());
        let snaps = catalog::local_snapshots(&settings.backup_root, &sets)?;
        listing.backup_root = Some(settings.backup_root.clone());
        let (backups, more) = local_backups(&settings.backup_root, &snaps);
        listing.backups.extend(backups);
        if more > 0 {
            listing.notes.push(format!(
                "{} in the backup root without usable metadata, listed unknown without a note each",
                crate::stdx::counted(more as u64, "more snapshot", "more snapshots")
            ));
        }
    }
    let mut no_drive = None;
    if external {
        let drives = catalog::drives(settings, req.drive.as_deref())?;
        listing.passed_over = catalog::passed_over(&drives).cloned().collect();
        if !local && !drives.iter().any(Drive::present) {
            no_drive = Some(catalog::no_drive_message(&drives));
        }
        let damage = crate::external::damage::read(&settings.state_dir, &settings.backup_root);
        let mut backups = drive_backups(&drives, &damage);
        listing.destinations = destinations(&drives);
        for d in &mut listing.destinations {
            d.notes = note_unusable(
                (backups.iter_mut()).filter(|b| b.destination.as_deref() == Some(d.name.as_str())),
            );
            if !d.not_backups.is_empty() {
                d.notes.push(format!(
                    "{} in {}/ {} neither {} nor an archive: not backups, not listed",
                    crate::stdx::counted(d.not_backups.len() as u64, "directory", "directories"),
                    layout::BACKUPS_DIR,
                    if d.not_backups.len() == 1 {
                        "holds"
                    } else {
                        "hold"
                    },
                    layout::METADATA_FILE
                ));
            }
        }
        listing.backups.extend(backups);
    }
    if cloud {
        let (backups, destination) = cloud_backups(settings, req)?;
        listing.backups.extend(backups);
        listing.destinations.push(destination);
    }
    if let Some(set) = &req.set {
        listing
            .backups
            .retain(|b| b.sets.iter().any(|s| &s.name == set));
        for b in &mut listing.backups {
            b.sets.retain(|s| &s.name == set);
            b.bytes = b
                .sets
                .iter()
                .map(|s| s.bytes)
                .fold(0u64, u64::saturating_add);
        }
    }
    match req.date {
        DateQuery::Newest => {}
        DateQuery::Day(d) => listing.backups.retain(|b| b.time.date() == d),
        DateQuery::Exact(t) => listing.backups.retain(|b| b.time == t),
    }
    listing.sort();
    Ok((listing, no_drive))
}

/// Everything `--list` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Where local snapshots are (when local backups were listed).
    pub backup_root: Option<PathBuf>,
    /// Newest first.
    pub backups: Vec<ListedBackup>,
    /// Every destination looked at, present or not (when external backups were listed).
    pub destinations: Vec<ListedDestination>,
    /// What is said of the local snapshots as a whole: how many more of them without usable metadata are listed
    /// than are noted one by one (the newest [`crate::stdx::NAMED`] are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The drives' backups the user cannot read, passed over: one line each for stderr ([`catalog::passed_over`]).
    #[serde(skip)]
    pub passed_over: Vec<String>,
}

/// One backup: a stamp's local snapshots, or one backup directory on a drive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedBackup {
    pub source: Kept,
    /// What `--date` takes to select exactly this one.
    pub stamp: String,
    /// The stamp's local time, RFC 3339 with its offset.
    #[serde(with = "crate::json::local_time")]
    pub time: NaiveDateTime,
    pub sets: Vec<ListedSet>,
    /// Local: the size of the files in the snapshots; external: the archives' bytes on the drive.
    pub bytes: u64,
    pub state: State,
    /// Local: the backup root; external: the backup's directory on the drive.
    pub location: PathBuf,
    /// The destination holding it (external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// What `latest` points at (external), or some set's `<set>-latest` (local).
    pub latest: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One set of a listed backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedSet {
    pub name: String,
    pub state: State,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// The local snapshot (local), or the snapshot the archive was made from (external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The snapshot directory, or the archive's first file.
    pub path: PathBuf,
    /// Encrypted with age (external): restoring or fully verifying it needs the identity (`--identity FILE`) or
    /// the passphrase.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Encrypted to a passphrase rather than to recipients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
    /// External: `full`, or `incremental` on `base` (restoring it reads the archives of its chain too).
    #[serde(default, skip_serializing_if = "crate::archive::ArchiveKind::is_full")]
    pub kind: crate::archive::ArchiveKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// A destination and whether its backups could be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedDestination {
    pub name: String,
    pub path: PathBuf,
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub backups: usize,
    /// What is said of the destination as a whole: how many more of its backups without usable `backup.json` are
    /// listed than are noted one by one ([`note_unusable`]), and how many directories are not backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The directories named like a backup that hold neither `backup.json` nor an archive: not backups, not among
    /// `backups` ([`not_backups`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_backups: Vec<String>,
}

/// The local part of a listing: snapshots grouped by stamp; and how many snapshots without usable metadata it does not
/// note why for (it notes the newest [`crate::stdx::NAMED`]: a messy backup root may hold any number of them).
pub fn local_backups(root: &std::path::Path, snapshots: &[Snapshot]) -> (Vec<ListedBackup>, usize) {
    let mut unusable: Vec<&Snapshot> = (snapshots.iter())
        .filter(|s| s.metadata_error.is_some())
        .collect();
    unusable.sort_by_key(|s| std::cmp::Reverse(s.time));
    let noted: Vec<&str> = (unusable.iter().take(crate::stdx::NAMED))
        .map(|s| s.name.as_str())
        .collect();
    let more = unusable.len() - noted.len();
    let mut groups: BTreeMap<NaiveDateTime, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.time).or_default().push(s);
    }
    let listed = groups
        .into_iter()
        .map(|(time, snaps)| {
            let mut notes = Vec::new();
            let sets: Vec<ListedSet> = snaps
                .iter()
                .map(|s| {
                    let state = State::of_snapshot(s);
                    if let Some(m) = &s.metadata
                        && !m.unreadable.is_empty()
                    {
                        notes.push(format!(
                            "{}: {} unreadable",
                            s.set,
                            crate::stdx::counted(m.unreadable.len() as u64, "file", "files")
                        ));
                    }
                    if let Some(e) = &s.metadata_error
                        && noted.contains(&s.name.as_str())
                    {
                        notes.push(format!("{}: {e}", s.set));
                    }
                    ListedSet {
                        name: s.set.clone(),
                        state,
                        bytes: s.metadata.as_ref().map_or(0, |m| m.stats.total_bytes),
                        files: s.metadata.as_ref().map(|m| m.stats.regular_files),
                        snapshot: Some(s.name.clone()),
                        path: s.path.clone(),
                        encrypted: false,
                        passphrase: false,
                        kind: Default::default(),
                        base: None,
                    }
                })
                .collect();
            let latest = snaps
                .iter()
                .any(|s| snapshot::read_latest(root, &s.set).as_deref() == Some(&s.name));
            ListedBackup {
                source: Kept::Local,
                stamp: snapshot::stamp(time),
                time,
                bytes: sets.iter().map(|s| s.bytes).fold(0u64, u64::saturating_add),
                state: sets
                    .iter()
                    .map(|s| s.state)
                    .fold(State::Complete, State::worst),
                sets,
                location: root.to_path_buf(),
                destination: None,
                latest,
                notes,
            }
        })
        .collect();
    (listed, more)
}

/// The external part of a listing: every backup on every present drive; `damage`: what `restore --verify` found
/// damaged (the state directory's `damaged.json`).
pub fn drive_backups(
    drives: &[Drive],
    damage: &[crate::external::damage::Record],
) -> Vec<ListedBackup> {
    let mut out = Vec::new();
    for d in drives {
        let verified = |stamp: &str| {
            d.listing
                .backups
                .iter()
                .any(|b| !b.in_progress && b.verified() && b.dir.name == stamp)
        };
        let damaged = |stamp: &str| {
            damage
                .iter()
                .find(|r| r.destination == d.name && r.backup == stamp)
        };
        // The backups whose files are missing or not their recorded size (one lstat each, as `status` looks).
        let sized: std::collections::BTreeMap<&str, String> = d
            .listing
            .backups
            .iter()
            .filter(|b| b.verified())
            .filter_map(|b| {
                let why = crate::external::layout::damaged_file(&b.dir.path, b.dir.meta.as_ref()?)?;
                Some((b.dir.name.as_str(), why))
            })
            .collect();
        for b in listed(d) {
            let mut notes: Vec<String> = b.dir.meta_error.iter().cloned().collect();
            // A backup it depends on (its `depends_on`, each set's `base`) that is not here, unverified or damaged:
            // it cannot be restored whole. (The chain's backups each name the whole chain in `depends_on`.)
            let gone = b.dir.meta.as_ref().and_then(|m| {
                m.depends_on
                    .iter()
                    .chain(m.sets.iter().filter_map(|s| s.base.as_ref()))
                    .find(|dep| {
                        !verified(dep) || damaged(dep).is_some() || sized.contains_key(dep.as_str())
                    })
            });
            let state = if let Some(r) = damaged(&b.dir.name).filter(|_| b.verified()) {
                notes.push(crate::external::damage::note_text(r));
                State::Damaged
            } else if let Some(why) = sized.get(b.dir.name.as_str()) {
                notes.push(why.clone());
                State::Damaged
            } else if let Some(dep) = gone {
                notes.push(match damaged(dep) {
                    Some(_) => format!(
                        "its chain is broken: it depends on {}, which restore --verify found damaged",
                        show_str(dep)
                    ),
                    None if sized.contains_key(dep.as_str()) => format!(
                        "its chain is broken: it depends on {}, which is damaged ({})",
                        show_str(dep),
                        sized[dep.as_str()]
                    ),
                    None => format!(
                        "its chain is broken: it depends on {}, which is not on the drive or unverified",
                        show_str(dep)
                    ),
                });
                State::Broken
            } else if b.verified() {
                State::Verified
            } else {
                State::Unverified
            };
            let record = |s: &super::drive::DriveSet| {
                b.dir
                    .meta
                    .as_ref()
                    .and_then(|m| m.sets.iter().find(|r| r.set == s.name))
            };
            let sets = b
                .sets
                .iter()
                .map(|s| ListedSet {
                    name: s.name.clone(),
                    state,
                    bytes: s.archive_bytes,
                    files: s.files,
                    snapshot: s.snapshot.clone(),
                    path: b.dir.path.join(&s.archive),
                    encrypted: s.encrypted(),
                    passphrase: s.encryption.as_ref().is_some_and(|e| e.passphrase),
                    kind: record(s).map(|r| r.kind).unwrap_or_default(),
                    base: record(s).and_then(|r| r.base.clone()),
                })
                .collect();
            out.push(ListedBackup {
                source: Kept::External,
                stamp: b.dir.name.clone(),
                time: b.dir.time,
                sets,
                bytes: b.bytes(),
                state,
                location: b.dir.path.clone(),
                destination: Some(d.name.clone()),
                latest: d.listing.latest.as_deref() == Some(b.dir.name.as_str()),
                notes,
            });
        }
    }
    out
}

/// The backups of `d` that `--list` shows (those `--drive DIR` names, when it names one): not one still (or never
/// finished) being written, which is never restored from, nor a directory that holds nothing ([`not_backups`]).
fn listed(d: &Drive) -> impl Iterator<Item = &super::drive::DriveBackup> {
    (d.listing.backups.iter())
        .filter(|b| !b.in_progress && !b.holds_nothing())
        .filter(|b| d.only.as_ref().is_none_or(|o| *o == b.dir.name))
}

/// The directories of `d` named like a backup that hold neither `backup.json` nor an archive: not backups, so not
/// listed; `--json` names each, the text counts them in one note.
fn not_backups(d: &Drive) -> Vec<String> {
    (d.listing.backups.iter())
        .filter(|b| b.holds_nothing())
        .filter(|b| d.only.as_ref().is_none_or(|o| *o == b.dir.name))
        .map(|b| b.dir.name.clone())
        .collect()
}

/// Keeps why a backup has no usable `backup.json` (an `unverified` one) noted on the newest
/// [`crate::stdx::NAMED`] of one destination's `backups` only: a junk or messy drive or bucket may hold any number
/// of them. Returns the destination's note counting the rest.
fn note_unusable<'b>(backups: impl Iterator<Item = &'b mut ListedBackup>) -> Vec<String> {
    let mut unusable: Vec<&mut ListedBackup> =
        backups.filter(|b| b.state == State::Unverified).collect();
    unusable.sort_by_key(|b| std::cmp::Reverse(b.time));
    let more = unusable.len().saturating_sub(crate::stdx::NAMED);
    for b in unusable.into_iter().skip(crate::stdx::NAMED) {
        b.notes.clear();
    }
    layout::unusable_rest(more, "listed unverified without a note each")
        .into_iter()
        .collect()
}

/// `restore --list --source cloud[:NAME]`: the destination's backups, each from its `backup.json` (one GET each).
pub fn cloud_backups(
    settings: &Settings,
    req: &Request,
) -> anyhow::Result<(Vec<ListedBackup>, ListedDestination)> {
    let cloud = super::cloud::destination(settings, req.cloud.as_deref())?;
    let (store, listing) = super::cloud::open(cloud)?;
    let stamps = listing.backups;
    let latest = crate::external::bucket::read_latest(&store);
    let mut out = Vec::new();
    for stamp in &stamps {
        let Some(time) = snapshot::parse_stamp(stamp) else {
            continue;
        };
        let dir = format!("{BACKUPS}{stamp}/");
        let location = PathBuf::from(format!("{} {dir}", store.place()));
        let meta = store
            .get(&format!("{dir}{}", layout::METADATA_FILE))
            .map_err(|e| e.to_string())
            .and_then(|b| {
                layout::parse_metadata(&b, &location.join(layout::METADATA_FILE))
                    .map_err(|e| e.to_string())
            });
        let (sets, notes) = match &meta {
            Ok(m) => (
                m.sets
                    .iter()
                    .map(|s| ListedSet {
                        name: s.set.clone(),
                        state: State::Verified,
                        bytes: s
                            .archive
                            .iter()
                            .fold(0u64, |t, f| t.saturating_add(f.bytes)),
                        files: Some(s.files),
                        kind: s.kind,
                        base: s.base.clone(),
                        snapshot: Some(s.snapshot.clone()),
                        path: location.join(
                            s.archive
                                .first()
                                .map(|f| f.name.as_str())
                                .unwrap_or_default(),
                        ),
                        encrypted: s.encryption.is_some(),
                        passphrase: s.encryption.as_ref().is_some_and(|e| e.passphrase),
                    })
                    .collect::<Vec<_>>(),
                Vec::new(),
            ),
            Err(e) => (Vec::new(), vec![e.clone()]),
        };
        out.push(ListedBackup {
            source: Kept::Cloud,
            stamp: stamp.clone(),
            time,
            bytes: sets.iter().fold(0u64, |t, s| t.saturating_add(s.bytes)),
            state: if meta.is_ok() {
                State::Verified
            } else {
                State::Unverified
            },
            sets,
            location,
            destination: Some(cloud.name.clone()),
            latest: latest.as_deref() == Some(stamp.as_str()),
            notes,
        });
    }
    let destination = ListedDestination {
        name: cloud.name.clone(),
        path: PathBuf::from(store.place()),
        present: true,
        reason: None,
        backups: out.len(),
        notes: note_unusable(out.iter_mut()),
        not_backups: Vec::new(),
    };
    Ok((out, destination))
}

/// The destinations part of a listing.
pub fn destinations(drives: &[Drive]) -> Vec<ListedDestination> {
    drives
        .iter()
        .map(|d| ListedDestination {
            name: d.name.clone(),
            path: d.path.clone(),
            present: d.present(),
            reason: d.absent.clone(),
            backups: listed(d).count(),
            notes: Vec::new(),
            not_backups: not_backups(d),
        })
        .collect()
}

impl Listing {
    /// Sorts newest first (local before external on the same second).
    pub fn sort(&mut self) {
        self.backups.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| a.source.cmp(&b.source))
                .then_with(|| a.destination.cmp(&b.destination))
        });
    }

    /// The table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.backups.is_empty() {
            out.push_str("no backups found\n");
        } else {
            let rows: Vec<[String; 6]> = self
                .backups
                .iter()
                .map(|b| {
                    let mut state = b.state.word().to_string();
                    if b.latest {
                        state.push_str(", latest");
                    }
                    // Set names and paths may come from a drive: shown escaped (see `crate::stdx::show`).
                    let place = match &b.destination {
                        Some(d) => format!("{d}: {}", show_path(&b.location)),
                        None => show_path(&b.location),
                    };
                    [
                        b.stamp.clone(),
                        b.source.word().to_string(),
                        b.sets
                            .iter()
                            .map(|s| {
                                let mut what = Vec::new();
                                if s.encrypted {
                                    what.push("age".to_string());
                                }
                                if s.passphrase {
                                    what.push("passphrase".to_string());
                                }
                                if let Some(b) = &s.base {
                                    what.push(format!("incremental on {}", show_str(b)));
                                }
                                match what.is_empty() {
                                    true => show_str(&s.name),
                                    false => format!("{} ({})", show_str(&s.name), what.join(", ")),
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        crate::stdx::bytes(b.bytes),
                        state,
                        place,
                    ]
                })
                .collect();
            let header = ["DATE", "SOURCE", "SETS", "SIZE", "STATE", "WHERE"].map(String::from);
            let mut width = [0usize; 5];
            for r in std::iter::once(&header).chain(rows.iter()) {
                for (w, c) in width.iter_mut().zip(r.iter()) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |out: &mut String, r: &[String; 6]| {
                for (i, c) in r.iter().enumerate().take(5) {
                    let _ = write!(out, "{c:<w$}  ", w = width[i]);
                }
                out.push_str(&r[5]);
                out.push('\n');
            };
            line(&mut out, &header);
            for (r, b) in rows.iter().zip(&self.backups) {
                line(&mut out, r);
                // Notes are messages whose untrusted parts were escaped where they were made.
                for n in &b.notes {
                    let _ = writeln!(out, "    note: {n}");
                }
            }
            for n in &self.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }
        if !self.destinations.is_empty() {
            out.push_str("\ndestinations:\n");
            for d in &self.destinations {
                match &d.reason {
                    None => {
                        let _ = writeln!(
                            out,
                            "  {}: present at {}, {}",
                            d.name,
                            d.path.display(),
                            crate::stdx::counted(d.backups as u64, "backup", "backups")
                        );
                    }
                    Some(r) => {
                        let _ = writeln!(out, "  {}: {r}", d.name);
                    }
                }
                for n in &d.notes {
                    let _ = writeln!(out, "    note: {n}");
                }
            }
        }
        out
    }
}
