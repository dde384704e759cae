//! Rotation on a drive as pure functions of (backups, owner, policy, now): which backups retention keeps
//! ([`decide_own`]), and which old restore points go first when a new backup does not fit ([`make_room_own`]), each
//! with its reasons.
//!
//! Rules of [`decide_own`] (a backup is kept when any keeping rule applies; every reason is given):
//! - Only verified backups (a directory named exactly a stamp, holding `backup.json` with `verified: true`) are
//!   judged. A stamp-named directory without usable metadata is someone else's (or damaged): never removed. Nor is
//!   a verified backup found damaged since (`restore --verify`, [`super::damage`], or a file missing or not its
//!   recorded size): no restore point, it is not counted by any rule below ([`BackupInfo::judged`]).
//! - The policy (`retention.external`: a count N is `last: N`, or `last`/`hourly`/`daily`/`weekly`/`monthly`/
//!   `yearly`, the logic of [`crate::retention`]) is applied to the backups holding sets (the restore points), and
//!   apart from them to the image-only backups (only `system/`, from `dbackup image create`): `last 5` keeps the
//!   newest 5 restore points and the newest 5 image-only backups, so images never push restore points out (nor the
//!   other way round).
//! - The newest verified backup, the newest verified backup holding each set (so that a set which stopped being
//!   exported still has its last copy) and the newest holding `system/` images are kept whatever the policy says.
//! - A backup newer than `now` (a clock that went back) and the target of `latest` are kept.
//! - A backup holding sets, none of them the config's ([`Owner`]: a set of that name whose sources share a path with
//!   the recorded ones), is never judged: it is another config's that shares the drive under the same destination
//!   name (or this config's from before a set was renamed or its sources all changed). It is kept, and the run names
//!   it ([`foreign_note`]); its own config's runs judge it.
//! - Chains: a backup that a kept backup depends on (its `depends_on`, and each set's `base`) is kept too, "base of
//!   <stamp>", transitively. So only a chain's newest end (its tail) is ever removed, and a full goes only together
//!   with everything that depends on it.
//! - Everything else that is verified is removed.
//!
//! [`decide_own`]'s removals are applied only after the new backup was verified and renamed into place.
//! [`make_room_own`] is the one exception, before writing: see its documentation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::layout::BackupMeta;
use crate::config::RetentionPolicy;
use crate::retention::{self, Decision};
use crate::stdx;

/// Why a stamp directory without verified metadata is kept: its first reason, always.
pub const UNJUDGED: &str = "no verified dbackup metadata: not dbackup's to judge, never touched";

/// What rotation needs to know about one backup on the drive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupInfo {
    pub name: String,
    pub time: NaiveDateTime,
    /// Carries readable, verified dbackup metadata.
    pub verified: bool,
    /// Found damaged since it was verified: why (`restore --verify, <date>`, or which file is missing or not its
    /// recorded size). Then it is no restore point, as one without verified metadata is: never judged, never removed.
    pub damaged: Option<String>,
    /// Its chain holds a damaged or missing link (`status` calls it BROKEN): why (`its base <stamp> is damaged`).
    /// Then it is no restore point either, as a damaged one ([`Self::judged`]).
    pub broken: Option<String>,
    /// The sets it holds (from its metadata).
    pub sets: Vec<String>,
    /// Each set's recorded source paths ([`recorded_paths`]; a set absent or empty: none recorded).
    pub sources: BTreeMap<String, Vec<PathBuf>>,
    /// It holds `system/` images or a recovery kit.
    pub system: bool,
    /// `latest`/`LATEST` names it.
    pub latest: bool,
    /// The other backups it cannot be restored without (`depends_on` and each set's `base`).
    pub depends_on: Vec<String>,
    /// The bytes its files take on the drive (what removing it frees).
    pub bytes: u64,
}

