//! Real object stores for the tests, on free 127.0.0.1 ports with temporary data: a single-node Garage (S3, no
//! Object Lock) and moto's server (enforces Object Lock retention). Each is a guard that kills its own process (by
//! its pid) when dropped, and fails the test when that process outlived it. Used by the unit tests of `cloud/`, the
//! integration tests and `cargo xtask bench cloud`; callers turn an `Err` (a tool not installed) into a skip.
//!
//! The tools come from `cargo xtask test` (its cached tools: `$DBACKUP_TOOLS_CACHE` or `~/.cache/dbackup-tools`):
//! `garage/bin/garage` and `moto/bin/moto_server`; `$DBACKUP_GARAGE` and `$DBACKUP_MOTO_SERVER` override.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The region both servers are configured with.
pub const REGION: &str = "garage";

/// The cache of installed tools, as xtask computes it.
pub fn tools_cache() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("DBACKUP_TOOLS_CACHE") {
        return PathBuf::from(dir);
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        });
    cache.join("dbackup-tools")
}

fn tool(var: &str, rel: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_cache().join(rel));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not installed (`cargo xtask test` installs it; or set ${var})",
            path.display()
        ))
    }
}

/// A server's program ([`tool`]) and a new temporary directory `dbackup-<name>-*` for its data and log.
fn tool_and_dir(var: &str, rel: &str, name: &str) -> Result<(PathBuf, tempfile::TempDir), String> {
    let bin = tool(var, rel)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("dbackup-{name}-"))
        .tempdir()
        .map_err(|e| e.to_string())?;
    Ok((bin, dir))
}

/// The ports [`free_port`] and [`closed_port`] handed out in this process: each once only.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The sockets that keep [`closed_port`]'s ports taken, for the life of the process.
static CLOSED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// A free port on 127.0.0.1 (bound, then released for the server to take), never one this process handed out
/// before: the kernel may pick a released port again at once, and two servers started by tests running side by
/// side (or a server's two ports) then raced for it, one failing to start or a test reaching the other's server.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// A port nothing listens on (for "no network" tests), and nothing will while this process lives: it stays bound
/// (without `SO_REUSEADDR`) and never listens, so a connection is refused, and no server a test starts later, here or
/// elsewhere, can take it (a released port could be given to the next server, and the "closed" port answer). Never
/// one [`free_port`] handed out.
pub fn closed_port() -> u16 {
    loop {
        let (fd, port) = bound_socket();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port)
        {
            CLOSED.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
            return port;
        }
    }
}

/// A TCP socket bound to a port of 127.0.0.1 the kernel picks, not listening, without `SO_REUSEADDR`; and its port.
fn bound_socket() -> (OwnedFd, u16) {
    // SAFETY: socket, bind and getsockname with a valid socket and address buffers of the sizes given; the new fd
    // is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let rc = libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len);
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        (fd, u16::from_be(addr.sin_port))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited at start: {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{what} did not listen on 127.0.0.1:{port} within 60 s"
    ))
}

/// Kills our own child by its pid and reaps it; panics (unless already panicking) when it is still alive after.
fn stop(child: &mut Child, what: &str) {
    let pid = child.id();
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && s.contains(what));
    if alive && !std::thread::panicking() {
        panic!("{what} (pid {pid}) outlived its guard");
    }
}

/// Keys of a Garage key.
#[derive(Debug, Clone)]
pub struct GarageKey {
    pub name: String,
    pub id: String,
    pub secret: String,
}

/// A single-node Garage on 127.0.0.1 with a temporary data directory, a key `main` and a bucket.
pub struct Garage {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    /// Garage's `RUST_LOG`: warnings only, or also one line per S3 request ([`Garage::start_logging_requests`]).
    log_filter: &'static str,
    pub port: u16,
    pub key: GarageKey,
    pub bucket: String,
}

/// The `RUST_LOG` that makes Garage log one line per API request (`<client> <METHOD> <path>`).
const LOG_REQUESTS: &str = "garage=warn,garage_api_common=info";

/// One S3 request as Garage logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
}

