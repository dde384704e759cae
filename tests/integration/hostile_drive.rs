//! A drive that tries to redirect, hang, exhaust or crash dbackup (issue 11, sections 1 and 2), on plain directory
//! destinations (`require_mount: false`), through the real binary: a `backups` symlink, archives, indexes and
//! `backup.json` that are symlinks to a secret, FIFOs and `/dev/zero` where metadata should be, a `backup.json` that
//! names files outside the backup or records sources the config does not have, hostile set names and sizes of
//! 2^64-1. The same on a real ext4 drive (mount points included) is in `loopdev_hostile.rs`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use dbackup::ExternalReport;

use crate::fixtures::demo::landed;
use crate::fixtures::drive::listing;
use crate::fixtures::hostile::{
    assert_clean, assert_escaped, backup_dir, config, edit_meta, reseal, secret, within, world,
};
use crate::harness::Test;

/// `backups` on the drive is a symlink to a directory elsewhere: `external` refuses that destination naming the
/// link and writes nothing through it (exit 5 alone, exit 1 when another destination was written), `backup` fails,
/// and `status` and `restore --list` say why the drive is not used.
///
/// Before: `external` wrote the whole backup, marker and `latest` into the link's target, reported it verified
/// "on the drive" with exit 0, and `status` listed it there.
#[test]
fn a_backups_symlink_on_the_drive_is_refused_and_nothing_is_written_through_it() {
    let t = world(&["evil", "good"]);
    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, t.path("evil/backups")).unwrap();

    let out = t
        .cmd()
        .args(["external", "--destination", "evil"])
        .status(5);
    assert_clean(&out);
    let link = t.path("evil/backups").display().to_string();
    out.stderr_has(&format!(
        "evil: redirected: {link} is a symbolic link (to {})",
        elsewhere.display()
    ));
    out.stderr_has("nothing was written");
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));

    // With another destination present, that one is written and the run still fails.
    let out = t.cmd().args(["--json", "external"]).status(1);
    let r: ExternalReport = out.json();
    let names: Vec<&str> = r.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    assert!(r.destinations[0].backup.is_some());
    out.stderr_has("evil: redirected: ");
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));

    let out = t.cmd().args(["backup", "--force"]).status(1);
    out.stderr_has("external evil: FAILED: redirected: ");
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));

    let out = t.cmd().args(["status"]).output();
    assert_clean(&out);
    out.stdout_has("redirected");
    let out = t.cmd().args(["restore", "--list"]).status(0);
    out.stdout_has(&format!("evil: redirected: {link} is a symbolic link"));
}

/// `backups` on the drive is a regular file (a user's own file of that name): the drive is refused, nothing is
/// written, and the message says what to do. Before, it said only "bad marker: ... is a regular file, not a
/// directory: refused".
#[test]
fn a_backups_file_on_the_drive_is_refused_saying_what_to_do() {
    let t = world(&["T9"]);
    fs::write(t.path("T9/backups"), "my own notes").unwrap();
    let out = t.cmd().args(["external"]).status(5);
    out.stderr_has(&format!(
        "T9: bad marker: {} is a regular file, not a directory: refused; dbackup keeps its backups and its \
         marker in the drive's `backups` directory: rename or remove what is there, then rerun",
        t.path("T9/backups").display()
    ));
    assert_eq!(fs::read(t.path("T9/backups")).unwrap(), b"my own notes");
}

