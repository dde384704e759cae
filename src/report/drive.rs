//! `REPORT.html` on each drive, next to `backups/`: built only from the `backup.json` files the drive holds, so that
//! a drive found in a drawer explains itself (what it holds, from which machine, how to restore with and without
//! dbackup). An encrypted set's file names never appear (nor its sources): only its name, sizes and counts.
//!
//! Written like every drive write: only when `media/` says the drive is still the one detected, through a handle on
//! the drive's root (`stdx::fs::Dir`: nothing below it is followed), under a temporary name, then renamed over
//! `REPORT.html` (a symlink of that name is replaced, never written through).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};

use super::html::{self, ago, esc, shell_word, time};
use crate::external::layout::{self, BackupMeta, DriveListing};
use crate::stdx;
use crate::stdx::fs::Dir;

/// The page's name in the drive's root.
pub const FILE_NAME: &str = "REPORT.html";
const TEMP_PREFIX: &str = ".REPORT.html.tmp-";
/// At most this many backups are described (newest first); the others are counted.
const SHOWN: usize = 50;

/// The drive's page from its listing (`destination`: the name it was written for, when known), at `now`. `damaged`:
/// the backups whose files are not what their `backup.json` records, with why; they and the backups that depend on
/// them (broken chains) are marked.
pub fn render(
    destination: Option<&str>,
    listing: &DriveListing,
    damaged: &BTreeMap<String, String>,
    now: DateTime<FixedOffset>,
) -> String {
    let mut metas: Vec<&BackupMeta> = listing.verified().filter_map(|b| b.meta.as_ref()).collect();
    metas.reverse();
    let broken = crate::external::chain::broken(listing, damaged, "is damaged");
    // Why a backup cannot be restored whole, in words for the page.
    let bad = |stamp: &str| {
        damaged
            .get(stamp)
            .map(|why| format!("DAMAGED: {why}"))
            .or_else(|| broken.get(stamp).map(|why| format!("BROKEN: {why}")))
    };
    let mut b = String::new();
    let name = destination
        .map(str::to_string)
        .or_else(|| metas.first().map(|m| m.destination.clone()));
    let hosts: Vec<String> = {
        let mut h: Vec<String> = metas.iter().map(|m| m.host.clone()).collect();
        h.sort();
        h.dedup();
        h
    };
    let _ = write!(
        b,
        "<header class=\"verdict\">\n<h1>dbackup backups on this drive</h1>\n<p>"
    );
    match &name {
        Some(n) => {
            let _ = write!(b, "Backup drive <strong>{}</strong>", esc(n));
        }
        None => b.push_str("A backup drive"),
    }
    if !hosts.is_empty() {
        let _ = write!(b, " of <strong>{}</strong>", esc(&hosts.join(", ")));
    }
    match metas.first() {
        Some(newest) => {
            let _ = writeln!(
                b,
                ": {} in <code>backups/</code>, the newest made {} ({}).</p>",
                esc(&stdx::counted(
                    metas.len() as u64,
                    "verified backup",
                    "verified backups"
                )),
                time(newest.started),
                ago(newest.started, now)
            );
        }
        None => b.push_str(": no verified backup yet.</p>\n"),
    }
    let bad_count = metas.iter().filter(|m| bad(&m.stamp).is_some()).count();
    if bad_count > 0 {
        let _ = writeln!(
            b,
            "<p class=\"warn\">{} cannot be restored whole (damaged, or an incremental whose base is damaged or \
             gone): marked below.</p>",
            esc(&stdx::counted(bad_count as u64, "backup", "backups"))
        );
    }
    let unusable = listing.backups.iter().filter(|x| x.meta.is_none()).count();
    if unusable > 0 {
        let _ = writeln!(
            b,
            "<p class=\"warn\">{} in <code>backups/</code> without a usable <code>backup.json</code> (not counted, never used).</p>",
            esc(&stdx::counted(unusable as u64, "directory", "directories"))
        );
    }
    let _ = write!(
        b,
        "<p class=\"meta\">Written {} by dbackup {} from the <code>backup.json</code> of each backup; every backup \
         was read back from this drive and compared before it got its name.</p>\n</header>\n",
        time(now),
        env!("CARGO_PKG_VERSION")
    );

    // The backups.
    b.push_str("<section id=\"backups\">\n<h2>Backups</h2>\n<table>\n<thead><tr><th>Backup</th><th>Made</th>\
        <th>Sets</th><th>Size</th></tr></thead>\n<tbody>\n");
    for m in metas.iter().take(SHOWN) {
        let bytes = m.file_bytes_on_drive();
        let _ = write!(
            b,
            "<tr><td><code>backups/{}</code>{}</td><td>{}<br><span class=\"muted\">{}</span></td><td>",
            esc(&m.stamp),
            bad(&m.stamp)
                .map(|why| format!("<br><span class=\"warn\">{}</span>", esc(&why)))
                .unwrap_or_default(),
            time(m.started),
            ago(m.started, now)
        );
        sets_cell(&mut b, m);
        let _ = writeln!(
            b,
            "</td><td class=\"num\">{}</td></tr>",
            esc(&stdx::bytes(bytes))
        );
    }
    b.push_str("</tbody>\n</table>\n");
    if metas.len() > SHOWN {
        let _ = writeln!(
            b,
            "<p class=\"muted\">and {} older ones.</p>",
            metas.len() - SHOWN
        );
    }
    b.push_str("</section>\n");

    // How to restore.
    if let Some(newest) = metas.first() {
        restore(&mut b, newest, &metas, bad(&newest.stamp));
    }
    html::document(
        &format!(
            "dbackup drive{}",
            name.map(|n| format!(" {n}")).unwrap_or_default()
        ),
        now,
        0,
        None,
        &b,
    )
}

