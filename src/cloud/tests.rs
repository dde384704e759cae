//! The `Store` against a real Garage on 127.0.0.1 (see `testkit::objstore`): streamed multipart uploads read back byte
//! for byte, the cost of a ranged read, an upload cut by a killed server found and aborted by the next call, no
//! secret in any error; and the B2 operator as far as it can be built without B2.

use std::io::{Read, Seek, SeekFrom, Write};

use super::*;
use crate::cloud::credentials::{Keys, Secret, Source};
use crate::expand::Env;
use crate::settings::{CloudKind, CloudSettings};
use testkit::objstore::{Garage, REGION, closed_port};

pub(crate) fn settings(endpoint: &str, bucket: &str) -> CloudSettings {
    CloudSettings {
        name: "offsite".into(),
        kind: CloudKind::S3,
        endpoint: Some(endpoint.into()),
        bucket: bucket.into(),
        bucket_id: None,
        prefix: "laptop/one".into(),
        region: REGION.into(),
        path_style: true,
        profile: None,
        credentials_file: None,
        priority: 0,
        retention: crate::config::RetentionPolicy::last(5),
        keep_at_least: 2,
        encryption: None,
        allow_unencrypted: true,
        schedule: None,
        storage_class_archives: None,
        storage_class_metadata: None,
        object_lock_days: None,
        bwlimit: None,
        retries: 1,
        timeout_seconds: 10,
    }
}

fn keys(id: &str, secret: &str) -> Keys {
    Keys {
        id: Secret::new(id),
        secret: Secret::new(secret),
        session_token: None,
        source: Source::Environment {
            variable: "AWS_ACCESS_KEY_ID".into(),
        },
    }
}

fn garage() -> Option<Garage> {
    match Garage::start() {
        Ok(g) => Some(g),
        Err(why) => {
            crate::stdx::skip::skip(&why);
            None
        }
    }
}

fn open(g: &Garage) -> std::sync::Arc<Store> {
    std::sync::Arc::new(
        Store::with_keys(
            &settings(&g.endpoint(), &g.bucket),
            keys(&g.key.id, &g.key.secret),
            &Env::default(),
            chrono::NaiveTime::MIN,
        )
        .unwrap(),
    )
}

/// Bytes no two offsets of which repeat in a short window: a misplaced range shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// 20 MiB of [`pattern`] uploaded to `key` as an archive, streamed in writes of 1 MiB (three parts); its bytes.
fn streamed(store: &std::sync::Arc<Store>, key: &str) -> Vec<u8> {
    let data = pattern(20 << 20);
    let mut up = store.upload(key, ObjectClass::Archive, None).unwrap();
    for chunk in data.chunks(1 << 20) {
        up.write_all(chunk).unwrap();
    }
    assert_eq!(up.finish().unwrap(), data.len() as u64, "{key}");
    data
}

/// A 20 MiB streamed upload (three parts, each with its CRC32C checked by Garage) lists with its size under the
/// prefix, reads back byte for byte, and a ranged read in the middle costs one HEAD and one GET.
#[test]
fn a_streamed_upload_reads_back_and_a_ranged_read_costs_one_head_and_one_get() {
    let Some(g) = garage() else { return };
    let store = open(&g);
    let data = streamed(&store, "backups/s1/data.tar");
    store
        .put("backups/s1/backup.json", b"{}", ObjectClass::Metadata)
        .unwrap();

    let listed = store.list("backups/").unwrap();
    let names: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        names,
        [
            ("backups/s1/backup.json", 2),
            ("backups/s1/data.tar", data.len() as u64)
        ]
    );
    assert!(
        store
            .list("")
            .unwrap()
            .iter()
            .all(|o| !o.key.starts_with('/'))
    );

    let before = store.requests();
    let mut r = store.reader("backups/s1/data.tar").unwrap();
    assert_eq!(r.size(), data.len() as u64);
    let at = 13_000_001usize;
    r.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut buf = vec![0u8; 1024];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[at..at + 1024]);
    let cost = store.requests();
    assert_eq!(
        (cost.head - before.head, cost.get - before.get),
        (1, 1),
        "a seek and a 1 KiB read: {cost:?} after {before:?}"
    );

    assert_eq!(store.get("backups/s1/backup.json").unwrap(), b"{}");
    store.delete("backups/s1/backup.json").unwrap();
    assert_eq!(store.stat("backups/s1/backup.json").unwrap(), None);
    store.delete("backups/s1/backup.json").unwrap();
}

