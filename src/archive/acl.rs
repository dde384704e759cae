//! POSIX ACLs: the kernel's binary form (the `system.posix_acl_access` / `system.posix_acl_default` xattrs) to and
//! from the text form GNU tar and star store in `SCHILY.acl.access` / `SCHILY.acl.default`.
//!
//! Hand-written because the crates that handle ACLs (`exacl`, `posix-acl`) link libacl through FFI (headers and
//! libclang at build time) and work on files, while this needs only the two conversions of a value already read
//! with `getxattr`: 4 bytes of version, then 8 bytes per entry (tag, permissions, id), as `linux/posix_acl_xattr.h`
//! lays it out.
//!
//! Text is written as `acl_to_text` does, one entry a line (`user::rw-`, `user:1000:rwx`, `group::r--`,
//! `mask::rwx`, `other::r--`), with numeric ids (owners are numeric throughout dbackup's archives; a restore on
//! another machine maps ids, not names). Text is read as `acl_from_text` and GNU tar read it: entries separated by
//! newlines or commas, `#` comments, short tags (`u:`, `g:`, `m:`, `o:`), user and group names (looked up on this
//! machine) and star's fourth field (the numeric id after the permissions), which wins over the name.

/// The version in the header of the binary form.
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id field of entries that have none.
const NO_ID: u32 = u32::MAX;
/// More entries than any filesystem holds (ext4 fits about 500 in a block; xfs allows 25 000 in v5).
const MAX_ENTRIES: usize = 32_768;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    tag: u16,
    id: u32,
    perm: u16,
}

/// Why an ACL could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("the binary ACL is malformed ({0})")]
    Binary(String),
    #[error("the ACL text is malformed ({0})")]
    Text(String),
    #[error("the ACL names {what} {name:?}, who does not exist on this machine")]
    UnknownName { what: &'static str, name: String },
}

/// Whether an access ACL says nothing more than the mode bits (only the owner, group and other entries): then it
/// is not stored (the kernel does not keep one either).
pub fn is_minimal(binary: &[u8]) -> bool {
    decode(binary).is_ok_and(|es| {
        es.iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    })
}

fn decode(binary: &[u8]) -> Result<Vec<Entry>, AclError> {
    let bad = |s: &str| AclError::Binary(s.to_string());
    if binary.len() < 4 || !(binary.len() - 4).is_multiple_of(8) {
        return Err(bad("its length is not 4 + 8 per entry"));
    }
    let version = u32::from_le_bytes(binary[..4].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(AclError::Binary(format!("version {version}, 2 expected")));
    }
    if (binary.len() - 4) / 8 > MAX_ENTRIES {
        return Err(bad("too many entries"));
    }
    binary[4..]
        .chunks_exact(8)
        .map(|c| {
            let tag = u16::from_le_bytes([c[0], c[1]]);
            let perm = u16::from_le_bytes([c[2], c[3]]);
            let id = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            if !matches!(tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER) {
                return Err(AclError::Binary(format!("unknown tag {tag:#x}")));
            }
            if perm & !7 != 0 {
                return Err(AclError::Binary(format!(
                    "unknown permission bits {perm:#o}"
                )));
            }
            Ok(Entry { tag, id, perm })
        })
        .collect()
}

fn perm_text(p: u16) -> [u8; 3] {
    [
        if p & 4 != 0 { b'r' } else { b'-' },
        if p & 2 != 0 { b'w' } else { b'-' },
        if p & 1 != 0 { b'x' } else { b'-' },
    ]
}

/// The text form of a binary ACL: one entry a line, no trailing newline (as GNU tar stores it), numeric ids.
pub fn to_text(binary: &[u8]) -> Result<String, AclError> {
    let entries = decode(binary)?;
    let mut lines = Vec::with_capacity(entries.len());
    for e in entries {
        let (tag, id) = match e.tag {
            USER_OBJ => ("user", None),
            USER => ("user", Some(e.id)),
            GROUP_OBJ => ("group", None),
            GROUP => ("group", Some(e.id)),
            MASK => ("mask", None),
            _ => ("other", None),
        };
        let perm = String::from_utf8(perm_text(e.perm).to_vec()).expect("ascii");
        lines.push(format!(
            "{tag}:{}:{perm}",
            id.map(|i| i.to_string()).unwrap_or_default()
        ));
    }
    Ok(lines.join("\n"))
}

