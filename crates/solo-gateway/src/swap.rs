//! Hot swap over the wire, and runtime configuration.

use std::time::Duration;

use solo_kernel::{Caller, SwapMode, SwapRequest};
use solo_proto::v1 as pb;
use tonic::{Response, Status};

use crate::App;
use crate::convert::{format_of, service_id};
use crate::error::ApiError;

/// A kernel swap request from the wire's fields.
pub(crate) fn swap_request(
    id: &str,
    format: i32,
    code: Vec<u8>,
    mode: &str,
    rollback_window_ms: u32,
) -> Result<SwapRequest, ApiError> {
    let service_id = service_id(id)?;
    if code.is_empty() {
        return Err(ApiError::invalid("missing_code", "the request has no code"));
    }
    let format = format_of(format, &code)?;
    let mode: SwapMode = mode
        .parse()
        .map_err(|e: String| ApiError::invalid("invalid_mode", e))?;
    Ok(SwapRequest {
        service_id,
        format,
        code: code.into(),
        mode,
        rollback_window: (rollback_window_ms != 0)
            .then(|| Duration::from_millis(u64::from(rollback_window_ms))),
    })
}

pub(crate) async fn hot_swap(
    app: &App,
    caller: &Caller,
    r: pb::HotSwapRequest,
) -> Result<Response<pb::HotSwapResponse>, Status> {
    let code = if r.code_bytes.is_empty() {
        r.code.into_bytes()
    } else {
        r.code_bytes
    };
    let req = swap_request(&r.service_id, r.format, code, &r.mode, r.rollback_window_ms)
        .map_err(Status::from)?;
    let s = app
        .kernel
        .hot_swap(caller, req)
        .await
        .map_err(|e| Status::from(ApiError::from(e)))?;
    Ok(Response::new(pb::HotSwapResponse {
        service_id: s.service_id.to_string(),
        status: "ok".into(),
        version: s.version,
        code_hash: s.code_hash,
        event_id: s.event_id,
        method: s.method.into(),
        state_carried: s.state_carried,
        snapshot_bytes: s.snapshot_bytes.unwrap_or(0) as u64,
    }))
}

pub(crate) async fn set_config(
    app: &App,
    caller: &Caller,
    r: pb::SetConfigRequest,
) -> Result<Response<pb::SetConfigResponse>, Status> {
    if !caller.is_admin() {
        return Err(ApiError::admin_only("changing the runtime configuration").into());
    }
    let (previous, value) = app
        .kernel
        .set_config(caller, &r.key, &r.value)
        .await
        .map_err(|e| Status::from(ApiError::from(e)))?;
    Ok(Response::new(pb::SetConfigResponse {
        key: r.key,
        value: value.to_string(),
        previous: previous.to_string(),
    }))
}

pub(crate) fn get_config(
    app: &App,
    caller: &Caller,
) -> Result<Response<pb::GetConfigResponse>, Status> {
    if !caller.is_admin() {
        return Err(ApiError::admin_only("reading the runtime configuration").into());
    }
    let values = app
        .kernel
        .runtime_config(caller)
        .map_err(|e| Status::from(ApiError::from(e)))?;
    Ok(Response::new(pb::GetConfigResponse {
        values: values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        pressure: app.kernel.pressure().into(),
    }))
}
