//! Tests of the restore engine driven by real tar archives (GNU tar's, and hostile ones written header by header)
//! and real directories. "Outside" is a temporary directory next to the target that must never change.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::engine::source::{self, SnapshotTree};
use super::engine::target::TEMP_PREFIX;
use super::*;
use crate::exit::Exit;

mod age;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    crate::stdx::skip::skip(&format!(
        "{test}: needs root (it restores owners, setuid bits and device entries)"
    ));
    true
}

// ---------------------------------------------------------------------------------------------------------------
// The scene: a target, and an "outside" that must never change.

struct Env {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    target: PathBuf,
    outside: PathBuf,
    outside_before: Listing,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let target = base.join("target");
        let outside = base.join("outside");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::set_permissions(
            outside.join("passwd"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let outside_before = listing(&outside);
        Env {
            _tmp: tmp,
            base,
            target,
            outside,
            outside_before,
        }
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            listing(&self.outside),
            self.outside_before,
            "something was written outside the target"
        );
    }

    fn outside_str(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Listings: everything about a tree that a restore must preserve (or must not touch).

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    link: Option<Vec<u8>>,
    sha: Option<String>,
    nlink: u64,
    /// The first name (in sorted order) of the inode, for hard-link groups.
    group: Vec<u8>,
    ino: u64,
}

type Listing = BTreeMap<Vec<u8>, Node>;

/// Every path below `root` (and the root itself, as the empty name), never following symlinks.
fn listing(root: &Path) -> Listing {
    let mut out = Listing::new();
    let mut first: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let name = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = m.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() { "fifo" } else { "other" }
        };
        let sha = ft.is_file().then(|| {
            let mut h = Sha256::new();
            h.update(std::fs::read(e.path()).unwrap());
            format!("{:x}", h.finalize())
        });
        let group = first.entry(m.ino()).or_insert_with(|| name.clone()).clone();
        out.insert(
            name,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_file() { m.len() } else { 0 },
                link: ft.is_symlink().then(|| {
                    std::fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                sha,
                nlink: m.nlink(),
                group,
                ino: m.ino(),
            },
        );
    }
    out
}

/// A listing without inode numbers and without the root, to compare two trees.
fn shape(l: &Listing) -> BTreeMap<Vec<u8>, Node> {
    l.iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, n)| {
            (
                k.clone(),
                Node {
                    ino: 0,
                    ..n.clone()
                },
            )
        })
        .collect()
}

fn assert_same_trees(got: &BTreeMap<Vec<u8>, Node>, want: &BTreeMap<Vec<u8>, Node>) {
    let names = |m: &BTreeMap<Vec<u8>, Node>| m.keys().map(|k| show(k)).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "the restored tree has other names");
    for (k, w) in want {
        assert_eq!(&got[k], w, "{} differs", show(k));
    }
}

