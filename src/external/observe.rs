//! Looking before planning: each set's snapshots and the scan of the one to export, which destinations are present
//! (through [`crate::media`], the only judge of that), and what their `backups/` directories hold. Writes nothing
//! (detection's own probe file aside, see [`crate::media`]).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;

use super::layout;
use super::plan::Options;
use super::plan::{self, DestinationWorld, SetWorld, SnapshotSummary, World};
use super::sets::LeftOut;
use crate::archive::incremental::IncrementalBase;
use crate::archive::{self, ArchivePlan, NoProgress};
use crate::config::ExternalMode;
use crate::exit::{CodedError, Exit};
use crate::media;
use crate::settings::{CloudSettings, DestinationSettings, SetSettings, Settings};
use crate::snapshot::{self, SnapshotMeta};
use crate::stdx;
use crate::stdx::fs::Dir;
use crate::ui::Ui;

/// What was observed, and what the executor needs beyond the plan: each exported set's scan (the writer's input)
/// and its snapshot's metadata.
#[derive(Debug)]
pub struct Observed {
    pub world: World,
    pub scans: BTreeMap<String, ArchivePlan>,
    pub snapshot_meta: BTreeMap<String, SnapshotMeta>,
    /// How long the looking took (a dry run shows it).
    pub timings: plan::Timings,
}

/// Observes everything the plan needs. Fails with exit 1 when no set has a snapshot to export, exit 2 for an unknown
/// `--destination`, exit 5 when no destination is present (saying, for each, why). The steps run in the order the
/// exit codes need them: the snapshots, the `--destination` check, the drives' detection, the clouds, each drive.
pub fn observe(
    settings: &Settings,
    sets: &[&SetSettings],
    options: &Options,
    ui: &Ui,
) -> anyhow::Result<Observed> {
    let root = &settings.backup_root;
    let started = Instant::now();
    let mut timings = plan::Timings::default();

    // Snapshots first: without one there is nothing to do, drive or not.
    let Snapshots {
        mut set_worlds,
        chosen,
        metas,
    } = observe_snapshots(root, sets, options)?;

    // The recovery kit's tools run beside the drives' detection and the walks below (they share nothing).
    let system = {
        let settings = settings.clone();
        std::thread::Builder::new()
            .name("recovery-kit".into())
            .spawn(move || crate::image::observe_system(&settings, &[]))
            .context("starting the recovery kit's thread")?
    };

    // Every destination's name (drives, then clouds), and every set's.
    let all_names = settings.destination_names();
    let own_sets = super::retention::OwnSet::of(&settings.sets);
    let own_names = settings.set_names();
    let (configured, clouds) = named_destinations(settings, options, &all_names)?;
    // With one destination named, `first` and `all` choose alike.
    let mode = if options.destination.is_some() {
        ExternalMode::All
    } else {
        settings.external_mode
    };
    let detected = media::detect_all(&configured, settings.output.dry_run);
    for d in &detected {
        ui.step(format_args!("{d}"));
    }
    // The present drives and the cloud destinations are chosen together, by priority.
    let present: Vec<(String, i32)> = detected
        .iter()
        .filter(|d| d.is_present())
        .map(|d| (d.destination.name.clone(), d.destination.priority))
        .collect();
    let candidates: Vec<(String, i32)> = clouds
        .iter()
        .map(|c| (c.name.clone(), c.priority))
        .collect();
    let (drives, chosen_clouds) = super::cloud::select_across(mode, &present, &candidates);
    let selected: Vec<media::Detected> = if clouds.is_empty() {
        media::select_or_fail(mode, &detected)?
            .into_iter()
            .cloned()
            .collect()
    } else {
        detected
            .iter()
            .filter(|d| drives.contains(&d.destination.name))
            .cloned()
            .collect()
    };
    let clouds_not_chosen: Vec<(String, String)> = clouds
        .iter()
        .filter(|c| !chosen_clouds.contains(&c.name))
        .map(|c| (c.name.clone(), c.place()))
        .collect();
    let cloud_worlds = observe_clouds(settings, options, &clouds, &chosen_clouds, &chosen, ui)?;

    // The chosen snapshots' scans (metadata only: the exact archive sizes), made below: by the change detection of a
    // likely incremental (one walk gives both sizes), else by a scan of their own.
    let mut scans: BTreeMap<String, ArchivePlan> = BTreeMap::new();
    let mut destinations = Vec::new();
    for d in selected {
        destinations.push(observe_drive(
            settings,
            options,
            &d,
            &chosen,
            (&mut scans, &mut timings),
            ui,
        )?);
    }
    scan_the_rest(root, &chosen, &mut scans, &mut set_worlds, &mut timings, ui)?;
    secrets_inside(settings, &chosen, &mut set_worlds);

    let system = system
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    timings.observe_seconds = started.elapsed().as_secs_f64();
    Ok(Observed {
        timings,
        world: World {
            backup_root: root.clone(),
            index_copies_orphaned: super::index_copy::orphaned(
                root,
                super::index_copy::DIR,
                &all_names,
                |d| super::index_copy::foreign(root, d, &own_names),
            ),
            upload_journals_orphaned: super::index_copy::orphaned(
                root,
                super::resume::DIR,
                &all_names,
                |d| super::resume::foreign(root, d, &own_names),
            ),
            own_sets,
            host: media::hostname(),
            mode: settings.external_mode,
            only_destination: options.destination.clone(),
            allow_incomplete: options.allow_incomplete,
            sets: set_worlds,
            detected,
            destinations,
            clouds: cloud_worlds,
            clouds_not_chosen,
            incremental: settings.external_incremental,
            force_full: options.full,
            content_every: super::chain::content_every(settings.schedule.full),
            schedule_full: settings.schedule.full,
            choose_at: options.now,
            system,
        },
        scans,
        snapshot_meta: metas,
    })
}

