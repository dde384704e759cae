//! Incremental uploads to a bucket through the real binary, against a real Garage: a second upload carries only
//! what changed (an incremental on the bucket's newest backup, its base index fetched from the bucket and checked),
//! and restore from the bucket reads through the chain.

use testkit::objstore::{Garage, S3Client};

use crate::harness::{Cmd, Test};

use crate::cloud::{
    alter_on_server, assert_restored, config, garage_and_client, no_secret, populate,
    put_on_server, requests, requests_line, with_keys,
};

/// The files of the set after the chain tests' changes.
const SET_FILES: [&str; 5] = [
    "photos/big.raw",
    ".secrets",
    "notes/todo.txt",
    "notes/new.txt",
    "notes/deep/er/plan.md",
];

/// A test with `external.incremental` on and the destination's `extra` keys, under `prefix` of the bucket, whose
/// home is populated, collected and uploaded once.
fn first_upload(g: &Garage, extra: &str, prefix: &str) -> Test {
    let cfg = config(&g.endpoint(), &g.bucket, extra)
        .replace(r#""prefix": "laptop""#, &format!(r#""prefix": "{prefix}""#))
        .replace(
            r#""destinations": ["#,
            r#""external": { "incremental": { "enabled": true } }, "destinations": ["#,
        );
    let t = with_keys(&cfg, &g.key.id, &g.key.secret);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    t
}

/// [`first_upload`] of a set encrypted to a new age key: the config's `Test`, the identity's path, and the `Test`
/// holding that key (keep it while the identity is used).
fn first_encrypted_upload(g: &Garage, prefix: &str) -> (Test, std::path::PathBuf, Test) {
    let keys = Test::new();
    let (identity, recipient) = keys.keygen("key");
    let extra = format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#);
    (first_upload(g, &extra, prefix), identity, keys)
}

/// On a new Garage bucket, [`first_encrypted_upload`] under `prefix` and a second upload there (an incremental
/// adding `notes/new.txt`): the server, its client, the config's `Test`, the identity and the `Test` holding it;
/// `None` (the test skips) without Garage.
fn two_encrypted_uploads(
    prefix: &str,
) -> Option<(Garage, S3Client, Test, std::path::PathBuf, Test)> {
    let (g, s3) = garage_and_client()?;
    let (t, identity, keys) = first_encrypted_upload(&g, prefix);
    second_upload_under(&t, &s3, prefix, &[("home/notes/new.txt", "a new file\n")]);
    Some((g, s3, t, identity, keys))
}

/// The second upload under `laptop` (an incremental: todo.txt changed, and `also` written): both stamps, oldest first.
fn second_upload(t: &Test, s3: &S3Client, also: &[(&str, &str)]) -> Vec<String> {
    second_upload_under(t, s3, "laptop", also)
}

/// [`second_upload`] under `prefix`.
fn second_upload_under(
    t: &Test,
    s3: &S3Client,
    prefix: &str,
    also: &[(&str, &str)],
) -> Vec<String> {
    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    for (path, text) in also {
        t.write(path, text);
    }
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let all = stamps(s3, prefix);
    assert_eq!(all.len(), 2, "{all:?}");
    all
}

/// `restore --source cloud --path PATH --target TARGET`.
fn restore_path(t: &Test, path: &str, target: &std::path::Path) -> Cmd {
    t.cmd()
        .args(["restore", "--source", "cloud", "--path", path, "--target"])
        .args([target])
}

/// The 3 MiB file of the uploads, as `--path` names it.
fn big_raw(t: &Test) -> String {
    t.home().join("photos/big.raw").display().to_string()
}

/// The backups' stamps under `<prefix>/backups/` of the bucket, oldest first.
fn stamps(s3: &S3Client, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = s3
        .list(&format!("{prefix}/backups/"))
        .into_iter()
        .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
        .filter(|s| s != "LATEST")
        .collect();
    v.dedup();
    v
}

/// With `external.incremental` on, a second `external` to an s3 destination after one small file changed and one
/// was added is an incremental on the first upload: the dry run says so beforehand with what it will store, its
/// `backup.json` has `kind: incremental`, `base` and `depends_on` naming the first, its archive object is a small
/// fraction of the full's (the 3 MiB file is not uploaded again). Restore from the bucket through the chain: the
/// unchanged 3 MiB file (its bytes in the full: one ranged read there), the changed file, a directory and the whole
/// set come back byte-identical to the home. The base's index altered on the server (one byte changed): the next
/// dry run plans a full, saying why. Before:
/// every upload was full ("buckets take full archives"), and restore refused an incremental set on a bucket.
#[test]
fn a_second_upload_is_an_incremental_and_restores_through_the_chain() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let stamps = |s3: &S3Client| stamps(s3, "laptop");
    let first = stamps(&s3)[0].clone();

    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.write("home/notes/new.txt", "a new file\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has(&format!(
        "incremental on {first} (chain 2 of 7): 2 files to store"
    ));
    assert_eq!(stamps(&s3).len(), 1, "a dry run uploads nothing");
    let out = t.cmd().args(["external"]).status(0);
    no_secret(&out, &[&g.key.id, &g.key.secret]);
    let all = stamps(&s3);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = all[1].clone();
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("laptop/backups/{second}/backup.json"))).unwrap();
    let set = &meta["sets"][0];
    assert_eq!(set["kind"], "incremental", "{meta}");
    assert_eq!(set["base"], first.as_str());
    assert_eq!(meta["depends_on"], serde_json::json!([first.clone()]));
    let size =
        |stamp: &str| -> u64 { s3.list(&format!("laptop/backups/{stamp}/docs.tar.part000"))[0].1 };
    assert!(
        size(&second) * 20 < size(&first),
        "the incremental uploads {} bytes, the full {}",
        size(&second),
        size(&first)
    );

    let home = t.home().display().to_string();
    for (what, path, files) in [
        (
            "a file kept in the full",
            format!("{home}/photos/big.raw"),
            vec!["photos/big.raw"],
        ),
        (
            "a changed file",
            format!("{home}/notes/todo.txt"),
            vec!["notes/todo.txt"],
        ),
        (
            "a directory",
            format!("{home}/notes"),
            vec!["notes/todo.txt", "notes/new.txt", "notes/deep/er/plan.md"],
        ),
    ] {
        let target = t.path(&format!("r-{}", what.replace(' ', "-")));
        let out = restore_path(&t, &path, &target).status(0);
        eprintln!("{what}: {}", requests_line(&out));
        assert_eq!(requests(&out).0, 0, "{what}: no HEAD");
        assert_restored(&t, &target, &files, what);
    }
    let target = t.path("r-set");
    let out = t
        .cmd()
        .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
        .args([&target])
        .status(0);
    eprintln!("a whole set: {}", requests_line(&out));
    assert_restored(&t, &target, &SET_FILES, "whole set");
    let verify = t
        .cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(0);
    verify.stdout_has("intact");

    // The newest backup's index altered on the server: the next upload does not build on it (a full, saying why).
    let key = format!("laptop/backups/{second}/docs.index.jsonl");
    alter_on_server(&t, &s3, &key, 0x01);
    t.write("home/notes/todo.txt", "buy milk\nand bread\nand eggs\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    assert!(
        dry.stdout
            .contains(&format!("full: backup {second} of the chain is damaged"))
            || dry
                .stdout
                .contains(&format!("full: the base {second} cannot be used")),
        "{}",
        dry.stdout
    );
}

