//! Resumable uploads to a bucket: the local journal of an upload's finished parts, which upload a run resumes
//! instead of removing, and the [`PartLog`] its archive sinks skip stored parts by.
//!
//! ```text
//! <root>/.upload-journals/                         0700
//! <root>/.upload-journals/<destination>/           0700, one per cloud destination (its name in the config)
//!   <stamp>.json                                   0600, the [`Journal`] of the unfinished upload <stamp>
//!   .tmp-<stamp>.json                              being written; renamed over <stamp>.json after each part
//! ```
//!
//! A plain tar stream is reproducible from the immutable local snapshot, so an interrupted upload can go on: a
//! run finding the newest unfinished stamp of a bucket (newer than every backup there) with a journal whose
//! [`Key`] is the one this run would write (same sets, snapshots, bases, part size, dbackup version, no
//! encryption) keeps that stamp instead of removing it. The stream is regenerated; a part the journal records and
//! the bucket lists with the recorded size is hashed and compared, not uploaded; a regenerated part that differs
//! stops the resume ([`crate::cloud::sink::PartDiffers`]) and the upload restarts as new under the run's own
//! stamp: an archive is never made of two streams. The journal is local state that can only make an upload skip
//! a part the server holds with the recorded size and the regenerated digest; verification (every object listed
//! with its size, the sums) is as for any upload. It is removed once `backup.json` is written, and every journal
//! of a destination but the resumed one when an upload there starts (not another config's that shares the backup
//! root: a journal of none of the config's sets); the journals of a destination no longer in the config are removed
//! after the run (`ExternalPlan::upload_journals_orphaned`, named by the dry run).
//!
//! An age stream is not reproducible (a new file key each time), so an archive encrypted to recipients is uploaded
//! as parts that are age streams of their own (`<set>.tar.partNNN.age`, [`crate::cloud::sink::CloudSink::encrypt_parts`]):
//! a stored part is compared by its plaintext's size and sha256, which only the local journal holds. An upload
//! encrypted to a passphrase stays one age stream (scrypt would run for every part) and restarts.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::bucket::{BACKUPS, CloudListing, PART_BYTES};
use super::retention::Owner;
use super::sets::ArchiveTarget;
use crate::archive::{Digest, EncryptionRecord};
use crate::cloud::sink::{PartLog, StoredPart};
use crate::settings::CloudSettings;
use crate::stdx::fs::Dir;

/// The directory under the backup root.
pub const DIR: &str = ".upload-journals";
/// The hidden part size (bytes, at least [`MIN_PART_BYTES`]): for tests, which need uploads of many small parts.
pub const PART_BYTES_VAR: &str = "DBACKUP_CLOUD_PART_BYTES";
const MIN_PART_BYTES: u64 = 4096;
const FORMAT: u32 = 1;
/// 1000 parts per set take about 250 KiB; a journal is never read past this.
const MAX_JOURNAL_BYTES: u64 = 8 << 20;
const TMP_PREFIX: &str = ".tmp-";

/// What must be equal for an unfinished upload to be resumed: everything its archives' bytes depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub destination: String,
    pub place: String,
    pub dbackup_version: String,
    pub part_bytes: u64,
    /// The age recipients of an encrypted upload (each part an age stream of its own); empty when plain.
    #[serde(default)]
    pub recipients: Vec<String>,
    pub sets: Vec<SetKey>,
}

/// One set's archive as planned: the snapshot, full or incremental on which base, compared by content or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKey {
    pub set: String,
    pub snapshot: String,
    pub archive: String,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub compare_content: bool,
}

/// One finished part, as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The object's name under the stamp (`docs.tar.part003`, `docs.tar.part003.age`).
    pub name: String,
    /// The object's size and sha256.
    pub bytes: u64,
    pub sha256: Digest,
    /// The part's plaintext size and sha256 (the object's own for a plain archive): what a regenerated part is
    /// compared with.
    pub plain_bytes: u64,
    pub plain_sha256: Digest,
    /// An encrypted part's age head (header and payload nonce, base64), for `backup.json` when the part is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_head: Option<String>,
}

/// `<stamp>.json`: the upload's key and each set's finished parts, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub stamp: String,
    pub key: Key,
    #[serde(default)]
    pub parts: BTreeMap<String, Vec<PartRecord>>,
    /// Parts of the whole upload, as planned (estimated): what `status` counts the uploaded ones against.
    #[serde(default)]
    pub parts_planned: u64,
}

/// What observation found for resuming on one destination.
#[derive(Debug, Clone, Default)]
pub struct ResumeWorld {
    /// The size of an archive object on this destination ([`PART_BYTES`], or [`PART_BYTES_VAR`]).
    pub part_bytes: u64,
    /// The newest unfinished stamp (newer than every backup) and its journal, or why it has none usable.
    pub candidate: Option<(String, Result<Journal, String>)>,
}

/// The upload a run resumes (the dry run's "resume <stamp>: 3 of 9 parts uploaded").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePlan {
    pub stamp: String,
    /// Parts the journal records and the bucket lists with their recorded size.
    pub parts_uploaded: u64,
    /// Parts of the whole upload, as estimated; `None` for `status` from a journal an older dbackup wrote, which
    /// does not record them (the plan always knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_total: Option<u64>,
    pub bytes_uploaded: u64,
}

