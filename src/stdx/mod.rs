//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, and friends.

mod escape;
pub mod run;

pub use escape::{show, show_str};
pub use run::{Bounded, find_program, run_bounded};
