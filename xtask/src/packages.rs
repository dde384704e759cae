//! The system packages the project needs (one list, [`PACKAGES`]), and [`ensure_packages`], which installs the
//! missing ones with apt-get when root and otherwise says exactly what to install.

use std::sync::atomic::{AtomicBool, Ordering};

use xshell::{Shell, cmd};

use crate::util::{find_program, heading, is_root};

/// What a package is needed for; each task asks for the packages of its own purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `cargo xtask test` and `cargo xtask itest`: every test, including the loop-device bench.
    Test,
    /// `cargo xtask demo`.
    Demo,
    /// `cargo xtask bench ...`.
    Bench,
}

use Need::{Bench, Demo, Test};

/// A Debian package, and the program whose presence shows it is installed.
#[derive(Debug)]
pub struct Package {
    /// The name given to `apt-get install`.
    pub deb: &'static str,
    /// A program the package provides (searched on `$PATH` and in the sbin directories), or, for a package without
    /// one (fonts), an absolute path of a file it installs.
    pub program: &'static str,
    /// Why dbackup needs it, printed when it is missing.
    pub why: &'static str,
    pub needed_by: &'static [Need],
}

/// Every system package the project uses. Later issues add theirs here.
pub const PACKAGES: &[Package] = &[
    Package {
        deb: "rsync",
        program: "rsync",
        why: "collect copies with rsync",
        needed_by: &[Test, Demo, Bench],
    },
    Package {
        deb: "exfat-fuse",
        program: "mount.exfat-fuse",
        why: "mounts the emulated exFAT drive (this kernel has no exfat module)",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "exfatprogs",
        program: "mkfs.exfat",
        why: "formats the emulated T9 drive",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "jq",
        program: "jq",
        why: "the restoration guide's no-dbackup rebuild of an incremental chain reads the indexes with jq",
        needed_by: &[Test],
    },
    Package {
        deb: "age",
        program: "age",
        why: "interop of encrypted backups with Debian's age (age -d of dbackup's archives, age -e read back); \
              the restoration guide's no-dbackup path; bench restore's age -d | tar",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "xfsprogs",
        program: "mkfs.xfs",
        why: "xfs loop-device tests",
        needed_by: &[Test],
    },
    Package {
        deb: "btrfs-progs",
        program: "mkfs.btrfs",
        why: "btrfs loop-device tests",
        needed_by: &[Test],
    },
    Package {
        deb: "e2fsprogs",
        program: "mkfs.ext4",
        why: "ext4 loop-device tests; bench image's ext4 filesystem",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "util-linux",
        program: "losetup",
        why: "loop devices and mounts",
        needed_by: &[Test],
    },
    Package {
        deb: "acl",
        program: "setfacl",
        why: "tests that ACLs survive a backup",
        needed_by: &[Test],
    },
    Package {
        deb: "attr",
        program: "setfattr",
        why: "tests that xattrs survive a backup",
        needed_by: &[Test],
    },
    Package {
        deb: "libarchive-tools",
        program: "bsdtar",
        why: "archives made by bsdtar (sparse files among them) must restore through the scan path as GNU tar \
              extracts them, and bsdtar extracts dbackup's sparse members",
        needed_by: &[Test],
    },
    Package {
        deb: "partclone",
        program: "partclone.extfs",
        why: "partition images (dbackup image create/restore, partclone.chkimg) and their tests and bench",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "fdisk",
        program: "sfdisk",
        why: "partition tables: the recovery kit (sfdisk --dump), image restore, the GPT disks of the image tests",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "dosfstools",
        program: "mkfs.fat",
        why: "the ESP (vfat) of the image tests, and fsck.fat after a restore; formats the emulated FAT32 stick",
        needed_by: &[Test],
    },
    Package {
        deb: "fusefat",
        program: "fusefat",
        why: "mounts the emulated FAT32 stick read-write (FUSE; this kernel has no vfat module)",
        needed_by: &[Test],
    },
    Package {
        deb: "zstd",
        program: "zstd",
        why: "bench image: the hand pipeline partclone | zstd | tee | sha256sum it is measured against",
        needed_by: &[Bench],
    },
    Package {
        deb: "nix-bin",
        program: "nix-instantiate",
        why: "parses and evaluates nix/ (lib.nix equals `dbackup systemd render`)",
        needed_by: &[Test],
    },
    Package {
        deb: "systemd",
        program: "systemd-analyze",
        why: "verifies the rendered units and their calendar values; systemd-escape",
        needed_by: &[Test],
    },
    Package {
        deb: "udev",
        program: "udevadm",
        why: "udevadm test of the rendered rule on a loop device",
        needed_by: &[Test],
    },
    Package {
        deb: "chromium",
        program: "chromium",
        why: "renders the status page in a real browser: the DOM after its script ran (STALE banner), a screenshot",
        needed_by: &[Test],
    },
    Package {
        deb: "fonts-dejavu-core",
        program: "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        why: "a font for headless Chromium's screenshot of the status page",
        needed_by: &[Test],
    },
    Package {
        deb: "man-db",
        program: "man",
        why: "systemd-analyze verify resolves the units' Documentation=man:dbackup(1)",
        needed_by: &[Test],
    },
    Package {
        deb: "strace",
        program: "strace",
        why: "the kill sweep stops a run at one system call (strace -e inject=...:signal=KILL) for the steps too \
              short to catch otherwise",
        needed_by: &[Test],
    },
    Package {
        deb: "tmux",
        program: "tmux",
        why: "the progress test draws collect's progress line in a 60-column terminal and reads the screen",
        needed_by: &[Test],
    },
    Package {
        deb: "python3-venv",
        program: "/usr/lib/python3.11/ensurepip/__init__.py",
        why: "the venv moto[server] is installed into (the cloud tests' Object Lock server); Debian 12's python3.11",
        needed_by: &[Test, Bench],
    },
    Package {
        deb: "rclone",
        program: "rclone",
        why: "bench cloud: the plain copy dbackup's upload is compared with",
        needed_by: &[Bench],
    },
    Package {
        deb: "restic",
        program: "restic",
        why: "bench cloud: the one-file restore dbackup's is compared with",
        needed_by: &[Bench],
    },
];

