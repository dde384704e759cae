//! The worst day, restored as a normal user: a home backed up by a root-run collect onto a drive (plain and age,
//! a full and an incremental), restored on a new machine by its owner, not root, with `restore`, `restore --verify`,
//! `ls` and `find` as README.md and docs/RESTORE.md say. Every file the user can own comes back whole; what only
//! root can do (another uid's ownership) is said once, with what to do, and the rest is not failed for it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fixtures::age::have_age;
use crate::fixtures::drive::{content, meta_of, new_backup};
use crate::fixtures::tree::{assert_same_tree, tree};
use crate::harness::{Cmd, Output, Test};

/// The user who restores: `nobody`, a uid with no rights over anything of root's.
const USER: u32 = 65534;
/// Another user, whose file is in the user's home.
const OTHER: u32 = 1234;

/// One world: the user's home (`home/`, the user's, one file `OTHER`'s) backed up by root to the drive `T9/`, twice
/// (a full, then an incremental), and a fresh home for the user on the new machine (`user/`, 0700, the user's).
struct World {
    t: Test,
    drive: PathBuf,
    /// The identity, readable by the user (`user/key.txt`), when the backups are encrypted.
    key: Option<PathBuf>,
    /// The backups made, oldest first, with the snapshot each was made from.
    made: Vec<(String, String)>,
}

impl World {
    fn user_home(&self) -> PathBuf {
        self.t.path("user")
    }

    /// `dbackup <args>` as the user, with `--identity` after `restore` or `ls` when the backups are encrypted.
    fn run(&self, args: &[&str]) -> Cmd {
        self.run_in(&[], args)
    }

    /// [`World::run`] with the user in the supplementary `groups`.
    fn run_in(&self, groups: &[u32], args: &[&str]) -> Cmd {
        let mut cmd = self.t.cmd_as_in(USER, groups, &self.user_home()).args(args);
        if let Some(key) = &self.key {
            cmd = cmd.args(["--identity"]).args([key]);
        }
        cmd
    }

    /// The drive as the user sees it on an exFAT stick (every file theirs, `uid=` at mount), or, `readable` false,
    /// as root wrote it on ext4 (0700 backup directories of root's).
    fn drive_readable(&self, readable: bool) {
        let (uid, gid) = if readable { (USER, USER) } else { (0, 0) };
        chown_tree(&self.drive, uid, gid);
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    let m = fs::symlink_metadata(path).unwrap();
    if m.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, sec: i64) {
    crate::fixtures::demo::set_mtime(path, sec, 123_456_789);
}

/// The tools these tests need (`setpriv` to drop root, `setfacl` for the ACL), and root; otherwise the test skips.
fn can_run(encrypted: bool) -> bool {
    if !testkit::require_root() {
        return false;
    }
    testkit::require_tools(&["setpriv", "setfacl"], "apt-get install util-linux acl")
        && (!encrypted || have_age())
}

/// The home as the brief has it, every file the user's but `docs/theirs.txt` (`OTHER`'s): a 0600 `.secrets`
/// directory with a symlink and a hard link, a 0500 directory with files, a `user.` xattr, a POSIX ACL, a sparse
/// file, a fifo, and 600 KiB of data so that a change stays an incremental.
fn home(t: &Test) {
    let h = t.home();
    let w = |rel: &str, body: &[u8], mode: u32, sec: i64| {
        let p = h.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
        chmod(&p, mode);
        set_mtime(&p, sec);
        p
    };
    w("docs/a.txt", b"alpha\n", 0o644, 1_600_000_000);
    w("docs/big.bin", &content(600 << 10, 7), 0o640, 1_600_000_001);
    let x = w("docs/x.txt", b"tagged\n", 0o644, 1_600_000_002);
    rustix::fs::setxattr(&x, "user.note", b"kept", rustix::fs::XattrFlags::empty()).unwrap();
    let acl = w("docs/acl.txt", b"shared\n", 0o640, 1_600_000_003);
    testkit::run(
        "setfacl",
        [
            "-m".as_ref(),
            format!("u:{OTHER}:r").as_ref(),
            acl.as_os_str(),
        ],
    );
    set_mtime(&acl, 1_600_000_003);
    let sparse = h.join("docs/disk.img");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"the middle", 4 << 20).unwrap();
    drop(f);
    set_mtime(&sparse, 1_600_000_004);
    let fifo_mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mkfifoat(rustix::fs::CWD, h.join("docs/fifo"), fifo_mode).unwrap();
    w("docs/theirs.txt", b"not yours\n", 0o644, 1_600_000_005);
    let token = w(".secrets/token", b"s3cret\n", 0o600, 1_600_000_006);
    std::os::unix::fs::symlink("token", h.join(".secrets/link")).unwrap();
    fs::hard_link(&token, h.join(".secrets/hard")).unwrap();
    w("ro/f1", b"one\n", 0o444, 1_600_000_007);
    w("ro/f2", b"two\n", 0o644, 1_600_000_008);
    chown_tree(&h, USER, USER);
    chown_tree(&h.join("docs/theirs.txt"), OTHER, OTHER);
    chmod(&h.join(".secrets"), 0o600);
    chmod(&h.join("ro"), 0o500);
}

