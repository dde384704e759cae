//! The names under a backup's `system/` folder and what `backup.json` records of them ([`SystemRecord`]).
//!
//! ```text
//! backups/<stamp>/system/                  the recovery kit, and partition images when configured
//!     RESTORE-SYSTEM.md                    the rebuild of this machine, step by step (generated)
//!     kit.json                             every piece of the kit: where it came from, or why it is missing
//!     lsblk.json, blkid.txt, sfdisk-<disk>.dump, sfdisk-<disk>.json, fstab, crypttab, ...   (see image::kit)
//!     <name>.img.zst                       a partition image: partclone's stream, zstd-compressed
//!     <disk>.sfdisk                        the partition table of the disk an image came from (sfdisk --dump)
//! ```
//!
//! When the destination encrypts, every file there is an age file (`<file>.age`), encrypted to the same recipients
//! as the sets. Every file is listed in `verification.sha256` as `system/<file>` and in `backup.json`.

use serde::{Deserialize, Serialize};

use crate::archive::{EncryptionRecord, FileRecord};

/// The folder inside a backup.
pub const SYSTEM_DIR: &str = "system";
/// The generated rebuild guide.
pub const RESTORE_DOC: &str = "RESTORE-SYSTEM.md";
/// The kit's own manifest.
pub const KIT_MANIFEST: &str = "kit.json";

/// `<name>` with `.age` when encrypted.
pub fn stored_name(name: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{name}{}", crate::archive::crypt::AGE_SUFFIX)
    } else {
        name.to_string()
    }
}

/// `<name>.img.zst`: an image's file name (before encryption).
pub fn image_file(name: &str) -> String {
    format!("{name}.img.zst")
}

/// `<disk>.sfdisk`: a table's file name (before encryption).
pub fn table_file(disk: &str) -> String {
    format!("{disk}.sfdisk")
}

/// A name that may be a file name in `system/`: a safe name (letters, digits, `_`, `-`, `.`, not starting with `.`
/// or `-`), at most 100 bytes. Everything read from `backup.json` is checked against this before it is joined to a
/// path.
pub fn is_plain_name(name: &str) -> bool {
    name.len() <= 100 && crate::settings::is_safe_name(name)
}

/// What `backup.json` says of a backup's `system/` folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    /// The recovery kit's pieces, when it was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kit: Vec<KitRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRecord>,
    /// Devices that were to be imaged and were not, with the reason (mounted read-write, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    /// How every file of `system/` is encrypted (the sets' recipients); none when plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
}

impl SystemRecord {
    /// Every file written into `system/`.
    pub fn files(&self) -> impl Iterator<Item = &FileRecord> {
        self.kit
            .iter()
            .filter_map(|k| k.file.as_ref())
            .chain(self.images.iter().map(|i| &i.file))
            .chain(self.tables.iter().map(|t| &t.file))
    }
}

/// One piece of the kit as recorded: its name, where it came from, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitRecord {
    pub name: String,
    /// `command: sfdisk --dump /dev/sda` or `file: /etc/fstab`.
    pub source: String,
    /// `ok`, `truncated`, `missing`, `failed`, `left_out`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The file in `system/` (absent when nothing was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRecord>,
}

/// A partition image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image's name (`nvme0n1p2`): `<name>.img.zst`.
    pub name: String,
    /// The device as configured, and as resolved when imaged.
    pub device: String,
    /// The filesystem (`ext4`, `vfat`, `btrfs`) and the partclone program that imaged it.
    pub fs_type: String,
    pub tool: String,
    /// Its filesystem's identity (three fields of this record in the JSON).
    #[serde(flatten)]
    pub ids: FsIds,
    /// The disk it is a partition of (`nvme0n1`) and its number there; none for a filesystem on a whole device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The device's size, and the bytes in use in its filesystem (partclone's header).
    pub device_bytes: u64,
    pub used_bytes: u64,
    /// The length of partclone's stream (before compression).
    pub stream_bytes: u64,
    /// Checked with `partclone.chkimg` on the stream decompressed from the bytes written.
    pub checked: bool,
    /// The image file (compressed, and encrypted when the destination encrypts).
    pub file: FileRecord,
    #[serde(default)]
    pub seconds: f64,
}

/// A filesystem's identity, as blkid gives it and every image record carries it (flattened: in the JSON its
/// fields stand in the record itself). Each part is optional: a filesystem need not have a label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
}

impl From<crate::media::blkid::FsIdentity> for FsIds {
    fn from(id: crate::media::blkid::FsIdentity) -> Self {
        FsIds {
            uuid: id.uuid,
            label: id.label,
            partuuid: id.partuuid,
        }
    }
}

/// The partition table of a disk an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    pub disk: String,
    /// `gpt` or `dos`.
    pub label: String,
    pub disk_bytes: u64,
    pub file: FileRecord,
}

/// A device that was not imaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub device: String,
    pub reason: String,
}
