//! The `b2` kind (Backblaze B2's native API) through the real binary, as far as it runs without a B2 account:
//! the config's rules, keys from the environment or a private file, and what a run that cannot use B2 says. No
//! test here talks to a real B2 (README.md, "Cloud destinations", says what was and was not run against it).

use crate::cloud::no_secret;
use crate::harness::Test;

/// A key id and an application key shaped like B2's (not real ones).
const KEY_ID: &str = "0051f2c3d4e5f60000000007";
const APP_KEY: &str = "K005xQ9mZt2Vb7Nw4Ls1Pd8Hc6Yr3Ge0Ja";

/// A config with one b2 destination `b2off` (extra keys spliced in).
fn config(extra: &str) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "docs", "sources": ["{{home}}"] }} ],
            "destinations": [ {{ "name": "b2off", "kind": "b2", "bucket": "my-offsite",
              "bucket_id": "4a48fe8875c6214145260818", "prefix": "laptop", "allow_unencrypted": true,
              "retries": 1, "timeout_seconds": 10 {extra} }} ] }}"#
    )
}

/// The config's rules for a b2 destination: `bucket_id` required, `endpoint`, `region`, `storage_class` and
/// `object_lock_days` refused with where they belong (B2's S3-compatible endpoint is `"kind": "s3"`); keys in a
/// `credentials_file` readable by others refused (`chmod 600`), without echoing them; the same file at 0600
/// accepted, and `config check` names the destination and the file, never a key. Before: these rules had unit
/// tests only (settings, credentials); nothing ran them through the binary.
#[test]
fn b2_destinations_are_checked_by_the_config() {
    let cases = [
        (
            config("").replace(r#""bucket_id": "4a48fe8875c6214145260818", "#, ""),
            "a b2 destination needs `bucket_id`",
        ),
        (
            config(r#", "endpoint": "https://s3.us-west-004.backblazeb2.com""#),
            "B2's S3-compatible endpoint is \"kind\": \"s3\"",
        ),
        (
            config(r#", "object_lock_days": 30"#),
            "B2's native API has no storage classes",
        ),
    ];
    for (text, want) in cases {
        let t = Test::new().config(&text);
        let out = t.cmd().args(["config", "check"]).status(2);
        assert!(out.stderr.contains(want), "{want}:\n{}", out.stderr);
    }

    let probe = Test::new();
    let keys = format!("b2_application_key_id = {KEY_ID}\nb2_application_key = {APP_KEY}\n");
    let file = probe.write("b2-keys", &keys);
    let t = Test::new().config(&config(&format!(
        r#", "credentials_file": "{}""#,
        file.display()
    )));
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("chmod 600");
    no_secret(&out, &[KEY_ID, APP_KEY]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = t.cmd().args(["config", "check"]).status(0);
    out.stdout_has("b2off");
    no_secret(&out, &[KEY_ID, APP_KEY]);
}

/// `cloud check` and `external` on a b2 destination whose keys are in the environment, on a machine that cannot
/// reach B2 (this one: no route to api.backblazeb2.com) or with keys B2 does not know (a machine that can): exit 1,
/// the list probe failed with a sentence saying what to check, the later probes not tried, `external` promoting
/// nothing; the keys come from `$B2_APPLICATION_KEY_ID` (the JSON report says so) and neither key is in any output.
/// Without the keys: exit 2 naming both variables. Before: only the OpenDAL operator's construction was tested
/// (a unit test); no b2 run went through the binary.
#[test]
fn a_b2_destination_that_cannot_be_used_fails_clearly_without_a_key_shown() {
    let t = Test::new().config(&config(""));
    let out = t.cmd().args(["cloud", "check", "b2off"]).status(2);
    out.stdout_has("B2_APPLICATION_KEY_ID")
        .stdout_has("B2_APPLICATION_KEY");

    let t = Test::new()
        .config(&config(""))
        .env("B2_APPLICATION_KEY_ID", KEY_ID)
        .env("B2_APPLICATION_KEY", APP_KEY);
    let human = t.cmd().args(["cloud", "check", "b2off"]).status(1);
    no_secret(&human, &[KEY_ID, APP_KEY]);
    assert!(
        human.stdout.contains("no answer from") || human.stdout.contains("refused the request"),
        "{}",
        human.stdout
    );
    human.stdout_has("FAIL  list");
    let json = t
        .cmd()
        .args(["--json", "cloud", "check", "b2off"])
        .status(1);
    no_secret(&json, &[KEY_ID, APP_KEY]);
    let report: serde_json::Value = json.json();
    assert_eq!(report["credentials"]["kind"], "environment", "{report}");
    let probes = report["probes"].as_array().unwrap();
    let outcome = |name: &str| {
        probes
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["outcome"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(outcome("list").as_deref(), Some("failed"), "{report}");
    assert_eq!(outcome("write").as_deref(), Some("skipped"), "{report}");

    t.write("home/notes.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["external"]).status(1);
    no_secret(&out, &[KEY_ID, APP_KEY]);
    assert!(
        out.stderr.contains("no answer from") || out.stderr.contains("refused the request"),
        "{}",
        out.stderr
    );
}
