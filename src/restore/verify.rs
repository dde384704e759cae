//! `restore --verify`: checks a backup without writing anything, and says what a restore would write.
//!
//! - A drive backup: `verification.sha256` against the files (every archive part and index and `backup.json` must be
//!   listed, and match), then every archive read once from end to end against its index ([`verify_archive_with`](crate::archive::verify::verify_archive_with): each
//!   entry's header fields and content sha256, the offsets, the totals, the stream's length and sha256). The same read
//!   gives the archive's file hash for the sums check, so each archive is read once. An archive without an index is
//!   read through (structure, lengths) and checked against the sums only.
//! - A local snapshot: its metadata says complete, every file reads, and where a drive backup (on a present drive)
//!   was made from it, every file still matches that backup's index (size and sha256), none missing, none added.
//!
//! Every name is also checked with the restore's safety rules: a name a restore would refuse is a problem.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::catalog::Drive;
use super::content::{SetContent, open_nofollow};
use super::drive::DriveBackup;
use super::engine::entry::EntryKind;
use super::engine::safety::{self, RelPath};
use super::engine::tarscan::{Owners, Scanner};
use super::keys::{Ask, KeyRing};
use super::select::Kept;
use super::select::abs_of;
use crate::archive::index::IndexReader;
use crate::archive::sums::{self, SUMS_FILE};
use crate::archive::{
    self, ArchiveFiles, Digest, HardLinkTargets, IndexEntry, Keys, Progress,
    verify_archive_in_chain,
};
use crate::snapshot::Snapshot;
use crate::ui::Ui;

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub source: Kept,
    /// The backup's stamp (local: the snapshots' stamps, comma-separated when they differ).
    pub backup: String,
    /// The backup's directory (external) or the backup root (local).
    pub location: PathBuf,
    /// The sums file check (external).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums: Option<SumsReport>,
    pub sets: Vec<SetReport>,
    /// Entries, files and content bytes read and checked.
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Everything wrong, in the order found. Empty when intact.
    pub problems: Vec<Issue>,
    /// What a restore (of `--path`, or of everything) would write.
    pub would_restore: Vec<WouldRestore>,
    pub intact: bool,
    /// Whether the contents were checked: false when an encrypted archive was checked without its identity (its
    /// encrypted files against `verification.sha256` only). `restore --verify` then exits 3.
    #[serde(default = "yes")]
    pub content_checked: bool,
    /// What was not checked, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `--verify --deep`: every byte an incremental's manifest keeps in earlier backups was read and hashed too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deep: bool,
}

fn yes() -> bool {
    true
}

/// The `verification.sha256` check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SumsReport {
    pub file: PathBuf,
    pub present: bool,
    /// Files whose sha256 was compared with it.
    pub checked: u64,
    pub ok: bool,
}

/// One set's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    pub set: String,
    /// The archive (or snapshot directory) read.
    pub checked: String,
    /// Whether its content was checked against an index's sha256s.
    pub indexed: bool,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Local: the drive backup whose index the snapshot was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    pub ok: bool,
    /// Encrypted with age.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Whether its contents were checked (false: encrypted, and checked without the identity).
    #[serde(default = "yes")]
    pub content_checked: bool,
    /// Why its contents were not checked although keys were given: they do not open it (another identity, a wrong
    /// passphrase). Its encrypted files were checked against the sums, as without keys; not damage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_decrypted: Option<String>,
    /// An incremental: the files its manifest keeps in earlier backups, each checked there (its header; with
    /// `--deep` its content too), and the content bytes `--deep` read for them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referenced_files: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referenced_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SetReport {
    /// A set about to be checked: nothing counted yet, not (yet) found good, plain.
    fn new(set: &str, checked: String) -> Self {
        SetReport {
            set: set.to_string(),
            checked,
            indexed: false,
            entries: 0,
            files: 0,
            bytes: 0,
            compared_with: None,
            ok: false,
            encrypted: false,
            content_checked: true,
            not_decrypted: None,
            referenced_files: 0,
            referenced_bytes: 0,
        }
    }
}

/// A problem: where (an archive, a file) and which entry first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// The path as it is (a drive's file names among them: shown escaped, by `Display`).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = crate::stdx::show_str(&self.file);
        match &self.entry {
            Some(e) => write!(f, "{file}: entry {e}: {}", self.message),
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

/// What restoring one path (or a whole set) would write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WouldRestore {
    pub set: String,
    /// The path, where it was on the backed-up machine.
    pub path: PathBuf,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Every entry, with `-v`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<WouldEntry>,
}

/// One entry a restore would write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WouldEntry {
    pub path: PathBuf,
    pub kind: String,
    pub bytes: u64,
}

/// What to check: per set, the names whose restore is described (the root for everything).
#[derive(Debug, Clone)]
pub struct Scope {
    pub set: String,
    pub names: Vec<RelPath>,
}

/// Counts what a restore of the scoped names would write, as entries go by.
struct Would {
    items: Vec<WouldRestore>,
    names: Vec<RelPath>,
    list: bool,
}

impl Would {
    fn new(set: &str, names: &[RelPath], list: bool) -> Would {
        Would {
            items: names
                .iter()
                .map(|n| WouldRestore {
                    set: set.to_string(),
                    path: abs_of(n),
                    entries: 0,
                    files: 0,
                    bytes: 0,
                    list: Vec::new(),
                })
                .collect(),
            names: names.to_vec(),
            list,
        }
    }

    fn see(&mut self, rel: &RelPath, kind: &str, bytes: u64) {
        for (i, n) in self.names.iter().enumerate() {
            if rel.starts_with(n) {
                let w = &mut self.items[i];
                w.entries += 1;
                if kind == "file" || kind == "hardlink" {
                    w.files += 1;
                    w.bytes = w.bytes.saturating_add(bytes);
                }
                if self.list {
                    w.list.push(WouldEntry {
                        path: abs_of(rel),
                        kind: kind.to_string(),
                        bytes,
                    });
                }
            }
        }
    }
}

/// Checks a name with the restore's rules; the refusal, if a restore would refuse it.
fn refusal(name: &[u8], kind: EntryKind) -> Option<String> {
    match safety::check_name(name, None) {
        Err(r) => Some(r.to_string()),
        Ok(_) => safety::refused_kind(kind).map(|r| r.to_string()),
    }
}

/// The progress of [`verify_archive_with`](crate::archive::verify::verify_archive_with): bytes for the bar, entries for the would-restore list and the name check.
struct Watch<'a> {
    would: Would,
    refused: Option<(String, String)>,
    bar: &'a mut dyn FnMut(u64),
}

