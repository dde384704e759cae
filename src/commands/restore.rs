//! `dbackup restore` (also `backup-restore`): list backups, restore files or directories, or verify a backup, from
//! local snapshots or from the drive.
//!
//! stdout: the listing, the plan (`--dry-run`), what was restored, or the verification report; with `--json`, the
//! same as data ([`list::Listing`], [`RestoreOutput`], [`verify::VerifyReport`]). stderr: warnings, progress, errors.
//!
//! Encrypted (age) drive backups: the keys come from `--identity FILE` and the config's `identity_file`s (or a
//! passphrase), read only once an encrypted archive is about to be opened ([`KeyRing`]); every encrypted archive and
//! index of the chosen backup is opened and its final chunk authenticated before anything is written, so a wrong
//! or missing key, a truncated archive or bytes added to it stop the restore with nothing written. A chunk that does
//! not authenticate in the middle fails only the entries it holds (nothing partial is left), and the rest is
//! restored. `--verify` without a key hashes the encrypted files only and says the contents were not checked.
//!
//! Exit: 0 done (or intact); 1 anything refused, failed, not found or damaged (nothing is restored when anything is
//! refused, unless `--skip-refused`); 2 bad arguments; 3 `--verify` of an encrypted backup without its key (the
//! encrypted files are intact, the contents were not checked); 5 `--source external` with no drive present.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::exit::{CodedError, Exit};
use crate::restore::catalog;
use crate::restore::choose::{self, Chosen, Prepared};
use crate::restore::job::{self, Planned};
use crate::restore::keys::{Ask, KeyRing};
use crate::restore::list::{self, Kept};
use crate::restore::select::{self, DateQuery};
use crate::restore::verify;
use crate::restore::{Overwrite, Request, Summary};
use crate::settings::{Env, Settings};
use crate::stdx::{show_path, show_str};
use crate::ui::{self, Ui};

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = Settings::load(global, &env)?;
    run_with_settings(&settings, &env, &args)
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Usage, msg).into()
}

fn failed(msg: impl Into<String>) -> anyhow::Error {
    CodedError::new(Exit::Failed, msg).into()
}

/// Everything after loading the settings.
pub fn run_with_settings(
    settings: &Settings,
    env: &Env,
    args: &RestoreArgs,
) -> anyhow::Result<Exit> {
    let ui = Ui::new(&settings.output);
    let req = request(env, args)?;
    if args.list {
        return list(settings, &req, &ui);
    }
    let backup = choose::choose(settings, &req, &ui)?;
    let ring = KeyRing::new(settings, &req.identities);
    if args.verify {
        return verify(settings, &req, &backup, &ring, &ui);
    }
    if settings.output.dry_run {
        return restore(settings, &req, &backup, &ring, &ui, &mut None);
    }
    // A restore that writes is logged: what was restored from where, and every file kept in displaced/.
    let started = chrono::Local::now().fixed_offset();
    let mut logged = None;
    let outcome = restore(settings, &req, &backup, &ring, &ui, &mut logged);
    super::log_run(
        settings,
        &ui,
        "restore",
        started,
        match &outcome {
            Ok(exit) => Ok((*exit, logged.unwrap_or_default())),
            Err(e) => Err(e),
        },
    );
    outcome
}

/// The command line checked (what goes together) and converted once into the restore's [`Request`].
fn request(env: &Env, args: &RestoreArgs) -> anyhow::Result<Request> {
    let date: DateQuery = match &args.date {
        Some(d) => d.parse().map_err(usage)?,
        None => DateQuery::Newest,
    };
    if args.list {
        let mut extra = Vec::new();
        if !args.paths.is_empty() {
            extra.push("--path");
        }
        if args.target.is_some() {
            extra.push("--target");
        }
        if args.verify {
            extra.push("--verify");
        }
        if args.all {
            extra.push("--all");
        }
        if !extra.is_empty() {
            return Err(usage(format!(
                "--list shows backups and takes no {}; list first, then restore or verify with --date",
                extra.join(" or ")
            )));
        }
    } else {
        check_combinations(args)?;
    }
    let paths: Vec<PathBuf> = if args.list {
        Vec::new()
    } else {
        args.paths
            .iter()
            .map(|p| select::absolute_path(p, &env.home, &env.cwd))
            .collect::<Result<_, _>>()
            .map_err(usage)?
    };
    Ok(Request {
        source: args.source,
        date,
        set: args.set.clone(),
        drive: args.drive.clone(),
        paths,
        target: args
            .target
            .as_ref()
            .map(|t| crate::expand::normalize(&env.cwd.join(t))),
        identities: args.identities.clone(),
        overwrite: args.overwrite,
        compare: args.compare,
        preserve_special: args.preserve_special,
        skip_refused: args.skip_refused,
        refuse_escaping_links: args.no_escaping_links,
        keep: !args.no_keep,
    })
}

