//! The operation table: every operation of the API, written once. Each authenticates
//! its caller (certificate or bearer token), admits it through the load shedder (the
//! permit is held until the answer is ready; a stream holds it while it is set up),
//! calls the kernel and returns the answer as a `solo_types::api` type. The faces
//! (`grpc.rs`, `rest.rs`, and any later one) only decode a request into its input and
//! encode the answer: they cannot reach the kernel except through here, so admission
//! applies to every face by construction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use solo_kernel::api::*;
use solo_kernel::{Caller, Kernel, KernelError, Permit};
use solo_types::metric_names as m;
use solo_types::{Permission, Resource, ServiceId, ServiceStatus, TenantId};
use tokio_util::sync::CancellationToken;

use crate::auth::{Who, authenticate};
use crate::error::ApiError;

type R<T> = Result<T, ApiError>;

/// An item of a watch: an event, or (with `include_logs`) one of a service's log lines.
#[derive(Debug, Clone)]
pub enum Watched {
    Event(Event),
    Log {
        tenant: TenantId,
        service: ServiceId,
        line: LogLine,
    },
}

/// How long the refusal of a tenant that ignores its retry hints is held.
const HOLD: Duration = Duration::from_secs(1);
/// Refusals held at once at most; past it, refusals are answered at once.
const MAX_HELD: usize = 4096;

/// The operations, over one kernel.
#[derive(Clone)]
pub struct Ops {
    kernel: Kernel,
    /// Cancelled when the server drains: long-lived streams end.
    stopping: CancellationToken,
    /// Refusals being held (see [`Ops::admit`]).
    held: Arc<AtomicUsize>,
}

/// An authenticated caller holding its place in the in-flight limits.
struct Admitted {
    caller: Caller,
    _permit: Permit,
}

impl Ops {
    pub(crate) fn new(kernel: Kernel, stopping: CancellationToken) -> Self {
        Self {
            kernel,
            stopping,
            held: Arc::default(),
        }
    }

    /// Authenticates the caller and admits it through the load shedder. A tenant that
    /// is refused for its rate again before its last retry hint ran out (it ignores the
    /// hints) has the refusal held for [`HOLD`] before it is answered, so hammering
    /// costs Solo a timer rather than a stream of answers.
    async fn admit(&self, who: Who<'_>) -> R<Admitted> {
        let caller = authenticate(&self.kernel, who)?;
        match self.kernel.admit(&caller) {
            Ok(permit) => Ok(Admitted {
                caller,
                _permit: permit,
            }),
            Err(e) => {
                if matches!(e, KernelError::RateLimited { ignoring: true, .. }) {
                    self.hold().await;
                }
                Err(e.into())
            }
        }
    }

