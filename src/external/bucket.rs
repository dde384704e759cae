//! A bucket's backups as `status`, `backup`, `ls`/`find` and retention see them, and retention on a bucket: one
//! listing of `backups/` and each backup's `backup.json` (no archive is read), then, after a verified upload, the
//! backups the destination's `retention` does not keep deleted (the policy and chain rules of
//! [`super::retention::decide_own`], the drive's), `backup.json` FIRST: a backup whose other objects could only partly
//! be deleted is an unfinished upload from then on (never listed as a backup again; the next run removes the rest).
//! A backup whose objects are still under Object Lock is kept ("kept: locked until <date>") and never touched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::chain::broken_link;
use super::layout::{self, DriveBackup};
use super::retention::{self as drive_retention, BackupInfo, Owner};
use super::upload_marker::{self, UploadMarker};
use crate::cloud::{CloudError, Store, Unfinished};
use crate::config::RetentionPolicy;
use crate::retention::Decision;
use crate::snapshot;

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
    /// The marker of each unfinished upload that has one and could be read ([`read_markers`]), by stamp: whose
    /// upload it is, and who is writing it.
    #[serde(skip)]
    pub markers: BTreeMap<String, UploadMarker>,
    /// When the newest object under each stamp was written (the server's time, as listed).
    #[serde(skip)]
    pub last_written: BTreeMap<String, DateTime<Utc>>,
    /// The unfinished uploads that may still be going ([`upload_marker::still_going`]), by stamp: why. Every run
    /// leaves them alone.
    #[serde(skip)]
    pub going: BTreeMap<String, String>,
}

impl CloudListing {
    /// The names of the objects listed under `stamp` (`backups/<stamp>/<name>`).
    pub fn files_of<'a>(&'a self, stamp: &str) -> impl Iterator<Item = &'a str> + 'a {
        let dir = format!("{BACKUPS}{stamp}/");
        self.sizes
            .range(dir.clone()..)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(&dir))
            .filter_map(|k| k.rsplit_once('/').map(|(_, name)| name))
    }

    /// The backup or unfinished upload `stamp` is another config's (`owner`'s rule): an unfinished upload by its
    /// marker's sets and sources when it was read ([`UploadMarker::foreign`]), else by the names of its objects
    /// ([`Owner::foreign_files`]): no `backup.json` needs to be read.
    pub fn foreign(&self, stamp: &str, owner: Owner) -> bool {
        match self.markers.get(stamp) {
            Some(m) => m.foreign(owner),
            None => owner.foreign_files(self.files_of(stamp)),
        }
    }

    /// The multipart upload of `key` (`backups/<stamp>/<name>`) is another config's, or of an upload that may still
    /// be going: never aborted.
    pub fn upload_left_alone(&self, key: &str, owner: Owner) -> bool {
        let Some((stamp, name)) = key.strip_prefix(BACKUPS).and_then(|r| r.split_once('/')) else {
            return owner.foreign_files(key.rsplit_once('/').map(|(_, n)| n));
        };
        self.going.contains_key(stamp)
            || match self.markers.get(stamp) {
                Some(m) => m.foreign(owner),
                None => owner.foreign_files([name]),
            }
    }

    /// How many of the backups are another config's ([`Self::foreign`]).
    pub fn foreign_count(&self, owner: Owner) -> usize {
        self.backups
            .iter()
            .filter(|s| self.foreign(s, owner))
            .count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedStamp {
    pub stamp: String,
    pub objects: u64,
    pub bytes: u64,
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
                if let Some(t) = o.last_modified {
                    let last = listing.last_written.entry(stamp.to_string()).or_insert(t);
                    *last = (*last).max(t);
                }
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
        listing.latest = read_latest(store);
    }
    let uploads = store.unfinished_uploads(BACKUPS)?;
    listing.uploads = uploads
        .iter()
        .map(|u| crate::stdx::show_str(&u.key))
        .collect();
    Ok((listing, uploads))
}

/// The stamp `backups/LATEST` names (one GET); `None` when there is none, it cannot be read, or it names no stamp.
pub fn read_latest(store: &Store) -> Option<String> {
    store
        .get(&format!("{BACKUPS}{}", layout::LATEST_FILE))
        .ok()
        .and_then(|b| layout::parse_latest(&b))
}

