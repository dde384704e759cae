//! Owners a restore could not give back: run as a normal user, every entry it writes is that user's, whatever owner
//! the backup gives it (another user's file, a directory of root's), since only root can give a file away; its group
//! is the one the backup gives it when the user is in that group ([`Me`]: a file's owner may give it any of their
//! groups, as `chown :group` and `rsync -g` do), else the user's own. The restore counts the entries whose owner or
//! group it could not give ([`OwnerTally`]) and gives one warning with the count and what to do, never silence and
//! never one line per file; the rest of the restore is not failed for it.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Action, EntryKind, PlanItem};

/// At most this many owners are named in the warning (the count says how many entries).
const NAMED: usize = 4;

/// The running user, as a restore without privileges can give owners: their uid, and the groups they are in (their
/// effective gid and supplementary groups), read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub uid: u32,
    /// Sorted.
    groups: Vec<u32>,
}

impl Me {
    /// The running user (effective uid and gid, and `getgroups`; a user whose groups cannot be read is in their
    /// own alone).
    pub fn current() -> Me {
        let gid = rustix::process::getegid().as_raw();
        let mut groups: Vec<u32> = rustix::process::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        groups.push(gid);
        Me::new(rustix::process::geteuid().as_raw(), groups)
    }

    pub fn new(uid: u32, mut groups: Vec<u32>) -> Me {
        groups.sort_unstable();
        groups.dedup();
        Me { uid, groups }
    }

    /// The group an entry of group `gid` is given by this user: `gid` when they are in it (the owner of a file may
    /// give it any group they are in), else `None` (it stays theirs).
    pub fn group(&self, gid: u32) -> Option<u32> {
        self.groups.binary_search(&gid).is_ok().then_some(gid)
    }

    /// Whether this user's restore changes the group `found` of an entry the backup gives the group `gid`: it gives
    /// the groups the user is in ([`Me::group`]), so an entry found with another is not as the backup has it; an
    /// owner or group the user cannot give is left as found.
    pub fn regroups(&self, gid: u32, found: u32) -> bool {
        self.group(gid).is_some_and(|g| g != found)
    }

    /// Whether an entry the backup gives to `owner` (uid, gid) keeps that owner and group when this user restores it.
    pub fn keeps(&self, owner: (u32, u32)) -> bool {
        owner.0 == self.uid && self.group(owner.1).is_some()
    }
}

/// Whether a restore without privileges counts `item` when it does not keep the owner the backup gives it. A hard
/// link's owner is its file's, counted with it. A directory of root's is, in a user's restore, one above the set's
/// sources (`/home`, `/srv`): made the user's in a target of their own, as it must be, and a warning on every such
/// restore would teach them to pass over the warning.
pub fn counted(item: &PlanItem) -> bool {
    let above = item.kind == EntryKind::Dir && item.entry.uid == 0;
    item.kind != EntryKind::Hardlink && !above
}

/// Whether a restore without privileges counts `item`, left unchanged, as not having the owner the backup gives it:
/// one of the entries it counts ([`counted`]) found with another owner or group (one the user cannot give: a group
/// they can give makes it changed, [`Me::regroups`]). Left as it is, not rewritten on every run, and not dropped
/// from the warning either.
pub fn left_without(item: &PlanItem) -> bool {
    let owner = (item.entry.uid, item.entry.gid);
    item.action == Action::Unchanged
        && counted(item)
        && item.found.is_some_and(|f| (f.uid, f.gid) != owner)
}

/// The entries restored with the running user as owner though the backup gives them another owner or group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OwnerTally {
    pub entries: u64,
    /// The first few owners (uid, gid) the backup gives them.
    pub owners: BTreeSet<(u32, u32)>,
    /// More owners than those named.
    pub more: bool,
}

impl OwnerTally {
    /// Counts an entry written by the user `me` that the backup gives to `owner`, unless `me` keeps that owner.
    pub fn count(&mut self, owner: (u32, u32), me: &Me) {
        if me.keeps(owner) {
            return;
        }
        self.lost(owner);
    }