fn temp_leftovers(root: &Path) -> Vec<String> {
    listing(root)
        .keys()
        .map(|k| show(k))
        .filter(|k| k.rsplit('/').next().unwrap().starts_with(TEMP_PREFIX))
        .collect()
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// Archives written header by header, so that hostile names get in (the tar crate's `set_path` refuses them).

struct Raw {
    name: Vec<u8>,
    typ: u8,
    link: Vec<u8>,
    mode: u32,
    data: Vec<u8>,
    pax: Vec<(&'static str, Vec<u8>)>,
}

fn raw(name: impl AsRef<[u8]>, typ: u8) -> Raw {
    Raw {
        name: name.as_ref().to_vec(),
        typ,
        link: Vec::new(),
        mode: if typ == b'5' { 0o755 } else { 0o644 },
        data: Vec::new(),
        pax: Vec::new(),
    }
}

fn rfile(name: impl AsRef<[u8]>, data: &str) -> Raw {
    Raw {
        data: data.as_bytes().to_vec(),
        ..raw(name, b'0')
    }
}

fn rdir(name: impl AsRef<[u8]>) -> Raw {
    raw(name, b'5')
}

fn rsymlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Raw {
    Raw {
        link: target.as_ref().to_vec(),
        ..raw(name, b'2')
    }
}

fn rhardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Raw {
    Raw {
        link: target.as_ref().to_vec(),
        ..raw(name, b'1')
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts the whole record including itself.
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            let body: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = Header::new_ustar();
            h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append(&h, &body[..]).unwrap();
        }
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = e.name.len().min(100);
            old.name[..n].copy_from_slice(&e.name[..n]);
            let n = e.link.len().min(100);
            old.linkname[..n].copy_from_slice(&e.link[..n]);
        }
        h.set_entry_type(EntryType::new(e.typ));
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(e.data.len() as u64);
        if e.typ == b'3' || e.typ == b'4' {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Driving the engine.

fn opts() -> RestoreOptions {
    RestoreOptions {
        fsync: false, // tmpfs or not, the tests do not need durability
        ..RestoreOptions::default()
    }
}

fn despite() -> RestoreOptions {
    RestoreOptions {
        apply_despite_refusals: true,
        ..opts()
    }
}

fn plan_tar(bytes: &[u8], target: &Path, opts: RestoreOptions) -> Plan {
    let mut planner = Planner::new(target, opts).unwrap();
    source::plan_tar(Cursor::new(bytes), &mut planner).unwrap();
    planner.finish()
}

/// Pass 2 over `bytes`; the summary, and the error that stopped it if any.
fn apply_tar(plan: &Plan, bytes: &[u8]) -> (Summary, Option<RestoreError>) {
    let mut applier = Applier::new(plan).unwrap();
    let err = source::apply_tar(Cursor::new(bytes), &mut applier).err();
    (applier.finish(), err)
}

fn restore_tar(bytes: &[u8], target: &Path, opts: RestoreOptions) -> (Plan, Summary) {
    let plan = plan_tar(bytes, target, opts);
    let (summary, err) = apply_tar(&plan, bytes);
    assert!(err.is_none(), "{err:?}");
    (plan, summary)
}

fn restore_snapshot(src: &Path, target: &Path, opts: RestoreOptions) -> (Plan, Summary) {
    let snap = SnapshotTree::new(src);
    let mut planner = Planner::new(target, opts).unwrap();
    snap.plan(Path::new(""), &mut planner).unwrap();
    let plan = planner.finish();
    let mut applier = Applier::new(&plan).unwrap();
    snap.apply(&plan, &mut applier).unwrap();
    (plan.clone(), applier.finish())
}

fn refusals(plan: &Plan) -> Vec<(String, Refusal)> {
    plan.refusals()
        .map(|i| (i.path.clone(), i.refusal.clone().unwrap()))
        .collect()
}

fn actions(plan: &Plan) -> BTreeMap<String, Action> {
    plan.items
        .iter()
        .map(|i| (i.path.clone(), i.action))
        .collect()
}

/// The default policy: a plan with refusals is never applied, and says so.
fn assert_refused_whole(plan: &Plan, env: &Env) {
    let before = listing(&env.target);
    match Applier::new(plan) {
        Err(RestoreError::Refused { count, .. }) => {
            assert_eq!(count as u64, plan.counts.refuse.entries)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a plan with refusals was accepted"),
    }
    assert_eq!(
        listing(&env.target),
        before,
        "a refused plan wrote something"
    );
    env.assert_outside_untouched();
}

/// The default policy refuses `plan` whole ([`assert_refused_whole`]); `bytes` restored despite the refusals, the
/// run fails. That restore's plan and summary.
#[track_caller]
fn refused_whole_then_failed(plan: &Plan, env: &Env, bytes: &[u8]) -> (Plan, Summary) {
    assert_refused_whole(plan, env);
    let (plan, summary) = restore_tar(bytes, &env.target, despite());
    assert_eq!(summary.exit(), Exit::Failed);
    (plan, summary)
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile archives: each refused, nothing written outside, the restore fails.

#[test]
fn dotdot_names_are_refused() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rfile("ok", "fine"),
        rfile("../outside/x", "escaped"),
        rfile("a/../../outside/y", "escaped"),
        rfile("./../outside/passwd", "pwned"),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    assert_eq!(
        refusals(&plan),
        [
            ("../outside/x".into(), Refusal::DotDot),
            ("a/../../outside/y".into(), Refusal::DotDot),
            ("./../outside/passwd".into(), Refusal::DotDot),
        ]
    );
    let (plan, summary) = refused_whole_then_failed(&plan, &env, &bytes);
    assert_eq!(summary.refusals.len(), 3, "{}", summary.render());
    assert_eq!(std::fs::read(env.target.join("ok")).unwrap(), b"fine");
    assert!(!env.base.join("x").exists() && !env.base.join("y").exists());
    env.assert_outside_untouched();
    assert_eq!(plan.counts.create.entries, 1);
}

#[test]
fn absolute_names_are_refused_unless_a_prefix_is_stripped_deliberately() {
    let env = Env::new();
    let abs = format!("{}/x", env.outside_str());
    let bytes = raw_tar(&[rfile(&abs, "escaped"), rfile("/etc-like/y", "abs")]);
    let plan = plan_tar(&bytes, &env.target, opts());
    assert_eq!(
        refusals(&plan),
        [
            (abs.clone(), Refusal::Absolute),
            ("/etc-like/y".into(), Refusal::Absolute)
        ]
    );
    refused_whole_then_failed(&plan, &env, &bytes);
    assert_eq!(
        listing(&env.target).len(),
        1,
        "only the (empty) target root"
    );
    env.assert_outside_untouched();

    // With `/` stripped on purpose, the same names land below the target.
    let stripped = RestoreOptions {
        strip_prefix: Some(b"/".to_vec()),
        ..opts()
    };
    let (plan, summary) = restore_tar(&bytes, &env.target, stripped);
    assert!(summary.is_ok(), "{}", summary.render());
    assert_eq!(
        plan.items
            .iter()
            .filter(|i| !i.implicit && i.action == Action::Create)
            .count(),
        2
    );
    assert_eq!(
        std::fs::read(env.target.join(&abs[1..])).unwrap(),
        b"escaped"
    );
    assert_eq!(
        std::fs::read(env.target.join("etc-like/y")).unwrap(),
        b"abs"
    );
    env.assert_outside_untouched();
}

#[test]
fn a_symlink_in_the_archive_is_never_written_through() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rfile("ok", "fine"),
        rsymlink("evil", env.outside_str()),
        rfile("evil/passwd", "pwned"),
        rdir("evil/newdir"),
        rhardlink("evil/hl", "ok"),
        rsymlink("evil/sl", "/bin/sh"),
        rsymlink("rel", "../outside"),
        rfile("rel/x", "pwned"),
        rfile("./rel//deeper/x", "pwned"),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    let through = |c: &str| Refusal::ThroughBackupSymlink {
        component: c.into(),
    };
    assert_eq!(
        refusals(&plan),
        [
            ("evil/passwd".into(), through("evil")),
            ("evil/newdir".into(), through("evil")),
            ("evil/hl".into(), through("evil")),
            ("evil/sl".into(), through("evil")),
            ("rel/x".into(), through("rel")),
            ("rel/deeper/x".into(), through("rel")),
        ]
    );
    // The symlinks themselves are data: recreated, noted as pointing outside.
    let evil = plan.items.iter().find(|i| i.path == "evil").unwrap();
    assert_eq!(evil.action, Action::Create);
    assert!(
        evil.notes[0].contains("leads outside the target, to "),
        "{:?}",
        evil.notes
    );
    let (_, summary) = refused_whole_then_failed(&plan, &env, &bytes);
    assert_eq!(summary.refusals.len(), 6);
    assert_eq!(
        std::fs::read_link(env.target.join("evil")).unwrap(),
        env.outside
    );
    assert_eq!(
        std::fs::read_link(env.target.join("rel")).unwrap(),
        Path::new("../outside")
    );
    env.assert_outside_untouched();

    // The strict rule refuses the escaping symlinks themselves.
    let strict = RestoreOptions {
        refuse_escaping_symlinks: true,
        ..opts()
    };
    let plan = plan_tar(&bytes, &Env::new().target, strict);
    assert!(matches!(&refusals(&plan)[0], (p, Refusal::SymlinkOutside { .. }) if p == "evil"));
}

/// A directory planned below an empty directory of the target, which a later entry replaces with a symlink
/// (`--overwrite always`): what comes after under it is still refused as through a symlink. (Checks that a
/// directory the plan makes vouches for its parents only while nothing replaced one of them.)
#[test]
fn a_directory_replaced_after_its_children_were_planned_is_walked_again() {
    let env = Env::new();
    std::fs::create_dir_all(env.target.join("a")).unwrap();
    let bytes = raw_tar(&[rdir("a/x"), rsymlink("a", "x"), rfile("a/x/y", "data")]);
    let always = RestoreOptions {
        overwrite: crate::restore::engine::Overwrite::Always,
        ..opts()
    };
    let plan = plan_tar(&bytes, &env.target, always);
    assert_eq!(
        refusals(&plan),
        [(
            "a/x/y".into(),
            Refusal::ThroughBackupSymlink {
                component: "a".into()
            }
        )]
    );
}

/// The same when the directory would be replaced by the plan itself (an archive that names `a` twice, a directory
/// and then a symlink): the second `a` is refused as a duplicate, so `a` stays the directory the entries below it
/// were planned in and nothing is created through a symlink.
#[test]
fn a_planned_directory_replaced_by_a_later_symlink_is_not_written_through() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rdir("a"),
        rdir("a/x"),
        rsymlink("a", "/tmp"),
        rfile("a/x/y", "data"),
    ]);
    let always = RestoreOptions {
        overwrite: crate::restore::engine::Overwrite::Always,
        ..opts()
    };
    let plan = plan_tar(&bytes, &env.target, always);
    let created: Vec<String> = plan
        .items
        .iter()
        .filter(|i| i.action == crate::restore::engine::Action::Create)
        .map(|i| format!("{} {:?}", i.path, i.kind))
        .collect();
    assert_eq!(created, ["a Dir", "a/x Dir", "a/x/y File"]);
    assert!(matches!(&refusals(&plan)[..], [(p, Refusal::Duplicate)] if p == "a"));
}

