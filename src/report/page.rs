//! The status page: a pure rendering of a [`StatusReport`] with its history (what `dbackup --json status --history
//! N` prints). The headline is [`status::verdict`], the function `status --check` exits on.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};

use super::html::{self, ago, attr, esc, shell_word, time, when};
use super::svg;
use crate::schedule::Phase;
use crate::status::history::{History, RunOutcome, SetTrend};
use crate::status::{self, DestinationStatus, KnownFrom, SetStatus, StatusReport};
use crate::stdx;

/// How many restore dates are offered per set.
const RESTORE_DATES: usize = 3;

/// One item per place that could not be looked at: what, and why (the error says what to do).
fn unseen_items(b: &mut String, verdict: &status::Verdict) {
    for u in &verdict.unseen {
        let _ = writeln!(
            b,
            "<li><strong>{}</strong>: <span class=\"muted\">{}</span></li>",
            esc(&format!("{} could not be looked at", u.what)),
            esc(&u.why)
        );
    }
}

/// The page for `r` (its `history`, when present, adds the trends, the run strip and the restore commands).
pub fn render(r: &StatusReport) -> String {
    let verdict = status::verdict(r);
    let host = r.history.as_ref().map(|h| h.host.as_str()).unwrap_or("");
    let mut b = String::new();

    // The verdict.
    let _ = writeln!(
        b,
        "<header class=\"verdict{}\" id=\"verdict\">",
        if verdict.ok { "" } else { " attention" }
    );
    if verdict.ok {
        b.push_str("<h1 class=\"ok\">Backups are good</h1>\n<p>Nothing is overdue and the last run did not fail.</p>\n");
    } else if verdict.problems.is_empty() {
        let _ = writeln!(
            b,
            "<h1 class=\"bad\">Cannot tell whether the backups are good</h1>\n<p>{} could not be looked \
             at.</p>\n<ul>",
            esc(&verdict.unseen_names())
        );
        unseen_items(&mut b, &verdict);
        b.push_str("</ul>\n");
    } else {
        let n = verdict.problems.len();
        let _ = writeln!(
            b,
            "<h1 class=\"bad\">Attention: {}</h1>\n<ul>",
            esc(&stdx::counted(n as u64, "problem", "problems"))
        );
        for o in &r.overdue {
            let plugged_in = drives_here(r, o.subject.as_deref());
            let hint = match o.phase {
                Phase::Collect => "run <code>dbackup backup</code>, and check that its timer runs".to_string(),
                Phase::External if to_a_bucket(r, o.subject.as_deref()) => {
                    "run <code>dbackup backup</code>, and <code>dbackup status</code> to look at the bucket"
                        .to_string()
                }
                Phase::External if !plugged_in.is_empty() => format!(
                    "{} {} plugged in: run <code>dbackup backup</code>, and <code>dbackup status</code> for why \
                     nothing was written",
                    esc(&plugged_in.join(", ")),
                    if plugged_in.len() == 1 { "is" } else { "are" }
                ),
                Phase::External => {
                    "plug in a backup drive: the copy starts by itself (or run <code>dbackup backup</code>)"
                        .to_string()
                }
            };
            let _ = writeln!(
                b,
                "<li><strong>{}</strong>: <span class=\"muted\">{hint}</span></li>",
                esc(&o.message)
            );
        }
        if let Some(l) = r.last_run.as_ref().filter(|l| l.failed) {
            let _ = write!(
                b,
                "<li><strong>{}</strong>",
                esc(&format!("the last run ({}) failed", l.command))
            );
            if let Some(e) = &l.error {
                let _ = write!(b, ": <code>{}</code>", esc(e.lines().next().unwrap_or("")));
            }
            b.push_str(
                " <span class=\"muted\">see <code>dbackup status</code> and the run log; the next run tries again</span></li>\n",
            );
        }
        for f in status::failed_backups(&r.destinations, &r.clouds) {
            let _ = writeln!(
                b,
                "<li><strong>{}</strong> <span class=\"muted\">see <code>dbackup status</code> and the run log; the \
                 next backup there tries again</span></li>",
                html::code(&f)
            );
        }
        // A drive's new backup needs the drive plugged in; a bucket's, a run.
        let drives = (status::backup_problems(&r.destinations, &[], false).into_iter())
            .map(|p| (p, "plug in the drive and run"));
        let buckets =
            (status::backup_problems(&[], &r.clouds, false).into_iter()).map(|p| (p, "run"));
        for (p, hint) in drives.chain(buckets) {
            let _ = writeln!(
                b,
                "<li><strong>{}</strong> <span class=\"muted\">{hint} <code>dbackup external</code> for a new \
                 backup</span></li>",
                esc(&p)
            );
        }
        unseen_items(&mut b, &verdict);
        b.push_str("</ul>\n");
    }
    if let Some(basis) = clouds_basis(r) {
        let _ = writeln!(b, "<p>{basis}</p>");
    }
    let _ = write!(b, "<p class=\"meta\">");
    if !host.is_empty() {
        let _ = write!(b, "{} · ", esc(host));
    }
    let _ = writeln!(
        b,
        "backup root {} · as of {} · schedule: collect {}, compare contents {}, external {}</p>",
        esc(&r.backup_root.display().to_string()),
        time(r.now),
        esc(&word(&r.schedule.incremental)),
        esc(&word(&r.schedule.full)),
        esc(&word(&r.schedule.external))
    );
    if let Some(pid) = r.running {
        let _ = writeln!(
            b,
            "<p class=\"warn\">A dbackup run is in progress (pid {pid}).</p>"
        );
    }
    b.push_str("</header>\n");

    sets(&mut b, r);
    destinations(&mut b, r);
    clouds(&mut b, r);
    runs(&mut b, r);
    if let Some(h) = &r.history {
        restore(&mut b, h);
    }

    // Footer: where the data came from.
    let _ = writeln!(
        b,
        "<footer><p>Backup root {}{}. Made by dbackup {} from <code>dbackup --json status --history {}</code> (metadata \
         only{}). This page loads nothing and sends nothing.</p></footer>",
        esc(&r.backup_root.display().to_string()),
        match (r.root_free_bytes, r.root_total_bytes) {
            (Some(f), Some(t)) => esc(&format!(": {} free of {}", stdx::bytes(f), stdx::bytes(t))),
            _ if !r.root_exists => " (does not exist yet)".to_string(),
            _ => String::new(),
        },
        env!("CARGO_PKG_VERSION"),
        r.history.as_ref().map_or(0, |h| h.limit),
        if r.clouds.iter().any(|c| c.not_looked_at) {
            "; the cloud destinations from the run log, not listed"
        } else {
            ""
        },
    );

    let title = if verdict.ok {
        "dbackup: OK".to_string()
    } else if verdict.problems.is_empty() {
        "dbackup: UNKNOWN".to_string()
    } else {
        format!("dbackup: ATTENTION ({})", verdict.problems.len())
    };
    let title = if host.is_empty() {
        title
    } else {
        format!("{title} · {host}")
    };
    let stale = r.history.as_ref().map_or(0, |h| h.stale_after_seconds);
    let root = crate::runlog::root_name(&r.backup_root);
    html::document(&title, r.now, stale, Some(&root), &b)
}

fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn trend<'a>(r: &'a StatusReport, set: &str) -> Option<&'a SetTrend> {
    r.history.as_ref()?.sets.iter().find(|t| t.set == set)
}

fn sets(b: &mut String, r: &StatusReport) {
    b.push_str("<section id=\"sets\">\n<h2>Sets</h2>\n<table>\n<thead><tr><th>Set</th><th>Last good snapshot</th>\
        <th>Age</th><th>Failures since</th><th>Next</th><th>Restore points</th><th>New bytes per snapshot</th></tr></thead>\n<tbody>\n");
    for s in &r.sets {
        set_row(b, r, s);
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
}

// Stays long: one table row, cell after cell in the order the page shows them.
fn set_row(b: &mut String, r: &StatusReport, s: &SetStatus) {
    let t = trend(r, &s.set);
    let good = s.newest_complete.as_ref().or(s
        .newest
        .as_ref()
        .filter(|n| n.state == crate::snapshot::SnapshotState::Complete));
    let overdue = r
        .overdue
        .iter()
        .any(|o| o.phase == Phase::Collect && o.subject.as_deref() == Some(s.set.as_str()));
    let _ = write!(
        b,
        "<tr id=\"set-{}\"><td><strong>{}</strong></td>",
        attr(&s.set),
        esc(&s.set)
    );
    // Last good snapshot.
    match good {
        Some(g) => {
            let _ = write!(
                b,
                "<td>{}<br><span class=\"muted\">{}",
                time(g.time),
                esc(&g.name)
            );
            if g.full {
                b.push_str(", contents compared");
            }
            b.push_str("</span>");
        }
        None if s.unseen => b.push_str("<td>unknown"),
        None => b.push_str("<td><span class=\"bad\">none</span>"),
    }
    if let Some(n) = s
        .newest
        .as_ref()
        .filter(|n| n.state != crate::snapshot::SnapshotState::Complete)
    {
        let _ = write!(
            b,
            "<br><span class=\"warn\">newer: {} is incomplete ({} unreadable)</span>",
            esc(&n.name),
            esc(&stdx::counted(n.unreadable, "file", "files"))
        );
    }
    b.push_str("</td>");
    // Age against the overdue threshold.
    match (good, t) {
        (Some(g), Some(t)) => {
            let limit = t.overdue_after_seconds as f64;
            let class = if overdue {
                "over"
            } else if t.due {
                "due"
            } else {
                "bar"
            };
            let _ = write!(
                b,
                "<td class=\"{}\">{}<br>{}</td>",
                if overdue { "bad" } else { "" },
                ago(g.time, r.now),
                svg::meter(
                    g.age_seconds as f64,
                    limit * 1.5,
                    class,
                    Some(limit),
                    &format!(
                        "{} old; overdue after {}",
                        stdx::age_words(chrono::TimeDelta::seconds(g.age_seconds)),
                        stdx::age_words(chrono::TimeDelta::seconds(t.overdue_after_seconds))
                    )
                )
            );
        }
        (Some(g), None) => {
            let _ = write!(b, "<td>{}</td>", ago(g.time, r.now));
        }
        (None, _) => b.push_str("<td class=\"bad\">-</td>"),
    }
    // Failures since the last good one.
    match t {
        Some(t) if !t.failures.is_empty() => {
            let _ = write!(b, "<td class=\"bad\"><strong>{}</strong>", t.failures.len());
            for f in t.failures.iter().take(3) {
                let _ = write!(
                    b,
                    "<br><span class=\"muted\">{} {}: {}</span>",
                    esc(&f.command),
                    esc(&when(f.finished)),
                    esc(&f.message)
                );
            }
            b.push_str("</td>");
        }
        Some(_) => b.push_str("<td class=\"ok\">none</td>"),
        None => b.push_str("<td>-</td>"),
    }
    // Next.
    let due = r.due.sets.iter().find(|d| d.set == s.set);
    match due {
        Some(d) if d.collect => {
            let _ = write!(
                b,
                "<td class=\"warn\">due now<br><span class=\"muted\">{}</span></td>",
                esc(&d.reason)
            );
        }
        Some(d) => match d.next {
            Some(n) => {
                let _ = write!(
                    b,
                    "<td>{}<br><span class=\"muted\">in {}</span></td>",
                    time(n),
                    esc(&stdx::age_words(n.signed_duration_since(r.now)))
                );
            }
            None => b.push_str("<td>-</td>"),
        },
        None => b.push_str("<td>-</td>"),
    }
    // Restore points.
    match t {
        Some(t) => {
            let _ = write!(
                b,
                "<td class=\"num\">{} local<br>{} on drives here</td>",
                t.local_restore_points, t.drive_restore_points
            );
        }
        None => {
            let _ = write!(b, "<td class=\"num\">{} local</td>", s.snapshots);
        }
    }
    // New bytes.
    match t.filter(|t| !t.snapshots.is_empty()) {
        Some(t) => {
            let newest = &t.snapshots[0];
            let outliers = t.snapshots.iter().filter(|p| p.outlier).count();
            let _ = write!(
                b,
                "<td>{}<br><span class=\"muted\">newest: {} new of {}</span>",
                svg::sparkline(&t.snapshots),
                esc(&stdx::bytes(newest.copied_bytes)),
                esc(&stdx::bytes(newest.bytes))
            );
            if outliers > 0 {
                let _ = write!(
                    b,
                    "<br><span class=\"bad\">{} far above the usual</span>",
                    esc(&stdx::counted(outliers as u64, "snapshot", "snapshots"))
                );
            }
            b.push_str("</td>");
        }
        None => b.push_str("<td>-</td>"),
    }
    b.push_str("</tr>\n");
}

/// Whether what is overdue about `subject` (a destination; none: the external phase) is to be written to a bucket:
/// a cloud destination's, or the phase's when no drive is configured.
fn to_a_bucket(r: &StatusReport, subject: Option<&str>) -> bool {
    match subject {
        Some(s) => r.clouds.iter().any(|c| c.name == s),
        None => r.destinations.is_empty(),
    }
}

/// The drives plugged in that what is overdue about `subject` (a drive; none: the external phase) could be written
/// to.
fn drives_here<'a>(r: &'a StatusReport, subject: Option<&str>) -> Vec<&'a str> {
    r.destinations
        .iter()
        .filter(|d| d.present && subject.is_none_or(|s| s == d.name))
        .map(|d| d.name.as_str())
        .collect()
}

