//! `dbackup collect` end to end: real rsync, hard-linked snapshots, crashes, retention, the lock, the shrink guard.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbackup::{CollectPlan, CollectReport, SetAction, SetStatus, SnapshotMeta, read_snapshot_meta};

use crate::fixtures::snapshots;
use crate::harness::{BIN, Output, Test, inode, mode};

/// A config with one set `name` of `sources` (JSON array text), `extra` set keys, and `retention.local = keep`.
fn config(sets: &str, keep: u32) -> String {
    format!(
        r#"{{ "backup_root": "{{root}}", "retention": {{ "local": {keep} }}, "backup_sets": [ {sets} ] }}"#
    )
}

fn meta(t: &Test, name: &str) -> SnapshotMeta {
    read_snapshot_meta(&t.root().join(format!("{name}.json"))).unwrap()
}

/// `abs` inside a snapshot (`--relative` keeps absolute paths).
fn inside(t: &Test, snapshot: &str, abs: &Path) -> PathBuf {
    t.root().join(snapshot).join(abs.strip_prefix("/").unwrap())
}

fn latest(t: &Test, set: &str) -> String {
    fs::read_link(t.root().join(format!("{set}-latest")))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn report(out: &Output) -> CollectReport {
    out.json()
}

/// A sample home: `.config` (with a VS Code cache and logs to exclude), `env.sh`, a 0600 `.secrets`,
/// and `data` reached through a symlink `link-to-data`.
fn sample(t: &Test) {
    t.write("home/.config/app/settings.json", "{\"theme\": \"dark\"}");
    t.write("home/.config/app/state", "1");
    t.write("home/.config/app/debug.log", "noise");
    t.write("home/.config/Code/Cache/blob", "cache");
    t.write("home/.config/Code/other/keep", "keep");
    t.write("home/env.sh", "export A=1\n");
    let secrets = t.write("home/.secrets", "token");
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    for i in 0..5 {
        t.write(
            &format!("real-data/projects/p{i}.txt"),
            format!("project {i}"),
        );
    }
    std::os::unix::fs::symlink(t.path("real-data"), t.home().join("link-to-data")).unwrap();
}

const SAMPLE_SETS: &str = r#"
    { "name": "config", "sources": ["~/.config", "~/env.sh", "~/.secrets"], "exclusions": ["*.log", "~/.config/Code/Cache/*"] },
    { "name": "data", "sources": ["~/link-to-data"] }"#;

#[test]
fn two_collects_make_hard_linked_snapshots() {
    let t = Test::new().config(&config(SAMPLE_SETS, 7));
    sample(&t);
    let first = report(&t.cmd().args(["--json", "collect"]).status(0));
    t.write("home/.config/app/state", "22");
    let second = report(&t.cmd().args(["--json", "collect"]).status(0));

    let config_snaps = snapshots(&t, "config");
    assert_eq!(config_snaps.len(), 2, "{config_snaps:?}");
    assert_eq!(
        first.sets[0].snapshot.as_deref(),
        Some(config_snaps[0].as_str())
    );
    assert_eq!(
        second.sets[0].snapshot.as_deref(),
        Some(config_snaps[1].as_str())
    );
    let (old, new) = (&config_snaps[0], &config_snaps[1]);
    assert_eq!(latest(&t, "config"), *new);

    // Unchanged files share one inode; a changed one does not.
    let settings = t.home().join(".config/app/settings.json");
    assert_eq!(
        inode(&inside(&t, old, &settings)).0,
        inode(&inside(&t, new, &settings)).0
    );
    assert_eq!(inode(&inside(&t, new, &settings)).1, 2, "link count 2");
    let state = t.home().join(".config/app/state");
    assert_ne!(
        inode(&inside(&t, old, &state)).0,
        inode(&inside(&t, new, &state)).0
    );
    assert_eq!(fs::read_to_string(inside(&t, new, &state)).unwrap(), "22");

    // Exclusions, the anchored one included; its siblings are kept.
    assert!(!inside(&t, new, &t.home().join(".config/Code/Cache/blob")).exists());
    assert!(!inside(&t, new, &t.home().join(".config/app/debug.log")).exists());
    assert!(inside(&t, new, &t.home().join(".config/Code/other/keep")).is_file());
    // Modes survive; files sources land at their absolute path.
    assert_eq!(mode(&inside(&t, new, &t.home().join(".secrets"))), 0o600);
    assert!(inside(&t, new, &t.home().join("env.sh")).is_file());
    assert_eq!(mode(&t.root()), 0o700);

    // A symlinked source is resolved: the data is at its real path, both names are recorded.
    let data = snapshots(&t, "data");
    let real = fs::canonicalize(t.path("real-data")).unwrap();
    assert!(inside(&t, &data[1], &real.join("projects/p0.txt")).is_file());
    let m = meta(&t, &data[1]);
    assert_eq!(m.sources[0].path, t.home().join("link-to-data"));
    assert_eq!(m.sources[0].resolved, real);
    assert_eq!(m.sources[0].configured, "~/link-to-data");
    assert!(m.complete && m.rsync.exit_code == 0 && m.format == 1);
    assert_eq!(m.link_dest, vec![data[0].clone()]);
    assert_eq!(
        m.stats.transferred_files, 0,
        "nothing changed in data: {:?}",
        m.stats
    );
    assert!(m.stats.linked_bytes > 0);

    // Metadata lives beside the snapshot, never inside.
    assert!(t.root().join(format!("{new}.json")).is_file());
    assert!(!t.root().join(new).join(format!("{new}.json")).exists());
}

/// rsync processes started for this test (their command line names its backup root).
fn rsyncs_of(t: &Test) -> Vec<u32> {
    let root = t.root().display().to_string();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("rsync ") && cmdline.contains(&root) {
            out.push(pid);
        }
    }
    out
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regular files (not rsync's dot-temporaries) under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                files_under(&e.path())
            } else {
                usize::from(ft.is_file() && !e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

/// A set `data` whose rsync is slowed down (so it can be caught in the act) when `slow`.
fn slow_data_config(slow: bool) -> String {
    let args = if slow {
        r#", "rsync_args": ["--bwlimit=200"]"#
    } else {
        ""
    };
    config(
        &format!(r#"{{ "name": "data", "sources": ["~/data"]{args} }}"#),
        7,
    )
}

fn many_files(t: &Test, prefix: &str, n: usize, size: usize) {
    for i in 0..n {
        t.write(
            &format!("home/data/{prefix}{i:03}"),
            vec![b'a' + (i % 26) as u8; size],
        );
    }
}

#[test]
fn kill_9_during_rsync_then_collect_again() {
    let t = Test::new().config(&slow_data_config(false));
    many_files(&t, "old", 5, 1000);
    t.cmd().args(["collect"]).status(0);
    let earlier = snapshots(&t, "data");
    let earlier_meta = fs::read(t.root().join(format!("{}.json", earlier[0]))).unwrap();
    let old_file = inside(&t, &earlier[0], &t.home().join("data/old000"));
    let old_inode = inode(&old_file);

    many_files(&t, "new", 40, 50_000);
    fs::write(t.path("config.json"), t.expand(&slow_data_config(true))).unwrap();
    let mut child = t.cmd().args(["collect"]).spawn();
    let in_progress = t.root().join(".data.in-progress");
    wait_for("rsync to copy a few files", Duration::from_secs(60), || {
        files_under(&in_progress) >= 3
    });
    assert!(!rsyncs_of(&t).is_empty(), "rsync is running");
    // SIGKILL dbackup itself: nothing of it runs after this; rsync must not outlive it.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    wait_for("rsync to die with dbackup", Duration::from_secs(60), || {
        rsyncs_of(&t).is_empty()
    });
    assert_eq!(
        snapshots(&t, "data"),
        earlier,
        "an interrupted run is never listed"
    );
    assert!(
        in_progress.is_dir(),
        "the interrupted copy is left for the next run"
    );

    fs::write(t.path("config.json"), t.expand(&slow_data_config(false))).unwrap();
    let resumed = report(&t.cmd().args(["--json", "collect"]).status(0));
    assert!(resumed.sets[0].resumed);
    let now = snapshots(&t, "data");
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], earlier[0]);
    assert!(!in_progress.exists() && !t.root().join(".data.partial").exists());
    let leftovers: Vec<String> = fs::read_dir(t.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".trash") || n.contains("in-progress") || n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(latest(&t, "data"), now[1]);
    assert_eq!(files_under(&t.root().join(&now[1])), 45);
    // The earlier snapshot is untouched: same metadata bytes, same inode, same content.
    assert_eq!(
        fs::read(t.root().join(format!("{}.json", earlier[0]))).unwrap(),
        earlier_meta
    );
    assert_eq!(inode(&old_file).0, old_inode.0);
    assert_eq!(fs::read(&old_file).unwrap(), vec![b'a'; 1000]);
    assert_eq!(mode(&old_file), mode(&t.home().join("data/old000")));
}

