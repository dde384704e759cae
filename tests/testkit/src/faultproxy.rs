//! A fault-injecting HTTP/1.1 proxy in front of an object store ([`super::objstore`]): it forwards each request
//! unchanged (the `Host` header too, which SigV4 signs), logs it (method, path, query, status), and follows rules
//! such as "answer the 2nd PUT of `backups/LATEST` with 503" or "reset the connection": what a real bucket behind a
//! real network does now and then, and Garage or moto never. It reads HTTP/1.1 framing (`Content-Length`, chunked
//! bodies, keep-alive), so every request on a kept-alive connection is seen. Std only; one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a rule does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not forwarded: answered with this status (500, 503, ...) and an S3 XML error; the connection is kept.
    Status(u16),
    /// Not forwarded: the client's connection reset (RST) once its request was read.
    Reset,
    /// Forwarded and done by the server, but its answer is lost: the client's connection reset instead.
    LoseAnswer,
    /// Not forwarded: the request is read and never answered; the connection is held open (until the proxy is
    /// dropped), as a server that hangs.
    Hang,
    /// Forwarded; the answer's head at once, its body at this many bytes a second: a slow but progressing link.
    Trickle(u64),
    /// Forwarded, the request's body taken from the client at this many bytes a second: a slow uplink.
    SlowUpload(u64),
    /// Forwarded; the answer's head and this many bytes of its body, then nothing more, the connection held open.
    Stall(u64),
}

/// Which of the requests a rule matches it acts on (counted from 1, per rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Nth(usize),
    /// The n-th and every one after it.
    From(usize),
    Every,
}

/// A rule: the requests whose method is `method` and whose path contains `path` (and query contains `query`).
#[derive(Debug, Clone)]
pub struct Rule {
    method: String,
    path: String,
    query: String,
    which: Which,
    fault: Fault,
    matched: usize,
}

impl Rule {
    /// Every request of `method` whose path contains `path`.
    pub fn new(method: &str, path: &str, fault: Fault) -> Rule {
        Rule {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            which: Which::Every,
            fault,
            matched: 0,
        }
    }

    /// Only those whose query contains `query` (`partNumber=2&`, `uploads`).
    pub fn query(mut self, query: &str) -> Rule {
        self.query = query.to_string();
        self
    }

    pub fn which(mut self, which: Which) -> Rule {
        self.which = which;
        self
    }

