//! Buckets as destinations of `dbackup backup`, of retention, of `status`, `ls` and `find`, through the real binary
//! against a real Garage on 127.0.0.1 (started per test, killed by its pid). Outputs are read as JSON values, so
//! these tests use no item of the library.

use std::path::{Path, PathBuf};

use chrono::{Local, TimeDelta};
use serde_json::Value;
use testkit::objstore::{Garage, REGION, S3Client};

use crate::cloud::{edit_meta_on_server, garage_and_client};
use crate::harness::{Cmd, Test};

/// The `offsite` destination (`extra` keys spliced in).
fn offsite(g: &Garage, extra: &str) -> String {
    format!(
        r#"{{ "name": "offsite", "kind": "s3", "endpoint": "{}", "bucket": "{}", "region": "{REGION}",
              "prefix": "laptop", "allow_unencrypted": true, "retries": 1, "timeout_seconds": 10 {extra} }}"#,
        g.endpoint(),
        g.bucket
    )
}

fn with_keys(t: Test, g: &Garage) -> Test {
    let mut t = t
        .env("AWS_ACCESS_KEY_ID", &g.key.id)
        .env("AWS_SECRET_ACCESS_KEY", &g.key.secret);
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE") {
        t = t.env("AWS_CA_BUNDLE", bundle);
    }
    t
}

fn populate(t: &Test) {
    t.write("home/notes/todo.txt", "buy milk\n");
    t.write("home/notes/deep/plan.md", "# plan\n");
    t.write("home/photos/cat.raw", vec![7u8; 300 << 10]);
}

/// The stamps with a `backup.json` under `laptop/backups/`.
fn bucket_backups(s3: &S3Client) -> Vec<String> {
    s3.list("laptop/backups/")
        .into_iter()
        .filter_map(|(k, _)| {
            k.strip_prefix("laptop/backups/")?
                .strip_suffix("/backup.json")
                .map(str::to_string)
        })
        .collect()
}

fn days_from_now(days: i64) -> String {
    (Local::now().fixed_offset() + TimeDelta::days(days)).to_rfc3339()
}

/// The destination `name` of a backup plan's JSON.
fn view<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no destination {name} in {plan:#}"))
}

/// `dbackup backup` with a drive written whenever it is there (`schedule.external: always`) and a bucket on its
/// own weekly schedule: the first run uploads (the dry run first says why for each destination, and writes
/// nothing); two days later the drive is written again and the bucket is not ("2 days old; its own schedule is
/// weekly"); eight days later the bucket is due and uploaded to again. Before: `backup` never looked at a bucket
/// (its `schedule` was validated and unused), so nothing ever went off-site without `dbackup external`.
#[test]
fn backup_uploads_to_a_bucket_on_its_own_schedule() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = Test::new();
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
             "schedule": {{ "external": "always" }},
             "destinations": [ {{ "name": "drive", "path": "{}", "require_mount": false }},
                               {} ] }}"#,
        t.path("drive").display(),
        offsite(&g, r#", "schedule": "weekly""#)
    );
    let t = with_keys(t.config(&config), &g);
    std::fs::create_dir_all(t.path("drive")).unwrap();
    populate(&t);

    let dry = t.cmd().args(["--dry-run", "backup"]).status(0);
    dry.stdout_has("offsite (would be written): s3 ");
    dry.stdout_has("due: no external backup yet; its own schedule is weekly");
    let plan: Value = t.run_json(&["--dry-run", "backup"]);
    assert_eq!(view(&plan, "offsite")["target"], true);
    assert_eq!(view(&plan, "drive")["target"], true);
    assert_eq!(
        bucket_backups(&s3),
        Vec::<String>::new(),
        "a dry run uploads nothing"
    );

    let first: Value = t.run_json(&["backup"]);
    assert_eq!(
        first["due"]["external"]["targets"],
        serde_json::json!(["drive", "offsite"])
    );
    let uploaded = bucket_backups(&s3);
    assert_eq!(uploaded.len(), 1, "{first:#}");

    // Two days later: the drive (always) is written, the bucket (weekly) is not, and the plan says why.
    let later = days_from_now(2);
    let plan: Value = t.run_json(&["--dry-run", "backup", "--now", &later]);
    let why = view(&plan, "offsite")["due"].as_str().unwrap().to_string();
    assert_eq!(view(&plan, "offsite")["target"], false);
    assert!(
        why.starts_with(&format!(
            "not due: its newest backup {} is 2 days old; its own schedule is weekly (due from ",
            uploaded[0]
        )),
        "{why}"
    );
    let run: Value = t.run_json(&["backup", "--now", &later]);
    assert_eq!(
        run["due"]["external"]["targets"],
        serde_json::json!(["drive"])
    );
    assert_eq!(bucket_backups(&s3), uploaded, "not due: nothing uploaded");

    // Eight days later: due again, uploaded.
    let week = days_from_now(8);
    let run: Value = t.run_json(&["backup", "--now", &week]);
    assert!(
        run["due"]["external"]["targets"]
            .as_array()
            .unwrap()
            .contains(&Value::from("offsite")),
        "{run:#}"
    );
    assert_eq!(bucket_backups(&s3).len(), 2);
}

