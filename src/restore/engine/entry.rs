//! What the restore engine is fed: one entry of a backup (from a tar archive or a snapshot walk) with its metadata.

use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use crate::archive::sparse::TarSparse;
use crate::archive::xattrs::Attrs;

/// The type of a backup entry: the archive's (one kind type for the archive, its index and this engine).
pub use crate::archive::EntryKind;

/// A modification time with nanoseconds (seconds may be negative: before 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

impl Mtime {
    /// Which step of `step_ns` nanoseconds it lies in (counted from the epoch, earlier times negative): two mtimes
    /// in the same step are the same to a filesystem that keeps them in such steps.
    pub fn step(self, step_ns: u32) -> i128 {
        (i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec))
            .div_euclid(i128::from(step_ns.max(1)))
    }

    pub fn new(sec: i64, nsec: u32) -> Mtime {
        Mtime { sec, nsec }
    }

    /// Parses a PAX time value: `1700000000`, `1700000000.123456789`, `-1.5` (see
    /// [`crate::archive::tarfmt::parse_pax_time`], the one reader of pax times).
    pub fn parse_pax(value: &[u8]) -> Option<Mtime> {
        let (sec, nsec) = crate::archive::tarfmt::parse_pax_time(std::str::from_utf8(value).ok()?)?;
        Some(Mtime::new(sec, nsec))
    }
}

/// One entry of a backup, as an archive or a snapshot walk found it: the engine's only input type.
///
/// Nothing here is trusted: [`name`](Self::name) and [`link`](Self::link) are raw bytes exactly as found, and the
/// planner checks them (see [`super::safety`]). Content is not part of the entry: it is handed to
/// [`super::Applier::apply`] as a reader when the entry is applied, so that a tar stream can be read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreEntry {
    /// The path, relative to the backup's root, as raw bytes (`./` prefixes and `//` are tolerated).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// Content size for files, 0 for everything else.
    pub size: u64,
    /// A symlink's target (verbatim), or a hard link's target: the name of an earlier entry of the same backup.
    pub link: Option<Vec<u8>>,
    /// The content's sha256 when the source knows it (an archive index): then the content is checked as it is
    /// written, and `--compare content` can tell an unchanged file without reading the backup.
    pub sha256: Option<[u8; 32]>,
    /// `sha256` is a sparse member's stored digest (its PAX 1.0 map and data, holes not hashed: see
    /// [`crate::archive::index`]), not the content's: the content is checked by the sparse reader as it is read, and
    /// `--compare content` hashes the file found the same way.
    pub sha256_stored: bool,
    /// Opaque to the engine: where the source keeps this entry (an offset in the archive, ...), for callers that
    /// walk a [`super::Plan`] and fetch content by random access.
    pub locator: Option<u64>,
    /// Extended attributes and ACLs (`None`: none), applied after the owner and mode ([`super::attrs`]).
    pub attrs: Option<Box<Attrs>>,
}

