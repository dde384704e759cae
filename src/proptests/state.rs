//! Property-based tests of the parsers of what dbackup reads back from its own state and what a bucket or a drive's
//! encrypted files hand it: the run log (read whole, and for `status`), `/proc/locks`, an upload journal and what
//! `status` and the plan count of it, the damage records and the kit cache, a snapshot's metadata, S3's listing of
//! unfinished uploads and its error answers (as a cloud error explains them), an unfinished upload's `upload.json`, the AWS credentials INI, and age headers (an `.age` file's, and `backup.json`'s `age_head`).
//! The property is the drive's files': an error or a value, never a panic, within bounded memory; and what is
//! accepted reads back as itself where it is written again.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::{DEFAULT_CASES, apply, bounded, config, junk, mutations};
use crate::archive::Digest;
use crate::archive::crypt::{self, EncryptTo, Keys};
use crate::cloud::{credentials, error as cloud_error, store};
use crate::external::bucket::{BACKUPS, CloudListing, UnfinishedStamp};
use crate::external::damage;
use crate::external::resume::{self, Journal, Key, PartRecord, SetKey};
use crate::external::retention::{OwnSet, Owner};
use crate::external::upload_marker::{self, UploadMarker};
use crate::image::kit;
use crate::runlog::{self, RunRecord};
use crate::snapshot;
use crate::status::gather::{self, RunWants};

/// Real inputs, written by their writers once.
struct Sample {
    runlog: Vec<u8>,
    journal: Vec<u8>,
    snapshot_meta: Vec<u8>,
    damage: Vec<u8>,
    kit_cache: Vec<u8>,
    uploads: Vec<u8>,
    credentials: Vec<u8>,
    /// An age stream (an X25519 recipient) and the key file's directory that opens it.
    age: Vec<u8>,
    keys: Keys,
    _key_dir: tempfile::TempDir,
}

const STAMP: &str = "2026-12-05-020000";
const DESTINATION: &str = "offsite";

fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T02:00:00+01:00").unwrap();
        let record = |command: &str, exit: u8, sets: serde_json::Value| RunRecord {
            command: command.into(),
            started: at,
            finished: at,
            exit,
            error: (exit != 0).then(|| "the drive T9 failed".into()),
            pid: 4242,
            dbackup_version: "0.1.0".into(),
            sets,
            interrupted: None,
            backup_root: Some("/r".into()),
        };
        let dest = |name: &str, status: &str| {
            serde_json::json!({ "name": name, "status": status, "backup": STAMP, "error": "no room" })
        };
        let mut runlog = Vec::new();
        for r in [
            record(
                "collect",
                0,
                serde_json::json!([{ "set": "docs", "snapshot": "/r/docs-2026-12-05-020000" }]),
            ),
            record(
                "external",
                1,
                serde_json::json!({ "destinations": [dest("T9", "written"), dest("b2", "failed")] }),
            ),
            record(
                "backup",
                0,
                serde_json::json!({ "collect": [], "nothing_due": false, "missing_media": "T9",
                                    "external": [{ "destinations": [dest("T9", "written")] }] }),
            ),
            // Another config's run (of another backup root), and one of an older version (no root named).
            RunRecord {
                backup_root: Some("/other".into()),
                ..record(
                    "external",
                    2,
                    serde_json::json!({ "destinations": [dest("T9", "refused")] }),
                )
            },
            RunRecord {
                backup_root: None,
                ..record("collect", 1, serde_json::json!([]))
            },
        ] {
            runlog.extend(serde_json::to_vec(&r).unwrap());
            runlog.push(b'\n');
        }
        let part = |n: usize| PartRecord {
            name: format!("docs.tar.part{n:03}"),
            bytes: 4096,
            sha256: Digest::of_bytes(b"x"),
            plain_bytes: 4096,
            plain_sha256: Digest::of_bytes(b"x"),
            age_head: None,
        };
        let journal = Journal {
            format: 1,
            stamp: STAMP.into(),
            key: Key {
                destination: DESTINATION.into(),
                place: "s3 http://127.0.0.1:9 b/p".into(),
                dbackup_version: "0.1.0".into(),
                part_bytes: 4096,
                recipients: vec![],
                sets: vec![SetKey {
                    set: "docs".into(),
                    snapshot: "docs-2026-12-05-010000".into(),
                    archive: "docs.tar".into(),
                    base: None,
                    compare_content: false,
                }],
            },
            parts: [("docs".to_string(), (0..3).map(part).collect())].into(),
            parts_planned: 9,
        };
        let snapshot_meta = serde_json::to_vec_pretty(&snapshot::tests::meta(
            "docs",
            "docs-2026-12-05-020000",
            true,
        ))
        .unwrap();
        let damage = br#"{"format":1,"records":[{"destination":"T9","backup":"2026-12-05-020000",
            "found":"2026-12-06T10:00:00+01:00","problem":"data.tar: sha256 differs"},
            {"destination":"T9","backup":"2026-12-05-020000","found":"2026-12-06T10:00:00+01:00",
            "problem":"another config's","backup_root":"/other"}]}"#
            .to_vec();
        let kit_cache = serde_json::to_vec(&kit::KitCache {
            format: 1,
            pieces: vec![kit::CachedPiece {
                name: "lsblk.json".into(),
                source: "command: lsblk --json".into(),
                key: "/dev/sda:1:2".into(),
                text: "{\"blockdevices\":[]}".into(),
            }],
        })
        .unwrap();
        let uploads = store::tests::UPLOADS_PAGE.as_bytes().to_vec();
        let credentials = b"# keys\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s3cr3t\n\
            ; other\n[profile b2]\nAWS_ACCESS_KEY_ID = k2\n"
            .to_vec();
        let (recipient, id) = crypt::tests::pair();
        let to = EncryptTo::Recipients(vec![recipient.parse().unwrap()]);
        let age = crypt::tests::encrypt(&to, &[7u8; 3000]);
        let key_dir = tempfile::tempdir().unwrap();
        let keys = crypt::tests::keys_for(&id, key_dir.path());
        Sample {
            runlog,
            journal: serde_json::to_vec_pretty(&journal).unwrap(),
            snapshot_meta,
            damage,
            kit_cache,
            uploads,
            credentials,
            age,
            keys,
            _key_dir: key_dir,
        }
    })
}

