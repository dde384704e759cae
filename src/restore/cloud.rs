//! Restore's read side of a cloud destination: its backups (one listing of `backups/`: stamps with `backup.json`),
//! the one `--date` picks, its `backup.json` checked against `verification.sha256` (two small GETs), and each set's
//! archive and index as remote [`ArchiveFiles`] read with ranged GETs: one file costs its index and one ranged read
//! of its bytes (more for an encrypted archive's 64 KiB chunks around it), never the whole archive.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::content::SetContent;
use super::job::SetBackup;
use super::select;
use super::select::{DateQuery, Request};
use crate::archive::FileRecord;
use crate::archive::crypt::decode_head;
use crate::archive::{ArchiveFiles, Keys};
use crate::cloud::{Objects, Store};
use crate::exit::{CodedError, Exit, failed};
use crate::external::bucket::{BACKUPS, CloudListing};
use crate::external::layout::{self, BackupMeta};
use crate::external::retention::{OwnSet, Owner, recorded_paths};
use crate::settings::{CloudSettings, Settings};
use crate::snapshot;
use crate::ui::Ui;

/// Each object's size by key, as a listing gave it.
pub type Sizes = BTreeMap<String, u64>;

/// A backup on a cloud destination, chosen and its metadata checked.
#[derive(Debug, Clone)]
pub struct CloudBackup {
    pub destination: String,
    pub place: String,
    pub stamp: String,
    pub meta: BackupMeta,
    pub store: Arc<Store>,
    /// Its objects, read through one cache of the small ones.
    pub objects: Arc<Objects>,
    /// The backups it depends on (an incremental's earlier archives), their metadata checked, with their objects.
    pub chain: Vec<(String, BackupMeta, Arc<Objects>)>,
    /// The size of every object under `backups/`, by key, as the listing that found the backup gave it.
    pub listed: Sizes,
}

impl CloudBackup {
    /// `backups/<stamp>/`.
    pub fn dir(&self) -> String {
        format!("{BACKUPS}{}/", self.stamp)
    }

    /// The recorded files as remote archive files.
    pub fn files(&self, records: &[FileRecord]) -> ArchiveFiles {
        remote_files(records, &self.objects)
    }

    /// Every archive and index of its sets (for the keys).
    pub fn all_files(&self) -> Vec<ArchiveFiles> {
        self.meta
            .sets
            .iter()
            .flat_map(|s| {
                [
                    self.files(&s.archive).with_plain_parts(s.part_plain_bytes),
                    self.files(&s.index),
                ]
            })
            .collect()
    }

    /// Its sets as content to read.
    pub fn set_backups(&self, set: Option<&str>, keys: Option<&Arc<Keys>>) -> Vec<SetBackup> {
        self.meta
            .sets
            .iter()
            .filter(|s| set.is_none_or(|n| n == s.set))
            .map(|s| SetBackup {
                set: s.set.clone(),
                label: format!("backup {} on {}", self.stamp, self.destination),
                sources: s.sources.iter().filter(|r| r.present).cloned().collect(),
                content: SetContent::Archive {
                    archive: self
                        .files(&s.archive)
                        .with_plain_parts(s.part_plain_bytes)
                        .with_keys(keys.cloned()),
                    index: (!s.index.is_empty())
                        .then(|| self.files(&s.index).with_keys(keys.cloned())),
                    chain: self
                        .chain
                        .iter()
                        .filter_map(|(stamp, meta, objects)| {
                            let rec = meta.sets.iter().find(|r| r.set == s.set)?;
                            let files = remote_files(&rec.archive, objects)
                                .with_plain_parts(rec.part_plain_bytes);
                            Some((stamp.clone(), files.with_keys(keys.cloned())))
                        })
                        .collect(),
                },
            })
            .collect()
    }

