//! The pure safety rules: which names, link targets and modes an entry may have, and why one is refused.
//!
//! Everything here is a function of the entry alone (and the options). The rules that need the destination
//! (symlinks already on disk, directories in the way) are in [`super::plan`] and [`super::links`] (where a symlink
//! leads once restored), and the rule that needs nothing at
//! all because it is structural (never follow a symlink while writing) is in [`super::target`].

use serde::Serialize;

use super::entry::{EntryKind, show};

/// A checked name: relative, no `..`, no NUL, no empty or `.` components, components joined by single `/`.
/// The empty `RelPath` is the target root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// A test's literal name, checked (a name [`check_name`] refuses is a panic).
    #[cfg(test)]
    pub fn of(name: &str) -> RelPath {
        check_name(name.as_bytes(), None).unwrap()
    }

    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The parent and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.is_root() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some((RelPath(self.0[..i].to_vec()), &self.0[i + 1..])),
            None => Some((RelPath::root(), &self.0[..])),
        }
    }

    /// Every proper ancestor, shallowest first, not counting the root: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        for (i, &b) in self.0.iter().enumerate() {
            if b == b'/' {
                out.push(RelPath(self.0[..i].to_vec()));
            }
        }
        out
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    pub fn join(&self, name: &[u8]) -> RelPath {
        if self.is_root() {
            RelPath(name.to_vec())
        } else {
            let mut v = self.0.clone();
            v.push(b'/');
            v.extend_from_slice(name);
            RelPath(v)
        }
    }

    pub fn display(&self) -> String {
        show(&self.0)
    }
}

/// Why an entry is not restored. Every refusal is listed in the plan and the summary and makes the restore fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    #[error("the entry has an empty name")]
    EmptyName,
    #[error("the name contains a NUL byte")]
    NulInName,
    #[error("the name contains a `..` component, which could climb out of the target")]
    DotDot,
    #[error("the name is absolute; entries must be relative to the backup's root")]
    Absolute,
    #[error(
        "the name is {} bytes long, longer than the {MAX_NAME} a path on Linux may have (PATH_MAX): no file \
         could be made there (GNU tar and rsync refuse it too)",
        crate::stdx::count(*.bytes as u64)
    )]
    NameTooLong { bytes: usize },
    #[error("the backup's root must be a directory, this entry makes it a {kind}")]
    RootNotDir { kind: String },
    #[error("another entry of the backup already has this name")]
    Duplicate,
    #[error("{kind} entries are never restored (device files could give access to hardware)")]
    Device { kind: String },
    #[error("unsupported entry type: {kind}")]
    Unsupported { kind: String },
    #[error(
        "`{component}` is a symlink in the backup, and nothing is ever written through a symlink"
    )]
    ThroughBackupSymlink { component: String },
    #[error("`{component}` is a {kind} in the backup, not a directory")]
    ParentNotDirInBackup { component: String, kind: String },
    #[error("`{component}` was refused, so nothing is restored under it")]
    ParentRefused { component: String },
    #[error(
        "`{component}` is a symlink at the destination, and nothing is ever written through a symlink"
    )]
    ThroughDestinationSymlink { component: String },
    #[error("`{component}` at the destination is a {kind}, not a directory")]
    ParentNotDirAtDestination { component: String, kind: String },
    #[error("hard link to `{target}`, which is outside the target")]
    HardlinkOutside { target: String },
    #[error("hard link to `{target}`, which is not a file or symlink restored by this run")]
    HardlinkTargetNotRestored { target: String },
    #[error("hard link to `{target}`, which was refused")]
    HardlinkTargetRefused { target: String },
    #[error(
        "symlink to `{target}`, which leads outside the target, to {leads_to} (--no-escaping-links)"
    )]
    SymlinkOutside { target: String, leads_to: String },
    #[error(
        "the directories this entry needs that the backup does not hold (up to {needed} of path) would take the plan \
         past its bound on such paths, {budget} here ({floor} or {factor} times the bytes of the names read, \
         whichever is more): an archive this deep without directory entries is refused rather than planned in \
         unbounded memory",
        needed = crate::stdx::bytes(*.needed as u64),
        budget = crate::stdx::bytes(*.budget as u64),
        floor = crate::stdx::bytes(IMPLICIT_FLOOR as u64),
        factor = IMPLICIT_FACTOR
    )]
    TooManyImplicitDirs { needed: usize, budget: usize },
    #[error("a non-empty directory is in the way; it may hold files that are not in the backup")]
    NonEmptyDirInTheWay,
    #[error("a {existing} is in the way of this {kind}; replace it with --overwrite always")]
    KindConflict { existing: String, kind: String },
    #[error("the destination changed while restoring: {what}")]
    ChangedAtDestination { what: String },
}