/// An encrypted set on a bucket gets incrementals too: the first upload keeps a local plaintext copy of its index
/// (`<root>/.index-copies/offsite/<stamp>/docs.index`, 0600); the second, after one file changed and one was added,
/// is an incremental on the first (the dry run says so beforehand with what it stores, and where the new copy goes),
/// its base's encrypted index downloaded and hashed against `backup.json`, its manifest read from the copy; the
/// superseded copy is removed. The bucket holds no plaintext index and no file name or content in the clear. With
/// the identity, one file kept in the full, the changed one and the whole set come back through the chain
/// byte-identical; the changed small file and the 3 MiB file kept in the full cost 7 GETs each (the listing, the
/// two backup.json files and their sums, the index, the file's age chunks in one ranged GET; before: 9 and 11, the
/// archives' age headers and final chunks read first, and 15 before the ranged reads), and no HEAD. Without the
/// local copy the next upload
/// is a full, the dry run saying why. Before: every upload of an encrypted set to a bucket was a full ("incrementals
/// of encrypted sets on a bucket are not written yet").
#[test]
fn an_encrypted_set_gets_incrementals_on_a_bucket_through_its_local_index_copy() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, identity, _keys) = first_encrypted_upload(&g, "enc");
    let first = stamps(&s3, "enc")[0].clone();
    let copies = t.root().join(".index-copies/offsite");
    let copy = |stamp: &str| copies.join(stamp).join("docs.index");
    assert_eq!(crate::harness::mode(&copy(&first)), 0o600);

    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.write("home/notes/new.txt", "a new file\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    for line in [
        format!("incremental on {first} (chain 2 of 7): 2 files to store"),
        "index     a plaintext copy of each index in".to_string(),
        format!("remove    local index copy {first}/docs (no longer a base)"),
    ] {
        assert!(dry.stdout.contains(&line), "{line}: {}", dry.stdout);
    }
    let out = t.cmd().args(["external"]).status(0);
    no_secret(&out, &[&g.key.id, &g.key.secret]);
    let all = stamps(&s3, "enc");
    assert_eq!(all.len(), 2, "{all:?}");
    let second = all[1].clone();
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("enc/backups/{second}/backup.json"))).unwrap();
    assert_eq!(meta["sets"][0]["kind"], "incremental", "{meta}");
    assert_eq!(meta["sets"][0]["base"], first.as_str());
    let archive_bytes = |stamp: &str| -> u64 {
        s3.list(&format!("enc/backups/{stamp}/docs.tar"))
            .iter()
            .map(|(_, n)| n)
            .sum()
    };
    assert!(
        archive_bytes(&second) * 20 < archive_bytes(&first),
        "the incremental uploads {} bytes, the full {}",
        archive_bytes(&second),
        archive_bytes(&first)
    );
    assert!(copy(&second).is_file(), "the new copy is kept");
    assert!(
        !copies.join(&first).exists(),
        "the superseded copy is removed"
    );
    for (key, _) in s3.list("enc/") {
        assert!(!key.ends_with(".jsonl"), "{key}: a plaintext index");
        let bytes = s3.get(&key);
        for plain in ["todo.txt", "new.txt", "hunter2", "a new file"] {
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "{key} holds {plain:?} in the clear"
            );
        }
    }

    let home = t.home().display().to_string();
    let id = identity.display().to_string();
    for (what, rel, most_gets) in [
        ("a file kept in the full", "photos/big.raw", 7),
        ("a changed file", "notes/todo.txt", 7),
    ] {
        let target = t.path(&format!("r-{}", what.replace(' ', "-")));
        let out = t
            .cmd()
            .args([
                "restore",
                "--source",
                "cloud",
                "--path",
                &format!("{home}/{rel}"),
            ])
            .args(["--identity", &id, "--target"])
            .args([&target])
            .status(0);
        eprintln!("{what}: {}", requests_line(&out));
        let (heads, gets) = requests(&out);
        assert_eq!(heads, 0, "{what}: no HEAD");
        assert!(gets <= most_gets, "{what}: {}", requests_line(&out));
        assert_restored(&t, &target, &[rel], what);
    }
    let target = t.path("r-set");
    t.cmd()
        .args(["restore", "--source", "cloud", "--set", "docs"])
        .args(["--identity", &id, "--target"])
        .args([&target])
        .status(0);
    assert_restored(&t, &target, &SET_FILES, "whole set");

    // Without the local copy, the next upload cannot read its base's manifest: a full, saying why.
    std::fs::remove_dir_all(&copies).unwrap();
    t.write("home/notes/todo.txt", "changed\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    assert!(
        dry.stdout
            .contains("full: no trusted local copy of the encrypted base index (there is none)"),
        "{}",
        dry.stdout
    );
    t.cmd().args(["external"]).status(0);
    let third = stamps(&s3, "enc")[2].clone();
    let meta: serde_json::Value =
        serde_json::from_slice(&s3.get(&format!("enc/backups/{third}/backup.json"))).unwrap();
    assert_eq!(meta["sets"][0]["kind"], "full", "{meta}");
}