impl BackupInfo {
    /// From a backup found on the drive (`meta`: its verified metadata, when it has some).
    pub fn new(
        name: &str,
        time: NaiveDateTime,
        meta: Option<&BackupMeta>,
        latest: bool,
    ) -> BackupInfo {
        let Some(m) = meta else {
            return BackupInfo {
                name: name.to_string(),
                time,
                latest,
                ..Default::default()
            };
        };
        let mut depends_on: Vec<String> = m
            .depends_on
            .iter()
            .chain(m.sets.iter().filter_map(|s| s.base.as_ref()))
            .filter(|d| *d != name)
            .cloned()
            .collect();
        depends_on.sort();
        depends_on.dedup();
        BackupInfo {
            name: name.to_string(),
            time,
            verified: true,
            damaged: None,
            broken: None,
            sets: m.set_names(),
            sources: m
                .sets
                .iter()
                .map(|s| {
                    let paths = recorded_paths(&s.sources)
                        .into_iter()
                        .map(Path::to_path_buf);
                    (s.set.clone(), paths.collect())
                })
                .collect(),
            system: m.system.is_some(),
            latest,
            depends_on,
            bytes: m.bytes_on_drive(),
        }
    }

    /// An image-only backup: `system/` and no set (judged apart from the restore points).
    pub fn image_only(&self) -> bool {
        self.sets.is_empty() && self.system
    }

    /// THE rule of what rotation judges ([`decide_own`], [`make_room_own`]): a verified backup neither found damaged
    /// nor broken ([`Self::no_restore_point`]), not newer than `now`, and the `owner`'s. Only these count among the
    /// restore points a policy or `keep_at_least` keeps, and only these are ever removed.
    pub fn judged(&self, owner: Owner, now: NaiveDateTime) -> bool {
        self.verified
            && self.no_restore_point().is_none()
            && self.time <= now
            && !owner.foreign(self)
    }

    /// Why a verified backup is no restore point (and so never judged): found damaged (`damaged (<why>)`) or its
    /// chain broken (`broken: its base <stamp> is damaged`); `None` for one that can be restored whole.
    pub fn no_restore_point(&self) -> Option<String> {
        (self.damaged.as_ref().map(|why| format!("damaged ({why})")))
            .or_else(|| self.broken.as_ref().map(|why| format!("broken: {why}")))
    }

    /// `infos` with those that `damaged` names (stamp: why) marked found damaged, and then every verified backup
    /// whose chain holds a link that is missing or unverified, damaged, or broken itself marked broken (the rule
    /// of [`super::chain::broken`], for rotation).
    pub fn with_damage(
        mut infos: Vec<BackupInfo>,
        damaged: &BTreeMap<String, String>,
    ) -> Vec<BackupInfo> {
        for b in &mut infos {
            if let Some(why) = damaged.get(&b.name) {
                b.damaged = Some(why.clone());
            }
        }
        // Oldest first, a base before what depends on it; a base newer than its incremental (hostile metadata) is
        // judged as it stands then: the pass is bounded by the listing's length.
        let mut order: Vec<usize> = (0..infos.len()).collect();
        order.sort_by(|&a, &b| {
            (infos[a].time, &infos[a].name).cmp(&(infos[b].time, &infos[b].name))
        });
        for i in order {
            if !infos[i].verified {
                continue;
            }
            let why = infos[i].depends_on.iter().find_map(|d| {
                let shown = stdx::show_str(d);
                match infos.iter().find(|x| x.name == *d && x.verified) {
                    None => Some(format!("its base {shown} is missing or unverified")),
                    Some(x) if x.damaged.is_some() => Some(format!("its base {shown} is damaged")),
                    Some(x) if x.broken.is_some() => {
                        Some(format!("its base {shown} is broken itself"))
                    }
                    Some(_) => None,
                }
            });
            infos[i].broken = why;
        }
        infos
    }
}

/// One of the config's sets as [`Owner`] reads it: its name and its sources' paths (as configured, expanded, and with
/// symlinks resolved).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnSet {
    pub name: String,
    pub paths: Vec<PathBuf>,
}

