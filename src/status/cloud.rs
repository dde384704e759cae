//! The cloud destinations in `status`: each bucket's last verified upload, bytes stored, restore points and chains,
//! and its age against its schedule, from one listing of `backups/` and each `backup.json` (no archive or index is
//! downloaded; the request count is in the report). A backup whose objects the listing shows missing or not the size
//! its `backup.json` records is damaged, as a drive's files are judged (`external::layout::damaged_by`). Built from [`gather::CloudFacts`] (pure), rendered as a table.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::backups::{
    ExternalStatus, LogDamaged, RestorePoint, is_zero, newest_and_points, newest_cells,
    others_words, render_points,
};
use super::gather;
use crate::config::Schedule;
use crate::external::cloud::GoingUpload;
use crate::external::resume::ResumePlan;
#[cfg(test)]
use crate::settings::CloudSettings;
use crate::stdx;

/// One cloud destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudStatus {
    pub name: String,
    /// `s3 http://127.0.0.1:3900 bucket/prefix` (no secret).
    pub place: String,
    /// The schedule it is written on: its own, else `schedule.external`.
    pub schedule: String,
    /// It was listed (not when it could not be reached: see `error`, nor when it was not looked at).
    pub reachable: bool,
    /// It was not looked at (the status page and `dbackup serve` do not list buckets): `newest` is what the run log
    /// says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_looked_at: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Verified backups (stamps with `backup.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<usize>,
    /// The last verified upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<ExternalStatus>,
    /// What its backups' `backup.json` say they hold (archives, indexes), all together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_stored: Option<u64>,
    /// Uploads never promoted (no `backup.json`): the next upload removes them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unfinished: usize,
    /// The unfinished upload the next upload can resume (its local journal is here): its stamp, parts uploaded of
    /// those planned, bytes uploaded. Counted in `unfinished` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable: Option<ResumePlan>,
    /// Unfinished uploads that may still be going (their `upload.json`), whoever's: the next upload leaves them
    /// alone. Not counted in `unfinished`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub going: Vec<GoingUpload>,
    /// The unfinished uploads' `upload.json` read (one request each, in `requests`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub markers_read: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePoint>,
    /// It was not listed, and the newest backup the run log names on it is one `restore --verify` found damaged:
    /// its stamp and what was found (no newest is known then), as for a drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_damaged: Option<LogDamaged>,
    /// The newest upload the run log tells of here wrote nothing, and no newer backup is known: a problem until one
    /// is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed: Option<gather::Attempt>,
    /// Requests this look took: one listing, then a GET per `backup.json`.
    pub requests: u64,
    /// Verified backups on the bucket of another config that names it alike (holding sets, none of this config's):
    /// not in `backups`, `newest`, `bytes_stored` nor `restore_points`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_configs_backups: usize,
}

/// A bucket's status at `now`. Pure.
pub fn build(
    c: &gather::CloudFacts,
    schedule: &Schedule,
    now: DateTime<FixedOffset>,
    warnings: &mut Vec<String>,
) -> CloudStatus {
    if let Some(e) = &c.error {
        warnings.push(format!("destination {}: {e}", c.settings.name));
    }
    if let Some(r) = &c.resumable {
        warnings.push(format!(
            "destination {}: {}",
            c.settings.name,
            resumable_words(r)
        ));
    }
    let removed = removed_uploads(c.unfinished, c.resumable.as_ref());
    if removed > 0 {
        warnings.push(format!(
            "destination {}: {} (no backup.json), removed by the next upload",
            c.settings.name,
            stdx::counted(removed as u64, "unfinished upload", "unfinished uploads")
        ));
    }
    if let Some(l) = &c.listing
        && l.unusable > 0
    {
        warnings.push(format!(
            "destination {}: {} whose backup.json cannot be used (not counted)",
            c.settings.name,
            stdx::counted(l.unusable as u64, "backup", "backups")
        ));
    }
    let (newest, points) = newest_and_points(c.listing.as_ref(), c.from_log.as_ref(), now);
    CloudStatus {
        name: c.settings.name.clone(),
        place: c.settings.place(),
        schedule: crate::schedule::schedule_word(c.settings.schedule.unwrap_or(schedule.external))
            .to_string(),
        reachable: c.listing.is_some(),
        not_looked_at: !c.looked,
        error: c.error.clone(),
        backups: c.listing.as_ref().map(|l| l.verified),
        newest,
        bytes_stored: c
            .listing
            .as_ref()
            .map(|_| points.iter().fold(0u64, |t, p| t.saturating_add(p.bytes))),
        unfinished: c.unfinished,
        resumable: c.resumable.clone(),
        going: c.going.clone(),
        markers_read: c.markers_read,
        restore_points: points,
        log_damaged: LogDamaged::of(c.log_damaged.as_ref()),
        last_failed: c
            .attempt
            .clone()
            .filter(|a| a.failed_after(c.newest().as_ref())),
        requests: c.requests,
        other_configs_backups: c.listing.as_ref().map_or(0, |l| l.foreign),
    }
}

