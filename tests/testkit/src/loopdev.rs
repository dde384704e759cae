//! The loop-device bench: real loop devices with real filesystems (exFAT through `mount.exfat-fuse`, ext4, xfs, btrfs), each
//! a guard that unmounts and detaches what it created when dropped, even when the test panics.
//!
//! ```no_run
//! # use testkit::loopdev::{self, Drive, Fs};
//! if !loopdev::require(&[Fs::Exfat]) { return; }     // prints why and skips when not root or tools are missing
//! let t9 = Drive::exfat("T9", 128 << 20);              // sparse image, loop device, mkfs.exfat -L T9, mounted by fuse
//! let mp = t9.mount_point();                           // <tmp>/media/payne/T9
//! t9.unmount();                                        // the drive is "pulled": mp is an empty directory again
//! ```
//!
//! Rules that keep parallel tests (and other people's mounts) safe: every drive lives in its own temporary directory
//! (image and mount point); the device is the one `losetup --find --show` returned for that image; a mount is only
//! unmounted when it sits on this drive's mount point and comes from this drive's device; a loop device is only
//! detached while its backing file is still this drive's image.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};

use crate::{check_tools, in_ci, require_root, run, skip, try_run};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The filesystems the bench can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// exFAT, as the Samsung T9 ships; mounted with `mount.exfat-fuse` (this kernel has no exfat module).
    Exfat,
    Ext4,
    Xfs,
    Btrfs,
    /// FAT32, as most USB sticks ship; made by `mkfs.fat` and mounted with `fusefat` (FUSE, read-write mode `rw+`:
    /// this kernel has no vfat module). Its largest file is 4 GiB - 1 byte.
    Fat32,
}

impl Fs {
    /// The type `blkid` reports.
    pub fn name(self) -> &'static str {
        match self {
            Fs::Exfat => "exfat",
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Fat32 => "vfat",
        }
    }

    /// The programs making and mounting this filesystem needs.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Fs::Exfat => &[
                "losetup",
                "blkid",
                "umount",
                "mkfs.exfat",
                "mount.exfat-fuse",
            ],
            Fs::Ext4 => &["losetup", "blkid", "umount", "mount", "mkfs.ext4"],
            Fs::Xfs => &["losetup", "blkid", "umount", "mount", "mkfs.xfs"],
            Fs::Btrfs => &["losetup", "blkid", "umount", "mount", "mkfs.btrfs"],
            Fs::Fat32 => &["losetup", "blkid", "umount", "mkfs.fat", "fusefat"],
        }
    }

    /// The smallest image mkfs accepts (xfs refuses less than 300 MB); smaller requests are raised to this.
    pub fn min_size(self) -> u64 {
        match self {
            Fs::Exfat | Fs::Ext4 => 8 << 20,
            Fs::Btrfs => 128 << 20,
            // mkfs.fat -F 32 needs 65,525 clusters, of 4 KiB here (see `format`).
            Fs::Fat32 => 300 << 20,
            Fs::Xfs => 320 << 20,
        }
    }
}

/// True when the bench can make drives of every filesystem in `fs`: root, and the tools installed. Otherwise skips
/// (see [`skip`]: fails under CI, whose command installs the tools and runs as root) and returns false.
pub fn require(fs: &[Fs]) -> bool {
    if !require_root() {
        return false;
    }
    let tools: Vec<&str> = fs.iter().flat_map(|f| f.tools().iter().copied()).collect();
    match check_tools(&tools, in_ci()) {
        Ok(()) => true,
        Err(msg) => {
            skip(&msg);
            false
        }
    }
}

/// A loop-device test's opening: a new drive of `fs` labelled `label` (see [`Drive::new`]) and its mount point, or
/// `None` when [`require`] skips (not root, or a tool missing).
pub fn drive_or_skip(fs: Fs, label: &str, size: u64) -> Option<(Drive, PathBuf)> {
    if !require(&[fs]) {
        return None;
    }
    let drive = Drive::new(fs, label, size);
    let mp = drive.mount_point().to_path_buf();
    Some((drive, mp))
}

/// Whether the loop device `device` is attached to the file `image` (its backing file, deleted or not): what a guard
/// checks before detaching, so that it never detaches a device someone else attached since.
pub fn backed_by(device: &Path, image: &Path) -> bool {
    let name = device
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let backing =
        std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
    let backing = backing.trim_end_matches('\n');
    Path::new(backing.strip_suffix(" (deleted)").unwrap_or(backing)) == image
}

