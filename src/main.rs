//! The `dbackup` binary: parse the command line, run, map the outcome to a documented exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
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
    match dbackup::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("dbackup: error: {}", dbackup::ui::format_error(&err));
            dbackup::exit::classify(&err).into()
        }
    }
}
