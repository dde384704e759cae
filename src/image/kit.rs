//! The recovery kit: what rebuilding this machine needs, collected read-only and without root where possible. Each
//! piece comes from running a tool (with a time limit, its output bounded) or reading a file; a missing tool or file
//! is a line in the kit saying so, never a failure.
//!
//! What the kit holds (and nothing else): `lsblk.json`, `blkid.txt`, per disk `sfdisk-<disk>.dump` and
//! `sfdisk-<disk>.json`, `fstab` (values of `password=`/`pass=` options replaced by `REDACTED`), `crypttab` as
//! written (it names key files; their contents are never read), `lvm.json` (`lvm fullreport`) and the LVM metadata
//! backups of `/etc/lvm/backup` when present, `bootctl-status.txt`, `efibootmgr.txt`, `os-release`; on Debian
//! `dpkg-selections.txt` and `apt-manual.txt`; on NixOS `nixos-version.json`, `current-system.txt` (the store path
//! of the running system) and, from `/etc/nixos`, `flake.nix`, `flake.lock`, `configuration.nix` and
//! `hardware-configuration.nix`. A configuration file that only its owner may read is a secret by its owner's own
//! judgement: it is left out of a kit written to an unencrypted drive (the line says so).
//!
//! Cheap enough for every external run: `blkid` probes only the kit's disks and what `lsblk` shows on them (not
//! every loop device of the machine), and the package lists (`apt-mark showmanual` alone costs most of a second)
//! are kept in `<state>/kit-cache.json`, reused while dpkg's and apt's state files and the tool are unchanged
//! ([`PACKAGE_STATE`]), so a package installed or removed makes them run again.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layout::{FsIds, KitRecord};
use crate::stdx::{find_program, run_bounded};

/// How long one tool may run.
pub const TOOL_LIMIT: Duration = Duration::from_secs(20);
/// The most bytes kept of one piece.
pub const MAX_PIECE_BYTES: usize = 8 << 20;
/// The most LVM metadata backups copied.
const MAX_LVM_BACKUPS: usize = 16;

/// What became of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Longer than [`MAX_PIECE_BYTES`]: the beginning is kept.
    Truncated,
    /// The tool is not installed, or the file does not exist (the note says which and what that means).
    Missing,
    /// The tool failed or timed out, or the file cannot be read (the note says how).
    Failed,
    /// Owner-only, and the kit goes to an unencrypted drive.
    LeftOut,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Truncated => "truncated",
            Status::Missing => "missing",
            Status::Failed => "failed",
            Status::LeftOut => "left_out",
        }
    }
}

/// One piece of the kit, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Its file name in `system/`.
    pub name: String,
    /// `command: ...` or `file: ...`.
    pub source: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Readable by its owner only (see the module docs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl Piece {
    /// Whether a file is written for it.
    pub fn has_file(&self) -> bool {
        matches!(self.status, Status::Ok | Status::Truncated)
    }

    /// This piece as it goes to a drive that encrypts (or not): an owner-only file is left out of a plain kit.
    pub fn for_drive(&self, encrypted: bool) -> Piece {
        if self.private && !encrypted && self.has_file() {
            return Piece {
                status: Status::LeftOut,
                note: Some(
                    "readable by its owner only: not copied to an unencrypted drive (encrypt the destination to \
                     include it)"
                        .into(),
                ),
                bytes: Vec::new(),
                ..self.clone()
            };
        }
        self.clone()
    }

    pub fn record(&self, file: Option<crate::archive::FileRecord>) -> KitRecord {
        KitRecord {
            name: self.name.clone(),
            source: self.source.clone(),
            status: self.status.word().to_string(),
            note: self.note.clone(),
            file,
        }
    }
}

/// A disk of this machine, as the kit saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The kernel name (`nvme0n1`).
    pub name: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `gpt`, `dos`, or none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub partitions: Vec<DiskPartition>,
}

/// A partition (or a filesystem on a whole disk) as `lsblk` showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPartition {
    pub name: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// Its filesystem's identity (three fields of this record in the JSON).
    #[serde(flatten)]
    pub ids: FsIds,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<String>,
}