#[test]
fn hard_links_outside_the_restored_set_are_refused() {
    let env = Env::new();
    std::fs::write(
        env.target.join("present"),
        "already here, not in the backup",
    )
    .unwrap();
    let passwd = format!("{}/passwd", env.outside_str());
    let bytes = raw_tar(&[
        rfile("ok", "fine"),
        rhardlink("pw", &passwd),
        rhardlink("pw2", "../outside/passwd"),
        rhardlink("pw3", "present"),
        rhardlink("pw4", "missing"),
        rdir("d"),
        rhardlink("pw5", "d"),
        rhardlink("good", "./ok"),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    let outside_t = |t: &str| Refusal::HardlinkOutside { target: t.into() };
    let not_restored = |t: &str| Refusal::HardlinkTargetNotRestored { target: t.into() };
    assert_eq!(
        refusals(&plan),
        [
            ("pw".into(), outside_t(&passwd)),
            ("pw2".into(), outside_t("../outside/passwd")),
            ("pw3".into(), not_restored("present")),
            ("pw4".into(), not_restored("missing")),
            ("pw5".into(), not_restored("d")),
        ]
    );
    let (_, summary) = refused_whole_then_failed(&plan, &env, &bytes);
    assert_eq!(summary.refusals.len(), 5);
    env.assert_outside_untouched(); // passwd's nlink is still 1
    assert_eq!(
        std::fs::metadata(env.target.join("present"))
            .unwrap()
            .nlink(),
        1
    );
    let ok = std::fs::metadata(env.target.join("ok")).unwrap();
    let good = std::fs::metadata(env.target.join("good")).unwrap();
    assert_eq!(
        (ok.ino(), ok.nlink()),
        (good.ino(), 2),
        "the good link is a real hard link"
    );
    for name in ["pw", "pw2", "pw3", "pw4", "pw5"] {
        assert!(
            env.target.join(name).symlink_metadata().is_err(),
            "{name} was made"
        );
    }
}

#[test]
fn a_symlink_planted_in_the_target_is_never_written_through() {
    // With the directories in the archive, and without (only the file).
    let with_dirs = raw_tar(&[rdir("home"), rdir("home/u"), rfile("home/u/file", "data")]);
    let file_only = raw_tar(&[rfile("home/u/file", "data")]);
    for (bytes, expect) in [
        (
            &with_dirs,
            vec![
                (
                    "home",
                    Refusal::KindConflict {
                        existing: "symlink".into(),
                        kind: "directory".into(),
                    },
                ),
                (
                    "home/u",
                    Refusal::ParentRefused {
                        component: "home".into(),
                    },
                ),
                (
                    "home/u/file",
                    Refusal::ParentRefused {
                        component: "home".into(),
                    },
                ),
            ],
        ),
        (
            &file_only,
            vec![(
                "home/u/file",
                Refusal::ThroughDestinationSymlink {
                    component: "home".into(),
                },
            )],
        ),
    ] {
        let env = Env::new();
        symlink(&env.outside, env.target.join("home")).unwrap();
        let plan = plan_tar(bytes, &env.target, opts());
        let want: Vec<(String, Refusal)> = expect
            .iter()
            .map(|(p, r)| (p.to_string(), r.clone()))
            .collect();
        assert_eq!(refusals(&plan), want);
        assert_refused_whole(&plan, &env);
        let (_, summary) = restore_tar(bytes, &env.target, despite());
        assert_eq!(summary.exit(), Exit::Failed);
        assert!(!env.outside.join("u").exists());
        env.assert_outside_untouched();
        assert_eq!(
            std::fs::read_link(env.target.join("home")).unwrap(),
            env.outside,
            "the planted link is left"
        );

        // --overwrite never: the planted link is kept, and still nothing goes through it.
        let never = RestoreOptions {
            overwrite: Overwrite::Never,
            ..despite()
        };
        let (plan, summary) = restore_tar(bytes, &env.target, never);
        assert!(
            refusals(&plan).iter().any(|(p, r)| p == "home/u/file"
                && matches!(
                    r,
                    Refusal::ThroughDestinationSymlink { .. } | Refusal::ParentRefused { .. }
                )),
            "{}",
            plan.render(true)
        );
        assert_eq!(summary.exit(), Exit::Failed);
        env.assert_outside_untouched();

        // --overwrite always: the link itself is replaced by a real directory; outside is still untouched.
        let always = RestoreOptions {
            overwrite: Overwrite::Always,
            ..opts()
        };
        if bytes == &with_dirs {
            let (_, summary) = restore_tar(bytes, &env.target, always);
            assert!(summary.is_ok(), "{}", summary.render());
            assert!(env.target.join("home").symlink_metadata().unwrap().is_dir());
            assert_eq!(
                std::fs::read(env.target.join("home/u/file")).unwrap(),
                b"data"
            );
            env.assert_outside_untouched();
        }
    }
}

#[test]
fn a_symlink_planted_after_planning_is_caught_when_applying() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rdir("home"),
        rdir("home/u"),
        rfile("home/u/file", "data"),
        rfile("z", "z"),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    assert!(!plan.has_refusals());
    // Between the plan and the apply, `home` appears as a symlink to the outside.
    symlink(&env.outside, env.target.join("home")).unwrap();
    let (summary, err) = apply_tar(&plan, &bytes);
    assert!(err.is_none());
    assert_eq!(summary.exit(), Exit::Failed);
    assert!(
        summary
            .refusals
            .iter()
            .any(|p| p.path.ends_with("home/u/file")),
        "{}",
        summary.render()
    );
    assert_eq!(std::fs::read(env.target.join("z")).unwrap(), b"z");
    env.assert_outside_untouched();
}

#[test]
fn device_files_are_refused() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rdir("dev"),
        raw("dev/mem", b'3'),
        raw("dev/sda", b'4'),
        rfile("dev/ok", "x"),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    assert_eq!(
        refusals(&plan),
        [
            (
                "dev/mem".into(),
                Refusal::Device {
                    kind: "char device".into()
                }
            ),
            (
                "dev/sda".into(),
                Refusal::Device {
                    kind: "block device".into()
                }
            ),
        ]
    );
    let (_, summary) = refused_whole_then_failed(&plan, &env, &bytes);
    assert_eq!(
        summary
            .refusals
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>(),
        [
            "char device entries are never restored (device files could give access to hardware)",
            "block device entries are never restored (device files could give access to hardware)"
        ]
    );
    assert!(env.target.join("dev/mem").symlink_metadata().is_err());
    assert!(env.target.join("dev/sda").symlink_metadata().is_err());
    assert!(env.target.join("dev/ok").is_file());
    env.assert_outside_untouched();
}

#[test]
fn odd_names_and_duplicates_are_refused() {
    let env = Env::new();
    let mut nul = rfile("placeholder", "x");
    nul.pax.push(("path", b"a\0b".to_vec()));
    let mut escape_by_pax = rfile("innocent", "x");
    escape_by_pax.pax.push(("path", b"../outside/pax".to_vec()));
    let bytes = raw_tar(&[
        rfile("", "empty name"),
        nul,
        escape_by_pax,
        rfile(".", "a file as the root"),
        rdir("./"),
        rdir("d"),
        rsymlink("d", env.outside_str()),
        rfile("d/x", "inside"),
        rfile("d/x", "again"),
        rsymlink("empty-link", ""),
    ]);
    let plan = plan_tar(&bytes, &env.target, opts());
    assert_eq!(
        refusals(&plan),
        [
            ("".into(), Refusal::EmptyName),
            ("a\\x00b".into(), Refusal::NulInName),
            ("../outside/pax".into(), Refusal::DotDot),
            (
                "".into(),
                Refusal::RootNotDir {
                    kind: "file".into()
                }
            ),
            ("d".into(), Refusal::Duplicate),
            ("d/x".into(), Refusal::Duplicate),
            (
                "empty-link".into(),
                Refusal::Unsupported {
                    kind: "symlink with an empty target".into()
                }
            ),
        ]
    );
    // The root entry is not a refusal: the target itself is left as it is.
    assert_eq!(plan.items[4].action, Action::Skip);
    let (_, summary) = restore_tar(&bytes, &env.target, despite());
    assert_eq!(summary.exit(), Exit::Failed);
    assert!(env.target.join("d").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read(env.target.join("d/x")).unwrap(), b"inside");
    env.assert_outside_untouched();
}

