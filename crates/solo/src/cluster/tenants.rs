//! Cluster mode `tenants`: every node runs a kernel and serves the tenants placed on it.
//!
//! A node holds its own lease, `node/<id>`, renewed like the active lease of mode
//! `active`, and every write it makes is fenced by that lease's epoch: a node paused past
//! its lease writes nothing more, and exits once it learns it. A tenant is placed on a
//! node by a lease held under the node's (`solo_cluster::placement`), so it stays there
//! exactly as long as the node keeps its own; a tenant never moves away from a live
//! node, so fencing by the node's lease fences every write for its tenants too.
//!
//! Each node:
//! * **adopts** the tenants placed on it (`Kernel::adopt`: their registrations, egress
//!   rules and capabilities read again, their services recovered from their records and
//!   last snapshots), as its view shows them, checked every quarter of a lease;
//! * **places** every tenant with deployments that is on no live node (its node lapsed)
//!   on the least-loaded live node, every half lease (every node plans the same moves
//!   from the same view; the log keeps one placement per tenant);
//! * **routes** each request by its tenant (`solo_gateway::route`): served here if the
//!   tenant is placed here, forwarded to the node it is placed on, or, for a tenant
//!   placed nowhere yet (its first request), placed here and served;
//! * **carries** a service's call to another tenant served on another node there (the
//!   kernel's `Elsewhere`), as a request of the token the service presented;
//! * **follows** the runtime configuration and egress changes other nodes make;
//! * **compacts** the log, if it is the cluster's compactor: the node that holds
//!   `solo/compactor`, a lease placed under its own (one node at a time; when it lapses
//!   the next node to find the log long takes it).
//!
//! An admin's request goes to the node of the tenant it acts for (its own, unless it
//! names another with `x-solo-tenant`): the log, the configuration and the vault are
//! shared, but `list` and `tree` show that node's services only.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use solo_cluster::placement::{node_scope, tenant_scope};
use solo_cluster::{Heartbeat, JetStreamStore, Lease, Membership};
use solo_gateway::auth::Claim;
use solo_gateway::forward::{Forwarding, Listener, Upstream};
use solo_gateway::route::{Route, Routing};
use solo_gateway::{Gateway, TlsFiles};
use solo_kernel::{CallElsewhere, Elsewhere, Kernel, Serves};
use solo_store::StoreError;
use solo_types::api::Failure;
use solo_types::{Code, TenantId};

use super::{
    ClusterRuntime, ClusterSection, Held, MayCompact, cluster_node, compact_when_long,
    drift_margin, forward, give_up, hold, open_log,
};

/// The lease of the node that compacts the log, placed under that node's own lease (so
/// it lapses with it, and the next node to look takes it over).
const COMPACTOR_SCOPE: &str = "solo/compactor";

/// A node of a cluster in mode `tenants`.
pub struct Node {
    pub store: Arc<dyn solo_store::Store>,
    inner: Arc<Inner>,
    renew: tokio::task::JoinHandle<()>,
    rt: ClusterRuntime,
}

/// What the node's tasks and its routing share.
struct Inner {
    id: String,
    log: Arc<JetStreamStore>,
    membership: Arc<Membership>,
    lease: Arc<parking_lot::Mutex<Lease>>,
    ttl: Duration,
    /// The tenants the kernel serves (admitted, recovered): set before adopting one.
    serves: Arc<RwLock<HashSet<TenantId>>>,
    /// The tenants adopted: routed here.
    adopted: RwLock<HashSet<TenantId>>,
    /// One adoption at a time, so no service is recovered twice.
    adopting: tokio::sync::Mutex<()>,
    kernel: OnceLock<Kernel>,
    forwarding: Arc<Forwarding>,
}

