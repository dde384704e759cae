//! What every benchmark shares: preparing (root, packages, tools, a release build), a fresh work directory, the
//! dbackup command line, the order of turns, page-cache handling ([`Cache`]), samples and their medians
//! ([`Samples`]), the result table with ratios ([`Table`]), and timing a command's wall and CPU time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::packages::{Need, ensure_packages};
use crate::util::{
    Profile, build_dbackup, find_program, heading, is_root, remove_dir_if_exists, shell, target_dir,
};

/// What a bench starts with: root when it needs it (`root` says why), the packages `need` names, `tools` on the
/// PATH (`install` says how to get a missing one), then dbackup built for release: the shell and the binary.
pub fn prepare(
    bench: &str,
    root: Option<&str>,
    need: Need,
    tools: &[&str],
    install: &str,
) -> Result<(Shell, PathBuf)> {
    if let Some(why) = root
        && !is_root()
    {
        bail!("bench {bench} needs root: {why}");
    }
    let sh = shell()?;
    ensure_packages(&sh, need);
    for tool in tools {
        find_program(tool).with_context(|| format!("{tool} is missing{install}"))?;
    }
    heading(&format!("bench {bench}: build dbackup (release)"));
    let bin = build_dbackup(&sh, Profile::Release)?;
    Ok((sh, bin))
}

/// `target/bench/<name>`, emptied and made again: a bench's work directory (absolute).
pub fn fresh_work_dir(sh: &Shell, name: &str) -> Result<PathBuf> {
    let work = target_dir(sh)?.join("bench").join(name);
    remove_dir_if_exists(&work)?;
    std::fs::create_dir_all(&work)?;
    Ok(work.canonicalize()?)
}