/// An archive, an index or `backup.json` on the drive that is a symlink to a secret, and a `backup.json` that names
/// the secret's path as an archive: every read is refused, naming the file, and no byte of the secret is printed.
///
/// Before: `restore --verify` printed the first ~100 bytes of the link's target in its error (the tar reader quoted
/// the "header" it found there), and so did a restore of a file from it.
#[test]
fn drive_files_that_lead_elsewhere_are_refused_without_showing_a_byte_of_them() {
    let t = world(&["T9"]);
    let secret = secret(&t);
    t.cmd().args(["external"]).status(0);
    let dir = backup_dir(&t, "T9");
    let file = t.home().join("data/notes.txt");
    let restore_one = |t: &Test| {
        t.restore_from_drive()
            .args(["--target"])
            .args([&t.path("out")])
            .args(["--path"])
            .args([&file])
            .output()
    };

    for name in ["data.tar", "data.index.jsonl"] {
        let real = dir.join(format!("{name}.real"));
        fs::rename(dir.join(name), &real).unwrap();
        symlink(&secret, dir.join(name)).unwrap();
        let out = restore_one(&t);
        assert_clean(&out);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{name} is a symbolic link")),
            "{name}: {}",
            out.stderr
        );
        let out = t.restore_from_drive().args(["--verify"]).output();
        assert_clean(&out);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains("is a symbolic link"),
            "{name}: {}{}",
            out.stdout,
            out.stderr
        );
        fs::remove_file(dir.join(name)).unwrap();
        fs::rename(&real, dir.join(name)).unwrap();
    }

    // backup.json itself a link: the backup is listed as unusable, saying why.
    let meta = dir.join("backup.json");
    let real = dir.join("backup.json.real");
    fs::rename(&meta, &real).unwrap();
    symlink(&secret, &meta).unwrap();
    let out = t.cmd().args(["restore", "--list"]).output();
    assert_clean(&out);
    out.stdout_has("backup.json is a symbolic link");
    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);
    fs::remove_file(&meta).unwrap();
    fs::rename(&real, &meta).unwrap();

    // A backup.json that names the secret as the archive (and sums that agree with it).
    let abs = secret.display().to_string();
    edit_meta(&dir, |v| {
        v["sets"][0]["archive"][0]["name"] = abs.clone().into()
    });
    let out = t.cmd().args(["restore", "--list"]).output();
    assert_clean(&out);
    out.stdout_has(&format!(
        "sets[0].archive[0].name \"{abs}\" is not a plain file name"
    ));
    let out = restore_one(&t);
    assert_clean(&out);
    assert_ne!(out.code, 0, "{}", out.stderr);
    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);
    assert_ne!(out.code, 0);
}

/// A FIFO or `/dev/zero` where `backup.json`, `LATEST` or a snapshot's metadata should be: `status`, `restore
/// --list`, `external --dry-run` and `collect` answer at once, and `status` still reports every other set and drive.
///
/// Before: `status`, `backup`, `external` and `restore --list` hung forever on a FIFO `backup.json`; `restore --list`
/// grew to 9 GB on a `backup.json -> /dev/zero`, and `status` and `collect` to 13 GB on a snapshot metadata file
/// linked to `/dev/zero`.
#[test]
fn fifos_and_endless_files_in_place_of_metadata_are_refused_at_once() {
    let t = world(&["A", "B"]);
    t.cmd().args(["external"]).status(0);
    let a = backup_dir(&t, "A");
    let b = backup_dir(&t, "B");
    let stamp_b = b.file_name().unwrap().to_string_lossy().into_owned();
    fs::remove_file(a.join("backup.json")).unwrap();
    mkfifo(&a.join("backup.json"));
    fs::remove_file(t.path("A/backups/latest")).unwrap();
    mkfifo(&t.path("A/backups/LATEST"));
    // A second set whose newest snapshot's metadata is endless.
    let cfg = fs::read_to_string(t.path("config.json")).unwrap().replace(
        r#"{ "name": "data", "sources": ["~/data"] }"#,
        r#"{ "name": "data", "sources": ["~/data"] }, { "name": "more", "sources": ["~/more"] }"#,
    );
    fs::write(t.path("config.json"), cfg).unwrap();
    t.write("home/more/x", "x");
    t.cmd().args(["collect", "--set", "more"]).status(0);
    let more = dbackup::list_snapshots(&t.root(), "more")
        .unwrap()
        .pop()
        .unwrap();
    let meta = t.root().join(format!("{}.json", more.name));
    fs::remove_file(&meta).unwrap();
    symlink("/dev/zero", &meta).unwrap();

    let out = within(60, "status", t.cmd().args(["status"]));
    assert_clean(&out);
    assert!(
        out.stdout.contains(&stamp_b),
        "drive B is still reported:\n{}",
        out.stdout
    );
    out.stdout_has("data-");
    let out = within(60, "status --json", t.cmd().args(["status", "--json"]));
    assert_clean(&out);
    let out = within(60, "restore --list", t.cmd().args(["restore", "--list"]));
    assert_clean(&out);
    out.stdout_has(&stamp_b);
    out.stdout_has("backup.json is a FIFO, not a regular file");
    let out = within(
        60,
        "external --dry-run",
        t.cmd().args(["--dry-run", "external"]),
    );
    assert_clean(&out);
    let out = within(60, "collect", t.cmd().args(["collect", "--set", "more"]));
    assert_clean(&out);

    // backup.json -> /dev/zero: refused as a link, at once.
    fs::remove_file(a.join("backup.json")).unwrap();
    symlink("/dev/zero", a.join("backup.json")).unwrap();
    let out = within(60, "restore --list", t.cmd().args(["restore", "--list"]));
    assert_clean(&out);
    out.stdout_has(&stamp_b);
    let out = within(60, "status", t.cmd().args(["status"]));
    assert_clean(&out);
}

