//! Cluster mode of `solo server`: the `[cluster]` section, and a node's role in it.
//!
//! With `[cluster] nats_urls` set, the node keeps its store in the cluster's replicated
//! log (`solo-cluster`) instead of a local file. One node at a time is **active**: it
//! holds the log's `solo/active` lease, renews it every third of `lease_ms`, and every
//! write it makes is fenced by the lease's epoch, so that once it has lost the lease
//! (paused, cut off) nothing it writes lands. The others wait as **standbys** (running
//! no kernel) and take over, recovering every service from its record and last
//! snapshot, once the active node's lease lapses. An active node that loses its lease
//! exits at once: whatever it holds in memory is stale. A standby's gateway forwards
//! each request to the active node meanwhile (`forward.rs` says where), so a client may
//! name any node, and refuses them as `unavailable` (`no_active_node`) while there is
//! none.

mod forward;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use solo_cluster::{ClusterOptions, Heartbeat, JetStreamStore, Lease, Membership};
use solo_store::{
    Commit, EventFilter, EventLog, EventPage, EventQuery, Kv, KvRead, StoreError, Subscription,
    VerifyReport, WriteBatch,
};
use solo_types::{NewEvent, metric_names as m};

/// The lease the active node holds.
pub const ACTIVE_SCOPE: &str = "solo/active";

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
    /// The active node's lease: a standby takes over this long after the active node
    /// stopped renewing it.
    pub lease_ms: u64,
    /// TLS to NATS: the CA that signed the NATS servers' certificates (PEM). Set with
    /// `nats_cert_file` and `nats_key_file`, or not at all (plaintext, for a private
    /// network only).
    pub nats_ca_file: Option<std::path::PathBuf>,
    /// The host name or address other nodes reach this node's gRPC and HTTPS listeners
    /// by, when the node is active and standbys forward clients to it. Unset: the
    /// listeners' own addresses, which must then be specific (not `0.0.0.0`).
    pub advertise_host: Option<String>,
    /// Compact the log once it holds this many entries (the active node copies its view
    /// to the cluster's object store and purges the entries before it); 0: never.
    pub compact_every: u64,
    /// This node's own client certificate for NATS (PEM): its credentials.
    pub nats_cert_file: Option<std::path::PathBuf>,
    /// The key of `nats_cert_file` (PEM).
    pub nats_key_file: Option<std::path::PathBuf>,
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

