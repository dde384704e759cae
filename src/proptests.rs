//! Property-based tests of every parser of what a drive holds: `backup.json`, the plain index (streamed, and
//! searched by restore), `verification.sha256`, the tar header readers of restore and verify, the sparse maps (GNU
//! PAX 1.0, 0.x records, old-GNU headers), `LATEST`, the destination marker and the names a listing holds. Inputs are generated, mutations of real ones (written by the archive writer), and boundary
//! numbers; the property is always "an error or a value, never a panic, never more than a bounded amount of memory"
//! (measured by a counting allocator), plus what a value promises to its users.
//!
//! `cargo test` runs a fixed number of cases per property (`DEFAULT_CASES`); `cargo xtask fuzz --cases N` (or
//! `PROPTEST_CASES=N`) runs more.

use std::io::{Cursor, Read as _};
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::archive::index::{IndexEntry, IndexReader, MAX_OFFSET};
use crate::archive::sums::{SumLine, parse_sums, write_sums};
use crate::archive::{self, ArchiveFiles, Digest, EntryKind, NoProgress};
use crate::external::layout::{self, BackupMeta, MAX_RECORDED_BYTES};
use crate::media::marker;

/// Cases per property in `cargo test`: the whole file runs in a few seconds in a debug build.
const DEFAULT_CASES: u32 = 256;

/// The case count: `PROPTEST_CASES` (what `cargo xtask fuzz --cases N` sets), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        // Shrinking a failure of a parser is quick; a long fuzz run should not stop at the first case.
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// The three properties of a parser of untrusted bytes: `check` holds for inputs from `generated`, for mutations
/// of the sample's real `field`, and for junk.
macro_rules! parser_properties {
    ($check:ident, $generated:expr, $field:ident; $gen_test:ident, $mut_test:ident, $junk_test:ident) => {
        proptest! {
            #![proptest_config(config(DEFAULT_CASES))]

            #[test]
            fn $gen_test(bytes in $generated) {
                $check(&bytes);
            }

            #[test]
            fn $mut_test(m in mutations()) {
                $check(&apply(&sample().$field, &m));
            }

            #[test]
            fn $junk_test(bytes in junk()) {
                $check(&bytes);
            }
        }
    };
}
// ---------------------------------------------------------------------------------------------------------------
// Memory: a counting allocator, per thread.

mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The system allocator, counting the bytes each thread holds and the most it held.
    pub struct Meter;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        let _ = LIVE.try_with(|live| {
            let v = live.get().wrapping_add(n);
            live.set(v);
            let _ = PEAK.try_with(|p| {
                if v > p.get() {
                    p.set(v);
                }
            });
        });
    }

    // SAFETY: every call is passed on to the system allocator unchanged; only counters are updated around it.
    // (`GlobalAlloc` is an unsafe trait by nature: no crate can implement a counting allocator without it.)
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is the system allocator's.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as above.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as above.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Runs `f` and returns its result with the most bytes this thread held above what it held before.
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(start));
        let out = f();
        let peak = PEAK.with(Cell::get) - start;
        (out, peak.max(0) as usize)
    }
}

#[global_allocator]
static METER: meter::Meter = meter::Meter;

