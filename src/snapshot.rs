//! Local snapshots under the backup root: their names, listing, metadata files, `latest` links and in-progress directories.
