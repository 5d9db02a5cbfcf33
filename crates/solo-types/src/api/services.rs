//! Services: deploy, list, status, call, cast, swap, kill and logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Failure, is_false, millis, service_id};
use crate::ids::ServiceId;
use crate::spec::{Format, RestartPolicy, ServiceState, ServiceStatus, ToolSpec};

/// The bytes that start every WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";

/// The format of `code` when a request leaves it out: a WebAssembly component if it
/// starts with the wasm magic, else JavaScript.
pub fn infer_format(code: &[u8]) -> Format {
    if code.starts_with(WASM_MAGIC) {
        Format::Wasm
    } else {
        Format::Js
    }
}

/// A format by name, as requests spell it (case-insensitive).
pub fn format_named(name: &str) -> Result<Format, Failure> {
    match name.to_ascii_lowercase().as_str() {
        "js" | "javascript" => Ok(Format::Js),
        "wasm" | "wasm_component" | "component" => Ok(Format::Wasm),
        "elixir" | "elixir_source" => Err(Failure::invalid(
            "unsupported_format",
            "format elixir_source is not supported; use js or wasm",
        )),
        other => Err(Failure::invalid(
            "unsupported_format",
            format!("unknown format {other:?}; use js or wasm"),
        )),
    }
}

/// The code of a request: `code` (text) or `code_base64` (binary), exactly one.
fn code_of(code: Option<String>, code_base64: Option<String>) -> Result<Vec<u8>, Failure> {
    let code = match (code, code_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| {
                Failure::invalid("invalid_code", format!("code_base64 is not base64: {e}"))
            })?,
        (Some(_), Some(_)) => {
            return Err(Failure::invalid(
                "invalid_request",
                "give code or code_base64, not both",
            ));
        }
        (None, None) => Vec::new(),
    };
    if code.is_empty() {
        return Err(Failure::invalid("missing_code", "the request has no code"));
    }
    Ok(code)
}

/// The code of a request body and its format: as named, else inferred from the code.
fn code_and_format(
    code: Option<String>,
    code_base64: Option<String>,
    format: Option<&str>,
) -> Result<(Vec<u8>, Format), Failure> {
    let code = code_of(code, code_base64)?;
    let format = match format {
        Some(f) => format_named(f)?,
        None => infer_format(&code),
    };
    Ok((code, format))
}

/// Code as a request body carries it: text when it is UTF-8, base64 otherwise.
fn encode_code(code: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(code) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(code)),
        ),
    }
}

/// A deploy; fields left `None` take the configured defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployRequest {
    pub service_id: ServiceId,
    pub format: Format,
    pub code: Arc<[u8]>,
    pub config: Option<Value>,
    pub restart: Option<RestartPolicy>,
    pub max_restarts: Option<u32>,
    pub max_seconds: Option<u32>,
    pub memory_mb: Option<u32>,
    pub cpu_ms_per_message: Option<u32>,
    pub mailbox: Option<u32>,
    pub startup_timeout_ms: Option<u32>,
    pub message_timeout_ms: Option<u32>,
    pub secrets: Vec<String>,
    /// Where the service may send HTTP requests (egress rules, inside its tenant's).
    pub egress: Vec<String>,
    /// Offer the service to agents as this tool.
    pub tool: Option<ToolSpec>,
    /// Check everything, start nothing.
    pub dry_run: bool,
}

impl DeployRequest {
    /// A request with every optional field left to its default.
    pub fn new(service_id: ServiceId, format: Format, code: impl Into<Arc<[u8]>>) -> Self {
        Self {
            service_id,
            format,
            code: code.into(),
            config: None,
            restart: None,
            max_restarts: None,
            max_seconds: None,
            memory_mb: None,
            cpu_ms_per_message: None,
            mailbox: None,
            startup_timeout_ms: None,
            message_timeout_ms: None,
            secrets: Vec::new(),
            egress: Vec::new(),
            tool: None,
            dry_run: false,
        }
    }
}

