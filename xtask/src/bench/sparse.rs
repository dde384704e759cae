//! `cargo xtask bench sparse`: one sparse file (10 GiB with 100 MiB of data by default) through `dbackup collect`,
//! `dbackup external` and a one-file `dbackup restore`, against GNU tar `--sparse` in the same run (and plain
//! `rsync --sparse` for collect): time, and space on the drive and on disk. The same is measured for a file a tenth
//! of the size holding the same data, so the growth column says whether a cost follows the data (about 1x) or the
//! size (about 10x).
//!
//! Everything (the home, the backup root, the drive as a plain directory with `require_mount: false`, GNU tar's
//! archive and every copy) lives on one ext4 loop device made by the bench (root only), so that the `syncfs` dbackup
//! does before promoting a snapshot or an archive flushes the bench's writes, not those of everything else on the
//! machine; GNU tar's and rsync's runs end with `sync -f` of their destination, so that both sides pay for
//! durable writes. What is measured is what the sparse file costs, not a drive's speed.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::loopdev::Drive;

use super::measure::{Cache, Table, timed_cpu};
use crate::packages::Need;
use crate::util::{Rng, heading, human_bytes, remove_dir_if_exists, wait_for_next_second};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Debug, clap::Args)]
pub struct SparseArgs {
    /// Size of the sparse file, in GiB (a second file a tenth of this size holds the same data)
    #[arg(long, default_value_t = 10)]
    pub size_gib: u64,
    /// Data in the file, in MiB, written as 1 MiB extents spread evenly over it
    #[arg(long, default_value_t = 100)]
    pub data_mib: u64,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// How the page cache is treated before each timed run (the same for every contender)
    #[arg(long, value_enum, default_value_t = Cache::Drop)]
    pub cache: Cache,
}

/// Rows of each file's table.
const COLLECT: usize = 0;
const EXTERNAL: usize = 1;
const RESTORE: usize = 2;
/// Columns.
const DBACKUP: usize = 0;
const TAR: usize = 1;
const RSYNC: usize = 2;

/// One file's world: its own home, backup root, drive and GNU tar's files, under `work`.
struct World {
    bin: PathBuf,
    work: PathBuf,
    config: PathBuf,
    /// The sparse file.
    file: PathBuf,
    size: u64,
}

/// What one file's run measured.
struct Measured {
    size: u64,
    /// Wall-clock and CPU (user + system) times.
    table: Table,
    cpu: Table,
    /// Bytes allocated (du) to the source, the snapshot's copy, dbackup's and tar's restored copies.
    source: u64,
    snapshot: u64,
    restored: u64,
    tar_restored: u64,
    /// dbackup's backup on the drive (archive, index, backup.json, sums); GNU tar's archive.
    drive: u64,
    tar_archive: u64,
}

pub fn run(args: SparseArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    anyhow::ensure!(
        args.size_gib >= 1 && args.data_mib >= 1 && args.data_mib * MIB * 10 <= args.size_gib * GIB,
        "the data must fit ten times in the smaller file: raise --size-gib or lower --data-mib"
    );
    let (_sh, bin) = super::measure::prepare(
        "sparse",
        Some("it makes an ext4 loop device to work on"),
        Need::Bench,
        &[
            "rsync",
            "tar",
            "cmp",
            "bash",
            "sync",
            "losetup",
            "mkfs.ext4",
        ],
        "",
    )?;
    // Room for every copy of the data (the files' holes take none); the image itself is sparse.
    let disk = Drive::ext4("SPARSE", 16 * (args.data_mib * MIB) + 512 * MIB);
    let root = disk.mount_point().join("bench");

    let big = args.size_gib * GIB;
    let data = args.data_mib * MIB;
    let mut results = Vec::new();
    for (label, size) in [("small", big / 10), ("big", big)] {
        heading(&format!(
            "bench sparse: a {} file with {} of data, {} repetitions, {}",
            human_bytes(size),
            human_bytes(data),
            args.reps,
            args.cache.describe()
        ));
        let w = World::new(&bin, &root.join(label), size, data)?;
        let m = w.measure(&args);
        remove_dir_if_exists(&w.work)?;
        results.push(m?);
    }
    drop(disk);

    println!();
    println!(
        "bench sparse: one sparse file with {} of data in {} extents of 1 MiB; {} repetitions, {}",
        human_bytes(data),
        args.data_mib,
        args.reps,
        args.cache.describe()
    );
    println!(
        "dbackup: collect (the sparse file copied first with SEEK_DATA/SEEK_HOLE, then rsync --sparse finds it up to \
         date), external (PAX 1.0 sparse member hashed as stored, read back), restore --path (one seek through the \
         index)"
    );
    println!(
        "GNU tar --sparse: tar -c | tar -x for collect, tar --sparse --format=posix -cf onto the drive for external, \
         tar -xf ARCHIVE FILE for restore; rsync: rsync -a --sparse for collect; each then sync -f"
    );
    for m in &results {
        println!(
            "\na {} file with {} of data, wall-clock time:",
            human_bytes(m.size),
            human_bytes(data)
        );
        m.table.print();
        println!(
            "CPU time (user + system, with children): steadier than wall-clock on a busy machine"
        );
        m.cpu.print();
        println!(
            "space: source {} allocated; snapshot {}; drive: dbackup {} (archive, index, metadata), GNU tar {}; \
             restored: dbackup {}, GNU tar {}",
            human_bytes(m.source),
            human_bytes(m.snapshot),
            human_bytes(m.drive),
            human_bytes(m.tar_archive),
            human_bytes(m.restored),
            human_bytes(m.tar_restored)
        );
    }
    let (small, big) = (&results[0], &results[1]);
    println!(
        "\ngrowth from the {} file to the {} one ({}x the size, the same data): time of the big / time of the small \
         (about 1 when a cost follows the data, about {} when it follows the size)",
        human_bytes(small.size),
        human_bytes(big.size),
        big.size / small.size,
        big.size / small.size
    );
    for (what, pick) in [("wall-clock", false), ("CPU", true)] {
        println!("  {what}:");
        fn t(m: &Measured, cpu: bool) -> &Table {
            if cpu { &m.cpu } else { &m.table }
        }
        let growth = |row: usize, col: usize| {
            t(big, pick).median(row, col) / t(small, pick).median(row, col)
        };
        for (row, name) in [
            (COLLECT, "collect"),
            (EXTERNAL, "external"),
            (RESTORE, "restore one file"),
        ] {
            let mut line = format!(
                "    {name:<17} dbackup {:>6.2}x   GNU tar {:>6.2}x",
                growth(row, DBACKUP),
                growth(row, TAR)
            );
            if row == COLLECT {
                line.push_str(&format!("   rsync {:>6.2}x", growth(row, RSYNC)));
            }
            println!("{line}");
        }
    }
    println!(
        "  drive space         dbackup {:>6.2}x   GNU tar {:>6.2}x",
        big.drive as f64 / small.drive as f64,
        big.tar_archive as f64 / small.tar_archive as f64
    );
    Ok(())
}

