//! Where the kernel is assembled and started: the subsystems, `system_started`, the
//! supervision tree with the system components the kernel supplies itself, and
//! recovery. Also the recording of the system tree's restarts.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use solo_sandbox::Sandbox;
use solo_store::{Store, WriteBatch};
use solo_supervisor::SupervisorEvent;
use solo_types::clock::SharedClock;
use solo_types::{NewEvent, ServiceState, kinds, metric_names as m};

use crate::capabilities::Capabilities;
use crate::core::{Core, OnShutdown, Slot};
use crate::discovery::Registry;
use crate::error::Stage;
use crate::hibernate;
use crate::monitor::Monitor;
use crate::secrets::Secrets;
use crate::shedder::Shedder;
use crate::tenants::Tenants;
use crate::tree::{ComponentBody, Tree};
use crate::tunables::{Key, Tunables};
use solo_types::api::ConfigChange;

use crate::actor;
use crate::caller::Caller;
use crate::config::KernelConfig;
use crate::error::KernelError;
use crate::records;
use crate::recovery;
use crate::views;

/// What the embedding binary supplies.
#[derive(Default)]
pub struct KernelOptions {
    /// Task bodies for system components the kernel does not implement itself (the
    /// gateway, for one).
    pub components: HashMap<&'static str, ComponentBody>,
    /// The vault; without one, secrets are unavailable.
    pub vault: Option<Arc<solo_vault::Vault>>,
    /// The data directory, whose size the monitor watches.
    pub data_dir: Option<std::path::PathBuf>,
    /// The clock (the machine's when `None`); tests pass a fake one.
    pub clock: Option<SharedClock>,
    /// What an admin's shutdown request triggers (with the grace period).
    pub on_shutdown: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    /// The client services' HTTP requests leave through; without one, a client with
    /// `[egress]`'s limits and the Mozilla roots only.
    pub egress: Option<Arc<solo_egress::Client>>,
    /// The cluster node this kernel runs on, shown by status, list and the tree (none on
    /// an embedded server).
    pub node: Option<String>,
    /// The cluster's nodes as this node last heard from them, shown to admins by health
    /// (none on an embedded server).
    pub members: Option<Members>,
    /// Which tenants this kernel serves (on a cluster node, those placed on it); `None`:
    /// every tenant. Recovery brings back only theirs, another tenant's requests are
    /// refused (`unavailable`, `not_placed_here`), and [`crate::Kernel::adopt`] takes a
    /// tenant on once it is placed here.
    pub serves: Option<Serves>,
    /// Carries a service's call or cast to another tenant's service that this kernel
    /// does not serve (on a cluster node: placed on another node) to where it is served.
    pub elsewhere: Option<crate::cluster::Elsewhere>,
}

pub use crate::cluster::{CallElsewhere, Elsewhere};

/// Whether a kernel serves a tenant (called on every admission: keep it cheap).
pub type Serves = Arc<dyn Fn(&solo_types::TenantId) -> bool + Send + Sync>;

/// Reads the cluster's membership (cheap: what the node's heartbeat task last read).
pub type Members = Arc<dyn Fn() -> Vec<solo_types::api::ClusterNode> + Send + Sync>;

