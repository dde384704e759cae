//! A lost drive leaks nothing (issue 7): a canary placed in `~/.secrets` (in a file's content and in a file's name)
//! is absent from the raw bytes of an emulated exFAT T9 after an encrypted backup, and so is the identity; the same
//! backup unencrypted on the same kind of drive holds both canaries, so the search is shown to find them. Root-only
//! (loop devices); skips with a message otherwise.

use std::fs;
use std::path::{Path, PathBuf};

use dbackup::DestinationStatus;
use testkit::loopdev::{self, Drive, Fs};

use crate::fixtures::age::{age_accepts, age_decrypt, have_age};
use crate::fixtures::drive::{
    assert_nothing_promoted, assert_old_backup_intact, assert_sums_pass, backups, content,
    destination, external, new_backup, set_mode, spawn_caught_writing_file, stopped_while_writing,
};
use crate::harness::Test;

const MIB: u64 = 1 << 20;

/// Found in the content of `~/.secrets/token`, and nowhere else.
const CANARY: &str = "CANARY-dbackup-7c41e9-the-password-is-swordfish";
/// Found in a file name under `~/.secrets/`, and nowhere else.
const NAME_CANARY: &str = "canary-name-b20f6d-bank-pin";

/// A home with `~/.secrets` (the canaries, 0700/0600) and `~/data` (a file over several age chunks).
fn home(t: &Test) {
    let secrets = t.home().join(".secrets");
    let token = t.write("home/.secrets/token", format!("{CANARY}\n"));
    set_mode(&token, 0o600);
    t.write(
        &format!("home/.secrets/{NAME_CANARY}.txt"),
        "the name is the secret\n",
    );
    set_mode(&secrets, 0o700);
    t.write("home/data/big.bin", content(600 << 10, 7));
    t.write("home/data/notes.txt", "notes\n");
}

/// A test whose config writes the sets `secrets` and `data` to the drive mounted at `mp`, with `extra` keys.
fn test_for(mp: &Path, extra: &str) -> Test {
    let cfg = format!(
        r#"{{ "backup_root": "{{root}}",
             "backup_sets": [
               {{ "name": "secrets", "sources": ["~/.secrets"] }},
               {{ "name": "data", "sources": ["~/data"] }} ],
             "destinations": [ {} ] }}"#,
        destination("T9", mp, &format!(r#""fs_label": "T9"{extra}"#))
    );
    let t = Test::new().config(&cfg);
    home(&t);
    t.cmd().args(["collect"]).status(0);
    t
}

/// Where `text` occurs on the unmounted drive, in ASCII/UTF-8 or UTF-16LE (exFAT's encoding of file names).
fn occurrences(t9: &Drive, text: &str) -> Vec<u64> {
    let utf16: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let mut found = t9.find_on_device(text.as_bytes());
    found.extend(t9.find_on_device(&utf16));
    found
}

#[test]
fn an_encrypted_backup_leaves_no_canary_on_the_exfat_drive() {
    if !loopdev::require(&[Fs::Exfat]) || !have_age() {
        return;
    }
    let t9 = Drive::exfat("T9", 64 * MIB);
    let mp = t9.mount_point().to_path_buf();
    let (t, _keys, identity, recipient) = encrypted_test_for(&mp);
    let r = external(&t, &[], 0);
    assert_eq!(
        r.destinations[0].status,
        DestinationStatus::Written,
        "{:?}",
        r.destinations[0].error
    );
    let dir = mp
        .join("backups")
        .join(r.destinations[0].backup.as_ref().unwrap());
    assert!(dir.join("secrets.tar.age").is_file() && !dir.join("secrets.tar").exists());
    // Before looking at the raw bytes: the archive does hold the canary (decrypted with the identity).
    let tar = age_decrypt(&identity, &dir.join("secrets.tar.age"));
    for needle in [CANARY, NAME_CANARY] {
        assert!(
            tar.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} is in the plaintext"
        );
    }
    t9.unmount();

    let secret = crate::fixtures::age::secret_of(&identity);
    for (what, needle) in [
        ("the canary", CANARY),
        ("the file-name canary", NAME_CANARY),
        ("the identity", secret.as_str()),
        ("the identity's key part", &secret[15..60]),
    ] {
        let found = occurrences(&t9, needle);
        assert!(
            found.is_empty(),
            "{what} is on the drive at {found:?} after an encrypted backup"
        );
    }
    // The search itself works: what the drive must hold is found (the recipient, in backup.json).
    assert!(
        !occurrences(&t9, &recipient).is_empty(),
        "the recipient is recorded in backup.json, so the raw search must find it"
    );
}

