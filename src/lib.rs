//! dbackup: two-phase backup for one Linux workstation. See ARCHITECTURE.md for the map.
// Outside tests, a fallible value is never unwrapped bare: each `expect` states the invariant that makes it safe.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

// Every module is `pub(crate)`: the `pub use` list at the end is the only public surface (what `main.rs` and the
// integration tests use; xtask uses none of it), so the compiler reports whatever nothing uses.

pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod browse;
pub(crate) mod cli;
pub(crate) mod cloud;
pub(crate) mod collect;
pub(crate) mod commands;
pub(crate) mod complete;
pub(crate) mod config;
pub(crate) mod exit;
pub(crate) mod expand;
pub(crate) mod external;
pub(crate) mod image;
pub(crate) mod interrupt;
pub(crate) mod json;
pub(crate) mod lock;
pub(crate) mod media;
pub(crate) mod notify;
pub(crate) mod process;
pub(crate) mod progress;
#[cfg(test)]
mod proptests;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod retention;
pub(crate) mod rsync;
pub(crate) mod rsync_args;
pub(crate) mod runlog;
pub(crate) mod schedule;
pub(crate) mod settings;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod stdx;
pub(crate) mod systemd;
pub(crate) mod ui;

use cli::{Cli, Command};

/// Runs one command to completion. Errors carry their exit code (see [`process::error_exit`]).
pub(crate) fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Config(cmd) => commands::config::run(&cli.global, cmd),
        Command::Keygen(args) => commands::keygen::run(&cli.global, &args),
        Command::Collect(args) => commands::collect::run(&cli.global, args),
        Command::External(args) => commands::external::run(&cli.global, args),
        Command::Backup(args) => commands::backup::run(&cli.global, args),
        Command::Restore(args) => commands::restore::run(&cli.global, args),
        Command::Ls(args) => commands::ls::run(&cli.global, args),
        Command::Find(args) => commands::find::run(&cli.global, args),
        Command::Snapshots(args) => commands::restore::run(
            &cli.global,
            crate::cli::RestoreArgs {
                list: true,
                source: args.source,
                date: args.date,
                set: args.set,
                drive: args.drive,
                ..Default::default()
            },
        ),
        Command::Status(args) => commands::status::run(&cli.global, args),
        Command::Report(args) => commands::report::run(&cli.global, args),
        Command::Serve(args) => commands::serve::run(&cli.global, args),
        Command::Systemd(cmd) => commands::systemd::run(&cli.global, cmd),
        Command::Image(cmd) => commands::image::run(&cli.global, cmd),
        Command::Cloud(cmd) => commands::cloud::run(&cli.global, cmd),
        Command::Generate(cmd) => commands::generate::run(&cli.global, cmd),
    }
}

/// The `dbackup` binary's whole life (`main.rs` calls only this): shell completion when asked, the panic hook, parse,
/// run under `catch_unwind`, and the outcome mapped to a documented exit code by `process::finish`.
pub fn main_entry() -> std::process::ExitCode {
    use std::panic::AssertUnwindSafe;
    use std::process::ExitCode;

    // `DBACKUP_COMPLETE=bash dbackup -- WORDS`: the shell asking for completions (`complete`).
    if let Some(code) = complete::answer_if_asked(<Cli as clap::CommandFactory>::command) {
        return ExitCode::from(code);
    }
    process::install();
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout and usage errors to stderr, with its own codes (0 or 2).
            let _ = e.print();
            if e.use_stderr() && json::asked(std::env::args_os()) {
                let message = e.to_string();
                json::print_error(&json::usage_line(&message), Exit::Usage.code());
                let _ = stdx::out::finish();
            }
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    json::enable(cli.global.json);
    cloud::error::show_context(commands::output(&cli.global).verbosity >= 1);
    // A panic is caught here: `process::finish` turns it into "internal error" and exit 1.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(cli)));
    process::finish(outcome)
}

