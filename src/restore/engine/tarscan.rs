//! Reading any tar archive GNU tar reads, header by header, by GNU tar's extraction rules: the scan path's tar reader.
//!
//! dbackup's own archives are read through their index (and their headers checked with the `tar` crate, which
//! wrote them). An archive without an index (GNU tar's, bsdtar's, star's, an old one) is read here, because the
//! `tar` crate departs from GNU tar on archives it did not write, in ways that lose entries or refuse whole archives:
//! it skips the `size` bytes after a directory or symlink header (GNU tar reads the next header right there, so the
//! next entry vanished), accepts only unsigned checksums (one HP-UX signed-checksum header made the whole archive
//! unreadable), takes a Solaris `X` extended header for an entry, ignores pax global headers, reads a V7 directory
//! (`name/`, type `0`) as an empty file, and splits pax records at newlines (a name holding one). It offers no hook to
//! change any of that, hence this reader (a header parser of ~500 lines, property-tested).
//!
//! # GNU tar's rules, as followed here (checked against GNU tar 1.34's extraction)
//! - A header is valid when its checksum field matches the sum of its bytes taken unsigned *or* signed. The
//!   first all-zero block ends the archive. A damaged header stops the scan with its offset ([`ScanError`]);
//!   GNU tar skips to the next header it recognises, losing whatever was between, which a restore must not do.
//! - Only entries whose content GNU tar extracts have content in the archive: regular (`0`, NUL, `7`), unknown
//!   types (GNU tar extracts them as regular files), GNU dump directories (`D`, whose listing is skipped), volume
//!   labels and old-GNU sparse files. A directory, symlink, hard link, fifo or device header is followed directly
//!   by the next header, whatever its `size` field says.
//! - A regular-file header whose name ends in `/` is a directory (V7 and old archives write them so).
//! - Names: the pax `path` record, else a GNU long name (`L`), else the header's name with the ustar prefix
//!   (`ustar\0` magic only: the old GNU header keeps times there). Link targets likewise (`linkpath`, `K`).
//! - Numbers are octal (leading spaces, a space or NUL after the digits) or base-256 (first byte `0x80`, or
//!   `0xff` for a negative number: mtimes before 1970), and pax records override them (`size`, `uid`, `gid`,
//!   `mtime` with its fraction). Pax global headers (`g`) apply to every entry after them; extended headers
//!   (`x`, and Solaris' `X`) to the next entry only.
//! - GNU volume labels (`V`) are skipped, as GNU tar skips them.
//! - Sparse files, in every format GNU tar writes, are files with their real name and size and a map
//!   ([`Member::sparse`]): old GNU (type `S`, GNU magic: four map entries in the header, then extension blocks
//!   while the `isextended` flag says so, before the data), PAX 0.0 (`GNU.sparse.offset`/`numbytes` records),
//!   0.1 (`GNU.sparse.map`) and 1.0 (`GNU.sparse.major=1`, the map as decimal text opening the data, read here so
//!   that a member's content is its data segments one after another). The maps are parsed by
//!   [`crate::archive::sparse`] (one parser per format, shared with dbackup's own archives) and checked: in order,
//!   inside the file, naming exactly the data stored, at most [`sparse::MAX_SEGMENTS`] segments. A map that fails
//!   makes the entry one the planner refuses, never bytes written from it.
//!
//! Every header is counted ([`HeaderCounts`]): an entry, an extension header of the entry after it, or a label.
//! Nothing is dropped silently: an entry dbackup cannot restore (a multi-volume continuation, an unknown type, a
//! sparse file whose map cannot be trusted, one whose pax records are malformed) is still handed over, and the
//! planner refuses it with the reason.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use serde::Serialize;

use super::entry::{EntryKind, Mtime, RestoreEntry};
use crate::archive::Attrs;
use crate::archive::sparse::{self, MapError, PaxSparse, SparseError, SparseMap};

/// The size of a tar block.
pub const BLOCK: u64 = 512;

