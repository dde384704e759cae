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
    ensure_with(sh, tool, &[])
}

/// [`ensure`] with more `cargo install` arguments (features: `--no-default-features --features ...`).
pub fn ensure_with(sh: &Shell, tool: &Tool, install_args: &[&str]) -> Result<PathBuf> {
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
            "cargo install {krate} --locked --version {version} --root {root} {install_args...}"
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

/// Garage, the S3 server the cloud tests run against (AGPL: a test tool, never linked into dbackup). Single node,
/// sqlite metadata, its C libraries built in.
pub const GARAGE: Tool = Tool {
    krate: "garage",
    version: "2.5.0",
    bin: "garage",
    version_args: &["--version"],
};

/// cargo-deny, which checks the licenses, sources, duplicate versions and security advisories of the crates dbackup
/// ships (`deny.toml`); `cargo xtask test`'s `deny` step.
pub const CARGO_DENY: Tool = Tool {
    krate: "cargo-deny",
    version: "0.20.2",
    bin: "cargo-deny",
    version_args: &["--version"],
};

/// The features Garage is built with: no system libraries, sqlite (no LMDB), nothing else.
pub const GARAGE_FEATURES: &[&str] =
    &["--no-default-features", "--features", "bundled-libs,sqlite"];

/// moto's S3 server (PyPI `moto[server]`, pinned), in a venv of the cache: it enforces Object Lock retention.
pub const MOTO_VERSION: &str = "5.2.5";

/// The venv's `moto_server`, creating the venv and installing moto first when missing or another version.
pub fn ensure_moto(sh: &Shell) -> Result<PathBuf> {
    let venv = cache_dir().join("moto");
    let bin = venv.join("bin").join("moto_server");
    let python = venv.join("bin").join("python");
    let installed = bin.is_file()
        && cmd!(sh, "{python} -c 'import moto; print(moto.__version__)'")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|v| v.trim() == MOTO_VERSION);
    if !installed {
        heading(&format!(
            "installing moto[server] {MOTO_VERSION} into a venv at {} (once; reused by later runs)",
            venv.display()
        ));
        cmd!(sh, "python3 -m venv {venv}")
            .run()
            .context("python3 -m venv failed (Debian: apt-get install python3-venv)")?;
        let pip = venv.join("bin").join("pip");
        let spec = format!("moto[server]=={MOTO_VERSION}");
        cmd!(sh, "{pip} install --quiet {spec}")
            .run()
            .context("pip install moto[server] failed")?;
    }
    anyhow::ensure!(
        bin.is_file(),
        "{} is not there after pip install",
        bin.display()
    );
    Ok(bin)
}
