//! The external plan: pure and serialisable, made for the run's [`Options`]. Built from what [`super::observe`] saw
//! (snapshots, their scans, the destinations and what their `backups/` holds); `--dry-run` prints it (`--json`: as
//! JSON), [`super::exec`] carries it out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::layout::{self, DriveListing, LatestKind, Leftover};
use super::retention::{self as drive_retention, BackupInfo, Room};
use super::sets::{ArchiveTarget, SetAction, SetPlan};
use crate::archive::{ArchiveEstimate, EncryptionRecord};
use crate::config::{ExternalMode, RetentionPolicy};
use crate::exit::Exit;
use crate::media::{Detected, MediaInfo};
use crate::retention::Decision;
use crate::settings::DestinationSettings;
use crate::snapshot::SnapshotState;
use crate::stdx;

/// What an external run is asked to do (from `dbackup external`'s arguments, or from `dbackup backup`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The sets to export, by name; empty: every set.
    pub sets: Vec<String>,
    /// Write only to this destination (by name), whatever `external.mode` says.
    pub destination: Option<String>,
    /// Export a set's newest snapshot even when it is incomplete.
    pub allow_incomplete: bool,
    /// Write full archives, whatever `external.incremental` allows.
    pub full: bool,
    /// Decide full or incremental (and whether contents are compared) as if it were this time: the hidden `--now`,
    /// for tests. Stamps and everything else keep the real time.
    pub now: Option<NaiveDateTime>,
}

/// What one `dbackup external` will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalPlan {
    pub backup_root: PathBuf,
    pub host: String,
    pub mode: ExternalMode,
    /// `--destination NAME`: only this destination is considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_destination: Option<String>,
    /// `--allow-incomplete`: a newer incomplete snapshot may be exported instead of the newest complete one.
    pub allow_incomplete: bool,
    /// The name of the new backup on every destination (local time, `YYYY-MM-DD-HHMMSS`).
    pub stamp: String,
    /// The same time, RFC 3339 with the local offset.
    pub time: chrono::DateTime<chrono::FixedOffset>,
    pub sets: Vec<SetPlan>,
    /// The destinations written to (or refused), in the order they are written.
    pub destinations: Vec<DestinationPlan>,
    /// Configured destinations that are not written to, and why (absent, or not chosen in `first` mode).
    pub unused: Vec<UnusedDestination>,
    /// The `system/` folder as the first destination gets it: the recovery kit and partition images (`image` in the
    /// config). Each destination's own, which its drive and encryption decide, is its [`DestinationPlan::system`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::image::SystemPlan>,
    /// The cloud destinations uploaded to (or refused), after the drives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clouds: Vec<super::cloud::CloudPlan>,
    /// When archives are incremental and when full, each limit with why it is there (`external.incremental`,
    /// `schedule.full`), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<String>,
    /// Local plaintext index copies of destinations no longer in the config (`<backup_root>/.index-copies/<name>`):
    /// removed after the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_copies_orphaned: Vec<String>,
    /// Upload journals of cloud destinations no longer in the config (`<backup_root>/.upload-journals/<name>`,
    /// `external::resume`): removed after the run, as no upload there can be resumed again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upload_journals_orphaned: Vec<String>,
    /// How long the looking took (a dry run's): the change detection alone, and everything before the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// Wall-clock seconds of a run's looking, measured by the run itself (`--dry-run --json`'s `timings`, `-v`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Everything before the plan: snapshots, drive detection, listings, the change detection and the scans.
    pub observe_seconds: f64,
    /// The change detection alone, summed over the sets and drives where an incremental is likely: the base's
    /// index checked against `backup.json`, then one walk of the snapshot (stats, no reads) beside its manifest.
    pub detection_seconds: f64,
    /// The entries that change detection walked.
    pub detection_entries: u64,
    /// Scans of snapshots no incremental was considered for (stats only: the full archive's size).
    pub scan_seconds: f64,
}

/// A configured destination that this run does not write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedDestination {
    pub name: String,
    pub path: PathBuf,
    pub present: bool,
    /// `not_mounted`, `other_drive`, ... or `not_chosen` (present, but `first` mode chose another).
    pub kind: String,
    pub reason: String,
}

impl UnusedDestination {
    /// A drive that is there but refused because it would redirect dbackup's reads and writes elsewhere (a
    /// `backups` symlink or mount point): a failure of the run, unlike a drive that is simply not plugged in.
    pub fn refused(&self) -> bool {
        self.kind == "redirected"
    }
}

