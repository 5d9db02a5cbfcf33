//! Access: capability tokens (secrets travel as plain fields).

use solo_types::api::{
    AttenuateBody, CapInfo, Failure, GrantRequest, Granted, Narrowing, Token, Verification,
    permission_named, permissions_named, resource_named,
};
use solo_types::{Permission, Permissions, Resource, TenantId};

use super::{bad_answer, nonzero};
use crate::v1 as pb;

impl From<&CapInfo> for pb::CapabilityInfo {
    fn from(c: &CapInfo) -> Self {
        Self {
            hash: c.hash.clone(),
            tenant: c.tenant.to_string(),
            resource: c.resource.to_string(),
            permissions: c
                .permissions
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            expires_at: c.expires_at,
            revoked: c.revoked,
            parent: c.parent.clone().unwrap_or_default(),
            created_at: c.created_at,
        }
    }
}

impl TryFrom<pb::CapabilityInfo> for CapInfo {
    type Error = Failure;

    fn try_from(c: pb::CapabilityInfo) -> Result<Self, Failure> {
        Ok(Self {
            hash: c.hash,
            tenant: TenantId::new(c.tenant).map_err(|e| bad_answer("tenant", e))?,
            resource: c.resource.parse().map_err(|e| bad_answer("resource", e))?,
            permissions: Permissions::parse(c.permissions.iter().map(String::as_str))
                .map_err(|e| bad_answer("permissions", e))?,
            expires_at: c.expires_at,
            revoked: c.revoked,
            parent: nonzero(c.parent),
            created_at: c.created_at,
        })
    }
}

fn capability(c: Option<pb::CapabilityInfo>) -> Result<Option<CapInfo>, Failure> {
    c.map(CapInfo::try_from).transpose()
}

impl TryFrom<pb::GrantCapabilityRequest> for GrantRequest {
    type Error = Failure;

    fn try_from(r: pb::GrantCapabilityRequest) -> Result<Self, Failure> {
        Ok(Self {
            resource: resource_named(&r.resource)?,
            permissions: permissions_named(&r.permissions)?,
            ttl_seconds: nonzero(r.ttl_seconds),
        })
    }
}

impl From<&GrantRequest> for pb::GrantCapabilityRequest {
    fn from(r: &GrantRequest) -> Self {
        Self {
            resource: r.resource.to_string(),
            permissions: r
                .permissions
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            ttl_seconds: r.ttl_seconds.unwrap_or(0),
        }
    }
}

impl From<&Granted> for pb::GrantCapabilityResponse {
    fn from(g: &Granted) -> Self {
        Self {
            token: g.token.expose().to_string(),
            capability: Some(pb::CapabilityInfo::from(&g.info)),
            event_id: g.event_id,
        }
    }
}

impl TryFrom<pb::GrantCapabilityResponse> for Granted {
    type Error = Failure;

    fn try_from(g: pb::GrantCapabilityResponse) -> Result<Self, Failure> {
        Ok(Self {
            info: capability(g.capability)?.ok_or_else(|| bad_answer("grant", "no capability"))?,
            token: Token::new(g.token),
            event_id: g.event_id,
        })
    }
}

/// An attenuation from the wire: the parent token and the narrowing (empty fields keep
/// the parent's).
pub fn decode_attenuate(r: pb::AttenuateCapabilityRequest) -> Result<(String, Narrowing), Failure> {
    let body = AttenuateBody {
        token: r.token,
        resource: Some(r.resource),
        permissions: Some(r.permissions),
        ttl_seconds: Some(r.ttl_seconds),
    };
    let narrowing = body.narrowing()?;
    Ok((body.token, narrowing))
}

pub fn encode_attenuate(token: &str, n: &Narrowing) -> pb::AttenuateCapabilityRequest {
    pb::AttenuateCapabilityRequest {
        token: token.to_string(),
        resource: n
            .resource
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        permissions: n
            .permissions
            .map(|p| p.iter().map(|p| p.as_str().to_string()).collect())
            .unwrap_or_default(),
        ttl_seconds: n.ttl_seconds.unwrap_or(0),
    }
}

/// A token check from the wire: the token, the resource, the permission.
pub fn decode_verify(
    r: pb::VerifyCapabilityRequest,
) -> Result<(String, Resource, Permission), Failure> {
    Ok((
        r.token,
        resource_named(&r.resource)?,
        permission_named(&r.permission)?,
    ))
}

impl From<&Verification> for pb::VerifyCapabilityResponse {
    fn from(v: &Verification) -> Self {
        Self {
            valid: v.valid,
            reason: v.reason.clone().unwrap_or_default(),
            capability: v.capability.as_ref().map(pb::CapabilityInfo::from),
        }
    }
}

impl TryFrom<pb::VerifyCapabilityResponse> for Verification {
    type Error = Failure;

    fn try_from(v: pb::VerifyCapabilityResponse) -> Result<Self, Failure> {
        Ok(Self {
            valid: v.valid,
            reason: nonzero(v.reason),
            capability: capability(v.capability)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_and_narrowings_keep_what_is_empty() {
        let info = CapInfo {
            hash: "h".into(),
            tenant: TenantId::new("t").unwrap(),
            resource: Resource::Kernel,
            permissions: Permissions::parse(["deploy", "read"]).unwrap(),
            expires_at: 5,
            revoked: false,
            parent: None,
            created_at: 1,
        };
        let g = Granted {
            token: Token::new("solo_x".into()),
            info,
            event_id: 9,
        };
        assert_eq!(
            Granted::try_from(pb::GrantCapabilityResponse::from(&g)).unwrap(),
            g
        );
        let (token, n) = decode_attenuate(pb::AttenuateCapabilityRequest {
            token: "solo_x".into(),
            ..pb::AttenuateCapabilityRequest::default()
        })
        .unwrap();
        assert_eq!((token.as_str(), n), ("solo_x", Narrowing::default()));
        let e = decode_verify(pb::VerifyCapabilityRequest {
            token: "t".into(),
            resource: "events".into(),
            permission: "fly".into(),
        })
        .unwrap_err();
        assert_eq!(e.reason, "invalid_permission");
    }
}
