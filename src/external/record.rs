//! What `backup.json` records of a backup just written, on a drive ([`super::exec`]) or a bucket
//! ([`super::upload`]) alike: each set's record from the writer's summary ([`set_record`]), the verified backup's
//! whole record ([`verified_meta`]) and, on a drive, its files written and read back ([`write_record`], `image create`
//! too), and the encryption a destination records opened as the writer's stage
//! ([`open_encryption`]).

use chrono::{DateTime, FixedOffset, Local};

use super::layout::{self, BackupMeta, FilesystemRecord, ReadBackRecord, SetRecord};
use super::report::DestinationReport;
use super::sets::ArchiveTarget;
use crate::archive::incremental::IncrementalBase;
use crate::archive::sums::{SumLine, write_sums};
use crate::archive::{self, FileRecord, WrittenFile};
use crate::stdx::fs::{Dir, flat};

/// The encryption stage a destination's plan asks for (`None`: plain), with the passphrase read now when the
/// destination encrypts to one: a drive and a bucket open it the same way, before anything is written.
pub(crate) fn open_encryption(
    record: Option<&archive::EncryptionRecord>,
    settings: Option<&crate::settings::EncryptionSettings>,
) -> Result<Option<crate::archive::EncryptTo>, crate::archive::crypt::CryptError> {
    record
        .map(|r| {
            crate::archive::crypt::encrypt_to(
                r,
                settings.and_then(|e| e.passphrase_file.as_deref()),
            )
        })
        .transpose()
}

/// What `backup.json` records of one set's archive once written (on a drive, or uploaded: `upload.rs`).
pub(crate) fn set_record(
    a: &ArchiveTarget,
    meta: Option<&crate::snapshot::SnapshotMeta>,
    summary: &archive::ArchiveSummary,
    encryption: Option<archive::EncryptionRecord>,
    (write_seconds, read_back_seconds): (f64, f64),
    base: Option<&IncrementalBase>,
) -> SetRecord {
    let record = |f: &WrittenFile| FileRecord {
        name: f
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        bytes: f.bytes,
        sha256: f.sha256,
        age_head: None,
    };
    SetRecord {
        set: a.set.clone(),
        snapshot: a.snapshot.clone(),
        snapshot_complete: meta.is_none_or(|m| m.is_complete()),
        snapshot_finished: meta.map(|m| m.finished),
        sources: meta.map(|m| m.sources.clone()).unwrap_or_default(),
        archive: summary.archive_files.iter().map(record).collect(),
        index: summary.index_files.iter().map(record).collect(),
        tar_bytes: summary.tar_bytes,
        tar_sha256: summary.tar_sha256,
        entries: summary.entries,
        files: summary.files,
        file_bytes: summary.file_bytes,
        hard_links: summary.hard_links,
        warning_count: summary.warning_count,
        // File names are data too: an encrypted set's warnings (which name files) stay off the drive's metadata.
        warnings: if encryption.is_some() {
            Vec::new()
        } else {
            summary.warnings.clone()
        },
        write_seconds,
        read_back_seconds,
        encryption,
        kind: if base.is_some() {
            archive::ArchiveKind::Incremental
        } else {
            archive::ArchiveKind::Full
        },
        base: base.map(|b| b.stamp.clone()),
        change_detection: base.map(|b| b.method().name().to_string()),
        part_plain_bytes: None,
    }
}

/// The record of a verified backup finished now (`backup.json`), for a drive or a bucket: the sets the report
/// holds so far, `depends_on` sorted and deduplicated, no system folder.
pub(crate) fn verified_meta(
    stamp: &str,
    host: &str,
    started: DateTime<FixedOffset>,
    report: &DestinationReport,
    read_back: &ReadBackRecord,
    filesystem: FilesystemRecord,
    mut depends_on: Vec<String>,
) -> BackupMeta {
    depends_on.sort();
    depends_on.dedup();
    BackupMeta {
        format: layout::BACKUP_FORMAT,
        stamp: stamp.to_string(),
        destination: report.name.clone(),
        host: host.to_string(),
        dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
        started,
        finished: Local::now().fixed_offset(),
        verified: true,
        read_back: read_back.clone(),
        filesystem,
        sums_file: layout::SUMS_FILE.to_string(),
        sets: report.sets.clone(),
        system: None,
        depends_on,
    }
}

/// `backup.json` and the sums file (`sums` and `backup.json`'s line) written new in a drive backup's `temp`, synced,
/// and read back from the drive (`before_read_back` first: a FUSE drive's device cache dropped): the one way a
/// drive's record is written, by `external` and `image create`. An I/O error keeps its kind (a drive that filled
/// up: `stdx::fs::filled_up`).
pub(crate) fn write_record(
    temp: &Dir,
    meta: &BackupMeta,
    mut sums: Vec<SumLine>,
    before_read_back: impl FnOnce(),
) -> anyhow::Result<()> {
    let meta_rec =
        layout::write_new_file(temp, layout::METADATA_FILE, &layout::metadata_bytes(meta))?;
    sums.push(SumLine {
        sha256: meta_rec.sha256,
        name: meta_rec.name.clone().into_bytes(),
    });
    let mut sums_bytes = Vec::new();
    write_sums(&mut sums_bytes, &sums)?;
    let sums_rec = layout::write_new_file(temp, layout::SUMS_FILE, &sums_bytes)?;
    temp.fsync().map_err(flat)?;
    before_read_back();
    let written = |rec: &FileRecord| WrittenFile {
        path: temp.join(&rec.name),
        bytes: rec.bytes,
        sha256: rec.sha256,
    };
    archive::read_back_in(temp, &[written(&meta_rec), written(&sums_rec)]).map_err(flat)?;
    Ok(())
}
