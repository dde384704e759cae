//! The tar reader's tests: GNU tar's rules one by one on archives built byte by byte, and properties over arbitrary
//! archives (no panic, every header counted, everything the `tar` crate writes read back as written).

use std::io::{Cursor, Read};

use proptest::prelude::*;

use super::*;

/// Builds raw headers: the fields are written as given, nothing is checked or normalised.
#[derive(Clone)]
pub(crate) struct H {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub link: Vec<u8>,
    pub magic: Magic,
    pub prefix: Vec<u8>,
    pub uname: Vec<u8>,
    pub signed_checksum: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    V7,
    Ustar,
    Gnu,
}

pub(crate) fn h(name: &[u8], typeflag: u8) -> H {
    H {
        name: name.to_vec(),
        typeflag,
        size: 0,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        link: Vec::new(),
        magic: Magic::Ustar,
        prefix: Vec::new(),
        uname: Vec::new(),
        signed_checksum: false,
    }
}

/// A numeric field: octal when it fits, else base-256 (`0xff` first for negative numbers), as GNU tar writes them.
fn put_number(field: &mut [u8], v: i128) {
    let digits = field.len() - 1;
    if v >= 0 && v < 8i128.pow(digits as u32) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        let mut x = v;
        for b in field.iter_mut().rev() {
            *b = (x & 0xff) as u8;
            x >>= 8;
        }
        field[0] = if v < 0 { 0xff } else { 0x80 };
    }
}

impl H {
    pub fn size(mut self, n: u64) -> H {
        self.size = n;
        self
    }
    pub fn link(mut self, l: &[u8]) -> H {
        self.link = l.to_vec();
        self
    }
    pub fn magic(mut self, m: Magic) -> H {
        self.magic = m;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        let n = self.name.len().min(100);
        b[..n].copy_from_slice(&self.name[..n]);
        put_number(&mut b[100..108], i128::from(self.mode));
        put_number(&mut b[108..116], i128::from(self.uid));
        put_number(&mut b[116..124], i128::from(self.gid));
        put_number(&mut b[124..136], i128::from(self.size));
        put_number(&mut b[136..148], i128::from(self.mtime));
        b[156] = self.typeflag;
        let l = self.link.len().min(100);
        b[157..157 + l].copy_from_slice(&self.link[..l]);
        match self.magic {
            Magic::V7 => {}
            Magic::Ustar => b[257..265].copy_from_slice(b"ustar\x0000"),
            Magic::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
        }
        if self.magic != Magic::V7 {
            b[265..265 + self.uname.len()].copy_from_slice(&self.uname);
        }
        b[345..345 + self.prefix.len()].copy_from_slice(&self.prefix);
        b[148..156].copy_from_slice(b"        ");
        let sum: i64 = if self.signed_checksum {
            b.iter().map(|&x| i64::from(x as i8)).sum()
        } else {
            b.iter().map(|&x| i64::from(x)).sum()
        };
        let text = format!("{:06o}\0 ", sum & 0o777777);
        b[148..156].copy_from_slice(text.as_bytes());
        b
    }
}

/// Content padded to a whole block.
pub(crate) fn data(d: &[u8]) -> Vec<u8> {
    let mut v = d.to_vec();
    v.resize(d.len().div_ceil(512) * 512, 0);
    v
}

/// A pax record: `<len> key=value\n`.
pub(crate) fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// An extension header (`x`, `g`, `X`, `L`, `K`) with its content.
pub(crate) fn ext(typeflag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = h(b"././@PaxHeader", typeflag)
        .size(content.len() as u64)
        .bytes();
    v.extend(data(content));
    v
}

pub(crate) fn file(name: &[u8], content: &[u8]) -> Vec<u8> {
    let mut v = h(name, b'0').size(content.len() as u64).bytes();
    v.extend(data(content));
    v
}

pub(crate) fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut v = parts.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// Every member with its content, and the counts.
/// Members with their content.
type Scanned = Vec<(Member, Vec<u8>)>;

fn scan(bytes: &[u8]) -> Result<(Scanned, HeaderCounts), ScanError> {
    let mut s = Scanner::new(bytes);
    let mut out = Vec::new();
    while let Some(m) = s.next_member()? {
        let mut content = Vec::new();
        s.content().read_to_end(&mut content).unwrap();
        out.push((m, content));
    }
    Ok((out, s.counts()))
}