/// Most bytes of extension headers (pax records, GNU long names) read into memory for one entry. GNU tar has no
/// limit; names are at most a few KiB and a file's extended attributes and ACLs rarely reach one MiB.
pub const MAX_EXTENSION: u64 = 16 << 20;

/// Largest set of pax global records kept (they apply to every entry after them; GNU tar writes a few dozen bytes).
pub const MAX_GLOBAL: u64 = 1 << 20;

/// Most old-GNU sparse extension blocks after one header (21 chunks each: 1.3 million data extents).
pub const MAX_SPARSE_BLOCKS: usize = 1 << 16;

/// How many headers of each sort a scan read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HeaderCounts {
    /// Every header read (the end-of-archive zero blocks and old-GNU sparse maps excluded):
    /// `entries + extensions + labels`.
    pub headers: u64,
    /// Headers describing an entry: each one is handed over ([`Scanner::next_member`]).
    pub entries: u64,
    /// Extension headers of the entry after them: pax (`x`, `g`), Solaris (`X`), GNU long names (`L`, `K`).
    pub extensions: u64,
    /// GNU volume labels (`V`), which describe no file and are skipped, as GNU tar does.
    pub labels: u64,
}

impl HeaderCounts {
    /// `12 headers: 10 entries, 1 extension header, 1 volume label`.
    pub fn sentence(&self) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = vec![plural(self.entries, "entry", "entries")];
        if self.extensions > 0 {
            parts.push(plural(
                self.extensions,
                "extension header",
                "extension headers",
            ));
        }
        if self.labels > 0 {
            parts.push(plural(self.labels, "volume label", "volume labels"));
        }
        format!(
            "{}: {}",
            plural(self.headers, "header", "headers"),
            parts.join(", ")
        )
    }
}

/// Why an archive cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read the archive at offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
    #[error("the archive ends at offset {offset}, inside {what}: it is truncated")]
    Truncated { offset: u64, what: &'static str },
    #[error("the header at offset {offset} is damaged: {why}")]
    Damaged { offset: u64, why: String },
}

impl ScanError {
    /// As an I/O error (`InvalidData` unless it is one already), for callers that report reading errors so.
    pub fn into_io(self) -> io::Error {
        match self {
            ScanError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// The sparse formats GNU tar writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparse {
    /// Type `S`, the map in the header and the extension blocks after it.
    OldGnu,
    /// `GNU.sparse.offset`/`numbytes` pax records.
    Pax00,
    /// The `GNU.sparse.map` pax record.
    Pax01,
    /// `GNU.sparse.major=1`: the map at the start of the data.
    Pax10,
}

/// A sparse member's format and its map, checked ([`crate::archive::sparse::SparseMap::new`]: in order, inside the
/// file's size) and naming exactly the data the member stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseFile {
    pub format: Sparse,
    pub map: Arc<SparseMap>,
}

/// One entry of the archive, with everything its headers said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The entry's own header (after its extension headers).
    pub header_offset: u64,
    /// Where its content starts. For a sparse member: its data segments, one after another (after an old-GNU
    /// member's extension blocks, after a PAX 1.0 member's map, which [`Scanner::next_member`] has read).
    pub data_offset: u64,
    /// Bytes of content from `data_offset` (0 for the types whose content GNU tar never reads; a sparse member's
    /// data bytes).
    pub data_len: u64,
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub mtime: Mtime,
    /// The size the headers give (the pax `size`, else the header's); a sparse file's real size.
    pub size: u64,
    /// The entry's own pax records (its `x` and `X` headers), for extended attributes, ACLs and sparse maps.
    pub records: Records,
    /// The pax global records in effect (`g` headers before it), shared by the entries after them.
    pub global: Arc<Records>,
    /// The entry's header block as read.
    pub header: Box<[u8; 512]>,
    /// Old-GNU sparse extension blocks that followed the header.
    #[expect(
        clippy::vec_box,
        reason = "each block moved in as the scanner read it, boxed"
    )]
    pub sparse_blocks: Vec<Box<[u8; 512]>>,
    /// A GNU sparse member: its format and map, or why its map cannot be trusted (the entry is then refused).
    pub sparse: Option<Result<SparseFile, SparseError>>,
    /// Why the headers cannot be trusted for this entry (a malformed pax record, a field that is not a number).
    pub problem: Option<&'static str>,
}

