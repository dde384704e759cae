//! `dbackup cloud check NAME`: what this machine's key can do with the destination's bucket, tried for real with a
//! tiny object under `<prefix>/.dbackup-check/`: list, write, read back, delete, list unfinished uploads, and
//! (with `object_lock_days`, or when asked) whether the bucket really enforces Object Lock: a locked object is
//! written and its deletion tried, since some servers accept the headers and ignore them; then its retention is
//! extended by a second (PutObjectRetention, which uploads in parts are locked by).
//!
//! Exit codes: 0 everything the destination needs works; 3 (warnings) it works, but the key cannot delete (old
//! backups are never pruned) or uploads are left unfinished; 1 something a backup needs fails (unreachable, keys
//! refused, no bucket, no write or read, Object Lock configured but not enforced); 2 configuration (no such
//! destination, no keys, a credentials file others can read, an unreadable `AWS_CA_BUNDLE`).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::cloud::credentials::Source;
use crate::cloud::error::{CloudError, Failure};
use crate::cloud::store::{ObjectClass, Store};
use crate::exit::Exit;
use crate::settings::CloudSettings;

/// The folder (under the prefix) of the probe objects.
pub const PROBE_DIR: &str = ".dbackup-check/";

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// It works, with something worth knowing.
    Warning,
    Failed,
    /// Not tried (an earlier probe failed, or it does not apply).
    Skipped,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "warn",
            Outcome::Failed => "FAIL",
            Outcome::Skipped => "skip",
        }
    }
}

/// One thing tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// `list`, `write`, `read`, `delete`, `uploads`, `object_lock`.
    pub name: &'static str,
    pub outcome: Outcome,
    /// What happened, and what to do (scrubbed of secrets, escaped).
    pub detail: String,
}

/// Whether the bucket enforces Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lock {
    /// A locked object could not be deleted.
    Enforced,
    /// The server took the lock headers and then deleted the object: it ignores them.
    NotEnforced,
    /// The server refused the locked write (no Object Lock on the bucket).
    Refused,
    NotTried,
}

/// The report of `cloud check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub destination: String,
    /// `s3 http://127.0.0.1:3900 bucket/prefix`.
    pub place: String,
    /// Where the keys came from (no secret).
    pub credentials: Option<Source>,
    pub probes: Vec<Probe>,
    pub object_lock: Lock,
    /// The exit code this report deserves (see the module's doc).
    pub exit: Exit,
    /// One line: the verdict.
    pub summary: String,
}

