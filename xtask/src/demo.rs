//! `cargo xtask demo`: a sample home under `target/demo/`, a config pointing at it, the main job run twice with
//! a change in between, the external phase onto a stand-in drive (plain, then encrypted with age), a restore and
//! a verification from each, and a tour of the result (snapshots, `<set>-latest`, shared inodes, exclusions, modes).
//!
//! Every run starts from an empty `target/demo/`. The checks at the end make the demo fail loudly when
//! dbackup does not do what the README promises.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{Need, ensure_packages};
use crate::util::{
    Profile, Rng, build_dbackup, heading, human_bytes, remove_dir_if_exists, shell, target_dir,
    wait_for_next_second,
};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// The demo's world: every path is absolute and canonical.
struct Demo {
    bin: PathBuf,
    /// `target/demo`
    root: PathBuf,
    /// The sample home; `HOME` for every dbackup command.
    home: PathBuf,
    /// The data directory that `~/data` links to (like the seed's `~/data -> /data`).
    data: PathBuf,
    backups: PathBuf,
    config: PathBuf,
    /// A directory standing in for the removable drive.
    drive: PathBuf,
    /// A second stand-in drive, for the backups encrypted with age.
    drive_age: PathBuf,
    /// The age identity `dbackup keygen` writes (`target/demo/identity.txt`).
    identity: PathBuf,
}

pub fn run(_args: DemoArgs) -> Result<()> {
    let sh = shell()?;
    ensure_packages(&sh, Need::Demo);
    heading("demo: build dbackup");
    let bin = build_dbackup(&sh, Profile::Debug)?;
    let demo = Demo::create(bin, &target_dir(&sh)?.join("demo"))?;

    heading("demo: check the config");
    demo.dbackup(&["config", "check"])?;

    heading("demo: first run");
    demo.main_job()?;

    // Snapshot names have one-second resolution; start the second run in a new second.
    wait_for_next_second();
    heading("demo: change some files");
    demo.change_files()?;

    heading("demo: second run");
    demo.main_job()?;

    heading(
        "demo: the external phase, onto target/demo/T9 (a directory standing in for the drive)",
    );
    demo.dbackup(&["external"])?;

    heading("demo: lose a file, then restore it from the drive");
    std::fs::remove_file(demo.data.join(RESTORED))?;
    eprintln!("deleted  ~/data/{RESTORED}");
    demo.dbackup(&["restore", "--source", "external", "--list"])?;
    demo.dbackup(&[
        "restore",
        "--source",
        "external",
        "--path",
        &format!("~/data/{RESTORED}"),
    ])?;

    heading("demo: restore over newer work: the edited file is kept in displaced/ first");
    let edited = demo.data.join(RESTORED);
    std::fs::write(&edited, "newer work, written after the backup\n")?;
    eprintln!("edited   ~/data/{RESTORED}");
    demo.dbackup(&[
        "restore",
        "--source",
        "external",
        "--path",
        &format!("~/data/{RESTORED}"),
    ])?;
    let kept: Vec<PathBuf> = walk_files(&demo.backups.join("displaced"))
        .into_iter()
        .filter(|p| p.ends_with(edited.strip_prefix("/").unwrap_or(&edited)))
        .collect();
    match kept.as_slice() {
        [one] if std::fs::read_to_string(one)?.starts_with("newer work") => {
            eprintln!("kept     {}", one.display());
        }
        _ => bail!(
            "the edited {} was not kept under {}/displaced: {kept:?}",
            edited.display(),
            demo.backups.display()
        ),
    }

    heading("demo: verify the backup on the drive");
    demo.dbackup(&["restore", "--source", "external", "--verify"])?;

    heading("demo: drive history: one more change, then `external` stores only what changed");
    wait_for_next_second();
    write(&demo.data, THIRD, b"pub struct Third;\n")?;
    eprintln!("added    ~/data/{THIRD}");
    demo.main_job()?;
    demo.dbackup(&["external", "--dry-run"])?;
    demo.dbackup(&["external"])?;
    demo.dbackup(&["restore", "--source", "external", "--list"])?;
    heading(
        "demo: a file the incremental keeps in the first backup: one index lookup, one seek there",
    );
    let from_chain = demo.root.join("restored-chain");
    demo.dbackup(&[
        "restore",
        "--source",
        "external",
        "--path",
        &format!("~/data/{CHAIN_RESTORED}"),
        "--target",
        &from_chain.display().to_string(),
    ])?;
    demo.dbackup(&["restore", "--source", "external", "--verify"])?;

    heading("demo: encrypt with age: a key pair, then the backup onto target/demo/T9-age");
    let age_config = demo.age_config()?;
    demo.dbackup_with(&age_config, &["external"])?;
    heading(
        "demo: restore a file from the encrypted backup (one 64 KiB chunk decrypted), and verify it",
    );
    let restored_age = demo.root.join("restored-age");
    demo.dbackup_with(
        &age_config,
        &[
            "restore",
            "--source",
            "external",
            "--path",
            &format!("~/data/{AGE_RESTORED}"),
            "--target",
            &restored_age.display().to_string(),
        ],
    )?;
    demo.dbackup_with(
        &age_config,
        &["restore", "--source", "external", "--verify"],
    )?;

    heading("demo: the status page (regenerated after every run; REPORT.html on each drive)");
    demo.dbackup(&["report"])?;

    demo.show()
}