impl ResumePlan {
    /// "4 of 25 parts uploaded (512.0 KiB)"; without a total, "4 parts uploaded (...; its journal, from an older
    /// dbackup, does not say of how many)".
    pub fn uploaded_words(&self) -> String {
        let bytes = crate::stdx::bytes(self.bytes_uploaded);
        match self.parts_total {
            Some(total) => format!(
                "{} of {total} parts uploaded ({bytes})",
                self.parts_uploaded
            ),
            None => format!(
                "{} uploaded ({bytes}; its journal, from an older dbackup, does not say of how many)",
                crate::stdx::counted(self.parts_uploaded, "part", "parts")
            ),
        }
    }
}

/// The part size from the environment ([`PART_BYTES_VAR`]), else [`PART_BYTES`].
pub fn part_bytes(env: &crate::expand::Env) -> u64 {
    env.var(PART_BYTES_VAR)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(PART_BYTES, |n| n.clamp(MIN_PART_BYTES, PART_BYTES))
}

fn journals_dir(root: &Path, destination: &str) -> Result<Dir, crate::stdx::fs::FsError> {
    Dir::open(root)
        .and_then(|r| r.sub(DIR))
        .and_then(|d| d.sub(destination))
}

fn journal_name(stamp: &str) -> String {
    format!("{stamp}.json")
}

/// Whether `destination`'s journals hold one named for `stamp`, this config's or another's sharing the backup root
/// (readable or not): a new upload under `stamp` would write over it, so the stamp is taken (`external::fresh_stamp`).
pub fn has_journal(root: &Path, destination: &str, stamp: &str) -> bool {
    journals_dir(root, destination)
        .is_ok_and(|d| matches!(d.file_type(journal_name(stamp)), Ok(Some(_))))
}

/// Reads the journal of `stamp` on `destination`: bounded, parsed, checked to name that stamp.
pub fn read(root: &Path, destination: &str, stamp: &str) -> Result<Journal, String> {
    let (_, j): (_, Journal) = super::index_copy::read_record(
        journals_dir(root, destination),
        &journal_name(stamp),
        MAX_JOURNAL_BYTES,
        ("journal", "there is no journal of it"),
    )?;
    if j.format != FORMAT || j.stamp != stamp || j.key.destination != destination {
        return Err("its journal is for another upload".into());
    }
    Ok(j)
}

/// Whether `destination`'s journals include another config's ([`others`]): a config that shares the backup root
/// (`index_copy::orphaned`).
pub fn foreign(root: &Path, destination: &str, own: &[String]) -> bool {
    let Ok(dir) = journals_dir(root, destination) else {
        return false;
    };
    dir.entries()
        .unwrap_or_default()
        .iter()
        .any(|(name, _)| others(root, destination, &name.to_string_lossy(), own))
}

/// Whether the file `name` of `destination`'s journals is another config's: a readable journal of an upload of
/// none of the config's sets (`own`). A journal that cannot be read, or one being written, is no one's.
fn others(root: &Path, destination: &str, name: &str, own: &[String]) -> bool {
    let Some(stamp) = name
        .strip_suffix(".json")
        .filter(|_| !name.starts_with(TMP_PREFIX))
    else {
        return false;
    };
    read(root, destination, stamp).is_ok_and(|j| !j.key.sets.iter().any(|s| own.contains(&s.set)))
}

/// Observation: the part size, and the journal of the newest unfinished stamp of the config's newer than every backup
/// of the config's (an older one would be out of order in its chains: it is removed as before; another config's
/// sharing the bucket hold none of its chains). Reads only.
/// `foreign` says whether a stamp is another config's (by the `backup.json` observation read, where it read one:
/// `CloudWorld::foreign`).
pub fn observe(
    listing: &CloudListing,
    (destination, foreign): (&str, &dyn Fn(&str) -> bool),
    root: &Path,
) -> ResumeWorld {
    ResumeWorld {
        part_bytes: part_bytes(&crate::expand::Env::from_process()),
        candidate: candidate(listing, foreign).map(|s| (s.to_string(), read(root, destination, s))),
    }
}

/// The unfinished upload of a bucket that may be resumed: the newest stamp without `backup.json` of `owner`'s, if it
/// is newer than every backup of `owner`'s there (another config's sharing the bucket are neither: its unfinished
/// upload is its own to resume, and its backups since do not make this one's stale).
fn candidate<'a>(listing: &'a CloudListing, foreign: &dyn Fn(&str) -> bool) -> Option<&'a str> {
    let newest_backup = listing.backups.iter().filter(|s| !foreign(s)).max();
    listing
        .unfinished
        .iter()
        .map(|u| &u.stamp)
        .filter(|s| !foreign(s) && !listing.going.contains_key(*s))
        .filter(|s| newest_backup.is_none_or(|b| *s > b))
        .max()
        .map(String::as_str)
}