/// Removes a backup root a bench made under `work`, and the run log that remembers its snapshots: collect refuses
/// a root that holds none of the snapshots the log says it made (as a disk that is not mounted).
pub fn remove_backup_root(work: &Path, root: &Path) -> Result<()> {
    crate::util::remove_dir_if_exists(root)?;
    match std::fs::remove_file(work.join("state/dbackup/log.jsonl")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// The release dbackup as the benches run it: `--config config`, a home, state and config directory of its own
/// under `work`, stdin closed, none of the caller's `DBACKUP`, `DBACKUP_CONFIG` or `DDATA`.
pub fn dbackup_command(bin: &Path, work: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg(config)
        .env("HOME", work.join("home"))
        .env("XDG_STATE_HOME", work.join("state"))
        .env("XDG_CONFIG_HOME", work.join("xdg-config"))
        .env_remove("DBACKUP")
        .env_remove("DBACKUP_CONFIG")
        .env_remove("DDATA")
        .stdin(Stdio::null());
    c
}

/// Whether "theirs" runs second, then first, in repetition `rep`: `[false, true]`, then `[true, false]`, so that
/// drift on a shared machine favours neither side.
pub fn turns(rep: usize) -> [bool; 2] {
    if rep.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

/// Waits (at most 30 s) until the kernel has written back what earlier runs left dirty: a loop device's image sits
/// in the host's page cache, and `sync` returning does not mean its writeback to the disk under it is over; a run
/// that starts during it pays for the previous run's writes (seen in `bench external`: whichever of two
/// back-to-back runs came second was up to 1.5 s slower).
fn settle_writeback() {
    let pending = || -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(kib("Dirty:")? + kib("Writeback:")?)
    };
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        match pending() {
            Some(kib) if kib > 16 << 10 => {
                // SAFETY: sync has no preconditions.
                unsafe { libc::sync() };
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => break,
        }
    }
    // The disk under a VM may still be busy with what it acknowledged: a short pause evens that out.
    std::thread::sleep(Duration::from_millis(500));
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
        settle_writeback();
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

/// Timings by row (first run, no-change run, ...) and column (the contenders), printed with ratio columns.
pub struct Table {
    columns: Vec<String>,
    rows: Vec<(String, Vec<Samples>)>,
    /// Ratio columns, as (numerator, denominator) column indexes.
    ratios: Vec<(usize, usize)>,
}

impl Table {
    pub fn new(columns: &[&str], rows: &[&str], ratios: &[(usize, usize)]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| (r.to_string(), vec![Samples::default(); columns.len()]))
                .collect(),
            ratios: ratios.to_vec(),
        }
    }

    pub fn push(&mut self, row: usize, column: usize, d: Duration) {
        self.rows[row].1[column].push(d);
    }

    /// The ratio of the medians of two columns in one row.
    pub fn ratio(&self, row: usize, (num, den): (usize, usize)) -> f64 {
        self.rows[row].1[num].median() / self.rows[row].1[den].median()
    }

    /// The last sample of one cell.
    pub fn last(&self, row: usize, column: usize) -> Option<Duration> {
        self.rows[row].1[column].0.last().copied()
    }

    /// The median of one cell, in seconds.
    pub fn median(&self, row: usize, column: usize) -> f64 {
        self.rows[row].1[column].median()
    }

    /// The median of the per-repetition ratios: each repetition runs the contenders back to back, so this
    /// cancels the slow drift of a shared machine that the ratio of medians keeps.
    pub fn paired_ratio(&self, row: usize, (num, den): (usize, usize)) -> f64 {
        let (n, d) = (&self.rows[row].1[num].0, &self.rows[row].1[den].0);
        let ratios = n
            .iter()
            .zip(d)
            .map(|(n, d)| Duration::from_secs_f64(n.as_secs_f64() / d.as_secs_f64()));
        Samples(ratios.collect()).median()
    }

    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    pub fn print(&self) {
        let label_width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let ratio_names: Vec<String> = self
            .ratios
            .iter()
            .map(|&(n, d)| format!("{}/{}", self.columns[n], self.columns[d]))
            .collect();
        println!(
            "seconds: median (min-max) of the repetitions; ratios: of the medians [median of the per-repetition ratios]"
        );
        let mut header = format!("{:<label_width$}", "");
        for c in &self.columns {
            header.push_str(&format!("  {c:>22}"));
        }
        for r in &ratio_names {
            header.push_str(&format!("  {r:>w$}", w = r.len().max(15)));
        }
        println!("{header}");
        for (i, (label, cells)) in self.rows.iter().enumerate() {
            let mut line = format!("{label:<label_width$}");
            for c in cells {
                line.push_str(&format!("  {:>22}", c.cell()));
            }
            for (r, name) in self.ratios.iter().zip(&ratio_names) {
                let q = format!("{:.3} [{:.3}]", self.ratio(i, *r), self.paired_ratio(i, *r));
                line.push_str(&format!("  {q:>w$}", w = name.len().max(15)));
            }
            println!("{line}");
        }
    }
}

/// Runs `dbackup keygen --out IDENTITY` through `dbackup` (the binary with its environment) after removing an old
/// identity there; returns the recipient it printed.
pub fn keygen(mut dbackup: std::process::Command, identity: &std::path::Path) -> Result<String> {
    let _ = std::fs::remove_file(identity);
    let out = dbackup
        .arg("keygen")
        .arg("--out")
        .arg(identity)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run dbackup keygen")?;
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !recipient.starts_with("age1") {
        anyhow::bail!(
            "dbackup keygen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(recipient)
}

/// CPU time (user + system) of all the children this process has waited for so far (grandchildren included, once
/// their parents waited for them).
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// [`timed`], also returning the CPU time (user + system) the command and its children used: steadier than the
/// wall-clock time on a busy machine.
pub fn timed_cpu(cmd: &mut std::process::Command, what: &str) -> Result<(Duration, Duration)> {
    let before = children_cpu();
    let wall = timed(cmd, what)?;
    Ok((wall, children_cpu().saturating_sub(before)))
}

/// Runs a command to completion and returns its wall-clock time; fails with its stderr when it fails.
pub fn timed(cmd: &mut std::process::Command, what: &str) -> Result<Duration> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let start = std::time::Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    let wall = start.elapsed();
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(wall)
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

    #[test]
    fn ratios_are_of_medians() {
        let mut t = Table::new(&["a", "b"], &["row"], &[(1, 0)]);
        for (a, b) in [(100, 300), (200, 100), (300, 500)] {
            t.push(0, 0, Duration::from_millis(a));
            t.push(0, 1, Duration::from_millis(b));
        }
        assert!((t.ratio(0, (1, 0)) - 1.5).abs() < 1e-9);
        // Per repetition: 3.0, 0.5, 1.667; their median is 1.667.
        assert!((t.paired_ratio(0, (1, 0)) - 5.0 / 3.0).abs() < 1e-6);
    }
}
