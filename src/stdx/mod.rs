//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, reading and writing
//! below a directory without being redirected ([`fs`]), and friends.

mod escape;
pub mod fs;
mod owners;

pub use escape::{show, show_str};
pub use owners::{gid_of_name, uid_of_name};