/// For `status`: the unfinished upload of `destination` the next upload can resume (its journal is here and the
/// bucket lists the parts it records), with its parts uploaded (listed with their recorded size) of those planned.
/// Whether it is resumed still depends on what the next run uploads (the same snapshots, bases and recipients: its
/// dry run says). Reads only.
pub fn resumable(
    root: &Path,
    (destination, owner): (&str, Owner),
    listing: &CloudListing,
) -> Option<ResumePlan> {
    let stamp = candidate(listing, &|s| listing.foreign(s, owner))?;
    let j = read(root, destination, stamp).ok()?;
    let stored = stored_parts(&j, &listing.sizes);
    let parts_uploaded: u64 = stored.values().map(|p| p.len() as u64).sum();
    Some(ResumePlan {
        stamp: stamp.to_string(),
        parts_uploaded,
        // 0: a journal of an older dbackup, which did not record it.
        parts_total: (j.parts_planned > 0).then(|| j.parts_planned.max(parts_uploaded)),
        bytes_uploaded: stored
            .values()
            .flatten()
            .map(|p| p.bytes)
            .fold(0u64, u64::saturating_add),
    })
}

/// The parts an upload of `archives` makes, as estimated: each archive's in parts of `part_bytes`, at least one.
pub fn parts_planned(archives: &[ArchiveTarget], part_bytes: u64) -> u64 {
    archives
        .iter()
        .map(|a| a.tar_bytes.div_ceil(part_bytes.max(1)).max(1))
        .sum()
}

/// Whether an upload encrypted so makes each archive part an age stream of its own (recipients: yes; a
/// passphrase: no, scrypt would run for every part, and the upload is one stream that restarts).
pub fn parts_encrypted(enc: Option<&EncryptionRecord>) -> bool {
    enc.is_some_and(|e| !e.passphrase)
}

/// The name a sink gives an archive's objects: `<set>.tar` when they are age streams of their own (the sink names
/// them `<set>.tar.partNNN.age`), else the plan's name.
pub fn object_base(archive: &str, parted: bool) -> &str {
    match parted {
        true => archive
            .strip_suffix(crate::archive::crypt::AGE_SUFFIX)
            .unwrap_or(archive),
        false => archive,
    }
}

/// An archive's objects as the dry run names them: `docs.tar.part*`, `docs.tar.part*.age`, `docs.tar.age.part*`.
pub fn objects_shown(archive: &str, enc: Option<&EncryptionRecord>) -> String {
    if parts_encrypted(enc) {
        format!("{}.part*.age", object_base(archive, true))
    } else {
        format!("{archive}.part*")
    }
}

/// The key of the upload `archives` make on the destination `settings` names, in parts of `part_bytes`; `None` for an upload encrypted to a passphrase (never resumed).
pub fn key(
    settings: &CloudSettings,
    part_bytes: u64,
    archives: &[ArchiveTarget],
    enc: Option<&EncryptionRecord>,
) -> Option<Key> {
    if enc.is_some() && !parts_encrypted(enc) {
        return None;
    }
    let mut recipients = enc.map(|e| e.recipients.clone()).unwrap_or_default();
    recipients.sort();
    Some(Key {
        recipients,
        destination: settings.name.clone(),
        place: settings.place(),
        dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
        part_bytes,
        sets: archives
            .iter()
            .map(|a| SetKey {
                set: a.set.clone(),
                snapshot: a.snapshot.clone(),
                archive: a.archive.clone(),
                base: a.choice.base.clone(),
                compare_content: a.choice.compare_content,
            })
            .collect(),
    })
}

/// The parts of `j` that the bucket lists under its stamp with their recorded size, per set: the prefix of each
/// set's parts a resumed upload skips.
fn stored_parts(j: &Journal, sizes: &BTreeMap<String, u64>) -> BTreeMap<String, Vec<PartRecord>> {
    let parted = !j.key.recipients.is_empty();
    j.parts
        .iter()
        .map(|(set, parts)| {
            let archive = j.key.sets.iter().find(|k| k.set == *set);
            let listed = parts
                .iter()
                .enumerate()
                .take_while(|(n, p)| {
                    // The object the sink would name part n, listed with the recorded size.
                    archive.is_some_and(|a| p.name == part_name(&a.archive, parted, *n))
                        && sizes.get(&format!("{BACKUPS}{}/{}", j.stamp, p.name)) == Some(&p.bytes)
                })
                .map(|(_, p)| p.clone())
                .collect();
            (set.clone(), listed)
        })
        .collect()
}

/// The name of an archive's part `n` on a bucket (as [`crate::cloud::sink::CloudSink`] names it).
fn part_name(archive: &str, parted: bool, n: usize) -> String {
    match parted {
        true => format!("{}.part{n:03}.age", object_base(archive, true)),
        false => format!("{archive}.part{n:03}"),
    }
}

