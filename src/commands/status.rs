//! `dbackup status`: the state of every set and destination from metadata only, the last run, what is due and what
//! is overdue. stdout: the table (`--json`: the [`StatusReport`]).
//!
//! Exit: 0; with `--check`, 1 when anything is overdue, the last run failed, a set's newest snapshot lacks a source,
//! a drive backup was found damaged or a drive's newest backup is broken (for monitoring); 2 for a bad config.

use chrono::Local;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::Exit;
use crate::status::{self, StatusReport};

pub fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<Exit> {
    if args.history.is_some() && !global.json {
        return Err(crate::exit::CodedError::new(
            Exit::Usage,
            "--history adds the history to the JSON report; use `dbackup status --json --history N` (the status \
             page, `dbackup report`, draws it for people)",
        )
        .into());
    }
    let settings = super::load_settings(global)?;
    let now = args.now.unwrap_or_else(|| Local::now().fixed_offset());
    let facts = status::gather_with(
        &settings,
        status::Look::Plan,
        args.history.unwrap_or(0) as usize,
        status::CloudLook::Full,
    );
    let report = status::build(&facts, &settings, now);
    super::print(&report, global.json, status::render)?;
    if args.check && !report.ok {
        if global.quiet < 2 {
            crate::errln!("dbackup: status check failed: {}", problems(&report));
        }
        return Ok(Exit::Failed);
    }
    Ok(Exit::Ok)
}

/// What makes the check fail, in one line.
fn problems(report: &StatusReport) -> String {
    status::verdict(report).problems.join("; ")
}