/// A FIFO or `/dev/zero` where the run log should be (`$XDG_STATE_HOME/dbackup/log.jsonl`, and the rotated
/// `log.jsonl.1`): `status` and `collect` answer at once, `status` says it cannot read the run log, and `collect`
/// still writes its snapshot.
///
/// Before: `status` and `collect` (which reads the log to notice a backup root that is not mounted) hung forever on
/// a FIFO, and a `log.jsonl -> /dev/zero` was read until memory ran out.
#[test]
fn a_fifo_or_an_endless_run_log_is_refused_at_once() {
    let t = world(&["A"]);
    let log = t.path("state/dbackup/log.jsonl");
    for endless in [true, false] {
        let _ = fs::remove_file(&log);
        if endless {
            symlink("/dev/zero", &log).unwrap();
        } else {
            mkfifo(&log);
        }
        let out = within(60, "status", t.cmd().args(["status"]));
        assert_clean(&out);
        out.stdout_has("cannot read the run log");
        let out = within(60, "collect", t.cmd().args(["collect"]));
        assert_clean(&out);
    }
    fs::remove_file(&log).unwrap();
    mkfifo(&t.path("state/dbackup/log.jsonl.1"));
    let out = within(60, "status", t.cmd().args(["status"]));
    assert_clean(&out);
}

/// A drive whose destination marker (`backups/.dbackup-destination.json`) names a destination holding ESC, BEL and a
/// newline: `external`, `status` and `restore --list` say the drive belongs to another destination with that name
/// escaped. Before: each printed it raw, so the drive could clear or retitle the terminal and print a line of its
/// choosing.
#[test]
fn a_markers_destination_name_is_shown_escaped() {
    let t = world(&["A"]);
    t.cmd().args(["external"]).status(0);
    let marker = t.path("A/backups/.dbackup-destination.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    m["destination"] = "X\x1b[2J\x1b]0;title\x07\nFORGED line".into();
    fs::write(&marker, serde_json::to_vec(&m).unwrap()).unwrap();
    let shown = "\"X\\x1b[2J\\x1b]0;title\\x07\\nFORGED line\"";
    for (args, code) in [
        (&["external"][..], 5),
        (&["status"][..], 0),
        (&["restore", "--list"][..], 0),
    ] {
        let out = t.cmd().args(args).output();
        assert_clean(&out);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert_escaped(&format!("{args:?}"), &out);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            all.contains(&format!("belongs to destination {shown}")),
            "{args:?}: {all}"
        );
    }
}