/// The memory a parser of `len` bytes may hold: a JSON value's nodes take a few dozen bytes per input byte.
fn limit(len: usize) -> usize {
    64 * len + (1 << 20)
}

// ---------------------------------------------------------------------------------------------------------------
// The run log: read whole (`collect`'s last snapshot), and read backwards for `status` (last run, written backups,
// attempts, the history).

fn check_runlog(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(runlog::path(dir.path()), bytes).unwrap();
    std::fs::write(dir.path().join(format!("{}.1", runlog::FILE_NAME)), bytes).unwrap();
    let records = bounded(limit(bytes.len()), "reading the run log", || {
        runlog::read(dir.path()).unwrap()
    });
    let _ = runlog::last_snapshot_under(&records, Path::new("/r"));
    for wants in [
        RunWants::default(),
        RunWants {
            count: 3,
            until: None,
        },
    ] {
        let facts = bounded(2 * limit(bytes.len()), "reading runs for status", || {
            gather::read_runs_for(dir.path(), Path::new("/r"), &["T9", "b2"], wants)
        });
        assert!(facts.error.is_none(), "{:?}", facts.error);
        // Never another config's run (one that names another backup root).
        for r in facts.last.iter().chain(&facts.recent) {
            assert!(r.is_of(Path::new("/r")), "{:?}", r.backup_root);
        }
        for (dest, seen) in &facts.written {
            assert!(
                snapshot::parse_stamp(&seen.name).is_some(),
                "{dest}: {:?}",
                seen.name
            );
        }
        // One run at most per line of the two files (the current and the rotated one hold `bytes` each).
        let lines = bytes.split(|b| *b == b'\n').count();
        assert!(
            facts.recent.len() <= 2 * lines,
            "{} runs of {lines} lines",
            facts.recent.len()
        );
    }
}

