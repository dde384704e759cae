//! Carrying out the plan of one cloud destination ([`super::cloud::CloudPlan`]): each set streamed from its snapshot
//! into objects, listed and checked, `verification.sha256`, then `backup.json` (the promotion) and `backups/LATEST`;
//! an interrupted upload resumed ([`super::resume`]) or restarted, index copies kept, objects locked, and only then
//! the bucket's retention ([`super::bucket`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Local, Utc};

use super::bucket::{BACKUPS, UnfinishedStamp};
use super::cloud::{CloudPlan, CloudWorld, incremental_base};
use super::layout::{self, BackupMeta, FilesystemRecord, ReadBackRecord};
use super::observe::Observed;
use super::plan::ExternalPlan;
use super::report::{DestinationReport, DestinationStatus, say_removed};
use super::resume::{self, Resumer};
use super::sets::ArchiveTarget;
use super::upload_marker::{self, UploadMarker};
use crate::archive::sums::{SumLine, write_sums};
use crate::archive::{self, ArchiveOptions, NoProgress};
use crate::cloud::sink::CloudSink;
use crate::cloud::{ObjectClass, Store};
use crate::exit::Exit;
use crate::ui::Ui;

/// Uploads the backup to one cloud destination. A failure leaves `backup.json` unwritten: nothing is listed, and
/// the next run resumes what was uploaded ([`super::resume`]) or removes it.
pub fn execute(
    plan: &ExternalPlan,
    p: &CloudPlan,
    world: &CloudWorld,
    observed: &Observed,
    ui: &Ui,
) -> DestinationReport {
    let clock = Instant::now();
    let mut report = DestinationReport::failed(p.name.clone(), p.place.clone().into());
    match (&p.refusal, &world.store) {
        (Some(r), _) => report.error = Some(r.clone()),
        (None, None) => report.error = Some("the destination was not opened".into()),
        (None, Some(store)) => {
            let u = Upload {
                plan,
                p,
                world,
                store,
                observed,
                ui,
            };
            match upload_or_restart(&u, &mut report) {
                Ok(()) => {
                    report.status = DestinationStatus::Written;
                    apply_retention((p, world), store, &mut report, ui);
                    let warned = report.sets.iter().any(|s| s.warning_count > 0)
                        || !report.warnings.is_empty();
                    report.exit = if warned { Exit::Warnings } else { Exit::Ok }.code();
                }
                Err(e) if e.downcast_ref::<PromotionUnknown>().is_some() => {
                    report.error = Some(crate::ui::format_error(&e));
                }
                Err(e) => {
                    report.error = Some(format!(
                        "{}; nothing was promoted (no backup.json), older backups are intact, and the next run \
                     resumes what was uploaded (or removes it when it cannot)",
                        crate::ui::format_error(&e)
                    ))
                }
            }
        }
    }
    // The whole run of the destination: looking at it (a listing may have waited on a silent server) and this.
    report.seconds = (world.looked + clock.elapsed()).as_secs_f64();
    report
}

/// Carries out the plan's retention after a verified upload: each backup it does not keep deleted
/// (`backup.json` first). One that could only partly be deleted is a warning naming it, and so are, in one
/// warning, the backups of another config that retention leaves alone.
fn apply_retention(
    (p, world): (&CloudPlan, &CloudWorld),
    store: &Store,
    report: &mut DestinationReport,
    ui: &crate::ui::Ui,
) {
    let infos: Vec<super::retention::BackupInfo> = (world.chains.listing.backups.iter())
        .map(|b| super::retention::BackupInfo::new(&b.name, b.time, b.meta.as_ref(), false))
        .collect();
    let how = format!("every object under backups/<stamp>/ in {}", p.place);
    let owner = super::retention::Owner::Sets(&world.own_sets);
    if !p.decisions.is_empty()
        && let Some(w) = super::retention::foreign_note(&infos, owner, ("bucket", &how))
    {
        // A note, not a warning: a bucket two configs share on purpose would otherwise end every run with exit 3.
        ui.info(format_args!("{}: retention: {w}", p.name));
    }
    for d in p.decisions.iter().filter(|d| !d.keep) {
        if crate::interrupt::requested().is_some() {
            return;
        }
        let r = super::bucket::remove(store, d);
        match &r.error {
            None => report
                .removed
                .push(say_removed(ui, &p.name, &d.name, "", &d.reasons)),
            Some(e) => {
                let msg = format!("old backup {} could only partly be deleted: {e}", d.name);
                ui.warn(format_args!("{}: {msg}", p.name));
                report.warnings.push(msg);
            }
        }
    }
    for d in p.decisions.iter().filter(|d| d.keep) {
        if let Some(r) = d.reasons.iter().find(|r| r.starts_with("kept: locked")) {
            ui.step(format_args!("{}: {} {r}", p.name, d.name));
        }
    }
}

