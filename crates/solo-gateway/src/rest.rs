//! The HTTPS/JSON face: a codec. Each route decodes its path, query and body into the
//! operation's input (the JSON shapes of `solo_types::api`), runs the operation, and
//! encodes the answer as JSON, or as Server-Sent Events for the live feeds.
//!
//! Bodies are read whole up to `max_request_bytes` (413 beyond) and parsed here, so a
//! malformed body is a 400 that names the line and column, and an unknown field is a
//! 400 that names the field. A call's or cast's body is the message itself, passed
//! through unparsed (the kernel checks it is JSON).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use solo_types::api::*;
use solo_types::{Code, EventQuery};

use crate::auth::{Asker, ConnInfo, Who};
use crate::error::ApiError;
use crate::ops::{SharedOps, Watched};

type ApiResult<T = Response> = Result<T, ApiError>;

/// What every route shares.
#[derive(Clone)]
pub(crate) struct RestState {
    ops: SharedOps,
    max_request_bytes: usize,
}

/// The REST router.
pub(crate) fn router(ops: SharedOps, max_request_bytes: usize) -> Router {
    let state = RestState {
        ops,
        max_request_bytes,
    };
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
        .route("/v1/secrets/{name}/hosts", post(bind_secret))
        .route("/v1/egress", get(list_egress))
        .route("/v1/egress/{tenant}/{change}", post(change_egress))
        .route("/v1/capabilities", get(list_caps).post(grant_cap))
        .route("/v1/capabilities/verify", post(verify_cap))
        .route("/v1/capabilities/revoke", post(revoke_cap))
        .route("/v1/capabilities/attenuate", post(attenuate_cap))
        .route("/v1/discovery", get(discover).post(register))
        .route("/v1/discovery/{handle}", delete(deregister))
        .route("/v1/system/tree", get(tree))
        .route("/v1/whoami", get(whoami))
        .route("/v1/tools", get(tools))
        .route("/v1/system/shutdown", post(shutdown))
        .route("/v1/system/config", put(set_config).get(get_config))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

// ----- extractors -----------------------------------------------------------------------

/// Who is asking, and the headers a face reads itself (`Accept`, `Last-Event-ID`).
struct Ask {
    asker: Asker,
    sse: bool,
    last_event_id: Option<HeaderValue>,
}

impl Ask {
    fn who(&self) -> Who<'_> {
        self.asker.who()
    }
}

impl FromRequestParts<RestState> for Ask {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &RestState) -> Result<Self, Infallible> {
        let conn = parts.extensions.get::<Arc<ConnInfo>>().cloned();
        Ok(Ask {
            asker: Asker::from_headers(conn, &parts.headers),
            sse: wants_sse(&parts.headers),
            last_event_id: parts.headers.get("last-event-id").cloned(),
        })
    }
}

/// The body, read whole within the limit.
async fn bytes_of(req: Request, st: &RestState) -> ApiResult<axum::body::Bytes> {
    axum::body::Bytes::from_request(req, st).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::too_large(st.max_request_bytes).into()
        } else {
            ApiError::invalid("invalid_body", e.body_text())
        }
    })
}

/// A JSON body parsed with positions in its errors.
struct Body<T>(T);

impl<T: DeserializeOwned> FromRequest<RestState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &RestState) -> ApiResult<Self> {
        parse_json(&bytes_of(req, st).await?).map(Body)
    }
}

/// A body passed through as text: a call's request or a cast's message.
struct Text(String);

impl FromRequest<RestState> for Text {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &RestState) -> ApiResult<Self> {
        let bytes = bytes_of(req, st).await?;
        String::from_utf8(bytes.to_vec())
            .map(Text)
            .map_err(|e| ApiError::invalid("invalid_json", format!("the body is not UTF-8: {e}")))
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

impl<T: DeserializeOwned> FromRequestParts<RestState> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &RestState) -> ApiResult<Self> {
        query_of(parts.uri.query().unwrap_or("")).map(Query)
    }
}

