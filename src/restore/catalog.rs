//! Finding backups to restore from: the local snapshots under the backup root (every set, configured or only found
//! there), and the drives (the configured destinations that [`crate::media`] finds present, or a directory named with
//! `--drive`) with the backups on them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::drive::{self, DriveBackup, DriveListing};
use crate::external::layout;
use crate::media::{self, Presence};
use crate::settings::Settings;
use crate::snapshot::{self, Snapshot};
use crate::stdx::fs::Dir;

/// `--set NAME` for a set that neither the config, the backup root nor the backups read (`held`) know of: a usage
/// error (2), as `collect --set` gives one, naming the sets there are. A set that is gone from the config but still
/// in a backup is not unknown: it can still be listed and restored.
pub fn check_set_named(
    settings: &Settings,
    set: Option<&str>,
    held: &[&str],
) -> Result<(), crate::exit::CodedError> {
    let Some(set) = set else { return Ok(()) };
    let mut names = local_set_names(settings);
    if names.iter().any(|n| n == set) || held.contains(&set) {
        return Ok(());
    }
    for h in held {
        let h = crate::stdx::show_str(h);
        if !names.contains(&h) {
            names.push(h);
        }
    }
    Err(crate::exit::CodedError::new(
        crate::exit::Exit::Usage,
        format!(
            "there is no backup set named {set:?}; the config and the backups have: {}",
            names.join(", ")
        ),
    ))
}

/// The set names with snapshots (or configured) in the backup root: the config's, then any other `<set>-<stamp>`
/// directory's, sorted.
pub fn local_set_names(settings: &Settings) -> Vec<String> {
    let mut names: Vec<String> = settings.sets.iter().map(|s| s.name.clone()).collect();
    let mut found = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(&settings.backup_root) {
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if n.starts_with('.') {
                continue;
            }
            if let Some((set, _)) = snapshot::split_snapshot_name(&n)
                && crate::settings::is_safe_name(set)
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                found.insert(set.to_string());
            }
        }
    }
    for f in found {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    names
}

/// Every local snapshot of `sets`, oldest first within each set.
pub fn local_snapshots(root: &Path, sets: &[String]) -> anyhow::Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    for set in sets {
        out.extend(snapshot::list(root, set)?);
    }
    Ok(out)
}

/// A place backups on a drive were looked for.
#[derive(Debug, Clone, Serialize)]
pub struct Drive {
    /// The destination's name (`--drive` for a directory given on the command line).
    pub name: String,
    /// As configured (or given).
    pub path: PathBuf,
    /// The `backups/` directory read, when the drive is there.
    pub backups_dir: Option<PathBuf>,
    /// Why it was not read.
    pub absent: Option<String>,
    #[serde(skip)]
    pub listing: DriveListing,
    /// With `--drive` pointing at one backup's directory: only that one.
    pub only: Option<String>,
    /// The backups on it left out because the user cannot read them, one line each saying which and why
    /// ([`passed_over`]).
    #[serde(skip)]
    pub passed_over: Vec<String>,
}

impl Drive {
    pub fn present(&self) -> bool {
        self.backups_dir.is_some()
    }

    /// The configured destination this drive is: its own name, or for a directory given with `--drive`, the
    /// destination present whose `backups/` it is (what `--verify` found is then remembered for that destination, as
    /// with `--source external`); `None` for a directory that is no destination of this config.
    pub fn destination(&self, settings: &Settings) -> Option<String> {
        if self.name != "--drive" {
            return Some(self.name.clone());
        }
        let read = std::fs::canonicalize(self.backups_dir.as_ref()?).ok()?;
        settings
            .destinations
            .iter()
            .find(|dest| match media::detect_for_reading(dest) {
                Presence::Present(info) => {
                    std::fs::canonicalize(info.resolved.join(drive::BACKUPS_DIR))
                        .is_ok_and(|b| b == read)
                }
                Presence::Absent(_) => false,
            })
            .map(|dest| dest.name.clone())
    }

    /// The backups that can be restored from: not being written, and (when `only` is set) the one named.
    pub fn backups(&self) -> impl Iterator<Item = &DriveBackup> {
        self.listing
            .backups
            .iter()
            .filter(|b| !b.in_progress && self.only.as_ref().is_none_or(|o| *o == b.dir.name))
    }
}

/// The drives to read: `explicit` (`--drive DIR`) alone when given, else every configured destination, with its
/// presence decided by [`media::detect_for_reading`] (a read-only or full drive is read all the same, and nothing is
/// written to any drive, not even detection's probe).
pub fn drives(settings: &Settings, explicit: Option<&Path>) -> anyhow::Result<Vec<Drive>> {
    drives_with(settings, explicit, false)
}

