//! What the kernel keeps in the store: table names, keys, records, event payloads.

use serde::{Deserialize, Serialize};
use serde_json::json;
use solo_types::{CrashReport, DeploySpec, NewEvent, ServiceId, TenantId, kinds};

/// Deployment records: `tenant/service` → [`DeploymentRecord`] (JSON).
pub const DEPLOYMENTS: &str = "deployments";
/// Code blobs by the hex SHA-256 of the code.
pub const CODE: &str = "code";
/// Each service's key-value data: `tenant \0 service \0 key` → value.
pub const SERVICE_KV: &str = "service_kv";
/// The last snapshot of each service: `tenant/service` → state bytes.
pub const SNAPSHOTS: &str = "snapshots";
/// Services that hibernated (`tenant/service` → nothing): a restart leaves them asleep
/// until their next message. A graceful stop with the service awake, a fresh deploy and
/// a kill remove the mark.
pub const HIBERNATED: &str = "hibernated";

/// Runtime configuration an admin changed: key → the value as decimal text.
pub const RUNTIME_CONFIG: &str = "runtime_config";

/// The record format this build writes.
pub const RECORD_VERSION: u32 = 1;

/// A deployment, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub v: u32,
    pub tenant: TenantId,
    pub spec: DeploySpec,
    pub code_hash: String,
    pub version: u64,
    /// The `service_deployed` event.
    pub deployed_event: u64,
    /// UTC ns.
    pub deployed_at: i64,
    /// The scope of the token that deployed (or last swapped in) the code: the service
    /// acts with no more. `None` when the tenant itself did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployer: Option<crate::caller::TokenScope>,
}

pub fn deployment_key(tenant: &TenantId, service: &ServiceId) -> Vec<u8> {
    format!("{tenant}/{service}").into_bytes()
}

pub fn kv_prefix(tenant: &TenantId, service: &ServiceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.as_str().len() + service.as_str().len() + 2);
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(service.as_str().as_bytes());
    k.push(0);
    k
}

