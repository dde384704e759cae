//! Sparse files: finding a file's data and holes (`SEEK_DATA`/`SEEK_HOLE`), storing them as GNU's PAX 1.0 sparse
//! members, and reading back every sparse format GNU tar writes (old GNU type `S` with its extension headers, PAX
//! 0.0, 0.1 and 1.0), or saying why one cannot be read.
//!
//! # What is written
//! A file whose holes add up to [`MIN_HOLE_BYTES`] or more is archived the way `tar --sparse --format=posix`
//! (GNU tar 1.34, and bsdtar) archives it: a pax header with `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
//! `GNU.sparse.name` (the real name) and `GNU.sparse.realsize`, a ustar header named `<dir>/GNUSparseFile.0/<name>`
//! whose size is what is stored, then the map as decimal text (the number of entries, then an offset and a length
//! per line, the last entry being `<size> 0`, padded to a block) followed by the data segments one after another.
//! GNU tar and bsdtar extract it with its holes; a reader that knows no sparse format extracts a file named
//! `GNUSparseFile.0/<name>` holding the map and the data (never a wrong file under the real name).
//!
//! # The threshold
//! [`MIN_HOLE_BYTES`] (1 MiB of holes in all): below it a file is stored whole. What a sparse member saves is its
//! holes; what it costs is a block or two of map and records, and a member that simpler readers (busybox tar, the
//! Rust `tar` crate, Python's `tarfile` before 3.x) do not extract under its name. A file with a few KiB of holes
//! (what an editor's seek leaves) gains nothing worth that; 1 MiB is also the drive's write unit
//! ([`super::sink::WRITE_BUFFER`]), so smaller savings do not even save a write.
//!
//! # Reading
//! Everything read from an archive is hostile: a map must be in order, without overlaps, inside the file's size,
//! with exactly as much data as the member stores, and at most [`MAX_SEGMENTS`] segments long; anything else is a
//! [`SparseError`], which a restore turns into a refusal of that entry (never into bytes written from a map it
//! does not trust).

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::sink::Digest;
use crate::stdx::HashingReader;

/// A file is stored sparse when its holes add up to at least this (see the module docs for why).
pub const MIN_HOLE_BYTES: u64 = 1 << 20;

/// The most data segments a map may have (16 MiB in memory); a longer one is refused when read, and a file with
/// more extents is written with its smallest holes stored as zeros.
pub const MAX_SEGMENTS: usize = 1 << 20;

/// The ustar name of a sparse member is `<dir>/GNUSparseFile.0/<name>`, as GNU tar's `%d/GNUSparseFile.%p/%f` with a
/// fixed `%p` (bsdtar's choice too), so that archiving the same snapshot twice gives the same bytes.
const FAKE_DIR: &[u8] = b"GNUSparseFile.0";

/// One run of data: `len` bytes at `offset` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A sparse file's layout: its size and its data segments (in order, not overlapping, not touching, none empty);
/// everything else is a hole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SparseMap {
    size: u64,
    segments: Vec<Segment>,
}

/// Why a sparse member cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    #[error("its sparse map is damaged: {0}")]
    BadMap(String),
    #[error("its sparse map has more than {MAX_SEGMENTS} data segments")]
    TooLong,
    #[error("it is stored in GNU sparse format {0}, which GNU tar 1.34 does not write either")]
    Unsupported(String),
}

impl SparseError {
    /// A fixed description, for the restore plan's "unsupported entry type" refusal.
    pub fn kind_word(&self) -> &'static str {
        match self {
            SparseError::BadMap(_) => "sparse file with a damaged map",
            SparseError::TooLong => "sparse file with too long a map",
            SparseError::Unsupported(_) => "sparse file in an unknown GNU sparse version",
        }
    }
}

fn bad(what: impl Into<String>) -> SparseError {
    SparseError::BadMap(what.into())
}