/// Asserts that `f` holds at most `limit` bytes at once.
#[track_caller]
fn bounded<T>(limit: usize, what: &str, f: impl FnOnce() -> T) -> T {
    let (out, peak) = meter::peak(f);
    assert!(
        peak <= limit,
        "{what} held {peak} bytes at once, more than {limit}"
    );
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs: real ones, written by the archive writer once, and their mutations.

struct Sample {
    tar: Vec<u8>,
    index: Vec<u8>,
    entries: Vec<IndexEntry>,
    meta: Vec<u8>,
    sums: Vec<u8>,
    marker: Vec<u8>,
}

/// A small tree archived for real: directories, files of several sizes, a long name (pax `path`), a sub-second
/// mtime (pax `mtime`), a symlink, a hard link, a name that is not UTF-8 and a sparse file.
fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("snap");
        let data = src.join("home/u/data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), b"hello\n").unwrap();
        std::fs::write(data.join("sub/empty"), b"").unwrap();
        std::fs::write(data.join("sub/block"), vec![7u8; 1500]).unwrap();
        std::fs::write(data.join("x".repeat(140)), b"long name").unwrap();
        std::fs::write(
            data.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
            b"latin-1",
        )
        .unwrap();
        // A sparse file (1.5 MiB, two 4 KiB data extents): a GNU PAX 1.0 sparse member, its map in its data.
        let disk = std::fs::File::create(data.join("disk.img")).unwrap();
        disk.set_len(1536 << 10).unwrap();
        use std::os::unix::fs::FileExt;
        disk.write_all_at(b"start", 0).unwrap();
        disk.write_all_at(b"end", (1536 << 10) - 3).unwrap();
        drop(disk);
        std::os::unix::fs::symlink("a.txt", data.join("link")).unwrap();
        std::fs::hard_link(data.join("a.txt"), data.join("hard")).unwrap();
        let t = rustix::fs::Timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 123_456_789,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            data.join("a.txt"),
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let plan = archive::scan(&src, &mut NoProgress).unwrap();
        archive::write_archive(
            &plan,
            Box::new(archive::FileSink::create(out.join("data.tar")).unwrap()),
            Box::new(archive::FileSink::create(out.join("data.index.jsonl")).unwrap()),
            &archive::ArchiveOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        let tar = std::fs::read(out.join("data.tar")).unwrap();
        let index = std::fs::read(out.join("data.index.jsonl")).unwrap();
        let entries = IndexReader::new(&index[..])
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut m = layout::tests::meta("2025-04-01-031500", &["data", "config"]);
        m.sets[0].archive = vec![crate::archive::FileRecord {
            name: "data.tar".into(),
            bytes: tar.len() as u64,
            sha256: Digest::of_bytes(&tar),
            age_head: None,
        }];
        m.sets[0].index = vec![crate::archive::FileRecord {
            name: "data.index.jsonl".into(),
            bytes: index.len() as u64,
            sha256: Digest::of_bytes(&index),
            age_head: None,
        }];
        m.sets[0].tar_bytes = tar.len() as u64;
        m.sets[0].warnings = vec![archive::Warning {
            path: "home/u/data/sock".into(),
            message: "a socket".into(),
        }];
        let meta = layout::metadata_bytes(&m);
        let mut sums = Vec::new();
        write_sums(
            &mut sums,
            &[
                SumLine {
                    sha256: Digest::of_bytes(&tar),
                    name: b"data.tar".to_vec(),
                },
                SumLine {
                    sha256: Digest::of_bytes(&index),
                    name: b"we\\ird\nname".to_vec(),
                },
                SumLine {
                    sha256: Digest::of_bytes(&meta),
                    name: b"backup.json".to_vec(),
                },
            ],
        )
        .unwrap();
        let mk = marker::Marker::new(
            "t9",
            Some("FF4F-F609".into()),
            Some("T9".into()),
            chrono::DateTime::parse_from_rfc3339("2025-11-26T02:14:00+01:00").unwrap(),
            "ws".into(),
        );
        let marker = serde_json::to_vec_pretty(&mk).unwrap();
        Sample {
            tar,
            index,
            entries,
            meta,
            sums,
            marker,
        }
    })
}

/// Numbers at the edges of every integer type a parser might use, and a few that are not integers at all.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "511",
    "512",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e400",
    "0.5",
    "-0",
];

/// Strings a hostile drive would put where a name goes.
const NAMES: &[&str] = &[
    "",
    ".",
    "..",
    "../../etc/shadow",
    "/etc/shadow",
    "a/b",
    "x\\u0000y",
    "\\u001b[2Jforged",
    "line\\nbreak",
    "data.tar",
    "backup.json",
    "-rf",
];

/// One change to a real input.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit of the byte at (position mod length).
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Replace the n-th run of ASCII digits (mod their count) with a boundary number.
    Number(usize, usize),
    /// Replace the n-th JSON string's content (mod their count) with a hostile name.
    Name(usize, usize),
    /// Repeat a slice many times (long lines, deep nesting, many entries).
    Repeat(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0..NUMBERS.len()).prop_map(|(i, n)| Mutation::Number(i, n)),
        (any::<usize>(), 0..NAMES.len()).prop_map(|(i, n)| Mutation::Name(i, n)),
        (any::<usize>(), 1usize..32, 2usize..200).prop_map(|(i, l, n)| Mutation::Repeat(i, l, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..6)
}