/// `apt-get update` runs at most once per `cargo xtask` process.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Whether the package's program (or file) is there.
fn installed(p: &Package) -> bool {
    if p.program.starts_with('/') {
        std::path::Path::new(p.program).is_file()
    } else {
        find_program(p.program).is_some()
    }
}

fn missing(need: Need) -> Vec<&'static Package> {
    PACKAGES
        .iter()
        .filter(|p| p.needed_by.contains(&need) && !installed(p))
        .collect()
}

fn names(packages: &[&Package]) -> Vec<&'static str> {
    packages.iter().map(|p| p.deb).collect()
}

/// Makes sure the packages `need` calls for are installed: as root, installs the missing ones with apt-get;
/// otherwise prints what to install. Never fails: the task goes on with what can run.
/// Returns the packages still missing.
pub fn ensure_packages(sh: &Shell, need: Need) -> Vec<&'static Package> {
    let wanted: Vec<&str> = PACKAGES
        .iter()
        .filter(|p| p.needed_by.contains(&need))
        .map(|p| p.deb)
        .collect();
    let absent = missing(need);
    if absent.is_empty() {
        eprintln!("system packages present: {}", wanted.join(", "));
        return absent;
    }
    heading(&format!(
        "system packages missing: {}",
        names(&absent).join(" ")
    ));
    if !is_root() {
        explain_missing(&absent, "not running as root, so nothing was installed");
        return absent;
    }
    if find_program("apt-get").is_none() {
        explain_missing(
            &absent,
            "apt-get not found (not a Debian-like system?), so nothing was installed",
        );
        return absent;
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst)
        && let Err(e) = cmd!(sh, "apt-get update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
    {
        eprintln!("warning: apt-get update failed ({e}); trying the install anyway");
    }
    let debs = names(&absent);
    if let Err(e) = cmd!(sh, "apt-get install -y --no-install-recommends {debs...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
    {
        eprintln!("warning: apt-get install failed: {e}");
    }
    let still = missing(need);
    if !still.is_empty() {
        explain_missing(&still, "apt-get did not install them");
    }
    still
}

fn explain_missing(absent: &[&Package], reason: &str) {
    eprintln!("missing system packages ({reason}):");
    for p in absent {
        eprintln!(
            "  {:<12} provides {:<18} needed for: {}",
            p.deb, p.program, p.why
        );
    }
    eprintln!(
        "install them with:\n  sudo apt-get install -y {}",
        names(absent).join(" ")
    );
    eprintln!("continuing with what can run; steps that need them will fail or skip.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_needs_rsync() {
        for need in [Test, Demo, Bench] {
            assert!(
                PACKAGES
                    .iter()
                    .any(|p| p.deb == "rsync" && p.needed_by.contains(&need)),
                "{need:?}"
            );
        }
    }

    #[test]
    fn the_tests_and_benches_get_debians_age() {
        let age = PACKAGES
            .iter()
            .find(|p| p.deb == "age")
            .expect("age listed");
        assert_eq!(age.program, "age");
        assert!(age.needed_by.contains(&Test) && age.needed_by.contains(&Bench));
    }

    #[test]
    fn the_tests_get_a_browser_and_a_font() {
        for deb in ["chromium", "fonts-dejavu-core"] {
            let p = PACKAGES.iter().find(|p| p.deb == deb).expect("listed");
            assert!(p.needed_by.contains(&Test), "{deb}");
        }
    }

    #[test]
    fn package_names_are_unique() {
        let mut debs: Vec<_> = PACKAGES.iter().map(|p| p.deb).collect();
        debs.sort();
        debs.dedup();
        assert_eq!(debs.len(), PACKAGES.len());
    }
}