impl SparseMap {
    /// A map of a file of `size` bytes with these data segments. Empty segments are dropped and touching ones
    /// joined; segments out of order, overlapping or past `size`, or too many, are an error.
    pub fn new(
        size: u64,
        segments: impl IntoIterator<Item = Segment>,
    ) -> Result<SparseMap, SparseError> {
        let mut out: Vec<Segment> = Vec::new();
        let mut end = 0u64;
        for s in segments {
            let seg_end = s
                .offset
                .checked_add(s.len)
                .ok_or_else(|| bad(format!("segment at {} overflows", s.offset)))?;
            if seg_end > size {
                return Err(bad(format!(
                    "segment {}+{} ends past the file's size {size}",
                    s.offset, s.len
                )));
            }
            if s.offset < end {
                return Err(bad(format!(
                    "segment at {} overlaps or precedes the one before (which ends at {end})",
                    s.offset
                )));
            }
            if s.len == 0 {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end() == s.offset => last.len += s.len,
                _ => {
                    if out.len() == MAX_SEGMENTS {
                        return Err(SparseError::TooLong);
                    }
                    out.push(s);
                }
            }
            end = seg_end;
        }
        Ok(SparseMap {
            size,
            segments: out,
        })
    }

    /// The whole file as one data segment (a file without holes).
    pub fn dense(size: u64) -> SparseMap {
        SparseMap {
            size,
            segments: if size == 0 {
                Vec::new()
            } else {
                vec![Segment {
                    offset: 0,
                    len: size,
                }]
            },
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes of data (what is stored).
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Bytes of holes.
    pub fn hole_bytes(&self) -> u64 {
        self.size - self.data_bytes()
    }

    /// The map as PAX 1.0 stores it at the start of the member's data: the number of entries, then each entry's
    /// offset and length, one decimal number per line, the last entry `<size>` `0` (as GNU tar always ends it),
    /// padded with zeros to a whole block.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.segments.len() * 24);
        let mut line = |n: u64| {
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(b'\n');
        };
        line(self.segments.len() as u64 + 1);
        for s in &self.segments {
            line(s.offset);
            line(s.len);
        }
        line(self.size);
        line(0);
        // Zeros to a whole 512-byte tar block: GNU's format starts the data on a block after the map.
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    /// The same map with holes shorter than the smallest that keeps it within `max` segments stored as data.
    fn coarsened(mut self, max: usize) -> SparseMap {
        let mut min_hole = 4096u64;
        while self.segments.len() > max {
            let mut out: Vec<Segment> = Vec::with_capacity(self.segments.len());
            for s in &self.segments {
                match out.last_mut() {
                    Some(last) if s.offset - last.end() < min_hole => {
                        last.len = s.end() - last.offset
                    }
                    _ => out.push(*s),
                }
            }
            self.segments = out;
            min_hole = min_hole.saturating_mul(2);
        }
        self
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Files on disk

/// Whether a file may have holes worth a sparse member, from its metadata alone: fewer blocks allocated than its
/// size by at least [`MIN_HOLE_BYTES`]. Only such files are mapped (one `open` and a few `lseek`s).
pub fn worth_checking(meta: &Metadata) -> bool {
    worth(meta.is_file(), meta.blocks(), meta.size())
}

/// [`worth_checking`] from the facts it looks at: a regular file, its 512-byte blocks and its size.
pub fn worth(is_file: bool, blocks: u64, size: u64) -> bool {
    is_file && blocks.saturating_mul(512).saturating_add(MIN_HOLE_BYTES) <= size
}

/// Whether a file may have holes at all, from its metadata alone (fewer blocks allocated than its size): a
/// restore from a local snapshot recreates any hole it finds.
pub fn worth_checking_any(meta: &Metadata) -> bool {
    meta.is_file() && meta.blocks().saturating_mul(512) < meta.size()
}

/// The data segments of the first `size` bytes of `file`, found with `SEEK_DATA`/`SEEK_HOLE`; the file offset is
/// back at 0 afterwards. A filesystem without them reports the whole file as data.
pub fn map_file(file: &File, size: u64) -> io::Result<SparseMap> {
    let map = seek_map(file, size);
    rustix::fs::seek(file, rustix::fs::SeekFrom::Start(0))?;
    map
}

fn seek_map(file: &File, size: u64) -> io::Result<SparseMap> {
    use rustix::fs::{SeekFrom as S, seek};
    use rustix::io::Errno;
    let mut segments = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(file, S::Data(pos)) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if pos == 0 => return Ok(SparseMap::dense(size)),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match seek(file, S::Hole(data)) {
            Ok(h) => h.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            // A filesystem that contradicts itself: take the rest as data rather than loop.
            segments.push(Segment {
                offset: data,
                len: size - data,
            });
            break;
        }
        segments.push(Segment {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    SparseMap::new(size, segments).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The map to archive `file` (of `size` bytes) with, when its holes add up to at least `min_holes`; `None` for a
/// file to store whole. A map longer than [`MAX_SEGMENTS`] has its smallest holes stored as data.
pub fn detect(file: &File, size: u64, min_holes: u64) -> io::Result<Option<SparseMap>> {
    let map = map_file(file, size)?;
    if map.hole_bytes() < min_holes.max(1) {
        return Ok(None);
    }
    let map = map.coarsened(MAX_SEGMENTS);
    Ok((map.hole_bytes() >= min_holes.max(1)).then_some(map))
}

/// Reads the data segments of a file one after another (with `read_at`, so the file offset does not matter): the
/// data a sparse member stores. A file shorter than its map is an `UnexpectedEof` error.
pub struct SegmentsReader<'a> {
    file: &'a File,
    segments: &'a [Segment],
    /// Bytes of the current segment already read.
    done: u64,
}

impl<'a> SegmentsReader<'a> {
    pub fn new(file: &'a File, map: &'a SparseMap) -> SegmentsReader<'a> {
        SegmentsReader {
            file,
            segments: &map.segments,
            done: 0,
        }
    }
}

impl Read for SegmentsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(seg) = self.segments.first() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min((seg.len - self.done).min(usize::MAX as u64) as usize);
        let n = self
            .file
            .read_at(&mut buf[..want], seg.offset + self.done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends at {} inside its data segment {}+{}: it shrank",
                    seg.offset + self.done,
                    seg.offset,
                    seg.len
                ),
            ));
        }
        self.done += n as u64;
        if self.done == seg.len {
            self.segments = &self.segments[1..];
            self.done = 0;
        }
        Ok(n)
    }
}