/// A backup whose `backup.json` records a source the config no longer names for its set (here a `.ssh` directory):
/// an in-place restore refuses to write there and says to use `--target`; under `--target` it is restored, and an
/// in-place restore of what the config does name still works.
///
/// Before: the in-place restore wrote the recorded source back (a drive could record `/root/.ssh` and have
/// `authorized_keys` created there).
#[test]
fn an_in_place_restore_writes_only_under_the_sources_the_config_names() {
    let t = Test::new();
    let ssh = t.path("victim/.ssh");
    t.write("victim/.ssh/authorized_keys", "ssh-ed25519 AAAA attacker\n");
    t.write("home/data/notes.txt", "my notes\n");
    fs::create_dir_all(t.path("T9")).unwrap();
    let with_ssh = config(&["T9"]).replace(
        r#""sources": ["~/data"]"#,
        &format!(r#""sources": ["~/data", "{}"]"#, ssh.display()),
    );
    let t = t.config(&with_ssh);
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    // The config now backs up ~/data only; the key file is the user's own again.
    let t = t.config(&config(&["T9"]));
    t.write("victim/.ssh/authorized_keys", "ssh-ed25519 BBBB mine\n");
    t.write("home/data/notes.txt", "changed\n");

    let out = t.restore_from_drive().args(["--set", "data"]).status(2);
    out.stderr_has(&format!("{} (set data, from backup ", ssh.display()))
        .stderr_has("is not under the set's sources in the config")
        .stderr_has("--target DIR");
    let out = t
        .restore_from_drive()
        .args(["--path"])
        .args([&ssh.join("authorized_keys")])
        .status(2);
    out.stderr_has("--target");
    assert_eq!(
        fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        "ssh-ed25519 BBBB mine\n",
        "nothing was written there"
    );

    // What the config names is restored in place; the rest under --target.
    t.restore_from_drive()
        .args(["--path"])
        .args([&t.home().join("data")])
        .status(0);
    assert_eq!(
        fs::read_to_string(t.home().join("data/notes.txt")).unwrap(),
        "my notes\n"
    );
    let out_dir = t.path("out");
    t.restore_from_drive()
        .args(["--set", "data", "--target"])
        .args([&out_dir])
        .status(0);
    assert_eq!(
        fs::read_to_string(
            out_dir
                .join(ssh.strip_prefix("/").unwrap())
                .join("authorized_keys")
        )
        .unwrap(),
        "ssh-ed25519 AAAA attacker\n"
    );
}

/// Set names and numbers read from a drive: a set name that the config could not have (an escape sequence, a path)
/// and byte counts of 2^64-1 make the backup unusable with a message naming the file and the field; a size of
/// 2^64-1 in the index stops that file's restore with an error; nothing panics and nothing prints a raw escape.
///
/// Before: sizes of 2^64-1 in `backup.json` panicked `status`, `status --check` and `restore` (exit 101), and a set
/// name in `backup.json` printed raw on the terminal.
#[test]
fn set_names_and_numbers_from_the_drive_are_checked() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let dir = backup_dir(&t, "T9");
    let original = fs::read(dir.join("backup.json")).unwrap();

    edit_meta(&dir, |v| {
        v["sets"][0]["archive"][0]["bytes"] = u64::MAX.into();
        v["sets"][0]["index"][0]["bytes"] = u64::MAX.into();
    });
    for args in [
        &["status"][..],
        &["status", "--check"],
        &["status", "--json"],
        &["restore", "--list"],
    ] {
        let out = t.cmd().args(args).output();
        assert_clean(&out);
    }
    let out = t.cmd().args(["restore", "--list"]).output();
    out.stdout_has("sets[0].archive[0].bytes is 18446744073709551615");
    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);

    fs::write(dir.join("backup.json"), &original).unwrap();
    edit_meta(&dir, |v| v["sets"][0]["set"] = "x\u{1b}[2J\nforged".into());
    let out = t.cmd().args(["restore", "--list"]).output();
    assert_clean(&out);
    out.stdout_has(r#"sets[0].set "x\x1b[2J\nforged" is not a set name"#);
    fs::write(dir.join("backup.json"), &original).unwrap();
    reseal(&dir);

    // The index says a file is 2^64-1 bytes long.
    let index = dir.join("data.index.jsonl");
    let text = fs::read_to_string(&index).unwrap();
    let hostile: String = text
        .lines()
        .map(|l| {
            if l.contains("notes.txt") {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["size"] = u64::MAX.into();
                v.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    fs::write(&index, hostile).unwrap();
    edit_meta(&dir, |v| {
        v["sets"][0]["index"][0]["bytes"] = fs::metadata(&index).unwrap().len().into()
    });
    let out = t
        .restore_from_drive()
        .args(["--target"])
        .args([&t.path("out")])
        .args(["--path"])
        .args([&t.home().join("data/notes.txt")])
        .output();
    assert_clean(&out);
    assert_eq!(out.code, 1, "{}", out.stderr);
    out.stderr_has("size 18446744073709551615 at data_offset");
    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);
    assert_eq!(out.code, 1);
}

/// A `backup.json` whose set name is 4 MiB of ESC: `restore --list`, `external --dry-run` and `status` refuse the
/// backup in a line of a readable length that says how long the name was. Before: the note held the whole name
/// escaped, one line of 16 MiB.
#[test]
fn a_huge_name_from_the_drive_is_shown_cut() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let dir = backup_dir(&t, "T9");
    edit_meta(&dir, |v| {
        v["sets"][0]["set"] = "\u{1b}".repeat(4 << 20).into()
    });
    for args in [
        &["restore", "--list"][..],
        &["--dry-run", "external"],
        &["status"],
    ] {
        let out = t.cmd().args(args).output();
        assert_clean(&out);
        let longest = format!("{}{}", out.stdout, out.stderr)
            .lines()
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest < 1 << 20, "{args:?}: a line of {longest} bytes");
    }
    let out = t.cmd().args(["restore", "--list"]).output();
    out.stdout_has("\\x1b... (4194304 bytes in all)");
}

