//! What a capability names: a resource of a tenant and a set of permissions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::ServiceId;

/// One thing a capability may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Call or cast to a service.
    Call,
    /// Read: watch events, read a secret, see a service's status and logs.
    Read,
    /// Write: store or delete a secret.
    Write,
    /// Deploy services into the tenant.
    Deploy,
    /// Kill services.
    Kill,
    /// Hot-swap a service's code.
    Swap,
    /// Register services for discovery.
    Register,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Call,
        Permission::Read,
        Permission::Write,
        Permission::Deploy,
        Permission::Kill,
        Permission::Swap,
        Permission::Register,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Call => "call",
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Deploy => "deploy",
            Permission::Kill => "kill",
            Permission::Swap => "swap",
            Permission::Register => "register",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown permission {s:?}; use call, read, write, deploy, kill, swap or register")
            })
    }
}

/// A set of permissions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u32);

impl Permissions {
    pub fn empty() -> Self {
        Self(0)
    }

    pub fn with(mut self, p: Permission) -> Self {
        self.0 |= p.bit();
        self
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Whether every permission of `other` is in `self`.
    pub fn covers(self, other: Permissions) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// The raw bits, for compact storage.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Parses names; an empty list or an unknown name is an error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = Self::empty();
        for n in names {
            set = set.with(n.trim().parse()?);
        }
        if set.is_empty() {
            return Err("a capability needs at least one permission".into());
        }
        Ok(set)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), Self::with)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Permission::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Permission::as_str))
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Permissions::parse(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// What a capability is about, within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Everything in the tenant (`*`).
    Any,
    /// One service (`service:ID`).
    Service(ServiceId),
    /// One secret (`secret:NAME`).
    Secret(String),
    /// The tenant's events (`events`).
    Events,
    /// The tenant's kernel operations: deploy, kill, swap (`kernel`).
    Kernel,
}

impl Resource {
    /// Whether a capability on `self` also covers `other`.
    pub fn covers(&self, other: &Resource) -> bool {
        matches!(self, Resource::Any) || self == other
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Any => f.write_str("*"),
            Resource::Service(s) => write!(f, "service:{s}"),
            Resource::Secret(n) => write!(f, "secret:{n}"),
            Resource::Events => f.write_str("events"),
            Resource::Kernel => f.write_str("kernel"),
        }
    }
}

impl FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "*" => Ok(Resource::Any),
            "events" => Ok(Resource::Events),
            "kernel" => Ok(Resource::Kernel),
            _ => {
                if let Some(id) = s.strip_prefix("service:") {
                    return ServiceId::new(id)
                        .map(Resource::Service)
                        .map_err(|e| e.to_string());
                }
                if let Some(name) = s.strip_prefix("secret:") {
                    if crate::caps::valid_secret_name(name) {
                        return Ok(Resource::Secret(name.to_string()));
                    }
                    return Err(format!("invalid secret name {name:?}"));
                }
                Err(format!(
                    "unknown resource {s:?}; use service:ID, secret:NAME, events, kernel or *"
                ))
            }
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret name: `^[A-Za-z0-9_.-]{1,256}$`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_and_print() {
        for s in [
            "*",
            "events",
            "kernel",
            "service:api-1",
            "secret:db.password",
        ] {
            assert_eq!(s.parse::<Resource>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "service:",
            "service:a b",
            "secret:",
            "secret:a/b",
            "files",
        ] {
            assert!(bad.parse::<Resource>().is_err(), "{bad}");
        }
        let any = Resource::Any;
        let svc: Resource = "service:a".parse().unwrap();
        assert!(any.covers(&svc));
        assert!(svc.covers(&svc));
        assert!(!svc.covers(&any));
        assert!(!svc.covers(&"service:b".parse().unwrap()));
    }

    #[test]
    fn permission_sets() {
        let p = Permissions::parse(["call", "read"]).unwrap();
        assert!(p.contains(Permission::Call) && !p.contains(Permission::Deploy));
        assert!(p.covers(Permissions::parse(["read"]).unwrap()));
        assert!(!p.covers(Permissions::parse(["read", "kill"]).unwrap()));
        assert_eq!(p.to_string(), "call,read");
        assert!(Permissions::parse(Vec::<&str>::new()).is_err());
        assert!(Permissions::parse(["fly"]).is_err());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"["call","read"]"#);
        assert_eq!(serde_json::from_str::<Permissions>(&json).unwrap(), p);
    }
}
