//! The gRPC face (`solo.v1.SoloKernel`): a codec. Each RPC decodes its request with
//! `solo_proto::convert`, runs the operation, and encodes the answer.

use std::pin::Pin;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use solo_proto::convert::{self as cv, LogsQuery};
use solo_proto::v1 as pb;
use solo_proto::v1::solo_kernel_server::{SoloKernel, SoloKernelServer};
use solo_types::api::{WatchRequest, millis, service_id};
use tonic::{Request, Response, Status};

use crate::auth::{Asker, ConnInfo};
use crate::error::ApiError;
use crate::ops::{Ops, SharedOps, Watched};

type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Rs<T> = Result<Response<T>, Status>;

/// The gRPC face.
#[derive(Clone)]
pub struct Grpc {
    ops: SharedOps,
}

/// The axum router serving `solo.v1.SoloKernel` (unknown methods answer `UNIMPLEMENTED`).
pub(crate) fn router(ops: SharedOps, max_request_bytes: usize) -> axum::Router {
    let svc = SoloKernelServer::new(Grpc { ops })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(64 << 20);
    tonic::service::Routes::new(svc)
        .prepare()
        .into_axum_router()
}

/// A request's credentials and message.
fn split<T>(req: Request<T>) -> (Asker, T) {
    let conn = req.extensions().get::<Arc<ConnInfo>>().cloned();
    let meta = req.metadata();
    let text = |key: &str| meta.get(key).and_then(|v| v.to_str().ok());
    let asker = Asker::new(conn, text("authorization"), text(solo_proto::TENANT_KEY));
    (asker, req.into_inner())
}

fn st(e: impl Into<ApiError>) -> Status {
    Status::from(e.into())
}

fn ok<T>(v: T) -> Rs<T> {
    Ok(Response::new(v))
}

