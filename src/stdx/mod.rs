//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, reading and writing
//! below a directory without being redirected ([`fs`]), and friends.

mod escape;
pub mod fs;

pub use escape::{show, show_str};
