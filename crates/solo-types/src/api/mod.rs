//! The operations' inputs and answers, as plain data, with the one JSON shape every face
//! shows (REST bodies, SSE, the CLI's `--json`, MCP).
//!
//! Each face decodes a request into one of these types and encodes the answer from one:
//! a `*Body` or `*Params` type is the JSON (or query string) of an input, checked once by
//! its `TryFrom` into the kernel's input type with a [`Failure`] that names the field; an
//! answer type serializes to the shape REST returns. Nothing here does IO.

mod access;
mod services;
mod system;

pub use access::*;
pub use services::*;
pub use system::*;

use serde::{Deserialize, Serialize};

use crate::code::Code;

/// A refusal or failure as every face reports it: the class, a machine-readable reason
/// finer than the class, a message for people, and where it helps, details an agent can
/// act on (a crash report) and when a retry may succeed.
///
/// As JSON: `{"error": REASON, "code": CODE, "message": ..., "details"?, "retry_after_seconds"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "error")]
    pub reason: String,
    pub code: Code,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(
        rename = "retry_after_seconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// A malformed or invalid input.
    pub fn invalid(reason: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, "unauthenticated", message)
    }

    /// Something only an admin certificate may do.
    pub fn admin_only(what: &str) -> Self {
        Self::new(
            Code::PermissionDenied,
            "admin_only",
            format!("{what} needs an admin certificate"),
        )
    }

    /// A request body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            Code::ResourceExhausted,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Failure {}

/// `serde` helper: skip `false`.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A service id from the wire.
pub fn service_id(s: &str) -> Result<crate::ServiceId, Failure> {
    crate::ServiceId::new(s).map_err(|e| Failure::invalid("invalid_service_id", e.to_string()))
}

/// A tenant id from the wire.
pub fn tenant_id(s: &str) -> Result<crate::TenantId, Failure> {
    crate::TenantId::new(s).map_err(|e| Failure::invalid("invalid_tenant", e.to_string()))
}

/// A duration in milliseconds from the wire, zero (or less) meaning "the default".
pub fn millis(ms: i64) -> Option<std::time::Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&m| m > 0)
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_has_one_json_shape() {
        let mut f = Failure::invalid("invalid_json", "no");
        f.retry_after = Some(1);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "invalid_json", "code": "invalid_argument", "message": "no", "retry_after_seconds": 1})
        );
        assert_eq!(serde_json::from_value::<Failure>(v).unwrap(), f);
        assert_eq!(millis(0), None);
        assert_eq!(millis(-5), None);
        assert_eq!(millis(7), Some(std::time::Duration::from_millis(7)));
    }
}
