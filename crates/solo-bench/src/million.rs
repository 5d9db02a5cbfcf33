//! Million scenario: deploys N wasm counters (a million by default) over T tenants on a
//! kernel whose services hibernate after 1 s idle, with a pool of 5,000 instance slots;
//! reports the deploy rate, RSS per deployed service once they
//! sleep, the latency of calls to a random 1 % (each wakes its service) against the
//! same calls awake, and the time to stop and to start again with N records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_kernel::{Caller, DeployRequest, Kernel, KernelConfig, KernelOptions};
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{RedbStore, Store, StoreOptions};
use solo_types::{Format, TenantId};

use crate::kernel::sid;
use crate::stats::{Samples, r2};
use crate::{kerr, on_worker, report};

/// Instance slots: half the default pool. A full pool of 10,000 used slots holds about
/// 46,000 memory mappings, and this machine's `vm.max_map_count` is 65,530; a run with
/// 10,000 met `ENOMEM` in wakes after a million deploys (see `docs/benchmarks.md`).
const SLOTS: u32 = 5_000;

fn config() -> KernelConfig {
    let mut c = KernelConfig::default();
    c.limits.max_services_per_tenant = u32::MAX;
    c.limits.max_memory_mb_per_tenant = u64::MAX / 4;
    c.monitor.services = 1 << 40;
    c.service_defaults.hibernate_after_ms = 1_000;
    c
}

async fn start(dir: &std::path::Path) -> anyhow::Result<(Kernel, Arc<RedbStore>)> {
    let store = Arc::new(RedbStore::open_with(
        dir.join("solo.redb"),
        StoreOptions::default(),
    )?);
    let dyn_store: Arc<dyn Store> = store.clone();
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: SLOTS,
        ..SandboxConfig::default()
    })?;
    let kernel = Kernel::start(dyn_store, sandbox, config(), KernelOptions::default()).await?;
    Ok((kernel, store))
}

/// The process's memory mappings (the kernel caps them at `vm.max_map_count`).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

fn tenant_of(i: usize, tenants: usize) -> anyhow::Result<Caller> {
    Ok(Caller::tenant(TenantId::new(format!("t{}", i % tenants))?))
}

/// A spread of `n` of `0..total`, the same every run.
fn picked(n: usize, total: usize) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % total as u64).unwrap_or(0)
        })
        .collect()
}

pub fn run(services: usize, tenants: usize) -> anyhow::Result<()> {
    on_worker(async move {
        let dir = tempfile::tempdir_in(std::env::var("SOLO_BENCH_DIR").unwrap_or("/tmp".into()))?;
        let (kernel, store) = start(dir.path()).await?;
        let code: Arc<[u8]> = solo_guests::wasm("counter").into();
        let warm = tenant_of(0, tenants)?;
        kernel
            .deploy(
                &warm,
                DeployRequest::new(sid("warm"), Format::Wasm, Arc::clone(&code)),
            )
            .await
            .map_err(kerr)?;
        let before = crate::sandbox::rss();
        eprintln!("started: {} memory mappings", mappings());
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..services {
            let (k, a, code) = (kernel.clone(), tenant_of(i, tenants)?, Arc::clone(&code));
            tasks.spawn(async move {
                k.deploy(
                    &a,
                    DeployRequest::new(sid(&format!("c-{i}")), Format::Wasm, code),
                )
                .await
            });
            if tasks.len() >= 64
                && let Some(r) = tasks.join_next().await
            {
                r?.map_err(kerr)?;
            }
            if (i + 1) % 100_000 == 0 {
                eprintln!(
                    "{} deployed in {:.0} s, RSS {} MiB, {} memory mappings",
                    i + 1,
                    t0.elapsed().as_secs_f64(),
                    crate::sandbox::rss() >> 20,
                    mappings()
                );
            }
        }
        while let Some(r) = tasks.join_next().await {
            r?.map_err(kerr)?;
        }
        let deploy_s = t0.elapsed().as_secs_f64();
        // Idle past the hibernation limit: all but the few awake sleep.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let per = crate::sandbox::rss().saturating_sub(before) / services as u64;

        // Each picked service is called twice in a row: the first call wakes it, the
        // second finds it awake (the baseline, same service, same moment).
        let get = r#"{"op":"get"}"#;
        let mut woke = Samples::default();
        let mut awake = Samples::default();
        for i in picked(services / 100, services) {
            let (a, id) = (tenant_of(i, tenants)?, sid(&format!("c-{i}")));
            let t = Instant::now();
            kernel.call(&a, &id, get, None).await.map_err(kerr)?;
            woke.push(t.elapsed());
            let t = Instant::now();
            kernel.call(&a, &id, get, None).await.map_err(kerr)?;
            awake.push(t.elapsed());
        }
        let mappings_after_wakes = mappings();
        let t1 = Instant::now();
        kernel.shutdown().await;
        store.close().await;
        drop((kernel, store));
        let stop_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let (kernel, store) = start(dir.path()).await?;
        let start_s = t2.elapsed().as_secs_f64();
        let recovered = kernel.recovery();
        let one = picked(1, services)[0];
        let answer = kernel
            .call(
                &tenant_of(one, tenants)?,
                &sid(&format!("c-{one}")),
                get,
                None,
            )
            .await
            .map_err(kerr)?;
        kernel.shutdown().await;
        store.close().await;
        let q = |s: &mut Samples| json!({ "p50": r2(s.quantile_us(0.5)), "p99": r2(s.quantile_us(0.99)) });
        #[allow(clippy::cast_precision_loss)]
        let rate = services as f64 / deploy_s;
        report(&json!({
            "scenario": "density.million", "format": "wasm",
            "services": services, "tenants": tenants, "instance_slots": SLOTS,
            "deploy_per_s": r2(rate),
            "rss_per_deployed_service_kib": r2(per as f64 / 1024.0),
            "wake_call_us": q(&mut woke),
            "baseline_awake_call_us": q(&mut awake),
            "stop_s": r2(stop_s),
            "memory_mappings_after_wakes": mappings_after_wakes,
            "start_with_records_s": r2(start_s),
            "recovered": recovered.recovered, "recovery_failed": recovered.failed,
            "a_call_after_the_restart": answer,
            "target_wake_p50_us": 200,
        }));
        Ok(())
    })
}
