//! Issue 11 through the real binary, restore's part: verify proves what a restore would write (§3), a restore never
//! destroys the user's newer work (§5), and identity-file permissions and secret files under /nix/store (§6).

use std::fs;
use std::path::Path;

use dbackup::{
    BACKUP_META_FILE, Digest, SUMS_FILE, SumLine, backup_meta_bytes, read_backup_meta, read_sums,
    write_sums,
};

use crate::fixtures::demo::{Pristine, demo, from_external};
use crate::harness::Test;

fn restore(t: &Test) -> crate::harness::Cmd {
    t.cmd().args(["restore"])
}

/// A name of the demo under `data` (the symlinked source), as the index spells it (no leading `/`).
fn data_name(data: &Path, rel: &str) -> String {
    data.join(rel)
        .strip_prefix("/")
        .unwrap()
        .display()
        .to_string()
}

/// Rewrites `<set>.index.jsonl` of the drive backup in `dir` line by line with `edit` (`None` leaves a line out,
/// more lines may be returned joined by newlines), then makes `backup.json` and `verification.sha256` agree with the
/// new index, as a hostile drive would: only the archive itself still tells the truth.
fn forge_index(dir: &Path, set: &str, edit: impl Fn(&str) -> Option<String>) {
    let name = format!("{set}.index.jsonl");
    let path = dir.join(&name);
    let text = fs::read_to_string(&path).unwrap();
    let forged: String = text
        .lines()
        .filter_map(|l| edit(l).map(|l| l + "\n"))
        .collect();
    assert_ne!(text, forged, "the edit changed the index");
    fs::write(&path, &forged).unwrap();
    let index_sha = Digest::of_bytes(forged.as_bytes());
    let meta_path = dir.join(BACKUP_META_FILE);
    let mut meta = read_backup_meta(&meta_path).unwrap();
    for s in &mut meta.sets {
        for r in &mut s.index {
            if r.name == name {
                r.bytes = forged.len() as u64;
                r.sha256 = index_sha;
            }
        }
    }
    let meta_bytes = backup_meta_bytes(&meta);
    fs::write(&meta_path, &meta_bytes).unwrap();
    let sums_path = dir.join(SUMS_FILE);
    let sums: Vec<SumLine> = read_sums(&sums_path)
        .unwrap()
        .into_iter()
        .map(|mut l| {
            if l.name == name.as_bytes() {
                l.sha256 = index_sha;
            } else if l.name == BACKUP_META_FILE.as_bytes() {
                l.sha256 = Digest::of_bytes(&meta_bytes);
            }
            l
        })
        .collect();
    let mut out = Vec::new();
    write_sums(&mut out, &sums).unwrap();
    fs::write(&sums_path, out).unwrap();
}

/// The index line of `path` in `line` form, parsed, when `line` is that entry's.
fn line_of(line: &str, path: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["path"] == path).then_some(v)
}

// ---------------------------------------------------------------------------------------------------------------
// §3: verify proves what restore would write

/// The hard-link line of `projects/important/also-photo` (whose first name, `photos/p.jpg`, is outside the restored
/// directory, so a restore copies its content) made to point at the data of `projects/other/c.txt`, with that
/// file's size and sha256, and `backup.json` and the sums file made to agree. Before: `--verify` said "intact" and a
/// restore of `projects/important` wrote "other c" as `also-photo`. Now: `--verify` fails naming the link and the
/// data offset the archive gives it, and the restore stops before writing anything.
#[test]
fn a_hard_link_line_pointing_at_another_files_data_fails_verify_and_stops_the_restore() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    let index = fs::read_to_string(dir.join("data.index.jsonl")).unwrap();
    let other = data_name(&d.data, "projects/other/c.txt");
    let link = data_name(&d.data, "projects/important/also-photo");
    let c = index
        .lines()
        .find_map(|l| line_of(l, &other))
        .expect("c.txt in the index");
    forge_index(&dir, "data", |l| match line_of(l, &link) {
        Some(mut v) => {
            assert_eq!(v["type"], "hardlink");
            for key in ["data_offset", "size", "sha256"] {
                v[key] = c[key].clone();
            }
            Some(v.to_string())
        }
        None => Some(l.to_string()),
    });

    let out = restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
    out.stderr_has(&format!("entry {link}"))
        .stderr_has("data offset differs");
    out.stdout_has("NOT intact");

    let target = t.path("r");
    let out = from_external(restore(t), "~/data/projects/important", &target).status(1);
    out.stderr_has("the hard link").stderr_has(&link);
    out.stderr_has("nothing was restored");
    assert!(!target.exists(), "nothing written");
}

