//! The status page through the real binary: insta snapshots of what it says for fixtures with fixed times (all
//! fine, a set overdue, the last run failed, no drive ever seen, an encrypted set on a drive's REPORT.html), the page
//! kept up to date after every run (and where the config says), REPORT.html written on the drive by the external
//! phase (never through a symlink the drive holds; an encrypted set's names never on it), headless Chromium reading it
//! (the DOM after scripts, the STALE banner, a screenshot that is not blank), and `dbackup serve` (200, 405, 421,
//! HEAD, a clean stop on SIGTERM).
//!
//! Chromium comes from Debian's `chromium` package (with `fonts-dejavu-core`), which `cargo xtask test` installs
//! when root. Without it the browser tests say why they skip; under CI (`CI=true`) they fail.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbackup::StatusReport;

use crate::fixtures::history::{drive_backup, first_snap, log_bare, log_run, log_written, snap};
use crate::harness::{self, Output, Test};

const NOW: &str = "2025-04-10T09:00:00+00:00";
const G: u64 = 1 << 30;
const M: u64 = 1 << 20;

/// A config with the sets `data` and `config`, the T9 (a plain directory here) and `old` (never plugged in).
fn world(drives: bool) -> Test {
    let t = Test::new();
    let t9 = t.path("media/T9");
    fs::create_dir_all(&t9).unwrap();
    let destinations = if drives {
        format!(
            r#", "destinations": [ {{ "name": "T9", "path": "{}", "require_mount": false, "priority": 10 }},
                               {{ "name": "old", "path": "{{tmp}}/media/old" }} ]"#,
            t9.display()
        )
    } else {
        String::new()
    };
    t.config(&format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "data", "sources": ["/data"] }}, {{ "name": "config", "sources": ["~/.config", "~/my files"] }} ],
             "schedule": {{ "incremental": "daily", "full": "weekly", "external": "weekly" }},
             "notifications": {{ "low_disk_percent": 0 }}{destinations} }}"#
    ))
}

/// Daily snapshots of both sets for a week up to 2025-04-10 03:15, the drive's backups, and ok runs in the log.
fn fine() -> Test {
    let t = world(true);
    // `old` was last written a month ago, per the log.
    log_written(&t, "old", "2025-03-10T03:15:00+00:00");
    for day in 4..=10 {
        let time = format!("2025-04-{day:02}T03:15:00+00:00");
        let first = day == 4;
        // One jump in data: a download folder that should not be there.
        let copied = if day == 8 { 6 * G } else { 200 * M };
        snap(
            &t,
            "data",
            &time,
            first,
            day == 7,
            20 * G,
            if first { 0 } else { 20 * G - copied },
            0,
        );
        snap(
            &t,
            "config",
            &time,
            first,
            false,
            50 * M,
            if first { 0 } else { 49 * M },
            0,
        );
        log_bare(
            &t,
            "backup",
            &format!("2025-04-{day:02}T03:14:00+00:00"),
            0,
            None,
        );
    }
    let t9 = t.path("media/T9");
    drive_backup(
        &t9,
        "2025-04-06T03:20:00+00:00",
        &[
            ("data", "data-2025-04-06-031500"),
            ("config", "config-2025-04-06-031500"),
        ],
        21 * G,
    );
    drive_backup(
        &t9,
        "2025-04-09T03:20:00+00:00",
        &[
            ("data", "data-2025-04-09-031500"),
            ("config", "config-2025-04-09-031500"),
        ],
        21 * G,
    );
    t
}

/// The report with its history from the binary, with what depends on this machine made fixed: the test's directory,
/// free space, the host name, the filesystem type.
fn report(t: &Test, now: &str) -> StatusReport {
    let out = t.cmd().args(["--json", "report", "--now", now]).status(0);
    let tmp = t.dir.path().display().to_string();
    let mut r: StatusReport = serde_json::from_str(&out.stdout.replace(&tmp, "/tmp/t")).unwrap();
    r.root_free_bytes = Some(120 * G);
    r.root_total_bytes = Some(500 * G);
    for d in r.destinations.iter_mut().filter(|d| d.present) {
        d.free_bytes = Some(412 * G);
        d.total_bytes = Some(1863 * G);
        d.fs_type = Some("exfat".into());
    }
    let h = r.history.as_mut().expect("report --json holds the history");
    h.host = "workstation".into();
    for d in &mut h.destinations {
        if let Some(n) = d.needed_bytes {
            d.fits = Some(412 * G >= n);
        }
    }
    r.warnings.retain(|w| !w.starts_with("low disk"));
    r
}

/// What people read: the body, without the script (the same on every page, tested in the browser).
fn readable(html: &str) -> String {
    let start = html.find("<body").expect("a body");
    let end = html.find("<script>").expect("a script");
    html[start..end].to_string()
}

fn page(r: &StatusReport) -> String {
    dbackup::render_status_page(r)
}

/// Everything fine: the verdict, the sets with their sparkline (the jump flagged), the drives, the runs. (Before:
/// no `report` command and no `--history`.)
#[test]
fn page_when_everything_is_fine() {
    let t = fine();
    let r = report(&t, NOW);
    assert!(r.ok);
    let html = page(&r);
    assert!(html.contains("<h1 class=\"ok\">Backups are good</h1>"));
    insta::assert_snapshot!("page_fine", readable(&html));

    // The binary's page is this renderer over the same data (the verdict and the structure agree).
    let out = t
        .cmd()
        .args(["report", "--now", NOW, "--out", "-"])
        .status(0)
        .stdout;
    assert!(out.starts_with("<!DOCTYPE html>"), "{out}");
    assert!(out.contains("<h1 class=\"ok\">Backups are good</h1>"));
    assert!(out.contains("data-generated=\"2025-04-10T09:00:00+00:00\""));
    let h = r.history.as_ref().unwrap();
    let data = &h.sets[0];
    assert_eq!(data.snapshots.len(), 7);
    let outliers: Vec<&str> = data
        .snapshots
        .iter()
        .filter(|p| p.outlier)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(outliers, ["data-2025-04-08-031500"]);
    assert_eq!(
        (data.local_restore_points, data.drive_restore_points),
        (7, 2)
    );
    assert_eq!(h.runs.len(), 8);
}

/// Two days without a snapshot: the page says ATTENTION, as `status --check` exits 1 on it (one function decides
/// both). (Before: no page.)
#[test]
fn page_when_a_set_is_overdue() {
    let t = fine();
    let later = "2025-04-12T09:00:00+00:00";
    let r = report(&t, later);
    assert!(!r.ok);
    t.cmd()
        .args(["status", "--check", "--now", later])
        .status(1);
    let html = page(&r);
    assert!(
        html.contains("<h1 class=\"bad\">Attention: 2 problems</h1>"),
        "{html}"
    );
    insta::assert_snapshot!("page_overdue", readable(&html));
}

