//! The `dbackup` binary: everything it does is `dbackup::main_entry` (parse, run, map the outcome to an exit code).

fn main() -> std::process::ExitCode {
    dbackup::main_entry()
}