/// `/proc/locks` lines: real ones with boundary numbers, and junk.
fn locks_text() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        Just("0".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        "[0-9a-f]{1,9}",
    ];
    let line = (
        num.clone(),
        prop_oneof![Just("FLOCK"), Just("POSIX"), Just("->")],
        prop_oneof![Just("WRITE"), Just("READ")],
        num.clone(),
        num.clone(),
        num.clone(),
        num,
    )
        .prop_map(|(n, kind, mode, pid, ma, mi, ino)| {
            format!("{n}: {kind}  ADVISORY  {mode} {pid} {ma}:{mi}:{ino} 0 EOF")
        });
    prop_oneof![
        proptest::collection::vec(line, 0..6).prop_map(|l| l.join("\n")),
        junk().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn runlog_mutated(m in mutations()) {
        check_runlog(&apply(&sample().runlog, &m));
    }

    #[test]
    fn runlog_junk(bytes in junk()) {
        check_runlog(&bytes);
    }

    #[test]
    fn proc_locks(text in locks_text(), dev in any::<u64>(), ino in any::<u64>()) {
        if let Some(pid) = gather::holder_in(&text, dev, ino) {
            assert!(text.contains(&format!(" {pid} ")), "{pid} in {text:?}");
        }
    }

    #[test]
    fn proc_locks_finds_the_writer(pid in any::<u32>(), ma in 0u32..4096, mi in 0u32..1 << 20, ino in any::<u64>()) {
        let dev = rustix::fs::makedev(ma, mi);
        let text = format!(
            "1: POSIX  ADVISORY  WRITE 7 {ma:02x}:{mi:02x}:{ino} 0 EOF\n\
             2: FLOCK  ADVISORY  WRITE {pid} {ma:02x}:{mi:02x}:{ino} 0 EOF\n"
        );
        assert_eq!(gather::holder_in(&text, dev, ino), Some(pid));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// An upload journal, and what the plan and `status` count of it against a bucket that lists its parts.

fn check_journal(bytes: &[u8]) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(resume::DIR).join(DESTINATION);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{STAMP}.json")), bytes).unwrap();
    let read = bounded(limit(bytes.len()), "reading an upload journal", || {
        resume::read(root.path(), DESTINATION, STAMP)
    });
    let Ok(j) = read else { return };
    let again: Journal = serde_json::from_slice(&serde_json::to_vec(&j).unwrap()).unwrap();
    assert_eq!(again, j);
    // The bucket lists every part the journal records, with its recorded size.
    let listing = CloudListing {
        sizes: j
            .parts
            .values()
            .flatten()
            .map(|p| (format!("{BACKUPS}{STAMP}/{}", p.name), p.bytes))
            .collect(),
        unfinished: vec![UnfinishedStamp {
            stamp: STAMP.into(),
            objects: 1,
            bytes: 1,
        }],
        ..Default::default()
    };
    let own = crate::external::retention::OwnSet::named(&["docs"]);
    if let Some(r) = resume::resumable(root.path(), (DESTINATION, Owner::Sets(&own)), &listing) {
        assert!(r.parts_total.is_none_or(|total| r.parts_uploaded <= total));
        assert_eq!(r.parts_total.is_none(), j.parts_planned == 0);
        let recorded: u64 = j.parts.values().map(|p| p.len() as u64).sum();
        assert!(r.parts_uploaded <= recorded);
    }
}

/// A file of the state directory read by `read` (none, or a value, for any bytes).
fn check_state_file<T>(bytes: &[u8], name: &str, read: impl FnOnce(&Path) -> T) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    bounded(limit(bytes.len()), name, || read(dir.path()));
}

fn check_damage(bytes: &[u8]) {
    check_state_file(bytes, damage::FILE_NAME, |dir| {
        for r in damage::read(dir, Path::new("/r")) {
            assert!(r.is_of(Path::new("/r")), "{:?}", r.backup_root);
            for text in [damage::note_text(&r), damage::standing(&r)] {
                assert!(!text.contains(['\n', '\x1b']), "{text:?}");
            }
        }
    });
}

fn check_kit_cache(bytes: &[u8]) {
    check_state_file(bytes, kit::CACHE_FILE, |dir| {
        let c = kit::read_cache(dir);
        assert!(c.pieces.is_empty() || c.format == 1);
    });
}

