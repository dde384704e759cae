//! The only part of the image room that runs partclone and sfdisk or writes to a block device.
//!
//! Writing a backup's `system/` folder ([`write_system`]): each partition image is partclone's stream (`-c -o -`)
//! read by dbackup, its header parsed, compressed with zstd, encrypted with age when the destination encrypts, and
//! hashed on its way to the drive; at the same time the compressed bytes are decompressed again and fed to
//! `partclone.chkimg`, so the stream that reached the file is checked block by block. Then the file is read back from
//! the drive past the page cache and its sha256 compared. The kit's pieces, the tables and `RESTORE-SYSTEM.md` are
//! small files written and read back the same way. Nothing here renames anything into place: the caller promotes
//! the backup after everything was read back.
//!
//! Restoring ([`verify_images`], then [`restore`]): every image file is hashed and compared with `backup.json`, and
//! its partclone header read, before anything is written; then the partition table, each image through
//! `partclone -r` (hashed again on its way, the bytes really written), the growth of the last filesystem, fsck, and
//! the UUID/PARTUUID checks.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::doc::{self, DocInput};
use super::header::{self, ImageHeader};
use super::kit::Kit;
use super::layout::{self, ImageRecord, KitRecord, SystemRecord, TableRecord};
use super::observe::TargetKind;
use super::plan::{ImagePlan, RestorePlan, SystemPlan};
use crate::archive::FileRecord;
use crate::archive::crypt::EncryptTo;
use crate::archive::sink::{Chain, FileSink, Sink, Stage, ThreadedSink};
use crate::archive::sums::SumLine;
use crate::archive::{Keys, WrittenFile};
use crate::stdx;
use crate::stdx::fs::{Dir, flat};
use crate::ui::{self, Ui};

/// zstd's level for images: its default, fast enough to keep up with a USB drive on one core.
pub const ZSTD_LEVEL: i32 = 3;
const BLOCK: usize = 1 << 20;

/// What the rebuild guide says besides the kit: where it is, and the sets.
#[derive(Debug, Clone, Default)]
pub struct DocContext {
    pub stamp: Option<String>,
    pub destination: Option<String>,
    pub sets: Vec<(String, Vec<String>)>,
    /// The drive's block device under a FUSE filesystem: its cache is dropped before each read-back, so the drive
    /// answers (as for the archives).
    pub device_cache: Option<PathBuf>,
}

/// Kills and reaps a child process of ours when dropped before it was waited for (an error path).
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not yet waited for")
    }

    fn wait(mut self) -> io::Result<std::process::ExitStatus> {
        self.0.take().expect("not yet waited for").wait()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Collects the end of a child's stderr on a thread (partclone draws progress there with `\r`).
fn stderr_tail(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 16384 {
                tail.drain(..tail.len() - 8192);
            }
        }
        let text = String::from_utf8_lossy(&tail).replace('\r', "\n");
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("Elapsed")
                    && !l.starts_with("current block")
                    && !l.starts_with("Remaining")
            })
            .collect();
        crate::stdx::show_str(&lines[lines.len().saturating_sub(3)..].join("; "))
    })
}

/// Writes `bytes` as `system/<name>` (age-encrypted to `<name>.age` when `encrypt`), fsynced; returns its record.
fn write_small(
    dir: &Dir,
    name: &str,
    bytes: &[u8],
    encrypt: Option<&EncryptTo>,
) -> anyhow::Result<FileRecord> {
    let stored = layout::stored_name(name, encrypt.is_some());
    let data = match encrypt {
        Some(e) => {
            let mut w = e.writer(Vec::new())?;
            w.write_all(bytes)?;
            w.finish()?
        }
        None => bytes.to_vec(),
    };
    crate::external::layout::write_new_file(dir, &stored, &data).map_err(flat)
}

