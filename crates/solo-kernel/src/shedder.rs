//! The load shedder: every request a face serves holds a [`Permit`] while it runs; over
//! the tenant's in-flight limit or the global one, a request is refused at once with
//! `RESOURCE_EXHAUSTED` (`load_shed`, retry in 1 s), so one tenant's flood costs the
//! others nothing but the refusals. `load_shed` events are sampled: at most one per
//! tenant per second, carrying how many were shed since the last.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::json;
use solo_store::Store;
use solo_types::clock::SharedClock;
use solo_types::{NewEvent, TenantId, kinds, metric_names as m};

use crate::error::KernelError;
use crate::tunables::{Key, Tunables};

/// A request's place in the in-flight counts; released when dropped.
#[derive(Debug)]
pub struct Permit {
    tenant: Arc<AtomicU32>,
    total: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.tenant.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The in-flight counts and the sampling of `load_shed` events.
pub struct Shedder {
    tunables: Arc<Tunables>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    total: Arc<AtomicU32>,
    tenants: DashMap<TenantId, Arc<AtomicU32>>,
    /// Per tenant: when the last `load_shed` event was recorded, and how many requests
    /// were shed since.
    sampled: DashMap<TenantId, (Option<Instant>, u64)>,
}

/// How often a tenant's shedding is recorded at most.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Shedder {
    pub fn new(tunables: Arc<Tunables>, store: Arc<dyn Store>, clock: SharedClock) -> Self {
        Self {
            tunables,
            store,
            clock,
            total: Arc::default(),
            tenants: DashMap::new(),
            sampled: DashMap::new(),
        }
    }

    /// Admits one request of `tenant`, or refuses it with `load_shed`.
    pub fn admit(&self, tenant: &TenantId) -> Result<Permit, KernelError> {
        let per_tenant = self.tunables.get(Key::MaxPerTenant);
        let total_limit = self.tunables.get(Key::MaxTotal);
        let counter = match self.tenants.get(tenant) {
            Some(c) => Arc::clone(c.value()),
            None => Arc::clone(self.tenants.entry(tenant.clone()).or_default().value()),
        };
        let mine = u64::from(counter.fetch_add(1, Ordering::AcqRel)) + 1;
        let all = u64::from(self.total.fetch_add(1, Ordering::AcqRel)) + 1;
        let permit = Permit {
            tenant: counter,
            total: Arc::clone(&self.total),
        };
        let (scope, limit) = if mine > per_tenant {
            ("tenant", per_tenant)
        } else if all > total_limit {
            ("global", total_limit)
        } else {
            return Ok(permit);
        };
        drop(permit);
        metrics::counter!(m::LOAD_SHED, "scope" => scope).increment(1);
        self.sample(tenant, scope, limit);
        Err(KernelError::ResourceExhausted {
            reason: "load_shed",
            message: if scope == "tenant" {
                format!(
                    "tenant {tenant} has {per_tenant} requests in flight, its limit; retry shortly"
                )
            } else {
                format!("Solo has {total_limit} requests in flight, its limit; retry shortly")
            },
        })
    }

    /// Records a `load_shed` event at most once a second per tenant.
    fn sample(&self, tenant: &TenantId, scope: &str, limit: u64) {
        let now = self.clock.now();
        let shed = {
            let mut s = self.sampled.entry(tenant.clone()).or_default();
            s.1 += 1;
            match s.0 {
                Some(last) if now.duration_since(last) < SAMPLE_EVERY => return,
                _ => {
                    s.0 = Some(now);
                    std::mem::take(&mut s.1)
                }
            }
        };
        let e = NewEvent::tenant(kinds::LOAD_SHED, tenant).payload(json!({
            "tenant_id": tenant,
            "scope": scope,
            "limit": limit,
            "shed": shed,
        }));
        let fut = self.store.append(vec![e]);
        tokio::spawn(async move {
            if let Err(err) = fut.await {
                tracing::warn!(error = %err, "could not record load shedding");
            }
        });
    }
}