impl OwnSet {
    /// The config's sets, in config order.
    pub fn of(sets: &[crate::settings::SetSettings]) -> Vec<OwnSet> {
        sets.iter()
            .map(|s| OwnSet {
                name: s.name.clone(),
                paths: s
                    .sources
                    .iter()
                    .flat_map(|p| [p.path.clone(), p.resolved.clone()])
                    .collect(),
            })
            .collect()
    }

    /// The names of `sets`.
    pub fn names(sets: &[OwnSet]) -> Vec<String> {
        sets.iter().map(|s| s.name.clone()).collect()
    }

    /// Sets of these names, their sources unknown (tests).
    #[cfg(test)]
    pub fn named(names: &[&str]) -> Vec<OwnSet> {
        names
            .iter()
            .map(|n| OwnSet {
                name: n.to_string(),
                paths: Vec::new(),
            })
            .collect()
    }
}

/// The paths a set record's sources were backed up from (expanded and resolved): what [`Owner`] compares with the
/// config's. Empty for a `backup.json` that records no sources.
pub fn recorded_paths(sources: &[crate::snapshot::SourceRecord]) -> Vec<&Path> {
    sources
        .iter()
        .flat_map(|s| [s.path.as_path(), s.resolved.as_path()])
        .collect()
}

/// Whose backups a run judges. A drive (or a bucket) may hold the backups of two configs that name it alike; the
/// root's layout keeps configs apart by their set names and their sources, and so does rotation.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// Every backup is judged (the table tests).
    #[cfg(test)]
    Anyone,
    /// The config's sets: a backup holding sets, none of them one of these, is not this config's.
    Sets(&'a [OwnSet]),
}

impl Owner<'_> {
    /// `b` holds sets and none of them is the owner's: another config's, or of a set since renamed or whose
    /// sources all changed. An image-only backup (no set) is the drive's, judged by every config.
    pub fn foreign(&self, b: &BackupInfo) -> bool {
        self.foreign_sets(b.sets.iter().map(|s| {
            let paths = b
                .sources
                .get(s)
                .map(|p| p.iter().map(PathBuf::as_path).collect());
            (s.as_str(), paths.unwrap_or_default())
        }))
    }

    /// Whether a set recorded as `name` with sources from `paths` is one of the owner's: one of its sets of that name
    /// whose sources share a path with the recorded ones. A record of no sources (an older `backup.json`, or a
    /// bucket's object names) is the owner's by its name alone.
    pub fn owns_set(&self, name: &str, paths: &[&Path]) -> bool {
        match self {
            #[cfg(test)]
            Owner::Anyone => true,
            Owner::Sets(own) => own.iter().any(|o| {
                o.name == name
                    && (paths.is_empty() || paths.iter().any(|p| o.paths.iter().any(|q| q == p)))
            }),
        }
    }

    /// THE rule of "another config's backup", wherever a destination's backups are read (retention, `status`,
    /// `restore`, an upload's cleanup, the chains): a backup holding `sets` (each its name and recorded source
    /// paths), some, none of them the owner's ([`Self::owns_set`]).
    pub fn foreign_sets<'s>(
        &self,
        sets: impl IntoIterator<Item = (&'s str, Vec<&'s Path>)>,
    ) -> bool {
        let mut sets = sets.into_iter().peekable();
        sets.peek().is_some() && !sets.any(|(s, paths)| self.owns_set(s, &paths))
    }

    /// [`Self::foreign_sets`] of a backup's `backup.json` set records.
    pub fn foreign_records(&self, sets: &[super::layout::SetRecord]) -> bool {
        self.foreign_sets(
            sets.iter()
                .map(|s| (s.set.as_str(), recorded_paths(&s.sources))),
        )
    }

    /// [`Self::foreign_sets`] of what has no metadata to say its sets (an unfinished upload's objects, by `names`):
    /// some of them are a set's archive or index, none of them of one of the owner's sets.
    pub fn foreign_files<'s>(&self, names: impl IntoIterator<Item = &'s str>) -> bool {
        match self {
            #[cfg(test)]
            Owner::Anyone => false,
            Owner::Sets(own) => {
                let names: Vec<&str> = names.into_iter().collect();
                names
                    .iter()
                    .any(|n| super::layout::is_set_file(n.as_bytes()))
                    && !names.iter().any(|n| {
                        own.iter()
                            .any(|o| super::layout::is_file_of_set(n.as_bytes(), &o.name))
                    })
            }
        }
    }
}

