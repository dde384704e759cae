//! Extended attributes and POSIX ACLs of one entry ([`Attrs`]): read from the snapshot, stored in the archive as GNU
//! tar and star store them (`SCHILY.xattr.<name>`, `SCHILY.acl.access`, `SCHILY.acl.default` pax records), recorded
//! in the index, and parsed back from an entry's header blocks with a real pax record parser.
//!
//! Why a parser of its own: the `tar` crate splits pax records at newlines, and ACL texts always hold newlines (and
//! any xattr value may), so through it such a record reads as broken pieces, and a value holding
//! `"\n13 path=evil"` as a record of its own. Two rules keep the crate's own reading of dbackup's archives right:
//! [`super::tarfmt`] writes `size`, `uid`, `gid`, `mtime`, `path` and `linkpath` before any attribute record
//! whenever an entry has attributes (the crate takes the first `path` it can parse, and stops looking for `size`,
//! `uid`, `gid` at the first piece it cannot), and readers of dbackup's own fields take the first `mtime`.
//!
//! The ACLs are stored as text ([`super::acl`]), not as their `system.posix_acl_*` xattrs; an access ACL that says
//! no more than the mode is not stored (the kernel keeps none either).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::io::Errno;

use super::acl;

/// The xattr holding a file's access ACL (binary).
pub const ACL_ACCESS: &str = "system.posix_acl_access";
/// The xattr holding a directory's default ACL (binary).
pub const ACL_DEFAULT: &str = "system.posix_acl_default";
/// The pax keyword prefix of an xattr (GNU tar, star, bsdtar).
pub const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
/// The pax keywords of the ACLs in text form.
pub const PAX_ACL_ACCESS: &[u8] = b"SCHILY.acl.access";
pub const PAX_ACL_DEFAULT: &[u8] = b"SCHILY.acl.default";
/// At most this many bytes of names and values per entry (Linux allows 64 KiB a value; ext4 keeps all of an
/// inode's in one block): more is not archived, with a warning, so that headers stay bounded.
pub const MAX_ATTR_BYTES: usize = 1 << 20;

