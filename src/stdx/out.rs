//! Writing results (stdout) and messages (stderr) without panicking: a closed pipe (`dbackup status | head -1`)
//! ends the output quietly, never the run; any other write error (a full disk under `> file`) is kept and reported
//! once, at the end ([`finish`]).
//!
//! `println!` and `eprintln!` panic when the write fails; every printing in `src/` goes through [`outln!`](crate::outln),
//! [`out!`](crate::out) and [`errln!`](crate::errln) instead.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first stdout write error that was not a closed pipe.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout; after a failed write, nothing more is written.
pub fn stdout(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        stdout_failed(e);
    }
}

/// Writes to stderr; a failed write (a closed pipe) is dropped, and so is everything after it.
pub fn stderr(args: fmt::Arguments<'_>) {
    if STDERR_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if io::stderr().lock().write_fmt(args).is_err() {
        STDERR_CLOSED.store(true, Ordering::Relaxed);
    }
}

fn stdout_failed(e: io::Error) {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        let mut first = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// Flushes stdout; the first write error that was not a closed pipe, if any. A reader that stopped reading
/// (`| head -1`) is not an error: it chose to.
pub fn finish() -> Result<(), io::Error> {
    if !STDOUT_CLOSED.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().lock().flush()
    {
        stdout_failed(e);
    }
    match STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `println!` that never panics (see [`crate::stdx::out`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::stdx::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdx::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that never panics (see [`crate::stdx::out`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdx::out::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics (see [`crate::stdx::out`]).
#[macro_export]
macro_rules! errln {
    () => { $crate::stdx::out::stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdx::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
