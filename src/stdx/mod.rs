//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, output that never
//! panics, secrets shown safely, and friends.

mod escape;
pub mod out;
mod secret;
#[cfg(test)]
pub(crate) mod skip;

pub use escape::{show, show_path, show_str};
pub use secret::{redact_url, redact_url_in};
