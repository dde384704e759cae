//! Local plaintext copies of encrypted sets' indexes, under `<backup_root>/.index-copies/<destination>/<stamp>/`:
//! written beside the encrypted index while `external` writes it, read by the next `external` as the base manifest
//! of an encrypted chain (change detection), since backing up never reads an identity.
//!
//! ```text
//! <root>/.index-copies/                          0700
//! <root>/.index-copies/<destination>/            0700, one per drive or bucket (its name in the config)
//! <root>/.index-copies/<destination>/<stamp>/    0700, the backup the copies belong to
//!   <set>.index                                  0600, the index's plaintext (JSON lines, as in the archive)
//!   <set>.json                                   0600, a [`CopyRecord`]: the encrypted index it is a copy of
//! <root>/.index-copies/<destination>/.tmp-<stamp>-<pid>/   being written; renamed to <stamp> once the backup is
//!                                                          in place (a bucket's: its backup.json written),
//!                                                          removed otherwise
//! ```
//!
//! Nothing new leaks: the local snapshots beside it are plaintext already, and the copy is owner-only like them.
//! Nothing about it goes to the drive: the binding between a copy and the drive's backup lives here, in its
//! record (the encrypted index's name, size and sha256 as written, and the plaintext's size and sha256). A copy is
//! trusted only when its record matches what the drive's `backup.json` says of the base's encrypted index and the
//! copy hashes to its recorded plaintext digest ([`trusted`]); otherwise the next archive is a full, saying why.
//! Restore and verify never read a copy: they decrypt the drive's indexes with the identity.
//!
//! A copy is kept only while it can be a base: for the newest backup of its set on its destination ([`stale`]), and
//! only for destinations still in the config ([`orphaned`]).

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::DriveListing;
use crate::archive::FileRecord;
use crate::archive::{Digest, FileSink, Sink, WrittenFile};
use crate::stdx::fs::Dir;

/// The directory under the backup root.
pub const DIR: &str = ".index-copies";
const TMP_PREFIX: &str = ".tmp-";
const RECORD_FORMAT: u32 = 1;
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// What `<set>.json` says of the copy beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub format: u32,
    pub destination: String,
    pub stamp: String,
    pub set: String,
    /// The encrypted index on the drive, as `backup.json` records it.
    pub index: FileRecord,
    pub plain_bytes: u64,
    pub plain_sha256: Digest,
}

/// The copies of one backup being written: a temporary directory, promoted once the backup is in place.
pub struct Pending {
    parent: Dir,
    tmp_name: String,
    tmp: Dir,
    destination: String,
    stamp: String,
    promoted: bool,
}

fn create_dirs(root: &Path, destination: &str) -> io::Result<Dir> {
    let root = Dir::open(root).map_err(io::Error::other)?;
    let (top, _) = root.sub_or_create(DIR, 0o700).map_err(io::Error::other)?;
    let (dest, _) = top
        .sub_or_create(destination, 0o700)
        .map_err(io::Error::other)?;
    Ok(dest)
}

impl Pending {
    /// Starts the copies of backup `stamp` on `destination` (a config name: a safe file name).
    pub fn start(root: &Path, destination: &str, stamp: &str) -> io::Result<Pending> {
        let parent = create_dirs(root, destination)?;
        let tmp_name = format!("{TMP_PREFIX}{stamp}-{}", std::process::id());
        parent.remove_tree(&tmp_name).map_err(io::Error::other)?;
        let tmp = parent
            .create_sub(&tmp_name, 0o700)
            .map_err(io::Error::other)?;
        Ok(Pending {
            parent,
            tmp_name,
            tmp,
            destination: destination.to_string(),
            stamp: stamp.to_string(),
            promoted: false,
        })
    }

