//! Faults of an S3 server that Garage never makes, through the real binary: a fault-injecting proxy
//! ([`testkit::faultproxy`]) in front of a real Garage answers chosen requests with 500/503 or resets them.

use testkit::faultproxy::{Fault, FaultProxy, Rule, Which};
use testkit::objstore::{Garage, S3Client};

use crate::cloud::{config, populate, with_keys};
use crate::harness::{Output, Test};

/// A Garage, a client of its bucket, a proxy in front of it, and a test uploading through the proxy; collected.
fn world(extra: &str) -> Option<(Garage, S3Client, FaultProxy, Test)> {
    let (g, s3) = crate::cloud::garage_and_client()?;
    let proxy = FaultProxy::start(g.port).expect("the fault proxy starts");
    let t = with_keys(
        &config(&proxy.endpoint(), &g.bucket, extra),
        &g.key.id,
        &g.key.secret,
    );
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    Some((g, s3, proxy, t))
}

/// The stamps with a `backup.json` under `laptop/backups/`, oldest first.
fn promoted(s3: &S3Client) -> Vec<String> {
    s3.list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| {
            Some(
                k.strip_suffix("/backup.json")?
                    .rsplit('/')
                    .next()?
                    .to_string(),
            )
        })
        .collect()
}

/// What `backups/LATEST` names on the server (`None`: there is none).
fn latest(s3: &S3Client) -> Option<String> {
    s3.list("laptop/backups/LATEST").first().map(|_| {
        String::from_utf8_lossy(&s3.get("laptop/backups/LATEST"))
            .trim()
            .to_string()
    })
}

/// The stamp of the backup a `--json external` run's report names.
fn backup_of(report: &serde_json::Value) -> String {
    report["destinations"][0]["backup"]
        .as_str()
        .expect("a backup")
        .to_string()
}

/// The set restored from the bucket's newest backup holds each of `files` as the home does.
fn restores(t: &Test, files: &[&str], what: &str) {
    let target = t.path(&format!("restored-{}", what.replace(' ', "-")));
    t.cmd()
        .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
        .args([&target])
        .status(0);
    crate::cloud::assert_restored(t, &target, files, what);
}

/// A second backup (a new file collected, then `external` with `args`): its output.
fn second_backup(t: &Test, args: &[&str], code: i32) -> Output {
    t.write("home/notes/new.txt", "written after the first backup\n");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).args(args).status(code)
}

/// The PUT of `backups/LATEST` fails (503 on every attempt) after `backup.json` was written: the backup is promoted
/// and verified, so the run is a warning (exit 3), as a drive's `latest` that cannot be moved is: the warning names
/// LATEST, why, that dbackup does not need it, and that the next run writes it; never "FAILED" nor "nothing was
/// promoted". The stale LATEST names the older backup, and still `restore --list` and `status` show the new one as
/// the newest and `restore` restores it; the next run (the server answering again) writes LATEST naming its backup.
/// Before: exit 1, "FAILED ...; nothing was promoted (no backup.json)", retention and index copies skipped.
#[test]
fn a_latest_that_cannot_be_written_after_a_promoted_upload_is_a_warning() {
    let Some((_g, s3, proxy, t)) = world("") else {
        return;
    };
    t.cmd().args(["external"]).status(0);
    let first = promoted(&s3);
    assert_eq!(latest(&s3).as_ref(), first.first());

    proxy.add(Rule::new("PUT", "/backups/LATEST", Fault::Status(503)));
    let out = second_backup(&t, &["--json"], 3);
    let report: serde_json::Value = out.json();
    let d = &report["destinations"][0];
    let stamp = d["backup"]
        .as_str()
        .expect("the backup is promoted")
        .to_string();
    assert_eq!(d["exit"], 3, "{d:#}");
    assert!(d["error"].is_null(), "{d:#}");
    assert!(d["latest"].is_null(), "{d:#}");
    let warning = "backups/LATEST was not updated to the new backup (";
    assert!(
        d["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(warning)),
        "{d:#}"
    );
    out.stderr_has(&format!(
        "offsite: backup {stamp} verified and in place at "
    ))
    .stderr_has(&format!("; warning: {warning}"))
    .stderr_has("dbackup finds the newest backup without it")
    .stderr_has("the next run writes it")
    .stderr_lacks("FAILED")
    .stderr_lacks("nothing was promoted");
    assert!(proxy.seen().iter().any(|s| s.faulted), "{}", proxy.shown());
    assert_eq!(promoted(&s3), [first[0].clone(), stamp.clone()]);
    assert_eq!(latest(&s3).as_ref(), first.first(), "stale, not removed");

    // Readers go by the backups' `backup.json`, not LATEST.
    let list = t
        .cmd()
        .args(["restore", "--list", "--source", "cloud"])
        .status(0);
    let newest = list.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        newest.starts_with(&stamp) && newest.contains("verified"),
        "{}",
        list.stdout
    );
    let status = t.cmd().args(["status"]).status(0);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("  offsite ") && l.contains(&format!(" {stamp} "))),
        "the last verified upload: {}",
        status.stdout
    );
    let status: serde_json::Value = t.run_json(&["status"]);
    assert_eq!(
        status["due"]["external"]["destinations"][0]["reason"]
            .as_str()
            .unwrap(),
        format!("its newest backup {stamp} is less than a minute old")
    );
    restores(&t, &["notes/new.txt", "photos/big.raw"], "the new backup");

    // The next run writes LATEST again.
    proxy.clear();
    let out = t.cmd().args(["--json", "external"]).status(0);
    let third: serde_json::Value = out.json();
    assert_eq!(
        latest(&s3).as_deref(),
        third["destinations"][0]["backup"].as_str()
    );
}

