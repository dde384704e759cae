//! `dbackup ls`: what one backup holds under a path (a local snapshot, or a drive backup through its index), one
//! level or all below; a table or JSON ([`browse::LsOutput`]).
//!
//! Exit: 0 listed; 1 the path is in none of the chosen backup's sets, or no backup matches; 2 bad arguments;
//! 5 `--source drive` with no drive present.

use crate::browse::{self, Content, LsBackup, LsOutput, Scope, Shown};
use crate::cli::{GlobalArgs, LsArgs};
use crate::exit::{Exit, failed, usage};
use crate::expand::Env;
use crate::external::retention::OwnSet;
use crate::restore::keys::KeyRing;
use crate::restore::select::Kept;
use crate::restore::select::{self, DateQuery};
use crate::stdx::show;
use crate::ui::Ui;

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
        cloud: args
            .source
            .as_ref()
            .filter(|_| cloud)
            .map(|s| s.cloud.clone()),
    };
    let (all, bucket, passed_over) =
        browse::choose::looked_through(&settings, &ui, &scope, Some(query))?;
    for line in passed_over {
        ui.warn(line);
    }
    let own = OwnSet::of(&settings.sets);
    let mut chosen =
        browse::choose::for_ls(&all, (query, &own), external || cloud, args.set.as_deref())?;
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
