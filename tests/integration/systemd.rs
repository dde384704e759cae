//! `dbackup systemd render` through the real binary: the units and rule people install (insta snapshots), `--out`,
//! the errors; and the checks by the real tools: `systemd-analyze verify` (system and user, no warning allowed),
//! `systemd-analyze calendar` of every schedule value, `systemd-escape --path`, and `nix/lib.nix` (evaluated with
//! `nix-instantiate`), whose `render` must equal `dbackup systemd render --format json` for the same config.
//!
//! The tools come from Debian's systemd and nix-bin (`cargo xtask test` installs them when root). A test whose tool
//! is missing says so and skips; under CI (`CI=true`) a missing tool fails it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dbackup::{
    COLLECT_SERVICE, COLLECT_TIMER, EXTERNAL_SERVICE, RenderedUnits, SERVE_SERVICE, UDEV_RULES,
    UNIT_HEADER, UnitScope, UnitValue,
};

use crate::harness::{BIN, Output, Test, mode};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A fixed binary path for snapshots (`--exe`): the units do not depend on where the test binary was built.
const EXE: &str = "/usr/local/bin/dbackup";

/// Three destinations: matched by label, by uuid (its mount point has a space and a dash), and by neither.
const CONFIG: &str = r#"{
  "backup_root": "/srv/backup",
  "backup_sets": [ { "name": "data", "sources": ["~/data", "$DDATA"] } ],
  "schedule": { "incremental": "daily", "external": "weekly" },
  "destinations": [
    { "name": "T9", "path": "/media/payne/T9", "fs_label": "T9" },
    { "name": "spare", "path": "/run/media/payne/my spare-disk", "fs_uuid": "6be7-a7d5" },
    { "name": "nas", "path": "/mnt/nas" }
  ]
}"#;

/// True when every tool is installed; otherwise prints that the test skips (and fails under CI, whose command
/// installs them).
fn require(tools: &[&str], package: &str) -> bool {
    testkit::require_tools(
        tools,
        &format!("apt-get install {package}; `cargo xtask test` does it when root"),
    )
}

/// Runs a program; returns (exit code, stdout, stderr).
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(testkit::tool(program).unwrap_or_else(|| PathBuf::from(program)));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn redact(t: &Test, text: &str) -> String {
    text.replace(&t.dir.path().display().to_string(), "{tmp}")
}

fn test_with(config: &str) -> Test {
    Test::new().config(config).env("DDATA", "/data")
}

fn render(t: &Test, args: &[&str]) -> Output {
    t.cmd()
        .args(["systemd", "render"])
        .args(args.iter().copied())
        .status(0)
}

fn render_json(t: &Test, args: &[&str]) -> RenderedUnits {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    render(t, &all).json()
}

fn value<'r>(r: &'r RenderedUnits, unit: &str, section: &str, key: &str) -> &'r UnitValue {
    &r.units[unit][section][key]
}

#[test]
fn system_units_and_udev_rule() {
    let t = test_with(CONFIG);
    let out = render(&t, &["--system", "--run-as", "root", "--exe", EXE]);
    insta::assert_snapshot!("system", redact(&t, &out.stdout));
    out.stderr_has("sudo cp DIR/99-dbackup.rules /etc/udev/rules.d/");
    // ProtectSystem=strict: what the units write must exist before they start.
    for line in [
        "sudo install -d -m 0700 -o root /srv/backup",
        "sudo -u root mkdir -p /root/.local/state/dbackup",
    ] {
        assert!(out.stderr.contains(line), "{line}: {}", out.stderr);
    }
}

/// A config with a bucket: the system units' runs wait for the network (`Wants=` and `After=network-online.target`),
/// so a timer that fires at boot does not upload before the network is up (before, they did not wait, and such a
/// run failed). Without a bucket, and in a user manager (which has no such target), they do not wait.
#[test]
fn system_units_that_reach_a_bucket_wait_for_the_network() {
    const BUCKET: &str = r#"{ "name": "offsite", "kind": "s3", "bucket": "bucket1", "endpoint": "https://s3.example.org",
                               "region": "garage", "allow_unencrypted": true }"#;
    let online = UnitValue::Many(vec!["network-online.target".into()]);
    let with_bucket = test_with(&CONFIG.replace(
        r#"{ "name": "nas", "path": "/mnt/nas" }"#,
        &format!(r#"{{ "name": "nas", "path": "/mnt/nas" }}, {BUCKET}"#),
    ));
    let r = render_json(
        &with_bucket,
        &["--system", "--run-as", "root", "--exe", EXE],
    );
    for unit in ["dbackup-collect.service", "dbackup-external.service"] {
        assert_eq!(value(&r, unit, "Unit", "Wants"), &online, "{unit}");
        let UnitValue::Many(after) = value(&r, unit, "Unit", "After") else {
            panic!("{unit}: After is one value")
        };
        assert!(
            after.contains(&"network-online.target".to_string()),
            "{unit}: {after:?}"
        );
    }
    let r = render_json(&with_bucket, &["--user", "--exe", EXE]);
    let r2 = render_json(
        &test_with(CONFIG),
        &["--system", "--run-as", "root", "--exe", EXE],
    );
    for (what, r) in [("user units", &r), ("no bucket", &r2)] {
        for unit in ["dbackup-collect.service", "dbackup-external.service"] {
            let text = serde_json::to_string(&r.units[unit]).unwrap();
            assert!(!text.contains("network-online"), "{what}: {unit}: {text}");
        }
    }
}

