//! An HTTP(S) server on 127.0.0.1 port 0 for tests and benchmarks of egress: known
//! answers by path, and a record of the headers each request arrived with (what a
//! receiving API would see). It stops when the runtime it was started on stops.
//!
//! Paths: `/hello` (`hello`), `/json` (`{"ok":true,"n":1}`), `/echo` (the request body),
//! `/to?URL` (a 302 to URL), `/big` (2 MiB), `/forever` (a byte every 50 ms, never
//! ending); anything else 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the server saw of one request: method, path and headers.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// A running test server.
#[derive(Clone)]
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// Starts an HTTP server, or HTTPS with `tls`.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (tls, record) = (tls.clone(), Arc::clone(&record));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let record = Arc::clone(&record);
                        async move { Ok::<_, Infallible>(answer(req, &record).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => drop(http.serve_connection(TokioIo::new(tcp), svc).await),
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                drop(http.serve_connection(TokioIo::new(s), svc).await);
                            }
                        }
                    }
                });
            }
        });
        Ok(Self { addr, seen })
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    seen: &parking_lot::Mutex<Vec<Seen>>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    seen.lock().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let status = |code: u16, body: Body| {
        let mut r = Response::new(body);
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
        r
    };
    match path.as_str() {
        "/hello" => Response::new(full("hello")),
        "/json" => {
            let mut r = Response::new(full(r#"{"ok":true,"n":1}"#));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::new(full(body))
        }
        "/to" => {
            let mut r = status(302, full(""));
            if let Ok(v) = hyper::header::HeaderValue::from_str(&query) {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            r
        }
        "/big" => Response::new(full(vec![b'x'; 2 << 20])),
        "/forever" => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                while tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            Response::new(StreamBody::new(stream).boxed())
        }
        _ => status(404, full("")),
    }
}

/// A TLS configuration for a server at 127.0.0.1 whose certificate `ca` signed; `ca` is
/// what a client must trust (PEM, for a configuration file).
pub fn tls_for_localhost()
-> Result<(Arc<rustls::ServerConfig>, CertificateDer<'static>, String), String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(e)?;
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(cfg), ca_cert.der().clone(), ca_cert.pem()))
}
