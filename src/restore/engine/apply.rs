//! Executing a plan: the entries are handed over again with their content and written into the target safely.
//!
//! Every write happens below a directory handle reached with `O_NOFOLLOW` ([`super::target`]), at a temporary
//! name, and is renamed into place only when complete. What is at the destination is checked again just before
//! anything there is replaced: if it is not what the plan saw, the entry is refused rather than guessed at.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::attrs::{self, AttrTally, On};
use super::displace::{Displaced, Keeper};
use super::entry::{EntryKind, Mtime, RestoreEntry, show};
use super::item::{Action, PlanItem};
use super::owners::{self, OwnerTally};
use super::plan::{Counts, Plan, modes_not_kept};
use super::safety::{Refusal, RelPath};
use super::target::{self, Found, FoundKind, TargetDir, WalkError, times, with_temp_name};
use super::{RestoreError, RestoreOptions};
use crate::archive::sparse::{self, SparseMap};
use crate::exit::Exit;

/// A refused or failed entry, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where it lands (or the raw name when the name itself was refused).
    pub path: String,
    pub message: String,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: PathBuf,
    /// Per action, what was done (`refuse` counts refusals from the plan and from applying).
    pub counts: Counts,
    /// Directories made only to hold restored entries (missing parents the backup does not describe).
    pub implicit_dirs: u64,
    pub refusals: Vec<Problem>,
    pub errors: Vec<Problem>,
    /// Files replaced that differed from the backup, and where the ones that were there are kept.
    pub displaced: Vec<Displaced>,
    /// Extended attributes and ACLs set, and those that could not be (counted, warned about once).
    pub attrs: AttrTally,
    /// Entries restored as the (unprivileged) user though the backup gives them another owner (warned about once).
    pub owners: OwnerTally,
    /// Whether the target's filesystem keeps modes and owners (not FAT, exFAT: said once, not warned about).
    pub modes_and_owners: bool,
}

impl Summary {
    /// Nothing refused, nothing failed.
    pub fn is_ok(&self) -> bool {
        self.refusals.is_empty() && self.errors.is_empty()
    }

    /// 0 when everything was restored; 1 when anything was refused or failed; 3 when only attributes were not
    /// (see [`Summary::warnings`]).
    pub fn exit(&self) -> Exit {
        if !self.is_ok() {
            Exit::Failed
        } else if !self.warnings().is_empty() {
            Exit::Warnings
        } else {
            Exit::Ok
        }
    }

    /// What was restored incompletely without being an error: one line per kind, with counts (stderr material).
    pub fn warnings(&self) -> Vec<String> {
        let target = show(self.target.as_os_str().as_encoded_bytes());
        shortfalls(&self.attrs, &self.owners, &target)
    }

    /// For people: the counts, then every refusal and error.
    pub fn render(&self) -> String {
        let mut out = format!(
            "restored into {}: {}\n",
            show(self.target.as_os_str().as_encoded_bytes()),
            self.counts.sentence(false)
        );
        if !self.modes_and_owners {
            out.push_str(&modes_not_kept(&self.target));
        }
        for d in &self.displaced {
            out.push_str(&format!(
                "kept       {}: the one that was there is now {}\n",
                d.path, d.kept
            ));
        }
        for p in &self.refusals {
            out.push_str(&format!("refused    {}: {}\n", p.path, p.message));
        }
        for p in &self.errors {
            out.push_str(&format!("failed     {}: {}\n", p.path, p.message));
        }
        out
    }
}

/// The warnings of what a restore into `target` gave back incompletely: attributes, then owners.
pub fn shortfalls(attrs: &AttrTally, owners: &OwnerTally, target: &str) -> Vec<String> {
    let mut out = attrs.warnings(target);
    out.extend(owners.warning(target));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Failed,
}

/// Executes a [`Plan`]: hand it every entry again, in the order planned, with a reader for each file's content.
///
/// The two passes (`restore::content` drives them from an index; the unit tests from a tar, `source::plan_tar`):
///
/// ```text
/// let mut planner = Planner::new(target, RestoreOptions::default())?;
/// for entry in entries { planner.add(entry)? }                    // pass 1: checked and planned
/// let plan = planner.finish();
/// let mut applier = Applier::new(&plan)?;
/// for entry in entries { applier.apply(&entry, content)? }        // pass 2: the same order, with content
/// let summary = applier.finish();
/// ```
pub struct Applier<'p> {
    plan: &'p Plan,
    target: TargetDir,
    by_name: HashMap<&'p [u8], VecDeque<usize>>,
    state: Vec<State>,
    /// The inode each restored (or kept) file ended up as, for hard links to it.
    inodes: HashMap<usize, (u64, u64)>,
    /// Directories whose entries changed (fsynced at the end).
    touched: HashSet<RelPath>,
    /// Directories made by walking (missing parents), not yet claimed by a directory entry.
    implicit: HashSet<RelPath>,
    /// Directories written into, cleared of the temporaries a killed restore left there (once each).
    swept: HashSet<RelPath>,
    /// The user's directories that did not let them write (a 0500 one restored before), opened to them (0700) while
    /// the restore fills them: their mode and mtime before, put back at the end.
    opened: HashMap<RelPath, (u32, Mtime)>,
    summary: Summary,
    buf: Vec<u8>,
    /// Keeps what is replaced (when the plan says so): the keeper, or why there is none.
    keeper: Result<Keeper, String>,
}

