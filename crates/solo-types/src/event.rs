//! The event: one durable, hash-chained record of a decision Solo made.

use crate::ids::{ServiceId, TenantId};

/// An event as stored in the log (`docs/design.md`, "Events"). Its JSON is the one shape
/// every face shows: `id`, `timestamp`, `mono`, `event_type`, `tenant_id`, `service_id`,
/// `subject`, `payload`, `causation_id`, `hash`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Dense from 1, strictly increasing, never reused, continues after a restart.
    pub id: u64,
    /// UTC wall clock, nanoseconds since the Unix epoch. Never decreases along the log:
    /// if the wall clock steps back, the previous event's value is kept.
    #[serde(rename = "timestamp")]
    pub ts: i64,
    /// Monotonic nanoseconds; never decreases along the log, across restarts too.
    pub mono: u64,
    /// `snake_case` kind, or `custom.<name>` for guest-emitted events.
    #[serde(rename = "event_type")]
    pub kind: String,
    /// The tenant the event belongs to; `None` only for system events.
    #[serde(rename = "tenant_id")]
    pub tenant: Option<TenantId>,
    /// The service the event is about, if any.
    #[serde(rename = "service_id")]
    pub service: Option<ServiceId>,
    /// What the event is about, for humans and filters (`tenant/service`, a component).
    pub subject: String,
    /// Structured details. Never holds a secret value or a raw token.
    pub payload: serde_json::Value,
    /// The event that caused this one.
    pub causation_id: Option<u64>,
    /// SHA-256(previous hash ‖ canonical bytes of this event), lower-case hex on the wire.
    #[serde(with = "hex::serde")]
    pub hash: [u8; 32],
}

/// An event about to be appended: the store assigns id, clocks and hash.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub tenant: Option<TenantId>,
    pub service: Option<ServiceId>,
    pub subject: String,
    pub payload: serde_json::Value,
    pub causation_id: Option<u64>,
}

impl NewEvent {
    /// A system event (no tenant) whose subject is `subject`.
    pub fn system(kind: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            tenant: None,
            service: None,
            subject: subject.into(),
            payload: serde_json::Value::Null,
            causation_id: None,
        }
    }

    /// An event of `tenant`, with the tenant as subject.
    pub fn tenant(kind: impl Into<String>, tenant: &TenantId) -> Self {
        Self {
            kind: kind.into(),
            tenant: Some(tenant.clone()),
            service: None,
            subject: tenant.to_string(),
            payload: serde_json::Value::Null,
            causation_id: None,
        }
    }

    /// An event about one service, with `tenant/service` as subject.
    pub fn service(kind: impl Into<String>, tenant: &TenantId, service: &ServiceId) -> Self {
        Self {
            kind: kind.into(),
            tenant: Some(tenant.clone()),
            service: Some(service.clone()),
            subject: format!("{tenant}/{service}"),
            payload: serde_json::Value::Null,
            causation_id: None,
        }
    }

    /// Sets the payload.
    #[must_use]
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the event that caused this one.
    #[must_use]
    pub fn caused_by(mut self, id: Option<u64>) -> Self {
        self.causation_id = id;
        self
    }
}