/// What one upload works with, passed once to [`upload`] and each of its steps.
struct Upload<'a> {
    plan: &'a ExternalPlan,
    p: &'a CloudPlan,
    world: &'a CloudWorld,
    store: &'a Arc<Store>,
    observed: &'a Observed,
    ui: &'a Ui,
}

/// How an upload encrypts: to recipients, each archive part an age stream of its own (so an upload can resume),
/// the sinks encrypting (`parted`); to a passphrase, one age stream, the writer's stage.
struct Encrypting {
    encrypt: Option<Arc<crate::archive::EncryptTo>>,
    parted: Option<Arc<crate::archive::EncryptTo>>,
}

impl Encrypting {
    /// The writer's stage: the passphrase's one age stream, when the sinks do not encrypt.
    fn stage(&self) -> Option<&dyn archive::Stage> {
        self.encrypt
            .as_deref()
            .filter(|_| self.parted.is_none())
            .map(|e| e as &dyn archive::Stage)
    }
}

/// [`upload`]; when a resumed upload stops (a regenerated part differs from the one stored), its stamp and
/// journal are removed and the upload starts again as new under the run's stamp: never a mixed archive.
fn upload_or_restart(u: &Upload, report: &mut DestinationReport) -> anyhow::Result<()> {
    let err = match upload(u, report) {
        Err(e) if e.downcast_ref::<resume::Stopped>().is_some() => e,
        done => return done,
    };
    let p = u.p;
    u.ui.warn(format_args!(
        "{}: {}; uploading a new backup instead",
        p.name,
        crate::ui::format_error(&err)
    ));
    resume::remove(&u.observed.world.backup_root, &p.name, p.stamp());
    let cleaned = std::mem::take(&mut report.cleaned);
    *report = DestinationReport::failed(p.name.clone(), p.place.clone().into());
    report.cleaned = cleaned;
    report.warnings.push(crate::ui::format_error(&err));
    let q = restarted(p, &u.plan.stamp);
    upload(&Upload { p: &q, ..*u }, report)
}