/// The bounded ranged reader restore uses: a seek is free and a 1 KiB read after it is one GET of at most
/// `RANGE_FIRST` (no HEAD); a read inside what was received, forward or back, costs nothing; reading a 20 MiB object
/// in order from a jump costs one GET per doubling window up to `RANGE_MAX`, and every byte is the object's; a read
/// past the end is 0. Before: each read after a seek reopened a stream to the object's end (411 requests for a
/// 304 MiB whole-set restore).
#[test]
fn a_ranged_reader_costs_one_get_per_jump_and_few_in_order() {
    let Some(g) = garage() else { return };
    let store = open(&g);
    let data = streamed(&store, "backups/s3/data.tar");
    let len = data.len() as u64;

    let before = store.requests();
    let mut r = store.ranged("backups/s3/data.tar", len);
    let at = 13_000_001usize;
    r.seek(SeekFrom::Start(at as u64)).unwrap();
    r.seek(SeekFrom::Start(5)).unwrap();
    r.seek(SeekFrom::Start(at as u64)).unwrap();
    let mut buf = vec![0u8; 1024];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[at..at + 1024]);
    // Forward inside the range received, then back: no request.
    r.seek(SeekFrom::Current(10_000)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[at + 11_024..at + 12_048]);
    r.seek(SeekFrom::Start(at as u64 + 100)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[at + 100..at + 1124]);
    let cost = store.requests();
    assert_eq!(
        (cost.head - before.head, cost.get - before.get),
        (0, 1),
        "{cost:?} after {before:?}"
    );
    assert_eq!(cost.downloaded - before.downloaded, store::RANGE_FIRST);

    // The whole object in order, from the start: 64 KiB, 128 KiB, ... 8 MiB, then 8 MiB at a time.
    let before = store.requests();
    r.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert!(all == data, "the object read in order differs");
    let cost = store.requests();
    let gets = cost.get - before.get;
    assert!((8..=10).contains(&gets), "{gets} GETs for 20 MiB in order");
    assert_eq!(cost.downloaded - before.downloaded, len);
    assert_eq!(r.read(&mut buf).unwrap(), 0);
    assert_eq!(r.seek(SeekFrom::End(-4)).unwrap(), len - 4);
}

