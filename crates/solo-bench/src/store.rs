//! Store scenario: durable appends/s and latency with 1, 8 and 64 concurrent appenders,
//! beside raw redb writing the same events with one fsync'd commit per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use serde_json::json;
use solo_store::{EventLog, RedbStore};
use solo_types::{NewEvent, TenantId};

use crate::report;
use crate::stats::{Samples, r2};

const RAW: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

fn event(tenant: &TenantId, n: u64) -> NewEvent {
    NewEvent::tenant("bench_event", tenant).payload(json!({ "n": n, "note": "a small payload" }))
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    for appenders in [1usize, 8, 64] {
        let (solo_rate, mut solo_lat) = rt.block_on(solo_appends(appenders, secs))?;
        let (raw_rate, mut raw_lat) = raw_redb(appenders, secs)?;
        report(&json!({
            "scenario": "store.append",
            "appenders": appenders,
            "events_per_sec": solo_rate.round(),
            "p50_us": r2(solo_lat.quantile_us(0.5)),
            "p99_us": r2(solo_lat.quantile_us(0.99)),
            "baseline": {
                "name": "raw redb, one fsync'd commit per event",
                "events_per_sec": raw_rate.round(),
                "p50_us": r2(raw_lat.quantile_us(0.5)),
                "p99_us": r2(raw_lat.quantile_us(0.99)),
            },
            "ratio": r2(solo_rate / raw_rate),
        }));
    }
    Ok(())
}

async fn solo_appends(appenders: usize, secs: Duration) -> anyhow::Result<(f64, Samples)> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(dir.path().join("solo.redb"))?;
    appends(Arc::new(store), appenders, secs).await
}

/// Appends one event at a time from `appenders` tasks for `secs`: events/s and latencies.
pub async fn appends(
    store: Arc<dyn EventLog>,
    appenders: usize,
    secs: Duration,
) -> anyhow::Result<(f64, Samples)> {
    let tenant = TenantId::new("bench")?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::default();
            let mut n = 0u64;
            while start.elapsed() < secs {
                let t = Instant::now();
                store
                    .append(vec![event(&tenant, n * 1000 + a as u64)])
                    .await?;
                lat.push(t.elapsed());
                n += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    Ok((all.len() as f64 / elapsed, all))
}

fn raw_redb(appenders: usize, secs: Duration) -> anyhow::Result<(f64, Samples)> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(Database::create(dir.path().join("raw.redb"))?);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let tenant = TenantId::new("bench")?;
    let start = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..appenders {
        let db = Arc::clone(&db);
        let next = Arc::clone(&next);
        let tenant = tenant.clone();
        threads.push(std::thread::spawn(move || {
            let mut lat = Samples::default();
            while start.elapsed() < secs {
                let t = Instant::now();
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(RAW)?;
                    let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let bytes = serde_json::to_vec(&event(&tenant, id).payload)?;
                    table.insert(id, bytes.as_slice())?;
                }
                txn.commit()?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Samples::default();
    for t in threads {
        all.extend(
            t.join()
                .map_err(|_| anyhow::anyhow!("raw redb thread panicked"))??,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    Ok((all.len() as f64 / elapsed, all))
}
