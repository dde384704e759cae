//! The collect phase: a pure plan per set (`plan.rs`) and the step that executes it (`exec.rs`).