/// The second backup's changes: one file changed, one added to the read-only directory.
fn change(t: &Test) {
    let h = t.home();
    fs::write(h.join("docs/a.txt"), b"alpha, changed\n").unwrap();
    set_mtime(&h.join("docs/a.txt"), 1_700_000_000);
    chmod(&h.join("ro"), 0o700);
    fs::write(h.join("ro/f3"), b"three\n").unwrap();
    set_mtime(&h.join("ro/f3"), 1_700_000_001);
    chown_tree(&h.join("ro/f3"), USER, USER);
    chmod(&h.join("ro"), 0o500);
}

/// Root collects the home (`extra` adds to it) and writes it to the drive twice (a full, an incremental); the user's
/// new home is made.
fn world(encrypted: bool, extra: fn(&Test)) -> World {
    let t = Test::new();
    // The user must get to the drive and to their own home below the test's directory.
    chmod(t.path("").as_path(), 0o755);
    let mut enc = String::new();
    let key = if encrypted {
        let (key, recipient) = t.keygen("key.txt");
        enc = format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#);
        Some(key)
    } else {
        None
    };
    let t = t.config(&format!(
        r#"{{ "backup_root": "{{root}}", "external": {{ "incremental": {{ "enabled": true }} }},
             "backup_sets": [ {{ "name": "home", "sources": ["~"] }} ],
             "destinations": [ {{ "name": "T9", "path": "{{tmp}}/T9", "require_mount": false }} ],
             "image": {{ "kit": false }}{enc} }}"#
    ));
    home(&t);
    extra(&t);
    let drive = t.path("T9");
    fs::create_dir_all(&drive).unwrap();
    let mut made = Vec::new();
    for step in 0..2 {
        if step == 1 {
            change(&t);
        }
        t.cmd().args(["collect"]).status(0);
        let stamp = new_backup(&t);
        let m = meta_of(&drive.join("backups").join(&stamp));
        let set = &m.sets[0];
        assert_eq!(
            set.kind == dbackup::ArchiveKind::Full,
            step == 0,
            "step {step}"
        );
        made.push((stamp, set.snapshot.clone()));
    }
    let user = t.path("user");
    fs::create_dir(&user).unwrap();
    chmod(&user, 0o700);
    let key = key.map(|k| {
        let copy = user.join("key.txt");
        fs::copy(&k, &copy).unwrap();
        chmod(&copy, 0o600);
        copy
    });
    chown_tree(&user, USER, USER);
    World {
        t,
        drive,
        key,
        made,
    }
}

/// One test's world (`None` when it cannot run here), its drive `readable` by the user or not: the world, the
/// drive's path, and the user's restore target `user/restored` (not made yet).
fn ready(encrypted: bool, readable: bool) -> Option<(World, String, PathBuf)> {
    ready_with(encrypted, readable, |_| {})
}

/// [`ready`] with `extra` adding to the home before it is backed up.
fn ready_with(
    encrypted: bool,
    readable: bool,
    extra: fn(&Test),
) -> Option<(World, String, PathBuf)> {
    if !can_run(encrypted) {
        return None;
    }
    let w = world(encrypted, extra);
    w.drive_readable(readable);
    let drive = w.drive.to_str().unwrap().to_string();
    let target = w.user_home().join("restored");
    Some((w, drive, target))
}

