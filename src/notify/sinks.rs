//! The sinks an event can go to: a freedesktop notification (`notify-send`, when a session bus exists), a command (the
//! event in `DBACKUP_EVENT`, `DBACKUP_SUMMARY`, `DBACKUP_DETAILS` and as JSON on stdin), and an ntfy-style HTTP POST
//! (the summary and details as the body, `Title`, `Priority` and `Tags` headers) through `ureq`, `https://` with
//! rustls and Mozilla's root certificates built in: no other program runs for it, so nothing but the units' own
//! binary needs to be on `PATH` for it (see [`programs`]).
//!
//! Every sink has a time limit, so a hung receiver cannot hold the backup (and its lock) forever.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::event::{Delivery, Event, Outcome, kind_word};
use crate::config::{EventKind, Notifications};

/// How long a notification command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an HTTP POST (or notify-send) may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the sinks need from the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `DBUS_SESSION_BUS_ADDRESS`: a desktop session to notify.
    pub session_bus: bool,
    /// `$PATH`, to find `notify-send`.
    pub path: Option<std::ffi::OsString>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            session_bus: std::env::var_os("DBUS_SESSION_BUS_ADDRESS")
                .is_some_and(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
        }
    }

    /// A program on `$PATH`.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .map(|d| d.join(program))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }
}

/// One configured sink, ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// `notifications.desktop` with a session bus and `notify-send` found.
    Desktop {
        notify_send: PathBuf,
    },
    /// `notifications.desktop`, but no notification can be shown here, and why.
    DesktopUnavailable {
        why: String,
        failure: bool,
    },
    Command {
        argv: Vec<String>,
    },
    Http {
        url: String,
    },
}

/// The sinks `config` names, as they can work in `env`.
pub fn configured(config: &Notifications, env: &Env) -> Vec<Sink> {
    let mut out = Vec::new();
    if config.desktop {
        out.push(match (env.session_bus, env.find("notify-send")) {
            (false, _) => Sink::DesktopUnavailable {
                why: "no desktop session here (DBUS_SESSION_BUS_ADDRESS is not set)".into(),
                failure: false,
            },
            (true, None) => Sink::DesktopUnavailable {
                why: "notify-send is not installed (apt-get install libnotify-bin)".into(),
                failure: true,
            },
            (true, Some(notify_send)) => Sink::Desktop { notify_send },
        });
    }
    if let Some(argv) = config.command.as_ref().filter(|a| !a.is_empty()) {
        out.push(Sink::Command { argv: argv.clone() });
    }
    if let Some(url) = &config.http {
        out.push(Sink::Http { url: url.clone() });
    }
    out
}

impl Sink {
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Desktop { .. } | Sink::DesktopUnavailable { .. } => "desktop",
            Sink::Command { .. } => "command",
            Sink::Http { .. } => "http",
        }
    }

    /// How long one delivery may take: [`COMMAND_TIMEOUT`] for a command, [`HTTP_TIMEOUT`] for the others.
    pub fn limit(&self) -> Duration {
        match self {
            Sink::Command { .. } => COMMAND_TIMEOUT,
            _ => HTTP_TIMEOUT,
        }
    }

    /// [`Sink::deliver_within`] its [`Sink::limit`] (the tests' shorthand).
    #[cfg(test)]
    pub fn deliver(&self, event: &Event) -> Delivery {
        self.deliver_within(event, self.limit())
    }

    /// Gives `event` to this sink within `limit`; never fails, says what happened.
    pub fn deliver_within(&self, event: &Event, limit: Duration) -> Delivery {
        let result = match self {
            Sink::Desktop { notify_send } => desktop(notify_send, event, limit),
            Sink::DesktopUnavailable { why, failure } => {
                return Delivery {
                    event: event.kind,
                    sink: self.name().into(),
                    outcome: if *failure {
                        Outcome::Failed
                    } else {
                        Outcome::Skipped
                    },
                    message: Some(why.clone()),
                };
            }
            Sink::Command { argv } => command(argv, event, limit),
            Sink::Http { url } => http(url, event, limit),
        };
        Delivery {
            event: event.kind,
            sink: self.name().into(),
            outcome: if result.is_ok() {
                Outcome::Sent
            } else {
                Outcome::Failed
            },
            message: result.err(),
        }
    }
}

/// `notify-send --app-name=dbackup --urgency=... summary details`.
fn desktop(notify_send: &Path, event: &Event, limit: Duration) -> Result<(), String> {
    let urgency = match event.kind {
        EventKind::Failure => "critical",
        EventKind::Success => "low",
        _ => "normal",
    };
    let mut cmd = Command::new(notify_send);
    cmd.arg("--app-name=dbackup")
        .arg(format!("--urgency={urgency}"))
        .arg("--icon=drive-harddisk")
        .arg("--")
        .arg(&event.summary)
        .arg(&event.details);
    run(cmd, None, limit).map_err(|e| format!("notify-send: {e}"))
}

/// Runs the configured command with the event in its environment and as JSON on stdin.
pub fn command(argv: &[String], event: &Event, timeout: Duration) -> Result<(), String> {
    let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("DBACKUP_EVENT", kind_word(event.kind))
        .env("DBACKUP_SUMMARY", &*bounded_env(&event.summary))
        .env("DBACKUP_DETAILS", &*bounded_env(&event.details));
    run(cmd, Some(format!("{json}\n").as_bytes()), timeout).map_err(|e| {
        format!(
            "{}: {e}",
            crate::ui::shell_words(&crate::stdx::redact_argv(argv))
        )
    })
}

