//! The command line, as clap structs that only mirror it; `argv[0]` dispatch for the seed's command names.
//!
//! Nothing here reads the config or touches the disk (but the TAB completers of set and destination names, which live
//! in `complete`): [`crate::settings::Settings`] is built from these structs plus the config before any
//! phase runs.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

// `restore --source`, `--overwrite` and `--compare` take the restore's own types (their variants' comments are the
// help text).
use crate::restore::select::Kept;
use crate::restore::{Compare, Overwrite};
// Set and destination names offered on TAB, read from the config (the only config reading the command line does).
use crate::complete;

/// `--help`'s closing text: the exit codes (from `exit::DOCUMENTED`, as the man page's EXIT STATUS), then this.
fn after_help() -> String {
    let codes: Vec<String> = crate::exit::DOCUMENTED
        .iter()
        .map(|(code, meaning)| format!("  {code:<9}{meaning}"))
        .collect();
    format!("Exit codes:\n{}\n\n{AFTER_HELP}", codes.join("\n"))
}

pub(crate) const AFTER_HELP: &str = "\
The config is read from --config, else $DBACKUP_CONFIG, else
$XDG_CONFIG_HOME/dbackup/config.json (~/.config/dbackup/config.json), else a built-in
default that backs up $DDATA (or /data), ~/.config, ~/env.sh and ~/.secrets.
Run `dbackup config init` to write that default where you can edit it.

The same binary answers to backup-collect, backup-external, backup and backup-restore
when invoked through links of those names.

Examples:
  dbackup config init             # once: write the default config, then edit it
  dbackup --dry-run backup        # what would run now, and why; changes nothing
  dbackup backup                  # collect what is due, then the drive when present
  dbackup status                  # what is overdue
  dbackup restore --list          # every backup, local and on present drives
  dbackup help restore            # each command's options and examples";

/// Two-phase backup for one Linux workstation: hard-linked rsync snapshots under the backup
/// root, then verified tar archives on a removable drive.
#[derive(Debug, Parser)]
#[command(name = "dbackup", version, after_help = after_help(), propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Config file (JSON, `//` and `/* */` comments allowed) [env: DBACKUP_CONFIG]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print results as JSON on stdout (progress and logs still go to stderr)
    #[arg(long, global = true)]
    pub json: bool,

    /// Show what would be done, change nothing
    #[arg(short = 'n', long, global = true)]
    pub dry_run: bool,

    /// Print less: errors only (-q) or nothing but the result (-qq)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Print more: each step (-v), the rsync and tar commands and their output (-vv)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy every backup set into a new hard-linked snapshot under the backup root (rsync --link-dest)
    #[command(
        after_help = "Each run writes, for every set, <backup_root>/<set>-<YYYY-MM-DD-HHMMSS>/ and its metadata \
<set>-<YYYY-MM-DD-HHMMSS>.json: rsync copies into .<set>.in-progress/, which is renamed into place when it is done \
(unchanged files are hard links into the previous snapshot). Only then does <set>-latest move to it and are the \
set's snapshots beyond retention.local removed (a count or a policy; while a source is missing, the newest snapshot \
holding it stays). --dry-run shows each set's rsync command and every snapshot retention would remove, and writes \
nothing.\n\n\
Exit codes: 0 every set collected; 3 with warnings (a source missing: the snapshot is kept, \
marked incomplete; files that vanished or could not be read); 1 a set failed (the others are still collected); \
4 another dbackup run holds the lock.\n\n\
Examples:\n  dbackup collect                 # every set\n  dbackup collect --set config    # one set\n  dbackup collect --full          # compare contents, not just size and mtime\n  dbackup --dry-run collect       # show the plan: rsync commands, snapshots to prune"
    )]
    Collect(CollectArgs),
    /// Write each set's latest snapshot as a verified tar archive onto a removable drive
    #[command(
        after_help = "Each run writes <drive>/backups/<YYYY-MM-DD-HHMMSS>/ holding <set>.tar and <set>.index.jsonl \
for every set, backup.json, and verification.sha256 (check it with `sha256sum -c verification.sha256` in that \
directory). The archives are read back from the drive and compared before the directory gets its final name; only \
then does `latest` move (a symlink, or a LATEST text file on exFAT) and are backups beyond the retention removed \
(retention.external: a count or a policy; a backup a kept one depends on stays). When the new backup does not fit, \
the oldest backups are removed first, never below retention.keep_at_least (space-aware rotation, a warning); \
--dry-run lists every backup kept or removed, and why.\n\n\
With `encryption` in the config (or in the destination's entry) the archives are encrypted with age on the way to \
the drive, in the same pass: <set>.tar.age and <set>.index.age, and verification.sha256 covers those encrypted \
files (checkable without the key). Only the public recipients are needed; the identity is never read here. \
Without dbackup: `age -d -i identity.txt <set>.tar.age | tar -xpf - -C /` (docs/RESTORE.md).\n\n\
By default (external.incremental.enabled) a set's archive holds only what changed since the previous backup of the \
set on the drive (an incremental; its index still lists every file and where its bytes are) until a limit calls for \
a full: 6 incrementals (max_chain: a restore reads at most 7 archives), incrementals over 50% of the full \
(max_percent: a full then costs little more), a full 30 days old (full_after_days). Files that look unchanged are \
read and compared when schedule.full is due. --dry-run says which, and why.\n\n\
A cloud destination (\"kind\": \"s3\" or \"b2\") gets the same backup under <prefix>/backups/<stamp>/, uploaded in \
objects of 128 MiB (<set>.tar.partNNN, or <set>.tar.partNNN.age: each an age stream of its own); backup.json, \
written last, makes it a backup. An upload that was interrupted (killed, the server or the network gone) is resumed \
by the next run, part by part, when it would upload the same archives: the parts the bucket holds are regenerated \
and compared with a local journal, not uploaded again; --dry-run says `resume <stamp>: 3 of 9 parts uploaded`.\n\n\
Exit codes: 0 written and verified; 3 the same with warnings; 5 no destination present (why each one is absent \
is printed); 4 another dbackup run holds the lock; 1 failed (nothing that was not verified is promoted).\n\n\
Examples:\n  \
dbackup keygen                      # once: an identity, and the age1... recipient it prints\n  \
dbackup external                    # the first present destination (external.mode)\n  \
dbackup external --destination T9   # that drive only\n  \
dbackup external --set config       # one set\n  \
dbackup external --full             # full archives now (new incremental chains start)\n  \
dbackup --dry-run external          # what would be written and removed, and the space it needs\n  \
dbackup external --destination offsite   # a bucket: resumes an interrupted upload, else uploads"
    )]
    External(ExternalArgs),
    /// Run what is due: collect, then the external phase when a drive is present
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),
    /// List, restore or verify backups, from local snapshots or from the drive
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),
    /// List what one backup holds under a path (kind, mode, size, mtime), from a snapshot or a drive's index
    #[command(after_help = LS_HELP)]
    Ls(LsArgs),
    /// Find which backups hold paths matching a pattern, and in which versions, newest first
    #[command(after_help = FIND_HELP)]
    Find(FindArgs),
    /// List the backups, local and on present drives: `restore --list` under restic's name
    #[command(after_help = SNAPSHOTS_HELP)]
    Snapshots(SnapshotsArgs),
    /// Show the state of every set and destination, and what is overdue
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Write the status page: one self-contained HTML file that says whether the backups are good
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
    /// Serve the status page on a local address (read-only), fresh for each request
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Create an age key pair for encrypted backups: the identity (secret) in a 0600 file, the recipient printed
    #[command(after_help = KEYGEN_HELP)]
    Keygen(KeygenArgs),
    /// The full-system image: the recovery kit, partition images, and their restore onto a blank disk
    #[command(subcommand)]
    Image(ImageCommand),
    /// Cloud destinations (S3, Backblaze B2): check what this machine's key can do with the bucket
    #[command(subcommand)]
    Cloud(CloudCommand),
    /// Check, print or create the config
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write the systemd units and udev rule that run dbackup on its schedule (for installs without Nix)
    #[command(subcommand)]
    Systemd(SystemdCommand),
    /// Print shell completions or write the man pages (for packagers)
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

