//! A restore from a chosen backup, in three steps: resolve what the user asked for into [`Selection`]s (which set,
//! which name, which target directory), plan each one (nothing written), then apply the plans.
//!
//! Where a selection goes:
//! - `--target DIR`: under `DIR`, keeping the absolute structure (`/data/x` lands at `DIR/data/x`); the missing
//!   ancestors (`DIR/data`) are restored from the backup, existing ones are walked without following symlinks.
//! - the original location: the plan's target is the deepest existing directory above the path down to the set's
//!   source, as the system resolves it (so `/home -> /var/home`, or a source that is a symlink, is followed like any
//!   program would); below it, the missing ancestors come from the backup, and nothing is ever written through a
//!   symlink (a directory of the source that is now a symlink is refused). Nothing outside the selected paths is touched:
//!   existing ancestors keep their owner, mode and mtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::content::{Gathered, Lookup, Selection, SetContent};
use super::engine::safety::RelPath;
use super::select::{abs_of, locate_in_sources, name_of};
use super::{Applier, Plan, Planner, RestoreError, RestoreOptions, Summary};
use crate::archive::Keys;
use crate::exit::{CodedError, Exit};
use crate::settings::SetSettings;
use crate::snapshot::SourceRecord;
use crate::stdx::{show_path, show_str};
use crate::ui::Ui;

/// One set of the chosen backup.
#[derive(Debug, Clone)]
pub struct SetBackup {
    pub set: String,
    /// The backup it belongs to, for messages (`data-2025-04-01-031500`, `2025-04-01-031500 on T9`).
    pub label: String,
    /// The sources inside it (empty when unknown: then names are looked up as they are).
    pub sources: Vec<SourceRecord>,
    pub content: SetContent,
}

impl SetBackup {
    /// The same set, its archives decrypted with `keys` ([`SetContent::with_keys`]).
    pub fn with_keys(self, keys: Option<&Arc<Keys>>) -> SetBackup {
        SetBackup {
            content: self.content.with_keys(keys),
            ..self
        }
    }
}

/// The path on this machine with its longest existing prefix resolved (`~/data/x` -> `/data/x` when `~/data` is a
/// symlink to `/data`), when that differs from `abs`.
fn live_alias(abs: &Path) -> Option<PathBuf> {
    let mut prefix = abs.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&prefix) {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return (out != abs).then_some(out);
        }
        let name = prefix.file_name()?.to_os_string();
        rest.push(name);
        if !prefix.pop() {
            return None;
        }
    }
}

/// Finds each wanted absolute path in `sets`: under the sources (either of their names: the first set that has it),
/// else as it is (every set that has it). `Ok` gives the sets' indexes and the names inside them.
pub fn resolve(sets: &[SetBackup], wanted: &[PathBuf]) -> anyhow::Result<Vec<(usize, RelPath)>> {
    // Candidates per wanted path, in preference order.
    let mut candidates: Vec<Vec<(usize, RelPath)>> = Vec::new();
    for abs in wanted {
        let mut forms = vec![abs.clone()];
        forms.extend(live_alias(abs));
        let mut c: Vec<(usize, RelPath)> = Vec::new();
        for form in &forms {
            for (i, s) in sets.iter().enumerate() {
                if let Some((name, _)) = locate_in_sources(form, &s.sources)
                    && !c.contains(&(i, name.clone()))
                {
                    c.push((i, name));
                }
            }
        }
        if c.is_empty() {
            for form in &forms {
                for i in 0..sets.len() {
                    let name = name_of(form);
                    if !c.contains(&(i, name.clone())) {
                        c.push((i, name));
                    }
                }
            }
        }
        candidates.push(c);
    }
    // One lookup pass per set.
    let mut queries: BTreeMap<usize, Vec<RelPath>> = BTreeMap::new();
    for c in &candidates {
        for (i, n) in c {
            let q = queries.entry(*i).or_default();
            if !q.contains(n) {
                q.push(n.clone());
            }
        }
    }
    let mut answers: BTreeMap<(usize, RelPath), Lookup> = BTreeMap::new();
    for (i, names) in queries {
        let found = sets[i].content.lookup(&names)?;
        for (n, l) in names.into_iter().zip(found) {
            answers.insert((i, n), l);
        }
    }
    let mut out = Vec::new();
    for (abs, c) in wanted.iter().zip(&candidates) {
        let found: Vec<&(usize, RelPath)> = c
            .iter()
            .filter(|k| matches!(answers.get(*k), Some(Lookup::Found(_))))
            .collect();
        if let Some(first) = found.first() {
            let by_source = sets
                .iter()
                .any(|s| locate_in_sources(abs, &s.sources).is_some());
            if by_source {
                out.push((*first).clone());
            } else {
                // Not under a source (`--path /home`, or no metadata): every set that has it.
                for k in found.iter().filter(|k| k.1 == first.1) {
                    out.push((*k).clone());
                }
            }
            continue;
        }
        let mut near: Vec<PathBuf> = Vec::new();
        for k in c {
            if let Some(Lookup::Missing { near: n }) = answers.get(k) {
                for x in n {
                    let p = abs_of(x);
                    if !near.contains(&p) {
                        near.push(p);
                    }
                }
            }
        }
        near.truncate(3);
        let by_source = sets
            .iter()
            .any(|s| locate_in_sources(abs, &s.sources).is_some());
        let where_ = {
            let mut labels: Vec<&str> = c.iter().map(|(i, _)| sets[*i].label.as_str()).collect();
            labels.dedup();
            show_str(&labels.join(", "))
        };
        let head = format!("{} is not in {where_}", show_path(abs));
        let mut msg = String::new();
        if !by_source && sets.iter().any(|s| !s.sources.is_empty()) {
            let sources: Vec<String> =
                sets.iter()
                    .flat_map(|s| {
                        s.sources.iter().filter(|r| r.present).map(move |r| {
                            format!("{} ({})", show_path(&r.resolved), show_str(&s.set))
                        })
                    })
                    .collect();
            msg.push_str(&format!(
                "; it is under none of the backed-up sources: {}",
                sources.join(", ")
            ));
        }
        if near.is_empty() {
            msg.push_str("; see `dbackup restore --list`, and pick another --date or --path");
        } else {
            let near: Vec<String> = near.iter().map(|p| show_path(p)).collect();
            msg.push_str(&format!("; the nearest there: {}", near.join(", ")));
        }
        return Err(NotInBackup {
            path: abs.clone(),
            head,
            rest: msg,
        }
        .into());
    }
    Ok(out)
}

