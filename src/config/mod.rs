//! The config file's types (serde + JSON Schema), and its errors. Loading lives in `load.rs`,
//! the built-in default in `default.rs`, the schema in `schema.rs`.
//!
//! These structs mirror the file as written: paths are unexpanded strings. [`crate::settings`]
//! turns them into validated, expanded settings.

pub mod default;
pub mod init;
pub mod load;
pub mod schema;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, ExitCoded};

/// A dbackup configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dbackup configuration")]
pub struct Config {
    /// The URL or path of this schema, for editors. Ignored by dbackup.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,

    /// Where snapshots are kept. `~`, `$VAR` and `${VAR}` expand. Default: `$DBACKUP`, else `~/.local/share/dbackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<String>,

    /// What to back up: each set becomes its own series of snapshots and its own archive on the drive.
    #[schemars(length(min = 1))]
    pub backup_sets: Vec<BackupSet>,

    /// How often each phase runs.
    #[serde(default)]
    pub schedule: Schedule,

    /// How many backups to keep.
    #[serde(default)]
    pub retention: Retention,

    /// Removable drives (or other mounted filesystems) that receive the external backups.
    #[serde(default)]
    pub destinations: Vec<Destination>,

    /// How the external phase picks destinations.
    #[serde(default)]
    pub external: ExternalOptions,

    /// Encrypt the archives written to every destination with age (a destination's own `encryption` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,

    /// Who hears about successes, failures and missing drives.
    #[serde(default)]
    pub notifications: Notifications,

    /// The recovery kit and partition images written into every external backup's `system/` folder.
    #[serde(default)]
    pub image: ImageConfig,

    /// The status page: kept up to date after every run, written on each drive, served by `dbackup serve`.
    #[serde(default)]
    pub report: Report,
}

/// The full-system part of each external backup (`backups/<stamp>/system/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Write the recovery kit into every external backup: partition tables, `lsblk`, `blkid`, fstab, crypttab, LVM
    /// metadata, boot loader facts, the package selection (Debian) or system configuration (NixOS), and a generated
    /// `RESTORE-SYSTEM.md`. Read-only, small; encrypted like the sets.
    #[serde(default = "default_true")]
    pub kit: bool,
    /// Partitions imaged with partclone into every external backup (`/dev/nvme0n1p1`, `/dev/disk/by-uuid/...`).
    /// A filesystem mounted read-write is not imaged (a warning): list the ESP, /boot, or partitions that are
    /// unmounted or mounted read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            kit: true,
            devices: Vec::new(),
        }
    }
}

/// One backup set: a name and the paths it copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSet {
    /// A safe file name: letters, digits, `_`, `-` and `.`, not starting with `.` or `-`. Names the snapshots (`<name>-<stamp>`).
    #[schemars(regex(pattern = schema::SAFE_NAME_PATTERN))]
    pub name: String,

    /// Files or directories to copy: absolute after expanding `~`, `$VAR` and `${VAR}`. A symlinked source is resolved.
    /// A missing source is reported by `collect`, not here.
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,

    /// How the set is copied. Only `rsync` exists.
    #[serde(default)]
    pub method: Method,

    /// What not to copy: rsync patterns that match anywhere (`*.log`, `tmp/*`), or absolute/`~`/`$VAR` paths inside
    /// one of the sources (`~/.config/Code/Cache/*`), which exclude exactly that place. A leading `!` makes an
    /// include (`!keep.log`): rules are read in order like rsync's filter rules and the first that matches wins,
    /// so an include goes before the exclude it overrides (`["!keep.log", "*.log"]`).
    #[serde(default)]
    pub exclusions: Vec<String>,

    /// Files of more exclusions, one per line (`#` and `;` start comments; `!pattern` or `+ pattern` includes,
    /// `- pattern` excludes), read after `exclusions`. `~`, `$VAR` and `${VAR}` expand in the file names; each file
    /// must exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_from: Vec<String>,

    /// Skip directories holding a valid `CACHEDIR.TAG` (a file starting with `Signature: 8a477f597d28d172789f06886806bc55`),
    /// as `tar --exclude-caches`, restic and borg do. The directory is left out whole, the tag too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,

    /// Skip directories holding a file of one of these names (`.nobackup`), whatever it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,

    /// Extra rsync options, after dbackup's own, from an allow-list of those that cannot change what rsync deletes,
    /// where it writes or which files it copies: `--bwlimit=RATE`, `--max-size=SIZE`, `--min-size=SIZE`,
    /// `--one-file-system`, `--exclude-from=FILE`, `--filter=merge FILE` or `--filter=dir-merge NAME`, `-F`,
    /// `--whole-file`, `--sparse`, `--no-hard-links`, `--no-acls`, `--no-xattrs`, `--no-numeric-ids`, `--no-owner`,
    /// `--no-group`. Values follow `=` or come as the next item; `~` and `$VAR` expand in them; a named file must exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rsync_args: Vec<String>,
}