/// The extended attributes and ACLs of one entry. Empty is represented as `None` by holders
/// (`Option<Box<Attrs>>`), so that entries without any (nearly all) cost one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Extended attributes other than the ACLs, by name: `user.*`, `trusted.*`, `security.*`, other `system.*`.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The access ACL in text form, when it says more than the mode.
    pub acl_access: Option<String>,
    /// A directory's default ACL in text form.
    pub acl_default: Option<String>,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        self.xattrs.is_empty() && self.acl_access.is_none() && self.acl_default.is_none()
    }

    /// `None` when empty.
    pub fn boxed(self) -> Option<Box<Attrs>> {
        (!self.is_empty()).then(|| Box::new(self))
    }

    /// How many attributes (each xattr, each ACL).
    pub fn count(&self) -> u64 {
        self.xattrs.len() as u64
            + u64::from(self.acl_access.is_some())
            + u64::from(self.acl_default.is_some())
    }

    /// Appends the pax records that store these (ACLs first, then xattrs by name), as GNU tar writes them.
    pub fn pax_records(&self, out: &mut Vec<u8>) {
        if let Some(a) = &self.acl_access {
            record(out, PAX_ACL_ACCESS, a.as_bytes());
        }
        if let Some(a) = &self.acl_default {
            record(out, PAX_ACL_DEFAULT, a.as_bytes());
        }
        for (name, value) in &self.xattrs {
            let mut key = PAX_XATTR.to_vec();
            key.extend_from_slice(&encode_keyword(name));
            record(out, &key, value);
        }
    }

    /// The attributes in parsed pax records (other records are ignored). GNU tar stores the ACLs twice, as text
    /// and as their binary xattrs: the text wins, and the binary form is used only when there is no text.
    pub fn from_pax(records: &[PaxRecord<'_>]) -> Result<Attrs, String> {
        let mut a = Attrs::default();
        let mut binary_acls: [Option<&[u8]>; 2] = [None, None];
        for (key, value) in records {
            if let Some(name) = key.strip_prefix(PAX_XATTR) {
                let name = decode_keyword(name);
                if name.is_empty() {
                    return Err("an xattr record without a name".into());
                }
                match name.as_slice() {
                    n if n == ACL_ACCESS.as_bytes() => binary_acls[0] = Some(value),
                    n if n == ACL_DEFAULT.as_bytes() => binary_acls[1] = Some(value),
                    _ => {
                        a.xattrs.insert(name, value.to_vec());
                    }
                }
            } else if *key == PAX_ACL_ACCESS || *key == PAX_ACL_DEFAULT {
                let text = std::str::from_utf8(value)
                    .map_err(|_| format!("{} is not text", String::from_utf8_lossy(key)))?;
                // An empty text is "no ACL" (GNU tar writes none then; others may write an empty record).
                let text = (!text.trim().is_empty()).then(|| text.to_string());
                if *key == PAX_ACL_ACCESS {
                    a.acl_access = text;
                } else {
                    a.acl_default = text;
                }
            }
        }
        let [access, default] = binary_acls;
        if let (None, Some(b)) = (&a.acl_access, access)
            && !acl::is_minimal(b)
        {
            a.acl_access = Some(acl::to_text(b).map_err(|e| e.to_string())?);
        }
        if let (None, Some(b)) = (&a.acl_default, default) {
            a.acl_default = Some(acl::to_text(b).map_err(|e| e.to_string())?);
        }
        Ok(a)
    }

    /// The attributes in an entry's header blocks (from its first header to its last, data not included), as
    /// dbackup, GNU tar, star and bsdtar write them.
    pub fn from_headers(headers: &[u8]) -> Result<Attrs, String> {
        match extended_header_data(headers)? {
            Some(data) => Attrs::from_pax(&parse_pax(data)?),
            None => Ok(Attrs::default()),
        }
    }

    /// A short description of how two attribute sets differ, for messages (names only, never values).
    pub fn difference(&self, other: &Attrs) -> Option<String> {
        if self == other {
            return None;
        }
        if self.acl_access != other.acl_access {
            return Some("access ACL".into());
        }
        if self.acl_default != other.acl_default {
            return Some("default ACL".into());
        }
        let names: Vec<&Vec<u8>> = self.xattrs.keys().chain(other.xattrs.keys()).collect();
        let first = names
            .into_iter()
            .find(|n| self.xattrs.get(*n) != other.xattrs.get(*n))
            .expect("they differ");
        Some(format!("xattr {}", crate::stdx::show(first)))
    }
}