/// One line of the index left out (`projects/important/sub/b.txt`), then one added for an entry the archive does not
/// hold, each with `backup.json` and the sums file made to agree. Before: restoring `projects/important` exited 0
/// without `b.txt` (nothing said), and with the added line it wrote the entries before it, then stopped. Now: both
/// stop before writing anything, naming what the index leaves out or adds; `--verify` fails on both (as before).
#[test]
fn an_index_that_leaves_out_or_adds_an_entry_stops_the_restore_of_that_path() {
    let d = demo();
    let t = &d.t;
    let dir = d.drive.join("backups/2025-04-02-031500");
    let pristine = Pristine::of(&dir);
    let b = data_name(&d.data, "projects/important/sub/b.txt");
    let target = t.path("r");
    let restore_important =
        || from_external(restore(t), "~/data/projects/important", &target).status(1);

    forge_index(&dir, "data", |l| {
        line_of(l, &b).is_none().then(|| l.to_string())
    });
    let out = restore_important();
    out.stderr_has(&format!("the archive holds /{b} (its data at offset"))
        .stderr_has("which the index leaves out");
    out.stderr_has(&format!(
        "cannot restore {}",
        d.data.join("projects/important").display()
    ));
    assert!(!target.exists(), "nothing written");
    restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
    // A restore of something else in the same backup is not affected.
    from_external(restore(t), "~/data/projects/other", &target).status(0);
    fs::remove_dir_all(&target).unwrap();

    pristine.reset();
    let forged = data_name(&d.data, "projects/important/sub/b2.txt");
    forge_index(&dir, "data", |l| match line_of(l, &b) {
        Some(mut v) => {
            v["path"] = forged.clone().into();
            Some(format!("{l}\n{v}"))
        }
        None => Some(l.to_string()),
    });
    let out = restore_important();
    out.stderr_has(&format!("the index lists /{forged}"))
        .stderr_has("which the archive does not hold there");
    assert!(!target.exists(), "nothing written");
    restore(t)
        .args(["--source", "external", "--verify"])
        .status(1);
}

// ---------------------------------------------------------------------------------------------------------------
// §5: a restore never destroys the user's newer work

/// Sets a file's mode and mtime.
fn stamp_file(path: &Path, mode: u32, mtime: i64) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64))
        .unwrap();
}

/// Every file kept under `<root>/displaced/`, as (run directory, path below it).
fn kept_files(root: &Path) -> Vec<(String, std::path::PathBuf)> {
    let dir = root.join("displaced");
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(&dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(&dir).unwrap();
        let mut comps = rel.components();
        let run = comps
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        out.push((run, comps.as_path().to_path_buf()));
    }
    out
}

