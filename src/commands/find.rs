//! `dbackup find PATTERN`: which backups hold paths matching a pattern ([`crate::browse::pattern`]), and in which
//! versions (size, mtime), grouped by path, newest first; a drive backup is searched through its index alone.
//!
//! Exit: 0 something matched; 1 nothing matched (like grep), or a backup could not be searched; 2 bad arguments;
//! 5 `--source drive` with no drive present.

use std::collections::BTreeMap;

use crate::browse::{self, FindOutput, Found, Pattern, Scope, Shown, Version};
use crate::cli::{FindArgs, GlobalArgs};
use crate::exit::Exit;
use crate::restore::keys::KeyRing;
use crate::restore::select::Kept;
use crate::stdx::show;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: FindArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    super::reading("find");
    let ui = Ui::new(&settings.output);
    let source = args.source.as_ref().map(|s| s.kept);
    super::drive_needs_drive_source(args.drive.is_some(), source)?;
    let scope = Scope {
        local: source.is_none_or(|s| s == Kept::Local) && args.drive.is_none(),
        external: source.is_none_or(|s| s == Kept::External),
        set: args.set.clone(),
        drive: args.drive.clone(),
        cloud: (args.source.as_ref())
            .filter(|s| s.kept == Kept::Cloud)
            .map(|s| s.cloud.clone()),
    };
    let pattern = Pattern::new(args.pattern.as_bytes());
    let (mut all, bucket, passed_over) =
        browse::choose::looked_through(&settings, &ui, &scope, None)?;
    let mut out = FindOutput {
        pattern: show(args.pattern.as_bytes()),
        searched: 0,
        not_searched: Vec::new(),
        matches: Vec::new(),
    };
    out.not_searched
        .extend(bucket.iter().flat_map(|c| &c.skipped).cloned());
    out.not_searched.extend(passed_over);
    let ring = KeyRing::new(&settings, &args.identities);
    match browse::unlock(&mut all, &ring) {
        Ok(warnings) => {
            for w in warnings {
                ui.warn(w);
            }
        }
        Err(e) => {
            // Without the keys the encrypted ones are passed over, and said so.
            for b in all.iter_mut() {
                if let browse::Content::Index(f) = &b.content
                    && f.encrypted()
                {
                    b.content = browse::Content::Unreadable(format!("it is encrypted: {e}"));
                }
            }
        }
    }
    // Newest first, so that each path's versions come out in order.
    all.reverse();
    let mut by_path: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    for b in &all {
        let found = browse::find(b, &pattern, |e| {
            by_path.entry(e.name.clone()).or_default().push(Version {
                source: b.kept,
                stamp: b.stamp.clone(),
                set: b.set.clone(),
                destination: b.destination.clone(),
                backup_kind: b.backup_kind,
                base: b.base.clone(),
                entry: Shown::of(&e),
            });
        });
        match found {
            Ok(()) => out.searched += 1,
            Err(e) => out.not_searched.push(e.to_string()),
        }
    }
    // A few named, not all: a junk drive may hold any number of backups that cannot be searched.
    for why in out.not_searched.iter().take(crate::stdx::NAMED) {
        ui.warn(why);
    }
    let more = out.not_searched.len().saturating_sub(crate::stdx::NAMED);
    if more > 0 {
        ui.warn(format_args!(
            "{} not searched (`--json` names each, with why)",
            crate::stdx::counted(more as u64, "more backup was", "more backups were")
        ));
    }
    out.matches = by_path
        .into_iter()
        .map(|(name, versions)| {
            let mut abs = b"/".to_vec();
            abs.extend_from_slice(&name);
            Found {
                path: show(&abs),
                versions,
            }
        })
        .collect();
    super::say_requests(&ui, bucket.as_ref());
    super::print(&out, ui.json, browse::render_find)?;
    Ok(if !out.not_searched.is_empty() || out.matches.is_empty() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
