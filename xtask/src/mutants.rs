//! `cargo xtask mutants`: mutation testing of the pure core with cargo-mutants (unit tests only, `cargo test --lib`,
//! without three slow tests that do not touch these files), and the score per file. Not part of `cargo xtask test`:
//! it builds and tests each of ~250 mutants (about two hours on a busy 2-core machine).
//!
//! A mutant the tests do not catch must be equivalent (no input tells it from the original): a comment within a few
//! lines above the mutated line says so and why (`// mutants: ... is equivalent: ...`). The task fails on a survivor
//! without one. A timeout counts as caught: the mutant made a unit test hang instead of pass (e.g. a loop that no
//! longer advances), which a real run would show too; the timeouts are listed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::tools::{self, Tool};
use crate::util::{heading, project_root, shell, target_dir};

/// The pure core: retention, schedules, drive retention, the archive index, expansion.
pub const FILES: &[&str] = &[
    "src/retention.rs",
    "src/schedule.rs",
    "src/external/retention.rs",
    "src/archive/index.rs",
    "src/expand.rs",
];

/// Unit tests left out of every mutant's run: each takes 20 to 50 seconds (a 100,000-file archive's memory, age's
/// scrypt at its real cost) and none exercises these files. With them a run takes four times as long.
const SLOW_TESTS: &[&str] = &[
    "archive::tests::memory_stays_flat_with_100k_files",
    "archive::crypt::tests::passphrase_round_trip_and_wrong_passphrase",
    "archive::crypt::tests::the_length_estimate_bounds_the_ciphertext",
];

const CARGO_MUTANTS: Tool = Tool {
    krate: "cargo-mutants",
    version: "27.1.0",
    bin: "cargo-mutants",
    version_args: &["mutants", "--version"],
};

/// How many lines above a survivor its "equivalent" comment may sit.
const COMMENT_REACH: usize = 4;

#[derive(Debug, clap::Args)]
pub struct MutantsArgs {
    /// Mutate only these files (default: the pure core, see FILES in xtask/src/mutants.rs)
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    /// Build and test this many mutants at once
    #[arg(long, short, default_value_t = 1)]
    pub jobs: u32,
    /// Only print the summary of the last run (target/mutants/mutants.out)
    #[arg(long)]
    pub summary: bool,
    /// More arguments for cargo-mutants (after `--`), e.g. `-- --copy-target=true`
    #[arg(last = true)]
    pub extra: Vec<String>,
}

pub fn run(args: MutantsArgs) -> Result<()> {
    let sh = shell()?;
    let out = target_dir(&sh)?.join("mutants");
    if !args.summary {
        let bin = tools::ensure(&sh, &CARGO_MUTANTS)?;
        let files: Vec<String> = if args.files.is_empty() {
            FILES.iter().map(|f| f.to_string()).collect()
        } else {
            args.files.clone()
        };
        let file_args: Vec<String> = files
            .iter()
            .flat_map(|f| ["-f".into(), f.clone()])
            .collect();
        let jobs = args.jobs.to_string();
        let extra = &args.extra;
        let skips: Vec<&str> = SLOW_TESTS.iter().flat_map(|t| ["--skip", t]).collect();
        heading(&format!("mutants: {}", files.join(" ")));
        // `--lib` for the build too: only the unit tests are built and run. cargo-mutants exits 2 when a mutant
        // survives and 3 on a timeout: the summary below judges instead.
        let _ = cmd!(
            sh,
            "{bin} mutants {file_args...} --jobs {jobs} --no-shuffle --cargo-arg=--lib --output {out} {extra...} -- -- {skips...}"
        )
        .run();
    }
    let results = out.join("mutants.out");
    let summary = Summary::read(&results)?;
    heading("mutants: score per file (unit tests only)");
    eprint!("{}", summary.table());
    let undocumented = summary.undocumented(&project_root());
    if !undocumented.is_empty() {
        eprintln!(
            "\nsurvivors without a comment saying why they are equivalent (add a test, or `// mutants: ... is \
             equivalent: why` above the line):"
        );
        for m in &undocumented {
            eprintln!("  {m}");
        }
    }
    let timeouts = summary.count("timeout");
    if timeouts > 0 {
        eprintln!("\n{timeouts} mutant(s) made a test hang (counted as caught): see timeout.txt");
    }
    if !undocumented.is_empty() {
        bail!(
            "{} undocumented survivor(s); the lists are in {}",
            undocumented.len(),
            results.display()
        );
    }
    Ok(())
}

/// The outcome lists cargo-mutants writes (`caught.txt`, `missed.txt`, `unviable.txt`, `timeout.txt`).
struct Summary {
    /// outcome -> the mutants' names (`src/retention.rs:62:26: replace > with >= in decide`)
    lists: BTreeMap<&'static str, Vec<String>>,
}