impl Progress for Watch<'_> {
    fn entry(&mut self, path: &[u8], kind: EntryKind, size: u64) {
        if self.refused.is_none()
            && let Some(why) = refusal(path, kind)
        {
            self.refused = Some((super::engine::entry::show(path), why));
        }
        if let Ok(rel) = safety::check_name(path, None) {
            self.would.see(&rel, kind.name(), size);
        }
    }

    fn bytes(&mut self, n: u64) {
        (self.bar)(n);
    }
}

/// Reads the parts of an archive in order as one stream, hashing each part's bytes as they go by.
struct PartHasher {
    parts: Vec<(PathBuf, u64)>,
    next: usize,
    file: Option<(File, Sha256, u64)>,
    hash: bool,
    /// Each part read to its end: its path, length and sha256 (when hashing).
    done: Vec<(PathBuf, u64, Option<Digest>)>,
}

impl PartHasher {
    fn new(archive: &ArchiveFiles, hash: bool) -> PartHasher {
        PartHasher {
            parts: archive.parts.clone(),
            next: 0,
            file: None,
            hash,
            done: Vec::new(),
        }
    }
}

impl Read for PartHasher {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.file.is_none() {
                let Some((path, _)) = self.parts.get(self.next) else {
                    return Ok(0);
                };
                // Never through a symlink, and only a regular file.
                let file = crate::stdx::fs::open_regular(path)?;
                // Read what is on the drive, not what the page cache remembers of it.
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
                self.file = Some((file, Sha256::new(), 0));
            }
            let (file, hasher, count) = self.file.as_mut().expect("opened");
            let n = file.read(buf)?;
            if n > 0 {
                if self.hash {
                    hasher.update(&buf[..n]);
                }
                *count += n as u64;
                return Ok(n);
            }
            let (_, hasher, count) = self.file.take().expect("opened");
            let (path, _) = self.parts[self.next].clone();
            self.done
                .push((path, count, self.hash.then(|| Digest::of(hasher))));
            self.next += 1;
        }
    }
}

/// The plaintext of an archive read in order: its parts, decrypted with `keys` when given.
fn plaintext<'p>(
    keys: Option<&Arc<Keys>>,
    parts: &'p mut PartHasher,
    label: &str,
) -> Result<Box<dyn Read + 'p>, crate::archive::crypt::CryptError> {
    match keys {
        Some(k) => Ok(Box::new(k.open(parts, label)?)),
        None => Ok(Box::new(parts)),
    }
}

/// The length and sha256 of a file.
pub fn hash_file(path: &Path) -> io::Result<(u64, Digest)> {
    let mut f = crate::stdx::fs::open_regular(path)?;
    let (total, sum) = crate::stdx::sha256_reader(&mut f, &mut vec![0u8; 1 << 20], |_| {})?;
    Ok((total, Digest(sum)))
}

/// A backup's `verification.sha256`, read: the one sums check of restore, made by `--verify` on every file and
/// before a restore on `backup.json` and the indexes ([`crate::restore::choose::check_drive_backup_metadata`]).
pub struct Sums {
    /// The sums file.
    pub path: PathBuf,
    /// Each listed name's sha256 (a name listed twice: the last line).
    pub lines: HashMap<Vec<u8>, Digest>,
}

/// What comparing one file of the backup with its [`Sums`] found.
pub enum FileCheck {
    Matches,
    Unlisted,
    Differs { got: Digest, listed: Digest },
    Unreadable(io::Error),
}

