//! A node that cannot serve still answers: [`Refusal`] completes the TLS handshake with
//! the server's own certificate and refuses every request on the connection with one
//! failure, in the codec the request speaks (a gRPC status for `application/grpc`, the
//! JSON error and its HTTP status for anything else). A cluster standby with no active
//! node to relay to uses it, so a client reads "no active node, retry" rather than a
//! TLS handshake cut short.
//!
//! A refusing connection lives for one exchange: HTTP/1 closes after its response,
//! HTTP/2 is told to go away once the first refusal is written, so the client's next
//! request opens a new connection, which finds an active node as soon as there is one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use solo_types::api::Failure;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::error::ApiError;
use crate::tls::{TlsFiles, server_config};

/// How long a refusing connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused HTTP/2 connection is given to finish its streams once told to go.
const GOING_AWAY: Duration = Duration::from_secs(1);

/// Refuses whole connections, with the server's TLS identity.
pub struct Refusal {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl Refusal {
    /// With the server's certificate (the same CA, the same client-certificate check as
    /// the gateway's listeners).
    pub fn new(tls: &TlsFiles, handshake_timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            acceptor: TlsAcceptor::from(server_config(tls)?),
            handshake_timeout,
        })
    }

    /// Completes the handshake on `stream` and answers every request on it with
    /// `failure`, then closes it. Never takes longer than the handshake timeout plus ten
    /// seconds.
    pub async fn serve(&self, stream: TcpStream, failure: Failure) {
        let cap = self.handshake_timeout + REQUEST_TIMEOUT;
        let _ = tokio::time::timeout(cap, self.exchange(stream, failure)).await;
    }

    async fn exchange(&self, stream: TcpStream, failure: Failure) {
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => return,
        };
        let failure = Arc::new(failure);
        let answered = Arc::new(Notify::new());
        let told = Arc::clone(&answered);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let response = refusal(&req, &failure);
            told.notify_one();
            async move { Ok::<_, Infallible>(response) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(REQUEST_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            () = answered.notified() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(GOING_AWAY, conn.as_mut()).await;
            }
        }
    }
}

/// `failure` in the codec of `req`: a trailers-only gRPC status, or the JSON error.
fn refusal<B>(req: &hyper::Request<B>, failure: &Failure) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let error = ApiError(failure.clone());
    if grpc {
        tonic::Status::from(error).into_http::<Body>()
    } else {
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solo_types::Code;

    fn no_node() -> Failure {
        let mut f = Failure::new(Code::Unavailable, "no_active_node", "no node is active");
        f.retry_after = Some(1);
        f
    }

    #[test]
    fn a_grpc_request_gets_a_status_and_any_other_the_json_error() {
        let grpc = hyper::Request::builder()
            .uri("/solo.v1.SoloKernel/Health")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let r = refusal(&grpc, &no_node());
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()[solo_proto::REASON_KEY], "no_active_node");

        let rest = hyper::Request::builder()
            .uri("/v1/health")
            .body(())
            .unwrap();
        let r = refusal(&rest, &no_node());
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(r.headers().get("grpc-status").is_none());
    }
}
