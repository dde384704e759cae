//! The allow-list of a set's `rsync_args`: the only rsync options a config may add, parsed in every form rsync
//! accepts (`--opt=value`, `--opt value`, `-x`, bundles like `-xW`, `-f RULE`), with their values expanded and checked.
//!
//! An option is allowed when it cannot change what rsync deletes, where it writes, or which files it copies beyond
//! an explicit selection by the user (a size limit, one filesystem, an exclude file). Everything else is refused with
//! the option named and this list shown: `--remove-source-files` would delete the sources, `--existing` would leave
//! the snapshot empty and still call it complete. What cannot be classified is refused too.
//!
//! Pure apart from the [`Host`] it is given (expanding `~`/`$VAR`, reading a file an option names).

use std::path::{Path, PathBuf};

/// What the check needs from its caller.
pub trait Host {
    /// `~`, `$VAR` and `${VAR}` expanded in an option's value.
    fn expand(&self, value: &str) -> Result<String, String>;
    /// An absolute path, expanded and normalised (for values that name a file).
    fn expand_path(&self, value: &str) -> Result<PathBuf, String>;
    /// The text of a regular file an option names (bounded; a missing file, a directory, a FIFO is an error).
    fn read_file(&self, path: &Path) -> Result<String, String>;
}

/// One refused argument: its index in `rsync_args`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub message: String,
    /// The option is not on the allow-list (rather than an allowed option with a bad value): the message should
    /// be followed by [`allowed_list`].
    pub off_list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// A flag.
    Nothing,
    /// A size or rate: `50m`, `1.5G`, `100K`, `1000`, `2MiB`, `1g+1`.
    Size,
    /// An absolute file of exclude patterns that must exist.
    File,
    /// A filter rule: only `merge FILE` (`. FILE`) and `dir-merge NAME` (`: NAME`).
    Filter,
}

/// An allowed option: its long name (`None` for short-only ones), its short letter, its value, what it is for.
struct Allowed {
    long: Option<&'static str>,
    short: Option<char>,
    value: Value,
    shown: &'static str,
}

const fn allow(
    long: Option<&'static str>,
    short: Option<char>,
    value: Value,
    shown: &'static str,
) -> Allowed {
    Allowed {
        long,
        short,
        value,
        shown,
    }
}

/// The allow-list. `shown` is how the refusal message lists each one.
const ALLOWED: &[Allowed] = &[
    allow(Some("bwlimit"), None, Value::Size, "--bwlimit=RATE"),
    allow(Some("max-size"), None, Value::Size, "--max-size=SIZE"),
    allow(Some("min-size"), None, Value::Size, "--min-size=SIZE"),
    allow(
        Some("one-file-system"),
        Some('x'),
        Value::Nothing,
        "-x/--one-file-system",
    ),
    allow(
        Some("exclude-from"),
        None,
        Value::File,
        "--exclude-from=FILE",
    ),
    allow(
        Some("filter"),
        Some('f'),
        Value::Filter,
        "--filter='merge FILE' or 'dir-merge NAME'",
    ),
    allow(None, Some('F'), Value::Nothing, "-F"),
    allow(
        Some("whole-file"),
        Some('W'),
        Value::Nothing,
        "-W/--whole-file",
    ),
    allow(Some("sparse"), Some('S'), Value::Nothing, "-S/--sparse"),
    allow(
        Some("no-hard-links"),
        None,
        Value::Nothing,
        "--no-hard-links",
    ),
    allow(Some("no-acls"), None, Value::Nothing, "--no-acls"),
    allow(Some("no-xattrs"), None, Value::Nothing, "--no-xattrs"),
    allow(
        Some("no-numeric-ids"),
        None,
        Value::Nothing,
        "--no-numeric-ids",
    ),
    allow(Some("no-owner"), None, Value::Nothing, "--no-owner"),
    allow(Some("no-group"), None, Value::Nothing, "--no-group"),
    // dbackup's own flags (-aH): repeating them changes nothing.
    allow(Some("archive"), Some('a'), Value::Nothing, ""),
    allow(Some("recursive"), Some('r'), Value::Nothing, ""),
    allow(Some("links"), Some('l'), Value::Nothing, ""),
    allow(Some("perms"), Some('p'), Value::Nothing, ""),
    allow(Some("times"), Some('t'), Value::Nothing, ""),
    allow(Some("group"), Some('g'), Value::Nothing, ""),
    allow(Some("owner"), Some('o'), Value::Nothing, ""),
    allow(None, Some('D'), Value::Nothing, ""),
    allow(Some("hard-links"), Some('H'), Value::Nothing, ""),
];

