//! Service discovery over the wire: `RegisterService`, `DiscoverService`, `GetServices`.

use solo_kernel::{Caller, Discovered, RegisterRequest};
use solo_proto::v1 as pb;
use tonic::{Response, Status};

use crate::App;
use crate::error::ApiError;

fn api(e: solo_kernel::KernelError) -> Status {
    Status::from(ApiError::from(e))
}

pub(crate) fn to_proto(d: &Discovered) -> pb::DiscoveredService {
    let r = &d.registration;
    pb::DiscoveredService {
        service_id: r.service_id.to_string(),
        service_handle: r.handle.clone(),
        service_name: r.name.clone(),
        version: r.version.clone(),
        alive: d.alive,
        metadata: r.metadata.clone().into_iter().collect(),
        expires_at: r.expires_at,
    }
}

pub(crate) fn to_json(d: &Discovered) -> serde_json::Value {
    let r = &d.registration;
    serde_json::json!({
        "service_id": r.service_id,
        "service_handle": r.handle,
        "service_name": r.name,
        "version": r.version,
        "alive": d.alive,
        "metadata": r.metadata,
        "expires_at": r.expires_at,
    })
}

pub(crate) async fn register(
    app: &App,
    caller: &Caller,
    r: pb::RegisterServiceRequest,
) -> Result<Response<pb::RegisterServiceResponse>, Status> {
    let reg = app
        .kernel
        .register_service(
            caller,
            RegisterRequest {
                service_id: r.service_id,
                name: r.service_name,
                version: r.version,
                metadata: r.metadata.into_iter().collect(),
                ttl_seconds: i64::from(r.ttl_seconds),
            },
        )
        .await
        .map_err(api)?;
    Ok(Response::new(pb::RegisterServiceResponse {
        registered: true,
        service_handle: reg.handle,
        error: String::new(),
    }))
}

pub(crate) fn discover(
    app: &App,
    caller: &Caller,
    r: pb::DiscoverServiceRequest,
) -> Result<Response<pb::DiscoverServiceResponse>, Status> {
    let found = app
        .kernel
        .discover(caller, &r.service_name, &r.filters.into_iter().collect())
        .map_err(api)?;
    Ok(Response::new(pb::DiscoverServiceResponse {
        services: found.iter().map(to_proto).collect(),
    }))
}

pub(crate) fn get_services(
    app: &App,
    caller: &Caller,
    r: pb::GetServicesRequest,
) -> Result<Response<pb::GetServicesResponse>, Status> {
    let name = (!r.service_name.is_empty()).then_some(r.service_name.as_str());
    let all = app.kernel.registrations(caller, name).map_err(api)?;
    Ok(Response::new(pb::GetServicesResponse {
        total_count: i64::try_from(all.len()).unwrap_or(i64::MAX),
        services: all.iter().map(to_proto).collect(),
    }))
}
