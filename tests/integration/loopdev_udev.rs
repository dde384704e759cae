//! The udev rule of `dbackup systemd render --system` against real drives (root, loop devices): `udevadm test` on an
//! exFAT image labelled T9 shows `SYSTEMD_WANTS=dbackup-external.service` and the `systemd` tag; a drive with another
//! label shows neither; a label with spaces and a uuid written in the other case match as dbackup matches them.
//!
//! `udevadm test` (systemd 252) reads rules only from the rules directories, and also writes udev's database and the
//! `/dev/disk/by-*` links of the device it tests. So each run happens in a private mount namespace (`unshare`) where
//! `/dev` and `/run` are overlays on a tmpfs in this test's own temporary directory: the rule goes into
//! `/run/udev/rules.d` there, and everything udevadm writes disappears with the namespace. Nothing on the host
//! changes.

use std::collections::BTreeMap;
use std::path::Path;

use testkit::loopdev::{self, Drive, Fs};

use crate::harness::Test;

const WANTS: &str = "dbackup-external.service";

/// The properties `udevadm test --action=add` ends with for `drive`, with `rules` installed (in a throwaway
/// namespace; see the module doc).
fn udev_properties(rules: &Path, drive: &Drive, scratch: &Path) -> BTreeMap<String, String> {
    std::fs::create_dir_all(scratch).unwrap();
    let sysname = drive
        .device()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let script = r#"set -eu
mount -t tmpfs dbackup-udev-test "$3"
for d in dev run; do
  mkdir -p "$3/$d/up" "$3/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$3/$d/up,workdir=$3/$d/work" "/$d"
done
mkdir -p /run/udev/rules.d
cp "$1" /run/udev/rules.d/99-dbackup.rules
exec udevadm test --action=add "/sys/class/block/$2"
"#;
    let out = testkit::run(
        "unshare",
        [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            rules.to_str().unwrap(),
            &sysname,
            scratch.to_str().unwrap(),
        ],
    );
    // udevadm prints its debug log on stderr and the resulting properties, one KEY=value a line, on stdout.
    out.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn t9_udev_rule_wants_the_external_unit_for_the_configured_drives_only() {
    if !loopdev::require(&[Fs::Exfat]) {
        return;
    }
    if let Err(msg) = testkit::check_tools(&["udevadm", "unshare"], testkit::in_ci()) {
        testkit::skip(&format!("{msg} (apt-get install udev util-linux)"));
        return;
    }
    let host_rules = Path::new("/run/udev/rules.d/99-dbackup.rules");
    let host_rules_before = host_rules.exists();
    let host_link_before = Path::new("/dev/disk/by-label/T9").exists();

    let drive = |label: &str| {
        let mut d = Drive::unformatted(Fs::Exfat, label, 16 << 20);
        d.format();
        d
    };
    let t9 = drive("T9");
    let other = drive("OTHER");
    let spaced = drive("My Backup");
    let by_uuid = drive("UUIDDISK");
    let uuid = by_uuid.uuid();
    assert!(!uuid.is_empty(), "mkfs.exfat gave the drive a uuid");

    let t = Test::new().config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "a", "sources": ["{{home}}"] }} ],
        "destinations": [
          {{ "name": "T9", "path": "/media/payne/T9", "fs_label": "T9" }},
          {{ "name": "spaced", "path": "/media/payne/My Backup", "fs_label": "My Backup" }},
          {{ "name": "byuuid", "path": "/media/payne/U", "fs_uuid": "{}" }}
        ] }}"#,
        uuid.to_lowercase()
    ));
    let dir = t.path("units");
    t.cmd()
        .args(["systemd", "render", "--system", "--run-as", "root", "--out"])
        .args([&dir])
        .status(0);
    let rules = dir.join("99-dbackup.rules");
    assert!(rules.is_file());

    let props = |d: &Drive, name: &str| udev_properties(&rules, d, &t.path(&format!("ns-{name}")));

    // Each drive's label as udev spells it, and the unit it wants (another label wants nothing).
    for (d, name, label, wants) in [
        (&t9, "t9", "T9", Some(WANTS)),
        (&other, "other", "OTHER", None),
        (&spaced, "spaced", "My_Backup", Some(WANTS)),
    ] {
        let p = props(d, name);
        let get = |key: &str| p.get(key).map(String::as_str);
        assert_eq!(get("ID_FS_LABEL"), Some(label), "{p:#?}");
        assert_eq!(get("SYSTEMD_WANTS"), wants, "{name}: {p:#?}");
        if name == "t9" {
            assert_eq!(get("ID_FS_TYPE"), Some("exfat"));
            assert!(
                get("TAGS").is_some_and(|t| t.contains(":systemd:")),
                "{p:#?}"
            );
        }
    }

    let p = props(&by_uuid, "uuid");
    assert_eq!(p.get("ID_FS_UUID"), Some(&uuid), "{p:#?}");
    assert_eq!(
        p.get("SYSTEMD_WANTS").map(String::as_str),
        Some(WANTS),
        "a uuid written in the other case matches: {p:#?}"
    );

    // The namespaces kept everything udevadm wrote to themselves.
    assert_eq!(host_rules.exists(), host_rules_before);
    assert_eq!(
        Path::new("/dev/disk/by-label/T9").exists(),
        host_link_before
    );
}

#[test]
fn t9_wait_for_drive_returns_once_the_drive_is_mounted() {
    let Some((t9, _)) = loopdev::drive_or_skip(Fs::Exfat, "T9", 16 << 20) else {
        return;
    };
    t9.unmount();
    let t = Test::new().config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "a", "sources": ["{{home}}"] }} ],
        "destinations": [ {{ "name": "T9", "path": "{}", "fs_label": "T9" }} ] }}"#,
        t9.mount_point().display()
    ));
    // Plugged in but not mounted yet, as when udev starts the unit: it waits, and returns when the mount appears.
    let mut child = t
        .cmd()
        .args(["-v", "systemd", "wait-for-drive", "--timeout", "120"])
        .spawn();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Still waiting: a run that took the empty mount point for the drive would have ended by now.
    assert!(
        child.try_wait().unwrap().is_none(),
        "wait-for-drive ended before the drive was mounted"
    );
    t9.mount();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "destination T9 is ready at {}",
            t9.mount_point().display()
        )),
        "{stderr}"
    );
}
