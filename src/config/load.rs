//! Finding, reading and validating a config file: comments allowed, schema errors located by line:column.
//!
//! The file is JSON plus `//` and `/* */` comments, nothing else: trailing commas, single quotes and unquoted
//! keys are rejected, so a config stays readable by any JSON tool once its comments are stripped.
//! It is parsed with `jsonc-parser` into a tree that keeps byte ranges, turned into a `serde_json::Value`
//! (remembering where each JSON pointer sits), validated against the embedded schema (every problem, not just the
//! first), and only then deserialized into [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonc_parser::ast;
use jsonc_parser::common::Ranged;
use jsonc_parser::errors::ParseErrorKind;
use jsonschema::ValidationError;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::{Config, ConfigError, Location, Problem, default, schema};
use crate::expand::Env;

/// Why a config path was chosen, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `dbackup config check PATH` / `config init PATH`.
    Argument,
    /// `--config PATH`.
    Flag,
    /// `$DBACKUP_CONFIG`.
    Env,
    /// `$XDG_CONFIG_HOME/dbackup/config.json` or `~/.config/dbackup/config.json`.
    Default,
}

impl Origin {
    /// Whether the user named this path: then a missing file is an error, not a reason to use the built-in default.
    pub fn explicit(self) -> bool {
        self != Origin::Default
    }

    pub fn describe(self) -> &'static str {
        match self {
            Origin::Argument => "the command line",
            Origin::Flag => "--config",
            Origin::Env => "$DBACKUP_CONFIG",
            Origin::Default => "the default location",
        }
    }
}

/// The config file dbackup reads: `--config`, else `$DBACKUP_CONFIG`, else `$XDG_CONFIG_HOME/dbackup/config.json`
/// (`~/.config/dbackup/config.json` when that is unset or relative). Relative paths are taken from `env.cwd`.
/// The file need not exist.
pub fn config_path(flag: Option<&Path>, env: &Env) -> (PathBuf, Origin) {
    if let Some(p) = flag {
        return (absolute(p, env), Origin::Flag);
    }
    if let Some(p) = env.var("DBACKUP_CONFIG") {
        return (absolute(Path::new(p), env), Origin::Env);
    }
    (default_config_path(env), Origin::Default)
}

/// `$XDG_CONFIG_HOME/dbackup/config.json`, or `~/.config/dbackup/config.json`.
pub fn default_config_path(env: &Env) -> PathBuf {
    xdg_dir(env, "XDG_CONFIG_HOME", ".config")
        .join("dbackup")
        .join("config.json")
}

/// An XDG base directory: the variable when set to an absolute path (the spec says to ignore relative ones), else
/// `~/<fallback>`.
pub fn xdg_dir(env: &Env, var: &str, fallback: &str) -> PathBuf {
    match env.var(var) {
        Some(v) if Path::new(v).is_absolute() => crate::expand::normalize(Path::new(v)),
        _ => env.home.join(fallback),
    }
}

fn absolute(p: &Path, env: &Env) -> PathBuf {
    crate::expand::normalize(&env.cwd.join(p))
}

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
}

/// A config, parsed and schema-valid, with where it came from and where each value sits in the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: ConfigSource,
    pub positions: Positions,
}

impl Loaded {
    /// The name used in messages: the file's path, or `(built-in default)`.
    pub fn display_path(&self) -> PathBuf {
        match &self.source {
            ConfigSource::File(p) => p.clone(),
            ConfigSource::BuiltIn => PathBuf::from(super::BUILT_IN_NAME),
        }
    }
}

/// Finds and loads the config for a run: `flag` is `--config`. When no file is named and the default location has
/// none, the built-in default is used.
pub fn load(flag: Option<&Path>, env: &Env) -> Result<Loaded, ConfigError> {
    let (path, origin) = config_path(flag, env);
    load_at(&path, origin, env)
}

