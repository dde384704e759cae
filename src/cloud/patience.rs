//! How long dbackup waits on a server, in one place: a request is given up when the server makes no progress for
//! `timeout_seconds` (no answer to it, or no byte of its answer's body), never for being slow while bytes move, and
//! at once when SIGINT or SIGTERM comes. A request given up is a transient error ([`RetryLayer`] and
//! `Store::call_with` retry it), whose message names the server and how long it was silent.
//!
//! [`RetryLayer`]: opendal::layers::RetryLayer

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opendal::Buffer;

/// The slowest uplink a request's body is given time for, in bytes a second: the wait for an answer is
/// `timeout_seconds` plus the body's size at this rate (a request's body is sent before its answer can come, and the
/// transport cannot see it leave). 16 KiB/s: a poor mobile uplink; an 8 MiB part then may take 8.5 minutes.
pub(crate) const SLOWEST_UPLINK: u64 = 16 << 10;

/// How often a wait looks at the clock and at the signals: a SIGTERM is heeded within this.
const TICK: Duration = Duration::from_millis(100);

/// The bound OpenDAL's `TimeoutLayer` puts on one operation (a part written, a listing page, a read, all in all): a
/// backstop only, the transport giving up on silence first; a whole part at [`SLOWEST_UPLINK`] and its answer fit.
/// Before, it was `timeout_seconds` itself: on an uplink under ~2 Mbit/s (two 8 MiB parts at once, 60 s) no part
/// was ever written.
pub(crate) fn backstop(quiet: Duration, part: usize) -> Duration {
    answer_wait(quiet, part as u64) + quiet
}

/// The wait for the answer to a request whose body is `body` bytes.
pub(crate) fn answer_wait(quiet: Duration, body: u64) -> Duration {
    quiet + Duration::from_secs(body / SLOWEST_UPLINK)
}

/// Why a wait ends early: a signal came, or the server was silent for `limit`.
fn give_up(since: Instant, limit: Duration, host: &str) -> Option<opendal::Error> {
    if let Some(i) = crate::interrupt::requested() {
        // Not temporary: nothing retries it.
        return Some(opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            i.to_string(),
        ));
    }
    (since.elapsed() >= limit).then(|| {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            format!(
                "{host} gave no answer for {} s (timeout_seconds)",
                limit.as_secs()
            ),
        )
        .set_temporary()
    })
}

/// `fut`, given up after `limit` without its result, or when a signal comes.
pub(crate) async fn watched<T>(
    fut: impl Future<Output = opendal::Result<T>>,
    limit: Duration,
    host: &str,
) -> opendal::Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut tick = Box::pin(tokio::time::sleep(TICK));
    let since = Instant::now();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        while tick.as_mut().poll(cx).is_ready() {
            if let Some(e) = give_up(since, limit, host) {
                return Poll::Ready(Err(e));
            }
            tick.as_mut().reset(tokio::time::Instant::now() + TICK);
        }
        Poll::Pending
    })
    .await
}

/// An answer's body given up when no byte of it comes for `quiet` (however long it takes while bytes come), or
/// when a signal comes.
pub(crate) struct Quiet<S> {
    inner: S,
    quiet: Duration,
    host: String,
    since: Instant,
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Quiet<S> {
    pub(crate) fn new(inner: S, quiet: Duration, host: String) -> Quiet<S> {
        Quiet {
            inner,
            quiet,
            host,
            since: Instant::now(),
            tick: Box::pin(tokio::time::sleep(TICK)),
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
            return Poll::Ready(item);
        }
        while this.tick.as_mut().poll(cx).is_ready() {
            if let Some(e) = give_up(this.since, this.quiet, &this.host) {
                return Poll::Ready(Some(Err(e)));
            }
            this.tick.as_mut().reset(tokio::time::Instant::now() + TICK);
        }
        Poll::Pending
    }
}
