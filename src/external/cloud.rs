//! Cloud destinations as targets of the external phase: what a bucket holds under `<prefix>/backups/` (observed
//! through [`crate::cloud::Store`]), the pure plan of one upload, and its execution. The layout is the drive's:
//! `backups/<stamp>/<set>.tar[.age].partNNN` (objects of [`PART_BYTES`], so a cold-storage restore thaws only the
//! part it needs), `<set>.index.jsonl` or `<set>.index.age`, `verification.sha256`, then `backup.json`, written
//! last: it is the promotion (a stamp without it is an unfinished upload, never listed as a backup, removed by the
//! next run), then `backups/LATEST`.
//!
//! The archive streams from the local snapshot through the same writer and encryption as a drive's (no staging copy
//! on local disk); each upload part carries a CRC32C the server checks; afterwards every object is listed and its
//! size compared with what was written (the sha256 of every object, computed on the way, is in
//! `verification.sha256`, which `sha256sum -c` checks against downloaded objects; a full read-back is
//! `restore --verify --source cloud`, which costs egress). With `object_lock_days` every object is written with
//! compliance retention, and before the promotion the objects uploaded in parts and the parts a resume reused get
//! this run's date by PutObjectRetention ([`lock_after_upload`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Local, Utc};
use serde::{Deserialize, Serialize};

use super::exec::{DestinationReport, DestinationStatus};
use super::layout::{self, BackupMeta, FilesystemRecord, ReadBackRecord};
use super::observe::Observed;
use super::plan::{ArchiveTarget, ExternalPlan, SetAction, SetPlan};
use crate::archive::sums::{SumLine, write_sums};
use crate::archive::{self, ArchiveOptions, EncryptionRecord, NoProgress};
use crate::cloud::sink::CloudSink;
use crate::cloud::{ObjectClass, Store, Unfinished};
use crate::exit::Exit;
use crate::settings::CloudSettings;
use crate::snapshot;
use crate::ui::Ui;

/// The size of one archive object: an interrupted upload loses at most one, and a cold-storage restore thaws
/// only the objects it reads.
pub const PART_BYTES: u64 = 128 << 20;

/// The key prefix of the backups, relative to the destination's prefix.
pub const BACKUPS: &str = "backups/";

/// What a bucket holds under `backups/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudListing {
    /// Stamps with a `backup.json`: backups, oldest first.
    pub backups: Vec<String>,
    /// Stamps without one: unfinished uploads of a killed or failed run, with their objects' count and bytes.
    pub unfinished: Vec<UnfinishedStamp>,
    /// Multipart uploads begun and never completed (their parts are stored, and billed, until aborted).
    pub uploads: Vec<String>,
    /// What `backups/LATEST` names.
    pub latest: Option<String>,
    /// Objects under `backups/` that are no part of dbackup's layout (left alone).
    pub other: Vec<String>,
    /// The size of every object under a stamp, by key (`backups/<stamp>/<name>`): what a chain's files are checked
    /// against.
    #[serde(skip)]
    pub sizes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedStamp {
    pub stamp: String,
    pub objects: u64,
    pub bytes: u64,
}

/// A selected cloud destination: its settings, the store opened on it, and what it holds (or why it could not be
/// looked at).
#[derive(Clone)]
pub struct CloudWorld {
    pub settings: CloudSettings,
    pub store: Option<Arc<Store>>,
    pub listing: CloudListing,
    /// Unfinished multipart uploads found (to abort).
    pub uploads: Vec<Unfinished>,
    /// Why the destination cannot be used (keys, network, bucket): the run fails on it, the others go on.
    pub error: Option<String>,
    pub encryption: Option<EncryptionRecord>,
    pub passphrase_file: Option<std::path::PathBuf>,
    /// The bucket's backups with their `backup.json` (read once: retention's view), and its chains as far as the
    /// next upload needs them ([`observe_chains`]).
    pub chains: CloudChains,
    /// The backup root, where the local copies of encrypted indexes live (`external::index_copy`).
    pub backup_root: std::path::PathBuf,
    /// The local index copies kept for this destination ([`super::index_copy::list`]).
    pub index_copies: Vec<String>,
    /// The part size and the unfinished upload that may be resumed ([`super::resume`]).
    pub resume: super::resume::ResumeWorld,
}

impl std::fmt::Debug for CloudWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWorld")
            .field("name", &self.settings.name)
            .field("listing", &self.listing)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// Opens the destination and lists what it holds. Never fails: a destination that cannot be reached is recorded
/// with its error, which the plan turns into a refusal.
pub fn observe(cloud: &CloudSettings, ui: &Ui) -> CloudWorld {
    let mut world = CloudWorld {
        settings: cloud.clone(),
        store: None,
        listing: CloudListing::default(),
        uploads: Vec::new(),
        error: None,
        encryption: None,
        passphrase_file: None,
        chains: CloudChains::default(),
        backup_root: std::path::PathBuf::new(),
        index_copies: Vec::new(),
        resume: Default::default(),
    };
    let env = crate::expand::Env::from_process();
    let store = match Store::open(cloud, &env, Local::now().time()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            world.error = Some(e.to_string());
            return world;
        }
    };
    ui.step(format_args!("{}: looking at {}", cloud.name, store.place()));
    match list(&store, true) {
        Ok((listing, uploads)) => {
            world.listing = listing;
            world.uploads = uploads;
        }
        Err(e) => world.error = Some(e.to_string()),
    }
    world.store = Some(store);
    world
}

