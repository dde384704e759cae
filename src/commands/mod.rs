//! One module per subcommand: build `Settings`, build the phase's plan, print it (dry run) or execute it.

pub mod backup;
pub mod cloud;
pub mod collect;
pub mod config;
pub mod external;
pub mod find;
pub mod generate;
pub mod image;
pub mod keygen;
pub mod ls;
pub mod report;
pub mod restore;
pub mod serve;
pub mod status;
pub mod systemd;

use crate::cli::GlobalArgs;
use crate::config::ConfigError;
use crate::exit::Exit;
use crate::expand::Env;
use crate::settings::{Output, Settings};

/// The global flags as the phases see them: `--json`, `--dry-run`, and the `-v` count minus the `-q` count.
pub(crate) fn output(global: &GlobalArgs) -> Output {
    let verbosity = (i16::from(global.verbose) - i16::from(global.quiet))
        .clamp(i16::from(i8::MIN), i16::from(i8::MAX));
    Output {
        json: global.json,
        dry_run: global.dry_run,
        verbosity: verbosity as i8,
    }
}

/// The settings of this run: the config `--config` names (or the one found by the usual rules), in the process's
/// environment.
/// A run on the built-in default config says so once, on stderr (unless `-q`).
pub(crate) fn load_settings(global: &GlobalArgs) -> Result<Settings, ConfigError> {
    let env = Env::from_process();
    let settings = Settings::load(global.config.as_deref(), output(global), &env)?;
    if settings.config_source == crate::config::load::ConfigSource::BuiltIn
        && settings.output.verbosity >= 0
    {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            crate::errln!(
                "dbackup: no config file at {}: using the built-in default config \
                 (`dbackup config init` writes it there to edit; `dbackup config check` shows what it means)",
                crate::config::load::default_config_path(&env).display()
            );
        });
    }
    Ok(settings)
}

/// `--drive` names a drive: `ls` and `find` refuse it beside `--source local` or `--source cloud` (exit 2).
pub(crate) fn drive_needs_drive_source(
    drive: bool,
    source: Option<crate::restore::select::Kept>,
) -> anyhow::Result<()> {
    use crate::restore::select::Kept;
    if drive && matches!(source, Some(Kept::Local | Kept::Cloud)) {
        return Err(crate::exit::CodedError::new(
            Exit::Usage,
            "--drive names a drive: use it with --source drive",
        )
        .into());
    }
    Ok(())
}

/// The requests a bucket's backups took (`ls`, `find` on a bucket), on stderr.
pub(crate) fn say_requests(ui: &crate::ui::Ui, bucket: Option<&crate::browse::cloud::CloudScope>) {
    if let Some(c) = bucket {
        ui.info(format_args!(
            "{}: {}",
            c.destination,
            crate::stdx::counted(c.requests(), "request", "requests")
        ));
    }
}

/// Prints a result on stdout: as JSON with `--json`, else as `text` says it.
pub(crate) fn print<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_json(value)?;
    } else {
        crate::out!("{}", text(value));
    }
    Ok(())
}

/// Prints a run's result on stdout: as JSON with `--json`, else the paths it wrote, one a line (`collect`,
/// `external`, `backup`).
pub(crate) fn print_paths<'a, T: serde::Serialize>(
    report: &T,
    json: bool,
    paths: impl Iterator<Item = &'a std::path::Path>,
) -> anyhow::Result<()> {
    if json {
        print_json(report)?;
    } else {
        for p in paths {
            crate::outln!("{}", p.display());
        }
    }
    Ok(())
}

/// Prints one `--json` result on stdout, as the JSON contract says (see [`crate::json`]): an object whose first
/// member is `"format": 1`.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    crate::json::print(value)?;
    Ok(())
}

/// Catches SIGINT and SIGTERM for a command that writes nothing (`what`, as its interruption line names it): the
/// first signal stops it at once with that line, "nothing was changed", exit 130/143 (see
/// [`crate::process::catch_reading`]).
pub(crate) fn reading(what: &str) {
    crate::process::catch_reading(what.to_string(), crate::process::NOTHING_CHANGED);
}

/// Catches SIGINT and SIGTERM from now on for a run that writes (see [`crate::interrupt`]): a signal stops it at its
/// next safe point. Called before the run's first write, however early (`backup` probes the drives before its run
/// starts); [`begin_run`] calls it too.
pub(crate) fn catch_signals(ui: &crate::ui::Ui) {
    if let Err(e) = crate::interrupt::install(crate::process::stop_at_once) {
        ui.warn(format_args!(
            "cannot catch SIGINT and SIGTERM ({e}): an interruption ends the run at once"
        ));
    }
}