impl<'p> Applier<'p> {
    /// Starts applying `plan`. When the plan refuses anything and the options do not say
    /// `apply_despite_refusals`, this is [`RestoreError::Refused`] and nothing is written.
    pub fn new(plan: &'p Plan) -> Result<Applier<'p>, RestoreError> {
        if plan.has_refusals() && !plan.options.apply_despite_refusals {
            let first = plan.refusals().next().expect("counted");
            return Err(RestoreError::Refused {
                count: plan.counts.refuse.entries as usize,
                first: format!(
                    "{}: {}",
                    plan.item_path(first),
                    first.refusal.as_ref().expect("refused items say why")
                ),
                target: plan.target.clone(),
            });
        }
        let target_err = |source| RestoreError::Target {
            path: plan.target.clone(),
            source,
        };
        let mut target = TargetDir::open(&plan.target).map_err(target_err)?;
        let writes = plan.counts.create.entries + plan.counts.replace.entries > 0;
        if writes {
            target.create_root().map_err(target_err)?;
        }
        let mut by_name: HashMap<&[u8], VecDeque<usize>> = HashMap::new();
        let mut summary = Summary {
            target: plan.target.clone(),
            counts: Counts::default(),
            implicit_dirs: 0,
            refusals: Vec::new(),
            errors: Vec::new(),
            displaced: Vec::new(),
            attrs: AttrTally::default(),
            owners: OwnerTally::default(),
            modes_and_owners: plan.options.modes_and_owners,
        };
        let keeper = match &plan.options.keep_displaced {
            Some(dir) => {
                Keeper::new(dir, plan.options.privileged, plan.options.fsync).map_err(|e| {
                    format!(
                        "cannot open {}: {e}",
                        show(dir.as_os_str().as_encoded_bytes())
                    )
                })
            }
            None => Err("nothing is kept (--no-keep)".into()),
        };
        for (i, item) in plan.items.iter().enumerate() {
            if !item.implicit {
                by_name
                    .entry(item.entry.name.as_slice())
                    .or_default()
                    .push_back(i);
            }
            if let Some(r) = &item.refusal {
                summary.counts.add(Action::Refuse, 0);
                summary.refusals.push(Problem {
                    path: plan.item_path(item),
                    message: r.to_string(),
                });
            }
        }
        Ok(Applier {
            plan,
            target,
            by_name,
            state: vec![State::Pending; plan.items.len()],
            inodes: HashMap::new(),
            touched: HashSet::new(),
            implicit: HashSet::new(),
            swept: HashSet::new(),
            opened: HashMap::new(),
            summary,
            buf: vec![0; 1 << 20],
            keeper,
        })
    }

    /// What has been done so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Applies one entry. `content` is the file's content for an entry the plan creates or replaces
    /// ([`PlanItem::needs_content`]); it is not read otherwise. A problem with this entry alone is recorded in the
    /// summary and `Ok` returned; an error means the restore cannot go on (the source is unreadable or
    /// inconsistent with the plan, or the target cannot be written: full, read-only, failing).
    pub fn apply(
        &mut self,
        entry: &RestoreEntry,
        content: Option<&mut dyn Read>,
    ) -> Result<(), RestoreError> {
        self.apply_content(entry, content.map(Content::Stream))
    }

    /// [`Applier::apply`] for a sparse file: `map` says where its data goes, `data` holds its data segments one
    /// after another. The data is written at its offsets and the holes are left unwritten (the file is given its
    /// size with `ftruncate`), so they stay holes. The content is not hashed here (that would mean hashing every
    /// hole): a source that knows a hash checks `data` itself and fails it with `InvalidData`
    /// ([`crate::archive::sparse::open`] does, against the index).
    pub fn apply_sparse(
        &mut self,
        entry: &RestoreEntry,
        map: &SparseMap,
        data: &mut dyn Read,
    ) -> Result<(), RestoreError> {
        self.apply_content(entry, Some(Content::Sparse(map, data)))
    }

    /// [`Applier::apply`] with a file on disk as the content (a local snapshot's): a file with holes is restored
    /// with them ([`Applier::apply_sparse`] with its `SEEK_DATA`/`SEEK_HOLE` map).
    pub fn apply_file(&mut self, entry: &RestoreEntry, file: &File) -> Result<(), RestoreError> {
        let map = match file.metadata() {
            Ok(meta) if meta.len() == entry.size && sparse::worth_checking_any(&meta) => {
                sparse::map_file(file, entry.size)
                    .ok()
                    .filter(|m| m.hole_bytes() > 0)
            }
            _ => None,
        };
        match map {
            Some(map) => {
                let mut data = sparse::SegmentsReader::new(file, &map);
                self.apply_sparse(entry, &map, &mut data)
            }
            None => {
                let mut f = file;
                self.apply(entry, Some(&mut f))
            }
        }
    }

    fn apply_content(
        &mut self,
        entry: &RestoreEntry,
        content: Option<Content<'_>>,
    ) -> Result<(), RestoreError> {
        // A natural point to stop at (SIGINT, SIGTERM): between entries.
        crate::interrupt::check()?;
        let name = entry.name.as_slice();
        let Some(idx) = self.by_name.get_mut(name).and_then(|q| q.pop_front()) else {
            return Err(RestoreError::NotInPlan { name: show(name) });
        };
        let item = &self.plan.items[idx];
        if let Some(what) = differs(entry, &item.entry) {
            return Err(RestoreError::ChangedSincePlan {
                name: show(name),
                what,
            });
        }
        self.state[idx] = State::Done;
        match item.action {
            Action::Refuse => Ok(()),
            Action::Skip | Action::Unchanged => {
                self.summary.counts.add(item.action, item.bytes());
                Ok(())
            }
            Action::Create | Action::Replace => self.execute(idx, content),
        }
    }

    /// Records that `entry` (the next one of the plan with its name) cannot be restored because its part of the
    /// backup is damaged (an encrypted chunk that does not authenticate): it is counted as an error, nothing is
    /// written for it, and the restore goes on with the next entry.
    pub fn fail(&mut self, entry: &RestoreEntry, message: String) -> Result<(), RestoreError> {
        let name = entry.name.as_slice();
        let Some(idx) = self.by_name.get_mut(name).and_then(|q| q.pop_front()) else {
            return Err(RestoreError::NotInPlan { name: show(name) });
        };
        let item = &self.plan.items[idx];
        self.state[idx] = State::Failed;
        if matches!(item.action, Action::Create | Action::Replace) {
            self.summary.errors.push(Problem {
                path: self.plan.item_path(item),
                message,
            });
        } else {
            self.summary.counts.add(item.action, item.bytes());
        }
        Ok(())
    }

    /// Adds `where_` to the errors recorded since there were `from` of them (the source names where the entry's
    /// content was read from, which the engine does not know: an earlier backup of a chain, say).
    pub fn locate_errors(&mut self, from: usize, where_: &str) {
        for p in self.summary.errors.iter_mut().skip(from) {
            p.message.push_str(where_);
        }
    }

    /// Finishes: directories get their owner, mode and mtime (deepest first), directories are fsynced, and the
    /// entries never handed over are reported. Returns what was done.
    pub fn finish(mut self) -> Summary {
        let plan = self.plan;
        for (i, item) in plan.items.iter().enumerate() {
            if self.state[i] != State::Pending || item.implicit || item.action == Action::Refuse {
                continue;
            }
            if matches!(item.action, Action::Create | Action::Replace) {
                self.summary.errors.push(Problem {
                    path: plan.item_path(item),
                    message: "not restored: the backup ended before this entry was handed over"
                        .into(),
                });
            } else {
                self.summary.counts.add(item.action, item.bytes());
            }
        }
        // What is left as it was with an owner the user cannot give: counted as the plan's forecast counts it.
        self.summary.owners.add(&plan.owners_left());
        // The directories opened to fill them as they were; those in the plan then get the backup's metadata.
        let mut opened: Vec<_> = std::mem::take(&mut self.opened).into_iter().collect();
        let keeps = plan.options.modes_and_owners;
        opened.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.depth()));
        for (rel, (mode, mtime)) in opened {
            let closed = self
                .target
                .dir(&rel, false)
                .map_err(walk_io)
                .and_then(|fd| {
                    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
                    Ok(rustix::fs::futimens(fd, &times(mtime, !keeps))?)
                });
            if let Err(e) = closed {
                self.summary.errors.push(Problem {
                    path: show(self.target.full_path(&rel).as_os_str().as_encoded_bytes()),
                    message: format!(
                        "cannot give it back its mode {mode:04o} after filling it: {e}"
                    ),
                });
            }
        }
        // Directory metadata, deepest first, so that a read-only directory is finished after its contents.
        let mut dirs: Vec<usize> = (0..plan.items.len())
            .filter(|&i| {
                let it = &plan.items[i];
                it.kind.is_dir()
                    && !it.implicit
                    && it.rel.as_ref().is_some_and(|r| !r.is_root())
                    && self.state[i] != State::Failed
                    && matches!(
                        it.action,
                        Action::Create | Action::Replace | Action::Unchanged
                    )
                    && (it.action == Action::Unchanged || self.state[i] == State::Done)
            })
            .collect();
        dirs.sort_by_key(|&i| {
            std::cmp::Reverse(plan.items[i].rel.as_ref().map_or(0, |r| r.depth()))
        });
        for i in dirs {
            let item = &plan.items[i];
            let rel = item.rel.as_ref().expect("checked");
            if let Err(e) = self.finish_dir(item, rel) {
                let problem = Problem {
                    path: plan.item_path(item),
                    message: format!("cannot set its owner, mode or mtime: {e}"),
                };
                self.summary.errors.push(problem);
            }
        }
        if let Ok(k) = &mut self.keeper {
            self.summary.displaced.append(&mut k.kept);
        }
        self.summary.implicit_dirs += self.implicit.len() as u64;
        if plan.options.fsync {
            for made in &self.implicit {
                if let Some((parent, _)) = made.split_last() {
                    self.touched.insert(parent);
                }
            }
            let mut touched: Vec<RelPath> = self.touched.drain().collect();
            touched.sort();
            for rel in touched {
                let result = match self.target.dir(&rel, false) {
                    Ok(fd) => rustix::fs::fsync(fd).map_err(io::Error::from),
                    Err(e) => Err(walk_io(e)),
                };
                if let Err(e) = result {
                    self.summary.errors.push(Problem {
                        path: show(self.target.full_path(&rel).as_os_str().as_encoded_bytes()),
                        message: format!("cannot fsync the directory: {e}"),
                    });
                }
            }
        }
        self.summary
    }

    fn finish_dir(&mut self, item: &PlanItem, rel: &RelPath) -> io::Result<()> {
        let opts = &self.plan.options;
        let fd = self.target.dir(rel, false).map_err(walk_io)?;
        if item.action != Action::Unchanged {
            let grouped = give_owner(opts, &item.entry, |u, g| rustix::fs::fchown(fd, u, g))?;
            // Counted here, not when made: its group is given only now.
            let owner = (item.entry.uid, item.entry.gid);
            if !opts.privileged && owners::counted(item) && opts.me.keeps(owner) && !grouped {
                self.summary.owners.lost(owner);
            }
            give_mode(opts, || {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(item.mode))
            })?;
            attrs::apply(
                On::Fd(fd),
                item.entry.attrs.as_deref(),
                true,
                opts.privileged,
                &mut self.summary.attrs,
            );
        }
        rustix::fs::futimens(fd, &times(item.entry.mtime, !opts.modes_and_owners))?;
        Ok(())
    }

    fn execute(&mut self, idx: usize, content: Option<Content<'_>>) -> Result<(), RestoreError> {
        let plan = self.plan;
        let item = &plan.items[idx];
        let rel = item
            .rel
            .as_ref()
            .expect("planned items to write have a checked name");
        let (parent, name) = rel.split_last().expect("not the root");
        let outcome = self.write_entry(idx, item, rel, &parent, name, content);
        self.implicit.extend(self.target.created.drain(..));
        match outcome {
            Ok(Outcome::Done) => {
                self.summary.counts.add(item.action, item.bytes());
                let owner = (item.entry.uid, item.entry.gid);
                // An owner the user keeps is counted if the entry did not get its group after all (a filesystem
                // that takes no groups); a directory's is given (and counted) by `finish`.
                if !plan.options.privileged
                    && owners::counted(item)
                    && (!plan.options.me.keeps(owner)
                        || item.kind != EntryKind::Dir && !self.has_owner(&parent, name, owner))
                {
                    self.summary.owners.lost(owner);
                }
                self.touched.insert(parent);
                Ok(())
            }
            Ok(Outcome::Refused(why)) => {
                self.state[idx] = State::Failed;
                self.summary.counts.add(Action::Refuse, 0);
                self.summary.refusals.push(Problem {
                    path: plan.item_path(item),
                    message: why.to_string(),
                });
                Ok(())
            }
            Err(Failure::Entry(message)) => {
                self.state[idx] = State::Failed;
                self.summary.errors.push(Problem {
                    path: plan.item_path(item),
                    message,
                });
                Ok(())
            }
            Err(Failure::Source(source)) => {
                self.state[idx] = State::Failed;
                self.summary.errors.push(Problem {
                    path: plan.item_path(item),
                    message: format!("cannot read it from the backup: {source}"),
                });
                Err(RestoreError::Source {
                    name: item.path.clone(),
                    error: source,
                })
            }
            Err(Failure::Fatal(source)) => {
                self.state[idx] = State::Failed;
                self.summary.errors.push(Problem {
                    path: plan.item_path(item),
                    message: source.to_string(),
                });
                Err(RestoreError::Write {
                    path: self.target.full_path(rel),
                    source,
                })
            }
        }
    }

    /// Whether the entry `name` in `parent` has the `owner` (uid, gid).
    fn has_owner(&mut self, parent: &RelPath, name: &[u8], owner: (u32, u32)) -> bool {
        let Ok(fd) = self.target.dir(parent, false) else {
            return false;
        };
        rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| (st.st_uid, st.st_gid) == owner)
    }

    fn write_entry(
        &mut self,
        idx: usize,
        item: &PlanItem,
        rel: &RelPath,
        parent_rel: &RelPath,
        name: &[u8],
        content: Option<Content<'_>>,
    ) -> Result<Outcome, Failure> {
        let plan: &'p Plan = self.plan;
        let opts = &plan.options;
        // A hard link's target is reached first (its own handle), before the cached chain moves to the link's parent.
        let link_to = match item.kind {
            EntryKind::Hardlink => match self.link_target(item) {
                Ok(t) => Some(t),
                Err(out) => return out,
            },
            _ => None,
        };
        if item.found.is_some_and(|f| f.kind == FoundKind::Dir) {
            self.target.invalidate(rel);
        }
        let parent = match self.target.dir(parent_rel, true) {
            Ok(fd) => fd,
            Err(WalkError::Symlink(p)) => {
                return Ok(Outcome::Refused(Refusal::ThroughDestinationSymlink {
                    component: p.display(),
                }));
            }
            Err(WalkError::NotDir(p, k)) => {
                return Ok(Outcome::Refused(Refusal::ParentNotDirAtDestination {
                    component: p.display(),
                    kind: k.word().into(),
                }));
            }
            Err(e) => return Err(Failure::from_io(walk_io(e))),
        };
        if !opts.privileged && !self.opened.contains_key(parent_rel) {
            match open_to_owner(parent) {
                Ok(Some(was)) => _ = self.opened.insert(parent_rel.clone(), was),
                Ok(None) => {}
                Err(e) => return Err(Failure::from_io(e.into())),
            }
        }
        if self.swept.insert(parent_rel.clone()) {
            target::remove_dead_temporaries(parent);
        }

        // Is the destination still what the plan saw?
        let live = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(Found::from(st)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(Failure::from_io(e.into())),
        };
        if item.kind == EntryKind::Dir {
            // Made already by an earlier entry's walk (a contents-first listing): it only needs its metadata.
            if item.found.is_none() && live.is_some_and(|l| l.kind == FoundKind::Dir) {
                self.implicit.remove(rel);
                self.target.created.retain(|c| c != rel);
                return Ok(Outcome::Done);
            }
        }
        if !same_thing(item.found, live) {
            let what = match live {
                Some(l) => format!(
                    "a {} appeared or changed there since planning; left as it is",
                    l.kind.word()
                ),
                None => "what was there when planning is gone; nothing was written".into(),
            };
            return Ok(Outcome::Refused(Refusal::ChangedAtDestination { what }));
        }
        let replace_dir = live.is_some_and(|l| l.kind == FoundKind::Dir);
        let keep = match (&item.displaced_to, live) {
            (Some(_), Some(l)) if l.kind != FoundKind::Dir => Some(Keep {
                keeper: &mut self.keeper,
                found: l,
                original: super::target::full_path(&plan.target, rel),
            }),
            _ => None,
        };
        let mut placement = Placement {
            parent,
            name,
            create: live.is_none(),
            replace_dir,
            keep,
        };

        let attrs = &mut self.summary.attrs;
        let (out, ino) = match item.kind {
            EntryKind::Dir => return make_dir(&mut placement, live.is_some()),
            EntryKind::File => {
                let Some(content) = content else {
                    return Err(Failure::Entry("no content was handed over for it".into()));
                };
                write_file_entry(&mut placement, content, item, opts, &mut self.buf, attrs)
            }
            EntryKind::Symlink => make_symlink(&mut placement, item, opts, attrs),
            EntryKind::Fifo => make_fifo(&mut placement, item, opts, attrs),
            EntryKind::Hardlink => {
                let to = link_to.expect("resolved above");
                make_hardlink(&mut placement, to, plan.link_root(idx).kind)
            }
            other => {
                return Err(Failure::Entry(format!(
                    "{other} entries cannot be restored"
                )));
            }
        };
        if let Some(ino) = ino {
            self.inodes.insert(idx, ino);
        }
        out
    }

    /// The directory handle, name and inode of the file a hard link item points to.
    fn link_target(&mut self, item: &PlanItem) -> Result<LinkSource, Result<Outcome, Failure>> {
        let ti = item
            .link_item
            .expect("planned hard links know their target");
        let t = &self.plan.items[ti];
        let expect = match t.action {
            Action::Create | Action::Replace => match self.inodes.get(&ti) {
                Some(&ino) => ino,
                None => {
                    return Err(Err(Failure::Entry(format!(
                        "its target {} was not restored, so it cannot be linked",
                        t.path
                    ))));
                }
            },
            _ => match self
                .inodes
                .get(&ti)
                .copied()
                .or(t.found.map(|f| (f.dev, f.ino)))
            {
                Some(ino) => ino,
                None => {
                    return Err(Err(Failure::Entry(format!(
                        "its target {} is not there",
                        t.path
                    ))));
                }
            },
        };
        let trel = t.rel.as_ref().expect("checked");
        let (tparent, tname) = trel.split_last().expect("not the root");
        match self.target.dir_owned(&tparent) {
            Ok(fd) => Ok(LinkSource {
                dir: fd,
                name: tname.to_vec(),
                inode: expect,
            }),
            Err(WalkError::Symlink(p)) => {
                Err(Ok(Outcome::Refused(Refusal::ThroughDestinationSymlink {
                    component: p.display(),
                })))
            }
            Err(e) => Err(Err(Failure::from_io(walk_io(e)))),
        }
    }
}

