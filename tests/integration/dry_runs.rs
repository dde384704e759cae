//! The brief's "a dry run for everything that deletes or writes", swept across every command: each `--dry-run` (and
//! the read-only commands) leaves the backup root, the drive, the state and config directories, the restore
//! targets, the home and the bucket exactly as they were: every path's kind, mode, size, mtime and ctime, and every
//! object and unfinished upload.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use testkit::objstore::{REGION, S3Client};

use crate::cloud::garage_and_client;
use crate::harness::Test;

/// What a command could change: every path under the test directory (kind, mode, size, mtime, ctime, symlink
/// target), then every object of the bucket (size) and every unfinished upload.
fn world(t: &Test, s3: &S3Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(t.dir.path()).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let link = fs::read_link(e.path())
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        out.insert(
            e.path().display().to_string(),
            format!(
                "{:o} {} mtime {}.{:09} ctime {}.{:09} {link}",
                m.mode(),
                if m.is_dir() { 0 } else { m.size() },
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
    }
    for (key, size) in s3.list("") {
        out.insert(format!("object {key}"), size.to_string());
    }
    for upload in s3.multipart_uploads("") {
        out.insert(format!("upload {upload}"), String::new());
    }
    out
}

/// The differences between two [`world`]s, one line each.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => out.push(format!("changed {k}: {v} -> {w}")),
            Some(_) => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("created {k}"));
    }
    out
}

/// Every writing command's dry run, and every command that only reads, against a world with something to do: a
/// collected home changed since, a drive (a plain directory) and a bucket on Garage that each hold a backup (retention
/// keeps one: a run would remove it), a restore target holding an older copy. Each run (whatever its exit code) must
/// leave the world as it was. Before: `--dry-run external` and `--dry-run backup` created and removed a probe file
/// on the drive, which changed the drive's directory (its mtime and ctime).
#[test]
fn no_dry_run_changes_anything() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = Test::new();
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}/docs"] }} ],
             "retention": {{ "local": 1, "external": 1 }},
             "external": {{ "mode": "all" }},
             "destinations": [
               {{ "name": "drive", "path": "{{tmp}}/drive", "require_mount": false }},
               {{ "name": "offsite", "kind": "s3", "endpoint": "{}", "bucket": "{}", "region": "{REGION}",
                 "prefix": "laptop", "allow_unencrypted": true, "retries": 1, "timeout_seconds": 10 }} ],
             "report": {{ "path": "{{tmp}}/state/page.html" }} }}"#,
        g.endpoint(),
        g.bucket
    );
    let t = t
        .config(&config)
        .env("AWS_ACCESS_KEY_ID", &g.key.id)
        .env("AWS_SECRET_ACCESS_KEY", &g.key.secret);
    fs::create_dir_all(t.path("drive")).unwrap();
    t.write("home/docs/a.txt", "first\n");
    t.write(
        "home/docs/b.bin",
        crate::fixtures::drive::content(100 << 10, 3),
    );
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    t.write("home/docs/a.txt", "second, longer\n");
    t.write("home/docs/c.txt", "new\n");
    t.write("target/home/docs/a.txt", "an older copy\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let r = |p: &Path| p.display().to_string();
    let docs = r(&t.home().join("docs"));
    let target = r(&t.path("target"));
    let runs: Vec<Vec<String>> = [
        &["--dry-run", "collect"][..],
        &["--dry-run", "-v", "collect", "--checksum"],
        &["--dry-run", "external"],
        &["--dry-run", "--json", "external", "--destination", "drive"],
        &[
            "--dry-run",
            "external",
            "--destination",
            "offsite",
            "--full",
        ],
        &["--dry-run", "backup"],
        &["--dry-run", "--json", "backup", "--force"],
        &["--dry-run", "restore", "--path", &docs, "--target", &target],
        &["--dry-run", "restore", "--all"],
        &[
            "--dry-run",
            "restore",
            "--path",
            &docs,
            "--overwrite",
            "always",
            "--no-keep",
        ],
        &[
            "--dry-run",
            "restore",
            "--source",
            "external",
            "--path",
            &docs,
            "--target",
            &target,
        ],
        &["--dry-run", "restore", "--source", "cloud", "--all"],
        &["--dry-run", "report"],
        &[
            "--dry-run",
            "report",
            "--out",
            &r(&t.path("target/page.html")),
        ],
        &["--dry-run", "keygen"],
        &[
            "--dry-run",
            "keygen",
            "--out",
            &r(&t.path("xdg-config/new/identity.txt")),
        ],
        &["--dry-run", "cloud", "check", "offsite", "--object-lock"],
        &[
            "--dry-run",
            "config",
            "init",
            &r(&t.path("xdg-config/dbackup/new.json")),
        ],
        &[
            "--dry-run",
            "systemd",
            "render",
            "--user",
            "--out",
            &r(&t.path("xdg-config/units")),
        ],
        &[
            "--dry-run",
            "image",
            "kit",
            "--out",
            &r(&t.path("target/kit")),
        ],
        &["--dry-run", "generate", "man", &r(&t.path("target/man"))],
        // Commands that only read.
        &["snapshots"],
        &["restore", "--list"],
        &["--json", "ls", "--source", "external", "--recursive"],
        &["ls", "--source", "cloud", "--recursive"],
        &["find", "a.txt"],
        // `status` asks the kernel whether a drive is writable, as a dry run does (before, it wrote a probe file).
        &["status"],
        &["--json", "status"],
        &["report", "--out", "-"],
        &["config", "check"],
        &["systemd", "render", "--user"],
        &["image", "kit"],
    ]
    .iter()
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .collect();
    let mut failures = Vec::new();
    for args in &runs {
        let before = world(&t, &s3);
        let out = t.cmd().args(args).output();
        let changed = changes(&before, &world(&t, &s3));
        if !changed.is_empty() {
            failures.push(format!(
                "dbackup {} (exit {}) changed:\n  {}\n{}",
                args.join(" "),
                out.code,
                changed.join("\n  "),
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