/// Starts a run that is logged: registers it with the run log (a panic or a second signal still leaves its line) and
/// catches SIGINT and SIGTERM from now on ([`catch_signals`]). Returns its start time.
pub(crate) fn begin_run(
    settings: &crate::settings::Settings,
    ui: &crate::ui::Ui,
    command: &str,
) -> chrono::DateTime<chrono::FixedOffset> {
    catch_signals(ui);
    let started = crate::runlog::begin(&settings.state_dir, &settings.backup_root, command);
    test_panic(command);
    started
}

/// For the tests of the top-level catch, in debug builds only: `DBACKUP_TEST_PANIC=<command>` panics as that
/// command's run starts.
fn test_panic(command: &str) {
    if cfg!(debug_assertions)
        && std::env::var_os("DBACKUP_TEST_PANIC").is_some_and(|c| c == command)
    {
        panic!("DBACKUP_TEST_PANIC={command} (a test of the top-level catch)");
    }
}

/// Appends a run's line to the run log: the exit code and per-set value of a finished run, or the error that ended
/// it. A log that cannot be written is a warning, never a failure of the run.
pub(crate) fn log_run(
    settings: &crate::settings::Settings,
    ui: &crate::ui::Ui,
    command: &str,
    started: chrono::DateTime<chrono::FixedOffset>,
    outcome: Result<(Exit, serde_json::Value), &anyhow::Error>,
) {
    let record = match outcome {
        Ok((exit, sets)) => {
            crate::runlog::RunRecord::new(command, started, exit.code(), None, sets)
        }
        Err(e) => crate::runlog::RunRecord::new(
            command,
            started,
            crate::process::error_exit(e).code(),
            Some(crate::ui::format_error(e)),
            serde_json::Value::Null,
        ),
    };
    append_log(settings, &record, ui);
}

/// Ends a phase's run: its line in the run log (`logged`: the exit and value of a finished run), the status page
/// refreshed (`drives`: looking at the destinations). Then the result, unless the run was interrupted: the run log
/// says so, stderr gets one line (from `main`), and there is no result to print.
pub(crate) fn end_run<R>(
    settings: &crate::settings::Settings,
    ui: &crate::ui::Ui,
    command: &str,
    started: chrono::DateTime<chrono::FixedOffset>,
    drives: bool,
    outcome: anyhow::Result<R>,
    logged: impl FnOnce(&R) -> (Exit, serde_json::Value),
) -> anyhow::Result<R> {
    log_run(settings, ui, command, started, outcome.as_ref().map(logged));
    refresh_report(settings, ui, drives);
    let result = outcome?;
    crate::interrupt::check()?;
    Ok(result)
}

/// Appends one record to the run log, warning (not failing) when it cannot be written. The run's line: this config's
/// (its backup root named), and a run that a signal interrupted recorded as such (exit 128 + the signal,
/// `interrupted`).
pub(crate) fn append_log(
    settings: &crate::settings::Settings,
    record: &crate::runlog::RunRecord,
    ui: &crate::ui::Ui,
) {
    crate::runlog::end();
    let record = record.clone().of_root(&settings.backup_root);
    let record = match crate::interrupt::requested() {
        Some(why) => record.interrupted_by(why),
        None => record,
    };
    if let Err(e) = crate::runlog::append(&settings.state_dir, &record) {
        ui.warn(format_args!(
            "cannot write the run log in {}: {e}",
            settings.state_dir.display()
        ));
    }
}

/// After a run: regenerates the status page (`report.path`), warning (never failing) when it cannot be written.
/// `drives`: look at the destinations (without writing to them) for it.
pub(crate) fn refresh_report(
    settings: &crate::settings::Settings,
    ui: &crate::ui::Ui,
    drives: bool,
) {
    let look = if drives {
        crate::status::Look::Read
    } else {
        crate::status::Look::Skip
    };
    match crate::report::refresh_local(settings, look) {
        Ok(Some(path)) => ui.step(format_args!("status page: {}", path.display())),
        Ok(None) => {}
        // A signal while it was written: the run's own line says it was interrupted.
        Err(e) if e.is::<crate::interrupt::Interrupted>() => {}
        Err(e) => ui.warn(format_args!("{}", crate::ui::format_error(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_from_flags() {
        let g = GlobalArgs {
            config: None,
            json: true,
            dry_run: true,
            quiet: 0,
            verbose: 2,
        };
        assert_eq!(
            output(&g),
            Output {
                json: true,
                dry_run: true,
                verbosity: 2
            }
        );
        let g = GlobalArgs {
            config: None,
            json: false,
            dry_run: false,
            quiet: 2,
            verbose: 0,
        };
        assert_eq!(output(&g).verbosity, -2);
    }
}
