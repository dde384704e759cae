//! Cloud errors as people read them: one line saying what failed, why in a few words, and what to do; never a
//! secret. OpenDAL's error text (the operation, request URLs, response headers, the server's XML) follows in
//! brackets only at `-v` ([`show_context`]), scrubbed of every key, signature and token ([`scrub`]), escaped, and
//! cut to a bounded length.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cloud::credentials::CredentialsError;
use crate::exit::{Exit, ExitCoded};

/// The longest piece of OpenDAL's text `-v` shows after a message (bounded: it quotes the server).
const MAX_DETAIL: usize = 1000;

/// The longest piece of OpenDAL's own message (without its context) a message quotes when nothing else says what
/// failed.
const MAX_SAID: usize = 120;

/// Whether messages end with OpenDAL's context (`-v`).
static CONTEXT: AtomicBool = AtomicBool::new(false);

/// Says whether this run's cloud errors end with OpenDAL's context in brackets (`-v`: accurate, but about 400
/// characters of the request and the answer's head a user has no use for).
pub fn show_context(on: bool) {
    CONTEXT.store(on, Ordering::Relaxed);
}

/// What kind of failure, for the exit code, `cloud check` and the advice in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No answer: connection refused, name not resolved, timed out.
    Unreachable,
    /// The server refused the keys, or the key may not do this.
    Denied,
    /// The bucket does not exist.
    NoBucket,
    /// The object does not exist.
    NotFound,
    /// The server refused because the object is locked (Object Lock retention).
    Locked,
    /// Anything else.
    Other,
}

/// A failed cloud operation.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The destination cannot be set up (a TLS trust bundle that cannot be read, ...). Exit 2.
    #[error("{0}")]
    Setup(String),
    /// A request failed after its retries. `message` is scrubbed and escaped.
    #[error("cloud destination {destination:?}: {message}")]
    Service {
        destination: String,
        failure: Failure,
        message: String,
    },
}

impl CloudError {
    pub fn failure(&self) -> Failure {
        match self {
            CloudError::Service { failure, .. } => *failure,
            CloudError::Credentials(_) | CloudError::Setup(_) => Failure::Other,
        }
    }
}

impl ExitCoded for CloudError {
    fn exit(&self) -> Exit {
        match self {
            CloudError::Credentials(_) | CloudError::Setup(_) => Exit::Usage,
            CloudError::Service { .. } => Exit::Failed,
        }
    }
}

/// What the server or the network said, classified, with advice; `what` is the operation ("listing backups/").
/// OpenDAL's context follows at `-v` ([`show_context`]).
pub(crate) fn explain(
    err: &opendal::Error,
    what: &str,
    place: &str,
    secrets: &[&str],
) -> (Failure, String) {
    explain_with(err, (what, place), secrets, CONTEXT.load(Ordering::Relaxed))
}