    /// Checks that every archive and index object of the sets restored (`set`, or all), in this backup and those it
    /// depends on, is on the bucket with the size its `backup.json` records, from the listing that found the
    /// backup (no request): a truncated, replaced or missing object stops the restore before anything is written,
    /// without reading any archive to its end ([`crate::restore::choose::authenticate`] leaves remote archives to
    /// this and to the chunks' own authentication).
    pub fn check_sizes(&self, set: Option<&str>) -> anyhow::Result<()> {
        let backups = std::iter::once((&self.stamp, &self.meta))
            .chain(self.chain.iter().map(|(stamp, meta, _)| (stamp, meta)));
        for (stamp, meta) in backups {
            let files = meta
                .sets
                .iter()
                .filter(|s| set.is_none_or(|n| n == s.set))
                .flat_map(|s| s.archive.iter().chain(&s.index));
            for f in files {
                let why = match self.listed.get(&format!("{BACKUPS}{stamp}/{}", f.name)) {
                    Some(&n) if n == f.bytes => continue,
                    Some(n) => format!("is {n} bytes on the bucket, not the {} recorded", f.bytes),
                    None => "is not on the bucket".to_string(),
                };
                return Err(failed(format!(
                    "backup {stamp} on {}: {} {why}: the backup is damaged; nothing was written (check it with \
                     `dbackup restore --verify --source cloud:{}`)",
                    self.destination,
                    crate::stdx::show_str(&f.name),
                    self.destination
                )));
            }
        }
        Ok(())
    }

    /// Bytes of the archives of the backups it depends on, of the sets restored (what an incremental's restore may
    /// read there, and what `--verify` downloads there).
    pub fn chain_bytes(&self, set: Option<&str>) -> u64 {
        self.chain.iter().fold(0u64, |t, (_, meta, _)| {
            meta.sets
                .iter()
                .filter(|s| self.selected(s, set))
                .flat_map(|s| &s.archive)
                .fold(t, |t, f| t.saturating_add(f.bytes))
        })
    }

    /// Whether `s` (a set of this backup or of one it depends on) is among the sets restored.
    fn selected(&self, s: &crate::external::layout::SetRecord, set: Option<&str>) -> bool {
        set.is_none_or(|n| n == s.set) && self.meta.sets.iter().any(|r| r.set == s.set)
    }

    /// Bytes of the archives and indexes of the sets restored (what a whole-set restore or `--verify` downloads).
    pub fn bytes(&self, set: Option<&str>) -> (u64, u64) {
        let sum = |r: &[FileRecord]| r.iter().fold(0u64, |t, f| t.saturating_add(f.bytes));
        self.meta
            .sets
            .iter()
            .filter(|s| set.is_none_or(|n| n == s.set))
            .fold((0, 0), |(a, i), s| {
                (
                    a.saturating_add(sum(&s.archive)),
                    i.saturating_add(sum(&s.index)),
                )
            })
    }
}

/// Recorded files as remote archive files read through `objects`, each recorded age head (header and nonce) given
/// to it so a restore does not read it from the object (`backup.json` was checked: a head decodes, bounded).
fn remote_files(records: &[FileRecord], objects: &Arc<Objects>) -> ArchiveFiles {
    for r in records {
        if let Some(head) = r.age_head.as_deref().and_then(|h| decode_head(h).ok()) {
            objects.know_head(&r.name, head);
        }
    }
    ArchiveFiles::remote(
        records
            .iter()
            .map(|r| (PathBuf::from(&r.name), r.bytes))
            .collect(),
        objects.clone(),
    )
}

/// The cloud destination `--source cloud[:NAME]` names (`restore`, `ls` and `find` alike): the one named, or the only
/// one / the first by priority.
pub fn destination<'a>(
    settings: &'a Settings,
    name: Option<&str>,
) -> anyhow::Result<&'a CloudSettings> {
    let names: Vec<&str> = settings.clouds.iter().map(|c| c.name.as_str()).collect();
    match name {
        Some(name) => settings.cloud(name).ok_or_else(|| {
            CodedError::new(
                Exit::Usage,
                if names.is_empty() {
                    format!(
                        "there is no cloud destination named {name:?}: {}",
                        Settings::NO_CLOUD
                    )
                } else {
                    format!(
                        "there is no cloud destination named {name:?}; the config has: {}",
                        names.join(", ")
                    )
                },
            )
            .into()
        }),
        None => {
            let mut clouds: Vec<&CloudSettings> = settings.clouds.iter().collect();
            clouds.sort_by_key(|c| std::cmp::Reverse(c.priority));
            clouds
                .first()
                .copied()
                .ok_or_else(|| CodedError::new(Exit::Usage, Settings::NO_CLOUD).into())
        }
    }
}

/// Opens the destination and lists its backups (stamps with `backup.json`), oldest first, with the size of every
/// object under them (one listing).
pub fn open(cloud: &CloudSettings) -> anyhow::Result<(Arc<Store>, CloudListing)> {
    let env = crate::expand::Env::from_process();
    let store = Arc::new(Store::open(cloud, &env, chrono::Local::now().time())?);
    let (listing, _) = crate::external::bucket::list(&store, false)?;
    Ok((store, listing))
}

