//! The full-system image room: the recovery kit written into every external backup (`system/`), partition images
//! taken with partclone, and their restore onto a blank disk.
//!
//! - [`kit`]: the kit's pieces, each from a tool (time-limited, output bounded) or a file; a missing tool is a line.
//! - [`doc`]: `RESTORE-SYSTEM.md`, generated from the kit's facts (pure).
//! - [`observe`]: block devices and restore targets, read-only (mounts through [`crate::media::devices`]).
//! - [`plan`]: pure plans: what goes into `system/` (images or refusals), and what a restore writes.
//! - [`table`]: `sfdisk --dump` parsed, measured and rewritten for a new disk; [`header`]: partclone's image header.
//! - [`layout`]: the names in `system/` and what `backup.json` records of them.
//! - [`exec`]: the only code that runs partclone or sfdisk, or writes to a block device.
//!
//! `dbackup external` (and `backup`) write the kit (and the configured `image.devices`) into the backup before it is
//! verified and promoted; `dbackup image create` writes a backup of its own holding only `system/` (it does not move
//! `latest`, which names the newest backup of the sets); `dbackup image restore` plans, checks every image, then
//! writes.

pub mod doc;
pub mod exec;
pub mod header;
pub mod kit;
pub mod layout;
pub mod observe;
pub mod plan;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Local;
use serde::{Deserialize, Serialize};

use crate::archive::Keys;
use crate::exit::{CodedError, Exit};
use crate::external::layout::{self as drive_layout, BackupMeta, FilesystemRecord, ReadBackRecord};
use crate::media::{self, MediaInfo};
use crate::settings::Settings;
use crate::ui::Ui;

pub use layout::SystemRecord;
pub use plan::{RestoreOptions, RestorePlan, SystemPlan};

/// What the external phase needs to write `system/`: the kit (collected once per run) and the devices to image.
#[derive(Debug, Clone, Default)]
pub struct SystemInput {
    pub kit: Option<kit::Kit>,
    pub devices: Vec<Result<observe::DeviceFacts, String>>,
    pub sets: Vec<(String, Vec<String>)>,
}

/// Observes what `settings.image` asks for (none when the kit is off and no device is configured). The kit's package
/// lists come from the state directory's cache while valid (written back by [`save_kit_cache`] after the run's writes).
/// Each device records the secret files dbackup reads ([`Settings::secret_files`]) that its filesystem holds.
pub fn observe_system(settings: &Settings, extra_devices: &[String]) -> Option<SystemInput> {
    let devices: Vec<String> = settings
        .image
        .devices
        .iter()
        .map(|d| d.display().to_string())
        .chain(extra_devices.iter().cloned())
        .collect();
    if !settings.image.kit && devices.is_empty() {
        return None;
    }
    let secrets = settings.secret_files(&crate::expand::Env::from_process());
    Some(SystemInput {
        kit: settings
            .image
            .kit
            .then(|| kit::collect_with(Some(&settings.state_dir))),
        devices: devices
            .iter()
            .map(|d| {
                let mut facts = observe::device(d)?;
                facts.secrets = (secrets.iter())
                    .filter(|f| crate::media::devices::holds_file(&facts.path, &f.path))
                    .cloned()
                    .collect();
                used_space(&mut facts);
                Ok(facts)
            })
            .collect(),
        sets: sets_of(settings),
    })
}

/// Fills in how much of `d` partclone would image (its header's used blocks), for the space check; only for a
/// device that would be imaged (a refused one is not read). Reads the device, writes nothing.
fn used_space(d: &mut observe::DeviceFacts) {
    if plan::refusal(d, None).is_some() {
        return;
    }
    let Some(tool) = d.tool.clone() else { return };
    match exec::read_header(&tool, &d.path, !d.usage.mounts.is_empty()) {
        Ok(h) => {
            d.used_bytes = Some(h.used_bytes());
            d.stream_bound = Some(h.stream_bound());
        }
        Err(e) => d.used_error = Some(crate::ui::format_error(&e)),
    }
}