/// Everything that happens on one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationPlan {
    pub name: String,
    pub path: PathBuf,
    pub fs_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    pub action: DestinationAction,
    /// Why nothing is written (not enough space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The drive has no marker yet: one naming this destination is written first.
    pub write_marker: bool,
    pub backups_dir: PathBuf,
    /// Where the backup is written, then renamed to `final_dir` once verified.
    pub temp_dir: PathBuf,
    pub final_dir: PathBuf,
    /// Leftovers of interrupted runs, removed before writing.
    pub cleanup: Vec<Leftover>,
    pub archives: Vec<ArchiveTarget>,
    /// Bytes the new backup needs (rounded up to the filesystem's blocks, plus [`layout::SPACE_MARGIN`]).
    pub needed_bytes: u64,
    /// Of `needed_bytes`, what the `system/` folder may take: the kit and the partition images, each image counted
    /// at partclone's used bytes as if zstd could not compress them (an upper bound: the compressed size is known
    /// only once written).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub system_bytes: u64,
    /// What this destination's backup gets in `system/`: its own drive and encryption decide which devices are imaged
    /// and which refused (one holding a secret file only encrypted); none when nothing goes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::image::SystemPlan>,
    pub free_bytes: u64,
    /// Bytes the removed leftovers free.
    pub reclaimable_bytes: u64,
    /// Space-aware rotation: the oldest restore points removed before writing because the new backup does not fit
    /// otherwise (empty when it fits, or when even that would not make room: then the destination is refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_for_space: Vec<Decision>,
    /// The bytes `remove_for_space` frees.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub freed_for_space_bytes: u64,
    /// For FUSE filesystems: the block device's cache is dropped before reading back, so the drive answers.
    pub drop_device_cache: bool,
    pub latest: LatestPlan,
    /// Which backups this destination keeps (a count N is `{"last": N}`).
    pub retention: RetentionPolicy,
    /// Space-aware rotation never leaves fewer verified restore points.
    pub keep_at_least: u32,
    /// Retention after this run, assuming the new backup verifies: every backup on the drive, newest first.
    pub decisions: Vec<Decision>,
    /// Things worth knowing that change nothing (unrelated entries in `backups/`, directories without metadata).
    pub notes: Vec<String>,
    /// Whom the archives are encrypted to (public recipients, or a passphrase); none when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
    /// With a passphrase: the file it is read from (`$DBACKUP_PASSPHRASE_FILE` or `passphrase_file`); none: it is
    /// asked on the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// Encrypted, with incrementals on: where the local plaintext copies of the new backup's indexes go (owner-only,
    /// under the backup root), the next incremental's base manifest (`external::index_copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_copy_dir: Option<PathBuf>,
    /// Local copies of this destination's indexes (`<stamp>/<set>`) that can no longer be a base once the new backup
    /// is in place and retention has run: removed then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_copies_removed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationAction {
    Write,
    /// Nothing is written at all (not even the marker); the run fails.
    Refuse,
}

/// What `latest` will be after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestPlan {
    pub kind: LatestKind,
    pub path: PathBuf,
    /// The stamp it will name.
    pub target: String,
    /// What it names now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl ExternalPlan {
    /// The sets that are exported.
    pub fn exported(&self) -> impl Iterator<Item = &SetPlan> {
        self.sets.iter().filter(|s| s.action == SetAction::Export)
    }

    /// The exit the sets and the unused destinations alone call for: 1 when a drive tried to redirect dbackup
    /// (even when another destination was written), 3 when a set has warnings, else 0.
    pub fn sets_exit(&self) -> Exit {
        if self.unused.iter().any(UnusedDestination::refused) {
            Exit::Failed
        } else if self.sets.iter().any(|s| !s.warnings.is_empty()) {
            Exit::Warnings
        } else {
            Exit::Ok
        }
    }

    /// What a run of this plan would exit with at best: 1 when a destination is refused (for space, or because its
    /// drive would redirect the writes) or no set can be exported,
    /// 3 with warnings (old backups removed for space among them), else 0.
    pub fn expected_exit(&self) -> Exit {
        if self.exported().next().is_none() {
            return Exit::Failed;
        }
        let sets = self.sets_exit();
        let clouds = if self.clouds.iter().any(|c| c.refusal.is_some()) {
            Exit::Failed
        } else {
            Exit::Ok
        };
        self.destinations.iter().fold(sets.worst(clouds), |acc, d| {
            acc.worst(match d.action {
                DestinationAction::Refuse => Exit::Failed,
                // Removing verified backups for space is a warning: the drive is too small for the retention.
                DestinationAction::Write if !d.remove_for_space.is_empty() => Exit::Warnings,
                DestinationAction::Write => Exit::Ok,
            })
        })
    }
}

/// A snapshot as the choice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub name: String,
    pub time: NaiveDateTime,
    pub state: SnapshotState,
    /// Files that could not be read (incomplete snapshots).
    pub unreadable: u64,
    /// Sources that were missing when it was made (incomplete snapshots).
    pub missing_sources: Vec<String>,
}

/// The snapshot chosen for a set, with the warnings the choice brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChoice {
    pub snapshot: Option<String>,
    pub complete: bool,
    pub warnings: Vec<String>,
}

/// Chooses the snapshot of a set to export: the newest complete one (by [`crate::snapshot::recency`] at `now`: one
/// dated in the future is not the newest); with `allow_incomplete`, a newer incomplete one instead. Snapshots without
/// metadata are never used. `snapshots` may be in any order. The warnings do not name the set (the caller shows them
/// under or after its name).
pub fn choose_snapshot(
    snapshots: &[SnapshotSummary],
    allow_incomplete: bool,
    now: NaiveDateTime,
) -> SnapshotChoice {
    let key = |s: &SnapshotSummary| (crate::snapshot::recency(s.time, now), s.name.clone());
    let newest = |state: SnapshotState| {
        snapshots
            .iter()
            .filter(|s| s.state == state)
            .max_by_key(|s| key(s))
    };
    let complete = newest(SnapshotState::Complete);
    let incomplete =
        newest(SnapshotState::Incomplete).filter(|i| complete.is_none_or(|c| key(i) > key(c)));
    let unreadable = |s: &SnapshotSummary| {
        let files = format!(
            "{} could not be read",
            stdx::counted(s.unreadable, "file", "files")
        );
        match s.missing_sources.as_slice() {
            [] => files,
            [one] if s.unreadable == 0 => format!("source {one} was missing"),
            many if s.unreadable == 0 => format!("sources {} were missing", many.join(", ")),
            many => format!("{} missing, {files}", many.join(", ")),
        }
    };
    match (complete, incomplete) {
        (_, Some(i)) if allow_incomplete => SnapshotChoice {
            snapshot: Some(i.name.clone()),
            complete: false,
            warnings: vec![format!(
                "exporting the incomplete snapshot {} ({} when it was made), as --allow-incomplete asks",
                i.name,
                unreadable(i)
            )],
        },
        (Some(c), Some(i)) => SnapshotChoice {
            snapshot: Some(c.name.clone()),
            complete: true,
            warnings: vec![format!(
                "the newest snapshot {} is incomplete ({}); exporting the older complete {} instead; fix that \
                 and collect again, or use --allow-incomplete to export {}",
                i.name,
                unreadable(i),
                c.name,
                i.name
            )],
        },
        (Some(c), None) => SnapshotChoice {
            snapshot: Some(c.name.clone()),
            complete: true,
            warnings: vec![],
        },
        (None, Some(i)) => SnapshotChoice {
            snapshot: None,
            complete: false,
            warnings: vec![format!(
                "skipped: it has no complete snapshot; the newest, {}, is incomplete ({}); fix that and \
                 collect again, or use --allow-incomplete to export it",
                i.name,
                unreadable(i)
            )],
        },
        (None, None) => SnapshotChoice {
            snapshot: None,
            complete: false,
            warnings: vec![format!(
                "skipped: it has no complete snapshot yet; run `dbackup collect` first"
            )],
        },
    }
}

