//! Small shared helpers with one home (rust-analyzer's `stdx`): the escaper for untrusted names, reading and writing
//! below a directory without being redirected ([`fs`]), output that never panics ([`out`]), secrets shown safely,
//! sizes, durations and counts for people (`human`), read-change-write of a state file by one run at a time
//! ([`locked`]), the one hashing reader (`hash`), and friends.

mod escape;
pub mod fs;
mod hash;
mod human;
pub mod locked;
pub mod out;
mod owners;
pub mod run;
mod secret;
#[cfg(test)]
pub(crate) mod skip;

pub use escape::{shell_word, show, show_path, show_str};
pub use hash::{HashingReader, hash_into, sha256_reader};
pub use human::{MINUTE, NAMED, age_short, age_words, bytes, count, counted, duration, eta, table};
pub use owners::{gid_of_name, home_of_name, uid_of_name};
pub use run::{another_dbackup, find_program, process_gone, run_bounded};
pub use secret::{holds_secret_key, key_file_exposed, redact_argv, redact_url, redact_url_in};
