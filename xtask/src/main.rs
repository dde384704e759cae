//! `cargo xtask`: the project's automation (demo, test, install, bench, itest), written with xshell.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no task yet")
}
