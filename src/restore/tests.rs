//! Tests of the restore engine driven by real tar archives and real directories.