    /// Counts the request when it matches; the fault when this one is to get it.
    fn apply(&mut self, method: &str, path: &str, query: &str) -> Option<Fault> {
        if method != self.method || !path.contains(&self.path) || !query.contains(&self.query) {
            return None;
        }
        self.matched += 1;
        let hit = match self.which {
            Which::Nth(n) => self.matched == n,
            Which::From(n) => self.matched >= n,
            Which::Every => true,
        };
        hit.then_some(self.fault)
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path, percent-encoded as sent (`/bucket/prefix/backups/LATEST`).
    pub path: String,
    /// The query without its `?` (empty when none).
    pub query: String,
    /// The status the client got; `None` when its connection was reset.
    pub status: Option<u16>,
    /// Whether a rule acted on it.
    pub faulted: bool,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status.map_or("reset".to_string(), |s| s.to_string());
        let q = if self.query.is_empty() { "" } else { "?" };
        let mark = if self.faulted { " (injected)" } else { "" };
        write!(
            f,
            "{} {}{q}{} -> {status}{mark}",
            self.method, self.path, self.query
        )
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// The proxy: listens on a port of [`super::objstore::free_port`] until dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16) -> Result<FaultProxy, String> {
        let port = super::objstore::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("faultproxy-{port}"))
            .spawn(move || {
                for client in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("faultproxy-{port}-conn"))
                        .spawn(move || {
                            let _ = serve(client, upstream, &s);
                        });
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(FaultProxy {
            port,
            shared,
            accept: Some(accept),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule; the first rule that acts on a request decides (every rule that matches counts it).
    pub fn add(&self, rule: Rule) {
        lock(&self.shared.rules).push(rule);
    }

    /// Removes every rule (the requests after it are forwarded as they are).
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// The requests answered (or reset) so far, in that order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the requests seen so far.
    pub fn forget(&self) {
        lock(&self.shared.log).clear();
    }

    /// The log, one request a line (for a failing assertion's message).
    pub fn shown(&self) -> String {
        self.seen().iter().map(|s| format!("  {s}\n")).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An HTTP message's head: its first line and its header lines, as read (each with its CRLF).
struct Head {
    first: String,
    raw: Vec<u8>,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Reads a head (`None` at a clean end of the stream before one).
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first = String::new();
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&line);
        if raw.len() > 1 << 20 {
            return Err(std::io::Error::other("a head of more than 1 MiB"));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first.is_empty() {
            first = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            let (name, value) = (
                name.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            );
            match name.as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
    }
    Ok(Some(Head {
        first,
        raw,
        length,
        chunked,
        close,
    }))
}

/// Copies a body framed as `head` says into `out` (`None`: read and dropped). `until_close`: a response with
/// neither length nor chunks runs to the end of the stream.
fn copy_body(
    r: &mut impl BufRead,
    head: &Head,
    until_close: bool,
    mut out: Option<&mut dyn Write>,
) -> std::io::Result<()> {
    let mut put = |bytes: &[u8]| match out.as_mut() {
        Some(w) => w.write_all(bytes),
        None => Ok(()),
    };
    if head.chunked {
        loop {
            let mut size_line = Vec::new();
            if r.read_until(b'\n', &mut size_line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            put(&size_line)?;
            let text = String::from_utf8_lossy(&size_line);
            let hex = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(hex, 16).map_err(std::io::Error::other)?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    put(&line)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            copy_exact(r, size + 2, &mut put)?;
        }
    } else if let Some(n) = head.length {
        copy_exact(r, n, &mut put)
    } else if until_close {
        let mut buf = [0u8; 64 << 10];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            put(&buf[..n])?;
        }
    } else {
        Ok(())
    }
}

fn copy_exact(
    r: &mut impl Read,
    mut n: u64,
    put: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 64 << 10];
    while n > 0 {
        let want = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        put(&buf[..got])?;
        n -= got as u64;
    }
    Ok(())
}

/// Resets a connection: `SO_LINGER` 0, then closed (the peer gets RST, not FIN). The error is setsockopt's (the
/// stream is then closed as usual).
pub fn reset(stream: TcpStream) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a `linger` of the size given.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(stream);
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Holds a connection (its thread) until the proxy is dropped: a server that no longer answers.
fn hold(shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A writer passing bytes on at `rate` a second (a tenth of it every 100 ms), or stopping for good after `stall`
/// bytes (`stalled`, and an error to the copy).
struct Paced<'a> {
    out: &'a mut TcpStream,
    rate: u64,
    stall: Option<u64>,
    written: u64,
    stalled: bool,
}

impl<'a> Paced<'a> {
    fn new(out: &'a mut TcpStream, rate: u64, stall: Option<u64>) -> Paced<'a> {
        Paced {
            out,
            rate: rate.max(10),
            stall,
            written: 0,
            stalled: false,
        }
    }
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut n = usize::try_from(self.rate / 10)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if let Some(stall) = self.stall {
            let left = stall.saturating_sub(self.written);
            if left == 0 {
                self.stalled = true;
                return Err(std::io::Error::other("stalled on purpose"));
            }
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        self.out.write_all(&buf[..n])?;
        self.out.flush()?;
        self.written += n as u64;
        std::thread::sleep(std::time::Duration::from_millis(100));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The S3 error answer for `status`.
fn error_answer(status: u16) -> Vec<u8> {
    let (reason, code) = match status {
        500 => ("Internal Server Error", "InternalError"),
        503 => ("Service Unavailable", "SlowDown"),
        _ => ("Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test \
         proxy</Message><RequestId>faultproxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one client connection: each request read whole, then faulted or forwarded on one upstream connection.
fn serve(client: TcpStream, upstream: u16, shared: &Shared) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let mut up: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while let Some(req) = read_head(&mut from_client)? {
        let mut words = req.first.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (path, query) = (path.to_string(), query.to_string());
        let fault = lock(&shared.rules).iter_mut().fold(None, |got, r| {
            let f = r.apply(&method, &path, &query);
            got.or(f)
        });
        let log = |status: Option<u16>, faulted: bool| {
            lock(&shared.log).push(Seen {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                status,
                faulted,
            })
        };
        match fault {
            Some(Fault::Status(code)) => {
                copy_body(&mut from_client, &req, false, None)?;
                to_client.write_all(&error_answer(code))?;
                log(Some(code), true);
                continue;
            }
            Some(Fault::Reset) => {
                log(None, true);
                let _ = reset(to_client);
                return Ok(());
            }
            Some(Fault::Hang) => {
                copy_body(&mut from_client, &req, false, None)?;
                log(None, true);
                hold(shared);
                return Ok(());
            }
            Some(
                Fault::LoseAnswer | Fault::Trickle(_) | Fault::Stall(_) | Fault::SlowUpload(_),
            )
            | None => {}
        }
        if up.is_none() {
            let s = TcpStream::connect(("127.0.0.1", upstream))?;
            let r = BufReader::new(s.try_clone()?);
            up = Some((s, r));
        }
        let (up_w, up_r) = up.as_mut().expect("connected above");
        up_w.write_all(&req.raw)?;
        if let Some(Fault::SlowUpload(rate)) = fault {
            copy_body(
                &mut from_client,
                &req,
                false,
                Some(&mut Paced::new(up_w, rate, None)),
            )?;
        } else {
            copy_body(&mut from_client, &req, false, Some(up_w))?;
        }
        // Interim answers (100 Continue) are passed on; the final one ends the request.
        let answer = loop {
            let Some(answer) = read_head(up_r)? else {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            };
            if !answer
                .first
                .split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with('1'))
            {
                break answer;
            }
            to_client.write_all(&answer.raw)?;
        };
        let status: Option<u16> = answer
            .first
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok());
        let bodiless = method == "HEAD" || matches!(status, Some(204 | 304));
        if fault == Some(Fault::LoseAnswer) {
            if !bodiless {
                copy_body(up_r, &answer, true, None)?;
            }
            log(None, true);
            let _ = reset(to_client);
            return Ok(());
        }
        to_client.write_all(&answer.raw)?;
        let paced = match fault {
            Some(Fault::Trickle(rate)) => Some(Paced::new(&mut to_client, rate, None)),
            Some(Fault::Stall(after)) => Some(Paced::new(&mut to_client, 64 << 10, Some(after))),
            _ => None,
        };
        let paced = match paced {
            None if matches!(fault, Some(Fault::SlowUpload(_))) => {
                Some(Paced::new(&mut to_client, u64::MAX, None))
            }
            p => p,
        };
        if let Some(mut paced) = paced {
            log(status, true);
            let got = if bodiless {
                Ok(())
            } else {
                copy_body(up_r, &answer, true, Some(&mut paced))
            };
            if paced.stalled {
                hold(shared);
                return Ok(());
            }
            got?;
        } else {
            if !bodiless {
                copy_body(up_r, &answer, true, Some(&mut to_client))?;
            }
            to_client.flush()?;
            log(status, false);
        }
        if answer.close || req.close || (!bodiless && answer.length.is_none() && !answer.chunked) {
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A tiny upstream answering every request with 200 and its request line as the body, keeping the connection;
    /// the bodies of PUTs (by length or chunked) are read whole.
    fn echo_server() -> u16 {
        let port = super::super::objstore::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            for c in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let mut r = BufReader::new(c);
                    while let Ok(Some(h)) = read_head(&mut r) {
                        let mut body = Vec::new();
                        copy_body(&mut r, &h, false, Some(&mut body)).unwrap();
                        let text = format!("{} {}", h.first, body.len());
                        let head = h.first.starts_with("HEAD ");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                            text.len(),
                            if head { "" } else { &text }
                        );
                        w.write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        port
    }

    /// Sends `request` on `s` and reads one answer: its status line and body.
    fn ask(
        s: &mut BufReader<TcpStream>,
        request: &str,
        head: bool,
    ) -> std::io::Result<(String, String)> {
        s.get_mut().write_all(request.as_bytes())?;
        let h = read_head(s)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let mut body = Vec::new();
        if !head {
            copy_body(s, &h, false, Some(&mut body))?;
        }
        Ok((h.first, String::from_utf8_lossy(&body).into_owned()))
    }

    /// On one kept-alive connection: requests forwarded unchanged (a chunked body too, a HEAD's answer has no
    /// body), the 2nd PUT of a key answered 503 with an S3 error without reaching the server, every request
    /// logged with its status; then a reset rule resets the connection.
    #[test]
    fn the_proxy_forwards_logs_and_injects_faults_on_a_kept_alive_connection() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        proxy.add(Rule::new("PUT", "/b/LATEST", Fault::Status(503)).which(Which::Nth(2)));
        let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut s = BufReader::new(s);
        let put = "PUT /b/LATEST HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            ask(&mut s, put, false).unwrap(),
            ("HTTP/1.1 200 OK".into(), "PUT /b/LATEST HTTP/1.1 5".into())
        );
        let (status, body) = ask(&mut s, put, false).unwrap();
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        let chunked = "PUT /b/x?partNumber=1&uploadId=u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            ask(&mut s, chunked, false).unwrap().1,
            "PUT /b/x?partNumber=1&uploadId=u HTTP/1.1 20"
        );
        assert_eq!(
            ask(&mut s, "HEAD /b/LATEST HTTP/1.1\r\nHost: h\r\n\r\n", true)
                .unwrap()
                .0,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(ask(&mut s, put, false).unwrap().0, "HTTP/1.1 200 OK");

        proxy.add(Rule::new("GET", "/b/", Fault::Reset));
        let reset = ask(&mut s, "GET /b/LATEST HTTP/1.1\r\nHost: h\r\n\r\n", false).unwrap_err();
        assert!(
            matches!(
                reset.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ),
            "{reset:?}"
        );
        let seen: Vec<String> = proxy.seen().iter().map(ToString::to_string).collect();
        assert_eq!(
            seen,
            [
                "PUT /b/LATEST -> 200",
                "PUT /b/LATEST -> 503 (injected)",
                "PUT /b/x?partNumber=1&uploadId=u -> 200",
                "HEAD /b/LATEST -> 200",
                "PUT /b/LATEST -> 200",
                "GET /b/LATEST -> reset (injected)",
            ]
        );
    }
}
