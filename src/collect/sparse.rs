//! Sparse files copied before rsync runs: a pre-pass that makes collect's time follow a sparse file's data, not its
//! size.
//!
//! rsync `--sparse` writes holes, but it reads every byte of the source, holes included (a 10 GiB VM disk with
//! 100 MiB of data is a 10 GiB read). So before rsync, each regular file of the sources that is mostly holes
//! ([`is_sparse_enough`]: fewer than half its bytes allocated and at least [`MIN_HOLES`] of holes), has one name
//! (`-H` links the others), is not possibly excluded ([`possibly_excluded`], conservative) and is not unchanged
//! against a snapshot rsync may link to (same size and mtime there: rsync hard-links it) is copied into the
//! in-progress snapshot with `SEEK_DATA`/`SEEK_HOLE`: only its data is read, all-zero blocks become holes as
//! `--sparse` makes them, and it gets the source's size and mtime (to the nanosecond). rsync's quick check then
//! finds it up to date and only sets its owner, mode, xattrs and ACLs, as for any unchanged file.
//!
//! The pre-pass runs only where rsync alone would give the same file: `--sparse` in rsync's arguments, no `--full`
//! (`--checksum` compares contents anyway), and a set without `rsync_args` (they may filter, or change what the
//! quick check compares). Each copy is written under a temporary name in the in-progress snapshot (which is itself
//! renamed into place only after rsync succeeded) and renamed to its name once complete; a source that changes while
//! copied, or any error, leaves the file to rsync.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::sparse;

/// Holes a file must have, at least, to be copied by the pre-pass.
pub const MIN_HOLES: u64 = 1 << 20;
/// The granularity at which all-zero data becomes a hole in the copy (a filesystem block).
const ZERO_BLOCK: usize = 4096;

/// A file of the sources, observed: sparse enough, with one name, and where it lands in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The source file (absolute).
    pub source: PathBuf,
    /// Its path inside the snapshot (relative: `--relative` keeps the absolute path).
    pub in_snapshot: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Bytes allocated (`st_blocks * 512`).
    pub allocated: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// A snapshot rsync may link against holds it with the same size and mtime: rsync hard-links it.
    pub unchanged_in_basis: bool,
}

/// One file the pre-pass copies (what the plan says and `--dry-run` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreCopy {
    pub source: PathBuf,
    /// Relative to the in-progress snapshot.
    pub in_snapshot: PathBuf,
    pub size: u64,
    pub allocated: u64,
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// Whether a file is worth the pre-pass, from its metadata: a regular file with fewer than half its bytes allocated
/// and at least [`MIN_HOLES`] of holes.
pub fn is_sparse_enough(size: u64, allocated: u64) -> bool {
    allocated < size / 2 && size.saturating_sub(allocated) >= MIN_HOLES
}

/// Whether a rule of the set's filter (an rsync pattern; `!` marks an include, which is ignored here) could exclude
/// `path` or one of its directories. Conservative: true as soon as every literal piece of an exclude rule occurs in
/// the path (a rule made only of wildcards excludes everything), so a file it says false for is certainly copied by
/// rsync. A directory it says true for may be left unwalked: the test holds for every path below it too.
pub fn possibly_excluded(rules: &[String], path: &[u8]) -> bool {
    rules.iter().filter(|r| !r.starts_with('!')).any(|r| {
        r.as_bytes()
            .split(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'/'))
            .filter(|piece| !piece.is_empty())
            .all(|piece| path.windows(piece.len()).any(|w| w == piece))
    })
}

/// The plan's pre-copies (pure): the candidates that are not unchanged in a basis and not possibly excluded, when
/// the set allows the pre-pass at all (`eligible`: see the module's docs).
pub fn plan(candidates: &[Candidate], rules: &[String], eligible: bool) -> Vec<PreCopy> {
    if !eligible {
        return Vec::new();
    }
    candidates
        .iter()
        .filter(|c| !c.unchanged_in_basis)
        .filter(|c| !possibly_excluded(rules, c.source.as_os_str().as_bytes()))
        .map(|c| PreCopy {
            source: c.source.clone(),
            in_snapshot: c.in_snapshot.clone(),
            size: c.size,
            allocated: c.allocated,
            dev: c.dev,
            ino: c.ino,
            mtime: c.mtime,
            mtime_nsec: c.mtime_nsec,
        })
        .collect()
}

