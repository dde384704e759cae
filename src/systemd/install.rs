//! Installing what [`super::render`] made: the user the units run as and the environment the config expands in for
//! them, the programs the units start that are missing here, the files as text, the commands that install them, and
//! writing them into a directory (replacing only files dbackup wrote, removing an earlier render's leftovers).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{EXTERNAL_SERVICE, HEADER, Input, Rendered, SERVE_SERVICE, Scope};
use crate::exit::{CodedError, Exit};
use crate::expand::Env;

fn usage(message: String) -> CodedError {
    CodedError::new(Exit::Usage, message)
}

/// The user the units run as (`run_as` for the system scope, else `$SUDO_USER`, `$USER`, root; the user scope's own
/// user), and the environment the config expands in for that user (their `HOME`, `USER`, `LOGNAME`).
pub fn unit_user(
    scope: Scope,
    run_as: Option<&str>,
    env: &Env,
) -> Result<(String, Env), CodedError> {
    let user = match scope {
        Scope::System => run_as
            .map(str::to_string)
            .or_else(|| env.var("SUDO_USER").map(str::to_string))
            .or_else(|| env.var("USER").map(str::to_string))
            .unwrap_or_else(|| "root".to_string()),
        Scope::User => env.var("USER").unwrap_or("").to_string(),
    };
    let unit_env = match scope {
        Scope::User => env.clone(),
        Scope::System => {
            let home = home_of(&user).ok_or_else(|| {
                usage(format!(
                    "user {user:?} does not exist on this machine; name the user the units run as with --run-as"
                ))
            })?;
            let mut e = env.clone();
            e.vars.insert("HOME".into(), home.display().to_string());
            e.vars.insert("USER".into(), user.clone());
            e.vars.insert("LOGNAME".into(), user.clone());
            e.home = home;
            e
        }
    };
    Ok((user, unit_env))
}

/// The warnings for the programs the units start that are not installed here (the units find them on their `PATH`,
/// which here is much like this one), with the package that has each.
pub fn missing_programs(rendered: &Rendered) -> Vec<String> {
    let sinks = crate::notify::sinks::Env::from_process();
    let mut out = Vec::new();
    for program in &rendered.programs {
        let found = if program.starts_with('/') {
            Path::new(program).is_file()
        } else {
            sinks.find(program).is_some()
        };
        if !found {
            out.push(format!(
                "the units start {}, which is not installed here{}",
                crate::stdx::show_str(program),
                match program.as_str() {
                    "rsync" => " (apt-get install rsync)",
                    "blkid" => " (apt-get install util-linux)",
                    "notify-send" => " (apt-get install libnotify-bin)",
                    _ => "",
                }
            ));
        }
    }
    out
}

/// The warning when the units would run a binary that is not there (`--exe` mistyped: every unit would fail to
/// start), or one in the Nix store (`nix run`, or a `nix profile` install, whose binary is the wrapped
/// `.dbackup-wrapped`): garbage collection removes that path once no profile holds it, and the wrapped binary lacks
/// the `PATH` (rsync, blkid) its wrapper sets.
pub fn exe_warning(exe: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if exe.starts_with("/nix/store") {
        return Some(format!(
            "the units would run {}, which is in the Nix store: garbage collection removes it once no profile \
             holds it, and the units then fail; give a path that stays (--exe ~/.nix-profile/bin/dbackup after \
             `nix profile install`), or use the NixOS or home-manager module",
            crate::stdx::show_path(exe)
        ));
    }
    let usable =
        std::fs::metadata(exe).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    (!usable).then(|| {
        format!(
            "the units would run {}, which is not an executable file here; they fail to start until it is \
             (install dbackup there, or give the installed binary with --exe)",
            crate::stdx::show_path(exe)
        )
    })
}

/// Every file, each after a `### name` line, for reading or piping.
pub fn text(r: &Rendered) -> String {
    let mut out = String::new();
    for (i, (name, body)) in r.files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("### {name}\n{body}"));
    }
    out
}

/// The commands that install and enable the files (from `dir`, or from a directory the user saves them to); for the
/// system scope, first the directories the units may write (`ProtectSystem=strict` needs them to exist), made by
/// `user` (whose home is `home`) where they can be.
pub fn instructions(
    r: &Rendered,
    input: &Input,
    user: &str,
    home: &Path,
    dir: Option<&Path>,
) -> String {
    let from = dir
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "DIR".to_string());
    // Each file's path, quoted for the shell (the commands are copied and pasted).
    let file = |name: &str| crate::ui::shell_words(&[format!("{from}/{name}")]);
    let units: Vec<String> = r.units.keys().map(|u| file(u)).collect();
    let triggered = r.units[EXTERNAL_SERVICE].contains_key("Install");
    let mut lines = Vec::new();
    if dir.is_none() {
        lines.push(
            "to install, save each file into a directory DIR (or use --out DIR), then:".to_string(),
        );
    } else {
        lines.push("to install:".to_string());
    }
    // The manager reloads, then the units are enabled (`systemctl`: how the manager is called).
    let enable = |lines: &mut Vec<String>, systemctl: &str| {
        lines.push(format!("  {systemctl} daemon-reload"));
        lines.push(format!("  {systemctl} enable --now dbackup-collect.timer"));
        if triggered {
            lines.push(format!("  {systemctl} enable {EXTERNAL_SERVICE}"));
        }
        if r.units.contains_key(SERVE_SERVICE) {
            lines.push(format!("  {systemctl} enable --now {SERVE_SERVICE}"));
        }
    };
    match r.scope {
        Scope::System => {
            let quote = |p: &Path| crate::ui::shell_words(&[p.display().to_string()]);
            // Below the home, as the user: `install -d` would make the missing directories above it root's.
            let make_root = if input.backup_root.starts_with(home) && home != Path::new("/") {
                format!("sudo -u {user} mkdir -p -m 0700")
            } else {
                format!("sudo install -d -m 0700 -o {user}")
            };
            lines.push(format!(
                "  {make_root} {}   # if missing: the units write only there,",
                quote(&input.backup_root)
            ));
            lines.push(format!(
                "  sudo -u {user} mkdir -p {}   # in the run log's directory and on the drives",
                quote(&input.state_dir)
            ));
            lines.push(format!(
                "  sudo cp {} /etc/systemd/system/",
                units.join(" ")
            ));
            if let Some(rules) = &r.udev_rules {
                lines.push(format!(
                    "  sudo cp {} /etc/udev/rules.d/ && sudo udevadm control --reload",
                    file(rules)
                ));
            }
            enable(&mut lines, "sudo systemctl");
        }
        Scope::User => {
            lines.push(format!(
                "  mkdir -p ~/.config/systemd/user && cp {} ~/.config/systemd/user/",
                units.join(" ")
            ));
            enable(&mut lines, "systemctl --user");
            lines.push(
                "  loginctl enable-linger \"$USER\"   # optional: run the timer while you are logged out"
                    .to_string(),
            );
        }
    }
    lines.join("\n")
}

