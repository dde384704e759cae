//! `dbackup keygen`: a new age X25519 identity written to a 0600 file (never overwritten), its recipient printed.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use anyhow::Context;

use crate::cli::{GlobalArgs, KeygenArgs};
use crate::config::load;
use crate::exit::Exit;
use crate::settings::Env;

/// The identity file's text, in `age-keygen`'s format.
fn identity_text(id: &age::x25519::Identity, created: &str) -> String {
    format!(
        "# created: {created}\n# public key: {}\n# dbackup: keep a copy of this file somewhere other than the backup drive.\n{}\n",
        id.to_public(),
        id.to_string().expose_secret()
    )
}

/// The configured destination (name, path) that `target` is under, when a valid config names one. Symlinks in
/// either path are resolved as far as they exist. No config, or an invalid one, is no reason to refuse a key.
fn on_a_destination(global: &GlobalArgs, env: &Env, target: &Path) -> Option<(String, PathBuf)> {
    let settings = crate::settings::Settings::load(global, env).ok()?;
    let resolve = |p: &Path| -> PathBuf {
        // The longest existing ancestor, canonicalized, with the rest appended.
        let mut base = p.to_path_buf();
        let mut rest = Vec::new();
        while !base.exists() {
            match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    base = parent.to_path_buf();
                }
                _ => return p.to_path_buf(),
            }
        }
        let mut out = std::fs::canonicalize(&base).unwrap_or(base);
        out.extend(rest.iter().rev());
        out
    };
    let target = resolve(target);
    settings
        .destinations
        .iter()
        .find(|d| target.starts_with(resolve(&d.path)))
        .map(|d| (d.name.clone(), d.path.clone()))
}

pub fn run(global: &GlobalArgs, args: &KeygenArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let target: PathBuf = match &args.out {
        Some(p) => crate::expand::normalize(&env.cwd.join(p)),
        None => load::xdg_dir(&env, "XDG_CONFIG_HOME", ".config")
            .join("dbackup")
            .join("identity.txt"),
    };
    if let Some((name, path)) = on_a_destination(global, &env, &target) {
        return Err(anyhow::Error::new(crate::exit::CodedError::new(
            Exit::Usage,
            format!(
                "{} is on backup destination {name} ({}): whoever finds the drive would have the key to its backups; \
                 choose an --out elsewhere (this computer, a separate USB key), and keep a copy off the drive",
                target.display(),
                path.display()
            ),
        )));
    }
    if std::fs::symlink_metadata(&target).is_ok() {
        anyhow::bail!(
            "{} already exists; dbackup never overwrites an identity (backups encrypted to it would be lost): \
             choose another --out, or move the old file away first",
            target.display()
        );
    }
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    if global.dry_run {
        crate::errln!(
            "dbackup: dry run: would write a new identity to {} (mode 0600) and print its recipient",
            target.display()
        );
        return Ok(Exit::Ok);
    }
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    super::config::write_new(&target, &identity_text(&id, &created))
        .with_context(|| format!("cannot write the identity to {}", target.display()))?;
    if global.json {
        crate::outln!(
            "{}",
            serde_json::json!({ "identity_file": target, "recipient": recipient })
        );
    } else {
        crate::outln!("{recipient}");
    }
    if global.quiet == 0 {
        crate::errln!(
            "dbackup: wrote the identity (secret key) to {} (mode 0600); the line above is its public recipient.\n\
             dbackup: put the recipient in the config: \"encryption\": {{ \"recipients\": [\"{recipient}\"], \
             \"identity_file\": \"{}\" }}\n\
             dbackup: keep a copy of the identity somewhere other than the backup drive and this computer \
             (a password manager, a printout): without it the encrypted backups cannot be restored.",
            target.display(),
            target.display()
        );
    }
    Ok(Exit::Ok)
}