/// One listing of `backups/`, grouped by stamp; with `full`, also `LATEST` and the unfinished multipart uploads
/// under it (what a writer needs; a reader spares the two requests).
pub fn list(
    store: &Store,
    full: bool,
) -> Result<(CloudListing, Vec<Unfinished>), crate::cloud::CloudError> {
    let objects = store.list(BACKUPS)?;
    let mut stamps: BTreeMap<String, (bool, u64, u64)> = BTreeMap::new();
    let mut listing = CloudListing::default();
    for o in &objects {
        let rest = o.key.strip_prefix(BACKUPS).unwrap_or(&o.key);
        match rest.split_once('/') {
            Some((stamp, file)) if snapshot::parse_stamp(stamp).is_some() => {
                let e = stamps.entry(stamp.to_string()).or_default();
                e.0 |= file == layout::METADATA_FILE;
                e.1 += 1;
                e.2 = e.2.saturating_add(o.size);
                listing.sizes.insert(o.key.clone(), o.size);
            }
            None if rest == layout::LATEST_FILE => {}
            _ => listing.other.push(crate::stdx::show_str(rest)),
        }
    }
    for (stamp, (complete, objects, bytes)) in stamps {
        if complete {
            listing.backups.push(stamp);
        } else {
            listing.unfinished.push(UnfinishedStamp {
                stamp,
                objects,
                bytes,
            });
        }
    }
    if !full {
        return Ok((listing, Vec::new()));
    }
    if objects
        .iter()
        .any(|o| o.key == format!("{BACKUPS}{}", layout::LATEST_FILE))
    {
        listing.latest = store
            .get(&format!("{BACKUPS}{}", layout::LATEST_FILE))
            .ok()
            .and_then(|b| layout::parse_latest(&b));
    }
    let uploads = store.unfinished_uploads(BACKUPS)?;
    listing.uploads = uploads
        .iter()
        .map(|u| crate::stdx::show_str(&u.key))
        .collect();
    Ok((listing, uploads))
}

/// The most `backup.json` files checked against their sums for a bucket's chains (one small GET each: the sums).
const MAX_META_READS: usize = 64;

/// What a bucket says about its backups and the chains the next upload would extend: every backup with its
/// `backup.json` (read once; those the chains go through also checked against their sums), the backups whose
/// objects are missing or not their recorded size, for an encrypted destination whether the local copy of each
/// base's index is trusted, and for each set whose next archive would be an incremental, its base's index
/// downloaded and checked (or why it cannot be used) with what the change detection would store.
#[derive(Debug, Clone, Default)]
pub struct CloudChains {
    pub listing: layout::DriveListing,
    pub damaged: BTreeMap<String, String>,
    /// Encrypted: each set's base copy (`external::index_copy::trusted`): its path, or why not.
    pub copies: BTreeMap<String, Result<std::path::PathBuf, String>>,
    pub bases: BTreeMap<String, Result<BaseIndex, String>>,
    pub estimates: BTreeMap<String, crate::archive::ArchiveEstimate>,
}

/// A base's index, downloaded (one GET when it is at most 8 MiB) and matched against the size and sha256 its
/// `backup.json` records (which matched its `verification.sha256`): plain, kept in an anonymous temporary file;
/// encrypted, only hashed, the manifest then read from its trusted local plaintext copy (`external::index_copy`).
#[derive(Debug, Clone)]
pub struct BaseIndex {
    pub stamp: String,
    file: Arc<std::fs::File>,
}

/// What decides full or incremental on a bucket, besides its chains (the run's, as for drives).
#[derive(Debug, Clone, Copy)]
pub struct ChainPolicy {
    pub policy: crate::config::IncrementalPolicy,
    pub force_full: bool,
    pub content_every: Option<chrono::Duration>,
    pub now: chrono::NaiveDateTime,
}

impl ChainPolicy {
    /// The next archive of `set` on this bucket: full or incremental, and why ([`super::chain::choose`], as on a
    /// drive), a base that could not be fetched or checked turning it into a full that says so.
    pub fn choose(&self, w: &CloudWorld, set: &str) -> super::chain::ArchiveChoice {
        let choice = self.chain_choice(w, set);
        match (&choice.base, w.chains.bases.get(set)) {
            (Some(base), Some(Err(why))) => super::chain::ArchiveChoice::full(format!(
                "full: the base {base} cannot be used: {why}"
            )),
            (Some(base), None) => super::chain::ArchiveChoice::full(format!(
                "full: the index of the base {base} was not fetched"
            )),
            _ => choice,
        }
    }