impl Sums {
    /// Reads the sums file of the backup in `dir`: `Ok(None)` when it is missing (its path is in the error's message
    /// only when it cannot be used).
    pub fn read(dir: &Path) -> (PathBuf, Result<Option<Sums>, sums::SumsError>) {
        let path = dir.join(SUMS_FILE);
        let read = match sums::read_sums(&path) {
            Ok(lines) => Ok(Some(Sums {
                path: path.clone(),
                lines: lines.into_iter().map(|l| (l.name, l.sha256)).collect(),
            })),
            Err(sums::SumsError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        (path, read)
    }

    pub fn listed(&self, name: &[u8]) -> Option<&Digest> {
        self.lines.get(name)
    }

    /// Hashes the file `name` of the backup in `dir` (a regular file, never through a symlink) and compares it.
    pub fn check_file(&self, dir: &Path, name: &[u8]) -> FileCheck {
        let Some(listed) = self.listed(name) else {
            return FileCheck::Unlisted;
        };
        match hash_file(&dir.join(std::ffi::OsStr::from_bytes(name))) {
            Ok((_, got)) if got == *listed => FileCheck::Matches,
            Ok((_, got)) => FileCheck::Differs {
                got,
                listed: *listed,
            },
            Err(e) => FileCheck::Unreadable(e),
        }
    }
}

/// Why an archive or index could not be opened: missing, or refused (a symlink, a FIFO...).
fn missing_or_refused(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("is missing: {e}")
    } else {
        format!("cannot be used: {e}")
    }
}

fn file_name(path: &Path) -> Vec<u8> {
    path.file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default()
}

/// Verifies one drive backup. `keys` decrypt its encrypted archives: without them (or with no identity in them),
/// an encrypted archive's files are only hashed against the sums and `backup.json`, and the report says that the
/// contents were not checked. `scope` limits the would-restore list (every set, everything, when empty); `list`
/// lists every entry; `bar` is told content bytes as they are checked.
///
/// Three steps: find each set's archive and index ([`discover_archives`]), check the sums file and hash the files
/// it lists that are not archives ([`check_sums`]), then read each archive once ([`verify_set`]), which also gives
/// its file hashes for the sums.
pub fn verify_drive_backup(
    backup: &DriveBackup,
    keys: Option<&Arc<Keys>>,
    scope: &[Scope],
    (list, deep): (bool, bool),
    bar: &mut dyn FnMut(u64),
) -> VerifyReport {
    let dir = &backup.dir.path;
    let mut found = Findings::default();
    let (sums_path, read) = Sums::read(dir);
    let sums = match read {
        Ok(Some(sums)) => Some(sums),
        Ok(None) => {
            found.problems.push(issue(
                &sums_path,
                None,
                "is missing: the backup cannot be checked against the hashes written with it"
                    .into(),
            ));
            None
        }
        Err(e) => {
            found
                .problems
                .push(issue(&sums_path, None, format!("cannot be used: {e}")));
            None
        }
    };
    found.sums_ok = sums.is_some();
    let (archive_names, archives) = discover_archives(backup, keys, &mut found.problems);
    if let Some(sums) = &sums {
        check_sums(backup, sums, &archive_names, &archives, &mut found);
    }

    // Each archive, read once.
    let mut sets = Vec::new();
    let mut would_all = Vec::new();
    let mut unchecked: Vec<String> = Vec::new();
    let mut not_decrypted: Vec<String> = Vec::new();
    let (mut entries, mut files, mut bytes) = (0u64, 0u64, 0u64);
    for (set, archive, index) in archives {
        let names = scope_names(scope, &set);
        let Some(archive) = archive else {
            sets.push(unreadable_set(backup, &set));
            continue;
        };
        let (report, would) = verify_set(
            backup,
            &set,
            (&archive, index.as_ref(), deep),
            Would::new(&set, &names, list),
            sums.as_ref(),
            &mut found,
            &mut *bar,
        );
        match &report.not_decrypted {
            Some(why) => not_decrypted.push(why.clone()),
            None if !report.content_checked => unchecked.push(report.checked.clone()),
            None => {}
        }
        entries += report.entries;
        files += report.files;
        bytes = bytes.saturating_add(report.bytes);
        would_all.extend(would);
        sets.push(report);
    }
    let mut problems = found.problems;
    if !found.sums_ok && sums.is_some() && problems.is_empty() {
        problems.push(issue(&sums_path, None, "does not match the backup".into()));
    }
    let mut warnings = Vec::new();
    if !unchecked.is_empty() {
        warnings.push(format!(
            "the contents of backup {} were NOT checked: {} encrypted and no identity was given, so only the \
             encrypted files were checked against {SUMS_FILE}; pass --identity FILE (or set \
             encryption.identity_file) to check every file",
            backup.dir.name,
            if unchecked.len() == 1 {
                format!("{} is", unchecked[0])
            } else {
                format!("{} are", unchecked.join(", "))
            }
        ));
    }
    for why in &not_decrypted {
        warnings.push(format!(
            "the contents of backup {} were NOT checked: {why}; only the encrypted files were checked against \
             {SUMS_FILE}",
            backup.dir.name
        ));
    }
    VerifyReport {
        source: Kept::External,
        backup: backup.dir.name.clone(),
        location: dir.clone(),
        sums: Some(SumsReport {
            file: sums_path,
            present: sums.is_some(),
            checked: found.sums_checked,
            ok: sums.is_some() && found.sums_ok,
        }),
        sets,
        entries,
        files,
        bytes,
        intact: problems.is_empty(),
        problems,
        would_restore: would_all,
        content_checked: unchecked.is_empty() && not_decrypted.is_empty(),
        warnings,
        deep,
    }
}

/// What the checks of one drive backup found so far.
#[derive(Default)]
struct Findings {
    /// Everything wrong, in the order found.
    problems: Vec<Issue>,
    /// Files whose sha256 was compared with the sums file.
    sums_checked: u64,
    /// Every file compared matched, and the sums file lists exactly the backup's files.
    sums_ok: bool,
}

fn issue(file: &Path, entry: Option<String>, message: String) -> Issue {
    Issue {
        file: file.display().to_string(),
        entry,
        message,
    }
}

/// A set and its archive and index, when they could be opened.
type SetFiles = (String, Option<ArchiveFiles>, Option<ArchiveFiles>);

/// Finds each set's archive (its parts) and index in the backup's directory, with `keys` for the encrypted ones; a
/// missing or refused file is a problem. Also gives the file names of every archive part.
fn discover_archives(
    backup: &DriveBackup,
    keys: Option<&Arc<Keys>>,
    problems: &mut Vec<Issue>,
) -> (Vec<Vec<u8>>, Vec<SetFiles>) {
    let dir = &backup.dir.path;
    let mut archive_names: Vec<Vec<u8>> = Vec::new();
    let mut archives = Vec::new();
    for s in &backup.sets {
        let archive = match ArchiveFiles::discover(dir, &s.archive) {
            Ok(a) => {
                archive_names.extend(a.parts.iter().map(|(p, _)| file_name(p)));
                Some(a.with_keys(keys.cloned()))
            }
            Err(e) => {
                problems.push(issue(&dir.join(&s.archive), None, missing_or_refused(&e)));
                None
            }
        };
        let index = match &s.index {
            Some(i) => match ArchiveFiles::discover(dir, i) {
                Ok(a) => Some(a.with_keys(keys.cloned())),
                Err(e) => {
                    problems.push(issue(&dir.join(i), None, missing_or_refused(&e)));
                    None
                }
            },
            None => None,
        };
        archives.push((s.name.clone(), archive, index));
    }
    (archive_names, archives)
}

/// The sums file against the backup: every file of it must be listed (archives, indexes, `backup.json`, the system
/// files), every name listed must be a file of it, and each listed file that is not an archive part is hashed now
/// (archives are hashed as they are verified).
fn check_sums(
    backup: &DriveBackup,
    sums: &Sums,
    archive_names: &[Vec<u8>],
    archives: &[SetFiles],
    found: &mut Findings,
) {
    let dir = &backup.dir.path;
    let mut covered: Vec<Vec<u8>> = archive_names.to_vec();
    for (_, _, index) in archives {
        if let Some(i) = index {
            covered.extend(i.parts.iter().map(|(p, _)| file_name(p)));
        }
    }
    if dir.join(super::drive::METADATA_FILE).exists() {
        covered.push(super::drive::METADATA_FILE.as_bytes().to_vec());
    }
    // The files of `system/` as backup.json records them (the kit, the tables, the partition images): each is
    // checked against its record's size and sha256 too.
    let mut recorded: HashMap<Vec<u8>, &crate::archive::FileRecord> = HashMap::new();
    if let Some(system) = backup.dir.meta.as_ref().and_then(|m| m.system.as_ref()) {
        for f in system.files() {
            let name = format!("{}/{}", crate::image::layout::SYSTEM_DIR, f.name).into_bytes();
            covered.push(name.clone());
            recorded.insert(name, f);
        }
    }
    for name in &covered {
        if sums.listed(name).is_none() {
            found.sums_ok = false;
            found.problems.push(issue(
                &dir.join(std::ffi::OsStr::from_bytes(name)),
                None,
                format!(
                    "is not listed in {SUMS_FILE}: the sums file was edited, or the file added after the backup \
                     was written"
                ),
            ));
        }
    }
    let mut names: Vec<&Vec<u8>> = sums.lines.keys().collect();
    names.sort();
    // `system/`, opened once when a file of it is checked: never through a symlink, nor on another filesystem.
    let mut system_dir: Option<Result<crate::stdx::fs::Dir, String>> = None;
    for name in names {
        if backup.is_excluded_file(name) {
            continue; // another set's, left out by --set
        }
        let shown = super::engine::entry::show(name);
        // `system/<file>`: the recovery kit and partition images (crate::image), one plain name deep.
        let in_system = name
            .strip_prefix(b"system/")
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .is_some_and(crate::image::layout::is_plain_name);
        if (name.contains(&b'/') && !in_system) || name == b".." || name == b"." {
            found.sums_ok = false;
            found.problems.push(issue(
                &sums.path,
                None,
                format!("names {shown}, which is not a file of this backup"),
            ));
            continue;
        }
        if archive_names.contains(name) {
            continue; // hashed while the archive is verified
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        if let Some(record) = recorded.get(name) {
            let system = system_dir.get_or_insert_with(|| {
                crate::stdx::fs::Dir::open(dir)
                    .and_then(|d| d.sub(crate::image::layout::SYSTEM_DIR))
                    .map_err(|e| e.to_string())
            });
            if let Some(message) = check_recorded(system, record, sums.listed(name)) {
                found.sums_ok = false;
                found.problems.push(issue(&path, None, message));
            } else {
                found.sums_checked += 1;
            }
            continue;
        }
        let message = match sums.check_file(dir, name) {
            FileCheck::Matches | FileCheck::Unlisted => {
                found.sums_checked += 1;
                continue;
            }
            FileCheck::Differs { got, listed } => {
                format!("its sha256 is {got}, {SUMS_FILE} says {listed}: it was changed or damaged")
            }
            FileCheck::Unreadable(e) => {
                format!("is listed in {SUMS_FILE} but cannot be read: {e}")
            }
        };
        found.sums_ok = false;
        found.problems.push(issue(&path, None, message));
    }
}

/// A file of `system/` against its record in backup.json and its line in the sums file (read once from the drive
/// past the page cache, streaming, never through a symlink, a regular file only): why it is damaged, or `None` when
/// it matches both.
fn check_recorded(
    system: &Result<crate::stdx::fs::Dir, String>,
    record: &crate::archive::FileRecord,
    listed: Option<&Digest>,
) -> Option<String> {
    let read = match system {
        Ok(dir) => {
            crate::archive::readback::hash_uncached_in(dir, std::ffi::OsStr::new(&record.name))
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.clone()),
    };
    let (bytes, got) = match read {
        Ok((bytes, got, _)) => (bytes, got),
        Err(e) => {
            return Some(format!(
                "is recorded in backup.json but cannot be read: {e}"
            ));
        }
    };
    if bytes != record.bytes {
        Some(format!(
            "is {bytes} bytes, backup.json says {}: it was changed or damaged",
            record.bytes
        ))
    } else if got != record.sha256 {
        Some(format!(
            "its sha256 is {got}, backup.json says {}: it was changed or damaged",
            record.sha256
        ))
    } else {
        match listed {
            Some(listed) if *listed != got => Some(format!(
                "its sha256 is {got}, {SUMS_FILE} says {listed}: it was changed or damaged"
            )),
            _ => None,
        }
    }
}

/// The report of a set whose archive could not be opened (the problem is already found).
fn unreadable_set(backup: &DriveBackup, set: &str) -> SetReport {
    let archive = backup.set(set).map_or_else(
        || super::drive::archive_name(set, false),
        |s| s.archive.clone(),
    );
    SetReport::new(set, backup.dir.path.join(archive).display().to_string())
}

/// Reads one set's archive once, end to end: against its index (or through, without one), decrypted when it is
/// encrypted and `keys` open it (else its files are only hashed), trailing bytes after an encrypted archive's final
/// chunk refused; then its file hashes against the sums and `backup.json`. Gives the set's report and what a
/// restore would write of it.
fn verify_set(
    backup: &DriveBackup,
    set: &str,
    (archive, index, deep): (&ArchiveFiles, Option<&ArchiveFiles>, bool),
    would: Would,
    sums: Option<&Sums>,
    found: &mut Findings,
    bar: &mut dyn FnMut(u64),
) -> (SetReport, Vec<WouldRestore>) {
    let problems = &mut found.problems;
    let label = archive.label();
    let single = archive.parts.len() == 1;
    let mut watch = Watch {
        would,
        refused: None,
        bar,
    };
    let encrypted = archive.encrypted();
    // Without an identity an encrypted archive's plaintext cannot be read: its files are hashed only.
    let decrypt = archive.keys.as_ref().filter(|k| encrypted && !k.is_empty());
    // The archive's file hashes come from the parts as they are read, except for a single plain indexed
    // archive, whose tar stream hash (checked against the index) is its file hash.
    let mut parts = PartHasher::new(archive, encrypted || !single || index.is_none());
    let mut report = SetReport {
        indexed: index.is_some(),
        encrypted,
        content_checked: !encrypted || decrypt.is_some(),
        ..SetReport::new(set, label.clone())
    };
    let mut stream_hash = None;
    let before = problems.len();
    // Its files hashed only, as they are read (the rest of them, after a header the keys did not open).
    let hash_only =
        |parts: &mut PartHasher, bar: &mut dyn FnMut(u64), problems: &mut Vec<Issue>| {
            let mut counted = CountingRead { inner: parts, bar };
            if let Err(e) = io::copy(&mut counted, &mut io::sink()) {
                problems.push(issue(
                    Path::new(&label),
                    None,
                    format!("cannot be read: {e}"),
                ));
            }
        };
    if encrypted && decrypt.is_none() {
        hash_only(&mut parts, &mut *watch.bar, problems);
    } else {
        let not_opened = match plaintext(decrypt, &mut parts, &label) {
            Err(e) if e.is_key_problem() => Some(e.to_string()),
            Err(e) => {
                problems.push(issue(Path::new(&label), None, e.to_string()));
                None
            }
            Ok(plain) => {
                let mut chain = ChainCheck::new(backup, set, archive, deep);
                check_stream(
                    &label,
                    plain,
                    (index, &mut chain),
                    &mut watch,
                    &mut report,
                    &mut stream_hash,
                    problems,
                );
                report.referenced_files = chain.files;
                report.referenced_bytes = chain.bytes;
                None
            }
        };
        // Keys that do not open it say nothing about the archive: it is checked as without them.
        if let Some(why) = not_opened {
            report.content_checked = false;
            report.not_decrypted = Some(why);
            hash_only(&mut parts, &mut *watch.bar, problems);
        }
        // Everything after the final chunk is read too: trailing bytes are damage.
        if encrypted && report.content_checked && problems.len() == before {
            match io::copy(&mut parts, &mut io::sink()) {
                Ok(0) => {}
                Ok(n) => problems.push(issue(
                    Path::new(&label),
                    None,
                    format!("{n} bytes follow the encrypted archive's final chunk: it was altered or damaged"),
                )),
                Err(e) => problems.push(issue(
                    Path::new(&label),
                    None,
                    format!("cannot be read: {e}"),
                )),
            }
        }
    }
    if let Some((entry, why)) = watch.refused.take() {
        problems.push(Issue {
            file: label.clone(),
            entry: Some(entry),
            message: format!("a restore would refuse it: {why}"),
        });
    }
    if !report.content_checked {
        watch.would.items.clear();
    }
    // The archive's file hashes against the sums file (and backup.json).
    if problems.len() == before {
        let hashes: Vec<(PathBuf, u64, Option<Digest>)> = if single && index.is_some() && !encrypted
        {
            let (p, len) = archive.parts[0].clone();
            vec![(
                p,
                len,
                stream_hash.filter(|(b, _)| *b == len).map(|(_, h)| h),
            )]
        } else {
            parts.done.clone()
        };
        check_file_hashes(backup, set, sums, hashes, found);
    }
    report.ok = found.problems.len() == before;
    (report, watch.would.items)
}

/// The archives of the same set in the backups an incremental's manifest points into, each opened once: present,
/// listed in that backup's own `verification.sha256`, and holding every referenced entry under the header its line
/// describes (name, type, size, mode, owner, mtime, data offset); with `deep`, every byte of its content too (read
/// and hashed against its line: a byte changed in an earlier archive is caught only so, since the plain check reads
/// headers and the earlier backup's own files are hashed only by verifying that backup).
struct ChainCheck {
    backups_dir: PathBuf,
    /// The set's archive name (the same in every backup of a chain: same set, same encryption).
    name: String,
    keys: Option<Arc<Keys>>,
    opened: std::collections::HashMap<String, Result<archive::ArchiveReader, String>>,
    deep: bool,
    /// Referenced files checked, and the content bytes read for them (`deep`).
    files: u64,
    bytes: u64,
}

impl ChainCheck {
    fn new(backup: &DriveBackup, set: &str, archive: &ArchiveFiles, deep: bool) -> ChainCheck {
        let dir = &backup.dir.path;
        ChainCheck {
            backups_dir: dir.parent().unwrap_or(dir).to_path_buf(),
            name: backup
                .sets
                .iter()
                .find(|s| s.name == set)
                .map(|s| s.archive.clone())
                .unwrap_or_default(),
            keys: archive.keys.clone(),
            opened: Default::default(),
            deep,
            files: 0,
            bytes: 0,
        }
    }

    fn open(&self, stamp: &str) -> Result<archive::ArchiveReader, String> {
        // A stamp the index reader checked (`IndexHeader::check`): a plain name.
        let dir = self.backups_dir.join(stamp);
        let lacks = |why: &str| format!("backup {stamp}'s {} {why}", self.name);
        if let Err(e) = super::drive::chain_dir(&self.backups_dir, stamp) {
            return Err(format!("backup {stamp} cannot be used: {e}"));
        }
        match Sums::read(&dir).1 {
            Ok(Some(sums)) if sums.listed(self.name.as_bytes()).is_some() => {}
            Ok(Some(_)) => return Err(lacks(&format!("is not listed in its {SUMS_FILE}"))),
            Ok(None) => return Err(format!("backup {stamp} is missing (or has no {SUMS_FILE})")),
            Err(e) => return Err(format!("backup {stamp}'s {SUMS_FILE} cannot be used: {e}")),
        }
        let files = ArchiveFiles::discover(&dir, &self.name)
            .map_err(|e| lacks(&format!("cannot be read: {e}")))?
            .with_keys(self.keys.clone());
        files
            .open()
            .map_err(|e| lacks(&format!("cannot be read: {e}")))
    }

    fn check(&mut self, e: &IndexEntry) -> Result<(), String> {
        let stamp = e.stored_in.as_deref().unwrap_or_default().to_string();
        if !self.opened.contains_key(&stamp) {
            let r = self.open(&stamp);
            self.opened.insert(stamp.clone(), r);
        }
        self.files += 1;
        let deep = self.deep;
        let opened = self.opened.get_mut(&stamp).expect("inserted above");
        let result = match opened {
            Err(why) => return Err(why.clone()),
            Ok(r) => super::content::entry_header_matches(r, e).and_then(|()| {
                if deep {
                    super::content::entry_content_matches(r, e)
                } else {
                    Ok(0)
                }
            }),
        };
        match result {
            Ok(n) => {
                self.bytes = self.bytes.saturating_add(n);
                Ok(())
            }
            Err(why) => {
                // age's reader is not to be trusted after a chunk that failed: the next entry reopens it.
                self.opened.remove(&stamp);
                Err(format!("in backup {stamp}'s {}: {why}", self.name))
            }
        }
    }
}

/// A reader that tells `bar` how many bytes went through it.
struct CountingRead<'a, R: Read> {
    inner: R,
    bar: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.bar)(n as u64);
        Ok(n)
    }
}

