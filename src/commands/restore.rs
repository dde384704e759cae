//! `dbackup restore` (also `backup-restore`): list backups, restore files or directories, or verify a backup, from
//! local snapshots or from the drive.
//!
//! stdout: the listing, the plan (`--dry-run`), what was restored, or the verification report; with `--json`, the
//! same as data ([`list::Listing`], [`RestoreOutput`], [`verify::VerifyReport`]). stderr: warnings, progress, errors.
//!
//! Encrypted (age) drive backups: the keys come from `--identity FILE` and the config's `identity_file`s (or a
//! passphrase), read only once an encrypted archive is about to be opened ([`KeyRing`]); every encrypted archive and
//! index of the chosen backup is opened and its final chunk authenticated before anything is written, so a wrong
//! or missing key, a truncated archive or bytes added to it stop the restore with nothing written (from a bucket:
//! its indexes are, and its archives' sizes are checked against the listing instead of reading each one's header
//! and final chunk, a request each). A chunk that does
//! not authenticate in the middle fails only the entries it holds (nothing partial is left), and the rest is
//! restored. `--verify` without a key hashes the encrypted files only and says the contents were not checked.
//!
//! Exit: 0 done (or intact); 1 anything refused, failed, not found or damaged (nothing is restored when anything is
//! refused, unless `--skip-refused`); 2 bad arguments; 3 `--verify` of an encrypted backup without its key (the
//! encrypted files are intact, the contents were not checked), or a restore that gave back attributes or owners
//! incompletely (as a normal user: one warning each); 5 `--source external` with no drive present. A dry run exits
//! with what the restore would at best: 1 when it refuses entries, 3 when it warns beforehand (owners), else 0.

use std::path::PathBuf;

use crate::cli::{GlobalArgs, RestoreArgs};
use crate::exit::{Exit, failed, usage};
use crate::expand::Env;
use crate::restore::catalog;
use crate::restore::choose::{self, Chosen, Prepared};
use crate::restore::engine::displace;
use crate::restore::job;
use crate::restore::keys::{Ask, KeyRing};
use crate::restore::list;
use crate::restore::outcome::{self, RestoreOutput};
use crate::restore::select::Kept;
use crate::restore::select::{self, DateQuery};
use crate::restore::verify;
use crate::restore::{Overwrite, Request, Summary};
use crate::settings::Settings;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = super::load_settings(global)?;
    run_with_settings(&settings, &env, &args)
}

/// Everything after loading the settings.
pub fn run_with_settings(
    settings: &Settings,
    env: &Env,
    args: &RestoreArgs,
) -> anyhow::Result<Exit> {
    let ui = Ui::new(&settings.output);
    let req = request(env, args)?;
    // Nothing is written until a restore begins to write (`begin_run`): a signal before stops at once.
    super::reading(match () {
        _ if args.list => "restore --list",
        _ if args.verify => "restore --verify",
        _ if settings.output.dry_run => "restore --dry-run",
        _ => "restore",
    });
    // What a killed restore set aside without listing it: said by the next restore, and forgotten once a restore
    // that writes has said it.
    for dir in displace::unlisted(&settings.backup_root) {
        ui.warn(displace::unlisted_line(&dir));
        if !(args.list || args.verify || settings.output.dry_run) && ui.verbosity >= 0 {
            displace::told(&dir);
        }
    }
    if args.list {
        return list(settings, &req, &ui);
    }
    let _hold = (!settings.output.dry_run)
        .then(|| hold(settings, &ui))
        .flatten();
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
    match &outcome {
        Ok(exit) => super::log_run(
            settings,
            &ui,
            "restore",
            started,
            Ok((*exit, logged.unwrap_or_default())),
        ),
        // A restore that stopped (an error, SIGINT, SIGTERM) after it began writing: its line still says what was
        // restored and every file kept in displaced/.
        Err(e) => super::append_log(
            settings,
            &crate::runlog::RunRecord::new(
                "restore",
                started,
                crate::process::error_exit(e).code(),
                Some(crate::ui::format_error(e)),
                logged.unwrap_or_default(),
            ),
            &ui,
        ),
    }
    outcome
}

/// The run lock, held shared while the backup is chosen and read: a collect or external that starts meanwhile
/// exits 4 rather than let its retention remove what is being read. When one is running already, the restore
/// goes on and says so; a lock that cannot be opened (a read-only backup root) is only mentioned with `-v`.
fn hold(settings: &Settings, ui: &Ui) -> Option<crate::lock::RunLock> {
    match crate::lock::RunLock::share(&settings.backup_root) {
        Ok(hold) => hold,
        Err(crate::lock::LockError::Held { pid, .. }) => {
            ui.warn(format_args!(
                "a dbackup run (pid {pid}) is writing backups now; its retention may remove an old backup while \
                 this restore reads it (then restore again once it has finished)"
            ));
            None
        }
        Err(e) => {
            ui.info(format_args!("restoring without holding the run lock: {e}"));
            None
        }
    }
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
        source: args.source.as_ref().map(|s| s.kept),
        cloud: args.source.as_ref().and_then(|s| s.cloud.clone()),
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
        deep: args.deep,
        verify: args.verify,
    })
}

