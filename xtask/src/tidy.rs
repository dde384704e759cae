//! Tidy: ARCHITECTURE.md's invariants that reading the source can check, run with the other tests (`cargo test -p
//! xtask tidy`): every file opens with a `//!` line; only the command layer imports `cli`; nothing in `src/` prints
//! with `println!`/`eprintln!`; only `archive::crypt` names the `age` crate; imports between the files of `src/` and of
//! `xtask/src/` run one way (no circle). Test code (`#[cfg(test)]` items and the modules they declare) is left out of
//! the last three, as it is of the rules themselves.
//!
//! The import graph is read from the code, not from rustc: `use` trees and inline `crate::`/`super::`/`self::` paths,
//! resolved through the module tree, `pub use` re-exports and the names each file defines. It errs towards seeing an
//! import (a name defined in two files resolves to the one the path names), never towards missing one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the repository")
        .to_path_buf()
}

/// The `.rs` files below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("the tree can be walked"))
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The code of a Rust file with comments and the contents of string and character literals blanked out (the quotes
/// stay), so that what is left is paths, keywords and punctuation.
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !b[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{..}'), or a lifetime ('a), which stays.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where the item that starts at `start` ends: after its matching `}` when a `{` comes before any `;`, else after
/// the `;`.
fn item_end(code: &[u8], start: usize) -> usize {
    let mut i = start;
    let mut depth = 0usize;
    while i < code.len() {
        match code[i] {
            b';' if depth == 0 => return i + 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// Stripped code without its `#[cfg(test)]` items; and the names of the modules such items declare (`mod x;`), whose
/// files are test code too.
fn without_tests(code: &str) -> (String, BTreeSet<String>) {
    const GATE: &str = "#[cfg(test)]";
    let bytes = code.as_bytes();
    let mut out = String::new();
    let mut test_mods = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = code[at..].find(GATE) {
        let gate = at + found;
        out.push_str(&code[at..gate]);
        let end = item_end(bytes, gate + GATE.len());
        let item = &code[gate + GATE.len()..end];
        let words: Vec<&str> = item.split_whitespace().collect();
        if let Some(p) = words.iter().position(|w| *w == "mod")
            && let Some(name) = words.get(p + 1)
            && let Some(name) = name.strip_suffix(';')
        {
            test_mods.insert(name.to_string());
        }
        at = end;
    }
    out.push_str(&code[at..]);
    (out, test_mods)
}

/// Stripped code in which `super::` inside an inline `mod name { ... }` is written `self::`: the file's module is what
/// it means there (one level of inline module; deeper ones are not used in this project).
fn inline_modules_flattened(code: &str) -> String {
    let bytes = code.as_bytes();
    let mut out = String::new();
    let mut at = 0;
    let mut search = 0;
    while let Some(p) = code[search..].find("mod ") {
        let pos = search + p;
        search = pos + 4;
        if code[..pos].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let after: String = code[pos + 4..]
            .chars()
            .skip_while(|c| is_ident(*c))
            .take_while(|c| !is_ident(*c) && *c != ';')
            .collect();
        if !after.contains('{') {
            continue;
        }
        let end = item_end(bytes, pos);
        out.push_str(&code[at..pos]);
        out.push_str(&code[pos..end].replace("super::", "self::"));
        at = end;
        search = end;
    }
    out.push_str(&code[at..]);
    out
}

/// One `use` tree expanded: each full path (its last segment may be `*`) with the name it brings in.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim().trim_end_matches("::");
            let mut base = prefix.to_vec();
            base.extend(segments(head));
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            for part in split_top(inner) {
                go(&base, part, out);
            }
        } else {
            let path = tree.split(" as ").next().unwrap_or(tree);
            let mut full = prefix.to_vec();
            full.extend(segments(path));
            if full.last().is_some_and(|s| s == "self") {
                full.pop();
            }
            if !full.is_empty() {
                out.push(full);
            }
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits a `use` group's inside at its top-level commas.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The `use` statements of stripped code (each with whether it is a re-export) and the code without them.
fn uses(code: &str) -> (Vec<(bool, String)>, String) {
    let mut found = Vec::new();
    let mut rest = String::new();
    let mut at = 0;
    let bytes = code.as_bytes();
    let mut search = 0;
    while let Some(p) = code[search..].find("use ") {
        let pos = search + p;
        search = pos + 4;
        if code[..pos].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        // What stands between the item before and `use`: nothing, or a visibility.
        let line_start = code[..pos]
            .rfind(['\n', ';', '{', '}'])
            .map_or(0, |n| n + 1);
        let before = code[line_start..pos].trim();
        if !(before.is_empty() || before.starts_with("pub")) {
            continue;
        }
        let end = item_end(bytes, pos);
        let tree = code[pos + 4..end].trim_end_matches(';').trim().to_string();
        found.push((before.starts_with("pub"), tree));
        rest.push_str(&code[at..line_start]);
        at = end;
        search = end;
    }
    rest.push_str(&code[at..]);
    (found, rest)
}

/// The paths written inline in code that start at `crate::`, `super::`, `self::` or one of the file's own child
/// modules (`children`, as `self::` without the word), with whether each names a macro (`!`).
fn inline_paths(code: &str, children: &BTreeSet<String>) -> Vec<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let at_start = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        let word: String = if at_start {
            chars[i..].iter().take_while(|c| is_ident(**c)).collect()
        } else {
            String::new()
        };
        let follows =
            chars.get(i + word.len()) == Some(&':') && chars.get(i + word.len() + 1) == Some(&':');
        let starts = (!word.is_empty()
            && follows
            && (["crate", "super", "self"].contains(&word.as_str()) || children.contains(&word)))
        .then(|| word.len() + 2);
        if let Some(k) = starts {
            let mut j = i + k;
            loop {
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                if j + 2 < chars.len()
                    && chars[j] == ':'
                    && chars[j + 1] == ':'
                    && is_ident(chars[j + 2])
                {
                    j += 2;
                } else {
                    break;
                }
            }
            let text: String = chars[i..j].iter().collect();
            let mut path = segments(&text);
            if children.contains(&word) {
                path.insert(0, "self".to_string());
            }
            out.push((path, chars.get(j) == Some(&'!')));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// One crate's files read for the import graph.
struct Crate {
    /// Module path -> its file (the crate root is the empty path).
    modules: BTreeMap<Vec<String>, PathBuf>,
    /// Per file: its module path, the names it defines, its re-exports (name -> path), its glob re-exports, its
    /// `use` paths and its inline paths.
    files: BTreeMap<PathBuf, FileFacts>,
    /// `macro_rules!` name -> the file that defines it (`#[macro_export]` puts it at the crate root).
    macros: BTreeMap<String, PathBuf>,
}

#[derive(Default)]
struct FileFacts {
    module: Vec<String>,
    defines: BTreeSet<String>,
    reexports: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    uses: Vec<Vec<String>>,
    inline: Vec<(Vec<String>, bool)>,
}

const DEFINING: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "mod", "union",
];

impl Crate {
    /// Reads the crate whose root file is `root` (`lib.rs` or `main.rs`): every module it declares outside test code.
    fn read(root: &Path) -> Crate {
        let mut krate = Crate {
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
            macros: BTreeMap::new(),
        };
        let mut todo = vec![(Vec::<String>::new(), root.to_path_buf())];
        while let Some((module, file)) = todo.pop() {
            let (code, test_mods) = without_tests(&strip(&read(&file)));
            let code = inline_modules_flattened(&code);
            let dir = if module.is_empty() || file.file_name().is_some_and(|n| n == "mod.rs") {
                file.parent().unwrap().to_path_buf()
            } else {
                file.with_extension("")
            };
            let mut facts = FileFacts {
                module: module.clone(),
                ..FileFacts::default()
            };
            let words: Vec<&str> = code
                .split(|c: char| !is_ident(c) && c != '!')
                .filter(|w| !w.is_empty())
                .collect();
            for pair in words.windows(2) {
                if DEFINING.contains(&pair[0]) {
                    facts.defines.insert(pair[1].to_string());
                }
                if pair[0] == "macro_rules!" {
                    krate.macros.insert(pair[1].to_string(), file.clone());
                }
            }
            // Child modules: `mod x;` outside test code.
            for pair in words.windows(2) {
                if pair[0] == "mod" && !test_mods.contains(pair[1]) {
                    let name = pair[1];
                    let flat = dir.join(format!("{name}.rs"));
                    let nested = dir.join(name).join("mod.rs");
                    let child = if flat.exists() { flat } else { nested };
                    if child.exists() {
                        let mut m = module.clone();
                        m.push(name.to_string());
                        todo.push((m, child));
                    }
                }
            }
            let (use_trees, rest) = uses(&code);
            for (public, tree) in use_trees {
                for path in expand_use(&tree) {
                    if public {
                        let name = tree_alias(&tree, &path);
                        if path.last().is_some_and(|s| s == "*") {
                            let mut p = path.clone();
                            p.pop();
                            facts.globs.push(p);
                        } else if let Some(name) = name {
                            facts.reexports.insert(name, path.clone());
                        }
                    }
                    if !public {
                        facts.uses.push(path);
                    }
                }
            }
            let children: BTreeSet<String> = words
                .windows(2)
                .filter(|p| p[0] == "mod" && !test_mods.contains(p[1]))
                .map(|p| p[1].to_string())
                .collect();
            facts.inline = inline_paths(&rest, &children);
            krate.modules.insert(module, file.clone());
            krate.files.insert(file, facts);
        }
        krate
    }

    /// The absolute module path a path written in `from` means, or `None` for another crate's.
    fn absolute(&self, from: &FileFacts, path: &[String], in_use: bool) -> Option<Vec<String>> {
        let mut out = from.module.clone();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                out.clear();
                rest = &path[1..];
            }
            Some("self") => rest = &path[1..],
            Some("super") => {
                while rest.first().is_some_and(|s| s == "super") {
                    out.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) if in_use => {
                let mut child = from.module.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            _ => return None,
        }
        out.extend(rest.iter().cloned());
        Some(out)
    }

    /// The file that defines what the absolute `path` names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<&PathBuf> {
        let k = (0..=path.len())
            .rev()
            .find(|&k| self.modules.contains_key(&path[..k]))?;
        let file = &self.modules[&path[..k]];
        let Some(name) = path.get(k) else {
            return Some(file);
        };
        if name == "*" {
            return Some(file);
        }
        let facts = &self.files[file];
        if facts.defines.contains(name) || depth > 8 {
            return Some(file);
        }
        if let Some(target) = facts.reexports.get(name) {
            let mut target = target.clone();
            target.extend(path[k + 1..].iter().cloned());
            if let Some(abs) = self.absolute(facts, &target, true) {
                return self.resolve(&abs, depth + 1).or(Some(file));
            }
            return Some(file);
        }
        for glob in &facts.globs {
            if let Some(mut abs) = self.absolute(facts, glob, true) {
                abs.extend(path[k..].iter().cloned());
                if let Some(f) = self.resolve(&abs, depth + 1)
                    && self.files[f].defines.contains(name)
                {
                    return Some(f);
                }
            }
        }
        Some(file)
    }

    /// Each file's imports: file -> the files it takes names from (itself left out), each with the first path
    /// written that takes one.
    fn graph(&self) -> BTreeMap<&PathBuf, BTreeMap<&PathBuf, String>> {
        let mut graph = BTreeMap::new();
        for (file, facts) in &self.files {
            let mut to = BTreeMap::new();
            let paths = facts
                .uses
                .iter()
                .map(|p| (p, true, false))
                .chain(facts.inline.iter().map(|(p, m)| (p, false, *m)));
            for (path, in_use, is_macro) in paths {
                if is_macro {
                    if let Some(f) = path.last().and_then(|m| self.macros.get(m)) {
                        to.entry(f)
                            .or_insert_with(|| format!("{}!", path.join("::")));
                    }
                    continue;
                }
                if let Some(abs) = self.absolute(facts, path, in_use)
                    && let Some(f) = self.resolve(&abs, 0)
                {
                    to.entry(f).or_insert_with(|| path.join("::"));
                }
            }
            to.remove(file);
            graph.insert(file, to);
        }
        graph
    }

    /// The circles of the import graph: each a set of files that import each other round a loop (Tarjan's strongly
    /// connected components of more than one file).
    fn circles(&self) -> Vec<Vec<PathBuf>> {
        let graph = self.graph();
        let nodes: Vec<&PathBuf> = graph.keys().copied().collect();
        let index_of: BTreeMap<&PathBuf, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut t = Tarjan {
            edges: nodes
                .iter()
                .map(|n| {
                    graph[n]
                        .keys()
                        .filter_map(|m| index_of.get(m).copied())
                        .collect()
                })
                .collect(),
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on_stack: vec![false; nodes.len()],
            stack: Vec::new(),
            next: 0,
            found: Vec::new(),
        };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.found
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut files: Vec<PathBuf> = c.into_iter().map(|i| nodes[i].clone()).collect();
                files.sort();
                files
            })
            .collect()
    }
}

/// The name a `pub use` path brings in: its alias (`x as y`) or its last segment.
fn tree_alias(tree: &str, path: &[String]) -> Option<String> {
    let last = path.last()?;
    let pattern = format!("{last} as ");
    if let Some(p) = tree.find(&pattern) {
        let alias: String = tree[p + pattern.len()..]
            .chars()
            .take_while(|c| is_ident(*c))
            .collect();
        if !alias.is_empty() {
            return Some(alias);
        }
    }
    Some(last.clone())
}

struct Tarjan {
    edges: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    found: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for w in self.edges[v].clone() {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.found.push(component);
        }
    }
}