    /// [`Pending::start`], else `None` with a warning that without the copies the next `what` (backup, upload) of
    /// `destination` is full: nothing worse.
    pub fn start_or_warn(
        root: &Path,
        destination: &str,
        stamp: &str,
        what: &str,
        ui: &crate::ui::Ui,
    ) -> Option<Pending> {
        Pending::start(root, destination, stamp)
            .map_err(|e| {
                ui.warn(format_args!(
                    "{destination}: no local copy of the encrypted indexes can be kept ({e}): the next {what} is full"
                ))
            })
            .ok()
    }

    /// The sink of `set`'s copy for the archive writer, when there are copies (else an error the writer reports).
    pub fn sink_of(copies: Option<&Pending>, set: &str) -> io::Result<Box<dyn Sink>> {
        match copies {
            Some(c) => c.sink(set),
            None => Err(io::Error::other("no copy")),
        }
    }

    /// The sink of `set`'s copy (`<set>.index`, 0600), hashed as it is written.
    pub fn sink(&self, set: &str) -> io::Result<Box<dyn Sink>> {
        let sink = FileSink::create_in_with_mode(&self.tmp, format!("{set}.index"), 0o600)?;
        Ok(Box::new(sink))
    }

    /// Records what `set`'s copy is a copy of: `index`, the encrypted index as written to the drive.
    pub fn record(&self, set: &str, index: &FileRecord, plain: &WrittenFile) -> io::Result<()> {
        let rec = CopyRecord {
            format: RECORD_FORMAT,
            destination: self.destination.clone(),
            stamp: self.stamp.clone(),
            set: set.to_string(),
            index: index.clone(),
            plain_bytes: plain.bytes,
            plain_sha256: plain.sha256,
        };
        let mut f = self
            .tmp
            .create_file(format!("{set}.json"), 0o600)
            .map_err(io::Error::other)?;
        f.write_all(&serde_json::to_vec_pretty(&rec).map_err(io::Error::other)?)?;
        f.sync_all()
    }

    /// Renames the copies into place (`<stamp>`), once the backup is in place on the drive.
    pub fn promote(mut self) -> io::Result<()> {
        self.tmp.fsync().map_err(io::Error::other)?;
        match self.parent.rename(&self.tmp_name, &self.stamp, true) {
            Err(e) if e.is_exists() => self.join_existing()?,
            renamed => renamed.map_err(io::Error::other)?,
        }
        self.promoted = true;
        self.parent.fsync().map_err(io::Error::other)
    }

    /// `<stamp>/` is there already: another config sharing the backup root made a backup of the same second on a
    /// destination of this name, and its copies (of its own sets: a set is one config's) are in it. Ours go beside
    /// them, file by file, never over one; then the emptied temporary directory goes.
    fn join_existing(&self) -> io::Result<()> {
        let into = self.parent.sub(&self.stamp).map_err(io::Error::other)?;
        for (name, _) in self.tmp.entries().map_err(io::Error::other)? {
            self.tmp.rename_into(&name, &into, &name, true)?;
        }
        into.fsync().map_err(io::Error::other)?;
        self.parent
            .remove_tree(&self.tmp_name)
            .map_err(io::Error::other)
    }
}

impl Drop for Pending {
    /// Copies of a backup that was not promoted are never used: removed.
    fn drop(&mut self) {
        if !self.promoted {
            let _ = self.parent.remove_tree(&self.tmp_name);
        }
    }
}

/// A small JSON record of ours (an index copy's record, an upload journal): `name` in `dir` (as it was opened), read
/// up to `max` bytes and parsed; else why not, in words: `none` when the directory or the file is missing, else
/// "its {what}: ..." or "its {what} cannot be read: ...". With the directory, for what is read beside it.
pub(super) fn read_record<T: serde::de::DeserializeOwned>(
    dir: Result<Dir, crate::stdx::fs::FsError>,
    name: &str,
    max: u64,
    (what, none): (&str, &str),
) -> Result<(Dir, T), String> {
    let missing = |e: &crate::stdx::fs::FsError, other: String| {
        if e.is_not_found() {
            none.to_string()
        } else {
            other
        }
    };
    let dir = dir.map_err(|e| missing(&e, e.to_string()))?;
    let raw = dir
        .read_bounded(name, max)
        .map_err(|e| missing(&e, format!("its {what}: {e}")))?;
    let record =
        serde_json::from_slice(&raw).map_err(|e| format!("its {what} cannot be read: {e}"))?;
    Ok((dir, record))
}