/// Runs the probes against an opened store. `lock`: try Object Lock (`object_lock_days` is set, or it was asked).
/// `dry_run`: only the probes that read (the listing, unfinished uploads); the others say they were not tried.
pub fn run(
    cloud: &CloudSettings,
    store: &Store,
    lock: bool,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Report {
    // Stays long: the probes in the order they run, each depending on the ones before (a write only after a list,
    // a read and a delete only after the write); split, they would hand the same flags and the probe list around.
    let mut probes = Vec::new();
    let mut push = |name, outcome, detail: String| {
        probes.push(Probe {
            name,
            outcome,
            detail,
        })
    };
    let key = format!(
        "{PROBE_DIR}{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let body = format!("dbackup cloud check {}\n", now.to_rfc3339());

    // list: the keys, the bucket, the network, all at once.
    let mut fatal = false;
    match store.list(PROBE_DIR) {
        Ok(_) => push("list", Outcome::Ok, "the key may list the bucket".into()),
        Err(e) => {
            // A refused listing can be the keys (nothing else will work) or a key without list permission.
            fatal =
                matches!(e.failure(), Failure::Unreachable | Failure::NoBucket) || is_bad_keys(&e);
            push("list", Outcome::Failed, e.to_string());
        }
    }

    const DRY: &str = "not tried: --dry-run writes nothing";
    let mut written = false;
    if fatal {
        push("write", Outcome::Skipped, "not tried".into());
    } else if dry_run {
        push("write", Outcome::Skipped, DRY.into());
    } else {
        match store.put(&key, body.as_bytes(), ObjectClass::Metadata) {
            Ok(()) => {
                written = true;
                push(
                    "write",
                    Outcome::Ok,
                    format!(
                        "wrote {} ({} bytes)",
                        crate::stdx::show_str(&key),
                        body.len()
                    ),
                )
            }
            Err(e) => push("write", Outcome::Failed, e.to_string()),
        }
    }

    if written {
        match store.get(&key) {
            Ok(b) if b == body.as_bytes() => {
                push("read", Outcome::Ok, "read it back, byte for byte".into())
            }
            Ok(b) => push(
                "read",
                Outcome::Failed,
                format!(
                    "read back {} bytes that differ from the {} written: the server does not keep what it is given",
                    b.len(),
                    body.len()
                ),
            ),
            Err(e) => push("read", Outcome::Failed, e.to_string()),
        }
        match store.delete(&key).and_then(|()| store.stat(&key)) {
            Ok(None) => push("delete", Outcome::Ok, "deleted it".into()),
            Ok(Some(_)) => push(
                "delete",
                Outcome::Warning,
                "the delete was answered, but the object is still there".into(),
            ),
            Err(e) => push(
                "delete",
                Outcome::Warning,
                format!(
                    "{e}. Without delete, retention never prunes old backups on this destination (a lifecycle rule \
                     can, or a key that may delete)"
                ),
            ),
        }
    } else if dry_run && !fatal {
        push("read", Outcome::Skipped, DRY.into());
        push("delete", Outcome::Skipped, DRY.into());
    } else {
        push("read", Outcome::Skipped, "nothing was written".into());
        push("delete", Outcome::Skipped, "nothing was written".into());
    }

    if fatal {
        push("uploads", Outcome::Skipped, "not tried".into());
    } else {
        match store.unfinished_uploads("") {
            Ok(u) if u.is_empty() => push("uploads", Outcome::Ok, "no unfinished uploads".into()),
            Ok(u) => push(
                "uploads",
                Outcome::Warning,
                format!(
                    "{} unfinished multipart upload(s) hold parts (and cost) until aborted; the next upload \
                     aborts them (a lifecycle rule that aborts incomplete uploads after a day does too)",
                    u.len()
                ),
            ),
            Err(e) => push(
                "uploads",
                Outcome::Warning,
                format!(
                    "{e}. Without it, what a killed upload leaves is not found and aborted (a lifecycle rule can)"
                ),
            ),
        }
    }

    let object_lock = if !lock || fatal || !written {
        let why = if !lock {
            "not tried: no `object_lock_days` (`cloud check --object-lock` tries it)"
        } else if dry_run && !fatal {
            DRY
        } else {
            "not tried"
        };
        push("object_lock", Outcome::Skipped, why.into());
        Lock::NotTried
    } else {
        let (l, outcome, detail) = try_lock(store, &key, now, cloud.object_lock_days.is_some());
        push("object_lock", outcome, detail);
        l
    };

    let worst = probes
        .iter()
        .map(|p| p.outcome)
        .fold(Outcome::Ok, |a, b| match (a, b) {
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            (Outcome::Warning, _) | (_, Outcome::Warning) => Outcome::Warning,
            _ => Outcome::Ok,
        });
    let (exit, summary) = match worst {
        Outcome::Failed => (
            Exit::Failed,
            "this destination cannot take backups as configured (see FAIL above)".to_string(),
        ),
        Outcome::Warning => (
            Exit::Warnings,
            "backups can be written, with the warnings above".to_string(),
        ),
        _ => (Exit::Ok, "everything a backup needs works".to_string()),
    };
    Report {
        destination: cloud.name.clone(),
        place: cloud.place(),
        credentials: Some(store.source().clone()),
        probes,
        object_lock,
        exit,
        summary,
    }
}

/// The report when the destination could not even be opened (no keys, a credentials file others can read, a bad
/// trust bundle): configuration, exit 2.
pub fn not_opened(cloud: &CloudSettings, e: &CloudError) -> Report {
    Report {
        destination: cloud.name.clone(),
        place: cloud.place(),
        credentials: None,
        probes: vec![Probe {
            name: "credentials",
            outcome: Outcome::Failed,
            detail: e.to_string(),
        }],
        object_lock: Lock::NotTried,
        exit: crate::exit::ExitCoded::exit(e),
        summary: "fix the configuration first".into(),
    }
}

/// Keys the server does not know or whose signature it refuses: nothing else will work either.
fn is_bad_keys(e: &CloudError) -> bool {
    let s = e.to_string();
    let lower = s.to_ascii_lowercase();
    e.failure() == Failure::Denied
        && (s.contains("InvalidAccessKeyId")
            || s.contains("SignatureDoesNotMatch")
            || s.contains("InvalidToken")
            // Garage's words for a wrong secret and an unknown key id.
            || lower.contains("invalid signature")
            || lower.contains("no such key"))
}

/// Writes a locked object (retention one day) and tries to delete it, version and all.
fn try_lock(
    store: &Store,
    key: &str,
    now: DateTime<Utc>,
    configured: bool,
) -> (Lock, Outcome, String) {
    let lock_key = format!("{key}-locked");
    let until = now + Duration::days(1);
    let bad = if configured {
        Outcome::Failed
    } else {
        Outcome::Warning
    };
    let version = match store.put_locked(&lock_key, b"locked\n", ObjectClass::Metadata, until) {
        Ok(v) => v,
        Err(e) => {
            return (
                Lock::Refused,
                bad,
                format!(
                    "the server refused a locked write: {e}. Create the bucket with Object Lock enabled, or remove \
                     `object_lock_days`"
                ),
            );
        }
    };
    let deleted = match &version {
        Some(v) => store.delete_version(&lock_key, v),
        None => store.delete(&lock_key),
    };
    let gone = match (&deleted, &version) {
        (Err(_), _) => false,
        (Ok(()), Some(_)) => true,
        (Ok(()), None) => matches!(store.stat(&lock_key), Ok(None)),
    };
    if gone {
        (
            Lock::NotEnforced,
            bad,
            "NOT enforced: the server accepted a locked write, then deleted the object before its retention \
             date; it ignores Object Lock, so nothing here is protected from deletion (use a service that \
             enforces it, or remove `object_lock_days`)"
                .into(),
        )
    } else {
        // What `external` locks objects uploaded in parts with (some servers drop a multipart upload's lock
        // headers) and extends a resumed upload's parts with: the probe's retention extended by a second.
        let later = until + Duration::seconds(1);
        let (outcome, extended) = match store.set_retention(&lock_key, later) {
            Ok(()) => (
                Outcome::Ok,
                "; its retention could be extended (PutObjectRetention, which locks archives uploaded in parts)"
                    .to_string(),
            ),
            Err(e) => (
                Outcome::Warning,
                format!(
                    "; but extending its retention was refused ({e}): archives uploaded in parts (more than 8 MiB) \
                     stay unlocked where the server drops a multipart upload's lock headers, and each upload warns"
                ),
            ),
        };
        (
            Lock::Enforced,
            outcome,
            format!(
                "enforced: a locked object could not be deleted ({} stays, 7 bytes, until {}){extended}",
                crate::stdx::show_str(&lock_key),
                later.format("%Y-%m-%d %H:%M UTC")
            ),
        )
    }
}

/// The report as people read it (stdout).
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "cloud destination {:?}: {}\n",
        crate::stdx::show_str(&r.destination),
        r.place
    );
    if let Some(c) = &r.credentials {
        out.push_str(&format!("  keys from {c}\n"));
    }
    for p in &r.probes {
        out.push_str(&format!(
            "  {:<4}  {:<11} {}\n",
            p.outcome.word(),
            p.name,
            p.detail
        ));
    }
    out.push_str(&format!("{}\n", r.summary));
    out
}
