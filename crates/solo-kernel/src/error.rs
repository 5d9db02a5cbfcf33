//! The kernel's errors, each with one [`Code`] and a machine-readable reason.

use solo_sandbox::CompileError;
use solo_store::StoreError;
use solo_types::{Code, CrashReport};

/// A failed kernel operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Also what another tenant's resources look like.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the code was refused: {0}")]
    Compile(#[from] CompileError),
    /// The service answered with an error (it is healthy).
    #[error("the service returned an error: {0}")]
    ServiceError(String),
    /// The request crashed the service (it is being restarted).
    #[error("the service crashed: {}: {}", .0.kind, .0.message)]
    ServiceCrashed(Box<CrashReport>),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// Refused for a named reason: shutting down, a circuit breaker open, ...
    #[error("{message}")]
    Refused {
        code: Code,
        reason: &'static str,
        message: String,
    },
}

impl KernelError {
    /// The class of this failure.
    pub fn code(&self) -> Code {
        match self {
            KernelError::InvalidArgument(_) | KernelError::Compile(_) => Code::InvalidArgument,
            KernelError::PermissionDenied(_) => Code::PermissionDenied,
            KernelError::NotFound(_) => Code::NotFound,
            KernelError::AlreadyExists(_) => Code::AlreadyExists,
            KernelError::FailedPrecondition(_) | KernelError::ServiceError(_) => {
                Code::FailedPrecondition
            }
            KernelError::ResourceExhausted { .. } => Code::ResourceExhausted,
            KernelError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            KernelError::Unavailable(_) | KernelError::ServiceCrashed(_) => Code::Unavailable,
            KernelError::Store(e) => e.code(),
            KernelError::Internal(_) => Code::Internal,
            KernelError::Refused { code, .. } => *code,
        }
    }

    /// A machine-readable reason, finer than the code.
    pub fn reason(&self) -> &'static str {
        match self {
            KernelError::Compile(_) => "invalid_code",
            KernelError::ServiceError(_) => "service_error",
            KernelError::ServiceCrashed(_) => "service_crashed",
            KernelError::ResourceExhausted { reason, .. } | KernelError::Refused { reason, .. } => {
                reason
            }
            other => other.code().as_str(),
        }
    }

    /// The kernel is stopping and takes no new work.
    pub(crate) fn shutting_down() -> Self {
        KernelError::Refused {
            code: Code::Unavailable,
            reason: "shutting_down",
            message: "Solo is shutting down and takes no new work".into(),
        }
    }

    pub(crate) fn not_found(service: &impl std::fmt::Display) -> Self {
        KernelError::NotFound(format!("service {service} not found"))
    }
}
