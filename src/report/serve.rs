//! `dbackup serve`: the status page over HTTP, made fresh for each request, and `/status.json` (the report with its
//! history). Read-only and stateless: GET and HEAD only (405 otherwise), no cookies, nothing written anywhere (drives
//! are looked at without the writability probe). A request whose `Host` is neither the listen address nor
//! `localhost` is refused with 421, so that a web page elsewhere cannot reach it through DNS rebinding.
//!
//! The server is hyper's HTTP/1 on a current-thread tokio runtime of its own (on the main thread). What a client
//! sends is hostile, and bounded: a request head larger than [`MAX_HEAD`] is refused (431) without being kept, a
//! client has [`HEAD_TIMEOUT`] to send its head and [`WRITE_STALL`] to take some of its answer (else its connection
//! is closed), and at most [`CONNECTIONS`] are served at once (the others wait in the listen queue), on that one
//! thread. Pages are made one after the other;
//! SIGTERM or SIGINT (caught by `crate::interrupt`) stops the server within [`POLL`], and the run exits 0.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Local;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::settings::Settings;
use crate::ui::Ui;

/// How often the loop looks at the stop flag while no request comes.
pub const POLL: Duration = Duration::from_millis(200);

/// The largest request head (request line and headers) read: a larger one is refused with 431. A browser's is a
/// few KiB.
const MAX_HEAD: usize = 64 * 1024;

/// How long a client has to send a request head, from when the server starts waiting for it (a new connection, or
/// the end of its previous answer): then its connection is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once: more wait in the listen queue until one ends.
const CONNECTIONS: usize = 32;

/// How long an answer may wait for the client to take any of it: then its connection is closed (a client that sends
/// requests and reads none of the answers would otherwise hold its connection for ever).
const WRITE_STALL: Duration = Duration::from_secs(10);

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Page,
    Json,
}

/// Why a request is refused: its status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// Decides a request from its method, URL and `Host` header (pure).
pub fn route(
    method: &str,
    url: &str,
    host: Option<&str>,
    listen: SocketAddr,
) -> Result<Route, Refusal> {
    match host {
        Some(h) if host_allowed(h, listen) => {}
        _ => {
            return Err(Refusal {
                status: 421,
                message: format!(
                    "this server answers only to Host {listen} or localhost:{} (a foreign Host is how DNS rebinding \
                     reaches a local server)",
                    listen.port()
                ),
            });
        }
    }
    if method != "GET" && method != "HEAD" {
        return Err(Refusal {
            status: 405,
            message: format!("{method} is not allowed: this server is read-only (GET and HEAD)"),
        });
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/index.html" => Ok(Route::Page),
        "/status.json" => Ok(Route::Json),
        _ => Err(Refusal {
            status: 404,
            message: "not found: the page is at / and its data at /status.json".to_string(),
        }),
    }
}

/// `Host` is `localhost` or the listen address's IP (any IP literal when listening on every address: an IP cannot be
/// rebound), with the listen port (or none, for port 80).
pub fn host_allowed(host: &str, listen: SocketAddr) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return false,
        };
        (ip, port)
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port_ok = match port {
        Some(p) => p.parse::<u16>().ok() == Some(listen.port()),
        None => listen.port() == 80,
    };
    if !port_ok {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return listen.ip().is_loopback() || listen.ip().is_unspecified();
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip == listen.ip() || listen.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The headers of every answer: no caching, no sniffing, no framing, no referrer, and the page's policy.
fn common_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Cache-Control", "no-store".to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        ("X-Frame-Options", "DENY".to_string()),
        ("Referrer-Policy", "no-referrer".to_string()),
        (
            "Content-Security-Policy",
            format!(
                "{}; frame-ancestors 'none'",
                super::html::content_security_policy()
            ),
        ),
    ]
}

/// Binds `listen`: refused (with why) when it is not loopback and `allow_remote` is not given.
pub fn bind(listen: SocketAddr, allow_remote: bool) -> anyhow::Result<TcpListener> {
    if !listen.ip().is_loopback() && !allow_remote {
        let port = crate::config::Serve::forward_port(listen.port());
        return Err(crate::exit::CodedError::new(
            crate::exit::Exit::Usage,
            format!(
                "{listen} is not a loopback address, and the page has no login; add --allow-remote if anyone who can \
                 reach it may see the state of your backups (or listen on 127.0.0.1:{port} and use \
                 `ssh -L {port}:127.0.0.1:{port} this-machine` from the other one)"
            ),
        )
        .into());
    }
    TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))
}

/// Serves until SIGTERM or SIGINT. Prints the URL on stdout once listening.
pub fn run(settings: &Settings, listener: TcpListener, ui: &Ui) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    // SIGTERM and SIGINT set a flag (`crate::interrupt`) that the loop looks at between connections.
    crate::interrupt::install(crate::process::stop_at_once)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot serve on {listen}: {e}"))?;
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
        })
        .map_err(|e| anyhow::anyhow!("cannot serve on {listen}: {e}"))?;
    crate::outln!("http://{listen}/");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    ui.info(format_args!(
        "dbackup serve: the status page is at http://{listen}/ (read-only; SIGTERM or Ctrl-C stops)"
    ));
    let server = Server {
        settings: settings.clone(),
        listen,
        ui: *ui,
    };
    tokio::task::LocalSet::new().block_on(&runtime, serve(Rc::new(server), listener))?;
    // The signal is how a server ends: the run ends ok, not "interrupted".
    let sig = crate::interrupt::acknowledge().map_or("a signal", |i| i.signal_name());
    ui.info(format_args!("dbackup serve: stopped ({sig})"));
    Ok(())
}

/// What each connection's answers need.
struct Server {
    settings: Settings,
    listen: SocketAddr,
    ui: Ui,
}

