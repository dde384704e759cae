//! The one integration-test binary: runs the real `dbackup` binary through a small builder.
//!
//! ```ignore
//! let t = Test::new().config(r#"{ "backup_root": "{root}", "backup_sets": [...] }"#);
//! t.cmd().args(["collect"]).status(0);
//! ```

mod fixtures;
mod harness;

mod backup;
mod browse;
mod cli;
mod cloud;
mod cloud_b2;
mod cloud_backup;
mod cloud_chain;
mod cloud_lock;
mod cloud_resume;
mod collect;
mod config;
mod config_safety;
mod encryption;
mod encryption_chain;
mod encryption_restore;
mod escape;
mod exclusions;
mod hostile_drive;
mod if_changed_attrs;
mod incremental;
mod install;
mod json;
mod linked_symlinks;
mod loopdev_attrs;
mod loopdev_backup;
mod loopdev_chain;
mod loopdev_chain_faults;
mod loopdev_encryption;
mod loopdev_external;
mod loopdev_fat32;
mod loopdev_hostile;
mod loopdev_image;
mod loopdev_image_runs;
mod loopdev_media;
mod loopdev_restore;
mod loopdev_rotation;
mod loopdev_udev;
mod messages;
mod process;
mod progress;
mod report;
mod restore;
mod restore_hardening;
mod rotation;
mod sparse;
mod status;
mod systemd;
mod tarcompat;
