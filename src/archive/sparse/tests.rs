//! Unit tests of the sparse formats: maps built, encoded and read back, every GNU format's map parsed or refused,
//! hostile maps never panicking, and holes found on a real file.

use std::io::Cursor;

use proptest::prelude::*;

use super::*;

fn seg(offset: u64, len: u64) -> Segment {
    Segment { offset, len }
}

/// A map is checked when built: out of order, overlapping, past the end or overflowing is an error; empty segments
/// go, touching ones join. (New: main had no sparse maps.)
#[test]
fn maps_are_ordered_inside_the_file_and_normalised() {
    let m = SparseMap::new(100, [seg(0, 10), seg(10, 5), seg(20, 0), seg(50, 50)]).unwrap();
    assert_eq!(
        m.segments(),
        &[seg(0, 15), seg(50, 50)],
        "joined, empty dropped"
    );
    assert_eq!((m.data_bytes(), m.hole_bytes()), (65, 35));
    for (segs, why) in [
        (vec![seg(10, 5), seg(0, 5)], "precedes"),
        (vec![seg(0, 10), seg(5, 10)], "overlaps"),
        (vec![seg(90, 20)], "past the file's size"),
        (vec![seg(u64::MAX, 2)], "overflows"),
    ] {
        let err = SparseMap::new(100, segs).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    assert_eq!(SparseMap::dense(0).segments(), &[]);
    assert_eq!(SparseMap::dense(7).segments(), &[seg(0, 7)]);
}

/// The PAX 1.0 map text is byte for byte what GNU tar 1.34 writes, and reads back. (New.)
#[test]
fn the_v1_map_is_gnu_tars_text_and_reads_back() {
    let m = SparseMap::new(5 << 20, [seg(1 << 20, 4096), seg(2 << 20, 4096)]).unwrap();
    let block = m.encode_v1();
    assert_eq!(block.len(), 512);
    let text = std::str::from_utf8(&block[..block.iter().position(|b| *b == 0).unwrap()]).unwrap();
    // What GNU tar 1.34 writes for this file (checked by hand with `tar --sparse --format=posix`).
    assert_eq!(text, "3\n1048576\n4096\n2097152\n4096\n5242880\n0\n");
    let stored = block.len() as u64 + m.data_bytes();
    let (back, taken) = read_v1_map(&mut Cursor::new(&block), stored, 5 << 20).unwrap();
    assert_eq!((back, taken), (m, 512));
}

/// A PAX 1.0 map that names other data than the member stores, runs past its end, or is not decimal lines is
/// refused. (New; main refused every PAX sparse member, readable or not.)
#[test]
fn a_v1_map_that_disagrees_with_the_member_is_refused() {
    let m = SparseMap::new(1000, [seg(0, 100)]).unwrap();
    let block = m.encode_v1();
    let cases: Vec<(Vec<u8>, u64, u64, &str)> = vec![
        (block.clone(), 512 + 99, 1000, "names 100 bytes of data"),
        (block.clone(), 512 + 100, 99, "past the file's size"),
        (block[..100].to_vec(), 612, 1000, "ends inside the map"),
        (b"2\n0\n10\nx".to_vec(), 612, 1000, "not decimal numbers"),
        (
            b"99999999999999999999999\n".to_vec(),
            612,
            1000,
            "out of range",
        ),
        (b"2000000\n".to_vec(), 1 << 40, 1000, "more than"),
        (b"\n".to_vec(), 612, 1000, "not decimal"),
    ];
    for (mut bytes, stored, size, why) in cases {
        if bytes.len() >= 512 || why != "ends inside the map" {
            bytes.resize(bytes.len().div_ceil(512).max(1) * 512, 0);
        }
        let err = read_v1_map(&mut Cursor::new(&bytes), stored, size).unwrap_err();
        assert!(matches!(err, MapError::Bad(_)), "{why}: {err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    // A map longer than its member.
    let err = read_v1_map(&mut Cursor::new(&block), 100, 1000).unwrap_err();
    assert!(
        err.to_string().contains("past the end of the member"),
        "{err}"
    );
}

/// A pax record list for [`PaxSparse::from_records`].
fn records<'a>(kv: &'a [(&'a str, &'a str)]) -> Vec<io::Result<(&'a [u8], &'a [u8])>> {
    kv.iter()
        .map(|(k, v)| Ok((k.as_bytes(), v.as_bytes())))
        .collect()
}

/// The sparse description these pax records give (they must give one).
fn sparse_of(kv: &[(&str, &str)]) -> PaxSparse {
    PaxSparse::from_records(records(kv)).unwrap().unwrap()
}

/// The records of PAX 0.0, 0.1 and 1.0 as GNU tar writes them give the same map. (Main refused all three.)
#[test]
fn every_pax_version_is_read() {
    // 0.0: repeated offset/numbytes, the name in the header.
    let p = sparse_of(&[
        ("GNU.sparse.size", "5242880"),
        ("GNU.sparse.numblocks", "3"),
        ("GNU.sparse.offset", "1048576"),
        ("GNU.sparse.numbytes", "4096"),
        ("GNU.sparse.offset", "2097152"),
        ("GNU.sparse.numbytes", "4096"),
        ("GNU.sparse.offset", "5242880"),
        ("GNU.sparse.numbytes", "0"),
        ("mtime", "1.5"),
    ]);
    assert_eq!(
        (p.version, p.name.as_deref(), p.size),
        ((0, 0), None, 5 << 20)
    );
    let want = SparseMap::new(5 << 20, [seg(1 << 20, 4096), seg(2 << 20, 4096)]).unwrap();
    assert_eq!(p.map.as_ref(), Some(&want));
    // 0.1: one map record and the real name.
    let p = sparse_of(&[
        ("GNU.sparse.size", "5242880"),
        ("GNU.sparse.numblocks", "3"),
        ("GNU.sparse.name", "d/f"),
        ("GNU.sparse.map", "1048576,4096,2097152,4096,5242880,0"),
    ]);
    assert_eq!((p.version, p.name.as_deref()), ((0, 1), Some(&b"d/f"[..])));
    assert_eq!(p.map.as_ref(), Some(&want));
    // 1.0: the map is in the data.
    let p = sparse_of(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "d/f"),
        ("GNU.sparse.realsize", "5242880"),
    ]);
    assert_eq!(
        (p.version, p.name.as_deref(), p.size, p.map),
        ((1, 0), Some(&b"d/f"[..]), 5 << 20, None)
    );
    // No GNU.sparse records: not sparse.
    assert_eq!(
        PaxSparse::from_records(records(&[("path", "x"), ("mtime", "1")])).unwrap(),
        None
    );
}