pub fn kv_key(tenant: &TenantId, service: &ServiceId, key: &str) -> Vec<u8> {
    let mut k = kv_prefix(tenant, service);
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn deployed(record: &DeploymentRecord) -> NewEvent {
    let s = &record.spec;
    NewEvent::service(kinds::SERVICE_DEPLOYED, &record.tenant, &s.service_id).payload(json!({
        "service_id": s.service_id,
        "tenant_id": record.tenant,
        "format": s.format,
        "code_hash": record.code_hash,
        "version": record.version,
        "restart": s.restart,
        "restart_limits": { "max_restarts": s.max_restarts, "max_seconds": s.max_seconds },
        "limits": s.limits,
        "secrets": s.secrets,
        "tool": s.tool.as_ref().map(|t| &t.name),
    }))
}

pub fn deployment_failed(
    tenant: &TenantId,
    service: &ServiceId,
    stage: &str,
    reason: &str,
) -> NewEvent {
    NewEvent::service(kinds::SERVICE_DEPLOYMENT_FAILED, tenant, service).payload(json!({
        "service_id": service,
        "tenant_id": tenant,
        "stage": stage,
        "reason": reason,
    }))
}

pub fn started(
    tenant: &TenantId,
    service: &ServiceId,
    version: u64,
    node: Option<&str>,
) -> NewEvent {
    on_node(
        NewEvent::service(kinds::SERVICE_STARTED, tenant, service)
            .payload(json!({ "service_id": service, "version": version })),
        node,
    )
}

/// `e` naming the cluster node that starts the service (`node`; none on an embedded
/// server), so the log shows where each service ran.
fn on_node(mut e: NewEvent, node: Option<&str>) -> NewEvent {
    if let Some(node) = node {
        e.payload["node"] = json!(node);
    }
    e
}

/// A limit a service (or its tenant) hit, recorded before the crash or refusal it
/// explains: `kind` is `memory` | `cpu` | `mailbox` | `quota`, `limit` and `observed` in
/// `unit` (`observed` is null where the sandbox cannot tell).
pub fn violation(
    tenant: &TenantId,
    service: &ServiceId,
    kind: &str,
    limit: u64,
    observed: Option<u64>,
    unit: &str,
) -> NewEvent {
    NewEvent::service(kinds::RESOURCE_VIOLATION, tenant, service).payload(json!({
        "service_id": service,
        "kind": kind,
        "limit": limit,
        "observed": observed,
        "unit": unit,
    }))
}

pub fn crashed(tenant: &TenantId, service: &ServiceId, report: &CrashReport) -> NewEvent {
    NewEvent::service(kinds::SERVICE_CRASHED, tenant, service)
        .payload(json!({ "service_id": service, "reason": report }))
}

pub fn restarted(tenant: &TenantId, service: &ServiceId, restarts: u32) -> NewEvent {
    NewEvent::service(kinds::SERVICE_RESTARTED, tenant, service)
        .payload(json!({ "service_id": service, "restarts": restarts }))
}

pub fn failed(tenant: &TenantId, service: &ServiceId, reason: &str) -> NewEvent {
    NewEvent::service(kinds::SERVICE_FAILED, tenant, service)
        .payload(json!({ "service_id": service, "reason": reason }))
}

pub fn killed(
    tenant: &TenantId,
    service: &ServiceId,
    forced: bool,
    snapshot_bytes: Option<usize>,
) -> NewEvent {
    NewEvent::service(kinds::SERVICE_KILLED, tenant, service).payload(json!({
        "service_id": service,
        "forced": forced,
        "snapshot_bytes": snapshot_bytes,
    }))
}

/// `original_event_id` is the `service_deployed` event of the deployment (0 unknown);
/// `node` the cluster node that recovers the service.
pub fn recovered(
    tenant: &TenantId,
    service: &ServiceId,
    version: u64,
    snapshot_bytes: Option<usize>,
    original_event_id: u64,
    node: Option<&str>,
) -> NewEvent {
    let e = NewEvent::service(kinds::SERVICE_RECOVERED, tenant, service).payload(json!({
        "service_id": service,
        "version": version,
        "snapshot_bytes": snapshot_bytes,
        "original_event_id": original_event_id,
    }));
    on_node(e, node)
}

/// A sampled `service_hibernated`: `suppressed_before` hibernations (of any service)
/// were not recorded since the last one that was.
pub fn hibernated(
    tenant: &TenantId,
    service: &ServiceId,
    snapshot_bytes: usize,
    idle_ms: u64,
    suppressed_before: u64,
) -> NewEvent {
    NewEvent::service(kinds::SERVICE_HIBERNATED, tenant, service).payload(json!({
        "service_id": service,
        "snapshot_bytes": snapshot_bytes,
        "idle_ms": idle_ms,
        "suppressed_before": suppressed_before,
    }))
}

/// A sampled `service_woke`, as [`hibernated`].
pub fn woke(
    tenant: &TenantId,
    service: &ServiceId,
    wake_us: u64,
    snapshot_bytes: Option<usize>,
    suppressed_before: u64,
) -> NewEvent {
    NewEvent::service(kinds::SERVICE_WOKE, tenant, service).payload(json!({
        "service_id": service,
        "wake_us": wake_us,
        "snapshot_bytes": snapshot_bytes,
        "suppressed_before": suppressed_before,
    }))
}

pub fn recovery_failed(
    tenant: &TenantId,
    service: &ServiceId,
    reason: &str,
    original_event_id: u64,
) -> NewEvent {
    NewEvent::service(kinds::SERVICE_RECOVERY_FAILED, tenant, service).payload(json!({
        "service_id": service,
        "reason": reason,
        "original_event_id": original_event_id,
    }))
}

/// The new version runs; the rollback window is open.
pub fn swap_started(
    tenant: &TenantId,
    service: &ServiceId,
    from: (u64, &str),
    to: (u64, &str),
    method: &str,
    snapshot_bytes: Option<usize>,
) -> NewEvent {
    NewEvent::service(kinds::HOT_SWAP_STARTED, tenant, service).payload(json!({
        "service_id": service,
        "from_version": from.0,
        "from_code_hash": from.1,
        "to_version": to.0,
        "to_code_hash": to.1,
        "method": method,
        "snapshot_bytes": snapshot_bytes,
    }))
}

pub fn swap_succeeded(
    tenant: &TenantId,
    service: &ServiceId,
    version: u64,
    method: &str,
) -> NewEvent {
    NewEvent::service(kinds::HOT_SWAP_SUCCEEDED, tenant, service).payload(json!({
        "service_id": service,
        "version": version,
        "method": method,
    }))
}

pub fn swap_failed(tenant: &TenantId, service: &ServiceId, stage: &str, reason: &str) -> NewEvent {
    NewEvent::service(kinds::HOT_SWAP_FAILED, tenant, service).payload(json!({
        "service_id": service,
        "stage": stage,
        "reason": reason,
    }))
}

pub fn swap_rolled_back(
    tenant: &TenantId,
    service: &ServiceId,
    from_version: u64,
    to_version: u64,
    report: &CrashReport,
) -> NewEvent {
    NewEvent::service(kinds::HOT_SWAP_ROLLED_BACK, tenant, service).payload(json!({
        "service_id": service,
        "from_version": from_version,
        "to_version": to_version,
        "reason": report,
    }))
}
