//! Resumable uploads through the real binary against a real Garage: `dbackup external` kill -9'd after some of an
//! archive's parts, then the next run resumes the same stamp part by part, or starts over cleanly when the local
//! journal does not fit (another snapshot, a part that regenerates differently).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::objstore::{Garage, S3Client};

use crate::cloud::{assert_restored, config, populate, with_keys};
use crate::harness::{Output, Test};

/// 128 KiB parts (the hidden `DBACKUP_CLOUD_PART_BYTES`): the 3 MiB fixture is an archive of about 25 parts.
pub(crate) const PART: &str = "131072";

/// A Garage logging every request, its S3 client, and a test uploading to it in small parts at 1 MiB/s (so a run
/// is caught after a few parts).
fn world() -> Option<(Garage, S3Client, Test)> {
    let g = Garage::start_logging_requests()
        .map_err(|why| testkit::skip(&why))
        .ok()?;
    let s3 = S3Client::for_garage(&g)
        .map_err(|why| testkit::skip(&why))
        .ok()?;
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, r#", "bwlimit": "1M""#),
        &g.key.id,
        &g.key.secret,
    )
    .env("DBACKUP_CLOUD_PART_BYTES", PART);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    Some((g, s3, t))
}

/// The journals of destination `offsite` (`<root>/.upload-journals/offsite/<stamp>.json`).
fn journals(t: &Test) -> Vec<PathBuf> {
    let dir = t.root().join(".upload-journals/offsite");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    !p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".tmp-")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The parts of set docs a journal records.