/// 128 KiB archive objects (the hidden `DBACKUP_CLOUD_PART_BYTES`): the 3 MiB fixture is an archive of 25 parts,
/// each one PUT, resumable.
fn in_parts(t: Test) -> Test {
    t.env("DBACKUP_CLOUD_PART_BYTES", crate::cloud_resume::PART)
}

/// [`world`] with no extra config, uploading [`in_parts`].
fn world_in_parts() -> Option<(Garage, S3Client, FaultProxy, Test)> {
    world("").map(|(g, s3, proxy, t)| (g, s3, proxy, in_parts(t)))
}

/// The proxy with no rule and an empty log: the server's own answers from now on.
fn afresh(proxy: &FaultProxy) {
    proxy.clear();
    proxy.forget();
}

/// `external` with every PUT of `path` (a part of it) refused (503): the run fails (exit 1) and promotes nothing.
fn refused_every_time(t: &Test, proxy: &FaultProxy, path: &str) -> Output {
    proxy.add(Rule::new("PUT", path, Fault::Status(503)));
    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("offsite: FAILED after ")
        .stderr_has("nothing was promoted (no backup.json)");
    out
}

/// `external`, which must succeed: its new backup's stamp.
fn backup_ok(t: &Test) -> String {
    backup_of(&t.cmd().args(["--json", "external"]).status(0).json())
}

/// The statuses of the requests the proxy saw that `keep` picks, in their order (`None`: reset).
fn statuses(
    proxy: &FaultProxy,
    keep: impl Fn(&testkit::faultproxy::Seen) -> bool,
) -> Vec<Option<u16>> {
    proxy
        .seen()
        .into_iter()
        .filter(|s| keep(s))
        .map(|s| s.status)
        .collect()
}

/// `restore --list --source cloud`, which must succeed.
fn cloud_list(t: &Test) -> Output {
    t.cmd()
        .args(["restore", "--list", "--source", "cloud"])
        .status(0)
}

/// The archive parts PUT through the proxy (every attempt).
fn part_puts(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && s.path.contains(".tar.part"))
        .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