/// Writes into `system/` what `plan` says (the kit from `kit`, and the images), reads every file back, and returns
/// the record for `backup.json` with the sums lines (`system/<file>`). `temp` is the temporary backup directory,
/// opened as the external phase opens it (nothing below it is reached through a symlink).
pub fn write_system(
    plan: &SystemPlan,
    kit: Option<&Kit>,
    temp: &Dir,
    encrypt: Option<&EncryptTo>,
    ctx: &DocContext,
    ui: &Ui,
) -> anyhow::Result<(SystemRecord, Vec<SumLine>)> {
    let dir = temp.create_sub(layout::SYSTEM_DIR, 0o700).map_err(flat)?;
    let mut record = SystemRecord {
        refused: plan.refused.clone(),
        encryption: encrypt.map(|e| e.record()),
        ..SystemRecord::default()
    };
    let mut written: Vec<WrittenFile> = Vec::new();
    let mut note = |rec: &FileRecord| {
        written.push(WrittenFile {
            path: dir.join(&rec.name),
            bytes: rec.bytes,
            sha256: rec.sha256,
        })
    };

    // The tables of the imaged disks, then the images.
    let mut disks: Vec<(&str, u64)> = Vec::new();
    for i in &plan.images {
        if let (Some(d), Some(b)) = (i.disk.as_deref(), i.disk_bytes)
            && !disks.iter().any(|(x, _)| *x == d)
        {
            disks.push((d, b));
        }
    }
    // The images `--grow` can grow (as `plan::plan_restore` checks it), by name, for the guide.
    let mut grow: Vec<String> = (plan.images.iter())
        .filter(|i| i.disk.is_none() && super::plan::can_grow(&i.fs_type))
        .map(|i| i.name.clone())
        .collect();
    for (disk, bytes) in disks {
        let dump = sfdisk_dump(disk)?;
        let table = super::table::parse(&dump).with_context(|| {
            format!("the partition table of /dev/{disk} as sfdisk --dump printed it")
        })?;
        let last = table.last().map(|p| p.number);
        if let Some(i) = (plan.images.iter()).find(|i| {
            i.disk.as_deref() == Some(disk)
                && i.partition.is_some()
                && i.partition == last
                && super::plan::can_grow(&i.fs_type)
        }) && !table.has_extended()
        {
            grow.push(i.name.clone());
        }
        let rec = write_small(&dir, &layout::table_file(disk), &dump, encrypt)?;
        note(&rec);
        record.tables.push(TableRecord {
            disk: disk.to_string(),
            label: table.label,
            disk_bytes: bytes,
            file: rec,
        });
    }
    for i in &plan.images {
        let rec = write_image(i, &dir, encrypt, ctx.device_cache.as_deref(), ui)
            .with_context(|| format!("image of {}", i.device))?;
        record.images.push(rec);
    }

    if let Some(kit) = kit.filter(|_| plan.kit) {
        let mut pieces: Vec<KitRecord> = Vec::new();
        for p in &kit.pieces {
            let p = p.for_drive(encrypt.is_some());
            let file = if p.has_file() {
                let rec = write_small(&dir, &p.name, &p.bytes, encrypt)?;
                note(&rec);
                Some(rec)
            } else {
                None
            };
            pieces.push(p.record(file));
        }
        let generated = chrono::Local::now()
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string();
        let text = doc::render(&DocInput {
            facts: &kit.facts,
            pieces: &pieces,
            images: &record.images,
            tables: &record.tables,
            stamp: ctx.stamp.as_deref(),
            destination: ctx.destination.as_deref(),
            sets: &ctx.sets,
            encrypted: encrypt.is_some(),
            grow: &grow,
            generated: &generated,
        });
        kit.write_generated(&mut pieces, &text, |name, bytes| {
            let rec = write_small(&dir, name, bytes, encrypt)?;
            note(&rec);
            Ok(rec)
        })?;
        record.kit = pieces;
    }
    dir.fsync().map_err(flat)?;
    drop_device_cache(ctx.device_cache.as_deref(), ui);
    crate::archive::read_back_in(&dir, &written).map_err(flat)?;
    let sums = record
        .files()
        .map(|f| SumLine {
            sha256: f.sha256,
            name: format!("{}/{}", layout::SYSTEM_DIR, f.name).into_bytes(),
        })
        .collect();
    Ok((record, sums))
}

/// Drops the FUSE drive's block device cache before a read-back; a failure is said (the read-back may then have
/// been answered from memory), never fatal.
fn drop_device_cache(device: Option<&Path>, ui: &Ui) {
    if let Some(d) = device
        && let Err(e) = crate::archive::readback::drop_device_cache(d)
    {
        ui.step(format_args!(
            "could not drop the cache of {} ({e}): the read-back may have been answered from memory",
            d.display()
        ));
    }
}

/// `sfdisk --dump /dev/<disk>`.
fn sfdisk_dump(disk: &str) -> anyhow::Result<Vec<u8>> {
    let sfdisk = crate::stdx::find_program("sfdisk").context(
        "sfdisk is not installed (Debian package fdisk): the partition table cannot be recorded",
    )?;
    let mut cmd = Command::new(sfdisk);
    cmd.args(["--dump", &format!("/dev/{disk}")])
        .env("LC_ALL", "C");
    let out = crate::stdx::run_bounded(cmd, Duration::from_secs(60), super::table::MAX_DUMP_BYTES)?;
    if !out.ok() {
        bail!("sfdisk --dump /dev/{disk} failed: {}", out.failure());
    }
    Ok(out.stdout)
}

/// Starts `cmd` under `LC_ALL=C` with the stdin and stdout given and stderr piped (for [`stderr_tail`]), reaped
/// when dropped; `what` names it in the error when it cannot start.
fn spawn_reaped(
    mut cmd: Command,
    stdin: Stdio,
    stdout: Stdio,
    what: &str,
) -> anyhow::Result<Reaped> {
    let child = cmd
        .env("LC_ALL", "C")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    Ok(Reaped(Some(child)))
}

/// `partclone -c` of `device`: its stream on a piped stdout. partclone refuses any mounted device unless forced
/// (`-F`): a device mounted read-only (the plan refuses one mounted read-write) is imaged with it.
fn spawn_partclone(tool: &Path, device: &Path, mounted_read_only: bool) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(tool);
    cmd.args(["-c", "-s"])
        .arg(device)
        .args(["-o", "-", "-L", "/dev/null"]);
    if mounted_read_only {
        cmd.arg("-F");
    }
    spawn_reaped(
        cmd,
        Stdio::null(),
        Stdio::piped(),
        &tool.display().to_string(),
    )
}

/// What partclone says of a device before imaging it: its header, read from the first bytes of `partclone -c`'s
/// stream (partclone counts the used blocks from the filesystem's bitmaps before it writes the header), then
/// partclone is stopped. Reads the device only; the space check of a run sizes the images with it.
pub fn read_header(
    tool: &Path,
    device: &Path,
    mounted_read_only: bool,
) -> anyhow::Result<ImageHeader> {
    let mut source = spawn_partclone(tool, device, mounted_read_only)?;
    let err = stderr_tail(source.child());
    let mut head = vec![0u8; header::HEADER_BYTES];
    let read = source
        .child()
        .stdout
        .take()
        .expect("piped")
        .read_exact(&mut head);
    // Stopped (killed and reaped) here: its header is all that is wanted.
    drop(source);
    let msg = err.join().unwrap_or_default();
    read.map_err(|e| anyhow::anyhow!("{} stopped before its header ({e}): {msg}", tool.display()))?;
    Ok(header::parse(&head)?)
}