/// The home's path inside a restore target (`--target DIR` keeps the absolute path below DIR).
fn home_in(w: &World, target: &Path) -> PathBuf {
    target.join(w.t.home().strip_prefix("/").unwrap())
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(path, name, &mut buf)
        .ok()
        .map(|n| buf[..n].to_vec())
}

/// Everything of the snapshot `snapshot` came back under `got` as the user: names, kinds, modes, ns mtimes,
/// contents, symlinks, hard links; every entry the user's (the other uid's file too: only root can give it away);
/// the `user.` xattr and the ACL; the sparse file with its holes.
#[track_caller]
fn assert_restored(w: &World, snapshot: &str, got: &Path) {
    let want =
        w.t.root()
            .join(snapshot)
            .join(w.t.home().strip_prefix("/").unwrap());
    assert_same_tree(&tree(got), &tree(&want));
    for e in walkdir::WalkDir::new(got).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (USER, USER), "{}", e.path().display());
    }
    assert_eq!(
        xattr(&got.join("docs/x.txt"), "user.note").as_deref(),
        Some(&b"kept"[..])
    );
    let acl = "system.posix_acl_access";
    assert!(
        xattr(&got.join("docs/acl.txt"), acl).is_some(),
        "the ACL came back"
    );
    assert_eq!(
        xattr(&got.join("docs/acl.txt"), acl),
        xattr(&want.join("docs/acl.txt"), acl)
    );
    let disk = fs::metadata(got.join("docs/disk.img")).unwrap();
    assert!(
        disk.blocks() * 512 < 1 << 20,
        "holes stay holes: {} blocks",
        disk.blocks()
    );
}

/// Names, sizes and mtimes of everything under `dir`: what a run must not change.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (e.path().to_path_buf(), m.len(), m.mtime(), m.mtime_nsec())
        })
        .collect()
}

/// The whole walk, as the user, over a drive they can read: `--list`, `--verify` (and `--deep`), `ls`, `find`,
/// each backup of the chain restored into a directory of theirs, then one file lost from the 0500 directory
/// restored again. Nothing on the drive changes; nothing lands outside the target but dbackup's own state.
fn walk(encrypted: bool) {
    let Some((w, drive, _)) = ready(encrypted, true) else {
        return;
    };
    let before = listing(&w.drive);
    let run = |args: &[&str], code: i32| -> Output { w.run(args).status(code) };

    let list =
        w.t.cmd_as(USER, &w.user_home())
            .args(["restore", "--drive", &drive, "--list"])
            .status(0);
    for (stamp, _) in &w.made {
        list.stdout_has(stamp);
    }
    run(&["restore", "--drive", &drive, "--verify"], 0).stdout_has("result: intact");
    run(&["restore", "--drive", &drive, "--verify", "--deep"], 0).stdout_has("result: intact");
    let home = w.t.home();
    let ro = home.join("ro");
    run(&["ls", "--drive", &drive, "-R", ro.to_str().unwrap()], 0)
        .stdout_has("ro/f1")
        .stdout_has("ro/f3");
    run(&["find", "--drive", &drive, "theirs.txt"], 0).stdout_has("docs/theirs.txt");

    for (i, (stamp, snapshot)) in w.made.iter().enumerate() {
        let target = w.user_home().join(format!("restored-{i}"));
        let out = run(
            &[
                "restore",
                "--drive",
                &drive,
                "--date",
                stamp,
                "--target",
                target.to_str().unwrap(),
            ],
            3,
        );
        assert_restored(&w, snapshot, &home_in(&w, &target));
        // The other uid's file (not the test directory's two parents of root's, above the set's source): said
        // once, with what to do.
        assert_eq!(
            out.stderr.matches("warning").count(),
            1,
            "said once:\n{}",
            out.stderr
        );
        out.stderr_has(&format!(
            "warning: 1 entry was restored into {} as yours, not with the owner or group the backup gives it \
             (uid {OTHER} gid {OTHER}): only root can restore owners; everything else was restored. \
             To give them their owners, run the same restore again as root (sudo dbackup restore ...)",
            target.display()
        ));
    }
    // The user's own files alone: no warning, exit 0 (the directories of root's above the source, which the
    // restore makes the user's in the target, are not counted).
    let own = w.user_home().join("restored-own");
    run(
        &[
            "restore",
            "--drive",
            &drive,
            "--path",
            ro.to_str().unwrap(),
            "--target",
            own.to_str().unwrap(),
        ],
        0,
    )
    .stderr_lacks("warning");
    assert_eq!(listing(&w.drive), before, "the drive is as it was");
    // Outside the targets: only dbackup's own state (its run log, and what the restore replaced, kept).
    for e in fs::read_dir(w.user_home()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            name.starts_with("restored-") || [".local", "key.txt"].contains(&name.as_str()),
            "{name} in the user's home"
        );
    }
}

