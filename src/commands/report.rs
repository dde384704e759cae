//! `dbackup report`: the status page ([`crate::report`]) written to a file (`--out`, default `report.path`) or stdout
//! (`--out -`); `--json` prints the data it is drawn from; `--drive DIR` the page a drive's `REPORT.html` holds.
//!
//! stdout: the path written (or the page, or the JSON). Exit 0; 1 when the page cannot be written; 2 for a bad
//! config or arguments. A dry run says where the page would go and writes nothing.

use std::path::{Path, PathBuf};

use chrono::Local;

use crate::cli::{GlobalArgs, ReportArgs};
use crate::exit::{CodedError, Exit};
use crate::report;
use crate::settings::Output;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: ReportArgs) -> anyhow::Result<Exit> {
    let now = args.now.unwrap_or_else(|| Local::now().fixed_offset());
    if let Some(dir) = &args.drive {
        return drive(global, &args, dir, now);
    }
    let settings = super::load_settings(global)?;
    let ui = Ui::new(&settings.output);
    let history = args.history.map_or(settings.report.history, |h| h as usize);
    let data = report::gather(&settings, now, history, crate::status::Look::Read);
    if global.json {
        super::print_json(&data)?;
        return Ok(Exit::Ok);
    }
    // At the default path every config of this user shares, a page another config drew is left to it.
    let (out, shared) = match (&args.out, &settings.report.path) {
        (Some(p), _) => (p.clone(), false),
        (None, Some(p)) => (p.clone(), settings.report.shared),
        (None, None) => {
            return Err(CodedError::new(
                Exit::Usage,
                "report.write is false in the config, so there is no default place for the page; give one with \
                 --out FILE (or --out - for stdout)",
            )
            .into());
        }
    };
    let shared_by = shared.then_some(settings.backup_root.as_path());
    emit(
        &settings.output,
        &ui,
        &out,
        shared_by,
        &report::page::render(&data),
    )
}

/// Writes the page to `out` (`-`: stdout), or says where on a dry run. `shared_by`: see [`report::write_page`].
fn emit(
    output: &Output,
    ui: &Ui,
    out: &Path,
    shared_by: Option<&Path>,
    html: &str,
) -> anyhow::Result<Exit> {
    if out == Path::new("-") {
        crate::out!("{html}");
        return Ok(Exit::Ok);
    }
    if let Some(root) = shared_by {
        report::whose(out, root)?;
    }
    if output.dry_run {
        ui.info(format_args!(
            "dry run: would write the status page ({} bytes) to {}",
            html.len(),
            out.display()
        ));
        return Ok(Exit::Ok);
    }
    // A signal while the page is written removes its temporary, instead of killing the process beside it.
    super::catch_signals(ui);
    report::write_page(out, shared_by, html)?;
    crate::outln!("{}", out.display());
    Ok(Exit::Ok)
}

/// `--drive DIR`: DIR is the drive's root (holding `backups/`) or its `backups/` itself. Read only.
fn drive(
    global: &GlobalArgs,
    args: &ReportArgs,
    dir: &Path,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> anyhow::Result<Exit> {
    let output = super::output(global);
    let ui = Ui::new(&output);
    if global.json {
        return Err(CodedError::new(
            Exit::Usage,
            "--json prints the data of the status page; a drive's page has none beyond its backup.json files",
        )
        .into());
    }
    let html = report::drive::page_for_dir(dir, now)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("-"));
    emit(&output, &ui, &out, None, &html)
}
