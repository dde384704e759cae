//! Looking, for `status` and `backup`: the metadata of the newest snapshots of each set, each destination's presence
//! and the `backup.json` of its backups, the run log, and free space. Reads metadata only: no snapshot tree is ever
//! walked, and only as many snapshot metadata files are read as the answers need (newest first).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::external::layout;
use crate::external::retention::Owner;
use crate::media::{self, Presence};
use crate::runlog::{self, RunRecord};
use crate::schedule::{DestinationHistory, Seen, SetHistory};
use crate::settings::{DestinationSettings, Settings};
use crate::snapshot::{self, Layout};

/// Everything `status` (and the schedule) needs, gathered once.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub backup_root: PathBuf,
    pub root_exists: bool,
    /// Why the backup root, which exists, cannot be read (its snapshots are unknown, not absent).
    pub root_error: Option<String>,
    /// Space on the filesystem holding the backup root (or its nearest existing parent).
    pub root_space: Option<Space>,
    /// The pid of the dbackup run holding the lock now, if one does.
    pub running: Option<u32>,
    pub sets: Vec<SetFacts>,
    pub destinations: Vec<DestinationFacts>,
    /// The cloud destinations, in config order (looked at as [`CloudLook`] says).
    pub clouds: Vec<CloudFacts>,
    pub runs: RunFacts,
    /// How many recent runs and snapshots per set were read for the history (0: none, as for `status`).
    pub history: usize,
    /// The machine's name (read for the history only).
    pub host: String,
    /// The directories of `displaced/` holding files a killed restore set aside without listing them.
    pub unlisted_displaced: Vec<PathBuf>,
}

/// Whether and how the destinations are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Not at all (`backup` with `schedule.external: manual`).
    Skip,
    /// Every check, the writability probe included (what `backup` does before it writes).
    Probe,
    /// Every check, writability asked of the kernel instead of the probe: nothing is written (`status`, `backup
    /// --dry-run`).
    Plan,
    /// Every check but the probe: nothing is written to a drive (the status page, `dbackup serve`).
    Read,
}

/// Whether and how the cloud destinations are looked at (each look is requests over the network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudLook {
    /// Not at all: the run log's memory only (the status page, `dbackup serve`).
    Skip,
    /// One listing and the newest `backup.json`, of the destinations whose schedule is not manual (all of them
    /// with `force`): what `backup` needs to decide what is due.
    Newest { force: bool },
    /// One listing and every `backup.json` (`status`): restore points, chains, bytes stored, and each backup's objects
    /// against the sizes its `backup.json` records (from the listing).
    Full,
}

/// One cloud destination: its backups as one listing and their `backup.json` show them (no archive is read).
#[derive(Debug, Clone)]
pub struct CloudFacts {
    pub settings: crate::settings::CloudSettings,
    /// It was looked at (not: [`CloudLook::Skip`], or a manual schedule for `backup`).
    pub looked: bool,
    pub listing: Option<ListingFacts>,
    /// Unfinished uploads (stamps without `backup.json`).
    pub unfinished: usize,
    /// The unfinished upload the next upload can resume (its local journal, `external::resume`), with its parts.
    pub resumable: Option<crate::external::resume::ResumePlan>,
    /// Unfinished uploads that may still be going (their `upload.json`, `external::upload_marker`), whoever's:
    /// not in `unfinished`, which the next upload leaves alone.
    pub going: Vec<crate::external::cloud::GoingUpload>,
    /// Unfinished uploads' `upload.json` read (one GET each; `status` only).
    pub markers_read: usize,
    /// Why it could not be looked at (keys, network, bucket).
    pub error: Option<String>,
    /// The newest backup the run log says was uploaded there (not one `restore --verify` found damaged: see
    /// `log_damaged`).
    pub from_log: Option<Seen>,
    /// It was not listed and the newest backup the run log names there is one `restore --verify` found damaged: its
    /// stamp and what was found ([`log_damaged`]). Then no newest is known.
    pub log_damaged: Option<(String, String)>,
    /// The newest upload the run log tells of there, written or not.
    pub attempt: Option<Attempt>,
    /// Requests the look took.
    pub requests: u64,
}

impl CloudFacts {
    /// The newest verified backup: from the bucket when it was listed, else from the run log.
    pub fn newest(&self) -> Option<Seen> {
        newest_known(&self.listing, &self.from_log)
    }

    /// Why it could not be looked at, when it was to be (keys, network, bucket).
    pub fn unseen(&self) -> Option<String> {
        self.error.clone().filter(|_| self.looked)
    }

    /// Its newest backup is unknown: as a drive's ([`DestinationFacts::newest_unknown`]).
    pub fn newest_unknown(&self) -> bool {
        self.unseen().is_some() || self.log_damaged.is_some()
    }
}

/// Looks at one cloud destination ([`look_at_cloud`]); not listed, the run log's newest there may be one found
/// damaged ([`log_damaged`]), as for a drive.
fn cloud(
    c: &crate::settings::CloudSettings,
    (look, owner): (CloudLook, Owner),
    runs: &RunFacts,
    (root, damage): (&std::path::Path, &[crate::external::damage::Record]),
) -> CloudFacts {
    let mut facts = look_at_cloud(c, (look, owner), runs, (root, damage));
    let listed = facts.listing.is_some();
    facts.log_damaged = log_damaged(&c.name, listed, &mut facts.from_log, damage);
    facts
}

