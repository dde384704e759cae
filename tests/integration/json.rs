//! The `--json` contract (issue 14, item 8): every output of the real binary carries `"format": 1` first, writes
//! its timestamps as RFC 3339 with an offset, and validates against its schema in `docs/json/`; a failed `--json`
//! run prints `{ "format": 1, "error": ..., "exit": N }` on stdout.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Output, Test};

/// Every schema under `docs/json/`, as the README's table lists them.
const SCHEMAS: &[&str] = &[
    "backup-plan",
    "backup",
    "cloud-check",
    "collect-plan",
    "collect",
    "config-check",
    "config-init",
    "error",
    "external-plan",
    "external",
    "find",
    "image-create-plan",
    "image-create",
    "image-kit",
    "image-restore-plan",
    "image-restore",
    "keygen",
    "ls",
    "report",
    "restore-list",
    "restore-plan",
    "restore-verify",
    "restore",
    "status",
    "systemd-render-out",
    "systemd-render",
];

fn schema_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/json")
        .join(format!("{name}.json"))
}

pub fn validator(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(schema_path(name))
        .unwrap_or_else(|e| panic!("docs/json/{name}.json: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("docs/json/{name}.json is not a valid JSON Schema: {e}"))
}

/// `v` is valid against `docs/json/<name>.json`; the errors and `v` in the panic otherwise.
#[track_caller]
pub fn assert_valid(name: &str, v: &Value) {
    let errors: Vec<String> = validator(name)
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{v:#}");
}

/// Every string that looks like a date and a time, anywhere in `v`, with its JSON pointer.
fn times(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s)
            if s.len() >= 19
                && s.as_bytes()[4] == b'-'
                && s.as_bytes()[10] == b'T'
                && s[..4].bytes().all(|b| b.is_ascii_digit()) =>
        {
            out.push((at, s.clone()))
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| times(x, format!("{at}/{i}"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| times(x, format!("{at}/{k}"), out)),
        _ => {}
    }
}

/// Checks one real output against the contract: one JSON object, `format` its first member and 1, every timestamp
/// RFC 3339 with an offset, valid against `docs/json/<schema>.json`. Returns it parsed.
fn check(schema: &str, out: &Output) -> Value {
    let first = out.stdout.lines().nth(1).unwrap_or_default();
    assert_eq!(
        first.trim(),
        "\"format\": 1,",
        "{schema}: `format` is not the first member:\n{}",
        out.stdout
    );
    let v: Value = out.json();
    let mut found = Vec::new();
    times(&v, String::new(), &mut found);
    for (at, t) in &found {
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{schema}: {at} = {t:?} is not RFC 3339 with an offset"
        );
    }
    let errors: Vec<String> = validator(schema)
        .iter_errors(&v)
        .map(|e| format!("  {} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema}: the output does not match docs/json/{schema}.json:\n{}\n{}",
        errors.join("\n"),
        out.stdout
    );
    v
}

fn world() -> Test {
    let t = Test::new()
        .config(
            r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ],
                 "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#,
        )
        // Not UTC: a local time must carry the zone's offset, not pass as one without it.
        .env("TZ", "Europe/Paris");
    t.write("home/data/a.txt", "a");
    t.write("home/data/sub/b.txt", "bb");
    std::fs::create_dir_all(t.path("T9")).unwrap();
    t
}

/// Every `--json` output of the phases, the restore, status, report and config, run for real on a set backed up to a
/// directory destination, matches its schema in `docs/json/`, with `"format": 1` first and RFC 3339 timestamps.
/// Before: no output had `format`, and `restore --list` wrote its backups' `time` without an offset
/// (`"2025-04-01T03:15:00"`), the collect and external plans their time only as a stamp (`2025-04-01-031500`);
/// `config init --dry-run --json` printed the config as text and `keygen --dry-run --json` nothing.
#[test]
fn every_output_matches_its_schema() {
    let t = world();
    let run = |schema: &str, args: &[&str]| check(schema, &t.cmd().args(args).status(0));
    run("collect-plan", &["--json", "--dry-run", "collect"]);
    run("collect", &["--json", "collect"]);
    run("external-plan", &["--json", "--dry-run", "external"]);
    run("external", &["--json", "external"]);
    run("backup-plan", &["--json", "--dry-run", "backup", "--force"]);
    run("backup", &["--json", "backup", "--force"]);
    run("status", &["--json", "status"]);
    run("status", &["--json", "status", "--history", "3"]);
    run("report", &["--json", "report"]);
    let list = run("restore-list", &["--json", "restore", "--list"]);
    for b in list["backups"].as_array().unwrap() {
        let time = b["time"].as_str().unwrap();
        assert!(
            time.ends_with("+01:00") || time.ends_with("+02:00"),
            "a local time in Europe/Paris carries its offset: {time}"
        );
    }
    run("restore-verify", &["--json", "restore", "--verify"]);
    let data = t.home().join("data");
    let data = data.to_str().unwrap();
    let target = t.path("target");
    let target = target.to_str().unwrap();
    let args = ["restore", "--path", data, "--target", target];
    run(
        "restore-plan",
        &[&["--json", "--dry-run"], &args[..]].concat(),
    );
    run("restore", &[&["--json"], &args[..]].concat());
    run("config-check", &["--json", "config", "check"]);
    let new = t.path("new-config.json");
    let dry = run(
        "config-init",
        &[
            "--json",
            "--dry-run",
            "config",
            "init",
            new.to_str().unwrap(),
        ],
    );
    assert_eq!(dry["dry_run"], true, "{dry}");
    run(
        "config-init",
        &["--json", "config", "init", new.to_str().unwrap()],
    );
    let key = t.path("key.txt");
    let args = ["keygen", "--out", key.to_str().unwrap()];
    run("keygen", &[&["--json", "--dry-run"], &args[..]].concat());
    run("keygen", &[&["--json"], &args[..]].concat());
    run(
        "systemd-render",
        &["systemd", "render", "--user", "--format", "json"],
    );
    let units = t.path("units");
    run(
        "systemd-render-out",
        &[
            "--json",
            "systemd",
            "render",
            "--user",
            "--out",
            units.to_str().unwrap(),
        ],
    );
    let ls = run("ls", &["--json", "ls", data]);
    assert_eq!(ls["backups"].as_array().unwrap().len(), 1, "{ls}");
    let ls = run(
        "ls",
        &["--json", "ls", "--source", "external", "--recursive", data],
    );
    assert_eq!(ls["backups"][0]["destination"], "T9", "{ls}");
    let found = run("find", &["--json", "find", "b.txt"]);
    assert!(
        found["matches"][0]["versions"].as_array().unwrap().len() >= 2,
        "{found}"
    );
    // A real image create needs root, loop devices and partclone (loopdev_image checks its output and the
    // restore's); its plan is checked here, on a device it refuses (a plain file: exit 1, nothing to image).
    let disk = t.write("disk.img", vec![0u8; 4096]);
    let plan = check(
        "image-create-plan",
        &t.cmd()
            .args(["--json", "--dry-run", "image", "create", "--device"])
            .args([&disk])
            .status(1),
    );
    assert!(
        plan["system"]["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a block device")
    );
    run("image-kit", &["--json", "image", "kit"]);
    let kit = t.path("kit");
    run(
        "image-kit",
        &["--json", "image", "kit", "--out", kit.to_str().unwrap()],
    );
}

/// A failed `--json` run prints the error object on stdout (and still the error on stderr), with the exit code it
/// ends with: a usage error clap finds (2), a config that does not exist (2), a run that fails (external before
/// any collect, 1).
/// Before: stdout was empty on failure; only stderr said what went wrong.
#[test]
fn a_failure_is_an_error_object_on_stdout() {
    let t = world();
    let error = validator("error");
    let cases: [(&[&str], i32, &str); 3] = [
        (&["--json", "status", "--bogus"], 2, "--bogus"),
        (
            &["--json", "--config", "/nonexistent/dbackup.json", "status"],
            2,
            "does not exist",
        ),
        (&["--json", "external"], 1, "nothing has been collected yet"),
    ];
    for (args, code, says) in cases {
        let cmd = if args.contains(&"--config") {
            t.cmd().no_config()
        } else {
            t.cmd()
        };
        let out = cmd.args(args).status(code);
        let v: Value = out.json();
        assert!(error.is_valid(&v), "{args:?}: {}", out.stdout);
        assert_eq!(v["format"], 1, "{args:?}");
        assert_eq!(v["exit"], code, "{args:?}");
        let text = v["error"].as_str().unwrap();
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(
            out.stderr.contains(says),
            "{args:?}: stderr: {}",
            out.stderr
        );
    }
    // Without --json, stdout stays empty.
    let out = t.cmd().args(["status", "--bogus"]).status(2);
    assert_eq!(out.stdout, "");
}

/// A usage error's object says what clap said, whole: for a missing argument, which one. (Before: only clap's
/// first line reached the object, "the following required arguments were not provided:", naming nothing.)
#[test]
fn a_usage_error_object_names_the_missing_argument() {
    let t = world();
    for (args, names) in [
        (&["--json", "find"][..], "<PATTERN>"),
        (&["--json", "cloud", "check"], "<NAME>"),
    ] {
        let out = t.cmd().args(args).status(2);
        let v: Value = out.json();
        assert_valid("error", &v);
        let text = v["error"].as_str().unwrap();
        assert!(
            text.starts_with("the following required arguments were not provided")
                && text.contains(names),
            "{args:?}: {text}"
        );
    }
}

/// Every schema in `docs/json/` is a valid JSON Schema requiring `"format": 1`, is listed here (so a test uses it)
/// and in the README's table. Before: there was no `docs/json/`.
#[test]
fn schemas_are_listed_and_require_the_format() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(schema_path("x").parent().unwrap())
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SCHEMAS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "docs/json/ and this test's list differ");
    for name in SCHEMAS {
        validator(name);
        let text = std::fs::read_to_string(schema_path(name)).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            schema["properties"]["format"]["const"], 1,
            "docs/json/{name}.json does not pin format to 1"
        );
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.contains(&Value::from("format"))),
            "docs/json/{name}.json does not require format"
        );
        assert!(
            readme.contains(&format!("docs/json/{name}.json")),
            "README.md does not list docs/json/{name}.json"
        );
    }
}