/// Keeps what the kit collected for the next run (see [`kit::collect_with`]); a failure costs only the next run's
/// time, so it is a step (`-v`), not a warning.
pub fn save_kit_cache(settings: &Settings, input: &SystemInput, ui: &Ui) {
    let Some(k) = &input.kit else { return };
    if !k.reused.is_empty() {
        ui.step(format_args!(
            "recovery kit: {} reused from {} (the package database is unchanged)",
            k.reused.join(", "),
            settings.state_dir.join(kit::CACHE_FILE).display()
        ));
    }
    if let Err(e) = kit::save_cache(&settings.state_dir, k) {
        ui.step(format_args!(
            "recovery kit: cannot keep the package lists in {}: {e}",
            settings.state_dir.display()
        ));
    }
}

impl SystemInput {
    /// What the kit's files take (the guide and manifest are generated later: 256 KiB are kept for them).
    pub fn kit_bytes(&self) -> u64 {
        self.kit
            .as_ref()
            .map(|k| k.pieces.iter().map(|p| p.bytes.len() as u64).sum::<u64>() + (256 << 10))
            .unwrap_or(0)
    }

    /// What `system/` may take on a drive whose files are rounded up to `block`: the images at their bound (see
    /// [`plan::SystemPlan::bound_bytes`]) and the kit, each file rounded up (age's overhead counted when
    /// `recipients` is some).
    pub fn bound_bytes(&self, plan: &SystemPlan, block: u64, recipients: Option<usize>) -> u64 {
        let block = block.max(512);
        let kit_files = self.kit.as_ref().map_or(0, |k| k.pieces.len() as u64 + 2);
        let kit = match recipients {
            Some(n) => self
                .kit_bytes()
                .saturating_add(kit_files * crate::archive::crypt::encrypted_len(0, n)),
            None => self.kit_bytes(),
        };
        let kit = if plan.kit {
            kit.saturating_add(kit_files.saturating_mul(block))
        } else {
            0
        };
        plan.bound_bytes(block)
            .saturating_add(kit)
            .saturating_add(block)
    }
}

fn sets_of(settings: &Settings) -> Vec<(String, Vec<String>)> {
    settings
        .sets
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.sources
                    .iter()
                    .map(|p| p.path.display().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// What `dbackup image create` was asked.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Devices to image besides the config's `image.devices`.
    pub devices: Vec<String>,
    /// Only this destination (by name).
    pub destination: Option<String>,
}

/// The plan of `dbackup image create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatePlan {
    pub destination: String,
    pub path: PathBuf,
    pub stamp: String,
    pub temp_dir: PathBuf,
    pub final_dir: PathBuf,
    pub system: SystemPlan,
    /// The images' devices' sizes.
    pub device_bytes: u64,
    /// The most the backup may take on the drive (see [`SystemInput::bound_bytes`]), and what the drive has free.
    pub needed_bytes: u64,
    pub free_bytes: u64,
    /// What interrupted runs left on the drive (`.tmp-<stamp>-<pid>`, ...): removed before writing, their bytes
    /// counted as free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<drive_layout::Leftover>,
    /// Why nothing is written (not enough space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// What `dbackup image create` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateReport {
    pub plan: CreatePlan,
    pub backup_path: Option<PathBuf>,
    pub system: Option<SystemRecord>,
    pub error: Option<String>,
}

impl CreatePlan {
    /// What the run would exit with at best: 1 when nothing would be imaged, 3 when a device would be refused.
    pub fn expected_exit(&self) -> Exit {
        if self.system.images.is_empty() || self.refusal.is_some() {
            Exit::Failed
        } else if self.system.refused.is_empty() {
            Exit::Ok
        } else {
            Exit::Warnings
        }
    }
}