/// Walks the present sources (`(resolved source, its path in the snapshot)`) for candidates, without following
/// symlinks and without entering a directory `rules` may exclude; `basis` are the snapshot directories rsync may
/// link against (each file is looked up there by its path in the snapshot). Reads metadata only.
pub fn find(sources: &[(PathBuf, PathBuf)], rules: &[String], basis: &[PathBuf]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (source, in_snapshot) in sources {
        let walk = walkdir::WalkDir::new(source)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                !(e.file_type().is_dir()
                    && possibly_excluded(rules, e.path().as_os_str().as_bytes()))
            });
        for entry in walk.flatten() {
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            let allocated = m.blocks().saturating_mul(512);
            if m.nlink() != 1 || !is_sparse_enough(m.size(), allocated) {
                continue;
            }
            let rel = match entry.path().strip_prefix(source) {
                Ok(r) if r.as_os_str().is_empty() => in_snapshot.clone(),
                Ok(r) => in_snapshot.join(r),
                Err(_) => continue,
            };
            let unchanged_in_basis = basis.iter().any(|b| {
                fs::symlink_metadata(b.join(&rel)).is_ok_and(|o| {
                    o.is_file()
                        && o.size() == m.size()
                        && o.mtime() == m.mtime()
                        && o.mtime_nsec() == m.mtime_nsec()
                })
            });
            out.push(Candidate {
                source: entry.path().to_path_buf(),
                in_snapshot: rel,
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                allocated,
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
                unchanged_in_basis,
            });
        }
    }
    out
}

/// What the pre-pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    /// Their sizes (what rsync then counts as not transferred).
    pub size: u64,
    /// Data bytes read.
    pub data: u64,
    /// Files left to rsync, each with why.
    pub left: Vec<(PathBuf, String)>,
}

/// Copies each planned file into `dest` (the in-progress snapshot, which exists and is empty of them). A file
/// that changed since it was observed, or that cannot be copied, is left to rsync (and said why). An interruption
/// stops between blocks (the temporary file is removed, nothing is renamed) and ends the pass: the caller checks
/// [`crate::interrupt`] next.
pub fn copy_all(plan: &[PreCopy], dest: &Path) -> Copied {
    let mut done = Copied::default();
    for pc in plan {
        if crate::interrupt::requested().is_some() {
            break;
        }
        match copy_one(pc, dest) {
            Ok(Ok(data)) => {
                done.files += 1;
                done.size += pc.size;
                done.data += data;
            }
            Ok(Err(why)) => done.left.push((pc.source.clone(), why)),
            Err(e) => done.left.push((pc.source.clone(), e.to_string())),
        }
    }
    done
}

/// Whether a file's metadata is still what the plan observed.
fn same_file(m: &fs::Metadata, pc: &PreCopy) -> bool {
    m.is_file()
        && (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
            == (pc.dev, pc.ino, pc.size, pc.mtime, pc.mtime_nsec)
}

/// One file: `Ok(Ok(data bytes read))`, `Ok(Err(why))` when it is left to rsync.
fn copy_one(pc: &PreCopy, dest: &Path) -> io::Result<Result<u64, String>> {
    let src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&pc.source)?;
    if !same_file(&src.metadata()?, pc) {
        return Ok(Err("it changed since collect looked at it".into()));
    }
    let target = dest.join(&pc.in_snapshot);
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(Err("it has no name in the snapshot".into()));
    };
    // The in-progress snapshot is private (0700) and rsync sets each directory's mode, owner and time afterwards.
    fs::create_dir_all(parent)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".dbackup-sparse");
    let tmp = parent.join(tmp_name);
    let out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = write_data(&src, &out, pc.size).and_then(|data| {
        if !same_file(&src.metadata()?, pc) {
            return Ok(Err("it changed while it was copied".to_string()));
        }
        set_mtime(&out, pc.mtime, pc.mtime_nsec)?;
        Ok(Ok(data))
    });
    drop(out);
    match result {
        Ok(Ok(data)) => {
            fs::rename(&tmp, &target)?;
            Ok(Ok(data))
        }
        other => {
            let _ = fs::remove_file(&tmp);
            other
        }
    }
}

/// Writes the data segments of `src` (`size` bytes) into `out` at their offsets, leaving holes (and all-zero blocks)
/// unwritten, then sets the length. Returns the data bytes read.
fn write_data(src: &File, out: &File, size: u64) -> io::Result<u64> {
    let map = sparse::map_file(src, size)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    for seg in map.segments() {
        let mut at = seg.offset;
        let end = seg.offset + seg.len;
        while at < end {
            crate::interrupt::check_io()?;
            let want = buf.len().min((end - at) as usize);
            let n = src.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "it shrank while it was copied",
                ));
            }
            read += n as u64;
            write_nonzero(out, &buf[..n], at)?;
            at += n as u64;
        }
    }
    out.set_len(size)?;
    Ok(read)
}