/// A collect at 08:00 on the day of `NOW` whose set `data` failed (`why`) and `config` completed; `error` the run's.
fn log_failed_collect(t: &Test, error: &str, why: &str) {
    log_run(
        t,
        "collect",
        "2025-04-10T08:00:00+00:00",
        1,
        Some(error),
        serde_json::json!([
            { "set": "data", "status": "failed", "error": why },
            { "set": "config", "status": "complete" } ]),
    );
}

/// The last run failed: the verdict says so, the set shows the failure since its last good snapshot. (Before: no
/// page; `status` showed only the last run.)
#[test]
fn page_when_the_last_run_failed() {
    let t = fine();
    log_failed_collect(
        &t,
        "collect data: rsync failed: connection unexpectedly closed",
        "rsync exited 12: connection unexpectedly closed",
    );
    let r = report(&t, NOW);
    assert!(!r.ok);
    t.cmd().args(["status", "--check", "--now", NOW]).status(1);
    let h = r.history.as_ref().unwrap();
    assert_eq!(h.sets[0].failures.len(), 1);
    assert!(h.sets[1].failures.is_empty());
    let html = page(&r);
    assert!(html.contains("the last run (collect) failed"));
    insta::assert_snapshot!("page_last_run_failed", readable(&html));
}

/// A fresh install with drives configured but never plugged in, and nothing in the log: ATTENTION, each drive
/// absent with why and "none yet". (Before: no page.)
#[test]
fn page_when_no_drive_was_ever_seen() {
    let t = world(true);
    fs::remove_dir_all(t.path("media/T9")).unwrap();
    first_snap(&t, "data", "2025-04-10T03:15:00+00:00", 5 * G);
    let r = report(&t, NOW);
    assert!(!r.ok);
    assert!(
        r.destinations
            .iter()
            .all(|d| !d.present && d.newest.is_none())
    );
    let html = page(&r);
    assert!(html.contains("no external backup yet"), "{html}");
    insta::assert_snapshot!("page_no_drive_ever", readable(&html));
}

/// Marks the backups' `set` as encrypted in their `backup.json` (as an encrypted run writes it: recipients, no
/// plaintext hash), and gives the other sets their sources.
fn encrypt_on_drive(drive: &Path, set: &str) {
    for e in fs::read_dir(drive.join("backups")).unwrap() {
        let path = e.unwrap().path().join("backup.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for s in meta["sets"].as_array_mut().unwrap() {
            let name = s["set"].as_str().unwrap().to_string();
            s["sources"] = serde_json::json!([{
                "configured": format!("~/{name}-secret-folder"), "path": format!("/home/payne/{name}-secret-folder"),
                "resolved": format!("/home/payne/{name}-secret-folder"), "in_snapshot": format!("{name}-secret-folder"),
                "present": true }]);
            if name == set {
                s["encryption"] = serde_json::json!({ "format": "age-encryption.org/v1",
                    "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"] });
                s["tar_sha256"] = serde_json::Value::Null;
                s["archive"][0]["name"] = serde_json::json!(format!("{set}.tar.age"));
            }
        }
        fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
        // The files it records, of their sizes (sparse), so that the drive looks whole.
        for s in meta["sets"].as_array().unwrap() {
            for f in s["archive"]
                .as_array()
                .unwrap()
                .iter()
                .chain(s["index"].as_array().unwrap())
            {
                fs::File::create(path.with_file_name(f["name"].as_str().unwrap()))
                    .unwrap()
                    .set_len(f["bytes"].as_u64().unwrap())
                    .unwrap();
            }
        }
    }
}

/// A drive's REPORT.html, from its backup.json files only: the encrypted set's sources never appear, the plain
/// set's do, with restore commands for both. (Before: nothing on the drive explained it.)
#[test]
fn drive_page_with_an_encrypted_set() {
    let t = Test::new();
    let drive = t.path("T9");
    drive_backup(
        &drive,
        "2025-04-01T03:20:00+00:00",
        &[
            ("data", "data-2025-04-01-031500"),
            ("config", "config-2025-04-01-031500"),
        ],
        8 * G,
    );
    drive_backup(
        &drive,
        "2025-04-09T03:20:00+00:00",
        &[
            ("data", "data-2025-04-09-031500"),
            ("config", "config-2025-04-09-031500"),
        ],
        9 * G,
    );
    encrypt_on_drive(&drive, "data");
    let html = t
        .cmd()
        .no_config()
        .args(["report", "--drive"])
        .args([&drive])
        .args(["--now", NOW, "--out", "-"])
        .status(0)
        .stdout;
    assert!(
        !html.contains("data-secret-folder"),
        "an encrypted set's sources are on the page"
    );
    assert!(
        html.contains("/home/payne/config-secret-folder"),
        "a plain set's sources help restore it"
    );
    assert!(html.contains("age -d -i ~/identity.txt data.tar.age | tar -xpf - -C ~/restored"));
    insta::assert_snapshot!("drive_page_encrypted", readable(&html));
}

