//! Tenants and their quotas: one supervisor per tenant (a child of the tree's `tenants`
//! supervisor, created on the tenant's first deploy) and the admission record that
//! reserves a service id and its memory under the tenant's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use solo_supervisor::{
    ChildInfo, ChildSpec, Exit, Intensity, RestartType, Strategy, Supervisor, SupervisorEvent,
    SupervisorSpec,
};
use solo_types::{ServiceId, TenantId};

use crate::config::TenantLimits;
use crate::error::KernelError;

/// Where a tenant supervisor reports its services' restarts and failures.
pub(crate) type OnServiceEvent = Arc<dyn Fn(&TenantId, SupervisorEvent) + Send + Sync>;

/// One tenant: its supervisor and what it has reserved.
pub(crate) struct TenantCtx {
    pub(crate) supervisor: Supervisor,
    admission: Mutex<Admission>,
    /// `resource_violation` events for refused quotas, sampled.
    pub(crate) quota_refused: crate::sampler::Window,
}

#[derive(Default)]
struct Admission {
    services: BTreeSet<ServiceId>,
    memory_mb: u64,
    /// Tool names taken, and by which service.
    tools: BTreeMap<String, ServiceId>,
}

/// What a tenant uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) services: u64,
    pub(crate) memory_mb: u64,
}

/// Every tenant that has deployed.
#[derive(Default)]
pub(crate) struct Tenants {
    map: DashMap<TenantId, Arc<TenantCtx>>,
    /// The tree's `tenants` supervisor and the event sink, set once at start.
    attached: OnceLock<(Supervisor, OnServiceEvent)>,
}

impl Tenants {
    /// Hangs tenant supervisors under `parent` from now on; `on_event` hears their
    /// services' restarts and failures.
    pub(crate) fn attach(&self, parent: Supervisor, on_event: OnServiceEvent) {
        let _ = self.attached.set((parent, on_event));
    }

    pub(crate) fn get(&self, tenant: &TenantId) -> Option<Arc<TenantCtx>> {
        self.map.get(tenant).map(|t| Arc::clone(t.value()))
    }

    /// The context of `tenant`, created (with its supervisor) on first use.
    pub(crate) fn ctx(&self, tenant: &TenantId) -> Arc<TenantCtx> {
        if let Some(t) = self.get(tenant) {
            return t;
        }
        let entry = self
            .map
            .entry(tenant.clone())
            .or_insert_with(|| self.start(tenant));
        Arc::clone(entry.value())
    }

    fn start(&self, tenant: &TenantId) -> Arc<TenantCtx> {
        let on_event = self.attached.get().map(|(_, f)| Arc::clone(f));
        let t = tenant.clone();
        let (sup, handle) = Supervisor::start(
            SupervisorSpec {
                name: tenant.to_string(),
                strategy: Strategy::OneForOne,
                // Services carry their own intensity; the tenant never escalates.
                intensity: Intensity::new(u32::MAX, Duration::from_secs(1)),
                on_event: Arc::new(move |e| {
                    if let Some(f) = &on_event {
                        f(&t, e);
                    }
                }),
            },
            Vec::new(),
        );
        // The tenant's supervisor is a child of the tenants supervisor.
        if let Some((parent, _)) = self.attached.get() {
            let parent = parent.clone();
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
                                return Exit::Normal;
                            };
                            tokio::select! {
                                () = ctx.shutdown.cancelled() => {
                                    sup.shutdown().await;
                                    Exit::Shutdown
                                }
                                _ = &mut handle => Exit::Normal,
                            }
                        })
                    }),
                };
                let _ = parent.add_child(child).await;
            });
        }
        Arc::new(TenantCtx {
            supervisor: sup,
            admission: Mutex::new(Admission::default()),
            quota_refused: crate::sampler::Window::default(),
        })
    }

    /// The tenant's service ids, sorted.
    pub(crate) fn service_ids(&self, tenant: &TenantId) -> Vec<ServiceId> {
        self.get(tenant)
            .map(|t| t.admission.lock().services.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The supervisor's view of the tenant's services.
    pub(crate) fn children(&self, tenant: &TenantId) -> Vec<ChildInfo> {
        self.get(tenant)
            .map(|t| t.supervisor.children())
            .unwrap_or_default()
    }

    /// Undoes a reservation (a deploy that did not complete, a kill).
    pub(crate) fn release(&self, tenant: &TenantId, service: &ServiceId, memory_mb: u32) {
        if let Some(t) = self.get(tenant) {
            let mut a = t.admission.lock();
            a.services.remove(service);
            a.memory_mb = a.memory_mb.saturating_sub(memory_mb.into());
            a.tools.retain(|_, s| s != service);
        }
    }

    /// What `tenant` uses now.
    pub(crate) fn usage(&self, tenant: &TenantId) -> Usage {
        self.get(tenant).map_or_else(Usage::default, |t| {
            let a = t.admission.lock();
            Usage {
                services: a.services.len() as u64,
                memory_mb: a.memory_mb,
            }
        })
    }
}

impl TenantCtx {
    /// Reserves `service` and `memory_mb` within `limits`; `claim` (run under the same
    /// lock) takes the id, or refuses.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reserve(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
        memory_mb: u32,
        tool: Option<&str>,
        limits: &TenantLimits,
        claim: impl FnOnce() -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let mut a = self.admission.lock();
        if let Some(other) = tool.and_then(|t| a.tools.get(t)) {
            return Err(KernelError::AlreadyExists(format!(
                "tenant {tenant} already has a tool named {:?}: service {other}",
                tool.unwrap_or_default()
            )));
        }
        if a.services.len() >= limits.max_services_per_tenant as usize {
            return Err(KernelError::ResourceExhausted {
                reason: "quota_exceeded",
                message: format!(
                    "tenant {tenant} has {} services, its limit",
                    limits.max_services_per_tenant
                ),
            });
        }
        if a.memory_mb + u64::from(memory_mb) > limits.max_memory_mb_per_tenant {
            return Err(KernelError::ResourceExhausted {
                reason: "quota_exceeded",
                message: format!(
                    "tenant {tenant} would use more than its {} MiB of service memory",
                    limits.max_memory_mb_per_tenant
                ),
            });
        }
        claim()?;
        a.services.insert(service.clone());
        a.memory_mb += u64::from(memory_mb);
        if let Some(t) = tool {
            a.tools.insert(t.to_string(), service.clone());
        }
        Ok(())
    }

    /// Records a service brought back at start (no quota check: it was admitted once).
    pub(crate) fn readmit(&self, service: &ServiceId, memory_mb: u32, tool: Option<&str>) {
        let mut a = self.admission.lock();
        a.services.insert(service.clone());
        a.memory_mb += u64::from(memory_mb);
        if let Some(t) = tool {
            a.tools.insert(t.to_string(), service.clone());
        }
    }
}