const KEYGEN_HELP: &str = "The identity file is what `age-keygen` writes: a comment with the public key, then the \
AGE-SECRET-KEY-1... line. It never goes on the drive: put only the printed age1... recipient in the config \
(`encryption.recipients`); backups then need no secret at all. Keep a copy of the identity somewhere other than the \
drive and this computer (a password manager, a printout in a drawer): without it, encrypted backups cannot be \
restored by anyone, dbackup included.\n\n\
Examples:\n  \
dbackup keygen                              # writes ~/.config/dbackup/identity.txt\n  \
dbackup keygen --out /media/usb-key/dbackup.key\n  \
dbackup --dry-run keygen                    # where it would write the identity; writes nothing\n\n\
Restoring without dbackup (from a backup directory on the drive):\n  \
age -d -i ~/.config/dbackup/identity.txt data.tar.age | tar -xpf - -C /";

#[derive(Debug, Clone, Args, Default)]
pub struct KeygenArgs {
    /// Where to write the identity (never overwritten); default: $XDG_CONFIG_HOME/dbackup/identity.txt
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct CollectArgs {
    /// Collect only this set (repeatable); default: every set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub sets: Vec<String>,

    /// Compare file contents (rsync --checksum) instead of trusting size and mtime
    #[arg(long)]
    pub full: bool,

    /// Accept a source that is empty or much smaller than its last snapshot (e.g. after a real clean-up)
    #[arg(long)]
    pub allow_shrink: bool,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ExternalArgs {
    /// Export only this set (repeatable); default: every set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub sets: Vec<String>,

    /// Write only to this destination (by name), whatever external.mode says
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(complete::destination_names))]
    pub destination: Option<String>,

    /// Export a set's newest snapshot even when it is incomplete (some files could not be read when it was
    /// made); by default only complete snapshots are exported
    #[arg(long)]
    pub allow_incomplete: bool,

    /// Write full archives (every file's content), even where external.incremental would write an incremental
    #[arg(long)]
    pub full: bool,

    /// Decide full or incremental, and whether contents are compared, as if it were this time (RFC 3339); for tests
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<DateTime<FixedOffset>>,
}

const BACKUP_HELP: &str = "\
What is due is computed from the backups that exist (their metadata), at every run:
collect runs for a set whose newest complete snapshot is older than schedule.incremental
allows (hourly: 50 minutes, daily: 20 hours, weekly: 6 days, monthly: 27 days), and
compares contents (rsync --checksum) when schedule.full says the last comparison is that
old. The external phase runs when schedule.external is always, or when the newest verified
backup on a drive is that old; manual leaves the drive alone (use `dbackup external`).

A due external phase without a drive present is not a failure: the run exits 0 (3 with
other warnings) and sends a missing_media notification. A set whose collect fails does not
stop the others; the drive only ever gets complete snapshots.

Examples:
  dbackup backup                  # what is due now
  dbackup --dry-run backup        # what would run, and why (--json: as JSON)
  dbackup backup --force          # both phases now, whatever the schedule says";

const STATUS_HELP: &str = "\
Reads metadata only (snapshot metadata files, each drive's backup.json, the run log), so it
answers at once however many files the snapshots hold. A drive that is not plugged in is
shown with why, and with the newest backup the run log says was written to it.

Overdue: no complete snapshot of a set for 3 hours (hourly), 36 hours (daily), 10 days
(weekly) or 45 days (monthly); likewise for external backups under schedule.external.

Examples:
  dbackup status                  # the table
  dbackup status --json           # for scripts
  dbackup status --check          # exit 1 when anything is overdue, failed or damaged, 3 when
                                  # something could not be looked at";