/// Spans `[start, end)` of the runs of bytes that `inside` accepts.
fn runs(bytes: &[u8], inside: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if inside(bytes[i]) {
            let start = i;
            while i < bytes.len() && inside(bytes[i]) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The contents of JSON string literals (between quotes, escapes skipped).
fn strings(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(bytes.len());
            out.push((start, end));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn apply(base: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = base.to_vec();
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Flip(i, bit) if !b.is_empty() => {
                let i = at(*i, b.len());
                b[i] ^= 1 << bit;
            }
            Mutation::Set(i, v) if !b.is_empty() => {
                let i = at(*i, b.len());
                b[i] = *v;
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) if !b.is_empty() => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate(n) => {
                let n = at(*n, b.len() + 1);
                b.truncate(n);
            }
            Mutation::Number(k, n) => {
                let r = runs(&b, |c| c.is_ascii_digit());
                if !r.is_empty() {
                    let (s, e) = r[k % r.len()];
                    b.splice(s..e, NUMBERS[*n].bytes());
                }
            }
            Mutation::Name(k, n) => {
                let r = strings(&b);
                if !r.is_empty() {
                    let (s, e) = r[k % r.len()];
                    b.splice(s..e, NAMES[*n].bytes());
                }
            }
            Mutation::Repeat(i, len, times) if !b.is_empty() => {
                let s = at(*i, b.len());
                let e = (s + len).min(b.len());
                let piece = b[s..e].to_vec();
                let more: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                b.splice(e..e, more);
            }
            _ => {}
        }
    }
    b
}

/// Input of any shape: raw bytes, or text made of JSON-ish tokens and boundary numbers.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b":".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"null".to_vec()),
        (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].as_bytes().to_vec()),
        (0..NAMES.len()).prop_map(|i| format!("\"{}\"", NAMES[i]).into_bytes()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(token, 0..64).prop_map(|t| t.concat()),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// backup.json

/// A `backup.json` as JSON, with every field drawn from boundary values and hostile names.
fn metadata_json() -> impl Strategy<Value = Vec<u8>> {
    let number = (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].to_string());
    let name = prop_oneof![
        (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
        "[a-z]{1,8}(\\.tar|\\.index\\.jsonl)?",
    ];
    let file = (name.clone(), number.clone()).prop_map(|(n, b)| {
        format!(
            r#"{{"name":"{n}","bytes":{b},"sha256":"{}"}}"#,
            Digest::of_bytes(b"x")
        )
    });
    let files = proptest::collection::vec(file, 0..4).prop_map(|v| v.join(","));
    let set = (
        name.clone(),
        files.clone(),
        files,
        proptest::collection::vec(number.clone(), 6),
    )
        .prop_map(|(set, archive, index, n)| {
            format!(
                r#"{{"set":"{set}","snapshot":"{set}-2025-04-01-031500","snapshot_complete":true,
                    "archive":[{archive}],"index":[{index}],"tar_bytes":{},"entries":{},"files":{},
                    "file_bytes":{},"hard_links":{},"warning_count":{}}}"#,
                n[0], n[1], n[2], n[3], n[4], n[5]
            )
        });
    (
        proptest::collection::vec(set, 0..4),
        name,
        prop_oneof![Just("1".to_string()), number],
    )
        .prop_map(|(sets, sums, format)| {
            format!(
                r#"{{"format":{format},"stamp":"2025-04-01-031500","destination":"T9","host":"ws",
                    "dbackup_version":"0","started":"2025-04-01T03:15:00+02:00",
                    "finished":"2025-04-01T03:16:00+02:00","verified":true,"read_back":{{"methods":["direct"]}},
                    "filesystem":{{"fs_type":"exfat"}},"sums_file":"{sums}","sets":[{}]}}"#,
                sets.join(",")
            )
            .into_bytes()
        })
}

/// What a parsed `backup.json` promises its readers.
fn check_metadata(bytes: &[u8]) {
    let limit = 64 * bytes.len() + (256 << 10);
    let parsed = bounded(limit, "parsing backup.json", || {
        layout::parse_metadata(bytes, Path::new("backup.json"))
    });
    let Ok(meta) = parsed else { return };
    assert!(layout::is_plain_name(&meta.sums_file));
    let mut total = Some(0u64);
    for (i, s) in meta.sets.iter().enumerate() {
        assert!(crate::settings::is_safe_name(&s.set), "{:?}", s.set);
        assert!(meta.sets[..i].iter().all(|o| o.set != s.set));
        for f in s.archive.iter().chain(&s.index) {
            assert!(layout::is_plain_name(&f.name), "{:?}", f.name);
            total = total.and_then(|t| t.checked_add(f.bytes));
        }
        assert!(s.archive_bytes() <= MAX_RECORDED_BYTES);
    }
    assert!(total.is_some_and(|t| t <= MAX_RECORDED_BYTES));
    assert_eq!(Some(meta.file_bytes_on_drive()), total);
    assert_meta_round_trips(&meta);
}

fn assert_meta_round_trips(meta: &BackupMeta) {
    let again = layout::parse_metadata(&layout::metadata_bytes(meta), Path::new("backup.json"))
        .expect("what was accepted is accepted again once written");
    assert_eq!(&again, meta);
}

parser_properties!(check_metadata, metadata_json(), meta; backup_json_generated, backup_json_mutated, backup_json_junk);

// ---------------------------------------------------------------------------------------------------------------
// The plain index, streamed (verify, list) and searched (restore).

/// One index line with boundary numbers and any type.
fn index_line() -> impl Strategy<Value = String> {
    let number = (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].to_string());
    let kind = prop_oneof![
        Just("file"),
        Just("hardlink"),
        Just("symlink"),
        Just("dir"),
        Just("fifo"),
        Just("char"),
        Just("block"),
        Just("end"),
        Just("other")
    ];
    (
        kind,
        (0..NAMES.len()).prop_map(|i| NAMES[i]),
        proptest::collection::vec(number, 8),
        any::<bool>(),
        proptest::option::of((0..STAMPS.len()).prop_map(|i| STAMPS[i])),
    )
        .prop_map(|(kind, name, n, with_link, stored_in)| {
            let link = if with_link {
                format!(r#","link":"{name}""#)
            } else {
                String::new()
            };
            let stored_in = match stored_in {
                Some(s) => format!(r#","in":"{s}""#),
                None => String::new(),
            };
            format!(
                r#"{{"type":"{kind}","path":"{name}"{link}{stored_in},"size":{},"mode":{},"uid":{},"gid":{},"mtime":{},
                    "mtime_nsec":{},"sha256":"{}","header_offset":{},"data_offset":{},"entries":1,"files":1,
                    "file_bytes":1,"tar_bytes":1}}"#,
                n[0],
                n[1],
                n[2],
                n[3],
                n[4],
                n[5],
                Digest::of_bytes(b"x"),
                n[6],
                n[7]
            )
            .replace('\n', "")
        })
}