impl RestoreEntry {
    /// An entry with default metadata (mode 0644 or 0755, owner 0, mtime 0), for building entries by hand.
    pub fn new(name: impl Into<Vec<u8>>, kind: EntryKind) -> RestoreEntry {
        RestoreEntry {
            name: name.into(),
            kind,
            mode: if kind.is_dir() { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: Mtime::default(),
            size: 0,
            link: None,
            sha256: None,
            sha256_stored: false,
            locator: None,
            attrs: None,
        }
    }

    /// The entry a tar archive describes. Reads the PAX extensions (for nanosecond mtimes); the content is left
    /// unread, so the same `tar::Entry` is then the content reader for [`super::Applier::apply`].
    ///
    /// Long and non-UTF-8 names (GNU `L`/`K` records, PAX `path`/`linkpath`) come through as raw bytes; PAX
    /// `uid`, `gid` and `size` are already applied by the `tar` crate. A GNU sparse member (old GNU or PAX) is a
    /// file with its real name and size; a PAX one's content at `locator` is its map and data
    /// ([`crate::archive::sparse::open`]). `locator` is the entry's content offset. Archives without an index are
    /// read by [`super::tarscan`], not through here.
    /// `None` for records that describe no file (a PAX global header, a GNU volume label).
    pub fn from_tar<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<RestoreEntry>> {
        let t = entry.header().entry_type();
        if t.is_pax_global_extensions() || t == tar::EntryType::new(b'V') {
            return Ok(None);
        }
        let mut name = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut size = entry.size();
        let locator = Some(entry.raw_file_position());
        let mut pax_mtime = None;
        if let Some(exts) = entry.pax_extensions()? {
            // The tar crate splits PAX records at newlines, so a record whose value holds one (a name with a
            // newline, an ACL, any xattr) reads as malformed pieces, and a piece of a value may look like a record
            // of its own (`"\n13 mtime=..."` inside an xattr). The first `mtime` is taken (writers put it first;
            // dbackup does whenever an entry has attributes); `GNU.sparse.*` count only before any broken piece
            // (`archive::sparse::inspect`).
            for ext in exts.flatten() {
                match ext.key_bytes() {
                    b"mtime" if pax_mtime.is_none() => {
                        pax_mtime = Mtime::parse_pax(ext.value_bytes())
                    }
                    _ => {}
                }
            }
        }
        let header = entry.header();
        let mut kind = kind_of_tar(header.entry_type());
        // GNU sparse members in PAX form: the real name and size are in `GNU.sparse.*` records (old GNU `S`
        // members come with their real size from the tar crate). A map that cannot be read is refused.
        match crate::archive::sparse::inspect(entry)? {
            TarSparse::Pax(p) if kind == EntryKind::File => {
                if let Some(real) = p.name {
                    name = real;
                }
                size = p.size;
            }
            TarSparse::Pax(_) => {
                kind = EntryKind::Other("sparse records on an entry that is not a file")
            }
            TarSparse::Bad(e) => kind = EntryKind::Other(e.kind_word()),
            TarSparse::No | TarSparse::OldGnu => {}
        }
        let header = entry.header();
        let mtime = match pax_mtime {
            Some(m) => m,
            None => Mtime::new(header.mtime().map(|m| m as i64).unwrap_or(0), 0),
        };
        Ok(Some(RestoreEntry {
            name,
            kind,
            mode: header.mode().unwrap_or(0) & 0o7777,
            uid: header.uid().map(|u| u as u32).unwrap_or(0),
            gid: header.gid().map(|g| g as u32).unwrap_or(0),
            mtime,
            size: if kind == EntryKind::File { size } else { 0 },
            link: match kind {
                EntryKind::Symlink | EntryKind::Hardlink => Some(link.unwrap_or_default()),
                _ => None,
            },
            sha256: None,
            sha256_stored: false,
            locator,
            attrs: None,
        }))
    }

    /// The entry a filesystem walk found: `meta` from `symlink_metadata`, `link` the symlink's target (read by the
    /// caller) or, for the second and later names of a hard-linked file, the name of the first.
    pub fn from_metadata(
        name: impl Into<Vec<u8>>,
        meta: &Metadata,
        link: Option<Vec<u8>>,
    ) -> RestoreEntry {
        let ft = meta.file_type();
        let kind = if link.is_some() && ft.is_file() {
            EntryKind::Hardlink
        } else {
            EntryKind::of_file_type(ft)
        };
        RestoreEntry {
            name: name.into(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: Mtime::new(meta.mtime(), meta.mtime_nsec() as u32),
            size: if kind == EntryKind::File {
                meta.len()
            } else {
                0
            },
            link,
            sha256: None,
            sha256_stored: false,
            locator: None,
            attrs: None,
        }
    }

    /// The name for people: see [`show`].
    pub fn display_name(&self) -> String {
        show(&self.name)
    }
}

fn kind_of_tar(t: tar::EntryType) -> EntryKind {
    use tar::EntryType as T;
    match t {
        T::Regular | T::Continuous => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::Hardlink,
        T::Fifo => EntryKind::Fifo,
        T::Char => EntryKind::Char,
        T::Block => EntryKind::Block,
        T::GNUSparse => EntryKind::File, // the tar crate expands old-GNU sparse files as it reads
        T::GNULongName | T::GNULongLink | T::XHeader | T::XGlobalHeader => {
            EntryKind::Other("stray extension header")
        }
        _ => EntryKind::Other("unknown tar entry type"),
    }
}

pub use crate::stdx::show;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(
            Mtime::parse_pax(b"1700000000"),
            Some(Mtime::new(1_700_000_000, 0))
        );
        assert_eq!(
            Mtime::parse_pax(b"1700000000.5"),
            Some(Mtime::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(
            Mtime::parse_pax(b"1.123456789123"),
            Some(Mtime::new(1, 123_456_789))
        );
        assert_eq!(Mtime::parse_pax(b"-1.5"), Some(Mtime::new(-2, 500_000_000)));
        assert_eq!(Mtime::parse_pax(b"-3"), Some(Mtime::new(-3, 0)));
        assert_eq!(Mtime::parse_pax(b"x"), None);
        assert_eq!(Mtime::parse_pax(b"1.x"), None);
        assert_eq!(Mtime::parse_pax(b""), None);
    }
}
