//! Where archive bytes go: sinks that hash what reaches the drive (one file, or numbered parts of a bounded size),
//! and the pluggable stage (compression, encryption) that sits between tar and the sink.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::stdx::fs::Dir;

/// Drive writes are buffered to this size: the T9 is three times slower with 10 KiB writes than with 1 MiB ones.
pub const WRITE_BUFFER: usize = 1 << 20;

/// At most this many parts (`.part000` to `.part999`), so that `cat name.part*` joins them in order.
pub const MAX_PARTS: usize = 1000;

/// A sha256 digest; shown and stored as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of everything fed to `hasher`.
    pub fn of(hasher: Sha256) -> Digest {
        Digest(hasher.finalize().into())
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| format!("not a sha256 digest (64 hex digits): {s:?}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("not a sha256 digest (64 hex digits): {s:?}"))?;
        Ok(Digest(arr))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // What `Display` writes, without a String per digest (an index line holds one per file).
        let mut hex = [0u8; 64];
        data_encoding::HEXLOWER.encode_mut(&self.0, &mut hex);
        s.serialize_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One file a sink wrote, made durable, with the sha256 of its bytes as they were written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: Digest,
}

/// One file of a backup, as `backup.json` records it (a [`WrittenFile`] by its name inside the backup directory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// The file name inside the backup directory.
    pub name: String,
    pub bytes: u64,
    pub sha256: Digest,
    /// For an object that is an age stream of its own (a bucket's `<set>.tar.partNNN.age`): its first bytes, age's
    /// header and the payload nonce (base64, at most [`crate::archive::crypt::AGE_HEAD_MAX`] bytes), so a restore of
    /// one file reads only the chunks holding it, not the header first. Kept here, with the object it belongs to,
    /// as a hint: age authenticates it when it is used, and `restore --verify` compares it with the object's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_head: Option<String>,
}

/// The end of a write chain: it writes bytes to the drive, hashing each file it creates.
pub trait Sink: Write + Send {
    /// Flushes, fsyncs every file and the directory holding them, and says what was written.
    /// Only a finished sink is complete; one dropped without `finish` leaves files that must be thrown away.
    fn finish(self: Box<Self>) -> io::Result<Vec<WrittenFile>>;

    /// What this sink writes to, for messages: a path, or `name.part*`.
    fn describe(&self) -> String;

    /// Whether the bytes written all land in one file, so that the file's hash is the stream's hash.
    fn single_file(&self) -> bool;
}

/// A stage between tar and the sink, such as compression or encryption. The hashes in `verification.sha256` are
/// of the bytes that reach the drive, after the stage; the index and its offsets describe the tar stream before it.
pub trait Stage: Send + Sync {
    /// Wraps a sink; everything written to the result is transformed and passed on to `sink`.
    fn wrap(&self, sink: Box<dyn Sink>) -> io::Result<Box<dyn StageWriter>>;
}

/// A stage wrapped around a sink (see [`Stage`]).
pub trait StageWriter: Write + Send {
    /// Writes whatever the stage still holds (final chunk, trailer) and gives the sink back.
    fn finish(self: Box<Self>) -> io::Result<Box<dyn Sink>>;
}

/// A sink that runs on a thread of its own: what is written is passed on in [`WRITE_BUFFER`] blocks to the inner
/// sink on that thread. Behind a stage (age), the stage and the drive's hash then run on two threads instead of
/// one, which was the slowest of the pipeline. Dropped without [`Sink::finish`], the inner sink is dropped
/// unfinished too.
pub struct ThreadedSink {
    tx: Option<SyncSender<Option<Vec<u8>>>>,
    free: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<Vec<WrittenFile>>>>,
    describe: String,
    single: bool,
}

impl ThreadedSink {
    /// Starts the thread that writes to `inner`.
    pub fn spawn(mut inner: Box<dyn Sink>) -> io::Result<ThreadedSink> {
        const DEPTH: usize = 3;
        let describe = inner.describe();
        let single = inner.single_file();
        // `None` is the end: finish the inner sink. A closed channel without it abandons the sink.
        let (tx, rx) = sync_channel::<Option<Vec<u8>>>(DEPTH);
        let (free_tx, free) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("archive-sink".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Some(mut block) => {
                            inner.write_all(&block)?;
                            block.clear();
                            let _ = free_tx.try_send(block);
                        }
                        None => return inner.finish(),
                    }
                }
                Err(io::Error::other("the archive was abandoned before its end"))
            })?;
        Ok(ThreadedSink {
            tx: Some(tx),
            free,
            buf: Vec::with_capacity(WRITE_BUFFER),
            thread: Some(thread),
            describe,
            single,
        })
    }

    /// The thread's error, once it stopped.
    fn stopped(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the archive sink thread panicked"),
            _ => io::Error::other("the archive sink thread stopped"),
        }
    }

    fn send(&mut self, msg: Option<Vec<u8>>) -> io::Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(msg));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.stopped()),
        }
    }
}