/// Appends one pax record, `"<len> <key>=<value>\n"`, where `len` counts the whole record including itself.
pub fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One pax record: keyword and value.
pub type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Parses pax extended header data into records by their lengths (values may hold newlines).
pub fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // Trailing NULs pad some writers' data to a block.
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or("a pax record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("a pax record with a bad length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("a pax record of {len} bytes does not fit"));
        }
        let body = &data[space + 1..len - 1];
        let eq = body
            .iter()
            .position(|b| *b == b'=')
            .ok_or("a pax record without '='")?;
        out.push((&body[..eq], &body[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// The content of the pax extended header (`x`) among an entry's header blocks, if it has one. `headers` starts
/// at the entry's first header block; extension headers (`x`, GNU `L`/`K`, ...) are walked by their sizes and must
/// lead to the last block, the entry's own header.
pub fn extended_header_data(headers: &[u8]) -> Result<Option<&[u8]>, String> {
    let walked = walk_extension_headers(headers)?;
    if walked.end + 512 != headers.len() {
        return Err("its extension headers do not lead to its header".into());
    }
    Ok(walked.pax)
}

/// A reader that remembers the header blocks a tar reader (the `tar` crate) reads through it, so that an entry's
/// attributes can be parsed from its raw pax records ([`Attrs::from_headers`]) once the crate has handed the entry
/// over. Content is not kept: after each entry the caller says where the next header starts ([`TapHandle::take`]),
/// and nothing before it is recorded.
pub struct HeaderTap<R> {
    inner: R,
    pos: u64,
    state: std::rc::Rc<std::cell::RefCell<TapState>>,
}

/// The caller's side of a [`HeaderTap`].
#[derive(Clone)]
pub struct TapHandle(std::rc::Rc<std::cell::RefCell<TapState>>);

#[derive(Default)]
struct TapState {
    /// The stream offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
    /// Nothing before this offset is recorded.
    resume_at: u64,
}

/// Header bytes kept at most for one entry (its pax records are bounded by [`MAX_ATTR_BYTES`], and more); more is a
/// read error, before the `tar` crate reads a header of whatever size an archive claims into memory.
const TAP_LIMIT: usize = 4 * MAX_ATTR_BYTES;

impl<R> HeaderTap<R> {
    /// Taps `inner`, which is at stream offset `pos` (a header's start).
    pub fn new(inner: R, pos: u64) -> (HeaderTap<R>, TapHandle) {
        let state = std::rc::Rc::new(std::cell::RefCell::new(TapState {
            start: pos,
            resume_at: pos,
            ..TapState::default()
        }));
        (
            HeaderTap {
                inner,
                pos,
                state: state.clone(),
            },
            TapHandle(state),
        )
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: io::Read> io::Read for HeaderTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        let end = self.pos + n as u64;
        if end > st.resume_at {
            let from = st.resume_at.max(self.pos);
            if st.bytes.is_empty() {
                st.start = from;
            }
            let piece = &buf[(from - self.pos) as usize..n];
            if st.bytes.len() + piece.len() <= TAP_LIMIT {
                st.bytes.extend_from_slice(piece);
            } else {
                // What is read past `resume_at` before the next entry is handed over is that entry's header
                // blocks: refused here, before the `tar` crate holds a header of any size the archive claims.
                self.pos = end;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("its header blocks are larger than {} MiB", TAP_LIMIT >> 20),
                ));
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for HeaderTap<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let pos = self.inner.seek(to)?;
        if pos != self.pos {
            let mut st = self.state.borrow_mut();
            st.bytes.clear();
            st.start = pos;
            self.pos = pos;
        }
        Ok(pos)
    }
}

impl TapHandle {
    /// The attributes of the entry just handed over, whose own (last) header block is at `header` and whose data
    /// starts at `data` (the `tar` crate's `raw_header_position` and `raw_file_position`); `next` is where the
    /// header after it starts (its data and padding skipped): nothing before that is recorded. An error when the
    /// entry's header blocks were not all seen (then they cannot be trusted to say it has no attributes).
    pub fn take(&self, header: u64, data: u64, next: u64) -> Result<Attrs, String> {
        let mut st = self.0.borrow_mut();
        let result = (|| {
            let end = data.checked_sub(st.start).map(|e| e as usize);
            let own = header.checked_sub(st.start).map(|h| h as usize);
            match (own, end) {
                (Some(own), Some(end)) if end <= st.bytes.len() && own + 512 == end => {
                    let blocks = &st.bytes[..end];
                    let walked = walk_extension_headers(blocks)?;
                    if walked.end != own {
                        return Err("its extension headers do not lead to its header".into());
                    }
                    match walked.pax {
                        Some(data) => Attrs::from_pax(&parse_pax(data)?),
                        None => Ok(Attrs::default()),
                    }
                }
                _ => Err("its header blocks were not all read".into()),
            }
        })();
        st.bytes.clear();
        st.resume_at = next;
        st.start = next;
        result
    }
}

/// What [`walk_extension_headers`] found.
struct Walked<'a> {
    /// The pax extended header's data, if there is one.
    pax: Option<&'a [u8]>,
    /// Where the walk stopped: the entry's own header.
    end: usize,
}

/// Walks the extension headers (`x`, `g`, GNU `L`/`K`, ...) at the start of `blocks` by their sizes, up to the last
/// block (the entry's own header).
fn walk_extension_headers(blocks: &[u8]) -> Result<Walked<'_>, String> {
    let mut at = 0usize;
    let mut pax = None;
    while at + 512 < blocks.len() {
        let block = &blocks[at..at + 512];
        let size = octal(&block[124..136]).ok_or("an extension header with a bad size")?;
        let start = at + 512;
        let end = start
            .checked_add(usize::try_from(size).map_err(|_| "an extension header too large")?)
            .filter(|e| *e <= blocks.len())
            .ok_or("an extension header larger than the headers")?;
        if block[156] == b'x' {
            pax = Some(&blocks[start..end]);
        }
        at = end.div_ceil(512) * 512;
    }
    Ok(Walked { pax, end: at })
}

/// A tar octal number field (NUL/space terminated), or base-256.
fn octal(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(0u64, |n, b| n.checked_mul(256).map(|n| n + u64::from(*b)));
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// An xattr name as a pax keyword suffix, as GNU tar writes it: `%` and `=` escaped (`%25`, `%3D`).
fn encode_keyword(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'=' => out.extend_from_slice(b"%3D"),
            b => out.push(b),
        }
    }
    out
}