/// The options of a restore or `--verify` that do not go together.
fn check_combinations(args: &RestoreArgs) -> anyhow::Result<()> {
    if args.verify && args.target.is_some() {
        return Err(usage("--verify writes nothing, so it takes no --target"));
    }
    if args.drive.is_some() && args.source == Some(Kept::Local) {
        return Err(usage(
            "--drive names a drive: use it with --source external",
        ));
    }
    if args.all && (!args.paths.is_empty() || args.set.is_some()) {
        return Err(usage(
            "--all restores every set of the backup: it takes no --path or --set (give those alone)",
        ));
    }
    if args.no_keep && args.overwrite != Overwrite::Always {
        return Err(usage(
            "--no-keep replaces files without keeping what was there, so it goes only with --overwrite always; \
             without it, a file that differs from the backup is kept in <backup_root>/displaced/ before it is \
             replaced",
        ));
    }
    if !args.verify
        && !args.all
        && args.paths.is_empty()
        && args.set.is_none()
        && args.target.is_none()
    {
        return Err(usage(
            "say what to restore: --path PATH (repeatable) for files or directories, --set NAME for one set's \
             sources, or --all for every set, back where they were; or --target DIR to restore everything \
             under DIR; `dbackup restore --list` shows the backups",
        ));
    }
    Ok(())
}

/// `--list`.
fn list(settings: &Settings, req: &Request, ui: &Ui) -> anyhow::Result<Exit> {
    let (listing, no_drive) = list::gather(settings, req)?;
    if ui.json {
        crate::outln!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        crate::out!("{}", listing.render());
    }
    if let Some(message) = no_drive {
        ui.warn(message);
        return Ok(Exit::NoDestination);
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------------------------------------------
// Restore

/// What `restore` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct RestoreOutput<'a> {
    pub source: Kept,
    pub backup: String,
    pub dry_run: bool,
    pub restores: Vec<RestoreItem<'a>>,
}

/// One restored path.
#[derive(Debug, Serialize)]
pub struct RestoreItem<'a> {
    pub set: &'a str,
    pub from: &'a str,
    pub path: &'a Path,
    pub target: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a crate::restore::Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'a Summary>,
}

/// One restored path as the run log records it.
#[derive(Debug, Serialize)]
struct Logged<'a> {
    set: &'a str,
    from: &'a str,
    path: &'a Path,
    target: &'a Path,
    counts: &'a crate::restore::Counts,
    refused: usize,
    failed: usize,
    displaced: &'a [crate::restore::engine::displace::Displaced],
}

