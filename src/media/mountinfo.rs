//! Parsing `/proc/self/mountinfo`: which filesystem is mounted where, from what source, with which options.
//!
//! Each line is `id parent major:minor root mount_point options [optional fields...] - fstype source super_options`
//! (proc(5)). Paths and sources escape space, tab, newline and backslash as octal (`\040`, `\011`, `\012`, `\134`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mounted filesystem, as one line of mountinfo describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// The device number (`st_dev`) of files on this mount.
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that is mounted here (`/` unless a bind mount or btrfs subvolume).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: Vec<String>,
    /// `ext4`, `xfs`, `fuseblk`, `fuse.sshfs`, ...
    pub fs_type: String,
    /// `/dev/sdb1`, `/dev/loop3`, `server:/export`, `tmpfs`, ...
    pub source: String,
    /// Per-superblock options (`rw,errors=remount-ro`, `user_id=0,...` for fuse).
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Read-only through the mount (`mount -o ro`, `remount,ro`) or the superblock (`errors=remount-ro` after an error).
    pub fn read_only(&self) -> bool {
        self.options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == "ro")
    }

    /// The `st_dev` number files on this mount carry (`makedev(major, minor)`).
    pub fn dev(&self) -> u64 {
        rustix::fs::makedev(self.major, self.minor)
    }
}

/// A line of mountinfo that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of {MOUNTINFO} is malformed: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub text: String,
}

/// Reads and parses this process's mount table.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    let bytes = std::fs::read(MOUNTINFO)?;
    parse(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Whether `path` is a mount point in any mount namespace this process can see: its own, and each other one a process
/// under `/proc` is in (a tool that mounts in a namespace of its own, as `image restore --grow`'s do), where a
/// directory that looks empty from here may have a filesystem mounted on it. Yes when this process's own table, or
/// another namespace's, cannot be parsed: the caller then leaves the directory alone.
pub fn mounted_anywhere(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return true;
    };
    let listed = |table: &Result<Vec<MountEntry>, ParseError>| {
        table
            .as_ref()
            .map_or(true, |e| e.iter().any(|e| e.mount_point == path.as_path()))
    };
    let Ok(own) = std::fs::read(MOUNTINFO) else {
        return true;
    };
    listed(&parse(&own)) || other_namespaces().iter().any(|(_, table)| listed(table))
}

/// The mount tables of the mount namespaces other than this process's that processes under `/proc` are in (a program
/// that mounted in a namespace of its own: `unshare --mount`, a container, a service with private mounts): for each,
/// one process in it and its table. A process that ended while it was read is left out.
pub fn other_namespaces() -> Vec<(u32, Result<Vec<MountEntry>, ParseError>)> {
    let mut seen: Vec<PathBuf> = std::fs::read_link("/proc/self/ns/mnt")
        .into_iter()
        .collect();
    let mut out = Vec::new();
    let processes = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for process in processes {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(namespace) = std::fs::read_link(process.path().join("ns/mnt")) else {
            continue;
        };
        if seen.contains(&namespace) {
            continue;
        }
        seen.push(namespace);
        if let Ok(text) = std::fs::read(process.path().join("mountinfo")) {
            out.push((pid, parse(&text)));
        }
    }
    out
}

/// Parses the text of a mountinfo file, in its order (later entries are mounted on top of earlier ones).
pub fn parse(text: &[u8]) -> Result<Vec<MountEntry>, ParseError> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            parse_line(line).ok_or_else(|| ParseError {
                line: i + 1,
                text: String::from_utf8_lossy(line).into_owned(),
            })
        })
        .collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u32>().ok();
    let (major, minor) = {
        let s = std::str::from_utf8(fields[2]).ok()?;
        let (a, b) = s.split_once(':')?;
        (a.parse().ok()?, b.parse().ok()?)
    };
    let list = |f: &[u8]| {
        text(f)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Some(MountEntry {
        id: number(fields[0])?,
        parent: number(fields[1])?,
        major,
        minor,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        options: list(fields[5]),
        fs_type: text(fields[sep + 1]),
        source: text(fields[sep + 2]),
        super_options: fields.get(sep + 3).map(|f| list(f)).unwrap_or_default(),
    })
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Decodes the kernel's octal escapes (`\040` is a space); anything else is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The mount whose mount point is exactly `path` (which should be canonical). When several are stacked there, the
/// topmost one (the last listed) whose device is `dev` wins, else the topmost one.
pub fn mounted_at<'a>(
    entries: &'a [MountEntry],
    path: &Path,
    dev: Option<u64>,
) -> Option<&'a MountEntry> {
    pick(entries.iter().filter(|e| e.mount_point == path), dev)
}

