//! `dbackup systemd render`: the units and udev rule of [`crate::systemd`] from the config, printed (text or JSON) or
//! written into a directory (`--out`, [`crate::systemd::install`]), with the commands that install them on stderr.
//!
//! `dbackup systemd wait-for-drive`: the external unit's first step, which waits for a destination's mount.
//!
//! The config is found as every command finds it; `~` and `$VAR` expand as they will for the user the units run as
//! (`--run-as` for the system scope). Exit 0, or 2 when the config is invalid or cannot be put into a unit (a label
//! udev cannot match, a path with a control character) or `--out` is a directory another user can change
//! ([`install::check_private`]), or 1 when a file cannot be written.

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{GlobalArgs, RenderFormat, SystemdCommand, SystemdRenderArgs, WaitForDriveArgs};
use crate::config::load;
use crate::config::load::ConfigSource;
use crate::exit::{CodedError, Exit};
use crate::expand::Env;
use crate::settings::Settings;
use crate::systemd::{self, Input, Scope, Target, install};
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, cmd: SystemdCommand) -> anyhow::Result<Exit> {
    match cmd {
        SystemdCommand::Render(args) => render(global, &args),
        SystemdCommand::WaitForDrive(args) => wait_for_drive(global, &args),
    }
}

/// Waits until one destination is mounted (or needs no mount), at most `--timeout` seconds. Exit 0 either way:
/// dbackup itself then decides, and reports a drive that is still missing.
fn wait_for_drive(global: &GlobalArgs, args: &WaitForDriveArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let ui = Ui::new(&settings.output);
    if settings.destinations.is_empty() {
        ui.step("no destination is configured: nothing to wait for");
        return Ok(Exit::Ok);
    }
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_secs(args.timeout);
    match crate::media::wait_for_mount(&settings.destinations, timeout)? {
        Some(d) => ui.step(format_args!(
            "destination {} is ready at {} (after {:.1}s)",
            d.name,
            d.path.display(),
            started.elapsed().as_secs_f64()
        )),
        None => ui.info(format_args!(
            "dbackup: no destination was mounted within {}s; going on",
            args.timeout
        )),
    }
    Ok(Exit::Ok)
}

fn render(global: &GlobalArgs, args: &SystemdRenderArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let output = super::output(global);
    let ui = Ui::new(&output);
    let scope = if args.system {
        Scope::System
    } else {
        Scope::User
    };
    // The user the units run as, and the environment the config expands in for that user.
    let (user, unit_env) = install::unit_user(scope, args.run_as.as_deref(), &env)?;
    let loaded = load::load(global.config.as_deref(), &env)?;
    let settings = Settings::from_loaded(&loaded, &unit_env, output)?;
    let input = Input::new(&settings, &loaded.config, &unit_env);
    let config = match &loaded.source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::BuiltIn => {
            ui.warn(
                "there is no config file, so the units run with the built-in default config; \
                 `dbackup config init` writes one to edit (then render again)",
            );
            None
        }
    };
    let exe = match &args.exe {
        Some(p) => crate::expand::normalize(&env.cwd.join(p)),
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find the path of this dbackup binary; give it with --exe")?,
    };
    if let Some(warning) = install::exe_warning(&exe) {
        ui.warn(warning);
    }
    let target = Target {
        scope,
        exe,
        config,
        user,
    };
    let rendered = systemd::render(&input, &target)
        .map_err(|e| CodedError::new(Exit::Usage, format!("cannot render the units: {e}")))?;
    let json = args.format == RenderFormat::Json || global.json;
    crate::json::enable(json);
    for warning in install::missing_programs(&rendered) {
        ui.warn(warning);
    }

    let Some(dir) = &args.out else {
        if json {
            super::print_json(&rendered)?;
        } else {
            crate::out!("{}", install::text(&rendered));
            ui.info(install::instructions(
                &rendered,
                &input,
                &target.user,
                &unit_env.home,
                None,
            ));
        }
        return Ok(Exit::Ok);
    };

    let dir = crate::expand::normalize(&env.cwd.join(dir));
    install::check_private(&dir)?;
    let plan = install::plan_writes(&rendered, &dir)?;
    if global.dry_run {
        for (path, _) in &plan.write {
            ui.info(format_args!(
                "dbackup: dry run: would write {}",
                path.display()
            ));
        }
        for path in &plan.remove {
            ui.info(format_args!(
                "dbackup: dry run: would remove {} (no longer rendered)",
                path.display()
            ));
        }
    } else {
        super::catch_signals(&ui);
        install::apply(&plan, &dir, &ui)?;
    }
    let written: Vec<&PathBuf> = plan.write.iter().map(|(p, _)| p).collect();
    if json {
        super::print_json(&serde_json::json!({
            "dry_run": global.dry_run,
            "written": written,
            "removed": plan.remove,
        }))?;
    } else {
        for p in &written {
            crate::outln!("{}", p.display());
        }
        ui.info(install::instructions(
            &rendered,
            &input,
            &target.user,
            &unit_env.home,
            Some(&dir),
        ));
    }
    Ok(Exit::Ok)
}
