//! Owner and group names to ids through this machine's databases (`getpwnam_r`, `getgrnam_r`: NSS included).

use std::ffi::CString;

/// The uid of a user name on this machine, if it has one.
pub fn uid_of_name(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    lookup(|buf, len| {
        // SAFETY: `pwd`, `buf` and `result` are valid for the call; `buf` is `len` bytes; the answer is read from
        // `pwd` only when `result` says it was filled.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(c.as_ptr(), &mut pwd, buf, len, &mut result);
            (rc, (!result.is_null()).then_some(pwd.pw_uid))
        }
    })
}

/// The gid of a group name on this machine, if it has one.
pub fn gid_of_name(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    lookup(|buf, len| {
        // SAFETY: as in `uid_of_name`, with a `group`.
        unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(c.as_ptr(), &mut grp, buf, len, &mut result);
            (rc, (!result.is_null()).then_some(grp.gr_gid))
        }
    })
}

/// Calls `f` with a buffer, growing it while the answer does not fit (`ERANGE`), up to 1 MiB.
fn lookup(mut f: impl FnMut(*mut libc::c_char, usize) -> (i32, Option<u32>)) -> Option<u32> {
    let mut size = 4096;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match f(buf.as_mut_ptr(), buf.len()) {
            (0, id) => return id,
            (libc::ERANGE, _) if size < (1 << 20) => size *= 4,
            _ => return None,
        }
    }
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
    }
}
