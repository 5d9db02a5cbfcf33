//! The error codes every layer reports, mapped once to gRPC and HTTP in the gateway.

use std::fmt;

/// A machine-readable class of failure. Each library error enum maps its variants to one
/// of these; the gateway maps each code to exactly one gRPC status and one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// The caller has no valid identity.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The thing does not exist, or belongs to another tenant.
    NotFound,
    /// The thing exists already with different content.
    AlreadyExists,
    /// The operation conflicts with the current state (for example a kill in progress).
    FailedPrecondition,
    /// A quota, mailbox or in-flight limit is full; retry later.
    ResourceExhausted,
    /// The deadline passed before an answer came.
    DeadlineExceeded,
    /// The system is shutting down or a dependency is down; retry later.
    Unavailable,
    /// Stored data failed an integrity check.
    DataLoss,
    /// A bug or an unexpected failure inside Solo.
    Internal,
}

impl Code {
    /// The snake_case name used as the machine-readable reason on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::ResourceExhausted => "resource_exhausted",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Internal => "internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