/// Retention on a bucket after a verified upload, with `"retention": 2` and a chain: the second backup's
/// `backup.json` is made to depend on the first (as an incremental's does; its line in the sums with it). The dry run of the third upload says
/// it keeps the first as the base of the second; with `"retention": 1` and a full third upload the whole chain
/// goes, `backup.json` first,
/// and nothing of those stamps is left in the bucket. Before: a bucket's `retention` was validated and unused, so
/// every upload stayed (and was billed) forever.
#[test]
fn retention_on_a_bucket_keeps_chains_and_counts() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let config = |retention: u32| {
        format!(
            r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
                 "destinations": [ {} ] }}"#,
            offsite(&g, &format!(r#", "retention": {retention}"#))
        )
    };
    let t = with_keys(Test::new().config(&config(2)), &g);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    for _ in 0..2 {
        t.cmd().args(["external"]).status(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let two = bucket_backups(&s3);
    assert_eq!(two.len(), 2);
    // The second depends on the first, its line in the sums with it, as an incremental's upload writes them.
    edit_meta_on_server(&t, &s3, &format!("laptop/backups/{}/", two[1]), |m| {
        m["depends_on"] = serde_json::json!([two[0]]);
    });

    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("retention last 2: 3 kept, 0 removed after the upload is verified");
    dry.stdout_has(&format!("keep      {} (base of {})", two[0], two[1]));
    assert_eq!(bucket_backups(&s3), two, "a dry run removes nothing");
    let plan: Value = t.run_json(&["--dry-run", "external"]);
    crate::json::assert_valid("external-plan", &plan);
    assert_eq!(plan["clouds"][0]["decisions"].as_array().unwrap().len(), 3);

    // Full: with an incremental, its base would be kept with it.
    let t = t.config(&config(1));
    let dry = t.cmd().args(["--dry-run", "external", "--full"]).status(0);
    for b in &two {
        assert!(
            dry.stdout.contains(&format!("remove    {b} (")),
            "{}",
            dry.stdout
        );
    }
    let out = t.cmd().args(["--json", "external", "--full"]).status(0);
    let report: Value = out.json();
    let removed: Vec<&str> = report["destinations"][0]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 2, "{report:#}");
    let left = bucket_backups(&s3);
    assert_eq!(left.len(), 1);
    assert!(!two.contains(&left[0]));
    for b in &two {
        assert_eq!(
            s3.list(&format!("laptop/backups/{b}/")),
            Vec::<(String, u64)>::new(),
            "every object of {b} deleted"
        );
    }
}

/// Garage, and two configs sharing its bucket and prefix under the destination name `offsite` (`extra` keys spliced in):
/// this one (`t`: set `docs` of `{home}`, `retention` .0) and another (set `notes` of `{tmp}/notes`, its own backup
/// root, `retention` .1, its config file returned, run by [`as_other`]); each has collected once.
fn shared_bucket(retention: (u32, u32), extra: &str) -> Option<(Garage, S3Client, Test, PathBuf)> {
    shared_bucket_as(retention, extra, "notes")
}

