//! The `--json` contract: every result printed with `--json` is one object whose first member is `"format": 1`
//! ([`FORMAT`]), its timestamps RFC 3339 with an offset, described by a JSON Schema under `docs/json/`; a run that
//! fails prints `{ "format": 1, "error": "...", "exit": N }` on stdout instead (the error also goes to stderr).

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

/// The version of the JSON outputs. It changes only when a member is removed or changes meaning; new members may
/// appear in any format.
pub const FORMAT: u32 = 1;

/// Whether this run prints JSON (`--json`), so that a failure is printed as an error object too.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Says that this run prints JSON (`--json`, or `systemd render --format json`): its failure gets an error object.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether [`enable`] was called with `true`.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a result was printed: a run that fails after printing its result prints no error object (stdout holds
/// one JSON document, never two); its exit code and stderr say it failed.
static PRINTED: AtomicBool = AtomicBool::new(false);

/// Whether [`print`] printed a result.
pub fn printed() -> bool {
    PRINTED.load(Ordering::Relaxed)
}

/// Prints one result on stdout as [`to_text`] makes it, and remembers that it did (see [`printed`]).
pub fn print<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<()> {
    let text = to_text(value)?;
    PRINTED.store(true, Ordering::Relaxed);
    crate::outln!("{text}");
    Ok(())
}

/// Whether an argument list asks for JSON: a `--json` before any `--`. For a command line clap refused, whose
/// flags were never parsed.
pub fn asked(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A local wall-clock time (a snapshot's or backup's stamp) with the offset the local time zone had then, as every
/// timestamp of the JSON outputs is written: RFC 3339 with an offset. A time that did not exist locally (skipped by
/// a DST change) is taken as UTC.
pub fn localize(time: NaiveDateTime) -> DateTime<FixedOffset> {
    match Local.from_local_datetime(&time).earliest() {
        Some(t) => t.fixed_offset(),
        None => Utc.from_utc_datetime(&time).fixed_offset(),
    }
}

/// `#[serde(with = "crate::json::local_time")]` on a `NaiveDateTime` of local time: written as RFC 3339 with the
/// local offset ([`localize`]), read back from RFC 3339 as the local wall-clock time it names.
pub mod local_time {
    use chrono::{DateTime, NaiveDateTime};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(time: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        super::localize(*time).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.naive_local())
            .map_err(serde::de::Error::custom)
    }
}

/// A result with the contract's `format` member first, the result's own members after it.
#[derive(Serialize)]
struct Versioned<'a, T: ?Sized> {
    format: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// The error object a failed `--json` run prints on stdout.
#[derive(Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[schemars(title = "dbackup error (--json)")]
pub struct ErrorObject {
    /// Always 1 (see the README's "JSON output").
    #[schemars(extend("const" = 1))]
    pub format: u32,
    /// What went wrong: the text stderr gets after `dbackup: error:` (a config error spans several lines).
    pub error: String,
    /// The process's exit code (see `dbackup --help`: 1 failed, 2 usage or config, 4 locked, 5 no destination,
    /// 130/143 interrupted).
    pub exit: u8,
}

/// The pretty-printed JSON of one result: `value`'s members after `"format": 1`. `value` must serialise as an
/// object (a struct or a map); a list is an error, so wrap it in a struct that names it.
pub fn to_text<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&Versioned {
        format: FORMAT,
        body: value,
    })
}

/// Prints the error object of a failed run on stdout (the caller checks [`enabled`] and [`printed`]).
pub fn print_error(error: &str, exit: u8) {
    crate::outln!("{}", error_text(error, exit));
}

/// A usage error's message for the error object: clap's first paragraph, without its `error: `, on one line (the
/// usage and the hint to try `--help` that follow are for people). A paragraph goes on when clap lists what it
/// means: "the following required arguments were not provided: <NAME>".
pub fn usage_line(clap_message: &str) -> String {
    let first: Vec<&str> = clap_message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = first.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// The pretty-printed error object of a failed run.
pub fn error_text(error: &str, exit: u8) -> String {
    serde_json::to_string_pretty(&ErrorObject {
        format: FORMAT,
        error: error.to_string(),
        exit,
    })
    .unwrap_or_default()
}

/// The text of `docs/json/error.json`: the error object's schema, generated from [`ErrorObject`].
#[cfg(test)]
pub fn error_schema_text() -> String {
    let schema = schemars::schema_for!(ErrorObject);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/json/error.json` is generated from `ErrorObject` (the other files of `docs/json/` are written by hand
    /// and checked against real outputs by `tests/integration/json.rs`).
    #[test]
    fn committed_error_schema_is_current() {
        crate::config::schema::check_committed(
            "docs/json/error.json",
            &error_schema_text(),
            "the schema of json::ErrorObject",
            "committed_error_schema_is_current",
        );
    }

    #[test]
    fn format_comes_first_and_members_keep_their_order() {
        #[derive(Serialize)]
        struct R {
            zeta: u8,
            alpha: &'static str,
        }
        let text = to_text(&R {
            zeta: 1,
            alpha: "a",
        })
        .unwrap();
        assert_eq!(
            text,
            "{\n  \"format\": 1,\n  \"zeta\": 1,\n  \"alpha\": \"a\"\n}"
        );
        let map = serde_json::json!({ "written": "/x" });
        let v: serde_json::Value = serde_json::from_str(&to_text(&map).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({ "format": 1, "written": "/x" }));
    }

    #[test]
    fn a_list_is_refused() {
        assert!(to_text(&vec![1, 2]).is_err());
    }

    #[test]
    fn error_object() {
        let v: ErrorObject = serde_json::from_str(&error_text("no \"config\"", 2)).unwrap();
        assert_eq!(
            (v.format, v.error.as_str(), v.exit),
            (1, "no \"config\"", 2)
        );
    }

    #[test]
    fn asked_stops_at_double_dash() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(asked(args(&["dbackup", "status", "--json"])));
        assert!(!asked(args(&["dbackup", "restore", "--", "--json"])));
        assert!(!asked(args(&["--json"])));
    }
}
