//! Running rsync: the command line for a set, its exit codes, its progress and statistics output.
//!
//! The command line dbackup builds (see [`build_argv`]):
//!
//! ```text
//! rsync -aHAX --numeric-ids --delete --delete-excluded --block-size=131072 --relative --stats
//!       [--sparse]                    holes stay holes in the snapshot (see [`sparse_allowed`])
//!       [--info=progress2]            only when progress is shown (stderr is a terminal)
//!       [--checksum]                  --full
//!       [--filter=merge <file>]       the set's exclusions, one `- <pattern>` rule a line (filter_rules): an
//!                                     argument list would overflow with a few thousand of them
//!       --link-dest=<abs dir>...      newest complete snapshot (and newer incomplete one / interrupted run's copy)
//!       <rsync_args of the set>...
//!       -- <resolved absolute source>... <backup_root>/.<set>.in-progress/
//! ```
//!
//! `-A` and `-X` are dropped when the backup root's filesystem (or the installed rsync) lacks ACLs or xattrs.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::snapshot::{FileProblem, TransferStats};

/// The seed's block size for rsync's delta algorithm.
pub const BLOCK_SIZE: u32 = 131072;

/// What to tell people who lack rsync.
pub const INSTALL_HINT: &str = "install it: `sudo apt-get install rsync` (Debian/Ubuntu), `sudo dnf install rsync` (Fedora) or `nix profile install nixpkgs#rsync`";

#[derive(Debug, thiserror::Error)]
pub enum RsyncError {
    #[error("rsync is not installed (not found in PATH); {INSTALL_HINT}")]
    Missing,
    #[error("cannot run rsync: {0}")]
    Spawn(io::Error),
    #[error("path {0:?} is not valid UTF-8; dbackup passes paths to rsync as UTF-8")]
    NotUtf8(PathBuf),
    #[error("reading rsync's output: {0}")]
    Output(io::Error),
}

/// How rsync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RsyncExit {
    /// 0: everything copied.
    Ok,
    /// 24: some files vanished while rsync ran (a warning; the snapshot is complete).
    Vanished,
    /// 23: some files or attributes were not transferred (unreadable files): the snapshot is incomplete.
    Partial,
    /// Any other code: nothing is promoted.
    Failed { code: i32 },
    /// Killed by a signal.
    Signaled { signal: i32 },
}

impl RsyncExit {
    pub fn from_status(status: std::process::ExitStatus) -> RsyncExit {
        match (status.code(), status.signal()) {
            (Some(0), _) => RsyncExit::Ok,
            (Some(24), _) => RsyncExit::Vanished,
            (Some(23), _) => RsyncExit::Partial,
            (Some(code), _) => RsyncExit::Failed { code },
            (None, Some(signal)) => RsyncExit::Signaled { signal },
            (None, None) => RsyncExit::Failed { code: -1 },
        }
    }

    /// The numeric code recorded in metadata (`128 + signal` when killed).
    pub fn code(self) -> i32 {
        match self {
            RsyncExit::Ok => 0,
            RsyncExit::Vanished => 24,
            RsyncExit::Partial => 23,
            RsyncExit::Failed { code } => code,
            RsyncExit::Signaled { signal } => 128 + signal,
        }
    }

    /// Whether the copy may be promoted to a snapshot.
    pub fn promotable(self) -> bool {
        matches!(
            self,
            RsyncExit::Ok | RsyncExit::Vanished | RsyncExit::Partial
        )
    }

    /// What rsync's exit code means, given what rsync said on stderr: exit 11 (file I/O) is a full disk only when
    /// nothing rsync said names another cause ("No space left on device" or a quota says it is one).
    pub fn describe_with(self, errors: &[String]) -> String {
        if self != (RsyncExit::Failed { code: 11 }) {
            return self.describe();
        }
        let what = if errors.iter().any(|e| says_disk_full(e)) {
            DISK_FULL
        } else if errors.iter().any(|e| names_os_error(e)) {
            // rsync names the OS error (`... failed: Permission denied (13)`): that is the cause.
            "error in file I/O"
        } else {
            "error in file I/O (is the backup disk full?)"
        };
        format!("rsync exit 11 ({what})")
    }

