//! `cargo xtask install [--prefix DIR]`: `cargo install` the binary into DIR/bin (default ~/.local) and link
//! the seed's command names (`backup`, `backup-collect`, `backup-external`, `backup-restore`) to it.

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

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Install into DIR/bin (default: ~/.local)
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
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
    heading(&format!("install: dbackup into {}", bin.display()));
    cmd!(sh, "cargo install --locked --path . --root {prefix}")
        .run()
        .context("cargo install failed")?;

    for name in LINKS {
        link(&bin, name)?;
    }
    eprintln!(
        "installed {} and the links {}",
        bin.join("dbackup").display(),
        LINKS.join(", ")
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
