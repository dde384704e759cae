//! A deterministic benchmark tree: many small files in nested directories, some big files, a few hard links and
//! symlinks, fixed mtimes. The same [`TreeSpec`] gives the same tree on every machine; an existing tree with the
//! same spec is reused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::util::{Rng, human_bytes, remove_dir_if_exists};

/// What to generate. Sizes are adjustable from the command line of each bench.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TreeSpec {
    /// Number of small files (0-64 KiB, most under 4 KiB), 100 per directory, three levels deep
    #[arg(long, default_value_t = 20_000)]
    pub small_files: u64,
    /// Number of big files
    #[arg(long, default_value_t = 24)]
    pub big_files: u64,
    /// Smallest big file, in MiB
    #[arg(long, default_value_t = 1)]
    pub big_min_mib: u64,
    /// Largest big file, in MiB
    #[arg(long, default_value_t = 64)]
    pub big_max_mib: u64,
    /// Seed of the generator: another seed, another tree of the same shape
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What was generated.
#[derive(Debug, Clone, Copy)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
}

impl TreeSpec {
    fn fingerprint(&self) -> String {
        // Bump the version when the generator changes, so old trees are regenerated.
        format!(
            "v1 small={} big={} min={} max={} seed={}",
            self.small_files, self.big_files, self.big_min_mib, self.big_max_mib, self.seed
        )
    }

    pub fn describe(&self, stats: TreeStats) -> String {
        format!(
            "{} small + {} big files ({}-{} MiB), {} files, {} in total",
            self.small_files,
            self.big_files,
            self.big_min_mib,
            self.big_max_mib,
            stats.files,
            human_bytes(stats.bytes)
        )
    }
}

/// Creates the tree at `dir` (reusing it when `dir` already holds a tree of the same spec) and returns its size.
pub fn ensure(dir: &Path, spec: &TreeSpec) -> Result<TreeStats> {
    anyhow::ensure!(
        spec.big_min_mib <= spec.big_max_mib,
        "--big-min-mib must not exceed --big-max-mib"
    );
    let marker = marker_path(dir);
    if dir.is_dir()
        && std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == spec.fingerprint())
    {
        let stats = measure(dir);
        eprintln!(
            "reusing the benchmark tree {} ({})",
            dir.display(),
            spec.describe(stats)
        );
        return Ok(stats);
    }
    remove_dir_if_exists(dir)?;
    let _ = std::fs::remove_file(&marker);
    eprintln!("generating the benchmark tree {} ...", dir.display());
    let stats = generate(dir, spec)
        .with_context(|| format!("cannot generate the tree in {}", dir.display()))?;
    std::fs::write(&marker, spec.fingerprint() + "\n")?;
    eprintln!("generated: {}", spec.describe(stats));
    Ok(stats)
}

/// The marker lives beside the tree, so it is never part of what is backed up.
fn marker_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".spec");
    dir.with_file_name(name)
}

fn generate(dir: &Path, spec: &TreeSpec) -> Result<TreeStats> {
    let mut rng = Rng::new(spec.seed);
    let mut stats = TreeStats { files: 0, bytes: 0 };
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut buf = vec![0u8; 1 << 20];

    for k in 0..spec.small_files {
        let path = dir.join(format!(
            "small/{:03}/{:02}/file-{k:06}.dat",
            k / 1000,
            (k / 100) % 10
        ));
        // Most files are tiny, like sources and configs; some are tens of KiB.
        let len = if rng.range(0, 9) < 7 {
            rng.range(0, 4096)
        } else {
            rng.range(4097, 65536)
        } as usize;
        rng.fill(&mut buf[..len]);
        write_file(&path, &[&buf[..len]], epoch + Duration::from_secs(k))?;
        stats.files += 1;
        stats.bytes += len as u64;
        // A hard link every 1000 files and a symlink every 500, so -H and symlink handling are part of the cost.
        if k % 1000 == 999 {
            std::fs::hard_link(&path, path.with_extension("hardlink"))?;
            stats.files += 1;
            stats.bytes += len as u64;
        }
        if k % 500 == 499 {
            std::os::unix::fs::symlink(path.file_name().unwrap(), path.with_extension("symlink"))?;
        }
    }

    for k in 0..spec.big_files {
        let path = dir.join(format!("big/{:02}/blob-{k:03}.bin", k % 4));
        let len = rng.range(spec.big_min_mib, spec.big_max_mib) << 20;
        std::fs::create_dir_all(path.parent().unwrap())?;
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.set_modified(epoch)?;
        stats.files += 1;
        stats.bytes += len;
    }
    Ok(stats)
}

fn write_file(path: &Path, parts: &[&[u8]], mtime: SystemTime) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut f = std::fs::File::create(path)?;
    for p in parts {
        f.write_all(p)?;
    }
    f.set_modified(mtime)?;
    Ok(())
}

/// Regular files (each hard link counted) and their bytes under `dir`.
pub fn measure(dir: &Path) -> TreeStats {
    let files = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file());
    files.fold(TreeStats { files: 0, bytes: 0 }, |s, e| TreeStats {
        files: s.files + 1,
        bytes: s.bytes + e.metadata().map(|m| m.len()).unwrap_or(0),
    })
}

/// `files` files of 0-255 bytes in directories of 100 (reused when it exists with the same count).
pub fn ensure_memory_tree(dir: &Path, files: u64) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.is_file() {
        return Ok(());
    }
    remove_dir_if_exists(dir)?;
    eprintln!("generating {files} small files in {} ...", dir.display());
    for k in 0..files {
        let sub = dir.join(format!("d{:04}", k / 100));
        if k % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = (k * 7919 % 256) as usize;
        std::fs::write(sub.join(format!("file-{k:06}")), vec![b'x'; len])?;
    }
    std::fs::write(&marker, "")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_gives_the_same_tree() {
        let spec = TreeSpec {
            small_files: 1200,
            big_files: 2,
            big_min_mib: 1,
            big_max_mib: 2,
            seed: 3,
        };
        let base = std::env::temp_dir().join(format!("xtask-tree-test-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        let stats = ensure(&a, &spec).unwrap();
        ensure(&b, &spec).unwrap();
        assert_eq!(
            stats.files,
            1200 + 1 + 2,
            "small files, one hard link, big files"
        );
        let measured = measure(&a);
        assert_eq!((measured.files, measured.bytes), (stats.files, stats.bytes));
        for rel in ["small/000/05/file-000512.dat", "big/01/blob-001.bin"] {
            assert_eq!(
                std::fs::read(a.join(rel)).unwrap(),
                std::fs::read(b.join(rel)).unwrap(),
                "{rel}"
            );
        }
        assert!(a.join("small/000/09/file-000999.hardlink").is_file());
        assert!(
            a.join("small/000/04/file-000499.symlink")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
