//! The quoting and escaping rules of systemd unit files and udev rules, as pure string functions.
//!
//! - [`path_unit`]: `systemd-escape --path --suffix=mount` (`/media/payne/my-drive` -> `media-payne-my\x2ddrive.mount`).
//! - [`exec_word`] / [`setting_word`]: one word of an `ExecStart=` line or of a path or assignment list
//!   (`%` is a specifier, `$` a variable in `ExecStart=`; quotes when a word needs them).
//! - [`text`]: free text such as `Description=` (`%` is a specifier there too).
//! - [`udev_label`] / [`udev_uuid`]: the `ENV{ID_FS_LABEL}` / `ENV{ID_FS_UUID}` match value for a configured label or
//!   uuid, refusing what a udev match reads as a pattern (udev stores blkid's "safe" label: surrounding whitespace
//!   dropped, inner runs of it turned into `_`).
//!
//! `nix/lib.nix` implements the same rules with Nix builtins; the tests compare both with each other and with
//! `systemd-escape`.

use std::fmt::Write as _;
use std::path::Path;

/// Why a string cannot be put into a unit or a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    #[error("{what} {value:?} contains a control character, which a unit file cannot hold")]
    Control { what: &'static str, value: String },
    #[error("{what} {value:?} is not an absolute path")]
    Relative { what: &'static str, value: String },
    #[error("{what} {value:?} is not valid UTF-8")]
    NotUtf8 { what: &'static str, value: String },
    #[error(
        "{what} {value:?} cannot be matched by a udev rule (it contains one of * ? [ ] | \" \\ or a control \
         character); {next}"
    )]
    Udev {
        what: &'static str,
        value: String,
        /// What to do instead.
        next: &'static str,
    },
    #[error("{what} is empty, which no drive has")]
    Empty { what: &'static str },
}

/// `systemd-escape --path`: the unit-name form of an absolute, normalised path (`/` alone is `-`).
///
/// Slashes between components become `-`; bytes other than ASCII letters, digits, `:`, `_` and `.` become `\xNN`
/// (lower-case hex), and so does a `.` that starts the result.
pub fn path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let components: Vec<&[u8]> = p
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if components.is_empty() {
        return "-".to_string();
    }
    let mut out = String::new();
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, &b) in component.iter().enumerate() {
            let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.';
            if plain && !(i == 0 && j == 0 && b == b'.') {
                out.push(b as char);
            } else {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// The name of the mount unit for a mount point: `systemd-escape --path --suffix=mount`.
pub fn path_unit(p: &Path) -> String {
    format!("{}.mount", path(p))
}

/// Characters that never need quoting in a unit file word.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_.:,+=@-".contains(c)
}

/// One word of a unit file setting that systemd splits into words and expands specifiers in (`RequiresMountsFor=`,
/// `Environment=`): `%` doubled; quoted (with `\` and `"` escaped) when it holds anything but plain characters.
pub fn setting_word(what: &'static str, s: &str) -> Result<String, EscapeError> {
    word(what, s, false)
}

/// One word of an `ExecStart=` command line: like [`setting_word`], and `$` doubled (systemd expands `$VAR` there).
pub fn exec_word(what: &'static str, s: &str) -> Result<String, EscapeError> {
    word(what, s, true)
}

fn word(what: &'static str, s: &str, exec: bool) -> Result<String, EscapeError> {
    if s.chars().any(char::is_control) {
        return Err(EscapeError::Control {
            what,
            value: s.to_string(),
        });
    }
    let mut body = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => body.push_str("%%"),
            '$' if exec => body.push_str("$$"),
            '\\' => body.push_str("\\\\"),
            '"' => body.push_str("\\\""),
            c => body.push(c),
        }
    }
    if !s.is_empty() && s.chars().all(plain) {
        Ok(body)
    } else {
        Ok(format!("\"{body}\""))
    }
}

/// Free text of a setting that systemd expands specifiers in but does not split (`Description=`): `%` doubled.
pub fn text(s: &str) -> String {
    s.replace('%', "%%")
}

/// An absolute path as one word of a setting (see [`setting_word`]).
pub fn path_word(what: &'static str, p: &Path) -> Result<String, EscapeError> {
    let s = p.to_str().ok_or_else(|| EscapeError::NotUtf8 {
        what,
        value: p.to_string_lossy().into_owned(),
    })?;
    if !p.is_absolute() {
        return Err(EscapeError::Relative {
            what,
            value: s.to_string(),
        });
    }
    setting_word(what, s)
}

/// Characters a udev match value cannot hold literally: glob characters, `|` (which separates alternatives), quotes,
/// backslashes, control characters.
fn udev_unsafe(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '|' | '"' | '\\') || c.is_control()
}