/// The copy of `set`'s index of backup `stamp` on `destination`, when it can be trusted as a copy of `index` (the
/// drive's encrypted index, as its `backup.json` records it): its record names this backup and set and exactly that
/// encrypted index, and the copy hashes to the plaintext digest recorded. Otherwise why not (for the dry run).
pub fn trusted(
    root: &Path,
    destination: &str,
    stamp: &str,
    set: &str,
    index: &FileRecord,
) -> Result<PathBuf, String> {
    let dir = Dir::open(root)
        .and_then(|r| r.sub(DIR))
        .and_then(|d| d.sub(destination))
        .and_then(|d| d.sub(stamp));
    let (dir, rec): (Dir, CopyRecord) = read_record(
        dir,
        &format!("{set}.json"),
        MAX_RECORD_BYTES,
        ("record", "there is none"),
    )?;
    if rec.format != RECORD_FORMAT
        || rec.destination != destination
        || rec.stamp != stamp
        || rec.set != set
    {
        return Err("its record names another backup".into());
    }
    if &rec.index != index {
        return Err(format!(
            "it is a copy of another {} than the drive's",
            index.name
        ));
    }
    let name = format!("{set}.index");
    let mut f = dir.open_file(&name).map_err(|e| e.to_string())?;
    let (bytes, sha) = crate::stdx::sha256_reader(&mut f, &mut vec![0u8; 1 << 20], |_| {})
        .map_err(|e| format!("cannot be read: {e}"))?;
    if (bytes, Digest(sha)) != (rec.plain_bytes, rec.plain_sha256) {
        return Err("it was changed since it was written (size or sha256)".into());
    }
    Ok(dir.join(name))
}

/// Opens a copy [`trusted`] found, for reading (never through a symlink).
pub fn open(path: &Path) -> io::Result<Box<dyn io::BufRead>> {
    let f = open_file(path)?;
    Ok(Box::new(io::BufReader::with_capacity(1 << 16, f)) as Box<dyn io::BufRead>)
}

/// [`open`], as the file itself (a bucket's base manifest is kept open as a file: `external::cloud`).
pub fn open_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// The per-destination directories under `<root>/<top>` (`top`: [`DIR`], or the upload journals'
/// `external::resume::DIR`) whose destination is not in the config (`configured`): no backup can ever be based on
/// a copy there again, nor resume from a journal, so they go. Not one that `foreign` says holds a set of another
/// config sharing the backup root (the root's layout keeps configs apart by their set names): that is not ours.
pub fn orphaned(
    root: &Path,
    top: &str,
    configured: &[&str],
    foreign: impl Fn(&str) -> bool,
) -> Vec<String> {
    let Ok(dir) = Dir::open(root).and_then(|r| r.sub(top)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .entries()
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .filter(|n| !configured.contains(&n.as_str()) && !foreign(n))
        .collect();
    out.sort();
    out
}

/// Removes the directories [`orphaned`] found under `<root>/<top>`; the ones that could not be removed, with why.
pub fn remove_orphaned(root: &Path, top: &str, names: &[String]) -> Vec<String> {
    let dir = match Dir::open(root).and_then(|r| r.sub(top)) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Vec::new(),
        Err(e) => return vec![e.to_string()],
    };
    let failed = names
        .iter()
        .filter_map(|n| {
            dir.remove_tree(n)
                .err()
                .map(|e| format!("{}: {e}", shown(n)))
        })
        .collect();
    let _ = dir.fsync();
    failed
}

