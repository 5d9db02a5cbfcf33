//! Solo's gateway: the operation table (`ops.rs`: every operation written once, with
//! authentication and admission) and its faces, gRPC (`solo.v1.SoloKernel`) and
//! HTTPS/JSON, both codecs on rustls listeners where the client certificate decides the
//! tenant.
//!
//! The listeners are bound once, before the kernel starts, so port 0 resolves to one
//! stable address the server can print. Accepting runs as the `gateway` system
//! component: if the supervisor restarts it, it accepts again on the same sockets and
//! the connections already open carry on. Connections are drained only when the whole
//! server stops ([`Gateway::drain`]). How many may be open, and how long one may stay
//! silent, is `conns.rs`. A gateway without a kernel (a cluster's standby) may instead
//! forward every request to another node (`forward.rs`, [`Gateway::forward`]).

pub mod auth;
mod conns;
pub mod error;
pub mod forward;
pub mod grpc;
mod mcp;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod rest;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use solo_kernel::{ComponentBody, ComponentCtx, Kernel};
use solo_types::metric_names as m;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use auth::{Asker, ConnInfo, Who};
pub use conns::ConnLimits;
pub use error::ApiError;
pub use ops::Ops;
pub use tls::TlsFiles;

/// What the gateway listens on and how much it accepts.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// A plaintext Prometheus listener; must be a loopback address.
    pub metrics_addr: Option<SocketAddr>,
    /// The largest request body (REST) or message (gRPC) accepted.
    pub max_request_bytes: usize,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub handshake_timeout: Duration,
    /// How many connections may be open, and how long one may stay silent.
    pub connections: ConnLimits,
    /// `Host` values `/mcp` accepts (DNS-rebinding protection).
    pub mcp_allowed_hosts: Vec<String>,
    /// `Origin` values `/mcp` accepts; a request with any other `Origin` is refused.
    pub mcp_allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: None,
            max_request_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(10),
            connections: ConnLimits::default(),
            mcp_allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            mcp_allowed_origins: Vec::new(),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "metrics_addr {0} is not a loopback address; the plaintext metrics listener is loopback only"
    )]
    MetricsNotLoopback(SocketAddr),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The bound listeners, waiting for the kernel.
pub struct Gateway {
    grpc: Arc<TcpListener>,
    http: Arc<TcpListener>,
    metrics: Option<Arc<TcpListener>>,
    acceptor: TlsAcceptor,
    config: GatewayConfig,
    ops: watch::Sender<Option<Arc<Ops>>>,
    /// Cancelled by [`Gateway::drain`]: every open connection finishes what it is doing
    /// and closes.
    drain: CancellationToken,
    connections: TaskTracker,
    table: Arc<conns::Table>,
    /// Routing by tenant, on a cluster whose nodes serve the tenants placed on them.
    routing: std::sync::OnceLock<route::Routing>,
}

impl Gateway {
    /// Binds the listeners (so their addresses are known) without serving yet.
    pub async fn bind(config: GatewayConfig, tls: &TlsFiles) -> Result<Arc<Self>, GatewayError> {
        let server_config = tls::server_config(tls).map_err(GatewayError::Tls)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map(Arc::new)
                .map_err(|source| GatewayError::Bind { addr, source })
        };
        let grpc = bind(config.grpc_addr).await?;
        let http = bind(config.http_addr).await?;
        let metrics = match config.metrics_addr {
            Some(addr) if !addr.ip().is_loopback() => {
                return Err(GatewayError::MetricsNotLoopback(addr));
            }
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        crate::metrics::install();
        Ok(Arc::new(Self {
            grpc,
            http,
            metrics,
            acceptor: TlsAcceptor::from(server_config),
            ops: watch::channel(None).0,
            drain: CancellationToken::new(),
            connections: TaskTracker::new(),
            table: conns::Table::new(config.connections),
            config,
            routing: std::sync::OnceLock::new(),
        }))
    }

    /// The bound gRPC address (with the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The body of the `gateway` system component: accepts on every listener until
    /// cancelled. Requests are served once [`Gateway::attach`] has handed over the kernel.
    pub fn component(self: &Arc<Self>) -> ComponentBody {
        let me = Arc::clone(self);
        Arc::new(move |ctx: ComponentCtx| {
            let me = Arc::clone(&me);
            Box::pin(async move { me.accept_all(ctx.shutdown).await })
        })
    }

