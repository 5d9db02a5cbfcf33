//! Secrets: who may store, read and delete one, and the event each step records (the
//! secret's name, never its value), durable before the answer.

use std::sync::Arc;

use serde_json::json;
use solo_caps::Caps;
use solo_store::Store;
use solo_types::{NewEvent, Permission, Resource, ServiceId, TenantId, kinds, metric_names as m};
use solo_vault::{SecretValue, Vault};

use crate::caller::{Caller, Role};
use crate::error::KernelError;
use crate::error::Stage;

/// The vault, seen through the kernel's rules.
pub(crate) struct Secrets {
    vault: Option<Arc<Vault>>,
    store: Arc<dyn Store>,
    /// Where a token's refusals are sampled.
    caps: Arc<Caps>,
}

/// Who did it, as events name them (a token by the start of its hash).
fn who(caller: &Caller) -> String {
    match caller.role() {
        Role::Tenant => "tenant".into(),
        Role::Admin => "admin".into(),
        Role::Service(s) => format!("service:{s}"),
        Role::Token(t) => format!("token:{}", &t.hash[..16.min(t.hash.len())]),
    }
}

/// A secret event, naming the secret and never its value.
fn event(
    kind: &str,
    tenant: &TenantId,
    service: Option<&ServiceId>,
    name: &str,
    by: &str,
) -> NewEvent {
    match service {
        Some(s) => NewEvent::service(kind, tenant, s),
        None => NewEvent::tenant(kind, tenant),
    }
    .payload(json!({ "name": name, "by": by }))
}

fn denied(e: NewEvent, reason: &str) -> NewEvent {
    let mut payload = e.payload.clone();
    payload["reason"] = json!(reason);
    e.payload(payload)
}

impl Secrets {
    pub(crate) fn new(vault: Option<Arc<Vault>>, store: Arc<dyn Store>, caps: Arc<Caps>) -> Self {
        Self { vault, store, caps }
    }

    fn vault(&self) -> Result<&Vault, KernelError> {
        self.vault
            .as_deref()
            .ok_or_else(|| KernelError::Unavailable("the vault is not configured".into()))
    }

    async fn record(&self, e: NewEvent) -> Result<(), KernelError> {
        self.store
            .append(vec![e])
            .await
            .stage("record the secret access")
            .map(|_| ())
    }

    /// Stores (or replaces) a secret of the caller's tenant.
    pub(crate) async fn put(
        &self,
        caller: &Caller,
        name: &str,
        value: &[u8],
    ) -> Result<u64, KernelError> {
        caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Secret(name.to_string()),
            Permission::Write,
        )?;
        let tenant = caller.tenant_id();
        let e = event(kinds::SECRET_STORED, tenant, None, name, &who(caller));
        let ids = self
            .vault()?
            .put(tenant, name, value, vec![e])
            .await
            .stage("store the secret")?;
        Ok(ids.first().copied().unwrap_or(0))
    }

    /// Reads a secret of the caller's tenant; the read or its refusal is recorded first.
    pub(crate) async fn get(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<SecretValue, KernelError> {
        let tenant = caller.tenant_id();
        let base = event(kinds::SECRET_ACCESSED, tenant, None, name, &who(caller));
        if let Err(e) = caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Secret(name.to_string()),
            Permission::Read,
        ) {
            let mut d = denied(base, "permission_denied");
            d.kind = kinds::SECRET_ACCESS_DENIED.into();
            self.record(d).await?;
            return Err(e);
        }
        self.read(tenant, name, base).await
    }

    /// A secret for a service's host call: only names its deploy spec lists.
    pub(crate) async fn for_service(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
        allowed: &[String],
        name: &str,
    ) -> Result<SecretValue, KernelError> {
        let by = format!("service:{service}");
        let base = event(kinds::SECRET_ACCESSED, tenant, Some(service), name, &by);
        if !allowed.iter().any(|s| s == name) {
            let mut d = denied(base, "not_listed");
            d.kind = kinds::SECRET_ACCESS_DENIED.into();
            self.record(d).await?;
            metrics::counter!(m::SECRET_ACCESSES, "outcome" => "denied").increment(1);
            return Err(KernelError::PermissionDenied(format!(
                "secret {name} is not listed in the service's deploy spec"
            )));
        }
        self.read(tenant, name, base).await
    }

    /// Reads `name` and records `accessed` (or its denial, with the reason).
    async fn read(
        &self,
        tenant: &TenantId,
        name: &str,
        accessed: NewEvent,
    ) -> Result<SecretValue, KernelError> {
        match self.vault()?.get(tenant, name) {
            Ok(v) => {
                self.record(accessed).await?;
                metrics::counter!(m::SECRET_ACCESSES, "outcome" => "ok").increment(1);
                Ok(v)
            }
            Err(err) => {
                let mut d = denied(accessed, err.code().as_str());
                d.kind = kinds::SECRET_ACCESS_DENIED.into();
                self.record(d).await?;
                metrics::counter!(m::SECRET_ACCESSES, "outcome" => "denied").increment(1);
                Err::<SecretValue, _>(err).stage("read the secret")
            }
        }
    }

    /// The names of the caller's tenant's secrets, sorted.
    pub(crate) fn list(&self, caller: &Caller) -> Result<Vec<String>, KernelError> {
        caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Any,
            Permission::Read,
        )?;
        self.vault()?
            .list(caller.tenant_id())
            .stage("list the secrets")
    }

    /// Deletes a secret (idempotent); returns whether it existed.
    pub(crate) async fn delete(&self, caller: &Caller, name: &str) -> Result<bool, KernelError> {
        caller.require_audited(
            self.store.as_ref(),
            &self.caps,
            &Resource::Secret(name.to_string()),
            Permission::Write,
        )?;
        let tenant = caller.tenant_id();
        let e = event(kinds::SECRET_DELETED, tenant, None, name, &who(caller));
        self.vault()?
            .delete(tenant, name, vec![e])
            .await
            .stage("delete the secret")
    }

    /// Re-encrypts every secret under a new key id (admin only).
    pub(crate) async fn rotate(&self, caller: &Caller) -> Result<usize, KernelError> {
        if !caller.is_admin() {
            return Err(KernelError::PermissionDenied(
                "rotating keys is for admins".into(),
            ));
        }
        let vault = self.vault()?;
        let n = vault.rotate().await.stage("rotate the vault key")?;
        let e = NewEvent::system(kinds::SECRETS_ROTATED, "vault")
            .payload(json!({ "secrets": n, "key_id": vault.key_id() }));
        self.store
            .append(vec![e])
            .await
            .stage("record the key rotation")?;
        Ok(n)
    }

    /// Finishes a key rotation a crash cut short (the `vault` component, at start).
    pub(crate) async fn finish_rotation(&self) -> Result<(), String> {
        let Some(v) = &self.vault else { return Ok(()) };
        if v.rotation_pending().ok().flatten().is_none() {
            return Ok(());
        }
        match v.rotate().await {
            Ok(n) => {
                tracing::info!(secrets = n, "finished an interrupted key rotation");
                Ok(())
            }
            Err(e) => Err(format!("resume the key rotation: {e}")),
        }
    }
}
