//! The host API as the kernel implements it for one service: every call is checked
//! against the service's tenant and deploy spec.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use solo_sandbox::{
    GuestCaller, GuestIdentity, HostApi, HostError, HttpRequest, HttpResponse, HttpSlot, Level,
};
use solo_store::WriteBatch;
use solo_types::{NewEvent, Permission, Resource, ServiceId, TenantId, kinds};

use crate::caller::{Caller, TokenScope};
use crate::calls;
use crate::core::Core;
use crate::entry::ServiceEntry;
use crate::error::KernelError;
use crate::records::{SERVICE_KV, kv_key, kv_prefix};

/// The most keys `kv-list` returns.
const MAX_LIST: usize = 10_000;
/// The largest custom event payload.
const MAX_EMIT_BYTES: usize = 64 << 10;

pub(crate) struct KernelHost {
    kernel: Weak<Core>,
    entry: Arc<ServiceEntry>,
    /// The scope of the token that deployed this instance's code, if a token did.
    authority: Option<TokenScope>,
}

impl KernelHost {
    pub(crate) fn new(
        kernel: Weak<Core>,
        entry: Arc<ServiceEntry>,
        authority: Option<TokenScope>,
    ) -> Self {
        Self {
            kernel,
            entry,
            authority,
        }
    }

    /// Who this instance acts as: its service, within the scope of the token that
    /// deployed its code while that token may still act (not revoked, not expired).
    fn acting(&self, k: &Core) -> Result<Caller, HostError> {
        if let Some(scope) = &self.authority
            && let Err(reason) = k.caps.caps().check_hash(&scope.hash)
        {
            return Err(HostError::new(
                "permission_denied",
                format!(
                    "service {} acts with the authority of the token that deployed it, \
                     which is {reason}; deploy or swap it again to renew that authority",
                    self.entry.id
                ),
            ));
        }
        Ok(
            Caller::service(self.entry.tenant.clone(), self.entry.id.clone())
                .limited(self.authority.clone()),
        )
    }

    fn kernel(&self) -> Result<Arc<Core>, HostError> {
        self.kernel
            .upgrade()
            .ok_or_else(|| HostError::new("unavailable", "solo is shutting down"))
    }