/// An incremental whose earlier backup, the one holding an unchanged file's content, is a symlink to a directory
/// off the drive: `--verify` of the incremental fails naming the link, and a restore of that file writes nothing;
/// neither reads a byte through the link.
///
/// Before: `restore --list` left the linked backup out, but `--verify` of the incremental said "intact" and the
/// restore read the file from the link's target, off the drive (the chain's directories were opened by path).
#[test]
fn an_earlier_backup_of_a_chain_that_is_a_symlink_is_not_read_through() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let first = backup_dir(&t, "T9");
    t.write("home/data/new.txt", "new\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external"]).status(0);
    let stamps: Vec<String> = listing(&t.path("T9/backups"))
        .into_iter()
        .filter(|n| dbackup::parse_stamp(n).is_some())
        .collect();
    assert_eq!(stamps.len(), 2, "{stamps:?}");
    let second = t.path("T9/backups").join(&stamps[1]);
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(second.join("backup.json")).unwrap()).unwrap();
    assert_eq!(meta["sets"][0]["kind"], "incremental", "{meta}");

    // The first backup moves off the drive; a symlink takes its place.
    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let moved = elsewhere.join(first.file_name().unwrap());
    fs::rename(&first, &moved).unwrap();
    symlink(&moved, &first).unwrap();

    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    out.stdout_has("is a symbolic link");
    out.stdout_lacks("result: intact");

    let target = t.path("out");
    let out = t
        .restore_from_drive()
        .args(["--target"])
        .args([&target])
        .args(["--path"])
        .args([&t.home().join("data/notes.txt")])
        .output();
    assert_clean(&out);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        !landed(&target, &t.home().join("data/notes.txt")).exists(),
        "the file was read through the link"
    );
}

