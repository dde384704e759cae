//! `dbackup config check|schema|init` and the config lookup, through the real binary: what users read when a
//! config is wrong (insta snapshots, temp paths shown as `{tmp}`), and the settings a good config gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::harness::{Test, mode};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The parts of `config check --json` these tests look at.
#[derive(Debug, Deserialize)]
struct Settings {
    config_source: Source,
    backup_root: PathBuf,
    sets: Vec<Set>,
    retention_local: serde_json::Value,
    retention_external: serde_json::Value,
    keep_at_least: u32,
    destinations: Vec<Destination>,
    state_dir: PathBuf,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Source {
    kind: String,
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Set {
    name: String,
    sources: Vec<SourcePath>,
    exclusions: Vec<Exclusion>,
}

#[derive(Debug, Deserialize)]
struct SourcePath {
    configured: String,
    path: PathBuf,
    resolved: PathBuf,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Exclusion {
    kind: String,
    pattern: String,
}

#[derive(Debug, Deserialize)]
struct Destination {
    name: String,
    path: PathBuf,
    fs_label: Option<String>,
    retention: serde_json::Value,
    keep_at_least: u32,
}

/// A minimal valid set, for configs that are about something else.
const ONE_SET: &str = r#""backup_sets": [ { "name": "home", "sources": ["~/docs"] } ]"#;

/// stderr with this test's directory shown as `{tmp}`, for stable snapshots.
fn redact(t: &Test, text: &str) -> String {
    text.replace(&t.dir.path().display().to_string(), "{tmp}")
}

/// Runs `config check` and expects exit 0; returns its warnings, redacted.
fn check_warnings(t: &Test) -> Vec<String> {
    let out = t.cmd().args(["config", "check"]).status(0);
    out.stderr
        .lines()
        .map(|l| redact(t, l))
        .filter(|l| l.starts_with("dbackup: warning: "))
        .collect()
}

/// Runs `config check` and expects exit 2; returns stderr, redacted.
fn check_fails(t: &Test) -> String {
    let out = t.cmd().args(["config", "check"]).status(2);
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when invalid: {}",
        out.stdout
    );
    redact(t, &out.stderr)
}

fn check_json(cmd: crate::harness::Cmd) -> Settings {
    cmd.args(["--json", "config", "check"]).status(0).json()
}

#[test]
fn the_seed_example_loads() {
    let t = Test::new();
    let seed = format!("{REPO}/config/seed-example.json");
    let out = t.cmd().args(["config", "check", &seed]).status(0);
    out.stdout_has("set data").stdout_has("set config");

    let s: Settings = t.run_json(&["config", "check", &seed]);
    assert_eq!(
        s.config_source,
        Source {
            kind: "file".into(),
            path: Some(seed.into())
        }
    );
    assert_eq!(
        s.sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["data", "config"]
    );
    assert_eq!(s.sets[0].sources[0].path, Path::new("/data"));
    let patterns: Vec<&str> = s.sets[0]
        .exclusions
        .iter()
        .map(|e| e.pattern.as_str())
        .collect();
    assert_eq!(patterns, ["tmp/*", "*.tmp", "*.log"]);
    assert!(s.sets[0].exclusions.iter().all(|e| e.kind == "pattern"));
    assert_eq!(
        s.sets[1].exclusions,
        [Exclusion {
            kind: "anchored".into(),
            pattern: t.expand("{home}/.config/Code/Cache/*")
        }]
    );
    assert_eq!(s.sets[1].sources[1].configured, "~/env.sh");
    assert_eq!(s.sets[1].sources[1].path, t.home().join("env.sh"));
    assert_eq!(
        s.sets[1].sources[1].resolved,
        t.home().join("env.sh"),
        "missing, so unresolved"
    );
    assert_eq!(s.retention_local, serde_json::json!({ "last": 7 }));
    assert_eq!(s.retention_external, serde_json::json!({ "last": 5 }));
    assert_eq!(s.keep_at_least, 2);
    assert_eq!(s.backup_root, t.home().join(".local/share/dbackup"));
    assert_eq!(s.state_dir, t.path("state/dbackup"));
}

#[test]
fn the_full_example_loads_with_its_destination() {
    let t = Test::new();
    let example = format!("{REPO}/config/example.json");
    let s: Settings = t.run_json(&["config", "check", &example]);
    let d = &s.destinations[0];
    assert_eq!(
        (d.name.as_str(), d.path.as_path()),
        ("T9", Path::new("/media/payne/T9"))
    );
    assert_eq!(d.fs_label.as_deref(), Some("T9"));
    assert_eq!(d.retention, serde_json::json!({ "last": 5 }));
    assert_eq!(d.keep_at_least, 2);
    assert_eq!(
        s.retention_local,
        serde_json::json!({ "last": 7, "daily": 14, "weekly": 8, "monthly": 12 })
    );
    // Its encryption example is a valid recipient (checked when loading) with the identity beside the config.
    let v: serde_json::Value = t.run_json(&["config", "check", &example]);
    let recipients = &v["encryption"]["recipients"];
    assert!(
        recipients[0]
            .as_str()
            .is_some_and(|r| r.starts_with("age1")),
        "{v}"
    );
    assert_eq!(
        v["encryption"]["identity_file"],
        t.home()
            .join(".config/dbackup/identity.txt")
            .to_str()
            .unwrap()
    );
}

#[test]
fn the_human_summary_shows_expansion_resolution_and_exclusions() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("data/projects")).unwrap();
    std::os::unix::fs::symlink(t.path("data"), t.home().join("data")).unwrap();
    let t = t.config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [ { "name": "data", "sources": ["~/data"], "exclusions": ["*.log", "~/data/projects/tmp/"] } ],
  "destinations": [ { "name": "T9", "path": "/media/payne/T9", "fs_label": "T9" } ]
}"#,
    );
    let out = t.cmd().args(["config", "check"]).status(0);
    insta::assert_snapshot!("summary", redact(&t, &out.stdout));
    let s = check_json(t.cmd());
    assert_eq!(s.sets[0].sources[0].path, t.home().join("data"));
    assert_eq!(
        s.sets[0].sources[0].resolved,
        t.path("data"),
        "the symlinked source resolves"
    );
}

