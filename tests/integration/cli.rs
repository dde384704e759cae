//! The command line itself: help, version, exit codes of unknown commands, argv[0] dispatch.

use crate::harness::Test;

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let out = Test::new().cmd().args(["--help"]).status(0);
    for word in [
        "collect",
        "external",
        "backup",
        "restore",
        "status",
        "config",
        "Exit codes",
    ] {
        assert!(
            out.stdout.contains(word),
            "--help lacks {word}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = Test::new().cmd().args(["frobnicate"]).status(2);
    out.stderr_has("frobnicate");
}

#[test]
fn seed_command_names_dispatch_through_argv0() {
    let out = Test::new()
        .cmd()
        .argv0("backup-collect")
        .args(["--help"])
        .status(0);
    out.stdout_has("Collect only this set");
}

/// `status --help` names every condition `--check` fails on, as README's "status" lists them. Before: its `--check`
/// said only "overdue or the last run failed", and nothing of an incomplete snapshot or a broken chain.
#[test]
fn status_help_names_every_condition_check_fails_on() {
    let out = Test::new().cmd().args(["status", "--help"]).status(0);
    for condition in [
        "overdue",
        "the last run failed",
        "lacks a source",
        "damaged",
        "broken",
    ] {
        out.stdout_has(condition);
    }
}
