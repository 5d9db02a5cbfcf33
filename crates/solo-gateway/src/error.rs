//! The one mapping from failures to gRPC statuses and HTTP responses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use solo_kernel::KernelError;
use solo_types::Code;

/// A failure as the API reports it: a code, a machine-readable reason, a message, and
/// for a crash the report an agent can fix its code from.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub reason: String,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds before a retry may succeed (for `ResourceExhausted`).
    pub retry_after: Option<u64>,
    /// An HTTP status more precise than the code's (413 for an oversized body).
    pub http: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
            retry_after: None,
            http: None,
        }
    }

    /// A request body over the limit: HTTP 413, `RESOURCE_EXHAUSTED` on gRPC.
    pub fn too_large(limit: usize) -> Self {
        let mut e = Self::new(
            Code::ResourceExhausted,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        );
        e.http = Some(StatusCode::PAYLOAD_TOO_LARGE);
        e
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, "unauthenticated", message)
    }

    pub fn invalid(reason: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    pub fn admin_only(what: &str) -> Self {
        Self::new(
            Code::PermissionDenied,
            "admin_only",
            format!("{what} needs an admin certificate"),
        )
    }

    /// The gRPC status code of a code.
    pub fn grpc_code(code: Code) -> tonic::Code {
        match code {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::DataLoss => tonic::Code::DataLoss,
            Code::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status of a code.
    pub fn http_status(code: Code) -> StatusCode {
        match code {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DataLoss | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body of an HTTP error.
    pub fn body(&self) -> serde_json::Value {
        let mut b = json!({ "error": self.reason, "message": self.message });
        if let Some(d) = &self.details {
            b["details"] = d.clone();
        }
        if let Some(r) = self.retry_after {
            b["retry_after_seconds"] = json!(r);
        }
        b
    }
}

impl From<KernelError> for ApiError {
    fn from(e: KernelError) -> Self {
        let mut api = ApiError::new(e.code(), e.reason(), e.to_string());
        match &e {
            KernelError::ServiceCrashed(report) => {
                api.details = serde_json::to_value(report).ok();
            }
            KernelError::ResourceExhausted { .. } => api.retry_after = Some(1),
            _ => {}
        }
        api
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let mut status = tonic::Status::new(ApiError::grpc_code(e.code), e.message.clone());
        if let Ok(v) = e.reason.parse() {
            status.metadata_mut().insert(solo_proto::REASON_KEY, v);
        }
        if let Some(d) = &e.details
            && let Ok(v) = d.to_string().parse()
        {
            status.metadata_mut().insert("solo-details", v);
        }
        if let Some(r) = e.retry_after
            && let Ok(v) = r.to_string().parse()
        {
            status.metadata_mut().insert("retry-after", v);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self
            .http
            .unwrap_or_else(|| ApiError::http_status(self.code));
        let retry = self.retry_after;
        let mut resp = (status, axum::Json(self.body())).into_response();
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
    fn every_code_maps_once() {
        let table = [
            (Code::InvalidArgument, tonic::Code::InvalidArgument, 400),
            (Code::Unauthenticated, tonic::Code::Unauthenticated, 401),
            (Code::PermissionDenied, tonic::Code::PermissionDenied, 403),
            (Code::NotFound, tonic::Code::NotFound, 404),
            (Code::AlreadyExists, tonic::Code::AlreadyExists, 409),
            (
                Code::FailedPrecondition,
                tonic::Code::FailedPrecondition,
                409,
            ),
            (Code::ResourceExhausted, tonic::Code::ResourceExhausted, 429),
            (Code::DeadlineExceeded, tonic::Code::DeadlineExceeded, 504),
            (Code::Unavailable, tonic::Code::Unavailable, 503),
            (Code::DataLoss, tonic::Code::DataLoss, 500),
            (Code::Internal, tonic::Code::Internal, 500),
        ];
        for (code, grpc, http) in table {
            assert_eq!(ApiError::grpc_code(code), grpc);
            assert_eq!(ApiError::http_status(code).as_u16(), http);
        }
    }

    #[test]
    fn statuses_carry_the_reason() {
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
        assert_eq!(e.body()["error"], "mailbox_full");
        assert_eq!(e.body()["retry_after_seconds"], 1);
    }
}