/// The file a hard link is made to: its directory (reached without following symlinks), name and inode.
struct LinkSource {
    dir: OwnedFd,
    name: Vec<u8>,
    inode: (u64, u64),
}

enum Outcome {
    Done,
    Refused(Refusal),
}

enum Failure {
    /// This entry failed; the restore goes on.
    Entry(String),
    /// The backup could not be read: the restore stops.
    Source(io::Error),
    /// The target cannot take more (full, read-only, failing): the restore stops.
    Fatal(io::Error),
}

impl Failure {
    fn from_io(e: io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO) => Failure::Fatal(e),
            _ => Failure::Entry(e.to_string()),
        }
    }
}

/// What writing one entry gave: its outcome, and the inode placed (for the hard links to it).
type Made = (Result<Outcome, Failure>, Option<(u64, u64)>);

/// A directory entry: made 0700 (its metadata comes at the end), replacing a non-directory only as the plan says; an
/// (empty) directory already there is kept as it is.
fn make_dir(placement: &mut Placement<'_>, there: bool) -> Result<Outcome, Failure> {
    let (parent, name) = (placement.parent, placement.name);
    if placement.replace_dir {
        return Ok(Outcome::Done); // metadata at the end
    }
    if there {
        placement.keep_first()?;
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| Failure::from_io(e.into()))?;
    }
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(Outcome::Done),
        Err(e) => Err(Failure::from_io(e.into())),
    }
}

