//! The validated settings every phase runs from: the config file merged with the command line,
//! paths expanded, semantic checks passed. Built once, before any phase runs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::crypt::{self, CryptError, EncryptionRecord, Recipient};
use crate::config::load::{self, ConfigSource, Loaded};
use crate::config::{
    BackupSet, Config, ConfigError, Destination, DestinationKind, Encryption, ExternalMode,
    ExternalSchedule, Notifications, Problem, RetentionForm, RetentionPolicy, Schedule, schema,
};
use crate::expand::{self, Env};

pub mod bwlimit;
mod summary;

pub use summary::summary;

/// How much to print and whether to change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Output {
    pub json: bool,
    pub dry_run: bool,
    /// -2 (-qq) .. 0 (default) .. 2 (-vv)
    pub verbosity: i8,
}

/// `notifications` as output shows them: the URL's user info, path and query are secrets.
fn notifications_redacted<S: serde::Serializer>(
    n: &Notifications,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut shown = n.clone();
    shown.http = shown.http.as_deref().map(crate::stdx::redact_url);
    shown.command = shown.command.as_deref().map(crate::stdx::redact_argv);
    shown.serialize(s)
}

/// Validated settings for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub config_source: ConfigSource,
    /// Absolute, expanded.
    pub backup_root: PathBuf,
    pub sets: Vec<SetSettings>,
    pub schedule: Schedule,
    /// Local retention, normalised: a plain count N is `last: N`.
    pub retention_local: RetentionPolicy,
    /// External retention, normalised the same way (each destination carries its own or this one).
    pub retention_external: RetentionPolicy,
    /// The fewest verified restore points space-aware rotation leaves on a destination (each carries its own).
    pub keep_at_least: u32,
    /// The drives (`kind` `drive`, the default).
    pub destinations: Vec<DestinationSettings>,
    /// The cloud destinations (`kind` `s3` or `b2`): validated here, used through `cloud/`.
    pub clouds: Vec<CloudSettings>,
    pub external_mode: ExternalMode,
    /// When external backups write incremental archives (`external.incremental`).
    pub external_incremental: crate::config::IncrementalPolicy,
    /// Serialised with the URL's secrets hidden (`config check --json`): see [`crate::stdx::redact_url`].
    #[serde(serialize_with = "notifications_redacted")]
    pub notifications: Notifications,
    /// The top-level `encryption` (each destination already carries its own or this one).
    pub encryption: Option<EncryptionSettings>,
    /// Where the run log lives: `$XDG_STATE_HOME/dbackup` (`~/.local/state/dbackup`).
    pub state_dir: PathBuf,
    /// The recovery kit and partition images of each external backup.
    pub image: ImageSettings,
    /// The status page.
    pub report: ReportSettings,
    #[serde(skip)]
    pub output: Output,
}

/// The `image` section, validated: device paths absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSettings {
    pub kit: bool,
    pub devices: Vec<PathBuf>,
}

/// The status page (`report` in the config), validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSettings {
    /// Where the page is regenerated after every run; `None` when `report.write` is false.
    pub path: Option<PathBuf>,
    /// `path` is the default one, under the state directory every config of this user shares (no `report.path`):
    /// a page another config drew there is left to it ([`crate::report::write_page`]).
    pub shared: bool,
    /// Write `REPORT.html` on each drive the external phase used.
    pub drives: bool,
    /// Recent runs (and snapshots per set) shown.
    pub history: usize,
    /// Where `dbackup serve` listens (a loopback address).
    pub listen: std::net::SocketAddr,
    /// `systemd render` and the Nix modules add `dbackup-serve.service`.
    pub unit: bool,
}

impl ReportSettings {
    /// The name of the page under the state directory.
    pub const FILE_NAME: &str = "report.html";

    /// The defaults, with the page under `state_dir` (for tests that build settings by hand).
    pub fn default_in(state_dir: &Path) -> ReportSettings {
        ReportSettings {
            path: Some(state_dir.join(Self::FILE_NAME)),
            shared: true,
            drives: true,
            history: 30,
            listen: crate::config::Serve::DEFAULT_LISTEN
                .parse()
                .expect("the default address parses"),
            unit: false,
        }
    }
}

/// One backup set, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetSettings {
    pub name: String,
    pub sources: Vec<SourcePath>,
    /// `exclusions`, then the rules of each `exclude_from` file, in order (rsync's first match wins).
    pub exclusions: Vec<Exclusion>,
    /// The `exclude_from` files, expanded (their rules are in `exclusions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_from: Vec<PathBuf>,
    /// Skip directories holding a valid `CACHEDIR.TAG` (found by `collect`'s look at the sources).
    pub exclude_caches: bool,
    /// Skip directories holding a file of one of these names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    pub rsync_args: Vec<String>,
}

/// A source as configured, expanded and resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePath {
    /// As written in the config (`~/data`).
    pub configured: String,
    /// Expanded and absolute (`/home/payne/data`).
    pub path: PathBuf,
    /// With symlinks resolved (`/data`); equal to `path` when nothing is a link or the path is missing.
    pub resolved: PathBuf,
}

/// An exclusion, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Exclusion {
    /// An rsync pattern that matches anywhere (`*.log`, `tmp/*`).
    Pattern {
        pattern: String,
        /// `!pattern`: an include, which wins over the excludes after it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        include: bool,
    },
    /// A path inside one of the set's sources, anchored at the transfer root (`/home/payne/.config/Code/Cache/*`).
    Anchored {
        configured: String,
        pattern: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        include: bool,
    },
}

impl Exclusion {
    /// The rsync pattern (without the include mark).
    pub fn rsync_pattern(&self) -> &str {
        match self {
            Exclusion::Pattern { pattern, .. } | Exclusion::Anchored { pattern, .. } => pattern,
        }
    }

    /// An include (`!pattern` in the config): written as `+ pattern` in the filter file.
    pub fn is_include(&self) -> bool {
        match self {
            Exclusion::Pattern { include, .. } | Exclusion::Anchored { include, .. } => *include,
        }
    }

    /// The rule as the plan and the snapshot's metadata record it: the pattern, `!`-prefixed for an include.
    pub fn rule(&self) -> String {
        if self.is_include() {
            format!("!{}", self.rsync_pattern())
        } else {
            self.rsync_pattern().to_string()
        }
    }
}

/// A destination, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationSettings {
    pub name: String,
    /// Absolute, expanded mount point.
    pub path: PathBuf,
    pub priority: i32,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    /// Which verified backups it keeps (a count N is `last: N`).
    pub retention: RetentionPolicy,
    /// The fewest verified restore points space-aware rotation leaves on it.
    pub keep_at_least: u32,
    pub require_mount: bool,
    /// How this destination's archives are encrypted, if they are.
    pub encryption: Option<EncryptionSettings>,
    /// This destination's own schedule (`None`: `schedule.external`).
    pub schedule: Option<ExternalSchedule>,
}

#[cfg(test)]
impl DestinationSettings {
    /// A drive for tests: priority 0, `last: 5`, at least 2 kept, mounted, unencrypted, no schedule of its own.
    pub fn example(name: &str, path: impl Into<PathBuf>) -> DestinationSettings {
        DestinationSettings {
            name: name.to_string(),
            path: path.into(),
            priority: 0,
            fs_uuid: None,
            fs_label: None,
            retention: RetentionPolicy::last(5),
            keep_at_least: 2,
            require_mount: true,
            encryption: None,
            schedule: None,
        }
    }
}

/// A cloud destination (`kind` `s3` or `b2`), validated. Holds no secret: keys are read by `cloud::credentials`
/// when the destination is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudSettings {
    pub name: String,
    pub kind: CloudKind,
    /// `s3`: the service URL without a trailing `/`; `None` is AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// `b2`: the bucket's id.
    pub bucket_id: Option<String>,
    /// The folder in the bucket, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
    /// `s3`: the signing region.
    pub region: String,
    /// `s3`: `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// `s3`: the profile of the shared credentials and config files (`None`: `$AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Where the keys are read from, when not from the environment (expanded; its mode is checked).
    pub credentials_file: Option<PathBuf>,
    pub priority: i32,
    /// Which verified backups it keeps (a count N is `last: N`), applied after each verified upload.
    pub retention: RetentionPolicy,
    /// The fewest verified restore points rotation leaves on it.
    pub keep_at_least: u32,
    /// How the archives are encrypted; `None` only with `allow_unencrypted`.
    pub encryption: Option<EncryptionSettings>,
    pub allow_unencrypted: bool,
    /// This destination's own schedule (`None`: `schedule.external`).
    pub schedule: Option<ExternalSchedule>,
    /// The storage class of archives and of everything else (`None`: the server's default).
    pub storage_class_archives: Option<String>,
    pub storage_class_metadata: Option<String>,
    /// Compliance-mode retention written with every object.
    pub object_lock_days: Option<u32>,
    pub bwlimit: Option<bwlimit::Bwlimit>,
    /// Retries of a failed request (exponential backoff with jitter).
    pub retries: u32,
    /// Seconds a request may wait for the server.
    pub timeout_seconds: u32,
}

/// The kind of a cloud destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    /// S3-compatible (AWS, Garage, MinIO, B2's S3 endpoint, ...).
    S3,
    /// Backblaze B2's native API.
    B2,
}

impl CloudKind {
    pub fn word(self) -> &'static str {
        match self {
            CloudKind::S3 => "s3",
            CloudKind::B2 => "b2",
        }
    }
}

impl CloudSettings {
    /// The default number of retries of a failed request.
    pub const DEFAULT_RETRIES: u32 = 6;
    /// The default seconds a request may wait for the server.
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 60;
    /// Storage classes that cannot be read at once (a restore must thaw them first): never for metadata.
    pub const COLD_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

    /// Where this destination is, for messages: `s3 http://127.0.0.1:3900 bucket/prefix` (no secret: the endpoint
    /// holds no user info, config validation refuses one).
    pub fn place(&self) -> String {
        let at = match (&self.kind, &self.endpoint) {
            (CloudKind::S3, Some(e)) => e.clone(),
            (CloudKind::S3, None) => format!("AWS {}", self.region),
            (CloudKind::B2, _) => "B2".to_string(),
        };
        let path = if self.prefix.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}/{}", self.bucket, self.prefix)
        };
        format!("{} {at} {path}", self.kind.word())
    }
}

/// A destination's encryption, validated and expanded. Inline recipients are checked here; files are read when the
/// external phase starts (see `archive::crypt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncryptionSettings {
    /// Public recipients as configured (each parses as an age or ssh recipient).
    pub recipients: Vec<String>,
    pub recipients_file: Option<PathBuf>,
    /// The identity restore and verify decrypt with.
    pub identity_file: Option<PathBuf>,
    /// Encrypt to a passphrase instead of recipients.
    pub passphrase: bool,
    /// Where the passphrase is read from when backing up unattended.
    pub passphrase_file: Option<PathBuf>,
}

impl EncryptionSettings {
    /// Only an `identity_file`: a config that reads encrypted backups (the worst day's, written with the key
    /// alone) but has nothing to encrypt new ones to; a run writing to it is refused ([`Self::resolve_record`]).
    pub fn reads_only(&self) -> bool {
        self.recipients.is_empty() && self.recipients_file.is_none() && !self.passphrase
    }

