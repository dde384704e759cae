//! Encoding one archive entry's header blocks: a POSIX ustar header, preceded by a pax extended header when a field does not fit.
//!
//! The format is POSIX pax (`tar --format=posix`), which GNU tar, bsdtar and the `tar` crate all read:
//! - the path goes in the ustar `name` field, or `prefix` + `name`, and in a pax `path` record when it fits neither;
//! - link targets longer than 100 bytes go in a pax `linkpath` record;
//! - sizes of 8 GiB and more, owners above 2097151, and mtimes before 1970 or with a sub-second part go in pax
//!   `size`, `uid`/`gid` and `mtime` records (so mtimes keep their nanoseconds);
//! - extended attributes and ACLs go in `SCHILY.xattr.*` and `SCHILY.acl.*` records, as GNU tar writes them
//!   ([`super::xattrs`]); an entry that has them gets every other record too, before them;
//! - names that are not UTF-8 are stored byte for byte, in pax records too (GNU tar 1.34 reads them back as bytes
//!   and warns about a `hdrcharset` record, so none is written).
//!
//! Owner names (`uname`/`gname`) are left empty: owners are numeric, as with `tar --numeric-owner`.

use tar::{EntryType, Header};

/// The size of a tar block.
pub const BLOCK: u64 = 512;
/// Archives are padded to a multiple of this (GNU tar's default record size, 20 blocks).
pub const RECORD: u64 = 10240;

/// What kind of entry a backup holds: an archive member, an index line, a snapshot's file, a restore plan's item.
///
/// The one kind type of the crate (the archive, its index and the restore engine share it). Serde gives the index's
/// names (`file`, `hardlink`, `symlink`, `dir`, `fifo`, `char`, `block`); plans and `ls`/`find` print
/// [`word`](Self::word) instead (`char-device`, `block-device`) through [`serialize_word`](Self::serialize_word).
/// `Socket` and `Other` are never archived nor indexed: they exist for what a restore is fed (a snapshot's socket,
/// a tar type flag dbackup does not know), and serde skips them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file; its content follows the header.
    File,
    /// A second name of a file archived earlier (tar type `1`); no content of its own.
    Hardlink,
    Symlink,
    Dir,
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A Unix socket (a snapshot may hold one; no archive does).
    #[serde(skip)]
    Socket,
    /// Anything else (a tar type flag the restore engine does not know, a sparse member whose map cannot be read,
    /// ...): `what` says which.
    #[serde(skip)]
    Other(&'static str),
}

impl EntryKind {
    /// The tar type flag of the kinds an archive holds; `None` for `Socket` and `Other`.
    fn entry_type(self) -> Option<EntryType> {
        Some(match self {
            EntryKind::File => EntryType::Regular,
            EntryKind::Hardlink => EntryType::Link,
            EntryKind::Symlink => EntryType::Symlink,
            EntryKind::Dir => EntryType::Directory,
            EntryKind::Fifo => EntryType::Fifo,
            EntryKind::Char => EntryType::Char,
            EntryKind::Block => EntryType::Block,
            EntryKind::Socket | EntryKind::Other(_) => return None,
        })
    }

    /// The kind of a file as `lstat` sees it (never `Hardlink`: a second name is a file to `lstat`).
    pub fn of_file_type(t: std::fs::FileType) -> EntryKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            EntryKind::File
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else if t.is_char_device() {
            EntryKind::Char
        } else if t.is_block_device() {
            EntryKind::Block
        } else if t.is_socket() {
            EntryKind::Socket
        } else {
            EntryKind::Other("unknown file type")
        }
    }

    /// The kind of a tar entry type, for readers. `None` for types dbackup never writes.
    pub fn from_entry_type(t: EntryType) -> Option<EntryKind> {
        Some(match t {
            EntryType::Regular | EntryType::Continuous => EntryKind::File,
            EntryType::Link => EntryKind::Hardlink,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Fifo => EntryKind::Fifo,
            EntryType::Char => EntryKind::Char,
            EntryType::Block => EntryKind::Block,
            _ => return None,
        })
    }

    /// The name used in the index and in the archive's messages (`char`, `block`).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            other => other.word(),
        }
    }

    /// The word used in restore plans, `ls`/`find` and their messages (`char-device`, `block-device`).
    pub fn word(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Char => "char-device",
            EntryKind::Block => "block-device",
            EntryKind::Socket => "socket",
            EntryKind::Other(what) => what,
        }
    }

    pub fn is_dir(self) -> bool {
        self == EntryKind::Dir
    }

    /// Serializes the kind as its [`word`](Self::word): `#[serde(serialize_with = "EntryKind::serialize_word")]`
    /// on the fields of plans and listings.
    pub fn serialize_word<S: serde::Serializer>(kind: &EntryKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.word())
    }
}