/// A file: its content (streamed, or a sparse file's data at its offsets) written to a 0600 temporary file with its
/// metadata, then renamed into place.
fn write_file_entry(
    placement: &mut Placement<'_>,
    content: Content<'_>,
    item: &PlanItem,
    opts: &RestoreOptions,
    buf: &mut [u8],
    attrs: &mut AttrTally,
) -> Made {
    let parent = placement.parent;
    let tmp = match create_temp_file(parent) {
        Ok(t) => t,
        Err(e) => return (Err(Failure::from_io(e)), None),
    };
    let written = match content {
        Content::Stream(content) => write_file(&tmp.1, content, &item.entry, buf),
        Content::Sparse(map, data) => write_sparse(&tmp.1, map, data, &item.entry, buf),
    };
    let result = written.and_then(|()| finish_file(&tmp.1, &item.entry, item.mode, opts, attrs));
    let result = result.and_then(|ino| placement.place(&tmp.0).map(|o| (o, ino)));
    match result {
        Ok((Outcome::Done, ino)) => (Ok(Outcome::Done), Some(ino)),
        Ok((out, _)) => {
            let _ = rustix::fs::unlinkat(parent, tmp.0.as_str(), AtFlags::empty());
            (Ok(out), None)
        }
        Err(e) => {
            let _ = rustix::fs::unlinkat(parent, tmp.0.as_str(), AtFlags::empty());
            (Err(e), None)
        }
    }
}

