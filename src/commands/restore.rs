//! `dbackup restore` (also `backup-restore`): list backups, restore files or directories, or verify a backup, from
//! local snapshots or from the drive.
//!
//! stdout: the listing, the plan (`--dry-run`), what was restored, or the verification report; with `--json`, the
//! same as data ([`Listing`], [`RestoreOutput`], [`VerifyReport`]). stderr: warnings, progress, errors.
//!
//! Encrypted (age) drive backups: the keys come from `--identity FILE` and the config's `identity_file`s (or a
//! passphrase), read only once an encrypted archive is about to be opened ([`KeyRing`]); every encrypted archive and
//! index of the chosen backup is opened and its final chunk authenticated before anything is written, so a wrong
//! or missing key, a truncated archive or bytes added to it stop the restore with nothing written. A chunk that does
//! not authenticate in the middle fails only the entries it holds (nothing partial is left), and the rest is
//! restored. `--verify` without a key hashes the encrypted files only and says the contents were not checked.
//!
//! Exit: 0 done (or intact); 1 anything refused, failed, not found or damaged (nothing is restored when anything is
//! refused, unless `--skip-refused`); 2 bad arguments; 3 `--verify` of an encrypted backup without its key (the
//! encrypted files are intact, the contents were not checked); 5 `--source external` with no drive present.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::archive::sums::{self, SUMS_FILE};
use crate::archive::{ArchiveFiles, Keys};
use crate::cli::{CompareBy, GlobalArgs, RestoreArgs, SourceKind};
use crate::exit::{CodedError, Exit};
use crate::restore::catalog::{self, Drive};
use crate::restore::content::SetContent;
use crate::restore::displace;
use crate::restore::drive::{DriveBackup, METADATA_FILE};
use crate::restore::job::{self, Planned, SetBackup};
use crate::restore::keys::{Ask, KeyRing};
use crate::restore::list::{self, Kept, Listing};
use crate::restore::select::{self, DateQuery, NoMatch};
use crate::restore::verify::{self, Scope, VerifyReport};
use crate::restore::{Compare, RestoreOptions, Summary};
use crate::settings::{Env, Settings};
use crate::snapshot::{self, Snapshot, SnapshotState};
use crate::stdx::{show_path, show_str};
use crate::ui::{self, Ui};

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = Settings::load(global.config.as_deref(), super::output(global), &env)?;
    run_with_settings(&settings, &env, &args)
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Usage, msg).into()
}

fn failed(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Failed, msg).into()
}

/// Everything after loading the settings.
pub fn run_with_settings(
    settings: &Settings,
    env: &Env,
    args: &RestoreArgs,
) -> anyhow::Result<Exit> {
    let ui = Ui::new(&settings.output);
    let query: DateQuery = match &args.date {
        Some(d) => d.parse().map_err(usage)?,
        None => DateQuery::Newest,
    };
    if args.list {
        let mut extra = Vec::new();
        if !args.paths.is_empty() {
            extra.push("--path");
        }
        if args.target.is_some() {
            extra.push("--target");
        }
        if args.verify {
            extra.push("--verify");
        }
        if args.all {
            extra.push("--all");
        }
        if !extra.is_empty() {
            return Err(usage(format!(
                "--list shows backups and takes no {}; list first, then restore or verify with --date",
                extra.join(" or ")
            )));
        }
        return list(settings, args, &query, &ui);
    }
    if args.verify && args.target.is_some() {
        return Err(usage("--verify writes nothing, so it takes no --target"));
    }
    if args.drive.is_some() && args.source == Some(SourceKind::Local) {
        return Err(usage(
            "--drive names a drive: use it with --source external",
        ));
    }
    if args.all && (!args.paths.is_empty() || args.set.is_some()) {
        return Err(usage(
            "--all restores every set of the backup: it takes no --path or --set (give those alone)",
        ));
    }
    if args.no_keep && args.overwrite != crate::cli::Overwrite::Always {
        return Err(usage(
            "--no-keep replaces files without keeping what was there, so it goes only with --overwrite always; \
             without it, a file that differs from the backup is kept in <backup_root>/displaced/ before it is \
             replaced",
        ));
    }
    if !args.verify
        && !args.all
        && args.paths.is_empty()
        && args.set.is_none()
        && args.target.is_none()
    {
        return Err(usage(
            "say what to restore: --path PATH (repeatable) for files or directories, --set NAME for one set's \
             sources, or --all for every set, back where they were; or --target DIR to restore everything \
             under DIR; `dbackup restore --list` shows the backups",
        ));
    }
    let source = match (args.source, args.drive.is_some()) {
        (Some(s), _) => s,
        (None, true) => SourceKind::External,
        (None, false) => SourceKind::Local,
    };
    let wanted: Vec<PathBuf> = args
        .paths
        .iter()
        .map(|p| select::absolute_path(p, &env.home, &env.cwd))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let backup = choose(settings, args, source, &query, &ui)?;
    let ring = KeyRing::new(settings, &args.identities);
    if args.verify {
        return verify(settings, args, &backup, &wanted, &ring, &ui);
    }
    if settings.output.dry_run {
        return restore(settings, env, args, &backup, &wanted, &ring, &ui, &mut None);
    }
    // A restore that writes is logged: what was restored from where, and every file kept in displaced/.
    let started = chrono::Local::now().fixed_offset();
    let mut logged = None;
    let outcome = restore(
        settings,
        env,
        args,
        &backup,
        &wanted,
        &ring,
        &ui,
        &mut logged,
    );
    super::log_run(
        settings,
        &ui,
        "restore",
        started,
        match &outcome {
            Ok(exit) => Ok((*exit, logged.unwrap_or_default())),
            Err(e) => Err(e),
        },
    );
    outcome
}

