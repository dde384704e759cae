//! How the process ends, whatever happened: the result's exit code, an error on one line, an interrupted run's one line
//! (130/143), a second signal's stop at once ([`stop_at_once`]), a panic caught at the top ("internal error: ... please
//! report", exit 1, a run log line, no backtrace unless `RUST_BACKTRACE` asks for one), and stdout flushed with a
//! closed pipe taken as the reader's choice (see [`crate::stdx::out`]).

use std::panic::PanicHookInfo;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cloud::CloudError;
use crate::cloud::credentials::CredentialsError;
use crate::config::ConfigError;
use crate::exit::{self, Exit, probe};
use crate::interrupt::{self, Interrupted};
use crate::lock::LockError;

/// The first panic's message and place, for the run log.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// How many of tiny_http's known worker panics ([`known_upstream`]) this run has had: `dbackup serve` looks at it
/// to bring its server's worker pool back (see `report::serve`).
static UPSTREAM_PANICS: AtomicUsize = AtomicUsize::new(0);

/// The count of tiny_http's known worker panics so far.
pub(crate) fn upstream_panics() -> usize {
    UPSTREAM_PANICS.load(Ordering::Acquire)
}

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
    if info
        .location()
        .is_some_and(|l| known_upstream(l.file(), &message))
    {
        UPSTREAM_PANICS.fetch_add(1, Ordering::AcqRel);
        return;
    }
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

/// Whether a panic at `file` with `message` is another crate's known and harmless one, not a bug of dbackup's: no
/// "please report" for it. The one known: `dbackup serve`'s tiny_http reads a request on a worker thread of its own,
/// then unwraps the client's address, which fails (ENOTCONN) when the client reset the connection before it was
/// accepted (tiny-http PR #285, not released). That thread ends, the connection is dropped and the server goes on;
/// dbackup's own code never runs at that place (it answers requests on the main thread).
fn known_upstream(file: &str, message: &str) -> bool {
    file.contains("/tiny_http-")
        && file.ends_with("/src/client.rs")
        && message.contains("NotConnected")
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

    /// Only tiny_http's unwrap of a client's address that is gone is passed over; dbackup's own panics, and
    /// tiny_http's others, still ask for a report.
    #[test]
    fn only_the_known_upstream_panic_is_passed_over() {
        let gone = "called `Result::unwrap()` on an `Err` value: Os { code: 107, kind: NotConnected, message: \
                    \"Transport endpoint is not connected\" }";
        let tiny = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tiny_http-0.12.0/src/client.rs";
        assert!(known_upstream(tiny, gone));
        assert!(known_upstream(
            "/build/cargo-vendor-dir/tiny_http-0.12.0/src/client.rs",
            gone
        ));
        assert!(!known_upstream(tiny, "index out of bounds"));
        assert!(!known_upstream(
            "/root/.cargo/registry/src/x/tiny_http-0.12.0/src/lib.rs",
            gone
        ));
        assert!(!known_upstream("src/report/serve.rs", gone));
        assert!(!known_upstream("src/tiny_http/src/client.rs", gone));
    }
}
