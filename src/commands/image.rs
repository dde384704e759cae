//! `dbackup image kit|create|restore`: clap args converted to the image room's own options, plan, print (dry run),
//! or execute and report.
//!
//! stdout: the guide (`image kit`), the new backup's directory (`create`), the restored partitions (`restore`);
//! with `--json`, the kit manifest, the [`crate::image::CreateReport`] or the plan/report. A restore's dry run also
//! reads and checks every image, as the real run does before writing. Exit: 0 ok; 3 when a device was refused but
//! others imaged; 1 refused or failed (a damaged image, in a dry run too); 2 bad arguments; 5 no drive present.

use anyhow::Context;

use crate::cli::{GlobalArgs, ImageCommand, ImageCreateArgs, ImageKitArgs, ImageRestoreArgs};
use crate::exit::{CodedError, Exit};
use crate::image::{self, CreateOptions, RestoreOptions, RestoreSource};
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, cmd: ImageCommand) -> anyhow::Result<Exit> {
    match cmd {
        ImageCommand::Kit(args) => kit(global, &args),
        ImageCommand::Create(args) => create(global, &args),
        ImageCommand::Restore(args) => restore(global, &args),
    }
}

fn kit(global: &GlobalArgs, args: &ImageKitArgs) -> anyhow::Result<Exit> {
    let ui = Ui::new(&super::output(global));
    // A signal ends the run through the kit's removal (a temporary directory, or what it wrote into `--out`), not
    // beside it.
    super::catch_signals(&ui);
    // The sets are only named in the guide: a config that does not load is no reason to withhold the kit.
    let settings = super::load_settings(global).ok();
    match &args.out {
        Some(out) => {
            // A dry run collects the kit where it is thrown away and says what `out` would receive.
            let scratch = if global.dry_run {
                Some(tempfile::Builder::new().prefix("dbackup-kit-").tempdir()?)
            } else {
                None
            };
            let into = scratch
                .as_ref()
                .map_or_else(|| out.clone(), |d| d.path().join("kit"));
            let (_, pieces) = image::kit_to_dir(settings.as_ref(), &into)?;
            if ui.json {
                super::print_json(&serde_json::json!({ "out": out, "pieces": pieces }))?;
            } else {
                let rows: Vec<Vec<String>> = pieces
                    .iter()
                    .map(|p| {
                        let note = p.note.as_deref().map(|n| format!(": {n}"));
                        [
                            &p.name,
                            &p.status,
                            &format!("{}{}", p.source, note.unwrap_or_default()),
                        ]
                        .map(|cell| crate::stdx::show_str(cell))
                        .to_vec()
                    })
                    .collect();
                for line in crate::stdx::table(&rows).lines() {
                    ui.info(line);
                }
                if scratch.is_some() {
                    ui.info(format_args!(
                        "dry run: would write these {} files to {}",
                        pieces.len(),
                        out.display()
                    ));
                } else {
                    crate::outln!("{}", out.display());
                }
            }
        }
        None => {
            let dir = tempfile::Builder::new().prefix("dbackup-kit-").tempdir()?;
            let (k, pieces) = image::kit_to_dir(settings.as_ref(), &dir.path().join("kit"))?;
            if ui.json {
                super::print_json(&serde_json::json!({ "facts": k.facts, "pieces": pieces }))?;
            } else {
                crate::out!(
                    "{}",
                    std::fs::read_to_string(
                        dir.path().join("kit").join(image::layout::RESTORE_DOC)
                    )?
                );
            }
        }
    }
    Ok(Exit::Ok)
}