/// `ls` and `find` on a bucket read an incremental backup through its index, a complete manifest of the snapshot,
/// as on a drive: after a second upload (an incremental on the first), `ls --source cloud` lists the newest backup
/// (a file kept in the full, the changed one and the new one), and `find` finds the unchanged file in both
/// backups. Before: both refused every incremental on a bucket ("it is incremental, which a bucket cannot be read
/// through yet"), so with incrementals on (the default) `ls` of the newest upload exited 1 and `find` searched
/// only the full.
#[test]
fn ls_and_find_read_an_incremental_on_a_bucket_through_its_index() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let all = second_upload(&t, &s3, &[("home/notes/new.txt", "a new file\n")]);
    let home = t.home().display().to_string();

    let ls = t
        .cmd()
        .args(["ls", "--source", "cloud", "-R", &home])
        .status(0);
    ls.stderr_lacks("incremental, which a bucket cannot be read");
    ls.stdout_has(&format!("{} set docs", all[1]));
    for f in ["photos/big.raw", "notes/todo.txt", "notes/new.txt"] {
        ls.stdout_has(&format!("{home}/{f}"));
    }

    let found = t
        .cmd()
        .args(["find", "--source", "cloud", "big.raw"])
        .status(0);
    found.stderr_lacks("was not searched");
    for stamp in &all {
        found.stdout_has(stamp);
    }
}