/// [`explain`], with OpenDAL's context after the message when `context`.
pub fn explain_with(
    err: &opendal::Error,
    (what, place): (&str, &str),
    secrets: &[&str],
    context: bool,
) -> (Failure, String) {
    let text = scrub(&format!("{err}"), secrets);
    let code = s3_code(&text);
    // The server's own words, which OpenDAL puts after a long context that the message cuts.
    let said = s3_message(&text);
    let lower = text.to_ascii_lowercase();
    let failure = if code.as_deref() == Some("NoSuchBucket") {
        Failure::NoBucket
    } else if matches!(
        code.as_deref(),
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken")
    ) || err.kind() == opendal::ErrorKind::PermissionDenied
        || lower.contains("status: 403")
        || lower.contains("status: 401")
    {
        if lower.contains("object is locked")
            || lower.contains("objectlocked")
            || lower.contains("retention")
        {
            Failure::Locked
        } else {
            Failure::Denied
        }
    } else if err.kind() == opendal::ErrorKind::NotFound {
        Failure::NotFound
    } else if lower.contains("connection refused")
        || lower.contains("error sending request")
        || lower.contains("dns error")
        || lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("connect")
    {
        Failure::Unreachable
    } else {
        Failure::Other
    };
    // ` (SlowDown: Please reduce your request rate)`, or nothing when the server gave no S3 error.
    let quoted = match (&code, &said) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        _ => String::new(),
    };
    let advice = match failure {
        // The transport's own words on a silent server (which, how long, whether it made no progress).
        Failure::Unreachable if crate::cloud::patience::silence(err) => format!(
            "{}; check that the service is up and the network, and run again",
            shorten(&scrub(err.message(), secrets), MAX_SAID)
        ),
        Failure::Unreachable => format!(
            "no answer from {place} ({}); check the endpoint and the network, and that the service is up",
            how_unreachable(err, &lower)
        ),
        Failure::Denied => format!(
            "{place} refused the request{quoted}: {}",
            // Garage's bucket quota, B2's storage cap: a 403 too, but no matter of keys.
            if said.as_deref().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                ["quota", "storage cap", "cap exceeded"]
                    .iter()
                    .any(|w| m.contains(w))
            }) {
                "the bucket is full (its quota or storage cap is reached); remove what it no longer needs, or \
                 raise its quota or cap, and run again"
            } else {
                "check the key id and secret, and that this key may do this in the bucket (`dbackup cloud check` \
                 lists what it may do)"
            }
        ),
        Failure::NoBucket => {
            format!(
                "the bucket does not exist at {place}; create it, or fix `bucket` (and `endpoint`)"
            )
        }
        Failure::NotFound => "not found".to_string(),
        Failure::Locked => {
            "the object is locked (Object Lock retention) until its date".to_string()
        }
        // A server error (500, 503 SlowDown, ...) is retried: this one stayed.
        Failure::Other => match http_status(&text).filter(|s| (500..600).contains(s)) {
            Some(status) => format!(
                "{place} answered {status}{quoted} on every attempt: the service is overloaded or failing; run \
                 again later"
            ),
            // Without the context, OpenDAL's own message is all that says what went wrong.
            None if quoted.is_empty() => format!(
                "the request failed ({}); run again (`-v` shows the details)",
                shorten(&scrub(err.message(), secrets), MAX_SAID)
            ),
            None => format!("the request failed{quoted}; run again (`-v` shows the details)"),
        },
    };
    let mut message = format!("{what}: {advice}");
    if context {
        message.push_str(&format!(" [{}]", shorten(&text, MAX_DETAIL)));
    }
    (failure, message)
}

/// How a connection failed, from OpenDAL's text and the error's sources (which that text leaves out).
fn how_unreachable(err: &opendal::Error, text: &str) -> &'static str {
    let mut all = text.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        all.push(' ');
        all.push_str(&e.to_string().to_ascii_lowercase());
        source = e.source();
    }
    if all.contains("connection refused") {
        "connection refused"
    } else if all.contains("connection reset") || all.contains("broken pipe") {
        "the connection was reset"
    } else if all.contains("timed out") || all.contains("timeout") {
        "no answer in time"
    } else if all.contains("dns error") || all.contains("lookup address") {
        "the host name could not be resolved"
    } else {
        "the connection failed"
    }
}

/// The HTTP status of the answer quoted in OpenDAL's text (`response: Parts { status: 503, ...`), if any.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status: ")? + "status: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The S3 error code quoted in OpenDAL's text (`<Code>AccessDenied</Code>` or `code: "AccessDenied"`), if any.
fn s3_code(text: &str) -> Option<String> {
    quoted_after(text, [("<Code>", '<'), ("code: \"", '"')], 64)
        .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The message of the S3 error quoted in OpenDAL's text (`<Message>...</Message>` or `message: "..."`), at most
/// 120 characters, if any. `text` is already scrubbed.
fn s3_message(text: &str) -> Option<String> {
    quoted_after(text, [("<Message>", '<'), ("message: \"", '"')], 120)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
}

/// What follows the first of `markers` (tried in order) found in `text`, up to that marker's end character, at
/// most `most` characters.
fn quoted_after(text: &str, markers: [(&str, char); 2], most: usize) -> Option<String> {
    markers.iter().find_map(|&(marker, end)| {
        text.find(marker).map(|i| {
            text[i + marker.len()..]
                .chars()
                .take_while(|c| *c != end)
                .take(most)
                .collect()
        })
    })
}

/// `text` without any secret: every string in `secrets` (4 characters or more), and the values of signatures,
/// credentials, tokens and authorization headers however they are quoted (`Signature=...`, `X-Amz-Signature=...`,
/// `X-Amz-Credential=...`, `X-Amz-Security-Token=...`, `authorization: "..."`). Then escaped through
/// [`crate::stdx::show_str`].
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "***");
        }
    }
    let lower_markers = [
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "signature=",
        "credential=",
        "authorization: ",
        "authorization\": \"",
        "\"authorization\": \"",
        "x-amz-security-token: ",
        "\"x-amz-security-token\": \"",
        "x-bz-auth",
    ];
    for marker in lower_markers {
        out = blank_after(&out, marker);
    }
    crate::stdx::show_str(&out)
}