impl Write for ThreadedSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(WRITE_BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITE_BUFFER {
            let next = self
                .free
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(WRITE_BUFFER));
            let full = std::mem::replace(&mut self.buf, next);
            self.send(Some(full))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for ThreadedSink {
    fn finish(mut self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.send(Some(rest))?;
        }
        self.send(None)?;
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the archive sink thread panicked")),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn single_file(&self) -> bool {
        self.single
    }
}

impl Drop for ThreadedSink {
    fn drop(&mut self) {
        // Unfinished (an error path): close the channel without the end, so the inner sink is never finished.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes to a file in whole [`WRITE_BUFFER`]s at offsets that are multiples of it, whatever sizes it is given
/// (age hands over 64 KiB + 16 byte chunks): on exFAT through FUSE, writes that start and end mid-cluster cost a
/// read-modify-write of the clusters they touch. Only the last write of the file is shorter. `flush` passes on
/// only whole buffers; the rest is written by [`BlockWriter::into_inner`].
struct BlockWriter<W: Write = File> {
    file: W,
    buf: Vec<u8>,
}

impl<W: Write> BlockWriter<W> {
    fn new(file: W) -> BlockWriter<W> {
        BlockWriter {
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    /// Writes what is buffered and gives the file back.
    fn into_inner(mut self) -> io::Result<W> {
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(self.file)
    }
}

impl<W: Write> Write for BlockWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= WRITE_BUFFER {
            // Whole buffers straight from the caller, no copy.
            let whole = data.len() / WRITE_BUFFER * WRITE_BUFFER;
            self.file.write_all(&data[..whole])?;
            return Ok(whole);
        }
        let n = data.len().min(WRITE_BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITE_BUFFER {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A file written under `path`, which must not exist yet.
pub struct FileSink {
    path: PathBuf,
    /// The directory holding it: created and fsynced through this handle, never through a symlink.
    dir: Dir,
    out: BlockWriter,
    hasher: Sha256,
    bytes: u64,
}

impl FileSink {
    /// Creates `path` (never overwriting an existing file).
    pub fn create(path: impl Into<PathBuf>) -> io::Result<FileSink> {
        let path = path.into();
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_os_string();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        FileSink::create_in(&Dir::open(parent)?, name)
    }

    /// Creates `name` in the open directory `dir` (never overwriting, never through a symlink).
    pub fn create_in(dir: &Dir, name: impl AsRef<OsStr>) -> io::Result<FileSink> {
        FileSink::create_in_with_mode(dir, name, 0o666)
    }

    /// [`FileSink::create_in`] with the new file's `mode` (0600 for a file only its owner may read).
    pub fn create_in_with_mode(
        dir: &Dir,
        name: impl AsRef<OsStr>,
        mode: u32,
    ) -> io::Result<FileSink> {
        let name = name.as_ref();
        let file = dir.create_file(name, mode)?;
        Ok(FileSink {
            path: dir.join(name),
            dir: dir.clone(),
            out: BlockWriter::new(file),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Sink for FileSink {
    fn finish(self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
        let FileSink {
            path,
            dir,
            out,
            hasher,
            bytes,
        } = *self;
        let file = out.into_inner()?;
        file.sync_all()?;
        drop(file);
        dir.fsync()?;
        Ok(vec![WrittenFile {
            path,
            bytes,
            sha256: Digest::of(hasher),
        }])
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn single_file(&self) -> bool {
        true
    }
}

/// Splits the stream into `<base>.part000`, `<base>.part001`, ... in `dir`, each at most `max_part_bytes`, for
/// filesystems with a file size limit (FAT32). `cat <base>.part* > <base>` joins them into the original stream.
pub struct SplitSink {
    dir: Dir,
    base: OsString,
    max_part_bytes: u64,
    current: Option<FileSink>,
    done: Vec<WrittenFile>,
}

impl SplitSink {
    /// A sink that writes parts of at most `max_part_bytes` (at least one byte) named after `base` in `dir`.
    #[cfg(test)]
    pub fn new(
        dir: impl Into<PathBuf>,
        base: impl Into<OsString>,
        max_part_bytes: u64,
    ) -> io::Result<SplitSink> {
        SplitSink::new_in(Dir::open(&dir.into())?, base, max_part_bytes)
    }

    /// `SplitSink::new` in an open directory: every part is created through `dir`, never through a symlink.
    pub fn new_in(
        dir: Dir,
        base: impl Into<OsString>,
        max_part_bytes: u64,
    ) -> io::Result<SplitSink> {
        if max_part_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "part size must be at least one byte",
            ));
        }
        Ok(SplitSink {
            dir,
            base: base.into(),
            max_part_bytes,
            current: None,
            done: Vec::new(),
        })
    }

    /// The path of part `n` of `base` in `dir`.
    pub fn part_path(dir: &Path, base: &std::ffi::OsStr, n: usize) -> PathBuf {
        let mut name = base.to_os_string();
        name.push(format!(".part{n:03}"));
        dir.join(name)
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(part) = self.current.take() {
            self.done.extend(Box::new(part).finish()?);
        }
        Ok(())
    }
}

impl Write for SplitSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|p| p.bytes >= self.max_part_bytes)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let n = self.done.len();
            if n >= MAX_PARTS {
                return Err(io::Error::other(format!(
                    "{}: more than {MAX_PARTS} parts of {} bytes; use a larger part size",
                    self.describe(),
                    self.max_part_bytes
                )));
            }
            let mut name = self.base.clone();
            name.push(format!(".part{n:03}"));
            self.current = Some(FileSink::create_in(&self.dir, name)?);
        }
        let part = self.current.as_mut().expect("a part is open");
        let room = (self.max_part_bytes - part.bytes).min(buf.len() as u64) as usize;
        part.write(&buf[..room])
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(p) => p.flush(),
            None => Ok(()),
        }
    }
}

impl Sink for SplitSink {
    fn finish(mut self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.done))
    }

    fn describe(&self) -> String {
        Self::part_path(self.dir.path(), &self.base, 0)
            .display()
            .to_string()
            .replace(".part000", ".part*")
    }

    fn single_file(&self) -> bool {
        false
    }
}

/// A write chain: an optional stage in front of a sink.
pub(crate) enum Chain {
    Plain(Box<dyn Sink>),
    Staged(Box<dyn StageWriter>),
}

impl Chain {
    pub(crate) fn new(sink: Box<dyn Sink>, stage: Option<&dyn Stage>) -> io::Result<Chain> {
        Ok(match stage {
            Some(stage) => Chain::Staged(stage.wrap(sink)?),
            None => Chain::Plain(sink),
        })
    }

