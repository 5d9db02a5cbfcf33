//! The MCP face at `/mcp` on the HTTPS port (Streamable HTTP, stateless, through
//! `solo_mcp`): each POST acts under its own request's identity, exactly as a REST
//! request does (client certificate = tenant; a bearer token within its scope), through
//! the same operation table, so admission and every check apply. A request with no
//! credentials, or with a refused token, is a 401 before it is read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use solo_mcp::{Backend, Connect, Feed, HttpOptions, RequestExtensions};
use solo_types::api::*;
use solo_types::{Event, EventPage, EventQuery, Permission, Resource, ServiceId, ServiceStatus};

use crate::auth::{Asker, ConnInfo};
use crate::ops::{SharedOps, Watched};

type R<T> = Result<T, Failure>;

/// The `/mcp` route.
pub(crate) fn router(ops: SharedOps, options: HttpOptions, max_request_bytes: usize) -> Router {
    let connect = HttpConnect {
        ops: Arc::clone(&ops),
        max_arguments_bytes: max_request_bytes,
    };
    let max_body = options.max_body_bytes;
    let svc = solo_mcp::http_service(connect, options);
    Router::new()
        .route_service("/mcp", svc)
        .layer(axum::middleware::from_fn_with_state(max_body, framing))
        .layer(axum::middleware::from_fn_with_state(ops, credentials))
}

/// A JSON-RPC error answer to a body that is not one JSON-RPC message (HTTP 400).
fn jsonrpc_error(code: i64, message: String) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Reads a POST's body within the limit (413 beyond) and, when the SDK refuses it as
/// not one JSON-RPC message (it answers 415 with plain text), answers a JSON-RPC error
/// instead: malformed JSON is a parse error naming the line and column (-32700); a
/// batch, or anything but a request, notification or response, an invalid request
/// (-32600). A well-formed body is parsed once, by the SDK.
async fn framing(State(limit): State<usize>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return crate::error::ApiError::from(Failure::too_large(limit)).into_response();
    };
    let json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = axum::body::Body::from(bytes.clone());
    let answer = next.run(Request::from_parts(parts, body)).await;
    if !json || answer.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return answer;
    }
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return jsonrpc_error(-32700, format!("the body is not JSON: {e}")),
    };
    let why = match &message {
        Value::Array(_) => "a batch (JSON-RPC batching is not part of MCP since 2025-06-18)",
        Value::Object(m) if m.get("jsonrpc") != Some(&Value::from("2.0")) => {
            "a message without \"jsonrpc\": \"2.0\""
        }
        Value::Object(_) => "not a request, a notification or a response that MCP knows",
        _ => "not a JSON object",
    };
    jsonrpc_error(-32600, format!("the body is {why}"))
}

fn asker(parts: &Parts) -> Asker {
    let conn = parts.extensions.get::<Arc<ConnInfo>>().cloned();
    Asker::from_headers(conn, &parts.headers)
}

