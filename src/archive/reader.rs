//! Reading archives back: an archive on disk as one seekable stream (a single file or its numbered parts), read as
//! its plaintext ([`ArchiveReader`], decrypting through `crypt::Decrypting`), and (for the unit tests and proptests)
//! reading one file from it with a single seek through the index.

use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crypt::{CryptError, Decrypting, Keys, is_encrypted_name};
use super::sink::{MAX_PARTS, SplitSink};
use crate::stdx::fs::Dir;
#[cfg(test)]
use {
    super::index::IndexEntry,
    super::sink::Digest,
    super::sparse::{self, SparseLoc, TarSparse},
    super::tarfmt::EntryKind,
    sha2::{Digest as _, Sha256},
    std::io::Write,
};

/// Objects read from somewhere other than a local directory (a cloud destination's bucket): each part is opened by
/// its name, with seeking (a seek then a read is one ranged request).
pub trait Remote: Send + Sync + std::fmt::Debug {
    /// Opens the part `name` of `len` bytes (as recorded).
    fn open(&self, name: &Path, len: u64) -> io::Result<Box<dyn ReadSeek>>;

    /// The next reads of part `name` cover `range` (a restore about to read one entry's header and content): a
    /// remote part may fetch it in one request.
    fn expect(&self, _name: &Path, _range: std::ops::Range<u64>) {}

    /// The first bytes of part `name` as recorded beside it (an age stream's header and payload nonce), read
    /// instead of the part's own; none when not recorded.
    fn head(&self, _name: &Path) -> Option<Arc<Vec<u8>>> {
        None
    }

    /// Part `name` for messages: where it is (a bucket's object under its backup's directory, so the backup is
    /// named as a drive's path names it).
    fn label(&self, name: &Path) -> String {
        name.display().to_string()
    }
}

/// The bytes of an age file that hold the plaintext bytes `plain`: the 64 KiB chunks (each stored with its 16-byte
/// tag) that cover it, behind the header, whose length is not known here: the range starts as if it had none and
/// ends as if it had [`AGE_HEADER_SLACK`] bytes (a hint may cover a little more than needed, never less than what
/// a header of that size allows).
pub fn age_stored_range(plain: std::ops::Range<u64>) -> std::ops::Range<u64> {
    const CHUNK: u64 = 64 << 10;
    const STORED: u64 = CHUNK + 16;
    let first = plain.start / CHUNK;
    let last = plain.end.max(plain.start + 1).div_ceil(CHUNK);
    first.saturating_mul(STORED)
        ..last
            .saturating_mul(STORED)
            .saturating_add(16 + AGE_HEADER_SLACK)
}

/// The most header bytes [`age_stored_range`] allows for (an X25519 recipient's stanza is about 100 bytes, an ssh
/// one up to about 600).
const AGE_HEADER_SLACK: u64 = 16 << 10;

/// What a part is read through: a local file, or a remote object's reader.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// The file(s) holding one archive: `name` itself, or `name.part000`, `name.part001`, ... joined in order.
/// A name ending in `.age` is encrypted: [`ArchiveFiles::open`] decrypts it with the keys given by
/// [`ArchiveFiles::with_keys`].
#[derive(Debug, Clone)]
pub struct ArchiveFiles {
    /// Each file with its length, in stream order.
    pub parts: Vec<(PathBuf, u64)>,
    /// The identities that decrypt it, when it is encrypted.
    pub keys: Option<Arc<Keys>>,
    /// Where the parts are read from when they are not local files (the parts' paths are then object names).
    pub remote: Option<Arc<dyn Remote>>,
    /// Each part is an age stream of its own holding this many plaintext bytes (the last one at most this many):
    /// a bucket's encrypted archive (`<set>.tar.part000.age`, ...), so an upload of it can resume part by part.
    pub plain_part: Option<u64>,
}

impl PartialEq for ArchiveFiles {
    fn eq(&self, other: &ArchiveFiles) -> bool {
        self.parts == other.parts
    }
}
impl Eq for ArchiveFiles {}