    /// Waits [`HOLD`] (cut short when the server drains), unless [`MAX_HELD`] refusals
    /// are held already.
    async fn hold(&self) {
        if self.held.fetch_add(1, Ordering::AcqRel) < MAX_HELD {
            metrics::counter!(m::REFUSALS_HELD).increment(1);
            tokio::select! {
                () = tokio::time::sleep(HOLD) => {}
                () = self.stopping.cancelled() => {}
            }
        }
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    /// Ends `s` when the server drains, so connections can close.
    fn until_drain<S>(&self, s: S) -> BoxStream<'static, S::Item>
    where
        S: Stream + Send + 'static,
    {
        Box::pin(s.take_until(self.stopping.clone().cancelled_owned()))
    }

    /// Checks the caller's credentials only (no admission): for a face that refuses a
    /// request without them before reading it.
    pub fn authenticate(&self, who: Who<'_>) -> R<()> {
        authenticate(&self.kernel, who).map(|_| ())
    }

    /// Whether Solo is up (no credentials needed, and no admission: a probe must not be
    /// shed); details for a caller whose credentials check out.
    pub fn health(&self, who: Who<'_>) -> Health {
        let caller = authenticate(&self.kernel, who).ok();
        let mut h = self.kernel.health(caller.as_ref());
        if self.stopping.is_cancelled() {
            h.status = "stopping".into();
        }
        h
    }

    pub async fn deploy(&self, who: Who<'_>, req: DeployRequest) -> R<Deployed> {
        let a = self.admit(who).await?;
        Ok(self.kernel.deploy(&a.caller, req).await?)
    }

    pub async fn status(&self, who: Who<'_>, id: &ServiceId) -> R<ServiceStatus> {
        let a = self.admit(who).await?;
        Ok(self.kernel.status(&a.caller, id)?)
    }

    pub async fn list(&self, who: Who<'_>, filter: &ListFilter) -> R<ServiceList> {
        let a = self.admit(who).await?;
        Ok(self.kernel.list(&a.caller, filter)?)
    }

    /// Calls a service; the reply is the JSON the service wrote.
    pub async fn call(
        &self,
        who: Who<'_>,
        id: &ServiceId,
        request: &str,
        timeout: Option<Duration>,
    ) -> R<String> {
        let a = self.admit(who).await?;
        Ok(self.kernel.call(&a.caller, id, request, timeout).await?)
    }

    pub async fn cast(&self, who: Who<'_>, id: &ServiceId, message: &str) -> R<Accepted> {
        let a = self.admit(who).await?;
        self.kernel.cast(&a.caller, id, message)?;
        Ok(Accepted {
            service_id: id.clone(),
            accepted: true,
        })
    }

    pub async fn swap(&self, who: Who<'_>, req: SwapRequest) -> R<Swapped> {
        let a = self.admit(who).await?;
        Ok(self.kernel.hot_swap(&a.caller, req).await?)
    }

    pub async fn kill(&self, who: Who<'_>, id: &ServiceId, options: KillOptions) -> R<Killed> {
        let a = self.admit(who).await?;
        Ok(self.kernel.kill(&a.caller, id, options).await?)
    }

    /// Past log lines (`tail` 0: the default).
    pub async fn logs(&self, who: Who<'_>, id: &ServiceId, tail: usize) -> R<LogLines> {
        let a = self.admit(who).await?;
        let lines = self.kernel.logs(&a.caller, id, tail)?;
        Ok(LogLines { lines })
    }

    /// Past log lines, then every new one until the service goes away or the server
    /// drains; `after_seq` resumes a feed after the last line seen.
    pub async fn follow_logs(
        &self,
        who: Who<'_>,
        id: &ServiceId,
        tail: usize,
        after_seq: u64,
    ) -> R<BoxStream<'static, LogLine>> {
        let a = self.admit(who).await?;
        let (backlog, live) = self.kernel.follow_logs(&a.caller, id, tail, after_seq)?;
        Ok(self.until_drain(futures::stream::iter(backlog).chain(live)))
    }

    pub async fn events(&self, who: Who<'_>, query: EventQuery) -> R<EventPage> {
        let a = self.admit(who).await?;
        Ok(self.kernel.events(&a.caller, query)?)
    }