impl World {
    /// Writes the sparse file (`data` bytes in 1 MiB extents spread evenly over `size`) and the config.
    fn new(bin: &Path, work: &Path, size: u64, data: u64) -> Result<World> {
        for d in ["home/vm", "state", "xdg-config", "drive"] {
            std::fs::create_dir_all(work.join(d))?;
        }
        let file = work.join("home/vm/disk.img");
        let f = File::create(&file)?;
        f.set_len(size)?;
        let extents = data / MIB;
        let stride = size / extents;
        let mut rng = Rng::new(size);
        let mut buf = vec![0u8; MIB as usize];
        for i in 0..extents {
            rng.fill(&mut buf);
            f.write_all_at(&buf, i * stride)?;
        }
        f.sync_all()?;
        let allocated = f.metadata()?.blocks() * 512;
        if allocated > 2 * data + 16 * MIB {
            bail!(
                "{} has {} allocated for {} of data: this filesystem does not make holes",
                file.display(),
                human_bytes(allocated),
                human_bytes(data)
            );
        }
        let config = work.join("config.json");
        let cfg = serde_json::json!({
            "backup_root": work.join("root"),
            "backup_sets": [{ "name": "vm", "sources": [work.join("home/vm")] }],
            "destinations": [{ "name": "T9", "path": work.join("drive"), "require_mount": false }],
            // What is measured is the sparse file, not the recovery kit every backup also gets by default.
            "image": { "kit": false },
        });
        std::fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
        Ok(World {
            bin: bin.to_path_buf(),
            work: work.to_path_buf(),
            config,
            file,
            size,
        })
    }

    fn dbackup(&self) -> Command {
        super::measure::dbackup_command(&self.bin, &self.work, &self.config)
    }