/// The file the demo deletes and restores from the drive.
const RESTORED: &str = "projects/alpha/notes.md";

/// The file the third run adds: the incremental backup on the drive stores it (and little else).
const THIRD: &str = "projects/alpha/src/third.rs";

/// A file unchanged since the first backup on the drive, restored from the incremental (its bytes are in the first).
const CHAIN_RESTORED: &str = "projects/alpha/src/new.rs";

/// The file the demo restores from the encrypted backup, and a line of it that must not be on that drive in the clear.
const AGE_RESTORED: &str = "projects/alpha/README.md";
const AGE_CANARY: &str = "A project that matters.";

/// Every file below `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out
}

impl Demo {
    /// Builds the sample home and data from scratch, and writes the config.
    fn create(bin: PathBuf, root: &Path) -> Result<Demo> {
        heading(&format!("demo: sample home in {}", root.display()));
        remove_dir_if_exists(root)?;
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let root = root.canonicalize()?;
        let demo = Demo {
            bin,
            home: root.join("home"),
            data: root.join("data"),
            backups: root.join("backups"),
            config: root.join("config.json"),
            drive: root.join("T9"),
            drive_age: root.join("T9-age"),
            identity: root.join("identity.txt"),
            root,
        };
        std::fs::create_dir_all(&demo.drive)?;
        std::fs::create_dir_all(&demo.drive_age)?;

        let d = &demo.data;
        write(
            d,
            "projects/alpha/README.md",
            b"# alpha\nA project that matters.\n",
        )?;
        write(d, "projects/alpha/notes.md", b"- first idea\n")?;
        write(
            d,
            "projects/alpha/src/main.rs",
            b"fn main() {\n    println!(\"alpha\");\n}\n",
        )?;
        write(
            d,
            "projects/alpha/src/lib.rs",
            b"pub fn answer() -> u32 {\n    42\n}\n",
        )?;
        write(
            d,
            "projects/alpha/build.log",
            b"compiling alpha... (a log: excluded by *.log)\n",
        )?;
        write(d, "projects/beta/README.md", b"# beta\n")?;
        write(
            d,
            "projects/beta/old-draft.txt",
            b"deleted before the second run\n",
        )?;
        write(d, "projects/beta/measurements.csv", &csv(4000))?;
        write(
            d,
            "projects/beta/assets/model-1.bin",
            &pseudo_random(1, 4 << 20),
        )?;
        write(
            d,
            "projects/beta/assets/model-2.bin",
            &pseudo_random(2, 8 << 20),
        )?;
        for i in 1..=6 {
            write(
                d,
                &format!("photos/2024/img-{i:04}.jpg"),
                &pseudo_random(10 + i, 1 << 20),
            )?;
        }
        write(d, "tmp/scratch.txt", b"scratch (excluded by tmp/*)\n")?;
        write(d, "download.tmp", b"half a download (excluded by *.tmp)\n")?;

        let h = &demo.home;
        std::fs::create_dir_all(h)?;
        std::os::unix::fs::symlink(&demo.data, h.join("data"))?;
        write(
            h,
            ".config/app/settings.json",
            b"{ \"theme\": \"dark\", \"autosave\": true }\n",
        )?;
        write(
            h,
            ".config/git/config",
            b"[user]\n\tname = Demo User\n\temail = demo@example.org\n",
        )?;
        write(
            h,
            ".config/Code/User/settings.json",
            b"{ \"editor.fontSize\": 13 }\n",
        )?;
        write(h, ".config/Code/Cache/blob-1", &pseudo_random(30, 64 << 10))?;
        write(h, ".config/Code/Cache/blob-2", &pseudo_random(31, 64 << 10))?;
        // A tool's cache tagged as such (https://bford.info/cachedir/): `exclude_caches` leaves it out.
        write(
            h,
            ".config/tool/cache/CACHEDIR.TAG",
            b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n",
        )?;
        write(h, ".config/tool/cache/index", &pseudo_random(32, 16 << 10))?;
        write(h, ".config/tool/tool.toml", b"verbose = false\n")?;
        write(
            h,
            "env.sh",
            b"export DDATA=\"$HOME/data\"\nexport EDITOR=vi\n",
        )?;
        write(h, ".secrets", b"export API_TOKEN=not-a-real-token\n")?;
        std::fs::set_permissions(h.join(".secrets"), std::fs::Permissions::from_mode(0o600))?;

        std::fs::write(&demo.config, demo.config_text()).context("cannot write the demo config")?;
        eprintln!("data:    {}  (~/data links here)", demo.data.display());
        eprintln!("home:    {}", demo.home.display());
        eprintln!("config:  {}", demo.config.display());
        eprintln!("backups: {}", demo.backups.display());
        eprintln!(
            "every dbackup command below runs with HOME={}",
            demo.home.display()
        );
        Ok(demo)
    }