/// `--no-X` spellings rsync accepts for the `--no-...` toggles above.
const ALIASES: &[(&str, &str)] = &[
    ("no-H", "no-hard-links"),
    ("no-A", "no-acls"),
    ("no-X", "no-xattrs"),
    ("no-o", "no-owner"),
    ("no-g", "no-group"),
];

const DELETES: &str = "would delete your files after copying them";
const EMPTY: &str = "would leave the snapshot empty while dbackup reports it complete";
const EXCLUSIONS: &str =
    "selects files; put patterns in the set's `exclusions`, or a file in --exclude-from=FILE";
const OUTPUT: &str =
    "changes rsync's output, which dbackup reads (use `dbackup -v` or `-vv` to see more)";
const MANAGED: &str = "is managed by dbackup";
const ELSEWHERE: &str = "would write outside the new snapshot";
const REMOTE: &str = "is for transfers to another machine; dbackup's rsync copies locally";
const LOSES: &str = "would leave files or their metadata out of the snapshot";

/// Options known to be dangerous or pointless, with the reason given (long name, short letter, why).
const REFUSED: &[(&str, Option<char>, &str)] = &[
    ("dry-run", Some('n'), EMPTY),
    ("list-only", None, EMPTY),
    ("only-write-batch", None, EMPTY),
    (
        "existing",
        None,
        "would copy only files that already exist in the new, empty snapshot: it would stay empty while dbackup \
         reports it complete",
    ),
    ("ignore-non-existing", None, EMPTY),
    ("remove-source-files", None, DELETES),
    ("remove-sent-files", None, DELETES),
    ("files-from", None, "would replace the set's sources"),
    ("read-batch", None, "would replace the set's sources"),
    ("link-dest", None, MANAGED),
    ("compare-dest", None, MANAGED),
    ("copy-dest", None, MANAGED),
    ("block-size", Some('B'), MANAGED),
    ("delete", None, MANAGED),
    ("del", None, MANAGED),
    ("delete-before", None, MANAGED),
    ("delete-during", None, MANAGED),
    ("delete-delay", None, MANAGED),
    ("delete-after", None, MANAGED),
    ("delete-excluded", None, MANAGED),
    ("delete-missing-args", None, MANAGED),
    ("max-delete", None, MANAGED),
    ("force", None, MANAGED),
    ("no-delete", None, MANAGED),
    ("no-delete-excluded", None, MANAGED),
    (
        "relative",
        Some('R'),
        "is managed by dbackup: each source lands at its absolute path",
    ),
    (
        "no-relative",
        None,
        "would change where each source lands in the snapshot",
    ),
    (
        "no-R",
        None,
        "would change where each source lands in the snapshot",
    ),
    (
        "no-implied-dirs",
        None,
        "would change where each source lands in the snapshot",
    ),
    (
        "checksum",
        Some('c'),
        "is what `dbackup collect --full` (and schedule.full) does; remove it",
    ),
    (
        "acls",
        Some('A'),
        "is managed by dbackup: added where the backup root keeps ACLs",
    ),
    (
        "xattrs",
        Some('X'),
        "is managed by dbackup: added where the backup root keeps xattrs",
    ),
    (
        "compress",
        Some('z'),
        "is irrelevant: dbackup's rsync copies on this machine, where nothing is compressed",
    ),
    (
        "compress-level",
        None,
        "is irrelevant: dbackup's rsync copies on this machine, where nothing is compressed",
    ),
    (
        "compress-choice",
        None,
        "is irrelevant: dbackup's rsync copies on this machine, where nothing is compressed",
    ),
    (
        "skip-compress",
        None,
        "is irrelevant: dbackup's rsync copies on this machine, where nothing is compressed",
    ),
    ("exclude", None, EXCLUSIONS),
    ("include", None, EXCLUSIONS),
    ("include-from", None, EXCLUSIONS),
    ("cvs-exclude", Some('C'), EXCLUSIONS),
    ("backup", Some('b'), ELSEWHERE),
    ("backup-dir", None, ELSEWHERE),
    ("suffix", None, ELSEWHERE),
    ("temp-dir", Some('T'), ELSEWHERE),
    ("partial-dir", None, ELSEWHERE),
    ("log-file", None, ELSEWHERE),
    ("write-batch", None, ELSEWHERE),
    ("mkpath", None, ELSEWHERE),
    ("rsh", Some('e'), REMOTE),
    ("rsync-path", None, REMOTE),
    ("verbose", Some('v'), OUTPUT),
    ("quiet", Some('q'), OUTPUT),
    ("progress", None, OUTPUT),
    ("info", None, OUTPUT),
    ("debug", None, OUTPUT),
    ("stats", None, OUTPUT),
    ("itemize-changes", Some('i'), OUTPUT),
    ("out-format", None, OUTPUT),
    ("human-readable", Some('h'), OUTPUT),
    ("8-bit-output", Some('8'), OUTPUT),
    ("no-recursive", None, LOSES),
    ("no-r", None, LOSES),
    ("no-links", None, LOSES),
    ("no-l", None, LOSES),
    ("no-perms", None, LOSES),
    ("no-p", None, LOSES),
    ("no-times", None, LOSES),
    ("no-t", None, LOSES),
    ("no-D", None, LOSES),
    ("no-devices", None, LOSES),
    ("no-specials", None, LOSES),
    ("no-archive", None, LOSES),
    ("no-a", None, LOSES),
    ("copy-links", Some('L'), LOSES),
    ("copy-unsafe-links", None, LOSES),
    ("safe-links", None, LOSES),
    ("update", Some('u'), LOSES),
    ("ignore-existing", None, LOSES),
];