    /// Events after `after_id`, then live ones, until the server drains; with
    /// `include_logs` and a service, its log lines too.
    pub async fn watch(
        &self,
        who: Who<'_>,
        req: WatchRequest,
    ) -> R<BoxStream<'static, R<Watched>>> {
        let a = self.admit(who).await?;
        let logs_of = req.filter.service.clone().filter(|_| req.include_logs);
        let events = self
            .kernel
            .watch(&a.caller, req.after_id, req.filter)?
            .map(|e| e.map(Watched::Event).map_err(ApiError::from));
        let Some(service) = logs_of else {
            return Ok(self.until_drain(events));
        };
        // Only the lines from now on: a watch replays events, not old log lines.
        let (_, live) = self.kernel.follow_logs(&a.caller, &service, 1, 0)?;
        let tenant = a.caller.tenant_id().clone();
        let logs = live.map(move |line| {
            Ok(Watched::Log {
                tenant: tenant.clone(),
                service: service.clone(),
                line,
            })
        });
        Ok(self.until_drain(futures::stream::select(events, logs)))
    }

    pub async fn verify_events(&self, who: Who<'_>) -> R<LogVerification> {
        let a = self.admit(who).await?;
        Ok(self.kernel.verify_events(&a.caller).await?)
    }

    pub async fn put_secret(&self, who: Who<'_>, name: &str, value: &[u8]) -> R<SecretStored> {
        let a = self.admit(who).await?;
        let event_id = self.kernel.put_secret(&a.caller, name, value).await?;
        Ok(SecretStored {
            name: name.to_string(),
            event_id,
        })
    }

    pub async fn get_secret(&self, who: Who<'_>, name: &str) -> R<Secret> {
        let a = self.admit(who).await?;
        let v = self.kernel.get_secret(&a.caller, name).await?;
        Ok(Secret {
            name: name.to_string(),
            value: SecretBytes::new(v.expose().to_vec()),
        })
    }

    pub async fn list_secrets(&self, who: Who<'_>) -> R<SecretNames> {
        let a = self.admit(who).await?;
        let names = self.kernel.list_secrets(&a.caller)?;
        Ok(SecretNames { names })
    }

    pub async fn delete_secret(&self, who: Who<'_>, name: &str) -> R<SecretDeleted> {
        let a = self.admit(who).await?;
        let existed = self.kernel.delete_secret(&a.caller, name).await?;
        Ok(SecretDeleted {
            name: name.to_string(),
            existed,
        })
    }

    pub async fn rotate_secrets(&self, who: Who<'_>) -> R<Rotated> {
        let a = self.admit(who).await?;
        let n = self.kernel.rotate_secrets(&a.caller).await?;
        Ok(Rotated { rotated: n as u64 })
    }

    pub async fn bind_secret(
        &self,
        who: Who<'_>,
        name: &str,
        hosts: &[String],
        unbind: bool,
    ) -> R<SecretHosts> {
        let a = self.admit(who).await?;
        Ok(self
            .kernel
            .bind_secret(&a.caller, name, hosts, unbind)
            .await?)
    }

    /// Adds (`allow`) or removes a tenant's egress rules (admin only).
    pub async fn change_egress(
        &self,
        who: Who<'_>,
        tenant: &str,
        rules: &[String],
        allow: bool,
    ) -> R<EgressRules> {
        let a = self.admit(who).await?;
        let tenant =
            TenantId::new(tenant).map_err(|e| Failure::invalid("invalid_tenant", e.to_string()))?;
        Ok(self
            .kernel
            .change_egress(&a.caller, &tenant, rules, allow)
            .await?)
    }

    pub async fn egress_rules(&self, who: Who<'_>, tenant: Option<&str>) -> R<EgressList> {
        let a = self.admit(who).await?;
        let tenant = tenant
            .map(TenantId::new)
            .transpose()
            .map_err(|e| Failure::invalid("invalid_tenant", e.to_string()))?;
        Ok(EgressList {
            tenants: self.kernel.egress_rules(&a.caller, tenant.as_ref())?,
        })
    }

    pub async fn grant(&self, who: Who<'_>, req: GrantRequest) -> R<Granted> {
        let a = self.admit(who).await?;
        Ok(self.kernel.grant_capability(&a.caller, req).await?)
    }

    pub async fn attenuate(&self, who: Who<'_>, token: &str, n: &Narrowing) -> R<Granted> {
        let a = self.admit(who).await?;
        Ok(self
            .kernel
            .attenuate_capability(&a.caller, token, n)
            .await?)
    }

    pub async fn verify(
        &self,
        who: Who<'_>,
        token: &str,
        resource: &Resource,
        permission: Permission,
    ) -> R<Verification> {
        let a = self.admit(who).await?;
        let r = self
            .kernel
            .verify_capability(&a.caller, token, resource, permission)
            .await;
        Ok(Verification::from(r))
    }

    pub async fn revoke(&self, who: Who<'_>, token_or_hash: &str) -> R<Revoked> {
        let a = self.admit(who).await?;
        let n = self
            .kernel
            .revoke_capability(&a.caller, token_or_hash)
            .await?;
        Ok(Revoked { revoked: n as u64 })
    }

    pub async fn list_capabilities(&self, who: Who<'_>) -> R<CapList> {
        let a = self.admit(who).await?;
        let capabilities = self.kernel.list_capabilities(&a.caller)?;
        Ok(CapList { capabilities })
    }

    pub async fn register(&self, who: Who<'_>, req: RegisterRequest) -> R<Registered> {
        let a = self.admit(who).await?;
        Ok(self.kernel.register_service(&a.caller, req).await?)
    }

    /// Removes one of the caller's registrations by handle; idempotent.
    pub async fn deregister(&self, who: Who<'_>, handle: &str) -> R<Deregistered> {
        let a = self.admit(who).await?;
        let deregistered = self.kernel.deregister_service(&a.caller, handle).await?;
        Ok(Deregistered { deregistered })
    }

    /// The caller's live registrations under `name` whose metadata has every pair of
    /// `filters`.
    pub async fn discover(
        &self,
        who: Who<'_>,
        name: &str,
        filters: &BTreeMap<String, String>,
    ) -> R<Registrations> {
        let a = self.admit(who).await?;
        Ok(self.kernel.discover(&a.caller, name, filters)?.into())
    }

    /// The caller's unexpired registrations (under `name` when given).
    pub async fn registrations(&self, who: Who<'_>, name: Option<&str>) -> R<Registrations> {
        let a = self.admit(who).await?;
        Ok(self.kernel.registrations(&a.caller, name)?.into())
    }

    /// Who the caller is, with its tenant's quotas.
    pub async fn whoami(&self, who: Who<'_>) -> R<Identity> {
        let a = self.admit(who).await?;
        Ok(self.kernel.whoami(&a.caller))
    }

    /// The services offered as tools that the caller may call.
    pub async fn service_tools(&self, who: Who<'_>) -> R<ServiceTools> {
        let a = self.admit(who).await?;
        let tools = self.kernel.service_tools(&a.caller);
        Ok(ServiceTools { tools })
    }

    pub async fn tree(&self, who: Who<'_>) -> R<TreeNode> {
        let a = self.admit(who).await?;
        Ok(self.kernel.tree(&a.caller)?)
    }

    /// Prometheus text (admin only).
    pub async fn metrics(&self, who: Who<'_>) -> R<Metrics> {
        let a = self.admit(who).await?;
        self.kernel.require_admin(&a.caller, "metrics")?;
        Ok(Metrics {
            text: crate::metrics::render(),
        })
    }

    pub async fn set_config(&self, who: Who<'_>, key: &str, value: &str) -> R<ConfigChange> {
        let a = self.admit(who).await?;
        Ok(self.kernel.set_config(&a.caller, key, value).await?)
    }

    pub async fn get_config(&self, who: Who<'_>) -> R<RuntimeConfig> {
        let a = self.admit(who).await?;
        Ok(self.kernel.runtime_config(&a.caller)?)
    }

    /// Starts a graceful shutdown (admin only; `None`: the default grace period).
    pub async fn shutdown(&self, who: Who<'_>, grace: Option<Duration>) -> R<ShutdownStarted> {
        let a = self.admit(who).await?;
        let grace = self.kernel.request_shutdown(&a.caller, grace)?;
        Ok(ShutdownStarted {
            status: "ok".into(),
            message: "Shutdown initiated".into(),
            grace_period_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Shared by the faces.
pub(crate) type SharedOps = Arc<Ops>;