    /// What the chain alone says (before the base's index is fetched).
    fn chain_choice(&self, w: &CloudWorld, set: &str) -> super::chain::ArchiveChoice {
        super::chain::choose(
            super::chain::ChoiceInputs {
                policy: self.policy,
                force_full: self.force_full,
                encryption: w.encryption.as_ref(),
                content_every: self.content_every,
                now: self.now,
                // An encrypted set's base manifest is the local plaintext copy of its index (`index_copy`).
                base_copy: w
                    .chains
                    .copies
                    .get(set)
                    .map(|r| r.as_ref().map(|_| ()).map_err(String::as_str)),
            },
            super::chain::facts(&w.chains.listing, set, &w.chains.damaged).as_ref(),
        )
    }
}

/// Reads backup `stamp`'s `backup.json` from the bucket and checks it against its `verification.sha256` (two
/// small GETs): a backup's metadata altered on the server is refused, as are names in it that are not plain.
pub fn read_meta(store: &Store, stamp: &str) -> anyhow::Result<BackupMeta> {
    let dir = format!("{BACKUPS}{stamp}/");
    let meta_bytes = store.get(&format!("{dir}{}", layout::METADATA_FILE))?;
    check_sums_line(store, stamp, archive::Digest::of_bytes(&meta_bytes))?;
    let path =
        std::path::PathBuf::from(format!("{} {dir}{}", store.place(), layout::METADATA_FILE));
    let meta = layout::parse_metadata(&meta_bytes, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    check_meta_names(&meta, &path)?;
    Ok(meta)
}

/// Checks that backup `stamp`'s `backup.json`, read already (its sha256 `digest`), is the one its
/// `verification.sha256` lists (one small GET).
pub fn check_sums_line(store: &Store, stamp: &str, digest: archive::Digest) -> anyhow::Result<()> {
    let dir = format!("{BACKUPS}{stamp}/");
    let sums = store.get(&format!("{dir}{}", layout::SUMS_FILE))?;
    let sums = crate::archive::sums::parse_sums(&sums)
        .map_err(|e| anyhow::anyhow!("{dir}{}: {e}", layout::SUMS_FILE))?;
    let listed = sums
        .iter()
        .rev()
        .find(|l| l.name == layout::METADATA_FILE.as_bytes())
        .map(|l| l.sha256);
    if listed != Some(digest) {
        anyhow::bail!(
            "{dir}{} on {} does not match its line in {}: the backup's metadata was altered",
            layout::METADATA_FILE,
            store.place(),
            layout::SUMS_FILE
        );
    }
    Ok(())
}

/// The names a bucket's `backup.json` records are joined to keys: plain names only, as on a drive.
fn check_meta_names(meta: &BackupMeta, path: &std::path::Path) -> anyhow::Result<()> {
    for s in &meta.sets {
        for f in s.files() {
            if !layout::is_plain_name(&f.name) {
                anyhow::bail!(
                    "{}: {} is not a plain file name",
                    path.display(),
                    crate::stdx::show_str(&f.name)
                );
            }
        }
    }
    Ok(())
}

/// The backups of a bucket and its chains for the sets `chosen` (set, snapshot name): every backup's
/// `backup.json`, read once ([`super::bucket::read_listed`]: retention's view too); those the chains go through
/// (the newest backup, the newest holding each chosen set, and every backup their chains go through) checked
/// against their sums ([`check_sums_line`]) and their objects against the listing's sizes; for an encrypted
/// destination, whether the local copy of each base's index is trusted; then, for each set whose next archive is
/// an incremental, its base's index downloaded and checked, and the change detection run against it for the dry
/// run's estimate.
pub fn observe_chains(
    w: &mut CloudWorld,
    chosen: &[(String, String)],
    policy: &ChainPolicy,
    backup_root: &std::path::Path,
    ui: &Ui,
) {
    w.backup_root = backup_root.to_path_buf();
    w.index_copies = super::index_copy::list(backup_root, &w.settings.name);
    let Some(store) = w.store.clone() else { return };
    if w.error.is_some() {
        return;
    }
    let read = match super::bucket::read_listed(&store, w.listing.clone(), false) {
        Ok(r) => r,
        Err(e) => {
            w.error = Some(e.to_string());
            return;
        }
    };
    let mut backups = read.backups;
    check_chain_metas(&store, &mut backups, &read.digests, chosen);
    w.chains.damaged = damaged_objects(&backups, &w.listing.sizes);
    w.chains.listing = layout::DriveListing {
        exists: true,
        backups,
        leftovers: Vec::new(),
        latest: w.listing.latest.clone(),
        other: Vec::new(),
    };
    for (set, name) in chosen {
        if w.encryption.is_some()
            && let Some(f) = super::chain::facts(&w.chains.listing, set, &w.chains.damaged)
        {
            let copy = super::observe::base_copy(
                backup_root,
                &w.settings.name,
                &w.chains.listing,
                &f.base,
                set,
            );
            w.chains.copies.insert(set.clone(), copy);
        }
        let choice = policy.chain_choice(w, set);
        if choice.base.is_none() {
            continue;
        }
        let copy = w.chains.copies.get(set).and_then(|c| c.as_deref().ok());
        let base = fetch_base(&store, &w.chains.listing, set, &choice, copy);
        if let Ok(b) = &base {
            ui.step(format_args!(
                "{}: {set}: the index of the base {} downloaded and checked",
                w.settings.name, b.stamp
            ));
            let mut inc = incremental_base(b, set, &choice, backup_root);
            inc.compare_content = false;
            if let Ok((_, estimate)) =
                archive::scan_both(&backup_root.join(name), &inc, &mut NoProgress)
            {
                w.chains.estimates.insert(set.clone(), estimate);
            }
        }
        w.chains
            .bases
            .insert(set.clone(), base.map_err(|e| crate::ui::format_error(&e)));
    }
}

/// Checks the `backup.json` of every backup a chain of the next upload can go through against its sums (read once
/// already: `digests`) and its names; one that fails keeps no metadata (`meta_error` says why), as an unreadable
/// one. At most [`MAX_META_READS`] are checked.
fn check_chain_metas(
    store: &Store,
    backups: &mut [layout::DriveBackup],
    digests: &BTreeMap<String, archive::Digest>,
    chosen: &[(String, String)],
) {
    let holding = |set: &str| {
        backups
            .iter()
            .rev()
            .find(|b| {
                b.meta
                    .as_ref()
                    .is_some_and(|m| m.sets.iter().any(|s| s.set == set))
            })
            .map(|b| b.name.clone())
    };
    let mut todo: Vec<String> = backups.last().map(|b| b.name.clone()).into_iter().collect();
    todo.extend(chosen.iter().filter_map(|(set, _)| holding(set)));
    let mut checked = BTreeSet::new();
    while let Some(stamp) = todo.pop() {
        if checked.len() >= MAX_META_READS || !checked.insert(stamp.clone()) {
            continue;
        }
        let Some(b) = backups.iter_mut().find(|b| b.name == stamp) else {
            continue;
        };
        let Some(m) = &b.meta else { continue };
        let ok = digests
            .get(&stamp)
            .ok_or_else(|| anyhow::anyhow!("its {} was not read", layout::METADATA_FILE))
            .and_then(|d| check_sums_line(store, &stamp, *d))
            .and_then(|()| check_meta_names(m, &b.path));
        match ok {
            Ok(()) => {
                todo.extend(m.sets.iter().filter_map(|s| s.base.clone()));
                todo.extend(m.depends_on.iter().cloned());
            }
            Err(e) => {
                b.meta = None;
                b.meta_error = Some(crate::ui::format_error(&e));
            }
        }
    }
}

/// The backups (with metadata) whose archive or index objects are missing from the bucket or not the size their
/// `backup.json` records, with why.
fn damaged_objects(
    backups: &[layout::DriveBackup],
    sizes: &BTreeMap<String, u64>,
) -> BTreeMap<String, String> {
    let mut damaged = BTreeMap::new();
    for b in backups {
        let Some(m) = &b.meta else { continue };
        for f in m.sets.iter().flat_map(layout::SetRecord::files) {
            let why = match sizes.get(&format!("{BACKUPS}{}/{}", b.name, f.name)) {
                Some(&n) if n == f.bytes => continue,
                Some(n) => format!("{} is {n} bytes, not the {} recorded", f.name, f.bytes),
                None => format!("{} is not in the bucket", f.name),
            };
            damaged.insert(b.name.clone(), crate::stdx::show_str(&why));
            break;
        }
    }
    damaged
}

/// Downloads the index of the base `choice` names for `set` and checks it against the size and sha256 its
/// `backup.json` records. An encrypted index is only hashed: the manifest is its trusted local plaintext copy
/// (`copy`, whose record names exactly that encrypted index).
fn fetch_base(
    store: &Arc<Store>,
    listing: &layout::DriveListing,
    set: &str,
    choice: &super::chain::ArchiveChoice,
    copy: Option<&std::path::Path>,
) -> anyhow::Result<BaseIndex> {
    use sha2::Digest as _;
    use std::io::{Read, Write};
    let base = choice
        .base
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no base"))?;
    let rec = listing
        .backups
        .iter()
        .find(|b| &b.name == base)
        .and_then(|b| b.meta.as_ref())
        .and_then(|m| m.sets.iter().find(|s| s.set == set))
        .ok_or_else(|| anyhow::anyhow!("it holds no set {set}"))?;
    let [index] = rec.index.as_slice() else {
        anyhow::bail!("its index is not one object");
    };
    let encrypted = crate::archive::crypt::is_encrypted_name(index.name.as_bytes());
    let copy = match (encrypted, copy) {
        (true, Some(path)) => Some(super::index_copy::open_file(path)?),
        (true, None) => anyhow::bail!("no trusted local copy of its encrypted index"),
        (false, _) => None,
    };
    let key = format!("{BACKUPS}{base}/{}", index.name);
    let mut reader = store.ranged(&key, index.bytes);
    let mut file = if copy.is_none() {
        Some(tempfile::tempfile()?)
    } else {
        None
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; crate::cloud::store::RANGE_MAX as usize];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(f) = &mut file {
            f.write_all(&buf[..n])?;
        }
        bytes += n as u64;
    }
    if (bytes, archive::Digest::of(hasher)) != (index.bytes, index.sha256) {
        anyhow::bail!(
            "its index {} is not the one backup.json records (size or sha256)",
            crate::stdx::show_str(&index.name)
        );
    }
    let file = copy
        .or(file)
        .ok_or_else(|| anyhow::anyhow!("no manifest"))?;
    Ok(BaseIndex {
        stamp: base.clone(),
        file: Arc::new(file),
    })
}

