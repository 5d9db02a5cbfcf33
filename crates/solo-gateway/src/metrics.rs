//! The process-wide Prometheus recorder: installed once, rendered by `/metrics`, the
//! `Metrics` RPC and the optional plaintext loopback listener (the gateway's, or before
//! there is a gateway, a cluster standby's: [`serve_plaintext`]).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::capped::{self, Accepted};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram buckets for every `*_seconds` metric: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How often recorded histogram samples are folded into their buckets when nobody
/// scrapes: until then the recorder keeps every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder if nothing is installed yet, with a thread that folds histogram
/// samples into their buckets every few seconds (without it, a server nobody scrapes
/// keeps every sample and its memory grows with its traffic). When another recorder got
/// there first (an embedding program, a test), rendering returns an empty page.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .ok()?;
        let handle = builder.install_recorder().ok()?;
        let h = handle.clone();
        let upkeep = std::thread::Builder::new()
            .name("solo-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    h.run_upkeep();
                }
            });
        if let Err(e) = upkeep {
            tracing::warn!(error = %e, "could not start the metrics upkeep thread");
        }
        Some(handle)
    });
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(h)) => {
            h.run_upkeep();
            h.render()
        }
        _ => String::new(),
    }
}

/// The router of the plaintext loopback listener: `GET /metrics` only.
pub(crate) fn plaintext_router() -> Router {
    Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                render(),
            )
        }),
    )
}

/// Connections [`serve_plaintext`] serves at once; more are closed at once.
const PLAINTEXT_CONNECTIONS: usize = 16;
/// How long one of its connections may last, whatever it does.
const PLAINTEXT_CONNECTION_TIME: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` in plain text on `listener` until `stop`, for a process that has
/// no gateway yet (a cluster's standby): HTTP/1 only, at most 16 connections at once,
/// each closed after 10 s whatever it does, so a client that connects and says nothing
/// holds a slot only that long. Installs the recorder if nothing has.
pub async fn serve_plaintext(listener: TcpListener, stop: CancellationToken) {
    install();
    serve_limited(
        listener,
        stop,
        PLAINTEXT_CONNECTIONS,
        PLAINTEXT_CONNECTION_TIME,
    )
    .await;
}

async fn serve_limited(
    listener: TcpListener,
    stop: CancellationToken,
    connections: usize,
    each_for: Duration,
) {
    let limit = Arc::new(Semaphore::new(connections));
    let router = plaintext_router();
    loop {
        let (stream, permit) = match capped::accept(&listener, &limit, &stop, "metrics").await {
            Accepted::Conn(stream, permit) => (stream, permit),
            Accepted::OverCap => continue,
            Accepted::Stopped => return,
        };
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::time::timeout(each_for, conn) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Whether the server closes `s` within `within` (reads end of stream).
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(within, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn the_plaintext_listener_answers_and_cuts_silent_and_surplus_clients() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let each_for = Duration::from_millis(400);
        let server = tokio::spawn(serve_limited(listener, stop.clone(), 2, each_for));
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));

        // Two clients that connect and say nothing hold both slots; a third is closed
        // at once, and the silent two are cut once their time is up.
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_millis(200)).await);
        for s in &mut silent {
            assert!(
                !closed_within(s, Duration::from_millis(20)).await,
                "cut too soon"
            );
        }
        for s in &mut silent {
            assert!(
                closed_within(s, each_for * 3).await,
                "a silent client kept its slot"
            );
        }
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200"));

        // Stopped: the address is given up.
        stop.cancel();
        server.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
