//! dbackup: two-phase backup for one Linux workstation. See ARCHITECTURE.md for the map.
// Outside tests, a fallible value is never unwrapped bare: each `expect` states the invariant that makes it safe.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

// The public modules are the ones the integration tests, the benches and xtask read (output types, on-drive formats,
// the archive engine the benches drive); the rest is `pub(crate)`, so the compiler reports what nothing uses.

pub mod archive;
pub(crate) mod backup;
pub(crate) mod browse;
pub mod cli;
pub mod cloud;
pub mod collect;
pub mod commands;
pub mod config;
pub mod exit;
pub(crate) mod expand;
pub mod external;
pub mod image;
pub(crate) mod interrupt;
pub mod json;
pub mod lock;
pub mod media;
pub mod notify;
pub mod process;
pub(crate) mod progress;
#[cfg(test)]
mod proptests;
pub mod report;
pub mod restore;
pub(crate) mod retention;
pub mod rsync;
pub(crate) mod rsync_args;
pub mod runlog;
pub mod schedule;
pub mod settings;
pub mod snapshot;
pub mod status;
pub mod stdx;
pub mod systemd;
pub(crate) mod ui;

use cli::{Cli, Command};
use exit::Exit;

/// Runs one command to completion. Errors carry their exit code (see [`exit::classify`]).
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Config(cmd) => commands::config::run(&cli.global, cmd),
        Command::Keygen(args) => commands::keygen::run(&cli.global, &args),
        Command::Collect(args) => commands::collect::run(&cli.global, args),
        Command::External(args) => commands::external::run(&cli.global, args),
        Command::Backup(args) => commands::backup::run(&cli.global, args),
        Command::Restore(args) => commands::restore::run(&cli.global, args),
        Command::Ls(args) => commands::ls::run(&cli.global, args),
        Command::Find(args) => commands::find::run(&cli.global, args),
        Command::Snapshots(args) => commands::restore::run(
            &cli.global,
            crate::cli::RestoreArgs {
                list: true,
                source: args
                    .source
                    .map(|kept| crate::cli::RestoreSource { kept, cloud: None }),
                date: args.date,
                set: args.set,
                drive: args.drive,
                ..Default::default()
            },
        ),
        Command::Status(args) => commands::status::run(&cli.global, args),
        Command::Report(args) => commands::report::run(&cli.global, args),
        Command::Serve(args) => commands::serve::run(&cli.global, args),
        Command::Systemd(cmd) => commands::systemd::run(&cli.global, cmd),
        Command::Image(cmd) => commands::image::run(&cli.global, cmd),
        Command::Cloud(cmd) => commands::cloud::run(&cli.global, cmd),
        Command::Generate(cmd) => commands::generate::run(cmd),
    }
}