#[test]
fn a_plain_chain_restores_as_a_normal_user() {
    walk(false);
}

#[test]
fn an_encrypted_chain_restores_as_a_normal_user() {
    walk(true);
}

/// Lost from a read-only (0500) directory restored before: one file alone (`--path` of the file), then the
/// directory with a file changed there since (`--path` of the directory, the changed file kept first). Each time the
/// directory is opened to the user while filling and left as it was (0500, its mtime), and the files come back with
/// their modes. (Before: `Permission denied` for each file, exit 1.)
#[test]
fn files_lost_from_a_read_only_directory_come_back_into_it() {
    let Some((w, drive, target)) = ready(false, true) else {
        return;
    };
    let t = target.to_str().unwrap();
    let run = |args: &[&str], code: i32| -> Output { w.run(args).status(code) };
    run(&["restore", "--drive", &drive, "--target", t], 3);
    let got = home_in(&w, &target);
    let ro = got.join("ro");
    let dir_mtime = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.mode() & 0o7777, m.mtime(), m.mtime_nsec())
    };
    let before = dir_mtime(&ro);
    assert_eq!(before.0, 0o500);

    chmod(&ro, 0o700);
    fs::remove_file(ro.join("f2")).unwrap();
    chmod(&ro, 0o500);
    crate::fixtures::demo::set_mtime(&ro, before.1, before.2);
    let f2 = w.t.home().join("ro/f2");
    run(
        &[
            "restore",
            "--drive",
            &drive,
            "--path",
            f2.to_str().unwrap(),
            "--target",
            t,
        ],
        0,
    );
    assert_eq!(fs::read(ro.join("f2")).unwrap(), b"two\n");
    assert_eq!(dir_mtime(&ro), before, "the directory as it was");

    chmod(&ro, 0o700);
    fs::remove_file(ro.join("f3")).unwrap();
    chmod(&ro.join("f1"), 0o644);
    fs::write(ro.join("f1"), b"edited\n").unwrap();
    chmod(&ro.join("f1"), 0o444);
    chmod(&ro, 0o500);
    let path = w.t.home().join("ro");
    run(
        &[
            "restore",
            "--drive",
            &drive,
            "--path",
            path.to_str().unwrap(),
            "--target",
            t,
        ],
        0,
    )
    .stderr_has("kept in ");
    assert_restored(&w, &w.made[1].1, &got);
}

/// The drive as root wrote it on a Linux filesystem (its backups root's, 0700), and an identity file the user cannot
/// read: `restore` (`--list`, `--verify`, a restore), `ls` and `find` each say plainly that the user cannot read them
/// and what to do, and write nothing. (Before: `No backups found` and exit 0 for `--list`, "there is no verified
/// backup ...; run `dbackup external` first" for the rest, and a bare "Permission denied" for the identity.)
#[test]
fn a_drive_or_identity_the_user_cannot_read_is_said_so() {
    let Some((w, drive, target)) = ready(true, false) else {
        return;
    };
    let t = target.to_str().unwrap();
    let home = w.t.home();
    let docs = home.join("docs");
    for args in [
        vec!["restore", "--drive", &drive, "--list"],
        vec!["restore", "--drive", &drive, "--verify"],
        vec!["restore", "--drive", &drive, "--target", t],
        vec!["ls", "--drive", &drive, docs.to_str().unwrap()],
        vec!["find", "--drive", &drive, "theirs.txt"],
    ] {
        let out = w.run(&args).output();
        assert_eq!(out.code, 1, "{args:?}\n{}\n{}", out.stdout, out.stderr);
        out.stderr_has(&format!(
            "cannot read the backups in {drive}/backups: 2 of them ({}, {}) are not readable by you \
             (permission denied: a drive written by root on a Linux filesystem keeps them root's, mode 0700); \
             run the same command as root (sudo dbackup ...)",
            w.made[0].0, w.made[1].0
        ));
    }
    assert!(!target.exists());

    w.drive_readable(true);
    let key = w.key.as_ref().unwrap();
    chown_tree(key, 0, 0);
    let out = w
        .run(&["restore", "--drive", &drive, "--target", t])
        .status(1);
    out.stderr_has(&format!(
        "cannot read the identity file {}: Permission denied (os error 13); it must be readable by you: as root, \
         `sudo install -o $USER -m 600 {} ~/key.txt` makes you a copy to use instead",
        key.display(),
        key.display()
    ));
    assert!(!target.exists());
}