impl ArchiveFiles {
    /// Finds archive `name` in `dir`: the file itself, or its consecutive parts from `.part000`. `name` must be a
    /// plain file name, and every file a regular file (a symlink, a FIFO or a device is refused, never opened).
    pub fn discover(dir: &Path, name: impl AsRef<OsStr>) -> io::Result<ArchiveFiles> {
        let name = name.as_ref();
        let bytes = name.as_encoded_bytes();
        if bytes.is_empty()
            || bytes.contains(&b'/')
            || bytes.contains(&0)
            || bytes == b"."
            || bytes == b".."
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a plain file name: an archive is a file in the backup's own directory",
                    crate::stdx::show(bytes)
                ),
            ));
        }
        let d = Dir::open(dir)?;
        // The length of a regular file there; `None` when there is nothing by that name.
        let regular = |n: &OsStr| -> io::Result<Option<u64>> {
            match d.open_file(n) {
                Ok(f) => Ok(Some(f.metadata()?.len())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            }
        };
        let single = dir.join(name);
        let first_part = SplitSink::part_path(dir, name, 0);
        let part_name = |n: usize| {
            let mut p = name.to_os_string();
            p.push(format!(".part{n:03}"));
            p
        };
        match (regular(name)?, regular(&part_name(0))?) {
            (Some(len), None) => Ok(ArchiveFiles {
                parts: vec![(single, len)],
                keys: None,
                remote: None,
                plain_part: None,
            }),
            (None, Some(_)) => {
                let mut parts = Vec::new();
                for n in 0..MAX_PARTS {
                    match regular(&part_name(n))? {
                        Some(len) => parts.push((SplitSink::part_path(dir, name, n), len)),
                        None => break,
                    }
                }
                Ok(ArchiveFiles {
                    parts,
                    keys: None,
                    remote: None,
                    plain_part: None,
                })
            }
            (Some(_), Some(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "both {} and {} exist; an archive is either one file or parts, not both",
                    single.display(),
                    first_part.display()
                ),
            )),
            (None, None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no archive {} (nor {}): no such file",
                    single.display(),
                    first_part.display()
                ),
            )),
        }
    }

    /// Remote objects (names and lengths in stream order), read through `remote`.
    pub fn remote(parts: Vec<(PathBuf, u64)>, remote: Arc<dyn Remote>) -> ArchiveFiles {
        ArchiveFiles {
            parts,
            keys: None,
            remote: Some(remote),
            plain_part: None,
        }
    }

    /// The same files, each an age stream of its own of `plain` plaintext bytes (the last one at most that):
    /// [`ArchiveFiles::open`] decrypts part by part, a seek opening only the part that holds the target.
    pub fn with_plain_parts(mut self, plain: Option<u64>) -> ArchiveFiles {
        self.plain_part = plain.filter(|p| *p > 0);
        self
    }

    /// The file name of the first file (for messages): `data.tar` or `data.tar.part*`.
    pub fn label(&self) -> String {
        let shown = |p: &Path| match &self.remote {
            Some(r) => r.label(p),
            None => p.display().to_string(),
        };
        match self.parts.as_slice() {
            [(p, _)] => shown(p),
            [(p, _), ..] => shown(p).replace(".part000", ".part*"),
            [] => "(no files)".into(),
        }
    }

    /// Whether the parts are a remote destination's objects (each read a request), not local files.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The length of the joined stream.
    pub fn len(&self) -> u64 {
        self.parts.iter().fold(0u64, |t, p| t.saturating_add(p.1))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that decrypt this archive (kept only when it is encrypted).
    pub fn with_keys(mut self, keys: Option<Arc<Keys>>) -> ArchiveFiles {
        self.keys = keys.filter(|_| self.encrypted());
        self
    }

    /// Whether this archive is age-encrypted (its name ends in `.age`).
    pub fn encrypted(&self) -> bool {
        let Some((first, _)) = self.parts.first() else {
            return false;
        };
        if self.plain_part.is_some() {
            return is_encrypted_name(first.as_os_str().as_encoded_bytes());
        }
        let name = first.file_name().unwrap_or_default().as_encoded_bytes();
        let base = match name.len().checked_sub(".part000".len()) {
            Some(n) if self.parts.len() > 1 || name[n..].starts_with(b".part") => &name[..n],
            _ => name,
        };
        is_encrypted_name(base)
    }

    /// Opens the joined stream as its plaintext: decrypted when the archive is encrypted (an error naming the
    /// archive when no key or no matching key was given, or its header is damaged).
    /// The next reads of a remote archive cover the plaintext bytes `range` (a restore about to read one entry's
    /// header and content): each part concerned is told its share of the stored bytes (for an encrypted archive,
    /// the age chunks holding the range: [`age_stored_range`], in each part's own stream when the parts are
    /// streams of their own), so it can fetch it in one request. Local archives: nothing.
    pub fn expect(&self, range: std::ops::Range<u64>) {
        let Some(remote) = &self.remote else { return };
        if let (Some(plain), true) = (self.plain_part, self.encrypted()) {
            // Each part its own age stream of `plain` plaintext bytes: each part concerned, its own chunks.
            for (k, (name, _)) in (0u64..).zip(&self.parts) {
                let start = k.saturating_mul(plain);
                let end = start.saturating_add(plain);
                if range.start < end && range.end > start {
                    remote.expect(
                        name,
                        age_stored_range(
                            range.start.max(start) - start..range.end.min(end) - start,
                        ),
                    );
                }
            }
            return;
        }
        let range = if self.encrypted() {
            age_stored_range(range)
        } else {
            range
        };
        let mut start = 0u64;
        for (name, len) in &self.parts {
            let end = start.saturating_add(*len);
            if range.start < end && range.end > start {
                remote.expect(
                    name,
                    range.start.max(start) - start..range.end.min(end) - start,
                );
            }
            start = end;
        }
    }

    pub fn open(&self) -> io::Result<ArchiveReader> {
        if let (Some(plain), true) = (self.plain_part, self.encrypted()) {
            return Ok(ArchiveReader::AgeParts(Box::new(AgeParts::new(
                self.clone(),
                plain,
            ))));
        }
        let raw = self.open_raw()?;
        if !self.encrypted() {
            return Ok(ArchiveReader::Plain(raw));
        }
        let label = self.label();
        let keys = match &self.keys {
            Some(k) => k.as_ref(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    CryptError::NoIdentity {
                        archive: label,
                        passphrase: "",
                    },
                ));
            }
        };
        keys.open(raw, &label)
            .map(|r| ArchiveReader::Age(Box::new(r)))
            .map_err(|e| {
                let kind = match e {
                    CryptError::NotAge { .. } => io::ErrorKind::InvalidData,
                    _ => io::ErrorKind::PermissionDenied,
                };
                io::Error::new(kind, e)
            })
    }

    /// Authenticates the age header of each remote part whose head is recorded beside it ([`Remote::head`]) with
    /// the keys: no request, and a recorded head that was altered (or keys that do not fit) stops a restore before
    /// it writes anything. (The payload nonce in the head is authenticated by the first chunk read with it.)
    pub fn check_recorded_heads(&self) -> io::Result<()> {
        let (Some(remote), Some(keys)) = (&self.remote, &self.keys) else {
            return Ok(());
        };
        for (name, _) in &self.parts {
            let Some(head) = remote.head(name) else {
                continue;
            };
            let label = name.display().to_string();
            keys.open(io::Cursor::new(head.as_slice()), &label)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{e} (its age header as backup.json records it, age_head: with the right identity, \
                             backup.json or the object was altered)"
                        ),
                    )
                })?;
        }
        Ok(())
    }

    /// Opens the joined stream as it is on the drive (the ciphertext of an encrypted archive).
    pub fn open_raw(&self) -> io::Result<PartsReader> {
        let mut r = PartsReader::new(self.parts.clone())?;
        r.remote = self.remote.clone();
        Ok(r)
    }
}

