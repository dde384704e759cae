//! The external archive writer: a snapshot streamed as tar through a sha256 hasher (and, for encrypted destinations, age) onto the drive, with its index.
//!
//! A building block of the `external` phase (writing) and of `restore` (reading, verifying). The pieces:
//!
//! - [`scan`] walks a snapshot once (metadata only) and returns an [`ArchivePlan`]: the exact tar length to
//!   expect, for the free-space check, and the few files that have several names inside the snapshot.
//! - [`write_archive`] streams the snapshot as a POSIX pax tar ([`tarfmt`]) into a [`Sink`] (one [`FileSink`],
//!   or numbered parts with [`SplitSink`]), optionally through a [`Stage`]
//!   (age encryption: [`crypt`]), in [`WRITE_BUFFER`](sink::WRITE_BUFFER)-sized writes on a writer thread, and writes the [`index`] alongside.
//!   Every byte reaching the drive is hashed as it is written; each file's content is hashed into the index.
//! - [`read_back`] re-reads what was written, past the page cache, and compares hashes.
//! - [`verify_archive`] checks a whole archive against its index (restore `--verify`); [`ArchiveFiles`] opens a
//!   single file or its parts as one stream, plain or decrypted ([`ArchiveReader`]).
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
mod walk;
pub mod writer;
pub mod xattrs;

#[cfg(test)]
mod tests;

pub use crypt::{EncryptTo, EncryptionRecord, Keys};
pub use index::{ArchiveKind, IndexEntry, IndexReader};
pub use readback::{ReadBackMethod, read_back, read_back_in, read_back_in_with};
pub use reader::{ArchiveFiles, ArchiveReader, ReadSeek, Remote};
pub use sink::{Digest, FileRecord, FileSink, Sink, SplitSink, Stage, WrittenFile};
pub use tarfmt::EntryKind;
pub use verify::{HardLinkTargets, verify_archive, verify_archive_in_chain};
pub use walk::Warning;
pub use writer::{
    ArchiveEstimate, ArchiveOptions, ArchivePlan, ArchiveSummary, NoProgress, Progress, scan,
    scan_both, write_archive,
};
pub use xattrs::Attrs;
// What only the unit tests and the proptests use, under the names they have always had.
#[cfg(test)]
pub use {
    index::{IndexError, IndexHeader},
    readback::ReadBackError,
    reader::{ReadError, read_entry},
    sink::{StageWriter, WRITE_BUFFER},
    verify::{VerifyError, VerifyProblem, VerifyReport, verify_archive_with},
    writer::scan_against,
};
