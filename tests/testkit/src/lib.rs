//! What the integration tests and xtask's benches share, with no dependency on the dbackup crate: skipping a test that
//! cannot run here (and failing it under CI), finding and running system tools, and in [`loopdev`] real loop devices
//! with real filesystems.
//!
//! ```no_run
//! if !testkit::require_tools(&["age"], "apt-get install age") {
//!     return; // skipped, and recorded for the summary of `cargo xtask test` (failed under CI)
//! }
//! let version = testkit::run("age", ["--version"]);
//! ```

pub mod faultproxy;
pub mod loopdev;
pub mod objstore;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name of the running test (libtest names its threads after the tests).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

/// Whether this is CI (`CI` set to a true value: `true`, `1`, `yes`), where a skipped test is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// Where `cargo xtask test` collects the skip records (one line per skip: `<test>\t<why>`).
pub const SKIPS_ENV: &str = "DBACKUP_TEST_SKIPS";

/// The running test cannot run here, and says why: prints `skipping <test>: <why>`, leaves a record for the
/// summary of `cargo xtask test` (in `$DBACKUP_TEST_SKIPS`), and under CI fails the test instead (CI installs
/// everything and runs as root, so a skip there is a hole in the suite). A skipped test is never a silent pass.
/// The test returns right after: `if !ok { return testkit::skip("..."); }`.
#[track_caller]
pub fn skip(why: &str) {
    let dir = std::env::var_os(SKIPS_ENV).map(PathBuf::from);
    skip_with(why, in_ci(), dir.as_deref());
}

/// [`skip`] with CI and the record directory given (for its own test).
#[track_caller]
pub fn skip_with(why: &str, ci: bool, records: Option<&Path>) {
    let test = test_name();
    assert!(
        !ci,
        "{test}: skipped under CI ({why}); CI must be able to run every test"
    );
    eprintln!("skipping {test}: {why}");
    if let Some(dir) = records {
        use std::io::Write;
        let line = format!("{test}\t{}\n", why.replace(['\t', '\n'], " "));
        // One write of the whole line with O_APPEND: parallel tests' lines stay whole.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.skips", std::process::id())))
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", dir.display());
        }
    }
}

/// True when running as root; otherwise skips (see [`skip`]: fails under CI) and returns false.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    skip("needs root for loop devices");
    false
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `Err(why)` when a tool is missing; panics instead when `ci` (the CI command installs them, so missing is a failure).
pub fn check_tools(tools: &[&str], ci: bool) -> Result<(), String> {
    let missing = missing(tools);
    if missing.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "missing {} (apt-get install util-linux exfat-fuse exfatprogs xfsprogs btrfs-progs age)",
        missing.join(", ")
    );
    assert!(!ci, "{msg}; CI must install them");
    Err(msg)
}

/// True when every tool is installed; otherwise skips (see [`skip`]: fails under CI, whose command installs them)
/// naming the missing ones and `install`, how to get them, and returns false.
pub fn require_tools(tools: &[&str], install: &str) -> bool {
    let missing = missing(tools);
    if missing.is_empty() {
        return true;
    }
    skip(&format!("missing {} ({install})", missing.join(", ")));
    false
}

/// The tools of `tools` that are not installed, sorted, each once.
fn missing<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    let mut missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

/// Finds a program on `$PATH` or in the sbin directories (which a non-login `$PATH` may lack).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Runs a tool and returns its stdout; panics with both streams when it fails.
#[track_caller]
pub fn run<I, S>(name: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (ok, stdout, stderr, line) = try_run(name, args);
    assert!(
        ok,
        "{line} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// Runs a tool: (success, stdout, stderr, command line).
pub fn try_run<I, S>(name: &str, args: I) -> (bool, String, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = tool(name).unwrap_or_else(|| PathBuf::from(name));
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let line = std::iter::once(name.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    match Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            line,
        ),
        Err(e) => (false, String::new(), e.to_string(), line),
    }
}