/// An active node: the store it writes through (fenced by its lease) and the task that
/// keeps the lease.
pub struct Active {
    pub store: Arc<dyn solo_store::Store>,
    log: Arc<JetStreamStore>,
    lease: Arc<parking_lot::Mutex<Lease>>,
    renew: tokio::task::JoinHandle<()>,
    /// The cluster's membership (advisory).
    membership: Arc<Membership>,
    ttl: Duration,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Active {
    /// Records where this node listens, under its lease, so the standbys forward clients
    /// here. Without a reachable address (an unspecified one and no `advertise_host`)
    /// nothing is recorded, and standbys refuse the requests they get (`no_active_node`).
    pub async fn advertise(
        &self,
        grpc: std::net::SocketAddr,
        http: std::net::SocketAddr,
        host: Option<&str>,
    ) -> anyhow::Result<()> {
        let (Some(g), Some(h)) = (
            forward::reachable(grpc, host),
            forward::reachable(http, host),
        ) else {
            tracing::warn!(%grpc, %http, "listening on an unspecified address without cluster.advertise_host: standbys cannot forward clients to this node");
            return Ok(());
        };
        let (node, epoch) = {
            let l = self.lease.lock();
            (l.holder.clone(), l.epoch)
        };
        self.membership.listening(Some(g.clone()), Some(h.clone()));
        let batch = forward::record(&forward::Endpoints {
            node,
            epoch,
            grpc: g,
            http: h,
            takes_forwarded: true,
        })?;
        self.store
            .commit(batch)
            .await
            .context("record this node's listeners")?;
        Ok(())
    }

    /// The cluster's nodes for health: each node's last heartbeat, its role by the lease
    /// in this node's view.
    pub fn members(&self) -> Option<solo_kernel::Members> {
        let membership = Arc::clone(&self.membership);
        let log = Arc::clone(&self.log);
        let ttl = self.ttl;
        Some(Arc::new(move || {
            let now = solo_types::clock::system_now_ns();
            let active = log
                .lease(ACTIVE_SCOPE)
                .ok()
                .flatten()
                .filter(|l| l.expires_ns > now)
                .map(|l| l.holder);
            membership
                .members()
                .into_iter()
                .map(|m| {
                    let age = m.age_ns(now);
                    solo_types::api::ClusterNode {
                        role: if active.as_deref() == Some(m.beat.node.as_str()) {
                            "active"
                        } else {
                            "standby"
                        }
                        .into(),
                        beating: m.beating(now, ttl),
                        last_seen_ms: u64::try_from(age / 1_000_000).unwrap_or(0),
                        node: m.beat.node,
                        grpc: m.beat.grpc,
                        http: m.beat.http,
                        version: m.beat.version,
                        started_at: m.beat.started_ms,
                        applied_sequence: m.beat.applied,
                    }
                })
                .collect()
        }))
    }

    /// Gives the lease up (after a graceful stop), so a standby takes over at once.
    pub async fn release(self) {
        self.renew.abort();
        let lease = self.lease.lock().clone();
        let log = Arc::clone(&self.log);
        let released = match &self.rt {
            Some(rt) => rt
                .spawn(async move { log.release(&lease).await })
                .await
                .ok(),
            None => None,
        };
        if let Some(Err(e)) = released {
            tracing::warn!(error = %e, "could not give the active lease up; it lapses by itself");
        }
    }
}

/// Opens the cluster's log, waits as a standby until this node holds the active lease,
/// and returns the fenced store to run on.
pub async fn become_active(
    c: &ClusterSection,
    data_dir: &std::path::Path,
    gateway: &Arc<solo_gateway::Gateway>,
    tls: &solo_gateway::TlsFiles,
) -> anyhow::Result<Active> {
    let node = c.node_id.clone().unwrap_or_default();
    let mut opts = ClusterOptions::new(
        c.nats_urls.clone(),
        c.monitor_urls.clone(),
        data_dir.join("cluster"),
    );
    opts.node_id = node.clone();
    opts.replicas = c.replicas;
    opts.stream = c.stream.clone();
    if let (Some(ca), Some(cert), Some(key)) =
        (&c.nats_ca_file, &c.nats_cert_file, &c.nats_key_file)
    {
        opts.tls = Some(solo_cluster::NatsTls {
            ca_file: ca.clone(),
            cert_file: cert.clone(),
            key_file: key.clone(),
        });
    }
    // The log's connection, its applier and the lease's keeper run on a runtime of
    // their own, so that a kernel busy starting hundreds of services cannot starve the
    // renewals and lose the lease it is starting under.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("solo-cluster")
        .enable_all()
        .build()
        .context("start the cluster's runtime")?;
    let opened = rt
        .spawn(JetStreamStore::open(opts))
        .await
        .context("open the cluster's log")?;
    if let Err(solo_cluster::check::ClusterError::FellBehind(why)) = &opened {
        lost(why);
    }
    let log = Arc::new(opened.context("open the cluster's log")?);
    // A view the log was compacted past cannot go on: the node starts again from the
    // latest copy (status 3, as for a lost lease).
    let watched = Arc::clone(&log);
    rt.spawn(async move {
        watched.fell_behind_the_log().await;
        lost("the log was compacted past this node's view");
    });
    // Until this node is active, its gateway forwards clients' requests to the one that
    // is (and `server.json` says where, so `--data-dir` finds it as it finds an active
    // node); its metrics listener serves this node's own.
    let forwarding = forward::forwarding(Arc::clone(&log), &node, data_dir, tls)?;
    let forwarded = gateway.forward(Arc::new(forwarding));
    metrics::gauge!(m::CLUSTER_ACTIVE).set(0.0);
    let (grpc, http) = (gateway.grpc_addr(), gateway.http_addr());
    let info = solo_client::ServerInfo {
        grpc: grpc.to_string(),
        http: http.to_string(),
        metrics: gateway.metrics_addr().map(|a| a.to_string()),
        pid: std::process::id(),
    };
    let server_file = data_dir.join(solo_client::SERVER_FILE);
    std::fs::write(&server_file, serde_json::to_vec(&info)?)
        .with_context(|| format!("write {}", server_file.display()))?;
    tracing::info!(%grpc, %http, metrics = ?info.metrics, "standby: forwarding clients' requests to the active node");
    let ttl = Duration::from_millis(c.lease_ms);
    // Every node beats, standbys too, so the active node can tell who could take over.
    let host = c.advertise_host.as_deref();
    let me = Heartbeat {
        node: node.clone(),
        grpc: forward::reachable(grpc, host),
        http: forward::reachable(http, host),
        version: env!("CARGO_PKG_VERSION").into(),
        started_ms: u64::try_from(solo_types::clock::system_now_ns() / 1_000_000).unwrap_or(0),
        applied: 0,
        resume: 0,
    };
    let membership = log.membership(ttl, me);
    rt.spawn(Arc::clone(&membership).run());
    let margin = drift_margin(ttl);
    let mut announced = false;
    let lease = loop {
        // Ask the log only once the lease looks lapsed in this node's view: a standby
        // adds nothing to the log while the active node renews.
        if let Ok(Some(held)) = log.lease(ACTIVE_SCOPE) {
            let left = held.expires_ns - solo_types::clock::system_now_ns();
            if held.holder != node && left > 0 {
                if !announced {
                    tracing::info!(node = %node, active = %held.holder, "standby: waiting for the active node's lease to lapse");
                    announced = true;
                }
                let wait = Duration::from_nanos(u64::try_from(left).unwrap_or(0));
                tokio::time::sleep(wait.min(ttl / 3)).await;
                continue;
            }
        }
        match log.acquire(ACTIVE_SCOPE, ttl).await {
            // The answer comes through the log's applier: after an election it may come
            // late, with the lease nearly spent. Ask again rather than start on it.
            Ok(lease) if lease.expires_ns - margin <= solo_types::clock::system_now_ns() => {
                tracing::warn!(node = %node, epoch = lease.epoch, "the active lease was granted too late to use; asking again");
                continue;
            }
            Ok(lease) => break lease,
            Err(StoreError::LeaseHeld { holder, .. }) => {
                if !announced {
                    tracing::info!(node = %node, active = %holder, "standby: waiting for the active node's lease to lapse");
                    announced = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not ask for the active lease; retrying"),
        }
        tokio::time::sleep(ttl / 3).await;
    };
    forwarded.stop().await;
    tracing::info!(node = %node, epoch = lease.epoch, "active: this node holds the cluster's lease");
    let epoch = lease.epoch;
    let lease = Arc::new(parking_lot::Mutex::new(lease));
    let renew = rt.spawn(keep(Arc::clone(&log), Arc::clone(&lease), ttl));
    if c.compact_every > 0 {
        rt.spawn(compact_when_long(
            Arc::clone(&log),
            Arc::clone(&membership),
            c.compact_every,
            ttl,
        ));
    }
    let store: Arc<dyn solo_store::Store> = Arc::new(FencedStore {
        log: Arc::clone(&log),
        epoch,
    });
    Ok(Active {
        store,
        log,
        lease,
        renew,
        membership,
        ttl,
        rt: Some(rt),
    })
}

/// How much of a lease this node gives up to clock drift between it and the log: a
/// fifth.
fn drift_margin(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos() / 5).unwrap_or(i64::MAX)
}

/// Renews the lease once a third of its time to live is spent (at once, if it was granted
/// late); exits the process once it cannot be sure to hold it any more: a renewal that
/// does not land before the lease's end by this node's clock (less the drift margin)
/// counts as lost, however long the log takes to answer (an election after a NATS server
/// died takes seconds).
async fn keep(log: Arc<JetStreamStore>, lease: Arc<parking_lot::Mutex<Lease>>, ttl: Duration) {
    let margin = drift_margin(ttl);
    let renew_at_left = i64::try_from(ttl.as_nanos() * 2 / 3).unwrap_or(i64::MAX);
    loop {
        let (expires, epoch) = {
            let l = lease.lock();
            (l.expires_ns, l.epoch)
        };
        let until_renewal = expires - renew_at_left - solo_types::clock::system_now_ns();
        if let Ok(wait) = u64::try_from(until_renewal) {
            tokio::time::sleep(Duration::from_nanos(wait).min(ttl / 3)).await;
        }
        let left = expires - margin - solo_types::clock::system_now_ns();
        let Ok(left) = u64::try_from(left) else {
            lost("the lease ran out before it could be renewed (was this node paused?)");
        };
        match tokio::time::timeout(Duration::from_nanos(left), log.acquire(ACTIVE_SCOPE, ttl)).await
        {
            Err(_) => lost("the log did not renew the lease before it ran out"),
            Ok(Ok(renewed)) if renewed.epoch == epoch => {
                // (Set here rather than when the lease is taken: the metrics' recorder is
                // installed with the gateway, after that.)
                #[allow(clippy::cast_precision_loss)] // exact below 2^53
                metrics::gauge!(m::CLUSTER_LEASE_EPOCH).set(epoch as f64);
                metrics::gauge!(m::CLUSTER_ACTIVE).set(1.0);
                metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => "ok").increment(1);
                *lease.lock() = renewed;
            }
            Ok(Ok(_)) => lost("the lease lapsed and was taken again at a new epoch"),
            Ok(Err(StoreError::LeaseHeld { holder, .. })) => {
                lost(&format!("node {holder} holds the lease now"));
            }
            Ok(Err(e)) => {
                metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "could not renew the active lease; retrying");
                tokio::time::sleep(ttl / 20).await;
            }
        }
    }
}

