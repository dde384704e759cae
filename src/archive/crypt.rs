//! age encryption (age-encryption.org/v1) of archives: the recipients an archive is encrypted to, the [`Stage`] that
//! encrypts the tar stream and the index on their way to the drive, the identities restore and verify read, and the
//! decrypting reader that seeks through age's 64 KiB STREAM chunks.
//!
//! Backing up needs only public recipients (`age1...`, `ssh-ed25519 ...`, `ssh-rsa ...`) or a passphrase (scrypt);
//! identities are read only to restore or verify. Nothing secret is ever written anywhere by this module: the
//! identity stays in memory, and error messages name files and line numbers, never their contents.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::sync::Mutex;

/// A passphrase held as a secret (never printed): what the rest of the crate holds one in.
pub use age::secrecy::SecretString;
use age::secrecy::{ExposeSecret as _, SecretBox};
use age::stream::{StreamReader, StreamWriter};
use age_core::format::{FILE_KEY_BYTES, FileKey, Stanza};
use serde::{Deserialize, Serialize};

use super::sink::{Sink, Stage, StageWriter};

/// What an encrypted file's name ends with: `data.tar.age`, `data.index.age`.
pub const AGE_SUFFIX: &str = ".age";

/// The format written, as `backup.json` records it.
pub const AGE_FORMAT: &str = "age-encryption.org/v1";

/// The most scrypt work (log2 N) a passphrase-encrypted archive may ask for when it is opened: age's own limit for
/// interactive use is about 2^22 (a few seconds); a damaged or hostile header asking for more is refused.
const MAX_SCRYPT_LOG_N: u8 = 22;

/// Why encryption or decryption could not even start. Damage found while reading comes as an I/O error of the
/// reader (see [`Decrypting`]), named after the archive by its caller.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error(
        "{value:?} is not an age recipient: {reason}; expected an age public key (age1...), or an ssh-ed25519 or ssh-rsa public key"
    )]
    Recipient { value: String, reason: String },
    #[error(
        "{path}, line {line}: not an age recipient ({reason}); each line must be an age1... or ssh-ed25519/ssh-rsa public key, or a # comment"
    )]
    RecipientsFileLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "this is a secret age identity (AGE-SECRET-KEY-1...), not a public recipient: {SECRET_KEY_ADVICE}"
    )]
    SecretKey,
    #[error(
        "cannot read the recipients file {path}: {source}; fix `encryption.recipients_file` in the config, or the file"
    )]
    RecipientsFile { path: PathBuf, source: io::Error },
    #[error(
        "its encryption names only an identity_file ({identity}), which opens backups but writes none: add its \
         public key to encryption.recipients (`age-keygen -y {identity}` prints it, as does the file's \
         `# public key:` line)"
    )]
    ReadsOnly { identity: PathBuf },
    #[error("{path} holds no recipients; add at least one age1... or ssh public key")]
    NoRecipients { path: PathBuf },
    #[error("cannot read the identity file {path}: {detail}")]
    IdentityFile { path: PathBuf, detail: String },
    #[error(
        "{archive} is encrypted with age and no identity was given to decrypt it: pass --identity FILE (the file \
         `dbackup keygen` wrote), or set encryption.identity_file in the config{passphrase}"
    )]
    NoIdentity {
        archive: String,
        /// A hint when the archive was encrypted to a passphrase.
        passphrase: &'static str,
    },
    #[error(
        "none of the identities given ({identities}) can decrypt {archive}: it was encrypted to other recipients; \
         pass the identity that belongs to one of them with --identity FILE"
    )]
    NoMatchingIdentity { archive: String, identities: String },
    #[error(
        "the passphrase does not decrypt {archive}; try again with the passphrase used when it was written"
    )]
    WrongPassphrase { archive: String },
    #[error(
        "{archive} is not a readable age file ({detail}): it is damaged, or not an age file at all"
    )]
    NotAge { archive: String, detail: String },
    #[error("cannot read the passphrase: {0}")]
    Passphrase(String),
    #[error("the two passphrases typed differ; run again and type the same one twice")]
    PassphraseMismatch,
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
}

impl CryptError {
    /// The keys at hand do not open the file (no identity, none matching, a wrong passphrase): a fact about the
    /// keys, not damage to the file.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            CryptError::NoIdentity { .. }
                | CryptError::NoMatchingIdentity { .. }
                | CryptError::WrongPassphrase { .. }
        )
    }
}