    fn measure(&self, args: &SparseArgs) -> Result<Measured> {
        let new_table = || {
            Table::new(
                &["dbackup", "GNU tar --sparse", "rsync --sparse"],
                &["collect", "external", "restore one file"],
                &[(DBACKUP, TAR)],
            )
        };
        let (mut table, mut cpu) = (new_table(), new_table());
        let mut push =
            |table: &mut Table, row: usize, col: usize, (wall, used): (Duration, Duration)| {
                table.push(row, col, wall);
                cpu.push(row, col, used);
                wall
            };
        let name = "disk.img";
        let tar_archive = self.work.join("drive/gnu.tar");
        for rep in 0..args.reps {
            let order = super::measure::turns(rep);
            for theirs in order {
                // collect: a fresh backup root (or destination) each time, so every run copies the file.
                if theirs {
                    let copy = self.work.join("copy");
                    for (col, script) in [
                        (
                            TAR,
                            r#"set -eo pipefail; tar --sparse -cf - -C "$1" . | tar -xf - -C "$2"; sync -f "$2""#,
                        ),
                        (
                            RSYNC,
                            r#"set -e; rsync -a --sparse "$1/" "$2/"; sync -f "$2""#,
                        ),
                    ] {
                        remove_dir_if_exists(&copy)?;
                        std::fs::create_dir_all(&copy)?;
                        args.cache.prepare()?;
                        let t = timed_cpu(
                            Command::new("bash")
                                .arg("-c")
                                .arg(script)
                                .arg("bash")
                                .arg(self.file.parent().unwrap())
                                .arg(&copy),
                            "the copy by GNU tar or rsync",
                        )?;
                        push(&mut table, COLLECT, col, t);
                    }
                    remove_dir_if_exists(&copy)?;
                } else {
                    super::measure::remove_backup_root(&self.work, &self.work.join("root"))?;
                    args.cache.prepare()?;
                    let t = timed_cpu(self.dbackup().arg("collect"), "dbackup collect")?;
                    push(&mut table, COLLECT, DBACKUP, t);
                }

                // external: dbackup's from the snapshot (kept from its collect), GNU tar's from the source.
                if theirs {
                    let _ = std::fs::remove_file(&tar_archive);
                    args.cache.prepare()?;
                    let t = timed_cpu(
                        Command::new("bash")
                            .arg("-c")
                            .arg(r#"set -e; tar --sparse --format=posix -cf "$1" -C "$2" "$3"; sync -f "$1""#)
                            .arg("bash")
                            .arg(&tar_archive)
                            .arg(self.file.parent().unwrap())
                            .arg(name),
                        "tar --sparse -cf",
                    )?;
                    push(&mut table, EXTERNAL, TAR, t);
                } else {
                    remove_dir_if_exists(&self.work.join("drive/backups"))?;
                    args.cache.prepare()?;
                    let t = timed_cpu(self.dbackup().arg("external"), "dbackup external")?;
                    push(&mut table, EXTERNAL, DBACKUP, t);
                }

                // restore one file.
                let target = self.work.join(if theirs { "r-tar" } else { "r-dbackup" });
                remove_dir_if_exists(&target)?;
                std::fs::create_dir_all(&target)?;
                args.cache.prepare()?;
                let t = if theirs {
                    timed_cpu(
                        Command::new("bash")
                            .arg("-c")
                            .arg(r#"set -e; tar -xf "$1" -C "$2" "$3"; sync -f "$2""#)
                            .arg("bash")
                            .arg(&tar_archive)
                            .arg(&target)
                            .arg(name),
                        "tar -xf",
                    )?
                } else {
                    timed_cpu(
                        self.dbackup()
                            .args(["restore", "--source", "external", "--path"])
                            .arg(&self.file)
                            .arg("--target")
                            .arg(&target),
                        "dbackup restore --path",
                    )?
                };
                let restored = push(&mut table, RESTORE, usize::from(theirs), t);
                let col = usize::from(theirs);
                eprintln!(
                    "  rep {}: {:<7} collect {:>7.3}s  external {:>7.3}s  restore {:>7.3}s",
                    rep + 1,
                    if theirs { "GNU tar" } else { "dbackup" },
                    table_last(&table, COLLECT, col),
                    table_last(&table, EXTERNAL, col),
                    restored.as_secs_f64()
                );
                if rep == 0 {
                    self.check(theirs)?;
                }
                // Snapshot names have one-second resolution.
                wait_for_next_second();
            }
        }
        let allocated = |p: &Path| -> Result<u64> {
            Ok(std::fs::metadata(p)
                .with_context(|| format!("{} is missing", p.display()))?
                .blocks()
                * 512)
        };
        let rel = self.file.strip_prefix("/").unwrap();
        let snapshot = self.work.join("root/vm-latest").join(rel);
        let drive: u64 = walkdir::WalkDir::new(self.work.join("drive/backups"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(Measured {
            size: self.size,
            table,
            cpu,
            source: allocated(&self.file)?,
            snapshot: allocated(&snapshot)?,
            restored: allocated(&self.work.join("r-dbackup").join(rel))?,
            tar_restored: allocated(&self.work.join("r-tar").join(name))?,
            drive,
            tar_archive: std::fs::metadata(&tar_archive)?.len(),
        })
    }

    /// Once: what each contender restored (and dbackup's snapshot) is the file, byte for byte.
    fn check(&self, theirs: bool) -> Result<()> {
        let rel = self.file.strip_prefix("/").unwrap();
        let copies = if theirs {
            vec![self.work.join("r-tar/disk.img")]
        } else {
            vec![
                self.work.join("root/vm-latest").join(rel),
                self.work.join("r-dbackup").join(rel),
            ]
        };
        for copy in copies {
            let status = Command::new("cmp")
                .arg("--quiet")
                .arg(&self.file)
                .arg(&copy)
                .status()
                .context("cannot run cmp")?;
            anyhow::ensure!(
                status.success(),
                "{} differs from {}",
                copy.display(),
                self.file.display()
            );
        }
        Ok(())
    }
}

/// The last sample pushed into a cell, in seconds (for the progress lines).
fn table_last(t: &Table, row: usize, col: usize) -> f64 {
    t.last(row, col)
        .map_or(f64::NAN, |d: Duration| d.as_secs_f64())
}