    /// What rsync's exit code means (from rsync(1)).
    pub fn describe(self) -> String {
        let what = match self {
            RsyncExit::Ok => "success",
            RsyncExit::Vanished => "some source files vanished",
            RsyncExit::Partial => "some files or attributes were not transferred",
            RsyncExit::Signaled { .. } => "killed by a signal",
            RsyncExit::Failed { code } => match code {
                1 => "syntax or usage error (check the set's rsync_args)",
                2 => "protocol incompatibility",
                3 => "errors selecting input/output files or directories",
                4 => "requested action not supported",
                5 => "error starting client-server protocol",
                10 => "error in socket I/O",
                11 => "error in file I/O (is the backup disk full?)",
                12 => "error in rsync protocol data stream",
                13 => "errors with program diagnostics",
                14 => "error in IPC code",
                20 => "received SIGUSR1 or SIGINT",
                21 => "some error returned by waitpid()",
                22 => "error allocating core memory buffers",
                25 => "the --max-delete limit stopped deletions",
                30 => "timeout in data send/receive",
                35 => "timeout waiting for daemon connection",
                _ => "unknown error",
            },
        };
        match self {
            RsyncExit::Signaled { signal } => format!("rsync was killed by signal {signal}"),
            other => format!("rsync exit {} ({what})", other.code()),
        }
    }
}

/// What a copy that ran out of space is said to have met.
const DISK_FULL: &str = "error in file I/O: the backup disk is full; free space or prune snapshots";

/// Whether a line of rsync's says the disk it writes to is full (`ENOSPC`, or a quota's `EDQUOT`). Not a failure to
/// set one file's extended attributes or ACL (`lsetxattr ... failed: No space left on device`): ext4 says that of
/// attributes larger than it keeps beside one file, with the disk far from full.
fn says_disk_full(line: &str) -> bool {
    // What rsync was doing comes before the first quoted path, the error after the last: never read either in a
    // path, which may say anything.
    let doing = line.split('"').next().unwrap_or_default();
    let error = line.rsplit('"').next().unwrap_or_default();
    let attributes = ["xattr", "xal_set", "set_acl", "sys_acl"]
        .iter()
        .any(|w| doing.contains(w));
    (error.contains("No space left on device") || error.contains("Disk quota exceeded"))
        && !attributes
}

/// Whether an rsync error line names an OS error, as rsync writes them: `...: Permission denied (13)`.
fn names_os_error(line: &str) -> bool {
    line.split('(').skip(1).any(|rest| {
        rest.split_once(')')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The installed rsync: version and what it was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub version: String,
    pub acls: bool,
    pub xattrs: bool,
}

/// Runs `rsync --version` once. A missing rsync is [`RsyncError::Missing`], with the install command.
pub fn probe_rsync() -> Result<Capabilities, RsyncError> {
    let out = Command::new("rsync")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RsyncError::Missing,
            _ => RsyncError::Spawn(e),
        })?;
    Ok(parse_capabilities(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `rsync --version`.
pub fn parse_capabilities(text: &str) -> Capabilities {
    let version = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "version").nth(1))
        .unwrap_or("unknown")
        .to_string();
    let has = |what: &str| text.contains(what) && !text.contains(&format!("no {what}"));
    Capabilities {
        version,
        acls: has("ACLs"),
        xattrs: has("xattrs"),
    }
}

/// Whether a filesystem keeps ACLs and extended attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsSupport {
    pub acls: bool,
    pub xattrs: bool,
}

/// Probes the filesystem of `dir`. With `write`, sets a `user.` xattr on a temporary file in `dir` (the sure test);
/// without, only asks (`getxattr`) on `dir` or its nearest existing ancestor, changing nothing (for dry runs).
pub fn probe_fs(dir: &Path, write: bool) -> FsSupport {
    use rustix::io::Errno;
    let unsupported = |e: Errno| matches!(e, Errno::NOTSUP | Errno::NOSYS);
    let acl_ok = |p: &Path| {
        let mut buf = [0u8; 256];
        !matches!(rustix::fs::getxattr(p, "system.posix_acl_access", &mut buf[..]), Err(e) if unsupported(e))
    };
    if write
        && let Ok(tmp) = tempfile::Builder::new()
            .prefix(".dbackup-probe-")
            .tempfile_in(dir)
    {
        let xattrs = rustix::fs::setxattr(
            tmp.path(),
            "user.dbackup.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        return FsSupport {
            acls: acl_ok(tmp.path()),
            xattrs,
        };
    }
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let mut buf = [0u8; 64];
    let xattrs = !matches!(rustix::fs::getxattr(existing, "user.dbackup.probe", &mut buf[..]), Err(e) if unsupported(e));
    FsSupport {
        acls: acl_ok(existing),
        xattrs,
    }
}

/// Everything that goes into one rsync command line.
#[derive(Debug, Clone)]
pub struct ArgvSpec<'a> {
    /// Absolute, resolved; copied with `--relative` so `/data/x` lands at `<dest>/data/x`.
    pub sources: &'a [PathBuf],
    /// The file holding the set's exclusions as filter rules ([`filter_rules`]), when it has any.
    pub filter: Option<&'a Path>,
    /// `--link-dest` directories (absolute), in the order rsync should try them.
    pub link_dest: &'a [PathBuf],
    pub dest: &'a Path,
    /// Compare contents (`--checksum`).
    pub full: bool,
    pub acls: bool,
    pub xattrs: bool,
    /// Add `--info=progress2` (only when a progress bar is shown).
    pub progress: bool,
    /// Add `--sparse` (see [`sparse_allowed`]).
    pub sparse: bool,
    /// The set's own `rsync_args`, after dbackup's.
    pub extra: &'a [String],
}

