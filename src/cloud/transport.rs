//! The HTTP transport under OpenDAL: counts requests by method (what a restore costs is measured, not guessed),
//! and for S3 signs every request itself (SigV4 through `reqsign`), so the keys stay in `cloud/` and a write can
//! carry Object Lock headers, which OpenDAL does not set: a write whose user metadata holds
//! [`LOCK_UNTIL_META`] leaves with `x-amz-object-lock-mode: COMPLIANCE` and that date instead, signed.
//!
//! Also the trust roots: the system's, plus the certificates of `AWS_CA_BUNDLE` when it is set (as the AWS tools
//! honour it; OpenDAL itself ignores the variable).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue, Request, Response};
use opendal::{Buffer, HttpBody, HttpTransport};
use opendal_http_transport_reqwest::ReqwestTransport;

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
    inner: ReqwestTransport,
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
            inner: ReqwestTransport::new(client),
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
            object: parts.uri.path().to_string(),
            stalls: self.stalls.clone(),
        };
        let wait = patience::answer_wait(self.quiet, body.len() as u64);
        let fetch = self.inner.fetch(Request::from_parts(parts, body));
        let answer = patience::watched(fetch, wait, &on).await?;
        let quiet = self.quiet;
        Ok(answer.map(|body| body.map_inner(|s| Box::new(patience::Quiet::new(s, quiet, on)))))
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
