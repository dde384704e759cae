//! Carrying out an external plan, one destination after the other: marker, leftovers, archives streamed from the
//! snapshots into a temporary directory on the drive, read back and compared, `backup.json` and
//! `verification.sha256`, rename into place, `latest`, and only then retention.
//!
//! Nothing is promoted unless every file was read back from the drive and matched; the drive is checked to be the
//! same mounted filesystem before anything is created and again right before the rename. A failure removes the
//! temporary directory when the drive is still there (else the next run does); older backups are never touched.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Local;

use super::layout::{self, FilesystemRecord, ReadBackRecord, SetRecord};
use super::observe::Observed;
use super::plan::{DestinationAction, DestinationPlan, DestinationWorld, ExternalPlan};
use super::record::{open_encryption, set_record, verified_meta};
use super::report::{DestinationReport, DestinationStatus, ExternalReport, say_removed};
use super::retention as drive_retention;
use super::sets::ArchiveTarget;
use crate::archive::incremental::IncrementalBase;
use crate::archive::readback::drop_device_cache;
use crate::archive::sums::SumLine;
use crate::archive::{
    self, ArchiveOptions, EntryKind, FileSink, Progress, Sink, SplitSink, Warning, WrittenFile,
};
use crate::exit::Exit;
use crate::media;
use crate::retention::Removed;
use crate::snapshot;
use crate::stdx;
use crate::stdx::fs::{Dir, flat};
use crate::ui::{self, Ui};

/// At most this many archive warnings are printed per set (all are counted and the first kept in `backup.json`).
const SHOWN_WARNINGS: u64 = 20;

/// Runs the plan on every destination, one after the other. A destination's failure does not stop the others.
pub fn execute(plan: &ExternalPlan, observed: &Observed, ui: &Ui) -> ExternalReport {
    let started = Local::now().fixed_offset();
    for s in &plan.sets {
        for w in &s.warnings {
            ui.warn(format_args!("{}: {w}", s.set));
        }
    }
    for u in &plan.unused {
        if u.refused() {
            ui.error(format_args!("{}: {}", u.name, u.reason));
        } else {
            ui.step(format_args!("{}: not used: {}", u.name, u.reason));
        }
    }
    let mut destinations: Vec<DestinationReport> = Vec::new();
    for d in &plan.destinations {
        // Interrupted: the destinations not started are left for the next run.
        if crate::interrupt::requested().is_some() {
            break;
        }
        destinations.push(run_destination(plan, d, observed, ui));
    }
    for c in &plan.clouds {
        if crate::interrupt::requested().is_some() {
            break;
        }
        let world = observed
            .world
            .cloud(&c.name)
            .expect("planned clouds were observed");
        destinations.push(super::upload::execute(plan, c, world, observed, ui));
    }
    if crate::interrupt::requested().is_none() {
        let root = &observed.world.backup_root;
        for (top, names, what) in [
            (
                super::index_copy::DIR,
                &plan.index_copies_orphaned,
                "local index copies",
            ),
            (
                super::resume::DIR,
                &plan.upload_journals_orphaned,
                "upload journals",
            ),
        ] {
            if names.is_empty() {
                continue;
            }
            for f in super::index_copy::remove_orphaned(root, top, names) {
                ui.warn(format_args!("could not remove the {what} {f}"));
            }
            for n in names {
                ui.step(format_args!(
                    "removed the {what} of destination {} (no such destination in the config)",
                    super::index_copy::shown(n)
                ));
            }
        }
    }
    let exit = destinations
        .iter()
        .fold(plan.sets_exit(), |acc, d| acc.worst(Exit::of_phase(d.exit)));
    ExternalReport {
        exit: exit.code(),
        stamp: plan.stamp.clone(),
        started,
        finished: Local::now().fixed_offset(),
        sets: plan.sets.clone(),
        destinations,
    }
}