/// A symlink, made at a temporary name with its owner, attributes and mtime, then renamed into place.
fn make_symlink(
    placement: &mut Placement<'_>,
    item: &PlanItem,
    opts: &RestoreOptions,
    tally: &mut AttrTally,
) -> Made {
    let target = item.entry.link.as_deref().unwrap_or_default();
    let made = with_temp_name(|t| rustix::fs::symlinkat(target, placement.parent, t));
    settle_special(made, placement, item, opts, tally, false)
}

/// A fifo, made at a temporary name with its owner, mode, attributes and mtime, then renamed into place.
fn make_fifo(
    placement: &mut Placement<'_>,
    item: &PlanItem,
    opts: &RestoreOptions,
    tally: &mut AttrTally,
) -> Made {
    let made = with_temp_name(|t| {
        rustix::fs::mknodat(
            placement.parent,
            t,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
    });
    settle_special(made, placement, item, opts, tally, true)
}

/// A symlink or (`fifo`) a fifo made at a temporary name (`made`) gets its owner, its mode (a fifo only: a symlink
/// has none), its attributes (a symlink only when it has some) and its mtime, then is renamed into place.
fn settle_special(
    made: io::Result<String>,
    placement: &mut Placement<'_>,
    item: &PlanItem,
    opts: &RestoreOptions,
    tally: &mut AttrTally,
    fifo: bool,
) -> Made {
    let parent = placement.parent;
    let tmp = match made {
        Ok(t) => t,
        Err(e) => return (Err(Failure::from_io(e)), None),
    };
    let result = (|| {
        give_owner(opts, &item.entry, |u, g| {
            rustix::fs::chownat(parent, tmp.as_str(), u, g, AtFlags::SYMLINK_NOFOLLOW)
        })?;
        if fifo {
            give_mode(opts, || {
                let mode = Mode::from_raw_mode(item.mode);
                rustix::fs::chmodat(parent, tmp.as_str(), mode, AtFlags::empty())
            })?;
        }
        if fifo || item.entry.attrs.is_some() {
            attrs::apply(
                On::Name {
                    dir: parent,
                    name: &tmp,
                },
                item.entry.attrs.as_deref(),
                false,
                opts.privileged,
                tally,
            );
        }
        rustix::fs::utimensat(
            parent,
            tmp.as_str(),
            &times(item.entry.mtime, !opts.modes_and_owners),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        inode_of(parent, &tmp)
    })()
    .map_err(|e: Errno| Failure::from_io(e.into()));
    let (out, ino) = place_made(result, placement, &tmp);
    (finish_temp(parent, &tmp, out), ino)
}

/// A hard link to `to` (the file, symlink or fifo restored or kept for its target, of kind `root`), made at a
/// temporary name, checked to be that very inode, then renamed into place.
fn make_hardlink(placement: &mut Placement<'_>, to: LinkSource, root: EntryKind) -> Made {
    let parent = placement.parent;
    let LinkSource {
        dir: tdir,
        name: tname,
        inode: expect,
    } = to;
    let made = with_temp_name(|t| {
        rustix::fs::linkat(&tdir, tname.as_slice(), parent, t, AtFlags::empty())
    });
    let tmp = match made {
        Ok(t) => t,
        Err(e) => return (Err(Failure::from_io(e)), None),
    };
    // The link must be to the very file (or symlink, or fifo) restored or kept for its target, never anything else.
    let kind = match root {
        EntryKind::Symlink => FoundKind::Symlink,
        EntryKind::Fifo => FoundKind::Fifo,
        _ => FoundKind::File,
    };
    let f = match rustix::fs::statat(parent, tmp.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Found::from(st),
        Err(e) => {
            return (
                finish_temp(parent, &tmp, Err(Failure::from_io(e.into()))),
                None,
            );
        }
    };
    if f.kind != kind || (f.dev, f.ino) != expect {
        let changed = Outcome::Refused(Refusal::ChangedAtDestination {
            what: "the file this hard link points to was replaced while restoring".into(),
        });
        return (finish_temp(parent, &tmp, Ok(changed)), None);
    }
    let out = finish_temp(parent, &tmp, placement.place(&tmp));
    let ino = matches!(out, Ok(Outcome::Done)).then_some(expect);
    (out, ino)
}

/// Where a finished temporary goes.
struct Placement<'a> {
    parent: BorrowedFd<'a>,
    name: &'a [u8],
    /// Nothing was there: it must not be there now either.
    create: bool,
    /// An (empty) directory is there, to be removed first (`--overwrite always`).
    replace_dir: bool,
    /// What is there differs from the backup: it is kept before it is replaced.
    keep: Option<Keep<'a>>,
}

/// A file to keep before it is replaced.
struct Keep<'a> {
    keeper: &'a mut Result<Keeper, String>,
    /// What is there (checked against the plan just before).
    found: Found,
    /// Its absolute path.
    original: PathBuf,
}