/// Restored again over the first restore: the 0600 `.secrets` directory does not let its owner look inside, so the
/// plan cannot tell what is there. The restore stops before writing anything and says what to do. (Before: a bare
/// "Permission denied".)
#[test]
fn a_directory_that_does_not_let_its_owner_in_is_said_so_with_what_to_do() {
    let Some((w, drive, target)) = ready(false, true) else {
        return;
    };
    let t = target.to_str().unwrap();
    w.run(&["restore", "--drive", &drive, "--target", t])
        .status(3);
    let before = listing(&target);
    let out = w
        .run(&["restore", "--drive", &drive, "--target", t])
        .status(1);
    out.stderr_has(&format!(
        "cannot look at {}/.secrets/",
        home_in(&w, &target).display()
    ))
    .stderr_has(
        "to plan the restore: Permission denied (os error 13); a directory above it does not let you in (one \
         of yours restored with mode 0600, say): `chmod u+rwx` it for the restore and back after, or run the \
         restore as root (sudo dbackup restore ...)",
    );
    assert_eq!(listing(&target), before, "nothing written");
}

/// A group the user is in (a supplementary one, not their own).
const SHARED: u32 = 2345;

/// The home with the user's entries of the group `SHARED`: a directory, a file in it, and a symlink.
fn shared_entries(t: &Test) {
    let h = t.home();
    let dir = h.join("team");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("plan.txt"), b"ours\n").unwrap();
    std::os::unix::fs::symlink("plan.txt", dir.join("link")).unwrap();
    chown_tree(&dir, USER, SHARED);
}

/// The restored entries of `SHARED` and their groups.
fn groups_of_shared(w: &World, target: &Path) -> Vec<(String, u32)> {
    let team = home_in(w, target).join("team");
    ["", "plan.txt", "link"]
        .iter()
        .map(|rel| {
            let m = team.join(rel).symlink_metadata().unwrap();
            (rel.to_string(), m.gid())
        })
        .collect()
}

/// The user's entries of a group they are in are restored with that group (a file's owner may give it any group
/// they are in, as `chown :group` and `rsync -g` do), and are not counted as not kept: the only warning is for the
/// other user's file. Without the group, those three are the user's own group and are counted. (Before: the group
/// was never set and all four were counted: `4 entries were restored ...`.)
#[test]
fn a_group_the_user_is_in_is_restored_and_not_warned_about() {
    let Some((w, drive, target)) = ready_with(false, true, shared_entries) else {
        return;
    };
    let t = target.to_str().unwrap();
    let out = w
        .run_in(&[SHARED], &["restore", "--drive", &drive, "--target", t])
        .status(3);
    out.stderr_has(&format!(
        "warning: 1 entry was restored into {t} as yours, not with the owner or group the backup gives it \
         (uid {OTHER} gid {OTHER}): only root"
    ));
    let want = |gid| {
        vec![
            ("".into(), gid),
            ("plan.txt".into(), gid),
            ("link".into(), gid),
        ]
    };
    assert_eq!(groups_of_shared(&w, &target), want(SHARED));

    let other = w.user_home().join("restored-without");
    let o = other.to_str().unwrap();
    let out = w
        .run(&["restore", "--drive", &drive, "--target", o])
        .status(3);
    out.stderr_has(&format!(
        "warning: 4 entries were restored into {o} as yours, not with the owner or group the backup gives them \
         (uid {OTHER} gid {OTHER}, uid {USER} gid {SHARED}): only root"
    ));
    assert_eq!(groups_of_shared(&w, &other), want(USER));
}

/// What a dry run's `--json` plan says beyond the plans.
#[derive(serde::Deserialize)]
struct DryRun {
    dry_run: bool,
    #[serde(default)]
    warnings: Vec<String>,
}