/// The last line of the run log.
fn last_log_record(t: &Test) -> serde_json::Value {
    let text = fs::read_to_string(t.path("state/dbackup/log.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// A file edited since the backup (newer work, mode 0640, its own mtime) is restored over, in place: from local
/// snapshots, then from the drive. Before: it was replaced and lost. Now: the dry run says it would be kept; the
/// restore keeps it, with its mode and mtime, at `<backup_root>/displaced/<stamp>/<its absolute path>` (readable
/// with plain tools), lists it on stdout, in `--json` and in the run log; files identical to the backup are not
/// kept, even with `--overwrite always`; and only `--overwrite always --no-keep` replaces without keeping.
#[test]
fn newer_work_replaced_by_a_restore_is_kept_in_displaced() {
    use std::os::unix::fs::MetadataExt;
    let d = demo();
    let t = &d.t;
    let state = t.home().join(".config/app/state");
    let state_rel = state.strip_prefix("/").unwrap().to_path_buf();
    fs::write(&state, "my newer work").unwrap();
    stamp_file(&state, 0o640, 1_750_000_000);

    // The dry run says so, and writes nothing.
    let out = t
        .cmd()
        .args(["--dry-run", "restore", "--path", "~/.config/app"])
        .status(0);
    out.stdout_has(&format!("replace    {} (kept first)", state.display()))
        .stdout_has("1 file to replace differs from the backup: kept first, under");
    let v: serde_json::Value = t
        .cmd()
        .args(["--dry-run", "--json", "restore", "--path", "~/.config/app"])
        .status(0)
        .json();
    let items = v["restores"][0]["plan"]["items"].as_array().unwrap();
    let kept: Vec<&str> = items
        .iter()
        .filter_map(|i| i["displaced_to"].as_str())
        .collect();
    assert_eq!(kept.len(), 1, "{v}");
    assert!(
        kept[0].ends_with(&format!("/{}", state_rel.display())),
        "{kept:?}"
    );
    assert!(
        !t.root().join("displaced").exists(),
        "the dry run wrote nothing"
    );

    // Local snapshots.
    let out = restore(t).args(["--path", "~/.config/app"]).status(0);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1", "restored");
    let kept = kept_files(&t.root());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, state_rel);
    let kept_path = t.root().join("displaced").join(&kept[0].0).join(&state_rel);
    assert_eq!(fs::read_to_string(&kept_path).unwrap(), "my newer work");
    let m = fs::metadata(&kept_path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_750_000_000));
    out.stdout_has(&format!(
        "kept       {}: the one that was there is now {}",
        state.display(),
        kept_path.display()
    ));
    out.stderr_has("kept in");
    let log = last_log_record(t);
    assert_eq!(log["command"], "restore");
    assert_eq!(log["exit"], 0);
    let logged = &log["sets"][0]["displaced"][0];
    assert_eq!(logged["path"], state.display().to_string(), "{log}");
    assert_eq!(logged["kept"], kept_path.display().to_string(), "{log}");

    // The drive, the same way (another run: another directory).
    fs::write(&state, "newer still").unwrap();
    let v: serde_json::Value = restore(t)
        .args([
            "--json",
            "--source",
            "external",
            "--path",
            "~/.config/app/state",
        ])
        .status(0)
        .json();
    let displaced = v["restores"][0]["summary"]["displaced"].as_array().unwrap();
    assert_eq!(displaced.len(), 1, "{v}");
    let second = Path::new(displaced[0]["kept"].as_str().unwrap()).to_path_buf();
    assert_eq!(fs::read_to_string(&second).unwrap(), "newer still");
    assert_ne!(second, kept_path);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1");

    // Identical files are not kept, even when rewritten.
    let v: serde_json::Value = restore(t)
        .args(["--json", "--overwrite", "always", "--path", "~/.config/app"])
        .status(0)
        .json();
    assert_eq!(
        v["restores"][0]["summary"]["displaced"],
        serde_json::json!([]),
        "{v}"
    );
    assert_eq!(kept_files(&t.root()).len(), 2);

    // Replacing without keeping takes both flags.
    fs::write(&state, "throw this away").unwrap();
    let out = restore(t)
        .args(["--path", "~/.config/app/state", "--no-keep"])
        .status(2);
    out.stderr_has("--overwrite always");
    assert_eq!(fs::read_to_string(&state).unwrap(), "throw this away");
    restore(t)
        .args([
            "--path",
            "~/.config/app/state",
            "--overwrite",
            "always",
            "--no-keep",
        ])
        .status(0);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1");
    assert_eq!(kept_files(&t.root()).len(), 2, "nothing more kept");
}

/// A restore whose destination is on another filesystem than the backup root (a `--target` on /dev/shm, a tmpfs):
/// the file it replaces is kept by copying it, with its content, mode and mtime. Before: it was replaced and lost.
#[test]
fn a_file_on_another_filesystem_is_kept_by_a_copy() {
    use std::os::unix::fs::MetadataExt;
    let d = demo();
    let t = &d.t;
    let Ok(shm) = tempfile::Builder::new()
        .prefix("dbackup-test-")
        .tempdir_in("/dev/shm")
    else {
        testkit::skip("no /dev/shm to restore into another filesystem");
        return;
    };
    if fs::metadata(shm.path()).unwrap().dev()
        == fs::metadata(t.root().parent().unwrap()).unwrap().dev()
    {
        testkit::skip("/dev/shm is on the same filesystem as the test directory");
        return;
    }
    let target = shm.path().to_str().unwrap();
    restore(t)
        .args(["--path", "~/.secrets", "--target", target])
        .status(0);
    let restored = shm
        .path()
        .join(t.home().join(".secrets").strip_prefix("/").unwrap());
    fs::write(&restored, "edited after the restore").unwrap();
    stamp_file(&restored, 0o600, 1_760_000_000);
    let v: serde_json::Value = restore(t)
        .args(["--json", "--path", "~/.secrets", "--target", target])
        .status(0)
        .json();
    let displaced = &v["restores"][0]["summary"]["displaced"];
    assert_eq!(displaced[0]["how"], "copy", "{v}");
    let kept = Path::new(displaced[0]["kept"].as_str().unwrap()).to_path_buf();
    assert!(
        kept.starts_with(t.root().join("displaced")),
        "{}",
        kept.display()
    );
    assert_eq!(
        fs::read_to_string(&kept).unwrap(),
        "edited after the restore"
    );
    let m = fs::metadata(&kept).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.mtime(), m.nlink()),
        (0o600, 1_760_000_000, 1)
    );
    assert_eq!(fs::read_to_string(&restored).unwrap(), "hunter2");
}

