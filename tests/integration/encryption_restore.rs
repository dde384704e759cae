//! Restoring and verifying encrypted (age) backups end to end, without root: a real collect and `external` onto a
//! plain directory (`require_mount: false`) with `encryption.recipients`, then `restore` with `--identity` or the
//! config's `identity_file`: listing, whole sets, one path, `--date`, `--verify` with and without the identity, every
//! failure (wrong or missing identity, truncation, a missing final chunk, trailing garbage, a flipped byte in the
//! archive or the index) with nothing partial left at the target, and archives that Debian's `age -e` wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dbackup::{BACKUP_META_FILE, VerifyReport, read_backup_meta};

use crate::fixtures::age::{Enc, encrypted_backup, restore_with_key};
use crate::fixtures::demo::{config, drive_backup, sample};
use crate::fixtures::tree::{assert_same_tree, tree};
use crate::harness::{Test, run_ok};

/// age's STREAM: 64 KiB of plaintext per chunk, and a 16-byte tag.
const CHUNK: u64 = 64 << 10;
const TAG: u64 = 16;

/// Names under `dir` that a restore writes while a file is unfinished.
fn temp_leftovers(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dbackup-restore"))
        .collect()
}

/// Every file under `target` (restored from `--target`) has the content of the same file in the local snapshot:
/// nothing partial, nothing else.
#[track_caller]
fn assert_only_whole_files(e: &Enc, target: &Path) -> usize {
    assert_eq!(
        temp_leftovers(target),
        Vec::<String>::new(),
        "temporary files left"
    );
    let mut files = 0;
    if !target.exists() {
        return 0;
    }
    for entry in walkdir::WalkDir::new(target).follow_links(false) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let abs = Path::new("/").join(entry.path().strip_prefix(target).unwrap());
        let set = if abs.starts_with(e.data()) {
            "data"
        } else {
            "config"
        };
        let want = fs::read(e.in_snapshot(set, &abs)).unwrap();
        assert_eq!(
            fs::read(entry.path()).unwrap(),
            want,
            "{} is whole",
            abs.display()
        );
        files += 1;
    }
    files
}

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"\d{4}-\d\d-\d\d-\d{6}", "[STAMP]"),
        (r"\bage1[0-9a-z]+", "[RECIPIENT]"),
    ]
}