/// What the page knows of the buckets it did not look at, and from when: "Cloud destination offsite: as of the
/// last run at ...". None when every cloud destination was looked at (or there is none).
fn clouds_basis(r: &StatusReport) -> Option<String> {
    let names: Vec<&str> = r
        .clouds
        .iter()
        .filter(|c| c.not_looked_at)
        .map(|c| c.name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    let when = match &r.last_run {
        Some(l) => format!("as of the last run at {}", time(l.finished)),
        None => "as the run log says (no run recorded)".to_string(),
    };
    Some(format!(
        "{} {}: {when}. This page does not list buckets; <code>dbackup status</code> does.",
        if names.len() == 1 {
            "Cloud destination"
        } else {
            "Cloud destinations"
        },
        esc(&names.join(", "))
    ))
}

/// "External copy: why; next when."
fn external_line(b: &mut String, r: &StatusReport) {
    let e = &r.due.external;
    let _ = write!(
        b,
        "<p>External copy: <span class=\"{}\">{}</span>",
        if e.is_due() { "warn" } else { "" },
        esc(&e.reason)
    );
    if let Some(n) = e.next {
        let _ = write!(b, "; next {}", time(n));
    }
    b.push_str(".</p>\n");
}

fn destinations(b: &mut String, r: &StatusReport) {
    b.push_str("<section id=\"destinations\">\n<h2>Drives</h2>\n");
    if r.destinations.is_empty() && !r.clouds.is_empty() {
        b.push_str("<p>No drive is configured: the external copies go to the cloud destinations below.</p>\n</section>\n");
        return;
    }
    if r.destinations.is_empty() {
        b.push_str(
            "<p class=\"warn\">No destination is configured: the backups exist on this machine only. Add one to \
             <code>destinations</code> in the config for the external phase.</p>\n</section>\n",
        );
        return;
    }
    external_line(b, r);
    b.push_str(
        "<table>\n<thead><tr><th>Drive</th><th>State</th><th>Last verified backup</th><th>Free</th>\
        <th>Next backup fits</th><th>Backups on it</th></tr></thead>\n<tbody>\n",
    );
    for d in &r.destinations {
        destination_row(b, r, d);
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
}

/// The external copy is overdue on destination `name` (or on every destination, in mode `first`).
fn external_overdue(r: &StatusReport, name: &str) -> bool {
    r.overdue.iter().any(|o| {
        o.phase == Phase::External && (o.subject.is_none() || o.subject.as_deref() == Some(name))
    })
}

// Stays long: one table row, cell after cell in the order the page shows them.
fn destination_row(b: &mut String, r: &StatusReport, d: &DestinationStatus) {
    let h = r
        .history
        .as_ref()
        .and_then(|h| h.destinations.iter().find(|x| x.name == d.name));
    let overdue = external_overdue(r, &d.name);
    let _ = write!(
        b,
        "<tr id=\"drive-{}\"><td><strong>{}</strong><br><span class=\"muted\">{}</span></td>",
        attr(&d.name),
        esc(&d.name),
        esc(&d.path.display().to_string())
    );
    // State.
    if d.present {
        let _ = write!(
            b,
            "<td class=\"ok\">present<br><span class=\"muted\">{}</span></td>",
            esc(d.fs_type.as_deref().unwrap_or("?"))
        );
    } else {
        match (&d.absent_kind, &d.absent_reason) {
            (Some(k), why) => {
                let _ = write!(b, "<td>absent ({})", esc(&k.replace('_', " ")));
                if let Some(why) = why {
                    let _ = write!(b, "<br><span class=\"muted\">{}</span>", esc(why));
                }
                b.push_str("</td>");
            }
            _ => b.push_str("<td class=\"muted\">not looked at</td>"),
        }
    }
    // Last verified backup.
    match &d.newest {
        Some(n) => {
            let _ = write!(
                b,
                "<td class=\"{}\">{}<br><span class=\"muted\">{}",
                if overdue { "bad" } else { "" },
                ago(n.time, r.now),
                esc(&n.stamp)
            );
            if n.known_from == KnownFrom::RunLog {
                b.push_str(", from the run log");
            }
            if n.encrypted {
                b.push_str(" <span class=\"tag\">age</span>");
            }
            b.push_str("</span>");
            if let Some(limit) = h.and_then(|h| h.overdue_after_seconds) {
                let _ = write!(
                    b,
                    "<br>{}",
                    svg::meter(
                        n.age_seconds as f64,
                        limit as f64 * 1.5,
                        if overdue {
                            "over"
                        } else if n.age_seconds > limit {
                            // Old, but not overdue: another drive holds a newer copy (external.mode first).
                            "due"
                        } else {
                            "bar"
                        },
                        Some(limit as f64),
                        &format!(
                            "{} old; overdue after {}",
                            stdx::age_words(chrono::TimeDelta::seconds(n.age_seconds)),
                            stdx::age_words(chrono::TimeDelta::seconds(limit))
                        )
                    )
                );
            }
            b.push_str("</td>");
        }
        None if d.unseen => b.push_str("<td class=\"muted\">unknown</td>"),
        None => {
            let _ = write!(
                b,
                "<td class=\"{}\">none yet</td>",
                if overdue { "bad" } else { "muted" }
            );
        }
    }
    // Free space, and whether the next backup fits.
    match (d.free_bytes, d.total_bytes) {
        (Some(f), Some(t)) => {
            let used = t.saturating_sub(f);
            let needed = h.and_then(|h| h.needed_bytes);
            let fits = h.and_then(|h| h.fits);
            let _ = write!(
                b,
                "<td>{}<br>{}</td>",
                esc(&format!("{} free of {}", stdx::bytes(f), stdx::bytes(t))),
                svg::meter(
                    used as f64,
                    t as f64,
                    if fits == Some(false) { "over" } else { "bar" },
                    needed.map(|n| (used + n) as f64),
                    &format!(
                        "{} used{}",
                        stdx::bytes(used),
                        needed
                            .map(|n| format!("; the next backup adds about {}", stdx::bytes(n)))
                            .unwrap_or_default()
                    )
                )
            );
            match (fits, needed) {
                (Some(true), Some(n)) => {
                    let _ = write!(
                        b,
                        "<td class=\"ok\">yes<br><span class=\"muted\">needs about {}</span></td>",
                        esc(&stdx::bytes(n))
                    );
                }
                (Some(false), Some(n)) => {
                    let _ = write!(
                        b,
                        "<td class=\"bad\"><strong>no</strong><br><span class=\"muted\">needs about {}; free space on the drive, or lower its retention</span></td>",
                        esc(&stdx::bytes(n))
                    );
                }
                _ => b.push_str("<td class=\"muted\">unknown</td>"),
            }
        }
        _ => b.push_str("<td>-</td><td class=\"muted\">unknown (not here)</td>"),
    }
    // Backups on it.
    match (d.backups, h) {
        (Some(n), Some(h)) if !h.backups.is_empty() => {
            let _ = write!(b, "<td><details><summary>{n}</summary><table>",);
            for bk in h.backups.iter().take(20) {
                let sets: Vec<&str> = bk.sets.iter().map(|(s, _)| s.as_str()).collect();
                // Its chain, as `status` shows it: an incremental names its base; a missing base breaks it.
                let point = d.restore_points.iter().find(|p| p.stamp == bk.stamp);
                let chain = match point {
                    Some(p) if p.damaged => format!(
                        " <span class=\"tag bad\">DAMAGED: {}</span>",
                        esc(p.problem.as_deref().unwrap_or("found by restore --verify"))
                    ),
                    Some(p) if p.broken => format!(
                        " <span class=\"tag bad\">BROKEN: chain of {} incomplete</span>",
                        esc(&p.chain)
                    ),
                    Some(p) => p
                        .base
                        .as_ref()
                        .map(|base| {
                            format!(" <span class=\"tag\">incremental on {}</span>", esc(base))
                        })
                        .unwrap_or_default(),
                    None => String::new(),
                };
                let _ = write!(
                    b,
                    "<tr><td>{}{chain}</td><td class=\"num\">{}</td><td>{}{}</td></tr>",
                    esc(&bk.stamp),
                    esc(&stdx::bytes(bk.bytes)),
                    esc(&sets.join(", ")),
                    if bk.encrypted {
                        " <span class=\"tag\">age</span>"
                    } else {
                        ""
                    }
                );
            }
            b.push_str("</table></details></td>");
        }
        (Some(n), _) => {
            let _ = write!(b, "<td class=\"num\">{n}</td>");
        }
        (None, _) => b.push_str("<td>-</td>"),
    }
    b.push_str("</tr>\n");
}

/// The cloud destinations: each one's last verified upload (from the run log, on the page: see [`clouds_basis`]).
fn clouds(b: &mut String, r: &StatusReport) {
    if r.clouds.is_empty() {
        return;
    }
    b.push_str("<section id=\"clouds\">\n<h2>Cloud destinations</h2>\n");
    if r.destinations.is_empty() {
        external_line(b, r);
    }
    if let Some(basis) = clouds_basis(r) {
        let _ = writeln!(b, "<p class=\"muted\">{basis}</p>");
    }
    b.push_str(
        "<table>\n<thead><tr><th>Destination</th><th>Schedule</th><th>Last verified upload</th></tr></thead>\n<tbody>\n",
    );
    for c in &r.clouds {
        let overdue = external_overdue(r, &c.name);
        let _ = write!(
            b,
            "<tr id=\"cloud-{}\"><td><strong>{}</strong><br><span class=\"muted\">{}</span></td><td>{}</td>",
            attr(&c.name),
            esc(&c.name),
            esc(&c.place),
            esc(&c.schedule)
        );
        match (&c.newest, &c.error) {
            (Some(n), _) => {
                let _ = write!(
                    b,
                    "<td class=\"{}\">{}<br><span class=\"muted\">{}{}</span></td>",
                    if overdue { "bad" } else { "" },
                    ago(n.time, r.now),
                    esc(&n.stamp),
                    if n.known_from == KnownFrom::RunLog {
                        ", from the run log"
                    } else {
                        ""
                    }
                );
            }
            (None, Some(e)) => {
                let _ = write!(
                    b,
                    "<td class=\"bad\">unknown<br><span class=\"muted\">could not be looked at: {}</span></td>",
                    esc(e)
                );
            }
            (None, None) if c.log_damaged.is_some() => {
                b.push_str("<td class=\"muted\">unknown</td>")
            }
            (None, None) => {
                let _ = write!(
                    b,
                    "<td class=\"{}\">none yet</td>",
                    if overdue { "bad" } else { "muted" }
                );
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
}

fn runs(b: &mut String, r: &StatusReport) {
    b.push_str("<section id=\"runs\">\n");
    match &r.history {
        Some(h) => {
            let _ = writeln!(
                b,
                "<h2>The last {} runs</h2>\n<p>{}</p>",
                h.limit,
                svg::strip(&h.runs, h.limit)
            );
            b.push_str("<p class=\"legend\">");
            for o in [
                RunOutcome::Ok,
                RunOutcome::Warning,
                RunOutcome::Failed,
                RunOutcome::MissingDrive,
                RunOutcome::Locked,
                RunOutcome::Interrupted,
            ] {
                let n = h.runs.iter().filter(|x| x.outcome == o).count();
                let _ = write!(
                    b,
                    "<span><i class=\"{}\"></i>{} {}</span>",
                    svg::outcome_class(o),
                    esc(svg::outcome_words(o)),
                    n
                );
            }
            b.push_str("</p>\n");
            let notable: Vec<_> = h
                .runs
                .iter()
                .filter(|x| x.outcome != RunOutcome::Ok)
                .take(10)
                .collect();
            if h.runs.is_empty() {
                b.push_str("<p class=\"muted\">No run is recorded in the run log yet.</p>\n");
            } else if !notable.is_empty() {
                b.push_str("<table>\n<thead><tr><th>Finished</th><th>Run</th><th>Outcome</th><th>Why</th></tr></thead>\n<tbody>\n");
                for x in notable {
                    let class = match x.outcome {
                        RunOutcome::Failed => "bad",
                        RunOutcome::Warning => "warn",
                        _ => "muted",
                    };
                    let _ = writeln!(
                        b,
                        "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{} (exit {})</td><td>{}</td></tr>",
                        time(x.finished),
                        esc(&x.command),
                        esc(svg::outcome_words(x.outcome)),
                        x.exit,
                        esc(x.message.as_deref().unwrap_or(""))
                    );
                }
                b.push_str("</tbody>\n</table>\n");
            }
        }
        None => b.push_str("<h2>Last run</h2>\n"),
    }
    match &r.last_run {
        Some(l) => {
            let _ = writeln!(
                b,
                "<p>Last run: {} finished {} ({}): <span class=\"{}\">{}</span></p>",
                esc(&l.command),
                time(l.finished),
                ago(l.finished, r.now),
                if l.failed { "bad" } else { "" },
                esc(&l.result)
            );
        }
        None => b.push_str(
            "<p class=\"muted\">No run of collect, external or backup in the run log yet.</p>\n",
        ),
    }
    let _ = writeln!(b, "<p>{}</p>", esc(&status::due_line(&r.due, r.now)));
    if !r.warnings.is_empty() {
        b.push_str("<h3>Warnings</h3>\n<ul>\n");
        for w in &r.warnings {
            let _ = writeln!(b, "<li class=\"warn\">{}</li>", esc(w));
        }
        b.push_str("</ul>\n");
    }
    b.push_str("</section>\n");
}

/// Copy-paste restore commands per set: the newest snapshot of each recent day, and the newest backup on each drive
/// present that holds the set.
fn restore(b: &mut String, h: &History) {
    b.push_str("<section id=\"restore\">\n<h2>Restore</h2>\n<p class=\"muted\">Each command restores the set's \
        sources under <code>~/restored</code>; leave out <code>--target</code> to put them back where they were. \
        <code>dbackup --dry-run restore ...</code> shows what it would write first.</p>\n");
    let config = h
        .config
        .as_ref()
        .map(|c| format!(" --config {}", shell_word(&c.display().to_string())))
        .unwrap_or_default();
    for t in &h.sets {
        let _ = writeln!(b, "<h3>{}</h3>", esc(&t.set));
        let paths: String = t
            .sources
            .iter()
            .map(|p| format!(" --path {}", shell_word(&p.display().to_string())))
            .collect();
        let mut lines = Vec::new();
        let mut days: Vec<(String, DateTime<FixedOffset>)> = Vec::new();
        for p in t.snapshots.iter().filter(|p| p.complete) {
            let day = p.time.format("%Y-%m-%d").to_string();
            if days.len() < RESTORE_DATES && !days.iter().any(|(d, _)| *d == day) {
                days.push((day, p.time));
            }
        }
        for (day, t_) in &days {
            lines.push(format!(
                "# the newest snapshot of {day} ({})\ndbackup{config} restore --set {} --date {day}{paths} --target ~/restored",
                when(*t_),
                shell_word(&t.set)
            ));
        }
        for d in &h.destinations {
            if let Some(bk) = d
                .backups
                .iter()
                .find(|bk| bk.sets.iter().any(|(s, _)| *s == t.set))
            {
                lines.push(format!(
                    "# from drive {}: its newest backup{}\ndbackup{config} restore --source external --set {} --date {}{paths} --target ~/restored",
                    crate::stdx::show_str(&d.name),
                    if bk.encrypted { " (encrypted: add --identity FILE)" } else { "" },
                    shell_word(&t.set),
                    shell_word(&bk.stamp)
                ));
            }
        }
        if lines.is_empty() {
            b.push_str("<p class=\"muted\">No complete snapshot to restore yet.</p>\n");
        } else {
            let _ = writeln!(
                b,
                "<pre><code>{}</code></pre>",
                esc_multiline(&lines.join("\n\n"))
            );
        }
    }
    b.push_str("</section>\n");
}

/// [`html::code`] line by line, keeping the newlines: the lines hold shell words and names already made visible.
fn esc_multiline(s: &str) -> String {
    s.split('\n').map(html::code).collect::<Vec<_>>().join("\n")
}
