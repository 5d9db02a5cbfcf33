//! Solo's kernel: the only front door to tenants' services.
//!
//! Every operation takes the [`Caller`] first and acts inside the caller's tenant only;
//! another tenant's services are reported as not found. The kernel deploys services into
//! the sandbox under their tenant's supervisor, routes calls and casts to their
//! mailboxes, enforces limits, restarts them when they crash, and records every step as
//! an event.
//!
//! Architecture invariant: the kernel knows nothing of gRPC, HTTP or JSON bodies; the
//! gateway converts at its edge. It depends on the store through its traits only.

mod access;
mod caller;
mod config;
mod discovery;
mod error;
mod flow;
mod host;
mod logs;
pub mod records;
mod recovery;
mod service;
mod swap;
mod tree;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;
use serde_json::json;
use solo_sandbox::{Artifact, CallError, CodeHash, Instance, Sandbox};
use solo_store::{EventFilter, EventPage, EventQuery, Store, Subscription, WriteBatch};
use solo_supervisor::{
    ChildSpec, Intensity, RestartType, Strategy, Supervisor, SupervisorEvent, SupervisorSpec,
};
use solo_types::{
    CrashReport, DeploySpec, Format, NewEvent, Permission, Resource, RestartPolicy, ServiceId,
    ServiceLimits, ServiceState, ServiceStatus, TenantId, kinds, metric_names as m,
};
use tokio::sync::{broadcast, oneshot};

pub use caller::{Caller, Role, TokenScope};
pub use config::{KernelConfig, ServiceDefaults, TenantLimits};
pub use discovery::{Discovered, RegisterRequest, Registration};
pub use error::KernelError;
pub use flow::{BreakerConfig, MonitorConfig, Permit, TUNABLE_KEYS};
pub use logs::LogLine;
pub use recovery::Recovery;
pub use solo_caps::{CapInfo, DenyReason, Granted, Narrowing};
pub use swap::{DEFAULT_ROLLBACK_WINDOW, MAX_ROLLBACK_WINDOW, SwapMode, SwapRequest, Swapped};
pub use tree::{ComponentBody, ComponentCtx, SYSTEM_COMPONENTS, TreeNode};

use records::DeploymentRecord;
use service::{Envelope, ServiceEntry};

/// A deploy request; fields left `None` take the configured defaults.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub service_id: ServiceId,
    pub format: Format,
    pub code: Arc<[u8]>,
    pub config: Option<serde_json::Value>,
    pub restart: Option<RestartPolicy>,
    pub max_restarts: Option<u32>,
    pub max_seconds: Option<u32>,
    pub memory_mb: Option<u32>,
    pub cpu_ms_per_message: Option<u32>,
    pub mailbox: Option<u32>,
    pub startup_timeout_ms: Option<u32>,
    pub secrets: Vec<String>,
    /// Check everything, start nothing.
    pub dry_run: bool,
}

impl DeployRequest {
    /// A request with every optional field left to its default.
    pub fn new(service_id: ServiceId, format: Format, code: impl Into<Arc<[u8]>>) -> Self {
        Self {
            service_id,
            format,
            code: code.into(),
            config: None,
            restart: None,
            max_restarts: None,
            max_seconds: None,
            memory_mb: None,
            cpu_ms_per_message: None,
            mailbox: None,
            startup_timeout_ms: None,
            secrets: Vec::new(),
            dry_run: false,
        }
    }
}

/// The outcome of a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub service_id: ServiceId,
    pub code_hash: String,
    pub version: u64,
    /// The `service_deployed` event (none for a dry run).
    pub event_id: Option<u64>,
    /// False when an identical service already ran (an idempotent success).
    pub created: bool,
    pub dry_run: bool,
    /// Whether the code exports snapshot/restore.
    pub has_state: bool,
}

/// How to kill a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillOptions {
    /// How long a graceful kill may take before it becomes forced.
    pub timeout: Duration,
    /// Stop at once, without finishing the current message or taking a snapshot.
    pub force: bool,
}

impl Default for KillOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            force: false,
        }
    }
}

/// The outcome of a kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    pub event_id: u64,
    pub forced: bool,
    pub snapshot_bytes: Option<usize>,
}

/// Which services `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<ServiceState>,
    /// 0 means 100; at most 1000.
    pub limit: usize,
    pub offset: usize,
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
    /// How many services matched, over all pages.
    pub total: usize,
}

/// Components and other pieces supplied by the embedding binary.
#[derive(Default)]
pub struct KernelOptions {
    /// Task bodies for system components the kernel does not implement itself (the
    /// gateway, for one).
    pub components: HashMap<&'static str, ComponentBody>,
    /// The vault; without one, secrets are unavailable.
    pub vault: Option<Arc<solo_vault::Vault>>,
    /// The data directory, whose size the monitor watches.
    pub data_dir: Option<std::path::PathBuf>,
}

type ServiceKey = (TenantId, ServiceId);

#[derive(Clone)]
pub(crate) enum Slot {
    /// Reserved while a deploy compiles and starts the service.
    Deploying,
    Running(Arc<ServiceEntry>),
    /// Being killed: refuses new messages and deploys of the same id.
    Stopping(Arc<ServiceEntry>),
}

struct TenantCtx {
    supervisor: Supervisor,
    admission: Mutex<Admission>,
}

#[derive(Default)]
struct Admission {
    services: BTreeSet<ServiceId>,
    memory_mb: u64,
}

/// The kernel. Cheap to clone.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