/// How a set is copied: `rsync` (into a hard-linked, `--link-dest` snapshot) is the only method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Rsync,
}

/// How often each phase runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// How often `collect` runs (the systemd timer uses it).
    #[serde(default = "Schedule::default_incremental")]
    pub incremental: Incremental,
    /// How often a collect compares file contents (`rsync --checksum`) instead of trusting size and mtime.
    #[serde(default = "Schedule::default_full")]
    pub full: Full,
    /// How often the external phase copies to the drive.
    #[serde(default = "Schedule::default_external")]
    pub external: ExternalSchedule,
}

impl Schedule {
    fn default_incremental() -> Incremental {
        Incremental::Daily
    }
    fn default_full() -> Full {
        Full::Weekly
    }
    fn default_external() -> ExternalSchedule {
        ExternalSchedule::Weekly
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            incremental: Schedule::default_incremental(),
            full: Schedule::default_full(),
            external: Schedule::default_external(),
        }
    }
}

/// How often `collect` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Incremental {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

/// How often a collect compares contents (`rsync --checksum`); `never` trusts size and mtime always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Full {
    Daily,
    Weekly,
    Monthly,
    Never,
}

/// How often the external phase runs: `always` copies on every run (and whenever the drive appears),
/// `manual` only on `dbackup external`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalSchedule {
    Daily,
    Weekly,
    Monthly,
    Always,
    Manual,
}

/// How many backups to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Local snapshots per set: a count (keep the newest N) or a policy (`last`, `hourly`, `daily`, ...).
    #[serde(default)]
    pub local: RetentionForm,
    /// External backups per destination (a destination's own `retention` wins): a count (keep the newest N
    /// verified restore points) or a policy (`last`, `hourly`, `daily`, ...). A backup that a kept incremental
    /// depends on is always kept with it.
    #[serde(default = "Retention::default_external")]
    pub external: RetentionForm,
    /// When a new backup does not fit on a destination, the oldest restore points are removed for space first, but
    /// never below this many verified ones (and never the newest); a destination's own `keep_at_least` wins.
    #[serde(default = "Retention::default_keep_at_least")]
    #[schemars(range(min = 1))]
    pub keep_at_least: u32,
}

impl Retention {
    fn default_external() -> RetentionForm {
        RetentionForm::Count(5)
    }

    fn default_keep_at_least() -> u32 {
        2
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            local: RetentionForm::default(),
            external: Retention::default_external(),
            keep_at_least: Retention::default_keep_at_least(),
        }
    }
}

/// Retention, local or external: a plain count, or a time-bucketed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RetentionForm {
    /// Keep the newest N (complete snapshots; on a destination, verified restore points).
    Count(#[schemars(range(min = 1))] u32),
    /// Keep the newest `last`, plus the newest of each of the last `hourly` hours, `daily` days, ...
    Policy(RetentionPolicy),
}

impl Default for RetentionForm {
    fn default() -> Self {
        RetentionForm::Count(7)
    }
}

/// A time-bucketed retention policy; a snapshot is kept when any rule keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    /// Keep the newest of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    /// Keep the newest of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Keep the newest of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// Keep the newest of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    /// Keep the newest of each of the last N years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

