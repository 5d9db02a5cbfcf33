//! How a node reaches the cluster's log.

use std::path::PathBuf;
use std::time::Duration;

/// Where the replicated log lives and how hard to try to reach it.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The NATS servers to connect to (any of them; the client learns the others).
    pub nats_urls: Vec<String>,
    /// The monitoring endpoints (`http://host:port`) of the NATS servers, used at start
    /// to check that every server holding a replica of the log syncs each write.
    pub monitor_urls: Vec<String>,
    /// This node's name (distinct per node): names its NATS connection.
    pub node_id: String,
    /// The JetStream stream holding the log; its subject is `<stream lowercased>.log`.
    pub stream: String,
    /// How many servers hold the log (3 in production).
    pub replicas: usize,
    /// The directory of this node's local view of the log.
    pub data_dir: PathBuf,
    /// How long one publish waits for the stream's acknowledgement.
    pub ack_timeout: Duration,
    /// How long a write keeps retrying while the log has no leader or no quorum before
    /// it is refused as unavailable.
    pub retry_for: Duration,
    /// How long a write acknowledged by the stream waits for this node's view to apply it.
    pub apply_timeout: Duration,
    /// TLS to the NATS servers, with this node's own client certificate; `None`:
    /// plaintext (a private loopback network only).
    pub tls: Option<NatsTls>,
    /// Whether the local view syncs each commit (off by default: the replicated log is
    /// what makes a write durable, and a view that lost its last commits to a crash of
    /// the machine reads them again from the log, from its marker).
    pub sync_view: bool,
}

/// How a node reaches NATS over TLS: the CA that signed the servers' certificates, and
/// the node's own certificate and key (its credentials; NATS can map it to a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClusterOptions {
    /// Options with the defaults for everything but where to connect and store.
    pub fn new(nats_urls: Vec<String>, monitor_urls: Vec<String>, data_dir: PathBuf) -> Self {
        Self {
            nats_urls,
            monitor_urls,
            node_id: "solo".into(),
            stream: "SOLO".into(),
            replicas: 3,
            data_dir,
            ack_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(20),
            apply_timeout: Duration::from_secs(30),
            tls: None,
            sync_view: false,
        }
    }

    /// The subject every log entry is published on.
    pub fn subject(&self) -> String {
        format!("{}.log", self.stream.to_ascii_lowercase())
    }
}
