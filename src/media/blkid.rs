//! What filesystem a block device holds (type, label, uuid): `blkid`, else the udev links in `/dev/disk/by-*`.
//!
//! A fuse mount of an exFAT drive shows up in mountinfo as `fuseblk` with the device as its source, so the real type,
//! label and uuid must come from the device itself. `blkid -c /dev/null -o export <dev>` probes the device afresh
//! (a cached answer could describe the previous filesystem of a reused loop device); when that is not allowed (not
//! root), the cached `blkid -o export <dev>` answer and then the `/dev/disk/by-uuid` and `by-label` links are used
//! (udev does not always populate those, for loop devices in particular).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// A filesystem's identity as `blkid` reports it. Every field is optional: a network share has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsIdentity {
    /// `exfat`, `ext4`, `vfat`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The partition's UUID (GPT) or `<disk id>-<n>` (dos), for a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// The partition table on it (`gpt`, `dos`), for a whole disk or a disk image file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pt_type: Option<String>,
}

/// Identifies the filesystem on `device`; never fails, but may know nothing.
pub fn probe(device: &Path) -> FsIdentity {
    let fresh = run_blkid(&["-c", "/dev/null", "-o", "export"], device);
    if fresh.fs_type.is_some() {
        return fresh;
    }
    let cached = run_blkid(&["-o", "export"], device);
    if cached.fs_type.is_some() {
        return cached;
    }
    from_udev_links(device, Path::new("/dev/disk"))
}

/// What `blkid` finds in a file (a disk image): a filesystem, or a partition table (no cache, no udev links).
pub fn probe_file(file: &Path) -> FsIdentity {
    run_blkid(&["-c", "/dev/null", "-p", "-o", "export"], file)
}

fn run_blkid(args: &[&str], device: &Path) -> FsIdentity {
    let output = Command::new("blkid")
        .args(args)
        .arg(device)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => parse_export(&String::from_utf8_lossy(&out.stdout)),
        _ => FsIdentity::default(),
    }
}

/// Parses `blkid -o export` output (`KEY=value` lines; special characters in values are backslash-escaped).
pub fn parse_export(text: &str) -> FsIdentity {
    let mut id = FsIdentity::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unescape_export(value);
        if value.is_empty() {
            continue;
        }
        match key {
            "TYPE" => id.fs_type = Some(value),
            "LABEL" => id.label = Some(value),
            "UUID" => id.uuid = Some(value),
            "PARTUUID" => id.partuuid = Some(value),
            "PTTYPE" => id.pt_type = Some(value),
            _ => {}
        }
    }
    id
}

fn unescape_export(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Looks for `device` among the targets of `<dir>/by-uuid/*` and `<dir>/by-label/*`.
pub fn from_udev_links(device: &Path, dir: &Path) -> FsIdentity {
    let Ok(target) = std::fs::canonicalize(device) else {
        return FsIdentity::default();
    };
    let find = |sub: &str| -> Option<String> {
        std::fs::read_dir(dir.join(sub))
            .ok()?
            .flatten()
            .find_map(|entry| {
                let link: PathBuf = entry.path();
                (std::fs::canonicalize(&link).ok()? == target)
                    .then(|| unescape_udev(&entry.file_name().to_string_lossy()))
            })
    };
    FsIdentity {
        fs_type: None,
        uuid: find("by-uuid"),
        label: find("by-label"),
        partuuid: None,
        pt_type: None,
    }
}

/// udev encodes unsafe characters in link names as `\xHH` (`My\x20Drive`).
fn unescape_udev(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let Some(byte) = bytes
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_export_output() {
        let id = parse_export(
            "DEVNAME=/dev/loop0\nLABEL=My\\ T9\nUUID=FF4F-F609\nBLOCK_SIZE=512\nTYPE=exfat\nPTTYPE=dos\n",
        );
        assert_eq!(id.fs_type.as_deref(), Some("exfat"));
        assert_eq!(id.label.as_deref(), Some("My T9"));
        assert_eq!(id.uuid.as_deref(), Some("FF4F-F609"));
        assert_eq!(parse_export(""), FsIdentity::default());
    }

    #[test]
    fn finds_identity_through_udev_links() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("sdz1");
        std::fs::write(&dev, "").unwrap();
        for sub in ["by-uuid", "by-label"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::os::unix::fs::symlink("../sdz1", dir.path().join("by-uuid/1234-ABCD")).unwrap();
        std::os::unix::fs::symlink("../sdz1", dir.path().join("by-label/My\\x20Drive")).unwrap();
        std::os::unix::fs::symlink("../other", dir.path().join("by-label/Other")).unwrap();
        let id = from_udev_links(&dev, dir.path());
        assert_eq!(id.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(id.label.as_deref(), Some("My Drive"));
        assert_eq!(
            from_udev_links(&dir.path().join("missing"), dir.path()),
            FsIdentity::default()
        );
    }
}
