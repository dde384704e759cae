//! How the process ends, whatever happened: the result's exit code, an error on one line, an interrupted run's one line
//! (130/143), a second signal's stop at once ([`stop_at_once`]), a panic caught at the top ("internal error: ... please
//! report", exit 1, a run log line, no backtrace unless `RUST_BACKTRACE` asks for one), and stdout flushed with a
//! closed pipe taken as the reader's choice (see [`crate::stdx::out`]).

use std::panic::PanicHookInfo;
use std::process::ExitCode;
use std::sync::Mutex;

use crate::cloud::CloudError;
use crate::cloud::credentials::CredentialsError;
use crate::config::ConfigError;
use crate::exit::{self, Exit, probe};
use crate::interrupt::{self, Interrupted};
use crate::lock::LockError;

/// The first panic's message and place, for the run log.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the panic hook. Call first thing in `main`.
pub fn install() {
    std::panic::set_hook(Box::new(on_panic));
}

fn on_panic(info: &PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let place = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let what = format!("{message}{place}");
    crate::errln!(
        "dbackup: internal error: {what}; this is a bug in dbackup: please report it, with this message and the \
         command you ran"
    );
    // Only when asked, as Rust's own hook does: `RUST_BACKTRACE=1`.
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        crate::errln!("{backtrace}");
    }
    PANIC
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(what);
}

/// The errors that carry an exit code of their own, besides `exit::CodedError` and clap's usage errors: a config
/// that cannot be used (2), another run holding the lock (4), a cloud destination without keys or that cannot be
/// set up (2; what the server says is 1).
const CODED: &[exit::Probe] = &[
    probe::<ConfigError>,
    probe::<LockError>,
    probe::<CloudError>,
    probe::<CredentialsError>,
];

/// The exit code an error chain deserves (see [`exit::classify`]): the code of the first error in it that carries
/// one, else 1.
pub fn error_exit(err: &anyhow::Error) -> Exit {
    exit::classify(err, CODED)
}

/// What a command that writes nothing is doing and what its interruption leaves, for its one line (see
/// [`catch_reading`]).
static READING: Mutex<(String, &str)> = Mutex::new((String::new(), NOTHING_CHANGED));

/// What the interruption of a command that writes nothing leaves.
pub const NOTHING_CHANGED: &str = "nothing was changed";

/// Catches SIGINT and SIGTERM for a command that writes nothing (`what`: `status`, `restore --verify`, ...): the
/// first signal stops it at once, with one line saying `what` was interrupted and then `left` (usually
/// [`NOTHING_CHANGED`]), exit 128 + the signal; until the run starts writing ([`interrupt::install`]). Before, such
/// a command died of the signal, without a line. A failure to install leaves that default action.
pub fn catch_reading(what: String, left: &'static str) {
    *READING.lock().unwrap_or_else(|p| p.into_inner()) = (what, left);
    let _ = interrupt::install_reading(stop_at_once);
}

/// What a second SIGINT or SIGTERM does once the children are killed (given to [`interrupt::install`]): the run's
/// log line, one line on stderr, and the exit (128 + the signal), at once. The first already, for a command that
/// writes nothing ([`catch_reading`]): its one line says what was interrupted and that nothing was changed.
pub fn stop_at_once(why: Interrupted) -> ! {
    // One line and one exit, when both the signal-handling thread and the main thread (at a check that saw the
    // signal) get here: the second waits for the exit.
    static STOPPING: Mutex<()> = Mutex::new(());
    let _alone = STOPPING.lock().unwrap_or_else(|p| p.into_inner());
    if interrupt::reading() {
        let text = {
            let reading = READING.lock().unwrap_or_else(|p| p.into_inner());
            format!(
                "{} interrupted ({}); {}",
                reading.0,
                why.signal_name(),
                reading.1
            )
        };
        crate::errln!("dbackup: {text}");
        if crate::json::enabled() && !crate::json::printed() {
            crate::json::print_error(&text, why.exit_code());
        }
    } else {
        crate::runlog::abandon(why.exit_code(), why.to_string(), Some(why));
        crate::errln!(
            "dbackup: interrupted ({}, twice); stopped at once; the next run resumes",
            why.signal_name()
        );
    }
    let _ = crate::stdx::out::finish();
    std::process::exit(i32::from(why.exit_code()));
}

/// The exit code for what [`crate::run`] (under `catch_unwind`) came to; says what went wrong on stderr, writes the
/// run log line of a run that panicked or was interrupted and did not write its own.
pub fn finish(outcome: std::thread::Result<anyhow::Result<Exit>>) -> ExitCode {
    let mut why = interrupt::requested();
    // With `--json`, what went wrong is also an error object on stdout (see `crate::json`).
    let mut error = None;
    let mut code = match outcome {
        Ok(Ok(exit)) => exit.code(),
        Ok(Err(err)) => {
            why = why.or_else(|| interrupted(&err));
            // An interrupted run's error (rsync stopped by the signal, ...) is the interruption: one line below.
            if why.is_none() {
                let text = crate::ui::format_error(&err);
                crate::errln!("dbackup: error: {text}");
                error = Some(text);
            }
            error_exit(&err).code()
        }
        Err(_) => {
            let what = PANIC
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            crate::runlog::abandon(Exit::Failed.code(), format!("internal error: {what}"), None);
            error = Some(format!("internal error: {what}"));
            Exit::Failed.code()
        }
    };
    if let Some(why) = why {
        if interrupt::reading() {
            stop_at_once(why);
        }
        crate::runlog::abandon(why.exit_code(), why.to_string(), Some(why));
        let text = format!("interrupted ({}); the next run resumes", why.signal_name());
        crate::errln!("dbackup: {text}");
        error = Some(text);
        code = why.exit_code();
    }
    if let Some(error) = error
        && crate::json::enabled()
        && !crate::json::printed()
    {
        crate::json::print_error(&error, code);
    }
    if let Err(e) = crate::stdx::out::finish() {
        crate::errln!("dbackup: error: cannot write the output: {e}");
        if code == Exit::Ok.code() || code == Exit::Warnings.code() {
            code = Exit::Failed.code();
        }
    }
    ExitCode::from(code)
}

/// The interruption an error chain carries, if any.
fn interrupted(err: &anyhow::Error) -> Option<Interrupted> {
    err.chain().find_map(|c| {
        c.downcast_ref::<Interrupted>().copied().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Interrupted>())
                .copied()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_that_carry_a_code_keep_it_through_context() {
        let config = anyhow::Error::new(ConfigError::Exists {
            path: "/c.json".into(),
        })
        .context("config init");
        assert_eq!(error_exit(&config), Exit::Usage);
        let locked = anyhow::Error::new(LockError::Held {
            path: "/root/.lock".into(),
            pid: "1".into(),
        })
        .context("collect");
        assert_eq!(error_exit(&locked), Exit::Locked);
        let plain = anyhow::anyhow!("plain").context("collect");
        assert_eq!(error_exit(&plain), Exit::Failed);
    }
}