/// Refuses a request whose credentials do not check out, with the REST face's 401.
async fn credentials(State(ops): State<SharedOps>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = ops.authenticate(asker(&parts).who()) {
        let mut r = e.into_response();
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Builds each request's backend from its own credentials.
#[derive(Clone)]
struct HttpConnect {
    ops: SharedOps,
    max_arguments_bytes: usize,
}

impl Connect for HttpConnect {
    type Backend = OpsBackend;

    fn connect(&self, extensions: &RequestExtensions) -> R<OpsBackend> {
        let parts = extensions.get::<Parts>().ok_or_else(|| {
            Failure::unauthenticated("the MCP request carries no HTTP request to identify it by")
        })?;
        Ok(OpsBackend {
            ops: Arc::clone(&self.ops),
            asker: asker(parts),
        })
    }

    fn sessions(&self) -> bool {
        false
    }

    fn max_arguments_bytes(&self) -> usize {
        self.max_arguments_bytes
    }
}

/// The operation table, for one request's caller.
#[derive(Clone)]
struct OpsBackend {
    ops: SharedOps,
    asker: Asker,
}

impl Backend for OpsBackend {
    async fn whoami(&self) -> R<Identity> {
        Ok(self.ops.whoami(self.asker.who()).await?)
    }

    async fn list(&self, filter: ListFilter) -> R<ServiceList> {
        Ok(self.ops.list(self.asker.who(), &filter).await?)
    }

    async fn status(&self, id: ServiceId) -> R<ServiceStatus> {
        Ok(self.ops.status(self.asker.who(), &id).await?)
    }

    async fn deploy(&self, req: DeployRequest) -> R<Deployed> {
        Ok(self.ops.deploy(self.asker.who(), req).await?)
    }

    async fn call(&self, id: ServiceId, request: String, timeout: Option<Duration>) -> R<String> {
        Ok(self
            .ops
            .call(self.asker.who(), &id, &request, timeout)
            .await?)
    }

    async fn cast(&self, id: ServiceId, message: String) -> R<Accepted> {
        Ok(self.ops.cast(self.asker.who(), &id, &message).await?)
    }

    async fn swap(&self, req: SwapRequest) -> R<Swapped> {
        Ok(self.ops.swap(self.asker.who(), req).await?)
    }

    async fn kill(&self, id: ServiceId, options: KillOptions) -> R<Killed> {
        Ok(self.ops.kill(self.asker.who(), &id, options).await?)
    }

    async fn logs(&self, id: ServiceId, tail: usize) -> R<LogLines> {
        Ok(self.ops.logs(self.asker.who(), &id, tail).await?)
    }

    async fn follow_logs(&self, id: ServiceId, after_seq: u64) -> R<Feed<LogLine>> {
        let feed = self
            .ops
            .follow_logs(self.asker.who(), &id, 1, after_seq)
            .await?;
        Ok(Box::pin(feed.map(Ok)))
    }

    async fn events(&self, query: EventQuery) -> R<EventPage> {
        Ok(self.ops.events(self.asker.who(), query).await?)
    }

    async fn watch(&self, req: WatchRequest) -> R<Feed<Event>> {
        let feed = self.ops.watch(self.asker.who(), req).await?;
        Ok(Box::pin(feed.filter_map(|w| async move {
            match w {
                Ok(Watched::Event(e)) => Some(Ok(e)),
                Ok(Watched::Log { .. }) => None,
                Err(e) => Some(Err(e.0)),
            }
        })))
    }

    async fn verify_events(&self) -> R<LogVerification> {
        Ok(self.ops.verify_events(self.asker.who()).await?)
    }

    async fn put_secret(&self, name: String, value: Vec<u8>) -> R<SecretStored> {
        Ok(self.ops.put_secret(self.asker.who(), &name, &value).await?)
    }

    async fn list_secrets(&self) -> R<SecretNames> {
        Ok(self.ops.list_secrets(self.asker.who()).await?)
    }

    async fn delete_secret(&self, name: String) -> R<SecretDeleted> {
        Ok(self.ops.delete_secret(self.asker.who(), &name).await?)
    }

    async fn bind_secret(&self, name: String, hosts: Vec<String>, unbind: bool) -> R<SecretHosts> {
        Ok(self
            .ops
            .bind_secret(self.asker.who(), &name, &hosts, unbind)
            .await?)
    }

    async fn egress_rules(&self) -> R<EgressList> {
        Ok(self.ops.egress_rules(self.asker.who(), None).await?)
    }

    async fn grant(&self, req: GrantRequest) -> R<Granted> {
        Ok(self.ops.grant(self.asker.who(), req).await?)
    }

    async fn attenuate(&self, token: String, narrowing: Narrowing) -> R<Granted> {
        Ok(self
            .ops
            .attenuate(self.asker.who(), &token, &narrowing)
            .await?)
    }

    async fn revoke(&self, token: String) -> R<Revoked> {
        Ok(self.ops.revoke(self.asker.who(), &token).await?)
    }

    async fn verify(
        &self,
        token: String,
        resource: Resource,
        permission: Permission,
    ) -> R<Verification> {
        let who = self.asker.who();
        Ok(self.ops.verify(who, &token, &resource, permission).await?)
    }

    async fn list_capabilities(&self) -> R<CapList> {
        Ok(self.ops.list_capabilities(self.asker.who()).await?)
    }

    async fn discover(
        &self,
        name: Option<String>,
        filters: BTreeMap<String, String>,
    ) -> R<Registrations> {
        let who = self.asker.who();
        Ok(match name {
            Some(n) => self.ops.discover(who, &n, &filters).await?,
            None => self.ops.registrations(who, None).await?,
        })
    }

    async fn tree(&self) -> R<TreeNode> {
        Ok(self.ops.tree(self.asker.who()).await?)
    }

    async fn service_tools(&self) -> R<ServiceTools> {
        Ok(self.ops.service_tools(self.asker.who()).await?)
    }
}