/// A backup's index up to `WHOLE_READ_MAX` is one GET, whatever a search reads of it: a 3 MiB index (kept in a
/// temporary file) read at scattered places through two readers costs one GET and gives its bytes; a 200 KiB one
/// (kept in memory) likewise; a recorded length other than the object's is refused; an index above the bound is read
/// by ranged GETs (one per jump). Before: an index above 4 MiB (the bench's, 20,000 files) cost one ranged GET per
/// binary-search probe, about 31 for one file.
#[test]
fn a_whole_index_under_the_bound_is_one_get() {
    use crate::archive::Remote as _;
    let Some(g) = garage() else { return };
    let store = open(&g);
    let objects = store::Objects::new(store.clone(), "backups/s5/".into());
    for (name, len) in [
        ("big.index.age", 3 << 20),
        ("small.index.age", 200 << 10),
        ("huge.index.age", (store::WHOLE_READ_MAX + 1) as usize),
    ] {
        let data = pattern(len);
        let mut up = store
            .upload(&format!("backups/s5/{name}"), ObjectClass::Metadata, None)
            .unwrap();
        up.write_all(&data).unwrap();
        up.finish().unwrap();
        let before = store.requests();
        let mut buf = vec![0u8; 1000];
        for _ in 0..2 {
            let mut r = objects
                .open(std::path::Path::new(name), len as u64)
                .unwrap();
            for at in [len / 2, len / 4, len - 1000, 17, len / 3] {
                r.seek(SeekFrom::Start(at as u64)).unwrap();
                r.read_exact(&mut buf).unwrap();
                assert_eq!(buf, data[at..at + 1000], "{name} at {at}");
            }
            assert_eq!(r.seek(SeekFrom::End(-4)).unwrap(), len as u64 - 4);
        }
        let gets = store.requests().get - before.get;
        if name.starts_with("huge") {
            assert!(gets >= 5, "{name}: {gets} GETs: read by ranges");
        } else {
            assert_eq!(gets, 1, "{name}: one GET");
        }
    }
    let other = store::Objects::new(store.clone(), "backups/s5/".into());
    let err = other
        .open(std::path::Path::new("small.index.age"), 100 << 10)
        .err()
        .unwrap();
    assert!(err.to_string().contains("not the 102400 recorded"), "{err}");
}

/// Garage killed (SIGKILL) in the middle of a streamed upload: the upload fails with an error that names no
/// secret, its parts stay on the server as an unfinished multipart upload, and once the server is back the next
/// call finds it and aborts it.
#[test]
fn an_upload_cut_by_a_killed_server_is_found_and_aborted_by_the_next_call() {
    let Some(mut g) = garage() else { return };
    let store = open(&g);
    let data = pattern(1 << 20);
    let mut up = store
        .upload("backups/s2/big.tar", ObjectClass::Archive, None)
        .unwrap();
    // Parts go out until the multipart upload exists and one part is stored (OpenDAL holds the first part back
    // until it knows there is a second, and sends parts from its runtime's tasks), then the server dies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.requests().put == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no part sent: {:?}",
            store.requests()
        );
        up.write_all(&data).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    g.kill();
    let mut failed = None;
    for _ in 0..32 {
        if let Err(e) = up.write_all(&data) {
            failed = Some(e.to_string());
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => up.finish().unwrap_err().to_string(),
    };
    assert!(
        !err.contains(&g.key.secret) && !err.contains(&g.key.id),
        "{err}"
    );
    assert!(err.contains("no answer"), "{err}");

    g.restart().unwrap();
    let store = open(&g);
    let left = store.unfinished_uploads("backups/").unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key, "backups/s2/big.tar");
    store.abort_upload(&left[0]).unwrap();
    // Aborted already (a first abort whose answer was lost, retried): done, not an error.
    store.abort_upload(&left[0]).unwrap();
    assert_eq!(store.unfinished_uploads("").unwrap(), []);
    assert_eq!(store.stat("backups/s2/big.tar").unwrap(), None);
}

/// An upload dropped unfinished (an error in dbackup, an interruption) is aborted on the spot: nothing stays.
#[test]
fn an_upload_dropped_unfinished_is_aborted() {
    let Some(g) = garage() else { return };
    let store = open(&g);
    let mut up = store
        .upload("backups/s3/x.tar", ObjectClass::Archive, None)
        .unwrap();
    up.write_all(&pattern(9 << 20)).unwrap();
    drop(up);
    assert_eq!(store.unfinished_uploads("").unwrap(), []);
    assert_eq!(store.list("").unwrap(), []);
}

