//! Cargo-installed tools the tasks need (cargo-mutants, ...): built once with `cargo install --locked` at a pinned
//! version into a cache directory reused between runs, `$DBACKUP_TOOLS_CACHE`, else `~/.cache/dbackup-tools`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::util::heading;

/// The cache of installed tools: `$DBACKUP_TOOLS_CACHE`, else `$XDG_CACHE_HOME/dbackup-tools`, else
/// `~/.cache/dbackup-tools`.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("DBACKUP_TOOLS_CACHE") {
        return PathBuf::from(dir);
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        });
    cache.join("dbackup-tools")
}

/// A tool to install: the crate, its pinned version, the binary it provides, and the arguments that make the
/// binary print its version (the output must contain `version`).
pub struct Tool {
    pub krate: &'static str,
    pub version: &'static str,
    pub bin: &'static str,
    pub version_args: &'static [&'static str],
}

/// The path of the tool's binary, installing it into the cache first when it is missing or another version.
pub fn ensure(sh: &Shell, tool: &Tool) -> Result<PathBuf> {
    let root = cache_dir().join(tool.krate);
    let bin = root.join("bin").join(tool.bin);
    let args = tool.version_args;
    let installed = bin.is_file()
        && cmd!(sh, "{bin} {args...}")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|out| out.contains(tool.version));
    if !installed {
        heading(&format!(
            "installing {} {} into {} (once; reused by later runs)",
            tool.krate,
            tool.version,
            root.display()
        ));
        let (krate, version) = (tool.krate, tool.version);
        cmd!(
            sh,
            "cargo install {krate} --locked --version {version} --root {root}"
        )
        .run()
        .with_context(|| format!("cargo install {krate} failed"))?;
    }
    anyhow::ensure!(
        bin.is_file(),
        "{} is not there after cargo install",
        bin.display()
    );
    Ok(bin)
}
