//! A cloud destination's bandwidth limit, validated from the config's `bwlimit`: a rate, and the daily window of
//! local time it applies in (the cloud store applies it). Pure: parsing, and the rate in force at a time of day.

use chrono::{NaiveTime, Timelike};
use serde::Serialize;

/// A validated `bwlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bwlimit {
    /// Bytes per second.
    pub bytes_per_second: u64,
    /// When the limit applies (`None`: always).
    #[serde(serialize_with = "window_text")]
    pub window: Option<Window>,
}

/// A daily window of local time, `[start, end)` in minutes after midnight; it passes midnight when `end < start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

fn window_text<S: serde::Serializer>(w: &Option<Window>, s: S) -> Result<S::Ok, S::Error> {
    match w {
        Some(w) => s.serialize_str(&w.to_string()),
        None => s.serialize_none(),
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl Window {
    /// Whether `t` (local time) is inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        let m = t.hour() * 60 + t.minute();
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl Bwlimit {
    /// From the config's `bwlimit` (a rate, or a rate and a window).
    pub fn from_config(b: &crate::config::Bwlimit) -> Result<Bwlimit, String> {
        let (rate, window) = match b {
            crate::config::Bwlimit::Always(rate) => (rate, None),
            crate::config::Bwlimit::Window(w) => (&w.rate, w.window.as_deref()),
        };
        Ok(Bwlimit {
            bytes_per_second: parse_rate(rate)?,
            window: window.map(parse_window).transpose()?,
        })
    }

    /// The limit in force at local time `t`: `Some(bytes per second)`, or `None` for full speed.
    pub fn rate_at(&self, t: NaiveTime) -> Option<u64> {
        match self.window {
            Some(w) if !w.contains(t) => None,
            _ => Some(self.bytes_per_second),
        }
    }
}

/// `"512K"`, `"2M"`, `"1G"`, `"65536"`: bytes per second, suffixes 1024-based (case ignored, a trailing `B`,
/// `iB` or `/s` allowed). At least 1 KiB/s, at most 4 GiB/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{:?} is not a rate; write bytes per second with a K, M or G suffix (1024-based), like \"512K\" or \"2M\"",
            crate::stdx::show_str(s)
        )
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let unit: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let rate = n.checked_mul(unit).ok_or_else(bad)?;
    if rate < 1024 {
        return Err(format!(
            "{:?} is below 1 KiB per second: uploads would never finish; remove `bwlimit` or raise it",
            crate::stdx::show_str(s)
        ));
    }
    if rate > u64::from(u32::MAX) {
        return Err(format!(
            "{:?} is above 4 GiB per second; remove `bwlimit` for no limit",
            crate::stdx::show_str(s)
        ));
    }
    Ok(rate)
}

/// `"08:00-23:00"` (local time; `"22:00-06:00"` passes midnight).
pub fn parse_window(s: &str) -> Result<Window, String> {
    let bad = || {
        format!(
            "{:?} is not a window; write it as HH:MM-HH:MM in local time, like \"08:00-23:00\"",
            crate::stdx::show_str(s)
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && (1..=2).contains(&t.trim().split(':').next()?.len()))
            .then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if start == end {
        return Err(format!(
            "{:?} is an empty window; remove `window` to limit at all times",
            crate::stdx::show_str(s)
        ));
    }
    Ok(Window { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_1024_based_suffixes() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("512K", Ok(512 << 10)),
            ("2M", Ok(2 << 20)),
            ("2m", Ok(2 << 20)),
            ("2MiB", Ok(2 << 20)),
            ("2MB/s", Ok(2 << 20)),
            ("1G", Ok(1 << 30)),
            ("65536", Ok(65536)),
            ("4G", Err("above 4 GiB")),
            ("100", Err("below 1 KiB")),
            ("0", Err("below 1 KiB")),
            ("2T", Err("not a rate")),
            ("1.5M", Err("not a rate")),
            ("M", Err("not a rate")),
            ("", Err("not a rate")),
            ("99999999999999999999K", Err("not a rate")),
        ];
        for (text, want) in cases {
            match (parse_rate(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn windows_parse_and_may_pass_midnight() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let day = parse_window("08:00-23:00").unwrap();
        assert_eq!(day.to_string(), "08:00-23:00");
        assert!(day.contains(t(8, 0)) && day.contains(t(22, 59)));
        assert!(!day.contains(t(23, 0)) && !day.contains(t(7, 59)));
        let night = parse_window("22:30-6:00").unwrap();
        assert!(night.contains(t(23, 0)) && night.contains(t(0, 0)) && night.contains(t(5, 59)));
        assert!(!night.contains(t(6, 0)) && !night.contains(t(12, 0)));
        for bad in [
            "8-23",
            "08:00",
            "24:00-01:00",
            "08:60-09:00",
            "08:00-08:00",
            "x",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_limit_applies_inside_its_window_only() {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        let always = Bwlimit::from_config(&crate::config::Bwlimit::Always("1M".into())).unwrap();
        assert_eq!(always.rate_at(t(3)), Some(1 << 20));
        let day = Bwlimit::from_config(&crate::config::Bwlimit::Window(
            crate::config::BwlimitWindow {
                rate: "1M".into(),
                window: Some("08:00-23:00".into()),
            },
        ))
        .unwrap();
        assert_eq!(day.rate_at(t(12)), Some(1 << 20));
        assert_eq!(day.rate_at(t(3)), None, "full speed at night");
        assert_eq!(
            serde_json::to_value(day).unwrap(),
            serde_json::json!({ "bytes_per_second": 1048576, "window": "08:00-23:00" })
        );
    }
}