/// The longest name an entry may have: PATH_MAX (4096 with its NUL), the most a path given to Linux may hold, and
/// what GNU tar and rsync can handle. It also bounds what one entry costs a plan: each of its directories that the
/// backup lacks is made and walked to from the root, so a longer name would cost time and memory growing with its
/// square.
pub const MAX_NAME: usize = 4095;

/// The bound on the directories a plan makes that the backup does not hold (implicit parents, each stored by its
/// whole path): their paths may hold together [`IMPLICIT_FLOOR`] bytes, or [`IMPLICIT_FACTOR`] times the bytes of
/// the names planned so far, whichever is more. A tree's directories rarely hold more path bytes than the names
/// below them, but one name of [`MAX_NAME`] bytes, 2,048 directories deep, needs 4 MiB of parents' paths: without
/// this bound an archive of such names, with no directory entries, costs the plan memory and time growing with the
/// square of their depth (100 of them, 610 KB: 3 GB). An entry whose missing parents would pass it is refused
/// ([`Refusal::TooManyImplicitDirs`]), so the plan stays linear in the names read.
pub const IMPLICIT_FLOOR: usize = 16 << 20;
/// See [`IMPLICIT_FLOOR`].
pub const IMPLICIT_FACTOR: usize = 4;

/// Checks a raw name and normalises it. `strip_prefix`, when given, is removed first (a deliberate choice of the
/// caller, e.g. `/` for an archive made with `tar -P`); without it a leading `/` is refused, and so is a name
/// longer than [`MAX_NAME`] once normalised.
pub fn check_name(raw: &[u8], strip_prefix: Option<&[u8]>) -> Result<RelPath, Refusal> {
    if raw.is_empty() {
        return Err(Refusal::EmptyName);
    }
    if raw.contains(&0) {
        return Err(Refusal::NulInName);
    }
    let name = match strip_prefix {
        Some(prefix) if !prefix.is_empty() && raw.starts_with(prefix) => &raw[prefix.len()..],
        _ => raw,
    };
    if name.first() == Some(&b'/') {
        return Err(Refusal::Absolute);
    }
    let mut out = Vec::with_capacity(name.len());
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err(Refusal::DotDot),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > MAX_NAME {
        return Err(Refusal::NameTooLong { bytes: out.len() });
    }
    Ok(RelPath(out))
}

/// Checks a hard link's target name: the same rules as for names, but every failure means "outside".
pub fn check_hardlink_target(raw: &[u8], strip_prefix: Option<&[u8]>) -> Result<RelPath, Refusal> {
    match check_name(raw, strip_prefix) {
        Ok(p) if !p.is_root() => Ok(p),
        _ => Err(Refusal::HardlinkOutside { target: show(raw) }),
    }
}

/// The mode an entry is restored with, and the bits dropped from it. Setuid and setgid are dropped from
/// everything but directories unless running privileged with `preserve_special`; setuid is dropped from
/// directories (it means nothing there), setgid kept on them (it only makes new files inherit the group).
pub fn restored_mode(
    kind: EntryKind,
    mode: u32,
    privileged: bool,
    preserve_special: bool,
) -> (u32, u32) {
    let mode = mode & 0o7777;
    if privileged && preserve_special {
        return (mode, 0);
    }
    let special = if kind.is_dir() { 0o4000 } else { 0o6000 };
    (mode & !special, mode & special)
}