/// What observation found, for the plan.
#[derive(Debug, Clone)]
pub struct World {
    pub backup_root: PathBuf,
    /// The config's set names: the local index copies and upload journals of other sets are another config's that
    /// shares the backup root, never judged nor removed by this run.
    pub own_sets: Vec<drive_retention::OwnSet>,
    /// The directories of local index copies whose destination is not in the config (`external::index_copy`).
    pub index_copies_orphaned: Vec<String>,
    /// The directories of upload journals whose destination is not in the config (`external::resume`).
    pub upload_journals_orphaned: Vec<String>,
    pub host: String,
    pub mode: ExternalMode,
    pub only_destination: Option<String>,
    pub allow_incomplete: bool,
    pub sets: Vec<SetWorld>,
    /// Every destination considered, with what detection found.
    pub detected: Vec<Detected>,
    /// The destinations selected for writing, in selection order.
    pub destinations: Vec<DestinationWorld>,
    /// The cloud destinations selected, looked at.
    pub clouds: Vec<super::cloud::CloudWorld>,
    /// Cloud destinations configured but not chosen (`first` mode chose another).
    pub clouds_not_chosen: Vec<(String, String)>,
    /// When archives are incremental (`external.incremental`), `--full`, and how long content comparisons may be
    /// apart (`schedule.full`).
    pub incremental: crate::config::IncrementalPolicy,
    pub force_full: bool,
    pub content_every: Option<chrono::Duration>,
    /// `schedule.full`, which `content_every` comes from (for the dry run's words).
    pub schedule_full: crate::config::Full,
    /// The time full-or-incremental is decided at (the hidden `--now`); `None`: the run's stamp.
    pub choose_at: Option<NaiveDateTime>,
    /// The recovery kit and the devices to image (`image` in the config), with partclone's count of their used
    /// bytes: each backup's `system/` folder, counted in the space check.
    pub system: Option<crate::image::SystemInput>,
}

impl World {
    /// The selected drive named `name`, as observed.
    pub fn drive(&self, name: &str) -> Option<&DestinationWorld> {
        self.destinations.iter().find(|w| w.settings.name == name)
    }

    /// The selected cloud destination named `name`, as observed.
    pub fn cloud(&self, name: &str) -> Option<&super::cloud::CloudWorld> {
        self.clouds.iter().find(|w| w.settings.name == name)
    }
}

/// One set: its snapshots, and the scan of the one that will be exported.
#[derive(Debug, Clone)]
pub struct SetWorld {
    pub name: String,
    pub snapshots: Vec<SnapshotSummary>,
    pub estimate: Option<ArchiveEstimate>,
    /// The secret files the config names that the chosen snapshot holds.
    pub secrets: Vec<super::sets::LeftOut>,
}

/// A selected destination: its settings, what detection found, and what its `backups/` holds.
#[derive(Debug, Clone)]
pub struct DestinationWorld {
    pub settings: DestinationSettings,
    pub info: MediaInfo,
    /// The filesystem's allocation unit (files are rounded up to it).
    pub block_size: u64,
    pub listing: DriveListing,
    /// The destination's encryption, recipients files read.
    pub encryption: Option<EncryptionRecord>,
    /// With a passphrase: the file it will be read from (none: asked on the terminal).
    pub passphrase_file: Option<PathBuf>,
    /// Backups whose archive or index files are missing or not their recorded size, with why (a chain through
    /// them is not extended).
    pub damaged: std::collections::BTreeMap<String, String>,
    /// The same backups and those `restore --verify` found damaged (`external::damage`), each with the short why
    /// rotation gives: no restore point ([`BackupInfo::judged`]).
    pub found_damaged: std::collections::BTreeMap<String, String>,
    /// By set: what an incremental on the likely base would store (the change detection, run while observing).
    pub incremental: std::collections::BTreeMap<String, ArchiveEstimate>,
    /// The local plaintext copies of this destination's encrypted indexes (`<stamp>/<set>`, and leftovers).
    pub index_copies: Vec<String>,
    /// By encrypted set with a chain here: whether the copy of its base's index is here and trusted, else why not.
    pub base_copies: std::collections::BTreeMap<String, Result<(), String>>,
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The new backup's time (seconds precision), also retention's `now`.
    pub now: NaiveDateTime,
    /// The pid in the temporary directory's name.
    pub pid: u32,
}

