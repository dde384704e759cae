//! The plan: for every entry, what restoring it would do at the destination as it is now, and why.
//!
//! [`Planner::add`] takes the entries in backup order (directories before their contents, hard-link targets
//! before their links, as tar and the snapshot walk give them) and decides each one against the destination
//! and against the entries planned before it. Planning only reads. [`Plan`] is what `--dry-run` prints.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::entry::{EntryKind, Mtime, RestoreEntry, show};
use super::item::{Action, PlanItem, link_root};
use super::owners::{self, OwnerTally};
use super::safety::{self, Refusal, RelPath};
use super::target::{Found, FoundKind, TargetDir, WalkError, full_path};
use super::tarscan::HeaderCounts;
use super::{Compare, Overwrite, RestoreError, RestoreOptions};

/// Entries and content bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub entries: u64,
    pub bytes: u64,
}

/// A [`Tally`] per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: Tally,
    pub replace: Tally,
    pub unchanged: Tally,
    pub skip: Tally,
    pub refuse: Tally,
}

impl Counts {
    pub fn add(&mut self, action: Action, bytes: u64) {
        let t = match action {
            Action::Create => &mut self.create,
            Action::Replace => &mut self.replace,
            Action::Unchanged => &mut self.unchanged,
            Action::Skip => &mut self.skip,
            Action::Refuse => &mut self.refuse,
        };
        t.entries += 1;
        t.bytes = t.bytes.saturating_add(bytes);
    }

    /// `3 to create (1.2 KiB), 1 to replace (10 B), 4 unchanged, 0 skipped, 2 refused`.
    pub fn sentence(&self, future: bool) -> String {
        let (c, r) = if future {
            ("to create", "to replace")
        } else {
            ("created", "replaced")
        };
        format!(
            "{} {c} ({}), {} {r} ({}), {} unchanged, {} skipped, {} refused",
            self.create.entries,
            crate::stdx::bytes(self.create.bytes),
            self.replace.entries,
            crate::stdx::bytes(self.replace.bytes),
            self.unchanged.entries,
            self.skip.entries,
            self.refuse.entries
        )
    }
}

/// The whole plan: `--dry-run` prints it ([`Plan::render`] or JSON), [`super::Applier`] executes it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target: PathBuf,
    /// Whether the target directory existed when planning (if not, it is made, owner-only).
    pub target_exists: bool,
    pub options: RestoreOptions,
    pub counts: Counts,
    /// For an archive without an index: every header the scan read. Each entry is an item of this plan unless a
    /// `--path` left it out; nothing is dropped silently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned: Option<HeaderCounts>,
    pub items: Vec<PlanItem>,
}

/// The line a plan and a summary carry when the target's filesystem keeps no modes and owners (FAT, exFAT).
pub(super) fn modes_not_kept(target: &Path) -> String {
    format!(
        "modes and owners not restored: the filesystem of {} cannot hold them (every file there shows the mount's); \
         restore onto ext4, xfs or btrfs to keep them\n",
        show(target.as_os_str().as_encoded_bytes())
    )
}

impl Plan {
    /// What a hard link item finally links to (the first name of its chain), or the item itself.
    pub fn link_root(&self, idx: usize) -> &PlanItem {
        link_root(&self.items, idx)
    }