/// The kinds of entries that are refused whatever the options say, with the refusal.
pub fn refused_kind(kind: EntryKind) -> Option<Refusal> {
    match kind {
        EntryKind::Char | EntryKind::Block => Some(Refusal::Device {
            kind: kind.word().replace('-', " "),
        }),
        EntryKind::Other(what) => Some(Refusal::Unsupported {
            kind: what.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &[u8]) -> String {
        String::from_utf8(check_name(raw, None).unwrap().0).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(ok(b"a/b/c"), "a/b/c");
        assert_eq!(ok(b"./a//b/./c/"), "a/b/c");
        assert_eq!(ok(b"."), "");
        assert_eq!(ok(b"./"), "");
        assert_eq!(ok(b"..."), "...");
        assert_eq!(ok(b"a..b/..c"), "a..b/..c");
        assert_eq!(check_name(b"", None), Err(Refusal::EmptyName));
        assert_eq!(check_name(b"a\0b", None), Err(Refusal::NulInName));
        assert_eq!(check_name(b"../x", None), Err(Refusal::DotDot));
        assert_eq!(check_name(b"a/../../x", None), Err(Refusal::DotDot));
        assert_eq!(check_name(b"a/..", None), Err(Refusal::DotDot));
        assert_eq!(check_name(b"/etc/x", None), Err(Refusal::Absolute));
        assert_eq!(check_name(b"//etc/x", None), Err(Refusal::Absolute));
        // PATH_MAX, counted once normalised: `./` and doubled slashes do not count.
        let longest = "a/".repeat(MAX_NAME / 2) + "b";
        assert_eq!(ok(format!("./{longest}").as_bytes()).len(), MAX_NAME);
        assert_eq!(
            check_name(format!("{longest}c").as_bytes(), None),
            Err(Refusal::NameTooLong {
                bytes: MAX_NAME + 1
            })
        );
    }

    #[test]
    fn a_stripped_prefix_is_explicit() {
        assert_eq!(
            check_name(b"/etc/x", Some(b"/")).unwrap().as_bytes(),
            b"etc/x"
        );
        assert_eq!(
            check_name(b"/home/u/.config/x", Some(b"/home/u/"))
                .unwrap()
                .as_bytes(),
            b".config/x"
        );
        // Only the prefix given: another absolute name is still refused, and `..` after the prefix too.
        assert_eq!(
            check_name(b"/etc/x", Some(b"/home/u/")),
            Err(Refusal::Absolute)
        );
        assert_eq!(
            check_name(b"/home/u/../../etc", Some(b"/home/u/")),
            Err(Refusal::DotDot)
        );
        assert_eq!(check_name(b"//etc", Some(b"/")), Err(Refusal::Absolute));
    }

    #[test]
    fn hardlink_targets() {
        assert_eq!(
            check_hardlink_target(b"./a/b", None).unwrap().as_bytes(),
            b"a/b"
        );
        for bad in [
            &b"/etc/passwd"[..],
            b"../etc/passwd",
            b"a/../../b",
            b"",
            b".",
            b"a\0",
        ] {
            assert!(
                matches!(
                    check_hardlink_target(bad, None),
                    Err(Refusal::HardlinkOutside { .. })
                ),
                "{}",
                show(bad)
            );
        }
    }

    #[test]
    fn modes() {
        use EntryKind::*;
        assert_eq!(restored_mode(File, 0o104755, false, false), (0o755, 0o4000));
        assert_eq!(restored_mode(File, 0o6755, true, false), (0o755, 0o6000));
        assert_eq!(restored_mode(File, 0o6755, false, true), (0o755, 0o6000));
        assert_eq!(restored_mode(File, 0o6755, true, true), (0o6755, 0));
        assert_eq!(restored_mode(File, 0o1600, false, false), (0o1600, 0));
        assert_eq!(restored_mode(Dir, 0o2775, false, false), (0o2775, 0));
        assert_eq!(restored_mode(Dir, 0o6775, false, false), (0o2775, 0o4000));
    }

    #[test]
    fn rel_paths() {
        let p = check_name(b"a/b/c", None).unwrap();
        assert_eq!(p.split_last().unwrap().0.as_bytes(), b"a/b");
        assert_eq!(p.split_last().unwrap().1, b"c");
        assert_eq!(
            p.ancestors()
                .iter()
                .map(|a| a.display())
                .collect::<Vec<_>>(),
            ["a", "a/b"]
        );
        assert!(p.starts_with(&check_name(b"a/b", None).unwrap()));
        assert!(!p.starts_with(&check_name(b"a/bc", None).unwrap()));
        assert!(
            !check_name(b"a/bc", None)
                .unwrap()
                .starts_with(&check_name(b"a/b", None).unwrap())
        );
        assert!(p.starts_with(&RelPath::root()));
        assert_eq!(RelPath::root().join(b"x").join(b"y").as_bytes(), b"x/y");
    }
}
