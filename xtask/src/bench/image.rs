//! `cargo xtask bench image` (root): a 1 GiB ext4 partition (GPT disk image on a loop device) filled to 60% with
//! files (half random, half compressible text), imaged to the emulated exFAT T9, then restored:
//! - imaging: `dbackup image create --device PART` (partclone -> zstd -> file, hashed on the way, partclone.chkimg
//!   on the stream decompressed again, read back past the cache) against the same pipeline by hand:
//!   `partclone.extfs -c -s PART -o - | zstd | tee FILE | sha256sum`, `sync FILE`, the page cache dropped, and
//!   `sha256sum FILE` (the read-back); goal (issue 18): dbackup within 1.2x;
//! - restoring onto a blank disk (a second loop device): `dbackup image restore --yes` (hash of the image checked
//!   first, sfdisk, partclone -r, fsck, UUID/PARTUUID checks) against `zstd -dc FILE | partclone.extfs -r`.
//!
//! The kit is off in the bench's config (it is the same half second either way). Each repetition removes its
//! backup; the images and disks are sparse files under target/bench/image, removed at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::loopdev::Drive;

use super::measure::{Cache, Table, timed};
use crate::packages::Need;
use crate::util::{Rng, heading, human_bytes, remove_dir_if_exists};

const GOAL: f64 = 1.2;
const MIB: u64 = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Size of the ext4 partition, in MiB
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// How full it is, in percent
    #[arg(long, default_value_t = 60)]
    pub used_percent: u64,
    /// Timed repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// How the page cache is treated before each timed run (the same for every contender)
    #[arg(long, value_enum, default_value_t = Cache::Drop)]
    pub cache: Cache,
}

/// A loop device with partitions (`losetup --find --show -P`), detached on drop while still backed by its file.
struct Loop {
    device: PathBuf,
    file: PathBuf,
}