    /// The public side of this encryption, as the external phase records it: inline recipients and those of
    /// `recipients_file` (read now), or a passphrase. Reads no secret: an encryption that [reads
    /// only](Self::reads_only) is refused here, not given the identity's own recipient.
    pub fn resolve_record(&self) -> Result<EncryptionRecord, CryptError> {
        if self.reads_only() {
            return Err(CryptError::ReadsOnly {
                identity: self.identity_file.clone().unwrap_or_default(),
            });
        }
        let mut recipients = Vec::new();
        for r in &self.recipients {
            recipients.push(r.parse::<Recipient>()?.text().to_string());
        }
        if let Some(file) = &self.recipients_file {
            recipients.extend(
                crypt::read_recipients_file(file)?
                    .into_iter()
                    .map(|r| r.text().to_string()),
            );
        }
        // The same key inline and in the file (or twice in the file) is encrypted to once; the order is kept.
        let mut seen = std::collections::HashSet::new();
        recipients.retain(|r| seen.insert(r.clone()));
        Ok(EncryptionRecord {
            format: crypt::AGE_FORMAT.to_string(),
            recipients,
            passphrase: self.passphrase,
        })
    }
}

/// One of the AWS shared files an s3 destination without `credentials_file` may read its keys from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedFile {
    pub path: PathBuf,
    /// `AWS shared credentials file`, `AWS config file`.
    pub what: &'static str,
    /// The variable naming it (`AWS_SHARED_CREDENTIALS_FILE`), when it is set; else it is the default place.
    pub variable: Option<&'static str>,
}

/// The AWS shared credentials file (`$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and config file
/// (`$AWS_CONFIG_FILE`, else `~/.aws/config`), in the order an s3 destination without `credentials_file` reads them
/// (`cloud::credentials`).
pub(crate) fn aws_shared_files(env: &Env) -> [SharedFile; 2] {
    let shared = |what, variable, default: &str| {
        let named = env.var(variable);
        SharedFile {
            path: named.map_or_else(|| env.home.join(default), PathBuf::from),
            what,
            variable: named.map(|_| variable),
        }
    };
    [
        shared(
            "AWS shared credentials file",
            "AWS_SHARED_CREDENTIALS_FILE",
            ".aws/credentials",
        ),
        shared("AWS config file", "AWS_CONFIG_FILE", ".aws/config"),
    ]
}

/// A secret file dbackup reads ([`Settings::secret_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SecretFile {
    /// Expanded (`$DBACKUP_PASSPHRASE_FILE`'s as the variable says).
    pub path: PathBuf,
    /// What names it: the setting (`identity_file of destination usb`) when the config does, else the whole phrase
    /// (`the passphrase file $DBACKUP_PASSPHRASE_FILE names`).
    pub field: String,
    pub named_by: NamedBy,
}

/// What names a secret file dbackup reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedBy {
    /// A setting of the config.
    #[default]
    Config,
    /// An environment variable (`$DBACKUP_PASSPHRASE_FILE`, `$AWS_SHARED_CREDENTIALS_FILE`).
    Environment,
    /// Nothing: the AWS tools' default place (`~/.aws/credentials`).
    Default,
}

impl NamedBy {
    /// What names a secret file whose `field` is this, for people: `the config's identity_file of destination usb`,
    /// or the field's own phrase (`the passphrase file $DBACKUP_PASSPHRASE_FILE names`).
    pub fn phrase(self, field: &str) -> String {
        match self {
            NamedBy::Config => format!("the config's {field}"),
            NamedBy::Environment | NamedBy::Default => field.to_string(),
        }
    }
}

impl Settings {
    /// Every destination's name: the drives', then the cloud destinations', each in config order.
    pub fn destination_names(&self) -> Vec<&str> {
        self.destinations
            .iter()
            .map(|d| d.name.as_str())
            .chain(self.clouds.iter().map(|c| c.name.as_str()))
            .collect()
    }

    /// The secret files dbackup reads, each once with what names it: first those the config names (`identity_file of
    /// destination usb`): every destination's `identity_file` and `passphrase_file`, and each bucket's
    /// `credentials_file`; then those it names not: the passphrase file `$DBACKUP_PASSPHRASE_FILE` names (read
    /// whenever a passphrase is), and the AWS shared credentials and config files of each s3 destination without
    /// `credentials_file` (read for its keys unless the environment holds them). The top-level `encryption`'s files
    /// need no entry of their own: every destination without an `encryption` of its own carries it, so with one at
    /// the top level no destination is unencrypted. An unencrypted destination's archives leave them all out
    /// (`external::observe`).
    pub fn secret_files(&self, env: &Env) -> Vec<SecretFile> {
        let mut out: Vec<SecretFile> = Vec::new();
        let mut add = |path: &PathBuf, field: String, named_by: NamedBy| {
            if !out.iter().any(|f| &f.path == path) {
                out.push(SecretFile {
                    path: path.clone(),
                    field,
                    named_by,
                });
            }
        };
        let encrypted = (self
            .destinations
            .iter()
            .map(|d| (&d.name, d.encryption.as_ref(), None)))
        .chain(
            self.clouds
                .iter()
                .map(|c| (&c.name, c.encryption.as_ref(), c.credentials_file.as_ref())),
        );
        for (name, e, credentials) in encrypted {
            let named = [
                ("identity_file", e.and_then(|e| e.identity_file.as_ref())),
                (
                    "passphrase_file",
                    e.and_then(|e| e.passphrase_file.as_ref()),
                ),
                ("credentials_file", credentials),
            ];
            for (field, path) in named {
                if let Some(path) = path {
                    add(
                        path,
                        format!("{field} of destination {name}"),
                        NamedBy::Config,
                    );
                }
            }
        }
        if let Some(file) = env.var(crypt::PASSPHRASE_FILE_VAR) {
            add(
                &PathBuf::from(file),
                format!("the passphrase file ${} names", crypt::PASSPHRASE_FILE_VAR),
                NamedBy::Environment,
            );
        }
        let keyless = (self.clouds.iter())
            .filter(|c| c.kind == CloudKind::S3 && c.credentials_file.is_none());
        for c in keyless {
            for f in aws_shared_files(env) {
                let (field, named_by) = match f.variable {
                    Some(v) => (
                        format!("the {} of destination {} (${v})", f.what, c.name),
                        NamedBy::Environment,
                    ),
                    None => (
                        format!("the {} of destination {}", f.what, c.name),
                        NamedBy::Default,
                    ),
                };
                add(&f.path, field, named_by);
            }
        }
        out
    }

    /// Every set's name, in config order.
    pub fn set_names(&self) -> Vec<String> {
        self.sets.iter().map(|s| s.name.clone()).collect()
    }

    /// Finds the config (`--config`, `$DBACKUP_CONFIG`, `$XDG_CONFIG_HOME/dbackup/config.json`, else the built-in default),
    /// validates it and builds the settings for this run.
    /// `config`: the `--config` path, when given.
    pub fn load(config: Option<&Path>, output: Output, env: &Env) -> Result<Settings, ConfigError> {
        let loaded = load::load(config, env)?;
        Settings::from_loaded(&loaded, env, output)
    }

    /// Builds settings from a loaded config: expands paths, resolves sources, classifies exclusions and runs the
    /// semantic checks, reporting every problem found (located in the file) at once.
    pub fn from_loaded(
        loaded: &Loaded,
        env: &Env,
        output: Output,
    ) -> Result<Settings, ConfigError> {
        Settings::build(loaded, env, output, None)
    }

    pub(super) fn build(
        loaded: &Loaded,
        env: &Env,
        output: Output,
        absent: Option<&RefCell<Vec<PathBuf>>>,
    ) -> Result<Settings, ConfigError> {
        let mut b = Builder {
            env,
            absent,
            problems: Vec::new(),
        };
        let config = &loaded.config;

        let backup_root = b.backup_root(config);
        let sets: Vec<SetSettings> = config
            .backup_sets
            .iter()
            .enumerate()
            .map(|(i, set)| b.set(i, set))
            .collect();
        b.unique_names(
            config.backup_sets.iter().map(|s| s.name.as_str()),
            "/backup_sets",
            "set",
        );
        if let Some(root) = &backup_root {
            b.root_and_sources(root, &sets, config);
        }

        let retention_external =
            b.retention_form("/retention/external", "backups", &config.retention.external);
        let keep_at_least = config.retention.keep_at_least;
        if keep_at_least == 0 {
            b.problem(
                "/retention/keep_at_least",
                "0 would let space-aware rotation remove every verified backup; keep at least 1",
            );
        }
        let retention_local =
            b.retention_form("/retention/local", "snapshots", &config.retention.local);

        let global_encryption = config
            .encryption
            .as_ref()
            .and_then(|e| b.encryption("/encryption", e));
        let destinations: Vec<DestinationSettings> = config
            .destinations
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind.is_drive())
            .filter_map(|(i, d)| {
                b.destination(
                    i,
                    d,
                    (&retention_external, keep_at_least),
                    &global_encryption,
                )
            })
            .collect();
        let clouds: Vec<CloudSettings> = config
            .destinations
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.kind.is_drive())
            .filter_map(|(i, d)| {
                b.cloud(
                    i,
                    d,
                    (&retention_external, keep_at_least),
                    &global_encryption,
                )
            })
            .collect();
        b.unique_names(
            config.destinations.iter().map(|d| d.name.as_str()),
            "/destinations",
            "destination",
        );
        b.unique_destination_paths(&destinations, config);
        b.drives_apart(backup_root.as_deref(), &sets, &destinations, config);
        b.own_drive_schedules(config);
        b.notification_url(config);
        let image_devices = b.image_devices(config);

        let state_dir = load::xdg_dir(env, "XDG_STATE_HOME", ".local/state").join("dbackup");
        let report = b.report(&config.report, &state_dir);

        if !b.problems.is_empty() {
            return Err(ConfigError::Semantic {
                path: loaded.display_path(),
                problems: loaded.positions.place(b.problems),
            });
        }
        Ok(Settings {
            config_source: loaded.source.clone(),
            backup_root: backup_root.expect("no problems, so a root"),
            sets,
            schedule: config.schedule.clone(),
            retention_local,
            retention_external,
            keep_at_least,
            destinations,
            clouds,
            external_mode: config.external.mode,
            external_incremental: config.external.incremental,
            notifications: config.notifications.clone(),
            encryption: global_encryption,
            state_dir,
            report,
            image: ImageSettings {
                kit: config.image.kit,
                devices: image_devices,
            },
            output,
        })
    }

    /// The set with this name.
    pub fn set(&self, name: &str) -> Option<&SetSettings> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Why a command that reads a bucket cannot run on this config (it names none), and what to do.
    pub const NO_CLOUD: &str = "the config has no cloud destination (a destination with \"kind\": \"s3\" or \"b2\"): \
        add the bucket to the config's \"destinations\" as it was uploaded to (its endpoint, bucket, prefix and \
        encryption; docs/RESTORE.md, \"From the bucket\", shows one), then run this again; or download its \
        backups/ with any S3 client and restore from that directory with --drive DIR, which needs no config";

    /// The cloud destination with this name.
    pub fn cloud(&self, name: &str) -> Option<&CloudSettings> {
        self.clouds.iter().find(|c| c.name == name)
    }

    /// The destination that `path` is under. Symlinks in either path are resolved as far as they exist.
    pub fn destination_holding(&self, path: &Path) -> Option<&DestinationSettings> {
        let resolve = |p: &Path| -> PathBuf {
            // The longest existing ancestor, canonicalized, with the rest appended.
            let mut base = p.to_path_buf();
            let mut rest = Vec::new();
            while !base.exists() {
                match (base.parent(), base.file_name()) {
                    (Some(parent), Some(name)) => {
                        rest.push(name.to_os_string());
                        base = parent.to_path_buf();
                    }
                    _ => return p.to_path_buf(),
                }
            }
            let mut out = std::fs::canonicalize(&base).unwrap_or(base);
            out.extend(rest.iter().rev());
            out
        };
        let path = resolve(path);
        self.destinations
            .iter()
            .find(|d| path.starts_with(resolve(&d.path)))
    }
}