/// A wanted path that the chosen backup does not hold: `head` says so, `rest` what is near it there (the caller may
/// add which older backup holds it after both).
#[derive(Debug, thiserror::Error)]
#[error("{head}{rest}")]
pub struct NotInBackup {
    pub path: PathBuf,
    pub head: String,
    pub rest: String,
}

/// Where a name of the backup goes (see the module documentation). In place, `floor` is the set's source the name
/// is under ([`source_of`]): symlinks are followed down to it (`/home -> /var/home`, a source that is a symlink), and
/// below it the planner walks what exists without following any, so a directory of the source that is now a
/// symlink leading elsewhere is refused, never written through.
pub fn place(
    set: usize,
    name: RelPath,
    target: Option<&Path>,
    floor: Option<&RelPath>,
) -> anyhow::Result<Selection> {
    if name.is_root() {
        return Ok(Selection {
            set,
            name,
            target: target.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            strip: RelPath::root(),
            ancestors: Vec::new(),
        });
    }
    let ancestors = name.ancestors();
    match target {
        Some(dir) => {
            let missing = ancestors
                .into_iter()
                .filter(|a| {
                    use std::os::unix::ffi::OsStrExt;
                    std::fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(a.as_bytes())))
                        .is_err()
                })
                .collect();
            Ok(Selection {
                set,
                name,
                target: dir.to_path_buf(),
                strip: RelPath::root(),
                ancestors: missing,
            })
        }
        None => {
            let mut chain = vec![RelPath::root()];
            chain.extend(ancestors);
            let limit = floor
                .and_then(|f| chain.iter().position(|a| a == f))
                .unwrap_or(chain.len() - 1);
            let deepest = chain[..=limit]
                .iter()
                .rposition(|a| abs_of(a).is_dir())
                .expect("the root directory exists");
            let base = abs_of(&chain[deepest]);
            let real = std::fs::canonicalize(&base).map_err(|e| {
                anyhow::anyhow!("cannot resolve {} to restore into it: {e}", base.display())
            })?;
            // Below the source, what exists (a directory, or a symlink the planner refuses) is walked, not made.
            let missing = chain[deepest + 1..]
                .iter()
                .filter(|a| std::fs::symlink_metadata(abs_of(a)).is_err())
                .cloned()
                .collect();
            Ok(Selection {
                set,
                name,
                target: real,
                strip: chain[deepest].clone(),
                ancestors: missing,
            })
        }
    }
}

