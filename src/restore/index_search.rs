//! Random access into an archive's index: the index lists entries in archive order, which is sorted component by
//! component (a depth-first walk of sorted directories), so a name is found by binary search over the file's bytes
//! with a handful of small reads, and a directory's entries are the lines that follow it. Restoring one file from a
//! backup of a million reads a few kilobytes of its index, not all of it.
//!
//! What is read is checked: the header line, the `end` line (a truncated index is refused), and the order of every
//! line read in sequence (a line out of order means damage: the restore stops rather than miss entries). Every entry
//! restored is also checked against its header in the archive (see [`super::content`]).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::rc::Rc;

use crate::archive::index::{IndexError, IndexReader, MAX_LINE_BYTES, read_line_bounded};
use crate::archive::{ArchiveFiles, ArchiveReader, IndexEntry};

/// Why the index cannot be searched.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("cannot read the index {label}: {source}")]
    Io { label: String, source: io::Error },
    #[error("the index {label} is damaged: {problem}; check the backup with --verify")]
    Damaged { label: String, problem: String },
}

pub use crate::archive::index::cmp_paths;

/// Whether `path` is `dir` or lies below it (component-wise; the empty `dir` holds everything).
pub fn is_under(path: &[u8], dir: &[u8]) -> bool {
    let mut x = path.split(|&c| c == b'/').filter(|c| !c.is_empty());
    for d in dir.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
        if x.next() != Some(d) {
            return false;
        }
    }
    true
}

/// An index opened for searching.
pub struct SortedIndex {
    reader: ArchiveReader,
    label: String,
    /// The header line, newline included (to parse single lines with [`IndexReader`]).
    header: Vec<u8>,
    /// Where the entry lines start and where the `end` line starts.
    start: u64,
    end: u64,
    /// Blocks read so far, by number.
    blocks: HashMap<u64, Rc<[u8]>>,
}

/// Bytes read at a time when looking for a line.
const CHUNK: usize = 8 << 10;
/// The unit of the block cache.
const BLOCK: usize = 16 << 10;
/// At most this many blocks are kept (64 MiB); then the cache starts over.
const MAX_BLOCKS: usize = 4096;
/// The longest line read (one more byte than an index line may have, to tell a longer one).
const MAX_LINE: u64 = MAX_LINE_BYTES as u64 + 1;

impl SortedIndex {
    pub fn open(files: &ArchiveFiles) -> Result<SortedIndex, SearchError> {
        let label = files.label();
        let io_err = |source| SearchError::Io {
            label: label.clone(),
            source,
        };
        let damaged = |problem: String| SearchError::Damaged {
            label: label.clone(),
            problem,
        };
        let mut reader = files.open().map_err(io_err)?;
        // The plaintext length: for an encrypted index, finding it reads (and authenticates) the final chunk.
        let len = reader.seek(SeekFrom::End(0)).map_err(io_err)?;
        let (header_start, header) = read_line_at(&mut reader, 0, len.min(MAX_LINE))
            .map_err(io_err)?
            .ok_or_else(|| {
                damaged(if len == 0 {
                    "it is empty".into()
                } else {
                    format!("its first line does not end within {MAX_LINE_BYTES} bytes")
                })
            })?;
        debug_assert_eq!(header_start, 0);
        IndexReader::new(Cursor::new(&header)).map_err(|e| damaged(e.to_string()))?;
        // The last line must be the `end` line: an index without it is truncated. It is short: read a little of the
        // tail first, more only when the last line does not fit.
        let mut tail = len.min(4 << 10);
        let (buf, last_start) = loop {
            reader.seek(SeekFrom::Start(len - tail)).map_err(io_err)?;
            let mut buf = vec![0u8; tail as usize];
            reader.read_exact(&mut buf).map_err(io_err)?;
            if buf.last() != Some(&b'\n') {
                return Err(damaged(
                    "its last line is cut short: it is truncated".into(),
                ));
            }
            let body = &buf[..buf.len() - 1];
            match body.iter().rposition(|&b| b == b'\n') {
                Some(i) => break (buf.clone(), i + 1),
                None if tail == len => break (buf.clone(), 0),
                None if tail >= MAX_LINE => {
                    return Err(damaged(format!(
                        "its last line is longer than {MAX_LINE_BYTES} bytes"
                    )));
                }
                None => tail = len.min(tail.saturating_mul(16)).min(MAX_LINE),
            }
        };
        let body = &buf[..buf.len() - 1];
        let last: serde_json::Value = serde_json::from_slice(&body[last_start..])
            .map_err(|e| damaged(format!("its last line is not JSON ({e})")))?;
        if last["type"] != "end" {
            return Err(damaged(
                "it does not end with its `end` line: it is truncated".into(),
            ));
        }
        let end = len - tail + last_start as u64;
        let start = header.len() as u64;
        if end < start {
            return Err(damaged("its header and end lines overlap".into()));
        }
        Ok(SortedIndex {
            reader,
            label,
            header,
            start,
            end,
            blocks: HashMap::new(),
        })
    }