/// After `collect` the page is regenerated at $XDG_STATE_HOME/dbackup/report.html; `report.path` moves it and
/// `report.write: false` turns it off. (Before: no page at all.)
#[test]
fn the_page_is_regenerated_after_every_run() {
    let t = Test::new();
    t.write("src/data/a", "a");
    let config = |extra: &str| {
        format!(
            r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/src/data"] }} ]{extra} }}"#
        )
    };
    let t = t.config(&config(""));
    t.cmd().args(["collect"]).status(0);
    let page = fs::read_to_string(t.path("state/dbackup/report.html")).unwrap();
    assert!(page.contains("id=\"set-data\""), "{page}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(t.path("state/dbackup/report.html"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let t = t.config(&config(
        r#", "report": { "path": "{tmp}/www/backups.html" }"#,
    ));
    t.cmd().args(["collect"]).status(0);
    assert!(t.path("www/backups.html").is_file());

    fs::remove_file(t.path("state/dbackup/report.html")).unwrap();
    let t = t.config(&config(r#", "report": { "write": false }"#));
    t.cmd().args(["collect"]).status(0);
    assert!(!t.path("state/dbackup/report.html").exists());
    // Without report.write there is no default place: `report` asks for --out.
    let out = t.cmd().args(["report"]).status(2);
    out.stderr_has("--out FILE");
    // A dry run writes nothing.
    let t = t.config(&config(""));
    let out = t.cmd().args(["--dry-run", "report"]).status(0);
    out.stderr_has("would write the status page");
    assert!(!t.path("state/dbackup/report.html").exists());
}

/// Two configs of one user (other backup roots) share the state directory, so the page's default path too. The page
/// records the backup root it was drawn for (a `<meta>` and its top line), and a run of config B leaves a page
/// there that config A drew: one line on stderr saying whose it is and what to do, the run's exit unchanged;
/// `report` without `--out` refuses (exit 1) and writes nothing. An explicit `report.path` (even that very path) or
/// `report --out` writes where told, and a page of an older version (no root recorded) is replaced as before.
/// Before: B's run replaced A's page silently, so the page showed whichever config ran last.
#[test]
fn another_configs_page_at_the_default_path_is_left_to_it() {
    let t = Test::new();
    t.write("a-docs/a", "a");
    t.write("b-docs/b", "b");
    let config = |root: &str, docs: &str, extra: &str| {
        format!(
            r#"{{ "backup_root": "{root}", "image": {{ "kit": false }},
                 "backup_sets": [ {{ "name": "docs", "sources": ["{docs}"] }} ]{extra} }}"#
        )
    };
    let a = t.write(
        "a.json",
        t.expand(&config("{tmp}/root-a", "{tmp}/a-docs", "")),
    );
    let t = t.config(&config("{root}", "{tmp}/b-docs", ""));
    let with_a = || {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), a.as_os_str()])
    };
    let page_path = t.path("state/dbackup/report.html");
    let root_a = t.path("root-a").display().to_string();

    with_a().args(["collect"]).status(0);
    let theirs = fs::read_to_string(&page_path).unwrap();
    assert!(
        theirs.contains(&format!(
            "<meta name=\"dbackup-backup-root\" content=\"{root_a}\">"
        )),
        "the page records its backup root: {theirs}"
    );
    let top = theirs.split("</header>").next().unwrap_or_default();
    assert!(
        top.contains(&format!("backup root {root_a}")),
        "the root shown at the top: {top}"
    );

    let said = format!(
        "the status page at {} is another config's (backup root {root_a}); set report.path in this config to have \
         its own",
        page_path.display()
    );
    let out = t.cmd().args(["collect"]).status(0);
    out.stderr_has(&said);
    assert_eq!(
        out.stderr.matches("status page").count(),
        1,
        "one line: {}",
        out.stderr
    );
    assert_eq!(
        fs::read_to_string(&page_path).unwrap(),
        theirs,
        "A's page is left as it was"
    );
    let out = t.cmd().args(["report"]).status(1);
    out.stderr_has(&said);
    assert_eq!(fs::read_to_string(&page_path).unwrap(), theirs);
    // `--out` writes where told.
    let own = t.path("b.html");
    t.cmd().args(["report", "--out"]).args([&own]).status(0);
    assert!(
        fs::read_to_string(&own)
            .unwrap()
            .contains(&format!("backup root {}", t.root().display()))
    );
    // A's own next run replaces it.
    with_a().args(["report"]).status(0);
    assert!(fs::read_to_string(&page_path).unwrap().contains(&root_a));

    // An explicit report.path, even the default one, writes where told.
    let t = t.config(&config(
        "{root}",
        "{tmp}/b-docs",
        r#", "report": { "path": "{tmp}/state/dbackup/report.html" }"#,
    ));
    let out = t.cmd().args(["collect"]).status(0);
    assert!(!out.stderr.contains("another config's"), "{}", out.stderr);
    let ours = fs::read_to_string(&page_path).unwrap();
    assert!(
        ours.contains(&format!("backup root {}", t.root().display())),
        "{ours}"
    );

    // A page of an older version (no root recorded) is replaced at the default path, as before.
    let t = t.config(&config("{root}", "{tmp}/b-docs", ""));
    fs::write(
        &page_path,
        "<!DOCTYPE html>\n<html><head><meta name=\"generator\" content=\"dbackup 0.0.9\"></head></html>\n",
    )
    .unwrap();
    let out = t.cmd().args(["collect"]).status(0);
    assert!(!out.stderr.contains("another config's"), "{}", out.stderr);
    assert!(
        fs::read_to_string(&page_path)
            .unwrap()
            .contains("dbackup-backup-root")
    );
}

/// The external phase writes REPORT.html next to backups/ on the drive: replacing a symlink the drive holds, never
/// writing through it; an encrypted set's file names and sources are not on it. (Before: no page on the drive.)
#[test]
fn external_writes_the_drive_page_never_through_a_symlink() {
    let t = Test::new();
    let (_, recipient) = t.keygen("identity.txt");
    t.write("src/data/very-secret-name.txt", "x");
    t.write("src/plain/visible.txt", "y");
    let drive = t.path("T9");
    fs::create_dir_all(&drive).unwrap();
    // The drive holds a REPORT.html symlink pointing at a file of this machine.
    let victim = t.write("victim.txt", "untouched");
    std::os::unix::fs::symlink(&victim, drive.join("REPORT.html")).unwrap();
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/src/data"] }}, {{ "name": "plain", "sources": ["{{tmp}}/src/plain"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false,
                                 "encryption": {{ "recipients": ["{recipient}"] }} }} ] }}"#
    ));
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    let meta = fs::symlink_metadata(drive.join("REPORT.html")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the symlink was replaced by the page"
    );
    let html = fs::read_to_string(drive.join("REPORT.html")).unwrap();
    assert!(html.contains("dbackup backups on this drive"));
    assert!(!html.contains("very-secret-name"));
    assert!(
        !html.contains("src/data"),
        "the encrypted set's source is not on the page"
    );
    assert!(html.contains("<strong>plain</strong>"));
    // No temporary file is left in the drive's root.
    let names: Vec<String> = fs::read_dir(&drive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // report.drives: false leaves the drive alone.
    fs::remove_file(drive.join("REPORT.html")).unwrap();
    let text = fs::read_to_string(t.path("config.json")).unwrap();
    let t = t.config(&text.replacen('{', r#"{ "report": { "drives": false },"#, 1));
    t.write("src/data/more.txt", "z");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    assert!(!drive.join("REPORT.html").exists());
}

// ---- a real browser --------------------------------------------------------------------------------------------

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium, or why the test skips (recorded; a failure under CI, whose command installs it).
fn require_chromium() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        testkit::skip(
            "chromium is not installed (apt-get install chromium fonts-dejavu-core; `cargo xtask test` does it when \
             root)",
        );
    }
    found
}