impl std::fmt::Display for EntryKind {
    /// The [`word`](Self::word).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// Everything a header says about one entry.
#[derive(Debug, Clone)]
pub struct HeaderSpec<'a> {
    /// The path inside the archive, relative, without a trailing slash (one is added for directories).
    pub path: &'a [u8],
    pub kind: EntryKind,
    /// Content bytes that follow the header (0 for everything but regular files).
    pub size: u64,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Symlink target, or the archive path of the first name of a hard-linked file.
    pub link: Option<&'a [u8]>,
    /// Device numbers of character and block devices.
    pub rdev: (u32, u32),
    /// For a file stored as a PAX 1.0 sparse member ([`super::sparse`]): its real size (`size` is then what is
    /// stored, the map and the data). The header is named `<dir>/GNUSparseFile.0/<name>` and `GNU.sparse.*`
    /// records give the real name and size.
    pub sparse: Option<u64>,
    /// Extended attributes and ACLs, as `SCHILY.*` pax records.
    pub attrs: Option<&'a super::xattrs::Attrs>,
}

const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;

/// Appends the header blocks of one entry (pax extension header and its records, if any, then the ustar header)
/// to `out`. Its length is always a multiple of [`BLOCK`]. A socket or an `Other` kind has no tar type: an error,
/// and nothing appended.
pub fn encode_header(spec: &HeaderSpec<'_>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (entry_type, path, records) = records_of(spec)?;
    let split = split_ustar_path(&path);
    let link = spec.link.unwrap_or(b"");
    let ustar_mtime = spec.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64;

    if !records.is_empty() {
        let mut h = Header::new_ustar();
        set_bytes(
            &mut h.as_ustar_mut().expect("ustar").name,
            b"././@PaxHeader",
        );
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(ustar_mtime);
        h.set_size(records.len() as u64);
        h.set_entry_type(EntryType::XHeader);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&records);
        pad_to_block(out);
    }

    let mut h = Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("ustar");
        match split {
            Some((prefix, name)) => {
                set_bytes(&mut u.prefix, prefix);
                set_bytes(&mut u.name, name);
            }
            // The pax `path` record holds the real name; the ustar field gets what fits.
            None => set_bytes(&mut u.name, &path[..path.len().min(100)]),
        }
        set_bytes(&mut u.linkname, &link[..link.len().min(100)]);
    }
    h.set_mode(spec.mode & 0o7777);
    h.set_uid(spec.uid.min(MAX_OCTAL_7));
    h.set_gid(spec.gid.min(MAX_OCTAL_7));
    h.set_size(if spec.size > MAX_OCTAL_11 {
        0
    } else {
        spec.size
    });
    h.set_mtime(ustar_mtime);
    h.set_entry_type(entry_type);
    if matches!(spec.kind, EntryKind::Char | EntryKind::Block) {
        // Both only fail for old-style headers; this is ustar.
        let _ = h.set_device_major(spec.rdev.0);
        let _ = h.set_device_minor(spec.rdev.1);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(())
}

/// The length of the header blocks [`encode_header`] appends for `spec` (the same error for an entry it refuses),
/// without encoding them: what a scan that only sizes an archive needs.
pub fn header_len(spec: &HeaderSpec<'_>) -> std::io::Result<u64> {
    let (_, _, records) = records_of(spec)?;
    Ok(match records.len() as u64 {
        0 => BLOCK,
        n => 2 * BLOCK + n.div_ceil(BLOCK) * BLOCK,
    })
}