/// The backup newer than `stamp` that `backups/LATEST` names, if it names one whose `backup.json` is there: another
/// run of this prefix (the same config from another machine, started later) promoted it while this one's upload was
/// going, and LATEST must not move back from it. One GET, and a HEAD only then; `None` (write LATEST) when LATEST
/// is missing, unreadable, older, or names no backup (garbage, or one removed since).
pub fn newer_latest(store: &Store, stamp: &str) -> Option<String> {
    let named = read_latest(store)?;
    let newer = match (snapshot::parse_stamp(&named), snapshot::parse_stamp(stamp)) {
        (Some(theirs), Some(ours)) => theirs > ours,
        _ => false,
    };
    let promoted = || {
        store
            .stat(&format!("{BACKUPS}{named}/{}", layout::METADATA_FILE))
            .is_ok_and(|info| info.is_some())
    };
    (newer && promoted()).then_some(named)
}

/// The most markers of unfinished uploads one look reads (one small GET each, newest first): the rest are told by
/// their objects' names.
const MAX_MARKERS: usize = 16;

/// Reads the marker of each unfinished upload that has one ([`upload_marker::FILE`], newest first, at most
/// [`MAX_MARKERS`], one GET each; one listed larger than [`upload_marker::MAX_BYTES`] is not read) into
/// `listing.markers`, and which may still be going, seen from `host` at `now`, into `listing.going` (by the last
/// object written under its stamp: its objects, and the multipart `uploads` begun there). An unreadable marker is
/// as none.
pub fn read_markers(
    store: &Store,
    listing: &mut CloudListing,
    uploads: &[Unfinished],
    (host, now): (&str, DateTime<Utc>),
) {
    let stamps: Vec<String> = (listing.unfinished.iter().rev())
        .map(|u| u.stamp.clone())
        .filter(|s| {
            let key = format!("{BACKUPS}{s}/{}", upload_marker::FILE);
            listing
                .sizes
                .get(&key)
                .is_some_and(|b| *b <= upload_marker::MAX_BYTES)
        })
        .take(MAX_MARKERS)
        .collect();
    for stamp in stamps {
        let key = format!("{BACKUPS}{stamp}/{}", upload_marker::FILE);
        let Some(m) = (store.get(&key).ok()).and_then(|b| UploadMarker::parse(&b).ok()) else {
            continue;
        };
        let dir = format!("{BACKUPS}{stamp}/");
        let started = uploads
            .iter()
            .filter(|u| u.key.starts_with(&dir))
            .filter_map(|u| u.initiated.as_deref())
            .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let last = listing
            .last_written
            .get(&stamp)
            .copied()
            .into_iter()
            .chain(started)
            .max();
        if let Some(why) =
            upload_marker::still_going(&m, last, now, host, crate::stdx::another_dbackup)
        {
            listing.going.insert(stamp.clone(), why);
        }
        listing.markers.insert(stamp, m);
    }
}

/// A bucket's backups, each with its `backup.json` when it could be read and checked.
#[derive(Debug, Clone, Default)]
pub struct BucketBackups {
    pub listing: CloudListing,
    /// Oldest first; `meta` is `None` (with `meta_error`) when its `backup.json` is unusable.
    pub backups: Vec<DriveBackup>,
    /// Requests this look took (the listing, then a GET per `backup.json`).
    pub requests: u64,
    /// The sha256 of each `backup.json` read, by stamp: what its line in the sums is checked against
    /// ([`super::cloud::check_sums_line`]) without reading it again.
    pub digests: std::collections::BTreeMap<String, crate::archive::Digest>,
    /// With `newest_of`: the owner's newest backup when it was passed over as no restore point (found damaged, or its
    /// chain broken), newer than the one read.
    pub unsound: Option<super::chain::Unsound>,
}

/// The requests a [`Store`] has sent so far, all methods together.
pub fn requests_of(store: &Store) -> u64 {
    let r = store.requests();
    r.head + r.get + r.put + r.post + r.delete + r.other
}

/// Lists `backups/` once and reads the `backup.json` of every backup (`newest_of`: of the newest backup of that
/// owner only, what the schedule needs; another config's are passed over by their objects' names, and those of a
/// set of the owner's name from other sources by their `backup.json`, read on the way; so are the stamps given,
/// those `restore --verify` found damaged, a backup whose chain goes through one of them or through a backup not
/// listed, one whose own objects the listing shows missing or not their recorded size, and one whose `backup.json`
/// cannot be used). No archive or index is read.
pub fn read(
    store: &Store,
    newest_of: Option<(Owner, &[String])>,
) -> Result<BucketBackups, CloudError> {
    let before = requests_of(store);
    let (listing, _) = list(store, false)?;
    let mut b = read_listed(store, listing, newest_of)?;
    b.requests = requests_of(store).saturating_sub(before);
    Ok(b)
}

