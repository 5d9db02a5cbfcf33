//! The process-wide Prometheus recorder: installed once, rendered by `/metrics`, the
//! `Metrics` RPC and the gateway's optional plaintext loopback listener (a cluster
//! standby's too, while its gateway forwards).

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