fn utf8(p: &Path) -> Result<&str, RsyncError> {
    p.to_str()
        .ok_or_else(|| RsyncError::NotUtf8(p.to_path_buf()))
}

/// The full argv, starting with `rsync`.
pub fn build_argv(spec: &ArgvSpec) -> Result<Vec<String>, RsyncError> {
    let mut flags = String::from("-aH");
    if spec.acls {
        flags.push('A');
    }
    if spec.xattrs {
        flags.push('X');
    }
    let mut argv: Vec<String> = vec!["rsync".into(), flags];
    argv.extend(
        [
            "--numeric-ids",
            "--delete",
            "--delete-excluded",
            &format!("--block-size={BLOCK_SIZE}"),
            "--relative",
            "--stats",
        ]
        .map(String::from),
    );
    if spec.sparse {
        argv.push("--sparse".into());
    }
    if spec.progress {
        argv.push("--info=progress2".into());
    }
    if spec.full {
        argv.push("--checksum".into());
    }
    if let Some(f) = spec.filter {
        argv.push(format!("--filter=merge {}", utf8(f)?));
    }
    for dir in spec.link_dest {
        argv.push(format!("--link-dest={}", utf8(dir)?));
    }
    argv.extend(spec.extra.iter().cloned());
    argv.push("--".into());
    for s in spec.sources {
        argv.push(utf8(s)?.to_string());
    }
    let mut dest = utf8(spec.dest)?.to_string();
    if !dest.ends_with('/') {
        dest.push('/');
    }
    argv.push(dest);
    Ok(argv)
}

/// Whether `--sparse` may be passed to this rsync together with the set's own `rsync_args`.
///
/// `--sparse` makes rsync seek over runs of zeros instead of writing them, so a sparse file (a VM disk, a database)
/// costs its data in the snapshot, not its size. rsync before 3.1.3 refuses it together with `--inplace` (which
/// `--write-devices` implies): "--sparse cannot be used with --inplace"; 3.1.3 and later accept every combination
/// (with `--inplace` or `--preallocate` they punch the holes). dbackup itself passes neither, and the allow-list of
/// a set's `rsync_args` ([`crate::rsync_args`]) refuses both today, so this holds for every config that loads; it
/// stays the one place that knows the combination, should the list ever allow in-place writes. An unknown version
/// is treated as old.
pub fn sparse_allowed(version: &str, extra: &[String]) -> bool {
    let inplace = extra
        .iter()
        .any(|a| a == "--inplace" || a == "--write-devices");
    if !inplace {
        return true;
    }
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(major), Some(minor), patch) => (major, minor, patch.unwrap_or(0)) >= (3, 1, 3),
        _ => false,
    }
}

/// The text of a filter file for `--filter=merge FILE`: one rule per exclusion, in order (rsync's first match
/// wins): `- <pattern>` for an exclude, `+ <pattern>` for an include (`!pattern` in the plan).
/// Unlike an `--exclude-from` file, a rule line is never taken for a comment (`#*#` stays a pattern).
/// Patterns hold no line break (the config check refuses them).
pub fn filter_rules(patterns: &[String]) -> String {
    let mut out = String::with_capacity(patterns.iter().map(|p| p.len() + 3).sum());
    for p in patterns {
        match p.strip_prefix('!') {
            Some(include) => {
                out.push_str("+ ");
                out.push_str(include);
            }
            None => {
                out.push_str("- ");
                out.push_str(p);
            }
        }
        out.push('\n');
    }
    out
}

/// Parses a number as rsync prints it: `1,234,567`, `1.234.567` (other locales) or, with `-h`, `1.23M`.
pub fn parse_number(token: &str) -> Option<u64> {
    let token = token.trim();
    let (digits, mult) = match token.chars().last()? {
        'K' | 'k' => (&token[..token.len() - 1], 1e3),
        'M' => (&token[..token.len() - 1], 1e6),
        'G' => (&token[..token.len() - 1], 1e9),
        'T' => (&token[..token.len() - 1], 1e12),
        'P' => (&token[..token.len() - 1], 1e15),
        _ => (token, 1.0),
    };
    if mult > 1.0 {
        return digits
            .replace(',', ".")
            .parse::<f64>()
            .ok()
            .map(|v| (v * mult) as u64);
    }
    let clean: String = digits
        .chars()
        .filter(|c| !matches!(c, ',' | '.' | '\'' | ' ' | '\u{a0}' | '\u{202f}'))
        .collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    clean.parse().ok()
}

