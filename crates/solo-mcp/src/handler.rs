//! The MCP server: `initialize` (tools, and resources with subscriptions where the
//! client stays connected), `tools/list` (Solo's tools, then the caller's services offered
//! as tools), `tools/call` (a refusal is a result with `isError`; only an unknown tool or
//! a malformed request is a protocol error), the resources, and on a session the
//! `tools/list_changed` notification when services offered as tools come and go.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, JsonObject, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::Value;
use solo_types::api::{Failure, ServiceTools, WatchRequest};
use solo_types::{Code, ServiceId};
use tokio::task::AbortHandle;

use crate::results::{answer, refusal};
use crate::{Backend, Connect, resources, tools};

/// The newest protocol revision served: `resources/subscribe`, which the event feed and
/// the logs use, is gone from later ones.
const NEWEST_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// What to tell an agent about this server when it connects.
const INSTRUCTIONS: &str = "Solo runs services you write (JavaScript, or WebAssembly components) in a sandbox, supervised and restarted when they crash, and records every decision in a tamper-evident event log. Call solo_whoami first to learn your tenant and quotas; solo_deploy a service, then solo_call it. A refusal says why (its reason code) and, for a crash, carries the crash report. Services deployed with a `tool` appear in this tool list under their own names.";

/// Solo as an MCP server, for one connection (stdio) or one request (stateless HTTP).
pub struct SoloMcp<C: Connect> {
    connect: C,
    /// Service tools by name, as last listed (reused between calls on a session).
    routes: Mutex<HashMap<String, ServiceId>>,
    tasks: Tasks,
}

/// Background work of a session, stopped when the session ends.
#[derive(Default)]
struct Tasks {
    watcher: Mutex<Option<AbortHandle>>,
    subscriptions: Mutex<HashMap<String, AbortHandle>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.get_mut().take() {
            w.abort();
        }
        for (_, s) in self.subscriptions.get_mut().drain() {
            s.abort();
        }
    }
}

impl<C: Connect> SoloMcp<C> {
    pub fn new(connect: C) -> Self {
        Self {
            connect,
            routes: Mutex::new(HashMap::new()),
            tasks: Tasks::default(),
        }
    }

    fn backend(&self, cx: &RequestContext<RoleServer>) -> Result<C::Backend, McpError> {
        self.connect
            .connect(&cx.extensions)
            .map_err(|f| protocol_error(&f))
    }

    /// The service tools the caller may call, remembered for routing calls.
    async fn service_tools(&self, b: &C::Backend) -> Result<ServiceTools, Failure> {
        let tools = b.service_tools().await?;
        *self.routes.lock() = tools
            .tools
            .iter()
            .map(|t| (t.tool.name.clone(), t.service_id.clone()))
            .collect();
        Ok(tools)
    }

    /// The service behind tool `name`, looked up again when it is not known.
    async fn route(&self, b: &C::Backend, name: &str) -> Result<Option<ServiceId>, Failure> {
        if let Some(id) = self.routes.lock().get(name) {
            return Ok(Some(id.clone()));
        }
        self.service_tools(b).await?;
        Ok(self.routes.lock().get(name).cloned())
    }

    /// Calls the service offered as tool `name`; on a session, a route that went stale
    /// (the service was killed and the name taken by another) is looked up once more.
    async fn call_service(
        &self,
        b: &C::Backend,
        name: &str,
        args: &JsonObject,
    ) -> Result<Option<Value>, Failure> {
        let request = Value::Object(args.clone()).to_string();
        let Some(id) = self.route(b, name).await? else {
            return Ok(None);
        };
        let reply = match b.call(id.clone(), request.clone(), None).await {
            Err(f) if f.code == Code::NotFound => {
                self.service_tools(b).await?;
                let fresh = self.routes.lock().get(name).cloned();
                match fresh {
                    Some(other) if other != id => b.call(other, request, None).await?,
                    Some(_) => return Err(f),
                    None => return Ok(None),
                }
            }
            r => r?,
        };
        serde_json::from_str(&reply)
            .map(Some)
            .map_err(|e| Failure::invalid("invalid_reply", format!("the reply is not JSON: {e}")))
    }
}

/// A failure that stops a request itself (no backend, a bad resource URI).
pub(crate) fn protocol_error(f: &Failure) -> McpError {
    let data = serde_json::to_value(f).ok();
    match f.code {
        Code::NotFound => McpError::resource_not_found(f.to_string(), data),
        Code::InvalidArgument => McpError::invalid_params(f.to_string(), data),
        Code::Unauthenticated | Code::PermissionDenied => {
            McpError::invalid_request(f.to_string(), data)
        }
        _ => McpError::internal_error(f.to_string(), data),
    }
}

fn unknown_tool(name: &str) -> McpError {
    McpError::invalid_params(
        format!("unknown tool {name:?}: tools/list names the tools there are"),
        None,
    )
}

/// A service's tool as `tools/list` shows it.
fn service_tool(t: &solo_types::api::ServiceTool) -> Tool {
    let schema = match &t.tool.input_schema {
        Value::Object(o) => o.clone(),
        _ => JsonObject::from_iter([("type".to_string(), Value::from("object"))]),
    };
    let mut tool = Tool::new(
        t.tool.name.clone(),
        t.tool.description.clone(),
        Arc::new(schema),
    );
    tool.title = Some(format!("service {}", t.service_id));
    tool
}

