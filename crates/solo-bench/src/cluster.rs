//! Cluster scenario: durable appends/s and latency on the replicated log (three NATS
//! servers on loopback, 3 replicas, every write synced) beside the embedded store in the
//! same run, with 1, 8 and 64 concurrent appenders; and beside a node whose local view
//! syncs each commit too (`sync_view`, what every node did before the view stopped
//! syncing), on a stream of its own over the same servers.

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
    let node = |name: &str, sync_view: bool| {
        let mut opts = ClusterOptions::new(
            nats.client_urls(),
            nats.monitor_urls(),
            dir.path().join(name),
        );
        opts.stream = name.to_ascii_uppercase();
        opts.sync_view = sync_view;
        rt.block_on(JetStreamStore::open(opts)).map(Arc::new)
    };
    let cluster = node("solo", false)?;
    let synced = node("synced", true)?;
    for appenders in [1usize, 8, 64] {
        let (rate, mut lat) = rt.block_on(appends(cluster.clone(), appenders, secs))?;
        let (with_sync, mut sync_lat) = rt.block_on(appends(synced.clone(), appenders, secs))?;
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
            "view_synced": {
                "name": "the same, the node's view syncing each commit too",
                "events_per_sec": with_sync.round(),
                "p50_us": r2(sync_lat.quantile_us(0.5)),
                "p99_us": r2(sync_lat.quantile_us(0.99)),
                "ratio": r2(rate / with_sync),
            },
        }));
    }
    Ok(())
}