    fn check_key(&self, k: &Core, key: &str) -> Result<(), HostError> {
        if key.is_empty() || key.len() > k.config.limits.max_kv_key_bytes {
            return Err(HostError::new(
                "invalid_argument",
                format!(
                    "a key must be 1 to {} bytes",
                    k.config.limits.max_kv_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks `key`, lets `write` fill one batch under the service's own key for it, and
    /// resolves once that batch is durable.
    fn kv_write(
        &self,
        key: &str,
        write: impl FnOnce(&Core, &mut WriteBatch, Vec<u8>) -> Result<(), HostError>,
    ) -> BoxFuture<'static, Result<(), HostError>> {
        let k = match self.kernel() {
            Ok(k) => k,
            Err(e) => return ready(Err(e)),
        };
        if let Err(e) = self.check_key(&k, key) {
            return ready(Err(e));
        }
        let mut batch = WriteBatch::new();
        let full_key = kv_key(&self.entry.tenant, &self.entry.id, key);
        if let Err(e) = write(&k, &mut batch, full_key) {
            return ready(Err(e));
        }
        let fut = k.store.commit(batch);
        Box::pin(async move { fut.await.map(|_| ()).map_err(|e| store_error(&e)) })
    }
}

/// How a kernel error looks to a guest.
pub(crate) fn to_host(e: &KernelError) -> HostError {
    HostError::new(e.reason(), e.to_string())
}

/// How a store failure looks to a guest.
fn store_error(e: &solo_store::StoreError) -> HostError {
    HostError::new(e.code().as_str(), e.to_string())
}

fn ready<T: Send + 'static>(v: Result<T, HostError>) -> BoxFuture<'static, Result<T, HostError>> {
    Box::pin(async move { v })
}

impl HostApi for KernelHost {
    fn log(&self, level: Level, message: &str) {
        self.entry.logs.push(level, message);
    }

    fn emit(&self, kind: &str, payload: &str) -> Result<(), HostError> {
        let k = self.kernel()?;
        let valid = !kind.is_empty()
            && kind.len() <= 64
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !valid {
            return Err(HostError::new(
                "invalid_argument",
                "an event kind is 1-64 characters of [a-z0-9_.]",
            ));
        }
        if payload.len() > MAX_EMIT_BYTES {
            return Err(HostError::new(
                "invalid_argument",
                format!("an event payload is at most {MAX_EMIT_BYTES} bytes"),
            ));
        }
        let payload: serde_json::Value = serde_json::from_str(payload).map_err(|e| {
            HostError::new("invalid_argument", format!("the payload is not JSON: {e}"))
        })?;
        if !self.entry.emits.take() {
            return Err(HostError::new(
                "resource_exhausted",
                format!(
                    "more than {} events per second",
                    k.config.limits.max_emits_per_second
                ),
            ));
        }
        let event = NewEvent::service(
            format!("{}{kind}", kinds::CUSTOM_PREFIX),
            &self.entry.tenant,
            &self.entry.id,
        )
        .payload(payload);
        // Queued in order now; the guest does not wait for the disk.
        drop(k.store.append(vec![event]));
        Ok(())
    }

    fn kv_get(&self, key: &str) -> BoxFuture<'static, Result<Option<Vec<u8>>, HostError>> {
        let r = self.kernel().and_then(|k| {
            self.check_key(&k, key)?;
            k.store
                .get(SERVICE_KV, &kv_key(&self.entry.tenant, &self.entry.id, key))
                .map_err(|e| store_error(&e))
        });
        ready(r)
    }

    fn kv_put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'static, Result<(), HostError>> {
        self.kv_write(key, |k, batch, key| {
            let max = k.config.limits.max_kv_value_bytes;
            if value.len() > max {
                return Err(HostError::new(
                    "invalid_argument",
                    format!("a value is at most {max} bytes"),
                ));
            }
            batch
                .put(SERVICE_KV, key, value)
                .map(|_| ())
                .map_err(|e| store_error(&e))
        })
    }

    fn kv_delete(&self, key: &str) -> BoxFuture<'static, Result<(), HostError>> {
        self.kv_write(key, |_, batch, key| {
            batch
                .delete(SERVICE_KV, key)
                .map(|_| ())
                .map_err(|e| store_error(&e))
        })
    }

    fn kv_list(&self, prefix: &str) -> BoxFuture<'static, Result<Vec<String>, HostError>> {
        let r = self.kernel().and_then(|k| {
            let base = kv_prefix(&self.entry.tenant, &self.entry.id);
            let mut p = base.clone();
            p.extend_from_slice(prefix.as_bytes());
            let entries = k
                .store
                .snapshot()
                .and_then(|s| s.scan_prefix(SERVICE_KV, &p, MAX_LIST))
                .map_err(|e| store_error(&e))?;
            Ok(entries
                .into_iter()
                .map(|(key, _)| String::from_utf8_lossy(&key[base.len()..]).into_owned())
                .collect())
        });
        ready(r)
    }