/// [`read`] on a listing already made.
pub fn read_listed(
    store: &Store,
    listing: CloudListing,
    newest_of: Option<(Owner, &[String])>,
) -> Result<BucketBackups, CloudError> {
    let before = requests_of(store);
    let mut backups = Vec::new();
    let mut digests = std::collections::BTreeMap::new();
    let mut unsound = None;
    let mut passed = |stamp: &String, damaged: bool| {
        unsound.get_or_insert(super::chain::Unsound {
            stamp: stamp.clone(),
            damaged,
        });
    };
    match newest_of {
        // Newest first, passing over another config's by their objects' names, then by the sources its
        // `backup.json` records (a set of the same name from other sources): one GET each, at most
        // [`MAX_NEWEST_READS`]; and those found damaged, unread.
        Some((owner, damaged)) => {
            let own = (listing.backups.iter().rev()).filter(|s| !listing.foreign(s, owner));
            let mut reads = 0;
            for stamp in own {
                if damaged.contains(stamp) {
                    passed(stamp, true);
                    continue;
                }
                if reads == MAX_NEWEST_READS {
                    break;
                }
                reads += 1;
                let Some(b) = read_meta_of(store, stamp, &mut digests) else {
                    continue;
                };
                // One whose `backup.json` cannot be used (not JSON, unreadable, too big) is no backup to `status`
                // ("not counted", [`layout::DriveListing::verified`]): no restore point, passed over to the one
                // before it, and kept in the list so it is counted as `status` counts it.
                if b.meta.is_none() {
                    passed(stamp, true);
                    backups.push(b);
                    continue;
                }
                let foreign = (b.meta.as_ref()).is_some_and(|m| owner.foreign_records(&m.sets));
                // One whose chain is broken (a backup it depends on missing or found damaged) is no restore
                // point: passed over as `status` does, which judges every chain.
                let listed = |d: &str| listing.backups.iter().any(|s| s == d);
                let found = (|d: &str| damaged.iter().any(|s| s == d), "");
                let ours = b.meta.as_ref().filter(|_| !foreign);
                if ours.is_some_and(|m| broken_link(m, listed, found, &BTreeMap::new()).is_some()) {
                    passed(stamp, false);
                    continue;
                }
                // Nor is one whose own objects the listing shows missing or not their recorded size (`status`'s
                // verdict, [`damaged_object`]; a base's are judged by `status` alone, which reads every
                // `backup.json`).
                if ours.is_some() && damaged_object(&b, &listing.sizes).is_some() {
                    passed(stamp, true);
                    continue;
                }
                backups.push(b);
                if !foreign {
                    break;
                }
            }
            backups.reverse();
        }
        None => {
            for stamp in &listing.backups {
                backups.extend(read_meta_of(store, stamp, &mut digests));
            }
        }
    }
    Ok(BucketBackups {
        listing,
        backups,
        requests: requests_of(store).saturating_sub(before),
        digests,
        unsound,
    })
}

/// The backups (with metadata) whose archive or index objects are missing from the bucket or not the size their
/// `backup.json` records, with why ([`damaged_object`]).
pub(crate) fn damaged_objects(
    backups: &[DriveBackup],
    sizes: &BTreeMap<String, u64>,
) -> BTreeMap<String, String> {
    (backups.iter())
        .filter_map(|b| Some((b.name.clone(), damaged_object(b, sizes)?)))
        .collect()
}

/// Why backup `b` (with metadata) is damaged, when an archive or index object of it is missing from the bucket or
/// not the size its `backup.json` records: from the sizes of the listing made already (`sizes`: no request), judged
/// as a drive's files are ([`layout::damaged_by`]).
pub(crate) fn damaged_object(b: &DriveBackup, sizes: &BTreeMap<String, u64>) -> Option<String> {
    layout::damaged_by(b.meta.as_ref()?, |name| {
        match sizes.get(&format!("{BACKUPS}{}/{name}", b.name)) {
            Some(&n) => layout::Held::Bytes(n),
            None => layout::Held::Absent("is not in the bucket".to_string()),
        }
    })
}