/// The journals of destination `offsite` (`<root>/.upload-journals/offsite/`).
fn journals(t: &Test) -> Vec<String> {
    std::fs::read_dir(t.root().join(".upload-journals/offsite"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The PUT of `backup.json` fails on every attempt (503): exit 1, the error says nothing was promoted; no backup is
/// claimed anywhere (`status` counts none and says the upload can be resumed, `restore --list` finds none); the dry
/// run counts only what is left to upload (before: the whole archive again); the next run resumes the stamp without uploading any archive part again, and its backup restores.
#[test]
fn a_backup_json_that_cannot_be_written_promotes_nothing_and_the_next_run_resumes() {
    let Some((_g, s3, proxy, t)) = world_in_parts() else {
        return;
    };
    refused_every_time(&t, &proxy, "/backup.json").stderr_has("writing backups/");
    assert_eq!(part_puts(&proxy).len(), 25, "{}", proxy.shown());
    assert!(promoted(&s3).is_empty());
    assert_eq!(latest(&s3), None);
    let status = t.cmd().args(["status"]).status(0);
    status
        .stdout_has("can be resumed: 25 of 25 parts uploaded")
        .stdout_has("LAST VERIFIED UPLOAD");
    let row = status.stdout.lines().find(|l| l.starts_with("  offsite "));
    assert!(
        row.is_some_and(|r| r.contains(" none ")),
        "{}",
        status.stdout
    );
    cloud_list(&t).stdout_has("no backups found");
    // The dry run counts only what is left to upload: the index (the parts are all stored).
    let plan: serde_json::Value = t.run_json(&["--dry-run", "external"]);
    let left = plan["clouds"][0]["upload_bytes"].as_u64().unwrap();
    assert!(
        left < 64 << 10,
        "{left} bytes to upload: {:#}",
        plan["clouds"][0]
    );

    afresh(&proxy);
    let out = t.cmd().args(["--json", "external"]).status(0);
    let report: serde_json::Value = out.json();
    let stamp = backup_of(&report);
    out.stderr_has(&format!("resumed {stamp}: 25 parts stored already"));
    assert_eq!(part_puts(&proxy), Vec::<String>::new(), "{}", proxy.shown());
    assert_eq!(promoted(&s3), std::slice::from_ref(&stamp));
    assert_eq!(latest(&s3), Some(stamp));
    assert!(journals(&t).is_empty(), "{:?}", journals(&t));
    restores(&t, &["photos/big.raw", "notes/todo.txt"], "resumed");
}

/// The server stores `backup.json` but its answer is lost (the connection reset after the request, on every
/// attempt): the backup is promoted, so the run reads `backup.json` back, finds its own bytes and goes on as
/// after any promotion (LATEST written, the journal gone, exit 0). Before: exit 1 "FAILED ...; nothing was promoted
/// (no backup.json)" while `status` and `restore --list` showed that very backup as verified.
#[test]
fn a_backup_json_stored_whose_answer_is_lost_is_a_promoted_backup() {
    let Some((_g, s3, proxy, t)) = world_in_parts() else {
        return;
    };
    proxy.add(Rule::new("PUT", "/backup.json", Fault::LoseAnswer));
    let out = t.cmd().args(["--json", "external"]).status(0);
    let report: serde_json::Value = out.json();
    let stamp = backup_of(&report);
    out.stderr_has(&format!(
        "offsite: backup {stamp} verified and in place at "
    ))
    .stderr_lacks("FAILED")
    .stderr_lacks("nothing was promoted");
    let lost = proxy.seen().iter().filter(|s| s.faulted).count();
    assert!(lost >= 1, "{}", proxy.shown());
    assert_eq!(promoted(&s3), std::slice::from_ref(&stamp));
    assert_eq!(latest(&s3), Some(stamp.clone()));
    assert!(journals(&t).is_empty(), "{:?}", journals(&t));
    cloud_list(&t).stdout_has(&stamp);
}

/// The answer to the PUT of `backup.json` is lost and reading it back fails too: whether the backup is promoted is
/// unknown, and the error says so (exit 1) instead of claiming that nothing was; the next run, the server answering
/// again, finds the backup and uploads nothing of it again.
#[test]
fn a_promotion_that_cannot_be_confirmed_is_said_to_be_unknown() {
    let Some((_g, s3, proxy, t)) = world_in_parts() else {
        return;
    };
    proxy.add(Rule::new("PUT", "/backup.json", Fault::LoseAnswer));
    proxy.add(Rule::new("GET", "/backup.json", Fault::Reset));
    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("offsite: FAILED after ")
        .stderr_has("whether the server stored backup.json is unknown")
        .stderr_lacks("nothing was promoted");
    let stamp = promoted(&s3).pop().expect("the server holds backup.json");

    afresh(&proxy);
    t.cmd().args(["external"]).status(0);
    let again: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method != "GET" && s.path.contains(&format!("/backups/{stamp}/")))
        .collect();
    assert!(again.is_empty(), "{}", proxy.shown());
    assert_eq!(
        promoted(&s3).len(),
        2,
        "the next run made a backup of its own"
    );
    assert!(journals(&t).is_empty(), "{:?}", journals(&t));
}

/// One archive part's PUT answers 503 once (a transient error), and one part of a multipart upload 500 once: each
/// is retried (one request more, no other repeated), the run succeeds, and the backup restores.
#[test]
fn a_part_refused_once_is_retried_and_the_run_succeeds() {
    let Some((_g, s3, proxy, t)) = world_in_parts() else {
        return;
    };
    proxy.add(Rule::new("PUT", "docs.tar.part003", Fault::Status(503)).which(Which::Nth(1)));
    let out = t.cmd().args(["--json", "external"]).status(0);
    let stamp = backup_of(&out.json());
    let mut puts = part_puts(&proxy);
    assert_eq!(puts.len(), 26, "{}", proxy.shown());
    puts.dedup();
    assert_eq!(
        puts.len(),
        25,
        "only part003 twice, one after the other: {}",
        proxy.shown()
    );
    assert_eq!(promoted(&s3), std::slice::from_ref(&stamp));

    // A multipart upload (one 32 MiB object of 8 MiB parts): its second part refused once.
    afresh(&proxy);
    crate::cloud::bigger_raw_collected(&t, 20);
    let t = t.env("DBACKUP_CLOUD_PART_BYTES", "33554432");
    proxy.add(
        Rule::new("PUT", "docs.tar.part000", Fault::Status(500))
            .query("partNumber=2&")
            .which(Which::Nth(1)),
    );
    t.cmd().args(["external"]).status(0);
    let uploads: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.query.contains("partNumber="))
        .map(|s| s.query.split('&').next().unwrap().to_string())
        .collect();
    assert_eq!(uploads.len(), 4, "{}", proxy.shown());
    assert_eq!(
        uploads.iter().filter(|q| *q == "partNumber=2").count(),
        2,
        "{}",
        proxy.shown()
    );
    assert!(s3.multipart_uploads("laptop/").is_empty());
    restores(&t, &["photos/bigger.raw", "photos/big.raw"], "retried");
}

/// One archive part refused on every attempt (503): exit 1 with an error that says what the server answered and to
/// run again later; nothing is claimed as a backup; the next run resumes, uploading none of the parts stored.
#[test]
fn a_part_refused_on_every_attempt_fails_clearly_and_the_next_run_resumes() {
    let Some((_g, s3, proxy, t)) = world_in_parts() else {
        return;
    };
    refused_every_time(&t, &proxy, "docs.tar.part003")
        .stderr_has("docs.tar.part003: ")
        .stderr_has("answered 503 (SlowDown: injected by the test proxy) on every attempt")
        .stderr_has("run again later");
    assert_eq!(
        part_puts(&proxy).len(),
        5,
        "3 parts, then part003 twice: {}",
        proxy.shown()
    );
    assert!(promoted(&s3).is_empty());
    cloud_list(&t).stdout_has("no backups found");

    afresh(&proxy);
    let out = t.cmd().args(["external"]).status(0);
    out.stderr_has("3 parts stored already");
    let puts = part_puts(&proxy);
    assert_eq!(puts.len(), 22, "{}", proxy.shown());
    assert_eq!(puts[0], "docs.tar.part003");
}

/// The requests OpenDAL has no call for (the listing of unfinished multipart uploads every run makes, aborting one,
/// setting a retention) are retried as OpenDAL's are: one 503 on the listing is a request more, not a failed run.
/// Before: `external` failed at once, "listing unfinished uploads: ... 503".
#[test]
fn a_listing_of_unfinished_uploads_refused_once_is_retried() {
    let Some((_g, s3, proxy, t)) = world("") else {
        return;
    };
    proxy.add(
        Rule::new("GET", "/", Fault::Status(503))
            .query("uploads")
            .which(Which::Nth(1)),
    );
    let stamp = backup_ok(&t);
    let listings = statuses(&proxy, |s| s.query.starts_with("uploads"));
    assert_eq!(listings, [Some(503), Some(200)], "{}", proxy.shown());
    assert_eq!(promoted(&s3), [stamp]);
}

/// The answer to a CompleteMultipartUpload is lost after the server completed the object: the retry is answered
/// NoSuchUpload (404), yet the object is there, whole. The sink reads it back, finds the bytes it wrote (size and
/// sha256) and goes on: the run succeeds and the backup restores, nothing uploaded twice. Before: exit 1 "completing
/// the upload of ...: not found", and the next run uploaded the object again.
#[test]
fn a_multipart_upload_completed_whose_answer_is_lost_is_kept() {
    let Some((_g, s3, proxy, t)) = world("") else {
        return;
    };
    crate::cloud::bigger_raw_collected(&t, 20);
    // One 32 MiB object of 8 MiB parts: a multipart upload.
    let t = t.env("DBACKUP_CLOUD_PART_BYTES", "33554432");
    proxy.add(
        Rule::new("POST", "docs.tar.part000", Fault::LoseAnswer)
            .query("uploadId=")
            .which(Which::Nth(1)),
    );
    let stamp = backup_ok(&t);
    let completes = statuses(&proxy, |s| {
        s.method == "POST" && s.query.starts_with("uploadId=")
    });
    assert_eq!(completes, [None, Some(404)], "{}", proxy.shown());
    assert_eq!(
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.query.contains("partNumber="))
            .count(),
        3,
        "{}",
        proxy.shown()
    );
    assert_eq!(promoted(&s3), [stamp]);
    restores(&t, &["photos/bigger.raw", "photos/big.raw"], "completed");
    t.cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(0)
        .stdout_has("intact");
}