/// One upload in the order it must happen: what a killed run left removed, the archives, every object listed,
/// the locks, then the sums, the promotion (`backup.json`) and LATEST.
fn upload(u: &Upload, report: &mut DestinationReport) -> anyhow::Result<()> {
    let (p, world, store, ui) = (u.p, u.world, u.store, u.ui);
    let started = Local::now().fixed_offset();
    let encrypt =
        super::record::open_encryption(p.encryption.as_ref(), world.settings.encryption.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(Arc::new);
    let enc = Encrypting {
        parted: encrypt
            .clone()
            .filter(|_| resume::parts_encrypted(p.encryption.as_ref())),
        encrypt,
    };
    mark_going(u)?;
    clean_killed_run(u, report)?;
    let stamp = p.stamp().to_string();
    let backup_root = &u.observed.world.backup_root;
    let own = super::retention::OwnSet::names(&u.observed.world.own_sets);
    let resumer = start_journal(p, world, (backup_root, &own)).unwrap_or_else(|e| {
        ui.warn(format_args!(
            "{}: the journal of this upload cannot be written ({e}): if interrupted, it starts over",
            p.name
        ));
        None
    });

    let mut sums: Vec<SumLine> = Vec::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut depends_on: Vec<String> = Vec::new();
    let copies = start_index_copies(p, backup_root, &stamp, ui);
    for a in &p.archives {
        crate::interrupt::check()?;
        let (rec, deps) = upload_set(u, a, &enc, resumer.as_ref(), copies.as_ref())?;
        depends_on.extend(deps);
        sums.extend(rec.sum_lines());
        expected.extend(rec.files().map(|f| (f.name.clone(), f.bytes)));
        report.sets.push(rec);
    }

    check_listed(store, p, &expected)?;
    check_bases(store, &depends_on)?;
    if let Some(until) = p.locked_until {
        let reused = resumer
            .as_ref()
            .map(resume::Resumer::skipped_names)
            .unwrap_or_default();
        lock_after_upload(store, p, &expected, &reused, until, report, ui);
    }
    let read_back = ReadBackRecord {
        methods: Vec::new(),
        device_cache_dropped: None,
        note: Some(format!(
            "uploaded: every part's CRC32C checked by the server, every object listed with its size ({} objects); \
             `restore --verify --source cloud:{}` downloads and checks everything",
            expected.len(),
            p.name
        )),
    };
    let filesystem = FilesystemRecord {
        fs_type: world.settings.kind.word().to_string(),
        label: Some(world.settings.bucket.clone()),
        uuid: None,
    };
    let meta = super::record::verified_meta(
        &stamp,
        &u.plan.host,
        started,
        report,
        &read_back,
        filesystem,
        depends_on,
    );
    report.read_back = Some(read_back);
    promote(u, &meta, sums, resumer.as_ref(), report)?;
    finish_index_copies(copies, p, backup_root, ui);
    Ok(())
}

/// The upload's marker ([`super::upload_marker`]), first of all: every other run, of this config or another, on
/// this machine or another, leaves the stamp alone while this process lives and writes there.
fn mark_going(u: &Upload) -> anyhow::Result<()> {
    let sets: Vec<&str> = u.p.archives.iter().map(|a| a.set.as_str()).collect();
    let mut bases: Vec<String> = (u.p.archives.iter())
        .filter_map(|a| a.choice.base.clone())
        .collect();
    bases.sort();
    bases.dedup();
    let m = UploadMarker::new(
        &u.plan.host,
        (&u.observed.world.own_sets, &sets, &bases),
        Local::now().fixed_offset(),
    );
    let key = format!("{}{}", u.p.dir, upload_marker::FILE);
    u.store.put(&key, &m.bytes(), ObjectClass::Metadata)?;
    Ok(())
}

/// What a killed run left: its multipart uploads aborted, its objects (a stamp never promoted) deleted.
fn clean_killed_run(u: &Upload, report: &mut DestinationReport) -> anyhow::Result<()> {
    let (p, store, ui) = (u.p, u.store, u.ui);
    for up in &u.world.uploads {
        if p.abort_uploads.contains(&crate::stdx::show_str(&up.key)) {
            store.abort_upload(up)?;
            ui.step(format_args!(
                "{}: aborted the unfinished upload of {}",
                p.name,
                crate::stdx::show_str(&up.key)
            ));
            report.cleaned.push(up.key.clone());
        }
    }
    for c in &p.cleanup_stamps {
        let dir = format!("{BACKUPS}{}/", c.stamp);
        for o in store.list(&dir)? {
            store.delete(&o.key)?;
        }
        ui.step(format_args!(
            "{}: removed the unfinished upload {dir}",
            p.name
        ));
        report.cleaned.push(dir);
    }
    Ok(())
}

/// One set's archive and index streamed to the bucket (resumed where the journal says, encrypted as `enc` says):
/// its record and the backups its manifest points into.
fn upload_set(
    u: &Upload,
    a: &ArchiveTarget,
    enc: &Encrypting,
    resumer: Option<&resume::Resumer>,
    copies: Option<&super::index_copy::Pending>,
) -> anyhow::Result<(layout::SetRecord, Vec<String>)> {
    let (p, store, ui) = (u.p, u.store, u.ui);
    let parted = &enc.parted;
    let scan = &u.observed.scans[&a.set];
    let class = |c| c;
    let mut archive_sink = CloudSink::new(
        store.clone(),
        &p.dir,
        resume::object_base(&a.archive, parted.is_some()),
        a.part_bytes,
        class(ObjectClass::Archive),
        p.locked_until,
    );
    if let Some(r) = resumer {
        archive_sink = archive_sink.with_log(r.log(&a.set));
    }
    let mut index_sink = CloudSink::new(
        store.clone(),
        &p.dir,
        &a.index,
        None,
        ObjectClass::Metadata,
        p.locked_until,
    );
    if let Some(e) = parted {
        archive_sink = archive_sink.encrypt_parts(e.clone());
        index_sink = index_sink.encrypt_parts(e.clone());
    }
    let heads = archive_sink.heads();
    // Encrypting in the sink: it gets a thread of its own, as the writer gives a stage's sink.
    let archive_sink: Box<dyn archive::Sink> = match parted {
        Some(_) => Box::new(crate::archive::sink::ThreadedSink::spawn(Box::new(
            archive_sink,
        ))?),
        None => Box::new(archive_sink),
    };
    let index_sink = Box::new(index_sink);
    ui.step(format_args!(
        "{}: {}: uploading {} to {}{}",
        p.name, a.set, a.snapshot, p.dir, a.archive
    ));
    for l in &a.left_out {
        ui.info(format_args!("{}: note: {}", p.name, l.line(&p.name)));
    }
    let base = upload_base(a, u.world, &u.observed.world.backup_root);
    let copy_sink = || super::index_copy::Pending::sink_of(copies, &a.set);
    let t = Instant::now();
    let mut summary = archive::write_archive(
        scan,
        archive_sink,
        index_sink,
        &ArchiveOptions {
            stage: enc.stage(),
            base: base.as_ref(),
            index_copy: copies.map(|_| &copy_sink as &dyn Fn() -> _),
            leave_out: &a.leave_out(),
        },
        &mut NoProgress,
    )
    .map_err(|e| match resumer.and_then(|r| r.differs()) {
        Some(part) => anyhow::Error::new(resume::Stopped {
            stamp: p.stamp().to_string(),
            part: format!("{}{part}", p.dir),
        }),
        None => anyhow::anyhow!("set {}: {e}", a.set),
    })?;
    let write_seconds = t.elapsed().as_secs_f64();
    if parted.is_some() {
        // A hash of the plaintext stays off the bucket (it is in the encrypted index).
        summary.tar_sha256 = None;
    }
    let meta = u.observed.snapshot_meta.get(&a.set);
    let mut rec = super::record::set_record(
        a,
        meta,
        &summary,
        enc.encrypt.as_ref().map(|e| e.record()),
        (write_seconds, 0.0),
        base.as_ref(),
    );
    record_index_copy(copies, p, &a.set, &rec, &summary, ui);
    rec.part_plain_bytes = a.part_bytes.filter(|_| parted.is_some());
    record_age_heads(&mut rec, &heads);
    ui.info(format_args!(
        "{}: {}: {} -> {}{}: {} files, {} uploaded in {:.1}s",
        p.name,
        a.set,
        a.snapshot,
        p.dir,
        a.archive,
        rec.files,
        crate::stdx::bytes(rec.files().map(|f| f.bytes).sum()),
        write_seconds
    ));
    Ok((rec, summary.depends_on))
}

/// Every object listed, its size the one written (each part's CRC32C was checked by the server on the way).
fn check_listed(
    store: &Store,
    p: &CloudPlan,
    expected: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let listed: BTreeMap<String, u64> = store
        .list(&p.dir)?
        .into_iter()
        .map(|o| {
            let name = o.key.strip_prefix(&p.dir).unwrap_or(&o.key).to_string();
            (name, o.size)
        })
        .collect();
    for (name, bytes) in expected {
        match listed.get(name) {
            Some(b) if b == bytes => {}
            Some(b) => anyhow::bail!(
                "{}{}: the bucket lists {b} bytes, {bytes} were uploaded",
                p.dir,
                crate::stdx::show_str(name)
            ),
            None => anyhow::bail!(
                "{}{}: uploaded, but the bucket does not list it",
                p.dir,
                crate::stdx::show_str(name)
            ),
        }
    }
    Ok(())
}

/// Each backup the upload's incrementals build on still holds its `backup.json` (one GET each, a small file: a read,
/// as every other request on a backup this run does not write): another run's
/// retention that judged before this upload began, or a hand, may have removed one while it was going, and an
/// incremental without its base is no backup.
fn check_bases(store: &Store, depends_on: &[String]) -> anyhow::Result<()> {
    let bases: BTreeSet<&String> = depends_on.iter().collect();
    for b in bases {
        let key = format!("{BACKUPS}{b}/{}", layout::METADATA_FILE);
        let gone = match store.get(&key) {
            Ok(_) => false,
            Err(e) if e.failure() == crate::cloud::error::Failure::NotFound => true,
            Err(e) => return Err(e.into()),
        };
        if gone {
            anyhow::bail!(
                "the backup {} this upload builds on was removed while it was going (its {} is gone): its \
                 incrementals cannot be restored without it; the next run builds on what the bucket holds",
                crate::stdx::show_str(b),
                layout::METADATA_FILE
            );
        }
    }
    Ok(())
}

/// The sums, then the promotion (`backup.json` makes the stamp a backup; not after an interruption), then LATEST (a
/// warning when it cannot be written: the backup is in place).
fn promote(
    u: &Upload,
    meta: &BackupMeta,
    mut sums: Vec<SumLine>,
    resumer: Option<&resume::Resumer>,
    report: &mut DestinationReport,
) -> anyhow::Result<()> {
    let (p, store) = (u.p, u.store);
    let meta_bytes = layout::metadata_bytes(meta);
    sums.push(SumLine {
        sha256: archive::Digest::of_bytes(&meta_bytes),
        name: layout::METADATA_FILE.as_bytes().to_vec(),
    });
    let mut sums_bytes = Vec::new();
    write_sums(&mut sums_bytes, &sums)?;
    let lock = p.locked_until;
    let put = |key: String, bytes: &[u8]| -> anyhow::Result<()> {
        match lock {
            Some(until) => store
                .put_locked(&key, bytes, ObjectClass::Metadata, until)
                .map(|_| ()),
            None => store.put(&key, bytes, ObjectClass::Metadata),
        }
        .map_err(anyhow::Error::from)
    };
    put(format!("{}{}", p.dir, layout::SUMS_FILE), &sums_bytes)?;

    // The promotion: `backup.json` makes the stamp a backup. Not after an interruption.
    crate::interrupt::check()?;
    let meta_key = format!("{}{}", p.dir, layout::METADATA_FILE);
    if let Err(e) = put(meta_key.clone(), &meta_bytes) {
        confirm_promotion(store, &meta_key, &meta_bytes, e)?;
        u.ui.step(format_args!(
            "{}: the answer to writing {meta_key} was lost, but the server holds it as written: promoted",
            p.name
        ));
    }
    report.backup = Some(meta.stamp.clone());
    // The marker is done with: a backup's objects are the layout's (one left behind is harmless: a backup is
    // judged by its backup.json, and retention removes every object under its stamp).
    let marker = format!("{}{}", p.dir, upload_marker::FILE);
    if let Err(e) = store.delete(&marker) {
        u.ui.step(format_args!("{}: {marker} stays: {e}", p.name));
    }
    if let Some(r) = resumer {
        resume_finished(r, p, u.ui, report);
    }
    report.backup_path = Some(format!("{} {}", p.place, p.dir).into());
    // LATEST is replaced on every run: never locked. The backup is promoted and verified: LATEST not written is a
    // warning (exit 3), as a drive's `latest` that cannot be moved is, not a failure. It never moves back: a newer
    // backup another run promoted meanwhile (the same config on another machine) keeps it.
    let latest = format!("{BACKUPS}{}", layout::LATEST_FILE);
    if let Some(newer) = super::bucket::newer_latest(store, &meta.stamp) {
        u.ui.step(format_args!(
            "{}: {latest} left naming {newer}, a newer backup another run promoted meanwhile",
            p.name
        ));
        return Ok(());
    }
    match store.put(
        &latest,
        format!("{}\n", meta.stamp).as_bytes(),
        ObjectClass::Metadata,
    ) {
        Ok(()) => report.latest = Some(layout::LatestKind::File),
        Err(e) => report.warnings.push(format!(
            "{latest} was not updated to the new backup ({e}): dbackup finds the newest backup without it, but to \
             someone restoring with another S3 client it may name an older one; the next run writes it"
        )),
    }
    Ok(())
}

/// The PUT of `backup.json` failed, yet the server may have stored it (the answer lost on the way back): read back,
/// it is the promotion when it holds exactly `bytes` (`Ok`); not there (or other bytes), the PUT's error;
/// unreadable, [`PromotionUnknown`].
fn confirm_promotion(
    store: &Store,
    key: &str,
    bytes: &[u8],
    put: anyhow::Error,
) -> anyhow::Result<()> {
    match store.get(key) {
        Ok(held) if held == bytes => Ok(()),
        Ok(_) => Err(put),
        Err(e) if e.failure() == crate::cloud::error::Failure::NotFound => Err(put),
        // The read's error says what the write's did (the same server, a moment later): not repeated.
        Err(_) => Err(PromotionUnknown {
            key: key.to_string(),
            put: crate::ui::format_error(&put),
        }
        .into()),
    }
}

/// Writing `backup.json` failed and reading it back failed too: the server may hold it or not.
#[derive(Debug, thiserror::Error)]
#[error(
    "{put}; reading {key} back failed too: whether the server stored backup.json is unknown; older backups are \
     intact, and the next run finds this backup if it did, or resumes the upload if not"
)]
pub(crate) struct PromotionUnknown {
    key: String,
    put: String,
}