fn age_encrypt(recipient: &str, from: &Path, to: &Path) {
    run_ok(
        Command::new("age")
            .args(["-e", "-r", recipient, "-o"])
            .arg(to)
            .arg(from),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Restoring

#[test]
fn an_encrypted_backup_is_listed_and_restored_whole_by_path_and_by_date() {
    let e = encrypted_backup("");
    let t = &e.t;

    // The listing reads metadata only: no identity needed, and it says which sets are encrypted.
    let out = t.restore_from_drive().args(["--list"]).status(0);
    out.stdout_has("config (age), data (age)");
    let listing = crate::fixtures::drive::drive_listing(t);
    let sets = &listing.backups[0].sets;
    assert!(
        sets.iter().all(|s| s.encrypted && !s.passphrase),
        "{sets:?}"
    );
    assert!(sets[0].path.to_string_lossy().ends_with(".tar.age"));

    // The whole backup, into a target.
    let whole = t.path("whole");
    let out = t
        .restore_from_drive()
        .args(["--identity"])
        .args([&e.key])
        .args(["--target"])
        .args([&whole])
        .status(0);
    out.stdout_has("data.tar.age");
    let data = e.data();
    assert_same_tree(
        &tree(&whole.join(data.strip_prefix("/").unwrap())),
        &tree(&e.in_snapshot("data", &data)),
    );
    let config_dir = t.home().join(".config");
    assert_same_tree(
        &tree(&whole.join(config_dir.strip_prefix("/").unwrap())),
        &tree(&e.in_snapshot("config", &config_dir)),
    );

    // One file, by --date, through --drive (no destination needed).
    let one = t.path("one");
    let file = data.join("projects/important/sub/b.txt");
    restore_with_key(t, &t.path("T9"), &e.key)
        .args(["--date", &e.stamp])
        .args(["--path"])
        .args([&file])
        .args(["--target"])
        .args([&one])
        .status(0);
    let got = one.join(file.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(got).unwrap(), "important b");
    assert_eq!(assert_only_whole_files(&e, &one), 1);
}

#[test]
fn the_config_identity_is_read_only_when_an_encrypted_archive_is_opened() {
    let e = encrypted_backup(r#", "identity_file": "{tmp}/config-key.txt""#);
    let t = &e.t;
    // The configured identity file does not exist: local restores and plain listings never read it.
    let local = t.path("local");
    t.cmd()
        .args(["restore", "--target"])
        .args([&local])
        .args(["--path", "~/.secrets"])
        .status(0);
    t.cmd().args(["restore", "--list"]).status(0);
    // Reading the drive needs it, and says which file is missing.
    let out = t
        .restore_from_drive()
        .args(["--target"])
        .args([t.path("x")])
        .status(1);
    out.stderr_has("config-key.txt").stderr_has("--identity");
    assert!(!t.path("x").exists());
    // Once it is there, it is used.
    fs::copy(&e.key, t.path("config-key.txt")).unwrap();
    let out = t
        .restore_from_drive()
        .args(["--path", "~/.secrets", "--target"])
        .args([t.path("y")])
        .status(0);
    out.stderr_lacks("warning");
    // A missing configured identity is passed over (with a warning) when --identity is given.
    fs::remove_file(t.path("config-key.txt")).unwrap();
    let out = t
        .restore_from_drive()
        .args(["--path", "~/.secrets", "--identity"])
        .args([&e.key])
        .args(["--target"])
        .args([t.path("z")])
        .status(0);
    out.stderr_has("config-key.txt");
    let secret = t
        .path("z")
        .join(t.home().strip_prefix("/").unwrap())
        .join(".secrets");
    assert_eq!(fs::read_to_string(secret).unwrap(), "hunter2");
    e.assert_unprinted(&out);
}

/// The worst day's config, written with the key alone: an `encryption` naming only the identity file. It reads
/// (`config check` passes and says it writes nothing; list, verify, restore), and a run that would write to it is
/// refused before touching the drive, saying how to add the public key. Before: `config check` refused it, so
/// the worst day needed the recipient derived by hand first.
#[test]
fn an_identity_alone_reads_backups_and_writes_none() {
    let e = encrypted_backup("");
    let t = &e.t;
    let cfg = fs::read_to_string(t.path("config.json")).unwrap();
    let only_key = format!(r#""identity_file": "{}""#, e.key.display());
    let with = format!(r#""recipients": ["{}"] "#, e.recipient);
    assert!(cfg.contains(&with), "{cfg}");
    t.write("config.json", cfg.replace(&with, &only_key));
    let out = t.cmd().args(["config", "check"]).status(0);
    out.stderr_has("names only identity_file")
        .stderr_has("age-keygen -y");
    out.stdout_has("reads backups only");
    restores_the_secret_and_verifies(t);
    t.write("home/later.txt", "later\n");
    t.cmd().args(["collect"]).status(0);
    let before = fs::read_dir(t.path("T9/backups")).unwrap().count();
    let out = t.cmd().args(["external"]).status(2);
    out.stderr_has("names only an identity_file")
        .stderr_has(&format!("age-keygen -y {}", e.key.display()))
        .stderr_has("nothing was written");
    assert_eq!(fs::read_dir(t.path("T9/backups")).unwrap().count(), before);
    e.assert_unprinted(&out);
}

#[test]
fn verify_without_the_identity_checks_the_ciphertext_only_and_says_so() {
    let e = encrypted_backup("");
    let t = &e.t;
    let drive = t.path("T9");
    let out = t.restore_drive(&drive).args(["--verify"]).status(3);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("verify_encrypted_without_identity", t.without_tmp(&out.stdout));
        insta::assert_snapshot!("verify_encrypted_without_identity_stderr", t.without_tmp(&out.stderr));
    });
    let report: VerifyReport = t
        .cmd()
        .args(["--json", "restore", "--drive"])
        .args([&drive])
        .args(["--verify"])
        .status(3)
        .json();
    assert!(report.intact && !report.content_checked, "{report:?}");
    assert!(
        report
            .sets
            .iter()
            .all(|s| s.encrypted && !s.content_checked)
    );
    assert!(
        report.warnings[0].contains("NOT checked"),
        "{:?}",
        report.warnings
    );
    let sums = report.sums.unwrap();
    assert!(
        sums.ok && sums.checked == 5,
        "4 encrypted files and backup.json"
    );

    // With the identity: every entry, decrypted, against its index.
    let report: VerifyReport = t
        .cmd()
        .args(["--json", "restore", "--drive"])
        .args([&drive])
        .args(["--verify", "--identity"])
        .args([&e.key])
        .status(0)
        .json();
    assert!(report.intact && report.content_checked, "{report:?}");
    assert!(report.files >= 10 && report.sets.iter().all(|s| s.content_checked));
    assert!(report.warnings.is_empty());

    // Without the identity a changed ciphertext is still found.
    let damaged = e.copy_drive("bad");
    let a = damaged
        .join("backups")
        .join(&e.stamp)
        .join("config.tar.age");
    let mut bytes = fs::read(&a).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&a, bytes).unwrap();
    let out = t.restore_drive(&damaged).args(["--verify"]).status(1);
    out.stderr_has("config.tar.age");
}

// ---------------------------------------------------------------------------------------------------------------
// Failures: each an error naming the archive, nothing partial left behind

/// The damage done to a copy of the backup, and the file whose name the error must give.
struct Damage {
    name: &'static str,
    file: &'static str,
    apply: fn(&Path, &Enc),
}

fn flip_middle(path: &Path, _: &Enc) {
    let mut b = fs::read(path).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x20;
    fs::write(path, b).unwrap();
}

fn cut(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// The ciphertext length of an age file's header, from the plaintext length `backup.json` records.
fn header_len(e: &Enc, path: &Path) -> u64 {
    let meta = read_backup_meta(&e.dir.join(BACKUP_META_FILE)).unwrap();
    let plain = meta
        .sets
        .iter()
        .find(|s| s.set == "data")
        .unwrap()
        .tar_bytes;
    let chunks = plain.div_ceil(CHUNK).max(1);
    fs::metadata(path).unwrap().len() - plain - chunks * TAG
}

const DAMAGES: &[Damage] = &[
    Damage {
        name: "truncated",
        file: "data.tar.age",
        apply: |p, _| cut(p, fs::metadata(p).unwrap().len() - 1000),
    },
    Damage {
        name: "missing final chunk",
        file: "data.tar.age",
        apply: |p, e| {
            let header = header_len(e, p);
            let full = (fs::metadata(p).unwrap().len() - header) / (CHUNK + TAG);
            assert!(full >= 2, "the archive spans several chunks");
            cut(p, header + full * (CHUNK + TAG));
        },
    },
    Damage {
        name: "trailing garbage",
        file: "data.tar.age",
        apply: |p, _| {
            let mut b = fs::read(p).unwrap();
            b.extend_from_slice(b"trailing garbage");
            fs::write(p, b).unwrap();
        },
    },
    Damage {
        name: "flipped byte in the archive",
        file: "data.tar.age",
        apply: flip_middle,
    },
    Damage {
        name: "flipped byte in the index",
        file: "data.index.age",
        apply: flip_middle,
    },
];

#[test]
fn a_damaged_encrypted_backup_fails_naming_the_archive_and_leaves_nothing_partial() {
    let e = encrypted_backup("");
    let t = &e.t;
    for (i, d) in DAMAGES.iter().enumerate() {
        let drive = e.copy_drive(&format!("drive{i}"));
        (d.apply)(&drive.join("backups").join(&e.stamp).join(d.file), &e);
        let target = t.path(&format!("target{i}"));
        let out = restore_with_key(t, &drive, &e.key)
            .args(["--target"])
            .args([&target])
            .output();
        assert_eq!(out.code, 1, "{}: {}", d.name, out.stderr);
        assert!(
            out.stderr.contains(d.file),
            "{}: the error names {}: {}",
            d.name,
            d.file,
            out.stderr
        );
        let restored = assert_only_whole_files(&e, &target);
        if d.name == "flipped byte in the archive" {
            // Only what is in the damaged chunk is lost: listed, and everything else (authentic) is restored.
            let failed: Vec<&str> = out
                .stdout
                .lines()
                .filter(|l| l.trim_start().starts_with("failed"))
                .collect();
            assert_eq!(failed.len(), 1, "{}", out.stdout);
            assert!(
                failed[0].contains("big.bin") && failed[0].contains("does not authenticate"),
                "{}",
                out.stdout
            );
            assert!(restored >= 5, "{restored} files restored\n{}", out.stdout);
            assert!(
                !target
                    .join(e.data().strip_prefix("/").unwrap())
                    .join("projects/important/big.bin")
                    .exists()
            );
        } else {
            // Found before anything is written.
            assert_eq!(restored, 0, "{}: {}", d.name, out.stderr);
        }
        // --verify with the identity finds it too.
        let out = restore_with_key(t, &drive, &e.key)
            .args(["--verify"])
            .output();
        assert_eq!(out.code, 1, "{}: {}", d.name, out.stdout);
        assert!(out.stderr.contains(d.file), "{}: {}", d.name, out.stderr);
    }
}

#[test]
fn a_wrong_or_missing_identity_is_an_error_naming_the_archive() {
    let e = encrypted_backup("");
    let t = &e.t;
    let (other, _) = t.keygen("other.txt");
    let drive = t.path("T9");
    let target = t.path("target");
    let restore = |identity: &[&std::ffi::OsStr]| {
        t.restore_drive(&drive)
            .args(identity)
            .args(["--target"])
            .args([&target])
            .status(1)
    };
    let wrong = restore(&["--identity".as_ref(), other.as_os_str()]);
    let missing = restore(&[]);
    let absent_file = restore(&["--identity".as_ref(), "nowhere.txt".as_ref()]);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("wrong_identity", t.without_tmp(&wrong.stderr));
        insta::assert_snapshot!("missing_identity", t.without_tmp(&missing.stderr));
        insta::assert_snapshot!("absent_identity_file", t.without_tmp(&absent_file.stderr));
    });
    assert!(!target.exists(), "nothing written");
    // The recipient is recorded; the identity is not on the drive.
    let meta = fs::read_to_string(e.dir.join(BACKUP_META_FILE)).unwrap();
    assert!(meta.contains(&e.recipient));
    assert!(!meta.contains("AGE-SECRET-KEY"));
}

/// `restore --verify` when the config's `identity_file` is missing (the key kept elsewhere) checks what it can, as
/// with no identity_file at all: the encrypted files against the sums, the contents NOT checked (exit 3), saying
/// the file is missing. Before, it stopped at once (exit 1) and checked nothing. A restore still needs the key.
#[test]
fn verify_with_the_configured_identity_missing_still_checks_the_sums() {
    let e = encrypted_backup(r#", "identity_file": "{tmp}/kept-elsewhere.txt""#);
    let t = &e.t;
    let report: VerifyReport = t
        .cmd()
        .args(["--json", "restore", "--source", "external", "--verify"])
        .status(3)
        .json();
    assert!(report.intact && !report.content_checked, "{report:?}");
    assert!(report.sums.as_ref().is_some_and(|s| s.ok), "{report:?}");
    let out = t
        .cmd()
        .args(["restore", "--source", "external", "--verify"])
        .status(3);
    out.stderr_has("kept-elsewhere.txt")
        .stderr_has("verifying without it");
    let out = t
        .cmd()
        .args(["restore", "--source", "external", "--all", "--target"])
        .args([t.path("out")])
        .status(1);
    out.stderr_has("kept-elsewhere.txt");
}

/// `restore --verify` with an identity that does not open the backup (another key) checks the ciphertext against
/// the sums, says that the contents were NOT checked because of that identity (exit 3), and does not record the
/// intact backup as damaged. (Before: the set was "DAMAGED", exit 1, and the backup was noted in `damaged.json`, so
/// `status` counted 0 restore points and said to remove it, and the next external would not extend its chain.)
#[test]
fn verify_with_a_wrong_identity_does_not_call_the_backup_damaged() {
    let e = encrypted_backup("");
    let t = &e.t;
    let (other, _) = t.keygen("other.txt");
    let report: VerifyReport = t
        .cmd()
        .args([
            "--json",
            "restore",
            "--source",
            "external",
            "--verify",
            "--identity",
        ])
        .args([&other])
        .status(3)
        .json();
    assert!(report.intact && !report.content_checked, "{report:?}");
    assert!(report.sums.as_ref().is_some_and(|s| s.ok), "{report:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("NOT checked") && w.contains("none of the identities given")),
        "{:?}",
        report.warnings
    );
    let out = t
        .restore_from_drive()
        .args(["--verify", "--identity"])
        .args([&other])
        .status(3);
    out.stderr_has("NOT checked").stderr_has("other.txt");
    assert!(!out.stdout.contains("DAMAGED"), "{}", out.stdout);
    assert!(
        !t.path("state/dbackup/damaged.json").exists(),
        "an intact backup was recorded as damaged"
    );
    let status = t.cmd().args(["status"]).status(0);
    assert!(!status.stdout.contains("DAMAGED"), "{}", status.stdout);
}

/// A backup that `restore --verify` found damaged is marked on the drive's REPORT.html by the next run, but what
/// the check found (which names an entry of the encrypted set) stays off the drive.
#[test]
fn the_drive_page_marks_a_damaged_encrypted_backup_without_naming_its_files() {
    let e = encrypted_backup("");
    let t = &e.t;
    flip_middle(&e.dir.join("data.tar.age"), &e);
    t.restore_from_drive()
        .args(["--verify", "--identity"])
        .args([&e.key])
        .status(1);
    let noted = fs::read_to_string(t.path("state/dbackup/damaged.json")).unwrap();
    let entry = noted
        .split("entry ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("the problem names an entry: {noted}"))
        .to_string();
    t.cmd().args(["external"]).status(0);
    let page = fs::read_to_string(t.path("T9/REPORT.html")).unwrap();
    assert!(page.contains("DAMAGED"), "{page}");
    let name = Path::new(&entry).file_name().unwrap().to_string_lossy();
    assert!(!page.contains(&*name), "{name} is on the drive's page");
}

/// A key file named by mistake that never ends (`/dev/zero`) or is huge is refused after a bounded read with a clear
/// error, as an identity, a recipients file and a passphrase file. (Before: each was read whole, a line at a time
/// for recipients: `--identity /dev/zero` grew without end until memory ran out.)
#[test]
fn a_key_file_that_never_ends_is_refused_after_a_bounded_read() {
    let e = encrypted_backup("");
    let t = &e.t;
    let out = t
        .restore_drive(&t.path("T9"))
        .args(["--identity", "/dev/zero", "--target"])
        .args([t.path("target")])
        .memory_limit(1 << 30)
        .status(1);
    out.stderr_has("/dev/zero").stderr_has("larger than");
    assert!(!t.path("target").exists());

    let t = Test::new();
    let t = t.config(&config(
        r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ],
            "encryption": { "recipients_file": "/dev/zero" }"#,
    ));
    sample(&t, &t.path("data"));
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    let out = t.cmd().args(["external"]).memory_limit(1 << 30).status(2);
    out.stderr_has("/dev/zero").stderr_has("larger than");
    assert!(
        fs::read_dir(t.path("T9")).unwrap().next().is_none(),
        "nothing written"
    );

    let big = t.write_secret("pass.txt", "");
    fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let t = t
        .config(&config(
            r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ],
                "encryption": { "passphrase": true }"#,
        ))
        .env("DBACKUP_PASSPHRASE_FILE", &big);
    let out = t.cmd().args(["external"]).memory_limit(1 << 30).output();
    assert_ne!(out.code, 0, "{}", out.stderr);
    out.stderr_has("pass.txt").stderr_has("larger than");
}

/// `~/.secrets` restored from the drive (into `target`) is whole, and `restore --verify` of the drive's newest backup
/// finds it intact, its contents checked: its report.
#[track_caller]
fn restores_the_secret_and_verifies(t: &Test) -> VerifyReport {
    let target = t.path("target");
    t.restore_from_drive()
        .args(["--path", "~/.secrets", "--target"])
        .args([&target])
        .status(0);
    let secret = target
        .join(t.home().strip_prefix("/").unwrap())
        .join(".secrets");
    assert_eq!(fs::read_to_string(secret).unwrap(), "hunter2");
    let report: VerifyReport = t
        .cmd()
        .args(["--json", "restore", "--source", "external", "--verify"])
        .status(0)
        .json();
    assert!(report.intact && report.content_checked, "{report:?}");
    report
}

#[test]
fn a_passphrase_backup_reads_the_passphrase_from_the_file_named_in_the_environment() {
    let t = Test::new();
    let pass = t.write_secret("pass.txt", "correct horse battery staple\n");
    let t = t
        .config(&config(
            r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ],
                "encryption": { "passphrase": true }"#,
        ))
        .env("DBACKUP_PASSPHRASE_FILE", &pass);
    sample(&t, &t.path("data"));
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external", "--set", "config"]).status(0);
    // --verify reads the passphrase the same way and checks every file.
    let report = restores_the_secret_and_verifies(&t);
    assert!(report.files >= 5, "{report:?}");
    let listing = crate::fixtures::drive::drive_listing(&t);
    assert!(listing.backups[0].sets[0].passphrase);
    // A wrong passphrase: a clear error naming the archive, and nothing written.
    let wrong = t.write_secret("wrong.txt", "not it\n");
    let out = t
        .cmd()
        .env("DBACKUP_PASSPHRASE_FILE", &wrong)
        .args(["restore", "--source", "external", "--target"])
        .args([t.path("t2")])
        .status(1);
    out.stderr_has("passphrase does not decrypt")
        .stderr_has("config.tar.age");
    assert!(!t.path("t2").exists());
}

