//! Flow control (DESIGN §8): the load shedder, per-service circuit breakers, the
//! resource monitor, and the runtime-tunable settings behind them.
//!
//! * **Load shedder.** Every request the gateway serves holds a [`Permit`] while it
//!   runs; over the tenant's in-flight limit or the global one, a request is refused at
//!   once with `RESOURCE_EXHAUSTED` (`load_shed`, retry in 1 s), so one tenant's flood
//!   costs the others nothing but the refusals. `load_shed` events are sampled: at most
//!   one per tenant per second, carrying how many were shed since the last.
//! * **Circuit breaker**, per service, for calls: consecutive crashes or timeouts open
//!   it (calls then fail fast with `circuit_breaker_open`); after the open period one
//!   probe is let through at a time, and enough successes in a row close it. The state
//!   machine is pure ([`Breaker`]) and tested on a fake clock.
//! * **Monitor**: samples memory, open files, services and store size against budgets;
//!   at 80 % it records `resource_pressure_high`, at 90 % `resource_pressure_critical`
//!   (and new deploys are refused), below 80 % again `resource_pressure_normal`.
//! * **Tunables**: the settings above can be changed at run time by an admin
//!   ([`Kernel::set_config`]), each change recorded as `config_changed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use solo_types::{Code, NewEvent, ServiceId, TenantId, kinds, metric_names as m};

use crate::{Caller, Kernel, KernelConfig, KernelError, KernelInner};

/// `[monitor]`: budgets the monitor compares its samples with; zero takes the machine's
/// own limit (memory: its RAM; open files: the process's soft limit) or, for the store,
/// leaves it unwatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub interval_ms: u64,
    pub memory_mb: u64,
    pub open_files: u64,
    pub services: u64,
    pub store_mb: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval_ms: 5000,
            memory_mb: 0,
            open_files: 0,
            services: 10_000,
            store_mb: 0,
        }
    }
}

/// `[breaker]`: the per-service circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive crashes or timeouts that open it.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub open_seconds: u64,
    /// Successful probes in a row that close it.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_seconds: 30,
            close_after: 2,
        }
    }
}

/// The settings an admin may change while Solo runs.
pub(crate) struct Tunables {
    max_per_tenant: AtomicU64,
    max_total: AtomicU64,
    memory_mb: AtomicU64,
    open_files: AtomicU64,
    services: AtomicU64,
    store_mb: AtomicU64,
    breaker_failures: AtomicU64,
    breaker_open_seconds: AtomicU64,
    breaker_close_after: AtomicU64,
}

/// The runtime-tunable keys, in the order `runtime_config` lists them.
pub const TUNABLE_KEYS: [&str; 9] = [
    "limits.max_per_tenant",
    "limits.max_total",
    "monitor.memory_mb",
    "monitor.open_files",
    "monitor.services",
    "monitor.store_mb",
    "breaker.failures",
    "breaker.open_seconds",
    "breaker.close_after",
];

impl Tunables {
    pub(crate) fn new(c: &KernelConfig) -> Self {
        let a = AtomicU64::new;
        Self {
            max_per_tenant: a(u64::from(c.limits.max_per_tenant)),
            max_total: a(u64::from(c.limits.max_total)),
            memory_mb: a(c.monitor.memory_mb),
            open_files: a(c.monitor.open_files),
            services: a(c.monitor.services),
            store_mb: a(c.monitor.store_mb),
            breaker_failures: a(u64::from(c.breaker.failures)),
            breaker_open_seconds: a(c.breaker.open_seconds),
            breaker_close_after: a(u64::from(c.breaker.close_after)),
        }
    }

    fn slot(&self, key: &str) -> Option<(&AtomicU64, u64)> {
        // Each key with its smallest valid value.
        Some(match key {
            "limits.max_per_tenant" => (&self.max_per_tenant, 1),
            "limits.max_total" => (&self.max_total, 1),
            "monitor.memory_mb" => (&self.memory_mb, 0),
            "monitor.open_files" => (&self.open_files, 0),
            "monitor.services" => (&self.services, 0),
            "monitor.store_mb" => (&self.store_mb, 0),
            "breaker.failures" => (&self.breaker_failures, 1),
            "breaker.open_seconds" => (&self.breaker_open_seconds, 0),
            "breaker.close_after" => (&self.breaker_close_after, 1),
            _ => return None,
        })
    }

