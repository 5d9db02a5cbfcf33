//! Secrets and capabilities through the kernel: who may store, read and delete a secret,
//! grant, attenuate, verify and revoke a capability, and the events each step records
//! (names and hashes only, never values or tokens).

use serde_json::json;
use solo_caps::{CapInfo, CapsError, DenyReason, Narrowing};
use solo_types::{
    NewEvent, Permission, Permissions, Resource, ServiceId, TenantId, kinds, metric_names as m,
};
use solo_vault::{SecretValue, Vault, VaultError};

use crate::{Caller, Kernel, KernelError, KernelInner, TokenScope};

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl From<VaultError> for KernelError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::NotFound(_) => KernelError::NotFound(e.to_string()),
            VaultError::InvalidName(_) | VaultError::TooLarge { .. } => {
                KernelError::InvalidArgument(e.to_string())
            }
            VaultError::Integrity { .. } => KernelError::Internal(e.to_string()),
            VaultError::WrongMasterKey { .. } | VaultError::MasterKey(_) => {
                KernelError::FailedPrecondition(e.to_string())
            }
            VaultError::Store(s) => KernelError::Store(s),
        }
    }
}

impl From<CapsError> for KernelError {
    fn from(e: CapsError) -> Self {
        match e {
            CapsError::Invalid(_) | CapsError::Attenuate(_) => {
                KernelError::InvalidArgument(e.to_string())
            }
            // Another tenant's capability is reported like one that does not exist.
            CapsError::Denied(DenyReason::NotFound | DenyReason::TenantMismatch) => {
                KernelError::NotFound("capability not found".into())
            }
            CapsError::Denied(r) => KernelError::PermissionDenied(format!("capability {r}")),
            CapsError::Store(s) => KernelError::Store(s),
            CapsError::Corrupt(_) => KernelError::Internal(e.to_string()),
        }
    }
}

/// A secret event, naming the secret and never its value.
fn secret_event(kind: &str, tenant: &TenantId, name: &str, by: &str) -> NewEvent {
    NewEvent::tenant(kind, tenant).payload(json!({ "name": name, "by": by }))
}

fn who(caller: &Caller) -> String {
    match caller.role() {
        crate::Role::Tenant => "tenant".into(),
        crate::Role::Admin => "admin".into(),
        crate::Role::Service(s) => format!("service:{s}"),
        crate::Role::Token(t) => format!("token:{}", &t.hash[..16.min(t.hash.len())]),
    }
}

impl KernelInner {
    pub(crate) fn vault(&self) -> Result<&Vault, KernelError> {
        self.vault
            .as_deref()
            .ok_or_else(|| KernelError::Unavailable("the vault is not configured".into()))
    }

    /// A secret for a service's host call: only names its deploy spec lists. The access
    /// (or its denial) is recorded durably before the answer.
    pub(crate) async fn secret_for_service(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
        allowed: &[String],
        name: &str,
    ) -> Result<SecretValue, KernelError> {
        let by = format!("service:{service}");
        if !allowed.iter().any(|s| s == name) {
            let e = NewEvent::service(kinds::SECRET_ACCESS_DENIED, tenant, service)
                .payload(json!({ "name": name, "by": by, "reason": "not_listed" }));
            self.store.append(vec![e]).await?;
            metrics::counter!(m::SECRET_ACCESSES, "outcome" => "denied").increment(1);
            return Err(KernelError::PermissionDenied(format!(
                "secret {name} is not listed in the service's deploy spec"
            )));
        }
        match self.vault()?.get(tenant, name) {
            Ok(v) => {
                let e = NewEvent::service(kinds::SECRET_ACCESSED, tenant, service)
                    .payload(json!({ "name": name, "by": by }));
                self.store.append(vec![e]).await?;
                metrics::counter!(m::SECRET_ACCESSES, "outcome" => "ok").increment(1);
                Ok(v)
            }
            Err(err) => {
                let e = NewEvent::service(kinds::SECRET_ACCESS_DENIED, tenant, service)
                    .payload(json!({ "name": name, "by": by, "reason": err.code().as_str() }));
                self.store.append(vec![e]).await?;
                metrics::counter!(m::SECRET_ACCESSES, "outcome" => "denied").increment(1);
                Err(err.into())
            }
        }
    }
}

impl Kernel {
    /// Stores (or replaces) a secret of the caller's tenant.
    pub async fn put_secret(
        &self,
        caller: &Caller,
        name: &str,
        value: &[u8],
    ) -> Result<u64, KernelError> {
        caller.require(&Resource::Secret(name.to_string()), Permission::Write)?;
        let tenant = caller.tenant_id();
        let ids = self
            .inner
            .vault()?
            .put(
                tenant,
                name,
                value,
                vec![secret_event(
                    kinds::SECRET_STORED,
                    tenant,
                    name,
                    &who(caller),
                )],
            )
            .await?;
        Ok(ids.first().copied().unwrap_or(0))
    }