/// `restore --verify --source cloud` of an incremental checks the archives it depends on too: with the full's
/// archive altered on the server (one byte), verifying the newest backup (an incremental on that full) exits 1 and
/// names the full's object; the bytes said beforehand count the chain's archives. Before: it hashed only the
/// incremental's own objects and said "intact" while the file kept in the full could not be restored.
#[test]
fn verify_of_an_incremental_on_a_bucket_checks_the_archives_it_depends_on() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let all = second_upload(&t, &s3, &[]);
    let full_part = format!("laptop/backups/{}/docs.tar.part000", all[0]);
    let full_bytes = s3.list(&full_part)[0].1;

    let verify = t
        .cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(0);
    verify.stdout_has(&format!("ok         {}/docs.tar.part000", all[0]));
    verify.stdout_has("intact");
    assert!(
        verify
            .stdout
            .contains(&format!("backup {} on offsite", all[1])),
        "{}",
        verify.stdout
    );

    alter_on_server(&t, &s3, &full_part, 0x01);
    let verify = t
        .cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(1);
    verify.stdout_has(&format!("mismatch   {}/docs.tar.part000", all[0]));
    verify.stdout_lacks("intact: every object");
    assert!(
        full_bytes > 3 << 20,
        "the full holds the 3 MiB file: {full_bytes}"
    );
}

/// The bytes a restore from a bucket says it will download, before it starts, count the archives of the backups
/// an incremental depends on: restoring the 3 MiB file kept in the full from the newest backup (an incremental of
/// a few KiB) announces "at most" MiB, not KiB, and a whole set counts them too. Before: only the incremental's own
/// archive was counted ("at most 20.0 KiB of archives", then 3 MiB downloaded).
#[test]
fn a_restore_from_an_incremental_on_a_bucket_says_the_chains_bytes_first() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    second_upload(&t, &s3, &[]);
    let out = restore_path(&t, &big_raw(&t), &t.path("r-one")).status(0);
    assert!(
        out.stderr.contains(" MiB of archives"),
        "the 3 MiB file's archive is counted before the restore: {}",
        out.stderr
    );
    assert_restored(
        &t,
        &t.path("r-one"),
        &["photos/big.raw"],
        "a file kept in the full",
    );
    let out = t
        .cmd()
        .args(["restore", "--source", "cloud", "--set", "docs", "--target"])
        .args([t.path("r-set")])
        .status(0);
    assert!(
        out.stderr.contains(" MiB (the archives"),
        "a whole set counts the chain's archives: {}",
        out.stderr
    );
}

/// A file an incremental on a bucket keeps in a base that is gone (its `backup.json` replaced on the server by bytes that are not JSON) fails
/// to restore with a message that names no drive. Before: "... whose archive of this set is not on the drive".
#[test]
fn a_file_kept_in_a_missing_base_on_a_bucket_is_not_said_to_be_on_a_drive() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let all = second_upload(&t, &s3, &[]);
    put_on_server(
        &t,
        &s3,
        &format!("laptop/backups/{}/backup.json", all[0]),
        b"not json",
    );
    let out = restore_path(&t, &big_raw(&t), &t.path("r")).status(1);
    out.stderr_lacks("not on the drive");
    out.stderr_has(&format!(
        "its content is kept in backup {}, whose archive of this set is missing",
        all[0]
    ));
}

/// The worst day without any config: an encrypted chain (a full and an incremental) uploaded to the bucket,
/// downloaded whole by another S3 client (`<prefix>/backups/` into a directory, as docs/RESTORE.md's "From the
/// bucket" says with `aws s3 cp --recursive`), checks and restores with `restore --drive DIR --identity KEY`, the
/// incremental read through its base, and no config file anywhere.
#[test]
fn a_downloaded_bucket_restores_with_drive_and_no_config() {
    let Some((_g, s3, t, identity, _keys)) = two_encrypted_uploads("gone") else {
        return;
    };

    let down = t.path("downloaded");
    for (key, _) in s3.list("gone/backups/") {
        let file = down.join(key.strip_prefix("gone/").unwrap());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, s3.get(&key)).unwrap();
    }
    let drive = |args: &[&str]| {
        t.cmd()
            .no_config()
            .args(["restore", "--drive"])
            .args([&down])
            .args(["--identity"])
            .args([&identity])
            .args(args)
    };
    drive(&["--verify", "--deep"])
        .status(0)
        .stdout_has("result: intact");
    let target = t.path("r");
    drive(&["--target", target.to_str().unwrap()]).status(0);
    assert_restored(&t, &target, &SET_FILES[..4], "downloaded from the bucket");
}