/// A valid config may name files that are not there yet (a source mounted later, keys written at boot), so
/// `config check` still exits 0; but each is a warning naming the file and what it will cost, so that a typo
/// shows up at setup and not in the first night's run. Before, `config check` said "valid" and nothing else.
#[test]
fn config_check_warns_of_each_file_the_config_names_that_is_absent() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("data")).unwrap();
    let t = t.config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [
    { "name": "data", "sources": ["{tmp}/data", "{tmp}/dta"] },
    { "name": "gone", "sources": ["{tmp}/nowhere"] }
  ],
  "destinations": [
    { "name": "T9", "path": "{tmp}/T9", "require_mount": false,
      "encryption": { "recipients_file": "{tmp}/recipients.txt", "identity_file": "{tmp}/identity.txt" } },
    { "name": "off", "kind": "s3", "endpoint": "http://127.0.0.1:9", "bucket": "bkt",
      "credentials_file": "{tmp}/keys", "allow_unencrypted": true }
  ]
}"#,
    );
    let warnings = check_warnings(&t);
    insta::assert_snapshot!("absent_files", warnings.join("\n"));
    std::fs::create_dir_all(t.path("dta")).unwrap();
    std::fs::create_dir_all(t.path("nowhere")).unwrap();
    for f in ["recipients.txt", "identity.txt", "keys"] {
        std::fs::write(t.path(f), "").unwrap();
        std::fs::set_permissions(
            t.path(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    assert_eq!(check_warnings(&t), Vec::<String>::new());
}

/// The Nix modules check the config at build time, in a sandbox without the user's home, so the files it names
/// cannot be read there. `config check --allow-missing-files` accepts an `exclude_from` file and an rsync filter
/// file that do not exist, warning of each, and still refuses everything else; without the flag (and for every
/// other command) they are refused. Before, a module naming `~/.config/dbackup/excludes` could not build.
#[test]
fn config_check_can_allow_missing_exclude_files_for_a_build_sandbox() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("home/docs")).unwrap();
    let t = t.config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [
    { "name": "docs", "sources": ["{home}/docs"], "exclude_from": ["{tmp}/excludes"],
      "rsync_args": ["--filter=merge {tmp}/rules"] }
  ]
}"#,
    );
    let refused = check_fails(&t);
    assert!(
        refused.contains("{tmp}/excludes: does not exist"),
        "{refused}"
    );
    assert!(refused.contains("{tmp}/rules: does not exist"), "{refused}");
    t.cmd().args(["status"]).status(2);

    let out = t
        .cmd()
        .args(["config", "check", "--allow-missing-files"])
        .status(0);
    let warnings: Vec<String> = out
        .stderr
        .lines()
        .map(|l| redact(&t, l))
        .filter(|l| l.starts_with("dbackup: warning: "))
        .collect();
    assert_eq!(
        warnings,
        [
            "dbackup: warning: {tmp}/excludes does not exist, so its rules were not checked; every other command \
             refuses the config until it does",
            "dbackup: warning: {tmp}/rules does not exist, so its rules were not checked; every other command \
             refuses the config until it does",
        ]
    );

    // Everything else is still checked.
    let t = t.config(
        r#"{ "backup_root": "{root}",
  "backup_sets": [ { "name": "docs", "sources": ["{home}/docs"], "exclude_from": ["{tmp}/excludes"] } ],
  "retention": { "local": 0 } }"#,
    );
    let out = t
        .cmd()
        .args(["config", "check", "--allow-missing-files"])
        .status(2);
    out.stderr_has("/retention/local");

    // A file that is there is read and checked as before.
    std::fs::write(t.path("excludes"), "!\n").unwrap();
    let t = t.config(
        r#"{ "backup_root": "{root}",
  "backup_sets": [ { "name": "docs", "sources": ["{home}/docs"], "exclude_from": ["{tmp}/excludes"] } ] }"#,
    );
    let out = t
        .cmd()
        .args(["config", "check", "--allow-missing-files"])
        .status(2);
    out.stderr_has("`!` alone would clear the rules before it");
}

