//! Conversions between the wire (`solo.v1` messages) and the operations' types
//! (`solo_types::api`), in both directions: the gateway decodes requests and encodes
//! answers, the client encodes requests and decodes answers, with the same code. A
//! request from the wire is checked once here, into a [`Failure`] that names the field;
//! a refusal travels as a status whose metadata carries the reason.
//!
//! Zero (or empty) means "not set" on the wire, as proto3 has it, except where a field
//! is `optional`.

mod access;
mod services;
mod system;

pub use access::*;
pub use services::*;
pub use system::*;

use solo_types::Code;
use solo_types::api::Failure;

use crate::{DETAILS_KEY, REASON_KEY, RETRY_AFTER_KEY};

/// The gRPC status code of each class of failure (one table, both directions).
const CODES: [(Code, tonic::Code); 11] = [
    (Code::InvalidArgument, tonic::Code::InvalidArgument),
    (Code::Unauthenticated, tonic::Code::Unauthenticated),
    (Code::PermissionDenied, tonic::Code::PermissionDenied),
    (Code::NotFound, tonic::Code::NotFound),
    (Code::AlreadyExists, tonic::Code::AlreadyExists),
    (Code::FailedPrecondition, tonic::Code::FailedPrecondition),
    (Code::ResourceExhausted, tonic::Code::ResourceExhausted),
    (Code::DeadlineExceeded, tonic::Code::DeadlineExceeded),
    (Code::Unavailable, tonic::Code::Unavailable),
    (Code::DataLoss, tonic::Code::DataLoss),
    (Code::Internal, tonic::Code::Internal),
];

/// The gRPC status code of `code`.
pub fn grpc_code(code: Code) -> tonic::Code {
    CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(tonic::Code::Internal, |(_, g)| *g)
}

/// The class of a gRPC status code (one Solo does not send is `Internal`).
pub fn code_of(grpc: tonic::Code) -> Code {
    CODES
        .iter()
        .find(|(_, g)| *g == grpc)
        .map_or(Code::Internal, |(c, _)| *c)
}

/// A failure as a gRPC status: the message, and the reason, details and retry hint as
/// metadata.
pub fn status(f: &Failure) -> tonic::Status {
    let mut status = tonic::Status::new(grpc_code(f.code), f.message.clone());
    let meta = status.metadata_mut();
    if let Ok(v) = f.reason.parse() {
        meta.insert(REASON_KEY, v);
    }
    if let Some(d) = &f.details
        && let Ok(v) = d.to_string().parse()
    {
        meta.insert(DETAILS_KEY, v);
    }
    if let Some(r) = f.retry_after
        && let Ok(v) = r.to_string().parse()
    {
        meta.insert(RETRY_AFTER_KEY, v);
    }
    status
}

/// A gRPC status as a failure (the reason is the code's name when the status has none).
pub fn failure(s: &tonic::Status) -> Failure {
    let code = code_of(s.code());
    let meta = |key: &str| {
        s.metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Failure {
        reason: meta(REASON_KEY).unwrap_or_else(|| code.as_str().to_string()),
        code,
        message: s.message().to_string(),
        details: meta(DETAILS_KEY).and_then(|d| serde_json::from_str(&d).ok()),
        retry_after: meta(RETRY_AFTER_KEY).and_then(|r| r.parse().ok()),
    }
}

/// An answer from the wire that does not decode: the server sent something this client
/// does not understand.
pub(crate) fn bad_answer(what: &str, detail: impl std::fmt::Display) -> Failure {
    Failure::new(
        Code::Internal,
        "invalid_answer",
        format!("the server's {what} does not decode: {detail}"),
    )
}

/// `None` for the wire's zero.
pub(crate) fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_once_both_ways() {
        for (code, grpc) in CODES {
            assert_eq!(grpc_code(code), grpc);
            assert_eq!(code_of(grpc), code);
        }
        let mut f = Failure::new(Code::ResourceExhausted, "load_shed", "slow down");
        f.retry_after = Some(1);
        f.details = Some(serde_json::json!({"kind": "trap"}));
        assert_eq!(failure(&status(&f)), f);
        let bare = failure(&tonic::Status::not_found("gone"));
        assert_eq!(
            (bare.code, bare.reason.as_str()),
            (Code::NotFound, "not_found")
        );
    }
}