/// Leaves at once: the node's memory no longer matches the cluster.
#[allow(clippy::exit)]
fn lost(why: &str) -> ! {
    tracing::error!(
        reason = why,
        "this node lost the cluster's active lease or its place in the log; exiting (status 3: start it again)"
    );
    std::process::exit(3);
}

/// How often the active node checks the log's length.
const COMPACT_CHECK: Duration = Duration::from_secs(5);
/// How long it waits after a failed compaction.
const COMPACT_BACKOFF: Duration = Duration::from_secs(60);

/// Compacts the log once it holds `every` entries (checked every few seconds), never
/// past the lowest sequence a node that still beats has applied, and only when that
/// would purge something.
async fn compact_when_long(
    log: Arc<JetStreamStore>,
    membership: Arc<Membership>,
    every: u64,
    ttl: Duration,
) {
    let mut tick = tokio::time::interval(COMPACT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(first) = log.first_sequence().await else {
            continue;
        };
        #[allow(clippy::cast_precision_loss)] // exact below 2^53
        metrics::gauge!(m::CLUSTER_LOG_FIRST_SEQUENCE).set(first as f64);
        let applied = log.applied_sequence();
        if applied.saturating_add(1).saturating_sub(first.max(1)) < every {
            continue;
        }
        let now = solo_types::clock::system_now_ns();
        let floor = membership
            .members()
            .iter()
            .filter(|m| m.beating(now, ttl))
            .map(|m| m.beat.needs_from().saturating_sub(1))
            .min()
            .unwrap_or(applied)
            .min(applied);
        if floor < first {
            continue; // a live node needs all of it still
        }
        match log.compact(floor).await {
            Ok(done) => {
                tracing::info!(
                    first_kept = done.first_kept,
                    bytes = done.bytes,
                    "compacted the cluster's log"
                );
                metrics::counter!(m::CLUSTER_COMPACTIONS, "outcome" => "ok").increment(1);
                #[allow(clippy::cast_precision_loss)] // exact below 2^53
                metrics::gauge!(m::CLUSTER_LOG_FIRST_SEQUENCE).set(done.first_kept as f64);
            }
            Err(e) => {
                // A copy and an upload are not cheap: wait a while before the next try
                // (a stream created before compaction refuses purges every time).
                tracing::warn!(error = %e, "could not compact the cluster's log; trying again in a minute");
                metrics::counter!(m::CLUSTER_COMPACTIONS, "outcome" => "failed").increment(1);
                tokio::time::sleep(COMPACT_BACKOFF).await;
            }
        }
    }
}

