//! The HTTP transport under OpenDAL: counts requests by method (what a restore costs is measured, not guessed),
//! and for S3 signs every request itself (SigV4 through `reqsign`), so the keys stay in `cloud/` and a write can
//! carry Object Lock headers, which OpenDAL does not set: a write whose user metadata holds
//! [`LOCK_UNTIL_META`] leaves with `x-amz-object-lock-mode: COMPLIANCE` and that date instead, signed.
//!
//! Also the trust roots: the system's, plus the certificates of `AWS_CA_BUNDLE` when it is set (as the AWS tools
//! honour it; OpenDAL itself ignores the variable). The request goes out through reqwest as OpenDAL's own reqwest
//! transport sends it, except that its body is handed over in small frames, each noted ([`patience::Sent`]), so a
//! server that stops taking an upload, or answering it, is given up on about a minute after the last of it left
//! (`patience::IN_FLIGHT`), not after the whole body's time at the slowest uplink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue, Request, Response};
use opendal::{Buffer, HttpBody, HttpRedirect, HttpTransport};

use crate::cloud::patience;

/// The user-metadata key that asks for a locked write (its value: the retain-until date, RFC 3339 in UTC).
pub const LOCK_UNTIL_META: &str = "dbackup-lock-until";
const LOCK_UNTIL_HEADER: &str = "x-amz-meta-dbackup-lock-until";

/// Requests sent, by method (every attempt, retries included).
#[derive(Debug, Default)]
pub struct Counts {
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub post: AtomicU64,
    pub delete: AtomicU64,
    pub other: AtomicU64,
    /// Bytes of object content received by dbackup's reads (ranged reads and small objects read whole).
    pub downloaded: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    pub head: u64,
    pub get: u64,
    pub put: u64,
    pub post: u64,
    pub delete: u64,
    pub other: u64,
    /// Bytes of object content received (see [`Counts::downloaded`]).
    pub downloaded: u64,
}

impl Counts {
    pub fn snapshot(&self) -> Requests {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Requests {
            head: l(&self.head),
            get: l(&self.get),
            put: l(&self.put),
            post: l(&self.post),
            delete: l(&self.delete),
            other: l(&self.other),
            downloaded: l(&self.downloaded),
        }
    }

    /// `n` bytes of object content received.
    pub fn received(&self, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
    }

    fn count(&self, method: &http::Method) {
        let a = match *method {
            http::Method::HEAD => &self.head,
            http::Method::GET => &self.get,
            http::Method::PUT => &self.put,
            http::Method::POST => &self.post,
            http::Method::DELETE => &self.delete,
            _ => &self.other,
        };
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// SigV4 keys and the signer.
pub(crate) struct SigV4 {
    pub signer: reqsign_aws_v4::RequestSigner,
    pub credential: reqsign_aws_v4::Credential,
}

/// The transport every operator of a [`crate::cloud::Store`] uses.
#[derive(Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    sigv4: Option<Arc<SigV4>>,
    counts: Arc<Counts>,
    /// How long a server may be silent (`timeout_seconds`; see [`patience`]).
    quiet: std::time::Duration,
    /// Each object's silences in a row ([`patience::Stalls`]).
    stalls: Arc<patience::Stalls>,
}

impl Transport {
    pub fn new(
        client: reqwest::Client,
        sigv4: Option<SigV4>,
        counts: Arc<Counts>,
        (quiet, retries): (std::time::Duration, u32),
    ) -> Transport {
        Transport {
            client,
            sigv4: sigv4.map(Arc::new),
            counts,
            quiet,
            stalls: Arc::new(patience::Stalls::new(retries)),
        }
    }

    /// Signs `parts` (SigV4), after turning a lock request into Object Lock headers.
    pub(crate) async fn sign(&self, parts: &mut http::request::Parts) -> opendal::Result<()> {
        let Some(s) = &self.sigv4 else {
            return Ok(());
        };
        if let Some(until) = parts.headers.remove(LOCK_UNTIL_HEADER) {
            parts.headers.insert(
                HeaderName::from_static("x-amz-object-lock-mode"),
                HeaderValue::from_static("COMPLIANCE"),
            );
            parts.headers.insert(
                HeaderName::from_static("x-amz-object-lock-retain-until-date"),
                until,
            );
            // A locked write must carry a checksum (S3 asks for Content-MD5 or this; the CRC32C itself is sent).
            parts.headers.insert(
                HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
                HeaderValue::from_static("CRC32C"),
            );
        }
        // Anything a previous signing left (a retried request) goes, so the signature covers what is sent.
        for h in [
            "authorization",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
        ] {
            parts.headers.remove(h);
        }
        reqsign_core::SignRequest::sign_request(
            &s.signer,
            &reqsign_core::Context::new(),
            parts,
            Some(&s.credential),
            None,
        )
        .await
        .map_err(|e| {
            opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!("cannot sign the request: {}", e.kind_words()),
            )
        })?;
        // As OpenDAL does: the client sets `Host` from the URL.
        parts.headers.remove(http::header::HOST);
        Ok(())
    }
}

