//! The kernel's errors: refusals that name their reason, and failures of a lower layer
//! that name the stage they happened in and keep their source. Each has one [`Code`] and
//! a machine-readable reason, and becomes one [`Failure`] for every face.

use solo_caps::CapsError;
use solo_sandbox::CompileError;
use solo_store::StoreError;
use solo_supervisor::SupervisorError;
use solo_types::api::Failure;
use solo_types::{Code, CrashReport};
use solo_vault::VaultError;

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
    /// Over the tenant's request rate: retry after `retry_after` seconds. `ignoring`:
    /// the tenant was refused again before its last hint ran out.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: u64,
        ignoring: bool,
    },
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    /// Refused for a named reason: shutting down, a circuit breaker open, admin only, ...
    #[error("{message}")]
    Refused {
        code: Code,
        reason: &'static str,
        message: String,
    },
    /// The sandbox refused the code (the stage is always compile).
    #[error("the code was refused: {0}")]
    Compile(#[from] CompileError),
    /// The service answered with an error (it is healthy); a JavaScript exception names
    /// its line and column and carries its stack.
    #[error("the service returned an error: {0}")]
    ServiceError(solo_sandbox::GuestError),
    /// The request crashed the service (it is being restarted).
    #[error("the service crashed: {}: {}", .0.kind, .0.message)]
    ServiceCrashed(Box<CrashReport>),
    #[error("{stage}: {source}")]
    Store {
        stage: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("{stage}: {source}")]
    Vault {
        stage: &'static str,
        #[source]
        source: VaultError,
    },
    #[error("{stage}: {source}")]
    Caps {
        stage: &'static str,
        #[source]
        source: CapsError,
    },
    #[error("{stage}: {source}")]
    Supervisor {
        stage: &'static str,
        #[source]
        source: SupervisorError,
    },
    #[error("internal error: {stage}: {detail}")]
    Internal { stage: &'static str, detail: String },
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
            KernelError::ResourceExhausted { .. } | KernelError::RateLimited { .. } => {
                Code::ResourceExhausted
            }
            KernelError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            KernelError::Unavailable(_) | KernelError::ServiceCrashed(_) => Code::Unavailable,
            KernelError::Refused { code, .. } => *code,
            KernelError::Store { source, .. } => source.code(),
            KernelError::Vault { source, .. } => source.code(),
            KernelError::Caps { source, .. } => source.code(),
            KernelError::Supervisor { .. } | KernelError::Internal { .. } => Code::Internal,
        }
    }

    /// A machine-readable reason, finer than the code.
    pub fn reason(&self) -> &'static str {
        match self {
            KernelError::Compile(_) => "invalid_code",
            KernelError::ServiceError(_) => "service_error",
            KernelError::ServiceCrashed(_) => "service_crashed",
            KernelError::RateLimited { .. } => "rate_limited",
            KernelError::ResourceExhausted { reason, .. } | KernelError::Refused { reason, .. } => {
                reason
            }
            KernelError::Store { source, .. }
            | KernelError::Vault {
                source: VaultError::Store(source),
                ..
            }
            | KernelError::Caps {
                source: CapsError::Store(source),
                ..
            } if source.is_unavailable() => "store_unavailable",
            other => other.code().as_str(),
        }
    }

    /// The store takes no writes (a failed write it has not yet recovered from).
    pub(crate) fn store_unavailable(cause: &str) -> Self {
        KernelError::Refused {
            code: Code::Unavailable,
            reason: "store_unavailable",
            message: format!(
                "the store takes no writes until it recovers from a failed write ({cause}); \
                 reads and calls go on"
            ),
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

    /// Something only an admin certificate may do.
    pub(crate) fn admin_only(what: &str) -> Self {
        KernelError::Refused {
            code: Code::PermissionDenied,
            reason: "admin_only",
            message: format!("{what} needs an admin certificate"),
        }
    }

    /// Malformed JSON in a request, a message or a config.
    pub(crate) fn invalid_json(message: String) -> Self {
        KernelError::Refused {
            code: Code::InvalidArgument,
            reason: "invalid_json",
            message,
        }
    }

    pub(crate) fn internal(stage: &'static str, detail: impl std::fmt::Display) -> Self {
        KernelError::Internal {
            stage,
            detail: detail.to_string(),
        }
    }
}

/// Names the stage a lower layer's failure happened in.
pub(crate) trait Stage<T> {
    fn stage(self, stage: &'static str) -> Result<T, KernelError>;
}

impl<T> Stage<T> for Result<T, StoreError> {
    fn stage(self, stage: &'static str) -> Result<T, KernelError> {
        self.map_err(|source| KernelError::Store { stage, source })
    }
}

impl<T> Stage<T> for Result<T, SupervisorError> {
    fn stage(self, stage: &'static str) -> Result<T, KernelError> {
        self.map_err(|source| KernelError::Supervisor { stage, source })
    }
}

impl<T> Stage<T> for Result<T, serde_json::Error> {
    fn stage(self, stage: &'static str) -> Result<T, KernelError> {
        self.map_err(|e| KernelError::internal(stage, e))
    }
}

impl<T> Stage<T> for Result<T, VaultError> {
    /// A vault refusal keeps its meaning (a missing secret is `NotFound`); a failure
    /// underneath keeps its stage and source.
    fn stage(self, stage: &'static str) -> Result<T, KernelError> {
        self.map_err(|source| match source {
            VaultError::NotFound(_) => KernelError::NotFound(source.to_string()),
            VaultError::InvalidName(_) | VaultError::TooLarge { .. } => {
                KernelError::InvalidArgument(source.to_string())
            }
            VaultError::WrongMasterKey { .. } | VaultError::MasterKey(_) => {
                KernelError::FailedPrecondition(source.to_string())
            }
            VaultError::Integrity { .. } | VaultError::Store(_) => {
                KernelError::Vault { stage, source }
            }
        })
    }
}

impl<T> Stage<T> for Result<T, CapsError> {
    /// A capability refusal keeps its meaning; another tenant's capability is reported
    /// like one that does not exist.
    fn stage(self, stage: &'static str) -> Result<T, KernelError> {
        use solo_caps::DenyReason as D;
        self.map_err(|source| match source {
            CapsError::Invalid(_) | CapsError::Attenuate(_) => {
                KernelError::InvalidArgument(source.to_string())
            }
            CapsError::Denied(D::NotFound | D::TenantMismatch) => {
                KernelError::NotFound("capability not found".into())
            }
            CapsError::Denied(r) => KernelError::PermissionDenied(format!("capability {r}")),
            CapsError::Store(_) | CapsError::Corrupt(_) => KernelError::Caps { stage, source },
        })
    }
}

impl From<&KernelError> for Failure {
    fn from(e: &KernelError) -> Self {
        let mut f = Failure::new(e.code(), e.reason(), e.to_string());
        match e {
            KernelError::ServiceCrashed(report) => f.details = serde_json::to_value(report).ok(),
            KernelError::ServiceError(g) => {
                f.details = g
                    .stack
                    .as_ref()
                    .map(|stack| serde_json::json!({ "stack": stack }));
            }
            KernelError::ResourceExhausted { .. } => f.retry_after = Some(1),
            KernelError::RateLimited { retry_after, .. } => f.retry_after = Some(*retry_after),
            _ => {}
        }
        f
    }
}

impl From<KernelError> for Failure {
    fn from(e: KernelError) -> Self {
        Failure::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_underneath_keeps_its_stage_and_source() {
        let e: Result<(), _> =
            Err(StoreError::Poisoned { path: "x".into() }).stage("commit the deployment");
        let e = e.unwrap_err();
        assert!(e.to_string().starts_with("commit the deployment: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.reason(), "store_unavailable");
        assert_eq!(e.code(), Code::Unavailable);
        let f = Failure::from(&KernelError::ResourceExhausted {
            reason: "mailbox_full",
            message: "full".into(),
        });
        assert_eq!(
            (f.reason.as_str(), f.retry_after),
            ("mailbox_full", Some(1))
        );
    }
}