/// At most this much of a key file (identity, recipients, passphrase) is read: they are a few hundred bytes, and a
/// file named by mistake (an archive, `/dev/zero`) must not be read whole.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// The bytes of the key file at `path` (any readable file: `/dev/stdin` from a password manager too), at most
/// [`MAX_KEY_FILE_BYTES`]; the error in words.
fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        // Root's file, and the restore run as a normal user (a new machine, the key copied back as root).
        io::ErrorKind::PermissionDenied => format!(
            "{e}; it must be readable by you: as root, `sudo install -o $USER -m 600 {} ~/{}` makes you a copy \
             to use instead",
            path.display(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        _ => e.to_string(),
    })?;
    crate::stdx::fs::read_file_bounded(file, path, MAX_KEY_FILE_BYTES).map_err(|e| match e {
        crate::stdx::fs::FsError::TooBig { .. } => format!(
            "it is larger than {}, so it is not a key file (those are a few hundred bytes): check the path",
            crate::stdx::bytes(MAX_KEY_FILE_BYTES)
        ),
        other => other.to_string(),
    })
}

/// What to do when a secret key is where a recipient belongs.
const SECRET_KEY_ADVICE: &str = "never put it in the config or a recipients file (keep it in the identity file, off \
the drive); use the age1... line `dbackup keygen` printed, or `age-keygen -y FILE`";

/// One recipient as configured: its public text (recorded in `backup.json`) and the parsed key.
pub struct Recipient {
    text: String,
    key: Box<dyn age::Recipient + Send + Sync>,
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipient").field(&self.text).finish()
    }
}

impl Recipient {
    /// The public key as written in the config (for an ssh key, type and base64 without the comment).
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl FromStr for Recipient {
    type Err = CryptError;

    /// Parses an age X25519 public key (`age1...`) or an `ssh-ed25519`/`ssh-rsa` public key line.
    fn from_str(s: &str) -> Result<Recipient, CryptError> {
        let s = s.trim();
        let err = |reason: &str| CryptError::Recipient {
            value: shown(s),
            reason: reason.to_string(),
        };
        if s.starts_with("age1") {
            // Bech32 data never holds a '1': a second one separates a plugin's name (age1name1...).
            if s.as_bytes()[4..].contains(&b'1') {
                return Err(err(
                    "age plugin recipients are not supported; use an age1... X25519 key",
                ));
            }
            let key = age::x25519::Recipient::from_str(s).map_err(&err)?;
            return Ok(Recipient {
                text: key.to_string(),
                key: Box::new(key),
            });
        }
        if s.starts_with("ssh-") {
            use age::ssh::ParseRecipientKeyError as P;
            let key = age::ssh::Recipient::from_str(s).map_err(|e| match e {
                P::Ignore => err("this ssh key type cannot be used"),
                P::Invalid(why) => err(why),
                P::RsaModulusTooLarge => err("the ssh-rsa key is larger than age supports"),
                P::RsaModulusTooSmall => err("the ssh-rsa key is weaker than 2048 bits"),
                P::Unsupported(t) => err(&format!("ssh key type {t} is not supported")),
                _ => err("not a usable ssh public key"),
            })?;
            // Type and key, without the comment (which may name a user or host).
            let text = s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            return Ok(Recipient {
                text,
                key: Box::new(key),
            });
        }
        if crate::stdx::holds_secret_key(s) {
            // Never echoed, not even in part.
            return Err(CryptError::SecretKey);
        }
        Err(err("unknown key type"))
    }
}

/// A configured value as error messages may show it: public keys whole; anything else (which may be a secret put
/// in the wrong place, such as a passphrase) only by its first characters.
fn shown(value: &str) -> String {
    if value.starts_with("age1") || value.starts_with("ssh-") {
        return value.to_string();
    }
    match value.char_indices().nth(6) {
        Some((at, _)) => format!("{}...", &value[..at]),
        None => value.to_string(),
    }
}

/// A new X25519 identity (`dbackup keygen`): the identity file's text, in `age-keygen`'s format (a comment with the
/// creation time `created` and the public key, then the secret key), and the recipient.
pub fn new_identity(created: &str) -> (String, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n# dbackup: keep a copy of this file somewhere other than the backup drive.\n{}\n",
        id.to_string().expose_secret()
    );
    (text, recipient)
}

/// An upper bound of the encrypted length of `plain` bytes: age adds a header (a stanza per recipient: about 100
/// bytes for X25519 or ssh-ed25519, up to about 800 for a 4096-bit ssh-rsa key) and a 16-byte tag to every 64 KiB
/// chunk.
pub fn encrypted_len(plain: u64, recipients: usize) -> u64 {
    const CHUNK: u64 = 64 << 10;
    let chunks = plain.div_ceil(CHUNK).max(1);
    plain + chunks * 16 + 16 + 1024 * recipients.max(1) as u64 + 128
}

/// What encrypts a destination's archives: the recorded recipients, or the passphrase (read now, from
/// `passphrase_file`, `$DBACKUP_PASSPHRASE_FILE`, or the terminal).
pub fn encrypt_to(
    record: &EncryptionRecord,
    passphrase_file: Option<&Path>,
) -> Result<EncryptTo, CryptError> {
    if record.passphrase {
        return Ok(EncryptTo::Passphrase(read_new_passphrase(passphrase_file)?));
    }
    let list = record
        .recipients
        .iter()
        .map(|r| r.parse::<Recipient>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptTo::Recipients(list))
}

