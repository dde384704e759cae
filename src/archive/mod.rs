//! The external archive writer: a snapshot streamed as tar through a sha256 hasher (and, for encrypted destinations, age) onto the drive, with its index.
//!
//! A building block of the `external` phase (writing) and of `restore` (reading, verifying). The pieces:
//!
//! - [`scan`] walks a snapshot once (metadata only) and returns an [`ArchivePlan`]: the exact tar length to
//!   expect, for the free-space check, and the few files that have several names inside the snapshot.
//! - [`write_archive`] streams the snapshot as a POSIX pax tar ([`tarfmt`]) into a [`Sink`] (one [`FileSink`],
//!   numbered parts with [`SplitSink`], or any writer with [`WriterSink`]), optionally through a [`Stage`]
//!   (age encryption: [`crypt`]), in [`WRITE_BUFFER`]-sized writes on a writer thread, and writes the [`index`] alongside.
//!   Every byte reaching the drive is hashed as it is written; each file's content is hashed into the index.
//! - [`read_back`] re-reads what was written, past the page cache, and compares hashes.
//! - [`verify_archive`] checks a whole archive against its index (restore `--verify`); [`read_entry`] restores one
//!   file with a single seek through the index; [`ArchiveFiles`] opens a single file or its parts as one stream.
//! - [`xattrs`] reads an entry's extended attributes and ACLs ([`acl`]: their text form) and stores them as GNU
//!   tar does, in `SCHILY.*` pax records; the index records them too.
//! - [`incremental`]: the base an incremental archive is written against and whether an entry changed since.
//! - [`sums`] writes and reads `verification.sha256` the way `sha256sum` does.
//! - [`sparse`] finds files' holes, writes them as GNU PAX 1.0 sparse members and reads every GNU sparse format.
//!
//! Nothing here decides that an archive is good except verification: a failed write leaves files that look like
//! a partial archive, never a complete one (no end-of-archive blocks, no index `end` line).

pub mod acl;
pub mod crypt;
pub mod incremental;
pub mod index;
pub mod readback;
pub mod reader;
pub mod sink;
pub mod sparse;
pub mod sums;
pub mod tarfmt;
pub mod verify;
pub mod writer;
pub mod xattrs;

#[cfg(test)]
mod tests;

pub use crypt::{ArchiveReader, EncryptTo, EncryptionRecord, Keys};
pub use index::{
    ArchiveKind, IndexEnd, IndexEntry, IndexError, IndexHeader, IndexReader, IndexWriter,
    SparseRecord,
};
pub use readback::{ReadBackError, ReadBackMethod, read_back, read_back_in, read_back_in_with};
pub use reader::{ArchiveFiles, PartsReader, ReadError, ReadSeek, Remote, read_entry};
pub use sink::{
    Digest, FAT32_MAX_PART_BYTES, FileSink, Sink, SplitSink, Stage, StageWriter, WRITE_BUFFER,
    WriterSink, WrittenFile,
};
pub use tarfmt::EntryKind;
pub use verify::{
    HardLinkTargets, VerifyError, VerifyProblem, VerifyReport, verify_archive,
    verify_archive_in_chain, verify_archive_with,
};
pub use writer::{
    ArchiveError, ArchiveEstimate, ArchiveOptions, ArchivePlan, ArchiveSummary, NoProgress,
    Progress, Warning, scan, scan_against, scan_both, write_archive,
};
pub use xattrs::Attrs;
