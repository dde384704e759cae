//! The page's frame and building blocks: escaping, the inline style and script (allowed by their hashes in a strict
//! Content-Security-Policy), times and ages, shell quoting for the restore commands.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use sha2::{Digest as _, Sha256};

use crate::stdx;

/// Text for the page: made visible by [`crate::stdx::show_str`] (control characters, invalid bytes), then
/// HTML-escaped. Every string that reaches the page goes through this or [`attr`].
pub fn esc(s: &str) -> String {
    code(&crate::stdx::show_str(s))
}

/// Text that is already visible ([`shell_word`]s, names through [`crate::stdx::show_str`]), HTML-escaped only: a
/// second pass through the escaper would double the backslashes a shell word needs.
pub fn code(shown: &str) -> String {
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An attribute value (always written between double quotes): the same as [`esc`].
pub fn attr(s: &str) -> String {
    esc(s)
}

pub use crate::stdx::shell_word;

/// `2025-04-10 09:00` in the time's own offset.
pub fn when(t: DateTime<FixedOffset>) -> String {
    t.format(crate::stdx::MINUTE).to_string()
}

/// `5 hours ago` at `now`; the script recomputes it when the page is opened later (`data-since`).
pub fn ago(t: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let age = now.signed_duration_since(t);
    let words = stdx::age_words(age);
    let text = if age.num_seconds() < 0 {
        words
    } else {
        format!("{words} ago")
    };
    format!(
        "<span class=\"age\" data-since=\"{}\">{}</span>",
        attr(&t.to_rfc3339()),
        esc(&text)
    )
}

/// A `<time>` with the date as people read it.
pub fn time(t: DateTime<FixedOffset>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        attr(&t.to_rfc3339()),
        esc(&when(t))
    )
}

/// The page's style: plain, dark by `prefers-color-scheme`, printable. No web fonts, no images.
pub const STYLE: &str = r#"
:root { --bg: #fdfdfc; --fg: #1d1d1f; --muted: #5f6368; --line: #d9d9de; --card: #ffffff;
  --ok: #1e7d32; --warn: #a15c00; --bad: #b3261e; --drive: #3f51b5; --idle: #8a8a8e; --bar: #e9e9ee; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #141416; --fg: #e8e8ea; --muted: #a0a0a8; --line: #34343a; --card: #1c1c20;
    --ok: #5cc26a; --warn: #f0a53a; --bad: #ff6b60; --drive: #8c9eff; --idle: #77777d; --bar: #2c2c32; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem 1.25rem 3rem; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
p { margin: .3rem 0; }
.muted, .meta { color: var(--muted); }
.verdict { border-left: .5rem solid var(--ok); background: var(--card); padding: .8rem 1rem; border-radius: .4rem;
  box-shadow: 0 0 0 1px var(--line); }
.verdict.attention { border-left-color: var(--bad); }
.verdict ul { margin: .4rem 0 0; padding-left: 1.2rem; }
.banner { padding: .6rem 1rem; border-radius: .4rem; margin-bottom: .8rem; font-weight: 600;
  background: var(--bad); color: #fff; }
table { border-collapse: collapse; width: 100%; background: var(--card); box-shadow: 0 0 0 1px var(--line);
  border-radius: .4rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); font-weight: 600; }
tr:last-child td { border-bottom: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); } .idle { color: var(--idle); }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: .6rem; border: 1px solid currentColor; }
code, pre { font: .85rem/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { background: var(--card); box-shadow: 0 0 0 1px var(--line); border-radius: .4rem; padding: .5rem .7rem;
  overflow-x: auto; margin: .3rem 0; white-space: pre-wrap; word-break: break-all; }
svg { vertical-align: middle; }
svg .ok { fill: var(--ok); } svg .warning { fill: var(--warn); } svg .failed { fill: var(--bad); }
svg .missing_drive { fill: var(--drive); } svg .locked, svg .interrupted { fill: var(--idle); } svg .track { fill: var(--bar); }
svg .bar { fill: var(--ok); } svg .bar.first { fill: var(--idle); } svg .bar.incomplete { fill: var(--warn); }
svg .bar.outlier { fill: var(--bad); } svg .mark { stroke: var(--fg); stroke-width: 2; }
svg .due { fill: var(--warn); } svg .over { fill: var(--bad); }
.legend span { margin-right: 1rem; white-space: nowrap; }
.legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: .15rem; margin-right: .3rem;
  vertical-align: -.1rem; }