/// Collects the problems of one config while building its settings.
struct Builder<'a> {
    env: &'a Env,
    /// Where files the config names that do not exist are noted, when they may be absent (else a problem).
    absent: Option<&'a RefCell<Vec<PathBuf>>>,
    problems: Vec<Problem>,
}

impl Builder<'_> {
    /// A problem at `<at>/name` unless `name` is a safe name (sets and destinations alike).
    fn safe_name(&mut self, at: &str, name: &str) {
        if !is_safe_name(name) {
            self.problem(
                format!("{at}/name"),
                format!(
                    "{name:?} is not a safe name; use {}",
                    schema::SAFE_NAME_RULE
                ),
            );
        }
    }

    /// A problem at `<at>/<key>` for each key that is set here but belongs to another kind of destination,
    /// saying `why` for that key.
    fn misplaced(
        &mut self,
        at: &str,
        keys: impl IntoIterator<Item = (&'static str, bool)>,
        why: impl Fn(&str) -> String,
    ) {
        for (key, set) in keys {
            if set {
                self.problem(format!("{at}/{key}"), why(key));
            }
        }
    }

    /// What a destination at `at` keeps: its retention and the fewest verified backups rotation leaves, each its
    /// own or the top level's (`defaults`); `keep_at_least` 0 is a problem.
    fn kept(
        &mut self,
        at: &str,
        d: &Destination,
        defaults: (&RetentionPolicy, u32),
    ) -> (RetentionPolicy, u32) {
        let (default_retention, default_keep) = defaults;
        let retention = match &d.retention {
            Some(form) => self.retention_form(&format!("{at}/retention"), "backups", form),
            None => *default_retention,
        };
        if d.keep_at_least == Some(0) {
            self.problem(
                format!("{at}/keep_at_least"),
                "0 would let space-aware rotation remove every verified backup; keep at least 1",
            );
        }
        (retention, d.keep_at_least.unwrap_or(default_keep))
    }

    /// A destination's encryption: its own (checked at `<at>/encryption`), else the top level's.
    fn encryption_or(
        &mut self,
        at: &str,
        d: &Destination,
        global: &Option<EncryptionSettings>,
    ) -> Option<EncryptionSettings> {
        match &d.encryption {
            Some(e) => self.encryption(&format!("{at}/encryption"), e),
            None => global.clone(),
        }
    }

    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(pointer, message));
    }

    /// An expanded, absolute, normalised path; `None` (and a problem) when it cannot be one.
    fn path(&mut self, pointer: String, value: &str) -> Option<PathBuf> {
        match expand::expand_path(value, self.env) {
            Ok(p) => Some(p),
            // The passphrase itself typed where its file's path belongs is never quoted.
            Err(_) if pointer.ends_with("/passphrase_file") => {
                self.problem(
                    pointer,
                    "cannot be used as the path of a file (the value is not shown: it may be the passphrase \
                     itself); write the absolute path (`/...`, `~/...` or `$VAR/...`) of a file (mode 0600) whose \
                     first line is the passphrase",
                );
                None
            }
            Err(e) => {
                self.problem(pointer, e.to_string());
                None
            }
        }
    }

    fn backup_root(&mut self, config: &Config) -> Option<PathBuf> {
        if let Some(root) = &config.backup_root {
            return self.path("/backup_root".into(), root);
        }
        if let Some(v) = self.env.var("DBACKUP") {
            return match expand::expand_path(v, self.env) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(
                        "/backup_root",
                        format!("$DBACKUP (the default backup_root): {e}"),
                    );
                    None
                }
            };
        }
        Some(self.env.home.join(".local/share/dbackup"))
    }

    fn set(&mut self, i: usize, set: &BackupSet) -> SetSettings {
        let at = format!("/backup_sets/{i}");
        self.safe_name(&at, &set.name);
        if set.sources.is_empty() {
            self.problem(
                format!("{at}/sources"),
                format!("set {:?} has no sources", set.name),
            );
        }

        let mut sources: Vec<SourcePath> = Vec::new();
        for (j, configured) in set.sources.iter().enumerate() {
            let pointer = format!("{at}/sources/{j}");
            let Some(path) = self.path(pointer.clone(), configured) else {
                continue;
            };
            let resolved = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(first) = sources.iter().find(|s| s.resolved == resolved) {
                self.problem(
                    pointer,
                    format!(
                        "{configured:?} is the same place as {:?} ({}) in set {:?}; list it once",
                        first.configured,
                        resolved.display(),
                        set.name
                    ),
                );
                continue;
            }
            sources.push(SourcePath {
                configured: configured.clone(),
                path,
                resolved,
            });
        }

        let mut exclusions: Vec<Exclusion> = set
            .exclusions
            .iter()
            .enumerate()
            .filter_map(|(k, e)| {
                let pointer = format!("{at}/exclusions/{k}");
                let expanded = match expand::expand(e, self.env) {
                    Ok(x) => x,
                    Err(err) => {
                        self.problem(pointer, err.to_string());
                        return None;
                    }
                };
                self.exclusion(pointer, e, &expanded, &set.name, &sources)
            })
            .collect();
        let mut exclude_from = Vec::new();
        for (k, file) in set.exclude_from.iter().enumerate() {
            let pointer = format!("{at}/exclude_from/{k}");
            let path = match expand::expand_path(file, self.env) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(pointer, e.to_string());
                    continue;
                }
            };
            let text = match crate::rsync_args::Host::read_file(&self.args_host(), &path) {
                Ok(t) => t,
                Err(e) => {
                    self.problem(pointer, format!("{}: {e}", path.display()));
                    continue;
                }
            };
            for (line, raw) in exclude_file_rules(&text) {
                let shown = format!("{}:{line}", path.display());
                if raw.trim() == "!" {
                    self.problem(
                        pointer.clone(),
                        format!("{shown}: `!` alone would clear the rules before it; remove it"),
                    );
                    continue;
                }
                if let Some(x) = self.exclusion(pointer.clone(), &raw, &raw, &set.name, &sources) {
                    exclusions.push(x);
                }
            }
            exclude_from.push(path);
        }
        let mut exclude_if_present = Vec::new();
        for (k, name) in set.exclude_if_present.iter().enumerate() {
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\n', '\r', '\0'])
            {
                self.problem(
                    format!("{at}/exclude_if_present/{k}"),
                    format!("{name:?} is not a file name; give a marker's name alone, like \".nobackup\""),
                );
            } else if !exclude_if_present.contains(name) {
                exclude_if_present.push(name.clone());
            }
        }

        let (rsync_args, refused) = crate::rsync_args::check(&set.rsync_args, &self.args_host());
        for r in refused {
            let problem = Problem::new(format!("{at}/rsync_args/{}", r.index), r.message);
            self.problems.push(if r.off_list {
                problem.allowed(crate::rsync_args::allowed_list())
            } else {
                problem
            });
        }

        SetSettings {
            name: set.name.clone(),
            sources,
            exclusions,
            exclude_from,
            exclude_caches: set.exclude_caches,
            exclude_if_present,
            rsync_args,
        }
    }

    /// An rsync pattern, or a path inside one of the set's sources turned into an anchored pattern under the
    /// source's resolved path (rsync runs with `--relative` from `/`).
    /// `raw` is the rule as written (for messages), `expanded` the same with `~` and `$VAR` expanded; a leading `!`
    /// makes an include.
    fn exclusion(
        &mut self,
        pointer: String,
        raw: &str,
        expanded: &str,
        set: &str,
        sources: &[SourcePath],
    ) -> Option<Exclusion> {
        let (include, expanded) = match expanded.strip_prefix('!') {
            Some(rest) => (true, rest.to_string()),
            None => (false, expanded.to_string()),
        };
        if include && expanded.is_empty() {
            self.problem(
                pointer,
                "`!` alone would clear the rules before it; give a pattern to include, like \"!keep.log\"",
            );
            return None;
        }
        if expanded.is_empty() {
            self.problem(pointer, "an empty exclusion; remove it");
            return None;
        }
        if expanded.contains(['\n', '\r', '\0']) {
            self.problem(
                pointer,
                format!(
                    "{raw:?} holds a line break or NUL, which no file name pattern needs; remove it"
                ),
            );
            return None;
        }
        if !expanded.starts_with('/') {
            return Some(Exclusion::Pattern {
                pattern: expanded,
                include,
            });
        }
        let dir_only = expanded.len() > 1 && expanded.ends_with('/');
        let path = expand::normalize(Path::new(&expanded));
        let inside = sources
            .iter()
            .flat_map(|s| [(&s.path, s), (&s.resolved, s)])
            .filter(|(prefix, _)| path.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.components().count());
        match inside {
            Some((prefix, source)) if path == **prefix && include => {
                self.problem(
                    pointer,
                    format!(
                        "{raw:?} includes the whole source {:?}, which is always copied; remove it",
                        source.configured
                    ),
                );
                None
            }
            Some((prefix, source)) if path == **prefix => {
                self.problem(
                    pointer,
                    format!(
                        "{raw:?} excludes the whole source {:?}; remove the source instead, or exclude its contents with {:?}",
                        source.configured,
                        format!("{}/*", raw.trim_end_matches('/'))
                    ),
                );
                None
            }
            Some((prefix, source)) => {
                let rest = path.strip_prefix(prefix).expect("checked by starts_with");
                let mut pattern = source.resolved.join(rest).to_string_lossy().into_owned();
                if dir_only {
                    pattern.push('/');
                }
                Some(Exclusion::Anchored {
                    configured: raw.to_string(),
                    pattern,
                    include,
                })
            }
            None => {
                let names: Vec<String> = sources
                    .iter()
                    .map(|s| format!("{:?}", s.configured))
                    .collect();
                self.problem(
                    pointer,
                    format!(
                        "{raw:?} is not inside any source of set {set:?} ({}); a path exclusion must be inside a source, \
                         and a pattern without a leading / (like \"Cache/*\") matches anywhere",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Names must differ even ignoring case: the drive is exFAT, which does not tell `Data` from `data`.
    fn unique_names<'n>(&mut self, names: impl Iterator<Item = &'n str>, list: &str, what: &str) {
        let mut seen: Vec<(String, &str, usize)> = Vec::new();
        for (i, name) in names.enumerate() {
            let key = name.to_lowercase();
            match seen.iter().find(|(k, _, _)| *k == key) {
                Some((_, first, at)) => self.problem(
                    format!("{list}/{i}/name"),
                    format!(
                        "{what} name {name:?} is already taken by {what} {first:?} ({list}/{at}); names must differ \
                         even ignoring case (the drive's exFAT does not tell them apart)"
                    ),
                ),
                None => seen.push((key, name, i)),
            }
        }
    }

    /// No source inside the backup root, and the root not inside a source unless an anchored exclusion covers it.
    fn root_and_sources(&mut self, root: &Path, sets: &[SetSettings], config: &Config) {
        let root_resolved = resolve_existing_prefix(root);
        for (i, set) in sets.iter().enumerate() {
            for source in &set.sources {
                // Sources that failed to expand are not in `set.sources`: find the index in the file.
                let j = config.backup_sets[i]
                    .sources
                    .iter()
                    .position(|c| *c == source.configured)
                    .unwrap_or(0);
                let pointer = format!("/backup_sets/{i}/sources/{j}");
                let pairs = [
                    (&source.path, root),
                    (&source.resolved, root_resolved.as_path()),
                ];
                if pairs.iter().any(|(s, r)| s.starts_with(r)) {
                    self.problem(
                        pointer,
                        format!(
                            "source {:?} is inside backup_root {}; dbackup would back up its own backups. \
                             Move backup_root elsewhere or remove this source",
                            source.configured,
                            root.display()
                        ),
                    );
                } else if pairs.iter().any(|(s, r)| r.starts_with(s)) {
                    let covered = set.exclusions.iter().any(|e| match e {
                        Exclusion::Anchored { pattern, .. } if !e.is_include() => {
                            covers(pattern, &root_resolved) || covers(pattern, root)
                        }
                        _ => false,
                    });
                    if !covered {
                        self.problem(
                            pointer,
                            format!(
                                "backup_root {} is inside source {:?}; each snapshot would copy the earlier ones. \
                                 Add \"{}\" to set {:?}'s exclusions, or move backup_root",
                                root.display(),
                                source.configured,
                                root.display(),
                                set.name
                            ),
                        );
                    }
                }
            }
        }
    }

    /// The status page: its path expanded, `serve.listen` a loopback address and port.
    fn report(&mut self, r: &crate::config::Report, state_dir: &Path) -> ReportSettings {
        let mut out = ReportSettings::default_in(state_dir);
        out.drives = r.drives;
        out.unit = r.serve.unit;
        out.history = r.history as usize;
        if r.history == 0 {
            self.problem("/report/history", "0 shows no history; show at least 1");
        }
        out.path = match (&r.path, r.write) {
            (_, false) => None,
            (Some(p), true) => {
                out.shared = false;
                self.path("/report/path".into(), p)
            }
            (None, true) => Some(state_dir.join(ReportSettings::FILE_NAME)),
        };
        match r.serve.listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() && a.port() != 0 => out.listen = a,
            Ok(a) if a.ip().is_loopback() => self.problem(
                "/report/serve/listen",
                format!(
                    "{a} has port 0, a different free port at each start, so the page could not be found where the \
                     serve unit says; choose a port, such as {}",
                    crate::config::Serve::DEFAULT_LISTEN
                ),
            ),
            Ok(a) => self.problem(
                "/report/serve/listen",
                format!(
                    "{a} is not a loopback address, and the page has no login; listen on 127.0.0.1 and reach it \
                     from elsewhere through `ssh -L {port}:127.0.0.1:{port} this-machine` (or run \
                     `dbackup serve --listen {a} --allow-remote` by hand, knowing anyone who can reach it sees it)",
                    port = crate::config::Serve::forward_port(a.port())
                ),
            ),
            Err(_) => self.problem(
                "/report/serve/listen",
                format!(
                    "{:?} is not an address and port; write it like \"127.0.0.1:8422\" or \"[::1]:8422\"",
                    r.serve.listen
                ),
            ),
        }
        out
    }

    /// A retention form normalised (a plain count N is `last: N`); `at` is its JSON pointer, `what` what it keeps.
    fn retention_form(&mut self, at: &str, what: &str, form: &RetentionForm) -> RetentionPolicy {
        match form {
            RetentionForm::Count(n) => {
                if *n == 0 {
                    self.problem(at, format!("0 keeps no {what}; keep at least 1"));
                }
                RetentionPolicy {
                    last: Some(*n),
                    ..Default::default()
                }
            }
            RetentionForm::Policy(p) => {
                let rules = [p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
                if !rules.iter().any(|r| r.is_some_and(|n| n > 0)) {
                    self.problem(
                        at,
                        format!(
                            "this policy keeps no {what}; give at least one of \"last\", \"hourly\", \"daily\", \
                             \"weekly\", \"monthly\", \"yearly\" a value of 1 or more"
                        ),
                    );
                }
                *p
            }
        }
    }

    fn destination(
        &mut self,
        i: usize,
        d: &Destination,
        defaults: (&RetentionPolicy, u32),
        global_encryption: &Option<EncryptionSettings>,
    ) -> Option<DestinationSettings> {
        let at = format!("/destinations/{i}");
        self.safe_name(&at, &d.name);
        let (retention, keep_at_least) = self.kept(&at, d, defaults);
        let encryption = self.encryption_or(&at, d, global_encryption);
        let keys = [
            ("endpoint", d.endpoint.is_some()),
            ("bucket", d.bucket.is_some()),
            ("bucket_id", d.bucket_id.is_some()),
            ("prefix", d.prefix.is_some()),
            ("region", d.region.is_some()),
            ("path_style", d.path_style.is_some()),
            ("profile", d.profile.is_some()),
            ("credentials_file", d.credentials_file.is_some()),
            ("allow_unencrypted", d.allow_unencrypted),
            ("storage_class", d.storage_class.is_some()),
            ("object_lock_days", d.object_lock_days.is_some()),
            ("bwlimit", d.bwlimit.is_some()),
            ("retries", d.retries.is_some()),
            ("timeout_seconds", d.timeout_seconds.is_some()),
        ];
        self.misplaced(&at, keys, |key| {
            format!(
                "`{key}` is for cloud destinations; add \"kind\": \"s3\" (or \"b2\") to make {:?} one, or \
                 remove `{key}`",
                d.name
            )
        });
        let Some(raw_path) = &d.path else {
            self.problem(
                format!("{at}/path"),
                format!(
                    "drive destination {:?} has no `path`; give its mount point (\"/media/you/T9\"), or a `kind` \
                     (\"s3\", \"b2\") for a bucket",
                    d.name
                ),
            );
            return None;
        };
        let path = self.path(format!("{at}/path"), raw_path)?;
        Some(DestinationSettings {
            name: d.name.clone(),
            path,
            priority: d.priority,
            fs_uuid: d.fs_uuid.clone(),
            fs_label: d.fs_label.clone(),
            retention,
            keep_at_least,
            require_mount: d.require_mount,
            encryption,
            schedule: d.schedule,
        })
    }

    /// A cloud destination: its place (endpoint, bucket, prefix), no drive keys, encryption unless
    /// `allow_unencrypted`, a credentials file that only its owner can read, sane limits.
    fn cloud(
        &mut self,
        i: usize,
        d: &Destination,
        defaults: (&RetentionPolicy, u32),
        global_encryption: &Option<EncryptionSettings>,
    ) -> Option<CloudSettings> {
        // Stays long: one check per key of a cloud destination, each a few lines, one after another.
        let at = format!("/destinations/{i}");
        let before = self.problems.len();
        let kind = match d.kind {
            DestinationKind::S3 => CloudKind::S3,
            DestinationKind::B2 => CloudKind::B2,
            DestinationKind::Drive => unreachable!("drives are built by `destination`"),
        };
        self.safe_name(&at, &d.name);
        let keys = [
            ("path", d.path.is_some()),
            ("fs_uuid", d.fs_uuid.is_some()),
            ("fs_label", d.fs_label.is_some()),
        ];
        self.misplaced(&at, keys, |key| {
            format!(
                "`{key}` is for drives; a {} destination is found by `bucket` (and `endpoint`), remove `{key}`",
                kind.word()
            )
        });
        if kind == CloudKind::B2 {
            let keys = [
                ("endpoint", d.endpoint.is_some()),
                ("region", d.region.is_some()),
                ("path_style", d.path_style.is_some()),
                ("profile", d.profile.is_some()),
            ];
            self.misplaced(&at, keys, |key| {
                format!(
                    "`{key}` is for \"kind\": \"s3\"; B2's native API needs `bucket` and `bucket_id` only \
                     (B2's S3-compatible endpoint is \"kind\": \"s3\" with `endpoint`)"
                )
            });
            if d.bucket_id.is_none() {
                self.problem(
                    format!("{at}/bucket_id"),
                    "a b2 destination needs `bucket_id` (B2's native API addresses buckets by id: \
                     `b2 bucket get NAME` shows it)",
                );
            }
        } else if d.bucket_id.is_some() {
            self.problem(
                format!("{at}/bucket_id"),
                "`bucket_id` is for \"kind\": \"b2\"; an s3 bucket is named by `bucket` alone",
            );
        }
        let (retention, keep_at_least) = self.kept(&at, d, defaults);

        let bucket = match d.bucket.as_deref() {
            None => {
                self.problem(
                    format!("{at}/bucket"),
                    format!("cloud destination {:?} has no `bucket`", d.name),
                );
                String::new()
            }
            Some(b) if !is_bucket_name(b) => {
                self.problem(
                    format!("{at}/bucket"),
                    format!(
                        "{:?} is not a bucket name; use 3 to 63 lowercase letters, digits, `-` and `.` (B2: letters, \
                         digits and `-`)",
                        crate::stdx::show_str(b)
                    ),
                );
                String::new()
            }
            Some(b) => b.to_string(),
        };
        let endpoint = d.endpoint.as_deref().and_then(|e| match check_endpoint(e) {
            Ok(e) => Some(e),
            Err(why) => {
                self.problem(format!("{at}/endpoint"), why);
                None
            }
        });
        let prefix = match &d.prefix {
            None => String::new(),
            Some(p) => match normalize_prefix(p) {
                Ok(p) => p,
                Err(why) => {
                    self.problem(format!("{at}/prefix"), why);
                    String::new()
                }
            },
        };
        let region = match d.region.as_deref() {
            Some(r)
                if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                self.problem(
                    format!("{at}/region"),
                    format!(
                        "{:?} is not a region; write it like \"eu-central-1\"",
                        crate::stdx::show_str(r)
                    ),
                );
                String::new()
            }
            Some(r) => r.to_string(),
            None => "us-east-1".to_string(),
        };
        if let Some(p) = &d.profile
            && (p.is_empty() || p.contains(['[', ']', '\n']))
        {
            self.problem(
                format!("{at}/profile"),
                format!("{p:?} is not a profile name"),
            );
        }
        let credentials_file = d
            .credentials_file
            .as_ref()
            .and_then(|f| self.path(format!("{at}/credentials_file"), f));
        if let Some(f) = &credentials_file
            && let Err(why) = check_file_mode(f)
        {
            self.problem(format!("{at}/credentials_file"), why);
        }
        if let Some(why) = credentials_file
            .as_deref()
            .and_then(|f| secret_in_store(f, Path::new(NIX_STORE)))
        {
            self.problem(format!("{at}/credentials_file"), why);
        }

        let encryption = self.encryption_or(&at, d, global_encryption);
        if d.encryption.is_none() && encryption.is_none() && !d.allow_unencrypted {
            self.problem(
                at.clone(),
                format!(
                    "cloud destination {:?} has no encryption: its archives would leave this machine in the clear. \
                     Add `encryption` (age recipients; `dbackup keygen` makes a key pair) here or at the top level, \
                     or set \"allow_unencrypted\": true to upload plain archives knowingly",
                    d.name
                ),
            );
        }

        let classes = d.storage_class.clone().unwrap_or_default();
        for (key, class) in [
            ("archives", &classes.archives),
            ("metadata", &classes.metadata),
        ] {
            let Some(c) = class else { continue };
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
            {
                self.problem(
                    format!("{at}/storage_class/{key}"),
                    format!(
                        "{:?} is not a storage class; write it as the service names it (\"STANDARD_IA\", \"GLACIER_IR\")",
                        crate::stdx::show_str(c)
                    ),
                );
            }
        }
        if let Some(c) = &classes.metadata
            && CloudSettings::COLD_CLASSES.contains(&c.as_str())
        {
            self.problem(
                format!("{at}/storage_class/metadata"),
                format!(
                    "{c} cannot be read without thawing it first, and every listing and restore reads the metadata; \
                     keep metadata in a standard class (only `archives` may be cold)"
                ),
            );
        }
        if kind == CloudKind::B2 && (d.storage_class.is_some() || d.object_lock_days.is_some()) {
            self.problem(
                at.to_string(),
                "B2's native API has no storage classes and dbackup does not set its file locks: use \
                 \"kind\": \"s3\" with B2's S3-compatible endpoint for `storage_class` or `object_lock_days`",
            );
        }
        if d.object_lock_days == Some(0) {
            self.problem(
                format!("{at}/object_lock_days"),
                "0 days locks nothing; remove `object_lock_days` or give 1 or more",
            );
        }
        let bwlimit = d
            .bwlimit
            .as_ref()
            .and_then(|b| match bwlimit::Bwlimit::from_config(b) {
                Ok(b) => Some(b),
                Err(why) => {
                    self.problem(format!("{at}/bwlimit"), why);
                    None
                }
            });
        if d.timeout_seconds == Some(0) {
            self.problem(
                format!("{at}/timeout_seconds"),
                "0 seconds leaves no time for any request; give 1 or more",
            );
        }
        let path_style = d.path_style.unwrap_or(endpoint.is_some());

        (self.problems.len() == before).then(|| CloudSettings {
            name: d.name.clone(),
            kind,
            endpoint,
            bucket,
            bucket_id: d.bucket_id.clone(),
            prefix,
            region,
            path_style,
            profile: d.profile.clone(),
            credentials_file,
            priority: d.priority,
            retention,
            keep_at_least,
            encryption,
            allow_unencrypted: d.allow_unencrypted,
            schedule: d.schedule,
            storage_class_archives: classes.archives,
            storage_class_metadata: classes.metadata,
            object_lock_days: d.object_lock_days,
            bwlimit,
            retries: d.retries.unwrap_or(CloudSettings::DEFAULT_RETRIES),
            timeout_seconds: d
                .timeout_seconds
                .unwrap_or(CloudSettings::DEFAULT_TIMEOUT_SECONDS),
        })
    }

    /// Checks an `encryption` object: recipients or a passphrase (not both), each inline recipient a public key.
    fn encryption(&mut self, at: &str, e: &Encryption) -> Option<EncryptionSettings> {
        let before = self.problems.len();
        for (i, r) in e.recipients.iter().enumerate() {
            if let Err(err) = r.parse::<Recipient>() {
                self.problem(format!("{at}/recipients/{i}"), err.to_string());
            }
        }
        let has_recipients = !e.recipients.is_empty() || e.recipients_file.is_some();
        if e.passphrase && has_recipients {
            self.problem(
                at,
                "age encrypts to a passphrase or to recipients, not both: remove `passphrase` or the recipients",
            );
        } else if !e.passphrase && !has_recipients && e.identity_file.is_none() {
            self.problem(
                at,
                "encryption needs `recipients` (age1... or ssh public keys), a `recipients_file`, or \
                 `passphrase: true` (an `identity_file` alone reads backups but cannot write them); \
                 `dbackup keygen` creates a key pair",
            );
        }
        if e.passphrase_file.is_some() && !e.passphrase {
            self.problem(
                format!("{at}/passphrase_file"),
                "`passphrase_file` is only used with `passphrase: true`",
            );
        }
        let path = |b: &mut Self, key: &str, v: &Option<String>| {
            v.as_ref().and_then(|v| b.path(format!("{at}/{key}"), v))
        };
        let recipients_file = path(self, "recipients_file", &e.recipients_file);
        let identity_file = path(self, "identity_file", &e.identity_file);
        let passphrase_file = path(self, "passphrase_file", &e.passphrase_file);
        for (key, file) in [
            ("identity_file", &identity_file),
            ("passphrase_file", &passphrase_file),
        ] {
            if let Some(why) = file
                .as_deref()
                .and_then(|f| secret_in_store(f, Path::new(NIX_STORE)))
            {
                self.problem(format!("{at}/{key}"), why);
            }
        }
        (self.problems.len() == before).then(|| EncryptionSettings {
            recipients: e.recipients.clone(),
            recipients_file,
            identity_file,
            passphrase: e.passphrase,
            passphrase_file,
        })
    }

    /// A drive is a disk of its own: its mount point is not the backup root nor inside it, and not inside a source
    /// whose copy would take it in (rsync crosses into a mounted drive unless `-x` or an anchored exclusion keeps it
    /// out, so every snapshot would copy the drive's backups). The root on the drive is allowed (one disk, two copies).
    fn drives_apart(
        &mut self,
        root: Option<&Path>,
        sets: &[SetSettings],
        destinations: &[DestinationSettings],
        config: &Config,
    ) {
        for d in destinations {
            let index = config
                .destinations
                .iter()
                .position(|c| c.name == d.name)
                .unwrap_or(0);
            let pointer = format!("/destinations/{index}/path");
            let resolved = resolve_existing_prefix(&d.path);
            if let Some(root) = root
                && (d.path.starts_with(root) || resolved.starts_with(resolve_existing_prefix(root)))
            {
                self.problem(
                    pointer.clone(),
                    format!(
                        "destination {:?}'s path {} is inside backup_root {}: the drive's copy would sit among the \
                         snapshots it copies. Name the drive's own mount point (e.g. /media/$USER/T9)",
                        d.name,
                        d.path.display(),
                        root.display()
                    ),
                );
                continue;
            }
            for set in sets {
                let one_file_system = set
                    .rsync_args
                    .iter()
                    .any(|a| a == "-x" || a == "--one-file-system");
                let inside = set.sources.iter().find(|src| {
                    d.path.starts_with(&src.path) || resolved.starts_with(&src.resolved)
                });
                let covered = set.exclusions.iter().any(|e| match e {
                    Exclusion::Anchored { pattern, .. } if !e.is_include() => {
                        covers(pattern, &resolved) || covers(pattern, &d.path)
                    }
                    _ => false,
                });
                if let Some(src) = inside
                    && !one_file_system
                    && !covered
                {
                    self.problem(
                        pointer.clone(),
                        format!(
                            "destination {:?}'s path {} is inside source {:?} of set {:?}: each snapshot would copy \
                             the drive's backups while it is plugged in. Add \"{}\" to the set's exclusions, or \
                             \"-x\" to its rsync_args, or mount the drive elsewhere",
                            d.name,
                            d.path.display(),
                            src.configured,
                            set.name,
                            d.path.display()
                        ),
                    );
                }
            }
        }
    }

    fn unique_destination_paths(&mut self, destinations: &[DestinationSettings], config: &Config) {
        for (i, d) in destinations.iter().enumerate() {
            if let Some(first) = destinations[..i].iter().find(|e| e.path == d.path) {
                let index = config
                    .destinations
                    .iter()
                    .position(|c| c.name == d.name)
                    .unwrap_or(i);
                self.problem(
                    format!("/destinations/{index}/path"),
                    format!(
                        "destinations {:?} and {:?} share the path {}",
                        first.name,
                        d.name,
                        d.path.display()
                    ),
                );
            }
        }
    }
}

/// The Nix store: world-readable, and copied to binary caches and other machines.
pub const NIX_STORE: &str = "/nix/store";

/// Why a secret file (an identity, a passphrase) at `path` may not be used: it lies in the Nix store `store`, by its
/// name or through a symlink (home-manager links its files there). `None` when it does not.
pub fn secret_in_store(path: &Path, store: &Path) -> Option<String> {
    let why = "which every user of this machine can read (and which is copied to binary caches and other \
               machines): a secret there is no secret; keep the file outside the store (mode 0600, e.g. \
               ~/.config/dbackup/identity.txt, or a secrets manager's file under /run) and name that file here";
    if path.starts_with(store) {
        return Some(format!("{} is in the Nix store, {why}", path.display()));
    }
    let real = std::fs::canonicalize(path).ok()?;
    real.starts_with(store).then(|| {
        format!(
            "{} is a link into the Nix store ({}), {why}",
            path.display(),
            real.display()
        )
    })
}

/// A safe file name on ext4 and exFAT: what [`schema::SAFE_NAME_PATTERN`] matches.
pub fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(ok)
        && name.len() <= 64
}

/// A bucket name both S3 and B2 could have (3 to 63 letters, digits, `-`, `.`; starting and ending with a letter or
/// digit). Checked because the name becomes part of every request's URL.
fn is_bucket_name(name: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && ends(name.chars().next())
        && ends(name.chars().last())
}

/// An endpoint URL: `http(s)://host[:port][/path]`, without user info, query or fragment (a secret in a URL would
/// be shown by every message that names the destination). Returned without a trailing `/`.
fn check_endpoint(e: &str) -> Result<String, String> {
    let shown = crate::stdx::redact_url(e);
    let Some(rest) = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
    else {
        return Err(format!(
            "\"{shown}\" is not an http:// or https:// URL; write it like \"https://s3.eu-central-1.amazonaws.com\""
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') || e.contains(['?', '#']) {
        return Err(format!(
            "\"{shown}\" holds user info, a query or a fragment; credentials never go in the config: put them in \
             the file `credentials_file` names (mode 0600) or in the environment (AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY)"
        ));
    }
    if authority.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{shown}\" has no host"));
    }
    Ok(e.trim_end_matches('/').to_string())
}

