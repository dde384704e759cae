//! Object Lock through `dbackup external` against moto's S3 server (which enforces retention), started per test
//! and killed by pid: what `object_lock_days` puts on the uploaded objects (multipart ones and parts a resume
//! reuses included), read back with another S3 client; and on Garage, which has no Object Lock.

use testkit::objstore::S3Client;

use crate::cloud::{bigger_raw_collected, config, moto_and_client, no_secret, populate, with_keys};

/// Days of retention the config asks for.
const DAYS: i64 = 2;

/// Checks every object under `dir` carries COMPLIANCE retention until about [`DAYS`] days after `before`, except
/// `LATEST` (replaced on every run: never locked) and the keys in `unlocked`, which must carry none.
fn assert_locked(
    s3: &S3Client,
    dir: &str,
    before: chrono::DateTime<chrono::Utc>,
    unlocked: &[&str],
) {
    for (key, _) in s3.list(dir) {
        let retention = s3.retention(&key);
        if key.ends_with("/LATEST") || unlocked.contains(&key.as_str()) {
            assert_eq!(retention, None, "{key}");
            continue;
        }
        let (mode, until) = retention.unwrap_or_else(|| panic!("{key} carries no retention"));
        assert_eq!(mode, "COMPLIANCE", "{key}");
        let until = chrono::DateTime::parse_from_rfc3339(&until)
            .unwrap_or_else(|e| panic!("{key}: {until}: {e}"));
        let hours = (until.with_timezone(&chrono::Utc) - before).num_hours();
        assert!(
            (DAYS * 24 - 1..=DAYS * 24 + 1).contains(&hours),
            "{key}: retained {hours} h, not {DAYS} days"
        );
    }
}

/// The one backup stamp under `laptop/backups/` that is not in `seen`.
fn new_stamp(s3: &S3Client, seen: &[String]) -> String {
    let stamps: std::collections::BTreeSet<String> = s3
        .list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST" && !seen.contains(s))
        .collect();
    assert_eq!(stamps.len(), 1, "{stamps:?}");
    stamps.into_iter().next().unwrap()
}