impl Placement<'_> {
    /// Keeps what is there, if the plan says so; an error leaves it in place and fails the entry.
    fn keep_first(&mut self) -> Result<(), Failure> {
        let Some(k) = self.keep.take() else {
            return Ok(());
        };
        let kept = match k.keeper {
            Ok(keeper) => keeper.keep(self.parent, self.name, &k.found, &k.original),
            Err(why) => Err(why.clone()),
        };
        kept.map_err(|why| {
            Failure::Entry(format!(
                "not replaced: the file there differs from the backup and could not be kept first ({why}); it \
                 is left as it was (make room in the backup root, or replace without keeping with --overwrite \
                 always --no-keep)"
            ))
        })
    }

    fn place(&mut self, tmp: &str) -> Result<Outcome, Failure> {
        if !self.create && !self.replace_dir {
            self.keep_first()?;
        }
        if self.create {
            match rustix::fs::renameat_with(
                self.parent,
                tmp,
                self.parent,
                self.name,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(Outcome::Done),
                Err(Errno::EXIST) => {
                    return Ok(Outcome::Refused(Refusal::ChangedAtDestination {
                        what: "something appeared there since planning; left as it is".into(),
                    }));
                }
                // Filesystems without RENAME_NOREPLACE: check, then rename.
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    if rustix::fs::statat(self.parent, self.name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
                    {
                        return Ok(Outcome::Refused(Refusal::ChangedAtDestination {
                            what: "something appeared there since planning; left as it is".into(),
                        }));
                    }
                }
                Err(e) => return Err(Failure::from_io(e.into())),
            }
        } else if self.replace_dir {
            match rustix::fs::unlinkat(self.parent, self.name, AtFlags::REMOVEDIR) {
                Ok(()) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => {
                    return Ok(Outcome::Refused(Refusal::NonEmptyDirInTheWay));
                }
                Err(e) => return Err(Failure::from_io(e.into())),
            }
        }
        rustix::fs::renameat(self.parent, tmp, self.parent, self.name)
            .map_err(|e| Failure::from_io(e.into()))?;
        Ok(Outcome::Done)
    }
}

