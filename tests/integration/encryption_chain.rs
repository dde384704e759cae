//! Incremental chains of encrypted sets (issue 15) through the real binary, without root: a plain directory as the
//! drive. The local plaintext copy of each encrypted index (`<root>/.index-copies/`) as the next incremental's base,
//! what happens when it is missing or altered, restores and `--verify` (`--deep` too) through an encrypted chain.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dbackup::ArchiveKind;

use crate::fixtures::age::have_age;
use crate::fixtures::chain::{
    assert_each_restores_its_snapshot, chain_config, restore_backup, restore_file, verify_backup,
};
use crate::fixtures::drive::{assert_same_tree, collect, content, listing, meta_of, new_backup};
use crate::fixtures::guide::run_chain;
use crate::harness::Test;

/// The sample home, encrypted to a fresh identity (which restore reads from the config), incrementals on, every
/// snapshot and backup kept; collected once.
fn encrypted_chain_world() -> (Test, PathBuf) {
    let t = Test::new().config("{}");
    let (key, recipient) = t.keygen("key.txt");
    let extra = format!(
        r#", "encryption": {{ "recipients": ["{recipient}"], "identity_file": "{}" }},
           "image": {{ "kit": false }}"#,
        key.display()
    );
    let drive = chain_config(&t, 12, 10, &extra);
    collect(&t);
    (t, drive)
}

fn copies_dir(t: &Test) -> PathBuf {
    t.root().join(".index-copies").join("drive")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn kind_of(drive: &Path, stamp: &str) -> ArchiveKind {
    let m = meta_of(&drive.join("backups").join(stamp));
    m.sets.iter().find(|s| s.set == "data").unwrap().kind
}

/// An encrypted full and five incrementals (files added, changed, deleted, renamed, hard-linked, a file turned into
/// a directory and back): each backup restores exactly the snapshot it was made from (names, kinds, modes, owners,
/// ns mtimes, symlinks, hard links, contents), `--verify` and `--verify --deep` pass, without the local copies;
/// beside each backup a local plaintext copy of each index is kept (0600 in 0700 directories, only the newest
/// backup's: the dry run says which goes), and no plaintext index ever lands on the drive. A byte changed in the
/// full is caught by `--deep` (not by plain `--verify`, which checks only headers in earlier backups). (Before: an encrypted set was always written full, "incrementals of encrypted sets are
/// not written yet".)
#[test]
fn an_encrypted_chain_restores_every_snapshot() {
    if !have_age() {
        return;
    }
    let (t, drive) = encrypted_chain_world();
    let data = t.home().join("data");
    let mut made: Vec<(String, String)> = Vec::new();
    for step in 0..6 {
        crate::incremental::change_for_step(&t, step);
        if step > 0 {
            collect(&t);
            let dry = t.cmd().args(["--dry-run", "external"]).status(0);
            let prev = &made[step - 1].0;
            dry.stdout_has(&format!("incremental on {prev} (chain {} of 7)", step + 1))
                .stdout_has("a plaintext copy of each index in ")
                .stdout_has(&format!(
                    "remove    local index copy {prev}/data (no longer a base)"
                ));
        }
        let stamp = new_backup(&t);
        let m = meta_of(&drive.join("backups").join(&stamp));
        let set = m.sets.iter().find(|s| s.set == "data").unwrap();
        assert!(set.encryption.is_some(), "step {step}");
        assert_eq!(set.kind == ArchiveKind::Full, step == 0, "step {step}");
        assert_eq!(m.depends_on.len(), step, "step {step}: {:?}", m.depends_on);
        // The local copies: this backup's only, owner-only.
        assert_eq!(listing(&copies_dir(&t)), vec![stamp.clone()], "step {step}");
        let copy = copies_dir(&t).join(&stamp).join("data.index");
        assert_eq!(mode(&t.root().join(".index-copies")), 0o700);
        assert_eq!(mode(&copies_dir(&t)), 0o700);
        assert_eq!(mode(copy.parent().unwrap()), 0o700);
        assert_eq!(mode(&copy), 0o600);
        made.push((stamp, set.snapshot.clone()));
    }

    // No plaintext index on the drive: the drive's indexes are age files, and no file there holds a copy's lines.
    let copy = fs::read(copies_dir(&t).join(&made[5].0).join("data.index")).unwrap();
    let line = copy
        .split(|b| *b == b'\n')
        .find(|l| l.windows(7).any(|w| w == b"p05.txt"))
        .expect("the copy lists p05.txt")
        .to_vec();
    for f in files_under(&drive) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".index"), "{}", f.display());
        let bytes = fs::read(&f).unwrap();
        assert!(
            !bytes.windows(line.len()).any(|w| w == line.as_slice()),
            "{} holds a plaintext index line",
            f.display()
        );
        if name.ends_with(".index.age") {
            assert!(
                bytes.starts_with(b"age-encryption.org/v1"),
                "{}",
                f.display()
            );
        }
    }

    // Restore and verify read the drive's encrypted indexes with the identity, never the local copies.
    fs::remove_dir_all(t.root().join(".index-copies")).unwrap();
    let rel = data.strip_prefix("/").unwrap().to_path_buf();
    assert_each_restores_its_snapshot(&t, &made, &rel);
    // docs/RESTORE.md's age + GNU tar + jq rebuild of the chain gives the newest snapshot too.
    if testkit::require_tools(&["jq"], "apt-get install jq") {
        let dest = t.path("chain");
        let key = t.path("key.txt");
        let names: Vec<&str> = made.iter().map(|m| m.0.as_str()).collect();
        let vars = [
            ("DRIVE", drive.as_os_str()),
            ("STAMP", made[5].0.as_ref()),
            ("KEY", key.as_os_str()),
            ("CHAIN_DEST", dest.as_os_str()),
        ];
        run_chain(&t, "age-chain", &vars, &names);
        assert_same_tree(&t.root().join(&made[5].1).join(&rel), &dest.join(&rel));
        fs::remove_dir_all(&dest).unwrap();
    }
    for deep in [false, true] {
        let out = verify_backup(&t, &made[5].0, deep, 0);
        let said = if deep {
            "kept in earlier backups: every byte read and checked"
        } else {
            "kept in earlier backups: their headers there checked (--deep reads every byte)"
        };
        out.stdout_has(said);
    }

    // One byte changed inside the full's archive, in the middle of big.bin (600 KiB of its 640, unchanged since:
    // every incremental keeps it there). Plain --verify of the newest reads the newest's own archive and only the
    // headers it points to in earlier ones (by design: verifying the full itself reads all of it), so it passes;
    // --deep reads those bytes and names the backup and archive; a restore of big.bin names them too, and a file
    // the newest stores itself still restores.
    let full = &made[0].0;
    let newest = &made[5].0;
    let tar = drive.join("backups").join(full).join("data.tar.age");
    let mut bytes = fs::read(&tar).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&tar, &bytes).unwrap();
    let verify = |deep: bool, code: i32| {
        let out = verify_backup(&t, newest, deep, code);
        format!("{}{}", out.stdout, out.stderr)
    };
    verify(false, 0);
    let text = verify(true, 1);
    assert!(
        text.contains(&format!("in backup {full}'s data.tar.age")) && text.contains("big.bin"),
        "{text}"
    );
    let one = |f: &str, code: i32| {
        let target = t.path(&format!("one-{}", f.replace('/', "-")));
        let out = restore_file(&t, newest, &data.join(f), &target, code);
        format!("{}{}", out.stdout, out.stderr)
    };
    one("projects/p09.txt", 0);
    let text = one("big.bin", 1);
    assert!(
        text.contains(&format!(
            "(its content is kept in backup {full}'s data.tar.age)"
        )),
        "{text}"
    );
}

