//! In-process tests of the collect phase against hand-made settings, with the real rsync in temporary directories.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::config::load::ConfigSource;
use crate::config::{ExternalMode, Notifications, RetentionPolicy, Schedule};
use crate::settings::{Exclusion, Output, SourcePath};
use crate::snapshot::{Layout, SnapshotState};

pub(crate) struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("dbackup-unit-")
                .tempdir()
                .unwrap(),
        }
    }
    /// A new world when rsync is installed; `None` skips the test (and fails it under CI).
    fn with_rsync() -> Option<World> {
        if crate::rsync::probe_rsync().is_err() {
            crate::stdx::skip::skip("rsync is not installed");
            return None;
        }
        Some(World::new())
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }
    /// A source `~/data` holding one file `a`, and settings with one set `data` of it.
    fn data_set(&self) -> (PathBuf, Settings) {
        let data = self.home().join("data");
        self.write("home/data/a", "a");
        let settings = self.settings(vec![set("data", std::slice::from_ref(&data), vec![])]);
        (data, settings)
    }
    pub fn settings(&self, sets: Vec<SetSettings>) -> Settings {
        Settings {
            config_source: ConfigSource::BuiltIn,
            backup_root: self.root(),
            sets,
            schedule: Schedule::default(),
            retention_local: RetentionPolicy {
                last: Some(7),
                ..Default::default()
            },
            retention_external: crate::config::RetentionPolicy::last(5),
            keep_at_least: 2,
            destinations: vec![],
            clouds: vec![],
            external_mode: ExternalMode::First,
            external_incremental: Default::default(),
            notifications: Notifications::default(),
            encryption: None,
            state_dir: self.dir.path().join("state"),
            image: crate::settings::ImageSettings {
                kit: false,
                devices: vec![],
            },
            report: crate::settings::ReportSettings::default_in(&self.dir.path().join("state")),
            output: Output {
                json: false,
                dry_run: false,
                verbosity: -2,
            },
        }
    }
}