/// GNU.sparse records that contradict each other, name an unknown version or follow a broken pax piece are refused
/// or ignored, never trusted. (New.)
#[test]
fn pax_sparse_records_that_cannot_be_trusted_are_refused() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("GNU.sparse.major", "2"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "1"),
            ],
            "format 2.0",
        ),
        (
            &[("GNU.sparse.name", "x"), ("GNU.sparse.size", "1")],
            "without a map",
        ),
        (&[("GNU.sparse.map", "0,1")], "no GNU.sparse.realsize"),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,1,5")],
            "odd number",
        ),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,x")],
            "not a number",
        ),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "5,1,0,1")],
            "precedes",
        ),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "5,10")],
            "past the file's size",
        ),
        (
            &[
                ("GNU.sparse.size", "10"),
                ("GNU.sparse.numblocks", "5"),
                ("GNU.sparse.map", "0,1"),
            ],
            "numblocks says 5",
        ),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.numbytes", "1")],
            "without its offset",
        ),
        (
            &[
                ("GNU.sparse.size", "10"),
                ("GNU.sparse.offset", "1"),
                ("GNU.sparse.offset", "2"),
            ],
            "two GNU.sparse.offset",
        ),
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.offset", "1")],
            "without its numbytes",
        ),
        (
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "10"),
                ("GNU.sparse.map", "0,1"),
            ],
            "map in its header",
        ),
    ];
    for (kv, why) in cases {
        let err = PaxSparse::from_records(records(kv))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{kv:?}: {err}");
    }
    // A name record the pax parser could not read (a newline in it) is not silently replaced by the fake name.
    let mut r = records(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.realsize", "10"),
    ]);
    r.push(Err(io::Error::other("malformed pax extension")));
    let err = PaxSparse::from_records(r).unwrap_err().to_string();
    assert!(
        err.contains("GNU.sparse.name record cannot be read"),
        "{err}"
    );
    // Records after a broken piece may be pieces of a value (an xattr holding "\n22 GNU.sparse.major=1"): a member
    // whose only sparse records come after one is not sparse.
    let mut r: Vec<io::Result<(&[u8], &[u8])>> =
        vec![Err(io::Error::other("malformed pax extension"))];
    r.extend(records(&[
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.realsize", "10"),
    ]));
    assert_eq!(PaxSparse::from_records(r).unwrap(), None);
}

