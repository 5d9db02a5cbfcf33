//! The deploy spec and the service status: what an agent asks for and what it sees.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::ServiceId;

/// The format of a service's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A WebAssembly component targeting `solo:service/service`.
    Wasm,
    /// JavaScript source: an ES module exporting the entry points.
    Js,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Wasm => "wasm",
            Format::Js => "js",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wasm" => Ok(Format::Wasm),
            "js" | "javascript" => Ok(Format::Js),
            "elixir_source" => Err("format elixir_source is not supported; use js or wasm".into()),
            other => Err(format!("unknown format {other:?}; use js or wasm")),
        }
    }
}

/// When a crashed service is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Always.
    #[default]
    Permanent,
    /// Only after a crash.
    Transient,
    /// Never.
    Temporary,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Permanent => "permanent",
            RestartPolicy::Transient => "transient",
            RestartPolicy::Temporary => "temporary",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "permanent" => Ok(RestartPolicy::Permanent),
            "transient" => Ok(RestartPolicy::Transient),
            "temporary" => Ok(RestartPolicy::Temporary),
            other => Err(format!(
                "unknown restart policy {other:?}; use permanent, transient or temporary"
            )),
        }
    }
}

/// Per-service limits (`docs/design.md`, "Deploy spec").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLimits {
    pub memory_mb: u32,
    pub cpu_ms_per_message: u32,
    pub mailbox: u32,
    pub startup_timeout_ms: u32,
    /// How long one message may take in wall-clock time before it is a crash of kind
    /// `timeout` (records written before it existed take the default).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u32,
}

/// The wall-clock limit of one message when a deployment record predates it.
pub const fn default_message_timeout_ms() -> u32 {
    60_000
}

/// A resolved deploy spec: every field set (defaults applied), validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub service_id: ServiceId,
    pub format: Format,
    /// The JSON handed to `init`.
    pub config: serde_json::Value,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub max_seconds: u32,
    pub limits: ServiceLimits,
    /// Secret names the service may read.
    pub secrets: Vec<String>,
    /// Where the service may send HTTP requests; each rule inside its tenant's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<crate::egress::Rule>,
    /// The service offered to agents as a tool (MCP), if its deploy declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolSpec>,
}

/// A service offered to agents as a tool: calling the tool calls the service with the
/// tool's arguments as the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique within the tenant; `solo_` is reserved for Solo's
    /// own tools.
    pub name: String,
    /// What the tool does, for a model: when to use it and what it returns.
    pub description: String,
    /// The JSON Schema of the arguments: an object schema (`"type": "object"`).
    pub input_schema: serde_json::Value,
}

/// The prefix of Solo's own tool names, which a service's tool may not take.
pub const RESERVED_TOOL_PREFIX: &str = "solo_";

impl ToolSpec {
    /// The longest description accepted, in bytes.
    pub const MAX_DESCRIPTION: usize = 4096;
    /// The largest input schema accepted, in bytes of JSON.
    pub const MAX_SCHEMA: usize = 64 << 10;

    /// Checks the name, the description and the schema; the error says which is wrong.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!(
                "tool name {:?}: use 1-64 characters of [A-Za-z0-9_-]",
                self.name
            ));
        }
        if self.name.starts_with(RESERVED_TOOL_PREFIX) {
            return Err(format!(
                "tool name {:?}: names starting with {RESERVED_TOOL_PREFIX} are Solo's own",
                self.name
            ));
        }
        if self.description.trim().is_empty() || self.description.len() > Self::MAX_DESCRIPTION {
            return Err(format!(
                "a tool needs a description of 1 to {} bytes",
                Self::MAX_DESCRIPTION
            ));
        }
        let schema = self
            .input_schema
            .as_object()
            .ok_or("a tool's input_schema must be a JSON object")?;
        if schema.get("type").and_then(serde_json::Value::as_str) != Some("object") {
            return Err(
                "a tool's input_schema must describe an object (\"type\": \"object\")".into(),
            );
        }
        if self.input_schema.to_string().len() > Self::MAX_SCHEMA {
            return Err(format!(
                "a tool's input_schema is over {} bytes",
                Self::MAX_SCHEMA
            ));
        }
        Ok(())
    }
}

/// A service's lifecycle state (`docs/design.md`, "Lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Deployed,
    Starting,
    Running,
    /// Crashed and being restarted.
    Crashed,
    /// Crashed past its restart intensity (or temporary and crashed): not restarted.
    Failed,
    DeploymentFailed,
    Stopping,
    Undeployed,
    /// Idle, its state saved and its instance given back: the next message wakes it.
    Hibernated,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Deployed => "deployed",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Crashed => "crashed",
            ServiceState::Failed => "failed",
            ServiceState::DeploymentFailed => "deployment_failed",
            ServiceState::Stopping => "stopping",
            ServiceState::Undeployed => "undeployed",
            ServiceState::Hibernated => "hibernated",
        }
    }

    /// Whether the service is alive (running or about to run again).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            ServiceState::Deployed
                | ServiceState::Starting
                | ServiceState::Running
                | ServiceState::Crashed
                | ServiceState::Hibernated
        )
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [
            ServiceState::Deployed,
            ServiceState::Starting,
            ServiceState::Running,
            ServiceState::Crashed,
            ServiceState::Failed,
            ServiceState::DeploymentFailed,
            ServiceState::Stopping,
            ServiceState::Undeployed,
            ServiceState::Hibernated,
        ];
        let lower = s.to_ascii_lowercase();
        all.into_iter()
            .find(|st| st.as_str() == lower)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Why a service crashed, written so an agent can fix its code from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// `trap`, `cpu_limit`, `memory_limit`, `stack_overflow`, `invalid_reply`,
    /// `init_failed`, `startup_timeout`, `internal`.
    pub kind: String,
    pub message: String,
    /// The guest's stack at the crash, where available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// The service's last log lines (at most 20), oldest first.
    #[serde(default)]
    pub log_tail: Vec<String>,
    /// UTC ns.
    pub at: i64,
}

/// What `status` reports about a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service_id: ServiceId,
    pub state: ServiceState,
    pub format: Format,
    /// SHA-256 of the code, lower-case hex.
    pub code_hash: String,
    /// 1 at deploy, one more per hot swap.
    pub version: u64,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub memory_bytes: u64,
    pub mailbox_len: u64,
    pub messages: u64,
    /// CPU time consumed by all messages (the "reductions" analogue).
    pub cpu_time_us: u64,
    pub last_error: Option<CrashReport>,
    pub restart: RestartPolicy,
    pub limits: ServiceLimits,
    /// UTC ns of the deploy.
    pub deployed_at: i64,
    /// The tool the service is offered as, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolSpec>,
    /// The cluster node running the service (none on an embedded server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}
