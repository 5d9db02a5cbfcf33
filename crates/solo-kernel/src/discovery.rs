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

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use solo_caps::Caps;
use solo_store::{Store, WriteBatch};
use solo_types::api::{Discovered, RegisterRequest};
use solo_types::clock::SharedClock;
use solo_types::{NewEvent, Permission, Resource, ServiceId, TenantId, kinds};

use crate::caller::Caller;
use crate::error::KernelError;
use crate::error::Stage;

/// Registrations: `tenant \0 handle` → [`Registration`] (JSON).
pub const REGISTRATIONS: &str = "registrations";

/// The most registrations a tenant may hold.
pub const MAX_PER_TENANT: usize = 10_000;
const MAX_METADATA: usize = 64;
const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;

/// One registration, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
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
        .map_err(|e| KernelError::internal("draw a registration handle", e))?;
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

/// The registrations: durable in the store, indexed in memory as tenant → handle →
/// registration.
pub(crate) struct Registry {
    store: Arc<dyn Store>,
    /// Where a token's refusals are sampled.
    caps: Arc<Caps>,
    clock: SharedClock,
    tenants: dashmap::DashMap<TenantId, BTreeMap<String, Registration>>,
}

impl Registry {
    /// Loads every stored registration.
    pub(crate) fn load(
        store: Arc<dyn Store>,
        clock: SharedClock,
        caps: Arc<Caps>,
    ) -> Result<Self, KernelError> {
        let snap = store.snapshot().stage("read the registrations")?;
        let rows = snap
            .range(
                REGISTRATIONS,
                Bound::Unbounded,
                Bound::Unbounded,
                usize::MAX,
            )
            .stage("read the registrations")?;
        drop(snap);
        let me = Self {
            store,
            clock,
            caps,
            tenants: dashmap::DashMap::new(),
        };
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
    pub(crate) fn resolve(&self, tenant: &TenantId, name: &str) -> Option<ServiceId> {
        let now = self.clock.now_ns();
        self.tenants.get(tenant).and_then(|m| {
            m.values()
                .find(|r| r.name == name && (r.expires_at == 0 || r.expires_at > now))
                .map(|r| r.service_id.clone())
        })
    }

    /// `tenant`'s unexpired registrations (under `name` when given), sorted; `alive`
    /// says whether a service runs now.
    pub(crate) fn registrations(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        alive: impl Fn(&ServiceId) -> bool,
    ) -> Vec<Discovered> {
        let now = self.clock.now_ns();
        let mut out: Vec<Discovered> = self
            .of(tenant)
            .into_iter()
            .filter(|r| r.expires_at == 0 || r.expires_at > now)
            .filter(|r| name.is_none_or(|n| r.name == n))
            .map(|r| Discovered {
                alive: alive(&r.service_id),
                service_id: r.service_id,
                service_handle: r.handle,
                service_name: r.name,
                version: r.version,
                metadata: r.metadata,
                expires_at: r.expires_at,
            })
            .collect();
        out.sort_by(|a, b| (&a.service_name, &a.service_id).cmp(&(&b.service_name, &b.service_id)));
        out
    }

    /// Registers one of the caller's services under a name; `running` says whether the
    /// service exists and runs.
    pub(crate) async fn register(
        &self,
        caller: &Caller,
        req: RegisterRequest,
        running: impl Fn(&ServiceId) -> bool,
    ) -> Result<Registration, KernelError> {
        let service = ServiceId::new(req.service_id.as_str())
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Service(service.clone()),
            Permission::Register,
        )?;
        let tenant = caller.tenant_id().clone();
        if !running(&service) {
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
            .of(&tenant)
            .into_iter()
            .find(|r| r.service_id == service && r.name == req.name);
        if existing.is_none() && self.of(&tenant).len() >= MAX_PER_TENANT {
            return Err(KernelError::ResourceExhausted {
                reason: "quota_exceeded",
                message: format!("tenant {tenant} has {MAX_PER_TENANT} registrations, its limit"),
            });
        }
        let now = self.clock.now_ns();
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
        batch
            .put(
                REGISTRATIONS,
                key(&tenant, &r.handle),
                serde_json::to_vec(&r).stage("encode the registration")?,
            )
            .stage("record the registration")?;
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
        self.store
            .commit(batch)
            .await
            .stage("record the registration")?;
        self.insert(r.clone());
        Ok(r)
    }

    /// Removes the caller's registration `handle`; idempotent (`false`: there was none
    /// in the caller's tenant). Needs `register` on its service.
    pub(crate) async fn deregister(
        &self,
        caller: &Caller,
        handle: &str,
    ) -> Result<bool, KernelError> {
        let tenant = caller.tenant_id();
        let Some(r) = self
            .tenants
            .get(tenant)
            .and_then(|m| m.get(handle).cloned())
        else {
            return Ok(false);
        };
        caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Service(r.service_id.clone()),
            Permission::Register,
        )?;
        let mut batch = WriteBatch::new();
        batch
            .delete(REGISTRATIONS, key(tenant, &r.handle))
            .stage("deregister the service")?;
        batch.event(deregistered(&r, "deregistered"));
        self.store
            .commit(batch)
            .await
            .stage("record the deregistration")?;
        self.remove(tenant, &r.handle);
        Ok(true)
    }

