//! The `dbackup` binary: parse the command line, run, map the outcome to a documented exit code.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

fn main() -> ExitCode {
    dbackup::process::install();
    let cli = match dbackup::cli::Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout and usage errors to stderr, with its own codes (0 or 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                dbackup::exit::Exit::Usage.code()
            } else {
                0
            });
        }
    };
    // A panic is caught here: `process::finish` turns it into "internal error" and exit 1.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| dbackup::run(cli)));
    dbackup::process::finish(outcome)
}
