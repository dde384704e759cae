//! `dbackup find`'s patterns, pure: a glob (`*`, `?`, `**`) or a literal substring, matched against a backup's
//! absolute paths as raw bytes, case-sensitive.
//!
//! - No `*` or `?`: a literal, found anywhere in the absolute path (`report` matches `/home/u/reports/x`).
//! - A glob without `/`: matched against the last component, the name (`*.pdf` matches `/home/u/a/b.pdf`).
//! - A glob starting with `/`: matched against the whole absolute path (`/home/*/notes.txt`).
//! - Any other glob with `/`: matched against the path's last components (`docs/*.md` is `**/docs/*.md`).
//!
//! `*` matches any run of bytes within one component, `?` one character (a UTF-8 sequence counts as one), and a
//! component that is exactly `**` any number of components, none included. Elsewhere `**` is `*`.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Found anywhere in the absolute path.
    Literal(Vec<u8>),
    /// The last component matched by one segment.
    Name(Vec<u8>),
    /// Components matched segment by segment; `anchored`: from the root, else against the path's tail.
    Path {
        segments: Vec<Vec<u8>>,
        anchored: bool,
    },
}

fn is_glob(p: &[u8]) -> bool {
    p.iter().any(|&b| b == b'*' || b == b'?')
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty())
}

impl Pattern {
    pub fn new(pattern: &[u8]) -> Pattern {
        if !is_glob(pattern) {
            return Pattern::Literal(pattern.to_vec());
        }
        if !pattern.contains(&b'/') {
            return Pattern::Name(pattern.to_vec());
        }
        let anchored = pattern.starts_with(b"/");
        let mut segments: Vec<Vec<u8>> = components(pattern).map(<[u8]>::to_vec).collect();
        if !anchored && segments.first().is_none_or(|s| s != b"**") {
            segments.insert(0, b"**".to_vec());
        }
        Pattern::Path { segments, anchored }
    }

    /// The longest run of plain bytes every matching path must hold (to skip lines without parsing them).
    pub fn required(&self) -> &[u8] {
        let p: &[u8] = match self {
            // An absolute path matches at the root too, where the relative path has no `/` before it.
            Pattern::Literal(l) => return l.strip_prefix(b"/").unwrap_or(l),
            Pattern::Name(p) => p,
            Pattern::Path { segments, .. } => {
                return segments
                    .iter()
                    .flat_map(|s| s.split(|&b| b == b'*' || b == b'?'))
                    .max_by_key(|r| r.len())
                    .unwrap_or(&[]);
            }
        };
        p.split(|&b| b == b'*' || b == b'?')
            .max_by_key(|r| r.len())
            .unwrap_or(&[])
    }

    /// The bytes an index line whose path matches must hold as they are (JSON writes printable ASCII but `"` and
    /// `\\`, and UTF-8, unescaped; a name that is not UTF-8 is in `path_b64`, which the caller always parses), or
    /// `None` when nothing can be required.
    pub fn line_filter(&self) -> Option<&[u8]> {
        let r = self.required();
        let verbatim = |&b: &u8| b >= 0x20 && b != b'"' && b != b'\\';
        (!r.is_empty() && r.iter().all(verbatim)).then_some(r)
    }

    /// Whether the path `rel` (relative to the root: the absolute path without its leading `/`) matches.
    pub fn matches(&self, rel: &[u8]) -> bool {
        match self {
            Pattern::Literal(l) => {
                if l.is_empty() {
                    return true;
                }
                // Against the absolute path: `/` + rel, without building it.
                if l[0] == b'/' && rel.starts_with(&l[1..]) {
                    return true;
                }
                memchr::memmem::find(rel, l).is_some()
            }
            Pattern::Name(p) => components(rel).last().is_some_and(|n| segment(p, n)),
            Pattern::Path { segments, .. } => {
                let comps: Vec<&[u8]> = components(rel).collect();
                path_match(segments, &comps)
            }
        }
    }
}

/// Segments against components, `**` matching any number of them (dynamic programming: linear in both).
fn path_match(segs: &[Vec<u8>], comps: &[&[u8]]) -> bool {
    // ok[j]: the segments so far match exactly comps[..j].
    let mut ok = vec![false; comps.len() + 1];
    ok[0] = true;
    for s in segs {
        let mut next = vec![false; comps.len() + 1];
        if s == b"**" {
            let mut any = false;
            for j in 0..=comps.len() {
                any |= ok[j];
                next[j] = any;
            }
        } else {
            for j in 0..comps.len() {
                if ok[j] && segment(s, comps[j]) {
                    next[j + 1] = true;
                }
            }
        }
        ok = next;
    }
    ok[comps.len()]
}