/// An old-GNU header with `entries` in its map (the first four in the header, the rest in extension headers).
fn old_gnu(size: u64, entries: &[Segment], stored: u64) -> (tar::Header, Vec<u8>) {
    let mut h = tar::Header::new_gnu();
    h.set_size(stored);
    h.set_entry_type(tar::EntryType::GNUSparse);
    let gnu = h.as_gnu_mut().unwrap();
    // The real size, as GNU tar writes it (octal).
    let real = format!("{size:011o}\0");
    gnu.realsize.copy_from_slice(real.as_bytes());
    for (i, s) in entries.iter().take(4).enumerate() {
        gnu.sparse[i].set_offset(s.offset);
        gnu.sparse[i].set_length(s.len);
    }
    let mut ext = Vec::new();
    let rest: Vec<&[Segment]> = entries.get(4..).unwrap_or(&[]).chunks(21).collect();
    gnu.isextended[0] = u8::from(!rest.is_empty());
    for (k, chunk) in rest.iter().enumerate() {
        let mut e = tar::GnuExtSparseHeader::new();
        for (i, s) in chunk.iter().enumerate() {
            e.sparse_mut()[i].set_offset(s.offset);
            e.sparse_mut()[i].set_length(s.len);
        }
        e.isextended[0] = u8::from(k + 1 < rest.len());
        ext.extend_from_slice(e.as_bytes());
    }
    (h, ext)
}

/// The extension blocks as the scanner hands them over: 512 bytes each.
#[allow(clippy::vec_box)] // the scanner's `Member::sparse_blocks`
fn blocks(ext: &[u8]) -> Vec<Box<[u8; 512]>> {
    ext.chunks(512)
        .map(|c| Box::new(<[u8; 512]>::try_from(c).unwrap()))
        .collect()
}

/// An old-GNU map longer than its header's four entries continues in extension headers; one naming other data than
/// stored, or a type S header without GNU tar's magic, is refused. (Main handed over the stored chunks and then the
/// next member's bytes; a truncated chain of extension blocks is the scanner's to find, `restore::tarscan`.)
#[test]
fn old_gnu_maps_come_from_the_header_and_its_extension_headers() {
    let entries: Vec<Segment> = (0..30)
        .map(|i| seg(i * 8192, 512))
        .chain([seg(300_000, 0)])
        .collect();
    let stored = 30 * 512;
    let (h, ext) = old_gnu(300_000, &entries, stored);
    assert_eq!(
        ext.len(),
        2 * 512,
        "26 more entries take two extension headers"
    );
    let header: &[u8; 512] = h.as_bytes();
    let map = old_gnu_map(header, &blocks(&ext), stored).unwrap();
    assert_eq!(map.segments().len(), 30);
    assert_eq!(map.size(), 300_000);
    // Without its second extension block, the map names less data than stored.
    let err = old_gnu_map(header, &blocks(&ext[..512]), stored).unwrap_err();
    assert!(err.to_string().contains("names 12800 bytes"), "{err}");
    let (h, ext) = old_gnu(300_000, &entries, stored - 1);
    let err = old_gnu_map(h.as_bytes(), &blocks(&ext), stored - 1).unwrap_err();
    assert!(err.to_string().contains("names 15360 bytes"), "{err}");
    // A ustar header of type S has no sparse fields.
    let mut u = tar::Header::new_ustar();
    u.set_entry_type(tar::EntryType::GNUSparse);
    let err = old_gnu_map(u.as_bytes(), &[], 0).unwrap_err();
    assert!(err.to_string().contains("without GNU tar's magic"), "{err}");
}

/// The header name of a sparse member is GNU tar's `<dir>/GNUSparseFile.0/<name>`; a name with a newline is never
/// stored sparse. (New.)
#[test]
fn the_fake_name_is_gnu_tars() {
    assert_eq!(fake_name(b"d/f"), b"d/GNUSparseFile.0/f");
    assert_eq!(fake_name(b"a/b/c.img"), b"a/b/GNUSparseFile.0/c.img");
    assert_eq!(fake_name(b"top"), b"./GNUSparseFile.0/top");
    assert!(!name_allows_sparse(b"a\nb") && name_allows_sparse(b"a b"));
}

