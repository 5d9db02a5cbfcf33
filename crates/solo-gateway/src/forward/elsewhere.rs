//! A service's call to another tenant's service served on another node
//! (`solo_kernel::Elsewhere`), carried as a request of the token the service presented:
//! a node's certificate stands for nobody, so the serving node authenticates the token,
//! limits and admits the request, and records a refusal, as for any holder of it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::value::RawValue;
use solo_kernel::CallElsewhere;
use solo_types::Code;
use solo_types::api::Failure;

use super::{Forwarding, Upstream, owner_lost};

/// The most of an answer read back (the serving node bounds a reply far below this).
const MAX_ANSWER: usize = 64 << 20;

/// A call's answer: its reply, as the service wrote it.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    reply: &'a RawValue,
}

impl Forwarding {
    /// Makes `call` on `up`, the node serving its tenant: its reply (a cast's: `null`),
    /// or the serving node's refusal as it gave it.
    pub async fn call_elsewhere(
        &self,
        up: Upstream,
        call: CallElsewhere,
    ) -> Result<String, Failure> {
        let path = match call.timeout {
            Some(t) => format!(
                "/v1/services/{}/call?timeout_ms={}",
                call.service,
                t.as_millis().max(1)
            ),
            None => format!("/v1/services/{}/cast", call.service),
        };
        let req = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", call.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(call.request))
            .map_err(|_| {
                Failure::new(
                    Code::InvalidArgument,
                    "invalid_token",
                    "the capability token is not one Solo issued",
                )
            })?;
        let node = up.node.clone();
        let answered = self.forward_to(req, Ok(up));
        // The serving node keeps the call's deadline; a second more covers the way back.
        let wait = call.timeout.map_or(Duration::from_secs(30), |t| {
            t.saturating_add(Duration::from_secs(1))
        });
        let resp = tokio::time::timeout(wait, answered).await.map_err(|_| {
            Failure::new(
                Code::DeadlineExceeded,
                "deadline_exceeded",
                format!("node {node} did not answer the call in time"),
            )
        })?;
        let ok = resp.status().is_success();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|_| owner_lost(&node))?;
        let garbled = || {
            Failure::new(
                Code::Internal,
                "internal",
                format!("node {node} answered the call with something other than Solo's JSON"),
            )
        };
        if !ok {
            return Err(serde_json::from_slice::<Failure>(&bytes).unwrap_or_else(|_| garbled()));
        }
        if call.timeout.is_none() {
            return Ok("null".into());
        }
        serde_json::from_slice::<Answer<'_>>(&bytes)
            .map(|a| a.reply.get().to_string())
            .map_err(|_| garbled())
    }
}