/// The facts the rebuild guide is made from (besides the pieces).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Booted with UEFI (`/sys/firmware/efi` exists).
    pub efi: bool,
    pub debian: bool,
    pub nixos: bool,
    /// The NixOS configuration is a flake (`/etc/nixos/flake.nix`).
    pub flake: bool,
    pub disks: Vec<Disk>,
}

/// A collected kit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kit {
    pub facts: Facts,
    pub pieces: Vec<Piece>,
    /// The pieces taken from the cache instead of running their tool (see [`collect_with`]).
    #[serde(skip)]
    pub reused: Vec<String>,
    /// What the cache should hold after this run ([`save_cache`] writes it when the kit is written).
    #[serde(skip)]
    pub cache: KitCache,
}

impl Kit {
    /// The two files a kit ends with, after its pieces (`pieces`: their records): the restore document `doc`
    /// (rendered from those records), then the manifest (`kit.json`: the facts and every record, the document's
    /// included). `write` stores one file, by name, and returns its record; both records are added to `pieces`.
    pub fn write_generated(
        &self,
        pieces: &mut Vec<KitRecord>,
        doc: &str,
        mut write: impl FnMut(&str, &[u8]) -> anyhow::Result<crate::archive::FileRecord>,
    ) -> anyhow::Result<()> {
        let generated = |name: &str, source: &str, file| KitRecord {
            name: name.into(),
            source: source.into(),
            status: "ok".into(),
            note: None,
            file: Some(file),
        };
        let rec = write(super::layout::RESTORE_DOC, doc.as_bytes())?;
        pieces.push(generated(
            super::layout::RESTORE_DOC,
            "generated from the kit",
            rec,
        ));
        let manifest = serde_json::json!({ "facts": self.facts, "pieces": pieces });
        let mut bytes = serde_json::to_vec_pretty(&manifest)?;
        bytes.push(b'\n');
        let rec = write(super::layout::KIT_MANIFEST, &bytes)?;
        pieces.push(generated(
            super::layout::KIT_MANIFEST,
            "generated: every piece and where it came from",
            rec,
        ));
        Ok(())
    }
}

/// The files the package lists are made from: a package installed or removed, or a mark changed, changes one of
/// them (dpkg rewrites `status` by rename and journals into `updates/`; apt keeps its auto marks in
/// `extended_states`).
pub const PACKAGE_STATE: &[&str] = &[
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/updates",
    "/var/lib/apt/extended_states",
];
/// The cache's file name in the state directory.
pub const CACHE_FILE: &str = "kit-cache.json";
/// A cache file larger than this is not read (two pieces at most, each bounded).
const MAX_CACHE_BYTES: u64 = 2 * MAX_PIECE_BYTES as u64 + (64 << 10);

/// The kit's cache: pieces whose tool need not run again while their key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitCache {
    pub format: u32,
    pub pieces: Vec<CachedPiece>,
}

/// One cached piece: what the tool printed, and the key it is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPiece {
    pub name: String,
    pub source: String,
    /// [`cache_key`] when the tool ran.
    pub key: String,
    pub text: String,
}

