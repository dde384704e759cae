//! What a restore planned or did, for people and for `--json`: the plans of a dry run, each path's summary, the
//! run log's record, and the lines that close a run (files kept, a restore that stopped, entries not restored).
//! Pure: `commands/restore.rs` prints what these return.

use std::path::Path;

use serde::Serialize;

use super::engine::apply::shortfalls;
use super::engine::displace::Displaced;
use super::job::Planned;
use super::select::Kept;
use super::{Action, Counts, Plan, PlanItem, Summary};
use crate::stdx::{show_path, show_str};

/// What `restore` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct RestoreOutput<'a> {
    pub source: Kept,
    /// The backup's stamp (what `--date` takes).
    pub backup: String,
    /// The stamp's local time, RFC 3339 with its offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<chrono::DateTime<chrono::FixedOffset>>,
    pub dry_run: bool,
    pub restores: Vec<RestoreItem<'a>>,
    /// A dry run's warnings of what the restore will give back incompletely ([`plan_warnings`]), as stderr says them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One restored path.
#[derive(Debug, Serialize)]
pub struct RestoreItem<'a> {
    pub set: &'a str,
    pub from: &'a str,
    pub path: &'a Path,
    pub target: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'a Summary>,
}

impl<'a> RestoreOutput<'a> {
    /// A dry run (`summaries` is `None`: each path with its plan) or a restore (each path with its summary; the
    /// paths never reached have none).
    pub fn new(
        source: Kept,
        backup: String,
        planned: &'a [Planned],
        summaries: Option<&'a [Summary]>,
    ) -> RestoreOutput<'a> {
        let dry_run = summaries.is_none();
        let summaries = summaries.unwrap_or_default();
        RestoreOutput {
            source,
            time: crate::snapshot::parse_stamp(&backup).map(crate::json::localize),
            backup,
            dry_run,
            warnings: match dry_run {
                true => plan_warnings(planned),
                false => Vec::new(),
            },
            restores: planned
                .iter()
                .zip(summaries.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(p, s)| RestoreItem {
                    set: &p.set,
                    from: &p.from,
                    path: &p.path,
                    target: &p.plan.target,
                    plan: dry_run.then_some(&p.plan),
                    summary: s,
                })
                .collect(),
        }
    }
}

/// One restored path as the run log records it.
#[derive(Debug, Serialize)]
struct Logged<'a> {
    set: &'a str,
    from: &'a str,
    path: &'a Path,
    target: &'a Path,
    counts: &'a Counts,
    refused: usize,
    failed: usize,
    displaced: &'a [Displaced],
}

/// What the run log records of a restore: each path restored, its counts and the files kept.
pub fn logged(planned: &[Planned], summaries: &[Summary]) -> Option<serde_json::Value> {
    let log: Vec<Logged> = planned
        .iter()
        .zip(summaries)
        .map(|(p, s)| Logged {
            set: &p.set,
            from: &p.from,
            path: &p.path,
            target: &p.plan.target,
            counts: &s.counts,
            refused: s.refusals.len(),
            failed: s.errors.len(),
            displaced: &s.displaced,
        })
        .collect();
    serde_json::to_value(&log).ok()
}

/// How the engine reports an entry the restore never reached.
const NOT_HANDED_OVER: &str = "not restored: the backup ended before";

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn heading(p: &Planned) -> String {
    format!(
        "{} ({}, from {}):\n",
        show_path(&p.path),
        show_str(&p.set),
        show_str(&p.from)
    )
}

/// The plans of a dry run, each path under its heading (`verbose`: every entry), and the refusals counted.
pub fn render_plans(planned: &[Planned], verbose: bool) -> String {
    let mut out = String::from("dry run: nothing is written\n");
    for p in planned {
        out.push_str(&heading(p));
        out.push_str(&indent(&p.plan.render(verbose)));
    }
    let refused: u64 = planned.iter().map(|p| p.plan.counts.refuse.entries).sum();
    if refused > 0 {
        out.push_str(&format!(
            "{} refused: a real run restores nothing (unless --skip-refused)\n",
            crate::stdx::counted(refused, "entry is", "entries are")
        ));
    }
    out
}

/// What each path's restore did; when the restore `stopped`, the entries it never reached are counted, not listed
/// one by one.
pub fn render_restored(planned: &[Planned], summaries: &[Summary], stopped: bool) -> String {
    let mut out = String::new();
    for (p, s) in planned.iter().zip(summaries) {
        out.push_str(&heading(p));
        if !stopped {
            out.push_str(&indent(&s.render()));
            continue;
        }
        let mut s = s.clone();
        let before = s.errors.len();
        s.errors.retain(|e| !e.message.starts_with(NOT_HANDED_OVER));
        out.push_str(&indent(&s.render()));
        let skipped = before - s.errors.len();
        if skipped > 0 {
            out.push_str(&format!(
                "  {} not restored: the restore stopped (see the error)\n",
                crate::stdx::counted(skipped as u64, "entry", "entries")
            ));
        }
    }
    out
}