/// Hashes `n` zero bytes (a hole) into `h`, from a static buffer (the logical content's hash of a sparse member,
/// which indexes written before the stored-bytes digest give).
pub fn hash_zeros(h: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing the header

/// The ustar name of the sparse member for `path`: `<dir>/GNUSparseFile.0/<name>` (`./GNUSparseFile.0/<name>` at
/// the top, as GNU tar writes it).
pub fn fake_name(path: &[u8]) -> Vec<u8> {
    let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b"."[..], path),
    };
    let mut out = Vec::with_capacity(path.len() + FAKE_DIR.len() + 4);
    out.extend_from_slice(dir);
    out.push(b'/');
    out.extend_from_slice(FAKE_DIR);
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

/// The pax records of a PAX 1.0 sparse member, in GNU tar's order; `record(key, value)` appends one. They must come
/// after any `path` record: GNU tar applies records in order, and `GNU.sparse.name` is the name that counts.
pub fn pax_records(path: &[u8], size: u64, mut record: impl FnMut(&str, &[u8])) {
    record("GNU.sparse.major", b"1");
    record("GNU.sparse.minor", b"0");
    record("GNU.sparse.name", path);
    record("GNU.sparse.realsize", size.to_string().as_bytes());
}

/// Whether a file at `path` may be stored as a sparse member: its name must survive the `tar` crate's pax parser,
/// which splits records at newlines (a `GNU.sparse.name` holding one would come back as the `GNUSparseFile.0` name).
pub fn name_allows_sparse(path: &[u8]) -> bool {
    !path.contains(&b'\n')
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the formats

/// The GNU sparse records of one pax header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxSparse {
    /// `(0, 0)`, `(0, 1)` or `(1, 0)`.
    pub version: (u32, u32),
    /// `GNU.sparse.name`: the real name (0.1 and 1.0; 0.0 keeps it in the header).
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` or `GNU.sparse.size`.
    pub size: u64,
    /// The map, for 0.0 and 0.1 (1.0 keeps it in the data).
    pub map: Option<SparseMap>,
}

fn parse_num(value: &[u8], key: &str) -> Result<u64, SparseError> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad(format!(
            "{key} is {:?}, not a number",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        )));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("{key} is out of range")))
}

impl PaxSparse {
    /// Reads the `GNU.sparse.*` records among a pax header's (`Err` items are records that could not be parsed: the
    /// `tar` crate splits records at newlines; `GNU.sparse.*` records after such a piece are not trusted, as they may
    /// be pieces of another record's value). `Ok(None)` when there are none: not a sparse member.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = io::Result<(&'a [u8], &'a [u8])>>,
    ) -> Result<Option<PaxSparse>, SparseError> {
        let (mut major, mut minor) = (None, None);
        let (mut name, mut size, mut numblocks, mut map_text) = (None, None, None, None);
        let mut pairs: Vec<Segment> = Vec::new();
        let mut pending_offset: Option<u64> = None;
        let mut malformed = false;
        let mut any = false;
        for r in records {
            let (key, value) = match r {
                Ok(kv) => kv,
                Err(_) => {
                    malformed = true;
                    continue;
                }
            };
            let Some(k) = key.strip_prefix(b"GNU.sparse.") else {
                continue;
            };
            // After a piece that is no record, what looks like one may be a piece of a value (an xattr holding
            // `"\n22 GNU.sparse.major=1"`): not trusted (see `xattrs`).
            if malformed {
                continue;
            }
            any = true;
            match k {
                b"major" => major = Some(parse_num(value, "GNU.sparse.major")?),
                b"minor" => minor = Some(parse_num(value, "GNU.sparse.minor")?),
                b"name" => name = Some(value.to_vec()),
                b"realsize" | b"size" => size = Some(parse_num(value, "GNU.sparse.realsize")?),
                b"numblocks" => numblocks = Some(parse_num(value, "GNU.sparse.numblocks")?),
                b"map" => map_text = Some(value.to_vec()),
                b"offset" => {
                    if pending_offset.is_some() {
                        return Err(bad(
                            "two GNU.sparse.offset records without a numbytes between",
                        ));
                    }
                    pending_offset = Some(parse_num(value, "GNU.sparse.offset")?);
                }
                b"numbytes" => {
                    let offset = pending_offset
                        .take()
                        .ok_or_else(|| bad("GNU.sparse.numbytes without its offset"))?;
                    if pairs.len() > MAX_SEGMENTS {
                        return Err(SparseError::TooLong);
                    }
                    pairs.push(Segment {
                        offset,
                        len: parse_num(value, "GNU.sparse.numbytes")?,
                    });
                }
                _ => {} // GNU tar ignores keywords it does not know, with a warning
            }
        }
        if !any {
            return Ok(None);
        }
        if pending_offset.is_some() {
            return Err(bad("a GNU.sparse.offset without its numbytes"));
        }
        let size = size.ok_or_else(|| bad("no GNU.sparse.realsize or GNU.sparse.size record"))?;
        let version = match (major, minor) {
            (Some(1), Some(0)) => (1, 0),
            (Some(ma), mi) => {
                return Err(SparseError::Unsupported(format!(
                    "{ma}.{}",
                    mi.unwrap_or(0)
                )));
            }
            (None, _) if map_text.is_some() => (0, 1),
            (None, _) if !pairs.is_empty() => (0, 0),
            (None, _) => return Err(bad("GNU.sparse records without a map")),
        };
        if version.0 == 1 && (map_text.is_some() || !pairs.is_empty()) {
            return Err(bad("a PAX 1.0 sparse member with a map in its header"));
        }
        if name.is_none() && malformed && version != (0, 0) {
            return Err(bad("its GNU.sparse.name record cannot be read"));
        }
        let map = match version {
            (1, _) => None,
            _ => {
                let segs = match map_text {
                    Some(text) => parse_map_01(&text)?,
                    None => pairs,
                };
                if let Some(n) = numblocks
                    && n != segs.len() as u64
                {
                    return Err(bad(format!(
                        "GNU.sparse.numblocks says {n}, the map has {} entries",
                        segs.len()
                    )));
                }
                Some(SparseMap::new(size, segs)?)
            }
        };
        Ok(Some(PaxSparse {
            version,
            name,
            size,
            map,
        }))
    }
}

impl PaxSparse {
    /// A 0.0 or 0.1 map (in the records) must name exactly the `stored` bytes of the member's data; a 1.0 map is
    /// checked when it is read ([`read_v1_map`]).
    pub fn check_stored(&self, stored: u64) -> Result<(), SparseError> {
        match &self.map {
            Some(map) if map.data_bytes() != stored => Err(bad(format!(
                "the map names {} bytes of data, the member stores {stored}",
                map.data_bytes()
            ))),
            _ => Ok(()),
        }
    }
}

/// `GNU.sparse.map`'s value: `offset,length,offset,length,...`.
fn parse_map_01(text: &[u8]) -> Result<Vec<Segment>, SparseError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let nums: Vec<&[u8]> = text.split(|b| *b == b',').collect();
    if !nums.len().is_multiple_of(2) {
        return Err(bad("GNU.sparse.map has an odd number of values"));
    }
    if nums.len() / 2 > MAX_SEGMENTS + 1 {
        return Err(SparseError::TooLong);
    }
    nums.chunks(2)
        .map(|p| {
            Ok(Segment {
                offset: parse_num(p[0], "an offset of GNU.sparse.map")?,
                len: parse_num(p[1], "a length of GNU.sparse.map")?,
            })
        })
        .collect()
}

/// Why a map could not be read from an archive: the archive itself (`Io`), or what it says (`Bad`).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Bad(#[from] SparseError),
}

impl From<MapError> for io::Error {
    fn from(e: MapError) -> io::Error {
        match e {
            MapError::Io(e) => e,
            MapError::Bad(b) => io::Error::new(io::ErrorKind::InvalidData, b),
        }
    }
}

/// Reads a PAX 1.0 map from the start of a member's data (`stored` bytes in all) for a file of `size` bytes.
/// Returns the map and the bytes it took (a whole number of blocks); the data follows. The data the map names
/// must be exactly what the member stores after it.
pub fn read_v1_map(r: &mut dyn Read, stored: u64, size: u64) -> Result<(SparseMap, u64), MapError> {
    let mut block = [0u8; 512];
    let mut taken = 0u64; // bytes of map read (whole blocks)
    let mut pos = 512usize; // position in `block`
    let mut next_block = |block: &mut [u8; 512], taken: &mut u64| -> Result<(), MapError> {
        if *taken + 512 > stored {
            return Err(bad("the map runs past the end of the member").into());
        }
        r.read_exact(block).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => MapError::Bad(bad("the archive ends inside the map")),
            _ => MapError::Io(e),
        })?;
        *taken += 512;
        Ok(())
    };
    let mut number =
        |block: &mut [u8; 512], pos: &mut usize, taken: &mut u64| -> Result<u64, MapError> {
            let mut digits = 0u32;
            let mut value = 0u64;
            loop {
                if *pos == 512 {
                    next_block(block, taken)?;
                    *pos = 0;
                }
                let b = block[*pos];
                *pos += 1;
                match b {
                    b'0'..=b'9' => {
                        digits += 1;
                        value = value
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(u64::from(b - b'0')))
                            .ok_or_else(|| bad("a number in the map is out of range"))?;
                    }
                    b'\n' if digits > 0 => return Ok(value),
                    _ => return Err(bad("the map is not decimal numbers, one per line").into()),
                }
            }
        };
    let count = number(&mut block, &mut pos, &mut taken)?;
    if count > MAX_SEGMENTS as u64 + 1 {
        return Err(SparseError::TooLong.into());
    }
    let mut segs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = number(&mut block, &mut pos, &mut taken)?;
        let len = number(&mut block, &mut pos, &mut taken)?;
        segs.push(Segment { offset, len });
    }
    let map = SparseMap::new(size, segs)?;
    if taken.checked_add(map.data_bytes()) != Some(stored) {
        return Err(bad(format!(
            "the map names {} bytes of data, the member stores {} after its map",
            map.data_bytes(),
            stored.saturating_sub(taken)
        ))
        .into());
    }
    Ok((map, taken))
}

/// The map of an old-GNU sparse member (type `S`): the four entries of its header, then the 21 of each extension
/// block in `ext` (the blocks that followed the header, as many as the header's and each block's `isextended`
/// flag said: the scanner follows that chain, [`crate::restore::engine::tarscan`]). `stored` is the header's size field:
/// the data the member stores after the blocks, which the map must name exactly. A header without GNU tar's magic
/// has no sparse fields (GNU tar does not read it as sparse either).
pub fn old_gnu_map(
    header: &[u8; 512],
    ext: &[Box<[u8; 512]>],
    stored: u64,
) -> Result<SparseMap, SparseError> {
    let header = tar::Header::from_byte_slice(header);
    let gnu = header
        .as_gnu()
        .ok_or_else(|| bad("a type S header without GNU tar's magic"))?;
    let size = gnu
        .real_size()
        .map_err(|e| bad(format!("its real size: {e}")))?;
    let mut segs = Vec::new();
    let mut take = |h: &tar::GnuSparseHeader| -> Result<(), SparseError> {
        if h.is_empty() {
            return Ok(());
        }
        if segs.len() > MAX_SEGMENTS {
            return Err(SparseError::TooLong);
        }
        segs.push(Segment {
            offset: h.offset().map_err(|e| bad(format!("an offset: {e}")))?,
            len: h.length().map_err(|e| bad(format!("a length: {e}")))?,
        });
        Ok(())
    };
    for h in &gnu.sparse {
        take(h)?;
    }
    let mut e = tar::GnuExtSparseHeader::new();
    for block in ext {
        e.as_mut_bytes().copy_from_slice(&block[..]);
        for h in e.sparse() {
            take(h)?;
        }
    }
    let map = SparseMap::new(size, segs)?;
    if map.data_bytes() != stored {
        return Err(bad(format!(
            "the map names {} bytes of data, the member stores {stored}",
            map.data_bytes()
        )));
    }
    Ok(map)
}

/// What a tar entry's headers say about sparseness, without reading its content: for the readers of dbackup's own
/// archives through the `tar` crate (index checks, verification, single-entry reads). Archives without an index
/// are read by [`crate::restore::engine::tarscan`], which calls the same parsers ([`PaxSparse::from_records`],
/// [`old_gnu_map`], [`read_v1_map`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarSparse {
    /// Not a sparse member.
    No,
    /// Old GNU (type `S`): the `tar` crate reports its real size already.
    OldGnu,
    /// One of the PAX formats.
    Pax(PaxSparse),
    /// A sparse member that cannot be read.
    Bad(SparseError),
}

/// Looks at a tar entry's type and pax records.
pub fn inspect<R: Read>(te: &mut tar::Entry<'_, R>) -> io::Result<TarSparse> {
    if te.header().entry_type().is_gnu_sparse() {
        return Ok(TarSparse::OldGnu);
    }
    let Some(exts) = te.pax_extensions()? else {
        return Ok(TarSparse::No);
    };
    let records = exts.map(|r| r.map(|e| (e.key_bytes(), e.value_bytes())));
    Ok(match PaxSparse::from_records(records) {
        Ok(None) => TarSparse::No,
        Ok(Some(p)) => match p.check_stored(te.size()) {
            Ok(()) => TarSparse::Pax(p),
            Err(e) => TarSparse::Bad(e),
        },
        Err(e) => TarSparse::Bad(e),
    })
}

/// Where a sparse member's data is in an archive, and how to get its map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparseLoc {
    /// The map is known (read when the archive was scanned); the data segments are stored one after another from
    /// `data`.
    Mapped { data: u64, map: Arc<SparseMap> },
    /// A PAX 1.0 member of dbackup's own archive: the map opens the `stored` bytes at `data`, whose sha256 the index
    /// gives; `size` is the file's.
    Indexed {
        data: u64,
        stored: u64,
        size: u64,
        sha256: Digest,
    },
}

/// Opens a sparse member of a seekable archive for a restore: its map, and a reader of its data segments one after
/// another (to hand to the restore's `apply_sparse`). For an [`SparseLoc::Indexed`] member the map is read from the
/// archive and everything stored is hashed as it is read: the reader fails with `InvalidData` when the map or the
/// last byte of data shows that the member is not what the index says.
pub fn open<'r, R: Read + Seek>(
    r: &'r mut R,
    loc: &SparseLoc,
) -> Result<(Arc<SparseMap>, Box<dyn Read + 'r>), MapError> {
    match loc {
        SparseLoc::Mapped { data, map } => {
            r.seek(SeekFrom::Start(*data))?;
            let len = map.data_bytes();
            Ok((map.clone(), Box::new(r.take(len))))
        }
        SparseLoc::Indexed {
            data,
            stored,
            size,
            sha256,
        } => {
            r.seek(SeekFrom::Start(*data))?;
            let mut hashing = HashingRead {
                hashing: HashingReader::new(r.take(*stored)),
                len: *stored,
                expect: *sha256,
            };
            let (map, _) = read_v1_map(&mut hashing, *stored, *size)?;
            Ok((Arc::new(map), Box::new(hashing)))
        }
    }
}

/// Hashes what is read through it; on reading its last expected byte (the `len`th), compares the hash.
struct HashingRead<R> {
    hashing: HashingReader<R>,
    len: u64,
    expect: Digest,
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.hashing.read(buf)?;
        if n > 0 && self.hashing.count >= self.len {
            let got = Digest::of(std::mem::take(&mut self.hashing.hasher));
            if got != self.expect {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the sparse member's stored bytes hash to {got}, the index says {}",
                        self.expect
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// Reads a whole PAX 1.0 member's `stored` bytes from `r` (positioned at its data) for verification: the map, then
/// the data. Returns the sha256 of the stored bytes (what the index's `sha256` of a sparse member is) and, only when
/// `logical` is asked for (indexes written before that definition gave the logical content's sha256), the sha256 of
/// the logical content with its holes hashed as zeros; `bytes` is told of every logical byte passed (data and
/// holes).
pub fn hash_v1(
    r: &mut dyn Read,
    stored: u64,
    size: u64,
    logical: bool,
    bytes: &mut dyn FnMut(u64),
) -> Result<(Option<Digest>, Digest), MapError> {
    let mut tee = HashingReader::new(r);
    let (map, _) = read_v1_map(&mut tee, stored, size)?;
    let mut logical = logical.then(Sha256::new);
    let mut buf = vec![0u8; super::sink::WRITE_BUFFER];
    let mut at = 0u64;
    for s in map.segments() {
        if let Some(h) = logical.as_mut() {
            hash_zeros(h, s.offset - at);
        }
        bytes(s.offset - at);
        let mut left = s.len;
        while left > 0 {
            let want = buf.len().min(left.min(usize::MAX as u64) as usize);
            let n = match tee.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(bad("the archive ends inside the member's data").into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(h) = logical.as_mut() {
                h.update(&buf[..n]);
            }
            bytes(n as u64);
            left -= n as u64;
        }
        at = s.end();
    }
    if let Some(h) = logical.as_mut() {
        hash_zeros(h, size - at);
    }
    bytes(size - at);
    Ok((logical.map(Digest::of), Digest::of(tee.hasher)))
}

/// The sha256 a sparse member of `file` (`size` bytes) would be stored with in an index: over its PAX 1.0 map block
/// and its data segments ([`detect`] with [`MIN_HOLE_BYTES`], as the archive writer maps it), reading only the
/// data. `None` when the file is not sparse enough to be stored as a sparse member (it would be stored whole).
/// `bytes` is told of every logical byte passed. The same file on the same filesystem gives the same map, so a file
/// restored or kept unchanged since it was archived hashes to the index's value; a filesystem that allocates the
/// file differently gives another digest (the file then counts as changed, never as unchanged when it is not).
pub fn stored_digest_of(
    file: &File,
    size: u64,
    bytes: &mut dyn FnMut(u64),
) -> io::Result<Option<Digest>> {
    let Some(map) = detect(file, size, MIN_HOLE_BYTES)? else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    h.update(map.encode_v1());
    let mut data = SegmentsReader::new(file, &map);
    crate::stdx::hash_into(&mut h, &mut data, &mut vec![0u8; 1 << 20], &mut *bytes)?;
    bytes(map.hole_bytes());
    Ok(Some(Digest::of(h)))
}

#[cfg(test)]
mod tests;
