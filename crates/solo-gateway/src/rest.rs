//! The HTTPS/JSON face of the kernel (DESIGN §7): the same operations as gRPC, with the
//! same caller rules and the same error mapping, plus Server-Sent Events for streams.
//!
//! Bodies are read whole up to `max_request_bytes` (413 beyond) and parsed here, so a
//! malformed body is a 400 that names the line and column, and an unknown field is a
//! 400 that names the field.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use solo_kernel::{Caller, KernelError, KillOptions, ListFilter, Narrowing};
use solo_store::{EventFilter, EventQuery, Order};
use solo_types::{Format, Permission, Permissions, Resource, RestartPolicy, ServiceState};

use crate::App;
use crate::auth::{ConnInfo, authenticate};
use crate::convert::{self, service_id};
use crate::error::ApiError;

type ApiResult<T = Response> = Result<T, ApiError>;

/// The REST router.
pub(crate) fn router(app: &App) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/services", post(deploy).get(list))
        .route("/v1/services/{id}", get(status).delete(kill))
        .route("/v1/services/{id}/call", post(call))
        .route("/v1/services/{id}/cast", post(cast))
        .route("/v1/services/{id}/swap", post(swap))
        .route("/v1/services/{id}/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/events/verify", get(verify_events))
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/rotate", post(rotate_secrets))
        .route(
            "/v1/secrets/{name}",
            put(put_secret).get(get_secret).delete(delete_secret),
        )
        .route("/v1/capabilities", get(list_caps).post(grant_cap))
        .route("/v1/capabilities/verify", post(verify_cap))
        .route("/v1/capabilities/revoke", post(revoke_cap))
        .route("/v1/capabilities/attenuate", post(attenuate_cap))
        .route("/v1/discovery", get(discover).post(register))
        .route("/v1/system/tree", get(tree))
        .route("/v1/system/shutdown", post(shutdown))
        .route("/v1/system/config", put(set_config).get(get_config))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(app.max_request_bytes))
        .with_state(app.clone())
}

// ----- extractors -----------------------------------------------------------------------

/// The authenticated caller of a request.
struct Auth(Caller);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> ApiResult<Self> {
        authenticate(
            &app.kernel,
            parts.extensions.get::<ConnInfo>(),
            &parts.headers,
        )
        .map(Auth)
    }
}

/// A JSON body parsed with positions in its errors.
struct Body<T>(T);

impl<T: DeserializeOwned> FromRequest<App> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> ApiResult<Self> {
        let bytes = axum::body::Bytes::from_request(req, app)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(app.max_request_bytes)
                } else {
                    ApiError::invalid("invalid_body", e.body_text())
                }
            })?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses a JSON body, naming the line and column of a syntax error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "invalid_json",
            "the request body is empty; JSON expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let reason = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::invalid(
            reason,
            format!("{e} (line {}, column {})", e.line(), e.column()),
        )
    })
}

/// Query parameters, refused with a 400 that says which.
struct Query<T>(T);

impl<T: DeserializeOwned> FromRequestParts<App> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _app: &App) -> ApiResult<Self> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q).map(Query)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> ApiResult<T> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::invalid("invalid_query", "the query string is malformed"))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

/// A timeout or grace period in milliseconds, zero meaning 5 s.
fn millis(ms: u64) -> Duration {
    convert::millis_or(i64::try_from(ms).unwrap_or(i64::MAX), 5000)
}

fn id_of(raw: &str) -> ApiResult<solo_types::ServiceId> {
    service_id(raw)
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid("invalid_last_event_id", "Last-Event-ID must be a number")
            }),
    }
}

fn admin(c: &Caller, what: &str) -> ApiResult<()> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::admin_only(what))
    }
}