/// Plans the run. Pure: everything it needs is in `world`.
pub fn plan(world: &World, opts: RunOptions) -> ExternalPlan {
    let stamp = crate::snapshot::stamp(opts.now);
    let sets: Vec<SetPlan> = world
        .sets
        .iter()
        .map(|s| {
            let choice = choose_snapshot(&s.snapshots, world.allow_incomplete, opts.now);
            let action = match (&choice.snapshot, &s.estimate) {
                (Some(_), Some(_)) => SetAction::Export,
                _ => SetAction::Skip,
            };
            SetPlan {
                set: s.name.clone(),
                action,
                snapshot_path: choice.snapshot.as_ref().map(|n| world.backup_root.join(n)),
                snapshot: choice.snapshot,
                complete: choice.complete,
                estimate: s.estimate.clone().filter(|_| action == SetAction::Export),
                warnings: choice.warnings,
                secrets: s.secrets.clone(),
            }
        })
        .collect();

    let chosen: Vec<&str> = world
        .destinations
        .iter()
        .map(|d| d.settings.name.as_str())
        .chain(world.clouds.iter().map(|c| c.settings.name.as_str()))
        .collect();
    let mut unused: Vec<UnusedDestination> = world
        .detected
        .iter()
        .filter(|d| !chosen.contains(&d.destination.name.as_str()))
        .map(|d| match d.absence() {
            Some(why) => UnusedDestination {
                name: d.destination.name.clone(),
                path: d.destination.path.clone(),
                present: false,
                kind: why.kind().to_string(),
                reason: why.to_string(),
            },
            None => UnusedDestination {
                name: d.destination.name.clone(),
                path: d.destination.path.clone(),
                present: true,
                kind: "not_chosen".into(),
                reason: format!(
                    "present, but external.mode is \"first\" and {} comes first (by priority)",
                    chosen.first().copied().unwrap_or("another destination")
                ),
            },
        })
        .collect();
    unused.extend(
        world
            .clouds_not_chosen
            .iter()
            .map(|(name, place)| UnusedDestination {
                name: name.clone(),
                path: place.into(),
                present: true,
                kind: "not_chosen".into(),
                reason: format!(
                    "external.mode is \"first\" and {} comes first (by priority)",
                    chosen.first().copied().unwrap_or("another destination")
                ),
            }),
    );

    let destinations = world
        .destinations
        .iter()
        .map(|d| destination_plan(world, d, world.system.as_ref(), &sets, &stamp, opts))
        .collect();
    let utc_now = crate::json::localize(opts.now).with_timezone(&chrono::Utc);
    let clouds = world
        .clouds
        .iter()
        .map(|c| {
            let mut p = super::cloud::plan(c, &sets, &stamp, utc_now, &cloud_chains(world, opts));
            super::cloud::plan_retention(&mut p, c, opts.now, utc_now);
            super::cloud::plan_index_copies(&mut p, c);
            p
        })
        .collect();

    ExternalPlan {
        backup_root: world.backup_root.clone(),
        index_copies_orphaned: world.index_copies_orphaned.clone(),
        timings: None,
        upload_journals_orphaned: world.upload_journals_orphaned.clone(),
        host: world.host.clone(),
        mode: world.mode,
        only_destination: world.only_destination.clone(),
        allow_incomplete: world.allow_incomplete,
        stamp,
        time: crate::json::localize(opts.now),
        sets,
        destinations,
        unused,
        system: None,
        clouds,
        chains: if world.destinations.is_empty() && world.clouds.is_empty() {
            Vec::new()
        } else {
            super::chain::explain(world.incremental, world.schedule_full)
        },
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn round_up(n: u64, block: u64) -> u64 {
    n.div_ceil(block.max(1)) * block.max(1)
}

/// The part size for a file of `bytes` on a filesystem whose largest file is `max`: `None` when it fits whole.
fn part_size(bytes: u64, max: Option<u64>) -> Option<u64> {
    let max = max?;
    if bytes <= max {
        return None;
    }
    // Whole MiB parts (FAT32: 4 GiB - 1 MiB), never zero.
    let mib = 1 << 20;
    Some(if max >= mib {
        max / mib * mib
    } else {
        max.max(1)
    })
}

fn destination_plan(
    world: &World,
    d: &DestinationWorld,
    system: Option<&crate::image::SystemInput>,
    sets: &[SetPlan],
    stamp: &str,
    opts: RunOptions,
) -> DestinationPlan {
    let info = &d.info;
    // Everything is done through the resolved path (the configured one may be a symlink to the mount point).
    let backups_dir = info.resolved.join(layout::BACKUPS_DIR);
    let (archives, needed) = archive_targets(d, sets, world, opts);
    let (system_bytes, system) = system_bytes(d, system);
    let images = system.as_ref().is_some_and(|s| !s.images.is_empty());
    let needed = needed.saturating_add(system_bytes);
    let cleanup: Vec<Leftover> = d
        .listing
        .leftovers
        .iter()
        .filter(|l| !l.in_use)
        .cloned()
        .collect();
    let reclaimable = layout::leftover_bytes(&cleanup);
    let available = info.free_bytes.saturating_add(reclaimable);
    let owner = drive_retention::Owner::Sets(&world.own_sets);
    let infos = drive_infos(&d.listing, &d.found_damaged);
    let room = drive_retention::make_room_own(
        &infos,
        owner,
        (needed, available),
        d.settings.keep_at_least,
        opts.now,
    );
    let refusal = (!room.fits).then(|| {
        space_refusal(
            (d, &infos, owner),
            needed,
            images.then_some(system_bytes),
            reclaimable,
            &room,
            &backups_dir,
        )
    });

    let decisions = retention_after((d, &infos, owner), &archives, &room, (stamp, opts));
    let notes = drive_notes(d, &backups_dir);
    let index_copy_dir = (d.encryption.is_some() && world.incremental.enabled).then(|| {
        world
            .backup_root
            .join(super::index_copy::DIR)
            .join(&d.settings.name)
            .join(stamp)
    });
    // The copies left after this run: those of backups retention keeps, not superseded by this run's.
    let index_copies_removed = {
        let mut after = d.listing.clone();
        after.backups.retain(|b| {
            decisions.iter().any(|x| x.keep && x.name == b.name)
                && !room.removed.iter().any(|x| x.name == b.name)
        });
        let written: Vec<String> = archives
            .iter()
            .filter(|_| index_copy_dir.is_some())
            .map(|a| a.set.clone())
            .collect();
        super::index_copy::stale(&d.index_copies, &after, &written)
    };
    let fuse = info.mount_fs_type.starts_with("fuse");

    DestinationPlan {
        name: d.settings.name.clone(),
        path: info.path.clone(),
        fs_type: info.fs_type.clone(),
        label: info.label.clone(),
        uuid: info.uuid.clone(),
        device: info.device.clone(),
        action: if refusal.is_some() {
            DestinationAction::Refuse
        } else {
            DestinationAction::Write
        },
        refusal,
        write_marker: info.marker.is_none(),
        temp_dir: backups_dir.join(layout::temp_name(stamp, opts.pid)),
        final_dir: backups_dir.join(stamp),
        cleanup,
        archives,
        needed_bytes: needed,
        system_bytes,
        system,
        free_bytes: info.free_bytes,
        reclaimable_bytes: reclaimable,
        freed_for_space_bytes: room.freed_bytes,
        remove_for_space: room.removed,
        drop_device_cache: fuse && info.device.is_some(),
        latest: LatestPlan {
            kind: if info.symlinks {
                LatestKind::Symlink
            } else {
                LatestKind::File
            },
            path: backups_dir.join(if info.symlinks {
                layout::LATEST_LINK
            } else {
                layout::LATEST_FILE
            }),
            target: stamp.to_string(),
            previous: d.listing.latest.clone(),
        },
        retention: d.settings.retention,
        keep_at_least: d.settings.keep_at_least,
        decisions,
        notes,
        backups_dir,
        encryption: d.encryption.clone(),
        passphrase_file: d
            .encryption
            .as_ref()
            .filter(|e| e.passphrase)
            .and(d.passphrase_file.clone()),
        index_copy_dir,
        index_copies_removed,
    }
}

/// What decides full or incremental on a bucket: the run's policy, as for drives.
fn cloud_chains(world: &World, opts: RunOptions) -> super::cloud::ChainPolicy {
    super::cloud::ChainPolicy {
        policy: world.incremental,
        force_full: world.force_full,
        content_every: world.content_every,
        now: opts.now,
    }
}

/// The archives this run writes to the drive (sized as they will be, encrypted or not, split where the filesystem
/// needs it), and the space they need with the backup's directory, `backup.json` and sums file.
fn archive_targets(
    d: &DestinationWorld,
    sets: &[SetPlan],
    world: &World,
    opts: RunOptions,
) -> (Vec<ArchiveTarget>, u64) {
    let info = &d.info;
    let block = d.block_size.max(512);
    let mut needed = layout::SPACE_MARGIN + 2 * block; // the directory, backup.json and the sums file
    let enc = d.encryption.as_ref();
    let sized = |plain: u64| match enc {
        Some(e) => crate::archive::crypt::encrypted_len(plain, e.recipients.len()),
        None => plain,
    };
    let archives: Vec<ArchiveTarget> = sets
        .iter()
        .filter(|s| s.action == SetAction::Export)
        .filter_map(|s| {
            let mut choice = super::chain::choose_on(
                super::chain::ChoiceInputs {
                    policy: world.incremental,
                    force_full: world.force_full,
                    encryption: enc,
                    content_every: world.content_every,
                    now: world.choose_at.unwrap_or(opts.now),
                    base_copy: d
                        .base_copies
                        .get(&s.set)
                        .map(|r| r.as_ref().map(|_| ()).map_err(String::as_str)),
                },
                (&d.listing, &d.damaged),
                (&s.set, drive_retention::Owner::Sets(&world.own_sets)),
            );
            // An incremental is sized by its change detection (when it ran, and not for a content comparison,
            // which may store more); otherwise as a full: an upper bound.
            let incremental = d
                .incremental
                .get(&s.set)
                .filter(|_| choice.base.is_some() && !choice.compare_content);
            if let Some(e) = incremental {
                choice.reason.push_str(&format!(
                    ": {} to store ({}), {} kept in earlier backups",
                    stdx::counted(e.files, "file", "files"),
                    stdx::bytes(e.file_bytes),
                    e.referenced_files
                ));
            }
            let est = incremental.or(s.estimate.as_ref())?;
            let est = &ArchiveEstimate {
                tar_bytes: sized(est.tar_bytes),
                index_bytes: sized(est.index_bytes),
                ..est.clone()
            };
            let part_bytes = part_size(est.tar_bytes, info.max_file_size);
            let index_part_bytes = part_size(est.index_bytes, info.max_file_size);
            let files = |bytes: u64, part: Option<u64>| match part {
                Some(p) => bytes.div_ceil(p).max(1),
                None => 1,
            };
            needed += round_up(est.tar_bytes, block)
                + files(est.tar_bytes, part_bytes) * block
                + round_up(est.index_bytes, block)
                + files(est.index_bytes, index_part_bytes) * block;
            Some(ArchiveTarget {
                set: s.set.clone(),
                snapshot: s.snapshot.clone()?,
                archive: layout::archive_name(&s.set, enc.is_some()),
                part_bytes,
                index: layout::index_name(&s.set, enc.is_some()),
                index_part_bytes,
                tar_bytes: est.tar_bytes,
                index_bytes: est.index_bytes,
                encrypted: enc.is_some(),
                choice,
                left_out: if enc.is_some() {
                    Vec::new()
                } else {
                    s.secrets.clone()
                },
            })
        })
        .collect();
    (archives, needed)
}

/// The most the backup's `system/` folder may take on this drive: the kit, and each image this drive gets at
/// partclone's count of its used bytes as if zstd could not compress them (the compressed size is known only once
/// written), encrypted when the drive encrypts; and the plan of what goes there for this drive.
fn system_bytes(
    d: &DestinationWorld,
    system: Option<&crate::image::SystemInput>,
) -> (u64, Option<crate::image::SystemPlan>) {
    let Some(input) = system else {
        return (0, None);
    };
    let recipients = d.encryption.as_ref().map(|e| e.recipients.len());
    let plan = crate::image::plan::plan_system(
        input.kit.is_some(),
        &input.devices,
        d.info.device.as_deref(),
        recipients,
    );
    (
        input.bound_bytes(&plan, d.block_size, recipients),
        Some(plan),
    )
}

/// What `system_bytes` means, for the dry run and the refusal.
fn system_space(n: u64) -> String {
    format!(
        "system/ may take {}: the kit, and the partition images at the bytes partclone finds in use as if zstd could \
         not compress them; their compressed size is known only once written",
        stdx::bytes(n)
    )
}

/// Why the drive is refused when the backup does not fit even after space-aware rotation, with the numbers and what
/// to do about it; `infos` are the drive's backups as rotation judged them ([`drive_infos`]).
fn space_refusal(
    (d, infos, owner): (&DestinationWorld, &[BackupInfo], drive_retention::Owner),
    needed: u64,
    system_bytes: Option<u64>,
    reclaimable: u64,
    room: &Room,
    backups_dir: &Path,
) -> String {
    let info = &d.info;
    let mut msg = format!(
        "not enough space: the backup needs {}{}, {} has {} free",
        stdx::bytes(needed),
        system_bytes
            .map(|n| format!(" (of which {})", system_space(n)))
            .unwrap_or_default(),
        info.path.display(),
        stdx::bytes(info.free_bytes)
    );
    if reclaimable > 0 {
        msg.push_str(&format!(
            " (and {} in leftovers of interrupted runs)",
            stdx::bytes(reclaimable)
        ));
    }
    let (others, own): (Vec<&BackupInfo>, Vec<&BackupInfo>) = infos
        .iter()
        .filter(|b| b.verified)
        .partition(|b| owner.foreign(b));
    let others = match others.len() {
        0 => String::new(),
        n => format!(
            " ({n} more {} there {} no set of this config: another config's, or this config's from before a set was \
             renamed or its sources changed)",
            if n == 1 { "backup" } else { "backups" },
            if n == 1 { "holds" } else { "hold" },
        ),
    };
    let keep = d.settings.keep_at_least;
    // Those to delete first: no restore point (found damaged, or broken), oldest first, a few by name.
    let mut unsound: Vec<&BackupInfo> = (own.iter().copied())
        .filter(|b| b.no_restore_point().is_some())
        .collect();
    unsound.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
    let first = match unsound.len() {
        0 => String::new(),
        n => {
            let names: Vec<String> = (unsound.iter().take(stdx::NAMED))
                .map(|b| stdx::show_str(&b.name))
                .collect();
            let more = n.saturating_sub(stdx::NAMED);
            format!(
                " (first the {} no restore point, damaged or broken: {}{})",
                if n == 1 {
                    "one that is".to_string()
                } else {
                    format!("{} that are", stdx::count(n as u64))
                },
                names.join(", "),
                if more > 0 {
                    format!(" and {} more", stdx::count(more as u64))
                } else {
                    String::new()
                }
            )
        }
    };
    let own = own.len();
    if own > 0 {
        msg.push_str(&format!(
            "; removing the oldest restore points would free only {} without going below keep_at_least {keep} \
             (never the newest verified backup nor what the kept ones depend on): delete some of the {own} in \
             {} by hand{first}{others}, lower keep_at_least, or use a larger drive",
            stdx::bytes(room.removable_bytes),
            backups_dir.display(),
        ));
    } else {
        msg.push_str(&format!(
            "; free up space on the drive or use a larger one{others}"
        ));
    }
    msg.push_str("; nothing was written");
    msg
}

/// What rotation needs to know about each backup found on a drive, those `found_damaged` names (stamp: why) no
/// restore points.
pub(crate) fn drive_infos(
    listing: &DriveListing,
    found_damaged: &std::collections::BTreeMap<String, String>,
) -> Vec<BackupInfo> {
    let infos = listing
        .backups
        .iter()
        .map(|b| {
            BackupInfo::new(
                &b.name,
                b.time,
                b.meta.as_ref(),
                listing.latest.as_deref() == Some(b.name.as_str()),
            )
        })
        .collect();
    BackupInfo::with_damage(infos, found_damaged)
}

/// Retention on the drive after this run, with the new backup in place and what space-aware rotation removed gone;
/// `infos` are the drive's backups now ([`drive_infos`]).
fn retention_after(
    (d, infos, owner): (&DestinationWorld, &[BackupInfo], drive_retention::Owner),
    archives: &[ArchiveTarget],
    room: &Room,
    (stamp, opts): (&str, RunOptions),
) -> Vec<Decision> {
    let exported: Vec<String> = archives.iter().map(|a| a.set.clone()).collect();
    let mut infos: Vec<BackupInfo> = infos
        .iter()
        .filter(|b| !room.removed.iter().any(|r| r.name == b.name))
        .map(|b| BackupInfo {
            latest: false,
            ..b.clone()
        })
        .collect();
    infos.push(BackupInfo {
        name: stamp.to_string(),
        time: opts.now,
        verified: true,
        sets: exported,
        latest: true,
        ..Default::default()
    });
    drive_retention::decide_own(&infos, owner, &d.settings.retention, opts.now)
}

/// What the plan notes about the drive: leftovers of a run still going, backups without usable metadata, entries
/// not made by dbackup, unencrypted backups on a drive that now gets encrypted ones, a FUSE filesystem.
fn drive_notes(d: &DestinationWorld, backups_dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for l in d.listing.leftovers.iter().filter(|l| l.in_use) {
        notes.push(format!(
            "{} belongs to a dbackup run still going (pid {}); left alone",
            l.name,
            layout::leftover_pid(&l.name).unwrap_or(0)
        ));
    }
    let unusable: Vec<&layout::DriveBackup> = d
        .listing
        .backups
        .iter()
        .filter(|b| b.meta.is_none())
        .collect();
    for b in unusable.iter().take(stdx::NAMED) {
        notes.push(format!(
            "{} is not used nor removed: {}",
            b.name,
            b.meta_error.as_deref().unwrap_or("no metadata")
        ));
    }
    notes.extend(layout::unusable_rest(
        unusable.len().saturating_sub(stdx::NAMED),
        "not used nor removed",
    ));
    if !d.listing.other.is_empty() {
        // A few names, not all: a drive may hold any number of them.
        let other = &d.listing.other;
        let more = other.len().saturating_sub(stdx::NAMED);
        notes.push(format!(
            "{} in {} not made by dbackup, left alone: {}{}",
            stdx::counted(other.len() as u64, "entry", "entries"),
            backups_dir.display(),
            other[..other.len().min(stdx::NAMED)].join(", "),
            if more > 0 {
                format!(" and {} more", stdx::count(more as u64))
            } else {
                String::new()
            }
        ));
    }
    if d.encryption.is_some() {
        let plain: Vec<&str> = d
            .listing
            .verified()
            .filter(|b| {
                b.meta
                    .as_ref()
                    .is_some_and(|m| m.sets.iter().any(|s| s.encryption.is_none()))
            })
            .map(|b| b.name.as_str())
            .collect();
        if !plain.is_empty() {
            let (is, them) = if plain.len() == 1 {
                ("is", "it")
            } else {
                ("are", "them")
            };
            notes.push(format!(
                "{} on this drive {is} not encrypted ({}): retention removes {them} as encrypted backups replace \
                 {them}; until then anyone holding the drive can read {them}. Delete {them} by hand to be rid of \
                 {them} now",
                stdx::counted(plain.len() as u64, "older backup", "older backups"),
                plain.join(", "),
            ));
        }
    }
    let info = &d.info;
    if info.mount_fs_type.starts_with("fuse") && info.device.is_none() {
        notes.push(
            "a FUSE filesystem without a known block device: the read-back may be answered from memory".into(),
        );
    }
    notes
}

/// The plan for people (what `--dry-run` prints without `--json`).
pub fn render(plan: &ExternalPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backup root {}, host {}, new backup {}",
        plan.backup_root.display(),
        plan.host,
        plan.stamp
    );
    for s in &plan.sets {
        match (&s.action, &s.snapshot, &s.estimate) {
            (SetAction::Export, Some(name), Some(e)) => {
                let _ = writeln!(
                    out,
                    "set {}: {}{}: {}, {} ({} of content), archive {}",
                    s.set,
                    name,
                    if s.complete { "" } else { " (INCOMPLETE)" },
                    stdx::counted(e.entries, "entry", "entries"),
                    stdx::counted(e.files, "file", "files"),
                    stdx::bytes(e.file_bytes),
                    stdx::bytes(e.tar_bytes)
                );
            }
            _ => {
                let _ = writeln!(out, "set {}: skipped", s.set);
            }
        }
        for w in &s.warnings {
            let _ = writeln!(out, "  warning   {w}");
        }
    }
    for (i, line) in plan.chains.iter().enumerate() {
        let _ = writeln!(out, "{}{line}", if i == 0 { "" } else { "  " });
    }
    // Destinations whose drive or encryption changes what they get in system/ show each its own.
    let per_destination =
        (plan.destinations.iter()).any(|d| d.system.is_some() && d.system != plan.system);
    if let Some(system) = &plan.system {
        if per_destination {
            let _ = writeln!(
                out,
                "system (into each backup's system/ folder): what each destination gets is shown with it (its \
                 encryption decides what may be imaged)"
            );
        } else {
            let _ = writeln!(out, "system (into each backup's system/ folder):");
            crate::image::plan::render_system(system, &mut out, "  ");
        }
    }
    for u in &plan.unused {
        let _ = writeln!(out, "\ndestination {}: not used: {}", u.name, u.reason);
    }
    for n in &plan.index_copies_orphaned {
        let _ = writeln!(
            out,
            "\nlocal index copies of destination {}: removed after the run (no such destination in the config)",
            super::index_copy::shown(n)
        );
    }
    for n in &plan.upload_journals_orphaned {
        let _ = writeln!(
            out,
            "\nupload journals of destination {}: removed after the run (no such destination in the config)",
            super::index_copy::shown(n)
        );
    }
    for d in &plan.destinations {
        render_destination(&mut out, d, per_destination);
    }
    for c in &plan.clouds {
        out.push('\n');
        super::cloud::render(c, &mut out);
    }
    out
}

/// One destination of the plan: where, how much space (and, with `system`, what its `system/` gets), then each step the
/// run takes on it.
fn render_destination(out: &mut String, d: &DestinationPlan, system: bool) {
    // Stays long: the dry run's text for one destination, each step of the run in the order it is printed.
    out.push('\n');
    let mut what = vec![d.fs_type.clone()];
    if let Some(dev) = &d.device {
        what.push(format!("on {}", dev.display()));
    }
    if let Some(l) = &d.label {
        what.push(format!("label \"{l}\""));
    }
    let _ = writeln!(
        out,
        "destination {}: {} ({})",
        d.name,
        d.path.display(),
        what.join(", ")
    );
    let space = format!(
        "needs {}, {} free{}",
        stdx::bytes(d.needed_bytes),
        stdx::bytes(d.free_bytes),
        if d.reclaimable_bytes > 0 {
            format!(" + {} from leftovers", stdx::bytes(d.reclaimable_bytes))
        } else {
            String::new()
        }
    );
    if let Some(why) = &d.refusal {
        let _ = writeln!(out, "  REFUSED   {why}");
        return;
    }
    let _ = writeln!(out, "  space     {space}");
    if d.system.as_ref().is_some_and(|s| !s.images.is_empty()) {
        let _ = writeln!(out, "            of which {}", system_space(d.system_bytes));
    }
    if let Some(s) = d.system.as_ref().filter(|_| system) {
        let _ = writeln!(
            out,
            "  system    what this destination's backup gets in system/:"
        );
        crate::image::plan::render_system(s, out, "    ");
    }
    if d.write_marker {
        let _ = writeln!(
            out,
            "  marker    first use: would write {} naming destination {}",
            d.backups_dir.join(".dbackup-destination.json").display(),
            d.name
        );
    }
    for l in &d.cleanup {
        let _ = writeln!(
            out,
            "  cleanup   would remove {} (left by an interrupted run, {})",
            l.name,
            stdx::bytes(l.bytes)
        );
    }
    if !d.remove_for_space.is_empty() {
        let _ = writeln!(
            out,
            "  rotate    not enough space: would remove {} for space BEFORE writing (frees {}; keep_at_least {})",
            stdx::counted(d.remove_for_space.len() as u64, "old backup", "old backups"),
            stdx::bytes(d.freed_for_space_bytes),
            d.keep_at_least
        );
        for x in &d.remove_for_space {
            let _ = writeln!(out, "  remove    {} ({})", x.name, x.reasons.join("; "));
        }
    }
    let _ = writeln!(
        out,
        "  write     {} (renamed to {} once read back and verified)",
        d.temp_dir.display(),
        d.final_dir.display()
    );
    if let Some(e) = &d.encryption {
        let to = if e.passphrase {
            match &d.passphrase_file {
                Some(f) => format!("a passphrase (scrypt) read from {}", f.display()),
                None => "a passphrase (scrypt) asked on the terminal, twice".to_string(),
            }
        } else {
            e.recipients.join(", ")
        };
        let _ = writeln!(out, "  encrypt   with age to {to}");
    }
    for a in &d.archives {
        let parts = match a.part_bytes {
            Some(p) => format!(
                " in {} parts of at most {} ({}.part000, ...)",
                a.tar_bytes.div_ceil(p),
                stdx::bytes(p),
                a.archive
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  archive   {} ({}){parts} + {} from {}",
            a.archive,
            stdx::bytes(a.tar_bytes),
            a.index,
            a.snapshot
        );
        // Said when incrementals are on (or `--full` was given); otherwise every archive is full, as always.
        if a.choice.reason != super::chain::OFF_REASON {
            let _ = writeln!(out, "            {}", a.choice.reason);
        }
    }
    let _ = writeln!(
        out,
        "  verify    read back{} and compare sha256; write {} and {}",
        if d.drop_device_cache {
            " past the page cache and the device's cache"
        } else {
            " past the page cache"
        },
        layout::METADATA_FILE,
        layout::SUMS_FILE
    );
    let _ = writeln!(
        out,
        "  latest    {} -> {}{}",
        d.latest.path.display(),
        d.latest.target,
        match d.latest.kind {
            LatestKind::Symlink => " (symlink)",
            LatestKind::File => " (text file: no symlinks on this filesystem)",
        }
    );
    let removed: Vec<&Decision> = d.decisions.iter().filter(|x| !x.keep).collect();
    let kept = d.decisions.iter().filter(|x| x.keep).count();
    let _ = writeln!(
        out,
        "  retention {}: {} kept, {} removed after the new backup is verified",
        crate::retention::describe(&d.retention),
        kept,
        removed.len()
    );
    // The directories without verified metadata: the first few named, as the notes name them (a drive may hold any
    // number of them).
    let kept = d
        .decisions
        .iter()
        .filter(|x| x.keep && x.name != d.latest.target);
    let (kept, more) = crate::retention::listed(kept, drive_retention::UNJUDGED);
    for x in kept {
        let _ = writeln!(out, "  keep      {} ({})", x.name, x.reasons.join("; "));
    }
    if let Some(rest) = layout::unusable_rest(more, "kept, never touched") {
        let _ = writeln!(out, "  keep      {rest}");
    }
    for x in removed {
        let _ = writeln!(out, "  remove    {} ({})", x.name, x.reasons.join("; "));
    }
    super::index_copy::render(d.index_copy_dir.as_deref(), &d.index_copies_removed, out);
    for n in &d.notes {
        let _ = writeln!(out, "  note      {n}");
    }
    for l in d.archives.iter().flat_map(|a| &a.left_out) {
        let _ = writeln!(out, "  note      {}", l.line(&d.name));
    }
}
