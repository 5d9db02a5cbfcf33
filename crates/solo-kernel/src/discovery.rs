//! Service discovery: a tenant's services registered under names, with a version, a
//! metadata map and an optional time to live.
//!
//! Registrations are durable (table `registrations`) and kept in memory per tenant;
//! only the caller's tenant is ever searched. Re-registering the same service under the
//! same name replaces the registration (and keeps its handle). Expired registrations
//! are swept by the `discovery` component; a killed service's registrations go with it.
//! Every change is an event (`service_registered`, `service_deregistered`).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::json;
use solo_store::WriteBatch;
use solo_types::{NewEvent, Permission, Resource, ServiceId, TenantId, kinds};

use crate::{Caller, Kernel, KernelError, KernelInner, Slot};

/// Registrations: `tenant \0 handle` → [`Registration`] (JSON).
pub const REGISTRATIONS: &str = "registrations";

/// The most registrations a tenant may hold.
pub const MAX_PER_TENANT: usize = 10_000;
const MAX_METADATA: usize = 64;
const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// 32 hex digits.
    pub handle: String,
    pub tenant: TenantId,
    pub service_id: ServiceId,
    pub name: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    /// UTC ns; 0 is permanent.
    pub expires_at: i64,
    pub registered_at: i64,
}

/// A registration as discovery returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub registration: Registration,
    /// Whether its service is running now.
    pub alive: bool,
}

/// What `register` asks for.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    pub service_id: String,
    pub name: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    /// Zero is permanent.
    pub ttl_seconds: i64,
}

