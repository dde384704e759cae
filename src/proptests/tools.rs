//! Property-based tests of the parsers of what the system and other tools hand dbackup, and of the small parsers
//! of archive records beside the tar headers: `/proc/self/mountinfo`, `blkid -o export`, rsync's numbers, stats,
//! progress and stderr lines, `lsblk --json` and fstab in the recovery kit, pax times, ACL text and binary, pax
//! records and xattr index keys, the HTTP request line and `Host` that `serve` routes, and the config's rates and
//! windows. The property is the same as for the drive's files: an error or a value, never a panic, within bounded
//! memory; and a value written by its writer reads back as itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use proptest::prelude::*;

use super::{DEFAULT_CASES, bounded, config, junk};
use crate::archive::{acl, tarfmt, xattrs};
use crate::image::kit;
use crate::media::{blkid, mountinfo};
use crate::report::serve;
use crate::restore::engine::entry::Mtime;
use crate::rsync;
use crate::settings::bwlimit;

/// Any text: junk bytes read as UTF-8 lossily, or short strings of any characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        junk().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ".{0,40}",
        "[-+0-9.,:/KMGTkmgib% ]{0,24}",
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Pax times: verify's reader (`tarfmt::parse_pax_time`) and restore's (`Mtime::parse_pax`)

/// Pax time values: signs (doubled too), digit runs up to past `u64`, a fraction of any length.
fn pax_time() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+]{0,2}[0-9]{0,21}(\\.[0-9]{0,12})?",
        "-{1,2}9223372036854775808(\\.[0-9]{1,3})?",
        text(),
    ]
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn pax_times_parse_in_range(s in pax_time()) {
        let parsed = tarfmt::parse_pax_time(&s);
        if let Some((_, nsec)) = parsed {
            assert!(nsec < 1_000_000_000, "{s:?}: {parsed:?}");
            assert!(s.trim_start_matches('-').starts_with(|c: char| c.is_ascii_digit()), "{s:?}: {parsed:?}");
        }
        // Restore and verify read an archive's times alike.
        assert_eq!(Mtime::parse_pax(s.as_bytes()).map(|m| (m.sec, m.nsec)), parsed, "{s:?}");
    }

    #[test]
    fn pax_times_round_trip(sec in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -2i64..2],
                            nsec in prop_oneof![0u32..1_000_000_000, Just(0), Just(999_999_999)]) {
        let text = tarfmt::format_pax_time(sec, nsec);
        assert_eq!(tarfmt::parse_pax_time(&text), Some((sec, nsec)), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// /proc/self/mountinfo

/// The kernel's escape of a mountinfo path or source: space, tab, newline and backslash as octal.
fn escape_mountinfo(b: &[u8]) -> String {
    let mut out = String::new();
    for &c in b {
        match c {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{c:03o}")),
            c => out.push(char::from(c)),
        }
    }
    out
}

fn mount_entry() -> impl Strategy<Value = mountinfo::MountEntry> {
    let path = "/[ -~\t\n]{0,20}";
    let word = "[a-z0-9_.=]{1,10}";
    (
        (any::<u32>(), any::<u32>(), 0u32..4096, 0u32..1 << 20),
        (path, path),
        proptest::collection::vec(word, 1..4),
        (word, "[ -~]{1,12}"),
        proptest::collection::vec(word, 0..3),
    )
        .prop_map(
            |((id, parent, major, minor), (root, mount_point), options, (fs_type, source), sup)| {
                mountinfo::MountEntry {
                    id,
                    parent,
                    major,
                    minor,
                    root: PathBuf::from(root),
                    mount_point: PathBuf::from(mount_point),
                    options,
                    fs_type,
                    source,
                    super_options: sup,
                }
            },
        )
}

fn mountinfo_line(e: &mountinfo::MountEntry, optional: &[String]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut fields = vec![
        e.id.to_string(),
        e.parent.to_string(),
        format!("{}:{}", e.major, e.minor),
        escape_mountinfo(e.root.as_os_str().as_bytes()),
        escape_mountinfo(e.mount_point.as_os_str().as_bytes()),
        e.options.join(","),
    ];
    fields.extend(optional.iter().cloned());
    fields.push("-".into());
    fields.push(escape_mountinfo(e.fs_type.as_bytes()));
    fields.push(escape_mountinfo(e.source.as_bytes()));
    fields.push(e.super_options.join(","));
    fields.join(" ")
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn mountinfo_round_trips(entries in proptest::collection::vec(mount_entry(), 0..6),
                             optional in proptest::collection::vec("(shared|master):[0-9]{1,3}", 0..3)) {
        let text: String = entries.iter().map(|e| mountinfo_line(e, &optional) + "\n").collect();
        assert_eq!(mountinfo::parse(text.as_bytes()).unwrap(), entries, "{text}");
    }

    #[test]
    fn mountinfo_junk(bytes in junk()) {
        let limit = 64 * bytes.len() + (64 << 10);
        if let Err(e) = bounded(limit, "parsing mountinfo", || mountinfo::parse(&bytes)) {
            assert!(!e.to_string().contains(['\n', '\x1b']), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// blkid -o export

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn blkid_export_round_trips(label in "[ -~]{1,16}", uuid in "[0-9A-F-]{4,36}", fs_type in "[a-z0-9]{2,8}") {
        // blkid escapes with a backslash what a shell would take apart.
        let escape = |v: &str| v.chars().flat_map(|c| {
            let special = " \\\"'$`<>".contains(c);
            special.then_some('\\').into_iter().chain([c])
        }).collect::<String>();
        let text = format!("DEVNAME=/dev/sdb1\nLABEL={}\nUUID={uuid}\nTYPE={fs_type}\n", escape(&label));
        let id = blkid::parse_export(&text);
        assert_eq!(id.label.as_deref(), Some(label.as_str()));
        assert_eq!(id.uuid.as_deref(), Some(uuid.as_str()));
        assert_eq!(id.fs_type.as_deref(), Some(fs_type.as_str()));
    }

    #[test]
    fn blkid_export_junk(s in text()) {
        bounded(64 * s.len() + 4096, "parsing blkid", || blkid::parse_export(&s));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// rsync's output

/// rsync's escape of a name's unprintable bytes (`\#ooo`), as `--8-bit-output` is not given.
fn escape_rsync(b: &[u8]) -> String {
    let mut out = String::new();
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' || c == b' ' {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("\\#{c:03o}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn rsync_lines_never_panic(lines in proptest::collection::vec(text(), 0..12)) {
        for l in &lines {
            let _ = rsync::parse_number(l);
            let _ = rsync::parse_progress(l);
            let _ = rsync::parse_problem(l);
            let _ = rsync::unescape(l);
        }
        let stats = rsync::parse_stats(lines.iter().map(String::as_str));
        assert!(stats.linked_bytes <= stats.total_bytes);
        let _ = rsync::parse_capabilities(&lines.join("\n"));
    }

    #[test]
    fn rsync_stats_lines(n in proptest::collection::vec(prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[0-9]{1,3}(,[0-9]{3}){0,7}",
            "[0-9]{1,4}(\\.[0-9]{1,2})?[KMGTP]",
            "-?[0-9.e]{1,30}[KMGTP]?",
        ], 6)) {
        let text = format!(
            "Number of files: {} (reg: {}, dir: {})\nNumber of regular files transferred: {}\n\
             Total file size: {} bytes\nTotal transferred file size: {} bytes\n",
            n[0], n[1], n[2], n[3], n[4], n[5]
        );
        let s = rsync::parse_stats(text.lines());
        assert_eq!(s.files, rsync::parse_number(&n[0]).unwrap_or(0));
        assert_eq!(s.total_bytes, rsync::parse_number(&n[4]).unwrap_or(0));
    }

    #[test]
    fn rsync_names_unescape(name in proptest::collection::vec(any::<u8>(), 1..40)) {
        use std::os::unix::ffi::OsStrExt;
        let line = format!("rsync: [sender] send_files failed to open \"{}\": Permission denied (13)", escape_rsync(&name));
        match rsync::parse_problem(&line) {
            Some(rsync::Problem::Failed(p)) => assert_eq!(p.path.as_os_str().as_bytes(), &name[..]),
            other => panic!("{line}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The recovery kit's inputs: lsblk --json and fstab

fn lsblk_json() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
        Just("disk".into()),
        Just("part".into()),
        Just("/dev/sda".into()),
    ];
    let device = proptest::collection::btree_map(
        prop_oneof![
            Just("name"),
            Just("type"),
            Just("size"),
            Just("fstype"),
            Just("path"),
            Just("model"),
            Just("pttype"),
            Just("label"),
            Just("uuid"),
            Just("mountpoints"),
            Just("children")
        ]
        .prop_map(str::to_string),
        value,
        0..8,
    );
    let devices = proptest::collection::vec(
        (device.clone(), proptest::collection::vec(device, 0..3)).prop_map(|(mut d, children)| {
            if d.contains_key("children") {
                d.insert("children".into(), serde_json::json!(children));
            }
            serde_json::Value::Object(d.into_iter().collect())
        }),
        0..4,
    );
    devices.prop_map(|d| serde_json::to_vec(&serde_json::json!({ "blockdevices": d })).unwrap())
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn lsblk_json_never_panics(bytes in prop_oneof![lsblk_json(), junk()]) {
        let limit = 64 * bytes.len() + (64 << 10);
        bounded(limit, "reading lsblk --json", || {
            let _ = kit::disks_from_lsblk(&bytes);
            let _ = kit::devices_on(&bytes, &["sda".to_string(), String::new()]);
        });
    }

    #[test]
    fn fstab_redaction_keeps_no_password(lines in proptest::collection::vec(
        (any::<bool>(), "[ \t]{0,2}", "(password|PASS|passwd|user|x)=[!-~&&[^,#]]{1,8}"), 0..6)) {
        let text: String = lines
            .iter()
            .map(|(comment, space, opt)| {
                format!("{space}{}//srv/share /mnt cifs rw,{opt},x 0 0\n", if *comment { "#" } else { "" })
            })
            .collect();
        let (out, _) = kit::redact_fstab(&text);
        for (line, (comment, _, opt)) in out.lines().zip(&lines) {
            let (k, _) = opt.split_once('=').unwrap();
            let secret = matches!(k.to_ascii_lowercase().as_str(), "password" | "pass" | "passwd");
            // The option with its comma: a value like `R` is a prefix of `REDACTED`, which replaces it.
            assert_eq!(line.contains(&format!("{opt},")), *comment || !secret, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// ACLs (`SCHILY.acl.*` text, `system.posix_acl_*` binary), pax records and xattr index keys

fn acl_text() -> impl Strategy<Value = String> {
    let entry = prop_oneof![
        "(user|u|group|g)::[rwx-]{1,3}",
        "(user|u|group|g):[0-9]{1,10}:[rwx-]{1,4}",
        "(mask|m|other|o):{1,2}[rwx-]{0,3}",
        "(user|group):root:r--",
        "[ -~]{0,12}",
    ];
    (
        proptest::collection::vec(entry, 0..8),
        prop_oneof![Just("\n"), Just(",")],
    )
        .prop_map(|(entries, sep)| entries.join(sep))
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn acl_text_round_trips(text in prop_oneof![acl_text(), text()]) {
        let Ok(binary) = bounded(1 << 20, "an ACL's text", || acl::from_text(&text)) else {
            return Ok(());
        };
        let again = acl::to_text(&binary).expect("what from_text writes decodes");
        assert_eq!(acl::from_text(&again).unwrap(), binary, "{text:?} -> {again:?}");
    }

    #[test]
    fn acl_binary_junk(bytes in prop_oneof![
        junk(),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|mut b| {
            let mut out = 2u32.to_le_bytes().to_vec();
            b.truncate(b.len() / 8 * 8);
            out.append(&mut b);
            out
        }),
    ]) {
        let _ = acl::is_minimal(&bytes);
        if let Ok(text) = acl::to_text(&bytes) {
            assert!(!text.contains('\x1b'));
        }
    }

    #[test]
    fn pax_records_round_trip(records in proptest::collection::vec(
        ("[a-zA-Z.]{1,20}", proptest::collection::vec(any::<u8>(), 0..300)), 0..6)) {
        let mut data = Vec::new();
        for (k, v) in &records {
            xattrs::record(&mut data, k.as_bytes(), v);
        }
        let parsed = xattrs::parse_pax(&data).unwrap();
        let want: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_bytes(), &v[..])).collect();
        assert_eq!(parsed, want);
    }

    #[test]
    fn pax_records_junk(bytes in junk()) {
        bounded(64 * bytes.len() + 4096, "pax records", || {
            if let Ok(records) = xattrs::parse_pax(&bytes) {
                let _ = xattrs::Attrs::from_pax(&records);
            }
        });
    }

    #[test]
    fn xattr_index_keys_round_trip(name in proptest::collection::vec(any::<u8>(), 1..40)) {
        assert_eq!(xattrs::from_index_key(&xattrs::index_key(&name)).unwrap(), name);
    }

    #[test]
    fn xattr_index_keys_junk(key in text()) {
        if let Err(e) = xattrs::from_index_key(&key) {
            assert!(!e.contains(['\n', '\x1b']), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// `serve`: the request line and Host header; the config's bandwidth rates and windows

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn serve_routes_only_its_pages(method in prop_oneof![Just("GET".to_string()), text()],
                                   url in prop_oneof![text(), "/[a-z.?#=/]{0,16}"],
                                   host in proptest::option::of(prop_oneof![text(), Just("127.0.0.1:8422".to_string())])) {
        let listen: SocketAddr = "127.0.0.1:8422".parse().unwrap();
        if serve::route(&method, &url, host.as_deref(), listen).is_ok() {
            assert!(matches!(method.as_str(), "GET" | "HEAD"), "{method:?}");
            let path = url.split(['?', '#']).next().unwrap();
            assert!(matches!(path, "/" | "/index.html" | "/status.json"), "{url:?}");
        }
    }

    #[test]
    fn bwlimit_rates_and_windows(s in text()) {
        if let Ok(r) = bwlimit::parse_rate(&s) {
            assert!((1024..=u64::from(u32::MAX)).contains(&r), "{s:?}: {r}");
        }
        if let Err(e) = bwlimit::parse_rate(&s) {
            assert!(!e.contains(['\n', '\x1b']), "{e}");
        }
        if let Err(e) = bwlimit::parse_window(&s) {
            assert!(!e.contains(['\n', '\x1b']), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The config file (JSON with comments), mutated from the documented example, and junk

proptest! {
    #![proptest_config(config(DEFAULT_CASES / 4))]

    #[test]
    fn config_files_never_panic(m in super::mutations(), junk_text in text(), pick in any::<bool>()) {
        let example = include_str!("../../config/example.json");
        let text = if pick {
            String::from_utf8_lossy(&super::apply(example.as_bytes(), &m)).into_owned()
        } else {
            junk_text
        };
        let path = std::path::Path::new("config.json");
        if let Err(e) = bounded(256 * text.len() + (8 << 20), "parsing a config", || {
            crate::config::load::parse(path, &text)
        }) {
            let shown = e.to_string();
            assert!(!shown.contains('\x1b'), "{shown:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// `find`'s patterns, against an index's paths (the drive's bytes)

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    /// A path a pattern matches holds the bytes the pattern says it must (`find` skips index lines without them).
    #[test]
    fn find_patterns_require_what_they_match(pattern in "[/a-c*?é]{0,10}",
                                             rel in prop_oneof![
                                                 "[/a-cé]{0,16}".prop_map(String::into_bytes),
                                                 proptest::collection::vec(any::<u8>(), 0..24),
                                             ]) {
        let p = crate::browse::pattern::Pattern::new(pattern.as_bytes());
        if p.matches(&rel) {
            let absolute = [b"/".as_slice(), &rel].concat();
            let required = p.required();
            assert!(
                required.is_empty() || memchr::memmem::find(&absolute, required).is_some(),
                "{pattern:?} matches {rel:?} without {required:?}"
            );
        }
    }
}
