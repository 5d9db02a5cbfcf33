//! The capability model as pure functions: what a capability authorizes, and what an
//! attenuation of it may be. Property-tested: a child never authorizes what its parent
//! does not.

use solo_types::api::{DenyReason, Narrowing};
use solo_types::{Permission, Permissions, Resource, TenantId};

/// The authority a capability carries (without its token or bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant: TenantId,
    pub resource: Resource,
    pub permissions: Permissions,
    /// UTC ns after which it is void.
    pub expires_at: i64,
}

/// Whether `scope` allows `permission` on `resource` of `tenant` at `now` (revocation is
/// checked by the caller).
pub fn authorizes(
    scope: &Scope,
    tenant: Option<&TenantId>,
    resource: &Resource,
    permission: Permission,
    now: i64,
) -> Result<(), DenyReason> {
    if now >= scope.expires_at {
        return Err(DenyReason::Expired);
    }
    if tenant.is_some_and(|t| *t != scope.tenant) {
        return Err(DenyReason::TenantMismatch);
    }
    if !scope.resource.covers(resource) {
        return Err(DenyReason::ResourceMismatch);
    }
    if !scope.permissions.contains(permission) {
        return Err(DenyReason::PermissionDenied);
    }
    Ok(())
}

/// Why an attenuation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttenuateError {
    #[error(
        "an attenuation may not widen permissions: the parent has {parent}, the request asks for {asked}"
    )]
    WiderPermissions { parent: String, asked: String },
    #[error(
        "an attenuation may not widen the resource: the parent is for {parent}, the request asks for {asked}"
    )]
    WiderResource { parent: String, asked: String },
    #[error("an attenuation may not outlive its parent, which expires in {left_seconds} s")]
    OutlivesParent { left_seconds: i64 },
    #[error("a TTL must be positive (got {0})")]
    BadTtl(i64),
    #[error("an attenuation needs at least one permission")]
    NoPermissions,
}

/// The scope of a child of `parent` narrowed by `n`, at `now`.
pub fn attenuate(parent: &Scope, n: &Narrowing, now: i64) -> Result<Scope, AttenuateError> {
    let permissions = n.permissions.unwrap_or(parent.permissions);
    if permissions.is_empty() {
        return Err(AttenuateError::NoPermissions);
    }
    if !parent.permissions.covers(permissions) {
        return Err(AttenuateError::WiderPermissions {
            parent: parent.permissions.to_string(),
            asked: permissions.to_string(),
        });
    }
    let resource = n
        .resource
        .clone()
        .unwrap_or_else(|| parent.resource.clone());
    if !parent.resource.covers(&resource) {
        return Err(AttenuateError::WiderResource {
            parent: parent.resource.to_string(),
            asked: resource.to_string(),
        });
    }
    let expires_at = match n.ttl_seconds {
        None => parent.expires_at,
        Some(ttl) if ttl <= 0 => return Err(AttenuateError::BadTtl(ttl)),
        Some(ttl) => {
            let at = now.saturating_add(ttl.saturating_mul(1_000_000_000));
            if at > parent.expires_at {
                return Err(AttenuateError::OutlivesParent {
                    left_seconds: (parent.expires_at - now) / 1_000_000_000,
                });
            }
            at
        }
    };
    Ok(Scope {
        tenant: parent.tenant.clone(),
        resource,
        permissions,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use solo_types::ServiceId;

    fn resource() -> impl Strategy<Value = Resource> {
        prop_oneof![
            Just(Resource::Any),
            Just(Resource::Events),
            Just(Resource::Kernel),
            (0..3u8).prop_map(|i| Resource::Service(ServiceId::new(format!("s{i}")).unwrap())),
            (0..3u8).prop_map(|i| Resource::Secret(format!("k{i}"))),
        ]
    }

    fn permissions() -> impl Strategy<Value = Permissions> {
        (1u32..128).prop_map(|bits| {
            Permission::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, p)| p)
                .collect()
        })
    }

    fn permission() -> impl Strategy<Value = Permission> {
        (0..Permission::ALL.len()).prop_map(|i| Permission::ALL[i])
    }

    const NOW: i64 = 1_000_000_000_000;

    proptest! {
        /// Whatever an attenuation asks, a child it produces never authorizes a request
        /// its parent would refuse, at any time.
        #[test]
        fn a_child_never_authorizes_what_its_parent_does_not(
            p_res in resource(), p_perms in permissions(), p_ttl in 1i64..1000,
            c_res in proptest::option::of(resource()),
            c_perms in proptest::option::of(permissions()),
            c_ttl in proptest::option::of(-5i64..2000),
            q_res in resource(), q_perm in permission(), later in 0i64..3000,
        ) {
            let t = TenantId::new("t").unwrap();
            let parent = Scope {
                tenant: t.clone(),
                resource: p_res,
                permissions: p_perms,
                expires_at: NOW + p_ttl * 1_000_000_000,
            };
            let n = Narrowing { resource: c_res, permissions: c_perms, ttl_seconds: c_ttl };
            if let Ok(child) = attenuate(&parent, &n, NOW) {
                let at = NOW + later * 1_000_000_000;
                if authorizes(&child, Some(&t), &q_res, q_perm, at).is_ok() {
                    prop_assert!(authorizes(&parent, Some(&t), &q_res, q_perm, at).is_ok());
                }
                // And a grandchild of the child is bounded by the parent too.
                if let Ok(grand) = attenuate(&child, &Narrowing::default(), NOW) {
                    prop_assert!(parent.permissions.covers(grand.permissions));
                    prop_assert!(grand.expires_at <= parent.expires_at);
                }
            }
        }
    }

    #[test]
    fn widening_and_outliving_are_refused() {
        let t = TenantId::new("t").unwrap();
        let parent = Scope {
            tenant: t,
            resource: "service:a".parse().unwrap(),
            permissions: Permissions::parse(["call"]).unwrap(),
            expires_at: NOW + 60_000_000_000,
        };
        let wider = Narrowing {
            permissions: Some(Permissions::parse(["call", "kill"]).unwrap()),
            ..Narrowing::default()
        };
        assert!(matches!(
            attenuate(&parent, &wider, NOW),
            Err(AttenuateError::WiderPermissions { .. })
        ));
        let any = Narrowing {
            resource: Some(Resource::Any),
            ..Narrowing::default()
        };
        assert!(matches!(
            attenuate(&parent, &any, NOW),
            Err(AttenuateError::WiderResource { .. })
        ));
        let longer = Narrowing {
            ttl_seconds: Some(61),
            ..Narrowing::default()
        };
        assert!(matches!(
            attenuate(&parent, &longer, NOW),
            Err(AttenuateError::OutlivesParent { .. })
        ));
        for bad in [0, -1] {
            let n = Narrowing {
                ttl_seconds: Some(bad),
                ..Narrowing::default()
            };
            assert_eq!(
                attenuate(&parent, &n, NOW),
                Err(AttenuateError::BadTtl(bad))
            );
        }
        let ok = Narrowing {
            ttl_seconds: Some(30),
            ..Narrowing::default()
        };
        assert_eq!(
            attenuate(&parent, &ok, NOW).unwrap().expires_at,
            NOW + 30_000_000_000
        );
    }
}
