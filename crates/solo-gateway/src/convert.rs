//! Conversions at the edge: wire values in, validated once into kernel types; kernel
//! values out, into protobuf messages and JSON.

use std::sync::Arc;

use serde_json::{Value, json};
use solo_kernel::{CapInfo, DeployRequest, LogLine};
use solo_proto::v1 as pb;
use solo_types::{Event, Format, RestartPolicy, ServiceId, ServiceStatus};

use crate::error::ApiError;

/// The lifetime of a granted token when the request leaves it out (zero): one hour.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 3600;

/// A requested token lifetime, zero meaning the default.
pub fn token_ttl(requested: i64) -> i64 {
    if requested == 0 {
        DEFAULT_TOKEN_TTL_SECONDS
    } else {
        requested
    }
}

/// A timeout in milliseconds from the wire, zero or less meaning `default_ms`.
pub fn millis_or(ms: i64, default_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(
        u64::try_from(ms)
            .ok()
            .filter(|&m| m > 0)
            .unwrap_or(default_ms),
    )
}

/// The lines of a log feed as a stream; a slow reader skips what it missed and the
/// stream ends when the service goes away.
pub fn log_feed(
    rx: tokio::sync::broadcast::Receiver<LogLine>,
) -> impl futures::Stream<Item = LogLine> + Send + 'static {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((line, rx)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// The tenant filter of an event read: a tenant reads its own events; an admin may name
/// one, or none for all.
pub fn event_tenant(
    c: &solo_kernel::Caller,
    requested: Option<&str>,
) -> Result<Option<solo_types::TenantId>, ApiError> {
    let Some(requested) = requested.filter(|t| !t.is_empty()) else {
        return Ok((!c.is_admin()).then(|| c.tenant_id().clone()));
    };
    let t = solo_types::TenantId::new(requested)
        .map_err(|e| ApiError::invalid("invalid_tenant", e.to_string()))?;
    if c.is_admin() || &t == c.tenant_id() {
        Ok(Some(t))
    } else {
        Err(ApiError::admin_only("reading another tenant's events"))
    }
}

pub fn service_id(s: &str) -> Result<ServiceId, ApiError> {
    ServiceId::new(s).map_err(|e| ApiError::invalid("invalid_service_id", e.to_string()))
}

/// The format of a deploy, from the wire's enum value; unspecified is inferred from the
/// code (the WebAssembly magic, else JavaScript).
pub fn format_of(value: i32, code: &[u8]) -> Result<Format, ApiError> {
    use pb::deploy_request::DeployFormat as F;
    match F::try_from(value) {
        Ok(F::Javascript) => Ok(Format::Js),
        Ok(F::WasmComponent) => Ok(Format::Wasm),
        Ok(F::ElixirSource) => Err(ApiError::invalid(
            "unsupported_format",
            "format elixir_source is not supported; use js or wasm",
        )),
        Ok(F::Unspecified) => Ok(if code.starts_with(b"\0asm") {
            Format::Wasm
        } else {
            Format::Js
        }),
        Err(_) => Err(ApiError::invalid(
            "unsupported_format",
            format!("unknown format value {value}; use JAVASCRIPT or WASM_COMPONENT"),
        )),
    }
}

/// A kernel deploy request from the wire's fields.
pub fn deploy_from_proto(r: pb::DeployRequest) -> Result<DeployRequest, ApiError> {
    let id = service_id(&r.service_id)?;
    let code: Vec<u8> = if r.code_bytes.is_empty() {
        r.code.into_bytes()
    } else {
        r.code_bytes
    };
    if code.is_empty() {
        return Err(ApiError::invalid("missing_code", "the request has no code"));
    }
    let format = format_of(r.format, &code)?;
    let mut d = DeployRequest::new(id, format, Arc::<[u8]>::from(code));
    if !r.config_json.is_empty() {
        d.config = Some(serde_json::from_str(&r.config_json).map_err(|e| {
            ApiError::invalid("invalid_config", format!("config_json is not JSON: {e}"))
        })?);
    }
    if !r.restart.is_empty() {
        d.restart = Some(
            r.restart
                .parse::<RestartPolicy>()
                .map_err(|e| ApiError::invalid("invalid_restart", e))?,
        );
    }
    let nz = |v: u32| (v != 0).then_some(v);
    d.max_restarts = nz(r.max_restarts);
    d.max_seconds = nz(r.max_seconds);
    d.memory_mb = nz(r.memory_mb);
    d.cpu_ms_per_message = nz(r.cpu_ms_per_message);
    d.mailbox = nz(r.mailbox);
    d.startup_timeout_ms = nz(r.startup_timeout_ms);
    d.secrets = r.secrets;
    d.dry_run = r.dry_run;
    Ok(d)
}

