//! Access: secrets and capability tokens.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Failure;
use crate::caps::{Permission, Permissions, Resource};
use crate::ids::TenantId;

/// A raw capability token. Shown once, to the grantee; never logged, and serialized only
/// as part of the [`Granted`] answer that hands it over.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The token text, to hand to the grantee.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(solo_…redacted)")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

/// A capability's public description (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapInfo {
    pub hash: String,
    pub tenant: TenantId,
    pub resource: Resource,
    pub permissions: Permissions,
    /// UTC ns.
    pub expires_at: i64,
    pub revoked: bool,
    pub parent: Option<String>,
    /// UTC ns.
    pub created_at: i64,
}

/// A newly minted capability: the token (to hand over once) and its description.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    pub token: Token,
    pub info: CapInfo,
    pub event_id: u64,
}

/// As JSON: `{"token", "capability", "event_id"}`; the one place a token is serialized.
#[derive(Serialize, Deserialize)]
struct GrantedJson {
    token: String,
    capability: CapInfo,
    event_id: u64,
}

impl Serialize for Granted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        GrantedJson {
            token: self.token.expose().to_string(),
            capability: self.info.clone(),
            event_id: self.event_id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Granted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let g = GrantedJson::deserialize(d)?;
        Ok(Self {
            token: Token::new(g.token),
            info: g.capability,
            event_id: g.event_id,
        })
    }
}

/// Why a capability does not authorize a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    NotFound,
    Expired,
    Revoked,
    ResourceMismatch,
    PermissionDenied,
    TenantMismatch,
}

impl DenyReason {
    pub const ALL: [DenyReason; 6] = [
        DenyReason::NotFound,
        DenyReason::Expired,
        DenyReason::Revoked,
        DenyReason::ResourceMismatch,
        DenyReason::PermissionDenied,
        DenyReason::TenantMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotFound => "not_found",
            DenyReason::Expired => "expired",
            DenyReason::Revoked => "revoked",
            DenyReason::ResourceMismatch => "resource_mismatch",
            DenyReason::PermissionDenied => "permission_denied",
            DenyReason::TenantMismatch => "tenant_mismatch",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DenyReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown denial reason {s:?}"))
    }
}

/// What an attenuation asks for; `None` keeps the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    pub resource: Option<Resource>,
    pub permissions: Option<Permissions>,
    /// Seconds from now; it may not outlive the parent.
    pub ttl_seconds: Option<i64>,
}

/// A resource by name (`service:ID`, `secret:NAME`, `events`, `kernel`, `*`).
pub fn resource_named(s: &str) -> Result<Resource, Failure> {
    s.parse()
        .map_err(|e| Failure::invalid("invalid_resource", e))
}

/// Permissions by name.
pub fn permissions_named(p: &[String]) -> Result<Permissions, Failure> {
    Permissions::parse(p.iter().map(String::as_str))
        .map_err(|e| Failure::invalid("invalid_permissions", e))
}

/// A permission by name.
pub fn permission_named(s: &str) -> Result<Permission, Failure> {
    s.parse()
        .map_err(|e| Failure::invalid("invalid_permission", e))
}

/// A grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub resource: Resource,
    pub permissions: Permissions,
    /// `None` takes the default lifetime.
    pub ttl_seconds: Option<i64>,
}

/// A grant as JSON (`POST /v1/capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub resource: String,
    pub permissions: Vec<String>,
    /// Zero takes the default.
    #[serde(default)]
    pub ttl_seconds: i64,
}

impl TryFrom<GrantBody> for GrantRequest {
    type Error = Failure;

    fn try_from(b: GrantBody) -> Result<Self, Failure> {
        Ok(Self {
            resource: resource_named(&b.resource)?,
            permissions: permissions_named(&b.permissions)?,
            ttl_seconds: (b.ttl_seconds != 0).then_some(b.ttl_seconds),
        })
    }
}

/// An attenuation as JSON (`POST /v1/capabilities/attenuate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttenuateBody {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

impl AttenuateBody {
    /// The narrowing this body asks for (empty fields keep the parent's).
    pub fn narrowing(&self) -> Result<Narrowing, Failure> {
        Ok(Narrowing {
            resource: self
                .resource
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(resource_named)
                .transpose()?,
            permissions: self
                .permissions
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(permissions_named)
                .transpose()?,
            ttl_seconds: self.ttl_seconds.filter(|&t| t != 0),
        })
    }
}

/// A check of a token as JSON (`POST /v1/capabilities/verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub token: String,
    pub resource: String,
    pub permission: String,
}

/// A revocation as JSON (`POST /v1/capabilities/revoke`): the token or its hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub token: String,
}