// ---------------------------------------------------------------------------------------------------------------
// --list

fn list(
    settings: &Settings,
    args: &RestoreArgs,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Exit> {
    let local = args.source != Some(SourceKind::External) && args.drive.is_none();
    let external = args.source != Some(SourceKind::Local);
    let mut listing = Listing {
        backup_root: None,
        backups: Vec::new(),
        destinations: Vec::new(),
    };
    if local {
        let sets = only_set(catalog::local_set_names(settings), args.set.as_deref());
        let snaps = catalog::local_snapshots(&settings.backup_root, &sets)?;
        listing.backup_root = Some(settings.backup_root.clone());
        listing
            .backups
            .extend(list::local_backups(&settings.backup_root, &snaps));
    }
    let mut no_drive = false;
    if external {
        let drives = catalog::drives(settings, args.drive.as_deref())?;
        no_drive = !drives.iter().any(Drive::present);
        listing.backups.extend(list::drive_backups(&drives));
        listing.destinations = list::destinations(&drives);
    }
    if let Some(set) = &args.set {
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
    match query {
        DateQuery::Newest => {}
        DateQuery::Day(d) => listing.backups.retain(|b| b.time.date() == *d),
        DateQuery::Exact(t) => listing.backups.retain(|b| b.time == *t),
    }
    listing.sort();
    if ui.json {
        crate::outln!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        crate::out!("{}", listing.render());
    }
    if external && !local && no_drive {
        ui.warn(catalog::no_drive_message(&catalog::drives(
            settings,
            args.drive.as_deref(),
        )?));
        return Ok(Exit::NoDestination);
    }
    Ok(Exit::Ok)
}

fn only_set(mut sets: Vec<String>, only: Option<&str>) -> Vec<String> {
    if let Some(o) = only {
        sets.retain(|s| s == o);
        if sets.is_empty() {
            sets.push(o.to_string());
        }
    }
    sets
}

// ---------------------------------------------------------------------------------------------------------------
// Choosing the backup

/// The backup `--date` chose.
enum Chosen {
    /// Per set, its snapshot chosen by the date.
    Local { snapshots: Vec<Snapshot> },
    /// One backup directory on a drive.
    External {
        drive: Box<Drive>,
        backup: Box<DriveBackup>,
    },
}

impl Chosen {
    fn kept(&self) -> Kept {
        match self {
            Chosen::Local { .. } => Kept::Local,
            Chosen::External { .. } => Kept::External,
        }
    }

    fn stamp(&self) -> String {
        match self {
            Chosen::Local { snapshots } => {
                let mut stamps: Vec<String> =
                    snapshots.iter().map(|s| snapshot::stamp(s.time)).collect();
                stamps.sort();
                stamps.dedup();
                stamps.join(", ")
            }
            Chosen::External { backup, .. } => backup.name.clone(),
        }
    }

    fn location(&self, settings: &Settings) -> PathBuf {
        match self {
            Chosen::Local { .. } => settings.backup_root.clone(),
            Chosen::External { backup, .. } => backup.path.clone(),
        }
    }
}

fn choose(
    settings: &Settings,
    args: &RestoreArgs,
    source: SourceKind,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Chosen> {
    match source {
        SourceKind::Local => choose_local(settings, args, query, ui),
        SourceKind::External => choose_external(settings, args, query, ui),
    }
}

fn no_match_message(what: &str, query: &DateQuery, no: &NoMatch, stamps: &[String]) -> String {
    format!(
        "no {what} matches --date {query}; {}; see `dbackup restore --list`",
        select::nearest_sentence(no, |i| stamps[i].clone())
    )
}

fn choose_local(
    settings: &Settings,
    args: &RestoreArgs,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Chosen> {
    let names = catalog::local_set_names(settings);
    if let Some(set) = &args.set
        && !names.contains(set)
    {
        return Err(usage(format!(
            "there is no backup set named {set:?}; the backup root and the config have: {}",
            names.join(", ")
        )));
    }
    let sets = only_set(names, args.set.as_deref());
    let mut chosen = Vec::new();
    let mut all: Vec<(String, chrono::NaiveDateTime)> = Vec::new();
    for set in &sets {
        let snaps: Vec<Snapshot> = snapshot::list(&settings.backup_root, set)
            .with_context(|| format!("listing the snapshots of set {set}"))?
            .into_iter()
            // A snapshot without metadata is used only when named exactly.
            .filter(|s| s.state() != SnapshotState::Unknown || matches!(query, DateQuery::Exact(_)))
            .collect();
        let times: Vec<_> = snaps.iter().map(|s| s.time).collect();
        all.extend(snaps.iter().map(|s| (snapshot::stamp(s.time), s.time)));
        if let Ok(i) = select::choose(&times, *query) {
            let s = snaps[i].clone();
            match s.state() {
                SnapshotState::Incomplete => ui.warn(format_args!(
                    "snapshot {} is incomplete: {} when it was collected",
                    s.name,
                    s.metadata
                        .as_ref()
                        .map(|m| m.incompleteness())
                        .unwrap_or_default()
                )),
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
        let what = match &args.set {
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
    args: &RestoreArgs,
    query: &DateQuery,
    ui: &Ui,
) -> anyhow::Result<Chosen> {
    let drives = catalog::drives(settings, args.drive.as_deref())?;
    if !drives.iter().any(Drive::present) {
        return Err(
            CodedError::new(Exit::NoDestination, catalog::no_drive_message(&drives)).into(),
        );
    }
    let all = catalog::drive_backups(&drives);
    let exact = matches!(query, DateQuery::Exact(_));
    // Unverified backups only when named exactly.
    let candidates: Vec<_> = all
        .iter()
        .filter(|(_, b)| b.verified() || exact)
        .filter(|(_, b)| args.set.as_ref().is_none_or(|s| b.set(s).is_some()))
        .collect();
    let times: Vec<_> = candidates.iter().map(|(_, b)| b.time).collect();
    match select::choose(&times, *query) {
        Ok(i) => {
            let (d, b) = candidates[i];
            if !b.verified() {
                ui.warn(format_args!(
                    "backup {} on {} is not known to be verified ({}); its archives are read as they are",
                    b.name,
                    d.name,
                    b.meta_error.as_deref().unwrap_or("no metadata")
                ));
            }
            if let Some(set) = &args.set
                && b.set(set).is_none()
            {
                return Err(failed(format!("backup {} has no set {set}", b.name)));
            }
            let backup = match &args.set {
                Some(set) => b.only(set),
                None => (*b).clone(),
            };
            Ok(Chosen::External {
                drive: Box::new((*d).clone()),
                backup: Box::new(backup),
            })
        }
        Err(no) => {
            let stamps: Vec<String> = candidates.iter().map(|(_, b)| b.name.clone()).collect();
            let place: Vec<String> = drives
                .iter()
                .filter(|d| d.present())
                .map(|d| format!("{} ({})", d.name, d.path.display()))
                .collect();
            let what = match &args.set {
                Some(s) => format!("backup of set {s} on {}", place.join(", ")),
                None => format!("backup on {}", place.join(", ")),
            };
            if stamps.is_empty() {
                return Err(failed(format!(
                    "there is no verified backup on {}; run `dbackup external` first",
                    place.join(", ")
                )));
            }
            Err(failed(no_match_message(&what, query, &no, &stamps)))
        }
    }
}

/// The keys that open the chosen backup's encrypted archives and indexes, read now (`None` when nothing in it is
/// encrypted: then no identity file is read at all).
fn keys_for_backup(
    chosen: &Chosen,
    ring: &KeyRing,
    ask: Ask,
    ui: &Ui,
) -> anyhow::Result<Option<Arc<Keys>>> {
    let Chosen::External { backup, .. } = chosen else {
        return Ok(None);
    };
    let mut files = Vec::new();
    for s in &backup.sets {
        files.extend(ArchiveFiles::discover(&backup.path, &s.archive).ok());
        if let Some(i) = &s.index {
            files.extend(ArchiveFiles::discover(&backup.path, i).ok());
        }
    }
    let recorded = backup
        .sets
        .iter()
        .any(|s| s.encryption.as_ref().is_some_and(|e| e.passphrase));
    let found = ring
        .keys_for(&files.iter().collect::<Vec<_>>(), recorded, ask)
        .map_err(|e| failed(format!("backup {} is encrypted: {e}", backup.name)))?;
    for w in &found.warnings {
        ui.warn(w);
    }
    Ok(found.keys)
}

/// Opens every encrypted archive and index of `sets` with its keys and authenticates its final chunk (which also
/// tells its length): a missing or wrong identity, a truncated archive, a missing final chunk or bytes added after
/// it stop the restore here, before anything is written.
fn authenticate(sets: &[SetBackup]) -> anyhow::Result<()> {
    for s in sets {
        let SetContent::Archive { archive, index } = &s.content else {
            continue;
        };
        for files in std::iter::once(archive).chain(index) {
            if !files.encrypted() {
                continue;
            }
            let label = files.label();
            let checked = files
                .open()
                .and_then(|mut r| r.seek(SeekFrom::End(0)).map(|_| ()));
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
fn set_backups(chosen: &Chosen, ui: &Ui, keys: Option<&Arc<Keys>>) -> Vec<SetBackup> {
    match chosen {
        Chosen::Local { snapshots } => snapshots
            .iter()
            .map(|s| SetBackup {
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
            })
            .collect(),
        Chosen::External { drive, backup } => backup
            .sets
            .iter()
            .filter_map(|s| {
                let archive = match ArchiveFiles::discover(&backup.path, &s.archive) {
                    Ok(a) => a.with_keys(keys.cloned()),
                    Err(e) => {
                        ui.warn(format_args!(
                            "set {} of backup {} cannot be read: {e}",
                            s.name, backup.name
                        ));
                        return None;
                    }
                };
                // An index that is missing means scanning; one that is there but refused (a link, a FIFO) means
                // the set cannot be trusted.
                let index = match s
                    .index
                    .as_ref()
                    .map(|i| ArchiveFiles::discover(&backup.path, i))
                {
                    Some(Ok(i)) => Some(i.with_keys(keys.cloned())),
                    Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                        ui.warn(format_args!(
                            "set {} of backup {} cannot be read: {e}",
                            s.name, backup.name
                        ));
                        return None;
                    }
                    _ => None,
                };
                Some(SetBackup {
                    set: s.name.clone(),
                    label: format!("backup {} on {}", backup.name, drive.name),
                    sources: s.sources.iter().filter(|r| r.present).cloned().collect(),
                    content: SetContent::Archive { archive, index },
                })
            })
            .collect(),
    }
}

/// The names to restore (or describe) per set: the wanted paths resolved, or every source of every set.
fn names_for(
    sets: &[SetBackup],
    wanted: &[PathBuf],
) -> anyhow::Result<Vec<(usize, crate::restore::RelPath)>> {
    if !wanted.is_empty() {
        return Ok(job::dedupe(job::resolve(sets, wanted)?));
    }
    let mut out = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        if s.sources.is_empty() {
            out.push((i, crate::restore::RelPath::root()));
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
fn names_or_older(
    settings: &Settings,
    args: &RestoreArgs,
    chosen: &Chosen,
    sets: &[SetBackup],
    wanted: &[PathBuf],
    keys: Option<&Arc<Keys>>,
    ui: &Ui,
) -> anyhow::Result<Vec<(usize, crate::restore::RelPath)>> {
    let err = match names_for(sets, wanted) {
        Ok(names) => return Ok(names),
        Err(e) => e,
    };
    let Some(missing) = err.downcast_ref::<job::NotInBackup>() else {
        return Err(err);
    };
    match older_holding(settings, args, chosen, &missing.path, keys, ui) {
        Some((stamp, place)) => Err(failed(format!(
            "{}; it is in an older backup: the newest that holds it is {stamp} ({place}); restore it from there \
             with --date {stamp}{}",
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
    args: &RestoreArgs,
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
                    let set = SetBackup {
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
                    };
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
        Chosen::External { backup, .. } => {
            let drives = catalog::drives(settings, args.drive.as_deref()).ok()?;
            let all = catalog::drive_backups(&drives);
            for (d, b) in all
                .iter()
                .rev()
                .filter(|(_, b)| b.verified() && b.time < backup.time)
                .filter(|(_, b)| args.set.as_ref().is_none_or(|s| b.set(s).is_some()))
                .take(OLDER_LOOKUPS)
            {
                let b = match &args.set {
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

// ---------------------------------------------------------------------------------------------------------------
// Restore

/// What `restore` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct RestoreOutput<'a> {
    pub source: Kept,
    pub backup: String,
    pub dry_run: bool,
    pub restores: Vec<RestoreItem<'a>>,
}

/// One restored path.
#[derive(Debug, Serialize)]
pub struct RestoreItem<'a> {
    pub set: &'a str,
    pub from: &'a str,
    pub path: &'a Path,
    pub target: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a crate::restore::Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'a Summary>,
}

/// The backup's own files must not be written: not the backup root, not the drive's backups.
fn check_target_outside_backups(
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
    if let Chosen::External { backup, .. } = chosen
        && let Some(parent) = backup.path.parent()
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
fn check_drive_backup_metadata(backup: &DriveBackup, ui: &Ui) -> anyhow::Result<()> {
    let sums_path = backup.path.join(SUMS_FILE);
    let lines = match sums::read_sums(&sums_path) {
        Ok(l) => l,
        Err(sums::SumsError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            ui.warn(format_args!(
                "{} is missing: the backup cannot be checked against it; run --verify",
                sums_path.display()
            ));
            return Ok(());
        }
        Err(e) => {
            return Err(failed(format!(
                "{} cannot be used: {e}; run --verify",
                sums_path.display()
            )));
        }
    };
    let listed = |name: &str| -> anyhow::Result<&crate::archive::sums::SumLine> {
        lines.iter().find(|l| l.name == name.as_bytes()).ok_or_else(|| {
            failed(format!(
                "{} is not listed in {}: the backup was changed after it was written; run --verify",
                show_path(&backup.path.join(name)),
                sums_path.display()
            ))
        })
    };
    let meta = backup.path.join(METADATA_FILE);
    if meta.exists() {
        let line = listed(METADATA_FILE)?;
        let (_, got) =
            verify::hash_file(&meta).with_context(|| format!("reading {}", meta.display()))?;
        if got != line.sha256 {
            return Err(failed(format!(
                "{} does not match {} (sha256 {got}, listed {}): the backup is damaged or was changed; run --verify",
                meta.display(),
                sums_path.display(),
                line.sha256
            )));
        }
    }
    for set in &backup.sets {
        let Some(index) = &set.index else { continue };
        listed(index)?;
        let want = set
            .records
            .iter()
            .find(|r| &r.name == index)
            .map(|r| r.bytes);
        // A regular file of the backup's own directory, or nothing: a link or a FIFO there is refused.
        let got = match crate::stdx::fs::open_regular(&backup.path.join(index)) {
            Ok(f) => f.metadata().map(|m| m.len()).ok(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(failed(format!("{e}; the backup is damaged or hostile"))),
        };
        if let (Some(want), Some(got)) = (want, got)
            && want != got
        {
            return Err(failed(format!(
                "{} is {got} bytes, {METADATA_FILE} says {want}: the backup is damaged or was changed; run --verify",
                show_path(&backup.path.join(index))
            )));
        }
    }
    Ok(())
}

/// One restored path as the run log records it.
#[derive(Debug, Serialize)]
struct Logged<'a> {
    set: &'a str,
    from: &'a str,
    path: &'a Path,
    target: &'a Path,
    counts: &'a crate::restore::Counts,
    refused: usize,
    failed: usize,
    displaced: &'a [crate::restore::displace::Displaced],
}

#[allow(clippy::too_many_arguments)]
fn restore(
    settings: &Settings,
    env: &Env,
    args: &RestoreArgs,
    chosen: &Chosen,
    wanted: &[PathBuf],
    ring: &KeyRing,
    ui: &Ui,
    logged: &mut Option<serde_json::Value>,
) -> anyhow::Result<Exit> {
    let target = args
        .target
        .as_ref()
        .map(|t| crate::expand::normalize(&env.cwd.join(t)));
    let mut opts = RestoreOptions {
        overwrite: args.overwrite.into(),
        compare: match args.compare {
            CompareBy::Metadata => Compare::Metadata,
            CompareBy::Content => Compare::Content,
        },
        preserve_special: args.preserve_special,
        apply_despite_refusals: args.skip_refused,
        refuse_escaping_symlinks: args.no_escaping_links,
        ..RestoreOptions::default()
    };
    if args.preserve_special && !opts.privileged {
        ui.warn("--preserve-special only applies as root: setuid and setgid bits are dropped");
        opts.preserve_special = false;
    }
    if !args.no_keep {
        let stamp = snapshot::stamp(chrono::Local::now().naive_local());
        opts.keep_displaced = Some(displace::run_dir(&settings.backup_root, &stamp));
    }
    if let Chosen::External { backup, .. } = chosen {
        check_drive_backup_metadata(backup, ui)?;
    }
    let keys = keys_for_backup(chosen, ring, Ask::Always, ui)?;
    let sets = set_backups(chosen, ui, keys.as_ref());
    if sets.is_empty() {
        return Err(failed(format!(
            "nothing to restore from backup {}",
            chosen.stamp()
        )));
    }
    authenticate(&sets)?;
    for s in &sets {
        if let SetContent::Archive {
            index: None,
            archive,
        } = &s.content
        {
            ui.warn(format_args!(
                "{} has no index: it is read by scanning, and its content is not checked against hashes",
                archive.label()
            ));
        }
    }
    let mut names = names_or_older(settings, args, chosen, &sets, wanted, keys.as_ref(), ui)?;
    if target.is_none() {
        names = job::in_place_names(&settings.sets, &sets, names)?;
    }
    let mut selections = Vec::new();
    for (set, name) in names {
        let sel = job::place(set, name, target.as_deref())?;
        check_target_outside_backups(settings, chosen, &sel.target)?;
        selections.push(sel);
    }
    ui.step(format_args!(
        "planning {} from {}",
        ui::counted(selections.len() as u64, "path", "paths"),
        chosen.stamp()
    ));
    let planned = job::plan_all(&sets, selections, &opts)?;
    let refused: u64 = planned.iter().map(|p| p.plan.counts.refuse.entries).sum();

    if settings.output.dry_run {
        print_plans(chosen, &planned, ui)?;
        return Ok(if refused > 0 { Exit::Failed } else { Exit::Ok });
    }
    if refused > 0 && !args.skip_refused {
        for p in &planned {
            for item in p.plan.refusals() {
                ui.error(format_args!(
                    "refused    {}: {}",
                    p.plan.item_path(item),
                    item.reason.as_deref().unwrap_or("refused")
                ));
            }
        }
        return Err(failed(format!(
            "{} of the backup refused (listed above), so nothing was restored; the backup may be hostile or \
             damaged: check it with --verify, see the whole plan with --dry-run, or restore everything else with \
             --skip-refused",
            ui::counted(refused, "entry", "entries")
        )));
    }

    report_escaping_links(&planned, ui);
    let total: u64 = planned
        .iter()
        .map(|p| {
            p.plan
                .counts
                .create
                .bytes
                .saturating_add(p.plan.counts.replace.bytes)
        })
        .fold(0u64, u64::saturating_add);
    // From here on SIGINT and SIGTERM stop the restore between entries, with a run log line.
    super::begin_run(settings, ui, "restore");
    let bar = ui.percent_bar("restore");
    let mut written = 0u64;
    let mut done = |n: u64| {
        written += n;
        if let Some(b) = &bar
            && total > 0
        {
            b.set_position(written.saturating_mul(100) / total);
        }
    };
    let (summaries, error) = job::apply_all(&sets, &planned, &mut done);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let log: Vec<Logged> = planned
        .iter()
        .zip(&summaries)
        .map(|(p, s)| Logged {
            set: &p.set,
            from: &p.from,
            path: &p.path,
            target: &p.plan.target,
            counts: &s.counts,
            refused: s.refusals.len(),
            failed: s.errors.len(),
            displaced: &s.displaced,
        })
        .collect();
    *logged = serde_json::to_value(&log).ok();
    // Interrupted: the run's line (with what was restored and kept) is written by `run_with_settings`, marked
    // `interrupted`; `main` says so in one line.
    crate::interrupt::check()?;
    if ui.json {
        let out = RestoreOutput {
            source: chosen.kept(),
            backup: chosen.stamp(),
            dry_run: false,
            restores: planned
                .iter()
                .zip(summaries.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(p, s)| RestoreItem {
                    set: &p.set,
                    from: &p.from,
                    path: &p.path,
                    target: &p.plan.target,
                    plan: None,
                    summary: s,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (p, s) in planned.iter().zip(&summaries) {
            crate::outln!(
                "{} ({}, from {}):",
                show_path(&p.path),
                show_str(&p.set),
                show_str(&p.from)
            );
            if error.is_some() {
                // Entries never reached because the restore stopped are counted, not listed one by one.
                let mut s = s.clone();
                let before = s.errors.len();
                s.errors.retain(|e| !e.message.starts_with(NOT_HANDED_OVER));
                crate::out!("{}", indent(&s.render()));
                let skipped = before - s.errors.len();
                if skipped > 0 {
                    crate::outln!(
                        "  {} not restored: the restore stopped (see the error)",
                        ui::counted(skipped as u64, "entry", "entries")
                    );
                }
            } else {
                crate::out!("{}", indent(&s.render()));
            }
        }
    }
    let kept: usize = summaries.iter().map(|s| s.displaced.len()).sum();
    if kept > 0
        && let Some(dir) = &opts.keep_displaced
    {
        ui.info(format_args!(
            "kept in {}: {} that differed from the backup before the restore replaced {} (listed above; copy \
             back with cp -a)",
            dir.display(),
            ui::counted(kept as u64, "file", "files"),
            if kept == 1 { "it" } else { "them" },
        ));
    }
    if let Some(e) = error {
        let restored: u64 = summaries
            .iter()
            .map(|s| s.counts.create.entries + s.counts.replace.entries)
            .sum();
        let what = if restored == 0 {
            "the restore stopped before anything was restored".to_string()
        } else {
            format!(
                "the restore stopped after restoring {} (listed above); those are complete and were checked as \
                 they were read, the entry being written was removed, and the rest was not restored",
                ui::counted(restored, "entry", "entries")
            )
        };
        return Err(anyhow::Error::new(e).context(what));
    }
    for s in &summaries {
        for w in s.warnings() {
            ui.warn(w);
        }
    }
    let exit = summaries
        .iter()
        .map(Summary::exit)
        .fold(Exit::Ok, Exit::worst);
    if exit == Exit::Failed {
        let problems: usize = summaries
            .iter()
            .map(|s| s.refusals.len() + s.errors.len())
            .sum();
        let mut from: Vec<String> = planned
            .iter()
            .zip(&summaries)
            .filter(|(_, s)| !s.errors.is_empty() || !s.refusals.is_empty())
            .map(|(p, _)| show_str(&p.from))
            .collect();
        from.dedup();
        ui.error(format_args!(
            "dbackup: error: {} not restored (listed above), from {}",
            ui::counted(problems as u64, "entry was", "entries were"),
            from.join(", ")
        ));
    }
    Ok(exit)
}

/// How the engine reports an entry the restore never reached.
const NOT_HANDED_OVER: &str = "not restored: the backup ended before";

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Before a real restore: the symlinks it makes that lead outside the target (one line; each of them with `-v`).
fn report_escaping_links(planned: &[Planned], ui: &Ui) {
    let made = |i: &&crate::restore::PlanItem| {
        matches!(
            i.action,
            crate::restore::Action::Create | crate::restore::Action::Replace
        )
    };
    let n = planned
        .iter()
        .flat_map(|p| p.plan.escaping().filter(made))
        .count();
    if n == 0 {
        return;
    }
    ui.info(format_args!(
        "{} outside the target once restored: restored as {}, never followed (the plan lists them: \
         --dry-run; --no-escaping-links refuses them)",
        ui::counted(n as u64, "symlink leads", "symlinks lead"),
        if n == 1 { "it is" } else { "they are" }
    ));
    for p in planned {
        for item in p.plan.escaping().filter(made) {
            ui.step(format_args!(
                "  {} -> {}",
                p.plan.item_path(item),
                item.escapes_to.as_deref().unwrap_or_default()
            ));
        }
    }
}

fn print_plans(chosen: &Chosen, planned: &[Planned], ui: &Ui) -> anyhow::Result<()> {
    if ui.json {
        let out = RestoreOutput {
            source: chosen.kept(),
            backup: chosen.stamp(),
            dry_run: true,
            restores: planned
                .iter()
                .map(|p| RestoreItem {
                    set: &p.set,
                    from: &p.from,
                    path: &p.path,
                    target: &p.plan.target,
                    plan: Some(&p.plan),
                    summary: None,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    crate::outln!("dry run: nothing is written");
    for p in planned {
        crate::outln!(
            "{} ({}, from {}):",
            show_path(&p.path),
            show_str(&p.set),
            show_str(&p.from)
        );
        crate::out!("{}", indent(&p.plan.render(ui.verbosity >= 1)));
    }
    let refused: u64 = planned.iter().map(|p| p.plan.counts.refuse.entries).sum();
    if refused > 0 {
        crate::outln!(
            "{} refused: a real run restores nothing (unless --skip-refused)",
            ui::counted(refused, "entry is", "entries are")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// --verify

fn verify(
    settings: &Settings,
    args: &RestoreArgs,
    chosen: &Chosen,
    wanted: &[PathBuf],
    ring: &KeyRing,
    ui: &Ui,
) -> anyhow::Result<Exit> {
    let keys = keys_for_backup(chosen, ring, Ask::IfAvailable, ui)?;
    let sets = set_backups(chosen, ui, keys.as_ref());
    // What a restore would write: the wanted paths, or every source of every set.
    let mut scope: Vec<Scope> = Vec::new();
    for (i, name) in names_or_older(settings, args, chosen, &sets, wanted, keys.as_ref(), ui)? {
        match scope.iter_mut().find(|s| s.set == sets[i].set) {
            Some(s) => s.names.push(name),
            None => scope.push(Scope {
                set: sets[i].set.clone(),
                names: vec![name],
            }),
        }
    }
    let list_all = ui.verbosity >= 1;
    let bar = ui.percent_bar("verify");
    let report = match chosen {
        Chosen::External { backup, .. } => {
            let total: u64 = backup
                .sets
                .iter()
                .map(|s| s.file_bytes.unwrap_or(s.archive_bytes))
                .fold(0u64, u64::saturating_add);
            let mut seen = 0u64;
            let mut tick = |n: u64| {
                seen += n;
                if let Some(b) = &bar
                    && total > 0
                {
                    b.set_position((seen.saturating_mul(100) / total).min(100));
                }
            };
            verify::verify_drive_backup(backup, keys.as_ref(), &scope, list_all, &mut tick)
        }
        Chosen::Local { snapshots } => {
            let drives = catalog::drives(settings, None).unwrap_or_default();
            let on_drives = catalog::drive_backups(&drives);
            let mut report = VerifyReport {
                source: Kept::Local,
                backup: chosen.stamp(),
                location: chosen.location(settings),
                sums: None,
                sets: Vec::new(),
                entries: 0,
                files: 0,
                bytes: 0,
                problems: Vec::new(),
                would_restore: Vec::new(),
                intact: false,
                content_checked: true,
                warnings: Vec::new(),
            };
            let total: u64 = snapshots
                .iter()
                .filter_map(|s| s.metadata.as_ref().map(|m| m.stats.total_bytes))
                .fold(0u64, u64::saturating_add);
            let mut seen = 0u64;
            let mut tick = |n: u64| {
                seen += n;
                if let Some(b) = &bar
                    && total > 0
                {
                    b.set_position((seen.saturating_mul(100) / total).min(100));
                }
            };
            for snap in snapshots {
                // The newest verified drive backup made from this very snapshot.
                let made = on_drives.iter().rev().find_map(|(d, b)| {
                    let s = b.set(&snap.set)?;
                    (b.verified() && s.snapshot.as_deref() == Some(snap.name.as_str()))
                        .then_some((d, b, s))
                });
                let index = made.and_then(|(d, b, s)| {
                    let files = ArchiveFiles::discover(&b.path, s.index.as_ref()?).ok()?;
                    let label = format!("backup {} on {}", b.name, d.name);
                    if !files.encrypted() {
                        return Some((label, files));
                    }
                    // An encrypted index is compared with only when it can be decrypted.
                    let recorded = s.encryption.as_ref().is_some_and(|e| e.passphrase);
                    let keys = match ring.keys_for(&[&files], recorded, Ask::IfAvailable) {
                        Ok(f) => f.keys.filter(|k| !k.is_empty()),
                        Err(e) => {
                            ui.warn(format_args!("{e}"));
                            None
                        }
                    };
                    if keys.is_none() {
                        ui.warn(format_args!(
                            "{label} was made from snapshot {} but is encrypted, and no identity was given: the \
                             snapshot is not compared with it (pass --identity FILE)",
                            snap.name
                        ));
                        return None;
                    }
                    Some((label, files.with_keys(keys)))
                });
                let names: Vec<crate::restore::RelPath> = if scope.is_empty() {
                    vec![crate::restore::RelPath::root()]
                } else {
                    scope
                        .iter()
                        .filter(|s| s.set == snap.set)
                        .flat_map(|s| s.names.clone())
                        .collect()
                };
                let (set, problems, would) = verify::verify_snapshot(
                    snap,
                    index.as_ref().map(|(l, f)| (l.clone(), f)),
                    &names,
                    list_all,
                    &mut tick,
                );
                report.entries += set.entries;
                report.files += set.files;
                report.bytes += set.bytes;
                report.sets.push(set);
                report.problems.extend(problems);
                report.would_restore.extend(would);
            }
            report.intact = report.problems.is_empty();
            report
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if ui.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", verify::render(&report, list_all));
    }
    for w in &report.warnings {
        ui.warn(w);
    }
    if report.intact && !report.content_checked {
        Ok(Exit::Warnings)
    } else if report.intact {
        Ok(Exit::Ok)
    } else {
        let first = &report.problems[0];
        Err(failed(format!(
            "backup {} is not intact ({}): {first}",
            report.backup,
            ui::counted(report.problems.len() as u64, "problem", "problems")
        )))
    }
}
