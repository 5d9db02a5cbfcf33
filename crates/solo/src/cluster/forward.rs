//! A standby's forwarder: until the node becomes active it listens on its configured
//! gRPC and HTTPS addresses and relays each connection, bytes unchanged, to the
//! listeners the active node recorded in the log, so a client may name any node. TLS
//! runs end to end between the client and the active node (every node holds the same
//! CA and server certificate), so a standby never sees a request, a certificate's key
//! or a token; the active node's limits, timeouts and refusals apply as to any client.
//! With no active node to relay to (an election, no quorum, an active node that does not
//! accept), the standby completes the handshake itself and refuses the connection's
//! requests as `unavailable` (`no_active_node`, retry after a second), in gRPC or JSON.
//! With `metrics_addr` set, the standby serves its own metrics there meanwhile (its
//! view, its heartbeats, what it relayed), until the gateway takes the address over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use solo_cluster::JetStreamStore;
use solo_gateway::Refusal;
use solo_gateway::capped::{self, Accepted};
use solo_store::{Kv, WriteBatch};
use solo_types::api::Failure;
use solo_types::{Code, metric_names as m};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ACTIVE_SCOPE;

/// The table the active node records its listeners in.
const ENDPOINTS: &str = "cluster_endpoints";
const ACTIVE_KEY: &[u8] = b"active";
/// Connections one standby relays at once; more are closed at once.
const MAX_RELAYED: usize = 1024;
/// How long a relay waits for the active node to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the active node listens, as recorded under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    pub node: String,
    pub epoch: u64,
    pub grpc: String,
    pub http: String,
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

#[derive(Clone, Copy)]
enum Which {
    Grpc,
    Http,
}

/// The running forwarder; [`Forwarder::stop`] frees its addresses for the gateway.
pub struct Forwarder {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Where the standby serves its metrics, if it does.
    pub metrics: Option<SocketAddr>,
    stop: CancellationToken,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on `grpc` and `http` and relays to the active node; serves the node's
    /// metrics on `metrics` (a loopback address: the configuration checked it).
    pub async fn start(
        log: Arc<JetStreamStore>,
        (grpc, http, metrics): (SocketAddr, SocketAddr, Option<SocketAddr>),
        refusal: Refusal,
    ) -> std::io::Result<Self> {
        let g = TcpListener::bind(grpc).await?;
        let h = TcpListener::bind(http).await?;
        let (grpc, http) = (g.local_addr()?, h.local_addr()?);
        let stop = CancellationToken::new();
        let metrics = match metrics {
            Some(addr) => {
                // Now, so that what the node records from here on is kept.
                solo_gateway::metrics::install();
                Some(TcpListener::bind(addr).await?)
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        let limit = Arc::new(Semaphore::new(MAX_RELAYED));
        let refusal = Arc::new(refusal);
        let loops = [(g, Which::Grpc), (h, Which::Http)]
            .into_iter()
            .map(|(l, which)| {
                tokio::spawn(accept(
                    l,
                    which,
                    Arc::clone(&log),
                    Arc::clone(&limit),
                    Arc::clone(&refusal),
                    stop.clone(),
                ))
            })
            .chain(
                metrics
                    .map(|l| tokio::spawn(solo_gateway::metrics::serve_plaintext(l, stop.clone()))),
            )
            .collect();
        Ok(Self {
            grpc,
            http,
            metrics: metrics_addr,
            stop,
            loops,
        })
    }

    /// Closes the listeners (awaited, so the addresses are free) and every relay.
    pub async fn stop(self) {
        self.stop.cancel();
        for l in self.loops {
            let _ = l.await;
        }
    }
}

async fn accept(
    listener: TcpListener,
    which: Which,
    log: Arc<JetStreamStore>,
    limit: Arc<Semaphore>,
    refusal: Arc<Refusal>,
    stop: CancellationToken,
) {
    loop {
        let (sock, permit) = match capped::accept(&listener, &limit, &stop, "relay").await {
            Accepted::Conn(sock, permit) => (sock, permit),
            Accepted::OverCap => {
                metrics::counter!(m::CLUSTER_RELAYED_CONNECTIONS, "outcome" => "over_cap")
                    .increment(1);
                continue;
            }
            Accepted::Stopped => return,
        };
        let (log, refusal, stop) = (Arc::clone(&log), Arc::clone(&refusal), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = stop.cancelled() => {}
                () = relay(&log, sock, which, &refusal) => {}
            }
        });
    }
}

/// Relays one connection to the active node; refuses it when there is none to reach
/// (nothing has been read from the client yet, so the standby can still answer it).
async fn relay(log: &JetStreamStore, mut client: TcpStream, which: Which, refusal: &Refusal) {
    let e = match active(log) {
        Active::At(e) => e,
        Active::Unreachable(node) => return refuse(refusal, client, Some(&node)).await,
        Active::Nobody => return refuse(refusal, client, None).await,
    };
    let target = match which {
        Which::Grpc => &e.grpc,
        Which::Http => &e.http,
    };
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        _ => return refuse(refusal, client, Some(&e.node)).await,
    };
    metrics::counter!(m::CLUSTER_RELAYED_CONNECTIONS, "outcome" => "relayed").increment(1);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Answers `client` with [`no_active_node`], counted.
async fn refuse(refusal: &Refusal, client: TcpStream, last: Option<&str>) {
    metrics::counter!(m::CLUSTER_RELAYED_CONNECTIONS, "outcome" => "refused").increment(1);
    refusal.serve(client, no_active_node(last)).await;
}

/// What a client is told while no node serves: retryable, with who held the lease last
/// when it is known.
fn no_active_node(last: Option<&str>) -> Failure {
    let message = match last {
        Some(node) => format!(
            "no active node to relay to: node {node} holds the cluster's lease but cannot be \
             reached (starting, stopped, or listening on an unspecified address without \
             cluster.advertise_host); a standby takes over if its lease lapses, retry shortly"
        ),
        None => "no active node: the cluster is choosing one (an election, or a NATS \
                 quorum lost); retry shortly"
            .to_string(),
    };
    let mut f = Failure::new(Code::Unavailable, "no_active_node", message);
    f.retry_after = Some(1);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

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
