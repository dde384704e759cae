//! Choosing the backup a restore (or `--verify`) reads: the snapshots or the drive backup `--date` picks ([`Chosen`]),
//! the keys that open it, the sets it holds as content to read, the names to restore (or the older backup that holds
//! a missing one), and the checks made before anything is written (the target is outside the backups, the drive
//! backup's metadata against its sums, every encrypted file authenticated).

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::catalog::{self, Drive};
use super::content::SetContent;
use super::drive::{DriveBackup, METADATA_FILE};
use super::engine::displace;
use super::job::Planned;
use super::job::{self, SetBackup};
use super::keys::{Ask, KeyRing};
use super::select::Kept;
use super::select::{self, DateQuery, NoMatch};
use super::verify::{self, Scope};
use super::{RelPath, Request, RestoreOptions};
use crate::archive::{ArchiveFiles, Keys};
use crate::exit::{CodedError, Exit, failed, usage};
use crate::external::retention::OwnSet;
use crate::external::retention::Owner;
use crate::settings::Settings;
use crate::snapshot::{self, Snapshot, SnapshotState};
use crate::stdx::{show_path, show_str};
use crate::ui::Ui;

/// The backup `--date` chose.
pub enum Chosen {
    /// Per set, its snapshot chosen by the date.
    Local { snapshots: Vec<Snapshot> },
    /// One backup directory on a drive.
    External {
        drive: Box<Drive>,
        backup: Box<DriveBackup>,
    },
    /// One backup on a cloud destination, with only the set `set` when `--set` asked.
    Cloud {
        backup: Box<super::cloud::CloudBackup>,
        set: Option<String>,
    },
}

impl Chosen {
    pub fn kept(&self) -> Kept {
        match self {
            Chosen::Local { .. } => Kept::Local,
            Chosen::External { .. } => Kept::External,
            Chosen::Cloud { .. } => Kept::Cloud,
        }
    }

    pub fn stamp(&self) -> String {
        match self {
            Chosen::Local { snapshots } => {
                let mut stamps: Vec<String> =
                    snapshots.iter().map(|s| snapshot::stamp(s.time)).collect();
                stamps.sort();
                stamps.dedup();
                stamps.join(", ")
            }
            Chosen::External { backup, .. } => backup.dir.name.clone(),
            Chosen::Cloud { backup, .. } => backup.stamp.clone(),
        }
    }

    pub fn location(&self, settings: &Settings) -> PathBuf {
        match self {
            Chosen::Local { .. } => settings.backup_root.clone(),
            Chosen::External { backup, .. } => backup.dir.path.clone(),
            Chosen::Cloud { backup, .. } => format!("{} {}", backup.place, backup.dir()).into(),
        }
    }

    /// The bytes `--verify` reads, for its progress bar: the drive backup's (content, or its archives when not
    /// recorded), the snapshots' totals; 0 (no bar) for a bucket, whose verification counts its own.
    pub fn bytes_to_verify(&self) -> u64 {
        match self {
            Chosen::External { backup, .. } => backup
                .sets
                .iter()
                .map(|s| s.file_bytes.unwrap_or(s.archive_bytes))
                .fold(0u64, u64::saturating_add),
            Chosen::Local { snapshots } => snapshots
                .iter()
                .filter_map(|s| s.metadata.as_ref().map(|m| m.stats.total_bytes))
                .fold(0u64, u64::saturating_add),
            Chosen::Cloud { .. } => 0,
        }
    }
}

/// The backup `req` asks for (its source, `--date`, `--set`), with a warning when it is incomplete or unverified.
pub fn choose(settings: &Settings, req: &Request, ui: &Ui) -> anyhow::Result<Chosen> {
    match req.source() {
        Kept::Local => choose_local(settings, req, &req.date, ui),
        Kept::External => choose_external(settings, req, &req.date, ui),
        Kept::Cloud => Ok(Chosen::Cloud {
            backup: Box::new(super::cloud::choose(settings, req, ui)?),
            set: req.set.clone(),
        }),
    }
}

/// How far a backup is known to be good, for the one rule of `--date` ([`by_date`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A complete snapshot, a verified drive backup.
    Good,
    /// A snapshot some files or sources were missing from: a date may pick it (with a warning).
    Incomplete,
    /// No readable metadata, or a drive backup not known to be verified: only when named by its exact stamp.
    Unknown,
}

impl Standing {
    pub fn of_snapshot(state: SnapshotState) -> Standing {
        match state {
            SnapshotState::Complete => Standing::Good,
            SnapshotState::Incomplete => Standing::Incomplete,
            SnapshotState::Unknown => Standing::Unknown,
        }
    }

    pub fn of_drive_backup(verified: bool) -> Standing {
        if verified {
            Standing::Good
        } else {
            Standing::Unknown
        }
    }

