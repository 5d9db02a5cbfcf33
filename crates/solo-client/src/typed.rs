//! The typed client: one method per operation, taking and returning the operations'
//! types (`solo_types::api`), with every refusal a [`Failure`] carrying the server's
//! code and reason. The wire is `solo_proto`'s business.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use solo_proto::convert::{self as cv, LogsQuery};
use solo_proto::v1 as pb;
use solo_types::api::*;
use solo_types::{
    Code, Event, EventPage, EventQuery, Permission, Resource, ServiceId, ServiceStatus, TenantId,
};

use crate::{Client, describe_status};

type R<T> = Result<T, Failure>;

/// A connected client. Cheap to clone; every method may run concurrently.
#[derive(Clone)]
pub struct Solo {
    raw: Client,
}

/// A refusal from the server, or a connection that failed (then the message says how).
/// A connection that broke before the server answered (the node died, or a standby's
/// relay lost its way to the active node) is `unavailable` (`connection_lost`): the call
/// may or may not have run, and may be tried again.
pub fn failure(s: &tonic::Status) -> Failure {
    let mut f = cv::failure(s);
    if s.metadata().get(solo_proto::REASON_KEY).is_none() {
        f.message = describe_status(s);
        if connection_lost(s) {
            f.code = Code::Unavailable;
            f.reason = "connection_lost".into();
        }
    }
    f
}

/// Whether `s` is the transport's error rather than an answer: tonic gives such a status
/// the error as its source, and codes it `unknown` or `cancelled`. The client's own
/// deadline (`TimeoutExpired`) is not a lost connection, nor is a TLS refusal (an alert
/// from the server, a certificate the client would not accept).
fn connection_lost(s: &tonic::Status) -> bool {
    if !matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled) {
        return false;
    }
    let mut cur = std::error::Error::source(s);
    let transport = cur.is_some();
    while let Some(e) = cur {
        let tls = e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>());
        if tls || e.is::<tonic::TimeoutExpired>() {
            return false;
        }
        cur = e.source();
    }
    transport
}

fn fail(s: tonic::Status) -> Failure {
    failure(&s)
}

impl Solo {
    pub fn new(raw: Client) -> Self {
        Self { raw }
    }

    /// The generated gRPC client, for what the typed methods do not cover.
    pub fn raw(&self) -> Client {
        self.raw.clone()
    }