    fn get(&self, a: &AtomicU64) -> u64 {
        let _ = self;
        a.load(Ordering::Relaxed)
    }

    pub(crate) fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            failures: u32::try_from(self.get(&self.breaker_failures)).unwrap_or(u32::MAX),
            open_for: Duration::from_secs(self.get(&self.breaker_open_seconds)),
            close_after: u32::try_from(self.get(&self.breaker_close_after)).unwrap_or(u32::MAX),
        }
    }
}

// ----- load shedder -------------------------------------------------------------------

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

#[derive(Default)]
pub(crate) struct Shedder {
    total: Arc<AtomicU32>,
    tenants: DashMap<TenantId, Arc<AtomicU32>>,
    /// Per tenant: when the last `load_shed` event was recorded, and how many requests
    /// were shed since.
    sampled: DashMap<TenantId, (Option<Instant>, u64)>,
}

impl Kernel {
    /// Admits one request of `caller` against the in-flight limits.
    pub fn admit(&self, caller: &Caller) -> Result<Permit, KernelError> {
        self.inner.admit(caller.tenant_id())
    }

    /// Changes a runtime-tunable setting (admin only); returns the previous value and
    /// records `config_changed`.
    pub async fn set_config(
        &self,
        caller: &Caller,
        key: &str,
        value: &str,
    ) -> Result<(u64, u64), KernelError> {
        self.inner.set_config(caller, key, value).await
    }

    /// Every runtime-tunable setting and its current value (admin only).
    pub fn runtime_config(&self, caller: &Caller) -> Result<Vec<(&'static str, u64)>, KernelError> {
        if !caller.is_admin() {
            return Err(admin_only());
        }
        let t = &self.inner.tunables;
        Ok(TUNABLE_KEYS
            .iter()
            .filter_map(|k| t.slot(k).map(|(a, _)| (*k, t.get(a))))
            .collect())
    }

    /// The monitor's current level: `normal`, `high` or `critical`.
    pub fn pressure(&self) -> &'static str {
        Pressure::from(self.inner.pressure.load(Ordering::Relaxed)).as_str()
    }
}

fn admin_only() -> KernelError {
    KernelError::Refused {
        code: Code::PermissionDenied,
        reason: "admin_only",
        message: "changing the runtime configuration needs an admin certificate".into(),
    }
}