/// A prefix in a bucket: `/`-separated safe names, no `.` or `..`; leading and trailing `/` dropped.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let trimmed = p.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." || !is_safe_name(part) {
            return Err(format!(
                "{:?} is not a usable prefix; use names of {} separated by single `/`",
                crate::stdx::show_str(p),
                schema::SAFE_NAME_RULE
            ));
        }
    }
    Ok(trimmed.to_string())
}

/// Whether an anchored exclusion pattern keeps `path` (and everything under it) out of the snapshot.
/// Only literal directory patterns count (`/a/b`, `/a/b/`, `/a/b/*`, `/a/b/**`, `/a/b/***`).
fn covers(pattern: &str, path: &Path) -> bool {
    let dir = ["/***", "/**", "/*", "/"]
        .iter()
        .find_map(|s| pattern.strip_suffix(s))
        .unwrap_or(pattern);
    if dir.contains(['*', '?', '[']) {
        return false;
    }
    let dir = Path::new(dir);
    // `/a/b/*` excludes what is inside b, not b itself: b is copied empty, which is harmless.
    path.starts_with(dir)
}

/// `path` with symlinks resolved in its longest existing prefix (the backup root may not exist yet).
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut p = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(p) {
            return missing.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                p = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The rules of an `exclude_from` file with their line numbers: blank lines and `#`/`;` comments skipped, `- ` taken
/// off an exclude and `+ ` turned into `!` (an include), like rsync's `--exclude-from` files.
fn exclude_file_rules(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|(n, l)| {
            let rule = if let Some(p) = l.strip_prefix("- ") {
                p.to_string()
            } else if let Some(p) = l.strip_prefix("+ ") {
                format!("!{p}")
            } else {
                l.to_string()
            };
            (n, rule)
        })
        .collect()
}

