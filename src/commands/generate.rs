//! `dbackup generate completions SHELL | man DIR` (hidden): shell completions and man pages, for packagers
//! (`nix/package.nix` installs both).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, GenerateCommand};
use crate::exit::Exit;

pub fn run(cmd: GenerateCommand) -> anyhow::Result<Exit> {
    match cmd {
        GenerateCommand::Completions { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "dbackup", &mut script);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Ok(()) => {}
                // `dbackup generate completions bash | head` is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("cannot write the completion script"),
            }
        }
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut command = Cli::command();
            command.build();
            let written = man_pages(&command, &dir)?;
            for page in written {
                crate::outln!("{}", page);
            }
        }
    }
    Ok(Exit::Ok)
}

/// Writes the page of `cmd` (`dbackup.1`, `dbackup-collect.1`, `dbackup-systemd-render.1`, ...: clap names them after
/// `build`) and of each of its visible subcommands; clap's `help` subcommands and hidden commands get none. Returns
/// the paths written.
fn man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = clap_mangen::Man::new(cmd.clone())
        .generate_to(dir)
        .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
    let mut written = vec![path.display().to_string()];
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        written.extend(man_pages(sub, dir)?);
    }
    Ok(written)
}