fn key(tenant: &TenantId, handle: &str) -> Vec<u8> {
    let mut k = tenant.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(handle.as_bytes());
    k
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn new_handle() -> Result<String, KernelError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| KernelError::Internal(format!("the OS random source failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn deregistered(r: &Registration, reason: &str) -> NewEvent {
    NewEvent::service(kinds::SERVICE_DEREGISTERED, &r.tenant, &r.service_id).payload(json!({
        "handle": r.handle,
        "name": r.name,
        "service_id": r.service_id,
        "reason": reason,
    }))
}

/// The in-memory index: tenant → handle → registration.
#[derive(Default)]
pub(crate) struct Registry {
    tenants: dashmap::DashMap<TenantId, BTreeMap<String, Registration>>,
}

impl Registry {
    /// Loads every stored registration.
    pub(crate) fn load(store: &dyn solo_store::Kv) -> Result<Self, KernelError> {
        let snap = store.snapshot()?;
        let rows = snap.range(
            REGISTRATIONS,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
        )?;
        let me = Self::default();
        for (k, v) in rows {
            match serde_json::from_slice::<Registration>(&v) {
                Ok(r) => {
                    me.tenants
                        .entry(r.tenant.clone())
                        .or_default()
                        .insert(r.handle.clone(), r);
                }
                Err(e) => tracing::warn!(
                    key = %String::from_utf8_lossy(&k),
                    error = %e,
                    "an unreadable registration was skipped"
                ),
            }
        }
        Ok(me)
    }

    fn of(&self, tenant: &TenantId) -> Vec<Registration> {
        self.tenants
            .get(tenant)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&self, r: Registration) {
        self.tenants
            .entry(r.tenant.clone())
            .or_default()
            .insert(r.handle.clone(), r);
    }

    fn remove(&self, tenant: &TenantId, handle: &str) {
        if let Some(mut m) = self.tenants.get_mut(tenant) {
            m.remove(handle);
        }
    }

    /// The registrations of one service.
    pub(crate) fn of_service(&self, tenant: &TenantId, service: &ServiceId) -> Vec<Registration> {
        self.of(tenant)
            .into_iter()
            .filter(|r| &r.service_id == service)
            .collect()
    }

    /// The service a live, unexpired registration under `name` points to.
    pub(crate) fn resolve(&self, tenant: &TenantId, name: &str, now: i64) -> Option<ServiceId> {
        self.tenants.get(tenant).and_then(|m| {
            m.values()
                .find(|r| r.name == name && (r.expires_at == 0 || r.expires_at > now))
                .map(|r| r.service_id.clone())
        })
    }
}

impl Kernel {
    /// Registers one of the caller's services under a name.
    pub async fn register_service(
        &self,
        caller: &Caller,
        req: RegisterRequest,
    ) -> Result<Registration, KernelError> {
        self.inner.register(caller, req).await
    }

    /// The caller's live, unexpired registrations under `name` whose metadata has every
    /// pair of `filters`.
    pub fn discover(
        &self,
        caller: &Caller,
        name: &str,
        filters: &BTreeMap<String, String>,
    ) -> Result<Vec<Discovered>, KernelError> {
        Ok(self
            .registrations(caller, Some(name))?
            .into_iter()
            .filter(|d| {
                d.alive
                    && filters
                        .iter()
                        .all(|(k, v)| d.registration.metadata.get(k) == Some(v))
            })
            .collect())
    }

    /// The caller's unexpired registrations (under `name` when given).
    pub fn registrations(
        &self,
        caller: &Caller,
        name: Option<&str>,
    ) -> Result<Vec<Discovered>, KernelError> {
        caller.require(&Resource::Kernel, Permission::Read)?;
        let now = crate::access::now_ns();
        Ok(self
            .inner
            .registered(caller.tenant_id(), now)
            .into_iter()
            .filter(|d| name.is_none_or(|n| d.registration.name == n))
            .collect())
    }
}

impl KernelInner {
    fn registered(&self, tenant: &TenantId, now: i64) -> Vec<Discovered> {
        let mut out: Vec<Discovered> = self
            .registry
            .of(tenant)
            .into_iter()
            .filter(|r| r.expires_at == 0 || r.expires_at > now)
            .map(|r| {
                let alive = matches!(
                    self.services.get(&(tenant.clone(), r.service_id.clone())).as_deref(),
                    Some(Slot::Running(e)) if e.state().is_alive()
                );
                Discovered {
                    registration: r,
                    alive,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.registration.name, &a.registration.service_id)
                .cmp(&(&b.registration.name, &b.registration.service_id))
        });
        out
    }

    async fn register(
        &self,
        caller: &Caller,
        req: RegisterRequest,
    ) -> Result<Registration, KernelError> {
        let service = ServiceId::new(req.service_id.as_str())
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        caller.require(&Resource::Service(service.clone()), Permission::Register)?;
        let tenant = caller.tenant_id().clone();
        if !matches!(
            self.services
                .get(&(tenant.clone(), service.clone()))
                .as_deref(),
            Some(Slot::Running(_))
        ) {
            return Err(KernelError::not_found(&service));
        }
        if !valid_name(&req.name) {
            return Err(KernelError::InvalidArgument(format!(
                "service name {:?}: use 1 to 128 of [A-Za-z0-9_.-]",
                req.name
            )));
        }
        if req.version.len() > 64 {
            return Err(KernelError::InvalidArgument(
                "the version is longer than 64 bytes".into(),
            ));
        }
        if req.metadata.len() > MAX_METADATA
            || req
                .metadata
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
        {
            return Err(KernelError::InvalidArgument(format!(
                "metadata: at most {MAX_METADATA} pairs, keys of 1 to 128 bytes, values up to 1024"
            )));
        }
        if !(0..=MAX_TTL_SECONDS).contains(&req.ttl_seconds) {
            return Err(KernelError::InvalidArgument(format!(
                "ttl_seconds must be between 0 (permanent) and {MAX_TTL_SECONDS}"
            )));
        }
        let existing = self
            .registry
            .of(&tenant)
            .into_iter()
            .find(|r| r.service_id == service && r.name == req.name);
        if existing.is_none() && self.registry.of(&tenant).len() >= MAX_PER_TENANT {
            return Err(KernelError::ResourceExhausted {
                reason: "quota_exceeded",
                message: format!("tenant {tenant} has {MAX_PER_TENANT} registrations, its limit"),
            });
        }
        let now = crate::access::now_ns();
        let handle = match &existing {
            Some(r) => r.handle.clone(),
            None => new_handle()?,
        };
        let r = Registration {
            handle,
            tenant: tenant.clone(),
            service_id: service.clone(),
            name: req.name,
            version: req.version,
            metadata: req.metadata,
            expires_at: if req.ttl_seconds == 0 {
                0
            } else {
                now.saturating_add(req.ttl_seconds.saturating_mul(1_000_000_000))
            },
            registered_at: now,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            REGISTRATIONS,
            key(&tenant, &r.handle),
            serde_json::to_vec(&r).map_err(|e| KernelError::Internal(e.to_string()))?,
        )?;
        batch.event(
            NewEvent::service(kinds::SERVICE_REGISTERED, &tenant, &service).payload(json!({
                "handle": r.handle,
                "name": r.name,
                "service_id": service,
                "version": r.version,
                "ttl_seconds": req.ttl_seconds,
                "replaced": existing.is_some(),
            })),
        );
        self.store.commit(batch).await?;
        self.registry.insert(r.clone());
        Ok(r)
    }

    /// Adds the removal of `service`'s registrations to `batch` (a kill).
    pub(crate) fn deregister_service(
        &self,
        batch: &mut WriteBatch,
        tenant: &TenantId,
        service: &ServiceId,
    ) -> Result<Vec<Registration>, KernelError> {
        let gone = self.registry.of_service(tenant, service);
        for r in &gone {
            batch.delete(REGISTRATIONS, key(tenant, &r.handle))?;
            batch.event(deregistered(r, "service_killed"));
        }
        Ok(gone)
    }

    pub(crate) fn forget(&self, gone: &[Registration]) {
        for r in gone {
            self.registry.remove(&r.tenant, &r.handle);
        }
    }

    /// Deletes every expired registration.
    pub(crate) async fn sweep_registrations(&self, now: i64) -> Result<usize, KernelError> {
        let expired: Vec<Registration> = self
            .registry
            .tenants
            .iter()
            .flat_map(|m| {
                m.values()
                    .filter(|r| r.expires_at != 0 && r.expires_at <= now)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for r in &expired {
            batch.delete(REGISTRATIONS, key(&r.tenant, &r.handle))?;
            batch.event(deregistered(r, "expired"));
        }
        self.store.commit(batch).await?;
        self.forget(&expired);
        Ok(expired.len())
    }
}
