//! `cargo xtask fuzz`: the property-based tests of every parser of drive-side input (`src/proptests.rs`) with many
//! more cases than `cargo test` runs (`--cases`, per property). A debug build, so that arithmetic overflows panic
//! and are found.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::util::{heading, shell};

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Cases per property (`cargo test` runs 256)
    #[arg(long, default_value_t = 10_000)]
    pub cases: u32,
    /// Run only the properties whose names contain this (`backup_json`, `index`, `sums`, `tar`, `sparse`, `latest`, `marker`)
    pub filter: Option<String>,
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let sh = shell()?;
    let filter = format!("proptests::{}", args.filter.unwrap_or_default());
    let cases = args.cases.to_string();
    heading(&format!("fuzz: {cases} cases per property ({filter})"));
    let started = std::time::Instant::now();
    cmd!(sh, "cargo test --lib {filter} -- --test-threads=2")
        .env("PROPTEST_CASES", &cases)
        .run()
        .context("a property failed: proptest printed the smallest failing input above")?;
    eprintln!(
        "fuzz: every property held for {cases} cases each, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