/// Stamps and things that are not, for an incremental manifest's `base`, `depends_on` and `in`.
const STAMPS: &[&str] = &[
    "2026-12-01-031500",
    "2026-12-02-031500",
    "2026-13-99-999999",
    "../2026-12-01-031500",
    "",
    "latest",
];

/// A full archive's header (version 1), or a manifest's (version 2) with any base and dependencies.
fn index_header() -> impl Strategy<Value = Vec<u8>> {
    let stamp = (0..STAMPS.len()).prop_map(|i| STAMPS[i]);
    prop_oneof![
        Just(()).prop_map(|_| sample()
            .index
            .split(|b| *b == b'\n')
            .next()
            .unwrap()
            .to_vec()),
        (
            1u32..=3,
            proptest::option::of(stamp.clone()),
            proptest::collection::vec(stamp, 0..4),
            any::<bool>(),
        )
            .prop_map(|(version, base, deps, incremental)| {
                let mut h = serde_json::json!({
                    "format": "dbackup-index", "version": version, "tar_format": "pax",
                    "dbackup_version": "0", "created": "2026-12-02T03:15:00Z", "source": "/s",
                    "depends_on": deps,
                });
                if incremental {
                    h["kind"] = "incremental".into();
                }
                if let Some(b) = base {
                    h["base"] = b.into();
                }
                serde_json::to_vec(&h).unwrap()
            }),
    ]
}

fn index_text() -> impl Strategy<Value = Vec<u8>> {
    (
        index_header(),
        proptest::collection::vec(index_line(), 0..8),
    )
        .prop_map(|(header, lines)| {
            let mut out = header;
            out.push(b'\n');
            for l in lines {
                out.extend_from_slice(l.as_bytes());
                out.push(b'\n');
            }
            out
        })
}

/// Streams an index: every entry it yields keeps its promises (offsets inside a possible archive, nanoseconds
/// below a second); memory stays bounded by the longest line.
fn check_index_stream(bytes: &[u8]) {
    let limit = 64 * bytes.len() + (256 << 10);
    bounded(limit, "reading an index", || {
        let Ok(r) = IndexReader::new(bytes) else {
            return;
        };
        let header = r.header().clone();
        for s in header.base.iter().chain(&header.depends_on) {
            assert!(crate::snapshot::parse_stamp(s).is_some(), "{s:?}");
        }
        for e in r {
            let Ok(e) = e else { break };
            // An entry in an earlier backup is a file, in one the header depends on.
            if let Some(stamp) = &e.stored_in {
                assert_eq!(e.kind, crate::archive::EntryKind::File);
                assert!(header.depends_on.iter().any(|d| **d == **stamp), "{stamp}");
            }
            assert!(
                e.data_offset
                    .checked_add(e.size)
                    .is_some_and(|x| x <= MAX_OFFSET)
            );
            assert!(e.header_offset <= MAX_OFFSET);
            assert!(e.mtime_nsec < 1_000_000_000);
            // What restore makes of an entry.
            let _ = crate::restore::content::entry_of_index(&e);
        }
    });
}

/// Searches an index as restore does (binary search, then reading in order from a position).
fn check_index_search(bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("d.index.jsonl"), bytes).unwrap();
    let files = ArchiveFiles::discover(tmp.path(), "d.index.jsonl").unwrap();
    let limit = 64 * bytes.len() + (1 << 20);
    bounded(limit, "searching an index", || {
        let Ok(mut idx) = crate::restore::index_search::SortedIndex::open(&files) else {
            return;
        };
        for e in sample().entries.iter().take(6) {
            let _ = idx.find(&e.path);
        }
        let _ = idx.find(b"zz/not/there");
        if let Ok(pos) = idx.lower_bound(b"home/u") {
            let mut n = 0;
            let _ = idx.read_from(pos, |_| {
                n += 1;
                n < 1000
            });
        }
    });
}

parser_properties!(check_index_stream, index_text(), index; index_generated, index_mutated, index_junk);

proptest! {
    #![proptest_config(config(DEFAULT_CASES / 4))]

    #[test]
    fn index_search_mutated(m in mutations()) {
        check_index_search(&apply(&sample().index, &m));
    }

    #[test]
    fn index_search_generated(bytes in index_text()) {
        check_index_search(&bytes);
    }
}

/// A line that never ends is refused after [`MAX_LINE_BYTES`](crate::archive::index::MAX_LINE_BYTES), holding
/// little more than that.
#[test]
fn an_endless_index_line_is_refused_with_bounded_memory() {
    use crate::archive::index::MAX_LINE_BYTES;
    let header = sample()
        .index
        .split(|b| *b == b'\n')
        .next()
        .unwrap()
        .to_vec();
    let endless = Cursor::new([header, b"\n".to_vec()].concat()).chain(std::io::repeat(b'x'));
    let err = bounded(3 * MAX_LINE_BYTES, "an endless line", || {
        let mut r = IndexReader::new(std::io::BufReader::new(endless)).unwrap();
        r.next_entry().unwrap_err()
    });
    assert!(err.to_string().contains("longer than"), "{err}");
}

