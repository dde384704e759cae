//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, and friends.

mod escape;

pub use escape::{show, show_str};