    /// Whether a backup of this standing is a candidate for `query`.
    pub fn counts_for(self, query: DateQuery) -> bool {
        self != Standing::Unknown || matches!(query, DateQuery::Exact(_))
    }
}

/// THE rule for which backup `--date D` means, for `restore` (and `--verify`) and `ls` alike: among the backups whose
/// standing counts for the query (unknown ones only when named exactly), the newest the query selects
/// ([`select::choose`]). The answer and the nearest ones of a miss are indexes into `backups`.
pub fn by_date(
    backups: &[(chrono::NaiveDateTime, Standing)],
    query: DateQuery,
) -> Result<usize, NoMatch> {
    let counted: Vec<usize> = (0..backups.len())
        .filter(|&i| backups[i].1.counts_for(query))
        .collect();
    let times: Vec<_> = counted.iter().map(|&i| backups[i].0).collect();
    select::choose(&times, query)
        .map(|j| counted[j])
        .map_err(|no| NoMatch {
            before: no.before.into_iter().map(|j| counted[j]).collect(),
            after: no.after.into_iter().map(|j| counted[j]).collect(),
        })
}

fn no_match_message(what: &str, query: &DateQuery, no: &NoMatch, stamps: &[String]) -> String {
    format!(
        "no {what} matches --date {query}; {}; see `dbackup restore --list`",
        select::nearest_sentence(no, |i| stamps[i].clone())
    )
}