impl Member {
    /// The engine's kind for this entry.
    pub fn kind(&self) -> EntryKind {
        if let Some(problem) = self.problem {
            return EntryKind::Other(problem);
        }
        match &self.sparse {
            // Only regular-file headers are read as sparse (`member`).
            Some(Ok(_)) => return EntryKind::File,
            Some(Err(e)) => return EntryKind::Other(e.kind_word()),
            None => {}
        }
        match self.typeflag {
            b'0' | 0 | b'7' if self.name.ends_with(b"/") => EntryKind::Dir,
            b'0' | 0 | b'7' => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' | b'D' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'M' => {
                EntryKind::Other("continuation of a file from another volume (GNU multi-volume)")
            }
            b'N' => EntryKind::Other("obsolete GNU long-names header"),
            _ => EntryKind::Other("unknown tar entry type"),
        }
    }

    /// A sparse file's map, when it is one whose map could be read.
    pub fn sparse_map(&self) -> Option<&Arc<SparseMap>> {
        match &self.sparse {
            Some(Ok(f)) if self.problem.is_none() => Some(&f.map),
            _ => None,
        }
    }

    /// The extended attributes and ACLs its pax records hold (`SCHILY.xattr.*`, `SCHILY.acl.*`: GNU tar's
    /// `--xattrs --acls`, star's, bsdtar's).
    pub fn attrs(&self) -> Result<Option<Box<Attrs>>, String> {
        let records: Vec<(&[u8], &[u8])> = self.all_records().collect();
        Attrs::from_pax(&records).map(Attrs::boxed)
    }

    /// Every pax record in effect, global ones first: a later record with the same key says the last word.
    pub fn all_records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.global
            .iter()
            .chain(&self.records)
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The entry the restore engine plans: owners by name when `owners` knows the name (as GNU tar restores them
    /// unless `--numeric-owner`), else by number; its extended attributes and ACLs; `locator` is the content's
    /// offset.
    pub fn entry(&self, owners: &mut Owners) -> RestoreEntry {
        let (attrs, kind) = match self.attrs() {
            Ok(a) => (a, self.kind()),
            Err(_) => (
                None,
                EntryKind::Other("entry whose extended attributes or ACLs cannot be read"),
            ),
        };
        let uid = owners
            .user(&self.uname)
            .unwrap_or_else(|| u32::try_from(self.uid).unwrap_or(u32::MAX));
        let gid = owners
            .group(&self.gname)
            .unwrap_or_else(|| u32::try_from(self.gid).unwrap_or(u32::MAX));
        RestoreEntry {
            name: self.name.clone(),
            kind,
            mode: self.mode,
            uid,
            gid,
            mtime: self.mtime,
            size: if kind == EntryKind::File {
                self.size
            } else {
                0
            },
            link: matches!(kind, EntryKind::Symlink | EntryKind::Hardlink)
                .then(|| self.link.clone()),
            sha256: None,
            sha256_stored: false,
            locator: Some(self.data_offset),
            attrs,
        }
    }
}

/// Owner names to ids on this machine, looked up once each.
#[derive(Debug, Default)]
pub struct Owners {
    /// Map names at all (off: owners by number only, as `tar --numeric-owner`).
    pub by_name: bool,
    users: HashMap<Vec<u8>, Option<u32>>,
    groups: HashMap<Vec<u8>, Option<u32>>,
}

impl Owners {
    /// Names mapped through this machine's user and group databases.
    pub fn by_name() -> Owners {
        Owners {
            by_name: true,
            ..Owners::default()
        }
    }

