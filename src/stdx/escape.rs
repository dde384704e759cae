//! The one escaper for strings that come from a drive, an archive, an index or a file name: what people see.

use std::fmt::Write as _;

/// A name as people should see it: UTF-8 as is, other bytes as `\xNN`, and control characters escaped, so a
/// hostile name (`"x\ncreate /etc/passwd"`, an ESC sequence) can never forge a line of a plan or a report nor drive
/// the terminal. The invisible characters that reorder or hide text ([`disguises`]: bidi overrides, line separators,
/// zero-width spaces) are escaped too, so `invoice\u{202e}fdp.exe` cannot pass for `invoiceexe.pdf`. A name longer
/// than [`MAX_SHOWN`] bytes is cut there, saying how long it was. Every string read from a drive, an archive, an index
/// or a file name is printed through this.
pub fn show(bytes: &[u8]) -> String {
    if bytes.len() > MAX_SHOWN {
        // Cut at a character's boundary (a UTF-8 character is at most 4 bytes; its start is not a continuation byte).
        let cut = (MAX_SHOWN.saturating_sub(3)..=MAX_SHOWN)
            .rev()
            .find(|&i| bytes[i] & 0xc0 != 0x80)
            .unwrap_or(MAX_SHOWN);
        return format!("{}... ({} bytes in all)", show(&bytes[..cut]), bytes.len());
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() || disguises(c) => {
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

/// The most bytes of a name [`show`] shows (16 times `PATH_MAX`: no real name comes near it); a longer one is cut
/// there, saying how long it was.
pub const MAX_SHOWN: usize = 64 << 10;

/// Whether `c` is an invisible character that changes how the text around it looks: the bidi marks, embeddings,
/// overrides and isolates (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069), the line and paragraph separators
/// (U+2028/9) and the zero-width space, word joiner and BOM (U+200B, U+2060, U+FEFF), which make two names look
/// alike. The zero-width (non-)joiners are left alone: scripts and emoji need them.
fn disguises(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// [`show`] for text that is already a `str` (a set name from `backup.json`, a JSON string from an index).
pub fn show_str(s: &str) -> String {
    show(s.as_bytes())
}

/// [`show`] for a path (a file name from a snapshot, a path built from names a drive gave).
pub fn show_path(path: &std::path::Path) -> String {
    show(path.as_os_str().as_encoded_bytes())
}

/// One word for a POSIX shell: as is when it is plain, else in single quotes. `~/` at the start stays outside the
/// quotes, so the shell still expands it. A word the escaper would change (control characters, invalid bytes, a
/// backslash) is written visible in bash's `$'...'`, whose escapes are the escaper's, so it still pastes exactly.
pub fn shell_word(s: &str) -> String {
    let shown = show_str(s);
    if shown != s {
        return format!("$'{}'", shown.replace('\'', r"\'"));
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    };
    if plain(s) {
        return s.to_string();
    }
    if let Some(rest) = s.strip_prefix("~/")
        && plain(rest)
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drive's 10 MiB name (a set name in `backup.json`, a string a JSON error quotes) is shown cut, saying how
    /// long it was: a note about it is a line, not 40 MiB of escapes.
    #[test]
    fn a_name_longer_than_any_real_one_is_shown_cut() {
        let long = vec![0x1b_u8; 10 << 20];
        let shown = show(&long);
        assert!(shown.len() <= 4 * MAX_SHOWN + 64, "{} bytes", shown.len());
        assert!(shown.starts_with("\\x1b\\x1b"), "{}", &shown[..16]);
        assert!(
            shown.ends_with("... (10485760 bytes in all)"),
            "{}",
            &shown[shown.len() - 40..]
        );
        let path = "p/".repeat(2048);
        assert_eq!(
            show(path.as_bytes()),
            path,
            "a path of PATH_MAX is shown whole"
        );
        // Cut inside a character: the cut is at a character's boundary.
        let wide = "é".repeat(MAX_SHOWN);
        let shown = show_str(&wide);
        assert!(
            shown.starts_with("éé") && shown.ends_with(" bytes in all)"),
            "{}",
            &shown[shown.len() - 40..]
        );
    }

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

    #[test]
    fn characters_that_reorder_or_hide_text_are_visible() {
        // A right-to-left override would show `invoice\u{202e}fdp.exe` as "invoiceexe.pdf".
        assert_eq!(
            show_str("invoice\u{202e}fdp.exe"),
            "invoice\\xe2\\x80\\xaefdp.exe"
        );
        assert_eq!(
            show_str("a\u{2066}b\u{2069}"),
            "a\\xe2\\x81\\xa6b\\xe2\\x81\\xa9"
        );
        assert_eq!(show_str("line\u{2028}forged"), "line\\xe2\\x80\\xa8forged");
        assert_eq!(
            show_str("\u{feff}a\u{200b}"),
            "\\xef\\xbb\\xbfa\\xe2\\x80\\x8b"
        );
        // Scripts and emoji keep their joiners; Arabic and Hebrew letters are shown as they are.
        for kept in [
            "\u{1f469}\u{200d}\u{1f4bb}",
            "\u{0645}\u{06cc}\u{200c}\u{062e}",
            "\u{05e9}\u{05dc}\u{05d5}\u{05dd}",
        ] {
            assert_eq!(show_str(kept), kept);
        }
    }
}