/// A backup's sets in its row of the table: each set's name, how it is encrypted or what it holds, its warnings.
fn sets_cell(b: &mut String, m: &BackupMeta) {
    for (i, s) in m.sets.iter().enumerate() {
        if i > 0 {
            b.push_str("<br>");
        }
        let _ = write!(b, "<strong>{}</strong> ", esc(&s.set));
        match &s.encryption {
            Some(e) => {
                let to = if e.passphrase {
                    "a passphrase".to_string()
                } else {
                    stdx::counted(e.recipients.len() as u64, "recipient", "recipients")
                };
                let _ = write!(
                    b,
                    "<span class=\"tag\">age</span> <span class=\"muted\">encrypted to {}; {}</span>",
                    esc(&to),
                    esc(&stdx::counted(s.files, "file", "files"))
                );
            }
            None => {
                let sources: Vec<String> = s
                    .sources
                    .iter()
                    .filter(|x| x.present)
                    .map(|x| x.path.display().to_string())
                    .collect();
                let _ = write!(
                    b,
                    "<span class=\"muted\">{}{}{}</span>",
                    esc(&stdx::counted(s.files, "file", "files")),
                    if sources.is_empty() { "" } else { " of " },
                    esc(&sources.join(", "))
                );
            }
        }
        if s.warning_count > 0 {
            let _ = write!(
                b,
                " <span class=\"warn\">{}</span>",
                esc(&stdx::counted(s.warning_count, "warning", "warnings"))
            );
        }
    }
}

/// The backups `set` of `m` is rebuilt from, oldest first, `m` last: its base, that one's base, ... as the drive's
/// `backup.json` files say (`Err`: the stamp of a base the drive does not hold).
fn chain<'a>(
    m: &'a BackupMeta,
    set: &str,
    metas: &[&'a BackupMeta],
) -> Result<Vec<&'a BackupMeta>, String> {
    let mut chain = vec![m];
    let mut at = m;
    // Each base is an older backup (`BackupMeta::check`); the bound holds even against a drive that says otherwise.
    while let Some(base) = at
        .sets
        .iter()
        .find(|s| s.set == set)
        .and_then(|s| s.base.as_ref())
    {
        if chain.len() > metas.len() {
            return Err(base.clone());
        }
        at = metas
            .iter()
            .find(|x| x.stamp == *base)
            .ok_or_else(|| base.clone())?;
        chain.push(at);
    }
    chain.reverse();
    Ok(chain)
}