/// The one note (not a warning: a drive two configs share on purpose is no fault) naming the verified backups that rotation leaves to another config ([`Owner::foreign`]) on the
/// `drive` (or `bucket`), and `how` to remove one by hand (`<stamp>` in it); `None` when there are none.
pub fn foreign_note(
    backups: &[BackupInfo],
    owner: Owner,
    (on, how): (&str, &str),
) -> Option<String> {
    let order = newest_first(backups);
    let foreign: Vec<&&BackupInfo> = order
        .iter()
        .rev()
        .filter(|b| b.verified && owner.foreign(b))
        .collect();
    if foreign.is_empty() {
        return None;
    }
    // Set names come from the drive's metadata: escaped before they are printed.
    let mut sets: Vec<String> = foreign
        .iter()
        .flat_map(|b| b.sets.iter().map(|s| stdx::show_str(s)))
        .collect();
    sets.sort_unstable();
    sets.dedup();
    let names: Vec<&str> = foreign.iter().map(|b| b.name.as_str()).collect();
    let (it, them) = if names.len() == 1 {
        ("it is", "it")
    } else {
        ("they are", "them")
    };
    Some(format!(
        "{} on the {on} {} no set of this config ({}: {} {}): another config's that uses this {on} under the \
         same destination name, or this config's from before a set was renamed or its sources all changed; retention \
         leaves {them} alone. If {it} not \
         wanted, delete {them} by hand ({how})",
        stdx::counted(names.len() as u64, "backup", "backups"),
        if names.len() == 1 { "holds" } else { "hold" },
        names.join(", "),
        if sets.len() == 1 { "set" } else { "sets" },
        sets.join(", "),
    ))
}

/// The table tests' form of [`decide_own`]: every backup is judged ([`Owner::Anyone`]).
#[cfg(test)]
pub fn decide(
    backups: &[BackupInfo],
    policy: &RetentionPolicy,
    now: NaiveDateTime,
) -> Vec<Decision> {
    decide_own(backups, Owner::Anyone, policy, now)
}