    /// Reads a secret of the caller's tenant.
    pub async fn get_secret(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<SecretValue, KernelError> {
        let tenant = caller.tenant_id();
        if let Err(e) = caller.require(&Resource::Secret(name.to_string()), Permission::Read) {
            let ev = NewEvent::tenant(kinds::SECRET_ACCESS_DENIED, tenant)
                .payload(json!({ "name": name, "by": who(caller), "reason": "permission_denied" }));
            self.inner.store.append(vec![ev]).await?;
            return Err(e);
        }
        match self.inner.vault()?.get(tenant, name) {
            Ok(v) => {
                self.inner
                    .store
                    .append(vec![secret_event(
                        kinds::SECRET_ACCESSED,
                        tenant,
                        name,
                        &who(caller),
                    )])
                    .await?;
                metrics::counter!(m::SECRET_ACCESSES, "outcome" => "ok").increment(1);
                Ok(v)
            }
            Err(err) => {
                let ev = NewEvent::tenant(kinds::SECRET_ACCESS_DENIED, tenant).payload(
                    json!({ "name": name, "by": who(caller), "reason": err.code().as_str() }),
                );
                self.inner.store.append(vec![ev]).await?;
                Err(err.into())
            }
        }
    }

    /// The names of the caller's tenant's secrets, sorted.
    pub fn list_secrets(&self, caller: &Caller) -> Result<Vec<String>, KernelError> {
        caller.require(&Resource::Any, Permission::Read)?;
        Ok(self.inner.vault()?.list(caller.tenant_id())?)
    }

    /// Deletes a secret (idempotent); returns whether it existed.
    pub async fn delete_secret(&self, caller: &Caller, name: &str) -> Result<bool, KernelError> {
        caller.require(&Resource::Secret(name.to_string()), Permission::Write)?;
        let tenant = caller.tenant_id();
        Ok(self
            .inner
            .vault()?
            .delete(
                tenant,
                name,
                vec![secret_event(
                    kinds::SECRET_DELETED,
                    tenant,
                    name,
                    &who(caller),
                )],
            )
            .await?)
    }

    /// Re-encrypts every secret under a new key id (admin only).
    pub async fn rotate_secrets(&self, caller: &Caller) -> Result<usize, KernelError> {
        if !caller.is_admin() {
            return Err(KernelError::PermissionDenied(
                "rotating keys is for admins".into(),
            ));
        }
        let vault = self.inner.vault()?;
        let n = vault.rotate().await?;
        self.inner
            .store
            .append(vec![
                NewEvent::system(kinds::SECRETS_ROTATED, "vault")
                    .payload(json!({ "secrets": n, "key_id": vault.key_id() })),
            ])
            .await?;
        Ok(n)
    }

    /// Grants a capability on the caller's tenant. Only the tenant itself (or an admin
    /// for it) grants; a token holder narrows its own with [`Kernel::attenuate_capability`].
    pub async fn grant_capability(
        &self,
        caller: &Caller,
        resource: Resource,
        permissions: Permissions,
        ttl_seconds: i64,
    ) -> Result<solo_caps::Granted, KernelError> {
        if !caller.is_owner() {
            return Err(KernelError::PermissionDenied(
                "only the tenant itself grants capabilities; attenuate yours instead".into(),
            ));
        }
        Ok(self
            .inner
            .caps
            .grant(caller.tenant_id(), resource, permissions, ttl_seconds)
            .await?)
    }

    /// Mints a narrower child of `token`, which must belong to the caller's tenant.
    pub async fn attenuate_capability(
        &self,
        caller: &Caller,
        token: &str,
        narrowing: &Narrowing,
    ) -> Result<solo_caps::Granted, KernelError> {
        Ok(self
            .inner
            .caps
            .attenuate(Some(caller.tenant_id()), token, narrowing)
            .await?)
    }

    /// Revokes a capability of the caller's tenant (by token or hash) and all its
    /// descendants; idempotent. Returns how many were revoked.
    pub async fn revoke_capability(
        &self,
        caller: &Caller,
        token_or_hash: &str,
    ) -> Result<usize, KernelError> {
        if !caller.is_owner() {
            return Err(KernelError::PermissionDenied(
                "only the tenant itself revokes capabilities".into(),
            ));
        }
        Ok(self
            .inner
            .caps
            .revoke(caller.tenant_id(), token_or_hash)
            .await?)
    }

    /// Checks `token` against a resource and permission of the caller's tenant, recording
    /// a denial.
    pub async fn verify_capability(
        &self,
        caller: &Caller,
        token: &str,
        resource: &Resource,
        permission: Permission,
    ) -> Result<CapInfo, DenyReason> {
        let tenant = caller.tenant_id();
        let r = self
            .inner
            .caps
            .verify(token, Some(tenant), resource, permission);
        if let Err(reason) = r {
            self.inner
                .caps
                .record_denial(tenant, token, resource, permission, reason)
                .await;
        }
        r
    }

    /// The caller's tenant's capabilities (hashes and metadata).
    pub fn list_capabilities(&self, caller: &Caller) -> Result<Vec<CapInfo>, KernelError> {
        if !caller.is_owner() {
            return Err(KernelError::PermissionDenied(
                "only the tenant itself lists capabilities".into(),
            ));
        }
        Ok(self.inner.caps.list(caller.tenant_id()))
    }

    /// The caller a bearer token stands for: its tenant, limited to its scope.
    pub fn authenticate_token(&self, token: &str) -> Result<Caller, DenyReason> {
        self.inner.caps.authenticate(token).map(token_caller)
    }
}

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