pub(crate) struct KernelInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) config: KernelConfig,
    pub(crate) caps: Arc<solo_caps::Caps>,
    pub(crate) vault: Option<Arc<solo_vault::Vault>>,
    services: DashMap<ServiceKey, Slot>,
    tenants: DashMap<TenantId, Arc<TenantCtx>>,
    tree: OnceLock<tree::Tree>,
    /// False once shutdown began: new deploys, calls, casts and swaps are refused.
    accepting: std::sync::atomic::AtomicBool,
    recovery: Mutex<recovery::Recovery>,
    registry: discovery::Registry,
    tunables: flow::Tunables,
    shedder: flow::Shedder,
    pressure: flow::PressureCell,
    data_dir: Option<std::path::PathBuf>,
    me: Weak<KernelInner>,
}

/// A system component that runs `tick` on the kernel every `period` (the first time at
/// once when `at_once`) until it is told to stop or the kernel is gone.
fn ticking<F>(me: &Weak<KernelInner>, period: Duration, at_once: bool, tick: F) -> ComponentBody
where
    F: Fn(Arc<KernelInner>) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
{
    let me = me.clone();
    let tick = Arc::new(tick);
    Arc::new(move |ctx| {
        let (me, tick) = (me.clone(), Arc::clone(&tick));
        Box::pin(async move {
            let mut wait = !at_once;
            loop {
                if wait {
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(period) => {}
                    }
                }
                wait = true;
                let Some(k) = me.upgrade() else { return Ok(()) };
                tick(k).await;
            }
        })
    })
}

impl Kernel {
    /// Starts the kernel and its supervision tree, and records `system_started`.
    pub async fn start(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        config: KernelConfig,
        options: KernelOptions,
    ) -> Result<Self, KernelError> {
        let caps = Arc::new(
            solo_caps::Caps::load(Arc::clone(&store))
                .map_err(|e| KernelError::Internal(format!("load capabilities: {e}")))?,
        );
        let vault = options.vault;
        let registry = discovery::Registry::load(&*store)?;
        let tunables = flow::Tunables::new(&config);
        let inner = Arc::new_cyclic(|me| KernelInner {
            store,
            sandbox,
            config,
            caps,
            vault,
            services: DashMap::new(),
            tenants: DashMap::new(),
            tree: OnceLock::new(),
            accepting: std::sync::atomic::AtomicBool::new(true),
            recovery: Mutex::new(recovery::Recovery::default()),
            registry,
            tunables,
            shedder: flow::Shedder::default(),
            pressure: flow::PressureCell::new(0),
            data_dir: options.data_dir,
            me: me.clone(),
        });
        let mut bodies = options.components;
        inner.default_components(&mut bodies);
        let weak = Arc::downgrade(&inner);
        let on_event: tree::OnEvent = Arc::new(move |e| {
            if let Some(k) = weak.upgrade() {
                k.on_system_event(e);
            }
        });
        // `system_started` is the first event of every boot: it is durable before any
        // component (such as the event store's log check) can record anything.
        inner
            .store
            .append(vec![
                NewEvent::system(kinds::SYSTEM_STARTED, "solo")
                    .payload(json!({ "version": env!("CARGO_PKG_VERSION") })),
            ])
            .await?;
        let _ = inner.tree.set(tree::Tree::start(bodies, on_event));
        let started = Instant::now();
        let recovery = inner.recover().await?;
        if recovery.recovered + recovery.failed > 0 {
            tracing::info!(
                recovered = recovery.recovered,
                failed = recovery.failed,
                ms = started.elapsed().as_millis() as u64,
                "recovered services"
            );
        }
        *inner.recovery.lock() = recovery;
        Ok(Self { inner })
    }

    /// Refuses new work from now on (`UNAVAILABLE`, reason `shutting_down`); what is in
    /// flight carries on.
    pub fn stop_accepting(&self) {
        self.inner
            .accepting
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Stops every service (tenants first; each takes its snapshot), then the system
    /// components.
    pub async fn shutdown(&self) {
        self.stop_accepting();
        if let Some(t) = self.inner.tree.get() {
            t.shutdown().await;
        }
    }

    /// Resolves when the root supervisor gave up (the process should exit).
    pub async fn fatal(&self) {
        if let Some(t) = self.inner.tree.get() {
            t.fatal.notified().await;
        }
    }

    /// Makes a system component panic, to test its supervision.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, component: &str) -> bool {
        self.inner
            .tree
            .get()
            .is_some_and(|t| t.inject_fault(component))
    }

    /// What recovery at start did.
    pub fn recovery(&self) -> Recovery {
        *self.inner.recovery.lock()
    }

    /// How many services exist (in any state), over all tenants.
    pub fn service_count(&self) -> usize {
        self.inner.services.len()
    }

