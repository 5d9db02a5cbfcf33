//! Forwarding, one request at a time: a node that does not serve a request itself (a
//! cluster's standby) terminates its client's TLS like any listener, then hands each
//! request to the node that does, over HTTP/2 and mutual TLS, presenting a node
//! certificate of the shared CA (O `solo-node`) and naming its client in two headers
//! (`auth::FORWARDED_PEER`, `auth::FORWARDED_REMOTE`) that the serving node honours only
//! on a node's connection. Bodies and trailers stream both ways unchanged, so every face
//! (gRPC, REST, MCP, streams) passes through, and the serving node authenticates, admits
//! and limits the request as if the client had come to it.
//!
//! When there is nobody to forward to, or the node cannot be reached, the request is
//! refused in its own codec with what [`Pick`] says (nothing has been sent, so it is
//! safe to retry); when the serving node goes away after the request was sent, it is
//! refused as `unavailable`, reason `owner_lost` (it may or may not have run). A gRPC
//! response cut short ends with that status in its trailers, so a raw gRPC client reads
//! a retryable status rather than a broken stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Request, Response, Uri, Version, header};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use solo_types::api::Failure;
use solo_types::{Code, metric_names as m};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod elsewhere;

use crate::auth::ConnInfo;
use crate::error::ApiError;
use crate::tls::{TlsFiles, provider};

/// How long reaching the serving node (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection to the serving node is pinged this often, and dropped when a ping goes
/// unanswered this long: a node that died or was paused fails its requests in flight.
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of a node's listeners a request came to (and goes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Grpc,
    Http,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The serving node's id.
    pub node: String,
    /// Its listener's address, `host:port` (the host is checked against its certificate).
    pub addr: String,
    /// What to answer when it cannot be reached.
    pub unreachable: Failure,
}

/// Picks where a request on a listener goes, or the failure to answer it with.
pub type Pick = Arc<dyn Fn(Listener) -> Result<Upstream, Failure> + Send + Sync>;

/// Requests one forwarding connection carries at once before another is opened beside
/// it (a stream such as a watch holds its place for as long as it runs, and the serving
/// node takes at most 1,024 streams on one connection).
const STREAMS_PER_CONNECTION: usize = 256;