fn journaled(path: &PathBuf) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|j| j["parts"]["docs"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits until the journal of the upload `child` makes records at least `parts` parts: its path.
fn wait_for_parts(t: &Test, child: &mut std::process::Child, parts: usize) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the upload never got far enough");
        assert!(
            child.try_wait().unwrap().is_none(),
            "external ended too early: {}",
            crate::harness::read_stderr(child)
        );
        if let Some(j) = journals(t).into_iter().find(|j| journaled(j) >= parts) {
            return j;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The stamp a journal is of.
fn stamp_of(journal: &std::path::Path) -> String {
    journal.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Runs `external` (with `args`) and kills it (SIGKILL, by its own pid) once its journal records at least `parts`
/// parts: the stamp it was uploading and the parts its journal holds.
pub(crate) fn kill_after(t: &Test, parts: usize, args: &[&str]) -> (String, usize) {
    let mut child = t.cmd().args(["external"]).args(args).spawn();
    let journal = wait_for_parts(t, &mut child, parts);
    child.kill().unwrap();
    child.wait().unwrap();
    (stamp_of(&journal), journaled(&journal))
}

/// The stamps under `laptop/backups/`.
fn stamps(s3: &S3Client) -> BTreeSet<String> {
    s3.list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST")
        .collect()
}

/// The archive parts written (PUT) to the server since request `from` of its log, by number (`docs.tar.part007`,
/// `docs.tar.age.part007`).
fn parts_put(g: &Garage, from: usize) -> BTreeSet<u32> {
    g.requests_logged()
        .into_iter()
        .skip(from)
        .filter(|r| r.method == "PUT")
        .filter_map(|r| {
            let path = r.path.split('?').next()?.to_string();
            path.rsplit_once(".part")?.1.get(..3)?.parse().ok()
        })
        .collect()
}

/// Runs `external`, which must resume `stamp` with `done` parts stored: the archive parts it PUT, the first
/// being part `done` (none of those stored uploaded again).
fn resumed(g: &Garage, t: &Test, stamp: &str, done: usize) -> BTreeSet<u32> {
    let from = g.requests_logged().len();
    let out = t.cmd().args(["external"]).status(0);
    assert!(
        out.stderr
            .contains(&format!("resumed {stamp}: {done} parts stored already")),
        "{}",
        out.stderr
    );
    let put = parts_put(g, from);
    assert_eq!(
        put.iter().next(),
        Some(&(done as u32)),
        "only the parts after the {done} stored are uploaded: {put:?}"
    );
    put
}

/// The fixture's files ([`populate`]) compared after a restore.
const FILES: [&str; 3] = ["photos/big.raw", "notes/todo.txt", "notes/deep/er/plan.md"];

/// The whole set restored from the bucket (with the identity `key` when it is encrypted) is the home, byte for
/// byte, and `--verify` finds every object intact.
fn restores_whole(t: &Test, name: &str, key: Option<&std::path::Path>) {
    let key: Vec<&std::ffi::OsStr> = key
        .map(|k| vec!["--identity".as_ref(), k.as_os_str()])
        .unwrap_or_default();
    let target = t.path(name);
    t.cmd()
        .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
        .args([&target])
        .args(&key)
        .status(0);
    assert_restored(t, &target, &FILES, name);
    let verify = t
        .cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .args(&key)
        .status(0);
    assert!(verify.stdout.contains("intact"), "{}", verify.stdout);
}

fn dry_run(t: &Test) -> Output {
    t.cmd().args(["--dry-run", "external"]).status(0)
}

/// `external` kill -9'd after at least 4 of the archive's ~25 parts of 128 KiB: the dry run of the next run says
/// "resume <stamp>: N of 25 parts uploaded" and writes nothing; the next run keeps that stamp, PUTs only the parts
/// from N on (counted in Garage's own request log: none of the first N again), promotes it (the only stamp, its
/// journal removed, no multipart upload left), and the set restores byte-identical and verifies intact. The journal
/// was 0600; the JSON plan (valid against its schema) has `resume`. Before: the next run removed the stamp and uploaded every part again under a new one.
#[test]
fn an_upload_killed_after_some_parts_resumes_with_the_rest() {
    let Some((g, s3, t)) = world() else { return };
    let (stamp, done) = kill_after(&t, 4, &[]);
    let journal = t
        .root()
        .join(format!(".upload-journals/offsite/{stamp}.json"));
    assert_eq!(crate::harness::mode(&journal) & 0o777, 0o600);
    assert_eq!(stamps(&s3), BTreeSet::from([stamp.clone()]));

    let dry = dry_run(&t);
    assert!(
        dry.stdout
            .contains(&format!("resume {stamp}: {done} of 25 parts uploaded")),
        "{}",
        dry.stdout
    );
    assert!(
        !dry.stdout.contains("remove unfinished upload"),
        "{}",
        dry.stdout
    );
    assert_eq!(journaled(&journal), done, "a dry run writes nothing");
    let plan: serde_json::Value = t.run_json(&["--dry-run", "external"]);
    crate::json::assert_valid("external-plan", &plan);
    let resume = &plan["clouds"][0]["resume"];
    assert_eq!(resume["stamp"], stamp.as_str());
    assert_eq!(resume["parts_uploaded"], done as u64);
    assert_eq!(plan["clouds"][0]["dir"], format!("backups/{stamp}/"));

    let put = resumed(&g, &t, &stamp, done);
    assert_eq!(put.len(), 25 - done, "{put:?}");
    assert_eq!(stamps(&s3), BTreeSet::from([stamp.clone()]));
    assert_eq!(
        String::from_utf8(s3.get("laptop/backups/LATEST")).unwrap(),
        format!("{stamp}\n")
    );
    assert_eq!(
        journals(&t),
        Vec::<PathBuf>::new(),
        "the journal is removed"
    );
    assert_eq!(s3.multipart_uploads(""), Vec::<String>::new());
    restores_whole(&t, "r", None);
}

/// Garage killed (by its own pid) once the journal records 3 parts: `external` fails (exit 1) saying the next run
/// resumes what was uploaded, and keeps the journal; with the server back, the next run resumes that stamp, PUTs
/// only the parts not stored, and the backup restores byte-identical. Before: the next run removed the stamp and
/// uploaded everything again.
#[test]
fn a_server_killed_after_some_parts_is_resumed_when_it_is_back() {
    let Some((mut g, s3, t)) = world() else {
        return;
    };
    let mut child = t.cmd().args(["external"]).spawn();
    let journal = wait_for_parts(&t, &mut child, 3);
    g.kill();
    let status = child.wait().unwrap();
    let stderr = crate::harness::read_stderr(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the next run resumes what was uploaded"),
        "{stderr}"
    );
    let done = journaled(&journal);
    assert!(done >= 3, "the journal stays: {done}");
    g.restart().unwrap();
    let stamp = stamp_of(&journal);
    let put = resumed(&g, &t, &stamp, done);
    assert_eq!(put.len(), 25 - done, "{put:?}");
    assert_eq!(stamps(&s3), BTreeSet::from([stamp]));
    restores_whole(&t, "r", None);
}

/// A journal that does not fit leads to a clean upload under a new stamp, never a mixed archive: (1) one part's
/// sha256 altered in the journal: the resume regenerates that part, finds it differs, says so (exit 3), removes
/// the resumed stamp and uploads every part anew; (2) a new snapshot since the kill: the dry run says the
/// unfinished upload is not resumed ("it uploads other snapshots") and will be removed, and the run uploads all
/// parts under a new stamp (`--full`, so it has parts to interrupt). Each time one backup results, restorable byte-identical. Before: every interrupted
/// upload was removed and restarted (there was no journal).
#[test]
fn a_journal_that_does_not_fit_restarts_the_upload_cleanly() {
    let Some((g, s3, t)) = world() else { return };
    let (stamp, done) = kill_after(&t, 3, &[]);
    let journal = t
        .root()
        .join(format!(".upload-journals/offsite/{stamp}.json"));
    let mut j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    j["parts"]["docs"][1]["plain_sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&journal, serde_json::to_vec(&j).unwrap()).unwrap();
    assert!(
        dry_run(&t)
            .stdout
            .contains(&format!("resume {stamp}: {done} of 25"))
    );
    let from = g.requests_logged().len();
    let out = t.cmd().args(["external"]).status(3);
    assert!(
        out.stderr.contains(&format!(
            "the resume of the unfinished upload {stamp} stopped: backups/{stamp}/docs.tar.part001 regenerated"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("uploading a new backup instead"),
        "{}",
        out.stderr
    );
    assert_eq!(parts_put(&g, from).len(), 25, "every part uploaded anew");
    let now = stamps(&s3);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        !now.contains(&stamp),
        "the resumed stamp is removed: {now:?}"
    );
    assert_eq!(journals(&t), Vec::<PathBuf>::new());
    restores_whole(&t, "r1", None);

    // Another snapshot since the kill (full archives: an incremental on the backup above would be one part).
    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.cmd().args(["collect"]).status(0);
    let (stamp, _) = kill_after(&t, 3, &["--full"]);
    t.write("home/notes/todo.txt", "buy milk\nand bread\nand tea\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external", "--full"]).status(0);
    assert!(
        dry.stdout.contains(&format!(
            "the unfinished upload {stamp} is not resumed: it uploads other snapshots"
        )),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains(&format!("remove unfinished upload backups/{stamp}/")),
        "{}",
        dry.stdout
    );
    let from = g.requests_logged().len();
    t.cmd().args(["external", "--full"]).status(0);
    assert!(parts_put(&g, from).len() >= 25);
    assert!(!stamps(&s3).contains(&stamp));
    assert_eq!(stamps(&s3).len(), 2);
    assert_eq!(journals(&t), Vec::<PathBuf>::new());
    restores_whole(&t, "r2", None);
}

/// An upload encrypted to a recipient, kill -9'd after at least 4 parts: its parts are age streams of their own
/// (`docs.tar.part000.age`, ...), so the next run resumes it as a plain one (the dry run says "resume <stamp>: N
/// of"), PUTs only the parts from N on, and the backup restores byte-identical with the identity and verifies
/// intact; docs/RESTORE.md's `age-parts` block (each part through `age -d`, joined into GNU tar) extracts the same
/// bytes from the downloaded objects; every part's `age_head` in `backup.json` is its object's first bytes, the
/// parts reused through the journal included (before: not recorded). Then a run killed again, and the recipients changed: the dry run says the
/// upload is not resumed ("encrypted to other recipients") and the next run uploads every part under a new stamp.
/// Before: an encrypted upload was one age stream, removed and uploaded again whole after any interruption.
#[test]
fn an_encrypted_upload_killed_resumes_part_by_part() {
    let Some((g, s3, t)) = world() else { return };
    let (key, recipient) = t.keygen("key.txt");
    let plain_cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let encrypted_to = |recipient: &str| {
        plain_cfg.replace(
            r#""allow_unencrypted": true"#,
            &format!(r#""encryption": {{ "recipients": ["{recipient}"] }}"#),
        )
    };
    let t = t.config(&encrypted_to(&recipient));
    let (stamp, done) = kill_after(&t, 4, &[]);
    let dry = dry_run(&t);
    assert!(
        dry.stdout.contains(&format!("resume {stamp}: {done} of ")),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("docs.tar.part*.age"), "{}", dry.stdout);
    resumed(&g, &t, &stamp, done);
    assert_eq!(stamps(&s3), BTreeSet::from([stamp.clone()]));
    let dir = format!("laptop/backups/{stamp}/");
    let objects: Vec<String> = s3.list(&dir).into_iter().map(|(k, _)| k).collect();
    assert!(
        objects.contains(&format!("{dir}docs.tar.part000.age")),
        "{objects:?}"
    );

    // Every part's age header and nonce are in backup.json, the parts reused from the killed run (through the
    // journal) as well as those uploaded now: each the object's own first bytes.
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("{dir}backup.json"))).unwrap();
    let parts = meta["sets"][0]["archive"].as_array().unwrap();
    assert!(parts.len() > done, "{} parts", parts.len());
    for p in parts {
        let name = p["name"].as_str().unwrap();
        let head = p["age_head"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no age_head"));
        let head = data_encoding::BASE64.decode(head.as_bytes()).unwrap();
        assert!(head.len() < 1024, "{name}: a {}-byte head", head.len());
        assert!(
            s3.get(&format!("{dir}{name}")).starts_with(&head),
            "{name}: not its head"
        );
    }

    restores_whole(&t, "r", Some(&key));

    // Without dbackup: the objects downloaded, the sums checked, each part through age, joined into tar.
    let down = t.path("down");
    std::fs::create_dir_all(&down).unwrap();
    for k in &objects {
        std::fs::write(down.join(k.strip_prefix(&dir).unwrap()), s3.get(k)).unwrap();
    }
    let dest = t.path("by-hand");
    let script = format!(
        "sha256sum -c verification.sha256\n{}",
        crate::fixtures::guide::blocks("age-parts").concat()
    );
    crate::harness::run_ok(
        std::process::Command::new("bash")
            .args(["-euc", &script])
            .current_dir(&down)
            .env("KEY", &key)
            .env("DEST", &dest),
    );
    assert_restored(&t, &dest, &FILES, "the age-parts block");

    // Killed again, then the recipients changed: a clean restart.
    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.cmd().args(["collect"]).status(0);
    let (stamp, _) = kill_after(&t, 3, &["--full"]);
    let (_, other) = t.keygen("other.txt");
    let t = t.config(&encrypted_to(&other));
    let dry = t.cmd().args(["--dry-run", "external", "--full"]).status(0);
    for line in [
        format!(
            "the unfinished upload {stamp} is not resumed: it was encrypted to other recipients"
        ),
        format!("remove unfinished upload backups/{stamp}/"),
    ] {
        assert!(dry.stdout.contains(&line), "{}", dry.stdout);
    }
    let from = g.requests_logged().len();
    t.cmd().args(["external", "--full"]).status(0);
    assert!(parts_put(&g, from).len() >= 25);
    assert!(!stamps(&s3).contains(&stamp));
    assert_eq!(journals(&t), Vec::<PathBuf>::new());
}

/// A destination removed from the config leaves its upload journals behind: `external` kill -9'd while
/// uploading to `offsite` (its journal `<root>/.upload-journals/offsite/<stamp>.json`), then `offsite` renamed
/// `elsewhere` in the config: the dry run names `offsite`'s journals for removal and removes nothing; the run
/// removes `<root>/.upload-journals/offsite/` (as `.index-copies/` of a removed destination; `-v` says so) and uploads to
/// `elsewhere` (the stamp nobody can resume is removed from the bucket). Before: the journals stayed forever.
#[test]
fn the_journals_of_a_destination_no_longer_in_the_config_are_removed() {
    let Some((_g, s3, t)) = world() else { return };
    let (stamp, _) = kill_after(&t, 2, &[]);
    let old = t.root().join(".upload-journals/offsite");
    assert!(old.join(format!("{stamp}.json")).is_file());
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let t = t.config(&cfg.replace(r#""name": "offsite""#, r#""name": "elsewhere""#));

    let line = "upload journals of destination offsite: removed after the run (no such destination in the config)";
    dry_run(&t).stdout_has(line);
    assert!(old.is_dir(), "a dry run removes nothing");
    let plan: serde_json::Value = t.run_json(&["--dry-run", "external"]);
    crate::json::assert_valid("external-plan", &plan);
    assert_eq!(
        plan["upload_journals_orphaned"],
        serde_json::json!(["offsite"])
    );

    t.cmd().args(["-v", "external"]).status(0).stderr_has(
        "removed the upload journals of destination offsite (no such destination in the config)",
    );
    assert!(!old.exists(), "the journals of offsite are removed");
    let now = stamps(&s3);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(!now.contains(&stamp), "{now:?}");
}

/// `status` after `external` was kill -9'd once its journal recorded at least 4 of the archive's 25 parts: the
/// bucket's lines say the unfinished upload can be resumed, with its stamp and the parts uploaded of those planned
/// (insta snapshot of the text, the stamp, port and count filtered), and `--json status` has them under
/// `clouds[0].resumable` (valid against its schema); no line says the next upload removes it. After the resumed
/// upload, `status` says nothing of it. Before: status said "1 unfinished upload the next upload removes", which
/// the next upload did not do.
#[test]
fn status_says_an_unfinished_upload_can_be_resumed() {
    let Some((g, _s3, t)) = world() else { return };
    let (stamp, done) = kill_after(&t, 4, &[]);

    let status: serde_json::Value = t.run_json(&["status"]);
    crate::json::assert_valid("status", &status);
    let cloud = &status["clouds"][0];
    assert_eq!(cloud["unfinished"], 1);
    let r = &cloud["resumable"];
    assert_eq!(r["stamp"], stamp.as_str());
    assert_eq!(r["parts_uploaded"], done as u64);
    assert_eq!(r["parts_total"], 25);
    assert_eq!(r["bytes_uploaded"], done as u64 * 131072);

    let text = t.cmd().args(["status"]).status(0).stdout;
    let bucket: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "cloud destinations:")
        .take_while(|l| !l.is_empty())
        .collect();
    let shown = bucket
        .join("\n")
        .replace(&g.endpoint(), "http://127.0.0.1:[PORT]")
        .replace(&stamp, "[STAMP]")
        .replace(
            &format!("{done} of 25 parts uploaded ("),
            "[N] of 25 parts uploaded (",
        );
    // The bytes of those parts: `[BYTES]`.
    let shown = match shown.split_once("parts uploaded (") {
        Some((head, tail)) => format!(
            "{head}parts uploaded ([BYTES]{}",
            &tail[tail.find(')').unwrap()..]
        ),
        None => shown,
    };
    insta::assert_snapshot!("status_unfinished_upload_resumable", shown);
    assert!(!text.contains("the next upload removes"), "{text}");

    t.cmd().args(["external"]).status(0);
    let status: serde_json::Value = t.run_json(&["status"]);
    assert_eq!(status["clouds"][0]["resumable"], serde_json::Value::Null);
    assert_eq!(status["clouds"][0]["backups"], 1);
}

/// An upload encrypted to a passphrase, kill -9'd once the bucket lists at least 3 of its parts: its one age
/// stream cannot be regenerated (scrypt with a new salt and file key each time), so no journal is kept; the dry run
/// says "the unfinished upload <stamp> is not resumed: an upload encrypted to a passphrase restarts" and that the
/// stamp will be removed; the run removes it and PUTs every part anew under a new stamp (counted in Garage's log),
/// and the set restores byte-identical with the passphrase and verifies intact. Before: unit-tested only (the
/// plan's table in `external::resume`).
#[test]
fn an_upload_encrypted_to_a_passphrase_restarts_after_a_kill() {
    let Some((g, s3, t)) = world() else { return };
    let pass = t.write_secret("pass.txt", "correct horse battery staple\n");
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let t = t
        .config(&cfg.replace(
            r#""allow_unencrypted": true"#,
            &format!(
                r#""encryption": {{ "passphrase": true, "passphrase_file": "{}" }}"#,
                pass.display()
            ),
        ))
        .env("DBACKUP_PASSPHRASE_FILE", &pass);

    // No journal to watch: Garage's log of the parts PUT.
    let from = g.requests_logged().len();
    let mut child = t.cmd().args(["external"]).spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while parts_put(&g, from).len() < 3 {
        assert!(Instant::now() < deadline, "the upload never got far enough");
        assert!(
            child.try_wait().unwrap().is_none(),
            "external ended too early: {}",
            crate::harness::read_stderr(&mut child)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stamp = stamps(&s3)
        .into_iter()
        .next()
        .expect("a stamp was uploaded");
    assert!(
        !s3.list(&format!("laptop/backups/{stamp}/"))
            .iter()
            .any(|(k, _)| k.ends_with("/backup.json")),
        "killed before the promotion"
    );
    assert_eq!(journals(&t), Vec::<PathBuf>::new(), "no journal is kept");
    assert_eq!(stamps(&s3), BTreeSet::from([stamp.clone()]));

    dry_run(&t)
        .stdout_has(&format!(
            "the unfinished upload {stamp} is not resumed: an upload encrypted to a passphrase restarts"
        ))
        .stdout_has(&format!("remove unfinished upload backups/{stamp}/"));
    let from = g.requests_logged().len();
    t.cmd().args(["external"]).status(0);
    assert!(parts_put(&g, from).len() >= 25, "every part uploaded anew");
    let now = stamps(&s3);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        !now.contains(&stamp),
        "the killed upload is removed: {now:?}"
    );
    restores_whole(&t, "r", None);
}

/// With a verified backup in the bucket and `"retention": 1`, a full upload stopped by SIGTERM (systemd stopping the
/// unit) once its journal records 3 parts: exit 143 saying it was interrupted and the next run resumes, the
/// verified backup still listed (the only one: `restore --list`, `status`) and still `LATEST`, nothing of it
/// removed; the next run resumes the stamp, and only once that backup is verified does retention remove the first:
/// one stamp left, no multipart upload, no journal, and the set restores whole.
#[test]
fn an_upload_stopped_by_sigterm_keeps_the_verified_backup_until_the_next_is_in_place() {
    let Some((g, s3, t)) = world() else { return };
    std::fs::write(
        t.path("config.json"),
        t.expand(&config(
            &g.endpoint(),
            &g.bucket,
            r#", "bwlimit": "1M", "retention": 1"#,
        )),
    )
    .unwrap();
    t.cmd().args(["external"]).status(0);
    let first = stamps(&s3);
    assert_eq!(first.len(), 1);
    let first = first.into_iter().next().unwrap();
    let latest = s3.get("laptop/backups/LATEST");

    t.write("home/notes/later.txt", "later\n");
    std::thread::sleep(Duration::from_millis(1100));
    t.cmd().args(["collect"]).status(0);
    let mut child = t.cmd().args(["external", "--full"]).spawn();
    let journal = wait_for_parts(&t, &mut child, 3);
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stderr = crate::harness::read_stderr(&mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("interrupted (SIGTERM)"), "{stderr}");
    let stamp = stamp_of(&journal);

    let listed: serde_json::Value = t.run_json(&["restore", "--list", "--source", "cloud"]);
    let listed: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["stamp"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [first.as_str()]);
    let status: serde_json::Value = t.run_json(&["status"]);
    assert_eq!(status["clouds"][0]["backups"], 1, "{}", status["clouds"][0]);
    assert_eq!(s3.get("laptop/backups/LATEST"), latest);
    assert!(
        s3.list(&format!("laptop/backups/{first}/"))
            .iter()
            .any(|(k, _)| k.ends_with("/backup.json")),
        "the verified backup is whole"
    );

    let out = t.cmd().args(["external", "--full"]).status(0);
    out.stderr_has(&format!("resumed {stamp}"));
    assert_eq!(stamps(&s3), BTreeSet::from([stamp.clone()]));
    assert_eq!(s3.multipart_uploads("laptop/"), Vec::<String>::new());
    assert_eq!(journals(&t), Vec::<PathBuf>::new());
    restores_whole(&t, "after-sigterm", None);
}

/// Two configs sharing the backup root, each with a cloud destination `offsite` (here another prefix of the same
/// bucket): the other config's upload starts, and finishes, while this config's upload is unfinished; this
/// config's journal is kept and its next run resumes. Before: the other config's upload start removed it, so this
/// upload restarted from nothing.
#[test]
fn another_configs_upload_to_a_destination_of_the_same_name_keeps_this_ones_journal() {
    let Some((_g, s3, t)) = world() else { return };
    let (stamp, done) = kill_after(&t, 3, &[]);
    let journal = t
        .root()
        .join(format!(".upload-journals/offsite/{stamp}.json"));
    t.write("notes/todo.txt", "buy milk\n");
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let other = t.write(
        "other.json",
        cfg.replace(r#""prefix": "laptop""#, r#""prefix": "other""#)
            .replace(r#""name": "docs""#, r#""name": "notes""#)
            .replace(
                &format!(r#""sources": ["{}"]"#, t.home().display()),
                &format!(r#""sources": ["{}"]"#, t.path("notes").display()),
            ),
    );
    let with_other = || {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), other.as_os_str()])
    };
    with_other().args(["collect"]).status(0);
    with_other().args(["external"]).status(0);
    assert_eq!(s3.list("other/backups/LATEST").len(), 1, "the other upload");
    assert!(journal.is_file(), "this config's journal is kept");
    dry_run(&t).stdout_has(&format!("resume {stamp}: {done} of 25 parts uploaded"));
}

/// Runs `external` and stops it (SIGSTOP, by its own pid) once its journal records at least `parts` parts: the
/// stopped child (to be continued by [`go_on`]) and the stamp it is uploading.
fn stop_after(t: &Test, parts: usize) -> (std::process::Child, String) {
    let mut child = t.cmd().args(["external"]).spawn();
    let journal = wait_for_parts(t, &mut child, parts);
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) }, 0);
    (child, stamp_of(&journal))
}

/// Continues a child [`stop_after`] stopped and waits for it: its exit code and stderr.
fn go_on(child: std::process::Child) -> (Option<i32>, String) {
    // SAFETY: as in `stop_after`.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGCONT) }, 0);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Another config of [`world`]'s test on the same bucket and prefix (another machine's, or another config's on this
/// one): its own backup root (`{tmp}/<root>`), its set named `set` from `sources` (under the test directory, `""`:
/// the same home), collected once: its config file, for [`as_config`].
fn on_the_same_prefix(t: &Test, root: &str, set: &str, sources: &str) -> PathBuf {
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let from = match sources {
        "" => t.home(),
        s => t.path(s),
    };
    let other = t.write(
        &format!("{root}.json"),
        cfg.replace(
            &format!(r#""backup_root": "{}""#, t.root().display()),
            &format!(r#""backup_root": "{}""#, t.path(root).display()),
        )
        .replace(r#""name": "docs""#, &format!(r#""name": "{set}""#))
        .replace(
            &format!(r#""sources": ["{}"]"#, t.home().display()),
            &format!(r#""sources": ["{}"]"#, from.display()),
        ),
    );
    as_config(t, &other).args(["collect"]).status(0);
    other
}

/// A command of the config file `other`.
fn as_config(t: &Test, other: &std::path::Path) -> crate::harness::Cmd {
    t.cmd()
        .no_config()
        .args(["--config".as_ref(), other.as_os_str()])
}

/// The objects under `laptop/backups/<stamp>/`.
fn objects_of(s3: &S3Client, stamp: &str) -> Vec<String> {
    s3.list(&format!("laptop/backups/{stamp}/"))
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

/// This config's upload is still going (stopped after at least 3 parts) when another config on the same prefix
/// runs `external`: one whose set is also named `docs` (other sources), then one with a set name of its own. Each
/// leaves the upload alone (its dry run says why), and the upload then goes on, is promoted and restores whole.
/// Before: the `docs` config's upload removed it as its own unfinished upload, and the upload going on failed.
#[test]
fn an_upload_still_going_is_left_alone_by_another_config_on_the_same_prefix() {
    let Some((_g, s3, t)) = world() else { return };
    t.write("notes/todo.txt", "buy milk\n");
    let (child, stamp) = stop_after(&t, 3);
    let held = objects_of(&s3, &stamp);
    let mut dry_runs = Vec::new();
    for (root, set) in [("root-b", "docs"), ("root-c", "notes")] {
        let other = on_the_same_prefix(&t, root, set, "notes");
        dry_runs.push(
            as_config(&t, &other)
                .args(["--dry-run", "external"])
                .status(0),
        );
        as_config(&t, &other).args(["external"]).status(0);
    }
    let after = objects_of(&s3, &stamp);
    let status = as_config(&t, &t.path("root-b.json"))
        .args(["status"])
        .status(0);
    let (code, stderr) = go_on(child);
    status.stdout_has(&format!(
        "unfinished upload backups/{stamp}/ may still be going (being uploaded by process"
    ));
    assert!(
        held.iter().all(|o| after.contains(o)),
        "the upload still going kept its objects: before {held:?}, after {after:?}"
    );
    assert_eq!(
        code,
        Some(0),
        "the upload went on and was promoted: {stderr}"
    );
    assert!(objects_of(&s3, &stamp).contains(&"backup.json".to_string()));
    restores_whole(&t, "after", None);
    for dry in dry_runs {
        dry.stdout_has(&format!("leave backups/{stamp}/ alone: "));
        assert!(
            !dry.stdout
                .contains(&format!("remove unfinished upload backups/{stamp}/")),
            "{}",
            dry.stdout
        );
    }
}

/// This config's upload kill -9'd after at least 3 parts, then another config on the same prefix whose set is also
/// named `docs` (other sources) uploads: it leaves the unfinished upload alone as another config's (its
/// `upload.json` records its sets' sources), and this config's next run resumes it. Before: the other config
/// removed it as its own, and this upload started over.
#[test]
fn a_killed_upload_is_left_to_its_config_by_another_of_the_same_set_name() {
    let Some((g, s3, t)) = world() else { return };
    t.write("notes/todo.txt", "buy milk\n");
    let (stamp, done) = kill_after(&t, 3, &[]);
    let other = on_the_same_prefix(&t, "root-b", "docs", "notes");
    as_config(&t, &other)
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!(
            "leave backups/{stamp}/ alone: an unfinished upload of another config"
        ));
    as_config(&t, &other).args(["external"]).status(0);
    assert!(
        objects_of(&s3, &stamp).len() > done,
        "{:?}",
        objects_of(&s3, &stamp)
    );
    resumed(&g, &t, &stamp, done);
    restores_whole(&t, "resumed", None);
}

/// The same config from two machines at once: the first run's upload is still going while the second (started
/// later: a newer stamp) is promoted and names its backup in `backups/LATEST`; the first then ends. LATEST still
/// names the newer backup (the older run read it first), and a run with a newer stamp still moves it on. Before: the run that ended last wrote its older stamp into LATEST, so another S3 client
/// restoring "the latest" got the older backup.
#[test]
fn latest_never_moves_back_to_an_older_upload_that_ends_last() {
    let Some((_g, s3, t)) = world() else { return };
    let latest = || String::from_utf8_lossy(&s3.get("laptop/backups/LATEST")).into_owned();
    let (child, older) = stop_after(&t, 3);
    let second = on_the_same_prefix(&t, "root-b", "docs", "");
    while chrono::Local::now().format("%Y-%m-%d-%H%M%S").to_string() <= older {
        std::thread::sleep(Duration::from_millis(100));
    }
    as_config(&t, &second).args(["external"]).status(0);
    let newer = latest().trim().to_string();
    assert!(newer > older, "{newer} {older}");
    let (code, stderr) = go_on(child);
    assert_eq!(code, Some(0), "the older upload was promoted: {stderr}");
    assert!(objects_of(&s3, &older).contains(&"backup.json".to_string()));
    assert_eq!(
        latest(),
        format!("{newer}\n"),
        "LATEST stays on the newer backup"
    );

    // A later run of the first machine moves it on (with -v: what it did with LATEST).
    t.write("home/later.txt", "later\n");
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["-v", "external"]).status(0);
    let newest = latest().trim().to_string();
    assert!(newest > newer, "{newest} {newer}: {}", out.stderr);
    out.stderr_has("LATEST updated");
}

/// The same config run from two machines at once (they share no lock): the second run (here another backup root
/// on this machine) leaves the first one's upload, still going, alone, and the first is promoted. An upload whose
/// marker names another host that wrote under its stamp lately is left alone too (its dry run says so), whoever's
/// it is. Before: the second run removed the first one's upload, which then failed.
#[test]
fn a_second_run_of_the_same_config_leaves_an_upload_still_going_alone() {
    let Some((_g, s3, t)) = world() else { return };
    let (child, stamp) = stop_after(&t, 3);
    let second = on_the_same_prefix(&t, "root-b", "docs", "");
    let dry = as_config(&t, &second)
        .args(["--dry-run", "external"])
        .status(0);
    as_config(&t, &second).args(["external"]).status(0);
    let (code, stderr) = go_on(child);
    assert_eq!(code, Some(0), "the first upload was promoted: {stderr}");
    assert!(objects_of(&s3, &stamp).contains(&"backup.json".to_string()));
    dry.stdout_has(&format!(
        "leave backups/{stamp}/ alone: an unfinished upload that may still be going (being uploaded by process"
    ));

    // Another host's upload, kill -9'd there a moment ago.
    let (stamp, _) = kill_after(&t, 3, &["--full"]);
    let key = format!("laptop/backups/{stamp}/upload.json");
    let mut marker: serde_json::Value = serde_json::from_slice(&s3.get(&key)).unwrap();
    marker["host"] = "desk".into();
    let edited = t.write("marker", serde_json::to_vec(&marker).unwrap());
    s3.put(&key, &edited);
    let held = objects_of(&s3, &stamp);
    as_config(&t, &second)
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&format!(
            "leave backups/{stamp}/ alone: an unfinished upload that may still be going (being uploaded from host \
             desk (process"
        ));
    as_config(&t, &second).args(["external"]).status(0);
    assert_eq!(objects_of(&s3, &stamp), held);
    // `status` says so too, and does not count it among the uploads the next upload removes.
    let status: serde_json::Value = as_config(&t, &second)
        .args(["--json", "status"])
        .status(0)
        .json();
    crate::json::assert_valid("status", &status);
    let c = &status["clouds"][0];
    assert_eq!(c["going"][0]["dir"], format!("backups/{stamp}/"), "{c:#}");
    assert_eq!(c["unfinished"], serde_json::Value::Null, "{c:#}");
    as_config(&t, &second)
        .args(["status"])
        .status(0)
        .stdout_has(&format!(
            "unfinished upload backups/{stamp}/ may still be going (being uploaded from host desk (process"
        ))
        .stdout_has("each unfinished upload's upload.json; no archive read");
}

/// The same config from two machines: this machine's incremental upload is still going when the other machine's
/// run (`--full`, `retention` 1) prunes. The backup the upload builds on is kept (its dry run says why), so the
/// upload, promoted, depends only on backups the bucket holds. Before: the other run deleted the base, and the
/// upload going on promoted an incremental whose base was gone.
#[test]
fn the_base_of_an_upload_still_going_is_not_pruned() {
    let Some((_g, s3, t)) = world() else { return };
    t.cmd().args(["external"]).status(0);
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 + i / 97) as u8).collect();
    t.write("home/photos/new.raw", &big);
    t.cmd().args(["collect"]).status(0);
    let (child, stamp) = stop_after(&t, 3);
    let second = on_the_same_prefix(&t, "root-b", "docs", "");
    let cfg = std::fs::read_to_string(&second).unwrap();
    std::fs::write(
        &second,
        cfg.replace(r#""bwlimit": "1M""#, r#""bwlimit": "1M", "retention": 1"#),
    )
    .unwrap();
    let dry = as_config(&t, &second)
        .args(["--dry-run", "external", "--full"])
        .status(0);
    as_config(&t, &second)
        .args(["external", "--full"])
        .status(0);
    let (code, stderr) = go_on(child);
    assert_eq!(code, Some(0), "{stderr}");
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("laptop/backups/{stamp}/backup.json"))).unwrap();
    let bases: Vec<String> = meta["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(bases.len(), 1, "an incremental: {meta:#}");
    for b in &bases {
        assert!(
            objects_of(&s3, b).contains(&"backup.json".to_string()),
            "the base {b} of {stamp} is gone: {:?}",
            stamps(&s3)
        );
        dry.stdout_has(&format!(
            "keep      {b} (kept: the base of backups/{stamp}/"
        ));
    }
}

/// An incremental upload still going whose base's `backup.json` is deleted meanwhile (by hand, or by a run that
/// judged before the upload began): the upload fails before its promotion, saying so, and writes no `backup.json`;
/// the next run uploads a backup whose bases are all there. Before: it promoted an incremental whose base was gone.
#[test]
fn an_upload_whose_base_went_meanwhile_is_not_promoted() {
    let Some((_g, s3, t)) = world() else { return };
    t.cmd().args(["external"]).status(0);
    let base = stamps(&s3).into_iter().next().unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 + i / 97) as u8).collect();
    t.write("home/photos/new.raw", &big);
    t.cmd().args(["collect"]).status(0);
    let (child, stamp) = stop_after(&t, 3);
    s3.delete(&format!("laptop/backups/{base}/backup.json"));
    let (code, stderr) = go_on(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the backup {base} this upload builds on")),
        "{stderr}"
    );
    assert!(!objects_of(&s3, &stamp).contains(&"backup.json".to_string()));
    t.cmd().args(["external"]).status(0);
    let newest = stamps(&s3).into_iter().next_back().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("laptop/backups/{newest}/backup.json"))).unwrap();
    assert!(
        meta["depends_on"].as_array().is_none_or(Vec::is_empty),
        "a full: {meta:#}"
    );
}