/// `object_lock_days: 2` on a destination, through `external` on moto (a bucket with Object Lock on): every object
/// of the backup (the archive, its index, `verification.sha256`, `backup.json`) carries COMPLIANCE retention until
/// about two days from now, as another S3 client (boto3, HEAD) reads it; `LATEST`, replaced on every run, carries
/// none. Deleting a version of a locked object (the archive, the sums) before its date is refused by the server
/// (AccessDenied) and every object is still there. The dry run says what will be locked.
///
/// Multipart objects: a second backup whose archive is larger than one upload part (8 MiB) goes up as a multipart
/// upload, whose CreateMultipartUpload carries the same lock headers (real S3 applies them to the object). moto
/// 5.2.5 drops them (checked by hand with boto3 alone too: a multipart object created with lock headers has no
/// retention and can be deleted), so `external` sets the archive's retention after completing it
/// (PutObjectRetention): it is locked like the rest of the backup, and deleting its version is refused. Before:
/// on moto that archive carried no retention and could be deleted (this test asserted so).
#[test]
fn external_with_object_lock_days_writes_every_backup_object_locked() {
    let Some((m, s3)) = moto_and_client() else {
        return;
    };
    let (id, secret) = ("testing-key-id", "testing-secret-key");
    let t = with_keys(
        &config(
            &m.endpoint(),
            &m.bucket,
            &format!(r#", "object_lock_days": {DAYS}"#),
        ),
        id,
        secret,
    );
    populate(&t);
    t.cmd().args(["collect"]).status(0);

    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("every object locked (Object Lock, compliance) until");
    assert_eq!(s3.list(""), [], "a dry run writes nothing");
    let before = chrono::Utc::now();
    let out = t.cmd().args(["external"]).status(0);
    no_secret(&out, &[id, secret]);

    let first = new_stamp(&s3, &[]);
    let dir = format!("laptop/backups/{first}/");
    let names: Vec<String> = s3.list(&dir).into_iter().map(|(k, _)| k).collect();
    for name in [
        "docs.tar.part000",
        "docs.index.jsonl",
        "verification.sha256",
        "backup.json",
    ] {
        assert!(
            names.contains(&format!("{dir}{name}")),
            "{name} not in {names:?}"
        );
    }
    assert_locked(&s3, "laptop/", before, &[]);

    // The server refuses to delete a locked version before its date.
    let objects = s3.list("laptop/");
    let versions = s3.versions("laptop/");
    for name in ["docs.tar.part000", "verification.sha256"] {
        let key = format!("{dir}{name}");
        let (_, version) = versions
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no version of {key} in {versions:?}"));
        let err = s3
            .delete_version(&key, version)
            .expect_err("a locked version was deleted");
        assert!(err.contains("AccessDenied"), "{key}: {err}");
    }
    assert_eq!(s3.list("laptop/"), objects, "nothing went");

    // A second backup with an archive of more than one 8 MiB part: a multipart upload.
    bigger_raw_collected(&t, 12);
    let before = chrono::Utc::now();
    t.cmd().args(["external"]).status(0);
    let second = new_stamp(&s3, &[first]);
    let dir = format!("laptop/backups/{second}/");
    let archive = format!("{dir}docs.tar.part000");
    let size = s3
        .list(&dir)
        .into_iter()
        .find(|(k, _)| *k == archive)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no {archive}"));
    assert!(size > 8 << 20, "{size}: one part only");
    assert_locked(&s3, &dir, before, &[]);
    assert_delete_refused(&s3, &archive);
}

/// Deleting the newest version of `key` is refused by the server (AccessDenied), and the object stays.
fn assert_delete_refused(s3: &S3Client, key: &str) {
    let versions = s3.versions(key);
    let (_, version) = versions
        .iter()
        .rfind(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no version of {key} in {versions:?}"));
    let err = s3
        .delete_version(key, version)
        .expect_err("a locked version was deleted");
    assert!(err.contains("AccessDenied"), "{key}: {err}");
    assert!(s3.list(key).iter().any(|(k, _)| k == key), "{key} went");
}

/// With `object_lock_days`, an upload kill -9'd after at least 3 of its 25 parts of 128 KiB (at 1 MiB/s) leaves
/// those parts locked until the killed run's date; the next run resumes them (not uploaded again) and extends
/// their retention (PutObjectRetention) to its own date, the one its `backup.json` carries, later than the killed
/// run's: every object of the backup is then locked until the same date. Before: the reused parts kept the killed
/// run's earlier date.
#[test]
fn parts_reused_by_a_resume_are_locked_until_the_resuming_runs_date() {
    let Some((m, s3)) = moto_and_client() else {
        return;
    };
    let extra = format!(r#", "object_lock_days": {DAYS}, "bwlimit": "1M""#);
    let t = with_keys(&config(&m.endpoint(), &m.bucket, &extra), "k", "s")
        .env("DBACKUP_CLOUD_PART_BYTES", crate::cloud_resume::PART);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    let (stamp, done) = crate::cloud_resume::kill_after(&t, 3, &[]);
    let dir = format!("laptop/backups/{stamp}/");
    let until = |key: &str| {
        let (_, until) = s3
            .retention(key)
            .unwrap_or_else(|| panic!("{key} carries no retention"));
        chrono::DateTime::parse_from_rfc3339(&until).unwrap()
    };
    let part = |n: usize| format!("{dir}docs.tar.part{n:03}");
    let killed = until(&part(0));

    // The dates are to the second: the resuming run's is later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = chrono::Utc::now();
    t.cmd()
        .args(["external"])
        .status(0)
        .stderr_has(&format!("resumed {stamp}: {done} parts stored already"));
    let resumed = until(&format!("{dir}backup.json"));
    assert!(resumed > killed, "{resumed} is not after {killed}");
    for n in 0..done {
        assert_eq!(until(&part(n)), resumed, "{}", part(n));
    }
    assert_locked(&s3, &dir, before, &[]);
    assert_delete_refused(&s3, &part(0));
}

/// `object_lock_days` on Garage, which takes lock headers and ignores them and has no PutObjectRetention: a backup
/// whose archive goes up as a multipart upload (more than 8 MiB) is still uploaded, promoted and intact (`restore
/// --verify`), and the run warns (exit 3) that the archive's retention could not be set, pointing at `cloud check`.
/// Before: the run said nothing (exit 0) and the archive was silently unlocked.
#[test]
fn a_server_without_put_object_retention_gets_the_backup_and_a_warning() {
    let Some((g, s3)) = crate::cloud::garage_and_client() else {
        return;
    };
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, r#", "object_lock_days": 1"#),
        &g.key.id,
        &g.key.secret,
    );
    populate(&t);
    bigger_raw_collected(&t, 10);
    let out = t.cmd().args(["external"]).status(3);
    out.stderr_has("docs.tar.part000 could not be set (")
        .stderr_has("`dbackup cloud check offsite` tests whether the bucket enforces Object Lock");
    let stamp = new_stamp(&s3, &[]);
    assert!(
        s3.list(&format!("laptop/backups/{stamp}/"))
            .iter()
            .any(|(k, _)| k.ends_with("/backup.json")),
        "promoted"
    );
    t.cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(0)
        .stdout_has("intact");
}