/// Each archive part's age head (header and nonce) in its `backup.json` record: a one-file restore then reads only
/// the chunks holding the file. Object names come from the sink, so each record finds its own.
fn record_age_heads(rec: &mut layout::SetRecord, heads: &crate::cloud::sink::AgeHeads) {
    for f in &mut rec.archive {
        f.age_head = heads
            .get(&f.name)
            .as_deref()
            .and_then(archive::crypt::encode_head);
    }
}

/// With Object Lock (`object_lock_days`), before the promotion: the retention of each object a multipart upload
/// wrote (more than one [`crate::cloud::store::PART_SIZE`]: its lock headers went with CreateMultipartUpload,
/// which some servers drop, moto among them) and of each part reused from a killed run (`reused`: locked until that
/// run's date) set to this run's date by PutObjectRetention. A refusal leaves the backup in place, unlocked as far
/// as the server says: a warning (exit 3) naming the objects, pointing at `cloud check`, which tests the bucket.
fn lock_after_upload(
    store: &Store,
    p: &CloudPlan,
    expected: &BTreeMap<String, u64>,
    reused: &[String],
    until: DateTime<Utc>,
    report: &mut DestinationReport,
    ui: &Ui,
) {
    let multipart = expected
        .iter()
        // An upload of exactly one part is one PUT in OpenDAL 0.59; counted in anyway (one more request).
        .filter(|(_, bytes)| **bytes >= crate::cloud::store::PART_SIZE as u64)
        .map(|(name, _)| name);
    let names: BTreeSet<&String> = multipart.chain(reused).collect();
    let mut refused = Vec::new();
    for name in names {
        let shown = crate::stdx::show_str(name);
        match store.set_retention(&format!("{}{name}", p.dir), until) {
            Ok(()) => ui.step(format_args!(
                "{}: {}{shown}: retention set until {until}",
                p.name, p.dir
            )),
            Err(e) => {
                ui.step(format_args!("{}: {}{shown}: {e}", p.name, p.dir));
                refused.push((shown, e));
            }
        }
    }
    if let Some((_, e)) = refused.first() {
        let mut named: Vec<String> = refused
            .iter()
            .take(3)
            .map(|(n, _)| format!("{}{n}", p.dir))
            .collect();
        if refused.len() > 3 {
            named.push(format!("{} more", refused.len() - 3));
        }
        let warning = format!(
            "{}: the retention of {} could not be set ({e}): not locked until {until}; `dbackup cloud check {}` \
             tests whether the bucket enforces Object Lock",
            p.name,
            named.join(", "),
            p.name
        );
        ui.warn(&warning);
        report.warnings.push(warning);
    }
}