fn restore(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    ring: &KeyRing,
    ui: &Ui,
    logged: &mut Option<serde_json::Value>,
) -> anyhow::Result<Exit> {
    let Prepared {
        opts,
        sets,
        planned,
    } = choose::prepare(settings, req, chosen, ring, ui)?;
    let refused: u64 = planned.iter().map(|p| p.plan.counts.refuse.entries).sum();

    if settings.output.dry_run {
        print_plans(chosen, &planned, ui)?;
        return Ok(if refused > 0 { Exit::Failed } else { Exit::Ok });
    }
    if refused > 0 && !req.skip_refused {
        for p in &planned {
            for item in p.plan.refusals() {
                ui.error(format_args!(
                    "refused    {}: {}",
                    p.plan.item_path(item),
                    item.reason.as_deref().unwrap_or("refused")
                ));
            }
        }
        return Err(failed(format!(
            "{} of the backup refused (listed above), so nothing was restored; the backup may be hostile or \
             damaged: check it with --verify, see the whole plan with --dry-run, or restore everything else with \
             --skip-refused",
            ui::counted(refused, "entry", "entries")
        )));
    }

    report_escaping_links(&planned, ui);
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
    // From here on SIGINT and SIGTERM stop the restore between entries, with a run log line.
    super::begin_run(settings, ui, "restore");
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
    let (summaries, error) = job::apply_all(&sets, &planned, &mut done);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let log: Vec<Logged> = planned
        .iter()
        .zip(&summaries)
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
    *logged = serde_json::to_value(&log).ok();
    // Interrupted: the run's line (with what was restored and kept) is written by `run_with_settings`, marked
    // `interrupted`; `main` says so in one line.
    crate::interrupt::check()?;
    if ui.json {
        let out = RestoreOutput {
            source: chosen.kept(),
            backup: chosen.stamp(),
            dry_run: false,
            restores: planned
                .iter()
                .zip(summaries.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(p, s)| RestoreItem {
                    set: &p.set,
                    from: &p.from,
                    path: &p.path,
                    target: &p.plan.target,
                    plan: None,
                    summary: s,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (p, s) in planned.iter().zip(&summaries) {
            crate::outln!(
                "{} ({}, from {}):",
                show_path(&p.path),
                show_str(&p.set),
                show_str(&p.from)
            );
            if error.is_some() {
                // Entries never reached because the restore stopped are counted, not listed one by one.
                let mut s = s.clone();
                let before = s.errors.len();
                s.errors.retain(|e| !e.message.starts_with(NOT_HANDED_OVER));
                crate::out!("{}", indent(&s.render()));
                let skipped = before - s.errors.len();
                if skipped > 0 {
                    crate::outln!(
                        "  {} not restored: the restore stopped (see the error)",
                        ui::counted(skipped as u64, "entry", "entries")
                    );
                }
            } else {
                crate::out!("{}", indent(&s.render()));
            }
        }
    }
    let kept: usize = summaries.iter().map(|s| s.displaced.len()).sum();
    if kept > 0
        && let Some(dir) = &opts.keep_displaced
    {
        ui.info(format_args!(
            "kept in {}: {} that differed from the backup before the restore replaced {} (listed above; copy \
             back with cp -a)",
            dir.display(),
            ui::counted(kept as u64, "file", "files"),
            if kept == 1 { "it" } else { "them" },
        ));
    }
    if let Some(e) = error {
        let restored: u64 = summaries
            .iter()
            .map(|s| s.counts.create.entries + s.counts.replace.entries)
            .sum();
        let what = if restored == 0 {
            "the restore stopped before anything was restored".to_string()
        } else {
            format!(
                "the restore stopped after restoring {} (listed above); those are complete and were checked as \
                 they were read, the entry being written was removed, and the rest was not restored",
                ui::counted(restored, "entry", "entries")
            )
        };
        return Err(anyhow::Error::new(e).context(what));
    }
    for s in &summaries {
        for w in s.warnings() {
            ui.warn(w);
        }
    }
    let exit = summaries
        .iter()
        .map(Summary::exit)
        .fold(Exit::Ok, Exit::worst);
    if exit == Exit::Failed {
        let problems: usize = summaries
            .iter()
            .map(|s| s.refusals.len() + s.errors.len())
            .sum();
        let mut from: Vec<String> = planned
            .iter()
            .zip(&summaries)
            .filter(|(_, s)| !s.errors.is_empty() || !s.refusals.is_empty())
            .map(|(p, _)| show_str(&p.from))
            .collect();
        from.dedup();
        ui.error(format_args!(
            "dbackup: error: {} not restored (listed above), from {}",
            ui::counted(problems as u64, "entry was", "entries were"),
            from.join(", ")
        ));
    }
    Ok(exit)
}

/// How the engine reports an entry the restore never reached.
const NOT_HANDED_OVER: &str = "not restored: the backup ended before";

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Before a real restore: the symlinks it makes that lead outside the target (one line; each of them with `-v`).
fn report_escaping_links(planned: &[Planned], ui: &Ui) {
    let made = |i: &&crate::restore::PlanItem| {
        matches!(
            i.action,
            crate::restore::Action::Create | crate::restore::Action::Replace
        )
    };
    let n = planned
        .iter()
        .flat_map(|p| p.plan.escaping().filter(made))
        .count();
    if n == 0 {
        return;
    }
    ui.info(format_args!(
        "{} outside the target once restored: restored as {}, never followed (the plan lists them: \
         --dry-run; --no-escaping-links refuses them)",
        ui::counted(n as u64, "symlink leads", "symlinks lead"),
        if n == 1 { "it is" } else { "they are" }
    ));
    for p in planned {
        for item in p.plan.escaping().filter(made) {
            ui.step(format_args!(
                "  {} -> {}",
                p.plan.item_path(item),
                item.escapes_to.as_deref().unwrap_or_default()
            ));
        }
    }
}

fn print_plans(chosen: &Chosen, planned: &[Planned], ui: &Ui) -> anyhow::Result<()> {
    if ui.json {
        let out = RestoreOutput {
            source: chosen.kept(),
            backup: chosen.stamp(),
            dry_run: true,
            restores: planned
                .iter()
                .map(|p| RestoreItem {
                    set: &p.set,
                    from: &p.from,
                    path: &p.path,
                    target: &p.plan.target,
                    plan: Some(&p.plan),
                    summary: None,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    crate::outln!("dry run: nothing is written");
    for p in planned {
        crate::outln!(
            "{} ({}, from {}):",
            show_path(&p.path),
            show_str(&p.set),
            show_str(&p.from)
        );
        crate::out!("{}", indent(&p.plan.render(ui.verbosity >= 1)));
    }
    let refused: u64 = planned.iter().map(|p| p.plan.counts.refuse.entries).sum();
    if refused > 0 {
        crate::outln!(
            "{} refused: a real run restores nothing (unless --skip-refused)",
            ui::counted(refused, "entry is", "entries are")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// --verify

fn verify(
    settings: &Settings,
    req: &Request,
    chosen: &Chosen,
    ring: &KeyRing,
    ui: &Ui,
) -> anyhow::Result<Exit> {
    let keys = choose::keys_for_backup(chosen, ring, Ask::IfAvailable, ui)?;
    let scope = choose::scope(settings, req, chosen, keys.as_ref(), ui)?;
    let list_all = ui.verbosity >= 1;
    let bar = ui.percent_bar("verify");
    // The bytes to read: the drive backup's (content, or its archives when not recorded), the snapshots' totals.
    let total: u64 = match chosen {
        Chosen::External { backup, .. } => backup
            .sets
            .iter()
            .map(|s| s.file_bytes.unwrap_or(s.archive_bytes))
            .fold(0u64, u64::saturating_add),
        Chosen::Local { snapshots } => snapshots
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.stats.total_bytes))
            .fold(0u64, u64::saturating_add),
    };
    let mut seen = 0u64;
    let mut tick = |n: u64| {
        seen += n;
        if let Some(b) = &bar
            && total > 0
        {
            b.set_position((seen.saturating_mul(100) / total).min(100));
        }
    };
    let report = match chosen {
        Chosen::External { backup, .. } => {
            verify::verify_drive_backup(backup, keys.as_ref(), &scope, list_all, &mut tick)
        }
        Chosen::Local { snapshots } => {
            let drives = catalog::drives(settings, None).unwrap_or_default();
            let on_drives = catalog::drive_backups(&drives);
            let (stamp, location) = (chosen.stamp(), chosen.location(settings));
            let local = verify::Local {
                stamp,
                location,
                on_drives: &on_drives,
                ring,
                ui,
            };
            verify::verify_snapshots(&local, snapshots, &scope, list_all, &mut tick)
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if ui.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", verify::render(&report, list_all));
    }
    for w in &report.warnings {
        ui.warn(w);
    }
    if report.intact && !report.content_checked {
        Ok(Exit::Warnings)
    } else if report.intact {
        Ok(Exit::Ok)
    } else {
        let first = &report.problems[0];
        Err(failed(format!(
            "backup {} is not intact ({}): {first}",
            report.backup,
            ui::counted(report.problems.len() as u64, "problem", "problems")
        )))
    }
}
