//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, and friends.

mod escape;
mod owners;

pub use escape::{show, show_str};
pub use owners::{gid_of_name, uid_of_name};