fn sse<S>(app: &App, stream: S) -> Response
where
    S: Stream<Item = SseEvent> + Send + 'static,
{
    let stream = stream
        .take_until(app.stopping.clone().cancelled_owned())
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

// ----- handlers -------------------------------------------------------------------------

async fn health(State(app): State<App>) -> Response {
    let h = app.health();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Json(json!({
        "status": h.status,
        "timestamp": timestamp,
        "version": h.version,
        "uptime_ms": h.uptime_ms,
        "memory_mb": h.memory_mb,
        "process_count": h.services,
        "services": h.services,
        "last_event_id": h.last_event_id,
    }))
    .into_response()
}

async fn metrics(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    admin(&c, "metrics")?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.render_metrics(),
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        solo_types::Code::NotFound,
        "not_found",
        "Endpoint not found",
    )
}

async fn method_not_allowed() -> Response {
    let mut e = ApiError::invalid(
        "method_not_allowed",
        "this route does not accept that method",
    );
    e.http = Some(StatusCode::METHOD_NOT_ALLOWED);
    e.into_response()
}

/// `POST /v1/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    service_id: String,
    /// JavaScript source, or ...
    #[serde(default)]
    code: Option<String>,
    /// ... the code base64-encoded (a WebAssembly component).
    #[serde(default)]
    code_base64: Option<String>,
    /// `js` or `wasm`; inferred from the code when left out.
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    max_restarts: Option<u32>,
    #[serde(default)]
    max_seconds: Option<u32>,
    #[serde(default)]
    memory_mb: Option<u32>,
    #[serde(default)]
    cpu_ms_per_message: Option<u32>,
    #[serde(default)]
    mailbox: Option<u32>,
    #[serde(default)]
    startup_timeout_ms: Option<u32>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

fn parse_format(s: &str) -> ApiResult<Format> {
    match s.to_ascii_lowercase().as_str() {
        "js" | "javascript" => Ok(Format::Js),
        "wasm" | "wasm_component" | "component" => Ok(Format::Wasm),
        "elixir" | "elixir_source" => Err(ApiError::invalid(
            "unsupported_format",
            "format elixir_source is not supported; use js or wasm",
        )),
        other => Err(ApiError::invalid(
            "unsupported_format",
            format!("unknown format {other:?}; use js or wasm"),
        )),
    }
}

async fn deploy(State(app): State<App>, Auth(c): Auth, Body(b): Body<DeployBody>) -> ApiResult {
    let id = id_of(&b.service_id)?;
    let code = code_of(b.code, b.code_base64)?;
    let format = match b.format.as_deref() {
        Some(f) => parse_format(f)?,
        None if code.starts_with(b"\0asm") => Format::Wasm,
        None => Format::Js,
    };
    let mut d = solo_kernel::DeployRequest::new(id, format, code);
    d.config = b.config;
    d.restart = b
        .restart
        .map(|r| {
            r.parse::<RestartPolicy>()
                .map_err(|e| ApiError::invalid("invalid_restart", e))
        })
        .transpose()?;
    d.max_restarts = b.max_restarts;
    d.max_seconds = b.max_seconds;
    d.memory_mb = b.memory_mb;
    d.cpu_ms_per_message = b.cpu_ms_per_message;
    d.mailbox = b.mailbox;
    d.startup_timeout_ms = b.startup_timeout_ms;
    d.secrets = b.secrets;
    d.dry_run = b.dry_run;
    let out = app.kernel.deploy(&c, d).await?;
    let status = if out.created && !out.dry_run {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "service_id": out.service_id,
            "code_hash": out.code_hash,
            "version": out.version,
            "event_id": out.event_id,
            "created": out.created,
            "dry_run": out.dry_run,
            "has_state": out.has_state,
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    state: Option<String>,
}

async fn list(State(app): State<App>, Auth(c): Auth, Query(p): Query<ListParams>) -> ApiResult {
    let state = p
        .state
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServiceState>()
                .map_err(|e| ApiError::invalid("invalid_state", e))
        })
        .transpose()?;
    let list = app.kernel.list(
        &c,
        &ListFilter {
            state,
            limit: p.limit,
            offset: p.offset,
        },
    )?;
    Ok(Json(json!({ "services": list.services, "total": list.total })).into_response())
}