/// The log seen through the active lease: every write fenced by its epoch.
struct FencedStore {
    log: Arc<JetStreamStore>,
    epoch: u64,
}

impl EventLog for FencedStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let commit = self.commit(WriteBatch::from_events(events));
        Box::pin(async move { commit.await.map(|c| c.event_ids) })
    }

    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.log.read(query)
    }

    fn last_id(&self) -> u64 {
        self.log.last_id()
    }

    fn subscribe(&self, after_id: u64, filter: EventFilter) -> Subscription {
        self.log.subscribe(after_id, filter)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.log.verify()
    }
}

impl Kv for FencedStore {
    fn snapshot(&self) -> Result<Box<dyn KvRead>, StoreError> {
        self.log.snapshot()
    }

    /// A write refused by fencing means this node's lease is gone (lapsed while it was
    /// paused, starting or cut off): the node leaves at once, as when its keeper finds
    /// the lease lost, rather than answer from a memory the cluster has moved past.
    fn commit(&self, mut batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>> {
        batch.fenced(ACTIVE_SCOPE, self.epoch);
        let commit = self.log.commit(batch);
        Box::pin(async move {
            match commit.await {
                Err(e @ StoreError::Fenced { .. }) => {
                    lost(&format!("a write was refused by fencing ({e})"))
                }
                other => other,
            }
        })
    }

    fn fault(&self) -> Option<String> {
        self.log.fault()
    }

    fn recover(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.log.recover()
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
}
