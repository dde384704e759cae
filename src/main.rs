//! The `dbackup` binary: parse the command line, run, map the outcome to a documented exit code.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `DBACKUP_COMPLETE=bash dbackup -- WORDS`: the shell asking for completions (commands::complete).
    if let Some(code) = dbackup::commands::complete::answer_if_asked() {
        return ExitCode::from(code);
    }
    dbackup::process::install();
    let cli = match dbackup::cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout and usage errors to stderr, with its own codes (0 or 2).
            let _ = e.print();
            if e.use_stderr() && dbackup::json::asked(std::env::args_os()) {
                let message = e.to_string();
                dbackup::json::print_error(
                    dbackup::json::usage_line(&message),
                    dbackup::exit::Exit::Usage.code(),
                );
                let _ = dbackup::stdx::out::finish();
            }
            return ExitCode::from(if e.use_stderr() {
                dbackup::exit::Exit::Usage.code()
            } else {
                0
            });
        }
    };
    dbackup::json::enable(cli.global.json);
    // A panic is caught here: `process::finish` turns it into "internal error" and exit 1.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| dbackup::run(cli)));
    dbackup::process::finish(outcome)
}