fn choose_local(
    settings: &Settings,
    req: &Request,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Chosen> {
    catalog::check_set_named(settings, req.set.as_deref(), &[])?;
    let names = catalog::local_set_names(settings);
    let sets = select::only_set(names, req.set.as_deref());
    let mut chosen = Vec::new();
    let mut all: Vec<(String, chrono::NaiveDateTime)> = Vec::new();
    for set in &sets {
        let snaps: Vec<Snapshot> = snapshot::list(&settings.backup_root, set)
            .with_context(|| format!("listing the snapshots of set {set}"))?;
        let dated: Vec<_> = snaps
            .iter()
            .map(|s| (s.time, Standing::of_snapshot(s.state())))
            .collect();
        all.extend(
            dated
                .iter()
                .filter(|d| d.1.counts_for(*query))
                .map(|d| (snapshot::stamp(d.0), d.0)),
        );
        if let Ok(i) = by_date(&dated, *query) {
            let s = snaps[i].clone();
            match s.state() {
                SnapshotState::Incomplete => {
                    // What it lacks is in an older complete snapshot: name it, and the --date that picks it.
                    let whole = snaps[..i]
                        .iter()
                        .rev()
                        .find(|o| o.state() == SnapshotState::Complete)
                        .map(|o| {
                            format!(
                                "; the newest complete snapshot of set {set} is {}: restore what this one lacks \
                                 with --date {}",
                                o.name,
                                snapshot::stamp(o.time)
                            )
                        })
                        .unwrap_or_default();
                    ui.warn(format_args!(
                        "snapshot {} is incomplete: {} when it was collected{whole}",
                        s.name,
                        s.metadata
                            .as_ref()
                            .map(|m| m.incompleteness())
                            .unwrap_or_default()
                    ))
                }
                SnapshotState::Unknown => ui.warn(format_args!(
                    "snapshot {} has no readable metadata; restoring from it as it is",
                    s.name
                )),
                SnapshotState::Complete => {}
            }
            chosen.push(s);
        }
    }
    if chosen.is_empty() {
        all.sort_by_key(|a| a.1);
        all.dedup();
        let times: Vec<_> = all.iter().map(|a| a.1).collect();
        let stamps: Vec<String> = all.iter().map(|a| a.0.clone()).collect();
        let what = match &req.set {
            Some(s) => format!("local snapshot of set {s}"),
            None => "local snapshot".into(),
        };
        if times.is_empty() {
            return Err(failed(format!(
                "there are no {what}s in {}; run `dbackup collect` first, or restore from the drive with \
                 --source external",
                settings.backup_root.display()
            )));
        }
        let no = select::choose(&times, *query).expect_err("nothing was chosen");
        return Err(failed(no_match_message(&what, query, &no, &stamps)));
    }
    Ok(Chosen::Local { snapshots: chosen })
}

fn choose_external(
    settings: &Settings,
    req: &Request,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Chosen> {
    // A backup of partition images only holds no set to restore; `--verify` checks it when its stamp names it.
    let images_only = req.verify && matches!(query, DateQuery::Exact(_)) && req.set.is_none();
    let drives = catalog::drives_with(settings, req.drive.as_deref(), images_only)?;
    for line in catalog::passed_over(&drives) {
        ui.warn(line);
    }
    if !drives.iter().any(Drive::present) {
        return Err(
            CodedError::new(Exit::NoDestination, catalog::no_drive_message(&drives)).into(),
        );
    }
    let all = catalog::drive_backups(&drives);
    let own = settings.set_names();
    let sets = OwnSet::of(&settings.sets);
    let owner = Owner::Sets(&sets);
    let candidates: Vec<_> = select::pickable(
        (&all, &own),
        (req.set.as_deref(), *query),
        |(_, b), set| b.set(set).is_some(),
        |(_, b), set| b.foreign(owner, set),
    )
    .into_iter()
    .map(|i| &all[i])
    .collect();
    let dated: Vec<_> = candidates
        .iter()
        .map(|(_, b)| (b.dir.time, Standing::of_drive_backup(b.verified())))
        .collect();
    match by_date(&dated, *query) {
        Ok(i) => {
            let (d, b) = candidates[i];
            if !req.verify && !matches!(query, DateQuery::Exact(_)) {
                warn_if_no_restore_point(settings, &drives, &candidates, b, ui);
            }
            if !b.verified() {
                ui.warn(format_args!(
                    "backup {} on {} is not known to be verified ({}); its archives are read as they are",
                    b.dir.name,
                    d.name,
                    b.dir.meta_error.as_deref().unwrap_or("no metadata")
                ));
            }
            if let Some(set) = &req.set
                && b.set(set).is_none()
            {
                return Err(failed(format!("backup {} has no set {set}", b.dir.name)));
            }
            let backup = match &req.set {
                Some(set) => b.only(set),
                None => (*b).clone(),
            };
            Ok(Chosen::External {
                drive: Box::new((*d).clone()),
                backup: Box::new(backup),
            })
        }
        Err(no) => {
            let stamps: Vec<String> = candidates.iter().map(|(_, b)| b.dir.name.clone()).collect();
            let any_counted = dated.iter().any(|d| d.1.counts_for(*query));
            let place: Vec<String> = drives
                .iter()
                .filter(|d| d.present())
                .map(|d| format!("{} ({})", d.name, d.path.display()))
                .collect();
            let what = match &req.set {
                Some(s) => format!("backup of set {s} on {}", place.join(", ")),
                None => format!("backup on {}", place.join(", ")),
            };
            if !any_counted {
                // Verified backups that hold other sets: the set is what is missing, not a backup.
                let mut held: Vec<String> = all
                    .iter()
                    .filter(|(_, b)| Standing::of_drive_backup(b.verified()).counts_for(*query))
                    .flat_map(|(_, b)| b.sets.iter().map(|s| crate::stdx::show_str(&s.name)))
                    .collect();
                held.sort_unstable();
                held.dedup();
                if let Some(set) = &req.set
                    && !held.is_empty()
                {
                    return Err(failed(format!(
                        "no backup on {} holds set {set:?}; the backups there hold: {}",
                        place.join(", "),
                        held.join(", ")
                    )));
                }
                if let Some(stamp) = newest_images_only(settings, req, &all) {
                    return Err(failed(format!(
                        "the backups on {} hold partition images only, no set; `dbackup restore --verify --date \
                         {stamp}` checks the newest, `dbackup image restore --from {stamp} --to DISK` restores it",
                        place.join(", ")
                    )));
                }
                return Err(failed(format!(
                    "there is no verified backup on {}; run `dbackup external` first",
                    place.join(", ")
                )));
            }
            Err(failed(no_match_message(&what, query, &no, &stamps)))
        }
    }
}

/// A restore reads the backup `--date` picks even when `restore --list` marks it DAMAGED or BROKEN: every file is
/// checked against its sha256 and a damaged one is never written, so what is intact in the newest backup comes back.
/// Said first, with the newest backup before it that is a restore point, for what it cannot give.
fn warn_if_no_restore_point(
    settings: &Settings,
    drives: &[Drive],
    candidates: &[&(&Drive, &DriveBackup)],
    chosen: &DriveBackup,
    ui: &Ui,
) {
    use super::list::State;
    let listed = super::list::drive_backups(
        drives,
        &crate::external::damage::read(&settings.state_dir, &settings.backup_root),
    );
    let state_of = |b: &DriveBackup| {
        listed
            .iter()
            .find(|l| l.stamp == b.dir.name && l.location == b.dir.path)
    };
    let Some(marked) =
        state_of(chosen).filter(|l| matches!(l.state, State::Damaged | State::Broken))
    else {
        return;
    };
    let good = candidates
        .iter()
        .filter(|(_, b)| b.dir.time < chosen.dir.time)
        .filter(|(_, b)| state_of(b).is_some_and(|l| l.state == State::Verified))
        .max_by_key(|(_, b)| b.dir.time);
    let instead = match good {
        Some((_, b)) => format!(
            "the newest good backup is {0} (`--date {0}`)",
            show_str(&b.dir.name)
        ),
        None => "no older backup there is a restore point".to_string(),
    };
    ui.warn(format_args!(
        "backup {} is {} ({}): its files are each checked against their sha256 and a damaged one is not \
         restored; {instead}",
        show_str(&chosen.dir.name),
        marked.state.word(),
        marked
            .notes
            .first()
            .map_or("see `dbackup restore --list`", String::as_str),
    ));
}

/// The newest verified backup of partition images only on the drives `req` looks at, when they hold no backup of a
/// set (such a backup is never "the newest" for a restore; it is named by its stamp).
fn newest_images_only(
    settings: &Settings,
    req: &Request,
    with_sets: &[(&Drive, &DriveBackup)],
) -> Option<String> {
    let drives = catalog::drives_with(settings, req.drive.as_deref(), true).ok()?;
    catalog::drive_backups(&drives)
        .into_iter()
        .filter(|(_, b)| b.verified() && b.sets.is_empty())
        .filter(|(_, b)| !with_sets.iter().any(|(_, w)| w.dir.name == b.dir.name))
        .max_by_key(|(_, b)| b.dir.time)
        .map(|(_, b)| crate::stdx::show_str(&b.dir.name))
}

/// The keys that open the chosen backup's encrypted archives and indexes, read now (`None` when nothing in it is
/// encrypted: then no identity file is read at all).
pub fn keys_for_backup(
    chosen: &Chosen,
    ring: &KeyRing,
    ask: Ask,
    ui: &Ui,
) -> anyhow::Result<Option<Arc<Keys>>> {
    if let Chosen::Cloud { backup, .. } = chosen {
        let files = backup.all_files();
        let recorded = backup
            .meta
            .sets
            .iter()
            .any(|s| s.encryption.as_ref().is_some_and(|e| e.passphrase));
        // Each encrypted set's record in backup.json says what opens it: its archives' headers are not read to
        // find out (a request each), unless an encrypted set has no record.
        let encrypted = |s: &&crate::external::layout::SetRecord| {
            backup.files(&s.archive).encrypted() || backup.files(&s.index).encrypted()
        };
        let sets: Vec<_> = backup.meta.sets.iter().filter(encrypted).collect();
        let found = if sets.iter().all(|s| s.encryption.is_some()) {
            let identity = sets
                .iter()
                .any(|s| s.encryption.as_ref().is_some_and(|e| !e.passphrase));
            ring.keys_recorded(&backup.destination, identity, recorded, ask)
        } else {
            ring.keys_for(
                &backup.destination,
                &files.iter().collect::<Vec<_>>(),
                recorded,
                ask,
            )
        }
        .map_err(|e| failed(format!("backup {} is encrypted: {e}", backup.stamp)))?;
        for w in &found.warnings {
            ui.warn(w);
        }
        return Ok(found.keys);
    }
    let Chosen::External { drive, backup } = chosen else {
        return Ok(None);
    };
    let mut files = Vec::new();
    for s in &backup.sets {
        files.extend(ArchiveFiles::discover(&backup.dir.path, &s.archive).ok());
        if let Some(i) = &s.index {
            files.extend(ArchiveFiles::discover(&backup.dir.path, i).ok());
        }
    }
    let recorded = backup
        .sets
        .iter()
        .any(|s| s.encryption.as_ref().is_some_and(|e| e.passphrase));
    let found = ring
        .keys_for(
            &drive.name,
            &files.iter().collect::<Vec<_>>(),
            recorded,
            ask,
        )
        .map_err(|e| failed(format!("backup {} is encrypted: {e}", backup.dir.name)))?;
    for w in &found.warnings {
        ui.warn(w);
    }
    Ok(found.keys)
}

/// Opens every encrypted archive and index of `sets` with its keys and authenticates its final chunk (which also
/// tells its length): a missing or wrong identity, a truncated archive, a missing final chunk or bytes added after
/// it stop the restore here, before anything is written. A remote archive is not opened here (its header and final
/// chunk would be two requests of their own per part): its index, encrypted to the same keys, is; its objects'
/// sizes were checked against the bucket's listing ([`crate::restore::cloud::CloudBackup::check_sizes`]), the age
/// headers `backup.json` records for its parts are authenticated here (no request), and every chunk read from it
/// is authenticated.
pub fn authenticate(sets: &[SetBackup]) -> anyhow::Result<()> {
    for s in sets {
        let SetContent::Archive {
            archive,
            index,
            chain,
        } = &s.content
        else {
            continue;
        };
        // Local archives and every index: opened, their final chunk authenticated; remote archives: the age
        // headers recorded for their parts.
        let archives = || std::iter::once(archive).chain(chain.iter().map(|(_, a)| a));
        for (files, whole) in archives()
            .filter(|a| !a.is_remote())
            .chain(index)
            .map(|a| (a, true))
            .chain(archives().filter(|a| a.is_remote()).map(|a| (a, false)))
        {
            if !files.encrypted() {
                continue;
            }
            let label = files.label();
            let checked = if whole {
                files
                    .open()
                    .and_then(|mut r| r.seek(SeekFrom::End(0)).map(|_| ()))
            } else {
                files.check_recorded_heads()
            };
            if let Err(e) = checked {
                let msg = e.to_string();
                let msg = if msg.contains(&label) {
                    msg
                } else {
                    format!("{label}: {msg}")
                };
                return Err(failed(format!(
                    "set {} cannot be restored: {msg}; nothing was written (check the backup with --verify)",
                    s.set
                )));
            }
        }
    }
    Ok(())
}

/// The sets of the chosen backup, as content to read; encrypted archives and indexes carry `keys`.
pub fn set_backups(chosen: &Chosen, ui: &Ui, keys: Option<&Arc<Keys>>) -> Vec<SetBackup> {
    match chosen {
        Chosen::Local { snapshots } => snapshots.iter().map(snapshot_set).collect(),
        Chosen::Cloud { backup, set } => backup.set_backups(set.as_deref(), keys),
        Chosen::External { drive, backup } => backup
            .sets
            .iter()
            .filter_map(|s| {
                let archive = match ArchiveFiles::discover(&backup.dir.path, &s.archive) {
                    Ok(a) => a.with_keys(keys.cloned()),
                    Err(e) => {
                        ui.warn(format_args!(
                            "set {} of backup {} cannot be read: {e}",
                            s.name, backup.dir.name
                        ));
                        return None;
                    }
                };
                // An index that is missing means scanning; one that is there but refused (a link, a FIFO) means
                // the set cannot be trusted.
                let index = match s
                    .index
                    .as_ref()
                    .map(|i| ArchiveFiles::discover(&backup.dir.path, i))
                {
                    Some(Ok(i)) => Some(i.with_keys(keys.cloned())),
                    Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                        ui.warn(format_args!(
                            "set {} of backup {} cannot be read: {e}",
                            s.name, backup.dir.name
                        ));
                        return None;
                    }
                    _ => None,
                };
                // An incremental's earlier archives: the same set's archive in each backup it depends on (stamps
                // checked by `BackupMeta::check`); one that is missing is named when a file needs it.
                let backups_dir = backup.dir.path.parent().unwrap_or(&backup.dir.path);
                let chain = backup
                    .dir
                    .meta
                    .iter()
                    .flat_map(|m| &m.depends_on)
                    .filter_map(|stamp| {
                        // Not through a link or a mount point: an archive the chain cannot reach is named as
                        // missing when a file needs it.
                        super::drive::chain_dir(backups_dir, stamp).ok()?;
                        let a =
                            ArchiveFiles::discover(&backups_dir.join(stamp), &s.archive).ok()?;
                        Some((stamp.clone(), a.with_keys(keys.cloned())))
                    })
                    .collect();
                Some(SetBackup {
                    set: s.name.clone(),
                    label: format!("backup {} on {}", backup.dir.name, drive.name),
                    sources: s.sources.iter().filter(|r| r.present).cloned().collect(),
                    content: SetContent::Archive {
                        archive,
                        index,
                        chain,
                    },
                })
            })
            .collect(),
    }
}

/// A local snapshot as a set to read: its sources present when it was collected, its directory.
fn snapshot_set(s: &Snapshot) -> SetBackup {
    SetBackup {
        set: s.set.clone(),
        label: format!("snapshot {}", s.name),
        sources: s
            .metadata
            .as_ref()
            .map(|m| m.sources.iter().filter(|r| r.present).cloned().collect())
            .unwrap_or_default(),
        content: SetContent::Snapshot {
            root: s.path.clone(),
        },
    }
}

/// The names to restore (or describe) per set: the wanted paths resolved, or every source of every set.
fn names_for(sets: &[SetBackup], wanted: &[PathBuf]) -> anyhow::Result<Vec<(usize, RelPath)>> {
    if !wanted.is_empty() {
        return Ok(job::dedupe(job::resolve(sets, wanted)?));
    }
    let mut out = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        if s.sources.is_empty() {
            out.push((i, RelPath::root()));
        } else {
            for r in &s.sources {
                out.push((i, select::name_of(&r.resolved)));
            }
        }
    }
    Ok(job::dedupe(out))
}

