//! `cargo xtask bench report`: how long the status page takes with 1,000 snapshots and 50 external backups present.
//! The goal of issue 17 is under 100 ms for the whole `dbackup report --out FILE` run.
//!
//! The fixture is `bench status`'s (real metadata cloned under older names, a run log at its size bound whose
//! records all postdate the snapshots, so the history reads the log to its end), with fewer files per snapshot:
//! the page reads metadata only, and `bench status` already shows that the trees' size does not matter. The table
//! also times `dbackup --json status --history 30` (the data alone) and plain `dbackup status`.

use std::time::Duration;

use anyhow::Result;

use super::measure::{Cache, Table};
use super::status::{StatusArgs, fixture};
use crate::util::{heading, remove_dir_if_exists};

/// The goal of issue 17: the page is written within this.
const GOAL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Snapshots in all, split between two sets (one an hour, going back from now)
    #[arg(long, default_value_t = 1000)]
    pub snapshots: usize,
    /// Verified external backups on the destination (one a day)
    #[arg(long, default_value_t = 50)]
    pub backups: usize,
    /// Runs and snapshots per set the page shows (report.history)
    #[arg(long, default_value_t = 30)]
    pub history: usize,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
    /// How the page cache is treated before each timed run
    #[arg(long, value_enum, default_value_t = Cache::Warm)]
    pub cache: Cache,
}

pub fn run(args: ReportArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let w = fixture(
        "report",
        &StatusArgs {
            snapshots: args.snapshots,
            backups: args.backups,
            files: 10,
            newest_files: 1000,
            reps: args.reps,
            cache: args.cache,
        },
    )?;
    let page = w.work.join("report.html");
    let page_s = page.display().to_string();
    let history = args.history.to_string();
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "dbackup report --out FILE",
            vec!["report", "--history", &history, "--out", &page_s],
        ),
        (
            "dbackup --json status --history N",
            vec!["--json", "status", "--history", &history],
        ),
        ("dbackup status (no history)", vec!["status"]),
    ];
    heading(&format!(
        "bench report: {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let rows: Vec<&str> = runs.iter().map(|(r, _)| *r).collect();
    let mut table = Table::new(&["seconds"], &rows, &[]);
    for (_, a) in &runs {
        w.time_args(a)?;
    }
    let bytes = std::fs::metadata(&page)?.len();
    for _ in 0..args.reps {
        for (row, (_, a)) in runs.iter().enumerate() {
            args.cache.prepare()?;
            table.push(row, 0, w.time_args(a)?);
        }
    }
    remove_dir_if_exists(&w.work)?;

    println!();
    println!(
        "bench report: {} snapshots in 2 sets, {} external backups, a run log at its size bound; history {}; \
         the page is {} KiB",
        args.snapshots,
        args.backups,
        args.history,
        bytes / 1024
    );
    println!("{} repetitions; {}", args.reps, args.cache.describe());
    table.print();
    let median = table.median(0, 0);
    let verdict = if median < GOAL.as_secs_f64() {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "\ngoal: dbackup report < {} ms: {verdict} (median {:.1} ms)",
        GOAL.as_millis(),
        median * 1000.0
    );
    Ok(())
}