impl RetentionPolicy {
    /// `{"last": n}`: what a plain count means.
    pub fn last(n: u32) -> RetentionPolicy {
        RetentionPolicy {
            last: Some(n),
            ..Default::default()
        }
    }
}

/// A place that receives external backups: a removable drive (or any mounted filesystem, the default kind), or a
/// cloud bucket (`"kind": "s3"` or `"b2"`). Cloud credentials never go in this file: see `credentials_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// A safe file name for this destination, recorded on the drive in its marker file.
    #[schemars(regex(pattern = schema::SAFE_NAME_PATTERN))]
    pub name: String,
    /// `drive` (the default): a mounted filesystem at `path`; `s3`: an S3-compatible bucket (AWS, Garage, MinIO,
    /// Backblaze B2's S3 endpoint, ...); `b2`: Backblaze B2's native API.
    #[serde(default, skip_serializing_if = "DestinationKind::is_drive")]
    pub kind: DestinationKind,
    /// A drive's mount point, e.g. `/media/payne/T9`: absolute after expanding `~`, `$VAR` and `${VAR}`. Drives only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Higher is preferred when `external.mode` is `first`.
    #[serde(default)]
    pub priority: i32,
    /// The filesystem UUID the drive must have (as `blkid` shows it). Drives only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    /// The filesystem label the drive must have. Drives only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_label: Option<String>,
    /// Which verified backups to keep on this destination, in the forms of `retention.external` (default: that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionForm>,
    /// Space-aware rotation never leaves fewer verified restore points than this here (default:
    /// `retention.keep_at_least`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_at_least: Option<u32>,
    /// Refuse to write unless `path` is the root of a mounted filesystem (default true). Drives only.
    #[serde(default = "default_true")]
    pub require_mount: bool,
    /// Encrypt this destination's archives with age (replaces the top-level `encryption`). A cloud destination
    /// without encryption is refused unless `allow_unencrypted` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// When this destination is written, replacing `schedule.external` for it (a cloud bucket `weekly` while the
    /// drive is written whenever it is plugged in, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ExternalSchedule>,

    /// Cloud: the service's URL (`https://s3.eu-central-1.amazonaws.com`, `http://127.0.0.1:3900`). Default for
    /// `s3`: AWS (`https://s3.<region>.amazonaws.com`); `b2` has no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Cloud: the bucket's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `b2`: the bucket's id (B2's native API addresses buckets by id; `b2 bucket get NAME` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_id: Option<String>,
    /// Cloud: a folder in the bucket under which everything is written (`backups/` goes below it), e.g.
    /// `dbackup/laptop`. Letters, digits, `_`, `-`, `.`, separated by `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `s3`: the signing region (default `us-east-1`; AWS needs the bucket's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `s3`: address the bucket in the path (`endpoint/bucket/key`) rather than as a host name
    /// (`bucket.endpoint/key`). Default: path style with an `endpoint`, host style on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// `s3`: the profile of the AWS shared credentials and config files to use (default `$AWS_PROFILE`, else
    /// `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Cloud: a file (mode 0600, refused when others can read it) holding this destination's keys, in the format
    /// of `~/.aws/credentials`: `aws_access_key_id` and `aws_secret_access_key` (`s3`), or
    /// `b2_application_key_id` and `b2_application_key` (`b2`). Without it: `s3` reads `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, then the shared credentials and config files; `b2` reads `B2_APPLICATION_KEY_ID` and
    /// `B2_APPLICATION_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// Cloud: upload plain (unencrypted) archives. Refused unless true: a bucket is someone else's computer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unencrypted: bool,
    /// Cloud: the storage class of each kind of object. Archives may go to a cold class; metadata (indexes,
    /// `backup.json`, sums) is read by every listing and restore and stays in a standard class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClasses>,
    /// Cloud: write every object with a compliance-mode retention of this many days (S3 Object Lock): nobody, not
    /// even this machine's key, can delete or overwrite it before then. The bucket must have Object Lock enabled;
    /// `dbackup cloud check` tells whether it really enforces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub object_lock_days: Option<u32>,
    /// Cloud: the upload bandwidth limit, in bytes per second with a K, M or G suffix (1024-based, as rsync's
    /// `--bwlimit`): `"2M"`, or `{ "rate": "2M", "window": "08:00-23:00" }` to limit only during those local
    /// hours (full speed at night).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<Bwlimit>,
    /// Cloud: how often a failed request is retried, with exponential backoff and jitter (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// Cloud: seconds a request may wait for the server before it is retried (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
}