/// Loads the config at `path`; a missing file is an error when `origin` is explicit, else the built-in default.
pub fn load_at(path: &Path, origin: Origin, env: &Env) -> Result<Loaded, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|e| {
                let offset = e.utf8_error().valid_up_to();
                let lines = LineIndex::new(&String::from_utf8_lossy(&e.into_bytes()[..offset]));
                let l = lines.location(offset);
                ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: l.line,
                    column: l.column,
                    message: "the file is not UTF-8 text".into(),
                }
            })?;
            let (config, positions) = parse(path, &text)?;
            Ok(Loaded {
                config,
                source: ConfigSource::File(path.to_path_buf()),
                positions,
            })
        }
        // A dangling symlink is a config that should be there (dotfiles not mounted?), not an absent one.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(path).is_ok() =>
        {
            let target = std::fs::read_link(path).unwrap_or_default();
            Err(ConfigError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    e.kind(),
                    format!(
                        "it is a symlink to {}, which does not exist",
                        target.display()
                    ),
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !origin.explicit() => Ok(Loaded {
            config: default::config(env),
            source: ConfigSource::BuiltIn,
            positions: Positions::default(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            path: path.to_path_buf(),
            origin: origin.describe().to_string(),
        }),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses and validates config text; `path` only names the file in errors. A leading UTF-8 byte-order mark (which
/// some Windows editors write) is skipped; positions are counted after it, as editors show them.
pub fn parse(path: &Path, text: &str) -> Result<(Config, Positions), ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (value, positions, mut problems) = to_value(path, text)?;
    for error in schema::validator().iter_errors(&value) {
        problems.extend(explain(&error, &positions));
    }
    if problems.is_empty() {
        match serde_json::from_value::<Config>(value) {
            Ok(config) => return Ok((config, positions)),
            // The schema is generated from the same types, so this is a bug; still say something useful.
            Err(e) => problems.push(Problem::new(
                "",
                format!("does not fit the config types: {e}"),
            )),
        }
    }
    Err(ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: positions.place(problems),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// JSON with comments -> serde_json::Value, remembering positions.

/// Where each JSON pointer of a file sits.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    /// pointer -> (byte offset of its key, byte offset of its value)
    map: HashMap<String, (Option<usize>, usize)>,
    lines: LineIndex,
}

impl Positions {
    /// Where the value at `pointer` starts; for a pointer that does not exist (a missing key), its nearest
    /// existing parent.
    pub fn value(&self, pointer: &str) -> Option<Location> {
        let mut p = pointer;
        loop {
            if let Some((_, v)) = self.map.get(p) {
                return Some(self.lines.location(*v));
            }
            p = &p[..p.rfind('/')?];
        }
    }

    /// Where the key of the member at `pointer` starts (its value's start for array items).
    pub fn key(&self, pointer: &str) -> Option<Location> {
        match self.map.get(pointer) {
            Some((Some(k), _)) => Some(self.lines.location(*k)),
            _ => self.value(pointer),
        }
    }

    /// Locates each problem not yet located at its value, drops repeats and sorts them into file order.
    pub fn place(&self, mut problems: Vec<Problem>) -> Vec<Problem> {
        for p in &mut problems {
            if p.location.is_none() {
                p.location = self.value(&p.pointer);
            }
        }
        let mut seen = std::collections::HashSet::new();
        problems.retain(|p| seen.insert((p.pointer.clone(), p.message.clone())));
        problems.sort_by_key(|p| p.location);
        problems
    }
}

/// Byte offset -> line and column.
#[derive(Debug, Clone, Default)]
struct LineIndex {
    /// Byte offset of each line's start.
    starts: Vec<usize>,
    text: String,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            starts,
            text: text.to_string(),
        }
    }

    fn location(&self, offset: usize) -> Location {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location { line, column }
    }
}

fn strict_json_with_comments() -> jsonc_parser::ParseOptions {
    jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

fn to_value(path: &Path, text: &str) -> Result<(Value, Positions, Vec<Problem>), ConfigError> {
    let syntax = |line, column, message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let parsed =
        jsonc_parser::parse_to_ast(text, &Default::default(), &strict_json_with_comments())
            .map_err(|e| {
                syntax(
                    e.line_display(),
                    e.column_display(),
                    syntax_message(e.kind()),
                )
            })?;
    let lines = LineIndex::new(text);
    let Some(root) = parsed.value else {
        let end = lines.location(text.len());
        return Err(syntax(
            end.line,
            end.column,
            "the file holds no JSON value; a config is an object such as { \"backup_sets\": [ ... ] } \
             (`dbackup config init` writes a commented one)"
                .into(),
        ));
    };
    let mut positions = Positions {
        map: HashMap::new(),
        lines,
    };
    let mut problems = Vec::new();
    let value = convert(&root, String::new(), None, &mut positions, &mut problems);
    Ok((value, positions, problems))
}

fn convert(
    node: &ast::Value,
    pointer: String,
    key: Option<usize>,
    positions: &mut Positions,
    problems: &mut Vec<Problem>,
) -> Value {
    positions
        .map
        .insert(pointer.clone(), (key, node.range().start));
    match node {
        ast::Value::StringLit(s) => Value::String(s.value.to_string()),
        ast::Value::NumberLit(n) => serde_json::from_str(n.value).unwrap_or(Value::Null),
        ast::Value::BooleanLit(b) => Value::Bool(b.value),
        ast::Value::NullKeyword(_) => Value::Null,
        ast::Value::Array(a) => Value::Array(
            a.elements
                .iter()
                .enumerate()
                .map(|(i, e)| convert(e, format!("{pointer}/{i}"), None, positions, problems))
                .collect(),
        ),
        ast::Value::Object(o) => {
            let mut map = serde_json::Map::new();
            let mut first_at: HashMap<&str, usize> = HashMap::new();
            for prop in &o.properties {
                let name = prop.name.as_str();
                let child = format!("{pointer}/{}", escape_pointer(name));
                let key_start = prop.name.range().start;
                if let Some(&first) = first_at.get(name) {
                    let l = positions.lines.location(first);
                    problems.push(
                        Problem::new(
                            child.clone(),
                            format!(
                                "duplicate key \"{name}\" (also at line {}:{}); keep one of them",
                                l.line, l.column
                            ),
                        )
                        .at(positions.lines.location(key_start)),
                    );
                } else {
                    first_at.insert(name, key_start);
                }
                let v = convert(&prop.value, child, Some(key_start), positions, problems);
                map.insert(name.to_string(), v);
            }
            Value::Object(map)
        }
    }
}

fn syntax_message(kind: &ParseErrorKind) -> String {
    const STRICT: &str = "a config is plain JSON, plus // and /* */ comments";
    match kind {
        ParseErrorKind::TrailingCommasNotAllowed => format!("trailing comma; remove it ({STRICT})"),
        ParseErrorKind::SingleQuotedStringsNotAllowed => {
            format!("single-quoted string; use double quotes ({STRICT})")
        }
        ParseErrorKind::ExpectedStringObjectProperty | ParseErrorKind::UnexpectedWord => {
            format!("expected a key in double quotes ({STRICT})")
        }
        ParseErrorKind::ExpectedComma => "expected a comma `,` before the next item".into(),
        ParseErrorKind::UnterminatedObject => {
            "unterminated object: a closing `}` is missing".into()
        }
        ParseErrorKind::UnterminatedArray => "unterminated array: a closing `]` is missing".into(),
        ParseErrorKind::UnterminatedCommentBlock => {
            "unterminated comment: a closing `*/` is missing".into()
        }
        ParseErrorKind::MultipleRootJsonValues => "text after the end of the config object".into(),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            let first = chars
                .next()
                .map(|c| c.to_lowercase().collect::<String>())
                .unwrap_or_default();
            format!("{first}{} ({STRICT})", chars.as_str())
        }
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

// ---------------------------------------------------------------------------------------------------------------
// Schema errors -> problems people can act on.

impl Problem {
    fn at(mut self, location: Location) -> Problem {
        self.location = Some(location);
        self
    }
}

/// The hint for a config key that looks like a credential (`secret_access_key`, `application_key`, `password`,
/// ...): credentials never go in the config, and this says where they go. `None` for other keys.
fn secret_key_hint(key: &str) -> Option<&'static str> {
    let k = key.to_ascii_lowercase();
    if k == "credentials_file" {
        return None;
    }
    let secretish = [
        "secret",
        "password",
        "passwd",
        "access_key",
        "key_id",
        "application_key",
        "token",
        "api_key",
        "apikey",
        "private_key",
    ];
    secretish.iter().any(|s| k.contains(s)).then_some(
        "credentials never go in the config (it is read by services, copied into the Nix store and shown by \
         `config check`): put them in a file that only you can read (chmod 600) and name it in the destination's \
         `credentials_file`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (B2: B2_APPLICATION_KEY_ID and \
         B2_APPLICATION_KEY) in the environment dbackup runs in",
    )
}

/// A value of the wrong type at `at` (the schema there is `here`): what was expected and what was found, and for a
/// string where a list belongs, how to write it as one.
fn wrong_type(at: &str, instance: &Value, here: Option<&'static Value>) -> String {
    let expected = here
        .map(describe)
        .unwrap_or_else(|| "something else".into());
    let mut message = format!("expected {expected}, found {}", found(at, instance));
    let wants_list = here
        .and_then(|s| s.get("type"))
        .is_some_and(|t| t == "array");
    if wants_list && let Value::String(_) = instance {
        // The value itself only when it is shown whole: a redacted one would be copied back as such.
        let whole = instance.to_string();
        match shown_string(at, instance) {
            Some(shown) if shown == whole => {
                message.push_str(&format!("; for one item write [{shown}]"))
            }
            _ => message.push_str("; for one item write it in brackets, [\"...\"]"),
        }
    }
    message
}

/// Turns one schema error into problems (one per unknown key; the matching branch's errors for `anyOf`).
/// Unknown keys are located at the key, everything else at the value (by [`Positions::place`]).
fn explain(error: &ValidationError, positions: &Positions) -> Vec<Problem> {
    let at = error.instance_path().as_str();
    let pointer = at.to_string();
    let instance = error.instance();
    let here = schema_at(&pointer);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed: Vec<String> = here.map(object_keys).unwrap_or_default();
            unexpected
                .iter()
                .map(|key| {
                    // The key as written, visible: a control character in it cannot drive the terminal.
                    let mut message = format!("unknown key \"{}\"", crate::stdx::show_str(key));
                    if let Some(hint) = secret_key_hint(key) {
                        message.push_str(&format!("; {hint}"));
                    } else if let Some(s) = suggest(key, allowed.iter().map(String::as_str)) {
                        message.push_str(&format!("; did you mean \"{s}\"?"));
                    }
                    let child = format!("{pointer}/{}", escape_pointer(key));
                    let mut p = Problem::new(child.clone(), message)
                        .allowed(format!("allowed keys here: {}", quote_list(&allowed)));
                    p.location = positions.key(&child);
                    p
                })
                .collect()
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<&Value> = options
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let names: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            let mut message = format!("{} is not allowed", found(at, instance));
            if let Value::String(s) = &**instance
                && let Some(m) = suggest(s, options.iter().filter_map(|o| o.as_str()))
            {
                message.push_str(&format!("; did you mean \"{m}\"?"));
            }
            vec![
                Problem::new(pointer, message)
                    .allowed(format!("allowed values: {}", names.join(", "))),
            ]
        }
        ValidationErrorKind::Type { .. } => {
            vec![Problem::new(pointer, wrong_type(at, instance, here))]
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let child = format!("{pointer}/{}", escape_pointer(name));
            let mut p = Problem::new(child.clone(), format!("missing required key \"{name}\""));
            if let Some(d) = schema_at(&child)
                .and_then(|s| s.get("description"))
                .and_then(Value::as_str)
            {
                p = p.allowed(format!("\"{name}\": {}", first_sentence(d)));
            }
            vec![p]
        }
        ValidationErrorKind::Minimum { limit } => {
            vec![Problem::new(
                pointer,
                format!(
                    "{} is too small; the minimum is {limit}",
                    found(at, instance)
                ),
            )]
        }
        ValidationErrorKind::Maximum { limit } => {
            vec![Problem::new(
                pointer,
                format!(
                    "{} is too large; the maximum is {limit}",
                    found(at, instance)
                ),
            )]
        }
        ValidationErrorKind::MinItems { limit } => {
            let what = here.map(describe).unwrap_or_else(|| "a list".into());
            let n = instance.as_array().map_or(0, Vec::len);
            let message = if n == 0 {
                format!("the list is empty; at least {limit} needed")
            } else {
                format!("the list has {n} items; at least {limit} needed")
            };
            vec![Problem::new(pointer, message).allowed(format!("expected {what}"))]
        }
        ValidationErrorKind::MinLength { limit } => {
            vec![Problem::new(
                pointer,
                format!(
                    "{} is too short; at least {limit} characters needed",
                    found(at, instance)
                ),
            )]
        }
        ValidationErrorKind::Pattern { pattern } if pattern == schema::SAFE_NAME_PATTERN => {
            vec![
                Problem::new(
                    pointer,
                    format!("{} is not a safe name", found(at, instance)),
                )
                .allowed(format!("allowed: {}", schema::SAFE_NAME_RULE)),
            ]
        }
        ValidationErrorKind::Pattern { pattern } => {
            vec![Problem::new(
                pointer,
                format!(
                    "{} does not match the pattern {pattern}",
                    found(at, instance)
                ),
            )]
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Report the errors of the branch whose type fits the value (an object policy with a misspelt
            // key, say); when no branch fits, say what the branches accept.
            let fitting: Vec<&Vec<ValidationError<'static>>> = context
                .iter()
                .filter(|branch| {
                    !branch.iter().any(|e| {
                        e.instance_path().as_str() == pointer
                            && matches!(e.kind(), ValidationErrorKind::Type { .. })
                    })
                })
                .collect();
            if let [branch] = fitting.as_slice() {
                branch.iter().flat_map(|e| explain(e, positions)).collect()
            } else {
                let expected = here
                    .map(describe)
                    .unwrap_or_else(|| "something else".into());
                vec![Problem::new(
                    pointer,
                    format!("expected {expected}, found {}", found(at, instance)),
                )]
            }
        }
        _ => {
            let text = error.to_string();
            vec![Problem::new(pointer, text)]
        }
    }
}

/// The subschema that applies at an instance pointer, with `$ref`s resolved. Inside an `anyOf`, descends
/// into the branch that has the next key (or items).
fn schema_at(pointer: &str) -> Option<&'static Value> {
    let root = schema::embedded();
    let mut s = resolve(root);
    for segment in pointer.split('/').skip(1) {
        let key = unescape_pointer(segment);
        s = branches(s)
            .into_iter()
            .find_map(|b| {
                b.get("properties").and_then(|p| p.get(&key)).or_else(|| {
                    if key.parse::<usize>().is_ok() {
                        b.get("items")
                    } else {
                        None
                    }
                })
            })
            .map(resolve)?;
    }
    Some(s)
}

fn resolve(mut s: &'static Value) -> &'static Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let Some(target) = r
            .strip_prefix('#')
            .and_then(|p| schema::embedded().pointer(p))
        else {
            break;
        };
        s = target;
    }
    s
}

