//! Density scenario: where an idle wasm service's memory goes, each part measured. Seven
//! fresh child processes each hold 10,000 echo instances at one stage (raw wasmtime
//! with nothing run; raw wasmtime after `init`; the sandbox's instance before and after
//! `init`, and after a first call; a service deployed through the kernel, over the
//! store page cache `solo server` has and over nearly none, its actor parked, and once
//! more with the actor holding its task) and report
//! their RSS growth per instance; the differences between stages are the parts. The
//! kernel's part is split further by the sizes of what it allocates per service
//! (`solo_kernel::footprint`), the rest being heap beside them. An eighth process
//! measures a hibernated service: 10,000 counters deployed, left to hibernate, their
//! RSS per service, then the latency of the call that wakes one against a call to an
//! awake one in the same run; a ninth times the call that resumes a parked actor
//! against the next call to the same service.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use solo_kernel::{Caller, DeployRequest};
use solo_types::{Format, ServiceState, TenantId};

use crate::kernel::{caller, sid, start_with};
use crate::sandbox::probe_in_child as probe;
use crate::stats::Samples;
use crate::stats::r2;
use crate::{kerr, report};

#[allow(clippy::cast_precision_loss)]
fn kib(bytes: f64) -> f64 {
    r2(bytes / 1024.0)
}

pub fn run() -> anyhow::Result<()> {
    let per = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let raw = probe("raw-wasm")?;
    let raw_init = probe("raw-wasm-call")?;
    let noinit = probe("solo-wasm-noinit")?;
    let sandbox = probe("solo-wasm")?;
    let kernel = probe("kernel-wasm")?;
    let small_cache = probe("kernel-wasm-small-cache")?;
    let unparked = probe("kernel-wasm-unparked")?;
    let (raw, raw_init, noinit) = (
        per(&raw, "bytes_per_instance"),
        per(&raw_init, "bytes_per_instance"),
        per(&noinit, "bytes_per_instance"),
    );
    let (inited, released, called) = (
        per(&sandbox, "bytes_per_instance"),
        per(&sandbox, "after_release"),
        per(&sandbox, "after_call"),
    );
    let service = per(&kernel, "bytes_per_instance");
    // The store's page cache fills with the records the deploys wrote: bounded by
    // `store.cache_mb` (64 MiB by default), so not a cost per service beyond it.
    let cache = service - per(&small_cache, "bytes_per_instance");
    let footprint = kernel["footprint"].as_object().cloned().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let fixed: f64 = footprint.values().filter_map(Value::as_f64).sum();
    let mut kernel_parts: Vec<Value> = footprint
        .iter()
        .map(|(k, v)| json!({ "part": k, "kib": kib(v.as_f64().unwrap_or(0.0)) }))
        .collect();
    kernel_parts.push(json!({
        "part": "the store's page cache, filled by the deploys' records (bounded by store.cache_mb)",
        "kib": kib(cache),
    }));
    kernel_parts.push(json!({
        "part": "other heap (spec, strings, map slots, supervisor child, allocator)",
        "kib": kib(service - cache - released - fixed),
    }));
    report(&json!({
        "scenario": "density.breakdown", "format": "wasm", "services": 10_000,
        "per_service_kib": {
            "wasmtime store and instance, nothing run (raw)": kib(raw),
            // `wasm-breakdown` shows which: one page of linear memory, and the top of
            // the fiber stack wasmtime keeps in the store after a call.
            "pages written by init: the guest's and the store's fiber stack (raw)": kib(raw_init - raw),
            "the sandbox's state beside wasmtime's": kib(noinit - raw),
            "pages written by init: the guest's and the store's fiber stack (in the sandbox)": kib(inited - noinit),
            "the fiber stack's pages an idle instance hands back (parked)": kib(released - inited),
            "guest pages written by a first call (its stack's pages taken again)": kib(called - released),
            "the kernel (its actor parked: no task)": kib(service - released),
        },
        "kernel_parts": kernel_parts,
        "total_kib": {
            "deployed service": kib(service),
            "deployed service, the store's page cache aside": kib(service - cache),
            "deployed service whose actor holds its task (park_after_ms = 0)": kib(per(&unparked, "bytes_per_instance")),
            "baseline: raw wasmtime after init": kib(raw_init),
        },
        "tasks_left": { "parked": kernel["tasks"], "unparked": unparked["tasks"] },
        "target_kib": 16,
    }));
    let asleep = probe("kernel-wasm-hibernated")?;
    report(&json!({
        "scenario": "density.hibernated", "format": "wasm", "services": HIBERNATED_N,
        "per_service_kib": {
            "a hibernated service": kib(per(&asleep, "bytes_per_service")),
            "baseline: an awake deployed service (above)": kib(service),
        },
        "wake_call_us": asleep["wake_call_us"],
        "baseline_awake_call_us": asleep["awake_call_us"],
        "hibernate_all_s": asleep["hibernate_all_s"],
        "target_wake_p50_us": 200,
    }));
    let parked = probe("kernel-wasm-parked-calls")?;
    report(&json!({
        "scenario": "density.parked", "format": "wasm", "services": PARKED_N,
        "resume_call_us": parked["resume_call_us"],
        "baseline_awake_call_us": parked["awake_call_us"],
        "tasks_while_parked": parked["tasks_while_parked"],
    }));
    Ok(())
}