/// Runs headless Chromium on a file with a fresh profile; returns stdout.
fn run_chromium(bin: &Path, t: &Test, args: &[String], page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .env("HOME", t.home())
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Chromium renders the page; after its script ran, a page dated in the past shows the STALE banner and the ages are
/// recomputed from now; a page made now shows none. The screenshot is not blank. (Before: no page.)
#[test]
fn chromium_shows_the_page_and_a_stale_banner() {
    let Some(bin) = require_chromium() else {
        return;
    };
    let t = fine();
    let old = t.path("old.html");
    t.cmd()
        .args(["report", "--now", NOW, "--out"])
        .args([&old])
        .status(0);
    let dom = run_chromium(&bin, &t, &["--dump-dom".into()], &old);
    assert!(
        dom.contains("<h1 class=\"ok\">Backups are good</h1>"),
        "{dom}"
    );
    let banner = dom
        .split("<div id=\"stale\"")
        .nth(1)
        .and_then(|s| s.split("</div>").next())
        .expect("the banner element");
    assert!(!banner.contains("hidden"), "the banner is shown: {banner}");
    assert!(banner.contains("STALE: this page was made"), "{banner}");
    assert!(dom.contains("<body data-generated=\"2025-04-10T09:00:00+00:00\" data-stale-after=\"129600\" class=\"stale\">"));
    // Ages were recomputed: nothing of the page's time ("5 hours ago") is left where a `data-since` is.
    assert!(!dom.contains(">5 hours ago<"), "ages not recomputed");

    // A page made now is not stale.
    let fresh = t.path("fresh.html");
    t.cmd().args(["report", "--out"]).args([&fresh]).status(0);
    let dom = run_chromium(&bin, &t, &["--dump-dom".into()], &fresh);
    assert!(
        dom.contains("<div id=\"stale\" class=\"banner\" role=\"alert\" hidden=\"\"></div>"),
        "{dom}"
    );

    // The screenshot: many colours, and much of it not background.
    let png = t.path("shot.png");
    run_chromium(
        &bin,
        &t,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1200,1000".into(),
        ],
        &old,
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = bytes.chunks(px).collect();
    let background = pixels[pixels.len() - 1];
    let different = pixels.iter().filter(|p| *p != &background).count();
    let mut colours: Vec<&[u8]> = pixels.clone();
    colours.sort();
    colours.dedup();
    assert!(
        different * 20 > pixels.len(),
        "only {different} of {} pixels differ from the background",
        pixels.len()
    );
    assert!(colours.len() > 50, "{} colours", colours.len());
}

// ---- dbackup serve ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 request on a new connection; returns the status code, the headers and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str, host: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// `dbackup serve` on a free loopback port: 200 for GET and HEAD (no body), the JSON, 405 for POST, 421 for a
/// foreign Host, 404 elsewhere; it stops cleanly (exit 0) on SIGTERM. (Before: no `serve`.)
#[test]
fn serve_answers_read_only_and_stops_on_sigterm() {
    let (_t, child, addr) = serving_fine();

    let (code, head, body) = http(&addr, "GET", "/", &addr);
    assert_eq!(code, 200, "{head}");
    assert!(body.starts_with("<!DOCTYPE html>"));
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    assert!(
        head.to_lowercase().contains("cache-control: no-store"),
        "{head}"
    );
    assert!(!head.to_lowercase().contains("set-cookie"));
    let port = addr.rsplit(':').next().unwrap();
    let (code, _, body) = http(&addr, "GET", "/status.json", &format!("localhost:{port}"));
    assert_eq!(code, 200);
    let r: StatusReport = serde_json::from_str(&body).unwrap();
    assert!(r.history.is_some());
    // The JSON contract, as `report --json` (before: no `format`, no schema).
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["format"], 1, "{body}");
    let errors: Vec<String> = crate::json::validator("report")
        .iter_errors(&v)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{body}");
    let (code, head, body) = http(&addr, "HEAD", "/", &addr);
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    let (code, head, _) = http(&addr, "POST", "/", &addr);
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (code, _, body) = http(&addr, "GET", "/", &format!("evil.example:{port}"));
    assert_eq!(code, 421);
    assert!(!body.contains("<html"));
    assert_eq!(http(&addr, "GET", "/etc/passwd", &addr).0, 404);

    // SIGTERM: a clean stop, exit 0, within a second or so.
    let stderr = stop(child);
    assert!(stderr.contains("stopped (SIGTERM)"), "{stderr}");
}

/// `dbackup serve` (with `args` before the subcommand) on a free loopback port, and its address once it listens.
pub(crate) fn serve(t: &Test, args: &[&str]) -> (std::process::Child, String) {
    let mut child = t
        .cmd()
        .args(args)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .spawn();
    // The URL on stdout once listening.
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let url = String::from_utf8(line).unwrap();
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no URL printed: {url:?}"))
        .to_string();
    (child, addr)
}

/// Stops a `serve` with SIGTERM; asserts it ends with 0 (within ten seconds) and returns its stderr.
fn stop(mut child: std::process::Child) -> String {
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = harness::read_stderr(&mut child);
    assert_eq!(status.code(), Some(0), "{stderr}");
    stderr
}

/// A request whose method and path hold terminal escapes (ESC, BEL: `\x1b]0;title\x07` retitles the terminal, `\x1b[2J`
/// clears it) never reaches `serve -v`'s request log raw: ESC and BEL are not HTTP, and the parser refuses such a
/// request line (400) before it is logged; a C1 CSI (U+009B, `\x1b[` to many terminals) passes the parser in a path
/// and is logged escaped. Before: the path was escaped but the method was printed raw.
#[test]
fn serve_logs_hostile_methods_and_paths_escaped() {
    let t = fine();
    let (child, addr) = serve(&t, &["-v"]);
    for (method, path) in [
        ("G\x1b[2JET", "/"),
        ("X\x1b]0;pwned\x07", "/a"),
        ("GET", "/\x1b[31mred"),
        ("GET", "/\u{9b}31mred"),
    ] {
        let code = http(&addr, method, path, &addr).0;
        assert!(
            matches!(code, 400 | 404 | 405),
            "{method:?} {path:?}: {code}"
        );
    }
    let stderr = stop(child);
    assert!(stderr.contains("GET /\\xc2\\x9b31mred -> 404"), "{stderr}");
    assert!(
        !stderr.contains(['\x1b', '\x07', '\u{9b}']),
        "a raw escape on stderr: {stderr:?}"
    );
}