async fn status(State(app): State<App>, Auth(c): Auth, Path(id): Path<String>) -> ApiResult {
    let s = app.kernel.status(&c, &id_of(&id)?)?;
    Ok(Json(s).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillParams {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    timeout_ms: u64,
}

async fn kill(
    State(app): State<App>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Query(p): Query<KillParams>,
) -> ApiResult {
    let id = id_of(&id)?;
    let timeout = millis(p.timeout_ms);
    let k = app
        .kernel
        .kill(
            &c,
            &id,
            KillOptions {
                timeout,
                force: p.force,
            },
        )
        .await?;
    Ok(Json(json!({
        "service_id": id,
        "event_id": k.event_id,
        "forced": k.forced,
        "snapshot_bytes": k.snapshot_bytes,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    #[serde(default)]
    timeout_ms: u64,
}

/// `POST /v1/services/{id}/call`: the body is the request (any JSON); the answer is
/// `{"reply": ...}`.
async fn call(
    State(app): State<App>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Query(p): Query<CallParams>,
    Body(request): Body<Value>,
) -> ApiResult {
    let id = id_of(&id)?;
    let timeout = millis(p.timeout_ms);
    let reply = app
        .kernel
        .call(&c, &id, &request.to_string(), timeout)
        .await?;
    let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
    Ok(Json(json!({ "reply": reply })).into_response())
}

async fn cast(
    State(app): State<App>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(message): Body<Value>,
) -> ApiResult {
    app.kernel.cast(&c, &id_of(&id)?, &message.to_string())?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response())
}

/// `POST /v1/services/{id}/swap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    code_base64: Option<String>,
    #[serde(default)]
    format: Option<String>,
    /// `swap` (default) or `replace`.
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    rollback_window_ms: u32,
}

async fn swap(
    State(app): State<App>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Body(b): Body<SwapBody>,
) -> ApiResult {
    let code = code_of(b.code, b.code_base64)?;
    let format = match b.format.as_deref() {
        Some(f) => parse_format(f)?,
        None if code.starts_with(b"\0asm") => Format::Wasm,
        None => Format::Js,
    };
    let mut req = crate::swap::swap_request(
        &id,
        0,
        code,
        b.mode.as_deref().unwrap_or(""),
        b.rollback_window_ms,
    )?;
    req.format = format;
    let s = app.kernel.hot_swap(&c, req).await?;
    Ok(Json(json!({
        "service_id": s.service_id,
        "version": s.version,
        "code_hash": s.code_hash,
        "event_id": s.event_id,
        "method": s.method,
        "state_carried": s.state_carried,
        "snapshot_bytes": s.snapshot_bytes,
    }))
    .into_response())
}

/// The code of a deploy or swap body: text or base64, exactly one.
fn code_of(code: Option<String>, code_base64: Option<String>) -> ApiResult<Vec<u8>> {
    let code: Vec<u8> = match (code, code_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_request",
                "give either code or code_base64, not both",
            ));
        }
        (Some(s), None) => s.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| {
                ApiError::invalid("invalid_code", format!("code_base64 is not base64: {e}"))
            })?,
        (None, None) => return Err(ApiError::invalid("missing_code", "the request has no code")),
    };
    if code.is_empty() {
        return Err(ApiError::invalid("missing_code", "the request has no code"));
    }
    Ok(code)
}

