//! [`Store`]: a cloud destination's bucket (under its prefix) as the rest of dbackup uses it, on OpenDAL's S3 and
//! B2 services: streamed multipart uploads in bounded memory with a per-part CRC32C the server checks, ranged
//! `Read + Seek` reads, listing, deletion, writes with Object Lock retention, a storage class per object kind, and
//! (S3) the unfinished multipart uploads a killed run leaves, found and aborted. Retries with exponential backoff
//! and jitter, a timeout per request and the bandwidth limit are OpenDAL layers (the few calls OpenDAL lacks are
//! retried the same way). Synchronous: a private tokio runtime runs the requests.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use opendal::Operator;
use opendal::layers::{RetryLayer, ThrottleLayer, TimeoutLayer};
use opendal::raw::oio::ReadStream;
use serde::Serialize;

use crate::cloud::credentials::{self, Keys};
use crate::cloud::error::{CloudError, Failure, explain};
use crate::cloud::patience;
use crate::cloud::transport::{self, Counts, LOCK_UNTIL_META, Requests, SigV4, Transport};
use crate::expand::Env;
use crate::settings::{CloudKind, CloudSettings};

/// The size of one part of a multipart upload: memory held per upload is at most [`CONCURRENT_PARTS`] + 1 of them.
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once.
pub const CONCURRENT_PARTS: usize = 2;
/// The most a listing of unfinished uploads or a small object read by [`Store::get`] may hold.
const MAX_SMALL: u64 = 16 << 20;

/// Which storage class an object gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    /// Archives: `storage_class.archives` (may be cold).
    Archive,
    /// Everything else: `storage_class.metadata`.
    Metadata,
}

/// An object in the bucket, its key relative to the destination's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// A multipart upload begun and never completed nor aborted (its parts are stored, and billed, until aborted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    /// The key relative to the prefix.
    pub key: String,
    #[serde(skip)]
    pub upload_id: String,
    pub initiated: Option<String>,
}

/// A cloud destination opened for use.
pub struct Store {
    name: String,
    place: String,
    kind: CloudKind,
    rt: tokio::runtime::Runtime,
    /// Metadata-class writes, reads, listings, deletions.
    op: Operator,
    /// Archive-class writes.
    archive_op: Operator,
    transport: Transport,
    /// S3: the bucket's base URL (`endpoint/bucket` or `scheme://bucket.host`), for the calls OpenDAL lacks.
    bucket_url: String,
    /// The prefix in the bucket, with a trailing `/` (or empty).
    prefix: String,
    /// What a message must never show.
    secrets: Vec<String>,
    counts: Arc<Counts>,
    source: credentials::Source,
    /// Retries of a failed request ([`Store::call`] retries as OpenDAL's `RetryLayer` does).
    retries: u32,
}

impl Store {
    /// Opens a destination: reads its keys, builds its operators (no request is sent yet). `now` picks the
    /// bandwidth limit in force (a run keeps the limit it started with).
    pub fn open(
        cloud: &CloudSettings,
        env: &Env,
        now: chrono::NaiveTime,
    ) -> Result<Store, CloudError> {
        let keys = credentials::resolve(cloud, env)?;
        Store::with_keys(cloud, keys, env, now)
    }