/// The mount that holds `path` (which should be canonical): the longest mount point that is `path` or one of its
/// ancestors. Stacked mounts are resolved as in [`mounted_at`].
pub fn containing<'a>(
    entries: &'a [MountEntry],
    path: &Path,
    dev: Option<u64>,
) -> Option<&'a MountEntry> {
    let longest = entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .map(|e| e.mount_point.components().count())
        .max()?;
    pick(
        entries.iter().filter(|e| {
            path.starts_with(&e.mount_point) && e.mount_point.components().count() == longest
        }),
        dev,
    )
}

fn pick<'a>(
    candidates: impl Iterator<Item = &'a MountEntry>,
    dev: Option<u64>,
) -> Option<&'a MountEntry> {
    let all: Vec<&MountEntry> = candidates.collect();
    dev.and_then(|d| all.iter().rev().find(|e| e.dev() == d).copied())
        .or_else(|| all.last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
42 27 7:0 / /media/payne/T9 rw,nosuid,nodev,relatime - fuseblk /dev/loop0 rw,user_id=0,group_id=0,default_permissions,allow_other,blksize=4096
43 27 7:1 / /media/payne/My\\040Drive ro,relatime shared:12 master:3 - ext4 /dev/loop1 rw
44 27 0:45 /sub /srv/back\\134slash rw - btrfs /dev/loop2 rw,space_cache=v2,subvolid=256,subvol=/sub
45 42 7:3 / /media/payne/T9 rw - xfs /dev/loop3 rw
";

    #[test]
    fn parses_fields_and_optional_fields() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(e.len(), 6);
        assert_eq!(e[2].mount_point, Path::new("/media/payne/T9"));
        assert_eq!(e[2].fs_type, "fuseblk");
        assert_eq!(e[2].source, "/dev/loop0");
        assert_eq!((e[2].major, e[2].minor), (7, 0));
        assert!(e[2].super_options.contains(&"allow_other".to_string()));
        assert!(!e[2].read_only());
        assert_eq!(
            e[3].fs_type, "ext4",
            "optional fields before '-' are skipped"
        );
        assert_eq!(e[4].root, Path::new("/sub"));
    }

    #[test]
    fn decodes_octal_escapes() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(e[3].mount_point, Path::new("/media/payne/My Drive"));
        assert_eq!(e[4].mount_point, Path::new("/srv/back\\slash"));
        assert_eq!(unescape(b"a\\011b\\012c"), b"a\tb\nc");
        assert_eq!(
            unescape(b"trailing\\04"),
            b"trailing\\04",
            "a short escape is kept as written"
        );
        assert_eq!(unescape(b"\\999"), b"\\999", "not octal");
        assert_eq!(unescape(b"\\377"), b"\xff", "non-UTF-8 bytes survive");
    }

    #[test]
    fn read_only_from_mount_or_superblock_options() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        assert!(e[3].read_only(), "per-mount ro");
        let sb = parse(b"1 1 8:1 / /x rw - ext4 /dev/sda1 ro,errors=remount-ro\n").unwrap();
        assert!(sb[0].read_only(), "superblock ro");
        let not = parse(b"1 1 8:1 / /x rw - ext4 /dev/sda1 rw,errors=remount-ro\n").unwrap();
        assert!(!not[0].read_only(), "`errors=remount-ro` is not `ro`");
    }

    #[test]
    fn finds_mount_points_and_the_containing_mount() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        let t9 = Path::new("/media/payne/T9");
        assert_eq!(
            mounted_at(&e, t9, None).unwrap().fs_type,
            "xfs",
            "topmost of a stack"
        );
        assert_eq!(
            mounted_at(&e, t9, Some(rustix::fs::makedev(7, 0)))
                .unwrap()
                .fs_type,
            "fuseblk",
            "the one whose device we see"
        );
        assert!(mounted_at(&e, Path::new("/media/payne"), None).is_none());
        assert_eq!(
            containing(&e, Path::new("/media/payne"), None)
                .unwrap()
                .mount_point,
            Path::new("/")
        );
        assert_eq!(
            containing(&e, Path::new("/media/payne/T9/backups"), None)
                .unwrap()
                .source,
            "/dev/loop3"
        );
        assert_eq!(
            containing(&e, Path::new("/media/payne/T9x"), None)
                .unwrap()
                .mount_point,
            Path::new("/"),
            "components, not string prefixes"
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = parse(b"27 1 254:0 / / rw - ext4 /dev/vda rw\nnonsense here\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            parse(b"1 1 8:1 / /x rw ext4 /dev/sda1 rw\n").is_err(),
            "no separator"
        );
        assert!(
            parse(b"1 1 81 / /x rw - ext4 /dev/sda1 rw\n").is_err(),
            "bad device number"
        );
    }

    #[test]
    fn reads_this_process_mount_table() {
        let entries = read().unwrap();
        assert!(
            mounted_at(&entries, Path::new("/"), None).is_some(),
            "/ is always a mount point"
        );
    }
}