/// A time for the hidden `--now` (RFC 3339).
fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{e}; give a time like 2025-04-10T09:00:00+02:00"))
}

#[derive(Debug, Clone, Args, Default)]
pub struct BackupArgs {
    /// Run both phases now, whatever the schedule says (even with "external": "manual")
    #[arg(long)]
    pub force: bool,

    /// Decide what is due as if it were this time (RFC 3339); for tests
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<DateTime<FixedOffset>>,
}

/// `restore --source`: where from, and for `cloud:NAME` which cloud destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    pub kept: Kept,
    pub cloud: Option<String>,
}

/// TAB on `--source`: its words and the config's cloud destinations.
fn source_completer() -> ArgValueCompleter {
    ArgValueCompleter::new(complete::source_values)
}

fn parse_restore_source(s: &str) -> Result<RestoreSource, String> {
    if let Some(name) = s.strip_prefix("cloud:") {
        if name.is_empty() {
            return Err("cloud:NAME needs the cloud destination's name".into());
        }
        return Ok(RestoreSource {
            kept: Kept::Cloud,
            cloud: Some(name.to_string()),
        });
    }
    <Kept as clap::ValueEnum>::from_str(s, false)
        .map(|kept| RestoreSource { kept, cloud: None })
        .map_err(|_| format!("{s:?}: expected local, external (or drive), cloud or cloud:NAME"))
}

const RESTORE_HELP: &str = "\
Examples:
  dbackup restore --list
      every backup: the local snapshots and the backups on present drives
  dbackup restore --date 2025-04-01 --path ~/.config
      that day's newest snapshot of ~/.config, back where it was
  dbackup restore --set config
      every source of one set, back where it was (--all: every set)
  dbackup restore --source external --path /data/x --target /tmp/r
      from the drive's newest backup; lands at /tmp/r/data/x
  dbackup --dry-run restore --path ~/.secrets
      the plan: what would be created, replaced, left unchanged or skipped
  dbackup restore --source external --date 2025-04-01 --verify
      check that backup completely, write nothing
  dbackup restore --source external --date 2025-04-01 --verify --deep
      an incremental: also read and hash every byte it keeps in earlier backups
  dbackup restore --source cloud:offsite --path ~/thesis.tex --target /tmp/r
      from a cloud destination: its index, then one ranged GET per file (the bytes are shown first)
  dbackup restore --drive /media/you/T9 --list
      a drive, without any config
  dbackup restore --drive /media/you/T9 --identity ~/key.txt --path ~/.ssh --target /tmp/r
      from an encrypted backup (data.tar.age): the identity decrypts it on the fly

Restores keep modes, mtimes, symlinks and hard links (and owners as root). Each file is
written owner-only under a temporary name and renamed into place. Files at the destination
that are not in the backup are left alone. An archive entry that would escape the target
(`..`, absolute names, hard links outside, a symlink in the way, device files) is refused,
and then nothing is restored unless --skip-refused. Symlinks are restored as they are (a
backup may hold ~/data -> /data for a reason); those that lead outside the target once
restored, through other symlinks too, are listed in the plan (--dry-run), and refused with
--no-escaping-links. Archives without an index (GNU tar's, bsdtar's) are read as GNU tar
reads them.

Nothing is lost by restoring: a file at the destination that would be replaced and differs
from the backup (newer work, say) is first kept, with its mode and mtime, at
<backup_root>/displaced/<stamp>/<its absolute path> (a hard link on the same filesystem, a
copy otherwise), and listed in the output, --json and the run log; copy it back with cp -a.
The dry run says what would be kept. Only --overwrite always --no-keep replaces without
keeping. Without --path, --set or --target, restore asks what to restore: --all restores
every set in place.

Encrypted backups (*.tar.age) need the identity: --identity FILE (repeatable), or
encryption.identity_file in the config; a passphrase-encrypted one asks for its passphrase
(or reads the file named by $DBACKUP_PASSPHRASE_FILE). The identity is read from its file
only, never from the command line. A wrong identity, a truncated archive or bytes added to
it stop the restore before anything is written; a damaged chunk fails only the files it
holds, and no partial file is left behind. --verify without the identity checks the
encrypted files against verification.sha256 only, says the contents were NOT checked, and
exits 3. A damaged backup of a configured drive is remembered (damaged.json in the state
directory): the next external run writes a full instead of extending its chain.

An incremental backup keeps unchanged files in the earlier backups of its chain. --verify
reads its own archive through and checks that every earlier archive it points into is
there, listed in that backup's verification.sha256, and holds each kept file's header where
the index says; --verify --deep also reads and hashes every byte of those files there (a
byte changed inside an earlier archive is caught only so, or by verifying that backup).

Exit codes: 0 done (or intact), 1 refused, failed or damaged, 2 bad arguments,
3 verified without the identity (contents not checked), 5 no drive present. The full
restoration guide, with and without dbackup: docs/RESTORE.md.";

const LS_HELP: &str = "\
PATH is absolute, relative to the current directory, or ~/...; without it, the backup's top level. One directory \
level is listed; -R lists everything below. A drive backup is read through its index alone (encrypted: with the \
identity, as restore reads it). Names from a backup are shown escaped (control characters made visible).

Exit codes: 0 listed; 1 PATH is not in that backup (`dbackup find` looks for a name in every backup), or the \
backup could not be read.

Examples:
  dbackup ls ~/docs
      the newest local snapshot's ~/docs, one level
  dbackup ls --source drive --date 2025-04-01 -R /data/photos
      that day's newest drive backup, everything below /data/photos
  dbackup --json ls --set config ~/.config
  dbackup ls --source cloud:offsite ~/docs
      the newest backup on the bucket offsite: its backup.json, then one GET per set's index
      (the bytes to download are shown first); never an archive";

