//! The settings an admin may change while Solo runs (the shedder's limits, the monitor's
//! budgets, the breaker's thresholds): atomics read on every use, so a change takes
//! effect at once. The kernel records each change as `config_changed` and keeps the
//! value in the store, so it survives a restart (`system::replay_config`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::KernelConfig;
use crate::error::KernelError;

/// The runtime-tunable keys, in the order `runtime_config` lists them, each with its
/// smallest valid value.
pub const TUNABLE_KEYS: [&str; 17] = [
    "limits.max_per_tenant",
    "limits.max_total",
    "limits.rate_per_tenant",
    "limits.burst_per_tenant",
    "limits.max_cpu_ms_per_message",
    "monitor.memory_mb",
    "monitor.open_files",
    "monitor.services",
    "monitor.store_mb",
    "breaker.failures",
    "breaker.open_seconds",
    "breaker.close_after",
    "egress.rate_per_tenant",
    "egress.burst_per_tenant",
    "egress.max_in_flight_per_service",
    "services.hibernate_after_ms",
    "services.checkpoint_every_ms",
];

/// One tunable setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    MaxPerTenant,
    MaxTotal,
    RatePerTenant,
    BurstPerTenant,
    MaxCpuMs,
    MemoryMb,
    OpenFiles,
    Services,
    StoreMb,
    BreakerFailures,
    BreakerOpenSeconds,
    BreakerCloseAfter,
    EgressRate,
    EgressBurst,
    EgressInFlight,
    HibernateAfterMs,
    CheckpointEveryMs,
}

const KEYS: [Key; 17] = [
    Key::MaxPerTenant,
    Key::MaxTotal,
    Key::RatePerTenant,
    Key::BurstPerTenant,
    Key::MaxCpuMs,
    Key::MemoryMb,
    Key::OpenFiles,
    Key::Services,
    Key::StoreMb,
    Key::BreakerFailures,
    Key::BreakerOpenSeconds,
    Key::BreakerCloseAfter,
    Key::EgressRate,
    Key::EgressBurst,
    Key::EgressInFlight,
    Key::HibernateAfterMs,
    Key::CheckpointEveryMs,
];

impl Key {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        TUNABLE_KEYS[self.index()]
    }

    fn min(self) -> u64 {
        match self {
            Key::MaxPerTenant
            | Key::MaxTotal
            | Key::BurstPerTenant
            | Key::MaxCpuMs
            | Key::BreakerFailures
            | Key::BreakerCloseAfter
            | Key::EgressBurst
            | Key::EgressInFlight => 1,
            _ => 0,
        }
    }

    fn named(name: &str) -> Option<Self> {
        KEYS.into_iter().find(|k| k.name() == name)
    }
}

/// The current values.
pub struct Tunables {
    values: [AtomicU64; 17],
    /// Held while a change is recorded, so each change's `previous` is exact.
    pub changing: tokio::sync::Mutex<()>,
}

impl Tunables {
    pub fn new(c: &KernelConfig) -> Self {
        let initial = [
            u64::from(c.limits.max_per_tenant),
            u64::from(c.limits.max_total),
            u64::from(c.limits.rate_per_tenant),
            u64::from(c.limits.burst_per_tenant),
            u64::from(c.limits.max_cpu_ms_per_message),
            c.monitor.memory_mb,
            c.monitor.open_files,
            c.monitor.services,
            c.monitor.store_mb,
            u64::from(c.breaker.failures),
            c.breaker.open_seconds,
            u64::from(c.breaker.close_after),
            u64::from(c.egress.rate_per_tenant),
            u64::from(c.egress.burst_per_tenant),
            u64::from(c.egress.max_in_flight_per_service),
            c.service_defaults.hibernate_after_ms,
            c.service_defaults.checkpoint_every_ms,
        ];
        Self {
            values: initial.map(AtomicU64::new),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, key: Key) -> u64 {
        self.values[key.index()].load(Ordering::Relaxed)
    }

    /// Checks that `name` is a tunable key and `value` (text, a whole number) a valid
    /// value for it.
    pub fn parse(name: &str, value: &str) -> Result<(Key, u64), KernelError> {
        let Some(key) = Key::named(name) else {
            return Err(KernelError::InvalidArgument(format!(
                "{name:?} is not a runtime-tunable key; these are: {}",
                TUNABLE_KEYS.join(", ")
            )));
        };
        let v: u64 = value.trim().parse().map_err(|_| {
            KernelError::InvalidArgument(format!("{name} takes a whole number, not {value:?}"))
        })?;
        if v < key.min() {
            return Err(KernelError::InvalidArgument(format!(
                "{name} must be at least {}",
                key.min()
            )));
        }
        Ok((key, v))
    }

    /// Sets `key` to `v`; returns the previous value.
    pub fn replace(&self, key: Key, v: u64) -> u64 {
        self.values[key.index()].swap(v, Ordering::AcqRel)
    }

    /// Sets `name` to `value` (text, a whole number); returns the previous value.
    #[cfg(test)]
    pub fn set(&self, name: &str, value: &str) -> Result<(u64, u64), KernelError> {
        let (key, v) = Self::parse(name, value)?;
        Ok((self.replace(key, v), v))
    }

    /// Every key and its value, in [`TUNABLE_KEYS`] order.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        KEYS.into_iter().map(|k| (k.name(), self.get(k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_changes_take_effect() {
        let t = Tunables::new(&KernelConfig::default());
        assert_eq!(t.get(Key::MaxPerTenant), 100);
        assert_eq!(t.set("limits.max_per_tenant", " 7 ").unwrap(), (100, 7));
        assert_eq!(t.get(Key::MaxPerTenant), 7);
        assert!(t.set("limits.max_total", "0").is_err());
        assert!(t.set("limits.nope", "1").is_err());
        assert!(t.set("breaker.failures", "x").is_err());
        assert_eq!(t.all().len(), TUNABLE_KEYS.len());
        for k in KEYS {
            assert_eq!(Key::named(k.name()), Some(k));
        }
    }
}
