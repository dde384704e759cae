//! Cloud destinations through the real binary: the config's rules for them, and `dbackup cloud check` against a
//! real Garage (S3, ignores Object Lock) and moto (enforces it) on 127.0.0.1, started per test and killed by pid.

use serde::Deserialize;
use testkit::objstore::{Garage, Moto, REGION, S3Client, closed_port};

use crate::harness::{Output, Test};

#[derive(Debug, Deserialize)]
struct Report {
    destination: String,
    place: String,
    credentials: Option<serde_json::Value>,
    probes: Vec<Probe>,
    object_lock: String,
    exit: String,
}

#[derive(Debug, Deserialize)]
struct Probe {
    name: String,
    outcome: String,
    detail: String,
}

impl Report {
    fn outcome(&self, name: &str) -> &str {
        &self
            .probes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no probe {name}: {self:?}"))
            .outcome
    }
}

pub(crate) fn garage() -> Option<Garage> {
    Garage::start().map_err(|why| testkit::skip(&why)).ok()
}

/// A Garage and a client of its bucket to look into it independently; `None` (the test skips) without either.
pub(crate) fn garage_and_client() -> Option<(Garage, S3Client)> {
    with_client(garage()?)
}

/// [`garage_and_client`], the Garage logging every request it serves ([`served`]).
fn logging_garage_and_client() -> Option<(Garage, S3Client)> {
    with_client(
        Garage::start_logging_requests()
            .map_err(|why| testkit::skip(&why))
            .ok()?,
    )
}

fn with_client(g: Garage) -> Option<(Garage, S3Client)> {
    match S3Client::for_garage(&g) {
        Ok(s3) => Some((g, s3)),
        Err(why) => {
            testkit::skip(&why);
            None
        }
    }
}

/// A moto server (which enforces Object Lock) and a client of its bucket; `None` (the test skips) without either.
pub(crate) fn moto_and_client() -> Option<(Moto, S3Client)> {
    let m = Moto::start().map_err(|why| testkit::skip(&why)).ok()?;
    let s3 = S3Client::for_moto(&m)
        .map_err(|why| testkit::skip(&why))
        .ok()?;
    Some((m, s3))
}

/// A config with one s3 destination `offsite` (extra keys spliced in).
pub(crate) fn config(endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
            "destinations": [ {{ "name": "offsite", "kind": "s3", "endpoint": "{endpoint}", "bucket": "{bucket}",
              "region": "{REGION}", "prefix": "laptop", "allow_unencrypted": true, "retries": 1,
              "timeout_seconds": 10 {extra} }} ] }}"#
    )
}

/// A test whose one destination is a bucket on a closed port (nothing answers; made-up keys), and that endpoint.
pub(crate) fn on_a_closed_port() -> (Test, String) {
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let t = with_keys(&config(&closed, "bucket1", ""), "GK0000000000", "x");
    (t, closed)
}

/// A test whose keys are in the environment, as systemd units would set them (and `AWS_CA_BUNDLE` when the
/// machine has it: it must not get in the way).
pub(crate) fn with_keys(config: &str, id: &str, secret: &str) -> Test {
    let mut t = Test::new()
        .config(config)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret);
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE") {
        t = t.env("AWS_CA_BUNDLE", bundle);
    }
    t
}

fn check(t: &Test, code: i32, extra: &[&str]) -> (Output, Report) {
    let human = t
        .cmd()
        .args(["cloud", "check", "offsite"])
        .args(extra)
        .status(code);
    let json = t
        .cmd()
        .args(["--json", "cloud", "check", "offsite"])
        .args(extra)
        .status(code);
    (human, json.json())
}

/// Each of `files` (relative to the home) restored into `target` (below the home's absolute path) as the home holds
/// it; `what` names the restore when one differs.
#[track_caller]
pub(crate) fn assert_restored(t: &Test, target: &std::path::Path, files: &[&str], what: &str) {
    let under = target.join(t.home().strip_prefix("/").unwrap());
    for f in files {
        assert_eq!(
            std::fs::read(under.join(f)).unwrap_or_default(),
            std::fs::read(t.home().join(f)).unwrap(),
            "{what}: {f}"
        );
    }
}