/// What the units start by name is checked where they are rendered: a program the enabled sinks need and this
/// machine lacks is a warning, and the JSON lists them all (main neither listed nor checked them, and ran curl,
/// which the Nix package did not provide, for https notifications).
#[test]
fn render_names_the_programs_the_units_start_and_warns_of_missing_ones() {
    let t = test_with(&CONFIG.replace(
        r#""schedule""#,
        r#""notifications": { "desktop": true, "command": ["dbackup-no-such-notifier", "-x"], "http": "https://ntfy.sh/x" },
  "schedule""#,
    ));
    let r = render_json(&t, &["--user", "--exe", EXE]);
    assert_eq!(
        r.programs,
        ["blkid", "dbackup-no-such-notifier", "notify-send", "rsync"]
    );
    let out = render(&t, &["--user", "--exe", EXE]);
    out.stderr_has(
        "warning: the units start dbackup-no-such-notifier, which is not installed here",
    );
    out.stderr_lacks("curl");
}

#[test]
fn user_units() {
    let t = test_with(&CONFIG.replace(
        r#""incremental": "daily", "external": "weekly""#,
        r#""incremental": "hourly", "external": "always""#,
    ));
    let out = render(&t, &["--user", "--exe", EXE]);
    insta::assert_snapshot!("user", redact(&t, &out.stdout));
    out.stderr_has("systemctl --user enable dbackup-external.service");
}

#[test]
fn json_holds_the_units_and_the_files() {
    let t = test_with(CONFIG);
    let r = render_json(&t, &["--system", "--run-as", "root", "--exe", EXE]);
    assert_eq!(r.scope, UnitScope::System);
    assert_eq!(r.udev_rules.as_deref(), Some(UDEV_RULES));
    assert_eq!(
        r.files.keys().collect::<Vec<_>>(),
        [UDEV_RULES, COLLECT_SERVICE, COLLECT_TIMER, EXTERNAL_SERVICE]
    );
    let config = t.path("config.json").display().to_string();
    assert_eq!(
        value(&r, EXTERNAL_SERVICE, "Service", "ExecStart"),
        &UnitValue::One(format!("{EXE} --config {config} backup"))
    );
    assert_eq!(
        value(&r, EXTERNAL_SERVICE, "Service", "ExecStartPre"),
        &UnitValue::Many(vec![format!(
            "{EXE} --config {config} systemd wait-for-drive --timeout 60"
        )])
    );
    assert_eq!(
        value(&r, COLLECT_SERVICE, "Service", "Environment"),
        &UnitValue::Many(vec!["DDATA=/data".into()]),
        "the variables the config uses are set in the units"
    );
    assert_eq!(
        value(&r, EXTERNAL_SERVICE, "Install", "WantedBy"),
        &UnitValue::Many(vec![
            "media-payne-T9.mount".into(),
            "run-media-payne-my\\x20spare\\x2ddisk.mount".into(),
            "mnt-nas.mount".into()
        ])
    );
    // The text form prints the same files.
    let text = render(&t, &["--system", "--run-as", "root", "--exe", EXE]).stdout;
    for (name, body) in &r.files {
        assert!(text.contains(&format!("### {name}\n{body}")), "{name}");
    }
}

/// Every variable the config uses reaches the units: in `rsync_args` values, the encryption files (top level and a
/// destination's) and `report.path` too, each of which a run expands (and fails on when it is undefined). Before:
/// the units set only the variables of the backup root, sources, exclusions and drive paths, so a config with
/// `"recipients_file": "$KEYS/r.txt"` failed every run under systemd ("undefined variable $KEYS").
#[test]
fn every_variable_a_run_expands_is_set_in_the_units() {
    let t = Test::new();
    let keys = t.path("keys");
    let (_, recipient) = t.keygen("keys/id.txt");
    t.write("keys/r.txt", format!("{recipient}\n"));
    t.write("keys/hostname", "");
    let t = t
        .config(
            r#"{ "backup_root": "/srv/bk",
                 "backup_sets": [ { "name": "a", "sources": ["/a"], "rsync_args": ["--exclude-from=$EXF/hostname"] } ],
                 "encryption": { "recipients_file": "$KEYS/r.txt", "identity_file": "$ID/id.txt" },
                 "destinations": [ { "name": "T9", "path": "/media/T9", "encryption": { "recipients_file": "$DKEYS/r.txt" } } ],
                 "report": { "path": "$REP/page.html" } }"#,
        )
        .env("EXF", &keys)
        .env("KEYS", &keys)
        .env("ID", &keys)
        .env("DKEYS", &keys)
        .env("REP", "/srv/www");
    let r = render_json(&t, &["--system", "--run-as", "root", "--exe", EXE]);
    let k = keys.display();
    assert_eq!(
        value(&r, COLLECT_SERVICE, "Service", "Environment"),
        &UnitValue::Many(vec![
            format!("DKEYS={k}"),
            format!("EXF={k}"),
            format!("ID={k}"),
            format!("KEYS={k}"),
            "REP=/srv/www".into(),
        ])
    );
}