/// What makes a package list stale: each of [`PACKAGE_STATE`]'s files and the tool itself (device, inode, size,
/// mtime and ctime in ns; or absent).
pub fn cache_key(state: &[&Path], program: &Path) -> String {
    state
        .iter()
        .copied()
        .chain([program])
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => format!(
                "{}:{}:{}:{}:{}.{}:{}.{}",
                p.display(),
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
            Err(_) => format!("{}:-", p.display()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cache in `state_dir` (empty when missing, too big, unparsable or of another format).
pub fn read_cache(state_dir: &Path) -> KitCache {
    crate::stdx::fs::read_bounded(&state_dir.join(CACHE_FILE), MAX_CACHE_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<KitCache>(&b).ok())
        .filter(|c| c.format == 1)
        .unwrap_or_default()
}

/// Writes what `kit` collected or reused into `state_dir`'s cache (0600, temporary name then rename); nothing when
/// the kit has nothing to cache.
pub fn save_cache(state_dir: &Path, kit: &Kit) -> std::io::Result<()> {
    if kit.cache.pieces.is_empty() {
        return Ok(());
    }
    crate::stdx::fs::create_private_dir(state_dir)?;
    let text = serde_json::to_vec(&KitCache {
        format: 1,
        pieces: kit.cache.pieces.clone(),
    })
    .map_err(std::io::Error::other)?;
    crate::snapshot::write_atomic(&state_dir.join(CACHE_FILE), &text, 0o600)
        .map_err(std::io::Error::other)
}

/// A piece from `program args` that `old` may already hold (same name, command and [`cache_key`]): reused then
/// (its name added to `reused`), else run. Either way what is valid goes into `new`.
fn cached_piece(
    name: &str,
    program: &str,
    args: &[&str],
    old: &KitCache,
    new: &mut KitCache,
    reused: &mut Vec<String>,
) -> Piece {
    let Some(path) = find_program(program) else {
        return command_piece(name, program, args, None);
    };
    let state: Vec<&Path> = PACKAGE_STATE.iter().map(Path::new).collect();
    let key = cache_key(&state, &path);
    let source = command_source(program, args);
    if let Some(c) = old
        .pieces
        .iter()
        .find(|c| c.name == name && c.source == source && c.key == key)
    {
        reused.push(name.to_string());
        new.pieces.push(c.clone());
        return Piece {
            name: name.to_string(),
            source,
            status: Status::Ok,
            note: None,
            private: false,
            bytes: c.text.clone().into_bytes(),
        };
    }
    let piece = command_piece(name, program, args, None);
    if piece.status == Status::Ok
        && let Ok(text) = std::str::from_utf8(&piece.bytes)
    {
        new.pieces.push(CachedPiece {
            name: name.to_string(),
            source,
            key,
            text: text.to_string(),
        });
    }
    piece
}

/// The Debian package a tool comes from, for the "not installed" lines.
fn package_of(program: &str) -> &'static str {
    match program {
        "lsblk" | "blkid" | "sfdisk" => "util-linux / fdisk",
        "lvm" => "lvm2",
        "bootctl" => "systemd-boot",
        "efibootmgr" => "efibootmgr",
        "dpkg" => "dpkg",
        "apt-mark" => "apt",
        "nixos-version" => "NixOS",
        _ => "?",
    }
}

fn command_source(program: &str, args: &[&str]) -> String {
    format!(
        "command: {}",
        crate::ui::shell_words(&[&[program], args].concat())
    )
}

fn command_piece(name: &str, program: &str, args: &[&str], absent: Option<&str>) -> Piece {
    let source = command_source(program, args);
    let mut piece = Piece {
        name: name.to_string(),
        source,
        status: Status::Ok,
        note: None,
        private: false,
        bytes: Vec::new(),
    };
    let Some(path) = find_program(program) else {
        piece.status = Status::Missing;
        piece.note = Some(match absent {
            Some(why) => why.to_string(),
            None => format!("{program} is not installed ({})", package_of(program)),
        });
        return piece;
    };
    let mut cmd = Command::new(path);
    cmd.args(args).env("LC_ALL", "C");
    match run_bounded(cmd, TOOL_LIMIT, MAX_PIECE_BYTES) {
        Ok(out) if out.ok() => {
            if out.truncated {
                piece.status = Status::Truncated;
                piece.note = Some(format!(
                    "longer than {} MiB: the beginning is kept",
                    MAX_PIECE_BYTES >> 20
                ));
            }
            piece.bytes = out.stdout;
        }
        Ok(out) => {
            piece.status = Status::Failed;
            let mut why = out.failure();
            if why.contains("ermission denied") && !is_root() {
                why.push_str(" (run as root to include it)");
            }
            piece.note = Some(why);
        }
        Err(e) => {
            piece.status = Status::Failed;
            piece.note = Some(format!("cannot run {program}: {e}"));
        }
    }
    piece
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Rewrites a file's text, returning how many values it replaced.
type Redact = fn(&str) -> (String, usize);

/// A copy of a file; `redact` rewrites its text (fstab's passwords).
fn file_piece(name: &str, path: &Path, absent: &str, redact: Option<Redact>) -> Piece {
    let mut piece = Piece {
        name: name.to_string(),
        source: format!("file: {}", path.display()),
        status: Status::Ok,
        note: None,
        private: false,
        bytes: Vec::new(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            piece.status = Status::Missing;
            piece.note = Some("not a regular file".into());
            return piece;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            piece.status = Status::Missing;
            piece.note = Some(absent.to_string());
            return piece;
        }
        Err(e) => {
            piece.status = Status::Failed;
            piece.note = Some(format!("cannot read it: {e}"));
            return piece;
        }
    };
    piece.private = meta.permissions().mode() & 0o044 == 0;
    let read = std::fs::File::open(path).and_then(|f| {
        use std::io::Read;
        let mut bytes = Vec::new();
        f.take(MAX_PIECE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(mut bytes) => {
            if bytes.len() > MAX_PIECE_BYTES {
                bytes.truncate(MAX_PIECE_BYTES);
                piece.status = Status::Truncated;
                piece.note = Some(format!(
                    "longer than {} MiB: the beginning is kept",
                    MAX_PIECE_BYTES >> 20
                ));
            }
            if let Some(redact) = redact {
                let (text, n) = redact(&String::from_utf8_lossy(&bytes));
                if n > 0 {
                    piece.note = Some(format!("{n} password option value(s) replaced by REDACTED"));
                }
                bytes = text.into_bytes();
            }
            piece.bytes = bytes;
        }
        Err(e) => {
            piece.status = Status::Failed;
            let mut why = format!("cannot read it: {e}");
            if e.kind() == std::io::ErrorKind::PermissionDenied && !is_root() {
                why.push_str(" (run as root to include it)");
            }
            piece.note = Some(why);
        }
    }
    piece
}

/// fstab with the values of `password=`, `pass=` and `passwd=` mount options replaced (CIFS mounts may carry them).
pub fn redact_fstab(text: &str) -> (String, usize) {
    let mut n = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if body.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let fields: Vec<&str> = body.split_whitespace().collect();
        if fields.len() < 4 {
            out.push_str(line);
            continue;
        }
        let options: Vec<String> = fields[3]
            .split(',')
            .map(|o| match o.split_once('=') {
                Some((k, _))
                    if matches!(
                        k.to_ascii_lowercase().as_str(),
                        "password" | "pass" | "passwd"
                    ) =>
                {
                    n += 1;
                    format!("{k}=REDACTED")
                }
                _ => o.to_string(),
            })
            .collect();
        let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        fields[3] = options.join(",");
        out.push_str(&fields.join("\t"));
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    (out, n)
}

/// The physical disks (`/sys/block/<name>/device` exists: not loop, ram, zram or device-mapper).
fn physical_disks() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("zram") && !n.starts_with("ram"))
        .filter(|n| super::layout::is_plain_name(n))
        .collect();
    out.sort();
    out
}

/// `PRETTY_NAME` of an os-release file.
fn pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The disks and their partitions from `lsblk --json` (what this kit collected; parsed leniently).
pub fn disks_from_lsblk(json: &[u8]) -> Vec<Disk> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let s = |d: &serde_json::Value, k: &str| d.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let n = |d: &serde_json::Value, k: &str| {
        d.get(k)
            .and_then(|x| {
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0)
    };
    let part = |p: &serde_json::Value| DiskPartition {
        name: s(p, "name").unwrap_or_default(),
        bytes: n(p, "size"),
        fs_type: s(p, "fstype"),
        ids: FsIds {
            uuid: s(p, "uuid"),
            label: s(p, "label"),
            partuuid: s(p, "partuuid"),
        },
        mount_points: items(p, "mountpoints")
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
    };
    let mut disks = Vec::new();
    for d in items(&v, "blockdevices") {
        if s(d, "type").as_deref() != Some("disk") {
            continue;
        }
        let children: Vec<DiskPartition> = items(d, "children")
            .filter(|c| s(c, "type").as_deref() == Some("part"))
            .map(part)
            .collect();
        let partitions = if children.is_empty() && s(d, "fstype").is_some() {
            vec![part(d)]
        } else {
            children
        };
        disks.push(Disk {
            name: s(d, "name").unwrap_or_default(),
            bytes: n(d, "size"),
            model: s(d, "model")
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty()),
            table: s(d, "pttype"),
            partitions,
        });
    }
    disks
}

/// The elements of the JSON array at `key` of `v` (none when it is absent or not an array): lsblk's
/// `blockdevices` and each device's `children`.
fn items<'a>(v: &'a serde_json::Value, key: &str) -> impl Iterator<Item = &'a serde_json::Value> {
    v.get(key).and_then(|a| a.as_array()).into_iter().flatten()
}