/// The backups of a bucket `--date` picks among (`restore` and `ls`): [`super::select::pickable`], each backup's sets
/// told by its objects' names (no `backup.json` read). Oldest first.
pub fn pickable(
    settings: &Settings,
    listing: &CloudListing,
    set: Option<&str>,
    query: DateQuery,
) -> Vec<String> {
    let own = settings.set_names();
    let sets = OwnSet::of(&settings.sets);
    let owner = Owner::Sets(&sets);
    let all: Vec<&String> = (listing.backups.iter())
        .filter(|s| snapshot::parse_stamp(s).is_some())
        .collect();
    super::select::pickable(
        (&all, &own),
        (set, query),
        |s, set| (listing.files_of(s)).any(|n| layout::is_file_of_set(n.as_bytes(), set)),
        // By the objects' names: a set's sources are in `backup.json`, not read here.
        |s, set| set.is_none() && listing.foreign(s, owner),
    )
    .into_iter()
    .map(|i| all[i].clone())
    .collect()
}

/// The most backups whose `backup.json` shows them another config's [`pick`] passes over.
const MAX_PASSED: usize = 8;

/// THE pick of a bucket's backup by `--date` (`restore`, `ls`, `find`): among `stamps` ([`pickable`], oldest
/// first), the one `query` means, its `backup.json` read with `read`. Unless the stamp is named exactly, one whose
/// sets turn out to be another config's of the same names (recorded from other sources: `Owner`; with `set`, its
/// record of that set) is passed over for the next one, at most [`MAX_PASSED`] times; when every one is, the
/// first pick stands (as [`super::select::pickable`] when no backup holds one of the config's sets). The error:
/// no stamp matches, and the stamps looked among.
pub fn pick(
    settings: &Settings,
    mut stamps: Vec<String>,
    (set, query): (Option<&str>, DateQuery),
    mut read: impl FnMut(&str) -> anyhow::Result<BackupMeta>,
) -> Result<(String, anyhow::Result<BackupMeta>), (select::NoMatch, Vec<String>)> {
    let own = OwnSet::of(&settings.sets);
    let owner = Owner::Sets(&own);
    let mut first = None;
    for _ in 0..=MAX_PASSED {
        let times: Vec<NaiveDateTime> = stamps
            .iter()
            .filter_map(|s| snapshot::parse_stamp(s))
            .collect();
        let i = match select::choose(&times, query) {
            Ok(i) => i,
            Err(no) => return first.ok_or((no, stamps)),
        };
        let stamp = stamps.remove(i);
        let meta = read(&stamp);
        // Only a set of one of the config's names is read for its sources (the names decided the rest).
        let named = |n: &str| own.iter().any(|o| o.name == n);
        let foreign = !matches!(query, DateQuery::Exact(_))
            && meta.as_ref().is_ok_and(|m| match set {
                None => m.sets.iter().any(|r| named(&r.set)) && owner.foreign_records(&m.sets),
                Some(s) => (m.sets.iter()).any(|r| {
                    r.set == s && named(s) && !owner.owns_set(s, &recorded_paths(&r.sources))
                }),
            });
        if !foreign {
            return Ok((stamp, meta));
        }
        first.get_or_insert((stamp, meta));
    }
    Ok(first.expect("passed over at least once"))
}

