//! `cargo xtask test`: the whole test suite, as a list of steps ([`STEPS`]) run in order, then a summary.
//!
//! Every step runs even when an earlier one failed (so one run shows everything that is wrong); the task
//! fails when any step failed. Later issues add their checks to [`STEPS`].

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::packages::{Need, ensure_packages};
use crate::step::{Outcome, Step};
use crate::util::{has_cargo_subcommand, heading, human_duration, is_root};

/// The steps of `cargo xtask test`, in order. Add new checks here.
pub const STEPS: &[Step] = &[
    Step {
        name: "packages",
        run: packages,
    },
    Step {
        name: "fmt",
        run: fmt,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    // cargo-deny (cargo install into the tools cache, once): licenses, bans, sources; advisories when reachable.
    Step {
        name: "deny",
        run: deny,
    },
    // Garage (cargo install, ~6 minutes the first time) and moto (a venv) for the cloud tests, in the tools cache.
    Step {
        name: "cloud-tools",
        run: cloud_tools,
    },
    Step {
        name: "test",
        run: cargo_test,
    },
    // nix-instantiate --parse of every .nix file, the lib.nix tests, and (with NIXPKGS_LIB) the module evaluation.
    // The systemd-analyze, systemd-escape, udevadm and Nix-equals-Rust checks are integration tests in `test`.
    Step {
        name: "nix",
        run: crate::nix::step,
    },
];

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip a step (repeatable): packages, fmt, clippy, deny, cloud-tools, test, nix
    #[arg(long, value_name = "STEP")]
    pub skip: Vec<String>,
}

pub fn run(args: TestArgs) -> Result<()> {
    for s in &args.skip {
        if !STEPS.iter().any(|step| step.name == s) {
            let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
            bail!("unknown step {s:?}; the steps are: {}", names.join(", "));
        }
    }
    let sh = crate::util::shell()?;
    let started = Instant::now();
    let mut results: Vec<(&str, Duration, Result<Outcome>)> = Vec::new();
    for step in STEPS {
        if args.skip.iter().any(|s| s == step.name) {
            results.push((
                step.name,
                Duration::ZERO,
                Ok(Outcome::Skipped("--skip".into())),
            ));
            continue;
        }
        heading(&format!("test: {}", step.name));
        let t = Instant::now();
        let outcome = (step.run)(&sh);
        if let Err(e) = &outcome {
            eprintln!("step {} failed: {e:#}", step.name);
        }
        results.push((step.name, t.elapsed(), outcome));
    }

    heading(&format!(
        "summary (total {})",
        human_duration(started.elapsed())
    ));
    let mut failed = Vec::new();
    for (name, took, outcome) in &results {
        let (status, note) = match outcome {
            Ok(Outcome::Passed(note)) => ("ok", note.clone()),
            Ok(Outcome::Skipped(note)) => ("skipped", note.clone()),
            Err(e) => {
                failed.push(*name);
                ("FAILED", format!("{e:#}"))
            }
        };
        eprintln!(
            "  {name:<10} {status:<8} {:>8}  {note}",
            human_duration(*took)
        );
    }
    if !failed.is_empty() {
        bail!("{} failed", failed.join(", "));
    }
    Ok(())
}

fn packages(sh: &Shell) -> Result<Outcome> {
    let missing = ensure_packages(sh, Need::Test);
    if missing.is_empty() {
        Ok(Outcome::Passed("all present".into()))
    } else {
        let debs: Vec<_> = missing.iter().map(|p| p.deb).collect();
        Ok(Outcome::Skipped(format!(
            "missing {}: tests that need them fail or skip",
            debs.join(" ")
        )))
    }
}

/// Where cargo-deny fetches the RustSec advisory database from (a git clone over https).
const ADVISORY_DB_HOST: &str = "github.com:443";

/// Whether `host:port` takes a TCP connection within 5 s (its name resolved first).
fn reachable(host_port: &str) -> bool {
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
    })
}

/// `cargo deny check` against `deny.toml`: licenses, bans and sources always (offline); advisories only when the
/// advisory database's host can be reached (it is cloned, then fetched, from GitHub), else said in the summary.
fn deny(sh: &Shell) -> Result<Outcome> {
    let bin = crate::tools::ensure(sh, &crate::tools::CARGO_DENY)?;
    // cargo-deny reads `cargo metadata` offline, which needs every package of the lock file, those of other
    // targets too (a build fetches only this one's): fetched first where the registry can be reached (a fresh
    // machine), else deny says which one is missing.
    if cmd!(sh, "cargo fetch --locked").run().is_err() {
        eprintln!(
            "xtask: cargo fetch failed (no registry?); cargo deny reads what is already fetched"
        );
    }
    // cargo-deny runs as a cargo subcommand: `cargo-deny deny check ...`.
    cmd!(
        sh,
        "{bin} deny --log-level warn --offline check licenses bans sources"
    )
    .run()
    .map_err(|_| anyhow::anyhow!("cargo deny check licenses bans sources found problems"))?;
    if !reachable(ADVISORY_DB_HOST) {
        return Ok(Outcome::Passed(format!(
            "licenses, bans, sources; advisories NOT checked: {ADVISORY_DB_HOST} (the RustSec database) \
             cannot be reached from here"
        )));
    }
    cmd!(sh, "{bin} deny --log-level warn check advisories")
        .run()
        .map_err(|_| anyhow::anyhow!("cargo deny check advisories found problems"))?;
    Ok(Outcome::Passed(
        "licenses, bans, sources, advisories".into(),
    ))
}