/// Looks at one cloud destination: one listing, then every `backup.json` (or only the newest).
fn look_at_cloud(
    c: &crate::settings::CloudSettings,
    (look, owner): (CloudLook, Owner),
    runs: &RunFacts,
    (root, damage): (&std::path::Path, &[crate::external::damage::Record]),
) -> CloudFacts {
    let mut facts = CloudFacts {
        settings: c.clone(),
        looked: false,
        listing: None,
        unfinished: 0,
        resumable: None,
        going: Vec::new(),
        markers_read: 0,
        error: None,
        from_log: runs.written.get(&c.name).cloned(),
        log_damaged: None,
        attempt: runs.attempts.get(&c.name).cloned(),
        requests: 0,
    };
    let own = c
        .schedule
        .unwrap_or(crate::config::ExternalSchedule::Manual);
    let newest_only = match look {
        CloudLook::Skip => return facts,
        CloudLook::Newest { force } => {
            if !force && c.schedule.is_some() && own == crate::config::ExternalSchedule::Manual {
                return facts;
            }
            true
        }
        CloudLook::Full => false,
    };
    facts.looked = true;
    let env = crate::expand::Env::from_process();
    // A look, not an upload: an unreachable bucket costs at most two tries of 15 seconds, never minutes.
    let quick = crate::settings::CloudSettings {
        retries: c.retries.min(1),
        timeout_seconds: c.timeout_seconds.min(15),
        ..c.clone()
    };
    let store = match crate::cloud::Store::open(&quick, &env, chrono::Local::now().time()) {
        Ok(s) => s,
        Err(e) => {
            facts.error = Some(e.to_string());
            return facts;
        }
    };
    // What `restore --verify` found damaged there is no restore point: not its newest backup either.
    let found: Vec<String> = (damage.iter())
        .filter(|r| r.destination == c.name)
        .map(|r| r.backup.clone())
        .collect();
    match crate::external::bucket::read(&store, newest_only.then_some((owner, &found[..]))) {
        Ok(mut b) => {
            if !newest_only {
                // Whose each unfinished upload is, and whether it may still be going: as an upload judges them.
                let before = crate::external::bucket::requests_of(&store);
                let now = (media::hostname(), chrono::Utc::now());
                crate::external::bucket::read_markers(&store, &mut b.listing, &[], (&now.0, now.1));
                facts.markers_read =
                    crate::external::bucket::requests_of(&store).saturating_sub(before) as usize;
                facts.going = crate::external::cloud::going(&b.listing, "");
            }
            let count = b.listing.backups.len();
            let listing = layout::DriveListing {
                exists: true,
                backups: b.backups,
                leftovers: Vec::new(),
                latest: b.listing.latest.clone(),
                other: Vec::new(),
            };
            // Its chains are judged as a drive's when every `backup.json` was read; a look at the newest only
            // (`backup`) has passed over a newest whose chain is broken, or whose own objects are missing or short,
            // already (`bucket::read_listed`), so `backup` and `status` agree on a destination's newest backup.
            let damaged = Damaged {
                verify: crate::external::damage::on_destination(damage, &c.name, &listing),
                // Its objects against the sizes of the listing made (no request), as a drive's files are; when every
                // `backup.json` was read.
                size: match newest_only {
                    true => BTreeMap::new(),
                    false => {
                        crate::external::bucket::damaged_objects(&listing.backups, &b.listing.sizes)
                    }
                },
            };
            let mut l = listing_facts(&listing, &damaged, !newest_only, Some(owner));
            if newest_only {
                // Another config's by their objects' names (not read), and by their sets' sources (read).
                l.foreign += b.listing.foreign_count(owner);
                l.verified = count.saturating_sub(l.foreign);
                // Passed over unread (found damaged) or as broken: not in the listing read.
                l.unsound = b.unsound.clone();
            }
            // Another config's unfinished uploads are its own to resume or remove.
            facts.unfinished = (b.listing.unfinished.iter())
                .filter(|u| !b.listing.foreign(&u.stamp, owner))
                .filter(|u| !b.listing.going.contains_key(&u.stamp))
                .count();
            facts.resumable =
                crate::external::resume::resumable(root, (&c.name, owner), &b.listing);
            facts.listing = Some(l);
        }
        Err(e) => facts.error = Some(e.to_string()),
    }
    facts.requests = crate::external::bucket::requests_of(&store);
    facts
}

/// Free and total bytes of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// One set's snapshots, as far as their metadata was read.
#[derive(Debug, Clone, Default)]
pub struct SetFacts {
    pub set: String,
    /// Snapshot directories of this set (with or without metadata).
    pub count: usize,
    /// The newest snapshot with usable metadata.
    pub newest: Option<SnapshotFacts>,
    /// The newest complete one (the same as `newest` when that is complete).
    pub newest_complete: Option<SnapshotFacts>,
    /// The newest complete snapshot whose contents were compared (`--full`, or a first snapshot).
    pub newest_compared: Option<Seen>,
    /// Snapshots newer than `newest` whose metadata could not be used, with why.
    pub unusable: Vec<(String, String)>,
    /// `.<set>.in-progress` exists.
    pub in_progress: bool,
    /// The newest snapshots with usable metadata, newest first, as many as the history asks for.
    pub recent: Vec<SnapshotFacts>,
}

/// What one snapshot's metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub name: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    pub complete: bool,
    pub full: bool,
    /// No `--link-dest`: everything was copied.
    pub first: bool,
    pub files: u64,
    pub total_bytes: u64,
    pub transferred_bytes: u64,
    pub linked_bytes: u64,
    pub unreadable: u64,
    pub warnings: u64,
    /// Sources that were missing when it was made (as configured).
    pub missing_sources: Vec<String>,
    /// Why it is incomplete, in words (empty when complete).
    pub incompleteness: String,
}

impl SnapshotFacts {
    pub fn seen(&self) -> Seen {
        Seen {
            name: self.name.clone(),
            time: self.started,
        }
    }
}

/// One destination: its presence (when it was looked at), its backups (when present) and the run log's memory of it.
#[derive(Debug, Clone)]
pub struct DestinationFacts {
    pub settings: DestinationSettings,
    /// `None` when the drive was not looked at (`schedule.external` is manual, for `backup`).
    pub presence: Option<Presence>,
    pub listing: Option<ListingFacts>,
    /// Why `backups/` could not be listed, when it could not.
    pub listing_error: Option<String>,
    /// The newest backup the run log says was written there (not one `restore --verify` found damaged: see
    /// `log_damaged`).
    pub from_log: Option<Seen>,
    /// The drive was not listed and the newest backup the run log names there is one `restore --verify` found
    /// damaged: its stamp and what was found. Then no newest is known.
    pub log_damaged: Option<(String, String)>,
    /// The newest backup the run log tells of there, written or not.
    pub attempt: Option<Attempt>,
}