/// A `restore --verify --source cloud` that finds a backup damaged (an object altered on the server: same size,
/// other bytes) remembers it in `damaged.json` as a drive's does (the destination's name, the stamp, this config's
/// backup root); a dry run remembers nothing. `status` marks it DAMAGED, no restore point (`--check`: overdue); the
/// next upload does not build on it (a full, saying why). A later intact verify (the object put back) forgets it.
/// Before: a bucket's verify wrote nothing, `status` counted the backup, and the next upload was an incremental on it.
#[test]
fn damage_a_bucket_verify_finds_is_remembered_and_not_built_on() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let first = stamps(&s3, "laptop")[0].clone();
    let key = format!("laptop/backups/{first}/docs.tar.part000");
    let intact = s3.get(&key);
    alter_on_server(&t, &s3, &key, 0x55);
    let noted = t.path("state/dbackup/damaged.json");
    t.cmd()
        .args(["--dry-run", "restore", "--verify", "--source", "cloud"])
        .status(1);
    assert!(!noted.exists(), "a dry run records nothing");
    t.cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(1);
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&noted).unwrap()).unwrap();
    let r = &records["records"][0];
    assert_eq!(r["destination"], "offsite", "{records}");
    assert_eq!(r["backup"], first.as_str(), "{records}");
    assert_eq!(
        r["backup_root"],
        t.root().display().to_string(),
        "{records}"
    );
    assert!(
        r["problem"].as_str().unwrap().contains("docs.tar.part000"),
        "{records}"
    );
    let status = t.cmd().args(["status"]).status(0);
    status.stdout_has(&format!("  {first}  full "));
    status.stdout_has("DAMAGED: restore --verify found it damaged on ");
    status.stdout_has("offsite: 0 restore points (and 1 damaged backup, not counted)");
    // No good backup is left there: the bucket's upload is overdue at once.
    t.cmd()
        .args(["status", "--check"])
        .status(1)
        .stderr_has("status check failed: no external backup yet");

    t.write("home/notes/todo.txt", "buy milk\nand bread\n");
    t.cmd().args(["collect"]).status(0);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has(&format!("full: backup {first} of the chain is damaged"));

    put_on_server(&t, &s3, &key, &intact);
    t.cmd()
        .args(["restore", "--verify", "--source", "cloud"])
        .status(0);
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&noted).unwrap()).unwrap();
    assert_eq!(records["records"], serde_json::json!([]), "forgotten");
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has(&format!("incremental on {first}"));
}

/// `backup`, which reads only a bucket's newest `backup.json`, passes over a newest backup that `restore --verify`
/// found damaged, as `status` does: its newest is the good one before it, the same `status` shows. Before: the
/// damaged one was read as the newest and dropped, and `backup` knew of no backup there at all.
#[test]
fn backup_passes_over_a_newest_bucket_backup_found_damaged() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, first, _) = two_uploads_one_found_damaged(&g, &s3, 1);
    let offsite = offsite_plan(&t);
    let due = offsite["due"].as_str().unwrap();
    assert!(
        due.contains(&format!("its newest backup {first} ")),
        "{due}"
    );
}

/// `backup` to a bucket (its schedule `always`) whose newest backup `restore --verify` found damaged uploads a fresh
/// one and says why in one line, as its plan does; the run after it finds the fresh one holding these snapshots and
/// uploads nothing. Before: uploaded with no word of why.
#[test]
fn backup_says_why_it_uploads_over_a_bucket_backup_found_damaged() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, _, second) = two_uploads_one_found_damaged(&g, &s3, 1);
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let always = cfg.replace(
        r#""timeout_seconds": 10"#,
        r#""timeout_seconds": 10, "schedule": "always""#,
    );
    assert_ne!(cfg, always);
    t.write("config.json", &always);
    let why =
        format!("its newest backup {second} is damaged, no restore point: writing a fresh one");
    let offsite = offsite_plan(&t);
    assert_eq!(offsite["target"], true, "{offsite:#}");
    assert_eq!(offsite["note"], why.as_str(), "{offsite:#}");
    let out = t.cmd().args(["backup"]).status(0);
    out.stderr_has(&format!("external offsite: {why}\n"));
    assert_eq!(stamps(&s3, "laptop").len(), 3);
    let out = t.cmd().args(["backup"]).status(0);
    out.stderr_has("already holds these snapshots");
    assert_eq!(stamps(&s3, "laptop").len(), 3);
}