impl CreateReport {
    pub fn exit(&self) -> Exit {
        match (&self.error, &self.system) {
            (None, Some(s)) if s.refused.is_empty() => Exit::Ok,
            (None, Some(_)) => Exit::Warnings,
            _ => Exit::Failed,
        }
    }
}

/// The destination to write to: `--destination`, else the first present by `external.mode`.
fn choose_destination(
    settings: &Settings,
    only: Option<&str>,
) -> anyhow::Result<(crate::settings::DestinationSettings, MediaInfo)> {
    let candidates: Vec<_> = match only {
        Some(name) => {
            let d = settings
                .destinations
                .iter()
                .find(|d| d.name == name)
                .ok_or_else(|| {
                    CodedError::new(
                        Exit::Usage,
                        format!("no destination {name:?} in the config"),
                    )
                })?;
            vec![d.clone()]
        }
        None => settings.destinations.clone(),
    };
    let detected = media::detect_all(&candidates, settings.output.dry_run);
    let chosen = media::select_or_fail(crate::config::ExternalMode::First, &detected)?;
    let d = chosen[0];
    Ok((
        d.destination.clone(),
        d.info()
            .cloned()
            .expect("selected destinations are present"),
    ))
}

/// A stamp no backup on the drive has yet.
fn fresh_stamp(backups_dir: &Path) -> String {
    let mut t = crate::snapshot::truncate_to_second(Local::now().naive_local());
    for _ in 0..30 {
        let stamp = crate::snapshot::stamp(t);
        if std::fs::symlink_metadata(backups_dir.join(&stamp)).is_err() {
            return stamp;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        t = crate::snapshot::truncate_to_second(Local::now().naive_local());
    }
    crate::snapshot::stamp(t)
}

/// Observes and plans `dbackup image create` (writes nothing but detection's probe).
pub fn plan_create(
    settings: &Settings,
    opts: &CreateOptions,
) -> anyhow::Result<(
    CreatePlan,
    SystemInput,
    crate::settings::DestinationSettings,
    MediaInfo,
)> {
    let input = observe_system(settings, &opts.devices).unwrap_or_default();
    if input.devices.is_empty() {
        return Err(CodedError::new(
            Exit::Usage,
            "nothing to image: give --device DEV, or list devices in the config's image.devices",
        )
        .into());
    }
    let (dest, info) = choose_destination(settings, opts.destination.as_deref())?;
    let encryption = dest
        .encryption
        .as_ref()
        .map(crate::settings::EncryptionSettings::resolve_record)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let recipients = encryption.as_ref().map(|e| e.recipients.len());
    let system = plan::plan_system(
        settings.image.kit,
        &input.devices,
        info.device.as_deref(),
        recipients,
    );
    let block = crate::media::block_size(&info.resolved);
    let needed_bytes = input
        .bound_bytes(&system, block, recipients)
        .saturating_add(drive_layout::SPACE_MARGIN);
    let backups_dir = info.resolved.join(drive_layout::BACKUPS_DIR);
    let stamp = fresh_stamp(&backups_dir);
    // What interrupted runs left (a kill -9 mid-image) is removed first, as the external phase does.
    let cleanup: Vec<drive_layout::Leftover> = match drive_layout::open_backups_at(&info.resolved) {
        Ok(Some(backups)) => drive_layout::list_in(&backups)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .leftovers
            .into_iter()
            .filter(|l| !drive_layout::leftover_in_use(&l.name))
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    let reclaimable = drive_layout::leftover_bytes(&cleanup);
    let available = info.free_bytes.saturating_add(reclaimable);
    let refusal = (!system.images.is_empty() && needed_bytes > available).then(|| {
        format!(
            "not enough space: the images may take {} (partclone's bytes in use, counted as if zstd could not \
             compress them; their compressed size is known only once written), {} has {} free{}; free up space on \
             the drive or use a larger one; nothing was written",
            crate::stdx::bytes(needed_bytes),
            dest.path.display(),
            crate::stdx::bytes(info.free_bytes),
            if reclaimable > 0 {
                format!(
                    " and {} in leftovers of interrupted runs",
                    crate::stdx::bytes(reclaimable)
                )
            } else {
                String::new()
            }
        )
    });
    let plan = CreatePlan {
        destination: dest.name.clone(),
        path: dest.path.clone(),
        temp_dir: backups_dir.join(drive_layout::temp_name(&stamp, std::process::id())),
        final_dir: backups_dir.join(&stamp),
        stamp,
        device_bytes: system.device_bytes(),
        needed_bytes,
        free_bytes: info.free_bytes,
        cleanup,
        refusal,
        system,
    };
    Ok((plan, input, dest, info))
}

/// The create plan for people.
pub fn render_create(p: &CreatePlan) -> String {
    let mut out = format!(
        "image create on {} ({}): backup {} (needs at most {}, {} free)\n",
        p.destination,
        p.path.display(),
        p.stamp,
        crate::stdx::bytes(p.needed_bytes),
        crate::stdx::bytes(p.free_bytes),
    );
    for l in &p.cleanup {
        out.push_str(&format!(
            "  remove    leftover {} of an interrupted run ({})\n",
            l.name,
            crate::stdx::bytes(l.bytes)
        ));
    }
    plan::render_system(&p.system, &mut out, "  ");
    if let Some(r) = &p.refusal {
        out.push_str(&format!("  REFUSED   {r}\n"));
        return out;
    }
    out.push_str(&format!(
        "  written into {}, read back, then renamed to {}\n",
        p.temp_dir.display(),
        p.final_dir.display()
    ));
    out
}

/// Runs `dbackup image create`: plan, then write `system/` into a temporary backup directory, read it back, write
/// `backup.json` and the sums, and rename it into place. Nothing is promoted when anything failed.
pub fn create(settings: &Settings, opts: &CreateOptions, ui: &Ui) -> anyhow::Result<CreateReport> {
    let lock = if settings.backup_root.is_dir() {
        Some(crate::lock::RunLock::acquire(&settings.backup_root)?)
    } else {
        None
    };
    let (plan, input, dest, info) = plan_create(settings, opts)?;
    for r in &plan.system.refused {
        ui.warn(format_args!("not imaged: {}: {}", r.device, r.reason));
    }
    let mut report = CreateReport {
        plan: plan.clone(),
        backup_path: None,
        system: None,
        error: None,
    };
    if plan.system.images.is_empty() {
        report.error = Some("no device can be imaged; nothing was written".into());
        return Ok(report);
    }
    if let Some(r) = &plan.refusal {
        report.error = Some(r.clone());
        return Ok(report);
    }
    let result = write_create(settings, &plan, &input, &dest, &info, ui);
    drop(lock);
    match result {
        Ok(system) => {
            report.backup_path = Some(plan.final_dir.clone());
            report.system = Some(system);
        }
        Err(e) => {
            let mut msg = crate::ui::format_error(&e);
            if let Err(gone) = info.check_still_present() {
                msg = format!("{gone} (while writing: {msg})");
            }
            let name = drive_layout::temp_name(&plan.stamp, std::process::id());
            let removed = info.check_still_present().is_ok()
                && info
                    .open_root()
                    .ok()
                    .and_then(|root| drive_layout::open_backups(&root).ok().flatten())
                    .is_some_and(|backups| match backups.stat(&name) {
                        Ok(None) => true,
                        Ok(Some(_)) => drive_layout::remove_leftover(&backups, &name).is_ok(),
                        Err(_) => false,
                    });
            if removed {
                msg.push_str("; nothing was promoted (no partial backup is left on the drive)");
            } else {
                msg.push_str(&format!(
                    "; nothing was promoted; the partial backup {} is removed by the next run",
                    plan.temp_dir.display()
                ));
            }
            if crate::stdx::fs::filled_up(&e) {
                msg.push_str(crate::stdx::fs::FILLED_UP);
            }
            report.error = Some(msg);
        }
    }
    Ok(report)
}

fn write_create(
    settings: &Settings,
    plan: &CreatePlan,
    input: &SystemInput,
    dest: &crate::settings::DestinationSettings,
    info: &MediaInfo,
    ui: &Ui,
) -> anyhow::Result<SystemRecord> {
    let started = Local::now().fixed_offset();
    let encrypt = match &dest.encryption {
        Some(e) => {
            let record = e.resolve_record().map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(
                crate::archive::crypt::encrypt_to(&record, e.passphrase_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
        None => None,
    };
    info.check_still_present()?;
    media::ensure_marker(dest, info, started).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Everything below is reached through directory handles, as the external phase writes.
    let root = info.open_root().map_err(|e| anyhow::anyhow!("{e}"))?;
    let backups = drive_layout::open_backups(&root)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("{} is gone", root.join(drive_layout::BACKUPS_DIR).display()))?;
    for l in &plan.cleanup {
        info.check_still_present()?;
        drive_layout::remove_leftover(&backups, &l.name)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("removing what an interrupted run left on the drive")?;
        ui.step(format_args!("{}: removed leftover {}", dest.name, l.name));
    }
    let temp_name = drive_layout::temp_name(&plan.stamp, std::process::id());
    info.check_still_present()?;
    let temp = backups
        .create_sub(&temp_name, 0o700)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    backups.fsync().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = exec::DocContext {
        stamp: Some(plan.stamp.clone()),
        destination: Some(dest.name.clone()),
        sets: sets_of(settings),
        device_cache: info
            .device
            .clone()
            .filter(|_| info.mount_fs_type.starts_with("fuse")),
    };
    let (system, sums) = exec::write_system(
        &plan.system,
        input.kit.as_ref(),
        &temp,
        encrypt.as_ref(),
        &ctx,
        ui,
    )?;
    let meta = BackupMeta {
        format: drive_layout::BACKUP_FORMAT,
        depends_on: Vec::new(),
        stamp: plan.stamp.clone(),
        destination: dest.name.clone(),
        host: media::hostname(),
        dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
        started,
        finished: Local::now().fixed_offset(),
        verified: true,
        read_back: ReadBackRecord {
            methods: vec![],
            device_cache_dropped: None,
            note: None,
        },
        filesystem: FilesystemRecord {
            fs_type: info.fs_type.clone(),
            label: info.label.clone(),
            uuid: info.uuid.clone(),
        },
        sums_file: drive_layout::SUMS_FILE.to_string(),
        sets: vec![],
        system: Some(system.clone()),
    };
    crate::external::record::write_record(&temp, &meta, sums, || {})?;
    info.check_still_present()?;
    // Interrupted: not promoted (the caller removes the temporary backup), as the external phase does.
    crate::interrupt::check()?;
    backups
        .rename(&temp_name, &plan.stamp, true)
        .map_err(crate::stdx::fs::flat)?;
    backups.fsync().map_err(crate::stdx::fs::flat)?;
    Ok(system)
}

/// `dbackup image kit --out DIR`: the kit of this machine written into a new directory (owner-only files included:
/// the directory is the user's own, mode 0700). Returns the kit. A failure or a signal (SIGINT, SIGTERM) leaves
/// nothing half-written: the files it wrote are removed, and DIR when it made it.
pub fn kit_to_dir(
    settings: Option<&Settings>,
    out: &Path,
) -> anyhow::Result<(kit::Kit, Vec<layout::KitRecord>)> {
    let made = std::fs::symlink_metadata(out).is_err();
    crate::stdx::fs::create_private_dir(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let dir = crate::stdx::fs::Dir::open(out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut written = Vec::new();
    let kit = write_kit(settings, &dir, &mut written);
    if kit.is_err() {
        // Nothing half-written: the files this run wrote go again, and the directory when this run made it.
        for name in &written {
            let _ = dir.unlink(name);
        }
        if made {
            let _ = std::fs::remove_dir(out);
        }
    }
    kit
}

/// The kit's files written into `dir`, each new (`written`: the names this run created, even one it did not finish).
/// A SIGINT or SIGTERM caught meanwhile stops it, before any file and after the last ([`crate::interrupt`]).
fn write_kit(
    settings: Option<&Settings>,
    dir: &crate::stdx::fs::Dir,
    written: &mut Vec<String>,
) -> anyhow::Result<(kit::Kit, Vec<layout::KitRecord>)> {
    let mut put = |name: &str, bytes: &[u8]| -> anyhow::Result<crate::archive::FileRecord> {
        crate::interrupt::check()?;
        let there = std::fs::symlink_metadata(dir.join(name)).is_ok();
        let record = drive_layout::write_new_file(dir, name, bytes);
        if !there && std::fs::symlink_metadata(dir.join(name)).is_ok() {
            written.push(name.to_string());
        }
        Ok(record?)
    };
    let k = kit::collect();
    let mut pieces = Vec::new();
    for p in &k.pieces {
        let file = if p.has_file() {
            Some(put(&p.name, &p.bytes).map_err(|e| {
                if e.is::<crate::interrupt::Interrupted>() {
                    e
                } else {
                    anyhow::anyhow!("{e}; write the kit into a new directory")
                }
            })?)
        } else {
            None
        };
        pieces.push(p.record(file));
    }
    let sets = settings.map(sets_of).unwrap_or_default();
    let generated = Local::now().format("%Y-%m-%d %H:%M:%S %:z").to_string();
    let text = doc::render(&doc::DocInput {
        facts: &k.facts,
        pieces: &pieces,
        images: &[],
        tables: &[],
        stamp: None,
        destination: None,
        sets: &sets,
        encrypted: false,
        grow: &[],
        generated: &generated,
    });
    k.write_generated(&mut pieces, &text, &mut put)?;
    crate::interrupt::test_stop("kit-written");
    crate::interrupt::check()?;
    Ok((k, pieces))
}

/// Where `dbackup image restore` reads from.
#[derive(Debug, Clone, Default)]
pub struct RestoreSource {
    /// `--drive DIR`: a mount point, its `backups/`, or the backup itself.
    pub drive: Option<PathBuf>,
    /// `--from STAMP`.
    pub from: String,
}

/// The backup directory of `from` on `--drive DIR` or on a present configured destination (read-only detection).
fn find_backup(settings: Option<&Settings>, src: &RestoreSource) -> anyhow::Result<PathBuf> {
    if crate::snapshot::parse_stamp(&src.from).is_none() {
        return Err(CodedError::new(
            Exit::Usage,
            format!(
                "--from {} is not a backup's stamp (like 2026-12-05-031500); `dbackup restore --list` shows them",
                crate::stdx::show_str(&src.from)
            ),
        )
        .into());
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(d) = &src.drive {
        if d.file_name()
            .is_some_and(|n| n.to_string_lossy() == src.from)
        {
            return Ok(d.clone());
        }
        roots.push(d.join(drive_layout::BACKUPS_DIR));
        roots.push(d.clone());
    } else if let Some(s) = settings {
        for d in &s.destinations {
            if let media::Presence::Present(info) = media::detect_for_reading(d) {
                roots.push(info.resolved.join(drive_layout::BACKUPS_DIR));
            }
        }
        if roots.is_empty() {
            return Err(CodedError::new(
                Exit::NoDestination,
                "no destination is present to read from; plug in the drive, or name it with --drive DIR",
            )
            .into());
        }
    }
    roots
        .iter()
        .map(|r| r.join(&src.from))
        .find(|p| p.join(drive_layout::METADATA_FILE).is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no backup {} with a backup.json in {}",
                src.from,
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Reads the backup's `system` record (refused unless `backup.json` makes the directory a verified backup:
/// [`drive_layout::not_a_backup`]; names checked: every one a plain file name) and parses its tables.
pub fn read_system(
    dir: &Path,
    keys: &Keys,
) -> anyhow::Result<(SystemRecord, Vec<(String, table::Table)>)> {
    let meta = drive_layout::read_metadata(&dir.join(drive_layout::METADATA_FILE))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    if let Some(why) = drive_layout::not_a_backup(&name, &meta) {
        anyhow::bail!(
            "backup {} ({}): {why}; an image restore writes whole disks from a verified backup only: choose another \
             (`dbackup restore --list` shows them)",
            crate::stdx::show_str(&name),
            dir.display()
        );
    }
    let system = meta.system.unwrap_or_default();
    for f in system.files() {
        let plain = f
            .name
            .strip_suffix(crate::archive::crypt::AGE_SUFFIX)
            .unwrap_or(&f.name);
        if !layout::is_plain_name(plain) {
            anyhow::bail!(
                "{}: backup.json names a system file {}, which is not a plain file name; refusing the backup",
                dir.display(),
                crate::stdx::show_str(&f.name)
            );
        }
    }
    for i in &system.images {
        if !layout::is_plain_name(&i.name)
            || i.disk.as_deref().is_some_and(|d| !layout::is_plain_name(d))
        {
            anyhow::bail!(
                "{}: backup.json names an image or disk that is not a plain name",
                dir.display()
            );
        }
    }
    let mut tables = Vec::new();
    for t in &system.tables {
        let path = dir.join(layout::SYSTEM_DIR).join(&t.file.name);
        let bytes = exec::read_small(
            &path,
            system.encryption.is_some(),
            keys,
            table::MAX_DUMP_BYTES,
        )?;
        if crate::archive::Digest::of_bytes(&bytes) != t.file.sha256 && system.encryption.is_none()
        {
            anyhow::bail!(
                "{} is damaged: its sha256 differs from backup.json's",
                path.display()
            );
        }
        let parsed = table::parse(&bytes).with_context(|| path.display().to_string())?;
        tables.push((t.disk.clone(), parsed));
    }
    Ok((system, tables))
}

/// The keys that open encrypted images: the identities `given`, the config's `identity_file`s that exist, and the
/// passphrase of `$DBACKUP_PASSPHRASE_FILE` (each read only when an encrypted image is opened).
pub fn restore_keys(settings: Option<&Settings>, given: &[PathBuf]) -> anyhow::Result<Keys> {
    let mut keys = Keys::new();
    let mut files: Vec<PathBuf> = given.to_vec();
    if let Some(s) = settings {
        for e in s
            .encryption
            .iter()
            .chain(s.destinations.iter().filter_map(|d| d.encryption.as_ref()))
        {
            if let Some(f) = &e.identity_file
                && !files.contains(f)
                && f.exists()
            {
                files.push(f.clone());
            }
        }
    }
    for f in &files {
        keys.add_identity_file(f)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(file) = crate::archive::crypt::passphrase_source(None) {
        let p = crate::archive::crypt::read_passphrase(Some(&file), "passphrase: ")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        keys.add_passphrase(p);
    }
    Ok(keys)
}

/// Observes and plans `dbackup image restore`.
pub fn plan_restore(
    settings: Option<&Settings>,
    src: &RestoreSource,
    target: &Path,
    opts: &RestoreOptions,
    keys: &Keys,
) -> anyhow::Result<(RestorePlan, SystemRecord)> {
    let dir = find_backup(settings, src)?;
    let (system, tables) = read_system(&dir, keys)?;
    let facts = observe::target(target).map_err(|e| CodedError::new(Exit::Failed, e))?;
    let plan = plan::plan_restore(&src.from, dir, &system, &tables, &facts, opts)
        .map_err(|e| CodedError::new(Exit::Failed, e))?;
    Ok((plan, system))
}