/// Reads the counts out of rsync's `--stats` output (any lines; others are ignored).
pub fn parse_stats<'a>(lines: impl IntoIterator<Item = &'a str>) -> TransferStats {
    let mut s = TransferStats::default();
    let first_number = |rest: &str| rest.split_whitespace().next().and_then(parse_number);
    for line in lines {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Number of files:") {
            s.files = first_number(rest).unwrap_or(0);
            // "11 (reg: 2, dir: 9, link: 1)"
            if let Some(inner) = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(i, _)| i)
            {
                for part in inner.split(", ") {
                    if let Some((k, v)) = part.split_once(':') {
                        let v = parse_number(v).unwrap_or(0);
                        match k.trim() {
                            "reg" => s.regular_files = v,
                            "dir" => s.directories = v,
                            _ => {}
                        }
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("Number of regular files transferred:") {
            s.transferred_files = first_number(rest).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Total file size:") {
            s.total_bytes = first_number(rest).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Total transferred file size:") {
            s.transferred_bytes = first_number(rest).unwrap_or(0);
        }
    }
    s.linked_bytes = s.total_bytes.saturating_sub(s.transferred_bytes);
    s
}

/// One `--info=progress2` line: `  1,234,567  45%   12.34MB/s    0:00:12 (xfr#12, to-chk=3/100)`.
///
/// The bytes are those copied so far: a file rsync finds unchanged and hard-links from `--link-dest` adds nothing
/// (so rsync's percent stays near 0 on a run that copies little). What was checked comes from `to-chk=LEFT/LISTED`
/// (`ir-chk` while the incremental file list is still growing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    pub percent: u8,
    /// Files transferred so far (`xfr#`).
    pub files: u64,
    /// Entries checked so far (listed minus left to check), when the line says.
    pub checked: Option<u64>,
    /// Entries in the file list so far, and whether the list is complete (`to-chk`, not `ir-chk`).
    pub listed: Option<(u64, bool)>,
}

pub fn parse_progress(line: &str) -> Option<Progress> {
    let mut words = line.split_whitespace();
    let bytes = parse_number(words.next()?)?;
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let files = line
        .split_once("xfr#")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let check = |key: &str| {
        let (_, rest) = line.split_once(key)?;
        let (left, rest) = rest.split_once('/')?;
        let listed = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        Some((left.parse::<u64>().ok()?, listed.parse::<u64>().ok()?))
    };
    let (checked, listed) = match (check("to-chk="), check("ir-chk=")) {
        (Some((left, n)), _) => (Some(n.saturating_sub(left)), Some((n, true))),
        (None, Some((left, n))) => (Some(n.saturating_sub(left)), Some((n, false))),
        (None, None) => (None, None),
    };
    Some(Progress {
        bytes,
        percent,
        files,
        checked,
        listed,
    })
}

/// Undoes rsync's escaping of unprintable bytes in names (`\#303\#251` -> `é`).
pub fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 < b.len()
            && b[i + 1] == b'#'
            && b[i + 2..i + 5].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 2] - b'0') as u32 * 64
                + (b[i + 3] - b'0') as u32 * 8
                + (b[i + 4] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 5;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// What an rsync stderr line says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Vanished(PathBuf),
    Failed(FileProblem),
}

/// Classifies one line of rsync's stderr: `file has vanished: "/x"` or `rsync: [sender] ... "/x" ...: <error>`.
pub fn parse_problem(line: &str) -> Option<Problem> {
    let line = line.trim_end();
    let quoted = |s: &str| -> Option<PathBuf> {
        let start = s.find('"')?;
        let end = s.rfind('"')?;
        (end > start).then(|| unescape(&s[start + 1..end]))
    };
    if let Some(rest) = line.strip_prefix("file has vanished:") {
        return quoted(rest).map(Problem::Vanished);
    }
    let rest = line.strip_prefix("rsync: ")?;
    let path = quoted(rest)?;
    let message = rest
        .strip_prefix("[sender] ")
        .or_else(|| rest.strip_prefix("[receiver] "))
        .or_else(|| rest.strip_prefix("[generator] "))
        .unwrap_or(rest);
    Some(Problem::Failed(FileProblem {
        path,
        message: message.to_string(),
    }))
}

/// The result of one rsync run.
#[derive(Debug, Clone)]
pub struct RsyncRun {
    pub exit: RsyncExit,
    pub stats: TransferStats,
    pub unreadable: Vec<FileProblem>,
    pub vanished: Vec<PathBuf>,
    /// The last lines of stderr that were not about one file (for failure messages).
    pub errors: Vec<String>,
}