/// Clients that send a request and reset the connection at once (SO_LINGER 0), many together so that some are reset
/// while they wait to be accepted. The server goes on answering: the request that comes after them gets the page.
/// Before (tiny_http), such a client made a worker thread panic (tiny-http PR #285, not released), stderr said
/// "internal error ... please report" for each, and about one run in six under load left the next request
/// unanswered for 30 s (the pool's workers had died with connections still queued for them).
#[test]
fn serve_shrugs_off_clients_that_reset_at_once() {
    use std::io::Write as _;
    let (_t, child, addr) = serving_fine();
    // A foreign Host: refused at once (421), so that no page is made for the clients that were not reset in time.
    let request = "GET / HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n";
    for _ in 0..20 {
        let clients: Vec<std::net::TcpStream> = (0..32)
            .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
            .collect();
        for mut c in clients {
            let _ = c.write_all(request.as_bytes());
            testkit::faultproxy::reset(c).expect("setsockopt(SO_LINGER)");
        }
    }
    let (code, head, _) = http(&addr, "GET", "/", &addr);
    assert_eq!(code, 200, "{head}");
    let stderr = stop(child);
    assert!(
        !stderr.contains("internal error") && !stderr.contains("please report"),
        "{stderr}"
    );
}

/// The server still gives the page to the next client; then it is stopped.
fn still_serves_then_stop(addr: &str, child: std::process::Child) {
    gets_the_page(addr);
    stop(child);
}

/// [`fine`]'s world, served ([`serve`]): the world, the server and its address.
fn serving_fine() -> (Test, std::process::Child, String) {
    let t = fine();
    let (child, addr) = serve(&t, &[]);
    (t, child, addr)
}

/// A plain GET gets the page: the server still answers.
fn gets_the_page(addr: &str) {
    let (code, head, _) = http(addr, "GET", "/", addr);
    assert_eq!(code, 200, "{head}");
}

/// What `/proc/<pid>/status` says of `field` (in kB for the sizes), for a server's memory.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A client that sends a request head of 128 MiB (one endless header line) is refused (431, or its connection
/// closed) once the head passes the server's bound, and the server stays small (VmRSS well under 100 MiB); the
/// next client gets the page. Before (tiny_http), the server buffered the whole line: 300 MiB sent grew it to
/// 433 MB, and more only grew it further.
#[test]
fn serve_refuses_a_huge_request_head_and_stays_small() {
    let (_t, child, addr) = serving_fine();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Long: ").unwrap();
    let mib = vec![b'a'; 1 << 20];
    // The server refuses and closes long before the end: the writes fail then.
    for _ in 0..128 {
        if s.write_all(&mib).is_err() {
            break;
        }
    }
    let rss = proc_status(child.id(), "VmRSS");
    assert!(rss < 100 * 1024, "the server holds {rss} kB");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    drop(s);
    still_serves_then_stop(&addr, child);
}

/// A client that sends half a request head and then nothing keeps no one else waiting (the next client gets the
/// page at once), and is dropped once its time for a head is over (its connection ends: no answer held for it
/// for ever). Before (tiny_http), it held its connection and a thread open for as long as it liked.
#[test]
fn serve_drops_a_client_that_stays_silent_mid_head() {
    let (_t, child, addr) = serving_fine();
    let mut silent = TcpStream::connect(&addr).unwrap();
    write!(silent, "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Wait: ").unwrap();
    gets_the_page(&addr);
    // Far longer than the server's wait for a head: a read that times out is a client never dropped.
    silent
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut rest = Vec::new();
    match silent.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the silent client was not dropped: {e}"),
    }
    stop(child);
}

/// A hundred connections opened at once and held, each with half a head: the server takes a bounded number of them
/// at once (a few threads, not one each), and once they close the next client gets the page. Before (tiny_http),
/// each connection got a thread of its own: a flood of sockets grew threads (and memory) without bound.
#[test]
fn serve_holds_a_flood_of_connections_with_few_threads() {
    let (_t, child, addr) = serving_fine();
    let threads = || {
        fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .count()
    };
    let mut held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(held.len() >= 90, "only {} connected", held.len());
    for c in &mut held {
        let _ = c.write_all(b"GET / HTTP/1.1\r\n");
    }
    // The server takes them as they come: look a while, the most threads it had.
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(threads());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most <= 16, "{most} threads for {} connections", held.len());
    drop(held);
    still_serves_then_stop(&addr, child);
}

/// Clients that send request after request and never read an answer (more of them than the server serves at once)
/// hold their connections only while the server can give them something: once a client takes nothing of its answer
/// for a while, its connection ends, and the next client gets the page. Before, with the connections bounded, such
/// clients held every one of them for ever and the server answered no one.
#[test]
fn serve_drops_clients_that_never_read_their_answers() {
    let (_t, child, addr) = serving_fine();
    // Small refusals (404: no page made), as many as fill the kernel's buffers many times over.
    let requests = format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(20_000);
    let held: Vec<TcpStream> = (0..36)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for mut c in &held {
        c.set_nonblocking(true).unwrap();
        // As much as the kernel takes now: the rest is not needed.
        let _ = c.write(requests.as_bytes());
    }
    // Answering them until their buffers are full takes a while on a loaded machine: a generous wait.
    let mut next = TcpStream::connect(&addr).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        next,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    next.read_to_string(&mut answer)
        .expect("no answer while clients that read nothing held the server");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    stop(child);
}

/// A non-loopback address needs --allow-remote (exit 2 without); the config refuses one outright. (Before: no
/// `serve`, and `report` was an unknown config key.)
#[test]
fn serve_refuses_a_non_loopback_address_without_the_flag() {
    let t = fine();
    let out: Output = t.cmd().args(["serve", "--listen", "0.0.0.0:0"]).status(2);
    out.stderr_has("--allow-remote");
    let text = fs::read_to_string(t.path("config.json")).unwrap();
    let t = t.config(&text.replacen(
        '{',
        r#"{ "report": { "serve": { "listen": "0.0.0.0:8422" } },"#,
        1,
    ));
    let out = t.cmd().args(["serve"]).status(2);
    out.stderr_has("/report/serve/listen");
    out.stderr_has("is not a loopback address");
}