/// The length of the UTF-8 sequence starting at `s[0]` (1 for a byte that starts none).
fn char_len(s: &[u8]) -> usize {
    let n = match s[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    if n <= s.len() && s[1..n].iter().all(|&b| b & 0xC0 == 0x80) {
        n
    } else {
        1
    }
}

/// One segment (`*`, `?`, plain bytes) against one component: greedy with one backtrack point, linear in practice.
fn segment(p: &[u8], s: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && p[i] == b'*' {
            while i < p.len() && p[i] == b'*' {
                i += 1;
            }
            star = Some((i, j));
        } else if i < p.len() && p[i] == b'?' {
            i += 1;
            j += char_len(&s[j..]);
        } else if i < p.len() && p[i] == s[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            let sj = sj + char_len(&s[sj..]);
            star = Some((si, sj));
            i = si;
            j = sj;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == b'*' {
        i += 1;
    }
    i == p.len() && j == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        // (pattern, relative path, matches)
        let table: &[(&str, &str, bool)] = &[
            // literals: a substring of the absolute path, case-sensitive
            ("report", "home/u/reports/x", true),
            ("Report", "home/u/reports/x", false),
            ("/home/u", "home/u/a", true),
            ("/u/a", "home/u/a", true),
            ("/home/v", "home/u/a", false),
            ("u/a", "home/u/a", true),
            ("", "home/u/a", true),
            // a glob without `/`: the name
            ("*.pdf", "home/u/a/b.pdf", true),
            ("*.pdf", "home/u/a.pdf/b", false),
            ("*.PDF", "home/u/a/b.pdf", false),
            ("b?pdf", "home/u/b.pdf", true),
            ("?", "home/u/é", true),
            ("??", "home/u/é", false),
            ("a*b*c", "x/aXbYbZc", true),
            ("a*b*c", "x/aXbYbZ", false),
            ("*", "home", true),
            // anchored
            ("/home/*/notes.txt", "home/u/notes.txt", true),
            ("/home/*/notes.txt", "home/u/x/notes.txt", false),
            ("/home/**/notes.txt", "home/u/x/notes.txt", true),
            ("/home/**/notes.txt", "home/notes.txt", true),
            ("/home/**", "home", true),
            ("/home/**", "home/u/a", true),
            ("/etc/**", "home/u/a", false),
            ("/h*", "home/u", false),
            // unanchored with `/`: the tail
            ("docs/*.md", "home/u/docs/a.md", true),
            ("docs/*.md", "home/u/docs/x/a.md", false),
            ("docs/**/*.md", "home/u/docs/x/y/a.md", true),
            ("u/docs", "home/u/docs", true),
            ("d*s/a.md", "home/u/docs/a.md", true),
            // `**` inside a component is `*`
            ("a**z", "q/abcz", true),
        ];
        for (p, path, want) in table {
            assert_eq!(
                Pattern::new(p.as_bytes()).matches(path.as_bytes()),
                *want,
                "pattern {p:?} on {path:?}"
            );
        }
    }

    #[test]
    fn the_required_run_is_in_every_match() {
        for (p, want) in [
            ("report", "report"),
            ("*.pdf", ".pdf"),
            ("/home/**/notes*.txt", "notes"),
            ("*", ""),
            // A literal absolute path: the paths it matches are relative (`home/u/x` for `/home/u/x`).
            ("/home/u/x", "home/u/x"),
        ] {
            assert_eq!(
                Pattern::new(p.as_bytes()).required(),
                want.as_bytes(),
                "{p}"
            );
        }
    }

    #[test]
    fn the_line_filter_is_only_what_json_writes_as_is() {
        for (p, want) in [
            ("report", Some("report")),
            ("*.pdf", Some(".pdf")),
            ("é*", Some("é")),
            ("a\"b", None),
            ("a\\b", None),
            ("tab\there", None),
            ("*", None),
        ] {
            assert_eq!(
                Pattern::new(p.as_bytes()).line_filter(),
                want.map(str::as_bytes),
                "{p:?}"
            );
        }
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let p = Pattern::new(b"?\xfe*");
        assert!(p.matches(b"a/\xff\xfe\xc3"));
        assert!(!Pattern::new(b"?").matches(b"a/\xe2\x82"));
        assert!(Pattern::new(b"??").matches(b"a/\xe2\x82"));
    }
}