/// The inverse of [`encode_keyword`] (only `%25` and `%3D` are escapes, as for GNU tar).
fn decode_keyword(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        match &key[i..] {
            [b'%', b'2', b'5', ..] => {
                out.push(b'%');
                i += 3;
            }
            [b'%', b'3', b'D' | b'd', ..] => {
                out.push(b'=');
                i += 3;
            }
            [b, ..] => {
                out.push(*b);
                i += 1;
            }
            [] => unreachable!(),
        }
    }
    out
}

/// An xattr name as an index key: text, with `%` and any byte that is not UTF-8 as `%XX`.
pub fn index_key(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The name an index key stands for (see [`index_key`]).
pub fn from_index_key(key: &str) -> Result<Vec<u8>, String> {
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("xattr name {key:?} has a bad % escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.is_empty() {
        return Err("an xattr without a name".into());
    }
    Ok(out)
}

/// [`read`] of the entry `name` in the open directory `dir` (`path`: where that is). The kernel's `listxattrat`
/// (Linux 6.13) looks up that one name instead of every directory of the path, and an entry without attributes
/// (nearly all) costs that one call; an entry with some, any error, or a kernel without the call: [`read`] by path.
pub fn read_at(dir: &OwnedFd, name: &CStr, path: &Path) -> io::Result<Option<Box<Attrs>>> {
    match list_at_is_empty(dir, name) {
        Some(true) => Ok(None),
        _ => read(path),
    }
}

/// `listxattrat`'s number: the same on every architecture's generic syscall table since Linux 6.13.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Whether `name` in `dir` (not followed if a symlink) has no xattrs, by `listxattrat`, as [`read`] would find it
/// (`ENOTSUP`: a filesystem without them); `None` when the call cannot tell (attributes to read, an error, no
/// such call: remembered, so a kernel or a seccomp filter without it costs one failed call per run).
fn list_at_is_empty(dir: &OwnedFd, name: &CStr) -> Option<bool> {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return None;
        }
        let mut list = [0u8; 256];
        // SAFETY: an open descriptor, a NUL-terminated name, and a buffer of the length passed.
        let r = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                list.as_mut_ptr(),
                list.len(),
            )
        };
        if r >= 0 {
            return Some(r == 0);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOTSUP) => Some(true),
            Some(libc::ENOSYS | libc::EPERM) => {
                UNAVAILABLE.store(true, Ordering::Relaxed);
                None
            }
            _ => None,
        }
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    {
        let _ = (dir, name);
        None
    }
}

