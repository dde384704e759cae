//! The keys restore and verify decrypt with: the identity files given with `--identity FILE` and those of the config
//! (the top-level `encryption.identity_file` and each destination's), and a passphrase for archives encrypted to one.
//! Nothing is read until an encrypted archive is about to be opened: a restore from local snapshots or from plain
//! archives never touches an identity file, and a configured identity file that is missing is an error only then.
//!
//! The identity stays in memory ([`Keys`]); only the files' names ever appear in messages.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::crypt::SecretString;

use crate::archive::ArchiveFiles;
use crate::archive::crypt::{self, CryptError, Keys};
use crate::settings::Settings;

/// How a passphrase may be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `$DBACKUP_PASSPHRASE_FILE`, the config's `passphrase_file`, else the terminal (an error without one).
    Always,
    /// The same, but a passphrase that cannot be read is no error: the archive is then checked without it
    /// (`--verify` checks the ciphertext).
    IfAvailable,
}

/// Where keys may come from; read on first need.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// `--identity FILE`, in order: each must be readable.
    given: Vec<PathBuf>,
    /// The config's `identity_file`s (top-level first, then each destination's), without duplicates.
    configured: Vec<PathBuf>,
    /// Each configured destination's `passphrase_file` (its own encryption's, else the top level's), by name: what
    /// reads a destination's backups decrypts them with its passphrase.
    passphrase_files: BTreeMap<String, PathBuf>,
    /// For a drive the config does not name (`--drive DIR`): the top level's `passphrase_file`, else the first
    /// destination's.
    passphrase_file: Option<PathBuf>,
    /// The passphrases once read, by the file they were read from (so that each is asked once per run).
    passphrases: RefCell<Vec<(Option<PathBuf>, SecretString)>>,
}

/// What [`KeyRing::keys_for`] found.
pub struct Found {
    /// The keys to attach (`None` when nothing is encrypted).
    pub keys: Option<Arc<Keys>>,
    /// Warnings for stderr (configured identity files passed over, a passphrase that could not be read).
    pub warnings: Vec<String>,
}

impl KeyRing {
    /// The keys named by the command line (`--identity`) and the settings.
    pub fn new(settings: &Settings, given: &[PathBuf]) -> KeyRing {
        let mut configured: Vec<PathBuf> = Vec::new();
        let mut passphrase_file = None;
        let mut passphrase_files = BTreeMap::new();
        // The top level's, the drives' and the buckets' own (a bucket encrypted to a passphrase has its file).
        let all = (settings.encryption.iter().map(|e| (None, e)))
            .chain(
                settings
                    .destinations
                    .iter()
                    .filter_map(|d| Some((Some(&d.name), d.encryption.as_ref()?))),
            )
            .chain(
                settings
                    .clouds
                    .iter()
                    .filter_map(|c| Some((Some(&c.name), c.encryption.as_ref()?))),
            );
        for (name, e) in all {
            if let Some(f) = &e.identity_file
                && !configured.contains(f)
                && !given.contains(f)
            {
                configured.push(f.clone());
            }
            if passphrase_file.is_none() {
                passphrase_file = e.passphrase_file.clone();
            }
            if let (Some(name), Some(f)) = (name, &e.passphrase_file) {
                passphrase_files.insert(name.clone(), f.clone());
            }
        }
        KeyRing {
            given: given.to_vec(),
            configured,
            passphrase_files,
            passphrase_file,
            passphrases: RefCell::new(Vec::new()),
        }
    }

    /// Only the given identity files (tests, `--drive` without a config).
    #[cfg(test)]
    pub fn with_identities(given: &[PathBuf]) -> KeyRing {
        KeyRing {
            given: given.to_vec(),
            ..KeyRing::default()
        }
    }