fn run_destination(
    plan: &ExternalPlan,
    d: &DestinationPlan,
    observed: &Observed,
    ui: &Ui,
) -> DestinationReport {
    let clock = Instant::now();
    let mut report = DestinationReport::failed(d.name.clone(), d.path.clone());
    if d.action == DestinationAction::Refuse {
        report.status = DestinationStatus::Refused;
        report.error = d.refusal.clone();
        return report;
    }
    let world = observed
        .world
        .drive(&d.name)
        .expect("planned destinations were observed");
    for n in &d.notes {
        ui.step(format_args!("{}: note: {n}", d.name));
    }
    // Shown without -v: the user must know the key is not in this backup.
    for l in d.archives.iter().flat_map(|a| &a.left_out) {
        ui.info(format_args!("{}: note: {}", d.name, l.line(&d.name)));
    }
    let mut temp_created = false;
    match write_backup(plan, d, world, observed, ui, &mut report, &mut temp_created) {
        Ok(()) => {
            report.status = DestinationStatus::Written;
            let warned =
                !report.warnings.is_empty() || report.sets.iter().any(|s| s.warning_count > 0);
            report.exit = if warned { Exit::Warnings } else { Exit::Ok }.code();
            // Retention waits for a run that was not interrupted.
            if crate::interrupt::requested().is_none() {
                prune(plan, d, (world, &observed.world.own_sets), ui, &mut report);
                prune_index_copies(d, world, observed, ui);
            }
        }
        Err(e) => {
            let mut msg = ui::format_error(&e);
            if let Err(gone) = world.info.check_still_present() {
                msg = format!("{gone} (while writing: {msg})");
            }
            if report.backup.is_none() {
                let intact = if report.removed_for_space.is_empty() {
                    "older backups are intact".to_string()
                } else {
                    format!(
                        "the other older backups are intact ({} removed for space first: {})",
                        report.removed_for_space.len(),
                        names(&report.removed_for_space)
                    )
                };
                msg.push_str(&format!(
                    "; nothing was promoted and {intact}{}",
                    discard_temp(d, world, temp_created)
                ));
                if crate::stdx::fs::filled_up(&e) {
                    msg.push_str(crate::stdx::fs::FILLED_UP);
                }
            }
            report.error = Some(msg);
        }
    }
    report.seconds = clock.elapsed().as_secs_f64();
    report
}

/// Removes the temporary directory of a failed run when the drive is still there; says what became of it.
fn discard_temp(d: &DestinationPlan, world: &DestinationWorld, created: bool) -> String {
    if !created {
        return String::new();
    }
    let name = temp_name(d);
    let backups = world
        .info
        .open_root()
        .ok()
        .and_then(|root| layout::open_backups(&root).ok().flatten());
    if let Some(backups) = backups
        && world.info.check_still_present().is_ok()
        && layout::remove_leftover(&backups, &name).is_ok()
    {
        let _ = backups.fsync();
        return format!("; the partial backup {name} was removed");
    }
    format!(
        "; the partial backup {} is removed by the next run",
        d.temp_dir.display()
    )
}

/// The temporary directory's name (`.tmp-<stamp>-<pid>`) in `backups/`.
fn temp_name(d: &DestinationPlan) -> String {
    d.temp_dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The destination's `backups/`, opened through the root detection found: never through a symlink, never on another
/// filesystem.
fn open_backups(world: &DestinationWorld) -> anyhow::Result<Dir> {
    let root = world.info.open_root().map_err(flat)?;
    layout::open_backups(&root).map_err(flat)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is gone; plug the drive in again and rerun",
            root.join(layout::BACKUPS_DIR).display()
        )
    })
}

