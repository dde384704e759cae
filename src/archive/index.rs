//! The archive index: one JSON line per archive entry (path, type, metadata, content sha256, offsets), written as
//! the archive streams, and read back one line at a time.
//!
//! Format (version 1), JSON Lines:
//! ```text
//! {"format":"dbackup-index","version":1,"tar_format":"pax","dbackup_version":"0.1.0","created":"...","source":"/snap"}
//! {"type":"dir","path":"home","mode":493,"uid":0,"gid":0,"mtime":1700000000,"header_offset":0,"data_offset":512}
//! {"type":"file","path":"home/u/.secrets","size":12,"mode":384,"uid":1000,"gid":1000,"mtime":1700000000,
//!  "mtime_nsec":5,"sha256":"…","header_offset":512,"data_offset":1536}
//! {"type":"hardlink","path":"home/u/b","link":"home/u/a","size":12,"sha256":"…","data_offset":1536,...}
//! {"type":"end","entries":3,"files":1,"file_bytes":12,"tar_bytes":10240,"tar_sha256":"…"}
//! ```
//! - Entries are in archive order, which is sorted by path component (a depth-first walk of sorted directories).
//! - `path` is relative to the snapshot root without a trailing slash; `link` is a symlink's target or, for a hard
//!   link, the path of the first name. Either is `path_b64`/`link_b64` (standard base64 of the raw bytes) when it is
//!   not UTF-8, so every name round-trips.
//! - `mode` is the permission bits (decimal), `uid`/`gid` numeric, `mtime` seconds since the epoch plus `mtime_nsec`
//!   (left out when 0), `rdev_major`/`rdev_minor` for devices.
//! - `header_offset` is where the entry's first header block starts in the tar stream (a pax header, if it has one);
//!   `data_offset` where its content starts. Offsets are in the joined tar stream, before any stage (encryption).
//! - Files and hard links carry `size` and `sha256` of the content; a hard link's `data_offset` points at the
//!   content of its first name, so any name can be restored with one seek. A hard link to a symlink (`ln -P`,
//!   `cp -al`, `rsync -H`; stored as GNU tar stores it, a `1` entry naming the symlink's first name) has neither
//!   `sha256` nor `size`, and its `data_offset` is the symlink's: the target text is the first name's `link`.
//! - A file stored as a GNU PAX 1.0 sparse member ([`super::sparse`]) also has
//!   `"sparse":{"stored":N,"stored_sha256":"…"}`: its `size` is the file's, `data_offset` is where its map starts,
//!   and `stored`/`stored_sha256` are the length and sha256 of what the member stores (the map block, then the data
//!   segments, without the padding). Its `sha256` is that same digest, the **stored digest**: holes are neither read
//!   nor hashed, so archiving, verifying and restoring a sparse file cost time in proportion to its data, not its
//!   size. Every consumer agrees: `verify` and `restore --verify` hash the member as stored; a restore checks the
//!   bytes it reads; `--compare content` and the comparison of a local snapshot with the index hash a file on disk
//!   the same way ([`super::sparse::stored_digest_of`]: mapped with `SEEK_DATA`/`SEEK_HOLE` as the writer maps it),
//!   so a file allocated otherwise counts as changed. Indexes written before this definition give the logical
//!   content's sha256 there (holes as zeros; it differs from `stored_sha256`), and are checked that way
//!   ([`IndexEntry::sha256_is_stored`]). A hard link to it carries the same record and sha256. GNU tar's view of
//!   the archive is unchanged: the digest is the index's alone.
//! - `xattrs` (an object: name, with `%` and bytes that are not UTF-8 as `%XX`, to the value in standard base64),
//!   `acl_access` and `acl_default` (ACLs in text form, numeric ids) hold an entry's extended attributes and ACLs,
//!   as its `SCHILY.*` pax records do ([`super::xattrs`]); left out when it has none (indexes written before they
//!   existed read as entries without any).
//! - The last line, `end`, totals the archive: a missing `end` means the index is truncated.
//!
//! Version 2: the manifest of an incremental archive (a full archive's index stays version 1, which every dbackup
//! reads). Its header adds `"kind":"incremental"`, `"base"` (the stamp of the backup it is based on) and
//! `"depends_on"` (every stamp whose archive of the same set holds content this manifest points to, sorted, the
//! base among them). The manifest is still complete: every entry of the snapshot is listed, in the same order. A
//! file whose content lies in an earlier backup has `"in":"<stamp>"` (one of `depends_on`), and its
//! `header_offset`, `data_offset` (and `sparse` record) are those of its entry in that backup's archive, where it
//! is stored itself (never a further `in`: a manifest points straight at the archive holding the bytes, so there
//! is no chain to walk and no cycle to follow). Only `file` entries have `in`; directories, symlinks, hard links and
//! devices are always stored in the archive itself (one small header each). The `end` line adds `referenced_files`
//! and `referenced_bytes` (the files and bytes kept in earlier archives). A deleted file is absent.
//!
//! ```text
//! {"format":"dbackup-index","version":2,...,"kind":"incremental","base":"2026-12-01-031500","depends_on":["2026-12-01-031500"]}
//! {"type":"file","path":"home/u/old","in":"2026-12-01-031500","size":12,...,"header_offset":512,"data_offset":1536}
//! ```