    /// The store the kernel records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &KernelConfig {
        &self.inner.config
    }

    /// Validates, compiles, starts and registers a service.
    pub async fn deploy(
        &self,
        caller: &Caller,
        req: DeployRequest,
    ) -> Result<Deployed, KernelError> {
        self.inner.deploy(caller, req).await
    }

    /// Sends `request` (JSON) to `service` and waits up to `timeout` for the reply.
    pub async fn call(
        &self,
        caller: &Caller,
        service: &ServiceId,
        request: &str,
        timeout: Duration,
    ) -> Result<String, KernelError> {
        self.inner.call(caller, service, request, timeout).await
    }

    /// Queues `message` (JSON) for `service` without waiting.
    pub fn cast(
        &self,
        caller: &Caller,
        service: &ServiceId,
        message: &str,
    ) -> Result<(), KernelError> {
        self.inner.cast(caller, service, message)
    }

    pub fn status(
        &self,
        caller: &Caller,
        service: &ServiceId,
    ) -> Result<ServiceStatus, KernelError> {
        caller.require(&Resource::Service(service.clone()), Permission::Read)?;
        self.inner.entry(caller, service).map(|e| e.status())
    }

    pub fn list(&self, caller: &Caller, filter: &ListFilter) -> Result<ServiceList, KernelError> {
        caller.require(&Resource::Any, Permission::Read)?;
        Ok(self.inner.list(caller, filter))
    }

    pub async fn kill(
        &self,
        caller: &Caller,
        service: &ServiceId,
        options: KillOptions,
    ) -> Result<Killed, KernelError> {
        self.inner.kill(caller, service, options).await
    }

    /// The last `n` log lines of a service (at most the 1,000 kept).
    pub fn logs(
        &self,
        caller: &Caller,
        service: &ServiceId,
        n: usize,
    ) -> Result<Vec<LogLine>, KernelError> {
        caller.require(&Resource::Service(service.clone()), Permission::Read)?;
        Ok(self.inner.entry(caller, service)?.logs.tail(n))
    }

    /// The last `n` log lines and a feed of every later line.
    pub fn follow_logs(
        &self,
        caller: &Caller,
        service: &ServiceId,
        n: usize,
    ) -> Result<(Vec<LogLine>, broadcast::Receiver<LogLine>), KernelError> {
        caller.require(&Resource::Service(service.clone()), Permission::Read)?;
        Ok(self.inner.entry(caller, service)?.logs.follow(n))
    }

    /// One page of events; a tenant only ever sees its own.
    pub fn events(&self, caller: &Caller, mut query: EventQuery) -> Result<EventPage, KernelError> {
        caller.require(&Resource::Events, Permission::Read)?;
        scope_filter(caller, &mut query.filter);
        Ok(self.inner.store.read(&query)?)
    }

    /// Events after `after_id`, then live ones; a tenant only ever sees its own.
    pub fn watch(
        &self,
        caller: &Caller,
        after_id: u64,
        mut filter: EventFilter,
    ) -> Result<Subscription, KernelError> {
        caller.require(&Resource::Events, Permission::Read)?;
        scope_filter(caller, &mut filter);
        Ok(self.inner.store.subscribe(after_id, filter))
    }

    /// The supervision tree; a tenant sees the system and its own subtree.
    pub fn tree(&self, caller: &Caller) -> Result<TreeNode, KernelError> {
        caller.require(&Resource::Any, Permission::Read)?;
        Ok(self.tree_unchecked(caller))
    }

    fn tree_unchecked(&self, caller: &Caller) -> TreeNode {
        let only = (!caller.is_admin()).then(|| caller.tenant_id().to_string());
        let k = &self.inner;
        match k.tree.get() {
            Some(t) => t.snapshot(|tenant| k.tenant_tree(tenant), only.as_deref()),
            None => TreeNode {
                name: "solo".into(),
                kind: "supervisor".into(),
                strategy: None,
                state: "starting".into(),
                restarts: 0,
                children: Vec::new(),
            },
        }
    }
}

/// A tenant's queries are confined to its tenant; an admin's keep their own filter
/// (none: every tenant and the system).
fn scope_filter(caller: &Caller, filter: &mut EventFilter) {
    if !caller.is_admin() {
        filter.tenant = Some(caller.tenant_id().clone());
    }
}

