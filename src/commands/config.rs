//! `dbackup config check|schema|init`: validate a config and show what it means ([`crate::settings::summary`]),
//! print the schema, write the default ([`crate::config::init`]).

use std::path::{Path, PathBuf};

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::config::load::{self, Origin};
use crate::config::{init, schema};
use crate::exit::Exit;
use crate::expand::Env;
use crate::settings::Settings;

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    match cmd {
        ConfigCommand::Check {
            path,
            allow_missing_files,
        } => check(global, path.as_deref(), allow_missing_files, &env),
        ConfigCommand::Schema => {
            crate::out!("{}", schema::EMBEDDED);
            Ok(Exit::Ok)
        }
        ConfigCommand::Init { path } => init(global, path.as_deref(), &env),
    }
}

fn check(
    global: &GlobalArgs,
    path: Option<&Path>,
    allow_missing_files: bool,
    env: &Env,
) -> anyhow::Result<Exit> {
    let loaded = match path {
        Some(p) => load::load_at(
            &crate::expand::normalize(&env.cwd.join(p)),
            Origin::Argument,
            env,
        )?,
        None => load::load(global.config.as_deref(), env)?,
    };
    let (settings, warnings) =
        Settings::for_check(&loaded, env, super::output(global), allow_missing_files)?;
    if global.json {
        super::print_json(&settings)?;
    } else {
        crate::out!("{}", crate::settings::summary(&settings, env));
    }
    let ui = crate::ui::Ui::new(&settings.output);
    // A config checked where it does not run (a build) is not told of the keys its environment lacks.
    let keys = match allow_missing_files {
        true => Vec::new(),
        false => crate::cloud::credentials::missing_keys(&settings.clouds, env),
    };
    for warning in warnings.into_iter().chain(keys) {
        ui.warn(warning);
    }
    Ok(Exit::Ok)
}

fn init(global: &GlobalArgs, path: Option<&Path>, env: &Env) -> anyhow::Result<Exit> {
    let target: PathBuf = match path {
        Some(p) => crate::expand::normalize(&env.cwd.join(p)),
        None => load::config_path(global.config.as_deref(), env).0,
    };
    let text = init::default_text(&target, env)?;
    if global.dry_run {
        crate::errln!(
            "dbackup: dry run: would write {} (mode 0600):",
            target.display()
        );
        if global.json {
            super::print_json(&serde_json::json!({
                "dry_run": true,
                "would_write": target,
                "text": text,
            }))?;
        } else {
            crate::out!("{text}");
        }
        return Ok(Exit::Ok);
    }
    super::catch_signals(&crate::ui::Ui::new(&super::output(global)));
    init::write_new(&target, &text, "the config")?;
    if global.json {
        super::print_json(&serde_json::json!({ "written": target }))?;
    } else {
        crate::outln!("wrote {}", target.display());
        if global.quiet == 0 {
            if target == load::config_path(None, env).0 {
                crate::errln!(
                    "dbackup: edit it, then run `dbackup config check` to see what it means"
                );
            } else {
                // Not the file dbackup reads by default: the check (and every command) must be told where it is.
                let shown = target.to_string_lossy();
                let quoted = crate::ui::shell_words(&[shown.as_ref()]);
                crate::errln!(
                    "dbackup: edit it, then run `dbackup config check {quoted}` to see what it means \
                     (other commands read it with `--config {quoted}`)"
                );
            }
        }
    }
    Ok(Exit::Ok)
}
