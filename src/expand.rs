//! Expansion of `~`, `$VAR` and `${VAR}` in configured paths; an undefined variable is an error naming it.
//!
//! Pure over [`Env`], the process environment read once ([`Env::from_process`]: its variables, the working directory,
//! the home from HOME or the password database) and passed in: nothing else here reads the environment or the disk.
//!
//! - `~` and `~/...` at the start become the home directory. `~user` is rejected (write the path out).
//! - `$NAME` and `${NAME}` (NAME = letters, digits and `_`, not starting with a digit) become the variable's value;
//!   a variable that is unset or empty is an error naming it.
//! - `$$` is a literal `$`; a `$` not followed by a name or `{` is kept as it is.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The process environment a run depends on (its variables, the home and the working directory), read once and
/// passed in so tests can fake it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    pub home: PathBuf,
    pub cwd: PathBuf,
}

impl Env {
    pub fn from_process() -> Env {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        // An unset, empty or relative HOME (cron, `env -i`, some service managers): the user's home from the
        // password database, as a shell's `~` would be; `/` only when that has none either.
        let home = vars
            .get("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
                    .filter(|h| h.is_absolute())
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Env { vars, home, cwd }
    }

    /// A made-up environment for tests: `vars`, the home directory `home`, the working directory `cwd`.
    #[cfg(test)]
    pub fn fake(home: impl Into<PathBuf>, cwd: impl Into<PathBuf>, vars: &[(&str, &str)]) -> Env {
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env {
            vars,
            home: home.into(),
            cwd: cwd.into(),
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Why a configured value cannot be expanded: the settings report it as a problem at the value's place.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "undefined variable ${name} in {value:?}; set it in the environment dbackup runs in, or write the path out"
    )]
    UndefinedVariable { name: String, value: String },

    /// A configured path that cannot be used: relative, `~user`, a malformed `${`.
    #[error("{value:?} {reason}")]
    BadPath { value: String, reason: String },
}

/// Expands `~`, `$VAR` and `${VAR}` in `value`.
pub fn expand(value: &str, env: &Env) -> Result<String, ExpandError> {
    let bad = |reason: &str| ExpandError::BadPath {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;

    if let Some(after) = rest.strip_prefix('~') {
        if after.is_empty() || after.starts_with('/') {
            out.push_str(&env.home.to_string_lossy());
            rest = after;
        } else {
            return Err(bad(
                "uses `~user` (another user's home), which is not supported; write the path out (/home/user/...)",
            ));
        }
    }

    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err(bad("has a `${` without a closing `}`"));
            };
            let name = &braced[..end];
            if !is_name(name) {
                return Err(bad(&format!(
                    "has `${{{name}}}`, which is not a variable name (letters, digits and `_`, not starting with a digit)"
                )));
            }
            out.push_str(lookup(name, value, env)?);
            rest = &braced[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            if is_name(name) {
                out.push_str(lookup(name, value, env)?);
                rest = &after[len..];
            } else {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands `value` and requires the result to be absolute; returns it lexically normalised
/// (no `.`, `..`, `//` or trailing `/`). Symlinks are not resolved.
pub fn expand_path(value: &str, env: &Env) -> Result<PathBuf, ExpandError> {
    let expanded = expand(value, env)?;
    let path = Path::new(&expanded);
    if !path.is_absolute() {
        let reason = if expanded == value {
            "is a relative path; write it absolute (`/...`), or start it with `~` or `$VAR`"
                .to_string()
        } else {
            format!("expands to {expanded:?}, a relative path; paths must be absolute")
        };
        return Err(ExpandError::BadPath {
            value: value.to_string(),
            reason,
        });
    }
    Ok(normalize(path))
}

/// Lexical normalisation of an absolute path: drops `.` and empty components, applies `..` to the
/// previous component (never above `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    if out.as_os_str().is_empty() {
        out.push("/");
    }
    out
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn lookup<'e>(name: &str, value: &str, env: &'e Env) -> Result<&'e str, ExpandError> {
    env.var(name).ok_or_else(|| ExpandError::UndefinedVariable {
        name: name.to_string(),
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        let vars = [
            ("DDATA", "/data"),
            ("HOME", "/home/u"),
            ("SUB", "a/b"),
            ("EMPTY", ""),
            ("X_1", "x"),
        ];
        Env::fake("/home/u", "/work", &vars)
    }

    #[test]
    fn expands() {
        let cases = [
            ("/plain/path", "/plain/path"),
            ("~", "/home/u"),
            ("~/", "/home/u/"),
            ("~/.config", "/home/u/.config"),
            ("$DDATA", "/data"),
            ("${DDATA}", "/data"),
            ("$DDATA/projects", "/data/projects"),
            ("${DDATA}x", "/datax"),
            ("/m/$SUB/c", "/m/a/b/c"),
            ("$HOME/env.sh", "/home/u/env.sh"),
            ("/x/${X_1}_y", "/x/x_y"),
            ("/a/$X_1-y", "/a/x-y"),
            ("/cost/$$DDATA", "/cost/$DDATA"),
            ("/a/$", "/a/$"),
            ("/a/$/b", "/a/$/b"),
            ("/a/$1", "/a/$1"),
            ("/a/~/b", "/a/~/b"),
            ("*.log", "*.log"),
            ("tmp/*", "tmp/*"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env()).unwrap(), want, "expand({input:?})");
        }
    }

    #[test]
    fn undefined_variables_are_named() {
        for (input, name) in [
            ("$NOPE/x", "NOPE"),
            ("${NOPE}", "NOPE"),
            ("/a/$EMPTY", "EMPTY"),
            ("$DDATA/$LATER", "LATER"),
        ] {
            match expand(input, &env()) {
                Err(ExpandError::UndefinedVariable { name: n, value }) => {
                    assert_eq!((n.as_str(), value.as_str()), (name, input));
                }
                other => panic!("expand({input:?}) = {other:?}"),
            }
        }
        let msg = expand("$NOPE/x", &env()).unwrap_err().to_string();
        assert!(
            msg.contains("$NOPE") && msg.contains("\"$NOPE/x\""),
            "{msg}"
        );
    }

    #[test]
    fn malformed_forms_are_rejected_with_a_reason() {
        for (input, needle) in [
            ("~payne/x", "~user"),
            ("${DDATA", "closing"),
            ("${}", "not a variable name"),
            ("${1X}", "not a variable name"),
            ("${A-B}", "not a variable name"),
        ] {
            match expand(input, &env()) {
                Err(ExpandError::BadPath { value, reason }) => {
                    assert_eq!(value, input);
                    assert!(reason.contains(needle), "{input:?}: {reason}");
                }
                other => panic!("expand({input:?}) = {other:?}"),
            }
        }
    }

    #[test]
    fn paths_must_be_absolute_and_are_normalised() {
        let cases = [
            ("~/.config/", "/home/u/.config"),
            ("/a//b/./c/", "/a/b/c"),
            ("/a/b/../c", "/a/c"),
            ("/../..", "/"),
            ("$DDATA/../x", "/x"),
            ("/", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(
                expand_path(input, &env()).unwrap(),
                PathBuf::from(want),
                "expand_path({input:?})"
            );
        }
        for (input, needle) in [
            ("data", "relative path"),
            ("./x", "relative path"),
            ("$SUB/c", "expands to \"a/b/c\""),
        ] {
            match expand_path(input, &env()) {
                Err(ExpandError::BadPath { reason, .. }) => {
                    assert!(reason.contains(needle), "{input:?}: {reason}")
                }
                other => panic!("expand_path({input:?}) = {other:?}"),
            }
        }
    }
}