/// Builds the kernel's state, records `system_started`, starts the tree and recovers
/// every recorded service.
pub(crate) async fn boot(
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    config: KernelConfig,
    options: KernelOptions,
) -> Result<Arc<Core>, KernelError> {
    let clock = options.clock.unwrap_or_else(solo_types::clock::system);
    // What is read below is as of this event or later.
    let loaded_after = store.last_id();
    let caps = Capabilities::load(Arc::clone(&store), Arc::clone(&clock))?;
    let registry = Registry::load(Arc::clone(&store), Arc::clone(&clock), caps.shared())?;
    let tunables = Arc::new(Tunables::new(&config));
    let client = match options.egress {
        Some(c) => c,
        None => Arc::new(
            solo_egress::Client::new(config.egress.limits(), &[])
                .map_err(|e| KernelError::Unavailable(format!("the egress client: {e}")))?,
        ),
    };
    let egress = crate::egress::Egress::load(store.as_ref(), client)?;
    replay_config(store.as_ref(), &tunables)?;
    let on_shutdown: Option<OnShutdown> = options.on_shutdown;
    let k = Arc::new_cyclic(|me| Core {
        shedder: Shedder::new(
            Arc::clone(&tunables),
            Arc::clone(&store),
            Arc::clone(&clock),
        ),
        monitor: Monitor::new(Arc::clone(&tunables), Arc::clone(&store), options.data_dir),
        secrets: Secrets::new(options.vault, Arc::clone(&store), caps.shared()),
        caps,
        registry,
        egress,
        failed: crate::failed::FailedDeploys::default(),
        tunables,
        store,
        sandbox,
        config,
        clock,
        services: dashmap::DashMap::new(),
        tenants: Tenants::default(),
        tree: OnceLock::new(),
        recovery: Mutex::default(),
        on_shutdown,
        started: Instant::now(),
        accepting: AtomicBool::new(true),
        sleep_events: crate::sampler::Window::default(),
        awake: dashmap::DashMap::new(),
        making_room: tokio::sync::Mutex::new(None),
        node: options.node,
        members: options.members,
        serves: options.serves,
        elsewhere: options.elsewhere,
        loaded_after,
        me: me.clone(),
    });
    apply_to_sandbox(&k);
    let mut bodies = options.components;
    default_components(&k, &mut bodies);
    // `system_started` is the first event of every boot: it is durable before any
    // component (such as the event store's log check) can record anything.
    let mut started = json!({ "version": env!("CARGO_PKG_VERSION") });
    if let Some(node) = &k.node {
        started["node"] = json!(node);
    }
    k.store
        .append(vec![
            NewEvent::system(kinds::SYSTEM_STARTED, "solo").payload(started),
        ])
        .await
        .stage("record the start")?;
    let weak = Arc::downgrade(&k);
    let tree = Tree::start(
        bodies,
        Arc::new(move |e| {
            if let Some(k) = weak.upgrade() {
                on_system_event(&k, e);
            }
        }),
    );
    let weak = Arc::downgrade(&k);
    k.tenants.attach(
        tree.tenants().clone(),
        Arc::new(move |tenant, e| {
            if let Some(k) = weak.upgrade() {
                actor::on_supervisor_event(&k, tenant, e);
            }
        }),
    );
    let _ = k.tree.set(tree);
    let started = Instant::now();
    let recovery = recovery::recover(&k).await?;
    if recovery.recovered + recovery.failed > 0 {
        tracing::info!(
            recovered = recovery.recovered,
            failed = recovery.failed,
            ms = started.elapsed().as_millis() as u64,
            "recovered services"
        );
    }
    *k.recovery.lock() = recovery;
    Ok(k)
}

/// A system component that runs `tick` on the kernel every `period` (read from the
/// kernel before each wait, so a tunable may set it; the first time at once when
/// `at_once`) until it is told to stop or the kernel is gone.
fn ticking<P, F>(me: &Weak<Core>, period: P, at_once: bool, tick: F) -> ComponentBody
where
    P: Fn(&Core) -> Duration + Send + Sync + 'static,
    F: Fn(Arc<Core>) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
{
    let me = me.clone();
    let (period, tick) = (Arc::new(period), Arc::new(tick));
    Arc::new(move |ctx| {
        let (me, period, tick) = (me.clone(), Arc::clone(&period), Arc::clone(&tick));
        Box::pin(async move {
            let mut wait = !at_once;
            loop {
                if wait {
                    let every = match me.upgrade() {
                        Some(k) => period(&k),
                        None => return Ok(()),
                    };
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(every) => {}
                    }
                }
                wait = true;
                let Some(k) = me.upgrade() else { return Ok(()) };
                tick(k).await;
            }
        })
    })
}