    fn secret(&self, name: &str) -> BoxFuture<'static, Result<Vec<u8>, HostError>> {
        let k = match self.kernel() {
            Ok(k) => k,
            Err(e) => return ready(Err(e)),
        };
        let (entry, name) = (Arc::clone(&self.entry), name.to_string());
        let acting = self.acting(&k);
        Box::pin(async move {
            let acting = acting?;
            k.require(&acting, &Resource::Secret(name.clone()), Permission::Read)
                .map_err(|e| to_host(&e))?;
            k.secrets
                .for_service(&entry.tenant, &entry.id, &entry.spec.secrets, &name)
                .await
                .map(|v| v.expose().to_vec())
                .map_err(|e| to_host(&e))
        })
    }

    fn http_begin(&self) -> Result<HttpSlot, HostError> {
        let k = self.kernel()?;
        // A service whose deployer's authority lapsed sends nothing more.
        self.acting(&k)?;
        crate::egress::begin(&k, &self.entry)
    }

    fn http(
        &self,
        slot: HttpSlot,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, HostError>> {
        let k = match self.kernel() {
            Ok(k) => k,
            Err(e) => return ready(Err(e)),
        };
        let entry = Arc::clone(&self.entry);
        let acting = self.acting(&k);
        Box::pin(async move {
            let acting = acting?;
            crate::egress::send(&k, &entry, &acting, slot, request).await
        })
    }

    fn call(
        &self,
        target: &str,
        request: String,
        timeout: Duration,
        token: Option<String>,
    ) -> BoxFuture<'static, Result<String, HostError>> {
        let k = match self.kernel() {
            Ok(k) => k,
            Err(e) => return ready(Err(e)),
        };
        let (entry, target) = (Arc::clone(&self.entry), target.to_string());
        let acting = self.acting(&k);
        Box::pin(async move {
            let own = acting?;
            if let Some(go) = elsewhere(&k, &entry, &target, token.as_deref()) {
                return go(request, Some(timeout)).await;
            }
            let (caller, id) = resolve_target(&k, &entry, own, &target, token.as_deref()).await?;
            let from = from_service(&entry, &caller);
            calls::call(&k, &caller, from, &id, &request, Some(timeout))
                .await
                .map_err(|e| to_host(&e))
        })
    }

    fn cast(&self, target: &str, message: String, token: Option<String>) -> Result<(), HostError> {
        let k = self.kernel()?;
        let own = self.acting(&k)?;
        if let Some(go) = elsewhere(&k, &self.entry, target, token.as_deref()) {
            // A cast does not wait for its delivery to another node either; a refusal
            // there is logged here.
            let target = target.to_string();
            tokio::spawn(async move {
                if let Err(e) = go(message, None).await {
                    tracing::info!(%target, error = %e, "a cast to another node was refused");
                }
            });
            return Ok(());
        }
        let (caller, id) = match resolve_target_now(&k, &self.entry, own, target, token.as_deref())
        {
            Ok(r) => r,
            // A cast does not wait, so its denial is recorded just after the refusal.
            Err(Refused::Denied(d)) => {
                let error = d.error.clone();
                tokio::spawn(async move { d.record(&k).await });
                return Err(error);
            }
            Err(e) => return Err(e.into()),
        };
        let from = from_service(&self.entry, &caller);
        calls::cast(&k, &caller, from, &id, &message).map_err(|e| to_host(&e))
    }

    fn whoami(&self) -> GuestIdentity {
        GuestIdentity {
            tenant: self.entry.tenant.to_string(),
            service_id: self.entry.id.to_string(),
            version: self.entry.version(),
        }
    }

    fn caller(&self) -> Option<GuestCaller> {
        self.entry.current_caller.lock().clone()
    }

    fn verify(
        &self,
        token: &str,
        resource: &str,
        permission: &str,
    ) -> BoxFuture<'static, Result<(), String>> {
        let k = match self.kernel() {
            Ok(k) => k,
            Err(e) => return Box::pin(async move { Err(e.code) }),
        };
        let (Ok(resource), Ok(permission)) = (
            resource.parse::<Resource>(),
            permission.parse::<Permission>(),
        ) else {
            return Box::pin(async { Err("invalid_argument".to_string()) });
        };
        let tenant = &self.entry.tenant;
        match k
            .caps
            .caps()
            .verify_only(token, Some(tenant), &resource, permission)
        {
            Ok(()) => Box::pin(std::future::ready(Ok(()))),
            Err(reason) => {
                let (tenant, token) = (tenant.clone(), token.to_string());
                Box::pin(async move {
                    k.caps
                        .record_denial(&tenant, &token, &resource, permission, reason)
                        .await;
                    Err(reason.as_str().to_string())
                })
            }
        }
    }
}

/// Who a host call is from: for a cross-tenant call (made with another tenant's
/// token), this service of this tenant with the token's hash; otherwise the caller
/// itself says it.
fn from_service(entry: &ServiceEntry, caller: &Caller) -> Option<GuestCaller> {
    match caller.role() {
        crate::caller::Role::Token(scope) => Some(GuestCaller {
            kind: "service",
            tenant: entry.tenant.to_string(),
            service_id: Some(entry.id.to_string()),
            token_hash: Some(scope.hash.clone()),
        }),
        _ => None,
    }
}

/// Who a host call acts as, and on which service: `service` is in the caller's own
/// tenant; `tenant/service` of another tenant needs a capability token that tenant
/// granted for `call` on that service. A refusal is recorded durably first.
async fn resolve_target(
    k: &Core,
    entry: &ServiceEntry,
    own: Caller,
    target: &str,
    token: Option<&str>,
) -> Result<(Caller, ServiceId), HostError> {
    match resolve_target_now(k, entry, own, target, token) {
        Err(Refused::Denied(d)) => Err(d.record(k).await),
        other => other.map_err(HostError::from),
    }
}

/// Why a target was refused; a capability denial is recorded by the caller.
enum Refused {
    Plain(HostError),
    Denied(Box<Denial>),
}

