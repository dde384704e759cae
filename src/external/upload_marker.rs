//! `upload.json`: the marker an upload to a bucket writes first under its stamp (`backups/<stamp>/upload.json`, one
//! small PUT) and deletes once `backup.json` is written. It says whose upload it is (its sets and their sources:
//! [`super::retention::Owner`]'s rule, as for `backup.json`'s records) and who is writing it (the host and process,
//! since when). An unfinished upload whose marker says it may still be going is left alone by every run, whoever's
//! it is ([`still_going`]): one of this machine's while its process lives; one of another host's until nothing
//! was written under its stamp for [`QUIET_HOURS`]. Without a marker (an older dbackup's upload) an unfinished
//! upload is told by its objects' names, as before. Read from the bucket: hostile, bounded ([`MAX_BYTES`]), its
//! names checked before anything acts on them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use super::retention::{OwnSet, Owner};
use crate::stdx::show_str;

/// The marker's name under a stamp.
pub const FILE: &str = "upload.json";
/// A marker is never read past this (a config's sets and their sources take a few KiB).
pub const MAX_BYTES: u64 = 64 << 10;
/// How long an upload from another host may write nothing under its stamp and still be going (a part of 128 MiB
/// over a slow line, with retries, takes well under this): after it, its upload counts as stopped.
pub const QUIET_HOURS: i64 = 6;
const FORMAT: u32 = 1;
const MAX_HOST: usize = 255;

/// `upload.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMarker {
    pub format: u32,
    /// The host name of the machine uploading (`uname -n`).
    pub host: String,
    /// Its process there.
    pub pid: u32,
    pub started: DateTime<FixedOffset>,
    /// The sets uploaded, each with its sources' paths (as configured, and resolved).
    pub sets: Vec<MarkedSet>,
    /// The backups its incrementals build on (stamps): no retention removes them while the upload may be going.
    #[serde(default)]
    pub bases: Vec<String>,
}

/// One set of an upload's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedSet {
    pub set: String,
    #[serde(default)]
    pub sources: Vec<PathBuf>,
}