/// A system component that runs `once` when it starts (only at its first start when
/// `first_only`, not after a restart), then waits to be stopped; an error is a crash.
fn at_start<F>(me: &Weak<Core>, first_only: bool, once: F) -> ComponentBody
where
    F: Fn(Arc<Core>) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync
        + 'static,
{
    let me = me.clone();
    let once = Arc::new(once);
    Arc::new(move |ctx| {
        let (me, once) = (me.clone(), Arc::clone(&once));
        Box::pin(async move {
            if (!first_only || ctx.incarnation == 0)
                && let Some(k) = me.upgrade()
            {
                once(k).await?;
            }
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    })
}

/// The components the kernel supplies itself, unless the binary gave its own.
fn default_components(k: &Core, bodies: &mut HashMap<&'static str, ComponentBody>) {
    let me = &k.me;
    bodies.entry("capabilities").or_insert_with(|| {
        ticking(
            me,
            |_| solo_caps::Caps::PURGE_EVERY,
            false,
            |k| Box::pin(async move { k.caps.purge(k.clock.now_ns()).await }),
        )
    });
    let every = Duration::from_millis(k.config.monitor.interval_ms.max(10));
    bodies.entry("monitor").or_insert_with(|| {
        ticking(
            me,
            move |_| every,
            true,
            |k| Box::pin(async move { k.monitor.sample_once(k.services.len()).await }),
        )
    });
    bodies.entry("discovery").or_insert_with(|| {
        ticking(
            me,
            |_| Duration::from_millis(250),
            false,
            |k| {
                Box::pin(async move {
                    if let Err(e) = k.registry.sweep(|t| k.serves(t)).await {
                        tracing::warn!(error = %e, "sweeping expired registrations failed");
                    }
                })
            },
        )
    });
    // Finish a key rotation a crash cut short.
    bodies.entry("vault").or_insert_with(|| {
        at_start(me, false, |k| {
            Box::pin(async move { k.secrets.finish_rotation().await })
        })
    });
    bodies.entry("telemetry").or_insert_with(|| {
        ticking(
            me,
            |_| Duration::from_secs(1),
            true,
            |k| Box::pin(async move { report_gauges(&k) }),
        )
    });
    bodies
        .entry("event_store")
        .or_insert_with(|| event_store(me));
    // Asks services idle past `services.hibernate_after_ms` to hibernate, a quarter of
    // that limit apart (at most a second, so a change of the tunable soon applies).
    bodies.entry("hibernation").or_insert_with(|| {
        ticking(me, hibernate::sweep_every, false, |k| {
            Box::pin(async move { hibernate::sweep(&k) })
        })
    });
}

/// How often the `event_store` component looks at the store while it is healthy.
const STORE_WATCH_EVERY: Duration = Duration::from_millis(250);
/// The longest wait between two recovery attempts.
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The `event_store` component: after the server's start (not after a restart of this
/// component) it checks the whole log in the background and records the result; then it
/// watches the store, and while a failed write keeps the store from writing it asks the
/// store to recover, backing off from 250 ms to 5 s, and records the outage once over.
fn event_store(me: &Weak<Core>) -> ComponentBody {
    let me = me.clone();
    Arc::new(move |ctx| {
        let me = me.clone();
        Box::pin(async move {
            if ctx.incarnation == 0
                && let Some(k) = me.upgrade()
            {
                verify_log(&k).await;
            }
            let mut outage: Option<(Instant, String, u32)> = None;
            let mut wait = STORE_WATCH_EVERY;
            loop {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
                let Some(k) = me.upgrade() else { return Ok(()) };
                let Some(cause) = k.store.fault() else {
                    wait = STORE_WATCH_EVERY;
                    continue;
                };
                let (since, _, attempts) = outage.get_or_insert_with(|| (Instant::now(), cause, 0));
                *attempts += 1;
                match k.store.recover().await {
                    Ok(()) => {
                        if let Some((since, cause, attempts)) = outage.take() {
                            store_recovered(&k, since, &cause, attempts).await;
                        }
                        wait = STORE_WATCH_EVERY;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, attempts = *attempts, since_ms = since.elapsed().as_millis() as u64, "the store has not recovered yet");
                        wait = (wait * 2).min(STORE_RETRY_MAX);
                    }
                }
            }
        })
    })
}

/// Records the end of a store outage.
async fn store_recovered(k: &Core, since: Instant, cause: &str, attempts: u32) {
    let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(outage_ms = ms, attempts, "the store takes writes again");
    let e = NewEvent::system(kinds::STORE_RECOVERED, "solo").payload(json!({
        "cause": cause,
        "outage_ms": ms,
        "attempts": attempts,
    }));
    k.record(vec![e], "the store's recovery").await;
}

/// Checks the event log (dense ids, hash chain) and records `event_log_verified`; a
/// broken chain is logged as an error with the first bad id.
async fn verify_log(k: &Core) {
    let started = Instant::now();
    let report = match views::verify(k).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the event log could not be verified");
            return;
        }
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match report.first_broken_id {
        None => tracing::info!(checked = report.checked, ms, "event log verified"),
        Some(id) => tracing::error!(
            first_broken_id = id,
            reason = report.reason.as_deref().unwrap_or(""),
            "the event log's hash chain is broken"
        ),
    }
    let mut payload = serde_json::to_value(&report).unwrap_or_default();
    payload["ms"] = json!(ms);
    let e = NewEvent::system(kinds::EVENT_LOG_VERIFIED, "solo").payload(payload);
    k.record(vec![e], "the log verification").await;
}