/// The base an incremental upload is written against: the downloaded index as its manifest, and the local
/// snapshot the base was made from when it still exists (its inodes then decide what changed).
fn incremental_base(
    b: &BaseIndex,
    set: &str,
    choice: &super::chain::ArchiveChoice,
    backup_root: &std::path::Path,
) -> crate::archive::incremental::IncrementalBase {
    // A name from the bucket: used only when it is this set's snapshot name (`<set>-<stamp>`).
    let snapshot = choice
        .base_snapshot
        .as_deref()
        .filter(|n| {
            n.strip_prefix(&format!("{set}-"))
                .is_some_and(|s| snapshot::parse_stamp(s).is_some())
        })
        .map(|n| backup_root.join(n))
        .filter(|p| p.is_dir());
    let file = b.file.clone();
    crate::archive::incremental::IncrementalBase {
        stamp: b.stamp.clone(),
        open_manifest: Box::new(move || {
            use std::io::Seek;
            let mut f = file.try_clone()?;
            f.seek(std::io::SeekFrom::Start(0))?;
            Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f))
                as Box<dyn std::io::BufRead>)
        }),
        snapshot,
        compare_content: choice.compare_content,
    }
}

/// Everything that happens on one cloud destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudPlan {
    pub name: String,
    /// `s3 https://endpoint bucket/prefix`: no secret.
    pub place: String,
    pub priority: i32,
    /// Why nothing is uploaded (the destination cannot be reached, its keys are refused, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Where the backup goes, relative to the prefix: `backups/<stamp>/` (the run's stamp, or the one resumed).
    pub dir: String,
    /// The unfinished upload this run resumes (its stamp is `dir`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<super::resume::ResumePlan>,
    /// Why the unfinished upload found is not resumed (it is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_refused: Option<String>,
    /// Unfinished uploads of earlier runs, removed first: stamps without `backup.json`, and multipart uploads.
    pub cleanup_stamps: Vec<UnfinishedStamp>,
    pub abort_uploads: Vec<String>,
    pub archives: Vec<ArchiveTarget>,
    /// Bytes to upload (archives and indexes, as they will be).
    pub upload_bytes: u64,
    /// Objects written with Object Lock retention until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_archives: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<std::path::PathBuf>,
    /// What `backups/LATEST` names now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_previous: Option<String>,
    /// Backups already there.
    pub existing: Vec<String>,
    /// Retention after the upload is verified (`retention` of the destination): keep or remove, with reasons.
    #[serde(default)]
    pub retention: crate::config::RetentionPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<crate::retention::Decision>,
    /// Encrypted with incrementals on: where the local plaintext copy of each index goes (owner-only; the next
    /// incremental's base manifest, `external::index_copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_copy_dir: Option<std::path::PathBuf>,
    /// Local index copies of this destination removed after the upload: no longer a base (`<stamp>/<set>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_copies_removed: Vec<String>,
}