/// [`names_for`], and when a wanted path is not in the chosen backup, the error names the newest older backup that
/// holds it (and the `--date` that picks it).
pub fn names_or_older(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    sets: &[SetBackup],
    keys: Option<&Arc<Keys>>,
    ui: &Ui,
) -> anyhow::Result<Vec<(usize, RelPath)>> {
    let err = match names_for(sets, &req.paths) {
        Ok(names) => return Ok(names),
        Err(e) => e,
    };
    let Some(missing) = err.downcast_ref::<job::NotInBackup>() else {
        return Err(err);
    };
    match older_holding(settings, req, chosen, &missing.path, keys, ui) {
        Some((stamp, place)) => Err(failed(format!(
            "{}{}; it is in an older backup: the newest that holds it is {stamp} ({place}); restore it from there \
             with --date {stamp}",
            missing.head, missing.rest
        ))),
        None => Err(err),
    }
}

/// At most this many older backups are looked into for a missing path (per set for snapshots).
const OLDER_LOOKUPS: usize = 400;

/// The newest backup older than the chosen one that holds `path` (its stamp, and where it is), from the same kind of
/// source: local snapshots, or the verified backups on the drives present. Looked up only, never read through:
/// a snapshot by a walk down to the path, an archive through its index (one without an index is passed over).
fn older_holding(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    path: &Path,
    keys: Option<&Arc<Keys>>,
    ui: &Ui,
) -> Option<(String, String)> {
    let holds = |sets: &[SetBackup]| -> bool {
        job::resolve(sets, std::slice::from_ref(&path.to_path_buf())).is_ok()
    };
    match chosen {
        Chosen::Local { snapshots } => {
            let mut best: Option<&Snapshot> = None;
            let mut all = Vec::new();
            for chosen_snap in snapshots {
                let Ok(list) = snapshot::list(&settings.backup_root, &chosen_snap.set) else {
                    continue;
                };
                all.push(list);
            }
            for (list, chosen_snap) in all.iter().zip(snapshots) {
                for s in list
                    .iter()
                    .rev()
                    .filter(|s| s.time < chosen_snap.time && s.state() != SnapshotState::Unknown)
                    .filter(|s| best.is_none_or(|b| s.time > b.time))
                    .take(OLDER_LOOKUPS)
                {
                    let set = snapshot_set(s);
                    if holds(std::slice::from_ref(&set)) {
                        best = Some(s);
                        break;
                    }
                }
            }
            best.map(|s| {
                (
                    snapshot::stamp(s.time),
                    format!("local snapshot {}", s.name),
                )
            })
        }
        // An older cloud backup is not searched (each look costs requests): --date picks one.
        Chosen::Cloud { .. } => None,
        Chosen::External { backup, .. } => {
            let drives = catalog::drives(settings, req.drive.as_deref()).ok()?;
            let all = catalog::drive_backups(&drives);
            for (d, b) in all
                .iter()
                .rev()
                .filter(|(_, b)| b.verified() && b.dir.time < backup.dir.time)
                .filter(|(_, b)| req.set.as_ref().is_none_or(|s| b.set(s).is_some()))
                .take(OLDER_LOOKUPS)
            {
                let b = match &req.set {
                    Some(set) => b.only(set),
                    None => (*b).clone(),
                };
                let older = Chosen::External {
                    drive: Box::new((*d).clone()),
                    backup: Box::new(b),
                };
                let quiet = Ui {
                    verbosity: -2,
                    ..*ui
                };
                // Only indexed sets: a set without an index would be read through to find one name.
                let sets: Vec<SetBackup> = set_backups(&older, &quiet, keys)
                    .into_iter()
                    .filter(|s| s.content.indexed())
                    .collect();
                if holds(&sets) {
                    return Some((older.stamp(), format!("on {}", d.name)));
                }
            }
            None
        }
    }
}