// A server that hangs or crawls.

/// [`world`] with requests given up after `secs` without progress (`timeout_seconds`).
fn world_timeout(secs: u32) -> Option<(Garage, S3Client, FaultProxy, Test)> {
    world_tuned(secs, 1)
}

/// [`world_timeout`]`(secs)` after one upload, and then `rule`: the download's faults.
fn uploaded_then(secs: u32, rule: Rule) -> Option<(Garage, FaultProxy, Test)> {
    let (g, _, proxy, t) = world_timeout(secs)?;
    t.cmd().args(["external"]).status(0);
    proxy.add(rule);
    Some((g, proxy, t))
}

/// A rule on the GETs of the objects whose path holds `path`.
fn get(path: &str, fault: Fault) -> Rule {
    Rule::new("GET", path, fault)
}

/// [`world_timeout`] with `retries` retries of a failed request.
fn world_tuned(secs: u32, retries: u32) -> Option<(Garage, S3Client, FaultProxy, Test)> {
    let (g, s3) = crate::cloud::garage_and_client()?;
    let proxy = FaultProxy::start(g.port).expect("the fault proxy starts");
    let config = config(&proxy.endpoint(), &g.bucket, "")
        .replace(
            "\"timeout_seconds\": 10",
            &format!("\"timeout_seconds\": {secs}"),
        )
        .replace("\"retries\": 1,", &format!("\"retries\": {retries},"));
    let t = with_keys(&config, &g.key.id, &g.key.secret);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    Some((g, s3, proxy, t))
}

