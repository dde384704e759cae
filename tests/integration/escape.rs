//! Untrusted names as output shows them, through the real binary: file names of the user's data (in archive
//! warnings and `--verify` listings) and set names from a drive's `backup.json` (in `restore --list`, `--verify`,
//! restore output and errors) all pass through the one escaper (`dbackup::stdx::show`): no ESC reaches the
//! terminal, and no name can forge a line.

use std::fs;
use std::path::Path;

use dbackup::{Digest, parse_sums, write_sums};

use crate::fixtures::hostile::assert_escaped;
use crate::harness::Test;

const ESC_NAME: &str = "esc\x1b[31mred";
const NL_NAME: &str = "nl\nFORGED line";
/// Shown raw, a right-to-left override makes `invoice<RLO>fdp.exe` read as "invoiceexe.pdf".
const RLO_NAME: &str = "invoice\u{202e}fdp.exe";

fn config() -> String {
    r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ],
         "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#
        .to_string()
}

/// The newest backup directory on the test's drive.
fn backup_dir(t: &Test) -> std::path::PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(t.path("T9/backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("20"))
        .collect();
    dirs.sort();
    dirs.pop().expect("a backup on the drive")
}

/// A set of one file, collected and written to the T9 (a plain directory).
fn one_drive_backup() -> Test {
    let t = Test::new().config(&config());
    t.write("home/data/file", "x");
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    t
}

/// Rewrites `backup.json` with `edit`, and its line in `verification.sha256` to match (as a hostile drive would).
fn rewrite_metadata(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("backup.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut meta);
    let bytes = serde_json::to_vec_pretty(&meta).unwrap();
    fs::write(&path, &bytes).unwrap();
    let sums_path = dir.join("verification.sha256");
    let mut sums = parse_sums(&fs::read(&sums_path).unwrap()).unwrap();
    for l in &mut sums {
        if l.name == b"backup.json" {
            l.sha256 = Digest::of_bytes(&bytes);
        }
    }
    let mut out = Vec::new();
    write_sums(&mut out, &sums).unwrap();
    fs::write(&sums_path, out).unwrap();
}

/// File names holding ESC, a newline or a right-to-left override (legal on Linux): the archive's warning about a socket so named, and the
/// entries `-v restore --verify` lists, show them escaped (`esc\x1b[31mred`). Before: `external` printed the socket's
/// name raw in its warning, and `--verify -v` listed every name raw (the ESC reached the terminal, the newline
/// started a forged line).
#[test]
fn file_names_with_control_characters_are_escaped() {
    let t = Test::new().config(&config());
    t.write(&format!("home/data/{ESC_NAME}"), "a");
    t.write(&format!("home/data/{NL_NAME}"), "b");
    t.write(&format!("home/data/{RLO_NAME}"), "c");
    fs::create_dir_all(t.path("T9")).unwrap();
    let _socket =
        std::os::unix::net::UnixListener::bind(t.home().join("data/sock\x1b[2J")).unwrap();
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["external"]).status(3);
    assert_escaped("external", &out);
    out.stderr_has("sock\\x1b[2J: is a socket");

    let out = t
        .cmd()
        .args(["-v", "restore", "--verify", "--source", "external"])
        .status(0);
    assert_escaped("-v restore --verify", &out);
    out.stdout_has("esc\\x1b[31mred");
    out.stdout_has("nl\\nFORGED line");
    out.stdout_has("invoice\\xe2\\x80\\xaefdp.exe");
}

/// A drive whose `backup.json` (sums adjusted) names its set `da<ESC>[31mta<LF>FORGED...`: `restore --list` (which
/// now refuses the name, quoting it escaped), `restore --verify`, a restore's output and a "not in the backup" error
/// never print it raw. Before: each printed it raw, so the drive could colour the terminal and print a line of its
/// choosing.
#[test]
fn set_names_from_a_drive_are_escaped() {
    let t = one_drive_backup();
    let hostile = "da\x1b[31mta\nFORGED line from the drive";
    rewrite_metadata(&backup_dir(&t), |m| {
        m["sets"][0]["set"] = hostile.into();
    });
    let shown = "da\\x1b[31mta\\nFORGED line from the drive";

    let out = t
        .cmd()
        .args(["restore", "--list", "--source", "external"])
        .status(0);
    assert_escaped("restore --list", &out);
    out.stdout_has(shown);

    let out = t
        .cmd()
        .args(["restore", "--verify", "--source", "external"])
        .output();
    assert_escaped("restore --verify", &out);

    let target = t.path("target");
    let out = t
        .restore_from_drive()
        .args(["--target"])
        .args([&target])
        .output();
    assert_escaped("restore", &out);

    let out = t
        .restore_from_drive()
        .args(["--path", "/nowhere/at/all"])
        .output();
    assert_ne!(out.code, 0);
    assert_escaped("restore --path not in the backup", &out);
}

/// A drive whose `verification.sha256` lists names holding ESC, BEL and a newline (sha256sum's `\` form, legal for
/// any name): `restore --verify` reports each as a problem with the name escaped, in its problem list and its error
/// line, and `status` after it too. Before: the problem list printed the file's path raw, so the drive could clear
/// the terminal, retitle it and print a line of its choosing.
#[test]
fn names_in_a_drives_sums_file_are_escaped() {
    let t = one_drive_backup();
    let sums_path = backup_dir(&t).join("verification.sha256");
    let mut sums = parse_sums(&fs::read(&sums_path).unwrap()).unwrap();
    sums.push(dbackup::SumLine {
        sha256: Digest::of_bytes(b"x"),
        name: b"evil\n\x1b[2J\x1b]0;title\x07FORGED line".to_vec(),
    });
    let mut out = Vec::new();
    write_sums(&mut out, &sums).unwrap();
    fs::write(&sums_path, out).unwrap();

    let out = t
        .cmd()
        .args(["restore", "--verify", "--source", "external"])
        .status(1);
    assert_escaped("restore --verify", &out);
    assert!(!out.stdout.contains('\x07'), "{:?}", out.stdout);
    out.stdout_has("evil\\n\\x1b[2J\\x1b]0;title\\x07FORGED line");
    let out = t.cmd().args(["status"]).output();
    assert_escaped("status", &out);
}

/// A local snapshot whose metadata lists an unreadable file named with ESC, BEL and a newline (what collect records
/// when rsync could not read such a file of the user's data): `restore --verify` says the snapshot is incomplete and
/// names that file escaped. Before: the name was printed raw in the problem and in the error line.
#[test]
fn an_unreadable_files_name_in_a_snapshots_metadata_is_escaped() {
    let t = Test::new().config(&config());
    t.write("home/data/file", "x");
    t.cmd().args(["collect"]).status(0);
    let snap = dbackup::list_snapshots(&t.root(), "data")
        .unwrap()
        .pop()
        .unwrap();
    let path = t.root().join(format!("{}.json", snap.name));
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    meta["complete"] = false.into();
    meta["unreadable"] = serde_json::json!([{
        "path": t.home().join("data/x\x1b[2J\x07\nFORGED line").display().to_string(),
        "message": "Permission denied (13)",
    }]);
    fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();

    let out = t.cmd().args(["restore", "--verify"]).status(1);
    assert_escaped("restore --verify", &out);
    assert!(!out.stdout.contains('\x07'), "{:?}", out.stdout);
    out.stdout_has("x\\x1b[2J\\x07\\nFORGED line");
}

/// A run log whose last backup run failed with an error holding ESC, BEL and a newline (the run log is read back,
/// never trusted): `status` and `status --check` show it escaped, as they show a destination's error. Before: the
/// last run's error was printed raw.
#[test]
fn a_run_logs_error_is_escaped() {
    let t = Test::new().config(&config());
    t.write("home/data/file", "x");
    t.cmd().args(["collect"]).status(0);
    let log = t.path("state/dbackup/log.jsonl");
    let mut text = fs::read_to_string(&log).unwrap();
    let mut r: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    r["exit"] = 1.into();
    r["error"] = "disk \x1b]0;pwned\x07gone\nFORGED line".into();
    text.push_str(&format!("{r}\n"));
    fs::write(&log, text).unwrap();

    let out = t.cmd().args(["status"]).output();
    assert_escaped("status", &out);
    out.stdout_has("disk \\x1b]0;pwned\\x07gone");
    let out = t.cmd().args(["status", "--check"]).output();
    assert_escaped("status --check", &out);
}