/// Opens the cluster's log and takes this node's lease (waiting while a previous run of
/// the node still holds it at another epoch is not needed: the holder is this node, so
/// it renews it, and adopts what is placed under it).
pub async fn join(
    c: &ClusterSection,
    data_dir: &std::path::Path,
    gateway: &Gateway,
    tls: &TlsFiles,
) -> anyhow::Result<Node> {
    let id = c.node_id.clone().unwrap_or_default();
    let (rt, log) = open_log(c, data_dir).await?;
    let ttl = Duration::from_millis(c.lease_ms);
    let host = c.advertise_host.as_deref();
    let me = Heartbeat {
        node: id.clone(),
        grpc: forward::reachable(gateway.grpc_addr(), host),
        http: forward::reachable(gateway.http_addr(), host),
        version: env!("CARGO_PKG_VERSION").into(),
        started_ms: u64::try_from(solo_types::clock::system_now_ns() / 1_000_000).unwrap_or(0),
        applied: 0,
        resume: 0,
    };
    if me.grpc.is_none() {
        tracing::warn!(
            "listening on an unspecified address without cluster.advertise_host: other nodes cannot forward this node's tenants' requests here"
        );
    }
    let membership = log.membership(ttl, me);
    rt.spawn(Arc::clone(&membership).run());
    let scope = node_scope(&id);
    let margin = drift_margin(ttl);
    let lease = loop {
        match log.acquire(&scope, ttl).await {
            Ok(l) if l.expires_ns - margin > solo_types::clock::system_now_ns() => break l,
            Ok(l) => {
                tracing::warn!(
                    epoch = l.epoch,
                    "the node's lease was granted too late to use; asking again"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take this node's lease; retrying");
                tokio::time::sleep(ttl / 3).await;
            }
        }
    };
    tracing::info!(node = %id, epoch = lease.epoch, "this node holds its lease; serving the tenants placed on it");
    let Held {
        lease,
        renew,
        store,
    } = hold(&rt, &log, lease, ttl);
    let (cert, key) = forward::node_certificate(&id, data_dir)?;
    let nobody: solo_gateway::forward::Pick =
        Arc::new(|_| Err(unavailable("routing picks each request's node".into())));
    let forwarding = Forwarding::new(tls, (&cert, &key), nobody)
        .map_err(|e| anyhow::anyhow!("forwarding: {e}"))?;
    let inner = Arc::new(Inner {
        id,
        log,
        membership,
        lease,
        ttl,
        serves: Arc::default(),
        adopted: RwLock::default(),
        adopting: tokio::sync::Mutex::new(()),
        kernel: OnceLock::new(),
        forwarding: Arc::new(forwarding),
    });
    if c.compact_every > 0 {
        let compactor = Arc::clone(&inner);
        let may: MayCompact = Box::new(move || {
            let inner = Arc::clone(&compactor);
            Box::pin(async move { inner.compacts().await })
        });
        rt.spawn(compact_when_long(
            Arc::clone(&inner.log),
            Arc::clone(&inner.membership),
            c.compact_every,
            ttl,
            Some(may),
        ));
    }
    Ok(Node {
        store,
        inner,
        renew,
        rt,
    })
}

impl Node {
    /// Which tenants the kernel serves: those adopted here.
    pub fn serves(&self) -> Serves {
        let serves = Arc::clone(&self.inner.serves);
        Arc::new(move |t: &TenantId| serves.read().contains(t))
    }

    /// Routing by tenant for the gateway (set before it is attached).
    pub fn routing(&self) -> Routing {
        let inner = Arc::clone(&self.inner);
        let route: Route = Arc::new(move |which, claim| {
            let inner = Arc::clone(&inner);
            Box::pin(async move { inner.route(which, claim).await })
        });
        Routing {
            route,
            forwarding: Arc::clone(&self.inner.forwarding),
        }
    }

    /// Carries a service's call to another tenant, served on another node, there. (The
    /// kernel keeps this, and the node keeps the kernel: it holds the node weakly.)
    pub fn elsewhere(&self) -> Elsewhere {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |call| {
            let inner = inner.upgrade();
            Box::pin(async move {
                match inner {
                    Some(inner) => inner.call_elsewhere(call).await,
                    None => Err(unavailable("this node is stopping; retry shortly".into())),
                }
            })
        })
    }

    /// The cluster's nodes for health, each with its role (`serving` while it holds its
    /// node lease in this node's view).
    pub fn members(&self) -> solo_kernel::Members {
        let inner = Arc::clone(&self.inner);
        Arc::new(move || {
            let now = solo_types::clock::system_now_ns();
            let live = inner.log.placements(now).unwrap_or_default();
            inner
                .membership
                .members()
                .into_iter()
                .map(|m| {
                    let role = if live.contains_key(&m.beat.node) {
                        "serving"
                    } else {
                        "lapsed"
                    };
                    cluster_node(m, role, now, inner.ttl)
                })
                .collect()
        })
    }

    /// Runs the node's tasks beside `kernel`: adopting what is placed here, placing
    /// what is placed nowhere, following the other nodes' changes.
    pub fn run(&self, kernel: &Kernel) {
        let _ = self.inner.kernel.set(kernel.clone());
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // Adopting every quarter lease, placing every other round (half a lease).
            let mut tick = tokio::time::interval(inner.ttl / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for round in 0u64.. {
                tick.tick().await;
                inner.adopt_placed().await;
                if round % 2 == 0 {
                    inner.place_unplaced().await;
                }
            }
        });
        let k = kernel.clone();
        tokio::spawn(async move { k.follow().await });
    }

    /// Gives the node's lease up (after a graceful stop): its tenants lapse at once and
    /// the other nodes place them.
    pub async fn release(self) {
        self.renew.abort();
        give_up(
            &self.rt,
            &self.inner.log,
            &self.inner.lease,
            "the node's lease",
        )
        .await;
    }
}