    /// The keys that open `archives` (archives and indexes of the sets about to be read), loaded now: `None` when
    /// none of them is encrypted. An archive encrypted to a passphrase (its header, or `passphrase_recorded` from
    /// `backup.json`) has the passphrase read; any other encrypted archive has the identity files read. An
    /// identity file given with `--identity` that cannot be read is an error; a configured one is an error only
    /// when no identity was given on the command line (else it is passed over with a warning). `destination`: the
    /// name of the destination they are on, whose `passphrase_file` is read.
    pub fn keys_for(
        &self,
        destination: &str,
        archives: &[&ArchiveFiles],
        passphrase_recorded: bool,
        ask: Ask,
    ) -> Result<Found, CryptError> {
        let encrypted: Vec<&&ArchiveFiles> = archives.iter().filter(|a| a.encrypted()).collect();
        if encrypted.is_empty() {
            return Ok(Found {
                keys: None,
                warnings: Vec::new(),
            });
        }
        let mut need_passphrase = passphrase_recorded;
        let mut need_identity = false;
        for a in &encrypted {
            let scrypt = a.open_raw().ok().and_then(crypt::is_passphrase_encrypted);
            match scrypt {
                Some(true) => need_passphrase = true,
                // A damaged header: opening it will say so; identities are read in case it is not.
                Some(false) | None => need_identity = true,
            }
        }
        self.load(destination, need_identity, need_passphrase, ask)
    }

    /// The keys that open archives whose encryption is known without looking at them (a bucket's `backup.json`
    /// records each set's: reading the archives' headers to find out would cost a request each): the identity
    /// files read when `identity`, the passphrase (`destination`'s) when `passphrase`; `None` when neither.
    pub fn keys_recorded(
        &self,
        destination: &str,
        identity: bool,
        passphrase: bool,
        ask: Ask,
    ) -> Result<Found, CryptError> {
        if !identity && !passphrase {
            return Ok(Found {
                keys: None,
                warnings: Vec::new(),
            });
        }
        self.load(destination, identity, passphrase, ask)
    }