/// Parses a recipients file (`age -R` format): one recipient per line, `#` comments and blank lines ignored.
pub fn read_recipients_file(path: &Path) -> Result<Vec<Recipient>, CryptError> {
    let unreadable = |source: io::Error| CryptError::RecipientsFile {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_key_file(path).map_err(|e| unreadable(io::Error::other(e)))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        unreadable(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r = line.parse::<Recipient>().map_err(|e| match e {
            CryptError::Recipient { reason, .. } => CryptError::RecipientsFileLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            },
            CryptError::SecretKey => CryptError::RecipientsFileLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!(
                    "a secret age identity, not a public recipient: {SECRET_KEY_ADVICE}"
                ),
            },
            other => other,
        })?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(CryptError::NoRecipients {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Who can open what is written: public recipients, or a passphrase (age's scrypt recipient, which stands alone).
pub enum EncryptTo {
    Recipients(Vec<Recipient>),
    Passphrase(SecretString),
}

impl fmt::Debug for EncryptTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncryptTo::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            EncryptTo::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

/// What `backup.json` says of an encrypted set: the format and the public recipients, never anything secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    /// `age-encryption.org/v1`.
    pub format: String,
    /// The public recipients (empty for a passphrase).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Encrypted to a passphrase (scrypt) instead of recipients.
    #[serde(default)]
    pub passphrase: bool,
}

impl EncryptTo {
    /// The record of this encryption for `backup.json`.
    pub fn record(&self) -> EncryptionRecord {
        EncryptionRecord {
            format: AGE_FORMAT.to_string(),
            recipients: match self {
                EncryptTo::Recipients(r) => r.iter().map(|r| r.text.clone()).collect(),
                EncryptTo::Passphrase(_) => Vec::new(),
            },
            passphrase: matches!(self, EncryptTo::Passphrase(_)),
        }
    }

    fn encryptor(&self) -> Result<age::Encryptor, CryptError> {
        match self {
            EncryptTo::Recipients(list) => {
                age::Encryptor::with_recipients(list.iter().map(|r| r.key.as_ref() as _))
                    .map_err(|e| CryptError::Encrypt(e.to_string()))
            }
            EncryptTo::Passphrase(p) => Ok(age::Encryptor::with_user_passphrase(p.clone())),
        }
    }

    /// Encrypts everything written to `out` (which must be finished with [`AgeWriter::finish`]).
    pub fn writer<W: Write>(&self, out: W) -> io::Result<AgeWriter<W>> {
        let enc = self.encryptor().map_err(io::Error::other)?;
        Ok(AgeWriter(enc.wrap_output(out)?))
    }
}

/// The most bytes of an age stream's head (its header and the 16-byte payload nonce: what is read before the first
/// chunk) recorded beside an object ([`encode_head`]); an X25519 recipient's is about 190 bytes, an ssh one's up to
/// about 700. A longer head is not recorded (a restore then reads it from the object).
pub const AGE_HEAD_MAX: usize = 4 << 10;

/// An age stream's head as `backup.json` records it (base64), or `None` when longer than [`AGE_HEAD_MAX`].
pub fn encode_head(head: &[u8]) -> Option<String> {
    (!head.is_empty() && head.len() <= AGE_HEAD_MAX).then(|| data_encoding::BASE64.encode(head))
}

/// A recorded head read back (untrusted: bounded before decoding), or why it is not one. It is still only a hint:
/// age's header MAC (with the file key) and the chunks' tags (with the nonce) authenticate it when it is used.
pub fn decode_head(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > data_encoding::BASE64.encode_len(AGE_HEAD_MAX) {
        return Err(format!(
            "is {} characters, more than an age header of {AGE_HEAD_MAX} bytes",
            text.len()
        ));
    }
    let head = data_encoding::BASE64
        .decode(text.as_bytes())
        .map_err(|e| format!("is not base64 ({e})"))?;
    if !head.starts_with(b"age-encryption.org/") {
        return Err("is not an age header".into());
    }
    Ok(head)
}

/// An age stream being written; only [`AgeWriter::finish`] writes the final chunk.
pub struct AgeWriter<W: Write>(StreamWriter<W>);

impl<W: Write> Write for AgeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> AgeWriter<W> {
    /// Writes the final chunk and gives the output back.
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}

impl Stage for EncryptTo {
    fn wrap(&self, sink: Box<dyn Sink>) -> io::Result<Box<dyn StageWriter>> {
        Ok(Box::new(self.writer(sink)?))
    }
}

impl StageWriter for AgeWriter<Box<dyn Sink>> {
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Sink>> {
        (*self).finish()
    }
}

/// Identities that decrypt: from identity files (age's `AGE-SECRET-KEY-1...` lines, or an unencrypted OpenSSH
/// private key) and/or a passphrase. Where they came from is kept for messages; the keys never leave memory.
#[derive(Default)]
pub struct Keys {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    passphrase: Option<PassphraseIdentity>,
    sources: Vec<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// No keys yet.
    pub fn new() -> Keys {
        Keys::default()
    }

    /// Whether no identity and no passphrase was given.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.passphrase.is_none()
    }

    /// Where the keys came from, for messages: file names and "a passphrase".
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            "none".into()
        } else {
            self.sources.join(", ")
        }
    }

    /// Adds the identities of an identity file: age's format (what `dbackup keygen` and `age-keygen` write) or an
    /// unencrypted OpenSSH private key (ssh-ed25519, ssh-rsa).
    pub fn add_identity_file(&mut self, path: &Path) -> Result<(), CryptError> {
        let err = |detail: String| CryptError::IdentityFile {
            path: path.to_path_buf(),
            detail,
        };
        let bytes = read_key_file(path).map_err(err)?;
        let text_start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|i| &bytes[i..])
            .unwrap_or_default();
        if text_start.starts_with(b"-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(&bytes[..], Some(path.display().to_string()))
                .map_err(|e| err(e.to_string()))?;
            match id {
                age::ssh::Identity::Unencrypted(_) => {}
                age::ssh::Identity::Encrypted(_) => {
                    return Err(err("this ssh key is protected by a passphrase, which dbackup cannot ask for; \
                                    use an age identity (`dbackup keygen`) or an unencrypted copy of the key"
                        .into()));
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(err(
                        "this ssh key type is not supported by age (use ssh-ed25519 or ssh-rsa)"
                            .into(),
                    ));
                }
            }
            self.identities.push(Box::new(id));
        } else {
            let file = age::IdentityFile::from_buffer(&bytes[..]).map_err(|e| {
                // age's message names a line number, never the line.
                err(e.to_string())
            })?;
            let ids = file.into_identities().map_err(|e| err(e.to_string()))?;
            if ids.is_empty() {
                return Err(err(
                    "it holds no identity (expected an AGE-SECRET-KEY-1... line, as `dbackup keygen` writes)"
                        .into(),
                ));
            }
            self.identities.extend(ids);
        }
        self.sources.push(path.display().to_string());
        Ok(())
    }

    /// Adds a passphrase, for archives encrypted to one.
    pub fn add_passphrase(&mut self, passphrase: SecretString) {
        self.passphrase = Some(PassphraseIdentity::new(passphrase));
        self.sources.push("a passphrase".into());
    }

    /// Opens an age stream (`input` at its start) for reading: parses the header (at most [`AGE_HEADER_MAX`]
    /// bytes) and unwraps the file key. `label` names the archive in errors. The reader seeks when `input` does.
    pub fn open<R: Read>(&self, input: R, label: &str) -> Result<Decrypting<R>, CryptError> {
        let dec = decryptor(input).map_err(|e| CryptError::NotAge {
            archive: label.to_string(),
            detail: e.to_string(),
        })?;
        if dec.is_scrypt() {
            let Some(p) = &self.passphrase else {
                return Err(CryptError::NoIdentity {
                    archive: label.to_string(),
                    passphrase: "; it was encrypted to a passphrase: set DBACKUP_PASSPHRASE_FILE to a file \
                                 holding it, or run on a terminal to be asked",
                });
            };
            return dec
                .decrypt(std::iter::once(p as &dyn age::Identity))
                .map(Decrypting)
                .map_err(|e| match e {
                    age::DecryptError::DecryptionFailed
                    | age::DecryptError::KeyDecryptionFailed => CryptError::WrongPassphrase {
                        archive: label.to_string(),
                    },
                    other => CryptError::NotAge {
                        archive: label.to_string(),
                        detail: other.to_string(),
                    },
                });
        }
        if self.identities.is_empty() {
            return Err(CryptError::NoIdentity {
                archive: label.to_string(),
                passphrase: "",
            });
        }
        dec.decrypt(
            self.identities
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity),
        )
        .map(Decrypting)
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptError::NoMatchingIdentity {
                archive: label.to_string(),
                identities: self.describe(),
            },
            other => CryptError::NotAge {
                archive: label.to_string(),
                detail: other.to_string(),
            },
        })
    }
}

