//! Restores onto exFAT (root only: a loop device mounted by mount.exfat-fuse, like a USB stick), whose every file
//! shows the mount's fixed mode and owner: the modes and owners it cannot hold are not differences, so a second
//! restore into the same target (an interrupted restore run again) leaves what the first wrote as it is.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};

use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::demo::set_mtime;
use crate::harness::{Output, Test};

const MIB: u64 = 1 << 20;

/// What a restore's `--json` says it did with its one path.
#[derive(serde::Deserialize)]
struct Restored {
    restores: Vec<RestoredPath>,
}

#[derive(serde::Deserialize)]
struct RestoredPath {
    summary: Summary,
}

#[derive(serde::Deserialize)]
struct Summary {
    counts: Counts,
    errors: Vec<serde_json::Value>,
    displaced: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Counts {
    create: Tally,
    replace: Tally,
    unchanged: Tally,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Tally {
    entries: u64,
}

fn summary(o: &Output) -> Summary {
    let mut r: Restored = o.json();
    assert_eq!(r.restores.len(), 1, "{}", o.stdout);
    r.restores.remove(0).summary
}

/// A home's `data` restored twice onto exFAT as root: a file of another owner (uid 1000) and mode 0600, a sticky
/// directory (1777), files and directories with sub-second mtimes. The first restore writes all six without an
/// error; the second finds all six unchanged and replaces nothing, keeps nothing aside. (Before: the second replaced
/// all of them, the files copied to `displaced/` every run, as every mode showed 0777.)
#[test]
fn a_second_restore_onto_exfat_leaves_the_first_ones_files_unchanged() {
    if !loopdev::require(&[Fs::Exfat]) {
        return;
    }
    let t = Test::new().config(crate::harness::DATA_ONLY);
    let home = t.home();
    let a = t.write("home/data/a.txt", "alpha\n");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
    chown(&a, Some(1000), Some(1000)).unwrap();
    t.write("home/data/sub/b.txt", "beta\n");
    t.write("home/data/shared/c.txt", "gamma\n");
    fs::set_permissions(home.join("data/shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    for (i, p) in [
        "data/a.txt",
        "data/sub/b.txt",
        "data/shared/c.txt",
        "data/sub",
        "data/shared",
        "data",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&home.join(p), 1_577_836_803 + i as i64, 730_000_000);
    }
    t.cmd().args(["collect"]).status(0);

    let usb = Drive::exfat("USB", 16 * MIB);
    let out = usb.mount_point().join("restored");
    // Its parents there already (not restored: they are not in the set).
    fs::create_dir_all(out.join(home.strip_prefix("/").unwrap())).unwrap();
    let data = home.join("data");
    let restore = || {
        t.cmd()
            .args(["restore", "--json", "--path"])
            .args([&data])
            .args(["--target"])
            .args([&out])
            .status(0)
    };
    let tally = |create, replace, unchanged| Counts {
        create: Tally { entries: create },
        replace: Tally { entries: replace },
        unchanged: Tally { entries: unchanged },
    };

    let first = summary(&restore());
    assert_eq!(first.counts, tally(6, 0, 0));
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let restored = out.join(data.strip_prefix("/").unwrap());
    for (name, content) in [
        ("a.txt", "alpha\n"),
        ("sub/b.txt", "beta\n"),
        ("shared/c.txt", "gamma\n"),
    ] {
        assert_eq!(fs::read_to_string(restored.join(name)).unwrap(), content);
    }
    // The mtimes, in the whole seconds exfat-fuse keeps (before: the time of the restore, as exfat-fuse ignores a
    // change of the mtime alone).
    for (name, sec) in [
        ("a.txt", 1_577_836_803),
        ("shared", 1_577_836_807),
        ("", 1_577_836_808),
    ] {
        let m = fs::metadata(restored.join(name)).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (sec, 0), "{name}");
    }

    let second = summary(&restore());
    assert_eq!(second.counts, tally(0, 0, 6));
    assert!(second.displaced.is_empty(), "{:?}", second.displaced);
    assert!(!t.path("root/displaced").exists(), "nothing kept aside");

    // Said once, for people: in the plan of a dry run, and in what a run did.
    for dry_run in [true, false] {
        let o = t
            .cmd()
            .args(dry_run.then_some("--dry-run"))
            .args(["restore", "--path"])
            .args([&data])
            .args(["--target"])
            .args([&out])
            .status(0);
        let said = "modes and owners not restored: the filesystem of";
        let both = format!("{}{}", o.stdout, o.stderr);
        assert_eq!(both.matches(said).count(), 1, "{both}");
        assert!(
            both.contains("0 replaced") || both.contains("0 to replace"),
            "{both}"
        );
    }
}
