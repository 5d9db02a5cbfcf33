//! The one mapping from failures to HTTP responses (gRPC's is in `solo_proto::convert`):
//! a failure's code gives its status, its reason and message the JSON body, with
//! `retry-after` when a retry may succeed.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use solo_kernel::KernelError;
use solo_types::Code;
use solo_types::api::Failure;

/// A failure as a face reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError(pub Failure);

impl ApiError {
    pub fn new(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Failure::new(code, reason, message))
    }

    /// A malformed or invalid input.
    pub fn invalid(reason: &str, message: impl Into<String>) -> Self {
        Self(Failure::invalid(reason, message))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self(Failure::unauthenticated(message))
    }

    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The failure in the codec a request speaks: a trailers-only gRPC status, or the
    /// JSON error with its HTTP status.
    pub fn into_response_for(self, grpc: bool) -> Response {
        if grpc {
            tonic::Status::from(self).into_http::<axum::body::Body>()
        } else {
            self.into_response()
        }
    }

    /// The HTTP status of a failure: by its code, except a body over the limit (413) and
    /// a method a route does not take (405).
    pub fn http_status(f: &Failure) -> StatusCode {
        match (f.code, f.reason.as_str()) {
            (_, "body_too_large") => StatusCode::PAYLOAD_TOO_LARGE,
            (_, "method_not_allowed") => StatusCode::METHOD_NOT_ALLOWED,
            (Code::InvalidArgument, _) => StatusCode::BAD_REQUEST,
            (Code::Unauthenticated, _) => StatusCode::UNAUTHORIZED,
            (Code::PermissionDenied, _) => StatusCode::FORBIDDEN,
            (Code::NotFound, _) => StatusCode::NOT_FOUND,
            (Code::AlreadyExists | Code::FailedPrecondition, _) => StatusCode::CONFLICT,
            (Code::ResourceExhausted, _) => StatusCode::TOO_MANY_REQUESTS,
            (Code::DeadlineExceeded, _) => StatusCode::GATEWAY_TIMEOUT,
            (Code::Unavailable, _) => StatusCode::SERVICE_UNAVAILABLE,
            (Code::DataLoss | Code::Internal, _) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        Self(f)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        e.0
    }
}

impl From<KernelError> for ApiError {
    fn from(e: KernelError) -> Self {
        Self(Failure::from(&e))
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        solo_proto::convert::status(&e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = ApiError::http_status(&self.0);
        let retry = self.0.retry_after;
        let mut resp = (status, axum::Json(self.0)).into_response();
        if let Some(r) = retry
            && let Ok(v) = HeaderValue::from_str(&r.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_one_http_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::ResourceExhausted, 429),
            (Code::DeadlineExceeded, 504),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Internal, 500),
        ];
        for (code, http) in table {
            let f = Failure::new(code, code.as_str(), "m");
            assert_eq!(ApiError::http_status(&f).as_u16(), http);
        }
        assert_eq!(ApiError::http_status(&Failure::too_large(1)).as_u16(), 413);
    }

    #[test]
    fn statuses_carry_the_reason_and_the_retry_hint() {
        let e: ApiError = KernelError::ResourceExhausted {
            reason: "mailbox_full",
            message: "full".into(),
        }
        .into();
        let s: tonic::Status = e.clone().into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.metadata().get(solo_proto::REASON_KEY).unwrap(),
            "mailbox_full"
        );
        assert_eq!(e.0.retry_after, Some(1));
        let r = e.into_response();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
    }
}
