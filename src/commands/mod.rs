//! One module per subcommand: build `Settings`, build the phase's plan, print it (dry run) or execute it.

pub mod backup;
pub mod cloud;
pub mod collect;
pub mod config;
pub mod external;
pub mod generate;
pub mod image;
pub mod keygen;
pub mod report;
pub mod restore;
pub mod serve;
pub mod status;
pub mod systemd;

use crate::exit::{CodedError, Exit};

/// The answer of subcommands whose issue has not landed yet.
pub fn not_implemented(name: &str) -> anyhow::Result<Exit> {
    Err(CodedError::new(
        Exit::Failed,
        format!("`dbackup {name}` is not implemented yet in this version"),
    )
    .into())
}

/// Starts a run that is logged: registers it with the run log (a panic or a second signal still leaves its line) and
/// catches SIGINT and SIGTERM from now on (see [`crate::interrupt`]). Returns its start time.
pub(crate) fn begin_run(
    settings: &crate::settings::Settings,
    ui: &crate::ui::Ui,
    command: &str,
) -> chrono::DateTime<chrono::FixedOffset> {
    if let Err(e) = crate::interrupt::install() {
        ui.warn(format_args!(
            "cannot catch SIGINT and SIGTERM ({e}): an interruption ends the run at once"
        ));
    }
    let started = crate::runlog::begin(&settings.state_dir, command);
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
            crate::exit::classify(e).code(),
            Some(crate::ui::format_error(e)),
            serde_json::Value::Null,
        ),
    };
    append_log(settings, &record, ui);
}

/// Appends one record to the run log, warning (not failing) when it cannot be written. The run's line: a run that a
/// signal interrupted is recorded as such (exit 128 + the signal, `interrupted`).
pub(crate) fn append_log(
    settings: &crate::settings::Settings,
    record: &crate::runlog::RunRecord,
    ui: &crate::ui::Ui,
) {
    crate::runlog::end();
    let record = match crate::interrupt::requested() {
        Some(why) => record.clone().interrupted_by(why),
        None => record.clone(),
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
        Err(e) => ui.warn(format_args!("{}", crate::ui::format_error(&e))),
    }
}