/// The local copy of the base's index altered, then deleted: each time the next external writes a full and its dry
/// run says why beforehand; a trusted copy in between gives an incremental again. Copies kept for a destination no
/// longer in the config are removed (the dry run says so first). (Before: encrypted sets were
/// always full, whatever was kept locally.)
#[test]
fn without_a_trusted_local_copy_the_next_encrypted_backup_is_full() {
    if !have_age() {
        return;
    }
    let (t, drive) = encrypted_chain_world();
    let first = new_backup(&t);
    let copy = copies_dir(&t).join(&first).join("data.index");
    let mut bytes = fs::read(&copy).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x20;
    fs::write(&copy, &bytes).unwrap();

    // Copies of a destination no longer in the config can never be a base: removed too.
    let gone = t.root().join(".index-copies/old-drive/2026-01-01-000000");
    fs::create_dir_all(&gone).unwrap();
    fs::write(gone.join("data.index"), "{}\n").unwrap();

    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(&t);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    dry.stdout_has(
        "full: no trusted local copy of the encrypted base index (it was changed since it was written",
    )
    .stdout_has(
        "local index copies of destination old-drive: removed after the run (no such destination in the config)",
    );
    assert!(gone.exists(), "a dry run removes nothing");
    let second = new_backup(&t);
    assert_eq!(kind_of(&drive, &second), ArchiveKind::Full);
    assert_eq!(listing(&t.root().join(".index-copies")), vec!["drive"]);
    // The altered copy is gone with the backup it no longer can be the base of.
    assert_eq!(listing(&copies_dir(&t)), vec![second.clone()]);

    t.write("home/data/projects/p04.txt", content(2100, 334));
    collect(&t);
    let third = new_backup(&t);
    assert_eq!(kind_of(&drive, &third), ArchiveKind::Incremental);

    fs::remove_dir_all(copies_dir(&t).join(&third)).unwrap();
    t.write("home/data/projects/p05.txt", content(2200, 335));
    collect(&t);
    t.cmd()
        .args(["--dry-run", "external"])
        .status(0)
        .stdout_has("full: no trusted local copy of the encrypted base index (there is none)");
    let fourth = new_backup(&t);
    assert_eq!(kind_of(&drive, &fourth), ArchiveKind::Full);
    // The newest still restores whole (its own full).
    restore_backup(&t, &fourth, &t.path("restored"));
}