/// The allowed options, as a refusal lists them (on a line of its own, under the problem).
pub fn allowed_list() -> String {
    let shown: Vec<&str> = ALLOWED
        .iter()
        .map(|a| a.shown)
        .filter(|s| !s.is_empty())
        .collect();
    format!(
        "allowed: {} (options that cannot change what rsync deletes, where it writes or which files it copies)",
        shown.join(", ")
    )
}

/// Whether the checked args turn off dbackup's `-A` (`'A'`) or `-X` (`'X'`).
pub fn turns_off(args: &[String], flag: char) -> bool {
    let long = match flag {
        'A' => "--no-acls",
        'X' => "--no-xattrs",
        _ => return false,
    };
    args.iter().any(|a| a == long)
}

/// Checks a set's `rsync_args`: returns them in canonical form (`--long=value`, values expanded, one element per
/// option) and every refusal. When anything is refused the returned args are not to be used.
pub fn check(args: &[String], host: &dyn Host) -> (Vec<String>, Vec<Refusal>) {
    let mut out = Vec::new();
    let mut refusals = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let at = i;
        i += 1;
        let mut refuse = |message: String, off_list: bool| {
            refusals.push(Refusal {
                index: at,
                message,
                off_list,
            })
        };
        if arg == "--" {
            refuse(
                "rsync argument \"--\" ends the options: what follows would be taken as sources"
                    .into(),
                true,
            );
        } else if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let name = ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map_or(name, |(_, real)| *real);
            match ALLOWED.iter().find(|a| a.long == Some(name)) {
                Some(a) if a.value == Value::Nothing => match inline {
                    Some(_) => refuse(format!("rsync option --{name} takes no value"), false),
                    None => out.push(format!("--{name}")),
                },
                Some(a) => {
                    let value = match inline {
                        Some(v) => Some(v.to_string()),
                        None if i < args.len() => {
                            i += 1;
                            Some(args[i - 1].clone())
                        }
                        None => None,
                    };
                    match value {
                        None => refuse(format!("rsync option --{name} needs a value"), false),
                        Some(v) => match checked_value(name, a.value, &v, host) {
                            Ok(v) => out.push(format!("--{name}={v}")),
                            Err(e) => refuse(e.message, e.off_list),
                        },
                    }
                }
                None => refuse(refused_long(name), true),
            }
        } else if let Some(bundle) = arg.strip_prefix('-').filter(|b| !b.is_empty()) {
            // Every letter up to one that takes a value (which takes the rest of the bundle, or the next argument).
            let mut flags = Vec::new();
            let mut unknown = Vec::new();
            let mut valued = None;
            for (pos, c) in bundle.char_indices() {
                match ALLOWED.iter().find(|a| a.short == Some(c)) {
                    Some(a) if a.value == Value::Nothing => flags.push(match a.long {
                        Some(long) => format!("--{long}"),
                        None => format!("-{c}"),
                    }),
                    Some(a) => {
                        valued = Some((a, c, &bundle[pos + c.len_utf8()..]));
                        break;
                    }
                    None => unknown.push(c),
                }
            }
            if !unknown.is_empty() {
                refuse(refused_short(arg, &unknown), true);
                continue;
            }
            out.extend(flags);
            if let Some((a, c, rest)) = valued {
                let value = if !rest.is_empty() {
                    Some(rest.to_string())
                } else if i < args.len() {
                    i += 1;
                    Some(args[i - 1].clone())
                } else {
                    None
                };
                let long = a.long.unwrap_or_default();
                match value {
                    None => refuse(format!("rsync option -{c} needs a value"), false),
                    Some(v) => match checked_value(long, a.value, &v, host) {
                        Ok(v) => out.push(format!("--{long}={v}")),
                        Err(e) => refuse(e.message, e.off_list),
                    },
                }
            }
        } else {
            refuse(
                format!(
                    "rsync argument {arg:?} is not an option (it would be taken as a source); options start with \
                     `-`, and a value follows `=` (\"--bwlimit=50m\") or comes as the next argument"
                ),
                true,
            );
        }
    }
    (out, refusals)
}