/// Two drives encrypted to different passphrases, each read from its own `passphrase_file`: whatever reads a drive
/// (`find`, `restore`, `restore --verify` and `ls`, here of the spare, T9 unplugged) decrypts it with that drive's
/// passphrase. Before, the key ring took the config's first `passphrase_file` (T9's) for every drive: the spare's
/// backups failed with "passphrase does not decrypt" unless DBACKUP_PASSPHRASE_FILE named the right file.
#[test]
fn each_drive_is_read_with_its_own_passphrase_file() {
    let t = Test::new();
    let t9 = t.write_secret("t9-pass.txt", "correct horse battery staple\n");
    let spare = t.write_secret("spare-pass.txt", "another passphrase entirely\n");
    let drive = |name: &str, pass: &Path| {
        format!(
            r#"{{ "name": "{name}", "path": "{{tmp}}/{name}", "require_mount": false,
                 "encryption": {{ "passphrase": true, "passphrase_file": "{}" }} }}"#,
            pass.display()
        )
    };
    let t = t.config(&config(&format!(
        r#", "external": {{ "mode": "all" }}, "destinations": [ {}, {} ]"#,
        drive("T9", &t9),
        drive("spare", &spare)
    )));
    sample(&t, &t.path("data"));
    fs::create_dir_all(t.path("T9")).unwrap();
    fs::create_dir_all(t.path("spare")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external", "--set", "config"]).status(0);

    // T9 unplugged: the spare alone.
    fs::rename(t.path("T9"), t.path("T9-away")).unwrap();
    let found: serde_json::Value = t.run_json(&["find", "--source", "external", ".secrets"]);
    assert_eq!(found["searched"], 1, "{found}");
    assert!(found.get("not_searched").is_none(), "{found}");
    assert_eq!(
        found["matches"][0]["versions"][0]["destination"], "spare",
        "{found}"
    );
    restores_the_secret_and_verifies(&t);
    let home = t.home().display().to_string();
    t.cmd()
        .args(["ls", "--source", "external", &home])
        .status(0)
        .stdout_has(".secrets");
}

