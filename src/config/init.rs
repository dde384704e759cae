//! `dbackup config init`: the default config's text ([`default_text`]). It and `dbackup keygen` write new files
//! through [`write_new`]: a temporary file linked into
//! place only when complete, mode 0600, never replacing anything.

use std::path::Path;

use anyhow::Context;

use super::{ConfigError, default, load};
use crate::expand::Env;

/// The text `config init` writes to `target`: the built-in default, checked to be a valid config. Refuses a `target`
/// that exists (whatever it is).
pub fn default_text(target: &Path, env: &Env) -> anyhow::Result<String> {
    let text = default::text(env);
    // The text is generated; make sure it is a valid config before anyone relies on it.
    load::parse(target, &text)
        .context("the built-in default config does not validate (a bug in dbackup)")?;
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(ConfigError::Exists {
            path: target.to_path_buf(),
        }
        .into());
    }
    Ok(text)
}

/// Writes `text` to a new file at `target`, mode 0600, creating parent directories; never replaces a file.
/// The text goes to a temporary file first (fsynced), which is linked into place only when complete, and the
/// directory is fsynced then. `what` names the file in errors ("the config", "the identity").
pub fn write_new(target: &Path, text: &str, what: &str) -> anyhow::Result<()> {
    let cannot = || format!("cannot write {what} to {}", target.display());
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // Named for what it becomes (an identity's temporary file is not a config's).
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = crate::stdx::fs::complete_temp(parent, &format!(".{name}.tmp-"), 0o600, text)
        .with_context(cannot)?;
    match tmp.persist_noclobber(target) {
        // The directory too, so that a crash soon after cannot lose the file (for keygen, the only copy of a key).
        Ok(_) => std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", parent.display())),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(ConfigError::Exists {
            path: target.to_path_buf(),
        }
        .into()),
        Err(e) => Err(anyhow::Error::new(e.error).context(cannot())),
    }
}