/// Reads one archive's plaintext `plain` through: against its index (every entry), or without one (its structure).
fn check_stream(
    label: &str,
    plain: Box<dyn Read + '_>,
    (index, chain): (Option<&ArchiveFiles>, &mut ChainCheck),
    watch: &mut Watch<'_>,
    report: &mut SetReport,
    stream_hash: &mut Option<(u64, Digest)>,
    problems: &mut Vec<Issue>,
) {
    let issue = |file: &Path, message: String| Issue {
        file: file.display().to_string(),
        entry: None,
        message,
    };
    let mut plain = plain;
    match index {
        Some(index) => {
            // A first read of the index: the names hard links point to, so that each hard link is checked
            // against the file the archive links it to.
            let links = index
                .open()
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|r| {
                    HardLinkTargets::read(io::BufReader::with_capacity(1 << 20, r))
                        .map_err(|e| e.to_string())
                });
            let opened = links.and_then(|links| {
                index
                    .open()
                    .map(|r| (links, io::BufReader::with_capacity(1 << 20, r)))
                    .map_err(|e| format!("cannot be read: {e}"))
            });
            match opened {
                Err(e) => problems.push(issue(Path::new(&index.label()), e)),
                Ok((links, ir)) => {
                    let mut referenced = |e: &IndexEntry| chain.check(e);
                    match verify_archive_in_chain(
                        label,
                        &mut plain,
                        ir,
                        &links,
                        &mut referenced,
                        &mut *watch,
                    ) {
                        Ok(r) => {
                            report.entries = r.entries;
                            report.files = r.files;
                            report.bytes = r.file_bytes;
                            *stream_hash = Some((r.tar_bytes, r.tar_sha256));
                        }
                        Err(e) => problems.push(Issue {
                            file: e.archive.clone(),
                            entry: e.entry.clone().map(|en| match e.offset {
                                Some(o) => format!("{en} (offset {o})"),
                                None => en,
                            }),
                            message: e.problem.to_string(),
                        }),
                    }
                }
            }
        }
        None => match scan_archive(&mut plain, watch) {
            Ok((n, f, b)) => {
                report.entries = n;
                report.files = f;
                report.bytes = b;
            }
            Err((entry, e)) => problems.push(Issue {
                file: label.to_string(),
                entry,
                message: e,
            }),
        },
    }
}

