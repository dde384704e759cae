//! Expansion of `~`, `$VAR` and `${VAR}` in configured paths; an undefined variable is an error naming it.