// ---------------------------------------------------------------------------------------------------------------
// Interop: what Debian's age wrote

/// A new world and an age key pair (`key.txt`, made by `dbackup keygen`); `None` (the test skips) without Debian's age.
fn world_with_age_key() -> Option<(Test, PathBuf, String)> {
    if !testkit::require_tools(&["age"], "apt-get install age") {
        return None;
    }
    let t = Test::new();
    let (key, recipient) = t.keygen("key.txt");
    Some((t, key, recipient))
}

#[test]
fn a_gnu_tar_archive_encrypted_by_age_restores_by_scanning() {
    let Some((t, key, recipient)) = world_with_age_key() else {
        return;
    };
    let src = t.path("src");
    t.write("src/docs/a.txt", "alpha");
    t.write("src/docs/deep/b.txt", "beta");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    t.write("src/big.bin", &big);
    std::os::unix::fs::symlink("docs/a.txt", src.join("link")).unwrap();
    let stamp = "2025-04-01-031500";
    let dir = t.path("drive/backups").join(stamp);
    fs::create_dir_all(&dir).unwrap();
    let tar = t.path("plain.tar");
    run_ok(
        Command::new("tar")
            .args(["--format=posix", "-cf"])
            .arg(&tar)
            .args(["-C"])
            .arg(&src)
            .arg("."),
    );
    age_encrypt(&recipient, &tar, &dir.join("data.tar.age"));

    let target = t.path("target");
    let out = restore_with_key(&t, &t.path("drive"), &key)
        .no_config()
        .args(["--date", stamp])
        .args(["--target"])
        .args([&target])
        .status(0);
    out.stderr_has("has no index");
    // Everything below the target (the target directory itself is left as it is).
    let below = |dir: &Path| {
        let mut t = tree(dir);
        t.remove("");
        t
    };
    assert_same_tree(&below(&target), &below(&src));
    // One path of it.
    let one = t.path("one");
    restore_with_key(&t, &t.path("drive"), &key)
        .no_config()
        .args(["--date", stamp])
        .args(["--path", "/docs/deep", "--target"])
        .args([&one])
        .status(0);
    assert_eq!(
        fs::read_to_string(one.join("docs/deep/b.txt")).unwrap(),
        "beta"
    );
    assert!(!one.join("docs/a.txt").exists());
    // Verify with the identity reads it through (and fails only for the missing verification.sha256).
    let report: VerifyReport = t
        .cmd()
        .no_config()
        .args(["--json", "restore", "--drive"])
        .args([t.path("drive")])
        .args(["--date", stamp, "--verify", "--identity"])
        .args([&key])
        .status(1)
        .json();
    assert!(
        report.content_checked && report.sets[0].entries >= 6,
        "{report:?}"
    );
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].file.ends_with("verification.sha256"));
}

