//! Events, discovery and the system: health, configuration, the tree, shutdown.

use std::collections::BTreeMap;

use solo_types::api::{
    ClusterNode, ConfigChange, Deregistered, Discovered, Failure, Health, Identity, LogLine,
    LogVerification, Quotas, RegisterRequest, Registered, RuntimeConfig, SERVICE_LOG, Scope,
    ShutdownStarted, TreeNode, WatchRequest, event_filter,
};
use solo_types::{Event, EventPage, EventQuery, Order, ServiceId, TenantId};

use super::{bad_answer, nonzero};
use crate::v1 as pb;

impl From<&Event> for pb::Event {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id,
            timestamp: e.ts,
            event_type: e.kind.clone(),
            subject: e.subject.clone(),
            payload: serde_json::to_vec(&e.payload).unwrap_or_default(),
            causation_id: e.causation_id.unwrap_or(0),
            tenant: e
                .tenant
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            service_id: e
                .service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            mono: e.mono,
            hash: hex::encode(e.hash),
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = Failure;

    fn try_from(e: pb::Event) -> Result<Self, Failure> {
        let mut hash = [0u8; 32];
        if !e.hash.is_empty() {
            hex::decode_to_slice(&e.hash, &mut hash)
                .map_err(|err| bad_answer("event hash", err))?;
        }
        Ok(Self {
            id: e.id,
            ts: e.timestamp,
            mono: e.mono,
            kind: e.event_type,
            tenant: nonzero(e.tenant)
                .map(TenantId::new)
                .transpose()
                .map_err(|err| bad_answer("event tenant", err))?,
            service: nonzero(e.service_id)
                .map(ServiceId::new)
                .transpose()
                .map_err(|err| bad_answer("event service", err))?,
            subject: e.subject,
            payload: serde_json::from_slice(&e.payload).unwrap_or(serde_json::Value::Null),
            causation_id: nonzero(e.causation_id),
            hash,
        })
    }
}

/// A log line in a watch: a `service_log` pseudo-event with id 0 (log lines are not
/// events and are not in the log).
pub fn log_event(tenant: &TenantId, service: &ServiceId, l: &LogLine) -> pb::Event {
    pb::Event {
        id: 0,
        timestamp: l.ts,
        event_type: SERVICE_LOG.into(),
        subject: format!("{tenant}/{service}"),
        payload: serde_json::to_vec(
            &serde_json::json!({ "level": l.level, "message": l.message, "seq": l.seq }),
        )
        .unwrap_or_default(),
        causation_id: 0,
        tenant: tenant.to_string(),
        service_id: service.to_string(),
        mono: 0,
        hash: String::new(),
    }
}

impl TryFrom<pb::WatchRequest> for WatchRequest {
    type Error = Failure;

    fn try_from(r: pb::WatchRequest) -> Result<Self, Failure> {
        Ok(Self {
            after_id: r.after_id,
            filter: event_filter(Some(&r.tenant), Some(&r.service_id), Some(&r.kind))?,
            include_logs: r.include_logs,
        })
    }
}