fn refused_long(name: &str) -> String {
    match REFUSED.iter().find(|(long, _, _)| *long == name) {
        Some((long, _, why)) => format!("rsync option --{long} {why}; remove it"),
        None if name.starts_with("no-") => format!(
            "rsync option --{name} is not allowed: only --no-hard-links, --no-acls, --no-xattrs, \
             --no-numeric-ids, --no-owner and --no-group may turn off what dbackup passes"
        ),
        None => format!("rsync option --{name} is not on the allow-list"),
    }
}

fn refused_short(arg: &str, letters: &[char]) -> String {
    let of = if arg.chars().count() > 2 {
        format!("rsync option {arg:?} includes ")
    } else {
        "rsync option ".to_string()
    };
    let whys: Vec<String> = letters
        .iter()
        .map(
            |c| match REFUSED.iter().find(|(_, short, _)| *short == Some(*c)) {
                Some((long, _, why)) => format!("-{c} (--{long}), which {why}"),
                None => format!(
                    "-{c}, which dbackup cannot classify (give options by their long names)"
                ),
            },
        )
        .collect();
    format!("{of}{}; remove it", whys.join(", and "))
}

/// Why a value was refused: a bad value of an allowed option, or (`off_list`) a form of it that is not allowed.
struct ValueError {
    message: String,
    off_list: bool,
}

impl From<String> for ValueError {
    fn from(message: String) -> ValueError {
        ValueError {
            message,
            off_list: false,
        }
    }
}

/// Checks one value; returns it expanded (files: the absolute path).
fn checked_value(
    name: &str,
    kind: Value,
    raw: &str,
    host: &dyn Host,
) -> Result<String, ValueError> {
    let value = host
        .expand(raw)
        .map_err(|e| format!("rsync option --{name}: {e}"))?;
    if value.contains(['\n', '\r', '\0']) {
        return Err(
            format!("rsync option --{name}: the value {raw:?} holds a line break or NUL").into(),
        );
    }
    match kind {
        Value::Nothing => Ok(value),
        Value::Size => {
            if is_size(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "rsync option --{name}={raw} is not a size: write a number with an optional unit (\"50m\", \"1.5G\", \"100K\")"
                )
                .into())
            }
        }
        Value::File => {
            let path = host
                .expand_path(raw)
                .map_err(|e| format!("rsync option --{name}: {e}"))?;
            let text = host
                .read_file(&path)
                .map_err(|e| format!("rsync option --{name}: {}: {e}", path.display()))?;
            patterns_ok(&text, false)
                .map_err(|e| format!("rsync option --{name}: {}: {e}", path.display()))?;
            Ok(path.to_string_lossy().into_owned())
        }
        Value::Filter => filter_rule(&value, raw, host),
    }
}