/// A short description of a signing error that cannot hold a secret.
trait KindWords {
    fn kind_words(&self) -> String;
}

impl KindWords for reqsign_core::Error {
    fn kind_words(&self) -> String {
        format!("{:?}", self.kind())
    }
}

impl HttpTransport for Transport {
    async fn fetch(&self, req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        let (mut parts, body) = req.into_parts();
        self.counts.count(&parts.method);
        self.sign(&mut parts).await?;
        let on = patience::On {
            host: parts
                .uri
                .authority()
                .map_or_else(|| "the server".to_string(), ToString::to_string),
            object: object(&parts),
            stalls: self.stalls.clone(),
        };
        let wait = patience::answer_wait(self.quiet, body.len() as u64);
        let sent = Arc::new(patience::Sent::new());
        let fetch = self.send(parts, body, sent.clone());
        let answer = patience::watched(fetch, wait, &sent, &on).await?;
        let quiet = self.quiet;
        Ok(answer.map(|body| body.map_inner(|s| Box::new(patience::Quiet::new(s, quiet, on)))))
    }
}

/// What a request's silences are counted by ([`patience::Stalls`]): its path (an object, a bucket's listing), and
/// for a part of a multipart upload its number (S3's `partNumber=`, B2's `X-Bz-Part-Number`), so that the parts of
/// one object, sent side by side, are counted apart. Before, every part of an object counted in one count: two
/// parts silent at once used up a part's attempts.
fn object(parts: &http::request::Parts) -> String {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let part = query
        .split('&')
        .find_map(|q| q.strip_prefix("partNumber="))
        .or_else(|| {
            parts
                .headers
                .get("x-bz-part-number")
                .and_then(|v| v.to_str().ok())
        });
    match part {
        Some(n) => format!("{path} part {n}"),
        None => path.to_string(),
    }
}

/// The frames a request's body is handed to the client in: each one taken is progress ([`patience::Sent`]). 16 KiB:
/// a second of the slowest uplink.
const FRAME: usize = 16 << 10;

/// A request's body, handed to the client [`FRAME`] bytes at a time, each noted in `sent` when taken.
struct Sending {
    rest: Buffer,
    sent: Arc<patience::Sent>,
}

impl http_body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use bytes::Buf;
        let n = self.rest.chunk().len().min(FRAME);
        if n == 0 {
            return std::task::Poll::Ready(None);
        }
        let frame = self.rest.slice(..n).to_bytes();
        self.rest.advance(n);
        self.sent.took();
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// An answer's body as OpenDAL takes it: its chunks (empty ones left out), an error naming the URL.
struct Answer<S> {
    inner: S,
    uri: http::Uri,
}

impl<S> futures_core::Stream for Answer<S>
where
    S: futures_core::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    type Item = opendal::Result<Buffer>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            let item = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
            return std::task::Poll::Ready(match item {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => Some(Ok(Buffer::from(b))),
                Some(Err(e)) => Some(Err(opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    "read data from http response",
                )
                .with_operation("reqwest::fetch")
                .with_context("url", self.uri.to_string())
                .set_temporary_if(temporary(&e))
                .set_source(e.without_url()))),
                None => None,
            });
        }
    }
}

/// `set_temporary` when `yes`.
trait TemporaryIf {
    fn set_temporary_if(self, yes: bool) -> Self;
}

impl TemporaryIf for opendal::Error {
    fn set_temporary_if(self, yes: bool) -> Self {
        if yes { self.set_temporary() } else { self }
    }
}

/// Whether a reqwest error is worth retrying (sending the request, or its body or the answer's, failed), as OpenDAL's
/// reqwest transport judges it.
fn temporary(err: &reqwest::Error) -> bool {
    err.is_request() || err.is_body() || err.is_decode()
}