    /// Owners by number only.
    pub fn numeric() -> Owners {
        Owners::default()
    }

    fn user(&mut self, name: &[u8]) -> Option<u32> {
        let by_name = self.by_name;
        looked_up(by_name, &mut self.users, name, crate::stdx::uid_of_name)
    }

    fn group(&mut self, name: &[u8]) -> Option<u32> {
        let by_name = self.by_name;
        looked_up(by_name, &mut self.groups, name, crate::stdx::gid_of_name)
    }
}

/// The id of `name` through `lookup`, asked once per name (`cache`); none when names are not mapped (`by_name` off)
/// or the name is empty.
fn looked_up(
    by_name: bool,
    cache: &mut HashMap<Vec<u8>, Option<u32>>,
    name: &[u8],
    lookup: fn(&[u8]) -> Option<u32>,
) -> Option<u32> {
    if !by_name || name.is_empty() {
        return None;
    }
    *cache.entry(name.to_vec()).or_insert_with(|| lookup(name))
}

/// Reads an archive header by header. [`Scanner::next_member`] gives each entry; its content can then be read with
/// [`Scanner::content`], or is skipped (by seeking, for a [`Scanner::seekable`] source) by the next call.
pub struct Scanner<R> {
    src: R,
    skip: fn(&mut R, u64) -> io::Result<()>,
    /// The archive's length, when known: a member that would end past it is found truncated without reading.
    len: Option<u64>,
    /// Offset of the next unread byte.
    pos: u64,
    /// Content bytes of the current member not read yet, then its padding.
    left: u64,
    pad: u64,
    global: Arc<Records>,
    counts: HeaderCounts,
    done: bool,
}

fn skip_by_reading<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Short skips are read (through a buffered reader, that costs no system call); longer ones seek.
fn skip_by_seeking<R: Read + Seek>(r: &mut R, n: u64) -> io::Result<()> {
    if n <= 64 << 10 {
        return skip_by_reading(r, n);
    }
    let n = i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    r.seek(SeekFrom::Current(n)).map(|_| ())
}

impl<R: Read> Scanner<R> {
    /// A scanner over a stream (content that is not read is read and dropped).
    pub fn new(src: R) -> Scanner<R> {
        Scanner {
            src,
            skip: skip_by_reading::<R>,
            len: None,
            pos: 0,
            left: 0,
            pad: 0,
            global: Arc::new(Vec::new()),
            counts: HeaderCounts::default(),
            done: false,
        }
    }

    /// What was read so far.
    pub fn counts(&self) -> HeaderCounts {
        self.counts
    }