/// A log line without its ANSI colour sequences (`ESC [ ... letter`).
fn strip_colour(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The requests in Garage's log text: its `generic_server` lines `<client> <METHOD> <path>` (colour codes and the
/// `error ... in response to` lines that repeat a request left out).
pub fn parse_request_log(log: &str) -> Vec<LoggedRequest> {
    log.lines()
        .filter_map(|line| {
            let line = strip_colour(line);
            let (_, rest) = line.split_once("generic_server")?;
            // After the target: optional colour codes, then ": ".
            let rest = rest.split_once(": ")?.1.trim();
            let mut words = rest.split_whitespace();
            let client = words.next()?;
            // `(key GK...)` on an authenticated request, `(via ADDR)` behind a proxy: skipped.
            let mut method = words.next()?;
            while method.starts_with('(') {
                while !method.ends_with(')') {
                    method = words.next()?;
                }
                method = words.next()?;
            }
            let path = words.next()?;
            let is_request = client.contains(':')
                && client.parse::<std::net::SocketAddr>().is_ok()
                && method.chars().all(|c| c.is_ascii_uppercase());
            is_request.then(|| LoggedRequest {
                method: method.to_string(),
                path: path.to_string(),
            })
        })
        .collect()
}

impl Garage {
    /// Starts Garage, lays out its single node, creates the key `main` and the bucket `dbackup-test` (read, write,
    /// owner). `Err`: Garage is not installed (or did not start).
    pub fn start() -> Result<Garage, String> {
        Garage::start_with("garage=warn")
    }

    /// [`Garage::start`], logging every S3 request it serves ([`Garage::requests_logged`]): what a client really
    /// sent, counted on the server's side (`cargo xtask bench cloud`).
    pub fn start_logging_requests() -> Result<Garage, String> {
        Garage::start_with(LOG_REQUESTS)
    }

    /// The requests served so far, from the server's log, in order.
    pub fn requests_logged(&self) -> Vec<LoggedRequest> {
        parse_request_log(
            &std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default(),
        )
    }

    fn start_with(log_filter: &'static str) -> Result<Garage, String> {
        let (bin, dir) = tool_and_dir("DBACKUP_GARAGE", "garage/bin/garage", "garage")?;
        let port = free_port();
        let rpc = free_port();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.path().display(),
                secret = random_hex(32),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut g = Garage {
            dir,
            bin,
            config,
            child: None,
            log_filter,
            port,
            key: GarageKey {
                name: "main".into(),
                id: format!("GK{}", random_hex(12)),
                secret: random_hex(32),
            },
            bucket: "dbackup-test".into(),
        };
        g.spawn()?;
        let node = g.cli(&["node", "id", "-q"])?;
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        let key = g.key.clone();
        g.import_key(&key)?;
        g.cli(&["key", "allow", "--create-bucket", &key.name])?;
        let bucket = g.bucket.clone();
        g.cli(&["bucket", "create", &bucket])?;
        g.allow(&bucket, &key.name, &["--read", "--write", "--owner"])?;
        Ok(g)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log =
            std::fs::File::create(self.dir.path().join("garage.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", self.log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let up = wait_for_port(self.port, &mut child, "garage");
        self.child = Some(child);
        up?;
        // The RPC side answers a little after the API port opens.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cli(&["status"]).is_err() {
            if Instant::now() > deadline {
                return Err("garage status did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Runs the garage CLI against this node; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Imports a key (id `GK` + 24 hex digits, secret 64 hex digits).
    pub fn import_key(&self, key: &GarageKey) -> Result<(), String> {
        self.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            &key.name,
            &key.id,
            &key.secret,
        ])
        .map(|_| ())
    }

    /// A new key with only the given permissions on the bucket (`--read`, `--write`, `--owner`).
    pub fn restricted_key(&self, name: &str, perms: &[&str]) -> Result<GarageKey, String> {
        let key = GarageKey {
            name: name.into(),
            id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
        };
        self.import_key(&key)?;
        self.allow(&self.bucket, name, perms)?;
        Ok(key)
    }

    fn allow(&self, bucket: &str, key: &str, perms: &[&str]) -> Result<(), String> {
        let mut args = vec!["bucket", "allow"];
        args.extend_from_slice(perms);
        args.extend_from_slice(&[bucket, "--key", key]);
        self.cli(&args).map(|_| ())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash or a pulled plug): its data stays for [`Garage::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, "garage");
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moto's S3 server on 127.0.0.1 (any keys are accepted; Object Lock retention enforced on single-part uploads),
/// with a bucket `dbackup-lock` created with Object Lock enabled.
pub struct Moto {
    /// Held for its lifetime: moto's log and working directory, removed when the guard drops.
    _dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub bucket: String,
}

impl Moto {
    pub fn start() -> Result<Moto, String> {
        let (bin, dir) = tool_and_dir("DBACKUP_MOTO_SERVER", "moto/bin/moto_server", "moto")?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let up = wait_for_port(port, &mut child, "moto_server");
        let mut m = Moto {
            _dir: dir,
            child: Some(child),
            port,
            bucket: "dbackup-lock".into(),
        };
        up?;
        // moto checks no signature: a plain request creates the bucket with Object Lock enabled.
        let status = m.raw(&format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-amz-bucket-object-lock-enabled: true\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            m.bucket
        ))?;
        if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
            let _ = &mut m;
            return Err(format!("moto did not create the bucket: {status}"));
        }
        Ok(m)
    }

    /// Sends one raw HTTP request; the status line of the answer.
    fn raw(&self, request: &str) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        Ok(answer.lines().next().unwrap_or_default().to_string())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, "moto");
        }
    }
}

/// A real S3 client independent of dbackup, for the tests to look into a bucket: boto3 from moto's venv (moto
/// depends on it), driven by a short Python program per call.
pub struct S3Client {
    python: PathBuf,
    endpoint: String,
    id: String,
    secret: String,
    bucket: String,
}

impl S3Client {
    /// A client of Garage's bucket with its main key. `Err`: moto's venv is not installed.
    pub fn for_garage(g: &Garage) -> Result<S3Client, String> {
        Ok(S3Client {
            python: tool("DBACKUP_MOTO_PYTHON", "moto/bin/python")?,
            endpoint: g.endpoint(),
            id: g.key.id.clone(),
            secret: g.key.secret.clone(),
            bucket: g.bucket.clone(),
        })
    }

    /// A client of moto's lock bucket (moto takes any keys).
    pub fn for_moto(m: &Moto) -> Result<S3Client, String> {
        Ok(S3Client {
            python: tool("DBACKUP_MOTO_PYTHON", "moto/bin/python")?,
            endpoint: m.endpoint(),
            id: "testing-key-id".into(),
            secret: "testing-secret-key".into(),
            bucket: m.bucket.clone(),
        })
    }

    /// An object's Object Lock retention as a HEAD of it states it: `(mode, retain-until date as RFC 3339)`, or
    /// `None` when it has none. (moto 5.2.5 answers GetObjectRetention with an error; HEAD carries the same.)
    pub fn retention(&self, key: &str) -> Option<(String, String)> {
        let out = self
            .run(
                "h = s3.head_object(Bucket=b, Key=sys.argv[5])\n\
                 if 'ObjectLockMode' in h:\n\
                 \x20   print(h['ObjectLockMode'] + '\\t' + h['ObjectLockRetainUntilDate'].isoformat())\n",
                &[key],
            )
            .expect("reading an object's retention");
        let out = String::from_utf8_lossy(&out);
        let (mode, until) = out.trim().split_once('\t')?;
        Some((mode.to_string(), until.to_string()))
    }

    /// The versions of the objects under `prefix`: `(key, version id)`, sorted.
    pub fn versions(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .run(
                "r = s3.list_object_versions(Bucket=b, Prefix=sys.argv[5])\n\
                 for v in r.get('Versions', []):\n\
                 \x20   print(v['Key'] + '\\t' + v['VersionId'])\n",
                &[prefix],
            )
            .expect("listing object versions");
        let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, id)| (k.to_string(), id.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Deletes one version of an object for good; `Err`: the server's refusal.
    pub fn delete_version(&self, key: &str, version: &str) -> Result<(), String> {
        self.run(
            "s3.delete_object(Bucket=b, Key=sys.argv[5], VersionId=sys.argv[6])\n",
            &[key, version],
        )
        .map(|_| ())
    }

    /// Deletes an object.
    pub fn delete(&self, key: &str) {
        self.run("s3.delete_object(Bucket=b, Key=sys.argv[5])\n", &[key])
            .expect("deleting an object");
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let prelude = "import sys, boto3\nfrom botocore.config import Config\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], \
            aws_secret_access_key=sys.argv[3], region_name='garage', \
            config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))\nb = sys.argv[4]\n";
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(format!("{prelude}{program}"))
            .args([&self.endpoint, &self.id, &self.secret, &self.bucket])
            .args(args)
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every key under `prefix`, with its size, sorted.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = self
            .run(
                "p = s3.get_paginator('list_objects_v2')\n\
                 for page in p.paginate(Bucket=b, Prefix=sys.argv[5]):\n\
                 \x20   for o in page.get('Contents', []):\n\
                 \x20       print(o['Key'] + '\\t' + str(o['Size']))\n",
                &[prefix],
            )
            .expect("listing the bucket");
        let mut v: Vec<(String, u64)> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, s)| (k.to_string(), s.parse().unwrap_or(0)))
            .collect();
        v.sort();
        v
    }

    /// An object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.run(
            "sys.stdout.buffer.write(s3.get_object(Bucket=b, Key=sys.argv[5])['Body'].read())\n",
            &[key],
        )
        .expect("reading an object")
    }

    /// Replaces an object (a file's bytes).
    pub fn put(&self, key: &str, file: &Path) {
        self.run(
            "s3.put_object(Bucket=b, Key=sys.argv[5], Body=open(sys.argv[6], 'rb').read())\n",
            &[key, &file.display().to_string()],
        )
        .expect("writing an object");
    }

    /// The multipart uploads begun and not completed under `prefix`.
    pub fn multipart_uploads(&self, prefix: &str) -> Vec<String> {
        let out = self
            .run(
                "r = s3.list_multipart_uploads(Bucket=b, Prefix=sys.argv[5])\n\
                 for u in r.get('Uploads', []):\n\
                 \x20   print(u['Key'])\n",
                &[prefix],
            )
            .expect("listing multipart uploads");
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real Garage started to log requests logs the ones it serves (an anonymous GET, refused, counts once).
    /// (Signed requests carry `(key GK...)` after the client: the parser's table test has one.)
    #[test]
    fn a_logging_garage_logs_each_request() {
        let g = match Garage::start_logging_requests() {
            Ok(g) => g,
            Err(why) => return crate::skip(&why),
        };
        let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
        s.write_all(b"GET /dbackup-test/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        // Until the line is in the log (a fixed 300 ms sleep was not always enough on a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(60);
        while g.requests_logged().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(g.dir.path().join("garage.log")).unwrap();
        assert_eq!(
            g.requests_logged(),
            [LoggedRequest {
                method: "GET".into(),
                path: "/dbackup-test/k".into()
            }],
            "{log}"
        );
    }

    /// Many servers in one test process get as many ports: `free_port` never hands out a port twice (the kernel
    /// picks a released port again often enough: a few hundred picks hit one twice). And a closed port refuses a
    /// connection, and no server can take it later.
    #[test]
    fn ports_are_handed_out_once_and_a_closed_port_stays_closed() {
        let ports: Vec<u16> = (0..400).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");

        let closed = closed_port();
        assert!(!distinct.contains(&closed));
        let refused = TcpStream::connect(("127.0.0.1", closed)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let taken = TcpListener::bind(("127.0.0.1", closed)).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        assert!((0..400).all(|_| free_port() != closed));
    }

    #[test]
    fn requests_are_read_from_garage_log_lines() {
        let log = "\u{1b}[2m2026-12-05T17:35:45Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mgarage_api_common::generic_server\u{1b}[0m\u{1b}[2m:\u{1b}[0m S3 API server listening on http://127.0.0.1:39012
2026-12-05T17:35:48Z  INFO garage_api_common::generic_server: 127.0.0.1:43128 (key GK1df9d27cfeccf8313cc33a1b) GET /b/k?x-id=GetObject
2026-12-05T17:35:48Z  INFO garage_api_common::generic_server: error 403 Forbidden, Forbidden: no in response to 127.0.0.1:43128 GET /b/k
\u{1b}[2m2026Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mgarage_api_common::generic_server\u{1b}[0m\u{1b}[2m:\u{1b}[0m [::1]:5 HEAD /b/k2
2026-12-05T17:35:49Z  WARN garage_block::manager: something else
";
        let got = parse_request_log(log);
        assert_eq!(
            got,
            [
                LoggedRequest {
                    method: "GET".into(),
                    path: "/b/k?x-id=GetObject".into()
                },
                LoggedRequest {
                    method: "HEAD".into(),
                    path: "/b/k2".into()
                },
            ]
        );
    }
}
