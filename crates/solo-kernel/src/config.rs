//! The kernel's configuration: service defaults and tenant limits.

use serde::{Deserialize, Serialize};
use solo_types::{RestartPolicy, ServiceLimits};

/// Defaults for the deploy spec fields a request leaves out (`docs/design.md`, "Deploy
/// spec").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceDefaults {
    pub memory_mb: u32,
    pub cpu_ms_per_message: u32,
    pub mailbox: u32,
    pub startup_timeout_ms: u32,
    /// How long one message may take in wall-clock time before it is a crash of kind
    /// `timeout` (a reply that never settles, a guest blocked forever).
    pub message_timeout_ms: u32,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub max_seconds: u32,
    /// How long a crashed service waits before its restart, in milliseconds: 0 (the
    /// default) restarts at once, as OTP does; otherwise each further restart inside
    /// the intensity window waits twice as long as the one before, at most 5 s. The
    /// service shows `crashed` while it waits.
    pub restart_backoff_ms: u32,
    /// How long a service whose code exports `snapshot`/`restore` may stay idle before
    /// it is hibernated: its snapshot saved, its instance given back, until its next
    /// message wakes it (runtime-tunable as `services.hibernate_after_ms`; 0: never).
    pub hibernate_after_ms: u64,
    /// How long after a message an awake service whose code exports `snapshot` has its
    /// state saved (at most once per period, and only after messages), so that a node
    /// killed without a graceful stop, or a standby taking over, restores it rather than
    /// an older snapshot (runtime-tunable as `services.checkpoint_every_ms`; 0, the
    /// default: saved only when it hibernates or stops).
    pub checkpoint_every_ms: u64,
    /// How long an awake service may idle before its actor gives up its task: the
    /// instance stays (still `running`, its slot held), and the next message resumes
    /// the actor with it, which costs that message about 25 µs. 0: an awake service
    /// always holds a task.
    pub park_after_ms: u64,
}

impl Default for ServiceDefaults {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            cpu_ms_per_message: 1000,
            mailbox: 10_000,
            startup_timeout_ms: 5000,
            message_timeout_ms: solo_types::spec::default_message_timeout_ms(),
            restart: RestartPolicy::Permanent,
            max_restarts: 5,
            max_seconds: 60,
            restart_backoff_ms: 0,
            hibernate_after_ms: 300_000,
            checkpoint_every_ms: 0,
            park_after_ms: 1_000,
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
            message_timeout_ms: self.message_timeout_ms,
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
    /// The longest wall-clock time a service may ask for one message to take.
    pub max_message_timeout_ms: u32,
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
    /// Requests per second a tenant may make on every face together, refilling a token
    /// bucket of `burst_per_tenant` (runtime-tunable; 0: no rate limit). An admin's
    /// requests are not rate-limited.
    pub rate_per_tenant: u32,
    pub burst_per_tenant: u32,
    /// The most CPU time one message may be given, whatever its service asked
    /// (runtime-tunable: lowering it applies to running services from their next
    /// message).
    pub max_cpu_ms_per_message: u32,
    /// The longest timeout a client may ask for: a call's, a graceful kill's, a
    /// shutdown's grace period. Longer is refused, so no request holds its place in the
    /// in-flight limits for longer.
    pub max_timeout_ms: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_services_per_tenant: 100,
            max_memory_mb_per_tenant: 8192,
            max_memory_mb_per_service: 256,
            max_message_timeout_ms: 600_000,
            max_message_bytes: 1 << 20,
            max_kv_key_bytes: 1024,
            max_kv_value_bytes: 1 << 20,
            max_emits_per_second: 100,
            max_per_tenant: 100,
            max_total: 1000,
            rate_per_tenant: 2000,
            burst_per_tenant: 4000,
            max_cpu_ms_per_message: 60_000,
            max_timeout_ms: 60_000,
        }
    }
}

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

/// Everything the kernel is configured with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    pub service_defaults: ServiceDefaults,
    pub limits: TenantLimits,
    pub monitor: MonitorConfig,
    pub breaker: BreakerConfig,
    pub egress: EgressConfig,
}

/// `[egress]`: services' HTTP requests out of Solo. The request limits are
/// runtime-tunable (`egress.*`); the client's timeouts and caps are set at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Requests per second per tenant (a token bucket of `burst_per_tenant`; 0: none).
    pub rate_per_tenant: u32,
    pub burst_per_tenant: u32,
    /// Requests one service may have in flight at once.
    pub max_in_flight_per_service: u32,
    /// Connecting (resolving included) may take this long.
    pub connect_timeout_ms: u64,
    /// A request may take this long to its response's last byte, redirects included.
    pub total_timeout_ms: u64,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// Redirects followed at most (each checked like the first request).
    pub max_redirects: u8,
    /// A PEM file of CA certificates trusted besides the Mozilla root set, for private
    /// endpoints.
    pub extra_ca_file: Option<std::path::PathBuf>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        let l = solo_egress::EgressLimits::default();
        Self {
            rate_per_tenant: 20,
            burst_per_tenant: 40,
            max_in_flight_per_service: 8,
            connect_timeout_ms: u64::try_from(l.connect_timeout.as_millis()).unwrap_or(5000),
            total_timeout_ms: u64::try_from(l.total_timeout.as_millis()).unwrap_or(30_000),
            max_request_bytes: l.max_request_bytes,
            max_response_bytes: l.max_response_bytes,
            max_redirects: l.max_redirects,
            extra_ca_file: None,
        }
    }
}

impl EgressConfig {
    /// The client's limits.
    pub fn limits(&self) -> solo_egress::EgressLimits {
        solo_egress::EgressLimits {
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            total_timeout: std::time::Duration::from_millis(self.total_timeout_ms),
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            max_redirects: self.max_redirects,
        }
    }
}

/// A call, a kill or a shutdown's grace period takes this long when the request leaves
/// it out.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl KernelConfig {
    /// The timeout a request asked for (`None`: the default), refused past the maximum.
    pub(crate) fn timeout(
        &self,
        asked: Option<std::time::Duration>,
    ) -> Result<std::time::Duration, crate::error::KernelError> {
        let t = asked.unwrap_or(DEFAULT_TIMEOUT);
        let max = self.limits.max_timeout_ms;
        if t.as_millis() > u128::from(max) {
            return Err(crate::error::KernelError::Refused {
                code: solo_types::Code::InvalidArgument,
                reason: "invalid_timeout",
                message: format!(
                    "a timeout of {} ms is over the limit of {max} ms (limits.max_timeout_ms)",
                    t.as_millis()
                ),
            });
        }
        Ok(t)
    }
}
