//! How results reach people: error formatting, verbosity-aware messages on stderr, progress bars on a terminal.

/// An error chain as one line per cause: `collect data: rsync failed: ...`.
pub fn format_error(err: &anyhow::Error) -> String {
    format!("{err:#}")
}