use std::cmp::Ordering;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::sink::Digest;
use super::tarfmt::EntryKind;
use super::xattrs::{self, Attrs};

/// The `format` of an index's first line.
pub const INDEX_FORMAT: &str = "dbackup-index";
/// The index format version of a full archive's index (what every dbackup reads).
pub const INDEX_VERSION: u32 = 1;
/// The index format version of an incremental archive's manifest (entries may point into earlier backups).
pub const INDEX_VERSION_INCREMENTAL: u32 = 2;
/// The most stamps a manifest may depend on (a chain is limited far below this by the config).
pub const MAX_DEPENDS_ON: usize = 1024;
/// The longest line an index reader accepts (an entry with a 4 KiB path and link target, base64-encoded, is under
/// 12 KiB): memory stays bounded whatever the index holds.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// The largest offset or offset plus size an index may give: the largest file (`off_t`).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Reads one line (newline included) into `buf`, at most [`MAX_LINE_BYTES`]: `Ok(None)` for a longer one.
pub fn read_line_bounded<R: BufRead>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let n = input
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    Ok((buf.len() <= MAX_LINE_BYTES).then_some(n))
}

/// Compares two paths component by component (`a/b` sorts before `a-c`, and a directory before its contents).
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    let mut x = a.split(|&c| c == b'/').filter(|c| !c.is_empty());
    let mut y = b.split(|&c| c == b'/').filter(|c| !c.is_empty());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => match p.cmp(q) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

/// The first line of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexHeader {
    pub format: String,
    pub version: u32,
    /// The tar dialect of the archive: always `pax`.
    pub tar_format: String,
    /// The dbackup version that wrote it.
    pub dbackup_version: String,
    pub created: chrono::DateTime<chrono::Utc>,
    /// The snapshot directory that was archived.
    pub source: String,
    /// Full (every content byte in this archive) or incremental (version 2 only).
    #[serde(default, skip_serializing_if = "ArchiveKind::is_full")]
    pub kind: ArchiveKind,
    /// The stamp of the backup an incremental is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Every stamp whose archive holds content this manifest points to (sorted, the base among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// Whether an archive holds every content byte of its snapshot or only what changed since its base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    #[default]
    Full,
    Incremental,
}

impl ArchiveKind {
    pub fn is_full(&self) -> bool {
        *self == ArchiveKind::Full
    }

    pub fn name(self) -> &'static str {
        match self {
            ArchiveKind::Full => "full",
            ArchiveKind::Incremental => "incremental",
        }
    }
}

impl IndexHeader {
    pub fn new(source: impl Into<String>) -> IndexHeader {
        IndexHeader {
            format: INDEX_FORMAT.to_string(),
            version: INDEX_VERSION,
            tar_format: "pax".to_string(),
            dbackup_version: env!("CARGO_PKG_VERSION").to_string(),
            created: chrono::Utc::now(),
            source: source.into(),
            kind: ArchiveKind::Full,
            base: None,
            depends_on: Vec::new(),
        }
    }

    /// The header of an incremental manifest based on `base`, pointing into `depends_on` (`base` is added).
    pub fn incremental(
        source: impl Into<String>,
        base: &str,
        mut depends_on: Vec<String>,
    ) -> IndexHeader {
        depends_on.push(base.to_string());
        depends_on.sort();
        depends_on.dedup();
        IndexHeader {
            version: INDEX_VERSION_INCREMENTAL,
            kind: ArchiveKind::Incremental,
            base: Some(base.to_string()),
            depends_on,
            ..IndexHeader::new(source)
        }
    }

    /// Checks what readers rely on: a version this code reads, and for a manifest, a base and dependencies that
    /// are stamps (sorted, unique, bounded, the base among them). Version 1 has neither.
    fn check(&self) -> Result<(), IndexError> {
        if self.format != INDEX_FORMAT
            || !(self.version == INDEX_VERSION || self.version == INDEX_VERSION_INCREMENTAL)
        {
            return Err(IndexError::Unsupported {
                format: self.format.clone(),
                version: self.version,
            });
        }
        let bad = |why: String| Err(IndexError::BadHeader(crate::stdx::show_str(&why)));
        let is_stamp = |s: &str| crate::snapshot::parse_stamp(s).is_some();
        match (self.kind, self.version) {
            (ArchiveKind::Full, _) => {
                if self.base.is_some() || !self.depends_on.is_empty() {
                    return bad("a full archive's index names a base or dependencies".into());
                }
            }
            (ArchiveKind::Incremental, INDEX_VERSION) => {
                return bad("an incremental manifest must be index version 2".into());
            }
            (ArchiveKind::Incremental, _) => {
                let Some(base) = &self.base else {
                    return bad("an incremental manifest without its base".into());
                };
                if !is_stamp(base) {
                    return bad(format!("base {base:?} is not a backup stamp"));
                }
                if self.depends_on.len() > MAX_DEPENDS_ON {
                    return bad(format!(
                        "depends_on lists {} backups, more than {MAX_DEPENDS_ON}",
                        self.depends_on.len()
                    ));
                }
                if let Some(s) = self.depends_on.iter().find(|s| !is_stamp(s)) {
                    return bad(format!(
                        "depends_on names {s:?}, which is not a backup stamp"
                    ));
                }
                if !self.depends_on.windows(2).all(|w| w[0] < w[1]) {
                    return bad("depends_on is not sorted and unique".into());
                }
                if !self.depends_on.contains(base) {
                    return bad(format!("depends_on does not list the base {base}"));
                }
            }
        }
        Ok(())
    }
}