#[test]
fn nine_collects_with_retention_7_keep_the_seven_newest() {
    // Snapshot names have one-second resolution: a run that would reuse the previous run's second waits for
    // the next one (at most a second), so nine quick runs get nine names.
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    t.write("home/data/file", "x");
    let mut made = Vec::new();
    for i in 0..9 {
        t.write("home/data/counter", i.to_string());
        let r = report(&t.cmd().args(["--json", "collect"]).status(0));
        made.push(r.sets[0].snapshot.clone().unwrap());
        if i == 7 {
            assert_eq!(
                r.sets[0].removed.len(),
                1,
                "the eighth run removes the first"
            );
            assert_eq!(r.sets[0].removed[0].name, made[0]);
        }
    }
    assert_eq!(snapshots(&t, "data"), made[2..].to_vec());
    for gone in &made[..2] {
        assert!(!t.root().join(gone).exists() && !t.root().join(format!("{gone}.json")).exists());
    }
    assert_eq!(latest(&t, "data"), made[8]);
}

#[test]
fn two_collects_at_once_one_exits_4_naming_the_pid() {
    let t = Test::new().config(&slow_data_config(true));
    many_files(&t, "f", 10, 30_000);
    let first = t.cmd().args(["collect"]).spawn();
    let pid = first.id();
    wait_for(
        "the first run to start copying",
        Duration::from_secs(120),
        || t.root().join(".data.in-progress").exists(),
    );
    let second = t.cmd().args(["collect"]).status(4);
    second.stderr_has(&format!("pid {pid}"));
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshots(&t, "data").len(), 1);
}