/// Compares an archive's file hashes with the sums file and `backup.json`.
fn check_file_hashes(
    backup: &DriveBackup,
    set: &str,
    sums: Option<&Sums>,
    hashes: Vec<(PathBuf, u64, Option<Digest>)>,
    found: &mut Findings,
) {
    let record = backup
        .set(set)
        .map(|s| s.records.clone())
        .unwrap_or_default();
    for (path, _, got) in hashes {
        let name = file_name(&path);
        let Some(got) = got else {
            found.problems.push(issue(
                &path,
                None,
                "its sha256 could not be computed".into(),
            ));
            continue;
        };
        if let Some(sums) = sums
            && let Some(want) = sums.listed(&name)
        {
            found.sums_checked += 1;
            if *want != got {
                found.sums_ok = false;
                found.problems.push(issue(
                    &path,
                    None,
                    format!("its sha256 is {got}, {SUMS_FILE} says {want}: the archive was changed or damaged"),
                ));
            }
        }
        let shown = String::from_utf8_lossy(&name).into_owned();
        if let Some(r) = record.iter().find(|r| r.name == shown)
            && r.sha256 != got
        {
            found.problems.push(issue(
                &path,
                None,
                format!(
                    "its sha256 is {got}, {} says {}: the archive was changed or damaged",
                    super::drive::METADATA_FILE,
                    r.sha256
                ),
            ));
        }
    }
}