/// The most `backup.json` files a look at a bucket's newest backup of an owner reads ([`read_listed`]).
const MAX_NEWEST_READS: usize = 8;

/// Backup `stamp` of the bucket with its `backup.json` (one GET; its sha256 into `digests`), `None` when the name
/// is not a stamp.
fn read_meta_of(
    store: &Store,
    stamp: &str,
    digests: &mut std::collections::BTreeMap<String, crate::archive::Digest>,
) -> Option<DriveBackup> {
    let time = snapshot::parse_stamp(stamp)?;
    let dir = format!("{BACKUPS}{stamp}/");
    let path = PathBuf::from(format!("{} {dir}{}", store.place(), layout::METADATA_FILE));
    let (meta, meta_error) = match store.get(&format!("{dir}{}", layout::METADATA_FILE)) {
        Err(e) => (None, Some(e.to_string())),
        Ok(bytes) => match layout::parse_metadata(&bytes, &path).inspect(|_| {
            digests.insert(stamp.to_string(), crate::archive::Digest::of_bytes(&bytes));
        }) {
            Ok(m) if m.stamp != stamp => (
                None,
                Some(format!(
                    "its {} describes backup {}",
                    layout::METADATA_FILE,
                    crate::stdx::show_str(&m.stamp)
                )),
            ),
            Ok(m) if !m.verified => (
                None,
                Some(format!(
                    "its {} says it was not verified",
                    layout::METADATA_FILE
                )),
            ),
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    Some(DriveBackup {
        name: stamp.to_string(),
        time,
        path,
        meta,
        meta_error,
    })
}

/// When the objects of a backup written at `started` with `object_lock_days` stop being locked: at least then
/// (the upload's lock date was taken a moment before `started`).
pub fn locked_until(
    started: DateTime<Utc>,
    object_lock_days: Option<u32>,
) -> Option<DateTime<Utc>> {
    object_lock_days.map(|d| started + chrono::Duration::days(i64::from(d)))
}

/// The backup an upload is about to promote, as retention sees it: `stamp`, holding `sets`, at `now`, and (its
/// incrementals' bases) the backups it cannot be restored without.
pub fn new_backup(
    stamp: &str,
    sets: &[String],
    depends_on: &[String],
    now: NaiveDateTime,
) -> BackupInfo {
    let mut depends_on = depends_on.to_vec();
    depends_on.sort();
    depends_on.dedup();
    BackupInfo {
        name: stamp.to_string(),
        time: now,
        verified: true,
        sets: sets.to_vec(),
        latest: true,
        depends_on,
        ..Default::default()
    }
}

/// Retention on a bucket after the new backup `new` ([`new_backup`]) is promoted: the drive's rules
/// ([`drive_retention::decide_own`]: what `new` depends on is kept with it, another config's backups are not judged),
/// where a backup still locked at `now_utc` is kept ("kept: locked until <date>") together with what it depends on,
/// and so is a base of an upload that may still be going (`going_bases`: base stamp, the upload's `backups/<stamp>/`;
/// its `upload.json` names them). A backup `damaged` names (stamp: why, its objects missing or not their recorded
/// size) is no restore point ([`BackupInfo::judged`]). Pure.
pub fn decide(
    (backups, damaged): (&[DriveBackup], &BTreeMap<String, String>),
    (new, owner): (BackupInfo, drive_retention::Owner),
    policy: &RetentionPolicy,
    now: NaiveDateTime,
    now_utc: DateTime<Utc>,
    object_lock_days: Option<u32>,
    going_bases: &BTreeMap<String, String>,
) -> Vec<Decision> {
    let infos: Vec<BackupInfo> = backups
        .iter()
        .filter(|b| b.name != new.name)
        .map(|b| BackupInfo::new(&b.name, b.time, b.meta.as_ref(), false))
        .collect();
    let mut infos = BackupInfo::with_damage(infos, damaged);
    infos.push(new);
    let lock_of = |name: &str| {
        backups
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.meta.as_ref())
            .and_then(|m| locked_until(m.started.with_timezone(&Utc), object_lock_days))
            .filter(|until| *until > now_utc)
    };
    // A locked backup, or a base of an upload going, is kept as `latest` is (so what it depends on is kept with it),
    // until nothing more is locked.
    let mut kept: Vec<(String, String)> = Vec::new();
    for (base, dir) in going_bases {
        if let Some(i) = infos.iter_mut().find(|i| i.name == *base) {
            i.latest = true;
            kept.push((
                base.clone(),
                format!("kept: the base of {dir}, an upload that may still be going"),
            ));
        }
    }
    loop {
        let decisions = drive_retention::decide_own(&infos, owner, policy, now);
        let more: Vec<(String, DateTime<Utc>)> = decisions
            .iter()
            .filter(|d| !d.keep)
            .filter_map(|d| lock_of(&d.name).map(|u| (d.name.clone(), u)))
            .collect();
        if more.is_empty() {
            return decisions
                .into_iter()
                .map(|mut d| {
                    if let Some((_, why)) = kept.iter().find(|(n, _)| *n == d.name) {
                        d.reasons.retain(|r| r != "target of latest");
                        d.reasons.insert(0, why.clone());
                    }
                    d
                })
                .collect();
        }
        for (name, until) in more {
            if let Some(i) = infos.iter_mut().find(|i| i.name == name) {
                i.latest = true;
            }
            let why = format!(
                "kept: locked until {} (Object Lock)",
                until.format("%Y-%m-%d %H:%M UTC")
            );
            kept.push((name, why));
        }
    }
}

/// What retention did to one backup on a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRemoval {
    pub name: String,
    pub reasons: Vec<String>,
    /// Every object deleted.
    pub complete: bool,
    /// Why not (the backup is an unfinished upload now: its `backup.json` went first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Deletes one backup: `backup.json` first (from then on it is an unfinished upload, never listed as a backup), then
/// every other object under its stamp.
pub fn remove(store: &Store, d: &Decision) -> BucketRemoval {
    let dir = format!("{BACKUPS}{}/", d.name);
    let outcome = (|| -> Result<(), CloudError> {
        store.delete(&format!("{dir}{}", layout::METADATA_FILE))?;
        for o in store.list(&dir)? {
            store.delete(&o.key)?;
        }
        Ok(())
    })();
    BucketRemoval {
        name: d.name.clone(),
        reasons: d.reasons.clone(),
        complete: outcome.is_ok(),
        error: outcome.err().map(|e| {
            format!(
                "{e}; its {} was deleted first, so it is no longer listed as a backup, and the next run removes \
                 what is left",
                layout::METADATA_FILE
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(stamp: &str, base: Option<&str>) -> DriveBackup {
        let mut meta = layout::tests::meta(stamp, &["docs"]);
        meta.started = snapshot::parse_stamp(stamp)
            .unwrap()
            .and_utc()
            .fixed_offset();
        if let Some(b) = base {
            meta.depends_on = vec![b.to_string()];
        }
        DriveBackup {
            name: stamp.into(),
            time: snapshot::parse_stamp(stamp).unwrap(),
            path: PathBuf::new(),
            meta: Some(meta),
            meta_error: None,
        }
    }

    /// Retention on a bucket: `last 1` keeps the new backup and the base of nothing else; a chain's base is kept
    /// with its tail; a backup still locked is kept with its lock date; without a lock the same backup goes.
    #[test]
    fn bucket_retention_keeps_chains_and_locked_backups() {
        let backups = vec![
            backup("2026-11-01-020000", None),
            backup("2026-11-08-020000", None),
            backup("2026-11-15-020000", Some("2026-11-08-020000")),
        ];
        let now = snapshot::parse_stamp("2026-11-22-020000").unwrap();
        let now_utc = now.and_utc();
        let sets = vec!["docs".to_string()];
        let decide_with = |policy: u32, lock: Option<u32>| {
            decide(
                (&backups, &BTreeMap::new()),
                (
                    new_backup("2026-11-22-020000", &sets, &[], now),
                    drive_retention::Owner::Anyone,
                ),
                &RetentionPolicy::last(policy),
                now,
                now_utc,
                lock,
                &BTreeMap::new(),
            )
        };
        let removed = |ds: &[Decision]| -> Vec<String> {
            let mut v: Vec<String> = crate::retention::removed(ds).map(str::to_string).collect();
            v.sort();
            v
        };
        let ds = decide_with(1, None);
        assert_eq!(
            removed(&ds),
            [
                "2026-11-01-020000",
                "2026-11-08-020000",
                "2026-11-15-020000"
            ]
        );
        let ds = decide_with(2, None);
        assert_eq!(
            removed(&ds),
            ["2026-11-01-020000"],
            "the base of a kept tail stays"
        );
        let kept = ds.iter().find(|d| d.name == "2026-11-08-020000").unwrap();
        assert!(
            kept.reasons.iter().any(|r| r.starts_with("base of")),
            "{kept:?}"
        );
        // Locked for 10 days from its start: the backup of 2026-11-15 is (and its base stays with it), the
        // older ones are not.
        let ds = decide_with(1, Some(10));
        assert_eq!(removed(&ds), ["2026-11-01-020000"]);
        let locked = ds.iter().find(|d| d.name == "2026-11-15-020000").unwrap();
        assert!(locked.keep);
        let base = ds.iter().find(|d| d.name == "2026-11-08-020000").unwrap();
        assert!(
            base.keep && base.reasons.iter().any(|r| r.starts_with("base of")),
            "{base:?}"
        );
        assert!(
            locked.reasons[0].starts_with("kept: locked until 2026-11-25"),
            "{locked:?}"
        );

        // The base of an upload that may still be going is kept, with what it depends on.
        let going = BTreeMap::from([(
            "2026-11-15-020000".to_string(),
            "backups/2026-11-21-020000/".to_string(),
        )]);
        let ds = decide(
            (&backups, &BTreeMap::new()),
            (
                new_backup("2026-11-22-020000", &sets, &[], now),
                drive_retention::Owner::Anyone,
            ),
            &RetentionPolicy::last(1),
            now,
            now_utc,
            None,
            &going,
        );
        assert_eq!(removed(&ds), ["2026-11-01-020000"]);
        let base = ds.iter().find(|d| d.name == "2026-11-15-020000").unwrap();
        assert_eq!(
            base.reasons[0],
            "kept: the base of backups/2026-11-21-020000/, an upload that may still be going"
        );
    }

    /// Retention `last 2` with a new backup of 2026-11-22 over `backups`, the one named `damaged` missing objects.
    fn last_2_with_damaged(backups: &[DriveBackup], damaged: &str) -> Vec<Decision> {
        let now = snapshot::parse_stamp("2026-11-22-020000").unwrap();
        let damaged = BTreeMap::from([(
            damaged.to_string(),
            "docs.tar is not in the bucket".to_string(),
        )]);
        let sets = vec!["docs".to_string()];
        decide(
            (backups, &damaged),
            (
                new_backup("2026-11-22-020000", &sets, &[], now),
                drive_retention::Owner::Anyone,
            ),
            &RetentionPolicy::last(2),
            now,
            now.and_utc(),
            None,
            &BTreeMap::new(),
        )
    }

    /// A backup of the bucket whose objects are missing or not their recorded size is no restore point: `last 2`
    /// keeps the new backup and the newest intact one, the damaged one is neither counted nor removed and says why.
    /// Before: it counted among the 2, and the intact backup of 2026-11-08 was removed.
    #[test]
    fn bucket_retention_does_not_count_a_damaged_backup() {
        let backups = vec![
            backup("2026-11-01-020000", None),
            backup("2026-11-08-020000", None),
            backup("2026-11-15-020000", None),
        ];
        let ds = last_2_with_damaged(&backups, "2026-11-15-020000");
        let removed: Vec<&str> = crate::retention::removed(&ds).collect();
        assert_eq!(removed, ["2026-11-01-020000"]);
        let d = ds.iter().find(|d| d.name == "2026-11-15-020000").unwrap();
        assert!(d.keep, "{d:?}");
        assert_eq!(
            d.reasons[0],
            "damaged (docs.tar is not in the bucket): not a restore point"
        );
    }

    /// An incremental on a bucket's backup whose objects are missing is broken, no restore point either: `last 2`
    /// keeps the new backup and the intact one of 2026-11-01, and removes nothing. Before: the incremental of
    /// 2026-11-15 was one of the 2 (keeping its damaged base) and the intact backup was removed.
    #[test]
    fn bucket_retention_does_not_count_an_incremental_on_a_damaged_backup() {
        let backups = vec![
            backup("2026-11-01-020000", None),
            backup("2026-11-08-020000", None),
            backup("2026-11-15-020000", Some("2026-11-08-020000")),
        ];
        let ds = last_2_with_damaged(&backups, "2026-11-08-020000");
        assert_eq!(crate::retention::removed(&ds).count(), 0, "{ds:?}");
        let d = ds.iter().find(|d| d.name == "2026-11-15-020000").unwrap();
        assert_eq!(
            d.reasons[0],
            "broken: its base 2026-11-08-020000 is damaged: not a restore point"
        );
    }
}