/// A `report.path` of the config's own is writable in the sandboxed units (`-`: a missing directory is no reason
/// not to start). Before: only the backup root, the state directory and the drives were, so under
/// `ProtectSystem=strict` every run warned that it could not write the page, and the page never changed.
#[test]
fn the_units_may_write_the_status_page_where_the_config_puts_it() {
    let t = test_with(
        r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
             "report": { "path": "/srv/www/backups.html" } }"#,
    );
    let r = render_json(&t, &["--system", "--run-as", "root", "--exe", EXE]);
    for unit in [COLLECT_SERVICE, EXTERNAL_SERVICE] {
        assert_eq!(
            value(&r, unit, "Service", "ReadWritePaths"),
            &UnitValue::Many(vec![
                "/srv/bk".into(),
                "/root/.local/state/dbackup".into(),
                "-/srv/www".into()
            ]),
            "{unit}"
        );
    }
}

#[test]
fn user_scope_expands_home_and_runs_as_whoever_runs_it() {
    let t = test_with(
        r#"{ "backup_sets": [ { "name": "a", "sources": ["~/a"] } ],
             "destinations": [ { "name": "T9", "path": "~/mnt/T9", "fs_label": "T9" } ] }"#,
    );
    let r = render_json(&t, &["--user", "--exe", EXE]);
    let home = t.home().display().to_string();
    let root = format!("{home}/.local/share/dbackup");
    assert_eq!(
        value(&r, COLLECT_SERVICE, "Unit", "RequiresMountsFor"),
        &UnitValue::Many(vec![root])
    );
    assert!(!r.units[COLLECT_SERVICE]["Service"].contains_key("User"));
    let mount = dbackup::path_unit(&t.home().join("mnt/T9"));
    assert_eq!(
        value(&r, EXTERNAL_SERVICE, "Install", "WantedBy"),
        &UnitValue::Many(vec![mount])
    );
    assert_eq!(r.udev_rules, None);
}

#[test]
fn manual_installs_no_trigger() {
    let t = test_with(&CONFIG.replace(r#""external": "weekly""#, r#""external": "manual""#));
    let out = render(&t, &["--system", "--run-as", "root", "--exe", EXE]);
    out.stdout_lacks("[Install]\nWantedBy=media");
    assert!(!out.stdout.contains(UDEV_RULES));
    out.stderr_lacks("enable dbackup-external.service");
}

#[test]
fn out_writes_the_files_and_replaces_only_its_own() {
    let t = test_with(CONFIG);
    let dir = t.path("units");
    let dir_s = dir.display().to_string();
    let args = [
        "--system", "--run-as", "root", "--exe", EXE, "--out", &dir_s,
    ];

    // A dry run writes nothing.
    let out = render(&t, &[&args[..], &["--dry-run"]].concat());
    assert!(!dir.exists());
    out.stderr_has("would write");

    let out = render(&t, &args);
    let listed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(listed.len(), 4, "{}", out.stdout);
    for name in [UDEV_RULES, COLLECT_SERVICE, COLLECT_TIMER, EXTERNAL_SERVICE] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(UNIT_HEADER), "{name}");
        assert_eq!(mode(&path), 0o644, "{name}");
        assert!(listed.contains(&path.to_str().unwrap()));
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no temporary file left"
    );

    // Rendering again replaces them; the rule goes when the schedule no longer needs it.
    std::fs::write(
        t.path("config.json"),
        CONFIG.replace(r#""external": "weekly""#, r#""external": "manual""#),
    )
    .unwrap();
    let out = render(&t, &args);
    assert!(!dir.join(UDEV_RULES).exists());
    out.stderr_has("removed");
    assert!(
        !std::fs::read_to_string(dir.join(EXTERNAL_SERVICE))
            .unwrap()
            .contains("[Install]")
    );

    // A file dbackup did not write is never replaced.
    std::fs::write(dir.join(COLLECT_TIMER), "[Timer]\nOnCalendar=mine\n").unwrap();
    let out = t.cmd().args(["systemd", "render"]).args(args).status(2);
    out.stderr_has("exists and was not written by dbackup");
    assert_eq!(
        std::fs::read_to_string(dir.join(COLLECT_TIMER)).unwrap(),
        "[Timer]\nOnCalendar=mine\n"
    );
}

/// A render that no longer has the status page's server (`report.serve.unit` turned off) removes the one an earlier
/// render wrote, as it removes the other units it no longer renders. Before, `dbackup-serve.service` stayed in the
/// directory (with `--out ~/.config/systemd/user`: installed and enabled, the server kept running).
#[test]
fn out_removes_the_serve_unit_a_config_no_longer_asks_for() {
    let serving = CONFIG.replace(
        r#""schedule""#,
        r#""report": { "serve": { "unit": true } }, "schedule""#,
    );
    let t = test_with(&serving);
    let dir = t.path("units");
    let dir_s = dir.display().to_string();
    let args = ["--user", "--exe", EXE, "--out", &dir_s];
    render(&t, &args);
    assert!(dir.join(SERVE_SERVICE).is_file());

    std::fs::write(t.path("config.json"), CONFIG).unwrap();
    let out = render(&t, &[&args[..], &["--dry-run"]].concat());
    out.stderr_has(&format!(
        "would remove {}",
        dir.join(SERVE_SERVICE).display()
    ));
    assert!(
        dir.join(SERVE_SERVICE).is_file(),
        "a dry run removes nothing"
    );
    let out = render(&t, &args);
    out.stderr_has(&format!("removed {}", dir.join(SERVE_SERVICE).display()));
    assert!(!dir.join(SERVE_SERVICE).exists());
    out.stderr_lacks("enable --now dbackup-serve.service");
}

/// `--out` refuses a directory another user can write (its files are then copied in with sudo: whoever can change
/// or add one there between the render and the copy runs their own program as root, through a unit or the udev
/// rule), and one below such a directory. Before, it wrote into a `/tmp/dbackup-units` that another user had made
/// beforehand. A dry run says so too; `/tmp` itself (sticky, everyone writes it) is refused as `--out`, not as a
/// directory above one.
#[test]
fn out_refuses_a_directory_another_user_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let t = test_with(CONFIG);
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, PermissionsExt::from_mode(m)).unwrap();
    let refused = |dir: &Path, dry_run: bool| {
        let dir_s = dir.display().to_string();
        let mut args = vec![
            "systemd", "render", "--system", "--run-as", "root", "--exe", EXE, "--out", &dir_s,
        ];
        if dry_run {
            args.push("--dry-run");
        }
        let out = t.cmd().args(args).status(2);
        out.stderr_has("another user");
        assert!(!dir.join(COLLECT_SERVICE).exists(), "{}", dir.display());
    };

    let open = t.path("open");
    std::fs::create_dir_all(&open).unwrap();
    chmod(&open, 0o777);
    refused(&open, false);
    refused(&open, true);
    chmod(&open, 0o1777);
    refused(&open, false);
    // Below a directory everyone writes, without the sticky bit: the directory could be swapped.
    chmod(&open, 0o777);
    refused(&open.join("units"), false);

    // Owned by another user (root renders into it here, so the owner is not the one rendering).
    if rustix::process::geteuid().is_root() {
        let theirs = t.path("theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        refused(&theirs, false);
        // Their symlink (in a sticky directory everyone writes) to a directory of ours: they could point it
        // elsewhere before the copy.
        let ours = t.path("ours");
        std::fs::create_dir_all(&ours).unwrap();
        chmod(&open, 0o1777);
        let link = open.join("link");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        refused(&link, false);
        std::fs::remove_file(&link).unwrap();
    } else {
        testkit::skip("not root: cannot give a directory to another user");
    }

    // A directory of the user's own, and one below a sticky directory everyone writes, are fine.
    chmod(&open, 0o1777);
    render(
        &t,
        &[
            "--system",
            "--run-as",
            "root",
            "--exe",
            EXE,
            "--out",
            &open.join("units").display().to_string(),
        ],
    );
    assert!(open.join("units").join(COLLECT_SERVICE).is_file());
}