/// Every value after `marker` (matched ignoring case) replaced by `***`, up to the next `&`, `,`, `"`, `;`, `}`
/// or whitespace that ends it.
fn blank_after(text: &str, marker: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find(marker) {
        let start = i + found + marker.len();
        out.push_str(&text[i..start]);
        let rest = &text[start..];
        let end = rest
            .find(|c: char| matches!(c, '&' | ',' | '"' | ';' | '}') || c.is_whitespace())
            .unwrap_or(rest.len());
        // "AWS4-HMAC-SHA256 Credential=..., Signature=..." after `authorization: `: blank it all to the quote.
        let end = if marker.starts_with("authorization") || marker.contains("authorization") {
            rest.find(['"', '\n']).unwrap_or(rest.len())
        } else {
            end
        };
        if end > 0 {
            out.push_str("***");
        }
        i = start + end;
    }
    out.push_str(&text[i..]);
    out
}

/// At most `max` characters, with `...` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push_str("...");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_keys_signatures_tokens_and_authorization() {
        let text = "Unexpected at write, context: { uri: https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAEXAMPLE%2F20261205%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=0123abcd\
            &X-Amz-Security-Token=FQoGZXIvYXdzEJr, headers: {\"authorization\": \"AWS4-HMAC-SHA256 \
            Credential=AKIAEXAMPLE/20261205/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=fe12\"} } \
            => the key SECRETKEY123 was wrong\x1b[31m";
        let out = scrub(text, &["SECRETKEY123", "AKIAEXAMPLE"]);
        for secret in [
            "AKIAEXAMPLE",
            "0123abcd",
            "FQoGZXIvYXdzEJr",
            "fe12",
            "SECRETKEY123",
            "\x1b",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("X-Amz-Signature=***"), "{out}");
        assert!(out.contains("the key *** was wrong"), "{out}");
        assert!(
            out.contains("b.s3.amazonaws.com/k"),
            "the place stays: {out}"
        );
    }

    #[test]
    fn short_strings_are_not_taken_for_secrets() {
        assert_eq!(scrub("a/b", &["a", ""]), "a/b");
    }

    #[test]
    fn s3_codes_are_found_in_both_quotings() {
        assert_eq!(
            s3_code("=> <Error><Code>NoSuchBucket</Code>").as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(
            s3_code("S3Error { code: \"AccessDenied\", message: \"\" }").as_deref(),
            Some("AccessDenied")
        );
        assert_eq!(s3_code("code: \"<script>\""), None);
        assert_eq!(s3_code("nothing"), None);
        assert_eq!(
            s3_message("<Code>AccessDenied</Code><Message>Forbidden: Invalid signature</Message>")
                .as_deref(),
            Some("Forbidden: Invalid signature")
        );
        assert_eq!(s3_message("message: \"\""), None);
    }

    /// A connection that failed says how: refused, reset, no answer in time, a name that does not resolve (read from
    /// the error's sources, which OpenDAL's text leaves out); before, all were "connection refused or timed out".
    #[test]
    fn a_failed_connection_says_how_it_failed() {
        let place = "s3 http://127.0.0.1:9 b/p";
        for (source, words) in [
            (std::io::ErrorKind::ConnectionRefused, "connection refused"),
            (
                std::io::ErrorKind::ConnectionReset,
                "the connection was reset",
            ),
            (std::io::ErrorKind::TimedOut, "no answer in time"),
        ] {
            let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
                .set_source(anyhow::anyhow!(std::io::Error::from(source)));
            let (failure, message) = explain_with(&e, ("listing", place), &[], false);
            assert_eq!(failure, Failure::Unreachable, "{message}");
            assert!(
                message.starts_with(&format!("listing: no answer from {place} ({words}); ")),
                "{source:?}: {message}"
            );
        }
    }

    /// A server error that outlived the retries says what the server answered and to run again later; another
    /// failure without a status stays "the request failed", with the server's code when it gave one.
    #[test]
    fn a_server_error_says_its_status_and_to_run_again_later() {
        let place = "s3 http://127.0.0.1:9 b/p";
        let e = opendal::Error::new(
            opendal::ErrorKind::RateLimited,
            "response: Parts { status: 503, version: HTTP/1.1 } => S3Error { code: \"SlowDown\", message: \"Please \
             reduce your request rate.\" }",
        );
        let (failure, message) = explain_with(&e, ("writing backups/x", place), &[], true);
        assert_eq!(failure, Failure::Other);
        assert!(
            message.starts_with(&format!(
                "writing backups/x: {place} answered 503 (SlowDown: Please reduce your request rate.) on every \
                 attempt: the service is overloaded or failing; run again later ["
            )),
            "{message}"
        );
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "code: \"Odd\"");
        let (_, message) = explain_with(&e, ("listing", place), &[], false);
        assert_eq!(
            message,
            "listing: the request failed (Odd); run again (`-v` shows the details)"
        );
    }

    /// The lines people read: short, saying what failed, where and what to do, without OpenDAL's context (which
    /// `-v` adds in brackets, scrubbed); a secret in OpenDAL's text never shows in either.
    #[test]
    fn a_cloud_error_line_is_short_and_says_what_to_do() {
        let place = "s3 http://127.0.0.1:9 b/p";
        let context = "Unexpected (permanent) at read, context: { uri: http://127.0.0.1:9/b/p/k?X-Amz-Signature=ab12, \
                       service: s3, path: backups/k, range: 0-65535 } => ";
        let cases = [
            (
                "reading bytes 0..65536 of backups/s/docs.tar.part000",
                format!(
                    "{context}127.0.0.1:9 gave no answer for 2 s (timeout_seconds), 2 times in a row with less \
                     than 1 MiB between: no progress on it"
                ),
            ),
            (
                "listing unfinished uploads",
                format!("{context}127.0.0.1:9 gave no answer for 60 s (timeout_seconds)"),
            ),
            (
                "writing backups/s/backup.json",
                format!(
                    "{context}status: 503, <Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
                ),
            ),
            (
                "listing backups/",
                format!(
                    "{context}status: 403, <Error><Code>AccessDenied</Code><Message>Denied SECRETKEY</Message></Error>"
                ),
            ),
            (
                "deleting backups/s/x",
                format!("{context}unexpected end of file"),
            ),
        ];
        let mut shown = Vec::new();
        for (what, text) in &cases {
            let kind = if text.contains("403") {
                opendal::ErrorKind::PermissionDenied
            } else {
                opendal::ErrorKind::Unexpected
            };
            // OpenDAL's message is its text after the context, which its Display puts first.
            let e = opendal::Error::new(kind, text.rsplit(" => ").next().unwrap());
            let (_, line) = explain_with(&e, (what, place), &["SECRETKEY"], false);
            assert!(
                !line.contains(" [") && !line.contains("SECRETKEY"),
                "{line}"
            );
            shown.push(line);
        }
        insta::assert_snapshot!(shown.join("\n"));
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "status: 500, SECRETKEY")
            .with_context("uri", "http://127.0.0.1:9/b/p/k?X-Amz-Signature=ab12");
        let (_, line) = explain_with(&e, ("listing", place), &["SECRETKEY"], true);
        assert!(
            line.contains(" [Unexpected") && line.contains("X-Amz-Signature=***"),
            "{line}"
        );
        assert!(
            !line.contains("SECRETKEY") && !line.contains("ab12"),
            "{line}"
        );
    }
}