    /// The symlinks (and hard links to one) that lead outside the target.
    pub fn escaping(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.escapes_to.is_some())
    }

    /// What a restore without privileges of this plan will count ([`OwnerTally`]): its entries to write (create or
    /// replace) whose owner the user does not keep ([`owners::counted`] ones), and those left unchanged with an owner
    /// the user cannot give ([`owners::left_without`]), as the applier counts them.
    pub fn owners_not_kept(&self) -> OwnerTally {
        let mut tally = OwnerTally::default();
        if self.options.privileged || !self.options.modes_and_owners {
            return tally;
        }
        let writes = |i: &&PlanItem| matches!(i.action, Action::Create | Action::Replace);
        for item in self.entries().filter(writes).filter(|i| owners::counted(i)) {
            tally.count((item.entry.uid, item.entry.gid), &self.options.me);
        }
        tally.add(&self.owners_left());
        tally
    }

    /// The entries a restore without privileges of this plan leaves unchanged though not with the owner the backup
    /// gives them ([`owners::left_without`]): counted by the plan's forecast and by the applier alike.
    pub fn owners_left(&self) -> OwnerTally {
        let mut tally = OwnerTally::default();
        if !self.options.privileged && self.options.modes_and_owners {
            for item in self.entries().filter(|i| owners::left_without(i)) {
                tally.lost((item.entry.uid, item.entry.gid));
            }
        }
        tally
    }

    /// The items that stand for an entry of the backup (not the directories made to hold them).
    pub fn entries(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| !i.implicit)
    }

    pub fn refusals(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.action == Action::Refuse)
    }

    pub fn has_refusals(&self) -> bool {
        self.counts.refuse.entries > 0
    }

    /// Where an item lands, for people (the raw name when the name itself was refused).
    pub fn item_path(&self, item: &PlanItem) -> String {
        match &item.rel {
            Some(rel) => show(full_path(&self.target, rel).as_os_str().as_encoded_bytes()),
            None => item.path.clone(),
        }
    }

    /// The plan for people: a line of counts, then one line per entry to create, replace, skip or refuse
    /// (and per unchanged entry with `verbose`), e.g. `create     /home/u/.config/x`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "restore into {}",
            show(self.target.as_os_str().as_encoded_bytes())
        );
        if !self.target_exists {
            out.push_str(" (does not exist yet: it will be made, owner-only)");
        }
        let _ = writeln!(out, ": {}", self.counts.sentence(true));
        if !self.options.modes_and_owners {
            out.push_str(&modes_not_kept(&self.target));
        }
        if let Some(h) = &self.scanned {
            let _ = writeln!(
                out,
                "read from the archive: {}; {} of the entries in this plan",
                h.sentence(),
                self.entries().count()
            );
        }
        let escaping = self.escaping().count();
        if escaping > 0 {
            let _ = writeln!(
                out,
                "{escaping} {} outside the target once restored (marked below): restored as they are, never \
                 followed; --no-escaping-links refuses them",
                if escaping == 1 {
                    "symlink leads"
                } else {
                    "symlinks lead"
                }
            );
        }
        let kept = self
            .items
            .iter()
            .filter(|i| i.displaced_to.is_some())
            .count();
        if let Some(dir) = &self.options.keep_displaced
            && kept > 0
        {
            let _ = writeln!(
                out,
                "{kept} {} to replace {} from the backup: kept first, under {}",
                if kept == 1 { "file" } else { "files" },
                if kept == 1 { "differs" } else { "differ" },
                show(dir.as_os_str().as_encoded_bytes()),
            );
        }
        for item in &self.items {
            if item.action == Action::Unchanged && !verbose && item.escapes_to.is_none() {
                continue;
            }
            let _ = write!(out, "{:<10} {}", item.action.word(), self.item_path(item));
            if item.kind.is_dir() && item.rel.as_ref().is_some_and(|r| !r.is_root()) {
                out.push('/');
            }
            if let Some(r) = &item.reason {
                let _ = write!(out, ": {r}");
            }
            if !item.notes.is_empty() {
                let _ = write!(out, " ({})", item.notes.join("; "));
            }
            if item.displaced_to.is_some() {
                out.push_str(" (kept first)");
            }
            out.push('\n');
        }
        out
    }
}

/// Where the entries under a directory go, as far as planning knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParentState {
    /// A real directory at the destination: its entries may exist.
    OnDisk,
    /// Made by this restore: nothing below it exists yet.
    New,
}