/// A schema's alternatives (itself when it has no `anyOf`/`oneOf`), `$ref`s resolved.
fn branches(s: &'static Value) -> Vec<&'static Value> {
    match s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Value::as_array)
    {
        Some(alts) => alts.iter().map(resolve).flat_map(branches).collect(),
        None => vec![s],
    }
}

fn object_keys(s: &'static Value) -> Vec<String> {
    branches(s)
        .into_iter()
        .filter_map(|b| b.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().cloned())
        .collect()
}

/// What a schema accepts, in words: `an integer >= 1 or an object with keys "daily", ...`.
fn describe(s: &'static Value) -> String {
    let alts = branches(s);
    if alts.len() > 1 {
        return alts
            .into_iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(" or ");
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = options.iter().map(Value::to_string).collect();
        return format!("one of {}", names.join(", "));
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => "a string".into(),
        Some("boolean") => "true or false".into(),
        Some("integer") | Some("number") => {
            let noun = if s["type"] == "integer" {
                "an integer"
            } else {
                "a number"
            };
            // The bounds of the Rust type (i32::MIN, u32::MAX) go without saying.
            let unsaid = |v: &&Value| {
                let n = v.as_i64().unwrap_or(0);
                n == i64::from(i32::MIN) || n == i64::from(i32::MAX) || n == i64::from(u32::MAX)
            };
            let lo = s.get("minimum").filter(|v| !unsaid(v));
            let hi = s.get("maximum").filter(|v| !unsaid(v));
            match (lo, hi) {
                (Some(lo), Some(hi)) => format!("{noun} from {lo} to {hi}"),
                (Some(lo), None) => format!("{noun} >= {lo}"),
                (None, Some(hi)) => format!("{noun} <= {hi}"),
                (None, None) => noun.into(),
            }
        }
        Some("array") => match s.get("items").map(resolve) {
            Some(items) if items.get("enum").is_some() => {
                format!("a list of values, each {}", describe(items))
            }
            Some(items) => match items.get("type").and_then(Value::as_str) {
                Some("string") => "a list of strings".into(),
                Some("object") => "a list of objects".into(),
                _ => "a list".into(),
            },
            None => "a list".into(),
        },
        Some("object") => {
            let keys = object_keys(s);
            if keys.is_empty() {
                "an object".into()
            } else {
                format!("an object with keys {}", quote_list(&keys))
            }
        }
        _ => "a value".into(),
    }
}

