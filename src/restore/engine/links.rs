//! Where the plan's symlinks lead once the restore is done: each one it creates or keeps is resolved against what
//! the plan makes and what the target holds already, never judged by its text alone.
//!
//! Text alone misses chains: `current -> .` then `parent -> current/..` reads as staying inside (`current`, then up
//! one) but leads to the target's parent; `link -> ./` then `escape -> link/link/../../x` (CVE-2025-4138's shape)
//! climbs two levels above the target. [`judge`] resolves every symlink the way the kernel would after the restore:
//! component by component from the link's directory, following the symlinks the plan creates (and a hard link to
//! one, which is the same symlink at another place) and those already in the target, `..` going to the physical
//! parent. A name that does not exist (yet) is taken as it reads. More than 40 symlinks on the way (where the
//! kernel gives up with `ELOOP`) counts as leading outside: it cannot be told otherwise.
//!
//! An absolute target leads inside only when it names the target's own (canonical) path or something below it.
//!
//! Nothing here follows a symlink on disk: the target is read with `lstat`/`readlink` below its root only
//! ([`TargetDir`]), and the applier never writes through a symlink whatever is decided here. This decides what the
//! plan says about each link, and whether `--no-escaping-links` refuses it.

use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::entry::{EntryKind, show};
use super::item::{Action, PlanItem, link_root};
use super::safety::{Refusal, RelPath};
use super::target::{FoundKind, TargetDir};

/// The kernel's limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_FOLLOWS: usize = 40;

/// Where a symlink leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Inside the target, at this path (relative to the target).
    Inside(RelPath),
    /// Outside the target, at this absolute path (as far as it can be told from here).
    Outside(PathBuf),
    /// It cannot be told (too many symlinks on the way): taken as leading outside.
    Unknown(&'static str),
}

/// What is at a path once the restore is done.
enum Node {
    Dir,
    Link(Vec<u8>),
    /// A file, fifo, ...: nothing can be below it.
    Other,
    Missing,
}

/// The plan's items and the target, as they will be after the restore.
struct World<'a> {
    items: &'a [PlanItem],
    by_path: &'a HashMap<RelPath, usize>,
    target: &'a mut TargetDir,
    /// The target's canonical path.
    real: PathBuf,
    /// The plan's symlinks followed by the last [`World::resolve`] (by item).
    followed: Vec<usize>,
}