/// Forwards requests to the node [`Pick`] names, over HTTP/2 connections to it, opened
/// as needed and shared by every client.
pub struct Forwarding {
    connector: TlsConnector,
    pick: Pick,
    open: Mutex<HashMap<String, Vec<Upward>>>,
    /// Held while a connection is opened: clients that find every connection full wait
    /// for one new connection rather than each opening its own.
    connecting: tokio::sync::Mutex<()>,
    /// When reaching each address last failed: for [`REMEMBER_FAILURE`] after, requests
    /// to it are refused at once instead of each waiting out a connect of its own
    /// (behind the one before it) to a node that is paused or gone.
    failed: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a failure to reach a node is remembered.
const REMEMBER_FAILURE: Duration = Duration::from_secs(1);

/// One connection to a serving node, with how many requests it carries.
struct Upward {
    sender: SendRequest<Body>,
    carrying: Arc<AtomicUsize>,
}

/// A request's place on its connection; given back when dropped (with its response).
struct Carried(Arc<AtomicUsize>);

impl Drop for Carried {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Forwarding {
    /// Trusting `tls`'s CA for the serving nodes, presenting `node_cert` (PEM
    /// certificate and key, O `solo-node`) as this node's credentials.
    pub fn new(tls: &TlsFiles, node_cert: (&str, &str), pick: Pick) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(node_cert.0.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the node certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(node_cert.1.as_bytes())
            .map_err(|e| format!("the node key: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(crate::tls::ca_roots(tls)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the node certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            pick,
            open: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// Forwards `req` (which came to `which`) and returns the serving node's response,
    /// or the refusal.
    pub async fn forward(&self, which: Listener, req: Request<Body>) -> Response<Body> {
        self.forward_to(req, (self.pick)(which)).await
    }

    /// Forwards `req` to `up`, or refuses it with `up`'s failure (a node routing each
    /// request by its tenant picks `up` itself).
    pub async fn forward_to(
        &self,
        req: Request<Body>,
        up: Result<Upstream, Failure>,
    ) -> Response<Body> {
        let grpc = is_grpc(req.headers());
        let up = match up {
            Ok(up) => up,
            Err(failure) => return refused(grpc, failure),
        };
        let mut req = prepare(req, &up.addr);
        // A connection found closed before the request went out is opened again, once.
        for _ in 0..2 {
            let (mut sender, carried) = match self.upward(&up.addr).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(node = %up.node, addr = %up.addr, error = %e, "cannot reach the serving node");
                    return refused(grpc, up.unreachable);
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    metrics::counter!(m::CLUSTER_FORWARDED_REQUESTS, "outcome" => "forwarded")
                        .increment(1);
                    return resp.map(|body| {
                        Body::new(Ending {
                            inner: body,
                            grpc,
                            node: up.node.clone(),
                            ended: false,
                            _carried: carried,
                        })
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => {
                        tracing::debug!(node = %up.node, error = %e.error(), "the serving node went away during a request");
                        metrics::counter!(m::CLUSTER_FORWARDED_REQUESTS, "outcome" => "lost")
                            .increment(1);
                        return ApiError(owner_lost(&up.node)).into_response_for(grpc);
                    }
                },
            }
        }
        refused(grpc, up.unreachable)
    }

    /// A place for one request on an open connection to `addr`, or on a new one.
    async fn upward(&self, addr: &str) -> Result<(SendRequest<Body>, Carried), String> {
        if let Some(place) = self.reserve(addr) {
            return Ok(place);
        }
        self.not_failed_lately(addr)?;
        let _one = self.connecting.lock().await;
        if let Some(place) = self.reserve(addr) {
            return Ok(place);
        }
        self.not_failed_lately(addr)?;
        let opened = self.open_to(addr).await;
        match &opened {
            Ok(_) => self.failed.lock().remove(addr),
            Err(_) => self
                .failed
                .lock()
                .insert(addr.to_string(), std::time::Instant::now()),
        };
        opened
    }

    /// Refuses `addr` if reaching it failed less than [`REMEMBER_FAILURE`] ago.
    fn not_failed_lately(&self, addr: &str) -> Result<(), String> {
        match self.failed.lock().get(addr) {
            Some(at) if at.elapsed() < REMEMBER_FAILURE => {
                Err("it could not be reached a moment ago".into())
            }
            _ => Ok(()),
        }
    }

    /// A new connection to `addr`, with a place for one request on it.
    async fn open_to(&self, addr: &str) -> Result<(SendRequest<Body>, Carried), String> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect(name, tcp))
            .await
            .map_err(|_| "the TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "a forwarding connection ended");
            }
        });
        sender.ready().await.map_err(|e| e.to_string())?;
        let carrying = Arc::new(AtomicUsize::new(1));
        self.open
            .lock()
            .entry(addr.to_string())
            .or_default()
            .push(Upward {
                sender: sender.clone(),
                carrying: Arc::clone(&carrying),
            });
        Ok((sender, Carried(carrying)))
    }

    /// A place on an open connection to `addr` with room, if there is one.
    fn reserve(&self, addr: &str) -> Option<(SendRequest<Body>, Carried)> {
        let mut open = self.open.lock();
        let conns = open.entry(addr.to_string()).or_default();
        conns.retain(|u| !u.sender.is_closed());
        let u = conns
            .iter()
            .find(|u| u.carrying.load(Ordering::Relaxed) < STREAMS_PER_CONNECTION)?;
        u.carrying.fetch_add(1, Ordering::Relaxed);
        Some((u.sender.clone(), Carried(Arc::clone(&u.carrying))))
    }
}

/// Whether a request or response speaks gRPC.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// `req` as it goes out: HTTP/2 with the client's authority, without the headers of its
/// connection, naming the client (`auth::write_forwarded`, which also drops any such
/// header the client sent).
fn prepare(req: Request<Body>, addr: &str) -> Request<Body> {
    let conn = req.extensions().get::<Arc<ConnInfo>>().cloned();
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(ToString::to_string)
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| addr.to_string());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = Uri::builder()
        .scheme("https")
        .authority(authority.as_str())
        .path_and_query(path.as_str())
        .build()
        .or_else(|_| {
            Uri::builder()
                .scheme("https")
                .authority(addr)
                .path_and_query(path.as_str())
                .build()
        })
        .unwrap_or_default();
    parts.version = Version::HTTP_2;
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(&named) {
        parts.headers.remove(h);
    }
    if parts
        .headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        parts.headers.remove(header::TE);
    }
    crate::auth::write_forwarded(conn.as_deref(), &mut parts.headers);
    Request::from_parts(parts, body)
}