/// The backup `--date` picks on the destination, its `backup.json` read and checked against its
/// `verification.sha256`.
pub fn choose(settings: &Settings, req: &Request, ui: &Ui) -> anyhow::Result<CloudBackup> {
    let cloud = destination(settings, req.cloud.as_deref())?;
    let (store, listing) = open(cloud)?;
    if listing.backups.is_empty() {
        return Err(failed(format!(
            "there is no backup on {} ({}); run `dbackup external` first",
            cloud.name,
            store.place()
        )));
    }
    let stamps = pickable(settings, &listing, req.set.as_deref(), req.date);
    if let Some(set) = &req.set
        && stamps.is_empty()
    {
        return Err(failed(format!(
            "no backup on {} holds set {set:?}; see `dbackup restore --list --source cloud:{}`",
            cloud.name, cloud.name
        )));
    }
    let listed = listing.sizes;
    let read = |stamp: &str| crate::external::cloud::read_meta(&store, stamp);
    let (stamp, meta) =
        pick(settings, stamps, (req.set.as_deref(), req.date), read).map_err(|(no, stamps)| {
            failed(format!(
                "no backup on {} matches --date {}; {}; see `dbackup restore --list --source cloud`",
                cloud.name,
                req.date,
                select::nearest_sentence(&no, |i| stamps[i].clone())
            ))
        })?;
    let dir = format!("{BACKUPS}{stamp}/");
    let meta = meta.map_err(|e| {
        failed(format!(
            "{}; nothing was written",
            crate::ui::format_error(&e)
        ))
    })?;
    // An incremental's earlier archives: the backups it depends on (stamps checked by `BackupMeta::check`), each
    // `backup.json` checked against its sums; one that cannot be read is named when a file needs it.
    let mut chain = Vec::new();
    for d in &meta.depends_on {
        match crate::external::cloud::read_meta(&store, d) {
            Ok(m) => chain.push((
                d.clone(),
                m,
                Arc::new(Objects::new(store.clone(), format!("{BACKUPS}{d}/"))),
            )),
            Err(e) => ui.warn(format_args!(
                "backup {stamp} on {} depends on {d}, which cannot be read: {}",
                cloud.name,
                crate::ui::format_error(&e)
            )),
        }
    }
    if let Some(set) = &req.set
        && !meta.sets.iter().any(|s| &s.set == set)
    {
        return Err(failed(format!(
            "backup {stamp} on {} has no set {set}",
            cloud.name
        )));
    }
    ui.step(format_args!(
        "{}: backup {stamp} ({})",
        cloud.name,
        store.place()
    ));
    Ok(CloudBackup {
        destination: cloud.name.clone(),
        place: store.place().to_string(),
        objects: Arc::new(Objects::new(store.clone(), dir)),
        stamp,
        meta,
        store,
        chain,
        listed,
    })
}