/// One drive's backup in the order it must happen: room made (leftovers, removals for space), each set written and
/// read back, the system folder, the record (`backup.json`, sums) read back, the promotion, `latest`.
fn write_backup(
    plan: &ExternalPlan,
    d: &DestinationPlan,
    world: &DestinationWorld,
    observed: &Observed,
    ui: &Ui,
    report: &mut DestinationReport,
    temp_created: &mut bool,
) -> anyhow::Result<()> {
    let info = &world.info;
    let started = Local::now().fixed_offset();
    // The encryption first: a passphrase that cannot be read stops the run before anything is written.
    let encrypt =
        open_encryption(d.encryption.as_ref(), world.settings.encryption.as_ref()).map_err(flat)?;
    info.check_still_present()?;
    media::ensure_marker(&world.settings, info, started).map_err(flat)?;
    // From here on everything is reached through this handle: a `backups` that is (or becomes) a symlink or a mount
    // point is refused, and nothing below it is ever opened through a symlink.
    let backups = open_backups(world)?;
    make_room(d, world, &backups, ui, report)?;

    info.check_still_present()?;
    // Private, like the backup root: the archives hold everything, `~/.secrets` included (exFAT ignores modes).
    let temp_name = temp_name(d);
    let temp = backups.create_sub(&temp_name, 0o700).map_err(flat)?;
    *temp_created = true;
    backups.fsync().map_err(flat)?;
    ui.step(format_args!("{}: writing {}", d.name, d.temp_dir.display()));

    let mut read_back = ReadBackRecord {
        methods: Vec::new(),
        device_cache_dropped: d.drop_device_cache.then_some(true),
        note: None,
    };
    let mut sums: Vec<SumLine> = Vec::new();
    let mut depends_on: Vec<String> = Vec::new();
    // Encrypted: a local plaintext copy of each index, the next incremental's base manifest (`index_copy`),
    // promoted with the backup, removed otherwise. Without one the next archive is a full, nothing worse.
    let copies = d.index_copy_dir.as_ref().and_then(|_| {
        let root = &observed.world.backup_root;
        super::index_copy::Pending::start_or_warn(root, &d.name, &plan.stamp, "backup", ui)
    });
    for a in &d.archives {
        crate::interrupt::check()?;
        info.check_still_present()?;
        let base = incremental_base(world, &backups, a, &observed.world.backup_root, ui);
        let (record, deps) = write_set(
            d,
            a,
            &temp,
            (encrypt.as_ref(), copies.as_ref()),
            base.as_ref(),
            observed,
            ui,
            &mut read_back,
        )
        .with_context(|| format!("set {}", a.set))?;
        depends_on.extend(deps);
        sums.extend(record.sum_lines());
        report.sets.push(record);
    }

    // The recovery kit and partition images, written and read back like the archives.
    let system = write_system(
        plan,
        d,
        world,
        observed,
        &temp,
        encrypt.as_ref(),
        ui,
        report,
    )?
    .map(|(rec, lines)| {
        sums.extend(lines);
        rec
    });

    // Every archive and index read back and matched: record what this backup is.
    let filesystem = FilesystemRecord {
        fs_type: info.fs_type.clone(),
        label: info.label.clone(),
        uuid: info.uuid.clone(),
    };
    let mut meta = verified_meta(
        &plan.stamp,
        &plan.host,
        started,
        report,
        &read_back,
        filesystem,
        depends_on,
    );
    meta.system = system;
    report.read_back = Some(read_back);
    super::record::write_record(&temp, &meta, sums, || {
        let _ = drop_cache(d); // a failure was noted with the archives
    })?;

    // Promote: not interrupted, the same drive still there, then one rename makes the backup visible.
    crate::interrupt::check()?;
    info.check_still_present()?;
    promote(plan, d, &backups, &temp_name, temp_created)?;
    report.backup = Some(plan.stamp.clone());
    report.backup_path = Some(d.final_dir.clone());
    if let Some(c) = copies
        && let Err(e) = c.promote()
    {
        ui.warn(format_args!(
            "{}: the local copy of the encrypted indexes could not be kept ({e}): the next backup is full",
            d.name
        ));
    }

    // The backup is good and in place: `latest` not moved is a warning (exit 3), not a failure.
    match layout::write_latest(&backups, &plan.stamp, d.latest.kind) {
        Ok(kind) => report.latest = Some(kind),
        Err(e) => report.warnings.push(format!(
            "{} was not updated to the new backup ({e}): dbackup finds the newest backup without it, but to someone \
             restoring with tar alone it may name an older one; move {} away and the next run writes it",
            d.latest.path.display(),
            d.latest.path.display()
        )),
    }
    Ok(())
}

