//! Restoring from age-encrypted archives through the restore engine: one file from an indexed archive reads a few
//! chunks (measured with the kernel's count of bytes this thread read), not the whole archive; a read error in the
//! middle of a file leaves no temporary file behind.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::archive::{
    self, ArchiveFiles, ArchiveOptions, EncryptTo, FileSink, Keys, NoProgress, scan,
};
use crate::restore::content::SetContent;
use crate::restore::engine::safety::check_name;
use crate::restore::job::{self, SetBackup};
use crate::restore::*;

/// Bytes this thread has read with read(2) and friends so far (`rchar` of `/proc/thread-self/io`).
fn thread_read_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    text.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("an rchar line")
}

struct Fixture {
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
    archive: ArchiveFiles,
    index: ArchiveFiles,
    big: Vec<u8>,
}

/// An encrypted archive (and index) of `a.bin`, `m.txt` and `z.bin` (3 MiB in all), with the keys to open it.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // The one file sits in the middle, between two halves of `big`: its chunk is neither the first nor the last.
    let half = big.len() / 2;
    std::fs::write(src.join("a.bin"), &big[..half]).unwrap();
    std::fs::write(src.join("m.txt"), b"the one file").unwrap();
    std::fs::write(src.join("z.bin"), &big[half..]).unwrap();
    let id = age::x25519::Identity::generate();
    let key = base.join("key.txt");
    use age::secrecy::ExposeSecret;
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let to = EncryptTo::Recipients(vec![id.to_public().to_string().parse().unwrap()]);
    let out = base.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let plan = scan(&src, &mut NoProgress).unwrap();
    archive::write_archive(
        &plan,
        Box::new(FileSink::create(out.join("d.tar.age")).unwrap()),
        Box::new(FileSink::create(out.join("d.index.age")).unwrap()),
        &ArchiveOptions {
            stage: Some(&to),
            ..Default::default()
        },
        &mut NoProgress,
    )
    .unwrap();
    let mut keys = Keys::new();
    keys.add_identity_file(&key).unwrap();
    let keys = Some(Arc::new(keys));
    Fixture {
        archive: ArchiveFiles::discover(&out, "d.tar.age")
            .unwrap()
            .with_keys(keys.clone()),
        index: ArchiveFiles::discover(&out, "d.index.age")
            .unwrap()
            .with_keys(keys),
        big,
        base,
        _dir: dir,
    }
}

fn restore_one(
    sets: &[SetBackup],
    name: &str,
    target: &Path,
) -> (Vec<Summary>, Option<RestoreError>) {
    let sel = job::place(
        0,
        check_name(name.as_bytes(), None).unwrap(),
        Some(target),
        None,
    )
    .unwrap();
    let opts = RestoreOptions {
        fsync: false,
        ..RestoreOptions::default()
    };
    let planned = job::plan_all(sets, vec![sel], &opts).unwrap();
    job::apply_all(sets, &planned, &mut |_| {})
}

#[test]
fn one_file_from_an_encrypted_archive_reads_a_few_chunks_not_the_archive() {
    let f = fixture();
    assert!(f.archive.len() > 3 << 20);
    let sets = vec![SetBackup {
        set: "d".into(),
        label: "test".into(),
        sources: Vec::new(),
        content: SetContent::Archive {
            archive: f.archive.clone(),
            index: Some(f.index.clone()),
            chain: Vec::new(),
        },
    }];
    let target = f.base.join("target");
    let before = thread_read_bytes();
    let (summaries, error) = restore_one(&sets, "m.txt", &target);
    let read = thread_read_bytes() - before;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(summaries[0].counts.create.entries, 1);
    assert_eq!(
        std::fs::read(target.join("m.txt")).unwrap(),
        b"the one file"
    );
    // The index (small), the archive's header and the chunk(s) holding m.txt's header and content: well under
    // 512 KiB of a 3 MiB archive.
    assert!(
        read < 512 << 10,
        "restoring one file read {read} bytes of a {} byte archive",
        f.archive.len()
    );
    // The counter does count: decrypting everything reads it all.
    let before = thread_read_bytes();
    let mut all = Vec::new();
    f.archive.open().unwrap().read_to_end(&mut all).unwrap();
    assert!(thread_read_bytes() - before >= f.archive.len());
}

#[test]
fn a_chunk_that_does_not_authenticate_mid_file_leaves_no_temporary_file() {
    let f = fixture();
    // Damage a byte in the middle of z.bin's ciphertext: its first chunks decrypt and are written, then a chunk
    // fails.
    let path = &f.archive.parts[0].0;
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 1;
    std::fs::write(path, &bytes).unwrap();
    let sets = vec![SetBackup {
        set: "d".into(),
        label: "test".into(),
        sources: Vec::new(),
        content: SetContent::Archive {
            archive: ArchiveFiles::discover(path.parent().unwrap(), "d.tar.age")
                .unwrap()
                .with_keys(f.archive.keys.clone()),
            index: Some(f.index.clone()),
            chain: Vec::new(),
        },
    }];
    let target = f.base.join("target");
    let (summaries, error) = restore_one(&sets, "z.bin", &target);
    // The entry fails (its content is damaged); a restore of more would go on with the next entry.
    assert!(error.is_none(), "{error:?}");
    let problems = &summaries[0].errors;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("does not authenticate"),
        "{problems:?}"
    );
    assert_eq!(summaries[0].counts.create.entries, 0);
    let left: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing left at the target: {left:?}");
    assert_ne!(f.big.len(), 0);
}