/// Reads the xattrs and ACLs of `path` (never following a symlink at it). `None` when it has none, or its
/// filesystem has no xattrs. An ACL that does not convert to text is kept as its binary xattr.
pub fn read(path: &Path) -> io::Result<Option<Box<Attrs>>> {
    let mut list = vec![0u8; 256];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let want = rustix::fs::llistxattr_query(path)?;
                if want > MAX_ATTR_BYTES {
                    return Err(too_large());
                }
                list.resize(want.max(list.len() * 2), 0);
            }
            Err(Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let mut attrs = Attrs::default();
    let mut total = n;
    let mut value = vec![0u8; 256];
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(Errno::RANGE) => {
                    let want = rustix::fs::lgetxattr_query(path, name)?;
                    value.resize(want.max(value.len() * 2).min(MAX_ATTR_BYTES + 1), 0);
                    if want > MAX_ATTR_BYTES {
                        return Err(too_large());
                    }
                }
                // Removed since it was listed.
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        let Some(len) = len else { continue };
        total += len;
        if total > MAX_ATTR_BYTES {
            return Err(too_large());
        }
        let v = &value[..len];
        let text = if name == ACL_ACCESS.as_bytes() {
            if acl::is_minimal(v) {
                continue;
            }
            acl::to_text(v).ok().map(|t| (&mut attrs.acl_access, t))
        } else if name == ACL_DEFAULT.as_bytes() {
            acl::to_text(v).ok().map(|t| (&mut attrs.acl_default, t))
        } else {
            None
        };
        match text {
            Some((slot, t)) => *slot = Some(t),
            None => {
                attrs.xattrs.insert(name.to_vec(), v.to_vec());
            }
        }
    }
    Ok(attrs.boxed())
}

