//! Restore on the emulated exFAT T9 (root only): the seed's four command lines exactly as written, through the
//! `backup-restore` name, on a demo backup (local snapshots plus backups on the drive); a byte flipped on the device
//! behind the filesystem's back is found by `--verify`, and a read-only drive is read.
//!
//! The seed restores `/data/projects/important` to its original place, so those commands run in a private mount
//! namespace whose `/` is a copy-on-write overlay of the real one, with `/data` bound to the test's own directory and
//! `/tmp` (the test and the drive) bound through: the machine's real `/` is never written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::demo::{drive_backup, from_external, redate, restore, sample};
use crate::fixtures::tree::{Tree, as_backed_up, assert_same_tree, tree};
use crate::harness::{BIN, Output, Test};

const MIB: u64 = 1 << 20;

/// Whether the namespace runner can work here (root, unshare, chroot, overlayfs); says why not otherwise.
fn can_isolate() -> bool {
    if !loopdev::require(&[Fs::Exfat]) {
        return false;
    }
    for tool in ["unshare", "chroot", "mount"] {
        if testkit::tool(tool).is_none() {
            testkit::skip(&format!("{tool} is missing"));
            return false;
        }
    }
    let overlay = fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"));
    if !overlay {
        testkit::skip("the kernel has no overlayfs");
    }
    overlay
}

