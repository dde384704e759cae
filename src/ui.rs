//! How results reach people: error formatting, verbosity-aware messages on stderr, progress bars on a terminal.
//!
//! stdout carries results (or `--json`); everything else here goes to stderr. Verbosity: -2 (`-qq`: nothing but the
//! result), -1 (`-q`: errors only), 0 (default: warnings and summaries), 1 (`-v`: each step), 2 (`-vv`: commands
//! and their output).

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::settings::Output;

/// An error chain as one line: `collect data: rsync failed: ...`. A cause whose text its parent's message already
/// ends with is not repeated (building blocks put their `source` in their own message: `cannot open X: Permission
/// denied (os error 13)`, whose source is that same `Permission denied (os error 13)`).
pub fn format_error(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut parent = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parent.is_empty() && (text.is_empty() || parent.ends_with(&text)) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        parent = text;
    }
    out
}

/// Where messages go and how many of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ui {
    pub verbosity: i8,
    pub json: bool,
    /// Draw progress bars (stderr is a terminal and not quiet).
    pub progress: bool,
}

impl Ui {
    pub fn new(output: &Output) -> Ui {
        Ui {
            verbosity: output.verbosity,
            json: output.json,
            progress: output.verbosity >= 0 && std::io::stderr().is_terminal(),
        }
    }

    /// Something the user should look at; shown unless `-q`.
    pub fn warn(&self, msg: impl Display) {
        if self.verbosity >= 0 {
            crate::errln!("dbackup: warning: {msg}");
        }
    }

    /// An error that does not end the run (a set failed); shown unless `-qq`.
    pub fn error(&self, msg: impl Display) {
        if self.verbosity >= -1 {
            crate::errln!("{msg}");
        }
    }

    /// A summary line; shown unless `-q`.
    pub fn info(&self, msg: impl Display) {
        if self.verbosity >= 0 {
            crate::errln!("{msg}");
        }
    }

    /// Each step (`-v`).
    pub fn step(&self, msg: impl Display) {
        if self.verbosity >= 1 {
            crate::errln!("{msg}");
        }
    }

    /// Commands and their output (`-vv`).
    pub fn detail(&self, msg: impl Display) {
        if self.verbosity >= 2 {
            crate::errln!("{msg}");
        }
    }

    /// A progress bar in percent on stderr, or `None` when stderr is not a terminal (or `-q`).
    pub fn percent_bar(&self, prefix: &str) -> Option<ProgressBar> {
        if !self.progress {
            return None;
        }
        let bar = ProgressBar::new(100);
        bar.set_style(
            // The message last and truncated to what is left of the terminal's width: the line never wraps.
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:20}] {pos:>3}% ({elapsed}) {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// True when running under systemd (`JOURNAL_STREAM` or `INVOCATION_ID` set): stderr goes to the journal, so
/// summaries are plain lines with a syslog priority prefix, and there are no progress bars.
pub fn journal() -> bool {
    ["JOURNAL_STREAM", "INVOCATION_ID"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// A progress bar's style whose byte figures follow [`crate::stdx::bytes`] (`1.0 GiB`, not indicatif's `1.00 GiB`):
/// `{bytes}`, `{total_bytes}` and `{bytes_per_sec}` in `template`.
pub fn bytes_style(template: &str) -> ProgressStyle {
    use indicatif::ProgressState;
    ProgressStyle::with_template(template)
        .expect("valid template")
        .with_key("bytes", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&crate::stdx::bytes(s.pos()));
        })
        .with_key(
            "total_bytes",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&crate::stdx::bytes(s.len().unwrap_or(0)));
            },
        )
        .with_key(
            "bytes_per_sec",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", crate::stdx::bytes(s.per_sec() as u64));
            },
        )
        .progress_chars("=> ")
}

/// A command line as a shell would need it typed: words with special characters in single quotes.
pub fn shell_words<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_the_shell() {
        assert_eq!(
            shell_words(&["rsync", "--exclude=*.log", "/a b", "it's", "--link-dest=/x"]),
            r"rsync '--exclude=*.log' '/a b' 'it'\''s' --link-dest=/x"
        );
    }
}
