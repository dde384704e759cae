//! Running a helper tool with a time limit and bounded output: [`run_bounded`], and [`find_program`] (`$PATH` and the
//! sbin directories a non-login `$PATH` may lack).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a bounded run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded {
    /// The exit code; `None` when killed (time limit) or ended by a signal.
    pub code: Option<i32>,
    /// At most `max_bytes` of stdout.
    pub stdout: Vec<u8>,
    /// Whether stdout was longer than `max_bytes` (the rest was read and thrown away).
    pub truncated: bool,
    /// The last 4 KiB of stderr.
    pub stderr: Vec<u8>,
    /// Killed at the time limit.
    pub timed_out: bool,
}

impl Bounded {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Why it failed, in a phrase: `exit 1: sfdisk: cannot open /dev/sda: Permission denied`.
    pub fn failure(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        let last = err
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let how = if self.timed_out {
            "did not finish in time and was stopped".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            }
        };
        if last.is_empty() {
            how
        } else {
            format!("{how}: {}", super::show_str(last))
        }
    }
}

const STDERR_TAIL: usize = 4096;

/// Runs `cmd` (stdin closed) for at most `limit`, keeping at most `max_bytes` of its stdout and the end of its
/// stderr; a run over time is killed (by its own pid: it is our child) and reported as `timed_out`.
pub fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    max_bytes: usize,
) -> std::io::Result<Bounded> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max_bytes.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    truncated |= n > room;
                }
            }
        }
        (kept, truncated)
    });
    let err_reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        tail
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, truncated) = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Bounded {
        code: if timed_out { None } else { status.code() },
        stdout,
        truncated,
        stderr,
        timed_out,
    })
}

/// Whether no process `pid` runs any more: the owner of a leftover named after its pid was killed (or ended) and
/// the leftover is nobody's. A pid this process may not signal still runs; pid 0 is never gone.
pub fn process_gone(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

/// Whether `pid` is another dbackup that runs: not this process, not a zombie, and either this very program
/// (`/proc/<pid>/exe` is ours) or one whose name says dbackup (another version's binary, as while an upgrade
/// replaces it). A recycled pid of another program does not count. Only ever a reason to leave something alone.
pub fn another_dbackup(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if pid == std::process::id() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: comm may hold spaces and parentheses; the state follows the last `)`.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    if matches!(
        tail.trim_start().chars().next(),
        Some('Z' | 'X' | 'x') | None
    ) {
        return false;
    }
    let comm = head.split_once(" (").map_or("", |(_, c)| c);
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let theirs = std::fs::metadata(format!("/proc/{pid}/exe")).map(id);
    let ours = std::fs::metadata("/proc/self/exe").map(id);
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b) || comm.contains("dbackup")
}

/// A program on `$PATH` or in the sbin directories (`/usr/sbin` is not on a user's `$PATH` everywhere).
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another dbackup runs while its process lives and is no zombie (killed, not yet waited for); this process and
    /// a pid that is none are not another dbackup. (`external::layout`'s tests cover the binary of another version.)
    #[test]
    fn another_dbackup_lives_until_killed_and_is_never_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("dbackup");
        std::fs::copy("/bin/sleep", &other).unwrap();
        let mut child = Command::new(&other).arg("30").spawn().unwrap();
        assert!(another_dbackup(child.id()));
        child.kill().unwrap();
        let start = Instant::now();
        while another_dbackup(child.id()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "still counted after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!another_dbackup(child.id()));
        assert!(!another_dbackup(std::process::id()));
        assert!(!another_dbackup(u32::MAX));
    }

    #[test]
    fn output_is_bounded_and_slow_tools_are_stopped() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 100000 /dev/zero; echo oops >&2; exit 3"]);
        let r = run_bounded(cmd, Duration::from_secs(10), 1000).unwrap();
        assert_eq!((r.code, r.stdout.len(), r.truncated), (Some(3), 1000, true));
        assert_eq!(r.failure(), "exit 3: oops");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let t = Instant::now();
        let r = run_bounded(cmd, Duration::from_millis(200), 10).unwrap();
        assert!(r.timed_out && !r.ok(), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-dbackup").is_none());
    }
}