impl World<'_> {
    fn node(&mut self, rel: &RelPath) -> Node {
        if let Some(&i) = self.by_path.get(rel)
            && matches!(
                self.items[i].action,
                Action::Create | Action::Replace | Action::Unchanged
            )
        {
            let root = link_root(self.items, i);
            return match root.kind {
                EntryKind::Dir => Node::Dir,
                EntryKind::Symlink => {
                    self.followed.push(i);
                    Node::Link(root.entry.link.clone().unwrap_or_default())
                }
                _ => Node::Other,
            };
        }
        // Not in the plan, refused or skipped: what is there now stays.
        match self.target.lstat(rel) {
            Ok(Some(f)) if f.kind == FoundKind::Dir => Node::Dir,
            Ok(Some(f)) if f.kind == FoundKind::Symlink => match self.target.read_link(rel) {
                Ok(t) => Node::Link(t),
                Err(_) => Node::Other,
            },
            Ok(Some(_)) => Node::Other,
            // Missing, or below something that is not a directory on disk (the plan makes one there).
            _ => Node::Missing,
        }
    }

    /// Where a symlink with target `text`, in directory `dir`, leads.
    fn resolve(&mut self, dir: &RelPath, text: &[u8]) -> Reach {
        self.followed.clear();
        let mut stack: Vec<Vec<u8>> = dir.components().map(<[u8]>::to_vec).collect();
        let mut todo: VecDeque<Vec<u8>> = VecDeque::new();
        if let Some(outside) = self.enter(text, &mut stack, &mut todo) {
            return outside;
        }
        let mut follows = 0;
        // Once a name is missing, the rest is read as it is written.
        let mut lexical = false;
        while let Some(c) = todo.pop_front() {
            match &c[..] {
                b"" | b"." => {}
                b".." => {
                    if stack.pop().is_none() {
                        // Above the target's root: on through the real directories above it, which may lead back
                        // in (`../target/x`), read as an absolute path.
                        let above = self.above(std::mem::take(&mut todo));
                        if let Some(outside) =
                            self.enter(above.as_os_str().as_bytes(), &mut stack, &mut todo)
                        {
                            return outside;
                        }
                        lexical = false;
                    }
                }
                name => {
                    stack.push(name.to_vec());
                    if lexical {
                        continue;
                    }
                    match self.node(&rel_of(&stack)) {
                        Node::Dir => {}
                        Node::Other | Node::Missing => lexical = true,
                        Node::Link(t) => {
                            follows += 1;
                            if follows > MAX_FOLLOWS {
                                return Reach::Unknown(
                                    "more than 40 symlinks to follow on the way (the system gives up there too)",
                                );
                            }
                            stack.pop();
                            if let Some(outside) = self.enter(&t, &mut stack, &mut todo) {
                                return outside;
                            }
                        }
                    }
                }
            }
        }
        Reach::Inside(rel_of(&stack))
    }

    /// Puts a symlink's target in front of what is left to resolve. An absolute one restarts from the target's
    /// root when it names a path inside it; otherwise it leads outside (returned).
    fn enter(
        &self,
        text: &[u8],
        stack: &mut Vec<Vec<u8>>,
        todo: &mut VecDeque<Vec<u8>>,
    ) -> Option<Reach> {
        let mut parts: Vec<Vec<u8>> = text.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        if text.first() == Some(&b'/') {
            let real: Vec<Vec<u8>> = components(&self.real);
            // Walk down from `/` while staying on the target's own path (real directories: `..` is exact there).
            let mut at: Vec<Vec<u8>> = Vec::new();
            let mut rest = parts.into_iter();
            loop {
                if at == real {
                    break;
                }
                let Some(c) = rest.next() else {
                    return Some(Reach::Outside(abs_of(&at)));
                };
                match &c[..] {
                    b"" | b"." => {}
                    b".." => {
                        at.pop();
                    }
                    _ => {
                        at.push(c);
                        if !real.starts_with(&at) {
                            // Off the target's path: where it goes from there is not followed here, so the rest
                            // is shown as it is written.
                            let mut out = abs_of(&at);
                            for c in rest.chain(todo.drain(..)) {
                                if !matches!(&c[..], b"" | b".") {
                                    out.push(std::ffi::OsStr::from_bytes(&c));
                                }
                            }
                            return Some(Reach::Outside(out));
                        }
                    }
                }
            }
            stack.clear();
            parts = rest.collect();
        }
        for p in parts.into_iter().rev() {
            todo.push_front(p);
        }
        None
    }

    /// The path above the target's root, then `rest` as written (not resolved).
    fn above(&self, rest: VecDeque<Vec<u8>>) -> PathBuf {
        let mut at = components(&self.real);
        at.pop();
        let mut out = abs_of(&at);
        for c in rest {
            out.push(std::ffi::OsStr::from_bytes(&c));
        }
        out
    }
}

fn rel_of(stack: &[Vec<u8>]) -> RelPath {
    stack
        .iter()
        .fold(RelPath::root(), |acc, c| acc.join(c.as_slice()))
}

fn components(p: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// `/` + `at`.
fn abs_of(at: &[Vec<u8>]) -> PathBuf {
    let mut out = b"/".to_vec();
    out.extend_from_slice(&at.join(&b'/'));
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// The target's canonical path: the path itself, or its deepest existing ancestor's with the rest appended.
fn canonical(target: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = target.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&at) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (at.file_name().map(|n| n.to_os_string()), at.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                at = parent.to_path_buf();
            }
            _ => return target.to_path_buf(),
        }
    }
}

/// Rounds of judging again after refusals (each round refuses the links that lead outside once the ones refused
/// before are not made); past them, what still goes through a refused link is refused as undecidable.
const MAX_ROUNDS: usize = 8;