    /// Routes each request by its tenant from now on ([`route`]): set once, before
    /// [`Gateway::attach`]; false if it was set already.
    pub fn route_by_tenant(&self, routing: route::Routing) -> bool {
        self.routing.set(routing).is_ok()
    }

    /// Hands the started kernel to the gateway: requests are served from now on.
    pub fn attach(&self, kernel: Kernel) {
        let ops = Ops::new(kernel, self.drain.clone());
        self.ops.send_replace(Some(Arc::new(ops)));
    }

    /// Stops every open connection gracefully (HTTP/2 GOAWAY, streams told to end) and
    /// waits up to `grace` for them to close.
    pub async fn drain(&self, grace: Duration) {
        self.drain.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections.len(),
                "connections still open after the grace period"
            );
        }
    }

    async fn accept_all(self: Arc<Self>, stop: CancellationToken) -> Result<(), String> {
        let mut rx = self.ops.subscribe();
        let ops = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = rx.wait_for(Option::is_some) => match r {
                Ok(ops) => ops.clone(),
                Err(_) => return Ok(()),
            },
        };
        let Some(ops) = ops else { return Ok(()) };
        let max = self.config.max_request_bytes;
        let grpc_router = grpc::router(Arc::clone(&ops), max);
        let mcp_options = solo_mcp::HttpOptions {
            allowed_hosts: self.config.mcp_allowed_hosts.clone(),
            allowed_origins: self.config.mcp_allowed_origins.clone(),
            // The arguments may be as large as any request, plus the JSON-RPC envelope.
            max_body_bytes: max.saturating_add(64 << 10),
            stopping: self.drain.clone(),
        };
        let mcp_router = mcp::router(Arc::clone(&ops), mcp_options, max);
        let rest_router = rest::router(ops, max).merge(mcp_router);
        let routing = self.routing.get();
        let routers = (
            route::routed(grpc_router, forward::Listener::Grpc, routing),
            route::routed(rest_router, forward::Listener::Http, routing),
        );
        let mut loops = self.accept_on_every_listener(routers, &stop, &CancellationToken::new());
        // Any loop ending before `stop` is a crash of the component, unless the server
        // is draining (the loops stop accepting then, and the component waits to be
        // stopped).
        let ended = tokio::select! {
            _ = stop.cancelled() => {
                loops.shutdown().await;
                return Ok(());
            }
            r = loops.join_next() => r,
        };
        if self.drain.is_cancelled() {
            stop.cancelled().await;
            loops.shutdown().await;
            return Ok(());
        }
        match ended {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(format!("an accept loop failed: {e}")),
            _ => Err("an accept loop ended".into()),
        }
    }

    /// Accept loops on the gRPC and HTTPS listeners with `routers`, and on the metrics
    /// listener with its page, until `stop`; their connections go away when `go` is
    /// cancelled.
    fn accept_on_every_listener(
        self: &Arc<Self>,
        (grpc, http): (Router, Router),
        stop: &CancellationToken,
        go: &CancellationToken,
    ) -> tokio::task::JoinSet<Result<(), String>> {
        let mut loops = tokio::task::JoinSet::new();
        let mut spawn = |l: &Arc<TcpListener>, router: Router, tls: bool| {
            let tokens = (stop.clone(), go.clone());
            loops.spawn(Arc::clone(self).accept_loop(Arc::clone(l), router, tokens, tls));
        };
        spawn(&self.grpc, grpc, true);
        spawn(&self.http, http, true);
        if let Some(l) = &self.metrics {
            spawn(l, crate::metrics::plaintext_router(), false);
        }
        loops
    }

    /// Serves every request by forwarding it with `forwarding` (a cluster's standby),
    /// until [`Forwarded::stop`]; the metrics listener serves this node's own metrics
    /// meanwhile. Needs no kernel: the connections' limits and timeouts are the
    /// gateway's own.
    pub fn forward(self: &Arc<Self>, forwarding: Arc<forward::Forwarding>) -> Forwarded {
        let stop = CancellationToken::new();
        let go = CancellationToken::new();
        let via = |which: forward::Listener| {
            let f = Arc::clone(&forwarding);
            Router::new().fallback(move |req: axum::extract::Request| {
                let f = Arc::clone(&f);
                async move { f.forward(which, req).await }
            })
        };
        let routers = (via(forward::Listener::Grpc), via(forward::Listener::Http));
        let loops = self.accept_on_every_listener(routers, &stop, &go);
        Forwarded { stop, go, loops }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: Arc<TcpListener>,
        router: Router,
        (stop, go): (CancellationToken, CancellationToken),
        tls: bool,
    ) -> Result<(), String> {
        let mut failures = conns::AcceptFailures::new(Duration::from_secs(10));
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.drain.cancelled() => return Ok(()),
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, remote)) => {
                    // At the cap with nothing that can give way: the newcomer is closed.
                    let Some(slot) = self.table.admit() else {
                        drop(stream);
                        continue;
                    };
                    let me = Arc::clone(&self);
                    let router = router.clone();
                    let go = go.clone();
                    self.connections.spawn(async move {
                        if tls {
                            me.serve_tls(stream, remote, router, slot, go).await;
                        } else {
                            let info = ConnInfo { peer: None, remote };
                            slot.handshaken(false);
                            me.serve_http(TokioIo::new(stream), info, router, slot, go)
                                .await;
                        }
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning, and
                // say so once per interval rather than once per failure.
                Err(e) => {
                    failures.record(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_tls(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        router: Router,
        slot: conns::Slot,
        go: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let handshake = tokio::select! {
            _ = self.drain.cancelled() => return,
            _ = slot.evicted().cancelled() => return,
            r = tokio::time::timeout(self.config.handshake_timeout, self.acceptor.accept(stream)) => r,
        };
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                ::metrics::counter!(m::GATEWAY_HANDSHAKE_FAILURES).increment(1);
                tracing::debug!(%remote, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                ::metrics::counter!(m::GATEWAY_HANDSHAKE_FAILURES).increment(1);
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        let peer = tls::peer_identity(tls.get_ref().1.peer_certificates());
        slot.handshaken(peer.is_some());
        let info = ConnInfo { peer, remote };
        let open = ::metrics::gauge!(m::GATEWAY_CONNECTIONS);
        open.increment(1.0);
        self.serve_http(TokioIo::new(tls), info, router, slot, go)
            .await;
        open.decrement(1.0);
    }

    /// Serves one connection's requests with `router`, each with the [`ConnInfo`] it
    /// stands for (`auth::on_behalf`: the client a forwarding node names); told to go
    /// away (gracefully) when `go` is cancelled.
    async fn serve_http<I>(
        &self,
        io: TokioIo<I>,
        info: ConnInfo,
        router: Router,
        slot: conns::Slot,
        go: CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = Arc::new(info);
        let slot = Arc::new(slot);
        let tracked = Arc::clone(&slot);
        let from_node = info.peer.as_ref().is_some_and(|p| p.node);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let info = auth::on_behalf(&info, req.headers_mut());
            req.extensions_mut().insert(info);
            if from_node {
                req.extensions_mut().insert(route::FromNode);
            }
            let router = router.clone();
            // The request is in flight until its response body is dropped, so a stream
            // (a watch, a log tail) keeps its connection open however quiet it is.
            let in_flight = tracked.begin();
            async move {
                let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                Ok::<_, Infallible>(resp.map(|body| {
                    axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
                        let _held = &in_flight;
                        f
                    }))
                }))
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            why = slot.watch() => {
                why.count();
                // A silent or evicted connection is cut; an idle one is told to go
                // (HTTP/2 GOAWAY, no more HTTP/1 keep-alive) and given a moment.
                if why == conns::Closing::Idle {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                }
            }
            _ = self.drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            () = go.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
            }
        }
    }
}

/// A gateway forwarding its requests ([`Gateway::forward`]).
pub struct Forwarded {
    stop: CancellationToken,
    go: CancellationToken,
    loops: tokio::task::JoinSet<Result<(), String>>,
}

impl Forwarded {
    /// Stops accepting (the listeners stay bound, for the gateway to serve on) and tells
    /// every forwarding connection to go away once its requests are done (HTTP/2 GOAWAY;
    /// at most 5 s), so clients come back to the node's own service.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.go.cancel();
        while self.loops.join_next().await.is_some() {}
    }
}
