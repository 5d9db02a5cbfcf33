//! Events, discovery and the system: health, configuration, the tree, shutdown, metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Failure, is_false, service_id, tenant_id};
use crate::ids::{ServiceId, TenantId};
use crate::query::{EventFilter, EventQuery, Order};

/// An event read as a query string or JSON (`GET /v1/events?...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Admins only: another tenant's events (empty: every tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// A kind; `custom.*` matches by prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ts: Option<i64>,
    /// Zero is the store's default page.
    #[serde(default)]
    pub limit: usize,
    /// `asc` (default) or `desc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// An event filter from its parts as the wire spells them (empty means "any").
pub fn event_filter(
    tenant: Option<&str>,
    service: Option<&str>,
    kind: Option<&str>,
) -> Result<EventFilter, Failure> {
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.is_empty())
    }
    Ok(EventFilter {
        tenant: nonempty(tenant).map(tenant_id).transpose()?,
        service: nonempty(service).map(service_id).transpose()?,
        kind: nonempty(kind).map(str::to_string),
    })
}

impl TryFrom<EventParams> for EventQuery {
    type Error = Failure;

    fn try_from(p: EventParams) -> Result<Self, Failure> {
        let order = match p.order.as_deref() {
            None | Some("" | "asc") => Order::Ascending,
            Some("desc") => Order::Descending,
            Some(other) => {
                return Err(Failure::invalid(
                    "invalid_order",
                    format!("order {other:?}: use asc or desc"),
                ));
            }
        };
        Ok(EventQuery {
            filter: event_filter(
                p.tenant.as_deref(),
                p.service_id.as_deref(),
                p.kind.as_deref(),
            )?,
            after_id: p.after_id.filter(|&i| i != 0),
            before_id: p.before_id.filter(|&i| i != 0),
            since_ts: p.since_ts.filter(|&t| t != 0),
            until_ts: p.until_ts.filter(|&t| t != 0),
            limit: p.limit,
            order,
        })
    }
}

/// A live feed of events: those after `after_id` first, then new ones as they happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub after_id: u64,
    pub filter: EventFilter,
    /// With a service in the filter: its log lines too, as `service_log` events (id 0).
    pub include_logs: bool,
}

/// The kind of the pseudo-event that carries a log line in a watch.
pub const SERVICE_LOG: &str = "service_log";

/// The outcome of walking the event log's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogVerification {
    pub ok: bool,
    pub checked: u64,
    pub last_id: u64,
    pub first_broken_id: Option<u64>,
    pub reason: Option<String>,
}

/// A registration for discovery (`POST /v1/discovery`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub service_id: String,
    #[serde(rename = "service_name")]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Zero is permanent.
    #[serde(default)]
    pub ttl_seconds: i64,
}

/// A registration was made (or replaced, keeping its handle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub registered: bool,
    pub service_handle: String,
    /// UTC ns; 0 is permanent.
    pub expires_at: i64,
}

/// A registration was removed (`false`: there was none by that handle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistered {
    pub deregistered: bool,
}

/// A registration as discovery returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub service_id: ServiceId,
    pub service_handle: String,
    pub service_name: String,
    pub version: String,
    /// Whether its service is running now.
    pub alive: bool,
    pub metadata: BTreeMap<String, String>,
    /// UTC ns; 0 is permanent.
    pub expires_at: i64,
}

/// Registrations found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrations {
    pub services: Vec<Discovered>,
    pub total_count: u64,
}

impl From<Vec<Discovered>> for Registrations {
    fn from(services: Vec<Discovered>) -> Self {
        Self {
            total_count: services.len() as u64,
            services,
        }
    }
}

/// Whether the server is up; the rest only for an authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`; `degraded` while the store takes no writes (reads and calls go on);
    /// `stopping` once a shutdown began.
    pub status: String,
    /// UTC ms.
    pub timestamp: u64,
    /// Why the status is not `ok` (`store_unavailable`), when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Admins only: the failure behind `reason`, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// The caller's services (all of them for an admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<u64>,
    /// Admins only: the server's resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Admins only: the end of the event log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<u64>,
    /// The cluster node that answered (none on an embedded server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Admins only, on a cluster: every node the answering node has heard from, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ClusterNode>,
}