/// What a present destination's `backups/` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingFacts {
    /// Verified backups of this config (and image-only ones, the drive's).
    pub verified: usize,
    /// Verified backups of another config that names the destination alike ([`Owner::foreign_sets`]): never this
    /// config's newest nor its restore points.
    pub foreign: usize,
    /// Stamp directories without usable `backup.json`.
    pub unusable: usize,
    pub leftovers: usize,
    pub latest: Option<String>,
    pub newest: Option<BackupFacts>,
    /// Every verified backup, oldest first (the newest is `newest`).
    pub backups: Vec<BackupFacts>,
    /// The newest backup of the sets when it is no restore point (newer than `newest`), and why.
    pub unsound: Option<crate::external::chain::Unsound>,
}

/// The newest verified backup on a destination, from its `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    pub stamp: String,
    pub started: DateTime<FixedOffset>,
    pub finished: DateTime<FixedOffset>,
    /// Archive and index bytes.
    pub bytes: u64,
    /// `set` and the snapshot it holds.
    pub sets: Vec<(String, String)>,
    /// How its archives are encrypted (the first set's record; a destination encrypts all its sets alike).
    pub encryption: Option<crate::archive::EncryptionRecord>,
    /// Every file it holds on the drive: archives, indexes and `system/`.
    pub drive_bytes: u64,
    /// Some set's archive is incremental.
    pub incremental: bool,
    /// The backup its incrementals are based on (the first set's `base`).
    pub base: Option<String>,
    /// Only `system/`, no set (`dbackup image create`).
    pub image_only: bool,
    /// Why it is no restore point: `restore --verify` found it damaged (`external::damage`), with when and what.
    pub damaged: Option<String>,
    /// Why it cannot be restored whole: a backup it depends on is missing, unverified, damaged or broken itself.
    pub broken: Option<String>,
}

impl BackupFacts {
    /// It can be restored: not found damaged, its chain whole.
    pub fn good(&self) -> bool {
        self.damaged.is_none() && self.broken.is_none()
    }
}

impl DestinationFacts {
    pub fn is_present(&self) -> bool {
        matches!(self.presence, Some(Presence::Present(_)))
    }

    /// The newest verified backup: from the drive when it was listed, else from the run log.
    pub fn newest(&self) -> Option<Seen> {
        newest_known(&self.listing, &self.from_log)
    }

    /// Why it could not be looked at, when it is there but its backups could not be listed (an I/O error, a
    /// `backups` that is no directory or leads elsewhere). A drive that is not plugged in is absent, not unseen.
    pub fn unseen(&self) -> Option<String> {
        match &self.presence {
            Some(Presence::Absent(
                a @ (media::Absence::Unreachable { .. }
                | media::Absence::BadMarker { .. }
                | media::Absence::Redirected { .. }),
            )) => Some(a.to_string()),
            _ => self.listing_error.clone(),
        }
    }

    /// Its newest backup is unknown: it could not be looked at, or it was not listed and the run log's newest there
    /// was found damaged (an older one may be good).
    pub fn newest_unknown(&self) -> bool {
        self.unseen().is_some() || self.log_damaged.is_some()
    }
}

/// The newest verified backup on a destination (a drive or a bucket): from its listing when it was listed, else
/// from the run log.
fn newest_known(listing: &Option<ListingFacts>, from_log: &Option<Seen>) -> Option<Seen> {
    match listing {
        Some(l) => l.newest.as_ref().map(|b| Seen {
            name: b.stamp.clone(),
            time: b.started,
        }),
        None => from_log.clone(),
    }
}

/// What the run log says of this config's runs (and of those an older version logged, which do not say whose they
/// are).
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// The newest run of `collect`, `external` or `backup`.
    pub last: Option<RunRecord>,
    /// Per destination, the newest backup written there.
    pub written: BTreeMap<String, Seen>,
    /// Per destination, the newest backup tried there, written or not.
    pub attempts: BTreeMap<String, Attempt>,
    /// Why the log could not be read, when it could not.
    pub error: Option<String>,
    /// For the history: runs of `collect`, `external` and `backup`, newest first, those that found nothing to do
    /// left out: the newest `RunWants::count`, then the failed ones back to `RunWants::until`.
    pub recent: Vec<RunRecord>,
}

/// A backup to a destination as a run record tells it: `written`, `failed` or `refused` (no room), when the run
/// finished, and its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub status: String,
    pub finished: DateTime<FixedOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    /// This attempt wrote no backup, and is newer than `newest` (the destination's newest known backup, if any).
    pub fn failed_after(&self, newest: Option<&Seen>) -> bool {
        self.status != "written" && newest.is_none_or(|n| n.time < self.finished)
    }
}

/// How far back [`read_runs_for`] reads for the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunWants {
    /// Runs wanted.
    pub count: usize,
    /// Runs finished after this are all wanted too (failures since the last good snapshot).
    pub until: Option<DateTime<FixedOffset>>,
}

/// The commands whose runs count as backup runs.
pub const BACKUP_COMMANDS: &[&str] = &["collect", "external", "backup"];

/// Gathers the facts, looking at the destinations as `look` says, with a history of `history` runs and snapshots
/// per set (the status page; 0 for none).
pub fn gather_for(settings: &Settings, look: Look, history: usize) -> Facts {
    gather_with(settings, look, history, CloudLook::Skip)
}