/// Units that run dbackup from the Nix store (`nix run . -- systemd render`, or a `nix profile` install, whose
/// binary is `/nix/store/...-dbackup/bin/.dbackup-wrapped`) stop working once garbage collection removes that path,
/// and the wrapped binary lacks the `PATH` to rsync and blkid its wrapper sets: render warns and says what to give.
/// Before, it wrote them without a word.
#[test]
fn render_warns_when_the_units_would_run_a_binary_in_the_nix_store() {
    let t = test_with(CONFIG);
    let store = "/nix/store/00000000000000000000000000000000-dbackup-0.1.0/bin/.dbackup-wrapped";
    let out = render(&t, &["--user", "--exe", store]);
    out.stderr_has("in the Nix store");
    out.stderr_has("--exe ~/.nix-profile/bin/dbackup");
    let out = render(&t, &["--user", "--exe", EXE]);
    out.stderr_lacks("Nix store");
}

/// A mistyped `--exe` renders units that can never start: render warns, naming the path. The binary rendering
/// (the default) draws no warning. Before, nothing was said until the first night's run failed.
#[test]
fn render_warns_when_the_units_would_run_a_binary_that_is_not_there() {
    let t = test_with(CONFIG);
    let out = render(&t, &["--user", "--exe", "/opt/dbackup/bin/dbakcup"]);
    out.stderr_has(
        "the units would run /opt/dbackup/bin/dbakcup, which is not an executable file here",
    );
    let out = render(
        &t,
        &[
            "--user",
            "--exe",
            &t.path("config.json").display().to_string(),
        ],
    );
    out.stderr_has("which is not an executable file here");
    let out = render(&t, &["--user"]);
    out.stderr_lacks("the units would run");
}

