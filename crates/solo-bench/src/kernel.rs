//! Kernel scenario: deploy latency (cached and first compile, wasm and JS), 1,000
//! deploys, call round trip and throughput across 100 services, restart latency after a
//! crash, and idle memory per deployed service; beside the sandbox's raw instantiate and
//! call, and a bare tokio channel round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_kernel::{Caller, DeployRequest, Kernel, KernelConfig, KernelError, KernelOptions};
use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{Limits, Sandbox, SandboxConfig};
use solo_store::{RedbStore, StoreOptions};
use solo_types::{Format, RestartPolicy, ServiceId, TenantId};

use crate::stats::{Samples, r2};
use crate::{kerr, on_worker, report};

pub(crate) fn sid(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap_or_else(|_| ServiceId::new("x").expect("a valid id"))
}

pub(crate) struct Bench {
    pub(crate) kernel: Kernel,
    sandbox: Arc<Sandbox>,
    _dir: tempfile::TempDir,
}

async fn start(max_instances: u32) -> anyhow::Result<Bench> {
    start_with(max_instances, |_| {}).await
}

/// A kernel over a new store, its configuration changed by `tune`.
pub(crate) async fn start_with(
    max_instances: u32,
    tune: impl FnOnce(&mut KernelConfig),
) -> anyhow::Result<Bench> {
    start_over(max_instances, StoreOptions::default(), tune).await
}

/// The same over a store opened with `options`.
pub(crate) async fn start_over(
    max_instances: u32,
    options: StoreOptions,
    tune: impl FnOnce(&mut KernelConfig),
) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open_with(dir.path().join("solo.redb"), options)?;
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances,
        ..SandboxConfig::default()
    })?;
    let mut config = KernelConfig::default();
    config.limits.max_services_per_tenant = 20_000;
    config.limits.max_memory_mb_per_tenant = 1 << 30;
    tune(&mut config);
    let kernel = Kernel::start(
        Arc::new(store),
        Arc::clone(&sandbox),
        config,
        KernelOptions::default(),
    )
    .await?;
    Ok(Bench {
        kernel,
        sandbox,
        _dir: dir,
    })
}

pub(crate) fn caller() -> anyhow::Result<Caller> {
    Ok(Caller::tenant(TenantId::new("bench")?))
}

fn unique_component(base: &[u8], n: u64) -> Vec<u8> {
    let name = b"solo-bench";
    let mut out = base.to_vec();
    out.push(0);
    out.push(u8::try_from(1 + name.len() + 8).unwrap_or(0));
    out.push(u8::try_from(name.len()).unwrap_or(0));
    out.extend_from_slice(name);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    on_worker(async move {
        deploys().await?;
        calls(secs).await?;
        restarts().await?;
        idle_memory()
    })
}