/// Before anything is written: what interrupted runs left removed, then (space-aware rotation) the one removal of
/// verified backups before the new one is verified, with a warning that the drive was full.
fn make_room(
    d: &DestinationPlan,
    world: &DestinationWorld,
    backups: &Dir,
    ui: &Ui,
    report: &mut DestinationReport,
) -> anyhow::Result<()> {
    let info = &world.info;
    for l in &d.cleanup {
        info.check_still_present()?;
        layout::remove_leftover(backups, &l.name)
            .context("removing what an interrupted run left on the drive")?;
        ui.step(format_args!("{}: removed leftover {}", d.name, l.name));
        report.cleaned.push(l.name.clone());
    }
    // Space-aware rotation: the one removal of verified backups before the new one is verified (the plan showed it;
    // the drive has no room for both).
    for x in &d.remove_for_space {
        crate::interrupt::check()?;
        info.check_still_present()?;
        layout::delete_backup(backups, &x.name)
            .with_context(|| format!("removing old backup {} for space", x.name))?;
        report
            .removed_for_space
            .push(say_removed(ui, &d.name, &x.name, " for space", &x.reasons));
    }
    if !d.remove_for_space.is_empty() {
        backups.fsync().map_err(flat)?;
        // A warning, so that it is heard (notification, exit 3): the drive is too small for what retention keeps.
        report.warnings.push(format!(
            "the drive was full: removed {} for space before writing the new backup ({}; freed {}, keep_at_least \
             {}); a larger drive or a shorter retention avoids this",
            stdx::counted(
                report.removed_for_space.len() as u64,
                "old backup",
                "old backups"
            ),
            names(&report.removed_for_space),
            stdx::bytes(d.freed_for_space_bytes),
            d.keep_at_least
        ));
    }
    Ok(())
}

/// The `system/` folder (recovery kit and partition images) when the plan asks for one, written and read back in
/// `temp` like the archives: its record and its sums lines. What cannot be imaged becomes a warning.
#[allow(clippy::too_many_arguments)]
fn write_system(
    plan: &ExternalPlan,
    d: &DestinationPlan,
    world: &DestinationWorld,
    observed: &Observed,
    temp: &Dir,
    encrypt: Option<&crate::archive::EncryptTo>,
    ui: &Ui,
    report: &mut DestinationReport,
) -> anyhow::Result<Option<(crate::image::SystemRecord, Vec<SumLine>)>> {
    // What the plan (and its dry run) gave this destination.
    let (Some(sp), Some(input)) = (&d.system, &observed.world.system) else {
        return Ok(None);
    };
    for r in &sp.refused {
        report
            .warnings
            .push(format!("not imaged: {}: {}", r.device, r.reason));
    }
    let ctx = crate::image::exec::DocContext {
        stamp: Some(plan.stamp.clone()),
        destination: Some(d.name.clone()),
        sets: input.sets.clone(),
        device_cache: d.device.clone().filter(|_| d.drop_device_cache),
    };
    world.info.check_still_present()?;
    let written = crate::image::exec::write_system(sp, input.kit.as_ref(), temp, encrypt, &ctx, ui)
        .context("the system folder (recovery kit and partition images)")?;
    Ok(Some(written))
}

/// One rename makes the backup visible, then the drive is checked to hold it under its new name.
fn promote(
    plan: &ExternalPlan,
    d: &DestinationPlan,
    backups: &Dir,
    temp_name: &str,
    temp_created: &mut bool,
) -> anyhow::Result<()> {
    backups.rename(temp_name, &plan.stamp, true).map_err(flat)?;
    *temp_created = false;
    backups.fsync().map_err(flat)?;
    // The drive must hold it under its new name: a filesystem driver that loses a directory's contents when it is
    // renamed (Debian's fusefat 0.1a does) would otherwise leave "verified and in place" naming an empty directory.
    let promoted = backups
        .sub(&plan.stamp)
        .map_err(flat)
        .and_then(|dir| layout::read_metadata_in(&dir).map_err(flat));
    match promoted {
        Ok(m) if m.stamp == plan.stamp => Ok(()),
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(_) => format!("its {} names another backup", layout::METADATA_FILE),
            };
            let cleaned = match layout::delete_backup(backups, &plan.stamp) {
                Ok(()) => "the empty directory was removed".to_string(),
                Err(e) => format!("remove {} by hand ({e})", d.final_dir.display()),
            };
            anyhow::bail!(
                "the drive lost backup {} when it was renamed into place ({why}): its filesystem driver does not keep \
                 a directory's contents across a rename; {cleaned}; use another drive or filesystem driver",
                plan.stamp
            );
        }
    }
}

/// Drops the block device's cache under a FUSE filesystem; false when that was not possible.
fn drop_cache(d: &DestinationPlan) -> Result<(), String> {
    match (&d.device, d.drop_device_cache) {
        (Some(dev), true) => drop_device_cache(dev).map_err(|e| {
            format!(
                "could not drop the cache of {} ({e}): the read-back may have been answered from memory",
                dev.display()
            )
        }),
        _ => Ok(()),
    }
}