fn names(ms: &[(Member, Vec<u8>)]) -> Vec<String> {
    ms.iter()
        .map(|(m, _)| format!("{} {}", String::from_utf8_lossy(&m.name), m.kind()))
        .collect()
}

/// Scans `a`, which must scan, asserting its members' names and kinds ([`names`]) are `want`.
#[track_caller]
fn scan_named(a: &[u8], want: &[&str]) -> (Scanned, HeaderCounts) {
    let (ms, counts) = scan(a).unwrap();
    assert_eq!(names(&ms), want);
    (ms, counts)
}

#[test]
fn a_directory_with_a_size_is_followed_by_the_next_header() {
    // Finding: the `tar` crate skipped 512 bytes after `d/`, so `d/f` vanished and the restore said nothing.
    let a = archive(&[
        h(b"d/", b'5').size(512).bytes(),
        file(b"d/f", b"abc"),
        file(b"g", b"gg"),
    ]);
    let (ms, counts) = scan_named(&a, &["d/ dir", "d/f file", "g file"]);
    assert_eq!(ms[1].1, b"abc");
    assert_eq!(counts.entries, 3);
    // Symlinks, hard links, fifos and devices too: GNU tar's extraction reads no content for them.
    for t in [b'1', b'2', b'3', b'4', b'6'] {
        let a = archive(&[h(b"x", t).size(512).link(b"t").bytes(), file(b"g", b"gg")]);
        let (ms, _) = scan(&a).unwrap();
        assert_eq!(ms.len(), 2, "type {}", t as char);
        assert_eq!(ms[1].1, b"gg");
    }
}

#[test]
fn a_v7_directory_is_a_directory() {
    // Finding: `d/` with type `0` (or NUL) became an empty regular file.
    let a = archive(&[
        h(b"d/", b'0').magic(Magic::V7).bytes(),
        file(b"d/f", b"abc"),
        h(b"e/", 0).magic(Magic::V7).bytes(),
        h(b"sized/", b'0').size(3).bytes(),
        file(b"g", b"gg"),
    ]);
    scan_named(
        &a,
        &["d/ dir", "d/f file", "e/ dir", "sized/ dir", "g file"],
    );
}

#[test]
fn solaris_extended_headers_are_pax_headers() {
    // Finding: an `X` header was handed over as an entry of an unknown type.
    let mut recs = record(b"path", b"long-name-from-X");
    recs.extend(record(b"mtime", b"1600000000.5"));
    let a = archive(&[ext(b'X', &recs), file(b"short", b"abc")]);
    let (ms, counts) = scan_named(&a, &["long-name-from-X file"]);
    assert_eq!(ms[0].0.mtime, Mtime::new(1_600_000_000, 500_000_000));
    assert_eq!(
        counts,
        HeaderCounts {
            headers: 2,
            entries: 1,
            extensions: 1,
            labels: 0
        }
    );
}

#[test]
fn signed_checksums_are_accepted() {
    // Finding: one header summed with signed chars (HP-UX, old Sun tars) made the whole archive unreadable.
    let mut signed = h("café".as_bytes(), b'0').size(3);
    signed.signed_checksum = true;
    let mut first = signed.bytes();
    first.extend(data(b"abc"));
    let a = archive(&[first, file(b"g", b"gg")]);
    scan_named(&a, &["café file", "g file"]);
    // A checksum matching neither sum is a damaged header, with its offset.
    let mut bad = archive(&[file(b"a", b"1"), file(b"b", b"2")]);
    bad[1024 + 5] ^= 1;
    let err = scan(&bad).unwrap_err();
    assert!(
        matches!(err, ScanError::Damaged { offset: 1024, .. }),
        "{err}"
    );
}