/// Two sets copying the same files (the same source, or one inside another that the outer set does not exclude)
/// are valid, but `config check` says so, naming both: each set keeps its own copy. Before, it said nothing.
#[test]
fn config_check_warns_of_sources_two_sets_both_copy() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("src/sub")).unwrap();
    std::fs::create_dir_all(t.path("other")).unwrap();
    let t = t.config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [
    { "name": "all", "sources": ["{tmp}/src"] },
    { "name": "sub", "sources": ["{tmp}/src/sub"] },
    { "name": "again", "sources": ["{tmp}/src", "{tmp}/other"] },
    { "name": "kept-out", "sources": ["{tmp}/other"], "exclusions": ["{tmp}/other/sub/"] },
    { "name": "other-sub", "sources": ["{tmp}/other/sub"] }
  ]
}"#,
    );
    std::fs::create_dir_all(t.path("other/sub")).unwrap();
    let warnings = check_warnings(&t);
    insta::assert_snapshot!("overlapping_sources", warnings.join("\n"));
}

/// With HOME unset or empty (cron, `env -i`), `~` is the user's home from the password database, as in a shell;
/// before, it was `/`, so `~/docs` meant `/docs` and the backup root `/.local/share/dbackup`.
#[test]
fn without_home_the_tilde_is_the_users_home_from_the_password_database() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let Some(home) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 5 && f[2] == uid.to_string()).then(|| PathBuf::from(f[5]))
    }) else {
        eprintln!("skipped: uid {uid} is not in /etc/passwd");
        return;
    };
    let t = Test::new().config(&format!(r#"{{ "backup_root": "{{root}}", {ONE_SET} }}"#));
    for empty in ["", "relative/home"] {
        let s: Settings = t
            .cmd()
            .env("HOME", empty)
            .args(["--json", "config", "check"])
            .status(0)
            .json();
        assert_eq!(
            s.sets[0].sources[0].path,
            home.join("docs"),
            "HOME={empty:?}"
        );
    }
}

#[test]
fn a_misspelt_key_is_named_with_its_line_and_the_allowed_keys() {
    let t = Test::new().config(
        r#"{
  // where snapshots go
  "bakup_root": "{root}",
  "backup_sets": [ { "name": "home", "sources": ["~/docs"] } ]
}"#,
    );
    let err = check_fails(&t);
    assert!(
        err.contains("config.json:3:3: /bakup_root: unknown key \"bakup_root\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"backup_root\"?"), "{err}");
    assert!(
        err.contains("allowed keys here: \"$schema\", \"backup_root\", \"backup_sets\""),
        "{err}"
    );
    insta::assert_snapshot!("misspelt_key", err);
}

#[test]
fn wrong_enum_values_list_the_allowed_ones() {
    let t = Test::new().config(&format!(
        r#"{{
  {ONE_SET},
  "schedule": {{ "incremental": "nightly", "external": "wekly" }},
  "notifications": {{ "events": ["failure", "disk_full"] }}
}}"#
    ));
    insta::assert_snapshot!("wrong_enum", check_fails(&t));
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let t = Test::new().config(
        r#"{
  "backup_sets": [ { "name": "home", "sources": "~/docs", "exclusions": [ 7 ] } ],
  "retention": { "local": "seven", "external": 5.5 },
  "destinations": { "name": "T9" }
}"#,
    );
    insta::assert_snapshot!("wrong_types", check_fails(&t));
}