/// Where a seek `to` from `pos` lands in a stream of `total()` bytes (asked only for [`SeekFrom::End`]).
fn seek_target(to: SeekFrom, pos: u64, total: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
    match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => total()?.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    }
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek before the start of the archive",
        )
    })
}

/// The reader of an archive as its plaintext: the files themselves, or their decryption. Seeking in an encrypted
/// archive decrypts only the 64 KiB chunk that holds the target; every chunk is authenticated before any of its
/// bytes are returned, and a damaged chunk, a missing final chunk or trailing bytes are read errors.
pub enum ArchiveReader {
    Plain(PartsReader),
    Age(Box<Decrypting<PartsReader>>),
    /// Parts that are age streams of their own (a bucket's `<set>.tar.partNNN.age`).
    AgeParts(Box<AgeParts>),
}

impl ArchiveReader {
    /// Whether this reader decrypts.
    pub fn encrypted(&self) -> bool {
        matches!(self, ArchiveReader::Age(_) | ArchiveReader::AgeParts(_))
    }
}

impl Read for ArchiveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ArchiveReader::Plain(r) => r.read(buf),
            ArchiveReader::Age(r) => r.read(buf),
            ArchiveReader::AgeParts(r) => r.read(buf),
        }
    }
}

impl Seek for ArchiveReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match self {
            ArchiveReader::Plain(r) => r.seek(to),
            ArchiveReader::Age(r) => r.seek(to),
            ArchiveReader::AgeParts(r) => r.seek(to),
        }
    }
}

