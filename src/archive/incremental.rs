//! Incremental archives: the base an incremental is written against (its manifest, read in step with the walk, and
//! the snapshot it was made from, when it is still here), and the one decision of whether an entry changed
//! ([`decide`], pure and table-tested).
//!
//! An entry is unchanged when its inode is shared with the same path in the base's snapshot (`rsync --link-dest`
//! made it so: no read, no hash); when that snapshot is gone, when its kind, size, mtime (ns), mode, owner, group,
//! xattrs and ACLs equal the base manifest's; with [`ChangeMethod::Content`] (the full schedule's content check),
//! only when the content read and hashed equals the manifest's sha256 too. Only regular files with one name in the
//! snapshot are ever left out of an incremental archive; everything else is stored again (a header each, or a
//! hard-linked file's content), so that the archive holding a referenced entry stores it as a plain `file`.

use std::cmp::Ordering;
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::index::{IndexEntry, IndexError, IndexReader, cmp_paths};
use super::tarfmt::EntryKind;

/// How an incremental finds what changed since its base (recorded in `backup.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeMethod {
    /// The base's snapshot is here: a shared inode is an unchanged file; anything else is stored.
    Inode,
    /// The base's snapshot is gone: metadata compared with the base manifest.
    Metadata,
    /// Metadata, then the content of every file that looks unchanged read and hashed.
    Content,
}

impl ChangeMethod {
    pub fn name(self) -> &'static str {
        match self {
            ChangeMethod::Inode => "inode",
            ChangeMethod::Metadata => "metadata",
            ChangeMethod::Content => "content",
        }
    }
}

/// The backup an incremental is written against.
pub struct IncrementalBase {
    /// The base backup's stamp.
    pub stamp: String,
    /// Opens the base's manifest (the plain index of the same set), once for the scan and once for the write.
    pub open_manifest: Box<dyn Fn() -> io::Result<Box<dyn BufRead>>>,
    /// The local snapshot the base was made from, when it still exists.
    pub snapshot: Option<PathBuf>,
    /// Read and hash files whose metadata did not change (the full schedule's content comparison).
    pub compare_content: bool,
}

impl IncrementalBase {
    pub fn method(&self) -> ChangeMethod {
        match (self.compare_content, &self.snapshot) {
            (true, _) => ChangeMethod::Content,
            (false, Some(_)) => ChangeMethod::Inode,
            (false, None) => ChangeMethod::Metadata,
        }
    }
}

/// Why the base cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("cannot open the manifest of base {stamp}: {source}")]
    Open { stamp: String, source: io::Error },
    #[error("the manifest of base {stamp} cannot be read: {source}")]
    Index { stamp: String, source: IndexError },
    #[error("the manifest of base {stamp} is out of order at line {line}: it is damaged")]
    Order { stamp: String, line: u64 },
}

/// The base manifest, read forward in step with the walk (both are in archive order).
pub(crate) struct BaseCursor {
    stamp: String,
    /// The base's own stamp, shared by the entries it stores itself.
    own: Arc<str>,
    reader: IndexReader<Box<dyn BufRead>>,
    next: Option<IndexEntry>,
    pub(crate) depends_on: Vec<String>,
}

impl BaseCursor {
    pub(crate) fn open(base: &IncrementalBase) -> Result<BaseCursor, BaseError> {
        let stamp = base.stamp.clone();
        let input = (base.open_manifest)().map_err(|source| BaseError::Open {
            stamp: stamp.clone(),
            source,
        })?;
        let mut reader = IndexReader::new(input).map_err(|source| BaseError::Index {
            stamp: stamp.clone(),
            source,
        })?;
        let depends_on = reader.header().depends_on.clone();
        let next = reader.next_entry().map_err(|source| BaseError::Index {
            stamp: stamp.clone(),
            source,
        })?;
        Ok(BaseCursor {
            own: Arc::from(stamp.as_str()),
            stamp,
            reader,
            next,
            depends_on,
        })
    }

    /// The base's entry for `path`, if it has one. Paths must be asked for in archive order.
    pub(crate) fn find(&mut self, path: &[u8]) -> Result<Option<IndexEntry>, BaseError> {
        loop {
            let Some(e) = &self.next else {
                return Ok(None);
            };
            match cmp_paths(&e.path, path) {
                Ordering::Greater => return Ok(None),
                Ordering::Equal => {
                    let mut found = self.advance()?;
                    // Where its bytes are: the base's own archive, or where the base points.
                    if found.stored_in.is_none() {
                        found.stored_in = Some(self.own.clone());
                    }
                    return Ok(Some(found));
                }
                Ordering::Less => {
                    self.advance()?;
                }
            }
        }
    }

