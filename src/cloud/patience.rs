//! How long dbackup waits on a server, in one place: a request is given up when the server makes no progress for
//! `timeout_seconds` (no answer to it, or no byte of its answer's body; for a request with a body, plus a minute of
//! a poor uplink since the last of it left: [`IN_FLIGHT`]), never for being slow while bytes move, and at once when
//! SIGINT or SIGTERM comes. A request given up is a transient error ([`RetryLayer`] and
//! `Store::call_with` retry it), whose message names the server and how long it was silent; an object whose
//! requests go silent `retries + 1` times in a row with no progress between ([`Stalls`]) is given up for good. The
//! pauses between attempts end at a signal too ([`pause`], [`unless_interrupted`]).
//!
//! [`RetryLayer`]: opendal::layers::RetryLayer

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opendal::Buffer;

/// The slowest uplink a request's body is given time for, in bytes a second. 16 KiB/s: a poor mobile uplink; an
/// 8 MiB part then may take 8.5 minutes, and does, as long as its bytes keep leaving ([`Sent`]).
pub(crate) const SLOWEST_UPLINK: u64 = 16 << 10;

/// What of a request's body may be on its way, not yet taken by the server, when the HTTP client takes no more of it
/// (or has taken its last byte): the client's write buffer (hyper's: 400 KiB) and the kernel's send buffer, which
/// takes more only once a good part of it has left. A request is awaited `timeout_seconds` plus this (at most the
/// body) at [`SLOWEST_UPLINK`] since the client last took some of its body: a minute more. Before, the wait was
/// `timeout_seconds` plus the whole body at that rate from the request's start: a server that stopped answering an
/// 8 MiB part was awaited 9.5 minutes (`timeout_seconds` 60) before a retry.
pub(crate) const IN_FLIGHT: u64 = 1 << 20;

/// How often a wait looks at the clock and at the signals: a SIGTERM is heeded within this.
const TICK: Duration = Duration::from_millis(100);

/// What an attempt must receive before it goes silent for its silence to start the object's count again
/// ([`Stalls`]): 1 MiB, a minute of the poorest link that still moves. Less is no progress: a server that sends a
/// little of an object and then nothing, every time, would otherwise be retried without end (OpenDAL's
/// `RetryLayer` counts a read's attempts afresh after each chunk it gets).
pub(crate) const PROGRESS: u64 = 1 << 20;

/// The bound OpenDAL's `TimeoutLayer` puts on one operation (a part written, a listing page, a read, all in all): a
/// backstop only, the transport giving up on silence first; a whole part at [`SLOWEST_UPLINK`] and its answer fit.
/// Before, it was `timeout_seconds` itself: on an uplink under ~2 Mbit/s (two 8 MiB parts at once, 60 s) no part
/// was ever written.
pub(crate) fn backstop(quiet: Duration, part: usize) -> Duration {
    quiet + at_slowest(part as u64) + quiet
}

/// The time `bytes` take at [`SLOWEST_UPLINK`].
fn at_slowest(bytes: u64) -> Duration {
    Duration::from_secs(bytes / SLOWEST_UPLINK)
}

/// The wait for the answer to a request whose body is `body` bytes, from when the client last took some of its body
/// (see [`IN_FLIGHT`]).
pub(crate) fn answer_wait(quiet: Duration, body: u64) -> Duration {
    quiet + at_slowest(body.min(IN_FLIGHT))
}

/// The progress of a request's body: when the HTTP client last took some of it (or the request began).
#[derive(Debug)]
pub(crate) struct Sent {
    last: Mutex<Instant>,
}

impl Sent {
    pub(crate) fn new() -> Sent {
        Sent {
            last: Mutex::new(Instant::now()),
        }
    }

    /// The client took bytes of the body.
    pub(crate) fn took(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The silences of each object's requests in a row (by the request's path: an object, or a bucket's listing), each
/// attempt that went silent with less than [`PROGRESS`] received counting one more; an answer taken whole, or
/// [`PROGRESS`] received before the silence, starts the count again. Past `retries + 1` (as many attempts as any
/// failed request gets), the object is given up: an error nothing retries.
#[derive(Debug, Default)]
pub(crate) struct Stalls {
    retries: u32,
    silent: Mutex<HashMap<String, u32>>,
}

impl Stalls {
    pub(crate) fn new(retries: u32) -> Stalls {
        Stalls {
            retries,
            silent: Mutex::default(),
        }
    }

    /// One more attempt on `object` went silent after `received` bytes: the count in a row, and whether to give up.
    fn went_silent(&self, object: &str, received: u64) -> (u32, bool) {
        let mut silent = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        let n = silent.entry(object.to_string()).or_default();
        *n = if received >= PROGRESS { 1 } else { *n + 1 };
        (*n, *n > self.retries)
    }

    /// An answer about `object` was taken (whole, or left unread without a silence).
    fn answered(&self, object: &str) {
        let mut silent = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        silent.remove(object);
    }
}

/// What a wait is on: the server (named in messages) and the object whose silences are counted.
#[derive(Debug, Clone)]
pub(crate) struct On {
    pub host: String,
    pub object: String,
    pub stalls: Arc<Stalls>,
}

/// The error of a wait a signal ended. Not temporary: nothing retries it.
pub(crate) fn interrupted(i: crate::interrupt::Interrupted) -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::Unexpected, i.to_string())
}

/// Sleeps `d`, in ticks that look at the signals: `Some` when one came (the sleep cut short).
pub(crate) fn pause(d: Duration) -> Option<crate::interrupt::Interrupted> {
    let until = Instant::now() + d;
    loop {
        if let Some(i) = crate::interrupt::requested() {
            return Some(i);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(TICK));
    }
}