/// The binary form of an ACL in text form (see the module's notes for what is accepted), sorted as the kernel
/// wants it and checked as `acl_valid` checks it.
pub fn from_text(text: &str) -> Result<Vec<u8>, AclError> {
    from_text_with(text, &lookup_name)
}

/// [`from_text`] with the name lookup given (tests).
fn from_text_with(
    text: &str,
    lookup: &dyn Fn(bool, &str) -> Option<u32>,
) -> Result<Vec<u8>, AclError> {
    let bad = |s: String| AclError::Text(s);
    let mut entries = Vec::new();
    for raw in text.split(['\n', ',']) {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            return Err(bad("too many entries".into()));
        }
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        let (tag, qualifier, perms, star_id) = match fields.as_slice() {
            [t, q, p] => (*t, *q, *p, None),
            [t, q, p, id] => (*t, *q, *p, Some(*id)),
            // `other::r--` may be written `other:r--` (and `mask:rwx`).
            [t, p] if matches!(*t, "other" | "o" | "mask" | "m") => (*t, "", *p, None),
            _ => {
                return Err(bad(format!(
                    "entry {line:?} is not tag:qualifier:permissions"
                )));
            }
        };
        let user = match tag {
            "user" | "u" => true,
            "group" | "g" => false,
            "mask" | "m" | "other" | "o" if qualifier.is_empty() => {
                let tag = if tag.starts_with('m') { MASK } else { OTHER };
                entries.push(Entry {
                    tag,
                    id: NO_ID,
                    perm: parse_perm(perms)
                        .ok_or_else(|| bad(format!("bad permissions {perms:?}")))?,
                });
                continue;
            }
            _ => return Err(bad(format!("unknown entry {line:?}"))),
        };
        let perm = parse_perm(perms).ok_or_else(|| bad(format!("bad permissions {perms:?}")))?;
        let (tag, id) = if qualifier.is_empty() {
            (if user { USER_OBJ } else { GROUP_OBJ }, NO_ID)
        } else {
            let id = match star_id.and_then(|s| s.parse::<u32>().ok()) {
                Some(id) => id,
                None => match qualifier.parse::<u32>() {
                    Ok(id) => id,
                    Err(_) => lookup(user, qualifier).ok_or_else(|| AclError::UnknownName {
                        what: if user { "user" } else { "group" },
                        name: qualifier.to_string(),
                    })?,
                },
            };
            if id == NO_ID {
                return Err(bad(format!("id {id} in {line:?}")));
            }
            (if user { USER } else { GROUP }, id)
        };
        entries.push(Entry { tag, id, perm });
    }
    entries.sort();
    let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
    if count(USER_OBJ) != 1 || count(GROUP_OBJ) != 1 || count(OTHER) != 1 {
        return Err(bad(
            "it needs exactly one user::, group:: and other:: entry".into(),
        ));
    }
    let named = count(USER) + count(GROUP);
    if count(MASK) > 1 || (named > 0 && count(MASK) == 0) {
        return Err(bad(
            "it needs one mask:: entry when it names users or groups".into(),
        ));
    }
    if entries
        .windows(2)
        .any(|w| (w[0].tag, w[0].id) == (w[1].tag, w[1].id))
    {
        return Err(bad("an entry is given twice".into()));
    }
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    Ok(out)
}

/// `rwx`, `r--`, `rw`, `-`: the letters present, dashes ignored.
fn parse_perm(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 {
        return None;
    }
    let mut p = 0;
    for c in s.chars() {
        p |= match c {
            'r' => 4,
            'w' => 2,
            'x' => 1,
            '-' => 0,
            _ => return None,
        };
    }
    Some(p)
}