pub(crate) fn source(path: &Path) -> SourcePath {
    SourcePath {
        configured: path.display().to_string(),
        path: path.to_path_buf(),
        resolved: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

pub(crate) fn set(name: &str, sources: &[PathBuf], exclusions: Vec<Exclusion>) -> SetSettings {
    SetSettings {
        name: name.into(),
        sources: sources.iter().map(|p| source(p)).collect(),
        exclusions,
        exclude_from: vec![],
        exclude_caches: false,
        exclude_if_present: vec![],
        rsync_args: vec![],
    }
}

fn ui() -> Ui {
    Ui {
        verbosity: -2,
        json: false,
        progress: false,
    }
}

fn collect(settings: &Settings, args: &Options) -> CollectReport {
    let sets = select_sets(settings, &args.sets).unwrap();
    run(settings, &sets, args, &ui()).unwrap().1
}

fn inside(snapshot: &Path, abs: &Path) -> PathBuf {
    snapshot.join(abs.strip_prefix("/").unwrap())
}

#[test]
fn two_runs_share_unchanged_files_and_keep_modes_and_exclusions() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let same = w.write("home/.config/app/settings", "unchanged");
    let changed = w.write("home/.config/app/state", "one");
    let cache = w.write("home/.config/Code/Cache/blob", "cache");
    let other = w.write("home/.config/Code/other/keep", "keep");
    let log = w.write("home/.config/app/debug.log", "log");
    let secret = w.write("home/.secrets", "s3cret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let config = w.home().join(".config");
    let exclusions = vec![
        Exclusion::Pattern {
            pattern: "*.log".into(),
            include: false,
        },
        Exclusion::Anchored {
            configured: "~/.config/Code/Cache/*".into(),
            pattern: format!("{}/Code/Cache/*", config.display()),
            include: false,
        },
    ];
    let settings = w.settings(vec![set(
        "config",
        &[config.clone(), secret.clone()],
        exclusions,
    )]);

    let first = collect(&settings, &Options::default());
    assert_eq!(first.exit, 0, "{first:#?}");
    fs::write(&changed, "two!").unwrap();
    let second = collect(&settings, &Options::default());
    assert_eq!(second.exit, 0, "{second:#?}");

    let s1 = first.sets[0].path.clone().unwrap();
    let s2 = second.sets[0].path.clone().unwrap();
    assert_ne!(s1, s2);
    assert_eq!(
        fs::metadata(inside(&s1, &same)).unwrap().ino(),
        fs::metadata(inside(&s2, &same)).unwrap().ino()
    );
    assert_eq!(fs::metadata(inside(&s2, &same)).unwrap().nlink(), 2);
    assert_ne!(
        fs::metadata(inside(&s1, &changed)).unwrap().ino(),
        fs::metadata(inside(&s2, &changed)).unwrap().ino()
    );
    assert_eq!(fs::read_to_string(inside(&s2, &changed)).unwrap(), "two!");
    assert!(!inside(&s2, &cache).exists() && !inside(&s2, &log).exists());
    assert!(inside(&s2, &other).exists());
    assert_eq!(
        fs::metadata(inside(&s2, &secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_link(w.root().join("config-latest")).unwrap(),
        Path::new(s2.file_name().unwrap())
    );
    assert_eq!(
        fs::metadata(w.root()).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let list = crate::snapshot::list(&w.root(), "config").unwrap();
    assert_eq!(list.len(), 2);
    let meta = list[1].metadata.clone().unwrap();
    assert!(meta.complete && !meta.full);
    assert_eq!(meta.link_dest, vec![list[0].name.clone()]);
    assert_eq!(meta.stats.transferred_files, 1, "{:?}", meta.stats);
    assert!(meta.stats.linked_bytes >= "unchanged".len() as u64);
    assert_eq!(second.sets[0].stats.unwrap().transferred_bytes, 4);
    assert_eq!(
        list[1].metadata.as_ref().unwrap().sources[0].configured,
        config.display().to_string()
    );

    // Same size, same mtime, other content: only --full (rsync --checksum) notices.
    let mtime = fs::metadata(&changed).unwrap().modified().unwrap();
    fs::write(&changed, "TWO!").unwrap();
    fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let quick = collect(&settings, &Options::default());
    assert_eq!(
        fs::read_to_string(inside(quick.sets[0].path.as_ref().unwrap(), &changed)).unwrap(),
        "two!"
    );
    let full = collect(
        &settings,
        &Options {
            full: true,
            ..Default::default()
        },
    );
    assert_eq!(
        fs::read_to_string(inside(full.sets[0].path.as_ref().unwrap(), &changed)).unwrap(),
        "TWO!"
    );
    let s4 = crate::snapshot::list(&w.root(), "config")
        .unwrap()
        .pop()
        .unwrap();
    assert!(s4.metadata.unwrap().full);
    assert!(full.sets[0].full);
}

#[test]
fn dry_run_creates_nothing() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let (_, mut settings) = w.data_set();
    settings.output.dry_run = true;
    let sets = select_sets(&settings, &[]).unwrap();
    let plan = dry_run(&settings, &sets, &Options::default(), &ui()).unwrap();
    assert!(plan.create_root);
    assert!(!w.root().exists());
    assert_eq!(plan.sets[0].action, SetAction::Collect);
    assert_eq!(plan.sets[0].rsync_argv[0], "rsync");
    assert!(plan.sets[0].link_dest.is_empty());
}

#[test]
fn missing_sources_warn_and_all_missing_fails_only_that_set() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let present = w.write("home/present", "here");
    let gone = w.home().join("gone");
    let settings = w.settings(vec![
        set("none", &[gone.clone(), w.home().join("also-gone")], vec![]),
        set("some", &[present, gone], vec![]),
    ]);
    let report = collect(&settings, &Options::default());
    assert_eq!(report.exit, 1);
    assert_eq!(report.sets[0].status, SetStatus::Refused);
    assert!(
        report.sets[0]
            .error
            .as_deref()
            .unwrap()
            .contains("every source of set none is missing"),
        "{:?}",
        report.sets[0].error
    );
    assert_eq!(
        report.sets[1].status,
        SetStatus::Incomplete,
        "a snapshot without one of its sources is incomplete"
    );
    assert_eq!(report.sets[1].exit, 3, "a skipped source is a warning");
    assert!(report.sets[1].warnings[0].contains("is missing: skipped"));
    let snap = &crate::snapshot::list(&w.root(), "some").unwrap()[0];
    let meta = snap.metadata.clone().unwrap();
    assert!(meta.sources.iter().any(|s| !s.present));
    assert!(!meta.complete && !meta.has_unreadable());
    assert_eq!(snap.state(), crate::snapshot::SnapshotState::Incomplete);
    assert_eq!(
        meta.incompleteness(),
        format!("source {} was missing", w.home().join("gone").display())
    );
}

#[test]
fn an_emptied_source_is_refused_unless_allowed() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let data = w.home().join("data");
    for i in 0..6 {
        w.write(&format!("home/data/f{i}"), "x");
    }
    let settings = w.settings(vec![set("data", std::slice::from_ref(&data), vec![])]);
    assert_eq!(collect(&settings, &Options::default()).exit, 0);
    for i in 0..6 {
        fs::remove_file(data.join(format!("f{i}"))).unwrap();
    }
    let refused = collect(&settings, &Options::default());
    assert_eq!(refused.exit, 1);
    let msg = refused.sets[0].error.clone().unwrap();
    assert!(
        msg.contains("is empty but the last snapshot")
            && msg.contains("had 6 entries")
            && msg.contains("--allow-shrink"),
        "{msg}"
    );
    assert_eq!(crate::snapshot::list(&w.root(), "data").unwrap().len(), 1);
    let allowed = collect(
        &settings,
        &Options {
            allow_shrink: true,
            ..Default::default()
        },
    );
    assert_eq!(allowed.sets[0].status, SetStatus::Complete);
    assert_eq!(crate::snapshot::list(&w.root(), "data").unwrap().len(), 2);
}

#[test]
fn a_failed_rsync_promotes_nothing_and_the_next_run_resumes() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let data = w.home().join("data");
    let big = w.write("home/data/big", &"x".repeat(100_000));
    let settings = w.settings(vec![set("data", std::slice::from_ref(&data), vec![])]);
    let first = collect(&settings, &Options::default());
    assert_eq!(first.exit, 0);
    let latest_before = fs::read_link(w.root().join("data-latest")).unwrap();

    let mut broken = settings.clone();
    broken.sets[0].rsync_args = vec!["--no-such-option".into()];
    let failed = collect(&broken, &Options::default());
    assert_eq!(failed.exit, 1);
    assert_eq!(failed.sets[0].status, SetStatus::Failed);
    assert_eq!(failed.sets[0].rsync_exit, Some(1));
    let err = failed.sets[0].error.clone().unwrap();
    assert!(
        err.contains("rsync exit 1") && err.contains("no-such-option"),
        "{err}"
    );
    assert_eq!(
        fs::read_link(w.root().join("data-latest")).unwrap(),
        latest_before
    );
    assert_eq!(crate::snapshot::list(&w.root(), "data").unwrap().len(), 1);
    let layout = Layout::new(w.root());
    assert!(
        layout.in_progress("data").is_dir(),
        "the copy so far is kept"
    );

    // Simulate what an interrupted run leaves: part of the tree, plus rsync's temporary file.
    let part = inside(&layout.in_progress("data"), &big);
    fs::create_dir_all(part.parent().unwrap()).unwrap();
    fs::copy(&big, &part).unwrap();
    fs::write(part.parent().unwrap().join(".big.XyZ123"), "half").unwrap();
    let resumed = collect(&settings, &Options::default());
    assert_eq!(resumed.exit, 0, "{resumed:#?}");
    assert!(resumed.sets[0].resumed);
    assert!(!layout.in_progress("data").exists() && !layout.partial("data").exists());
    let snaps = crate::snapshot::list(&w.root(), "data").unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(!inside(&snaps[1].path, &data).join(".big.XyZ123").exists());
    assert_eq!(
        fs::read_link(w.root().join("data-latest")).unwrap(),
        Path::new(&snaps[1].name)
    );
}

#[test]
fn retention_prunes_old_complete_snapshots_after_a_run() {
    let Some(w) = World::with_rsync() else {
        return;
    };
    let (_, mut settings) = w.data_set();
    settings.retention_local = RetentionPolicy {
        last: Some(3),
        ..Default::default()
    };
    // Five old snapshots made "by dbackup" (metadata present), one incomplete, one without metadata.
    fs::create_dir_all(w.root()).unwrap();
    for (i, complete) in [(1, true), (2, true), (3, false), (4, true), (5, true)] {
        let name = format!("data-2020-01-0{i}-000000");
        fs::create_dir(w.root().join(&name)).unwrap();
        crate::snapshot::write_metadata(
            &w.root(),
            &crate::snapshot::tests::meta("data", &name, complete),
        )
        .unwrap();
    }
    fs::create_dir(w.root().join("data-2019-12-31-000000")).unwrap();
    let report = collect(&settings, &Options::default());
    assert_eq!(report.exit, 0, "{report:#?}");
    let removed: Vec<&str> = report.sets[0]
        .removed
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        removed,
        [
            "data-2020-01-03-000000",
            "data-2020-01-02-000000",
            "data-2020-01-01-000000"
        ]
    );
    let left: Vec<(String, SnapshotState)> = crate::snapshot::list(&w.root(), "data")
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s.state()))
        .collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert_eq!(
        left[0],
        ("data-2019-12-31-000000".to_string(), SnapshotState::Unknown)
    );
    assert!(!w.root().join("data-2020-01-01-000000.json").exists());
}