/// The value udev's blkid builtin stores as `ID_FS_LABEL` for a filesystem labelled `label` (blkid's safe string:
/// surrounding whitespace dropped, each inner run of whitespace one `_`).
pub fn udev_label(label: &str) -> Result<String, EscapeError> {
    let what = "fs_label";
    if label.chars().any(udev_unsafe) {
        return Err(EscapeError::Udev {
            what,
            value: label.to_string(),
            next: "match the drive by fs_uuid instead",
        });
    }
    let words: Vec<&str> = label.split(|c: char| c.is_ascii_whitespace()).collect();
    let safe = words
        .iter()
        .filter(|w| !w.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("_");
    if safe.is_empty() {
        return Err(EscapeError::Empty { what });
    }
    Ok(safe)
}

/// A glob matching `ID_FS_UUID` for a configured uuid, ignoring case as dbackup does (`6be7-a7d5` ->
/// `6[Bb][Ee]7-[Aa]7[Dd]5`).
pub fn udev_uuid(uuid: &str) -> Result<String, EscapeError> {
    let what = "fs_uuid";
    if uuid.chars().any(|c| udev_unsafe(c) || c.is_whitespace()) {
        return Err(EscapeError::Udev {
            what,
            value: uuid.to_string(),
            next: "give the UUID as `blkid -s UUID -o value DEVICE` prints it",
        });
    }
    if uuid.is_empty() {
        return Err(EscapeError::Empty { what });
    }
    let mut out = String::new();
    for c in uuid.chars() {
        if c.is_ascii_alphabetic() {
            out.push('[');
            out.push(c.to_ascii_uppercase());
            out.push(c.to_ascii_lowercase());
            out.push(']');
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_like_systemd_escape() {
        // The same table is checked against the real `systemd-escape --path` in tests/integration/systemd.rs.
        for (p, want) in PATH_CASES {
            assert_eq!(path(Path::new(p)), *want, "{p}");
        }
        assert_eq!(
            path_unit(Path::new("/media/payne/T9")),
            "media-payne-T9.mount"
        );
    }

    /// Paths and their `systemd-escape --path` form.
    pub const PATH_CASES: &[(&str, &str)] = &[
        ("/media/payne/T9", "media-payne-T9"),
        ("/run/media/payne/T9", "run-media-payne-T9"),
        ("/media/payne/my-drive", "media-payne-my\\x2ddrive"),
        ("/run/media/x y/T9", "run-media-x\\x20y-T9"),
        ("/", "-"),
        ("/.hidden/x", "\\x2ehidden-x"),
        ("/a/.b", "a-.b"),
        ("/é/ü", "\\xc3\\xa9-\\xc3\\xbc"),
        ("/a_b:c.d/e+f@g", "a_b:c.d-e\\x2bf\\x40g"),
        ("/%x/$y", "\\x25x-\\x24y"),
    ];

    #[test]
    fn words_quote_only_when_needed() {
        assert_eq!(
            exec_word("x", "/nix/store/abc-dbackup/bin/dbackup").unwrap(),
            "/nix/store/abc-dbackup/bin/dbackup"
        );
        assert_eq!(exec_word("x", "/a b/c.json").unwrap(), "\"/a b/c.json\"");
        assert_eq!(exec_word("x", "/50%/$HOME").unwrap(), "\"/50%%/$$HOME\"");
        assert_eq!(setting_word("x", "/50%/$HOME").unwrap(), "\"/50%%/$HOME\"");
        assert_eq!(
            setting_word("x", "A=\"q\" \\").unwrap(),
            "\"A=\\\"q\\\" \\\\\""
        );
        assert_eq!(exec_word("x", "").unwrap(), "\"\"");
        assert_eq!(
            text("at http://[::1%1]:8422/ $HOME"),
            "at http://[::1%%1]:8422/ $HOME"
        );
        assert!(matches!(
            exec_word("x", "a\nb"),
            Err(EscapeError::Control { .. })
        ));
        assert!(matches!(
            path_word("x", Path::new("rel")),
            Err(EscapeError::Relative { .. })
        ));
    }

    #[test]
    fn labels_become_what_udev_stores() {
        assert_eq!(udev_label("T9").unwrap(), "T9");
        assert_eq!(udev_label("My Backup").unwrap(), "My_Backup");
        assert_eq!(udev_label("  a   b  ").unwrap(), "a_b");
        assert_eq!(udev_label("Données").unwrap(), "Données");
        assert!(matches!(udev_label("T*"), Err(EscapeError::Udev { .. })));
        // What to do next fits what was refused: a label can give way to the uuid, a uuid only to the real one.
        let label = udev_label("T|9").unwrap_err().to_string();
        assert!(
            label.ends_with("match the drive by fs_uuid instead"),
            "{label}"
        );
        let uuid = udev_uuid("6BE7|A7D5").unwrap_err().to_string();
        assert!(
            uuid.ends_with("as `blkid -s UUID -o value DEVICE` prints it"),
            "{uuid}"
        );
        assert!(matches!(udev_label("a\tb"), Err(EscapeError::Udev { .. })));
        // `|` separates alternatives in a udev match: "T9|OTHER" would match a drive labelled OTHER (and not the
        // drive labelled "T9|OTHER"), so it is refused like a glob character.
        assert!(matches!(
            udev_label("T9|OTHER"),
            Err(EscapeError::Udev { .. })
        ));
        assert!(matches!(udev_label("   "), Err(EscapeError::Empty { .. })));
    }

    #[test]
    fn uuids_match_in_any_case() {
        assert_eq!(udev_uuid("6be7-A7D5").unwrap(), "6[Bb][Ee]7-[Aa]7[Dd]5");
        assert_eq!(udev_uuid("1234").unwrap(), "1234");
        assert!(udev_uuid("12 34").is_err());
        assert!(udev_uuid("").is_err());
        assert!(udev_uuid("1234|").is_err());
    }
}