/// One archive entry as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Raw path bytes, relative to the snapshot root, no trailing slash.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Content bytes (files and hard links; 0 otherwise).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Symlink target, or the first name of a hard-linked file.
    pub link: Option<Vec<u8>>,
    /// Content sha256 (files and hard links to files; `None` for a hard link to a symlink).
    pub sha256: Option<Digest>,
    /// Device numbers (character and block devices).
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes and ACLs (`None`: none).
    pub attrs: Option<Box<Attrs>>,
    pub header_offset: u64,
    pub data_offset: u64,
    /// Set when the file is stored as a sparse member (files and hard links).
    pub sparse: Option<SparseRecord>,
    /// The stamp of the earlier backup whose archive holds this entry (a file of an incremental manifest whose
    /// content did not change); `None`: this archive. The offsets and `sparse` are that archive's.
    pub stored_in: Option<Arc<str>>,
}

/// How a sparse file is stored: the bytes of its member (map and data, without the padding) and their sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseRecord {
    pub stored: u64,
    pub stored_sha256: Digest,
}

impl IndexEntry {
    /// The path as an OS path (relative to the snapshot root, i.e. the absolute path without its leading `/`).
    pub fn rel_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }

    /// The path for messages (non-UTF-8 bytes shown escaped).
    pub fn display_path(&self) -> String {
        crate::stdx::show(&self.path)
    }

    /// Whether `sha256` is a sparse member's stored digest (over its map and data, see the module's docs), rather
    /// than the logical content's (every file that is not sparse, and sparse members of older indexes).
    pub fn sha256_is_stored(&self) -> bool {
        self.sparse
            .is_some_and(|r| self.sha256 == Some(r.stored_sha256))
    }
}

/// The last line of an index: totals of the archive it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEnd {
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
    /// Length of the tar stream (before any stage), end-of-archive blocks and padding included.
    pub tar_bytes: u64,
    /// sha256 of the tar stream (before any stage); none for an encrypted archive, whose stream age authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_sha256: Option<Digest>,
    /// Files (and their content bytes) of a manifest whose content lies in earlier backups (`in`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referenced_files: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referenced_bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_b64: Option<String>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    stored_in: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    mtime_nsec: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rdev_major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rdev_minor: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xattrs: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acl_access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acl_default: Option<String>,
    header_offset: u64,
    data_offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sparse: Option<SparseRecord>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WireLine {
    File(WireEntry),
    Hardlink(WireEntry),
    Symlink(WireEntry),
    Dir(WireEntry),
    Fifo(WireEntry),
    Char(WireEntry),
    Block(WireEntry),
    End(IndexEnd),
}

/// How the writer opens each kind's entry line (serde writes an internally tagged enum's tag first).
const ENTRY_OPENINGS: [(&[u8], EntryKind); 7] = [
    (b"{\"type\":\"file\",", EntryKind::File),
    (b"{\"type\":\"hardlink\",", EntryKind::Hardlink),
    (b"{\"type\":\"symlink\",", EntryKind::Symlink),
    (b"{\"type\":\"dir\",", EntryKind::Dir),
    (b"{\"type\":\"fifo\",", EntryKind::Fifo),
    (b"{\"type\":\"char\",", EntryKind::Char),
    (b"{\"type\":\"block\",", EntryKind::Block),
];

/// An entry line that opens as the writer writes it (`{"type":"file",...`) parsed straight into its fields, with
/// its opening overwritten in `line` (`None`: any other line, parsed as a [`WireLine`]). It accepts exactly the
/// lines [`WireLine`] accepts, several times faster: serde buffers every field of an internally tagged enum
/// before it deserializes any (a second `type` is an unknown field here, a duplicate tag there: refused by both).
fn parse_entry_line(line: &mut [u8]) -> Option<Result<(EntryKind, WireEntry), serde_json::Error>> {
    let (opening, kind) = ENTRY_OPENINGS
        .iter()
        .find(|(opening, _)| line.starts_with(opening))?;
    // `{"type":"file",` -> `{`: the rest is the entry's own fields.
    let at = opening.len() - 1;
    line[at] = b'{';
    Some(serde_json::from_slice(&line[at..]).map(|w| (*kind, w)))
}

fn encode_name(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(data_encoding::BASE64.encode(bytes))),
    }
}

fn decode_name(
    text: Option<String>,
    b64: Option<String>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (text, b64) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => data_encoding::BASE64
            .decode(b.as_bytes())
            .map(Some)
            .map_err(|e| format!("{what}_b64 is not base64: {e}")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_b64")),
    }
}

