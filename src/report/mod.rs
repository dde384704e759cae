//! The status page: one self-contained HTML file that answers "are my backups good?" and, when not, what to do.
//!
//! The data is [`crate::status`]'s report with its history (`dbackup --json status --history N`, metadata only);
//! [`page::render`] is a pure renderer over it (inline CSS, inline SVG drawn in [`svg`], a few lines of script allowed
//! by hash in a strict Content-Security-Policy; readable with scripts off). Its headline is [`crate::status::verdict`],
//! the function `status --check` exits on. [`drive`] writes `REPORT.html` on a drive from its `backup.json` files
//! only; [`serve`] answers `dbackup serve`'s requests.
//!
//! Where the page goes: `dbackup report` (a file, or stdout), `$XDG_STATE_HOME/dbackup/report.html` after every
//! `backup`, `collect` and `external` run ([`refresh_local`]; `report.write`/`report.path` in the config; the page
//! records the backup root it was drawn for, and at that default path, which every config of the user shares, one
//! config never replaces another's page: [`write_page`]), each
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

/// A status page at the default path (the state directory every config of this user shares) that another config
/// drew: it is left to that config.
#[derive(Debug, thiserror::Error)]
#[error(
    "the status page at {} is another config's (backup root {}); set report.path in this config to have its own",
    .path.display(),
    crate::stdx::show_str(.root)
)]
pub struct AnotherConfigsPage {
    pub path: PathBuf,
    /// The backup root the page records it was drawn for.
    pub root: String,
}

/// How much of a page is read to find the backup root it records (in its head, before the style: a root is at most
/// `PATH_MAX` bytes, 6 times that escaped).
const HEAD: u64 = 64 << 10;

/// `Err` when the page at `path` records that it was drawn for another config than the one whose backup root is
/// `root` (see [`crate::runlog::names_root`]). A page that records none (an older version's), is missing or cannot
/// be read is nobody else's.
pub fn whose(path: &Path, root: &Path) -> Result<(), AnotherConfigsPage> {
    use std::io::Read as _;
    let Ok(file) = crate::stdx::fs::open_regular(path) else {
        return Ok(());
    };
    let mut head = Vec::new();
    if file.take(HEAD).read_to_end(&mut head).is_err() {
        return Ok(());
    }
    match html::drawn_for(&String::from_utf8_lossy(&head)) {
        Some(drawn) if !crate::runlog::names_root(Some(&drawn), root) => Err(AnotherConfigsPage {
            path: path.to_path_buf(),
            root: drawn,
        }),
        _ => Ok(()),
    }
}

/// Writes the page `html` to `path`. `shared_by`: the backup root of this config when `path` is the default path
/// every config of this user shares; a page another config drew there is then left to it ([`AnotherConfigsPage`]),
/// looked at and replaced while holding the page's lock ([`crate::stdx::locked`]), so two configs ending at once
/// cannot both take it. A page of an older version (no root recorded) is replaced.
pub fn write_page(path: &Path, shared_by: Option<&Path>, html: &str) -> anyhow::Result<()> {
    let Some(root) = shared_by else {
        return write_file(path, html);
    };
    make_dir(path)?;
    crate::stdx::locked::change(path, || {
        Ok(whose(path, root)
            .map_err(anyhow::Error::from)
            .and_then(|()| write_file(path, html)))
    })?
}

/// Creates the directory of the page at `path` (owner-only) when it is missing.
fn make_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::stdx::fs::create_private_dir(dir).with_context(|| {
            format!(
                "cannot write the status page {}: cannot create {}",
                path.display(),
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Writes `html` to `path` (its directory created owner-only when missing) under a temporary name renamed into place.
/// A SIGINT or SIGTERM caught while it is written (`report --out`) removes the temporary and is the error
/// ([`crate::stdx::fs::complete_temp`]); a run already interrupted still leaves its page.
pub fn write_file(path: &Path, html: &str) -> anyhow::Result<()> {
    make_dir(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        ".{}.tmp-",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let temporary = if crate::interrupt::requested().is_some() {
        crate::stdx::fs::written_temp(dir, &prefix, 0o600, html)
    } else {
        crate::stdx::fs::complete_temp(dir, &prefix, 0o600, html)
    };
    let placed = temporary.and_then(|tmp| {
        tmp.persist(path)?;
        crate::snapshot::fsync_dir(dir)?;
        Ok(())
    });
    placed.map_err(|e| {
        if e.is::<crate::interrupt::Interrupted>() {
            return e;
        }
        let why = e
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .map_or_else(|| e.to_string(), crate::stdx::fs::message);
        anyhow::anyhow!(
            "cannot write the status page {}: {why}; let this user write to {}, or write the page elsewhere \
             (--out, report.path)",
            path.display(),
            dir.display()
        )
    })
}

/// After a run: regenerates the page at `report.path` (unless `report.write` is off), looking at the drives as
/// `look` says (`backup` does not look at them when `schedule.external` is manual); at the default path, only when
/// no other config drew the page there ([`write_page`]). Returns where it went; a failure is the caller's warning,
/// never a failure of the run.
pub fn refresh_local(settings: &Settings, look: Look) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = &settings.report.path else {
        return Ok(None);
    };
    let now = chrono::Local::now().fixed_offset();
    let shared_by = settings
        .report
        .shared
        .then_some(settings.backup_root.as_path());
    write_page(path, shared_by, &page(settings, now, look))?;
    Ok(Some(path.clone()))
}
