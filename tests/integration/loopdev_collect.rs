//! `dbackup collect` onto a backup root that fills up (ext4 on a loop device): nothing is promoted, the earlier
//! snapshot and `latest` stay, the error says the disk is full, and once the set fits the next run succeeds.
//! Root only (skips with a message otherwise).

use std::fs;
use std::path::Path;

use testkit::loopdev::{self, Fs};

use crate::fixtures::drive::listing as entries;
use crate::harness::Test;

const MIB: u64 = 1 << 20;

/// One set `data` of `~/data`, backed up to `<mp>/root`, with `exclusions` (JSON array text).
fn on_drive(t: &Test, mp: &Path, exclusions: &str) -> String {
    t.expand(&format!(
        r#"{{ "backup_root": "{}/root", "retention": {{ "local": 3 }},
             "backup_sets": [ {{ "name": "data", "sources": ["~/data"], "exclusions": {exclusions} }} ] }}"#,
        mp.display()
    ))
}

#[test]
fn a_full_backup_root_fails_clearly_and_the_next_run_that_fits_succeeds() {
    let Some((_drive, mp)) = loopdev::drive_or_skip(Fs::Ext4, "BACKUP", 24 * MIB) else {
        return;
    };
    let t = Test::new();
    for i in 0..4 {
        t.write(&format!("home/data/keep/k{i}"), vec![b'k'; 256 << 10]);
    }
    let config = t.path("config.json");
    fs::write(&config, on_drive(&t, &mp, "[]")).unwrap();
    let collect = || t.cmd().args(["--config"]).args([&config]).args(["collect"]);
    collect().status(0);
    let root = mp.join("root");
    let first = fs::read_link(root.join("data-latest")).unwrap();

    // The set grows past the disk (rsync copies `big/` first, and runs out of space in it).
    for i in 0..40 {
        t.write(&format!("home/data/big/b{i:02}"), vec![b'b'; 1 << 20]);
    }
    let out = collect().args(["--json"]).status(1);
    out.stderr_has("the backup disk is full");
    out.stderr_lacks("Broken pipe");
    // What did not fit is no file rsync could not read.
    let report: dbackup::CollectReport = out.json();
    assert!(report.sets[0].unreadable.is_empty(), "{:?}", report.sets[0]);
    assert_eq!(fs::read_link(root.join("data-latest")).unwrap(), first);
    let snapshots: Vec<String> = entries(&root)
        .into_iter()
        .filter(|n| n.starts_with("data-2"))
        .collect();
    let first = first.to_string_lossy().into_owned();
    assert_eq!(snapshots, [first.clone(), format!("{first}.json")]);
    // The copy that did not fit is not kept: it would hold the space the next run needs.
    assert!(
        !root.join(".data.in-progress").exists(),
        "{:?}",
        entries(&root)
    );
    assert!(!root.join(".data.partial").exists(), "{:?}", entries(&root));

    // The user leaves the big directory out (and writes a little more): the next run fits, and succeeds.
    fs::write(&config, on_drive(&t, &mp, r#"["~/data/big"]"#)).unwrap();
    t.write("home/data/new/n", vec![b'n'; 3 << 20]);
    collect().status(0);
    let second = fs::read_link(root.join("data-latest")).unwrap();
    assert_ne!(second.to_string_lossy(), first);
    assert!(root.join(&first).is_dir(), "the first snapshot stays");
}
