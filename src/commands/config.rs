//! `dbackup config check|schema|init`.

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::exit::Exit;

pub fn run(_global: &GlobalArgs, _cmd: ConfigCommand) -> anyhow::Result<Exit> {
    todo!("config commands")
}