impl KernelInner {
    pub(crate) fn admit(&self, tenant: &TenantId) -> Result<Permit, KernelError> {
        let t = &self.tunables;
        let per_tenant = t.get(&t.max_per_tenant);
        let total_limit = t.get(&t.max_total);
        let counter = Arc::clone(
            self.shedder
                .tenants
                .entry(tenant.clone())
                .or_default()
                .value(),
        );
        let mine = u64::from(counter.fetch_add(1, Ordering::AcqRel)) + 1;
        let all = u64::from(self.shedder.total.fetch_add(1, Ordering::AcqRel)) + 1;
        let permit = Permit {
            tenant: counter,
            total: Arc::clone(&self.shedder.total),
        };
        let over = if mine > per_tenant {
            Some(("tenant", per_tenant))
        } else if all > total_limit {
            Some(("global", total_limit))
        } else {
            None
        };
        let Some((scope, limit)) = over else {
            return Ok(permit);
        };
        drop(permit);
        metrics::counter!(m::LOAD_SHED, "scope" => scope).increment(1);
        self.sample_shed(tenant, scope, limit);
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
    fn sample_shed(&self, tenant: &TenantId, scope: &str, limit: u64) {
        let now = Instant::now();
        let shed = {
            let mut s = self.shedder.sampled.entry(tenant.clone()).or_default();
            s.1 += 1;
            match s.0 {
                Some(last) if now.duration_since(last) < Duration::from_secs(1) => return,
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

    async fn set_config(
        &self,
        caller: &Caller,
        key: &str,
        value: &str,
    ) -> Result<(u64, u64), KernelError> {
        if !caller.is_admin() {
            return Err(admin_only());
        }
        let Some((slot, min)) = self.tunables.slot(key) else {
            return Err(KernelError::InvalidArgument(format!(
                "{key:?} is not a runtime-tunable key; these are: {}",
                TUNABLE_KEYS.join(", ")
            )));
        };
        let v: u64 = value.trim().parse().map_err(|_| {
            KernelError::InvalidArgument(format!("{key} takes a whole number, not {value:?}"))
        })?;
        if v < min {
            return Err(KernelError::InvalidArgument(format!(
                "{key} must be at least {min}"
            )));
        }
        let previous = slot.swap(v, Ordering::AcqRel);
        let e = NewEvent::system(kinds::CONFIG_CHANGED, "solo").payload(json!({
            "key": key,
            "value": v,
            "previous": previous,
            "by": caller.tenant_id(),
        }));
        self.store.append(vec![e]).await?;
        tracing::info!(key, value = v, previous, "runtime configuration changed");
        Ok((previous, v))
    }
}

// ----- circuit breaker ------------------------------------------------------------------

/// The breaker's settings at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerSettings {
    pub(crate) failures: u32,
    pub(crate) open_for: Duration,
    pub(crate) close_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool, successes: u32 },
}

/// How a call that the breaker let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The service answered (an answer that is an error included).
    Success,
    /// It crashed or did not answer in time.
    Failure,
    /// The call never reached it (a full mailbox, a refusal).
    Neutral,
}

/// A change worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

/// One service's circuit breaker; the clock is passed in.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    /// Whether a call may go through now; the error is how long until it might.
    pub(crate) fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen {
                    probing: true,
                    successes: 0,
                };
                Ok(())
            }
            BreakerState::Open { until } => Err(until - now),
            BreakerState::HalfOpen { probing: true, .. } => Err(Duration::from_secs(1)),
            BreakerState::HalfOpen {
                probing: false,
                successes,
            } => {
                self.state = BreakerState::HalfOpen {
                    probing: true,
                    successes,
                };
                Ok(())
            }
        }
    }

    /// Records how a call it let through ended.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        outcome: Outcome,
        s: BreakerSettings,
    ) -> Option<Transition> {
        use BreakerState as S;
        let (next, transition) = match (self.state, outcome) {
            (S::Closed { failures }, Outcome::Failure) if failures + 1 >= s.failures => (
                S::Open {
                    until: now + s.open_for,
                },
                Some(Transition::Opened),
            ),
            (S::Closed { failures }, Outcome::Failure) => (
                S::Closed {
                    failures: failures + 1,
                },
                None,
            ),
            (S::Closed { .. }, Outcome::Success) => (S::Closed { failures: 0 }, None),
            (S::HalfOpen { successes, .. }, Outcome::Success) if successes + 1 >= s.close_after => {
                (S::Closed { failures: 0 }, Some(Transition::Closed))
            }
            (S::HalfOpen { successes, .. }, Outcome::Success) => (
                S::HalfOpen {
                    probing: false,
                    successes: successes + 1,
                },
                None,
            ),
            (S::HalfOpen { .. }, Outcome::Failure) => (
                S::Open {
                    until: now + s.open_for,
                },
                Some(Transition::Opened),
            ),
            (S::HalfOpen { successes, .. }, Outcome::Neutral) => (
                S::HalfOpen {
                    probing: false,
                    successes,
                },
                None,
            ),
            (state, _) => (state, None),
        };
        self.state = next;
        transition
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }
}

impl KernelInner {
    /// Asks the service's breaker; refuses with `circuit_breaker_open`.
    pub(crate) fn breaker_allow(
        &self,
        breaker: &Mutex<Breaker>,
        service: &ServiceId,
    ) -> Result<(), KernelError> {
        breaker
            .lock()
            .allow(Instant::now())
            .map_err(|wait| KernelError::Refused {
                code: Code::Unavailable,
                reason: "circuit_breaker_open",
                message: format!(
                    "service {service} keeps failing; its circuit breaker is open for {} s more",
                    wait.as_secs().max(1)
                ),
            })
    }