fn scope_names(scope: &[Scope], set: &str) -> Vec<RelPath> {
    if scope.is_empty() {
        return vec![RelPath::root()];
    }
    scope
        .iter()
        .filter(|s| s.set == set)
        .flat_map(|s| s.names.iter().cloned())
        .collect()
}

/// Reads a tar stream without an index through to its end, as GNU tar reads it ([`Scanner`]): every header
/// parses, every file's content is all there. Returns entries, files and content bytes, or the entry at fault and
/// the problem.
fn scan_archive(
    reader: &mut dyn Read,
    watch: &mut Watch<'_>,
) -> Result<(u64, u64, u64), (Option<String>, String)> {
    let mut scanner = Scanner::new(io::BufReader::with_capacity(1 << 20, reader));
    let mut owners = Owners::numeric();
    let (mut n, mut f, mut b) = (0u64, 0u64, 0u64);
    let mut last: Option<String> = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let m = match scanner.next_member() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                return Err((
                    last.clone().map(|l| format!("after {l}")),
                    format!("the archive is damaged or truncated here: {e}"),
                ));
            }
        };
        let e = m.entry(&mut owners);
        last = Some(e.display_name());
        if watch.refused.is_none()
            && let Some(why) = refusal(&e.name, e.kind)
        {
            watch.refused = Some((e.display_name(), why));
        }
        let size = m.data_len;
        let mut got = 0u64;
        let mut content = scanner.content();
        loop {
            let k = content
                .read(&mut buf)
                .map_err(|err| (last.clone(), format!("cannot read its content: {err}")))?;
            if k == 0 {
                break;
            }
            got += k as u64;
            (watch.bar)(k as u64);
        }
        if got != size {
            return Err((
                last.clone(),
                format!(
                    "the archive ends after {got} of its {size} content bytes: it is truncated"
                ),
            ));
        }
        if let Ok(rel) = safety::check_name(&e.name, None) {
            watch.would.see(&rel, e.kind.word(), e.size);
        }
        n += 1;
        if e.kind == EntryKind::File {
            f += 1;
            b = b.saturating_add(size);
        }
    }
    let mut rest = scanner.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| (None, format!("cannot read its end: {e}")))?;
    Ok((n, f, b))
}

/// A drive backup's index by path: kind, size and sha256 of each entry.
/// Path -> (type, size, sha256, whether the sha256 is a sparse member's stored digest).
pub type IndexMap = HashMap<Vec<u8>, (EntryKind, u64, Option<Digest>, bool)>;

/// Reads a drive backup's index into an [`IndexMap`].
pub fn load_index(index: &ArchiveFiles) -> Result<IndexMap, String> {
    let r = index.open().map_err(|e| e.to_string())?;
    let mut reader =
        IndexReader::new(io::BufReader::with_capacity(1 << 20, r)).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    while let Some(e) = reader.next_entry().map_err(|e| e.to_string())? {
        let stored = e.sha256_is_stored();
        out.insert(e.path, (e.kind, e.size, e.sha256, stored));
    }
    Ok(out)
}

/// What verifying local snapshots needs besides them: the backup's stamp and location for the report, the drive
/// backups present (a snapshot is compared with the newest verified one made from it), the keys for an encrypted
/// index, and where to warn.
pub struct Local<'a> {
    pub stamp: String,
    pub location: PathBuf,
    pub on_drives: &'a [(&'a Drive, &'a DriveBackup)],
    pub ring: &'a KeyRing,
    pub ui: &'a Ui,
}

/// Verifies the chosen local snapshots ([`verify_snapshot`] each), within `scope` (everything when empty).
pub fn verify_snapshots(
    local: &Local<'_>,
    snapshots: &[Snapshot],
    scope: &[Scope],
    list: bool,
    bar: &mut dyn FnMut(u64),
) -> VerifyReport {
    let mut report = VerifyReport {
        source: Kept::Local,
        backup: local.stamp.clone(),
        location: local.location.clone(),
        sums: None,
        sets: Vec::new(),
        entries: 0,
        files: 0,
        bytes: 0,
        problems: Vec::new(),
        would_restore: Vec::new(),
        intact: false,
        content_checked: true,
        deep: false,
        warnings: Vec::new(),
    };
    for snap in snapshots {
        let index = index_made_from(local, snap);
        let names: Vec<RelPath> = if scope.is_empty() {
            vec![RelPath::root()]
        } else {
            scope
                .iter()
                .filter(|s| s.set == snap.set)
                .flat_map(|s| s.names.clone())
                .collect()
        };
        let (set, problems, would) = verify_snapshot(
            snap,
            index.as_ref().map(|(l, f)| (l.clone(), f)),
            &names,
            list,
            bar,
        );
        report.entries += set.entries;
        report.files += set.files;
        report.bytes += set.bytes;
        report.sets.push(set);
        report.problems.extend(problems);
        report.would_restore.extend(would);
    }
    report.intact = report.problems.is_empty();
    report
}