    fn config_text(&self) -> String {
        let root = serde_json::to_string(&self.backups.display().to_string())
            .expect("a string serializes");
        let drive =
            serde_json::to_string(&self.drive.display().to_string()).expect("a string serializes");
        format!(
            r#"// The config `cargo xtask demo` writes: comments are allowed.
{{
  "backup_root": {root},
  "backup_sets": [
    {{
      // ~/data is a symlink to the data directory; dbackup resolves it.
      "name": "data",
      "sources": ["~/data"],
      "method": "rsync",
      "exclusions": ["tmp/*", "*.tmp", "*.log"]
    }},
    {{
      "name": "config",
      "sources": ["~/.config", "~/env.sh", "~/.secrets"],
      "method": "rsync",
      "exclusions": ["~/.config/Code/Cache/*"],
      // Directories holding a valid CACHEDIR.TAG are left out, as tar, restic and borg do.
      "exclude_caches": true
    }}
  ],
  "retention": {{ "local": 7, "external": 5 }},
  // A directory stands in for the drive here; a real drive has its mount point as path, and no require_mount.
  "destinations": [ {{ "name": "T9", "path": {drive}, "require_mount": false }} ]
}}
"#
        )
    }

    /// Runs dbackup against the demo's world, showing the command and letting its output through.
    fn dbackup(&self, args: &[&str]) -> Result<()> {
        self.dbackup_with(&self.config, args)
    }

