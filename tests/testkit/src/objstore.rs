//! Real object stores for the tests, on free 127.0.0.1 ports with temporary data: a single-node Garage (S3, no
//! Object Lock) and moto's server (enforces Object Lock retention). Each is a guard that kills its own process (by
//! its pid) when dropped, and fails the test when that process outlived it. Used by the unit tests of `cloud/`, the
//! integration tests and `cargo xtask bench cloud`; callers turn an `Err` (a tool not installed) into a skip.
//!
//! The tools come from `cargo xtask test` (its cached tools: `$DBACKUP_TOOLS_CACHE` or `~/.cache/dbackup-tools`):
//! `garage/bin/garage` and `moto/bin/moto_server`; `$DBACKUP_GARAGE` and `$DBACKUP_MOTO_SERVER` override.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A port nothing listens on (for "no network" tests).
pub fn closed_port() -> u16 {
    free_port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
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
        "{what} did not listen on 127.0.0.1:{port} within 30 s"
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
    pub port: u16,
    pub key: GarageKey,
    pub bucket: String,
}

impl Garage {
    /// Starts Garage, lays out its single node, creates the key `main` and the bucket `dbackup-test` (read, write,
    /// owner). `Err`: Garage is not installed (or did not start).
    pub fn start() -> Result<Garage, String> {
        let bin = tool("DBACKUP_GARAGE", "garage/bin/garage")?;
        let dir = tempfile::Builder::new()
            .prefix("dbackup-garage-")
            .tempdir()
            .map_err(|e| e.to_string())?;
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
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let up = wait_for_port(self.port, &mut child, "garage");
        self.child = Some(child);
        up?;
        // The RPC side answers a little after the API port opens.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cli(&["status"]).is_err() {
            if Instant::now() > deadline {
                return Err("garage status did not answer within 30 s".into());
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
        let bin = tool("DBACKUP_MOTO_SERVER", "moto/bin/moto_server")?;
        let dir = tempfile::Builder::new()
            .prefix("dbackup-moto-")
            .tempdir()
            .map_err(|e| e.to_string())?;
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