impl CloudPlan {
    /// The stamp of the backup uploaded: the run's, or the unfinished upload's it resumes.
    pub fn stamp(&self) -> &str {
        self.dir.trim_start_matches(BACKUPS).trim_end_matches('/')
    }
}

/// Plans one upload: each set's archive full or incremental as on a drive ([`ChainPolicy::choose`]). Pure.
pub fn plan(
    w: &CloudWorld,
    sets: &[SetPlan],
    stamp: &str,
    now: DateTime<Utc>,
    chains: &ChainPolicy,
) -> CloudPlan {
    let enc = w.encryption.as_ref();
    let sized = |plain: u64| match enc {
        Some(e) => crate::archive::crypt::encrypted_len(plain, e.recipients.len()),
        None => plain,
    };
    let mut upload_bytes = 0u64;
    let archives: Vec<ArchiveTarget> = sets
        .iter()
        .filter(|s| s.action == SetAction::Export)
        .filter_map(|s| {
            let mut choice = chains.choose(w, &s.set);
            // An incremental is sized by its change detection (not for a content comparison, which may store
            // more); otherwise as a full: an upper bound.
            let incremental = w
                .chains
                .estimates
                .get(&s.set)
                .filter(|_| choice.base.is_some() && !choice.compare_content);
            if let Some(e) = incremental {
                choice.reason.push_str(&format!(
                    ": {} to store ({}), {} kept in earlier backups",
                    crate::stdx::counted(e.files, "file", "files"),
                    crate::stdx::bytes(e.file_bytes),
                    e.referenced_files
                ));
            }
            let est = incremental.or(s.estimate.as_ref())?;
            let (tar, index) = (sized(est.tar_bytes), sized(est.index_bytes));
            upload_bytes = upload_bytes.saturating_add(tar).saturating_add(index);
            Some(ArchiveTarget {
                set: s.set.clone(),
                snapshot: s.snapshot.clone()?,
                archive: layout::archive_name(&s.set, enc.is_some()),
                part_bytes: Some(w.resume.part_bytes),
                index: layout::index_name(&s.set, enc.is_some()),
                index_part_bytes: None,
                choice,
                tar_bytes: tar,
                index_bytes: index,
                encrypted: enc.is_some(),
            })
        })
        .collect();
    let (resume, resume_refused) = super::resume::plan(w, &archives, enc);
    let stamp = resume
        .as_ref()
        .map_or(stamp.to_string(), |r| r.stamp.clone());
    let plain_refused = (enc.is_none() && !w.settings.allow_unencrypted).then(|| {
        "its archives would leave the machine unencrypted; give it \"encryption\" (or \"allow_unencrypted\": true)"
            .to_string()
    });
    CloudPlan {
        name: w.settings.name.clone(),
        place: w.settings.place(),
        priority: w.settings.priority,
        refusal: w.error.clone().or(plain_refused),
        dir: format!("{BACKUPS}{stamp}/"),
        resume,
        resume_refused,
        cleanup_stamps: w
            .listing
            .unfinished
            .iter()
            .filter(|u| u.stamp != stamp)
            .cloned()
            .collect(),
        abort_uploads: w.listing.uploads.clone(),
        archives,
        upload_bytes,
        locked_until: w
            .settings
            .object_lock_days
            .map(|d| now + chrono::Duration::days(i64::from(d))),
        storage_class_archives: w.settings.storage_class_archives.clone(),
        encryption: w.encryption.clone(),
        passphrase_file: w.passphrase_file.clone(),
        latest_previous: w.listing.latest.clone(),
        existing: w.listing.backups.clone(),
        retention: w.settings.retention,
        decisions: Vec::new(),
        index_copy_dir: (enc.is_some() && chains.policy.enabled).then(|| {
            w.backup_root
                .join(super::index_copy::DIR)
                .join(&w.settings.name)
                .join(stamp)
        }),
        index_copies_removed: Vec::new(),
    }
}