/// [`gather_for`], looking at the cloud destinations as `clouds` says.
pub fn gather_with(settings: &Settings, look: Look, history: usize, clouds: CloudLook) -> Facts {
    let root = &settings.backup_root;
    let root_exists = root.is_dir();
    let root_error = root_exists
        .then(|| fs::read_dir(root).err())
        .flatten()
        .map(|e| {
            format!(
                "cannot read the backup root {}: {}; its snapshots are unknown: give this user access to it or run \
                 as the user that owns it",
                root.display(),
                crate::stdx::fs::message(&e)
            )
        });
    let names: Vec<&str> = settings.sets.iter().map(|s| s.name.as_str()).collect();
    let own = crate::external::retention::OwnSet::of(&settings.sets);
    let mut sets = if root_exists {
        list_sets_with(root, &names, history)
    } else {
        names
            .iter()
            .map(|n| SetFacts {
                set: n.to_string(),
                ..Default::default()
            })
            .collect()
    };
    let layout = Layout::new(root);
    for s in &mut sets {
        s.in_progress = root_exists && layout.in_progress(&s.set).is_dir();
    }
    let dest_names = settings.destination_names();
    let wants = RunWants {
        count: history,
        // Failures since each set's newest complete snapshot: back to the oldest of those (or every run there is).
        until: if history == 0 {
            None
        } else {
            sets.iter()
                .map(|s| s.newest_complete.as_ref().map(|c| c.started))
                .collect::<Option<Vec<_>>>()
                .and_then(|t| t.into_iter().min())
        },
    };
    let runs = read_runs_for(&settings.state_dir, root, &dest_names, wants);
    // What `restore --verify` found damaged (the state directory's `damaged.json`).
    let damage = crate::external::damage::read(&settings.state_dir, root);
    let destinations = settings
        .destinations
        .iter()
        .map(|d| destination(d, (look, Owner::Sets(&own)), &runs, &damage))
        .collect();
    let clouds = settings
        .clouds
        .iter()
        .map(|c| cloud(c, (clouds, Owner::Sets(&own)), &runs, (root, &damage)))
        .collect();
    Facts {
        backup_root: root.clone(),
        root_exists,
        root_error,
        root_space: space(&nearest_existing(root)),
        running: if root_exists {
            lock_holder(&root.join(".lock"))
        } else {
            None
        },
        sets,
        destinations,
        clouds,
        runs,
        history,
        host: if history > 0 {
            media::hostname()
        } else {
            String::new()
        },
        unlisted_displaced: crate::restore::engine::displace::unlisted(root),
    }
}

/// One `readdir` of the root sorts the snapshot names by set; then each set's metadata is read newest first, only
/// until the newest, the newest complete and the newest compared snapshot are known.
pub fn list_sets(root: &Path, names: &[&str]) -> Vec<SetFacts> {
    list_sets_with(root, names, 0)
}

/// [`list_sets`], reading on until `history` snapshots of each set are known too (newest first, in `recent`).
pub fn list_sets_with(root: &Path, names: &[&str], history: usize) -> Vec<SetFacts> {
    let mut found: BTreeMap<&str, Vec<(chrono::NaiveDateTime, String)>> = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some((set, time)) = names
                .iter()
                .find_map(|s| snapshot::parse_snapshot_name(s, &name).map(|t| (*s, t)))
            else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.entry(set).or_default().push((time, name));
            }
        }
    }
    let layout = Layout::new(root);
    names
        .iter()
        .map(|set| {
            let mut snaps = found.remove(set).unwrap_or_default();
            // Oldest first, one dated in the future (a clock that was wrong) before the others: never the newest.
            let now = chrono::Local::now().naive_local();
            snaps.sort_by_key(|(time, name)| (snapshot::recency(*time, now), name.clone()));
            let mut facts = SetFacts {
                set: set.to_string(),
                count: snaps.len(),
                ..Default::default()
            };
            for (_, name) in snaps.iter().rev() {
                let meta = match snapshot::read_metadata(&layout.metadata(name)) {
                    Ok(m) if m.name == *name && m.set == *set => m,
                    Ok(m) => {
                        if facts.newest.is_none() {
                            facts.unusable.push((
                                name.clone(),
                                format!("its metadata describes {} of set {}", m.name, m.set),
                            ));
                        }
                        continue;
                    }
                    Err(e) => {
                        if facts.newest.is_none() {
                            facts.unusable.push((name.clone(), e.to_string()));
                        }
                        continue;
                    }
                };
                let s = SnapshotFacts {
                    name: name.clone(),
                    started: meta.started,
                    finished: meta.finished,
                    complete: meta.is_complete(),
                    full: meta.full,
                    first: meta.link_dest.is_empty(),
                    files: meta.stats.regular_files,
                    total_bytes: meta.stats.total_bytes,
                    transferred_bytes: meta.stats.transferred_bytes,
                    linked_bytes: meta.stats.linked_bytes,
                    unreadable: meta.unreadable.len() as u64,
                    warnings: meta.warnings.len() as u64,
                    missing_sources: meta
                        .missing_sources()
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    incompleteness: meta.incompleteness(),
                };
                if facts.newest.is_none() {
                    facts.newest = Some(s.clone());
                }
                if s.complete && facts.newest_complete.is_none() {
                    facts.newest_complete = Some(s.clone());
                }
                if facts.recent.len() < history {
                    facts.recent.push(s.clone());
                }
                if s.complete && (s.full || s.first) && facts.newest_compared.is_none() {
                    facts.newest_compared = Some(s.seen());
                }
                if facts.newest_compared.is_some() && facts.recent.len() >= history {
                    break;
                }
            }
            facts
        })
        .collect()
}

fn destination(
    d: &DestinationSettings,
    (look, owner): (Look, Owner),
    runs: &RunFacts,
    damage: &[crate::external::damage::Record],
) -> DestinationFacts {
    let presence = match look {
        Look::Skip => None,
        Look::Probe => Some(media::detect(d)),
        Look::Plan => Some(media::detect_for_plan(d)),
        Look::Read => Some(media::detect_for_reading(d)),
    };
    let (listing, listing_error) = match &presence {
        Some(Presence::Present(info)) => {
            let listed = layout::open_backups_at(&info.resolved).and_then(|b| match b {
                Some(b) => layout::list_in(&b),
                None => Ok(layout::DriveListing::default()),
            });
            match listed {
                Ok(l) => {
                    let damaged = Damaged {
                        verify: crate::external::damage::on_destination(damage, &d.name, &l),
                        // One lstat per file, as the external's own look at the drive.
                        size: layout::damaged_files(&info.resolved.join(layout::BACKUPS_DIR), &l),
                    };
                    (Some(listing_facts(&l, &damaged, true, Some(owner))), None)
                }
                Err(e) => (None, Some(e.to_string())),
            }
        }
        _ => (None, None),
    };
    let mut from_log = runs.written.get(&d.name).cloned();
    let log_damaged = log_damaged(&d.name, listing.is_some(), &mut from_log, damage);
    DestinationFacts {
        settings: d.clone(),
        presence,
        listing,
        listing_error,
        from_log,
        log_damaged,
        attempt: runs.attempts.get(&d.name).cloned(),
    }
}