const FIND_HELP: &str = "\
PATTERN without `*` or `?` is a literal found anywhere in the path (case-sensitive). A glob without `/` matches the \
name (`*.pdf`); one starting with `/` the whole path (`/home/*/notes.txt`); any other one the path's end \
(`docs/*.md`). `*` and `?` stay within a name, a `**` component crosses directories. Each matching path is listed \
once with every backup holding it (size, mtime), newest first. Drive backups are searched through their indexes \
only, never their archives.

Exit codes: 0 found; 1 nothing matches (as with grep), or a backup could not be searched (it says which, and why).

Examples:
  dbackup find report.odt
  dbackup find '*.kdbx'
  dbackup find --source drive '/home/**/thesis/*.tex'
  dbackup --json find notes
  dbackup find --source cloud:offsite '*.kdbx'
      every backup on the bucket offsite: a listing, each backup.json, then one GET per index
      (the bytes to download are shown first)";

const SNAPSHOTS_HELP: &str = "\
The same listing as `dbackup restore --list`, with the same options.

Examples:
  dbackup snapshots
  dbackup snapshots --source drive --date 2025-04";

#[derive(Debug, Clone, Args, Default)]
pub struct LsArgs {
    /// What to list (default: the backup's top level)
    #[arg(value_name = "PATH")]
    pub path: Option<String>,

    /// List everything below PATH, not only its first level
    #[arg(short = 'R', long)]
    pub recursive: bool,

    /// Which backup: a day (2025-04-01: its newest) or a stamp (2025-04-01-031500); default: the newest
    #[arg(long)]
    pub date: Option<String>,

    /// Only this backup set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub set: Option<String>,

    /// Local snapshots, the drive's backups, or a cloud destination's (`cloud`, `cloud:NAME`) (default: local, the
    /// drive with --drive)
    #[arg(long, value_name = "SOURCE", value_parser = parse_restore_source, add = source_completer())]
    pub source: Option<RestoreSource>,

    /// Read the backups in DIR (a drive's mount point, or one backup's directory) instead of the configured drives
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,