/// A FIFO at `path`.
pub(crate) fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// A backup's `system/` (the recovery kit every external run writes) that is a symlink to a copy of it elsewhere:
/// `restore --verify` refuses it (exit 1, "is a symbolic link") instead of reading the kit through the link. Before,
/// each kit file was hashed through the link and the backup said intact.
#[test]
fn a_system_folder_that_is_a_symlink_is_not_read_through() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let dir = backup_dir(&t, "T9");
    assert!(dir.join("system").is_dir(), "the kit is written");
    t.restore_from_drive().args(["--verify"]).status(0);
    let elsewhere = t.path("elsewhere");
    fs::rename(dir.join("system"), &elsewhere).unwrap();
    symlink(&elsewhere, dir.join("system")).unwrap();
    let out = t.restore_from_drive().args(["--verify"]).output();
    assert_clean(&out);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("is a symbolic link"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// `latest` that cannot be moved (here a directory of that name on the drive) after the new backup was verified and
/// promoted: the backup is good and in place, so the run is done with a warning (exit 3, as README's table says),
/// not failed; the warning names the backup, `latest`, why, that dbackup does not need it, and what to do. Before:
/// exit 1, "FAILED", and retention skipped.
#[test]
fn a_latest_that_cannot_be_updated_after_a_verified_backup_is_a_warning() {
    let t = world(&["usb"]);
    t.cmd().args(["external"]).status(0);
    let latest = t.path("usb/backups/latest");
    fs::remove_file(&latest).unwrap();
    t.write("usb/backups/latest/mine.txt", "not dbackup's\n");
    t.write("home/data/more.txt", "more notes\n");
    t.cmd().args(["collect"]).status(0);

    let out = t.cmd().args(["--json", "external"]).status(3);
    let r: ExternalReport = out.json();
    let d = &r.destinations[0];
    let stamp = d.backup.clone().expect("the backup is in place");
    assert_eq!(d.exit, 3, "{d:?}");
    assert!(d.error.is_none(), "{d:?}");
    let path = latest.display().to_string();
    let warning = format!("{path} was not updated to the new backup (");
    assert!(
        d.warnings.iter().any(|w| w.starts_with(&warning)),
        "{:?}",
        d.warnings
    );
    out.stderr_has(&format!(
        "usb: backup {stamp} verified and in place at {}; warning: {warning}",
        t.path("usb/backups").join(&stamp).display()
    ))
    .stderr_has("dbackup finds the newest backup without it")
    .stderr_has(&format!("move {path} away and the next run writes it"));
    assert!(!out.stderr.contains("FAILED"), "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(latest.join("mine.txt")).unwrap(),
        "not dbackup's\n"
    );
}

/// `n` directories in T9's `backups/` named like a backup (`2020-01-01-0000NN`), each holding a junk `data.tar` and
/// nothing else: no `backup.json`, no index.
fn junk_backup_dirs(t: &Test, n: usize) {
    for i in 0..n {
        let dir = t.path(&format!("T9/backups/2020-01-01-0000{i:02}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("data.tar"), "junk").unwrap();
    }
}

/// 40 directories named like a backup without `backup.json`, each holding an archive (a junk or messy drive):
/// `restore --list` and `external --dry-run` name ten of them, each with why, and count the rest in one note.
/// Before: a note each (7,320 notes for 20,000 directories on a junk drive).
#[test]
fn directories_without_backup_json_are_named_ten_then_counted() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    junk_backup_dirs(&t, 40);
    let out = t.cmd().args(["restore", "--list"]).status(0);
    assert_clean(&out);
    let notes = out.stdout.matches("note: ").count();
    assert_eq!(
        notes, 11,
        "ten named and one counting the rest:\n{}",
        out.stdout
    );
    out.stdout_has(
        "note: 30 more directories in backups/ without usable backup.json, listed unverified without a note each",
    );
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    assert_clean(&out);
    let named = out.stdout.matches("is not used nor removed").count();
    assert_eq!(named, 10, "{}", out.stdout);
    out.stdout_has("note      30 more directories in backups/ without usable backup.json, not used nor removed");
    let kept = out.stdout.matches("not dbackup's to judge").count();
    assert_eq!(kept, 10, "{}", out.stdout);
    out.stdout_has(
        "keep      30 more directories in backups/ without usable backup.json, kept, never touched",
    );
}

/// Directories named like a backup holding neither a `backup.json` nor an archive (empty, or junk: a junk drive
/// may hold thousands) are not backups: `restore --list` shows no row for them, one note on the drive counts them,
/// the drive's count of backups leaves them out, and `--json` names each under the drive's `not_backups`, not among
/// `backups`. A directory with an archive and no `backup.json` is still a row (`unverified`, restorable when named).
/// Before: one `0 B unverified` row with no set per such directory, each counted as a backup of the drive.
#[test]
fn a_directory_with_neither_backup_json_nor_an_archive_is_not_listed_as_a_backup() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    let empty = [
        "2020-01-01-000000",
        "2020-01-02-000000",
        "2020-01-03-000000",
    ];
    for stamp in empty {
        fs::create_dir(t.path(&format!("T9/backups/{stamp}"))).unwrap();
    }
    fs::write(t.path("T9/backups/2020-01-03-000000/notes.txt"), "junk").unwrap();
    let archived = t.path("T9/backups/2020-02-01-000000");
    fs::create_dir(&archived).unwrap();
    fs::write(archived.join("data.tar"), "junk").unwrap();

    let out = t.cmd().args(["restore", "--list"]).status(0);
    assert_clean(&out);
    for stamp in empty {
        assert!(!out.stdout.contains(stamp), "{stamp}: {}", out.stdout);
    }
    assert!(!out.stdout.contains(" 0 B "), "{}", out.stdout);
    out.stdout_has("2020-02-01-000000")
        .stdout_has("T9: present at")
        .stdout_has("2 backups")
        .stdout_has(
            "note: 3 directories in backups/ hold neither backup.json nor an archive: not backups, not listed",
        );

    let json: serde_json::Value = t
        .cmd()
        .args(["--json", "restore", "--list"])
        .output()
        .json();
    crate::json::assert_valid("restore-list", &json);
    let stamps: Vec<&str> = json["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["stamp"].as_str())
        .collect();
    for stamp in empty {
        assert!(!stamps.contains(&stamp), "{stamp}: {json:#}");
    }
    assert!(stamps.contains(&"2020-02-01-000000"), "{json:#}");
    let d = &json["destinations"][0];
    assert_eq!(d["backups"], 2, "{d:#}");
    assert_eq!(d["not_backups"], serde_json::json!(empty), "{d:#}");
}

/// 30 directories named like a backup, each holding a `data.tar` and no index (a junk drive): `find` warns of ten of
/// them that it could not search them, and counts the rest in one warning; `--json` still names each. Before: a
/// warning each (20,000 lines for 20,000 such directories).
#[test]
fn backups_find_cannot_search_are_named_ten_then_counted() {
    let t = world(&["T9"]);
    t.cmd().args(["external"]).status(0);
    junk_backup_dirs(&t, 30);
    let out = t
        .cmd()
        .args(["find", "--source", "drive", "notes"])
        .status(1);
    assert_clean(&out);
    assert_eq!(
        out.stderr.matches("was not searched").count(),
        10,
        "{}",
        out.stderr
    );
    out.stderr_has("20 more backups were not searched (`--json` names each, with why)");
    out.stdout_has("notes.txt");
    let out = t
        .cmd()
        .args(["--json", "find", "--source", "drive", "notes"])
        .status(1);
    let v: serde_json::Value = out.json();
    assert_eq!(v["not_searched"].as_array().unwrap().len(), 30);
}