    /// Counts an entry not given the `owner` (uid, gid) the backup gives it.
    pub fn lost(&mut self, owner: (u32, u32)) {
        self.entries += 1;
        self.name(owner);
    }

    fn name(&mut self, owner: (u32, u32)) {
        if self.owners.len() < NAMED {
            self.owners.insert(owner);
        } else if !self.owners.contains(&owner) {
            self.more = true;
        }
    }

    /// Counts `other` in too (another path of the same restore into the same target).
    pub fn add(&mut self, other: &OwnerTally) {
        self.entries += other.entries;
        self.more |= other.more;
        for o in &other.owners {
            self.name(*o);
        }
    }

    /// The one warning, or `None` when every entry has the owner the backup gives it.
    pub fn warning(&self, target: &str) -> Option<String> {
        self.said(target, false)
    }

    /// The warning of a dry run, before the restore: what [`OwnerTally::warning`] will say.
    pub fn forecast(&self, target: &str) -> Option<String> {
        self.said(target, true)
    }

    fn said(&self, target: &str, ahead: bool) -> Option<String> {
        if self.entries == 0 {
            return None;
        }
        let mut owners: Vec<String> = self
            .owners
            .iter()
            .map(|(u, g)| format!("uid {u} gid {g}"))
            .collect();
        if self.more {
            owners.push("...".into());
        }
        let (was, were, rest, again) = match ahead {
            false => ("entry was", "entries were", "was", " again"),
            true => ("entry would be", "entries would be", "would be", ""),
        };
        Some(format!(
            "{} restored into {target} as yours, not with the owner or group the backup gives {} ({}): only root \
             can restore owners; everything else {rest} restored. To give them their owners, run the same restore\
             {again} as root (sudo dbackup restore ...)",
            crate::stdx::counted(self.entries, was, were),
            if self.entries == 1 { "it" } else { "them" },
            owners.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keeps_their_own_uid_with_any_group_they_are_in() {
        let me = Me::new(1000, vec![2000, 1000, 2000, 3000]);
        assert_eq!(me.group(2000), Some(2000));
        assert_eq!(me.group(4000), None);
        assert!(me.keeps((1000, 1000)) && me.keeps((1000, 3000)));
        assert!(!me.keeps((1000, 4000)) && !me.keeps((1001, 1000)));
        let mut t = OwnerTally::default();
        for owner in [(1000, 2000), (1000, 4000), (1001, 1000)] {
            t.count(owner, &me);
        }
        assert_eq!(t.entries, 2);
        assert_eq!(t.owners, [(1000, 4000), (1001, 1000)].into());
    }

    #[test]
    fn a_group_the_user_can_give_is_changed_and_one_they_cannot_is_left() {
        let me = Me::new(1000, vec![1000, 2000]);
        assert!(
            me.regroups(2000, 1000),
            "found with their own, the backup's is theirs to give"
        );
        assert!(!me.regroups(2000, 2000));
        assert!(
            !me.regroups(4000, 1000),
            "not theirs to give: left as found"
        );
    }

    #[test]
    fn one_warning_names_a_few_owners_and_counts_every_entry() {
        let me = &Me::new(1000, vec![1000]);
        let mut t = OwnerTally::default();
        t.count((1000, 1000), me);
        assert_eq!(t.warning("/r"), None);
        for u in 0..6 {
            t.count((1234 + u, 1234), me);
        }
        t.count((1234, 1234), me);
        let mut two = OwnerTally::default();
        two.count((0, 0), me);
        two.count((0, 0), me);
        assert!(
            two.warning("/r")
                .unwrap()
                .contains("them (uid 0 gid 0): only root")
        );
        let w = t.warning("/r").unwrap();
        assert!(
            w.starts_with("7 entries were restored into /r as yours"),
            "{w}"
        );
        assert!(
            w.contains(
                "(uid 1234 gid 1234, uid 1235 gid 1234, uid 1236 gid 1234, uid 1237 gid 1234, ...)"
            ),
            "{w}"
        );
        assert!(
            w.ends_with("run the same restore again as root (sudo dbackup restore ...)"),
            "{w}"
        );
    }
}