/// The words every message on a silent server has ([`give_up`]).
const SILENT: &str = " s (timeout_seconds)";

/// Whether `e` is the transport giving up on a silent server (its message then names the server, the silence and
/// whether the object made no progress).
pub(crate) fn silence(e: &opendal::Error) -> bool {
    e.message().contains(SILENT)
}

/// Why a wait ends early: a signal came, or the server was silent for `limit` (after `received` bytes of the
/// answer).
fn give_up(since: Instant, limit: Duration, on: &On, received: u64) -> Option<opendal::Error> {
    if let Some(i) = crate::interrupt::requested() {
        return Some(interrupted(i));
    }
    if since.elapsed() < limit {
        return None;
    }
    let silence = format!("{} gave no answer for {}{SILENT}", on.host, limit.as_secs());
    let (times, done) = on.stalls.went_silent(&on.object, received);
    Some(if done {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            format!(
                "{silence}, {times} times in a row with less than {} MiB between: no progress on it",
                PROGRESS >> 20
            ),
        )
    } else {
        opendal::Error::new(opendal::ErrorKind::Unexpected, silence).set_temporary()
    })
}

/// `fut`, or the error `check` gives (looked at every [`TICK`]) while `fut` has no result.
async fn until<T>(
    fut: impl Future<Output = opendal::Result<T>>,
    mut check: impl FnMut() -> Option<opendal::Error>,
) -> opendal::Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut tick = Box::pin(tokio::time::sleep(TICK));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        while tick.as_mut().poll(cx).is_ready() {
            if let Some(e) = check() {
                return Poll::Ready(Err(e));
            }
            tick.as_mut().reset(tokio::time::Instant::now() + TICK);
        }
        Poll::Pending
    })
    .await
}

/// `fut` (a request whose body's progress `sent` tells), given up `limit` after the client last took some of the
/// body without the answer, or when a signal comes.
pub(crate) async fn watched<T>(
    fut: impl Future<Output = opendal::Result<T>>,
    limit: Duration,
    sent: &Sent,
    on: &On,
) -> opendal::Result<T> {
    until(fut, || give_up(sent.last(), limit, on, 0)).await
}

/// `fut`, given up when a signal comes: an operation with OpenDAL's retries, whose pauses between attempts (up to
/// 30 s) look at nothing.
pub(crate) async fn unless_interrupted<T>(
    fut: impl Future<Output = opendal::Result<T>>,
) -> opendal::Result<T> {
    until(fut, || crate::interrupt::requested().map(interrupted)).await
}

/// An answer's body given up when no byte of it comes for `quiet` (however long it takes while bytes come), or
/// when a signal comes.
pub(crate) struct Quiet<S> {
    inner: S,
    quiet: Duration,
    on: On,
    since: Instant,
    tick: Pin<Box<tokio::time::Sleep>>,
    /// Bytes of the body received.
    received: u64,
    /// Given up (a silence, a signal): not an answer taken.
    silent: bool,
}

impl<S> Quiet<S> {
    pub(crate) fn new(inner: S, quiet: Duration, on: On) -> Quiet<S> {
        Quiet {
            inner,
            quiet,
            on,
            since: Instant::now(),
            tick: Box::pin(tokio::time::sleep(TICK)),
            received: 0,
            silent: false,
        }
    }
}

impl<S> Drop for Quiet<S> {
    fn drop(&mut self) {
        if !self.silent {
            self.on.stalls.answered(&self.on.object);
        }
    }
}

impl<S> futures_core::Stream for Quiet<S>
where
    S: futures_core::Stream<Item = opendal::Result<Buffer>> + Unpin,
{
    type Item = opendal::Result<Buffer>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.since = Instant::now();
            if let Some(Ok(b)) = &item {
                this.received += b.len() as u64;
            }
            return Poll::Ready(item);
        }
        while this.tick.as_mut().poll(cx).is_ready() {
            if let Some(e) = give_up(this.since, this.quiet, &this.on, this.received) {
                this.silent = true;
                return Poll::Ready(Some(Err(e)));
            }
            this.tick.as_mut().reset(tokio::time::Instant::now() + TICK);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts that go silent with little received count up to `retries + 1`, then the object is given up; an
    /// attempt that received [`PROGRESS`] first, or an answer taken, starts the count again; objects count apart.
    #[test]
    fn silences_without_progress_are_counted_per_object() {
        let s = Stalls::new(2);
        assert_eq!(s.went_silent("a", 1024), (1, false));
        assert_eq!(s.went_silent("a", 0), (2, false));
        assert_eq!(s.went_silent("b", 0), (1, false));
        assert_eq!(s.went_silent("a", 1024), (3, true));
        assert_eq!(s.went_silent("a", PROGRESS), (1, false));
        s.answered("a");
        assert_eq!(s.went_silent("a", 0), (1, false));
    }

    /// A request is awaited `timeout_seconds` plus at most a minute of the slowest uplink after some of its body last
    /// left, whatever its size: an 8 MiB part whose server stops answering is retried after 2 minutes
    /// (`timeout_seconds` 60), not 9.5. The whole operation's backstop still fits a whole part at that rate.
    #[test]
    fn an_answer_is_awaited_a_bounded_time_after_the_body_left() {
        let quiet = Duration::from_secs(60);
        assert_eq!(answer_wait(quiet, 0), quiet);
        assert_eq!(answer_wait(quiet, 160 << 10), Duration::from_secs(70));
        assert_eq!(answer_wait(quiet, 8 << 20), Duration::from_secs(124));
        assert_eq!(answer_wait(quiet, 5 << 30), Duration::from_secs(124));
        assert_eq!(backstop(quiet, 8 << 20), Duration::from_secs(632));
    }
}
