//! The one integration-test binary: runs the real `dbackup` binary through a small builder.
//!
//! ```ignore
//! let t = Test::new().config(r#"{ "backup_root": "{root}", "backup_sets": [...] }"#);
//! t.cmd().args(["collect"]).status(0);
//! ```

mod harness;

mod backup;
mod cli;
mod cloud;
mod collect;
mod config;
mod encryption;
mod encryption_restore;
mod escape;
mod hostile_drive;
mod process;
mod report;
mod restore;
mod status;
mod systemd;
mod t9;
mod t9_attrs;
mod t9_backup;
mod t9_encryption;
mod t9_external;
mod t9_hostile;
mod t9_image;
mod t9_media;
mod t9_restore;
mod t9_udev;