/// The control: without encryption the same backup puts both canaries on the drive, so the test above can fail.
#[test]
fn a_plain_backup_does_leave_the_canary_on_the_exfat_drive() {
    let Some((t9, mp)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 64 * MIB) else {
        return;
    };
    let t = test_for(&mp, "");
    let r = external(&t, &[], 0);
    assert_eq!(r.destinations[0].status, DestinationStatus::Written);
    t9.unmount();
    for needle in [CANARY, NAME_CANARY] {
        assert!(
            !occurrences(&t9, needle).is_empty(),
            "{needle} is on the drive after a plain backup"
        );
    }
}

/// A world backing up to the drive at `mp`, encrypted to a new identity made outside the drive (only its recipient
/// is configured): the world, the test holding the identity, the identity and its recipient.
fn encrypted_test_for(mp: &Path) -> (Test, Test, PathBuf, String) {
    let keys = Test::new();
    let (identity, recipient) = keys.keygen("key.txt");
    let t = test_for(
        mp,
        &format!(r#", "encryption": {{ "recipients": ["{recipient}"] }}"#),
    );
    (t, keys, identity, recipient)
}

/// An encrypted drive with one older backup, and a new 96 MiB file collected since: (drive, test, old backup, the test
/// holding the identity, the identity).
fn encrypted_drive_with_one_backup() -> (Drive, Test, String, Test, PathBuf) {
    let t9 = Drive::exfat("T9", 256 * MIB);
    let mp = t9.mount_point().to_path_buf();
    let (t, keys, identity, _) = encrypted_test_for(&mp);
    let old = new_backup(&t);
    t.write("home/data/big.bin", content(96 << 20, 8));
    t.cmd().args(["collect"]).status(0);
    (t9, t, old, keys, identity)
}

#[test]
fn an_encrypted_write_that_fails_midway_leaves_nothing_that_decrypts() {
    if !loopdev::require(&[Fs::Exfat]) || !have_age() {
        return;
    }
    let (t9, t, old, _keys, identity) = encrypted_drive_with_one_backup();
    let mp = t9.mount_point().to_path_buf();

    // Killed mid-archive: the partial data.tar.age is not an archive age accepts, and the next run removes it.
    let (mut child, temp) = spawn_caught_writing_file(&t, &mp, "data.tar.age", 2 * MIB);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !age_accepts(&identity, &temp.join("data.tar.age")),
        "a killed run's partial archive decrypts as if complete"
    );
    assert_old_backup_intact(&mp, &old);
    let r = external(&t, &[], 0);
    assert!(!temp.exists());
    let second = r.destinations[0].backup.clone().unwrap();
    assert_eq!(backups(&mp), [old, second.clone()]);
    assert!(age_accepts(
        &identity,
        &mp.join("backups").join(&second).join("data.tar.age")
    ));

    // The drive fills up mid-archive: a clear failure, the partial backup removed at once, the others intact.
    t.write("home/data/notes.txt", "changed\n");
    t.cmd().args(["collect"]).status(0);
    let (fill, temp, code, stderr) =
        stopped_while_writing(&t, &mp, "data.tar.age", 2 * MIB, || t9.fill(0));
    assert_nothing_promoted(code, &stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("free space on it and run again"),
        "through the encryption stage too: {stderr}"
    );
    assert!(!temp.exists(), "{stderr}");
    assert_eq!(backups(&mp).last(), Some(&second));
    assert_sums_pass(&mp.join("backups").join(&second));
    fs::remove_file(fill).unwrap();
}
