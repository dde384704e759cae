//! End-to-end tests of the archive engine against GNU tar, sha256sum and damaged archives.