impl IndexEntry {
    /// The entry's line; an error for a socket or an `Other` kind, which no index holds.
    fn to_wire(&self) -> io::Result<WireLine> {
        let (path, path_b64) = encode_name(&self.path);
        let (link, link_b64) = match &self.link {
            Some(l) => encode_name(l),
            None => (None, None),
        };
        let w = WireEntry {
            path,
            path_b64,
            link,
            link_b64,
            stored_in: self.stored_in.as_deref().map(str::to_string),
            size: self.size,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            sha256: self.sha256,
            rdev_major: self.rdev.map(|r| r.0),
            rdev_minor: self.rdev.map(|r| r.1),
            xattrs: self
                .attrs
                .as_ref()
                .filter(|a| !a.xattrs.is_empty())
                .map(|a| {
                    a.xattrs
                        .iter()
                        .map(|(k, v)| (xattrs::index_key(k), data_encoding::BASE64.encode(v)))
                        .collect()
                }),
            acl_access: self.attrs.as_ref().and_then(|a| a.acl_access.clone()),
            acl_default: self.attrs.as_ref().and_then(|a| a.acl_default.clone()),
            header_offset: self.header_offset,
            data_offset: self.data_offset,
            sparse: self.sparse,
        };
        Ok(match self.kind {
            EntryKind::File => WireLine::File(w),
            EntryKind::Hardlink => WireLine::Hardlink(w),
            EntryKind::Symlink => WireLine::Symlink(w),
            EntryKind::Dir => WireLine::Dir(w),
            EntryKind::Fifo => WireLine::Fifo(w),
            EntryKind::Char => WireLine::Char(w),
            EntryKind::Block => WireLine::Block(w),
            EntryKind::Socket | EntryKind::Other(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a {} has no place in an index", self.kind.word()),
                ));
            }
        })
    }

    /// An entry from its line; `depends_on` is the header's (an `in` must name one of them, and is shared).
    fn from_wire(
        kind: EntryKind,
        w: WireEntry,
        depends_on: &[Arc<str>],
    ) -> Result<IndexEntry, String> {
        let path = decode_name(w.path, w.path_b64, "path")?.ok_or("entry without a path")?;
        let stored_in = match w.stored_in {
            None => None,
            Some(_) if kind != EntryKind::File => {
                return Err(format!(
                    "a {} entry points into an earlier backup (only files may)",
                    kind.name()
                ));
            }
            Some(stamp) => match depends_on.iter().find(|d| ***d == *stamp) {
                Some(d) => Some(d.clone()),
                None => {
                    return Err(format!(
                        "\"in\" names {:?}, which the header's depends_on does not list",
                        crate::stdx::show_str(&stamp)
                    ));
                }
            },
        };
        let link = decode_name(w.link, w.link_b64, "link")?;
        let needs_link = matches!(kind, EntryKind::Symlink | EntryKind::Hardlink);
        if needs_link != link.is_some() {
            return Err(format!(
                "a {} entry {} a link target",
                kind.name(),
                if needs_link { "needs" } else { "has" }
            ));
        }
        // A hard link without a sha256 is a hard link to a symlink: no content, no size, no sparse record.
        let to_symlink = kind == EntryKind::Hardlink && w.sha256.is_none();
        if to_symlink && (w.size != 0 || w.sparse.is_some()) {
            return Err(
                "a hardlink entry without a sha256 (a link to a symlink) has a size or a sparse record".into(),
            );
        }
        let has_content = kind == EntryKind::File || (kind == EntryKind::Hardlink && !to_symlink);
        if has_content != w.sha256.is_some() {
            return Err(format!(
                "a {} entry {} a sha256",
                kind.name(),
                if has_content { "needs" } else { "has" }
            ));
        }
        if let Some(r) = &w.sparse {
            if !has_content {
                return Err(format!("a {} entry has a sparse record", kind.name()));
            }
            if w.data_offset
                .checked_add(r.stored)
                .filter(|e| *e <= MAX_OFFSET)
                .is_none()
            {
                return Err(format!(
                    "a sparse member of {} bytes at data_offset {} lies past the largest possible archive",
                    r.stored, w.data_offset
                ));
            }
        }
        // Offsets and sizes are used to seek and to add up: they must fit a file.
        let end = w
            .data_offset
            .checked_add(w.size)
            .filter(|e| *e <= MAX_OFFSET);
        if end.is_none() || w.header_offset > MAX_OFFSET {
            return Err(format!(
                "size {} at data_offset {} (header_offset {}) lies past the largest possible archive",
                w.size, w.data_offset, w.header_offset
            ));
        }
        if w.mtime_nsec >= 1_000_000_000 {
            return Err(format!(
                "mtime_nsec {} is not below one second",
                w.mtime_nsec
            ));
        }
        let rdev = match (w.rdev_major, w.rdev_minor) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, None) => None,
            _ => return Err("rdev_major without rdev_minor".into()),
        };
        let mut attrs = Attrs {
            acl_access: w.acl_access,
            acl_default: w.acl_default,
            ..Attrs::default()
        };
        for (k, v) in w.xattrs.unwrap_or_default() {
            let value = data_encoding::BASE64
                .decode(v.as_bytes())
                .map_err(|e| format!("the value of xattr {k:?} is not base64: {e}"))?;
            attrs.xattrs.insert(xattrs::from_index_key(&k)?, value);
        }
        Ok(IndexEntry {
            path,
            kind,
            size: w.size,
            mode: w.mode,
            uid: w.uid,
            gid: w.gid,
            mtime: w.mtime,
            mtime_nsec: w.mtime_nsec,
            link,
            sha256: w.sha256,
            rdev,
            attrs: attrs.boxed(),
            header_offset: w.header_offset,
            data_offset: w.data_offset,
            sparse: w.sparse,
            stored_in,
        })
    }
}

