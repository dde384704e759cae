//! The external archive writer: a snapshot streamed as tar through a sha256 hasher (and later other stages) onto the drive, with its index.