    fn advance(&mut self) -> Result<IndexEntry, BaseError> {
        let index = |source| BaseError::Index {
            stamp: self.stamp.clone(),
            source,
        };
        let next = self.reader.next_entry().map_err(index)?;
        if let (Some(n), Some(cur)) = (&next, &self.next)
            && cmp_paths(&cur.path, &n.path) != Ordering::Less
        {
            return Err(BaseError::Order {
                stamp: self.stamp.clone(),
                line: self.reader.line(),
            });
        }
        Ok(std::mem::replace(&mut self.next, next).expect("called with an entry"))
    }
}

/// What [`decide`] says of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store it in this archive.
    Store(Why),
    /// Point to the base's entry: nothing read.
    Unchanged,
    /// Metadata equal: read and hash it, point to the base's entry when the hash equals, else store it.
    CompareContent,
}

/// Why an entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Not a regular file (stored as a header), or a file with several names here.
    NotAFile,
    New,
    /// The base stores it as something else than a single-named file.
    Kind,
    Changed,
}

/// The facts of one walked entry that [`decide`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The entry as it will be written (metadata and attributes read from the snapshot).
    pub entry: &'a IndexEntry,
    /// It has several names inside this snapshot (always stored: the archive keeps hard links together).
    pub linked: bool,
    /// Whether the same path in the base's snapshot is the same inode (`None`: that snapshot is gone).
    pub same_inode: Option<bool>,
}

/// Whether an entry is stored again or points into the base (pure).
pub fn decide(seen: Seen<'_>, base: Option<&IndexEntry>, method: ChangeMethod) -> Decision {
    let e = seen.entry;
    if e.kind != EntryKind::File || seen.linked {
        return Decision::Store(Why::NotAFile);
    }
    let Some(b) = base else {
        return Decision::Store(Why::New);
    };
    if b.kind != EntryKind::File || b.sha256.is_none() {
        return Decision::Store(Why::Kind);
    }
    let metadata_equal = (
        e.size,
        e.mtime,
        e.mtime_nsec,
        e.mode,
        e.uid,
        e.gid,
        &e.attrs,
    ) == (
        b.size,
        b.mtime,
        b.mtime_nsec,
        b.mode,
        b.uid,
        b.gid,
        &b.attrs,
    );
    match (method, seen.same_inode) {
        // Snapshots are never changed in place: a shared inode is the same file, metadata and all.
        (ChangeMethod::Inode, Some(true)) if metadata_equal => Decision::Unchanged,
        (ChangeMethod::Inode, Some(_)) => Decision::Store(Why::Changed),
        (_, _) if !metadata_equal => Decision::Store(Why::Changed),
        (ChangeMethod::Content, _) => Decision::CompareContent,
        (_, _) => Decision::Unchanged,
    }
}