fn query_of<T: DeserializeOwned>(q: &str) -> ApiResult<T> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::invalid("invalid_query", "the query string is malformed"))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

fn last_event_id(header: Option<&HeaderValue>) -> ApiResult<Option<u64>> {
    match header {
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

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = SseEvent> + Send + 'static,
{
    Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn json<T: Serialize>(v: T) -> ApiResult {
    Ok(Json(v).into_response())
}

fn with_status<T: Serialize>(status: StatusCode, v: T) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

// ----- handlers -------------------------------------------------------------------------

/// 200 while the server is `ok`, 503 while it is `degraded` (the store takes no
/// writes) or `stopping`, with the same body.
async fn health(State(st): State<RestState>, a: Ask) -> ApiResult {
    let h = st.ops.health(a.who());
    let status = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    with_status(status, h)
}

async fn metrics(State(st): State<RestState>, a: Ask) -> ApiResult {
    let m = st.ops.metrics(a.who()).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.text,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "not_found", "Endpoint not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::invalid(
        "method_not_allowed",
        "this route does not accept that method",
    )
}

async fn deploy(State(st): State<RestState>, a: Ask, Body(b): Body<DeployBody>) -> ApiResult {
    let out = st.ops.deploy(a.who(), b.try_into()?).await?;
    let created = out.created && !out.dry_run;
    with_status(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        out,
    )
}

async fn list(State(st): State<RestState>, a: Ask, Query(p): Query<ListParams>) -> ApiResult {
    json(st.ops.list(a.who(), &p.try_into()?).await?)
}

async fn status(State(st): State<RestState>, a: Ask, Path(id): Path<String>) -> ApiResult {
    json(st.ops.status(a.who(), &service_id(&id)?).await?)
}

async fn kill(
    State(st): State<RestState>,
    a: Ask,
    Path(id): Path<String>,
    Query(p): Query<KillParams>,
) -> ApiResult {
    json(st.ops.kill(a.who(), &service_id(&id)?, p.into()).await?)
}

/// `POST /v1/services/{id}/call`: the body is the request; the answer is
/// `{"reply": ...}` with the reply as the service wrote it.
async fn call(
    State(st): State<RestState>,
    a: Ask,
    Path(id): Path<String>,
    Query(p): Query<CallParams>,
    Text(request): Text,
) -> ApiResult {
    let id = service_id(&id)?;
    let reply = st.ops.call(a.who(), &id, &request, p.timeout()).await?;
    // The kernel checked that the reply is JSON: it goes out as written, `Reply`'s shape.
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"reply\":{reply}}}"),
    )
        .into_response())
}

async fn cast(
    State(st): State<RestState>,
    a: Ask,
    Path(id): Path<String>,
    Text(message): Text,
) -> ApiResult {
    let accepted = st.ops.cast(a.who(), &service_id(&id)?, &message).await?;
    with_status(StatusCode::ACCEPTED, accepted)
}

async fn swap(
    State(st): State<RestState>,
    a: Ask,
    Path(id): Path<String>,
    Body(b): Body<SwapBody>,
) -> ApiResult {
    json(st.ops.swap(a.who(), b.into_request(&id)?).await?)
}

