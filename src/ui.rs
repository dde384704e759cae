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

/// An error chain as one line per cause: `collect data: rsync failed: ...`.
pub fn format_error(err: &anyhow::Error) -> String {
    format!("{err:#}")
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
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos:>3}% {msg} ({elapsed})")
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

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration for people: `0.4s`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s as u64) % 60)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, (s as u64 / 60) % 60)
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 entry`, `2 entries`, `1,234 files`: a count and a noun, singular or plural.
pub fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", count(n), if n == 1 { singular } else { plural })
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
    fn sizes_and_times_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 + 1), "3.0 GiB");
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(100), "100");
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        assert_eq!(
            shell_words(&["rsync", "--exclude=*.log", "/a b", "it's", "--link-dest=/x"]),
            r"rsync '--exclude=*.log' '/a b' 'it'\''s' --link-dest=/x"
        );
    }
}
