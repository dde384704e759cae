//! `dbackup keygen`: a new age X25519 identity ([`crate::archive::crypt::new_identity`]) written to a 0600 file
//! (never overwritten, never on a backup destination), its recipient printed.

use std::path::PathBuf;

use crate::cli::{GlobalArgs, KeygenArgs};
use crate::config::load;
use crate::exit::Exit;
use crate::expand::Env;
use crate::settings::Settings;

pub fn run(global: &GlobalArgs, args: &KeygenArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let target: PathBuf = match &args.out {
        Some(p) => crate::expand::normalize(&env.cwd.join(p)),
        None => load::xdg_dir(&env, "XDG_CONFIG_HOME", ".config")
            .join("dbackup")
            .join("identity.txt"),
    };
    // No config, or an invalid one, is no reason to refuse a key.
    let settings = Settings::load(global.config.as_deref(), super::output(global), &env).ok();
    if let Some(d) = settings
        .as_ref()
        .and_then(|s| s.destination_holding(&target))
    {
        let (name, path) = (&d.name, &d.path);
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
        return Err(exists(&target));
    }
    if global.dry_run {
        crate::errln!(
            "dbackup: dry run: would write a new identity to {} (mode 0600) and print its recipient",
            target.display()
        );
        if global.json {
            super::print_json(&serde_json::json!({ "dry_run": true, "would_write": target }))?;
        }
        return Ok(Exit::Ok);
    }
    // A signal now removes the temporary file (a whole secret key) instead of killing the process beside it.
    super::catch_signals(&crate::ui::Ui::new(&super::output(global)));
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (identity, recipient) = crate::archive::crypt::new_identity(&created);
    crate::config::init::write_new(&target, &identity, "the identity").map_err(|e| {
        match e.downcast_ref::<crate::config::ConfigError>() {
            // Made since the check above.
            Some(crate::config::ConfigError::Exists { .. }) => exists(&target),
            _ => e,
        }
    })?;
    if global.json {
        super::print_json(&serde_json::json!({ "identity_file": target, "recipient": recipient }))?;
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

/// The refusal of a `target` that exists: a usage error (exit 2), as `config init`'s.
fn exists(target: &std::path::Path) -> anyhow::Error {
    anyhow::Error::new(crate::exit::CodedError::new(
        Exit::Usage,
        format!(
            "{} already exists; dbackup never overwrites an identity (backups encrypted to it would be lost): \
             choose another --out, or move the old file away first",
            target.display()
        ),
    ))
}