    /// Opens a destination with the keys given.
    pub fn with_keys(
        cloud: &CloudSettings,
        keys: Keys,
        env: &Env,
        now: chrono::NaiveTime,
    ) -> Result<Store, CloudError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dbackup-cloud")
            .enable_all()
            .build()
            .map_err(|e| CloudError::Setup(format!("cannot start the cloud runtime: {e}")))?;
        let endpoint = endpoint(cloud);
        let https = !endpoint.starts_with("http://");
        let client = transport::client(
            https,
            env.var("AWS_CA_BUNDLE").map(std::path::Path::new),
            Duration::from_secs(u64::from(cloud.timeout_seconds.min(30))),
        )
        .map_err(CloudError::Setup)?;
        let counts = Arc::new(Counts::default());
        let sigv4 = (cloud.kind == CloudKind::S3).then(|| SigV4 {
            signer: reqsign_aws_v4::RequestSigner::new("s3", &cloud.region),
            credential: reqsign_aws_v4::Credential {
                access_key_id: keys.id.expose().to_string(),
                secret_access_key: keys.secret.expose().to_string(),
                session_token: keys.session_token.as_ref().map(|t| t.expose().to_string()),
                expires_in: None,
            },
        });
        let quiet = Duration::from_secs(u64::from(cloud.timeout_seconds));
        let transport = Transport::new(client, sigv4, counts.clone(), (quiet, cloud.retries));
        let backstop = patience::backstop(quiet, PART_SIZE);
        let root = format!("/{}", cloud.prefix);
        let build = |class: Option<&str>| -> Result<Operator, opendal::Error> {
            let op = match cloud.kind {
                CloudKind::S3 => {
                    let mut b = opendal::services::S3::default()
                        .root(&root)
                        .bucket(&cloud.bucket)
                        .endpoint(&endpoint)
                        .region(&cloud.region)
                        .disable_config_load()
                        .disable_ec2_metadata()
                        .skip_signature()
                        .checksum_algorithm("crc32c");
                    if !cloud.path_style {
                        b = b.enable_virtual_host_style();
                    }
                    if let Some(c) = class {
                        b = b.default_storage_class(c);
                    }
                    Operator::new(b)?
                }
                CloudKind::B2 => Operator::new(
                    opendal::services::B2::default()
                        .root(&root)
                        .bucket(&cloud.bucket)
                        .bucket_id(cloud.bucket_id.as_deref().unwrap_or_default())
                        .application_key_id(keys.id.expose())
                        .application_key(keys.secret.expose()),
                )?,
            };
            let op = op.with_context(
                opendal::OperationContext::new()
                    .with_http_transport(opendal::HttpTransporter::new(transport.clone())),
            );
            let mut op = op
                .layer(
                    TimeoutLayer::new()
                        .with_timeout(backstop)
                        .with_io_timeout(backstop),
                )
                .layer(
                    RetryLayer::new()
                        .with_max_times(cloud.retries as usize)
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(30))
                        .with_factor(2.0)
                        .with_jitter(),
                );
            if let Some(rate) = cloud.bwlimit.and_then(|b| b.rate_at(now)) {
                let rate = u32::try_from(rate).unwrap_or(u32::MAX);
                // The burst must hold the largest single write (a part): the limit is an average over parts.
                let burst = rate.max(u32::try_from(PART_SIZE + (1 << 20)).unwrap_or(u32::MAX));
                op = op.layer(ThrottleLayer::new(rate, burst));
            }
            Ok(op)
        };
        let secrets: Vec<String> = keys.secrets().iter().map(|s| s.to_string()).collect();
        let place = cloud.place();
        let fail = |e: opendal::Error| {
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let (failure, message) = explain(&e, "setting up", &place, &refs);
            CloudError::Service {
                destination: cloud.name.clone(),
                failure,
                message,
            }
        };
        let op = build(cloud.storage_class_metadata.as_deref()).map_err(fail)?;
        let archive_op = if cloud.storage_class_archives == cloud.storage_class_metadata {
            op.clone()
        } else {
            build(cloud.storage_class_archives.as_deref()).map_err(fail)?
        };
        let bucket_url = bucket_url(&endpoint, &cloud.bucket, cloud.path_style);
        let prefix = if cloud.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", cloud.prefix)
        };
        Ok(Store {
            name: cloud.name.clone(),
            place,
            kind: cloud.kind,
            rt,
            op,
            archive_op,
            transport,
            bucket_url,
            prefix,
            secrets,
            counts,
            source: keys.source,
            retries: cloud.retries,
        })
    }

    /// Where the keys came from (no secret).
    pub fn source(&self) -> &credentials::Source {
        &self.source
    }

    /// `s3 http://127.0.0.1:3900 bucket/prefix`.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// What OpenDAL was built with: (scheme, root, bucket), for tests and `--verbose`.
    #[cfg(test)]
    pub fn operator_info(&self) -> (String, String, String) {
        let info = self.op.info();
        (
            info.scheme().to_string(),
            info.root().to_string(),
            info.name().to_string(),
        )
    }

    /// The requests sent so far, by method.
    pub fn requests(&self) -> Requests {
        self.counts.snapshot()
    }

    /// Runs `fut` (requests with OpenDAL's retries) on the store's runtime; a signal ends it at once, in the pause
    /// between two attempts too ([`patience::unless_interrupted`]).
    fn run<T>(
        &self,
        fut: impl std::future::Future<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        self.rt.block_on(patience::unless_interrupted(fut))
    }

    fn err(&self, what: &str, e: opendal::Error) -> CloudError {
        service_error((&self.name, &self.place, &self.secrets), what, e)
    }

    fn op(&self, class: ObjectClass) -> &Operator {
        match class {
            ObjectClass::Archive => &self.archive_op,
            ObjectClass::Metadata => &self.op,
        }
    }

    /// Writes a small object in one request (with its CRC32C), replacing any object of that key.
    pub fn put(&self, key: &str, bytes: &[u8], class: ObjectClass) -> Result<(), CloudError> {
        self.put_with(key, bytes, class, None).map(|_| ())
    }

    /// Writes a small object with compliance-mode retention until `until`: neither this key nor any other may
    /// delete or overwrite it before then, if the bucket enforces Object Lock (see `cloud check`). Its version id,
    /// when the bucket keeps versions.
    pub fn put_locked(
        &self,
        key: &str,
        bytes: &[u8],
        class: ObjectClass,
        until: DateTime<Utc>,
    ) -> Result<Option<String>, CloudError> {
        self.put_with(key, bytes, class, Some(until))
    }

    /// Deletes one version of an object (in a versioned bucket, a plain delete only hides the object behind a
    /// delete marker: this removes the data, unless a lock forbids it).
    pub fn delete_version(&self, key: &str, version: &str) -> Result<(), CloudError> {
        self.run(async { self.op.delete_with(key).version(version).await })
            .map_err(|e| self.err(&format!("deleting {}", self.shown(key)), e))
    }

    fn put_with(
        &self,
        key: &str,
        bytes: &[u8],
        class: ObjectClass,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<String>, CloudError> {
        let op = self.op(class);
        let data = bytes.to_vec();
        self.run(async {
            let mut w = op.write_with(key, data);
            if let Some(until) = until {
                w = w.user_metadata(lock_meta(until));
            }
            w.await
        })
        .map(|m| m.version().map(str::to_string))
        .map_err(|e| self.err(&format!("writing {}", self.shown(key)), e))
    }

    /// A streamed upload: bytes written go out in parts of [`PART_SIZE`] ([`CONCURRENT_PARTS`] in flight), each
    /// with its CRC32C, which the server checks. [`Upload::finish`] completes it; an upload dropped unfinished (an
    /// error, an interruption) is aborted, so no part stays stored. `until`: Object Lock retention.
    pub fn upload(
        self: &Arc<Self>,
        key: &str,
        class: ObjectClass,
        until: Option<DateTime<Utc>>,
    ) -> Result<Upload, CloudError> {
        let op = self.op(class);
        let writer = self
            .run(async {
                let mut w = op
                    .writer_with(key)
                    .chunk(PART_SIZE)
                    .concurrent(CONCURRENT_PARTS);
                if let Some(until) = until {
                    w = w.user_metadata(lock_meta(until));
                }
                w.await
            })
            .map_err(|e| self.err(&format!("starting the upload of {}", self.shown(key)), e))?;
        Ok(Upload {
            store: self.clone(),
            key: key.to_string(),
            writer: Some(writer),
            buf: Vec::with_capacity(PART_SIZE),
            written: 0,
        })
    }

    /// Reads a small object whole, in one GET (no HEAD): an object larger than 16 MiB is refused, and no more
    /// than that of it is read.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
        let what = format!("reading {}", self.shown(key));
        // Async (not OpenDAL's blocking reader) so that a signal ends the pauses between its attempts too.
        let read = self.run(async {
            let mut stream = self.op.reader(key).await?.into_bytes_stream(..).await?;
            let mut bytes = Vec::new();
            while bytes.len() as u64 <= MAX_SMALL
                && let Some(chunk) = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
                })
                .await
            {
                let chunk = chunk.map_err(opendal_of)?;
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        });
        let bytes = match read {
            Ok(b) => b,
            Err(e) => return Err(self.err(&what, e)),
        };
        self.counts.received(bytes.len() as u64);
        if bytes.len() as u64 > MAX_SMALL {
            return Err(CloudError::Service {
                destination: self.name.clone(),
                failure: Failure::Other,
                message: format!(
                    "{what}: more than the {} MiB expected of it",
                    MAX_SMALL >> 20
                ),
            });
        }
        Ok(bytes)
    }

    /// A reader of an object that seeks: each read after a seek is one ranged GET (the size comes from one HEAD).
    /// Async under it (not OpenDAL's blocking reader), so that a signal ends the pauses between its attempts too.
    pub fn reader(&self, key: &str) -> Result<Reader, CloudError> {
        let what = format!("opening {}", self.shown(key));
        let meta = self
            .run(self.op.stat(key))
            .map_err(|e| self.err(&what, e))?;
        let inner = self
            .run(self.op.reader(key))
            .map_err(|e| self.err(&what, e))?;
        let (name, place, secrets) = (self.name.clone(), self.place.clone(), self.secrets.clone());
        let what = format!("reading {}", self.shown(key));
        Ok(Reader {
            inner,
            rt: self.rt.handle().clone(),
            stream: None,
            chunk: Vec::new(),
            at: 0,
            pos: 0,
            size: meta.content_length(),
            err: Box::new(move |e| service_error((&name, &place, &secrets), &what, e)),
        })
    }

    /// An object's size and date, or `None` when it does not exist.
    pub fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CloudError> {
        match self.run(self.op.stat(key)) {
            Ok(m) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.content_length(),
                last_modified: m.last_modified().map(|t| {
                    DateTime::<Utc>::from_timestamp(t.into_inner().as_second(), 0)
                        .unwrap_or_default()
                }),
            })),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&format!("looking at {}", self.shown(key)), e)),
        }
    }

    /// Every object under `dir` (a prefix ending in `/`, or empty for everything), recursively, sorted by key.
    pub fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, CloudError> {
        let what = format!(
            "listing {}",
            self.shown(if dir.is_empty() { "/" } else { dir })
        );
        let most = max_listed();
        // Taken one page at a time, so that a listing longer than any dbackup makes stops at `most` objects
        // instead of growing without bound.
        let listed = self
            .run(async {
                let mut lister = self.op.lister_with(dir).recursive(true).await?;
                let mut out = Vec::new();
                while let Some(e) = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut lister), cx)
                })
                .await
                {
                    let e = e?;
                    if !e.metadata().mode().is_file() {
                        continue;
                    }
                    if out.len() == most {
                        return Ok(None);
                    }
                    out.push(ObjectInfo {
                        key: e.path().trim_start_matches('/').to_string(),
                        size: e.metadata().content_length(),
                        last_modified: e.metadata().last_modified().map(|t| {
                            DateTime::<Utc>::from_timestamp(t.into_inner().as_second(), 0)
                                .unwrap_or_default()
                        }),
                    });
                }
                Ok(Some(out))
            })
            .map_err(|e| self.err(&what, e))?;
        let Some(mut out) = listed else {
            return Err(CloudError::Service {
                destination: self.name.clone(),
                failure: Failure::Other,
                message: format!(
                    "{what}: more than {most} objects, more than dbackup ever writes there; give this destination \
                     a prefix of its own (\"prefix\" in the config), or remove what another program put there"
                ),
            });
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object (deleting one that does not exist is no error).
    pub fn delete(&self, key: &str) -> Result<(), CloudError> {
        self.run(self.op.delete(key))
            .map_err(|e| self.err(&format!("deleting {}", self.shown(key)), e))
    }

    /// The multipart uploads under `dir` begun and never completed or aborted (S3; B2's native API: none are
    /// looked for, an empty list).
    pub fn unfinished_uploads(&self, dir: &str) -> Result<Vec<Unfinished>, CloudError> {
        if self.kind != CloudKind::S3 {
            return Ok(Vec::new());
        }
        let what = "listing unfinished uploads";
        let full = format!("{}{dir}", self.prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        // Bounded: 1000 uploads a page, 100 pages.
        for _ in 0..100 {
            let mut query = format!("uploads&prefix={}", encode(&full));
            if !key_marker.is_empty() {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(&key_marker),
                    encode(&id_marker)
                ));
            }
            let body = self.call(http::Method::GET, "", &query, what)?;
            let page = parse_uploads(&body).map_err(|e| CloudError::Service {
                destination: self.name.clone(),
                failure: Failure::Other,
                message: format!("{what}: the server's answer is not a listing ({e})"),
            })?;
            for u in page.uploads {
                if let Some(key) = u.key.strip_prefix(&self.prefix) {
                    out.push(Unfinished {
                        key: key.to_string(),
                        upload_id: u.upload_id,
                        initiated: u.initiated,
                    });
                }
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(i)) if !k.is_empty() => {
                    key_marker = k;
                    id_marker = i;
                }
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Aborts an unfinished upload: its parts are deleted.
    pub fn abort_upload(&self, u: &Unfinished) -> Result<(), CloudError> {
        let key = format!("{}{}", self.prefix, u.key);
        match self.call(
            http::Method::DELETE,
            &key,
            &format!("uploadId={}", encode(&u.upload_id)),
            &format!("aborting the unfinished upload of {}", self.shown(&u.key)),
        ) {
            // Gone already (NoSuchUpload): a first abort whose answer was lost, retried; or the bucket's own
            // lifecycle rule. What an abort is for is done.
            Err(e) if e.failure() == Failure::NotFound => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Sets (or extends) an object's compliance-mode retention to `until` (S3 PutObjectRetention, which OpenDAL
    /// has no call for). A multipart upload asks for its lock in its CreateMultipartUpload, whose lock headers some
    /// servers drop (moto 5.2.5; real S3 applies them); and a part a resumed upload reuses carries the killed run's
    /// date. Compliance retention can be extended, never shortened.
    pub fn set_retention(&self, key: &str, until: DateTime<Utc>) -> Result<(), CloudError> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        // S3 asks for a checksum of the body: Content-MD5, which every S3-compatible server knows.
        let md5 = opendal::raw::format_content_md5(body.as_bytes());
        self.call_with(
            http::Method::PUT,
            &format!("{}{key}", self.prefix),
            "retention",
            (
                body.into_bytes(),
                &[(http::HeaderName::from_static("content-md5"), md5)],
            ),
            &format!("setting the retention of {}", self.shown(key)),
        )
        .map(|_| ())
    }

    /// One signed S3 request OpenDAL has no call for; the body of a 2xx answer (at most 16 MiB).
    fn call(
        &self,
        method: http::Method,
        key: &str,
        query: &str,
        what: &str,
    ) -> Result<Vec<u8>, CloudError> {
        self.call_with(method, key, query, (Vec::new(), &[]), what)
    }

    /// [`Store::call`] with a request body and headers.
    fn call_with(
        &self,
        method: http::Method,
        key: &str,
        query: &str,
        (body, headers): (Vec<u8>, &[(http::HeaderName, String)]),
        what: &str,
    ) -> Result<Vec<u8>, CloudError> {
        let url = format!("{}/{}?{query}", self.bucket_url, encode_key(key));
        let body = opendal::Buffer::from(body);
        // Retried as OpenDAL's `RetryLayer` retries the other requests: a server error (5xx), 429, or no answer.
        let mut attempt = 0;
        let (status, body) = loop {
            let got = self.send_once(&method, &url, headers, body.clone(), what)?;
            let retry = match &got {
                Ok((status, _)) => {
                    status.is_server_error() || *status == http::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => e.is_temporary(),
            };
            if !retry || attempt >= self.retries {
                break got.map_err(|e| self.err(what, e))?;
            }
            attempt += 1;
            if let Some(i) = patience::pause(retry_delay(attempt)) {
                return Err(self.err(what, patience::interrupted(i)));
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let kind = match status.as_u16() {
            401 | 403 => opendal::ErrorKind::PermissionDenied,
            404 => opendal::ErrorKind::NotFound,
            _ => opendal::ErrorKind::Unexpected,
        };
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned();
        Err(self.err(
            what,
            opendal::Error::new(kind, format!("status: {status}, {text}")),
        ))
    }

    /// One attempt of [`Store::call_with`]: the answer's status and body, or the transport's error.
    fn send_once(
        &self,
        method: &http::Method,
        url: &str,
        headers: &[(http::HeaderName, String)],
        body: opendal::Buffer,
        what: &str,
    ) -> Result<Result<(http::StatusCode, Vec<u8>), opendal::Error>, CloudError> {
        let mut req = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_LENGTH, body.len());
        }
        let req = req
            .body(body)
            .map_err(|e| CloudError::Setup(format!("{what}: {e}")))?;
        let transport = self.transport.clone();
        Ok(self.run(async move {
            let resp = opendal::HttpTransport::fetch(&transport, req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut bytes = Vec::new();
            loop {
                let chunk = body.read().await?;
                if chunk.is_empty() {
                    break;
                }
                bytes.extend_from_slice(&chunk.to_vec());
                if bytes.len() as u64 > MAX_SMALL {
                    return Err(opendal::Error::new(
                        opendal::ErrorKind::Unexpected,
                        "the answer is larger than 16 MiB",
                    ));
                }
            }
            Ok::<_, opendal::Error>((status, bytes))
        }))
    }

    /// A key as messages show it: escaped.
    fn shown(&self, key: &str) -> String {
        crate::stdx::show_str(key)
    }
}

/// The hidden cap on one listing (objects, at least 10), for tests: [`MAX_LISTED`] lowered without listing a million
/// objects. It only ever lowers the cap.
pub const MAX_LISTED_VAR: &str = "DBACKUP_MAX_LISTED";

/// The most objects one listing takes: a bucket's `backups/` holds a few per set per backup (a thousand backups of
/// ten sets: some 25,000), so more is another program's doing, or a hostile bucket's; each costs some 200 bytes.
pub const MAX_LISTED: usize = 1_000_000;

/// [`MAX_LISTED`], lowered by [`MAX_LISTED_VAR`].
fn max_listed() -> usize {
    std::env::var(MAX_LISTED_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(MAX_LISTED, |n| n.clamp(10, MAX_LISTED))
}

/// The wait before retry `attempt` (1, 2, ...): OpenDAL's `RetryLayer` as [`Store::with_keys`] sets it up, 0.5 s
/// doubling up to 30 s, without its jitter.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(6))
        .min(Duration::from_secs(30))
}

/// The error of `what` on destination `name` at `place`, explained without `secrets`.
fn service_error(
    (name, place, secrets): (&str, &str, &[String]),
    what: &str,
    e: opendal::Error,
) -> CloudError {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let (failure, message) = explain(&e, what, place, &refs);
    CloudError::Service {
        destination: name.to_string(),
        failure,
        message,
    }
}

/// The OpenDAL error an OpenDAL stream's I/O error carries (or one of its text).
fn opendal_of(e: io::Error) -> opendal::Error {
    match e.downcast::<opendal::Error>() {
        Ok(e) => e,
        Err(e) => opendal::Error::new(opendal::ErrorKind::Unexpected, e.to_string()),
    }
}

/// The user metadata that asks the transport for a locked write.
fn lock_meta(until: DateTime<Utc>) -> Vec<(String, String)> {
    vec![(
        LOCK_UNTIL_META.to_string(),
        until.to_rfc3339_opts(SecondsFormat::Secs, true),
    )]
}

/// The endpoint a destination's requests go to: its own, or AWS's for its region.
fn endpoint(cloud: &CloudSettings) -> String {
    match (&cloud.kind, &cloud.endpoint) {
        (CloudKind::S3, Some(e)) => e.clone(),
        (CloudKind::S3, None) => format!("https://s3.{}.amazonaws.com", cloud.region),
        (CloudKind::B2, _) => "https://api.backblazeb2.com".to_string(),
    }
}

/// `endpoint/bucket` (path style) or `scheme://bucket.host[/path]` (host style).
fn bucket_url(endpoint: &str, bucket: &str, path_style: bool) -> String {
    if path_style {
        return format!("{endpoint}/{bucket}");
    }
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}

/// Percent-encoding of a query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encoding of a key in a path (`/` kept).
fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// S3's `ListMultipartUploadsResult`, the parts dbackup reads.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListUploads {
    #[serde(default)]
    pub is_truncated: bool,
    #[serde(default)]
    pub next_key_marker: Option<String>,
    #[serde(default)]
    pub next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    pub uploads: Vec<ListedUpload>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedUpload {
    pub key: String,
    pub upload_id: String,
    #[serde(default)]
    pub initiated: Option<String>,
}

/// One page of S3's ListMultipartUploads answer (untrusted: at most [`MAX_SMALL`] bytes, as every answer).
pub fn parse_uploads(xml: &[u8]) -> Result<ListUploads, quick_xml::DeError> {
    quick_xml::de::from_reader(xml)
}

/// A streamed upload (see [`Store::upload`]).
pub struct Upload {
    store: Arc<Store>,
    key: String,
    writer: Option<opendal::Writer>,
    buf: Vec<u8>,
    written: u64,
}

impl Upload {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_SIZE));
        let w = self.writer.as_mut().expect("not finished");
        let store = &self.store;
        store.run(w.write(chunk)).map_err(|e| {
            io::Error::other(store.err(&format!("uploading {}", store.shown(&self.key)), e))
        })
    }

    /// Completes the upload; its size.
    pub fn finish(mut self) -> Result<u64, CloudError> {
        let what = format!("completing the upload of {}", self.store.shown(&self.key));
        self.send().map_err(
            |e| match e.into_inner().map(|e| e.downcast::<CloudError>()) {
                Some(Ok(c)) => *c,
                Some(Err(other)) => CloudError::Setup(format!("{what}: {other}")),
                None => CloudError::Setup(what.clone()),
            },
        )?;
        let mut w = self.writer.take().expect("not finished");
        let store = &self.store;
        match store.run(w.close()) {
            Ok(_) => Ok(self.written),
            Err(e) => {
                let _ = store.rt.block_on(w.abort());
                Err(store.err(&what, e))
            }
        }
    }
}

impl io::Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = PART_SIZE - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == PART_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            // Unfinished: nothing of it may stay stored (a killed process leaves it to the next run's cleanup).
            let _ = self.store.rt.block_on(w.abort());
        }
    }
}