/// Each set's snapshots and the one chosen to export.
struct Snapshots {
    set_worlds: Vec<SetWorld>,
    /// (set, snapshot) of each set with one to export.
    chosen: Vec<(String, String)>,
    metas: BTreeMap<String, SnapshotMeta>,
}

/// Each set's snapshots summarised and the one to export chosen; exit 1 when no set has one.
fn observe_snapshots(
    root: &std::path::Path,
    sets: &[&SetSettings],
    options: &Options,
) -> anyhow::Result<Snapshots> {
    let mut set_worlds = Vec::new();
    let mut chosen: Vec<(String, String)> = Vec::new();
    let mut metas = BTreeMap::new();
    let mut skipped = Vec::new();
    for set in sets {
        let found = snapshot::list(root, &set.name)
            .with_context(|| format!("listing the snapshots of set {}", set.name))?;
        let summaries: Vec<SnapshotSummary> = found
            .iter()
            .map(|s| SnapshotSummary {
                name: s.name.clone(),
                time: s.time,
                state: s.state(),
                unreadable: s
                    .metadata
                    .as_ref()
                    .map(|m| m.unreadable.len() as u64)
                    .unwrap_or(0),
                missing_sources: s
                    .metadata
                    .as_ref()
                    .map(|m| m.missing_sources().into_iter().map(String::from).collect())
                    .unwrap_or_default(),
            })
            .collect();
        let now = options
            .now
            .unwrap_or_else(|| chrono::Local::now().naive_local());
        let choice = plan::choose_snapshot(&summaries, options.allow_incomplete, now);
        match &choice.snapshot {
            Some(name) => {
                chosen.push((set.name.clone(), name.clone()));
                if let Some(m) = found
                    .iter()
                    .find(|s| &s.name == name)
                    .and_then(|s| s.metadata.clone())
                {
                    metas.insert(set.name.clone(), m);
                }
            }
            None => skipped.extend(
                choice
                    .warnings
                    .iter()
                    .map(|w| format!("set {}: {w}", set.name)),
            ),
        }
        set_worlds.push(SetWorld {
            name: set.name.clone(),
            snapshots: summaries,
            estimate: None,
            secrets: Vec::new(),
        });
    }
    if chosen.is_empty() {
        return Err(CodedError::new(
            Exit::Failed,
            format!(
                "nothing to export from {}: {}",
                root.display(),
                skipped.join("; ")
            ),
        )
        .into());
    }
    Ok(Snapshots {
        set_worlds,
        chosen,
        metas,
    })
}