/// Wrong keys, a missing bucket and a closed port each give their own kind of error, and none shows a key, a
/// secret or a signature.
#[test]
fn errors_are_classified_and_name_no_secret() {
    let Some(g) = garage() else { return };
    let wrong_secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases = [
        (
            settings(&g.endpoint(), &g.bucket),
            keys(&g.key.id, wrong_secret),
            Failure::Denied,
        ),
        (
            settings(&g.endpoint(), &g.bucket),
            keys("GK000000000000000000000000", wrong_secret),
            Failure::Denied,
        ),
        (
            settings(&g.endpoint(), "no-such-bucket"),
            keys(&g.key.id, &g.key.secret),
            Failure::NoBucket,
        ),
        (
            settings(&format!("http://127.0.0.1:{}", closed_port()), &g.bucket),
            keys(&g.key.id, &g.key.secret),
            Failure::Unreachable,
        ),
    ];
    for (cloud, k, want) in cases {
        let secrets: Vec<String> = k.secrets().iter().map(|s| s.to_string()).collect();
        let store = Store::with_keys(&cloud, k, &Env::default(), chrono::NaiveTime::MIN).unwrap();
        let err = store.put("probe", b"x", ObjectClass::Metadata).unwrap_err();
        let text = format!("{err} {err:?}");
        assert_eq!(err.failure(), want, "{text}");
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{s} in {text}");
        }
        assert!(!text.contains("Signature="), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("credential=a"),
            "{text}"
        );
    }
}