/// The index of the newest verified drive backup made from this very snapshot (with its label), when there is one
/// and it can be read (an encrypted one only with its keys).
fn index_made_from(local: &Local<'_>, snap: &Snapshot) -> Option<(String, ArchiveFiles)> {
    let (d, b, s) = local.on_drives.iter().rev().find_map(|(d, b)| {
        let s = b.set(&snap.set)?;
        (b.verified() && s.snapshot.as_deref() == Some(snap.name.as_str())).then_some((d, b, s))
    })?;
    let files = ArchiveFiles::discover(&b.dir.path, s.index.as_ref()?).ok()?;
    let label = format!("backup {} on {}", b.dir.name, d.name);
    if !files.encrypted() {
        return Some((label, files));
    }
    // An encrypted index is compared with only when it can be decrypted.
    let recorded = s.encryption.as_ref().is_some_and(|e| e.passphrase);
    let keys = match local
        .ring
        .keys_for(&d.name, &[&files], recorded, Ask::IfAvailable)
    {
        Ok(f) => f.keys.filter(|k| !k.is_empty()),
        Err(e) => {
            local.ui.warn(format_args!("{e}"));
            None
        }
    };
    if keys.is_none() {
        local.ui.warn(format_args!(
            "{label} was made from snapshot {} but is encrypted, and no identity was given: the snapshot is not \
             compared with it (pass --identity FILE)",
            snap.name
        ));
        return None;
    }
    Some((label, files.with_keys(keys)))
}