/// The drives and cloud destinations to consider: `--destination` narrows them to one (a drive or a cloud
/// destination; exit 2 for an unknown name), else all. Media decides later which drives are present; cloud
/// destinations are always candidates (looked at once chosen).
fn named_destinations(
    settings: &Settings,
    options: &Options,
    all_names: &[&str],
) -> anyhow::Result<(Vec<DestinationSettings>, Vec<CloudSettings>)> {
    let Some(name) = &options.destination else {
        return Ok((settings.destinations.clone(), settings.clouds.clone()));
    };
    let drive = settings.destinations.iter().find(|d| &d.name == name);
    let cloud = settings.clouds.iter().find(|c| &c.name == name);
    if drive.is_none() && cloud.is_none() {
        let known = all_names;
        return Err(CodedError::new(
            Exit::Usage,
            if known.is_empty() {
                format!(
                    "there is no destination named {name:?}: the config has no destinations; add one \
                     to \"destinations\""
                )
            } else {
                format!(
                    "there is no destination named {name:?}; the config has: {}",
                    known.join(", ")
                )
            },
        )
        .into());
    }
    Ok((
        drive.cloned().into_iter().collect(),
        cloud.cloned().into_iter().collect(),
    ))
}

/// The chosen cloud destinations looked at (listing, upload journals, encryption), then each bucket's chains: the
/// metadata they go through and each incremental's base index (downloaded, checked).
fn observe_clouds(
    settings: &Settings,
    options: &Options,
    clouds: &[CloudSettings],
    chosen_clouds: &std::collections::BTreeSet<String>,
    chosen: &[(String, String)],
    ui: &Ui,
) -> anyhow::Result<Vec<super::cloud::CloudWorld>> {
    let root = &settings.backup_root;
    let mut cloud_worlds = Vec::new();
    for c in clouds.iter().filter(|c| chosen_clouds.contains(&c.name)) {
        let clock = Instant::now();
        let mut w = super::cloud::observe(c, ui).map_err(|e| {
            CodedError::new(
                Exit::Usage,
                format!(
                    "{e}; nothing was written (`dbackup cloud check {}` tests the keys)",
                    c.name
                ),
            )
        })?;
        (w.encryption, w.passphrase_file) = encryption_of(&c.name, c.encryption.as_ref())?;
        w.looked = clock.elapsed();
        cloud_worlds.push(w);
    }

    // Each bucket's chains: the metadata they go through, and each incremental's base index (downloaded, checked).
    let chain_policy = super::cloud::ChainPolicy {
        policy: settings.external_incremental,
        force_full: options.full,
        content_every: super::chain::content_every(settings.schedule.full),
        now: options
            .now
            .unwrap_or_else(|| chrono::Local::now().naive_local()),
    };
    let damage = super::damage::read(&settings.state_dir, root);
    for w in &mut cloud_worlds {
        let clock = Instant::now();
        super::cloud::observe_chains(
            w,
            chosen,
            &chain_policy,
            (root, &super::retention::OwnSet::of(&settings.sets), &damage),
            ui,
        );
        // After the chains: a backup is another config's by its `backup.json` where they read one.
        let own = super::retention::OwnSet::of(&settings.sets);
        let foreign = |s: &str| w.foreign(s, super::retention::Owner::Sets(&own));
        let resume = super::resume::observe(&w.listing, (&w.settings.name, &foreign), root);
        w.resume = resume;
        w.looked += clock.elapsed();
    }
    Ok(cloud_worlds)
}

