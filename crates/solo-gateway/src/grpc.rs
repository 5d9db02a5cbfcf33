//! The gRPC service `solo.v1.SoloKernel`: each RPC authenticates its caller, converts
//! its request at the edge, calls the kernel and maps the result.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use solo_kernel::{Caller, KillOptions, ListFilter, Narrowing};
use solo_proto::v1 as pb;
use solo_proto::v1::solo_kernel_server::{SoloKernel, SoloKernelServer};
use solo_store::{EventFilter, EventQuery, Order};
use solo_types::{Permission, Permissions, Resource, ServiceState, TenantId};
use tonic::{Request, Response, Status};

use crate::App;
use crate::auth::{ConnInfo, authenticate};
use crate::convert::{self, service_id};
use crate::error::ApiError;

/// Calls, kills and the shutdown grace period default to 5 s.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

type GrpcStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// The gRPC face of the kernel.
#[derive(Clone)]
pub struct Grpc {
    pub(crate) app: App,
}

/// The axum router serving `solo.v1.SoloKernel` (unknown methods answer `UNIMPLEMENTED`).
pub(crate) fn router(app: &App) -> axum::Router {
    let svc = SoloKernelServer::new(Grpc { app: app.clone() })
        .max_decoding_message_size(app.max_request_bytes)
        .max_encoding_message_size(64 << 20);
    tonic::service::Routes::new(svc)
        .prepare()
        .into_axum_router()
}

/// Ends a long-lived stream when the server drains, so connections can close.
fn until_drain<S>(app: &App, s: S) -> GrpcStream<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: Send,
{
    Box::pin(s.take_until(app.stopping.clone().cancelled_owned()))
}

/// The authenticated caller of a request, admitted by the load shedder for as long as
/// the handler runs.
fn caller<T>(app: &App, req: &Request<T>) -> Result<crate::auth::Admitted, Status> {
    let headers = req.metadata().clone().into_headers();
    let c = authenticate(&app.kernel, req.extensions().get::<ConnInfo>(), &headers)
        .map_err(Status::from)?;
    crate::auth::admit(&app.kernel, c).map_err(Status::from)
}

fn api(e: impl Into<ApiError>) -> Status {
    Status::from(e.into())
}

fn admin(c: &Caller, what: &str) -> Result<(), Status> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::admin_only(what).into())
    }
}

fn resource(s: &str) -> Result<Resource, Status> {
    s.parse::<Resource>()
        .map_err(|e| ApiError::invalid("invalid_resource", e).into())
}

fn permissions(p: &[String]) -> Result<Permissions, Status> {
    Permissions::parse(p.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid("invalid_permissions", e).into())
}

fn event_tenant(c: &Caller, requested: &str) -> Result<Option<TenantId>, Status> {
    convert::event_tenant(c, Some(requested)).map_err(Status::from)
}