#[test]
fn errors_say_what_to_do() {
    let t = test_with(&CONFIG.replace(r#""fs_label": "T9""#, r#""fs_label": "T9*""#));
    let out = t
        .cmd()
        .args(["systemd", "render", "--system", "--run-as", "root"])
        .status(2);
    insta::assert_snapshot!("bad_label", redact(&t, &out.stderr));
    // The user scope has no udev rule, so the label is no problem there.
    render(&t, &["--user"]);

    let t = test_with(CONFIG);
    let out = t
        .cmd()
        .args([
            "systemd",
            "render",
            "--system",
            "--run-as",
            "no-such-user-dbackup",
        ])
        .status(2);
    out.stderr_has("user \"no-such-user-dbackup\" does not exist");

    let out = t.cmd().args(["systemd", "render"]).status(2);
    out.stderr_has("--user");

    // No config file: the built-in default, with a warning.
    let t = Test::new();
    let out = t.cmd().args(["systemd", "render", "--user"]).status(0);
    out.stderr_has("no config file");
    assert!(!out.stdout.contains("--config"));
}

#[test]
fn wait_for_drive_returns_when_a_destination_is_mounted_or_after_the_timeout() {
    // /proc is a mount point everywhere: ready at once.
    let t = Test::new().config(
        r#"{ "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
             "destinations": [ { "name": "gone", "path": "{tmp}/gone" }, { "name": "proc", "path": "/proc" } ] }"#,
    );
    let out = t
        .cmd()
        .args(["-v", "systemd", "wait-for-drive", "--timeout", "30"])
        .status(0);
    out.stderr_has("destination proc is ready at /proc");

    // Nothing mounted: it gives up after the timeout, and still exits 0.
    let t = Test::new().config(
        r#"{ "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
             "destinations": [ { "name": "gone", "path": "{tmp}/gone" } ] }"#,
    );
    let out = t
        .cmd()
        .args(["systemd", "wait-for-drive", "--timeout", "1"])
        .status(0);
    out.stderr_has("no destination was mounted within 1s");

    // A destination that needs no mount is ready as it is; no destination, nothing to wait for.
    let t = Test::new().config(
        r#"{ "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
             "destinations": [ { "name": "dir", "path": "{tmp}/dir", "require_mount": false } ] }"#,
    );
    let out = t
        .cmd()
        .args(["-v", "systemd", "wait-for-drive", "--timeout", "30"])
        .status(0);
    out.stderr_has("destination dir is ready");
    let t = Test::new().config(r#"{ "backup_sets": [ { "name": "a", "sources": ["/a"] } ] }"#);
    t.cmd()
        .args(["systemd", "wait-for-drive", "--timeout", "30"])
        .status(0);
}

/// `systemd-analyze verify` of the files in `dir`; `Err` with everything it printed when it printed anything or
/// failed.
fn verify(scope: UnitScope, dir: &Path, man: &Path, runtime: &Path) -> Result<(), String> {
    let units: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "timer")
        })
        .map(|p| p.display().to_string())
        .collect();
    let mut args = Vec::new();
    if scope == UnitScope::User {
        args.push("--user");
    }
    args.push("verify");
    args.extend(units.iter().map(String::as_str));
    let (code, stdout, stderr) = run(
        "systemd-analyze",
        &args,
        &[
            ("MANPATH", &man.display().to_string()),
            ("XDG_RUNTIME_DIR", &runtime.display().to_string()),
            ("SYSTEMD_LOG_COLOR", "0"),
        ],
    );
    if code == 0 && stdout.trim().is_empty() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze {} exited {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            args.join(" ")
        ))
    }
}

/// What [`verify`] needs: the man pages dbackup generates (`Documentation=man:dbackup(1)` must resolve) and a
/// private runtime directory (for `--user`).
fn verify_setup(t: &Test) -> (PathBuf, PathBuf) {
    let man = t.path("man");
    t.cmd()
        .args(["generate", "man"])
        .args([man.join("man1")])
        .status(0);
    assert!(man.join("man1/dbackup.1").is_file());
    let runtime = t.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    (man, runtime)
}

#[test]
fn systemd_analyze_verifies_the_units_without_a_warning() {
    if !require(&["systemd-analyze", "man"], "systemd man-db") {
        return;
    }
    // With the status page's server too (report.serve.unit).
    let t = test_with(&CONFIG.replace(
        r#""schedule""#,
        r#""report": { "serve": { "unit": true } }, "schedule""#,
    ));
    let (man, runtime) = verify_setup(&t);

    for (scope, flag) in [(UnitScope::System, "--system"), (UnitScope::User, "--user")] {
        let dir = t.path(&format!("units-{flag}"));
        let dir_s = dir.display().to_string();
        // The default --exe: this binary, which exists (verify checks ExecStart's program).
        let mut args = vec![flag, "--out", &dir_s];
        if scope == UnitScope::System {
            args.extend(["--run-as", "root"]);
        }
        render(&t, &args);
        assert!(dir.join("dbackup-serve.service").is_file());
        verify(scope, &dir, &man, &runtime).unwrap_or_else(|e| panic!("{e}"));
    }

    // The check can fail: a warning alone (an unknown setting) is enough.
    let bad = t.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("dbackup-bad.service"),
        format!("[Service]\nType=oneshot\nExecStart={BIN} backup\nNiceness=19\n"),
    )
    .unwrap();
    let err = verify(UnitScope::System, &bad, &man, &runtime).unwrap_err();
    assert!(err.contains("Niceness"), "{err}");
}

