//! `cargo xtask itest`: the root-only integration tests on real loop devices (the emulated T9 drive and the
//! ext4, xfs and btrfs images): the `loopdev_*` modules of `tests/integration/`.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::packages::{Need, ensure_packages};
use crate::util::{heading, is_root, shell};

#[derive(Debug, clap::Args)]
pub struct ItestArgs {
    /// Run only the tests whose names contain this (default: every `loopdev_*` module's tests)
    #[arg(default_value = "loopdev_")]
    pub filter: String,
}

pub fn run(args: ItestArgs) -> Result<()> {
    let sh = shell()?;
    if !is_root() {
        heading("itest: not running as root");
        eprintln!(
            "the loop-device tests need root (losetup, mkfs, mount); run `sudo -E env \"PATH=$PATH\" cargo xtask itest`.\n\
             running them anyway: each will print that it skips."
        );
    }
    ensure_packages(&sh, Need::Test);
    let filter = &args.filter;
    heading(&format!("itest: cargo test --test integration {filter}"));
    cmd!(
        sh,
        "cargo test --test integration {filter} -- --test-threads=2"
    )
    .run()
    .context("integration tests failed")?;
    Ok(())
}