/// `GET /v1/discovery?name=N&key=value...`: with a name, the live registrations under
/// it whose metadata has every other pair; without, all of the tenant's.
async fn discover(
    State(app): State<App>,
    Auth(c): Auth,
    Query(mut q): Query<std::collections::BTreeMap<String, String>>,
) -> ApiResult {
    let found = match q.remove("name") {
        Some(name) => app.kernel.discover(&c, &name, &q)?,
        None if q.is_empty() => app.kernel.registrations(&c, None)?,
        None => {
            return Err(ApiError::invalid(
                "invalid_query",
                "metadata filters need a name: /v1/discovery?name=N&key=value",
            ));
        }
    };
    Ok(Json(json!({
        "services": found.iter().map(crate::discovery::to_json).collect::<Vec<_>>(),
        "total_count": found.len(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    service_id: String,
    service_name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    ttl_seconds: i64,
}

/// `POST /v1/discovery`: register one of the caller's services under a name.
async fn register(State(app): State<App>, Auth(c): Auth, Body(b): Body<RegisterBody>) -> ApiResult {
    let r = app
        .kernel
        .register_service(
            &c,
            solo_kernel::RegisterRequest {
                service_id: b.service_id,
                name: b.service_name,
                version: b.version,
                metadata: b.metadata,
                ttl_seconds: b.ttl_seconds,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "registered": true, "service_handle": r.handle, "expires_at": r.expires_at })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    key: String,
    value: serde_json::Value,
}

/// `PUT /v1/system/config` `{"key": "limits.max_per_tenant", "value": 50}` (admin).
async fn set_config(State(app): State<App>, Auth(c): Auth, Body(b): Body<ConfigBody>) -> ApiResult {
    admin(&c, "changing the runtime configuration")?;
    let value = match &b.value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (previous, value) = app.kernel.set_config(&c, &b.key, &value).await?;
    Ok(Json(json!({ "key": b.key, "value": value, "previous": previous })).into_response())
}

/// `GET /v1/system/config` (admin): every runtime-tunable key and the pressure level.
async fn get_config(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    admin(&c, "reading the runtime configuration")?;
    let values: serde_json::Map<String, Value> = app
        .kernel
        .runtime_config(&c)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(Json(json!({ "values": values, "pressure": app.kernel.pressure() })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    #[serde(default)]
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// `GET /v1/services/{id}/logs`: the last lines as JSON, or with `follow=true` (or
/// `Accept: text/event-stream`) an SSE feed whose ids are line numbers.
async fn logs(
    State(app): State<App>,
    Auth(c): Auth,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
    headers: HeaderMap,
) -> ApiResult {
    let id = id_of(&id)?;
    let tail = p.tail.unwrap_or(100).min(1000);
    if !p.follow && !wants_sse(&headers) {
        let lines = app.kernel.logs(&c, &id, tail)?;
        return Ok(Json(json!({ "lines": lines })).into_response());
    }
    let after = last_event_id(&headers)?;
    let (backlog, rx) =
        app.kernel
            .follow_logs(&c, &id, if after.is_some() { 1000 } else { tail })?;
    let after = after.unwrap_or(0);
    let live = convert::log_feed(rx);
    let lines = futures::stream::iter(backlog)
        .chain(live)
        .filter(move |l| std::future::ready(l.seq > after))
        .map(|l| {
            SseEvent::default()
                .id(l.seq.to_string())
                .event("log")
                .data(serde_json::to_string(&l).unwrap_or_default())
        });
    Ok(sse(&app, lines))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    after_id: Option<u64>,
    #[serde(default)]
    before_id: Option<u64>,
    #[serde(default)]
    since_ts: Option<i64>,
    #[serde(default)]
    until_ts: Option<i64>,
    #[serde(default)]
    limit: usize,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    order: Option<String>,
}

/// `GET /v1/events`: a page of events, or with `Accept: text/event-stream` a live feed
/// (ids are event ids; `Last-Event-ID` resumes after the last one seen).
async fn events(
    State(app): State<App>,
    Auth(c): Auth,
    Query(p): Query<EventParams>,
    headers: HeaderMap,
) -> ApiResult {
    let filter = EventFilter {
        tenant: convert::event_tenant(&c, p.tenant.as_deref())?,
        service: p
            .service_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(id_of)
            .transpose()?,
        kind: p.kind.filter(|k| !k.is_empty()),
    };
    if wants_sse(&headers) {
        let after = last_event_id(&headers)?.or(p.after_id).unwrap_or(0);
        let sub = app.kernel.watch(&c, after, filter)?;
        let stream = sub.into_stream().map(|e| match e {
            Ok(e) => SseEvent::default()
                .id(e.id.to_string())
                .event(e.kind.clone())
                .data(convert::event_to_json(&e).to_string()),
            // The subscriber fell behind the retained window or the store failed: say
            // so; the client reconnects with its Last-Event-ID.
            Err(e) => SseEvent::default()
                .event("error")
                .data(ApiError::from(KernelError::Store(e)).body().to_string()),
        });
        return Ok(sse(&app, stream));
    }
    let order = match p.order.as_deref() {
        None | Some("asc") => Order::Ascending,
        Some("desc") => Order::Descending,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_order",
                format!("order {other:?}: use asc or desc"),
            ));
        }
    };
    let page = app.kernel.events(
        &c,
        EventQuery {
            filter,
            after_id: p.after_id,
            before_id: p.before_id,
            since_ts: p.since_ts,
            until_ts: p.until_ts,
            limit: p.limit,
            order,
        },
    )?;
    Ok(Json(json!({
        "events": page.events.iter().map(convert::event_to_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

async fn verify_events(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    admin(&c, "verifying the event log")?;
    let store = std::sync::Arc::clone(app.kernel.store());
    let report = tokio::task::spawn_blocking(move || store.verify())
        .await
        .map_err(|e| ApiError::new(solo_types::Code::Internal, "internal", e.to_string()))?
        .map_err(KernelError::Store)?;
    Ok(Json(json!({
        "ok": report.first_broken.is_none(),
        "checked": report.checked,
        "last_id": report.last_id,
        "first_broken_id": report.first_broken.as_ref().map(|b| b.id),
        "reason": report.first_broken.map(|b| b.reason),
    }))
    .into_response())
}

async fn list_secrets(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    Ok(Json(json!({ "names": app.kernel.list_secrets(&c)? })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
}

async fn put_secret(
    State(app): State<App>,
    Auth(c): Auth,
    Path(name): Path<String>,
    Body(b): Body<SecretBody>,
) -> ApiResult {
    let value = match (b.value, b.value_base64) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| {
                ApiError::invalid("invalid_value", format!("value_base64 is not base64: {e}"))
            })?,
        _ => {
            return Err(ApiError::invalid(
                "invalid_request",
                "give exactly one of value and value_base64",
            ));
        }
    };
    let event_id = app.kernel.put_secret(&c, &name, &value).await?;
    Ok(Json(json!({ "name": name, "event_id": event_id })).into_response())
}

async fn get_secret(State(app): State<App>, Auth(c): Auth, Path(name): Path<String>) -> ApiResult {
    let v = app.kernel.get_secret(&c, &name).await?;
    let body = match std::str::from_utf8(v.expose()) {
        Ok(s) => json!({ "name": name, "value": s }),
        Err(_) => json!({
            "name": name,
            "value_base64": base64::engine::general_purpose::STANDARD.encode(v.expose()),
        }),
    };
    Ok(Json(body).into_response())
}

async fn delete_secret(
    State(app): State<App>,
    Auth(c): Auth,
    Path(name): Path<String>,
) -> ApiResult {
    let existed = app.kernel.delete_secret(&c, &name).await?;
    Ok(Json(json!({ "name": name, "existed": existed })).into_response())
}

async fn rotate_secrets(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    let n = app.kernel.rotate_secrets(&c).await?;
    Ok(Json(json!({ "rotated": n })).into_response())
}

fn resource(s: &str) -> ApiResult<Resource> {
    s.parse()
        .map_err(|e| ApiError::invalid("invalid_resource", e))
}

fn permissions(p: &[String]) -> ApiResult<Permissions> {
    Permissions::parse(p.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid("invalid_permissions", e))
}

async fn list_caps(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    Ok(Json(json!({ "capabilities": app.kernel.list_capabilities(&c)? })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    resource: String,
    permissions: Vec<String>,
    #[serde(default)]
    ttl_seconds: i64,
}

fn granted(g: &solo_kernel::Granted) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "token": g.token.expose(), "capability": g.info })),
    )
        .into_response()
}

async fn grant_cap(State(app): State<App>, Auth(c): Auth, Body(b): Body<GrantBody>) -> ApiResult {
    let g = app
        .kernel
        .grant_capability(
            &c,
            resource(&b.resource)?,
            permissions(&b.permissions)?,
            convert::token_ttl(b.ttl_seconds),
        )
        .await?;
    Ok(granted(&g))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
    resource: String,
    permission: String,
}

async fn verify_cap(State(app): State<App>, Auth(c): Auth, Body(b): Body<VerifyBody>) -> ApiResult {
    let permission: Permission = b
        .permission
        .parse()
        .map_err(|e| ApiError::invalid("invalid_permission", e))?;
    let out = app
        .kernel
        .verify_capability(&c, &b.token, &resource(&b.resource)?, permission)
        .await;
    Ok(Json(match out {
        Ok(info) => json!({ "valid": true, "capability": info }),
        Err(reason) => json!({ "valid": false, "reason": reason.as_str() }),
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    token: String,
}

async fn revoke_cap(State(app): State<App>, Auth(c): Auth, Body(b): Body<RevokeBody>) -> ApiResult {
    let n = app.kernel.revoke_capability(&c, &b.token).await?;
    Ok(Json(json!({ "revoked": n })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttenuateBody {
    token: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

async fn attenuate_cap(
    State(app): State<App>,
    Auth(c): Auth,
    Body(b): Body<AttenuateBody>,
) -> ApiResult {
    let narrowing = Narrowing {
        resource: b.resource.as_deref().map(resource).transpose()?,
        permissions: b.permissions.as_deref().map(permissions).transpose()?,
        ttl_seconds: b.ttl_seconds,
    };
    let g = app
        .kernel
        .attenuate_capability(&c, &b.token, &narrowing)
        .await?;
    Ok(granted(&g))
}

async fn tree(State(app): State<App>, Auth(c): Auth) -> ApiResult {
    Ok(Json(app.kernel.tree(&c)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    #[serde(default)]
    grace_period_ms: u64,
}

async fn shutdown(State(app): State<App>, Auth(c): Auth, body: axum::body::Bytes) -> ApiResult {
    admin(&c, "shutdown")?;
    let b: ShutdownBody = if body.is_empty() {
        ShutdownBody::default()
    } else {
        parse_json(&body)?
    };
    let grace = millis(b.grace_period_ms);
    (app.on_shutdown)(grace);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "ok", "message": "Shutdown initiated" })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_errors_name_the_position_and_the_field() {
        let e = parse_json::<Value>(b"{\"a\": 1,\n \"b\": }").unwrap_err();
        assert_eq!(e.reason, "invalid_json");
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse_json::<RevokeBody>(br#"{"token": "t", "extra": 1}"#).unwrap_err();
        assert_eq!(e.reason, "invalid_request");
        assert!(e.message.contains("extra"), "{}", e.message);
        let e = parse_json::<Value>(b"").unwrap_err();
        assert_eq!(e.reason, "invalid_json");
    }

    #[test]
    fn formats_and_queries() {
        assert_eq!(parse_format("JS").unwrap(), Format::Js);
        assert_eq!(parse_format("wasm").unwrap(), Format::Wasm);
        assert_eq!(
            parse_format("elixir_source").unwrap_err().reason,
            "unsupported_format"
        );
        let p: ListParams = serde_urlencoded_from_str("limit=5&state=running").unwrap();
        assert_eq!((p.limit, p.state.as_deref()), (5, Some("running")));
        let e = serde_urlencoded_from_str::<ListParams>("limit=x").unwrap_err();
        assert_eq!(e.reason, "invalid_query");
    }
}