/// A panic caught at the top is a failure like any other: with `--json`, stdout holds the error object ("internal
/// error", exit 1). Before: stdout was empty.
#[test]
fn a_panic_is_an_error_object_too() {
    let t = world();
    let out = t
        .cmd()
        .env("DBACKUP_TEST_PANIC", "collect")
        .args(["--json", "collect"])
        .status(1);
    let v: Value = out.json();
    assert!(validator("error").is_valid(&v), "{}", out.stdout);
    assert_eq!(v["exit"], 1);
    assert!(
        v["error"].as_str().unwrap().starts_with("internal error: "),
        "{}",
        out.stdout
    );
}

/// The same schemas hold for the other shapes of each output: nothing collected yet (no `last_run`, no backups), a
/// set whose sources are all missing (refused: collect exits 1), a destination that is absent (external exits 3), a
/// forced backup that fails, in a zone west of UTC. Before: no `format`, no schemas.
#[test]
fn outputs_of_empty_and_partial_runs_match_too() {
    let t = Test::new()
        .config(
            r#"{ "backup_root": "{root}",
                 "backup_sets": [ { "name": "data", "sources": ["~/data"] },
                                  { "name": "gone", "sources": ["~/missing"] } ],
                 "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false },
                                   { "name": "USB", "path": "{tmp}/USB" } ] }"#,
        )
        .env("TZ", "America/New_York");
    t.write("home/data/a.txt", "a");
    std::fs::create_dir_all(t.path("T9")).unwrap();
    let run =
        |schema: &str, args: &[&str], code: i32| check(schema, &t.cmd().args(args).status(code));
    run("status", &["--json", "status"], 0);
    run("report", &["--json", "report"], 0);
    run("restore-list", &["--json", "restore", "--list"], 0);
    run("collect-plan", &["--json", "--dry-run", "collect"], 1);
    run("collect", &["--json", "collect"], 1);
    let plan = run("external-plan", &["--json", "--dry-run", "external"], 3);
    assert!(
        plan["time"].as_str().unwrap().ends_with("-05:00")
            || plan["time"].as_str().unwrap().ends_with("-04:00")
    );
    run("external", &["--json", "external"], 3);
    run("backup", &["--json", "backup", "--force"], 1);
    run("status", &["--json", "status", "--history", "5"], 0);
    run("restore-list", &["--json", "restore", "--list"], 0);
    run("restore-verify", &["--json", "restore", "--verify"], 0);
}
