//! `dbackup generate completions SHELL | man DIR` (hidden): shell completions and man pages, for packagers
//! (`nix/package.nix` and `cargo xtask install` install both).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, GenerateCommand, GlobalArgs};
use crate::exit::Exit;

pub fn run(global: &GlobalArgs, cmd: GenerateCommand) -> anyhow::Result<Exit> {
    match cmd {
        GenerateCommand::Completions { shell } => {
            // The script calls `dbackup` by name on each TAB (`complete`), so set and destination names
            // come from the config of the moment.
            let script = crate::complete::registration(shell, "dbackup")
                .context("cannot write the completion script")?;
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Ok(()) => {}
                // `dbackup generate completions bash | head` is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("cannot write the completion script"),
            }
        }
        GenerateCommand::Man { dir } => {
            let write = !global.dry_run;
            if write {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            // The page has its own EXIT STATUS section: the closing text without `--help`'s list of codes.
            let mut command =
                without_help_subcommands(Cli::command().after_help(crate::cli::AFTER_HELP));
            command.build();
            let written = man_pages(&command, &dir, true, write)?;
            for page in written {
                if write {
                    crate::outln!("{}", page);
                } else {
                    crate::errln!("dry run: would write {page}");
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// `cmd` and its subcommands without clap's `help` subcommands: they get no page, so no page may name one
/// (`dbackup-help(1)` did not exist).
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}

/// Writes the page of `cmd` (`dbackup.1`, `dbackup-collect.1`, `dbackup-systemd-render.1`, ...: clap names them after
/// `build`) and of each of its visible subcommands; hidden commands get none. `root` is the page of `dbackup`
/// itself, which also gets FILES and ENVIRONMENT. Returns the paths written (with `write` false, a dry run: the
/// paths it would write).
fn man_pages(
    cmd: &clap::Command,
    dir: &Path,
    root: bool,
    write: bool,
) -> anyhow::Result<Vec<String>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let page = man_page(&man, root);
    if write {
        std::fs::write(&path, page)
            .with_context(|| format!("cannot write the man page {}", path.display()))?;
    }
    let mut written = vec![path.display().to_string()];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(man_pages(sub, dir, false, write)?);
    }
    Ok(written)
}

/// One page: clap_mangen's sections, then EXIT STATUS (from `exit::DOCUMENTED`), on `dbackup(1)` FILES and
/// ENVIRONMENT, on the others SEE ALSO `dbackup(1)`; before VERSION, as man-pages(7) orders them.
fn man_page(man: &clap_mangen::Man, root: bool) -> Vec<u8> {
    use roff::{Inline, Roff, bold, italic, roman};
    let mut generated = Vec::new();
    man.render(&mut generated)
        .expect("rendering into a Vec cannot fail");
    let generated = String::from_utf8_lossy(&generated).into_owned();

    // A section of tagged paragraphs: each name (in `style`) and what it means.
    let section =
        |roff: &mut Roff, title: &str, rows: &[(&str, &str)], style: fn(String) -> Inline| {
            roff.control("SH", [title]);
            for (name, what) in rows {
                roff.control("TP", [])
                    .text([style(name.to_string())])
                    .text([roman(*what)]);
            }
        };
    let mut extra = Roff::new();
    section(&mut extra, "EXIT STATUS", crate::exit::DOCUMENTED, bold);
    if root {
        section(&mut extra, "FILES", FILES, italic);
        section(&mut extra, "ENVIRONMENT", ENVIRONMENT, bold);
    } else {
        extra
            .control("SH", ["SEE ALSO"])
            .text([bold("dbackup"), roman("(1)")]);
    }
    let extra = extra.to_roff();

    let at = generated.find(".SH VERSION").unwrap_or(generated.len());
    let mut page = String::with_capacity(generated.len() + extra.len());
    page.push_str(&generated[..at]);
    page.push_str(&extra);
    page.push_str(&generated[at..]);
    page.into_bytes()
}

/// The FILES section of `dbackup(1)`.
const FILES: &[(&str, &str)] = &[
    (
        "$XDG_CONFIG_HOME/dbackup/config.json",
        "The config (~/.config/dbackup/config.json when XDG_CONFIG_HOME is unset), unless --config or \
DBACKUP_CONFIG names another. Without one, a built-in default is used; dbackup config init writes it out.",
    ),
    (
        "$XDG_STATE_HOME/dbackup/log.jsonl",
        "The run log (~/.local/state/dbackup/ when XDG_STATE_HOME is unset): one JSON line per run, bounded in \
size. The status page, report.html, is written beside it.",
    ),
    (
        "BACKUP_ROOT/SET-YYYY-MM-DD-HHMMSS/",
        "A snapshot of a set under the backup root (backup_root in the config), hard-linked to the one before, its metadata \
beside it (SET-YYYY-MM-DD-HHMMSS.json); SET-latest links to the newest.",
    ),
    (
        "BACKUP_ROOT/.lock",
        "The run lock (flock), holding the pid of the run that holds it; a second run exits 4.",
    ),
    (
        "BACKUP_ROOT/displaced/STAMP/",
        "What a restore replaced, kept under its absolute path.",
    ),
    (
        "DRIVE/backups/.dbackup-destination.json",
        "The marker that names the destination a drive belongs to.",
    ),
    (
        "DRIVE/backups/YYYY-MM-DD-HHMMSS/",
        "One drive backup: SET.tar (SET.tar.age when encrypted) and SET.index.jsonl per set, backup.json, and \
verification.sha256 (check it with sha256sum -c in that directory); latest (or LATEST on exFAT) names the newest.",
    ),
];

/// The ENVIRONMENT section of `dbackup(1)`.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "DBACKUP_CONFIG",
        "The config file, when --config is not given.",
    ),
    (
        "DBACKUP_PASSPHRASE_FILE",
        "A file holding the passphrase of passphrase-encrypted backups, instead of asking on the terminal.",
    ),
    (
        "XDG_CONFIG_HOME, XDG_STATE_HOME, HOME",
        "Where the config and the run log are looked for (see FILES); ~ in the config is HOME.",
    ),
    (
        "DDATA",
        "The data directory the built-in default config backs up (/data when unset). Any $VAR or ${VAR} in the \
config is read from the environment the same way; an unset one is an error.",
    ),
    (
        "COLUMNS",
        "The width progress bars fit on a terminal, when the terminal does not say.",
    ),
    (
        "RUST_BACKTRACE",
        "Set to 1 to print a backtrace after an internal error.",
    ),
];
