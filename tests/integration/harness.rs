//! The test builder: a private home, config and backup root per test, and the real binary run against them.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_dbackup");

/// The config of one set, `data`, of `~/data`, under the test's backup root: nothing else.
pub const DATA_ONLY: &str =
    r#"{ "backup_root": "{root}", "backup_sets": [ { "name": "data", "sources": ["~/data"] } ] }"#;

/// One test's world: a temporary directory holding `home/`, `root/` (the backup root), `state/` and `config.json`.
pub struct Test {
    pub dir: tempfile::TempDir,
    config: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Test {
        let dir = tempfile::Builder::new()
            .prefix("dbackup-test-")
            .tempdir()
            .expect("tempdir");
        for d in ["home", "state", "xdg-config"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Test {
            dir,
            config: None,
            env: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The backup root every test config should point at (`{root}` in [`Test::config`]).
    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// Replaces `{tmp}`, `{home}` and `{root}` in `text` with this test's paths.
    pub fn expand(&self, text: &str) -> String {
        text.replace("{tmp}", &self.dir.path().display().to_string())
            .replace("{home}", &self.home().display().to_string())
            .replace("{root}", &self.root().display().to_string())
    }

    /// Writes `config.json` (after [`Test::expand`]) and passes it with `--config` to every command.
    pub fn config(mut self, json: &str) -> Test {
        let path = self.path("config.json");
        std::fs::write(&path, self.expand(json)).unwrap();
        self.config = Some(path);
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Test {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes a file (creating parents) under the test directory.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `text` with this test's directory written `[TMP]`, for snapshots.
    pub fn without_tmp(&self, text: &str) -> String {
        text.replace(&self.dir.path().display().to_string(), "[TMP]")
    }

    /// Writes a secret (a passphrase file) with mode 0600: dbackup refuses one that other users can read.
    pub fn write_secret(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.write(rel, content);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A new age key pair made by `dbackup keygen --out <tmp>/<name>`: the identity file and its recipient (`age1...`).
    pub fn keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.path(name);
        let out = self
            .cmd()
            .no_config()
            .args(["keygen", "--out"])
            .args([&path])
            .status(0);
        let recipient = out.stdout.trim().to_string();
        assert!(recipient.starts_with("age1"), "{}", out.stdout);
        (path, recipient)
    }

    /// A command against this test's world; nothing runs until `status`, `output` or `spawn`.
    pub fn cmd(&self) -> Cmd {
        let mut command = Command::new(BIN);
        self.environment(&mut command, "tester")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        Cmd {
            command,
            config: self.config.clone(),
            args: Vec::new(),
            name: String::new(),
        }
    }
}

impl Test {
    /// A command run as the unprivileged user `uid` (group `uid`, no supplementary groups), through
    /// `setpriv`: its `HOME` is `home` and its XDG config and state directories are below it, and it is given no
    /// config (as on a new machine). The tests run as root, which reads and owns everything; a normal user does not.
    pub fn cmd_as(&self, uid: u32, home: &Path) -> Cmd {
        self.cmd_as_in(uid, &[], home)
    }

    /// [`Test::cmd_as`] with the supplementary `groups` (a user in `groups`, as `id` lists them).
    pub fn cmd_as_in(&self, uid: u32, groups: &[u32], home: &Path) -> Cmd {
        let groups = match groups {
            [] => "--clear-groups".to_string(),
            _ => format!(
                "--groups={}",
                groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let mut command = Command::new("setpriv");
        self.environment(&mut command, "someone")
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .current_dir(home)
            .stdin(Stdio::null())
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args([groups.as_str(), BIN]);
        Cmd {
            command,
            config: None,
            args: Vec::new(),
            name: String::new(),
        }
    }
}

/// One invocation of the binary.
pub struct Cmd {
    command: Command,
    config: Option<PathBuf>,
    args: Vec<OsString>,
    name: String,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the expected JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts that stdout holds `text`, showing stdout when it does not; chains.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Output {
        expect("stdout", &self.stdout, text, true);
        self
    }

    /// Asserts that stdout does not hold `text`.
    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Output {
        expect("stdout", &self.stdout, text, false);
        self
    }

    /// Asserts that stderr holds `text`, showing stderr when it does not; chains.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Output {
        expect("stderr", &self.stderr, text, true);
        self
    }

    /// Asserts that stderr does not hold `text`.
    #[track_caller]
    pub fn stderr_lacks(&self, text: &str) -> &Output {
        expect("stderr", &self.stderr, text, false);
        self
    }
}

/// Asserts that `stream` (named `name`) holds `text`, or does not when `present` is false.
#[track_caller]
fn expect(name: &str, stream: &str, text: &str, present: bool) {
    let verb = if present { "lacks" } else { "holds" };
    assert_eq!(
        stream.contains(text),
        present,
        "{name} {verb} {text:?}:\n{stream}"
    );
}

impl Cmd {
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(
        mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> Cmd {
        self.command.env(key, value);
        self
    }

    /// Run without `--config` (so the lookup order is exercised).
    pub fn no_config(mut self) -> Cmd {
        self.config = None;
        self
    }

    /// Run in a session of its own: no controlling terminal, so `/dev/tty` cannot be opened (as under systemd).
    pub fn no_terminal(mut self) -> Cmd {
        use std::os::unix::process::CommandExt;
        // SAFETY: `pre_exec` itself is unsafe (the closure runs between fork and exec); setsid is async-signal-safe
        // and allocates nothing.
        unsafe {
            self.command.pre_exec(|| {
                rustix::process::setsid()?;
                Ok(())
            });
        }
        self
    }

    /// Run with at most `bytes` of address space (`RLIMIT_AS`, as `prlimit --as`): a run that needs more fails to
    /// allocate and aborts.
    pub fn memory_limit(mut self, bytes: u64) -> Cmd {
        use std::os::unix::process::CommandExt;
        // SAFETY: `pre_exec` itself is unsafe (the closure runs between fork and exec); setrlimit is
        // async-signal-safe and allocates nothing.
        unsafe {
            self.command.pre_exec(move || {
                let limit = rustix::process::Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                };
                rustix::process::setrlimit(rustix::process::Resource::As, limit)?;
                Ok(())
            });
        }
        self
    }

    /// Invoke the binary through a link with this name (argv[0] dispatch).
    pub fn argv0(mut self, name: &str) -> Cmd {
        self.name = name.to_string();
        self
    }

    fn prepare(mut self) -> Command {
        if let Some(c) = &self.config {
            self.command.arg("--config").arg(c);
        }
        self.command.args(&self.args);
        if !self.name.is_empty() {
            use std::os::unix::process::CommandExt;
            self.command.arg0(&self.name);
        }
        self.command
    }

    pub fn output(self) -> Output {
        let mut command = self.prepare();
        Output::from(command.output().expect("run dbackup"))
    }

    /// Runs and asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn status(self, code: i32) -> Output {
        let out = self.output();
        assert_eq!(
            out.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        );
        out
    }

    pub fn spawn(self) -> Child {
        self.spawn_to(Stdio::piped())
    }

    /// [`Cmd::spawn`] with stdout going to `stdout` (stderr piped).
    pub fn spawn_to(self, stdout: Stdio) -> Child {
        let mut command = self.prepare();
        command
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dbackup")
    }
}

/// Runs another program (GNU tar, bsdtar, age, ...), which must succeed: its stdout; the command and its stderr in
/// the panic when it fails.
#[track_caller]
pub fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// All a spawned command writes to stderr, read to its end (the command has ended or closes it).
pub fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().expect("stderr piped");
    pipe.read_to_string(&mut stderr).expect("read stderr");
    stderr
}

/// Two runs at once: `first` is held at the test point `point` (`DBACKUP_TEST_POINTS`, debug builds) while `second`
/// runs until it ends or waits for a lock the first holds (`locked-wait`); then the first goes on. What each printed.
pub fn at_once(t: &Test, point: &str, first: Cmd, second: Cmd) -> [Output; 2] {
    let (held, other) = (t.path("points-held"), t.path("points-other"));
    for dir in [&held, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let hold = held.join(format!("{point}.hold"));
    std::fs::write(&hold, "").unwrap();
    let mut one = first.env("DBACKUP_TEST_POINTS", &held).spawn();
    wait_until(&mut one, &held.join(format!("{point}.reached")));
    let mut two = second.env("DBACKUP_TEST_POINTS", &other).spawn();
    wait_until(&mut two, &other.join("locked-wait.reached"));
    std::fs::remove_file(&hold).unwrap();
    [one, two].map(|c| Output::from(c.wait_with_output().unwrap()))
}

/// Polls until `reached` exists or `child` has ended (its exit is read later); panics after two minutes.
fn wait_until(child: &mut Child, reached: &Path) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reached.exists() && child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < until,
            "{} neither came nor did the run end",
            reached.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Cuts the file at `path` to the length `to` gives for its length (a drive file cut short); returns that length.
pub fn cut_short(path: &Path, to: impl FnOnce(u64) -> u64) -> u64 {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(to(len))
        .unwrap();
    len
}

/// Flips every bit of the byte in the middle of the file at `path` (a drive file damaged, its size unchanged).
pub fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
}

/// Inode number and link count of a path.
pub fn inode(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.nlink())
}

/// Permission bits of a path.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

impl Test {
    /// `dbackup restore --source external`: a restore from the drive's backups; add what to restore and where.
    pub fn restore_from_drive(&self) -> Cmd {
        self.cmd().args(["restore", "--source", "external"])
    }

    /// `dbackup restore --drive <drive>`: a restore from the backups on `drive` (a mount point or a directory).
    pub fn restore_drive(&self, drive: &Path) -> Cmd {
        self.cmd().args(["restore", "--drive"]).args([drive])
    }
}

impl Test {
    /// Runs `dbackup --json <args>`, which must exit 0: its stdout parsed into `T`.
    #[track_caller]
    pub fn run_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        self.cmd().args(["--json"]).args(args).status(0).json()
    }
}

impl Test {
    /// Gives `command` the environment `cmd` gives the binary, with `USER` set to `user`: for running dbackup under
    /// another program (`unshare`, `setpriv`). Cleared, then `PATH`, `HOME`, `USER`, the XDG directories, `LANG`, `TZ`.
    pub fn environment<'c>(&self, command: &'c mut Command, user: &str) -> &'c mut Command {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("USER", user)
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
    }
}

impl From<std::process::Output> for Output {
    /// What a finished process printed, its exit code -1 when a signal ended it.
    fn from(out: std::process::Output) -> Output {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