/// Waits for `child`; one still running after `limit` seconds hangs: killed, and the test fails.
fn finish(mut child: std::process::Child, limit: u64, what: &str, proxy: &FaultProxy) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for dbackup").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(limit) {
            let _ = child.kill();
            let out = Output::from(child.wait_with_output().expect("dbackup ends"));
            panic!(
                "{what}: still running after {limit} s, it hangs\n--- stderr\n{}\n--- requests\n{}",
                out.stderr,
                proxy.shown()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Output::from(child.wait_with_output().expect("dbackup's output"))
}

/// Waits (at most a minute) until the proxy has held back a request.
fn until_held(proxy: &FaultProxy) {
    until_faulted(proxy, 1);
}

/// Waits (at most a minute) until the proxy has acted on `n` requests.
fn until_faulted(proxy: &FaultProxy, n: usize) {
    let start = std::time::Instant::now();
    while proxy.seen().iter().filter(|s| s.faulted).count() < n {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "not {n} requests faulted\n{}",
            proxy.shown()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The server takes the listing of unfinished uploads (a request OpenDAL has no call for) and never answers: the
/// run does not hang. Each attempt is given up after `timeout_seconds` without an answer and retried as a transient
/// error is; then the run fails saying which server gave no answer, for what, and for how long, nothing promoted;
/// the next run (the server answering again) backs up. Before: `external` waited forever.
#[test]
fn a_request_never_answered_fails_the_run_instead_of_hanging() {
    let Some((_g, s3, proxy, t)) = world_timeout(2) else {
        return;
    };
    proxy.add(Rule::new("GET", "/", Fault::Hang).query("uploads"));
    let out = finish(t.cmd().args(["external"]).spawn(), 120, "external", &proxy);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, proxy.shown());
    out.stderr_has("no answer for 2 s")
        .stderr_has(&format!("127.0.0.1:{}", proxy.port))
        .stderr_has("unfinished uploads");
    let held = proxy
        .seen()
        .iter()
        .filter(|s| s.faulted && s.query.starts_with("uploads"))
        .count();
    assert_eq!(held, 2, "tried, then retried once\n{}", proxy.shown());
    assert_eq!(promoted(&s3), Vec::<String>::new());

    proxy.clear();
    let out = t.cmd().args(["--json", "external"]).status(0);
    assert_eq!(promoted(&s3), [backup_of(&out.json())]);
}

/// The listing of unfinished uploads is never answered (two attempts of 2 s each): the failure line's time covers
/// the whole run of the destination, the silent listing included, in the line and in `--json`'s `seconds`. Before:
/// "offsite: FAILED after 0.0s", the clock started after the listing.
#[test]
fn a_failed_runs_time_covers_the_silent_listing() {
    let Some((_g, _s3, proxy, t)) = world_timeout(2) else {
        return;
    };
    proxy.add(Rule::new("GET", "/", Fault::Hang).query("uploads"));
    let out = finish(
        t.cmd().args(["--json", "external"]).spawn(),
        120,
        "external",
        &proxy,
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, proxy.shown());
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("offsite: FAILED after "))
        .unwrap_or_else(|| panic!("no failure line: {}", out.stderr));
    let shown: f64 = line["offsite: FAILED after ".len()..]
        .split('s')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a time in seconds: {line}"));
    assert!(shown >= 4.0, "two silences of 2 s: {line}");
    let report: serde_json::Value = out.json();
    let seconds = report["destinations"][0]["seconds"].as_f64().unwrap();
    assert!(seconds >= 4.0, "{:#}", report["destinations"][0]);
}