impl Loop {
    fn attach(file: &Path) -> Result<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "-P"])
            .arg(file)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Loop {
            device: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            file: file.canonicalize()?,
        })
    }

    fn part1(&self) -> Result<PathBuf> {
        let p = PathBuf::from(format!("{}p1", self.device.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut asked = false;
        while !p.exists() {
            if !asked {
                let _ = Command::new("partx").arg("-a").arg(&self.device).status();
                asked = true;
            }
            anyhow::ensure!(Instant::now() < deadline, "{} never appeared", p.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let name = self
            .device
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .unwrap_or_default();
        if Path::new(backing.trim_end_matches('\n')) == self.file {
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        }
    }
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-ec", script]);
    c
}

/// A sparse file with one GPT partition from sector 2048 to the end.
fn gpt_disk(path: &Path, bytes: u64) -> Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(bytes)?;
    drop(f);
    let mut c = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    c.stdin
        .take()
        .expect("piped")
        .write_all(b"label: gpt\nunit: sectors\n\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, name=\"root\"\n")?;
    anyhow::ensure!(c.wait()?.success(), "sfdisk failed");
    Ok(())
}

/// Fills the mounted filesystem at `mp` with `bytes` of files: 4 MiB files alternating random and text.
fn fill(mp: &Path, bytes: u64) -> Result<()> {
    let mut rng = Rng::new(18);
    let mut buf = vec![0u8; 4 << 20];
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; dbackup images partitions\n"
        .iter()
        .copied()
        .cycle()
        .take(buf.len())
        .collect();
    let mut written = 0;
    let mut n = 0;
    while written < bytes {
        let dir = mp.join(format!("d{:03}", n / 64));
        std::fs::create_dir_all(&dir)?;
        if n % 2 == 0 {
            rng.fill(&mut buf);
            std::fs::write(dir.join(format!("f{n:05}.bin")), &buf)?;
        } else {
            std::fs::write(dir.join(format!("f{n:05}.txt")), &text)?;
        }
        written += buf.len() as u64;
        n += 1;
    }
    Ok(())
}

pub fn run(args: ImageArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let (shell, bin) = super::measure::prepare(
        "image",
        Some("loop devices, partclone reading a block device, the emulated T9"),
        Need::Bench,
        &[
            "losetup",
            "sfdisk",
            "partx",
            "mkfs.ext4",
            "mkfs.exfat",
            "mount.exfat-fuse",
            "partclone.extfs",
            "zstd",
            "sha256sum",
        ],
        ": apt-get install util-linux fdisk e2fsprogs exfatprogs exfat-fuse partclone zstd",
    )?;
    let work = super::measure::fresh_work_dir(&shell, "image")?;
    let result = bench(&args, &bin, &work);
    remove_dir_if_exists(&work)?;
    result
}

fn bench(args: &ImageArgs, bin: &Path, work: &Path) -> Result<()> {
    heading("bench image: the source disk (ext4 on a GPT partition) and the emulated T9");
    let part_bytes = args.size_mib * MIB;
    let used = part_bytes * args.used_percent / 100;
    let disk_bytes = part_bytes + 2 * MIB;
    gpt_disk(&work.join("source.img"), disk_bytes)?;
    let source = Loop::attach(&work.join("source.img"))?;
    let part = source.part1()?;
    let run = |c: &mut Command, what: &str| -> Result<()> {
        let out = c.output().with_context(|| format!("cannot run {what}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "bench"])
            .arg(&part),
        "mkfs.ext4",
    )?;
    let mp = work.join("mnt");
    std::fs::create_dir_all(&mp)?;
    run(Command::new("mount").arg(&part).arg(&mp), "mount")?;
    let filled = fill(&mp, used);
    let _ = Command::new("umount").arg(&mp).status();
    filled?;
    // The T9: room for one image at a time plus the hand pipeline's file (sparse).
    let t9 = Drive::exfat("T9", 2 * part_bytes + 512 * MIB);
    let config = work.join("config.json");
    let cfg = serde_json::json!({
        "backup_root": work.join("root"),
        "backup_sets": [{ "name": "unused", "sources": [work.join("mnt")] }],
        "destinations": [{ "name": "T9", "path": t9.mount_point(), "fs_label": "T9" }],
        "image": { "kit": false },
    });
    std::fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
    let backups = t9.mount_point().join("backups");
    let dbackup = || {
        let mut c = Command::new(bin);
        c.arg("--config").arg(&config).env("HOME", work);
        c
    };
    let hand_file = t9.mount_point().join("hand.img.zst");
    let hand = format!(
        "partclone.extfs -c -s {part} -o - -L /dev/null 2>/dev/null | zstd -q -3 | tee {file} | sha256sum >/dev/null; \
         sync {file}; echo 1 > /proc/sys/vm/drop_caches; sha256sum {file} >/dev/null",
        part = part.display(),
        file = hand_file.display()
    );
    let stamps = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&backups)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("20"))
            .collect();
        v.sort();
        v
    };

    heading(&format!(
        "bench image: imaging, {} repetitions, {}",
        args.reps,
        args.cache.describe()
    ));
    let mut create = Table::new(&["dbackup", "by hand"], &["image 1 GiB ext4"], &[(0, 1)]);
    let mut hand_bytes = 0;
    for rep in 0..args.reps {
        let order = super::measure::turns(rep);
        for theirs in order {
            args.cache.prepare()?;
            let t = if theirs {
                let _ = std::fs::remove_file(&hand_file);
                let t = timed(&mut sh(&hand), "the hand pipeline")?;
                hand_bytes = std::fs::metadata(&hand_file)?.len();
                t
            } else {
                for s in stamps() {
                    std::fs::remove_dir_all(backups.join(s))?;
                }
                timed(
                    dbackup().args(["image", "create", "--device"]).arg(&part),
                    "dbackup image create",
                )?
            };
            create.push(0, usize::from(theirs), t);
            eprintln!(
                "  rep {}: {:<8} {:>7.3}s",
                rep + 1,
                if theirs { "by hand" } else { "dbackup" },
                t.as_secs_f64()
            );
        }
    }
    let stamp = stamps().pop().context("dbackup left no backup")?;
    let name = part
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let image = backups
        .join(&stamp)
        .join("system")
        .join(format!("{name}.img.zst"));
    let image_bytes = std::fs::metadata(&image)?.len();

    heading("bench image: restoring onto a blank disk");
    gpt_disk(&work.join("target.img"), disk_bytes)?;
    let target = Loop::attach(&work.join("target.img"))?;
    let target_part = target.part1()?;
    let theirs_restore = format!(
        "zstd -dc {image} | partclone.extfs -r -s - -o {part} -L /dev/null >/dev/null 2>&1",
        image = image.display(),
        part = target_part.display()
    );
    let mut restore = Table::new(
        &["dbackup", "zstd|partclone"],
        &["restore 1 GiB ext4"],
        &[(0, 1)],
    );
    for rep in 0..args.reps {
        let order = super::measure::turns(rep);
        for theirs in order {
            args.cache.prepare()?;
            let t = if theirs {
                timed(&mut sh(&theirs_restore), "zstd -dc | partclone.extfs -r")?
            } else {
                timed(
                    dbackup()
                        .args(["image", "restore", "--yes", "--from", &stamp, "--to"])
                        .arg(&target.device),
                    "dbackup image restore",
                )?
            };
            restore.push(0, usize::from(theirs), t);
            eprintln!(
                "  rep {}: {:<14} {:>7.3}s",
                rep + 1,
                if theirs { "zstd|partclone" } else { "dbackup" },
                t.as_secs_f64()
            );
        }
    }
    drop(target);
    drop(source);
    drop(t9);

    println!();
    println!(
        "bench image: a {} ext4 partition, {}% used ({}), on a loop device; images written to the emulated exFAT T9",
        human_bytes(part_bytes),
        args.used_percent,
        human_bytes(used)
    );
    println!(
        "image: {} by dbackup, {} by hand (zstd -3 both); {} repetitions, {}",
        human_bytes(image_bytes),
        human_bytes(hand_bytes),
        args.reps,
        args.cache.describe()
    );
    println!(
        "\nimaging (dbackup also runs partclone.chkimg on the stream and reads the file back past the cache):"
    );
    create.print();
    println!(
        "\nrestoring (dbackup also hashes the image first, writes the table, runs fsck and checks the UUIDs):"
    );
    restore.print();
    let ratio = create.ratio(0, (0, 1));
    println!(
        "\ngoal: imaging dbackup/by hand <= {GOAL:.1}: {} ({ratio:.2})",
        if ratio <= GOAL { "met" } else { "NOT met" }
    );
    println!(
        "restore dbackup/(zstd|partclone): {:.2}",
        restore.ratio(0, (0, 1))
    );
    Ok(())
}
