//! Cluster scenario: durable appends/s and latency on the replicated log (three NATS
//! servers on loopback, 3 replicas, every write synced) beside the embedded store in the
//! same run, with 1, 8 and 64 concurrent appenders; and beside a node whose local view
//! syncs each commit too (`sync_view`, what every node did before the view stopped
//! syncing), on a stream of its own over the same servers. Then compaction: the time to
//! compact that log, and a new node's start from the copy against replaying the log.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use solo_cluster::testing::NatsCluster;
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_store::{EventLog, RedbStore};

use crate::report;
use crate::stats::r2;
use crate::store::appends;

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let nats = NatsCluster::start(3, true);
    let dir = tempfile::tempdir()?;
    let node = |name: &str, stream: &str, sync_view: bool| {
        let mut opts = ClusterOptions::new(
            nats.client_urls(),
            nats.monitor_urls(),
            dir.path().join(name),
        );
        opts.stream = stream.into();
        opts.sync_view = sync_view;
        rt.block_on(JetStreamStore::open(opts)).map(Arc::new)
    };
    let cluster = node("solo", "SOLO", false)?;
    let synced = node("synced", "SYNCED", true)?;
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

    // Compaction: a new node starting from the latest copy of a view, against one
    // replaying the whole log, on the log the runs above wrote.
    let entries = cluster.applied_sequence();
    let timed = |name: &str| -> anyhow::Result<f64> {
        let started = std::time::Instant::now();
        let joined = node(name, "SOLO", false)?;
        anyhow::ensure!(
            joined.last_id() == cluster.last_id(),
            "the new node caught up"
        );
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let replayed_ms = timed("replaying")?;
    let started = std::time::Instant::now();
    let done = rt.block_on(cluster.compact(u64::MAX))?;
    let compact_ms = started.elapsed().as_secs_f64() * 1000.0;
    let from_copy_ms = timed("from-copy")?;
    report(&json!({
        "scenario": "cluster.compact",
        "log_entries": entries,
        "events": cluster.last_id(),
        "view_bytes": done.bytes,
        "compact_ms": r2(compact_ms),
        "start_from_copy_ms": r2(from_copy_ms),
        "baseline": {
            "name": "a new node replaying the whole log",
            "start_ms": r2(replayed_ms),
        },
        "ratio": r2(from_copy_ms / replayed_ms),
    }));
    Ok(())
}