/// The newest bucket backup's `backup.json` replaced on the server by bytes that are not JSON: `backup` (which reads
/// the newest `backup.json` only) and `status` (which reads every one) agree that the older backup is the newest good
/// one; the dry run and the run say why they upload (the newest is no restore point), and the run uploads a fresh one.
/// Before: backup's look stopped at the unusable one: "no backup yet" in its plan and an upload with no word of why,
/// while `status` showed the older one as the newest.
#[test]
fn backup_passes_over_a_newest_bucket_backup_whose_backup_json_is_not_json() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, r#", "schedule": "always""#, "laptop");
    let [first, second]: [String; 2] = second_upload(&t, &s3, &[]).try_into().expect("two");
    let key = format!("laptop/backups/{second}/backup.json");
    put_on_server(&t, &s3, &key, b"not json {");
    // A change, so the older good backup does not hold the snapshots the run exports.
    t.write("home/notes/todo.txt", "buy milk\nand bread\nand eggs\n");
    t.cmd().args(["collect"]).status(0);

    let v: serde_json::Value = t.run_json(&["status"]);
    let r: dbackup::StatusReport = serde_json::from_value(v).unwrap();
    assert_eq!(
        r.clouds[0].newest.as_ref().map(|n| n.stamp.as_str()),
        Some(first.as_str()),
        "{r:#?}"
    );
    let why =
        format!("its newest backup {second} is damaged, no restore point: writing a fresh one");
    let offsite = offsite_plan(&t);
    assert_eq!(offsite["target"], true, "{offsite:#}");
    assert_eq!(offsite["note"], why.as_str(), "{offsite:#}");
    let description = offsite["description"].as_str().unwrap();
    assert!(
        description.contains(&format!("the newest {first} (")),
        "{description}"
    );
    let out = t.cmd().args(["backup"]).status(0);
    out.stderr_has(&format!("external offsite: {why}\n"));
    assert_eq!(stamps(&s3, "laptop").len(), 3);
}