    fn load(
        &self,
        destination: &str,
        need_identity: bool,
        need_passphrase: bool,
        ask: Ask,
    ) -> Result<Found, CryptError> {
        let mut found = Found {
            keys: None,
            warnings: Vec::new(),
        };
        let mut keys = Keys::new();
        if need_identity {
            for f in &self.given {
                keys.add_identity_file(f)?;
                found.warnings.extend(exposed(f));
            }
            for f in &self.configured {
                match keys.add_identity_file(f) {
                    Ok(()) => found.warnings.extend(exposed(f)),
                    Err(e) if !self.given.is_empty() => found.warnings.push(format!(
                        "{e} (the config's encryption.identity_file); using the --identity given"
                    )),
                    // A verify without the key still checks the encrypted files against the sums, as with no
                    // identity_file at all.
                    Err(e) if ask == Ask::IfAvailable => found.warnings.push(format!(
                        "{e} (the config's encryption.identity_file); verifying without it"
                    )),
                    Err(e) => {
                        return Err(CryptError::IdentityFile {
                            path: f.clone(),
                            detail: format!(
                                "{} (it is the config's encryption.identity_file); pass the identity with \
                                 --identity FILE",
                                detail_of(e)
                            ),
                        });
                    }
                }
            }
        }
        if need_passphrase {
            match self.passphrase(destination, ask) {
                Ok(p) => keys.add_passphrase(p),
                Err(e) if ask == Ask::IfAvailable => found.warnings.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        found.keys = (!keys.is_empty()).then(|| Arc::new(keys));
        Ok(found)
    }

    /// The passphrase of `destination`'s backups: from `$DBACKUP_PASSPHRASE_FILE`, its `passphrase_file` (for a
    /// drive the config does not name, the top level's or the first one's), else the terminal.
    fn passphrase(&self, destination: &str, ask: Ask) -> Result<SecretString, CryptError> {
        let file = self
            .passphrase_files
            .get(destination)
            .or(self.passphrase_file.as_ref());
        if let Some((_, p)) = self
            .passphrases
            .borrow()
            .iter()
            .find(|(f, _)| f.as_ref() == file)
        {
            return Ok(p.clone());
        }
        let from_file = std::env::var_os(crypt::PASSPHRASE_FILE_VAR).is_some() || file.is_some();
        if ask == Ask::IfAvailable && !from_file && !has_terminal() {
            return Err(CryptError::Passphrase(
                "the backup is encrypted to a passphrase, and there is no terminal to ask for it and no \
                 DBACKUP_PASSPHRASE_FILE"
                    .into(),
            ));
        }
        let p = crypt::read_passphrase(
            file.map(PathBuf::as_path),
            "passphrase of the encrypted backup: ",
        )?;
        self.passphrases
            .borrow_mut()
            .push((file.cloned(), p.clone()));
        Ok(p)
    }
}

/// The warning for an identity file that users other than its owner may read: whoever can read it can decrypt every
/// backup encrypted to it.
fn exposed(path: &Path) -> Option<String> {
    crate::stdx::key_file_exposed(path, "identity file")
}

fn detail_of(e: CryptError) -> String {
    match e {
        CryptError::IdentityFile { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// Whether a terminal can be asked (rpassword reads `/dev/tty`).
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new("/dev/tty"))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Write;

    fn encrypted_file(dir: &Path, name: &str, to: &crypt::EncryptTo) -> ArchiveFiles {
        let mut w = to.writer(Vec::new()).unwrap();
        w.write_all(b"content").unwrap();
        std::fs::write(dir.join(name), w.finish().unwrap()).unwrap();
        ArchiveFiles::discover(dir, name).unwrap()
    }

    #[test]
    fn identities_are_read_only_for_encrypted_archives() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("data.tar"), b"plain").unwrap();
        let plain = ArchiveFiles::discover(dir.path(), "data.tar").unwrap();
        let to = crypt::EncryptTo::Recipients(vec![id.to_public().to_string().parse().unwrap()]);
        let enc = encrypted_file(dir.path(), "data.tar.age", &to);

        // A missing identity file is no error while nothing encrypted is opened.
        let missing = KeyRing::with_identities(&[dir.path().join("nope.txt")]);
        let found = missing
            .keys_for("T9", &[&plain], false, Ask::Always)
            .unwrap();
        assert!(found.keys.is_none());
        let e = missing
            .keys_for("T9", &[&plain, &enc], false, Ask::Always)
            .err()
            .unwrap();
        assert!(e.to_string().contains("nope.txt"), "{e}");

        let ring = KeyRing::with_identities(std::slice::from_ref(&key));
        let keys = ring
            .keys_for("T9", &[&enc], false, Ask::Always)
            .unwrap()
            .keys
            .unwrap();
        let mut out = String::new();
        use std::io::Read;
        enc.clone()
            .with_keys(Some(keys))
            .open()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "content");

        // One that others can read is used, with a warning.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = ring.keys_for("T9", &[&enc], false, Ask::Always).unwrap();
        assert!(found.keys.is_some());
        assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
        assert!(
            found.warnings[0].contains("can be read by other users (mode 0644)"),
            "{:?}",
            found.warnings
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

        // A configured identity that is missing is passed over when one was given.
        let ring = KeyRing {
            configured: vec![dir.path().join("gone.txt")],
            ..KeyRing::with_identities(&[key])
        };
        let found = ring.keys_for("T9", &[&enc], false, Ask::Always).unwrap();
        assert!(
            found.warnings[0].contains("gone.txt"),
            "{:?}",
            found.warnings
        );
        let alone = KeyRing {
            configured: vec![dir.path().join("gone.txt")],
            ..KeyRing::default()
        };
        let e = alone
            .keys_for("T9", &[&enc], false, Ask::Always)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("gone.txt") && e.contains("--identity"), "{e}");
    }
}
