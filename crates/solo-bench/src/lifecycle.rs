//! Lifecycle scenario: hot swap latency with state carried (beside a `replace`, kill and
//! deploy, in the same run), recovery of 1,000 services at start (beside a start on an
//! empty store) and shutdown with 1,000 services (beside a shutdown with none). The
//! noisy neighbour has a scenario of its own (`noisy`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_kernel::{
    Caller, DeployRequest, Kernel, KernelConfig, KernelOptions, SwapMode, SwapRequest,
};
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{RedbStore, Store, StoreOptions};
use solo_types::{Format, ServiceId, TenantId};

use crate::stats::{Samples, r2};
use crate::{kerr, on_worker, report};

fn sid(s: &str) -> anyhow::Result<ServiceId> {
    Ok(ServiceId::new(s)?)
}

fn config() -> KernelConfig {
    let mut c = KernelConfig::default();
    c.limits.max_services_per_tenant = 20_000;
    c.limits.max_memory_mb_per_tenant = 1 << 30;
    c
}

struct Node {
    kernel: Kernel,
    store: Arc<RedbStore>,
}

/// A kernel on `dir`, with a fresh sandbox on the same artifact cache (as a new
/// process would have).
async fn start(dir: &std::path::Path, config: KernelConfig) -> anyhow::Result<Node> {
    let store = Arc::new(RedbStore::open_with(
        dir.join("solo.redb"),
        StoreOptions::default(),
    )?);
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 2500,
        cache_dir: Some(dir.join("cache")),
        ..SandboxConfig::default()
    })?;
    let dyn_store: Arc<dyn Store> = store.clone();
    let kernel = Kernel::start(dyn_store, sandbox, config, KernelOptions::default()).await?;
    Ok(Node { kernel, store })
}

async fn stop(n: Node) {
    n.kernel.shutdown().await;
    n.store.close().await;
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    on_worker(async move {
        swaps(secs).await?;
        recovery_and_shutdown().await
    })
}

async fn swaps(secs: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start(dir.path(), config()).await?;
    let k = &n.kernel;
    let a = Caller::tenant(TenantId::new("bench")?);
    let id = sid("counter")?;
    let wasm: Arc<[u8]> = solo_guests::wasm("counter").into();
    let js: Arc<[u8]> = solo_guests::js("counter").into_bytes().into();
    k.deploy(
        &a,
        DeployRequest::new(id.clone(), Format::Wasm, Arc::clone(&wasm)),
    )
    .await
    .map_err(kerr)?;
    k.call(
        &a,
        &id,
        r#"{"op":"inc","by":41}"#,
        Some(Duration::from_secs(5)),
    )
    .await
    .map_err(kerr)?;
    let versions = [(Format::Js, js), (Format::Wasm, wasm)];
    let run = |mode: SwapMode| {
        let (k, a, id, versions) = (k.clone(), a.clone(), id.clone(), versions.clone());
        async move {
            let mut lat = Samples::default();
            let t0 = Instant::now();
            let mut i = 0;
            while t0.elapsed() < secs.min(Duration::from_secs(3)) {
                let (format, code) = &versions[i % 2];
                let t = Instant::now();
                let out = k
                    .hot_swap(
                        &a,
                        SwapRequest {
                            service_id: id.clone(),
                            format: *format,
                            code: Arc::clone(code),
                            mode,
                            rollback_window: Some(Duration::ZERO),
                        },
                    )
                    .await
                    .map_err(kerr)?;
                lat.push(t.elapsed());
                anyhow::ensure!(mode == SwapMode::Replace || out.state_carried);
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }
    };
    let mut swap = run(SwapMode::Swap).await?;
    let value = k
        .call(&a, &id, r#"{"op":"get"}"#, Some(Duration::from_secs(5)))
        .await
        .map_err(kerr)?;
    anyhow::ensure!(value.contains("41"), "the state was not carried: {value}");
    let mut replace = run(SwapMode::Replace).await?;
    report(&json!({
        "scenario": "lifecycle.hot_swap", "state_carried": true, "alternating": "wasm <-> js counter",
        "swaps": swap.len(), "p50_us": r2(swap.quantile_us(0.5)), "p99_us": r2(swap.quantile_us(0.99)),
        "baseline": {
            "name": "replace: kill and deploy under the same id (no state)",
            "p50_us": r2(replace.quantile_us(0.5)), "p99_us": r2(replace.quantile_us(0.99)),
        },
        "ratio": r2(swap.quantile_us(0.5) / replace.quantile_us(0.5)),
    }));
    stop(n).await;
    Ok(())
}

async fn recovery_and_shutdown() -> anyhow::Result<()> {
    // Baselines: start and stop on an empty store.
    let empty = tempfile::tempdir()?;
    let t = Instant::now();
    let n = start(empty.path(), config()).await?;
    let empty_start = t.elapsed();
    let t = Instant::now();
    n.kernel.shutdown().await;
    let empty_stop = t.elapsed();
    n.store.close().await;

    // 1,000 services: half WebAssembly echo, half JavaScript counters with state.
    let dir = tempfile::tempdir()?;
    let n = start(dir.path(), config()).await?;
    let a = Caller::tenant(TenantId::new("bench")?);
    let wasm: Arc<[u8]> = solo_guests::wasm("echo").into();
    let js: Arc<[u8]> = solo_guests::js("counter").into_bytes().into();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (k, a, wasm, js) = (n.kernel.clone(), a.clone(), wasm.clone(), js.clone());
        tasks.spawn(async move {
            for i in (w..1000).step_by(8) {
                let (format, code) = if i % 2 == 0 {
                    (Format::Wasm, Arc::clone(&wasm))
                } else {
                    (Format::Js, Arc::clone(&js))
                };
                let id = ServiceId::new(format!("s{i}"))?;
                let mut d = DeployRequest::new(id.clone(), format, code);
                d.memory_mb = Some(16);
                k.deploy(&a, d).await.map_err(kerr)?;
                if format == Format::Js {
                    k.call(&a, &id, r#"{"op":"inc"}"#, Some(Duration::from_secs(5)))
                        .await
                        .map_err(kerr)?;
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let t = Instant::now();
    n.kernel.shutdown().await;
    let stop_1000 = t.elapsed();
    n.store.close().await;
    drop(n);

    let t = Instant::now();
    let n = start(dir.path(), config()).await?;
    let recovery_start = t.elapsed();
    let rec = n.kernel.recovery();
    anyhow::ensure!(rec.recovered == 1000 && rec.failed == 0, "{rec:?}");
    let v = n
        .kernel
        .call(
            &a,
            &sid("s1")?,
            r#"{"op":"get"}"#,
            Some(Duration::from_secs(5)),
        )
        .await
        .map_err(kerr)?;
    anyhow::ensure!(v.contains('1'), "state not restored: {v}");
    stop(n).await;
    let ms = |d: Duration| r2(d.as_secs_f64() * 1000.0);
    report(&json!({
        "scenario": "lifecycle.recovery", "services": 1000, "with_snapshots": 500,
        "start_ms": ms(recovery_start),
        "per_service_us": r2(recovery_start.as_secs_f64() * 1e6 / 1000.0),
        "baseline": { "name": "start on an empty store", "start_ms": ms(empty_start) },
        "target_ms": 1000,
    }));
    report(&json!({
        "scenario": "lifecycle.shutdown", "services": 1000, "with_snapshots": 500,
        "shutdown_ms": ms(stop_1000),
        "baseline": { "name": "shutdown with no services", "shutdown_ms": ms(empty_stop) },
    }));
    Ok(())
}