    pub async fn deploy(&self, req: &DeployRequest) -> R<Deployed> {
        let r = self.raw().deploy(pb::DeployRequest::from(req)).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn status(&self, id: &ServiceId) -> R<ServiceStatus> {
        let req = pb::StatusRequest {
            service_id: id.to_string(),
        };
        self.raw()
            .status(req)
            .await
            .map_err(fail)?
            .into_inner()
            .try_into()
    }

    pub async fn list(&self, filter: &ListFilter) -> R<ServiceList> {
        let r = self.raw().list(pb::ListRequest::from(filter)).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    /// Calls a service; the answer is the reply's JSON as the service wrote it.
    pub async fn call(
        &self,
        id: &ServiceId,
        request: &str,
        timeout: Option<Duration>,
    ) -> R<String> {
        let r = self.raw().call(cv::encode_call(id, request, timeout)).await;
        Ok(r.map_err(fail)?.into_inner().reply)
    }

    pub async fn cast(&self, id: &ServiceId, message: &str) -> R<Accepted> {
        let req = pb::CastRequest {
            service_id: id.to_string(),
            message: message.to_string(),
        };
        self.raw().cast(req).await.map_err(fail)?;
        Ok(Accepted {
            service_id: id.clone(),
            accepted: true,
        })
    }

    pub async fn swap(&self, req: &SwapRequest) -> R<Swapped> {
        let r = self.raw().hot_swap(pb::HotSwapRequest::from(req)).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn kill(&self, id: &ServiceId, options: KillOptions) -> R<Killed> {
        let r = self.raw().kill(cv::encode_kill(id, options)).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    /// Past log lines (`tail` 0: the server's default).
    pub async fn logs(&self, id: &ServiceId, tail: usize) -> R<LogLines> {
        let lines: Vec<LogLine> = self
            .log_feed(id, tail, false, 0)
            .await?
            .try_collect()
            .await?;
        Ok(LogLines { lines })
    }

    /// Past log lines, then new ones as they are written.
    pub async fn follow_logs(
        &self,
        id: &ServiceId,
        tail: usize,
        after_seq: u64,
    ) -> R<BoxStream<'static, R<LogLine>>> {
        self.log_feed(id, tail, true, after_seq).await
    }

    async fn log_feed(
        &self,
        id: &ServiceId,
        tail: usize,
        follow: bool,
        after_seq: u64,
    ) -> R<BoxStream<'static, R<LogLine>>> {
        let q = LogsQuery {
            service_id: id.clone(),
            tail,
            follow,
            after_seq,
        };
        let s = self.raw().logs(pb::LogsRequest::from(&q)).await;
        let s = s.map_err(fail)?.into_inner();
        Ok(Box::pin(s.map(|l| l.map(LogLine::from).map_err(fail))))
    }

    /// Events after `after_id`, then live ones (with `include_logs`, log lines as
    /// `service_log` events with id 0).
    pub async fn watch(&self, req: &WatchRequest) -> R<BoxStream<'static, R<Event>>> {
        let s = self.raw().watch(pb::WatchRequest::from(req)).await;
        let s = s.map_err(fail)?.into_inner();
        Ok(Box::pin(
            s.map(|e| e.map_err(fail).and_then(Event::try_from)),
        ))
    }

    pub async fn events(&self, query: &EventQuery) -> R<EventPage> {
        let r = self
            .raw()
            .query_events(pb::QueryEventsRequest::from(query))
            .await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn verify_events(&self) -> R<LogVerification> {
        let r = self.raw().verify_events(pb::VerifyEventsRequest {}).await;
        Ok(r.map_err(fail)?.into_inner().into())
    }

    pub async fn put_secret(&self, name: &str, value: &[u8]) -> R<SecretStored> {
        let req = pb::PutSecretRequest {
            name: name.to_string(),
            value: value.to_vec(),
        };
        let r = self.raw().put_secret(req).await.map_err(fail)?;
        Ok(SecretStored {
            name: name.to_string(),
            event_id: r.into_inner().event_id,
        })
    }

    pub async fn get_secret(&self, name: &str) -> R<Secret> {
        let req = pb::GetSecretRequest {
            name: name.to_string(),
        };
        let r = self.raw().get_secret(req).await.map_err(fail)?;
        Ok(Secret {
            name: name.to_string(),
            value: SecretBytes::new(r.into_inner().value),
        })
    }

    pub async fn list_secrets(&self) -> R<SecretNames> {
        let r = self.raw().list_secrets(pb::ListSecretsRequest {}).await;
        Ok(SecretNames {
            names: r.map_err(fail)?.into_inner().names,
        })
    }

    pub async fn delete_secret(&self, name: &str) -> R<SecretDeleted> {
        let req = pb::DeleteSecretRequest {
            name: name.to_string(),
        };
        let r = self.raw().delete_secret(req).await.map_err(fail)?;
        Ok(SecretDeleted {
            name: name.to_string(),
            existed: r.into_inner().existed,
        })
    }

    pub async fn rotate_secrets(&self) -> R<Rotated> {
        let r = self.raw().rotate_secrets(pb::RotateSecretsRequest {}).await;
        Ok(Rotated {
            rotated: r.map_err(fail)?.into_inner().rotated,
        })
    }

    pub async fn bind_secret(&self, name: &str, hosts: &[String], unbind: bool) -> R<SecretHosts> {
        let r = self
            .raw()
            .bind_secret(pb::BindSecretRequest {
                name: name.to_string(),
                hosts: hosts.to_vec(),
                unbind,
            })
            .await
            .map_err(fail)?
            .into_inner();
        Ok(SecretHosts {
            name: r.name,
            hosts: r.hosts,
        })
    }

    /// Adds (`allow`) or removes a tenant's egress rules (admin).
    pub async fn change_egress(
        &self,
        tenant: &str,
        rules: &[String],
        allow: bool,
    ) -> R<EgressRules> {
        let r = self
            .raw()
            .change_egress(pb::ChangeEgressRequest {
                tenant: tenant.to_string(),
                rules: rules.to_vec(),
                allow,
            })
            .await
            .map_err(fail)?
            .into_inner();
        egress_rules(r)
    }

    pub async fn egress_rules(&self, tenant: Option<&str>) -> R<EgressList> {
        let r = self
            .raw()
            .list_egress(pb::ListEgressRequest {
                tenant: tenant.unwrap_or_default().to_string(),
            })
            .await
            .map_err(fail)?
            .into_inner();
        Ok(EgressList {
            tenants: r.tenants.into_iter().map(egress_rules).collect::<R<_>>()?,
        })
    }

    pub async fn grant(&self, req: &GrantRequest) -> R<Granted> {
        let r = self
            .raw()
            .grant_capability(pb::GrantCapabilityRequest::from(req))
            .await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn attenuate(&self, token: &str, n: &Narrowing) -> R<Granted> {
        let r = self
            .raw()
            .attenuate_capability(cv::encode_attenuate(token, n))
            .await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn verify(
        &self,
        token: &str,
        resource: &Resource,
        permission: Permission,
    ) -> R<Verification> {
        let req = pb::VerifyCapabilityRequest {
            token: token.to_string(),
            resource: resource.to_string(),
            permission: permission.as_str().to_string(),
        };
        let r = self.raw().verify_capability(req).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn revoke(&self, token_or_hash: &str) -> R<Revoked> {
        let req = pb::RevokeCapabilityRequest {
            token: token_or_hash.to_string(),
        };
        let r = self.raw().revoke_capability(req).await;
        Ok(Revoked {
            revoked: r.map_err(fail)?.into_inner().revoked,
        })
    }

    pub async fn list_capabilities(&self) -> R<CapList> {
        let r = self
            .raw()
            .list_capabilities(pb::ListCapabilitiesRequest {})
            .await;
        let capabilities = r
            .map_err(fail)?
            .into_inner()
            .capabilities
            .into_iter()
            .map(CapInfo::try_from)
            .collect::<R<_>>()?;
        Ok(CapList { capabilities })
    }

    pub async fn register(&self, req: &RegisterRequest) -> R<Registered> {
        let r = self
            .raw()
            .register_service(pb::RegisterServiceRequest::from(req))
            .await;
        Ok(r.map_err(fail)?.into_inner().into())
    }

    /// Removes one of the caller's registrations by handle; idempotent.
    pub async fn deregister(&self, handle: &str) -> R<Deregistered> {
        let r = self
            .raw()
            .deregister_service(pb::DeregisterServiceRequest {
                service_handle: handle.to_string(),
            })
            .await;
        Ok(r.map_err(fail)?.into_inner().into())
    }

    /// The live registrations under `name` whose metadata has every pair of `filters`.
    pub async fn discover(
        &self,
        name: &str,
        filters: &BTreeMap<String, String>,
    ) -> R<Registrations> {
        let req = pb::DiscoverServiceRequest {
            service_name: name.to_string(),
            filters: filters.clone().into_iter().collect(),
        };
        let r = self.raw().discover_service(req).await.map_err(fail)?;
        Ok(cv::discovered(r.into_inner().services)?.into())
    }

    /// Every unexpired registration (under `name` when given).
    pub async fn registrations(&self, name: Option<&str>) -> R<Registrations> {
        let req = pb::GetServicesRequest {
            service_name: name.unwrap_or_default().to_string(),
        };
        let r = self.raw().get_services(req).await.map_err(fail)?;
        Ok(cv::discovered(r.into_inner().services)?.into())
    }

    pub async fn whoami(&self) -> R<Identity> {
        let r = self.raw().who_am_i(pb::WhoAmIRequest {}).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    /// The services offered as tools that this caller may call.
    pub async fn service_tools(&self) -> R<ServiceTools> {
        let r = self.raw().list_tools(pb::ListToolsRequest {}).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn tree(&self) -> R<TreeNode> {
        let r = self.raw().system_tree(pb::SystemTreeRequest {}).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    pub async fn health(&self) -> R<Health> {
        let r = self.raw().health(pb::HealthRequest {}).await;
        Ok(r.map_err(fail)?.into_inner().into())
    }

    pub async fn metrics(&self) -> R<Metrics> {
        let r = self.raw().metrics(pb::MetricsRequest {}).await;
        Ok(Metrics {
            text: r.map_err(fail)?.into_inner().text,
        })
    }

    pub async fn get_config(&self) -> R<RuntimeConfig> {
        let r = self.raw().get_config(pb::GetConfigRequest {}).await;
        Ok(r.map_err(fail)?.into_inner().into())
    }

    pub async fn set_config(&self, key: &str, value: &str) -> R<ConfigChange> {
        let req = pb::SetConfigRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        let r = self.raw().set_config(req).await;
        r.map_err(fail)?.into_inner().try_into()
    }

    /// Asks the server to stop gracefully within `grace` (`None`: its default).
    pub async fn shutdown(&self, grace: Option<Duration>) -> R<ShutdownStarted> {
        let req = pb::ShutdownRequest {
            grace_period_ms: grace.map_or(0, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX)),
        };
        let r = self.raw().shutdown(req).await;
        Ok(r.map_err(fail)?.into_inner().into())
    }
}

fn egress_rules(r: pb::EgressRules) -> R<EgressRules> {
    Ok(EgressRules {
        tenant: TenantId::new(&r.tenant)
            .map_err(|e| Failure::new(Code::Internal, "bad_answer", e.to_string()))?,
        rules: r.rules,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_and_an_answer_or_a_deadline_is_not() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify",
        )));
        let f = failure(&broken);
        assert_eq!(
            (f.code, f.reason.as_str()),
            (Code::Unavailable, "connection_lost")
        );
        // The server's own `unknown` (no source) stays what it was.
        let answered = failure(&tonic::Status::unknown("guest said so"));
        assert_eq!(answered.code, Code::Internal);
        // A TLS refusal is not a lost connection.
        let refused = tonic::Status::from_error(Box::new(std::io::Error::other(
            rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError),
        )));
        assert_ne!(failure(&refused).code, Code::Unavailable);
        let late = failure(&tonic::Status::from_error(Box::new(tonic::TimeoutExpired(
            (),
        ))));
        assert_ne!(late.code, Code::Unavailable);
        assert!(late.message.contains("Timeout expired"), "{}", late.message);
    }
}