/// Whether a file name is that of an age-encrypted archive or index.
pub fn is_encrypted_name(name: &[u8]) -> bool {
    name.ends_with(AGE_SUFFIX.as_bytes())
}

/// age's scrypt identity, remembering the file keys it unwrapped: restore opens each encrypted file several times
/// (header checks, index, content), and scrypt costs about a second each time by design. The keys stay in memory,
/// zeroed when dropped, like the passphrase itself.
struct PassphraseIdentity {
    inner: age::scrypt::Identity,
    unwrapped: Mutex<Vec<(Vec<StanzaKey>, SecretKey)>>,
    /// How many times scrypt ran (for tests).
    derived: std::sync::atomic::AtomicUsize,
}

/// A stanza as a comparable value (age's `Stanza` is neither `Clone` nor `PartialEq`).
type StanzaKey = (String, Vec<String>, Vec<u8>);

/// An unwrapped file key, zeroed when dropped.
type SecretKey = SecretBox<[u8; FILE_KEY_BYTES]>;

fn stanza_keys(stanzas: &[Stanza]) -> Vec<StanzaKey> {
    stanzas
        .iter()
        .map(|s| (s.tag.clone(), s.args.clone(), s.body.clone()))
        .collect()
}

impl PassphraseIdentity {
    fn new(passphrase: SecretString) -> PassphraseIdentity {
        let mut inner = age::scrypt::Identity::new(passphrase);
        inner.set_max_work_factor(MAX_SCRYPT_LOG_N);
        PassphraseIdentity {
            inner,
            unwrapped: Mutex::new(Vec::new()),
            derived: Default::default(),
        }
    }
}

