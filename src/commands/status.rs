//! `dbackup status`: the state of every set and destination from metadata only, the last run, what is due and what
//! is overdue. stdout: the table (`--json`: the [`crate::status::StatusReport`]).
//!
//! Exit: 0; with `--check`, 1 when anything is overdue, the last run failed, a set's newest snapshot lacks a source,
//! a drive backup was found damaged or a drive's newest backup is broken (for monitoring); else 3 when a bucket, a
//! drive's backups or the run log could not be looked at (whether it is overdue is unknown); 2 for a bad config.

use chrono::Local;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::Exit;
use crate::status;

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
    super::reading("status");
    let now = args.now.unwrap_or_else(|| Local::now().fixed_offset());
    let facts = status::gather_with(
        &settings,
        status::Look::Plan,
        args.history.unwrap_or(0) as usize,
        status::CloudLook::Full,
    );
    let report = status::build(&facts, &settings, now);
    super::print(&report, global.json, status::render)?;
    if !args.check {
        return Ok(Exit::Ok);
    }
    let verdict = status::verdict(&report);
    if global.quiet < 2 {
        for line in verdict.check_lines() {
            crate::errln!("dbackup: {line}");
        }
    }
    Ok(verdict.exit())
}