/// An archive (3 MiB) downloaded at 256 KiB/s, a dozen seconds where a request may wait 2 s without progress
/// (`timeout_seconds`): the restore waits as long as bytes come, and restores. A timeout is on a lack of progress, not on a request's
/// whole time.
#[test]
fn a_slow_download_that_progresses_is_not_cut_off() {
    let Some((_g, proxy, t)) = uploaded_then(2, get("docs.tar", Fault::Trickle(256 << 10))) else {
        return;
    };
    restores(&t, &["notes/todo.txt", "photos/big.raw"], "slowly");
    assert!(proxy.seen().iter().any(|s| s.faulted), "{}", proxy.shown());
}

/// An archive (3 MiB) uploaded at 256 KiB/s, a dozen seconds where a request may wait 2 s without progress: the
/// upload is not cut off, the backup is promoted. Before: every attempt was given up after 2 s, the run failed.
#[test]
fn a_slow_upload_that_progresses_is_not_cut_off() {
    let Some((_g, s3, proxy, t)) = world_timeout(2) else {
        return;
    };
    proxy.add(Rule::new("PUT", "docs.tar", Fault::SlowUpload(256 << 10)));
    let out = t.cmd().args(["--json", "external"]).status(0);
    assert_eq!(promoted(&s3), [backup_of(&out.json())]);
    assert!(proxy.seen().iter().any(|s| s.faulted), "{}", proxy.shown());
    restores(&t, &["notes/todo.txt", "photos/big.raw"], "uploaded slowly");
}

/// The two parts of an upload sent side by side (8 MiB each, `timeout_seconds` 2, `retries` 2: OpenDAL's retries of
/// the upload's completion count each failed part) are taken by the server and never answered, once: each is given
/// up about a minute after its body left (not after its size at 16 KiB/s, 8.5 minutes) and retried, and the backup
/// is promoted. Before: a hung part was awaited `timeout_seconds` plus its size at 16 KiB/s (still waiting after 5
/// minutes).
#[test]
fn hung_parts_of_an_upload_are_retried_after_a_bounded_wait() {
    let Some((_g, s3, proxy, t)) = world_tuned(2, 2) else {
        return;
    };
    crate::cloud::bigger_raw_collected(&t, 20);
    for part in ["partNumber=1&", "partNumber=2&"] {
        proxy.add(
            Rule::new("PUT", "docs.tar.part000", Fault::Hang)
                .query(part)
                .which(Which::Nth(1)),
        );
    }
    let run = t.cmd().args(["--json", "external"]).spawn();
    let out = finish(run, 300, "external with two hung parts", &proxy);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, proxy.shown());
    assert_eq!(promoted(&s3), [backup_of(&out.json())]);
    let held = proxy.seen().iter().filter(|s| s.faulted).count();
    assert_eq!(held, 2, "{}", proxy.shown());
}