/// One line of `/proc/self/mountinfo`, the fields the bench needs.
#[derive(Debug, Clone)]
pub struct Mount {
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == "ro")
    }
}

/// This process's mounts (octal escapes such as `\040` decoded).
pub fn mounts() -> Vec<Mount> {
    let text = std::fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let unescape = |f: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < f.len() {
            if f[i] == b'\\'
                && i + 4 <= f.len()
                && f[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
            {
                out.push(
                    f[i + 1..i + 4]
                        .iter()
                        .fold(0u8, |a, d| a.wrapping_mul(8).wrapping_add(d - b'0')),
                );
                i += 4;
            } else {
                out.push(f[i]);
                i += 1;
            }
        }
        out
    };
    let s = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    let list = |f: &[u8]| s(f).split(',').map(str::to_string).collect::<Vec<_>>();
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            let (maj, min) = std::str::from_utf8(fields.get(2)?).ok()?.split_once(':')?;
            Some(Mount {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape(fields.get(4)?))),
                options: list(fields[5]),
                fs_type: s(fields.get(sep + 1)?),
                source: s(fields.get(sep + 2)?),
                super_options: fields.get(sep + 3).map(|f| list(f)).unwrap_or_default(),
            })
        })
        .collect()
}

/// An emulated removable drive: a sparse image in its own temporary directory, attached to a loop device, formatted,
/// and (usually) mounted at `<tmp>/media/payne/<label>`. Dropping it unmounts and detaches.
pub struct Drive {
    /// `None` only after a failed cleanup, when the directory is deliberately leaked rather than removed through a mount.
    dir: Option<tempfile::TempDir>,
    image: PathBuf,
    device: PathBuf,
    /// The loop device's `st_rdev` (major, minor): what mountinfo lists for a kernel or fuseblk mount of it.
    rdev: (u32, u32),
    mount_point: PathBuf,
    fs: Fs,
    label: String,
}

impl Drive {
    /// An exFAT drive labelled `label`, mounted by `mount.exfat-fuse`, like a Samsung T9 on a desktop.
    pub fn exfat(label: &str, size: u64) -> Drive {
        Drive::new(Fs::Exfat, label, size)
    }

    pub fn ext4(label: &str, size: u64) -> Drive {
        Drive::new(Fs::Ext4, label, size)
    }

    /// xfs needs at least 300 MB; smaller sizes are raised (the image is sparse, so this costs nothing).
    pub fn xfs(label: &str, size: u64) -> Drive {
        Drive::new(Fs::Xfs, label, size)
    }

    pub fn btrfs(label: &str, size: u64) -> Drive {
        Drive::new(Fs::Btrfs, label, size)
    }

    /// Makes, formats and mounts a drive; panics (after cleaning up what it made) when any step fails.
    pub fn new(fs: Fs, label: &str, size: u64) -> Drive {
        let mut drive = Drive::unformatted(fs, label, size);
        drive.format();
        drive.mount();
        drive
    }

    /// A sparse image attached to a loop device, neither formatted nor mounted; the mount point directory exists.
    pub fn unformatted(fs: Fs, label: &str, size: u64) -> Drive {
        let dir = tempfile::Builder::new()
            .prefix("dbackup-t9-")
            .tempdir()
            .expect("create a temporary directory");
        let image = dir.path().join(format!("{}.img", fs.name()));
        let file = File::create(&image).expect("create image");
        file.set_len(size.max(fs.min_size())).expect("size image");
        drop(file);
        let mount_point = dir.path().join("media/payne").join(label);
        std::fs::create_dir_all(&mount_point).expect("create mount point");
        let device = PathBuf::from(
            run(
                "losetup",
                [
                    OsStr::new("--find"),
                    OsStr::new("--show"),
                    image.as_os_str(),
                ],
            )
            .trim(),
        );
        let meta =
            std::fs::metadata(&device).unwrap_or_else(|e| panic!("{}: {e}", device.display()));
        assert!(
            meta.file_type().is_block_device(),
            "losetup printed {}, not a block device",
            device.display()
        );
        let rdev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        Drive {
            dir: Some(dir),
            image,
            device,
            rdev,
            mount_point,
            fs,
            label: label.to_string(),
        }
    }