/// The copies kept for `destination` (`<stamp>/<set>`) of the config's sets (`own`), and leftovers of interrupted
/// runs (`.tmp-...`). Copies of other sets are another config's that shares the backup root: never listed, so never
/// judged stale nor removed.
pub fn list(root: &Path, destination: &str, own: &[String]) -> Vec<String> {
    list_all(root, destination)
        .into_iter()
        .filter(|c| {
            c.split_once('/')
                .is_none_or(|(_, set)| own.iter().any(|o| o == set))
        })
        .collect()
}

/// Whether `destination`'s copies include one of a set that is not the config's (`own`): see [`list`].
pub fn foreign(root: &Path, destination: &str, own: &[String]) -> bool {
    list_all(root, destination).iter().any(|c| {
        c.split_once('/')
            .is_some_and(|(_, set)| !own.iter().any(|o| o == set))
    })
}

/// [`list`], whatever the set.
fn list_all(root: &Path, destination: &str) -> Vec<String> {
    let Ok(dir) = Dir::open(root)
        .and_then(|r| r.sub(DIR))
        .and_then(|d| d.sub(destination))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, _) in dir.entries().unwrap_or_default() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            out.push(name);
            continue;
        }
        let Ok(sub) = dir.sub(&name) else {
            out.push(name);
            continue;
        };
        let mut sets: Vec<String> = sub
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, _)| {
                let n = n.as_bytes();
                n.strip_suffix(b".index")
                    .or_else(|| n.strip_suffix(b".json"))
                    .map(|s| String::from_utf8_lossy(s).into_owned())
            })
            .collect();
        sets.sort();
        sets.dedup();
        if sets.is_empty() {
            out.push(name);
            continue;
        }
        out.extend(sets.into_iter().map(|s| format!("{name}/{s}")));
    }
    out.sort();
    out
}

/// Of `copies` ([`list`]), those no backup can use as its base any more: a copy is kept only for the newest backup
/// of its set on the destination (`listing`, after this run), unless this run writes a newer one of the set
/// (`written`), which supersedes it. Leftovers of interrupted runs are stale too.
pub fn stale(copies: &[String], listing: &DriveListing, written: &[String]) -> Vec<String> {
    copies
        .iter()
        .filter(|c| {
            let Some((stamp, set)) = c.split_once('/') else {
                return true;
            };
            if written.iter().any(|w| w == set) {
                return true;
            }
            let newest = listing.backups.iter().rev().find(|b| {
                b.meta
                    .as_ref()
                    .is_some_and(|m| m.sets.iter().any(|s| s.set == set))
            });
            newest.is_none_or(|b| b.name != stamp)
        })
        .cloned()
        .collect()
}

/// Removes `stale` copies ([`stale`]) of `destination`; the ones that could not be removed, with why.
pub fn remove(root: &Path, destination: &str, stale: &[String]) -> Vec<String> {
    let dir = match Dir::open(root)
        .and_then(|r| r.sub(DIR))
        .and_then(|d| d.sub(destination))
    {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Vec::new(),
        Err(e) => return vec![e.to_string()],
    };
    let mut failed = Vec::new();
    for c in stale {
        let r = match c.split_once('/') {
            None => dir.remove_tree(c),
            Some((stamp, set)) => dir.sub(stamp).and_then(|sub| {
                for n in [format!("{set}.index"), format!("{set}.json")] {
                    if sub.stat(&n)?.is_some() {
                        sub.unlink(&n)?;
                    }
                }
                if sub.entries()?.is_empty() {
                    dir.remove_tree(stamp)?;
                }
                Ok(())
            }),
        };
        if let Err(e) = r {
            failed.push(format!("{c}: {e}"));
        }
    }
    let _ = dir.fsync();
    failed
}