/// Before a real restore: the symlinks it makes that lead outside the target, as one line to say and one line
/// each (`path -> where it leads`); `None` when there are none.
pub fn escaping_links(planned: &[Planned]) -> Option<(String, Vec<String>)> {
    let made = |i: &&PlanItem| matches!(i.action, Action::Create | Action::Replace);
    let n = planned
        .iter()
        .flat_map(|p| p.plan.escaping().filter(made))
        .count();
    if n == 0 {
        return None;
    }
    let head = format!(
        "{} outside the target once restored: restored as {}, never followed (the plan lists them: \
         --dry-run; --no-escaping-links refuses them)",
        crate::stdx::counted(n as u64, "symlink leads", "symlinks lead"),
        if n == 1 { "it is" } else { "they are" }
    );
    let each = planned
        .iter()
        .flat_map(|p| {
            p.plan.escaping().filter(made).map(|item| {
                format!(
                    "  {} -> {}",
                    p.plan.item_path(item),
                    item.escapes_to.as_deref().unwrap_or_default()
                )
            })
        })
        .collect();
    Some((head, each))
}

/// The files kept in `dir` before they were replaced, as one line saying where they are `listed`; `None` when none
/// was.
pub fn kept_line(summaries: &[Summary], dir: &Path, listed: &str) -> Option<String> {
    let kept: usize = summaries.iter().map(|s| s.displaced.len()).sum();
    (kept > 0).then(|| {
        format!(
            "kept in {}: {} that differed from the backup before the restore replaced {} ({listed}; copy back \
             with cp -a)",
            dir.display(),
            crate::stdx::counted(kept as u64, "file", "files"),
            if kept == 1 { "it" } else { "them" },
        )
    })
}

/// A restore's warnings (what was restored incompletely): one per kind of shortfall and target, the paths restored
/// into the same target counted together.
pub fn warnings(summaries: &[Summary]) -> Vec<String> {
    let tallies = summaries
        .iter()
        .map(|s| (s.target.as_path(), (s.attrs.clone(), s.owners.clone())));
    by_target(tallies, |(attrs, owners), (a, o)| {
        attrs.add(&a);
        owners.add(&o);
    })
    .iter()
    .flat_map(|(t, (attrs, owners))| shortfalls(attrs, owners, &show_path(t)))
    .collect()
}

/// A dry run's warnings, before the restore: the entries a restore without privileges will not give their owners,
/// one warning per target (the count [`warnings`] then gives).
pub fn plan_warnings(planned: &[Planned]) -> Vec<String> {
    let tallies = planned
        .iter()
        .map(|p| (p.plan.target.as_path(), p.plan.owners_not_kept()));
    by_target(tallies, |owners, o| owners.add(&o))
        .iter()
        .filter_map(|(t, owners)| owners.forecast(&show_path(t)))
        .collect()
}

/// The tallies of the paths restored into the same target added together, in the order the targets come.
fn by_target<'a, T>(
    tallies: impl Iterator<Item = (&'a Path, T)>,
    add: impl Fn(&mut T, T),
) -> Vec<(&'a Path, T)> {
    let mut out: Vec<(&Path, T)> = Vec::new();
    for (target, tally) in tallies {
        match out.iter_mut().find(|(t, _)| *t == target) {
            Some((_, sum)) => add(sum, tally),
            None => out.push((target, tally)),
        }
    }
    out
}

/// What a restore that stopped on an error had done, for the error's context.
pub fn stopped_context(summaries: &[Summary]) -> String {
    let restored: u64 = summaries
        .iter()
        .map(|s| s.counts.create.entries + s.counts.replace.entries)
        .sum();
    if restored == 0 {
        "the restore stopped before anything was restored".to_string()
    } else {
        format!(
            "the restore stopped after restoring {} (listed above); those are complete and were checked as \
             they were read, the entry being written was removed, and the rest was not restored",
            crate::stdx::counted(restored, "entry", "entries")
        )
    }
}

/// The last line of a restore that refused or failed entries: how many, and from which backups.
pub fn not_restored_line(planned: &[Planned], summaries: &[Summary]) -> String {
    let problems: usize = summaries
        .iter()
        .map(|s| s.refusals.len() + s.errors.len())
        .sum();
    let mut from: Vec<String> = planned
        .iter()
        .zip(summaries)
        .filter(|(_, s)| !s.errors.is_empty() || !s.refusals.is_empty())
        .map(|(p, _)| show_str(&p.from))
        .collect();
    from.dedup();
    // An entry that failed (its content damaged or cut short) may be whole elsewhere: say where to look.
    let failed = summaries.iter().any(|s| !s.errors.is_empty());
    format!(
        "dbackup: error: {} not restored (listed above), from {}{}",
        crate::stdx::counted(problems as u64, "entry was", "entries were"),
        from.join(", "),
        if failed { ELSEWHERE } else { "" }
    )
}

/// Where else a file a backup cannot give back whole may be, and how to get it from there.
pub const ELSEWHERE: &str = "; `dbackup find PATH` lists every backup holding each (with the same --drive or \
    --source): restore it from one with --date STAMP, or from another copy of this backup (a second drive, the bucket)";