#[test]
fn every_schema_problem_is_reported_at_once() {
    let t = Test::new().config(
        r#"{
  "backup_sets": [
    { "name": "my data", "sources": [], "method": "tar" },
    { "sources": ["/x"], "exclusion": ["*.log"] }
  ],
  "retention": { "local": { "dialy": 7 }, "external": 0 }
}"#,
    );
    let err = check_fails(&t);
    assert!(err.contains("is invalid (7 problems)"), "{err}");
    insta::assert_snapshot!("many_problems", err);
}

#[test]
fn syntax_errors_are_located_and_trailing_commas_refused() {
    let t = Test::new().config(&format!("{{\n  {ONE_SET},\n}}\n"));
    insta::assert_snapshot!("trailing_comma", check_fails(&t));
    let t = Test::new().config("{\n  \"backup_sets\": [ { \"name\": 'home' } ]\n}\n");
    insta::assert_snapshot!("single_quotes", check_fails(&t));
}

#[test]
fn an_undefined_variable_is_named() {
    let t = Test::new().config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [ { "name": "data", "sources": ["$DDATA/projects", "${WORK}"] } ]
}"#,
    );
    let err = check_fails(&t);
    assert!(err.contains("undefined variable $DDATA"), "{err}");
    insta::assert_snapshot!("undefined_variable", err);

    // Set, the same file is fine.
    std::fs::create_dir_all(t.path("d")).unwrap();
    let d = t.path("d").display().to_string();
    t.cmd()
        .env("DDATA", &d)
        .env("WORK", &d)
        .args(["config", "check"])
        .status(0);
}

#[test]
fn duplicate_set_names_are_refused_even_ignoring_case() {
    let t = Test::new().config(
        r#"{
  "backup_root": "{root}",
  "backup_sets": [
    { "name": "data", "sources": ["/a"] },
    { "name": "Data", "sources": ["/b"] }
  ]
}"#,
    );
    insta::assert_snapshot!("duplicate_sets", check_fails(&t));
}

#[test]
fn sources_and_the_backup_root_must_not_contain_each_other() {
    let t = Test::new().config(
        r#"{
  "backup_root": "~/backups",
  "backup_sets": [
    { "name": "old", "sources": ["~/backups/old"] },
    { "name": "home", "sources": ["~"], "exclusions": ["*.iso"] }
  ]
}"#,
    );
    insta::assert_snapshot!("source_inside_root", check_fails(&t));

    // Excluding the root by its path makes the home set valid.
    let t = Test::new().config(
        r#"{
  "backup_root": "~/backups",
  "backup_sets": [ { "name": "home", "sources": ["~"], "exclusions": ["~/backups/"] } ]
}"#,
    );
    t.cmd().args(["config", "check"]).status(0);
}