pub fn event_to_proto(e: &Event) -> pb::Event {
    pb::Event {
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
        hash: hex_hash(&e.hash),
    }
}

fn hex_hash(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// An event as REST and SSE show it.
pub fn event_to_json(e: &Event) -> Value {
    json!({
        "id": e.id,
        "event_type": e.kind,
        "timestamp": e.ts,
        "mono": e.mono,
        "tenant_id": e.tenant,
        "service_id": e.service,
        "subject": e.subject,
        "payload": e.payload,
        "causation_id": e.causation_id,
        "hash": hex_hash(&e.hash),
    })
}

/// A log line as a Watch event (`service_log`, id 0: log lines are not events).
pub fn log_to_event(service: &ServiceId, tenant: &str, l: &LogLine) -> pb::Event {
    pb::Event {
        id: 0,
        timestamp: l.ts,
        event_type: "service_log".into(),
        subject: format!("{tenant}/{service}"),
        payload: serde_json::to_vec(
            &json!({ "level": l.level, "message": l.message, "seq": l.seq }),
        )
        .unwrap_or_default(),
        causation_id: 0,
        tenant: tenant.to_string(),
        service_id: service.to_string(),
        mono: 0,
        hash: String::new(),
    }
}

pub fn log_to_proto(l: &LogLine) -> pb::LogLine {
    pb::LogLine {
        seq: l.seq,
        timestamp: l.ts,
        level: l.level.clone(),
        message: l.message.clone(),
    }
}

pub fn status_to_proto(s: &ServiceStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        service_id: s.service_id.to_string(),
        alive: s.state.is_alive(),
        memory_bytes: i64::try_from(s.memory_bytes).unwrap_or(i64::MAX),
        message_queue_len: i64::try_from(s.mailbox_len).unwrap_or(i64::MAX),
        reductions: i64::try_from(s.cpu_time_us).unwrap_or(i64::MAX),
        state: s.state.to_string(),
        format: s.format.to_string(),
        code_hash: s.code_hash.clone(),
        version: s.version,
        uptime_ms: s.uptime_ms,
        restarts: s.restarts,
        messages: s.messages,
        cpu_time_us: s.cpu_time_us,
        last_error_json: s
            .last_error
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
            .unwrap_or_default(),
        restart: s.restart.as_str().to_string(),
        memory_limit_mb: s.limits.memory_mb,
        cpu_ms_per_message: s.limits.cpu_ms_per_message,
        mailbox_limit: s.limits.mailbox,
        deployed_at: s.deployed_at,
    }
}

pub fn service_info(s: &ServiceStatus) -> pb::ServiceInfo {
    pb::ServiceInfo {
        service_id: s.service_id.to_string(),
        alive: s.state.is_alive(),
        state: s.state.to_string(),
        format: s.format.to_string(),
        restarts: s.restarts,
        messages: s.messages,
        version: s.version,
    }
}

pub fn cap_to_proto(c: &CapInfo) -> pb::CapabilityInfo {
    pb::CapabilityInfo {
        hash: c.hash.clone(),
        tenant: c.tenant.to_string(),
        resource: c.resource.to_string(),
        permissions: c
            .permissions
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        expires_at: c.expires_at,
        revoked: c.revoked,
        parent: c.parent.clone().unwrap_or_default(),
        created_at: c.created_at,
    }
}