/// The page's restore section for the newest backup `m` (`bad`: why it cannot be restored whole, said first).
fn restore(b: &mut String, m: &BackupMeta, metas: &[&BackupMeta], bad: Option<String>) {
    let stamp = shell_word(&m.stamp);
    b.push_str("<section id=\"restore\">\n<h2>Restore with dbackup</h2>\n");
    if let Some(why) = bad {
        let _ = writeln!(
            b,
            "<p class=\"warn\">The newest backup, <code>backups/{}</code>, is {}: its commands below fail or \
             restore only part of it; <code>dbackup restore --drive /media/you/DRIVE --list</code> shows the backups \
             that are whole, and <code>--date</code> picks one.</p>",
            esc(&m.stamp),
            esc(&why)
        );
    }
    b.push_str(
        "<p class=\"muted\">Mount the drive, then (with the drive's mount point for \
        <code>/media/you/DRIVE</code>):</p>\n<pre><code>",
    );
    let mut lines = vec![
        "# every backup on the drive".to_string(),
        "dbackup restore --drive /media/you/DRIVE --list".to_string(),
    ];
    for s in &m.sets {
        let set = shell_word(&s.set);
        let identity = match &s.encryption {
            Some(e) if !e.passphrase => " --identity ~/identity.txt",
            _ => "",
        };
        let paths: String = if s.encryption.is_some() {
            String::new()
        } else {
            s.sources
                .iter()
                .filter(|x| x.present)
                .map(|x| format!(" --path {}", shell_word(&x.path.display().to_string())))
                .collect()
        };
        lines.push(format!(
            "# set {} of the newest backup",
            crate::stdx::show_str(&s.set)
        ));
        lines.push(format!(
            "dbackup restore --drive /media/you/DRIVE --date {stamp} --set {set}{paths}{identity} --target ~/restored"
        ));
    }
    b.push_str(&code_lines(&lines));
    b.push_str("</code></pre>\n<h2>Restore without dbackup</h2>\n<p class=\"muted\">Each backup directory is plain \
        tar (encrypted ones: age), checkable with <code>sha256sum</code>:</p>\n<pre><code>");
    let mut lines = vec![
        format!("cd /media/you/DRIVE/backups/{stamp}"),
        "sha256sum -c verification.sha256".to_string(),
    ];
    // The older backups the commands extract too (the chains of incrementals): each checked by its own sums.
    let mut earlier: Vec<&str> = m
        .sets
        .iter()
        .filter(|s| s.base.is_some())
        .filter_map(|s| chain(m, &s.set, metas).ok())
        .flatten()
        .filter(|c| !std::ptr::eq(*c, m))
        .map(|c| c.stamp.as_str())
        .collect();
    earlier.sort_unstable();
    earlier.dedup();
    for e in earlier {
        lines.push(format!(
            "(cd {} && sha256sum -c verification.sha256)",
            shell_word(&format!("../{e}"))
        ));
    }
    lines.push("mkdir -p ~/restored".to_string());
    // One archive extracted: `dir` is where it is from the newest backup's directory ("" for that one).
    let extract = |dir: &str, s: &layout::SetRecord| {
        let split = s.archive.len() > 1;
        let encrypted = s.encryption.is_some();
        let file = shell_word(&format!("{dir}{}", layout::archive_name(&s.set, encrypted)));
        let decrypt = match &s.encryption {
            Some(e) if e.passphrase => "age -d",
            Some(_) => "age -d -i ~/identity.txt",
            None => "",
        };
        match (encrypted, split) {
            (true, true) => format!("cat {file}.part* | {decrypt} | tar -xpf - -C ~/restored"),
            (true, false) => format!("{decrypt} {file} | tar -xpf - -C ~/restored"),
            (false, true) => format!("cat {file}.part* | tar -xpf - -C ~/restored"),
            (false, false) => format!("tar -xpf {file} -C ~/restored"),
        }
    };
    for s in &m.sets {
        if s.base.is_none() {
            lines.push(extract("", s));
            continue;
        }
        // An incremental holds only what changed since its base: the set is its chain, extracted oldest first.
        let set = stdx::show_str(&s.set);
        match chain(m, &s.set, metas) {
            Ok(chain) => {
                lines.push(format!(
                    "# {set} is incremental: extract its chain, oldest first (files deleted in between come back \
                     too; docs/RESTORE.md, \"rebuild a chain\", removes them)"
                ));
                for c in chain {
                    let record = c.sets.iter().find(|x| x.set == s.set).unwrap_or(s);
                    let dir = if std::ptr::eq(c, m) {
                        String::new()
                    } else {
                        format!("../{}/", c.stamp)
                    };
                    lines.push(extract(&dir, record));
                }
            }
            Err(missing) => lines.push(format!(
                "# {set} is incremental on backup {}, which is not on this drive: restore it from an older full backup",
                stdx::show_str(&missing)
            )),
        }
    }
    b.push_str(&code_lines(&lines));
    b.push_str("</code></pre>\n</section>\n");
}