#[test]
fn lookup_prefers_flag_then_env_then_xdg_then_built_in() {
    let t = Test::new();
    let file = |name: &str| {
        let p = t.write(
            name,
            format!(r#"{{ "backup_root": "/{name}", {ONE_SET} }}"#),
        );
        p.display().to_string()
    };
    let source = |s: &Settings| {
        s.config_source
            .path
            .clone()
            .map(|p| p.display().to_string())
    };

    // Nothing anywhere: the built-in default.
    let s = check_json(t.cmd());
    assert_eq!(
        s.config_source,
        Source {
            kind: "built_in".into(),
            path: None
        }
    );
    assert_eq!(
        s.sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["data", "config"]
    );

    // $XDG_CONFIG_HOME/dbackup/config.json.
    let xdg = file("xdg-config/dbackup/config.json");
    assert_eq!(source(&check_json(t.cmd())), Some(xdg.clone()));

    // ~/.config/dbackup/config.json when XDG_CONFIG_HOME is unset (empty).
    let home = file("home/.config/dbackup/config.json");
    assert_eq!(
        source(&check_json(t.cmd().env("XDG_CONFIG_HOME", ""))),
        Some(home)
    );

    // $DBACKUP_CONFIG beats XDG; --config beats both.
    let env = file("env.json");
    assert_eq!(
        source(&check_json(t.cmd().env("DBACKUP_CONFIG", &env))),
        Some(env.clone())
    );
    let flag = file("flag.json");
    let s = check_json(
        t.cmd()
            .env("DBACKUP_CONFIG", &env)
            .args(["--config", &flag]),
    );
    assert_eq!(source(&s), Some(flag));
    assert_eq!(s.backup_root, Path::new("/flag.json"));

    // The built-in default depends on $DDATA and $DBACKUP, and says so when they do not work.
    std::fs::remove_file(t.path("xdg-config/dbackup/config.json")).unwrap();
    let out = t
        .cmd()
        .env("DDATA", "data")
        .args(["config", "check"])
        .status(2);
    out.stderr_has("the built-in default config does not work");
    out.stderr_has("$DDATA");

    // A relative --config is taken from the current directory.
    let s = check_json(t.cmd().args(["--config", "env.json"]));
    assert_eq!(source(&s), Some(env));
}

#[test]
fn a_named_config_that_does_not_exist_says_how_to_create_one() {
    let t = Test::new();
    let out = t
        .cmd()
        .env("DBACKUP_CONFIG", t.path("nope.json"))
        .args(["config", "check"])
        .status(2);
    insta::assert_snapshot!("missing_env_config", redact(&t, &out.stderr));
    let out = t
        .cmd()
        .args(["--config", "missing.json", "config", "check"])
        .status(2);
    out.stderr_has("(named by --config) does not exist; run `dbackup config init");
}

#[test]
fn a_dangling_default_config_is_an_error_not_the_built_in_default() {
    let t = Test::new();
    std::fs::create_dir_all(t.path("xdg-config/dbackup")).unwrap();
    std::os::unix::fs::symlink(
        t.path("dotfiles/config.json"),
        t.path("xdg-config/dbackup/config.json"),
    )
    .unwrap();
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr_has("cannot read config");
    out.stderr_has("dotfiles/config.json, which does not exist");
}

#[test]
fn init_writes_the_commented_default_which_loads_as_the_built_in_one() {
    for vars in [
        &[][..],
        &[("DDATA", "/srv/data"), ("DBACKUP", "/srv/backup")][..],
    ] {
        let t = Test::new();
        let with = |mut c: crate::harness::Cmd| {
            for (k, v) in vars {
                c = c.env(k, v);
            }
            c
        };
        let built_in: serde_json::Value = with(t.cmd())
            .args(["--json", "config", "check"])
            .status(0)
            .json();

        let out = with(t.cmd()).args(["config", "init"]).status(0);
        let path = t.path("xdg-config/dbackup/config.json");
        assert_eq!(out.stdout.trim(), format!("wrote {}", path.display()));
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("// Options: hourly, daily, weekly, monthly"),
            "{text}"
        );

        let written: serde_json::Value = with(t.cmd())
            .args(["--json", "config", "check"])
            .status(0)
            .json();
        assert_eq!(
            written["config_source"],
            serde_json::json!({ "kind": "file", "path": path })
        );
        let strip = |mut v: serde_json::Value| {
            v.as_object_mut().unwrap().remove("config_source");
            v
        };
        assert_eq!(strip(written), strip(built_in), "with {vars:?}");
    }
}

#[test]
fn init_never_overwrites() {
    let t = Test::new();
    let path = t.write("xdg-config/dbackup/config.json", "{ my precious edits }");
    let out = t.cmd().args(["config", "init"]).status(2);
    insta::assert_snapshot!("init_exists", redact(&t, &out.stderr));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{ my precious edits }"
    );
    let out = t.cmd().args(["--dry-run", "config", "init"]).status(2);
    out.stderr_has("already exists");
}