/// One link's verdict in a round.
struct Verdict {
    item: usize,
    text: Vec<u8>,
    reach: Reach,
    /// A symlink kept at the destination (`--overwrite never`): noted, never refused.
    kept: bool,
    /// The plan's symlinks its resolution went through.
    followed: Vec<usize>,
}

/// Judges every symlink the plan creates or keeps (and every hard link to one): where it leads is noted on the
/// item ([`PlanItem::escapes_to`] and a note) when that is outside the target; with `refuse`, such links that the
/// plan would create, replace or leave as they are refused (then the judgement is made again without them, and hard
/// links to a refused symlink are refused too, until nothing changes).
pub fn judge(
    items: &mut [PlanItem],
    by_path: &HashMap<RelPath, usize>,
    target: &mut TargetDir,
    refuse: bool,
) {
    let real = canonical(target.path());
    for round in 0.. {
        let verdicts = verdicts(items, by_path, target, &real);
        let mut refused_now = false;
        let last_round = round + 1 >= MAX_ROUNDS;
        for v in verdicts {
            let i = v.item;
            let mut to = match &v.reach {
                Reach::Inside(_) => None,
                Reach::Outside(p) => Some(show(p.as_os_str().as_encoded_bytes())),
                Reach::Unknown(why) => Some(format!("somewhere it cannot tell: {why}")),
            };
            if refuse
                && last_round
                && to.is_none()
                && v.followed
                    .iter()
                    .any(|&f| items[f].action == Action::Refuse)
            {
                to = Some("somewhere it cannot tell: it goes through symlinks refused".into());
            }
            items[i].escapes_to = to.clone();
            if let Some(to) = to
                && refuse
                && !v.kept
            {
                items[i].refuse(Refusal::SymlinkOutside {
                    target: show(&v.text),
                    leads_to: to,
                });
                refused_now = true;
            }
        }
        // Hard links to a refused symlink are refused with it.
        for i in 0..items.len() {
            if items[i].kind == EntryKind::Hardlink
                && items[i].action != Action::Refuse
                && let Some(t) = items[i].link_item
                && items[t].action == Action::Refuse
            {
                let target = items[t].path.clone();
                items[i].refuse(Refusal::HardlinkTargetRefused { target });
                refused_now = true;
            }
        }
        if !refused_now || last_round {
            break;
        }
    }
    for item in items.iter_mut().filter(|i| i.action != Action::Refuse) {
        let Some(to) = &item.escapes_to else { continue };
        let kept = item.action == Action::Skip;
        item.notes.push(if kept {
            format!("the symlink kept there leads outside the target, to {to}")
        } else {
            format!("leads outside the target, to {to}: recreated as a symlink, never followed")
        });
    }
}