#[test]
fn base_256_numbers() {
    let mut old = h(b"old", b'0').magic(Magic::Gnu).size(3);
    old.mtime = -315_360_000; // 1960
    old.uid = 5_000_000; // too big for 7 octal digits
    old.gid = 1 << 40;
    let mut big = h(b"big", b'0').magic(Magic::Gnu);
    big.size = 9 << 30; // over 8 GiB: base-256 in the size field
    let mut a = old.bytes();
    a.extend(data(b"abc"));
    a.extend(big.bytes());
    let (ms, counts) = {
        let mut s = Scanner::new(Cursor::new(&a));
        let m1 = s.next_member().unwrap().unwrap();
        let m2 = s.next_member().unwrap().unwrap();
        (vec![m1, m2], s.counts())
    };
    assert_eq!(ms[0].mtime, Mtime::new(-315_360_000, 0));
    assert_eq!((ms[0].uid, ms[0].gid), (5_000_000, 1 << 40));
    assert_eq!(ms[1].size, 9 << 30);
    assert_eq!(ms[1].data_len, 9 << 30);
    assert_eq!(counts.entries, 2);
    // From a file whose length is known, the missing 9 GiB are found at once.
    let mut s = Scanner::seekable(Cursor::new(&a)).unwrap();
    s.next_member().unwrap();
    assert!(matches!(s.next_member(), Err(ScanError::Truncated { .. })));
}

#[test]
fn numbers() {
    assert_eq!(number(b"0000644\0"), Some(0o644));
    assert_eq!(number(b"   644 \0"), Some(0o644));
    assert_eq!(number(b"00000000644"), Some(0o644));
    assert_eq!(number(b"\0\0\0\0"), Some(0));
    assert_eq!(number(b"        "), Some(0));
    assert_eq!(number(b"64x4\0"), None);
    assert_eq!(number(b"-1\0"), None);
    assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 1]), Some(1));
    assert_eq!(number(&[0xff; 12]), Some(-1));
    assert_eq!(
        number(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        Some(-(1 << 32))
    );
    assert_eq!(number(&[0x81, 0, 0]), None);
}