/// The worst day's config as docs/RESTORE.md "From the bucket" writes it: a new backup root (no state) and the
/// bucket's encryption naming the identity file alone. It lists, verifies and restores the chain; a run that would
/// upload is refused before touching the bucket, saying how to add the public key. Before: `config check` refused
/// an encryption without recipients, so the guide had the recipient derived by hand.
#[test]
fn the_worst_days_bucket_config_names_the_identity_alone() {
    let Some((_g, s3, t, identity, _keys)) = two_encrypted_uploads("lost") else {
        return;
    };
    let cfg = std::fs::read_to_string(t.path("config.json")).unwrap();
    let start = cfg.find(r#""recipients": ["#).expect("recipients");
    let end = start + cfg[start..].find(']').unwrap() + 1;
    let worst = cfg
        .replace(
            &cfg[start..end],
            &format!(r#""identity_file": "{}""#, identity.display()),
        )
        .replace(
            &format!(r#""backup_root": "{}""#, t.root().display()),
            &format!(r#""backup_root": "{}""#, t.path("new-root").display()),
        );
    assert!(
        worst.contains("new-root") && !worst.contains("age1"),
        "{worst}"
    );
    t.write("config.json", &worst);
    t.cmd()
        .args(["config", "check"])
        .status(0)
        .stderr_has("names only identity_file");
    t.cmd()
        .args(["restore", "--source", "cloud", "--verify"])
        .status(0);
    let target = t.path("r");
    t.cmd()
        .args(["restore", "--source", "cloud", "--target"])
        .args([&target])
        .status(0);
    assert_restored(&t, &target, &SET_FILES, "with the identity alone");
    let objects = s3.list("lost/").len();
    t.cmd().args(["collect"]).status(0);
    t.cmd()
        .args(["external"])
        .status(2)
        .stderr_has("names only an identity_file")
        .stderr_has("nothing was written");
    assert_eq!(s3.list("lost/").len(), objects, "nothing uploaded");
}

/// A bucket whose newest backup (an incremental) `restore --verify` found damaged, with the full before it intact,
/// reads as a drive's: `status --check` exits 1 naming it, the headline counts it ("1 backup damaged or broken"),
/// and the status page, which does not list buckets (its newest is what the run log says), does not show the
/// damaged backup as the bucket's newest from the run log but "unknown", naming the damaged backup among its
/// problems (`log_damaged` in its JSON). Before: `--check` 0 and "status: ok", and the page "Backups are good"
/// with the damaged backup as the newest upload.
#[test]
fn a_damaged_bucket_backup_fails_the_check_and_the_page_as_a_drives() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, first, second) = two_uploads_one_found_damaged(&g, &s3, 1);
    let says = format!(
        "destination offsite: backup {second} is DAMAGED (restore --verify found it damaged on "
    );
    // The page: the run log's newest on the bucket is the damaged one.
    let page = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    assert!(page.contains("Attention: "), "{page}");
    assert!(page.contains(&says), "{says} not on the page: {page}");
    // What to do is a bucket's: no drive to plug in.
    assert!(
        page.contains(
            "<span class=\"muted\">run <code>dbackup external</code> for a new backup</span>"
        ),
        "{page}"
    );
    assert!(!page.contains("plug in the drive and run"), "{page}");
    let row = page
        .split("<tr id=\"cloud-offsite\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row of offsite: {page}"));
    assert!(!row.contains(second.as_str()), "{row}");
    assert!(row.contains("unknown"), "{row}");
    let v: serde_json::Value = t.run_json(&["report", "--out", "-"]);
    crate::json::assert_valid("report", &v);
    let r: dbackup::StatusReport = serde_json::from_value(v).unwrap();
    let c = &r.clouds[0];
    assert!(c.not_looked_at && c.newest.is_none(), "{c:?}");
    // `status`, which lists the bucket: the damaged backup is a problem as on a drive.
    let status = check_fails_saying(&t, &says);
    status.stdout_has("status: ATTENTION: 1 backup damaged or broken (");
    status.stdout_has(&format!("  {first}  full "));
}

/// An incremental on a bucket whose full `restore --verify` found damaged is BROKEN, no restore point, as on a
/// drive: `status` says why (text and `--json`), the bucket has no newest backup (the upload is overdue at once),
/// and `backup`, which reads only the newest `backup.json`, agrees: it does not take the incremental as the
/// bucket's newest, and its plan says the upload replaces it. Before: the incremental was a restore point and the
/// bucket's newest, `--check` 0.
#[test]
fn an_incremental_on_a_damaged_bucket_backup_is_broken() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let (t, first, second) = two_uploads_one_found_damaged(&g, &s3, 0);
    let status = t.cmd().args(["status"]).status(0);
    status.stdout_has("status: ATTENTION: 1 overdue, 2 backups damaged or broken (");
    status.stdout_has(
        "offsite: 0 restore points (and 1 damaged backup and 1 broken backup, not counted)",
    );
    status.stdout_has(&format!(
        "BROKEN, it depends on {first}, which restore --verify found damaged"
    ));
    let r: dbackup::StatusReport = t.run_json(&["status"]);
    let c = &r.clouds[0];
    assert_eq!(c.newest, None, "{c:?}");
    let p = &c.restore_points[1];
    assert!(p.stamp == second && p.broken && !p.damaged, "{p:?}");
    t.cmd()
        .args(["status", "--check"])
        .status(1)
        .stderr_has(&format!(
            "destination offsite: backup {second} is BROKEN (it depends on {first}, which restore --verify found \
             damaged)"
        ));
    let offsite = offsite_plan(&t);
    assert_eq!(offsite["due"], "due: no external backup yet", "{offsite}");
    assert!(
        !offsite["description"].to_string().contains(second.as_str()),
        "{offsite}"
    );
    // Named only as what it is: no restore point, which the upload replaces.
    assert_eq!(
        offsite["note"],
        format!(
            "its newest backup {second} has a broken chain, no restore point: writing a fresh one"
        ),
        "{offsite}"
    );
}

/// A full and an incremental on it under `laptop`, backup `damaged` of them (0 the full, 1 the incremental) altered
/// on the server and found damaged by `restore --verify`: the test and both stamps, oldest first.
fn two_uploads_one_found_damaged(
    g: &Garage,
    s3: &S3Client,
    damaged: usize,
) -> (Test, String, String) {
    let t = first_upload(g, "", "laptop");
    let both = second_upload(&t, s3, &[]);
    let stamp = &both[damaged];
    let key = format!("laptop/backups/{stamp}/docs.tar.part000");
    alter_on_server(&t, s3, &key, 0x55);
    t.cmd()
        .args(["restore", "--verify", "--source", "cloud", "--date", stamp])
        .status(1);
    let [first, second] = both.try_into().expect("two backups");
    (t, first, second)
}

/// `status --check` exits 1 saying `says`; then `status`, its text.
fn check_fails_saying(t: &Test, says: &str) -> crate::harness::Output {
    t.cmd()
        .args(["status", "--check"])
        .status(1)
        .stderr_has(says);
    t.cmd().args(["status"]).status(0)
}

/// What `--dry-run backup` plans for the bucket `offsite`.
fn offsite_plan(t: &Test) -> serde_json::Value {
    let plan: serde_json::Value = t.run_json(&["--dry-run", "backup"]);
    (plan["destinations"].as_array().unwrap().iter())
        .find(|d| d["name"] == "offsite")
        .cloned()
        .unwrap_or_else(|| panic!("{plan:#}"))
}