/// The options of a restore or `--verify` that do not go together.
fn check_combinations(args: &RestoreArgs) -> anyhow::Result<()> {
    if args.verify && args.target.is_some() {
        return Err(usage("--verify writes nothing, so it takes no --target"));
    }
    if args.drive.is_some() && args.source.as_ref().map(|s| s.kept) == Some(Kept::Local) {
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
    let held: Vec<&str> = listing
        .backups
        .iter()
        .flat_map(|b| b.sets.iter().map(|s| s.name.as_str()))
        .collect();
    crate::restore::catalog::check_set_named(settings, req.set.as_deref(), &held)?;
    for line in &listing.passed_over {
        ui.warn(line);
    }
    if ui.json {
        super::print_json(&listing)?;
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
        if ui.json {
            let out = RestoreOutput::new(chosen.kept(), chosen.stamp(), &planned, None);
            super::print_json(&out)?;
        } else {
            crate::out!("{}", outcome::render_plans(&planned, ui.verbosity >= 1));
        }
        let warnings = outcome::plan_warnings(&planned);
        for w in &warnings {
            ui.warn(w);
        }
        // What the restore would exit with at best.
        return Ok(match (refused > 0, warnings.is_empty()) {
            (true, _) => Exit::Failed,
            (false, false) => Exit::Warnings,
            (false, true) => Exit::Ok,
        });
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
            crate::stdx::counted(refused, "entry", "entries")
        )));
    }
    if let Some((head, each)) = outcome::escaping_links(&planned) {
        ui.info(head);
        for line in each {
            ui.step(line);
        }
    }
    // From here on SIGINT and SIGTERM stop the restore between entries, with a run log line.
    super::begin_run(settings, ui, "restore");
    let (summaries, error) = job::apply_with_progress(&sets, &planned, ui);
    *logged = outcome::logged(&planned, &summaries);
    // Interrupted: the run's line (with what was restored and kept) is written by `run_with_settings`, marked
    // `interrupted`; `main` says so in one line, after where the files already kept are.
    if let Err(stopped) = crate::interrupt::check() {
        if let Some(dir) = &opts.keep_displaced {
            if let Some(line) = outcome::kept_line(&summaries, dir, "listed in the run log") {
                ui.info(line);
            }
            displace::listed(dir);
        }
        return Err(stopped.into());
    }
    if ui.json {
        let out = RestoreOutput::new(chosen.kept(), chosen.stamp(), &planned, Some(&summaries));
        super::print_json(&out)?;
    } else {
        crate::out!(
            "{}",
            outcome::render_restored(&planned, &summaries, error.is_some())
        );
    }
    if let Some(dir) = &opts.keep_displaced {
        if let Some(line) = outcome::kept_line(&summaries, dir, "listed above") {
            ui.info(line);
        }
        // Only once what it kept is listed: a restore killed before this is told of by the next one.
        displace::listed(dir);
    }
    if let Chosen::Cloud { backup, .. } = chosen {
        // What it cost, counted by the transport (every attempt, retries included).
        let r = backup.store.requests();
        ui.info(format_args!(
            "{}: {} requests to {} ({} HEAD, {} GET), {} downloaded",
            backup.destination,
            r.head + r.get + r.put + r.post + r.delete + r.other,
            backup.place,
            r.head,
            r.get,
            crate::stdx::bytes(r.downloaded)
        ));
    }
    if let Some(e) = error {
        return Err(anyhow::Error::new(e).context(outcome::stopped_context(&summaries)));
    }
    for w in outcome::warnings(&summaries) {
        ui.warn(w);
    }
    let exit = summaries
        .iter()
        .map(Summary::exit)
        .fold(Exit::Ok, Exit::worst);
    if exit == Exit::Failed {
        ui.error(outcome::not_restored_line(&planned, &summaries));
    }
    Ok(exit)
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
    if let Chosen::Cloud { backup, set } = chosen {
        let report = crate::restore::cloud::verify(backup, set.as_deref(), ui)?;
        // Remembered as a drive's: damage found, or (every set checked) found whole.
        let problems = report.problems();
        let problem = match problems.first() {
            Some(first) if !report.intact => Some(Some(first.to_string())),
            None if report.intact && set.is_none() => Some(None),
            _ => None,
        };
        if let Some(problem) = problem {
            let at = (backup.destination.as_str(), backup.stamp.as_str());
            verify::remember(settings, at, problem.as_deref(), ui);
        }
        super::print(&report, ui.json, crate::restore::cloud::render_verify)?;
        if report.intact {
            return Ok(Exit::Ok);
        }
        let backup = format!("{} on {}", report.stamp, report.destination);
        return Err(not_intact(&backup, &problems));
    }
    let keys = choose::keys_for_backup(chosen, ring, Ask::IfAvailable, ui)?;
    let scope = choose::scope(settings, req, chosen, keys.as_ref(), ui)?;
    let list_all = ui.verbosity >= 1;
    let bar = ui.percent_bar("verify");
    let total = chosen.bytes_to_verify();
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
        Chosen::External { backup, .. } => verify::verify_drive_backup(
            backup,
            keys.as_ref(),
            &scope,
            (list_all, req.deep),
            &mut tick,
        ),
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
        Chosen::Cloud { .. } => unreachable!("verified above"),
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Chosen::External { drive, backup } = chosen
        && let Some(destination) = drive.destination(settings)
    {
        verify::remember_damage(settings, &destination, backup, &report, ui);
    }
    if ui.json {
        super::print_json(&report)?;
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
        Err(not_intact(&report.backup, &report.problems))
    }
}

/// The closing error of a `--verify` that found `problems` (not empty) in `backup` (a drive's or a bucket's): how
/// many, the first, and what to do next.
fn not_intact(backup: &str, problems: &[verify::Issue]) -> anyhow::Error {
    let first = problems
        .first()
        .map(|p| format!(": {p}"))
        .unwrap_or_default();
    failed(format!(
        "backup {backup} is not intact ({}){first}; a restore of this backup still brings back every file that is \
         intact and names the others{}",
        crate::stdx::counted(problems.len() as u64, "problem", "problems"),
        outcome::ELSEWHERE
    ))
}