    /// Adds the removal of `service`'s registrations to `batch` (a kill).
    pub(crate) fn deregister_service(
        &self,
        batch: &mut WriteBatch,
        tenant: &TenantId,
        service: &ServiceId,
    ) -> Result<Vec<Registration>, KernelError> {
        let gone = self.of_service(tenant, service);
        for r in &gone {
            batch
                .delete(REGISTRATIONS, key(tenant, &r.handle))
                .stage("deregister the service")?;
            batch.event(deregistered(r, "service_killed"));
        }
        Ok(gone)
    }

    pub(crate) fn forget(&self, gone: &[Registration]) {
        for r in gone {
            self.remove(&r.tenant, &r.handle);
        }
    }

    /// Reads `tenant`'s registrations again from the store (another node of a cluster,
    /// which served the tenant before, may have changed them).
    pub(crate) fn reload_tenant(&self, tenant: &TenantId) -> Result<(), KernelError> {
        let from = key(tenant, "");
        let mut to = tenant.as_str().as_bytes().to_vec();
        to.push(1);
        let rows = self
            .store
            .snapshot()
            .and_then(|snap| {
                snap.range(
                    REGISTRATIONS,
                    Bound::Included(from.as_slice()),
                    Bound::Excluded(to.as_slice()),
                    usize::MAX,
                )
            })
            .stage("read the registrations")?;
        let mut mine = BTreeMap::new();
        for (_, v) in rows {
            if let Ok(r) = serde_json::from_slice::<Registration>(&v)
                && &r.tenant == tenant
            {
                mine.insert(r.handle.clone(), r);
            }
        }
        self.tenants.insert(tenant.clone(), mine);
        Ok(())
    }

    /// Deletes every expired registration of the tenants `serves` names (the
    /// `discovery` component; on a cluster, each node sweeps the tenants placed on it).
    pub(crate) async fn sweep(
        &self,
        serves: impl Fn(&TenantId) -> bool,
    ) -> Result<usize, KernelError> {
        let now = self.clock.now_ns();
        let expired: Vec<Registration> = self
            .tenants
            .iter()
            .filter(|m| serves(m.key()))
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
            batch
                .delete(REGISTRATIONS, key(&r.tenant, &r.handle))
                .stage("sweep expired registrations")?;
            batch.event(deregistered(r, "expired"));
        }
        self.store
            .commit(batch)
            .await
            .stage("sweep expired registrations")?;
        self.forget(&expired);
        Ok(expired.len())
    }
}