/// An in-place restore (no `--target`) writes only under the sources the config names now for each set (as
/// configured and expanded, or with their symlinks resolved): the backup's own record of its sources (a drive's
/// `backup.json`) never chooses where a restore writes. A name above some of the set's sources (`--path ~`) becomes
/// those sources; a name elsewhere, or of a set the config does not have, fails saying why (exit 2: `--target`).
pub fn in_place_names(
    configured: &[SetSettings],
    sets: &[SetBackup],
    names: Vec<(usize, RelPath)>,
) -> anyhow::Result<Vec<(usize, RelPath)>> {
    let mut out = Vec::new();
    for (i, name) in names {
        let set = &sets[i];
        let abs = abs_of(&name);
        let Some(conf) = configured.iter().find(|c| c.name == set.set) else {
            return Err(CodedError::new(
                Exit::Usage,
                format!(
                    "set {} of {} is not in the config, so it has no place to be restored to: an in-place restore \
                     writes only under the sources the config names for a set; restore it under another directory \
                     with --target DIR",
                    crate::stdx::show_str(&set.set),
                    set.label
                ),
            )
            .into());
        };
        // Each source under both its names (as configured, and as the system resolves it now).
        let roots: Vec<PathBuf> = conf
            .sources
            .iter()
            .flat_map(|src| {
                let mut r = vec![src.path.clone(), src.resolved.clone()];
                r.extend(std::fs::canonicalize(&src.path));
                r
            })
            .collect();
        if roots.iter().any(|root| abs.starts_with(root)) {
            out.push((i, name));
            continue;
        }
        let below: Vec<RelPath> = conf
            .sources
            .iter()
            .map(|src| name_of(&src.resolved))
            .filter(|n| *n != name && n.starts_with(&name))
            .collect();
        if !below.is_empty() {
            out.extend(below.into_iter().map(|n| (i, n)));
            continue;
        }
        let sources: Vec<String> = conf
            .sources
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        return Err(CodedError::new(
            Exit::Usage,
            format!(
                "{} (set {}, from {}) is not under the set's sources in the config ({}): an in-place restore writes \
                 only there, whatever the backup records as its sources; restore it under another directory with \
                 --target DIR and move what you need from there",
                crate::stdx::show(abs.as_os_str().as_encoded_bytes()),
                set.set,
                set.label,
                if sources.is_empty() {
                    "none".to_string()
                } else {
                    sources.join(", ")
                }
            ),
        )
        .into());
    }
    Ok(dedupe(out))
}

/// The configured source of set `set` that `name` is under, as a name (the deepest, under either of its names), for
/// [`place`]'s floor.
pub fn source_of(configured: &[SetSettings], set: &str, name: &RelPath) -> Option<RelPath> {
    let conf = configured.iter().find(|c| c.name == set)?;
    conf.sources
        .iter()
        .flat_map(|src| {
            let mut r = vec![src.path.clone(), src.resolved.clone()];
            r.extend(std::fs::canonicalize(&src.path));
            r
        })
        .map(|root| name_of(&root))
        .filter(|root| name.starts_with(root))
        .max_by_key(RelPath::depth)
}

/// Drops selections inside another selection of the same set (`~/.config` and `~/.config/app`: one restore).
pub fn dedupe(mut sels: Vec<(usize, RelPath)>) -> Vec<(usize, RelPath)> {
    sels.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.depth().cmp(&b.1.depth())));
    let mut out: Vec<(usize, RelPath)> = Vec::new();
    for (set, name) in sels {
        if !out.iter().any(|(s, n)| *s == set && name.starts_with(n)) {
            out.push((set, name));
        }
    }
    out
}

/// A selection with its plan.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub set: String,
    /// The backup it comes from.
    pub from: String,
    /// The path restored, as it was on the backed-up machine.
    pub path: PathBuf,
    pub plan: Plan,
    #[serde(skip)]
    pub selection: Selection,
    /// Where the plan's archive entries are (see [`Gathered`]).
    #[serde(skip)]
    pub gathered: Gathered,
}

/// Plans every selection (one read of each set's index, archive or snapshot); writes nothing.
pub fn plan_all(
    sets: &[SetBackup],
    sels: Vec<Selection>,
    opts: &RestoreOptions,
) -> anyhow::Result<Vec<Planned>> {
    let mut plans: Vec<Option<(Plan, Gathered)>> = vec![None; sels.len()];
    let mut by_set: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sels.iter().enumerate() {
        by_set.entry(s.set).or_default().push(i);
    }
    for (set, idx) in by_set {
        let these: Vec<&Selection> = idx.iter().map(|&i| &sels[i]).collect();
        let gathered = sets[set].content.gather(&these)?;
        for (&i, mut g) in idx.iter().zip(gathered) {
            let mut opts = opts.clone();
            let caps = crate::media::capabilities_at(&sels[i].target);
            (opts.modes_and_owners, opts.mtime_step_ns) =
                (caps.modes_and_owners, caps.mtime_step_ns);
            let mut planner = Planner::new(&sels[i].target, opts)?;
            for e in std::mem::take(&mut g.entries) {
                planner.add(e)?;
            }
            let mut plan = planner.finish();
            plan.scanned = g.scanned;
            plans[i] = Some((plan, g));
        }
    }
    Ok(sels
        .into_iter()
        .zip(plans)
        .map(|(selection, planned)| {
            let (plan, gathered) = planned.expect("planned");
            Planned {
                set: sets[selection.set].set.clone(),
                from: sets[selection.set].content.label(),
                path: abs_of(&selection.name),
                plan,
                selection,
                gathered,
            }
        })
        .collect())
}