fn create(global: &GlobalArgs, args: &ImageCreateArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let ui = Ui::new(&settings.output);
    let opts = CreateOptions {
        devices: args.devices.clone(),
        destination: args.destination.clone(),
    };
    if settings.output.dry_run {
        super::reading("image create --dry-run");
        let (plan, ..) = image::plan_create(&settings, &opts)?;
        if ui.json {
            super::print_json(&plan)?;
        } else {
            crate::out!("{}", image::render_create(&plan));
        }
        return Ok(plan.expected_exit());
    }
    // From here on SIGINT and SIGTERM stop it between blocks (its partial backup removed), as `external`.
    let started = super::begin_run(&settings, &ui, "image create");
    let report = image::create(&settings, &opts, &ui);
    super::log_run(
        &settings,
        &ui,
        "image create",
        started,
        match &report {
            Ok(r) => Ok((r.exit(), serde_json::json!({ "image": r }))),
            Err(e) => Err(e),
        },
    );
    let report = report?;
    // Interrupted: the run log says so, stderr gets one line (from `main`).
    crate::interrupt::check()?;
    if ui.json {
        super::print_json(&report)?;
    }
    match (&report.error, &report.backup_path) {
        (Some(e), _) => ui.error(format_args!("image create: FAILED: {e}")),
        (None, Some(p)) => {
            ui.info(format_args!(
                "{}: backup {} verified and in place at {}",
                report.plan.destination,
                report.plan.stamp,
                p.display()
            ));
            if !ui.json {
                crate::outln!("{}", p.display());
            }
        }
        _ => {}
    }
    Ok(report.exit())
}

fn restore(global: &GlobalArgs, args: &ImageRestoreArgs) -> anyhow::Result<Exit> {
    let output = super::output(global);
    let ui = Ui::new(&output);
    // Until the first write (after the images are checked and the user confirmed), a signal stops it at once: nothing
    // was changed.
    super::reading(if output.dry_run {
        "image restore --dry-run"
    } else {
        "image restore"
    });
    // From rescue media there may be no config: --drive is enough.
    let settings = match super::load_settings(global) {
        Ok(s) => Some(s),
        Err(_) if args.drive.is_some() && global.config.is_none() => None,
        Err(e) => return Err(e.into()),
    };
    let keys = image::restore_keys(settings.as_ref(), &args.identities)?;
    let src = RestoreSource {
        drive: args.drive.clone(),
        from: args.from.clone(),
    };
    let opts = RestoreOptions {
        names: args.names.clone(),
        grow: args.grow,
    };
    let (mut plan, system) = image::plan_restore(settings.as_ref(), &src, &args.to, &opts, &keys)?;
    plan.confirm &= !args.yes;
    if output.dry_run || plan.refused() {
        if ui.json {
            super::print_json(&plan)?;
        } else {
            crate::out!("{}", image::plan::render_restore(&plan));
        }
        if plan.refused() {
            return Err(CodedError::new(
                Exit::Failed,
                format!(
                    "image restore refused; nothing was written: {}",
                    plan.refusals.join("; ")
                ),
            )
            .into());
        }
        // "Would this restore work?": the images are read (only read) and checked as the real run checks them
        // before it writes, so a damaged one is found now, not once the target's table is gone.
        image::exec::verify_images(&plan, &system.images, &keys, &ui)
            .context("dry run: checking the images as the restore would before writing")?;
        if !ui.json {
            crate::outln!(
                "dry run: every image was read and matches backup.json (length, sha256, partclone header); \
                 nothing was written"
            );
        }
        return Ok(Exit::Ok);
    }
    // What is about to be overwritten, on stderr; with --json too when the user is asked (stdout holds the JSON).
    let asks = plan.confirm;
    if !ui.json || asks {
        crate::stdx::out::stderr(format_args!("{}", image::plan::render_restore(&plan)));
    }
    image::exec::verify_images(&plan, &system.images, &keys, &ui)
        .context("checking the images before writing anything")?;
    if asks {
        image::exec::confirm(&plan)?;
    }
    // From here on SIGINT and SIGTERM stop the restore between blocks (the loop device it attaches detached, its
    // children ended), not the process at once as until now.
    super::catch_signals(&ui);
    let report = image::exec::restore(&plan, &system.images, &keys, &ui)?;
    if ui.json {
        super::print_json(&report)?;
    } else {
        for p in &report.partitions {
            crate::outln!("{}\t{}\t{}", p.partition, p.fs_type, p.node.display());
        }
    }
    if report.ok() {
        Ok(Exit::Ok)
    } else {
        Err(CodedError::new(
            Exit::Failed,
            "the images were written, but a check failed (fsck or a UUID/PARTUUID differs): see above",
        )
        .into())
    }
}