#[test]
fn an_archive_changed_between_the_passes_stops_the_restore() {
    let env = Env::new();
    let first = raw_tar(&[rfile("a", "one"), rfile("b", "two")]);
    let plan = plan_tar(&first, &env.target, opts());
    // An entry that was not planned.
    let other = raw_tar(&[rfile("a", "one"), rfile("../outside/x", "sneaky")]);
    let (summary, err) = apply_tar(&plan, &other);
    assert!(
        matches!(err, Some(RestoreError::NotInPlan { ref name }) if name == "../outside/x"),
        "{err:?}"
    );
    assert!(
        !summary.is_ok(),
        "b was never handed over: {}",
        summary.render()
    );
    // The same name with other metadata.
    let env = Env::new();
    let plan = plan_tar(&first, &env.target, opts());
    let changed = raw_tar(&[rfile("a", "one but longer")]);
    let (_, err) = apply_tar(&plan, &changed);
    assert!(
        matches!(
            err,
            Some(RestoreError::ChangedSincePlan { what: "size", .. })
        ),
        "{err:?}"
    );
    assert!(!env.target.join("a").exists());
    env.assert_outside_untouched();
}

// ---------------------------------------------------------------------------------------------------------------
// Faithful restores.

const MTIME: i64 = 1_700_000_000;

/// A tree with every kind of thing a home directory holds. Owners other than root only when root.
fn make_tree(src: &Path, abs_target: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = src.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        chmod(&path, mode);
    };
    std::fs::create_dir_all(src).unwrap();
    w("docs/a.txt", b"alpha\n", 0o644);
    w("docs/empty", b"", 0o644);
    w(".secrets", b"TOKEN=hunter2\n", 0o600);
    w("bin/suid", b"#!/bin/sh\n", 0o4755);
    w("bin/sgid", b"#!/bin/sh\n", 0o2755);
    w("bin/sticky-file", b"x", 0o1644);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w("big/blob", &big, 0o640);
    w("hard/h1", b"linked content\n", 0o600);
    std::fs::hard_link(src.join("hard/h1"), src.join("hard/h2")).unwrap();
    std::fs::hard_link(src.join("hard/h1"), src.join("docs/h3")).unwrap();
    let long = format!("{}/{}", "d".repeat(80), "n".repeat(120));
    w(&long, b"long name", 0o644);
    let odd = src.join(std::ffi::OsStr::from_bytes(b"docs/caf\xe9 \n tab\t.txt"));
    std::fs::write(&odd, b"latin-1 name").unwrap();
    std::fs::create_dir_all(src.join("links")).unwrap();
    symlink("../docs/a.txt", src.join("links/rel")).unwrap();
    symlink(abs_target, src.join("links/abs")).unwrap();
    symlink("nowhere/at/all", src.join("links/dangling")).unwrap();
    symlink("../docs", src.join("links/dirlink")).unwrap();
    std::fs::create_dir_all(src.join("empty/nested")).unwrap();
    std::fs::create_dir_all(src.join("shared")).unwrap();
    chmod(&src.join("shared"), 0o2775);
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    chmod(&src.join("tmp"), 0o1777);
    w("ro/inside", b"in a read-only dir", 0o444);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o640),
    )
    .unwrap();
    if is_root() {
        w("owned", b"someone else's", 0o640);
        std::os::unix::fs::lchown(src.join("owned"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("links/rel"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("shared"), Some(4321), Some(8765)).unwrap();
    }
    // Nanosecond mtimes on everything, directories last (deepest first) so that they keep theirs.
    let all = listing(src);
    let mut names: Vec<&Vec<u8>> = all.keys().collect();
    names.sort_by_key(|n| {
        std::cmp::Reverse(n.iter().filter(|&&b| b == b'/').count() + usize::from(!n.is_empty()))
    });
    for (i, n) in names.iter().enumerate() {
        let p = if n.is_empty() {
            src.to_path_buf()
        } else {
            src.join(std::ffi::OsStr::from_bytes(n))
        };
        set_mtime(&p, MTIME - 1000 * i as i64, 123_456_789 + i as i64);
    }
    chmod(&src.join("ro"), 0o555);
}

/// The listing `restored` should have, given how `src` was restored.
fn expected(src: &Listing, privileged: bool, preserve_special: bool) -> BTreeMap<Vec<u8>, Node> {
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    shape(src)
        .into_iter()
        .map(|(k, mut n)| {
            if !(privileged && preserve_special) {
                n.mode &= if n.kind == "dir" { !0o4000 } else { !0o6000 };
            }
            if !privileged {
                (n.uid, n.gid) = (uid, gid);
            }
            (k, n)
        })
        .collect()
}

fn gnu_tar(src: &Path, archive: &Path) {
    let status = Command::new("tar")
        .args(["--format=posix", "--sort=name", "--numeric-owner", "-cf"])
        .arg(archive)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_gnu_tar_archive_restores_identically() {
    let env = Env::new();
    let src = env.base.join("src");
    make_tree(&src, &env.outside.join("passwd"));
    let archive = env.base.join("src.tar");
    gnu_tar(&src, &archive);
    let want = listing(&src);

    for (privileged, preserve) in [(true, true), (true, false), (false, false)] {
        if privileged && !is_root() {
            crate::stdx::skip::skip("its privileged cases need root");
            continue;
        }
        let target = env.base.join(format!("restored-{privileged}-{preserve}"));
        let o = RestoreOptions {
            privileged,
            preserve_special: preserve,
            ..opts()
        };
        let mut planner = Planner::new(&target, o).unwrap();
        source::plan_tar(std::fs::File::open(&archive).unwrap(), &mut planner).unwrap();
        let plan = planner.finish();
        assert!(!plan.has_refusals(), "{}", plan.render(false));
        assert!(!plan.target_exists);
        let mut applier = Applier::new(&plan).unwrap();
        source::apply_tar(std::fs::File::open(&archive).unwrap(), &mut applier).unwrap();
        let summary = applier.finish();
        assert!(summary.is_ok(), "{}", summary.render());
        // Unprivileged, the three entries of other users (made only as root) are the restoring user's: a warning.
        let others = if !privileged && is_root() { 3 } else { 0 };
        assert_eq!(summary.owners.entries, others);
        let exit = if others > 0 { Exit::Warnings } else { Exit::Ok };
        assert_eq!(summary.exit(), exit);
        let got = listing(&target);
        assert_same_trees(&shape(&got), &expected(&want, privileged, preserve));
        assert_eq!(got[&b"hard/h1"[..]].nlink, 3);
        assert_eq!(
            got[&b""[..]].mode & 0o777,
            0o700,
            "a new target is made owner-only"
        );
        assert!(temp_leftovers(&target).is_empty());
        let setuid = plan.items.iter().find(|i| i.path == "bin/suid").unwrap();
        assert_eq!(
            setuid.notes.contains(&"setuid bit dropped".to_string()),
            !(privileged && preserve)
        );
        assert_eq!(summary.counts.create.entries, plan.counts.create.entries);
        let bytes: u64 = want
            .iter()
            .filter(|(k, n)| n.kind == "file" && &&n.group == k)
            .map(|(_, n)| n.size)
            .sum();
        assert_eq!(summary.counts.create.bytes, bytes);
    }
    env.assert_outside_untouched();
}

#[test]
fn a_snapshot_restores_identically() {
    let env = Env::new();
    let src = env.base.join("snapshot");
    make_tree(&src, &env.outside.join("passwd"));
    let want = listing(&src);
    let privileged = is_root();
    let o = RestoreOptions {
        preserve_special: true,
        privileged,
        fsync: true, // the default, exercised once
        ..opts()
    };
    let (plan, summary) = restore_snapshot(&src, &env.target, o);
    assert!(summary.is_ok(), "{}", summary.render());
    assert!(!plan.has_refusals());
    let got = listing(&env.target);
    assert_same_trees(&shape(&got), &expected(&want, privileged, true));
    // Copied, never hard-linked out of the snapshot: editing a restored file leaves the backup alone.
    let (a, b) = (&got[&b"hard/h1"[..]], &want[&b"hard/h1"[..]]);
    assert_ne!(a.ino, b.ino);
    assert_eq!(a.nlink, 3);
    std::fs::write(env.target.join("docs/a.txt"), "edited").unwrap();
    assert_eq!(std::fs::read(src.join("docs/a.txt")).unwrap(), b"alpha\n");
    env.assert_outside_untouched();
}

#[test]
fn a_contents_first_listing_still_gives_directories_their_metadata() {
    let env = Env::new();
    let src = env.base.join("src");
    make_tree(&src, Path::new("/nonexistent"));
    // Feed the walk in contents-first order: every directory after what it holds.
    let mut entries: Vec<RestoreEntry> = SnapshotTree::new(&src)
        .entries(Path::new(""))
        .map(Result::unwrap)
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.name.iter().filter(|&&b| b == b'/').count()));
    let mut planner = Planner::new(&env.target, opts()).unwrap();
    for e in &entries {
        planner.add(e.clone()).unwrap();
    }
    let plan = planner.finish();
    assert!(!plan.has_refusals(), "{}", plan.render(false));
    assert!(
        plan.items.iter().all(|i| !i.implicit),
        "every implicit directory was claimed by its entry"
    );
    // Applied in the same contents-first order.
    let snap = SnapshotTree::new(&src);
    let mut applier = Applier::new(&plan).unwrap();
    for e in &entries {
        if e.kind == EntryKind::File {
            applier.apply(e, Some(&mut snap.open(e).unwrap())).unwrap();
        } else {
            applier.apply(e, None).unwrap();
        }
    }
    let summary = applier.finish();
    assert!(summary.is_ok(), "{}", summary.render());
    assert_eq!(
        summary.implicit_dirs, 0,
        "directories made for their contents were claimed by their entries"
    );
    let privileged = is_root();
    assert_same_trees(
        &shape(&listing(&env.target)),
        &expected(&listing(&src), privileged, false),
    );
}