    /// Formats the device with this drive's filesystem and label.
    pub fn format(&mut self) {
        // The program and its flags before the label; 4 KiB FAT32 clusters (`-s 8`): with smaller ones fusefat
        // reports no space at all (statfs).
        let (program, flags): (&str, &[&str]) = match self.fs {
            Fs::Exfat => ("mkfs.exfat", &["-L"]),
            Fs::Ext4 => ("mkfs.ext4", &["-q", "-F", "-L"]),
            Fs::Xfs => ("mkfs.xfs", &["-q", "-f", "-L"]),
            Fs::Btrfs => ("mkfs.btrfs", &["-q", "-f", "-L"]),
            Fs::Fat32 => ("mkfs.fat", &["-F", "32", "-s", "8", "-n"]),
        };
        let args = flags.iter().map(OsStr::new);
        run(
            program,
            args.chain([OsStr::new(&self.label), self.device.as_os_str()]),
        );
    }

    /// Mounts the drive read-write at its mount point (plugging it back in after [`Drive::unmount`]).
    pub fn mount(&self) {
        self.mount_with(false);
    }

    fn mount_with(&self, read_only: bool) {
        assert!(
            self.mounted().is_none(),
            "{} is already mounted",
            self.mount_point.display()
        );
        let (dev, mp) = (self.device.as_os_str(), self.mount_point.as_os_str());
        let ro: &[&OsStr] = if read_only {
            &[OsStr::new("-o"), OsStr::new("ro")]
        } else {
            &[]
        };
        match self.fs {
            // Forks into the background once the mount exists.
            Fs::Exfat => run("mount.exfat-fuse", ro.iter().copied().chain([dev, mp])),
            // `fsname` makes mountinfo name the device (as fuseblk mounts do); big writes and reads of 1 MiB make it
            // about 5 times faster than fusefat's 4 KiB default. Forks into the background once mounted.
            Fs::Fat32 => {
                let opts = format!(
                    "{},big_writes,max_write=1048576,max_read=1048576,fsname={}",
                    if read_only { "ro" } else { "rw+" },
                    self.device.display()
                );
                run("fusefat", [OsStr::new("-o"), OsStr::new(&opts), dev, mp])
            }
            _ => run(
                "mount",
                ro.iter()
                    .copied()
                    .chain([OsStr::new("-t"), OsStr::new(self.fs.name()), dev, mp]),
            ),
        };
        assert!(
            self.mounted().is_some(),
            "{} is not in mountinfo after mounting",
            self.mount_point.display()
        );
    }

    /// The mount of this drive at its mount point, if any (topmost).
    pub fn mounted(&self) -> Option<Mount> {
        let device = self.device.to_string_lossy();
        mounts().into_iter().rev().find(|m| {
            m.mount_point == self.mount_point && (m.dev == self.rdev || m.source == device)
        })
    }

    pub fn is_mounted(&self) -> bool {
        self.mounted().is_some()
    }

    /// Unmounts (falling back to a lazy unmount when busy): the drive is pulled, the mount point is an empty directory
    /// on the root disk again. The loop device stays, so [`Drive::mount`] plugs it back in.
    pub fn unmount(&self) {
        for _ in 0..5 {
            if self.mounted().is_none() {
                return;
            }
            let mp = self.mount_point.as_os_str();
            let (ok, ..) = try_run("umount", [mp]);
            if !ok {
                let _ = try_run("umount", [OsStr::new("-l"), mp]);
            }
            if self.fuse() {
                self.wait_for_fuse_exit();
            }
        }
        assert!(
            self.mounted().is_none(),
            "cannot unmount {}",
            self.mount_point.display()
        );
    }

    /// Lazy unmount (`umount -l`) even while files are open: like yanking the cable mid-write.
    pub fn pull(&self) {
        if self.mounted().is_some() {
            run("umount", [OsStr::new("-l"), self.mount_point.as_os_str()]);
        }
        assert!(
            self.mounted().is_none(),
            "{} still mounted after umount -l",
            self.mount_point.display()
        );
    }

    /// Whether a fuse process serves this drive (exFAT, FAT32).
    fn fuse(&self) -> bool {
        matches!(self.fs, Fs::Exfat | Fs::Fat32)
    }

    /// Makes the mounted drive read-only: `mount -o remount,ro` for kernel filesystems; for exFAT, which fuse cannot
    /// remount, an unmount and `mount.exfat-fuse -o ro`.
    pub fn remount_ro(&self) {
        self.remount(true);
        assert!(
            self.mounted().is_some_and(|m| m.read_only()),
            "{} is not read-only",
            self.mount_point.display()
        );
    }