async fn deploys() -> anyhow::Result<()> {
    let b = start(12_000).await?;
    let a = caller()?;
    let echo_wasm: Arc<[u8]> = solo_guests::wasm("echo").into();
    let echo_js: Arc<[u8]> = solo_guests::js("echo").into_bytes().into();
    // Warm the compile cache.
    b.kernel
        .deploy(
            &a,
            DeployRequest::new(sid("warm-w"), Format::Wasm, Arc::clone(&echo_wasm)),
        )
        .await
        .map_err(kerr)?;
    b.kernel
        .deploy(
            &a,
            DeployRequest::new(sid("warm-j"), Format::Js, Arc::clone(&echo_js)),
        )
        .await
        .map_err(kerr)?;

    for (format, code, n) in [(Format::Wasm, &echo_wasm, 300), (Format::Js, &echo_js, 300)] {
        let mut lat = Samples::default();
        for i in 0..n {
            let id = sid(&format!("{format}-cached-{i}"));
            let t = Instant::now();
            b.kernel
                .deploy(&a, DeployRequest::new(id, format, Arc::clone(code)))
                .await
                .map_err(kerr)?;
            lat.push(t.elapsed());
        }
        // Baseline: the sandbox alone (instantiate + init), no registry, no durable commit.
        let artifact = b.sandbox.compile(format, Arc::clone(code)).await?;
        let mut raw = Samples::default();
        for _ in 0..n {
            let t = Instant::now();
            let mut inst = b
                .sandbox
                .instantiate(&artifact, Limits::default(), Arc::new(MemoryHost::new()))
                .await?;
            inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
            raw.push(t.elapsed());
        }
        let (p50, base) = (lat.quantile_us(0.5), raw.quantile_us(0.5));
        report(&json!({
            "scenario": "kernel.deploy", "format": format.as_str(), "code": "cached",
            "p50_us": r2(p50), "p99_us": r2(lat.quantile_us(0.99)),
            "baseline": { "name": "sandbox instantiate + init (no registry, no durable commit)", "p50_us": r2(base) },
            "ratio": r2(p50 / base), "target_p50_us": if format == Format::Wasm { 1000 } else { 2000 },
        }));
    }

    let mut lat = Samples::default();
    let mut raw = Samples::default();
    for i in 0..15u64 {
        let code: Arc<[u8]> = unique_component(&echo_wasm, i).into();
        let t = Instant::now();
        b.kernel
            .deploy(
                &a,
                DeployRequest::new(sid(&format!("fresh-{i}")), Format::Wasm, Arc::clone(&code)),
            )
            .await
            .map_err(kerr)?;
        lat.push(t.elapsed());
        let other: Arc<[u8]> = unique_component(&echo_wasm, 1000 + i).into();
        let t = Instant::now();
        b.sandbox.compile(Format::Wasm, other).await?;
        raw.push(t.elapsed());
    }
    let (p50, base) = (lat.quantile_us(0.5), raw.quantile_us(0.5));
    report(&json!({
        "scenario": "kernel.deploy", "format": "wasm", "code": "first compile",
        "p50_us": r2(p50), "p99_us": r2(lat.quantile_us(0.99)),
        "baseline": { "name": "sandbox compile alone", "p50_us": r2(base) },
        "ratio": r2(p50 / base), "target_p50_us": 50_000,
    }));

    // 1,000 deploys, 64 at a time.
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (k, a, code) = (b.kernel.clone(), a.clone(), Arc::clone(&echo_wasm));
        tasks.spawn(async move {
            k.deploy(
                &a,
                DeployRequest::new(sid(&format!("bulk-{i}")), Format::Wasm, code),
            )
            .await
        });
        if tasks.len() >= 64
            && let Some(r) = tasks.join_next().await
        {
            r?.map_err(kerr)?;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r?.map_err(kerr)?;
    }
    let total = t.elapsed();
    // Baseline: 1,000 sequential sandbox instantiates + inits.
    let artifact = b
        .sandbox
        .compile(Format::Wasm, Arc::clone(&echo_wasm))
        .await?;
    let t = Instant::now();
    let mut keep = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut inst = b
            .sandbox
            .instantiate(&artifact, Limits::default(), Arc::new(MemoryHost::new()))
            .await?;
        inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        keep.push(inst);
    }
    let raw_total = t.elapsed();
    report(&json!({
        "scenario": "kernel.deploy_1000", "format": "wasm", "concurrency": 64,
        "total_ms": r2(total.as_secs_f64() * 1000.0),
        "baseline": { "name": "1,000 sandbox instantiate + init, sequential", "total_ms": r2(raw_total.as_secs_f64() * 1000.0) },
        "ratio": r2(total.as_secs_f64() / raw_total.as_secs_f64()), "target_ms": 2000,
    }));
    b.kernel.shutdown().await;
    Ok(())
}

async fn calls(secs: Duration) -> anyhow::Result<()> {
    let b = start(1000).await?;
    let a = caller()?;
    let echo: Arc<[u8]> = solo_guests::wasm("echo").into();
    for i in 0..100 {
        b.kernel
            .deploy(
                &a,
                DeployRequest::new(sid(&format!("echo-{i}")), Format::Wasm, Arc::clone(&echo)),
            )
            .await
            .map_err(kerr)?;
    }
    let request = r#"{"op":"echo","n":1}"#;
    let timeout = Duration::from_secs(5);

    // Sequential round trips to one service.
    let one = sid("echo-0");
    let mut lat = Samples::default();
    let t0 = Instant::now();
    while t0.elapsed() < secs {
        let t = Instant::now();
        b.kernel
            .call(&a, &one, request, Some(timeout))
            .await
            .map_err(kerr)?;
        lat.push(t.elapsed());
    }
    // Baseline: a bare tokio channel round trip to a task that answers at once.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(String, tokio::sync::oneshot::Sender<String>)>(1024);
    tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(req);
        }
    });
    let mut bare = Samples::default();
    let t0 = Instant::now();
    while t0.elapsed() < secs {
        let t = Instant::now();
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        tx.send((request.to_string(), rtx)).await?;
        rrx.await?;
        bare.push(t.elapsed());
    }
    let (p50, base) = (lat.quantile_us(0.5), bare.quantile_us(0.5));
    report(&json!({
        "scenario": "kernel.call", "format": "wasm", "concurrency": 1,
        "p50_us": r2(p50), "p99_us": r2(lat.quantile_us(0.99)),
        "baseline": { "name": "bare tokio mpsc + oneshot round trip", "p50_us": r2(base), "p99_us": r2(bare.quantile_us(0.99)) },
        "ratio": r2(p50 / base), "target_p50_us": 5,
    }));

    // Throughput across 100 services: 200 concurrent callers.
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..200usize {
        let (k, a) = (b.kernel.clone(), a.clone());
        tasks.spawn(async move {
            let mut lat = Samples::default();
            let mut n = c;
            let ids: Vec<ServiceId> = (0..100).map(|i| sid(&format!("echo-{i}"))).collect();
            while t0.elapsed() < secs {
                let t = Instant::now();
                k.call(&a, &ids[n % 100], request, Some(timeout)).await?;
                lat.push(t.elapsed());
                n += 7;
            }
            Ok::<_, KernelError>(lat)
        });
    }
    let mut all = Samples::default();
    while let Some(r) = tasks.join_next().await {
        all.extend(r?.map_err(kerr)?);
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / t0.elapsed().as_secs_f64();
    report(&json!({
        "scenario": "kernel.call_throughput", "format": "wasm", "services": 100, "concurrency": 200,
        "calls_per_sec": rate.round(), "p50_us": r2(all.quantile_us(0.5)), "p99_us": r2(all.quantile_us(0.99)),
        "target_calls_per_sec": 300_000,
    }));
    b.kernel.shutdown().await;
    Ok(())
}

