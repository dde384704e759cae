//! `cargo xtask install [--prefix DIR] [--dry-run]`: `cargo install` the binary into DIR/bin (default ~/.local), link
//! the seed's command names (`backup`, `backup-collect`, `backup-external`, `backup-restore`) to it, and install the
//! man pages (DIR/share/man/man1) and the bash, zsh and fish completions beside it, so the units'
//! `Documentation=man:dbackup(1)` resolves and TAB offers the config's set and destination names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::util::{heading, shell};

/// The names the binary also answers to (argv[0] dispatch in src/cli.rs).
pub const LINKS: &[&str] = &[
    "backup-collect",
    "backup-external",
    "backup",
    "backup-restore",
];

/// Each shell's completion file, relative to the prefix: where bash-completion, zsh (site-functions) and fish
/// (vendor_completions.d) look under a prefix's `share/`.
pub const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "share/bash-completion/completions/dbackup"),
    ("zsh", "share/zsh/site-functions/_dbackup"),
    ("fish", "share/fish/vendor_completions.d/dbackup.fish"),
];

/// Where the man pages go, relative to the prefix.
pub const MAN_DIR: &str = "share/man/man1";

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  cargo xtask install                         # ~/.local/bin/dbackup, its man pages and completions
  cargo xtask install --prefix /usr/local     # system-wide (as root)
  cargo xtask install --dry-run               # print what would be written, write nothing
  cargo xtask install --binary target/debug/dbackup --prefix /tmp/p   # an already built binary

Then `man dbackup` works when PREFIX/bin is on PATH (man finds PREFIX/share/man from it), or with
MANPATH=PREFIX/share/man.")]
pub struct InstallArgs {
    /// Install into DIR/bin, DIR/share/man and DIR/share/<shell> (default: ~/.local)
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,

    /// Print what would be installed where, and write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Install this already built binary instead of building one with `cargo install`
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

/// Every file the install writes under `prefix`, for `--dry-run` and the summary (the man pages as one line: their
/// names come from the binary).
pub fn planned(prefix: &Path) -> Vec<(PathBuf, String)> {
    let bin = prefix.join("bin");
    let mut files = vec![(bin.join("dbackup"), "the binary".to_string())];
    for name in LINKS {
        files.push((bin.join(name), "link to dbackup".to_string()));
    }
    files.push((
        prefix.join(MAN_DIR),
        "man pages: dbackup.1 and one per command (dbackup-collect.1, ...)".to_string(),
    ));
    for (shell, rel) in COMPLETIONS {
        files.push((prefix.join(rel), format!("{shell} completion")));
    }
    files
}

pub fn run(args: InstallArgs) -> Result<()> {
    let sh = shell()?;
    let prefix = match args.prefix {
        Some(p) => {
            std::path::absolute(&p).with_context(|| format!("bad prefix {}", p.display()))?
        }
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --prefix DIR")?;
            PathBuf::from(home).join(".local")
        }
    };
    let bin = prefix.join("bin");
    for name in LINKS {
        check_link_free(&bin, name)?;
    }
    if args.dry_run {
        heading(&format!(
            "install (dry run): nothing written; would install into {}",
            prefix.display()
        ));
        for (path, what) in planned(&prefix) {
            println!("{}  ({what})", path.display());
        }
        return Ok(());
    }
    heading(&format!("install: dbackup into {}", bin.display()));
    match &args.binary {
        None => cmd!(sh, "cargo install --locked --path . --root {prefix}")
            .run()
            .context("cargo install failed")?,
        Some(built) => {
            std::fs::create_dir_all(&bin)
                .with_context(|| format!("cannot create {}", bin.display()))?;
            let target = bin.join("dbackup");
            let tmp = bin.join(".dbackup.install-tmp");
            std::fs::copy(built, &tmp)
                .with_context(|| format!("cannot copy {} to {}", built.display(), tmp.display()))?;
            std::fs::rename(&tmp, &target)
                .with_context(|| format!("cannot install {}", target.display()))?;
        }
    }