    /// [`Demo::dbackup`] with another config.
    fn dbackup_with(&self, config: &Path, args: &[&str]) -> Result<()> {
        eprintln!("$ dbackup --config {} {}", config.display(), args.join(" "));
        let status = self
            .command()
            .arg("--config")
            .arg(config)
            .args(args)
            .status()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !status.success() {
            bail!("`dbackup {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// The binary in the demo's environment.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .env_remove("DBACKUP")
            .env_remove("DBACKUP_CONFIG")
            .env_remove("DBACKUP_PASSPHRASE_FILE")
            .env_remove("DDATA");
        c
    }

    /// `dbackup keygen` writes the identity; the config for the encrypted drive names its recipient (public) and,
    /// for restore, the identity file. Returns that config's path.
    fn age_config(&self) -> Result<PathBuf> {
        eprintln!("$ dbackup keygen --out {}", self.identity.display());
        let out = self
            .command()
            .arg("keygen")
            .arg("--out")
            .arg(&self.identity)
            .output()
            .context("cannot run dbackup keygen")?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !recipient.starts_with("age1") {
            bail!("`dbackup keygen` failed ({})", out.status);
        }
        println!("{recipient}");
        let json = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
        let text = self
            .config_text()
            .replace(&json(&self.drive), &json(&self.drive_age))
            .trim_end()
            .strip_suffix('}')
            .expect("the config is an object")
            .to_string()
            + &format!(
                "  ,\n  // Public key only: backing up needs no secret. The identity is read by restore and verify.\n  \
                 \"encryption\": {{ \"recipients\": [\"{recipient}\"], \"identity_file\": {} }}\n}}\n",
                json(&self.identity)
            );
        let path = self.root.join("config-age.json");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The job the demo runs twice. Later issues make it `dbackup backup` with an emulated drive attached.
    fn main_job(&self) -> Result<()> {
        self.dbackup(&["collect"])
    }

    fn change_files(&self) -> Result<()> {
        let notes = self.data.join("projects/alpha/notes.md");
        let mut text = std::fs::read_to_string(&notes)?;
        text.push_str("- second idea\n");
        std::fs::write(&notes, text)?;
        write(
            &self.data,
            "projects/alpha/src/new.rs",
            b"pub struct New;\n",
        )?;
        std::fs::remove_file(self.data.join("projects/beta/old-draft.txt"))?;
        eprintln!("changed  ~/data/projects/alpha/notes.md");
        eprintln!("added    ~/data/projects/alpha/src/new.rs");
        eprintln!("deleted  ~/data/projects/beta/old-draft.txt");
        Ok(())
    }

    /// The complete snapshots of a set, oldest first.
    fn snapshots(&self, set: &str) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.backups)
            .with_context(|| format!("cannot list {}", self.backups.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir()
                && name
                    .strip_prefix(set)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(is_stamp)
            {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where a source file lives inside a snapshot: the snapshot mirrors absolute paths. `roots` are the
    /// names the source may be recorded under (resolved first, then as configured).
    fn in_snapshot(snapshot: &Path, roots: &[&Path], rel: &str) -> PathBuf {
        let candidates: Vec<PathBuf> = roots
            .iter()
            .map(|r| snapshot.join(r.strip_prefix("/").unwrap_or(r)).join(rel))
            .collect();
        candidates
            .iter()
            .find(|c| c.symlink_metadata().is_ok())
            .unwrap_or(&candidates[0])
            .clone()
    }

    /// Prints the backup root and checks what the README promises.
    fn show(&self) -> Result<()> {
        heading(&format!("demo: the backup root {}", self.backups.display()));
        self.list_backup_root()?;

        heading("demo: what the second run shares with the first");
        for set in ["data", "config"] {
            if let [.., previous, newest] = &self.snapshots(set)?[..] {
                let (files, shared, shared_bytes) = sharing(previous, newest);
                println!(
                    "  {}: {files} files; {shared} of them ({}) are hard links into {}",
                    file_name(newest),
                    human_bytes(shared_bytes),
                    file_name(previous),
                );
            }
        }

        if let Some(newest) = self.snapshots("data")?.last() {
            heading(&format!(
                "demo: metadata beside the snapshot: {}.json",
                file_name(newest)
            ));
            match self.metadata_of(newest) {
                Some(meta) => println!("{meta}"),
                None => println!("  (none found)"),
            }
        }

        heading("demo: checks");
        let checks = self.checks()?;
        checks.finish()?;
        println!(
            "\nexplore:\n  ls -l {0}\n  HOME={1} {2} --config {3} --dry-run collect",
            self.backups.display(),
            self.home.display(),
            self.bin.display(),
            self.config.display()
        );
        Ok(())
    }

    /// One line per entry of the backup root: snapshots with their size, metadata files, links.
    fn list_backup_root(&self) -> Result<()> {
        let mut entries: Vec<_> =
            std::fs::read_dir(&self.backups)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in &entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.path().symlink_metadata()?;
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path())?.display())
            } else if meta.is_dir() && name == "displaced" {
                let (files, bytes) = tree_size(&e.path());
                format!("kept by restores: {files} files, {}", human_bytes(bytes))
            } else if meta.is_dir() {
                let (files, bytes) = tree_size(&e.path());
                format!("snapshot: {files} files, {}", human_bytes(bytes))
            } else if name.ends_with(".json") {
                "metadata".to_string()
            } else {
                format!("{} bytes", meta.len())
            };
            println!("  {name:<34} {what}");
        }
        Ok(())
    }

    /// What the README promises, checked on the two runs.
    fn checks(&self) -> Result<Checks> {
        let mut checks = Checks::default();
        let data_roots = [self.data.as_path(), &self.home.join("data")];
        let home_roots = [self.home.as_path()];
        for set in ["data", "config"] {
            let snaps = self.snapshots(set)?;
            checks.check(
                snaps.len() == 3,
                format!("{set}: three snapshots ({} found)", snaps.len()),
            );
            let latest = std::fs::read_link(self.backups.join(format!("{set}-latest")))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|_| "missing".into());
            let newest = snaps.last().map(|s| file_name(s)).unwrap_or_default();
            checks.check(
                Path::new(&latest)
                    .file_name()
                    .is_some_and(|l| l.to_string_lossy() == newest),
                format!("{set}-latest -> {latest}: the newest snapshot"),
            );
        }

        let data = self.snapshots("data")?;
        let config = self.snapshots("config")?;
        // The first two runs: what changed between them; the third only adds THIRD (drive history).
        let (Some(d1), Some(d2), Some(c2)) = (data.first(), data.get(1), config.last()) else {
            return Ok(checks);
        };
        let at = |snap: &Path, rel: &str| Demo::in_snapshot(snap, &data_roots, rel);
        let model = "projects/beta/assets/model-2.bin";
        let (ino1, _) = inode(&at(d1, model));
        let (ino2, links2) = inode(&at(d2, model));
        checks.check(
            ino1 == ino2 && ino1 != 0 && links2 == data.len() as u64,
            format!("unchanged {model}: one inode in every snapshot ({ino1} / {ino2}), link count {links2}"),
        );
        let notes = "projects/alpha/notes.md";
        let (n1, _) = inode(&at(d1, notes));
        let (n2, nlinks) = inode(&at(d2, notes));
        let latest_notes = std::fs::read_to_string(at(d2, notes)).unwrap_or_default();
        checks.check(
            // The second and third runs share it (unchanged between them).
            n1 != n2 && nlinks == data.len() as u64 - 1 && latest_notes.contains("second idea"),
            format!("changed {notes}: a new copy (inodes {n1} / {n2}, link count {nlinks})"),
        );
        checks.check(
            at(d2, "projects/alpha/src/new.rs").is_file(),
            "added projects/alpha/src/new.rs: in the second snapshot",
        );
        checks.check(
            at(d1, "projects/beta/old-draft.txt").is_file()
                && !at(d2, "projects/beta/old-draft.txt").exists(),
            "deleted projects/beta/old-draft.txt: in the first snapshot only",
        );
        for rel in [
            "tmp/scratch.txt",
            "download.tmp",
            "projects/alpha/build.log",
        ] {
            checks.check(
                !at(d2, rel).exists(),
                format!("excluded ~/data/{rel}: absent"),
            );
        }

        let home = |rel: &str| Demo::in_snapshot(c2, &home_roots, rel);
        let cached = std::fs::read_dir(home(".config/Code/Cache"))
            .map(|r| r.count())
            .unwrap_or(0);
        checks.check(
            cached == 0,
            format!("excluded ~/.config/Code/Cache/*: absent ({cached} entries)"),
        );
        checks.check(
            home(".config/Code/User/settings.json").is_file(),
            "~/.config/Code/User/settings.json: kept",
        );
        checks.check(
            !home(".config/tool/cache").exists() && home(".config/tool/tool.toml").is_file(),
            "~/.config/tool/cache (holds a CACHEDIR.TAG): absent; ~/.config/tool/tool.toml kept",
        );
        checks.check(home("env.sh").is_file(), "~/env.sh: in the config snapshot");
        let mode = std::fs::symlink_metadata(home(".secrets"))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        checks.check(
            mode == 0o600,
            format!("~/.secrets: mode {mode:04o} in the snapshot (0600 expected)"),
        );
        // `latest` is a symlink where the filesystem has them, a `LATEST` text file elsewhere (exFAT).
        let backups = self.drive.join("backups");
        let on_drive = std::fs::read_link(backups.join("latest"))
            .map(|l| l.display().to_string())
            .or_else(|_| std::fs::read_to_string(backups.join("LATEST")))
            .unwrap_or_default();
        let on_drive = on_drive.trim();
        checks.check(
            !on_drive.is_empty() && backups.join(on_drive).join("data.tar").is_file(),
            format!("the drive holds backup {on_drive} with data.tar"),
        );
        let meta =
            std::fs::read_to_string(backups.join(on_drive).join("backup.json")).unwrap_or_default();
        checks.check(
            meta.contains("\"incremental\""),
            format!("the drive's newest backup {on_drive} is an incremental on the first"),
        );
        let chain_copy = walk_files(&self.root.join("restored-chain"))
            .into_iter()
            .find(|p| p.ends_with(CHAIN_RESTORED));
        let original = std::fs::read(self.data.join(CHAIN_RESTORED)).unwrap_or_default();
        checks.check(
            chain_copy.and_then(|p| std::fs::read(p).ok()).is_some_and(|b| !b.is_empty() && b == original),
            format!("~/data/{CHAIN_RESTORED}: restored from the incremental, bytes read in the first backup"),
        );
        let restored = std::fs::read_to_string(self.data.join(RESTORED)).unwrap_or_default();
        checks.check(
            restored.contains("second idea"),
            format!("~/data/{RESTORED}: restored from the drive, second version"),
        );

        // The encrypted drive: age files only, nothing of the data in the clear, the file restored whole.
        let backups = self.drive_age.join("backups");
        let newest = std::fs::read_link(backups.join("latest"))
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let dir = backups.join(&newest);
        checks.check(
            !newest.is_empty()
                && dir.join("data.tar.age").is_file()
                && dir.join("data.index.age").is_file()
                && !dir.join("data.tar").exists(),
            format!("the encrypted drive holds backup {newest} with data.tar.age and data.index.age only"),
        );
        let clear = files_under(&self.drive_age).iter().any(|f| {
            std::fs::read(f).is_ok_and(|b| {
                b.windows(AGE_CANARY.len())
                    .any(|w| w == AGE_CANARY.as_bytes())
            })
        });
        checks.check(
            !clear,
            format!(
                "{AGE_CANARY:?} (from ~/data/{AGE_RESTORED}) is in no file on the encrypted drive"
            ),
        );
        let restored = files_under(&self.root.join("restored-age"))
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(AGE_CANARY)));
        checks.check(
            restored,
            format!("~/data/{AGE_RESTORED}: restored from the encrypted drive into target/demo/restored-age"),
        );
        let page = std::fs::read_to_string(self.root.join("state/dbackup/report.html"))
            .unwrap_or_default();
        checks.check(
            page.contains("id=\"set-data\"") && page.contains("Content-Security-Policy"),
            "the status page: target/demo/state/dbackup/report.html (open it in a browser)",
        );
        let drive_page =
            std::fs::read_to_string(self.drive_age.join("REPORT.html")).unwrap_or_default();
        checks.check(
            drive_page.contains("dbackup backups on this drive")
                && !drive_page.contains("projects")
                && !drive_page.contains(&self.data.display().to_string())
                && !drive_page.contains(&self.home.join("data").display().to_string()),
            "target/demo/T9-age/REPORT.html explains the drive without naming the encrypted set's files or sources",
        );
        Ok(checks)
    }

    /// The metadata file stored beside a snapshot (`<snapshot>.json`), pretty-printed.
    fn metadata_of(&self, snapshot: &Path) -> Option<String> {
        let text = std::fs::read_to_string(snapshot.with_extension("json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        let mut out = String::new();
        compact_json(&value, 0, &mut out);
        Some(out)
    }
}

/// Pretty JSON, but with arrays of plain values (an rsync argv, a list of patterns) on one line.
fn compact_json(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                out.push_str(&format!(
                    "{}{}: ",
                    pad(indent + 1),
                    Value::String(k.clone())
                ));
                compact_json(v, indent + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}}}", pad(indent)));
        }
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                compact_json(v, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}]", pad(indent)));
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(Value::to_string).collect();
            out.push_str(&format!("[{}]", items.join(", ")));
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The outcome of each promise the demo checks.
#[derive(Default)]
struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        println!("  {} {}", if ok { "✓" } else { "✗" }, what.as_ref());
        if !ok {
            self.failed += 1;
        }
    }

    fn finish(&self) -> Result<()> {
        if self.failed > 0 {
            bail!("{} demo check(s) failed (marked ✗ above)", self.failed);
        }
        Ok(())
    }
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// `YYYY-MM-DD-HHMMSS`
fn is_stamp(s: &str) -> bool {
    s.len() == 17
        && s.char_indices().all(|(i, c)| {
            if [4, 7, 10].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn write(base: &Path, rel: &str, content: &[u8]) -> Result<()> {
    let path = base.join(rel);
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
    std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
}

/// Deterministic incompressible bytes, so big files behave like photos and models.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Rng::new(seed).fill(&mut out);
    out
}

fn csv(rows: usize) -> Vec<u8> {
    let mut out = String::from("sample,temperature,pressure\n");
    for i in 0..rows {
        out.push_str(&format!(
            "{i},{:.2},{:.1}\n",
            20.0 + (i % 97) as f64 / 10.0,
            1000.0 + (i % 31) as f64
        ));
    }
    out.into_bytes()
}

fn inode(path: &Path) -> (u64, u64) {
    std::fs::symlink_metadata(path)
        .map(|m| (m.ino(), m.nlink()))
        .unwrap_or((0, 0))
}

/// Files and bytes of the regular files under `dir`.
fn tree_size(dir: &Path) -> (u64, u64) {
    let files = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file());
    files.fold((0, 0), |(n, b), e| {
        (n + 1, b + e.metadata().map(|m| m.len()).unwrap_or(0))
    })
}

/// Of the regular files in `newest`: how many, how many share an inode with a file in `previous`, and their bytes.
fn sharing(previous: &Path, newest: &Path) -> (u64, u64, u64) {
    let inodes = |dir: &Path| -> Vec<(u64, u64)> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok().map(|m| (m.ino(), m.len())))
            .collect()
    };
    let before: HashSet<u64> = inodes(previous).into_iter().map(|(ino, _)| ino).collect();
    let now = inodes(newest);
    let shared: Vec<_> = now.iter().filter(|(ino, _)| before.contains(ino)).collect();
    (
        now.len() as u64,
        shared.len() as u64,
        shared.iter().map(|(_, len)| len).sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_of_values_stay_on_one_line() {
        let v =
            serde_json::json!({ "argv": ["rsync", "-a"], "sources": [{ "path": "/d" }], "n": 1 });
        let mut out = String::new();
        compact_json(&v, 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"argv\": [\"rsync\", \"-a\"],\n  \"n\": 1,\n  \"sources\": [\n    {\n      \"path\": \"/d\"\n    }\n  ]\n}"
        );
    }

    #[test]
    fn stamps_are_recognised() {
        assert!(is_stamp("2025-04-01-031500"));
        assert!(!is_stamp("2025-04-01T03:15:00"));
        assert!(!is_stamp("latest"));
        assert!(!is_stamp("2025-04-01-0315001"));
    }
}
