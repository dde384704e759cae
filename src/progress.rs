//! Progress lines on a terminal that never wrap: what a long step has done, its rate and ETA, fitted to the
//! terminal's width (the `ioctl`, else `$COLUMNS`, else 80) by dropping the least useful parts first.
//!
//! [`fit`] is pure (what a line holds at a width, table-tested at 60 and 80 columns); [`Line`] draws it with
//! indicatif on stderr, and only when [`crate::ui::Ui::progress`] says so (stderr a terminal, not `-q`).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::stdx;

/// One part of a progress line, in the order of importance it is given to [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text, kept when it fits after the parts before it.
    Text(String),
    /// A bar of this fraction (0..=1), drawn right after the label, 10 to 30 columns inside its brackets.
    Bar(f64),
}

const BAR_MIN: usize = 10;
const BAR_MAX: usize = 30;

/// The line `label` and `parts` make in `width` columns: the label (shortened if it must), then each part in order
/// as long as it fits (a part that does not fit is left out, later smaller ones may still fit; the first text is
/// cut at the edge rather than left out), shown as
/// `label [bar] text, text, ...`. The last column stays free: writing into it makes some terminals wrap.
pub fn fit(label: &str, parts: &[Part], width: usize) -> String {
    let room = width.saturating_sub(1).max(1);
    let label: String = label.chars().take(room.min(24)).collect();
    let mut used = label.chars().count();
    let mut texts: Vec<&str> = Vec::new();
    let mut bar: Option<f64> = None;
    for part in parts {
        match part {
            Part::Text(t) => {
                let cost = t.chars().count() + if texts.is_empty() { 1 } else { 2 };
                if used + cost <= room {
                    used += cost;
                    texts.push(t);
                } else if texts.is_empty() {
                    // The first text is what the line is for: shown cut rather than not at all.
                    used = room;
                    texts.push(t);
                }
            }
            Part::Bar(f) => {
                if bar.is_none() && used + BAR_MIN + 3 <= room {
                    used += BAR_MIN + 3;
                    bar = Some(f.clamp(0.0, 1.0));
                }
            }
        }
    }
    let mut line = label;
    if let Some(f) = bar {
        let inner = (BAR_MIN + room - used).min(BAR_MAX);
        let done = ((f * inner as f64).floor() as usize).min(inner);
        let mut drawn = "=".repeat(done);
        if done < inner {
            drawn.push('>');
            drawn.push_str(&" ".repeat(inner - done - 1));
        }
        line.push_str(&format!(" [{drawn}]"));
    }
    if !texts.is_empty() {
        line.push(' ');
        line.push_str(&texts.join(", "));
    }
    // Never wider than the room, whatever the parts held.
    line.chars().take(room).collect()
}

/// `eta 12s`, `eta 4m 05s`: the time left when `fraction` of the work took `elapsed`, or `None` before there is
/// enough to go on (under 1% done or under a second).
pub fn eta(fraction: f64, elapsed: Duration) -> Option<String> {
    if !(0.01..1.0).contains(&fraction) || elapsed < Duration::from_secs(1) {
        return None;
    }
    let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
    Some(format!("eta {}", stdx::eta(Duration::from_secs_f64(left))))
}

/// A byte rate (`5.1 MiB/s`) over `elapsed`, or `None` in the first half second.
pub fn rate(bytes: u64, elapsed: Duration) -> Option<String> {
    let s = elapsed.as_secs_f64();
    (s >= 0.5).then(|| format!("{}/s", stdx::bytes((bytes as f64 / s) as u64)))
}

/// The terminal's width in columns: stderr's window size, else `$COLUMNS`, else 80.
pub fn width() -> usize {
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stderr())
        && size.ws_col > 0
    {
        return size.ws_col.into();
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(80)
}

/// A progress line on stderr, redrawn at most every 100 ms from what the caller says.
pub struct Line {
    bar: ProgressBar,
    label: String,
    started: Instant,
    drawn: Option<Instant>,
}

impl Line {
    pub fn new(label: &str) -> Line {
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        Line {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Redraws with `parts` (built only when a redraw is due), fitted to the terminal's width of the moment.
    pub fn update(&mut self, parts: impl FnOnce(Duration) -> Vec<Part>) {
        if self
            .drawn
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let parts = parts(self.started.elapsed());
        self.bar.set_message(fit(&self.label, &parts, width()));
    }

    /// Prints `msg` above the line.
    pub fn println(&self, msg: impl AsRef<str>) {
        self.bar.println(msg);
    }

    /// Runs `f` with the line hidden (for a message printed by someone else).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The parts of a byte-counting step (`written`, `read back`): done of total, then ETA, bar, rate.
pub fn byte_parts(verb: &str, done: u64, total: u64, elapsed: Duration) -> Vec<Part> {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let mut parts = vec![Part::Text(format!(
        "{verb} {} of {}",
        stdx::bytes(done),
        stdx::bytes(total)
    ))];
    if let Some(e) = eta(fraction, elapsed) {
        parts.push(Part::Text(e));
    }
    parts.push(Part::Bar(fraction));
    if let Some(r) = rate(done, elapsed) {
        parts.push(Part::Text(r));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(parts: &[&str]) -> Vec<Part> {
        parts.iter().map(|t| Part::Text(t.to_string())).collect()
    }

    #[test]
    fn lines_fit_60_and_80_columns_dropping_the_least_useful_parts() {
        let mut parts = texts(&["checked 12,345/20,000", "copied 12 (3.4 MiB)", "eta 12s"]);
        parts.push(Part::Bar(0.5));
        parts.extend(texts(&["5.1 MiB/s"]));
        let wide = fit("docs", &parts, 120);
        assert_eq!(
            wide,
            "docs [===============>              ] checked 12,345/20,000, copied 12 (3.4 MiB), eta 12s, 5.1 MiB/s"
        );
        let at80 = fit("docs", &parts, 80);
        assert!(at80.chars().count() <= 79, "{at80}");
        assert!(at80.contains("[") && at80.contains("eta 12s"), "{at80}");
        let at60 = fit("docs", &parts, 60);
        assert_eq!(
            at60,
            "docs checked 12,345/20,000, copied 12 (3.4 MiB), eta 12s"
        );
        // Very narrow: the first parts that fit, never wider than the room.
        let at20 = fit("a-long-set-name", &parts, 20);
        assert!(at20.chars().count() <= 19, "{at20}");
        assert_eq!(
            fit("docs", &[Part::Text("x".repeat(100))], 40)
                .chars()
                .count(),
            39
        );
    }

    #[test]
    fn eta_waits_for_enough_to_go_on() {
        assert_eq!(
            eta(0.5, Duration::from_secs(10)).as_deref(),
            Some("eta 10s")
        );
        assert_eq!(eta(0.001, Duration::from_secs(10)), None);
        assert_eq!(eta(0.5, Duration::from_millis(200)), None);
        assert_eq!(
            eta(0.25, Duration::from_secs(100)).as_deref(),
            Some("eta 5m 00s")
        );
    }

    #[test]
    fn byte_parts_say_what_is_done_of_what() {
        let parts = byte_parts("read back", 1 << 30, 4 << 30, Duration::from_secs(10));
        assert_eq!(
            fit("T9 docs", &parts, 80),
            "T9 docs [====>             ] read back 1.0 GiB of 4.0 GiB, eta 30s, 102.4 MiB/s"
        );
    }
}