#[test]
fn missing_parents_the_backup_does_not_describe_are_made_owner_only() {
    let env = Env::new();
    let bytes = raw_tar(&[rfile("data/projects/important/notes", "n")]);
    let (plan, summary) = restore_tar(&bytes, &env.target, opts());
    assert_eq!(
        plan.items
            .iter()
            .map(|i| (i.path.as_str(), i.implicit))
            .collect::<Vec<_>>(),
        [
            ("data", true),
            ("data/projects", true),
            ("data/projects/important", true),
            ("data/projects/important/notes", false)
        ]
    );
    assert!(summary.is_ok(), "{}", summary.render());
    assert_eq!(summary.implicit_dirs, 3);
    for d in ["data", "data/projects", "data/projects/important"] {
        let mode = std::fs::metadata(env.target.join(d)).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o700, 0, "{d} is {mode:o}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Overwrite policies, dry runs, and what is at the destination already.

fn small_tree(src: &Path) {
    std::fs::create_dir_all(src.join("docs")).unwrap();
    for (n, data) in [
        ("docs/a", "alpha"),
        ("docs/b", "bravo"),
        ("docs/c", "charlie"),
        ("top", "top"),
    ] {
        std::fs::write(src.join(n), data).unwrap();
        set_mtime(&src.join(n), MTIME, 5);
    }
    symlink("a", src.join("docs/link")).unwrap();
    set_mtime(&src.join("docs"), MTIME, 7);
}

fn inodes(root: &Path) -> BTreeMap<String, u64> {
    listing(root)
        .into_iter()
        .map(|(k, n)| (show(&k), n.ino))
        .collect()
}

#[test]
fn if_changed_leaves_identical_files_untouched_and_replaces_changed_ones() {
    let env = Env::new();
    let src = env.base.join("src");
    small_tree(&src);
    let (_, s) = restore_snapshot(&src, &env.target, opts());
    assert!(s.is_ok());
    let before = inodes(&env.target);
    std::fs::write(env.target.join("docs/a"), "edited after the backup").unwrap();
    std::fs::write(env.target.join("docs/extra"), "not in the backup").unwrap();
    chmod(&env.target.join("docs/c"), 0o600); // same content, other mode

    let (plan, s) = restore_snapshot(&src, &env.target, opts());
    assert!(s.is_ok(), "{}", s.render());
    let a = actions(&plan);
    assert_eq!(a["docs/a"], Action::Replace);
    assert_eq!(a["docs/c"], Action::Replace);
    assert_eq!(a["docs/b"], Action::Unchanged);
    assert_eq!(a["top"], Action::Unchanged);
    assert_eq!(a["docs/link"], Action::Unchanged);
    assert!(!a.contains_key("docs/extra"));
    let after = inodes(&env.target);
    assert_eq!(
        after["docs/b"], before["docs/b"],
        "an unchanged file is not rewritten"
    );
    assert_eq!(after["top"], before["top"]);
    assert_eq!(after["docs/link"], before["docs/link"]);
    assert_ne!(after["docs/a"], before["docs/a"]);
    assert_eq!(std::fs::read(env.target.join("docs/a")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(env.target.join("docs/extra")).unwrap(),
        b"not in the backup"
    );
    assert_eq!(s.counts.unchanged.entries, 3, "docs/b, docs/link, top");
    assert_eq!(
        a["docs"],
        Action::Replace,
        "its mtime moved when docs/extra was made"
    );
    assert_same_trees(
        &shape(&listing(&env.target))
            .into_iter()
            .filter(|(k, _)| k != b"docs/extra")
            .collect(),
        &shape(&listing(&src)),
    );
}

#[test]
fn never_keeps_what_is_there_and_always_replaces_everything() {
    let env = Env::new();
    let src = env.base.join("src");
    small_tree(&src);
    restore_snapshot(&src, &env.target, opts());
    std::fs::write(env.target.join("docs/a"), "edited").unwrap();
    std::fs::remove_file(env.target.join("docs/b")).unwrap();

    let never = RestoreOptions {
        overwrite: Overwrite::Never,
        ..opts()
    };
    let (plan, s) = restore_snapshot(&src, &env.target, never);
    assert!(s.is_ok());
    let a = actions(&plan);
    assert_eq!(
        (a["docs/a"], a["docs/b"], a["top"]),
        (Action::Skip, Action::Create, Action::Skip)
    );
    assert_eq!(std::fs::read(env.target.join("docs/a")).unwrap(), b"edited");
    assert_eq!(std::fs::read(env.target.join("docs/b")).unwrap(), b"bravo");

    let before = inodes(&env.target);
    let always = RestoreOptions {
        overwrite: Overwrite::Always,
        ..opts()
    };
    let (plan, s) = restore_snapshot(&src, &env.target, always);
    assert!(s.is_ok());
    assert!(
        plan.items.iter().all(|i| i.action == Action::Replace),
        "{}",
        plan.render(true)
    );
    let after = inodes(&env.target);
    for f in ["docs/a", "docs/b", "docs/c", "top", "docs/link"] {
        assert_ne!(after[f], before[f], "{f} was not replaced");
    }
    assert_eq!(
        after["docs"], before["docs"],
        "a directory is updated, never replaced"
    );
    assert_same_trees(&shape(&listing(&env.target)), &shape(&listing(&src)));
}

#[test]
fn compare_by_content_uses_the_backup_hash() {
    let env = Env::new();
    let hash = |d: &[u8]| -> [u8; 32] { Sha256::digest(d).into() };
    let entry = |name: &str, data: &[u8]| {
        let mut e = RestoreEntry::new(name, EntryKind::File);
        e.size = data.len() as u64;
        e.mtime = Mtime::new(MTIME, 0);
        e.sha256 = Some(hash(data));
        e
    };
    // Same content, other mtime: unchanged by content, replaced by metadata.
    std::fs::write(env.target.join("same"), "12345").unwrap();
    chmod(&env.target.join("same"), 0o644);
    // Other content, same size and mtime: replaced by content, unchanged by metadata.
    std::fs::write(env.target.join("forged"), "XXXXX").unwrap();
    chmod(&env.target.join("forged"), 0o644);
    set_mtime(&env.target.join("forged"), MTIME, 0);
    for (compare, same, forged) in [
        (Compare::Content, Action::Unchanged, Action::Replace),
        (Compare::Metadata, Action::Replace, Action::Unchanged),
    ] {
        let mut p = Planner::new(&env.target, RestoreOptions { compare, ..opts() }).unwrap();
        p.add(entry("same", b"12345")).unwrap();
        p.add(entry("forged", b"abcde")).unwrap();
        let plan = p.finish();
        assert_eq!(actions(&plan)["same"], same, "{compare:?}");
        assert_eq!(actions(&plan)["forged"], forged, "{compare:?}");
    }
    // Without a hash, content comparison falls back to metadata, and says so.
    let mut e = entry("same", b"12345");
    e.sha256 = None;
    let mut p = Planner::new(
        &env.target,
        RestoreOptions {
            compare: Compare::Content,
            ..opts()
        },
    )
    .unwrap();
    p.add(e).unwrap();
    let plan = p.finish();
    assert_eq!(plan.items[0].action, Action::Replace);
    assert!(plan.items[0].notes[0].contains("no hash"));
}

#[test]
fn directories_and_files_in_each_others_way() {
    let bytes = raw_tar(&[
        rdir("was-file"),
        rfile("was-file/x", "x"),
        rfile("was-dir", "f"),
        rfile("was-empty-dir", "e"),
    ]);
    let env = Env::new();
    std::fs::write(
        env.target.join("was-file"),
        "a file where the backup has a directory",
    )
    .unwrap();
    std::fs::create_dir(env.target.join("was-dir")).unwrap();
    std::fs::write(env.target.join("was-dir/keep"), "not in the backup").unwrap();
    std::fs::create_dir(env.target.join("was-empty-dir")).unwrap();

    let plan = plan_tar(&bytes, &env.target, opts());
    let r = refusals(&plan);
    assert_eq!(r.len(), 4, "{}", plan.render(true));
    assert!(
        matches!(&r[0], (p, Refusal::KindConflict { existing, .. }) if p == "was-file" && existing == "file")
    );
    assert!(matches!(&r[1], (p, Refusal::ParentRefused { .. }) if p == "was-file/x"));
    assert_eq!(r[2], ("was-dir".into(), Refusal::NonEmptyDirInTheWay));
    assert!(
        matches!(&r[3], (p, Refusal::KindConflict { existing, .. }) if p == "was-empty-dir" && existing == "directory")
    );

    let never = RestoreOptions {
        overwrite: Overwrite::Never,
        ..opts()
    };
    let plan = plan_tar(&bytes, &env.target, never);
    let a = actions(&plan);
    assert_eq!(
        (a["was-file"], a["was-dir"], a["was-empty-dir"]),
        (Action::Skip, Action::Skip, Action::Skip)
    );
    assert!(
        matches!(&refusals(&plan)[..], [(p, Refusal::ParentNotDirAtDestination { .. })] if p == "was-file/x")
    );

    let always = RestoreOptions {
        overwrite: Overwrite::Always,
        ..despite()
    };
    let (plan, s) = restore_tar(&bytes, &env.target, always);
    assert_eq!(
        refusals(&plan),
        [("was-dir".into(), Refusal::NonEmptyDirInTheWay)],
        "never removed, even with always"
    );
    assert_eq!(s.exit(), Exit::Failed);
    assert_eq!(std::fs::read(env.target.join("was-file/x")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(env.target.join("was-empty-dir")).unwrap(),
        b"e"
    );
    assert_eq!(
        std::fs::read(env.target.join("was-dir/keep")).unwrap(),
        b"not in the backup"
    );
}

#[test]
fn a_dry_run_writes_nothing() {
    let env = Env::new();
    let src = env.base.join("src");
    make_tree(&src, Path::new("/etc/hostname"));
    let archive = env.base.join("src.tar");
    gnu_tar(&src, &archive);
    // Half of it already there, some of it different.
    restore_snapshot(&src, &env.target, opts());
    std::fs::remove_dir_all(env.target.join("docs")).unwrap();
    std::fs::write(env.target.join("big/blob"), "changed").unwrap();
    symlink(&env.outside, env.target.join("planted")).unwrap();
    let before = listing(&env.target);

    let mut planner = Planner::new(&env.target, opts()).unwrap();
    source::plan_tar(std::fs::File::open(&archive).unwrap(), &mut planner).unwrap();
    let plan = planner.finish();
    assert!(
        plan.counts.create.entries > 0
            && plan.counts.replace.entries > 0
            && plan.counts.unchanged.entries > 0
    );
    let _ = plan.render(true);
    let _ = serde_json::to_string(&plan).unwrap();
    assert_eq!(listing(&env.target), before, "planning wrote something");

    // Into a target that does not exist: it still does not.
    let new = env.base.join("new/deeper");
    let mut planner = Planner::new(&new, opts()).unwrap();
    source::plan_tar(std::fs::File::open(&archive).unwrap(), &mut planner).unwrap();
    let plan = planner.finish();
    assert!(!plan.target_exists && plan.counts.create.entries > 10);
    assert!(!env.base.join("new").exists());
    env.assert_outside_untouched();
}

// ---------------------------------------------------------------------------------------------------------------
// How files are written.

/// A reader that looks at the directory it is being restored into while it is read.
struct Spy {
    dir: PathBuf,
    data: Cursor<Vec<u8>>,
    seen: Vec<(String, u32)>,
    final_existed: bool,
}

impl Read for Spy {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                self.seen
                    .push((name, e.metadata().unwrap().mode() & 0o7777));
            }
        }
        self.final_existed |= self.dir.join("secret").exists();
        // One byte at a time: the file is inspected mid-write.
        let n = buf.len().min(1);
        self.data.read(&mut buf[..n])
    }
}

#[test]
fn a_file_is_written_owner_only_under_a_temporary_name() {
    let env = Env::new();
    let data = b"password=hunter2".to_vec();
    let mut e = RestoreEntry::new("dir/secret", EntryKind::File);
    e.mode = 0o644; // the final mode is wider than the temporary's
    e.size = data.len() as u64;
    e.mtime = Mtime::new(MTIME, 999_999_999);
    let mut p = Planner::new(&env.target, opts()).unwrap();
    p.add(e.clone()).unwrap();
    let plan = p.finish();
    let mut applier = Applier::new(&plan).unwrap();
    std::fs::create_dir(env.target.join("dir")).unwrap(); // so the spy can look before the first read
    let mut spy = Spy {
        dir: env.target.join("dir"),
        data: Cursor::new(data.clone()),
        seen: Vec::new(),
        final_existed: false,
    };
    applier.apply(&e, Some(&mut spy)).unwrap();
    let s = applier.finish();
    assert!(s.is_ok(), "{}", s.render());
    assert!(spy.seen.len() > data.len(), "the spy looked at every byte");
    assert!(
        spy.seen.iter().all(|(_, mode)| *mode == 0o600),
        "{:?}",
        spy.seen
    );
    assert!(
        !spy.final_existed,
        "the final name appears only when complete"
    );
    let m = std::fs::metadata(env.target.join("dir/secret")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.mtime(), m.mtime_nsec()),
        (0o644, MTIME, 999_999_999)
    );
    assert!(temp_leftovers(&env.target).is_empty());
}

