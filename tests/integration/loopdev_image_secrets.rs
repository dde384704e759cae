//! A partition image cannot leave one file out: a filesystem holding one of dbackup's own secret files (here the
//! identity a destination's `identity_file` names, through a symlink, on an ext4 or btrfs root mounted read-only) is refused
//! for a plain drive by `image create`, its dry run and `external`, naming the device, the file, what names it and
//! what to do; an encrypting destination images it (`external`'s dry run says which destination gets what), and a
//! device without secrets is imaged everywhere. Before, the
//! filesystem was imaged whole onto the plain drive, the secret key in the clear.

use std::fs;

use dbackup::read_backup_meta;
use testkit::loopdev::Drive;

use crate::harness::Test;
use crate::loopdev_image::{MIB, RoMount, Root, disk_with_root, image_backup, require};

#[test]
fn t9_an_ext4_filesystem_holding_a_secret_file_is_imaged_only_to_an_encrypted_destination() {
    imaged_only_encrypted(Root::Ext4);
}

/// btrfs gives its mounts device numbers of their own: the key's `st_dev` is not the partition's, its mount's source
/// is.
#[test]
fn t9_a_btrfs_filesystem_holding_a_secret_file_is_imaged_only_to_an_encrypted_destination() {
    imaged_only_encrypted(Root::Btrfs);
}