/// The device paths `lsblk --json` shows for the disks named `disks` and everything on them (partitions, and what
/// is stacked on those: LUKS, LVM, RAID), in lsblk's order: what `blkid` probes for the kit.
pub fn devices_on(json: &[u8], disks: &[String]) -> Vec<String> {
    fn walk(d: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(p) = d.get("path").and_then(|p| p.as_str())
            && p.starts_with("/dev/")
            && !out.iter().any(|o| o == p)
        {
            out.push(p.to_string());
        }
        for c in items(d, "children") {
            walk(c, out);
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in items(&v, "blockdevices") {
        if d.get("name")
            .and_then(|n| n.as_str())
            .is_some_and(|n| disks.iter().any(|x| x == n))
        {
            walk(d, &mut out);
        }
    }
    out
}

/// `blkid` of `devices` (all of the machine's when none is known: lsblk missing or failed). Exit 2 with nothing
/// on stderr is blkid's "no filesystem found on them": an empty piece, not a failure.
fn blkid_piece(devices: &[String]) -> Piece {
    let args: Vec<&str> = devices.iter().map(String::as_str).collect();
    let mut piece = command_piece("blkid.txt", "blkid", &args, None);
    if piece.status == Status::Failed
        && !devices.is_empty()
        && piece.note.as_deref() == Some("exit 2")
    {
        piece.status = Status::Ok;
        piece.note = Some("no filesystem found on the disks".into());
    }
    piece
}

/// Collects the kit of this machine (see the module docs for the pieces), running every tool.
pub fn collect() -> Kit {
    collect_with(None)
}

/// Collects the kit; the package lists come from the cache in `state_dir` while still valid (see the module
/// docs). The kit says which pieces were reused, and what the cache should hold next ([`save_cache`]).
// Stays long: a flat list of the kit's pieces, one tool or file each, in the order the guide names them.
pub fn collect_with(state_dir: Option<&Path>) -> Kit {
    let old_cache = state_dir.map(read_cache).unwrap_or_default();
    let mut cache = KitCache::default();
    let mut reused = Vec::new();
    let mut pieces = Vec::new();
    let lsblk = command_piece(
        "lsblk.json",
        "lsblk",
        &[
            "--json",
            "--bytes",
            "--output",
            "NAME,KNAME,PATH,TYPE,SIZE,FSTYPE,FSVER,LABEL,UUID,PTTYPE,PTUUID,PARTTYPE,PARTLABEL,PARTUUID,PKNAME,MOUNTPOINTS,MODEL,RO,RM",
        ],
        None,
    );
    let disks = disks_from_lsblk(&lsblk.bytes);
    let mut names: Vec<String> = physical_disks();
    for d in &disks {
        if !names.contains(&d.name)
            && super::layout::is_plain_name(&d.name)
            && !d.name.starts_with("zram")
            && !d.name.starts_with("ram")
        {
            names.push(d.name.clone());
        }
    }
    names.sort();
    let probed = devices_on(&lsblk.bytes, &names);
    pieces.push(lsblk);
    pieces.push(blkid_piece(&probed));
    for disk in &names {
        let dev = format!("/dev/{disk}");
        pieces.push(command_piece(
            &format!("sfdisk-{disk}.dump"),
            "sfdisk",
            &["--dump", &dev],
            None,
        ));
        pieces.push(command_piece(
            &format!("sfdisk-{disk}.json"),
            "sfdisk",
            &["--json", &dev],
            None,
        ));
    }
    let mut fstab = file_piece(
        "fstab",
        Path::new("/etc/fstab"),
        "this system has no /etc/fstab",
        Some(redact_fstab),
    );
    fstab.private = false; // made safe by the redaction
    pieces.push(fstab);
    pieces.push(file_piece(
        "crypttab",
        Path::new("/etc/crypttab"),
        "no /etc/crypttab: no encrypted block devices are set up at boot",
        None,
    ));
    pieces.push(command_piece(
        "lvm.json",
        "lvm",
        &["fullreport", "--reportformat", "json"],
        Some("lvm is not installed: this system uses no LVM"),
    ));
    let mut lvm_backups: Vec<PathBuf> = std::fs::read_dir("/etc/lvm/backup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    lvm_backups.sort();
    for p in lvm_backups.iter().take(MAX_LVM_BACKUPS) {
        let vg = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let name = format!("lvm-backup-{vg}");
        if super::layout::is_plain_name(&name) {
            let mut piece = file_piece(&name, p, "", None);
            piece.private = false; // LVM keeps its metadata 0600 by habit; it holds no secret
            pieces.push(piece);
        }
    }
    pieces.push(command_piece(
        "bootctl-status.txt",
        "bootctl",
        &["status", "--no-pager"],
        Some("bootctl is not installed: this system does not boot with systemd-boot"),
    ));
    let efi = Path::new("/sys/firmware/efi").exists();
    pieces.push(command_piece(
        "efibootmgr.txt",
        "efibootmgr",
        &["-v"],
        Some(if efi {
            "efibootmgr is not installed (Debian package efibootmgr): the UEFI boot entries are not recorded"
        } else {
            "efibootmgr is not installed, and this system did not boot with UEFI (no /sys/firmware/efi)"
        }),
    ));
    let os_release = file_piece(
        "os-release",
        Path::new("/etc/os-release"),
        "no /etc/os-release",
        None,
    );
    let os = pretty_name(&String::from_utf8_lossy(&os_release.bytes));
    pieces.push(os_release);
    let nixos =
        Path::new("/etc/NIXOS").exists() || Path::new("/run/current-system/nixos-version").exists();
    let debian = !nixos && Path::new("/etc/debian_version").exists();
    if debian {
        pieces.push(cached_piece(
            "dpkg-selections.txt",
            "dpkg",
            &["--get-selections"],
            &old_cache,
            &mut cache,
            &mut reused,
        ));
        pieces.push(cached_piece(
            "apt-manual.txt",
            "apt-mark",
            &["showmanual"],
            &old_cache,
            &mut cache,
            &mut reused,
        ));
    } else {
        let why = "not a Debian system (no /etc/debian_version)";
        for (name, source) in [
            ("dpkg-selections.txt", "command: dpkg --get-selections"),
            ("apt-manual.txt", "command: apt-mark showmanual"),
        ] {
            pieces.push(Piece {
                name: name.into(),
                source: source.into(),
                status: Status::Missing,
                note: Some(why.into()),
                private: false,
                bytes: Vec::new(),
            });
        }
    }
    let flake = Path::new("/etc/nixos/flake.nix").exists();
    if nixos {
        pieces.push(command_piece(
            "nixos-version.json",
            "nixos-version",
            &["--json"],
            None,
        ));
        let mut current = Piece {
            name: "current-system.txt".into(),
            source: "file: /run/current-system (the link's target)".into(),
            status: Status::Ok,
            note: None,
            private: false,
            bytes: Vec::new(),
        };
        match std::fs::read_link("/run/current-system") {
            Ok(t) => current.bytes = format!("{}\n", t.display()).into_bytes(),
            Err(e) => {
                current.status = Status::Failed;
                current.note = Some(format!("cannot read the link: {e}"));
            }
        }
        pieces.push(current);
    }
    for file in [
        "flake.nix",
        "flake.lock",
        "configuration.nix",
        "hardware-configuration.nix",
    ] {
        let absent = if nixos {
            format!("/etc/nixos has no {file}")
        } else {
            "not a NixOS system (no /etc/NIXOS)".to_string()
        };
        if nixos || Path::new("/etc/nixos").join(file).exists() {
            pieces.push(file_piece(
                &format!("nixos-{file}"),
                &Path::new("/etc/nixos").join(file),
                &absent,
                None,
            ));
        } else {
            pieces.push(Piece {
                name: format!("nixos-{file}"),
                source: format!("file: /etc/nixos/{file}"),
                status: Status::Missing,
                note: Some(absent),
                private: false,
                bytes: Vec::new(),
            });
        }
    }
    Kit {
        facts: Facts {
            host: crate::media::hostname(),
            os,
            efi,
            debian,
            nixos,
            flake,
            disks,
        },
        pieces,
        reused,
        cache,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_passwords_are_redacted_and_the_rest_kept() {
        let text = "# <fs> <mp>\nUUID=1 / ext4 defaults 0 1\n//nas/x /mnt/x cifs user=me,password=hunter2,uid=1 0 0\n";
        let (out, n) = redact_fstab(text);
        assert_eq!(n, 1);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("password=REDACTED,uid=1"), "{out}");
        assert!(
            out.starts_with("# <fs> <mp>\nUUID=1\t/\text4\tdefaults\t0\t1\n"),
            "{out}"
        );
    }

    #[test]
    fn private_pieces_stay_off_plain_drives() {
        let p = Piece {
            name: "nixos-configuration.nix".into(),
            source: "file: /etc/nixos/configuration.nix".into(),
            status: Status::Ok,
            note: None,
            private: true,
            bytes: b"secret".to_vec(),
        };
        assert_eq!(p.for_drive(true), p);
        let plain = p.for_drive(false);
        assert_eq!(plain.status, Status::LeftOut);
        assert!(plain.bytes.is_empty() && !plain.has_file());
    }

    /// blkid probes the kit's disks and what is stacked on them, never another loop device. (Before: `blkid`
    /// without a device probed every block device of the machine, 3 to 26 s with the builders' loop devices.)
    #[test]
    fn blkid_probes_the_disks_and_what_is_on_them() {
        let json = br#"{"blockdevices": [
            {"name": "loop0", "path": "/dev/loop0", "type": "loop",
             "children": [{"name": "loop0p1", "path": "/dev/loop0p1", "type": "part"}]},
            {"name": "nvme0n1", "path": "/dev/nvme0n1", "type": "disk", "children": [
               {"name": "nvme0n1p1", "path": "/dev/nvme0n1p1", "type": "part"},
               {"name": "nvme0n1p2", "path": "/dev/nvme0n1p2", "type": "part", "children": [
                  {"name": "root", "path": "/dev/mapper/root", "type": "crypt"}]}]},
            {"name": "sda", "path": "../etc/passwd", "type": "disk"}]}"#;
        let disks = ["nvme0n1".to_string(), "sda".to_string()];
        assert_eq!(
            devices_on(json, &disks),
            [
                "/dev/nvme0n1",
                "/dev/nvme0n1p1",
                "/dev/nvme0n1p2",
                "/dev/mapper/root"
            ]
        );
        assert!(devices_on(b"garbage", &disks).is_empty());
    }

    #[test]
    fn lsblk_json_gives_disks_and_partitions() {
        let json = br#"{"blockdevices": [
            {"name": "loop0", "type": "loop", "size": 1},
            {"name": "nvme0n1", "type": "disk", "size": 512110190592, "model": "Samsung SSD 980 ", "pttype": "gpt",
             "children": [
               {"name": "nvme0n1p1", "type": "part", "size": 536870912, "fstype": "vfat", "uuid": "ABCD-1234",
                "partuuid": "1111", "mountpoints": ["/boot"]},
               {"name": "nvme0n1p2", "type": "part", "size": "511573319680", "fstype": "ext4", "mountpoints": [null]}]}]}"#;
        let disks = disks_from_lsblk(json);
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].model.as_deref(), Some("Samsung SSD 980"));
        assert_eq!(disks[0].partitions[0].mount_points, ["/boot"]);
        assert_eq!(disks[0].partitions[1].bytes, 511573319680);
        assert!(disks_from_lsblk(b"garbage").is_empty());
    }
}