/// Adds to an upload's plan the local index copies it leaves stale (`external::index_copy::stale`): those of
/// backups retention removes, and those superseded by this upload's copies. Pure; after `bucket::plan_retention`.
pub fn plan_index_copies(p: &mut CloudPlan, w: &CloudWorld) {
    if p.refusal.is_some() || p.archives.is_empty() {
        return;
    }
    let mut after = w.chains.listing.clone();
    after.backups.retain(|b| {
        p.decisions.is_empty() || p.decisions.iter().any(|x| x.keep && x.name == b.name)
    });
    let written: Vec<String> = p
        .archives
        .iter()
        .filter(|_| p.index_copy_dir.is_some())
        .map(|a| a.set.clone())
        .collect();
    p.index_copies_removed = super::index_copy::stale(&w.index_copies, &after, &written);
}

/// The plan as the dry run prints it, one destination.
pub fn render(p: &CloudPlan, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "destination {} ({}):", p.name, p.place);
    if let Some(r) = &p.refusal {
        let _ = writeln!(out, "  REFUSED: {r}");
        return;
    }
    for u in &p.cleanup_stamps {
        let _ = writeln!(
            out,
            "  remove unfinished upload {}{}/ ({} objects, {}; no backup.json)",
            BACKUPS,
            u.stamp,
            u.objects,
            crate::stdx::bytes(u.bytes)
        );
    }
    for u in &p.abort_uploads {
        let _ = writeln!(out, "  abort unfinished multipart upload of {u}");
    }
    super::resume::render(p, out);
    for a in &p.archives {
        let _ = writeln!(
            out,
            "  upload {} -> {}{} (objects of {}) and {}{}: about {}",
            a.snapshot,
            p.dir,
            super::resume::objects_shown(&a.archive, p.encryption.as_ref()),
            crate::stdx::bytes(a.part_bytes.unwrap_or(PART_BYTES)),
            p.dir,
            a.index,
            crate::stdx::bytes(a.tar_bytes.saturating_add(a.index_bytes))
        );
        let _ = writeln!(out, "    {}", a.choice.reason);
    }
    let _ = writeln!(
        out,
        "  then {}{} and {}{} (last: the promotion), {}{}",
        p.dir,
        layout::SUMS_FILE,
        p.dir,
        layout::METADATA_FILE,
        BACKUPS,
        layout::LATEST_FILE
    );
    if let Some(until) = p.locked_until {
        let _ = writeln!(
            out,
            "  every object locked (Object Lock, compliance) until {until}"
        );
    }
    let _ = writeln!(
        out,
        "  {} to upload; {} backups there already",
        crate::stdx::bytes(p.upload_bytes),
        p.existing.len()
    );
    super::bucket::render_retention(p, out);
    super::index_copy::render(p.index_copy_dir.as_deref(), &p.index_copies_removed, out);
}

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
                    super::bucket::apply_retention(p, store, &mut report, ui);
                    let warned = report.sets.iter().any(|s| s.warning_count > 0)
                        || !report.warnings.is_empty();
                    report.exit = if warned { Exit::Warnings } else { Exit::Ok }.code();
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
    report.seconds = clock.elapsed().as_secs_f64();
    report
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
        Err(e) if e.downcast_ref::<super::resume::Stopped>().is_some() => e,
        done => return done,
    };
    let p = u.p;
    u.ui.warn(format_args!(
        "{}: {}; uploading a new backup instead",
        p.name,
        crate::ui::format_error(&err)
    ));
    super::resume::remove(&u.observed.world.backup_root, &p.name, p.stamp());
    let cleaned = std::mem::take(&mut report.cleaned);
    *report = DestinationReport::failed(p.name.clone(), p.place.clone().into());
    report.cleaned = cleaned;
    report.warnings.push(crate::ui::format_error(&err));
    let q = super::resume::restarted(p, &u.plan.stamp);
    upload(&Upload { p: &q, ..*u }, report)
}