#[test]
fn a_dbackup_backup_reencrypted_by_age_restores_through_its_index() {
    let Some((t, key, recipient)) = world_with_age_key() else {
        return;
    };
    let t = t.config(&config(""));
    let data = t.path("data");
    sample(&t, &data);
    crate::fixtures::demo::collect_as(&t, "2025-04-01-031500");
    let backups = t.path("T9/backups");
    fs::create_dir_all(&backups).unwrap();
    let dir = drive_backup(&t.root(), &backups, "2025-04-01-031500", &["data"]);
    age_encrypt(&recipient, &dir.join("data.tar"), &dir.join("data.tar.age"));
    age_encrypt(
        &recipient,
        &dir.join("data.index.jsonl"),
        &dir.join("data.index.age"),
    );
    for f in [
        "data.tar",
        "data.index.jsonl",
        "backup.json",
        "verification.sha256",
    ] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    let data = fs::canonicalize(&data).unwrap();
    let file = data.join("projects/important/big.bin");
    let target = t.path("target");
    let out = restore_with_key(&t, &t.path("T9"), &key)
        .args(["--date", "2025-04-01-031500"])
        .args(["--path"])
        .args([&file])
        .args(["--target"])
        .args([&target])
        .status(0);
    out.stderr_lacks("has no index");
    assert_eq!(
        fs::read(target.join(file.strip_prefix("/").unwrap())).unwrap(),
        fs::read(&file).unwrap()
    );
    // And all of it, checked against the index while it is restored.
    let whole = t.path("whole");
    restore_with_key(&t, &t.path("T9"), &key)
        .args(["--date", "2025-04-01-031500"])
        .args(["--target"])
        .args([&whole])
        .status(0);
    let snap = t
        .root()
        .join("data-2025-04-01-031500")
        .join(data.strip_prefix("/").unwrap());
    assert_same_tree(
        &tree(&whole.join(data.strip_prefix("/").unwrap())),
        &tree(&snap),
    );
}