/// The lines of `out`'s stderr that warn, `about` something.
fn warnings<'a>(out: &'a Output, about: &str) -> Vec<&'a str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("dbackup: warning: ") && l.contains(about))
        .collect()
}

/// `restore --dry-run` as the user says beforehand, in one warning on stderr (and in the `--json` plan's `warnings`),
/// how many entries the restore will not give their owners, the count the restore then gives, and exits 3 as the
/// restore does (a dry run exits with what the run would at best); in a group, its entries are not counted in either.
/// The user's own files alone: no warning, exit 0. (Before: nothing said, exit 0.)
#[test]
fn a_dry_run_says_beforehand_which_owners_the_restore_cannot_give() {
    let Some((w, drive, target)) = ready_with(false, true, shared_entries) else {
        return;
    };
    let run = |groups: &[u32], target: &Path, more: &[&str], code: i32| -> Output {
        let args = [
            "restore",
            "--drive",
            &drive,
            "--target",
            target.to_str().unwrap(),
        ];
        w.run_in(groups, &[&args[..], more].concat()).status(code)
    };
    let dry = run(&[SHARED], &target, &["--dry-run"], 3);
    dry.stdout_has("dry run: nothing is written");
    let said = warnings(&dry, "");
    assert_eq!(said.len(), 1, "{}", dry.stderr);
    insta::assert_snapshot!("dry_run_owners_warning", w.t.without_tmp(said[0]));
    let json = run(&[SHARED], &target, &["--dry-run", "--json"], 3);
    crate::json::assert_valid("restore-plan", &json.json());
    let plan: DryRun = json.json();
    assert!(plan.dry_run);
    assert_eq!(plan.warnings, [&said[0]["dbackup: warning: ".len()..]]);
    assert!(!target.exists(), "a dry run writes nothing");
    let restored = run(&[SHARED], &target, &[], 3);
    assert_eq!(warnings(&restored, "").len(), 1, "{}", restored.stderr);
    restored.stderr_has("warning: 1 entry was restored into");

    // Not in the group: its three entries are counted too, the same in both.
    let other = w.user_home().join("restored-without");
    run(&[], &other, &["--dry-run"], 3).stderr_has("warning: 4 entries would be restored into");
    run(&[], &other, &[], 3).stderr_has("warning: 4 entries were restored into");

    // The user's own files alone: nothing to say, exit 0, as the restore.
    let ro = w.t.home().join("ro");
    let own = w.user_home().join("restored-own");
    let path = ["--path", ro.to_str().unwrap()];
    let dry = run(&[], &own, &[&path[..], &["--dry-run"]].concat(), 0);
    assert_eq!(warnings(&dry, ""), Vec::<&str>::new());
    run(&[], &own, &path, 0).stderr_lacks("warning");
}

/// The newest backup on the drive written by root (0700, root's) beside one the user can read: `restore --list`,
/// `find`, `ls` and a restore each say on stderr, in one line, that it was passed over and why; the restore (of the
/// older backup, the newest the user can read) and `--list` go on as before, `find` exits 1 as for any backup it
/// could not search. (Before: passed over silently, and the restore restored the older backup without a word.)
#[test]
fn a_backup_the_user_cannot_read_among_readable_ones_is_said_so() {
    let Some((w, drive, target)) = ready(false, true) else {
        return;
    };
    let (newest, old) = (&w.made[1].0, &w.made[0].0);
    let dir = w.drive.join("backups").join(newest);
    chown_tree(&dir, 0, 0);
    chmod(&dir, 0o700);
    let said = format!(
        "warning: backup {newest} in {drive}/backups was passed over: it is not readable by you (permission denied: a \
         drive written by root on a Linux filesystem keeps it root's, mode 0700); run the same command as root (sudo \
         dbackup ...) to read it"
    );
    let passed = |out: &Output| {
        let lines = warnings(out, "passed over");
        assert_eq!(lines.len(), 1, "said once:\n{}", out.stderr);
        let shown =
            w.t.without_tmp(lines[0])
                .replace(newest.as_str(), "[STAMP]");
        insta::assert_snapshot!("passed_over", shown);
        out.stderr_has(&said);
    };
    let list = w.run(&["restore", "--drive", &drive, "--list"]).status(0);
    list.stdout_has(old).stdout_lacks(newest);
    passed(&list);
    let find = w.run(&["find", "--drive", &drive, "theirs.txt"]).status(1);
    find.stdout_has("docs/theirs.txt");
    passed(&find);
    let docs = w.t.home().join("docs");
    passed(
        &w.run(&["ls", "--drive", &drive, docs.to_str().unwrap()])
            .status(0),
    );
    let t = target.to_str().unwrap();
    let restored = w
        .run(&["restore", "--drive", &drive, "--target", t])
        .status(3);
    passed(&restored);
    assert_eq!(
        fs::read(home_in(&w, &target).join("docs/a.txt")).unwrap(),
        b"alpha\n",
        "the older backup's"
    );
}

