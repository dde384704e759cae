//! `dbackup serve`: the status page over HTTP, made fresh for each request, and `/status.json` (the report with its
//! history). Read-only and stateless: GET and HEAD only (405 otherwise), no cookies, nothing written anywhere (drives
//! are looked at without the writability probe). A request whose `Host` is neither the listen address nor
//! `localhost` is refused with 421, so that a web page elsewhere cannot reach it through DNS rebinding.
//!
//! The server is `tiny_http`: small and synchronous, like the rest of dbackup (no async runtime for a page a person
//! opens now and then). Requests are answered one after the other; SIGTERM or SIGINT (caught by `crate::interrupt`)
//! stops the loop within [`POLL`], and the run exits 0.
//!
//! tiny_http 0.12 has one known fault this module works around ([`nudge`]): a worker thread of its pool panics on a
//! client that reset its connection before it was read (tiny-http PR #285, not released), and connections the pool
//! had queued for the dead workers then wait until another connection comes.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use chrono::Local;

use crate::settings::Settings;
use crate::ui::Ui;

/// How often the loop looks at the stop flag while no request comes.
pub const POLL: Duration = Duration::from_millis(200);

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

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// The headers of every answer: no caching, no sniffing, no framing, no referrer, and the page's policy.
fn common_headers() -> Vec<tiny_http::Header> {
    vec![
        header("Cache-Control", "no-store"),
        header("X-Content-Type-Options", "nosniff"),
        header("X-Frame-Options", "DENY"),
        header("Referrer-Policy", "no-referrer"),
        header(
            "Content-Security-Policy",
            &format!(
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
    // SIGTERM and SIGINT set a flag (`crate::interrupt`) that the loop looks at between requests.
    crate::interrupt::install(crate::process::stop_at_once)?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("cannot serve on {listen}: {e}"))?;
    crate::outln!("http://{listen}/");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    ui.info(format_args!(
        "dbackup serve: the status page is at http://{listen}/ (read-only; SIGTERM or Ctrl-C stops)"
    ));
    let mut panics_seen = crate::process::upstream_panics();
    while crate::interrupt::requested().is_none() {
        // One connection of our own for each worker that died, and a quick look again while they die.
        let died = crate::process::upstream_panics().wrapping_sub(panics_seen);
        panics_seen = panics_seen.wrapping_add(died);
        for _ in 0..died.min(NUDGES) {
            nudge(listen);
        }
        let wait = if died > 0 { NUDGE_POLL } else { POLL };
        let request = match server.recv_timeout(wait) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::anyhow!("cannot accept a request on {listen}: {e}")),
        };
        answer(settings, listen, request, ui);
    }
    // The signal is how a server ends: the run ends ok, not "interrupted".
    let sig = crate::interrupt::acknowledge().map_or("a signal", |i| i.signal_name());
    ui.info(format_args!("dbackup serve: stopped ({sig})"));
    Ok(())
}

/// At most this many [`nudge`]s at once (a barrage of resets kills workers by the hundred).
const NUDGES: usize = 32;

/// How soon the loop looks again after nudging: the workers the nudges started may die on the queue in turn.
const NUDGE_POLL: Duration = Duration::from_millis(10);

/// Brings tiny_http's worker pool back after its workers panicked: one connection of our own, closed at once.
///
/// tiny_http hands each connection to an idle worker by queueing it, and starts a worker only when none is idle. When
/// the clients of many queued connections reset them, the workers that take them panic and end without taking the
/// rest of the queue, and the pool is left with no worker and connections waiting in it, a user's among them (seen:
/// 55 waiting after 640 resets, answered only when the next connection came). This connection is that next one: it
/// finds no idle worker, so tiny_http starts one, which takes the queue. A worker that panics on the way (the queue holds
/// more reset connections) counts another panic, and the loop nudges again, once for each: one nudge a poll drained a
/// queue of 55 in 23 s. The connection closes cleanly (no reset): its worker reads the end of it
/// and waits for more.
fn nudge(listen: SocketAddr) {
    let mut to = listen;
    if to.ip().is_unspecified() {
        to.set_ip(match to.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    // Nothing to do when it fails: the next client's connection does the same.
    let _ = std::net::TcpStream::connect_timeout(&to, POLL);
}

fn answer(settings: &Settings, listen: SocketAddr, request: tiny_http::Request, ui: &Ui) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_string());
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
                    super::page::render(&report).into_bytes(),
                ),
                // The same object as `report --json`, under the same contract (`docs/json/report.json`).
                Route::Json => match crate::json::to_text(&report) {
                    Ok(b) => (200, "application/json", b.into_bytes()),
                    Err(e) => (500, "text/plain; charset=utf-8", e.to_string().into_bytes()),
                },
            }
        }
        Err(refusal) => (
            refusal.status,
            "text/plain; charset=utf-8",
            format!("{}\n", refusal.message).into_bytes(),
        ),
    };
    // The request line is the client's: both its words are shown escaped.
    let (method, url) = (crate::stdx::show_str(&method), crate::stdx::show_str(&url));
    ui.step(format_args!("{method} {url} -> {status}"));
    let mut response = tiny_http::Response::from_data(body).with_status_code(status);
    for h in common_headers() {
        response.add_header(h);
    }
    response.add_header(header("Content-Type", content_type));
    if status == 405 {
        response.add_header(header("Allow", "GET, HEAD"));
    }
    if let Err(e) = request.respond(response) {
        ui.step(format_args!("could not answer {method} {url}: {e}"));
    }
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