/// Writes the runs of `data` (at file offset `at`) that are not whole all-zero blocks of [`ZERO_BLOCK`] bytes
/// (aligned to the file), as `rsync --sparse` seeks over zeros.
fn write_nonzero(out: &File, data: &[u8], at: u64) -> io::Result<()> {
    let mut i = 0usize;
    let mut run: Option<usize> = None;
    while i < data.len() {
        // The block of the file holding offset `at + i`, cut to `data`.
        let abs = at + i as u64;
        let block_end = ((abs / ZERO_BLOCK as u64 + 1) * ZERO_BLOCK as u64 - at) as usize;
        let j = block_end.min(data.len());
        let whole_block = abs.is_multiple_of(ZERO_BLOCK as u64) && j - i == ZERO_BLOCK;
        let zero = whole_block && data[i..j].iter().all(|b| *b == 0);
        match (zero, run) {
            (true, Some(start)) => {
                out.write_all_at(&data[start..i], at + start as u64)?;
                run = None;
            }
            (false, None) => run = Some(i),
            _ => {}
        }
        i = j;
    }
    if let Some(start) = run {
        out.write_all_at(&data[start..], at + start as u64)?;
    }
    Ok(())
}

fn set_mtime(f: &File, sec: i64, nsec: i64) -> io::Result<()> {
    use rustix::fs::{Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
    };
    rustix::fs::futimens(f, &times)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_sparse_enough_with_half_its_bytes_and_a_mib_in_holes() {
        assert!(is_sparse_enough(10 << 20, 1 << 20));
        assert!(!is_sparse_enough(10 << 20, 5 << 20), "half allocated");
        assert!(is_sparse_enough(1 << 20, 0), "exactly 1 MiB of holes");
        assert!(!is_sparse_enough((1 << 20) - 1, 0), "under 1 MiB of holes");
        assert!(is_sparse_enough((1 << 20) + 4096, 4096));
        assert!(!is_sparse_enough(0, 0));
    }

    #[test]
    fn exclusion_is_judged_conservatively_by_the_literal_pieces() {
        let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = b"/home/u/vm/disk.img";
        assert!(possibly_excluded(&rules(&["*.img"]), p));
        assert!(possibly_excluded(&rules(&["/home/u/vm/"]), p));
        assert!(possibly_excluded(&rules(&["vm/*"]), p));
        assert!(
            possibly_excluded(&rules(&["*"]), p),
            "only wildcards: anything"
        );
        assert!(possibly_excluded(&rules(&["d?sk"]), p), "pieces d and sk");
        assert!(!possibly_excluded(&rules(&["*.iso", "/home/u/.cache/"]), p));
        assert!(
            !possibly_excluded(&rules(&["!*.img"]), p),
            "an include excludes nothing"
        );
        assert!(!possibly_excluded(&[], p));
    }

    fn candidate(name: &str, unchanged: bool) -> Candidate {
        Candidate {
            source: PathBuf::from(format!("/home/u/{name}")),
            in_snapshot: PathBuf::from(format!("home/u/{name}")),
            dev: 1,
            ino: 2,
            size: 10 << 20,
            allocated: 4096,
            mtime: 5,
            mtime_nsec: 6,
            unchanged_in_basis: unchanged,
        }
    }

    #[test]
    fn the_plan_leaves_unchanged_and_excluded_files_and_ineligible_sets_to_rsync() {
        let cs = [
            candidate("a.img", false),
            candidate("b.img", true),
            candidate("c.iso", false),
        ];
        let rules = vec!["*.iso".to_string()];
        let planned: Vec<_> = plan(&cs, &rules, true)
            .into_iter()
            .map(|p| p.source)
            .collect();
        assert_eq!(planned, [PathBuf::from("/home/u/a.img")]);
        assert!(plan(&cs, &rules, false).is_empty());
    }

    #[test]
    fn zero_blocks_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        let mut data = vec![0u8; 4 * ZERO_BLOCK];
        data[ZERO_BLOCK + 3] = 1;
        data[4 * ZERO_BLOCK - 1] = 2;
        write_nonzero(&f, &data, 0).unwrap();
        f.set_len(data.len() as u64).unwrap();
        let got = fs::read(dir.path().join("f")).unwrap();
        assert_eq!(got, data);
        let map = sparse::map_file(&f, data.len() as u64).unwrap();
        let holes: u64 = map.hole_bytes();
        // The first and third blocks are holes where the filesystem makes them (tmpfs and ext4 do).
        assert!(holes == 0 || holes >= ZERO_BLOCK as u64, "{holes}");
    }
}