#[test]
fn pax_records_hold_newlines_and_global_headers_apply_to_what_follows() {
    let mut g = record(b"mtime", b"1500000000");
    g.extend(record(b"uid", b"4321"));
    let a = archive(&[
        ext(b'g', &g),
        file(b"a", b"a"),
        ext(b'x', &record(b"path", b"new\nline")),
        file(b"b", b"b"),
    ]);
    let (ms, counts) = scan(&a).unwrap();
    assert_eq!(ms[0].0.mtime, Mtime::new(1_500_000_000, 0));
    assert_eq!(ms[0].0.uid, 4321);
    assert_eq!(ms[1].0.name, b"new\nline");
    assert_eq!(ms[1].0.uid, 4321, "a global record lasts");
    assert_eq!(
        counts,
        HeaderCounts {
            headers: 4,
            entries: 2,
            extensions: 2,
            labels: 0
        }
    );
    assert_eq!(
        parse_pax(b"12 path=a\nb\n").unwrap(),
        [(b"path".to_vec(), b"a\nb".to_vec())]
    );
    for bad in [
        &b"12 path=ab\n"[..],
        b"x path=a\n",
        b"9 patha\n",
        b"99 path=a\n",
    ] {
        assert!(parse_pax(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    // A malformed record spoils its entry (refused with the reason), not the archive.
    let a = archive(&[ext(b'x', b"garbage"), file(b"c", b"c"), file(b"d", b"d")]);
    scan_named(
        &a,
        &["c entry whose pax extended header is malformed", "d file"],
    );
}

#[test]
fn names_long_names_prefixes_and_labels() {
    let mut ustar = h(b"name", b'0');
    ustar.prefix = b"pre/fix".to_vec();
    let mut gnu = h(b"name", b'0').magic(Magic::Gnu);
    gnu.prefix = b"not-a-prefix".to_vec(); // old GNU headers keep times there
    let a = archive(&[
        h(b"LABEL", b'V').magic(Magic::Gnu).bytes(),
        ustar.bytes(),
        gnu.bytes(),
        ext(b'L', b"a-long-name\0"),
        ext(b'K', b"a-long-target\0"),
        h(b"short", b'2').link(b"short-target").bytes(),
        ext(b'x', &record(b"path", b"pax-wins")),
        ext(b'L', b"gnu-loses\0"),
        file(b"x", b""),
    ]);
    let (ms, counts) = scan_named(
        &a,
        &[
            "pre/fix/name file",
            "name file",
            "a-long-name symlink",
            "pax-wins file",
        ],
    );
    assert_eq!(ms[2].0.link, b"a-long-target");
    assert_eq!(
        counts,
        HeaderCounts {
            headers: 9,
            entries: 4,
            extensions: 4,
            labels: 1
        }
    );
}

#[test]
fn odd_types_are_handed_over_with_a_reason() {
    let a = archive(&[
        {
            let mut v = h(b"z", b'Z').size(3).bytes();
            v.extend(data(b"abc"));
            v
        },
        {
            let mut v = h(b"m", b'M').magic(Magic::Gnu).size(3).bytes();
            v.extend(data(b"abc"));
            v
        },
        {
            let mut v = h(b"dd/", b'D').magic(Magic::Gnu).size(4).bytes();
            v.extend(data(b"Nx\0\0"));
            v
        },
        {
            let mut v = h(b"c7", b'7').size(2).bytes();
            v.extend(data(b"c7"));
            v
        },
        file(b"g", b"gg"),
    ]);
    let (ms, _) = scan_named(
        &a,
        &[
            "z unknown tar entry type",
            "m continuation of a file from another volume (GNU multi-volume)",
            "dd/ dir",
            "c7 file",
            "g file",
        ],
    );
    assert_eq!(ms[3].1, b"c7");
}

#[test]
fn truncations_and_dangling_extension_headers() {
    let whole = archive(&[file(b"a", &[7u8; 700]), file(b"b", b"b")]);
    // Cut inside a's content: found when the content is read, or from the length when seeking.
    let cut = &whole[..800];
    let mut s = Scanner::new(cut);
    s.next_member().unwrap().unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        s.content().read_to_end(&mut buf).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    let mut s = Scanner::seekable(Cursor::new(cut)).unwrap();
    assert!(matches!(s.next_member(), Err(ScanError::Truncated { .. })));
    // Cut inside a header.
    let mut s = Scanner::new(&whole[..1536 + 100]);
    s.next_member().unwrap();
    assert!(matches!(s.next_member(), Err(ScanError::Truncated { .. })));
    // An archive ending at a block boundary without its zero blocks ends there (GNU tar says nothing either).
    let (ms, _) = scan(&whole[..2560]).unwrap();
    assert_eq!(ms.len(), 2);
    // An extended header with no entry after it.
    let a = archive(&[ext(b'x', &record(b"path", b"p"))]);
    assert!(matches!(scan(&a), Err(ScanError::Damaged { .. })));
    assert!(matches!(
        scan(&ext(b'x', &record(b"path", b"p"))),
        Err(ScanError::Truncated { .. })
    ));
    // An extended header too big to read.
    let mut big = h(b"big", b'x').bytes();
    big[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]);
    big[148..156].copy_from_slice(b"        ");
    let sum: u32 = big.iter().map(|&b| u32::from(b)).sum();
    big[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert!(matches!(
        scan(&archive(&[big])),
        Err(ScanError::Damaged { .. })
    ));
}

#[test]
fn extension_headers_are_bounded_per_entry_and_globally() {
    // Two extended headers of 9 MiB each before one entry: over the 16 MiB an entry may have.
    let big = record(b"comment", &vec![b'x'; 9 << 20]);
    let a = archive(&[ext(b'x', &big), ext(b'x', &big), file(b"f", b"")]);
    let err = scan(&a).unwrap_err();
    assert!(err.to_string().contains("more than the 16 MiB"), "{err}");
    // Global records over 1 MiB in all.
    let g = record(b"comment", &vec![b'x'; 2 << 20]);
    let err = scan(&archive(&[ext(b'g', &g), file(b"f", b"")])).unwrap_err();
    assert!(err.to_string().contains("global records"), "{err}");
}

#[test]
fn huge_sizes_are_refused_not_overflowed() {
    // A pax size past an off_t: the entry is refused, its header's size is kept to find the next one.
    let a = archive(&[
        ext(b'x', &record(b"size", b"18446744073709551615")),
        file(b"f", b"abc"),
        file(b"g", b"gg"),
    ]);
    scan_named(
        &a,
        &["f entry whose pax size record is not a number", "g file"],
    );
    // The largest off_t, in a file: truncated, found from the length (no arithmetic overflow on the way).
    let a = archive(&[
        ext(b'x', &record(b"size", b"9223372036854775807")),
        file(b"f", b"abc"),
    ]);
    let mut s = Scanner::seekable(Cursor::new(&a)).unwrap();
    assert!(matches!(s.next_member(), Err(ScanError::Truncated { .. })));
    let mut s = Scanner::new(&a[..]);
    let m = s.next_member().unwrap().unwrap();
    assert_eq!(m.data_len, i64::MAX as u64);
    assert!(s.content().read_to_end(&mut Vec::new()).is_err());
    assert!(s.next_member().is_err());
}

#[test]
fn owners_by_name_as_gnu_tar() {
    let mut x = h(b"u", b'0');
    x.uid = 4242;
    x.uname = b"root".to_vec();
    let mut y = h(b"v", b'0');
    y.uid = 4243;
    y.uname = b"no-such-user-dbackup".to_vec();
    let a = archive(&[x.bytes(), y.bytes()]);
    let (ms, _) = scan(&a).unwrap();
    let mut by_name = Owners::by_name();
    assert_eq!(ms[0].0.entry(&mut by_name).uid, 0);
    assert_eq!(ms[1].0.entry(&mut by_name).uid, 4243);
    assert_eq!(ms[0].0.entry(&mut Owners::numeric()).uid, 4242);
}

/// An old-GNU sparse header (type `S`, GNU magic) of a file of `real` bytes storing `stored`, with map entries
/// `(offset, length)`: the first four in the header, the rest in extension blocks of 21 (returned after it).
fn old_gnu_sparse(name: &[u8], real: u64, stored: u64, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut s = h(name, b'S').magic(Magic::Gnu).size(stored).bytes();
    let put = |b: &mut [u8], at: usize, (offset, len): (u64, u64)| {
        put_number(&mut b[at..at + 12], i128::from(offset));
        put_number(&mut b[at + 12..at + 24], i128::from(len));
    };
    for (i, e) in entries.iter().take(4).enumerate() {
        put(&mut s, 386 + 24 * i, *e);
    }
    put_number(&mut s[483..495], i128::from(real));
    let rest: Vec<&[(u64, u64)]> = entries.get(4..).unwrap_or(&[]).chunks(21).collect();
    s[482] = u8::from(!rest.is_empty());
    s[148..156].copy_from_slice(b"        ");
    let sum: u32 = s.iter().map(|&b| u32::from(b)).sum();
    s[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    for (k, chunk) in rest.iter().enumerate() {
        let mut b = vec![0u8; 512];
        for (i, e) in chunk.iter().enumerate() {
            put(&mut b, 24 * i, *e);
        }
        b[504] = u8::from(k + 1 < rest.len());
        s.extend(b);
    }
    s
}

/// The map of a scanned member, as (offset, length) pairs, and its real size.
fn map_of(m: &Member) -> (Vec<(u64, u64)>, u64) {
    let map = m.sparse_map().expect("a sparse member with a map");
    (
        map.segments().iter().map(|s| (s.offset, s.len)).collect(),
        map.size(),
    )
}

/// Old-GNU sparse members are files with their real size and map (header entries, then extension blocks); their
/// content is their data, and the member after them is found. Before: the member was refused as an unknown sparse
/// format (and, through the `tar` crate earlier still, restored with the next member's bytes).
#[test]
fn old_gnu_sparse_members_are_read_with_their_map() {
    // Six data runs: four in the header, two in an extension block.
    let entries: Vec<(u64, u64)> = (0..6).map(|i| (i * 10_000, 2)).collect();
    let a = archive(&[
        old_gnu_sparse(b"sp", 100_000, 12, &entries),
        data(b"aabbccddeeff"),
        file(b"after", b"x"),
    ]);
    let (ms, counts) = scan_named(&a, &["sp file", "after file"]);
    let m = &ms[0].0;
    assert_eq!(m.sparse_blocks.len(), 1);
    assert_eq!(map_of(m), (entries.clone(), 100_000));
    assert_eq!(
        m.sparse.as_ref().unwrap().as_ref().unwrap().format,
        Sparse::OldGnu
    );
    assert_eq!(m.size, 100_000);
    assert_eq!(m.entry(&mut Owners::numeric()).size, 100_000);
    assert_eq!((m.data_offset, m.data_len), (1024, 12));
    assert_eq!(ms[0].1, b"aabbccddeeff");
    assert_eq!(ms[1].1, b"x");
    assert_eq!(
        counts.headers, 2,
        "the extension block is part of its header"
    );
}

/// A sparse member whose map cannot be trusted is handed over as an entry the plan refuses (never dropped), and
/// the scan goes on after it: old GNU naming other data than stored, or without GNU's magic; PAX 0.1 past the
/// file's end; PAX 1.0 whose map is not decimal or names other data than stored; a sparse directory.
#[test]
fn sparse_members_with_bad_maps_are_refused_not_dropped() {
    let v1 = |map: &[u8], stored: &[u8]| {
        let mut recs = record(b"GNU.sparse.major", b"1");
        recs.extend(record(b"GNU.sparse.minor", b"0"));
        recs.extend(record(b"GNU.sparse.name", b"v1"));
        recs.extend(record(b"GNU.sparse.realsize", b"100000"));
        let mut content = data(map);
        content.extend_from_slice(stored);
        vec![ext(b'x', &recs), file(b"./GNUSparseFile.0/v1", &content)]
    };
    let mut parts = vec![old_gnu_sparse(b"short", 1000, 3, &[(0, 4)]), data(b"abc")];
    parts.push({
        let mut u = old_gnu_sparse(b"ustar", 1000, 3, &[(0, 3)]);
        u[257..265].copy_from_slice(b"ustar\x0000");
        u[148..156].copy_from_slice(b"        ");
        let sum: u32 = u.iter().map(|&b| u32::from(b)).sum();
        u[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        u
    });
    parts.push(data(b"abc"));
    let mut recs = record(b"GNU.sparse.size", b"100");
    recs.extend(record(b"GNU.sparse.name", b"v01"));
    recs.extend(record(b"GNU.sparse.map", b"50,100"));
    parts.push(ext(b'x', &recs));
    parts.push(file(b"GNUSparseFile.0/v01", &[7u8; 100]));
    parts.extend(v1(b"1\nzero\n4\n", b"abcd"));
    parts.extend(v1(b"1\n0\n4\n", b"abc"));
    let mut recs = record(b"GNU.sparse.size", b"100");
    recs.extend(record(b"GNU.sparse.map", b"0,0"));
    parts.push(ext(b'x', &recs));
    parts.push(h(b"dir", b'5').bytes());
    parts.push(file(b"after", b"x"));
    let (ms, counts) = scan(&archive(&parts)).unwrap();
    assert_eq!(
        names(&ms),
        [
            "short sparse file with a damaged map",
            "ustar sparse file with a damaged map",
            // The records failed: the name is the header's.
            "GNUSparseFile.0/v01 sparse file with a damaged map",
            "v1 sparse file with a damaged map",
            "v1 sparse file with a damaged map",
            "dir entry of another type than a file with sparse records",
            "after file",
        ]
    );
    assert!(ms.iter().all(|(m, _)| m.sparse_map().is_none()));
    assert_eq!(ms[6].1, b"x");
    assert_eq!(counts.entries, 7);
    assert_eq!(counts.headers, 7 + 4, "four pax headers");
}

/// PAX sparse members (0.0, 0.1, 1.0): the real name from `GNU.sparse.name`, the real size, the map from the records
/// or (1.0) from the start of the data, which the scanner reads so that the content is the data alone. Before:
/// refused as sparse files in PAX form.
#[test]
fn pax_sparse_members_are_read_with_their_map() {
    // 1.0: the map opens the data, padded to a block.
    let mut recs = record(b"GNU.sparse.major", b"1");
    recs.extend(record(b"GNU.sparse.minor", b"0"));
    recs.extend(record(b"GNU.sparse.name", b"real-name"));
    recs.extend(record(b"GNU.sparse.realsize", b"1000"));
    let mut stored = data(b"2\n0\n3\n997\n3\n");
    stored.extend_from_slice(b"abcxyz");
    // 0.1: the map in one record.
    let mut r01 = record(b"GNU.sparse.size", b"500");
    r01.extend(record(b"GNU.sparse.name", b"zero-one"));
    r01.extend(record(b"GNU.sparse.map", b"10,2,400,1"));
    // 0.0: offset and numbytes pairs, the name in the header.
    let mut r00 = record(b"GNU.sparse.size", b"300");
    r00.extend(record(b"GNU.sparse.numblocks", b"2"));
    r00.extend(record(b"GNU.sparse.offset", b"0"));
    r00.extend(record(b"GNU.sparse.numbytes", b"1"));
    r00.extend(record(b"GNU.sparse.offset", b"299"));
    r00.extend(record(b"GNU.sparse.numbytes", b"1"));
    let a = archive(&[
        ext(b'x', &recs),
        file(b"./GNUSparseFile.1/real-name", &stored),
        ext(b'x', &r01),
        file(b"GNUSparseFile.0/zero-one", b"ppq"),
        ext(b'x', &r00),
        file(b"zero-zero", b"st"),
        file(b"after", b"x"),
    ]);
    let (ms, counts) = scan_named(
        &a,
        &[
            "real-name file",
            "zero-one file",
            "zero-zero file",
            "after file",
        ],
    );
    let formats: Vec<Sparse> = ms[..3]
        .iter()
        .map(|(m, _)| m.sparse.as_ref().unwrap().as_ref().unwrap().format)
        .collect();
    assert_eq!(formats, [Sparse::Pax10, Sparse::Pax01, Sparse::Pax00]);
    assert_eq!(map_of(&ms[0].0), (vec![(0, 3), (997, 3)], 1000));
    assert_eq!(ms[0].1, b"abcxyz", "the data after the map");
    assert_eq!(ms[0].0.data_len, 6);
    assert_eq!(
        ms[0].0.data_offset,
        1024 + 1024,
        "after the pax header, the header and the map"
    );
    assert_eq!(map_of(&ms[1].0), (vec![(10, 2), (400, 1)], 500));
    assert_eq!(ms[1].1, b"ppq");
    assert_eq!(map_of(&ms[2].0), (vec![(0, 1), (299, 1)], 300));
    assert_eq!(ms[2].1, b"st");
    assert_eq!(ms[3].1, b"x");
    assert_eq!(counts.entries, 4);
    // The seekable scanner (the plan's pass) reads the 1.0 map the same way and skips the rest by seeking.
    let mut s = Scanner::seekable(Cursor::new(&a)).unwrap();
    let m = s.next_member().unwrap().unwrap();
    assert_eq!(map_of(&m), (vec![(0, 3), (997, 3)], 1000));
    let rest: Vec<String> = std::iter::from_fn(|| s.next_member().unwrap())
        .map(|m| String::from_utf8_lossy(&m.name).into_owned())
        .collect();
    assert_eq!(rest, ["zero-one", "zero-zero", "after"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Properties

/// An entry for the `tar` crate to write.
#[derive(Debug, Clone)]
enum Gen {
    File(Vec<u8>, Vec<u8>),
    Dir(Vec<u8>),
    Symlink(Vec<u8>, Vec<u8>),
    Hardlink(Vec<u8>, Vec<u8>),
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Short and long names (over 100 bytes: GNU long names or pax paths), any byte but NUL and '/'-only oddities.
    prop::collection::vec(
        prop::collection::vec(1u8..=255, 1..40).prop_map(|mut c| {
            for b in c.iter_mut() {
                if *b == b'/' {
                    *b = b'_';
                }
            }
            if c == b"." || c == b".." {
                c.push(b'x');
            }
            c
        }),
        1..6,
    )
    .prop_map(|parts| parts.join(&b'/'))
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (name_strategy(), prop::collection::vec(any::<u8>(), 0..2000))
            .prop_map(|(n, d)| Gen::File(n, d)),
        name_strategy().prop_map(Gen::Dir),
        (name_strategy(), name_strategy()).prop_map(|(n, t)| Gen::Symlink(n, t)),
        (name_strategy(), name_strategy()).prop_map(|(n, t)| Gen::Hardlink(n, t)),
    ]
}

/// The archive the `tar` crate writes (`None` for the few names it will not write).
fn build(entries: &[Gen], mtime: u64, gnu: bool) -> Option<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut hd = if gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        hd.set_mtime(mtime);
        hd.set_mode(0o640);
        hd.set_uid(1234);
        hd.set_gid(5678);
        match e {
            Gen::File(n, d) => {
                hd.set_entry_type(tar::EntryType::Regular);
                hd.set_size(d.len() as u64);
                b.append_data(&mut hd, bytes_path(n), &d[..]).ok()?;
            }
            Gen::Dir(n) => {
                hd.set_entry_type(tar::EntryType::Directory);
                hd.set_size(0);
                b.append_data(&mut hd, bytes_path(n), &[][..]).ok()?;
            }
            Gen::Symlink(n, t) | Gen::Hardlink(n, t) => {
                hd.set_entry_type(if matches!(e, Gen::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                hd.set_size(0);
                b.append_link(&mut hd, bytes_path(n), bytes_path(t)).ok()?;
            }
        }
    }
    b.into_inner().ok()
}

fn bytes_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the `tar` crate writes (GNU long names, pax records, odd bytes) reads back as written.
    #[test]
    fn what_the_tar_crate_writes_reads_back(entries in prop::collection::vec(gen_strategy(), 0..12), mtime in 0u64..(1 << 33), gnu: bool) {
        let bytes = build(&entries, mtime, gnu);
        prop_assume!(bytes.is_some());
        let bytes = bytes.unwrap();
        let (ms, counts) = scan(&bytes).unwrap();
        prop_assert_eq!(ms.len(), entries.len());
        prop_assert_eq!(counts.entries as usize, entries.len());
        prop_assert_eq!(counts.headers, counts.entries + counts.extensions + counts.labels);
        for (e, (m, content)) in entries.iter().zip(&ms) {
            prop_assert_eq!(m.mtime, Mtime::new(mtime as i64, 0));
            prop_assert_eq!((m.uid, m.gid, m.mode), (1234, 5678, 0o640));
            match e {
                Gen::File(n, d) => {
                    prop_assert_eq!(&m.name, n);
                    prop_assert_eq!(m.kind(), EntryKind::File);
                    prop_assert_eq!(content, d);
                }
                Gen::Dir(n) => {
                    prop_assert_eq!(m.name.strip_suffix(b"/").unwrap_or(&m.name), &n[..]);
                    prop_assert_eq!(m.kind(), EntryKind::Dir);
                }
                Gen::Symlink(n, t) | Gen::Hardlink(n, t) => {
                    prop_assert_eq!(&m.name, n);
                    prop_assert_eq!(&m.link, t);
                }
            }
        }
    }

    /// Arbitrary bytes never panic, and a member's content never lies past the input.
    #[test]
    fn any_bytes_are_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_bounded(&bytes)?;
    }

    /// A valid archive with bytes flipped: read or refused, never a panic, never content from outside it.
    #[test]
    fn damaged_archives_are_read_or_refused(entries in prop::collection::vec(gen_strategy(), 1..6), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let bytes = build(&entries, 1_700_000_000, true);
        prop_assume!(bytes.is_some());
        let mut bytes = bytes.unwrap();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        check_bounded(&bytes)?;
    }

    /// Numbers written in octal or base-256 read back.
    #[test]
    fn numbers_read_back(narrow in -(1i128 << 55)..(1i128 << 55), v in -(1i128 << 62)..(1i128 << 62), wide: bool) {
        let (v, mut field) = if wide { (v, vec![0u8; 12]) } else { (narrow, vec![0u8; 8]) };
        put_number(&mut field, v);
        prop_assert_eq!(number(&field), Some(v));
    }

    /// Pax records with any bytes in the value (newlines included) read back.
    #[test]
    fn pax_records_read_back(recs in prop::collection::vec((prop::collection::vec(b'a'..=b'z', 1..20), prop::collection::vec(any::<u8>(), 0..300)), 0..8)) {
        let mut data = Vec::new();
        for (k, v) in &recs {
            data.extend(record(k, v));
        }
        prop_assert_eq!(parse_pax(&data).unwrap(), recs);
    }
}

fn check_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    for seekable in [false, true] {
        let mut s = if seekable {
            Scanner::seekable(Cursor::new(bytes)).unwrap()
        } else {
            Scanner::new(Cursor::new(bytes))
        };
        let mut n = 0u64;
        while let Ok(Some(m)) = s.next_member() {
            n += 1;
            prop_assert!(m.header_offset < bytes.len() as u64);
            if seekable {
                prop_assert!(m.data_offset + m.data_len <= bytes.len() as u64);
            }
            let mut content = Vec::new();
            match s.content().read_to_end(&mut content) {
                Ok(_) => prop_assert_eq!(
                    &content[..],
                    &bytes[m.data_offset as usize..(m.data_offset + m.data_len) as usize]
                ),
                Err(e) => {
                    prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    break;
                }
            }
        }
        let c = s.counts();
        prop_assert_eq!(c.entries, n);
        prop_assert_eq!(c.headers, c.entries + c.extensions + c.labels);
    }
    Ok(())
}
