//! One entry's decision in a restore plan ([`PlanItem`], its [`Action`]), the shape that planning
//! ([`super::plan`]), the judging of links ([`super::links`]) and the applier ([`super::apply`]) share.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::entry::{EntryKind, RestoreEntry, show};
use super::safety::{Refusal, RelPath};
use super::target::Found;

/// What restoring an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing is there: it is made.
    Create,
    /// Something different is there: it is replaced (for a directory: its owner, mode and mtime are set).
    Replace,
    /// The same thing is there: it is left untouched.
    Unchanged,
    /// Something is there and the overwrite policy keeps it (or the entry is not restorable by nature: a socket,
    /// the target root itself).
    Skip,
    /// Not restored, for the reason given: the restore fails.
    Refuse,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Unchanged => "unchanged",
            Action::Skip => "skip",
            Action::Refuse => "refuse",
        }
    }
}

/// One entry's decision.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    /// The checked name, relative to the target (the raw name, escaped, when the name itself is refused).
    pub path: String,
    /// Its [`EntryKind::word`] (`char-device`, not the index's `char`).
    #[serde(serialize_with = "EntryKind::serialize_word")]
    pub kind: EntryKind,
    pub action: Action,
    /// Content bytes (files).
    pub size: u64,
    /// The mode it gets (setuid/setgid possibly dropped: see the notes).
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// Why it is refused, as data (`reason` says it in words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// Why it is skipped or refused, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// For a symlink (or a hard link to one) that leads outside the target once the restore is done: where to, as
    /// resolved against the plan and the target ([`super::links`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escapes_to: Option<String>,
    /// A missing parent directory the backup does not describe, made (owner-only) to hold what it does.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
    /// The entry as the source gave it.
    #[serde(skip)]
    pub entry: RestoreEntry,
    #[serde(skip)]
    pub(crate) rel: Option<RelPath>,
    /// What was at the destination when planning.
    #[serde(skip)]
    pub(crate) found: Option<Found>,
    /// For a hard link: the item it links to.
    #[serde(skip)]
    pub(crate) link_item: Option<usize>,
    /// What is there now differs from the backup and is kept here before it is replaced (see
    /// [`super::displace`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displaced_to: Option<PathBuf>,
}

impl PlanItem {
    pub(super) fn new(entry: RestoreEntry) -> PlanItem {
        PlanItem {
            path: show(&entry.name),
            kind: entry.kind,
            action: Action::Create,
            size: entry.size,
            mode: entry.mode,
            refusal: None,
            reason: None,
            notes: Vec::new(),
            escapes_to: None,
            implicit: false,
            entry,
            rel: None,
            found: None,
            link_item: None,
            displaced_to: None,
        }
    }

    /// Whether applying it reads content: the caller must hand a reader to [`super::Applier::apply`].
    pub fn needs_content(&self) -> bool {
        self.kind == EntryKind::File && matches!(self.action, Action::Create | Action::Replace)
    }

    /// Content bytes written when applied.
    pub fn bytes(&self) -> u64 {
        if self.kind == EntryKind::File {
            self.size
        } else {
            0
        }
    }

    pub(crate) fn refuse(&mut self, why: Refusal) {
        self.action = Action::Refuse;
        self.reason = Some(why.to_string());
        self.refusal = Some(why);
    }

    pub(super) fn skip(&mut self, why: impl Into<String>) {
        self.action = Action::Skip;
        self.reason = Some(why.into());
    }
}

fn octal<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// What a hard link item finally links to (the first name of its chain), or the item itself.
pub(crate) fn link_root(items: &[PlanItem], mut idx: usize) -> &PlanItem {
    for _ in 0..items.len() {
        match items[idx].link_item {
            Some(next) if items[idx].kind == EntryKind::Hardlink => idx = next,
            _ => break,
        }
    }
    &items[idx]
}
