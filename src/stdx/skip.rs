//! Skipped unit tests (compiled for tests only): the test says why it cannot run here, leaves a record for the
//! summary of `cargo xtask test`, and fails under CI. The same rules and record format as the integration tests'
//! `t9::skip` (a line `<test>\t<why>` appended to `$DBACKUP_TEST_SKIPS/<pid>.skips`).

use std::io::Write;
use std::path::Path;

/// Whether this is CI (`CI` set to a true value: `true`, `1`, `yes`), where a skipped test is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// The running test (or a part of it) cannot run here: prints why, records it, and under CI fails the test.
#[track_caller]
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    assert!(
        !in_ci(),
        "{test}: skipped under CI ({why}); CI must be able to run every test"
    );
    eprintln!("skipping {test}: {why}");
    if let Some(dir) = std::env::var_os("DBACKUP_TEST_SKIPS") {
        let line = format!("{test}\t{}\n", why.replace(['\t', '\n'], " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join(format!("{}.skips", std::process::id())))
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot record the skip in {}: {e}",
                Path::new(&dir).display()
            );
        }
    }
}