/// Verifies one local snapshot: complete, every file readable, and (with `index`, from the drive backup `with`) the
/// same files with the same content as that backup's index.
// Stays long: one walk of the snapshot checking each entry against the index in step (kinds, sizes, the sparse
// stored digest or the content hash); splitting it would pass the walk's state between pieces.
pub fn verify_snapshot(
    snap: &Snapshot,
    index: Option<(String, &ArchiveFiles)>,
    names: &[RelPath],
    list: bool,
    bar: &mut dyn FnMut(u64),
) -> (SetReport, Vec<Issue>, Vec<WouldRestore>) {
    let root = &snap.path;
    let mut problems = Vec::new();
    let at = |p: &Path, entry: Option<String>, message: String| Issue {
        file: p.display().to_string(),
        entry,
        message,
    };
    match &snap.metadata {
        None => problems.push(at(
            root,
            None,
            format!(
                "has no readable metadata ({}): it was not made by dbackup, or its run did not finish",
                snap.metadata_error.as_deref().unwrap_or("missing")
            ),
        )),
        Some(m) if !m.is_complete() => {
            let first = m
                .unreadable
                .first()
                .map(|p| format!(" (first: {})", crate::stdx::show_path(&p.path)))
                .unwrap_or_default();
            problems.push(at(
                root,
                None,
                format!(
                    "is incomplete: {} when it was collected{first}",
                    m.incompleteness()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut expected = match &index {
        Some((label, files)) => match load_index(files) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(at(
                    Path::new(label),
                    None,
                    format!("cannot read the drive backup's index: {e}"),
                ));
                None
            }
        },
        None => None,
    };
    let mut would = Would::new(&snap.set, names, list);
    let mut report = SetReport {
        indexed: expected.is_some(),
        compared_with: index.as_ref().map(|(l, _)| l.clone()),
        ..SetReport::new(&snap.set, root.display().to_string())
    };
    let content = SetContent::Snapshot { root: root.clone() };
    let mut buf = vec![0u8; 1 << 20];
    let walked = content.walk_entries(|e| {
        report.entries += 1;
        let shown = e.display_name();
        let path = root.join(std::ffi::OsStr::from_bytes(&e.name));
        let want = expected.as_mut().map(|m| m.remove(&e.name));
        if let Some(None) = want {
            problems.push(at(
                root,
                Some(shown.clone()),
                "is in the snapshot but not in the drive backup made from it: it was added since".into(),
            ));
        }
        // A hard link to a symlink (`rsync -H` keeps them) has no content to hash.
        let linked_symlink = e.kind == EntryKind::Hardlink
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if matches!(e.kind, EntryKind::File | EntryKind::Hardlink) && !linked_symlink {
            // A file the backup stored as a sparse member is hashed as it was stored (its map and data: the
            // holes are not read), the index's digest of it.
            let sparse_digest = matches!(want, Some(Some((_, _, _, true))));
            let hashed = (|| -> io::Result<(u64, Digest)> {
                let mut f = open_nofollow(&path)?;
                if sparse_digest {
                    let len = f.metadata()?.len();
                    let d = crate::archive::sparse::stored_digest_of(&f, len, &mut |n| bar(n))?;
                    // Not sparse any more: no digest can match the index's.
                    return Ok((len, d.unwrap_or(Digest([0; 32]))));
                }
                let (total, sum) = crate::stdx::sha256_reader(&mut f, &mut buf, &mut *bar)?;
                Ok((total, Digest(sum)))
            })();
            match hashed {
                Ok((len, got)) => {
                    report.files += 1;
                    report.bytes = report.bytes.saturating_add(len);
                    if let Some(Some((_, size, Some(sha), _))) = want
                        && (size != len || sha != got)
                    {
                        problems.push(at(
                            root,
                            Some(shown.clone()),
                            format!(
                                "differs from the drive backup made from it: {len} bytes with sha256 {got}, the \
                                 backup's index says {size} bytes with sha256 {sha}"
                            ),
                        ));
                    }
                }
                Err(err) => problems.push(at(root, Some(shown.clone()), format!("cannot be read: {err}"))),
            }
        }
        if let Ok(rel) = safety::check_name(&e.name, None) {
            would.see(&rel, e.kind.word(), e.size);
        }
        true
    });
    if let Err(e) = walked {
        problems.push(at(root, None, format!("cannot be walked: {e}")));
    }
    if let Some(left) = expected {
        let mut left: Vec<Vec<u8>> = left.into_keys().collect();
        left.sort();
        if let Some(first) = left.first() {
            problems.push(at(
                root,
                Some(super::engine::entry::show(first)),
                format!(
                    "is in the drive backup made from this snapshot but missing from the snapshot ({} missing)",
                    left.len()
                ),
            ));
        }
    }
    report.ok = problems.is_empty();
    (report, problems, would.items)
}

/// How much was read or would be written, in words: `3 entries, 2 files, 1.5 KiB`.
fn amount(entries: u64, files: u64, size: u64) -> String {
    use crate::stdx::{bytes, counted};
    format!(
        "{}, {}, {}",
        counted(entries, "entry", "entries"),
        counted(files, "file", "files"),
        bytes(size)
    )
}

/// The report for people: what was checked, what a restore would write, the problems, the verdict.
pub fn render(r: &VerifyReport, list: bool) -> String {
    use crate::stdx::{bytes, counted};
    use crate::stdx::{show_path, show_str};
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify {} backup {} at {}",
        r.source.word(),
        show_str(&r.backup),
        show_path(&r.location)
    );
    if let Some(s) = &r.sums {
        let state = if !s.present {
            "MISSING".to_string()
        } else if s.ok {
            format!("ok, {} matched", counted(s.checked, "file", "files"))
        } else {
            "DOES NOT MATCH".to_string()
        };
        let _ = writeln!(out, "  {SUMS_FILE}: {state}");
    }
    for s in &r.sets {
        let how = match (&s.compared_with, s.indexed, r.source) {
            _ if !s.content_checked => format!(
                "encrypted, and {}: its encrypted files checked against {SUMS_FILE}, its contents NOT checked",
                match s.not_decrypted {
                    Some(_) => "the keys given do not open it",
                    None => "no identity was given",
                }
            ),
            (None, true, _) if s.encrypted => {
                "decrypted, and every entry checked against its index".into()
            }
            (None, false, _) if s.encrypted => {
                "decrypted and read through; no index, so contents are checked by the sums only"
                    .into()
            }
            (Some(b), _, _) => format!("every file read and compared with {b}"),
            (None, _, Kept::Local) => {
                "every file read; no drive backup made from it is present to compare with".into()
            }
            (None, true, _) => "every entry checked against its index".into(),
            (None, false, _) => {
                "read through; no index, so contents are checked by the sums only".into()
            }
        };
        // A check that stopped at its first problem counted nothing: say that, not "0 entries ... DAMAGED".
        let stopped = !s.ok && s.entries == 0 && s.content_checked;
        if stopped {
            let _ = writeln!(
                out,
                "  {} ({}): DAMAGED: checked up to its first problem (below); the rest was not read",
                show_str(&s.checked),
                show_str(&s.set),
            );
        } else {
            let _ = writeln!(
                out,
                "  {} ({}): {}: {}; {how}",
                show_str(&s.checked),
                show_str(&s.set),
                amount(s.entries, s.files, s.bytes),
                if s.ok { "intact" } else { "DAMAGED" },
            );
        }
        if s.referenced_files > 0 {
            let _ = writeln!(
                out,
                "    {} kept in earlier backups: {}",
                counted(s.referenced_files, "file", "files"),
                if stopped {
                    "checked before the problem".to_string()
                } else if r.deep {
                    format!(
                        "every byte read and checked ({})",
                        bytes(s.referenced_bytes)
                    )
                } else {
                    "their headers there checked (--deep reads every byte)".to_string()
                }
            );
        }
    }
    let _ = writeln!(out, "  total: {}", amount(r.entries, r.files, r.bytes));
    if !r.would_restore.is_empty() {
        out.push_str("a restore would write:\n");
        for w in &r.would_restore {
            let _ = writeln!(
                out,
                "  {} ({}): {}",
                show_path(&w.path),
                show_str(&w.set),
                amount(w.entries, w.files, w.bytes)
            );
            if list {
                for e in &w.list {
                    let _ = writeln!(out, "    {:<8} {}", e.kind, show_path(&e.path));
                }
            }
        }
    }
    if r.problems.is_empty() && !r.content_checked {
        let why = match r.sets.iter().any(|s| s.not_decrypted.is_some()) {
            true => "the keys given do not open them: pass the identity they were encrypted to",
            false => "no identity: pass --identity FILE",
        };
        let _ = writeln!(
            out,
            "result: the encrypted files are intact; their contents were NOT checked ({why})"
        );
    } else if r.problems.is_empty() {
        out.push_str("result: intact\n");
    } else {
        out.push_str("problems:\n");
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
        let _ = writeln!(
            out,
            "result: NOT intact ({})",
            counted(r.problems.len() as u64, "problem", "problems")
        );
    }
    out
}

/// Tells the next external run what this `--verify` of a configured drive's backup found: a damaged backup is not
/// extended by an incremental (`external::damage`); one found whole, every set checked, is forgotten ([`remember`]).
pub(crate) fn remember_damage(
    settings: &crate::settings::Settings,
    destination: &str,
    backup: &DriveBackup,
    report: &VerifyReport,
    ui: &crate::ui::Ui,
) {
    if !settings.destinations.iter().any(|d| d.name == destination) {
        return;
    }
    let problem = match report.problems.first() {
        Some(first) if !report.intact => Some(first.to_string()),
        None if report.intact && report.content_checked && backup.excluded.is_empty() => None,
        _ => return,
    };
    remember(
        settings,
        (destination, &backup.dir.name),
        problem.as_deref(),
        ui,
    );
}

/// Notes in `damaged.json` what a `--verify` of backup `stamp` on `destination` (a drive's or a bucket's) found:
/// `problem` when damaged, `None` when found whole (which forgets an earlier record). A dry run notes nothing.
pub(crate) fn remember(
    settings: &crate::settings::Settings,
    (destination, stamp): (&str, &str),
    problem: Option<&str>,
    ui: &crate::ui::Ui,
) {
    if settings.output.dry_run {
        return;
    }
    let now = chrono::Local::now().fixed_offset();
    if let Err(e) = crate::external::damage::note(
        &settings.state_dir,
        &settings.backup_root,
        destination,
        stamp,
        problem,
        now,
    ) {
        let then = if problem.is_some() {
            "; the next external run cannot know this backup is damaged and may add an incremental to it: run \
             `dbackup external --full` to start a new chain"
        } else {
            ""
        };
        ui.warn(format_args!(
            "cannot note the result in {}: {e}{then}",
            settings
                .state_dir
                .join(crate::external::damage::FILE_NAME)
                .display()
        ));
    }
}