/// With no config (the built-in default), an in-place `restore --drive DIR --set data` of a passphrase-encrypted
/// backup whose set's sources are not the default config's (`/data`) is refused first, saying why and that
/// `--target` restores it elsewhere (exit 2), without asking for the passphrase: the sources are the backup's
/// record, read without a key. Before: it asked for the passphrase (here, without a terminal: failed for the lack
/// of one, exit 1), and only once given one refused the set.
#[test]
fn an_in_place_restore_outside_the_configs_sources_is_refused_before_the_passphrase_is_asked() {
    let t = Test::new();
    t.write_secret("pass.txt", "correct horse battery staple\n");
    let t = t.config(&config(
        r#", "destinations": [ { "name": "T9", "path": "{tmp}/T9", "require_mount": false } ],
            "encryption": { "passphrase": true, "passphrase_file": "{tmp}/pass.txt" }"#,
    ));
    sample(&t, &t.path("data"));
    fs::create_dir_all(t.path("T9")).unwrap();
    t.cmd().args(["collect"]).status(0);
    t.cmd().args(["external", "--set", "data"]).status(0);
    let out = t
        .cmd()
        .no_config()
        .args(["restore", "--drive"])
        .args([t.path("T9")])
        .args(["--set", "data"])
        .status(2);
    out.stderr_has("is not under the set's sources in the config (/data)")
        .stderr_has("--target DIR")
        .stderr_lacks("passphrase");
}