/// A bucket backup whose archive part object is missing from the bucket, or shorter than its `backup.json` records,
/// is DAMAGED in `status` as a drive's cut-short archive is, from the sizes of its one listing (one LIST and a GET per
/// `backup.json`: no archive read): the object named (escaped: the name comes from the bucket), the headline counting
/// it, `--check` exiting 1 naming it, no restore point in `--json` (nor the newest), an incremental on it BROKEN;
/// `backup`, which reads only the newest `backup.json`, passes over a newest whose own object is missing, as `status`
/// does. Before: `status` said "ok" and `--check` exited 0 with the damaged backup as the newest restore point, and only the
/// next upload's own look (or `restore --verify`) found it.
#[test]
fn a_bucket_backup_with_an_object_missing_or_short_is_damaged_in_status() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = first_upload(&g, "", "laptop");
    let [first, second]: [String; 2] = second_upload(&t, &s3, &[]).try_into().expect("two");
    let part = |stamp: &str| format!("laptop/backups/{stamp}/docs.tar.part000");
    let looked = |what: &str| -> dbackup::StatusReport {
        let v: serde_json::Value = t.run_json(&["status"]);
        crate::json::assert_valid("status", &v);
        let r: dbackup::StatusReport = serde_json::from_value(v).unwrap();
        assert!(!r.ok, "{what}");
        assert_eq!(
            r.clouds[0].requests, 3,
            "{what}: a LIST and two backup.json"
        );
        r
    };

    // (a) The incremental's archive part deleted: it is damaged, the full is the newest restore point.
    let newest_part = s3.get(&part(&second));
    s3.delete(&part(&second));
    let says = format!(
        "destination offsite: backup {second} is DAMAGED (docs.tar.part000 is not in the bucket)"
    );
    let status = check_fails_saying(&t, &says);
    status.stdout_has("status: ATTENTION: 1 backup damaged or broken (");
    status.stdout_has("offsite: 1 restore point (and 1 damaged backup, not counted)");
    status.stdout_has("DAMAGED: docs.tar.part000 is not in the bucket");
    status.stdout_has(&says);
    let r = looked("deleted");
    let c = &r.clouds[0];
    assert_eq!(
        c.newest.as_ref().map(|n| n.stamp.as_str()),
        Some(first.as_str()),
        "{c:?}"
    );
    let p = &c.restore_points[1];
    assert!(p.stamp == second && p.damaged, "{p:?}");
    assert_eq!(
        p.problem.as_deref(),
        Some("docs.tar.part000 is not in the bucket")
    );
    // `backup`, which reads only the newest `backup.json`, agrees: its newest is the full.
    let due = offsite_plan(&t)["due"].as_str().unwrap().to_string();
    assert!(
        due.contains(&format!("its newest backup {first} ")),
        "{due}"
    );

    // (b) It put back, the full's part replaced by a shorter object: the full is damaged, the incremental on it broken.
    put_on_server(&t, &s3, &part(&second), &newest_part);
    let full_part = s3.get(&part(&first));
    let len = full_part.len();
    put_on_server(&t, &s3, &part(&first), &full_part[..len / 2]);
    let says = format!(
        "destination offsite: backup {first} is DAMAGED (docs.tar.part000 is {} bytes, not the {len} recorded)",
        len / 2
    );
    let status = check_fails_saying(&t, &says);
    status.stdout_has("2 backups damaged or broken (");
    status.stdout_has(&format!(
        "BROKEN, it depends on {first}, which is damaged (its files are not as recorded)"
    ));
    let r = looked("short");
    let c = &r.clouds[0];
    assert_eq!(c.newest, None, "{c:?}");
    assert!(c.restore_points[0].damaged, "{c:?}");
    assert!(c.restore_points[1].broken, "{c:?}");

    // (c) The full put back, its backup.json naming its part with an escape sequence (no such object): named escaped.
    put_on_server(&t, &s3, &part(&first), &full_part);
    t.cmd().args(["status", "--check"]).status(0);
    crate::cloud::edit_meta_on_server(&t, &s3, &format!("laptop/backups/{first}/"), |m| {
        m["sets"][0]["archive"][0]["name"] = "docs.tar.part000\u{1b}[2J".into();
    });
    let out = t.cmd().args(["status", "--check"]).status(1);
    out.stderr_has(r"(docs.tar.part000\x1b[2J is not in the bucket)");
    let status = t.cmd().args(["status"]).status(0);
    for (what, text) in [("--check", &out.stderr), ("status", &status.stdout)] {
        assert!(!text.contains('\u{1b}'), "{what}: a raw ESC: {text}");
    }
}