/// Encrypted with incrementals on ([`CloudPlan::index_copy_dir`]): the local plaintext copies of this upload's
/// indexes begin (`external::index_copy`), promoted with the backup. Without them the next upload is a full, nothing
/// worse: said, not a failure.
fn start_index_copies(
    p: &CloudPlan,
    backup_root: &std::path::Path,
    stamp: &str,
    ui: &Ui,
) -> Option<super::index_copy::Pending> {
    p.index_copy_dir.as_ref()?;
    super::index_copy::Pending::start_or_warn(backup_root, &p.name, stamp, "upload", ui)
}

/// Records what `set`'s local index copy is a copy of: the encrypted index as uploaded (`rec`).
fn record_index_copy(
    copies: Option<&super::index_copy::Pending>,
    p: &CloudPlan,
    set: &str,
    rec: &layout::SetRecord,
    summary: &archive::ArchiveSummary,
    ui: &Ui,
) {
    if let (Some(c), Some(copy), [index]) = (copies, &summary.index_copy, rec.index.as_slice())
        && let Err(e) = c.record(set, index, copy)
    {
        ui.warn(format_args!(
            "{}: {set}: the local copy of its index could not be recorded ({e}): its next upload is full",
            p.name
        ));
    }
}

/// Once the backup is promoted: its index copies renamed into place, and the copies the plan found stale removed.
fn finish_index_copies(
    copies: Option<super::index_copy::Pending>,
    p: &CloudPlan,
    backup_root: &std::path::Path,
    ui: &Ui,
) {
    if let Some(c) = copies
        && let Err(e) = c.promote()
    {
        ui.warn(format_args!(
            "{}: the local copies of the encrypted indexes could not be kept ({e}): the next upload is full",
            p.name
        ));
    }
    for f in super::index_copy::remove(backup_root, &p.name, &p.index_copies_removed) {
        ui.warn(format_args!(
            "{}: could not remove the local index copy {f}",
            p.name
        ));
    }
    for c in &p.index_copies_removed {
        ui.step(format_args!(
            "{}: removed local index copy {} (no longer a base)",
            p.name,
            super::index_copy::shown(c)
        ));
    }
}