/// Lists the drive whose root is `root` and writes its page there (see the module documentation). The caller has
/// just checked, through `media/`, that the drive is present.
/// `known`: the stamps of backups found damaged otherwise (`restore --verify`), added to those whose files are not
/// their recorded size; only their stamps go on the page (what the check found can name an encrypted set's files).
pub fn refresh<'a>(
    root: &Path,
    destination: &str,
    known: impl IntoIterator<Item = &'a String>,
    now: DateTime<FixedOffset>,
) -> io::Result<PathBuf> {
    let backups = root.join(layout::BACKUPS_DIR);
    let listing = layout::list(&backups).map_err(io::Error::other)?;
    let mut damaged = layout::damaged_files(&backups, &listing);
    for stamp in known {
        damaged
            .entry(stamp.clone())
            .or_insert_with(|| "a check found it damaged (dbackup status says what)".to_string());
    }
    let page = render(Some(destination), &listing, &damaged, now);
    write(root, page.as_bytes())
}

/// `dbackup report --drive DIR`: the page of the drive at `dir` (its root, holding `backups/`, or its `backups/`
/// itself). Read only; a directory without `backups/` is a usage error (give the mount point).
pub fn page_for_dir(dir: &Path, now: DateTime<FixedOffset>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let backups: PathBuf = if dir.join(layout::BACKUPS_DIR).is_dir() {
        dir.join(layout::BACKUPS_DIR)
    } else {
        dir.to_path_buf()
    };
    let listing = layout::list(&backups)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot read the backups in {}", backups.display()))?;
    if !listing.exists {
        return Err(crate::exit::CodedError::new(
            crate::exit::Exit::Usage,
            format!(
                "{} holds no backups/ directory: give the drive's mount point",
                dir.display()
            ),
        )
        .into());
    }
    let damaged = layout::damaged_files(&backups, &listing);
    Ok(render(None, &listing, &damaged, now))
}

/// Writes `bytes` as `<root>/REPORT.html`: a new temporary file created in a handle on `root` (nothing below it
/// followed: `stdx::fs::Dir`), fsynced, renamed over the old page (a symlink of that name is replaced, not followed).
pub fn write(root: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let dir = Dir::open(root).map_err(io::Error::other)?;
    remove_stale_temporaries(&dir);
    let tmp = format!("{TEMP_PREFIX}{}", std::process::id());
    let _ = dir.unlink(&tmp);
    let result = (|| -> io::Result<()> {
        let mut f = dir.create_file(&tmp, 0o600).map_err(io::Error::other)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        dir.rename(&tmp, FILE_NAME, false).map_err(io::Error::other)
    })();
    if let Err(e) = result {
        let _ = dir.unlink(&tmp);
        return Err(e);
    }
    dir.fsync().map_err(io::Error::other)?;
    Ok(root.join(FILE_NAME))
}

/// Removes `.REPORT.html.tmp-<pid>` files of processes that no longer run (a run killed while writing the page).
fn remove_stale_temporaries(dir: &Dir) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, _) in entries {
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(crate::stdx::process_gone) {
            let _ = dir.unlink(&name);
        }
    }
}

/// Shell lines as the page's code block shows them, one per line, each escaped for HTML.
fn code_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| html::code(l))
        .collect::<Vec<_>>()
        .join("\n")
}
