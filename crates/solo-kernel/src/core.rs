//! The state every verb shares: the store, the sandbox, the configuration and the clock,
//! the registry of services, and the subsystems, each owning its own state. Verbs
//! (`deploy.rs`, `calls.rs`, `kill.rs`, ...) are functions over a `&Core`; the facade in
//! `lib.rs` holds one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use solo_sandbox::Sandbox;
use solo_store::Store;
use solo_types::clock::SharedClock;
use solo_types::{NewEvent, Permission, Resource, ServiceId, ServiceState, TenantId};

use crate::api::Recovery;
use crate::caller::Caller;
use crate::capabilities::Capabilities;
use crate::config::KernelConfig;
use crate::discovery::Registry;
use crate::entry::ServiceEntry;
use crate::error::KernelError;
use crate::failed::FailedDeploys;
use crate::monitor::Monitor;
use crate::secrets::Secrets;
use crate::shedder::Shedder;
use crate::tenants::Tenants;
use crate::tree::Tree;
use crate::tunables::Tunables;

/// A service's key: its tenant and id.
pub(crate) type ServiceKey = (TenantId, ServiceId);

/// A service's place in the registry.
#[derive(Clone)]
pub(crate) enum Slot {
    /// Reserved while a deploy compiles and starts the service.
    Deploying,
    Running(Arc<ServiceEntry>),
    /// Being killed: refuses new messages and deploys of the same id.
    Stopping(Arc<ServiceEntry>),
}

/// What the binary asks the kernel to do when an admin requests a shutdown.
pub(crate) type OnShutdown = Arc<dyn Fn(Duration) + Send + Sync>;

/// The shared state.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) config: KernelConfig,
    pub(crate) clock: SharedClock,
    pub(crate) services: DashMap<ServiceKey, Slot>,
    pub(crate) tenants: Tenants,
    pub(crate) tunables: Arc<Tunables>,
    pub(crate) shedder: Shedder,
    pub(crate) monitor: Monitor,
    pub(crate) secrets: Secrets,
    pub(crate) caps: Capabilities,
    pub(crate) registry: Registry,
    pub(crate) egress: crate::egress::Egress,
    /// Deploys that failed lately, for `status`.
    pub(crate) failed: FailedDeploys,
    pub(crate) tree: OnceLock<Tree>,
    pub(crate) recovery: Mutex<Recovery>,
    pub(crate) on_shutdown: Option<OnShutdown>,
    pub(crate) started: Instant,
    /// False once shutdown began: new deploys, calls, casts and swaps are refused.
    pub(crate) accepting: AtomicBool,
    /// `service_hibernated` and `service_woke` events, sampled over all services.
    pub(crate) sleep_events: crate::sampler::Window,
    /// The awake services (their instance holds a pool slot), by entry address: where
    /// the least recently used are found when the pool is full.
    pub(crate) awake: DashMap<usize, std::sync::Weak<ServiceEntry>>,
    /// Held while one caller makes room in the pool; others wait for its result.
    /// When room was last made.
    pub(crate) making_room: tokio::sync::Mutex<Option<Instant>>,
    /// The cluster node this kernel runs on (none on an embedded server).
    pub(crate) node: Option<String>,
    /// The cluster's membership (none on an embedded server).
    pub(crate) members: Option<crate::system::Members>,
    /// Which tenants this kernel serves (`None`: all).
    pub(crate) serves: Option<crate::system::Serves>,
    /// Carries a service's call to a tenant served on another node (none: nowhere).
    pub(crate) elsewhere: Option<crate::cluster::Elsewhere>,
    /// The last event before this kernel read its state from the store.
    pub(crate) loaded_after: u64,
    /// Itself, for the closures it hands to supervisors and instances.
    pub(crate) me: Weak<Core>,
}