    /// Makes a read-only drive writable again (the inverse of [`Drive::remount_ro`]).
    pub fn remount_rw(&self) {
        self.remount(false);
        assert!(
            self.mounted().is_some_and(|m| !m.read_only()),
            "{} is still read-only",
            self.mount_point.display()
        );
    }

    /// Mounts the drive again read-only or read-write: `mount -o remount,...`, or for fuse an unmount and a mount.
    fn remount(&self, read_only: bool) {
        if self.fuse() {
            self.unmount();
            self.mount_with(read_only);
        } else {
            let opts = if read_only {
                "remount,ro"
            } else {
                "remount,rw"
            };
            run(
                "mount",
                [
                    OsStr::new("-o"),
                    OsStr::new(opts),
                    self.mount_point.as_os_str(),
                ],
            );
        }
    }

    /// The pids of the `mount.exfat-fuse` processes serving this drive: found by their open files (`/dev/fuse` and this
    /// drive's loop device), never by name.
    pub fn fuse_pids(&self) -> Vec<i32> {
        self.holders(true)
    }

    /// Processes holding this drive's loop device open (and `/dev/fuse`, when `fuse`).
    fn holders(&self, fuse_only: bool) -> Vec<i32> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let fuse_rdev = std::fs::metadata("/dev/fuse").map(|m| m.rdev()).ok();
        let mut pids = Vec::new();
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let (mut fuse, mut device) = (false, false);
            for fd in fds.flatten() {
                let Ok(meta) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                if !meta.file_type().is_char_device() && !meta.file_type().is_block_device() {
                    continue;
                }
                let rdev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
                fuse |= meta.file_type().is_char_device() && Some(meta.rdev()) == fuse_rdev;
                device |= meta.file_type().is_block_device() && rdev == self.rdev;
            }
            if device && (fuse || !fuse_only) && pid != std::process::id() as i32 {
                pids.push(pid);
            }
        }
        pids
    }

    /// `kill -9` of the fuse process serving this drive: the mount stays listed but every access fails with
    /// "Transport endpoint is not connected", as when a drive dies under a running backup. Returns the pid killed.
    pub fn kill_fuse(&self) -> i32 {
        assert!(
            self.fuse(),
            "only the exFAT and FAT32 drives are served by a fuse process"
        );
        let pids = self.fuse_pids();
        assert_eq!(
            pids.len(),
            1,
            "expected one fuse process serving {}, found {pids:?}",
            self.device.display()
        );
        // SAFETY: kill has no memory-safety preconditions; the pid was found serving this drive just now.
        let rc = unsafe { libc::kill(pids[0], libc::SIGKILL) };
        assert_eq!(
            rc,
            0,
            "kill -9 {}: {}",
            pids[0],
            std::io::Error::last_os_error()
        );
        self.wait_for_fuse_exit();
        pids[0]
    }

    /// Waits until no process holds this drive's device open (an unmounted fuse daemon exits on its own).
    fn wait_for_fuse_exit(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.holders(false).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flips (xor 0xff) the byte at `offset` of the device, behind the filesystem's back. Goes through the loop device
    /// with O_DIRECT, a whole aligned block at a time, so no page cache holds a stale copy of that block afterwards.
    /// A file's own cached pages may still hold the old byte: readers must drop them (fadvise DONTNEED) to see it.
    pub fn flip_byte_behind_fs(&self, offset: u64) {
        let mut dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.device)
            .expect("open device");
        let start = offset / BLOCK * BLOCK;
        let mut buf = AlignedBuf::new(BLOCK as usize);
        dev.seek(SeekFrom::Start(start)).unwrap();
        dev.read_exact(buf.as_mut()).expect("read block");
        buf.as_mut()[(offset - start) as usize] ^= 0xff;
        dev.seek(SeekFrom::Start(start)).unwrap();
        dev.write_all(buf.as_mut()).expect("write block");
        dev.sync_all().expect("fsync device");
    }

    /// Every device offset where `needle` occurs (read with O_DIRECT, so what the filesystem wrote is what is seen).
    /// Use a needle that is unique to a test file, then flip a byte there to corrupt that file's content.
    pub fn find_on_device(&self, needle: &[u8]) -> Vec<u64> {
        assert!(!needle.is_empty() && needle.len() < CHUNK);
        let mut dev = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.device)
            .expect("open device");
        let size = self.size();
        let mut buf = AlignedBuf::new(CHUNK);
        let mut carry: Vec<u8> = Vec::new();
        let mut found = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let n = dev.read(buf.as_mut()).expect("read device");
            if n == 0 {
                break;
            }
            let base = pos - carry.len() as u64;
            let mut window = std::mem::take(&mut carry);
            window.extend_from_slice(&buf.as_mut()[..n]);
            found.extend(
                window
                    .windows(needle.len())
                    .enumerate()
                    .filter(|(_, w)| *w == needle)
                    .map(|(i, _)| base + i as u64),
            );
            carry = window[window.len().saturating_sub(needle.len() - 1)..].to_vec();
            pos += n as u64;
        }
        found
    }

    /// Fills the mounted filesystem with a file `fill.bin` until at most `leave` bytes are available; returns its path.
    pub fn fill(&self, leave: u64) -> PathBuf {
        let path = self.mount_point.join("fill.bin");
        let mut file = File::create(&path).expect("create fill file");
        let chunk = vec![0u8; 1 << 20];
        loop {
            let free = self.free_bytes();
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match file.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
            file.sync_data().expect("fsync fill file");
        }
        file.sync_all().expect("fsync fill file");
        path
    }

    /// Bytes available on the mounted filesystem (`statvfs` `f_bavail * f_frsize`).
    pub fn free_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.mount_point).expect("statvfs");
        st.f_bavail * st.f_frsize
    }

    /// The filesystem uuid, fresh from the device (`blkid -c /dev/null`).
    pub fn uuid(&self) -> String {
        run(
            "blkid",
            [
                OsStr::new("-c"),
                OsStr::new("/dev/null"),
                OsStr::new("-s"),
                OsStr::new("UUID"),
                OsStr::new("-o"),
                OsStr::new("value"),
                self.device.as_os_str(),
            ],
        )
        .trim()
        .to_string()
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn image(&self) -> &Path {
        &self.image
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn fs(&self) -> Fs {
        self.fs
    }

    /// This drive's temporary directory (holding the image and `media/`); a place for test files off the drive.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("drive directory").path()
    }

    /// The image (and device) size in bytes.
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.image).map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the loop device is still attached to this drive's image.
    fn attached(&self) -> bool {
        backed_by(&self.device, &self.image)
    }

    /// Detaches the loop device, but only while it is still backed by this drive's image (never someone else's
    /// device). The kernel may finish the detach after `losetup -d` returns (it waits for the last opener, such as an
    /// exiting fuse daemon), so this waits until the device is free. `Err` says what was left attached.
    fn detach(&self) -> Result<(), String> {
        if !self.attached() {
            return Ok(());
        }
        let (ok, _, err, line) = try_run("losetup", [OsStr::new("-d"), self.device.as_os_str()]);
        if !ok {
            return Err(format!("{line} failed: {}", err.trim()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.attached() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.attached() {
            return Err(format!(
                "{} is still attached 10 s after losetup -d",
                self.device.display()
            ));
        }
        Ok(())
    }
}

/// Cleans up what the drive made. Anything left behind (a mount, the loop device, a fuse process) fails the test
/// that leaked it, naming it (unless the test is failing already: then it is printed, as a second panic would abort).
impl Drop for Drive {
    fn drop(&mut self) {
        for _ in 0..5 {
            if self.mounted().is_none() {
                break;
            }
            let mp = self.mount_point.as_os_str();
            if !try_run("umount", [mp]).0 {
                let _ = try_run("umount", [OsStr::new("-l"), mp]);
            }
        }
        if self.fuse() {
            self.wait_for_fuse_exit();
        }
        let mut leaks = Vec::new();
        // Before the detach: afterwards the device number may already be another drive's.
        let holders = self.holders(false);
        if !holders.is_empty() {
            leaks.push(format!(
                "processes {holders:?} still hold {} open",
                self.device.display()
            ));
        }
        if let Err(e) = self.detach() {
            leaks.push(e);
        }
        if self.mounted().is_some() {
            // Never let the temporary directory's removal recurse into a drive that is still mounted.
            leaks.push(format!(
                "{} is still mounted; {} is left in place",
                self.mount_point.display(),
                self.dir().display()
            ));
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
        if leaks.is_empty() {
            return;
        }
        let msg = format!(
            "loop-device bench: {} leaked: {}",
            self.label,
            leaks.join("; ")
        );
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

const BLOCK: u64 = 4096;
const CHUNK: usize = 1 << 20;

/// A zeroed heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, BLOCK as usize).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocate {len} bytes");
        AlignedBuf { ptr, layout }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to layout.size() initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}