/// The byte in the middle of the object `key` XORed with `mask` on the server (written through `<tmp>/altered`).
pub(crate) fn alter_on_server(t: &Test, s3: &S3Client, key: &str, mask: u8) {
    let mut bytes = s3.get(key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= mask;
    put_on_server(t, s3, key, &bytes);
}

/// The object `key` on the server replaced by `bytes` (written through `<tmp>/altered`).
pub(crate) fn put_on_server(t: &Test, s3: &S3Client, key: &str, bytes: &[u8]) {
    let altered = t.path("altered");
    std::fs::write(&altered, bytes).unwrap();
    s3.put(key, &altered);
}

/// `backup.json` under `dir` (`<prefix>/backups/<stamp>/`) on the server rewritten by `edit`, and its line in
/// `verification.sha256` with it (a backup.json that does not match its sums line is not trusted): what a hostile
/// server, or an upload by another version of dbackup, leaves.
pub(crate) fn edit_meta_on_server(
    t: &Test,
    s3: &S3Client,
    dir: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    use sha2::Digest as _;
    let key = format!("{dir}backup.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&s3.get(&key)).unwrap();
    edit(&mut meta);
    let bytes = serde_json::to_vec(&meta).unwrap();
    put_on_server(t, s3, &key, &bytes);
    let sums_key = format!("{dir}verification.sha256");
    let sums: String = String::from_utf8(s3.get(&sums_key))
        .unwrap()
        .lines()
        .map(|l| match l.strip_suffix("  backup.json") {
            Some(_) => format!("{:x}  backup.json\n", sha2::Sha256::digest(&bytes)),
            None => format!("{l}\n"),
        })
        .collect();
    put_on_server(t, s3, &sums_key, sums.as_bytes());
}

/// `home/photos/bigger.raw`, `mib` MiB of bytes that do not compress (more than one 8 MiB part: a multipart
/// upload), then a collect.
pub(crate) fn bigger_raw_collected(t: &Test, mib: u32) {
    let big: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.write("home/photos/bigger.raw", &big);
    drop(big);
    t.cmd().args(["collect"]).status(0);
}

pub(crate) fn no_secret(out: &Output, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "a secret was printed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    for marker in ["Signature=", "X-Amz-Credential", "Credential=GK"] {
        assert!(!out.stdout.contains(marker) && !out.stderr.contains(marker));
    }
}

/// `cloud check` on Garage, which takes Object Lock headers and ignores them: with `object_lock_days` the check
/// writes a locked object, deletes it, and reports the lock as not enforced (exit 1: the destination does not do
/// what the config says); list, write, read back, delete and the uploads listing all pass. Without
/// `object_lock_days` the lock is not tried and the check passes (exit 0). No key or secret is printed.
#[test]
fn cloud_check_on_garage_reports_object_lock_not_enforced() {
    let Some(g) = garage() else { return };
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, r#", "object_lock_days": 1"#),
        &g.key.id,
        &g.key.secret,
    );
    let (human, report) = check(&t, 1, &[]);
    assert_eq!(report.destination, "offsite");
    assert_eq!(
        report.place,
        format!("s3 {} dbackup-test/laptop", g.endpoint())
    );
    for probe in ["list", "write", "read", "delete", "uploads"] {
        assert_eq!(report.outcome(probe), "ok", "{report:?}");
    }
    assert_eq!(report.outcome("object_lock"), "failed");
    assert_eq!(report.object_lock, "not_enforced");
    assert_eq!(report.exit, "failed");
    assert_eq!(
        report.credentials,
        Some(serde_json::json!({ "kind": "environment", "variable": "AWS_ACCESS_KEY_ID" }))
    );
    no_secret(&human, &[&g.key.id, &g.key.secret]);
    let shown = human
        .stdout
        .replace(&g.endpoint(), "http://127.0.0.1:[PORT]");
    let shown = regex_lite_replace(&shown);
    insta::assert_snapshot!("cloud_check_garage_lock_not_enforced", shown);

    // Nothing of the probes stays in the bucket.
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, ""),
        &g.key.id,
        &g.key.secret,
    );
    let (_, report) = check(&t, 0, &[]);
    assert_eq!(report.outcome("object_lock"), "skipped");
    assert_eq!(report.outcome("uploads"), "ok");
}

