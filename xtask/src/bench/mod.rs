//! `cargo xtask bench <what>`: benchmarks, one module per subject, and what they share: repetition, medians,
//! page-cache handling and the result table. Benchmarks never run as part of the tests.

mod collect;
pub mod tree;

use std::time::Duration;

use anyhow::{Context, Result};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// dbackup collect vs plain rsync with the same flags: first run and no-change run
    Collect(collect::CollectArgs),
    // Later: External (issue 3), Restore (issue 4), Status (issue 5), each in its own module.
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Collect(args) => collect::run(args),
    }
}

/// How the page cache is treated before each timed run, the same for every contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cache {
    /// Warm: an untimed run of each contender first; the source tree stays in memory (the nightly case on a
    /// machine with enough RAM).
    Warm,
    /// Cold: `sync` and drop the page cache (root only) before each timed run.
    Drop,
}

impl Cache {
    /// Run before each timed run: flush dirty pages (so one run's writeback does not land in the next one's
    /// time), and drop the cache when asked.
    pub fn prepare(self) -> Result<()> {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        if self == Cache::Drop {
            std::fs::write("/proc/sys/vm/drop_caches", "3\n")
                .context("cannot drop the page cache (needs root): use --cache warm")?;
        }
        Ok(())
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cache::Warm => "warm page cache (one untimed run of each first)",
            Cache::Drop => "page cache dropped before each timed run",
        }
    }
}

/// The timings of one measurement over several repetitions.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The median in seconds (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let mut s: Vec<f64> = self.0.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    pub fn min_max(&self) -> (f64, f64) {
        let s = self.0.iter().map(Duration::as_secs_f64);
        (
            s.clone().fold(f64::INFINITY, f64::min),
            s.fold(0.0, f64::max),
        )
    }

    /// `1.234 (1.20-1.31)`
    pub fn cell(&self) -> String {
        let (lo, hi) = self.min_max();
        if self.0.is_empty() {
            "-".into()
        } else {
            format!("{:.3} ({lo:.2}-{hi:.2})", self.median())
        }
    }
}

/// One row of a comparison table: a baseline and a contender, and their ratio of medians.
pub struct Row {
    pub label: String,
    pub baseline: Samples,
    pub contender: Samples,
}

/// Prints a table: label, baseline median (min-max), contender median (min-max), contender/baseline.
pub fn print_table(baseline: &str, contender: &str, rows: &[Row]) {
    let ratio = format!("{contender}/{baseline}");
    println!("seconds: median (min-max) of the repetitions");
    println!(
        "{:<20} {:>20} {:>20} {:>16}",
        "", baseline, contender, ratio
    );
    for r in rows {
        let q = r.contender.median() / r.baseline.median();
        println!(
            "{:<20} {:>20} {:>20} {:>16}",
            r.label,
            r.baseline.cell(),
            r.contender.cell(),
            format!("{q:.3}")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        Samples(ms.iter().map(|&m| Duration::from_millis(m)).collect())
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(samples(&[300, 100, 200]).median(), 0.2);
        assert_eq!(samples(&[400, 100, 200, 300]).median(), 0.25);
        assert!(samples(&[]).median().is_nan());
        assert_eq!(samples(&[300, 100, 200]).min_max(), (0.1, 0.3));
    }
}
