//! Solo's own tools: one per operation an agent needs, each with a JSON Schema of its
//! arguments (derived from the argument type), a description written for a model, and
//! hints (read-only, destructive, idempotent). Their names start with `solo_`, which no
//! service's tool may take.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use solo_types::api::*;
use solo_types::{EventQuery, Order, ToolSpec};

use crate::Backend;

/// What a tool does to the world, as hints to the agent.
#[derive(Clone, Copy)]
enum Effect {
    /// Reads only.
    Read,
    /// Changes something, and the same call again changes nothing more.
    Idempotent,
    /// Changes something; calling again does it again.
    Write,
    /// Removes or replaces something.
    Destroy,
}

/// One of Solo's tools.
pub struct PlatformTool {
    pub name: &'static str,
    description: &'static str,
    effect: Effect,
    schema: fn() -> Arc<JsonObject>,
}

fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::tool::schema_for_input::<T>()
        .unwrap_or_else(|_| rmcp::handler::server::common::schema_for_empty_input())
}

impl PlatformTool {
    /// The tool as `tools/list` shows it.
    pub fn tool(&self) -> Tool {
        let a = ToolAnnotations::new().open_world(false);
        let a = match self.effect {
            Effect::Read => a.read_only(true).destructive(false).idempotent(true),
            Effect::Idempotent => a.read_only(false).destructive(false).idempotent(true),
            Effect::Write => a.read_only(false).destructive(false).idempotent(false),
            Effect::Destroy => a.read_only(false).destructive(true).idempotent(true),
        };
        Tool::new(self.name, self.description, (self.schema)()).with_annotations(a)
    }
}

macro_rules! tools {
    ($($name:literal, $args:ty, $effect:ident, $desc:literal;)*) => {
        /// Every tool of Solo's own, in the order `tools/list` shows them.
        pub static PLATFORM_TOOLS: &[PlatformTool] = &[$(PlatformTool {
            name: $name,
            description: $desc,
            effect: Effect::$effect,
            schema: schema::<$args>,
        }),*];
    };
}