/// An entry's tar type, its name as the ustar header stores it, and the pax records it needs.
fn records_of(spec: &HeaderSpec<'_>) -> std::io::Result<(EntryType, Vec<u8>, Vec<u8>)> {
    let Some(entry_type) = spec.kind.entry_type() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a {} cannot be archived", spec.kind.word()),
        ));
    };
    let mut path = match spec.sparse {
        Some(_) => super::sparse::fake_name(spec.path),
        None => spec.path.to_vec(),
    };
    if spec.kind == EntryKind::Dir {
        path.push(b'/');
    }
    let mut records = Vec::new();
    let split = split_ustar_path(&path);

    let link = spec.link.unwrap_or(b"");
    // With attribute records (whose values may hold newlines, which the `tar` crate splits records at), every
    // field a reader takes from pax records is written, and before them: see `xattrs`.
    let attrs = spec.attrs.filter(|a| !a.is_empty());
    let all = attrs.is_some();
    // Numbers first, then names (a name may hold a newline too).
    if spec.size > MAX_OCTAL_11 || all {
        pax_record(&mut records, "size", spec.size.to_string().as_bytes());
    }
    if spec.uid > MAX_OCTAL_7 || all {
        pax_record(&mut records, "uid", spec.uid.to_string().as_bytes());
    }
    if spec.gid > MAX_OCTAL_7 || all {
        pax_record(&mut records, "gid", spec.gid.to_string().as_bytes());
    }
    let mtime_fits = spec.mtime >= 0 && (spec.mtime as u64) <= MAX_OCTAL_11;
    if !mtime_fits || spec.mtime_nsec != 0 || all {
        pax_record(
            &mut records,
            "mtime",
            format_pax_time(spec.mtime, spec.mtime_nsec).as_bytes(),
        );
    }
    if split.is_none() || all {
        pax_record(&mut records, "path", &path);
    }
    if link.len() > 100 || (all && spec.link.is_some()) {
        pax_record(&mut records, "linkpath", link);
    }
    if let Some(real_size) = spec.sparse {
        // After `path` (GNU tar applies records in order, and the real name must win over the fake one), before the
        // attribute records (see `xattrs`; a sparse member's name never holds a newline: `sparse::name_allows_sparse`).
        super::sparse::pax_records(spec.path, real_size, |k, v| pax_record(&mut records, k, v));
    }
    if let Some(a) = attrs {
        a.pax_records(&mut records);
    }
    Ok((entry_type, path, records))
}

/// Splits a path into ustar `prefix` and `name` (at most 155 and 100 bytes, split at a `/`), or `None` when it
/// cannot be.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
        if i > 155 {
            break;
        }
        let name_len = path.len() - i - 1;
        if name_len == 0 {
            break;
        }
        if name_len <= 100 && i > 0 {
            return Some((&path[..i], &path[i + 1..]));
        }
    }
    None
}

fn set_bytes(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// Appends one pax record, `"<len> <key>=<value>\n"`, where `len` counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    super::xattrs::record(out, key.as_bytes(), value);
}

/// A pax time: seconds, and a fraction without trailing zeros; before 1970 the whole value is negative
/// (`-1.5` is one and a half seconds before the epoch).
pub fn format_pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    let (sign, whole, frac) = if sec < 0 {
        ("-", (-(sec + 1)) as u64, 1_000_000_000 - nsec)
    } else {
        ("", sec as u64, nsec)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Parses a pax time as written by [`format_pax_time`] (or by GNU tar): `(seconds, nanoseconds)`. One optional
/// `-`, digits, and an optional fraction (digits beyond nanoseconds are dropped); a time outside `i64` seconds is
/// `None`. The one reader of pax times: verify's and restore's.
pub fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut nanos = frac.as_bytes()[..frac.len().min(9)].to_vec();
    nanos.resize(9, b'0');
    let nsec: u32 = std::str::from_utf8(&nanos).ok()?.parse().ok()?;
    if !neg {
        return Some((i64::try_from(whole).ok()?, nsec));
    }
    // -1.5 is 1.5 s before the epoch: sec = -2, nsec = 0.5 s.
    let sec = 0i64.checked_sub_unsigned(whole)?;
    Some(if nsec == 0 {
        (sec, 0)
    } else {
        (sec.checked_sub(1)?, 1_000_000_000 - nsec)
    })
}