/// A bare `dbackup restore` (no --path, --set or --target). Before: it restored every set in place, replacing
/// whatever differed. Now: it restores nothing and asks for --path, --set or --all (exit 2), the dry run too;
/// `--all` restores every set in place, and `--target DIR` alone restores everything there.
#[test]
fn a_bare_restore_asks_what_to_restore() {
    let d = demo();
    let t = &d.t;
    let state = t.home().join(".config/app/state");
    fs::write(&state, "mine").unwrap();
    for dry in [false, true] {
        let mut c = t.cmd();
        if dry {
            c = c.args(["--dry-run"]);
        }
        let out = c.args(["restore"]).status(2);
        out.stderr_has("say what to restore")
            .stderr_has("--path")
            .stderr_has("--set")
            .stderr_has("--all");
    }
    let out = restore(t).args(["--source", "external"]).status(2);
    out.stderr_has("say what to restore");
    assert_eq!(
        fs::read_to_string(&state).unwrap(),
        "mine",
        "nothing restored"
    );
    let out = restore(t).args(["--all", "--set", "config"]).status(2);
    out.stderr_has("takes no --path or --set");
    // --help teaches all of it.
    let help = restore(t).args(["--help"]).status(0).stdout;
    for needle in [
        "--all",
        "--no-keep",
        "<backup_root>/displaced/<stamp>/",
        "cp -a",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }

    // --target DIR alone: everything, there.
    let target = t.path("everything");
    restore(t)
        .args(["--target", target.to_str().unwrap()])
        .status(0);
    for p in [t.home().join(".secrets"), d.data.join("photos/p.jpg")] {
        assert!(
            target.join(p.strip_prefix("/").unwrap()).is_file(),
            "{}",
            p.display()
        );
    }
    assert_eq!(fs::read_to_string(&state).unwrap(), "mine");
    // --set: that set's sources, in place.
    restore(t).args(["--set", "config"]).status(0);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1");
    // --all: every set, in place.
    fs::write(&state, "mine again").unwrap();
    fs::remove_file(d.data.join("photos/p.jpg")).unwrap();
    restore(t).args(["--all"]).status(0);
    assert_eq!(fs::read_to_string(&state).unwrap(), "1");
    assert_eq!(
        fs::read(d.data.join("photos/p.jpg")).unwrap(),
        b"jpeg bytes"
    );
}

/// `--path` naming a file deleted before the newest backup (it is in the older ones). Before: the error said only
/// that it is not in the newest backup, with similar names from there. Now: it names the newest backup that holds it
/// and the `--date` to use, for local snapshots and for the drive; and that `--date` restores it.
#[test]
fn a_path_only_in_older_backups_names_the_newest_that_holds_it() {
    let d = demo();
    let t = &d.t;
    let settings = t.home().join(".config/app/settings.json");
    fs::remove_file(&settings).unwrap();
    crate::fixtures::demo::collect_as(t, "2025-04-03-031500");
    crate::fixtures::demo::drive_backup(
        &t.root(),
        &d.drive.join("backups"),
        "2025-04-03-031500",
        &["config", "data"],
    );
    for (source, place) in [
        ("local", "local snapshot config-2025-04-02-031500"),
        ("external", "on T9"),
    ] {
        let out = restore(t)
            .args(["--source", source, "--path", "~/.config/app/settings.json"])
            .status(1);
        assert!(
            out.stderr.contains(&format!(
                "{} is not in",
                settings.display()
            )) && out.stderr.contains(&format!(
                "the newest that holds it is 2025-04-02-031500 ({place}); restore it from there with --date \
                 2025-04-02-031500"
            )),
            "{source}: {}",
            out.stderr
        );
        // The names near it are in the chosen backup: they come before the older backup, not after its `--date`
        // (where "the nearest there" read as names in the older one). Before: they came last.
        let error = out.stderr.trim_end();
        assert!(
            error.ends_with("restore it from there with --date 2025-04-02-031500"),
            "{source}: {error}"
        );
        assert!(
            error.find("; the nearest there: ") < error.find("; it is in an older backup"),
            "{source}: {error}"
        );
        // --verify says the same.
        let out = restore(t)
            .args([
                "--source",
                source,
                "--verify",
                "--path",
                "~/.config/app/settings.json",
            ])
            .status(1);
        assert!(
            out.stderr.contains("--date 2025-04-02-031500"),
            "{source}: {}",
            out.stderr
        );
    }
    restore(t)
        .args([
            "--source",
            "external",
            "--date",
            "2025-04-02-031500",
            "--path",
            "~/.config/app/settings.json",
        ])
        .status(0);
    assert_eq!(
        fs::read_to_string(&settings).unwrap(),
        "{\"theme\": \"dark\"}"
    );
    // A path in no backup at all still gets the nearest names.
    let out = restore(t)
        .args(["--path", "~/.config/app/nothing-like-it"])
        .status(1);
    out.stderr_lacks("older backup");
}