/// An archive whose parts are age streams of their own (`<set>.tar.part000.age`, ...), each of `plain` plaintext
/// bytes but the last: read as one plaintext stream, a seek opening (and authenticating) only the part that holds
/// the target. Decrypting them one after the other and joining the plaintexts gives the tar stream.
pub struct AgeParts {
    files: ArchiveFiles,
    plain: u64,
    pos: u64,
    /// The plaintext length, once asked for (the last part opened to its end).
    total: Option<u64>,
    open: Option<(usize, Box<ArchiveReader>)>,
}

impl AgeParts {
    fn new(files: ArchiveFiles, plain: u64) -> AgeParts {
        AgeParts {
            files,
            plain,
            pos: 0,
            total: None,
            open: None,
        }
    }

    /// Part `i` alone, decrypted.
    fn open_part(&self, i: usize) -> io::Result<Box<ArchiveReader>> {
        let one = ArchiveFiles {
            parts: vec![self.files.parts[i].clone()],
            keys: self.files.keys.clone(),
            remote: self.files.remote.clone(),
            plain_part: None,
        };
        one.open().map(Box::new)
    }

    fn total(&mut self) -> io::Result<u64> {
        if let Some(t) = self.total {
            return Ok(t);
        }
        let Some(last) = self.files.parts.len().checked_sub(1) else {
            return Ok(0);
        };
        let len = self.open_part(last)?.seek(SeekFrom::End(0))?;
        let t = (last as u64)
            .checked_mul(self.plain)
            .and_then(|s| s.checked_add(len))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "parts too large"))?;
        self.total = Some(t);
        Ok(t)
    }
}

impl Read for AgeParts {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let i = usize::try_from(self.pos / self.plain).unwrap_or(usize::MAX);
        if i >= self.files.parts.len() {
            return Ok(0);
        }
        let within = self.pos - i as u64 * self.plain;
        if self.open.as_ref().map(|o| o.0) != Some(i) {
            let mut r = self.open_part(i)?;
            if within > 0 {
                r.seek(SeekFrom::Start(within))?;
            }
            self.open = Some((i, r));
        }
        let r = &mut self.open.as_mut().expect("opened").1;
        let want = buf
            .len()
            .min((self.plain - within).min(usize::MAX as u64) as usize);
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            // A part that ends before its plaintext size: only the last may.
            if i + 1 < self.files.parts.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {within} bytes, not {}: the parts do not join",
                        self.files.parts[i].0.display(),
                        self.plain
                    ),
                ));
            }
            return Ok(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for AgeParts {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = seek_target(to, self.pos, || self.total())?;
        if new != self.pos {
            let part = usize::try_from(new / self.plain).unwrap_or(usize::MAX);
            let kept = match &mut self.open {
                Some((i, r)) if *i == part => r.seek(SeekFrom::Start(new % self.plain)).is_ok(),
                _ => false,
            };
            if !kept {
                self.open = None;
            }
            self.pos = new;
        }
        Ok(new)
    }
}

/// Several files read as one stream, with seeking.
pub struct PartsReader {
    parts: Vec<(PathBuf, u64)>,
    starts: Vec<u64>,
    total: u64,
    pos: u64,
    open: Option<(usize, Box<dyn ReadSeek>)>,
    remote: Option<Arc<dyn Remote>>,
}