/// `AWS_CA_BUNDLE` (set on this machine, as in many corporate setups): its certificates are added to the trusted
/// roots of an https endpoint; one that cannot be read is a clear error naming the variable; a plain-http
/// endpoint ignores it. (OpenDAL itself ignores the variable; rclone 1.60 fails every call when it is set.)
#[test]
fn aws_ca_bundle_is_honoured_for_https_and_named_when_broken() {
    let mut cloud = settings("https://s3.example.invalid", "b-b-b");
    let env_with = |v: &str| Env {
        vars: [("AWS_CA_BUNDLE".to_string(), v.to_string())].into(),
        ..Env::default()
    };
    let k = || keys("id-id", "secret-secret");
    let err = Store::with_keys(
        &cloud,
        k(),
        &env_with("/nonexistent/ca.pem"),
        chrono::NaiveTime::MIN,
    )
    .expect_err("an unreadable bundle is refused")
    .to_string();
    assert!(
        err.contains("AWS_CA_BUNDLE") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = Store::with_keys(
        &cloud,
        k(),
        &env_with(junk.to_str().unwrap()),
        chrono::NaiveTime::MIN,
    )
    .expect_err("a bundle without certificates is refused")
    .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
    if let Some(system) = ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
    {
        Store::with_keys(&cloud, k(), &env_with(system), chrono::NaiveTime::MIN).unwrap();
    }
    cloud.endpoint = Some("http://127.0.0.1:9".into());
    Store::with_keys(
        &cloud,
        k(),
        &env_with("/nonexistent/ca.pem"),
        chrono::NaiveTime::MIN,
    )
    .expect("http ignores the bundle");
}

/// B2's native API cannot be reached from here: the operator is built (service b2, root at the prefix, the
/// bucket) without a single request, and every other call is left to a real B2.
#[test]
fn the_b2_operator_is_built_without_a_request() {
    let mut cloud = settings("unused", "my-b2-bucket");
    cloud.kind = CloudKind::B2;
    cloud.endpoint = None;
    cloud.bucket_id = Some("4a48fe8875c6214145260818".into());
    let store = Store::with_keys(
        &cloud,
        keys("keyid", "appkey"),
        &Env::default(),
        chrono::NaiveTime::MIN,
    )
    .unwrap();
    let (scheme, root, name) = store.operator_info();
    assert_eq!(scheme, "b2");
    assert_eq!(root, "/laptop/one/");
    // OpenDAL's b2 service leaves the operator's name empty; the bucket is in the place messages name.
    assert!(name.is_empty() || name == "my-b2-bucket", "{name}");
    assert!(store.place().contains("my-b2-bucket"), "{}", store.place());
    assert_eq!(store.requests(), Requests::default());
    assert_eq!(store.unfinished_uploads("").unwrap(), []);
}

/// An encrypted sink's parts (each an age stream of its own): the head the sink keeps for each is exactly what
/// precedes its first chunk (the object's first bytes, the rest whole chunks with their tags); with the heads
/// known, a one-file read in the middle of the second part costs one ranged GET (before the heads were recorded:
/// two, the first for age's header), and a head altered in its header is refused by age's MAC.
#[test]
fn an_encrypted_parts_head_is_kept_and_spares_its_get() {
    use crate::archive::{ArchiveFiles, EncryptTo, Sink as _};
    use age::secrecy::ExposeSecret as _;
    let Some(g) = garage() else { return };
    let store = open(&g);
    let id = age::x25519::Identity::generate();
    let to = EncryptTo::Recipients(vec![id.to_public().to_string().parse().unwrap()]);
    let plain = 256u64 << 10;
    let data = pattern(600 << 10);
    let mut sink = sink::CloudSink::new(
        store.clone(),
        "backups/s6/",
        "d.tar",
        Some(plain),
        ObjectClass::Archive,
        None,
    )
    .encrypt_parts(std::sync::Arc::new(to));
    let heads = sink.heads();
    sink.write_all(&data).unwrap();
    let written = Box::new(sink).finish().unwrap();
    assert_eq!(written.len(), 3);
    let mut parts = Vec::new();
    for (n, f) in written.iter().enumerate() {
        let name = f.path.to_string_lossy().into_owned();
        let head = heads
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: no head"));
        let object = store.get(&format!("backups/s6/{name}")).unwrap();
        assert!(
            object.starts_with(&head),
            "{name}: the head is its first bytes"
        );
        let part_plain = (data.len() as u64 - n as u64 * plain).min(plain);
        let chunks = part_plain.div_ceil(64 << 10);
        assert_eq!(
            object.len() as u64 - head.len() as u64,
            part_plain + chunks * 16,
            "{name}: after the head, only chunks"
        );
        parts.push((std::path::PathBuf::from(name), f.bytes, head));
    }

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let mut keys = crate::archive::Keys::new();
    keys.add_identity_file(&key).unwrap();
    let keys = Some(std::sync::Arc::new(keys));
    let read_at = |heads: &[Option<Vec<u8>>], at: u64| {
        let objects = std::sync::Arc::new(store::Objects::new(store.clone(), "backups/s6/".into()));
        for ((name, _, _), head) in parts.iter().zip(heads) {
            if let Some(h) = head {
                objects.know_head(&name.to_string_lossy(), h.clone());
            }
        }
        let files = ArchiveFiles::remote(
            parts.iter().map(|(n, b, _)| (n.clone(), *b)).collect(),
            objects,
        )
        .with_plain_parts(Some(plain))
        .with_keys(keys.clone());
        files.check_recorded_heads()?;
        files.expect(at..at + 1000);
        let before = store.requests().get;
        let mut r = files.open()?;
        r.seek(SeekFrom::Start(at))?;
        let mut buf = vec![0u8; 1000];
        r.read_exact(&mut buf)?;
        assert!(
            buf == data[at as usize..at as usize + 1000],
            "the bytes at {at}"
        );
        Ok::<u64, std::io::Error>(store.requests().get - before)
    };
    let recorded: Vec<Option<Vec<u8>>> = parts.iter().map(|p| Some(p.2.clone())).collect();
    let at = plain + 130_000;
    assert_eq!(read_at(&recorded, at).unwrap(), 1, "with the heads");
    assert_eq!(read_at(&[None, None, None], at).unwrap(), 2, "without");
    let mut altered = recorded.clone();
    altered[1].as_mut().unwrap()[30] ^= 1;
    let e = read_at(&altered, at).unwrap_err().to_string();
    assert!(
        e.contains("d.tar.part001.age") && e.contains("age_head"),
        "{e}"
    );
}