/// An archive whose first entry is a pax extended header of 256 MiB (a sparse file on a drive costs nothing to make
/// so) is refused by the verifier once its header blocks pass the tap's limit, holding little more than that.
/// Before: the `tar` crate read the whole header into memory (`restore --verify` of a 3 GiB one grew past 2 GB and
/// ran out of memory).
#[test]
fn an_endless_pax_header_is_refused_with_bounded_memory() {
    let mut h = tar::Header::new_ustar();
    h.set_path("././@PaxHeader").unwrap();
    h.set_size(256 << 20);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    let tar = Cursor::new(h.as_bytes().to_vec()).chain(std::io::repeat(b'a').take(256 << 20));
    let err = bounded(32 << 20, "a 256 MiB pax header", || {
        archive::verify_archive("data.tar", tar, &sample().index[..], &mut NoProgress).unwrap_err()
    });
    assert!(err.to_string().contains("larger than"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// verification.sha256

fn sums_text() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        any::<bool>(),
        prop_oneof![
            Just(Digest::of_bytes(b"x").to_string()),
            "[0-9a-fA-F]{60,68}",
            ".{0,70}"
        ],
        prop_oneof![Just("  "), Just(" *"), Just(" "), Just("\t")],
        prop_oneof![
            (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
            "[\\\\a-z\\n\\r]{0,12}"
        ],
    )
        .prop_map(|(esc, hex, sep, name)| {
            format!("{}{hex}{sep}{name}", if esc { "\\" } else { "" }).into_bytes()
        });
    proptest::collection::vec(line, 0..8).prop_map(|l| l.join(&b'\n'))
}

/// What parsed sums promise: names that are not empty, and lines that write back to the same lines.
fn check_sums(bytes: &[u8]) {
    let limit = 16 * bytes.len() + (64 << 10);
    let Ok(lines) = bounded(limit, "parsing sums", || parse_sums(bytes)) else {
        return;
    };
    assert!(lines.iter().all(|l| !l.name.is_empty()));
    if lines.iter().all(|l| !l.name.contains(&0)) {
        let mut out = Vec::new();
        write_sums(&mut out, &lines).unwrap();
        assert_eq!(parse_sums(&out).unwrap(), lines);
    }
}

parser_properties!(check_sums, sums_text(), sums; sums_generated, sums_mutated, sums_junk);

// ---------------------------------------------------------------------------------------------------------------
// Tar headers: restore's one-seek reader and header check, the scan path, and the verifier.

/// A header field's place in a ustar block.
const FIELDS: &[(usize, usize)] = &[
    (0, 100),   // name
    (100, 8),   // mode
    (108, 8),   // uid
    (116, 8),   // gid
    (124, 12),  // size
    (136, 12),  // mtime
    (148, 8),   // checksum
    (156, 1),   // type
    (157, 100), // linkname
    (329, 8),   // devmajor
    (337, 8),   // devminor
    (345, 155), // prefix
];

/// A header field change: which entry's header block, which field, what value, and whether to fix the checksum
/// afterwards (so the reader goes past the checksum check).
#[derive(Debug, Clone)]
struct FieldChange {
    entry: usize,
    field: usize,
    value: FieldValue,
    fix_checksum: bool,
}

#[derive(Debug, Clone)]
enum FieldValue {
    /// A boundary number in octal, as tar writes it.
    Octal(u64),
    /// A boundary number in GNU base-256 (high bit set, big-endian).
    Base256(u64, bool),
    Bytes(Vec<u8>),
    Zeros,
}

fn field_change() -> impl Strategy<Value = FieldChange> {
    let boundary = prop_oneof![
        Just(0u64),
        Just(1),
        Just(511),
        Just(512),
        Just(0o77777777777),
        Just(0o100000000000),
        Just(u32::MAX as u64),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
        Just(u64::MAX),
        Just(u64::MAX - 511),
        any::<u64>(),
    ];
    let value = prop_oneof![
        boundary.clone().prop_map(FieldValue::Octal),
        (boundary, any::<bool>()).prop_map(|(n, neg)| FieldValue::Base256(n, neg)),
        proptest::collection::vec(any::<u8>(), 1..12).prop_map(FieldValue::Bytes),
        Just(FieldValue::Zeros),
    ];
    (any::<usize>(), 0..FIELDS.len(), value, any::<bool>()).prop_map(
        |(entry, field, value, fix_checksum)| FieldChange {
            entry,
            field,
            value,
            fix_checksum,
        },
    )
}

/// The header blocks of the sample archive: each entry's ustar header, and its pax header when it has one.
fn header_blocks() -> Vec<usize> {
    let mut out = Vec::new();
    for e in &sample().entries {
        out.push(e.header_offset as usize);
        if e.kind != EntryKind::Hardlink && e.data_offset >= 512 {
            out.push(e.data_offset as usize - 512);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn apply_fields(tar: &mut [u8], changes: &[FieldChange]) {
    let blocks = header_blocks();
    for c in changes {
        let block = blocks[c.entry % blocks.len()];
        let (start, len) = FIELDS[c.field];
        let Some(field) = tar.get_mut(block + start..block + start + len) else {
            continue;
        };
        field.fill(0);
        match &c.value {
            FieldValue::Octal(n) => {
                let text = format!("{n:o}");
                let b = text.as_bytes();
                let k = b.len().min(len.saturating_sub(1));
                field[..k].copy_from_slice(&b[b.len() - k..]);
            }
            FieldValue::Base256(n, neg) => {
                let be = n.to_be_bytes();
                let k = be.len().min(len);
                field[len - k..].copy_from_slice(&be[be.len() - k..]);
                if *neg {
                    for x in field.iter_mut() {
                        *x = !*x;
                    }
                }
                field[0] |= 0x80;
            }
            FieldValue::Bytes(b) => {
                let k = b.len().min(len);
                field[..k].copy_from_slice(&b[..k]);
            }
            FieldValue::Zeros => {}
        }
        if c.fix_checksum {
            let h = &mut tar[block..block + 512];
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            let text = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(text.as_bytes());
        }
    }
}

/// A synthetic entry with pax records of boundary values, then the rest of the sample.
fn pax_prefix(records: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
    }
    let mut h = tar::Header::new_ustar();
    h.set_path("././@PaxHeader").unwrap();
    h.set_size(body.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut f = tar::Header::new_ustar();
    f.set_path("home/u/data/pax").unwrap();
    f.set_size(0);
    f.set_mode(0o644);
    f.set_entry_type(tar::EntryType::Regular);
    f.set_cksum();
    out.extend_from_slice(f.as_bytes());
    out
}

fn pax_records() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("size"),
        Just("mtime"),
        Just("path"),
        Just("linkpath"),
        Just("uid"),
        Just("GNU.sparse.size"),
        Just("GNU.sparse.map"),
        Just("x")
    ];
    let value = prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].to_string()),
        (0..NAMES.len()).prop_map(|i| NAMES[i].replace("\\u0000", "\0").replace("\\n", "\n")),
        "[0-9.,-]{0,24}",
    ];
    proptest::collection::vec((key.prop_map(str::to_string), value), 1..4)
}