    /// An age identity file for encrypted drive backups (repeatable; the config's identity_file is also tried)
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct FindArgs {
    /// A glob (`*`, `?`, `**`) or a literal part of the path (not empty: `dbackup ls -R` lists everything)
    #[arg(value_name = "PATTERN", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pattern: String,

    /// Only this backup set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub set: Option<String>,

    /// Only local snapshots, only the drive's backups, or a cloud destination's (`cloud`, `cloud:NAME`; default:
    /// local and drives)
    #[arg(long, value_name = "SOURCE", value_parser = parse_restore_source, add = source_completer())]
    pub source: Option<RestoreSource>,

    /// Search the backups in DIR (a drive's mount point, or one backup's directory) instead of the configured drives
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,

    /// An age identity file for encrypted drive backups (repeatable; the config's identity_file is also tried)
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct SnapshotsArgs {
    /// Only local snapshots, only the drive's backups, or a cloud destination's (`cloud`, `cloud:NAME`) (default: local
    /// and drives)
    #[arg(long, value_name = "SOURCE", value_parser = parse_restore_source, add = source_completer())]
    pub source: Option<RestoreSource>,

    /// Only that day's backups (2025-04-01), or exactly that stamp (2025-04-01-031500)
    #[arg(long)]
    pub date: Option<String>,

    /// Only backups holding this set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub set: Option<String>,

    /// List the backups in DIR instead of the configured drives
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct RestoreArgs {
    /// Where to restore from: local snapshots, the drive's archives, or a cloud destination (`cloud`, `cloud:NAME`)
    /// (default: both for --list, external with --drive, local otherwise)
    #[arg(long, value_name = "SOURCE", value_parser = parse_restore_source, add = source_completer())]
    pub source: Option<RestoreSource>,

    /// List the backups instead of restoring
    #[arg(long)]
    pub list: bool,

    /// A day (2025-04-01) selects that day's newest backup; a stamp (2025-04-01-031500) exactly that one;
    /// default: the newest
    #[arg(long)]
    pub date: Option<String>,

    /// A file or directory to restore (repeatable): absolute, ~-relative or relative to the current directory
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,

    /// Restrict to one backup set
    #[arg(long = "set", value_name = "NAME", add = ArgValueCompleter::new(complete::set_names))]
    pub set: Option<String>,

    /// Restore under DIR instead of the original location, keeping the absolute structure
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,

    /// Restore everything the backup holds, in place (without --path, --set or --target a restore asks for this)
    #[arg(long)]
    pub all: bool,

    /// What to do with files already present at the destination; a file that is replaced and differs from the
    /// backup is first kept in <backup_root>/displaced/<stamp>/ (see --no-keep)
    #[arg(long, value_enum, default_value_t)]
    pub overwrite: Overwrite,

    /// With --overwrite always: replace without keeping what was there (it is lost)
    #[arg(long)]
    pub no_keep: bool,

    /// Check the backup's integrity without writing anything
    #[arg(long)]
    pub verify: bool,

    /// With --verify of an incremental: also read every byte it keeps in earlier backups
    #[arg(long, requires = "verify")]
    pub deep: bool,

    /// Keep setuid/setgid bits (root only)
    #[arg(long)]
    pub preserve_special: bool,

    /// Restore what is not refused even when the backup holds refused entries (still exits 1)
    #[arg(long)]
    pub skip_refused: bool,

    /// Refuse the symlinks that would lead outside the target once restored (resolved through the other symlinks
    /// restored and those already there); by default they are restored as they are, and listed in the plan
    #[arg(long)]
    pub no_escaping_links: bool,

    /// How --overwrite if-changed tells an unchanged file
    #[arg(long, value_enum, default_value_t, value_name = "HOW")]
    pub compare: Compare,

    /// Read the drive's backups from DIR (a mount point, its backups/ directory, or one backup) instead of the
    /// configured destinations
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,

    /// An age identity file that decrypts encrypted backups (repeatable; the file `dbackup keygen` wrote, an
    /// `age-keygen` file, or an unencrypted OpenSSH private key). Added to the config's encryption.identity_file;
    /// read only when an encrypted archive is opened
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

const REPORT_HELP: &str = "\
The page holds the verdict of `dbackup status --check`, and per set the last good snapshot
and its age against the schedule, failures since, what runs next, the restore points that
exist and the new bytes of each snapshot; per drive the last verified backup, free space and
whether the next backup fits; the last runs; and restore commands to copy. It is built from
`dbackup --json status --history N` (metadata only), loads nothing from the network, reads
without scripts, and shows a STALE banner when opened long after it was made.

dbackup also regenerates it after every backup, collect and external run (report.path in the
config, default $XDG_STATE_HOME/dbackup/report.html; report.write: false turns that off), and
writes REPORT.html next to backups/ on each drive it backs up to (report.drives).

Examples:
  dbackup report                         # write the page to report.path, print where
  dbackup report --out /tmp/backups.html
  dbackup report --out - > page.html     # to stdout
  dbackup --json report                  # the data the page is drawn from
  dbackup report --drive /media/you/T9 --out -   # what that drive's REPORT.html says
  dbackup --dry-run report               # where the page would go, and its size; writes nothing";

#[derive(Debug, Clone, Args, Default)]
pub struct ReportArgs {
    /// HTML (the default and only page format; --json prints the data instead)
    #[arg(long)]
    pub html: bool,

    /// Where to write the page (replaced atomically), or - for stdout; default: report.path in the config
    /// ($XDG_STATE_HOME/dbackup/report.html)
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// The page of a drive instead, as its REPORT.html holds it: from its backup.json files only, without a config
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,

    /// How many runs, and snapshots per set, the page shows (default: report.history, 30)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub history: Option<u32>,

    /// Report as if it were this time (RFC 3339); for tests
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<DateTime<FixedOffset>>,
}

const SERVE_HELP: &str = "\
Serves the status page at / (made fresh for each request) and its data at /status.json.
Read-only: GET and HEAD only; no cookies, no state; drives are looked at without writing to
them. Requests whose Host is not the listen address or localhost are refused (421), so a web
page elsewhere cannot reach the server through DNS rebinding. SIGTERM or Ctrl-C stops it.

It listens on report.serve.listen (default 127.0.0.1:8422). The page has no login: to see it
from another machine, forward the port over ssh instead of listening elsewhere:
  ssh -L 8422:127.0.0.1:8422 this-machine      # then open http://localhost:8422/
With report.serve.unit: true, `dbackup systemd render` (and the Nix modules) add
dbackup-serve.service, which runs it.

Examples:
  dbackup serve
  dbackup serve --listen 127.0.0.1:0    # any free port; the URL is printed on stdout";

#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// The address and port to listen on (default: report.serve.listen, 127.0.0.1:8422); port 0 picks a free one
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// Allow an address other than loopback: anyone who can reach it sees the state of your backups (prints a warning)
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Clone, Args, Default)]
pub struct StatusArgs {
    /// Exit 1 when anything is overdue, the last run failed, a set's newest snapshot lacks a source (missing when
    /// it was made), a drive backup was found damaged, or a drive's newest backup is broken (for monitoring); else
    /// exit 3 when a bucket, a drive's backups or the run log could not be looked at
    #[arg(long)]
    pub check: bool,

    /// With --json: add the history the status page draws: the last N runs, N snapshots of each set, the backups on
    /// each present drive (metadata only, like the rest)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub history: Option<u32>,

    /// Report as if it were this time (RFC 3339); for tests
    #[arg(long, hide = true, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<DateTime<FixedOffset>>,
}

const IMAGE_KIT_HELP: &str = "\
Every external backup holds the kit in its system/ folder (image.kit in the config, on by
default): the partition tables (sfdisk, needs root), lsblk and blkid output, fstab (password
options redacted), crypttab as written (never the key files), LVM metadata, the boot loader
facts (bootctl, efibootmgr), the package selection (Debian: dpkg, apt-mark) or the system's
configuration (NixOS: /etc/nixos's flake, flake.lock, configuration.nix and
hardware-configuration.nix, nixos-version), and RESTORE-SYSTEM.md, the rebuild of this
machine step by step. A missing tool or file is a line in kit.json and in the guide.

Examples:
  dbackup image kit                    # print RESTORE-SYSTEM.md for this machine
  sudo dbackup image kit --out /tmp/kit   # write every piece into a new directory
  dbackup --dry-run image kit --out /tmp/kit   # each piece it would write; writes nothing";

const IMAGE_CREATE_HELP: &str = "\
Each device is imaged with partclone (only its used blocks), compressed with zstd, encrypted
with age when the destination encrypts, and hashed on the way into
<drive>/backups/<stamp>/system/<name>.img.zst, beside its disk's partition table
(<disk>.sfdisk) and the recovery kit. While it is written, the stream is decompressed again
and checked with partclone.chkimg; then the file is read back from the drive. Only then is the
backup renamed into place. `latest` is not moved: it names the newest backup of the sets.

A filesystem mounted read-write is refused: its image would be inconsistent. Image the ESP,
/boot or a data partition mounted read-only or unmounted, or any partition from rescue media.
Needs root (partclone reads the device).

Examples:
  sudo dbackup image create --device /dev/nvme0n1p1
  sudo dbackup --dry-run image create --device /dev/disk/by-label/ESP --destination T9";

const IMAGE_RESTORE_HELP: &str = "\
Plans first: the partition table written onto the target (the old disk's, without its
last-lba, so a larger disk keeps its own end), each partition's image, and everything on the
target that is overwritten. Every image is hashed and compared with backup.json before
anything is written. Then: the table (sfdisk), each partition (partclone -r), the last
filesystem grown to the end of the disk with --grow (ext4, btrfs, xfs), fsck of each, and
their UUIDs and PARTUUIDs checked against the backup's. A target smaller than the layout
needs, or in use (mounted, swap), is refused. A block device is only written after you
confirm (or with --yes); a disk image FILE must exist at its size (truncate -s 20G disk.img)
and is attached to a loop device for the restore (root). The boot loader is not reinstalled:
RESTORE-SYSTEM.md in the backup's system/ folder says how.

