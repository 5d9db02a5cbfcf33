//! Tenant and service identifiers: validated once, stored verbatim.
//!
//! An id matches `^[A-Za-z0-9_-]{1,64}$`. Ids are never sanitized or rewritten, so two
//! distinct ids can never collide (`agent-1` and `agent_1` stay distinct).

use std::fmt;
use std::str::FromStr;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} id is empty")]
    Empty { what: &'static str },
    #[error("{what} id is {len} bytes long, the limit is {MAX_ID_LEN}")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} id has a character outside [A-Za-z0-9_-] at byte {position}")]
    BadChar { what: &'static str, position: usize },
}

fn validate(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { what, len: s.len() });
    }
    if let Some(position) = s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(IdError::BadChar { what, position });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($what, &s)?;
                Ok(Self(s))
            }

            /// The id as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A tenant: an agent, named by the CN of its client certificate.
    TenantId,
    "tenant"
);
id_type!(
    /// A service, unique within its tenant.
    ServiceId,
    "service"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<(), IdError>) {
        assert_eq!(ServiceId::new(input).map(|_| ()), expect, "input {input:?}");
    }

    #[test]
    fn validation_table() {
        let what = "service";
        check("a", Ok(()));
        check("agent_1", Ok(()));
        check("agent-1", Ok(()));
        check("AZaz09_-", Ok(()));
        check(&"x".repeat(64), Ok(()));
        check("", Err(IdError::Empty { what }));
        check(&"x".repeat(65), Err(IdError::TooLong { what, len: 65 }));
        check("a b", Err(IdError::BadChar { what, position: 1 }));
        check("a/b", Err(IdError::BadChar { what, position: 1 }));
        check("a.b", Err(IdError::BadChar { what, position: 1 }));
        check("é", Err(IdError::BadChar { what, position: 0 }));
        check("a\0", Err(IdError::BadChar { what, position: 1 }));
    }

    #[test]
    fn ids_are_stored_verbatim_and_never_collide() {
        let a = ServiceId::new("agent-1").unwrap();
        let b = ServiceId::new("agent_1").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "agent-1");
    }

    #[test]
    fn serde_validates() {
        let ok: TenantId = serde_json::from_str("\"t1\"").unwrap();
        assert_eq!(ok.as_str(), "t1");
        let err = serde_json::from_str::<TenantId>("\"t 1\"").unwrap_err();
        assert!(err.to_string().contains("outside [A-Za-z0-9_-]"), "{err}");
    }
}
