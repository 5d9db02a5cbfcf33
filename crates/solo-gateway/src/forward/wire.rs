//! Forwarding on the wire: a real HTTP/2 serving node over mutual TLS, and requests
//! forwarded to it, shared with the routing tests.

use std::convert::Infallible;

use http_body_util::{BodyExt, StreamBody};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::pki::{Ca, CertPaths};

/// A serving node: counts its connections, echoes who a request names, holds
/// `/hold` until released, never answers `/hang`, and starts `/cut`'s body but never
/// finishes it. `kill` drops every connection, as a process dying would.
pub(crate) struct Serving {
    pub(crate) addr: String,
    connections: Arc<AtomicUsize>,
    pub(crate) requests: Arc<AtomicUsize>,
    release: Arc<Notify>,
    kill: tokio_util::sync::CancellationToken,
}

pub(crate) async fn serving(files: &TlsFiles) -> Serving {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = TlsAcceptor::from(crate::tls::server_config(files).unwrap());
    let s = Serving {
        addr,
        connections: Arc::default(),
        requests: Arc::default(),
        release: Arc::new(Notify::new()),
        kill: tokio_util::sync::CancellationToken::new(),
    };
    let (connections, requests, release, kill) = (
        Arc::clone(&s.connections),
        Arc::clone(&s.requests),
        Arc::clone(&s.release),
        s.kill.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let node = crate::tls::peer_identity(tls.get_ref().1.peer_certificates());
            assert!(
                node.is_some_and(|n| n.node),
                "the forwarder presents a node certificate"
            );
            connections.fetch_add(1, Ordering::SeqCst);
            let (requests, release, kill) =
                (Arc::clone(&requests), Arc::clone(&release), kill.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (requests, release) = (Arc::clone(&requests), Arc::clone(&release));
                    async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let named = req
                            .headers()
                            .get(crate::auth::FORWARDED_PEER)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        match req.uri().path() {
                            "/hold" => release.notified().await,
                            "/hang" => std::future::pending::<()>().await,
                            "/cut" => {
                                let (tx, rx) = mpsc::channel::<
                                    Result<Frame<hyper::body::Bytes>, Infallible>,
                                >(1);
                                tx.send(Ok(Frame::data("part".into()))).await.unwrap();
                                std::mem::forget(tx);
                                let body = Body::new(StreamBody::new(
                                    tokio_stream::wrappers::ReceiverStream::new(rx),
                                ));
                                return Ok::<_, Infallible>(
                                    Response::builder()
                                        .header(header::CONTENT_TYPE, "application/grpc")
                                        .body(body)
                                        .unwrap(),
                                );
                            }
                            _ => {}
                        }
                        Ok(Response::new(Body::from(named)))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::select! {
                    _ = conn => {}
                    () = kill.cancelled() => {}
                }
            });
        }
    });
    s
}

pub(crate) fn files_and_node() -> (tempfile::TempDir, TlsFiles, (String, String)) {
    let d = tempfile::tempdir().unwrap();
    crate::pki::init(d.path(), &[]).unwrap();
    let paths = CertPaths::new(d.path());
    let files = TlsFiles::load(&paths).unwrap();
    let node = Ca::load(&paths).unwrap().issue_node("node-b").unwrap();
    (d, files, node)
}

pub(crate) fn request(path: &str, grpc: bool) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if grpc {
        b = b.header(header::CONTENT_TYPE, "application/grpc");
    }
    let mut req = b.body(Body::empty()).unwrap();
    req.extensions_mut().insert(Arc::new(ConnInfo {
        peer: Some(crate::tls::PeerIdentity {
            common_name: "alice".into(),
            admin: false,
            node: false,
        }),
        remote: "127.0.0.1:9".parse().unwrap(),
    }));
    req
}

pub(crate) fn to(addr: &str) -> Pick {
    let addr = addr.to_string();
    Arc::new(move |_| {
        Ok(Upstream {
            node: "a".into(),
            addr: addr.clone(),
            unreachable: Failure::new(Code::Unavailable, "no_active_node", "a is away"),
        })
    })
}

pub(crate) async fn text(r: Response<Body>) -> String {
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_connections_until_one_is_full() {
    let (_d, files, node) = files_and_node();
    let up = serving(&files).await;
    let f = Arc::new(Forwarding::new(&files, (&node.0, &node.1), to(&up.addr)).unwrap());
    let r = f.forward(Listener::Http, request("/", false)).await;
    assert_eq!(text(r).await, "tenant alice");
    // 300 requests held at once take a second connection, not 300.
    let held: Vec<_> = (0..300)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.forward(Listener::Http, request("/hold", false)).await })
        })
        .collect();
    while up.requests.load(Ordering::SeqCst) < 301 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    up.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().status(), 200);
    }
    // Their places are given back: the next request reuses a connection.
    let r = f.forward(Listener::Http, request("/", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_node_that_goes_away_is_owner_lost_and_one_not_there_is_refused() {
    let (_d, files, node) = files_and_node();
    let up = serving(&files).await;
    let f = Arc::new(Forwarding::new(&files, (&node.0, &node.1), to(&up.addr)).unwrap());
    let hang = {
        let f = Arc::clone(&f);
        tokio::spawn(async move { f.forward(Listener::Grpc, request("/hang", true)).await })
    };
    let cut = f.forward(Listener::Grpc, request("/cut", true)).await;
    assert_eq!(cut.status(), 200);
    while up.requests.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.kill.cancel();
    // Not answered yet: a trailers-only status.
    let r = hang.await.unwrap();
    assert_eq!(r.headers()["grpc-status"], "14");
    assert_eq!(r.headers()[solo_proto::REASON_KEY], "owner_lost");
    // Cut short: the body ends with the status in its trailers.
    let done = cut.into_body().collect().await.unwrap();
    let trailers = done.trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "14");
    assert_eq!(done.to_bytes(), "part");

    // Nobody to forward to, or nobody listening: refused, nothing sent.
    let nobody: Pick = Arc::new(|_| Err(owner_lost("z")));
    let f = Forwarding::new(&files, (&node.0, &node.1), nobody).unwrap();
    let r = f.forward(Listener::Http, request("/", false)).await;
    assert_eq!(r.status(), 503);
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    let f = Forwarding::new(&files, (&node.0, &node.1), to(&gone)).unwrap();
    let r = f.forward(Listener::Http, request("/", false)).await;
    assert_eq!(r.status(), 503);
    assert!(text(r).await.contains("no_active_node"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_fails_requests_at_once_for_a_moment() {
    let (_d, files, node) = files_and_node();
    // Takes connections (the kernel's backlog) and never speaks TLS: a paused node.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap().to_string();
    let f = Arc::new(Forwarding::new(&files, (&node.0, &node.1), to(&addr)).unwrap());
    let started = std::time::Instant::now();
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.forward(Listener::Http, request("/", false)).await })
        })
        .collect();
    for w in waiting {
        assert_eq!(w.await.unwrap().status(), 503);
    }
    // One handshake timed out (2 s); the four queued behind it did not wait their own.
    let took = started.elapsed();
    assert!(took < CONNECT_TIMEOUT * 2, "{took:?}");
    // A moment later, the node is tried again.
    tokio::time::sleep(REMEMBER_FAILURE).await;
    let started = std::time::Instant::now();
    let r = f.forward(Listener::Http, request("/", false)).await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() >= CONNECT_TIMEOUT, "tried again");
    drop(mute);
}