#[tonic::async_trait]
impl SoloKernel for Grpc {
    async fn deploy(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let d = convert::deploy_from_proto(req.into_inner()).map_err(Status::from)?;
        let out = self.app.kernel.deploy(&c, d).await.map_err(api)?;
        Ok(Response::new(pb::DeployResponse {
            service_id: out.service_id.to_string(),
            status: "ok".into(),
            error: String::new(),
            code_hash: out.code_hash,
            version: out.version,
            event_id: out.event_id.unwrap_or(0),
            created: out.created,
            dry_run: out.dry_run,
            has_state: out.has_state,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let id = service_id(&req.get_ref().service_id).map_err(Status::from)?;
        let s = self.app.kernel.status(&c, &id).map_err(api)?;
        Ok(Response::new(convert::status_to_proto(&s)))
    }

    async fn kill(
        &self,
        req: Request<pb::KillRequest>,
    ) -> Result<Response<pb::KillResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let id = service_id(&r.service_id).map_err(Status::from)?;
        let timeout = convert::millis_or(i64::from(r.timeout_ms), DEFAULT_TIMEOUT_MS);
        let k = self
            .app
            .kernel
            .kill(
                &c,
                &id,
                KillOptions {
                    timeout,
                    force: r.force,
                },
            )
            .await
            .map_err(api)?;
        Ok(Response::new(pb::KillResponse {
            service_id: id.to_string(),
            status: "ok".into(),
            error: String::new(),
            event_id: k.event_id,
            snapshot_bytes: k.snapshot_bytes.unwrap_or(0) as u64,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let state = if r.state.is_empty() {
            None
        } else {
            Some(
                r.state
                    .parse::<ServiceState>()
                    .map_err(|e| Status::from(ApiError::invalid("invalid_state", e)))?,
            )
        };
        let list = self
            .app
            .kernel
            .list(
                &c,
                &ListFilter {
                    state,
                    limit: r.limit as usize,
                    offset: r.offset as usize,
                },
            )
            .map_err(api)?;
        Ok(Response::new(pb::ListResponse {
            services: list.services.iter().map(convert::service_info).collect(),
            total: list.total as u64,
        }))
    }

    type WatchStream = GrpcStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let service = if r.service_id.is_empty() {
            None
        } else {
            Some(service_id(&r.service_id).map_err(Status::from)?)
        };
        let filter = EventFilter {
            tenant: event_tenant(&c, &r.tenant)?,
            service: service.clone(),
            kind: (!r.kind.is_empty()).then(|| r.kind.clone()),
        };
        let sub = self.app.kernel.watch(&c, r.after_id, filter).map_err(api)?;
        let events = sub.into_stream().map(|e| {
            e.map(|e| convert::event_to_proto(&e))
                .map_err(|e| Status::from(ApiError::from(solo_kernel::KernelError::Store(e))))
        });
        let Some(service) = service.filter(|_| r.include_logs) else {
            return Ok(Response::new(until_drain(&self.app, events)));
        };
        let (_, rx) = self.app.kernel.follow_logs(&c, &service, 0).map_err(api)?;
        let tenant = c.tenant_id().to_string();
        let logs =
            convert::log_feed(rx).map(move |l| Ok(convert::log_to_event(&service, &tenant, &l)));
        Ok(Response::new(until_drain(
            &self.app,
            futures::stream::select(events, logs),
        )))
    }

    async fn shutdown(
        &self,
        req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        let c = caller(&self.app, &req)?;
        admin(&c, "shutdown")?;
        let grace =
            convert::millis_or(i64::from(req.get_ref().grace_period_ms), DEFAULT_TIMEOUT_MS);
        (self.app.on_shutdown)(grace);
        Ok(Response::new(pb::ShutdownResponse {
            status: "ok".into(),
            message: "Shutdown initiated".into(),
        }))
    }

    async fn register_service(
        &self,
        req: Request<pb::RegisterServiceRequest>,
    ) -> Result<Response<pb::RegisterServiceResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::discovery::register(&self.app, &c, req.into_inner()).await
    }

    async fn discover_service(
        &self,
        req: Request<pb::DiscoverServiceRequest>,
    ) -> Result<Response<pb::DiscoverServiceResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::discovery::discover(&self.app, &c, req.into_inner())
    }

    async fn get_services(
        &self,
        req: Request<pb::GetServicesRequest>,
    ) -> Result<Response<pb::GetServicesResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::discovery::get_services(&self.app, &c, req.into_inner())
    }

    async fn call(
        &self,
        req: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let id = service_id(&r.service_id).map_err(Status::from)?;
        let timeout = convert::millis_or(i64::from(r.timeout_ms), DEFAULT_TIMEOUT_MS);
        let reply = self
            .app
            .kernel
            .call(&c, &id, &r.request, timeout)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::CallResponse { reply }))
    }

    async fn cast(
        &self,
        req: Request<pb::CastRequest>,
    ) -> Result<Response<pb::CastResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let id = service_id(&r.service_id).map_err(Status::from)?;
        self.app.kernel.cast(&c, &id, &r.message).map_err(api)?;
        Ok(Response::new(pb::CastResponse {}))
    }

    async fn hot_swap(
        &self,
        req: Request<pb::HotSwapRequest>,
    ) -> Result<Response<pb::HotSwapResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::swap::hot_swap(&self.app, &c, req.into_inner()).await
    }

    type LogsStream = GrpcStream<Result<pb::LogLine, Status>>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let id = service_id(&r.service_id).map_err(Status::from)?;
        let tail = match r.tail {
            0 => 100,
            n => (n as usize).min(1000),
        };
        if !r.follow {
            let lines = self.app.kernel.logs(&c, &id, tail).map_err(api)?;
            let items: Vec<Result<pb::LogLine, Status>> =
                lines.iter().map(|l| Ok(convert::log_to_proto(l))).collect();
            return Ok(Response::new(Box::pin(futures::stream::iter(items))));
        }
        let (backlog, rx) = self.app.kernel.follow_logs(&c, &id, tail).map_err(api)?;
        let live = convert::log_feed(rx);
        let stream = futures::stream::iter(backlog)
            .chain(live)
            .map(|l| Ok(convert::log_to_proto(&l)));
        Ok(Response::new(until_drain(&self.app, stream)))
    }

    async fn query_events(
        &self,
        req: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let service = if r.service_id.is_empty() {
            None
        } else {
            Some(service_id(&r.service_id).map_err(Status::from)?)
        };
        let q = EventQuery {
            filter: EventFilter {
                tenant: event_tenant(&c, &r.tenant)?,
                service,
                kind: (!r.kind.is_empty()).then_some(r.kind),
            },
            after_id: (r.after_id != 0).then_some(r.after_id),
            before_id: (r.before_id != 0).then_some(r.before_id),
            since_ts: (r.since_ts != 0).then_some(r.since_ts),
            until_ts: (r.until_ts != 0).then_some(r.until_ts),
            limit: r.limit as usize,
            order: if r.descending {
                Order::Descending
            } else {
                Order::Ascending
            },
        };
        let page = self.app.kernel.events(&c, q).map_err(api)?;
        Ok(Response::new(pb::QueryEventsResponse {
            events: page.events.iter().map(convert::event_to_proto).collect(),
            next_cursor: page.next_cursor.unwrap_or(0),
        }))
    }

    async fn verify_events(
        &self,
        req: Request<pb::VerifyEventsRequest>,
    ) -> Result<Response<pb::VerifyEventsResponse>, Status> {
        let c = caller(&self.app, &req)?;
        admin(&c, "verifying the event log")?;
        let store = std::sync::Arc::clone(self.app.kernel.store());
        let report = tokio::task::spawn_blocking(move || store.verify())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| api(solo_kernel::KernelError::Store(e)))?;
        Ok(Response::new(pb::VerifyEventsResponse {
            ok: report.first_broken.is_none(),
            checked: report.checked,
            last_id: report.last_id,
            first_broken_id: report.first_broken.as_ref().map_or(0, |b| b.id),
            reason: report.first_broken.map(|b| b.reason).unwrap_or_default(),
        }))
    }

    async fn put_secret(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let event_id = self
            .app
            .kernel
            .put_secret(&c, &r.name, &r.value)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::PutSecretResponse { event_id }))
    }

    async fn get_secret(
        &self,
        req: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let v = self
            .app
            .kernel
            .get_secret(&c, &req.get_ref().name)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::GetSecretResponse {
            value: v.expose().to_vec(),
        }))
    }

    async fn list_secrets(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let names = self.app.kernel.list_secrets(&c).map_err(api)?;
        Ok(Response::new(pb::ListSecretsResponse { names }))
    }

    async fn delete_secret(
        &self,
        req: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let existed = self
            .app
            .kernel
            .delete_secret(&c, &req.get_ref().name)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::DeleteSecretResponse { existed }))
    }

    async fn rotate_secrets(
        &self,
        req: Request<pb::RotateSecretsRequest>,
    ) -> Result<Response<pb::RotateSecretsResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let n = self.app.kernel.rotate_secrets(&c).await.map_err(api)?;
        Ok(Response::new(pb::RotateSecretsResponse {
            rotated: n as u64,
        }))
    }

    async fn grant_capability(
        &self,
        req: Request<pb::GrantCapabilityRequest>,
    ) -> Result<Response<pb::GrantCapabilityResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let g = self
            .app
            .kernel
            .grant_capability(
                &c,
                resource(&r.resource)?,
                permissions(&r.permissions)?,
                convert::token_ttl(r.ttl_seconds),
            )
            .await
            .map_err(api)?;
        Ok(Response::new(pb::GrantCapabilityResponse {
            token: g.token.expose().to_string(),
            capability: Some(convert::cap_to_proto(&g.info)),
        }))
    }

    async fn verify_capability(
        &self,
        req: Request<pb::VerifyCapabilityRequest>,
    ) -> Result<Response<pb::VerifyCapabilityResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let permission: Permission = r
            .permission
            .parse()
            .map_err(|e| Status::from(ApiError::invalid("invalid_permission", e)))?;
        let out = self
            .app
            .kernel
            .verify_capability(&c, &r.token, &resource(&r.resource)?, permission)
            .await;
        Ok(Response::new(match out {
            Ok(info) => pb::VerifyCapabilityResponse {
                valid: true,
                reason: String::new(),
                capability: Some(convert::cap_to_proto(&info)),
            },
            Err(reason) => pb::VerifyCapabilityResponse {
                valid: false,
                reason: reason.as_str().into(),
                capability: None,
            },
        }))
    }

    async fn revoke_capability(
        &self,
        req: Request<pb::RevokeCapabilityRequest>,
    ) -> Result<Response<pb::RevokeCapabilityResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let n = self
            .app
            .kernel
            .revoke_capability(&c, &req.get_ref().token)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::RevokeCapabilityResponse {
            revoked: n as u64,
        }))
    }

    async fn attenuate_capability(
        &self,
        req: Request<pb::AttenuateCapabilityRequest>,
    ) -> Result<Response<pb::GrantCapabilityResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let r = req.into_inner();
        let narrowing = Narrowing {
            resource: if r.resource.is_empty() {
                None
            } else {
                Some(resource(&r.resource)?)
            },
            permissions: if r.permissions.is_empty() {
                None
            } else {
                Some(permissions(&r.permissions)?)
            },
            ttl_seconds: (r.ttl_seconds != 0).then_some(r.ttl_seconds),
        };
        let g = self
            .app
            .kernel
            .attenuate_capability(&c, &r.token, &narrowing)
            .await
            .map_err(api)?;
        Ok(Response::new(pb::GrantCapabilityResponse {
            token: g.token.expose().to_string(),
            capability: Some(convert::cap_to_proto(&g.info)),
        }))
    }

    async fn list_capabilities(
        &self,
        req: Request<pb::ListCapabilitiesRequest>,
    ) -> Result<Response<pb::ListCapabilitiesResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let caps = self.app.kernel.list_capabilities(&c).map_err(api)?;
        Ok(Response::new(pb::ListCapabilitiesResponse {
            capabilities: caps.iter().map(convert::cap_to_proto).collect(),
        }))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let h = self.app.health();
        Ok(Response::new(pb::HealthResponse {
            status: h.status.into(),
            version: h.version.into(),
            uptime_ms: h.uptime_ms,
            memory_mb: h.memory_mb,
            services: h.services,
            last_event_id: h.last_event_id,
        }))
    }

    async fn system_tree(
        &self,
        req: Request<pb::SystemTreeRequest>,
    ) -> Result<Response<pb::SystemTreeResponse>, Status> {
        let c = caller(&self.app, &req)?;
        let tree = self.app.kernel.tree(&c).map_err(api)?;
        Ok(Response::new(pb::SystemTreeResponse {
            tree_json: serde_json::to_string(&tree).unwrap_or_default(),
        }))
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let c = caller(&self.app, &req)?;
        admin(&c, "metrics")?;
        Ok(Response::new(pb::MetricsResponse {
            text: self.app.render_metrics(),
        }))
    }

    async fn set_config(
        &self,
        req: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::SetConfigResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::swap::set_config(&self.app, &c, req.into_inner()).await
    }

    async fn get_config(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::GetConfigResponse>, Status> {
        let c = caller(&self.app, &req)?;
        crate::swap::get_config(&self.app, &c)
    }
}
