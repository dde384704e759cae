//! One module per subcommand: build `Settings`, build the phase's plan, print it (dry run) or execute it.

pub mod backup;
pub mod collect;
pub mod config;
pub mod external;
pub mod generate;
pub mod restore;
pub mod status;
pub mod systemd;

use crate::exit::{CodedError, Exit};

/// The answer of subcommands whose issue has not landed yet.
pub fn not_implemented(name: &str) -> anyhow::Result<Exit> {
    Err(CodedError::new(
        Exit::Failed,
        format!("`dbackup {name}` is not implemented yet in this version"),
    )
    .into())
}