/// Runs the binary as `name` with `args` (and the test's config) inside a private mount namespace where `/data` is
/// `data` (see the module documentation). Same environment as the harness's commands.
fn isolated(t: &Test, data: &Path, name: &str, args: &[&str]) -> Output {
    let ns = t.path("ns");
    let root = ns.join("root");
    fs::create_dir_all(ns.join("rw")).unwrap();
    fs::create_dir_all(&root).unwrap();
    let bin = t.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let link = bin.join(name);
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let q = |p: &Path| format!("'{}'", p.display());
    let script = format!(
        "set -e
         mount -t tmpfs tmpfs {rw}
         mkdir {rw}/upper {rw}/work
         mount -t overlay overlay -o lowerdir=/,upperdir={rw}/upper,workdir={rw}/work {root}
         for d in /proc /dev /sys /tmp; do mount --rbind $d {root}$d; done
         mkdir -p {root}/data
         mount --bind {data} {root}/data
         cd {cwd}
         exec chroot {root} sh -c 'cd \"$0\" && exec \"$@\"' {cwd} {link} \"$@\"",
        rw = q(&ns.join("rw")),
        root = q(&root),
        data = q(data),
        cwd = q(t.dir.path()),
        link = q(&link),
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg("--config")
    .arg(t.path("config.json"))
    .args(args);
    t.environment(&mut cmd, "tester")
        .current_dir(t.dir.path())
        .stdin(Stdio::null());
    let out = cmd.output().expect("run unshare");
    let _ = fs::remove_dir_all(&ns);
    Output::from(out)
}

#[track_caller]
fn ok(out: Output, what: &str) -> Output {
    assert_eq!(
        out.code, 0,
        "{what}\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
    out
}

/// The demo on the T9: `/data` and the home collected twice on 2025-04-01, the last run written to the drive.
struct SeedDemo {
    t: Test,
    t9: Drive,
    /// What `/data` is inside the namespace.
    data: PathBuf,
    important: BTreeMap<String, Tree>,
}

fn seed_demo() -> SeedDemo {
    let t9 = Drive::exfat("T9", 256 * MIB);
    let t = Test::new().config(&format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [
               {{ "name": "config", "sources": ["~/.config", "~/env.sh", "~/.secrets"] }},
               {{ "name": "data", "sources": ["/data"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9" }} ] }}"#,
        t9.mount_point().display()
    ));
    let data = t.path("sysroot/data");
    sample(&t, &data);
    ok(isolated(&t, &data, "backup-collect", &[]), "first collect");
    for set in ["config", "data"] {
        redate(&t.root(), set, "2025-04-01-031500");
    }
    t.write(
        "sysroot/data/projects/important/a.txt",
        "important a, evening",
    );
    ok(isolated(&t, &data, "backup-collect", &[]), "second collect");
    for set in ["config", "data"] {
        redate(&t.root(), set, "2025-04-01-221500");
    }
    let mut important = BTreeMap::new();
    for (key, source, snap) in [
        (
            "important",
            data.join("projects/important"),
            "data-2025-04-01-221500/data/projects/important",
        ),
        (
            "config",
            t.home().join(".config"),
            &*format!(
                "config-2025-04-01-221500{}",
                t.home().join(".config").display()
            ),
        ),
    ] {
        important.insert(
            key.into(),
            as_backed_up(tree(&source), &tree(&t.root().join(snap))),
        );
    }
    let backups = t9.mount_point().join("backups");
    drive_backup(
        &t.root(),
        &backups,
        "2025-04-01-221500",
        &["config", "data"],
    );
    SeedDemo {
        t,
        t9,
        data,
        important,
    }
}

#[test]
fn the_seed_command_lines_work_as_written() {
    if !can_isolate() {
        return;
    }
    let d = seed_demo();
    let t = &d.t;

    // 1. From the local snapshots, to the original place.
    fs::remove_dir_all(d.data.join("projects/important")).unwrap();
    ok(
        isolated(
            t,
            &d.data,
            "backup-restore",
            &[
                "--source",
                "local",
                "--date",
                "2025-04-01",
                "--path",
                "/data/projects/important",
            ],
        ),
        "seed line 1",
    );
    assert_same_tree(
        &tree(&d.data.join("projects/important")),
        &d.important["important"],
    );

    // 2. The drive's backups.
    let out = ok(
        isolated(
            t,
            &d.data,
            "backup-restore",
            &["--source", "external", "--list"],
        ),
        "seed line 2",
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("2025-04-01-221500  external") && l.contains("verified, latest")),
        "{}",
        out.stdout
    );
    out.stdout_has(&format!("T9: present at {}", d.t9.mount_point().display()));

    // 3. ~/.config from the drive, to the original place.
    t.write("home/.config/app/state", "edited since");
    fs::remove_file(t.home().join(".config/app/settings.json")).unwrap();
    ok(
        isolated(
            t,
            &d.data,
            "backup-restore",
            &[
                "--source",
                "external",
                "--date",
                "2025-04-01",
                "--path",
                "~/.config",
            ],
        ),
        "seed line 3",
    );
    assert_same_tree(&tree(&t.home().join(".config")), &d.important["config"]);

    // 4. Verify.
    let out = ok(
        isolated(
            t,
            &d.data,
            "backup-restore",
            &["--source", "external", "--date", "2025-04-01", "--verify"],
        ),
        "seed line 4",
    );
    out.stdout_has("result: intact");
}

#[test]
fn a_byte_flipped_on_a_read_only_drive_is_found_by_verify() {
    let Some((t9, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 256 * MIB) else {
        return;
    };
    let t = Test::new().config(&crate::fixtures::demo::config(&format!(
        r#", "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9" }} ]"#,
        t9.mount_point().display()
    )));
    let data = t.path("data");
    sample(&t, &data);
    t.write(
        "data/projects/important/needle.txt",
        "a-unique-needle-for-the-flip",
    );
    // The real external phase writes the backup onto the exFAT drive.
    t.cmd().args(["collect"]).status(0);
    t.cmd().argv0("backup-external").status(0);
    let backups = t9.mount_point().join("backups");
    let stamp = fs::read_to_string(backups.join("LATEST"))
        .unwrap()
        .trim()
        .to_string();
    let verify = |t: &Test| {
        t.cmd()
            .argv0("backup-restore")
            .args(["--source", "external", "--verify"])
            .output()
    };
    let out = verify(&t);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // The drive mounted read-only, as the guide recommends for a restore: it is read all the same.
    t9.remount_ro();
    let out = verify(&t);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let at = t9.find_on_device(b"a-unique-needle-for-the-flip");
    assert_eq!(at.len(), 1, "the needle is on the device once: {at:?}");
    t9.flip_byte_behind_fs(at[0] + 5);
    let out = verify(&t);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let entry = data.join("projects/important/needle.txt");
    out.stderr_has(&format!(
        "{}: entry {}",
        backups.join(&stamp).join("data.tar").display(),
        entry.strip_prefix("/").unwrap().display()
    ));
    // Restoring that file refuses the damaged content; the others still come back.
    let target = t.path("r");
    let out = from_external(restore(&t), "~/data/projects/important", &target).output();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let inside = |p: &Path| target.join(p.strip_prefix("/").unwrap());
    assert!(!inside(&entry).exists());
    assert_eq!(
        fs::read_to_string(inside(&data.join("projects/important/sub/b.txt"))).unwrap(),
        "important b"
    );
}