/// Two configs sharing one backup root (set names apart, as the root's layout needs): each external removes only
/// the local index copies of its own sets. The other config's copies, of a destination it does not name or of one
/// of the same name on another drive, are not its to judge. Before, the second config removed the first's
/// `.index-copies/drive/` ("no such destination in the config", or "no longer a base" when it had a "drive" of its
/// own), so the first's next backup was a full.
#[test]
fn two_configs_sharing_a_root_keep_each_others_index_copies() {
    if !have_age() {
        return;
    }
    let (t, drive) = encrypted_chain_world();
    let first = new_backup(&t);
    let ours = copies_dir(&t).join(&first);
    assert!(ours.join("data.index").exists());
    let (_, recipient) = t.keygen("other-key.txt");
    t.write("notes/todo.txt", "buy milk\n");
    for d in ["b-drive", "b-other"] {
        fs::create_dir_all(t.path(d)).unwrap();
    }
    let other = t.write(
        "other.json",
        t.expand(&format!(
            r#"{{ "backup_root": "{{root}}", "external": {{ "mode": "all", "incremental": {{ "enabled": true }} }},
                 "encryption": {{ "recipients": ["{recipient}"] }}, "image": {{ "kit": false }},
                 "backup_sets": [ {{ "name": "notes", "sources": ["{{tmp}}/notes"] }} ],
                 "destinations": [
                   {{ "name": "drive", "path": "{{tmp}}/b-drive", "require_mount": false }},
                   {{ "name": "other", "path": "{{tmp}}/b-other", "require_mount": false }} ] }}"#
        )),
    );
    let with_other = || {
        t.cmd()
            .no_config()
            .args(["--config".as_ref(), other.as_os_str()])
    };
    // Both backups may be of the same second: then the copies share `.index-copies/drive/<stamp>/` (unit test
    // `index_copy::tests::copies_of_another_configs_backup_of_the_same_second_are_joined_not_dropped`).
    let before = index_copies(&t);
    with_other().args(["collect"]).status(0);
    let dry = with_other().args(["--dry-run", "external"]).status(0);
    assert!(
        !dry.stdout
            .contains("local index copies of destination drive")
            && !dry
                .stdout
                .contains(&format!("local index copy {first}/data")),
        "{}",
        dry.stdout
    );
    with_other().args(["external"]).status(0);
    assert!(
        ours.join("data.index").exists(),
        "the first config's copy is kept: {:?}",
        listing(&copies_dir(&t))
    );
    let after = index_copies(&t);
    assert_eq!(
        after.len(),
        before.len() + 1,
        "the second's copy beside the first's: {after:?}"
    );
    assert!(before.iter().all(|c| after.contains(c)), "{after:?}");
    assert!(
        after.iter().any(|c| c.ends_with("/notes.index")),
        "{after:?}"
    );

    t.write("home/data/projects/p03.txt", content(2000, 333));
    collect(&t);
    let dry = t.cmd().args(["--dry-run", "external"]).status(0);
    assert!(!dry.stdout.contains("destination other"), "{}", dry.stdout);
    let second = new_backup(&t);
    assert_eq!(kind_of(&drive, &second), ArchiveKind::Incremental);
    assert_eq!(
        listing(&t.root().join(".index-copies/other")).len(),
        1,
        "the second config's copies of a destination the first does not name are kept too"
    );
}

/// The index copies kept for the destination `drive`: `<stamp>/<set>.index`.
fn index_copies(t: &Test) -> Vec<String> {
    listing(&copies_dir(t))
        .iter()
        .flat_map(|stamp| {
            listing(&copies_dir(t).join(stamp))
                .into_iter()
                .filter(|n| n.ends_with(".index"))
                .map(move |n| format!("{stamp}/{n}"))
        })
        .collect()
}