/// The event kinds Solo itself emits (`docs/design.md`, "Events"). Guests emit `custom.*` kinds.
pub mod kinds {
    pub const SYSTEM_STARTED: &str = "system_started";
    pub const SYSTEM_SHUTDOWN_STARTED: &str = "system_shutdown_started";
    pub const SYSTEM_SHUTDOWN_COMPLETE: &str = "system_shutdown_complete";
    pub const COMPONENT_RESTARTED: &str = "component_restarted";
    pub const SERVICE_DEPLOYED: &str = "service_deployed";
    pub const SERVICE_DEPLOYMENT_FAILED: &str = "service_deployment_failed";
    pub const SERVICE_STARTED: &str = "service_started";
    pub const SERVICE_CRASHED: &str = "service_crashed";
    pub const SERVICE_RESTARTED: &str = "service_restarted";
    pub const SERVICE_FAILED: &str = "service_failed";
    pub const SERVICE_KILLED: &str = "service_killed";
    pub const SERVICE_RECOVERED: &str = "service_recovered";
    pub const SERVICE_RECOVERY_FAILED: &str = "service_recovery_failed";
    /// An idle service's state was saved and its instance given back (sampled).
    pub const SERVICE_HIBERNATED: &str = "service_hibernated";
    /// A hibernated service was woken by a message and restored (sampled).
    pub const SERVICE_WOKE: &str = "service_woke";
    pub const HOT_SWAP_STARTED: &str = "hot_swap_started";
    pub const HOT_SWAP_SUCCEEDED: &str = "hot_swap_succeeded";
    pub const HOT_SWAP_FAILED: &str = "hot_swap_failed";
    pub const HOT_SWAP_ROLLED_BACK: &str = "hot_swap_rolled_back";
    pub const CAPABILITY_GRANTED: &str = "capability_granted";
    pub const CAPABILITY_ATTENUATED: &str = "capability_attenuated";
    pub const CAPABILITY_REVOKED: &str = "capability_revoked";
    pub const CAPABILITY_DENIED: &str = "capability_denied";
    pub const SECRET_STORED: &str = "secret_stored";
    pub const SECRET_ACCESSED: &str = "secret_accessed";
    pub const SECRET_ACCESS_DENIED: &str = "secret_access_denied";
    pub const SECRET_DELETED: &str = "secret_deleted";
    pub const SECRETS_ROTATED: &str = "secrets_rotated";
    /// A secret bound to (or unbound from) the hosts a request may carry it to.
    pub const SECRET_BOUND: &str = "secret_bound";
    /// An admin changed a tenant's egress rules.
    pub const EGRESS_RULES_CHANGED: &str = "egress_rules_changed";
    /// A service's HTTP request out of Solo, answered or failed by the network.
    pub const EGRESS_REQUEST: &str = "egress_request";
    /// A service's HTTP request refused by policy or a limit (sampled under a flood).
    pub const EGRESS_DENIED: &str = "egress_denied";
    pub const SERVICE_REGISTERED: &str = "service_registered";
    pub const SERVICE_DEREGISTERED: &str = "service_deregistered";
    pub const RESOURCE_VIOLATION: &str = "resource_violation";
    pub const LOAD_SHED: &str = "load_shed";
    pub const CIRCUIT_BREAKER_OPENED: &str = "circuit_breaker_opened";
    pub const CIRCUIT_BREAKER_CLOSED: &str = "circuit_breaker_closed";
    pub const RESOURCE_PRESSURE_HIGH: &str = "resource_pressure_high";
    pub const RESOURCE_PRESSURE_CRITICAL: &str = "resource_pressure_critical";
    pub const RESOURCE_PRESSURE_NORMAL: &str = "resource_pressure_normal";
    pub const CONFIG_CHANGED: &str = "config_changed";
    /// The result of checking the whole log (dense ids, hash chain) after a start.
    pub const EVENT_LOG_VERIFIED: &str = "event_log_verified";
    /// The store takes writes again after a failed write; the payload says why it
    /// stopped and for how long (written once it can be).
    pub const STORE_RECOVERED: &str = "store_recovered";
    /// The prefix of every guest-emitted kind.
    pub const CUSTOM_PREFIX: &str = "custom.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_round_trip() {
        let t = TenantId::new("t1").unwrap();
        let s = ServiceId::new("svc").unwrap();
        let e = Event {
            id: 7,
            ts: 1_700_000_000_000_000_000,
            mono: 42,
            kind: kinds::SERVICE_STARTED.into(),
            tenant: Some(t),
            service: Some(s),
            subject: "t1/svc".into(),
            payload: serde_json::json!({"a": 1}),
            causation_id: Some(3),
            hash: [0xab; 32],
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(&"ab".repeat(32)));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "id",
            "timestamp",
            "mono",
            "event_type",
            "tenant_id",
            "service_id",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }
}