    /// The current member's content (the bytes not read yet).
    pub fn content(&mut self) -> Content<'_, R> {
        Content { scanner: self }
    }

    /// The underlying reader, just after the end of the archive when [`Scanner::next_member`] gave `None`.
    pub fn into_inner(self) -> R {
        self.src
    }

    /// Counts a header read whole, of the sort `which` picks.
    fn count(&mut self, which: fn(&mut HeaderCounts) -> &mut u64) {
        self.counts.headers += 1;
        *which(&mut self.counts) += 1;
    }

    fn io_err(&self, source: io::Error) -> ScanError {
        ScanError::Io {
            offset: self.pos,
            source,
        }
    }

    fn skip_rest(&mut self) -> Result<(), ScanError> {
        let n = self.left.saturating_add(self.pad);
        if n > 0 {
            let end = self.pos.saturating_add(n);
            if self.len.is_some_and(|len| end > len) || end == u64::MAX {
                return Err(ScanError::Truncated {
                    offset: self.len.unwrap_or(end),
                    what: "an entry's content",
                });
            }
            (self.skip)(&mut self.src, n).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    ScanError::Truncated {
                        offset: self.pos,
                        what: "an entry's content",
                    }
                } else {
                    self.io_err(e)
                }
            })?;
            self.pos = end;
            self.left = 0;
            self.pad = 0;
        }
        Ok(())
    }

    /// Reads one block; `None` at the end of the input exactly at a block boundary.
    fn block(&mut self, what: &'static str) -> Result<Option<Box<[u8; 512]>>, ScanError> {
        let mut b = Box::new([0u8; 512]);
        let mut got = 0;
        while got < 512 {
            match self.src.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        self.pos += got as u64;
        match got {
            0 => Ok(None),
            512 => Ok(Some(b)),
            _ => Err(ScanError::Truncated {
                offset: self.pos,
                what,
            }),
        }
    }

    /// Reads `len` bytes of an extension header's content and its padding; `total` is what the entry's extension
    /// headers hold with this one.
    fn extension_data(&mut self, total: u64, len: u64, at: u64) -> Result<Vec<u8>, ScanError> {
        if total > MAX_EXTENSION {
            return Err(ScanError::Damaged {
                offset: at,
                why: format!(
                    "the extended headers of one entry hold {total} bytes, more than the {} MiB dbackup reads",
                    MAX_EXTENSION >> 20
                ),
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        let got = (&mut self.src)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|e| self.io_err(e))?;
        self.pos += got as u64;
        if (got as u64) < len {
            return Err(ScanError::Truncated {
                offset: self.pos,
                what: "an extended header",
            });
        }
        self.left = 0;
        self.pad = padding(len);
        self.skip_rest()?;
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive. Extension headers and labels are read (and counted)
    /// on the way; the previous entry's unread content is skipped first.
    pub fn next_member(&mut self) -> Result<Option<Member>, ScanError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut local: Records = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut problem: Option<&'static str> = None;
        let mut extensions = 0u64;
        // Bytes of extension headers read for this entry: at most MAX_EXTENSION in all.
        let mut extension_bytes = 0u64;
        loop {
            let at = self.pos;
            let what = if extensions > 0 {
                "the header after an extended header"
            } else {
                "a header"
            };
            let Some(h) = self.block(what)? else {
                if extensions > 0 {
                    return Err(ScanError::Truncated {
                        offset: self.pos,
                        what: "the entry after an extended header",
                    });
                }
                self.done = true;
                return Ok(None);
            };
            if is_zero_block(&h) {
                if extensions > 0 {
                    return Err(ScanError::Damaged {
                        offset: at,
                        why: "the archive ends right after an extended header, without its entry"
                            .into(),
                    });
                }
                self.done = true;
                return Ok(None);
            }
            check_checksum(&h).map_err(|why| ScanError::Damaged { offset: at, why })?;
            let typeflag = h[156];
            let header_size = number(&h[124..136])
                .filter(|n| *n >= 0 && *n <= i128::from(i64::MAX))
                .ok_or_else(|| ScanError::Damaged {
                    offset: at,
                    why: "its size field is not a number".into(),
                })? as u64;
            match typeflag {
                b'x' | b'X' | b'g' => {
                    extension_bytes += header_size;
                    let data = self.extension_data(extension_bytes, header_size, at)?;
                    extensions += 1;
                    self.count(|c| &mut c.extensions);
                    match parse_pax(&data) {
                        Ok(records) if typeflag == b'g' => {
                            let global = Arc::make_mut(&mut self.global);
                            merge(global, records);
                            let held: usize = global.iter().map(|(k, v)| k.len() + v.len()).sum();
                            if held as u64 > MAX_GLOBAL {
                                return Err(ScanError::Damaged {
                                    offset: at,
                                    why: format!(
                                        "its pax global records hold {held} bytes, more than the {} KiB dbackup \
                                         reads",
                                        MAX_GLOBAL >> 10
                                    ),
                                });
                            }
                        }
                        Ok(records) => merge(&mut local, records),
                        Err(_) => problem = Some("entry whose pax extended header is malformed"),
                    }
                }
                b'L' | b'K' => {
                    extension_bytes += header_size;
                    let data = self.extension_data(extension_bytes, header_size, at)?;
                    extensions += 1;
                    self.count(|c| &mut c.extensions);
                    let value = cstr(&data).to_vec();
                    if typeflag == b'L' {
                        long_name = Some(value);
                    } else {
                        long_link = Some(value);
                    }
                }
                b'V' => {
                    self.left = header_size;
                    self.pad = padding(header_size);
                    self.skip_rest()?;
                    self.count(|c| &mut c.labels);
                    if extensions > 0 {
                        // The extension headers described the label: they are spent.
                        local.clear();
                        long_name = None;
                        long_link = None;
                        problem = None;
                        extensions = 0;
                    }
                }
                _ => {
                    let m =
                        self.member(at, h, header_size, &local, long_name, long_link, problem)?;
                    self.count(|c| &mut c.entries);
                    return Ok(Some(m));
                }
            }
        }
    }

    // Stays long: one member's headers in the order GNU tar reads them (extension headers, pax records, the
    // old-GNU sparse chain, then the member itself), each step an early return; split, the state would travel.
    #[allow(clippy::too_many_arguments)]
    fn member(
        &mut self,
        at: u64,
        h: Box<[u8; 512]>,
        header_size: u64,
        local: &[(Vec<u8>, Vec<u8>)],
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        mut problem: Option<&'static str>,
    ) -> Result<Member, ScanError> {
        let typeflag = h[156];
        let ustar = &h[257..263] == b"ustar\0";
        let gnu = &h[257..265] == b"ustar  \0";
        let mut name = match long_name {
            Some(n) => n,
            None => {
                let base = cstr(&h[0..100]);
                let prefix = cstr(&h[345..500]);
                if ustar && !prefix.is_empty() {
                    let mut n = prefix.to_vec();
                    n.push(b'/');
                    n.extend_from_slice(base);
                    n
                } else {
                    base.to_vec()
                }
            }
        };
        let mut link = long_link.unwrap_or_else(|| cstr(&h[157..257]).to_vec());
        let (mut uname, mut gname) = if ustar || gnu {
            (cstr(&h[265..297]).to_vec(), cstr(&h[297..329]).to_vec())
        } else {
            (Vec::new(), Vec::new())
        };
        let mut bad = |what: &'static str| problem = problem.or(Some(what));
        let field = |range: std::ops::Range<usize>| number(&h[range]);
        let mode = field(100..108).unwrap_or_else(|| {
            bad("entry whose header's mode is not a number");
            0
        });
        let mut uid = field(108..116)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_else(|| {
                bad("entry whose header's owner is not a number");
                0
            });
        let mut gid = field(116..124)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_else(|| {
                bad("entry whose header's group is not a number");
                0
            });
        let mut mtime = field(136..148)
            .and_then(|n| i64::try_from(n).ok())
            .map(|s| Mtime::new(s, 0))
            .unwrap_or_else(|| {
                bad("entry whose header's mtime is not a number");
                Mtime::default()
            });
        let mut size = header_size;

        let records = local.to_vec();
        let global = self.global.clone();
        for (key, value) in global.iter().chain(&records) {
            let decimal = || {
                std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match key.as_slice() {
                b"path" => name = value.clone(),
                b"linkpath" => link = value.clone(),
                b"uname" => uname = value.clone(),
                b"gname" => gname = value.clone(),
                // An off_t: at most i64::MAX.
                b"size" => match decimal().filter(|n| i64::try_from(*n).is_ok()) {
                    Some(n) => size = n,
                    None => bad("entry whose pax size record is not a number"),
                },
                b"uid" => match decimal() {
                    Some(n) => uid = n,
                    None => bad("entry whose pax uid record is not a number"),
                },
                b"gid" => match decimal() {
                    Some(n) => gid = n,
                    None => bad("entry whose pax gid record is not a number"),
                },
                b"mtime" => match Mtime::parse_pax(value) {
                    Some(m) => mtime = m,
                    None => bad("entry whose pax mtime record is not a time"),
                },
                _ => {}
            }
        }
        // What a file stores: `size` so far. A sparse member's real size comes next.
        let stored = size;
        // PAX sparse records (GNU.sparse.*): the real name and size, and the map of 0.0 and 0.1.
        let regular = matches!(typeflag, b'0' | 0 | b'7');
        let mut sparse: Option<Result<(Sparse, Option<SparseMap>), SparseError>> = None;
        if typeflag != b'S' {
            let pax = PaxSparse::from_records(
                global
                    .iter()
                    .chain(&records)
                    .map(|(k, v)| Ok((k.as_slice(), v.as_slice()))),
            );
            match pax {
                Ok(None) => {}
                // GNU tar reads a sparse map for regular files only.
                Ok(Some(_)) if !regular => {
                    bad("entry of another type than a file with sparse records")
                }
                Ok(Some(p)) => {
                    let format = match p.version {
                        (1, _) => Sparse::Pax10,
                        (0, 1) => Sparse::Pax01,
                        _ => Sparse::Pax00,
                    };
                    if let Some(real) = &p.name {
                        name = real.clone();
                    }
                    // The map (0.0, 0.1) must name exactly what is stored.
                    sparse = Some(p.check_stored(stored).map(|()| (format, p.map)));
                    size = p.size;
                }
                Err(e) => sparse = Some(Err(e)),
            }
        }

        let mut sparse_blocks = Vec::new();
        if typeflag == b'S' {
            let mut extended = gnu && h[482] != 0;
            while extended {
                if sparse_blocks.len() >= MAX_SPARSE_BLOCKS {
                    return Err(ScanError::Damaged {
                        offset: at,
                        why: format!(
                            "its sparse map goes on for more than {MAX_SPARSE_BLOCKS} blocks"
                        ),
                    });
                }
                let b = self.block("a sparse map")?.ok_or(ScanError::Truncated {
                    offset: self.pos,
                    what: "a sparse map",
                })?;
                extended = b[504] != 0;
                sparse_blocks.push(b);
            }
            sparse = Some(
                sparse::old_gnu_map(&h, &sparse_blocks, header_size).map(|map| {
                    size = map.size();
                    (Sparse::OldGnu, Some(map))
                }),
            );
        }

        // Content GNU tar reads: regular files (not `name/`), unknown types, dump directories, sparse files (what
        // they store).
        let data_len = match typeflag {
            b'0' | 0 | b'7' if name.ends_with(b"/") && sparse.is_none() => 0,
            b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
            b'S' => header_size,
            _ => stored,
        };
        self.left = data_len;
        self.pad = padding(data_len);
        if let Some(len) = self.len
            && self.pos.saturating_add(data_len) > len
        {
            return Err(ScanError::Truncated {
                offset: len,
                what: "an entry's content",
            });
        }
        let sparse = match sparse {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok((format, Some(map)))) => Some(Ok(SparseFile {
                format,
                map: Arc::new(map),
            })),
            // PAX 1.0: the map opens the data; the member's content is what follows it.
            Some(Ok((format, None))) => {
                match sparse::read_v1_map(&mut Content { scanner: self }, data_len, size) {
                    Ok((map, _)) => Some(Ok(SparseFile {
                        format,
                        map: Arc::new(map),
                    })),
                    Err(MapError::Bad(e)) => Some(Err(e)),
                    Err(MapError::Io(e)) => return Err(self.io_err(e)),
                }
            }
        };
        Ok(Member {
            header_offset: at,
            data_offset: self.pos,
            data_len: self.left,
            typeflag,
            name,
            link,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            uname,
            gname,
            mtime,
            size,
            records,
            global,
            header: h,
            sparse_blocks,
            sparse,
            problem,
        })
    }
}

impl<R: Read + Seek> Scanner<R> {
    /// A scanner over a file: content that is not read is skipped with a seek, and a truncated archive is found
    /// from its length. `src` must be at the archive's start.
    pub fn seekable(mut src: R) -> io::Result<Scanner<R>> {
        let start = src.stream_position()?;
        let end = src.seek(SeekFrom::End(0))?;
        src.seek(SeekFrom::Start(start))?;
        let mut s = Scanner::new(src);
        s.skip = skip_by_seeking::<R>;
        s.len = Some(end.saturating_sub(start));
        Ok(s)
    }
}

/// The content of the member [`Scanner::next_member`] gave last.
pub struct Content<'a, R> {
    scanner: &'a mut Scanner<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &mut *self.scanner;
        if s.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(s.left).unwrap_or(usize::MAX));
        let n = s.src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the archive ends at offset {} with {} bytes of this entry still to come: it is truncated",
                    s.pos, s.left
                ),
            ));
        }
        s.pos += n as u64;
        s.left -= n as u64;
        Ok(n)
    }
}