impl UploadMarker {
    /// The marker of an upload of `sets` (of the config's `own`, building on `bases`) by this process on `host`,
    /// started at `started`.
    pub fn new(
        host: &str,
        (own, sets, bases): (&[OwnSet], &[&str], &[String]),
        started: DateTime<FixedOffset>,
    ) -> Self {
        UploadMarker {
            format: FORMAT,
            host: host.to_string(),
            pid: std::process::id(),
            started,
            sets: own
                .iter()
                .filter(|o| sets.contains(&o.name.as_str()))
                .map(|o| MarkedSet {
                    set: o.name.clone(),
                    sources: o.paths.clone(),
                })
                .collect(),
            bases: bases.to_vec(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a marker read from a bucket: at most [`MAX_BYTES`], this format, a host name without control
    /// characters, set names the config's rules allow.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_BYTES {
            return Err(format!("{FILE} is over {MAX_BYTES} bytes"));
        }
        let m: UploadMarker =
            serde_json::from_slice(bytes).map_err(|e| format!("{FILE} is not valid: {e}"))?;
        if m.format != FORMAT {
            return Err(format!("{FILE} is of format {}, not {FORMAT}", m.format));
        }
        if m.host.len() > MAX_HOST || m.host.chars().any(char::is_control) {
            return Err(format!("{FILE} names the host \"{}\"", show_str(&m.host)));
        }
        if let Some(s) = m
            .sets
            .iter()
            .find(|s| !crate::settings::is_safe_name(&s.set))
        {
            return Err(format!("{FILE} names the set \"{}\"", show_str(&s.set)));
        }
        if let Some(b) = m
            .bases
            .iter()
            .find(|b| crate::snapshot::parse_stamp(b).is_none())
        {
            return Err(format!(
                "{FILE} names the base \"{}\", not a backup's stamp",
                show_str(b)
            ));
        }
        Ok(m)
    }

    /// Whether the upload is another config's ([`Owner::foreign_sets`], as a backup's `backup.json` records say).
    pub fn foreign(&self, owner: Owner) -> bool {
        owner.foreign_sets(self.sets.iter().map(|s| {
            let paths: Vec<&Path> = s.sources.iter().map(PathBuf::as_path).collect();
            (s.set.as_str(), paths)
        }))
    }
}

/// Why the upload `m` describes may still be going, `None` when it has stopped: on this machine (`host`), while
/// its process is a dbackup that lives (`alive`), not this one; from another host, until [`QUIET_HOURS`] after
/// the last object written under its stamp (`last_written`, the server's time; else when it started), a time
/// ahead of `now` included. Pure.
pub fn still_going(
    m: &UploadMarker,
    last_written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    host: &str,
    alive: impl Fn(u32) -> bool,
) -> Option<String> {
    let since = m.started.format("%Y-%m-%d %H:%M:%S %:z");
    if m.host == host {
        return (m.pid != std::process::id() && alive(m.pid)).then(|| {
            format!(
                "being uploaded by process {} on this machine, since {since}",
                m.pid
            )
        });
    }
    let last = last_written.unwrap_or(m.started.with_timezone(&Utc));
    (now.signed_duration_since(last) < chrono::Duration::hours(QUIET_HOURS)).then(|| {
        format!(
            "being uploaded from host {} (process {}, since {since}), or stopped there less than {QUIET_HOURS} hours \
             ago: its last object was written at {}",
            show_str(&m.host),
            m.pid,
            last.format("%Y-%m-%d %H:%M:%S UTC")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn marker(host: &str, pid: u32) -> UploadMarker {
        UploadMarker {
            format: FORMAT,
            host: host.into(),
            pid,
            started: DateTime::parse_from_rfc3339("2026-12-07T02:00:00+01:00").unwrap(),
            sets: vec![MarkedSet {
                set: "docs".into(),
                sources: vec!["/home/a".into()],
            }],
            bases: vec!["2026-12-01-020000".into()],
        }
    }

    /// On this machine: going while its process lives (never this process); from another host: going until 6
    /// hours after its last object (or its start), a last write ahead of now included.
    #[test]
    fn an_upload_is_going_while_its_process_lives_or_another_host_wrote_lately() {
        let now = at("2026-12-07T06:00:00Z");
        let here = marker("laptop", 4242);
        assert!(still_going(&here, None, now, "laptop", |p| p == 4242).is_some());
        assert!(still_going(&here, None, now, "laptop", |_| false).is_none());
        let me = marker("laptop", std::process::id());
        assert!(still_going(&me, None, now, "laptop", |_| true).is_none());

        let there = marker("desk", 4242);
        let why = still_going(
            &there,
            Some(at("2026-12-07T05:00:00Z")),
            now,
            "laptop",
            |_| false,
        )
        .unwrap();
        assert!(why.contains("from host desk (process 4242"), "{why}");
        assert!(why.contains("2026-12-07 05:00:00 UTC"), "{why}");
        assert!(
            still_going(
                &there,
                Some(at("2026-12-06T23:59:59Z")),
                now,
                "laptop",
                |_| true
            )
            .is_none()
        );
        assert!(
            still_going(
                &there,
                Some(at("2026-12-07T09:00:00Z")),
                now,
                "laptop",
                |_| false
            )
            .is_some()
        );
        // Nothing written yet: from its start (01:00 UTC), five hours ago.
        assert!(still_going(&there, None, now, "laptop", |_| false).is_some());
    }

    /// A marker's sets are another config's by the rule of `backup.json`'s: a set of the config's name from other
    /// sources is; one sharing a source is not; without sources, by name.
    #[test]
    fn a_marker_is_another_configs_by_its_sets_and_sources() {
        let own = [OwnSet {
            name: "docs".into(),
            paths: vec!["/home/b".into()],
        }];
        let mut m = marker("laptop", 1);
        assert!(m.foreign(Owner::Sets(&own)));
        m.sets[0].sources.push("/home/b".into());
        assert!(!m.foreign(Owner::Sets(&own)));
        m.sets[0].sources.clear();
        assert!(!m.foreign(Owner::Sets(&own)));
        m.sets[0].set = "notes".into();
        assert!(m.foreign(Owner::Sets(&own)));
    }

    #[test]
    fn a_marker_reads_back_and_hostile_ones_are_refused() {
        let m = marker("laptop", 7);
        assert_eq!(UploadMarker::parse(&m.bytes()), Ok(m.clone()));
        let mut bad = m.clone();
        bad.host = "x\u{1b}[31m".into();
        let e = UploadMarker::parse(&bad.bytes()).unwrap_err();
        assert!(e.contains("names the host") && !e.contains('\u{1b}'), "{e}");
        let mut bad = m.clone();
        bad.sets[0].set = "../x".into();
        assert!(UploadMarker::parse(&bad.bytes()).is_err());
        let mut bad = m.clone();
        bad.bases = vec!["../2026".into()];
        assert!(UploadMarker::parse(&bad.bytes()).is_err());
        let mut bad = m;
        bad.format = 2;
        assert!(UploadMarker::parse(&bad.bytes()).is_err());
        assert!(UploadMarker::parse(&vec![b' '; MAX_BYTES as usize + 1]).is_err());
    }
}