/// One present drive: what its `backups/` holds (leftovers in use, damaged backups), its encryption, and where an
/// incremental is likely, the change detection's estimate (its scan kept in `scans` for the writer, its time added
/// to `timings`).
fn observe_drive(
    settings: &Settings,
    options: &Options,
    d: &media::Detected,
    chosen: &[(String, String)],
    (scans, timings): (&mut BTreeMap<String, ArchivePlan>, &mut plan::Timings),
    ui: &Ui,
) -> anyhow::Result<DestinationWorld> {
    let root = &settings.backup_root;
    let info = d.info().expect("selected destinations are present").clone();
    let block_size = crate::media::block_size(&info.resolved);
    let mut listing = match layout::open_backups_at(&info.resolved)
        .with_context(|| format!("looking at destination {}", d.destination.name))?
    {
        Some(backups) => layout::list_in(&backups)
            .with_context(|| format!("looking at destination {}", d.destination.name))?,
        None => layout::DriveListing::default(),
    };
    for l in &mut listing.leftovers {
        l.in_use = layout::leftover_in_use(&l.name);
    }
    let (encryption, passphrase_file) =
        encryption_of(&d.destination.name, d.destination.encryption.as_ref())?;
    let mut damaged = layout::damaged_files(&info.resolved.join(layout::BACKUPS_DIR), &listing);
    // Rotation's why: the same, `restore --verify`'s said shorter (with its date).
    let mut found_damaged = damaged.clone();
    // What `restore --verify` found (a damage of the same size, which the lstat above cannot see).
    let records = super::damage::read(&settings.state_dir, &settings.backup_root);
    let on = (d.destination.name.as_str(), &listing);
    for (stamp, why) in super::damage::on_destination_as(&records, on, super::damage::note_text) {
        damaged.entry(stamp).or_insert(why);
    }
    for (stamp, why) in super::damage::on_destination_as(&records, on, super::damage::standing) {
        found_damaged.entry(stamp).or_insert(why);
    }
    // Where an incremental is likely, what it would store: the change detection alone (stats and the base's
    // index; contents are read only when a content comparison is due, and then not here: counted as changed).
    let mut incremental = BTreeMap::new();
    let own = super::retention::OwnSet::of(&settings.sets);
    // An encrypted chain's base manifest is the local plaintext copy of its index: here and trusted, or why not.
    let mut base_copies = BTreeMap::new();
    for (set, name) in chosen {
        let owner = super::retention::Owner::Sets(&own);
        let facts = super::chain::facts(&listing, (set, owner), &damaged);
        if encryption.is_some()
            && let Some(f) = &facts
        {
            base_copies.insert(
                set.clone(),
                super::index_copy::base_copy(root, &d.destination.name, &listing, &f.base, set)
                    .map(|_| ()),
            );
        }
        let choice = super::chain::choose(
            super::chain::ChoiceInputs {
                policy: settings.external_incremental,
                force_full: options.full,
                encryption: encryption.as_ref(),
                content_every: super::chain::content_every(settings.schedule.full),
                now: options
                    .now
                    .unwrap_or_else(|| chrono::Local::now().naive_local()),
                base_copy: base_copies
                    .get(set)
                    .map(|r: &Result<(), String>| r.as_ref().map(|_| ()).map_err(String::as_str)),
            },
            facts.as_ref(),
        );
        if choice.base.is_none() {
            continue;
        }
        let detecting = Instant::now();
        let estimate = info
            .open_root()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|root| {
                layout::open_backups(&root)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .ok_or_else(|| anyhow::anyhow!("no backups directory"))
            })
            .and_then(|backups| {
                let mut base =
                    open_base(&listing, &backups, set, &choice, root, &d.destination.name)?;
                base.compare_content = false;
                let path = root.join(name);
                ui.step(format_args!(
                    "{set}: scanning {} for changes since {}",
                    path.display(),
                    base.stamp
                ));
                Ok(archive::scan_both(&path, &base, &mut NoProgress)?)
            });
        timings.detection_seconds += detecting.elapsed().as_secs_f64();
        if let Ok((plan, estimate)) = estimate {
            timings.detection_entries += estimate.entries;
            ui.step(format_args!(
                "{set}: change detection on {}: {} entries in {:.3}s",
                d.destination.name,
                crate::stdx::count(estimate.entries),
                detecting.elapsed().as_secs_f64()
            ));
            incremental.insert(set.clone(), estimate);
            scans.entry(set.clone()).or_insert(plan);
        }
    }
    Ok(DestinationWorld {
        settings: d.destination.clone(),
        info,
        block_size,
        listing,
        encryption,
        passphrase_file,
        damaged,
        found_damaged,
        incremental,
        index_copies: super::index_copy::list(root, &d.destination.name, &settings.set_names()),
        base_copies,
    })
}

/// Each chosen snapshot not scanned by a drive's change detection scanned now (its time added to `timings`); each
/// set's estimate recorded.
fn scan_the_rest(
    root: &std::path::Path,
    chosen: &[(String, String)],
    scans: &mut BTreeMap<String, ArchivePlan>,
    set_worlds: &mut [SetWorld],
    timings: &mut plan::Timings,
    ui: &Ui,
) -> anyhow::Result<()> {
    for (set, name) in chosen {
        let scan = match scans.remove(set) {
            Some(scan) => scan,
            None => {
                let path = root.join(name);
                ui.step(format_args!("{set}: scanning {}", path.display()));
                let scanning = Instant::now();
                let scan = archive::scan(&path, &mut NoProgress)
                    .with_context(|| format!("scanning snapshot {name} of set {set}"))?;
                timings.scan_seconds += scanning.elapsed().as_secs_f64();
                scan
            }
        };
        if let Some(w) = set_worlds.iter_mut().find(|w| &w.name == set) {
            w.estimate = Some(scan.estimate.clone());
        }
        scans.insert(set.clone(), scan);
    }
    Ok(())
}