/// Says each circle with the imports that tie it, for a failing test.
fn describe(krate: &Crate, circles: &[Vec<PathBuf>], base: &Path) -> String {
    let graph = krate.graph();
    let name = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    let mut out = String::new();
    for c in circles {
        out.push_str(&format!("circle of {} files:\n", c.len()));
        for f in c {
            for (to, path) in &graph[f] {
                if c.contains(to) {
                    out.push_str(&format!("  {} -> {} ({path})\n", name(f), name(to)));
                }
            }
        }
    }
    out
}

/// The files of the project's own code (src/, xtask/src/, tests/), for the file-wide rules.
fn project_files() -> Vec<PathBuf> {
    let repo = repo();
    ["src", "xtask/src", "tests"]
        .iter()
        .flat_map(|d| rust_files(&repo.join(d)))
        .collect()
}

/// The files of `src/` that are not test code, with their code stripped of comments, strings and test items.
fn src_code() -> Vec<(PathBuf, String)> {
    let krate = Crate::read(&repo().join("src/lib.rs"));
    krate
        .files
        .keys()
        .map(|f| (f.clone(), without_tests(&strip(&read(f))).0))
        .collect()
}

#[test]
fn every_file_opens_with_a_doc_line() {
    let repo = repo();
    let missing: Vec<String> = project_files()
        .into_iter()
        .filter(|f| {
            let text = read(f);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|f| f.strip_prefix(&repo).unwrap_or(&f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "every file opens with a `//!` line saying what it owns; these do not: {missing:#?}"
    );
}

/// The files of `src/` (test code left out), relative to the repository, whose path and code `bad` finds fault with.
fn src_offenders(bad: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let repo = repo();
    src_code()
        .into_iter()
        .filter_map(|(f, code)| {
            let rel = f.strip_prefix(&repo).unwrap_or(&f).display().to_string();
            bad(&rel, &code).then_some(rel)
        })
        .collect()
}

/// Whether `code` names `word` as a whole (not as the end of a longer name or path).
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word)
        .any(|(i, _)| !code[..i].ends_with(|c: char| is_ident(c) || c == ':'))
}

