//! `dbackup generate completions SHELL | man DIR` (hidden): shell completions and man pages, for packagers
//! (`nix/package.nix` installs both).

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, GenerateCommand};
use crate::exit::Exit;

pub fn run(cmd: GenerateCommand) -> anyhow::Result<Exit> {
    match cmd {
        GenerateCommand::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "dbackup", &mut std::io::stdout());
        }
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            man_pages(&dir)?;
        }
    }
    Ok(Exit::Ok)
}

/// Writes `dbackup.1` and a page for each visible subcommand (`dbackup-collect.1`, `dbackup-systemd-render.1`, ...).
fn man_pages(dir: &Path) -> anyhow::Result<()> {
    let mut command = Cli::command();
    command.build();
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(())
}
