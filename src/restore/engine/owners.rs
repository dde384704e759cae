//! Owners a restore could not give back: run as a normal user, every entry it writes is that user's, whatever owner
//! and group the backup gives it (another user's file, a directory of root's), since only root can give a file away.
//! The restore counts them ([`OwnerTally`]) and gives one warning with the count and what to do, never silence and
//! never one line per file; the rest of the restore is not failed for it.

use std::collections::BTreeSet;

use serde::Serialize;

/// At most this many owners are named in the warning (the count says how many entries).
const NAMED: usize = 4;

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
    /// Counts an entry written by the user `me` (uid, gid) that the backup gives to `owner`, when they differ.
    pub fn count(&mut self, owner: (u32, u32), me: (u32, u32)) {
        if owner == me {
            return;
        }
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
        Some(format!(
            "{} restored into {target} as yours, not with the owner or group the backup gives {} ({}): only root \
             can restore owners; everything else was restored. To give them their owners, run the same restore \
             again as root (sudo dbackup restore ...)",
            crate::stdx::counted(self.entries, "entry was", "entries were"),
            if self.entries == 1 { "it" } else { "them" },
            owners.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_names_a_few_owners_and_counts_every_entry() {
        let mut t = OwnerTally::default();
        t.count((1000, 1000), (1000, 1000));
        assert_eq!(t.warning("/r"), None);
        for u in 0..6 {
            t.count((1234 + u, 1234), (1000, 1000));
        }
        t.count((1234, 1234), (1000, 1000));
        let mut two = OwnerTally::default();
        two.count((0, 0), (1000, 1000));
        two.count((0, 0), (1000, 1000));
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