/// A destination (a drive or a bucket) that was not `listed`, whose newest backup the run log names (`from_log`) is
/// one `restore --verify` found damaged: its stamp and what was found, and `from_log` is cleared (no newest is known:
/// an older one may be good).
fn log_damaged(
    destination: &str,
    listed: bool,
    from_log: &mut Option<Seen>,
    damage: &[crate::external::damage::Record],
) -> Option<(String, String)> {
    let seen = from_log.as_ref().filter(|_| !listed)?;
    let r = (damage.iter()).find(|r| r.destination == destination && r.backup == seen.name)?;
    *from_log = None;
    Some((r.backup.clone(), crate::external::damage::note_text(r)))
}

/// The backups of a drive or bucket known to be damaged, with why.
#[derive(Default)]
struct Damaged {
    /// Found so by `restore --verify`.
    verify: BTreeMap<String, String>,
    /// Their files (a bucket's objects) are missing or not the size `backup.json` records
    /// ([`layout::damaged_by`]).
    size: BTreeMap<String, String>,
}

/// What a listing holds; `damaged`: the backups known to be damaged; `chains`: judge whether each backup's chain
/// is whole (the listing holds every backup's `backup.json`); `owner`: whose backups are this config's (on a drive or
/// bucket two configs name alike, the other's are neither its newest nor its restore points; `None`: every one).
fn listing_facts(
    l: &layout::DriveListing,
    damaged: &Damaged,
    chains: bool,
    owner: Option<Owner>,
) -> ListingFacts {
    use crate::external::chain::broken;
    let broken = match chains {
        true => {
            let mut all = damaged.size.clone();
            all.extend(damaged.verify.clone());
            let mut found = broken(l, &damaged.verify, "restore --verify found damaged");
            for (stamp, why) in broken(l, &all, "is damaged (its files are not as recorded)") {
                found.entry(stamp).or_insert(why);
            }
            found
        }
        false => BTreeMap::new(),
    };
    let foreign = |b: &&layout::DriveBackup| {
        let sets = b.meta.as_ref().map_or(&[][..], |m| &m.sets[..]);
        owner.is_some_and(|o| o.foreign_records(sets))
    };
    let (foreign, backups): (Vec<&layout::DriveBackup>, Vec<&layout::DriveBackup>) =
        l.verified().partition(foreign);
    let backups = backups.into_iter().filter_map(backup_facts);
    let backups: Vec<BackupFacts> = backups
        .into_iter()
        .map(|mut b| {
            b.damaged = (damaged.verify.get(&b.stamp))
                .or_else(|| damaged.size.get(&b.stamp))
                .cloned();
            b.broken = broken.get(&b.stamp).cloned();
            b
        })
        .collect();
    // The newest good backup of the sets: one of partition images only (`dbackup image create`) does not count, nor
    // one found damaged or whose chain is broken (another config's are not among them).
    let newest = backups.iter().rfind(|b| !b.image_only && b.good()).cloned();
    let unsound = (backups.iter().rfind(|b| !b.image_only))
        .filter(|b| !b.good())
        .map(|b| crate::external::chain::Unsound {
            stamp: b.stamp.clone(),
            damaged: b.damaged.is_some(),
        });
    ListingFacts {
        verified: l.verified().count().saturating_sub(foreign.len()),
        foreign: foreign.len(),
        unusable: l.backups.iter().filter(|b| b.meta.is_none()).count(),
        leftovers: l.leftovers.len(),
        latest: l.latest.clone(),
        newest,
        backups,
        unsound,
    }
}

/// What `status` keeps of one verified backup's `backup.json`.
pub fn backup_facts(b: &layout::DriveBackup) -> Option<BackupFacts> {
    let m = b.meta.as_ref()?;
    Some(BackupFacts {
        stamp: b.name.clone(),
        started: m.started,
        finished: m.finished,
        bytes: m.file_bytes_on_drive(),
        sets: m
            .sets
            .iter()
            .map(|s| (s.set.clone(), s.snapshot.clone()))
            .collect(),
        encryption: m.sets.first().and_then(|s| s.encryption.clone()),
        drive_bytes: m.bytes_on_drive(),
        incremental: m.sets.iter().any(|s| !s.kind.is_full()),
        base: m
            .sets
            .iter()
            .find_map(|s| s.base.clone())
            .or_else(|| m.depends_on.last().cloned()),
        image_only: m.sets.is_empty() && m.system.is_some(),
        damaged: None,
        broken: None,
    })
}

/// Reads the run log newest first (`log.jsonl`, then the rotated `log.jsonl.1`), only until the last backup run and a
/// written backup of every destination are known.
/// About what the next backup on a destination needs: the size of its newest backup, else the size of the newest
/// complete snapshots (none when neither is known).
pub fn needed_on(facts: &Facts, d: &DestinationFacts) -> Option<u64> {
    let snapshots_bytes: u64 = facts
        .sets
        .iter()
        .filter_map(|s| s.newest_complete.as_ref())
        .map(|n| n.total_bytes)
        .fold(0u64, u64::saturating_add);
    d.listing
        .as_ref()
        .and_then(|l| l.newest.as_ref())
        .map(|b| b.bytes)
        .or((snapshots_bytes > 0).then_some(snapshots_bytes))
}

#[cfg(test)]
pub fn read_runs(state_dir: &Path, destinations: &[&str]) -> RunFacts {
    read_runs_for(
        state_dir,
        Path::new("/b"),
        destinations,
        RunWants::default(),
    )
}

/// A run that found nothing to do (a `backup` with nothing due and no drive missing): not shown in the history.
pub fn is_idle(record: &RunRecord) -> bool {
    let v = &record.sets;
    record.exit == 0
        && v.get("nothing_due").and_then(|n| n.as_bool()) == Some(true)
        && v.get("missing_media").is_none_or(|m| m.is_null())
}