impl Inner {
    /// Where a request goes by what it claims.
    async fn route(&self, which: Listener, claim: Claim) -> Option<Result<Upstream, Failure>> {
        let tenant = match claim {
            Claim::Tenant(t) => t,
            // A token nobody granted is refused here.
            Claim::Token(token) => self.kernel.get()?.token_tenant(&token)?,
            // An admin addressing a node: served there (this one, or forwarded).
            Claim::Node(node) if node == self.id => return None,
            Claim::Node(node) => {
                let gone = unavailable(format!(
                    "node {node} is not a live node of this cluster (solo health lists them)"
                ));
                return Some(self.listener(&node, which, gone));
            }
            Claim::Nobody => return None,
        };
        if self.adopted.read().contains(&tenant) {
            return None;
        }
        let now = solo_types::clock::system_now_ns();
        let scope = tenant_scope(tenant.as_str());
        let holder = match self.log.lease(&scope) {
            Ok(Some(l)) if l.expires_ns > now => l.holder,
            // Placed nowhere (its first request, or its node lapsed): here.
            Ok(_) => match self
                .log
                .place(&scope, &self.id, &node_scope(&self.id))
                .await
            {
                Ok(l) => l.holder,
                Err(StoreError::LeaseHeld { holder, .. }) => holder,
                Err(e) => {
                    return Some(Err(unavailable(format!(
                        "tenant {tenant} could not be placed on a node ({e}); retry shortly"
                    ))));
                }
            },
            Err(e) => return Some(Err(unavailable(format!("the cluster's view: {e}")))),
        };
        if holder == self.id {
            self.adopt(&tenant).await;
            return None;
        }
        Some(self.upstream(&holder, &tenant, which))
    }

    /// Makes a service's `call` to another tenant on the node serving that tenant, over
    /// HTTPS as a request of the call's token.
    async fn call_elsewhere(&self, call: CallElsewhere) -> Result<String, Failure> {
        match self
            .route(Listener::Http, Claim::Tenant(call.tenant.clone()))
            .await
        {
            Some(Ok(up)) => self.forwarding.call_elsewhere(up, call).await,
            Some(Err(refused)) => Err(refused),
            // Placed nowhere, it was placed here just now: from now on its calls are
            // made here.
            None => Err(unavailable(format!(
                "tenant {} was placed on this node just now; retry",
                call.tenant
            ))),
        }
    }