#[test]
fn a_truncated_archive_fails_loudly_and_leaves_no_partial_file() {
    let env = Env::new();
    let src = env.base.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a-first"), "first").unwrap();
    std::fs::write(src.join("b-big"), vec![7u8; 200_000]).unwrap();
    std::fs::write(src.join("c-last"), "last").unwrap();
    let archive = env.base.join("src.tar");
    gnu_tar(&src, &archive);
    let full = std::fs::read(&archive).unwrap();
    let cut = &full[..full.len() / 2];
    // Planned from the whole archive, applied from the truncated one.
    let plan = plan_tar(&full, &env.target, opts());
    let (summary, err) = apply_tar(&plan, cut);
    assert!(matches!(err, Some(RestoreError::Source { .. })), "{err:?}");
    assert_eq!(summary.exit(), Exit::Failed);
    let failed: Vec<&str> = summary
        .errors
        .iter()
        .map(|p| p.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(failed, ["b-big", "c-last"], "{}", summary.render());
    assert!(summary.errors[1].message.contains("not restored"));
    assert_eq!(std::fs::read(env.target.join("a-first")).unwrap(), b"first");
    assert!(
        !env.target.join("b-big").exists(),
        "no partial file at the final name"
    );
    assert!(
        temp_leftovers(&env.target).is_empty(),
        "{:?}",
        temp_leftovers(&env.target)
    );

    // Planned from the truncated archive alone: the plan itself cannot be finished.
    let mut planner = Planner::new(&env.target, opts()).unwrap();
    let cut_mid_header = &full[..512 + 512 + 100];
    let r = source::plan_tar(Cursor::new(cut_mid_header), &mut planner);
    assert!(matches!(r, Err(RestoreError::Source { .. })), "{r:?}");
}

#[test]
fn content_that_does_not_match_its_hash_is_not_restored() {
    let env = Env::new();
    let mut e = RestoreEntry::new("f", EntryKind::File);
    e.size = 5;
    e.sha256 = Some(Sha256::digest(b"right").into());
    std::fs::write(env.target.join("f"), "older").unwrap();
    let mut p = Planner::new(&env.target, opts()).unwrap();
    p.add(e.clone()).unwrap();
    let plan = p.finish();
    let mut applier = Applier::new(&plan).unwrap();
    applier
        .apply(&e, Some(&mut Cursor::new(b"wrong".to_vec())))
        .unwrap();
    let s = applier.finish();
    assert_eq!(s.exit(), Exit::Failed);
    assert!(s.errors[0].message.contains("sha256"), "{}", s.render());
    assert_eq!(
        std::fs::read(env.target.join("f")).unwrap(),
        b"older",
        "the old file is intact"
    );
    assert!(temp_leftovers(&env.target).is_empty());
}

#[test]
fn owners_are_restored_only_when_privileged() {
    if skip_unless_root("owners_are_restored_only_when_privileged") {
        return;
    }
    let env = Env::new();
    let mut f = RestoreEntry::new("f", EntryKind::File);
    (f.uid, f.gid, f.mode, f.size) = (1234, 5678, 0o6755, 1);
    let mut d = RestoreEntry::new("d", EntryKind::Dir);
    (d.uid, d.gid, d.mode) = (4321, 8765, 0o2770);
    let mut l = RestoreEntry::new("l", EntryKind::Symlink);
    (l.uid, l.gid, l.link) = (1111, 2222, Some(b"f".to_vec()));
    for (privileged, preserve) in [(true, true), (true, false), (false, true)] {
        let target = env.base.join(format!("t-{privileged}-{preserve}"));
        let mut p = Planner::new(
            &target,
            RestoreOptions {
                privileged,
                preserve_special: preserve,
                ..opts()
            },
        )
        .unwrap();
        for e in [&f, &d, &l] {
            p.add(e.clone()).unwrap();
        }
        let plan = p.finish();
        let mut a = Applier::new(&plan).unwrap();
        a.apply(&f, Some(&mut Cursor::new(b"x".to_vec()))).unwrap();
        a.apply(&d, None).unwrap();
        a.apply(&l, None).unwrap();
        assert!(a.finish().is_ok());
        let m = |n: &str| {
            let m = target.join(n).symlink_metadata().unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        if privileged {
            let fmode = if preserve { 0o6755 } else { 0o755 };
            assert_eq!(m("f"), (1234, 5678, fmode));
            assert_eq!(m("d"), (4321, 8765, 0o2770));
            assert_eq!((m("l").0, m("l").1), (1111, 2222));
        } else {
            assert_eq!(
                m("f"),
                (0, 0, 0o755),
                "no chown, setuid dropped even with preserve_special"
            );
            assert_eq!(m("d"), (0, 0, 0o2770));
            assert_eq!((m("l").0, m("l").1), (0, 0));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What people and programs read.

#[test]
fn the_plan_reads_well() {
    let env = Env::new();
    std::fs::write(env.target.join("changed"), "old").unwrap();
    std::fs::write(env.target.join("kept"), "mine").unwrap();
    std::fs::write(env.target.join("same"), "same").unwrap();
    chmod(&env.target.join("same"), 0o644);
    set_mtime(&env.target.join("same"), 1_600_000_000, 0);
    let mut suid = rfile("bin/tool", "#!");
    suid.mode = 0o4755;
    let bytes = raw_tar(&[
        rdir("bin"),
        suid,
        rfile("changed", "new"),
        rfile("same", "same"),
        rsymlink("abs", "/etc/hostname"),
        rfile("../escape", "x"),
        rfile("x\ncreate /etc/passwd", "forged line"),
        raw("mem", b'3'),
    ]);
    let plan = plan_tar(
        &bytes,
        &env.target,
        RestoreOptions {
            privileged: false,
            ..opts()
        },
    );
    let settings = {
        let mut s = insta::Settings::clone_current();
        s.add_filter(&regex_escape(env.target.to_str().unwrap()), "[TARGET]");
        s
    };
    settings.bind(|| {
        insta::assert_snapshot!("plan_human", plan.render(false));
        let json: serde_json::Value = serde_json::to_value(&plan).unwrap();
        insta::assert_json_snapshot!("plan_json", json["items"]);
    });
    let json: serde_json::Value = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["counts"]["refuse"]["entries"], 2);
    assert_eq!(json["items"][1]["mode"], "0755");
    assert_eq!(json["options"]["overwrite"], "if-changed");
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Other ways of feeding the engine.

/// What an indexed archive gives: every entry with its content offset and hash, read once.
fn index_of(archive: &Path) -> Vec<RestoreEntry> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in ar.entries_with_seek().unwrap() {
        let mut e = e.unwrap();
        let Some(mut re) = RestoreEntry::from_tar(&mut e).unwrap() else {
            continue;
        };
        if re.kind == EntryKind::File {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            re.sha256 = Some(Sha256::digest(&data).into());
        }
        out.push(re);
    }
    out
}

/// Plans from the index, then seeks to each entry the plan needs; returns the names whose content was read.
fn restore_indexed(
    archive: &Path,
    index: &[RestoreEntry],
    target: &Path,
) -> (Summary, Vec<String>) {
    use std::io::{Seek, SeekFrom};
    let mut planner = Planner::new(
        target,
        RestoreOptions {
            compare: Compare::Content,
            ..opts()
        },
    )
    .unwrap();
    for e in index {
        planner.add(e.clone()).unwrap();
    }
    let plan = planner.finish();
    let mut file = std::fs::File::open(archive).unwrap();
    let mut fetched = Vec::new();
    let mut applier = Applier::new(&plan).unwrap();
    for item in plan.items.iter().filter(|i| !i.implicit) {
        if item.needs_content() {
            file.seek(SeekFrom::Start(item.entry.locator.unwrap()))
                .unwrap();
            fetched.push(item.path.clone());
            applier
                .apply(&item.entry, Some(&mut (&mut file).take(item.entry.size)))
                .unwrap();
        } else {
            applier.apply(&item.entry, None).unwrap();
        }
    }
    (applier.finish(), fetched)
}

#[test]
fn a_caller_with_random_access_reads_only_what_the_plan_needs() {
    let env = Env::new();
    let src = env.base.join("src");
    small_tree(&src);
    let archive = env.base.join("a.tar");
    gnu_tar(&src, &archive);
    let index = index_of(&archive);

    let (s, fetched) = restore_indexed(&archive, &index, &env.target);
    assert!(s.is_ok(), "{}", s.render());
    assert_eq!(fetched, ["docs/a", "docs/b", "docs/c", "top"]);
    assert_same_trees(&shape(&listing(&env.target)), &shape(&listing(&src)));

    // Same size, same mtime, other content: only the content comparison sees it, and only it is read.
    std::fs::write(env.target.join("docs/b"), "BRAVO").unwrap();
    set_mtime(&env.target.join("docs/b"), MTIME, 5);
    let (s, fetched) = restore_indexed(&archive, &index, &env.target);
    assert!(s.is_ok(), "{}", s.render());
    assert_eq!(fetched, ["docs/b"]);
    assert_eq!(std::fs::read(env.target.join("docs/b")).unwrap(), b"bravo");

    // A flipped byte in the archive: the content does not match the index, and the old file stays.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = index
        .iter()
        .find(|e| e.name.ends_with(b"docs/c"))
        .unwrap()
        .locator
        .unwrap() as usize;
    bytes[at] ^= 0x20;
    std::fs::write(&archive, &bytes).unwrap();
    std::fs::write(env.target.join("docs/c"), "changed").unwrap();
    let (s, fetched) = restore_indexed(&archive, &index, &env.target);
    assert_eq!(fetched, ["docs/c"]);
    assert_eq!(s.exit(), Exit::Failed);
    assert!(
        s.errors[0].path.ends_with("docs/c") && s.errors[0].message.contains("sha256"),
        "{}",
        s.render()
    );
    assert_eq!(
        std::fs::read(env.target.join("docs/c")).unwrap(),
        b"changed"
    );
}

#[test]
fn one_path_of_an_archive_can_be_restored() {
    let env = Env::new();
    let src = env.base.join("src");
    small_tree(&src);
    let archive = env.base.join("a.tar");
    gnu_tar(&src, &archive);
    let mut planner = Planner::new(&env.target, opts()).unwrap();
    source::plan_tar_selected(
        std::fs::File::open(&archive).unwrap(),
        &mut planner,
        source::under(b"docs"),
    )
    .unwrap();
    let plan = planner.finish();
    let mut applier = Applier::new(&plan).unwrap();
    source::apply_tar_selected(
        std::fs::File::open(&archive).unwrap(),
        &mut applier,
        source::under(b"./docs/"),
    )
    .unwrap();
    let s = applier.finish();
    assert!(s.is_ok(), "{}", s.render());
    let names: Vec<String> = listing(&env.target).keys().map(|k| show(k)).collect();
    assert_eq!(
        names,
        ["", "docs", "docs/a", "docs/b", "docs/c", "docs/link"]
    );
    // Selecting differently in the second pass is caught.
    let mut applier = Applier::new(&plan).unwrap();
    let r = source::apply_tar_selected(
        std::fs::File::open(&archive).unwrap(),
        &mut applier,
        |_: &RestoreEntry| true,
    );
    assert!(matches!(r, Err(RestoreError::NotInPlan { .. })), "{r:?}");
}

#[test]
fn hard_links_to_kept_and_unchanged_files() {
    let env = Env::new();
    let bytes = raw_tar(&[
        rfile("a", "same"),
        rhardlink("b", "a"),
        rhardlink("c", "b"),
        rfile("k", "backup"),
        rhardlink("l", "k"),
    ]);
    let (_, s) = restore_tar(&bytes, &env.target, opts());
    assert!(s.is_ok(), "{}", s.render());
    let ino = |n: &str| std::fs::metadata(env.target.join(n)).unwrap().ino();
    assert!(
        ino("a") == ino("b") && ino("b") == ino("c"),
        "a chain of links is one inode"
    );
    // Again: everything is unchanged, links included.
    let (plan, s) = restore_tar(&bytes, &env.target, opts());
    assert!(s.is_ok());
    assert!(
        plan.items.iter().all(|i| i.action == Action::Unchanged),
        "{}",
        plan.render(true)
    );
    // k edited and kept with --overwrite never: l is made again as a link to the kept k, and says so.
    std::fs::remove_file(env.target.join("l")).unwrap();
    std::fs::write(env.target.join("k"), "mine").unwrap();
    let never = RestoreOptions {
        overwrite: Overwrite::Never,
        ..opts()
    };
    let (plan, s) = restore_tar(&bytes, &env.target, never);
    assert!(s.is_ok(), "{}", s.render());
    let l = plan.items.iter().find(|i| i.path == "l").unwrap();
    assert_eq!(l.action, Action::Create);
    assert!(
        l.notes[0].contains("as it is at the destination"),
        "{:?}",
        l.notes
    );
    assert_eq!(ino("l"), ino("k"));
}

#[test]
fn sockets_in_a_snapshot_are_skipped_not_refused() {
    let env = Env::new();
    let src = env.base.join("src");
    std::fs::create_dir(&src).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("agent.sock")).unwrap();
    std::fs::write(src.join("file"), "f").unwrap();
    let (plan, s) = restore_snapshot(&src, &env.target, opts());
    assert!(s.is_ok(), "{}", s.render());
    let sock = plan.items.iter().find(|i| i.path == "agent.sock").unwrap();
    assert_eq!((sock.kind, sock.action), (EntryKind::Socket, Action::Skip));
    assert!(
        sock.reason
            .as_deref()
            .unwrap()
            .contains("sockets are not restored")
    );
    assert!(env.target.join("agent.sock").symlink_metadata().is_err());
    assert_eq!(s.counts.skip.entries, 1);
}
