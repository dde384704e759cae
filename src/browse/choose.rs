//! Which backup `ls` lists: locally each set's snapshot by the date, on a drive or bucket one backup's sets, chosen
//! as `restore --date` chooses (`restore::choose::by_date`) among this config's backups (`restore::select::pickable`).

use std::path::Path;

use crate::exit::failed;
use crate::external::retention::{OwnSet, Owner, recorded_paths};
use crate::restore::choose::{self, Standing};
use crate::restore::select::{self, DateQuery};

use super::cloud::CloudScope;
use super::{Scope, SetBackup};
use crate::settings::Settings;

/// The sets to list: local, each set's snapshot chosen by the date; on a drive, one backup's sets. The backup a date
/// means is the one `restore --date` reads (`restore::choose::by_date`: unverified or unreadable backups only when
/// named exactly, an incomplete snapshot as restore would take it), among this config's (`own` sets) on a destination
/// another config shares (`restore::select::pickable`).
pub fn for_ls(
    all: &[SetBackup],
    (query, own): (DateQuery, &[OwnSet]),
    external: bool,
    set: Option<&str>,
) -> anyhow::Result<Vec<SetBackup>> {
    let what = match (external, set) {
        (false, None) => "local snapshot".to_string(),
        (false, Some(s)) => format!("local snapshot of set {s}"),
        (true, None) => "backup on the drive".to_string(),
        (true, Some(s)) => format!("backup of set {s} on the drive"),
    };
    let no_match = |no: &select::NoMatch, stamps: &[String]| {
        failed(format!(
            "no {what} matches --date {query}; {}; see `dbackup snapshots`",
            select::nearest_sentence(no, |i| stamps[i].clone())
        ))
    };
    if !all.iter().any(|b| b.standing.counts_for(query)) {
        return Err(failed(format!(
            "there is no {what}; `dbackup snapshots` lists the backups"
        )));
    }
    if external {
        // One backup: the stamps, then every set of the chosen one (`catalog` keeps one drive per stamp).
        let mut stamps: Vec<(chrono::NaiveDateTime, Standing, String)> = all
            .iter()
            .map(|b| (b.time, b.standing, b.stamp.clone()))
            .collect();
        stamps.dedup();
        let sets_of = |stamp: &str| -> Vec<(&str, Vec<&Path>)> {
            let of = all.iter().filter(|b| b.stamp == stamp);
            of.map(|b| (b.set.as_str(), recorded_paths(&b.sources)))
                .collect()
        };
        let owner = Owner::Sets(own);
        let picked = select::pickable(
            (&stamps, &OwnSet::names(own)),
            (set, query),
            |s, set| sets_of(&s.2).iter().any(|(n, _)| *n == set),
            |s, set| match set {
                None => owner.foreign_sets(sets_of(&s.2)),
                Some(set) => (sets_of(&s.2).into_iter())
                    .any(|(n, paths)| n == set && !owner.owns_set(set, &paths)),
            },
        );
        let stamps: Vec<_> = picked.into_iter().map(|i| stamps[i].clone()).collect();
        let dated: Vec<_> = stamps.iter().map(|s| (s.0, s.1)).collect();
        let names: Vec<String> = stamps.iter().map(|s| s.2.clone()).collect();
        let i = choose::by_date(&dated, query).map_err(|no| no_match(&no, &names))?;
        return Ok(all
            .iter()
            .filter(|b| b.stamp == names[i])
            .cloned()
            .collect());
    }
    let mut sets: Vec<&str> = all.iter().map(|b| b.set.as_str()).collect();
    sets.sort_unstable();
    sets.dedup();
    let mut out = Vec::new();
    let mut last_err = None;
    for s in sets {
        let of_set: Vec<&SetBackup> = all.iter().filter(|b| b.set == s).collect();
        let dated: Vec<_> = of_set.iter().map(|b| (b.time, b.standing)).collect();
        match choose::by_date(&dated, query) {
            Ok(i) => out.push(of_set[i].clone()),
            Err(no) => {
                let names: Vec<String> = of_set.iter().map(|b| b.stamp.clone()).collect();
                last_err = Some(no_match(&no, &names));
            }
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// The backups `ls` and `find` look through: the bucket `scope.cloud` names (`pick`: the one backup the date picks;
/// what they will read said on stderr; the catalog is kept, its store serves the reads), or the local snapshots and
/// drive backups `scope` names ([`super::catalog`]); `--set` checked against the sets they hold. Last, the drives' backups
/// passed over because the user cannot read them (one line each, which and why).
pub(crate) fn looked_through(
    settings: &Settings,
    ui: &crate::ui::Ui,
    scope: &Scope,
    pick: Option<crate::restore::select::DateQuery>,
) -> anyhow::Result<(Vec<SetBackup>, Option<CloudScope>, Vec<String>)> {
    let set = scope.set.as_deref();
    let (all, bucket, passed_over) = match &scope.cloud {
        Some(name) => {
            let picked = pick.is_some();
            let mut c = super::cloud::catalog(settings, name.as_deref(), set, pick)?;
            let backup = match c.backups.first() {
                _ if !picked => String::new(),
                first => format!("backup {}: ", first.map_or("-", |b| b.stamp.as_str())),
            };
            ui.info(format_args!(
                "{} ({}): {backup}reading {} of {} (no archive)",
                c.destination,
                c.place,
                crate::stdx::bytes(c.index_bytes),
                crate::stdx::counted(c.backups.len() as u64, "index", "indexes"),
            ));
            (std::mem::take(&mut c.backups), Some(c), Vec::new())
        }
        None => {
            let (all, passed_over) = super::catalog(settings, scope)?;
            (all, None, passed_over)
        }
    };
    let held: Vec<&str> = all.iter().map(|b| b.set.as_str()).collect();
    crate::restore::catalog::check_set_named(settings, set, &held)?;
    Ok((all, bucket, passed_over))
}