--to PART (a partition, with --name NAME) restores that one image onto an existing partition:
its disk's table and the partition's PARTUUID stay as they are, the filesystem keeps its UUID,
and --grow grows it to the partition's end. An image of a filesystem without a partition table
(a whole disk's, an LVM volume's) goes the same way onto a block device of its own (--name NAME
--to DEV).

Examples:
  sudo dbackup --dry-run image restore --from 2026-12-05-031500 --to /dev/sdb
  sudo dbackup image restore --drive /mnt/T9 --from 2026-12-05-031500 --to /dev/sdb --grow
  sudo dbackup image restore --from 2026-12-05-031500 --to disk.img --name nvme0n1p2
  sudo dbackup image restore --from 2026-12-05-031500 --name nvme0n1p1 --to /dev/sdb1";

const CLOUD_CHECK_HELP: &str = "Tries, for real, what backups to this destination need, with a tiny object under \
<prefix>/.dbackup-check/ that is removed again: the keys and the bucket (a listing), writing, reading back, \
deleting, and listing unfinished multipart uploads. With `object_lock_days` in the destination (or --object-lock) \
it also writes an object locked for one day and tries to delete it: some servers accept Object Lock headers and \
ignore them, and only this finds out. A locked object that could not be deleted stays until its date (7 bytes).

Keys come from the destination's credentials_file, else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else the \
AWS shared credentials and config files (B2: B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY). No key, signature or \
token is ever printed.

Exit codes: 0 everything a backup needs works; 3 it works with warnings (the key cannot delete, so old backups are \
never pruned; unfinished uploads found); 1 a backup would fail (no answer, keys refused, no bucket, no write or \
read, Object Lock configured but not enforced); 2 configuration (no such cloud destination, no keys, a \
credentials_file others can read).

Examples:
  dbackup cloud check offsite
  dbackup cloud check offsite --object-lock    # does the bucket enforce Object Lock?
  dbackup --json cloud check offsite
  dbackup --dry-run cloud check offsite   # only what reads (the listings); writes nothing";

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Check a cloud destination: keys, bucket, write/read/delete permissions, and whether Object Lock is enforced
    #[command(after_help = CLOUD_CHECK_HELP)]
    Check(CloudCheckArgs),
}

#[derive(Debug, Clone, Args, Default)]
pub struct CloudCheckArgs {
    /// The cloud destination (its `name` in the config)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Also try Object Lock when the destination has no `object_lock_days` (leaves a 7-byte object locked for a
    /// day if the bucket enforces it)
    #[arg(long)]
    pub object_lock: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Collect the recovery kit of this machine: print its RESTORE-SYSTEM.md, or write every piece into a directory
    #[command(after_help = IMAGE_KIT_HELP)]
    Kit(ImageKitArgs),
    /// Image partitions with partclone into a new verified backup on the drive (with the kit)
    #[command(after_help = IMAGE_CREATE_HELP)]
    Create(ImageCreateArgs),
    /// Restore a backup's partition images, with their partition table, onto a disk or a disk image file
    #[command(after_help = IMAGE_RESTORE_HELP)]
    Restore(ImageRestoreArgs),
}

#[derive(Debug, Clone, Args, Default)]
pub struct ImageKitArgs {
    /// Write the kit's files into DIR (created; existing files are never replaced) instead of printing the guide
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ImageCreateArgs {
    /// A partition to image (repeatable), besides the config's image.devices
    #[arg(long = "device", value_name = "DEV")]
    pub devices: Vec<String>,

    /// Write to this destination (by name) instead of the first present one
    #[arg(long, value_name = "NAME", add = ArgValueCompleter::new(complete::destination_names))]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ImageRestoreArgs {
    /// The backup holding the images (its stamp, as `dbackup restore --list` shows)
    #[arg(long, value_name = "STAMP")]
    pub from: String,

    /// The disk (a whole block device) or disk image file to restore onto, or one partition (with --name), or for
    /// an image without a partition table a block device of its own (with --name);
    /// everything on it is overwritten
    #[arg(long, value_name = "DEV|FILE|PART")]
    pub to: PathBuf,

    /// Restore only this image (repeatable; default: every image of the backup, which must come from one disk)
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// Grow the last partition and its filesystem to the end of a larger target
    #[arg(long)]
    pub grow: bool,

    /// Do not ask before overwriting a block device
    #[arg(long)]
    pub yes: bool,

    /// Read the backup from DIR (a drive's mount point, its backups/ directory, or the backup) instead of the
    /// configured destinations
    #[arg(long, value_name = "DIR")]
    pub drive: Option<PathBuf>,

    /// An age identity file that decrypts encrypted images (repeatable)
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (default: the one dbackup would use) and print the settings it gives
    #[command(
        after_help = "Exit codes: 0 valid, 2 invalid (each problem printed with its line and column).\n\n\
Examples:\n  \
dbackup config check                    # the config dbackup would use\n  \
dbackup config check ~/new-config.json  # another file, before you put it in place"
    )]
    Check {
        /// The file to check
        path: Option<PathBuf>,
        /// Check a config whose `exclude_from` and rsync filter files may not exist yet (a Nix build sandbox has
        /// no home; the Nix modules check this way): each missing one is warned about, its rules unchecked, and
        /// everything else is checked as usual. collect still refuses the config until they exist.
        #[arg(long)]
        allow_missing_files: bool,
    },
    /// Print the JSON Schema that configs are validated against
    Schema,
    /// Write the built-in default config, commented, to the config path (never overwrites)
    #[command(
        after_help = "Exit codes: 0 written, 2 a file is there already (it is left as it is).\n\n\
Examples:\n  \
dbackup config init                     # ~/.config/dbackup/config.json, to edit\n  \
dbackup --dry-run config init           # print what it would write; writes nothing"
    )]
    Init {
        /// Where to write it (default: the path dbackup reads)
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemdCommand {
    /// Render the units from the config: print them, or write them into a directory to install
    #[command(after_help = SYSTEMD_RENDER_HELP)]
    Render(SystemdRenderArgs),
    /// Wait until a configured destination is mounted, at most --timeout seconds; always exits 0 (the first step
    /// of dbackup-external.service, which starts when the drive appears, usually before it is mounted)
    WaitForDrive(WaitForDriveArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WaitForDriveArgs {
    /// Give up waiting after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

const SYSTEMD_RENDER_HELP: &str = "\
dbackup-collect.timer starts dbackup-collect.service (`dbackup backup`) on schedule.incremental.
dbackup-external.service starts when a backup drive appears (the drive's mount unit wants it,
and with --system a udev rule, 99-dbackup.rules, starts it as soon as the drive is plugged in),
waits for the drive to be mounted, and runs `dbackup backup`, which copies to the drive when
schedule.external says it is due. schedule.external = manual installs no trigger (the unit runs
`dbackup external` when you start it). Exit 3 (warnings) and, for the external unit, 5 (no
drive) are not failures.

Examples:
  dbackup systemd render --user                          # print the units
  dbackup systemd render --user --out ~/.config/systemd/user
  dbackup systemd render --system --out ~/dbackup-units   # as you: the units run as you (--run-as)
  dbackup systemd render --system --format json          # what the Nix modules are tested against
  dbackup --dry-run systemd render --user --out ~/.config/systemd/user   # what it would write";

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["user", "system"])))]
pub struct SystemdRenderArgs {
    /// Units for your own user manager (~/.config/systemd/user): no root needed; the drive's mount starts the copy
    #[arg(long)]
    pub user: bool,