fn imaged_only_encrypted(fs: Root) {
    if !require() {
        return;
    }
    let t = Test::new();
    let (identity, recipient) = t.keygen("id.txt");
    let key_in_tree = t.path("tree/home/u/.config/dbackup/identity.txt");
    fs::create_dir_all(key_in_tree.parent().unwrap()).unwrap();
    fs::copy(&identity, &key_in_tree).unwrap();
    let t9 = Drive::exfat("T9", 256 * MIB);
    let disk = disk_with_root(&t, 1 << 20, fs);
    let (esp, root) = (disk.part(1), disk.part(2));
    let mounted = RoMount::new(&root, &t.path("mnt/root"));
    let key = mounted.0.join("home/u/.config/dbackup/identity.txt");
    let link = t.path("key-link.txt");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let vault = t.path("vault");
    fs::create_dir_all(&vault).unwrap();
    // `mode`: external.mode (`all`: every present destination gets the backup).
    let config = |devices: &[&std::path::Path], mode: &str| {
        let devices: Vec<String> = devices
            .iter()
            .map(|d| format!("\"{}\"", d.display()))
            .collect();
        format!(
            r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["~/data"] }} ],
                 "image": {{ "devices": [{}] }}, "external": {{ "mode": "{mode}" }},
                 "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9" }},
                                   {{ "name": "vault", "path": "{}", "require_mount": false,
                                      "encryption": {{ "recipients": ["{recipient}"], "identity_file": "{}" }} }} ] }}"#,
            devices.join(", "),
            t9.mount_point().display(),
            vault.display(),
            link.display()
        )
    };
    let t = t.config(&config(&[], "first"));
    let refused = format!(
        "not imaged: {}: it holds {} (the config's identity_file of destination vault), and this destination is not \
         encrypted",
        root.display(),
        link.display()
    );
    let what_to_do = "give the destination an `encryption`";
    let backups_on_t9 = || {
        (fs::read_dir(t9.mount_point().join("backups"))
            .into_iter()
            .flatten())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("20")
        })
        .count()
    };

    // `--device` the root alone, to the T9: nothing can be imaged (exit 1), nothing is written.
    t.cmd()
        .args(["image", "create", "--destination", "T9", "--device"])
        .args([&root])
        .status(1)
        .stderr_has(&refused);
    assert_eq!(backups_on_t9(), 0, "nothing was written");

    // With `image.devices` naming both partitions:
    let t = t.config(&config(&[&esp, &root], "first"));
    // The dry run says so, and writes nothing.
    let dry = t
        .cmd()
        .args(["--dry-run", "image", "create", "--destination", "T9"])
        .status(3);
    dry.stdout_has(&format!(
        "REFUSED   {}: it holds {}",
        root.display(),
        link.display()
    ))
    .stdout_has(what_to_do);
    assert_eq!(backups_on_t9(), 0, "a dry run writes nothing");

    // The plain T9: the ESP (no secret) is imaged, the root refused before anything of it is written.
    let out = t
        .cmd()
        .args(["image", "create", "--destination", "T9"])
        .status(3);
    out.stderr_has(&refused).stderr_has(what_to_do);
    let (dir, meta) = image_backup(&t9);
    let system = meta.system.as_ref().unwrap();
    let names: Vec<&str> = system.images.iter().map(|i| i.name.as_str()).collect();
    let esp_name = esp.file_name().unwrap().to_str().unwrap();
    let root_name = root.file_name().unwrap().to_str().unwrap();
    assert_eq!(names, [esp_name], "{system:?}");
    assert_eq!(system.refused.len(), 1, "{system:?}");
    assert!(
        system.refused[0]
            .reason
            .contains("identity_file of destination vault")
    );
    let files: Vec<String> = fs::read_dir(dir.join("system"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.starts_with(root_name)), "{files:?}");

    // The encrypting destination images both.
    t.cmd()
        .args(["image", "create", "--destination", "vault"])
        .status(0);
    let newest_on_vault = || {
        fs::read_dir(vault.join("backups"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("backup.json").is_file())
            .max()
            .expect("a backup on the vault")
    };
    let meta = read_backup_meta(&newest_on_vault().join("backup.json")).unwrap();
    let system = meta.system.as_ref().unwrap();
    assert!(system.refused.is_empty(), "{system:?}");
    let files: Vec<&str> = system.images.iter().map(|i| i.file.name.as_str()).collect();
    let age = |name: &str| format!("{name}.img.zst.age");
    assert_eq!(files, [age(esp_name), age(root_name)], "{system:?}");

    // `external` to both destinations images what `image.devices` names: the root refused for the T9 (a warning),
    // imaged for the vault.
    let t = t.config(&config(&[&esp, &root], "all"));
    t.write("home/data/a.txt", "hello\n");
    t.cmd().args(["collect"]).status(0);
    // Its dry run says so for each destination: the T9 refuses the root, the vault images it (encrypted). Before, it
    // showed the T9's plan alone, as if for every destination.
    let dry = t.cmd().args(["--dry-run", "external"]).output();
    let section = |name: &str| {
        (dry.stdout.split("\ndestination "))
            .find(|s| s.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no destination {name}: {}", dry.stdout))
            .to_string()
    };
    let (on_t9, on_vault) = (section("T9"), section("vault"));
    let root_line = |what: &str| format!("    {what:<10}{}", root.display());
    assert!(on_t9.contains(&root_line("REFUSED")), "{}", dry.stdout);
    assert!(on_t9.contains(&refused[12..]), "{}", dry.stdout);
    assert!(on_vault.contains(&root_line("image")), "{}", dry.stdout);
    assert!(
        on_vault.contains(&format!("-> system/{root_name}.img.zst.age")),
        "{}",
        dry.stdout
    );
    assert!(!on_vault.contains("REFUSED"), "{}", dry.stdout);
    if fs == Root::Ext4 {
        let tmp = t.dir.path().display().to_string();
        let t9_path = t9.mount_point().display().to_string();
        let filters = vec![
            (t9_path.as_str(), "[T9]"),
            (tmp.as_str(), "[TMP]"),
            (r"\d{4}-\d{2}-\d{2}-\d{6}", "[STAMP]"),
            (r"\.tmp-\[STAMP\]-\d+", ".tmp-[STAMP]-[PID]"),
            (r"\d+(\.\d)? (B|KiB|MiB|GiB)", "[SIZE]"),
            (r"\b\d+ entries", "[N] entries"),
            (r"host \S+,", "host [HOST],"),
            (r"on /dev/[^\s),]+", "on [DEVICE]"),
            (r"/dev/loop\d+", "/dev/[DISK]"),
            (r"\bloop\d+", "[DISK]"),
            (r"\b[0-9A-F]{4}-[0-9A-F]{4}\b", "[UUID]"),
            (
                r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
                "[UUID]",
            ),
            (r"age1[0-9a-z]+", "[RECIPIENT]"),
            (r"\((ext4|xfs|btrfs|overlay|tmpfs)", "([FS]"),
        ];
        insta::with_settings!({ filters => filters }, {
            insta::assert_snapshot!("external_dry_run_per_destination", dry.stdout);
        });
    }
    let out = t.cmd().args(["external"]).status(3);
    out.stderr_has(&refused);
    let (_, meta) = image_backup(&t9);
    let system = meta.system.as_ref().unwrap();
    assert_eq!(meta.sets.len(), 1, "the set still lands");
    assert_eq!(system.images.len(), 1, "{system:?}");
    assert_eq!(system.refused.len(), 1, "{system:?}");
    let meta = read_backup_meta(&newest_on_vault().join("backup.json")).unwrap();
    let system = meta.system.as_ref().unwrap();
    assert_eq!(meta.sets.len(), 1, "the set lands on the vault too");
    assert!(system.refused.is_empty(), "{system:?}");
    assert_eq!(system.images.len(), 2, "{system:?}");
    drop(mounted);
}
