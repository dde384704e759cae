//! `cargo xtask`: the project's automation (test, demo, install, bench, itest, fuzz), written with xshell.
//! This file only parses the command line and dispatches; each task lives in its own module.

mod bench;
mod demo;
mod fuzz;
mod install;
mod itest;
mod mutants;
mod nix;
mod packages;
mod step;
mod test;
#[cfg(test)]
mod tidy;
mod tools;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dbackup's automation: `cargo xtask <task>`. Tasks that need system packages install them with apt-get
/// when run as root, and otherwise print what to install.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run every check and test: system packages, cargo fmt, clippy, cargo test, nix (what CI runs)
    Test(test::TestArgs),
    /// Build a sample home under target/demo, back it up twice and show the result
    Demo(demo::DemoArgs),
    /// Install dbackup, its links backup, backup-collect, ..., its man pages and completions into ~/.local (or --prefix)
    Install(install::InstallArgs),
    /// Benchmarks, never run by the tests: `bench collect` (dbackup vs plain rsync), `bench external`, `bench restore`
    /// (vs tar, sha256sum), `bench status`, `bench image` (vs partclone | zstd), `bench sparse` (vs GNU tar
    /// --sparse), `bench cloud` (vs rclone and restic, on Garage)
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run the root-only integration tests on real loop devices (the loopdev_* tests)
    Itest(itest::ItestArgs),
    /// Run the property-based tests of every drive-side parser with many cases (`--cases N`, default 10,000)
    Fuzz(fuzz::FuzzArgs),
    /// Mutation testing of the pure core (retention, schedule, drive retention, index, expansion) with cargo-mutants,
    /// unit tests only; the score per file. Slow (one to two hours); not part of `test`
    Mutants(mutants::MutantsArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test(args) => test::run(args),
        Task::Demo(args) => demo::run(args),
        Task::Install(args) => install::run(args),
        Task::Bench(cmd) => bench::run(cmd),
        Task::Itest(args) => itest::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Mutants(args) => mutants::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error chain on one line, without anyhow's backtrace (RUST_BACKTRACE is often set here).
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
