//! The progress display on a real terminal (tmux at 60 columns) and the summary of a run that copied nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{BIN, Test};

/// A source that takes rsync a few seconds at `--bwlimit=2m`: 1,500 small files and 6 MiB in 30 files.
fn slow_source(t: &Test) {
    for i in 0..1500 {
        t.write(&format!("home/docs/small/{i}.txt"), format!("note {i}\n"));
    }
    let block: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for i in 0..30 {
        t.write(&format!("home/docs/big/{i}.bin"), &block);
    }
}

/// collect's progress line, drawn in a 60-column tmux pane, never needs more than 60 columns (the screen is captured
/// with wrapped lines joined, so a line that wrapped would show as one longer line) and says what was checked and
/// copied. Before: the bar was `{prefix} [30 columns] NNN% {bytes}, {files} copied ({elapsed})`, whose percent is
/// rsync's bytes copied of bytes listed (0% on a run that copies little), and nothing fitted it to the width.
#[test]
fn collect_progress_fits_a_60_column_terminal() {
    if !testkit::require_tools(&["tmux"], "apt-get install tmux") {
        return;
    }
    let t = Test::new().config(
        r#"{ "backup_root": "{root}",
             "backup_sets": [ { "name": "documents", "sources": ["{home}/docs"], "rsync_args": ["--bwlimit=2m"] } ] }"#,
    );
    slow_source(&t);
    let socket = t.path("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run tmux")
    };
    let run = format!(
        "env -i PATH='{}' HOME='{}' XDG_STATE_HOME='{}' TERM=xterm '{}' --config '{}' collect; sleep 60",
        std::env::var("PATH").unwrap_or_default(),
        t.home().display(),
        t.path("state").display(),
        BIN,
        t.path("config.json").display(),
    );
    let started = tmux(&["new-session", "-d", "-s", "p", "-x", "60", "-y", "20", &run]);
    assert!(started.status.success(), "tmux: {started:?}");

    let mut progress_screens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = String::new();
    while Instant::now() < deadline {
        let screen =
            String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-J", "-t", "p"]).stdout)
                .into_owned();
        if screen.contains(" complete: ") || screen.contains("error") {
            finished = screen;
            break;
        }
        if screen.contains("checked ") {
            progress_screens.push(screen);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    // The server on this test's own socket, nothing else.
    tmux(&["kill-server"]);
    assert!(
        finished.contains(" complete: "),
        "collect did not finish:\n{finished}"
    );
    assert!(!progress_screens.is_empty(), "no progress line was seen");
    for screen in &progress_screens {
        for line in screen.lines() {
            assert!(
                line.trim_end().chars().count() <= 60,
                "a line longer than 60 columns:\n{line:?}\nin\n{screen}"
            );
        }
    }
    let last = progress_screens.last().unwrap();
    assert!(last.contains("documents ") && last.contains("/"), "{last}");
    assert!(
        progress_screens.iter().any(|s| s.contains("copied ")),
        "never said what was copied:\n{}",
        progress_screens.join("\n--\n")
    );
}

/// A collect that finds nothing changed says how much it checked and that there was nothing to copy. Before:
/// `data: data-... complete: 3 files, 0 copied (0 B), ...`.
#[test]
fn a_run_with_nothing_to_copy_says_what_it_checked() {
    let t = Test::new().config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["{home}/data"] } ] }"#,
    );
    for f in ["a", "b", "c"] {
        t.write(&format!("home/data/{f}"), f);
    }
    t.cmd().args(["collect"]).status(0);
    // Snapshot names have seconds: the second run gets a name of its own.
    std::thread::sleep(Duration::from_millis(1100));
    let out = t.cmd().args(["collect"]).status(0);
    out.stderr_has("complete: checked 3 files, nothing to copy, ");
}
