//! Helpers shared by every task: the shell rooted at the workspace, paths, root detection, finding programs,
//! building the binary, headings and human-readable sizes and times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// A shell whose current directory is the workspace root. Commands run with `cmd!` are echoed (`$ cargo ...`)
/// on stderr before they run, unless marked `.quiet()`.
pub fn shell() -> Result<Shell> {
    let sh = Shell::new().context("cannot create a shell")?;
    sh.change_dir(project_root());
    Ok(sh)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR` and `.cargo/config.toml`).
pub fn target_dir(sh: &Shell) -> Result<PathBuf> {
    let meta = cmd!(sh, "cargo metadata --format-version 1 --no-deps")
        .quiet()
        .read()
        .context("cargo metadata failed")?;
    let meta: serde_json::Value =
        serde_json::from_str(&meta).context("cargo metadata printed something other than JSON")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Which build of the `dbackup` binary a task uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// Builds the `dbackup` binary and returns its path.
pub fn build_dbackup(sh: &Shell, profile: Profile) -> Result<PathBuf> {
    let (flag, dir) = match profile {
        Profile::Debug => (None, "debug"),
        Profile::Release => (Some("--release"), "release"),
    };
    cmd!(sh, "cargo build {flag...} --bin dbackup")
        .run()
        .context("building dbackup failed")?;
    let bin = target_dir(sh)?.join(dir).join("dbackup");
    anyhow::ensure!(
        bin.is_file(),
        "cargo build succeeded but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

/// Whether this is CI (`CI` set to a true value: `true`, `1`, `yes`): a skipped test or check is a failure there.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// True when running as root (uid 0): apt-get, loop devices, mounts and dropping caches are possible.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Directories searched for programs: `$PATH`, then the sbin directories a non-root `$PATH` often lacks
/// (`mkfs.*`, `losetup` and `mount.*` live there).
fn program_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let extra = PathBuf::from(extra);
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    dirs
}

/// The full path of an executable program, if it is installed.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    program_dirs().into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether a cargo subcommand (`fmt`, `clippy`) is installed.
pub fn has_cargo_subcommand(sh: &Shell, sub: &str) -> bool {
    cmd!(sh, "cargo {sub} --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// Prints a section heading on stderr, where xshell echoes the commands it runs.
pub fn heading(text: &str) {
    eprintln!("\n==> {text}");
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2.31s`, `1m 05s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Removes a directory tree if it exists; hard-linked snapshot trees can be large, so this says what it removes.
pub fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// Sleeps until the wall clock enters a new second: snapshot names have one-second resolution, so two runs
/// meant to make two snapshots start in different seconds.
pub fn wait_for_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 20_000_000,
    ));
}

/// A small deterministic pseudo-random generator (xorshift64*) for sample and benchmark trees: the same seed
/// gives the same files on every machine, and the bytes do not compress.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_switch_to_minutes() {
        assert_eq!(human_duration(Duration::from_millis(2310)), "2.31s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m 05s");
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (vec![0; 1001], vec![0; 1001]);
        Rng::new(7).fill(&mut a);
        Rng::new(7).fill(&mut b);
        assert_eq!(a, b);
        Rng::new(8).fill(&mut b);
        assert_ne!(a, b);
        let mut r = Rng::new(1);
        assert!(
            (0..1000)
                .map(|_| r.range(3, 5))
                .all(|n| (3..=5).contains(&n))
        );
    }

    #[test]
    fn sh_is_found_and_nonsense_is_not() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-dbackup-xtask").is_none());
    }
}
