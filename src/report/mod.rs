//! The status page: one self-contained HTML file that answers "are my backups good?" and, when not, what to do.
//!
//! The data is [`crate::status`]'s report with its history (`dbackup --json status --history N`, metadata only);
//! [`page::render`] is a pure renderer over it (inline CSS, inline SVG drawn in [`svg`], a few lines of script allowed
//! by hash in a strict Content-Security-Policy; readable with scripts off). Its headline is [`crate::status::verdict`],
//! the function `status --check` exits on. [`drive`] writes `REPORT.html` on a drive from its `backup.json` files
//! only; [`serve`] answers `dbackup serve`'s requests.
//!
//! Where the page goes: `dbackup report` (a file, or stdout), `$XDG_STATE_HOME/dbackup/report.html` after every
//! `backup`, `collect` and `external` run ([`refresh_local`]; `report.write`/`report.path` in the config), each
//! drive's `REPORT.html` after the external phase wrote to it (`report.drives`), and `dbackup serve`.

pub mod drive;
pub mod html;
pub mod page;
pub mod serve;
pub mod svg;

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, FixedOffset};

use crate::settings::Settings;
use crate::status::{self, Look, StatusReport};

/// The report with its history at `now`, looking at the drives as `look` says (never with the probe: `Read` or
/// `Skip`).
pub fn gather(
    settings: &Settings,
    now: DateTime<FixedOffset>,
    history: usize,
    look: Look,
) -> StatusReport {
    let look = if look == Look::Probe {
        Look::Read
    } else {
        look
    };
    let facts = status::gather_for(settings, look, history);
    status::build(&facts, settings, now)
}

/// The page for `settings` at `now`.
pub fn page(settings: &Settings, now: DateTime<FixedOffset>, look: Look) -> String {
    page::render(&gather(settings, now, settings.report.history, look))
}

/// Writes `html` to `path` (its directory created owner-only when missing) under a temporary name renamed into place.
pub fn write_file(path: &Path, html: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::stdx::fs::create_private_dir(dir).with_context(|| {
            format!(
                "cannot write the status page {}: cannot create {}",
                path.display(),
                dir.display()
            )
        })?;
    }
    crate::snapshot::write_atomic(path, html.as_bytes(), 0o600).map_err(|e| {
        let why = match &e {
            crate::snapshot::SnapshotError::Io { source, .. } => crate::stdx::fs::message(source),
            other => other.to_string(),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        anyhow::anyhow!(
            "cannot write the status page {}: {why}; let this user write to {}, or write the page elsewhere \
             (--out, report.path)",
            path.display(),
            dir.display()
        )
    })
}

/// After a run: regenerates the page at `report.path` (unless `report.write` is off), looking at the drives as
/// `look` says (`backup` does not look at them when `schedule.external` is manual). Returns where it went; a failure
/// is the caller's warning, never a failure of the run.
pub fn refresh_local(settings: &Settings, look: Look) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = &settings.report.path else {
        return Ok(None);
    };
    let now = chrono::Local::now().fixed_offset();
    write_file(path, &page(settings, now, look))?;
    Ok(Some(path.clone()))
}