/// Accepts connections until SIGTERM or SIGINT, each served by a task of its own holding one of [`CONNECTIONS`]
/// slots: with none free, no connection is accepted until one ends.
async fn serve(server: Rc<Server>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    while crate::interrupt::requested().is_none() {
        let Ok(Ok(slot)) = tokio::time::timeout(POLL, Arc::clone(&slots).acquire_owned()).await
        else {
            continue;
        };
        let stream = match tokio::time::timeout(POLL, listener.accept()).await {
            Err(_) => continue,
            Ok(Ok((stream, _))) => stream,
            // A client gone before it was accepted, or a signal: not the server's fault.
            Ok(Err(e)) if gone_at_accept(&e) => continue,
            Ok(Err(e)) => {
                return Err(anyhow::anyhow!(
                    "cannot accept a connection on {}: {e}",
                    server.listen
                ));
            }
        };
        let server = Rc::clone(&server);
        tokio::task::spawn_local(async move {
            let answers = Rc::clone(&server);
            let service = hyper::service::service_fn(move |request| {
                std::future::ready(Ok::<_, Infallible>(answer(&answers, &request)))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                // `Content-Type`, not `content-type`: as they were written (the same to a browser).
                .title_case_headers(true)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(Taking {
                        stream,
                        stalled: None,
                    }),
                    service,
                );
            // A client that resets, sends no HTTP, or is too slow or too long: its connection ends, nothing more.
            if let Err(e) = connection.await {
                server
                    .ui
                    .step(format_args!("a connection ended early: {e}"));
            }
            drop(slot);
        });
    }
    Ok(())
}

/// A client's connection whose writes fail when the client has taken nothing for [`WRITE_STALL`].
struct Taking {
    stream: tokio::net::TcpStream,
    /// Since the write that waits began to wait.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncWrite for Taking {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => {
                let stalled = this
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the client took nothing of its answer for {} s",
                            WRITE_STALL.as_secs()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            done => {
                this.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Taking {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

/// Whether an accept failed for the one connection (or a signal) rather than for the listener.
fn gone_at_accept(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

fn answer<B>(server: &Server, request: &hyper::Request<B>) -> hyper::Response<String> {
    let (settings, listen, ui) = (&server.settings, server.listen, server.ui);
    let method = request.method().as_str().to_string();
    let url = request.uri().to_string();
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let (status, content_type, body) = match route(&method, &url, host.as_deref(), listen) {
        Ok(route) => {
            let now = Local::now().fixed_offset();
            let report = super::gather(
                settings,
                now,
                settings.report.history,
                crate::status::Look::Read,
            );
            match route {
                Route::Page => (
                    200,
                    "text/html; charset=utf-8",
                    super::page::render(&report),
                ),
                // The same object as `report --json`, under the same contract (`docs/json/report.json`).
                Route::Json => match crate::json::to_text(&report) {
                    Ok(b) => (200, "application/json", b),
                    Err(e) => (500, "text/plain; charset=utf-8", e.to_string()),
                },
            }
        }
        Err(refusal) => (
            refusal.status,
            "text/plain; charset=utf-8",
            format!("{}\n", refusal.message),
        ),
    };
    // The request line is the client's: both its words are shown escaped.
    let (method, url) = (crate::stdx::show_str(&method), crate::stdx::show_str(&url));
    ui.step(format_args!("{method} {url} -> {status}"));
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in common_headers() {
        response = response.header(name, value);
    }
    response = response.header("Content-Type", content_type);
    if status == 405 {
        response = response.header("Allow", "GET, HEAD");
    }
    response.body(body).unwrap_or_else(|e| {
        ui.step(format_args!("could not answer {method} {url}: {e}"));
        let mut failed = hyper::Response::new(String::new());
        *failed.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts() {
        let l = at("127.0.0.1:8422");
        for ok in ["127.0.0.1:8422", "localhost:8422", "LocalHost:8422"] {
            assert!(host_allowed(ok, l), "{ok}");
        }
        for bad in [
            "evil.example:8422",
            "127.0.0.1:8423",
            "127.0.0.2:8422",
            "localhost",
            "127.0.0.1",
            "[::1]:8422",
            "",
            "localhost.:8422",
            "127.0.0.1:8422:1",
        ] {
            assert!(!host_allowed(bad, l), "{bad}");
        }
        let v6 = at("[::1]:8422");
        assert!(host_allowed("[::1]:8422", v6));
        assert!(host_allowed("localhost:8422", v6));
        assert!(!host_allowed("[::1]", v6));
        assert!(!host_allowed("[::1]x", v6));
        let any = at("0.0.0.0:80");
        assert!(host_allowed("192.168.1.5", any));
        assert!(host_allowed("192.168.1.5:80", any));
        assert!(!host_allowed("nas.local", any), "a name can be rebound");
    }

    #[test]
    fn routes() {
        let l = at("127.0.0.1:8422");
        let host = Some("127.0.0.1:8422");
        assert_eq!(route("GET", "/", host, l), Ok(Route::Page));
        assert_eq!(route("HEAD", "/?refresh=1", host, l), Ok(Route::Page));
        assert_eq!(route("GET", "/status.json", host, l), Ok(Route::Json));
        assert_eq!(route("GET", "/x", host, l).unwrap_err().status, 404);
        for m in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            assert_eq!(route(m, "/", host, l).unwrap_err().status, 405, "{m}");
        }
        assert_eq!(
            route("GET", "/", Some("evil.example:8422"), l)
                .unwrap_err()
                .status,
            421
        );
        assert_eq!(route("GET", "/", None, l).unwrap_err().status, 421);
        assert_eq!(
            route("POST", "/", Some("evil:1"), l).unwrap_err().status,
            421,
            "the Host first"
        );
    }
}