#[test]
fn only_the_command_layer_imports_cli() {
    let allowed = ["src/commands/", "src/main.rs", "src/lib.rs", "src/cli.rs"];
    let offenders = src_offenders(|rel, code| {
        !allowed.iter().any(|a| rel.starts_with(a)) && code.contains("crate::cli")
    });
    assert!(
        offenders.is_empty(),
        "only main.rs, lib.rs and commands/ import `cli` (ARCHITECTURE.md); these do too: {offenders:#?}"
    );
}

#[test]
fn nothing_in_src_prints_with_println() {
    let offenders = src_offenders(|rel, code| {
        rel != "src/stdx/skip.rs"
            && ["println!", "eprintln!", "print!", "eprint!"]
                .iter()
                .any(|m| names(code, m))
    });
    assert!(
        offenders.is_empty(),
        "printing goes through stdx::out's outln!/errln! (println! panics on a closed pipe); these print directly: \
         {offenders:#?}"
    );
}

#[test]
fn only_archive_crypt_names_the_age_crate() {
    let offenders =
        src_offenders(|rel, code| rel != "src/archive/crypt.rs" && names(code, "age::"));
    assert!(
        offenders.is_empty(),
        "only archive::crypt talks to the `age` crate (ARCHITECTURE.md); these name it too: {offenders:#?}"
    );
}