/// Builds a [`Plan`] from entries handed over one at a time.
pub struct Planner {
    opts: RestoreOptions,
    target: TargetDir,
    items: Vec<PlanItem>,
    by_path: HashMap<RelPath, usize>,
    /// The last parent directory found fit to hold entries (entries of one directory come together).
    last_parent: Option<(RelPath, ParentState)>,
    /// The bytes of the names planned, and of the implicit directories' paths: the second is bounded by the first
    /// ([`safety::IMPLICIT_FLOOR`]).
    name_bytes: usize,
    implicit_bytes: usize,
    /// An entry was planned in place of a directory found at the destination (another kind, or refused): the
    /// directories planned below it no longer vouch for their parents, so each parent is walked from the root.
    walk_every_parent: bool,
}

impl Planner {
    /// A planner for restoring into `target`, which need not exist yet.
    pub fn new(target: impl AsRef<Path>, opts: RestoreOptions) -> Result<Planner, RestoreError> {
        let path = target.as_ref();
        let target = TargetDir::open(path).map_err(|source| RestoreError::Target {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Planner {
            opts,
            target,
            items: Vec::new(),
            by_path: HashMap::new(),
            last_parent: None,
            name_bytes: 0,
            implicit_bytes: 0,
            walk_every_parent: false,
        })
    }

    /// Plans one entry; returns its action. Fails only when the destination cannot be inspected.
    pub fn add(&mut self, entry: RestoreEntry) -> Result<Action, RestoreError> {
        self.name_bytes = self.name_bytes.saturating_add(entry.name.len());
        let mut item = PlanItem::new(entry);
        self.decide(&mut item)?;
        let action = item.action;
        if item.found.is_some_and(|f| f.kind == FoundKind::Dir)
            && (action == Action::Refuse || !item.kind.is_dir())
        {
            self.walk_every_parent = true;
        }
        if let Some(rel) = item.rel.clone() {
            if self
                .last_parent
                .as_ref()
                .is_some_and(|(p, _)| p.starts_with(&rel))
            {
                self.last_parent = None;
            }
            match self.by_path.get(&rel) {
                // An entry describing a directory made earlier for its children (a contents-first listing)
                // takes the implicit item's place.
                Some(&i) if self.items[i].implicit && action != Action::Refuse => {
                    self.implicit_bytes -= rel.as_bytes().len();
                    self.items[i] = item
                }
                Some(_) => self.items.push(item),
                None => {
                    self.by_path.insert(rel, self.items.len());
                    self.items.push(item);
                }
            }
        } else {
            self.items.push(item);
        }
        Ok(action)
    }

    pub fn finish(mut self) -> Plan {
        super::links::judge(
            &mut self.items,
            &self.by_path,
            &mut self.target,
            self.opts.refuse_escaping_symlinks,
        );
        let mut counts = Counts::default();
        for item in &self.items {
            counts.add(item.action, item.bytes());
        }
        Plan {
            target: self.target.path().to_path_buf(),
            target_exists: self.target.exists(),
            options: self.opts,
            counts,
            scanned: None,
            items: self.items,
        }
    }

    fn decide(&mut self, item: &mut PlanItem) -> Result<(), RestoreError> {
        let e = &item.entry;
        let kind = e.kind;
        let rel = match safety::check_name(&e.name, self.opts.strip_prefix.as_deref()) {
            Ok(rel) => rel,
            Err(why) => {
                item.refuse(why);
                return Ok(());
            }
        };
        item.path = rel.display();
        item.rel = Some(rel.clone());
        let (mode, dropped) = safety::restored_mode(
            kind,
            e.mode,
            self.opts.privileged,
            self.opts.preserve_special,
        );
        item.mode = mode;
        if dropped & 0o4000 != 0 && kind != EntryKind::Hardlink {
            item.notes.push("setuid bit dropped".into());
        }
        if dropped & 0o2000 != 0 && kind != EntryKind::Hardlink {
            item.notes.push("setgid bit dropped".into());
        }

        if rel.is_root() {
            if kind.is_dir() {
                item.skip("the target directory itself is left as it is");
            } else {
                item.refuse(Refusal::RootNotDir {
                    kind: kind.to_string(),
                });
            }
            return Ok(());
        }
        if let Some(&i) = self.by_path.get(&rel) {
            let earlier = &self.items[i];
            if !(earlier.implicit && kind.is_dir()) {
                item.refuse(if earlier.implicit {
                    Refusal::KindConflict {
                        existing: "directory made for earlier entries".into(),
                        kind: kind.to_string(),
                    }
                } else {
                    Refusal::Duplicate
                });
                return Ok(());
            }
        }
        if let Some(why) = safety::refused_kind(kind) {
            item.refuse(why);
            return Ok(());
        }
        if kind == EntryKind::Socket {
            item.skip("sockets are not restored: the program that made it makes it again");
            return Ok(());
        }
        if kind == EntryKind::Symlink {
            let target = e.link.as_deref().unwrap_or_default();
            if target.is_empty() {
                item.refuse(Refusal::Unsupported {
                    kind: "symlink with an empty target".into(),
                });
                return Ok(());
            }
            // Where it leads is judged once the whole plan is known: see `links::judge`.
        }
        if kind == EntryKind::Hardlink {
            let raw = e.link.as_deref().unwrap_or_default();
            let target = match safety::check_hardlink_target(raw, self.opts.strip_prefix.as_deref())
            {
                Ok(t) => t,
                Err(why) => {
                    item.refuse(why);
                    return Ok(());
                }
            };
            let shown = target.display();
            match self.by_path.get(&target).map(|&i| (i, &self.items[i])) {
                Some((_, t)) if t.action == Action::Refuse => {
                    item.refuse(Refusal::HardlinkTargetRefused { target: shown });
                    return Ok(());
                }
                // A file, or a symlink or fifo: GNU tar links those too (`ln -P`, `cp -al` and `rsync -H` make
                // hard links to symlinks).
                Some((i, t))
                    if !t.implicit
                        && matches!(
                            t.kind,
                            EntryKind::File
                                | EntryKind::Hardlink
                                | EntryKind::Symlink
                                | EntryKind::Fifo
                        ) =>
                {
                    if t.action == Action::Skip {
                        item.notes.push(format!(
                            "linked to {shown} as it is at the destination (kept)"
                        ));
                    }
                    item.link_item = Some(i);
                }
                _ => {
                    item.refuse(Refusal::HardlinkTargetNotRestored { target: shown });
                    return Ok(());
                }
            }
        }

        let (parent, _) = rel.split_last().expect("not the root");
        let state = match self.check_parent(&parent)? {
            Ok(state) => state,
            Err(why) => {
                item.refuse(why);
                return Ok(());
            }
        };
        let found = match state {
            ParentState::New => None,
            ParentState::OnDisk => self.target.lstat(&rel).map_err(|e| self.inspect_error(e))?,
        };
        self.compare(item, &rel, found)
    }

    /// Whether entries may be put in `parent`: every component must be (or become) a real directory.
    fn check_parent(
        &mut self,
        parent: &RelPath,
    ) -> Result<Result<ParentState, Refusal>, RestoreError> {
        if let Some((p, state)) = &self.last_parent
            && p == parent
        {
            return Ok(Ok(*state));
        }
        // A directory this plan makes (or an implicit one) was checked with its parents when it was planned: what is
        // below it is new. (Looking up its ancestors again would cost an entry the square of its depth.)
        if !self.walk_every_parent
            && let Some(&i) = self.by_path.get(parent)
            && self.items[i].kind == EntryKind::Dir
            && self.items[i].action == Action::Create
        {
            self.last_parent = Some((parent.clone(), ParentState::New));
            return Ok(Ok(ParentState::New));
        }
        let mut state = if self.target.exists() {
            ParentState::OnDisk
        } else {
            ParentState::New
        };
        let mut chain = parent.ancestors();
        if !parent.is_root() {
            chain.push(parent.clone());
        }
        // Whether the implicit directories this entry needs were found within the bound.
        let mut bounded = false;
        for k in 0..chain.len() {
            let anc = chain[k].clone();
            if let Some(&i) = self.by_path.get(&anc) {
                let it = &self.items[i];
                if it.action == Action::Refuse {
                    return Ok(Err(Refusal::ParentRefused {
                        component: anc.display(),
                    }));
                }
                if it.kind == EntryKind::Symlink {
                    return Ok(Err(Refusal::ThroughBackupSymlink {
                        component: anc.display(),
                    }));
                }
                if !it.kind.is_dir() {
                    return Ok(Err(Refusal::ParentNotDirInBackup {
                        component: anc.display(),
                        kind: it.kind.to_string(),
                    }));
                }
                match it.action {
                    Action::Create => {
                        state = ParentState::New;
                        continue;
                    }
                    Action::Replace if it.found.is_some_and(|f| f.kind != FoundKind::Dir) => {
                        state = ParentState::New;
                        continue;
                    }
                    // Unchanged, Skip, Replace of a directory: what is on disk decides (a skipped entry may
                    // have a symlink in its place).
                    _ => {}
                }
            } else if state == ParentState::New {
                if let Some(why) = self.add_implicit_within_bound(&chain, k, &mut bounded) {
                    return Ok(Err(why));
                }
                continue;
            }
            match self.target.lstat(&anc) {
                Ok(None) => {
                    state = ParentState::New;
                    if !self.by_path.contains_key(&anc)
                        && let Some(why) = self.add_implicit_within_bound(&chain, k, &mut bounded)
                    {
                        return Ok(Err(why));
                    }
                }
                Ok(Some(f)) if f.kind == FoundKind::Dir => state = ParentState::OnDisk,
                Ok(Some(f)) if f.kind == FoundKind::Symlink => {
                    return Ok(Err(Refusal::ThroughDestinationSymlink {
                        component: anc.display(),
                    }));
                }
                Ok(Some(f)) => {
                    return Ok(Err(Refusal::ParentNotDirAtDestination {
                        component: anc.display(),
                        kind: f.kind.word().into(),
                    }));
                }
                Err(WalkError::Symlink(p)) => {
                    return Ok(Err(Refusal::ThroughDestinationSymlink {
                        component: p.display(),
                    }));
                }
                Err(WalkError::NotDir(p, k)) => {
                    return Ok(Err(Refusal::ParentNotDirAtDestination {
                        component: p.display(),
                        kind: k.word().into(),
                    }));
                }
                Err(e) => return Err(self.inspect_error(e)),
            }
        }
        self.last_parent = Some((parent.clone(), state));
        Ok(Ok(state))
    }

    /// Adds `chain[k]` as an implicit directory, once the directories of `chain[k..]` the plan lacks were found to fit
    /// within the bound ([`Self::beyond_bound`], checked once per entry: `bounded`); the refusal when they do not.
    fn add_implicit_within_bound(
        &mut self,
        chain: &[RelPath],
        k: usize,
        bounded: &mut bool,
    ) -> Option<Refusal> {
        if !*bounded {
            if let Some(why) = self.beyond_bound(&chain[k..]) {
                return Some(why);
            }
            *bounded = true;
        }
        self.add_implicit(chain[k].clone());
        None
    }

    /// The refusal when making the directories of `chain` that the plan lacks (as implicit ones) would pass the
    /// bound on their paths ([`safety::IMPLICIT_FLOOR`]).
    /// The refusal names the most they could need; which are in the plan already is looked up (hashing each path)
    /// only when that decides.
    fn beyond_bound(&self, chain: &[RelPath]) -> Option<Refusal> {
        let budget =
            safety::IMPLICIT_FLOOR.max(self.name_bytes.saturating_mul(safety::IMPLICIT_FACTOR));
        let most: usize = chain.iter().map(|a| a.as_bytes().len()).sum();
        let left = budget.saturating_sub(self.implicit_bytes);
        if most <= left {
            return None;
        }
        // Deepest (longest) first, stopping once past the bound: a refused entry hashes little more than what was
        // left of it.
        let mut needed = 0usize;
        for a in chain.iter().rev() {
            if needed > left {
                break;
            }
            if !self.by_path.contains_key(a) {
                needed += a.as_bytes().len();
            }
        }
        if needed <= left {
            return None;
        }
        Some(Refusal::TooManyImplicitDirs {
            needed: most,
            budget,
        })
    }

    fn add_implicit(&mut self, rel: RelPath) {
        self.implicit_bytes += rel.as_bytes().len();
        let mut entry = RestoreEntry::new(rel.as_bytes().to_vec(), EntryKind::Dir);
        entry.mode = 0o700;
        let mut item = PlanItem::new(entry);
        item.path = rel.display();
        item.rel = Some(rel.clone());
        item.implicit = true;
        item.notes
            .push("not in the backup: made owner-only to hold what is".into());
        self.by_path.insert(rel, self.items.len());
        self.items.push(item);
    }

    /// The decision against what is at the destination.
    fn compare(
        &mut self,
        item: &mut PlanItem,
        rel: &RelPath,
        found: Option<Found>,
    ) -> Result<(), RestoreError> {
        let Some(f) = found else {
            item.action = Action::Create;
            return Ok(());
        };
        item.found = Some(f);
        let overwrite = self.opts.overwrite;
        let entry_dir = item.kind.is_dir();
        let found_dir = f.kind == FoundKind::Dir;
        if entry_dir != found_dir {
            if overwrite == Overwrite::Never {
                item.skip(format!(
                    "a {} is there and --overwrite is never",
                    f.kind.word()
                ));
            } else if found_dir {
                let empty = self
                    .target
                    .dir_is_empty(rel)
                    .map_err(|e| self.inspect_error(e))?;
                if !empty {
                    item.refuse(Refusal::NonEmptyDirInTheWay);
                } else if overwrite == Overwrite::Always {
                    item.action = Action::Replace;
                    item.notes.push("replaces an empty directory".into());
                } else {
                    item.refuse(Refusal::KindConflict {
                        existing: "directory".into(),
                        kind: item.kind.to_string(),
                    });
                }
            } else if overwrite == Overwrite::Always {
                item.action = Action::Replace;
                item.notes.push(format!("replaces a {}", f.kind.word()));
                self.keep(item, rel);
            } else {
                item.refuse(Refusal::KindConflict {
                    existing: f.kind.word().into(),
                    kind: "directory".into(),
                });
            }
            return Ok(());
        }
        item.action = match overwrite {
            Overwrite::Never => {
                item.skip("it exists and --overwrite is never");
                return Ok(());
            }
            Overwrite::Always => {
                // What differs from the backup is kept; what is the same (by --compare) is only rewritten.
                if !entry_dir && self.opts.keep_displaced.is_some() {
                    let identical = match item.kind {
                        // Another name of the file found for its link target, which was judged the same.
                        EntryKind::Hardlink => {
                            let t = &self.items[item.link_item.expect("checked")];
                            t.found.is_some_and(|tf| (tf.dev, tf.ino) == (f.dev, f.ino))
                                && t.displaced_to.is_none()
                                && t.action != Action::Refuse
                        }
                        _ => self.same(item, rel, &f)?,
                    };
                    if !identical {
                        self.keep(item, rel);
                    }
                }
                Action::Replace
            }
            Overwrite::IfChanged => {
                if self.same(item, rel, &f)? {
                    Action::Unchanged
                } else {
                    if !entry_dir {
                        self.keep(item, rel);
                    }
                    Action::Replace
                }
            }
        };
        Ok(())
    }

    /// Marks what is at `rel` (not a directory: it is replaced, not merged) to be kept before it is replaced,
    /// unless the options say it is not kept.
    fn keep(&self, item: &mut PlanItem, rel: &RelPath) {
        if let Some(dir) = &self.opts.keep_displaced
            && item.found.is_some_and(|f| f.kind != FoundKind::Dir)
        {
            item.displaced_to = Some(super::displace::kept_path(dir, &self.target.full_path(rel)));
        }
    }

    /// Whether what is at the destination is what the backup holds (for `if-changed`).
    fn same(
        &mut self,
        item: &mut PlanItem,
        rel: &RelPath,
        f: &Found,
    ) -> Result<bool, RestoreError> {
        let e = &item.entry;
        // Without privileges, the group the user can give (as the writer gives it); the rest is counted, not changed.
        // A filesystem that keeps none (FAT, exFAT: the mount's on every file) differs in neither.
        let owner = match (self.opts.modes_and_owners, self.opts.privileged) {
            (false, _) => true,
            (true, true) => f.uid == e.uid && f.gid == e.gid,
            (true, false) => !self.opts.me.regroups(e.gid, f.gid),
        };
        let (keeps, want) = (self.opts.modes_and_owners, item.mode);
        let mode = move |found: u32| !keeps || found == want;
        let step = self.opts.mtime_step_ns;
        let mtime = move |found: Mtime| found.step(step) == e.mtime.step(step);
        Ok(match item.kind {
            EntryKind::File => {
                let meta = f.kind == FoundKind::File && f.size == e.size && mode(f.mode) && owner;
                let content = if !meta {
                    false
                } else {
                    match (self.opts.compare, e.sha256) {
                        (Compare::Content, Some(h)) => {
                            let found = if e.sha256_stored {
                                self.target.stored_digest(rel, e.size)
                            } else {
                                self.target.hash_file(rel).map(Some)
                            };
                            found.map_err(|err| self.inspect_error(err))? == Some(h)
                        }
                        (Compare::Content, None) => {
                            item.notes.push(
                                "compared by size and mtime: the backup has no hash for it".into(),
                            );
                            mtime(f.mtime)
                        }
                        (Compare::Metadata, _) => mtime(f.mtime),
                    }
                };
                // Only an ACL or an xattr changed: changed too.
                content && self.attrs_same(item, rel, false)?
            }
            EntryKind::Dir => {
                mode(f.mode) && owner && mtime(f.mtime) && self.attrs_same(item, rel, true)?
            }
            EntryKind::Symlink => {
                f.kind == FoundKind::Symlink
                    && owner
                    && self
                        .target
                        .read_link(rel)
                        .map_err(|err| self.inspect_error(err))?
                        == e.link.as_deref().unwrap_or_default()
            }
            EntryKind::Hardlink => {
                let t = &self.items[item.link_item.expect("checked")];
                matches!(t.action, Action::Unchanged | Action::Skip)
                    && t.found.is_some_and(|tf| (tf.dev, tf.ino) == (f.dev, f.ino))
            }
            EntryKind::Fifo => f.kind == FoundKind::Fifo && mode(f.mode) && owner && mtime(f.mtime),
            _ => false,
        })
    }

    /// Whether what is at `rel` has the xattrs and ACLs the backup gives `item` (as far as this restore would set
    /// them: [`super::attrs::differ`]); a filesystem that holds none cannot differ.
    fn attrs_same(
        &mut self,
        item: &PlanItem,
        rel: &RelPath,
        dir: bool,
    ) -> Result<bool, RestoreError> {
        let Some(found) = self
            .target
            .attrs(rel)
            .map_err(|err| self.inspect_error(err))?
        else {
            return Ok(true);
        };
        Ok(!super::attrs::differ(
            found.as_deref(),
            item.entry.attrs.as_deref(),
            dir,
            self.opts.privileged,
        ))
    }

    fn inspect_error(&self, e: WalkError) -> RestoreError {
        let (rel, source) = match e {
            WalkError::Io(rel, source) => (rel, source),
            WalkError::Symlink(rel) => (rel, std::io::Error::other("a symlink is in the way")),
            WalkError::NotDir(rel, _) => (rel, std::io::Error::other("not a directory")),
            WalkError::Missing(rel) => (rel, std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let denied = source.kind() == std::io::ErrorKind::PermissionDenied;
        RestoreError::Inspect {
            path: self.target.full_path(&rel),
            source,
            hint: if denied && !self.opts.privileged {
                "; a directory above it does not let you in (one of yours restored with mode 0600, say): `chmod \
                 u+rwx` it for the restore and back after, or run the restore as root (sudo dbackup restore ...)"
            } else {
                ""
            },
        }
    }
}