impl Grpc {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

#[tonic::async_trait]
impl SoloKernel for Grpc {
    async fn deploy(&self, req: Request<pb::DeployRequest>) -> Rs<pb::DeployResponse> {
        let (a, r) = split(req);
        let d = self.ops().deploy(a.who(), r.try_into().map_err(st)?).await;
        ok((&d.map_err(st)?).into())
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Rs<pb::StatusResponse> {
        let (a, r) = split(req);
        let id = service_id(&r.service_id).map_err(st)?;
        ok((&self.ops().status(a.who(), &id).await.map_err(st)?).into())
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Rs<pb::KillResponse> {
        let (a, r) = split(req);
        let (id, opts) = cv::decode_kill(r).map_err(st)?;
        ok((&self.ops().kill(a.who(), &id, opts).await.map_err(st)?).into())
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Rs<pb::ListResponse> {
        let (a, r) = split(req);
        let filter = r.try_into().map_err(st)?;
        ok((&self.ops().list(a.who(), &filter).await.map_err(st)?).into())
    }

    type WatchStream = GrpcStream<pb::Event>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Rs<Self::WatchStream> {
        let (a, r) = split(req);
        let w = WatchRequest::try_from(r).map_err(st)?;
        let s = self.ops().watch(a.who(), w).await.map_err(st)?;
        ok(Box::pin(s.map(|item| match item {
            Ok(Watched::Event(e)) => Ok(pb::Event::from(&e)),
            Ok(Watched::Log {
                tenant,
                service,
                line,
            }) => Ok(cv::log_event(&tenant, &service, &line)),
            Err(e) => Err(st(e)),
        })))
    }

    async fn shutdown(&self, req: Request<pb::ShutdownRequest>) -> Rs<pb::ShutdownResponse> {
        let (a, r) = split(req);
        let grace = millis(i64::from(r.grace_period_ms));
        ok((&self.ops().shutdown(a.who(), grace).await.map_err(st)?).into())
    }

    async fn register_service(
        &self,
        req: Request<pb::RegisterServiceRequest>,
    ) -> Rs<pb::RegisterServiceResponse> {
        let (a, r) = split(req);
        ok((&self.ops().register(a.who(), r.into()).await.map_err(st)?).into())
    }

    async fn deregister_service(
        &self,
        req: Request<pb::DeregisterServiceRequest>,
    ) -> Rs<pb::DeregisterServiceResponse> {
        let (a, r) = split(req);
        let d = self.ops().deregister(a.who(), &r.service_handle).await;
        ok((&d.map_err(st)?).into())
    }

    async fn discover_service(
        &self,
        req: Request<pb::DiscoverServiceRequest>,
    ) -> Rs<pb::DiscoverServiceResponse> {
        let (a, r) = split(req);
        let filters = r.filters.into_iter().collect();
        let found = self
            .ops()
            .discover(a.who(), &r.service_name, &filters)
            .await
            .map_err(st)?;
        ok(pb::DiscoverServiceResponse {
            services: found.services.iter().map(Into::into).collect(),
        })
    }

    async fn get_services(
        &self,
        req: Request<pb::GetServicesRequest>,
    ) -> Rs<pb::GetServicesResponse> {
        let (a, r) = split(req);
        let name = (!r.service_name.is_empty()).then_some(r.service_name.as_str());
        let all = self.ops().registrations(a.who(), name).await.map_err(st)?;
        ok(pb::GetServicesResponse {
            services: all.services.iter().map(Into::into).collect(),
            total_count: i64::try_from(all.total_count).unwrap_or(i64::MAX),
        })
    }

    async fn call(&self, req: Request<pb::CallRequest>) -> Rs<pb::CallResponse> {
        let (a, r) = split(req);
        let (id, request, timeout) = cv::decode_call(r).map_err(st)?;
        let reply = self.ops().call(a.who(), &id, &request, timeout).await;
        ok(pb::CallResponse {
            reply: reply.map_err(st)?,
        })
    }

    async fn cast(&self, req: Request<pb::CastRequest>) -> Rs<pb::CastResponse> {
        let (a, r) = split(req);
        let id = service_id(&r.service_id).map_err(st)?;
        self.ops()
            .cast(a.who(), &id, &r.message)
            .await
            .map_err(st)?;
        ok(pb::CastResponse {})
    }

    async fn hot_swap(&self, req: Request<pb::HotSwapRequest>) -> Rs<pb::HotSwapResponse> {
        let (a, r) = split(req);
        let s = self.ops().swap(a.who(), r.try_into().map_err(st)?).await;
        ok((&s.map_err(st)?).into())
    }

    type LogsStream = GrpcStream<pb::LogLine>;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Rs<Self::LogsStream> {
        let (a, r) = split(req);
        let q = LogsQuery::try_from(r).map_err(st)?;
        let lines: GrpcStream<pb::LogLine> = if q.follow {
            let s = self
                .ops()
                .follow_logs(a.who(), &q.service_id, q.tail, q.after_seq)
                .await
                .map_err(st)?;
            Box::pin(s.map(|l| Ok(pb::LogLine::from(&l))))
        } else {
            let past = self
                .ops()
                .logs(a.who(), &q.service_id, q.tail)
                .await
                .map_err(st)?;
            let items: Vec<_> = past.lines.iter().map(|l| Ok(l.into())).collect();
            Box::pin(futures::stream::iter(items))
        };
        ok(lines)
    }

    async fn query_events(
        &self,
        req: Request<pb::QueryEventsRequest>,
    ) -> Rs<pb::QueryEventsResponse> {
        let (a, r) = split(req);
        let q = r.try_into().map_err(st)?;
        ok((&self.ops().events(a.who(), q).await.map_err(st)?).into())
    }

    async fn verify_events(
        &self,
        req: Request<pb::VerifyEventsRequest>,
    ) -> Rs<pb::VerifyEventsResponse> {
        let (a, _) = split(req);
        ok((&self.ops().verify_events(a.who()).await.map_err(st)?).into())
    }

    async fn put_secret(&self, req: Request<pb::PutSecretRequest>) -> Rs<pb::PutSecretResponse> {
        let (a, r) = split(req);
        let s = self.ops().put_secret(a.who(), &r.name, &r.value).await;
        ok(pb::PutSecretResponse {
            event_id: s.map_err(st)?.event_id,
        })
    }

    async fn get_secret(&self, req: Request<pb::GetSecretRequest>) -> Rs<pb::GetSecretResponse> {
        let (a, r) = split(req);
        let s = self.ops().get_secret(a.who(), &r.name).await;
        ok(pb::GetSecretResponse {
            value: s.map_err(st)?.value.expose().to_vec(),
        })
    }

    async fn list_secrets(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Rs<pb::ListSecretsResponse> {
        let (a, _) = split(req);
        ok(pb::ListSecretsResponse {
            names: self.ops().list_secrets(a.who()).await.map_err(st)?.names,
        })
    }

    async fn delete_secret(
        &self,
        req: Request<pb::DeleteSecretRequest>,
    ) -> Rs<pb::DeleteSecretResponse> {
        let (a, r) = split(req);
        let d = self.ops().delete_secret(a.who(), &r.name).await;
        ok(pb::DeleteSecretResponse {
            existed: d.map_err(st)?.existed,
        })
    }

    async fn rotate_secrets(
        &self,
        req: Request<pb::RotateSecretsRequest>,
    ) -> Rs<pb::RotateSecretsResponse> {
        let (a, _) = split(req);
        let r = self.ops().rotate_secrets(a.who()).await;
        ok(pb::RotateSecretsResponse {
            rotated: r.map_err(st)?.rotated,
        })
    }

    async fn bind_secret(&self, req: Request<pb::BindSecretRequest>) -> Rs<pb::BindSecretResponse> {
        let (a, r) = split(req);
        let b = self
            .ops()
            .bind_secret(a.who(), &r.name, &r.hosts, r.unbind)
            .await
            .map_err(st)?;
        ok(pb::BindSecretResponse {
            name: b.name,
            hosts: b.hosts,
        })
    }

    async fn change_egress(&self, req: Request<pb::ChangeEgressRequest>) -> Rs<pb::EgressRules> {
        let (a, r) = split(req);
        let e = self
            .ops()
            .change_egress(a.who(), &r.tenant, &r.rules, r.allow)
            .await
            .map_err(st)?;
        ok(egress_rules(e))
    }

    async fn list_egress(&self, req: Request<pb::ListEgressRequest>) -> Rs<pb::ListEgressResponse> {
        let (a, r) = split(req);
        let tenant = Some(r.tenant.as_str()).filter(|t| !t.is_empty());
        let l = self.ops().egress_rules(a.who(), tenant).await.map_err(st)?;
        ok(pb::ListEgressResponse {
            tenants: l.tenants.into_iter().map(egress_rules).collect(),
        })
    }

    async fn grant_capability(
        &self,
        req: Request<pb::GrantCapabilityRequest>,
    ) -> Rs<pb::GrantCapabilityResponse> {
        let (a, r) = split(req);
        let g = self.ops().grant(a.who(), r.try_into().map_err(st)?).await;
        ok((&g.map_err(st)?).into())
    }

    async fn verify_capability(
        &self,
        req: Request<pb::VerifyCapabilityRequest>,
    ) -> Rs<pb::VerifyCapabilityResponse> {
        let (a, r) = split(req);
        let (token, resource, permission) = cv::decode_verify(r).map_err(st)?;
        let v = self
            .ops()
            .verify(a.who(), &token, &resource, permission)
            .await;
        ok((&v.map_err(st)?).into())
    }

    async fn revoke_capability(
        &self,
        req: Request<pb::RevokeCapabilityRequest>,
    ) -> Rs<pb::RevokeCapabilityResponse> {
        let (a, r) = split(req);
        let n = self.ops().revoke(a.who(), &r.token).await;
        ok(pb::RevokeCapabilityResponse {
            revoked: n.map_err(st)?.revoked,
        })
    }

    async fn attenuate_capability(
        &self,
        req: Request<pb::AttenuateCapabilityRequest>,
    ) -> Rs<pb::GrantCapabilityResponse> {
        let (a, r) = split(req);
        let (token, narrowing) = cv::decode_attenuate(r).map_err(st)?;
        let g = self.ops().attenuate(a.who(), &token, &narrowing).await;
        ok((&g.map_err(st)?).into())
    }

    async fn list_capabilities(
        &self,
        req: Request<pb::ListCapabilitiesRequest>,
    ) -> Rs<pb::ListCapabilitiesResponse> {
        let (a, _) = split(req);
        let caps = self.ops().list_capabilities(a.who()).await.map_err(st)?;
        ok(pb::ListCapabilitiesResponse {
            capabilities: caps.capabilities.iter().map(Into::into).collect(),
        })
    }

    async fn health(&self, req: Request<pb::HealthRequest>) -> Rs<pb::HealthResponse> {
        let (a, _) = split(req);
        ok((&self.ops().health(a.who())).into())
    }

    async fn system_tree(&self, req: Request<pb::SystemTreeRequest>) -> Rs<pb::SystemTreeResponse> {
        let (a, _) = split(req);
        ok((&self.ops().tree(a.who()).await.map_err(st)?).into())
    }

    async fn metrics(&self, req: Request<pb::MetricsRequest>) -> Rs<pb::MetricsResponse> {
        let (a, _) = split(req);
        ok(pb::MetricsResponse {
            text: self.ops().metrics(a.who()).await.map_err(st)?.text,
        })
    }

    async fn set_config(&self, req: Request<pb::SetConfigRequest>) -> Rs<pb::SetConfigResponse> {
        let (a, r) = split(req);
        let change = self.ops().set_config(a.who(), &r.key, &r.value).await;
        ok((&change.map_err(st)?).into())
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Rs<pb::WhoAmIResponse> {
        let (a, _) = split(req);
        ok((&self.ops().whoami(a.who()).await.map_err(st)?).into())
    }

    async fn list_tools(&self, req: Request<pb::ListToolsRequest>) -> Rs<pb::ListToolsResponse> {
        let (a, _) = split(req);
        ok((&self.ops().service_tools(a.who()).await.map_err(st)?).into())
    }

    async fn get_config(&self, req: Request<pb::GetConfigRequest>) -> Rs<pb::GetConfigResponse> {
        let (a, _) = split(req);
        ok((&self.ops().get_config(a.who()).await.map_err(st)?).into())
    }
}

fn egress_rules(e: solo_types::api::EgressRules) -> pb::EgressRules {
    pb::EgressRules {
        tenant: e.tenant.to_string(),
        rules: e.rules,
    }
}