/// Whether this run resumes the bucket's unfinished upload (pure): the resumed stamp with what is stored, or
/// why the unfinished upload is not resumed (for the dry run; `None` when there is nothing unfinished).
pub fn plan(
    w: &ResumeWorld,
    settings: &CloudSettings,
    listing: &CloudListing,
    archives: &[ArchiveTarget],
    enc: Option<&EncryptionRecord>,
) -> (Option<ResumePlan>, Option<String>) {
    let Some((stamp, journal)) = &w.candidate else {
        return (None, None);
    };
    let Some(key) = key(settings, w.part_bytes, archives, enc) else {
        return (
            None,
            Some(format!(
                "the unfinished upload {stamp} is not resumed: an upload encrypted to a passphrase restarts (its \
                 age stream cannot be regenerated)"
            )),
        );
    };
    let j = match journal {
        Ok(j) => j,
        Err(why) => {
            return (
                None,
                Some(format!(
                    "the unfinished upload {stamp} is not resumed: {why}"
                )),
            );
        }
    };
    if j.key != key {
        return (
            None,
            Some(format!(
                "the unfinished upload {stamp} is not resumed: {}",
                difference(&j.key, &key)
            )),
        );
    }
    let stored = stored_parts(j, &listing.sizes);
    let parts_uploaded = stored.values().map(|p| p.len() as u64).sum();
    let bytes_uploaded = stored
        .values()
        .flatten()
        .map(|p| p.bytes)
        .fold(0u64, u64::saturating_add);
    let parts_total = parts_planned(archives, key.part_bytes).max(parts_uploaded);
    (
        Some(ResumePlan {
            stamp: stamp.clone(),
            parts_uploaded,
            parts_total: Some(parts_total),
            bytes_uploaded,
        }),
        None,
    )
}

/// Why a journal's key is not this run's, in words.
fn difference(was: &Key, now: &Key) -> String {
    if was.sets != now.sets {
        let names = |k: &Key| {
            k.sets
                .iter()
                .map(|s| s.snapshot.clone())
                .collect::<Vec<_>>()
        };
        if names(was) != names(now) {
            return format!(
                "it uploads other snapshots ({}; now {})",
                names(was).join(", "),
                names(now).join(", ")
            );
        }
        return "its archives are made on other bases".into();
    }
    if was.recipients != now.recipients {
        return "it was encrypted to other recipients".into();
    }
    if was.part_bytes != now.part_bytes {
        return "its parts are of another size".into();
    }
    if was.dbackup_version != now.dbackup_version {
        return format!(
            "it was written by dbackup {}",
            crate::stdx::show_str(&was.dbackup_version)
        );
    }
    "it was written for another destination".into()
}

/// The journal of an upload being written (shared by its sets' sinks).
#[derive(Clone)]
pub struct Resumer {
    inner: Arc<Mutex<State>>,
}

struct State {
    dir: Dir,
    journal: Journal,
    /// The parts each set may skip (listed with their recorded size when the upload started).
    stored: BTreeMap<String, Vec<PartRecord>>,
    differs: Option<String>,
    skipped: u64,
    skipped_bytes: u64,
    /// The objects (names under the stamp) found stored and not uploaded again.
    skipped_names: Vec<String>,
}

impl State {
    /// The journal written to a temporary name and renamed over `<stamp>.json` (0600).
    fn save(&self) -> io::Result<()> {
        let name = journal_name(&self.journal.stamp);
        let tmp = format!("{TMP_PREFIX}{name}");
        let _ = self.dir.unlink(&tmp);
        let mut f = self
            .dir
            .create_file(&tmp, 0o600)
            .map_err(io::Error::other)?;
        f.write_all(&serde_json::to_vec(&self.journal).map_err(io::Error::other)?)?;
        f.sync_all()?;
        self.dir
            .rename(&tmp, &name, false)
            .map_err(io::Error::other)?;
        self.dir.fsync().map_err(io::Error::other)
    }
}

