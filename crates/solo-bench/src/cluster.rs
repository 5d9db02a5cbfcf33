//! Cluster scenario: durable appends/s and latency on the replicated log (three NATS
//! servers on loopback, 3 replicas, every write synced) beside the embedded store in the
//! same run, with 1, 8 and 64 concurrent appenders.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use solo_cluster::testing::NatsCluster;
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_store::RedbStore;

use crate::report;
use crate::stats::r2;
use crate::store::appends;

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let nats = NatsCluster::start(3, true);
    let dir = tempfile::tempdir()?;
    let cluster = rt.block_on(JetStreamStore::open(ClusterOptions::new(
        nats.client_urls(),
        nats.monitor_urls(),
        dir.path().join("node"),
    )))?;
    let cluster = Arc::new(cluster);
    for appenders in [1usize, 8, 64] {
        let (rate, mut lat) = rt.block_on(appends(cluster.clone(), appenders, secs))?;
        let embedded = RedbStore::open(dir.path().join(format!("embedded-{appenders}.redb")))?;
        let (base, mut base_lat) = rt.block_on(appends(Arc::new(embedded), appenders, secs))?;
        report(&json!({
            "scenario": "cluster.append",
            "appenders": appenders,
            "events_per_sec": rate.round(),
            "p50_us": r2(lat.quantile_us(0.5)),
            "p99_us": r2(lat.quantile_us(0.99)),
            "baseline": {
                "name": "the embedded store (redb, one node)",
                "events_per_sec": base.round(),
                "p50_us": r2(base_lat.quantile_us(0.5)),
                "p99_us": r2(base_lat.quantile_us(0.99)),
            },
            "ratio": r2(rate / base),
        }));
    }
    Ok(())
}