/// Writes an index line by line. The writer should be buffered; the caller hashes what it writes.
pub struct IndexWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> IndexWriter<W> {
    /// Starts an index with its header line.
    pub fn new(mut out: W, header: &IndexHeader) -> io::Result<Self> {
        let mut line = serde_json::to_vec(header)?;
        line.push(b'\n');
        out.write_all(&line)?;
        Ok(IndexWriter { out, line })
    }

    pub fn entry(&mut self, e: &IndexEntry) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &e.to_wire()?)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    /// Writes the `end` line and gives the writer back.
    pub fn finish(mut self, end: IndexEnd) -> io::Result<W> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &WireLine::End(end))?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(self.out)
    }

    /// The serialized length of an entry's line (for size estimates).
    pub(crate) fn line_len(e: &IndexEntry) -> u64 {
        /// Counts what is written to it, keeps nothing.
        struct Count(u64);
        impl Write for Count {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut n = Count(0);
        match e.to_wire().map(|w| serde_json::to_writer(&mut n, &w)) {
            Ok(Ok(())) => n.0 + 1,
            _ => 0,
        }
    }
}

/// Why an index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read the index: {0}")]
    Io(#[from] io::Error),
    #[error("the index is empty")]
    Empty,
    #[error("line 1 is not a dbackup index header: {0}")]
    BadHeader(String),
    #[error(
        "index format {format:?} version {version} is not supported (this dbackup reads {INDEX_FORMAT} versions {INDEX_VERSION} and {INDEX_VERSION_INCREMENTAL}); use a newer dbackup"
    )]
    Unsupported { format: String, version: u32 },
    #[error("line {line} of the index is malformed: {problem}")]
    BadLine { line: u64, problem: String },
    #[error("the index ends at line {line} without its `end` line: it is truncated")]
    Truncated { line: u64 },
    #[error("line {line} of the index follows its `end` line")]
    AfterEnd { line: u64 },
    #[error("line {line} of the index is longer than {MAX_LINE_BYTES} bytes: the index is damaged")]
    LineTooLong { line: u64 },
}

/// Reads an index one entry at a time; memory does not grow with the number of entries.
pub struct IndexReader<R> {
    input: R,
    header: IndexHeader,
    /// The header's `depends_on`, shared by the entries that point into them.
    depends_on: Vec<Arc<str>>,
    line_no: u64,
    buf: Vec<u8>,
    end: Option<IndexEnd>,
}

impl<R: BufRead> IndexReader<R> {
    /// Reads and checks the header line.
    pub fn new(mut input: R) -> Result<Self, IndexError> {
        let mut buf = Vec::new();
        match read_line_bounded(&mut input, &mut buf)? {
            Some(0) => return Err(IndexError::Empty),
            Some(_) => {}
            None => return Err(IndexError::LineTooLong { line: 1 }),
        }
        let header: IndexHeader = serde_json::from_slice(&buf)
            .map_err(|e| IndexError::BadHeader(crate::stdx::show_str(&e.to_string())))?;
        header.check()?;
        let depends_on = header.depends_on.iter().map(|s| Arc::from(&**s)).collect();
        Ok(IndexReader {
            input,
            header,
            depends_on,
            line_no: 1,
            buf,
            end: None,
        })
    }

    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// The `end` line, once [`next_entry`](Self::next_entry) has returned `None`.
    pub fn end(&self) -> Option<&IndexEnd> {
        self.end.as_ref()
    }

    /// The line number of the entry last returned (for messages).
    pub fn line(&self) -> u64 {
        self.line_no
    }