/// `report.serve.listen` may hold a `%` (an IPv6 scope: `[::1%1]:8422`), which systemd reads as a specifier in
/// `Description=`: before, it was written as is and systemd ignored the description ("Failed to resolve unit
/// specifiers ... Invalid slot"). Now it is `%%`, which systemd shows as `%`.
#[test]
fn a_percent_in_the_status_page_address_is_not_a_specifier() {
    let t = test_with(&CONFIG.replace(
        r#""schedule""#,
        r#""report": { "serve": { "unit": true, "listen": "[::1%1]:8422" } }, "schedule""#,
    ));
    let dir = t.path("units");
    let dir_s = dir.display().to_string();
    render(&t, &["--system", "--run-as", "root", "--out", &dir_s]);
    let text = std::fs::read_to_string(dir.join(SERVE_SERVICE)).unwrap();
    assert!(
        text.contains(
            "Description=dbackup: the status page at http://[::1%%1]:8422/ (read-only)\n"
        ),
        "{text}"
    );
    if !require(&["systemd-analyze", "man"], "systemd man-db") {
        return;
    }
    let (man, runtime) = verify_setup(&t);
    verify(UnitScope::System, &dir, &man, &runtime).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn systemd_analyze_accepts_every_schedule_value() {
    if !require(&["systemd-analyze"], "systemd") {
        return;
    }
    for (incremental, normalized) in [
        ("hourly", "*-*-* *:00:00"),
        ("daily", "*-*-* 00:00:00"),
        ("weekly", "Mon *-*-* 00:00:00"),
        ("monthly", "*-*-01 00:00:00"),
    ] {
        let t = test_with(&CONFIG.replace(
            r#""incremental": "daily""#,
            &format!(r#""incremental": "{incremental}""#),
        ));
        let r = render_json(&t, &["--user", "--exe", EXE]);
        let UnitValue::One(on_calendar) = value(&r, COLLECT_TIMER, "Timer", "OnCalendar") else {
            panic!("one OnCalendar")
        };
        let (code, stdout, stderr) = run("systemd-analyze", &["calendar", on_calendar], &[]);
        assert_eq!(code, 0, "{on_calendar}: {stderr}");
        assert!(
            stdout.contains(&format!("Normalized form: {normalized}")),
            "{on_calendar}: {stdout}"
        );
        let UnitValue::One(delay) = value(&r, COLLECT_TIMER, "Timer", "RandomizedDelaySec") else {
            panic!("one RandomizedDelaySec")
        };
        let (code, _, stderr) = run("systemd-analyze", &["timespan", delay], &[]);
        assert_eq!(code, 0, "{delay}: {stderr}");
    }
    // And the check can fail.
    let (code, ..) = run("systemd-analyze", &["calendar", "nightly"], &[]);
    assert_ne!(code, 0);
}

/// Paths with what systemd escapes: dashes, spaces, a leading dot, non-ASCII (2, 3 and 4 bytes), specifiers.
const PATHS: &[&str] = &[
    "/media/payne/T9",
    "/run/media/payne/T9",
    "/media/payne/my-drive",
    "/run/media/x y/T9",
    "/",
    "/.hidden/x",
    "/a/.b",
    "/é/ü",
    "/日本/𝄞",
    "/a_b:c.d/e+f@g~h",
    "/%x/$y/\\z",
];

#[test]
fn path_escaping_matches_systemd_escape() {
    if !require(&["systemd-escape"], "systemd") {
        return;
    }
    for p in PATHS {
        let (code, stdout, stderr) = run("systemd-escape", &["--path", "--suffix=mount", p], &[]);
        assert_eq!(code, 0, "{p}: {stderr}");
        assert_eq!(dbackup::path_unit(Path::new(p)), stdout.trim_end(), "{p}");
    }
}

/// Evaluates a Nix expression (`--eval --strict --json`) with the repository's `nix/` at hand.
fn nix_eval(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["--eval", "--strict", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run("nix-instantiate", &all, &[]);
    if code != 0 {
        return Err(stderr);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("not JSON ({e}): {stdout}"))
}

#[test]
fn nix_lib_escapes_paths_like_dbackup() {
    if !require(&["nix-instantiate"], "nix-bin") {
        return;
    }
    let lib = format!("{REPO}/nix/lib.nix");
    let list = serde_json::to_string(PATHS).unwrap();
    let got = nix_eval(&[
        "--expr",
        &format!("map (import {lib}).mountUnit (builtins.fromJSON ''{list}'')"),
    ])
    .unwrap();
    let want: Vec<String> = PATHS
        .iter()
        .map(|p| dbackup::path_unit(Path::new(p)))
        .collect();
    assert_eq!(got, serde_json::json!(want));
}

/// One comparison: the config, the scope and the environment the render runs in.
struct Case {
    name: &'static str,
    config: String,
    scope: UnitScope,
    env: &'static [(&'static str, &'static str)],
}

/// The user the system units of a case run as, and that user's home (from the password database).
fn run_as(case: &Case) -> (&'static str, &'static str) {
    if case.name.contains("as nobody") {
        ("nobody", "/nonexistent")
    } else {
        ("root", "/root")
    }
}

fn cases() -> Vec<Case> {
    use UnitScope::{System, User};
    let schedule = |incremental: &str, external: &str| {
        CONFIG.replace(
            r#""incremental": "daily", "external": "weekly""#,
            &format!(r#""incremental": "{incremental}", "external": "{external}""#),
        )
    };
    let serve = |serve: &str| {
        CONFIG.replace(
            r#""schedule""#,
            &format!(r#""report": {{ "serve": {serve} }}, "schedule""#),
        )
    };
    let weekly = CONFIG.to_string();
    // The cases on CONFIG, whose `$DDATA` is /data.
    let on_config = [
        (
            "system, weekly, three kinds of destination",
            weekly.clone(),
            System,
        ),
        ("user, the same", weekly, User),
        (
            "system, hourly, always",
            schedule("hourly", "always"),
            System,
        ),
        (
            "system, monthly, manual",
            schedule("monthly", "manual"),
            System,
        ),
        (
            "system, the status page's server (report.serve.unit)",
            serve(r#"{ "unit": true, "listen": "127.0.0.1:9099" }"#),
            System,
        ),
        (
            "system, the status page's server on an address with a `%` (an IPv6 scope)",
            serve(r#"{ "unit": true, "listen": "[::1%1]:8422" }"#),
            System,
        ),
        (
            "user, the status page's server on the default address",
            serve(r#"{ "unit": true }"#),
            User,
        ),
    ];
    let mut cases: Vec<Case> = on_config
        .into_iter()
        .map(|(name, config, scope)| Case {
            name,
            config,
            scope,
            env: &[("DDATA", "/data")],
        })
        .collect();
    cases.extend([
        Case {
            name: "user, defaults, ~ and $VAR paths, DBACKUP, odd characters",
            config: r#"{ "backup_sets": [ { "name": "a", "sources": ["~/a", "${DDATA}/x"], "exclusions": ["$$literal", "*.tmp"] } ],
                "destinations": [ { "name": "T9", "path": "$MEDIA/50% off/./x-y/../T9", "fs_label": "  Big  Disk ", "fs_uuid": "ABCD-12ef" },
                                  { "name": "home-drive", "path": "~/mnt/é" } ] }"#
                .to_string(),
            scope: UnitScope::User,
            env: &[("DDATA", "/data"), ("MEDIA", "/media/payne"), ("DBACKUP", "~/bk")],
        },
        Case {
            name: "system as nobody, a label with spaces, a uuid in mixed case, $VAR paths",
            config: r#"{ "backup_root": "${DDATA}/../srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
                "destinations": [ { "name": "T9", "path": "$MEDIA/50% off/T9", "fs_label": "  Big  Disk ", "fs_uuid": "ABCD-12ef" } ] }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[("DDATA", "/data"), ("MEDIA", "/media/payne")],
        },
        Case {
            name: "system, every notification sink, a config that uses XDG_STATE_HOME (the run log moves)",
            config: r#"{ "backup_sets": [ { "name": "a", "sources": ["$XDG_STATE_HOME/notes"] } ],
                "notifications": { "desktop": true, "command": ["logger", "-t", "dbackup"], "http": "https://ntfy.sh/x" } }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[("XDG_STATE_HOME", "/var/lib/state of payne")],
        },
        // A variable used only in `exclude_from` (any existing file: /etc/hostname) must reach the units too.
        // Before: nix/lib.nix looked for variables in sources, exclusions and paths only, so the NixOS and
        // home-manager units lacked `EXCL` and every run failed on an undefined variable.
        Case {
            name: "system, a variable used only in exclude_from",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"], "exclude_from": ["$EXCL/hostname"] } ] }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[("EXCL", "/etc")],
        },
        // Variables a run expands in rsync options, the encryption files and the page's path (the identity file is
        // not read when rendering), set in the units by both renderers.
        Case {
            name: "system, variables in rsync_args, encryption and report.path",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"], "rsync_args": ["--exclude-from=$EXF/hostname"] } ],
                "encryption": { "recipients": ["age17smcnuczsahgnd8cq7rxhgl02l6wevyka9g3alwq47ywk7c0aecqmx6tg7"], "identity_file": "$ID/id.txt" },
                "destinations": [ { "name": "T9", "path": "/media/T9", "encryption": { "recipients": ["age17smcnuczsahgnd8cq7rxhgl02l6wevyka9g3alwq47ywk7c0aecqmx6tg7"], "identity_file": "$DKEYS/id.txt" } } ],
                "report": { "path": "$REP/page.html" } }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[("EXF", "/etc"), ("ID", "/root/keys"), ("DKEYS", "/root/dkeys"), ("REP", "/srv/www")],
        },
        Case {
            name: "system, the status page where the config puts it",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
                "report": { "path": "~/public/backups.html" } }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[],
        },
        // A bucket beside a drive: it has no path, no mount and no rule (before: nix/lib.nix read every destination
        // as a drive and failed on the bucket's missing `path`, so the modules could not configure one).
        Case {
            name: "system, a bucket beside a drive",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
                "destinations": [ { "name": "T9", "path": "/media/T9", "fs_label": "T9" },
                                  { "name": "offsite", "kind": "s3", "bucket": "bucket1", "endpoint": "https://s3.example.org",
                                    "region": "garage", "allow_unencrypted": true } ] }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[],
        },
        Case {
            name: "system, only a bucket",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
                "destinations": [ { "name": "offsite", "kind": "s3", "bucket": "bucket1", "endpoint": "https://s3.example.org",
                                    "region": "garage", "allow_unencrypted": true } ] }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[],
        },
        Case {
            name: "user, a bucket beside a drive (a user manager has no network-online.target)",
            config: r#"{ "backup_root": "/srv/bk", "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
                "destinations": [ { "name": "T9", "path": "/media/T9", "fs_label": "T9" },
                                  { "name": "offsite", "kind": "s3", "bucket": "bucket1", "endpoint": "https://s3.example.org",
                                    "region": "garage", "allow_unencrypted": true } ] }"#
                .to_string(),
            scope: UnitScope::User,
            env: &[],
        },
        Case {
            name: "system, no destinations, daily",
            config: r#"{ "backup_root": "$HOME/backups", "backup_sets": [ { "name": "a", "sources": ["~/a"] } ],
                "schedule": { "external": "daily" } }"#
                .to_string(),
            scope: UnitScope::System,
            env: &[],
        },
    ]);
    cases
}