pub(crate) fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs `dbackup args...` for this test as the user `nobody` (root reads every file: only another user can
/// meet an unreadable one). Mirrors the harness's environment.
pub(crate) fn as_nobody(t: &Test, args: &[&str]) -> Output {
    let mut command = Command::new("setpriv");
    let out = t
        .environment(&mut command, "nobody")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--config",
        ])
        .arg(t.path("config.json"))
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

#[test]
fn an_unreadable_file_gives_an_incomplete_snapshot_and_exit_3() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    t.write("home/data/fine", "fine");
    let locked = t.write("home/data/locked", "secret");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let out = if is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            return testkit::skip(
                "running as root and setpriv (util-linux) is missing, so no file can be unreadable",
            );
        }
        // Let `nobody` into the test's world: its own home, state and backup root.
        fs::set_permissions(t.path(""), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(t.root()).unwrap();
        fs::set_permissions(t.root(), fs::Permissions::from_mode(0o700)).unwrap();
        for d in ["home", "state", "xdg-config", "root"] {
            chown_tree(&t.path(d), 65534);
        }
        as_nobody(&t, &["--json", "collect"])
    } else {
        t.cmd().args(["--json", "collect"]).output()
    };
    assert_eq!(
        out.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let r = report(&out);
    assert_eq!(r.sets[0].status, SetStatus::Incomplete);
    assert_eq!(r.sets[0].rsync_exit, Some(23));
    assert_eq!(
        r.sets[0]
            .unreadable
            .iter()
            .map(|p| p.path.clone())
            .collect::<Vec<_>>(),
        vec![locked.clone()]
    );
    assert!(
        out.stderr.contains(&locked.display().to_string()),
        "the file is named on stderr:\n{}",
        out.stderr
    );
    let name = r.sets[0].snapshot.clone().unwrap();
    let m = meta(&t, &name);
    assert!(!m.complete);
    assert_eq!(m.rsync.exit_code, 23);
    assert_eq!(m.unreadable[0].path, locked);
    assert!(inside(&t, &name, &t.home().join("data/fine")).is_file());
    assert_eq!(
        latest(&t, "data"),
        name,
        "an incomplete snapshot is still the newest backup"
    );
}