impl RsyncRun {
    /// Whether rsync ran out of space on the disk it writes to, as it said in an error line or about one file (a
    /// `write failed` or `mkdir ... failed` line names the file, so it is among `unreadable`). Such a copy lacks
    /// what did not fit, whatever the exit code (11, or 23 when only directories failed): never a snapshot.
    pub fn disk_full(&self) -> bool {
        self.disk_full_line().is_some()
    }

    /// The first line in which rsync said the disk is full.
    pub fn disk_full_line(&self) -> Option<&str> {
        let problems = self.unreadable.iter().map(|p| p.message.as_str());
        self.errors
            .iter()
            .map(String::as_str)
            .chain(problems)
            .find(|l| says_disk_full(l))
    }

    /// Whether the copy may be promoted to a snapshot: rsync's exit code allows it and the disk did not fill up.
    pub fn promotable(&self) -> bool {
        self.exit.promotable() && !self.disk_full()
    }

    /// What went wrong, in words: a full disk said as such whatever the exit code, else what the code means.
    pub fn describe(&self) -> String {
        if self.disk_full() {
            return format!("rsync exit {} ({DISK_FULL})", self.exit.code());
        }
        self.exit.describe_with(&self.errors)
    }
}

/// What rsync reports while it runs, for the caller to show.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Progress(Progress),
    /// A line of stdout that is not progress (statistics, `-v` output).
    Stdout(&'a str),
    /// A line of stderr.
    Stderr(&'a str),
}

/// Runs `argv` (as built by [`build_argv`]), streaming its output to `on_event`, and collects the outcome.
///
/// rsync is asked to die with dbackup (`PR_SET_PDEATHSIG`), so a killed dbackup never leaves an rsync writing into
/// a directory the next run reuses.
pub fn run(
    argv: &[String],
    on_event: &mut (dyn FnMut(Event) + Send),
) -> Result<RsyncRun, RsyncError> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = rustix::process::getpid();
    // SAFETY: `pre_exec` itself is unsafe (the closure runs between fork and exec); it makes only async-signal-safe
    // system calls (prctl, getppid), through rustix's safe wrappers, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            if rustix::process::getppid() != Some(parent) {
                // dbackup died between fork and prctl: rsync must not run on alone.
                return Err(io::Error::other("dbackup exited before rsync started"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RsyncError::Missing,
        _ => RsyncError::Spawn(e),
    })?;
    // SIGINT and SIGTERM reach rsync too (it stops, and the copy so far stays for the next run).
    let watch = crate::interrupt::watch_child(child.id());
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");

    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let tx2 = tx.clone();
    let out_thread =
        std::thread::spawn(move || read_records(stdout, |l| tx.send((true, l)).is_ok()));
    let err_thread =
        std::thread::spawn(move || read_records(stderr, |l| tx2.send((false, l)).is_ok()));

    let mut stdout_lines = Vec::new();
    let mut unreadable = Vec::new();
    let mut vanished = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (is_stdout, line) in rx {
        if is_stdout {
            if let Some(p) = parse_progress(&line) {
                on_event(Event::Progress(p));
            } else if !line.trim().is_empty() {
                on_event(Event::Stdout(&line));
                stdout_lines.push(line);
            }
        } else {
            on_event(Event::Stderr(&line));
            match parse_problem(&line) {
                Some(Problem::Vanished(p)) => vanished.push(p),
                Some(Problem::Failed(p)) => unreadable.push(p),
                None if !line.trim().is_empty() => {
                    errors.push(line);
                    if errors.len() > 20 {
                        errors.remove(0);
                    }
                }
                None => {}
            }
        }
    }
    drop(watch); // before the wait reaps it: a reaped pid may name another process
    let status = child.wait().map_err(RsyncError::Spawn)?;
    out_thread
        .join()
        .expect("stdout reader")
        .map_err(RsyncError::Output)?;
    err_thread
        .join()
        .expect("stderr reader")
        .map_err(RsyncError::Output)?;
    Ok(RsyncRun {
        exit: RsyncExit::from_status(status),
        stats: parse_stats(stdout_lines.iter().map(String::as_str)),
        unreadable,
        vanished,
        errors,
    })
}