/// What a destination is: a drive, an S3-compatible bucket, or a Backblaze B2 bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    #[default]
    Drive,
    S3,
    B2,
}

impl DestinationKind {
    pub fn is_drive(&self) -> bool {
        *self == DestinationKind::Drive
    }
}

/// The storage class of each kind of object in a bucket (`STANDARD`, `STANDARD_IA`, `GLACIER_IR`, `GLACIER`,
/// `DEEP_ARCHIVE`, ...; the server's default when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageClasses {
    /// The archives (`<set>.tar[.age]` and their parts): the bulk of the bytes, read only to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<String>,
    /// Everything else (indexes, `backup.json`, `verification.sha256`, `LATEST`): a class read at once, never
    /// `GLACIER` or `DEEP_ARCHIVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// An upload bandwidth limit: always, or only inside a daily window of local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Bwlimit {
    /// Bytes per second, always (`"2M"`).
    Always(String),
    /// Bytes per second during `window` (`"08:00-23:00"`, local time; may pass midnight), full speed outside it.
    Window(BwlimitWindow),
}

/// A bandwidth limit during a daily window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BwlimitWindow {
    /// Bytes per second with a K, M or G suffix (1024-based): `"512K"`, `"2M"`.
    pub rate: String,
    /// `HH:MM-HH:MM` in local time; the limit applies from the first time until the second (`"22:00-06:00"` passes
    /// midnight). Without it, always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// age encryption (age-encryption.org/v1) of the archives on a drive: to public recipients (backing up needs no
/// secret), or to a passphrase. Archives become `<set>.tar.age` and `<set>.index.age`; they open with the stock
/// `age` tool. Never put a secret key (`AGE-SECRET-KEY-...`) or a passphrase in this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Public keys to encrypt to: age X25519 keys (`age1...`, as `dbackup keygen` prints) or `ssh-ed25519`/`ssh-rsa` public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// A file of recipients, one per line, `#` comments allowed (the format of `age -R`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_file: Option<String>,
    /// The identity file (secret key) that restore and verify decrypt with; never read when backing up. Alone (no
    /// recipients, no passphrase) the encryption reads backups and writes none: a worst-day config for restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Encrypt to a passphrase (age's scrypt) instead of recipients: for people who keep no key file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
    /// With `passphrase`: a file (mode 0600) whose first line is the passphrase, so unattended backups can run;
    /// without it the passphrase is asked on the terminal (or read from the file `$DBACKUP_PASSPHRASE_FILE` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn default_true() -> bool {
    true
}

/// How the external phase picks among present destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalOptions {
    /// `first`: the highest-priority present destination; `all`: every present destination.
    #[serde(default)]
    pub mode: ExternalMode,
    /// Incremental archives: when a backup on a drive may hold only what changed since the previous one.
    #[serde(default)]
    pub incremental: IncrementalPolicy,
}