#[test]
fn all_sources_missing_fails() {
    let t = Test::new().config(&config(
        r#"{ "name": "gone", "sources": ["~/nothing", "~/nothing-either"] }, { "name": "fine", "sources": ["~/here"] }"#,
        7,
    ));
    t.write("home/here", "here");
    let out = t.cmd().args(["collect"]).status(1);
    out.stderr_has("every source of set gone is missing");
    assert!(snapshots(&t, "gone").is_empty());
    assert_eq!(snapshots(&t, "fine").len(), 1, "the other set still runs");
}

#[test]
fn an_emptied_source_is_refused_until_allowed() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    many_files(&t, "f", 6, 10);
    t.cmd().args(["collect"]).status(0);
    for i in 0..6 {
        fs::remove_file(t.home().join(format!("data/f{i:03}"))).unwrap();
    }
    let out = t.cmd().args(["collect"]).status(1);
    out.stderr_has("is empty but the last snapshot");
    out.stderr_has("is the drive mounted? use --allow-shrink to accept");
    assert_eq!(snapshots(&t, "data").len(), 1);
    let plan: CollectPlan = t
        .cmd()
        .args(["--dry-run", "--json", "collect"])
        .status(1)
        .json();
    assert_eq!(plan.sets[0].action, SetAction::Refuse);
    assert_eq!(plan.sets[0].shrink_checks[0].verdict, "refused");
    t.cmd().args(["collect", "--allow-shrink"]).status(3);
    assert_eq!(snapshots(&t, "data").len(), 2);
}

/// A source whose top level stays while everything below it goes (a disk mounted at `~/data/projects` that is not
/// mounted now, a directory emptied by mistake) is refused too: retention would otherwise rotate every snapshot that
/// holds the files out. Before: accepted as complete, exit 0, and after `retention.local` runs the files were gone
/// from every snapshot.
#[test]
fn a_source_emptied_below_its_top_level_is_refused_until_allowed() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 2));
    for i in 0..20 {
        t.write(&format!("home/data/projects/p{i:02}"), "work");
    }
    t.cmd().args(["collect"]).status(0);
    for i in 0..20 {
        fs::remove_file(t.home().join(format!("data/projects/p{i:02}"))).unwrap();
    }
    for _ in 0..3 {
        let out = t.cmd().args(["collect"]).status(1);
        out.stderr_has("the last snapshot");
        out.stderr_has("use --allow-shrink to accept");
    }
    let kept = snapshots(&t, "data");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(latest(&t, "data"), kept[0]);
    assert!(
        t.root()
            .join(&kept[0])
            .join(
                t.home()
                    .join("data/projects/p00")
                    .strip_prefix("/")
                    .unwrap()
            )
            .is_file()
    );
    let out = t.cmd().args(["collect", "--allow-shrink"]).status(3);
    out.stderr_has("accepted: --allow-shrink");
    assert_eq!(snapshots(&t, "data").len(), 2);
}