/// [`shared_bucket`], the other config's set named `other_set` (its sources still `{tmp}/notes`).
fn shared_bucket_as(
    retention: (u32, u32),
    extra: &str,
    other_set: &str,
) -> Option<(Garage, S3Client, Test, PathBuf)> {
    let (garage, s3) = garage_and_client()?;
    let g = &garage;
    let config = |root: &str, set: &str, source: &str, retention: u32| {
        format!(
            r#"{{ "backup_root": "{root}", "backup_sets": [ {{ "name": "{set}", "sources": ["{source}"] }} ],
                 "destinations": [ {} ] }}"#,
            offsite(g, &format!(r#", "retention": {retention}{extra}"#))
        )
    };
    let t = with_keys(
        Test::new().config(&config("{root}", "docs", "{home}", retention.0)),
        g,
    );
    populate(&t);
    t.write("notes/a.txt", "a");
    let other = t.write(
        "other.json",
        t.expand(&config(
            "{tmp}/root-b",
            other_set,
            "{tmp}/notes",
            retention.1,
        )),
    );
    as_other(&t, &other).args(["collect"]).status(0);
    t.cmd().args(["collect"]).status(0);
    Some((garage, s3, t, other))
}

/// On the bucket of [`shared_bucket`]: an upload of this config, then a newer one of the other's; this one's stamp.
fn this_then_the_other(t: &Test, other: &Path) -> String {
    let ours: Value = t.run_json(&["external"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    as_other(t, other).args(["external"]).status(0);
    ours["destinations"][0]["backup"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A command of the other config of [`shared_bucket`].
fn as_other(t: &Test, other: &Path) -> Cmd {
    t.cmd()
        .no_config()
        .args(["--config".as_ref(), other.as_os_str()])
}

#[test]
fn retention_on_a_bucket_shared_by_two_configs_keeps_the_other_configs_backups() {
    let Some((_g, s3, t, other)) = shared_bucket((1, 2), "") else {
        return;
    };
    for _ in 0..2 {
        as_other(&t, &other).args(["external", "--full"]).status(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let theirs = bucket_backups(&s3);
    assert_eq!(theirs.len(), 2);

    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["--json", "external"]).status(0);
    let report: Value = out.json();
    let after = bucket_backups(&s3);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(theirs.iter().all(|b| after.contains(b)), "{after:?}");
    let warnings = report["destinations"][0]["warnings"].as_array().unwrap();
    assert!(warnings.is_empty(), "{report:#}");
    crate::fixtures::drive::names_other_configs_once(&out.stderr, "bucket", &theirs, "notes");
}

/// Two configs sharing a bucket and prefix, each with a set `docs` from its own sources: this config's first upload
/// is a full (the dry run says why), its next an incremental on its own, and its `retention` 1 never removes the
/// other's backups. Before: the dry run planned an incremental on the other config's backup of `docs`, and
/// retention 1 deleted the other config's backups.
#[test]
fn another_configs_set_of_the_same_name_on_a_bucket_is_neither_a_base_nor_pruned() {
    let Some((_g, s3, t, other)) = shared_bucket_as((1, 5), "", "docs") else {
        return;
    };
    crate::fixtures::drive::incremental_on(&t);
    for _ in 0..2 {
        as_other(&t, &other).args(["external"]).status(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let theirs = bucket_backups(&s3);
    assert_eq!(theirs.len(), 2);

    let plan = crate::fixtures::drive::plans_a_full_for_other_sources(&t, (2, "docs"));
    assert!(
        plan.contains(
            "0 backups of this config there already, and 2 backups of another config (left alone)"
        ),
        "{plan}"
    );
    let ours: Value = t.run_json(&["external"]);
    let ours = ours["destinations"][0]["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let after = bucket_backups(&s3);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(theirs.iter().all(|b| after.contains(b)), "{after:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.write("home/new.txt", "new\n");
    t.cmd().args(["collect"]).status(0);
    let plan = t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    assert!(plan.contains(&format!("incremental on {ours}")), "{plan}");
}

/// Two configs sharing a bucket and prefix: this config's `status` shows its own backups of the bucket, not the
/// other config's. Before it uploaded: no backup yet, and `backup` finds the bucket due; after, its newest and its
/// restore points are its own although the other's newer backup is there (named as another config's), and an
/// unfinished upload of the other's is not one "the next upload removes". Before: the other config's backup was this
/// config's newest (the bucket not due, never uploaded to by `backup`) and one of its restore points.
#[test]
fn status_on_a_bucket_shared_by_two_configs_shows_this_configs_backups() {
    let Some((_g, s3, t, other)) = shared_bucket((5, 5), r#", "schedule": "weekly""#) else {
        return;
    };
    as_other(&t, &other).args(["external"]).status(0);
    let status: Value = t.run_json(&["status"]);
    let c = &status["clouds"][0];
    assert_eq!(c["newest"], Value::Null, "{c:#}");
    assert_eq!(c["backups"], 0, "{c:#}");
    assert_eq!(c["other_configs_backups"], 1, "{c:#}");
    let plan: Value = t.run_json(&["--dry-run", "backup"]);
    assert_eq!(view(&plan, "offsite")["target"], true, "{plan:#}");

    let ours = this_then_the_other(&t, &other);
    // An unfinished upload of the other config's (its archive's first part only).
    let part = t.write("part", "x");
    s3.put("laptop/backups/2099-01-01-000000/notes.tar.part000", &part);
    let c = &own_status(&t, &ours);
    assert_eq!(c["backups"], 1, "{c:#}");
    assert_eq!(c["other_configs_backups"], 2, "{c:#}");
    assert_eq!(c.get("unfinished"), None, "{c:#}");
    let text = t.cmd().args(["status"]).status(0).stdout;
    assert!(
        text.contains(
            "restore point; also 2 backups of another config on the bucket (or of this config's sets from \
             before one was renamed or its sources changed; not counted here)"
        ),
        "{text}"
    );
}

/// Two configs sharing a bucket and prefix: a restore from the bucket without `--set` takes this config's newest
/// backup, not the other config's newer one; with `--set docs` the newest holding it; `ls --source cloud` lists this
/// config's newest. Before: the restore took the other config's backup and restored its sets (to their places),
/// `--set docs` failed ("has no set docs"), and `ls` listed the other config's backup.
#[test]
fn a_restore_from_a_shared_bucket_takes_this_configs_newest_backup() {
    let Some((_g, _s3, t, other)) = shared_bucket((5, 5), "") else {
        return;
    };
    let ours = this_then_the_other(&t, &other);
    restore_and_ls_take(&t, &ours);
}

/// `status` of the bucket of [`shared_bucket`] (JSON): its newest backup and only restore point are `ours`.
fn own_status(t: &Test, ours: &str) -> Value {
    let status: Value = t.run_json(&["status"]);
    crate::json::assert_valid("status", &status);
    let c = &status["clouds"][0];
    assert_eq!(c["newest"]["stamp"], ours, "{c:#}");
    let points: Vec<&str> = (c["restore_points"].as_array().unwrap().iter())
        .filter_map(|p| p["stamp"].as_str())
        .collect();
    assert_eq!(points, [ours], "{c:#}");
    c.clone()
}

/// On the bucket of [`shared_bucket`]: `restore` (without `--set` and with `--set docs`) restores this config's
/// `docs` of backup `ours` (from `{home}`, not the other config's `{tmp}/notes`), and `ls` lists backup `ours`.
fn restore_and_ls_take(t: &Test, ours: &str) {
    let restore = [
        "--dry-run",
        "restore",
        "--source",
        "cloud:offsite",
        "--target",
    ];
    for set in [&[][..], &["--set", "docs"][..]] {
        let out = t
            .cmd()
            .args(restore)
            .args([t.path("out")])
            .args(set)
            .status(0);
        out.stdout_has(&format!("/home (docs, from backups/{ours}/docs.tar"));
        assert!(!out.stdout.contains("/notes ("), "{}", out.stdout);
    }
    let ls = t
        .cmd()
        .args(["ls", "--source", "cloud:offsite"])
        .status(0)
        .stdout;
    let heading = ls.lines().next().unwrap_or_default();
    assert!(
        heading.starts_with(&format!("offsite {ours} set docs")),
        "{ls}"
    );
}

/// Two configs sharing a bucket and prefix, each with a set `docs` from its own sources, the other's upload newer:
/// this config's base (its own older backup) is checked against its sums as every backup a chain goes through, so
/// its `backup.json` altered on the server makes the next upload a full. Before: only the newest backup holding a
/// set `docs` (the other config's) was checked, and this config's altered `backup.json` was built on unchecked.
#[test]
fn this_configs_base_behind_another_configs_set_of_the_same_name_is_checked_against_its_sums() {
    let Some((_g, s3, t, other)) = shared_bucket_as((5, 5), "", "docs") else {
        return;
    };
    crate::fixtures::drive::incremental_on(&t);
    let ours = this_then_the_other(&t, &other);
    let key = format!("laptop/backups/{ours}/backup.json");
    let mut meta: Value = serde_json::from_slice(&s3.get(&key)).unwrap();
    meta["host"] = Value::from("elsewhere");
    crate::cloud::put_on_server(&t, &s3, &key, &serde_json::to_vec(&meta).unwrap());

    t.write("home/new.txt", "new\n");
    t.cmd().args(["collect"]).status(0);
    let plan = t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    assert!(!plan.contains(&format!("incremental on {ours}")), "{plan}");
    assert!(
        plan.contains(
            "full: no earlier backup of this set on this destination (1 backup holds a set docs"
        ),
        "{plan}"
    );
}

/// Two configs sharing a bucket and prefix, each with a set `docs` from its own sources. Before this config
/// uploaded, the other's backup is not its newest: `backup` finds the bucket due (its look at the newest reads the
/// other's `backup.json` to pass it over). After, with the other's newer: `status` (its newest and restore points),
/// `restore` without `--set` and with `--set docs`, and `ls` take this config's backup. Before: the other config's
/// backup of `docs` was this config's newest (the bucket not due), restore point, and what restore and ls read.
#[test]
fn another_configs_set_of_the_same_name_on_a_bucket_is_not_this_configs_restore_point() {
    let Some((_g, _s3, t, other)) = shared_bucket_as((5, 5), r#", "schedule": "weekly""#, "docs")
    else {
        return;
    };
    as_other(&t, &other).args(["external"]).status(0);
    let plan: Value = t.run_json(&["--dry-run", "backup"]);
    assert_eq!(view(&plan, "offsite")["target"], true, "{plan:#}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ours = this_then_the_other(&t, &other);

    let c = own_status(&t, &ours);
    assert_eq!(c["other_configs_backups"], 2, "{c:#}");
    restore_and_ls_take(&t, &ours);
}

/// Two configs sharing a bucket and prefix: an upload removes this config's unfinished uploads (stamps without
/// `backup.json`) and leaves the other config's, which its next run may resume (its dry run says which). Before: the other config's
/// unfinished upload was removed too.
#[test]
fn an_upload_to_a_shared_bucket_leaves_the_other_configs_unfinished_uploads() {
    let Some((_g, s3, t, other)) = shared_bucket((5, 5), "") else {
        return;
    };
    let part = t.write("part", "x");
    s3.put("laptop/backups/2020-01-01-000000/notes.tar.part000", &part);
    s3.put("laptop/backups/2020-01-02-000000/docs.tar.part000", &part);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has("remove unfinished upload backups/2020-01-02-000000/")
        .stdout_has(
            "leave backups/2020-01-01-000000/ alone: an unfinished upload of another config",
        );
    assert!(
        !dry.stdout
            .contains("remove unfinished upload backups/2020-01-01-000000"),
        "{}",
        dry.stdout
    );
    t.cmd().args(["external"]).status(0);
    let left: Vec<String> = s3
        .list("laptop/backups/2020-")
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(left, ["laptop/backups/2020-01-01-000000/notes.tar.part000"]);
    as_other(&t, &other).args(["external"]).status(0);
    assert_eq!(s3.list("laptop/backups/2020-"), Vec::<(String, u64)>::new());
}

/// `external --dry-run` on a prefix shared with another config counts this config's backups there, says the other
/// config's apart, and names the other config's unfinished upload it leaves alone (text and JSON). Before: "2
/// backups there already", counting the other config's, and nothing of its unfinished upload.
#[test]
fn a_dry_run_on_a_shared_bucket_counts_this_configs_backups_and_names_the_others() {
    let Some((_g, s3, t, other)) = shared_bucket((5, 5), "") else {
        return;
    };
    this_then_the_other(&t, &other);
    let part = t.write("part", "x");
    s3.put("laptop/backups/2020-01-01-000000/notes.tar.part000", &part);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has(
        "1 backup of this config there already, and 1 backup of another config (left alone)",
    )
    .stdout_has("leave backups/2020-01-01-000000/ alone: an unfinished upload of another config");
    let plan: Value = t.run_json(&["--dry-run", "external"]);
    crate::json::assert_valid("external-plan", &plan);
    let c = &plan["clouds"][0];
    assert_eq!(c["existing"].as_array().unwrap().len(), 1, "{c:#}");
    assert_eq!(c["other_configs_backups"], 1, "{c:#}");
    assert_eq!(
        c["other_configs_unfinished"],
        serde_json::json!(["backups/2020-01-01-000000/"]),
        "{c:#}"
    );
}

/// A config with one set `docs` (`~`) to the weekly bucket `offsite` (its drive phase manual), collected and
/// uploaded once.
fn uploaded_once() -> Option<(Garage, S3Client, Test)> {
    let (g, s3) = garage_and_client()?;
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
             "schedule": {{ "external": "manual" }},
             "destinations": [ {} ] }}"#,
        offsite(&g, r#", "schedule": "weekly""#)
    );
    let t = with_keys(Test::new().config(&config), &g);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    Some((g, s3, t))
}

/// `status`, `ls` and `find` on a bucket: `status` shows the bucket's last verified upload, bytes stored, restore
/// points and its schedule from one listing and the `backup.json` (3 requests; the JSON matches
/// docs/json/status.json), and twelve days later the weekly bucket is overdue (`--check` exits 1); `ls --source
/// cloud:offsite` lists a directory through the index, saying first how many bytes it downloads, and `find --source
/// cloud` finds a file with the bucket named. Before: `status` left buckets out, and `ls`/`find` on a cloud
/// destination were usage errors (exit 2).
#[test]
fn status_ls_and_find_on_a_bucket() {
    let Some((_g, _s3, t)) = uploaded_once() else {
        return;
    };

    let out = t.cmd().args(["--json", "status"]).status(0);
    let status: Value = out.json();
    crate::json::assert_valid("status", &status);
    let c = &status["clouds"][0];
    assert_eq!(c["name"], "offsite");
    assert_eq!(c["schedule"], "weekly");
    assert_eq!(c["reachable"], true);
    assert_eq!(c["backups"], 1);
    assert_eq!(c["restore_points"][0]["kind"], "full");
    assert!(c["bytes_stored"].as_u64().unwrap() > 300 << 10, "{c:#}");
    assert_eq!(
        c["requests"], 2,
        "one listing and a GET of backup.json (small objects are read in one GET): {c:#}"
    );
    let stamp = c["newest"]["stamp"].as_str().unwrap().to_string();
    let text = t.cmd().args(["status"]).status(0);
    text.stdout_has("cloud destinations:");
    text.stdout_has("looked at with 2 requests (a listing and each backup.json; no archive read)");
    // Twelve days later the weekly bucket is overdue.
    let later = days_from_now(12);
    let late: Value = t.run_json(&["status", "--now", &later]);
    assert!(
        late["overdue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["subject"] == "offsite"),
        "{late:#}"
    );
    t.cmd()
        .args(["status", "--check", "--now", &later])
        .status(1);

    let ls = t
        .cmd()
        .args(["ls", "--source", "cloud:offsite", "-R", "~/notes"])
        .status(0);
    ls.stdout_has("todo.txt");
    ls.stdout_has("deep/plan.md");
    assert!(
        ls.stdout.starts_with(&format!("offsite {stamp} set docs")),
        "{}",
        ls.stdout
    );
    ls.stderr_has("reading ");
    ls.stderr_has("of 1 index (no archive)");
    let json: Value = t.run_json(&["ls", "--source", "cloud", "~/photos"]);
    assert_eq!(json["backups"][0]["source"], "cloud");
    assert_eq!(json["backups"][0]["destination"], "offsite");

    let found = t
        .cmd()
        .args(["find", "--source", "cloud:offsite", "*.raw"])
        .status(0);
    found.stdout_has("photos/cat.raw");
    found.stdout_has(&format!("{stamp}  offsite"));
    t.cmd()
        .args(["find", "--source", "cloud:nowhere", "*.raw"])
        .status(2);
}

/// Retention on a bucket that enforces Object Lock (moto), with `"object_lock_days": 1` and `"retention": 1`: the
/// second upload's dry run says the first backup is "kept: locked until <date>" instead of removing it, and the
/// run leaves it there (nothing removed, no warning). Before: retention did not run on buckets at all; a
/// retention that tried would have deleted `backup.json` behind a delete marker while the data stayed locked.
#[test]
fn retention_on_a_locked_bucket_keeps_what_is_locked() {
    let m = match testkit::objstore::Moto::start() {
        Ok(m) => m,
        Err(why) => return testkit::skip(&why),
    };
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
             "destinations": [ {{ "name": "offsite", "kind": "s3", "endpoint": "{}", "bucket": "{}",
               "region": "{REGION}", "prefix": "laptop", "allow_unencrypted": true, "retries": 1,
               "timeout_seconds": 10, "object_lock_days": 1, "retention": 1 }} ] }}"#,
        m.endpoint(),
        m.bucket
    );
    let mut t = Test::new()
        .config(&config)
        .env("AWS_ACCESS_KEY_ID", "testing-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-key");
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE") {
        t = t.env("AWS_CA_BUNDLE", bundle);
    }
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    let first: Value = t.run_json(&["external"]);
    let stamp = first["destinations"][0]["backup"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Full: the first is no incremental's base, only locked.
    let dry = t.cmd().args(["--dry-run", "external", "--full"]).status(0);
    assert!(
        dry.stdout
            .contains(&format!("keep      {stamp} (kept: locked until ")),
        "{}",
        dry.stdout
    );
    let second: Value = t.run_json(&["external", "--full"]);
    assert_eq!(
        second["destinations"][0]["removed"],
        serde_json::json!([]),
        "{second:#}"
    );
    let list = t
        .cmd()
        .args(["restore", "--list", "--source", "cloud"])
        .status(0);
    list.stdout_has(&stamp);
}

/// A bucket with an `encryption` of its own, to a passphrase read from its `passphrase_file` (the unattended setup
/// README describes): `external` uploads with it, and `restore --source cloud`, `ls` and `find` read the same file,
/// with no terminal and no `$DBACKUP_PASSPHRASE_FILE`. Before: the restore side read the `encryption` of the drives
/// and the top level only, so every read of such a bucket failed ("cannot read the passphrase ... set
/// DBACKUP_PASSPHRASE_FILE").
#[test]
fn a_buckets_own_passphrase_file_is_read_by_restore() {
    let Some((g, _s3)) = garage_and_client() else {
        return;
    };
    let t = Test::new();
    let pass = t.write_secret("pass.txt", "correct horse battery staple\n");
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
             "destinations": [ {} ] }}"#,
        offsite(
            &g,
            &format!(
                r#", "encryption": {{ "passphrase": true, "passphrase_file": "{}" }}"#,
                pass.display()
            )
        )
    );
    let t = with_keys(t.config(&config), &g);
    populate(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().no_terminal().args(["external"]).status(0);
    let target = t.path("restored");
    let file = t.home().join("notes/todo.txt");
    t.cmd()
        .no_terminal()
        .args(["restore", "--source", "cloud:offsite", "--path"])
        .args([&file])
        .args(["--target".as_ref(), target.as_os_str()])
        .status(0);
    let under = target.join(file.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(under).unwrap(), "buy milk\n");
    t.cmd()
        .no_terminal()
        .args(["find", "--source", "cloud", "todo.txt"])
        .status(0)
        .stdout_has("todo.txt");
}

/// A bucket whose `backups/` lists more objects than dbackup ever writes there (another program's, or a hostile
/// bucket's) is not read whole: the listing stops at its cap (lowered here through the hidden `DBACKUP_MAX_LISTED`),
/// and `external` fails on it and `status` says it could not be looked at, each naming the cap and what to do;
/// nothing on the bucket is removed. Before: every object listed was kept in memory, however many.
#[test]
fn a_bucket_listing_more_than_dbackup_writes_is_refused_not_read_whole() {
    let Some((_g, s3, t)) = uploaded_once() else {
        return;
    };
    let junk = t.write("junk", "x");
    for i in 0..8 {
        s3.put(&format!("laptop/backups/junk/{i}"), &junk);
    }
    let before = s3.list("laptop/");
    assert!(before.len() > 10, "{before:?}");
    let said = "listing backups/: more than 10 objects, more than dbackup ever writes there; give this destination \
                a prefix of its own";
    let capped = |args: &[&str], code: i32| {
        t.cmd()
            .env("DBACKUP_MAX_LISTED", "10")
            .args(args)
            .status(code)
    };
    let out = capped(&["external"], 1);
    assert!(out.stderr.contains(said), "{}", out.stderr);
    assert_eq!(s3.list("laptop/"), before);
    let status: Value = capped(&["--json", "status"], 0).json();
    let c = &status["clouds"][0];
    assert!(
        c["error"].as_str().unwrap_or_default().contains(said),
        "{c:#}"
    );
    // Uncapped, the same bucket is read (the junk is not a backup).
    let status: Value = t.run_json(&["status"]);
    assert_eq!(status["clouds"][0]["backups"], 1, "{status:#}");
}

/// A plain bucket beside an encrypted drive whose identity lies in the backed-up home (where `dbackup keygen` puts
/// it): the bucket's objects (archives in parts, indexes, `backup.json`, sums, kit, full then incremental) hold
/// not one copy of the key's bytes, and the dry run and the run say it is left out; the drive still has it.
#[test]
fn a_plain_bucket_beside_an_encrypted_drive_never_holds_the_identity() {
    let Some((g, s3)) = garage_and_client() else {
        return;
    };
    let t = Test::new();
    std::fs::create_dir_all(t.home().join(".config/dbackup")).unwrap();
    let (identity, recipient) = t.keygen("home/.config/dbackup/identity.txt");
    let config = format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
             "external": {{ "mode": "all" }},
             "destinations": [ {{ "name": "safe", "path": "{}", "require_mount": false,
                                  "encryption": {{ "recipients": ["{recipient}"],
                                                   "identity_file": "~/.config/dbackup/identity.txt" }} }},
                               {} ] }}"#,
        t.path("safe").display(),
        offsite(&g, "")
    );
    let t = with_keys(t.config(&config), &g);
    std::fs::create_dir_all(t.path("safe")).unwrap();
    populate(&t);
    t.cmd().args(["collect"]).status(0);

    let line = format!(
        "left out of offsite: {}, the config's identity_file of destination safe; this destination is not \
         encrypted",
        identity.display()
    );
    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has(&line)
        .stdout_lacks("left out of safe");
    t.cmd().args(["external"]).status(0).stderr_has(&line);
    t.write("home/notes/todo.txt", "buy bread\n");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0).stderr_has(&line);
    assert_eq!(bucket_backups(&s3).len(), 2);

    let whole = std::fs::read(&identity).unwrap();
    let secret = String::from_utf8_lossy(&whole)
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .to_string();
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut plain_seen = false;
    for (key, _) in s3.list("laptop/") {
        let bytes = s3.get(&key);
        assert!(
            !has(&bytes, secret.as_bytes()),
            "the secret key is in {key}"
        );
        assert!(!has(&bytes, &whole), "the identity file is in {key}");
        plain_seen |= has(&bytes, b"buy milk");
    }
    assert!(
        plain_seen,
        "the search works: the bucket holds the home in the clear"
    );
    // The encrypted drive keeps it: a restore from it with the identity gives it back.
    let out = t.path("restored");
    t.restore_drive(&t.path("safe"))
        .args(["--all", "--target"])
        .args([&out])
        .args(["--identity"])
        .args([&identity])
        .status(0);
    let kept = out.join(identity.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), whole);
}