/// Every reader of tar headers on this archive: an error or a value, within bounded memory.
fn check_tar(tar: &[u8], index: &[u8], entries: &[IndexEntry]) {
    let buffers = 4 * archive::WRITE_BUFFER + 64 * (tar.len() + index.len()) + (1 << 20);
    // The verifier, reading the archive and its index side by side.
    bounded(buffers, "verifying", || {
        if let Ok(r) = archive::verify_archive("data.tar", tar, index, &mut NoProgress) {
            assert_eq!(r.tar_bytes, tar.len() as u64);
        }
    });
    // Restore's one-seek read of each file, and its header check.
    for e in entries {
        bounded(buffers, "reading one entry", || {
            let mut out = Vec::new();
            if let Ok(n) = archive::read_entry(&mut Cursor::new(tar), e, &mut out) {
                assert_eq!(n, e.size);
                assert_eq!(out.len() as u64, e.size);
            }
        });
        let len = e.data_offset.saturating_sub(e.header_offset).min(8192);
        let start = (e.header_offset as usize).min(tar.len());
        let end = start.saturating_add(len as usize).min(tar.len());
        bounded(buffers, "checking a header", || {
            let _ = crate::restore::content::compare_header(tar[start..end].to_vec(), e, len);
        });
    }
    // The scan path (archives without an index): every header, as restore reads it (restore::engine::tarscan, whose own
    // properties are in its tests), from a file and as a stream.
    bounded(buffers, "scanning", || {
        use crate::restore::engine::tarscan::{Owners, Scanner};
        let mut owners = Owners::numeric();
        if let Ok(mut s) = Scanner::seekable(Cursor::new(tar)) {
            for _ in 0..10_000 {
                let Ok(Some(m)) = s.next_member() else { break };
                let _ = m.entry(&mut owners);
            }
        }
        let mut s = Scanner::new(tar);
        for _ in 0..10_000 {
            let Ok(Some(m)) = s.next_member() else { break };
            let _ = m.entry(&mut owners);
            if std::io::copy(&mut s.content(), &mut std::io::sink()).is_err() {
                break;
            }
        }
    });
}

/// An index entry (the first of a kind: file, hard link, symlink, directory, or any) with a number moved to the
/// edges: size, data offset, header offset or mtime.
fn entry_change() -> impl Strategy<Value = (usize, u8, u64)> {
    (
        prop_oneof![
            Just(kind_at(EntryKind::File)),
            Just(kind_at(EntryKind::Hardlink)),
            Just(kind_at(EntryKind::Symlink)),
            Just(kind_at(EntryKind::Dir)),
            any::<usize>(),
        ],
        0u8..4,
        prop_oneof![
            Just(0u64),
            Just(511),
            Just(u64::MAX),
            Just(u64::MAX - 8191),
            Just(i64::MAX as u64),
            Just(i64::MAX as u64 + 1),
            any::<u64>()
        ],
    )
}