    pub(crate) fn finish(self) -> io::Result<Vec<WrittenFile>> {
        match self {
            Chain::Plain(sink) => sink.finish(),
            Chain::Staged(stage) => stage.finish()?.finish(),
        }
    }
}

impl Write for Chain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Chain::Plain(s) => s.write(buf),
            Chain::Staged(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Chain::Plain(s) => s.write_all(buf),
            Chain::Staged(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Chain::Plain(s) => s.flush(),
            Chain::Staged(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_is_written_in_whole_buffers_whatever_the_sizes_given() {
        /// Records the size of every write it gets.
        struct Sizes(Vec<usize>);
        impl std::io::Write for Sizes {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.push(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = super::BlockWriter::new(Sizes(Vec::new()));
        let chunk = vec![1u8; 65_536 + 16]; // what age hands over
        for _ in 0..40 {
            std::io::Write::write_all(&mut w, &chunk).unwrap();
            std::io::Write::flush(&mut w).unwrap();
        }
        std::io::Write::write_all(&mut w, &vec![2u8; 3 * super::WRITE_BUFFER]).unwrap();
        let sizes = w.into_inner().unwrap().0;
        let total: usize = sizes.iter().sum();
        assert_eq!(total, 40 * chunk.len() + 3 * super::WRITE_BUFFER);
        let (last, whole) = sizes.split_last().unwrap();
        assert!(
            whole.iter().all(|&n| n % super::WRITE_BUFFER == 0),
            "{sizes:?}"
        );
        assert!(*last < super::WRITE_BUFFER);
    }

    use super::*;

    #[test]
    fn digest_round_trips_as_hex() {
        let d = Digest::of_bytes(b"abc");
        let hex = d.to_string();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex.parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
    }

    #[test]
    fn split_sink_cuts_parts_that_join_to_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut sink = Box::new(SplitSink::new(dir.path(), "x.tar", 3000).unwrap());
        sink.write_all(&data[..100]).unwrap();
        sink.write_all(&data[100..]).unwrap();
        let parts = sink.finish().unwrap();
        let sizes: Vec<u64> = parts.iter().map(|p| p.bytes).collect();
        assert_eq!(sizes, [3000, 3000, 3000, 1000]);
        let mut joined = Vec::new();
        for (n, p) in parts.iter().enumerate() {
            assert_eq!(p.path, dir.path().join(format!("x.tar.part{n:03}")));
            let bytes = std::fs::read(&p.path).unwrap();
            assert_eq!(Digest::of_bytes(&bytes), p.sha256);
            joined.extend(bytes);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn file_sink_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"old").unwrap();
        assert!(FileSink::create(&p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }
}
