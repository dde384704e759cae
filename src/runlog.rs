//! The run log: one JSON line per run appended under `$XDG_STATE_HOME/dbackup/`.
