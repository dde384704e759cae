//! `dbackup cloud ...`: converts the arguments and calls `cloud/` (the logic lives there).

use crate::cli::{CloudCheckArgs, CloudCommand, GlobalArgs};
use crate::exit::{CodedError, Exit};
use crate::expand::Env;

pub fn run(global: &GlobalArgs, cmd: CloudCommand) -> anyhow::Result<Exit> {
    match cmd {
        CloudCommand::Check(args) => check(global, &args),
    }
}

fn check(global: &GlobalArgs, args: &CloudCheckArgs) -> anyhow::Result<Exit> {
    let env = Env::from_process();
    let settings = super::load_settings(global)?;
    let Some(cloud) = settings.cloud(&args.name) else {
        let names: Vec<String> = settings
            .clouds
            .iter()
            .map(|c| format!("{:?}", c.name))
            .collect();
        let known = if names.is_empty() {
            crate::settings::Settings::NO_CLOUD.to_string()
        } else {
            format!("the cloud destinations are {}", names.join(", "))
        };
        let drive = settings.destinations.iter().any(|d| d.name == args.name);
        let what = if drive {
            "is a drive, not a cloud destination"
        } else {
            "is not in the config"
        };
        return Err(CodedError::new(
            Exit::Usage,
            format!("{:?} {what}; {known}", crate::stdx::show_str(&args.name)),
        )
        .into());
    };
    crate::process::catch_reading(
        "cloud check".into(),
        if global.dry_run {
            crate::process::NOTHING_CHANGED
        } else {
            "its probe object may be left in the bucket under .dbackup-check/ (tiny; safe to delete)"
        },
    );
    let now = chrono::Local::now();
    let report = match crate::cloud::Store::open(cloud, &env, now.time()) {
        Ok(store) => crate::cloud::check::run(
            cloud,
            &store,
            args.object_lock || cloud.object_lock_days.is_some(),
            global.dry_run,
            now.with_timezone(&chrono::Utc),
        ),
        Err(e) => crate::cloud::check::not_opened(cloud, &e),
    };
    super::print(&report, settings.output.json, crate::cloud::check::render)?;
    Ok(report.exit)
}