/// The base an archive the plan made incremental is written against: the base index observation downloaded and
/// checked ([`observe_chains`](super::cloud::observe_chains)).
fn upload_base(
    a: &ArchiveTarget,
    world: &CloudWorld,
    backup_root: &std::path::Path,
) -> Option<crate::archive::incremental::IncrementalBase> {
    a.choice.base.as_ref()?;
    let b = world.chains.bases.get(&a.set)?.as_ref().ok()?;
    Some(incremental_base(b, &a.set, &a.choice, backup_root))
}

/// The journal of the upload `p` plans, started (resumed from what observation read, when `p` resumes); `None`
/// for an encrypted upload, which is never resumed.
fn start_journal(
    p: &CloudPlan,
    w: &CloudWorld,
    root_own: (&std::path::Path, &[String]),
) -> std::io::Result<Option<Resumer>> {
    let Some(key) = resume::key(
        &w.settings,
        w.resume.part_bytes,
        &p.archives,
        p.encryption.as_ref(),
    ) else {
        return Ok(None);
    };
    let resumed = match (&p.resume, &w.resume.candidate) {
        (Some(r), Some((stamp, Ok(j)))) if *stamp == r.stamp => Some(j),
        _ => None,
    };
    let planned = resume::parts_planned(&p.archives, key.part_bytes);
    Resumer::start(root_own, key, p.stamp(), resumed, &w.listing.sizes, planned).map(Some)
}