impl PartsReader {
    pub fn new(parts: Vec<(PathBuf, u64)>) -> io::Result<PartsReader> {
        let mut starts = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for (path, len) in &parts {
            starts.push(total);
            total = total.checked_add(*len).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the parts add up to more bytes than a stream can have",
                        path.display()
                    ),
                )
            })?;
        }
        Ok(PartsReader {
            parts,
            starts,
            total,
            pos: 0,
            open: None,
            remote: None,
        })
    }

    fn part_at(&self, pos: u64) -> usize {
        self.starts.partition_point(|s| *s <= pos).saturating_sub(1)
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.total || self.parts.is_empty() {
            return Ok(0);
        }
        let i = self.part_at(self.pos);
        let within = self.pos - self.starts[i];
        let len = self.parts[i].1;
        if self.open.as_ref().map(|o| o.0) != Some(i) {
            // Never through a symlink, and only a regular file (or a remote object).
            let mut f: Box<dyn ReadSeek> = match &self.remote {
                Some(r) => r.open(&self.parts[i].0, len)?,
                None => Box::new(crate::stdx::fs::open_regular(&self.parts[i].0)?),
            };
            f.seek(SeekFrom::Start(within))?;
            self.open = Some((i, f));
        }
        let f = &mut self.open.as_mut().expect("opened").1;
        let want = buf.len().min((len - within) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} is shorter than when it was opened",
                    self.parts[i].0.display()
                ),
            ));
        }
        self.pos += n as u64;
        if self.pos - self.starts[i] == len {
            self.open = None;
        }
        Ok(n)
    }
}

impl Seek for PartsReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = seek_target(to, self.pos, || Ok(self.total))?;
        if new != self.pos {
            self.pos = new;
            // Within the part already open, that reader seeks (a remote one keeps what it has read ahead, and
            // its read-ahead, instead of starting over); elsewhere the part is opened on the next read.
            let part = self.part_at(new);
            let kept = match &mut self.open {
                Some((i, f)) if *i == part && new < self.total => {
                    f.seek(SeekFrom::Start(new - self.starts[part])).is_ok()
                }
                _ => false,
            };
            if !kept {
                self.open = None;
            }
        }
        Ok(new)
    }
}

// Reading one entry by itself, with one seek through the index: the unit tests' and proptests' check of what the
// writer wrote. A restore reads through `restore::content`, which checks headers its own way.

#[cfg(test)]
/// Why one file could not be read back from an archive.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the archive: {0}")]
    Io(#[from] io::Error),
    #[error("{path} is a {kind}, not a file; only files have content to read")]
    NotAFile { path: String, kind: &'static str },
    #[error(
        "{path}: the archive header at offset {offset} does not match the index ({detail}); the archive or the index is damaged"
    )]
    Header {
        path: String,
        offset: u64,
        detail: String,
    },
    #[error("{path}: the archive ends after {got} of {expected} bytes; it is truncated")]
    Truncated {
        path: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "{path}: content sha256 is {actual}, the index says {expected}; the archive is damaged"
    )]
    Content {
        path: String,
        expected: Digest,
        actual: Digest,
    },
}

#[cfg(test)]
/// Largest header (pax records included) accepted when checking an entry's header.
const MAX_HEADER_BYTES: u64 = 1 << 20;