/// What `restore --verify --source cloud` found: each object of the backup downloaded and hashed against
/// `verification.sha256`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloudVerifyReport {
    pub destination: String,
    pub stamp: String,
    /// Bytes downloaded.
    pub bytes: u64,
    pub objects: Vec<ObjectCheck>,
    pub intact: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectCheck {
    pub name: String,
    pub bytes: u64,
    /// `ok`, `mismatch` (its sha256 differs from `verification.sha256`), `unlisted`, `unreadable`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Downloads every archive and index of the backup (of `set` only, when given), streaming each through sha256,
/// and compares with `verification.sha256`. The bytes are said first.
pub fn verify(b: &CloudBackup, set: Option<&str>, ui: &Ui) -> anyhow::Result<CloudVerifyReport> {
    use std::io::Read;
    let (archives, indexes) = b.bytes(set);
    // An incremental's sets keep files in the archives of the backups it depends on: those archives are checked
    // too, each against its own backup's `verification.sha256` (named `<stamp>/<object>`).
    let chain_bytes = b.chain_bytes(set);
    ui.info(format_args!(
        "{}: --verify downloads {} from {} (egress may be billed)",
        b.destination,
        crate::stdx::bytes(archives.saturating_add(indexes).saturating_add(chain_bytes)),
        b.place
    ));
    let mut report = CloudVerifyReport {
        destination: b.destination.clone(),
        stamp: b.stamp.clone(),
        bytes: 0,
        objects: Vec::new(),
        intact: true,
    };
    for d in b
        .meta
        .depends_on
        .iter()
        .filter(|d| !b.chain.iter().any(|(s, _, _)| s == *d))
    {
        report.intact = false;
        report.objects.push(ObjectCheck {
            name: format!("{d}/{}", layout::METADATA_FILE),
            bytes: 0,
            outcome: "unreadable".into(),
            detail: Some(format!(
                "backup {} depends on {d}, whose {} cannot be read",
                b.stamp,
                layout::METADATA_FILE
            )),
        });
    }
    let own = b
        .meta
        .sets
        .iter()
        .filter(|s| set.is_none_or(|n| n == s.set))
        .flat_map(|s| s.archive.iter().chain(&s.index))
        .map(|f| (String::new(), b.dir(), f));
    let chain = b.chain.iter().flat_map(|(stamp, meta, _)| {
        meta.sets
            .iter()
            .filter(|s| b.selected(s, set))
            .flat_map(|s| &s.archive)
            .map(move |f| (format!("{stamp}/"), format!("{BACKUPS}{stamp}/"), f))
    });
    let mut sums_of: Vec<(String, Vec<crate::archive::sums::SumLine>)> = Vec::new();
    for (shown, dir, f) in own.chain(chain) {
        crate::interrupt::check()?;
        if !sums_of.iter().any(|(d, _)| *d == dir) {
            let sums = b.store.get(&format!("{dir}{}", layout::SUMS_FILE))?;
            let sums =
                crate::archive::sums::parse_sums(&sums).map_err(|e| failed(e.to_string()))?;
            sums_of.push((dir.clone(), sums));
        }
        let sums = &sums_of
            .iter()
            .find(|(d, _)| *d == dir)
            .expect("just read")
            .1;
        let listed = sums
            .iter()
            .rev()
            .find(|l| l.name == f.name.as_bytes())
            .map(|l| l.sha256);
        let key = format!("{dir}{}", f.name);
        // The object's first bytes, to compare with the age head `backup.json` records for it.
        let head = f.age_head.as_deref().and_then(|h| decode_head(h).ok());
        let mut start = Vec::new();
        let hashed = b
            .store
            .reader(&key)
            .map_err(std::io::Error::other)
            .and_then(|mut r| {
                let mut h = sha2::Sha256::default();
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    let got = r.read(&mut buf)?;
                    if got == 0 {
                        break;
                    }
                    if let Some(want) = &head {
                        let more = want.len().saturating_sub(start.len()).min(got);
                        start.extend_from_slice(&buf[..more]);
                    }
                    sha2::Digest::update(&mut h, &buf[..got]);
                    n += got as u64;
                }
                Ok((crate::archive::Digest::of(h), n))
            });
        let (outcome, detail) = match (hashed, listed) {
            (Err(e), _) => ("unreadable", Some(e.to_string())),
            (Ok((_, n)), _) if head.as_ref().is_some_and(|h| *h != start) => {
                report.bytes += n;
                (
                    "mismatch",
                    Some(format!(
                        "its first bytes are not the age header {} records for it (age_head): {} or the \
                             object was altered",
                        layout::METADATA_FILE,
                        layout::METADATA_FILE
                    )),
                )
            }
            (Ok((_, n)), None) => {
                report.bytes += n;
                ("unlisted", Some(format!("not in {}", layout::SUMS_FILE)))
            }
            (Ok((d, n)), Some(want)) => {
                report.bytes += n;
                if d == want && n == f.bytes {
                    ("ok", None)
                } else {
                    (
                        "mismatch",
                        Some(format!(
                            "sha256 {d} ({n} bytes), {} lists {want} ({} bytes recorded): the object was \
                                 altered or damaged",
                            layout::SUMS_FILE,
                            f.bytes
                        )),
                    )
                }
            }
        };
        report.intact &= outcome == "ok";
        report.objects.push(ObjectCheck {
            name: format!("{shown}{}", f.name),
            bytes: f.bytes,
            outcome: outcome.into(),
            detail,
        });
    }
    Ok(report)
}

impl CloudVerifyReport {
    /// Every object not found intact, as a problem of the backup (its name, then what is wrong).
    pub fn problems(&self) -> Vec<super::verify::Issue> {
        (self.objects.iter())
            .filter(|o| o.outcome != "ok")
            .map(|o| super::verify::Issue {
                file: o.name.clone(),
                entry: None,
                message: o.detail.clone().unwrap_or_else(|| o.outcome.clone()),
            })
            .collect()
    }
}

/// The verify report as text.
pub fn render_verify(r: &CloudVerifyReport) -> String {
    let mut out = format!(
        "backup {} on {}: {} downloaded\n",
        r.stamp,
        r.destination,
        crate::stdx::bytes(r.bytes)
    );
    for o in &r.objects {
        out.push_str(&format!(
            "  {:<10} {}{}\n",
            if o.outcome == "ok" {
                "ok"
            } else {
                o.outcome.as_str()
            },
            crate::stdx::show_str(&o.name),
            o.detail
                .as_ref()
                .map(|d| format!(": {}", crate::stdx::show_str(d)))
                .unwrap_or_default()
        ));
    }
    out.push_str(if r.intact {
        "intact: every object matches verification.sha256\n"
    } else {
        "NOT intact: see above\n"
    });
    out
}
