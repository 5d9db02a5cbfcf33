//! `wasi:http/outgoing-handler` for components, over [`HostApi::http`]: the hook every
//! request a guest sends with an ordinary WASI HTTP crate leaves through. It reads the
//! guest's body up to the host's cap, hands the request to the host (which applies the
//! egress policy, substitutes secrets and sends it), and answers with the host's
//! response or the `wasi:http` error code closest to the host's refusal.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::{HostApi, HostError, HttpRequest};

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// The hook of one instance.
pub(super) struct Egress {
    host: Arc<dyn HostApi>,
}

impl Egress {
    pub(super) fn new(host: Arc<dyn HostApi>) -> Self {
        Self { host }
    }
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let host = Arc::clone(&self.host);
        Box::new(async move {
            let response = send(host.as_ref(), request).await?;
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

async fn send(
    host: &dyn HostApi,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    let (parts, body) = request.into_parts();
    if parts
        .uri
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        discard(body).await;
        return Err(Error::HttpRequestUriInvalid);
    }
    // The slot first: a guest cannot make the host hold more bodies than it may have
    // requests in flight.
    let slot = match host.http_begin() {
        Ok(slot) => slot,
        Err(e) => {
            discard(body).await;
            return Err(to_wasi(&e));
        }
    };
    let read = Limited::new(body, slot.max_body).collect();
    let body = match tokio::time::timeout(slot.read_timeout, read).await {
        Err(_) => return Err(Error::ConnectionWriteTimeout),
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::HttpRequestBodySize(None));
        }
        Ok(Err(_)) => {
            return Err(Error::InternalError(Some(
                "the request body could not be read".into(),
            )));
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != http::header::HOST)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let answer = host
        .http(
            slot,
            HttpRequest {
                method: parts.method.as_str().to_string(),
                url: parts.uri.to_string(),
                headers,
                body: body.to_vec(),
            },
        )
        .await
        .map_err(|e| to_wasi(&e))?;
    let mut response = http::Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        response = response.header(k.as_str(), v.as_str());
    }
    response
        .body(
            Full::new(Bytes::from(answer.body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|_| Error::HttpProtocolError)
}

/// Reads a refused request's body without keeping it (at most 16 MiB, for at most 5 s),
/// so that the guest's writes end normally and it reads the refusal's error code rather
/// than a closed stream.
async fn discard(mut body: WasiBody) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > 16 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// The `wasi:http` error code a guest sees for a host refusal or failure. A guest sees
/// only the code; the host logs the reason in the service's log.
fn to_wasi(e: &HostError) -> Error {
    let m = e.message.as_str();
    match e.code.as_str() {
        "host_not_allowed" | "secret_not_bound" | "permission_denied" => Error::HttpRequestDenied,
        "private_address" => Error::DestinationIpProhibited,
        "limit" if m.contains("response") => Error::HttpResponseBodySize(None),
        "limit" if m.contains("request body") => Error::HttpRequestBodySize(None),
        "limit" if m.contains("redirect") => Error::LoopDetected,
        "limit" | "resource_exhausted" => Error::ConnectionLimitReached,
        "invalid_request" | "invalid_argument" => Error::HttpRequestUriInvalid,
        "timeout" | "deadline_exceeded" => Error::HttpResponseTimeout,
        "connect" if m.contains("resolv") => Error::DestinationNotFound,
        "connect" => Error::ConnectionRefused,
        "tls" => Error::TlsCertificateError,
        _ => Error::InternalError(Some(format!("{}: {}", e.code, e.message))),
    }
}