impl Transport {
    /// Sends the request through reqwest as `opendal-http-transport-reqwest` 0.59.5 does (a redirect OpenDAL reuses
    /// gets no credentials across origins; the answer's length checked unless HEAD or encoded), its body in
    /// [`Sending`]'s frames.
    async fn send(
        &self,
        mut parts: http::request::Parts,
        body: Buffer,
        sent: Arc<patience::Sent>,
    ) -> opendal::Result<Response<HttpBody>> {
        let uri = parts.uri.clone();
        let is_head = parts.method == http::Method::HEAD;
        let original = uri.to_string();
        let redirect = parts.extensions.get::<HttpRedirect>().cloned();
        let target = redirect
            .as_ref()
            .map_or(original.as_str(), |r| r.uri().original_uri());
        let url = reqwest::Url::parse(target).map_err(|err| {
            opendal::Error::new(opendal::ErrorKind::Unexpected, "request url is invalid")
                .with_operation("reqwest::fetch")
                .with_context("url", original.clone())
                .set_source(err)
        })?;
        if redirect.is_some() {
            let from = reqwest::Url::parse(&original).map_err(|err| {
                opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    "original request url is invalid",
                )
                .set_source(err)
            })?;
            if from.origin() != url.origin() {
                for name in [
                    "authorization",
                    "proxy-authorization",
                    "cookie",
                    "cookie2",
                    "www-authenticate",
                ] {
                    parts
                        .headers
                        .insert(HeaderName::from_static(name), HeaderValue::from_static(""));
                }
            }
        }
        let mut request = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .version(parts.version);
        if !body.is_empty() {
            request = request.body(reqwest::Body::wrap(Sending { rest: body, sent }));
        }
        let mut resp = request.send().await.map_err(|err| {
            opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
                .with_operation("reqwest::send")
                .with_context("url", original.clone())
                .set_temporary_if(temporary(&err))
                .set_source(err.without_url())
        })?;
        let length = if is_head || opendal::raw::parse_content_encoding(resp.headers())?.is_some() {
            None
        } else {
            opendal::raw::parse_content_length(resp.headers())?
        };
        let mut answer = Response::builder()
            .status(resp.status())
            .extension(uri.clone())
            .version(resp.version());
        if let Ok(reached) = resp.url().as_str().parse::<http::Uri>()
            && reached != uri
        {
            let redirect = redirect
                .filter(|r| r.uri().original_uri() == resp.url().as_str())
                .unwrap_or_else(|| HttpRedirect::new(reached));
            answer = answer.extension(redirect);
        }
        if let Some(headers) = answer.headers_mut() {
            std::mem::swap(headers, resp.headers_mut());
        }
        let stream = Answer {
            inner: resp.bytes_stream(),
            uri,
        };
        answer.body(HttpBody::new(stream, length)).map_err(|e| {
            opendal::Error::new(opendal::ErrorKind::Unexpected, "cannot build the answer")
                .set_source(e)
        })
    }
}

/// The HTTP client: rustls with ring, the system's trust roots, plus those of `AWS_CA_BUNDLE` when `https` and the
/// variable is set. A bundle that cannot be read or holds no certificate is an error naming the variable (rclone
/// 1.60 fails every call with an opaque `LoadCustomCABundleError` instead).
pub(crate) fn client(
    https: bool,
    ca_bundle: Option<&std::path::Path>,
    connect_timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder().connect_timeout(connect_timeout);
    if https && let Some(path) = ca_bundle {
        let pem = read_bundle(path).map_err(|e| {
            format!(
                "AWS_CA_BUNDLE names {}, which cannot be read ({e}); fix the path or unset the variable",
                path.display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                format!(
                    "AWS_CA_BUNDLE names {}, which holds no PEM certificate; fix the path or unset the variable",
                    path.display()
                )
            })?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A trust bundle: the user's own file (a symlink is fine: `/etc/ssl/certs/...` often is), at most 16 MiB.
fn read_bundle(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(16 << 20)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// rustls's process-wide provider: ring (as the notifications' client uses), once.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one first: that one is as good. ring's provider is
        // deprecated in rustls 0.23.4x for lacking post-quantum key exchange, which only aws-lc-rs (a C and
        // assembly build) offers; ureq's notifications use ring too.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, part_header: Option<&str>) -> http::request::Parts {
        let mut b = Request::builder().method("PUT").uri(uri);
        if let Some(n) = part_header {
            b = b.header("x-bz-part-number", n);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// The silences of a multipart upload's parts are counted apart (S3's `partNumber=`, B2's header), those of an
    /// object's reads and listings by the path alone.
    #[test]
    fn each_part_of_an_upload_is_counted_apart() {
        let one = object(&parts(
            "http://h/b/p/docs.tar?partNumber=1&uploadId=x",
            None,
        ));
        let two = object(&parts(
            "http://h/b/p/docs.tar?uploadId=x&partNumber=2",
            None,
        ));
        assert_eq!(one, "/b/p/docs.tar part 1");
        assert_eq!(two, "/b/p/docs.tar part 2");
        assert_eq!(
            object(&parts("http://h/b/p/docs.tar", None)),
            "/b/p/docs.tar"
        );
        assert_eq!(
            object(&parts("http://h/b/p/?list-type=2&prefix=x", None)),
            "/b/p/"
        );
        assert_eq!(
            object(&parts("http://h/b2api/v2/b2_upload_part/id", Some("3"))),
            "/b2api/v2/b2_upload_part/id part 3"
        );
    }
}