impl age::Identity for PassphraseIdentity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.unwrap_stanzas(std::slice::from_ref(stanza))
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        let mut cache = self.unwrapped.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = stanza_keys(stanzas);
        if let Some((_, key)) = cache.iter().find(|(s, _)| *s == wanted) {
            return Some(Ok(FileKey::new(Box::new(*key.expose_secret()))));
        }
        // age's own checks (a scrypt stanza must stand alone, the work factor bound) run on every new header.
        let key = self.inner.unwrap_stanzas(stanzas)?;
        self.derived
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(k) = &key {
            cache.push((wanted, SecretBox::new(Box::new(*k.expose_secret()))));
        }
        Some(key)
    }
}

/// Whether the age file read from `input` (at its start) is encrypted to a passphrase (scrypt); `None` when its
/// header cannot be parsed. Reads the header only.
pub fn is_passphrase_encrypted<R: Read>(input: R) -> Option<bool> {
    decryptor(input).ok().map(|d| d.is_scrypt())
}

/// The most bytes of an age header read before it must have ended (checked while reading): a recipient's stanza
/// is about 100 bytes (an ssh-rsa one up to about 700), so only a file that is not an archive dbackup wrote comes
/// near it. age itself reads a header without a bound, parsing it again whole for each line it adds: a drive's
/// endless header would hang the reader.
pub const AGE_HEADER_MAX: u64 = 64 << 10;

/// The stream a [`Decrypting`] reads: `input` behind a buffer (age reads a buffered header line by line), yielding
/// at most [`AGE_HEADER_MAX`] bytes (and a buffer's worth) until the header is read.
type Bounded<R> = io::BufReader<HeadBound<R>>;

/// age's decryptor of `input`, its header read within [`AGE_HEADER_MAX`] bytes.
fn decryptor<R: Read>(input: R) -> Result<age::Decryptor<Bounded<R>>, age::DecryptError> {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bounded = HeadBound {
        inner: input,
        left: AGE_HEADER_MAX + HEAD_BUFFER as u64,
        open: open.clone(),
    };
    let dec = age::Decryptor::new_buffered(io::BufReader::with_capacity(HEAD_BUFFER, bounded))?;
    open.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(dec)
}

/// The buffer age reads a header through (and, past it, the chunks: a read of a whole chunk bypasses it).
const HEAD_BUFFER: usize = 8 << 10;

/// A reader that yields at most `left` bytes until `open` is set (once the header is read), then all it has.
pub struct HeadBound<R> {
    inner: R,
    left: u64,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for HeadBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.open.load(std::sync::atomic::Ordering::Relaxed) {
            return self.inner.read(buf);
        }
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "its age header is longer than {}: it is not an archive dbackup wrote",
                    crate::stdx::bytes(AGE_HEADER_MAX)
                ),
            ));
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl<R: Seek> Seek for HeadBound<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// The plaintext of an age stream, read in order or (when its input seeks) with seeks that decrypt only the 64 KiB
/// chunk they land in, with age's errors told as what they mean for a backup.
pub struct Decrypting<R: Read>(StreamReader<Bounded<R>>);

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(age_read_error)
    }
}

impl<R: Read + Seek> Seek for Decrypting<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to).map_err(age_read_error)
    }
}

/// Turns age's terse stream errors into ones that say what they mean for a backup.
pub fn age_read_error(e: io::Error) -> io::Error {
    let text = e.to_string();
    let detail = if text.contains("decryption error") {
        "an encrypted chunk does not authenticate: the archive was altered or damaged (a flipped byte, or bytes \
         added at its end)"
            .to_string()
    } else if text.contains("last chunk") || text.contains("Last chunk") {
        // Found when the end is authenticated (seeking to it): a cut, a flipped byte in the final chunk, or bytes
        // added after it all look the same.
        "the encrypted archive's final chunk does not authenticate: it is truncated, damaged, or has bytes \
         added after its end"
            .to_string()
    } else if text.contains("truncated") || e.kind() == io::ErrorKind::UnexpectedEof {
        "the encrypted archive is truncated: its final chunk is missing".to_string()
    } else {
        return e;
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("age: {detail}"))
}

