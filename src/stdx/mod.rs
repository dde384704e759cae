//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, reading and writing
//! below a directory without being redirected ([`fs`]), output that never panics ([`out`]), secrets shown safely,
//! and friends.

mod escape;
pub mod fs;
pub mod out;
mod owners;
pub mod run;
mod secret;
#[cfg(test)]
pub(crate) mod skip;

pub use escape::{show, show_path, show_str};
pub use owners::{gid_of_name, uid_of_name};
pub use run::{Bounded, find_program, run_bounded};
pub use secret::{redact_url, redact_url_in};