/// A seekable reader of one object (see [`Store::reader`]): one GET streams from where a read starts to the end,
/// until a seek elsewhere.
pub struct Reader {
    inner: opendal::Reader,
    rt: tokio::runtime::Handle,
    /// The answer being read, from `pos - at` on.
    stream: Option<opendal::FuturesBytesStream>,
    /// Its last chunk, `at` bytes of it read.
    chunk: Vec<u8>,
    at: usize,
    pos: u64,
    size: u64,
    /// A failed read as people read it.
    err: Box<dyn Fn(opendal::Error) -> CloudError + Send + Sync>,
}

impl Reader {
    #[cfg(test)]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk of the answer (empty: the end), the request sent first when none is open.
    fn next_chunk(&mut self) -> opendal::Result<Vec<u8>> {
        let (inner, from, size) = (&self.inner, self.pos, self.size);
        let stream = &mut self.stream;
        self.rt.block_on(patience::unless_interrupted(async move {
            if stream.is_none() {
                *stream = Some(inner.clone().into_bytes_stream(from..size).await?);
            }
            let s = stream.as_mut().expect("opened above");
            match std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut *s), cx)
            })
            .await
            {
                None => Ok(Vec::new()),
                Some(Ok(b)) => Ok(b.to_vec()),
                Some(Err(e)) => Err(opendal_of(e)),
            }
        }))
    }
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        if self.at >= self.chunk.len() {
            match self.next_chunk() {
                Ok(c) if c.is_empty() => return Ok(0),
                Ok(c) => (self.chunk, self.at) = (c, 0),
                Err(e) => {
                    self.stream = None;
                    return Err(io::Error::other((self.err)(e)));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Reader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let pos = seek_target(to, self.pos, self.size)?;
        if pos != self.pos {
            (self.stream, self.chunk, self.at) = (None, Vec::new(), 0);
            self.pos = pos;
        }
        Ok(self.pos)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn urls_are_path_or_host_style() {
        assert_eq!(
            bucket_url("http://127.0.0.1:3900", "b", true),
            "http://127.0.0.1:3900/b"
        );
        assert_eq!(
            bucket_url("https://s3.eu-central-1.amazonaws.com", "b", false),
            "https://b.s3.eu-central-1.amazonaws.com"
        );
        assert_eq!(encode("a/b c&d"), "a%2Fb%20c%26d");
        assert_eq!(encode_key("p/backups/x y"), "p/backups/x%20y");
    }

    /// What a reader asks for around the range a restore said it reads next: the rest of it from inside; from
    /// just before it (a header), both in one GET; from far before it (age's header of a stream whose chunk is
    /// far in), the header's allowance alone; nothing said of other objects or after the range.
    #[test]
    fn a_hint_covers_its_range_and_a_header_just_before_it() {
        let c = RangeCache::default();
        c.hints
            .lock()
            .unwrap()
            .insert("k".into(), 1_000_000..1_100_000);
        assert_eq!(c.hint("k", 1_000_000), Some(100_000));
        assert_eq!(c.hint("k", 1_050_000), Some(50_000));
        assert_eq!(c.hint("k", 999_000), Some(101_000), "a header just before");
        assert_eq!(
            c.hint("k", 0),
            Some(RANGE_DETOUR),
            "age's header far before"
        );
        assert_eq!(c.hint("k", 1_100_000), None);
        assert_eq!(c.hint("other", 1_000_000), None);
        c.hints.lock().unwrap().insert("big".into(), 0..u64::MAX);
        assert_eq!(c.hint("big", 0), Some(RANGE_HINTED_MAX));
    }

    /// A page of S3's ListMultipartUploads answer (the property tests mutate it too).
    pub(crate) const UPLOADS_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/k2</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/k1</Key><UploadId>id1</UploadId><Initiated>2026-12-05T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/k2</Key><UploadId>id2</UploadId></Upload>
</ListMultipartUploadsResult>"#;

    #[test]
    fn a_listing_of_unfinished_uploads_parses() {
        let page = parse_uploads(UPLOADS_PAGE.as_bytes()).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/k1");
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id2"));
        let empty = parse_uploads(
            b"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty());
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: the name and the place only.
        f.debug_struct("Store")
            .field("name", &self.name)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// Indexes up to this size are read whole, in one GET, once: an index is searched by many small reads (a binary
/// search through an encrypted index: one 64 KiB chunk per probe), which would each be a ranged GET. A larger one
/// is read by bounded ranged GETs. Archives are always read by ranges.
pub const WHOLE_READ_MAX: u64 = 8 << 20;

/// A whole index larger than this is kept in an anonymous temporary file rather than in memory (a restore or a
/// `find` may keep several).
const KEPT_IN_MEMORY_MAX: u64 = 1 << 20;

/// The objects under one directory of a destination, as [`crate::archive::Remote`] parts of an archive: a small
/// index read whole once (one GET) and kept; a larger one read with a ranged GET per read after a seek (no HEAD:
/// its length is the recorded one).
#[derive(Debug)]
pub struct Objects {
    pub store: Arc<Store>,
    /// A key prefix ending in `/`, relative to the destination's prefix.
    pub dir: String,
    /// Small objects already read.
    pub cache: std::sync::Mutex<std::collections::HashMap<String, Whole>>,
    /// The last range received of each object, shared by its readers (a restore's plan and its writes read the
    /// same headers: the second reader finds them here).
    pub ranges: Arc<RangeCache>,
}

/// The last ranges received of each object read through [`Ranged`] readers that share it (at most
/// [`RangeCache::KEPT`] per object: an encrypted archive's header, its final chunk, where a file is).
#[derive(Debug, Default)]
pub struct RangeCache {
    kept: std::sync::Mutex<std::collections::HashMap<String, Vec<KeptRange>>>,
    /// What a restore said it will read next of each object ([`crate::archive::Remote::expect`]).
    hints: std::sync::Mutex<std::collections::HashMap<String, std::ops::Range<u64>>>,
    /// Each encrypted object's first bytes (age's header and payload nonce) as `backup.json` records them: read
    /// from here, not the object (never dropped: a restore may open the same part again).
    heads: std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<u8>>>>,
}

/// A range received: where it starts, its bytes.
type KeptRange = (u64, Arc<Vec<u8>>);

/// The most one GET asks for when a restore said how much it will read (one entry's header and content).
pub const RANGE_HINTED_MAX: u64 = 32 << 20;

/// What one GET asks for before the range a restore said it will read (age's header of an encrypted stream, which
/// an X25519 or ssh recipient keeps under 1 KiB; a longer one is read on in the next GET).
pub const RANGE_DETOUR: u64 = 16 << 10;

impl RangeCache {
    const KEPT: usize = 4;

    /// What to ask for from `pos` after a jump, when the restore said what it reads next of `key`: from inside
    /// that range, the rest of it; from before it (age's header of the stream, read before its chunks), up to
    /// its end when it starts within [`RANGE_DETOUR`] (one GET for both), else [`RANGE_DETOUR`] alone.
    fn hint(&self, key: &str, pos: u64) -> Option<u64> {
        let hints = self.hints.lock().unwrap_or_else(|e| e.into_inner());
        let r = hints.get(key)?;
        if r.contains(&pos) {
            return Some((r.end - pos).min(RANGE_HINTED_MAX));
        }
        let ahead = r.start.checked_sub(pos).filter(|a| *a > 0)?;
        Some(if ahead <= RANGE_DETOUR {
            ahead + (r.end - r.start).min(RANGE_HINTED_MAX)
        } else {
            RANGE_DETOUR
        })
    }

    /// The recorded head of `key` when `pos` is inside it.
    fn head(&self, key: &str, pos: u64) -> Option<Arc<Vec<u8>>> {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.get(key).filter(|h| pos < h.len() as u64).cloned()
    }

    fn find(&self, key: &str, pos: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        let map = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)?
            .iter()
            .find(|(start, b)| (*start..start + b.len() as u64).contains(&pos))
            .cloned()
    }

    fn keep(&self, key: &str, start: u64, bytes: Arc<Vec<u8>>) {
        let mut map = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = map.entry(key.to_string()).or_default();
        if kept.len() >= Self::KEPT {
            kept.remove(0);
        }
        kept.push((start, bytes));
    }
}

impl Objects {
    pub fn new(store: Arc<Store>, dir: String) -> Objects {
        Objects {
            store,
            dir,
            cache: Default::default(),
            ranges: Default::default(),
        }
    }

    /// The first bytes of object `name` (under `dir`), as recorded elsewhere (`backup.json`'s `age_head`): reads
    /// inside them cost no request. A head that is not the object's own fails age's authentication like a damaged
    /// object.
    pub fn know_head(&self, name: &str, head: Vec<u8>) {
        let mut heads = self.ranges.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.insert(format!("{}{name}", self.dir), Arc::new(head));
    }
}

/// A small object read whole and kept: in memory, or (above [`KEPT_IN_MEMORY_MAX`]) in an anonymous temporary
/// file.
#[derive(Debug, Clone)]
pub enum Whole {
    Memory(Arc<Vec<u8>>),
    File(Arc<std::fs::File>, u64),
}

impl Whole {
    /// Reads object `key` of `len` bytes (as recorded) in one GET; an object of another length is refused.
    fn read(store: &Store, key: &str, len: u64) -> io::Result<Whole> {
        let bytes = store.get(key).map_err(io::Error::other)?;
        if bytes.len() as u64 != len {
            return Err(io::Error::other(format!(
                "{} is {} bytes, not the {len} recorded",
                store.shown(key),
                bytes.len()
            )));
        }
        if len <= KEPT_IN_MEMORY_MAX {
            return Ok(Whole::Memory(Arc::new(bytes)));
        }
        use io::Write as _;
        let mut f = tempfile::tempfile()?;
        f.write_all(&bytes)?;
        Ok(Whole::File(Arc::new(f), len))
    }

    fn reader(&self) -> Box<dyn crate::archive::ReadSeek> {
        match self {
            Whole::Memory(b) => Box::new(io::Cursor::new(Kept(b.clone()))),
            Whole::File(f, len) => Box::new(FileAt {
                file: f.clone(),
                len: *len,
                pos: 0,
            }),
        }
    }
}

/// A kept small object in memory as a reader.
struct Kept(Arc<Vec<u8>>);

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A kept object in a temporary file as a reader of its own (positioned reads: the file is shared).
struct FileAt {
    file: Arc<std::fs::File>,
    len: u64,
    pos: u64,
}

impl io::Read for FileAt {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(out, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for FileAt {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(to, self.pos, self.len)?;
        Ok(self.pos)
    }
}

/// Where a seek from `pos` in an object of `len` bytes lands (the two readers of an object keep their own position).
fn seek_target(to: io::SeekFrom, pos: u64, len: u64) -> io::Result<u64> {
    match to {
        io::SeekFrom::Start(p) => Some(p),
        io::SeekFrom::End(d) => len.checked_add_signed(d),
        io::SeekFrom::Current(d) => pos.checked_add_signed(d),
    }
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a seek to a negative or overflowing position",
        )
    })
}

impl crate::archive::Remote for Objects {
    fn label(&self, name: &std::path::Path) -> String {
        format!("{}{}", self.dir, name.display())
    }

    fn open(
        &self,
        name: &std::path::Path,
        len: u64,
    ) -> io::Result<Box<dyn crate::archive::ReadSeek>> {
        let key = format!("{}{}", self.dir, name.to_string_lossy());
        let index = name.to_string_lossy().contains(".index.");
        if index && len <= WHOLE_READ_MAX {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let whole = match cache.get(&key) {
                Some(w) => w.clone(),
                None => {
                    let w = Whole::read(&self.store, &key, len)?;
                    cache.insert(key, w.clone());
                    w
                }
            };
            return Ok(whole.reader());
        }
        let mut r = self.store.ranged(&key, len);
        r.shared = Some(self.ranges.clone());
        Ok(Box::new(r))
    }

    fn expect(&self, name: &std::path::Path, range: std::ops::Range<u64>) {
        let key = format!("{}{}", self.dir, name.to_string_lossy());
        let mut hints = self.ranges.hints.lock().unwrap_or_else(|e| e.into_inner());
        hints.insert(key, range);
    }

    fn head(&self, name: &std::path::Path) -> Option<Arc<Vec<u8>>> {
        let key = format!("{}{}", self.dir, name.to_string_lossy());
        self.ranges.head(&key, 0)
    }
}

/// The first ranged GET after a seek asks for this much (a one-file restore: its header, and the file itself when
/// it is small); each GET that continues where the last one ended asks for twice as much, up to
/// [`RANGE_MAX`].
pub const RANGE_FIRST: u64 = 64 << 10;
/// The most one ranged GET asks for (and the most a [`Ranged`] reader holds in memory).
pub const RANGE_MAX: u64 = 8 << 20;

impl Store {
    /// A reader of an object whose length is known (recorded in `backup.json`), by bounded ranged GETs: no HEAD, no
    /// request until a read, and a seek is free. A read inside the range last received costs nothing (a forward
    /// skip over a file not restored, a header then its data); otherwise one GET of the bytes from there, of
    /// [`RANGE_FIRST`] after a jump and doubling while reads continue where the last range ended (a whole archive
    /// read in order costs about one GET per [`RANGE_MAX`]). A length other than the object's shows as a short
    /// read, which the readers above (the index's and age's checks, the sums) catch.
    pub fn ranged(self: &Arc<Self>, key: &str, len: u64) -> Ranged {
        Ranged {
            store: self.clone(),
            key: key.to_string(),
            len,
            pos: 0,
            buf: Arc::new(Vec::new()),
            buf_start: 0,
            window: RANGE_FIRST,
            shared: None,
            buf_is_head: false,
        }
    }

    /// One ranged GET of `range`, whole.
    fn read_range(&self, key: &str, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        let bytes = self
            .run(async { self.op.read_with(key).range(range.clone()).await })
            .map(|b| b.to_vec())
            .map_err(|e| {
                io::Error::other(self.err(
                    &format!(
                        "reading bytes {}..{} of {}",
                        range.start,
                        range.end,
                        self.shown(key)
                    ),
                    e,
                ))
            })?;
        self.counts.received(bytes.len() as u64);
        Ok(bytes)
    }
}

/// A seekable reader of one object by bounded ranged GETs (see [`Store::ranged`]).
pub struct Ranged {
    store: Arc<Store>,
    key: String,
    len: u64,
    pos: u64,
    /// The bytes of the last GET, from `buf_start`.
    buf: Arc<Vec<u8>>,
    buf_start: u64,
    /// What the next GET that continues the last one asks for.
    window: u64,
    /// Ranges received by other readers of the same objects.
    pub shared: Option<Arc<RangeCache>>,
    /// `buf` is the object's recorded head, not received: reading on from its end is a jump (the chunks a
    /// restore wants), not a stream read in order.
    buf_is_head: bool,
}

impl Ranged {
    fn buf_end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }
}

impl io::Read for Ranged {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        if !(self.buf_start..self.buf_end()).contains(&self.pos)
            && let Some(head) = self
                .shared
                .as_ref()
                .and_then(|c| c.head(&self.key, self.pos))
        {
            (self.buf_start, self.buf, self.buf_is_head) = (0, head, true);
        }
        if !(self.buf_start..self.buf_end()).contains(&self.pos)
            && let Some((start, bytes)) = self
                .shared
                .as_ref()
                .and_then(|c| c.find(&self.key, self.pos))
        {
            (self.buf_start, self.buf, self.buf_is_head) = (start, bytes, false);
        }
        if !(self.buf_start..self.buf_end()).contains(&self.pos) {
            // Continuing where the last range ended (or just past it: a tar header's padding): read ahead further;
            // after a jump, start small again.
            let gap = self.pos.checked_sub(self.buf_end());
            let continuing =
                !self.buf.is_empty() && !self.buf_is_head && gap.is_some_and(|g| g <= RANGE_FIRST);
            self.window = if continuing {
                (self.window * 2).min(RANGE_MAX)
            } else {
                RANGE_FIRST
            };
            let mut want = self.window.max(out.len() as u64).min(RANGE_MAX);
            // What the restore said it will read from here (one entry): after a jump, exactly that in one GET (from
            // just before it, age's header too; from further before, the header alone); while reading on in order,
            // at least that.
            if let Some(h) = self
                .shared
                .as_ref()
                .and_then(|c| c.hint(&self.key, self.pos))
            {
                want = if continuing { want.max(h) } else { h };
            }
            let end = self.pos.saturating_add(want).min(self.len);
            let bytes = self.store.read_range(&self.key, self.pos..end)?;
            if bytes.is_empty() {
                return Ok(0);
            }
            self.buf = Arc::new(bytes);
            self.buf_start = self.pos;
            self.buf_is_head = false;
            if let Some(c) = &self.shared {
                c.keep(&self.key, self.buf_start, self.buf.clone());
            }
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Ranged {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(pos, self.pos, self.len)?;
        Ok(self.pos)
    }
}