/// Decides, for every backup on a drive, whether to keep it; only `owner`'s backups are judged, another config's
/// are kept. The result is ordered newest first.
pub fn decide_own(
    backups: &[BackupInfo],
    owner: Owner,
    policy: &RetentionPolicy,
    now: NaiveDateTime,
) -> Vec<Decision> {
    let order = newest_first(backups);
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];

    let judged: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].judged(owner, now))
        .collect();
    if let Some(&i) = judged.first() {
        reasons[i].push("newest verified backup".to_string());
    }
    let described = retention::describe(policy);
    for (images, prefix) in [(false, ""), (true, "image-only backups: ")] {
        let track: Vec<usize> = judged
            .iter()
            .copied()
            .filter(|&i| order[i].image_only() == images)
            .collect();
        let times: Vec<NaiveDateTime> = track.iter().map(|&i| order[i].time).collect();
        if !retention::has_rules(policy) {
            for &i in &track {
                reasons[i].push("no retention rule: everything is kept".into());
            }
        }
        for (k, why) in retention::policy_reasons(&times, policy, prefix)
            .into_iter()
            .enumerate()
        {
            reasons[track[k]].extend(why);
        }
    }
    let mut sets_seen: BTreeSet<&str> = BTreeSet::new();
    let mut system_seen = false;
    for &i in &judged {
        for set in &order[i].sets {
            if sets_seen.insert(set.as_str()) && reasons[i].is_empty() {
                reasons[i].push(format!("newest backup holding set {set:?}"));
            }
        }
        if order[i].system && !system_seen {
            system_seen = true;
            if reasons[i].is_empty() {
                reasons[i].push("newest backup holding system/".into());
            }
        }
    }
    for (i, b) in order.iter().enumerate() {
        if !b.verified {
            reasons[i].push(UNJUDGED.into());
        } else if let Some(why) = b.no_restore_point() {
            reasons[i].push(format!("{why}: not a restore point"));
            reasons[i]
                .push("never removed by retention: delete it by hand when it is not wanted".into());
        } else if b.time > now {
            reasons[i].push(format!(
                "newer than now ({now}): the clock may have gone back"
            ));
        } else if owner.foreign(b) {
            reasons[i].push(
                "holds no set of this config: another config's (or this config's from before a set was renamed or its \
                 sources all changed), not judged".into(),
            );
        }
        if b.latest {
            reasons[i].push("target of latest".into());
        }
    }
    let kept: Vec<bool> = reasons.iter().map(|r| !r.is_empty()).collect();
    for (base, of) in bases_of_kept(&order, &kept) {
        reasons[base].push(format!("base of {}", of.join(", ")));
    }
    order
        .iter()
        .zip(reasons)
        .map(|(b, mut why)| {
            let keep_it = !why.is_empty();
            if !keep_it {
                why.push(format!("not kept by the policy ({described})"));
            }
            Decision {
                name: b.name.clone(),
                keep: keep_it,
                reasons: why,
            }
        })
        .collect()
}

fn newest_first(backups: &[BackupInfo]) -> Vec<&BackupInfo> {
    let mut order: Vec<&BackupInfo> = backups.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    order
}

/// Where each backup of `order` stands in it, by name.
fn positions<'a>(order: &[&'a BackupInfo]) -> BTreeMap<&'a str, usize> {
    order
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect()
}

/// The backups kept only because kept ones depend on them (directly or through others), each with the kept
/// backups that need it directly, by index into `order`.
fn bases_of_kept(order: &[&BackupInfo], kept: &[bool]) -> Vec<(usize, Vec<String>)> {
    let index = positions(order);
    let mut kept = kept.to_vec();
    let mut needed_by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // A worklist: every kept backup's dependencies once, whatever order a drive's metadata puts them in.
    let mut work: Vec<usize> = (0..order.len()).filter(|&i| kept[i]).collect();
    while let Some(i) = work.pop() {
        let b = order[i];
        for d in &b.depends_on {
            let Some(&j) = index.get(d.as_str()) else {
                continue;
            };
            let list = needed_by.entry(j).or_default();
            if !list.contains(&b.name) {
                list.push(b.name.clone());
            }
            if !kept[j] {
                kept[j] = true;
                work.push(j);
            }
        }
    }
    needed_by
        .into_iter()
        .map(|(j, mut by)| {
            by.sort_by(|a, b| b.cmp(a)); // newest first
            (j, by)
        })
        .collect()
}

/// What space-aware rotation removes before a new backup is written, and whether the backup then fits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Room {
    /// Removed for space, oldest first, each with why it may go.
    pub removed: Vec<Decision>,
    /// The bytes they free.
    pub freed_bytes: u64,
    /// The backup fits once they are gone. When false nothing is removed (`removed` is empty) and the run is refused.
    pub fits: bool,
    /// With `fits` false: everything rotation could free without going below `keep_at_least`.
    pub removable_bytes: u64,
}

/// The table tests' form of [`make_room_own`]: every backup is judged ([`Owner::Anyone`]).
#[cfg(test)]
pub fn make_room(
    backups: &[BackupInfo],
    needed: u64,
    available: u64,
    keep_at_least: u32,
    now: NaiveDateTime,
) -> Room {
    make_room_own(
        backups,
        Owner::Anyone,
        (needed, available),
        keep_at_least,
        now,
    )
}

