//! A full filesystem at each place dbackup writes that the drive and backup-root modules do not cover: the state
//! directory (the run log, the status page), the config directory (`config init`, `keygen`), `report --out`,
//! `systemd render --out`, and a restore target. Each on a small tmpfs the test mounts itself: the run's exit code as
//! README says, nothing half-written under a final name, and the next run after freeing space is right. Root only
//! (skips with a message otherwise).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::fixtures::mounted::Mounted;
use crate::harness::{DATA_ONLY, Test};

/// A test of one set `data` (a 50 kB file) with a tmpfs of `size` (mode 0700) mounted at its directory `dir` (`state`:
/// the state directory, `root`: the backup root), collected once; `None` (skipped) without root.
fn collected_with(dir: &str, size: &str) -> Option<(Test, Mounted)> {
    if !testkit::require_root() {
        return None;
    }
    let t = Test::new().config(DATA_ONLY);
    t.write("home/data/a", vec![b'a'; 50_000]);
    let mounted = Mounted::tmpfs(&t.path(dir), size);
    fs::set_permissions(t.path(dir), fs::Permissions::from_mode(0o700)).unwrap();
    t.cmd().args(["collect"]).status(0);
    Some((t, mounted))
}

/// A log whose last page has fewer bytes left than a run's line: on a full tmpfs, the line fits only in part. The
/// padding is a line of spaces (no record; readers skip it).
fn leave_less_than_a_line(log: &Path) {
    let len = fs::metadata(log).unwrap().len();
    let pad = (4096 - 64 - len % 4096 + 4096) % 4096;
    let mut f = fs::OpenOptions::new().append(true).open(log).unwrap();
    if pad > 0 {
        f.write_all(&[&vec![b' '; pad as usize - 1][..], b"\n"].concat())
            .unwrap();
    }
}

/// A full state directory: the backup itself succeeds (exit 0) and says the run log could not be written, and no
/// part of that run's line is left in the log. After space is freed, the next run (a failure) is the last run status
/// reports. Before: the line was written in part, the next run's line was glued onto it, and neither could be read:
/// status said the last run was the good one before, hiding the failure.
#[test]
fn a_full_state_directory_neither_fails_a_good_run_nor_hides_the_next_failure() {
    let Some((t, state)) = collected_with("state", "64k") else {
        return;
    };
    let log = t.path("state/dbackup/log.jsonl");
    leave_less_than_a_line(&log);
    let before = fs::read(&log).unwrap();

    let fill = state.fill();
    let out = t.cmd().args(["collect"]).status(0);
    out.stderr_has(&format!(
        "cannot write the run log in {}",
        t.path("state/dbackup").display()
    ));
    let after = fs::read(&log).unwrap();
    assert!(
        after == before,
        "nothing of the run's line is left; the log ends: {:?}",
        String::from_utf8_lossy(&after[after.len().saturating_sub(200)..])
    );

    fs::remove_file(fill).unwrap();
    fs::rename(t.path("home/data"), t.path("home/gone")).unwrap();
    t.cmd().args(["collect"]).status(1);
    let status: serde_json::Value = t.cmd().args(["--json", "status"]).output().json();
    assert_eq!(status["last_run"]["exit"], 1, "{}", status["last_run"]);
    assert_eq!(status["last_run"]["result"], "failed");
}