#[cfg(test)]
/// Writes the content of the file `entry` (a file or hard link from the archive's index) to `out`, reading it
/// with one seek to its header and one to its data. Checks that the header there names the same path and size,
/// and that the content's sha256 matches the index. On `Err`, what was written to `out` must be discarded
/// (write to a temporary file and rename it into place only on `Ok`). Returns the number of bytes written.
/// A sparse file's holes are written as zeros (`out` cannot seek; a restore recreates them).
pub fn read_entry<R: Read + Seek>(
    archive: &mut R,
    entry: &IndexEntry,
    out: &mut dyn Write,
) -> Result<u64, ReadError> {
    let path = entry.display_path();
    let (Some(expected), EntryKind::File | EntryKind::Hardlink) = (entry.sha256, entry.kind) else {
        return Err(ReadError::NotAFile {
            path,
            kind: entry.kind.name(),
        });
    };
    check_header(archive, entry)?;
    if let Some(record) = entry.sparse {
        return read_sparse(archive, entry, record, expected, out);
    }
    archive.seek(SeekFrom::Start(entry.data_offset))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let truncated = |got| ReadError::Truncated {
        path: path.clone(),
        got,
        expected: entry.size,
    };
    copy_out(
        archive,
        entry.size,
        &mut buf,
        Some(&mut hasher),
        out,
        &|e, got| match e {
            None => truncated(got),
            Some(e) if e.kind() == io::ErrorKind::UnexpectedEof => truncated(got),
            Some(e) => e.into(),
        },
    )?;
    same_content(path, expected, Digest::of(hasher))?;
    Ok(entry.size)
}