.legend .ok { background: var(--ok); } .legend .warning { background: var(--warn); }
.legend .failed { background: var(--bad); } .legend .missing_drive { background: var(--drive); }
.legend .locked, .legend .interrupted { background: var(--idle); }
footer { margin-top: 2.5rem; font-size: .8rem; color: var(--muted); }
@media print {
  body { max-width: none; font-size: 11pt; background: #fff; color: #000; }
  .banner { border: 2px solid #000; background: #fff; color: #000; }
  pre, table, .verdict { box-shadow: none; border: 1px solid #999; }
  section { break-inside: avoid-page; }
}
"#;

/// The page's only script: recomputes the ages from the embedded times, and shows the STALE banner when the page is
/// older than `data-stale-after` seconds. Without it the page reads the same, as of its generation.
pub const SCRIPT: &str = r#"
(function () {
  "use strict";
  var now = Date.now();
  function words(ms) {
    var s = Math.floor(ms / 1000);
    function n(v, u) { return v + " " + u + (v === 1 ? "" : "s"); }
    if (s < 0) return "in the future";
    if (s < 60) return "less than a minute";
    if (s < 3600) return n(Math.floor(s / 60), "minute");
    if (s < 172800) return n(Math.floor(s / 3600), "hour");
    return n(Math.floor(s / 86400), "day");
  }
  var ages = document.querySelectorAll("[data-since]");
  for (var i = 0; i < ages.length; i++) {
    var t = Date.parse(ages[i].getAttribute("data-since"));
    if (!isNaN(t)) ages[i].textContent = now < t ? words(now - t) : words(now - t) + " ago";
  }
  var body = document.body;
  var made = Date.parse(body.getAttribute("data-generated"));
  var limit = Number(body.getAttribute("data-stale-after")) * 1000;
  var banner = document.getElementById("stale");
  if (banner && !isNaN(made) && limit > 0 && now - made > limit) {
    banner.textContent = "STALE: this page was made " + words(now - made) + " ago. dbackup regenerates it after " +
      "every run, so no run has finished since: check that its timer runs (systemctl --user list-timers dbackup*).";
    banner.hidden = false;
    body.classList.add("stale");
  }
})();
"#;

/// `'sha256-<base64>'` of an inline block, as a Content-Security-Policy source.
pub fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", data_encoding::BASE64.encode(&digest))
}

/// The Content-Security-Policy of every page: nothing may load, only this style and this script run.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src {}; script-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(STYLE),
        csp_hash(SCRIPT)
    )
}

/// The name of the `<meta>` in a status page's head that records the backup root it was drawn for (as
/// [`crate::runlog::root_name`] writes it, HTML-escaped): whose page it is ([`drawn_for`]).
const ROOT_META: &str = "<meta name=\"dbackup-backup-root\" content=\"";

/// The backup root `head` (the start of a status page) records it was drawn for, unescaped; `None` when it records
/// none (a page of an older version, a drive's page) or the record is cut.
pub fn drawn_for(head: &str) -> Option<String> {
    let (_, rest) = head.split_once(ROOT_META)?;
    let (value, _) = rest.split_once('"')?;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let (c, len) = [
            ('&', "&amp;"),
            ('<', "&lt;"),
            ('>', "&gt;"),
            ('"', "&quot;"),
            ('\'', "&#39;"),
        ]
        .into_iter()
        .find(|(_, e)| rest[at..].starts_with(e))
        .map_or(('&', 1), |(c, e)| (c, e.len()));
        out.push(c);
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    Some(out)
}

/// The whole document around `body`: `generated` and `stale_after_seconds` (0: never stale) feed the script;
/// `drawn_for`, the backup root of the config a status page is of (none for a drive's page), is recorded in its head.
pub fn document(
    title: &str,
    generated: DateTime<FixedOffset>,
    stale_after_seconds: i64,
    drawn_for: Option<&str>,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + SCRIPT.len() + 1024);
    let root = drawn_for.map_or(String::new(), |r| format!("{ROOT_META}{}\">\n", code(r)));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{root}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"dbackup {}\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body data-generated=\"{}\" data-stale-after=\"{stale_after_seconds}\">\n\
         <div id=\"stale\" class=\"banner\" role=\"alert\" hidden></div>\n{body}\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        attr(&content_security_policy()),
        env!("CARGO_PKG_VERSION"),
        esc(title),
        attr(&generated.to_rfc3339()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_shows_and_neutralises() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\nb\u{1b}[2J"), "a\\nb\\x1b[2J");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/data/x-1"), "/data/x-1");
        assert_eq!(shell_word("~/restored"), "~/restored");
        assert_eq!(shell_word("/my files/it's"), r"'/my files/it'\''s'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a\\b it's\n"), r"$'a\\b it\'s\n'");
    }

    #[test]
    fn a_page_reads_back_the_root_it_was_drawn_for() {
        let now = DateTime::parse_from_rfc3339("2025-04-10T09:00:00+00:00").unwrap();
        for root in [
            "/b",
            "/home/me/my \"backups\" & <co>'s &amp;",
            "/x\n\u{1b}[2J",
        ] {
            let page = document("t", now, 0, Some(root), "<p>body</p>");
            assert_eq!(drawn_for(&page).as_deref(), Some(root), "{page}");
        }
        assert_eq!(drawn_for(&document("t", now, 0, None, "")), None);
        assert_eq!(
            drawn_for("<meta name=\"dbackup-backup-root\" content=\"/cut"),
            None
        );
        assert_eq!(drawn_for("<html>an older page</html>"), None);
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let csp = content_security_policy();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains(&csp_hash(SCRIPT)));
        assert!(!csp.contains("unsafe"));
    }
}