/// The base an incremental archive is written against, when the plan chose one and it can be trusted: its index
/// read whole and matched against its size and sha256 in `backup.json` first (else a full is written, saying why),
/// reopened for the writer through the drive's directory handles; its local snapshot when it still exists.
fn incremental_base(
    world: &DestinationWorld,
    backups: &Dir,
    a: &ArchiveTarget,
    backup_root: &std::path::Path,
    ui: &Ui,
) -> Option<IncrementalBase> {
    let base = a.choice.base.as_ref()?;
    match super::observe::open_base(
        &world.listing,
        backups,
        &a.set,
        &a.choice,
        backup_root,
        &world.settings.name,
    ) {
        Ok(b) => Some(b),
        Err(e) => {
            ui.warn(format_args!(
                "{}: {}: writing a full archive: the base {base} cannot be used: {}",
                world.settings.name,
                a.set,
                ui::format_error(&e)
            ));
            None
        }
    }
}

/// Writes one set's archive and index into the temporary directory, then reads both back and compares. Returns
/// the set's record and the backups its manifest points into.
#[allow(clippy::too_many_arguments)]
fn write_set(
    d: &DestinationPlan,
    a: &ArchiveTarget,
    temp: &Dir,
    (encrypt, copies): (
        Option<&crate::archive::EncryptTo>,
        Option<&super::index_copy::Pending>,
    ),
    base: Option<&IncrementalBase>,
    observed: &Observed,
    ui: &Ui,
    read_back: &mut ReadBackRecord,
) -> anyhow::Result<(SetRecord, Vec<String>)> {
    let scan = &observed.scans[&a.set];
    let sink = |name: &str, part: Option<u64>| -> anyhow::Result<Box<dyn Sink>> {
        Ok(match part {
            Some(p) => Box::new(
                SplitSink::new_in(temp.clone(), name, p)
                    .with_context(|| format!("cannot write {name} in {}", d.temp_dir.display()))?,
            ),
            None => Box::new(
                FileSink::create_in(temp, name)
                    .with_context(|| format!("cannot create {}", temp.join(name).display()))?,
            ),
        })
    };
    let archive_sink = sink(&a.archive, a.part_bytes)?;
    let index_sink = sink(&a.index, a.index_part_bytes)?;

    let label = format!("{}: {}", d.name, a.set);
    let mut progress = WriteProgress::new(ui, &label, scan.estimate.file_bytes);
    let t = Instant::now();
    let copy_sink = || super::index_copy::Pending::sink_of(copies, &a.set);
    let summary = archive::write_archive(
        scan,
        archive_sink,
        index_sink,
        &ArchiveOptions {
            stage: encrypt.map(|e| e as &dyn archive::Stage),
            base,
            index_copy: copies.map(|_| &copy_sink as &dyn Fn() -> _),
            leave_out: &a.leave_out(),
        },
        &mut progress,
    );
    progress.finish();
    let summary = summary.map_err(flat)?;
    let write_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    if let Err(note) = drop_cache(d) {
        read_back.device_cache_dropped = Some(false);
        ui.step(format_args!("{label}: {note}"));
        read_back.note = Some(note);
    }
    let files: Vec<WrittenFile> = summary
        .archive_files
        .iter()
        .chain(&summary.index_files)
        .cloned()
        .collect();
    let read_back_total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut line = ui.progress.then(|| crate::progress::Line::new(&label));
    let mut read = 0u64;
    let methods = archive::read_back_in_with(temp, &files, &mut |n| {
        read += n;
        if let Some(l) = &mut line {
            l.update(|elapsed| {
                crate::progress::byte_parts("read back", read, read_back_total, elapsed)
            });
        }
    });
    if let Some(l) = line {
        l.finish();
    }
    let methods = methods.map_err(flat)?;
    let read_back_seconds = t.elapsed().as_secs_f64();
    for m in methods {
        if !read_back.methods.contains(&m) {
            read_back.methods.push(m);
        }
    }

    let meta = observed.snapshot_meta.get(&a.set);
    let rec = set_record(
        a,
        meta,
        &summary,
        encrypt.map(|e| e.record()),
        (write_seconds, read_back_seconds),
        base,
    );
    if let (Some(c), Some(copy), [index]) = (copies, &summary.index_copy, rec.index.as_slice())
        && let Err(e) = c.record(&a.set, index, copy)
    {
        ui.warn(format_args!(
            "{label}: the local copy of its index could not be recorded ({e}): its next backup is full"
        ));
    }
    ui.info(set_line(&d.name, &rec));
    Ok((rec, summary.depends_on))
}

