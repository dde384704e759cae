//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, reading and writing
//! below a directory without being redirected ([`fs`]), and friends.

mod escape;
pub mod fs;
pub mod run;

pub use escape::{show, show_str};
pub use run::{Bounded, find_program, run_bounded};
