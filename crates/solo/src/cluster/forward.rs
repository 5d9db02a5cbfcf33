//! Where a standby forwards its clients' requests: until the node becomes active, its
//! gateway serves every request by forwarding it (`solo_gateway::forward`) to the
//! listeners the active node recorded in the log, so a client may name any node. With no
//! active node to forward to (an election, no quorum, an active node that does not
//! accept), the standby refuses the request as `unavailable` (`no_active_node`, retry
//! after a second), in gRPC or JSON.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use solo_cluster::JetStreamStore;
use solo_gateway::TlsFiles;
use solo_gateway::forward::{Forwarding, Listener, Pick, Upstream};
use solo_gateway::pki::{Ca, CertPaths};
use solo_store::{Kv, WriteBatch};
use solo_types::Code;
use solo_types::api::Failure;

use super::ACTIVE_SCOPE;

/// The table the active node records its listeners in.
const ENDPOINTS: &str = "cluster_endpoints";
const ACTIVE_KEY: &[u8] = b"active";

/// Where the active node listens, as recorded under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    pub node: String,
    pub epoch: u64,
    pub grpc: String,
    pub http: String,
    /// Whether the node takes forwarded requests (honours a node certificate's naming of
    /// its client). A node of an earlier version records no such field: it would take a
    /// node certificate's CN for a tenant, so nothing is forwarded to it.
    #[serde(default)]
    pub takes_forwarded: bool,
}

/// `addr` as other nodes reach it: `host` in place of an unspecified address
/// (`0.0.0.0`, `[::]`); `None` when it is unspecified and no host is given.
pub fn reachable(addr: SocketAddr, host: Option<&str>) -> Option<String> {
    match host {
        Some(h) if h.contains(':') && !h.starts_with('[') => Some(format!("[{h}]:{}", addr.port())),
        Some(h) => Some(format!("{h}:{}", addr.port())),
        None if addr.ip().is_unspecified() => None,
        None => Some(addr.to_string()),
    }
}

/// The batch that records `e` as the active node's listeners.
pub fn record(e: &Endpoints) -> anyhow::Result<WriteBatch> {
    let mut batch = WriteBatch::new();
    batch.put(ENDPOINTS, ACTIVE_KEY.to_vec(), serde_json::to_vec(e)?)?;
    Ok(batch)
}

/// Who is active, by this node's view and clock.
enum Active {
    /// The lease's holder, with the listeners it recorded under that lease.
    At(Endpoints),
    /// A node holds the lease but has recorded no listeners under it (yet: it is starting;
    /// or never: it listens on an unspecified address without `advertise_host`).
    Unreachable(String),
    /// Nobody holds an unexpired lease: a hand-over, or no quorum.
    Nobody,
}

fn active(log: &JetStreamStore) -> Active {
    let Some(lease) = log.lease(ACTIVE_SCOPE).ok().flatten() else {
        return Active::Nobody;
    };
    if lease.expires_ns < solo_types::clock::system_now_ns() {
        return Active::Nobody;
    }
    let recorded = log
        .get(ENDPOINTS, ACTIVE_KEY)
        .ok()
        .flatten()
        .and_then(|raw| serde_json::from_slice::<Endpoints>(&raw).ok());
    match recorded {
        Some(e) if e.node == lease.holder && e.epoch == lease.epoch => Active::At(e),
        _ => Active::Unreachable(lease.holder),
    }
}

/// How this standby forwards its clients' requests: to the listeners the active node
/// recorded under the lease this node's view holds, presenting a node certificate it
/// issues itself from the shared CA (in memory only, valid a week).
pub fn forwarding(
    log: Arc<JetStreamStore>,
    node: &str,
    data_dir: &Path,
    tls: &TlsFiles,
) -> anyhow::Result<Forwarding> {
    let (cert, key) = node_certificate(node, data_dir)?;
    let pick: Pick = Arc::new(move |which| match active(&log) {
        Active::At(e) if !e.takes_forwarded => Err(older_active_node(&e.node)),
        Active::At(e) => Ok(Upstream {
            unreachable: no_active_node(Some(&e.node)),
            addr: match which {
                Listener::Grpc => e.grpc,
                Listener::Http => e.http,
            },
            node: e.node,
        }),
        Active::Unreachable(node) => Err(no_active_node(Some(&node))),
        Active::Nobody => Err(no_active_node(None)),
    });
    Forwarding::new(tls, (&cert, &key), pick).map_err(|e| anyhow::anyhow!("forwarding: {e}"))
}

/// A node certificate for `node` (O `solo-node`), issued from the shared CA, kept in
/// memory only: what a node presents to the nodes it forwards requests to.
pub fn node_certificate(node: &str, data_dir: &Path) -> anyhow::Result<(String, String)> {
    let paths = CertPaths::new(data_dir);
    let ca = Ca::load(&paths).with_context(|| {
        format!(
            "a cluster node issues its own node certificate with the shared CA's key \
             ({}); copy the CA's key there with the certificates",
            paths.ca_key().display()
        )
    })?;
    Ok(ca.issue_node(node)?)
}

/// What a client is told while the active node runs a version that does not take
/// forwarded requests (a rolling upgrade under way).
fn older_active_node(node: &str) -> Failure {
    unavailable(format!(
        "the active node {node} runs an earlier version of Solo that does not take requests \
         forwarded by other nodes; connect to it directly, or retry once it is upgraded"
    ))
}

/// What a client is told while no node serves: retryable, with who held the lease last
/// when it is known.
fn no_active_node(last: Option<&str>) -> Failure {
    unavailable(match last {
        Some(node) => format!(
            "no active node to forward to: node {node} holds the cluster's lease but cannot be \
             reached (starting, stopped, or listening on an unspecified address without \
             cluster.advertise_host); a standby takes over if its lease lapses, retry shortly"
        ),
        None => "no active node: the cluster is choosing one (an election, or a NATS \
                 quorum lost); retry shortly"
            .to_string(),
    })
}

/// `no_active_node`, retry after a second, saying `message`.
fn unavailable(message: String) -> Failure {
    let mut f = Failure::new(Code::Unavailable, "no_active_node", message);
    f.retry_after = Some(1);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_forwarded_to_a_node_that_would_not_know_a_node_certificate() {
        // As an earlier version recorded its listeners: no `takes_forwarded`.
        let old = r#"{"node":"a","epoch":3,"grpc":"10.0.0.1:50051","http":"10.0.0.1:8080"}"#;
        let e: Endpoints = serde_json::from_str(old).unwrap();
        assert!(!e.takes_forwarded);
        let f = older_active_node("a");
        assert_eq!(
            (f.code, f.reason.as_str()),
            (Code::Unavailable, "no_active_node")
        );
        let now = Endpoints {
            takes_forwarded: true,
            ..e
        };
        let back: Endpoints = serde_json::from_slice(&serde_json::to_vec(&now).unwrap()).unwrap();
        assert_eq!(back, now);
    }

    #[test]
    fn an_address_is_given_as_other_nodes_reach_it() {
        let specific: SocketAddr = "10.0.0.5:50051".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert_eq!(reachable(specific, None).as_deref(), Some("10.0.0.5:50051"));
        assert_eq!(reachable(any, None), None);
        assert_eq!(
            reachable(any, Some("node-a.internal")).as_deref(),
            Some("node-a.internal:50051")
        );
        assert_eq!(
            reachable(any, Some("fd00::5")).as_deref(),
            Some("[fd00::5]:50051")
        );
    }
}