/// A user's (or group's) id by name on this machine.
fn lookup_name(user: bool, name: &str) -> Option<u32> {
    if user {
        crate::stdx::uid_of_name(name.as_bytes())
    } else {
        crate::stdx::gid_of_name(name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The value `setfacl -m u:1000:rwx,g:100:r-x` left on a file with mode 0644 (read back with getfattr).
    const SETFACL: &str = "0200000001000600ffffffff02000700e803000004000400ffffffff080005006400000010000700ffffffff20000400ffffffff";

    #[test]
    fn the_kernel_form_reads_as_gnu_tar_writes_it() {
        let b = data_encoding::HEXLOWER.decode(SETFACL.as_bytes()).unwrap();
        let text = to_text(&b).unwrap();
        assert_eq!(
            text,
            "user::rw-\nuser:1000:rwx\ngroup::r--\ngroup:100:r-x\nmask::rwx\nother::r--"
        );
        assert_eq!(from_text(&text).unwrap(), b, "and back, byte for byte");
        assert!(!is_minimal(&b));
        assert!(is_minimal(&bin(&[
            (USER_OBJ, 6, NO_ID),
            (GROUP_OBJ, 4, NO_ID),
            (OTHER, 4, NO_ID)
        ])));
    }

    #[test]
    fn text_from_other_writers_is_read() {
        let names = |user: bool, n: &str| match (user, n) {
            (true, "alice") => Some(1000),
            (false, "users") => Some(100),
            _ => None,
        };
        let want = data_encoding::HEXLOWER.decode(SETFACL.as_bytes()).unwrap();
        for text in [
            // GNU tar 1.34 with names, in any order.
            "user::rw-\nuser:alice:rwx\ngroup::r--\ngroup:users:r-x\nmask::rwx\nother::r--",
            "other::r--,mask::rwx,group:users:r-x,group::r--,user:alice:rwx,user::rw-",
            // star: the id after the permissions wins over the name.
            "user::rw-:\nuser:nobody-here:rwx:1000\ngroup::r--\ngroup:users:r-x:100\nmask::rwx\nother::r--",
            // short tags, comments, short permissions, blanks.
            "u::rw\n u:1000:rwx\t#effective:rwx\ng::r\ng:100:rx\nm::rwx\no::r\n",
            "user::rw-\nuser:1000:rwx\ngroup::r--\ngroup:100:r-x\nmask:rwx\nother:r--",
        ] {
            assert_eq!(from_text_with(text, &names).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn invalid_acls_are_refused() {
        let names = |_: bool, _: &str| None;
        for text in [
            "",
            "user::rw-\ngroup::r--",
            "user::rw-\nuser::rw-\ngroup::r--\nother::r--",
            "user::rw-\nuser:5:rwx\ngroup::r--\nother::r--",
            "user::rw-\nuser:5:rwx\nuser:5:r--\ngroup::r--\nmask::rwx\nother::r--",
            "user::rwz\ngroup::r--\nother::r--",
            "user::rw-\ngroup::r--\nother::r--\nbogus::r--",
            "user::rw-\nuser:4294967295:r--\ngroup::r--\nmask::r--\nother::r--",
        ] {
            assert!(from_text_with(text, &names).is_err(), "{text:?}");
        }
        assert_eq!(
            from_text_with(
                "user::rw-\nuser:ghost:r--\ngroup::r--\nmask::r--\nother::r--",
                &names
            ),
            Err(AclError::UnknownName {
                what: "user",
                name: "ghost".into()
            })
        );
        for b in [
            vec![],
            vec![2, 0, 0, 0, 1],
            bin(&[(0x40, 7, 0)]),
            bin(&[(USER_OBJ, 8, NO_ID)]),
            {
                let mut b = bin(&[(USER_OBJ, 6, NO_ID)]);
                b[0] = 1;
                b
            },
        ] {
            assert!(to_text(&b).is_err(), "{b:?}");
        }
    }
}
