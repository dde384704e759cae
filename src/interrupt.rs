//! Interruptions: SIGINT and SIGTERM (systemd stops units with SIGTERM) during collect, external, backup, restore or
//! image restore become a flag that the long loops check at their natural points (between sets, files and blocks,
//! before a promotion), so nothing half-written is ever promoted. The signal handler sets the flag itself, so the
//! thread a signal interrupted sees it at its very next check. The running child (rsync) hears the signal too, the
//! run log gets an `interrupted` line, and the process ends with one line on stderr and 128 + the signal (130, 143).
//!
//! A second signal stops at once: the children are killed, and the process ends through the function [`install`]
//! was given (`process::stop_at_once`: the run log line, one line on stderr, the exit), so this module names neither
//! the run log nor the process's end. A command that writes nothing (`ls`, `find`, `status`, `restore --verify`, a
//! dry run) calls [`install_reading`] instead: it has nothing half-written to leave, so its first signal already
//! stops at once (a long read stops at once, not at its end), until [`install`] says the run now writes. Until one
//! of them is called (`config check`, ...) the signals keep their default action. The commands that write one small
//! file (`keygen`, `config init`, `systemd render --out`, `report --out`) call [`install`] too, so that a signal
//! removes their temporary file instead of killing them beside it ([`crate::stdx::fs::complete_temp`] returns the
//! interruption); `image kit` removes the kit it wrote.

use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The run's signal: the first the signal-handling thread took (a second one stops at once).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The signals that came (bit `1 << n` for signal `n`), set by the signal handler itself on the thread it
/// interrupted: that thread's next [`check`] sees them, before the signal-handling thread has run.
static ARRIVED: AtomicI32 = AtomicI32::new(0);
/// Set by [`acknowledge`]: the signals that came are the command's normal end, not an interruption, even those the
/// signal-handling thread takes only after it.
static ACKNOWLEDGED: AtomicBool = AtomicBool::new(false);
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
/// Set by [`install_reading`], cleared by [`install`]: the command writes nothing (yet), so the first signal stops at
/// once.
static READING: AtomicBool = AtomicBool::new(false);

/// The run was interrupted by a signal: what the checks return, through every layer up to `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", signal_name(*.0))]
pub struct Interrupted(pub i32);

impl Interrupted {
    /// The process exit code: 128 + the signal (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.0).unwrap_or(1)
    }

    pub fn signal_name(self) -> &'static str {
        signal_name(self.0)
    }
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Catches SIGINT and SIGTERM from now on (once per process). A second signal kills the children and calls `stop`,
/// which ends the process. A failure to install leaves the default action (the process dies, as before; the next run
/// resumes all the same) and is returned for a warning.
pub fn install(stop: fn(Interrupted) -> !) -> std::io::Result<()> {
    READING.store(false, Ordering::SeqCst);
    install_handlers(stop)
}

/// Catches SIGINT and SIGTERM for a command that writes nothing: the first signal kills the children and calls
/// `stop` at once, until [`install`] is called (the run starts writing). Fails as [`install`] does.
pub fn install_reading(stop: fn(Interrupted) -> !) -> std::io::Result<()> {
    READING.store(true, Ordering::SeqCst);
    install_handlers(stop)
}

/// Whether the command writes nothing (see [`install_reading`]).
pub fn reading() -> bool {
    READING.load(Ordering::SeqCst)
}

fn install_handlers(stop: fn(Interrupted) -> !) -> std::io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = (|| {
            let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
            for signal in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: the action is async-signal-safe: one atomic operation, no allocation, no lock.
                unsafe { signal_hook::low_level::register(signal, move || arrived(signal)) }?;
            }
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for signal in signals.forever() {
                        on_signal(signal, stop);
                    }
                })?;
            Ok(())
        })();
    });
    result
}

/// Notes that `signal` came (in the signal handler: async-signal-safe, one atomic operation).
fn arrived(signal: i32) {
    ARRIVED.fetch_or(1 << signal, Ordering::SeqCst);
}

fn on_signal(signal: i32, stop: fn(Interrupted) -> !) {
    let first = SIGNAL
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first && !reading() {
        forward(signal);
        return;
    }
    // The second signal, or the first to a command that writes nothing: the user (or systemd) will not wait for the
    // next safe point.
    forward(libc::SIGKILL);
    stop(Interrupted(SIGNAL.load(Ordering::SeqCst)));
}

fn forward(signal: i32) {
    let children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    for &pid in children.iter() {
        // The pid is a child of ours that has not been waited for (it is unregistered before it is reaped), so it
        // cannot name another process.
        kill(pid, signal);
    }
}

/// For the tests of a signal at a given point, in debug builds only: `DBACKUP_TEST_STOP=<point>` stops the process
/// (SIGSTOP) when it reaches `point`, so a test can signal it there whatever the machine's speed.
pub fn test_stop(point: &str) {
    if cfg!(debug_assertions) && std::env::var_os("DBACKUP_TEST_STOP").is_some_and(|p| p == point) {
        kill(std::process::id() as i32, libc::SIGSTOP);
    }
}