/// A map longer than the limit keeps every data byte and drops its smallest holes. (New.)
#[test]
fn too_many_extents_have_their_smallest_holes_stored() {
    let segs: Vec<Segment> = (0..100)
        .map(|i| seg(i * 10_000, 100 + (i % 3) * 4000))
        .collect();
    let m = SparseMap::new(1_000_000, segs).unwrap();
    let c = m.clone().coarsened(40);
    assert!(c.segments().len() <= 40, "{}", c.segments().len());
    assert!(c.hole_bytes() > 0 && c.data_bytes() >= m.data_bytes());
    // Every byte that was data is still data.
    for s in m.segments() {
        assert!(
            c.segments()
                .iter()
                .any(|t| t.offset <= s.offset && s.end() <= t.end()),
            "{s:?}"
        );
    }
}

/// SEEK_DATA/SEEK_HOLE find a real file's extents, the data segments read back, mapping leaves the offset at 0, and
/// a file shorter than its map is an error. (New: main read every file whole.)
#[test]
fn holes_of_a_real_file_are_found_and_its_data_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let f = File::create(&path).unwrap();
    f.set_len(8 << 20).unwrap();
    let a = vec![0xa5u8; 5000];
    f.write_all_at(&a, 1 << 20).unwrap();
    f.write_all_at(b"tail", (8 << 20) - 4).unwrap();
    f.sync_all().unwrap();
    let f = File::open(&path).unwrap();
    let meta = f.metadata().unwrap();
    let map = map_file(&f, meta.len()).unwrap();
    if map.hole_bytes() == 0 {
        return crate::stdx::skip::skip(&format!(
            "the filesystem of {} reports no holes",
            dir.path().display()
        ));
    }
    assert!(worth_checking(&meta) && worth_checking_any(&meta));
    // Data extents are whole filesystem blocks around what was written.
    let segs = map.segments();
    assert_eq!(segs.len(), 2, "{segs:?}");
    assert!(segs[0].offset <= 1 << 20 && segs[0].end() >= (1 << 20) + 5000);
    assert_eq!(segs[1].end(), 8 << 20);
    let mut whole = Vec::new();
    (&f).read_to_end(&mut whole).unwrap();
    assert_eq!(
        whole.len() as u64,
        8 << 20,
        "mapping leaves the file offset at 0"
    );
    let mut data = Vec::new();
    SegmentsReader::new(&f, &map)
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data.len() as u64, map.data_bytes());
    let start = ((1 << 20) - segs[0].offset) as usize;
    assert_eq!(&data[start..start + 5000], &a[..]);
    assert!(data.ends_with(b"tail"));
    assert!(detect(&f, meta.len(), MIN_HOLE_BYTES).unwrap().is_some());
    assert!(
        detect(&f, meta.len(), 64 << 20).unwrap().is_none(),
        "not enough holes"
    );
    // A file that shrank under its map.
    let short = SparseMap::new(16 << 20, [seg(12 << 20, 10)]).unwrap();
    let err = SegmentsReader::new(&f, &short)
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