/// `GET /v1/services/{id}/logs`: the last lines as JSON, or with `follow=true` (or
/// `Accept: text/event-stream`) an SSE feed whose ids are line numbers, resumed after
/// `Last-Event-ID`.
async fn logs(
    State(st): State<RestState>,
    a: Ask,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> ApiResult {
    let id = service_id(&id)?;
    let tail = p.tail.unwrap_or(0) as usize;
    if !p.follow && !a.sse {
        return json(st.ops.logs(a.who(), &id, tail).await?);
    }
    let after = last_event_id(a.last_event_id.as_ref())?.unwrap_or(0);
    let lines = st.ops.follow_logs(a.who(), &id, tail, after).await?;
    Ok(sse(lines.map(|l| {
        SseEvent::default()
            .id(l.seq.to_string())
            .event("log")
            .data(serde_json::to_string(&l).unwrap_or_default())
    })))
}

/// `GET /v1/events`: a page of events, or with `Accept: text/event-stream` a live feed
/// (ids are event ids; `Last-Event-ID` resumes after the last one seen).
async fn events(State(st): State<RestState>, a: Ask, Query(p): Query<EventParams>) -> ApiResult {
    let after = p.after_id;
    let query = EventQuery::try_from(p)?;
    if !a.sse {
        return json(st.ops.events(a.who(), query).await?);
    }
    let w = WatchRequest {
        after_id: last_event_id(a.last_event_id.as_ref())?
            .or(after)
            .unwrap_or(0),
        filter: query.filter,
        include_logs: false,
    };
    let feed = st.ops.watch(a.who(), w).await?;
    Ok(sse(feed.filter_map(|item| async move {
        match item {
            Ok(Watched::Event(e)) => Some(
                SseEvent::default()
                    .id(e.id.to_string())
                    .event(e.kind.clone())
                    .data(serde_json::to_string(&e).unwrap_or_default()),
            ),
            Ok(Watched::Log { .. }) => None,
            // The subscriber fell behind the retained window or the store failed: say
            // so; the client reconnects with its Last-Event-ID.
            Err(e) => Some(
                SseEvent::default()
                    .event("error")
                    .data(serde_json::to_string(&e.0).unwrap_or_default()),
            ),
        }
    })))
}

async fn verify_events(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.verify_events(a.who()).await?)
}

async fn list_secrets(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.list_secrets(a.who()).await?)
}

async fn put_secret(
    State(st): State<RestState>,
    a: Ask,
    Path(name): Path<String>,
    Body(b): Body<SecretBody>,
) -> ApiResult {
    if b.name.is_some() {
        return Err(ApiError::invalid(
            "invalid_request",
            "the name is in the path, not the body",
        ));
    }
    let value = b.bytes()?;
    json(st.ops.put_secret(a.who(), &name, value.expose()).await?)
}

async fn get_secret(State(st): State<RestState>, a: Ask, Path(name): Path<String>) -> ApiResult {
    json(st.ops.get_secret(a.who(), &name).await?)
}

async fn delete_secret(State(st): State<RestState>, a: Ask, Path(name): Path<String>) -> ApiResult {
    json(st.ops.delete_secret(a.who(), &name).await?)
}

async fn bind_secret(
    State(st): State<RestState>,
    a: Ask,
    Path(name): Path<String>,
    Body(b): Body<BindHostsBody>,
) -> ApiResult {
    json(
        st.ops
            .bind_secret(a.who(), &name, &b.hosts, b.unbind)
            .await?,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressParams {
    tenant: Option<String>,
}

async fn list_egress(
    State(st): State<RestState>,
    a: Ask,
    Query(p): Query<EgressParams>,
) -> ApiResult {
    json(st.ops.egress_rules(a.who(), p.tenant.as_deref()).await?)
}

/// `POST /v1/egress/{tenant}/allow` or `/deny`.
async fn change_egress(
    State(st): State<RestState>,
    a: Ask,
    Path((tenant, change)): Path<(String, String)>,
    Body(b): Body<EgressRulesBody>,
) -> ApiResult {
    let allow = match change.as_str() {
        "allow" => true,
        "deny" => false,
        _ => return Err(not_found().await),
    };
    json(
        st.ops
            .change_egress(a.who(), &tenant, &b.rules, allow)
            .await?,
    )
}

async fn rotate_secrets(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.rotate_secrets(a.who()).await?)
}

async fn list_caps(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.list_capabilities(a.who()).await?)
}

async fn grant_cap(State(st): State<RestState>, a: Ask, Body(b): Body<GrantBody>) -> ApiResult {
    with_status(
        StatusCode::CREATED,
        st.ops.grant(a.who(), b.try_into()?).await?,
    )
}

async fn verify_cap(State(st): State<RestState>, a: Ask, Body(b): Body<VerifyBody>) -> ApiResult {
    let resource = resource_named(&b.resource)?;
    let permission = permission_named(&b.permission)?;
    json(
        st.ops
            .verify(a.who(), &b.token, &resource, permission)
            .await?,
    )
}