    /// Records a call's outcome in the service's breaker and its transitions as events.
    pub(crate) fn breaker_record(
        &self,
        breaker: &Mutex<Breaker>,
        tenant: &TenantId,
        service: &ServiceId,
        outcome: Outcome,
    ) {
        let s = self.tunables.breaker();
        let Some(t) = breaker.lock().record(Instant::now(), outcome, s) else {
            return;
        };
        let (kind, value) = match t {
            Transition::Opened => (kinds::CIRCUIT_BREAKER_OPENED, 1.0),
            Transition::Closed => (kinds::CIRCUIT_BREAKER_CLOSED, 0.0),
        };
        metrics::gauge!(m::BREAKER_OPEN, "service" => service.to_string()).set(value);
        let e = NewEvent::service(kind, tenant, service).payload(json!({
            "service_id": service,
            "failures": s.failures,
            "open_seconds": s.open_for.as_secs(),
        }));
        let fut = self.store.append(vec![e]);
        tokio::spawn(async move {
            if let Err(err) = fut.await {
                tracing::warn!(error = %err, "could not record a circuit breaker change");
            }
        });
    }
}

// ----- monitor ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pressure {
    Normal = 0,
    High = 1,
    Critical = 2,
}

impl From<u8> for Pressure {
    fn from(v: u8) -> Self {
        match v {
            0 => Pressure::Normal,
            1 => Pressure::High,
            _ => Pressure::Critical,
        }
    }
}

impl Pressure {
    fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::High => "high",
            Pressure::Critical => "critical",
        }
    }

    /// The level a usage ratio (0..) reaches.
    pub(crate) fn of(ratio: f64) -> Self {
        if ratio >= 0.9 {
            Pressure::Critical
        } else if ratio >= 0.8 {
            Pressure::High
        } else {
            Pressure::Normal
        }
    }
}

/// One sample of what the monitor watches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) memory_mb: u64,
    pub(crate) open_files: u64,
    pub(crate) services: u64,
    pub(crate) store_mb: u64,
}

fn read_u64_field(text: &str, prefix: &str, index: usize) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l[prefix.len()..].split_whitespace().nth(index))
        .and_then(|v| v.parse().ok())
}

/// The machine's RAM in MiB (`/proc/meminfo`).
fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| read_u64_field(&t, "MemTotal:", 0))
        .map_or(0, |kb| kb / 1024)
}

/// The process's soft limit on open files (`/proc/self/limits`).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| read_u64_field(&t, "Max open files", 0))
        .unwrap_or(1024)
}

fn sample(services: usize, data_dir: Option<&std::path::Path>) -> Sample {
    let memory_mb = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| (pages * 4096) >> 20);
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let store_mb = data_dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .map_or(0, |entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum::<u64>()
                >> 20
        });
    Sample {
        memory_mb,
        open_files,
        services: services as u64,
        store_mb,
    }
}

impl KernelInner {
    /// The current budgets (zero resolved to the machine's limits; `None`: unwatched).
    fn budgets(&self) -> [(&'static str, Option<u64>); 4] {
        let t = &self.tunables;
        let or = |v: u64, auto: fn() -> u64| if v == 0 { auto() } else { v };
        let some = |v: u64| (v > 0).then_some(v);
        [
            (
                "memory_mb",
                some(or(t.get(&t.memory_mb), machine_memory_mb)),
            ),
            (
                "open_files",
                some(or(t.get(&t.open_files), open_files_limit)),
            ),
            ("services", some(t.get(&t.services))),
            ("store_mb", some(t.get(&t.store_mb))),
        ]
    }

    /// One round of the monitor: sample, compare, record a change of level.
    pub(crate) async fn monitor_once(&self) {
        let s = sample(self.services.len(), self.data_dir.as_deref());
        let usage = [s.memory_mb, s.open_files, s.services, s.store_mb];
        let budgets = self.budgets();
        let (mut worst, mut ratio) = ("", 0.0f64);
        for ((name, budget), used) in budgets.iter().zip(usage) {
            if let Some(b) = budget {
                #[allow(clippy::cast_precision_loss)]
                let r = used as f64 / *b as f64;
                if r > ratio {
                    (worst, ratio) = (name, r);
                }
            }
        }
        let level = Pressure::of(ratio);
        let before = Pressure::from(self.pressure.swap(level as u8, Ordering::AcqRel));
        metrics::gauge!(m::RESOURCE_PRESSURE).set(f64::from(level as u8));
        if level == before {
            return;
        }
        let kind = match level {
            Pressure::Critical => kinds::RESOURCE_PRESSURE_CRITICAL,
            Pressure::High => kinds::RESOURCE_PRESSURE_HIGH,
            Pressure::Normal => kinds::RESOURCE_PRESSURE_NORMAL,
        };
        // Going from critical down to high is not news; re-arming below 80 % is.
        if level == Pressure::High && before == Pressure::Critical {
            return;
        }
        let budget = |n: &str| budgets.iter().find(|(k, _)| *k == n).and_then(|(_, b)| *b);
        let e = NewEvent::system(kind, "solo").payload(json!({
            "level": level.as_str(),
            "resource": worst,
            "ratio": (ratio * 100.0).round() / 100.0,
            "sample": {
                "memory_mb": s.memory_mb, "open_files": s.open_files,
                "services": s.services, "store_mb": s.store_mb,
            },
            "budget": {
                "memory_mb": budget("memory_mb"), "open_files": budget("open_files"),
                "services": budget("services"), "store_mb": budget("store_mb"),
            },
        }));
        tracing::warn!(
            level = level.as_str(),
            resource = worst,
            ratio,
            "resource pressure"
        );
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::warn!(error = %err, "could not record resource pressure");
        }
    }