/// The position of the sample's first entry of `kind`.
fn kind_at(kind: EntryKind) -> usize {
    sample()
        .entries
        .iter()
        .position(|e| e.kind == kind)
        .expect("the sample has every kind")
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn tar_headers_mutated(changes in proptest::collection::vec(field_change(), 1..4)) {
        let s = sample();
        let mut tar = s.tar.clone();
        apply_fields(&mut tar, &changes);
        check_tar(&tar, &s.index, &s.entries);
    }

    #[test]
    fn tar_bytes_mutated(m in mutations()) {
        let s = sample();
        check_tar(&apply(&s.tar, &m), &s.index, &s.entries);
    }

    #[test]
    fn tar_pax_records(records in pax_records()) {
        let s = sample();
        let tar = [pax_prefix(&records), s.tar.clone()].concat();
        check_tar(&tar, &s.index, &s.entries);
    }

    #[test]
    fn tar_with_edge_index_numbers(changes in proptest::collection::vec(entry_change(), 1..4)) {
        let s = sample();
        let mut entries = s.entries.clone();
        for (i, field, n) in changes {
            let k = i % entries.len();
            let e = &mut entries[k];
            match field {
                0 => e.size = n,
                1 => e.data_offset = n,
                2 => e.header_offset = n,
                _ => e.mtime = n as i64,
            }
        }
        check_tar(&s.tar, &s.index, &entries);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Sparse maps: GNU PAX 1.0 (text at the start of the data), PAX 0.0/0.1 (pax records), old GNU (header fields)

/// A PAX 1.0 map's text: a count and numbers, boundary numbers among them, lines sometimes broken.
fn v1_map_text() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        (0u64..1 << 24).prop_map(|n| n.to_string()),
        (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].to_string()),
    ];
    (
        0u64..40,
        proptest::collection::vec(number, 0..80),
        any::<bool>(),
    )
        .prop_map(|(count, numbers, newline)| {
            let mut text = format!("{count}\n");
            for n in numbers {
                text.push_str(&n);
                text.push(if newline { '\n' } else { ' ' });
            }
            text.into_bytes()
        })
}

/// `GNU.sparse.*` records (and others) with boundary values.
fn sparse_records() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("GNU.sparse.major"),
        Just("GNU.sparse.minor"),
        Just("GNU.sparse.name"),
        Just("GNU.sparse.realsize"),
        Just("GNU.sparse.size"),
        Just("GNU.sparse.numblocks"),
        Just("GNU.sparse.offset"),
        Just("GNU.sparse.numbytes"),
        Just("GNU.sparse.map"),
        Just("path"),
    ];
    let value = prop_oneof![
        (0..NUMBERS.len()).prop_map(|i| NUMBERS[i].to_string()),
        proptest::collection::vec(0u64..1 << 20, 0..12)
            .prop_map(|v| { v.iter().map(u64::to_string).collect::<Vec<_>>().join(",") }),
        (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
    ];
    proptest::collection::vec((key.prop_map(str::to_string), value), 0..14)
}

/// Whatever a map reader accepts is consistent: in order, inside the file, exactly the data stored.
fn check_map(map: &archive::sparse::SparseMap) {
    let mut end = 0;
    for s in map.segments() {
        assert!(s.offset >= end && s.len > 0);
        end = s.offset + s.len;
        assert!(end <= map.size());
    }
}

