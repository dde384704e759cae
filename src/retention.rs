//! Retention as a pure function: (snapshots, policy, now) -> keep or remove, each with its reasons. Does no IO.