/// A deploy as JSON (`POST /v1/services`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    pub service_id: String,
    /// JavaScript source, or ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// ... the code in base64 (a WebAssembly component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_base64: Option<String>,
    /// `js` or `wasm`; inferred from the code when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_message: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Egress rules: `[https://]host[:port]`, `*.domain`, an exact `IP:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Offer the service to agents as this tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolSpec>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// A restart policy by name.
pub fn restart_named(s: &str) -> Result<RestartPolicy, Failure> {
    s.parse()
        .map_err(|e| Failure::invalid("invalid_restart", e))
}

impl TryFrom<DeployBody> for DeployRequest {
    type Error = Failure;

    fn try_from(b: DeployBody) -> Result<Self, Failure> {
        let id = service_id(&b.service_id)?;
        let (code, format) = code_and_format(b.code, b.code_base64, b.format.as_deref())?;
        Ok(Self {
            config: b.config,
            restart: b.restart.as_deref().map(restart_named).transpose()?,
            max_restarts: b.max_restarts,
            max_seconds: b.max_seconds,
            memory_mb: b.memory_mb,
            cpu_ms_per_message: b.cpu_ms_per_message,
            mailbox: b.mailbox,
            startup_timeout_ms: b.startup_timeout_ms,
            message_timeout_ms: b.message_timeout_ms,
            secrets: b.secrets,
            egress: b.egress,
            tool: b.tool,
            dry_run: b.dry_run,
            ..Self::new(id, format, code)
        })
    }
}

impl From<&DeployRequest> for DeployBody {
    fn from(r: &DeployRequest) -> Self {
        let (code, code_base64) = encode_code(&r.code);
        Self {
            service_id: r.service_id.to_string(),
            code,
            code_base64,
            format: Some(r.format.to_string()),
            config: r.config.clone(),
            restart: r.restart.map(|p| p.as_str().to_string()),
            max_restarts: r.max_restarts,
            max_seconds: r.max_seconds,
            memory_mb: r.memory_mb,
            cpu_ms_per_message: r.cpu_ms_per_message,
            mailbox: r.mailbox,
            startup_timeout_ms: r.startup_timeout_ms,
            message_timeout_ms: r.message_timeout_ms,
            secrets: r.secrets.clone(),
            egress: r.egress.clone(),
            tool: r.tool.clone(),
            dry_run: r.dry_run,
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub service_id: ServiceId,
    pub code_hash: String,
    pub version: u64,
    /// The `service_deployed` event (none for a dry run).
    pub event_id: Option<u64>,
    /// False when an identical service already ran (an idempotent success).
    pub created: bool,
    pub dry_run: bool,
    /// Whether the code exports snapshot/restore.
    pub has_state: bool,
}

/// How to kill a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KillOptions {
    /// How long a graceful kill may take before it becomes forced; `None` is the default.
    pub timeout: Option<Duration>,
    /// Stop at once, without finishing the current message or taking a snapshot.
    pub force: bool,
}

/// The query of a kill (`DELETE /v1/services/{id}?force&timeout_ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillParams {
    #[serde(default)]
    pub force: bool,
    /// Zero is the default.
    #[serde(default)]
    pub timeout_ms: u64,
}

impl From<KillParams> for KillOptions {
    fn from(p: KillParams) -> Self {
        Self {
            timeout: millis(i64::try_from(p.timeout_ms).unwrap_or(i64::MAX)),
            force: p.force,
        }
    }
}

/// What a kill did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    pub service_id: ServiceId,
    pub event_id: u64,
    pub forced: bool,
    /// The size of the snapshot a graceful kill took, if the service exports one.
    pub snapshot_bytes: Option<u64>,
}

/// Which services `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<ServiceState>,
    /// 0 means 100; at most 1000.
    pub limit: usize,
    pub offset: usize,
}

/// The query of a list (`GET /v1/services?limit&offset&state`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A state by name.
pub fn state_named(s: &str) -> Result<ServiceState, Failure> {
    s.parse().map_err(|e| Failure::invalid("invalid_state", e))
}

impl TryFrom<ListParams> for ListFilter {
    type Error = Failure;