impl Resumer {
    /// Starts the journal of the upload `stamp` with `key`: a resumed one keeps the parts the bucket lists with
    /// their recorded size (`sizes`, the listing's), a new one starts empty. Every other journal of the
    /// destination is removed (their stamps are cleaned by this run), but another config's ([`others`]; `own`: the
    /// config's sets), whose upload can still resume.
    pub fn start(
        (root, own): (&Path, &[String]),
        key: Key,
        stamp: &str,
        resumed: Option<&Journal>,
        sizes: &BTreeMap<String, u64>,
        parts_planned: u64,
    ) -> io::Result<Resumer> {
        let (top, _) = Dir::open(root)
            .and_then(|r| r.sub_or_create(DIR, 0o700))
            .map_err(io::Error::other)?;
        let (dir, _) = top
            .sub_or_create(&key.destination, 0o700)
            .map_err(io::Error::other)?;
        let keep = journal_name(stamp);
        for (name, _) in dir.entries().map_err(io::Error::other)? {
            let shown = name.to_string_lossy();
            if shown != keep && !others(root, &key.destination, &shown, own) {
                let _ = dir.unlink(&name);
            }
        }
        let stored = resumed.map(|j| stored_parts(j, sizes)).unwrap_or_default();
        let state = State {
            dir,
            journal: Journal {
                format: FORMAT,
                stamp: stamp.to_string(),
                key,
                parts: stored.clone(),
                parts_planned,
            },
            stored,
            differs: None,
            skipped: 0,
            skipped_bytes: 0,
            skipped_names: Vec::new(),
        };
        state.save()?;
        Ok(Resumer {
            inner: Arc::new(Mutex::new(state)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log of `set`'s archive parts, for its [`crate::cloud::sink::CloudSink`].
    pub fn log(&self, set: &str) -> Box<dyn PartLog> {
        {
            let mut s = self.state();
            s.journal.parts.insert(set.to_string(), Vec::new());
        }
        Box::new(SetLog {
            resumer: self.clone(),
            set: set.to_string(),
        })
    }

    /// The part a resumed upload found different, if any (the resume then stops).
    pub fn differs(&self) -> Option<String> {
        self.state().differs.clone()
    }

    /// Parts found stored and not uploaded again, and their bytes.
    pub fn skipped(&self) -> (u64, u64) {
        let s = self.state();
        (s.skipped, s.skipped_bytes)
    }

    /// The objects found stored and not uploaded again (names under the stamp): uploaded by an earlier run, so
    /// their Object Lock retention is that run's.
    pub fn skipped_names(&self) -> Vec<String> {
        self.state().skipped_names.clone()
    }

    /// The upload is promoted (`backup.json` written): its journal is removed.
    pub fn finish(&self) -> io::Result<()> {
        let s = self.state();
        s.dir
            .unlink(journal_name(&s.journal.stamp))
            .map_err(io::Error::other)
    }
}

/// A resumed upload stopped: a part regenerated from the snapshot is not the one stored.
#[derive(Debug)]
pub struct Stopped {
    pub stamp: String,
    pub part: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the resume of the unfinished upload {} stopped: {} regenerated from the snapshot is not the part \
             uploaded before (size or sha256)",
            self.stamp,
            crate::stdx::show_str(&self.part)
        )
    }
}

impl std::error::Error for Stopped {}

/// Removes the journal of `stamp` on `destination` (a resume that stopped); nothing when there is none.
pub fn remove(root: &Path, destination: &str, stamp: &str) {
    if let Ok(dir) = journals_dir(root, destination) {
        let _ = dir.unlink(journal_name(stamp));
    }
}

struct SetLog {
    resumer: Resumer,
    set: String,
}

impl PartLog for SetLog {
    fn stored(&self, n: usize) -> Option<StoredPart> {
        let s = self.resumer.state();
        s.stored
            .get(&self.set)
            .and_then(|p| p.get(n))
            .map(|p| StoredPart {
                plain: (p.plain_bytes, p.plain_sha256),
                object: (p.bytes, p.sha256),
                // A head that does not decode is not recorded again: the restore reads it from the object.
                head: p
                    .age_head
                    .as_deref()
                    .and_then(|h| crate::archive::crypt::decode_head(h).ok()),
            })
    }

    fn finished(&self, n: usize, part: &StoredPart, name: &str, skipped: bool) -> io::Result<()> {
        let mut s = self.resumer.state();
        if skipped {
            s.skipped += 1;
            s.skipped_bytes += part.object.0;
            s.skipped_names.push(name.to_string());
        }
        let parts = s.journal.parts.entry(self.set.clone()).or_default();
        if parts.len() != n {
            return Err(io::Error::other(format!(
                "the journal of set {} holds {} parts, not {n}",
                self.set,
                parts.len()
            )));
        }
        parts.push(PartRecord {
            name: name.to_string(),
            bytes: part.object.0,
            sha256: part.object.1,
            plain_bytes: part.plain.0,
            plain_sha256: part.plain.1,
            age_head: part
                .head
                .as_deref()
                .and_then(crate::archive::crypt::encode_head),
        });
        s.save()
    }

    fn differs(&self, _n: usize, name: &str) {
        self.resumer.state().differs = Some(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(snapshot: &str) -> Key {
        Key {
            destination: "offsite".into(),
            place: "s3 http://127.0.0.1:9 b/p".into(),
            dbackup_version: env!("CARGO_PKG_VERSION").into(),
            part_bytes: 4096,
            recipients: vec![],
            sets: vec![SetKey {
                set: "docs".into(),
                snapshot: snapshot.into(),
                archive: "docs.tar".into(),
                base: None,
                compare_content: false,
            }],
        }
    }

    fn part(byte: u8) -> StoredPart {
        let d = (4096, Digest::of_bytes(&[byte; 4096]));
        StoredPart {
            plain: d,
            object: d,
            head: None,
        }
    }

    fn name(n: usize) -> String {
        format!("docs.tar.part{n:03}")
    }

    /// A backup root holding `j` as `destination`'s journal.
    fn on_disk(destination: &str, j: &Journal) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(DIR).join(destination);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(journal_name(&j.stamp)),
            serde_json::to_vec(j).unwrap(),
        )
        .unwrap();
        root
    }

    /// The journal is 0600 in 0700 directories, rewritten after each part; a resumed upload keeps only the parts
    /// the bucket lists with their recorded size (a prefix), skips those, and records the rest; a part that
    /// differs is remembered; `finish` removes it; every other journal of the destination goes when one starts.
    #[test]
    fn a_journal_records_parts_and_a_resume_keeps_only_the_listed_prefix() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let own = ["docs".to_string()];
        let stamp = "2026-12-05-020000";
        let r = Resumer::start(
            (root.path(), &own),
            key("docs-a"),
            stamp,
            None,
            &BTreeMap::new(),
            9,
        )
        .unwrap();
        let log = r.log("docs");
        assert_eq!(log.stored(0), None);
        for n in 0..3 {
            log.finished(n, &part(n as u8), &name(n), false).unwrap();
        }
        let j = read(root.path(), "offsite", stamp).unwrap();
        assert_eq!(j.parts["docs"].len(), 3);
        let dir = root.path().join(DIR).join("offsite");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join(DIR)), 0o700);
        assert_eq!(mode(&dir.join(format!("{stamp}.json"))), 0o600);
        std::fs::write(dir.join("2026-12-01-020000.json"), "{}").unwrap();