/// `serve --listen 0.0.0.0:0` refused (no --allow-remote): its `ssh -L` hint names a port one can forward (the
/// default 8422, as port 0 is "any free port"), never port 0. Before: "use `ssh -L 0:127.0.0.1:0`".
#[test]
fn serve_refusal_hints_a_real_port_for_ssh_never_port_0() {
    let t = fine();
    let out: Output = t.cmd().args(["serve", "--listen", "0.0.0.0:0"]).status(2);
    out.stderr_has("`ssh -L 8422:127.0.0.1:8422 ")
        .stderr_lacks("ssh -L 0:")
        .stderr_lacks("127.0.0.1:0");
    let out: Output = t
        .cmd()
        .args(["serve", "--listen", "0.0.0.0:9999"])
        .status(2);
    out.stderr_has("`ssh -L 9999:127.0.0.1:9999 ");

    // The config's address, which the serve unit's description names: port 0 there (a new port at each start,
    // the page never found where the unit says) is refused; a non-loopback one hints a real port too.
    let text = fs::read_to_string(t.path("config.json")).unwrap();
    let with_listen = |listen: &str| {
        let text = text.replacen(
            '{',
            &format!(r#"{{ "report": {{ "serve": {{ "listen": "{listen}", "unit": true }} }},"#),
            1,
        );
        fs::write(t.path("config.json"), text).unwrap();
        t.cmd().args(["config", "check"]).status(2)
    };
    with_listen("0.0.0.0:0")
        .stderr_has("`ssh -L 8422:127.0.0.1:8422 this-machine`")
        .stderr_lacks("ssh -L 0:");
    with_listen("127.0.0.1:0")
        .stderr_has("/report/serve/listen")
        .stderr_has("port 0");
}

/// The `<pre><code>` blocks of a page as a browser shows them (entities decoded), line by line.
fn code_lines(html: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for block in html.split("<pre><code>").skip(1) {
        let code = block.split("</code></pre>").next().unwrap_or_default();
        let text = code
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// Runs each `dbackup restore ...` line of a page through bash with `dbackup` replaced by `printf '%s\n'`: the
/// words bash makes of it. Asserts that the line pastes whole (no word split off, nothing run) and that `--path`
/// gives `source` exactly.
fn pasted_restore_lines(t: &Test, html: &str, source: &str, what: &str) {
    let lines: Vec<String> = code_lines(html)
        .into_iter()
        .filter(|l| l.starts_with("dbackup ") && l.contains(" --path "))
        .collect();
    assert!(!lines.is_empty(), "{what}: no restore command with --path");
    for line in lines {
        let cwd = t.path("paste");
        fs::create_dir_all(&cwd).unwrap();
        let script = format!("printf '%s\\n'{}", &line["dbackup".len()..]);
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(&cwd)
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            out.status.success(),
            "{what}: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            fs::read_dir(&cwd).unwrap().next().is_none(),
            "{what}: pasting ran a command: {line}"
        );
        let at = words.iter().position(|w| w == "--path").unwrap();
        assert_eq!(words[at + 1], source, "{what}: {line}");
    }
}

/// The restore commands on both pages paste into a shell as written: a source whose name holds a quote and a
/// command substitution comes out as one `--path` word, and nothing runs. (Before: the shell-quoted words went
/// through the page's escaper, which doubled the backslash of `'\''`; pasted, `it'\\''s $(touch pwned)` split the
/// path and ran `touch pwned`, on the local page and on the drive's REPORT.html, whose paths come from the drive.)
#[test]
fn restore_commands_paste_into_a_shell_as_written() {
    let t = Test::new();
    let source = t.path("src/it's $(touch pwned)");
    t.write("src/it's $(touch pwned)/a.txt", "a");
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [ {{ "name": "data", "sources": [{}] }} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false }} ] }}"#,
        serde_json::to_string(&source.display().to_string()).unwrap()
    ));
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let source = source.display().to_string();
    let local = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    pasted_restore_lines(&t, &local, &source, "the status page");
    let drive = fs::read_to_string(t.path("T9/REPORT.html")).unwrap();
    pasted_restore_lines(&t, &drive, &source, "the drive's REPORT.html");
}

/// A directory drive `T9` holding a full of `{tmp}/src/data` (old.txt) and an incremental on it (new.txt added);
/// the full's stamp.
fn a_chain_of_two() -> (Test, String) {
    let t = Test::new();
    t.write("src/data/old.txt", "from the first backup");
    let t = t.config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["{tmp}/src/data"] } ],
             "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#,
    );
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    let first = t.cmd().args(["external"]).status(0).stdout;
    let base = Path::new(first.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    t.write("src/data/new.txt", "from the second");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    (t, base)
}