/// Each chosen snapshot's copies of the secret files dbackup reads ([`Settings::secret_files`]: those the config
/// names, `$DBACKUP_PASSPHRASE_FILE`'s, the AWS shared files), found by their resolved path (a symlink to the key,
/// or a key under a source reached through a symlink, is found where the snapshot holds its content).
fn secrets_inside(settings: &Settings, chosen: &[(String, String)], set_worlds: &mut [SetWorld]) {
    let secrets: Vec<(crate::settings::SecretFile, std::path::PathBuf)> = settings
        .secret_files(&crate::expand::Env::from_process())
        .into_iter()
        .filter_map(|f| {
            let real = std::fs::canonicalize(&f.path).ok()?;
            Some((f, snapshot::SourceRecord::in_snapshot_path(&real)))
        })
        .collect();
    for (set, name) in chosen {
        let snapshot = settings.backup_root.join(name);
        let Some(w) = set_worlds.iter_mut().find(|w| &w.name == set) else {
            continue;
        };
        w.secrets = secrets
            .iter()
            .filter(|(_, rel)| {
                std::fs::symlink_metadata(snapshot.join(rel)).is_ok_and(|m| m.is_file())
            })
            .map(|(f, rel)| LeftOut {
                path: f.path.clone(),
                field: f.field.clone(),
                named_by: f.named_by,
                in_snapshot: rel.clone(),
            })
            .collect();
    }
}

/// A destination's encryption as its backups record it (the recipients read now) and where its passphrase comes
/// from. A setting that cannot be used is a config problem (exit 2), found only now because the recipients file is
/// read when backing up: restore and verify on another computer must not need it.
fn encryption_of(
    name: &str,
    e: Option<&crate::settings::EncryptionSettings>,
) -> anyhow::Result<(
    Option<archive::EncryptionRecord>,
    Option<std::path::PathBuf>,
)> {
    let record = e
        .map(crate::settings::EncryptionSettings::resolve_record)
        .transpose()
        .map_err(|e| {
            CodedError::new(
                Exit::Usage,
                format!(
                    "destination {name}: its encryption settings cannot be used (nothing was written): {e}"
                ),
            )
        })?;
    let passphrase_file =
        e.and_then(|e| crate::archive::crypt::passphrase_source(e.passphrase_file.as_deref()));
    Ok((record, passphrase_file))
}

/// The base `choice` names for `set`, opened (see `exec::incremental_base`); also used by the dry run's estimate. An
/// encrypted base's manifest is read from the local plaintext copy of its index (`index_copy`, on `destination`),
/// trusted only as a copy of the very index the drive holds.
pub(crate) fn open_base(
    listing: &layout::DriveListing,
    backups: &Dir,
    set: &str,
    choice: &super::chain::ArchiveChoice,
    backup_root: &std::path::Path,
    destination: &str,
) -> anyhow::Result<IncrementalBase> {
    let base = choice
        .base
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no base"))?;
    let a = (set, choice);
    {
        let rec = listing
            .set_record(base, a.0)
            .ok_or_else(|| anyhow::anyhow!("it holds no set {}", a.0))?;
        let [index] = rec.index.as_slice() else {
            anyhow::bail!("its index is not one file");
        };
        let dir = backups.sub(base).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut f = dir
            .open_file(&index.name)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (bytes, sha) = stdx::sha256_reader(&mut f, &mut vec![0u8; 1 << 20], |_| {})?;
        if (bytes, archive::Digest(sha)) != (index.bytes, index.sha256) {
            anyhow::bail!(
                "its index {} is not the one backup.json records (size or sha256)",
                index.name
            );
        }
        let snapshot = a.1.base_snapshot_in(a.0, backup_root);
        if rec.encryption.is_some() {
            let copy = super::index_copy::trusted(backup_root, destination, base, a.0, index)
                .map_err(|why| {
                    anyhow::anyhow!("no trusted local copy of its encrypted index: {why}")
                })?;
            return Ok(IncrementalBase {
                stamp: base.clone(),
                open_manifest: Box::new(move || super::index_copy::open(&copy)),
                snapshot,
                compare_content: a.1.compare_content,
            });
        }
        let name = index.name.clone();
        Ok(IncrementalBase {
            stamp: base.clone(),
            open_manifest: Box::new(move || {
                let f = dir
                    .open_file(&name)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f))
                    as Box<dyn std::io::BufRead>)
            }),
            snapshot,
            compare_content: a.1.compare_content,
        })
    }
}