/// The variable naming the file a passphrase is read from, before any `passphrase_file`.
pub const PASSPHRASE_FILE_VAR: &str = "DBACKUP_PASSPHRASE_FILE";

/// The file a passphrase is read from: `$DBACKUP_PASSPHRASE_FILE`, else `file`; none means the terminal.
pub fn passphrase_source(file: Option<&Path>) -> Option<PathBuf> {
    std::env::var_os(PASSPHRASE_FILE_VAR)
        .map(PathBuf::from)
        .or_else(|| file.map(Path::to_path_buf))
}

/// Reads the passphrase to encrypt with: from a file as [`read_passphrase`] does, or typed twice on the terminal
/// (a typo in a passphrase typed once would make the backup unreadable).
pub fn read_new_passphrase(file: Option<&Path>) -> Result<SecretString, CryptError> {
    use age::secrecy::ExposeSecret;
    if passphrase_source(file).is_some() {
        return read_passphrase(file, "");
    }
    let first = read_passphrase(None, "passphrase to encrypt the backup with: ")?;
    let again = read_passphrase(None, "the same passphrase again: ")?;
    if first.expose_secret() != again.expose_secret() {
        return Err(CryptError::PassphraseMismatch);
    }
    Ok(first)
}

/// Reads a passphrase: from the file named by `DBACKUP_PASSPHRASE_FILE` (or `file`), else from the terminal.
/// Never from the command line or the environment itself, so it appears in no process listing.
pub fn read_passphrase(file: Option<&Path>, prompt: &str) -> Result<SecretString, CryptError> {
    let from_env = std::env::var_os(PASSPHRASE_FILE_VAR).map(PathBuf::from);
    if let Some(path) = from_env.as_deref().or(file) {
        let file = std::fs::File::open(path)
            .map_err(|e| CryptError::Passphrase(format!("{}: {e}", path.display())))?;
        // Like ssh with its keys: a secret others can read is refused, not used.
        let mode = file
            .metadata()
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(CryptError::Passphrase(format!(
                "{} can be read by other users (mode {:04o}); run `chmod 600 {}` and try again",
                path.display(),
                mode & 0o7777,
                path.display()
            )));
        }
        drop(file);
        let bytes = read_key_file(path)
            .map_err(|e| CryptError::Passphrase(format!("{}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(CryptError::Passphrase(format!(
                "{} is empty; its first line is the passphrase",
                path.display()
            )));
        }
        return Ok(SecretString::from(line.to_string()));
    }
    let p = rpassword::prompt_password(prompt).map_err(|e| {
        CryptError::Passphrase(format!(
            "{e}; without a terminal, set DBACKUP_PASSPHRASE_FILE to a file (mode 0600) holding it"
        ))
    })?;
    if p.is_empty() {
        return Err(CryptError::Passphrase("an empty passphrase".into()));
    }
    Ok(SecretString::from(p))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Cursor;

    fn fail<T>(r: Result<T, CryptError>) -> CryptError {
        match r {
            Ok(_) => panic!("opened"),
            Err(e) => e,
        }
    }

    pub(crate) fn pair() -> (String, age::x25519::Identity) {
        let id = age::x25519::Identity::generate();
        (id.to_public().to_string(), id)
    }

    pub(crate) fn encrypt(to: &EncryptTo, data: &[u8]) -> Vec<u8> {
        let mut w = to.writer(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    /// The plaintext of `ct` opened with `keys` (`name`: the file it came from).
    fn decrypt(keys: &Keys, ct: &[u8], name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        keys.open(Cursor::new(ct), name)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    pub(crate) fn keys_for(id: &age::x25519::Identity, dir: &Path) -> Keys {
        let path = dir.join("key.txt");
        std::fs::write(
            &path,
            format!("# test\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        let mut k = Keys::new();
        k.add_identity_file(&path).unwrap();
        k
    }

    #[test]
    fn recipients_parse_and_refuse_secrets() {
        let (pk, _) = pair();
        assert_eq!(pk.parse::<Recipient>().unwrap().text(), pk);
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        assert_eq!(
            ssh.parse::<Recipient>().unwrap().text(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN"
        );
        let secret = age::x25519::Identity::generate().to_string();
        let e = secret
            .expose_secret()
            .parse::<Recipient>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret age identity") && !e.contains(&secret.expose_secret()[15..]),
            "{e}"
        );
        assert!("age1nope".parse::<Recipient>().is_err());
        // Neither an ssh private key nor what may be a misplaced passphrase is echoed.
        let e = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
            .parse::<Recipient>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret") && !e.contains("b3BlbnNz"), "{e}");
        let e = "correct horse battery staple"
            .parse::<Recipient>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"correc...\"") && !e.contains("horse"), "{e}");
        assert!(
            "gpg:1234"
                .parse::<Recipient>()
                .unwrap_err()
                .to_string()
                .contains("unknown key type")
        );
    }

    #[test]
    fn the_length_estimate_bounds_the_ciphertext() {
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAACAQDan23UVqPgTgYy+Ja9eBNzT3MHJPEaiNEq5At09+GMc8UW8WkFDBVtO3gbLJZIsLX/Crv4HnagPhvHvINNjJoyTcacQCxPD39pPlTbVV7HeJZpfhzhL57F1QSVCpxwA5Hlgl6zpGRCV+Y1BKJ95Y9acByk3bb91yS4abg8Lgyxi7Z/ibHcxqvEUbA0LzHAE7DXIKscPlJxe0J7EG9AQTUjofgC+uYKW6PSGEIQTzNdpkhfDv+9yXOwid9DrQK3tgJHF8qwx98iHE+yzprSsd3pkfbz1gN4WZJZlUxGiAMYdln+N1iteREAtXPdRZZpKG4RhpaXzrXLM7yRR5Z9jppQxsZ219ZttO0OTLqLsdPcTaS5djcpRmKomqPpui3qkYhlCUfdHDlb8PZk9tYD50941GHCuXknALVGHsiyfzpUyhC9vVMqqE52wHOYbGjl1NDMdNtktzT6b3RkXNpaeBwlmNg5zCyHSxPb3m3vckmYjTZTEFqYORbkfjNXYGi/910MEryIOpZZqc8ObCFvs8otPNptMkTSaLnCpIQ/YgbfYLx8P8cZsK1cxlQ1Qq6eaShAJSxKdPFmbnw353RO/OexAVx+c2ZvHuXQJJzPakePK3BRoHnEZbZydfSqaIkEWoE2Oz+ABsM0/3lqVcYmZaNNzxgCdX7oxw8IERKAHsOeLQ==";
        for to in [
            EncryptTo::Recipients(vec![pair().0.parse().unwrap(), rsa.parse().unwrap()]),
            EncryptTo::Passphrase(SecretString::from("p".to_string())),
        ] {
            let n = match &to {
                EncryptTo::Recipients(r) => r.len(),
                EncryptTo::Passphrase(_) => 0,
            };
            for len in [0usize, 1, 65_536, 65_537, 300_000] {
                let ct = encrypt(&to, &vec![1u8; len]).len() as u64;
                let bound = encrypted_len(len as u64, n);
                assert!(
                    ct <= bound && bound - ct < 2048 * n.max(1) as u64,
                    "{len}: {ct} > {bound}"
                );
            }
        }
    }

    #[test]
    fn an_unfinished_stream_never_reads_as_complete() {
        // A run that fails mid-archive drops the writer without `finish`: what reached the drive must not decrypt
        // to a shorter archive that looks whole, at any length.
        let dir = tempfile::tempdir().unwrap();
        let (pk, id) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let keys = keys_for(&id, dir.path());
        for len in [0usize, 10, 65_536, 65_537, 200_000] {
            let mut out = Vec::new();
            let mut w = to.writer(&mut out).unwrap();
            w.write_all(&vec![3u8; len]).unwrap();
            w.flush().unwrap();
            drop(w);
            let read = keys
                .open(Cursor::new(&out), "u.tar.age")
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    let mut plain = Vec::new();
                    r.read_to_end(&mut plain).map_err(|e| e.to_string())
                });
            assert!(read.is_err(), "{len} bytes written, unfinished: {read:?}");
        }
    }

    #[test]
    fn a_recipients_file_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let (pk, _) = pair();
        let p = dir.path().join("r.txt");
        std::fs::write(&p, format!("# mine\n\n{pk}\nnot-a-key\n")).unwrap();
        let e = read_recipients_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        std::fs::write(&p, format!("# mine\n{pk}\n")).unwrap();
        assert_eq!(read_recipients_file(&p).unwrap().len(), 1);
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(matches!(
            read_recipients_file(&p),
            Err(CryptError::NoRecipients { .. })
        ));
    }

    #[test]
    fn round_trip_with_seeks_into_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let (pk, id) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let ct = encrypt(&to, &data);
        let keys = keys_for(&id, dir.path());
        let mut r = keys.open(Cursor::new(&ct), "t.tar.age").unwrap();
        for &at in &[200_000u64, 5, 65_536, 131_071, 299_999] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut b = [0u8; 1];
            r.read_exact(&mut b).unwrap();
            assert_eq!(b[0], data[at as usize], "at {at}");
        }
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), data.len() as u64);
    }

    /// An age header that goes on and on (a drive's `data.index.age` of 20 MiB of stanza lines, or one endless
    /// line) is refused once it passes [`AGE_HEADER_MAX`], at once and within bounded memory; a header as long as
    /// many recipients make one still opens. Before: age read and re-parsed the header whole for every line it
    /// added, so `ls`, `find` and `restore --verify` of such a drive hung (64 KiB took 11 s, 256 KiB over 2 min).
    #[test]
    fn an_endless_age_header_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_, id) = pair();
        let keys = keys_for(&id, dir.path());
        let line = format!("{}\n", "A".repeat(64));
        let stanzas = format!("age-encryption.org/v1\n-> X25519 {}\n", "A".repeat(43));
        let endless =
            Cursor::new(stanzas.clone().into_bytes()).chain(std::io::repeat(b'A').take(1 << 30));
        let lines = Cursor::new(format!("{stanzas}{}", line.repeat((20 << 20) / 65)).into_bytes());
        for (what, input) in [
            ("one endless line", Box::new(endless) as Box<dyn Read>),
            ("20 MiB of lines", Box::new(lines)),
        ] {
            let e = fail(keys.open(input, "d.index.age"));
            assert!(matches!(e, CryptError::NotAge { .. }), "{what}: {e}");
            assert!(e.to_string().contains("longer than"), "{what}: {e}");
        }
        // Fifty recipients: a long header, still opened.
        let many: Vec<Recipient> = (0..50).map(|_| pair().0.parse().unwrap()).collect();
        let mut to = many;
        to.push(id.to_public().to_string().parse().unwrap());
        let ct = encrypt(&EncryptTo::Recipients(to), b"hello");
        assert_eq!(decrypt(&keys, &ct, "m.tar.age"), b"hello");
    }

    #[test]
    fn opening_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (pk, _) = pair();
        let (_, other) = pair();
        let ct = encrypt(&EncryptTo::Recipients(vec![pk.parse().unwrap()]), b"hello");
        let e = fail(Keys::new().open(Cursor::new(&ct), "x.tar.age"));
        assert!(matches!(e, CryptError::NoIdentity { .. }), "{e}");
        let e = fail(keys_for(&other, dir.path()).open(Cursor::new(&ct), "x.tar.age"));
        assert!(matches!(e, CryptError::NoMatchingIdentity { .. }), "{e}");
        assert!(e.to_string().contains("x.tar.age"));
        let e = fail(
            keys_for(&other, dir.path()).open(Cursor::new(b"plain tar".to_vec()), "y.tar.age"),
        );
        assert!(matches!(e, CryptError::NotAge { .. }), "{e}");
    }

    #[test]
    fn a_passphrase_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_passphrase(Some(&p), "").unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains("correct horse"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_passphrase(Some(&p), "").unwrap().expose_secret(),
            "correct horse"
        );
    }

    #[test]
    fn passphrase_round_trip_and_wrong_passphrase() {
        let to = EncryptTo::Passphrase(SecretString::from("correct horse".to_string()));
        assert!(to.record().passphrase && to.record().recipients.is_empty());
        let ct = encrypt(&to, b"secret data");
        let mut k = Keys::new();
        k.add_passphrase(SecretString::from("correct horse".to_string()));
        assert_eq!(decrypt(&k, &ct, "p.age"), b"secret data");
        // Opened again (restore opens each file several times): scrypt ran once.
        k.open(Cursor::new(&ct), "p.age").unwrap();
        let derived = k
            .passphrase
            .as_ref()
            .unwrap()
            .derived
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(derived, 1);
        let mut wrong = Keys::new();
        wrong.add_passphrase(SecretString::from("battery staple".to_string()));
        assert!(matches!(
            wrong.open(Cursor::new(&ct), "p.age"),
            Err(CryptError::WrongPassphrase { .. })
        ));
        let e = fail(Keys::new().open(Cursor::new(&ct), "p.age"));
        assert!(e.to_string().contains("passphrase"), "{e}");
    }

    /// An age stream's head (header and nonce, as a bucket's `backup.json` records it) round-trips through base64
    /// within its bound; a longer one is not recorded; a record too long, not base64 or not an age header is
    /// refused before it is decoded or used. The head of a real stream is exactly what precedes its first chunk.
    #[test]
    fn an_age_head_is_recorded_within_its_bound_and_checked_when_read() {
        let (pk, _) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let empty = encrypt(&to, b"");
        // An empty stream is its head and one empty final chunk (16 bytes of tag).
        let head = &empty[..empty.len() - 16];
        let text = encode_head(head).unwrap();
        assert_eq!(decode_head(&text).unwrap(), head);
        // A few hundred bytes: age may add a random "grease" stanza, so not an exact size.
        assert!(head.len() < 1024, "{} bytes", head.len());
        assert_eq!(encode_head(&[b'a'; AGE_HEAD_MAX + 1]), None);
        assert_eq!(encode_head(b""), None);
        let too_long = "A".repeat(data_encoding::BASE64.encode_len(AGE_HEAD_MAX) + 4);
        assert!(decode_head(&too_long).unwrap_err().contains("more than"));
        assert!(
            decode_head("not base64!")
                .unwrap_err()
                .contains("not base64")
        );
        let other = data_encoding::BASE64.encode(b"PK\x03\x04 a zip");
        assert!(
            decode_head(&other)
                .unwrap_err()
                .contains("not an age header")
        );
    }
}