/// The probe object's stamp and pid, for the snapshot.
fn regex_lite_replace(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(".dbackup-check/") {
            Some(i) => {
                let end = l[i..].find(' ').map(|e| i + e).unwrap_or(l.len());
                format!("{}.dbackup-check/[STAMP]{}", &l[..i], &l[end..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cloud check` on moto, which enforces Object Lock: the locked object cannot be deleted, its retention can be
/// extended (PutObjectRetention, what `external` locks objects uploaded in parts with), the lock is reported
/// enforced and the check passes (exit 0). Before: PutObjectRetention was not tried.
#[test]
fn cloud_check_on_moto_finds_object_lock_enforced() {
    let m = match Moto::start() {
        Ok(m) => m,
        Err(why) => return testkit::skip(&why),
    };
    let t = with_keys(
        &config(&m.endpoint(), &m.bucket, r#", "object_lock_days": 1"#),
        "testing-key-id",
        "testing-secret-key",
    );
    let (human, report) = check(&t, 0, &[]);
    assert_eq!(report.object_lock, "enforced", "{report:?}");
    assert_eq!(report.outcome("object_lock"), "ok");
    assert_eq!(report.exit, "ok");
    assert!(
        human
            .stdout
            .contains("enforced: a locked object could not be deleted"),
        "{}",
        human.stdout
    );
    human.stdout_has("its retention could be extended (PutObjectRetention");
    no_secret(&human, &["testing-key-id", "testing-secret-key"]);
}

/// A key that may only read the bucket is told what it can and cannot do: it lists and would read, it cannot
/// write (so nothing is read back or deleted either): exit 1.
#[test]
fn a_read_only_key_is_told_what_it_cannot_do() {
    let Some(g) = garage() else { return };
    let ro = g.restricted_key("reader", &["--read"]).unwrap();
    let t = with_keys(&config(&g.endpoint(), &g.bucket, ""), &ro.id, &ro.secret);
    let (human, report) = check(&t, 1, &[]);
    assert_eq!(report.outcome("list"), "ok", "{report:?}");
    assert_eq!(report.outcome("write"), "failed");
    assert_eq!(report.outcome("read"), "skipped");
    let write = &report
        .probes
        .iter()
        .find(|p| p.name == "write")
        .unwrap()
        .detail;
    assert!(write.contains("refused the request"), "{write}");
    no_secret(&human, &[&ro.id, &ro.secret]);
}

/// Destinations Garage `g` cannot serve, each with the key id and secret tried and what the refusal says: a wrong
/// secret, a bucket that does not exist, a closed port.
fn unusable(g: &Garage) -> Vec<(String, String, String, &'static str)> {
    let wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let id = || g.key.id.clone();
    vec![
        (
            config(&g.endpoint(), &g.bucket, ""),
            id(),
            wrong.to_string(),
            "refused the request",
        ),
        (
            config(&g.endpoint(), "no-such-bucket", ""),
            id(),
            g.key.secret.clone(),
            "the bucket does not exist",
        ),
        (
            config(&closed, &g.bucket, ""),
            id(),
            g.key.secret.clone(),
            "no answer from",
        ),
    ]
}

/// Wrong keys, a bucket that does not exist and a closed port: each a clear first line and exit 1, no secret.
#[test]
fn wrong_keys_a_missing_bucket_and_a_closed_port_are_clear() {
    let Some(g) = garage() else { return };
    for (config, id, secret, want) in unusable(&g) {
        let t = with_keys(&config, &id, &secret);
        let (human, report) = check(&t, 1, &[]);
        assert_eq!(report.outcome("list"), "failed", "{report:?}");
        assert_eq!(report.outcome("write"), "skipped", "{report:?}");
        assert!(human.stdout.contains(want), "{want}:\n{}", human.stdout);
        no_secret(&human, &[&id, &secret]);
    }
}

/// No keys anywhere, or a credentials file others can read: configuration (exit 2), saying where keys go; a
/// credentials file of mode 0600 works. An unknown name and a drive's name are refused (exit 2).
#[test]
fn keys_come_from_a_private_credentials_file_or_the_environment() {
    let Some(g) = garage() else { return };
    let t = Test::new().config(&config(&g.endpoint(), &g.bucket, ""));
    let out = t.cmd().args(["cloud", "check", "offsite"]).status(2);
    out.stdout_has("AWS_ACCESS_KEY_ID");

    let keys = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        g.key.id, g.key.secret
    );
    let file = t.write("keys.ini", &keys);
    let t = Test::new().config(&config(
        &g.endpoint(),
        &g.bucket,
        &format!(r#", "credentials_file": "{}""#, file.display()),
    ));
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("chmod 600");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (human, report) = check(&t, 0, &[]);
    assert_eq!(report.credentials.unwrap()["kind"], "credentials_file");
    no_secret(&human, &[&g.key.id, &g.key.secret]);

    let out = t.cmd().args(["cloud", "check", "elsewhere"]).status(2);
    out.stderr_has("\"elsewhere\" is not in the config");
}

/// Reading a bucket with no keys anywhere is a configuration error (exit 2, as `cloud check` says), whichever
/// command reads it; no server is needed to find out. Before, `ls`, `find` and `restore --list` from a bucket
/// exited 1 (failed) with the same message.
#[test]
fn reading_a_bucket_without_keys_is_a_configuration_error() {
    let t = Test::new().config(&config("http://127.0.0.1:9", "my-bucket", ""));
    for args in [
        &["ls", "--source", "cloud:offsite"][..],
        &["find", "--source", "cloud:offsite", "notes"],
        &["restore", "--list", "--source", "cloud:offsite"],
        &["cloud", "check", "offsite"],
    ] {
        let out = t.cmd().args(args).status(2);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains("no credentials for cloud destination \"offsite\""),
            "{args:?}: {text}"
        );
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{args:?}: {text}");
    }
}

/// Writing to a bucket with no keys anywhere is a configuration error too (exit 2, as README's table and `cloud check`
/// say), found before anything is written: `external` refuses the run naming the bucket and where keys go (the drive
/// beside it is not written, as for a destination's encryption settings that cannot be used); `backup`, which runs the
/// external phase once per destination, writes the drive and exits 2; `config check` warns of it (exit 0: the keys may
/// be in the environment of the unit that runs the backups). Before, `external` and `backup` exited 1, as for a
/// bucket that failed to answer, and `config check` said nothing.
#[test]
fn writing_to_a_bucket_without_keys_is_a_configuration_error() {
    let t = Test::new();
    let drive = t.path("T9");
    std::fs::create_dir_all(&drive).unwrap();
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
            "external": {{ "mode": "all" }},
            "destinations": [
              {{ "name": "T9", "path": "{}", "require_mount": false }},
              {{ "name": "offsite", "kind": "s3", "endpoint": "http://127.0.0.1:9", "bucket": "my-bucket",
                "region": "{REGION}", "allow_unencrypted": true, "retries": 1, "timeout_seconds": 10 }} ] }}"#,
        drive.display()
    ));
    t.write("home/notes.txt", "notes\n");
    let out = t.cmd().args(["config", "check"]).status(0);
    out.stderr_has("no credentials for cloud destination \"offsite\"")
        .stderr_has("AWS_ACCESS_KEY_ID");
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["external"]).status(2);
    out.stderr_has("no credentials for cloud destination \"offsite\"")
        .stderr_has("AWS_ACCESS_KEY_ID")
        .stderr_has("nothing was written");
    assert!(!drive.join("backups").exists(), "{}", out.stderr);
    // `backup` runs the external phase once per destination due: the drive is written, the bucket refused, exit 2.
    let out = t.cmd().args(["backup", "--force"]).status(2);
    out.stderr_has("external offsite: FAILED: no credentials for cloud destination \"offsite\"")
        .stderr_has("nothing was written");
    assert_eq!(
        crate::fixtures::drive::backups(&drive).len(),
        1,
        "{}",
        out.stderr
    );
}

/// A secret in the config is refused with the place it belongs, and its value is never echoed; a cloud
/// destination without encryption is refused unless `allow_unencrypted`.
#[test]
fn secrets_and_plain_archives_are_refused_by_the_config() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "docs", "sources": ["{home}"] } ],
             "destinations": [ { "name": "offsite", "kind": "s3", "bucket": "my-bucket",
                                 "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" } ] }"#,
    );
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("unknown key \"secret_access_key\"");
    out.stderr_has("credentials never go in the config");
    out.stderr_has("credentials_file");
    assert!(!out.stderr.contains("wJalrXUtnFEMI") && !out.stdout.contains("wJalrXUtnFEMI"));

    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "docs", "sources": ["{home}"] } ],
             "destinations": [ { "name": "offsite", "kind": "s3", "bucket": "my-bucket" } ] }"#,
    );
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("has no encryption");
    out.stderr_has("allow_unencrypted");
}

/// A test with the bucket's keys whose home is populated and collected (nothing uploaded yet).
fn collected(g: &Garage) -> Test {
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, ""),
        &g.key.id,
        &g.key.secret,
    );
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    t
}

/// The line a cloud restore ends with: what it cost in requests and bytes.
pub(crate) fn requests_line(out: &Output) -> String {
    out.stderr
        .lines()
        .filter(|l| l.contains("requests to"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// (HEAD, GET) of a cloud restore, from its last line.
pub(crate) fn requests(out: &Output) -> (u64, u64) {
    let line = requests_line(out);
    let count = |word: &str| -> u64 {
        let end = line
            .find(word)
            .unwrap_or_else(|| panic!("no {word}: {line}"));
        line[..end]
            .trim_end()
            .rsplit([' ', '('])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (count(" HEAD"), count(" GET"))
}

/// The bytes a cloud restore downloaded, from its last line (`... GET), 3.1 MiB downloaded`), to 0.1 of its unit.
fn downloaded(out: &Output) -> u64 {
    let line = requests_line(out);
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "downloaded")
        .expect("downloaded");
    let n: f64 = words[at - 2].parse().unwrap();
    let unit = match words[at - 1] {
        "B" | "bytes" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        u => panic!("unit {u}: {line}"),
    };
    (n * unit) as u64
}

/// The requests Garage served after the first `from` of its log, each as `LIST` or the name of the object read
/// (`docs.tar.part000`), once it has logged `want` of them (it writes a line as it answers; waited for up to 60 s: a
/// loaded machine may be slow to let it write).
fn served(g: &Garage, from: usize, want: u64) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut logged = g.requests_logged();
    while ((logged.len() - from) as u64) < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        logged = g.requests_logged();
    }
    logged[from..]
        .iter()
        .map(|r| match r.path.split_once('?') {
            Some((_, q)) if q.contains("list-type") => "LIST".to_string(),
            _ => r.path.rsplit('/').next().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Files under the test's home: a few small ones, one of 3 MiB, nested directories.
pub(crate) fn populate(t: &Test) {
    t.write("home/notes/todo.txt", "buy milk\n");
    t.write("home/notes/deep/er/plan.md", "# plan\n");
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    t.write("home/photos/big.raw", &big);
    t.write("home/.secrets", "hunter2\n");
}

/// `dbackup external` uploads a backup to an s3 destination with the drive's layout: `backups/<stamp>/` holding
/// `docs.tar.part000`, `docs.index.jsonl`, `verification.sha256` (which `sha256sum -c` accepts against the objects
/// downloaded by another S3 client) and `backup.json`, then `backups/LATEST`; no multipart upload is left, and no
/// key or secret is in any output or object. The dry run shows the upload and writes nothing. Before: main had no
/// cloud destination at all (a `kind` key was a config error).
#[test]
fn external_uploads_a_backup_with_the_drive_layout() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = collected(&g);

    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    assert!(
        dry.stdout.contains("destination offsite (s3 "),
        "{}",
        dry.stdout
    );
    dry.stdout_has("docs.tar.part*");
    assert_eq!(s3.list(""), [], "a dry run writes nothing");

    let out = t.cmd().args(["external"]).status(0);
    no_secret(&out, &[&g.key.id, &g.key.secret]);
    let objects = s3.list("laptop/");
    let names: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    let stamp = names[0]
        .strip_prefix("laptop/backups/")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let dir = format!("laptop/backups/{stamp}/");
    let mut want = vec![
        "laptop/backups/LATEST".to_string(),
        format!("{dir}backup.json"),
        format!("{dir}docs.index.jsonl"),
        format!("{dir}docs.tar.part000"),
        format!("{dir}verification.sha256"),
    ];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        String::from_utf8(s3.get("laptop/backups/LATEST")).unwrap(),
        format!("{stamp}\n")
    );
    out.stdout_has(&stamp);

    // sha256sum -c against the downloaded objects.
    let down = t.path("down");
    std::fs::create_dir_all(&down).unwrap();
    for (key, _) in objects.iter().filter(|(k, _)| k.starts_with(&dir)) {
        std::fs::write(down.join(key.strip_prefix(&dir).unwrap()), s3.get(key)).unwrap();
    }
    let (ok, checked) = crate::fixtures::drive::sha256sum_check(&down);
    assert!(ok, "{checked}");
    for f in [
        "docs.tar.part000: OK",
        "docs.index.jsonl: OK",
        "backup.json: OK",
    ] {
        assert!(checked.contains(f), "{checked}");
    }
    // The archive is a tar GNU tar reads, holding the files.
    let listing = std::process::Command::new("tar")
        .args(["-tf", "docs.tar.part000"])
        .current_dir(&down)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("photos/big.raw"), "{listing}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(down.join("backup.json")).unwrap()).unwrap();
    assert_eq!(meta["destination"], "offsite");
    assert_eq!(meta["verified"], true);
    assert_eq!(meta["filesystem"]["fs_type"], "s3");
    // No secret in any object.
    for (key, _) in &objects {
        let bytes = s3.get(key);
        for secret in [&g.key.id, &g.key.secret] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{key} holds a secret"
            );
        }
    }
    assert_eq!(s3.multipart_uploads(""), Vec::<String>::new());
}

/// Restore from a cloud destination, plain (`allow_unencrypted`) and age-encrypted: `--list --source cloud` shows
/// the backup; one file, a directory and a whole set come back byte-identical under `--target`, each restore first
/// saying what it downloads; `--verify` downloads and finds every object intact; an object altered on the server
/// is named by `--verify` (exit 1); one cut short stops a one-file restore before it writes (its size against the
/// listing's; before: an encrypted archive's final chunk read to find out, a plain one not checked). No key or
/// secret in any output; no object of the encrypted backup holds a file name or content in the clear.
///
/// Requests, as Garage logged them: one small file costs the listing, `backup.json` and its sums line (choosing
/// the backup), the index in one GET, then one ranged GET of the archive: its header and content (encrypted: the
/// 64 KiB chunks holding them; age's header of the part and its payload nonce are in `backup.json`, `age_head`;
/// before it, a file past the stream's first chunk cost 6 requests, one more GET for that header). A hard link
/// whose first name is not restored costs the same (its content's own header checked in that GET). With
/// `age_head` removed (a backup uploaded before it), that file still restores, with the extra GET; with a byte of
/// age's header in it altered, the restore fails before it writes anything (the header's MAC checked with the
/// keys), with a byte of the nonce altered, at the first chunk read, as for a damaged object (no file left); either
/// way `--verify` names the part (its first bytes are not the head recorded). No HEAD. Before (plain / encrypted): 5 /
/// 7 for a small file at the archive's start, 6 / 8 for one after
/// the 3 MiB file and 8 / 8 for a hard link to it (the archive's header read for the ancestors' directories, the
/// link's own header and its first name's at plan time, and, encrypted, age's header and final chunk to check
/// the keys and authenticate the archive's end). A 3 MiB file: its bytes in one ranged GET (at most 3.1 MiB
/// downloaded, the index included); a set in at most 12. Before the ranged reads: one file cost 10 requests
/// (3 HEAD) and a whole set 411 (each seek a new ranged stream).
#[test]
fn restore_from_the_cloud_one_file_a_directory_and_a_set() {
    let Some((g, s3)) = logging_garage_and_client() else {
        return;
    };
    for encrypted in [false, true] {
        let prefix = if encrypted { "enc" } else { "plain" };
        let probe = Test::new();
        let (identity, recipient) = probe.keygen("key");
        let extra = if encrypted {
            format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#)
        } else {
            String::new()
        };
        let t = with_keys(
            &config(&g.endpoint(), &g.bucket, &extra)
                .replace(r#""prefix": "laptop""#, &format!(r#""prefix": "{prefix}""#)),
            &g.key.id,
            &g.key.secret,
        );
        populate(&t);
        // A small file stored after the 3 MiB one (past the first 64 KiB chunk), and a hard link to it in another
        // directory (stored as a link: its content is the first name's).
        let small: Vec<u8> = (0..12_600u32).map(|i| (i * 13 + i / 7) as u8).collect();
        t.write("home/q/orig.bin", &small);
        t.write("home/z/.keep", "");
        std::fs::hard_link(t.home().join("q/orig.bin"), t.home().join("z/link.bin")).unwrap();
        t.cmd().args(["collect"]).status(0);
        t.cmd().args(["external"]).status(0);
        if encrypted {
            // Nothing in the bucket names or holds the plaintext: not a file name, not a file's content.
            for (key, _) in s3.list(&format!("{prefix}/")) {
                let bytes = s3.get(&key);
                for plain in ["todo.txt", "hunter2", "photos/big.raw"] {
                    assert!(
                        !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                        "{key} holds {plain:?} in the clear"
                    );
                }
            }
        }
        let id_args: Vec<String> = if encrypted {
            vec!["--identity".into(), identity.display().to_string()]
        } else {
            Vec::new()
        };
        let home = t.home().display().to_string();

        let list = t
            .cmd()
            .args(["restore", "--list", "--source", "cloud"])
            .status(0);
        let stamp = s3.list(&format!("{prefix}/backups/"))[0]
            .0
            .split('/')
            .nth(2)
            .unwrap()
            .to_string();
        list.stdout_has(&stamp);
        no_secret(&list, &[&g.key.id, &g.key.secret]);

        let (index, archive) = if encrypted {
            ("docs.index.age", "docs.tar.part000.age")
        } else {
            ("docs.index.jsonl", "docs.tar.part000")
        };
        // `restore --path ~/<rel> --target <target>` from the bucket (with the identity when encrypted).
        let restore_path = |rel: &str, target: &std::path::Path, code: i32| {
            t.cmd()
                .args(["restore", "--source", "cloud:offsite", "--path"])
                .args([format!("{home}/{rel}"), "--target".into()])
                .args([target])
                .args(&id_args)
                .status(code)
        };
        let mut wrong = Vec::new();
        // What is restored, and the GETs of the archive it costs (plain, encrypted); `None`: not counted exactly.
        for (what, rel, archive_gets) in [
            ("one file", "notes/todo.txt", Some((1, 1))),
            ("a file deep in the archive", "q/orig.bin", Some((1, 1))),
            ("its hard link", "z/link.bin", Some((1, 1))),
            ("one 3 MiB file", "photos/big.raw", Some((1, 1))),
            ("a directory", "notes", None),
        ] {
            let files = match rel {
                "notes" => vec!["notes/todo.txt", "notes/deep/er/plan.md"],
                file => vec![file],
            };
            let target = t.path(&format!("r-{prefix}-{}", rel.replace('/', "-")));
            let from = g.requests_logged().len();
            let out = restore_path(rel, &target, 0);
            assert!(out.stderr.contains("downloading"), "{what}: {}", out.stderr);
            let (heads, gets) = requests(&out);
            let served = served(&g, from, heads + gets);
            eprintln!(
                "{what} ({prefix}): {}; served: {served:?}",
                requests_line(&out)
            );
            assert_eq!(heads, 0, "{what} ({prefix}): no HEAD");
            assert_eq!(
                served.len() as u64,
                gets,
                "{what} ({prefix}): Garage served what dbackup counted"
            );
            if let Some(n) = archive_gets.map(|g| if encrypted { g.1 } else { g.0 }) {
                let mut want: Vec<&str> = vec!["LIST", "backup.json", "verification.sha256", index];
                want.extend(std::iter::repeat_n(archive, n));
                if served != want {
                    wrong.push(format!("{what}: served {served:?}, want {want:?}"));
                }
            } else if gets > 7 {
                wrong.push(format!("{what}: {}", requests_line(&out)));
            }
            if what == "one 3 MiB file" {
                // Beyond the file only the index, the metadata and (encrypted) a chunk's worth (the line says 3.1
                // MiB at most, to 0.1 MiB).
                let extra = downloaded(&out).saturating_sub(3 << 20);
                assert!(extra <= 110 << 10, "{what}: {}", requests_line(&out));
            }
            no_secret(&out, &[&g.key.id, &g.key.secret]);
            assert_restored(&t, &target, &files, &format!("{what} ({prefix})"));
        }
        assert!(wrong.is_empty(), "{prefix}:\n{}", wrong.join("\n"));
        let target = t.path(&format!("r-{prefix}-set"));
        let out = t
            .cmd()
            .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
            .args([&target])
            .args(&id_args)
            .status(0);
        no_secret(&out, &[&g.key.id, &g.key.secret]);
        eprintln!("a whole set ({prefix}): {}", requests_line(&out));
        assert!(
            requests(&out).1 <= 12,
            "whole set ({prefix}): {}",
            requests_line(&out)
        );
        let files = ["photos/big.raw", ".secrets", "notes/deep/er/plan.md"];
        assert_restored(&t, &target, &files, &format!("whole set ({prefix})"));

        let verify = t
            .cmd()
            .args(["restore", "--verify", "--source", "cloud"])
            .args(&id_args)
            .status(0);
        verify.stdout_has("intact");
        verify.stderr_has("downloads");
        if encrypted {
            recorded_heads_absent_or_altered(
                &g,
                &s3,
                &t,
                &format!("{prefix}/backups/{stamp}/"),
                |rel, name, code| restore_path(rel, &t.path(name), code),
                &id_args,
            );
        }

        // One byte of the archive changed on the server: --verify names the object.
        let part = if encrypted {
            "docs.tar.part000.age"
        } else {
            "docs.tar.part000"
        };
        alter_on_server(&t, &s3, &format!("{prefix}/backups/{stamp}/{part}"), 0x55);
        let verify = t
            .cmd()
            .args(["restore", "--verify", "--source", "cloud"])
            .args(&id_args)
            .status(1);
        verify.stdout_has(&format!("mismatch   {part}"));
        no_secret(&verify, &[&g.key.id, &g.key.secret]);

        // The archive cut short on the server: a one-file restore stops before writing anything, from the sizes
        // the listing gives (no archive is read to its end for it).
        let key = format!("{prefix}/backups/{stamp}/{part}");
        let bytes = s3.get(&key);
        let cut = t.path("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        s3.put(&key, &cut);
        let target = t.path(&format!("r-{prefix}-cut"));
        let out = restore_path("notes/todo.txt", &target, 1);
        out.stderr_has(&format!(
            "{part} is {} bytes on the bucket, not the {} recorded",
            bytes.len() - 100,
            bytes.len()
        ));
        out.stderr_has("nothing was written");
        assert!(!target.exists(), "nothing written");
    }
}

/// The encrypted backup of `restore_from_the_cloud_one_file_a_directory_and_a_set` (`dir` its objects) with its
/// parts' `age_head` records removed, then altered: see that test's comment. `restore(rel, target name, code)`
/// restores `~/<rel>` from the bucket. Leaves `backup.json` and its sums as they were.
fn recorded_heads_absent_or_altered(
    g: &Garage,
    s3: &S3Client,
    t: &Test,
    dir: &str,
    restore: impl Fn(&str, &str, i32) -> Output,
    id_args: &[String],
) {
    let (meta_key, sums_key) = (
        format!("{dir}backup.json"),
        format!("{dir}verification.sha256"),
    );
    let (meta, sums) = (s3.get(&meta_key), s3.get(&sums_key));
    let archive = "docs.tar.part000.age";
    let parts = |m: &mut serde_json::Value| -> Vec<serde_json::Value> {
        m["sets"][0]["archive"].as_array().unwrap().clone()
    };
    let recorded: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    let head = recorded["sets"][0]["archive"][0]["age_head"]
        .as_str()
        .expect("the part's age head is recorded")
        .to_string();

    // Absent (an older upload): the file still restores, with one more GET for age's header.
    edit_meta_on_server(t, s3, dir, |m| {
        let mut list = parts(m);
        for p in &mut list {
            p.as_object_mut().unwrap().remove("age_head");
        }
        m["sets"][0]["archive"] = list.into();
    });
    let from = g.requests_logged().len();
    let out = restore("q/orig.bin", "r-no-head", 0);
    let served = served(g, from, requests(&out).1);
    let mut want = vec![
        "LIST",
        "backup.json",
        "verification.sha256",
        "docs.index.age",
    ];
    want.extend([archive, archive]);
    assert_eq!(served, want, "no age_head: {}", requests_line(&out));
    assert_restored(t, &t.path("r-no-head"), &["q/orig.bin"], "no age_head");

    // Altered: a byte of age's header (its MAC fails), or of the payload nonce (the chunk's tag fails).
    let bytes = data_encoding::BASE64.decode(head.as_bytes()).unwrap();
    for (what, at) in [("header", bytes.len() / 2), ("nonce", bytes.len() - 1)] {
        let mut altered = bytes.clone();
        altered[at] ^= 0x01;
        let altered = data_encoding::BASE64.encode(&altered);
        put_on_server(t, s3, &meta_key, &meta);
        put_on_server(t, s3, &sums_key, &sums);
        edit_meta_on_server(t, s3, dir, |m| {
            m["sets"][0]["archive"][0]["age_head"] = altered.into();
        });
        let target = t.path(&format!("r-bad-head-{what}"));
        let out = restore("q/orig.bin", &format!("r-bad-head-{what}"), 1);
        eprintln!("altered {what}: {}", out.stderr);
        out.stderr_has(archive);
        if what == "header" {
            // Authenticated with the keys before the restore starts (no request): nothing written.
            out.stderr_has("age_head");
            out.stderr_has("nothing was written");
            assert!(!target.exists(), "{what}: nothing written");
        } else {
            // Found by the first chunk read, as a damaged chunk of the object is: the file is not left behind.
            let said = format!("{}{}", out.stdout, out.stderr);
            assert!(said.contains("does not authenticate"), "{what}: {said}");
            assert!(
                !target.join("q/orig.bin").exists(),
                "{what}: no file written"
            );
        }
        let verify = t
            .cmd()
            .args(["restore", "--verify", "--source", "cloud"])
            .args(id_args)
            .status(1);
        verify.stdout_has(&format!(
            "mismatch   {archive}: its first bytes are not the age header backup.json records"
        ));
    }
    put_on_server(t, s3, &meta_key, &meta);
    put_on_server(t, s3, &sums_key, &sums);
}

/// Garage killed (SIGKILL) in the middle of an upload (held to 4 MiB/s by `bwlimit` so it is caught in the act):
/// `external` fails (exit 1) saying nothing was promoted; once the server is back nothing is listed as a backup,
/// the dry run of the next run shows the unfinished multipart upload it will abort, and the next run aborts it and
/// uploads a backup: one stamp, no multipart upload left. Before: main had no cloud destination.
#[test]
fn a_server_killed_mid_upload_leaves_nothing_listed_and_the_next_run_cleans_up() {
    let Some((mut g, s3)) = garage_and_client() else {
        return;
    };
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, r#", "bwlimit": "4M""#),
        &g.key.id,
        &g.key.secret,
    );
    populate(&t);
    bigger_raw_collected(&t, 40);

    let mut child = t.cmd().args(["external"]).spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s3.multipart_uploads("laptop/").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "external ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    g.kill();
    let status = child.wait().unwrap();
    let stderr = crate::harness::read_stderr(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was promoted"), "{stderr}");
    assert!(
        !stderr.contains(&g.key.secret) && !stderr.contains(&g.key.id),
        "{stderr}"
    );

    g.restart().unwrap();
    let list = t
        .cmd()
        .args(["--json", "restore", "--list", "--source", "cloud"])
        .status(0);
    let listed: serde_json::Value = list.json();
    assert_eq!(listed["backups"], serde_json::json!([]), "{}", list.stdout);
    assert_eq!(s3.multipart_uploads("laptop/").len(), 1);

    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("abort unfinished multipart upload of backups/");
    assert_eq!(
        s3.multipart_uploads("laptop/").len(),
        1,
        "a dry run aborts nothing"
    );

    let out = t.cmd().args(["external"]).status(0);
    out.stderr_has("removed 1 leftover");
    assert_eq!(s3.multipart_uploads("laptop/"), Vec::<String>::new());
    let stamps: std::collections::BTreeSet<String> = s3
        .list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST")
        .collect();
    assert_eq!(stamps.len(), 1, "{stamps:?}");
}

/// Wrong keys, a bucket that does not exist and a closed port, through `external`: exit 1, a message that says
/// what to do, the destination's failure in the report, and no key or secret. Before: no cloud destination.
#[test]
fn external_to_a_cloud_with_wrong_keys_a_missing_bucket_or_a_closed_port_fails_clearly() {
    let Some(g) = garage() else { return };
    let mut cases = unusable(&g);
    cases.push((
        config(&g.endpoint(), &g.bucket, ""),
        "GK000000000000000000000000".to_string(),
        g.key.secret.clone(),
        "refused the request",
    ));
    for (config, id, secret, want) in cases {
        let t = with_keys(&config, &id, &secret);
        populate(&t);
        t.cmd().args(["collect"]).status(0);
        let out = t.cmd().args(["external"]).status(1);
        assert!(out.stderr.contains(want), "{want}:\n{}", out.stderr);
        no_secret(&out, &[&id, &secret]);
        let dry = t.cmd().args(["--dry-run", "external"]).status(1);
        dry.stdout_has("REFUSED");
    }
}

/// `status` with a bucket as the only destination does not tell the user to configure one: its drives section
/// says there is no drive and points at the cloud destinations below (which list the bucket, here unreachable).
/// Before: "destinations: none configured (add one to "destinations" for the external phase)" above the bucket
/// the config has.
#[test]
fn status_with_only_a_bucket_does_not_say_no_destination_is_configured() {
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let t = with_keys(&config(&closed, "bucket1", ""), "GK0123", "s3cr3t");
    let out = t.cmd().args(["status"]).output();
    out.stdout_lacks("none configured");
    out.stdout_has("no drive configured (the cloud destinations are below)");
    out.stdout_has("cloud destinations:");
}

/// Every `--json` output read from a bucket matches its schema in `docs/json/`: `ls` and `find` (whose entries say
/// `"source": "cloud"`), `restore --verify` (a bucket's report: each object hashed against `verification.sha256`)
/// and `cloud check` (`docs/json/cloud-check.json`). Before: ls.json and find.json allowed only `local` and
/// `external`, restore-verify.json described only the drive's report, and `cloud check --json` had no schema.
#[test]
fn the_json_read_from_a_bucket_matches_its_schemas() {
    let Some((g, _s3)) = garage_and_client() else {
        return;
    };
    let t = collected(&g);
    t.cmd().args(["external"]).status(0);
    let home = t.home().display().to_string();
    for (schema, args) in [
        ("ls", vec!["ls", "--source", "cloud", &home]),
        ("find", vec!["find", "--source", "cloud", "todo.txt"]),
        (
            "restore-verify",
            vec!["restore", "--verify", "--source", "cloud"],
        ),
        ("cloud-check", vec!["cloud", "check", "offsite"]),
    ] {
        let out = t.cmd().args(["--json"]).args(&args).status(0);
        let v: serde_json::Value = out.json();
        assert_eq!(v["format"], 1, "{schema}: {}", out.stdout);
        crate::json::assert_valid(schema, &v);
    }
}

/// `dbackup --dry-run cloud check` changes nothing on the bucket: it lists (the keys, the bucket, unfinished
/// uploads) and says what it would write, read back, delete and lock, without a PUT, POST or DELETE (counted on
/// Garage's side). Before: the dry run wrote, read and deleted its probe object as a real check does (and with
/// `--object-lock` would have left a locked object behind for a day).
#[test]
fn a_dry_run_cloud_check_writes_nothing() {
    let Some((g, _s3)) = logging_garage_and_client() else {
        return;
    };
    let t = with_keys(
        &config(&g.endpoint(), &g.bucket, ""),
        &g.key.id,
        &g.key.secret,
    );
    let from = g.requests_logged().len();
    let out = t
        .cmd()
        .args(["--dry-run", "cloud", "check", "offsite", "--object-lock"])
        .status(0);
    let writes: Vec<String> = g.requests_logged()[from..]
        .iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "a dry run wrote: {writes:?}\n{}",
        out.stdout
    );
    out.stdout_has("ok    list");
    out.stdout_has("skip  write       not tried: --dry-run writes nothing");
    out.stdout_has("skip  object_lock not tried: --dry-run writes nothing");
}

/// One backup on a bucket whose `backup.json` is not valid (here: a `depends_on` naming a later backup, with its
/// sums line made to match) does not hide the others from `find`: it is named as not searched (exit 1, as for any
/// backup not searched) and the matches in the other backup are printed. Before: `find` stopped at that
/// `backup.json` and printed nothing.
#[test]
fn find_on_a_bucket_searches_past_a_backup_whose_metadata_is_invalid() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = collected(&g);
    t.cmd().args(["external", "--full"]).status(0);
    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external", "--full"]).status(0);
    let mut stamps: Vec<String> = s3
        .list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST")
        .collect();
    stamps.dedup();
    assert_eq!(stamps.len(), 2, "{stamps:?}");
    let later = stamps[1].clone();
    edit_meta_on_server(&t, &s3, &format!("laptop/backups/{}/", stamps[0]), |m| {
        m["depends_on"] = serde_json::json!([later]);
    });
    let out = t
        .cmd()
        .args(["find", "--source", "cloud", "todo.txt"])
        .status(1);
    out.stdout_has(&format!("{}  offsite", stamps[1]));
    out.stderr_has(&format!("offsite {} was not searched", stamps[0]));
}

/// A bucket `status` cannot list is not "ok", even when the run log knows of a recent upload there: after an upload,
/// its endpoint stops answering (a closed port), then its keys are refused. `status` headlines that it cannot tell
/// and names the bucket, `--json` says `ok: false` and lists it in `unseen`, `--check` exits 3 (an unknown is not
/// ok, nor a known failure); no secret in any of it. (The status page does not look at buckets: README.) Before:
/// "status: ok, nothing is overdue", `--check` exit 0, the failure only under "warnings:".
#[test]
fn a_bucket_that_cannot_be_listed_is_not_ok() {
    let Some((g, _s3)) = garage_and_client() else {
        return;
    };
    let t = collected(&g);
    t.cmd().args(["external"]).status(0);
    t.cmd().args(["status", "--check"]).status(0);
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let down = t.expand(&config(&closed, &g.bucket, ""));
    let up = t.expand(&config(&g.endpoint(), &g.bucket, ""));
    for (config, secret) in [
        (&down, g.key.secret.as_str()),
        (
            &up,
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        std::fs::write(t.path("config.json"), config).unwrap();
        let run = |args: &[&str], code: i32| {
            let out = t
                .cmd()
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .args(args)
                .status(code);
            for text in [&out.stdout, &out.stderr] {
                assert!(!text.contains(secret), "a secret in {args:?}:\n{text}");
            }
            out
        };
        let out = run(&["status"], 0);
        let headline = out.stdout.lines().next().unwrap_or("");
        assert!(
            headline.starts_with("status: UNKNOWN: destination offsite could not be looked at"),
            "{headline}\n{}",
            out.stdout
        );
        let v: serde_json::Value = run(&["--json", "status"], 0).json();
        crate::json::assert_valid("status", &v);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["unseen"][0]["what"], "destination offsite", "{v}");
        run(&["status", "--check"], 3).stderr_has(
            "dbackup: status check: cannot tell whether the backups are good: destination offsite could not be looked at",
        );
    }
}

/// The worst day: the laptop is gone with its config, and the user reaches for the bucket with `restore --source
/// cloud`, `ls` and `find`, no config file anywhere (the built-in default has no bucket). Each refuses (exit 2) and
/// says what to do next: add the bucket to a config, as docs/RESTORE.md shows. Before: "the config has no cloud
/// destination (...)" alone, and the guide never said how to restore from a bucket with dbackup.
#[test]
fn without_a_config_naming_a_bucket_restore_says_how_to_reach_it() {
    let t = Test::new();
    for args in [
        &["restore", "--list", "--source", "cloud"][..],
        &["restore", "--source", "cloud", "--all"],
        &["ls", "--source", "cloud"],
        &["find", "--source", "cloud", "x"],
    ] {
        let out = t.cmd().no_config().args(args).status(2);
        out.stderr_has("the config has no cloud destination")
            .stderr_has("add the bucket to the config's \"destinations\"")
            .stderr_has("docs/RESTORE.md")
            .stderr_has("restore from that directory with --drive DIR");
    }
}

/// A test whose home is collected and uploaded once to the bucket (plain, under `laptop`), and that backup's stamp.
fn uploaded(g: &Garage, s3: &S3Client) -> (Test, String) {
    let t = collected(g);
    t.cmd().args(["external"]).status(0);
    let stamp = s3.list("laptop/backups/")[0]
        .0
        .split('/')
        .nth(2)
        .unwrap()
        .to_string();
    (t, stamp)
}

/// A `restore --verify --source cloud` that finds an object altered ends, as a drive's does (through the same
/// code), with an error line saying which backup is not intact, its first problem and what to do next. Before: it
/// exited 1 with its report on stdout and no closing line.
#[test]
fn a_failed_verify_of_a_bucket_says_what_is_damaged_and_what_next() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, stamp) = uploaded(&g, &s3);
    alter_on_server(
        &t,
        &s3,
        &format!("laptop/backups/{stamp}/docs.tar.part000"),
        0x55,
    );
    let verify = t
        .cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(1);
    verify
        .stderr_has(&format!(
            "backup {stamp} on offsite is not intact (1 problem): docs.tar.part000: sha256"
        ))
        .stderr_has("a restore of this backup still brings back every file that is intact")
        .stderr_has("`dbackup find PATH`");
}

/// A restore from a bucket names the backup each file came from, as a drive's does with its directory: the heading
/// says `from backups/<stamp>/docs.tar.part000`. Before: `from docs.tar.part000` (which backup, unsaid).
#[test]
fn a_bucket_restore_names_the_backup_its_files_came_from() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, stamp) = uploaded(&g, &s3);
    let target = t.path("r");
    let out = t
        .cmd()
        .args(["restore", "--source", "cloud", "--path"])
        .args([t.home().join("notes/todo.txt")])
        .args(["--target"])
        .args([&target])
        .status(0);
    out.stdout_has(&format!("(docs, from backups/{stamp}/docs.tar.part000):"));
}