#[test]
fn imports_run_one_way_in_src_and_xtask() {
    let repo = repo();
    for root in ["src/lib.rs", "xtask/src/main.rs"] {
        let krate = Crate::read(&repo.join(root));
        assert!(krate.files.len() > 10, "{root}: the module tree was read");
        let circles = krate.circles();
        assert!(
            circles.is_empty(),
            "{root}: imports between files run one way (ARCHITECTURE.md); these import each other round a loop:\n{}",
            describe(&krate, &circles, &repo)
        );
    }
}

/// The reader sees a circle through each way a file names another: a `use` of a re-export, `super::`, a child
/// module's `use`, an inline `crate::` path and a macro; and none through test code or a comment.
#[test]
fn a_circle_is_seen_however_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let lib = "//! t\nmod a;\nmod b;\nmod m;\n#[cfg(test)]\nmod t;\n";
    write("lib.rs", lib);
    write("t.rs", "//! t\nuse crate::a::A;\n");
    write("m/mod.rs", "//! m\nmod x;\nmod y;\npub use x::X;\n");
    write("m/x.rs", "//! x\npub struct X;\n");
    write("m/y.rs", "//! y\npub struct Y;\n");
    let cases: &[(&str, &str, &str, bool)] = &[
        // a's text, b's text, y's text, whether a circle is seen
        (
            "pub struct A; use crate::b::B;",
            "pub struct B; use crate::a::A;",
            "",
            true,
        ),
        (
            "pub struct A; fn f() { crate::b::g(); }",
            "pub fn g() {} use super::a::A;",
            "",
            true,
        ),
        (
            "pub struct A; use crate::m::X;",
            "pub struct B;",
            "use crate::a::A;",
            false,
        ),
        (
            "pub struct A;",
            "pub struct B;",
            "pub struct Y; use super::X;",
            false,
        ),
        (
            "pub struct A; use crate::m::X;",
            "pub struct B;",
            "pub struct Y; use crate::m::x::X;",
            false,
        ),
        (
            "pub struct A; // use crate::b::B;\n",
            "pub struct B; use crate::a::A;",
            "",
            false,
        ),
        (
            "pub struct A;\n#[cfg(test)]\nmod tests { use crate::b::B; }\n",
            "pub struct B; use crate::a::A;",
            "",
            false,
        ),
        (
            "pub struct A; macro_rules! say { () => {} }",
            "pub struct B; fn f() { crate::say!(); } use crate::a::A;",
            "",
            false,
        ),
        (
            "pub struct A; fn f() { crate::b::say!(); }",
            "macro_rules! say { () => {} } use crate::a::{self, A};",
            "",
            true,
        ),
    ];
    for (i, (a, b, y, circle)) in cases.iter().enumerate() {
        write("a.rs", &format!("//! a\n{a}\n"));
        write("b.rs", &format!("//! b\n{b}\n"));
        write("m/y.rs", &format!("//! y\npub struct Y;\n{y}\n"));
        let krate = Crate::read(&dir.path().join("lib.rs"));
        assert_eq!(
            !krate.circles().is_empty(),
            *circle,
            "case {i}: {}",
            describe(&krate, &krate.circles(), dir.path())
        );
    }
    // The sizes of the circles the crate has now, said with their imports when they are not `want`.
    let circle_sizes = |want: &[usize]| {
        let krate = Crate::read(&dir.path().join("lib.rs"));
        let circles = krate.circles();
        let sizes: Vec<usize> = circles.iter().map(Vec::len).collect();
        assert_eq!(sizes, want, "{}", describe(&krate, &circles, dir.path()));
    };
    // A circle through a re-export: y uses a, a uses m::X, m's re-export makes it x's; x uses y: x -> y -> a -> x.
    write("a.rs", "//! a\npub struct A; use crate::m::X;\n");
    write("m/x.rs", "//! x\npub struct X; use super::y::Y;\n");
    write("m/y.rs", "//! y\npub struct Y; use crate::a::A;\n");
    circle_sizes(&[3]);
    // A parent that calls its child by the child's name, and the child that takes the parent's type.
    write("m/x.rs", "//! x\npub struct X;\n");
    write("m/y.rs", "//! y\npub fn f() {}\nuse super::Z;\n");
    write(
        "m/mod.rs",
        "//! m\nmod x;\nmod y;\npub use x::X;\npub struct Z;\nfn g() { y::f(); }\n",
    );
    circle_sizes(&[2]);
    // A re-export alone is the module's face, not an import: no circle.
    write(
        "m/mod.rs",
        "//! m\nmod x;\nmod y;\npub use x::X;\npub use y::f;\npub struct Z;\n",
    );
    circle_sizes(&[]);
}

#[test]
fn use_trees_expand_to_their_paths() {
    assert_eq!(
        expand_use("crate::a::{b, c::{d, e as f}, self}"),
        vec![
            segments("crate::a::b"),
            segments("crate::a::c::d"),
            segments("crate::a::c::e"),
            segments("crate::a"),
        ]
    );
    assert_eq!(expand_use("super::*"), vec![segments("super::*")]);
    assert_eq!(
        strip("let s = \"crate::x\"; // crate::y\nlet c = '{';"),
        "let s = \"\"; \nlet c = ' ';"
    );
}
