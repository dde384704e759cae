//! Encrypted external backups (issue 7), the write side, through the real binary and without root: plain directories
//! as drives (`require_mount: false`). What lands on the drive (`<set>.tar.age`, `<set>.index.age`, sums anyone can
//! check, `backup.json` naming recipients and nothing secret), interop with Debian's `age` CLI and GNU tar, recipients
//! files, several and ssh recipients, the passphrase mode, config errors, `dbackup keygen`, and the identity never
//! reaching the drive or the run log. The exFAT canary test is in `loopdev_encryption.rs`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dbackup::{BackupMeta, DestinationStatus, EncryptionRecord, list_drive_backups};

use crate::fixtures::age::{age_accepts, age_decrypt, have_age, secret_of};
use crate::fixtures::drive::{
    assert_same_tree, assert_sums_cover, assert_sums_pass, collect, config, destination, external,
    listing, meta_of, sample,
};
use crate::harness::{self, Cmd, Test, run_ok};

/// An `encryption` object's text for the destination.
fn encryption(body: &str) -> String {
    format!(r#""require_mount": false, "encryption": {{ {body} }}"#)
}

/// (Re)writes the test's config: the sample's two sets and one plain-directory drive `{tmp}/drive` with `extra` keys.
fn write_config(t: &Test, extra: &str) -> PathBuf {
    let drive = t.path("drive");
    fs::create_dir_all(&drive).unwrap();
    let cfg = config(&[destination("drive", &drive, extra)], "first", 5);
    fs::write(t.path("config.json"), t.expand(&cfg)).unwrap();
    drive
}

/// A test with the sample home (its big file `big` bytes) and a config of `{}` until the test writes one.
fn sampled(big: u64) -> Test {
    let t = Test::new().config("{}");
    sample(&t, big);
    t
}

/// A test with the sample home (a 300 KiB file, so archives span several 64 KiB age chunks), collected once.
fn collected() -> Test {
    let t = sampled(300 << 10);
    write_config(&t, r#""require_mount": false"#);
    collect(&t);
    t
}

/// [`collected`], when Debian's age is installed; `None` (the test skips) without it.
fn collected_with_age() -> Option<Test> {
    have_age().then(collected)
}

/// Configures encryption with a passphrase read from `file`; the drive.
fn passphrase_from(t: &Test, file: &Path) -> PathBuf {
    write_config(
        t,
        &encryption(&format!(
            r#""passphrase": true, "passphrase_file": "{}""#,
            file.display()
        )),
    )
}

/// `dbackup external` refused (exit 2): its stderr, the test directory written `{tmp}`.
#[track_caller]
fn refused_stderr(t: &Test) -> String {
    let out = t.cmd().args(["external"]).status(2);
    out.stderr
        .replace(&t.dir.path().display().to_string(), "{tmp}")
}

/// `dbackup <global> keygen --out <out>`.
fn keygen_out(t: &Test, global: &[&str], out: &Path) -> Cmd {
    t.cmd().args(global).args(["keygen", "--out"]).arg_path(out)
}

/// The newest verified backup directory on the drive.
fn newest(drive: &Path) -> PathBuf {
    list_drive_backups(&drive.join("backups"))
        .unwrap()
        .verified()
        .last()
        .expect("a verified backup")
        .path
        .clone()
}

/// `age -d -i <identity> <archive> | tar -xpf - -C <into>` as the restoration guide says; `into` is created.
#[track_caller]
fn age_tar_extract(identity: &Path, archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let out = Command::new("bash")
        .args([
            "-c",
            r#"set -o pipefail; age -d -i "$1" "$2" | tar --numeric-owner -xpf - -C "$3""#,
            "sh",
        ])
        .args([identity, archive, into])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "age -d | tar -x: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every line of a decrypted index is a JSON value; returns how many there are.
#[track_caller]
fn json_lines(plain: &[u8]) -> usize {
    let text = std::str::from_utf8(plain).expect("the index is UTF-8");
    let mut n = 0;
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        n += 1;
    }
    assert!(n > 2, "an index has a header, entries and an end line");
    n
}

/// The archive files of a backup directory.
fn names(dir: &Path) -> Vec<String> {
    listing(dir)
}

/// The paths under `dirs` whose name or content holds `needle`.
fn holders(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut out = Vec::new();
    for dir in dirs {
        for e in walkdir::WalkDir::new(dir).follow_links(false) {
            let e = e.unwrap();
            let in_content = e.file_type().is_file() && has(&fs::read(e.path()).unwrap());
            if in_content || has(e.file_name().as_encoded_bytes()) {
                out.push(e.path().to_path_buf());
            }
        }
    }
    out
}

/// Asserts no file under `dirs` holds any of `needles` (in its content or its name).
#[track_caller]
fn assert_nowhere(dirs: &[&Path], needles: &[(&str, &[u8])]) {
    for (what, needle) in needles {
        let found = holders(dirs, needle);
        assert!(found.is_empty(), "{what} is in {found:?}");
    }
}

/// What backup.json says of each set's encryption.
fn records(meta: &BackupMeta) -> Vec<(String, Option<EncryptionRecord>)> {
    meta.sets
        .iter()
        .map(|s| (s.set.clone(), s.encryption.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// What lands on the drive

#[test]
fn an_encrypted_external_writes_only_ciphertext_that_age_and_tar_restore() {
    let Some(t) = collected_with_age() else {
        return;
    };
    let (identity, recipient) = t.keygen("key.txt");
    let drive = write_config(
        &t,
        &encryption(&format!(r#""recipients": ["{recipient}"]"#)),
    );

    let r = external(&t, &[], 0);
    assert_eq!(r.destinations[0].status, DestinationStatus::Written);
    let dir = newest(&drive);
    assert_eq!(
        names(&dir),
        [
            "backup.json",
            "config.index.age",
            "config.tar.age",
            "data.index.age",
            "data.tar.age",
            "system",
            "verification.sha256"
        ],
        "no plaintext .tar or .jsonl"
    );
    // The recovery kit in system/ is encrypted to the same recipients, file by file.
    for name in names(&dir.join("system")) {
        assert!(name.ends_with(".age"), "system/{name} is not encrypted");
    }

    // Anyone can check integrity: the sums cover the ciphertext files.
    assert_sums_cover(
        &dir,
        &[
            "config.tar.age",
            "config.index.age",
            "data.tar.age",
            "data.index.age",
            "backup.json",
        ],
    );

    // backup.json: format and recipients per set, nothing secret.
    let meta = meta_of(&dir);
    let want = EncryptionRecord {
        format: "age-encryption.org/v1".into(),
        recipients: vec![recipient.clone()],
        passphrase: false,
    };
    assert_eq!(
        records(&meta),
        [
            ("config".to_string(), Some(want.clone())),
            ("data".to_string(), Some(want))
        ]
    );
    let raw = fs::read_to_string(dir.join("backup.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        value["sets"][0]["encryption"]["recipients"][0].as_str(),
        Some(recipient.as_str())
    );
    assert!(!raw.contains("AGE-SECRET-KEY"), "{raw}");
    assert!(!raw.contains(&identity.display().to_string()), "{raw}");
    // No hash of the plaintext either (it would let anyone holding the drive confirm a guess of the contents), nor
    // the names of files that had warnings.
    for set in &meta.sets {
        assert_eq!(set.tar_sha256, None, "{}", set.set);
        assert!(set.warnings.is_empty(), "{}", set.set);
    }
    assert!(!raw.contains("tar_sha256"), "{raw}");

    // Interop: Debian's age and GNU tar give back the snapshot exactly.
    for set in &meta.sets {
        let out = t.path(&format!("extracted-{}", set.set));
        age_tar_extract(&identity, &dir.join(format!("{}.tar.age", set.set)), &out);
        assert_same_tree(&t.root().join(&set.snapshot), &out);
        let index = age_decrypt(&identity, &dir.join(format!("{}.index.age", set.set)));
        assert!(
            !String::from_utf8_lossy(&index).contains("tar_sha256"),
            "the encrypted index's end line has no plaintext hash either"
        );
        let lines = json_lines(&index);
        assert!(
            lines as u64 >= set.entries,
            "{lines} lines, {} entries",
            set.entries
        );
    }
    // The sample has what a tree comparison must see: a big file over several chunks, links, modes, an empty dir.
    let data = t
        .path("extracted-data")
        .join(t.home().strip_prefix("/").unwrap())
        .join("data");
    assert!(fs::metadata(data.join("big.bin")).unwrap().len() > 4 * (64 << 10));
    assert!(
        fs::symlink_metadata(data.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::read_dir(data.join("empty")).unwrap().next().is_none());
    assert_eq!(
        harness::inode(&data.join("h2")).1,
        2,
        "h2 and projects/h1 are one file"
    );
    let config_home = t
        .path("extracted-config")
        .join(t.home().strip_prefix("/").unwrap());
    assert_eq!(harness::mode(&config_home.join(".secrets")), 0o600);

    // The identity is nowhere on the drive or in the run log.
    let secret = secret_of(&identity);
    let whole = fs::read(&identity).unwrap();
    assert_nowhere(
        &[&drive, &t.path("state")],
        &[
            ("the secret key", secret.as_bytes()),
            ("the identity file", &whole),
        ],
    );
    // The search works: the run log exists and names the backup, and the drive holds the recipient.
    let stamp = dir.file_name().unwrap().as_encoded_bytes();
    assert!(!holders(&[&t.path("state")], stamp).is_empty());
    assert!(!holders(&[&drive], recipient.as_bytes()).is_empty());
}

#[test]
fn an_encrypted_backup_run_writes_age_files_and_reports_them() {
    if !have_age() {
        return;
    }
    let t = sampled(0);
    let (identity, recipient) = t.keygen("key.txt");
    let drive = t.path("drive");
    fs::create_dir_all(&drive).unwrap();
    let cfg = format!(
        r#"{{ "backup_root": "{{root}}", "schedule": {{ "external": "always" }},
             "encryption": {{ "recipients": ["{recipient}"] }},
             "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {{ "name": "drive", "path": "{}", "require_mount": false }} ] }}"#,
        drive.display()
    );
    fs::write(t.path("config.json"), t.expand(&cfg)).unwrap();
    let out = t.cmd().args(["--json", "backup"]).status(0);
    let report: dbackup::BackupReport = out.json();
    let written = &report.external[0].destinations[0];
    assert_eq!(written.status, DestinationStatus::Written);
    let names: Vec<&str> = written.sets[0]
        .archive
        .iter()
        .chain(&written.sets[0].index)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["data.tar.age", "data.index.age"]);
    assert_eq!(
        written.sets[0]
            .encryption
            .as_ref()
            .map(|e| e.recipients.clone()),
        Some(vec![recipient])
    );
    let dir = newest(&drive);
    assert_sums_pass(&dir);
    let out_dir = t.path("x");
    age_tar_extract(&identity, &dir.join("data.tar.age"), &out_dir);
    assert_same_tree(&t.root().join(&written.sets[0].snapshot), &out_dir);
    assert_nowhere(
        &[&drive, &t.path("state")],
        &[("the secret key", secret_of(&identity).as_bytes())],
    );

    // status says the drive's newest backup is encrypted (from backup.json; nothing is decrypted).
    let status: dbackup::StatusReport = t.cmd().args(["--json", "status"]).status(0).json();
    let newest = status.destinations[0].newest.as_ref().unwrap();
    assert!(newest.encrypted, "{newest:?}");
    let text = t.cmd().args(["status"]).status(0).stdout;
    assert!(text.contains(&format!("{} (age)", newest.stamp)), "{text}");
}

// ---------------------------------------------------------------------------------------------------------------
// Recipients

#[test]
fn every_recipient_of_a_recipients_file_can_decrypt() {
    let Some(t) = collected_with_age() else {
        return;
    };
    let (id1, r1) = t.keygen("one.txt");
    let (id2, r2) = t.keygen("two.txt");
    let (id3, r3) = t.keygen("three.txt");
    let mut ids = vec![(id1, r1.clone()), (id2, r2.clone()), (id3, r3.clone())];
    // An ssh-ed25519 key too, when ssh-keygen is there.
    let ssh = testkit::tool("ssh-keygen").map(|_| {
        let key = t.path("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "tester@host", "-f"])
                .arg(&key),
        );
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        (key, public.trim().to_string())
    });
    if ssh.is_none() {
        eprintln!(
            "ssh-keygen is not installed: the ssh-ed25519 recipient is not tested (apt-get install openssh-client)"
        );
    }
    let mut file = format!("# the home server\n{r1}\n\n  # the laptop, indented\n  {r2}  \n");
    if let Some((_, public)) = &ssh {
        file.push_str(&format!("# ssh\n{public}\n"));
    }
    let recipients_file = t.write("recipients.txt", file);
    let drive = write_config(
        &t,
        &encryption(&format!(
            r#""recipients": ["{r3}"], "recipients_file": "{}""#,
            recipients_file.display()
        )),
    );
    external(&t, &[], 0);
    let dir = newest(&drive);
    let rec = meta_of(&dir).sets[0].encryption.clone().unwrap();
    let mut want = vec![r3.clone(), r1, r2];
    if let Some((key, public)) = ssh {
        // Recorded without the comment (which may name a user or a host).
        let bare: Vec<&str> = public.split_whitespace().take(2).collect();
        want.push(bare.join(" "));
        ids.push((key, String::new()));
    }
    assert_eq!(rec.recipients, want);
    assert!(
        !fs::read_to_string(dir.join("backup.json"))
            .unwrap()
            .contains("tester@host")
    );
    let plain = age_decrypt(&ids[0].0, &dir.join("config.tar.age"));
    for (id, _) in &ids {
        assert_eq!(
            age_decrypt(id, &dir.join("config.tar.age")),
            plain,
            "{}",
            id.display()
        );
        json_lines(&age_decrypt(id, &dir.join("config.index.age")));
    }
    // A stranger's identity cannot.
    let (stranger, _) = t.keygen("stranger.txt");
    assert!(!age_accepts(&stranger, &dir.join("config.tar.age")));
}

// ---------------------------------------------------------------------------------------------------------------
// Passphrase

/// Decrypts an age file encrypted to a passphrase, with the `age` crate (`age -d` would insist on a terminal).
fn scrypt_decrypt(file: &Path, passphrase: &str) -> Vec<u8> {
    let dec = age::Decryptor::new(std::io::BufReader::new(fs::File::open(file).unwrap())).unwrap();
    assert!(
        dec.is_scrypt(),
        "{} is encrypted to a passphrase",
        file.display()
    );
    let id = age::scrypt::Identity::new(age::secrecy::SecretString::from(passphrase.to_string()));
    let mut r = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_passphrase_encrypts_to_scrypt_and_records_no_recipient() {
    let Some(t) = collected_with_age() else {
        return;
    };
    let pass = t.write_secret("pass.txt", "correct horse battery staple\n");
    let drive = passphrase_from(&t, &pass);
    external(&t, &[], 0);
    let dir = newest(&drive);
    assert_sums_pass(&dir);
    let head = fs::read(dir.join("data.tar.age")).unwrap();
    let header = String::from_utf8_lossy(&head[..200]);
    assert!(
        header.starts_with("age-encryption.org/v1\n-> scrypt "),
        "{header}"
    );
    let meta = meta_of(&dir);
    for s in &meta.sets {
        let e = s.encryption.as_ref().unwrap();
        assert!(e.passphrase && e.recipients.is_empty(), "{e:?}");
    }
    let raw = fs::read_to_string(dir.join("backup.json")).unwrap();
    assert!(
        !raw.contains("correct horse") && !raw.contains("pass.txt"),
        "{raw}"
    );

    // The plaintext is the snapshot: extract it with GNU tar from the decrypted stream.
    let data = meta.sets.iter().find(|s| s.set == "data").unwrap();
    let plain = scrypt_decrypt(&dir.join("data.tar.age"), "correct horse battery staple");
    let out = t.path("x");
    fs::create_dir_all(&out).unwrap();
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-xpf", "-", "-C"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&plain).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_same_tree(&t.root().join(&data.snapshot), &out);
    json_lines(&scrypt_decrypt(
        &dir.join("data.index.age"),
        "correct horse battery staple",
    ));
    assert_nowhere(
        &[&drive, &t.path("state")],
        &[("the passphrase", b"correct horse")],
    );
}

#[test]
fn a_passphrase_that_cannot_be_read_stops_before_anything_is_written() {
    let t = collected();
    // An older, plain backup.
    let drive = write_config(&t, r#""require_mount": false"#);
    external(&t, &[], 0);
    let old = newest(&drive);
    let before = listing(&drive.join("backups"));
    let sums_before = fs::read(old.join("verification.sha256")).unwrap();

    let missing = t.path("no-such-passphrase");
    passphrase_from(&t, &missing);
    let out = t.cmd().args(["external"]).status(1);
    out.stderr_has("cannot read the passphrase")
        .stderr_has("no-such-passphrase");
    out.stderr_has("older backups are intact");
    assert_eq!(
        listing(&drive.join("backups")),
        before,
        "no temporary directory"
    );
    assert_eq!(
        fs::read(old.join("verification.sha256")).unwrap(),
        sums_before
    );
    assert_sums_pass(&old);

    // No file and no terminal: stdin is null, and the run is in a session of its own (no controlling terminal).
    write_config(&t, &encryption(r#""passphrase": true"#));
    let out = t.cmd().no_terminal().args(["external"]).status(1);
    out.stderr_has("cannot read the passphrase")
        .stderr_has("DBACKUP_PASSPHRASE_FILE");
    assert_eq!(
        listing(&drive.join("backups")),
        before,
        "no temporary directory"
    );
}

/// Runs `dbackup --config <config> -q external` on a pseudo-terminal (`script`), typing `typed`; (exit code, output).
fn external_on_a_terminal(t: &Test, typed: &str) -> (i32, String) {
    crate::fixtures::terminal::run(t, "-q external", typed, 120)
}

#[test]
fn a_passphrase_typed_on_a_terminal_is_asked_twice() {
    if !have_age() {
        return;
    }
    if !crate::fixtures::terminal::available() {
        return;
    }
    let t = collected();
    let drive = write_config(&t, &encryption(r#""passphrase": true"#));

    // Two different passphrases: nothing is written.
    let (code, out) = external_on_a_terminal(&t, "one passphrase\nanother\n");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("passphrase to encrypt the backup with:"),
        "{out}"
    );
    assert!(out.contains("the same passphrase again:"), "{out}");
    assert!(out.contains("the two passphrases typed differ"), "{out}");
    assert_eq!(listing(&drive), Vec::<String>::new(), "nothing written");

    // The same one twice: the archives open with it.
    let (code, out) = external_on_a_terminal(&t, "tr0ub4dor&3\ntr0ub4dor&3\n");
    assert_eq!(code, 0, "{out}");
    let dir = newest(&drive);
    json_lines(&scrypt_decrypt(
        &dir.join("config.index.age"),
        "tr0ub4dor&3",
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Config errors

/// The column of a config error: the config's line holds the test's directory, whose length `$TMPDIR` decides.
fn column_filter() -> Vec<(&'static str, &'static str)> {
    vec![(r"config\.json:(\d+):\d+:", "config.json:$1:[COL]:")]
}

/// `config check` expecting exit 2; stderr with the test's directory replaced.
#[track_caller]
fn check_fails(t: &Test) -> String {
    let out = t.cmd().args(["config", "check"]).status(2);
    out.stderr
        .replace(&t.dir.path().display().to_string(), "{tmp}")
}

#[test]
fn a_secret_key_in_recipients_is_refused_without_echoing_it() {
    let t = Test::new().config("{}");
    let (identity, _) = t.keygen("key.txt");
    let secret = secret_of(&identity);
    write_config(&t, &encryption(&format!(r#""recipients": ["{secret}"]"#)));
    let err = check_fails(&t);
    assert!(!err.contains(&secret), "{err}");
    assert!(!err.contains(&secret[15..]), "not even part of it: {err}");
    insta::with_settings!({ filters => column_filter() }, {
        insta::assert_snapshot!("secret_in_recipients", err);
    });
    // The external phase refuses it the same way, before touching the drive.
    let out = t.cmd().args(["external"]).status(2);
    out.stderr_lacks(&secret[15..]);
    assert_eq!(listing(&t.path("drive")), Vec::<String>::new());
}

#[test]
fn passphrase_and_recipients_together_or_neither_are_refused() {
    let t = Test::new().config("{}");
    let (_, recipient) = t.keygen("key.txt");
    write_config(
        &t,
        &encryption(&format!(
            r#""passphrase": true, "recipients": ["{recipient}"]"#
        )),
    );
    insta::with_settings!({ filters => column_filter() }, {
        insta::assert_snapshot!(
            "passphrase_and_recipients",
            check_fails(&t).replace(&recipient, "[RECIPIENT]")
        );
    });
    write_config(&t, &encryption(""));
    insta::with_settings!({ filters => column_filter() }, {
        insta::assert_snapshot!("no_recipients", check_fails(&t));
    });
}

#[test]
fn a_bad_recipients_file_is_named_with_its_line_and_nothing_is_written() {
    let t = collected();
    let (_, recipient) = t.keygen("key.txt");
    let file = t.write(
        "recipients.txt",
        format!("# mine\n{recipient}\nage1notakey\n"),
    );
    let drive = write_config(
        &t,
        &encryption(&format!(r#""recipients_file": "{}""#, file.display())),
    );
    let err = refused_stderr(&t);
    assert!(err.contains("recipients.txt, line 3"), "{err}");
    insta::assert_snapshot!("garbage_recipients_file", err);
    assert_eq!(listing(&drive), Vec::<String>::new(), "nothing written");

    // Unreadable (missing): named too.
    fs::remove_file(&file).unwrap();
    let err = refused_stderr(&t);
    assert!(err.contains("{tmp}/recipients.txt"), "{err}");
    insta::assert_snapshot!("missing_recipients_file", err);
    assert_eq!(listing(&drive), Vec::<String>::new(), "nothing written");
}

/// `dbackup keygen` writes the identity into `~/.config`, a source. With one drive encrypted and one plain, the plain
/// one's archives (full, then incremental), indexes, kit, pages and records hold not one copy of the key's bytes: it
/// is left out by its resolved path (the config names it through a symlink outside the sources), and the dry run and
/// the run say so. The encrypted drive still has it.
#[test]
fn a_plain_drive_beside_an_encrypted_one_never_holds_the_identity() {
    if !have_age() {
        return;
    }
    let t = sampled(0);
    fs::create_dir_all(t.home().join(".config/dbackup")).unwrap();
    let (identity, recipient) = t.keygen("home/.config/dbackup/identity.txt");
    let link = t.home().join("my-key");
    std::os::unix::fs::symlink(&identity, &link).unwrap();
    let (safe, plain) = (t.path("safe"), t.path("plain"));
    for d in [&safe, &plain] {
        fs::create_dir_all(d).unwrap();
    }
    let enc = encryption(&format!(
        r#""recipients": ["{recipient}"], "identity_file": "~/my-key""#
    ));
    let cfg = config(
        &[
            destination("safe", &safe, &enc),
            destination("plain", &plain, r#""require_mount": false"#),
        ],
        "all",
        5,
    );
    fs::write(t.path("config.json"), t.expand(&cfg)).unwrap();
    collect(&t);

    let line = format!(
        "left out of plain: {}, the config's identity_file of destination safe; this destination is not encrypted",
        link.display()
    );
    let plan = t.cmd().args(["--dry-run", "external"]).status(0).stdout;
    assert_eq!(plan.matches(&line).count(), 1, "{plan}");
    let json: serde_json::Value = t
        .cmd()
        .args(["--json", "--dry-run", "external"])
        .status(0)
        .json();
    crate::json::assert_valid("external-plan", &json);
    let secrets = &json["sets"][0]["secrets"][0];
    assert_eq!(
        (secrets["path"].as_str(), secrets["field"].as_str()),
        (link.to_str(), Some("identity_file of destination safe")),
        "{json:#}"
    );
    assert!(!plan.contains("left out of safe"), "{plan}");
    t.cmd().args(["external"]).status(0).stderr_has(&line);
    let first_safe = newest(&safe);

    // An incremental after a change: left out again.
    t.write("home/.config/app/state", "2\n");
    collect(&t);
    t.cmd().args(["external"]).status(0).stderr_has(&line);
    let second = meta_of(&newest(&plain));
    assert!(
        second.sets.iter().any(|s| s.base.is_some()),
        "the second backup is an incremental: {:?}",
        second.sets
    );

    let secret = secret_of(&identity);
    let whole = fs::read(&identity).unwrap();
    assert_nowhere(
        &[&plain],
        &[
            ("the secret key", secret.as_bytes()),
            ("the identity file", &whole),
        ],
    );
    // The search works: the plain drive holds the sample's other files in the clear.
    assert!(!holders(&[&plain], b"TOKEN=hunter2").is_empty());
    // The encrypted drive keeps it, encrypted.
    let out = t.path("extracted-safe");
    age_tar_extract(&identity, &first_safe.join("config.tar.age"), &out);
    let kept = out.join(identity.strip_prefix("/").unwrap());
    assert_eq!(fs::read(kept).unwrap(), whole);
}

// ---------------------------------------------------------------------------------------------------------------
// keygen

#[test]
fn keygen_writes_an_age_keygen_identity_once() {
    if !have_age() {
        return;
    }
    let t = Test::new();
    let (identity, recipient) = t.keygen("key.txt");
    assert_eq!(harness::mode(&identity), 0o600);
    let text = fs::read_to_string(&identity).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&format!("# public key: {recipient}").as_str()),
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .count(),
        1,
        "{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('#') || l.starts_with("AGE-SECRET-KEY-1")),
        "{text}"
    );
    let y = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(y.status.success());
    assert_eq!(String::from_utf8_lossy(&y.stdout).trim(), recipient);

    // Never overwritten.
    let out = keygen_out(&t, &[], &identity).output();
    assert_ne!(out.code, 0);
    out.stderr_has("already exists");
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read_to_string(&identity).unwrap(), text);

    // --json.
    let other = t.path("other.txt");
    let out = keygen_out(&t, &["--json"], &other).status(0);
    let v: serde_json::Value = out.json();
    let r = v["recipient"].as_str().unwrap();
    assert!(r.starts_with("age1"), "{v}");
    assert_eq!(v["identity_file"].as_str(), Some(other.to_str().unwrap()));
    assert!(fs::read_to_string(&other).unwrap().contains(r));
    assert_eq!(harness::mode(&other), 0o600);

    // --dry-run writes nothing.
    let dry = t.path("dry.txt");
    let out = keygen_out(&t, &["--dry-run"], &dry).status(0);
    assert!(!dry.exists());
    out.stderr_has("dry run");
    out.stdout_lacks("AGE-SECRET-KEY");
}

/// `keygen` and `config init` refuse a file that exists alike: exit 2 (usage, as README's table says; `keygen` on a
/// destination is 2 already), in a dry run too, and `--json` says so; each names the file and what to do, and
/// keygen's does not send the user to `config init`. Before, keygen exited 1 and `config init` 2.
#[test]
fn keygen_and_config_init_refuse_an_existing_file_with_the_same_exit_code() {
    let t = Test::new();
    let key = t.write("key.txt", "# mine\n");
    let config = t.write("config.json", "{ my precious edits }");
    for global in [&[][..], &["--dry-run"][..]] {
        let out = keygen_out(&t, global, &key).status(2);
        out.stderr_has(&format!(
            "{} already exists; dbackup never overwrites an identity",
            key.display()
        ));
        out.stderr_lacks("config init");
        let out = t
            .cmd()
            .args(global)
            .args(["config".as_ref(), "init".as_ref(), config.as_os_str()])
            .status(2);
        out.stderr_has(&format!("{} already exists", config.display()));
    }
    let out = keygen_out(&t, &["--json"], &key).status(2);
    assert_eq!(out.json::<serde_json::Value>()["exit"], 2, "{}", out.stdout);
    assert_eq!(fs::read_to_string(&key).unwrap(), "# mine\n");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "{ my precious edits }"
    );
}

#[test]
fn keygen_refuses_to_put_the_identity_on_a_destination() {
    let t = sampled(0);
    let drive = write_config(&t, r#""require_mount": false"#);
    fs::create_dir_all(t.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(&drive, t.path("elsewhere/drive-link")).unwrap();
    for out in [
        drive.join("key.txt"),
        t.path("elsewhere/drive-link/sub/key.txt"),
    ] {
        let r = t.cmd().args(["keygen", "--out"]).args([&out]).status(2);
        assert!(
            r.stderr.contains("is on backup destination drive") && r.stdout.is_empty(),
            "{}",
            r.stderr
        );
        assert!(!out.exists());
    }
    assert_eq!(listing(&drive), Vec::<String>::new());
    // Beside it is fine.
    t.cmd()
        .args(["keygen", "--out"])
        .args([t.path("drive-key.txt")])
        .status(0);
}

#[test]
fn keygen_help_reads_well() {
    let t = Test::new();
    let out = t.cmd().args(["keygen", "--help"]).status(0);
    insta::assert_snapshot!("keygen_help", out.stdout);
}

// ---------------------------------------------------------------------------------------------------------------
// Dry run

#[test]
fn the_dry_run_shows_the_encryption_and_the_age_names() {
    let t = collected();
    let (_, recipient) = t.keygen("key.txt");
    let drive = write_config(
        &t,
        &encryption(&format!(r#""recipients": ["{recipient}"]"#)),
    );
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    out.stdout_has(&format!("  encrypt   with age to {recipient}"));
    out.stdout_has("  archive   data.tar.age (");
    out.stdout_has("data.index.age");
    assert_eq!(
        listing(&drive),
        Vec::<String>::new(),
        "a dry run writes nothing"
    );
    let text = out
        .stdout
        .replace(&t.dir.path().display().to_string(), "[TMP]")
        .replace(&recipient, "[RECIPIENT]");
    insta::with_settings!({ filters => vec![
        (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
        (r"\.tmp-\[STAMP\]-\d+", ".tmp-[STAMP]-[PID]"),
        (r"\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
        (r"host \S+,", "host [HOST],"),
        (r"\(\w+, on [^)]*\)", "([FS])"),
        // The archive holds the test directory's ancestors: their number is $TMPDIR's depth.
        (r"\b\d+ entries", "[N] entries"),
    ] }, {
        insta::assert_snapshot!("dry_run", text);
    });

    // A passphrase: where it will come from.
    let pass = t.path("pass.txt");
    passphrase_from(&t, &pass);
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    let want = format!(
        "  encrypt   with age to a passphrase (scrypt) read from {}\n",
        pass.display()
    );
    out.stdout_has(&want);
    let from_env = t.path("env-pass.txt");
    let out = t
        .cmd()
        .env("DBACKUP_PASSPHRASE_FILE", &from_env)
        .args(["--dry-run", "external"])
        .status(0);
    let want = format!(
        "  encrypt   with age to a passphrase (scrypt) read from {}\n",
        from_env.display()
    );
    out.stdout_has(&want);
    write_config(&t, &encryption(r#""passphrase": true"#));
    let out = t.cmd().args(["--dry-run", "external"]).status(0);
    out.stdout_has("  encrypt   with age to a passphrase (scrypt) asked on the terminal, twice\n");
    assert_eq!(
        listing(&drive),
        Vec::<String>::new(),
        "a dry run writes nothing"
    );
}

trait ArgPath {
    fn arg_path(self, p: &Path) -> Self;
}

impl ArgPath for harness::Cmd {
    fn arg_path(self, p: &Path) -> Self {
        self.args([p])
    }
}