/// Zero bytes after `len` bytes of content, to the next block.
pub fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// The bytes before the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// An end-of-archive block: nothing but zeros outside the checksum field (GNU tar's test).
fn is_zero_block(h: &[u8; 512]) -> bool {
    h[..148].iter().all(|&b| b == 0) && h[156..].iter().all(|&b| b == 0)
}

/// The checksum must match the header's bytes summed unsigned, or signed (old HP-UX and Sun tars), with the
/// checksum field counted as spaces.
fn check_checksum(h: &[u8; 512]) -> Result<(), String> {
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    let recorded = number(&h[148..156]).ok_or("its checksum field is not a number")?;
    if recorded == i128::from(unsigned) || recorded == i128::from(signed) {
        Ok(())
    } else {
        Err(format!(
            "its checksum is {recorded:o}, its bytes sum to {unsigned:o} (not a tar header, or a damaged one)"
        ))
    }
}

/// A numeric header field: octal (leading spaces, then digits, then a space, a NUL or the field's end) or
/// base-256 (`0x80` then the number; `0xff` then a negative one, two's complement). An empty field is 0.
/// `None` when it is neither.
pub fn number(field: &[u8]) -> Option<i128> {
    let (&first, rest) = field.split_first()?;
    if first == 0x80 || first == 0xff {
        if rest.len() > 15 {
            return None;
        }
        let mut v: i128 = if first == 0xff { -1 } else { 0 };
        for &b in rest {
            v = v * 256 + i128::from(b);
        }
        if first == 0xff && v >= 0 {
            return None;
        }
        return Some(v);
    }
    let mut i = 0;
    while i < field.len() && field[i] == b' ' {
        i += 1;
    }
    let mut v: i128 = 0;
    let mut digits = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        v = v * 8 + i128::from(field[i] - b'0');
        digits += 1;
        i += 1;
        if digits > 40 {
            return None;
        }
    }
    match field.get(i) {
        None | Some(0) | Some(b' ') => Some(v),
        _ => None,
    }
}

/// Parses pax records (`<length> <key>=<value>\n`, the length counting the whole record, so a value may hold
/// newlines) with the crate's one pax parser ([`crate::archive::xattrs::parse_pax`]), into owned pairs.
pub fn parse_pax(data: &[u8]) -> Result<Records, String> {
    crate::archive::xattrs::parse_pax(data).map(|r| {
        r.into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    })
}

/// Pax records, keyword and value, in order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Applies `new` records over `into`: a key given again replaces the old value; an empty value removes the key.
fn merge(into: &mut Records, new: Records) {
    for (k, v) in new {
        // Repeated keys of PAX sparse 0.0 (offset, numbytes pairs) are a list, kept in order.
        let repeated = matches!(&k[..], b"GNU.sparse.offset" | b"GNU.sparse.numbytes");
        if !repeated {
            into.retain(|(old, _)| *old != k);
        }
        if !v.is_empty() || repeated {
            into.push((k, v));
        }
    }
}

#[cfg(test)]
mod tests;
