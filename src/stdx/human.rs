//! Numbers for people, one rule each: byte sizes, durations, ages, times to the minute, counts and counted nouns.
//!
//! Sizes use binary units with one decimal from KiB up (`512 B`, `1.5 KiB`, `1.0 GiB`, `932.5 GiB`): the summaries,
//! the status table, the page and the progress bars ([`crate::ui`]) all print sizes through [`bytes`].

use std::fmt::Write as _;
use std::time::Duration;

use chrono::TimeDelta;

/// A time to the minute for people (`2025-04-10 03:19`): status, the page, plans and retention reasons alike. Pass
/// it to chrono's `format` (a `DateTime` in its own offset, or a `NaiveDateTime`).
pub const MINUTE: &str = "%Y-%m-%d %H:%M";

/// Bytes for people: `512 B`, `1.5 KiB`, `3.0 GiB` (binary units, one decimal from KiB up). Hand-written rather
/// than indicatif's `HumanBytes`, which always prints two decimals (`1.50 KiB`, `932.51 GiB`): one decimal is what
/// every summary, table, page and progress line here reads, and a second adds width, not information.
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

/// A time left for people, in whole seconds rounded up: `12s`, `4m 05s`, `2h 03m` (a progress line's ETA).
pub fn eta(d: Duration) -> String {
    let s = d.as_secs_f64().ceil();
    if s < 60.0 {
        format!("{s:.0}s")
    } else {
        duration(Duration::from_secs_f64(s))
    }
}

/// An age for people, rounded down: `less than a minute`, `1 minute`, `50 minutes`, `23 hours`, `12 days`. Hours up
/// to 48, then days. A negative age (dated in the future) reads `in the future`.
pub fn age_words(age: TimeDelta) -> String {
    let s = age.num_seconds();
    if s < 0 {
        return "in the future".to_string();
    }
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match s {
        0..60 => "less than a minute".to_string(),
        60..3600 => plural(s / 60, "minute"),
        3600..172_800 => plural(s / 3600, "hour"),
        _ => plural(s / 86_400, "day"),
    }
}

/// A short age for tables: `<1m`, `50m`, `23h`, `12d`; `future` when negative.
pub fn age_short(age: TimeDelta) -> String {
    let s = age.num_seconds();
    match s {
        ..0 => "future".to_string(),
        0..60 => "<1m".to_string(),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How many of a run of like things (a drive's or the backup root's directories without metadata, entries not made by
/// dbackup) a message names one by one before it counts the rest: a messy or hostile place may hold any number.
pub const NAMED: usize = 10;

/// A count with thousands separators: `1,234,567` (indicatif's `HumanCount`, the progress bars' own).
pub fn count(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// `1 entry`, `2 entries`, `1,234 files`: a count and a noun, singular or plural.
pub fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", count(n), if n == 1 { singular } else { plural })
}

/// Pads each column to its widest cell (the last column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(120 << 20), "120.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 + 1), "3.0 GiB");
        assert_eq!(bytes(1_000_204_886_016), "931.5 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h 03m");
    }

    #[test]
    fn ages_read_well() {
        let cases = [
            (-5, "in the future", "future"),
            (0, "less than a minute", "<1m"),
            (59, "less than a minute", "<1m"),
            (60, "1 minute", "1m"),
            (3599, "59 minutes", "59m"),
            (3600, "1 hour", "1h"),
            (47 * 3600 + 3599, "47 hours", "47h"),
            (48 * 3600, "2 days", "2d"),
            (12 * 86400 + 100, "12 days", "12d"),
        ];
        for (s, words, short) in cases {
            assert_eq!(age_words(TimeDelta::seconds(s)), words, "{s}");
            assert_eq!(age_short(TimeDelta::seconds(s)), short, "{s}");
        }
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(100), "100");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(counted(1, "file", "files"), "1 file");
        assert_eq!(counted(2, "entry", "entries"), "2 entries");
        assert_eq!(counted(1234, "file", "files"), "1,234 files");
    }
}