tools! {
    "solo_whoami", NoArgs, Read,
        "Who you are to this Solo server: your tenant, your role (tenant, admin, or a capability token with its scope), and your quotas (services, memory, requests in flight, the longest timeout) with what you use of them. Call it first to learn your limits.";
    "solo_list_services", ListArgs, Read,
        "List your services with their state (running, crashed, failed, ...), format, version, restarts and messages handled. Filter by state; page with limit and offset.";
    "solo_status", IdArgs, Read,
        "One service's full status: state, code hash and version, uptime, restarts, memory, mailbox, CPU time, its limits, the tool it is offered as, and its last crash report (kind, message, guest backtrace, last log lines) if it crashed.";
    "solo_deploy", DeployArgs, Idempotent,
        "Deploy a service: JavaScript source (an ES module exporting handleCall, and optionally init, handleCast, snapshot and restore) in `code`, or a WebAssembly component in `code_base64`. It runs sandboxed, one message at a time, restarted if it crashes. Deploying identical code and settings again changes nothing; different code under an existing id is refused (use solo_swap). With dry_run it is only checked. A syntax error comes back with its line and column. Declare `tool` to offer the service to agents as a tool of its own.";
    "solo_call", CallArgs, Write,
        "Call a service with a JSON request and wait for its JSON reply (up to timeout_ms). A refusal names its reason: the service's own error (service_error), a crash (service_crashed, with the crash report), not_found, a full mailbox, or a timeout.";
    "solo_cast", CastArgs, Write,
        "Send a service a JSON message without waiting for an answer (its handleCast runs).";
    "solo_swap", SwapArgs, Destroy,
        "Replace a running service's code while it runs: between two messages, the old version's state moves to the new one (snapshot/restore), no message is lost, and a crash of the new version within rollback_window_ms puts the old one back. The same code again changes nothing. mode `replace` restarts under the same id instead, without state.";
    "solo_kill", KillArgs, Destroy,
        "Stop a service for good and remove it with its stored data: gracefully (it finishes its current message and takes a snapshot) or with force (at once).";
    "solo_logs", LogsArgs, Read,
        "A service's last log lines (what it wrote with log), oldest first: `tail` of them (0: 100; at most 1000).";
    "solo_events", EventsArgs, Read,
        "Query your tenant's event log: every decision Solo made (deploys, crashes, restarts, swaps, kills, secret accesses, capability grants and denials, custom.* events your services emit), each with an id, a timestamp and a JSON payload. Filter by service, kind (a trailing * matches a prefix) and id; page with after_id (oldest first) or before_id with descending.";
    "solo_verify_events", NoArgs, Read,
        "Check the whole event log's hash chain (admin only): says whether the log is intact, and where it breaks if it is not.";
    "solo_put_secret", PutSecretArgs, Idempotent,
        "Store (or replace) a secret of your tenant, encrypted at rest. A service reads it only if its deploy lists the name under secrets. The value is never shown back: no tool returns a secret's value.";
    "solo_list_secrets", NoArgs, Read,
        "List the names of your tenant's secrets (never their values).";
    "solo_delete_secret", NameArgs, Destroy,
        "Delete a secret of your tenant; says whether it existed.";
    "solo_bind_secret", BindArgs, Idempotent,
        "Let your services send a secret to these hosts (a name, *.domain, or an IP): a service that lists the secret writes {{secret:NAME}} in a request header and Solo puts the value in on the way out, only to a bound host; the value never enters the service. With unbind, remove the hosts. Answers where the secret may go.";
    "solo_egress_rules", NoArgs, Read,
        "Where your services may send HTTP requests: your tenant's egress rules (set by an admin). A deploy lists the ones a service uses under egress (each inside these); everything else is refused.";
    "solo_grant", GrantArgs, Write,
        "Mint a capability token for another agent: it allows exactly the given permissions (call, read, write, deploy, kill, swap, register) on one resource (service:ID, secret:NAME, events, kernel, or * for everything) until it expires (ttl_seconds, default one hour). The token is shown once; pass it as `Authorization: Bearer <token>`.";
    "solo_attenuate", AttenuateArgs, Write,
        "Mint a narrower token from a token you hold: fewer permissions, a narrower resource, or a shorter life. It can never allow more than its parent, and revoking the parent revokes it.";
    "solo_revoke", TokenArgs, Destroy,
        "Revoke a capability token (or its hash) and every token attenuated from it; says how many were revoked.";
    "solo_list_capabilities", NoArgs, Read,
        "List your tenant's capabilities: hash, resource, permissions, expiry, revoked, parent (never the tokens).";
    "solo_discover", DiscoverArgs, Read,
        "Find registered services of your tenant: with a name, the live ones registered under it whose metadata has every filter pair; without, all registrations.";
    "solo_tree", NoArgs, Read,
        "The supervision tree: Solo's system components and your tenant's services under their supervisors, with their state and restarts.";
}

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The service id.
    service_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindArgs {
    /// The secret's name.
    name: String,
    /// Host names, `*.domain` wildcards or IP addresses.
    hosts: Vec<String>,
    /// Remove these hosts instead of adding them.
    unbind: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The secret's name: 1-256 characters of [A-Za-z0-9_.-].
    name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenArgs {
    /// A capability token (solo_...) or its hash.
    token: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only services in this state: running, crashed, failed, stopping, ...
    state: Option<String>,
    /// How many at most (default 100, at most 1000).
    limit: Option<usize>,
    /// How many to skip.
    offset: Option<usize>,
}

/// A service offered to agents as a tool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolArgs {
    /// The tool's name: 1-64 characters of [A-Za-z0-9_-], unique in your tenant, not
    /// starting with solo_.
    name: String,
    /// What the tool does, written for a model.
    description: String,
    /// The JSON Schema of the tool's arguments (an object schema); calling the tool calls
    /// the service with the arguments as its request.
    input_schema: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    /// The service id: 1-64 characters of [A-Za-z0-9_-].
    service_id: String,
    /// JavaScript source (an ES module).
    code: Option<String>,
    /// Or a WebAssembly component, base64-encoded.
    code_base64: Option<String>,
    /// js or wasm (default: inferred from the code).
    format: Option<String>,
    /// The JSON the service's init receives.
    config: Option<Value>,
    /// permanent (default), transient or temporary.
    restart: Option<String>,
    /// The most memory the service may use, in MiB.
    memory_mb: Option<u32>,
    /// The CPU time one message may use, in milliseconds.
    cpu_ms_per_message: Option<u32>,
    /// How many messages may wait in its mailbox.
    mailbox: Option<u32>,
    /// Names of secrets the service may read.
    secrets: Option<Vec<String>>,
    /// Where the service may send HTTP requests (fetch, wasi:http): rules like
    /// `api.example.com`, `*.example.com`, inside your tenant's egress rules.
    egress: Option<Vec<String>>,
    /// Offer the service to agents as this tool.
    tool: Option<ToolArgs>,
    /// Check everything, start nothing.
    dry_run: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallArgs {
    /// The service id.
    service_id: String,
    /// The request: any JSON value.
    request: Value,
    /// How long to wait for the reply (default 5000; at most the server's limit).
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CastArgs {
    /// The service id.
    service_id: String,
    /// The message: any JSON value.
    message: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapArgs {
    /// The service id.
    service_id: String,
    /// The new JavaScript source.
    code: Option<String>,
    /// Or the new WebAssembly component, base64-encoded.
    code_base64: Option<String>,
    /// js or wasm (default: inferred).
    format: Option<String>,
    /// swap (default: keep state, roll back on an early crash) or replace.
    mode: Option<String>,
    /// How long the old version is kept for a rollback (default 30000, at most 600000).
    rollback_window_ms: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillArgs {
    /// The service id.
    service_id: String,
    /// Stop at once, without finishing the current message or taking a snapshot.
    force: Option<bool>,
    /// How long a graceful stop may take (default 5000).
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// The service id.
    service_id: String,
    /// How many of the last lines (0: 100; at most 1000).
    tail: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsArgs {
    /// Only this service's events.
    service_id: Option<String>,
    /// Only events of this kind; a trailing * matches a prefix (custom.*).
    kind: Option<String>,
    /// Only events after this id (the next page of an oldest-first read).
    after_id: Option<u64>,
    /// Only events before this id (the next page of a newest-first read).
    before_id: Option<u64>,
    /// Newest first.
    descending: Option<bool>,
    /// How many at most (default 100).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretArgs {
    /// The secret's name: 1-256 characters of [A-Za-z0-9_.-].
    name: String,
    /// The value (text; at most 64 KiB).
    value: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantArgs {
    /// service:ID, secret:NAME, events, kernel, or * for everything in your tenant.
    resource: String,
    /// Some of call, read, write, deploy, kill, swap, register.
    permissions: Vec<String>,
    /// Lifetime in seconds (default 3600).
    ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttenuateArgs {
    /// The token to narrow.
    token: String,
    /// A narrower resource (default: the parent's).
    resource: Option<String>,
    /// Fewer permissions (default: the parent's).
    permissions: Option<Vec<String>>,
    /// A shorter lifetime in seconds (default: the parent's).
    ttl_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverArgs {
    /// The registered name; all registrations when left out.
    name: Option<String>,
    /// Metadata pairs a registration must have (needs a name).
    filters: Option<BTreeMap<String, String>>,
}

/// A tool's arguments, refused with `invalid_arguments` naming what is wrong.
fn args<T: DeserializeOwned>(a: JsonObject) -> Result<T, Failure> {
    serde_json::from_value(Value::Object(a)).map_err(|e| {
        Failure::invalid(
            "invalid_arguments",
            format!("the arguments do not fit the tool's schema: {e}"),
        )
    })
}

fn ms(v: Option<u64>) -> Option<Duration> {
    v.filter(|&m| m > 0).map(Duration::from_millis)
}

fn json<T: serde::Serialize>(v: Result<T, Failure>) -> Result<Value, Failure> {
    v.and_then(|v| {
        serde_json::to_value(v)
            .map_err(|e| Failure::new(solo_types::Code::Internal, "internal", e.to_string()))
    })
}

/// Runs Solo's tool `name`; `None` when there is no such tool.
pub(crate) async fn run<B: Backend>(
    b: &B,
    name: &str,
    a: JsonObject,
) -> Option<Result<Value, Failure>> {
    if !PLATFORM_TOOLS.iter().any(|t| t.name == name) {
        return None;
    }
    Some(exec(b, name, a).await)
}

async fn exec<B: Backend>(b: &B, name: &str, a: JsonObject) -> Result<Value, Failure> {
    match name {
        "solo_whoami" => json(b.whoami().await),
        "solo_list_services" => {
            let l: ListArgs = args(a)?;
            let filter = ListFilter::try_from(ListParams {
                limit: l.limit.unwrap_or(0),
                offset: l.offset.unwrap_or(0),
                state: l.state,
            })?;
            json(b.list(filter).await)
        }
        "solo_status" => json(b.status(service_id(&args::<IdArgs>(a)?.service_id)?).await),
        "solo_deploy" => json(b.deploy(deploy_request(args(a)?)?).await),
        "solo_call" => {
            let c: CallArgs = args(a)?;
            let reply = b
                .call(
                    service_id(&c.service_id)?,
                    c.request.to_string(),
                    ms(c.timeout_ms),
                )
                .await?;
            serde_json::from_str(&reply)
                .map_err(|e| Failure::invalid("invalid_reply", e.to_string()))
        }
        "solo_cast" => {
            let c: CastArgs = args(a)?;
            json(
                b.cast(service_id(&c.service_id)?, c.message.to_string())
                    .await,
            )
        }
        "solo_swap" => {
            let s: SwapArgs = args(a)?;
            let body = SwapBody {
                code: s.code,
                code_base64: s.code_base64,
                format: s.format,
                mode: s.mode,
                rollback_window_ms: s.rollback_window_ms.unwrap_or(0),
            };
            json(b.swap(body.into_request(&s.service_id)?).await)
        }
        "solo_kill" => {
            let k: KillArgs = args(a)?;
            let opts = KillOptions {
                timeout: ms(k.timeout_ms),
                force: k.force.unwrap_or(false),
            };
            json(b.kill(service_id(&k.service_id)?, opts).await)
        }
        "solo_logs" => {
            let l: LogsArgs = args(a)?;
            json(
                b.logs(service_id(&l.service_id)?, l.tail.unwrap_or(0))
                    .await,
            )
        }
        "solo_events" => json(b.events(event_query(args(a)?)?).await),
        "solo_verify_events" => json(b.verify_events().await),
        "solo_put_secret" => {
            // The answer names the secret and the event; never the value.
            let p: PutSecretArgs = args(a)?;
            json(b.put_secret(p.name, p.value.into_bytes()).await)
        }
        "solo_list_secrets" => json(b.list_secrets().await),
        "solo_delete_secret" => json(b.delete_secret(args::<NameArgs>(a)?.name).await),
        "solo_bind_secret" => {
            let x: BindArgs = args(a)?;
            json(
                b.bind_secret(x.name, x.hosts, x.unbind.unwrap_or(false))
                    .await,
            )
        }
        "solo_egress_rules" => json(b.egress_rules().await),
        "solo_grant" => {
            let g: GrantArgs = args(a)?;
            let req = GrantRequest::try_from(GrantBody {
                resource: g.resource,
                permissions: g.permissions,
                ttl_seconds: g.ttl_seconds.unwrap_or(0),
            })?;
            json(b.grant(req).await)
        }
        "solo_attenuate" => {
            let t: AttenuateArgs = args(a)?;
            let body = AttenuateBody {
                token: t.token,
                resource: t.resource,
                permissions: t.permissions,
                ttl_seconds: t.ttl_seconds,
            };
            let n = body.narrowing()?;
            json(b.attenuate(body.token, n).await)
        }
        "solo_revoke" => json(b.revoke(args::<TokenArgs>(a)?.token).await),
        "solo_list_capabilities" => json(b.list_capabilities().await),
        "solo_discover" => {
            let d: DiscoverArgs = args(a)?;
            if d.name.is_none() && d.filters.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(Failure::invalid("invalid_arguments", "filters need a name"));
            }
            json(b.discover(d.name, d.filters.unwrap_or_default()).await)
        }
        "solo_tree" => json(b.tree().await),
        other => Err(Failure::new(
            solo_types::Code::NotFound,
            "unknown_tool",
            format!("no tool named {other}"),
        )),
    }
}

fn deploy_request(d: DeployArgs) -> Result<DeployRequest, Failure> {
    DeployRequest::try_from(DeployBody {
        service_id: d.service_id,
        code: d.code,
        code_base64: d.code_base64,
        format: d.format,
        config: d.config,
        restart: d.restart,
        max_restarts: None,
        max_seconds: None,
        memory_mb: d.memory_mb,
        cpu_ms_per_message: d.cpu_ms_per_message,
        mailbox: d.mailbox,
        startup_timeout_ms: None,
        message_timeout_ms: None,
        secrets: d.secrets.unwrap_or_default(),
        egress: d.egress.unwrap_or_default(),
        tool: d.tool.map(|t| ToolSpec {
            name: t.name,
            description: t.description,
            input_schema: t.input_schema,
        }),
        dry_run: d.dry_run.unwrap_or(false),
    })
}

fn event_query(e: EventsArgs) -> Result<EventQuery, Failure> {
    let mut q = EventQuery::try_from(EventParams {
        service_id: e.service_id,
        kind: e.kind,
        after_id: e.after_id,
        before_id: e.before_id,
        limit: e.limit.unwrap_or(100),
        ..EventParams::default()
    })?;
    if e.descending.unwrap_or(false) {
        q.order = Order::Descending;
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_a_description_and_hints() {
        let mut names = std::collections::BTreeSet::new();
        for t in PLATFORM_TOOLS {
            let tool = t.tool();
            assert!(
                tool.name.starts_with(solo_types::RESERVED_TOOL_PREFIX),
                "{}",
                tool.name
            );
            assert!(names.insert(tool.name.clone()), "{} twice", tool.name);
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&Value::from("object")),
                "{}",
                tool.name
            );
            assert!(
                tool.description.as_deref().is_some_and(|d| d.len() > 40),
                "{}",
                tool.name
            );
            assert!(
                tool.annotations
                    .as_ref()
                    .and_then(|a| a.read_only_hint)
                    .is_some()
            );
        }
        let deploy = PLATFORM_TOOLS
            .iter()
            .find(|t| t.name == "solo_deploy")
            .unwrap()
            .tool();
        let props = deploy.input_schema["properties"].as_object().unwrap();
        assert!(props.contains_key("code") && props.contains_key("tool"));
        assert!(props["service_id"]["description"].as_str().is_some());
    }

    #[test]
    fn arguments_that_do_not_fit_are_refused_with_a_reason() {
        let e = args::<IdArgs>(
            serde_json::json!({"service_id": 3})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.reason, "invalid_arguments");
        let e = args::<IdArgs>(
            serde_json::json!({"service_id": "a", "x": 1})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap_err();
        assert!(e.message.contains('x'), "{e}");
    }
}