/// `read_runs`, reading on for the history as `wants` says. Only the runs of the config whose backup root is
/// `backup_root` count (and those of older versions, which do not say whose they are): another config of this user
/// writes its runs into the same log, maybe for a destination or a set of the same name.
pub fn read_runs_for(
    state_dir: &Path,
    backup_root: &Path,
    destinations: &[&str],
    wants: RunWants,
) -> RunFacts {
    let mut facts = RunFacts::default();
    // The history is complete once it holds `count` runs and reaches back past `until`.
    let mut history_done = wants.count == 0;
    let mut counted = 0;
    let files = [
        runlog::path(state_dir),
        state_dir.join(format!("{}.1", runlog::FILE_NAME)),
    ];
    for file in files {
        let text = match runlog::read_text(&file) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                facts.error = Some(format!("cannot read the run log: {e}"));
                break;
            }
        };
        for line in text.lines().rev() {
            let done =
                facts.last.is_some() && destinations.iter().all(|d| facts.written.contains_key(*d));
            if done && history_done {
                return facts;
            }
            let backup_line = BACKUP_COMMANDS.iter().any(|c| line.contains(c));
            let wanted_last = facts.last.is_none() && backup_line;
            let wanted_written = line.contains("\"written\"")
                && !destinations.iter().all(|d| facts.written.contains_key(*d));
            let wanted_attempt = line.contains("\"destinations\"")
                && !destinations.iter().all(|d| facts.attempts.contains_key(*d));
            let wanted_history = !history_done && backup_line;
            if !(wanted_last || wanted_written || wanted_attempt || wanted_history) {
                continue;
            }
            let parsed = if wanted_last || wanted_written || wanted_attempt {
                serde_json::from_str::<RunRecord>(line).ok()
            } else {
                history_record(line)
            };
            let Some(record) = parsed.filter(|r| r.is_of(backup_root)) else {
                continue;
            };
            let backup_run = BACKUP_COMMANDS.contains(&record.command.as_str());
            if wanted_written {
                for (dest, seen) in written_backups(&record) {
                    facts.written.entry(dest).or_insert(seen);
                }
            }
            if wanted_attempt {
                for (dest, attempt) in attempts(&record) {
                    facts.attempts.entry(dest).or_insert(attempt);
                }
            }
            if !history_done && backup_run && !is_idle(&record) {
                let old_enough = wants.until.is_none_or(|u| record.finished < u);
                // The newest `count` for the strip; past them only failed runs (the failures since the last good
                // snapshot), each without the per-set value unless the history reads it.
                if counted < wants.count || matches!(record.exit, 1 | 2) {
                    facts.recent.push(for_history(&record));
                }
                counted += 1;
                history_done = counted >= wants.count && old_enough;
            }
            if facts.last.is_none() && backup_run {
                facts.last = Some(record);
            }
        }
    }
    facts
}

/// What the history keeps of a record: its per-set value only when it reads it (a failed run, a missing drive).
fn for_history(r: &RunRecord) -> RunRecord {
    let keep =
        matches!(r.exit, 1 | 2) || r.sets.get("missing_media").is_some_and(|m| m.is_string());
    RunRecord {
        command: r.command.clone(),
        started: r.started,
        finished: r.finished,
        exit: r.exit,
        error: r.error.clone(),
        pid: r.pid,
        dbackup_version: String::new(),
        sets: if keep {
            r.sets.clone()
        } else {
            serde_json::Value::Null
        },
        interrupted: r.interrupted.clone(),
        backup_root: r.backup_root.clone(),
    }
}

/// The head of a run record (what the history needs of most lines).
#[derive(Deserialize)]
struct RunHead {
    command: String,
    started: DateTime<FixedOffset>,
    finished: DateTime<FixedOffset>,
    exit: u8,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    interrupted: Option<String>,
    #[serde(default)]
    backup_root: Option<String>,
}

/// A run record for the history only: its per-set value is parsed only when the history needs it (a failed run's
/// sets, a missing drive, a run that found nothing to do); the rest of a long line is skipped, not built.
fn history_record(line: &str) -> Option<RunRecord> {
    let head: RunHead = serde_json::from_str(line).ok()?;
    let needs_sets = matches!(head.exit, 1 | 2)
        || line.contains("\"missing_media\":\"")
        || line.contains("\"nothing_due\":true");
    let sets = if needs_sets {
        serde_json::from_str::<RunRecord>(line).ok()?.sets
    } else {
        serde_json::Value::Null
    };
    Some(RunRecord {
        command: head.command,
        started: head.started,
        finished: head.finished,
        exit: head.exit,
        error: head.error,
        pid: 0,
        dbackup_version: String::new(),
        sets,
        interrupted: head.interrupted,
        backup_root: head.backup_root,
    })
}

/// The backups a run record says were written, by destination: `external` records hold the report's
/// `destinations`; `backup` records hold a list of external reports under `external`.
pub fn written_backups(record: &RunRecord) -> Vec<(String, Seen)> {
    let offset = *record.finished.offset();
    let mut out = Vec::new();
    for d in destination_reports(record) {
        let (Some(name), Some("written"), Some(stamp)) = (
            d.get("name").and_then(|v| v.as_str()),
            d.get("status").and_then(|v| v.as_str()),
            d.get("backup").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let Some(time) =
            snapshot::parse_stamp(stamp).and_then(|t| t.and_local_timezone(offset).single())
        else {
            continue;
        };
        out.push((
            name.to_string(),
            Seen {
                name: stamp.to_string(),
                time,
            },
        ));
    }
    out
}

/// The destination reports of a run record: an `external` record's `destinations`, and those of each external
/// report a `backup` record holds under `external`.
fn destination_reports(record: &RunRecord) -> Vec<&serde_json::Value> {
    let reports: Vec<&serde_json::Value> = match record.command.as_str() {
        "external" => vec![&record.sets],
        "backup" => record
            .sets
            .get("external")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![],
    };
    reports
        .into_iter()
        .filter_map(|r| r.get("destinations").and_then(|d| d.as_array()))
        .flatten()
        .collect()
}

/// The backups a run record says it tried, by destination, written or not.
fn attempts(record: &RunRecord) -> Vec<(String, Attempt)> {
    destination_reports(record)
        .into_iter()
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?;
            Some((
                name.to_string(),
                Attempt {
                    status: d.get("status")?.as_str()?.to_string(),
                    finished: record.finished,
                    error: d.get("error").and_then(|e| e.as_str()).map(String::from),
                },
            ))
        })
        .collect()
}