/// Places a temporary whose making gave its inode: the outcome, and the inode when it was placed.
fn place_made(
    made: Result<(u64, u64), Failure>,
    placement: &mut Placement<'_>,
    tmp: &str,
) -> (Result<Outcome, Failure>, Option<(u64, u64)>) {
    match made {
        Ok(ino) => {
            let out = placement.place(tmp);
            let placed = matches!(out, Ok(Outcome::Done)).then_some(ino);
            (out, placed)
        }
        Err(e) => (Err(e), None),
    }
}

/// The (device, inode) of a name in `parent`, not following a symlink.
fn inode_of(parent: BorrowedFd<'_>, name: &str) -> Result<(u64, u64), Errno> {
    let f = Found::from(rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?);
    Ok((f.dev, f.ino))
}

/// Removes the temporary unless the outcome placed it.
fn finish_temp(
    parent: BorrowedFd<'_>,
    tmp: &str,
    out: Result<Outcome, Failure>,
) -> Result<Outcome, Failure> {
    if !matches!(out, Ok(Outcome::Done)) {
        let _ = rustix::fs::unlinkat(parent, tmp, AtFlags::empty());
    }
    out
}

/// A new, owner-only (0600) file at a temporary name in `parent`.
fn create_temp_file(parent: BorrowedFd<'_>) -> io::Result<(String, File)> {
    let mut file = None;
    let name = with_temp_name(|t| {
        let fd = rustix::fs::openat(
            parent,
            t,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        file = Some(File::from(fd));
        Ok(())
    })?;
    Ok((name, file.expect("made")))
}

/// What is handed over as a file's content.
enum Content<'a> {
    /// The content itself.
    Stream(&'a mut dyn Read),
    /// A sparse file: its map, and its data segments one after another.
    Sparse(&'a SparseMap, &'a mut dyn Read),
}

/// Copies exactly `entry.size` bytes from `content` into `file`, checking the hash when known.
fn write_file(
    mut file: &File,
    content: &mut dyn Read,
    entry: &RestoreEntry,
    buf: &mut [u8],
) -> Result<(), Failure> {
    // A sparse member's stored digest is checked by the sparse reader, not over the content written here.
    let mut hasher = entry
        .sha256
        .filter(|_| !entry.sha256_stored)
        .map(|_| Sha256::new());
    let mut total: u64 = 0;
    // One byte more than expected tells a source that grew.
    let mut limited = content.take(entry.size.saturating_add(1));
    loop {
        // SIGINT or SIGTERM: stop between blocks; the temporary file is removed, nothing half-written is placed.
        crate::interrupt::check_io().map_err(Failure::Fatal)?;
        let n = match limited.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The source says its data is invalid (an encrypted chunk that does not authenticate): this entry's
            // content is damaged, the rest of the backup may not be.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Failure::Entry(format!(
                    "its content in the backup is damaged ({e}); not restored"
                )));
            }
            Err(e) => return Err(Failure::Source(e)),
        };
        total += n as u64;
        if total > entry.size {
            return Err(Failure::Entry(format!(
                "the backup holds more than the {} bytes its header announces; not restored",
                entry.size
            )));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(Failure::from_io)?;
    }
    if total != entry.size {
        return Err(Failure::Entry(format!(
            "the backup holds {total} bytes for it, {} expected; not restored",
            entry.size
        )));
    }
    if let (Some(h), Some(want)) = (hasher, entry.sha256.filter(|_| !entry.sha256_stored)) {
        let got: [u8; 32] = h.finalize().into();
        if got != want {
            return Err(Failure::Entry(
                "its content does not match the sha256 the backup lists for it; not restored"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// A read error of a file's content, as a failure of this entry (damaged data) or of the source.
fn read_failure(e: io::Error) -> Failure {
    match e.kind() {
        // The source says its data is invalid (an encrypted chunk that does not authenticate, a sparse member that
        // is not what the index says): this entry's content is damaged, the rest of the backup may not be.
        io::ErrorKind::InvalidData => Failure::Entry(format!(
            "its content in the backup is damaged ({e}); not restored"
        )),
        _ => Failure::Source(e),
    }
}

/// Writes a sparse file: each data segment of `map` read from `data` and written at its offset, the holes left
/// unwritten, and the file sized with `ftruncate`. `data` must hold exactly the segments' bytes.
fn write_sparse(
    file: &File,
    map: &SparseMap,
    data: &mut dyn Read,
    entry: &RestoreEntry,
    buf: &mut [u8],
) -> Result<(), Failure> {
    use std::os::unix::fs::FileExt;
    if map.size() != entry.size {
        return Err(Failure::Entry(format!(
            "its sparse map is of a file of {} bytes, its header says {}; not restored",
            map.size(),
            entry.size
        )));
    }
    let mut written = 0u64;
    for seg in map.segments() {
        let mut left = seg.len;
        let mut at = seg.offset;
        while left > 0 {
            let want = buf.len().min(left.min(usize::MAX as u64) as usize);
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Failure::Entry(format!(
                        "the backup holds {written} bytes of data for it, its sparse map {}; not restored",
                        map.data_bytes()
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_failure(e)),
            };
            file.write_all_at(&buf[..n], at).map_err(Failure::from_io)?;
            written += n as u64;
            at += n as u64;
            left -= n as u64;
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match data.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Failure::Entry(format!(
                    "the backup holds more than the {} bytes of data its sparse map names; not restored",
                    map.data_bytes()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failure(e)),
        }
    }
    file.set_len(map.size()).map_err(Failure::from_io)?;
    Ok(())
}

/// Syncs a written file and gives it its owner, mode, attributes and mtime. Returns its (dev, ino).
fn finish_file(
    file: &File,
    entry: &RestoreEntry,
    mode: u32,
    opts: &super::RestoreOptions,
    tally: &mut AttrTally,
) -> Result<(u64, u64), Failure> {
    let (privileged, fsync) = (opts.privileged, opts.fsync);
    if fsync {
        rustix::fs::fsync(file).map_err(|e| Failure::from_io(e.into()))?;
    }
    let fd = file.as_fd();
    (|| {
        // Before chmod: chown clears setuid/setgid.
        give_owner(opts, entry, |u, g| rustix::fs::fchown(fd, u, g))?;
        give_mode(opts, || rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)))?;
        attrs::apply(On::Fd(fd), entry.attrs.as_deref(), false, privileged, tally);
        rustix::fs::futimens(fd, &times(entry.mtime, !opts.modes_and_owners))?;
        let st = rustix::fs::fstat(fd)?;
        let f = Found::from(st);
        Ok((f.dev, f.ino))
    })()
    .map_err(|e: Errno| Failure::from_io(e.into()))
}

/// Opens the user's directory `dir` to them (0700 added) when it does not let them write into it (a 0500 directory
/// restored before, unprivileged): its mode and mtime before, to put back once filled. `None` when they may write
/// already, or it is not theirs (then writing fails as it must).
fn open_to_owner(dir: BorrowedFd<'_>) -> Result<Option<(u32, Mtime)>, Errno> {
    let st = rustix::fs::fstat(dir)?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid != rustix::process::geteuid().as_raw() || mode & 0o300 == 0o300 {
        return Ok(None);
    }
    rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | 0o700))?;
    let mtime = Mtime {
        sec: st.st_mtime,
        nsec: st.st_mtime_nsec as u32,
    };
    Ok(Some((mode, mtime)))
}

/// Whether the destination is still what planning saw: same kind and inode (and, for non-directories, size and
/// mtime; a directory's mtime moves as its entries are restored).
fn same_thing(planned: Option<Found>, live: Option<Found>) -> bool {
    match (planned, live) {
        (None, None) => true,
        (Some(p), Some(l)) => {
            p.kind == l.kind
                && p.dev == l.dev
                && p.ino == l.ino
                && (p.kind == FoundKind::Dir || (p.size == l.size && p.mtime == l.mtime))
        }
        _ => false,
    }
}

/// The first field in which the entry handed over differs from the one planned.
fn differs(given: &RestoreEntry, planned: &RestoreEntry) -> Option<&'static str> {
    if given.kind != planned.kind {
        Some("type")
    } else if given.size != planned.size {
        Some("size")
    } else if given.mode != planned.mode {
        Some("mode")
    } else if given.mtime != planned.mtime {
        Some("mtime")
    } else if (given.uid, given.gid) != (planned.uid, planned.gid) {
        Some("owner")
    } else if given.link != planned.link {
        Some("link target")
    } else if given.sha256.is_some() && planned.sha256.is_some() && given.sha256 != planned.sha256 {
        Some("sha256")
    } else {
        None
    }
}

