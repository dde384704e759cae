//! `cargo xtask bench <what>`: benchmarks, one module per subject, and [`measure`], what they share: repetition,
//! medians, page-cache handling and the result table. Benchmarks never run as part of the tests.

mod cloud;
mod collect;
mod external;
mod find;
mod image;
mod incremental;
pub mod measure;
mod report;
mod restore;
mod sparse;
mod status;
pub mod tree;

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// On one Garage (S3) on 127.0.0.1: dbackup external uploading the tree, encrypted and plain, vs `rclone copyto`
    /// of a tar of it (goal: within 1.2x); one file from the encrypted backup vs `restic restore --include` (goal:
    /// 5x faster; requests and bytes downloaded); an upload's peak memory (goal: under 128 MiB)
    Cloud(cloud::CloudArgs),
    /// dbackup collect vs plain rsync with the same flags: first run and no-change run
    Collect(collect::CollectArgs),
    /// dbackup external (with read-back verification) vs the seed's tar + rsync + sha256sum vs dd, and encrypted
    /// with age vs plain, on an emulated exFAT T9 (root: makes a loop device); and peak memory with 100,000 files.
    /// Then incrementals: full vs incremental external with 1% changed (time, drive bytes) and vs GNU tar -g, the
    /// change detection alone on 100,000 files, one file from the newest of a chain of 10 (time, bytes read from the
    /// drive) vs GNU tar along the chain, peak memory (`--only incremental` runs this half alone)
    ///
    /// Example: cargo xtask bench external --only incremental --reps 3
    External(external::ExternalArgs),
    /// On the emulated exFAT T9 (root): one file restored by dbackup vs `tar -xf`, the whole backup verified by
    /// dbackup vs `sha256sum`, and one file from an encrypted backup by dbackup vs `age -d | tar -xf`
    Restore(restore::RestoreArgs),
    /// dbackup find over 50 drive backups of 100,000 files (their indexes only) vs grep -c over the same index files
    /// and tar -tf over the archives
    Find(find::FindArgs),
    /// dbackup status with 1,000 snapshots and 50 external backups present (goal: under 200 ms)
    Status(status::StatusArgs),
    /// (root) A 1 GiB ext4 partition, 60% used, imaged to the emulated exFAT T9 by dbackup vs `partclone | zstd |
    /// tee | sha256sum` and a read-back (goal: within 1.2x); restored by dbackup vs `zstd -dc | partclone -r`
    Image(image::ImageArgs),
    /// The status page with 1,000 snapshots and 50 external backups present (goal: under 100 ms)
    Report(report::ReportArgs),
    /// A 10 GiB sparse file with 100 MiB of data (and one a tenth of the size with the same data) through dbackup
    /// collect, external and a one-file restore vs GNU tar --sparse (and rsync --sparse): time and space
    Sparse(sparse::SparseArgs),
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Cloud(args) => cloud::run(args),
        BenchCmd::Collect(args) => collect::run(args),
        BenchCmd::External(args) => external::run(args),
        BenchCmd::Restore(args) => restore::run(args),
        BenchCmd::Find(args) => find::run(args),
        BenchCmd::Status(args) => status::run(args),
        BenchCmd::Image(args) => image::run(args),
        BenchCmd::Report(args) => report::run(args),
        BenchCmd::Sparse(args) => sparse::run(args),
    }
}