/// One upload in the order it must happen: what a killed run left removed, the archives, every object listed,
/// the locks, then the sums, the promotion (`backup.json`) and LATEST.
fn upload(u: &Upload, report: &mut DestinationReport) -> anyhow::Result<()> {
    let (p, world, store, ui) = (u.p, u.world, u.store, u.ui);
    let started = Local::now().fixed_offset();
    let encrypt =
        super::exec::open_encryption(p.encryption.as_ref(), world.settings.encryption.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(Arc::new);
    let enc = Encrypting {
        parted: encrypt
            .clone()
            .filter(|_| super::resume::parts_encrypted(p.encryption.as_ref())),
        encrypt,
    };
    clean_killed_run(u, report)?;
    let stamp = p.stamp().to_string();
    let backup_root = &u.observed.world.backup_root;
    let resumer = super::resume::start(p, world, backup_root).unwrap_or_else(|e| {
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
    if let Some(until) = p.locked_until {
        let reused = resumer
            .as_ref()
            .map(super::resume::Resumer::skipped_names)
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
    let meta = super::exec::verified_meta(
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
    resumer: Option<&super::resume::Resumer>,
    copies: Option<&super::index_copy::Pending>,
) -> anyhow::Result<(layout::SetRecord, Vec<String>)> {
    let (p, store, ui) = (u.p, u.store, u.ui);
    let parted = &enc.parted;
    let scan = &u.observed.scans[&a.set];
    let class = |c| c;
    let mut archive_sink = CloudSink::new(
        store.clone(),
        &p.dir,
        super::resume::object_base(&a.archive, parted.is_some()),
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
        },
        &mut NoProgress,
    )
    .map_err(|e| match resumer.and_then(|r| r.differs()) {
        Some(part) => anyhow::Error::new(super::resume::Stopped {
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
    let mut rec = super::exec::set_record(
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

/// The sums, then the promotion (`backup.json` makes the stamp a backup; not after an interruption), then LATEST.
fn promote(
    u: &Upload,
    meta: &BackupMeta,
    mut sums: Vec<SumLine>,
    resumer: Option<&super::resume::Resumer>,
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
    put(format!("{}{}", p.dir, layout::METADATA_FILE), &meta_bytes)?;
    report.backup = Some(meta.stamp.clone());
    if let Some(r) = resumer {
        super::resume::finished(r, p, u.ui, report);
    }
    report.backup_path = Some(format!("{} {}", p.place, p.dir).into());
    // LATEST is replaced on every run: never locked.
    store.put(
        &format!("{BACKUPS}{}", layout::LATEST_FILE),
        format!("{}\n", meta.stamp).as_bytes(),
        ObjectClass::Metadata,
    )?;
    report.latest = Some(layout::LatestKind::File);
    Ok(())
}

/// With Object Lock (`object_lock_days`), before the promotion: the retention of each object a multipart upload
/// wrote (more than one [`crate::cloud::store::PART_SIZE`]: its lock headers went with CreateMultipartUpload,
/// which some servers drop, moto among them) and of each part reused from a killed run (`reused`: locked until that
/// run's date) set to this run's date by PutObjectRetention. A refusal leaves the backup in place, unlocked as far
/// as the server says: a warning (exit 3) naming the objects, pointing at `cloud check`, which tests the bucket.
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
/// checked ([`observe_chains`]).
fn upload_base(
    a: &ArchiveTarget,
    world: &CloudWorld,
    backup_root: &std::path::Path,
) -> Option<crate::archive::incremental::IncrementalBase> {
    a.choice.base.as_ref()?;
    let b = world.chains.bases.get(&a.set)?.as_ref().ok()?;
    Some(incremental_base(b, &a.set, &a.choice, backup_root))
}

/// Chooses among present drives and cloud destinations together: by priority (highest first; equal priorities
/// keep config order, drives before clouds), all of them, or only the first. Pure.
pub fn select_across(
    mode: crate::config::ExternalMode,
    drives: &[(String, i32)],
    clouds: &[(String, i32)],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut all: Vec<(bool, &str, i32)> = drives
        .iter()
        .map(|(n, p)| (false, n.as_str(), *p))
        .chain(clouds.iter().map(|(n, p)| (true, n.as_str(), *p)))
        .collect();
    all.sort_by_key(|(_, _, p)| std::cmp::Reverse(*p));
    if mode == crate::config::ExternalMode::First {
        all.truncate(1);
    }
    let (mut d, mut c) = (BTreeSet::new(), BTreeSet::new());
    for (cloud, name, _) in all {
        if cloud {
            c.insert(name.to_string());
        } else {
            d.insert(name.to_string());
        }
    }
    (d, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExternalMode;

    #[test]
    fn first_and_all_choose_across_drives_and_clouds_by_priority() {
        let drives = vec![("t9".to_string(), 10), ("usb".to_string(), 0)];
        let clouds = vec![("offsite".to_string(), 20)];
        let (d, c) = select_across(ExternalMode::First, &drives, &clouds);
        assert!(d.is_empty());
        assert_eq!(c.into_iter().collect::<Vec<_>>(), ["offsite"]);
        let (d, c) = select_across(ExternalMode::All, &drives, &clouds);
        assert_eq!(d.len(), 2);
        assert_eq!(c.len(), 1);
        let (d, c) = select_across(ExternalMode::First, &drives, &[("offsite".into(), 10)]);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            ["t9"],
            "a tie keeps drives first"
        );
        assert!(c.is_empty());
        let (d, c) = select_across(ExternalMode::First, &[], &[]);
        assert!(d.is_empty() && c.is_empty());
    }

    fn world(allow_unencrypted: bool) -> CloudWorld {
        let mut settings = crate::cloud::tests::settings("http://127.0.0.1:9", "b");
        settings.allow_unencrypted = allow_unencrypted;
        settings.object_lock_days = Some(30);
        CloudWorld {
            settings,
            store: None,
            listing: CloudListing {
                backups: vec!["2026-12-01-020000".into()],
                unfinished: vec![
                    UnfinishedStamp {
                        stamp: "2026-12-04-020000".into(),
                        objects: 2,
                        bytes: 10,
                    },
                    UnfinishedStamp {
                        stamp: "2026-12-05-020000".into(),
                        objects: 1,
                        bytes: 1,
                    },
                ],
                uploads: vec!["backups/2026-12-04-020000/docs.tar.part000".into()],
                latest: Some("2026-12-01-020000".into()),
                other: vec![],
                sizes: BTreeMap::new(),
            },
            uploads: vec![],
            error: None,
            encryption: None,
            passphrase_file: None,
            chains: CloudChains::default(),
            backup_root: "/root".into(),
            index_copies: vec![],
            resume: super::super::resume::ResumeWorld {
                part_bytes: PART_BYTES,
                candidate: None,
            },
        }
    }

    fn policy() -> ChainPolicy {
        ChainPolicy {
            policy: crate::config::IncrementalPolicy::default(),
            force_full: false,
            content_every: None,
            now: chrono::NaiveDateTime::parse_from_str("2026-12-05 02:00", "%Y-%m-%d %H:%M")
                .unwrap(),
        }
    }

    fn set() -> SetPlan {
        SetPlan {
            set: "docs".into(),
            action: SetAction::Export,
            snapshot: Some("docs-2026-12-05-010000".into()),
            snapshot_path: None,
            complete: true,
            estimate: Some(crate::archive::ArchiveEstimate {
                tar_bytes: 1000,
                index_bytes: 100,
                ..Default::default()
            }),
            warnings: vec![],
        }
    }

    /// The plan of an upload: archives in parts under `backups/<stamp>/`, the unfinished uploads of other stamps
    /// cleaned (never this run's own stamp), the lock date from `object_lock_days`, and a plain archive refused
    /// unless `allow_unencrypted`; an unreachable destination refused with its error.
    #[test]
    fn an_upload_is_planned_and_plain_archives_are_refused_unless_allowed() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = plan(&world(true), &[set()], "2026-12-05-020000", now, &policy());
        assert_eq!(p.refusal, None);
        assert_eq!(p.dir, "backups/2026-12-05-020000/");
        assert_eq!(p.archives.len(), 1);
        assert_eq!(p.archives[0].archive, "docs.tar");
        assert_eq!(p.archives[0].part_bytes, Some(PART_BYTES));
        assert_eq!(p.upload_bytes, 1100);
        let cleaned: Vec<&str> = p.cleanup_stamps.iter().map(|u| u.stamp.as_str()).collect();
        assert_eq!(cleaned, ["2026-12-04-020000"]);
        assert_eq!(p.abort_uploads.len(), 1);
        assert_eq!(p.locked_until, Some(now + chrono::Duration::days(30)));
        assert_eq!(p.latest_previous.as_deref(), Some("2026-12-01-020000"));
        let mut text = String::new();
        render(&p, &mut text);
        assert!(
            text.contains("remove unfinished upload backups/2026-12-04-020000/"),
            "{text}"
        );
        assert!(text.contains("locked (Object Lock, compliance)"), "{text}");

        let p = plan(&world(false), &[set()], "2026-12-05-020000", now, &policy());
        assert!(
            p.refusal.as_deref().unwrap().contains("unencrypted"),
            "{:?}",
            p.refusal
        );
        let mut w = world(true);
        w.error = Some("no answer from s3 ...".into());
        let p = plan(&w, &[set()], "2026-12-05-020000", now, &policy());
        assert_eq!(p.refusal.as_deref(), Some("no answer from s3 ..."));
    }
}
