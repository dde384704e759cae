//! Incremental uploads to a bucket through the real binary, against a real Garage: a second upload carries only
//! what changed (an incremental on the bucket's newest backup, its base index fetched from the bucket and checked),
//! and restore from the bucket reads through the chain.

use testkit::objstore::S3Client;

use crate::cloud::{
    alter_on_server, assert_restored, config, garage_and_client, no_secret, populate, requests,
    requests_line, with_keys,
};

/// With `external.incremental` on, a second `external` to an s3 destination after one small file changed and one
/// was added is an incremental on the first upload: the dry run says so beforehand with what it will store, its
/// `backup.json` has `kind: incremental`, `base` and `depends_on` naming the first, its archive object is a small
/// fraction of the full's (the 3 MiB file is not uploaded again). Restore from the bucket through the chain: the
/// unchanged 3 MiB file (its bytes in the full: one ranged read there), the changed file, a directory and the whole
/// set come back byte-identical to the home. The base's index altered on the server (one byte changed): the next
/// dry run plans a full, saying why. An encrypted destination stays full, the dry run saying why. Before:
/// every upload was full ("buckets take full archives"), and restore refused an incremental set on a bucket.
#[test]
fn a_second_upload_is_an_incremental_and_restores_through_the_chain() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let cfg = config(&g.endpoint(), &g.bucket, "").replace(
        r#""destinations": ["#,
        r#""external": { "incremental": { "enabled": true } }, "destinations": ["#,
    );
    let t = with_keys(&cfg, &g.key.id, &g.key.secret);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let stamps = |s3: &S3Client| -> Vec<String> {
        let mut v: Vec<String> = s3
            .list("laptop/backups/")
            .into_iter()
            .filter_map(|(k, _)| k.split('/').nth(2).map(str::to_string))
            .filter(|s| s != "LATEST")
            .collect();
        v.dedup();
        v
    };
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
        let out = t
            .cmd()
            .args(["restore", "--source", "cloud", "--path", &path, "--target"])
            .args([&target])
            .status(0);
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
    let files = [
        "photos/big.raw",
        ".secrets",
        "notes/todo.txt",
        "notes/new.txt",
        "notes/deep/er/plan.md",
    ];
    assert_restored(&t, &target, &files, "whole set");
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

    // Encrypted: full, saying why (the base's index is age-encrypted and backing up never has the identity).
    let probe = crate::harness::Test::new();
    let (_identity, recipient) = probe.keygen("key");
    let enc = cfg
        .replace(r#""prefix": "laptop""#, r#""prefix": "enc""#)
        .replace(
            r#""timeout_seconds": 10"#,
            &format!(r#""timeout_seconds": 10, "encryption": {{ "recipients": ["{recipient}"] }}"#),
        );
    let te = with_keys(&enc, &g.key.id, &g.key.secret);
    populate(&te);
    te.cmd().args(["collect"]).status(0);
    te.cmd().args(["external"]).status(0);
    te.write("home/notes/todo.txt", "changed\n");
    te.cmd().args(["collect"]).status(0);
    let dry = te.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("incrementals of encrypted sets on a bucket are not written yet");
}