#[test]
fn dry_run_writes_nothing() {
    let t = Test::new().config(&config(SAMPLE_SETS, 7));
    sample(&t);
    let out = t.cmd().args(["--dry-run", "collect"]).status(0);
    out.stdout_has("would create");
    assert!(!t.root().exists(), "the backup root is not even created");
    assert!(!t.path("state/dbackup").exists(), "dry runs are not logged");
    let plan: CollectPlan = t
        .cmd()
        .args(["--dry-run", "--json", "collect"])
        .status(0)
        .json();
    assert!(plan.create_root);
    assert_eq!(plan.sets.len(), 2);
    let argv = &plan.sets[0].rsync_argv;
    assert_eq!(argv[0], "rsync");
    assert!(
        plan.sets[0]
            .exclusions
            .iter()
            .any(|a| a.starts_with('/') && a.ends_with("/.config/Code/Cache/*")),
        "{:?}",
        plan.sets[0].exclusions
    );
    let filter = t.root().join(".config.filter");
    assert_eq!(plan.sets[0].filter_file.as_deref(), Some(filter.as_path()));
    assert!(
        argv.contains(&format!("--filter=merge {}", filter.display())),
        "{argv:?}"
    );
    assert!(argv.last().unwrap().ends_with("/.config.in-progress/"));
    assert!(!t.root().exists());
}

/// A backup root other users can read is a note (exit 0), worded alike by the run and its dry run: the snapshots
/// keep their sources' modes, so it exposes nothing the sources did not; a "warning" would mean exit 3.
#[test]
fn a_backup_root_others_can_read_is_a_note_in_the_run_as_in_its_dry_run() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    t.write("home/data/a", "a");
    fs::create_dir_all(t.root()).unwrap();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let line = format!(
        "note: the backup root {} has mode 0755: other users can read your backups; run `chmod 700 {}`",
        t.root().display(),
        t.root().display()
    );
    t.cmd()
        .args(["--dry-run", "collect"])
        .status(0)
        .stdout_has(&line);
    t.cmd()
        .args(["collect"])
        .status(0)
        .stderr_has(&format!("dbackup: {line}"))
        .stderr_lacks("warning");
}

#[test]
fn each_run_is_logged() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    t.write("home/data/a", "a");
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["collect", "--set", "data"]).status(0);
    let log = fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["command"], "collect");
    assert_eq!(lines[0]["exit"], 0);
    assert_eq!(lines[1]["sets"][0]["status"], "complete");
}

#[test]
fn an_unknown_set_is_a_usage_error_listing_the_sets() {
    let t = Test::new().config(&config(SAMPLE_SETS, 7));
    let out = t.cmd().args(["collect", "--set", "music"]).status(2);
    out.stderr_has("\"music\"").stderr_has("config, data");
    assert!(!t.root().exists());
}

#[test]
fn missing_rsync_says_how_to_install_it() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 7));
    t.write("home/data/a", "a");
    let empty = t.path("empty-path");
    fs::create_dir(&empty).unwrap();
    let out = t.cmd().env("PATH", &empty).args(["collect"]).status(1);
    out.stderr_has("rsync is not installed")
        .stderr_has("apt-get install rsync");
}

/// Paths, stamps, sizes and times vary between runs; what people read does not.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
        (r"\b\d+\.\ds\b", "[TIME]"),
        (r"rsync \d+\.\d+\.\d+\S*", "rsync [VERSION]"),
        (r"-aH[AX]*\b", "-aH[AX]"),
        (
            r"(ACLs and xattrs|ACLs|xattrs) (copied|not copied)[^,\n]*",
            "[ACL/XATTR SUPPORT]",
        ),
    ]
}

