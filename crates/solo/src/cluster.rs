//! Cluster mode of `solo server`: the `[cluster]` section, and a node's role in it.
//!
//! With `[cluster] nats_urls` set, the node keeps its store in the cluster's replicated
//! log (`solo-cluster`) instead of a local file. In mode `tenants` every node serves the
//! tenants placed on it (`tenants.rs`). In mode `active` (`tenants` is the default) one node at a
//! time is **active**: it
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
mod section;
pub mod tenants;

pub use section::{ClusterMode, ClusterSection};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use solo_cluster::{ClusterOptions, Heartbeat, JetStreamStore, Lease, Membership};
use solo_store::{
    Commit, EventFilter, EventLog, EventPage, EventQuery, Kv, KvRead, StoreError, Subscription,
    VerifyReport, WriteBatch,
};
use solo_types::{NewEvent, metric_names as m};

/// The lease the active node holds.
pub const ACTIVE_SCOPE: &str = "solo/active";

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
    rt: ClusterRuntime,
}

/// The runtime the log's tasks run on, shut down in the background when dropped: a
/// runtime dropped where blocking is not allowed (in any async context, such as a start
/// that fails after the log opened) panics.
struct ClusterRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for ClusterRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the cluster's runtime lives until dropped")
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
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
                    let role = if active.as_deref() == Some(m.beat.node.as_str()) {
                        "active"
                    } else {
                        "standby"
                    };
                    cluster_node(m, role, now, ttl)
                })
                .collect()
        }))
    }

    /// Gives the lease up (after a graceful stop), so a standby takes over at once.
    pub async fn release(self) {
        self.renew.abort();
        give_up(&self.rt, &self.log, &self.lease, "the active lease").await;
    }
}

/// A node for health: its last heartbeat, with `role`.
fn cluster_node(
    m: solo_cluster::Member,
    role: &str,
    now: i64,
    ttl: Duration,
) -> solo_types::api::ClusterNode {
    solo_types::api::ClusterNode {
        role: role.into(),
        beating: m.beating(now, ttl),
        last_seen_ms: u64::try_from(m.age_ns(now) / 1_000_000).unwrap_or(0),
        node: m.beat.node,
        grpc: m.beat.grpc,
        http: m.beat.http,
        version: m.beat.version,
        started_at: m.beat.started_ms,
        applied_sequence: m.beat.applied,
    }
}

/// Releases `lease` through the log on the cluster's runtime `rt` (`what` names it in
/// the warning if that fails: it then lapses by itself).
async fn give_up(
    rt: &tokio::runtime::Runtime,
    log: &Arc<JetStreamStore>,
    lease: &parking_lot::Mutex<Lease>,
    what: &str,
) {
    let lease = lease.lock().clone();
    let log = Arc::clone(log);
    let released = rt.spawn(async move { log.release(&lease).await }).await;
    if let Ok(Err(e)) = released {
        tracing::warn!(error = %e, "could not give {what} up; it lapses by itself");
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
    let (rt, log) = open_log(c, data_dir).await?;
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
    let Held {
        lease,
        renew,
        store,
    } = hold(&rt, &log, lease, ttl);
    if c.compact_every > 0 {
        rt.spawn(compact_when_long(
            Arc::clone(&log),
            Arc::clone(&membership),
            c.compact_every,
            ttl,
            None,
        ));
    }
    Ok(Active {
        store,
        log,
        lease,
        renew,
        membership,
        ttl,
        rt,
    })
}

/// Opens the cluster's log on a runtime of its own, and watches for the view falling
/// behind a compaction (the node exits with status 3 then).
async fn open_log(
    c: &ClusterSection,
    data_dir: &std::path::Path,
) -> anyhow::Result<(ClusterRuntime, Arc<JetStreamStore>)> {
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
    let rt = ClusterRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("solo-cluster")
            .enable_all()
            .build()
            .context("start the cluster's runtime")?,
    ));
    let log = loop {
        use solo_cluster::check::ClusterError as E;
        let failed = match rt.spawn(JetStreamStore::open(opts.clone())).await {
            Ok(Ok(log)) => break Arc::new(log),
            Ok(Err(E::FellBehind(why))) => lost(&why),
            // NATS reached but without a quorum (the log has no leader, a server's
            // monitoring endpoint is down): the node waits for its cluster rather than
            // exit, and joins once the log can be used. NATS not reached at all (down,
            // or refusing this node's credentials) stops it with the reason.
            Ok(Err(e @ (E::Stream { .. } | E::Monitor { .. }))) => {
                tracing::warn!(error = %e, "the cluster's log cannot be reached yet; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(Err(e)) => anyhow::Error::new(e),
            Err(e) => anyhow::Error::new(e),
        };
        return Err(failed.context("open the cluster's log"));
    };
    // A view the log was compacted past cannot go on: the node starts again from the
    // latest copy (status 3, as for a lost lease).
    let watched = Arc::clone(&log);
    rt.spawn(async move {
        watched.fell_behind_the_log().await;
        lost("the log was compacted past this node's view");
    });
    Ok((rt, log))
}

/// A lease this node holds: the lease as last renewed, its keeper, and the log seen
/// through it.
struct Held {
    lease: Arc<parking_lot::Mutex<Lease>>,
    renew: tokio::task::JoinHandle<()>,
    store: Arc<dyn solo_store::Store>,
}

/// Keeps `lease` renewed on the cluster's runtime `rt`, and fences every write through
/// the returned store by its epoch.
fn hold(
    rt: &tokio::runtime::Runtime,
    log: &Arc<JetStreamStore>,
    lease: Lease,
    ttl: Duration,
) -> Held {
    let store = Arc::new(FencedStore {
        log: Arc::clone(log),
        scope: lease.scope.clone(),
        epoch: lease.epoch,
    });
    let scope = lease.scope.clone();
    let lease = Arc::new(parking_lot::Mutex::new(lease));
    let renew = rt.spawn(keep(Arc::clone(log), Arc::clone(&lease), ttl, scope));
    Held {
        lease,
        renew,
        store,
    }
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
async fn keep(
    log: Arc<JetStreamStore>,
    lease: Arc<parking_lot::Mutex<Lease>>,
    ttl: Duration,
    scope: String,
) {
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
        match tokio::time::timeout(Duration::from_nanos(left), log.acquire(&scope, ttl)).await {
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

/// Whether this node is the one to compact the log now (in mode `tenants`, where every
/// node could: whether it holds the compactor's lease).
type MayCompact = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Compacts the log once it holds `every` entries (checked every few seconds), never
/// past the lowest sequence a node that still beats has applied, and only when that
/// would purge something; with `may`, only when it says this node is the compactor.
async fn compact_when_long(
    log: Arc<JetStreamStore>,
    membership: Arc<Membership>,
    every: u64,
    ttl: Duration,
    may: Option<MayCompact>,
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
        if let Some(may) = &may
            && !may().await
        {
            continue;
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

/// The log seen through a lease of this node's (the active lease, or its node lease):
/// every write fenced by its epoch.
struct FencedStore {
    log: Arc<JetStreamStore>,
    scope: String,
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
        batch.fenced(self.scope.clone(), self.epoch);
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
