//! Hard-linked symlinks (`ln -P`, `cp -al`, `rsync -H` make them) through collect -> external -> restore from the
//! drive (issue 12): the drive's archive stores the second name as GNU tar does (a hard link to the first), restoring
//! the whole set gives one symlink with two names again, restoring one name alone gives a symlink with the target,
//! `restore --verify` accepts the archive, and GNU tar `-xpf` of the drive archive gives the same link count.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Test, run_ok};

/// The set `links` (`~/links`) and the plain-directory drive `<tmp>/T9`.
const CONFIG: &str = r#"{ "backup_root": "{root}",
    "backup_sets": [ { "name": "links", "sources": ["~/links"] } ],
    "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ] }"#;

/// A home with `links/target.txt`, the symlink `links/a-link -> target.txt` and its second name `links/b-link`
/// (made by `ln -P`), collected and written to the drive.
struct Setup {
    t: Test,
    /// The source directory `~/links`.
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let t = Test::new().config(CONFIG);
        let dir = t.home().join("links");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("target.txt"), "the target\n").unwrap();
        symlink("target.txt", dir.join("a-link")).unwrap();
        run_ok(
            Command::new("ln")
                .arg("-P")
                .arg(dir.join("a-link"))
                .arg(dir.join("b-link")),
        );
        assert_eq!(
            nlink(&dir.join("b-link")),
            2,
            "ln -P made a hard-linked symlink"
        );
        fs::create_dir_all(t.path("T9")).unwrap();
        t.cmd().args(["collect"]).status(0);
        t.cmd().args(["external"]).status(0);
        Setup { t, dir }
    }

    /// `name` (below `~/links`) as restored under `target`.
    fn restored(&self, target: &Path, name: &str) -> PathBuf {
        target.join(self.dir.strip_prefix("/").unwrap()).join(name)
    }

    /// The one backup's archive on the drive.
    fn archive(&self) -> PathBuf {
        let backups = self.t.path("T9/backups");
        let dir = fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.symlink_metadata().unwrap().is_dir())
            .expect("a backup on the drive");
        dir.join("links.tar")
    }
}

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().nlink()
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Asserts `p` is a symlink to `target.txt`.
#[track_caller]
fn assert_symlink(p: &Path) {
    assert!(
        fs::symlink_metadata(p).unwrap().file_type().is_symlink(),
        "{} is not a symlink",
        p.display()
    );
    assert_eq!(
        fs::read_link(p).unwrap(),
        Path::new("target.txt"),
        "{}",
        p.display()
    );
}

/// The drive's archive holds `b-link` as a hard link to `a-link` (GNU tar's listing says "link to"), the whole set
/// restored from the drive has one symlink with two names (link count 2), `--verify` passes, and GNU tar `-xpf` of
/// the archive gives the same. Before: the writer stored `b-link` as a symlink of its own, and the restore gave two
/// symlinks with link count 1 each.
#[test]
fn hard_linked_symlinks_come_back_from_the_drive_as_one_symlink_with_two_names() {
    let s = Setup::new();
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(s.archive())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.lines().any(
            |l| l.ends_with("links/b-link link to home/user/links/a-link")
                || (l.contains("links/b-link link to") && l.ends_with("links/a-link"))
        ),
        "{listing}"
    );

    let whole = s.t.path("whole");
    s.t.cmd()
        .args(["restore", "--source", "external", "--target"])
        .args([&whole])
        .status(0);
    let (a, b) = (s.restored(&whole, "a-link"), s.restored(&whole, "b-link"));
    assert_symlink(&a);
    assert_symlink(&b);
    assert_eq!(ino(&a), ino(&b), "the two names are one symlink again");
    assert_eq!(nlink(&a), 2);

    s.t.cmd()
        .args(["restore", "--source", "external", "--verify"])
        .status(0);

    let gnu = s.t.path("gnu");
    fs::create_dir(&gnu).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xpf")
            .arg(s.archive())
            .arg("-C")
            .arg(&gnu),
    );
    let (ga, gb) = (s.restored(&gnu, "a-link"), s.restored(&gnu, "b-link"));
    assert_symlink(&gb);
    assert_eq!(ino(&ga), ino(&gb), "GNU tar links the two names");
    assert_eq!(
        nlink(&gb),
        nlink(&b),
        "GNU tar and dbackup give the same link count"
    );
}

/// Each name restored alone from the drive (the second one through the index: a hard link whose first name is not
/// restored with it) is a symlink with the target. Before: this held because the archive stored the second name as
/// a symlink of its own; with the hard link stored, the indexed restore refused a hard link to anything but a file
/// ("which is a symlink, not a file") until `link_outside` learnt to make it a symlink of its own.
#[test]
fn one_name_of_a_hard_linked_symlink_restores_alone_from_the_drive() {
    let s = Setup::new();
    for name in ["b-link", "a-link"] {
        let one = s.t.path(&format!("one-{name}"));
        s.t.cmd()
            .args(["restore", "--source", "external", "--path"])
            .args([s.dir.join(name)])
            .args(["--target"])
            .args([&one])
            .status(0);
        let got = s.restored(&one, name);
        assert_symlink(&got);
        assert_eq!(nlink(&got), 1, "{name}: a symlink of its own");
        let other = if name == "a-link" { "b-link" } else { "a-link" };
        assert!(
            fs::symlink_metadata(s.restored(&one, other)).is_err(),
            "{name} alone: {other} is not restored"
        );
    }
}