/// The most an environment variable of the command holds: the kernel refuses to start a program given one of more
/// than 128 KiB (`E2BIG`), so a longer text is cut at a line (the whole event is on stdin).
const MAX_ENV_TEXT: usize = 64 << 10;

/// `text` as an environment variable carries it: whole, or cut at a line with a note saying where the rest is.
fn bounded_env(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ENV_TEXT {
        return text.into();
    }
    let mut end = MAX_ENV_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind('\n').unwrap_or(end);
    format!(
        "{}\n... (cut: the whole event is the JSON on stdin)",
        &text[..cut]
    )
    .into()
}

/// The request's headers and body, ntfy-style.
pub fn request(event: &Event) -> (Vec<(&'static str, String)>, String) {
    let (priority, tags) = match event.kind {
        EventKind::Success => ("low", "white_check_mark"),
        EventKind::Failure => ("high", "rotating_light"),
        EventKind::Warning => ("default", "warning"),
        EventKind::MissingMedia => ("default", "floppy_disk"),
        EventKind::LowDisk => ("high", "warning"),
        EventKind::Overdue => ("high", "hourglass"),
    };
    let title = ascii(&format!(
        "dbackup on {}: {}",
        event.host,
        kind_word(event.kind).replace('_', " ")
    ));
    let headers = vec![
        ("Title", title),
        ("Priority", priority.to_string()),
        ("Tags", format!("{tags},dbackup")),
        ("X-Dbackup-Event", kind_word(event.kind).to_string()),
        ("Content-Type", "text/plain; charset=utf-8".to_string()),
    ];
    let body = if event.details.is_empty() {
        event.summary.clone()
    } else {
        format!("{}\n\n{}", event.summary, event.details)
    };
    (headers, body)
}

/// Header values must be visible ASCII.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A URL as messages show it: scheme and host only (see [`crate::stdx::redact_url`]).
pub fn redact(url: &str) -> String {
    crate::stdx::redact_url(url)
}

/// The HTTP POST, `http://` and `https://` alike (rustls; the server's certificate must chain to one of Mozilla's
/// roots, which the binary carries, so it works the same in a unit, a container or the Nix build sandbox). The URL's
/// secrets (user info, path, query) appear in no message: whatever ureq said is cleaned of them too.
pub fn http(url: &str, event: &Event, limit: Duration) -> Result<(), String> {
    post(url, event, ureq::tls::RootCerts::WebPki, limit)
        .map_err(|e| crate::stdx::redact_url_in(&e, url))
}

/// The POST of [`http`], trusting `roots` (the tests' own certificate authority).
pub(crate) fn post(
    url: &str,
    event: &Event,
    roots: ureq::tls::RootCerts,
    limit: Duration,
) -> Result<(), String> {
    let (headers, body) = request(event);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.send(body.as_bytes()) {
        Ok(_) => Ok(()),
        Err(ureq::Error::StatusCode(code)) => {
            Err(format!("POST to {} answered HTTP {code}", redact(url)))
        }
        Err(e) => Err(format!("POST to {}: {e}", redact(url))),
    }
}

/// The programs the sinks `config` enables start, as they are looked up on `PATH`: `notify-send` for
/// `desktop`, the first word of `command`. The HTTP sink starts none. `dbackup systemd render` lists them with the
/// units' other programs, so the Nix package and modules can be checked to put each on the units' `PATH`.
pub fn programs(config: &Notifications) -> Vec<String> {
    let mut out = Vec::new();
    if config.desktop {
        out.push("notify-send".to_string());
    }
    if let Some(program) = config.command.as_ref().and_then(|argv| argv.first()) {
        out.push(program.clone());
    }
    out
}

/// Runs `cmd` with `stdin` (or nothing) on its standard input, its output captured (never on dbackup's stdout), and
/// waits at most `timeout` (then kills it). Ok on exit 0; else the exit status and the end of its output.
fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<(), String> {
    let mut out =
        tempfile::tempfile().map_err(|e| format!("cannot create a temporary file: {e}"))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let out_for_child = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::from(out_for_child))
    .stderr(Stdio::from(err));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    // Written beside the wait, so that a command that does not read more than a pipe holds is still killed in time
    // (the writer then meets the closed pipe and ends).
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || pipe.write_all(&bytes)))
        }
        _ => None,
    };
    let status = wait(&mut child, timeout)?;
    match writer.map(std::thread::JoinHandle::join) {
        // A command that does not read its stdin may exit first: a broken pipe is not its failure.
        Some(Ok(Err(e))) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(format!("cannot write to its stdin: {e}"));
        }
        _ => {}
    }
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = out.rewind();
    let _ = out.read_to_string(&mut text);
    let tail: String = {
        let t = text.trim();
        let start = t.char_indices().rev().nth(400).map(|(i, _)| i).unwrap_or(0);
        t[start..].replace('\n', " | ")
    };
    let what = match status.code() {
        Some(c) => format!("exited with {c}"),
        None => "was killed by a signal".to_string(),
    };
    Err(if tail.is_empty() {
        what
    } else {
        format!("{what}: {tail}")
    })
}

fn wait(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {}s and was killed",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}