// ---------------------------------------------------------------------------------------------------------------
// The public surface: what tests/integration reads and forges, nothing else (xtask drives the binary and uses none
// of it). Flat, as rustic_core's: a test writes `use dbackup::{BackupMeta, list_drive_backups}`. A name that would
// collide or mean nothing without its module is renamed here, after what it is (`external::layout::list` ->
// `list_drive_backups`, `snapshot::list` -> `list_snapshots`). Adding an item: one line in its group, used by a test.
// ---------------------------------------------------------------------------------------------------------------

// Exit codes: what a test expects a run to end with, and the documented table (`install` checks the man page).
pub use exit::{DOCUMENTED, Exit};

// The config and settings types a test builds by hand (media detection runs without a config file).
pub use config::{EventKind, ExternalMode, RetentionPolicy};
pub use settings::DestinationSettings;

// The `--json` results tests parse, one per command.
pub use backup::{BackupPlan, BackupReport};
pub use collect::{CollectPlan, CollectReport, SetAction, SetStatus};
pub use external::{DestinationStatus, ExternalPlan, ExternalReport};
pub use image::exec::RestoreReport as ImageRestoreReport;
pub use notify::{Event, Outcome as DeliveryOutcome};
pub use restore::list::{Listing, State as ListedState};
pub use restore::select::Kept;
pub use restore::verify::VerifyReport;
pub use schedule::ExternalAction;
pub use status::{KnownFrom, StatusReport};

// What people read, rendered from a parsed result (insta snapshots of `status` and the status page).
pub use report::page::render as render_status_page;
pub use status::render as render_status;
// The verdict the page heads with, and the sizes as both show them (the page checked against `status --json`).
pub use status::verdict as status_verdict;
pub use stdx::{age_words as human_age, bytes as human_bytes};

// The backup root: snapshots, their metadata and stamps (tests read them, and forge history).
pub use snapshot::{
    FileProblem, METADATA_FORMAT as SNAPSHOT_META_FORMAT, RsyncRecord, Snapshot, SnapshotMeta,
    SnapshotState, TransferStats, list as list_snapshots, parse_stamp,
    read_metadata as read_snapshot_meta, snapshot_name, stamp,
    write_metadata as write_snapshot_meta,
};

// A drive's `backups/`: backup.json, sums, `latest` (tests read them, forge hostile ones, and damage them).
pub use archive::sums::{SumLine, parse_sums, read_sums, write_sums};
pub use external::layout::{
    BACKUP_FORMAT, BackupMeta, DriveBackup, FilesystemRecord, LATEST_FILE, LATEST_LINK,
    METADATA_FILE as BACKUP_META_FILE, ReadBackRecord, SUMS_FILE, SetRecord, archive_name,
    list as list_drive_backups, metadata_bytes as backup_meta_bytes,
    read_latest as read_drive_latest, read_metadata as read_backup_meta,
};

// The archive engine, driven directly by the tests that write, read back and verify an archive on a real drive.
pub use archive::readback::drop_device_cache;
pub use archive::{
    ArchiveFiles, ArchiveKind, ArchiveOptions, Digest, EncryptionRecord, FileRecord, FileSink,
    IndexReader, NoProgress, ReadBackMethod, WrittenFile, read_back, scan as scan_snapshot,
    verify_archive, write_archive,
};

// Drives: detection and choice (`media/`), run on real loop devices.
pub use media::{
    Absence, Detected, Found, MIN_FREE_BYTES, MediaError, MediaInfo, Presence,
    detect as detect_drive, detect_all as detect_drives, ensure_marker, hostname,
    select as select_drives, select_or_fail as select_drives_or_fail,
};

// The run lock and the run log.
pub use lock::RunLock;
pub use runlog::{RunRecord, append as append_runlog, read as read_runlog};

// systemd units: the rendered set and its unit names (snapshots, and the comparison with nix/lib.nix).
pub use systemd::escape::path_unit;
pub use systemd::{
    COLLECT_SERVICE, COLLECT_TIMER, EXTERNAL_SERVICE, HEADER as UNIT_HEADER,
    Rendered as RenderedUnits, SERVE_SERVICE, Scope as UnitScope, UDEV_RULES, Value as UnitValue,
};