/// Sends `signal` to `pid` (best effort: the child may have exited already).
fn kill(pid: i32, signal: i32) {
    if let (Some(pid), Some(signal)) = (
        rustix::process::Pid::from_raw(pid),
        rustix::process::Signal::from_named_raw(signal),
    ) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The signal that interrupted this run, if one did.
pub fn requested() -> Option<Interrupted> {
    if ACKNOWLEDGED.load(Ordering::SeqCst) {
        return None;
    }
    match (
        SIGNAL.load(Ordering::SeqCst),
        ARRIVED.load(Ordering::SeqCst),
    ) {
        (0, 0) => None,
        // Not taken by the signal-handling thread yet: the one it will take first (the lowest, as it goes).
        (0, bits) => Some(Interrupted(bits.trailing_zeros() as i32)),
        (s, _) => Some(Interrupted(s)),
    }
}

/// Takes the signal as handled, for a command whose normal end is a signal (`dbackup serve`, stopped by systemd's
/// SIGTERM): the process then ends as the command's result says, not as interrupted, whenever the signal-handling
/// thread gets to the signal (before, it could take it after this and make the run "interrupted", exit 143). Returns
/// the signal. A second signal still stops at once.
pub fn acknowledge() -> Option<Interrupted> {
    let signal = requested();
    ACKNOWLEDGED.store(true, Ordering::SeqCst);
    signal
}

/// `Err` once a signal came: the check at a natural point of a long loop.
pub fn check() -> Result<(), Interrupted> {
    match requested() {
        None => Ok(()),
        Some(i) => Err(i),
    }
}

/// [`check`] for code that speaks `io::Error` (sinks, readers): the [`Interrupted`] inside an `Other` error (never
/// `ErrorKind::Interrupted`, which `write_all` and friends would retry).
pub fn check_io() -> std::io::Result<()> {
    check().map_err(std::io::Error::other)
}

/// A reader that fails with the [`Interrupted`] of [`check_io`] once a signal came (checked before every read), so a
/// copy into a child's pipe stops at the next block.
pub struct CheckedReader<R>(pub R);

impl<R: std::io::Read> std::io::Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        check_io()?;
        self.0.read(buf)
    }
}

/// A child process that hears the signals dbackup gets, while this guard lives. Drop it before reaping the child
/// (`wait`): until then its pid cannot name another process.
#[must_use = "the child hears the signals only while the guard lives"]
pub struct ChildGuard(i32);

/// Registers a child (by its pid) to hear SIGINT and SIGTERM; if one already came, the child gets it now.
pub fn watch_child(pid: u32) -> ChildGuard {
    let pid = i32::try_from(pid).unwrap_or(0);
    if pid > 0 {
        CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        if let Some(Interrupted(s)) = requested() {
            // As in `forward`: our own child, not yet reaped.
            kill(pid, s);
        }
    }
    ChildGuard(pid)
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the process [`a_signal_is_seen_by_the_next_check_at_once`] starts to run it alone: the handlers it
    /// installs and the signal it raises are the whole process's.
    const SIGNAL_CHILD: &str = "DBACKUP_INTERRUPT_CHILD";

    /// In the test process: runs the test `name` of this module alone in a child process, asserts it passed there,
    /// and returns true (the caller returns). In that child: false (the caller runs the test's body).
    fn ran_alone(name: &str) -> bool {
        if std::env::var_os(SIGNAL_CHILD).is_some() {
            return false;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("interrupt::tests::{name}"),
                "--test-threads=1",
            ])
            .env(SIGNAL_CHILD, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    /// A signal that interrupted a thread is seen by that thread's very next [`check`]: a loop that checks before it
    /// promotes never promotes after the signal came. Before: only the signal-handling thread set the flag, when it
    /// next ran; the interrupted thread went on at once and its next check (seen here: the check right after the
    /// signal, almost every time) found no signal, so a run stopped just before its promotion promoted, and ended 0
    /// when it got to its end before that thread ran.
    #[test]
    fn a_signal_is_seen_by_the_next_check_at_once() {
        if ran_alone("a_signal_is_seen_by_the_next_check_at_once") {
            return;
        }
        install(|_| std::process::exit(3)).unwrap();
        assert_eq!(check(), Ok(()));
        // SAFETY: raise has no preconditions; the handler runs on this thread before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert_eq!(check(), Err(Interrupted(libc::SIGTERM)));
    }

    /// A signal acknowledged as the command's end (`serve`) is no interruption, even when the signal-handling thread
    /// takes it only after the acknowledgement. Before: that thread then recorded it as the run's signal, and the
    /// process ended "interrupted" (exit 143) where it should end 0 (seen under load in
    /// `report::serve_logs_hostile_methods_and_paths_escaped`).
    #[test]
    fn an_acknowledged_signal_stays_acknowledged_when_its_thread_takes_it_late() {
        if ran_alone("an_acknowledged_signal_stays_acknowledged_when_its_thread_takes_it_late") {
            return;
        }
        install(|_| std::process::exit(3)).unwrap();
        // SAFETY: raise has no preconditions; the handler runs on this thread before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        // At once, as `serve`'s loop does: the signal-handling thread has most likely not run yet.
        assert_eq!(acknowledge(), Some(Interrupted(libc::SIGTERM)));
        let start = std::time::Instant::now();
        while SIGNAL.load(Ordering::SeqCst) == 0
            && start.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(requested(), None);
        assert_eq!(check(), Ok(()));
    }

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(Interrupted(libc::SIGINT).exit_code(), 130);
        assert_eq!(Interrupted(libc::SIGTERM).exit_code(), 143);
        assert_eq!(
            Interrupted(libc::SIGTERM).to_string(),
            "interrupted by SIGTERM"
        );
    }
}