    /// The next entry; `None` after the `end` line. A missing `end` line is an error.
    pub fn next_entry(&mut self) -> Result<Option<IndexEntry>, IndexError> {
        if self.end.is_some() {
            return Ok(None);
        }
        self.buf.clear();
        let line = self.line_no.saturating_add(1);
        match read_line_bounded(&mut self.input, &mut self.buf)? {
            Some(0) => return Err(IndexError::Truncated { line: self.line_no }),
            Some(_) => {}
            None => return Err(IndexError::LineTooLong { line }),
        }
        self.line_no = line;
        let bad = |problem: String| IndexError::BadLine { line, problem };
        if self.buf.last() != Some(&b'\n') {
            return Err(IndexError::Truncated { line });
        }
        let json = |e: serde_json::Error| bad(crate::stdx::show_str(&e.to_string()));
        if let Some(parsed) = parse_entry_line(&mut self.buf) {
            let (kind, w) = parsed.map_err(json)?;
            return IndexEntry::from_wire(kind, w, &self.depends_on)
                .map(Some)
                .map_err(bad);
        }
        let wire: WireLine = serde_json::from_slice(&self.buf).map_err(json)?;
        let (kind, w) = match wire {
            WireLine::End(end) => {
                self.end = Some(end);
                self.buf.clear();
                let mut one = [0u8; 1];
                if self.input.read(&mut one)? != 0 {
                    return Err(IndexError::AfterEnd {
                        line: line.saturating_add(1),
                    });
                }
                return Ok(None);
            }
            WireLine::File(w) => (EntryKind::File, w),
            WireLine::Hardlink(w) => (EntryKind::Hardlink, w),
            WireLine::Symlink(w) => (EntryKind::Symlink, w),
            WireLine::Dir(w) => (EntryKind::Dir, w),
            WireLine::Fifo(w) => (EntryKind::Fifo, w),
            WireLine::Char(w) => (EntryKind::Char, w),
            WireLine::Block(w) => (EntryKind::Block, w),
        };
        IndexEntry::from_wire(kind, w, &self.depends_on)
            .map(Some)
            .map_err(bad)
    }

