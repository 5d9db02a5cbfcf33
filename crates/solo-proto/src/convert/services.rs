//! Services: deploy, status, list, call, cast, swap, kill and logs.

use std::sync::Arc;
use std::time::Duration;

use solo_types::api::{
    DeployRequest, Deployed, Failure, KillOptions, Killed, ListFilter, LogLine, ServiceList,
    SwapMethod, SwapRequest, Swapped, format_named, infer_format, millis, restart_named,
    service_id, state_named, swap_mode_named,
};
use solo_types::api::{ServiceTool, ServiceTools};
use solo_types::{CrashReport, Format, ServiceId, ServiceLimits, ServiceStatus, ToolSpec};

use super::{bad_answer, nonzero};
use crate::v1 as pb;
use pb::deploy_request::DeployFormat as F;

/// A deploy's or swap's format from the wire's enum value; unspecified is inferred from
/// the code (the WebAssembly magic, else JavaScript).
pub fn format_of(value: i32, code: &[u8]) -> Result<Format, Failure> {
    match F::try_from(value) {
        Ok(F::Javascript) => Ok(Format::Js),
        Ok(F::WasmComponent) => Ok(Format::Wasm),
        Ok(F::ElixirSource) => format_named("elixir_source"),
        Ok(F::Unspecified) => Ok(infer_format(code)),
        Err(_) => Err(Failure::invalid(
            "unsupported_format",
            format!("unknown format value {value}; use JAVASCRIPT or WASM_COMPONENT"),
        )),
    }
}

fn format_value(f: Format) -> i32 {
    match f {
        Format::Js => F::Javascript as i32,
        Format::Wasm => F::WasmComponent as i32,
    }
}

/// The code of a deploy or swap: `code_bytes`, else the text of `code`.
fn code_of(code: String, code_bytes: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let code = if code_bytes.is_empty() {
        code.into_bytes()
    } else {
        code_bytes
    };
    if code.is_empty() {
        return Err(Failure::invalid("missing_code", "the request has no code"));
    }
    Ok(code)
}

impl TryFrom<pb::DeployRequest> for DeployRequest {
    type Error = Failure;

    fn try_from(r: pb::DeployRequest) -> Result<Self, Failure> {
        let id = service_id(&r.service_id)?;
        let code = code_of(r.code, r.code_bytes)?;
        let format = format_of(r.format, &code)?;
        let config = match r.config_json.as_str() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(|e| {
                Failure::invalid("invalid_config", format!("config_json is not JSON: {e}"))
            })?),
        };
        Ok(Self {
            config,
            restart: nonzero(r.restart)
                .as_deref()
                .map(restart_named)
                .transpose()?,
            max_restarts: nonzero(r.max_restarts),
            max_seconds: nonzero(r.max_seconds),
            memory_mb: nonzero(r.memory_mb),
            cpu_ms_per_message: nonzero(r.cpu_ms_per_message),
            mailbox: nonzero(r.mailbox),
            startup_timeout_ms: nonzero(r.startup_timeout_ms),
            message_timeout_ms: nonzero(r.message_timeout_ms),
            secrets: r.secrets,
            egress: r.egress,
            tool: r.tool.map(tool_from).transpose()?,
            dry_run: r.dry_run,
            ..Self::new(id, format, Arc::<[u8]>::from(code))
        })
    }
}

impl From<&DeployRequest> for pb::DeployRequest {
    fn from(r: &DeployRequest) -> Self {
        Self {
            service_id: r.service_id.to_string(),
            code: String::new(),
            format: format_value(r.format),
            code_bytes: r.code.to_vec(),
            config_json: r
                .config
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            restart: r
                .restart
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            max_restarts: r.max_restarts.unwrap_or(0),
            max_seconds: r.max_seconds.unwrap_or(0),
            memory_mb: r.memory_mb.unwrap_or(0),
            cpu_ms_per_message: r.cpu_ms_per_message.unwrap_or(0),
            mailbox: r.mailbox.unwrap_or(0),
            startup_timeout_ms: r.startup_timeout_ms.unwrap_or(0),
            message_timeout_ms: r.message_timeout_ms.unwrap_or(0),
            secrets: r.secrets.clone(),
            egress: r.egress.clone(),
            dry_run: r.dry_run,
            tool: r.tool.as_ref().map(tool_to),
        }
    }
}