/// `T9: data: data-2025-04-01-031500 -> data.tar: 1,234 files, 1.2 GiB; written in 3.2s (380.1 MiB/s), read back in
/// 1.1s (1.1 GiB/s): verified`
pub fn set_line(destination: &str, r: &SetRecord) -> String {
    let rate = |secs: f64| {
        if secs > 0.0 {
            format!("{}/s", stdx::bytes((r.tar_bytes as f64 / secs) as u64))
        } else {
            "-".into()
        }
    };
    let name = match r.archive.as_slice() {
        [one] => one.name.clone(),
        parts => format!(
            "{} ({} parts)",
            parts
                .first()
                .map(|p| p.name.replace(".part000", ".part*"))
                .unwrap_or_default(),
            parts.len()
        ),
    };
    let mut line = format!(
        "{destination}: {}: {} -> {name}: {}, {}; written in {} ({}), read back in {} ({}): verified",
        r.set,
        r.snapshot,
        stdx::counted(r.files, "file", "files"),
        stdx::bytes(r.tar_bytes),
        stdx::duration(Duration::from_secs_f64(r.write_seconds)),
        rate(r.write_seconds),
        stdx::duration(Duration::from_secs_f64(r.read_back_seconds)),
        rate(r.read_back_seconds),
    );
    if r.warning_count > 0 {
        line.push_str(&format!(
            " ({})",
            stdx::counted(r.warning_count, "warning", "warnings")
        ));
    }
    line
}

/// Applies retention to the backups now on the drive. Failures become warnings (exit 3).
fn prune(
    plan: &ExternalPlan,
    d: &DestinationPlan,
    (world, own_sets): (&DestinationWorld, &[drive_retention::OwnSet]),
    ui: &Ui,
    report: &mut DestinationReport,
) {
    let warn = |report: &mut DestinationReport, msg: String| {
        report.warnings.push(msg);
        report.exit = Exit::Warnings.code().max(report.exit);
    };
    let now = snapshot::parse_stamp(&plan.stamp).expect("planned stamps parse");
    let listed = open_backups(world).and_then(|b| {
        let l = layout::list_in(&b).map_err(flat)?;
        Ok((b, l))
    });
    let (backups, listing) = match listed {
        Ok(x) => x,
        Err(e) => {
            return warn(
                report,
                format!("retention skipped: {}", crate::ui::format_error(&e)),
            );
        }
    };
    let infos = super::plan::drive_infos(&listing, &world.found_damaged);
    let owner = drive_retention::Owner::Sets(own_sets);
    let how = format!(
        "rm -r {}/<stamp>",
        world.info.resolved.join(layout::BACKUPS_DIR).display()
    );
    // A note, not a warning: a drive two configs share on purpose would otherwise end every run with exit 3.
    if let Some(w) = drive_retention::foreign_note(&infos, owner, ("drive", &how)) {
        ui.info(format_args!("{}: retention: {w}", d.name));
    }
    for x in drive_retention::decide_own(&infos, owner, &world.settings.retention, now)
        .into_iter()
        .filter(|x| !x.keep && x.name != plan.stamp)
    {
        if let Err(e) = world.info.check_still_present() {
            return warn(report, format!("retention stopped: {e}"));
        }
        match layout::delete_backup(&backups, &x.name) {
            Ok(()) => report
                .removed
                .push(say_removed(ui, &d.name, &x.name, "", &x.reasons)),
            Err(e) => warn(
                report,
                format!("could not remove old backup {}: {e}", x.name),
            ),
        }
    }
}