    /// Finds the entry for `path` (relative, no leading or trailing slash), reading the index as a stream.
    pub fn find(mut self, path: &[u8]) -> Result<Option<IndexEntry>, IndexError> {
        while let Some(e) = self.next_entry()? {
            if e.path == path {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

impl<R: BufRead> Iterator for IndexReader<R> {
    type Item = Result<IndexEntry, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

#[cfg(test)]
pub(in crate::archive) mod tests {
    use super::*;

    /// An entry of `path` and `kind` with no content, link or attributes, its data right after one header.
    pub(in crate::archive) fn entry(path: &[u8], kind: EntryKind) -> IndexEntry {
        IndexEntry {
            path: path.to_vec(),
            kind,
            size: 0,
            mode: 0o755,
            uid: 1,
            gid: 2,
            mtime: 3,
            mtime_nsec: 0,
            link: None,
            sha256: None,
            rdev: None,
            attrs: None,
            header_offset: 0,
            data_offset: 512,
            sparse: None,
            stored_in: None,
        }
    }

    fn end() -> IndexEnd {
        IndexEnd {
            entries: 3,
            files: 1,
            file_bytes: 5,
            tar_bytes: 10240,
            tar_sha256: Some(Digest([7; 32])),
            referenced_files: 0,
            referenced_bytes: 0,
        }
    }

    fn sample() -> (Vec<IndexEntry>, Vec<u8>) {
        let mut file = entry(b"a/b\xff\xfe", EntryKind::File);
        file.size = 5;
        file.sha256 = Some(Digest::of_bytes(b"hello"));
        file.mtime_nsec = 99;
        let mut holey = entry(b"a/disk.img", EntryKind::File);
        holey.size = 10 << 30;
        holey.sha256 = Some(Digest([3; 32]));
        holey.sparse = Some(SparseRecord {
            stored: 1024,
            stored_sha256: Digest([4; 32]),
        });
        let mut attrs = Attrs::default();
        attrs
            .xattrs
            .insert(b"user.\xff%".to_vec(), b"\0\n\xff".to_vec());
        attrs
            .xattrs
            .insert(b"security.capability".to_vec(), vec![1, 0, 0, 2]);
        attrs.acl_access = Some("user::rw-\nuser:7:r--\ngroup::r--\nmask::r--\nother::---".into());
        file.attrs = Some(Box::new(attrs));
        let mut link = entry(b"a/l", EntryKind::Symlink);
        link.link = Some(b"../\x80x".to_vec());
        let entries = vec![entry(b"a", EntryKind::Dir), file, holey, link];
        let mut w = IndexWriter::new(Vec::new(), &IndexHeader::new("/snap")).unwrap();
        for e in &entries {
            w.entry(e).unwrap();
        }
        (entries, w.finish(end()).unwrap())
    }

    /// A line written before attributes were recorded reads as an entry without any.
    #[test]
    fn old_lines_read_without_attributes() {
        let line = br#"{"format":"dbackup-index","version":1,"tar_format":"pax","dbackup_version":"0.1.0","created":"2025-01-01T00:00:00Z","source":"/s"}
{"type":"file","path":"f","size":1,"mode":420,"uid":0,"gid":0,"mtime":5,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","header_offset":0,"data_offset":512}
{"type":"end","entries":1,"files":1,"file_bytes":1,"tar_bytes":10240}
"#;
        let e = IndexReader::new(&line[..])
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(e.attrs, None);
    }

    #[test]
    fn entries_round_trip_including_non_utf8_names() {
        let (entries, bytes) = sample();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""path_b64":"#), "{text}");
        let mut r = IndexReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().source, "/snap");
        let read: Vec<IndexEntry> = r.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, entries);
        assert_eq!(r.end(), Some(&end()));
        let found = IndexReader::new(&bytes[..])
            .unwrap()
            .find(b"a/l")
            .unwrap()
            .unwrap();
        assert_eq!(found, entries[3]);
        assert!(
            text.contains(r#""sparse":{"stored":1024,"stored_sha256":"#),
            "{text}"
        );
        assert!(
            IndexReader::new(&bytes[..])
                .unwrap()
                .find(b"a/x")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn truncated_or_extended_index_is_an_error() {
        let (_, bytes) = sample();
        let last_line = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        let cut = &bytes[..last_line];
        let err = IndexReader::new(cut)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(err, IndexError::Truncated { .. }), "{err}");
        let cut = &bytes[..bytes.len() - 1];
        let err = IndexReader::new(cut)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(err, IndexError::Truncated { .. }), "{err}");
        let mut more = bytes.clone();
        more.extend_from_slice(b"{}\n");
        let err = IndexReader::new(&more[..])
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(err, IndexError::AfterEnd { .. }), "{err}");
    }

    #[test]
    fn line_len_is_the_written_line_length() {
        // The space check estimates an index's size from line_len: it must be exactly what the writer writes.
        let (entries, bytes) = sample();
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), entries.len() + 2, "header, entries, end");
        for (e, line) in entries.iter().zip(&lines[1..]) {
            assert_eq!(IndexWriter::<Vec<u8>>::line_len(e), line.len() as u64);
        }
    }

    /// An entry line as the writer opens it (`{"type":"file",`) is parsed straight into its fields; the same line
    /// with its keys in another order goes through the tagged enum and gives the same entry; a second `type` is
    /// refused either way. (New with the direct parse; before, every line went through the tagged enum.)
    #[test]
    fn entry_lines_read_the_same_in_any_key_order() {
        let (entries, bytes) = sample();
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        let reorder = |line: &[u8]| -> Vec<u8> {
            // `type` last: not the writer's opening.
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let mut m = v.as_object().unwrap().clone();
            let t = m.remove("type").unwrap();
            let mut out = serde_json::to_vec(&m).unwrap();
            out.pop();
            out.extend_from_slice(format!(",\"type\":{t}}}\n").as_bytes());
            out
        };
        let reordered: Vec<u8> = std::iter::once(lines[0].to_vec())
            .chain(lines[1..lines.len() - 1].iter().map(|l| reorder(l)))
            .chain(std::iter::once(lines[lines.len() - 1].to_vec()))
            .flatten()
            .collect();
        // The writer's lines take the direct parse, the reordered ones the tagged enum.
        assert!(lines[1..lines.len() - 1].iter().all(|l| {
            ENTRY_OPENINGS
                .iter()
                .any(|(opening, _)| l.starts_with(opening))
        }));
        assert!(!reordered[lines[0].len()..].starts_with(b"{\"type\""));
        for input in [&bytes, &reordered] {
            let got = IndexReader::new(&input[..])
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            assert_eq!(got, entries);
        }
        let twice = |line: &[u8], at: usize| -> Vec<u8> {
            let mut l = line.to_vec();
            l.splice(at..at, b"\"type\":\"dir\",".iter().copied());
            [lines[0], &l, lines[lines.len() - 1]].concat()
        };
        let file = lines[2];
        for input in [
            twice(file, "{\"type\":\"file\",".len()),
            twice(&reorder(file), 1),
        ] {
            let err = IndexReader::new(&input[..])
                .unwrap()
                .next_entry()
                .unwrap_err();
            assert!(matches!(err, IndexError::BadLine { line: 2, .. }), "{err}");
        }
    }

    #[test]
    fn errors_name_the_right_line() {
        // header = line 1, entries = lines 2..=5, end = line 6.
        let (_, bytes) = sample();
        let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
        let read_all = |b: &[u8]| IndexReader::new(b).unwrap().collect::<Result<Vec<_>, _>>();

        let mut r = IndexReader::new(&bytes[..]).unwrap();
        assert_eq!(r.line(), 1);
        for want in 2..=5 {
            r.next_entry().unwrap().unwrap();
            assert_eq!(r.line(), want);
        }
        assert!(r.next_entry().unwrap().is_none());

        let no_end = lines[..5].concat();
        match read_all(&no_end) {
            Err(IndexError::Truncated { line: 5 }) => {}
            other => panic!("{other:?}"),
        }
        let cut_end = &bytes[..bytes.len() - 1];
        match read_all(cut_end) {
            Err(IndexError::Truncated { line: 6 }) => {}
            other => panic!("{other:?}"),
        }
        let mut extended = bytes.clone();
        extended.extend_from_slice(b"{}\n");
        let err = read_all(&extended).unwrap_err();
        assert!(matches!(err, IndexError::AfterEnd { line: 7 }), "{err}");
        assert_eq!(
            err.to_string(),
            "line 7 of the index follows its `end` line"
        );
        let mut bad = lines.clone();
        bad[2] = b"{\"not\": \"an entry\"}\n";
        let err = read_all(&bad.concat()).unwrap_err();
        assert!(matches!(err, IndexError::BadLine { line: 3, .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("line 3 of the index is malformed: "),
            "{err}"
        );
    }

    #[test]
    fn other_formats_are_refused() {
        let err = IndexReader::new(&b"{\"format\":\"x\"}\n"[..])
            .err()
            .unwrap();
        assert!(matches!(err, IndexError::BadHeader(_)), "{err}");
        let mut h = IndexHeader::new("/");
        h.version = 99;
        let line = serde_json::to_vec(&h).unwrap();
        let err = IndexReader::new(&line[..]).err().unwrap();
        assert!(
            matches!(err, IndexError::Unsupported { version: 99, .. }),
            "{err}"
        );
    }

    const B1: &str = "2026-12-01-031500";
    const B2: &str = "2026-12-02-031500";

    /// A manifest: one entry here, one in each of two earlier backups.
    fn manifest() -> (Vec<IndexEntry>, Vec<u8>) {
        let header = IndexHeader::incremental("/snap", B2, vec![B1.into()]);
        let mut here = entry(b"a", EntryKind::File);
        here.size = 5;
        here.sha256 = Some(Digest::of_bytes(b"hello"));
        let mut old = here.clone();
        old.path = b"b".to_vec();
        old.stored_in = Some(Arc::from(B1));
        old.data_offset = 1 << 40;
        let mut older = here.clone();
        older.path = b"c".to_vec();
        older.stored_in = Some(Arc::from(B2));
        let entries = vec![here, old, older];
        let mut w = IndexWriter::new(Vec::new(), &header).unwrap();
        for e in &entries {
            w.entry(e).unwrap();
        }
        let mut end = end();
        end.referenced_files = 2;
        end.referenced_bytes = 10;
        (entries, w.finish(end).unwrap())
    }

    /// An incremental manifest (version 2) round-trips: its header's base and dependencies, each entry's `in`, the
    /// `end` line's referenced totals. (Before: there was no such format; every index was a full archive's.)
    #[test]
    fn manifests_round_trip_with_entries_in_earlier_backups() {
        let (entries, bytes) = manifest();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""version":2"#), "{text}");
        assert!(text.contains(r#""kind":"incremental","base":"2026-12-02-031500","depends_on":["2026-12-01-031500","2026-12-02-031500"]"#), "{text}");
        assert!(text.contains(r#""in":"2026-12-01-031500""#), "{text}");
        let mut r = IndexReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().kind, ArchiveKind::Incremental);
        assert_eq!(r.header().base.as_deref(), Some(B2));
        let read: Vec<IndexEntry> = r.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, entries);
        assert_eq!(r.end().unwrap().referenced_files, 2);
        // A full archive's index is still version 1 with none of it, so older readers keep reading it.
        let (_, full) = sample();
        let text = String::from_utf8(full).unwrap();
        assert!(
            text.starts_with(r#"{"format":"dbackup-index","version":1,"#),
            "{text}"
        );
        assert!(
            !text.contains("depends_on")
                && !text.contains("\"in\"")
                && !text.contains("referenced"),
            "{text}"
        );
    }

    /// What a hostile drive could put in a manifest is refused with the line and the reason, never trusted: an
    /// `in` naming a backup the header does not depend on, or on a directory; a header whose base or dependencies
    /// are not stamps, unsorted, or missing the base; an incremental header claiming version 1; a version-1 header
    /// with dependencies.
    #[test]
    fn hostile_manifests_are_refused() {
        let (_, bytes) = manifest();
        let text = String::from_utf8(bytes).unwrap();
        let read_all =
            |t: &str| IndexReader::new(t.as_bytes()).and_then(|r| r.collect::<Result<Vec<_>, _>>());
        let cases: &[(&str, &str, &str)] = &[
            (
                r#""in":"2026-12-01-031500""#,
                r#""in":"2026-11-30-031500""#,
                "does not list",
            ),
            (
                r#""in":"2026-12-01-031500""#,
                r#""in":"../../etc""#,
                "does not list",
            ),
            (
                r#""base":"2026-12-02-031500""#,
                r#""base":"../x""#,
                "not a backup stamp",
            ),
            (
                r#""depends_on":["2026-12-01-031500","2026-12-02-031500"]"#,
                r#""depends_on":["2026-12-02-031500","2026-12-01-031500"]"#,
                "not sorted",
            ),
            (
                r#""depends_on":["2026-12-01-031500","2026-12-02-031500"]"#,
                r#""depends_on":["2026-12-01-031500"]"#,
                "does not list the base",
            ),
            (
                r#""depends_on":["2026-12-01-031500","2026-12-02-031500"]"#,
                r#""depends_on":["2026-12-01-031500","x"]"#,
                "not a backup stamp",
            ),
            (
                r#""version":2"#,
                r#""version":1"#,
                "must be index version 2",
            ),
            (
                r#""kind":"incremental","base":"2026-12-02-031500","#,
                "",
                "names a base",
            ),
            (r#""kind":"incremental","#, "", "names a base"),
            (r#""version":2"#, r#""version":3"#, "not supported"),
        ];
        for (from, to, want) in cases {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = read_all(&bad).expect_err(to).to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
        // `in` on anything but a file.
        let dir = text.replacen(
            r#"{"type":"file","path":"a","#,
            r#"{"type":"dir","path":"a","in":"2026-12-01-031500","#,
            1,
        );
        let err = read_all(&dir).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("only files may"),
            "{err}"
        );
    }
}
