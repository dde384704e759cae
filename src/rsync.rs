//! Running rsync: the command line for a set, its exit codes, its progress and statistics output.
