//! The store's error type: every variant names the file and the problem.

use std::path::PathBuf;

use solo_types::Code;

use crate::MAX_VALUE_BYTES;

/// A store failure. Cloneable, because one failed group commit answers many callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("open {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("{path} is corrupted: {detail}")]
    Corrupted { path: PathBuf, detail: String },
    #[error(
        "{path} has store format version {found}, newer than this build supports ({supported}); \
         upgrade solo or restore a backup"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("{path} is already open in another process")]
    AlreadyOpen { path: PathBuf },
    #[error("no space left on the device holding {path}; the write was not committed")]
    NoSpace { path: PathBuf },
    #[error("permission denied on {path}")]
    PermissionDenied { path: PathBuf },
    #[error("io error on {path} during {op}: {detail}")]
    Io {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("an earlier write to {path} failed; the store is being reopened")]
    Poisoned { path: PathBuf },
    #[error(
        "the store in {path} takes no writes since a write failed ({cause}); it recovers by itself once the fault clears"
    )]
    Unavailable { path: PathBuf, cause: String },
    #[error("event {id} in {path} cannot be decoded: {detail}")]
    Decode {
        path: PathBuf,
        id: u64,
        detail: String,
    },
    #[error("invalid table name {0:?}: use 1-64 characters of [a-z0-9_]")]
    InvalidTable(String),
    #[error("{what} is {size} bytes, over the store's limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the store is closed")]
    Closed,
    /// A write batch read back from bytes (a replicated log's entry) is malformed.
    #[error("a replicated write batch cannot be read: {0}")]
    BadBatch(String),
    /// The replicated log takes no writes now (no quorum, no leader, not reachable); the
    /// write was not committed and may be retried.
    #[error("the cluster's log takes no writes now: {0}")]
    ClusterUnavailable(String),
    /// A write fenced by a lease (see `WriteBatch::fenced`) whose epoch is no longer the
    /// lease's: another node took the lease over, or it expired. Nothing was written.
    #[error(
        "fenced: {scope} is no longer held at epoch {epoch} by this node ({detail}); nothing was written"
    )]
    Fenced {
        scope: String,
        epoch: u64,
        detail: String,
    },
    /// A lease another holder holds and has not let expire.
    #[error("the lease {scope} is held by {holder} until its time to live runs out")]
    LeaseHeld { scope: String, holder: String },
}

impl StoreError {
    /// The machine-readable class of this failure.
    pub fn code(&self) -> Code {
        match self {
            StoreError::Corrupted { .. }
            | StoreError::Decode { .. }
            | StoreError::BadBatch(_)
            | StoreError::UnsupportedFormat { .. } => Code::DataLoss,
            StoreError::NoSpace { .. }
            | StoreError::Closed
            | StoreError::Poisoned { .. }
            | StoreError::Unavailable { .. }
            | StoreError::ClusterUnavailable(_)
            | StoreError::AlreadyOpen { .. } => Code::Unavailable,
            StoreError::InvalidTable(_) | StoreError::TooLarge { .. } => Code::InvalidArgument,
            StoreError::Fenced { .. } | StoreError::LeaseHeld { .. } => Code::FailedPrecondition,
            StoreError::Open { .. }
            | StoreError::PermissionDenied { .. }
            | StoreError::Io { .. } => Code::Internal,
        }
    }

    /// Whether this is the store being out of service (a failed write, a full disk, a
    /// reopen in progress) rather than something wrong with the request: the operation
    /// can be retried once the store has recovered.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::NoSpace { .. }
                | StoreError::Poisoned { .. }
                | StoreError::Unavailable { .. }
                | StoreError::ClusterUnavailable(_)
                | StoreError::Closed
        )
    }

    /// Maps any redb error on `path` during `op`.
    pub(crate) fn redb(
        path: &std::path::Path,
        op: &'static str,
        e: impl Into<redb::Error>,
    ) -> Self {
        let path = path.to_path_buf();
        match e.into() {
            redb::Error::Corrupted(detail) => StoreError::Corrupted { path, detail },
            redb::Error::Io(io) => Self::io(path, op, &io),
            redb::Error::PreviousIo => StoreError::Poisoned { path },
            redb::Error::DatabaseClosed => StoreError::Closed,
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen { path },
            redb::Error::UpgradeRequired(v) => StoreError::Open {
                path,
                detail: format!("redb file format {v} needs an upgrade this build cannot do"),
            },
            redb::Error::ValueTooLarge(size) => StoreError::TooLarge {
                what: "value",
                size,
                limit: MAX_VALUE_BYTES,
            },
            other => StoreError::Io {
                path,
                op,
                detail: other.to_string(),
            },
        }
    }

    pub(crate) fn io(path: PathBuf, op: &'static str, e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreError::NoSpace { path }
            }
            std::io::ErrorKind::PermissionDenied => StoreError::PermissionDenied { path },
            _ => StoreError::Io {
                path,
                op,
                detail: e.to_string(),
            },
        }
    }
}