/// The drive's REPORT.html tells how to restore without dbackup; when the newest backup is an incremental, its
/// commands rebuild the set from the chain, so running them as written gives every file. (Before: the page said
/// `tar -xpf data.tar`, which for an incremental restores only what changed since its base: here one file of two.)
#[test]
fn the_drive_page_restores_an_incremental_whole_without_dbackup() {
    let (t, _) = a_chain_of_two();
    let listing = t
        .cmd()
        .args(["--json", "restore", "--list"])
        .status(0)
        .stdout;
    assert!(
        listing.contains("incremental"),
        "the second backup is an incremental: {listing}"
    );

    let html = fs::read_to_string(t.path("T9/REPORT.html")).unwrap();
    let (script, out, home) = run_without_dbackup(&t, &html);
    assert!(
        out.status.success(),
        "{}\n{}",
        script.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = home
        .join("restored")
        .join(t.path("src/data").strip_prefix("/").unwrap());
    for (name, content) in [
        ("old.txt", "from the first backup"),
        ("new.txt", "from the second"),
    ] {
        assert_eq!(
            fs::read_to_string(restored.join(name)).ok().as_deref(),
            Some(content),
            "{name} after running:\n{}",
            script.join("\n")
        );
    }
}

/// Runs the drive page's "Restore without dbackup" block (with the drive's real path, `HOME` a new directory) in
/// `bash -e`: the lines, what bash did, and that `HOME`.
fn run_without_dbackup(t: &Test, html: &str) -> (Vec<String>, std::process::Output, PathBuf) {
    let without = html
        .split("Restore without dbackup")
        .nth(1)
        .expect("a section on restoring without dbackup");
    let drive = t.path("T9").display().to_string();
    let script: Vec<String> = code_lines(without)
        .into_iter()
        .take_while(|l| !l.is_empty())
        .map(|l| l.replace("/media/you/DRIVE", &drive))
        .collect();
    let home = t.path("paste-home");
    fs::create_dir_all(&home).unwrap();
    let out = Command::new("bash")
        .args(["-ec", &script.join("\n")])
        .env("HOME", &home)
        .output()
        .unwrap();
    (script, out, home)
}

/// The drive page's `sha256sum -c` checks every backup its commands extract: a byte flipped in the base of the
/// newest incremental (its size unchanged) stops the pasted commands. (Before: only the newest backup's
/// `verification.sha256` was checked, so the commands extracted the damaged base without a word.)
#[test]
fn the_drive_page_checks_the_sums_of_every_backup_of_the_chain() {
    let (t, base) = a_chain_of_two();
    let html = fs::read_to_string(t.path("T9/REPORT.html")).unwrap();
    let tar = t.path("T9/backups").join(&base).join("data.tar");
    let mut bytes = fs::read(&tar).unwrap();
    let at = bytes
        .windows(b"from the first backup".len())
        .position(|w| w == b"from the first backup")
        .expect("old.txt's content in the base's archive");
    bytes[at] ^= 0x20;
    fs::write(&tar, &bytes).unwrap();
    let (script, out, _) = run_without_dbackup(&t, &html);
    assert!(
        !out.status.success(),
        "the damaged base went unnoticed:\n{}",
        script.join("\n")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("data.tar: FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The drive's page marks a backup whose files are not what its `backup.json` records (DAMAGED) and an incremental
/// whose base is damaged or gone (BROKEN), in the table and where it says how to restore. (Before: both were listed
/// as good backups, and the restore commands pointed at the broken newest one.)
#[test]
fn the_drive_page_marks_a_broken_chain() {
    let (t, base) = a_chain_of_two();
    let page = |t: &Test| {
        t.cmd()
            .args(["report", "--drive"])
            .args([t.path("T9")])
            .args(["--out", "-"])
            .status(0)
            .stdout
    };
    let row = |html: &str, stamp: &str| -> String {
        let table = html
            .split("id=\"backups\"")
            .nth(1)
            .expect("a backups section");
        table
            .split("<tr>")
            .find(|r| r.contains(&format!("backups/{stamp}<")))
            .unwrap_or_else(|| panic!("no row for {stamp}: {table}"))
            .to_string()
    };
    let newest = t
        .cmd()
        .args(["--json", "restore", "--list"])
        .status(0)
        .json::<serde_json::Value>()["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["stamp"].as_str().map(str::to_string))
        .max()
        .unwrap();
    let html = page(&t);
    assert!(
        !html.contains("DAMAGED") && !html.contains("BROKEN"),
        "{html}"
    );

    // The base's archive cut short: the base is damaged, the incremental on it broken.
    harness::cut_short(&t.path("T9/backups").join(&base).join("data.tar"), |l| {
        l - 512
    });
    let html = page(&t);
    assert!(
        row(&html, &base).contains("DAMAGED"),
        "{}",
        row(&html, &base)
    );
    assert!(
        row(&html, &newest).contains("BROKEN"),
        "{}",
        row(&html, &newest)
    );
    let restore = html
        .split("id=\"restore\"")
        .nth(1)
        .expect("a restore section");
    assert!(restore.contains("BROKEN"), "{restore}");

    // The base gone: the incremental is broken.
    fs::remove_dir_all(t.path("T9/backups").join(&base)).unwrap();
    let html = page(&t);
    assert!(
        row(&html, &newest).contains("BROKEN"),
        "{}",
        row(&html, &newest)
    );
}

/// The status page shows a drive's chain when incremental backups exist (issue 17): each incremental among the
/// drive's backups says which backup it is based on. (Before: the backups were listed by stamp, size and sets only;
/// `status` showed the chain, the page did not.)
#[test]
fn the_page_shows_the_chain_of_incremental_backups() {
    let (t, base) = a_chain_of_two();
    let html = t.cmd().args(["report", "--out", "-"]).status(0).stdout;
    let drives = html
        .split("id=\"destinations\"")
        .nth(1)
        .expect("a drives section");
    assert!(
        drives.contains(&format!("incremental on {base}")),
        "the page does not show the chain: {drives}"
    );
}

/// A status page that cannot be written after a run is a warning naming the page (the run itself is not failed).
/// (Before: "warning: cannot create /.../config.json: File exists (os error 17)", which named neither the page nor
/// `report.path`.)
#[test]
fn a_page_that_cannot_be_written_is_named_in_the_warning() {
    let t = Test::new();
    t.write("src/data/a", "a");
    t.write("not-a-dir", "a file where report.path wants a directory");
    let t = t.config(
        r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["{tmp}/src/data"] } ],
             "report": { "path": "{tmp}/not-a-dir/report.html" } }"#,
    );
    let out = t.cmd().args(["collect"]).status(0);
    out.stderr_has(&format!(
        "cannot write the status page {}",
        t.path("not-a-dir/report.html").display()
    ));
}

/// A status page that cannot be written (a directory this user cannot write to) fails with one lower-case line that
/// names the page, says why without "(os error 13)" and what to do. Before: "cannot write the status page P:
/// cannot write P: Permission denied (os error 13)".
#[test]
fn a_page_that_cannot_be_written_says_what_to_do() {
    use crate::collect::{as_nobody, chown_tree, is_root};
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new().config(crate::harness::DATA_ONLY);
    let dir = t.path("pages");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let page = dir.join("page.html");
    let page_arg = page.display().to_string();
    let out = if is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            return testkit::skip("running as root and setpriv (util-linux) is missing");
        }
        fs::set_permissions(t.path(""), fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["home", "state", "xdg-config"] {
            chown_tree(&t.path(d), 65534);
        }
        as_nobody(&t, &["report", "--out", &page_arg])
    } else {
        t.cmd().args(["report", "--out", &page_arg]).output()
    };
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let line = out.stderr.lines().next().unwrap_or("");
    assert_eq!(
        line,
        format!(
            "dbackup: error: cannot write the status page {page_arg}: permission denied; let this user write to \
             {}, or write the page elsewhere (--out, report.path)",
            dir.display()
        ),
        "{}",
        out.stderr
    );
}

/// A config whose only destination is a bucket: the page does not list buckets (a listing costs requests), so it
/// shows each cloud destination as the run log knows it and says so ("as of the last run at ..."), never that no
/// destination is configured nor to plug in a drive; the data (`report --json`) marks the bucket as not looked at.
/// Before: "No destination is configured: the backups exist on this machine only", the bucket nowhere on the page,
/// "Backups are good" with no word of what it rests on, and an overdue upload said "plug in a backup drive".
#[test]
fn a_bucket_on_the_page_is_what_the_run_log_says_and_the_page_says_so() {
    let (t, closed) = crate::cloud::on_a_closed_port();
    first_snap(&t, "docs", "2025-04-10T03:15:00+00:00", 5 * G);
    log_written(&t, "offsite", "2025-04-08T03:20:00+00:00");
    log_bare(&t, "backup", "2025-04-10T03:14:00+00:00", 0, None);
    let mut r = report(&t, NOW);
    assert!(r.ok, "{r:?}");
    r.clouds[0].place = r.clouds[0].place.replace(&closed, "http://127.0.0.1:3900");
    let c = &r.clouds[0];
    assert!(c.not_looked_at && !c.reachable, "{c:?}");
    assert_eq!(
        c.newest.as_ref().map(|n| (n.stamp.as_str(), n.known_from)),
        Some(("2025-04-08-032000", dbackup::KnownFrom::RunLog))
    );
    let html = page(&r);
    assert!(!html.contains("No destination is configured"), "{html}");
    insta::assert_snapshot!("page_bucket_from_the_run_log", readable(&html));

    // Three weeks later the upload is overdue: what to do is not to plug in a drive.
    let later = "2025-04-30T09:00:00+00:00";
    let r = report(&t, later);
    assert!(!r.ok);
    let html = page(&r);
    assert!(!html.contains("plug in a backup drive"), "{html}");
    assert!(html.contains("no external backup for 22 days"), "{html}");
}

/// Every time, age, size and count the page shows agrees with `status --json` for the same state (two sets, a
/// present and an absent drive, a failed run, at a time when things are fine and when three are overdue): the same
/// verdict and problems, each set's last good snapshot (time in its own offset, age in the same words), each drive's
/// newest backup and count, the root's free space.
#[test]
fn the_page_agrees_with_status_json() {
    use dbackup::StatusReport;
    let t = fine();
    log_failed_collect(&t, "collect data: rsync failed", "rsync exited 12");
    let when = |t: chrono::DateTime<chrono::FixedOffset>| t.format("%Y-%m-%d %H:%M").to_string();
    let words = |s: i64| dbackup::human_age(chrono::TimeDelta::seconds(s));
    for now in [NOW, "2025-04-22T09:00:00+00:00"] {
        let r: StatusReport = t.run_json(&["status", "--now", now]);
        let html = t
            .cmd()
            .args(["report", "--now", now, "--out", "-"])
            .status(0)
            .stdout;
        let page = readable(&html);
        let v = dbackup::status_verdict(&r);
        let n = v.problems.len();
        if r.ok {
            assert!(page.contains("Backups are good"), "{page}");
        } else {
            let plural = if n == 1 { "problem" } else { "problems" };
            assert!(
                page.contains(&format!("Attention: {n} {plural}")),
                "{now}: {page}"
            );
        }
        for o in &r.overdue {
            assert!(page.contains(&o.message), "{}: {page}", o.message);
        }
        assert!(page.contains(&format!(
            "as of <time datetime=\"{}\">{}</time>",
            r.now.to_rfc3339(),
            when(r.now)
        )));
        for s in &r.sets {
            let good = s.newest_complete.as_ref().or(s.newest.as_ref()).unwrap();
            let row = row_of(&page, &format!("set-{}", s.set));
            assert!(
                row.contains(&format!(">{}</time>", when(good.time))),
                "{row}"
            );
            assert!(
                row.contains(&format!(">{} ago</span>", words(good.age_seconds))),
                "{row}"
            );
            assert!(row.contains(&format!("{} local", s.snapshots)), "{row}");
        }
        for d in &r.destinations {
            let row = row_of(&page, &format!("drive-{}", d.name));
            let newest = d.newest.as_ref().unwrap();
            assert!(row.contains(&newest.stamp), "{row}");
            assert!(
                row.contains(&format!(">{} ago</span>", words(newest.age_seconds))),
                "{row}"
            );
            if let Some(b) = d.backups {
                assert!(row.contains(&format!("<summary>{b}</summary>")), "{row}");
            }
        }
        let free = format!(
            "{} free of {}",
            dbackup::human_bytes(r.root_free_bytes.unwrap()),
            dbackup::human_bytes(r.root_total_bytes.unwrap())
        );
        assert!(page.contains(&free), "{free}: {page}");
    }
}

/// The `<tr id="...">` row of the page.
fn row_of<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<tr id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no row {id}"));
    let end = page[start..]
        .find("</tr>\n<tr id=")
        .or(page[start..].find("</tbody>"))
        .unwrap();
    &page[start..start + end]
}