fn cloud_tools(sh: &Shell) -> Result<Outcome> {
    let garage =
        crate::tools::ensure_with(sh, &crate::tools::GARAGE, crate::tools::GARAGE_FEATURES)?;
    let moto = crate::tools::ensure_moto(sh)?;
    Ok(Outcome::Passed(format!(
        "{} and {}",
        garage.display(),
        moto.display()
    )))
}

fn fmt(sh: &Shell) -> Result<Outcome> {
    if !has_cargo_subcommand(sh, "fmt") {
        return Ok(Outcome::Skipped(
            "rustfmt not installed: rustup component add rustfmt".into(),
        ));
    }
    cmd!(sh, "cargo fmt --all -- --check")
        .run()
        .map_err(|_| anyhow::anyhow!("not formatted: run `cargo fmt --all`"))?;
    Ok(Outcome::Passed(String::new()))
}

fn clippy(sh: &Shell) -> Result<Outcome> {
    if !has_cargo_subcommand(sh, "clippy") {
        return Ok(Outcome::Skipped(
            "clippy not installed: rustup component add clippy".into(),
        ));
    }
    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings")
        .run()
        .map_err(|_| anyhow::anyhow!("clippy found problems"))?;
    Ok(Outcome::Passed(String::new()))
}

/// The variable through which tests record that they skipped (`testkit::skip`, and `stdx::skip` in unit tests): a
/// directory where each test process appends `<test>\t<why>` lines to `<pid>.skips`.
const SKIPS_ENV: &str = testkit::SKIPS_ENV;

fn cargo_test(sh: &Shell) -> Result<Outcome> {
    let skips_dir = tempfile::Builder::new()
        .prefix("dbackup-test-skips-")
        .tempdir()
        .context("cannot create a directory for the skip records")?;
    // Run through a pipe (not xshell's `run`) to count the results while the output streams as usual.
    eprintln!("$ cargo test --workspace");
    let mut child = std::process::Command::new("cargo")
        .args(["test", "--workspace"])
        .env(SKIPS_ENV, skips_dir.path())
        .current_dir(sh.current_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut counts = TestCounts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.context("cannot read cargo test's output")?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait().context("cargo test did not finish")?;
    let skips = Skips::read(skips_dir.path())?;
    skips.print();
    if !status.success() {
        bail!("some tests failed ({counts}{})", skips.note());
    }
    if crate::util::in_ci() && skips.count() > 0 {
        // The tests fail themselves under CI; this is the belt to their braces.
        bail!(
            "{} under CI, where every test must run",
            skips.note().trim_start_matches("; ")
        );
    }
    let root = if is_root() {
        "root: the loop-device tests ran"
    } else {
        "not root: the loop-device tests skipped (see above)"
    };
    Ok(Outcome::Passed(format!("{counts}{}; {root}", skips.note())))
}

/// The tests that skipped, grouped by reason: libtest reports them as passed, so the summary says which they are.
#[derive(Debug, Default, PartialEq, Eq)]
struct Skips {
    /// Reason -> the tests that skipped for it.
    by_reason: std::collections::BTreeMap<String, Vec<String>>,
}

impl Skips {
    /// Reads every `*.skips` file in `dir`.
    fn read(dir: &std::path::Path) -> Result<Skips> {
        let mut skips = Skips::default();
        for entry in std::fs::read_dir(dir).context("cannot read the skip records")? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "skips") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                skips.add_lines(&text);
            }
        }
        Ok(skips)
    }

    /// Adds `<test>\t<why>` lines.
    fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            let (test, why) = line.split_once('\t').unwrap_or((line, "no reason given"));
            let tests = self.by_reason.entry(why.to_string()).or_default();
            tests.push(test.to_string());
            tests.sort();
            tests.dedup();
        }
    }

    fn count(&self) -> usize {
        self.by_reason.values().map(Vec::len).sum()
    }

    /// `; 37 of them skipped` (libtest counts a skipped test as passed), or nothing.
    fn note(&self) -> String {
        match self.count() {
            0 => String::new(),
            n => format!("; {n} of them skipped"),
        }
    }

    /// The skipped tests by reason, on stderr.
    fn print(&self) {
        if self.count() == 0 {
            return;
        }
        heading(&format!(
            "{} tests skipped (reported as passed by libtest)",
            self.count()
        ));
        for (why, tests) in &self.by_reason {
            eprintln!("  {why} ({}):", tests.len());
            for t in tests {
                eprintln!("    {t}");
            }
        }
    }
}

/// The totals of libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.1s`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

impl std::fmt::Display for TestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_results_are_summed() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.10s");
        c.add_line("test loopdev_media::x ... ok");
        c.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        assert_eq!(
            c,
            TestCounts {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn skips_are_grouped_by_reason() {
        let mut s = Skips::default();
        s.add_lines("loopdev_media::a\tneeds root for loop devices\nloopdev_media::b\tneeds root for loop devices\n");
        s.add_lines(
            "notify::curl\tcurl is not installed\nloopdev_media::a\tneeds root for loop devices\n",
        );
        assert_eq!(s.count(), 3);
        assert_eq!(
            s.by_reason["needs root for loop devices"],
            ["loopdev_media::a", "loopdev_media::b"]
        );
        assert_eq!(s.note(), "; 3 of them skipped");
        assert_eq!(Skips::default().note(), "");
    }

    #[test]
    fn step_names_are_unique() {
        let mut names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), STEPS.len());
    }
}