/// Space-aware rotation: when `needed` bytes do not fit in `available`, removes the oldest restore points (oldest
/// chains first; a backup only together with every backup that depends on it) until they do, but never the newest
/// verified backup (one found damaged is no restore point: never counted, never removed, [`BackupInfo::judged`]), never a backup newer than `now` or the target of `latest`, never the newest image-only backup,
/// and never below `keep_at_least` verified restore points: the newest `keep_at_least` backups holding sets, and
/// everything they depend on, stay. Only `owner`'s backups are judged: another config's are never removed for space,
/// nor counted among the `keep_at_least`. When even removing every other backup would not make room, nothing is
/// removed (`fits` false): the caller refuses with the numbers.
///
/// This is the one place where a verified backup may go before the new one is verified (ARCHITECTURE.md says so next
/// to the invariant): the drive has no room for both.
pub fn make_room_own(
    backups: &[BackupInfo],
    owner: Owner,
    (needed, available): (u64, u64),
    keep_at_least: u32,
    now: NaiveDateTime,
) -> Room {
    if needed <= available {
        return Room {
            fits: true,
            ..Room::default()
        };
    }
    let order = newest_first(backups);
    let judged = |b: &BackupInfo| b.judged(owner, now);
    // Never removed for space: what retention never judges, `latest`'s target, the newest verified backup, the
    // newest `keep_at_least` restore points, the newest image-only backup, and everything these depend on.
    let mut protected: Vec<bool> = order.iter().map(|b| !judged(b) || b.latest).collect();
    let newest = order.iter().position(|b| judged(b));
    let restore_points = order
        .iter()
        .enumerate()
        .filter(|(_, b)| judged(b) && !b.image_only())
        .map(|(i, _)| i)
        .take(keep_at_least as usize);
    let newest_images = order.iter().position(|b| judged(b) && b.image_only());
    for i in newest
        .into_iter()
        .chain(restore_points)
        .chain(newest_images)
    {
        protected[i] = true;
    }
    for (j, _) in bases_of_kept(&order, &protected) {
        protected[j] = true;
    }

    let index = positions(&order);
    // Who depends on each backup, directly.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for (i, b) in order.iter().enumerate() {
        for d in &b.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                dependents[j].push(i);
            }
        }
    }
    let mut removed = vec![false; order.len()];
    let mut room = Room::default();
    let mut units: Vec<Vec<usize>> = Vec::new();
    let mut freed = 0u64;
    // Oldest first.
    for start in (0..order.len()).rev() {
        if removed[start] || !judged(order[start]) {
            continue;
        }
        // The backup with everything that depends on it, transitively.
        let mut unit = vec![start];
        let mut k = 0;
        while k < unit.len() {
            for &d in &dependents[unit[k]] {
                if !unit.contains(&d) && !removed[d] {
                    unit.push(d);
                }
            }
            k += 1;
        }
        if unit.iter().any(|&i| protected[i]) {
            continue;
        }
        for &i in &unit {
            removed[i] = true;
            freed = freed.saturating_add(order[i].bytes);
        }
        units.push(unit);
        if available.saturating_add(freed) >= needed {
            break;
        }
    }
    room.fits = available.saturating_add(freed) >= needed;
    if !room.fits {
        room.removable_bytes = freed;
        return room;
    }
    room.freed_bytes = freed;
    let short = needed - available;
    for unit in units {
        let head = order[unit[0]].name.clone();
        let mut unit = unit;
        unit.sort_by(|a, b| b.cmp(a)); // oldest first
        for i in unit {
            let b = order[i];
            let mut reasons = vec![format!(
                "for space: the new backup needs {} more than the drive has free; oldest restore points go first",
                stdx::bytes(short)
            )];
            if b.name != head {
                reasons.push(format!("depends on {head}, which goes for space"));
            }
            room.removed.push(Decision {
                name: b.name.clone(),
                keep: false,
                reasons,
            });
        }
    }
    room
}

#[cfg(test)]
mod tests;
