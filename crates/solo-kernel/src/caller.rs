//! Who is asking: the identity every kernel function takes first.

use solo_types::{ServiceId, TenantId};

/// What kind of principal a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An agent with its own certificate: everything inside its tenant.
    Tenant,
    /// An operator (certificate with O = solo-admin), acting for `tenant`.
    Admin,
    /// A service calling through the host API.
    Service(ServiceId),
}

/// The authenticated identity of a request. Built by the gateway from a verified
/// certificate (or by the kernel for host calls), never from a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    tenant: TenantId,
    role: Role,
}

impl Caller {
    /// A tenant acting for itself.
    pub fn tenant(tenant: TenantId) -> Self {
        Self {
            tenant,
            role: Role::Tenant,
        }
    }

    /// An admin acting for `tenant`.
    pub fn admin(tenant: TenantId) -> Self {
        Self {
            tenant,
            role: Role::Admin,
        }
    }

    /// A service of `tenant` calling through the host API.
    pub fn service(tenant: TenantId, service: ServiceId) -> Self {
        Self {
            tenant,
            role: Role::Service(service),
        }
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