async fn revoke_cap(State(st): State<RestState>, a: Ask, Body(b): Body<RevokeBody>) -> ApiResult {
    json(st.ops.revoke(a.who(), &b.token).await?)
}

async fn attenuate_cap(
    State(st): State<RestState>,
    a: Ask,
    Body(b): Body<AttenuateBody>,
) -> ApiResult {
    let narrowing = b.narrowing()?;
    with_status(
        StatusCode::CREATED,
        st.ops.attenuate(a.who(), &b.token, &narrowing).await?,
    )
}

/// `GET /v1/discovery?name=N&key=value...`: with a name, the live registrations under
/// it whose metadata has every other pair; without, all of the tenant's.
async fn discover(
    State(st): State<RestState>,
    a: Ask,
    Query(mut q): Query<std::collections::BTreeMap<String, String>>,
) -> ApiResult {
    match q.remove("name") {
        Some(name) => json(st.ops.discover(a.who(), &name, &q).await?),
        None if q.is_empty() => json(st.ops.registrations(a.who(), None).await?),
        None => Err(ApiError::invalid(
            "invalid_query",
            "metadata filters need a name: /v1/discovery?name=N&key=value",
        )),
    }
}

/// `POST /v1/discovery`: registers one of the caller's services under a name.
async fn register(
    State(st): State<RestState>,
    a: Ask,
    Body(b): Body<RegisterRequest>,
) -> ApiResult {
    with_status(StatusCode::CREATED, st.ops.register(a.who(), b).await?)
}

/// `DELETE /v1/discovery/{handle}`: removes one of the caller's registrations.
async fn deregister(State(st): State<RestState>, a: Ask, Path(handle): Path<String>) -> ApiResult {
    json(st.ops.deregister(a.who(), &handle).await?)
}

/// `PUT /v1/system/config` `{"key": "limits.max_per_tenant", "value": 50}` (admin).
async fn set_config(State(st): State<RestState>, a: Ask, Body(b): Body<ConfigBody>) -> ApiResult {
    json(st.ops.set_config(a.who(), &b.key, &b.value_text()).await?)
}

async fn get_config(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.get_config(a.who()).await?)
}

async fn whoami(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.whoami(a.who()).await?)
}

async fn tools(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.service_tools(a.who()).await?)
}

async fn tree(State(st): State<RestState>, a: Ask) -> ApiResult {
    json(st.ops.tree(a.who()).await?)
}

/// `POST /v1/system/shutdown`, with an optional `{"grace_period_ms"}` (admin).
async fn shutdown(State(st): State<RestState>, a: Ask, req: Request) -> ApiResult {
    let body = bytes_of(req, &st).await?;
    let b: ShutdownBody = if body.is_empty() {
        ShutdownBody::default()
    } else {
        parse_json(&body)?
    };
    let grace = millis(i64::try_from(b.grace_period_ms).unwrap_or(i64::MAX));
    with_status(StatusCode::ACCEPTED, st.ops.shutdown(a.who(), grace).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_errors_name_the_position_and_the_field() {
        let e = parse_json::<serde_json::Value>(b"{\"a\": 1,\n \"b\": }").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        assert!(e.0.message.contains("line 2"), "{}", e.0.message);
        let e = parse_json::<RevokeBody>(br#"{"token": "t", "extra": 1}"#).unwrap_err();
        assert_eq!(e.reason(), "invalid_request");
        assert!(e.0.message.contains("extra"), "{}", e.0.message);
        let e = parse_json::<serde_json::Value>(b"").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
    }

    #[test]
    fn queries() {
        let p: ListParams = query_of("limit=5&state=running").unwrap();
        assert_eq!((p.limit, p.state.as_deref()), (5, Some("running")));
        let e = query_of::<ListParams>("limit=x").unwrap_err();
        assert_eq!(e.reason(), "invalid_query");
    }
}