fn report_gauges(k: &Core) {
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(m::EVENTS_LAST_ID).set(k.store.last_id() as f64);
    let mut by_state: HashMap<ServiceState, u64> = HashMap::new();
    let mut parked = 0u64;
    for slot in &k.services {
        if let Slot::Running(e) | Slot::Stopping(e) = slot.value() {
            *by_state.entry(e.state()).or_default() += 1;
            parked += u64::from(e.parked.load(Ordering::Relaxed));
        }
    }
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(m::SERVICES_PARKED).set(parked as f64);
    for (state, n) in by_state {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(m::SERVICES, "state" => state.as_str()).set(n as f64);
    }
}

/// Records a restart, failure or escalation in the system tree.
fn on_system_event(k: &Core, e: SupervisorEvent) {
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
    drop(k.store.append(vec![event]));
}

/// Changes a runtime-tunable setting (admin only) and records `config_changed`.
pub(crate) async fn set_config(
    k: &Core,
    caller: &Caller,
    key: &str,
    value: &str,
) -> Result<ConfigChange, KernelError> {
    if !caller.is_admin() {
        return Err(KernelError::admin_only(
            "changing the runtime configuration",
        ));
    }
    let (tunable, value) = Tunables::parse(key, value)?;
    let _one_at_a_time = k.tunables.changing.lock().await;
    let previous = k.tunables.get(tunable);
    let mut batch = WriteBatch::new();
    batch
        .put(records::RUNTIME_CONFIG, key, value.to_string())
        .stage("record the configuration change")?;
    batch.event(
        NewEvent::system(kinds::CONFIG_CHANGED, "solo").payload(json!({
            "key": key,
            "value": value,
            "previous": previous,
            "by": caller.tenant_id(),
        })),
    );
    k.store
        .commit(batch)
        .await
        .stage("record the configuration change")?;
    k.tunables.replace(tunable, value);
    apply_to_sandbox(k);
    tracing::info!(key, value, previous, "runtime configuration changed");
    Ok(ConfigChange {
        key: key.to_string(),
        value,
        previous,
    })
}

/// Hands the sandbox the settings it enforces itself.
pub(crate) fn apply_to_sandbox(k: &Core) {
    k.sandbox
        .set_max_cpu_per_message(Duration::from_millis(k.tunables.get(Key::MaxCpuMs)));
}

/// Applies the runtime configuration changes kept in the store, over the configuration
/// the process started with: a change made at run time holds until it is changed again.
/// A kept value this build no longer accepts is skipped with a warning.
pub(crate) fn replay_config(store: &dyn Store, tunables: &Tunables) -> Result<(), KernelError> {
    let rows = store
        .snapshot()
        .stage("read the runtime configuration")?
        .range(
            records::RUNTIME_CONFIG,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
        )
        .stage("read the runtime configuration")?;
    for (key, value) in rows {
        let (key, value) = (
            String::from_utf8_lossy(&key),
            String::from_utf8_lossy(&value),
        );
        match Tunables::parse(&key, &value) {
            Ok((tunable, v)) => {
                let configured = tunables.replace(tunable, v);
                if configured != v {
                    tracing::info!(%key, value = v, configured, "runtime configuration kept from an earlier run");
                }
            }
            Err(e) => {
                tracing::warn!(%key, %value, error = %e, "kept runtime configuration skipped")
            }
        }
    }
    Ok(())
}

/// Asks the binary to shut down within `grace` (admin only).
pub(crate) fn request_shutdown(
    k: &Core,
    caller: &Caller,
    grace: Option<Duration>,
) -> Result<Duration, KernelError> {
    if !caller.is_admin() {
        return Err(KernelError::admin_only("shutdown"));
    }
    let grace = k.config.timeout(grace)?;
    let Some(f) = &k.on_shutdown else {
        return Err(KernelError::Unavailable(
            "this kernel cannot be shut down by a request".into(),
        ));
    };
    f(grace);
    Ok(grace)
}