#[test]
fn the_dry_run_plan_reads_well() {
    let t = Test::new().config(&config(SAMPLE_SETS, 2));
    sample(&t);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["collect"]).status(0);
    fs::remove_file(t.home().join("env.sh")).unwrap();
    let out = t.cmd().args(["--dry-run", "collect"]).status(3);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("dry_run_plan", t.without_tmp(&out.stdout));
    });
}

#[test]
fn the_summary_reads_well() {
    let t = Test::new().config(&config(SAMPLE_SETS, 7));
    sample(&t);
    t.cmd().args(["collect"]).status(0);
    t.write("home/.config/app/state", "changed");
    let out = t.cmd().args(["collect"]).status(0);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("summary", t.without_tmp(&out.stderr));
        insta::assert_snapshot!("result", t.without_tmp(&out.stdout));
    });
}

/// The backup root's disk not mounted: the root is gone, or is the empty directory below the mount point. collect
/// (and backup) refuse, naming the newest snapshot the run log says was made there, and write nothing: before, they
/// created the root on the disk below and copied everything there in full, filling the system disk. Moving the
/// run log aside starts afresh.
#[test]
fn a_backup_root_whose_snapshots_are_all_gone_is_not_filled_again() {
    let t = Test::new().config(&config(SAMPLE_SETS, 7));
    sample(&t);
    let first = report(&t.cmd().args(["--json", "collect"]).status(0));
    let newest = first.sets[0].path.clone().unwrap();
    fs::rename(t.root(), t.path("root-on-its-disk")).unwrap();
    for command in ["collect", "backup"] {
        let out = t.cmd().args([command]).status(1);
        out.stderr_has(&format!(
            "the backup root {} holds none of the snapshots earlier runs made there ({} for one): is the disk it \
             lives on mounted?",
            t.root().display(),
            newest.display()
        ))
        .stderr_has("nothing was written");
        assert!(!t.root().exists(), "{command} created the root");
    }
    // The mount point's own directory, empty.
    fs::create_dir(t.root()).unwrap();
    t.cmd().args(["collect"]).status(1);
    assert_eq!(files_under(&t.root()), 0);
    // Gone for good: the run log moved aside, as the message says.
    let log = t.path("state/dbackup/log.jsonl");
    fs::rename(&log, log.with_extension("jsonl.old")).unwrap();
    t.cmd().args(["collect"]).status(0);
}

/// Two configs' runs ending at once when the run log they share is full: each rotates it (`log.jsonl` to
/// `log.jsonl.1`) before appending its line, and the first is held after finding it full while the second runs.
/// Before, the second rotated and appended, then the first rotated again: what the second had rotated (every earlier
/// run's line) was replaced by the second's one line. Now one run appends at a time, and no line is lost.
#[test]
fn two_configs_ending_at_once_keep_every_line_of_a_full_run_log() {
    let t = Test::new();
    let write = |name: &str, root: &str, source: &str| {
        t.write(&format!("{source}/file.txt"), source);
        t.write(
            name,
            t.expand(&format!(
                r#"{{ "backup_root": "{root}", "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/{source}"] }} ] }}"#
            )),
        )
    };
    let (a, b) = (
        write("a.json", "{root}", "a"),
        write("b.json", "{tmp}/root-b", "b"),
    );
    let collect = |config: &Path| {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), config.as_os_str(), "collect".as_ref()])
    };
    collect(&a).status(0);
    // A full log: that run's line, repeated past 1 MiB.
    let log = t.path("state/dbackup/log.jsonl");
    let line = fs::read_to_string(&log).unwrap();
    let earlier = (1 << 20) / line.len() + 1;
    fs::write(&log, line.repeat(earlier)).unwrap();

    for out in crate::harness::at_once(&t, "log.jsonl", collect(&a), collect(&b)) {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let lines: usize = [log.clone(), log.with_extension("jsonl.1")]
        .iter()
        .map(|p| fs::read_to_string(p).unwrap_or_default().lines().count())
        .sum();
    assert_eq!(lines, earlier + 2, "the earlier runs' lines are gone");
}