/// What `--out` does: files to write, and earlier renders' files this one no longer has.
pub struct Writes {
    pub write: Vec<(PathBuf, String)>,
    pub remove: Vec<PathBuf>,
}

/// Refuses to replace a file dbackup did not write (one that does not start with [`HEADER`]).
pub fn plan_writes(r: &Rendered, dir: &Path) -> anyhow::Result<Writes> {
    let ours = |path: &Path| -> anyhow::Result<Option<bool>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes.starts_with(HEADER.as_bytes()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    };
    let mut write = Vec::new();
    for (name, body) in &r.files {
        let path = dir.join(name);
        if ours(&path)? == Some(false) {
            return Err(usage(format!(
                "{} exists and was not written by dbackup; move it away, or choose another --out",
                path.display()
            ))
            .into());
        }
        write.push((path, body.clone()));
    }
    let mut remove = Vec::new();
    for &name in super::FILES {
        let path = dir.join(name);
        if !r.files.contains_key(name) && ours(&path)? == Some(true) {
            remove.push(path);
        }
    }
    Ok(Writes { write, remove })
}

/// Refuses an `--out` directory that another user can write, or that lies below a directory another user can write
/// (other than a sticky one such as `/tmp`), or that another user owns (root aside), on the path as given (a
/// symlink judged by its owner) and on the path it leads to: the files are installed from there with sudo, and
/// whoever can change or add one before the copy runs their program as root (a unit, or `RUN+=` in the udev rule).
/// A directory that does not exist yet is judged by the directories above it.
pub fn check_private(dir: &Path) -> Result<(), CodedError> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let existing = dir
        .ancestors()
        .find(|d| d.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"));
    let real = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    let given = existing.ancestors().map(|d| (d, d.symlink_metadata()));
    let resolved = real.ancestors().map(|d| (d, d.metadata()));
    for (d, meta) in given.chain(resolved) {
        let Ok(meta) = meta else { continue };
        let is_out = existing == dir && (d == dir || d == real);
        let writable = meta.mode() & 0o002 != 0 && !meta.file_type().is_symlink();
        let why = if meta.uid() != me && meta.uid() != 0 {
            format!("belongs to another user (uid {})", meta.uid())
        } else if writable && (is_out || meta.mode() & 0o1000 == 0) {
            "can be written by every user".to_string()
        } else {
            continue;
        };
        return Err(usage(format!(
            "{} {why}, so another user could change the files before you install them; write them to a \
             directory of your own (--out ~/dbackup-units)",
            d.display()
        )));
    }
    Ok(())
}

/// Carries out `plan` in `dir` (created when missing): each file written, each leftover removed (and said so).
pub fn apply(plan: &Writes, dir: &Path, ui: &crate::ui::Ui) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Again now that it exists: another user may have made it since the check before the plan.
    check_private(dir)?;
    // Every file complete at a temporary name before any takes its place: a full disk leaves the units as they were,
    // never a new service beside an earlier render's timer (the temporary files go when dropped).
    let staged = plan
        .write
        .iter()
        .map(|(path, text)| Ok((path, stage(path, text)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (path, tmp) in staged {
        tmp.persist(path)
            .map_err(|e| anyhow::Error::new(e.error))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for path in &plan.remove {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        ui.info(format_args!(
            "removed {} (an earlier render's; remove the installed copy too)",
            path.display()
        ));
    }
    Ok(())
}

/// `text` in a complete temporary file beside `path` (mode 0644), for the caller to rename into place.
fn stage(path: &Path, text: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    crate::stdx::fs::complete_temp(parent, ".dbackup-render.", 0o644, text)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The home directory of a user, from the password database.
fn home_of(user: &str) -> Option<PathBuf> {
    crate::stdx::home_of_name(user.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_home_and_nonsense_does_not() {
        assert!(home_of("root").is_some_and(|h| h.is_absolute()));
        assert_eq!(home_of("no-such-user-dbackup"), None);
        assert_eq!(home_of("nul\0byte"), None);
    }
}