/// Appends zeros up to the next block boundary.
fn pad_to_block(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK as usize;
    if rem != 0 {
        out.resize(out.len() + BLOCK as usize - rem, 0);
    }
}

/// Bytes of zero padding after `size` content bytes.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// The end of an archive written at `offset`: two zero blocks, then zeros up to a multiple of [`RECORD`].
pub fn trailer_len(offset: u64) -> u64 {
    let end = offset + 2 * BLOCK;
    end + (RECORD - end % RECORD) % RECORD - offset
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one kind type speaks two vocabularies: serde the index's names, `word` the plans' (`char-device`);
    /// a socket has no index name and no tar header.
    #[test]
    fn entry_kind_names_for_the_index_and_words_for_plans() {
        let json = |k: EntryKind| serde_json::to_string(&k).unwrap();
        assert_eq!(json(EntryKind::Char), "\"char\"");
        assert_eq!(json(EntryKind::Hardlink), "\"hardlink\"");
        assert_eq!(EntryKind::Char.word(), "char-device");
        assert_eq!(EntryKind::Block.to_string(), "block-device");
        assert_eq!(EntryKind::Block.name(), "block");
        assert_eq!(EntryKind::Other("odd").name(), "odd");
        assert!(serde_json::to_string(&EntryKind::Socket).is_err());
        let back: EntryKind = serde_json::from_str("\"fifo\"").unwrap();
        assert_eq!(back, EntryKind::Fifo);
        assert!(serde_json::from_str::<EntryKind>("\"socket\"").is_err());
        let mut s = spec(b"sock");
        s.kind = EntryKind::Socket;
        let mut out = Vec::new();
        assert!(encode_header(&s, &mut out).is_err());
        assert!(out.is_empty());
    }

    fn spec(path: &[u8]) -> HeaderSpec<'_> {
        HeaderSpec {
            path,
            kind: EntryKind::File,
            size: 5,
            mode: 0o640,
            uid: 1000,
            gid: 100,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            link: None,
            rdev: (0, 0),
            sparse: None,
            attrs: None,
        }
    }

    fn entry_of(bytes: &[u8]) -> (Vec<u8>, u64, u64) {
        let mut data = bytes.to_vec();
        data.extend_from_slice(&[0; 1024]);
        let mut ar = tar::Archive::new(&data[..]);
        let mut entries = ar.entries().unwrap();
        let e = entries.next().unwrap().unwrap();
        (
            e.path_bytes().into_owned(),
            e.size(),
            e.header().uid().unwrap(),
        )
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [0usize, 1, 5, 88, 89, 90, 95, 96, 990, 995, 996, 9990] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; n]);
            let space = out.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
        }
    }

    /// `header_len` (what a scan sizes) is the length `encode_header` writes, for every shape of header: plain,
    /// pax records for time, long names and links, big numbers, attributes, sparse members, devices; and refuses
    /// what it refuses. (New with `header_len`; before, the scan encoded every header to measure it.)
    #[test]
    fn header_len_is_the_encoded_length() {
        let long = [b'd'; 150]
            .iter()
            .chain(b"/")
            .chain([b'n'; 99].iter())
            .copied()
            .collect::<Vec<_>>();
        let unsplittable = vec![b'x'; 300];
        let link = vec![b'l'; 200];
        let mut attrs = crate::archive::Attrs::default();
        attrs.xattrs.insert(b"user.a".to_vec(), vec![b'v'; 700]);
        let specs: Vec<HeaderSpec<'_>> = vec![
            spec(b"home/u/file"),
            HeaderSpec {
                mtime_nsec: 5,
                ..spec(b"home/u/file")
            },
            HeaderSpec {
                mtime: -3,
                ..spec(b"old")
            },
            spec(&long),
            spec(&unsplittable),
            HeaderSpec {
                kind: EntryKind::Dir,
                ..spec(&[b'd'; 100])
            },
            HeaderSpec {
                kind: EntryKind::Symlink,
                size: 0,
                link: Some(&link),
                ..spec(b"l")
            },
            HeaderSpec {
                size: MAX_OCTAL_11 + 1,
                uid: MAX_OCTAL_7 + 1,
                gid: 1 << 40,
                ..spec(b"big")
            },
            HeaderSpec {
                attrs: Some(&attrs),
                ..spec(b"with/attrs")
            },
            HeaderSpec {
                sparse: Some(10 << 30),
                ..spec(b"disk.img")
            },
            HeaderSpec {
                kind: EntryKind::Block,
                rdev: (8, 1),
                size: 0,
                ..spec(b"dev/sda1")
            },
        ];
        for s in &specs {
            let mut out = Vec::new();
            encode_header(s, &mut out).unwrap();
            assert_eq!(
                header_len(s).unwrap(),
                out.len() as u64,
                "{:?}",
                String::from_utf8_lossy(s.path)
            );
        }
        let socket = HeaderSpec {
            kind: EntryKind::Other("socket"),
            ..spec(b"s")
        };
        assert!(header_len(&socket).is_err() && encode_header(&socket, &mut Vec::new()).is_err());
    }

    #[test]
    fn short_names_need_no_pax_header() {
        let mut out = Vec::new();
        encode_header(&spec(b"home/u/file"), &mut out).unwrap();
        assert_eq!(out.len(), 512);
        assert_eq!(entry_of(&out).0, b"home/u/file");
    }

    #[test]
    fn long_names_use_prefix_then_pax() {
        let dir = vec![b'd'; 120];
        let mut p = dir.clone();
        p.extend_from_slice(b"/file");
        let mut out = Vec::new();
        encode_header(&spec(&p), &mut out).unwrap();
        assert_eq!(out.len(), 512, "fits prefix + name");
        assert_eq!(entry_of(&out).0, p);

        let long = vec![b'x'; 300];
        out.clear();
        encode_header(&spec(&long), &mut out).unwrap();
        assert_eq!(
            out.len(),
            1536,
            "pax header, one record block, ustar header"
        );
        assert_eq!(entry_of(&out).0, long);
    }

    #[test]
    fn big_values_go_to_pax() {
        let mut s = spec(b"f");
        s.uid = 5_000_000;
        s.size = 10 << 30;
        let mut out = Vec::new();
        encode_header(&s, &mut out).unwrap();
        let (_, size, uid) = entry_of(&out);
        assert_eq!((size, uid), (10 << 30, 5_000_000));
    }

    #[test]
    fn pax_times_round_trip() {
        for (s, ns, text) in [
            (5, 0, "5"),
            (5, 500_000_000, "5.5"),
            (1_700_000_000, 123, "1700000000.000000123"),
            (-2, 500_000_000, "-1.5"),
            (-1, 0, "-1"),
        ] {
            assert_eq!(format_pax_time(s, ns), text);
            assert_eq!(parse_pax_time(text), Some((s, ns)), "{text}");
        }
    }

    /// An archive's pax `mtime` with two signs, a sign `+`, or seconds past `i64` is refused, and the earliest
    /// second (`-9223372036854775808`) is read. Before: `--9223372036854775808.5` overflowed (a panic of
    /// `restore --verify` in a debug build, a wrong time in a release build), `--5` read as 5 and `+5` as 5, while
    /// restore's reader refused them; `-9223372036854775808`, which the writer writes, did not read back.
    #[test]
    fn pax_times_out_of_range_or_with_two_signs_are_refused() {
        for bad in [
            "--9223372036854775808.5",
            "--9223372036854775808",
            "--5",
            "+5",
            "-+5",
            "9223372036854775808",
            "",
        ] {
            assert_eq!(parse_pax_time(bad), None, "{bad}");
        }
        assert_eq!(parse_pax_time("-9223372036854775808"), Some((i64::MIN, 0)));
        assert_eq!(
            parse_pax_time("-9223372036854775807.5"),
            Some((i64::MIN, 500_000_000))
        );
        assert_eq!(parse_pax_time("-9223372036854775808.5"), None);
    }

    #[test]
    fn trailer_pads_to_a_record() {
        assert_eq!(trailer_len(0), RECORD);
        assert_eq!(trailer_len(512), RECORD - 512);
        assert_eq!(trailer_len(RECORD - 1024), 1024);
        assert_eq!(trailer_len(RECORD - 512), RECORD + 512);
    }
}