/// The answer to a token check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<CapInfo>,
}

impl From<Result<CapInfo, DenyReason>> for Verification {
    fn from(r: Result<CapInfo, DenyReason>) -> Self {
        match r {
            Ok(info) => Self {
                valid: true,
                reason: None,
                capability: Some(info),
            },
            Err(reason) => Self {
                valid: false,
                reason: Some(reason.as_str().into()),
                capability: None,
            },
        }
    }
}

/// How many capabilities a revocation voided (the token's and its descendants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: u64,
}

/// A tenant's capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapList {
    pub capabilities: Vec<CapInfo>,
}

/// A secret value; its `Debug` is redacted and its bytes are wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.0.len())
    }
}

/// A secret's value, as `GET /v1/secrets/{name}` returns it: `{"name", "value"}` for
/// UTF-8, `{"name", "value_base64"}` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub value: SecretBytes,
}

/// The JSON of a secret value, shared by reads and writes.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl SecretBody {
    /// The value: `value` (text) or `value_base64`, exactly one.
    pub fn bytes(self) -> Result<SecretBytes, Failure> {
        match (self.value, self.value_base64) {
            (Some(v), None) => Ok(SecretBytes::new(v.into_bytes())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(SecretBytes::new)
                .map_err(|e| {
                    Failure::invalid("invalid_value", format!("value_base64 is not base64: {e}"))
                }),
            _ => Err(Failure::invalid(
                "invalid_request",
                "give exactly one of value and value_base64",
            )),
        }
    }

    fn of(name: Option<String>, value: &[u8]) -> Self {
        match std::str::from_utf8(value) {
            Ok(s) => Self {
                name,
                value: Some(s.to_string()),
                value_base64: None,
            },
            Err(_) => Self {
                name,
                value: None,
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            },
        }
    }

    /// The body that stores `value`.
    pub fn for_value(value: &[u8]) -> Self {
        Self::of(None, value)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SecretBody::of(Some(self.name.clone()), self.value.expose()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut b = SecretBody::deserialize(d)?;
        let name = b.name.take().unwrap_or_default();
        let value = b.bytes().map_err(serde::de::Error::custom)?;
        Ok(Self { name, value })
    }
}

/// A secret was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStored {
    pub name: String,
    pub event_id: u64,
}

/// A secret was deleted (or did not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDeleted {
    pub name: String,
    pub existed: bool,
}

/// A tenant's secret names, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretNames {
    pub names: Vec<String>,
}

/// The hosts a secret may be sent to in a service's request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHosts {
    pub name: String,
    pub hosts: Vec<String>,
}

/// `POST /v1/secrets/{name}/hosts`: bind (or unbind) hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindHostsBody {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub unbind: bool,
}

/// A tenant's egress rules, normalized (`scheme://host:port`), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRules {
    pub tenant: TenantId,
    pub rules: Vec<String>,
}

/// `POST /v1/egress/{tenant}/allow` and `/deny`: the rules to add or remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRulesBody {
    pub rules: Vec<String>,
}

/// Every tenant's egress rules an admin asked for (or the caller's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressList {
    pub tenants: Vec<EgressRules>,
}

/// How many secrets a key rotation re-encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub rotated: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_text_or_base64_and_never_debug_printed() {
        let s = Secret {
            name: "k".into(),
            value: SecretBytes::new(vec![0xff, 0]),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v, serde_json::json!({"name": "k", "value_base64": "/wA="}));
        assert_eq!(serde_json::from_value::<Secret>(v).unwrap(), s);
        assert!(!format!("{s:?}").contains("255"));
        let e = SecretBody::default().bytes().unwrap_err();
        assert_eq!(e.reason, "invalid_request");
    }

    #[test]
    fn a_granted_token_is_serialized_once_and_redacted_in_debug() {
        let info = CapInfo {
            hash: "h".into(),
            tenant: TenantId::new("t").unwrap(),
            resource: Resource::Events,
            permissions: Permissions::parse(["read"]).unwrap(),
            expires_at: 1,
            revoked: false,
            parent: None,
            created_at: 0,
        };
        let g = Granted {
            token: Token::new("solo_secret".into()),
            info,
            event_id: 3,
        };
        assert!(!format!("{g:?}").contains("solo_secret"));
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["token"], "solo_secret");
        assert_eq!(v["capability"]["resource"], "events");
        assert_eq!(serde_json::from_value::<Granted>(v).unwrap(), g);
        for r in DenyReason::ALL {
            assert_eq!(r.as_str().parse::<DenyReason>().unwrap(), r);
        }
    }
}
