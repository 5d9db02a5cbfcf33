//! The `[cluster]` section of the configuration, and how it is checked.

use serde::{Deserialize, Serialize};

/// `[cluster]`: join a cluster instead of keeping the store in the data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// NATS servers to reach the cluster's log through. Empty (the default): a single
    /// node with its embedded store.
    pub nats_urls: Vec<String>,
    /// The NATS servers' monitoring endpoints (`http://host:port`), checked at start:
    /// every server holding a replica of the log must sync each write.
    pub monitor_urls: Vec<String>,
    /// This node's name, unique in the cluster (`[a-z0-9-]`, 1-64 characters).
    pub node_id: Option<String>,
    /// How many NATS servers keep the log.
    pub replicas: usize,
    /// The JetStream stream of the log.
    pub stream: String,
    /// A node's lease (mode `active`: the active node's): a dead node's tenants move (a
    /// standby takes over) this long after it stopped renewing it.
    pub lease_ms: u64,
    /// TLS to NATS: the CA that signed the NATS servers' certificates (PEM). Set with
    /// `nats_cert_file` and `nats_key_file`, or not at all (plaintext, for a private
    /// network only).
    pub nats_ca_file: Option<std::path::PathBuf>,
    /// The host name or address other nodes reach this node's gRPC and HTTPS listeners
    /// by, when other nodes forward clients to it. Unset: the
    /// listeners' own addresses, which must then be specific (not `0.0.0.0`).
    pub advertise_host: Option<String>,
    /// Compact the log once it holds this many entries (one node copies its view
    /// to the cluster's object store and purges the entries before it); 0: never.
    pub compact_every: u64,
    /// This node's own client certificate for NATS (PEM): its credentials.
    pub nats_cert_file: Option<std::path::PathBuf>,
    /// The key of `nats_cert_file` (PEM).
    pub nats_key_file: Option<std::path::PathBuf>,
    /// How nodes share the work: `tenants` (the default: every node serves the tenants
    /// placed on it, and forwards the others' requests) or `active` (one active node
    /// serves everything, the others stand by and forward).
    pub mode: ClusterMode,
}

/// How a cluster's nodes share the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// One active node serves every tenant; the others stand by, forwarding.
    Active,
    /// Every node serves the tenants placed on it (`tenants.rs`).
    #[default]
    Tenants,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            nats_urls: Vec::new(),
            monitor_urls: Vec::new(),
            node_id: None,
            replicas: 3,
            stream: "SOLO".into(),
            lease_ms: 5_000,
            compact_every: 100_000,
            nats_ca_file: None,
            advertise_host: None,
            nats_cert_file: None,
            nats_key_file: None,
            mode: ClusterMode::Tenants,
        }
    }
}

impl ClusterSection {
    /// Whether the node joins a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }

    /// Why the section is wrong, if it is.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(id) = &self.node_id else {
            return Err("cluster.node_id is required with cluster.nats_urls".into());
        };
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "cluster.node_id {id:?} must be 1-64 characters of [a-z0-9-]"
            ));
        }
        if self.monitor_urls.is_empty() {
            return Err(
                "cluster.monitor_urls is required with cluster.nats_urls: each NATS \
                        server's syncing is checked at start"
                    .into(),
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "cluster.replicas {} must be between 1 and 5",
                self.replicas
            ));
        }
        let tls = [
            &self.nats_ca_file,
            &self.nats_cert_file,
            &self.nats_key_file,
        ];
        if tls.iter().any(|f| f.is_some()) && !tls.iter().all(|f| f.is_some()) {
            return Err(
                "cluster.nats_ca_file, nats_cert_file and nats_key_file go together: \
                        set all three for TLS to NATS, or none"
                    .into(),
            );
        }
        if let Some(h) = &self.advertise_host
            && (h.is_empty() || h.len() > 253 || h.contains(char::is_whitespace))
        {
            return Err(format!(
                "cluster.advertise_host {h:?} is not a host name or address"
            ));
        }
        if self.compact_every != 0 && !(10..=1_000_000_000).contains(&self.compact_every) {
            return Err(format!(
                "cluster.compact_every {} must be 0 (never) or between 10 and 1000000000",
                self.compact_every
            ));
        }
        if !(1_000..=600_000).contains(&self.lease_ms) {
            return Err(format!(
                "cluster.lease_ms {} must be between 1000 and 600000",
                self.lease_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked() {
        assert!(ClusterSection::default().validate().is_ok());
        let on = ClusterSection {
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
            monitor_urls: vec!["http://127.0.0.1:8222".into()],
            node_id: Some("n1".into()),
            ..ClusterSection::default()
        };
        assert!(on.validate().is_ok());
        assert!(
            ClusterSection {
                compact_every: 0,
                ..on.clone()
            }
            .validate()
            .is_ok()
        );
        for (bad, why) in [
            (
                ClusterSection {
                    node_id: None,
                    ..on.clone()
                },
                "node_id is required",
            ),
            (
                ClusterSection {
                    node_id: Some("N 1".into()),
                    ..on.clone()
                },
                "[a-z0-9-]",
            ),
            (
                ClusterSection {
                    monitor_urls: vec![],
                    ..on.clone()
                },
                "monitor_urls is required",
            ),
            (
                ClusterSection {
                    replicas: 0,
                    ..on.clone()
                },
                "replicas 0",
            ),
            (
                ClusterSection {
                    lease_ms: 10,
                    ..on.clone()
                },
                "lease_ms 10",
            ),
            (
                ClusterSection {
                    advertise_host: Some("node a".into()),
                    ..on.clone()
                },
                "advertise_host",
            ),
            (
                ClusterSection {
                    compact_every: 5,
                    ..on.clone()
                },
                "compact_every 5 must be 0 (never)",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_mode_is_tenants_unless_active_is_asked() {
        assert_eq!(ClusterSection::default().mode, ClusterMode::Tenants);
        let s: ClusterSection = serde_json::from_str(r#"{"mode":"active"}"#).unwrap();
        assert_eq!(s.mode, ClusterMode::Active);
        let e = serde_json::from_str::<ClusterSection>(r#"{"mode":"both"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }
}