impl Core {
    pub(crate) fn check_accepting(&self) -> Result<(), KernelError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(KernelError::shutting_down())
        }
    }

    /// The entry of a live (running or stopping) service.
    pub(crate) fn running(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
    ) -> Option<Arc<ServiceEntry>> {
        match self
            .services
            .get(&(tenant.clone(), service.clone()))?
            .value()
        {
            Slot::Running(e) | Slot::Stopping(e) => Some(Arc::clone(e)),
            Slot::Deploying => None,
        }
    }

    /// Whether `service` of `tenant` is deployed and not being killed.
    pub(crate) fn is_deployed(&self, tenant: &TenantId, service: &ServiceId) -> bool {
        matches!(
            self.services
                .get(&(tenant.clone(), service.clone()))
                .as_deref(),
            Some(Slot::Running(_))
        )
    }

    /// Whether `service` of `tenant` is deployed and alive (running or restarting).
    pub(crate) fn is_alive(&self, tenant: &TenantId, service: &ServiceId) -> bool {
        matches!(
            self.services.get(&(tenant.clone(), service.clone())).as_deref(),
            Some(Slot::Running(e)) if e.state().is_alive()
        )
    }

    /// A live service's status, naming the node it runs on.
    pub(crate) fn status_of(&self, e: &ServiceEntry) -> solo_types::ServiceStatus {
        solo_types::ServiceStatus {
            node: self.node.clone(),
            ..e.status()
        }
    }

    /// The caller's live service, or not found.
    pub(crate) fn entry(
        &self,
        caller: &Caller,
        service: &ServiceId,
    ) -> Result<Arc<ServiceEntry>, KernelError> {
        self.running(caller.tenant_id(), service)
            .ok_or_else(|| KernelError::not_found(service))
    }

    /// Whether this kernel serves `tenant` (on a cluster node: it is placed here).
    pub(crate) fn serves(&self, tenant: &TenantId) -> bool {
        self.serves.as_ref().is_none_or(|serves| serves(tenant))
    }

    /// Refuses a request of a tenant this kernel does not serve (an admin's passes): on
    /// a cluster, another node runs its services, and serving it here too would run
    /// them twice.
    pub(crate) fn placed_here(&self, caller: &Caller) -> Result<(), KernelError> {
        let tenant = caller.tenant_id();
        if caller.is_admin() || self.serves(tenant) {
            return Ok(());
        }
        Err(KernelError::Refused {
            code: solo_types::Code::Unavailable,
            reason: "not_placed_here",
            message: format!(
                "tenant {tenant} is not placed on this node{}; retry (the cluster routes \
                 each request to the node that serves its tenant)",
                self.node
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        })
    }

    /// Why the caller's last deploy of `service` failed, as a refusal, if it did lately
    /// and nothing runs under the id now.
    pub(crate) fn failed_deploy(
        &self,
        caller: &Caller,
        service: &ServiceId,
    ) -> Option<KernelError> {
        let mut f = self
            .failed
            .get(caller.tenant_id(), service, self.clock.now())?;
        if caller.scope().is_some() {
            // What the guest said may carry what a token may not read.
            f.reason = "the details are in the service's events".into();
        }
        Some(KernelError::Refused {
            code: solo_types::Code::FailedPrecondition,
            reason: "deployment_failed",
            message: format!(
                "the last deploy of service {service} failed at stage {} ({} s ago): {}; \
                 deploy it again once fixed",
                f.stage,
                self.clock.now().saturating_duration_since(f.at).as_secs(),
                f.reason
            ),
        })
    }

    /// The caller's service if it can take a message now.
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

    /// Undoes a reservation (a deploy that did not complete, a kill).
    pub(crate) fn release(&self, tenant: &TenantId, service: &ServiceId, memory_mb: u32) {
        self.services.remove(&(tenant.clone(), service.clone()));
        self.tenants.release(tenant, service, memory_mb);
    }

    /// Checks that `caller` may use `permission` on `resource`, recording a token's
    /// refusal (see [`Caller::require_audited`]).
    pub(crate) fn require(
        &self,
        caller: &Caller,
        resource: &Resource,
        permission: Permission,
    ) -> Result<(), KernelError> {
        caller.require_audited(self.store.as_ref(), self.caps.caps(), resource, permission)
    }

    /// Refuses an operation that must write while the store takes none, before the
    /// operation changes anything (a kill that could not be recorded would otherwise stop
    /// a service that comes back at the next start).
    pub(crate) fn writable(&self) -> Result<(), KernelError> {
        match self.store.fault() {
            None => Ok(()),
            Some(cause) => Err(KernelError::store_unavailable(&cause)),
        }
    }

    /// Appends `events` in the background (queued in order now; nobody waits for the
    /// disk), logging a failure as `what`.
    pub(crate) fn record_later(&self, events: Vec<NewEvent>, what: &'static str) {
        let fut = self.store.append(events);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(error = %e, "could not record {what}");
            }
        });
    }

    /// Appends `events` and waits until they are durable, logging a failure as `what`.
    pub(crate) async fn record(&self, events: Vec<NewEvent>, what: &'static str) {
        if let Err(e) = self.store.append(events).await {
            tracing::error!(error = %e, "could not record {what}");
        }
    }

    /// Checks that `text` (a request, message or config) is JSON within the size limit.
    pub(crate) fn check_message(&self, what: &str, text: &str) -> Result<(), KernelError> {
        let limit = self.config.limits.max_message_bytes;
        if text.len() > limit {
            return Err(KernelError::InvalidArgument(format!(
                "the {what} is {} bytes, over the limit of {limit}",
                text.len()
            )));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| KernelError::invalid_json(format!("the {what} is not JSON: {e}")))?;
        Ok(())
    }
}