/// Whether the local plaintext copy of `set`'s index in backup `base` is here and matches the encrypted index the
/// destination's `backup.json` records ([`trusted`]): its path, else why not. Drives and buckets alike.
pub fn base_copy(
    root: &std::path::Path,
    destination: &str,
    listing: &DriveListing,
    base: &str,
    set: &str,
) -> Result<std::path::PathBuf, String> {
    let rec = listing
        .set_record(base, set)
        .ok_or_else(|| format!("backup {base} holds no set {set}"))?;
    let [index] = rec.index.as_slice() else {
        return Err("the base's index is in parts".into());
    };
    trusted(root, destination, base, set, index)
}

/// Reads a whole copy (tests).
#[cfg(test)]
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// The dry run's lines on the copies a destination's plan keeps (`dir`: where this run's go) and removes, drives and
/// buckets alike.
pub fn render(dir: Option<&Path>, removed: &[String], out: &mut String) {
    use std::fmt::Write as _;
    if let Some(dir) = dir {
        let _ = writeln!(
            out,
            "  index     a plaintext copy of each index in {} (owner-only; the next incremental's base)",
            dir.display()
        );
    }
    for c in removed {
        let _ = writeln!(
            out,
            "  remove    local index copy {} (no longer a base)",
            shown(c)
        );
    }
}