/// Everything written goes to the chain (to the drive) and, decompressed again, to `partclone.chkimg`.
struct Tee<W: Write> {
    chain: Chain,
    check: zstd::stream::write::Decoder<'static, W>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.chain.write_all(buf)?;
        self.check.write_all(buf).map_err(|e| {
            io::Error::new(e.kind(), format!("partclone.chkimg stopped reading: {e}"))
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.chain.flush()
    }
}

/// Images one device into `system/`: see the module docs.
// Stays long: one pipeline (partclone -> zstd -> age -> drive, with the check on the side) set up and drained.
fn write_image(
    i: &ImagePlan,
    dir: &Dir,
    encrypt: Option<&EncryptTo>,
    device_cache: Option<&Path>,
    ui: &Ui,
) -> anyhow::Result<ImageRecord> {
    let clock = Instant::now();
    let path = dir.join(&i.file);
    let mut source = spawn_partclone(&i.tool, &i.path, i.mounted_read_only.is_some())?;
    let source_err = stderr_tail(source.child());
    let chkimg_path = crate::stdx::find_program("partclone.chkimg")
        .context("partclone.chkimg is not installed (Debian package partclone)")?;
    let mut cmd = Command::new(chkimg_path);
    cmd.args(["-s", "-", "-L", "/dev/null"]);
    let mut chkimg = spawn_reaped(cmd, Stdio::piped(), Stdio::null(), "partclone.chkimg")?;
    let chkimg_err = stderr_tail(chkimg.child());
    let chkimg_in = chkimg.child().stdin.take().expect("piped");

    let sink: Box<dyn Sink> = Box::new(
        FileSink::create_in(dir, &i.file)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let sink: Box<dyn Sink> = Box::new(ThreadedSink::spawn(sink)?);
    let chain = Chain::new(sink, encrypt.map(|e| e as &dyn Stage))?;
    let tee = Tee {
        chain,
        check: zstd::stream::write::Decoder::new(chkimg_in)?,
    };
    let mut enc = zstd::stream::write::Encoder::new(tee, ZSTD_LEVEL)?;

    let bar = ui.progress.then(|| {
        let b = indicatif::ProgressBar::new(i.device_bytes);
        b.set_style(ui::bytes_style(
            "{prefix:.bold} [{bar:30}] {bytes} {bytes_per_sec} ({elapsed})",
        ));
        b.set_prefix(format!("image {}", i.name));
        b
    });
    let mut out = source.child().stdout.take().expect("piped");
    let mut buf = vec![0u8; BLOCK];
    let mut head: Vec<u8> = Vec::new();
    let mut parsed: Option<ImageHeader> = None;
    let mut stream_bytes = 0u64;
    loop {
        crate::interrupt::check()?;
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading partclone's stream"),
        };
        if parsed.is_none() {
            head.extend_from_slice(&buf[..n.min(header::HEADER_BYTES)]);
            if head.len() >= header::HEADER_BYTES {
                let h = header::parse(&head).context("partclone's stream")?;
                if let Some(b) = &bar {
                    b.set_length(h.used_bytes());
                }
                parsed = Some(h);
            }
        }
        enc.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        stream_bytes += n as u64;
        if let Some(b) = &bar {
            b.inc(n as u64);
        }
    }
    drop(out);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let status = source.wait()?;
    let source_msg = source_err.join().unwrap_or_default();
    if !status.success() {
        bail!("{} failed ({status}): {source_msg}", i.tool.display());
    }
    // Mounted read-write while it was read (the plan found it unmounted or read-only): the image is inconsistent.
    if let Some(m) = crate::media::devices::device_use(&i.path)
        .ok()
        .as_ref()
        .and_then(|u| u.read_write())
    {
        bail!(
            "{} was mounted read-write at {} while it was imaged: the image is inconsistent; image it again \
             unmounted or mounted read-only",
            i.device,
            m.place()
        );
    }
    let head = parsed.context("partclone's stream ended before its header")?;
    let tee = enc
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    let Tee { chain, mut check } = tee;
    check.flush().context("partclone.chkimg stopped reading")?;
    drop(check.into_inner());
    let files = chain
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    let checked = chkimg.wait()?;
    let chk_msg = chkimg_err.join().unwrap_or_default();
    if !checked.success() {
        bail!("partclone.chkimg found the image damaged ({checked}): {chk_msg}");
    }
    let [file] = files.as_slice() else {
        bail!("the image was written as {} files", files.len());
    };
    drop_device_cache(device_cache, ui);
    crate::archive::read_back_in(dir, std::slice::from_ref(file)).map_err(flat)?;
    let seconds = clock.elapsed().as_secs_f64();
    ui.info(format_args!(
        "image {}: {} ({}, {} used) -> system/{}: {} in {} ({}/s), checked with partclone.chkimg, read back: verified",
        i.name,
        i.device,
        i.fs_type,
        stdx::bytes(head.used_bytes()),
        i.file,
        stdx::bytes(file.bytes),
        stdx::duration(Duration::from_secs_f64(seconds)),
        stdx::bytes((stream_bytes as f64 / seconds.max(0.001)) as u64)
    ));
    Ok(ImageRecord {
        name: i.name.clone(),
        device: format!("{} ({})", i.device, i.path.display()),
        fs_type: i.fs_type.clone(),
        tool: i
            .tool
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        ids: i.ids.clone(),
        disk: i.disk.clone(),
        partition: i.partition,
        device_bytes: head.device_bytes,
        used_bytes: head.used_bytes(),
        stream_bytes,
        checked: true,
        file: FileRecord {
            name: i.file.clone(),
            bytes: file.bytes,
            sha256: file.sha256,
            age_head: None,
        },
        seconds,
    })
}

/// Opens a `system/` file as its plaintext: the file itself, or its age decryption.
fn open_plain(path: &Path, encrypted: bool, keys: &Keys) -> anyhow::Result<Box<dyn Read + Send>> {
    plain(open_stored(path)?, path, encrypted, keys)
}

/// Opens a `system/` file as it is stored (buffered).
fn open_stored(path: &Path) -> anyhow::Result<io::BufReader<std::fs::File>> {
    let (dir, name) = system_handle(path)?;
    let file = dir.open_file(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(io::BufReader::with_capacity(BLOCK, file))
}

/// The plaintext of `stored` (the bytes of the file at `path`): those bytes, or their age decryption.
fn plain(
    stored: impl Read + Send + 'static,
    path: &Path,
    encrypted: bool,
    keys: &Keys,
) -> anyhow::Result<Box<dyn Read + Send>> {
    if encrypted {
        let label = path.display().to_string();
        Ok(Box::new(
            keys.open(stored, &label)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    } else {
        Ok(Box::new(stored))
    }
}

/// A reader shared by the stream that consumes it and whoever asks, once that stream has ended, what it read.
struct Shared<R>(std::sync::Arc<std::sync::Mutex<R>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read(buf)
    }
}

/// The `system/` folder holding `path` (`<backups>/<stamp>/system/<file>`), and the file's name: `<backups>` opened
/// as the system resolves it (the drive the user named), the stamp and `system` below it never through a symlink
/// nor onto another filesystem, so a hostile drive cannot redirect what is restored.
fn system_handle(path: &Path) -> anyhow::Result<(Dir, std::ffi::OsString)> {
    let parts = (|| {
        let name = path.file_name()?;
        let system = path.parent()?;
        let backup = system.parent()?;
        Some((
            name,
            system.file_name()?,
            backup.file_name()?,
            backup.parent()?,
        ))
    })();
    let Some((name, system, backup, backups)) = parts else {
        bail!(
            "{} is not a file of a backup's system folder",
            path.display()
        );
    };
    let dir = Dir::open(backups)
        .and_then(|d| d.sub(backup))
        .and_then(|d| d.sub(system))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((dir, name.to_os_string()))
}

/// Reads a small `system/` file (a table) as plaintext, bounded.
pub fn read_small(
    path: &Path,
    encrypted: bool,
    keys: &Keys,
    max: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    open_plain(path, encrypted, keys)?
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(out)
}

/// Checks every image of the plan before anything is written: the file's length and sha256 against `backup.json`
/// (a flipped byte anywhere is found here), and its partclone header (the filesystem fits its partition).
pub fn verify_images(
    plan: &RestorePlan,
    records: &[ImageRecord],
    keys: &Keys,
    ui: &Ui,
) -> anyhow::Result<Vec<ImageHeader>> {
    let mut heads = Vec::new();
    for item in &plan.items {
        let rec = records
            .iter()
            .find(|r| r.name == item.name)
            .context("planned images are recorded")?;
        let path = plan.backup_dir.join(layout::SYSTEM_DIR).join(&item.file);
        let t = Instant::now();
        let (dir, name) = system_handle(&path)?;
        let (bytes, sha, _) = crate::archive::readback::hash_uncached_in(&dir, &name)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if bytes != rec.file.bytes || sha != rec.file.sha256 {
            bail!(
                "{} is damaged: it has {bytes} bytes with sha256 {sha}, backup.json says {} bytes with sha256 {}; \
                 nothing was written",
                path.display(),
                rec.file.bytes,
                rec.file.sha256
            );
        }
        let mut dec = zstd::stream::read::Decoder::new(open_plain(&path, item.encrypted, keys)?)?;
        let mut head = vec![0u8; header::HEADER_BYTES];
        dec.read_exact(&mut head)
            .with_context(|| format!("{}: cannot read the image's header", path.display()))?;
        let h = header::parse(&head).with_context(|| path.display().to_string())?;
        // backup.json names the filesystem (and so the partclone program that restores it); the image says too.
        if !super::observe::header_names(&item.tool).contains(&h.fs.as_str()) {
            bail!(
                "{}: the image's header says its filesystem is {}, but backup.json says {} ({} restores that): the \
                 image and backup.json disagree; nothing was written",
                path.display(),
                h.fs,
                stdx::show_str(&item.fs_type),
                item.tool
            );
        }
        if h.device_bytes > item.partition_bytes {
            bail!(
                "{}: the filesystem is {} but partition {} is {}",
                path.display(),
                stdx::bytes(h.device_bytes),
                item.partition,
                stdx::bytes(item.partition_bytes)
            );
        }
        ui.step(format_args!(
            "{}: {} {} (sha256 matches backup.json, read in {})",
            item.file,
            h.fs,
            stdx::bytes(h.used_bytes()),
            stdx::duration(t.elapsed())
        ));
        heads.push(h);
    }
    Ok(heads)
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub target: PathBuf,
    pub partitions: Vec<RestoredPartition>,
    pub seconds: f64,
}

/// One restored partition and its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredPartition {
    pub name: String,
    pub partition: u32,
    /// The node it was written to during the restore (a loop device's partition for a file target).
    pub node: PathBuf,
    pub fs_type: String,
    pub grown: bool,
    /// `fsck -n` found nothing to fix.
    pub fsck_clean: bool,
    pub uuid: Option<String>,
    pub partuuid: Option<String>,
    pub uuid_kept: bool,
    pub partuuid_kept: bool,
    pub seconds: f64,
}

impl RestoreReport {
    pub fn ok(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.fsck_clean && p.uuid_kept && p.partuuid_kept)
    }
}

/// Runs a tool to completion (stdin closed), failing with the end of its output.
fn run_tool(
    program: &str,
    args: &[&std::ffi::OsStr],
    input: Option<&[u8]>,
    ui: &Ui,
) -> anyhow::Result<String> {
    run_tool_in(Command::new, program, args, input, ui)
}

/// [`run_tool`], its command made by `command` from the program's path (to prepare its process).
fn run_tool_in(
    command: impl FnOnce(PathBuf) -> Command,
    program: &str,
    args: &[&std::ffi::OsStr],
    input: Option<&[u8]>,
    ui: &Ui,
) -> anyhow::Result<String> {
    let path = crate::stdx::find_program(program)
        .with_context(|| format!("{program} is not installed"))?;
    ui.detail(format_args!(
        "running {program} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mut child = command(path)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(bytes)?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err
            .lines()
            .chain(text.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        bail!(
            "{program} failed ({}): {}",
            out.status,
            crate::stdx::show_str(&last[last.len().saturating_sub(3)..].join("; "))
        );
    }
    Ok(text)
}

/// A loop device this restore attached to a disk image file; detached (only while still backed by that file) on
/// drop. It is held open with the kernel's autoclear flag set, so that a process that ends without its drop (a
/// second Ctrl-C, kill -9) still lets go of it: the kernel detaches the device once its last user closed it. The flag
/// is set in the same ioctl that binds the file ([`attach_autoclear`]): there is no moment at which a kill leaves the
/// device attached without it (on a kernel before 5.8, `losetup` attaches it and the flag follows, with a warning
/// when it cannot be set).
struct OwnLoop {
    device: PathBuf,
    file: PathBuf,
    /// The device, open while the restore writes (the autoclear flag acts on the last close).
    held: Option<std::fs::File>,
}

impl OwnLoop {
    /// Attaches `file` to a free loop device, its partitions scanned, as this restore's.
    fn attach(file: &Path, ui: &Ui) -> anyhow::Result<OwnLoop> {
        let file_abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if let Some((device, held)) = attach_autoclear(file).with_context(|| {
            format!(
                "cannot attach {} to a loop device (needs root)",
                file.display()
            )
        })? {
            ui.detail(format_args!(
                "{} attached to {} (autoclear)",
                file.display(),
                device.display()
            ));
            return Ok(OwnLoop {
                device,
                file: file_abs,
                held: Some(held),
            });
        }
        // A kernel without LOOP_CONFIGURE: losetup attaches, then the flag is set on the bound device.
        let dev = run_tool(
            "losetup",
            &[
                "--find".as_ref(),
                "--show".as_ref(),
                "-P".as_ref(),
                file.as_os_str(),
            ],
            None,
            ui,
        )
        .context("attaching the disk image file to a loop device (needs root)")?;
        let device = PathBuf::from(dev.trim());
        let held = std::fs::File::open(&device)
            .and_then(|f| set_autoclear(&f).map(|()| f))
            .map_err(|e| {
                ui.warn(format_args!(
                    "cannot set the autoclear flag of {} ({e}): if dbackup is killed, detach it with `losetup -d {}`",
                    device.display(),
                    device.display()
                ));
            })
            .ok();
        Ok(OwnLoop {
            file: file_abs,
            device,
            held,
        })
    }
}

/// Linux's `struct loop_info64` (`linux/loop.h`), which the libc crate does not define. Written by hand, not taken
/// from a loop-device crate: `loopdev-3` attaches with `LOOP_SET_FD` and sets the flags after (the very window this
/// closes) and builds its bindings with bindgen (libclang at build time); only these two structs are needed.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_GET_STATUS64: u32 = 0x4C05;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;

impl LoopInfo64 {
    fn zeroed() -> LoopInfo64 {
        LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: 0,
            file_name: [0; 64],
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        }
    }
}

/// Linux's `struct loop_config` (`linux/loop.h`, Linux 5.8), the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () =
    assert!(std::mem::size_of::<LoopInfo64>() == 232 && std::mem::size_of::<LoopConfig>() == 304);

/// Attaches `file` (read-write) to a free loop device with `LOOP_CONFIGURE`, which binds it and sets its flags in one
/// step: autoclear (detached at the last close) and partition scanning (`losetup -P`). The device comes back open;
/// while it stays open the device stays attached, and however dbackup ends, its close lets the kernel detach it.
/// `None` when the kernel has no `LOOP_CONFIGURE` (before 5.8).
fn attach_autoclear(file: &Path) -> io::Result<Option<(PathBuf, std::fs::File)>> {
    use std::os::fd::AsRawFd;
    let rw = |p: &Path| std::fs::OpenOptions::new().read(true).write(true).open(p);
    let backing = rw(file)?;
    let control = rw(Path::new("/dev/loop-control"))?;
    let mut info = LoopInfo64::zeroed();
    info.flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN;
    let name = file.as_os_str().as_encoded_bytes();
    let kept = name.len().min(info.file_name.len() - 1);
    info.file_name[..kept].copy_from_slice(&name[..kept]);
    let config = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // Another program may take the free device between the two ioctls (EBUSY): then the next free one.
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = rw(&device)?;
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `LoopConfig` lays out (repr(C), 304 bytes);
        // the pointer is to that live local, the fds are open.
        let done = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &raw const config) };
        if done == 0 {
            return Ok(Some((device, dev)));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) => continue,
            Some(libc::EINVAL | libc::ENOTTY) => return Ok(None),
            _ => return Err(e),
        }
    }
    Err(io::Error::other(
        "every free loop device was taken by another program first",
    ))
}