    /// The listener of `node`, which serves `tenant`, from its heartbeat.
    fn upstream(
        &self,
        node: &str,
        tenant: &TenantId,
        which: Listener,
    ) -> Result<Upstream, Failure> {
        let gone = unavailable(format!(
            "node {node}, which serves tenant {tenant}, cannot be reached; the tenant moves \
             to another node once its lease lapses, retry shortly"
        ));
        self.listener(node, which, gone)
    }

    /// The listener `which` of `node` from its heartbeat; `gone` if it has none.
    fn listener(&self, node: &str, which: Listener, gone: Failure) -> Result<Upstream, Failure> {
        let addr = self
            .membership
            .members()
            .into_iter()
            .find(|m| m.beat.node == node)
            .and_then(|m| match which {
                Listener::Grpc => m.beat.grpc,
                Listener::Http => m.beat.http,
            });
        match addr {
            Some(addr) => Ok(Upstream {
                node: node.to_string(),
                addr,
                unreachable: gone,
            }),
            None => Err(gone),
        }
    }

    /// Whether this node is the cluster's compactor: it holds [`COMPACTOR_SCOPE`], or
    /// nobody live does and it takes it now (the log decides between two that try at
    /// once).
    async fn compacts(&self) -> bool {
        let now = solo_types::clock::system_now_ns();
        match self.log.lease(COMPACTOR_SCOPE) {
            Ok(Some(l)) if l.expires_ns > now => return l.holder == self.id,
            Ok(_) => {}
            Err(_) => return false,
        }
        match self
            .log
            .place(COMPACTOR_SCOPE, &self.id, &node_scope(&self.id))
            .await
        {
            Ok(l) => {
                tracing::info!(node = %self.id, epoch = l.epoch, "this node compacts the cluster's log");
                l.holder == self.id
            }
            Err(_) => false,
        }
    }

    /// Takes `tenant` on here, once.
    async fn adopt(&self, tenant: &TenantId) {
        let _one = self.adopting.lock().await;
        if self.adopted.read().contains(tenant) {
            return;
        }
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        self.serves.write().insert(tenant.clone());
        match kernel.adopt(tenant).await {
            Ok(r) => {
                tracing::info!(%tenant, recovered = r.recovered, failed = r.failed, "adopted a tenant placed on this node");
                self.adopted.write().insert(tenant.clone());
            }
            Err(e) => tracing::warn!(%tenant, error = %e, "could not adopt a tenant; retrying"),
        }
    }

    /// Adopts every tenant placed on this node that it has not adopted yet.
    async fn adopt_placed(&self) {
        let now = solo_types::clock::system_now_ns();
        let Ok(held) = self.log.leases_held_by(&self.id) else {
            return;
        };
        for l in held {
            if l.expires_ns <= now {
                continue;
            }
            let Some(t) = l.scope.strip_prefix("tenant/") else {
                continue;
            };
            if let Ok(t) = TenantId::new(t)
                && !self.adopted.read().contains(&t)
            {
                self.adopt(&t).await;
            }
        }
    }

    /// Places every tenant with deployments that is on no live node.
    async fn place_unplaced(&self) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        let wanted: BTreeMap<String, usize> = match kernel.deployed_tenants() {
            Ok(w) => w.into_iter().map(|(t, n)| (t.to_string(), n)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the deployments to place");
                return;
            }
        };
        let now = solo_types::clock::system_now_ns();
        match self.log.place_tenants(&wanted, now).await {
            Ok(placed) => {
                for l in placed {
                    tracing::info!(tenant = %l.scope, node = %l.holder, epoch = l.epoch, "placed a tenant");
                }
            }
            Err(e) => tracing::warn!(error = %e, "placing tenants failed; trying again"),
        }
    }
}

/// Retryable: the tenant's node is moving or out of reach.
fn unavailable(message: String) -> Failure {
    let mut f = Failure::new(Code::Unavailable, "tenant_unavailable", message);
    f.retry_after = Some(1);
    f
}
