//! Starts the real `solo` binary on 127.0.0.1 port 0 with a temporary data directory,
//! and builds clients for it: gRPC through `solo-client`, REST through reqwest, and the
//! CLI itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use solo_client::{Client, Flags, Profile};

pub const SOLO: &str = env!("CARGO_BIN_EXE_solo");

/// A running server; killed (by PID) when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub grpc: String,
    pub http: String,
    stderr_log: PathBuf,
}

impl Server {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// Starts on `dir` (kept) with extra environment.
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, env, &[]).0
    }

    /// Starts with extra flags too; also returns the other `... listening on` lines.
    pub fn start_with(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (Self, Vec<String>) {
        Self::start_limited(dir, env, args, None)
    }

    /// Starts with the open-file limit (soft and hard) lowered to `nofile`, if given.
    pub fn start_limited(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        args: &[&str],
        nofile: Option<u64>,
    ) -> (Self, Vec<String>) {
        let stderr_log = dir.path().join("server.stderr");
        let mut cmd = Command::new(SOLO);
        cmd.args([
            "server",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SOLO_MASTER_KEY")
        .env("SOLO_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args);
        if let Some(n) = nofile {
            limit_open_files(&mut cmd, n);
        }
        let child = cmd.spawn().expect("start solo server");
        Starting::new(child, dir, stderr_log).wait(Duration::from_secs(60))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Issues a client certificate and returns its (cert, key) paths.
    pub fn issue(&self, tenant: &str, admin: bool) -> (PathBuf, PathBuf) {
        let out = self.dir.path().join("clients");
        let cert = solo_gateway::pki::issue(&self.data_dir(), tenant, admin, &out).unwrap();
        (cert, out.join(format!("{tenant}-key.pem")))
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir().join("certs").join("ca.pem")
    }

    /// The profile of the admin certificate `solo server` created.
    pub fn admin_profile(&self) -> Profile {
        admin_profile_of(&self.data_dir()).unwrap()
    }

    /// A profile for a tenant certificate issued now.
    pub fn tenant_profile(&self, tenant: &str) -> Profile {
        let (cert, key) = self.issue(tenant, false);
        self.profile_with(Flags {
            cert: Some(cert),
            key: Some(key),
            ..Flags::default()
        })
    }

    /// A profile from `flags`, the endpoint and CA filled in.
    pub fn profile_with(&self, flags: Flags) -> Profile {
        Profile::resolve(
            &Flags {
                endpoint: Some(self.grpc.clone()),
                ca: flags.ca.clone().or_else(|| Some(self.ca())),
                data_dir: Some(self.dir.path().join("nowhere")),
                ..flags
            },
            &[],
        )
        .unwrap()
    }

    pub async fn admin(&self) -> Client {
        self.admin_profile().connect().await.unwrap()
    }

    pub async fn tenant(&self, tenant: &str) -> Client {
        self.tenant_profile(tenant).connect().await.unwrap()
    }

    /// A REST client presenting `profile`'s certificate (if any).
    pub fn rest(&self, profile: &Profile) -> Rest {
        let tls = profile.rustls_config().unwrap();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Rest {
            http,
            base: format!("https://{}", self.http),
            token: None,
        }
    }

    /// Runs the CLI against this server (through its data directory, no flags).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = Command::new(SOLO);
        cmd.args(args)
            .env("SOLO_DATA_DIR", self.data_dir())
            .env_remove("SOLO_ENDPOINT")
            .env_remove("SOLO_CERT")
            .env_remove("SOLO_KEY")
            .env_remove("SOLO_CA")
            .env_remove("SOLO_TOKEN")
            .env_remove("SOLO_TENANT")
            .current_dir(workspace_root());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// The CLI with `--json`, its output parsed; panics with stderr on failure.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "solo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "solo {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Kills the server with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Starts a new server on the same data directory (after a stop or a kill).
    pub fn restart(mut self) -> Self {
        self.kill9();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Server::start_in(dir, &[])
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit(within)
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        if let Some(c) = &self.child {
            signal(c.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the server to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_child(&mut child, within).unwrap_or_else(|| {
            panic!(
                "the server did not stop within {within:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }
}

/// A server process that has not printed its addresses yet (a cluster's standby waits
/// for the active node's lease before it listens).
pub struct Starting {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    stderr_log: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Starting {
    pub fn new(mut child: Child, dir: tempfile::TempDir, stderr_log: PathBuf) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Some(child),
            dir: Some(dir),
            stderr_log,
            lines: rx,
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().join("data")
    }

    /// Whether the server printed a line within `within` (it should not, on a standby).
    pub fn printed_within(&self, within: Duration) -> bool {
        self.lines.recv_timeout(within).is_ok()
    }

    /// Waits for the addresses; also returns the other `... listening on` lines.
    pub fn wait(mut self, within: Duration) -> (Server, Vec<String>) {
        let (mut grpc, mut http) = (None, None);
        let mut others = Vec::new();
        let deadline = Instant::now() + within;
        while grpc.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "the server did not print its addresses; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
                )
            });
            if let Some(a) = line.strip_prefix("grpc listening on ") {
                grpc = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("http listening on ") {
                http = Some(a.to_string());
            } else if line.contains(" listening on ") {
                others.push(line);
            }
        }
        // Lines printed after http's (the metrics listener) arrive at once.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            others.push(line);
        }
        let server = Server {
            child: self.child.take(),
            dir: self.dir.take().unwrap(),
            grpc: grpc.unwrap(),
            http: http.unwrap(),
            stderr_log: self.stderr_log.clone(),
        };
        (server, others)
    }
}

impl Starting {
    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself (`None` if it had not within `within`).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_child(self.child.as_mut().unwrap(), within)
    }

    /// How the process exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child process to exit by itself; kills it and answers `None` after
/// `within`.
pub fn wait_child(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(unsafe_code)]
fn limit_open_files(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // setrlimit(2), which is async-signal-safe, on a value it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A REST client.
pub struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Rest {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::POST, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        send(self.req(reqwest::Method::DELETE, path)).await
    }

    /// The body of a GET as text (`/metrics`).
    pub async fn text(&self, path: &str) -> String {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        r.text().await.unwrap()
    }
}

pub async fn send(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    (status, v)
}

/// The `solo-reason` of a failed RPC.
pub fn reason(s: &tonic::Status) -> String {
    s.metadata()
        .get(solo_proto::REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The admin's profile for the server on data directory `data` (its `server.json` and
/// the admin certificate there), once the server has written its `server.json`.
pub fn admin_profile_of(data: &Path) -> Option<Profile> {
    let flags = Flags {
        data_dir: Some(data.to_path_buf()),
        ..Flags::default()
    };
    Profile::resolve(&flags, &[]).ok()
}

pub fn counter_js() -> String {
    std::fs::read_to_string(workspace_root().join("examples/js/counter.js")).unwrap()
}

pub fn echo_js() -> String {
    std::fs::read_to_string(workspace_root().join("examples/js/echo.js")).unwrap()
}

/// A call of `id` with `request`, within the default 5 s.
pub fn call(id: &str, request: serde_json::Value) -> solo_proto::v1::CallRequest {
    solo_proto::v1::CallRequest {
        service_id: id.into(),
        request: request.to_string(),
        timeout_ms: 5000,
    }
}