/// The entry an unchanged file gets in the new manifest: the base's location, this walk's name and metadata.
pub(crate) fn referenced(current: &IndexEntry, base: &IndexEntry) -> IndexEntry {
    IndexEntry {
        header_offset: base.header_offset,
        data_offset: base.data_offset,
        sha256: base.sha256,
        sparse: base.sparse,
        stored_in: base.stored_in.clone(),
        ..current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Digest;

    fn file() -> IndexEntry {
        IndexEntry {
            size: 10,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            sha256: Some(Digest([1; 32])),
            ..crate::archive::index::tests::entry(b"a/f", EntryKind::File)
        }
    }

    /// Every way an entry can differ from its base, under each method. (Before: every external archive was full.)
    #[test]
    fn decisions_table() {
        // Stays long: a table of cases, one per row.
        use ChangeMethod::*;
        use Decision::*;
        type Edit = fn(&mut IndexEntry);
        let same: Edit = |_| {};
        let size: Edit = |e| e.size += 1;
        let mtime_ns: Edit = |e| e.mtime_nsec += 1;
        let mode: Edit = |e| e.mode = 0o600;
        let owner: Edit = |e| e.uid = 0;
        let group: Edit = |e| e.gid = 0;
        let xattr: Edit = |e| {
            let mut a = crate::archive::Attrs::default();
            a.xattrs.insert(b"user.x".to_vec(), b"1".to_vec());
            e.attrs = Some(Box::new(a));
        };
        let dir: Edit = |e| {
            e.kind = EntryKind::Dir;
            e.size = 0;
            e.sha256 = None;
        };
        let hardlink: Edit = |e| {
            e.kind = EntryKind::Hardlink;
            e.link = Some(b"a/g".to_vec());
        };
        // (what differs in the current entry, what differs in the base, linked, same inode, method, decision)
        type Case = (
            &'static str,
            Edit,
            Edit,
            bool,
            Option<bool>,
            ChangeMethod,
            Decision,
        );
        let cases: &[Case] = &[
            (
                "inode shared",
                same,
                same,
                false,
                Some(true),
                Inode,
                Unchanged,
            ),
            (
                "new inode, same metadata",
                same,
                same,
                false,
                Some(false),
                Inode,
                Store(Why::Changed),
            ),
            (
                "new inode, new size",
                size,
                same,
                false,
                Some(false),
                Inode,
                Store(Why::Changed),
            ),
            (
                "metadata equal",
                same,
                same,
                false,
                None,
                Metadata,
                Unchanged,
            ),
            (
                "size",
                size,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "mtime ns",
                mtime_ns,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "mode",
                mode,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "owner",
                owner,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "group",
                group,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "xattr added",
                xattr,
                same,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "xattr removed",
                same,
                xattr,
                false,
                None,
                Metadata,
                Store(Why::Changed),
            ),
            (
                "file was a directory",
                same,
                dir,
                false,
                None,
                Metadata,
                Store(Why::Kind),
            ),
            (
                "base stored a hard link",
                same,
                hardlink,
                false,
                None,
                Metadata,
                Store(Why::Kind),
            ),
            (
                "now a directory",
                dir,
                same,
                false,
                None,
                Metadata,
                Store(Why::NotAFile),
            ),
            (
                "several names here",
                same,
                same,
                true,
                Some(true),
                Inode,
                Store(Why::NotAFile),
            ),
            (
                "content due, metadata equal",
                same,
                same,
                false,
                None,
                Content,
                CompareContent,
            ),
            (
                "content due, inode shared",
                same,
                same,
                false,
                Some(true),
                Content,
                CompareContent,
            ),
            (
                "content due, size differs",
                size,
                same,
                false,
                None,
                Content,
                Store(Why::Changed),
            ),
        ];
        for (name, cur, base, linked, same_inode, method, want) in cases {
            let mut c = file();
            cur(&mut c);
            let mut b = file();
            base(&mut b);
            let seen = Seen {
                entry: &c,
                linked: *linked,
                same_inode: *same_inode,
            };
            assert_eq!(decide(seen, Some(&b), *method), *want, "{name}");
        }
        let c = file();
        let seen = Seen {
            entry: &c,
            linked: false,
            same_inode: None,
        };
        assert_eq!(decide(seen, None, Metadata), Store(Why::New), "new");
    }

    /// The cursor finds entries in walk order, skips deleted ones, marks where each one's bytes are, and stops at a
    /// manifest out of order instead of missing entries.
    #[test]
    fn the_cursor_walks_the_base_in_step() {
        use crate::archive::index::{IndexEnd, IndexHeader, IndexWriter};
        let write = |paths: &[&[u8]]| {
            let mut w = IndexWriter::new(Vec::new(), &IndexHeader::new("/s")).unwrap();
            for p in paths {
                let mut e = file();
                e.path = p.to_vec();
                w.entry(&e).unwrap();
            }
            w.finish(IndexEnd {
                entries: 0,
                files: 0,
                file_bytes: 0,
                tar_bytes: 0,
                tar_sha256: None,
                referenced_files: 0,
                referenced_bytes: 0,
            })
            .unwrap()
        };
        let base = |bytes: Vec<u8>| IncrementalBase {
            stamp: "2026-12-01-031500".into(),
            open_manifest: Box::new(move || Ok(Box::new(io::Cursor::new(bytes.clone())))),
            snapshot: None,
            compare_content: false,
        };
        let b = base(write(&[b"a", b"a/b", b"a/b/c", b"a-z", b"d"]));
        let mut c = BaseCursor::open(&b).unwrap();
        assert!(c.find(b"a").unwrap().is_some());
        let e = c.find(b"a/b/c").unwrap().unwrap();
        assert_eq!(e.stored_in.as_deref(), Some("2026-12-01-031500"));
        assert!(c.find(b"a/x").unwrap().is_none());
        assert!(c.find(b"d").unwrap().is_some());
        assert!(c.find(b"e").unwrap().is_none());
        let b = base(write(&[b"b", b"a", b"c"]));
        let mut c = BaseCursor::open(&b).unwrap();
        let err = c.find(b"c").unwrap_err();
        assert!(matches!(err, BaseError::Order { line: 3, .. }), "{err}");
    }
}
