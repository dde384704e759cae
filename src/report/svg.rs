//! The page's charts, as inline SVG written here: the strip of recent runs, the new-bytes sparkline of a set, and
//! the meters (an age against its thresholds, a drive's space against the next backup). Colours come from classes
//! the page's style defines (so dark mode and print apply); every mark has a `<title>` to read.

use std::fmt::Write as _;

use super::html::esc;
use crate::status::history::{RunEntry, RunOutcome, SnapshotPoint};
use crate::stdx;

/// The outcome's class (and the legend's word).
pub fn outcome_class(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Ok => "ok",
        RunOutcome::Warning => "warning",
        RunOutcome::Failed => "failed",
        RunOutcome::MissingDrive => "missing_drive",
        RunOutcome::Locked => "locked",
        RunOutcome::Interrupted => "interrupted",
    }
}

/// What the outcome means, for people.
pub fn outcome_words(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Ok => "ok",
        RunOutcome::Warning => "warnings",
        RunOutcome::Failed => "failed",
        RunOutcome::MissingDrive => "no drive",
        RunOutcome::Locked => "another run held the lock",
        RunOutcome::Interrupted => "interrupted",
    }
}

/// One square per run, oldest on the left, `slots` wide (empty slots stay grey).
pub fn strip(runs_newest_first: &[RunEntry], slots: usize) -> String {
    const W: usize = 16;
    const GAP: usize = 4;
    let slots = slots.max(runs_newest_first.len()).max(1);
    let width = slots * (W + GAP) - GAP;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"strip\" width=\"{width}\" height=\"{W}\" viewBox=\"0 0 {width} {W}\" role=\"img\" \
         aria-label=\"the last {} runs, oldest first\">",
        runs_newest_first.len()
    );
    let empty = slots - runs_newest_first.len();
    for i in 0..empty {
        let _ = write!(
            out,
            "<rect class=\"track\" x=\"{}\" y=\"0\" width=\"{W}\" height=\"{W}\" rx=\"3\"/>",
            i * (W + GAP)
        );
    }
    for (j, r) in runs_newest_first.iter().rev().enumerate() {
        let x = (empty + j) * (W + GAP);
        let mut title = format!(
            "{} {}: {} (exit {})",
            r.command,
            super::html::when(r.finished),
            outcome_words(r.outcome),
            r.exit
        );
        if let Some(m) = &r.message {
            title.push_str(": ");
            title.push_str(m);
        }
        let _ = write!(
            out,
            "<rect class=\"{}\" x=\"{x}\" y=\"0\" width=\"{W}\" height=\"{W}\" rx=\"3\"><title>{}</title></rect>",
            outcome_class(r.outcome),
            esc(&title)
        );
    }
    out.push_str("</svg>");
    out
}

/// New bytes per snapshot (what each copied; the rest is hard-linked), oldest on the left. First snapshots copied
/// everything: drawn full height in grey and left out of the scale, so that they do not flatten the others; outliers
/// likewise, in red. Incomplete snapshots are amber.
pub fn sparkline(points_newest_first: &[SnapshotPoint]) -> String {
    const H: f64 = 28.0;
    const BAR: f64 = 5.0;
    const GAP: f64 = 2.0;
    let n = points_newest_first.len();
    if n == 0 {
        return String::new();
    }
    let width = (n as f64 * (BAR + GAP) - GAP).max(BAR);
    // Outliers are drawn full height too, so that one jump does not flatten the rest.
    let max = points_newest_first
        .iter()
        .filter(|p| !p.first && !p.outlier)
        .map(|p| p.copied_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"spark\" width=\"{width}\" height=\"{H}\" viewBox=\"0 0 {width} {H}\" role=\"img\" \
         aria-label=\"new bytes per snapshot, oldest first\">"
    );
    for (i, p) in points_newest_first.iter().rev().enumerate() {
        let x = i as f64 * (BAR + GAP);
        let h = if p.first || p.outlier {
            H
        } else {
            ((p.copied_bytes as f64 / max) * H).max(1.0)
        };
        let class = if p.outlier {
            "bar outlier"
        } else if p.first {
            "bar first"
        } else if !p.complete {
            "bar incomplete"
        } else {
            "bar"
        };
        let mut title = format!(
            "{}: {} new of {}",
            p.name,
            stdx::bytes(p.copied_bytes),
            stdx::bytes(p.bytes)
        );
        if p.first {
            title.push_str(" (first snapshot: everything copied)");
        }
        if !p.complete {
            title.push_str(" (incomplete)");
        }
        if p.outlier {
            title.push_str(" (far more than usual)");
        }
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x:.0}\" y=\"{:.1}\" width=\"{BAR}\" height=\"{h:.1}\"><title>{}</title></rect>",
            H - h,
            esc(&title)
        );
    }
    out.push_str("</svg>");
    out
}

/// A meter: `value` of `max` filled, in the class given (`bar`, `due`, `over`), with an optional mark at `mark`.
pub fn meter(value: f64, max: f64, class: &str, mark: Option<f64>, title: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 10.0;
    let frac = |v: f64| {
        if max > 0.0 {
            (v / max).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let mut out = format!(
        "<svg class=\"meter\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\
         <title>{}</title><rect class=\"track\" x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" rx=\"2\"/>\
         <rect class=\"{class}\" x=\"0\" y=\"0\" width=\"{:.1}\" height=\"{H}\" rx=\"2\"/>",
        esc(title),
        esc(title),
        frac(value) * W
    );
    if let Some(m) = mark {
        let x = frac(m) * W;
        let _ = write!(
            out,
            "<line class=\"mark\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{H}\"/>"
        );
    }
    out.push_str("</svg>");
    out
}
