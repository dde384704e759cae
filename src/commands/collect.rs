//! `dbackup collect`: settings, lock, plan per set, then execute (or print the plan on --dry-run).

use crate::cli::{CollectArgs, GlobalArgs};
use crate::exit::Exit;

pub fn run(_global: &GlobalArgs, _args: CollectArgs) -> anyhow::Result<Exit> {
    todo!("collect")
}