/// Where each symlink the plan creates or keeps (and each hard link to one) leads, as the plan stands.
fn verdicts(
    items: &[PlanItem],
    by_path: &HashMap<RelPath, usize>,
    target: &mut TargetDir,
    real: &Path,
) -> Vec<Verdict> {
    let mut world = World {
        items,
        by_path,
        target,
        real: real.to_path_buf(),
        followed: Vec::new(),
    };
    let mut out = Vec::new();
    for i in 0..items.len() {
        let it = &items[i];
        let Some(rel) = it.rel.clone() else { continue };
        let root = link_root(items, i);
        if root.kind != EntryKind::Symlink || root.action == Action::Refuse {
            continue;
        }
        let (text, kept) = match it.action {
            Action::Create | Action::Replace | Action::Unchanged => {
                (root.entry.link.clone().unwrap_or_default(), false)
            }
            // Skipped: what is there is kept; a symlink there is judged as it is.
            Action::Skip if it.found.is_some_and(|f| f.kind == FoundKind::Symlink) => {
                match world.target.read_link(&rel) {
                    Ok(t) => (t, true),
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        let (dir, _) = rel.split_last().expect("the root is not a symlink");
        let reach = world.resolve(&dir, &text);
        out.push(Verdict {
            item: i,
            text,
            reach,
            kept,
            followed: std::mem::take(&mut world.followed),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::restore::{Plan, Planner, RestoreEntry, RestoreOptions};

    fn link(name: &str, to: &str) -> RestoreEntry {
        let mut e = RestoreEntry::new(name, EntryKind::Symlink);
        e.link = Some(to.into());
        e
    }

    fn hardlink(name: &str, to: &str) -> RestoreEntry {
        let mut e = RestoreEntry::new(name, EntryKind::Hardlink);
        e.link = Some(to.into());
        e
    }

    fn plan(target: &Path, entries: Vec<RestoreEntry>, refuse: bool) -> Plan {
        let opts = RestoreOptions {
            refuse_escaping_symlinks: refuse,
            fsync: false,
            ..RestoreOptions::default()
        };
        let mut p = Planner::new(target, opts).unwrap();
        for e in entries {
            p.add(e).unwrap();
        }
        p.finish()
    }

    /// Each item's path with where it escapes to (`-` when it stays inside), and its action.
    fn verdicts(p: &Plan) -> Vec<(String, String, Action)> {
        p.items
            .iter()
            .filter(|i| !i.implicit)
            .map(|i| {
                (
                    i.path.clone(),
                    i.escapes_to.clone().unwrap_or_else(|| "-".into()),
                    i.action,
                )
            })
            .collect()
    }

    struct Scene {
        _tmp: tempfile::TempDir,
        /// The target's parent, canonical.
        base: PathBuf,
        target: PathBuf,
    }

    fn scene() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let target = base.join("target");
        std::fs::create_dir(&target).unwrap();
        Scene {
            _tmp: tmp,
            base,
            target,
        }
    }

    impl Scene {
        fn plan(&self, entries: Vec<RestoreEntry>, refuse: bool) -> Plan {
            plan(&self.target, entries, refuse)
        }

        /// Plans `entries` without refusing escaping links, asserting each item's verdict ([`assert_verdicts`]).
        #[track_caller]
        fn plan_verdicts(&self, entries: Vec<RestoreEntry>, want: &[(&str, &str, Action)]) -> Plan {
            let p = self.plan(entries, false);
            assert_verdicts(&p, want);
            p
        }
    }

    /// Asserts each item's path, where it escapes to (`-`: nowhere) and its action ([`verdicts`]).
    fn assert_verdicts(p: &Plan, want: &[(&str, &str, Action)]) {
        let got = verdicts(p);
        let got: Vec<(&str, &str, Action)> = got
            .iter()
            .map(|(path, to, action)| (path.as_str(), to.as_str(), *action))
            .collect();
        assert_eq!(got, want);
    }

    fn at(base: &Path, rest: &str) -> String {
        format!("{}{rest}", base.display())
    }

    #[test]
    fn a_dot_link_then_climbing_through_it_leads_outside() {
        // CPython's `test_parent_symlink` shape: lexically `current/..` stays at the top, on disk it is the parent.
        let s = scene();
        let p = s.plan_verdicts(
            vec![link("current", "."), link("parent", "current/..")],
            &[
                ("current", "-", Action::Create),
                ("parent", &at(&s.base, ""), Action::Create),
            ],
        );
        assert!(p.items[1].notes[0].contains("leads outside the target, to "));
    }

    #[test]
    fn cve_2025_4138s_shape_leads_two_levels_up() {
        let s = scene();
        let p = s.plan(
            vec![link("link", "./"), link("escape", "link/link/../../x")],
            false,
        );
        let above = s.base.parent().unwrap().join("x");
        assert_verdicts(
            &p,
            &[
                ("link", "-", Action::Create),
                ("escape", &above.display().to_string(), Action::Create),
            ],
        );
        // Refused with --no-escaping-links, the inside one kept.
        let p = s.plan(
            vec![link("link", "./"), link("escape", "link/link/../../x")],
            true,
        );
        assert_eq!(p.items[0].action, Action::Create);
        assert!(matches!(
            p.items[1].refusal,
            Some(Refusal::SymlinkOutside { .. })
        ));
    }

    #[test]
    fn links_inside_stay_quiet_and_absolute_ones_are_judged_by_where_they_land() {
        let s = scene();
        let inside_abs = s.target.join("d/f").display().to_string();
        let mut dir = RestoreEntry::new("d", EntryKind::Dir);
        dir.mode = 0o755;
        let p = s.plan(
            vec![
                dir,
                RestoreEntry::new("d/f", EntryKind::File),
                link("d/up", "../d/f"),
                link("abs-in", &inside_abs),
                link("abs-out", "/etc/passwd"),
                link("abs-above", &s.base.display().to_string()),
                link("dangling", "nothing/here"),
                link("missing-climb", "nothing/../../x"),
                link("through-a-file", "d/f/../../../y"),
                link("back-in", "../target/d/f"),
                link("out-and-back", "../other/../target/x"),
                link("out", "../other/x"),
            ],
            false,
        );
        let v = verdicts(&p);
        let get = |n: &str| v.iter().find(|x| x.0 == n).unwrap().1.clone();
        assert_eq!(get("d/up"), "-");
        assert_eq!(get("abs-in"), "-");
        assert_eq!(get("abs-out"), "/etc/passwd");
        assert_eq!(get("abs-above"), at(&s.base, ""));
        assert_eq!(get("dangling"), "-");
        assert_eq!(get("missing-climb"), at(&s.base, "/x"));
        assert_eq!(get("through-a-file"), at(&s.base, "/y"));
        assert_eq!(get("back-in"), "-");
        assert_eq!(get("out-and-back"), at(&s.base, "/other/../target/x"));
        assert_eq!(get("out"), at(&s.base, "/other/x"));
    }

    #[test]
    fn symlinks_already_in_the_target_count() {
        let s = scene();
        symlink("/etc", s.target.join("door")).unwrap();
        symlink(".", s.target.join("here")).unwrap();
        s.plan_verdicts(
            vec![link("a", "door/passwd"), link("b", "here/here/..")],
            &[
                ("a", "/etc/passwd", Action::Create),
                ("b", &at(&s.base, ""), Action::Create),
            ],
        );
    }

    #[test]
    fn loops_cannot_be_told_and_count_as_outside() {
        let s = scene();
        let p = s.plan(
            vec![link("a", "b"), link("b", "a"), link("c", "a/x")],
            false,
        );
        for item in &p.items {
            assert!(
                item.escapes_to
                    .as_deref()
                    .is_some_and(|t| t.contains("more than 40 symlinks")),
                "{}: {:?}",
                item.path,
                item.escapes_to
            );
        }
    }

    #[test]
    fn a_hard_link_to_a_symlink_is_judged_where_it_is_and_refused_with_it() {
        let s = scene();
        let mut d = RestoreEntry::new("d", EntryKind::Dir);
        d.mode = 0o755;
        let entries = || {
            vec![
                d.clone(),
                link("d/s", "../x"),
                hardlink("h", "d/s"),
                link("out", "/"),
                hardlink("h2", "out"),
            ]
        };
        s.plan_verdicts(
            entries(),
            &[
                ("d", "-", Action::Create),
                ("d/s", "-", Action::Create),
                ("h", &at(&s.base, "/x"), Action::Create),
                ("out", "/", Action::Create),
                ("h2", "/", Action::Create),
            ],
        );
        let p = s.plan(entries(), true);
        let actions: Vec<Action> = p.items.iter().map(|i| i.action).collect();
        assert_eq!(
            actions,
            [
                Action::Create,
                Action::Create,
                Action::Refuse,
                Action::Refuse,
                Action::Refuse
            ]
        );
        assert!(matches!(
            p.items[4].refusal,
            Some(Refusal::HardlinkTargetRefused { .. } | Refusal::SymlinkOutside { .. })
        ));
    }

    #[test]
    fn a_refused_link_is_judged_again_without_it() {
        // `x` is refused as a duplicate: the second `x` is not made, so `y -> x/..` goes through the first one.
        let s = scene();
        s.plan_verdicts(
            vec![link("x", "sub"), link("x", "."), link("y", "x/..")],
            &[
                ("x", "-", Action::Create),
                ("x", "-", Action::Refuse),
                ("y", "-", Action::Create),
            ],
        );
    }
}