        // The bucket lists parts 0 and 2 with their size, part 1 with another: only part 0 is kept.
        let sizes: BTreeMap<String, u64> = [(0, 4096), (1, 100), (2, 4096)]
            .into_iter()
            .map(|(n, b)| (format!("backups/{stamp}/docs.tar.part{n:03}"), b))
            .collect();
        let r = Resumer::start(
            (root.path(), &own),
            key("docs-a"),
            stamp,
            Some(&j),
            &sizes,
            9,
        )
        .unwrap();
        assert!(!dir.join("2026-12-01-020000.json").exists());
        let log = r.log("docs");
        assert_eq!(log.stored(0), Some(part(0)));
        assert_eq!(log.stored(1), None);
        log.finished(0, &part(0), &name(0), true).unwrap();
        log.finished(1, &part(1), &name(1), false).unwrap();
        assert_eq!(r.skipped(), (1, 4096));
        assert_eq!(r.skipped_names(), [name(0)]);
        assert_eq!(
            read(root.path(), "offsite", stamp).unwrap().parts["docs"].len(),
            2
        );
        log.differs(2, "docs.tar.part002");
        assert_eq!(r.differs().as_deref(), Some("docs.tar.part002"));
        r.finish().unwrap();
        assert_eq!(
            read(root.path(), "offsite", stamp).unwrap_err(),
            "there is no journal of it"
        );
    }

    /// Two configs sharing the backup root, each with a cloud destination of this name: an upload's start removes
    /// the other journals of its own config (their stamps are cleaned by this run) and leftovers, never the other
    /// config's (of none of this config's sets), whose upload then resumes. Before, it removed them all.
    #[test]
    fn an_upload_starts_without_removing_another_configs_journals() {
        let root = tempfile::tempdir().unwrap();
        let own = ["docs".to_string()];
        let none = BTreeMap::new();
        let other = Key {
            sets: vec![SetKey {
                set: "notes".into(),
                ..key("n").sets[0].clone()
            }],
            ..key("n")
        };
        Resumer::start(
            (root.path(), &["notes".into()]),
            other,
            "2026-12-05-010000",
            None,
            &none,
            9,
        )
        .unwrap();
        Resumer::start(
            (root.path(), &own),
            key("a"),
            "2026-12-05-020000",
            None,
            &none,
            9,
        )
        .unwrap();
        let dir = root.path().join(DIR).join("offsite");
        std::fs::write(dir.join(".tmp-2026-12-05-020000.json"), "{").unwrap();
        Resumer::start(
            (root.path(), &own),
            key("b"),
            "2026-12-05-030000",
            None,
            &none,
            9,
        )
        .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2026-12-05-010000.json", "2026-12-05-030000.json"]);
        assert_eq!(
            read(root.path(), "offsite", "2026-12-05-010000")
                .unwrap()
                .key
                .sets[0]
                .set,
            "notes"
        );
    }

    /// A journal from another upload (another stamp inside, unreadable, too big) is not used, and the reason is
    /// given; the key names what differs.
    #[test]
    fn a_journal_that_does_not_fit_is_refused_with_its_reason() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(DIR).join("offsite");
        std::fs::create_dir_all(&dir).unwrap();
        let stamp = "2026-12-05-020000";
        let j = Journal {
            format: FORMAT,
            stamp: "2026-12-04-020000".into(),
            key: key("docs-a"),
            parts: BTreeMap::new(),
            parts_planned: 0,
        };
        std::fs::write(
            dir.join(format!("{stamp}.json")),
            serde_json::to_vec(&j).unwrap(),
        )
        .unwrap();
        assert!(
            read(root.path(), "offsite", stamp)
                .unwrap_err()
                .contains("another upload")
        );
        std::fs::write(dir.join(format!("{stamp}.json")), "not json").unwrap();
        assert!(
            read(root.path(), "offsite", stamp)
                .unwrap_err()
                .contains("cannot be read")
        );
        std::fs::write(
            dir.join(format!("{stamp}.json")),
            vec![b' '; MAX_JOURNAL_BYTES as usize + 1],
        )
        .unwrap();
        assert!(read(root.path(), "offsite", stamp).is_err());
        assert!(difference(&key("docs-a"), &key("docs-b")).contains("other snapshots"));
        let mut other = key("docs-a");
        other.part_bytes = 8192;
        assert!(difference(&key("docs-a"), &other).contains("another size"));
    }

    fn target(snapshot: &str) -> ArchiveTarget {
        ArchiveTarget {
            set: "docs".into(),
            snapshot: snapshot.into(),
            archive: "docs.tar".into(),
            part_bytes: Some(4096),
            index: "docs.index.jsonl".into(),
            index_part_bytes: None,
            tar_bytes: 4096 * 9 - 100,
            index_bytes: 100,
            encrypted: false,
            choice: super::super::chain::ArchiveChoice::full("first"),
            left_out: Vec::new(),
        }
    }

    /// Which unfinished upload a plan resumes (pure): the newest unfinished stamp newer than every backup, with a
    /// journal of the same key; its parts the bucket lists with their recorded size counted ("3 of 9"); not when
    /// the snapshot, the recipients or the part size differ, nor for a passphrase, nor for a stamp older than a
    /// backup, nor without a journal; each time with the reason. `status` ([`resumable`]) counts the same parts from
    /// the journal on disk.
    #[test]
    fn the_plan_resumes_only_a_matching_journal_of_the_newest_unfinished_upload() {
        let stamp = "2026-12-05-020000";
        let settings = crate::cloud::tests::settings("http://127.0.0.1:9", "b");
        let mut listing = CloudListing::default();
        let mut w = ResumeWorld {
            part_bytes: 4096,
            candidate: None,
        };
        let archives = [target("docs-a")];
        assert_eq!(plan(&w, &settings, &listing, &archives, None), (None, None));
        let mut k = super::key(&settings, w.part_bytes, &archives, None).unwrap();
        let mut j = Journal {
            format: FORMAT,
            stamp: stamp.into(),
            key: k.clone(),
            parts: BTreeMap::from([(
                "docs".to_string(),
                (0..4)
                    .map(|n| PartRecord {
                        name: name(n),
                        bytes: 4096,
                        sha256: part(0).object.1,
                        plain_bytes: 4096,
                        plain_sha256: part(0).plain.1,
                        age_head: None,
                    })
                    .collect(),
            )]),
            parts_planned: 9,
        };
        // Parts 0-2 listed with their size, part 3 not listed.
        listing.sizes = (0..3)
            .map(|n| (format!("backups/{stamp}/{}", name(n)), 4096))
            .collect();
        listing.unfinished = vec![crate::external::bucket::UnfinishedStamp {
            stamp: stamp.into(),
            objects: 3,
            bytes: 3 * 4096,
        }];
        w.candidate = Some((stamp.into(), Ok(j.clone())));
        let (r, why) = plan(&w, &settings, &listing, &archives, None);
        assert_eq!(why, None);
        let r = r.unwrap();
        assert_eq!(
            (
                r.stamp.as_str(),
                r.parts_uploaded,
                r.parts_total,
                r.bytes_uploaded
            ),
            (stamp, 3, Some(9), 3 * 4096)
        );
        // `status` finds the same from the journal on disk: 3 of the 9 parts planned.
        let root = on_disk(&settings.name, &j);
        assert_eq!(
            resumable(root.path(), (&settings.name, Owner::Anyone), &listing),
            Some(r)
        );
        // A journal naming another object than the sink would for that part: nothing of it is skipped.
        let mut misnamed = j.clone();
        misnamed.parts.get_mut("docs").unwrap()[0].name = name(2);
        w.candidate = Some((stamp.into(), Ok(misnamed)));
        assert_eq!(
            plan(&w, &settings, &listing, &archives, None)
                .0
                .unwrap()
                .parts_uploaded,
            0
        );
        w.candidate = Some((stamp.into(), Ok(j.clone())));

        let refused = |w: &ResumeWorld, archives: &[ArchiveTarget], enc| {
            let (r, why) = plan(w, &settings, &listing, archives, enc);
            assert_eq!(r, None);
            why.unwrap()
        };
        assert!(refused(&w, &[target("docs-b")], None).contains("other snapshots"));
        let age = EncryptionRecord {
            format: "age-encryption.org/v1".into(),
            recipients: vec!["age1xyz".into()],
            passphrase: false,
        };
        assert!(refused(&w, &archives, Some(&age)).contains("other recipients"));
        let pass = EncryptionRecord {
            recipients: vec![],
            passphrase: true,
            ..age.clone()
        };
        assert!(refused(&w, &archives, Some(&pass)).contains("passphrase"));
        k.part_bytes = 8192;
        j.key = k;
        w.candidate = Some((stamp.into(), Ok(j)));
        assert!(refused(&w, &archives, None).contains("another size"));
        w.candidate = Some((stamp.into(), Err("there is no journal of it".into())));
        assert!(refused(&w, &archives, None).contains("there is no journal of it"));

        // Only a stamp newer than every backup is a candidate (observation picks it).
        let root = tempfile::tempdir().unwrap();
        listing.backups = vec!["2026-12-06-020000".into()];
        w = observe(&listing, (&settings.name, &|_| false), root.path());
        assert_eq!(w.candidate, None);
        listing.backups = vec!["2026-12-04-020000".into()];
        w = observe(&listing, (&settings.name, &|_| false), root.path());
        let no_journal = Some((stamp.to_string(), Err("there is no journal of it".into())));
        assert_eq!(w.candidate, no_journal);
        // Another config's (set `notes`, on a bucket both name alike): its newer backup does not make this one's
        // unfinished upload stale, nor is its newer unfinished upload this one's to resume.
        let own = crate::external::retention::OwnSet::named(&["docs"]);
        listing.backups.push("2026-12-06-020000".into());
        listing
            .unfinished
            .push(crate::external::bucket::UnfinishedStamp {
                stamp: "2026-12-07-020000".into(),
                objects: 1,
                bytes: 1,
            });
        for b in [
            "2026-12-06-020000/notes.tar",
            "2026-12-07-020000/notes.tar.part000",
        ] {
            listing.sizes.insert(format!("{BACKUPS}{b}"), 1);
        }
        w = observe(
            &listing,
            (&settings.name, &|s| listing.foreign(s, Owner::Sets(&own))),
            root.path(),
        );
        assert_eq!(w.candidate, no_journal);
        w = observe(&listing, (&settings.name, &|_| false), root.path());
        assert_eq!(w.candidate.map(|c| c.0), Some("2026-12-07-020000".into()));
    }

    /// A journal (untrusted: it is read back from the backup root) whose parts the bucket lists with sizes that add
    /// up past `u64`: the bytes uploaded are the most there are, in the plan and in `status`, never an overflow.
    #[test]
    fn parts_whose_sizes_add_up_past_u64_are_counted_saturating() {
        let stamp = "2026-12-05-020000";
        let settings = crate::cloud::tests::settings("http://127.0.0.1:9", "b");
        let archives = [target("docs-a")];
        let k = super::key(&settings, 4096, &archives, None).unwrap();
        let part = |n| PartRecord {
            name: name(n),
            bytes: u64::MAX - 1,
            sha256: part(0).object.1,
            plain_bytes: 4096,
            plain_sha256: part(0).plain.1,
            age_head: None,
        };
        let j = Journal {
            format: FORMAT,
            stamp: stamp.into(),
            key: k,
            parts: BTreeMap::from([("docs".to_string(), (0..3).map(part).collect())]),
            parts_planned: 3,
        };
        let listing = CloudListing {
            sizes: (0..3)
                .map(|n| (format!("{BACKUPS}{stamp}/{}", name(n)), u64::MAX - 1))
                .collect(),
            unfinished: vec![crate::external::bucket::UnfinishedStamp {
                stamp: stamp.into(),
                objects: 3,
                bytes: u64::MAX,
            }],
            ..Default::default()
        };
        let w = ResumeWorld {
            part_bytes: 4096,
            candidate: Some((stamp.into(), Ok(j.clone()))),
        };
        let r = plan(&w, &settings, &listing, &archives, None).0.unwrap();
        assert_eq!((r.parts_uploaded, r.bytes_uploaded), (3, u64::MAX));
        let root = on_disk(&settings.name, &j);
        let r = resumable(root.path(), (&settings.name, Owner::Anyone), &listing).unwrap();
        assert_eq!((r.parts_uploaded, r.bytes_uploaded), (3, u64::MAX));
    }

    /// A journal an older dbackup wrote records no `parts_planned` (it came with 81c97dd): `status` knows the parts
    /// uploaded, not of how many, and says so; it never counts the upload as all uploaded ("4 of 4").
    #[test]
    fn an_older_journal_says_its_parts_uploaded_not_of_how_many() {
        // What b9ba03b wrote for an upload killed after 2 parts (its hashes and recipient shortened).
        let stamp = "2026-12-07-060530";
        let old = r#"{"format":1,"stamp":"2026-12-07-060530","key":{"destination":"offsite",
            "place":"s3 http://127.0.0.1:50693 dbackup-test/upgA","dbackup_version":"0.1.0","part_bytes":5242880,
            "recipients":["age1xf2vufz8v965k42zq6ayv0c5pfg9u7y0h42h8klc8klndf82as6qmm8y9r"],
            "sets":[{"set":"docs","snapshot":"docs-2026-12-07-060528","archive":"docs.tar.age","base":null,
            "compare_content":false}]},"parts":{"docs":[
            {"name":"docs.tar.part000.age","bytes":5244405,"sha256":"8c83c59a659c6639883c9a4b04ba512fd82ab93b22ae821e283a952b977f7049",
             "plain_bytes":5242880,"plain_sha256":"a98da45af010450a107be524f1ca2cedbfe9718655ed3d2341ee36944ea3b0d1"},
            {"name":"docs.tar.part001.age","bytes":5244405,"sha256":"8c83c59a659c6639883c9a4b04ba512fd82ab93b22ae821e283a952b977f7049",
             "plain_bytes":5242880,"plain_sha256":"a98da45af010450a107be524f1ca2cedbfe9718655ed3d2341ee36944ea3b0d1"}]}}"#;
        let j: Journal = serde_json::from_str(old).unwrap();
        let root = on_disk("offsite", &j);
        let listing = CloudListing {
            sizes: (0..2)
                .map(|n| (format!("{BACKUPS}{stamp}/docs.tar.part00{n}.age"), 5244405))
                .collect(),
            unfinished: vec![crate::external::bucket::UnfinishedStamp {
                stamp: stamp.into(),
                objects: 2,
                bytes: 2 * 5244405,
            }],
            ..Default::default()
        };
        let r = resumable(root.path(), ("offsite", Owner::Anyone), &listing).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["parts_uploaded"], 2, "{v}");
        assert!(
            v.get("parts_total").is_none(),
            "an older journal does not say how many parts its upload has: {v}"
        );
        assert_eq!(
            r.uploaded_words(),
            "2 parts uploaded (10.0 MiB; its journal, from an older dbackup, does not say of how many)"
        );
    }

    #[test]
    fn the_part_size_comes_from_the_environment_within_bounds() {
        let env = |v: Option<&str>| crate::expand::Env {
            vars: v
                .map(|v| (PART_BYTES_VAR.to_string(), v.to_string()))
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(part_bytes(&env(None)), PART_BYTES);
        assert_eq!(part_bytes(&env(Some("262144"))), 262144);
        assert_eq!(part_bytes(&env(Some("1"))), MIN_PART_BYTES);
        assert_eq!(part_bytes(&env(Some("lots"))), PART_BYTES);
        assert_eq!(part_bytes(&env(Some("99999999999999"))), PART_BYTES);
    }
}
