//! The load shedder: every request a face serves first takes a token of its tenant's
//! bucket (`limits.rate_per_tenant` per second, `limits.burst_per_tenant` at most; an
//! admin's requests are not rate-limited), then holds a [`Permit`] while it runs. Out of
//! tokens, a request is refused at once with `RESOURCE_EXHAUSTED` (`rate_limited`, with
//! the seconds until the next token); over the tenant's in-flight limit or the global
//! one, with `load_shed` (retry in 1 s). One tenant's flood costs the others nothing but
//! the refusals. `load_shed` events are sampled: at most one per tenant per second,
//! carrying the scope (`rate`, `tenant`, `global`) and how many were shed since the last.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use dashmap::DashMap;
use serde_json::json;
use solo_store::Store;
use solo_types::clock::SharedClock;
use solo_types::{NewEvent, TenantId, kinds, metric_names as m};

use crate::bucket::TokenBucket;
use crate::error::KernelError;
use crate::tunables::{Key, Tunables};

/// A request's place in the in-flight counts; released when dropped.
#[derive(Debug)]
pub struct Permit {
    tenant: Arc<Load>,
    total: Arc<AtomicU32>,
}

/// One tenant's requests: in flight, and its token bucket.
#[derive(Debug, Default)]
struct Load {
    in_flight: AtomicU32,
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    tokens: TokenBucket,
    /// Until when the last refusal told the tenant to wait.
    hinted_until: Option<Instant>,
}

/// Why a request found no token: how long until the next one, and whether the tenant
/// was refused again before the wait it was told had passed (it ignores the hints).
struct Empty {
    wait: Duration,
    ignoring: bool,
}

impl Load {
    /// Takes a token at `now`, or says how long until there is one.
    fn take(&self, now: Instant, rate: u64, burst: u64) -> Result<(), Empty> {
        #[allow(clippy::cast_precision_loss)] // rates and bursts are far below 2^52
        let (rate, burst) = (rate as f64, burst as f64);
        let mut b = self.bucket.lock();
        let Err(wait) = b.tokens.take(now, rate, burst) else {
            return Ok(());
        };
        let ignoring = b.hinted_until.is_some_and(|t| now < t);
        if !ignoring {
            b.hinted_until = Some(now + whole_seconds(wait));
        }
        Err(Empty { wait, ignoring })
    }
}

/// `d` rounded up to whole seconds (at least one), as a retry hint says it.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.tenant.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The in-flight counts and the sampling of `load_shed` events.
pub struct Shedder {
    tunables: Arc<Tunables>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    total: Arc<AtomicU32>,
    tenants: DashMap<TenantId, Arc<Load>>,
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

    /// Admits one request of `tenant` (with a token of its bucket when `rate_limited`),
    /// or refuses it with `rate_limited` or `load_shed`.
    pub fn admit(&self, tenant: &TenantId, rate_limited: bool) -> Result<Permit, KernelError> {
        let per_tenant = self.tunables.get(Key::MaxPerTenant);
        let total_limit = self.tunables.get(Key::MaxTotal);
        let counter = match self.tenants.get(tenant) {
            Some(c) => Arc::clone(c.value()),
            None => Arc::clone(self.tenants.entry(tenant.clone()).or_default().value()),
        };
        let rate = self.tunables.get(Key::RatePerTenant);
        if rate_limited && rate > 0 {
            let burst = self.tunables.get(Key::BurstPerTenant);
            if let Err(empty) = counter.take(self.clock.now(), rate, burst) {
                metrics::counter!(m::LOAD_SHED, "scope" => "rate").increment(1);
                self.sample(tenant, "rate", rate);
                let retry_after = whole_seconds(empty.wait).as_secs();
                return Err(KernelError::RateLimited {
                    message: format!(
                        "tenant {tenant} is over its rate of {rate} requests per second \
                         (burst {burst}); retry in {retry_after} s"
                    ),
                    retry_after,
                    ignoring: empty.ignoring,
                });
            }
        }
        let mine = u64::from(counter.in_flight.fetch_add(1, Ordering::AcqRel)) + 1;
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
