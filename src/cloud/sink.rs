//! [`CloudSink`]: the archive writer's sink for a cloud destination. The stream goes straight from the writer
//! (tar, then age) to the bucket, with no staging copy on local disk: one object, or objects of a fixed part size
//! (`<name>.part000`, `.part001`, ... as on a FAT32 drive), each a streamed multipart upload whose parts carry a
//! CRC32C the server checks, and each hashed (sha256) on the way for `verification.sha256`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::archive::{Digest, Sink, WrittenFile};
use crate::cloud::{ObjectClass, Store, Upload};

/// At most this many objects per file (as [`crate::archive::MAX_PARTS`] on a drive), so `cat name.part*` joins them.
const MAX_PARTS: usize = 1000;

/// An object being written: its upload, its hash so far, its length so far.
struct Current {
    name: String,
    upload: Upload,
    hasher: Sha256,
    bytes: u64,
}

/// Writes a stream to `<dir><name>` in the bucket, or to `<dir><name>.partNNN` objects of `part_bytes` each.
pub struct CloudSink {
    store: Arc<Store>,
    dir: String,
    name: String,
    part_bytes: Option<u64>,
    class: ObjectClass,
    until: Option<DateTime<Utc>>,
    current: Option<Current>,
    done: Vec<WrittenFile>,
}

impl CloudSink {
    /// A sink writing under `dir` (a key prefix ending in `/`, relative to the destination's prefix).
    pub fn new(
        store: Arc<Store>,
        dir: &str,
        name: &str,
        part_bytes: Option<u64>,
        class: ObjectClass,
        until: Option<DateTime<Utc>>,
    ) -> CloudSink {
        CloudSink {
            store,
            dir: dir.to_string(),
            name: name.to_string(),
            part_bytes: part_bytes.filter(|p| *p > 0),
            class,
            until,
            current: None,
            done: Vec::new(),
        }
    }

    fn object_name(&self, n: usize) -> String {
        match self.part_bytes {
            Some(_) => format!("{}.part{n:03}", self.name),
            None => self.name.clone(),
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        let n = self.done.len();
        if n >= MAX_PARTS {
            return Err(io::Error::other(format!(
                "{}: more than {MAX_PARTS} parts",
                self.describe()
            )));
        }
        let name = self.object_name(n);
        let upload = self
            .store
            .upload(&format!("{}{name}", self.dir), self.class, self.until)
            .map_err(io::Error::other)?;
        self.current = Some(Current {
            name,
            upload,
            hasher: Sha256::new(),
            bytes: 0,
        });
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(c) = self.current.take() {
            let bytes = c.upload.finish().map_err(io::Error::other)?;
            debug_assert_eq!(bytes, c.bytes);
            self.done.push(WrittenFile {
                path: PathBuf::from(&c.name),
                bytes: c.bytes,
                sha256: Digest::of(c.hasher),
            });
        }
        Ok(())
    }
}

impl Write for CloudSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let (Some(max), Some(c)) = (self.part_bytes, &self.current)
            && c.bytes >= max
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let max = self.part_bytes.unwrap_or(u64::MAX);
        let c = self.current.as_mut().expect("an object is open");
        let room = (max - c.bytes).min(buf.len() as u64) as usize;
        let n = c.upload.write(&buf[..room])?;
        c.hasher.update(&buf[..n]);
        c.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for CloudSink {
    fn finish(mut self: Box<Self>) -> io::Result<Vec<WrittenFile>> {
        // An empty stream is still one (empty) object.
        if self.current.is_none() && self.done.is_empty() {
            self.open_next()?;
        }
        self.close_current()?;
        Ok(std::mem::take(&mut self.done))
    }

    fn describe(&self) -> String {
        let name = match self.part_bytes {
            Some(_) => format!("{}.part*", self.name),
            None => self.name.clone(),
        };
        format!("{} {}{name}", self.store.place(), self.dir)
    }

    fn single_file(&self) -> bool {
        self.part_bytes.is_none()
    }
}
