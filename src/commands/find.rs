//! `dbackup find PATTERN`: which backups hold paths matching a pattern ([`crate::browse::pattern`]), and in which
//! versions (size, mtime), grouped by path, newest first; a drive backup is searched through its index alone.
//!
//! Exit: 0 something matched; 1 nothing matched (like grep), or a backup could not be searched; 2 bad arguments;
//! 5 `--source drive` with no drive present.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::browse::{self, Pattern, Scope, Shown};
use crate::cli::{FindArgs, GlobalArgs};
use crate::exit::{CodedError, Exit};
use crate::restore::catalog::{self, Drive};
use crate::restore::keys::KeyRing;
use crate::restore::list::Kept;
use crate::settings::{Env, Settings};
use crate::stdx::show;
use crate::ui::Ui;

/// What `find --json` prints.
#[derive(Debug, Serialize)]
pub struct FindOutput {
    pub pattern: String,
    /// Backups (one set of one backup each) searched.
    pub searched: usize,
    /// Those that could not be searched, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_searched: Vec<String>,
    /// Sorted by path.
    pub matches: Vec<Found>,
}

/// A matching path and every backup holding it, newest first.
#[derive(Debug, Serialize)]
pub struct Found {
    /// Absolute, escaped.
    pub path: String,
    pub versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
pub struct Version {
    pub source: Kept,
    pub stamp: String,
    pub set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// A drive backup: `full`, or `incremental` on `base` (`kind` is the entry's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_kind: Option<crate::archive::ArchiveKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(flatten)]
    pub entry: Shown,
}

pub fn run(global: &GlobalArgs, args: FindArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = Settings::load(global.config.as_deref(), super::output(global), &env)?;
    let ui = Ui::new(&settings.output);
    let source = args.source.as_ref().map(|s| s.kept);
    if args.drive.is_some() && matches!(source, Some(Kept::Local | Kept::Cloud)) {
        return Err(CodedError::new(
            Exit::Usage,
            "--drive names a drive: use it with --source drive",
        )
        .into());
    }
    let cloud = source == Some(Kept::Cloud);
    let scope = Scope {
        local: source.is_none_or(|s| s == Kept::Local) && args.drive.is_none(),
        external: source.is_none_or(|s| s == Kept::External),
        set: args.set.clone(),
        drive: args.drive.clone(),
    };
    let pattern = Pattern::new(args.pattern.as_bytes());
    let mut bucket = None;
    let mut all = if cloud {
        let name = args.source.as_ref().and_then(|s| s.cloud.as_deref());
        let mut c = browse::cloud::catalog(&settings, name, args.set.as_deref(), None)?;
        ui.info(format_args!(
            "{} ({}): reading {} of {} (no archive)",
            c.destination,
            c.place,
            crate::stdx::bytes(c.index_bytes),
            crate::stdx::counted(c.backups.len() as u64, "index", "indexes"),
        ));
        let all = std::mem::take(&mut c.backups);
        bucket = Some(c);
        all
    } else {
        let (all, drives) = browse::catalog(&settings, &scope)?;
        let only_drive = scope.external && !scope.local;
        if only_drive && !drives.iter().any(Drive::present) {
            return Err(
                CodedError::new(Exit::NoDestination, catalog::no_drive_message(&drives)).into(),
            );
        }
        all
    };
    let mut out = FindOutput {
        pattern: show(args.pattern.as_bytes()),
        searched: 0,
        not_searched: Vec::new(),
        matches: Vec::new(),
    };
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
                    b.content = browse::Content::Unreadable(format!(
                        "it is encrypted ({e}); give the identity with --identity FILE"
                    ));
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
            Err(e) => {
                ui.warn(&e);
                out.not_searched.push(e.to_string());
            }
        }
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
    if let Some(c) = &bucket {
        ui.info(format_args!(
            "{}: {}",
            c.destination,
            crate::stdx::counted(c.requests(), "request", "requests")
        ));
    }
    super::print(&out, ui.json, render)?;
    Ok(if !out.not_searched.is_empty() || out.matches.is_empty() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn render(o: &FindOutput) -> String {
    let mut s = String::new();
    if o.matches.is_empty() {
        let _ = writeln!(
            s,
            "no path matches {} in {}",
            o.pattern,
            crate::stdx::counted(o.searched as u64, "backup", "backups")
        );
        return s;
    }
    for f in &o.matches {
        let _ = writeln!(s, "{}", f.path);
        let rows: Vec<[String; 6]> = f
            .versions
            .iter()
            .map(|v| {
                let size = match v.entry.kind {
                    crate::restore::EntryKind::File | crate::restore::EntryKind::Hardlink => {
                        crate::stdx::bytes(v.entry.size)
                    }
                    _ => "-".into(),
                };
                let when = chrono::DateTime::parse_from_rfc3339(&v.entry.mtime)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|_| v.entry.mtime.clone());
                [
                    v.stamp.clone(),
                    v.destination.clone().unwrap_or_else(|| "local".into()),
                    format!("set {}", show(v.set.as_bytes())),
                    v.backup_kind.map_or("snapshot", |k| k.name()).to_string(),
                    format!("{} {}", v.entry.kind.word(), v.entry.mode),
                    format!("{size}  {when}"),
                ]
            })
            .collect();
        let mut w = [0usize; 5];
        for r in &rows {
            for (i, c) in r.iter().take(5).enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        for r in &rows {
            let _ = writeln!(
                s,
                "  {:<a$}  {:<b$}  {:<c$}  {:<d$}  {:<e$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3],
                e = w[4]
            );
        }
    }
    s
}