    fn try_from(p: ListParams) -> Result<Self, Failure> {
        Ok(Self {
            state: p
                .state
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(state_named)
                .transpose()?,
            limit: p.limit,
            offset: p.offset,
        })
    }
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
    /// How many services matched, over all pages.
    pub total: usize,
}

/// The query of a call (`POST /v1/services/{id}/call?timeout_ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallParams {
    /// Zero is the default; above the configured maximum is refused.
    #[serde(default)]
    pub timeout_ms: u64,
}

impl CallParams {
    pub fn timeout(&self) -> Option<Duration> {
        millis(i64::try_from(self.timeout_ms).unwrap_or(i64::MAX))
    }
}

/// A call's answer: the service's reply, passed through as the JSON it wrote (at any
/// depth, its type intact).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub reply: Box<RawValue>,
}

impl Reply {
    /// Wraps a reply; refuses text that is not one JSON value.
    pub fn new(text: String) -> Result<Self, Failure> {
        RawValue::from_string(text)
            .map(|reply| Self { reply })
            .map_err(|e| Failure::invalid("invalid_reply", format!("the reply is not JSON: {e}")))
    }

    /// The reply's JSON text.
    pub fn text(&self) -> &str {
        self.reply.get()
    }
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// A cast's answer: queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub service_id: ServiceId,
    pub accepted: bool,
}

/// How to replace a service's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapMode {
    /// In place between two messages, carrying the state when both versions export
    /// snapshot/restore.
    #[default]
    Swap,
    /// Kill and deploy again under the same id.
    Replace,
}

impl std::str::FromStr for SwapMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "swap" => Ok(SwapMode::Swap),
            "replace" => Ok(SwapMode::Replace),
            other => Err(format!("unknown swap mode {other:?}; use swap or replace")),
        }
    }
}

/// A swap mode by name (empty: the default).
pub fn swap_mode_named(s: &str) -> Result<SwapMode, Failure> {
    s.parse().map_err(|e| Failure::invalid("invalid_mode", e))
}

/// A hot swap.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapRequest {
    pub service_id: ServiceId,
    pub format: Format,
    pub code: Arc<[u8]>,
    pub mode: SwapMode,
    /// `None` takes the default window.
    pub rollback_window: Option<Duration>,
}

/// A swap as JSON (`POST /v1/services/{id}/swap`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `swap` (default) or `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Zero takes the default.
    #[serde(default)]
    pub rollback_window_ms: u32,
}

impl SwapBody {
    /// The swap of service `id` this body asks for.
    pub fn into_request(self, id: &str) -> Result<SwapRequest, Failure> {
        let service_id = service_id(id)?;
        let (code, format) = code_and_format(self.code, self.code_base64, self.format.as_deref())?;
        Ok(SwapRequest {
            service_id,
            format,
            code: code.into(),
            mode: swap_mode_named(self.mode.as_deref().unwrap_or(""))?,
            rollback_window: millis(i64::from(self.rollback_window_ms)),
        })
    }
}

impl From<&SwapRequest> for SwapBody {
    fn from(r: &SwapRequest) -> Self {
        let (code, code_base64) = encode_code(&r.code);
        Self {
            code,
            code_base64,
            format: Some(r.format.to_string()),
            mode: Some(
                match r.mode {
                    SwapMode::Swap => "swap",
                    SwapMode::Replace => "replace",
                }
                .into(),
            ),
            rollback_window_ms: r
                .rollback_window
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        }
    }
}

/// How a swap was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapMethod {
    Swap,
    Replace,
    /// The code already ran; nothing changed.
    Unchanged,
}

impl SwapMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SwapMethod::Swap => "swap",
            SwapMethod::Replace => "replace",
            SwapMethod::Unchanged => "unchanged",
        }
    }
}