async fn restarts() -> anyhow::Result<()> {
    let b = start(100).await?;
    let a = caller()?;
    let mut req = DeployRequest::new(sid("crasher"), Format::Wasm, solo_guests::wasm("crasher"));
    req.restart = Some(RestartPolicy::Permanent);
    req.max_restarts = Some(10_000);
    req.max_seconds = Some(1);
    b.kernel.deploy(&a, req).await.map_err(kerr)?;
    let id = sid("crasher");
    let mut lat = Samples::default();
    for _ in 0..300 {
        let err = b
            .kernel
            .call(&a, &id, r#"{"mode":"trap"}"#, Some(Duration::from_secs(5)))
            .await;
        anyhow::ensure!(
            matches!(err, Err(KernelError::ServiceCrashed(_))),
            "expected a crash"
        );
        let t = Instant::now();
        b.kernel
            .call(&a, &id, r#"{"mode":"ok"}"#, Some(Duration::from_secs(5)))
            .await
            .map_err(kerr)?;
        lat.push(t.elapsed());
    }
    let (p50, p99) = (lat.quantile_us(0.5), lat.quantile_us(0.99));
    // Baseline: the same call on a healthy instance.
    let mut healthy = Samples::default();
    for _ in 0..300 {
        let t = Instant::now();
        b.kernel
            .call(&a, &id, r#"{"mode":"ok"}"#, Some(Duration::from_secs(5)))
            .await
            .map_err(kerr)?;
        healthy.push(t.elapsed());
    }
    let base = healthy.quantile_us(0.5);
    report(&json!({
        "scenario": "kernel.restart", "format": "wasm",
        "what": "from the crash reply to the next reply, which waits for the restarted instance",
        "p50_us": r2(p50), "p99_us": r2(p99),
        "baseline": { "name": "the same call to a healthy instance", "p50_us": r2(base) },
        "restart_p50_us": r2(p50 - base), "target_p50_us": 1000,
    }));
    b.kernel.shutdown().await;
    Ok(())
}

fn idle_memory() -> anyhow::Result<()> {
    let solo = crate::sandbox::probe_in_child("kernel-wasm")?;
    let sandbox = crate::sandbox::probe_in_child("solo-wasm")?;
    let per = |v: &serde_json::Value| v["bytes_per_instance"].as_f64().unwrap_or(f64::NAN);
    report(&json!({
        "scenario": "kernel.idle_memory", "format": "wasm", "services": 10_000,
        "bytes_per_service": solo["bytes_per_instance"],
        "baseline": { "name": "sandbox instance alone (instantiated and init'd)", "bytes_per_instance": sandbox["bytes_per_instance"] },
        "ratio": r2(per(&solo) / per(&sandbox)),
    }));
    Ok(())
}

/// Runs in a child process: deploys 10,000 echo services and reports RSS growth.
///
/// With `park_ms` (0: never) an idle service's actor gives up its task that long after
/// its last message; the probe waits until they all have before it measures.
pub async fn idle_probe(cache_bytes: usize, park_ms: u64) -> anyhow::Result<serde_json::Value> {
    let options = StoreOptions {
        cache_bytes,
        ..StoreOptions::default()
    };
    let b = start_over(10_100, options, |c| {
        c.service_defaults.park_after_ms = park_ms;
    })
    .await?;
    let a = caller()?;
    let echo: Arc<[u8]> = solo_guests::wasm("echo").into();
    b.kernel
        .deploy(
            &a,
            DeployRequest::new(sid("warm"), Format::Wasm, Arc::clone(&echo)),
        )
        .await
        .map_err(kerr)?;
    let before = crate::sandbox::rss();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let (k, a, code) = (b.kernel.clone(), a.clone(), Arc::clone(&echo));
        tasks.spawn(async move {
            k.deploy(
                &a,
                DeployRequest::new(sid(&format!("idle-{i}")), Format::Wasm, code),
            )
            .await
        });
        if tasks.len() >= 64
            && let Some(r) = tasks.join_next().await
        {
            r?.map_err(kerr)?;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r?.map_err(kerr)?;
    }
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let t0 = std::time::Instant::now();
    while park_ms > 0 && alive() > 1_000 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per = crate::sandbox::rss().saturating_sub(before) / 10_000;
    let parts: serde_json::Map<String, serde_json::Value> = solo_kernel::footprint()
        .into_iter()
        // A parked service holds neither of its actor's futures.
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(if park_ms > 0 && k != "service entry" {
                    0
                } else {
                    v
                }),
            )
        })
        .collect();
    Ok(json!({ "bytes_per_instance": per, "footprint": parts, "tasks": alive() }))
}
