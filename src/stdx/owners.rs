//! Owner and group names to ids, and a user's home, through this machine's databases (NSS included), by `nix`'s
//! `User::from_name`/`Group::from_name` (`getpwnam_r`/`getgrnam_r` with a buffer grown until the entry fits).
//! A name that is not UTF-8 has no entry here (`nix` takes `&str`; user and group names are portable ASCII).

use std::path::PathBuf;

use nix::unistd::{Group, User};

/// The uid of a user name on this machine, if it has one.
pub fn uid_of_name(name: &[u8]) -> Option<u32> {
    user(name).map(|u| u.uid.as_raw())
}

/// The gid of a group name on this machine, if it has one.
pub fn gid_of_name(name: &[u8]) -> Option<u32> {
    let name = std::str::from_utf8(name).ok()?;
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A user's home directory, from the password database.
pub fn home_of_name(name: &[u8]) -> Option<PathBuf> {
    user(name).map(|u| u.dir)
}

fn user(name: &[u8]) -> Option<User> {
    let name = std::str::from_utf8(name).ok()?;
    User::from_name(name).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_zero_and_unknown_names_are_none() {
        assert_eq!(uid_of_name(b"root"), Some(0));
        assert_eq!(gid_of_name(b"root"), Some(0));
        assert_eq!(uid_of_name(b"no-such-user-dbackup"), None);
        assert_eq!(gid_of_name(b"no-such-group-dbackup"), None);
        assert_eq!(uid_of_name(b"nul\0inside"), None);
        assert!(home_of_name(b"root").is_some_and(|h| h.is_absolute()));
        assert_eq!(home_of_name(b"no-such-user-dbackup"), None);
    }
}