/// `50m`, `1.5G`, `100K`, `1000`, `2MiB`, `1g+1`, `1g-1`, as `--max-size` and `--bwlimit` read them.
pub fn is_size(s: &str) -> bool {
    let s = s
        .strip_suffix("+1")
        .or_else(|| s.strip_suffix("-1"))
        .unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let number_ok = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    let unit = unit.to_ascii_lowercase();
    let unit_ok = match unit.as_str() {
        "" | "b" => true,
        u => {
            let mut cs = u.chars();
            matches!(cs.next(), Some('k' | 'm' | 'g' | 't' | 'p'))
                && matches!(cs.as_str(), "" | "b" | "ib")
        }
    };
    number_ok && unit_ok
}

/// A `--filter` rule: `merge[,MODS] FILE` / `.[MODS] FILE` with FILE existing, or `dir-merge[,MODS] NAME` /
/// `:[MODS] NAME`. Modifiers: `-` `+` `e` `n` `w`. Returns the rule with FILE absolute.
fn filter_rule(rule: &str, raw: &str, host: &dyn Host) -> Result<String, ValueError> {
    let refused = |why: &str| ValueError::from(format!("rsync option --filter={raw:?} {why}"));
    let off_list = |why: &str| ValueError {
        off_list: true,
        ..refused(why)
    };
    let (merge, after) = if let Some(r) = rule.strip_prefix("dir-merge") {
        (false, r.strip_prefix(',').unwrap_or(r))
    } else if let Some(r) = rule.strip_prefix("merge") {
        (true, r.strip_prefix(',').unwrap_or(r))
    } else if let Some(r) = rule.strip_prefix(':') {
        (false, r)
    } else if let Some(r) = rule.strip_prefix('.') {
        (true, r)
    } else {
        return Err(off_list(
            "is not allowed: only merge (.) and dir-merge (:) rules may be given here; exclude patterns belong in \
             the set's `exclusions`, and other rules could change what rsync deletes or clear dbackup's exclusions",
        ));
    };
    let sep = after.find([' ', '_']).ok_or_else(|| {
        refused("has no file name: write the rule, a space, then the file (\"merge /path/rules\")")
    })?;
    let (mods, arg) = (&after[..sep], &after[sep + 1..]);
    if let Some(m) = mods.chars().find(|m| !"-+enw".contains(*m)) {
        return Err(off_list(&format!(
            "uses the modifier {m:?}; only - + e n w are allowed"
        )));
    }
    if arg.is_empty() {
        return Err(refused("has no file name"));
    }
    if merge {
        let path = host
            .expand_path(arg)
            .map_err(|e| format!("rsync option --filter: {e}"))?;
        let text = host
            .read_file(&path)
            .map_err(|e| format!("rsync option --filter: {}: {e}", path.display()))?;
        let patterns_only = mods.contains(['-', '+']);
        let checked = if patterns_only {
            patterns_ok(&text, mods.contains('w'))
        } else {
            rules_ok(&text, mods.contains('w'))
        };
        checked.map_err(|e| format!("rsync option --filter: {}: {e}", path.display()))?;
        let sep = if mods.is_empty() {
            String::new()
        } else {
            format!(",{mods}")
        };
        Ok(format!("merge{sep} {}", path.display()))
    } else {
        let name = arg.strip_prefix('/').unwrap_or(arg);
        if name.is_empty() || name.contains(['/', ' ']) || name == "." || name == ".." {
            return Err(refused(
                "needs a plain file name (\".rsync-filter\"), looked for in every directory",
            ));
        }
        let sep = if mods.is_empty() {
            String::new()
        } else {
            format!(",{mods}")
        };
        Ok(format!("dir-merge{sep} {arg}"))
    }
}