/// Sets `LO_FLAGS_AUTOCLEAR` on the open loop device `dev` (`LOOP_GET_STATUS64`, then `LOOP_SET_STATUS64` with the
/// flag added; the kernel lets this flag be changed on a bound device). losetup has no option for it.
fn set_autoclear(dev: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut info = LoopInfo64::zeroed();
    // SAFETY: the loop ioctls read and write exactly one `struct loop_info64`, which `LoopInfo64` lays out (repr(C),
    // 232 bytes); the pointer is to that live local and the fd is open. No crate here wraps these two ioctls.
    let got = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64 as _, &raw mut info) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    info.flags |= LO_FLAGS_AUTOCLEAR;
    // SAFETY: as above.
    let set = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &raw const info) };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for OwnLoop {
    fn drop(&mut self) {
        rustix::fs::sync();
        // Closed first: with autoclear set, the kernel may detach the device now (then there is nothing to do).
        drop(self.held.take());
        if crate::media::devices::loops_backed_by(&self.file).contains(&self.device) {
            let _ = Command::new(
                crate::stdx::find_program("losetup").unwrap_or_else(|| "losetup".into()),
            )
            .arg("-d")
            .arg(&self.device)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        }
    }
}

/// The node of partition `n` of `disk`, from sysfs; `partx -a` when the kernel has not made it yet.
fn partition_node(disk: &Path, n: u32, ui: &Ui) -> anyhow::Result<PathBuf> {
    let kname = disk
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let find = || {
        crate::media::devices::partitions_of(&kname)
            .into_iter()
            .find(|p| {
                let name = p.file_name().unwrap_or_default();
                std::fs::read_to_string(Path::new("/sys/class/block").join(name).join("partition"))
                    .is_ok_and(|s| s.trim() == n.to_string())
            })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asked = false;
    loop {
        if let Some(p) = find().filter(|p| p.exists()) {
            return Ok(p);
        }
        if !asked {
            asked = true;
            let _ = run_tool("partx", &["-a".as_ref(), disk.as_os_str()], None, ui);
        }
        if Instant::now() > deadline {
            bail!(
                "the kernel shows no partition {n} of {} after writing the table",
                disk.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks on the terminal before a block device is overwritten.
pub fn confirm(plan: &RestorePlan) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(crate::exit::CodedError::new(
            crate::exit::Exit::Usage,
            format!(
                "{} is a block device and there is no terminal to confirm on; pass --yes to overwrite it",
                plan.target.display()
            ),
        )
        .into());
    }
    crate::stdx::out::stderr(format_args!(
        "Everything on {} will be overwritten. Type the device name ({}) to go on: ",
        plan.target.display(),
        plan.target.display()
    ));
    io::stderr().flush()?;
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        // End of input: the error goes on a line of its own, not after the question.
        crate::errln!();
    }
    let answer = line.trim();
    if answer != plan.target.to_string_lossy() {
        // A "yes" is not enough: the device's name is typed, so a slip of the wrong disk is caught here.
        let hint = if ["y", "yes"].contains(&answer.to_ascii_lowercase().as_str()) {
            format!(
                " (type the device name {} itself to go on)",
                plan.target.display()
            )
        } else {
            String::new()
        };
        return Err(crate::exit::CodedError::new(
            crate::exit::Exit::Failed,
            format!("not confirmed{hint}; nothing was written"),
        )
        .into());
    }
    Ok(())
}

/// The first write: the partition table onto the disk (sfdisk, wiping old signatures), or, onto one partition, that
/// partition's old signatures wiped.
fn lay_out(plan: &RestorePlan, onto_partition: bool, ui: &Ui) -> anyhow::Result<()> {
    if onto_partition {
        run_tool(
            "wipefs",
            &[
                "--all".as_ref(),
                "--quiet".as_ref(),
                plan.target.as_os_str(),
            ],
            None,
            ui,
        )
        .context("wiping the partition's old signatures")?;
    } else {
        // The table: sfdisk writes it onto the disk (or the file), wiping old signatures.
        run_tool(
            "sfdisk",
            &[
                "--quiet".as_ref(),
                "--wipe".as_ref(),
                "always".as_ref(),
                "--wipe-partitions".as_ref(),
                "always".as_ref(),
                plan.target.as_os_str(),
            ],
            Some(plan.script.as_bytes()),
            ui,
        )
        .context("writing the partition table")?;
        ui.step(format_args!(
            "{}: partition table written",
            plan.target.display()
        ));
    }
    Ok(())
}

/// Restores the plan onto its target (the caller verified the images and asked for confirmation).
pub fn restore(
    plan: &RestorePlan,
    records: &[ImageRecord],
    keys: &Keys,
    ui: &Ui,
) -> anyhow::Result<RestoreReport> {
    let clock = Instant::now();
    anyhow::ensure!(!plan.refused(), "the plan was refused");
    // The plan looked at the target before the images were hashed and the user was asked (minutes, maybe): what
    // was mounted or opened since is found here, the last moment before the first write.
    let now = super::observe::target(&plan.target).map_err(|e| anyhow::anyhow!("{e}"))?;
    if now.usage.busy() {
        return Err(crate::exit::CodedError::new(
            crate::exit::Exit::Failed,
            format!(
                "{} is in use now ({}), though it was not when the restore was planned; unmount it first; \
                 nothing was written",
                plan.target.display(),
                now.usage.describe()
            ),
        )
        .into());
    }
    // Onto one partition (no table in the plan): its old signatures wiped, its disk's table left alone.
    let onto_partition = plan.table.is_none();
    lay_out(plan, onto_partition, ui)?;
    let mut report = RestoreReport {
        target: plan.target.clone(),
        partitions: Vec::new(),
        seconds: 0.0,
    };
    if let Err(e) = write_images(plan, records, keys, onto_partition, &mut report, ui) {
        return Err(e.context(partly_written(plan, &report, onto_partition)));
    }
    report.seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// What a restore that failed after its first write left on the target, to say before why it failed.
fn partly_written(plan: &RestorePlan, report: &RestoreReport, onto_partition: bool) -> String {
    let done: Vec<String> = report
        .partitions
        .iter()
        .map(|p| p.partition.to_string())
        .collect();
    let first = if onto_partition {
        "its old signatures were wiped"
    } else {
        "its partition table was written"
    };
    let mut said = match done.as_slice() {
        [] => first.to_string(),
        [one] if !onto_partition => {
            format!("its partition table and partition {one} were restored")
        }
        many => format!(
            "its partition table and partitions {} were restored",
            many.join(", ")
        ),
    };
    if let Some(item) = plan.items.get(report.partitions.len()) {
        said.push_str(&if onto_partition {
            ", the image is incomplete".to_string()
        } else {
            format!(", partition {} is incomplete", item.partition)
        });
    }
    format!(
        "{} is partly written: {said}; do not use it, and restore it again (from this backup once the cause that \
         follows is fixed, or from another)",
        plan.target.display()
    )
}

/// Restores each image of the plan once the table is written (onto a disk image file through a loop device of its
/// own), pushing each partition restored and checked onto `report`.
fn write_images(
    plan: &RestorePlan,
    records: &[ImageRecord],
    keys: &Keys,
    onto_partition: bool,
    report: &mut RestoreReport,
    ui: &Ui,
) -> anyhow::Result<()> {
    let mut own_loop = None;
    let disk: PathBuf = match plan.target_kind {
        _ if onto_partition => plan.target.clone(),
        TargetKind::BlockDevice => {
            let _ = run_tool("partx", &["-u".as_ref(), plan.target.as_os_str()], None, ui);
            plan.target.clone()
        }
        TargetKind::File => {
            let own = OwnLoop::attach(&plan.target, ui)?;
            let dev = own.device.clone();
            own_loop = Some(own);
            dev
        }
    };
    for item in &plan.items {
        crate::interrupt::check()?;
        let t = Instant::now();
        let node = if onto_partition {
            disk.clone()
        } else {
            partition_node(&disk, item.partition, ui)?
        };
        let path = plan.backup_dir.join(layout::SYSTEM_DIR).join(&item.file);
        let rec = records
            .iter()
            .find(|r| r.name == item.name)
            .context("planned images are recorded")?;
        write_partition(&path, item, &rec.file, &plan.from, keys, &node, ui)
            .with_context(|| format!("restoring {} onto {}", item.file, node.display()))?;
        if item.grow {
            grow(&node, &item.fs_type, ui)
                .with_context(|| format!("growing the filesystem on {}", node.display()))?;
        }
        let fsck_clean = fsck(&node, &item.fs_type, ui);
        let id = crate::media::blkid::probe(&node);
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, _) => true,
            _ => false,
        };
        let p = RestoredPartition {
            name: item.name.clone(),
            partition: item.partition,
            node: node.clone(),
            fs_type: item.fs_type.clone(),
            grown: item.grow,
            fsck_clean,
            uuid_kept: same(&item.uuid, &id.uuid),
            partuuid_kept: same(&item.partuuid, &id.partuuid),
            uuid: id.uuid,
            partuuid: id.partuuid,
            seconds: t.elapsed().as_secs_f64(),
        };
        // A filesystem without a partition table restored onto a device of its own: no partition, no PARTUUID.
        let whole = onto_partition && plan.disk.is_empty();
        ui.info(format_args!(
            "{}: {} restored from system/{}{}; fsck {}; UUID {}{}{}",
            match whole {
                true => node.display().to_string(),
                false => format!("partition {} ({})", p.partition, node.display()),
            },
            p.fs_type,
            item.file,
            match (p.grown, whole, onto_partition) {
                (false, _, _) => "",
                (true, true, _) => ", grown to the end of the device",
                (true, false, true) => ", grown to the end of the partition",
                (true, false, false) => ", grown to the end of the disk",
            },
            if p.fsck_clean {
                "clean"
            } else {
                "FOUND PROBLEMS"
            },
            p.uuid.as_deref().unwrap_or("none"),
            if p.uuid_kept { " kept" } else { " DIFFERS" },
            match (whole, onto_partition, p.partuuid_kept) {
                (true, _, _) => String::new(),
                (false, true, _) => format!(
                    "; PARTUUID {} (the partition's own)",
                    p.partuuid.as_deref().unwrap_or("none")
                ),
                (false, false, kept) => format!(
                    "; PARTUUID {}{}",
                    p.partuuid.as_deref().unwrap_or("none"),
                    if kept { " kept" } else { " DIFFERS" }
                ),
            },
        ));
        report.partitions.push(p);
    }
    drop(own_loop);
    Ok(())
}

/// Streams an image file (decrypted, decompressed) into `partclone -r` writing `node`, hashing the file's bytes in
/// the same pass: what partclone was given came from bytes whose length and sha256 are `rec`'s, or the restore fails
/// saying that `node` now holds a damaged restore. [`verify_images`] hashed the file before anything was written (a
/// damaged image stops the restore there, the target untouched); this second hash is of the bytes really written,
/// which a flaky or hostile drive may return otherwise the second time.
fn write_partition(
    path: &Path,
    item: &super::plan::RestoreItem,
    rec: &FileRecord,
    stamp: &str,
    keys: &Keys,
    node: &Path,
    ui: &Ui,
) -> anyhow::Result<()> {
    let tool = &item.tool;
    let program = crate::stdx::find_program(tool)
        .with_context(|| format!("{tool} is not installed (Debian package partclone)"))?;
    let stored = std::sync::Arc::new(std::sync::Mutex::new(stdx::HashingReader::new(
        open_stored(path)?,
    )));
    let mut dec = crate::interrupt::CheckedReader(zstd::stream::read::Decoder::new(plain(
        Shared(stored.clone()),
        path,
        item.encrypted,
        keys,
    )?)?);
    let mut cmd = Command::new(program);
    cmd.args(["-r", "-s", "-", "-o"])
        .arg(node)
        .args(["-L", "/dev/null"]);
    let mut sink = spawn_reaped(cmd, Stdio::piped(), Stdio::null(), tool)?;
    let err = stderr_tail(sink.child());
    let mut stdin = sink.child().stdin.take().expect("piped");
    let copied = io::copy(&mut dec, &mut stdin);
    drop(stdin);
    let status = sink.wait()?;
    let msg = err.join().unwrap_or_default();
    if copied.is_ok() {
        // What the decoder left unread (nothing, for a whole image) still counts: the hash is of the whole file.
        let mut stored = stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        io::copy(&mut *stored, &mut io::sink())
            .with_context(|| format!("reading {}", path.display()))?;
        let sha = crate::archive::Digest::of(std::mem::take(&mut stored.hasher));
        if stored.count != rec.bytes || sha != rec.sha256 {
            bail!(
                "{} changed while it was restored: the bytes just written came from {} bytes with sha256 {sha}, \
                 backup.json says {} bytes with sha256 {} (checked before writing, so the drive returned other \
                 bytes this time: a failing drive or cable?); {} now holds a damaged restore: do not use it, restore \
                 it again from a good backup (another drive, or this one after `dbackup restore --verify --date {}` \
                 passes)",
                path.display(),
                stored.count,
                rec.bytes,
                rec.sha256,
                node.display(),
                stamp
            );
        }
    }
    if !status.success() {
        bail!("{tool} -r failed ({status}): {msg}");
    }
    copied.with_context(|| format!("reading {}", path.display()))?;
    ui.detail(format_args!("{tool}: {msg}"));
    Ok(())
}

/// Removes from `tmp` the empty mount points (`dbackup-grow-*`) that runs killed while they grew left: those named
/// `dbackup-grow-<pid>-<random>` whose process is gone, and those of versions before the pid was in the name
/// (`dbackup-grow-<random>`), which no running process can own but an older binary's. Never one holding anything
/// (`rmdir` refuses it) nor one a filesystem is mounted on in any mount namespace.
fn remove_left_mount_points(tmp: &Path) {
    const PREFIX: &str = "dbackup-grow-";
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let pid = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid == std::process::id() || !crate::stdx::process_gone(pid))
            || !entry.file_type().is_ok_and(|t| t.is_dir())
            || crate::media::mountinfo::mounted_anywhere(&entry.path())
        {
            continue;
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// Grows the filesystem on `node` to the end of its (grown) partition.
fn grow(node: &Path, fs: &str, ui: &Ui) -> anyhow::Result<()> {
    match fs {
        "ext2" | "ext3" | "ext4" => {
            // resize2fs wants a freshly checked filesystem.
            let _ = run_tool(
                "e2fsck",
                &["-f".as_ref(), "-p".as_ref(), node.as_os_str()],
                None,
                ui,
            );
            run_tool("resize2fs", &[node.as_os_str()], None, ui)?;
        }
        "btrfs" | "xfs" => {
            // Both grow only while mounted: mounted by the grow tool's own process, in a mount namespace of its own,
            // so the mount lives only as long as that process. However dbackup ends (kill -9 while it grows), nothing
            // is left mounted, and the loop device of a disk image file is let go.
            // `dbackup-grow-<pid>-*`: a run killed while it grows leaves its empty mount point, which the next
            // one knows to be nobody's and removes.
            let tmp = std::env::temp_dir();
            remove_left_mount_points(&tmp);
            let dir = tempfile::Builder::new()
                .prefix(&format!("dbackup-grow-{}-", std::process::id()))
                .tempdir_in(&tmp)?;
            let mounted_in_own_namespace = |path: PathBuf| {
                let mut cmd = Command::new(path);
                let mount = private_mount(node, dir.path(), fs);
                // SAFETY: the closure runs in the forked child before exec and makes only system calls (unshare,
                // mount) with arguments prepared before the fork; it allocates nothing.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, mount);
                }
                cmd
            };
            let (program, args): (&str, Vec<&std::ffi::OsStr>) = if fs == "btrfs" {
                (
                    "btrfs",
                    vec![
                        "filesystem".as_ref(),
                        "resize".as_ref(),
                        "max".as_ref(),
                        dir.path().as_os_str(),
                    ],
                )
            } else {
                ("xfs_growfs", vec![dir.path().as_os_str()])
            };
            run_tool_in(mounted_in_own_namespace, program, &args, None, ui).with_context(|| {
                format!("mounting {} to grow it, then {program}", node.display())
            })?;
        }
        other => bail!("cannot grow a {other} filesystem"),
    }
    Ok(())
}

/// What the process that grows a filesystem does before it runs the tool: a mount namespace of its own (every mount
/// in it private, so nothing propagates out), and `node` mounted there at `dir` as `fs`. The namespace, and the
/// mount with it, end with that process.
fn private_mount(
    node: &Path,
    dir: &Path,
    fs: &str,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| io::Error::other("a NUL in a path"));
    let strings = (
        c(node.as_os_str().as_bytes()),
        c(dir.as_os_str().as_bytes()),
        c(fs.as_bytes()),
        c(b"/"),
    );
    move || {
        let (node, dir, fs, root) = match &strings {
            (Ok(n), Ok(d), Ok(f), Ok(r)) => (n, d, f, r),
            _ => return Err(io::Error::other("a NUL in a path")),
        };
        // SAFETY: system calls only, on NUL-terminated strings that live as long as the closure.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    node.as_ptr(),
                    dir.as_ptr(),
                    fs.as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// `fsck -n` (read-only) of the filesystem on `node`: true when clean.
fn fsck(node: &Path, fs: &str, ui: &Ui) -> bool {
    let n = node.as_os_str();
    let r = match fs {
        "ext2" | "ext3" | "ext4" => {
            run_tool("e2fsck", &["-f".as_ref(), "-n".as_ref(), n], None, ui)
        }
        "vfat" | "msdos" => run_tool("fsck.fat", &["-n".as_ref(), n], None, ui),
        "btrfs" => run_tool(
            "btrfs",
            &["check".as_ref(), "--readonly".as_ref(), n],
            None,
            ui,
        ),
        "xfs" => run_tool("xfs_repair", &["-n".as_ref(), n], None, ui),
        "exfat" => run_tool("fsck.exfat", &["-n".as_ref(), n], None, ui),
        other => {
            ui.warn(format_args!(
                "no read-only fsck known for {other}: {} not checked",
                node.display()
            ));
            return false;
        }
    };
    match r {
        Ok(_) => true,
        Err(e) => {
            ui.warn(crate::ui::format_error(&e));
            false
        }
    }
}