// ---------------------------------------------------------------------------------------------------------------
// §6: identity files

/// An identity file that other users can read (mode 0644, then 0640). Before: it was used without a word. Now:
/// the restore warns as ssh does (naming the file, its mode and `chmod 600`), and still restores; a 0600 one does
/// not warn.
#[test]
fn an_identity_file_others_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let e = crate::fixtures::age::encrypted_backup("");
    let t = &e.t;
    let key = e.key.to_str().unwrap();
    for (mode, warns) in [(0o644, true), (0o640, true), (0o600, false)] {
        fs::set_permissions(&e.key, fs::Permissions::from_mode(mode)).unwrap();
        let target = t.path(&format!("r-{mode:o}"));
        let out = restore(t)
            .args([
                "--source",
                "external",
                "--path",
                "~/.secrets",
                "--identity",
                key,
                "--target",
            ])
            .args([&target])
            .status(0);
        let warned = out.stderr.contains(&format!(
            "the identity file {key} can be read by other users (mode {mode:04o})"
        )) && out.stderr.contains(&format!("chmod 600 {key}"));
        assert_eq!(warned, warns, "mode {mode:o}: {}", out.stderr);
    }
}

/// A config whose `identity_file` or `passphrase_file` lies in /nix/store. Before: `config check` accepted it. Now:
/// it is refused (exit 2) naming the key and saying why (the store is world-readable).
#[test]
fn secret_files_under_the_nix_store_are_refused_by_the_config() {
    let t = Test::new();
    let (_, recipient) = t.keygen("key.txt");
    for (what, encryption) in [
        (
            "/encryption/identity_file",
            format!(
                r#"{{ "recipients": ["{recipient}"], "identity_file": "/nix/store/0a1b-dbackup-identity.txt" }}"#
            ),
        ),
        (
            "/encryption/passphrase_file",
            r#"{ "passphrase": true, "passphrase_file": "/nix/store/0a1b-passphrase" }"#
                .to_string(),
        ),
    ] {
        let t = Test::new().config(&crate::fixtures::demo::config(&format!(
            r#", "encryption": {encryption}"#
        )));
        let out = t.cmd().args(["config", "check"]).status(2);
        assert!(
            out.stderr.contains(what)
                && out.stderr.contains("is in the Nix store")
                && out.stderr.contains("every user of this machine can read"),
            "{what}: {}",
            out.stderr
        );
    }
}

/// A bucket's `credentials_file` in /nix/store is refused like an identity there (the brief: cloud credentials in
/// no store path). Before: `config check` accepted it whenever the file was not on this machine (only the file's
/// mode was checked, and only when it existed).
#[test]
fn a_credentials_file_under_the_nix_store_is_refused_by_the_config() {
    let (_, recipient) = Test::new().keygen("key.txt");
    let t = Test::new().config(&format!(
        r#"{{ "backup_root": "{{root}}", "backup_sets": [ {{ "name": "data", "sources": ["{{tmp}}/src"] }} ],
             "destinations": [ {{ "name": "offsite", "kind": "s3", "bucket": "bucket1", "endpoint": "http://127.0.0.1:1",
                                  "region": "garage", "credentials_file": "/nix/store/0a1b-aws-credentials",
                                  "encryption": {{ "recipients": ["{recipient}"] }} }} ] }}"#
    ));
    let out = t.cmd().args(["config", "check"]).status(2);
    assert!(
        out.stderr.contains("/destinations/0/credentials_file")
            && out.stderr.contains("is in the Nix store")
            && out.stderr.contains("every user of this machine can read"),
        "{}",
        out.stderr
    );
}