/// Applies every plan in turn. Returns what each did; an error stops the restore (the summaries so far come with it).
pub fn apply_all(
    sets: &[SetBackup],
    planned: &[Planned],
    done: &mut dyn FnMut(u64),
) -> (Vec<Summary>, Option<RestoreError>) {
    let mut out = Vec::new();
    for p in planned {
        let mut applier = match Applier::new(&p.plan) {
            Ok(a) => a,
            Err(e) => return (out, Some(e)),
        };
        let result = sets[p.selection.set].content.apply(
            &p.selection,
            &p.plan,
            &p.gathered,
            &mut applier,
            done,
        );
        out.push(applier.finish());
        if let Err(e) = result {
            return (out, Some(e));
        }
    }
    (out, None)
}

/// [`apply_all`] with a progress bar (on a terminal) over the bytes the plans write.
pub fn apply_with_progress(
    sets: &[SetBackup],
    planned: &[Planned],
    ui: &Ui,
) -> (Vec<Summary>, Option<RestoreError>) {
    let total: u64 = planned
        .iter()
        .map(|p| {
            p.plan
                .counts
                .create
                .bytes
                .saturating_add(p.plan.counts.replace.bytes)
        })
        .fold(0u64, u64::saturating_add);
    let bar = ui.percent_bar("restore");
    let mut written = 0u64;
    let mut done = |n: u64| {
        written += n;
        if let Some(b) = &bar
            && total > 0
        {
            b.set_position(written.saturating_mul(100) / total);
        }
    };
    let applied = apply_all(sets, planned, &mut done);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RelPath {
        RelPath::of(s)
    }

    #[test]
    fn a_target_keeps_the_structure_and_restores_missing_parents() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::create_dir_all(target.join("data")).unwrap();
        let s = place(0, n("data/projects/important"), Some(&target), None).unwrap();
        assert_eq!(s.target, target);
        assert!(s.strip.is_root());
        assert_eq!(
            s.ancestors,
            [n("data/projects")],
            "data exists, data/projects does not"
        );
        assert_eq!(
            s.rename(&n("data/projects/important/a")),
            b"data/projects/important/a"
        );
        // A symlink in the target is there: not an ancestor to make, so the planner walks it (and refuses it).
        std::os::unix::fs::symlink("/etc", target.join("data/projects")).unwrap();
        let s = place(0, n("data/projects/important"), Some(&target), None).unwrap();
        assert!(s.ancestors.is_empty());
    }

    #[test]
    fn the_original_location_is_planned_from_the_deepest_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(real.join("home/u")).unwrap();
        // `alias` is a symlink to `home`, as /home -> /var/home would be: the system's own path is followed.
        std::os::unix::fs::symlink(real.join("home"), real.join("alias")).unwrap();
        let name = name_of(&real.join("alias/u/.config/app"));
        let s = place(3, name.clone(), None, None).unwrap();
        assert_eq!(s.set, 3);
        assert_eq!(s.target, real.join("home/u"));
        assert_eq!(s.strip, name_of(&real.join("alias/u")));
        assert_eq!(s.ancestors, [name_of(&real.join("alias/u/.config"))]);
        assert_eq!(s.rename(&name), b".config/app");
        assert_eq!(
            s.rename(&name_of(&real.join("alias/u/.config"))),
            b".config"
        );
        let s = place(0, RelPath::root(), None, None).unwrap();
        assert_eq!((s.target, s.strip), (PathBuf::from("/"), RelPath::root()));
    }

    #[test]
    fn nested_selections_are_restored_once() {
        let got = dedupe(vec![
            (0, n("h/u/.config/app")),
            (1, n("h/u/.config/app")),
            (0, n("h/u/.config")),
            (0, n("h/u/.configx")),
        ]);
        assert_eq!(
            got,
            [
                (0, n("h/u/.config")),
                (0, n("h/u/.configx")),
                (1, n("h/u/.config/app"))
            ]
        );
    }
}