fn too_large() -> io::Error {
    io::Error::other(format!(
        "its extended attributes hold more than {} KiB",
        MAX_ATTR_BYTES >> 10
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Attrs {
        let mut a = Attrs::default();
        a.xattrs
            .insert(b"user.a=b%c".to_vec(), b"v\nwith\n13 path=evil\n".to_vec());
        a.xattrs.insert(b"trusted.bin".to_vec(), vec![0, 0xff, 1]);
        a.acl_access = Some("user::rw-\nuser:1000:rwx\ngroup::r--\nmask::rwx\nother::r--".into());
        a.acl_default = Some("user::rwx\ngroup::r-x\nother::r-x".into());
        a
    }

    #[test]
    fn records_round_trip_whatever_the_values_hold() {
        let a = sample();
        let mut data = Vec::new();
        a.pax_records(&mut data);
        assert!(
            data.windows(b"SCHILY.xattr.user.a%3Db%25c=".len())
                .any(|w| w == b"SCHILY.xattr.user.a%3Db%25c="),
            "= and % escaped in the keyword as GNU tar does"
        );
        let records = parse_pax(&data).unwrap();
        assert_eq!(
            records.len(),
            4,
            "newlines inside values are not record ends"
        );
        assert_eq!(Attrs::from_pax(&records).unwrap(), a);
    }

    #[test]
    fn broken_records_are_errors() {
        for data in [
            &b"5 a=b\n"[..],
            b"30 a=b\n",
            b"x a=b\n",
            b"6 ab\n\n",
            b"7 a=bc\n12",
        ] {
            assert!(parse_pax(data).is_err(), "{data:?}");
        }
        assert_eq!(
            parse_pax(b"6 a=b\n\0\0\0").unwrap(),
            [(&b"a"[..], &b"b"[..])]
        );
    }

    #[test]
    fn gnu_tars_binary_acl_is_used_only_without_text() {
        let bin = data_encoding::HEXLOWER
            .decode(b"0200000001000700ffffffff02000400e903000004000500ffffffff10000500ffffffff20000500ffffffff")
            .unwrap();
        let records = [(&b"SCHILY.xattr.system.posix_acl_access"[..], &bin[..])];
        let a = Attrs::from_pax(&records).unwrap();
        assert_eq!(
            a.acl_access.as_deref(),
            Some("user::rwx\nuser:1001:r--\ngroup::r-x\nmask::r-x\nother::r-x")
        );
        assert!(a.xattrs.is_empty());
        let records = [
            (
                &b"SCHILY.acl.access"[..],
                &b"user::rwx\ngroup::r-x\nmask::r-x\nother::r-x"[..],
            ),
            (&b"SCHILY.xattr.system.posix_acl_access"[..], &bin[..]),
        ];
        let a = Attrs::from_pax(&records).unwrap();
        assert_eq!(
            a.acl_access.as_deref(),
            Some("user::rwx\ngroup::r-x\nmask::r-x\nother::r-x")
        );
    }

    #[test]
    fn index_keys_round_trip() {
        for name in [
            &b"user.x"[..],
            b"user.100%",
            b"user.\xff\xfe%41",
            b"user.a=b",
        ] {
            let k = index_key(name);
            assert_eq!(from_index_key(&k).unwrap(), name, "{k}");
        }
        assert!(from_index_key("user.%4").is_err());
        assert!(from_index_key("").is_err());
    }

    #[test]
    fn the_extended_header_is_found_among_the_header_blocks() {
        let mut records = Vec::new();
        sample().pax_records(&mut records);
        let mut headers = vec![0u8; 512];
        headers[156] = b'x';
        headers[124..135].copy_from_slice(format!("{:011o}", records.len()).as_bytes());
        headers.extend_from_slice(&records);
        headers.resize(headers.len().div_ceil(512) * 512, 0);
        headers.extend_from_slice(&[0u8; 512]); // the entry's own header
        assert_eq!(Attrs::from_headers(&headers).unwrap(), sample());
        assert_eq!(Attrs::from_headers(&[0u8; 512]).unwrap(), Attrs::default());
        headers[124..135].copy_from_slice(b"77777777777");
        assert!(Attrs::from_headers(&headers).is_err());
    }

    #[test]
    fn a_files_attributes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(read(&f).unwrap(), None);
        rustix::fs::setxattr(&f, "user.test", b"value\n", rustix::fs::XattrFlags::empty())
            .expect("the temporary directory's filesystem holds user xattrs");
        let a = read(&f).unwrap().unwrap();
        assert_eq!(
            a.xattrs.get(&b"user.test"[..]).map(Vec::as_slice),
            Some(&b"value\n"[..])
        );
    }

    /// `read_at` (by the directory's handle and the name: `listxattrat`, or by path where the kernel lacks it)
    /// finds what `read` by path finds: none, some, none on a symlink (never followed). (New with `read_at`.)
    #[test]
    fn read_at_finds_what_read_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (bare, tagged, link) = (
            dir.path().join("bare"),
            dir.path().join("tagged"),
            dir.path().join("link"),
        );
        std::fs::write(&bare, b"x").unwrap();
        std::fs::write(&tagged, b"x").unwrap();
        rustix::fs::setxattr(&tagged, "user.test", b"v", rustix::fs::XattrFlags::empty())
            .expect("the temporary directory's filesystem holds user xattrs");
        std::os::unix::fs::symlink(&tagged, &link).unwrap();
        let handle: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        for (name, path) in [("bare", &bare), ("tagged", &tagged), ("link", &link)] {
            let c = std::ffi::CString::new(name).unwrap();
            assert_eq!(
                read_at(&handle, &c, path).unwrap(),
                read(path).unwrap(),
                "{name}"
            );
        }
        assert!(read(&tagged).unwrap().is_some());
        assert_eq!(read(&link).unwrap(), None);
        // Where the kernel has the call, an entry without attributes is answered by it alone.
        if let Some(empty) = list_at_is_empty(&handle, c"bare") {
            assert!(empty);
            assert_eq!(list_at_is_empty(&handle, c"tagged"), Some(false));
        }
    }
}