    /// Units for the system manager (/etc/systemd/system), run as --run-as, and a udev rule that starts the copy
    /// when the drive is plugged in
    #[arg(long)]
    pub system: bool,

    /// Write the files into DIR (created if missing) instead of printing them; replaces only files dbackup wrote,
    /// and refuses a DIR another user can change
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Print the files as text, or everything as JSON (the units as sections of settings, and each file's text)
    #[arg(long, value_enum, default_value_t)]
    pub format: RenderFormat,

    /// The dbackup binary the units run (default: this one)
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,

    /// The user the system units run as; `~` in the config is that user's home (default: $SUDO_USER, else $USER)
    #[arg(long, value_name = "NAME", conflicts_with = "user")]
    pub run_as: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RenderFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print the completion script for a shell
    #[command(
        after_help = "The script goes to stdout; nothing is written. It asks `dbackup` for the words on each TAB, so \
set and destination names come from the config of the moment.\n\n\
Examples:\n  \
dbackup generate completions bash > ~/.local/share/bash-completion/completions/dbackup\n  \
dbackup generate completions zsh > ~/.zfunc/_dbackup"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (dbackup.1 and one per subcommand) into DIR
    #[command(
        after_help = "Writes dbackup.1 and a page for each command (dbackup-collect.1, dbackup-systemd-render.1, ...) \
into DIR, each path printed; a file of one of those names there is replaced, nothing else is touched. --dry-run \
names each page it would write, and writes nothing.\n\n\
Examples:\n  \
dbackup generate man /usr/local/share/man/man1\n  \
dbackup --dry-run generate man out/man1    # the pages it would write"
    )]
    Man {
        /// The directory to write into (created if missing)
        dir: PathBuf,
    },
}

/// The seed's command names, and the subcommand each stands for when the binary is invoked through a link.
pub const ALIASES: &[(&str, &str)] = &[
    ("backup-collect", "collect"),
    ("backup-external", "external"),
    ("backup-restore", "restore"),
    ("backup", "backup"),
];