/// When an external backup writes a set's archive as an incremental (only what changed since the previous backup
/// of the set on the same drive; its index still lists every file and where its bytes are) and when as a full.
/// A full is written whenever any limit is reached, the previous backup cannot be trusted (unverified, a file
/// missing, other encryption), or `dbackup external --full` asks. Content comparison (every file that looks
/// unchanged read and hashed) follows `schedule.full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalPolicy {
    /// Write incremental archives (default true: a backup writes, reads back and stores only what changed, and a
    /// restore still reads each file with one seek). `false`: every backup is a full.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// At most this many incrementals after a full (default 6: a restore needs at most 7 archives, and one damaged
    /// archive affects at most a week of daily backups).
    #[serde(default = "IncrementalPolicy::default_max_chain")]
    #[schemars(range(min = 1, max = 100))]
    pub max_chain: u32,
    /// A full when the incrementals since the last full add up to more than this percentage of it (default 50:
    /// past that a new full costs little more than the chain saves).
    #[serde(default = "IncrementalPolicy::default_max_percent")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_percent: u32,
    /// A full when the chain's full is older than this many days (default 30: at least one full a month on every
    /// drive).
    #[serde(default = "IncrementalPolicy::default_full_after_days")]
    #[schemars(range(min = 1))]
    pub full_after_days: u32,
}

impl IncrementalPolicy {
    fn default_max_chain() -> u32 {
        6
    }
    fn default_max_percent() -> u32 {
        50
    }
    fn default_full_after_days() -> u32 {
        30
    }
}

impl Default for IncrementalPolicy {
    fn default() -> Self {
        IncrementalPolicy {
            enabled: true,
            max_chain: IncrementalPolicy::default_max_chain(),
            max_percent: IncrementalPolicy::default_max_percent(),
            full_after_days: IncrementalPolicy::default_full_after_days(),
        }
    }
}

/// `first`: the highest-priority present destination; `all`: every present destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExternalMode {
    #[default]
    First,
    All,
}

/// Notification events and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// Which events are sent (default: all but `success`).
    #[serde(default = "Notifications::default_events")]
    pub events: Vec<EventKind>,
    /// Show freedesktop desktop notifications (via `notify-send`) when a session bus exists.
    #[serde(default)]
    pub desktop: bool,
    /// A command run for each event, with DBACKUP_EVENT, DBACKUP_SUMMARY and DBACKUP_DETAILS set and the event as JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// An HTTP(S) URL that receives each event as a POST (ntfy-style: the summary as the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Warn when a filesystem has less than this percentage free.
    #[serde(default = "Notifications::default_low_disk_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub low_disk_percent: u8,
}

impl Notifications {
    fn default_events() -> Vec<EventKind> {
        vec![
            EventKind::Failure,
            EventKind::Warning,
            EventKind::MissingMedia,
            EventKind::LowDisk,
            EventKind::Overdue,
        ]
    }
    fn default_low_disk_percent() -> u8 {
        10
    }
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            events: Notifications::default_events(),
            desktop: false,
            command: None,
            http: None,
            low_disk_percent: Notifications::default_low_disk_percent(),
        }
    }
}

/// The status page (`dbackup report`): one self-contained HTML file that answers "are my backups good?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Regenerate the page after every `backup`, `collect` and `external` run (default true).
    #[serde(default = "default_true")]
    pub write: bool,
    /// Where that page is written (default `$XDG_STATE_HOME/dbackup/report.html`); `~`, `$VAR` and `${VAR}` expand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Write `REPORT.html` next to `backups/` on each drive the external phase used, from what its `backup.json`
    /// files hold (default true): a drive found in a drawer explains itself.
    #[serde(default = "default_true")]
    pub drives: bool,
    /// How many recent runs (and snapshots per set) the page shows (default 30).
    #[serde(default = "Report::default_history")]
    #[schemars(range(min = 1, max = 1000))]
    pub history: u32,
    /// `dbackup serve`, the read-only local server of the page.
    #[serde(default)]
    pub serve: Serve,
}

impl Report {
    fn default_history() -> u32 {
        30
    }
}

impl Default for Report {
    fn default() -> Self {
        Report {
            write: true,
            path: None,
            drives: true,
            history: Report::default_history(),
            serve: Serve::default(),
        }
    }
}

/// `dbackup serve`: where it listens, and whether a unit runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// A loopback address and port (default `127.0.0.1:8422`). The page has no login: to see it from elsewhere,
    /// use `ssh -L 8422:127.0.0.1:8422 this-machine`.
    #[serde(default = "Serve::default_listen")]
    pub listen: String,
    /// Add `dbackup-serve.service` to what `dbackup systemd render` and the Nix modules install (default false).
    #[serde(default)]
    pub unit: bool,
}