/// Gives an entry its owner through `chown` (owner, group): privileged, both (a failure fails the entry); without
/// privileges, its group alone when the user is in it ([`owners::Me::group`]), else nothing: it stays the user's, and a
/// group the filesystem does not take leaves it theirs too (counted by the caller, not failed). Whether the entry now
/// has its group; nothing is given, and nothing counted, where the target's filesystem keeps no owners (FAT, exFAT).
fn give_owner(
    opts: &RestoreOptions,
    entry: &RestoreEntry,
    chown: impl FnOnce(Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) -> Result<(), Errno>,
) -> Result<bool, Errno> {
    if !opts.modes_and_owners {
        return Ok(true);
    }
    if opts.privileged {
        chown(Some(uid(entry.uid)), Some(gid(entry.gid)))?;
        return Ok(true);
    }
    Ok(opts
        .me
        .group(entry.gid)
        .is_some_and(|g| chown(None, Some(gid(g))).is_ok()))
}

/// Gives an entry its mode through `chmod`, unless the target's filesystem keeps none (FAT, exFAT: there a setuid
/// or sticky bit is refused, and every other mode shows as the mount's).
fn give_mode(
    opts: &RestoreOptions,
    chmod: impl FnOnce() -> Result<(), Errno>,
) -> Result<(), Errno> {
    match opts.modes_and_owners {
        true => chmod(),
        false => Ok(()),
    }
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn walk_io(e: WalkError) -> io::Error {
    match e {
        WalkError::Io(_, e) => e,
        WalkError::Symlink(p) => io::Error::other(format!("{} is a symlink", p.display())),
        WalkError::NotDir(p, k) => io::Error::other(format!("{} is a {}", p.display(), k.word())),
        WalkError::Missing(p) => io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is missing", p.display()),
        ),
    }
}