/// [`drives`], with the backups of partition images only listed too when `images_only` ([`drive::list_with`]).
pub fn drives_with(
    settings: &Settings,
    explicit: Option<&Path>,
    images_only: bool,
) -> anyhow::Result<Vec<Drive>> {
    let mut out = Vec::new();
    if let Some(dir) = explicit {
        let (backups_dir, only) = drive::backups_dir_of(dir);
        // A drive's own `backups` is opened as dbackup opens it on a destination (never through a symlink, never on
        // another filesystem); a directory named directly is the user's choice.
        let opened = if backups_dir == dir.join(drive::BACKUPS_DIR) {
            layout::open_backups_at(dir).map_err(|e| e.to_string())
        } else {
            match Dir::open(&backups_dir) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        let opened = opened.map_err(|e| {
            anyhow::anyhow!("cannot list the backups in {}: {e}", backups_dir.display())
        })?;
        let (present, absent) = match &opened {
            Some(_) => (Some(backups_dir), None),
            None => (
                None,
                Some(format!("{} is not a directory", backups_dir.display())),
            ),
        };
        let (listing, passed_over) = match &opened {
            Some(d) => {
                let listing = drive::list_with(d, images_only).map_err(|e| {
                    anyhow::anyhow!("cannot list the backups in {}: {e}", d.path().display())
                })?;
                let passed_over = readable(d, &listing)?;
                (listing, passed_over)
            }
            None => (DriveListing::default(), Vec::new()),
        };
        out.push(Drive {
            name: "--drive".into(),
            path: dir.to_path_buf(),
            backups_dir: present,
            absent,
            listing,
            only,
            passed_over,
        });
        return Ok(out);
    }
    for dest in &settings.destinations {
        let root = match media::detect_for_reading(dest) {
            Presence::Present(info) => Ok(info.resolved),
            Presence::Absent(why) => Err(why.to_string()),
        };
        let mut drive = Drive {
            name: dest.name.clone(),
            path: dest.path.clone(),
            backups_dir: None,
            absent: None,
            listing: DriveListing::default(),
            only: None,
            passed_over: Vec::new(),
        };
        match root {
            Ok(root) => {
                let dir = root.join(drive::BACKUPS_DIR);
                let listed = layout::open_backups_at(&root)
                    .map_err(|e| e.to_string())
                    .and_then(|b| match b {
                        Some(b) => {
                            let l = drive::list_with(&b, images_only).map_err(|e| e.to_string())?;
                            Ok((readable(&b, &l), l))
                        }
                        None => Ok((Ok(Vec::new()), DriveListing::default())),
                    });
                match listed {
                    Ok((readable, l)) => {
                        drive.passed_over = readable?;
                        drive.listing = l;
                        drive.backups_dir = Some(dir);
                    }
                    Err(e) => drive.absent = Some(format!("cannot list {}: {e}", dir.display())),
                }
            }
            Err(why) => drive.absent = Some(why),
        }
        out.push(drive);
    }
    // Highest priority first (stable: config order on ties), so that a backup on two drives is read from the first.
    let prio = |name: &str| {
        settings
            .destinations
            .iter()
            .find(|d| d.name == name)
            .map_or(0, |d| d.priority)
    };
    out.sort_by_key(|d| std::cmp::Reverse(prio(&d.name)));
    Ok(out)
}

/// Fails when the user running may open none of the backups in `backups` (the drive root wrote on a Linux
/// filesystem), saying so and what to do, rather than that there are none. Among readable ones, those the user may
/// not open are passed over: one line each, which and why.
fn readable(backups: &Dir, listing: &DriveListing) -> anyhow::Result<Vec<String>> {
    let denied = drive::unreadable(backups);
    if !listing.backups.is_empty() {
        let dir = crate::stdx::show_path(backups.path());
        return Ok(denied
            .iter()
            .map(|name| {
                format!(
                    "backup {} in {dir} was passed over: it is not readable by you (permission denied: a drive \
                     written by root on a Linux filesystem keeps it root's, mode 0700); run the same command as \
                     root (sudo dbackup ...) to read it",
                    crate::stdx::show_str(name)
                )
            })
            .collect());
    }
    let Some(first) = denied.first() else {
        return Ok(Vec::new());
    };
    let named = match denied.len() {
        1 => format!("backup {first} is"),
        2 => format!("2 of them ({first}, {}) are", denied[1]),
        n => format!("{n} of them ({first}, ..., {}) are", denied[n - 1]),
    };
    anyhow::bail!(
        "cannot read the backups in {}: {named} not readable by you (permission denied: a drive written by root \
         on a Linux filesystem keeps them root's, mode 0700); run the same command as root (sudo dbackup ...)",
        crate::stdx::show_path(backups.path())
    )
}

/// The lines saying which backups on `drives` were passed over, and why ([`Drive::passed_over`]).
pub fn passed_over(drives: &[Drive]) -> impl Iterator<Item = &String> {
    drives.iter().flat_map(|d| &d.passed_over)
}

/// The exit-5 message when no drive can be read.
pub fn no_drive_message(drives: &[Drive]) -> String {
    if drives.is_empty() {
        return "no external destination is configured; add one to \"destinations\" in the config, or point at \
                the drive with --drive /media/you/T9"
            .into();
    }
    let mut msg = String::from("no external destination present:");
    for d in drives {
        msg.push_str(&format!(
            "\n  {}: {}",
            d.name,
            d.absent.as_deref().unwrap_or("present")
        ));
    }
    msg.push_str("\nplug in the drive, or point at it with --drive DIR");
    msg
}

/// A backup on some drive, as candidates for `--date`: every restorable backup of every present drive, a stamp
/// present on several drives taken from the first (highest priority).
pub fn drive_backups(drives: &[Drive]) -> Vec<(&Drive, &DriveBackup)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for d in drives.iter().filter(|d| d.present()) {
        for b in d.backups() {
            if seen.insert(b.dir.name.clone()) {
                out.push((d, b));
            }
        }
    }
    out.sort_by(|a, b| {
        a.1.dir
            .time
            .cmp(&b.1.dir.time)
            .then_with(|| a.1.dir.name.cmp(&b.1.dir.name))
    });
    out
}
