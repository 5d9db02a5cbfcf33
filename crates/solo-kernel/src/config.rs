//! The kernel's configuration: service defaults and tenant limits.

use serde::{Deserialize, Serialize};
use solo_types::{RestartPolicy, ServiceLimits};

/// Defaults for the deploy spec fields a request leaves out (DESIGN §3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceDefaults {
    pub memory_mb: u32,
    pub cpu_ms_per_message: u32,
    pub mailbox: u32,
    pub startup_timeout_ms: u32,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub max_seconds: u32,
}

impl Default for ServiceDefaults {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            cpu_ms_per_message: 1000,
            mailbox: 10_000,
            startup_timeout_ms: 5000,
            restart: RestartPolicy::Permanent,
            max_restarts: 5,
            max_seconds: 60,
        }
    }
}

impl ServiceDefaults {
    pub fn limits(&self) -> ServiceLimits {
        ServiceLimits {
            memory_mb: self.memory_mb,
            cpu_ms_per_message: self.cpu_ms_per_message,
            mailbox: self.mailbox,
            startup_timeout_ms: self.startup_timeout_ms,
        }
    }
}

/// Per-tenant and per-service limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Services a tenant may have at once.
    pub max_services_per_tenant: u32,
    /// The sum of `memory_mb` over a tenant's services.
    pub max_memory_mb_per_tenant: u64,
    /// The most memory one service may ask for.
    pub max_memory_mb_per_service: u32,
    /// The largest request, reply, cast or config, in bytes.
    pub max_message_bytes: usize,
    /// The largest key-value key and value a service may store.
    pub max_kv_key_bytes: usize,
    pub max_kv_value_bytes: usize,
    /// Custom events a service may emit per second (with a burst of ten times that).
    pub max_emits_per_second: u32,
    /// Requests a tenant may have in flight at once (runtime-tunable).
    pub max_per_tenant: u32,
    /// Requests in flight at once over all tenants (runtime-tunable).
    pub max_total: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_services_per_tenant: 100,
            max_memory_mb_per_tenant: 8192,
            max_memory_mb_per_service: 256,
            max_message_bytes: 1 << 20,
            max_kv_key_bytes: 1024,
            max_kv_value_bytes: 1 << 20,
            max_emits_per_second: 100,
            max_per_tenant: 100,
            max_total: 1000,
        }
    }
}

/// Everything the kernel is configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    pub service_defaults: ServiceDefaults,
    pub limits: TenantLimits,
    pub monitor: crate::flow::MonitorConfig,
    pub breaker: crate::flow::BreakerConfig,
}