/// A found value, for messages: containers by kind, strings quoted (and shortened) as [`shown_string`] shows them,
/// so never a secret.
fn found(pointer: &str, v: &Value) -> String {
    match v {
        Value::String(_) => shown_string(pointer, v)
            .unwrap_or_else(|| "a string (not shown: it may be a secret)".into()),
        Value::Number(_) | Value::Bool(_) | Value::Null => v.to_string(),
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A string value quoted for a problem at `pointer`, at most 60 characters, each URL in it by its scheme and host
/// only ([`crate::stdx::redact_argv`]); `None` for what may be a secret: any value of a key named for one (`passphrase`,
/// `secret_access_key`, ...: a passphrase typed where `true` belongs) and anything holding a secret key
/// (`AGE-SECRET-KEY-1...`, `PRIVATE KEY`), which is never quoted. Not a string: `None`.
fn shown_string(pointer: &str, v: &Value) -> Option<String> {
    let Value::String(s) = v else { return None };
    let key = pointer
        .rsplit('/')
        .find(|segment| segment.parse::<usize>().is_err())
        .map(unescape_pointer)
        .unwrap_or_default();
    if key == "passphrase" || secret_key_hint(&key).is_some() || crate::stdx::holds_secret_key(s) {
        return None;
    }
    let words: Vec<String> = s.split(' ').map(str::to_string).collect();
    let shown = crate::stdx::redact_argv(&words).join(" ");
    let shown = if shown.chars().count() > 60 {
        format!("{}...", shown.chars().take(57).collect::<String>())
    } else {
        shown
    };
    Some(Value::String(shown).to_string())
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_sentence(text: &str) -> &str {
    let text = text.lines().next().unwrap_or(text);
    match text.find(". ") {
        Some(i) => &text[..=i],
        None => text,
    }
}

/// Keys other backup tools' configs use for what dbackup names otherwise (rclone's and restic's `type`).
const SYNONYMS: &[(&str, &str)] = &[("type", "kind")];

/// The allowed word closest to `word`, when it is close enough to be a likely typo, or the key other tools name
/// that way ([`SYNONYMS`]), or the one allowed key that has `word` as a whole `_`-separated part (`root` for
/// `backup_root`).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    let lower = word.to_lowercase();
    if let Some(&c) = SYNONYMS
        .iter()
        .filter(|(w, _)| *w == lower)
        .find_map(|(_, k)| candidates.iter().find(|c| *c == k))
    {
        return Some(c);
    }
    let close = candidates
        .iter()
        .copied()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c);
    if close.is_some() || lower.len() < 3 {
        return close;
    }
    let mut parts = candidates
        .iter()
        .filter(|c| c.to_lowercase().split('_').any(|part| part == lower));
    match (parts.next(), parts.next()) {
        (Some(&c), None) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match parse(Path::new("c.json"), text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// A key holding ESC (found by `proptests::tools::config_files_never_panic`): the error shows it escaped, in the
    /// pointer and in the message, so the file cannot clear the terminal. Before, both were raw.
    #[test]
    fn an_unknown_key_with_control_characters_is_shown_escaped() {
        let text = "{ \"backup_sets\": [ { \"name\": \"a\", \"sources\": [\"/x\"] } ],\n  \"schedule\": { \"\\u001b[2Jforged\": 1 } }";
        let err = parse(Path::new("c.json"), text).unwrap_err().to_string();
        assert!(!err.contains('\x1b'), "{err:?}");
        assert!(
            err.contains("/schedule/\\x1b[2Jforged: unknown key \"\\x1b[2Jforged\""),
            "{err}"
        );
    }

    #[test]
    fn secret_looking_keys_get_the_hint() {
        for key in [
            "secret_access_key",
            "aws_secret_access_key",
            "access_key_id",
            "application_key",
            "password",
            "session_token",
        ] {
            assert!(secret_key_hint(key).is_some(), "{key}");
        }
        for key in [
            "credentials_file",
            "bucket",
            "endpoint",
            "path",
            "bucket_id",
        ] {
            assert!(secret_key_hint(key).is_none(), "{key}");
        }
    }

    #[test]
    fn line_index_counts_characters() {
        let idx = LineIndex::new("ab\n\"é\": 1\n");
        assert_eq!(idx.location(0), Location { line: 1, column: 1 });
        assert_eq!(idx.location(3), Location { line: 2, column: 1 });
        assert_eq!(
            idx.location(7),
            Location { line: 2, column: 4 },
            "é is one column"
        );
        assert_eq!(idx.location(11), Location { line: 3, column: 1 });
    }

    #[test]
    fn comments_are_allowed_and_positions_kept() {
        let text = "// top\n{\n  /* sets */ \"backup_sets\": [ { \"name\": \"a\", \"sources\": [\"/x\"] } ] // end\n}\n";
        let (config, positions) = parse(Path::new("c.json"), text).unwrap();
        assert_eq!(config.backup_sets[0].name, "a");
        assert_eq!(
            positions.key("/backup_sets"),
            Some(Location {
                line: 3,
                column: 14
            })
        );
        assert_eq!(
            positions.value("/backup_sets/0/sources/0"),
            Some(Location {
                line: 3,
                column: 58
            })
        );
        assert_eq!(
            positions.value("/backup_sets/0/nothing/here"),
            Some(Location {
                line: 3,
                column: 31
            })
        );
    }

    #[test]
    fn strict_json_otherwise() {
        for (text, needle) in [
            ("{\"backup_sets\": [],}", "trailing comma"),
            ("{'backup_sets': []}", "single-quoted"),
            ("{backup_sets: []}", "double quotes"),
            ("{\"backup_sets\": [] \"x\": 1}", "comma"),
            ("{\"backup_sets\": [", "unterminated"),
            ("", "no JSON value"),
            ("// only a comment\n", "no JSON value"),
            ("{} {}", "after the end"),
        ] {
            match parse(Path::new("c.json"), text) {
                Err(ConfigError::Syntax { message, .. }) => {
                    assert!(message.contains(needle), "{text:?}: {message}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let p = problems(
            r#"{
  "bakup_root": "/b",
  "backup_sets": [ { "name": "a b", "sources": "/x", "metod": "rsync" } ],
  "schedule": { "incremental": "dayly" },
  "retention": { "local": 0, "external": "5" }
}"#,
        );
        let got: Vec<(String, usize, usize, String)> = p
            .iter()
            .map(|p| {
                let l = p.location.unwrap();
                (p.pointer.clone(), l.line, l.column, p.message.clone())
            })
            .collect();
        let want = [
            (
                "/bakup_root",
                2,
                3,
                "unknown key \"bakup_root\"; did you mean \"backup_root\"?",
            ),
            ("/backup_sets/0/name", 3, 30, "\"a b\" is not a safe name"),
            (
                "/backup_sets/0/sources",
                3,
                48,
                "expected a list of strings, found \"/x\"; for one item write [\"/x\"]",
            ),
            (
                "/backup_sets/0/metod",
                3,
                54,
                "unknown key \"metod\"; did you mean \"method\"?",
            ),
            (
                "/schedule/incremental",
                4,
                32,
                "\"dayly\" is not allowed; did you mean \"daily\"?",
            ),
            (
                "/retention/local",
                5,
                27,
                "0 is too small; the minimum is 1",
            ),
            (
                "/retention/external",
                5,
                42,
                "expected an integer >= 1 or an object with keys \"daily\", \"hourly\", \"last\", \"monthly\", \
                 \"weekly\", \"yearly\", found \"5\"",
            ),
        ];
        let want: Vec<(String, usize, usize, String)> = want
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), *b, *c, d.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn duplicate_keys_are_problems() {
        let p = problems(
            r#"{ "backup_sets": [], "backup_sets": [ { "name": "a", "sources": ["/x"] } ] }"#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message
                .starts_with("duplicate key \"backup_sets\" (also at line 1:3)"),
            "{p:?}"
        );
    }

    #[test]
    fn retention_policy_errors_come_from_the_object_branch() {
        let p = problems(
            r#"{ "backup_sets": [ { "name": "a", "sources": ["/x"] } ], "retention": { "local": { "dialy": 3 } } }"#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/retention/local/dialy");
        assert!(p[0].message.contains("did you mean \"daily\""), "{p:?}");
        let p = problems(
            r#"{ "backup_sets": [ { "name": "a", "sources": ["/x"] } ], "retention": { "local": "seven" } }"#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message
                .starts_with("expected an integer >= 1 or an object with keys \"daily\""),
            "{p:?}"
        );
        assert!(p[0].message.ends_with("found \"seven\""), "{p:?}");
    }

    #[test]
    fn missing_keys_name_what_they_hold() {
        let p = problems(r#"{ "backup_sets": [ { "name": "a" } ] }"#);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/backup_sets/0/sources");
        assert_eq!(p[0].message, "missing required key \"sources\"");
        assert_eq!(
            p[0].location,
            Some(Location {
                line: 1,
                column: 20
            })
        );
        assert!(
            p[0].allowed
                .as_deref()
                .unwrap()
                .starts_with("\"sources\": Files or directories"),
            "{p:?}"
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let keys = ["backup_root", "backup_sets", "schedule", "retention"];
        assert_eq!(suggest("bakup_root", keys), Some("backup_root"));
        assert_eq!(suggest("Schedule", keys), Some("schedule"));
        assert_eq!(suggest("zzz", keys), None);
        // What other tools call it, and a whole part of a key.
        assert_eq!(suggest("sets", keys), Some("backup_sets"));
        assert_eq!(suggest("type", ["kind", "name", "path"]), Some("kind"));
        assert_eq!(suggest("type", ["name", "path"]), None);
        assert_eq!(suggest("root", keys), Some("backup_root"));
    }
}