#[test]
fn nix_lib_renders_exactly_what_dbackup_renders() {
    if !require(&["nix-instantiate"], "nix-bin") {
        return;
    }
    let render_nix = format!("{REPO}/nix/tests/render.nix");
    for case in cases() {
        let mut t = Test::new().config(&case.config);
        for (k, v) in case.env {
            t = t.env(*k, *v);
        }
        let (flag, user, home) = match case.scope {
            UnitScope::System => (
                "--system",
                run_as(&case).0.to_string(),
                run_as(&case).1.to_string(),
            ),
            UnitScope::User => (
                "--user",
                "tester".to_string(),
                t.home().display().to_string(),
            ),
        };
        let mut args = vec![flag, "--exe", EXE];
        if case.scope == UnitScope::System {
            args.extend(["--run-as", run_as(&case).0]);
        }
        let mut rust: serde_json::Value =
            render(&t, &[&["--format", "json"], &args[..]].concat()).json();
        // The JSON contract's version is the command's envelope, not part of the units nix/lib.nix renders.
        let format = rust.as_object_mut().and_then(|o| o.remove("format"));
        assert_eq!(format, Some(serde_json::json!(1)), "{}", case.name);

        let environment: BTreeMap<&str, &str> = case.env.iter().copied().collect();
        let settings: serde_json::Value = serde_json::from_str(&case.config).unwrap();
        let case_file = t.path("case.json");
        std::fs::write(
            &case_file,
            serde_json::to_string(&serde_json::json!({
                "scope": flag.trim_start_matches("--"),
                "exe": EXE,
                "configFile": t.path("config.json"),
                "user": user,
                "home": home,
                "environment": environment,
                "settings": settings,
            }))
            .unwrap(),
        )
        .unwrap();
        let nix = nix_eval(&[
            &render_nix,
            "--argstr",
            "caseFile",
            case_file.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("{}: nix-instantiate failed:\n{e}", case.name));
        if nix != rust {
            let (a, b) = (
                serde_json::to_string_pretty(&rust).unwrap(),
                serde_json::to_string_pretty(&nix).unwrap(),
            );
            let diff: Vec<String> = a
                .lines()
                .zip(b.lines())
                .filter(|(x, y)| x != y)
                .take(10)
                .map(|(x, y)| format!("  dbackup: {x}\n  nix:     {y}"))
                .collect();
            panic!(
                "{}: nix/lib.nix renders something else than dbackup:\n{}\n--- dbackup\n{a}\n--- nix\n{b}",
                case.name,
                diff.join("\n")
            );
        }
    }
}

#[test]
fn nix_lib_refuses_what_dbackup_refuses() {
    if !require(&["nix-instantiate"], "nix-bin") {
        return;
    }
    let lib = format!("{REPO}/nix/lib.nix");
    for (label, message) in [
        ("T9*", "cannot be matched by a udev rule"),
        // `|` separates alternatives in a udev match: the rule would start the unit for a drive labelled OTHER.
        ("T9|OTHER", "cannot be matched by a udev rule"),
        // A C1 control character (U+0085): dbackup refuses it as a control character, and so does nix/lib.nix
        // (before, Nix's [[:cntrl:]] saw only the ASCII ones and rendered the rule).
        ("T9\u{85}", "cannot be matched by a udev rule"),
        ("   ", "fs_label is empty"),
    ] {
        let settings = serde_json::json!({
            "backup_sets": [ { "name": "a", "sources": ["/a"] } ],
            "destinations": [ { "name": "T9", "path": "/media/T9", "fs_label": label } ],
        });
        let expr = format!(
            "(import {lib}).render {{ scope = \"system\"; exe = \"/bin/dbackup\"; home = \"/root\"; settings = builtins.fromJSON ''{settings}''; }}"
        );
        let err = nix_eval(&["--expr", &expr]).unwrap_err();
        assert!(err.contains(message), "{label:?}: {err}");

        let t = Test::new().config(&settings.to_string());
        let out = t
            .cmd()
            .args(["systemd", "render", "--system", "--run-as", "root"])
            .status(2);
        assert!(out.stderr.contains(message), "{label:?}: {}", out.stderr);
    }
}

#[test]
fn generate_writes_completions_and_man_pages_for_packagers() {
    let t = Test::new();
    // The scripts ask the binary on each TAB (src/complete.rs; install::bash_tab_... checks the answers).
    for shell in ["bash", "zsh", "fish"] {
        let out = t.cmd().args(["generate", "completions", shell]).status(0);
        assert!(out.stdout.contains("DBACKUP_COMPLETE"), "{shell}");
        assert!(out.stdout.contains("dbackup"), "{shell}");
    }
    let dir = t.path("man");
    let out = t.cmd().args(["generate", "man"]).args([&dir]).status(0);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(out.stdout.lines().count(), pages.len());
    for want in ["dbackup.1", "dbackup-collect.1", "dbackup-systemd-render.1"] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    assert!(
        pages
            .iter()
            .all(|p| !p.contains("help") && !p.contains("generate")),
        "no page for clap's help or the hidden generate: {pages:?}"
    );
}