impl From<&Deployed> for pb::DeployResponse {
    fn from(d: &Deployed) -> Self {
        Self {
            service_id: d.service_id.to_string(),
            status: "ok".into(),
            error: String::new(),
            code_hash: d.code_hash.clone(),
            version: d.version,
            event_id: d.event_id,
            created: d.created,
            dry_run: d.dry_run,
            has_state: d.has_state,
        }
    }
}

impl TryFrom<pb::DeployResponse> for Deployed {
    type Error = Failure;

    fn try_from(r: pb::DeployResponse) -> Result<Self, Failure> {
        Ok(Self {
            service_id: answer_id(&r.service_id)?,
            code_hash: r.code_hash,
            version: r.version,
            event_id: r.event_id,
            created: r.created,
            dry_run: r.dry_run,
            has_state: r.has_state,
        })
    }
}

/// A service id in an answer.
fn answer_id(s: &str) -> Result<ServiceId, Failure> {
    ServiceId::new(s).map_err(|e| bad_answer("service id", e))
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl From<&ServiceStatus> for pb::StatusResponse {
    fn from(s: &ServiceStatus) -> Self {
        Self {
            service_id: s.service_id.to_string(),
            alive: s.state.is_alive(),
            memory_bytes: saturating_i64(s.memory_bytes),
            message_queue_len: saturating_i64(s.mailbox_len),
            reductions: saturating_i64(s.cpu_time_us),
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
            startup_timeout_ms: s.limits.startup_timeout_ms,
            message_timeout_ms: s.limits.message_timeout_ms,
            tool: s.tool.as_ref().map(tool_to),
            node: s.node.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::StatusResponse> for ServiceStatus {
    type Error = Failure;

    fn try_from(s: pb::StatusResponse) -> Result<Self, Failure> {
        let last_error: Option<CrashReport> = match s.last_error_json.as_str() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(|e| bad_answer("crash report", e))?),
        };
        Ok(Self {
            service_id: answer_id(&s.service_id)?,
            state: state_named(&s.state).map_err(|e| bad_answer("state", e))?,
            format: s.format.parse().map_err(|e| bad_answer("format", e))?,
            code_hash: s.code_hash,
            version: s.version,
            uptime_ms: s.uptime_ms,
            restarts: s.restarts,
            memory_bytes: u64::try_from(s.memory_bytes).unwrap_or(0),
            mailbox_len: u64::try_from(s.message_queue_len).unwrap_or(0),
            messages: s.messages,
            cpu_time_us: s.cpu_time_us,
            last_error,
            restart: restart_named(&s.restart).map_err(|e| bad_answer("restart", e))?,
            limits: ServiceLimits {
                memory_mb: s.memory_limit_mb,
                cpu_ms_per_message: s.cpu_ms_per_message,
                mailbox: s.mailbox_limit,
                startup_timeout_ms: s.startup_timeout_ms,
                message_timeout_ms: s.message_timeout_ms,
            },
            deployed_at: s.deployed_at,
            tool: s
                .tool
                .map(tool_from)
                .transpose()
                .map_err(|e| bad_answer("tool", e))?,
            node: nonzero(s.node),
        })
    }
}

/// A tool declaration from the wire (its schema travels as JSON text).
pub fn tool_from(t: pb::ToolSpec) -> Result<ToolSpec, Failure> {
    let input_schema = serde_json::from_str(&t.input_schema_json).map_err(|e| {
        Failure::invalid(
            "invalid_tool",
            format!("the tool's input_schema is not JSON: {e}"),
        )
    })?;
    Ok(ToolSpec {
        name: t.name,
        description: t.description,
        input_schema,
    })
}

pub fn tool_to(t: &ToolSpec) -> pb::ToolSpec {
    pb::ToolSpec {
        name: t.name.clone(),
        description: t.description.clone(),
        input_schema_json: t.input_schema.to_string(),
    }
}

impl From<&ServiceTools> for pb::ListToolsResponse {
    fn from(t: &ServiceTools) -> Self {
        Self {
            tools: t
                .tools
                .iter()
                .map(|s| pb::ServiceToolInfo {
                    service_id: s.service_id.to_string(),
                    tool: Some(tool_to(&s.tool)),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::ListToolsResponse> for ServiceTools {
    type Error = Failure;

    fn try_from(t: pb::ListToolsResponse) -> Result<Self, Failure> {
        let tools = t
            .tools
            .into_iter()
            .map(|s| {
                Ok(ServiceTool {
                    service_id: answer_id(&s.service_id)?,
                    tool: tool_from(s.tool.ok_or_else(|| bad_answer("tool", "missing"))?)
                        .map_err(|e| bad_answer("tool", e))?,
                })
            })
            .collect::<Result<_, Failure>>()?;
        Ok(Self { tools })
    }
}

/// The reference's short form of a status, kept in `ListResponse.services`.
pub fn service_info(s: &ServiceStatus) -> pb::ServiceInfo {
    pb::ServiceInfo {
        service_id: s.service_id.to_string(),
        alive: s.state.is_alive(),
        state: s.state.to_string(),
        format: s.format.to_string(),
        restarts: s.restarts,
        messages: s.messages,
        version: s.version,
        node: s.node.clone().unwrap_or_default(),
    }
}

impl TryFrom<pb::ListRequest> for ListFilter {
    type Error = Failure;

    fn try_from(r: pb::ListRequest) -> Result<Self, Failure> {
        Ok(Self {
            state: nonzero(r.state).as_deref().map(state_named).transpose()?,
            limit: r.limit as usize,
            offset: r.offset as usize,
        })
    }
}

impl From<&ListFilter> for pb::ListRequest {
    fn from(f: &ListFilter) -> Self {
        Self {
            limit: u32::try_from(f.limit).unwrap_or(u32::MAX),
            offset: u32::try_from(f.offset).unwrap_or(u32::MAX),
            state: f.state.map(|s| s.to_string()).unwrap_or_default(),
        }
    }
}

impl From<&ServiceList> for pb::ListResponse {
    fn from(l: &ServiceList) -> Self {
        Self {
            services: l.services.iter().map(service_info).collect(),
            total: l.total as u64,
            statuses: l.services.iter().map(pb::StatusResponse::from).collect(),
        }
    }
}

impl TryFrom<pb::ListResponse> for ServiceList {
    type Error = Failure;

    fn try_from(l: pb::ListResponse) -> Result<Self, Failure> {
        Ok(Self {
            services: l
                .statuses
                .into_iter()
                .map(ServiceStatus::try_from)
                .collect::<Result<_, _>>()?,
            total: usize::try_from(l.total).unwrap_or(usize::MAX),
        })
    }
}

/// A call from the wire: the service, the request, the timeout (`None`: the default).
pub fn decode_call(r: pb::CallRequest) -> Result<(ServiceId, String, Option<Duration>), Failure> {
    Ok((
        service_id(&r.service_id)?,
        r.request,
        millis(i64::from(r.timeout_ms)),
    ))
}

pub fn encode_call(id: &ServiceId, request: &str, timeout: Option<Duration>) -> pb::CallRequest {
    pb::CallRequest {
        service_id: id.to_string(),
        request: request.to_string(),
        timeout_ms: timeout.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
    }
}

/// A kill from the wire (a timeout of zero or less is the default).
pub fn decode_kill(r: pb::KillRequest) -> Result<(ServiceId, KillOptions), Failure> {
    Ok((
        service_id(&r.service_id)?,
        KillOptions {
            timeout: millis(i64::from(r.timeout_ms)),
            force: r.force,
        },
    ))
}

pub fn encode_kill(id: &ServiceId, o: KillOptions) -> pb::KillRequest {
    pb::KillRequest {
        service_id: id.to_string(),
        timeout_ms: o
            .timeout
            .map_or(0, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX)),
        force: o.force,
    }
}

impl From<&Killed> for pb::KillResponse {
    fn from(k: &Killed) -> Self {
        Self {
            service_id: k.service_id.to_string(),
            status: "ok".into(),
            error: String::new(),
            event_id: k.event_id,
            snapshot_bytes: k.snapshot_bytes,
            forced: k.forced,
        }
    }
}

impl TryFrom<pb::KillResponse> for Killed {
    type Error = Failure;

    fn try_from(k: pb::KillResponse) -> Result<Self, Failure> {
        Ok(Self {
            service_id: answer_id(&k.service_id)?,
            event_id: k.event_id,
            forced: k.forced,
            snapshot_bytes: k.snapshot_bytes,
        })
    }
}

impl TryFrom<pb::HotSwapRequest> for SwapRequest {
    type Error = Failure;

    fn try_from(r: pb::HotSwapRequest) -> Result<Self, Failure> {
        let service_id = service_id(&r.service_id)?;
        let code = code_of(r.code, r.code_bytes)?;
        Ok(Self {
            service_id,
            format: format_of(r.format, &code)?,
            code: code.into(),
            mode: swap_mode_named(&r.mode)?,
            rollback_window: millis(i64::from(r.rollback_window_ms)),
        })
    }
}

impl From<&SwapRequest> for pb::HotSwapRequest {
    fn from(r: &SwapRequest) -> Self {
        Self {
            service_id: r.service_id.to_string(),
            code: String::new(),
            format: format_value(r.format),
            code_bytes: r.code.to_vec(),
            mode: match r.mode {
                solo_types::api::SwapMode::Swap => "swap",
                solo_types::api::SwapMode::Replace => "replace",
            }
            .into(),
            rollback_window_ms: r
                .rollback_window
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        }
    }
}

impl From<&Swapped> for pb::HotSwapResponse {
    fn from(s: &Swapped) -> Self {
        Self {
            service_id: s.service_id.to_string(),
            status: "ok".into(),
            version: s.version,
            code_hash: s.code_hash.clone(),
            event_id: s.event_id,
            method: s.method.as_str().into(),
            state_carried: s.state_carried,
            snapshot_bytes: s.snapshot_bytes,
        }
    }
}

impl TryFrom<pb::HotSwapResponse> for Swapped {
    type Error = Failure;

    fn try_from(s: pb::HotSwapResponse) -> Result<Self, Failure> {
        Ok(Self {
            service_id: answer_id(&s.service_id)?,
            version: s.version,
            code_hash: s.code_hash,
            event_id: s.event_id,
            method: s
                .method
                .parse::<SwapMethod>()
                .map_err(|e| bad_answer("swap method", e))?,
            state_carried: s.state_carried,
            snapshot_bytes: s.snapshot_bytes,
        })
    }
}

/// A log read from the wire: the service, how many past lines (0: the default),
/// whether to follow, and the line to resume after (0: none).
pub struct LogsQuery {
    pub service_id: ServiceId,
    pub tail: usize,
    pub follow: bool,
    pub after_seq: u64,
}

impl TryFrom<pb::LogsRequest> for LogsQuery {
    type Error = Failure;

    fn try_from(r: pb::LogsRequest) -> Result<Self, Failure> {
        Ok(Self {
            service_id: service_id(&r.service_id)?,
            tail: r.tail as usize,
            follow: r.follow,
            after_seq: r.after_seq,
        })
    }
}

impl From<&LogsQuery> for pb::LogsRequest {
    fn from(q: &LogsQuery) -> Self {
        Self {
            service_id: q.service_id.to_string(),
            tail: u32::try_from(q.tail).unwrap_or(u32::MAX),
            follow: q.follow,
            after_seq: q.after_seq,
        }
    }
}

impl From<&LogLine> for pb::LogLine {
    fn from(l: &LogLine) -> Self {
        Self {
            seq: l.seq,
            timestamp: l.ts,
            level: l.level.clone(),
            message: l.message.clone(),
        }
    }
}

impl From<pb::LogLine> for LogLine {
    fn from(l: pb::LogLine) -> Self {
        Self {
            seq: l.seq,
            ts: l.timestamp,
            level: l.level,
            message: l.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let mut d = DeployRequest::new(service_id("a").unwrap(), Format::Wasm, b"\0asm".to_vec());
        d.config = Some(serde_json::json!({"x": 1}));
        d.memory_mb = Some(8);
        assert_eq!(
            DeployRequest::try_from(pb::DeployRequest::from(&d)).unwrap(),
            d
        );
        let bad = pb::DeployRequest {
            service_id: "a".into(),
            code: "x".into(),
            config_json: "{".into(),
            ..pb::DeployRequest::default()
        };
        assert_eq!(
            DeployRequest::try_from(bad).unwrap_err().reason,
            "invalid_config"
        );
        let k = Killed {
            service_id: service_id("a").unwrap(),
            event_id: 3,
            forced: true,
            snapshot_bytes: None,
        };
        assert_eq!(Killed::try_from(pb::KillResponse::from(&k)).unwrap(), k);
        let (id, opts) = decode_kill(encode_kill(&k.service_id, KillOptions::default())).unwrap();
        assert_eq!((id, opts), (k.service_id.clone(), KillOptions::default()));
        assert_eq!(
            format_of(F::ElixirSource as i32, b"").unwrap_err().reason,
            "unsupported_format"
        );
    }
}