/// Like ssh with its keys: a credentials file that users other than its owner can read is refused. A missing file
/// is not refused here (it may appear at boot, from a secrets manager); reading it says so.
fn check_file_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(format!(
            "{} can be read by other users (mode {:04o}); run `chmod 600 {}`",
            path.display(),
            m.permissions().mode() & 0o7777,
            path.display()
        )),
        _ => Ok(()),
    }
}

/// What the `rsync_args` check reads: this run's environment, and the files options name.
struct ArgsHost<'a> {
    env: &'a Env,
    /// Set: a file that does not exist reads as empty and is noted here.
    absent: Option<&'a RefCell<Vec<PathBuf>>>,
}

/// The largest file an rsync option may name (exclude patterns, filter rules): read whole to check it.
const RSYNC_FILE_LIMIT: u64 = 16 << 20;

impl crate::rsync_args::Host for ArgsHost<'_> {
    fn expand(&self, value: &str) -> Result<String, String> {
        expand::expand(value, self.env).map_err(|e| e.to_string())
    }

    fn expand_path(&self, value: &str) -> Result<PathBuf, String> {
        expand::expand_path(value, self.env).map_err(|e| e.to_string())
    }

    fn read_file(&self, path: &Path) -> Result<String, String> {
        use std::io::Read;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(absent) = self.absent else {
                    return Err("does not exist".to_string());
                };
                absent.borrow_mut().push(path.to_path_buf());
                return Ok(String::new());
            }
            Err(e) => return Err(e.to_string()),
        };
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        if meta.len() > RSYNC_FILE_LIMIT {
            return Err(format!(
                "is larger than {} MiB; is it the right file?",
                RSYNC_FILE_LIMIT >> 20
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(RSYNC_FILE_LIMIT + 1).read_to_end(&mut bytes))
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Builder<'_> {
    fn args_host(&self) -> ArgsHost<'_> {
        ArgsHost {
            env: self.env,
            absent: self.absent,
        }
    }

    /// The units start on a drive plugged in only when `schedule.external` is not manual (`systemd render`): a
    /// drive's own schedule cannot ask for more than that.
    fn own_drive_schedules(&mut self, config: &Config) {
        if config.schedule.external == ExternalSchedule::Manual {
            for (i, d) in config.destinations.iter().enumerate() {
                if d.kind.is_drive() && d.schedule.is_some_and(|s| s != ExternalSchedule::Manual) {
                    self.problem(
                    format!("/destinations/{i}/schedule"),
                    format!(
                        "drive {:?} asks to be written on its own schedule, but schedule.external is manual, so \
                         nothing starts when a drive is plugged in; set schedule.external to what most drives \
                         want and give the others their own \"schedule\"",
                        d.name
                    ),
                );
                }
            }
        }
    }

    /// `notifications.http` is an http(s) URL (shown redacted: it may carry a token).
    fn notification_url(&mut self, config: &Config) {
        if let Some(url) = &config.notifications.http
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            self.problem(
                "/notifications/http",
                format!(
                    "\"{}\" is not an http:// or https:// URL",
                    crate::stdx::redact_url(url)
                ),
            );
        }
    }

    /// `image.devices`: absolute paths, each once.
    fn image_devices(&mut self, config: &Config) -> Vec<PathBuf> {
        let mut image_devices = Vec::new();
        for (i, d) in config.image.devices.iter().enumerate() {
            let p = PathBuf::from(d);
            if !p.is_absolute() {
                self.problem(
                format!("/image/devices/{i}"),
                format!("{d:?} is not an absolute device path; give one like /dev/nvme0n1p1 or /dev/disk/by-uuid/..."),
            );
            } else if image_devices.contains(&p) {
                self.problem(
                    format!("/image/devices/{i}"),
                    format!("{d:?} is listed twice"),
                );
            } else {
                image_devices.push(p);
            }
        }
        image_devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home: &Path, vars: &[(&str, &str)]) -> Env {
        Env::fake(home, "/", vars)
    }

    /// Builds settings from config text, as if read from `c.json`.
    fn build(text: &str, env: &Env) -> Result<Settings, ConfigError> {
        let (config, positions) = load::parse(Path::new("c.json"), text)?;
        let loaded = Loaded {
            config,
            source: ConfigSource::File("c.json".into()),
            positions,
        };
        Settings::from_loaded(&loaded, env, Output::default())
    }

    /// The one-line messages of a config's semantic problems, with their pointers.
    fn problems(text: &str, env: &Env) -> Vec<String> {
        match build(text, env) {
            Err(ConfigError::Semantic { problems, .. }) => problems
                .iter()
                .map(|p| format!("{}: {}", p.pointer, p.message))
                .collect(),
            Err(other) => panic!("expected semantic problems, got {other}"),
            Ok(_) => panic!("expected semantic problems, got valid settings"),
        }
    }

    #[test]
    fn a_recipient_given_twice_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = crypt::new_identity("now");
        let (_, b) = crypt::new_identity("now");
        let p = dir.path().join("r.txt");
        std::fs::write(&p, format!("{b}\n{a}\n{b}\n")).unwrap();
        let e = EncryptionSettings {
            recipients: vec![a.clone()],
            recipients_file: Some(p),
            identity_file: None,
            passphrase: false,
            passphrase_file: None,
        };
        assert_eq!(e.resolve_record().unwrap().recipients, [a, b]);
    }

    #[test]
    fn a_credentials_file_others_can_read_is_refused_and_a_missing_one_is_not() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("keys");
        std::fs::write(
            &file,
            "aws_access_key_id = ID\naws_secret_access_key = SECRET\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_file_mode(&file).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_file_mode(&file).is_ok());
        assert!(
            check_file_mode(&tmp.path().join("missing")).is_ok(),
            "a missing file is reported when used"
        );
    }

    #[test]
    fn secret_files_in_the_nix_store_are_refused() {
        let e = env(Path::new("/home/u"), &[]);
        let got = problems(
            r#"{ "backup_root": "/b", "backup_sets": [ { "name": "d", "sources": ["/d"] } ],
                 "encryption": { "recipients": ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"],
                                 "identity_file": "/nix/store/abc-identity.txt" },
                 "destinations": [ { "name": "T9", "path": "/media/T9",
                   "encryption": { "passphrase": true, "passphrase_file": "/nix/store/abc-pass" } } ] }"#,
            &e,
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with(
                "/encryption/identity_file: /nix/store/abc-identity.txt is in the Nix store"
            ) && got[0].contains("every user of this machine can read"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("/destinations/0/encryption/passphrase_file: /nix/store/abc-pass"),
            "{got:?}"
        );
        // A link into the store (as home-manager makes them) is refused too; a file outside is fine.
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("abc-identity.txt"), "AGE-SECRET-KEY-1").unwrap();
        let link = tmp.path().join("identity.txt");
        std::os::unix::fs::symlink(store.join("abc-identity.txt"), &link).unwrap();
        let why = secret_in_store(&link, &store).expect("refused");
        assert!(why.contains("is a link into the Nix store"), "{why}");
        std::fs::write(tmp.path().join("own.txt"), "x").unwrap();
        assert_eq!(secret_in_store(&tmp.path().join("own.txt"), &store), None);
        assert_eq!(
            secret_in_store(&tmp.path().join("missing.txt"), &store),
            None
        );
    }

    fn with_set(set: &str) -> String {
        format!(r#"{{ "backup_root": "/b", "backup_sets": [ {set} ] }}"#)
    }

    #[test]
    fn semantic_problems() {
        let home = Path::new("/home/u");
        let e = env(home, &[("DDATA", "/data")]);
        let cases: &[(&str, String, &[&str])] = &[
            (
                "duplicate set names, ignoring case",
                r#"{ "backup_root": "/b", "backup_sets": [
                    { "name": "data", "sources": ["/d"] }, { "name": "Data", "sources": ["/e"] } ] }"#
                    .into(),
                &["/backup_sets/1/name: set name \"Data\" is already taken by set \"data\" (/backup_sets/0)"],
            ),
            (
                "source inside the root",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/b/x"] } ] }"#.into(),
                &["/backup_sets/0/sources/0: source \"/b/x\" is inside backup_root /b"],
            ),
            (
                "source equal to the root",
                r#"{ "backup_root": "~/bk", "backup_sets": [ { "name": "a", "sources": ["~/bk/"] } ] }"#.into(),
                &["/backup_sets/0/sources/0: source \"~/bk/\" is inside backup_root /home/u/bk"],
            ),
            (
                "root inside a source",
                r#"{ "backup_root": "~/bk", "backup_sets": [ { "name": "a", "sources": ["~"] } ] }"#.into(),
                &["/backup_sets/0/sources/0: backup_root /home/u/bk is inside source \"~\""],
            ),
            (
                "root inside a source, excluded by a pattern only",
                r#"{ "backup_root": "~/bk", "backup_sets": [ { "name": "a", "sources": ["~"], "exclusions": ["bk"] } ] }"#
                    .into(),
                &["/backup_sets/0/sources/0: backup_root /home/u/bk is inside source \"~\""],
            ),
            (
                "a drive inside the root",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                    "destinations": [ { "name": "T9", "path": "/b/T9" } ] }"#
                    .into(),
                &["/destinations/0/path: destination \"T9\"'s path /b/T9 is inside backup_root /b"],
            ),
            (
                "a drive at the root",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                    "destinations": [ { "name": "T9", "path": "/b/" } ] }"#
                    .into(),
                &["/destinations/0/path: destination \"T9\"'s path /b is inside backup_root /b"],
            ),
            (
                "a drive inside a source",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["~"] } ],
                    "destinations": [ { "name": "T9", "path": "~/mnt/T9" } ] }"#
                    .into(),
                &["/destinations/0/path: destination \"T9\"'s path /home/u/mnt/T9 is inside source \"~\" of set \"a\""],
            ),
            (
                "a drive inside a source, excluded by a pattern only",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["~"], "exclusions": ["T9"] } ],
                    "destinations": [ { "name": "T9", "path": "~/mnt/T9" } ] }"#
                    .into(),
                &["/destinations/0/path: destination \"T9\"'s path /home/u/mnt/T9 is inside source \"~\" of set \"a\""],
            ),
            (
                "relative, undefined and ~user paths",
                with_set(r#"{ "name": "a", "sources": ["data", "$NOPE/x", "~bob/x", "${DDATA}/ok"] }"#),
                &[
                    "/backup_sets/0/sources/0: \"data\" is a relative path",
                    "/backup_sets/0/sources/1: undefined variable $NOPE in \"$NOPE/x\"",
                    "/backup_sets/0/sources/2: \"~bob/x\" uses `~user`",
                ],
            ),
            (
                "a drive on its own schedule while nothing starts on a drive plugged in",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/x"] } ],
                    "schedule": { "external": "manual" },
                    "destinations": [ { "name": "T9", "path": "/m", "schedule": "always" },
                                      { "name": "old", "path": "/o", "schedule": "manual" } ] }"#
                    .into(),
                &["/destinations/0/schedule: drive \"T9\" asks to be written on its own schedule, but schedule.external is manual"],
            ),
            (
                "relative backup_root",
                r#"{ "backup_root": "backups", "backup_sets": [ { "name": "a", "sources": ["/x"] } ] }"#.into(),
                &["/backup_root: \"backups\" is a relative path"],
            ),
            (
                "exclusion outside every source",
                with_set(r#"{ "name": "a", "sources": ["/data"], "exclusions": ["/etc/x", "~/.cache"] }"#),
                &[
                    "/backup_sets/0/exclusions/0: \"/etc/x\" is not inside any source of set \"a\" (\"/data\")",
                    "/backup_sets/0/exclusions/1: \"~/.cache\" is not inside any source",
                ],
            ),
            (
                "exclusion with a line break (it would split into two rules)",
                with_set(r#"{ "name": "a", "sources": ["/data"], "exclusions": ["a\nb"] }"#),
                &["/backup_sets/0/exclusions/0: \"a\\nb\" holds a line break"],
            ),
            (
                "exclusion of a whole source",
                with_set(r#"{ "name": "a", "sources": ["/data"], "exclusions": ["$DDATA/"] }"#),
                &["/backup_sets/0/exclusions/0: \"$DDATA/\" excludes the whole source \"/data\""],
            ),
            (
                "duplicate sources",
                with_set(r#"{ "name": "a", "sources": ["/data", "$DDATA"] }"#),
                &["/backup_sets/0/sources/1: \"$DDATA\" is the same place as \"/data\""],
            ),
            (
                "rsync args off the allow-list (`--bwlimit 50m` is one option with its value)",
                with_set(
                    r#"{ "name": "a", "sources": ["/d"], "rsync_args": ["--bwlimit", "50m", "-avn", "--remove-source-files", "--dry-run"] }"#,
                ),
                &[
                    "/backup_sets/0/rsync_args/2: rsync option \"-avn\" includes -v (--verbose)",
                    "/backup_sets/0/rsync_args/3: rsync option --remove-source-files would delete your files",
                    "/backup_sets/0/rsync_args/4: rsync option --dry-run would leave the snapshot empty",
                ],
            ),
            (
                "a retention policy that keeps nothing",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                     "retention": { "local": { "last": 0, "daily": 0 } } }"#
                    .into(),
                &["/retention/local: this policy keeps no snapshots"],
            ),
            (
                "an empty retention policy",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                     "retention": { "local": {} } }"#
                    .into(),
                &["/retention/local: this policy keeps no snapshots"],
            ),
            (
                "destinations: duplicate names and paths, relative path",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                     "destinations": [ { "name": "T9", "path": "/media/T9" }, { "name": "t9", "path": "/media/T9/" },
                                       { "name": "x", "path": "media/x" } ] }"#
                    .into(),
                &[
                    "/destinations/1/name: destination name \"t9\" is already taken by destination \"T9\" (/destinations/0)",
                    "/destinations/1/path: destinations \"T9\" and \"t9\" share the path /media/T9",
                    "/destinations/2/path: \"media/x\" is a relative path",
                ],
            ),
            (
                "notification URL",
                r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                     "notifications": { "http": "ntfy.sh/x" } }"#
                    .into(),
                &["/notifications/http: \"ntfy.sh/***\" is not an http:// or https:// URL"],
            ),
        ];
        for (what, text, want) in cases {
            let got = problems(text, &e);
            assert_eq!(got.len(), want.len(), "{what}: {got:#?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g.starts_with(w), "{what}:\n  got:  {g}\n  want: {w}...");
            }
        }
    }

    /// A drive inside a source is accepted when the set keeps it out (an exclusion, `-x`), and the backup root may
    /// be on the drive.
    #[test]
    fn drives_kept_apart_are_accepted() {
        let e = env(Path::new("/home/u"), &[]);
        for text in [
            r#"{ "backup_root": "/b", "backup_sets": [
                  { "name": "a", "sources": ["~"], "exclusions": ["~/mnt/T9"] },
                  { "name": "c", "sources": ["~/mnt"], "rsync_args": ["-x"] },
                  { "name": "d", "sources": ["/d"] } ],
                "destinations": [ { "name": "T9", "path": "~/mnt/T9" } ] }"#,
            r#"{ "backup_root": "/media/T9/snapshots", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                "destinations": [ { "name": "T9", "path": "/media/T9" } ] }"#,
        ] {
            if let Err(err) = build(text, &e) {
                panic!("{text}: {err}");
            }
        }
    }

    /// What a cloud destination may and may not say: the keys of its kind only, a bucket (and a B2 bucket id),
    /// encryption unless `allow_unencrypted`, no user info in the endpoint, metadata never in a cold class, a
    /// usable prefix, rate and window.
    #[test]
    fn cloud_destinations_are_validated() {
        let e = env(Path::new("/home/u"), &[]);
        let with = |dest: &str| {
            format!(
                r#"{{ "backup_root": "/b", "backup_sets": [ {{ "name": "a", "sources": ["/d"] }} ],
                      "destinations": [ {dest} ] }}"#
            )
        };
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "no encryption",
                r#"{ "name": "c", "kind": "s3", "bucket": "bkt" }"#,
                &["/destinations/0: cloud destination \"c\" has no encryption"],
            ),
            (
                "drive keys on a bucket, no bucket",
                r#"{ "name": "c", "kind": "s3", "path": "/m", "fs_label": "T9", "allow_unencrypted": true }"#,
                &[
                    "/destinations/0/path: `path` is for drives",
                    "/destinations/0/fs_label: `fs_label` is for drives",
                    "/destinations/0/bucket: cloud destination \"c\" has no `bucket`",
                ],
            ),
            (
                "cloud keys on a drive, no path",
                r#"{ "name": "d", "bucket": "bkt", "object_lock_days": 3 }"#,
                &[
                    "/destinations/0/bucket: `bucket` is for cloud destinations",
                    "/destinations/0/object_lock_days: `object_lock_days` is for cloud destinations",
                    "/destinations/0/path: drive destination \"d\" has no `path`",
                ],
            ),
            (
                "b2 without a bucket id, with s3 keys",
                r#"{ "name": "c", "kind": "b2", "bucket": "bkt", "region": "x", "allow_unencrypted": true }"#,
                &[
                    "/destinations/0/region: `region` is for \"kind\": \"s3\"",
                    "/destinations/0/bucket_id: a b2 destination needs `bucket_id`",
                ],
            ),
            (
                "secrets in the endpoint, a bad prefix and bucket",
                r#"{ "name": "c", "kind": "s3", "bucket": "B_", "endpoint": "https://AKIA:SECRET@s3.example.com/",
                     "prefix": "a/../b", "allow_unencrypted": true }"#,
                &[
                    "/destinations/0/bucket: \"B_\" is not a bucket name",
                    "/destinations/0/endpoint: \"https://s3.example.com/***\" holds user info",
                    "/destinations/0/prefix: \"a/../b\" is not a usable prefix",
                ],
            ),
            (
                "cold metadata, bad class, bad window",
                r#"{ "name": "c", "kind": "s3", "bucket": "bkt", "allow_unencrypted": true,
                     "storage_class": { "archives": "glacier", "metadata": "DEEP_ARCHIVE" },
                     "bwlimit": { "rate": "2M", "window": "8-23" } }"#,
                &[
                    "/destinations/0/storage_class/archives: \"glacier\" is not a storage class",
                    "/destinations/0/storage_class/metadata: DEEP_ARCHIVE cannot be read without thawing",
                    "/destinations/0/bwlimit: \"8-23\" is not a window",
                ],
            ),
        ];
        for (what, dest, want) in cases {
            let got = problems(&with(dest), &e);
            assert_eq!(got.len(), want.len(), "{what}: {got:#?}");
            // In any order: the problems come in the order the validation finds them.
            for w in want.iter() {
                assert!(
                    got.iter().any(|g| g.starts_with(w)),
                    "{what}:\n  got:  {got:#?}\n  want: {w}..."
                );
            }
            // The user info's secret never echoes (the message names AWS_SECRET_ACCESS_KEY, which is no secret).
            assert!(
                !got.iter()
                    .any(|g| g.contains("SECRET@") || g.contains("AKIA:")),
                "{what}: {got:#?}"
            );
        }
    }

    #[test]
    fn a_cloud_destination_normalises_and_keeps_drives_apart() {
        let e = env(Path::new("/home/u"), &[]);
        let s = build(
            r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                 "encryption": { "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"] },
                 "destinations": [ { "name": "T9", "path": "/media/T9" },
                   { "name": "off", "kind": "s3", "endpoint": "http://127.0.0.1:3900/", "bucket": "bkt",
                     "prefix": "/laptop/x/", "schedule": "weekly", "storage_class": { "archives": "GLACIER_IR" },
                     "bwlimit": "2M", "credentials_file": "~/.config/dbackup/s3.ini" },
                   { "name": "aws", "kind": "s3", "bucket": "bkt2", "region": "eu-central-1", "allow_unencrypted": true } ] }"#,
            &e,
        )
        .unwrap();
        assert_eq!(s.destinations.len(), 1, "the drives");
        assert_eq!(s.clouds.len(), 2);
        let c = s.cloud("off").unwrap();
        assert_eq!(c.kind, CloudKind::S3);
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(c.prefix, "laptop/x");
        assert_eq!(c.region, "us-east-1");
        assert!(c.path_style, "path style with an endpoint");
        assert!(c.encryption.is_some(), "the top-level encryption");
        assert_eq!(c.schedule, Some(ExternalSchedule::Weekly));
        assert_eq!(c.storage_class_archives.as_deref(), Some("GLACIER_IR"));
        assert_eq!(c.storage_class_metadata, None);
        assert_eq!(c.bwlimit.unwrap().bytes_per_second, 2 << 20);
        assert_eq!(
            c.credentials_file.as_deref(),
            Some(Path::new("/home/u/.config/dbackup/s3.ini"))
        );
        assert_eq!((c.retries, c.timeout_seconds), (6, 60));
        assert_eq!(c.place(), "s3 http://127.0.0.1:3900 bkt/laptop/x");
        let aws = s.cloud("aws").unwrap();
        assert!(!aws.path_style, "host style on AWS");
        assert_eq!(aws.place(), "s3 AWS eu-central-1 bkt2");
    }

    /// The secret files a config names: each destination's identity and passphrase files and a bucket's credentials
    /// file, each once (a top-level identity every destination carries is named by the first), with its setting.
    /// The top-level `encryption`'s files need no entry of their own: with one, every destination is encrypted (its
    /// own, or the top level's; `"encryption": null` is no opt-out), so none could receive them in the clear.
    #[test]
    fn the_secret_files_are_every_identity_passphrase_and_credentials_file_once() {
        let e = env(Path::new("/home/u"), &[]);
        let s = build(
            r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                 "encryption": { "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
                                 "identity_file": "~/id.txt" },
                 "destinations": [ { "name": "T9", "path": "/media/T9" },
                   { "name": "pw", "path": "/media/pw",
                     "encryption": { "passphrase": true, "passphrase_file": "~/pass" } },
                   { "name": "plain", "path": "/media/plain", "encryption": null },
                   { "name": "off", "kind": "s3", "endpoint": "http://127.0.0.1:3900/", "bucket": "bkt",
                     "credentials_file": "~/s3.ini" } ] }"#,
            &e,
        )
        .unwrap();
        let got: Vec<(String, String, NamedBy)> = (s.secret_files(&e).into_iter())
            .map(|f| (f.path.display().to_string(), f.field, f.named_by))
            .collect();
        let want = [
            ("/home/u/id.txt", "identity_file of destination T9"),
            ("/home/u/pass", "passphrase_file of destination pw"),
            ("/home/u/s3.ini", "credentials_file of destination off"),
        ]
        .map(|(p, f)| (p.to_string(), f.to_string(), NamedBy::Config));
        assert_eq!(got, want);
        let unencrypted: Vec<&str> = (s.destinations.iter().map(|d| (&d.name, &d.encryption)))
            .chain(s.clouds.iter().map(|c| (&c.name, &c.encryption)))
            .filter(|(_, e)| e.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(unencrypted, Vec::<&str>::new());
    }

    /// The secret files dbackup reads that the config does not name: the file `$DBACKUP_PASSPHRASE_FILE` names (once,
    /// as the config's when it names it too), and the AWS shared credentials and config files (each variable's, else
    /// the default place) of the s3 destinations without `credentials_file`, once; a b2 destination reads no file.
    #[test]
    fn the_secret_files_include_those_the_environment_and_aws_defaults_name() {
        let config = r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
                 "destinations": [
                   { "name": "pw", "path": "/media/pw",
                     "encryption": { "passphrase": true, "passphrase_file": "~/pass" } },
                   { "name": "off", "kind": "s3", "endpoint": "http://127.0.0.1:3900/", "bucket": "bkt",
                     "allow_unencrypted": true },
                   { "name": "off2", "kind": "s3", "endpoint": "http://127.0.0.1:3900/", "bucket": "bkt2",
                     "allow_unencrypted": true },
                   { "name": "b2", "kind": "b2", "bucket": "bkt3", "bucket_id": "4a48fe8875c6214145260818",
                     "allow_unencrypted": true } ] }"#;
        let got = |vars: &[(&str, &str)]| -> Vec<(String, String, NamedBy)> {
            let e = env(Path::new("/home/u"), vars);
            (build(config, &e).unwrap().secret_files(&e).into_iter())
                .map(|f| (f.path.display().to_string(), f.field, f.named_by))
                .collect()
        };
        let want = |rows: &[(&str, &str, NamedBy)]| -> Vec<(String, String, NamedBy)> {
            rows.iter()
                .map(|(p, f, n)| (p.to_string(), f.to_string(), *n))
                .collect()
        };
        let pass = (
            "/home/u/pass",
            "passphrase_file of destination pw",
            NamedBy::Config,
        );
        assert_eq!(
            got(&[]),
            want(&[
                pass,
                (
                    "/home/u/.aws/credentials",
                    "the AWS shared credentials file of destination off",
                    NamedBy::Default
                ),
                (
                    "/home/u/.aws/config",
                    "the AWS config file of destination off",
                    NamedBy::Default
                ),
            ])
        );
        assert_eq!(
            got(&[
                ("DBACKUP_PASSPHRASE_FILE", "/run/pass"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/aws/creds"),
                ("AWS_CONFIG_FILE", "/home/u/.aws/config"),
            ]),
            want(&[
                pass,
                (
                    "/run/pass",
                    "the passphrase file $DBACKUP_PASSPHRASE_FILE names",
                    NamedBy::Environment
                ),
                (
                    "/etc/aws/creds",
                    "the AWS shared credentials file of destination off ($AWS_SHARED_CREDENTIALS_FILE)",
                    NamedBy::Environment
                ),
                (
                    "/home/u/.aws/config",
                    "the AWS config file of destination off ($AWS_CONFIG_FILE)",
                    NamedBy::Environment
                ),
            ])
        );
        // The variable naming the config's own passphrase file: once, as the config's.
        assert_eq!(
            got(&[("DBACKUP_PASSPHRASE_FILE", "/home/u/pass")])[..1],
            want(&[pass])[..]
        );
        assert_eq!(got(&[("DBACKUP_PASSPHRASE_FILE", "/home/u/pass")]).len(), 3);
    }

    #[test]
    fn exclusions_are_classified_and_anchored_at_resolved_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&data, home.join("data")).unwrap();
        let data = std::fs::canonicalize(&data).unwrap();
        let home_real = std::fs::canonicalize(&home).unwrap();
        let e = env(&home, &[("CACHE", "Cache")]);
        let s = build(
            r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["~/data", "~/.config", "~/missing"],
                 "exclusions": ["*.log", "tmp/*", "~/.config/Code/$CACHE/*", "~/data/big/", "~/missing/x", "node_modules/"] } ] }"#,
            &e,
        )
        .unwrap();
        let set = &s.sets[0];
        assert_eq!(set.sources[0].path, home.join("data"));
        assert_eq!(set.sources[0].resolved, data, "a symlinked source resolves");
        assert_eq!(
            set.sources[2].resolved,
            home.join("missing"),
            "a missing source resolves to itself"
        );
        let got: Vec<(&str, &str)> = set
            .exclusions
            .iter()
            .map(|x| match x {
                Exclusion::Pattern { pattern, .. } => ("pattern", pattern.as_str()),
                Exclusion::Anchored { pattern, .. } => ("anchored", pattern.as_str()),
            })
            .collect();
        let cache = format!("{}/.config/Code/Cache/*", home_real.display());
        let big = format!("{}/big/", data.display());
        let missing = format!("{}/missing/x", home.display());
        assert_eq!(
            got,
            [
                ("pattern", "*.log"),
                ("pattern", "tmp/*"),
                ("anchored", cache.as_str()),
                ("anchored", big.as_str()),
                ("anchored", missing.as_str()),
                ("pattern", "node_modules/"),
            ]
        );
        assert_eq!(set.exclusions[2].rsync_pattern(), cache);
    }

    #[test]
    fn an_anchored_exclusion_lets_the_root_live_inside_a_source() {
        let e = env(Path::new("/home/u"), &[]);
        for exclusion in [
            "~/bk",
            "~/bk/",
            "~/bk/*",
            "~/bk/***",
            "/home/u/bk/snapshots/..",
        ] {
            let text = format!(
                r#"{{ "backup_root": "~/bk", "backup_sets": [ {{ "name": "a", "sources": ["~"], "exclusions": [{exclusion:?}] }} ] }}"#
            );
            assert!(build(&text, &e).is_ok(), "{exclusion} should cover ~/bk");
        }
        for exclusion in ["~/bk*", "~/b?/", "~/bk/snapshots"] {
            let text = format!(
                r#"{{ "backup_root": "~/bk", "backup_sets": [ {{ "name": "a", "sources": ["~"], "exclusions": [{exclusion:?}] }} ] }}"#
            );
            assert!(
                build(&text, &e).is_err(),
                "{exclusion} should not count as covering ~/bk"
            );
        }
    }

    #[test]
    fn defaults_come_from_the_environment() {
        let home = Path::new("/home/u");
        let text = r#"{ "backup_sets": [ { "name": "a", "sources": ["/d"] } ] }"#;
        let s = build(text, &env(home, &[])).unwrap();
        assert_eq!(s.backup_root, home.join(".local/share/dbackup"));
        assert_eq!(s.state_dir, home.join(".local/state/dbackup"));
        assert_eq!(
            s.retention_local,
            RetentionPolicy {
                last: Some(7),
                ..Default::default()
            }
        );
        assert_eq!(s.retention_external, RetentionPolicy::last(5));
        assert_eq!(s.keep_at_least, 2);

        let s = build(
            text,
            &env(home, &[("DBACKUP", "/srv/bk/"), ("XDG_STATE_HOME", "/st")]),
        )
        .unwrap();
        assert_eq!(s.backup_root, Path::new("/srv/bk"));
        assert_eq!(s.state_dir, Path::new("/st/dbackup"));

        let s = build(text, &env(home, &[("XDG_STATE_HOME", "relative/ignored")])).unwrap();
        assert_eq!(
            s.state_dir,
            home.join(".local/state/dbackup"),
            "a relative XDG dir is ignored"
        );

        match build(text, &env(home, &[("DBACKUP", "rel")])) {
            Err(ConfigError::Semantic { problems, .. }) => {
                assert!(
                    problems[0].message.starts_with(
                        "$DBACKUP (the default backup_root): \"rel\" is a relative path"
                    )
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn destinations_and_retention_normalise() {
        let text = r#"{ "backup_root": "/b", "backup_sets": [ { "name": "a", "sources": ["/d"] } ],
            "retention": { "local": { "daily": 7, "weekly": 4 }, "external": 3 },
            "destinations": [ { "name": "T9", "path": "$MEDIA/T9/", "fs_label": "T9" },
                              { "name": "old", "path": "/media/old", "retention": 1, "priority": -1, "require_mount": false } ] }"#;
        let s = build(
            text,
            &env(Path::new("/home/u"), &[("MEDIA", "/media/payne")]),
        )
        .unwrap();
        assert_eq!(
            s.retention_local,
            RetentionPolicy {
                daily: Some(7),
                weekly: Some(4),
                ..Default::default()
            }
        );
        assert_eq!(
            s.destinations,
            [
                DestinationSettings {
                    name: "T9".into(),
                    path: "/media/payne/T9".into(),
                    priority: 0,
                    fs_uuid: None,
                    fs_label: Some("T9".into()),
                    retention: RetentionPolicy::last(3),
                    keep_at_least: 2,
                    require_mount: true,
                    encryption: None,
                    schedule: None,
                },
                DestinationSettings {
                    name: "old".into(),
                    path: "/media/old".into(),
                    priority: -1,
                    fs_uuid: None,
                    fs_label: None,
                    retention: RetentionPolicy::last(1),
                    keep_at_least: 2,
                    require_mount: false,
                    encryption: None,
                    schedule: None,
                },
            ]
        );
    }

    #[test]
    fn the_built_in_default_builds() {
        let home = Path::new("/home/u");
        let loaded = Loaded {
            config: crate::config::default::config(&env(home, &[])),
            source: ConfigSource::BuiltIn,
            positions: Default::default(),
        };
        let s = Settings::from_loaded(&loaded, &env(home, &[]), Output::default()).unwrap();
        assert_eq!(s.sets.len(), 2);
        assert_eq!(
            s.sets[1].exclusions[0].rsync_pattern(),
            "/home/u/.config/Code/Cache/*"
        );
    }
}