/// `path`, or its nearest existing parent.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return PathBuf::from("/"),
        }
    }
}

/// Free (available to this user) and total bytes of the filesystem holding `path`.
pub fn space(path: &Path) -> Option<Space> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(Space {
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// The pid holding an exclusive `flock` on `lock_file`, from `/proc/locks` (read only: taking the lock to test it could
/// make a starting run fail).
pub fn lock_holder(lock_file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(lock_file).ok()?;
    let text = fs::read_to_string("/proc/locks").ok()?;
    holder_in(&text, meta.dev(), meta.ino())
}

/// The writer of an `FLOCK` on (`dev`, `ino`) in `/proc/locks` text (`1: FLOCK  ADVISORY  WRITE 1234 fe:00:5464167 0 EOF`).
pub fn holder_in(text: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "->" marks a waiter, shifting the fields.
        if f.get(1) != Some(&"FLOCK") || f.get(3) != Some(&"WRITE") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let ma = u32::from_str_radix(id.next()?, 16).ok()?;
        let mi = u32::from_str_radix(id.next()?, 16).ok()?;
        let i: u64 = id.next()?.parse().ok()?;
        (ma == major && mi == minor && i == ino)
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// The schedule's view of the sets.
pub fn set_histories(facts: &Facts) -> Vec<SetHistory> {
    facts
        .sets
        .iter()
        .map(|s| SetHistory {
            set: s.set.clone(),
            newest: s.newest.as_ref().map(SnapshotFacts::seen),
            newest_complete: s.newest_complete.as_ref().map(SnapshotFacts::seen),
            newest_compared: s.newest_compared.clone(),
            unseen: facts.root_error.is_some(),
        })
        .collect()
}

/// The schedule's view of the destinations.
pub fn destination_histories(facts: &Facts) -> Vec<DestinationHistory> {
    facts
        .destinations
        .iter()
        .map(|d| DestinationHistory {
            name: d.settings.name.clone(),
            priority: d.settings.priority,
            present: d.is_present(),
            newest: d.newest(),
            schedule: d.settings.schedule,
            unseen: d.newest_unknown(),
        })
        .chain(facts.clouds.iter().map(|c| DestinationHistory {
            name: c.settings.name.clone(),
            priority: c.settings.priority,
            present: true,
            newest: c.newest(),
            schedule: c.settings.schedule,
            unseen: c.newest_unknown(),
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holders_come_from_proc_locks() {
        let dev = rustix::fs::makedev(0xfe, 0);
        let text = "1: FLOCK  ADVISORY  WRITE 27921 fe:00:5464167 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 111 fe:00:42 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 222 fe:00:43 0 EOF\n\
                    3: -> FLOCK  ADVISORY  WRITE 333 fe:00:44 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 444 fe:00:44 0 EOF\n";
        assert_eq!(holder_in(text, dev, 5464167), Some(27921));
        assert_eq!(holder_in(text, dev, 42), None, "a shared lock is not a run");
        assert_eq!(holder_in(text, dev, 43), None, "not an flock");
        assert_eq!(holder_in(text, dev, 44), Some(444), "waiters are skipped");
        assert_eq!(holder_in(text, rustix::fs::makedev(8, 1), 5464167), None);
    }

    fn record(command: &str, sets: serde_json::Value) -> RunRecord {
        let t = DateTime::parse_from_rfc3339("2025-04-10T03:20:00+02:00").unwrap();
        crate::runlog::tests::record_at(command, t, 0, sets)
    }

    #[test]
    fn written_backups_from_external_and_backup_records() {
        let dest = |name: &str, status: &str, backup: &str| serde_json::json!({ "name": name, "status": status, "backup": backup });
        let external = record(
            "external",
            serde_json::json!({ "sets": [], "destinations": [
                dest("T9", "written", "2025-04-10-031500"),
                dest("old", "failed", "2025-04-10-031500") ] }),
        );
        let backup = record(
            "backup",
            serde_json::json!({ "collect": [], "external": [
                { "destinations": [ dest("a", "written", "2025-04-09-031500") ] },
                { "destinations": [ dest("b", "written", "not-a-stamp") ] } ] }),
        );
        let got: Vec<(String, String, String)> =
            [external, backup, record("collect", serde_json::json!([]))]
                .iter()
                .flat_map(written_backups)
                .map(|(d, s)| (d, s.name, s.time.to_rfc3339()))
                .collect();
        assert_eq!(
            got,
            [
                (
                    "T9".into(),
                    "2025-04-10-031500".into(),
                    "2025-04-10T03:15:00+02:00".into()
                ),
                (
                    "a".into(),
                    "2025-04-09-031500".into(),
                    "2025-04-09T03:15:00+02:00".into()
                ),
            ]
        );
    }

    #[test]
    fn the_log_is_read_from_the_end_and_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let written = |d: &str, stamp: &str| {
            record(
                "external",
                serde_json::json!({ "destinations": [
                    { "name": d, "status": "written", "backup": stamp } ] }),
            )
        };
        // The rotated file: an older backup of T9, and the only one of old.
        let old_lines = [
            written("T9", "2025-03-01-031500"),
            written("old", "2025-03-02-031500"),
        ];
        let text: String = old_lines
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        fs::write(state.join("log.jsonl.1"), text).unwrap();
        runlog::append(state, &written("T9", "2025-04-01-031500")).unwrap();
        runlog::append(state, &record("collect", serde_json::json!([]))).unwrap();
        fs::write(
            runlog::path(state),
            fs::read_to_string(runlog::path(state)).unwrap() + "not json\n",
        )
        .unwrap();
        let facts = read_runs(state, &["T9", "old", "never"]);
        assert_eq!(facts.last.unwrap().command, "collect");
        assert_eq!(
            facts.written["T9"].name, "2025-04-01-031500",
            "the newest wins"
        );
        assert_eq!(facts.written["old"].name, "2025-03-02-031500");
        assert!(!facts.written.contains_key("never"));
        assert!(facts.error.is_none());
    }

    #[test]
    fn the_history_reads_on_past_idle_runs_and_keeps_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let mut failed = record(
            "collect",
            serde_json::json!([ { "set": "data", "status": "failed", "error": "boom" } ]),
        );
        failed.exit = 1;
        runlog::append(state, &failed).unwrap();
        runlog::append(
            state,
            &record(
                "collect",
                serde_json::json!([ { "set": "data", "status": "complete" } ]),
            ),
        )
        .unwrap();
        for _ in 0..3 {
            runlog::append(
                state,
                &record(
                    "backup",
                    serde_json::json!({ "nothing_due": true, "missing_media": null }),
                ),
            )
            .unwrap();
        }
        runlog::append(
            state,
            &record(
                "backup",
                serde_json::json!({ "nothing_due": true, "missing_media": "due" }),
            ),
        )
        .unwrap();
        let facts = read_runs_for(
            state,
            Path::new("/b"),
            &[],
            RunWants {
                count: 10,
                until: None,
            },
        );
        let got: Vec<(&str, u8)> = facts
            .recent
            .iter()
            .map(|r| (r.command.as_str(), r.exit))
            .collect();
        assert_eq!(
            got,
            [("backup", 0), ("collect", 0), ("collect", 1)],
            "idle runs left out"
        );
        assert_eq!(facts.recent[0].sets["missing_media"], "due");
        assert_eq!(
            facts.recent[2].sets[0]["error"], "boom",
            "a failed run keeps its sets"
        );
        assert_eq!(facts.last.unwrap().sets["missing_media"], "due");
        // Two wanted: the reading stops there.
        let facts = read_runs_for(
            state,
            Path::new("/b"),
            &[],
            RunWants {
                count: 2,
                until: None,
            },
        );
        assert_eq!(facts.recent.len(), 2);
    }

    /// Which backups of a listing are broken, and why: a dependency missing or unverified, damaged, or broken
    /// itself (a chain followed through a hand-made `depends_on` too); the newest backup is the newest good one.
    #[test]
    fn broken_chains_and_the_newest_good_backup() {
        let backup = |stamp: &str, deps: &[&str], verified: bool| {
            let mut m = crate::external::layout::tests::meta(stamp, &["data"]);
            m.depends_on = deps.iter().map(|d| d.to_string()).collect();
            layout::DriveBackup {
                name: stamp.into(),
                time: snapshot::parse_stamp(stamp).unwrap(),
                path: format!("/media/T9/backups/{stamp}").into(),
                meta: verified.then_some(m),
                meta_error: None,
            }
        };
        let (a, b, c) = (
            "2025-03-01-031500",
            "2025-03-02-031500",
            "2025-03-03-031500",
        );
        let (u, e, f, g) = (
            "2025-03-04-031500",
            "2025-03-05-031500",
            "2025-03-06-031500",
            "2025-03-07-031500",
        );
        let listing = layout::DriveListing {
            exists: true,
            backups: vec![
                backup(a, &[], true),
                backup(b, &[a], true),
                backup(c, &[a, b], true),
                backup(u, &[], false),
                backup(e, &[u], true),
                backup(f, &["2025-02-01-031500"], true),
                backup(g, &[f], true),
            ],
            ..Default::default()
        };
        let why = |damaged: &[&str]| {
            let damaged: BTreeMap<String, String> = damaged
                .iter()
                .map(|d| (d.to_string(), "found".to_string()))
                .collect();
            crate::external::chain::broken(&listing, &damaged, "restore --verify found damaged")
        };
        let whole = why(&[]);
        assert_eq!(
            whole.keys().map(String::as_str).collect::<Vec<_>>(),
            [e, f, g]
        );
        assert_eq!(
            whole[e],
            format!("it depends on {u}, which is missing or unverified")
        );
        assert_eq!(
            whole[g],
            format!("it depends on {f}, whose own chain is broken")
        );
        let with_b = why(&[b]);
        assert_eq!(
            with_b[c],
            format!("it depends on {b}, which restore --verify found damaged")
        );
        assert!(!with_b.contains_key(b) && !with_b.contains_key(a));

        let damaged = Damaged {
            verify: BTreeMap::from([(c.to_string(), "found".to_string())]),
            ..Damaged::default()
        };
        let facts = listing_facts(&listing, &damaged, true, None);
        assert_eq!(facts.newest.as_ref().map(|n| n.stamp.as_str()), Some(b));
        assert_eq!(facts.backups.len(), 6, "the unverified one is not listed");
        assert!(facts.backups.iter().filter(|x| x.good()).count() == 2);
        // The newest backup, g, is no restore point: what `backup` says when it writes there again.
        let unsound = |stamp: &str, damaged| crate::external::chain::Unsound {
            stamp: stamp.into(),
            damaged,
        };
        assert_eq!(facts.unsound, Some(unsound(g, false)));
        let only_c = layout::DriveListing {
            backups: listing.backups[..3].to_vec(),
            ..listing.clone()
        };
        let facts = listing_facts(&only_c, &damaged, true, None);
        assert_eq!(facts.unsound, Some(unsound(c, true)));
        assert_eq!(facts.newest.as_ref().map(|n| n.stamp.as_str()), Some(b));
        let facts = listing_facts(&only_c, &Damaged::default(), true, None);
        assert_eq!(facts.unsound, None);
        // Without judging chains (a bucket), only what --verify found counts.
        let facts = listing_facts(&listing, &Damaged::default(), false, None);
        assert_eq!(facts.newest.as_ref().map(|n| n.stamp.as_str()), Some(g));
    }

    #[test]
    fn a_held_lock_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(&dir.path().join(".lock")), None);
        let lock = crate::lock::RunLock::acquire(dir.path()).unwrap();
        assert_eq!(lock_holder(lock.path()), Some(std::process::id()));
        drop(lock);
        assert_eq!(lock_holder(&dir.path().join(".lock")), None);
    }
}