struct Denial {
    /// The log the denial goes to: the granting tenant's; `None` (the system's) for a
    /// token Solo does not know.
    log: Option<TenantId>,
    token: String,
    resource: Resource,
    reason: solo_caps::DenyReason,
    error: HostError,
}

impl Denial {
    /// Records the denial in its log; answers the error the guest gets.
    async fn record(self, k: &Core) -> HostError {
        k.caps
            .caps()
            .record_denial(
                self.log.as_ref(),
                &self.token,
                &self.resource,
                Permission::Call,
                self.reason,
            )
            .await;
        self.error
    }
}

impl From<Refused> for HostError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Plain(e) => e,
            Refused::Denied(d) => d.error,
        }
    }
}

/// A call (or cast) to `tenant/service` of another tenant that this kernel does not
/// serve, with a token, when the kernel can reach where that tenant is served: the
/// call, to be made with its request and deadline (`None` for a cast). The token must be
/// that tenant's; the serving node verifies it (and records a refusal in the granting
/// tenant's log), as for any holder of it.
/// Without a token, or with no cluster to carry it, the call is resolved here (and
/// refused, or not found).
fn elsewhere(
    k: &Core,
    entry: &ServiceEntry,
    target: &str,
    token: Option<&str>,
) -> Option<impl FnOnce(String, Option<Duration>) -> HostReply + use<>> {
    let carry = Arc::clone(k.elsewhere.as_ref()?);
    let (tenant, service) = target.split_once('/')?;
    let tenant = TenantId::new(tenant).ok()?;
    if tenant == entry.tenant || k.serves(&tenant) {
        return None;
    }
    let service = ServiceId::new(service).ok()?;
    let token = token?.to_string();
    // The serving node calls the service of the token's tenant: a token of anyone else
    // (or one this node's view has not seen) is refused here, as a local call's is.
    if k.caps.caps().tenant_of(&token).as_ref() != Some(&tenant) {
        return None;
    }
    Some(move |request, timeout| {
        let call = crate::cluster::CallElsewhere {
            tenant,
            service,
            request,
            timeout,
            token,
        };
        Box::pin(async move {
            carry(call)
                .await
                .map_err(|f| HostError::new(f.reason, f.message))
        }) as HostReply
    })
}

/// A host call's answer, to come.
type HostReply = BoxFuture<'static, Result<String, HostError>>;

fn resolve_target_now(
    k: &Core,
    entry: &ServiceEntry,
    own: Caller,
    target: &str,
    token: Option<&str>,
) -> Result<(Caller, ServiceId), Refused> {
    let own = move || own;
    let invalid =
        |e: solo_types::IdError| Refused::Plain(HostError::new("invalid_argument", e.to_string()));
    let Some((tenant, service)) = target.split_once('/') else {
        // A service id of the tenant, else a name it registered for discovery.
        let id = match ServiceId::new(target) {
            Ok(id) if k.services.contains_key(&(entry.tenant.clone(), id.clone())) => id,
            other => match k.registry.resolve(&entry.tenant, target) {
                Some(id) => id,
                None => other.map_err(invalid)?,
            },
        };
        return Ok((own(), id));
    };
    let tenant = TenantId::new(tenant).map_err(invalid)?;
    let id = ServiceId::new(service).map_err(invalid)?;
    if tenant == entry.tenant {
        return Ok((own(), id));
    }
    let Some(token) = token else {
        return Err(Refused::Plain(HostError::new(
            "permission_denied",
            format!("calling {target} needs a capability token granted by tenant {tenant}"),
        )));
    };
    let resource = Resource::Service(id.clone());
    match k
        .caps
        .caps()
        .verify(token, Some(&tenant), &resource, Permission::Call)
    {
        Ok(info) => Ok((crate::capabilities::token_caller(info), id)),
        Err(reason) => {
            // Another tenant's token answers as an unknown one; the tenant that granted
            // it learns where it was presented.
            let log = k.caps.caps().granted_by(token);
            let recorded = match &log {
                Some(owner) if *owner != tenant => solo_caps::DenyReason::TenantMismatch,
                _ => reason,
            };
            Err(Refused::Denied(Box::new(Denial {
                error: HostError::new(
                    "permission_denied",
                    format!("the capability for {target} was refused: {reason}"),
                ),
                log,
                token: token.to_string(),
                resource: Resource::Service(id.clone()),
                reason: recorded,
            })))
        }
    }
}