/// A member of dbackup's own archive is read with its map and checked against the index's stored sha256 (the last
/// read fails when it differs); the logical hash counts holes as zeros. (New.)
#[test]
fn an_indexed_member_is_checked_against_its_stored_hash() {
    let map = SparseMap::new(10_000, [seg(100, 50), seg(9000, 10)]).unwrap();
    let mut member = map.encode_v1();
    member.extend_from_slice(&[7u8; 60]);
    let good = Digest::of_bytes(&member);
    let loc = |sha256| SparseLoc::Indexed {
        data: 0,
        stored: member.len() as u64,
        size: 10_000,
        sha256,
    };
    let mut r = Cursor::new(member.clone());
    let (m, mut data) = open(&mut r, &loc(good)).unwrap();
    assert_eq!(*m, map);
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(got, [7u8; 60]);
    let mut r = Cursor::new(member.clone());
    let (_, mut data) = open(&mut r, &loc(Digest([1; 32]))).unwrap();
    let err = data.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // The logical content's hash: holes as zeros.
    let mut logical = vec![0u8; 10_000];
    logical[100..150].fill(7);
    logical[9000..9010].fill(7);
    let mut seen = 0;
    let (l, s) = hash_v1(
        &mut Cursor::new(&member),
        member.len() as u64,
        10_000,
        true,
        &mut |n| seen += n,
    )
    .unwrap();
    assert_eq!(
        (l, s, seen),
        (Some(Digest::of_bytes(&logical)), good, 10_000)
    );
    // Without the logical hash (the index's sha256 is the stored bytes'), the holes are not hashed.
    let (l, s) = hash_v1(
        &mut Cursor::new(&member),
        member.len() as u64,
        10_000,
        false,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((l, s), (None, good));
}

/// Maps of any shape: up to 60 segments with gaps, in a file of up to 1 TiB.
fn any_map() -> impl Strategy<Value = SparseMap> {
    (
        1u64..1 << 40,
        proptest::collection::vec((0u64..1 << 20, 0u64..1 << 20), 0..60),
    )
        .prop_map(|(size, gaps)| {
            let mut segs = Vec::new();
            let mut at = 0u64;
            for (gap, len) in gaps {
                let offset = at + gap;
                if offset + len > size {
                    break;
                }
                segs.push(seg(offset, len));
                at = offset + len;
            }
            SparseMap::new(size, segs).unwrap()
        })
}

proptest! {
    /// What the writer encodes, the reader reads back (hostile inputs: `src/proptests.rs`, `cargo xtask fuzz`).
    #[test]
    fn v1_maps_round_trip(map in any_map()) {
        let block = map.encode_v1();
        prop_assert_eq!(block.len() % 512, 0);
        let stored = block.len() as u64 + map.data_bytes();
        let (back, taken) = read_v1_map(&mut Cursor::new(&block), stored, map.size()).unwrap();
        prop_assert_eq!(back, map);
        prop_assert_eq!(taken, block.len() as u64);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The writer, the verifier and one-file reads, end to end against GNU tar

mod archives {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::super::super::*;
    use super::super::*;

    const MIB: u64 = 1 << 20;

    /// Writes `chunks` (offset, bytes) into a new file of `size` bytes: holes everywhere else.
    pub(crate) fn holey(path: &Path, size: u64, chunks: &[(u64, &[u8])]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = File::create(path).unwrap();
        f.set_len(size).unwrap();
        for (at, bytes) in chunks {
            f.write_all_at(bytes, *at).unwrap();
        }
        f.sync_all().unwrap();
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// Blocks allocated to a file, in bytes.
    pub(crate) fn allocated(path: &Path) -> u64 {
        fs::metadata(path).unwrap().blocks() * 512
    }

    struct Snap {
        _dir: tempfile::TempDir,
        root: PathBuf,
        out: PathBuf,
    }

    /// A snapshot with a 64 MiB file with three data extents (start, middle, end), its hard link, a top-level
    /// sparse file, a file whose holes are too small to matter, and an ordinary file.
    fn snapshot() -> Option<Snap> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("snap");
        let disk = root.join("home/u/vm/disk.img");
        holey(
            &disk,
            64 * MIB,
            &[
                (0, &pattern(100_000, 1)),
                (30 * MIB, &pattern(4096, 2)),
                (64 * MIB - 3, b"end"),
            ],
        );
        fs::hard_link(&disk, root.join("home/u/zz-link.img")).unwrap();
        holey(&root.join("top.img"), 3 * MIB, &[(2 * MIB, b"x")]);
        holey(
            &root.join("home/u/small-holes"),
            2 * MIB + 100,
            &[(0, &pattern(MIB as usize + 100, 3)), (2 * MIB + 50, b"z")],
        );
        fs::write(root.join("home/u/plain.txt"), b"plain\n").unwrap();
        let f = File::open(&disk).unwrap();
        if map_file(&f, 64 * MIB).unwrap().hole_bytes() == 0 {
            crate::stdx::skip::skip(&format!(
                "{} has no holes on this filesystem",
                disk.display()
            ));
            return None;
        }
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        Some(Snap {
            _dir: dir,
            root,
            out,
        })
    }

    fn write(snap: &Snap) -> (ArchivePlan, ArchiveSummary) {
        let plan = scan(&snap.root, &mut NoProgress).unwrap();
        let summary = crate::archive::tests::write_plan(&plan, &snap.out, None, &mut NoProgress);
        (plan, summary)
    }

    fn index_entries(snap: &Snap) -> Vec<IndexEntry> {
        let r = io::BufReader::new(File::open(snap.out.join("data.index.jsonl")).unwrap());
        IndexReader::new(r).unwrap().map(|e| e.unwrap()).collect()
    }

    fn entry<'a>(entries: &'a [IndexEntry], path: &str) -> &'a IndexEntry {
        entries
            .iter()
            .find(|e| e.path == path.as_bytes())
            .expect(path)
    }

    /// Before: a sparse file was stored whole (64 MiB in the archive for 100 KiB of data).
    #[test]
    fn sparse_files_are_stored_as_gnu_pax_1_0_with_the_size_predicted_and_the_content_hashed() {
        let Some(snap) = snapshot() else { return };
        let (plan, summary) = write(&snap);
        assert_eq!(
            plan.estimate.tar_bytes, summary.tar_bytes,
            "the scan predicts the sparse members"
        );
        assert_eq!(
            fs::metadata(snap.out.join("data.tar")).unwrap().len(),
            summary.tar_bytes
        );
        assert!(
            summary.tar_bytes < 3 * MIB,
            "{} bytes stored",
            summary.tar_bytes
        );
        assert_eq!(summary.file_bytes, plan.estimate.file_bytes);
        let entries = index_entries(&snap);
        let disk = entry(&entries, "home/u/vm/disk.img");
        let logical = fs::read(snap.root.join("home/u/vm/disk.img")).unwrap();
        assert_eq!(disk.size, 64 * MIB);
        let record = disk.sparse.expect("stored sparse");
        assert_eq!(
            disk.sha256,
            Some(record.stored_sha256),
            "the index's sha256 of a sparse member is the stored digest (map and data, holes not hashed)"
        );
        assert!(disk.sha256_is_stored());
        let on_disk = File::open(snap.root.join("home/u/vm/disk.img")).unwrap();
        assert_eq!(
            stored_digest_of(&on_disk, 64 * MIB, &mut |_| {}).unwrap(),
            disk.sha256,
            "the file on disk hashes to it the same way"
        );
        assert!(record.stored < MIB, "{record:?}");
        let link = entry(&entries, "home/u/zz-link.img");
        assert_eq!(link.kind, EntryKind::Hardlink);
        assert_eq!(
            (link.sparse, link.data_offset, link.sha256),
            (disk.sparse, disk.data_offset, disk.sha256)
        );
        assert!(entry(&entries, "top.img").sparse.is_some());
        assert_eq!(
            entry(&entries, "home/u/small-holes").sparse,
            None,
            "under 1 MiB of holes: stored whole"
        );
        assert_eq!(entry(&entries, "home/u/plain.txt").sparse, None);

        // The member's header is GNU's: the fake name, the GNU.sparse records.
        let tar = fs::read(snap.out.join("data.tar")).unwrap();
        let header = &tar[disk.header_offset as usize..disk.data_offset as usize];
        let text = String::from_utf8_lossy(header);
        for needle in [
            "GNU.sparse.major=1",
            "GNU.sparse.minor=0",
            "GNU.sparse.name=home/u/vm/disk.img",
            "GNU.sparse.realsize=67108864",
            "home/u/vm/GNUSparseFile.0/disk.img",
        ] {
            assert!(text.contains(needle), "{needle} in {text:?}");
        }

        // The verifier checks both hashes; one file reads back whole with one seek.
        let report = verify_archive(
            "data.tar",
            File::open(snap.out.join("data.tar")).unwrap(),
            io::BufReader::new(File::open(snap.out.join("data.index.jsonl")).unwrap()),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(
            (report.files, report.file_bytes),
            (summary.files, summary.file_bytes)
        );
        let files = ArchiveFiles::discover(&snap.out, "data.tar").unwrap();
        for e in [disk, link] {
            let mut got = Vec::new();
            read_entry(&mut files.open().unwrap(), e, &mut got).unwrap();
            assert!(got == logical, "{}", e.display_path());
        }
    }

    /// GNU tar (and bsdtar, when installed) extract dbackup's sparse members under their real names, with the same
    /// content and with holes (a few blocks allocated, not 64 MiB).
    #[test]
    fn gnu_tar_and_bsdtar_extract_the_sparse_members_with_their_holes() {
        let Some(snap) = snapshot() else { return };
        write(&snap);
        let mut tools = vec!["tar"];
        if Command::new("bsdtar").arg("--version").output().is_ok() {
            tools.push("bsdtar");
        } else {
            crate::stdx::skip::skip(
                "bsdtar is not installed (apt-get install libarchive-tools): only GNU tar is checked here",
            );
        }
        for tool in tools {
            let into = snap.out.join(tool);
            fs::create_dir(&into).unwrap();
            let out = Command::new(tool)
                .arg("-xf")
                .arg(snap.out.join("data.tar"))
                .arg("-C")
                .arg(&into)
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for rel in [
                "home/u/vm/disk.img",
                "home/u/zz-link.img",
                "top.img",
                "home/u/small-holes",
                "home/u/plain.txt",
            ] {
                let (a, b) = (snap.root.join(rel), into.join(rel));
                assert!(
                    fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                    "{tool}: {rel}"
                );
            }
            let got = allocated(&into.join("home/u/vm/disk.img"));
            assert!(
                got < 2 * MIB,
                "{tool} allocated {got} bytes for 104 KiB of data"
            );
            assert!(!into.join("home/u/vm/GNUSparseFile.0").exists(), "{tool}");
        }
    }

    /// An index written before the stored digest (a sparse member's `sha256` is the logical content's, holes as
    /// zeros) still verifies and reads, checked that way; a wrong logical sha256 there is caught. (New with the
    /// stored digest: before it, every index was of that kind.)
    #[test]
    fn an_older_index_with_the_logical_sha256_is_checked_that_way() {
        let Some(snap) = snapshot() else { return };
        write(&snap);
        let logical = Digest::of_bytes(&fs::read(snap.root.join("home/u/vm/disk.img")).unwrap());
        let index_path = snap.out.join("data.index.jsonl");
        let text = fs::read_to_string(&index_path).unwrap();
        let stored = entry(&index_entries(&snap), "home/u/vm/disk.img")
            .sha256
            .unwrap();
        for (sha, ok) in [(logical, true), (Digest([9; 32]), false)] {
            let old = text.replace(
                &format!("\"sha256\":\"{stored}\""),
                &format!("\"sha256\":\"{sha}\""),
            );
            assert_ne!(old, text);
            fs::write(&index_path, &old).unwrap();
            let disk = entry(&index_entries(&snap), "home/u/vm/disk.img").clone();
            assert!(!disk.sha256_is_stored());
            let verified = verify_archive(
                "data.tar",
                File::open(snap.out.join("data.tar")).unwrap(),
                io::BufReader::new(File::open(&index_path).unwrap()),
                &mut NoProgress,
            );
            assert_eq!(verified.is_ok(), ok, "{verified:?}");
            let files = ArchiveFiles::discover(&snap.out, "data.tar").unwrap();
            let read = read_entry(&mut files.open().unwrap(), &disk, &mut io::sink());
            assert_eq!(read.is_ok(), ok, "{read:?}");
        }
    }

    /// A flipped byte in a sparse member's data or map is found by the verifier and by a one-file read.
    #[test]
    fn damage_to_a_sparse_member_is_caught() {
        let Some(snap) = snapshot() else { return };
        write(&snap);
        let entries = index_entries(&snap);
        let disk = entry(&entries, "home/u/vm/disk.img").clone();
        let tar_path = snap.out.join("data.tar");
        let pristine = fs::read(&tar_path).unwrap();
        // The map's first digit, then a data byte.
        for (at, what) in [
            (disk.data_offset + 2, "map"),
            (disk.data_offset + 512 + 5000, "data"),
        ] {
            let mut bytes = pristine.clone();
            bytes[at as usize] ^= 0x01;
            fs::write(&tar_path, &bytes).unwrap();
            let err = verify_archive(
                "data.tar",
                File::open(&tar_path).unwrap(),
                io::BufReader::new(File::open(snap.out.join("data.index.jsonl")).unwrap()),
                &mut NoProgress,
            )
            .unwrap_err();
            assert_eq!(
                err.entry.as_deref(),
                Some("home/u/vm/disk.img"),
                "{what}: {err}"
            );
            let files = ArchiveFiles::discover(&snap.out, "data.tar").unwrap();
            let err = read_entry(&mut files.open().unwrap(), &disk, &mut io::sink()).unwrap_err();
            assert!(
                matches!(err, ReadError::Header { .. } | ReadError::Content { .. }),
                "{what}: {err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The restore engine's own sources: a tar stream (two passes) and a snapshot directory

mod engine {
    use std::fs;
    use std::io::Cursor;
    use std::path::Path;
    use std::process::Command;

    use super::archives::{allocated, holey};
    use crate::restore::engine::source::{self, SnapshotTree};
    use crate::restore::{Applier, Planner, RestoreError, RestoreOptions};

    const MIB: u64 = 1 << 20;

    fn opts() -> RestoreOptions {
        RestoreOptions {
            fsync: false,
            ..RestoreOptions::default()
        }
    }

    /// A GNU tar archive (`--format=posix --sparse`: PAX 1.0) of `dir`'s `disk.img`.
    fn gnu_tar(dir: &Path, version: &str) -> Vec<u8> {
        let mut tar = Command::new("tar");
        tar.args([
            "--sparse",
            "--format=posix",
            &format!("--sparse-version={version}"),
            "-cf",
            "-",
            "-C",
        ])
        .arg(dir)
        .arg("disk.img");
        crate::archive::tests::run_ok(&mut tar, "tar runs").stdout
    }

    /// Streamed in two passes (`source::plan_tar`, `source::apply_tar`), every PAX version GNU tar writes comes back
    /// with its content and holes. Before: PAX sparse members were refused as an unknown type.
    #[test]
    fn a_tar_stream_restores_pax_sparse_members_with_their_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        holey(
            &src.join("disk.img"),
            16 * MIB,
            &[(MIB, b"one"), (9 * MIB, &[7u8; 65_536])],
        );
        if allocated(&src.join("disk.img")) > 4 * MIB {
            return crate::stdx::skip::skip("no holes on this filesystem");
        }
        for version in ["0.0", "0.1", "1.0"] {
            let bytes = gnu_tar(&src, version);
            let target = dir.path().join(format!("t-{version}"));
            let mut planner = Planner::new(&target, opts()).unwrap();
            source::plan_tar(Cursor::new(&bytes), &mut planner).unwrap();
            let plan = planner.finish();
            assert!(
                !plan.has_refusals(),
                "{version}: {:?}",
                plan.refusals().collect::<Vec<_>>()
            );
            let mut applier = Applier::new(&plan).unwrap();
            source::apply_tar(Cursor::new(&bytes), &mut applier).unwrap();
            assert!(applier.finish().is_ok(), "{version}");
            let got = target.join("disk.img");
            assert!(
                fs::read(&got).unwrap() == fs::read(src.join("disk.img")).unwrap(),
                "{version}"
            );
            assert!(
                allocated(&got) < 2 * MIB,
                "{version}: {} allocated",
                allocated(&got)
            );
        }
        // A map that names more data than the member holds: refused by the plan, nothing written.
        let mut bytes = gnu_tar(&src, "1.0");
        let at = bytes
            .windows(7)
            .position(|w| w == b"\n65536\n")
            .expect("the map")
            + 1;
        bytes[at..at + 5].copy_from_slice(b"99999");
        let target = dir.path().join("bad");
        let mut planner = Planner::new(&target, opts()).unwrap();
        source::plan_tar(Cursor::new(&bytes), &mut planner).unwrap();
        let plan = planner.finish();
        let refused: Vec<String> = plan
            .refusals()
            .map(|i| i.refusal.clone().unwrap().to_string())
            .collect();
        assert_eq!(
            refused,
            ["unsupported entry type: sparse file with a damaged map"]
        );
        assert!(matches!(
            Applier::new(&plan),
            Err(RestoreError::Refused { .. })
        ));
        assert!(!target.exists());
    }

    /// A local snapshot's sparse file is restored with its holes (from its `SEEK_DATA`/`SEEK_HOLE` map), a file
    /// without holes as before.
    #[test]
    fn a_snapshot_restores_sparse_files_with_their_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("snap");
        holey(
            &src.join("vm/disk.img"),
            32 * MIB,
            &[(0, b"start"), (20 * MIB, b"middle")],
        );
        fs::write(src.join("vm/plain"), vec![1u8; 10_000]).unwrap();
        if allocated(&src.join("vm/disk.img")) > 4 * MIB {
            return crate::stdx::skip::skip("no holes on this filesystem");
        }
        let target = dir.path().join("t");
        let snap = SnapshotTree::new(&src);
        let mut planner = Planner::new(&target, opts()).unwrap();
        snap.plan(Path::new(""), &mut planner).unwrap();
        let plan = planner.finish();
        let mut applier = Applier::new(&plan).unwrap();
        snap.apply(&plan, &mut applier).unwrap();
        assert!(applier.finish().is_ok());
        for f in ["vm/disk.img", "vm/plain"] {
            assert!(
                fs::read(target.join(f)).unwrap() == fs::read(src.join(f)).unwrap(),
                "{f}"
            );
        }
        assert!(allocated(&target.join("vm/disk.img")) < 2 * MIB);
    }
}