    fn damaged(&self, problem: String) -> SearchError {
        SearchError::Damaged {
            label: self.label.clone(),
            problem,
        }
    }

    fn parse(&self, line: &[u8], at: u64) -> Result<IndexEntry, SearchError> {
        parse_line(&self.header, &self.label, line, at)
    }

    /// The block `n` of the index (`BLOCK` bytes, fewer at its end), read once.
    fn block(&mut self, n: u64) -> Result<Rc<[u8]>, SearchError> {
        if let Some(b) = self.blocks.get(&n) {
            return Ok(b.clone());
        }
        let io_err = |source| SearchError::Io {
            label: self.label.clone(),
            source,
        };
        self.reader
            .seek(SeekFrom::Start(n * BLOCK as u64))
            .map_err(io_err)?;
        let mut buf = Vec::with_capacity(BLOCK);
        (&mut self.reader)
            .take(BLOCK as u64)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if self.blocks.len() >= MAX_BLOCKS {
            self.blocks.clear();
        }
        let b: Rc<[u8]> = buf.into();
        self.blocks.insert(n, b.clone());
        Ok(b)
    }

    /// The first entry line starting at or after byte `pos`: its start, its entry, and where the next line starts.
    /// Reads whole blocks, kept for the next lookups: a binary search touches a handful.
    fn line_from(&mut self, pos: u64) -> Result<Option<(u64, IndexEntry, u64)>, SearchError> {
        // Reading from pos - 1: when that byte is a newline, a line starts at pos.
        let (mut at, mut start) = if pos <= self.start {
            (self.start, Some(self.start))
        } else {
            (pos - 1, None)
        };
        let mut bytes = Vec::new();
        while at < self.end {
            let block = self.block(at / BLOCK as u64)?;
            let off = (at % BLOCK as u64) as usize;
            let avail = (block.len().saturating_sub(off) as u64).min(self.end - at) as usize;
            if avail == 0 {
                break;
            }
            let mut slice = &block[off..off + avail];
            if start.is_none() {
                match slice.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let s = at + i as u64 + 1;
                        if s >= self.end {
                            return Ok(None);
                        }
                        start = Some(s);
                        slice = &slice[i + 1..];
                    }
                    None => {
                        at += avail as u64;
                        continue;
                    }
                }
            }
            if let Some(i) = slice.iter().position(|&b| b == b'\n') {
                bytes.extend_from_slice(&slice[..=i]);
                let start = start.expect("found");
                let next = start + bytes.len() as u64;
                return Ok(Some((start, self.parse(&bytes, start)?, next)));
            }
            bytes.extend_from_slice(slice);
            if bytes.len() > MAX_LINE_BYTES {
                return Err(self.damaged(format!("a line is longer than {MAX_LINE_BYTES} bytes")));
            }
            at += avail as u64;
        }
        match start {
            Some(s) if s < self.end => Err(self.damaged("a line runs into the end line".into())),
            _ => Ok(None),
        }
    }

    /// The start of the first entry line whose path is not before `name` (or the end).
    pub fn lower_bound(&mut self, name: &[u8]) -> Result<u64, SearchError> {
        let (mut lo, mut hi) = (self.start, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.line_from(mid)? {
                Some((start, e, next)) if start < hi => {
                    if cmp_paths(&e.path, name) == Ordering::Less {
                        lo = next;
                    } else {
                        hi = start;
                    }
                }
                // No line starts in [mid, hi): the answer is at or before mid.
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// The entry named exactly `name`, if any.
    pub fn find(&mut self, name: &[u8]) -> Result<Option<IndexEntry>, SearchError> {
        let pos = self.lower_bound(name)?;
        Ok(match self.line_from(pos)? {
            Some((_, e, _)) if cmp_paths(&e.path, name) == Ordering::Equal => Some(e),
            _ => None,
        })
    }

    /// Visits the entries from the line starting at byte `pos` on, in order, until `f` returns false or the index
    /// ends. Each line must sort after the one before it.
    pub fn read_from(
        &mut self,
        pos: u64,
        mut f: impl FnMut(IndexEntry) -> bool,
    ) -> Result<(), SearchError> {
        let pos = pos.max(self.start);
        let label = self.label.clone();
        let header = self.header.clone();
        let damaged = |problem: String| SearchError::Damaged {
            label: label.clone(),
            problem,
        };
        let io_err = |source| SearchError::Io {
            label: label.clone(),
            source,
        };
        self.reader.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        let limit = self.end - pos.min(self.end);
        let mut lines = io::BufReader::with_capacity(64 << 10, (&mut self.reader).take(limit));
        let mut line = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        let mut at = pos;
        loop {
            line.clear();
            match read_line_bounded(&mut lines, &mut line).map_err(io_err)? {
                Some(0) => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(damaged(format!(
                        "a line is longer than {MAX_LINE_BYTES} bytes"
                    )));
                }
            }
            if line.last() != Some(&b'\n') {
                return Err(damaged("a line runs into the end line".into()));
            }
            let e = parse_line(&header, &label, &line, at)?;
            at += line.len() as u64;
            if let Some(p) = &prev
                && cmp_paths(p, &e.path) != Ordering::Less
            {
                return Err(damaged(format!(
                    "its entries are out of order at {}",
                    e.display_path()
                )));
            }
            prev = Some(e.path.clone());
            if !f(e) {
                return Ok(());
            }
        }
    }
}

/// One entry line, parsed by the index's own reader after the index's header line (newline included); `at` is
/// where the line starts in the index, what an error names it by.
pub fn parse_line(
    header: &[u8],
    label: &str,
    line: &[u8],
    at: u64,
) -> Result<IndexEntry, SearchError> {
    let damaged = |problem: String| SearchError::Damaged {
        label: label.to_string(),
        problem,
    };
    let mut text = Vec::with_capacity(header.len() + line.len());
    text.extend_from_slice(header);
    text.extend_from_slice(line);
    let mut r = IndexReader::new(Cursor::new(text)).map_err(|e| damaged(e.to_string()))?;
    // The reader counts this line as its line 2; the index's line is known here by where it starts.
    match r.next_entry() {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(damaged(format!("the line at byte {at} is an `end` line"))),
        Err(IndexError::BadLine { problem, .. }) => Err(damaged(format!(
            "the line at byte {at} is malformed: {problem}"
        ))),
        Err(IndexError::LineTooLong { .. }) => Err(damaged(format!(
            "the line at byte {at} is longer than {MAX_LINE_BYTES} bytes"
        ))),
        Err(IndexError::Truncated { .. }) => {
            Err(damaged(format!("the line at byte {at} is cut short")))
        }
        Err(e) => Err(damaged(e.to_string())),
    }
}

/// The line starting at `pos` (newline included), when it ends before `limit`.
fn read_line_at(r: &mut ArchiveReader, pos: u64, limit: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    r.seek(SeekFrom::Start(pos))?;
    let mut line = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = pos;
    while at < limit {
        let want = CHUNK.min((limit - at) as usize);
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..=i]);
            return Ok(Some((pos, line)));
        }
        line.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A malformed entry line found by a search (which reads lines by their byte position, not by counting) is
    /// named by where it starts, never as "line 2" (the line after the header the reader parses it with).
    #[test]
    fn a_malformed_line_is_named_by_its_byte_position() {
        let header = b"{\"format\":\"dbackup-index\",\"version\":1,\"tar_format\":\"pax\",\"dbackup_version\":\"0\",\"created\":\"2025-04-01T00:00:00Z\",\"source\":\"/s\"}\n";
        let bad = b"{\"type\":\"file\",\"path\":\"a\",\"size\":\"big\"}\n";
        let err = parse_line(header, "T9/data.index.jsonl", bad, 123_456)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the line at byte 123456 is malformed: invalid type"),
            "{err}"
        );
        assert!(!err.contains("line 2"), "{err}");
    }

    #[test]
    fn paths_sort_by_component() {
        assert_eq!(cmp_paths(b"a/b", b"a-c"), Ordering::Less);
        assert_eq!(cmp_paths(b"a", b"a/b"), Ordering::Less);
        assert_eq!(cmp_paths(b"a/b", b"a/b"), Ordering::Equal);
        assert_eq!(cmp_paths(b"b", b"a/z"), Ordering::Greater);
        assert_eq!(cmp_paths(b"", b"a"), Ordering::Less);
        assert!(is_under(b"a/b/c", b"a/b") && is_under(b"a/b", b"a/b") && is_under(b"x", b""));
        assert!(!is_under(b"a/bc", b"a/b") && !is_under(b"a", b"a/b"));
    }

    /// An index written by the archive writer for a tree with names that sort differently bytewise and by
    /// component, searched for every name and for names that are not there.
    #[test]
    fn every_name_is_found_by_binary_search() {
        use crate::archive::{self, ArchiveOptions, FileSink, NoProgress};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let names = [
            "a/b/c.txt",
            "a/b-c/d",
            "a-b/x",
            "a.b",
            "a/z",
            "b",
            "long/deep/er/still/file",
        ];
        for n in names {
            let p = src.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, n).unwrap();
        }
        for i in 0..300 {
            std::fs::write(src.join(format!("a/b/many-{i:03}")), "x").unwrap();
        }
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let plan = archive::scan(&src, &mut NoProgress).unwrap();
        archive::write_archive(
            &plan,
            Box::new(FileSink::create(out.join("d.tar")).unwrap()),
            Box::new(FileSink::create(out.join("d.index.jsonl")).unwrap()),
            &ArchiveOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        let files = ArchiveFiles::discover(&out, "d.index.jsonl").unwrap();
        let mut idx = SortedIndex::open(&files).unwrap();
        let all: Vec<IndexEntry> = IndexReader::new(std::io::BufReader::new(files.open().unwrap()))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for e in &all {
            assert_eq!(
                idx.find(&e.path).unwrap().as_ref(),
                Some(e),
                "{}",
                e.display_path()
            );
        }
        for missing in ["a/b/c", "a/bb", "zz", "0", "a/b/many-9999", "long/deep/x"] {
            assert_eq!(idx.find(missing.as_bytes()).unwrap(), None, "{missing}");
        }
        // A directory's entries follow it.
        let mut under = Vec::new();
        let pos = idx.lower_bound(b"a/b").unwrap();
        idx.read_from(pos, |e| {
            let keep = is_under(&e.path, b"a/b");
            if keep {
                under.push(e.path);
            }
            keep
        })
        .unwrap();
        assert_eq!(under.len(), 1 + 1 + 300, "a/b, c.txt and the many");

        // A truncated index is refused.
        let text = std::fs::read(out.join("d.index.jsonl")).unwrap();
        std::fs::write(out.join("t.index.jsonl"), &text[..text.len() - 40]).unwrap();
        let t = ArchiveFiles::discover(&out, "t.index.jsonl").unwrap();
        assert!(matches!(
            SortedIndex::open(&t),
            Err(SearchError::Damaged { .. })
        ));
    }
}