/// A restore of a 3 MB file over the user's own 2 MB version on a 4 MB filesystem (as `--overwrite always` and as
/// the default `if-changed`): exit 1, the message names the file and says the device is full, the user's file is
/// there byte for byte, and nothing else is left on the target (no temporary file, no part of the restored one).
/// Once there is room (the user removed their version), the same restore succeeds.
#[test]
fn a_restore_that_does_not_fit_leaves_the_users_file_intact() {
    if !testkit::require_root() {
        return;
    }
    let t = Test::new().config(DATA_ONLY);
    let backed_up: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.write("home/data/big", &backed_up);
    t.cmd().args(["collect"]).status(0);

    let _target = Mounted::tmpfs(&t.path("target"), "4m");
    let inside = t
        .path("target")
        .join(t.home().join("data").strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    let theirs: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    fs::write(inside.join("big"), &theirs).unwrap();
    let path = t.home().join("data/big");
    let restore = |extra: &[&str]| {
        t.cmd()
            .args(["restore", "--set", "data", "--path"])
            .args([&path])
            .args(["--target"])
            .args([t.path("target")])
            .args(extra)
    };
    for extra in [&["--overwrite", "always"][..], &[]] {
        let out = restore(extra).status(1);
        out.stderr_has(&format!(
            "cannot write {}: No space left on device",
            inside.join("big").display()
        ));
        assert!(
            fs::read(inside.join("big")).unwrap() == theirs,
            "{extra:?}: the user's file changed"
        );
        assert_eq!(
            crate::fixtures::drive::listing(&inside),
            ["big"],
            "{extra:?}: only the user's file"
        );
    }

    fs::remove_file(inside.join("big")).unwrap();
    restore(&[]).status(0);
    assert!(fs::read(inside.join("big")).unwrap() == backed_up);
}

/// `systemd render --out` into a directory whose filesystem has room for one unit file but not all of them: exit 1,
/// naming the file that did not fit, and no unit written (not a service without its timer, not an earlier render's
/// timer beside a new service); no temporary file is left. After freeing space the render writes them all. Before:
/// the files were written one by one, and the run stopped with the first in place and the others not.
#[test]
fn systemd_render_out_on_a_full_disk_writes_all_units_or_none() {
    if !testkit::require_root() {
        return;
    }
    let t = Test::new().config(DATA_ONLY);
    let disk = Mounted::tmpfs(&t.path("disk"), "64k");
    let dir = t.path("disk/units");
    fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let render = || {
        t.cmd()
            .args([
                "systemd",
                "render",
                "--user",
                "--exe",
                "/usr/bin/dbackup",
                "--out",
            ])
            .args([&dir])
    };

    // One page of room: the first file fits, the second does not.
    fs::write(t.path("disk/room"), vec![0u8; 4096]).unwrap();
    let fill = disk.fill();
    fs::remove_file(t.path("disk/room")).unwrap();
    let out = render().status(1);
    out.stderr_has("No space left on device");
    out.stderr_has(&format!("cannot write {}/dbackup-", dir.display()));
    assert!(
        crate::fixtures::drive::listing(&dir).is_empty(),
        "{:?}",
        crate::fixtures::drive::listing(&dir)
    );

    fs::remove_file(fill).unwrap();
    let out = render().status(0);
    assert_eq!(
        crate::fixtures::drive::listing(&dir).len(),
        out.stdout.lines().count(),
        "{}",
        out.stdout
    );
    assert!(out.stdout.lines().count() >= 2, "{}", out.stdout);
}

/// `config init` and `keygen` into a full config directory: exit 1, the message names the file they were writing
/// (not only a temporary name) and says the device is full, and no file is left, empty or in part, final or
/// temporary. After freeing space both write their file. Before: `config init` named only its temporary file.
#[test]
fn config_init_and_keygen_on_a_full_config_directory_leave_no_file() {
    if !testkit::require_root() {
        return;
    }
    let t = Test::new();
    let disk = Mounted::tmpfs(&t.path("xdg-config"), "64k");
    let dir = t.path("xdg-config/dbackup");
    let fill = disk.fill();
    let commands: [(&[&str], &str, &str); 2] = [
        (
            &["config", "init"],
            "config.json",
            "cannot write the config to",
        ),
        (&["keygen"], "identity.txt", "cannot write the identity to"),
    ];
    for (args, name, said) in commands {
        let out = t.cmd().no_config().args(args).status(1);
        out.stderr_has(&format!("{said} {}", dir.join(name).display()));
        out.stderr_has("No space left on device");
        let left: Vec<String> = crate::fixtures::drive::listing(&dir);
        assert!(left.is_empty(), "{args:?}: {left:?}");
    }

    fs::remove_file(fill).unwrap();
    for (args, name, _) in commands {
        t.cmd().no_config().args(args).status(0);
        assert!(fs::metadata(dir.join(name)).unwrap().len() > 0, "{args:?}");
    }
}

/// A bucket with a quota smaller than the backup (Garage's `set-quotas --max-size 1MiB`; the set holds 3 MiB):
/// `external` fails (exit 1) saying the bucket is full and what to do, no backup is listed in the bucket and no key or
/// secret is printed; once the quota is lifted the next run uploads a backup and leaves no unfinished upload.
/// Before: the refusal was taken for a matter of keys ("check the key id and secret, and that this key may do this").
#[test]
fn a_bucket_over_its_quota_fails_clearly_and_the_next_run_uploads() {
    let Some((g, s3)) = crate::cloud::garage_and_client() else {
        return;
    };
    let t = crate::cloud::with_keys(
        &crate::cloud::config(&g.endpoint(), &g.bucket, ""),
        &g.key.id,
        &g.key.secret,
    );
    crate::cloud::populate(&t);
    t.cmd().args(["collect"]).status(0);
    g.cli(&["bucket", "set-quotas", &g.bucket, "--max-size", "1MiB"])
        .unwrap();

    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("the bucket is full (its quota or storage cap is reached)");
    out.stderr_lacks("check the key id and secret");
    out.stderr_has("nothing was promoted");
    assert!(!out.stderr.contains(&g.key.secret) && !out.stderr.contains(&g.key.id));
    let listed: serde_json::Value = t
        .cmd()
        .args(["--json", "restore", "--list", "--source", "cloud"])
        .status(0)
        .json();
    assert_eq!(listed["backups"], serde_json::json!([]));

    g.cli(&["bucket", "set-quotas", &g.bucket, "--max-size", "none"])
        .unwrap();
    t.cmd().args(["external"]).status(0);
    assert_eq!(s3.multipart_uploads("laptop/"), Vec::<String>::new());
}

/// A backup root that is full when a collect that copies nothing new (every file hard-linked) writes the snapshot's
/// metadata: exit 1, the message says the backup disk is full and what to do, names the metadata file (not a
/// temporary name), `data-latest` still points at the earlier snapshot and no metadata is left without its snapshot;
/// after freeing space the next run promotes a snapshot. Before: "cannot write <root>/.data-....json.tmp-<pid>: No
/// space left on device", unlike the same disk filling during rsync ("the backup disk is full; free space or prune
/// snapshots").
#[test]
fn a_backup_root_full_at_the_metadata_says_the_disk_is_full() {
    let Some((t, root)) = collected_with("root", "1m") else {
        return;
    };
    let first = fs::read_link(t.root().join("data-latest")).unwrap();

    let fill = root.fill();
    let out = t.cmd().args(["collect"]).status(1);
    out.stderr_has("the backup disk is full; free space or prune snapshots");
    out.stderr_has(&format!("cannot write {}/data-", t.root().display()));
    out.stderr_lacks(".tmp-");
    assert_eq!(fs::read_link(t.root().join("data-latest")).unwrap(), first);
    let metadata: Vec<String> = crate::fixtures::drive::listing(&t.root())
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(metadata, [format!("{}.json", first.display())]);

    fs::remove_file(fill).unwrap();
    t.cmd().args(["collect"]).status(0);
    assert_ne!(fs::read_link(t.root().join("data-latest")).unwrap(), first);
}

/// A restore over a file that differs from the backup, with the backup root (where the replaced file is kept first)
/// full: that file is not replaced (exit 1, saying to make room in the backup root or to use `--no-keep`) and stays
/// as it was; after freeing space the same restore replaces it and keeps the user's version under `displaced/`.
#[test]
fn a_restore_whose_backup_root_is_full_keeps_the_users_file_in_place() {
    let Some((t, root)) = collected_with("root", "1m") else {
        return;
    };
    let inside = t
        .path("target")
        .join(t.home().join("data").strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fs::write(inside.join("a"), "newer work\n").unwrap();
    let restore = || {
        t.cmd()
            .args([
                "restore",
                "--set",
                "data",
                "--overwrite",
                "always",
                "--path",
            ])
            .args([t.home().join("data/a")])
            .args(["--target"])
            .args([t.path("target")])
    };
    let fill = root.fill();
    let out = restore().status(1);
    // The entry's line is a result (stdout); stderr says one entry was not restored.
    out.stdout_has("could not be kept first");
    out.stdout_has("No space left on device");
    out.stdout_has("make room in the backup root");
    out.stderr_has("1 entry was not restored");
    assert_eq!(
        fs::read_to_string(inside.join("a")).unwrap(),
        "newer work\n"
    );

    fs::remove_file(fill).unwrap();
    restore().status(0);
    assert_eq!(fs::read(inside.join("a")).unwrap(), vec![b'a'; 50_000]);
    let kept: Vec<_> = crate::fixtures::tree::walk(&t.root().join("displaced"), false)
        .into_iter()
        .filter(|(_, meta, _)| meta.is_file())
        .map(|(_, _, path)| path)
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::read_to_string(&kept[0]).unwrap(), "newer work\n");
}

/// The writes `external` makes on a drive after its archive, in their order, each the one the drive fills at: how
/// many bytes (whole pages of the tmpfs) the drive has left past the archive when it gets there (from `sizes`, what
/// each write takes), and the exit code README gives. `latest` is a symlink here, which takes no page on a tmpfs.
/// A write's name, the room the drive has left past the archive when it gets there, and the exit code.
///
/// The recovery kit (`system/`) is written only where it is the write that fills the drive, and then it gets no room
/// at all: its `lsblk.json` lists the machine's loop devices, which other tests running beside this one add and
/// remove, so its size in the run differs from the rehearsal's by pages (the official CI of session 30's work saw the
/// drive fill at `system/kit.json` where `backup.json` was meant to). Without the kit every later write's size is the
/// rehearsal's.
type LaterWrite = (&'static str, fn(&Sizes) -> i64, i32);

const AFTER_THE_ARCHIVE: [LaterWrite; 5] = [
    ("the index", |s| s.index - PAGE, 1),
    ("the system folder", |s| s.index, 1),
    ("backup.json", |s| s.index + s.system, 1),
    ("verification.sha256", |s| s.index + s.system + s.meta, 1),
    ("REPORT.html", |s| s.index + s.system + s.meta + s.sums, 3),
];

const PAGE: i64 = 4096;

/// What a backup's files take on the drive, in bytes of whole pages (from a run that had room).
struct Sizes {
    archive: i64,
    index: i64,
    /// The recovery kit (`system/`).
    system: i64,
    meta: i64,
    sums: i64,
}

/// The bytes `path` takes on its filesystem, and everything below it.
fn taken(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let own = fs::symlink_metadata(path).map_or(0, |m| {
        if m.is_dir() {
            0
        } else {
            m.blocks() as i64 * 512
        }
    });
    own + crate::fixtures::drive::listing(path)
        .iter()
        .map(|n| taken(&path.join(n)))
        .sum::<i64>()
}

/// The drive's config; `kit`: whether `external` writes the recovery kit (`system/`).
fn drive_config(retention: u32, kit: bool) -> String {
    crate::process::config(&format!(
        r#"{}, "retention": {{ "external": {retention} }}, "image": {{ "kit": {kit} }}"#,
        crate::process::DRIVE
    ))
}

/// A drive (a 64 MiB tmpfs) filling up after `external` wrote its archive, at each later write (the index, the
/// recovery kit in `system/`, `backup.json`, the sums file, `REPORT.html`), for a full and for an incremental backup:
/// the run is stopped (SIGSTOP) while it writes its archive, and the drive filled to hold exactly what it writes
/// before that write (sized from a run with room). A file of the backup that does not fit: exit 1, "the drive
/// filled up while writing", nothing promoted, the partial backup removed, the verified backup there before whole,
/// listed and still `latest`, and nothing pruned (retention 1); the page that does not fit: exit 3, the warning
/// naming it, the page there before unchanged and no temporary left. After space is freed, the next run writes a
/// backup. Before: a full drive at the kit, `backup.json` or the sums file was not said to be one ("free space on
/// it and run again"): the I/O error's kind was lost on the way up.
#[test]
fn a_drive_that_fills_after_the_archive_keeps_every_verified_backup() {
    if !testkit::require_root() {
        return;
    }
    for kind in ["full", "incremental"] {
        for (at, room, code) in AFTER_THE_ARCHIVE {
            let what = format!("{kind}, full at {at}");
            let args: &[&str] = if kind == "full" {
                &["external", "--full"]
            } else {
                &["external"]
            };
            let kit = at == "the system folder";
            let t = Test::new().config(&drive_config(5, kit));
            let drive = Mounted::tmpfs(&t.path("T9"), "64m");
            let backups = t.path("T9/backups");
            t.write("home/data/big", crate::fixtures::drive::content(8 << 20, 1));
            t.write("home/data/small", "small\n");
            t.cmd().args(["collect"]).status(0);
            t.cmd().args(["external"]).status(0);
            let verified = crate::kill_sweep::stamps(&backups);
            assert_eq!(verified.len(), 1, "{what}");
            let verified = &verified[0];

            t.write(
                "home/data/more",
                crate::fixtures::drive::content(1 << 20, 2),
            );
            std::thread::sleep(std::time::Duration::from_millis(1100)); // a new stamp
            t.cmd().args(["collect"]).status(0);
            // A run with room, for the sizes; then removed, and `latest` put back.
            t.cmd().args(args).status(0);
            let rehearsed = crate::kill_sweep::stamps(&backups)
                .into_iter()
                .find(|s| s != verified)
                .unwrap();
            let dir = backups.join(&rehearsed);
            let sizes = Sizes {
                archive: taken(&dir.join("data.tar")),
                index: taken(&dir.join("data.index.jsonl")),
                system: taken(&dir.join("system")),
                meta: taken(&dir.join("backup.json")),
                sums: taken(&dir.join("verification.sha256")),
            };
            fs::remove_dir_all(&dir).unwrap();
            fs::remove_file(backups.join("latest")).unwrap();
            std::os::unix::fs::symlink(verified, backups.join("latest")).unwrap();
            let page = fs::read(t.path("T9/REPORT.html")).unwrap();

            fs::write(
                t.path("config.json"),
                t.expand(&drive_config(if code == 3 { 5 } else { 1 }, kit)),
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            // Stopped (SIGSTOP, by the run itself at its test point) as it writes its archive, and the drive filled
            // to leave `room` past it. Before the test point, a run on a busy machine was caught after its archive
            // and index were whole, and there was no room left to leave.
            let child = (t.cmd().args(args))
                .env("DBACKUP_TEST_STOP", "archive-writing")
                .spawn();
            crate::fixtures::drive::wait_stopped(child.id());
            let (temp, _) = crate::fixtures::drive::writing(&t.path("T9"), "data.tar")
                .expect("stopped as it writes its archive");
            let left = sizes.archive - taken(&temp) + room(&sizes);
            let fill = drive.fill_leaving(left as u64);
            crate::fixtures::drive::signal(&child, libc::SIGCONT);
            let (exit, stderr) = crate::fixtures::drive::finish(child);
            assert_eq!(exit, code, "{what}: {stderr}");
            stderr_has(&stderr, "No space left on device", &what);
            if code == 1 {
                stderr_has(&stderr, "the drive filled up while writing", &what);
                stderr_has(
                    &stderr,
                    "nothing was promoted and older backups are intact",
                    &what,
                );
                stderr_has(&stderr, "the partial backup", &what);
                let named = match at {
                    "the index" => "data.index.jsonl",
                    "the system folder" => "the system folder",
                    file => file,
                };
                stderr_has(&stderr, named, &what);
                assert_eq!(
                    crate::kill_sweep::stamps(&backups),
                    std::slice::from_ref(verified),
                    "{what}"
                );
                assert_eq!(
                    fs::read_link(backups.join("latest")).unwrap(),
                    Path::new(verified),
                    "{what}"
                );
            } else {
                stderr_has(
                    &stderr,
                    &format!(
                        "cannot write {} on the drive",
                        t.path("T9/REPORT.html").display()
                    ),
                    &what,
                );
                assert!(
                    fs::read(t.path("T9/REPORT.html")).unwrap() == page,
                    "{what}: the page changed"
                );
                assert_eq!(crate::kill_sweep::stamps(&backups).len(), 2, "{what}");
            }
            crate::kill_sweep::assert_drive_whole(&t, &backups, &what);
            let left: Vec<String> = crate::fixtures::drive::listing(&t.path("T9"))
                .into_iter()
                .chain(crate::fixtures::drive::listing(&backups))
                .filter(|n| n.starts_with('.') && n != ".dbackup-destination.json")
                .collect();
            assert!(left.is_empty(), "{what}: left on the drive: {left:?}");

            fs::remove_file(fill).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let out = t.cmd().args(args).output();
            assert_eq!(out.code, 0, "{what}: the next run: {}", out.stderr);
            crate::kill_sweep::assert_drive_whole(&t, &backups, &what);
        }
    }
}

#[track_caller]
fn stderr_has(stderr: &str, text: &str, what: &str) {
    assert!(stderr.contains(text), "{what}: {text:?} not in:\n{stderr}");
}
