//! One step of `cargo xtask test` ([`Step`]) and how it ended ([`Outcome`]): the runner (`test.rs`) lists the
//! steps, and a step with a module of its own (`nix.rs`) returns an [`Outcome`] without knowing the runner.

use anyhow::Result;
use xshell::Shell;

/// How a step ended, when it did not fail.
pub enum Outcome {
    /// It ran and passed; the note says anything worth knowing.
    Passed(String),
    /// It could not run here (a tool is missing); the note says why and what to install.
    Skipped(String),
}

/// One step of the test run.
pub struct Step {
    /// Short name, shown in the summary and accepted by `--skip`.
    pub name: &'static str,
    pub run: fn(&Shell) -> Result<Outcome>,
}