/// The last backup to a drive failed, and a later run (a collect) went fine: the drive still holds an older good
/// backup within its schedule, but the failure is not to be forgotten: `status --check` exits 1 naming it, `--json`
/// has it on the destination, and the page says the same. Before: "Backups are good" and exit 0, the failure only in
/// the run strip.
#[test]
fn the_last_backup_to_a_destination_failed_is_not_good() {
    let t = fine();
    log_run(
        &t,
        "external",
        "2025-04-10T04:00:00+00:00",
        1,
        Some("T9: cannot write: input/output error"),
        serde_json::json!({ "sets": [], "destinations": [
            { "name": "T9", "status": "failed", "error": "cannot write data.tar: input/output error" } ] }),
    );
    log_bare(&t, "backup", "2025-04-10T05:00:00+00:00", 0, None);
    let says = "the last backup to T9 failed (2025-04-10 04:05): cannot write data.tar: input/output error";
    let r = report(&t, NOW);
    assert!(!r.ok);
    let failed = r.destinations[0]
        .last_failed
        .as_ref()
        .expect("T9's last backup failed");
    assert_eq!(
        failed.error.as_deref(),
        Some("cannot write data.tar: input/output error")
    );
    assert!(page(&r).contains(says), "{}", page(&r));
    t.cmd()
        .args(["status", "--check", "--now", NOW])
        .status(1)
        .stderr_has(says);
    t.cmd()
        .args(["status", "--now", NOW])
        .status(0)
        .stdout_has("status: ATTENTION: the last backup to T9 failed (");
    // The next backup there that is written makes it good again.
    log_written(&t, "T9", "2025-04-10T06:00:00+00:00");
    t.cmd().args(["status", "--check", "--now", NOW]).status(0);
}

/// The external copy is overdue while the drive is plugged in (here a drive too full for the next backup): the page
/// does not tell to plug in a drive, but to run the backup and see why it was not written. Before: "plug in a backup
/// drive: the copy starts by itself".
#[test]
fn an_overdue_copy_with_the_drive_plugged_in_does_not_say_to_plug_one_in() {
    let t = fine();
    let r = report(&t, "2025-04-22T09:00:00+00:00");
    assert!(r.destinations.iter().any(|d| d.present));
    assert!(
        r.overdue
            .iter()
            .any(|o| o.message.starts_with("no external backup for 13 days"))
    );
    let html = page(&r);
    assert!(!html.contains("plug in a backup drive"), "{html}");
    assert!(
        html.contains("T9 is plugged in: run <code>dbackup backup</code>, and <code>dbackup status</code> for why"),
        "{html}"
    );
}