impl<C: Connect> ServerHandler for SoloMcp<C> {
    fn get_info(&self) -> ServerConfig {
        let caps = if self.connect.sessions() {
            ServerCapabilities::builder()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tools()
                .enable_tool_list_changed()
                .build()
        } else {
            ServerCapabilities::builder()
                .enable_resources()
                .enable_tools()
                .build()
        };
        ServerConfig::new(caps)
            .with_server_info(rmcp::model::Implementation::new(
                "solo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&NEWEST_PROTOCOL))
    }

    async fn on_initialized(&self, cx: NotificationContext<RoleServer>) {
        if !self.connect.sessions() {
            return;
        }
        let Ok(b) = self.connect.connect(&cx.extensions) else {
            return;
        };
        let task = tokio::spawn(watch_tools(b, cx.peer));
        if let Some(old) = self.tasks.watcher.lock().replace(task.abort_handle()) {
            old.abort();
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let b = self.backend(&cx)?;
        let mut list: Vec<Tool> = tools::PLATFORM_TOOLS.iter().map(|t| t.tool()).collect();
        match self.service_tools(&b).await {
            Ok(s) => list.extend(s.tools.iter().map(service_tool)),
            // Solo's own tools still help (solo_whoami says what is wrong).
            Err(f) => tracing::debug!(error = %f, "service tools not listed"),
        }
        Ok(ListToolsResult::with_all_items(list))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let b = self.backend(&cx)?;
        let name = request.name.as_ref();
        let args = request.arguments.unwrap_or_default();
        let limit = self.connect.max_arguments_bytes();
        let size = serde_json::to_vec(&args)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limit {
            let f = Failure::new(
                Code::ResourceExhausted,
                "arguments_too_large",
                format!("the tool's arguments are {size} bytes of JSON, over the limit of {limit}"),
            );
            return Ok(refusal(&f).into());
        }
        let outcome = if name.starts_with(solo_types::RESERVED_TOOL_PREFIX) {
            match tools::run(&b, name, args).await {
                Some(r) => r,
                None => return Err(unknown_tool(name)),
            }
        } else {
            match self.call_service(&b, name, &args).await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => return Err(unknown_tool(name)),
                Err(f) => Err(f),
            }
        };
        Ok(match outcome {
            Ok(v) => answer(v),
            Err(f) => refusal(&f),
        }
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let b = self.backend(&cx)?;
        Ok(ListResourcesResult::with_all_items(
            resources::list(&b).await,
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let b = self.backend(&cx)?;
        let r = resources::read(&b, &request.uri).await;
        r.map(Into::into).map_err(|f| protocol_error(&f))
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if !self.connect.sessions() {
            return Err(McpError::invalid_request(
                "subscriptions need a session (solo mcp on stdio); over stateless HTTP, read the resource again with after_id",
                None,
            ));
        }
        let b = self.backend(&cx)?;
        let (feed, from) = resources::follow(&b, &request.uri, None)
            .await
            .map_err(|f| protocol_error(&f))?;
        let uri = request.uri.clone();
        let task = tokio::spawn(resources::notify(b, uri, feed, from, cx.peer));
        if let Some(old) = self
            .tasks
            .subscriptions
            .lock()
            .insert(request.uri, task.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(t) = self.tasks.subscriptions.lock().remove(&request.uri) {
            t.abort();
        }
        Ok(())
    }
}

/// Sends `tools/list_changed` whenever the set of the caller's service tools changes,
/// looking again after each event of the tenant (a burst of events is one look). A lost
/// event feed is watched again from the last event seen, as a subscription is.
async fn watch_tools<B: Backend>(b: B, peer: Peer<RoleServer>) {
    let names = |t: &ServiceTools| -> BTreeMap<String, String> {
        t.tools
            .iter()
            .map(|t| (t.tool.name.clone(), t.service_id.to_string()))
            .collect()
    };
    let Ok(mut seen) = b.service_tools().await.map(|t| names(&t)) else {
        return;
    };
    let mut after_id = resources::head(&b).await.unwrap_or(0);
    let watch = |after_id| {
        b.watch(WatchRequest {
            after_id,
            ..WatchRequest::default()
        })
    };
    let Some(mut feed) = resources::open_feed(&peer, || watch(after_id)).await else {
        return;
    };
    loop {
        while let Some(Ok(first)) = feed.next().await {
            after_id = first.id;
            let mut relevant = changes_tools(&first.kind);
            while let Some(Some(Ok(next))) = futures::FutureExt::now_or_never(feed.next()) {
                after_id = next.id;
                relevant |= changes_tools(&next.kind);
            }
            if !relevant {
                continue;
            }
            // A deploy's events are durable a moment before its service is routable (and
            // a kill's a moment before it is gone), so look again for a short while.
            for wait_ms in [0, 10, 50, 200, 1000] {
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                let Ok(now) = b.service_tools().await.map(|t| names(&t)) else {
                    continue;
                };
                if now != seen {
                    seen = now;
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(resources::FOLLOW_AGAIN_AFTER).await;
        let Some(again) = resources::open_feed(&peer, || watch(after_id)).await else {
            return;
        };
        feed = again;
    }
}

/// Whether an event may change the set of services offered as tools.
fn changes_tools(kind: &str) -> bool {
    use solo_types::kinds;
    [
        kinds::SERVICE_DEPLOYED,
        kinds::SERVICE_STARTED,
        kinds::SERVICE_KILLED,
        kinds::SERVICE_FAILED,
        kinds::SERVICE_RECOVERED,
    ]
    .contains(&kind)
}