/// [`read_entry`] for a sparse member: the map and data are checked against the index's record as they are read
/// (and, from an older index, the content with its holes as zeros against its sha256).
#[cfg(test)]
fn read_sparse<R: Read + Seek>(
    archive: &mut R,
    entry: &IndexEntry,
    record: super::index::SparseRecord,
    expected: Digest,
    out: &mut dyn Write,
) -> Result<u64, ReadError> {
    let path = entry.display_path();
    let loc = SparseLoc::Indexed {
        data: entry.data_offset,
        stored: record.stored,
        size: entry.size,
        sha256: record.stored_sha256,
    };
    let damaged = |detail: String| ReadError::Header {
        path: path.clone(),
        offset: entry.header_offset,
        detail,
    };
    let (map, mut data) = sparse::open(archive, &loc).map_err(|e| match e {
        sparse::MapError::Io(e) => ReadError::Io(e),
        sparse::MapError::Bad(b) => damaged(b.to_string()),
    })?;
    // The stored bytes are checked by `sparse::open`'s reader; an index older than the stored digest gives the
    // logical content's sha256, checked here with the holes hashed as zeros.
    let mut hasher = (!entry.sha256_is_stored()).then(Sha256::new);
    fn write_zeros(n: u64, hasher: &mut Option<Sha256>, out: &mut dyn Write) -> io::Result<()> {
        let zeros = [0u8; 64 << 10];
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            if let Some(h) = hasher.as_mut() {
                h.update(&zeros[..k]);
            }
            out.write_all(&zeros[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for seg in map.segments() {
        write_zeros(seg.offset - at, &mut hasher, out)?;
        copy_out(
            &mut data,
            seg.len,
            &mut buf,
            hasher.as_mut(),
            out,
            &|e, got| match e {
                None => ReadError::Truncated {
                    path: path.clone(),
                    got: seg.offset + got,
                    expected: entry.size,
                },
                Some(e) if e.kind() == io::ErrorKind::InvalidData => damaged(e.to_string()),
                Some(e) => e.into(),
            },
        )?;
        at = seg.offset + seg.len;
    }
    write_zeros(entry.size - at, &mut hasher, out)?;
    if let Some(h) = hasher {
        same_content(path, expected, Digest::of(h))?;
    }
    Ok(entry.size)
}

/// Copies `len` bytes of `r` to `out` through `buf`, hashing them into `hasher` when there is one: the copy loop
/// of plain and sparse entries. `failed(error, got)` is the error for a read that ends early (`None`) or fails
/// after `got` bytes.
#[cfg(test)]
fn copy_out(
    r: &mut dyn Read,
    len: u64,
    buf: &mut [u8],
    mut hasher: Option<&mut Sha256>,
    out: &mut dyn Write,
    failed: &dyn Fn(Option<io::Error>, u64) -> ReadError,
) -> Result<(), ReadError> {
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => return Err(failed(None, len - left)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(Some(e), len - left)),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The content read (`actual`) is the one the index names, or the error naming the file.
#[cfg(test)]
fn same_content(path: String, expected: Digest, actual: Digest) -> Result<(), ReadError> {
    if actual != expected {
        return Err(ReadError::Content {
            path,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Parses the header blocks at the entry's header offset and compares them with the index.
#[cfg(test)]
fn check_header<R: Read + Seek>(archive: &mut R, entry: &IndexEntry) -> Result<(), ReadError> {
    let path = entry.display_path();
    let offset = entry.header_offset;
    let err = |detail: String| ReadError::Header {
        path: path.clone(),
        offset,
        detail,
    };
    let header_end = match entry.kind {
        EntryKind::File => entry.data_offset,
        // A hard link's data offset is its first name's; its own header is followed by no data. Read enough
        // for a pax header and the ustar header.
        _ => offset.saturating_add(MAX_HEADER_BYTES.min(8192)),
    };
    let len = header_end
        .checked_sub(offset)
        .filter(|l| *l >= 512 && *l <= MAX_HEADER_BYTES && l % 512 == 0)
        .ok_or_else(|| {
            err(format!(
                "header offset {offset} and data offset {} are inconsistent",
                entry.data_offset
            ))
        })?;
    archive.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(len as usize);
    archive.by_ref().take(len).read_to_end(&mut bytes)?;
    if entry.kind == EntryKind::File && bytes.len() as u64 != len {
        return Err(ReadError::Truncated {
            path,
            got: 0,
            expected: entry.size,
        });
    }
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut entries = ar.entries().map_err(|e| err(e.to_string()))?;
    let mut tar_entry = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(err(e.to_string())),
        None => return Err(err("no header there".into())),
    };
    let sparse = match sparse::inspect(&mut tar_entry) {
        Ok(TarSparse::No) => None,
        Ok(TarSparse::Pax(p)) if p.version == (1, 0) => Some(p),
        Ok(TarSparse::Bad(e)) => return Err(err(e.to_string())),
        Ok(_) => {
            return Err(err(
                "a sparse member in a format dbackup does not write".into()
            ));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let tar_path = match sparse.as_ref().and_then(|p| p.name.clone()) {
        Some(name) => name,
        None => tar_entry.path_bytes().into_owned(),
    };
    let tar_path = tar_path.strip_suffix(b"/").unwrap_or(&tar_path);
    if tar_path != entry.path.as_slice() {
        return Err(err(format!("it names {}", crate::stdx::show(tar_path))));
    }
    let kind = EntryKind::from_entry_type(tar_entry.header().entry_type());
    if kind != Some(entry.kind) {
        return Err(err(format!(
            "it is a {:?} entry",
            tar_entry.header().entry_type()
        )));
    }
    if entry.kind == EntryKind::File {
        let stored = entry.sparse.map(|r| r.stored);
        if sparse.as_ref().map(|_| tar_entry.size()) != stored {
            return Err(err(match stored {
                Some(_) => "the index says it is a sparse member, it is not".into(),
                None => "it is a sparse member, the index says it is not".into(),
            }));
        }
        let size = sparse.as_ref().map_or(tar_entry.size(), |p| p.size);
        let want = stored.unwrap_or(entry.size);
        if size != entry.size || tar_entry.size() != want {
            return Err(err(format!(
                "it has {size} bytes, the index {}",
                entry.size
            )));
        }
        if tar_entry.raw_file_position() != len {
            return Err(err(format!(
                "its data starts at {}",
                offset + tar_entry.raw_file_position()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::crypt::EncryptTo;
    use super::super::crypt::tests::{encrypt, keys_for, pair};
    use super::*;

    /// The stored range a restore hints for plaintext bytes (`reader::age_stored_range`) covers the chunks that
    /// hold them in a real age stream (its header's length measured), and little more.
    #[test]
    fn the_stored_range_of_plaintext_bytes_covers_their_chunks() {
        let (pk, _) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let len = 300_000u64;
        let ct = encrypt(&to, &vec![7u8; len as usize]).len() as u64;
        let chunks = len.div_ceil(65_536);
        let header = ct - (16 + len + 16 * chunks);
        for plain in [
            0..1u64,
            5..70_000,
            65_535..65_537,
            131_072..131_073,
            299_000..300_000,
        ] {
            let (first, last) = (plain.start / 65_536, plain.end.div_ceil(65_536));
            let start = header + 16 + first * 65_552;
            let end = (header + 16 + last * 65_552).min(ct);
            let hint = age_stored_range(plain.clone());
            assert!(
                hint.start <= start && end <= hint.end,
                "{plain:?}: chunks at {start}..{end}, hint {hint:?}"
            );
            // Beyond the chunks: the header's length (not known to the hint) and its slack, at most.
            assert!(
                hint.end - hint.start <= (last - first) * 65_552 + header + 16 + (16 << 10) + 16,
                "{plain:?}: {hint:?}"
            );
        }
    }

    /// Parts that are age streams of their own (a bucket's `<set>.tar.partNNN.age`) read as one plaintext stream:
    /// whole, after seeks into any part and across a boundary, and to the end; a short middle part is an error.
    #[test]
    fn parts_encrypted_one_by_one_read_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (pk, id) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let plain = 128 << 10;
        let write_parts = |data: &[u8]| -> ArchiveFiles {
            let mut parts = Vec::new();
            for (n, chunk) in data.chunks(plain).enumerate() {
                let p = dir.path().join(format!("a.tar.part{n:03}.age"));
                let ct = encrypt(&to, chunk);
                std::fs::write(&p, &ct).unwrap();
                parts.push((p, ct.len() as u64));
            }
            ArchiveFiles {
                parts,
                keys: None,
                remote: None,
                plain_part: None,
            }
            .with_plain_parts(Some(plain as u64))
            .with_keys(Some(std::sync::Arc::new(keys_for(&id, dir.path()))))
        };
        let files = write_parts(&data);
        assert!(files.encrypted());
        let mut r = files.open().unwrap();
        assert!(r.encrypted());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        for at in [0u64, 5, 131_071, 131_072, 200_000, 262_143, 299_990] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut buf = vec![0u8; 10];
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "at {at}");
            assert_eq!(buf[..n], data[at as usize..at as usize + n], "at {at}");
        }
        r.seek(SeekFrom::Start(131_060)).unwrap();
        let mut across = vec![0u8; 40];
        r.read_exact(&mut across).unwrap();
        assert_eq!(across, data[131_060..131_100]);
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), data.len() as u64);
        assert_eq!(r.read(&mut across).unwrap(), 0);

        // A middle part cut short (its own complete age stream, but too little plaintext).
        let mut files = write_parts(&data);
        let p = dir.path().join("short.tar.part000.age");
        let ct = encrypt(&to, &data[..plain - 10_000]);
        std::fs::write(&p, &ct).unwrap();
        files.parts[0] = (p, ct.len() as u64);
        let mut out = Vec::new();
        let e = files.open().unwrap().read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("the parts do not join"), "{e}");
    }

    #[test]
    fn damage_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let (pk, id) = pair();
        let to = EncryptTo::Recipients(vec![pk.parse().unwrap()]);
        let data = vec![7u8; 200_000];
        let ct = encrypt(&to, &data);
        let keys = keys_for(&id, dir.path());
        let read_all = |bytes: Vec<u8>| -> io::Result<Vec<u8>> {
            let files_dir = tempfile::tempdir().unwrap();
            let p = files_dir.path().join("a.age");
            std::fs::write(&p, &bytes).unwrap();
            let parts = PartsReader::new(vec![(p, bytes.len() as u64)]).unwrap();
            let mut r = ArchiveReader::Age(Box::new(keys.open(parts, "a.age").unwrap()));
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        };
        assert_eq!(read_all(ct.clone()).unwrap(), data);
        let mut flipped = ct.clone();
        let n = flipped.len();
        flipped[n / 2] ^= 1;
        let e = read_all(flipped).unwrap_err().to_string();
        assert!(e.contains("does not authenticate"), "{e}");
        let e = read_all(ct[..ct.len() - 100].to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("age:"), "{e}");
        let mut garbage = ct.clone();
        garbage.extend_from_slice(b"trailing garbage");
        assert!(read_all(garbage).is_err());
        // Cut exactly at a chunk boundary: the final chunk is missing.
        let header_len = ct.len() - (2 * (65_536 + 16) + (200_000 - 2 * 65_536) + 16);
        let e = read_all(ct[..header_len + 2 * (65_536 + 16)].to_vec()).unwrap_err();
        assert!(e.to_string().starts_with("age:"), "{e}");
    }
}