impl KernelInner {
    pub(crate) fn check_accepting(&self) -> Result<(), KernelError> {
        if self.accepting.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(KernelError::shutting_down())
        }
    }

    fn default_components(&self, bodies: &mut HashMap<&'static str, ComponentBody>) {
        let me = &self.me;
        bodies.entry("capabilities").or_insert_with(|| {
            ticking(me, solo_caps::Caps::PURGE_EVERY, false, |k| {
                Box::pin(async move {
                    if let Err(e) = k.caps.purge_expired(access::now_ns()).await {
                        tracing::warn!(error = %e, "purging expired capabilities failed");
                    }
                })
            })
        });
        let every = Duration::from_millis(self.config.monitor.interval_ms.max(10));
        bodies.entry("monitor").or_insert_with(|| {
            ticking(me, every, true, |k| {
                Box::pin(async move { k.monitor_once().await })
            })
        });
        bodies.entry("discovery").or_insert_with(|| {
            ticking(me, Duration::from_millis(250), false, |k| {
                Box::pin(async move {
                    if let Err(e) = k.sweep_registrations(access::now_ns()).await {
                        tracing::warn!(error = %e, "sweeping expired registrations failed");
                    }
                })
            })
        });
        let me = self.me.clone();
        bodies.entry("vault").or_insert_with(|| {
            Arc::new(move |ctx| {
                let me = me.clone();
                Box::pin(async move {
                    // Finish a rotation a crash cut short.
                    if let Some(k) = me.upgrade()
                        && let Some(v) = &k.vault
                        && v.rotation_pending().ok().flatten().is_some()
                    {
                        match v.rotate().await {
                            Ok(n) => {
                                tracing::info!(secrets = n, "finished an interrupted key rotation")
                            }
                            Err(e) => return Err(format!("resume the key rotation: {e}")),
                        }
                    }
                    ctx.shutdown.cancelled().await;
                    Ok(())
                })
            })
        });
        let me = &self.me;
        bodies.entry("telemetry").or_insert_with(|| {
            ticking(me, Duration::from_secs(1), true, |k| {
                Box::pin(async move { k.report_gauges() })
            })
        });
        let me = self.me.clone();
        bodies.entry("event_store").or_insert_with(|| {
            Arc::new(move |ctx| {
                let me = me.clone();
                Box::pin(async move {
                    // After a start (not after a restart of this component), check the
                    // whole log in the background and record the result.
                    if ctx.incarnation == 0
                        && let Some(k) = me.upgrade()
                    {
                        k.verify_log().await;
                    }
                    ctx.shutdown.cancelled().await;
                    Ok(())
                })
            })
        });
    }

    /// Checks the event log (dense ids, hash chain) and records `event_log_verified`; a
    /// broken chain is logged as an error with the first bad id.
    async fn verify_log(&self) {
        let store = Arc::clone(&self.store);
        let started = Instant::now();
        let report = match tokio::task::spawn_blocking(move || store.verify()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the event log could not be verified");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the event log verification did not finish");
                return;
            }
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &report.first_broken {
            None => tracing::info!(checked = report.checked, ms, "event log verified"),
            Some(b) => tracing::error!(
                first_broken_id = b.id,
                reason = %b.reason,
                "the event log's hash chain is broken"
            ),
        }
        let e = NewEvent::system(kinds::EVENT_LOG_VERIFIED, "solo").payload(json!({
            "ok": report.first_broken.is_none(),
            "checked": report.checked,
            "last_id": report.last_id,
            "first_broken_id": report.first_broken.as_ref().map(|b| b.id),
            "reason": report.first_broken.as_ref().map(|b| b.reason.clone()),
            "ms": ms,
        }));
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::warn!(error = %err, "could not record the log verification");
        }
    }

    fn report_gauges(&self) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(m::EVENTS_LAST_ID).set(self.store.last_id() as f64);
        let mut by_state: HashMap<ServiceState, u64> = HashMap::new();
        for slot in &self.services {
            if let Slot::Running(e) | Slot::Stopping(e) = slot.value() {
                *by_state.entry(e.state()).or_default() += 1;
            }
        }
        for (state, n) in by_state {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(m::SERVICES, "state" => state.as_str()).set(n as f64);
        }
    }

    fn on_system_event(&self, e: SupervisorEvent) {
        let event = match &e {
            SupervisorEvent::ChildRestarted {
                supervisor,
                child,
                incarnation,
                reason,
                ..
            } => NewEvent::system(kinds::COMPONENT_RESTARTED, child.clone()).payload(json!({
                "component": child,
                "supervisor": supervisor,
                "incarnation": incarnation,
                "reason": reason,
            })),
            SupervisorEvent::ChildFailed {
                supervisor,
                child,
                reason,
            } => NewEvent::system(kinds::COMPONENT_RESTARTED, child.clone()).payload(json!({
                "component": child,
                "supervisor": supervisor,
                "failed": true,
                "reason": reason,
            })),
            SupervisorEvent::Escalated { supervisor, reason } => {
                tracing::error!(supervisor, reason, "supervisor escalated");
                NewEvent::system(kinds::COMPONENT_RESTARTED, supervisor.clone()).payload(json!({
                    "component": supervisor,
                    "escalated": true,
                    "reason": reason,
                }))
            }
        };
        tracing::warn!(?e, "system component restarted");
        drop(self.store.append(vec![event]));
    }

    /// The context of `tenant`, created (with its supervisor) on first use.
    fn tenant_ctx(&self, tenant: &TenantId) -> Arc<TenantCtx> {
        if let Some(t) = self.tenants.get(tenant) {
            return Arc::clone(t.value());
        }
        let entry = self.tenants.entry(tenant.clone()).or_insert_with(|| {
            let me = self.me.clone();
            let t = tenant.clone();
            let (sup, handle) = Supervisor::start(
                SupervisorSpec {
                    name: tenant.to_string(),
                    strategy: Strategy::OneForOne,
                    // Services carry their own intensity; the tenant never escalates.
                    intensity: Intensity::new(u32::MAX, Duration::from_secs(1)),
                    on_event: Arc::new(move |e| {
                        if let Some(k) = me.upgrade() {
                            k.on_service_event(&t, e);
                        }
                    }),
                },
                Vec::new(),
            );
            // The tenant's supervisor is a child of the tenants supervisor.
            if let Some(tree) = self.tree.get() {
                let tenants = tree.tenants().clone();
                let handle = Arc::new(Mutex::new(Some(handle)));
                let (sup2, name) = (sup.clone(), tenant.to_string());
                tokio::spawn(async move {
                    let child = ChildSpec {
                        name,
                        restart: RestartType::Temporary,
                        shutdown_timeout: Duration::from_secs(60),
                        intensity: None,
                        backoff: None,
                        start: Arc::new(move |ctx| {
                            let (sup, handle) = (sup2.clone(), handle.lock().take());
                            Box::pin(async move {
                                let Some(mut handle) = handle else {
                                    return solo_supervisor::Exit::Normal;
                                };
                                tokio::select! {
                                    () = ctx.shutdown.cancelled() => {
                                        sup.shutdown().await;
                                        solo_supervisor::Exit::Shutdown
                                    }
                                    _ = &mut handle => solo_supervisor::Exit::Normal,
                                }
                            })
                        }),
                    };
                    let _ = tenants.add_child(child).await;
                });
            }
            Arc::new(TenantCtx {
                supervisor: sup,
                admission: Mutex::new(Admission::default()),
            })
        });
        Arc::clone(entry.value())
    }

    fn tenant_tree(&self, tenant: &str) -> Vec<TreeNode> {
        let Ok(t) = TenantId::new(tenant) else {
            return Vec::new();
        };
        let Some(ctx) = self.tenants.get(&t) else {
            return Vec::new();
        };
        ctx.supervisor
            .children()
            .into_iter()
            .map(|c| {
                let state = ServiceId::new(c.name.clone())
                    .ok()
                    .and_then(|s| self.running(&t, &s))
                    .map_or_else(|| "stopped".to_string(), |e| e.state().to_string());
                TreeNode {
                    name: c.name,
                    kind: "service".into(),
                    strategy: None,
                    state,
                    restarts: c.restarts,
                    children: Vec::new(),
                }
            })
            .collect()
    }

    /// The entry of a live (running or stopping) service.
    fn running(&self, tenant: &TenantId, service: &ServiceId) -> Option<Arc<ServiceEntry>> {
        match self
            .services
            .get(&(tenant.clone(), service.clone()))?
            .value()
        {
            Slot::Running(e) | Slot::Stopping(e) => Some(Arc::clone(e)),
            Slot::Deploying => None,
        }
    }

    fn entry(
        &self,
        caller: &Caller,
        service: &ServiceId,
    ) -> Result<Arc<ServiceEntry>, KernelError> {
        self.running(caller.tenant_id(), service)
            .ok_or_else(|| KernelError::not_found(service))
    }

    fn resolve_spec(&self, req: &DeployRequest) -> Result<DeploySpec, KernelError> {
        let d = &self.config.service_defaults;
        let l = &self.config.limits;
        let spec = DeploySpec {
            service_id: req.service_id.clone(),
            format: req.format,
            config: req.config.clone().unwrap_or_else(|| json!({})),
            restart: req.restart.unwrap_or(d.restart),
            max_restarts: req.max_restarts.unwrap_or(d.max_restarts),
            max_seconds: req.max_seconds.unwrap_or(d.max_seconds),
            limits: ServiceLimits {
                memory_mb: req.memory_mb.unwrap_or(d.memory_mb),
                cpu_ms_per_message: req.cpu_ms_per_message.unwrap_or(d.cpu_ms_per_message),
                mailbox: req.mailbox.unwrap_or(d.mailbox),
                startup_timeout_ms: req.startup_timeout_ms.unwrap_or(d.startup_timeout_ms),
            },
            secrets: req.secrets.clone(),
        };
        let bad = |what: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(KernelError::InvalidArgument(format!(
                    "{what} is {v}; it must be between {lo} and {hi}"
                )))
            } else {
                Ok(())
            }
        };
        bad(
            "memory_mb",
            spec.limits.memory_mb.into(),
            1,
            l.max_memory_mb_per_service.into(),
        )?;
        bad(
            "cpu_ms_per_message",
            spec.limits.cpu_ms_per_message.into(),
            1,
            600_000,
        )?;
        bad("mailbox", spec.limits.mailbox.into(), 1, 1_000_000)?;
        bad(
            "startup_timeout_ms",
            spec.limits.startup_timeout_ms.into(),
            1,
            600_000,
        )?;
        bad("max_restarts", spec.max_restarts.into(), 0, 10_000)?;
        bad("max_seconds", spec.max_seconds.into(), 1, 86_400)?;
        if spec.secrets.len() > 64 {
            return Err(KernelError::InvalidArgument(
                "a service may list at most 64 secrets".into(),
            ));
        }
        if let Some(s) = spec
            .secrets
            .iter()
            .find(|s| !solo_types::valid_secret_name(s))
        {
            return Err(KernelError::InvalidArgument(format!(
                "secret name {s:?} is invalid: use 1-256 characters of [A-Za-z0-9_.-]"
            )));
        }
        let config_len = spec.config.to_string().len();
        if config_len > l.max_message_bytes {
            return Err(KernelError::InvalidArgument(format!(
                "the config is {config_len} bytes, over the limit of {}",
                l.max_message_bytes
            )));
        }
        Ok(spec)
    }

    /// Starts an instance of `entry`'s code: instantiate and init, within the startup
    /// timeout.
    pub(crate) async fn start_instance(
        &self,
        entry: &Arc<ServiceEntry>,
    ) -> Result<Box<dyn Instance>, CrashReport> {
        self.start_instance_of(entry, &entry.artifact()).await
    }

    /// Starts an instance of `artifact` for `entry` (the new code of a hot swap).
    pub(crate) async fn start_instance_of(
        &self,
        entry: &Arc<ServiceEntry>,
        artifact: &Artifact,
    ) -> Result<Box<dyn Instance>, CrashReport> {
        let host = Arc::new(host::KernelHost::new(self.me.clone(), Arc::clone(entry)));
        let timeout = entry.startup_timeout();
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            entry.report(
                "startup_timeout",
                &format!(
                    "the service did not start within {} ms",
                    entry.spec.limits.startup_timeout_ms
                ),
                None,
            )
        };
        let start = async {
            let mut instance = self
                .sandbox
                .instantiate(artifact, entry.limits(), host)
                .await
                .map_err(|e| match e {
                    solo_sandbox::InstantiateError::Crashed(c) => {
                        entry.report(c.kind.as_str(), &c.message, c.backtrace)
                    }
                    other => entry.report("internal", &other.to_string(), None),
                })?;
            // The deadline stops an init that never yields (a JS loop), which a timer
            // alone could not.
            let interrupt = instance.interrupt_handle();
            interrupt.deadline(Some(deadline));
            let init = instance.init(&entry.config_json).await;
            interrupt.deadline(None);
            init.map_err(|e| match e {
                CallError::Crash(c) if c.kind == solo_sandbox::CrashKind::Interrupted => {
                    timed_out()
                }
                CallError::Crash(c) => entry.report(
                    c.kind.as_str(),
                    &format!("init crashed: {}", c.message),
                    c.backtrace,
                ),
                CallError::Guest(msg) => entry.report(
                    "init_failed",
                    &format!("init returned an error: {msg}"),
                    None,
                ),
                other => entry.report("init_failed", &other.to_string(), None),
            })?;
            Ok(instance)
        };
        match tokio::time::timeout(timeout, start).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        }
    }

    /// Undoes a reservation made by a deploy that did not complete.
    fn release(&self, tenant: &TenantId, service: &ServiceId, memory_mb: u32) {
        self.services.remove(&(tenant.clone(), service.clone()));
        if let Some(t) = self.tenants.get(tenant) {
            let mut a = t.admission.lock();
            a.services.remove(service);
            a.memory_mb = a.memory_mb.saturating_sub(memory_mb.into());
        }
    }

    async fn record_failure(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
        stage: &str,
        reason: &str,
    ) {
        let e = records::deployment_failed(tenant, service, stage, reason);
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::error!(error = %err, "could not record a failed deployment");
        }
    }

    async fn deploy(&self, caller: &Caller, req: DeployRequest) -> Result<Deployed, KernelError> {
        self.deploy_inner(caller, req, None).await
    }

    /// A deploy; `history` continues a service's versions (a `replace` swap).
    pub(crate) async fn deploy_inner(
        &self,
        caller: &Caller,
        req: DeployRequest,
        history: Option<service::History>,
    ) -> Result<Deployed, KernelError> {
        self.check_accepting()?;
        if matches!(caller.role(), Role::Service(_)) {
            return Err(KernelError::PermissionDenied(
                "services cannot deploy services".into(),
            ));
        }
        caller.require(&Resource::Kernel, Permission::Deploy)?;
        if !req.dry_run {
            self.check_pressure()?;
        }
        let tenant = caller.tenant_id().clone();
        let spec = self.resolve_spec(&req)?;
        let hash = CodeHash::of(req.format, &req.code).to_hex();
        let key = (tenant.clone(), spec.service_id.clone());
        let sid = spec.service_id.clone();

        // An existing service: identical code and spec is an idempotent success.
        if let Some(slot) = self.services.get(&key) {
            return match slot.value() {
                Slot::Running(e) if e.code_hash() == hash && e.spec == spec => Ok(Deployed {
                    service_id: sid,
                    code_hash: hash,
                    version: e.version(),
                    event_id: Some(e.deployed_event.load(std::sync::atomic::Ordering::Relaxed)),
                    created: false,
                    dry_run: req.dry_run,
                    has_state: e.artifact().has_state(),
                }),
                Slot::Stopping(_) => Err(KernelError::FailedPrecondition(format!(
                    "service {sid} is being killed; deploy it again once it is gone"
                ))),
                _ => Err(KernelError::AlreadyExists(format!(
                    "service {sid} already exists with different code or settings; kill it first or use swap"
                ))),
            };
        }

        let ctx = self.tenant_ctx(&tenant);
        let memory = spec.limits.memory_mb;
        if !req.dry_run {
            // Reserve the id and the quota atomically.
            let mut a = ctx.admission.lock();
            let limits = &self.config.limits;
            if a.services.len() >= limits.max_services_per_tenant as usize {
                return Err(KernelError::ResourceExhausted {
                    reason: "quota_exceeded",
                    message: format!(
                        "tenant {tenant} has {} services, its limit",
                        limits.max_services_per_tenant
                    ),
                });
            }
            if a.memory_mb + u64::from(memory) > limits.max_memory_mb_per_tenant {
                return Err(KernelError::ResourceExhausted {
                    reason: "quota_exceeded",
                    message: format!(
                        "tenant {tenant} would use more than its {} MiB of service memory",
                        limits.max_memory_mb_per_tenant
                    ),
                });
            }
            match self.services.entry(key.clone()) {
                Entry::Occupied(_) => {
                    return Err(KernelError::AlreadyExists(format!(
                        "service {sid} is being deployed by another request"
                    )));
                }
                Entry::Vacant(v) => {
                    v.insert(Slot::Deploying);
                }
            }
            a.services.insert(sid.clone());
            a.memory_mb += u64::from(memory);
        }

        let artifact = match self
            .sandbox
            .compile(req.format, Arc::clone(&req.code))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                if !req.dry_run {
                    self.release(&tenant, &sid, memory);
                    self.record_failure(&tenant, &sid, "compile", &e.to_string())
                        .await;
                }
                return Err(KernelError::Compile(e));
            }
        };
        if req.dry_run {
            return Ok(Deployed {
                service_id: sid,
                code_hash: hash,
                version: 1,
                event_id: None,
                created: false,
                dry_run: true,
                has_state: artifact.has_state(),
            });
        }

        match self
            .start_service(&tenant, spec, hash, artifact, &req.code, &ctx, history)
            .await
        {
            Ok(d) => Ok(d),
            Err(e) => {
                self.release(&tenant, &sid, memory);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_service(
        &self,
        tenant: &TenantId,
        spec: DeploySpec,
        hash: String,
        artifact: Artifact,
        code: &[u8],
        ctx: &TenantCtx,
        history: Option<service::History>,
    ) -> Result<Deployed, KernelError> {
        let sid = spec.service_id.clone();
        let entry = ServiceEntry::new(
            tenant.clone(),
            spec.clone(),
            hash.clone(),
            artifact.clone(),
            1000,
            self.config.limits.max_emits_per_second,
            history,
        );
        let version = entry.version();
        let instance = match self.start_instance(&entry).await {
            Ok(i) => i,
            Err(report) => {
                let reason = format!("{}: {}", report.kind, report.message);
                self.record_failure(tenant, &sid, &report.kind, &reason)
                    .await;
                return Err(KernelError::InvalidArgument(format!(
                    "service {sid} failed to start: {reason}"
                )));
            }
        };

        let record = DeploymentRecord {
            v: records::RECORD_VERSION,
            tenant: tenant.clone(),
            spec: spec.clone(),
            code_hash: hash.clone(),
            version,
            deployed_event: 0,
            deployed_at: entry.deployed_at,
        };
        let mut batch = WriteBatch::new();
        let record_json =
            serde_json::to_vec(&record).map_err(|e| KernelError::Internal(e.to_string()))?;
        batch.put(
            records::DEPLOYMENTS,
            records::deployment_key(tenant, &sid),
            record_json,
        )?;
        if self.store.get(records::CODE, hash.as_bytes())?.is_none() {
            batch.put(records::CODE, hash.as_bytes().to_vec(), code.to_vec())?;
        }
        // A fresh deployment starts from no state, whatever an earlier one left.
        batch.delete(records::SNAPSHOTS, records::deployment_key(tenant, &sid))?;
        batch.event(records::deployed(&record));
        batch.event_caused_by(records::started(tenant, &sid, version), 0);
        let commit = self.store.commit(batch).await?;
        let event_id = commit.event_ids.first().copied();
        entry
            .deployed_event
            .store(event_id.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        *entry.ready.lock() = Some(instance);

        let child = self.service_child(&entry);
        ctx.supervisor
            .add_child(child)
            .await
            .map_err(|e| KernelError::Internal(format!("start service {sid}: {e}")))?;
        self.services.insert(
            (tenant.clone(), sid.clone()),
            Slot::Running(Arc::clone(&entry)),
        );
        metrics::counter!(m::DEPLOYMENTS).increment(1);
        Ok(Deployed {
            service_id: sid,
            code_hash: hash,
            version,
            event_id,
            created: true,
            dry_run: false,
            has_state: artifact.has_state(),
        })
    }

    fn service_child(&self, entry: &Arc<ServiceEntry>) -> ChildSpec {
        let spec = &entry.spec;
        let (me, e) = (self.me.clone(), Arc::clone(entry));
        ChildSpec {
            name: entry.id.to_string(),
            restart: match spec.restart {
                RestartPolicy::Permanent => RestartType::Permanent,
                RestartPolicy::Transient => RestartType::Transient,
                RestartPolicy::Temporary => RestartType::Temporary,
            },
            shutdown_timeout: Duration::from_secs(5),
            intensity: Some(Intensity::new(
                spec.max_restarts,
                Duration::from_secs(u64::from(spec.max_seconds)),
            )),
            backoff: None,
            start: Arc::new(move |ctx| Box::pin(service::run(me.clone(), Arc::clone(&e), ctx))),
        }
    }

    /// Records a service's crash and what its supervisor decided.
    fn on_service_event(&self, tenant: &TenantId, e: SupervisorEvent) {
        let (child, failed, reason) = match &e {
            SupervisorEvent::ChildRestarted { child, reason, .. } => (child, None, reason),
            SupervisorEvent::ChildFailed { child, reason, .. } => {
                (child, Some(reason.clone()), reason)
            }
            SupervisorEvent::Escalated { .. } => return,
        };
        let Some(entry) = ServiceId::new(child.clone())
            .ok()
            .and_then(|s| self.running(tenant, &s))
        else {
            return;
        };
        let report = entry
            .take_pending_crash()
            .unwrap_or_else(|| entry.report("internal", reason, None));
        let mut batch = WriteBatch::new();
        batch.event(records::crashed(tenant, &entry.id, &report));
        match failed {
            None => {
                let n = entry
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                batch.event_caused_by(records::restarted(tenant, &entry.id, n), 0);
                metrics::counter!(m::RESTARTS).increment(1);
            }
            Some(why) => {
                entry.set_state(ServiceState::Failed);
                batch.event_caused_by(records::failed(tenant, &entry.id, &why), 0);
                entry.drain(&format!("service {} failed: {why}", entry.id));
            }
        }
        let fut = self.store.commit(batch);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::error!(error = %e, "could not record a service crash");
            }
        });
    }

    fn check_message(&self, what: &str, text: &str) -> Result<(), KernelError> {
        let limit = self.config.limits.max_message_bytes;
        if text.len() > limit {
            return Err(KernelError::InvalidArgument(format!(
                "the {what} is {} bytes, over the limit of {limit}",
                text.len()
            )));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| KernelError::InvalidArgument(format!("the {what} is not JSON: {e}")))?;
        Ok(())
    }

    pub(crate) fn live_entry(
        &self,
        caller: &Caller,
        service: &ServiceId,
    ) -> Result<Arc<ServiceEntry>, KernelError> {
        let entry = match self
            .services
            .get(&(caller.tenant_id().clone(), service.clone()))
        {
            Some(slot) => match slot.value() {
                Slot::Running(e) => Arc::clone(e),
                Slot::Stopping(_) => {
                    return Err(KernelError::Unavailable(format!(
                        "service {service} is stopping"
                    )));
                }
                Slot::Deploying => return Err(KernelError::not_found(service)),
            },
            None => return Err(KernelError::not_found(service)),
        };
        if entry.state() == ServiceState::Failed {
            let why = entry
                .last_error()
                .map_or_else(String::new, |r| format!(": {}: {}", r.kind, r.message));
            return Err(KernelError::FailedPrecondition(format!(
                "service {service} has failed and is not restarted{why}"
            )));
        }
        Ok(entry)
    }

    async fn call(
        &self,
        caller: &Caller,
        service: &ServiceId,
        request: &str,
        timeout: Duration,
    ) -> Result<String, KernelError> {
        let started = Instant::now();
        let result = self.call_inner(caller, service, request, timeout).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        metrics::counter!(m::CALLS, "outcome" => outcome).increment(1);
        metrics::histogram!(m::CALL_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_inner(
        &self,
        caller: &Caller,
        service: &ServiceId,
        request: &str,
        timeout: Duration,
    ) -> Result<String, KernelError> {
        caller.require(&Resource::Service(service.clone()), Permission::Call)?;
        self.check_accepting()?;
        self.check_message("request", request)?;
        let entry = self.live_entry(caller, service)?;
        self.breaker_allow(&entry.breaker, service)?;
        let result = self.deliver_call(&entry, service, request, timeout).await;
        let outcome = match &result {
            Ok(_) | Err(KernelError::ServiceError(_) | KernelError::InvalidArgument(_)) => {
                flow::Outcome::Success
            }
            Err(KernelError::ServiceCrashed(_) | KernelError::DeadlineExceeded(_)) => {
                flow::Outcome::Failure
            }
            Err(_) => flow::Outcome::Neutral,
        };
        self.breaker_record(&entry.breaker, &entry.tenant, service, outcome);
        result
    }

    async fn deliver_call(
        &self,
        entry: &Arc<ServiceEntry>,
        service: &ServiceId,
        request: &str,
        timeout: Duration,
    ) -> Result<String, KernelError> {
        let (tx, rx) = oneshot::channel();
        let envelope = Envelope::Call {
            request: request.to_string(),
            reply: tx,
            deadline: Instant::now() + timeout,
        };
        entry.mailbox.try_send(envelope).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => KernelError::ResourceExhausted {
                reason: "mailbox_full",
                message: format!("the mailbox of service {service} is full"),
            },
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                KernelError::Unavailable(format!("service {service} is stopped"))
            }
        })?;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                return Err(KernelError::DeadlineExceeded(format!(
                    "service {service} did not answer within {} ms",
                    timeout.as_millis()
                )));
            }
            Ok(Err(_)) => {
                return Err(KernelError::Unavailable(format!(
                    "service {service} stopped before answering"
                )));
            }
            Ok(Ok(r)) => r,
        };
        match reply {
            Ok(text) => Ok(text),
            Err(CallError::Guest(msg)) => Err(KernelError::ServiceError(msg)),
            Err(CallError::BadRequest(msg)) => Err(KernelError::InvalidArgument(msg)),
            Err(e @ CallError::ReplyTooLarge { .. }) => {
                Err(KernelError::ServiceError(e.to_string()))
            }
            Err(CallError::Crash(c)) => Err(KernelError::ServiceCrashed(Box::new(
                entry
                    .last_error()
                    .unwrap_or_else(|| entry.report(c.kind.as_str(), &c.message, c.backtrace)),
            ))),
        }
    }

    fn cast(&self, caller: &Caller, service: &ServiceId, message: &str) -> Result<(), KernelError> {
        caller.require(&Resource::Service(service.clone()), Permission::Call)?;
        self.check_accepting()?;
        self.check_message("message", message)?;
        let entry = self.live_entry(caller, service)?;
        entry
            .mailbox
            .try_send(Envelope::Cast {
                message: message.to_string(),
            })
            .map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => KernelError::ResourceExhausted {
                    reason: "mailbox_full",
                    message: format!("the mailbox of service {service} is full"),
                },
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    KernelError::Unavailable(format!("service {service} is stopped"))
                }
            })
    }

    fn list(&self, caller: &Caller, filter: &ListFilter) -> ServiceList {
        let tenant = caller.tenant_id();
        let ids: Vec<ServiceId> = self
            .tenants
            .get(tenant)
            .map(|t| t.admission.lock().services.iter().cloned().collect())
            .unwrap_or_default();
        let all: Vec<ServiceStatus> = ids
            .iter()
            .filter_map(
                |id| match self.services.get(&(tenant.clone(), id.clone()))?.value() {
                    Slot::Running(e) => Some(e.status()),
                    _ => None,
                },
            )
            .filter(|s| filter.state.is_none_or(|st| s.state == st))
            .collect();
        let limit = match filter.limit {
            0 => 100,
            n => n.min(1000),
        };
        ServiceList {
            total: all.len(),
            services: all.into_iter().skip(filter.offset).take(limit).collect(),
        }
    }

    pub(crate) async fn save_snapshot(
        &self,
        entry: &ServiceEntry,
        state: Vec<u8>,
    ) -> Result<(), KernelError> {
        let mut batch = WriteBatch::new();
        batch.put(
            records::SNAPSHOTS,
            records::deployment_key(&entry.tenant, &entry.id),
            state,
        )?;
        self.store.commit(batch).await?;
        Ok(())
    }

    async fn kill(
        &self,
        caller: &Caller,
        service: &ServiceId,
        opts: KillOptions,
    ) -> Result<Killed, KernelError> {
        self.kill_inner(caller, service, opts).await
    }

    pub(crate) async fn kill_inner(
        &self,
        caller: &Caller,
        service: &ServiceId,
        opts: KillOptions,
    ) -> Result<Killed, KernelError> {
        if matches!(caller.role(), Role::Service(_)) {
            return Err(KernelError::PermissionDenied(
                "services cannot kill services".into(),
            ));
        }
        caller.require(&Resource::Service(service.clone()), Permission::Kill)?;
        let tenant = caller.tenant_id().clone();
        let key = (tenant.clone(), service.clone());
        let entry = {
            let Some(mut slot) = self.services.get_mut(&key) else {
                return Err(KernelError::not_found(service));
            };
            match slot.value().clone() {
                Slot::Running(e) => {
                    *slot.value_mut() = Slot::Stopping(Arc::clone(&e));
                    e
                }
                Slot::Stopping(_) => {
                    return Err(KernelError::FailedPrecondition(format!(
                        "service {service} is already being killed"
                    )));
                }
                Slot::Deploying => return Err(KernelError::not_found(service)),
            }
        };
        entry.set_state(ServiceState::Stopping);
        if opts.force {
            entry.interrupt();
        }
        let timeout = if opts.force {
            Duration::ZERO
        } else {
            opts.timeout
        };
        if let Some(ctx) = self.tenants.get(&tenant).map(|t| Arc::clone(t.value())) {
            let _ = ctx
                .supervisor
                .terminate_child(service.as_str(), Some(timeout))
                .await;
        }
        entry.drain(&format!("service {service} was killed"));
        let snapshot = *entry.final_snapshot.lock();
        let mut batch = WriteBatch::new();
        batch.delete(
            records::DEPLOYMENTS,
            records::deployment_key(&tenant, service),
        )?;
        batch.delete_prefix(records::SERVICE_KV, records::kv_prefix(&tenant, service))?;
        batch.delete(
            records::SNAPSHOTS,
            records::deployment_key(&tenant, service),
        )?;
        batch.event(records::killed(&tenant, service, opts.force, snapshot));
        let gone = self.deregister_service(&mut batch, &tenant, service)?;
        let commit = self.store.commit(batch).await;
        if commit.is_ok() {
            self.forget(&gone);
        }
        entry.set_state(ServiceState::Undeployed);
        self.release(&tenant, service, entry.spec.limits.memory_mb);
        let commit = commit?;
        Ok(Killed {
            event_id: commit.event_ids.first().copied().unwrap_or(0),
            forced: opts.force,
            snapshot_bytes: snapshot,
        })
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("services", &self.inner.services.len())
            .finish_non_exhaustive()
    }
}