/// An archive's download stops (its answer's head sent, then nothing, the connection held open): the restore does
/// not hang; each attempt is given up after `timeout_seconds` of silence, and the restore fails naming the server
/// and how long it was silent. A download that stops midway once is given up and resumed: the restore is whole.
/// Before: the restore waited forever.
#[test]
fn a_download_that_stalls_is_given_up_and_resumed() {
    let Some((_g, proxy, t)) = uploaded_then(2, get("docs.tar", Fault::Stall(0))) else {
        return;
    };
    let target = t.path("restored");
    let restore = || {
        t.cmd()
            .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
            .args([&target])
            .spawn()
    };
    let out = finish(restore(), 120, "restore", &proxy);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, proxy.shown());
    out.stderr_has(&format!(
        "127.0.0.1:{} gave no answer for 2 s (timeout_seconds)",
        proxy.port
    ));

    proxy.clear();
    proxy.forget();
    proxy.add(Rule::new("GET", "docs.tar", Fault::Stall(64 << 10)).which(Which::Nth(1)));
    restores(&t, &["notes/todo.txt", "photos/big.raw"], "stalled once");
    let stalled = proxy.seen().iter().filter(|s| s.faulted).count();
    assert_eq!(stalled, 1, "{}", proxy.shown());
}

/// An archive's download sends 1 KiB and then nothing, every time (its answer's head, 1 KiB of its body, the
/// connection held open): the restore does not crawl on at 1 KiB per `timeout_seconds` without end (OpenDAL's
/// retries count afresh after each chunk received). The object gets `retries + 1` attempts without progress, then
/// the restore fails (exit 1) naming the server, the object and "no progress"; nothing is restored as if whole, and
/// the next restore (the server answering again) restores. Before: still crawling after 90 s.
#[test]
fn a_download_that_stalls_after_a_little_every_time_is_given_up() {
    let Some((_g, proxy, t)) = uploaded_then(2, get("docs.tar.part", Fault::Stall(1 << 10))) else {
        return;
    };
    let target = t.path("restored");
    let restore = t
        .cmd()
        .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
        .args([&target])
        .spawn();
    let out = finish(restore, 90, "restore", &proxy);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, proxy.shown());
    out.stderr_has(&format!(
        "127.0.0.1:{} gave no answer for 2 s (timeout_seconds)",
        proxy.port
    ))
    .stderr_has("docs.tar.part000")
    .stderr_has("no progress");
    let stalled = proxy.seen().iter().filter(|s| s.faulted).count();
    assert_eq!(stalled, 2, "retries + 1 attempts\n{}", proxy.shown());
    assert!(!target.join("notes/todo.txt").exists() || !target.join("photos/big.raw").exists());

    afresh(&proxy);
    restores(
        &t,
        &["notes/todo.txt", "photos/big.raw"],
        "after the stalls",
    );
}

/// SIGTERM during the pause between two attempts (a request refused 503 on every attempt, `retries` 10: the pause
/// after the sixth is 16 s): the run stops at once, exit 143, one line; for the requests dbackup retries itself
/// (the listing of unfinished uploads), for those OpenDAL retries (the bucket's listing), and for the read of an
/// object whole (the multipart upload whose completion's answer was lost, read back). Before: the pause was slept
/// out.
#[test]
fn sigterm_during_the_pause_between_retries_stops_the_run() {
    for (method, path, query) in [
        ("GET", "/", "uploads"),
        ("GET", "/", "list-type=2"),
        ("GET", "docs.tar.part000", ""),
    ] {
        let Some((_g, _s3, proxy, t)) = world_tuned(600, 10) else {
            return;
        };
        let mut t = t;
        let mut held = 6;
        if path != "/" {
            // One 32 MiB object of 8 MiB parts, its completion's answer lost: read back whole.
            crate::cloud::bigger_raw_collected(&t, 20);
            t = t.env("DBACKUP_CLOUD_PART_BYTES", "33554432");
            proxy.add(
                Rule::new("POST", path, Fault::LoseAnswer)
                    .query("uploadId=")
                    .which(Which::Nth(1)),
            );
            held += 1;
        }
        proxy.add(Rule::new(method, path, Fault::Status(503)).query(query));
        let child = t.cmd().args(["external"]).spawn();
        until_faulted(&proxy, held);
        // SAFETY: kill on the pid of a child this test started and has not waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let what = format!("external after SIGTERM ({method} {path}?{query})");
        let out = finish(child, 10, &what, &proxy);
        assert_eq!(out.code, 143, "{what}: {}", out.stderr);
        one_line_interrupted(&out);
    }
}

