//! One module per subcommand: build `Settings`, build the phase's plan, print it (dry run) or execute it.

pub mod backup;
pub mod collect;
pub mod config;
pub mod external;
pub mod generate;
pub mod image;
pub mod keygen;
pub mod restore;
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

/// Appends one record to the run log, warning (not failing) when it cannot be written.
pub(crate) fn append_log(
    settings: &crate::settings::Settings,
    record: &crate::runlog::RunRecord,
    ui: &crate::ui::Ui,
) {
    if let Err(e) = crate::runlog::append(&settings.state_dir, record) {
        ui.warn(format_args!(
            "cannot write the run log in {}: {e}",
            settings.state_dir.display()
        ));
    }
}