const OUTCOMES: [&str; 4] = ["caught", "missed", "unviable", "timeout"];

impl Summary {
    fn read(dir: &Path) -> Result<Summary> {
        let mut lists = BTreeMap::new();
        for outcome in OUTCOMES {
            let path = dir.join(format!("{outcome}.txt"));
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {}: has `cargo xtask mutants` run?",
                    path.display()
                )
            })?;
            lists.insert(outcome, text.lines().map(str::to_string).collect());
        }
        Ok(Summary { lists })
    }

    fn count(&self, outcome: &str) -> usize {
        self.lists.get(outcome).map_or(0, Vec::len)
    }

    /// One row per file: caught, missed, unviable, timeouts, and the score (caught of viable).
    fn table(&self) -> String {
        let mut rows: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
        for (k, outcome) in OUTCOMES.iter().enumerate() {
            for name in &self.lists[outcome] {
                rows.entry(file_of(name)).or_default()[k] += 1;
            }
        }
        let mut out = format!(
            "  {:<28} {:>6} {:>6} {:>8} {:>7}  score\n",
            "file", "caught", "missed", "unviable", "timeout"
        );
        let mut total = [0usize; 4];
        let mut line = |name: &str, r: &[usize; 4]| {
            let viable = r[0] + r[1] + r[3];
            out.push_str(&format!(
                "  {name:<28} {:>6} {:>6} {:>8} {:>7}  {} of {viable} viable caught\n",
                r[0], r[1], r[2], r[3], r[0]
            ));
        };
        for (file, r) in &rows {
            line(file, r);
            for k in 0..4 {
                total[k] += r[k];
            }
        }
        line("total", &total);
        out
    }

    /// Survivors with no "equivalent" comment near the mutated line.
    fn undocumented(&self, root: &Path) -> Vec<String> {
        let mut sources: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        self.lists["missed"]
            .iter()
            .filter(|name| {
                let Some((file, line)) = location(name) else {
                    return true;
                };
                let lines = sources.entry(root.join(file)).or_insert_with_key(|p| {
                    std::fs::read_to_string(p)
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_string)
                        .collect()
                });
                let from = line.saturating_sub(COMMENT_REACH + 1);
                let to = line.min(lines.len());
                !lines[from.min(to)..to]
                    .iter()
                    .any(|l| l.contains("mutants:") && l.contains("equivalent"))
            })
            .cloned()
            .collect()
    }
}

/// `src/retention.rs` of `src/retention.rs:62:26: replace ...`.
fn file_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// The file and 1-based line of a mutant's name.
fn location(name: &str) -> Option<(&str, usize)> {
    let mut parts = name.splitn(3, ':');
    let file = parts.next()?;
    let line = parts.next()?.parse().ok()?;
    Some((file, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(missed: &[&str]) -> Summary {
        let mut lists = BTreeMap::new();
        lists.insert(
            "caught",
            vec![
                "src/a.rs:1:1: replace f with g".to_string(),
                "src/b.rs:2:1: delete !".to_string(),
            ],
        );
        lists.insert("missed", missed.iter().map(|s| s.to_string()).collect());
        lists.insert("unviable", vec!["src/a.rs:3:1: replace x".to_string()]);
        lists.insert("timeout", vec![]);
        Summary { lists }
    }

    #[test]
    fn the_table_counts_per_file() {
        let s = summary(&["src/a.rs:5:1: replace < with <="]);
        let t = s.table();
        assert!(t.contains("src/a.rs"), "{t}");
        let a = t
            .lines()
            .find(|l| l.trim_start().starts_with("src/a.rs"))
            .unwrap();
        assert!(a.ends_with("1 of 2 viable caught"), "{a}");
        let total = t
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .unwrap();
        assert!(total.ends_with("2 of 3 viable caught"), "{total}");
    }

    #[test]
    fn survivors_need_an_equivalent_comment_just_above() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/a.rs"),
            "fn f() {\n    // mutants: `<` -> `<=` is equivalent: both sides are never equal\n    if a < b {}\n\
             \n\n\n\n\n    if c < d {}\n}\n",
        )
        .unwrap();
        let s = summary(&[
            "src/a.rs:3:10: replace < with <= in f",
            "src/a.rs:9:10: replace < with <= in f",
            "src/a.rs:x: garbled",
        ]);
        assert_eq!(
            s.undocumented(dir.path()),
            [
                "src/a.rs:9:10: replace < with <= in f",
                "src/a.rs:x: garbled"
            ]
        );
    }
}