/// A name from a copy's listing, for messages.
pub fn shown(name: &str) -> String {
    crate::stdx::show(OsStr::new(name).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, b: u8) -> FileRecord {
        FileRecord {
            name: name.into(),
            bytes: 10,
            sha256: Digest([b; 32]),
            age_head: None,
        }
    }

    /// A copy written, recorded and promoted is trusted for exactly the encrypted index it was recorded with; a
    /// changed byte, another index or a missing record is not (and says why).
    #[test]
    fn a_copy_is_trusted_only_for_its_own_index_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let p = Pending::start(root, "T9", "2026-12-01-031500").unwrap();
        let mut s = p.sink("data").unwrap();
        s.write_all(b"{\"index\":2}\n").unwrap();
        let w = s.finish().unwrap().pop().unwrap();
        let enc = file("data.index.age", 1);
        p.record("data", &enc, &w).unwrap();
        p.promote().unwrap();
        let dir = root.join(DIR).join("T9");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join(DIR)), 0o700);
        assert_eq!(mode(&dir.join("2026-12-01-031500")), 0o700);
        assert_eq!(mode(&dir.join("2026-12-01-031500/data.index")), 0o600);
        assert_eq!(mode(&dir.join("2026-12-01-031500/data.json")), 0o600);

        let path = trusted(root, "T9", "2026-12-01-031500", "data", &enc).unwrap();
        assert_eq!(read(&path).unwrap(), b"{\"index\":2}\n");
        let other = file("data.index.age", 2);
        assert!(
            trusted(root, "T9", "2026-12-01-031500", "data", &other)
                .unwrap_err()
                .contains("another data.index.age")
        );
        assert_eq!(
            trusted(root, "T9", "2026-12-02-031500", "data", &enc).unwrap_err(),
            "there is none"
        );
        std::fs::write(&path, b"{\"index\":3}\n").unwrap();
        assert!(
            trusted(root, "T9", "2026-12-01-031500", "data", &enc)
                .unwrap_err()
                .contains("changed since")
        );
        let own = ["data".to_string()];
        assert_eq!(
            list(root, "T9", &own),
            vec!["2026-12-01-031500/data".to_string()]
        );
        // Another config's sets are neither listed nor ours to remove the directory of.
        assert!(list(root, "T9", &["docs".to_string()]).is_empty());
        assert!(foreign(root, "T9", &["docs".to_string()]) && !foreign(root, "T9", &own));
        assert!(remove(root, "T9", &list(root, "T9", &own)).is_empty());
        assert!(list(root, "T9", &own).is_empty());
        assert!(!dir.join("2026-12-01-031500").exists());
    }

    /// Only the copy of each set's newest backup on the destination stays: older ones, ones whose backup is gone, one
    /// superseded by the set this run writes, leftovers and empty directories go.
    #[test]
    fn stale_copies_are_all_but_each_sets_newest() {
        use crate::external::layout::tests::meta;
        use crate::external::layout::{DriveBackup, DriveListing};
        let backup = |stamp: &str, sets: &[&str]| DriveBackup {
            name: stamp.to_string(),
            time: crate::snapshot::parse_stamp(stamp).unwrap(),
            path: format!("/d/backups/{stamp}").into(),
            meta: Some(meta(stamp, sets)),
            meta_error: None,
        };
        let (d1, d2, d3) = (
            "2026-12-01-031500",
            "2026-12-02-031500",
            "2026-12-03-031500",
        );
        let listing = DriveListing {
            exists: true,
            backups: vec![
                backup(d1, &["data", "config"]),
                backup(d2, &["data"]),
                backup(d3, &["photos"]),
            ],
            ..Default::default()
        };
        let copies: Vec<String> = [
            format!("{d1}/config"),
            format!("{d1}/data"),
            format!("{d2}/data"),
            format!("{d3}/photos"),
            "2026-11-30-031500/data".into(),
            ".tmp-2026-12-04-031500-77".into(),
            "2026-12-05-031500".into(),
        ]
        .into();
        assert_eq!(
            stale(&copies, &listing, &[]),
            vec![
                format!("{d1}/data"),
                "2026-11-30-031500/data".to_string(),
                ".tmp-2026-12-04-031500-77".to_string(),
                "2026-12-05-031500".to_string(),
            ]
        );
        assert_eq!(
            stale(&copies, &listing, &["photos".into()]),
            vec![
                format!("{d1}/data"),
                format!("{d3}/photos"),
                "2026-11-30-031500/data".to_string(),
                ".tmp-2026-12-04-031500-77".to_string(),
                "2026-12-05-031500".to_string(),
            ]
        );
    }

    /// Two configs sharing a backup root, each with a destination of this name, back up in the same second: the
    /// second's copies (of its own sets) go beside the first's in `<stamp>/`, and both stay. Before, the second's
    /// rename onto `<stamp>` was refused and its copies dropped (its next encrypted backup a full).
    #[test]
    fn copies_of_another_configs_backup_of_the_same_second_are_joined_not_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        for set in ["data", "notes"] {
            let p = Pending::start(tmp.path(), "T9", "2026-12-01-031500").unwrap();
            p.sink(set).unwrap().finish().unwrap();
            p.promote().unwrap();
        }
        assert_eq!(
            list(tmp.path(), "T9", &["data".into(), "notes".into()]),
            ["2026-12-01-031500/data", "2026-12-01-031500/notes"]
        );
    }

    /// A copy of a set whose copy is in `<stamp>/` already is refused, not written over it, and the one there stays.
    #[test]
    fn a_second_copy_of_the_same_set_and_second_is_refused_not_written_over() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |text: &[u8], other: &str| {
            let p = Pending::start(tmp.path(), "T9", "2026-12-01-031500").unwrap();
            for set in ["data", other] {
                let mut sink = p.sink(set).unwrap();
                sink.write_all(text).unwrap();
                sink.finish().unwrap();
            }
            p.promote()
        };
        write(b"first", "notes").unwrap();
        let e = write(b"second", "more").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        let dir = tmp.path().join(DIR).join("T9/2026-12-01-031500");
        assert_eq!(std::fs::read(dir.join("data.index")).unwrap(), b"first");
        assert!(
            list(tmp.path(), "T9", &[])
                .iter()
                .all(|c| !c.starts_with(TMP_PREFIX))
        );
    }

    /// Copies of a backup that was never promoted are removed.
    #[test]
    fn an_unpromoted_copy_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let p = Pending::start(tmp.path(), "T9", "2026-12-01-031500").unwrap();
            let s = p.sink("data").unwrap();
            s.finish().unwrap();
        }
        assert!(list(tmp.path(), "T9", &[]).is_empty());
    }
}
