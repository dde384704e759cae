//! The cloud room: S3-compatible and Backblaze B2 destinations on Apache OpenDAL. Only this module talks to
//! OpenDAL (and to `reqsign`, the signer under it); everyone else goes through [`Store`].
//!
//! - `credentials.rs`: where keys come from (a `credentials_file`, the environment, the AWS shared files); held as
//!   secrets that never print.
//! - `transport.rs`: the HTTP transport under OpenDAL: SigV4 signing done here (so a write can carry Object Lock
//!   headers), request counts, the trust roots (`AWS_CA_BUNDLE` honoured).
//! - `patience.rs`: how long a request waits on a silent server (`timeout_seconds` without progress, not in all),
//!   and a signal heeded while it waits.
//! - `store.rs`: [`Store`]: streamed multipart uploads, ranged reads, listing, deletion, unfinished uploads,
//!   locked writes, storage classes; retries, timeouts and the bandwidth limit (`settings::bwlimit`) as layers.
//! - `error.rs`: errors people can act on, scrubbed of every secret.
//! - `check.rs`: `dbackup cloud check`.
//! - `sink.rs`: the archive writer's sink for a bucket (streamed, no staging copy).

pub mod check;
pub mod credentials;
pub mod error;
mod patience;
pub mod sink;
pub mod store;
mod transport;

pub use error::CloudError;
pub use store::{ObjectClass, Objects, Store, Unfinished, Upload};
// What only the unit tests use.
#[cfg(test)]
pub use {error::Failure, transport::Requests};

#[cfg(test)]
pub(crate) mod tests;
