//! Capabilities through the kernel: who may grant, attenuate, revoke, verify and list a
//! tenant's capability tokens, and the caller a bearer token stands for.

use std::sync::Arc;

use solo_caps::{CapInfo, Caps, DenyReason, Granted, Narrowing};
use solo_store::Store;
use solo_types::api::GrantRequest;
use solo_types::clock::SharedClock;
use solo_types::{Permission, Resource, TenantId};

use crate::caller::{Caller, TokenScope};
use crate::error::KernelError;
use crate::error::Stage;

/// The lifetime of a granted token when the request leaves it out: one hour.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 3600;

/// The capability store, seen through the kernel's rules.
pub(crate) struct Capabilities {
    caps: Arc<Caps>,
}

/// The caller a verified capability stands for: its tenant, limited to its scope.
pub(crate) fn token_caller(info: CapInfo) -> Caller {
    Caller::token(
        info.tenant.clone(),
        TokenScope {
            hash: info.hash,
            resource: info.resource,
            permissions: info.permissions,
            expires_at: info.expires_at,
        },
    )
}

fn owner_only(caller: &Caller, what: &str) -> Result<(), KernelError> {
    if caller.is_owner() {
        Ok(())
    } else {
        Err(KernelError::PermissionDenied(format!(
            "only the tenant itself {what}"
        )))
    }
}

impl Capabilities {
    /// Loads every stored capability.
    pub(crate) fn load(store: Arc<dyn Store>, clock: SharedClock) -> Result<Self, KernelError> {
        let caps = Caps::load_with_clock(store, Arc::new(move || clock.now_ns()))
            .stage("load the capabilities")?;
        Ok(Self {
            caps: Arc::new(caps),
        })
    }

    /// The underlying store of capabilities (verification on the host call path).
    pub(crate) fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The same, shared with the subsystems that sample their denials through it.
    pub(crate) fn shared(&self) -> Arc<Caps> {
        Arc::clone(&self.caps)
    }

    pub(crate) async fn grant(
        &self,
        caller: &Caller,
        req: GrantRequest,
    ) -> Result<Granted, KernelError> {
        owner_only(caller, "grants capabilities; attenuate yours instead")?;
        let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL_SECONDS);
        self.caps
            .grant(caller.tenant_id(), req.resource, req.permissions, ttl)
            .await
            .stage("grant the capability")
    }

    /// Mints a narrower child of `token`, which must belong to the caller's tenant.
    pub(crate) async fn attenuate(
        &self,
        caller: &Caller,
        token: &str,
        narrowing: &Narrowing,
    ) -> Result<Granted, KernelError> {
        self.caps
            .attenuate(Some(caller.tenant_id()), token, narrowing)
            .await
            .stage("attenuate the capability")
    }

    /// Revokes a capability of the caller's tenant (by token or hash) and all its
    /// descendants; idempotent. Returns how many were revoked.
    pub(crate) async fn revoke(
        &self,
        caller: &Caller,
        token_or_hash: &str,
    ) -> Result<usize, KernelError> {
        owner_only(caller, "revokes capabilities")?;
        self.caps
            .revoke(caller.tenant_id(), token_or_hash)
            .await
            .stage("revoke the capability")
    }

    /// Checks `token` against a resource and permission of the caller's tenant,
    /// recording a denial.
    pub(crate) async fn verify(
        &self,
        caller: &Caller,
        token: &str,
        resource: &Resource,
        permission: Permission,
    ) -> Result<CapInfo, DenyReason> {
        let tenant = caller.tenant_id();
        let r = self.caps.verify(token, Some(tenant), resource, permission);
        if let Err(reason) = r {
            self.record_denial(tenant, token, resource, permission, reason)
                .await;
        }
        r
    }

    /// Records a verifier's denial: in its tenant's log, except an unknown token (or
    /// another tenant's, which answers the same), which has no place there and is an
    /// unknown-token attempt in the system's log.
    pub(crate) async fn record_denial(
        &self,
        verifier: &TenantId,
        token: &str,
        resource: &Resource,
        permission: Permission,
        reason: DenyReason,
    ) {
        let log = (reason != DenyReason::NotFound).then_some(verifier);
        self.caps
            .record_denial(log, token, resource, permission, reason)
            .await;
    }

    /// The caller's tenant's capabilities (hashes and metadata).
    pub(crate) fn list(&self, caller: &Caller) -> Result<Vec<CapInfo>, KernelError> {
        owner_only(caller, "lists capabilities")?;
        Ok(self.caps.list(caller.tenant_id()))
    }

    /// The caller a bearer token stands for. A refused token is recorded (in the
    /// background; nobody waits for the disk) in the log of the tenant that granted it
    /// (expired, revoked), or in the system's log when Solo does not know it, with
    /// `source`, where the request came from.
    pub(crate) fn authenticate(
        &self,
        token: &str,
        source: Option<&str>,
    ) -> Result<Caller, DenyReason> {
        let r = self.caps.authenticate(token);
        if let (Err(reason), Ok(rt)) = (&r, tokio::runtime::Handle::try_current()) {
            let caps = Arc::clone(&self.caps);
            let log = caps.granted_by(token);
            let (token, source, reason) = (token.to_string(), source.map(str::to_string), *reason);
            rt.spawn(async move {
                let detail = serde_json::json!({ "stage": "authenticate" });
                caps.record_refusal(log.as_ref(), &token, reason, source.as_deref(), detail)
                    .await;
            });
        }
        r.map(token_caller)
    }

    /// Deletes expired capabilities (the `capabilities` component).
    pub(crate) async fn purge(&self, now_ns: i64) {
        if let Err(e) = self.caps.purge_expired(now_ns).await {
            tracing::warn!(error = %e, "purging expired capabilities failed");
        }
    }
}
