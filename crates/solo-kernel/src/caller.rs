//! Who is asking: the identity every kernel function takes first.

use serde_json::json;
use solo_caps::{Caps, DenyReason};
use solo_store::Store;
use solo_types::{
    NewEvent, Permission, Permissions, Resource, ServiceId, TenantId, kinds, metric_names as m,
};

use crate::error::KernelError;

/// What a bearer capability token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenScope {
    /// SHA-256 of the token, for audit.
    pub hash: String,
    pub resource: Resource,
    pub permissions: Permissions,
    /// UTC ns.
    pub expires_at: i64,
}

/// What kind of principal a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An agent with its own certificate: everything inside its tenant.
    Tenant,
    /// An operator (certificate with O = solo-admin), acting for `tenant`.
    Admin,
    /// A service calling through the host API.
    Service(ServiceId),
    /// A holder of a capability token (no certificate), limited to its scope.
    Token(TokenScope),
}

/// The authenticated identity of a request. Built by the gateway from a verified
/// certificate (or by the kernel for host calls), never from a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    tenant: TenantId,
    role: Role,
    /// A service deployed (or last swapped in) by a token acts with no more than that
    /// token's scope.
    limit: Option<TokenScope>,
}

impl Caller {
    /// A tenant acting for itself.
    pub fn tenant(tenant: TenantId) -> Self {
        Self {
            tenant,
            role: Role::Tenant,
            limit: None,
        }
    }

    /// An admin acting for `tenant`.
    pub fn admin(tenant: TenantId) -> Self {
        Self {
            tenant,
            role: Role::Admin,
            limit: None,
        }
    }

    /// A service of `tenant` calling through the host API.
    pub fn service(tenant: TenantId, service: ServiceId) -> Self {
        Self {
            tenant,
            role: Role::Service(service),
            limit: None,
        }
    }

    /// The holder of a verified token of `tenant`.
    pub fn token(tenant: TenantId, scope: TokenScope) -> Self {
        Self {
            tenant,
            role: Role::Token(scope),
            limit: None,
        }
    }

    /// The same caller, acting with no more than `scope` (the authority of the token
    /// that deployed a service).
    pub fn limited(mut self, scope: Option<TokenScope>) -> Self {
        self.limit = scope;
        self
    }

    /// The token scope this caller acts within: a token holder's own, or the one a
    /// service was deployed with.
    pub fn scope(&self) -> Option<&TokenScope> {
        match &self.role {
            Role::Token(s) => Some(s),
            _ => self.limit.as_ref(),
        }
    }

    /// Checks that the caller may use `permission` on `resource` of its tenant. A tenant,
    /// an admin and a service act freely inside the tenant; a token holder only within
    /// its token's scope.
    pub fn require(&self, resource: &Resource, permission: Permission) -> Result<(), KernelError> {
        let Some(scope) = self.scope() else {
            return Ok(());
        };
        if scope.resource.covers(resource) && scope.permissions.contains(permission) {
            return Ok(());
        }
        let who = match &self.role {
            Role::Token(_) => "the capability token".to_string(),
            Role::Service(s) => {
                format!("service {s} runs with the authority of the token that deployed it, which")
            }
            _ => "the caller".to_string(),
        };
        Err(KernelError::PermissionDenied(format!(
            "{who} allows {} on {}, not {permission} on {resource}",
            scope.permissions, scope.resource
        )))
    }

    /// Like [`Caller::require`], and a token's refusal becomes a `capability_denied`
    /// event in its tenant's log (queued before the refusal returns; nobody waits for
    /// the disk; sampled under a flood as every denial is), naming the token's hash, the
    /// reason, what was asked and what the token allows.
    pub(crate) fn require_audited(
        &self,
        store: &dyn Store,
        caps: &Caps,
        resource: &Resource,
        permission: Permission,
    ) -> Result<(), KernelError> {
        let refused = self.require(resource, permission);
        if let (Err(_), Some(scope)) = (&refused, self.scope()) {
            let reason = if scope.resource.covers(resource) {
                DenyReason::PermissionDenied
            } else {
                DenyReason::ResourceMismatch
            };
            metrics::counter!(m::CAPABILITY_DECISIONS, "decision" => reason.as_str()).increment(1);
            let Some(suppressed) = caps.sample_denial(Some(&self.tenant)) else {
                return refused;
            };
            let event = match resource {
                Resource::Service(s) => {
                    NewEvent::service(kinds::CAPABILITY_DENIED, &self.tenant, s)
                }
                _ => NewEvent::tenant(kinds::CAPABILITY_DENIED, &self.tenant),
            }
            .payload(json!({
                "reason": reason.as_str(),
                "hash": scope.hash,
                "resource": resource.to_string(),
                "permission": permission.to_string(),
                "allowed_resource": scope.resource.to_string(),
                "allowed_permissions": scope.permissions.to_string(),
                "suppressed_before": suppressed,
            }));
            let append = store.append(vec![event]);
            tokio::spawn(async move {
                if let Err(e) = append.await {
                    tracing::warn!(error = %e, "could not record a capability denial");
                }
            });
        }
        refused
    }

    /// Whether the caller holds the tenant itself (not a token or a service).
    pub fn is_owner(&self) -> bool {
        matches!(self.role, Role::Tenant | Role::Admin)
    }

    /// The tenant whose resources the caller acts on.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