/// The stderr of a run SIGTERM stopped: one line (beside a warning on a config file's mode).
fn one_line_interrupted(out: &Output) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.contains("has mode 07"))
        .collect();
    assert_eq!(
        lines,
        ["dbackup: interrupted (SIGTERM); the next run resumes"],
        "{}",
        out.stderr
    );
}

/// SIGTERM while a request waits for an answer that does not come (and would be waited for 10 minutes): the run
/// stops at once, exit 143, one line.
#[test]
fn sigterm_while_a_request_hangs_stops_the_run() {
    let Some((_g, _s3, proxy, t)) = world_timeout(600) else {
        return;
    };
    proxy.add(Rule::new("GET", "/", Fault::Hang).query("uploads"));
    let child = t.cmd().args(["external"]).spawn();
    until_held(&proxy);
    // SAFETY: kill on the pid of a child this test started and has not waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = finish(child, 60, "external after SIGTERM", &proxy);
    assert_eq!(out.code, 143, "{}", out.stderr);
    one_line_interrupted(&out);
}

/// SIGTERM while a command that writes nothing waits on a bucket's listing that is never answered (and would be
/// waited for 10 minutes): `status`, `ls`, `find`, `restore --verify` and `cloud check --dry-run` stop at once,
/// exit 143, with one line saying what was interrupted and that nothing was changed. Before: they caught no signal
/// and died of it, without a line.
#[test]
fn sigterm_stops_a_command_that_writes_nothing_with_one_line() {
    let Some((_g, _s3, proxy, t)) = world_timeout(600) else {
        return;
    };
    t.cmd().args(["external"]).status(0);
    for (args, what) in [
        (&["status"][..], "status"),
        (&["ls", "--source", "cloud"], "ls"),
        (&["find", "--source", "cloud", "*.txt"], "find"),
        (
            &["restore", "--verify", "--source", "cloud"],
            "restore --verify",
        ),
        (&["--dry-run", "cloud", "check", "offsite"], "cloud check"),
    ] {
        proxy.clear();
        proxy.forget();
        proxy.add(Rule::new("GET", "/", Fault::Hang).query("list-type=2"));
        let child = t.cmd().args(args).spawn();
        until_held(&proxy);
        // SAFETY: kill on the pid of a child this test started and has not waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let out = finish(child, 60, what, &proxy);
        assert_eq!(out.code, 143, "{what}: {}", out.stderr);
        crate::process::assert_only_line(
            &out.stderr,
            &format!("dbackup: {what} interrupted (SIGTERM); nothing was changed"),
        );
    }
}

/// A cloud error is one short line for people: what failed, which server, what it answered, what to do. OpenDAL's
/// context (the operation, the request, the answer's head: about 400 characters in brackets) only at `-v`.
/// Before: every cloud error line ended with it.
#[test]
fn a_cloud_error_is_a_short_line_and_its_context_shows_at_v() {
    let Some((_g, _s3, proxy, t)) = world("") else {
        return;
    };
    proxy.add(Rule::new("GET", "/", Fault::Status(503)).query("uploads"));
    let failed = |verbose: &[&str]| -> String {
        let out = t.cmd().args(verbose).args(["external"]).status(1);
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("offsite: FAILED after "))
            .unwrap_or_else(|| panic!("no failure line: {}", out.stderr));
        let (_, rest) = line.split_once("s: ").expect("a time");
        format!("offsite: FAILED after [TIME]: {rest}").replace(&proxy.port.to_string(), "[PORT]")
    };
    let line = failed(&[]);
    insta::assert_snapshot!("cloud_error_line", line);
    assert!(
        !line.contains("Unexpected") && !line.contains("status: 503"),
        "{line}"
    );
    let verbose = failed(&["-v"]);
    let context = verbose
        .strip_prefix(&line)
        .unwrap_or_else(|| panic!("-v: the same line, then its context: {verbose}"));
    assert!(
        context.starts_with(" [") && context.contains("status: 503"),
        "{context}"
    );
}