impl Serve {
    /// The default address of `dbackup serve`.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:8422";

    /// The port an `ssh -L` hint for an address on `port` names: that one, or for port 0 (any free port: nothing one
    /// can forward to before it is bound) the default one.
    pub fn forward_port(port: u16) -> u16 {
        match port {
            0 => 8422,
            p => p,
        }
    }
    fn default_listen() -> String {
        Serve::DEFAULT_LISTEN.to_string()
    }
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            listen: Serve::default_listen(),
            unit: false,
        }
    }
}

/// Something worth telling the user about: a run succeeded or failed, finished with warnings, found no drive,
/// found a filesystem nearly full, or a phase is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Success,
    Failure,
    Warning,
    MissingMedia,
    LowDisk,
    Overdue,
}

/// Where an error in a config file sits: 1-based line, and 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Everything that can be wrong with a config. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is the `source` (shown by `{:#}`, as `main` prints errors).
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// An explicitly named config (`--config`, `$DBACKUP_CONFIG`, `config check PATH`) does not exist.
    #[error(
        "config {path} (named by {origin}) does not exist; run `dbackup config init {path}` to write a commented \
         default there"
    )]
    NotFound { path: PathBuf, origin: String },

    /// The file is not valid JSON (with comments).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// The file is JSON but does not match the schema (or the Rust types).
    #[error("{}", format_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },

    /// The values are well-formed but do not make sense (duplicate names, source inside the root, undefined
    /// variables, relative paths, ...). Every problem found is listed.
    #[error("{}", format_problems(path, problems))]
    Semantic {
        path: PathBuf,
        problems: Vec<Problem>,
    },

    #[error("{path} already exists; edit it, or move it away and run `dbackup config init` again")]
    Exists { path: PathBuf },
}

/// One problem in a config, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer to the offending value (`/backup_sets/0/exclusions`); empty for the whole document.
    pub pointer: String,
    /// Where it is in the file (none for the built-in default).
    pub location: Option<Location>,
    /// What is wrong and what was found, with a "did you mean" when one is close.
    pub message: String,
    /// What is allowed there, when that is worth a line of its own.
    pub allowed: Option<String>,
}

impl Problem {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            pointer: pointer.into(),
            location: None,
            message: message.into(),
            allowed: None,
        }
    }

    pub fn allowed(mut self, allowed: impl Into<String>) -> Problem {
        self.allowed = Some(allowed.into());
        self
    }

    /// `path:line:column: /pointer: message`, then the allowed values indented on the next line.
    pub fn render(&self, path: &std::path::Path) -> String {
        // Keys come from the file: shown visible, so a control character in one cannot drive the terminal.
        let pointer = if self.pointer.is_empty() {
            "/".to_string()
        } else {
            crate::stdx::show_str(&self.pointer)
        };
        let mut out = match &self.location {
            Some(l) => format!(
                "{}:{}:{}: {pointer}: {}",
                path.display(),
                l.line,
                l.column,
                self.message
            ),
            None => format!("{}: {pointer}: {}", path.display(), self.message),
        };
        if let Some(allowed) = &self.allowed {
            out.push_str("\n    ");
            out.push_str(allowed);
        }
        out
    }
}

/// How messages name the built-in default config.
pub const BUILT_IN_NAME: &str = "(built-in default)";

fn format_problems(path: &std::path::Path, problems: &[Problem]) -> String {
    let n = problems.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = if path == std::path::Path::new(BUILT_IN_NAME) {
        format!(
            "the built-in default config does not work in this environment ({n} problem{plural}); it takes the data \
             set's source from $DDATA and the backup root from $DBACKUP. Fix those, or write a config to edit with \
             `dbackup config init`:"
        )
    } else {
        format!(
            "config {} is invalid ({n} problem{plural}):",
            path.display()
        )
    };
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.render(path).replace('\n', "\n  "));
    }
    out
}

impl ExitCoded for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}