/// Removes the local index copies of this destination that can no longer be a base (`index_copy::stale`), once the
/// new backup is in place and retention has run; a failure is said, and changes nothing else.
fn prune_index_copies(d: &DestinationPlan, world: &DestinationWorld, observed: &Observed, ui: &Ui) {
    let root = &observed.world.backup_root;
    let own = drive_retention::OwnSet::names(&observed.world.own_sets);
    let copies = super::index_copy::list(root, &d.name, &own);
    if copies.is_empty() {
        return;
    }
    let Ok(listing) = open_backups(world).and_then(|b| layout::list_in(&b).map_err(flat)) else {
        return;
    };
    let stale = super::index_copy::stale(&copies, &listing, &[]);
    for f in super::index_copy::remove(root, &d.name, &stale) {
        ui.warn(format_args!(
            "{}: could not remove the local index copy {f}",
            d.name
        ));
    }
    for c in &stale {
        ui.step(format_args!(
            "{}: removed local index copy {} (no longer a base)",
            d.name,
            super::index_copy::shown(c)
        ));
    }
}

/// One line per destination for people: `T9: backup 2025-04-02-101500 verified and in place at ...; LATEST updated;
/// removed 2 old backups`.
pub fn summary_line(r: &DestinationReport) -> String {
    match (r.status, &r.backup_path) {
        (DestinationStatus::Written, Some(path)) => {
            let mut line = format!(
                "{}: backup {} verified and in place at {}",
                r.name,
                r.backup.as_deref().unwrap_or(""),
                path.display()
            );
            if let Some(k) = r.latest {
                line.push_str(&format!("; {} updated", k.file_name()));
            }
            if !r.cleaned.is_empty() {
                line.push_str(&format!(
                    "; removed {} left by an interrupted run",
                    stdx::counted(r.cleaned.len() as u64, "leftover", "leftovers")
                ));
            }
            if !r.removed.is_empty() {
                line.push_str(&format!(
                    "; removed {}",
                    stdx::counted(r.removed.len() as u64, "old backup", "old backups")
                ));
            }
            for w in &r.warnings {
                line.push_str(&format!("; warning: {w}"));
            }
            line
        }
        (DestinationStatus::Refused, _) => {
            format!("{}: refused: {}", r.name, r.error.as_deref().unwrap_or(""))
        }
        _ => format!(
            "{}: FAILED after {}: {}",
            r.name,
            stdx::duration(Duration::from_secs_f64(r.seconds)),
            r.error.as_deref().unwrap_or("")
        ),
    }
}

/// The names of removed backups, for a line.
fn names(removed: &[Removed]) -> String {
    removed
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Progress of one archive: a line with bytes written of the total, ETA, bar and rate on a terminal
/// ([`crate::progress`]), warnings on stderr (the first few).
struct WriteProgress<'a> {
    ui: &'a Ui,
    label: String,
    line: Option<crate::progress::Line>,
    total: u64,
    done: u64,
    warnings: u64,
}

impl<'a> WriteProgress<'a> {
    fn new(ui: &'a Ui, label: &str, total: u64) -> WriteProgress<'a> {
        WriteProgress {
            ui,
            label: label.to_string(),
            line: ui.progress.then(|| crate::progress::Line::new(label)),
            total,
            done: 0,
            warnings: 0,
        }
    }

    fn finish(&mut self) {
        if let Some(l) = self.line.take() {
            l.finish();
        }
        if self.warnings > SHOWN_WARNINGS {
            self.ui.warn(format_args!(
                "{}: ... and {} more; all are counted in {}",
                self.label,
                self.warnings - SHOWN_WARNINGS,
                layout::METADATA_FILE
            ));
        }
    }
}

impl Progress for WriteProgress<'_> {
    fn entry(&mut self, _path: &[u8], _kind: EntryKind, _size: u64) {}

    fn bytes(&mut self, n: u64) {
        self.done += n;
        let (done, total) = (self.done, self.total.max(self.done));
        if let Some(l) = &mut self.line {
            l.update(|elapsed| crate::progress::byte_parts("written", done, total, elapsed));
        }
    }

    fn warning(&mut self, w: &Warning) {
        self.warnings += 1;
        if self.warnings > SHOWN_WARNINGS {
            return;
        }
        let msg = format!("{}: {w}", self.label);
        match &self.line {
            Some(b) => b.suspend(|| self.ui.warn(&msg)),
            None => self.ui.warn(&msg),
        }
    }
}
