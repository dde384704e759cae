//! The `nix` step of `cargo xtask test`: with Debian's nix-bin (offline: no nixpkgs to fetch),
//! 1. `nix-instantiate --parse` of every `.nix` file of the repository;
//! 2. `nix-instantiate --eval --strict` of `nix/tests/lib.nix`, the builtins-only tests of `nix/lib.nix`;
//! 3. when `NIXPKGS_LIB` names a checkout of nixpkgs.lib (or `NIXPKGS` one of nixpkgs), `nix/tests/modules.nix`:
//!    the NixOS and home-manager modules and the flake's outputs evaluated with nixpkgs' real module system; with
//!    `NIXPKGS`, against NixOS's own systemd option types and unit-file code too, and with `HOME_MANAGER` (a
//!    checkout of home-manager) against home-manager's own `modules/systemd.nix`. Without them the step says what
//!    it skipped (see nix/tests/README.md).
//!
//! The checks that compare `nix/lib.nix` with `dbackup systemd render`, and those with systemd-analyze, systemd-escape
//! and udevadm, are integration tests (tests/integration/systemd.rs, loopdev_udev.rs): they run in the `test` step.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::step::Outcome;
use crate::util::{find_program, is_root, project_root};

/// The variable that points the module evaluation at nixpkgs' lib.
pub const NIXPKGS_LIB: &str = "NIXPKGS_LIB";
/// A checkout of nixpkgs: its `lib/`, and NixOS's systemd option types (`nixos/lib/systemd-*.nix`).
pub const NIXPKGS: &str = "NIXPKGS";
/// A checkout of home-manager: its `modules/systemd.nix` and `lib.hm`.
pub const HOME_MANAGER: &str = "HOME_MANAGER";

/// A directory named by `var` that must hold `file`; `None` when the variable is unset or empty.
fn checkout(var: &str, file: &str, what: &str) -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.join(file).is_file() {
        bail!(
            "{var}={} holds no {file}: point it at a checkout of {what}",
            dir.display()
        );
    }
    Ok(Some(dir))
}

pub fn step(sh: &Shell) -> Result<Outcome> {
    if find_program("nix-instantiate").is_none() {
        let msg = "nix-instantiate not installed (apt-get install nix-bin)";
        if crate::util::in_ci() && is_root() {
            bail!("{msg}; CI must have it (the packages step installs it)");
        }
        return Ok(Outcome::Skipped(msg.into()));
    }
    let root = project_root();

    let files = nix_files(&root)?;
    let mut unparsable = Vec::new();
    for f in &files {
        if cmd!(sh, "nix-instantiate --parse {f}")
            .quiet()
            .ignore_stdout()
            .run()
            .is_err()
        {
            unparsable.push(f.display().to_string());
        }
    }
    if !unparsable.is_empty() {
        bail!(
            "nix-instantiate --parse failed for {}",
            unparsable.join(", ")
        );
    }
    eprintln!("parsed {} .nix files", files.len());

    let lib_tests = root.join("nix/tests/lib.nix");
    eval_tests(
        "nix/tests/lib.nix",
        cmd!(sh, "nix-instantiate --eval --strict --json {lib_tests}"),
    )?;

    let mut notes = vec![format!(
        "{} files parse; nix/tests/lib.nix passes",
        files.len()
    )];
    let nixpkgs = checkout(NIXPKGS, "nixos/lib/systemd-unit-options.nix", "nixpkgs")?;
    let home_manager = checkout(HOME_MANAGER, "modules/systemd.nix", "home-manager")?;
    let lib = match std::env::var_os(NIXPKGS_LIB).filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.join("lib/default.nix").is_file() && !dir.join("default.nix").is_file() {
                bail!(
                    "{NIXPKGS_LIB}={} holds no lib/default.nix: point it at a checkout of nixpkgs.lib or nixpkgs",
                    dir.display()
                );
            }
            Some(dir)
        }
        None => nixpkgs.clone(),
    };
    match lib {
        Some(dir) => {
            let modules = root.join("nix/tests/modules.nix");
            let mut extra: Vec<String> = Vec::new();
            for (arg, value) in [("nixpkgs", &nixpkgs), ("homeManager", &home_manager)] {
                if let Some(v) = value {
                    extra.extend([
                        "--arg".to_string(),
                        arg.to_string(),
                        v.display().to_string(),
                    ]);
                }
            }
            eval_tests(
                "nix/tests/modules.nix",
                cmd!(
                    sh,
                    "nix-instantiate --eval --strict --json {modules} --arg nixpkgsLib {dir} {extra...}"
                ),
            )?;
            notes.push(format!(
                "modules and flake evaluate against {}",
                dir.display()
            ));
            notes.push(match &nixpkgs {
                Some(d) => format!(
                    "NixOS units with NixOS's own systemd types from {}",
                    d.display()
                ),
                None => format!("NixOS's systemd types stood in for ({NIXPKGS} unset)"),
            });
            notes.push(match &home_manager {
                Some(d) => format!(
                    "home units with home-manager's own types from {}",
                    d.display()
                ),
                None => format!("home-manager's systemd types stood in for ({HOME_MANAGER} unset)"),
            });
        }
        None => {
            eprintln!(
                "skipping nix/tests/modules.nix: set {NIXPKGS_LIB}=/path/to/nixpkgs.lib (or {NIXPKGS}=/path/to/nixpkgs) \
                 to evaluate the modules with nixpkgs' module system (see nix/tests/README.md)"
            );
            notes.push(format!("module evaluation skipped ({NIXPKGS_LIB} unset)"));
        }
    }
    Ok(Outcome::Passed(notes.join("; ")))
}

/// Runs an evaluation whose result is the list of failed checks; fails unless it is `[]`.
fn eval_tests(name: &str, command: xshell::Cmd<'_>) -> Result<()> {
    let out = command
        .read()
        .with_context(|| format!("evaluating {name} failed"))?;
    let failures: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("{name} did not evaluate to JSON: {out}"))?;
    match failures.as_array() {
        Some(list) if list.is_empty() => {
            eprintln!("{name}: all checks pass");
            Ok(())
        }
        Some(list) => {
            for f in list {
                eprintln!(
                    "  FAILED {}\n    got:  {}\n    want: {}",
                    f["name"].as_str().unwrap_or("?"),
                    f["got"],
                    f["want"]
                );
            }
            bail!("{} of the checks in {name} failed", list.len())
        }
        None => bail!("{name} evaluated to {out}, not a list of failures"),
    }
}

/// Every `.nix` file of the repository, outside `target/` and hidden directories.
fn nix_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(root).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        e.depth() == 0 || !(name.starts_with('.') || (e.depth() == 1 && name == "target"))
    });
    for entry in walk {
        let entry = entry.context("cannot list the repository")?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "nix") {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_has_its_nix_files() {
        let files = nix_files(&project_root()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.strip_prefix(project_root())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        for want in [
            "flake.nix",
            "nix/lib.nix",
            "nix/package.nix",
            "nix/tests/vm.nix",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(names.iter().all(|n| !n.starts_with("target/")));
    }
}