#[test]
fn init_to_a_path_creates_its_directories_and_dry_run_writes_nothing() {
    let t = Test::new();
    let target = t.path("new/dir/dbackup.json");
    let out = t
        .cmd()
        .args(["--dry-run", "config", "init", "new/dir/dbackup.json"])
        .status(0);
    assert!(
        !target.exists() && !t.path("new").exists(),
        "dry run wrote something"
    );
    out.stderr_has(&format!("would write {} (mode 0600)", target.display()));
    assert!(
        out.stdout.starts_with("// dbackup configuration"),
        "{}",
        out.stdout
    );

    t.cmd()
        .args(["config", "init", "new/dir/dbackup.json"])
        .status(0);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        out.stdout,
        "dry run printed what init writes"
    );
    t.cmd()
        .args(["config", "check", "new/dir/dbackup.json"])
        .status(0);
    let leftovers: Vec<_> = std::fs::read_dir(t.path("new/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["dbackup.json"], "no temporary file left behind");

    // --config names the file init writes, too.
    let flagged = t.path("flagged.json");
    t.cmd()
        .args(["--config", "flagged.json", "config", "init"])
        .status(0);
    assert!(flagged.exists());
}

#[test]
fn schema_prints_the_committed_file() {
    let out = Test::new().cmd().args(["config", "schema"]).status(0);
    let committed = std::fs::read_to_string(format!("{REPO}/config/schema.json")).unwrap();
    assert_eq!(out.stdout, committed);
    let _: serde_json::Value = serde_json::from_str(&out.stdout).expect("the schema is JSON");
}

/// The config examples of README.md (its ```json and ```jsonc blocks), as a user copies them.
fn readme_config_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in readme.lines() {
        match (&mut open, line.trim_end()) {
            (None, "```json" | "```jsonc") => open = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                open = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Every config example in README.md passes `config check` as written. A fragment (one section, `"key": value`,
/// as the README shows most) is checked inside a config holding only one set besides it; `age1...` stands for
/// what `dbackup keygen` printed. Before: no test read the README's examples.
#[test]
fn the_readme_config_examples_pass_config_check() {
    let examples = readme_config_examples();
    assert!(examples.len() >= 3, "{examples:?}");
    for example in examples {
        let t = Test::new();
        let (_, recipient) = t.keygen("key.txt");
        let example = example.replace("\"age1...\"", &format!("\"{recipient}\""));
        let config = if example.trim_start().starts_with('{') {
            example.clone()
        } else {
            format!("{{ {ONE_SET},\n{example}\n}}")
        };
        let path = t.write("config.json", &config);
        let out = t
            .cmd()
            .no_config()
            .args(["config", "check"])
            .args([&path])
            .output();
        assert_eq!(
            out.code, 0,
            "README's example fails `config check`:\n{example}\n--- stderr\n{}",
            out.stderr
        );
    }
}

/// An identity file or a passphrase file that users other than its owner can read is a key anyone on the machine
/// can take: ssh refuses such a key, and reading a passphrase file refuses it too. `config check` says so at setup,
/// once per file, naming it, its mode and `chmod 600`, and never the secret; with mode 0600 it is quiet. Before, it
/// said nothing, so the first anyone heard of it was a refused run (or never, for an identity only a restore reads).
#[test]
fn config_check_warns_of_a_key_file_others_can_read_and_never_shows_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new();
    std::fs::create_dir_all(t.path("data")).unwrap();
    let (identity, recipient) = t.keygen("identity.txt");
    assert_eq!(mode(&identity), 0o600, "keygen writes mode 0600");
    t.write("pass", "correct horse battery staple\n");
    let t = t.config(&format!(
        r#"{{
  "backup_root": "{{root}}",
  "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/data"] }} ],
  "encryption": {{ "recipients": ["{recipient}"], "identity_file": "{{tmp}}/identity.txt" }},
  "destinations": [
    {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false }},
    {{ "name": "T10", "path": "{{tmp}}/T10", "require_mount": false }},
    {{ "name": "T11", "path": "{{tmp}}/T11", "require_mount": false,
      "encryption": {{ "passphrase": true, "passphrase_file": "{{tmp}}/pass" }} }}
  ]
}}"#
    ));
    let set_mode = |f: &str, m: u32| {
        std::fs::set_permissions(t.path(f), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set_mode("identity.txt", 0o644);
    set_mode("pass", 0o640);
    let out = t.cmd().args(["config", "check"]).status(0);
    let secret = std::fs::read_to_string(&identity).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(secret),
            "the identity is never shown: {text}"
        );
        assert!(
            !text.contains("horse"),
            "the passphrase is never shown: {text}"
        );
    }
    let warnings = check_warnings(&t);
    assert_eq!(
        warnings,
        [
            "dbackup: warning: the identity file {tmp}/identity.txt can be read by other users (mode 0644): anyone \
             who can read it can decrypt the backups encrypted with it; run `chmod 600 {tmp}/identity.txt`",
            "dbackup: warning: the passphrase file {tmp}/pass can be read by other users (mode 0640): anyone who \
             can read it can decrypt the backups encrypted with it; run `chmod 600 {tmp}/pass`",
        ],
        "one warning per file (T9 and T10 share the identity), each naming its file, mode and the fix"
    );
    set_mode("identity.txt", 0o600);
    set_mode("pass", 0o600);
    assert_eq!(check_warnings(&t), Vec::<String>::new());
}
