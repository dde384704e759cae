//! `dbackup ls`: what one backup holds under a path (a local snapshot, or a drive backup through its index), one
//! level or all below; a table or JSON ([`browse::LsOutput`]).
//!
//! Exit: 0 listed; 1 the path is in none of the chosen backup's sets, or no backup matches; 2 bad arguments;
//! 5 `--source drive` with no drive present.

use std::path::Path;

use crate::browse::{self, Content, LsBackup, LsOutput, Scope, SetBackup, Shown};
use crate::cli::{GlobalArgs, LsArgs};
use crate::exit::{CodedError, Exit};
use crate::expand::Env;
use crate::external::retention::{OwnSet, Owner, recorded_paths};
use crate::restore::choose::{self, Standing};
use crate::restore::keys::KeyRing;
use crate::restore::select::Kept;
use crate::restore::select::{self, DateQuery};
use crate::stdx::show;
use crate::ui::Ui;

fn usage(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Usage, msg).into()
}

fn failed(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Failed, msg).into()
}

pub fn run(global: &GlobalArgs, args: LsArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = super::load_settings(global)?;
    super::reading("ls");
    let ui = Ui::new(&settings.output);
    let query: DateQuery = match &args.date {
        Some(d) => d.parse().map_err(usage)?,
        None => DateQuery::Newest,
    };
    let source = args.source.as_ref().map(|s| s.kept);
    super::drive_needs_drive_source(args.drive.is_some(), source)?;
    let cloud = source == Some(Kept::Cloud);
    let external = source == Some(Kept::External) || args.drive.is_some();
    let abs = match &args.path {
        Some(p) => select::absolute_path(p, &env.home, &env.cwd).map_err(usage)?,
        None => "/".into(),
    };
    let name = select::name_of(&abs);
    let scope = Scope {
        local: !external,
        external,
        set: args.set.clone(),
        drive: args.drive.clone(),
    };
    let (all, bucket) =
        super::browsed_backups(&settings, &ui, args.source.as_ref(), &scope, Some(query))?;
    let own = OwnSet::of(&settings.sets);
    let mut chosen = choose(&all, (query, &own), external || cloud, args.set.as_deref())?;
    let ring = KeyRing::new(&settings, &args.identities);
    for w in browse::unlock(&mut chosen, &ring)
        .map_err(|e| failed(format!("the backup is encrypted: {e}")))?
    {
        ui.warn(w);
    }
    let mut out = LsOutput {
        path: show(abs.as_os_str().as_encoded_bytes()),
        recursive: args.recursive,
        backups: Vec::new(),
    };
    for b in &chosen {
        if let Content::Unreadable(why) = &b.content {
            ui.warn(format_args!(
                "{} cannot be listed: {why}; restore it to look inside",
                b.label()
            ));
            continue;
        }
        // `~/data` when the source `~/data` is a symlink to `/data`: its name in the backup is `data`.
        let name =
            select::locate_in_sources(&abs, &b.sources).map_or_else(|| name.clone(), |(n, _)| n);
        let Some(mut entries) = browse::ls(b, name.as_bytes(), args.recursive)? else {
            continue;
        };
        entries.sort_by(|a, b| crate::restore::index_search::cmp_paths(&a.name, &b.name));
        out.backups.push(LsBackup {
            source: b.kept,
            stamp: b.stamp.clone(),
            set: b.set.clone(),
            destination: b.destination.clone(),
            kind: b.backup_kind,
            base: b.base.clone(),
            entries: entries.iter().map(Shown::of).collect(),
        });
    }
    if out.backups.is_empty() {
        let stamps: Vec<String> = chosen.iter().map(|b| b.label()).collect();
        return Err(failed(format!(
            "{} is not in {}; `dbackup find` looks for a name in every backup",
            out.path,
            stamps.join(", ")
        )));
    }
    super::say_requests(&ui, bucket.as_ref());
    super::print(&out, ui.json, browse::render_ls)?;
    Ok(Exit::Ok)
}

/// The sets to list: local, each set's snapshot chosen by the date; on a drive, one backup's sets. The backup a date
/// means is the one `restore --date` reads (`restore::choose::by_date`: unverified or unreadable backups only when
/// named exactly, an incomplete snapshot as restore would take it), among this config's (`own` sets) on a destination
/// another config shares (`restore::select::pickable`).
fn choose(
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