fn check_snapshot_meta(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs-2026-12-05-020000.json");
    std::fs::write(&path, bytes).unwrap();
    let read = bounded(limit(bytes.len()), "reading snapshot metadata", || {
        snapshot::read_metadata(&path)
    });
    if let Ok(m) = read {
        assert_eq!(m.format, snapshot::METADATA_FORMAT);
    }
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn journal_mutated(m in mutations()) {
        check_journal(&apply(&sample().journal, &m));
    }

    #[test]
    fn journal_junk(bytes in junk()) {
        check_journal(&bytes);
    }

    #[test]
    fn damage_records(bytes in prop_oneof![junk(), mutations().prop_map(|m| apply(&sample().damage, &m))]) {
        check_damage(&bytes);
    }

    #[test]
    fn kit_cache(bytes in prop_oneof![junk(), mutations().prop_map(|m| apply(&sample().kit_cache, &m))]) {
        check_kit_cache(&bytes);
    }

    #[test]
    fn snapshot_metadata(bytes in prop_oneof![junk(), mutations().prop_map(|m| apply(&sample().snapshot_meta, &m))]) {
        check_snapshot_meta(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// S3's listing of unfinished uploads; the AWS credentials INI

fn check_uploads(bytes: &[u8]) {
    let page = bounded(limit(bytes.len()), "parsing a listing of uploads", || {
        store::parse_uploads(bytes)
    });
    if let Ok(p) = page {
        assert!(p.uploads.len() <= bytes.len());
    }
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn s3_uploads_mutated(m in mutations()) {
        check_uploads(&apply(&sample().uploads, &m));
    }

    #[test]
    fn s3_uploads_junk(bytes in prop_oneof![
        junk(),
        proptest::collection::vec(prop_oneof![
            Just(b"<Upload>".to_vec()), Just(b"</Upload>".to_vec()), Just(b"<Key>".to_vec()),
            Just(b"</Key>".to_vec()), Just(b"<UploadId>x</UploadId>".to_vec()), Just(b"<![CDATA[".to_vec()),
            Just(b"]]>".to_vec()), Just(b"&amp;".to_vec()), Just(b"&#0;".to_vec()), Just(b"<!DOCTYPE a [".to_vec()),
            Just(b"<ListMultipartUploadsResult>".to_vec()), Just(b"</ListMultipartUploadsResult>".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..6),
        ], 0..48).prop_map(|t| t.concat()),
    ]) {
        check_uploads(&bytes);
    }

    #[test]
    fn credentials_ini(bytes in prop_oneof![junk(), mutations().prop_map(|m| apply(&sample().credentials, &m))]) {
        let text = String::from_utf8_lossy(&bytes);
        let ini = bounded(limit(bytes.len()), "parsing a credentials file", || credentials::Ini::parse(&text));
        for (name, section) in &ini.0 {
            assert!(!name.contains('\n'));
            for (k, v) in &section.0 {
                assert_eq!(k, &k.to_ascii_lowercase());
                assert_eq!(k.trim(), k);
                assert_eq!(v.trim(), v);
                assert!(!k.contains('\n') && !v.contains('\n'));
            }
        }
    }
}

/// What an S3 server (or OpenDAL's context) says when a request fails: its code, message, status and headers, mixed
/// with secrets, control characters and long runs.
fn service_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<Error><Code>".to_string()),
        Just("</Code>".to_string()),
        Just("<Message>".to_string()),
        Just("</Message>".to_string()),
        Just("code: \"".to_string()),
        Just("message: \"".to_string()),
        Just("status: ".to_string()),
        "[0-9]{1,4}",
        Just("AccessDenied".to_string()),
        Just("NoSuchBucket".to_string()),
        Just("SlowDown".to_string()),
        Just(SECRET.to_string()),
        Just("X-Amz-Signature=".to_string()),
        Just("authorization: \"AWS4-HMAC-SHA256 Credential=".to_string()),
        Just("\x1b[2J\u{7}\n\u{202e}".to_string()),
        Just("é".repeat(300)),
        ".{0,12}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn s3_error_answers_are_explained_short_escaped_and_without_secrets(
        text in service_text(),
        kind in prop_oneof![
            Just(opendal::ErrorKind::Unexpected),
            Just(opendal::ErrorKind::PermissionDenied),
            Just(opendal::ErrorKind::NotFound),
        ],
        context in any::<bool>(),
    ) {
        let err = opendal::Error::new(kind, text.clone()).with_context("response", text.clone());
        let (_, message) = cloud_error::explain_with(&err, ("reading backups/x", "s3 b/p"), &[SECRET], context);
        assert!(!message.contains(SECRET), "{message:?}");
        assert!(!message.chars().any(|c| c.is_control() || c == '\u{202e}'), "{message:?}");
        assert!(message.chars().count() <= 2000, "{} characters", message.chars().count());
    }
}

/// An endless nesting of elements (within the 16 MiB any answer may hold) is an error or a value, never a stack
/// overflow.
#[test]
fn deeply_nested_s3_answers_are_refused_or_read() {
    for inner in [&b"<a>"[..], b"<Upload>", b"<Upload><Key>"] {
        let mut xml = b"<ListMultipartUploadsResult>".to_vec();
        xml.extend(inner.repeat((4 << 20) / inner.len()));
        check_uploads(&xml);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// age: a drive's `.age` file opened (its header parsed, the file key unwrapped), and `backup.json`'s `age_head`.

fn check_age(bytes: &[u8]) {
    let s = sample();
    let opened = bounded(
        limit(bytes.len()) + (256 << 10),
        "opening an age stream",
        || {
            s.keys
                .open(std::io::Cursor::new(bytes.to_vec()), "data.tar.age")
                .map(|mut d| {
                    let mut out = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut d, &mut out);
                    out
                })
        },
    );
    if let Ok(out) = opened {
        // age authenticates every chunk: what reads is a prefix of what was encrypted.
        assert!(
            out.len() <= 3000 && out.iter().all(|b| *b == 7),
            "{}",
            out.len()
        );
    }
    let _ = crypt::is_passphrase_encrypted(bytes);
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn age_stream_mutated(m in mutations()) {
        check_age(&apply(&sample().age, &m));
    }

    #[test]
    fn age_stream_junk(bytes in junk()) {
        let mut b = b"age-encryption.org/v1\n".to_vec();
        b.extend(bytes);
        check_age(&b);
    }

    #[test]
    fn age_head(text in prop_oneof![
        junk().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[A-Za-z0-9+/=]{0,64}",
        mutations().prop_map(|m| {
            let head = &sample().age[..200];
            String::from_utf8_lossy(&apply(crypt::encode_head(head).unwrap().as_bytes(), &m)).into_owned()
        }),
    ]) {
        if let Ok(head) = crypt::decode_head(&text) {
            assert!(head.len() <= crypt::AGE_HEAD_MAX);
            assert!(head.starts_with(b"age-encryption.org/"));
            assert_eq!(crypt::decode_head(&crypt::encode_head(&head).unwrap()), Ok(head));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// An unfinished upload's `upload.json`, read from a bucket: whose upload it is, and whether it may still be going.

/// A marker as an upload writes it: two sets, one with sources.
fn marker_sample() -> Vec<u8> {
    let own = [
        OwnSet {
            name: "docs".into(),
            paths: vec!["/home/u".into(), "/home/u/real".into()],
        },
        OwnSet::named(&["notes"]).remove(0),
    ];
    let started = chrono::DateTime::parse_from_rfc3339("2026-12-05T02:00:00+01:00").unwrap();
    let bases = ["2026-12-01-020000".to_string()];
    UploadMarker::new("laptop", (&own, &["docs", "notes"], &bases), started).bytes()
}

fn check_marker(bytes: &[u8]) {
    let parsed = bounded(limit(bytes.len()), "parsing an upload.json", || {
        UploadMarker::parse(bytes)
    });
    let m = match parsed {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.chars().any(char::is_control), "{e:?}");
            return;
        }
    };
    assert!(bytes.len() as u64 <= upload_marker::MAX_BYTES);
    assert_eq!(UploadMarker::parse(&m.bytes()), Ok(m.clone()));
    let own = OwnSet::named(&["docs"]);
    let _ = m.foreign(Owner::Sets(&own));
    let now = chrono::Utc::now();
    for host in ["laptop", "desk"] {
        if let Some(why) = upload_marker::still_going(&m, None, now, host, |_| true) {
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn upload_marker(bytes in prop_oneof![junk(), mutations().prop_map(|m| apply(&marker_sample(), &m))]) {
        check_marker(&bytes);
    }
}
