//! The one escaper for strings that come from a drive, an archive, an index or a file name: what people see.

use std::fmt::Write as _;

/// A name as people should see it: UTF-8 as is, other bytes as `\xNN`, and control characters escaped, so a
/// hostile name (`"x\ncreate /etc/passwd"`, an ESC sequence) can never forge a line of a plan or a report nor drive
/// the terminal. Every string read from a drive, an archive, an index or a file name is printed through this.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`show`] for text that is already a `str` (a set name from `backup.json`, a JSON string from an index).
pub fn show_str(s: &str) -> String {
    show(s.as_bytes())
}

/// [`show`] for a path (a file name from a snapshot, a path built from names a drive gave).
pub fn show_path(path: &std::path::Path) -> String {
    show(path.as_os_str().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_invalid_bytes_are_visible() {
        assert_eq!(show(b"a/b c"), "a/b c");
        assert_eq!(show("d\u{e9}j\u{e0}".as_bytes()), "d\u{e9}j\u{e0}");
        assert_eq!(show(b"x\ncreate /etc/passwd"), "x\\ncreate /etc/passwd");
        assert_eq!(show(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(show(b"a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(show(b"back\\slash"), "back\\\\slash");
        assert_eq!(show(b"nul\0cr\r"), "nul\\x00cr\\r");
        assert_eq!(show_str("set\u{9b}31m"), "set\\xc2\\x9b31m");
    }
}