/// Rewrites `argv` so that `backup-collect --full` parses as `dbackup collect --full`.
pub fn dispatch_argv0(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.first() else {
        return args;
    };
    let name = std::path::Path::new(first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match ALIASES.iter().find(|(alias, _)| *alias == name) {
        Some((_, sub)) => {
            let mut out = Vec::with_capacity(args.len() + 1);
            out.push(OsString::from("dbackup"));
            out.push(OsString::from(*sub));
            out.extend(args.into_iter().skip(1));
            out
        }
        None => args,
    }
}

impl Cli {
    /// Parses the process's arguments, honouring `argv[0]` aliases.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        Cli::try_parse_from(dispatch_argv0(std::env::args_os().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(dispatch_argv0(args.iter().map(OsString::from).collect())).unwrap()
    }

    #[test]
    fn seed_names_dispatch_to_subcommands() {
        assert!(matches!(
            parse(&["/usr/bin/backup-collect"]).command,
            Command::Collect(_)
        ));
        assert!(matches!(
            parse(&["backup-external"]).command,
            Command::External(_)
        ));
        assert!(matches!(
            parse(&["backup", "--force"]).command,
            Command::Backup(BackupArgs { force: true, .. })
        ));
        let cli = parse(&[
            "backup-restore",
            "--source",
            "external",
            "--date",
            "2025-04-01",
            "--path",
            "~/.config",
        ]);
        let Command::Restore(r) = cli.command else {
            panic!("not restore")
        };
        assert_eq!(r.source.map(|s| s.kept), Some(Kept::External));
        assert_eq!(r.paths, vec!["~/.config".to_string()]);
        for (arg, kept, cloud) in [
            ("cloud", Kept::Cloud, None),
            ("cloud:offsite", Kept::Cloud, Some("offsite".to_string())),
            ("drive", Kept::External, None),
        ] {
            assert_eq!(
                parse_restore_source(arg),
                Ok(RestoreSource { kept, cloud }),
                "{arg}"
            );
        }
        assert!(parse_restore_source("cloud:").is_err());
        assert!(parse_restore_source("s3").is_err());
    }

    #[test]
    fn systemd_render_needs_exactly_one_scope() {
        let cli = parse(&[
            "dbackup", "systemd", "render", "--system", "--run-as", "payne", "--format", "json",
        ]);
        let Command::Systemd(SystemdCommand::Render(r)) = cli.command else {
            panic!("not systemd render")
        };
        assert!(r.system && !r.user);
        assert_eq!(r.run_as.as_deref(), Some("payne"));
        assert_eq!(r.format, RenderFormat::Json);
        let try_parse = |args: &[&str]| Cli::try_parse_from(args.iter().map(OsString::from));
        assert!(try_parse(&["dbackup", "systemd", "render"]).is_err());
        assert!(try_parse(&["dbackup", "systemd", "render", "--user", "--system"]).is_err());
        assert!(try_parse(&["dbackup", "systemd", "render", "--user", "--run-as", "x"]).is_err());
    }

    /// Every command's help, and the help of each of its subcommands.
    fn all_helps(command: &clap::Command, out: &mut Vec<(String, String)>) {
        let text = command
            .get_after_long_help()
            .or(command.get_after_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push((command.get_name().to_string(), text));
        for arg in command.get_arguments() {
            let help = arg.get_long_help().or(arg.get_help());
            out.push((
                format!("{} --{}", command.get_name(), arg.get_id()),
                help.map(|h| h.to_string()).unwrap_or_default(),
            ));
        }
        for sub in command.get_subcommands() {
            all_helps(sub, out);
        }
    }

    /// Each example in a command's help fits in the width clap wraps help at (100 columns), so none is broken across
    /// lines, and each example command line parses. Before: five were wrapped mid-comment by clap (external, status,
    /// ls, find), the continuation looking like a command of its own.
    #[test]
    fn examples_fit_the_help_width_and_parse() {
        let mut helps = Vec::new();
        all_helps(&Cli::command().after_help(AFTER_HELP), &mut helps);
        let mut examples = 0;
        for (name, help) in &helps {
            let Some((_, section)) = help.split_once("Examples:\n") else {
                continue;
            };
            for line in section.lines().take_while(|l| !l.is_empty()) {
                assert!(
                    line.chars().count() <= 100,
                    "{name}: wrapped by clap: {line}"
                );
                let command = line.trim_start().trim_start_matches("sudo ");
                if !command.starts_with("dbackup ") {
                    continue;
                }
                let command = command.split(" #").next().unwrap_or_default();
                let command = command.split(" > ").next().unwrap_or_default();
                let words: Vec<OsString> = command
                    .split_whitespace()
                    .map(|w| OsString::from(w.trim_matches('\'')))
                    .collect();
                // `dbackup help restore` ends in the help it asks for.
                if let Err(e) = Cli::try_parse_from(&words)
                    && e.kind() != clap::error::ErrorKind::DisplayHelp
                {
                    panic!("{name}: the example {command:?} does not parse: {e}");
                }
                examples += 1;
            }
        }
        assert!(examples > 40, "{examples} examples found");
        // A command named in a help's text: `dbackup ...` (unless it holds a placeholder: `--history N`).
        for (name, help) in &helps {
            for quoted in help.split("`dbackup ").skip(1) {
                let command = quoted.split('`').next().unwrap_or_default();
                let placeholder = |w: &str| w.bytes().all(|b| b.is_ascii_uppercase());
                if command.split_whitespace().any(placeholder) {
                    continue;
                }
                let words = std::iter::once("dbackup").chain(command.split_whitespace());
                // A command named in passing may leave out what it needs (`dbackup systemd render`).
                if let Err(e) = Cli::try_parse_from(words)
                    && !matches!(
                        e.kind(),
                        clap::error::ErrorKind::MissingRequiredArgument
                            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    )
                {
                    panic!("{name}: `dbackup {command}` does not parse: {e}");
                }
            }
        }
    }

    /// Each command that writes or removes says in its help what it writes (`writes`) and removes (`removes`), and how
    /// to see that first without writing anything (`--dry-run`). Before: `collect`'s help named neither its
    /// snapshots nor the retention that removes old ones, and `generate man`'s had no text at all.
    #[test]
    fn commands_that_write_say_what_and_their_dry_run() {
        let root = Cli::command();
        // (command path, words its help must hold: what it writes, what it removes)
        let writers: &[(&[&str], &[&str])] = &[
            (
                &["collect"],
                &["<set>-<YYYY-MM-DD-HHMMSS>/", "retention.local"],
            ),
            (&["external"], &["<drive>/backups/", "retention.external"]),
            (&["backup"], &["collect", "external"]),
            (&["restore"], &["displaced/"]),
            (&["report"], &["report.path"]),
            (&["keygen"], &["identity"]),
            (&["config", "init"], &["written"]),
            (&["systemd", "render"], &["--out"]),
            (&["generate", "man"], &["dbackup.1", "replaced"]),
            (&["image", "kit"], &["--out"]),
            (&["image", "create"], &["<drive>/backups/<stamp>/system/"]),
            (&["image", "restore"], &["overwritten"]),
            (&["cloud", "check"], &["removed"]),
        ];
        for (path, words) in writers {
            let command = path.iter().fold(root.clone(), |c, name| {
                c.find_subcommand(name)
                    .unwrap_or_else(|| panic!("no command {path:?}"))
                    .clone()
            });
            let help = command
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            for word in words.iter().chain(&["--dry-run"]) {
                assert!(
                    help.contains(word),
                    "`dbackup {}`'s help does not say {word:?}:\n{help}",
                    path.join(" ")
                );
            }
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["dbackup", "collect", "--dry-run", "--json", "-vv"]);
        assert!(cli.global.dry_run && cli.global.json);
        assert_eq!(cli.global.verbose, 2);
    }
}