/// A node of a cluster, as the answering node last heard from it: its heartbeat (advisory)
/// and its role by the cluster's lease (what decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node: String,
    /// `active` (it holds the cluster's lease and runs the services) or `standby`.
    pub role: String,
    /// Whether its last heartbeat is younger than a lease.
    pub beating: bool,
    /// Since its last heartbeat, in ms.
    pub last_seen_ms: u64,
    /// Where clients reach it, when it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    pub version: String,
    /// When it started, UTC ms.
    pub started_at: u64,
    /// The last entry of the cluster's log its view had applied when it last beat: a
    /// standby far behind the active node takes longer to take over.
    pub applied_sequence: u64,
}

/// The runtime-tunable settings and the monitor's level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    pub values: BTreeMap<String, u64>,
    /// `normal`, `high` or `critical`.
    pub pressure: String,
}

/// A change of a runtime-tunable setting (`PUT /v1/system/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    pub key: String,
    /// A whole number, as a number or a string.
    pub value: serde_json::Value,
}

impl ConfigBody {
    /// The value as text, whichever way it was written.
    pub fn value_text(&self) -> String {
        match &self.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// What a configuration change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub key: String,
    pub value: u64,
    pub previous: u64,
}

/// A node of the supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    pub name: String,
    /// `supervisor`, `worker` or `service`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    pub state: String,
    pub restarts: u32,
    /// On the root: the cluster node whose tree this is (none on an embedded server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeNode>,
}

/// A shutdown request (`POST /v1/system/shutdown`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownBody {
    /// Zero is the default.
    #[serde(default)]
    pub grace_period_ms: u64,
}

/// A shutdown began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownStarted {
    pub status: String,
    pub message: String,
    pub grace_period_ms: u64,
}

/// Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub text: String,
}

/// Who the caller is, as the server sees it, and what it may still use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub tenant: TenantId,
    /// `tenant`, `admin`, `token` or `service`.
    pub role: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,
    /// For a token: what it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    pub quotas: Quotas,
}

/// What a capability token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub resource: String,
    pub permissions: Vec<String>,
    /// UTC ns.
    pub expires_at: i64,
}

/// The tenant's limits and what it uses of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub services: u64,
    pub max_services: u64,
    pub memory_mb: u64,
    pub max_memory_mb: u64,
    pub max_memory_mb_per_service: u64,
    /// Requests the tenant may have in flight at once.
    pub max_in_flight: u64,
    /// The longest timeout a request may ask for.
    pub max_timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_params_become_a_query_with_named_refusals() {
        let q = EventQuery::try_from(EventParams {
            service_id: Some("svc".into()),
            kind: Some(String::new()),
            after_id: Some(0),
            order: Some("desc".into()),
            ..EventParams::default()
        })
        .unwrap();
        assert_eq!(
            q.filter.service.as_ref().map(ServiceId::as_str),
            Some("svc")
        );
        assert_eq!(
            (q.filter.kind, q.after_id, q.order),
            (None, None, Order::Descending)
        );
        for (p, reason) in [
            (
                EventParams {
                    order: Some("up".into()),
                    ..EventParams::default()
                },
                "invalid_order",
            ),
            (
                EventParams {
                    tenant: Some("a b".into()),
                    ..EventParams::default()
                },
                "invalid_tenant",
            ),
            (
                EventParams {
                    service_id: Some("/".into()),
                    ..EventParams::default()
                },
                "invalid_service_id",
            ),
        ] {
            assert_eq!(EventQuery::try_from(p).unwrap_err().reason, reason);
        }
    }

    #[test]
    fn anonymous_health_says_only_whether_it_is_up() {
        let h = Health {
            status: "ok".into(),
            timestamp: 5,
            ..Health::default()
        };
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"status": "ok", "timestamp": 5})
        );
    }
}