/// The services whose resume is timed.
const PARKED_N: usize = 1_000;

/// Runs in a child process: deploys `PARKED_N` counters whose actors park after 20 ms
/// idle, waits until they have, then calls each twice in a row: the first call resumes
/// its actor, the second (the baseline) finds it running.
pub async fn parked_probe() -> anyhow::Result<Value> {
    let b = start_with(PARKED_N as u32 + 100, |c| {
        c.service_defaults.park_after_ms = 20;
        c.service_defaults.hibernate_after_ms = 0;
    })
    .await?;
    let a = caller()?;
    let code: std::sync::Arc<[u8]> = solo_guests::wasm("counter").into();
    for i in 0..PARKED_N {
        let req = DeployRequest::new(sid(&format!("p-{i}")), Format::Wasm, code.clone());
        b.kernel.deploy(&a, req).await.map_err(kerr)?;
    }
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let t0 = Instant::now();
    while alive() > 200 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked_tasks = alive();
    let (mut resumed, mut awake) = (Samples::default(), Samples::default());
    let get = r#"{"op":"get"}"#;
    for i in 0..PARKED_N {
        let id = sid(&format!("p-{}", (i * 7919) % PARKED_N));
        for s in [&mut resumed, &mut awake] {
            let t = Instant::now();
            b.kernel.call(&a, &id, get, None).await.map_err(kerr)?;
            s.push(t.elapsed());
        }
    }
    let q =
        |s: &mut Samples| json!({ "p50": r2(s.quantile_us(0.5)), "p99": r2(s.quantile_us(0.99)) });
    Ok(json!({
        "resume_call_us": q(&mut resumed),
        "awake_call_us": q(&mut awake),
        "tasks_while_parked": parked_tasks,
    }))
}

const HIBERNATED_N: usize = 10_000;
/// The services whose wake is timed.
const WAKES: usize = 1_000;

/// Runs in a child process: deploys `HIBERNATED_N` counters that hibernate after 100 ms
/// idle, waits until all sleep, and reports the RSS growth per service; then calls
/// `WAKES` of them (each call wakes one), then the same ones again awake.
pub async fn hibernated_probe() -> anyhow::Result<Value> {
    let b = start_with(10_100, |c| c.service_defaults.hibernate_after_ms = 100).await?;
    let a = caller()?;
    let code: std::sync::Arc<[u8]> = solo_guests::wasm("counter").into();
    let deploy = |id: String| {
        let (k, a, code) = (b.kernel.clone(), a.clone(), std::sync::Arc::clone(&code));
        async move {
            k.deploy(&a, DeployRequest::new(sid(&id), Format::Wasm, code))
                .await
        }
    };
    deploy("warm".into()).await.map_err(kerr)?;
    let before = crate::sandbox::rss();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..HIBERNATED_N {
        tasks.spawn(deploy(format!("c-{i}")));
        if tasks.len() >= 64
            && let Some(r) = tasks.join_next().await
        {
            r?.map_err(kerr)?;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r?.map_err(kerr)?;
    }
    let t0 = Instant::now();
    loop {
        let awake = (0..HIBERNATED_N)
            .filter(|i| {
                b.kernel
                    .status(&a, &sid(&format!("c-{i}")))
                    .map_or(true, |s| s.state != ServiceState::Hibernated)
            })
            .count();
        if awake == 0 {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "{awake} services did not hibernate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_asleep = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = crate::sandbox::rss().saturating_sub(before) / HIBERNATED_N as u64;
    // Wake a spread of them, one call each, then call the same ones awake.
    let picked: Vec<String> = (0..WAKES)
        .map(|i| format!("c-{}", (i * 7919) % HIBERNATED_N))
        .collect();
    let get = r#"{"op":"get"}"#;
    let timed = |ids: Vec<String>| {
        let (k, a) = (b.kernel.clone(), a.clone());
        async move {
            let mut s = Samples::default();
            for id in ids {
                let t = Instant::now();
                k.call(&a, &sid(&id), get, None).await.map_err(kerr)?;
                s.push(t.elapsed());
            }
            anyhow::Ok(s)
        }
    };
    let mut woke = timed(picked.clone()).await?;
    // Keep them awake for the baseline.
    b.kernel
        .set_config(
            &Caller::admin(TenantId::new("ops")?),
            "services.hibernate_after_ms",
            "0",
        )
        .await
        .map_err(kerr)?;
    let mut awake = timed(picked).await?;
    let q =
        |s: &mut Samples| json!({ "p50": r2(s.quantile_us(0.5)), "p99": r2(s.quantile_us(0.99)) });
    Ok(json!({
        "bytes_per_service": per,
        "hibernate_all_s": r2(all_asleep.as_secs_f64()),
        "wake_call_us": q(&mut woke),
        "awake_call_us": q(&mut awake),
    }))
}