/// What a restore's `--json` says it did with its one path: the entries replaced and left unchanged.
#[derive(serde::Deserialize)]
struct Restored {
    restores: Vec<RestoredPath>,
}

#[derive(serde::Deserialize)]
struct RestoredPath {
    summary: RestoredSummary,
}

#[derive(serde::Deserialize)]
struct RestoredSummary {
    counts: RestoredCounts,
}

#[derive(serde::Deserialize)]
struct RestoredCounts {
    replace: RestoredTally,
    unchanged: RestoredTally,
}

#[derive(serde::Deserialize)]
struct RestoredTally {
    entries: u64,
}

/// Restored again over an earlier restore whose entries of `SHARED` were left with the user's own group (by a restore
/// before groups were given, or another tool): the group the user can give is given back (the three counted as
/// replaced, the file rewritten as root's restore rewrites a file whose owner alone differs), and the other user's
/// file, whose owner the user cannot give, is left as it is (not rewritten on every run) yet still counted in the
/// warning. Restored once more: nothing replaced, the same warning. (Before: the three were left with the wrong group
/// as unchanged, and the warning said nothing of the other user's file: exit 0.)
#[test]
fn a_group_left_wrong_by_an_earlier_restore_is_given_back() {
    let Some((w, drive, target)) = ready_with(false, true, shared_entries) else {
        return;
    };
    let t = target.to_str().unwrap();
    // The two directories of the home with the entries in question (`.secrets`, 0600, would stop a restore over it).
    let (docs, team) = (w.t.home().join("docs"), w.t.home().join("team"));
    let paths = [
        "--path",
        docs.to_str().unwrap(),
        "--path",
        team.to_str().unwrap(),
    ];
    let restore = || {
        let args = ["restore", "--drive", &drive, "--target", t, "--json"];
        let out = w.run_in(&[SHARED], &[&args[..], &paths].concat()).status(3);
        let said = warnings(&out, "");
        assert_eq!(said.len(), 1, "{}", out.stderr);
        out.stderr_has(&format!(
            "warning: 1 entry was restored into {t} as yours, not with the owner or group the backup gives it \
             (uid {OTHER} gid {OTHER}): only root"
        ));
        let r: Restored = out.json();
        let counts = r.restores.iter().map(|p| &p.summary.counts);
        counts.fold((0, 0), |(r, u), c| {
            (r + c.replace.entries, u + c.unchanged.entries)
        })
    };
    restore();
    let team = home_in(&w, &target).join("team");
    for rel in ["", "plan.txt", "link"] {
        std::os::unix::fs::lchown(team.join(rel), None, Some(USER)).unwrap();
    }
    let theirs = home_in(&w, &target).join("docs/theirs.txt");
    let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
    let theirs_ino = ino(&theirs);
    let args = ["restore", "--drive", &drive, "--target", t, "--dry-run"];
    let dry = w.run_in(&[SHARED], &[&args[..], &paths].concat()).status(3);
    assert_eq!(warnings(&dry, "").len(), 1, "{}", dry.stderr);
    dry.stderr_has(&format!(
        "warning: 1 entry would be restored into {t} as yours"
    ));
    let (replaced, unchanged) = restore();
    assert_eq!(replaced, 3, "the three entries of {SHARED}");
    assert_eq!(
        groups_of_shared(&w, &target),
        [("", SHARED), ("plan.txt", SHARED), ("link", SHARED)].map(|(r, g)| (r.to_string(), g))
    );
    assert_eq!(
        ino(&theirs),
        theirs_ino,
        "the other user's file is left as it is"
    );
    let (again, same) = restore();
    assert_eq!((again, same), (0, unchanged + 3), "nothing left to give");
    assert_eq!(ino(&theirs), theirs_ino);
}