/// The plan of a new upload under the run's `stamp`, after the resume of `p` stopped: the stamp that was resumed
/// is removed first (nothing else: the rest was cleaned already).
fn restarted(p: &CloudPlan, stamp: &str) -> CloudPlan {
    let old = p.stamp().to_string();
    let mut q = p.clone();
    q.dir = format!("{BACKUPS}{stamp}/");
    q.resume = None;
    q.resume_refused = None;
    q.abort_uploads = Vec::new();
    q.cleanup_stamps = vec![UnfinishedStamp {
        stamp: old.clone(),
        objects: 0,
        bytes: 0,
    }];
    for d in &mut q.decisions {
        if d.name == old {
            d.name = stamp.to_string();
        }
    }
    q
}

/// The upload is promoted: its journal goes, and what the resume spared is said.
fn resume_finished(r: &Resumer, p: &CloudPlan, ui: &crate::ui::Ui, report: &mut DestinationReport) {
    if let Err(e) = r.finish() {
        report
            .warnings
            .push(format!("the journal of upload {} stays: {e}", p.stamp()));
    }
    let (parts, bytes) = r.skipped();
    if p.resume.is_some() {
        ui.info(format_args!(
            "{}: resumed {}: {} stored already ({}), checked and not uploaded again",
            p.name,
            p.stamp(),
            crate::stdx::counted(parts, "part", "parts"),
            crate::stdx::bytes(bytes)
        ));
    }
}