/// A PAX 1.0 map read from `block`: in order, inside the file, and accounting for every stored byte.
fn check_v1_map(block: &[u8], stored: u64, size: u64) {
    bounded(1 << 20, "a PAX 1.0 map", || {
        if let Ok((map, taken)) =
            archive::sparse::read_v1_map(&mut Cursor::new(block), stored, size)
        {
            check_map(&map);
            assert_eq!(taken + map.data_bytes(), stored);
        }
    });
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn sparse_v1_map_generated(text in v1_map_text(), stored in 0u64..1 << 26, size in prop_oneof![
        0u64..1 << 30, Just(u64::MAX)]) {
        let mut block = text;
        block.resize(block.len().div_ceil(512).max(1) * 512, 0);
        check_v1_map(&block, stored, size);
    }

    #[test]
    fn sparse_v1_map_junk(bytes in junk(), stored in any::<u64>(), size in any::<u64>()) {
        check_v1_map(&bytes, stored, size);
    }

    #[test]
    fn sparse_pax_records(records in sparse_records()) {
        let parsed: Vec<std::io::Result<(&[u8], &[u8])>> =
            records.iter().map(|(k, v)| Ok((k.as_bytes(), v.as_bytes()))).collect();
        bounded(1 << 20, "GNU.sparse records", || {
            if let Ok(Some(p)) = archive::sparse::PaxSparse::from_records(parsed)
                && let Some(map) = &p.map
            {
                check_map(map);
                assert_eq!(map.size(), p.size);
            }
        });
    }

    #[test]
    fn sparse_old_gnu_headers(header in proptest::collection::vec(any::<u8>(), 512),
                              ext in proptest::collection::vec(any::<u8>(), 0..2048),
                              stored in any::<u64>()) {
        let mut header: [u8; 512] = header.try_into().unwrap();
        // GNU tar's magic, so that the sparse fields are read (a header without it is refused at once).
        header[257..265].copy_from_slice(b"ustar  \0");
        let ext: Vec<Box<[u8; 512]>> = ext
            .chunks_exact(512)
            .map(|c| Box::new(<[u8; 512]>::try_from(c).unwrap()))
            .collect();
        bounded(1 << 20, "an old-GNU sparse map", || {
            if let Ok(map) = archive::sparse::old_gnu_map(&header, &ext, stored) {
                check_map(&map);
                assert_eq!(map.data_bytes(), stored);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// LATEST and the destination marker

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn latest_file(bytes in prop_oneof![
        junk(),
        "[0-9-]{0,20}\n?.{0,8}".prop_map(String::into_bytes),
        Just(b"2025-04-01-031500\n".to_vec()),
    ]) {
        if let Some(s) = bounded(4096 + 16 * bytes.len(), "parsing LATEST", || layout::parse_latest(&bytes)) {
            assert!(crate::snapshot::parse_stamp(&s).is_some(), "{s:?}");
            assert!(!s.contains(['/', '\0', '\n']));
        }
    }

    #[test]
    fn latest_link_target(target in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(s) = layout::latest_from_link(&target) {
            assert!(crate::snapshot::parse_stamp(&s).is_some(), "{s:?}");
        }
    }

    #[test]
    fn marker_mutated(m in mutations()) {
        check_marker(&apply(&sample().marker, &m));
    }

    #[test]
    fn marker_junk(bytes in junk()) {
        check_marker(&bytes);
    }
}

fn check_marker(bytes: &[u8]) {
    let limit = 64 * bytes.len() + (64 << 10);
    let parsed = bounded(limit, "parsing a marker", || {
        marker::parse(bytes, Path::new("m"))
    });
    if let Ok(m) = parsed {
        let again = marker::parse(&serde_json::to_vec(&m).unwrap(), Path::new("m")).unwrap();
        assert_eq!(again, m);
        let text = crate::stdx::show_str(&m.destination);
        assert!(!text.contains(['\n', '\x1b']));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Names in a drive's `backups/` and in the backup root (a directory listing is as hostile as a file)

/// Names built of the pieces the parsers look for (prefixes, stamps of any digits, pids past `u32`), and any text.
fn listed_name() -> impl Strategy<Value = String> {
    let built = (
        prop_oneof![
            Just(""),
            Just(".tmp-"),
            Just(".trash-"),
            Just(".latest.tmp-"),
            Just("data-"),
            Just("-")
        ],
        prop_oneof![
            Just("2025-04-01-031500".to_string()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{6}",
            "[0-9-]{0,20}"
        ],
        prop_oneof![
            Just(String::new()),
            "-[0-9]{0,12}",
            Just("-4294967296".to_string()),
            "(\\.tar|\\.tar\\.part[0-9]{3}|\\.index\\.jsonl|\\.index\\.age|\\.age)"
        ],
    )
        .prop_map(|(p, s, e)| format!("{p}{s}{e}"));
    prop_oneof![
        built,
        ".{0,30}",
        junk().prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ]
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn names_in_backups_and_the_root(name in listed_name(), set in "[a-z]{1,6}") {
        match layout::classify(&name) {
            layout::NameKind::Stamp(t) => assert_eq!(crate::snapshot::stamp(t), name),
            layout::NameKind::Leftover(_) => assert!(name.starts_with('.') && !name.contains('/'), "{name:?}"),
            _ => {}
        }
        if let Some((s, t)) = crate::snapshot::split_snapshot_name(&name) {
            assert_eq!(crate::snapshot::snapshot_name(s, t), name);
            assert_eq!(crate::snapshot::parse_snapshot_name(s, &name), Some(t));
        }
        let of_set = format!("{set}{}", name);
        if layout::is_file_of_set(of_set.as_bytes(), &set) {
            assert!(layout::is_set_file(of_set.as_bytes()), "{of_set:?}");
        }
    }
}

/// The messages of refused metadata name the file and the field, and show no raw control characters.
#[test]
fn refused_metadata_says_which_field() {
    let mut v: serde_json::Value = serde_json::from_slice(&sample().meta).unwrap();
    v["sets"][0]["archive"][0]["name"] = "/etc/shadow".into();
    let err =
        layout::parse_metadata(v.to_string().as_bytes(), Path::new("/d/backup.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("sets[0].archive[0].name \"/etc/shadow\" is not a plain file name"),
        "{err}"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&sample().meta).unwrap();
    v["sets"][0]["archive"][0]["bytes"] = u64::MAX.into();
    let err =
        layout::parse_metadata(v.to_string().as_bytes(), Path::new("/d/backup.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("sets[0].archive[0].bytes is 18446744073709551615"),
        "{err}"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&sample().meta).unwrap();
    v["sets"][1]["set"] = "x\u{1b}[2J\nforged".into();
    let err =
        layout::parse_metadata(v.to_string().as_bytes(), Path::new("/d/backup.json")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sets[1].set \"x\\x1b[2J\\nforged\" is not a set name"),
        "{text}"
    );
}

mod state;
mod tools;