impl From<&WatchRequest> for pb::WatchRequest {
    fn from(w: &WatchRequest) -> Self {
        let f = &w.filter;
        Self {
            service_id: f
                .service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            include_logs: w.include_logs,
            after_id: w.after_id,
            kind: f.kind.clone().unwrap_or_default(),
            tenant: f
                .tenant
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::QueryEventsRequest> for EventQuery {
    type Error = Failure;

    fn try_from(r: pb::QueryEventsRequest) -> Result<Self, Failure> {
        Ok(Self {
            filter: event_filter(Some(&r.tenant), Some(&r.service_id), Some(&r.kind))?,
            after_id: nonzero(r.after_id),
            before_id: nonzero(r.before_id),
            since_ts: nonzero(r.since_ts),
            until_ts: nonzero(r.until_ts),
            limit: r.limit as usize,
            order: if r.descending {
                Order::Descending
            } else {
                Order::Ascending
            },
        })
    }
}

impl From<&EventQuery> for pb::QueryEventsRequest {
    fn from(q: &EventQuery) -> Self {
        let f = &q.filter;
        Self {
            after_id: q.after_id.unwrap_or(0),
            before_id: q.before_id.unwrap_or(0),
            tenant: f
                .tenant
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            service_id: f
                .service
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            kind: f.kind.clone().unwrap_or_default(),
            since_ts: q.since_ts.unwrap_or(0),
            until_ts: q.until_ts.unwrap_or(0),
            limit: u32::try_from(q.limit).unwrap_or(u32::MAX),
            descending: q.order == Order::Descending,
        }
    }
}

impl From<&EventPage> for pb::QueryEventsResponse {
    fn from(p: &EventPage) -> Self {
        Self {
            events: p.events.iter().map(pb::Event::from).collect(),
            next_cursor: p.next_cursor.unwrap_or(0),
        }
    }
}

impl TryFrom<pb::QueryEventsResponse> for EventPage {
    type Error = Failure;

    fn try_from(p: pb::QueryEventsResponse) -> Result<Self, Failure> {
        Ok(Self {
            events: p
                .events
                .into_iter()
                .map(Event::try_from)
                .collect::<Result<_, _>>()?,
            next_cursor: nonzero(p.next_cursor),
            snapshot_last_id: 0,
        })
    }
}

impl From<&LogVerification> for pb::VerifyEventsResponse {
    fn from(v: &LogVerification) -> Self {
        Self {
            ok: v.ok,
            checked: v.checked,
            last_id: v.last_id,
            first_broken_id: v.first_broken_id.unwrap_or(0),
            reason: v.reason.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::VerifyEventsResponse> for LogVerification {
    fn from(v: pb::VerifyEventsResponse) -> Self {
        Self {
            ok: v.ok,
            checked: v.checked,
            last_id: v.last_id,
            first_broken_id: nonzero(v.first_broken_id),
            reason: nonzero(v.reason),
        }
    }
}

impl From<pb::RegisterServiceRequest> for RegisterRequest {
    fn from(r: pb::RegisterServiceRequest) -> Self {
        Self {
            service_id: r.service_id,
            name: r.service_name,
            version: r.version,
            metadata: r.metadata.into_iter().collect(),
            ttl_seconds: i64::from(r.ttl_seconds),
        }
    }
}

impl From<&RegisterRequest> for pb::RegisterServiceRequest {
    fn from(r: &RegisterRequest) -> Self {
        Self {
            service_id: r.service_id.clone(),
            service_name: r.name.clone(),
            version: r.version.clone(),
            metadata: r.metadata.clone().into_iter().collect(),
            ttl_seconds: i32::try_from(r.ttl_seconds).unwrap_or(i32::MAX),
        }
    }
}

impl From<&Registered> for pb::RegisterServiceResponse {
    fn from(r: &Registered) -> Self {
        Self {
            registered: r.registered,
            service_handle: r.service_handle.clone(),
            error: String::new(),
            expires_at: r.expires_at,
        }
    }
}

impl From<pb::RegisterServiceResponse> for Registered {
    fn from(r: pb::RegisterServiceResponse) -> Self {
        Self {
            registered: r.registered,
            service_handle: r.service_handle,
            expires_at: r.expires_at,
        }
    }
}

impl From<&Deregistered> for pb::DeregisterServiceResponse {
    fn from(d: &Deregistered) -> Self {
        Self {
            deregistered: d.deregistered,
        }
    }
}

impl From<pb::DeregisterServiceResponse> for Deregistered {
    fn from(d: pb::DeregisterServiceResponse) -> Self {
        Self {
            deregistered: d.deregistered,
        }
    }
}

impl From<&Discovered> for pb::DiscoveredService {
    fn from(d: &Discovered) -> Self {
        Self {
            service_id: d.service_id.to_string(),
            service_handle: d.service_handle.clone(),
            service_name: d.service_name.clone(),
            version: d.version.clone(),
            alive: d.alive,
            metadata: d.metadata.clone().into_iter().collect(),
            expires_at: d.expires_at,
        }
    }
}

impl TryFrom<pb::DiscoveredService> for Discovered {
    type Error = Failure;

    fn try_from(d: pb::DiscoveredService) -> Result<Self, Failure> {
        Ok(Self {
            service_id: ServiceId::new(d.service_id).map_err(|e| bad_answer("service id", e))?,
            service_handle: d.service_handle,
            service_name: d.service_name,
            version: d.version,
            alive: d.alive,
            metadata: d.metadata.into_iter().collect::<BTreeMap<_, _>>(),
            expires_at: d.expires_at,
        })
    }
}

/// Registrations from the wire.
pub fn discovered(services: Vec<pb::DiscoveredService>) -> Result<Vec<Discovered>, Failure> {
    services.into_iter().map(Discovered::try_from).collect()
}

impl From<&Health> for pb::HealthResponse {
    fn from(h: &Health) -> Self {
        Self {
            status: h.status.clone(),
            version: h.version.clone(),
            uptime_ms: h.uptime_ms,
            memory_mb: h.memory_mb,
            services: h.services,
            last_event_id: h.last_event_id,
            timestamp: h.timestamp,
            reason: h.reason.clone(),
            detail: h.detail.clone(),
            node: h.node.clone(),
            nodes: h.nodes.iter().map(pb::ClusterNode::from).collect(),
        }
    }
}

impl From<&ClusterNode> for pb::ClusterNode {
    fn from(n: &ClusterNode) -> Self {
        Self {
            node: n.node.clone(),
            role: n.role.clone(),
            beating: n.beating,
            last_seen_ms: n.last_seen_ms,
            grpc: n.grpc.clone(),
            http: n.http.clone(),
            version: n.version.clone(),
            started_at: n.started_at,
            applied_sequence: n.applied_sequence,
        }
    }
}

impl From<pb::ClusterNode> for ClusterNode {
    fn from(n: pb::ClusterNode) -> Self {
        Self {
            node: n.node,
            role: n.role,
            beating: n.beating,
            last_seen_ms: n.last_seen_ms,
            grpc: n.grpc,
            http: n.http,
            version: n.version,
            started_at: n.started_at,
            applied_sequence: n.applied_sequence,
        }
    }
}

impl From<pb::HealthResponse> for Health {
    fn from(h: pb::HealthResponse) -> Self {
        Self {
            status: h.status,
            timestamp: h.timestamp,
            version: h.version,
            uptime_ms: h.uptime_ms,
            services: h.services,
            memory_mb: h.memory_mb,
            last_event_id: h.last_event_id,
            reason: h.reason,
            detail: h.detail,
            node: h.node,
            nodes: h.nodes.into_iter().map(ClusterNode::from).collect(),
        }
    }
}

impl From<&TreeNode> for pb::SystemTreeResponse {
    fn from(t: &TreeNode) -> Self {
        Self {
            tree_json: serde_json::to_string(t).unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::SystemTreeResponse> for TreeNode {
    type Error = Failure;

    fn try_from(t: pb::SystemTreeResponse) -> Result<Self, Failure> {
        serde_json::from_str(&t.tree_json).map_err(|e| bad_answer("tree", e))
    }
}

impl From<&ConfigChange> for pb::SetConfigResponse {
    fn from(c: &ConfigChange) -> Self {
        Self {
            key: c.key.clone(),
            value: c.value.to_string(),
            previous: c.previous.to_string(),
        }
    }
}

impl TryFrom<pb::SetConfigResponse> for ConfigChange {
    type Error = Failure;

    fn try_from(c: pb::SetConfigResponse) -> Result<Self, Failure> {
        let number = |s: &str| s.parse::<u64>().map_err(|e| bad_answer("config value", e));
        Ok(Self {
            value: number(&c.value)?,
            previous: number(&c.previous)?,
            key: c.key,
        })
    }
}

impl From<&RuntimeConfig> for pb::GetConfigResponse {
    fn from(c: &RuntimeConfig) -> Self {
        Self {
            values: c.values.clone().into_iter().collect(),
            pressure: c.pressure.clone(),
        }
    }
}

impl From<pb::GetConfigResponse> for RuntimeConfig {
    fn from(c: pb::GetConfigResponse) -> Self {
        Self {
            values: c.values.into_iter().collect(),
            pressure: c.pressure,
        }
    }
}

impl From<&ShutdownStarted> for pb::ShutdownResponse {
    fn from(s: &ShutdownStarted) -> Self {
        Self {
            status: s.status.clone(),
            message: s.message.clone(),
            grace_period_ms: s.grace_period_ms,
        }
    }
}

impl From<pb::ShutdownResponse> for ShutdownStarted {
    fn from(s: pb::ShutdownResponse) -> Self {
        Self {
            status: s.status,
            message: s.message,
            grace_period_ms: s.grace_period_ms,
        }
    }
}

impl From<&Identity> for pb::WhoAmIResponse {
    fn from(i: &Identity) -> Self {
        let q = &i.quotas;
        Self {
            tenant: i.tenant.to_string(),
            role: i.role.clone(),
            admin: i.admin,
            scope: i.scope.as_ref().map(|s| pb::TokenScope {
                resource: s.resource.clone(),
                permissions: s.permissions.clone(),
                expires_at: s.expires_at,
            }),
            quotas: Some(pb::Quotas {
                services: q.services,
                max_services: q.max_services,
                memory_mb: q.memory_mb,
                max_memory_mb: q.max_memory_mb,
                max_memory_mb_per_service: q.max_memory_mb_per_service,
                max_in_flight: q.max_in_flight,
                max_timeout_ms: q.max_timeout_ms,
            }),
        }
    }
}

impl TryFrom<pb::WhoAmIResponse> for Identity {
    type Error = Failure;

    fn try_from(i: pb::WhoAmIResponse) -> Result<Self, Failure> {
        let q = i.quotas.unwrap_or_default();
        Ok(Self {
            tenant: TenantId::new(i.tenant).map_err(|e| bad_answer("tenant", e))?,
            role: i.role,
            admin: i.admin,
            scope: i.scope.map(|s| Scope {
                resource: s.resource,
                permissions: s.permissions,
                expires_at: s.expires_at,
            }),
            quotas: Quotas {
                services: q.services,
                max_services: q.max_services,
                memory_mb: q.memory_mb,
                max_memory_mb: q.max_memory_mb,
                max_memory_mb_per_service: q.max_memory_mb_per_service,
                max_in_flight: q.max_in_flight,
                max_timeout_ms: q.max_timeout_ms,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_queries_round_trip() {
        let e = Event {
            id: 4,
            ts: 10,
            mono: 11,
            kind: "service_started".into(),
            tenant: Some(TenantId::new("t").unwrap()),
            service: None,
            subject: "t".into(),
            payload: serde_json::json!({"a": [1]}),
            causation_id: Some(2),
            hash: [7; 32],
        };
        assert_eq!(Event::try_from(pb::Event::from(&e)).unwrap(), e);
        let q = EventQuery {
            after_id: Some(3),
            limit: 5,
            order: Order::Descending,
            ..EventQuery::default()
        };
        assert_eq!(
            EventQuery::try_from(pb::QueryEventsRequest::from(&q)).unwrap(),
            q
        );
        let bad = pb::QueryEventsRequest {
            service_id: "a b".into(),
            ..pb::QueryEventsRequest::default()
        };
        assert_eq!(
            EventQuery::try_from(bad).unwrap_err().reason,
            "invalid_service_id"
        );
    }
}
