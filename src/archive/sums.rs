//! `verification.sha256`: one `<sha256>  <name>` line per file, exactly as `sha256sum` writes it, so that
//! `sha256sum -c verification.sha256` run in the backup's directory checks every archive and index.
//!
//! Names are relative to the directory holding the file. Like `sha256sum`, a name containing a backslash, newline
//! or carriage return is written escaped (`\\`, `\n`, `\r`) on a line that starts with a backslash.

use std::io::{self, Write};
use std::path::Path;

use super::sink::Digest;

/// The conventional file name.
pub const SUMS_FILE: &str = "verification.sha256";

/// One line of a sums file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumLine {
    pub sha256: Digest,
    /// The file name, raw bytes, relative to the sums file's directory.
    pub name: Vec<u8>,
}

/// Why a sums file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SumsError {
    #[error("cannot write {name:?} in a sums file: {why}")]
    BadName { name: String, why: &'static str },
    #[error("line {line} of the sums file is malformed: {problem}")]
    BadLine { line: usize, problem: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes sums lines as `sha256sum` (text mode) does.
pub fn write_sums(mut out: impl Write, lines: &[SumLine]) -> Result<(), SumsError> {
    let mut text = Vec::new();
    for l in lines {
        let bad = |why| SumsError::BadName {
            name: String::from_utf8_lossy(&l.name).into_owned(),
            why,
        };
        if l.name.is_empty() {
            return Err(bad("empty name"));
        }
        if l.name.contains(&0) {
            return Err(bad("NUL byte"));
        }
        let escape = l.name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
        if escape {
            text.push(b'\\');
        }
        text.extend_from_slice(l.sha256.to_string().as_bytes());
        text.extend_from_slice(b"  ");
        for &b in &l.name {
            match b {
                b'\\' => text.extend_from_slice(b"\\\\"),
                b'\n' => text.extend_from_slice(b"\\n"),
                b'\r' => text.extend_from_slice(b"\\r"),
                _ => text.push(b),
            }
        }
        text.push(b'\n');
    }
    out.write_all(&text)?;
    Ok(())
}

/// Parses a sums file as `sha256sum -c` reads it (text or binary mode markers, escaped names).
pub fn parse_sums(text: &[u8]) -> Result<Vec<SumLine>, SumsError> {
    let mut lines = Vec::new();
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let bad = |problem: &str| SumsError::BadLine {
            line: line_no,
            problem: problem.to_string(),
        };
        if raw.is_empty() {
            continue;
        }
        let (escaped, rest) = match raw.strip_prefix(b"\\") {
            Some(r) => (true, r),
            None => (false, raw),
        };
        if rest.len() < 66 {
            return Err(bad("too short for a sha256 and a name"));
        }
        let hex = std::str::from_utf8(&rest[..64]).map_err(|_| bad("the sha256 is not hex"))?;
        let sha256: Digest = hex.parse().map_err(|e: String| bad(&e))?;
        if rest[64] != b' ' || !matches!(rest[65], b' ' | b'*') {
            return Err(bad(
                "expected two spaces (or a space and `*`) after the sha256",
            ));
        }
        let name = &rest[66..];
        let name = if escaped {
            unescape(name).ok_or_else(|| bad("bad escape in the name"))?
        } else {
            name.to_vec()
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        lines.push(SumLine { sha256, name });
    }
    Ok(lines)
}

fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut it = name.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match it.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

/// The largest sums file read (checked before reading): a line per archive part, index and `backup.json`.
pub const MAX_SUMS_BYTES: u64 = 16 << 20;

/// Reads and parses the sums file at `path`: a regular file (never through a symlink) of at most
/// [`MAX_SUMS_BYTES`].
pub fn read_sums(path: &Path) -> Result<Vec<SumLine>, SumsError> {
    parse_sums(&crate::stdx::fs::read_bounded(path, MAX_SUMS_BYTES).map_err(io::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_escapes() {
        let lines = vec![
            SumLine {
                sha256: Digest::of_bytes(b"a"),
                name: b"data.tar".to_vec(),
            },
            SumLine {
                sha256: Digest::of_bytes(b"b"),
                name: b"we\\ird\nna\rme \xff".to_vec(),
            },
        ];
        let mut out = Vec::new();
        write_sums(&mut out, &lines).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(&format!("{}  data.tar\n\\", Digest::of_bytes(b"a"))),
            "{text}"
        );
        assert!(text.contains("  we\\\\ird\\nna\\rme "), "{text}");
        assert_eq!(parse_sums(&out).unwrap(), lines);
    }

    #[test]
    fn malformed_lines_are_refused() {
        let good = format!("{}  x\n", Digest::of_bytes(b"a"));
        assert!(parse_sums(good.as_bytes()).is_ok());
        for bad in [
            "abc  x\n".to_string(),
            good.replace("  x", " x"),
            good.replace("  x", "  "),
            format!("\\{}", good.replace("  x", "  a\\qb")),
        ] {
            assert!(parse_sums(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let nul = SumLine {
            sha256: Digest::of_bytes(b"a"),
            name: b"a\0b".to_vec(),
        };
        assert!(write_sums(Vec::new(), &[nul]).is_err());
    }
}