    for name in LINKS {
        link(&bin, name)?;
    }
    let exe = bin.join("dbackup");
    let pages = install_man_pages(&sh, &exe, &prefix.join(MAN_DIR))?;
    for (shell_name, rel) in COMPLETIONS {
        let script = cmd!(sh, "{exe} generate completions {shell_name}")
            .output()
            .with_context(|| format!("{} generate completions {shell_name} failed", exe.display()))?
            .stdout;
        write_file(&prefix.join(rel), &script)?;
        eprintln!("  {}", prefix.join(rel).display());
    }
    eprintln!(
        "installed {}, the links {}, {pages} man pages in {} and completions for bash, zsh and fish",
        exe.display(),
        LINKS.join(", "),
        prefix.join(MAN_DIR).display()
    );
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin));
    if !on_path {
        eprintln!(
            "note: {} is not on your PATH; add it, e.g. in ~/.profile:\n  export PATH=\"{}:$PATH\"",
            bin.display(),
            bin.display()
        );
    }
    eprintln!(
        "note: zsh reads completions from the directories in $fpath; if {} is not one, add to ~/.zshrc:\n  \
fpath=({} $fpath)",
        prefix.join("share/zsh/site-functions").display(),
        prefix.join("share/zsh/site-functions").display()
    );
    Ok(())
}

/// Writes the binary's man pages into `man1` (each under a temporary name, renamed into place); returns how many.
fn install_man_pages(sh: &xshell::Shell, exe: &Path, man1: &Path) -> Result<usize> {
    let staging = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = staging.path();
    cmd!(sh, "{exe} generate man {dir}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("{} generate man failed", exe.display()))?;
    let mut count = 0;
    let mut names: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let page = std::fs::read(entry.path())?;
        write_file(&man1.join(entry.file_name()), &page)?;
        count += 1;
    }
    eprintln!("  {}/ ({count} pages)", man1.display());
    Ok(count)
}

/// Writes `bytes` to `path` (0644, parents created) through a temporary name renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .context("a file to install has no parent directory")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = path.file_name().context("a file to install has no name")?;
    let tmp = parent.join(format!(".{}.install-tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot install {}", path.display()))?;
    Ok(())
}

/// Fails when `bin/name` exists and is not a symlink: a program of the user's that a link must not replace.
fn check_link_free(bin: &Path, name: &str) -> Result<()> {
    let path = bin.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_symlink() => {
            bail!(
                "{} exists and is not a link; move it away and run `cargo xtask install` again",
                path.display()
            )
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// Makes `bin/name` a relative symlink to `dbackup`, replacing an older link but never a real file.
fn link(bin: &Path, name: &str) -> Result<()> {
    check_link_free(bin, name)?;
    let path = bin.join(name);
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
    }
    std::os::unix::fs::symlink("dbackup", &path)
        .with_context(|| format!("cannot create link {}", path.display()))?;
    eprintln!("  {} -> dbackup", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary (a stand-in answering `generate man DIR` and `generate completions SHELL`), its links, the pages and
    /// the three completion files land where `planned` says, and a dry run writes nothing.
    #[test]
    fn install_puts_pages_and_completions_beside_the_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-dbackup");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$2\" in man) echo page > \"$3/dbackup.1\"; echo page > \"$3/dbackup-collect.1\";; \
completions) echo \"# $3 script\";; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = dir.path().join("prefix");

        run(InstallArgs {
            prefix: Some(prefix.clone()),
            dry_run: true,
            binary: Some(fake.clone()),
        })
        .unwrap();
        assert!(!prefix.exists(), "a dry run wrote something");

        run(InstallArgs {
            prefix: Some(prefix.clone()),
            dry_run: false,
            binary: Some(fake),
        })
        .unwrap();
        for (path, what) in planned(&prefix) {
            assert!(
                path.symlink_metadata().is_ok(),
                "{} ({what}) missing",
                path.display()
            );
        }
        assert!(prefix.join(MAN_DIR).join("dbackup-collect.1").is_file());
        let zsh =
            std::fs::read_to_string(prefix.join("share/zsh/site-functions/_dbackup")).unwrap();
        assert_eq!(zsh, "# zsh script\n");
    }

    #[test]
    fn links_replace_links_but_never_files() {
        let dir = std::env::temp_dir().join(format!("xtask-install-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.join("backup")).unwrap();
        link(&dir, "backup").unwrap();
        assert_eq!(
            std::fs::read_link(dir.join("backup")).unwrap(),
            Path::new("dbackup")
        );

        std::fs::write(dir.join("backup-collect"), "a user's own script").unwrap();
        let err = link(&dir, "backup-collect").unwrap_err().to_string();
        assert!(err.contains("is not a link"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("backup-collect")).unwrap(),
            "a user's own script"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
