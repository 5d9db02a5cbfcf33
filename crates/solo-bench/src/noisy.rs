//! Noisy neighbours: bob's calls (gRPC over mutual TLS, from a client on a thread of
//! its own, as another process would be) alone, then beside each kind of neighbour:
//! alice keeping 100 calls going against her 10-request in-flight limit and waiting out
//! every retry hint; mallory hammering at full speed from 64 streams and ignoring every
//! hint (over her request rate of 200 a second); and mallory hammering while carol runs 8 spinning JS
//! and 8 spinning wasm services. Bob calls at a steady pace within the rate. The
//! baseline is bob alone, in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use solo_client::{Client, Profile};
use solo_kernel::{Caller, DeployRequest, KernelConfig};
use solo_proto::v1 as pb;
use solo_sandbox::SandboxConfig;
use solo_types::{Format, ServiceId, TenantId};

use crate::stats::{Samples, r2};
use crate::{kerr, report};

const RATE: u32 = 200;
const SPINNERS: usize = 8;
/// Bob calls at a steady pace within the rate (about 170 a second).
const PACE: Duration = Duration::from_millis(6);

fn req(id: &str, body: &str) -> pb::CallRequest {
    pb::CallRequest {
        service_id: id.into(),
        request: body.into(),
        timeout_ms: 5000,
    }
}

/// Counts of what a neighbour's requests met.
#[derive(Default)]
struct Met {
    served: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

impl Met {
    fn json(&self) -> serde_json::Value {
        json!({
            "served": self.served.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
        })
    }
}

/// A neighbour: `tasks` tasks on a thread of their own, each calling `id` with `body`
/// until stopped, and after a refusal waiting out the hint if `patient`.
struct Neighbour {
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    met: Arc<Met>,
}

impl Neighbour {
    fn start(
        client: &Profile,
        tasks: usize,
        id: &'static str,
        body: &'static str,
        patient: bool,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let c = runtime.block_on(client.connect())?;
        let (stop, met) = (Arc::new(AtomicBool::new(false)), Arc::new(Met::default()));
        for _ in 0..tasks {
            let (mut c, stop, met) = (c.clone(), Arc::clone(&stop), Arc::clone(&met));
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.call(req(id, body)).await {
                        Ok(_) => met.served.fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                            if patient {
                                let hint = e
                                    .metadata()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok()?.parse().ok())
                                    .unwrap_or(1);
                                tokio::time::sleep(Duration::from_secs(hint)).await;
                            }
                            met.refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => met.failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { runtime, stop, met })
    }

    fn stop(self) -> Arc<Met> {
        self.stop.store(true, Ordering::Relaxed);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        self.met
    }
}

fn phase(s: &mut Samples) -> serde_json::Value {
    json!({
        "p50_us": r2(s.quantile_us(0.5)),
        "p99_us": r2(s.quantile_us(0.99)),
        "max_us": r2(s.quantile_us(1.0)),
    })
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cfg = KernelConfig::default();
    cfg.limits.max_per_tenant = 10;
    cfg.limits.rate_per_tenant = RATE;
    cfg.limits.burst_per_tenant = RATE;
    let s = server.block_on(crate::gateway::serve_with(
        cfg,
        SandboxConfig {
            max_instances: 100,
            ..SandboxConfig::default()
        },
    ))?;
    let profile = |t: &str| s.tenant_profile(t);
    let (alice, bob, mallory) = (profile("alice")?, profile("bob")?, profile("mallory")?);
    let kernel = s.kernel.clone();
    let deploy = |tenant: &str, id: &str, format: Format, code: Vec<u8>, cpu: Option<u32>| {
        let mut r = DeployRequest::new(ServiceId::new(id)?, format, code);
        r.cpu_ms_per_message = cpu;
        r.message_timeout_ms = cpu;
        let caller = Caller::tenant(TenantId::new(tenant)?);
        server.block_on(kernel.deploy(&caller, r)).map_err(kerr)?;
        anyhow::Ok(())
    };
    deploy(
        "alice",
        "work",
        Format::Wasm,
        solo_guests::wasm("spinner"),
        None,
    )?;
    deploy("bob", "echo", Format::Wasm, solo_guests::wasm("echo"), None)?;
    deploy(
        "mallory",
        "echo",
        Format::Wasm,
        solo_guests::wasm("echo"),
        None,
    )?;

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c: Client = client.block_on(bob.connect())?;
    let mut timed = |for_: Duration| -> anyhow::Result<Samples> {
        client.block_on(async {
            let mut lat = Samples::default();
            let t0 = Instant::now();
            let mut every = tokio::time::interval(PACE);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while t0.elapsed() < for_ {
                every.tick().await;
                let t = Instant::now();
                c.call(req("echo", r#"{"op":"echo","n":1}"#)).await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        })
    };
    timed(Duration::from_millis(300))?;
    let mut alone = timed(secs)?;

    // About a millisecond of work per call, ten in flight at most.
    let flood = Neighbour::start(&alice, 100, "work", r#"{"mode":"work","n":200000}"#, true)?;
    let mut flooded = timed(secs)?;
    let flood = flood.stop();

    let hammer = Neighbour::start(&mallory, 64, "echo", r#"{"op":"echo","n":1}"#, false)?;
    let mut hammered = timed(secs)?;
    let hammer = hammer.stop();

    let carol = Caller::tenant(TenantId::new("carol")?);
    for i in 0..SPINNERS * 2 {
        let (format, code): (Format, Vec<u8>) = if i % 2 == 0 {
            (Format::Js, solo_guests::js("spinner").into_bytes())
        } else {
            (Format::Wasm, solo_guests::wasm("spinner"))
        };
        let id = format!("spin-{i}");
        deploy("carol", &id, format, code, Some(60_000))?;
        let (k, carol, id) = (kernel.clone(), carol.clone(), ServiceId::new(id)?);
        server.spawn(async move {
            let _ = k
                .call(
                    &carol,
                    &id,
                    r#"{"mode":"spin"}"#,
                    Some(Duration::from_secs(60)),
                )
                .await;
        });
    }
    let both = Neighbour::start(&mallory, 64, "echo", r#"{"op":"echo","n":1}"#, false)?;
    let mut beside_both = timed(secs)?;
    let both = both.stop();
    drop(c);
    server.shutdown_background();

    let p99 = |s: &mut Samples| s.quantile_us(0.99);
    let base = p99(&mut alone);
    report(&json!({
        "scenario": "noisy.other_tenant_call",
        "limits": { "max_per_tenant": 10, "rate_per_tenant": RATE, "burst_per_tenant": RATE },
        "baseline": { "name": "bob alone", "latency": phase(&mut alone) },
        "patient_flood": {
            "latency": phase(&mut flooded), "p99_ratio": r2(p99(&mut flooded) / base),
            "alice": flood.json(),
        },
        "hammer_ignoring_retry_after": {
            "latency": phase(&mut hammered), "p99_ratio": r2(p99(&mut hammered) / base),
            "mallory": hammer.json(),
        },
        "hammer_and_16_spinners": {
            "latency": phase(&mut beside_both),
            "p99_ratio": r2(p99(&mut beside_both) / base),
            "mallory": both.json(),
        },
        "target_p99_ratio": 2,
    }));
    Ok(())
}