/// Two configs sharing a backup root, each with a set `data` of other sources: the root keeps configs apart by set
/// name only, so their snapshots mix (retention counts both, a restore takes the newest). A collect whose previous
/// snapshot of the set copied none of its sources warns (exit 3), naming that snapshot, both sources and the fix;
/// a set that gained a source shares the others and is not warned of. Before: nothing was said.
#[test]
fn a_set_of_the_same_name_in_another_config_sharing_the_root_is_warned_of() {
    let t = Test::new();
    for d in ["a", "a2", "b"] {
        t.write(&format!("{d}/file.txt"), d);
    }
    let write = |name: &str, sources: &str| {
        t.write(
            name,
            t.expand(&config(
                &format!(r#"{{ "name": "data", "sources": [{sources}] }}"#),
                7,
            )),
        )
    };
    let first = write("first.json", r#""{tmp}/a""#);
    let grown = write("grown.json", r#""{tmp}/a", "{tmp}/a2""#);
    let other = write("other.json", r#""{tmp}/b""#);
    let collect = |config: &Path, code: i32| {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), config.as_os_str()])
            .args(["collect"])
            .status(code)
    };
    let fix = "give one of the sets another name or another backup_root";
    collect(&first, 0);
    let out = collect(&grown, 0);
    assert!(!out.stderr.contains(fix), "{}", out.stderr);
    let previous = snapshots(&t, "data").pop().unwrap();
    let out = collect(&other, 3);
    let said = format!(
        "the previous snapshot of set data, {previous}, copied {a}, {a2}, none of this run's sources ({b}): is \
         there a set data in another config with this backup root?",
        a = t.path("a").display(),
        a2 = t.path("a2").display(),
        b = t.path("b").display()
    );
    assert!(
        out.stderr.contains(&said),
        "{said:?} not in:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains(fix), "{}", out.stderr);
    // Each config's next run is warned again while they alternate; a run after its own snapshot is not.
    collect(&grown, 3);
    let out = collect(&grown, 0);
    assert!(!out.stderr.contains(fix), "{}", out.stderr);
}

/// 40 directories in the backup root named like a snapshot of set `data` without metadata (a messy root): `collect`
/// (each run, on stderr: the timer's journal) and its dry run note ten of them, each with why, and count the rest in
/// one note; the dry run's plan lists ten `keep` lines for them and one counting the rest, and `restore --list` notes
/// why for ten. Before: a note and a `keep` line each, at every run, and a note each in the listing.
#[test]
fn snapshots_without_metadata_are_named_ten_then_counted() {
    let t = Test::new().config(&config(r#"{ "name": "data", "sources": ["~/data"] }"#, 3));
    t.write("home/data/a", "a");
    for i in 0..40 {
        fs::create_dir_all(t.root().join(format!("data-2020-01-01-0000{i:02}"))).unwrap();
    }
    let out = t.cmd().args(["collect"]).output();
    let named = out.stderr.matches("has no usable metadata").count();
    assert_eq!(named, 10, "{}", out.stderr);
    out.stderr_has(
        "30 more snapshots of this set have no usable metadata: they are never linked against nor removed",
    );
    let out = t.cmd().args(["--dry-run", "collect"]).output();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(all.matches("has no usable metadata").count(), 10, "{all}");
    assert_eq!(
        all.matches("no dbackup metadata: not judged").count(),
        10,
        "{all}"
    );
    out.stdout_has("keep      30 more snapshots without dbackup metadata: not judged");
    let out = t.cmd().args(["restore", "--list"]).status(0);
    assert_eq!(
        out.stdout.matches("cannot read snapshot metadata").count(),
        10,
        "{}",
        out.stdout
    );
    out.stdout_has(
        "note: 30 more snapshots in the backup root without usable metadata, listed unknown without a note each",
    );
}