    /// Refuses deploys under critical pressure.
    pub(crate) fn check_pressure(&self) -> Result<(), KernelError> {
        if Pressure::from(self.pressure.load(Ordering::Acquire)) == Pressure::Critical {
            return Err(KernelError::ResourceExhausted {
                reason: "resource_pressure_critical",
                message: "Solo is under critical resource pressure and takes no new deploys; \
                          see the resource_pressure_critical event"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The monitor's shared level.
pub(crate) type PressureCell = AtomicU8;

#[cfg(test)]
mod tests {
    use super::*;

    const S: BreakerSettings = BreakerSettings {
        failures: 5,
        open_for: Duration::from_secs(30),
        close_after: 2,
    };

    #[test]
    fn a_breaker_opens_probes_and_closes_on_a_fake_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        // Four failures: still closed; a success resets the count.
        for _ in 0..4 {
            assert!(b.allow(at(0)).is_ok());
            assert_eq!(b.record(at(0), Outcome::Failure, S), None);
        }
        assert_eq!(b.record(at(0), Outcome::Success, S), None);
        for _ in 0..4 {
            b.record(at(0), Outcome::Failure, S);
        }
        // The fifth in a row opens it.
        assert_eq!(
            b.record(at(1), Outcome::Failure, S),
            Some(Transition::Opened)
        );
        assert_eq!(b.allow(at(2)), Err(Duration::from_secs(29)));
        assert!(b.allow(at(30)).is_err());
        // After 30 s one probe goes through, and only one.
        assert!(b.allow(at(31)).is_ok());
        assert!(b.allow(at(31)).is_err());
        assert_eq!(b.record(at(31), Outcome::Success, S), None);
        // A second success in a row closes it.
        assert!(b.allow(at(32)).is_ok());
        assert_eq!(
            b.record(at(32), Outcome::Success, S),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(b.allow(at(32)).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_neutral_one_frees_the_slot() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.record(at(0), Outcome::Failure, S);
        }
        assert!(b.allow(at(30)).is_ok());
        assert_eq!(
            b.record(at(30), Outcome::Failure, S),
            Some(Transition::Opened)
        );
        assert!(b.allow(at(40)).is_err());
        assert!(b.allow(at(60)).is_ok());
        // The probe never reached the service: another may go.
        assert_eq!(b.record(at(60), Outcome::Neutral, S), None);
        assert!(b.allow(at(60)).is_ok());
    }

    #[test]
    fn pressure_levels() {
        assert_eq!(Pressure::of(0.5), Pressure::Normal);
        assert_eq!(Pressure::of(0.8), Pressure::High);
        assert_eq!(Pressure::of(0.95), Pressure::Critical);
        let s = sample(3, None);
        assert!(s.memory_mb > 0 && s.open_files > 0);
        assert_eq!(s.services, 3);
        assert!(machine_memory_mb() > 0);
        assert!(open_files_limit() > 0);
    }
}