/// The backup's own files must not be written: not the backup root, not a configured drive's backups, not the
/// backups of the drive read from.
pub fn check_target_outside_backups(
    settings: &Settings,
    chosen: &Chosen,
    target: &Path,
) -> anyhow::Result<()> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // The target may not exist yet: its deepest existing ancestor decides.
    let mut probe = target.to_path_buf();
    while !probe.exists() && probe.pop() {}
    let t = real(&probe).join(target.strip_prefix(&probe).unwrap_or(Path::new("")));
    let mut guarded = vec![real(&settings.backup_root)];
    // Every configured drive's backups (a restore from the local snapshots too), present or not.
    guarded.extend(
        settings
            .destinations
            .iter()
            .filter(|d| d.path.is_absolute())
            .map(|d| real(&d.path.join(crate::external::layout::BACKUPS_DIR))),
    );
    if let Chosen::External { backup, .. } = chosen
        && let Some(parent) = backup.dir.path.parent()
    {
        guarded.push(real(parent));
    }
    for g in guarded {
        if t.starts_with(&g) {
            return Err(usage(format!(
                "{} is inside the backups ({}); restoring there would change a backup; choose another --target",
                target.display(),
                g.display()
            )));
        }
    }
    Ok(())
}

/// Before restoring from a drive backup: `backup.json` must match `verification.sha256`, and each index must be
/// listed there with the size `backup.json` gives it. An index is not hashed whole before a restore (that would read
/// all of it to restore one file): the lines a restore uses are checked instead (their order, the index's `end` line,
/// and every entry against its header in the archive), and each file's content against its sha256. `--verify`
/// checks everything.
pub fn check_drive_backup_metadata(backup: &DriveBackup, ui: &Ui) -> anyhow::Result<()> {
    let sums = match verify::Sums::read(&backup.dir.path) {
        (_, Ok(Some(sums))) => sums,
        (path, Ok(None)) => {
            ui.warn(format_args!(
                "{} is missing: the backup cannot be checked against it; run --verify",
                path.display()
            ));
            return Ok(());
        }
        (path, Err(e)) => {
            return Err(failed(format!(
                "{} cannot be used: {e}; run --verify",
                path.display()
            )));
        }
    };
    let unlisted = |name: &str| {
        failed(format!(
            "{} is not listed in {}: the backup was changed after it was written; run --verify",
            show_path(&backup.dir.path.join(name)),
            sums.path.display()
        ))
    };
    let meta = backup.dir.path.join(METADATA_FILE);
    if meta.exists() {
        match sums.check_file(&backup.dir.path, METADATA_FILE.as_bytes()) {
            verify::FileCheck::Matches => {}
            verify::FileCheck::Unlisted => return Err(unlisted(METADATA_FILE)),
            verify::FileCheck::Differs { got, listed } => {
                return Err(failed(format!(
                    "{} does not match {} (sha256 {got}, listed {listed}): the backup is damaged or was changed; \
                     run --verify",
                    meta.display(),
                    sums.path.display(),
                )));
            }
            verify::FileCheck::Unreadable(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", meta.display())));
            }
        }
    }
    for set in &backup.sets {
        let Some(index) = &set.index else { continue };
        if sums.listed(index.as_bytes()).is_none() {
            return Err(unlisted(index));
        }
        let want = set
            .records
            .iter()
            .find(|r| &r.name == index)
            .map(|r| r.bytes);
        // A regular file of the backup's own directory, or nothing: a link or a FIFO there is refused.
        let got = match crate::stdx::fs::open_regular(&backup.dir.path.join(index)) {
            Ok(f) => f.metadata().map(|m| m.len()).ok(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(failed(format!("{e}; the backup is damaged or hostile"))),
        };
        if let (Some(want), Some(got)) = (want, got)
            && want != got
        {
            return Err(failed(format!(
                "{} is {got} bytes, {METADATA_FILE} says {want}: the backup is damaged or was changed; run --verify",
                show_path(&backup.dir.path.join(index))
            )));
        }
    }
    Ok(())
}

/// What a restore will do, planned (nothing written yet).
pub struct Prepared {
    pub opts: RestoreOptions,
    pub sets: Vec<SetBackup>,
    pub planned: Vec<Planned>,
}

/// Everything before a restore writes: the options, the checks of the chosen backup (its metadata against its
/// sums, its keys, every encrypted file authenticated), the names to restore and where, each target outside the
/// backups, and the plan of each.
pub fn prepare(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    ring: &KeyRing,
    ui: &Ui,
) -> anyhow::Result<Prepared> {
    let target = req.target.as_deref();
    let mut opts = RestoreOptions {
        overwrite: req.overwrite,
        compare: req.compare,
        preserve_special: req.preserve_special,
        apply_despite_refusals: req.skip_refused,
        refuse_escaping_symlinks: req.refuse_escaping_links,
        ..RestoreOptions::default()
    };
    if req.preserve_special && !opts.privileged {
        ui.warn("--preserve-special only applies as root: setuid and setgid bits are dropped");
        opts.preserve_special = false;
    }
    if req.keep {
        let stamp = snapshot::stamp(chrono::Local::now().naive_local());
        opts.keep_displaced = Some(displace::run_dir(&settings.backup_root, &stamp));
    }
    if let Chosen::External { backup, .. } = chosen {
        check_drive_backup_metadata(backup, ui)?;
    }
    if let Chosen::Cloud { backup, set } = chosen {
        backup.check_sizes(set.as_deref())?;
        // What a restore costs in egress, before it starts.
        let (archives, indexes) = backup.bytes(set.as_deref());
        // An incremental reads the files it keeps in the archives of the backups it depends on.
        let chain = backup.chain_bytes(set.as_deref());
        let archives = archives.saturating_add(chain);
        if req.paths.is_empty() && chain > 0 {
            ui.info(format_args!(
                "{}: downloading at most {} (the archives, {} of them in the backups it depends on) and {} (the \
                 indexes) from {}",
                backup.destination,
                crate::stdx::bytes(archives),
                crate::stdx::bytes(chain),
                crate::stdx::bytes(indexes),
                backup.place
            ));
        } else if req.paths.is_empty() {
            ui.info(format_args!(
                "{}: downloading {} (the archives) and {} (the indexes) from {}",
                backup.destination,
                crate::stdx::bytes(archives),
                crate::stdx::bytes(indexes),
                backup.place
            ));
        } else {
            ui.info(format_args!(
                "{}: downloading the indexes ({}), then only the ranges of the files restored (at most {} of \
                 archives) from {}",
                backup.destination,
                crate::stdx::bytes(indexes),
                crate::stdx::bytes(archives),
                backup.place
            ));
        }
    }
    let sets = set_backups(chosen, ui, None);
    if sets.is_empty() {
        return Err(failed(format!(
            "nothing to restore from backup {}",
            chosen.stamp()
        )));
    }
    // Whole sets back in place: their names are the backup's record of its sources, read without a key, so a set
    // the config gives no place to is refused before a key (a passphrase) is asked for.
    if target.is_none() && req.paths.is_empty() {
        job::in_place_names(&settings.sets, &sets, names_for(&sets, &[])?)?;
    }
    let keys = keys_for_backup(chosen, ring, Ask::Always, ui)?;
    let sets: Vec<SetBackup> = (sets.into_iter())
        .map(|s| s.with_keys(keys.as_ref()))
        .collect();
    authenticate(&sets)?;
    for s in &sets {
        if let SetContent::Archive {
            index: None,
            archive,
            ..
        } = &s.content
        {
            ui.warn(format_args!(
                "{} has no index: it is read by scanning, and its content is not checked against hashes",
                archive.label()
            ));
        }
    }
    let mut names = names_or_older(settings, req, chosen, &sets, keys.as_ref(), ui)?;
    if target.is_none() {
        names = job::in_place_names(&settings.sets, &sets, names)?;
    }
    let mut selections = Vec::new();
    for (set, name) in names {
        let floor = target
            .is_none()
            .then(|| job::source_of(&settings.sets, &sets[set].set, &name))
            .flatten();
        let sel = job::place(set, name, target, floor.as_ref())?;
        check_target_outside_backups(settings, chosen, &sel.target)?;
        selections.push(sel);
    }
    ui.step(format_args!(
        "planning {} from {}",
        crate::stdx::counted(selections.len() as u64, "path", "paths"),
        chosen.stamp()
    ));
    let planned = job::plan_all(&sets, selections, &opts)?;
    Ok(Prepared {
        opts,
        sets,
        planned,
    })
}

/// What `--verify` describes a restore of: per set, the wanted paths, or every source of every set.
pub fn scope(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    keys: Option<&Arc<Keys>>,
    ui: &Ui,
) -> anyhow::Result<Vec<Scope>> {
    let sets = set_backups(chosen, ui, keys);
    let mut scope: Vec<Scope> = Vec::new();
    for (i, name) in names_or_older(settings, req, chosen, &sets, keys, ui)? {
        match scope.iter_mut().find(|s| s.set == sets[i].set) {
            Some(s) => s.names.push(name),
            None => scope.push(Scope {
                set: sets[i].set.clone(),
                names: vec![name],
            }),
        }
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(day: u32, hour: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2025, 4, day)
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
    }

    /// The one rule of `--date`: an incomplete snapshot counts, a backup of unknown standing only when named by its
    /// exact stamp; a miss names the nearest counted ones.
    #[test]
    fn by_date_counts_incomplete_backups_and_unknown_ones_only_by_stamp() {
        let backups = [
            (at(1, 3), Standing::Good),
            (at(1, 9), Standing::Incomplete),
            (at(2, 3), Standing::Unknown),
        ];
        assert_eq!(by_date(&backups, DateQuery::Newest), Ok(1));
        let day1 = NaiveDate::from_ymd_opt(2025, 4, 1).unwrap();
        assert_eq!(by_date(&backups, DateQuery::Day(day1)), Ok(1));
        assert_eq!(by_date(&backups, DateQuery::Exact(at(2, 3))), Ok(2));
        let day2 = NaiveDate::from_ymd_opt(2025, 4, 2).unwrap();
        let miss = by_date(&backups, DateQuery::Day(day2)).unwrap_err();
        assert_eq!(
            miss.before,
            vec![1, 0],
            "indexes into the full list, nearest first"
        );
        assert!(miss.after.is_empty());
    }
}
