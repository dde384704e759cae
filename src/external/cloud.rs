//! Cloud destinations as targets of the external phase: what a bucket holds under `<prefix>/backups/` (observed
//! through [`crate::cloud::Store`]) and the pure plan of one upload, which [`super::upload`] carries out. The layout
//! is the drive's:
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
//! this run's date by PutObjectRetention (`upload::lock_after_upload`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Local, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::bucket::{BACKUPS, CloudListing, PART_BYTES, UnfinishedStamp, list};
use super::layout::{self, BackupMeta};
use super::sets::{ArchiveTarget, SetAction, SetPlan};
use crate::archive::{self, EncryptionRecord, NoProgress};
use crate::cloud::{Store, Unfinished};
use crate::settings::CloudSettings;
use crate::ui::Ui;

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
    /// The config's set names: the bucket's backups holding none of them are another config's (one bucket two
    /// configs name alike), never judged by retention (`super::retention::Owner`).
    pub own_sets: Vec<super::retention::OwnSet>,
    /// The part size and the unfinished upload that may be resumed ([`super::resume`]).
    pub resume: super::resume::ResumeWorld,
    /// How long looking at it took (opening, listing, its chains): part of the time its run reports.
    pub looked: std::time::Duration,
}

impl CloudWorld {
    /// Whether the backup or unfinished upload `stamp` is another config's ([`super::retention::Owner`]): by its
    /// `backup.json` when [`observe_chains`] read one (a set of this config's name from other sources is another
    /// config's), else by its objects' names.
    pub fn foreign(&self, stamp: &str, owner: super::retention::Owner) -> bool {
        match self.chains.listing.backups.iter().find(|b| b.name == stamp) {
            Some(b) if b.meta.is_some() => owner.foreign(&super::retention::BackupInfo::new(
                &b.name,
                b.time,
                b.meta.as_ref(),
                false,
            )),
            _ => self.listing.foreign(stamp, owner),
        }
    }
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

/// Opens the destination and lists what it holds. A destination that cannot be reached is recorded with its error,
/// which the plan turns into a refusal (the others go on); one that cannot be opened for what the config or the
/// environment lacks (no keys, an unreadable `AWS_CA_BUNDLE`: exit 2, as `cloud check` says) is an error, found
/// before anything is written.
pub fn observe(cloud: &CloudSettings, ui: &Ui) -> Result<CloudWorld, crate::cloud::CloudError> {
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
        own_sets: Vec::new(),
        resume: Default::default(),
        looked: std::time::Duration::ZERO,
    };
    let env = crate::expand::Env::from_process();
    let store = match Store::open(cloud, &env, Local::now().time()) {
        Ok(s) => Arc::new(s),
        Err(e) if crate::exit::ExitCoded::exit(&e) == crate::exit::Exit::Usage => return Err(e),
        Err(e) => {
            world.error = Some(e.to_string());
            return Ok(world);
        }
    };
    ui.step(format_args!("{}: looking at {}", cloud.name, store.place()));
    match list(&store, true) {
        Ok((mut listing, uploads)) => {
            let seen_from = (crate::media::hostname(), Utc::now());
            super::bucket::read_markers(
                &store,
                &mut listing,
                &uploads,
                (&seen_from.0, seen_from.1),
            );
            world.listing = listing;
            world.uploads = uploads;
        }
        Err(e) => world.error = Some(e.to_string()),
    }
    world.store = Some(store);
    Ok(world)
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
        super::chain::choose_on(
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
            (&w.chains.listing, &w.chains.damaged),
            (set, super::retention::Owner::Sets(&w.own_sets)),
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
/// against their sums ([`check_sums_line`]) and their objects against the listing's sizes, those `restore --verify`
/// found damaged (`damage`: this config's records) counted damaged too (retention's and the chains' view); for an
/// encrypted destination, whether the local copy of each base's index is trusted; then, for each set whose next
/// archive is an incremental, its base's index downloaded and checked, and the change detection run against it for
/// the dry run's estimate.
pub fn observe_chains(
    w: &mut CloudWorld,
    chosen: &[(String, String)],
    policy: &ChainPolicy,
    (backup_root, own_sets, damage): (
        &std::path::Path,
        &[super::retention::OwnSet],
        &[super::damage::Record],
    ),
    ui: &Ui,
) {
    w.backup_root = backup_root.to_path_buf();
    w.own_sets = own_sets.to_vec();
    w.index_copies = super::index_copy::list(
        backup_root,
        &w.settings.name,
        &super::retention::OwnSet::names(own_sets),
    );
    let Some(store) = w.store.clone() else { return };
    if w.error.is_some() {
        return;
    }
    let read = match super::bucket::read_listed(&store, w.listing.clone(), None) {
        Ok(r) => r,
        Err(e) => {
            w.error = Some(e.to_string());
            return;
        }
    };
    let mut backups = read.backups;
    let owner = super::retention::Owner::Sets(own_sets);
    check_chain_metas(&store, &mut backups, (&read.digests, owner), chosen);
    w.chains.damaged = super::bucket::damaged_objects(&backups, &w.listing.sizes);
    w.chains.listing = layout::DriveListing {
        exists: true,
        backups,
        leftovers: Vec::new(),
        latest: w.listing.latest.clone(),
        other: Vec::new(),
    };
    // What `restore --verify` found (an object of its recorded size with other bytes, which the listing cannot see).
    let on = (w.settings.name.as_str(), &w.chains.listing);
    for (stamp, why) in super::damage::on_destination_as(damage, on, super::damage::note_text) {
        w.chains.damaged.entry(stamp).or_insert(why);
    }
    for (set, name) in chosen {
        if w.encryption.is_some()
            && let Some(f) = super::chain::facts(
                &w.chains.listing,
                (set, super::retention::Owner::Sets(&w.own_sets)),
                &w.chains.damaged,
            )
        {
            let copy = super::index_copy::base_copy(
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
/// one. At most [`MAX_META_READS`] are checked. A chain starts at the newest backup holding the `owner`'s set
/// ([`super::chain::facts`]: not another config's set of the same name).
fn check_chain_metas(
    store: &Store,
    backups: &mut [layout::DriveBackup],
    (digests, owner): (&BTreeMap<String, archive::Digest>, super::retention::Owner),
    chosen: &[(String, String)],
) {
    let holding = |set: &str| {
        let own = |s: &layout::SetRecord| {
            s.set == set && owner.owns_set(set, &super::retention::recorded_paths(&s.sources))
        };
        (backups.iter().rev())
            .find(|b| b.meta.as_ref().is_some_and(|m| m.sets.iter().any(own)))
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
        .set_record(base, set)
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
pub(super) fn incremental_base(
    b: &BaseIndex,
    set: &str,
    choice: &super::chain::ArchiveChoice,
    backup_root: &std::path::Path,
) -> crate::archive::incremental::IncrementalBase {
    let snapshot = choice.base_snapshot_in(set, backup_root);
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
    /// Bytes to upload (archives and indexes, as they will be), less what a resumed upload has stored already.
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
    /// This config's backups already there.
    pub existing: Vec<String>,
    /// How many backups on the prefix are another config's (`retention::Owner`): left alone.
    #[serde(default)]
    pub other_configs_backups: usize,
    /// Another config's unfinished uploads on the prefix, left alone for it to resume or remove: stamps' directories
    /// (`backups/<stamp>/`) and multipart uploads' objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_configs_unfinished: Vec<String>,
    /// Unfinished uploads that may still be going (their `upload.json`, [`super::upload_marker`]), whoever's they
    /// are: left alone, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub going: Vec<GoingUpload>,
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

/// An unfinished upload on a bucket that may still be going: left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoingUpload {
    /// `backups/<stamp>/`.
    pub dir: String,
    /// Who is uploading it, since when (its marker), or when it last wrote.
    pub why: String,
}

/// The unfinished uploads of `l` that may still be going, but `stamp`'s.
pub fn going(l: &CloudListing, stamp: &str) -> Vec<GoingUpload> {
    (l.going.iter())
        .filter(|(s, _)| *s != stamp)
        .map(|(s, why)| GoingUpload {
            dir: format!("{BACKUPS}{s}/"),
            why: why.clone(),
        })
        .collect()
}

/// Whether the multipart upload of `key` is under a stamp that may still be going.
fn going_key(l: &CloudListing, key: &str) -> bool {
    key.strip_prefix(BACKUPS)
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(s, _)| l.going.contains_key(s))
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
    let owner = super::retention::Owner::Sets(&w.own_sets);
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
                left_out: if enc.is_some() {
                    Vec::new()
                } else {
                    s.secrets.clone()
                },
            })
        })
        .collect();
    let (resume, resume_refused) =
        super::resume::plan(&w.resume, &w.settings, &w.listing, &archives, enc);
    let stamp = resume
        .as_ref()
        .map_or(stamp.to_string(), |r| r.stamp.clone());
    // A resumed upload does not upload again what the bucket holds.
    let upload_bytes = upload_bytes.saturating_sub(resume.as_ref().map_or(0, |r| r.bytes_uploaded));
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
        // Another config's unfinished uploads (one bucket two configs name alike) are its own to resume or remove;
        // one that may still be going is left alone, whoever's it is.
        cleanup_stamps: w
            .listing
            .unfinished
            .iter()
            .filter(|u| u.stamp != stamp && !w.listing.going.contains_key(&u.stamp))
            .filter(|u| !w.listing.foreign(&u.stamp, owner))
            .cloned()
            .collect(),
        abort_uploads: w
            .listing
            .uploads
            .iter()
            .filter(|k| !w.listing.upload_left_alone(k, owner))
            .cloned()
            .collect(),
        going: going(&w.listing, &stamp),
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
        existing: w
            .listing
            .backups
            .iter()
            .filter(|s| !w.foreign(s, owner))
            .cloned()
            .collect(),
        other_configs_backups: w
            .listing
            .backups
            .iter()
            .filter(|s| w.foreign(s, owner))
            .count(),
        other_configs_unfinished: w
            .listing
            .unfinished
            .iter()
            .filter(|u| u.stamp != stamp && !w.listing.going.contains_key(&u.stamp))
            .filter(|u| w.foreign(&u.stamp, owner))
            .map(|u| format!("{BACKUPS}{}/", u.stamp))
            .chain(
                w.listing
                    .uploads
                    .iter()
                    .filter(|k| w.listing.upload_left_alone(k, owner))
                    .filter(|k| !going_key(&w.listing, k))
                    .cloned(),
            )
            .collect(),
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
/// backups retention removes, and those superseded by this upload's copies. Pure; after [`plan_retention`].
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

/// Adds retention to an upload's plan: what the destination keeps once the new backup is promoted. Pure.
pub fn plan_retention(
    p: &mut CloudPlan,
    w: &CloudWorld,
    now: NaiveDateTime,
    now_utc: DateTime<Utc>,
) {
    if p.refusal.is_some() || p.archives.is_empty() {
        return;
    }
    let stamp = p
        .dir
        .trim_start_matches(BACKUPS)
        .trim_end_matches('/')
        .to_string();
    let sets: Vec<String> = p.archives.iter().map(|a| a.set.clone()).collect();
    let bases: Vec<String> = p
        .archives
        .iter()
        .filter_map(|a| a.choice.base.clone())
        .collect();
    p.decisions = super::bucket::decide(
        (&w.chains.listing.backups, &w.chains.damaged),
        (
            super::bucket::new_backup(&stamp, &sets, &bases, now),
            super::retention::Owner::Sets(&w.own_sets),
        ),
        &w.settings.retention,
        now,
        now_utc,
        w.settings.object_lock_days,
        &going_bases(&w.listing),
    );
}

/// The bases of the uploads that may still be going (their `upload.json`), each with the upload's
/// `backups/<stamp>/`: retention keeps them.
fn going_bases(l: &CloudListing) -> BTreeMap<String, String> {
    (l.going.keys())
        .filter_map(|s| l.markers.get(s).map(|m| (s, m)))
        .flat_map(|(s, m)| {
            m.bases
                .iter()
                .map(move |b| (b.clone(), format!("{BACKUPS}{s}/")))
        })
        .collect()
}

/// Retention as the dry run prints it.
pub fn render_retention(p: &CloudPlan, out: &mut String) {
    use std::fmt::Write as _;
    if p.decisions.is_empty() {
        return;
    }
    let stamp = p.dir.trim_start_matches(BACKUPS).trim_end_matches('/');
    let removed = crate::retention::removed(&p.decisions).count();
    let _ = writeln!(
        out,
        "  retention {}: {} kept, {} removed after the upload is verified",
        crate::retention::describe(&p.retention),
        p.decisions.len() - removed,
        removed
    );
    for d in p.decisions.iter().filter(|d| d.name != stamp) {
        let _ = writeln!(
            out,
            "  {}    {} ({})",
            if d.keep { "keep  " } else { "remove" },
            d.name,
            d.reasons.join("; ")
        );
    }
}

/// The dry run's lines: the upload resumed, or why the unfinished one is not.
fn render_resume(p: &CloudPlan, out: &mut String) {
    use std::fmt::Write as _;
    if let Some(r) = &p.resume {
        let _ = writeln!(
            out,
            "  resume {}: {}; the archive is regenerated from the snapshot, each stored part checked against the \
             local journal and not uploaded again",
            r.stamp,
            r.uploaded_words()
        );
    }
    if let Some(why) = &p.resume_refused {
        let _ = writeln!(out, "  {why}");
    }
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
    for g in &p.going {
        let _ = writeln!(
            out,
            "  leave {} alone: an unfinished upload that may still be going ({})",
            g.dir, g.why
        );
    }
    for u in &p.other_configs_unfinished {
        let _ = writeln!(
            out,
            "  leave {u} alone: an unfinished upload of another config (its own to resume or remove)"
        );
    }
    render_resume(p, out);
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
        for l in &a.left_out {
            let _ = writeln!(out, "    note: {}", l.line(&p.name));
        }
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
    let (mine, others) = match p.other_configs_backups {
        0 => ("", String::new()),
        n => (
            " of this config",
            format!(
                ", and {} of another config (left alone)",
                crate::stdx::counted(n as u64, "backup", "backups")
            ),
        ),
    };
    let _ = writeln!(
        out,
        "  {} to upload; {}{mine} there already{others}",
        crate::stdx::bytes(p.upload_bytes),
        crate::stdx::counted(p.existing.len() as u64, "backup", "backups"),
    );
    render_retention(p, out);
    super::index_copy::render(p.index_copy_dir.as_deref(), &p.index_copies_removed, out);
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
pub(crate) mod tests {
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

    pub(crate) fn world(allow_unencrypted: bool) -> CloudWorld {
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
                ..Default::default()
            },
            uploads: vec![],
            error: None,
            encryption: None,
            passphrase_file: None,
            chains: CloudChains::default(),
            backup_root: "/root".into(),
            index_copies: vec![],
            own_sets: crate::external::retention::OwnSet::named(&["docs"]),
            resume: super::super::resume::ResumeWorld {
                part_bytes: PART_BYTES,
                candidate: None,
            },
            looked: std::time::Duration::ZERO,
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
            secrets: vec![],
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

    /// An unfinished upload that may still be going is neither removed nor aborted nor resumed, whoever's it is
    /// (the dry run says why); one whose `upload.json` records a set of this config's name from other sources is
    /// another config's, whatever its objects are named.
    #[test]
    fn an_upload_still_going_or_marked_as_another_configs_is_left_alone() {
        let now = Utc::now();
        let mut w = world(true);
        w.own_sets = vec![super::super::retention::OwnSet {
            name: "docs".into(),
            paths: vec!["/home/b".into()],
        }];
        for name in [
            "2026-12-04-020000/docs.tar.part000",
            "2026-12-05-020000/docs.tar.part000",
        ] {
            w.listing.sizes.insert(format!("{BACKUPS}{name}"), 1);
        }
        let theirs = super::super::upload_marker::UploadMarker::new(
            "laptop",
            (
                &[super::super::retention::OwnSet {
                    name: "docs".into(),
                    paths: vec!["/home/a".into()],
                }],
                &["docs"],
                &[],
            ),
            now.fixed_offset(),
        );
        w.listing.markers.insert("2026-12-04-020000".into(), theirs);
        w.listing.going.insert(
            "2026-12-05-020000".into(),
            "being uploaded by process 7".into(),
        );
        // A part being uploaded there (a multipart upload): not aborted either.
        (w.listing.uploads).push("backups/2026-12-05-020000/docs.tar.part001".into());
        let p = plan(&w, &[set()], "2026-12-06-020000", now, &policy());
        assert_eq!(p.cleanup_stamps, []);
        assert_eq!(p.abort_uploads, Vec::<String>::new());
        assert_eq!(
            p.other_configs_unfinished,
            [
                "backups/2026-12-04-020000/",
                "backups/2026-12-04-020000/docs.tar.part000"
            ]
        );
        assert_eq!(p.going.len(), 1);
        let mut text = String::new();
        render(&p, &mut text);
        assert!(
            text.contains(
                "leave backups/2026-12-05-020000/ alone: an unfinished upload that may still be going (being \
                 uploaded by process 7)"
            ),
            "{text}"
        );
        assert!(!text.contains("remove unfinished"), "{text}");
    }
}