/// Splits a stream into records at `\n` or `\r` (progress lines end with `\r`).
fn read_records(r: impl Read, mut emit: impl FnMut(String) -> bool) -> io::Result<()> {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            if !buf.is_empty() {
                emit(String::from_utf8_lossy(&buf).into_owned());
            }
            return Ok(());
        }
        let n = chunk.len();
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                if !buf.is_empty() && !emit(String::from_utf8_lossy(&buf).into_owned()) {
                    return Ok(());
                }
                buf.clear();
            } else {
                buf.push(b);
            }
        }
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_has_the_documented_shape() {
        let sources = vec![PathBuf::from("/data"), PathBuf::from("/home/u/env.sh")];
        let link = vec![PathBuf::from("/b/data-2025-04-01-000000")];
        let extra = vec!["--bwlimit=50m".to_string()];
        let spec = ArgvSpec {
            sources: &sources,
            filter: Some(Path::new("/b/.data.filter")),
            link_dest: &link,
            dest: Path::new("/b/.data.in-progress"),
            full: true,
            acls: true,
            xattrs: true,
            progress: false,
            sparse: true,
            extra: &extra,
        };
        assert_eq!(
            build_argv(&spec).unwrap().join(" "),
            "rsync -aHAX --numeric-ids --delete --delete-excluded --block-size=131072 --relative --stats --sparse --checksum \
             --filter=merge /b/.data.filter --link-dest=/b/data-2025-04-01-000000 --bwlimit=50m \
             -- /data /home/u/env.sh /b/.data.in-progress/"
        );
        let spec = ArgvSpec {
            acls: false,
            xattrs: false,
            full: false,
            progress: true,
            sparse: false,
            link_dest: &[],
            extra: &[],
            filter: None,
            ..spec
        };
        let argv = build_argv(&spec).unwrap();
        assert_eq!(argv[1], "-aH");
        assert!(!argv.contains(&"--sparse".to_string()));
        assert!(argv.contains(&"--info=progress2".to_string()));
        assert!(!argv.iter().any(|a| a.starts_with("--link-dest")
            || a.starts_with("--filter")
            || a == "--checksum"));
        assert_eq!(
            filter_rules(&["*.log".into(), "#*#".into(), "/h/a b/".into()]),
            "- *.log\n- #*#\n- /h/a b/\n"
        );
    }

    #[test]
    fn sparse_is_passed_unless_an_old_rsync_writes_in_place() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (version, extra, want) in [
            ("3.2.7", args(&[]), true),
            ("3.0.9", args(&["--bwlimit=50m"]), true),
            ("3.2.7", args(&["--inplace"]), true),
            ("3.1.3", args(&["--inplace"]), true),
            ("3.5.0", args(&["--write-devices"]), true),
            ("3.1.2", args(&["--inplace"]), false),
            ("3.0.9", args(&["--write-devices"]), false),
            ("3.1", args(&["--inplace"]), false),
            ("unknown", args(&["--inplace"]), false),
            ("unknown", args(&[]), true),
        ] {
            assert_eq!(sparse_allowed(version, &extra), want, "{version} {extra:?}");
        }
    }

    #[test]
    fn capabilities_come_from_the_version_text() {
        let new = "rsync  version 3.2.7  protocol version 31\nCapabilities:\n    64-bit files, ACLs, xattrs, iconv\n";
        assert_eq!(
            parse_capabilities(new),
            Capabilities {
                version: "3.2.7".into(),
                acls: true,
                xattrs: true
            }
        );
        let old = "rsync  version 3.1.3  protocol version 31\nCapabilities:\n    no ACLs, xattrs, iconv\n";
        assert_eq!(
            parse_capabilities(old),
            Capabilities {
                version: "3.1.3".into(),
                acls: false,
                xattrs: true
            }
        );
        let none = "rsync  version 3.0.9  protocol version 30\n    no ACLs, no xattrs\n";
        assert_eq!(
            parse_capabilities(none),
            Capabilities {
                version: "3.0.9".into(),
                acls: false,
                xattrs: false
            }
        );
    }

    #[test]
    fn numbers_in_any_locale() {
        assert_eq!(parse_number("1,234,567"), Some(1234567));
        assert_eq!(parse_number("1.234.567"), Some(1234567));
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("1.50K"), Some(1500));
        assert_eq!(parse_number("2.00M"), Some(2_000_000));
        assert_eq!(parse_number("bytes"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn stats_give_files_and_linked_bytes() {
        let text = "\nNumber of files: 1,011 (reg: 1,000, dir: 9, link: 2)\nNumber of created files: 11 (reg: 2, dir: 9)\n\
                    Number of deleted files: 0\nNumber of regular files transferred: 2\nTotal file size: 10,485,760 bytes\n\
                    Total transferred file size: 4,096 bytes\nLiteral data: 4,096 bytes\nMatched data: 0 bytes\n\
                    Total bytes sent: 441\nTotal bytes received: 97\n\nsent 441 bytes  received 97 bytes  1,076.00 bytes/sec\n";
        let s = parse_stats(text.lines());
        assert_eq!(
            s,
            TransferStats {
                files: 1011,
                regular_files: 1000,
                directories: 9,
                transferred_files: 2,
                total_bytes: 10_485_760,
                transferred_bytes: 4096,
                linked_bytes: 10_485_760 - 4096,
            }
        );
    }

    #[test]
    fn progress_lines_parse() {
        let p =
            parse_progress("    112,855,300  99%   88.58MB/s    0:00:01 (xfr#4153, to-chk=0/5079)")
                .unwrap();
        assert_eq!(
            p,
            Progress {
                bytes: 112_855_300,
                percent: 99,
                files: 4153,
                checked: Some(5079),
                listed: Some((5079, true)),
            }
        );
        assert_eq!(
            parse_progress("          0   0%    0.00kB/s    0:00:00  "),
            Some(Progress {
                bytes: 0,
                percent: 0,
                files: 0,
                checked: None,
                listed: None,
            })
        );
        let p =
            parse_progress("  2,048   0%   0.00kB/s  0:00:00 (xfr#1, ir-chk=1000/3021)").unwrap();
        assert_eq!((p.checked, p.listed), (Some(2021), Some((3021, false))));
        assert_eq!(parse_progress("Number of files: 3"), None);
        assert_eq!(parse_progress("sending incremental file list"), None);
    }

    #[test]
    fn problems_name_their_files() {
        let cases = [
            (
                r#"rsync: [sender] send_files failed to open "/h/u/secret": Permission denied (13)"#,
                Some(Problem::Failed(FileProblem {
                    path: "/h/u/secret".into(),
                    message: r#"send_files failed to open "/h/u/secret": Permission denied (13)"#
                        .into(),
                })),
            ),
            (
                r#"rsync: [sender] opendir "/h/u/dir" failed: Permission denied (13)"#,
                Some(Problem::Failed(FileProblem {
                    path: "/h/u/dir".into(),
                    message: r#"opendir "/h/u/dir" failed: Permission denied (13)"#.into(),
                })),
            ),
            (
                r#"file has vanished: "/h/u/tmp file""#,
                Some(Problem::Vanished("/h/u/tmp file".into())),
            ),
            (
                "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394)",
                None,
            ),
            ("sending incremental file list", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_problem(line), want, "{line}");
        }
        assert_eq!(unescape(r"/h/caf\#303\#251"), PathBuf::from("/h/café"));
        assert_eq!(unescape(r"/h/a\#9"), PathBuf::from(r"/h/a\#9"));
    }

    #[test]
    fn exit_codes_are_classified() {
        use std::os::unix::process::ExitStatusExt;
        let st = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(RsyncExit::from_status(st(0)), RsyncExit::Ok);
        assert_eq!(RsyncExit::from_status(st(24)), RsyncExit::Vanished);
        assert_eq!(RsyncExit::from_status(st(23)), RsyncExit::Partial);
        assert_eq!(
            RsyncExit::from_status(st(11)),
            RsyncExit::Failed { code: 11 }
        );
        assert_eq!(
            RsyncExit::from_status(std::process::ExitStatus::from_raw(9)),
            RsyncExit::Signaled { signal: 9 }
        );
        assert!(RsyncExit::Partial.promotable() && RsyncExit::Vanished.promotable());
        assert!(!RsyncExit::Failed { code: 11 }.promotable());
        assert!(
            RsyncExit::Failed { code: 11 }
                .describe()
                .contains("disk full")
        );
        let e11 = RsyncExit::Failed { code: 11 };
        let said = |l: &str| e11.describe_with(&[l.to_string()]);
        assert!(
            said("rsync: [receiver] mkstemp \"/b/x\" failed: No space left on device (28)")
                .contains("the backup disk is full")
        );
        for other in [
            "rsync: [receiver] mkdir \"/b/x\" failed: Permission denied (13)",
            "rsync: [receiver] mkstemp \"/b/x\" failed: Read-only file system (30)",
            "rsync: [sender] read errors mapping \"/d/f\": Input/output error (5)",
        ] {
            let d = said(other);
            assert_eq!(d, "rsync exit 11 (error in file I/O)", "{other}");
        }
        assert!(e11.describe_with(&[]).contains("disk full"));
        assert_eq!(
            RsyncExit::Failed { code: 12 }.describe_with(&["x (5)".into()]),
            RsyncExit::Failed { code: 12 }.describe()
        );
    }

    #[test]
    fn a_copy_that_ran_out_of_space_is_never_promoted() {
        // As rsync says it: the file's line is a problem with a path (so among `unreadable`), not an error line.
        let line = "rsync: [generator] recv_generator: mkdir \"/b/.d.in-progress/d/x\" failed: No space left on device (28)";
        let Some(Problem::Failed(problem)) = parse_problem(line) else {
            panic!("{line} is a file's problem");
        };
        let run = |exit, problem: Option<&FileProblem>| RsyncRun {
            exit,
            stats: TransferStats::default(),
            unreadable: problem.into_iter().cloned().collect(),
            vanished: vec![],
            errors: vec!["rsync: [sender] write error: Broken pipe (32)".into()],
        };
        // Exit 23 when only directories failed: a partial transfer, but of a full disk, not of unreadable files.
        for exit in [RsyncExit::Partial, RsyncExit::Failed { code: 11 }] {
            let full = run(exit, Some(&problem));
            assert!(full.disk_full() && !full.promotable(), "{exit:?}");
            assert!(
                full.describe().contains("the backup disk is full"),
                "{exit:?}"
            );
            assert!(full.disk_full_line().unwrap().contains("mkdir"));
        }
        let unreadable = FileProblem {
            path: "/d/f".into(),
            message: "send_files failed to open \"/d/f\": Permission denied (13)".into(),
        };
        let partial = run(RsyncExit::Partial, Some(&unreadable));
        assert!(!partial.disk_full() && partial.promotable());
        // One file's attributes too large for ext4 to keep: that file's problem, not a full disk.
        let attributes = FileProblem {
            path: "/b/.d.in-progress/d/f".into(),
            message: "rsync_xal_set: lsetxattr(\"/b/.d.in-progress/d/f\",\"user.big\") failed: No space left on device (28)".into(),
        };
        let partial = run(RsyncExit::Partial, Some(&attributes));
        assert!(!partial.disk_full() && partial.promotable());
        // A file named like the error is not one.
        let named = FileProblem {
            path: "/d/No space left on device (28)".into(),
            message: "send_files failed to open \"/d/No space left on device (28)\": Permission denied (13)".into(),
        };
        assert!(run(RsyncExit::Partial, Some(&named)).promotable());
        assert_eq!(
            run(RsyncExit::Failed { code: 11 }, None).describe(),
            "rsync exit 11 (error in file I/O)"
        );
    }

    #[test]
    fn records_split_at_carriage_returns() {
        let mut got = Vec::new();
        read_records(&b"a\rb\nc\r\nd"[..], |l| {
            got.push(l);
            true
        })
        .unwrap();
        assert_eq!(got, ["a", "b", "c", "d"]);
    }

    #[test]
    fn filesystems_without_xattrs_are_detected() {
        if Path::new("/proc/self").exists() {
            assert_eq!(
                probe_fs(Path::new("/proc/self"), false),
                FsSupport {
                    acls: false,
                    xattrs: false
                }
            );
        } else {
            crate::stdx::skip::skip("no /proc to probe");
        }
        // A missing directory is probed through its nearest existing ancestor, without creating it.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet");
        assert_eq!(probe_fs(&missing, true), probe_fs(dir.path(), false));
        assert!(!missing.exists());
    }

    #[test]
    fn real_rsync_copies_and_reports() {
        if probe_rsync().is_err() {
            return crate::stdx::skip::skip("rsync is not installed");
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("Code/Cache")).unwrap();
        std::fs::create_dir_all(src.join("Code/other")).unwrap();
        std::fs::write(src.join("Code/Cache/junk"), "junk").unwrap();
        std::fs::write(src.join("Code/other/keep"), "keep").unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let sources = vec![src.clone()];
        // Patterns a comment-reading exclude file would drop or trim: `#...`, `;...`, a trailing space.
        std::fs::write(src.join("Code/#autosave#"), "x").unwrap();
        std::fs::write(src.join("Code/;semi"), "x").unwrap();
        std::fs::write(src.join("Code/space "), "x").unwrap();
        std::fs::write(src.join("Code/space"), "keep").unwrap();
        let excl = vec![
            format!("{}/Code/Cache/*", src.display()),
            "#*#".to_string(),
            ";semi".to_string(),
            "space ".to_string(),
        ];
        let filter = dir.path().join("filter");
        std::fs::write(&filter, filter_rules(&excl)).unwrap();
        let spec = ArgvSpec {
            sources: &sources,
            filter: Some(&filter),
            link_dest: &[],
            dest: &dest,
            full: false,
            acls: false,
            xattrs: false,
            progress: false,
            sparse: true,
            extra: &[],
        };
        let mut lines = 0;
        let run = run(&build_argv(&spec).unwrap(), &mut |_| lines += 1).unwrap();
        assert_eq!(run.exit, RsyncExit::Ok, "{:?}", run.errors);
        assert!(lines > 0);
        let inside = dest.join(src.strip_prefix("/").unwrap());
        assert!(inside.join("Code/other/keep").is_file());
        assert!(
            inside.join("Code/Cache").is_dir(),
            "the anchored pattern excludes the contents, not the directory"
        );
        assert!(!inside.join("Code/Cache/junk").exists());
        for gone in ["#autosave#", ";semi", "space "] {
            assert!(
                !inside.join("Code").join(gone).exists(),
                "{gone} is excluded"
            );
        }
        assert!(inside.join("Code/space").is_file());
        assert_eq!(run.stats.regular_files, 2);
        assert_eq!(run.stats.total_bytes, 8);
    }
}