/// The entries of a rules or patterns file: lines (or words), without blank lines and `#` comments.
fn entries(text: &str, words: bool) -> Vec<&str> {
    if words {
        return text.split_whitespace().collect();
    }
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect()
}

/// A file of patterns (exclude-from, `merge,-`): a `!` alone clears every rule before it, dbackup's exclusions too.
fn patterns_ok(text: &str, words: bool) -> Result<(), String> {
    match entries(text, words).iter().position(|e| e.trim() == "!") {
        Some(n) => Err(format!(
            "entry {} is `!`, which would clear dbackup's exclusions; remove it",
            n + 1
        )),
        None => Ok(()),
    }
}

/// A file of rules (`merge`): no `!`/`clear` (it would clear dbackup's exclusions) and no nested merge (dbackup
/// could not check the file it names).
fn rules_ok(text: &str, words: bool) -> Result<(), String> {
    for (n, e) in entries(text, words).iter().enumerate() {
        let head = e
            .trim_start()
            .split([' ', '_', ','])
            .next()
            .unwrap_or_default();
        let first = head.chars().next();
        if head == "clear" || first == Some('!') {
            return Err(format!(
                "rule {} ({e:?}) clears the rules before it, dbackup's exclusions too; remove it",
                n + 1
            ));
        }
        if head == "merge" || first == Some('.') {
            return Err(format!(
                "rule {} ({e:?}) merges another file; name that file in rsync_args instead",
                n + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Expands `~` to /home/u and `$R` to 50m; the files it knows are in `files`.
    struct Fake {
        files: BTreeMap<&'static str, &'static str>,
    }

    impl Host for Fake {
        fn expand(&self, value: &str) -> Result<String, String> {
            if value.contains("$NOPE") {
                return Err("undefined variable $NOPE".into());
            }
            Ok(value.replace('~', "/home/u").replace("$R", "50m"))
        }
        fn expand_path(&self, value: &str) -> Result<PathBuf, String> {
            let v = self.expand(value)?;
            if v.starts_with('/') {
                Ok(PathBuf::from(v))
            } else {
                Err(format!("{value:?} is a relative path"))
            }
        }
        fn read_file(&self, path: &Path) -> Result<String, String> {
            self.files
                .get(path.to_str().unwrap())
                .map(|s| s.to_string())
                .ok_or_else(|| "does not exist".into())
        }
    }

    fn fake() -> Fake {
        Fake {
            files: BTreeMap::from([
                ("/home/u/excl", "*.iso\n# a comment\n\n/tmp/*\n"),
                ("/home/u/rules", "- *.o\n+ keep/\ndir-merge .rules\n"),
                ("/home/u/clears", "- *.o\n!\n"),
                ("/home/u/clears-rule", "- *.o\nclear\n"),
                ("/home/u/nested", ". /etc/other\n"),
            ]),
        }
    }

    fn ok(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (out, refused) = check(&args, &fake());
        assert!(refused.is_empty(), "{args:?}: {refused:#?}");
        out
    }

    /// The refusals' messages, with their indexes.
    fn refused(args: &[&str]) -> Vec<(usize, String)> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (_, refused) = check(&args, &fake());
        refused
            .into_iter()
            .map(|r| {
                // Bad values of allowed options do not need the list; everything else does.
                let value_problem = r.message.starts_with("rsync option --exclude-from:")
                    || r.message.starts_with("rsync option --filter:")
                    || r.message.starts_with("rsync option --bwlimit")
                    || r.message.contains("needs a value")
                    || r.message.contains("takes no value")
                    || (r.message.starts_with("rsync option --filter=\"")
                        && !r.message.contains("is not allowed")
                        && !r.message.contains("uses the modifier"));
                assert_eq!(r.off_list, !value_problem, "{}", r.message);
                (r.index, r.message)
            })
            .collect()
    }

    #[test]
    fn allowed_forms_become_canonical() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["--bwlimit=50m"], &["--bwlimit=50m"]),
            (&["--bwlimit", "$R"], &["--bwlimit=50m"]),
            (
                &["--max-size=1.5G", "--min-size", "1k"],
                &["--max-size=1.5G", "--min-size=1k"],
            ),
            (&["-x"], &["--one-file-system"]),
            (
                &["-xW", "-S"],
                &["--one-file-system", "--whole-file", "--sparse"],
            ),
            (&["-rW"], &["--recursive", "--whole-file"]),
            (
                &["--no-H", "--no-acls", "--no-X"],
                &["--no-hard-links", "--no-acls", "--no-xattrs"],
            ),
            (&["--exclude-from=~/excl"], &["--exclude-from=/home/u/excl"]),
            (
                &["--exclude-from", "~/excl"],
                &["--exclude-from=/home/u/excl"],
            ),
            (
                &["--filter=merge ~/rules"],
                &["--filter=merge /home/u/rules"],
            ),
            (
                &["--filter", ". ~/rules"],
                &["--filter=merge /home/u/rules"],
            ),
            (
                &["-f", "merge,- ~/excl"],
                &["--filter=merge,- /home/u/excl"],
            ),
            (
                &["-xf", ":n- .ignore"],
                &["--one-file-system", "--filter=dir-merge,n- .ignore"],
            ),
            (&["-f:- .gitignore"], &["--filter=dir-merge,- .gitignore"]),
            (
                &["--filter=dir-merge /.rsync-filter", "-F"],
                &["--filter=dir-merge /.rsync-filter", "-F"],
            ),
            (&["-FF"], &["-F", "-F"]),
        ];
        for (args, want) in cases {
            assert_eq!(ok(args), *want, "{args:?}");
        }
    }

    #[test]
    // Stays long: a table of cases, one per line.
    fn everything_else_is_refused_with_the_option_named() {
        /// The args, and the refusals expected: (index, start of the message).
        type Case<'a> = (&'a [&'a str], &'a [(usize, &'a str)]);
        let cases: &[Case] = &[
            (
                &["--remove-source-files"],
                &[(
                    0,
                    "rsync option --remove-source-files would delete your files",
                )],
            ),
            (
                &["--remove-sent-files"],
                &[(
                    0,
                    "rsync option --remove-sent-files would delete your files",
                )],
            ),
            (
                &["--existing"],
                &[(
                    0,
                    "rsync option --existing would copy only files that already exist",
                )],
            ),
            (
                &["--dry-run"],
                &[(0, "rsync option --dry-run would leave the snapshot empty")],
            ),
            (
                &["-avn"],
                &[(
                    0,
                    "rsync option \"-avn\" includes -v (--verbose), which changes rsync's output, which dbackup reads (use `dbackup -v` or `-vv` to see more), and -n (--dry-run), which would leave the snapshot empty",
                )],
            ),
            (
                &["-an"],
                &[(
                    0,
                    "rsync option \"-an\" includes -n (--dry-run), which would leave the snapshot empty",
                )],
            ),
            (
                &["-y"],
                &[(0, "rsync option -y, which dbackup cannot classify")],
            ),
            (
                &["--compress-level=9"],
                &[(0, "rsync option --compress-level is irrelevant")],
            ),
            (
                &["-z"],
                &[(0, "rsync option -z (--compress), which is irrelevant")],
            ),
            (
                &["--delete-after"],
                &[(0, "rsync option --delete-after is managed by dbackup")],
            ),
            (
                &["--no-relative"],
                &[(
                    0,
                    "rsync option --no-relative would change where each source lands",
                )],
            ),
            (
                &["--no-times"],
                &[(
                    0,
                    "rsync option --no-times would leave files or their metadata out",
                )],
            ),
            (
                &["--no-whatever"],
                &[(
                    0,
                    "rsync option --no-whatever is not allowed: only --no-hard-links",
                )],
            ),
            (
                &["--frobnicate"],
                &[(0, "rsync option --frobnicate is not on the allow-list")],
            ),
            (
                &["--exclude=*.o"],
                &[(
                    0,
                    "rsync option --exclude selects files; put patterns in the set's `exclusions`",
                )],
            ),
            (
                &["--backup-dir=/tmp/x"],
                &[(
                    0,
                    "rsync option --backup-dir would write outside the new snapshot",
                )],
            ),
            (
                &["/etc"],
                &[(0, "rsync argument \"/etc\" is not an option")],
            ),
            (
                &["--", "/etc"],
                &[
                    (0, "rsync argument \"--\" ends the options"),
                    (1, "rsync argument \"/etc\" is not an option"),
                ],
            ),
            (
                &["--bwlimit"],
                &[(0, "rsync option --bwlimit needs a value")],
            ),
            (
                &["--bwlimit=fast"],
                &[(0, "rsync option --bwlimit=fast is not a size")],
            ),
            (
                &["--one-file-system=yes"],
                &[(0, "rsync option --one-file-system takes no value")],
            ),
            (
                &["--exclude-from=~/missing"],
                &[(
                    0,
                    "rsync option --exclude-from: /home/u/missing: does not exist",
                )],
            ),
            (
                &["--exclude-from=excl"],
                &[(
                    0,
                    "rsync option --exclude-from: \"excl\" is a relative path",
                )],
            ),
            (
                &["--bwlimit=$NOPE"],
                &[(0, "rsync option --bwlimit: undefined variable $NOPE")],
            ),
            (
                &["--filter=- *.o"],
                &[(
                    0,
                    "rsync option --filter=\"- *.o\" is not allowed: only merge (.) and dir-merge (:)",
                )],
            ),
            (
                &["--filter=! "],
                &[(0, "rsync option --filter=\"! \" is not allowed")],
            ),
            (
                &["--filter=protect /x"],
                &[(0, "rsync option --filter=\"protect /x\" is not allowed")],
            ),
            (
                &["--filter=merge,s ~/rules"],
                &[(
                    0,
                    "rsync option --filter=\"merge,s ~/rules\" uses the modifier 's'",
                )],
            ),
            (
                &["--filter=merge ~/clears"],
                &[(
                    0,
                    "rsync option --filter: /home/u/clears: rule 2 (\"!\") clears the rules",
                )],
            ),
            (
                &["--filter=. ~/clears-rule"],
                &[(
                    0,
                    "rsync option --filter: /home/u/clears-rule: rule 2 (\"clear\") clears",
                )],
            ),
            (
                &["--filter=merge ~/nested"],
                &[(
                    0,
                    "rsync option --filter: /home/u/nested: rule 1 (\". /etc/other\") merges another file",
                )],
            ),
            (
                &["--exclude-from=~/clears"],
                &[(
                    0,
                    "rsync option --exclude-from: /home/u/clears: entry 2 is `!`",
                )],
            ),
            (
                &["--filter=dir-merge a/b"],
                &[(
                    0,
                    "rsync option --filter=\"dir-merge a/b\" needs a plain file name",
                )],
            ),
            (
                &["--filter=merge"],
                &[(0, "rsync option --filter=\"merge\" has no file name")],
            ),
            (&["-f"], &[(0, "rsync option -f needs a value")]),
            (
                &["-W", "--bwlimit=1m", "-q"],
                &[(2, "rsync option -q (--quiet), which changes rsync's output")],
            ),
        ];
        for (args, want) in cases {
            let got = refused(args);
            assert_eq!(got.len(), want.len(), "{args:?}: {got:#?}");
            for ((gi, g), (wi, w)) in got.iter().zip(want.iter()) {
                assert!(
                    gi == wi && g.starts_with(w),
                    "{args:?}:\n  got:  {gi} {g}\n  want: {wi} {w}..."
                );
            }
        }
    }

    #[test]
    fn sizes() {
        for s in [
            "0", "50m", "50M", "1.5G", "100K", "1000", "2MiB", "2mb", "1g+1", "1g-1", "7b",
        ] {
            assert!(is_size(s), "{s}");
        }
        for s in [
            "", "m", "1.", ".5", "1.2.3", "5x", "5mm", "-1", "1 m", "50mib2",
        ] {
            assert!(!is_size(s), "{s}");
        }
    }

    #[test]
    fn the_list_names_every_allowed_option_and_toggles_are_found() {
        let list = allowed_list();
        for a in ALLOWED.iter().filter(|a| !a.shown.is_empty()) {
            assert!(list.contains(a.shown), "{}", a.shown);
        }
        let args = ok(&["--no-A", "-x"]);
        assert!(turns_off(&args, 'A') && !turns_off(&args, 'X') && !turns_off(&args, 'H'));
    }
}