fn refused(grpc: bool, failure: Failure) -> Response<Body> {
    metrics::counter!(m::CLUSTER_FORWARDED_REQUESTS, "outcome" => "refused").increment(1);
    ApiError(failure).into_response_for(grpc)
}

/// What a client is told when the node serving its request went away meanwhile.
pub fn owner_lost(node: &str) -> Failure {
    let mut f = Failure::new(
        Code::Unavailable,
        "owner_lost",
        format!(
            "node {node}, which was serving this request, went away before it answered (the \
             request may or may not have taken effect); retry shortly"
        ),
    );
    f.retry_after = Some(1);
    f
}

/// A forwarded response's body; for gRPC, one cut short ends with `owner_lost` in its
/// trailers instead of an error.
struct Ending {
    inner: Incoming,
    grpc: bool,
    node: String,
    ended: bool,
    _carried: Carried,
}

impl hyper::body::Body for Ending {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) if self.grpc => {
                tracing::debug!(node = %self.node, error = %e, "a forwarded gRPC response was cut short");
                self.ended = true;
                let status = tonic::Status::from(ApiError(owner_lost(&self.node)));
                let mut trailers = HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_speaks_the_requests_codec() {
        let mut grpc = HeaderMap::new();
        grpc.insert(
            header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        assert!(is_grpc(&grpc) && !is_grpc(&HeaderMap::new()));
        let r = refused(true, owner_lost("a"));
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()[solo_proto::REASON_KEY], "owner_lost");
        let r = refused(false, owner_lost("a"));
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(r.headers().get("grpc-status").is_none());
    }

    #[test]
    fn a_request_goes_out_as_http2_without_its_connection_headers() {
        let info = Arc::new(ConnInfo {
            peer: Some(crate::tls::PeerIdentity {
                common_name: "alice".into(),
                admin: false,
                node: false,
            }),
            remote: "10.1.2.3:4444".parse().unwrap(),
        });
        let mut req = Request::builder()
            .uri("/v1/services?x=1")
            .header(header::HOST, "node-b:8062")
            .header(header::CONNECTION, "keep-alive, x-private")
            .header("x-private", "1")
            .header(header::TE, "gzip")
            .header(crate::auth::FORWARDED_PEER, "admin root")
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(info);
        let out = prepare(req, "127.0.0.1:8061");
        assert_eq!(out.version(), Version::HTTP_2);
        assert_eq!(out.uri().to_string(), "https://node-b:8062/v1/services?x=1");
        for gone in ["host", "connection", "x-private", "te"] {
            assert!(out.headers().get(gone).is_none(), "{gone}");
        }
        // The client's claim is replaced by what its connection showed.
        assert_eq!(out.headers()[crate::auth::FORWARDED_PEER], "tenant alice");
        assert_eq!(
            out.headers()[crate::auth::FORWARDED_REMOTE],
            "10.1.2.3:4444"
        );
        assert_eq!(out.headers()["authorization"], "Bearer t");

        // gRPC keeps `te: trailers`; a client without a certificate is named as none.
        let mut req = Request::builder()
            .uri("https://127.0.0.1:50062/solo.v1.SoloKernel/Health")
            .header(header::TE, "trailers")
            .header(crate::auth::FORWARDED_PEER, "admin root")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(Arc::new(ConnInfo {
            peer: None,
            remote: "127.0.0.1:1".parse().unwrap(),
        }));
        let out = prepare(req, "127.0.0.1:50061");
        assert_eq!(out.headers()[header::TE], "trailers");
        assert!(out.headers().get(crate::auth::FORWARDED_PEER).is_none());
        assert_eq!(out.uri().authority().unwrap().as_str(), "127.0.0.1:50062");
    }
}

/// Forwarding against a real HTTP/2 server over mutual TLS (the serving node's side is a
/// bare hyper server here: what it sees, and what happens when it goes away).
#[cfg(test)]
pub(crate) mod wire;
