//! Directories a set skips because of what they hold (`exclude_caches`: a valid `CACHEDIR.TAG`; `exclude_if_present`:
//! a marker file), found by one walk of the sources before planning.
//!
//! rsync cannot test a file's content, and its `dir-merge` rules read a file's *rules*, not its presence, so neither
//! check can be left to rsync. The walk reads each directory once (`getdents`: names and types, no `stat` except the
//! first 43 bytes of a `CACHEDIR.TAG`), never follows a symlink, does not descend into a directory it skips or that
//! an anchored exclusion names exactly, and stops at [`MAX_DIRS`] directories (a warning says so). The directories
//! found become anchored `- /path/` rules in the set's filter file, after the user's own rules.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::settings::{Exclusion, SetSettings};

/// The 43 bytes a valid `CACHEDIR.TAG` starts with (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The most directories one set's walk reads before it stops (and warns).
pub const MAX_DIRS: usize = 1_000_000;

/// A directory left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDir {
    pub path: PathBuf,
    /// `CACHEDIR.TAG`, or the marker's name.
    pub holds: String,
}

/// What the walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub skipped: Vec<SkippedDir>,
    /// Directories read.
    pub dirs: usize,
    /// The walk stopped at [`MAX_DIRS`].
    pub truncated: bool,
}

/// Whether `path` is a regular file (not followed through a symlink) starting with the cache signature.
pub fn is_cachedir_tag(path: &Path) -> bool {
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 43];
    f.read_exact(&mut head).is_ok() && &head == CACHEDIR_SIGNATURE
}

/// Walks the set's present directory sources for skipped directories; nothing to do unless the set asks.
pub fn find(set: &SetSettings, sources: &[PathBuf]) -> anyhow::Result<Found> {
    let mut found = Found::default();
    if !set.exclude_caches && set.exclude_if_present.is_empty() {
        return Ok(found);
    }
    // Directories an exclusion names exactly are not walked (rsync will not enter them either).
    let pruned: HashSet<PathBuf> = set
        .exclusions
        .iter()
        .filter(|e| !e.is_include())
        .filter_map(|e| match e {
            Exclusion::Anchored { pattern, .. } => {
                let p = pattern
                    .trim_end_matches("/**")
                    .trim_end_matches("/*")
                    .trim_end_matches('/');
                (!p.contains(['*', '?', '['])).then(|| PathBuf::from(p))
            }
            Exclusion::Pattern { .. } => None,
        })
        .collect();
    let mut stack: Vec<PathBuf> = sources.iter().rev().cloned().collect();
    while let Some(dir) = stack.pop() {
        crate::interrupt::check()?;
        if found.dirs >= MAX_DIRS {
            found.truncated = true;
            break;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue; // unreadable: rsync reports it
        };
        found.dirs += 1;
        let mut children = Vec::new();
        let mut holds = None;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if holds.is_none() {
                if set.exclude_caches && name == "CACHEDIR.TAG" && is_cachedir_tag(&entry.path()) {
                    holds = Some("CACHEDIR.TAG".to_string());
                } else if let Some(m) = set.exclude_if_present.iter().find(|m| name == m.as_str()) {
                    holds = Some(m.clone());
                }
            }
            if kind.is_dir() {
                children.push(entry.path());
            }
        }
        match holds {
            Some(holds) => found.skipped.push(SkippedDir { path: dir, holds }),
            None => {
                children.sort();
                stack.extend(children.into_iter().rev().filter(|c| !pruned.contains(c)));
            }
        }
    }
    Ok(found)
}

/// The anchored rsync rule that excludes `dir` (rsync runs with `--relative` from `/`): `/path/`, with wildcard
/// characters escaped when the name holds any (rsync reads backslashes as escapes only then). `None` for a name
/// with a line break, which a filter file cannot hold.
pub fn rule_for(dir: &Path) -> Option<String> {
    let s = dir.to_str()?;
    if s.contains(['\n', '\r']) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    if s.contains(['*', '?', '[']) {
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(s);
    }
    out.push('/');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_anchored_and_escaped() {
        for (dir, want) in [
            ("/home/u/.cache", Some("/home/u/.cache/")),
            ("/a/b*c", Some("/a/b\\*c/")),
            ("/a/x\\y", Some("/a/x\\y/")),
            ("/a/[x]\\y", Some("/a/\\[x]\\\\y/")),
            ("/a/b\nc", None),
        ] {
            assert_eq!(rule_for(Path::new(dir)).as_deref(), want, "{dir:?}");
        }
    }

    #[test]
    fn only_a_file_with_the_signature_is_a_tag() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good");
        fs::write(&good, [&CACHEDIR_SIGNATURE[..], b"\n# a comment"].concat()).unwrap();
        let short = d.path().join("short");
        fs::write(&short, &CACHEDIR_SIGNATURE[..42]).unwrap();
        let wrong = d.path().join("wrong");
        fs::write(&wrong, b"Signature: 0000000000000000000000000000000x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(is_cachedir_tag(&good));
        for p in [&short, &wrong, &link, &d.path().join("none")] {
            assert!(!is_cachedir_tag(p), "{p:?}");
        }
        let dir = d.path().join("dir");
        fs::create_dir(&dir).unwrap();
        assert!(!is_cachedir_tag(&dir));
    }
}
