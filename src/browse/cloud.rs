//! `ls` and `find` on a cloud destination: one listing of `backups/`, the `backup.json` of each backup looked at
//! (for `ls`, only the one `--date` picks), then each set's index as remote [`ArchiveFiles`] (an index up to
//! [`crate::cloud::store::WHOLE_READ_MAX`] is one GET, read once; a larger one a ranged GET per seek). Never an archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::{Content, SetBackup};
use crate::archive::ArchiveFiles;
use crate::cloud::{Objects, Store};
use crate::exit::{CodedError, Exit};
use crate::external::bucket::BACKUPS;
use crate::external::layout;
use crate::restore::select::Kept;
use crate::restore::select::{self, DateQuery};
use crate::settings::{CloudSettings, Settings};
use crate::snapshot;

/// A cloud destination's backups to look into, and what reading their indexes costs.
pub struct CloudScope {
    pub destination: String,
    pub place: String,
    pub backups: Vec<SetBackup>,
    /// Bytes of the indexes (what reading each once downloads at most).
    pub index_bytes: u64,
    pub store: Arc<Store>,
    /// The backups passed over because their `backup.json` cannot be read or is not valid (`find` searches the
    /// others), each with why.
    pub skipped: Vec<String>,
}

impl CloudScope {
    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        crate::external::bucket::requests_of(&self.store)
    }
}

fn failed(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Failed, msg).into()
}

/// The cloud destination named, or the first by priority.
pub fn destination<'a>(
    settings: &'a Settings,
    name: Option<&str>,
) -> anyhow::Result<&'a CloudSettings> {
    let names: Vec<&str> = settings.clouds.iter().map(|c| c.name.as_str()).collect();
    let found = match name {
        Some(n) => settings.cloud(n),
        None => {
            let mut clouds: Vec<&CloudSettings> = settings.clouds.iter().collect();
            clouds.sort_by_key(|c| std::cmp::Reverse(c.priority));
            clouds.first().copied()
        }
    };
    found.ok_or_else(|| {
        CodedError::new(
            Exit::Usage,
            match (name, names.is_empty()) {
                (_, true) => Settings::NO_CLOUD.to_string(),
                (Some(n), false) => format!(
                    "there is no cloud destination named {n:?}; the config has: {}",
                    names.join(", ")
                ),
                (None, false) => unreachable!("a config with cloud destinations has a first"),
            },
        )
        .into()
    })
}

/// The backups of cloud destination `name` (each set of each, oldest first); `pick`: only the backup that date
/// picks (`ls`); `set`: only that set.
pub fn catalog(
    settings: &Settings,
    name: Option<&str>,
    set: Option<&str>,
    pick: Option<DateQuery>,
) -> anyhow::Result<CloudScope> {
    let cloud = destination(settings, name)?;
    let env = crate::expand::Env::from_process();
    let store = Arc::new(Store::open(cloud, &env, chrono::Local::now().time())?);
    let (listing, _) = crate::external::bucket::list(&store, false)?;
    let mut stamps: Vec<(NaiveDateTime, String)> = listing
        .backups
        .iter()
        .filter_map(|s| snapshot::parse_stamp(s).map(|t| (t, s.clone())))
        .collect();
    if stamps.is_empty() {
        return Err(failed(format!(
            "there is no backup on {} ({}); `dbackup external --destination {}` uploads one",
            cloud.name,
            store.place(),
            cloud.name
        )));
    }
    let read = |stamp: &str| -> anyhow::Result<layout::BackupMeta> {
        let key = format!("{BACKUPS}{stamp}/{}", layout::METADATA_FILE);
        let path = PathBuf::from(format!("{} {key}", store.place()));
        (store.get(&key).map_err(anyhow::Error::from))
            .and_then(|b| layout::parse_metadata(&b, &path).map_err(|e| failed(e.to_string())))
    };
    let mut picked_meta = None;
    if let Some(query) = pick {
        // Among this config's, as `restore` picks (another config's on a bucket both name alike are not).
        let pickable = crate::restore::cloud::pickable(settings, &listing, set, query);
        let (stamp, meta) = crate::restore::cloud::pick(settings, pickable, (set, query), read)
            .map_err(|(no, stamps)| {
                failed(format!(
                    "no backup on {} matches --date {query}; {}; see `dbackup restore --list --source cloud:{}`",
                    cloud.name,
                    select::nearest_sentence(&no, |i| stamps[i].clone()),
                    cloud.name
                ))
            })?;
        stamps.retain(|s| s.1 == stamp);
        picked_meta = Some(meta);
    }
    let picked = pick.is_some();
    let mut backups = Vec::new();
    let mut skipped = Vec::new();
    let mut index_bytes = 0u64;
    for (time, stamp) in stamps {
        let dir = format!("{BACKUPS}{stamp}/");
        // The picked backup's was read already.
        let meta = picked_meta.take().unwrap_or_else(|| read(&stamp));
        // One backup whose metadata cannot be read does not hide the others from `find`.
        let meta = match meta {
            Ok(m) => m,
            Err(e) if !picked => {
                skipped.push(format!(
                    "{} {stamp} was not searched: {}",
                    cloud.name,
                    crate::ui::format_error(&e)
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let objects = Arc::new(Objects::new(store.clone(), dir));
        for s in meta.sets.iter().filter(|s| set.is_none_or(|n| n == s.set)) {
            let content = if s.index.is_empty() {
                Content::Unreadable("it has no index".into())
            } else if let Some(bad) = s.index.iter().find(|f| !layout::is_plain_name(&f.name)) {
                Content::Unreadable(format!(
                    "its index is named {}, not a plain file name",
                    crate::stdx::show_str(&bad.name)
                ))
            } else {
                index_bytes = s
                    .index
                    .iter()
                    .fold(index_bytes, |t, f| t.saturating_add(f.bytes));
                Content::Index(ArchiveFiles::remote(
                    s.index
                        .iter()
                        .map(|f| (Path::new(&f.name).to_path_buf(), f.bytes))
                        .collect(),
                    objects.clone(),
                ))
            };
            backups.push(SetBackup {
                kept: Kept::Cloud,
                stamp: stamp.clone(),
                time,
                set: s.set.clone(),
                destination: Some(cloud.name.clone()),
                standing: crate::restore::choose::Standing::of_drive_backup(meta.verified),
                sources: s.sources.clone(),
                content,
                backup_kind: Some(s.kind),
                base: s.base.clone(),
            });
        }
    }
    Ok(CloudScope {
        destination: cloud.name.clone(),
        place: store.place().to_string(),
        backups,
        index_bytes,
        store,
        skipped,
    })
}