impl std::str::FromStr for SwapMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "swap" => Ok(SwapMethod::Swap),
            "replace" => Ok(SwapMethod::Replace),
            "unchanged" => Ok(SwapMethod::Unchanged),
            other => Err(format!("unknown swap method {other:?}")),
        }
    }
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swapped {
    pub service_id: ServiceId,
    pub version: u64,
    pub code_hash: String,
    /// The `hot_swap_started` event (or the `service_deployed` of a replace).
    pub event_id: u64,
    pub method: SwapMethod,
    pub state_carried: bool,
    pub snapshot_bytes: Option<u64>,
}

/// One line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Per service, from 1, in order.
    pub seq: u64,
    /// UTC ns.
    #[serde(rename = "timestamp")]
    pub ts: i64,
    pub level: String,
    pub message: String,
}

/// The query of a log read (`GET /v1/services/{id}/logs?tail&follow`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// How many past lines: zero (or none) means 100, at most 1000.
    #[serde(default)]
    pub tail: Option<u32>,
    #[serde(default)]
    pub follow: bool,
}

/// Past log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub lines: Vec<LogLine>,
}

/// A service offered as a tool, as a caller may call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTool {
    pub service_id: ServiceId,
    pub tool: ToolSpec,
}

/// The service tools a caller may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTools {
    pub tools: Vec<ServiceTool>,
}

/// Metadata pairs, in key order.
pub type Metadata = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Result<DeployRequest, Failure> {
        DeployRequest::try_from(serde_json::from_value::<DeployBody>(v).unwrap())
    }

    #[test]
    fn deploy_bodies_are_checked_with_named_reasons() {
        let r = body(serde_json::json!({"service_id": "a", "code": "x"})).unwrap();
        assert_eq!((r.format, &*r.code), (Format::Js, &b"x"[..]));
        let wasm = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01");
        let r = body(serde_json::json!({"service_id": "a", "code_base64": wasm})).unwrap();
        assert_eq!(r.format, Format::Wasm);
        for (v, reason) in [
            (
                serde_json::json!({"service_id": "a b", "code": "x"}),
                "invalid_service_id",
            ),
            (serde_json::json!({"service_id": "a"}), "missing_code"),
            (
                serde_json::json!({"service_id": "a", "code": "x", "code_base64": "eA=="}),
                "invalid_request",
            ),
            (
                serde_json::json!({"service_id": "a", "code_base64": "%%"}),
                "invalid_code",
            ),
            (
                serde_json::json!({"service_id": "a", "code": "x", "format": "elixir_source"}),
                "unsupported_format",
            ),
            (
                serde_json::json!({"service_id": "a", "code": "x", "restart": "sometimes"}),
                "invalid_restart",
            ),
        ] {
            assert_eq!(body(v.clone()).unwrap_err().reason, reason, "{v}");
        }
        // A request encodes back to a body that decodes to it.
        let mut r = DeployRequest::new(
            service_id("b").unwrap(),
            Format::Wasm,
            b"\0asm\xff".to_vec(),
        );
        r.memory_mb = Some(8);
        let round = DeployRequest::try_from(DeployBody::from(&r)).unwrap();
        assert_eq!(round, r);
    }

    #[test]
    fn replies_keep_their_type_at_any_depth() {
        let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
        let r = Reply::new(deep.clone()).unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, format!("{{\"reply\":{deep}}}"));
        assert_eq!(Reply::new("{".into()).unwrap_err().reason, "invalid_reply");
    }

    #[test]
    fn params() {
        let f = ListFilter::try_from(ListParams {
            state: Some("running".into()),
            ..ListParams::default()
        })
        .unwrap();
        assert_eq!(f.state, Some(ServiceState::Running));
        let e = ListFilter::try_from(ListParams {
            state: Some("dancing".into()),
            ..ListParams::default()
        })
        .unwrap_err();
        assert_eq!(e.reason, "invalid_state");
        let k = KillOptions::from(KillParams {
            force: true,
            timeout_ms: 0,
        });
        assert_eq!((k.timeout, k.force), (None, true));
        let s = SwapBody {
            code: Some("x".into()),
            mode: Some("sideways".into()),
            ..SwapBody::default()
        };
        assert_eq!(s.into_request("a").unwrap_err().reason, "invalid_mode");
    }
}