/// "unfinished upload <stamp> can be resumed: 4 of 25 parts uploaded (512.0 KiB)".
fn resumable_words(r: &ResumePlan) -> String {
    format!(
        "unfinished upload {} can be resumed: {}",
        stdx::show_str(&r.stamp),
        r.uploaded_words()
    )
}

/// The unfinished uploads the next upload removes: all but the one it can resume.
fn removed_uploads(unfinished: usize, resumable: Option<&ResumePlan>) -> usize {
    unfinished.saturating_sub(usize::from(resumable.is_some()))
}

/// The buckets' table, then each one's restore points.
pub fn render(out: &mut String, clouds: &[CloudStatus]) {
    if clouds.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ncloud destinations:");
    let mut rows = vec![vec![
        "DESTINATION".to_string(),
        "SCHEDULE".to_string(),
        "STORED".to_string(),
        "LAST VERIFIED UPLOAD".to_string(),
        "AGE".to_string(),
        "BACKUPS".to_string(),
    ]];
    for c in clouds {
        let unknown = c.error.is_some() || c.log_damaged.is_some();
        let (newest, age) = newest_cells(c.newest.as_ref(), unknown);
        rows.push(vec![
            c.name.clone(),
            c.schedule.clone(),
            c.bytes_stored.map_or("-".to_string(), stdx::bytes),
            newest,
            age,
            c.backups.map_or("-".to_string(), |b| b.to_string()),
        ]);
    }
    out.push_str(&stdx::table(&rows));
    for c in clouds {
        let removed = removed_uploads(c.unfinished, c.resumable.as_ref());
        let _ = writeln!(
            out,
            "  {}: {}; {}{}",
            c.name,
            c.place,
            match &c.error {
                Some(e) => format!("cannot be looked at: {e}"),
                None if c.not_looked_at => "not looked at: what the run log says".to_string(),
                None => format!(
                    "looked at with {} (a listing{}; no archive read)",
                    stdx::counted(c.requests, "request", "requests"),
                    match c.markers_read {
                        0 => " and each backup.json",
                        _ => ", each backup.json and each unfinished upload's upload.json",
                    }
                ),
            },
            if removed > 0 {
                format!(
                    "; {} the next upload removes",
                    stdx::counted(removed as u64, "unfinished upload", "unfinished uploads")
                )
            } else {
                String::new()
            }
        );
        if let Some(r) = &c.resumable {
            let _ = writeln!(out, "    {}", resumable_words(r));
        }
        for g in &c.going {
            let _ = writeln!(
                out,
                "    unfinished upload {} may still be going ({}): the next upload leaves it alone",
                g.dir, g.why
            );
        }
    }
    for c in clouds
        .iter()
        .filter(|c| !c.restore_points.is_empty() || c.other_configs_backups > 0)
    {
        let others = others_words(c.other_configs_backups, "also", "bucket");
        render_points(out, &c.name, &others, &c.restore_points, "bucket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::gather::{BackupFacts, CloudFacts, ListingFacts};

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn backup(stamp: &str, time: &str, base: Option<&str>, bytes: u64) -> BackupFacts {
        BackupFacts {
            stamp: stamp.into(),
            started: at(time),
            finished: at(time),
            bytes,
            sets: vec![("docs".into(), format!("docs-{stamp}"))],
            encryption: None,
            drive_bytes: bytes,
            incremental: base.is_some(),
            base: base.map(str::to_string),
            image_only: false,
            damaged: None,
            broken: None,
        }
    }

    /// A bucket's lines in `status`: schedule, bytes stored (the sum of its backups), last verified upload and
    /// age, the request count, unfinished uploads (the one the next upload can resume with its parts, apart from
    /// those it removes), then its restore points with their chains; an unreachable one says why and becomes a
    /// warning.
    #[test]
    fn a_bucket_in_status() {
        let mut settings = crate::cloud::tests::settings("http://127.0.0.1:3900", "payne");
        settings.schedule = Some(crate::config::ExternalSchedule::Weekly);
        let backups = vec![
            backup(
                "2025-03-30-020000",
                "2025-03-30T02:00:00+02:00",
                None,
                300 << 20,
            ),
            backup(
                "2025-04-06-020000",
                "2025-04-06T02:00:00+02:00",
                Some("2025-03-30-020000"),
                12 << 20,
            ),
        ];
        let facts = CloudFacts {
            settings: settings.clone(),
            looked: true,
            listing: Some(ListingFacts {
                verified: 2,
                newest: backups.last().cloned(),
                backups,
                ..Default::default()
            }),
            unfinished: 2,
            resumable: Some(ResumePlan {
                stamp: "2025-04-10-020000".into(),
                parts_uploaded: 4,
                parts_total: Some(25),
                bytes_uploaded: 512 << 10,
            }),
            going: Vec::new(),
            markers_read: 0,
            error: None,
            from_log: None,
            log_damaged: None,
            attempt: None,
            requests: 5,
        };
        let schedule = crate::config::Schedule::default();
        let now = at("2025-04-10T09:00:00+02:00");
        let mut warnings = Vec::new();
        let ok = build(&facts, &schedule, now, &mut warnings);
        assert_eq!(ok.bytes_stored, Some(312 << 20));
        assert_eq!(ok.restore_points[1].chain, "2025-03-30-020000");
        let down = build(
            &CloudFacts {
                settings: CloudSettings {
                    name: "b2".into(),
                    schedule: None,
                    ..settings
                },
                listing: None,
                unfinished: 0,
                resumable: None,
                error: Some("no answer from s3 http://127.0.0.1:9 payne/laptop/one".into()),
                requests: 0,
                ..facts
            },
            &schedule,
            now,
            &mut warnings,
        );
        let mut text = String::new();
        render(&mut text, &[ok, down]);
        insta::assert_snapshot!(text, @r"

    cloud destinations:
      DESTINATION  SCHEDULE  STORED     LAST VERIFIED UPLOAD  AGE  BACKUPS
      offsite      weekly    312.0 MiB  2025-04-06-020000     4d   2
      b2           weekly    -          unknown               -    -
      offsite: s3 http://127.0.0.1:3900 payne/laptop/one; looked at with 5 requests (a listing and each backup.json; no archive read); 1 unfinished upload the next upload removes
        unfinished upload 2025-04-10-020000 can be resumed: 4 of 25 parts uploaded (512.0 KiB)
      b2: s3 http://127.0.0.1:3900 payne/laptop/one; cannot be looked at: no answer from s3 http://127.0.0.1:9 payne/laptop/one

    offsite: 2 restore points
      2025-03-30-020000  full         300.0 MiB
      2025-04-06-020000  incremental  12.0 MiB   on 2025-03-30-020000, chain of 2025-03-30-020000
    ");
        insta::assert_snapshot!(warnings.join("\n"), @r"
        destination offsite: unfinished upload 2025-04-10-020000 can be resumed: 4 of 25 parts uploaded (512.0 KiB)
        destination offsite: 1 unfinished upload (no backup.json), removed by the next upload
        destination b2: no answer from s3 http://127.0.0.1:9 payne/laptop/one
        ");
    }
}
