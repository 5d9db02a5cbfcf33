//! Fairness scenario: another tenant's call through the gateway (gRPC over mutual TLS,
//! from a client on a thread of its own, as another process would be) while one tenant
//! runs 8 spinning JavaScript and 8 spinning wasm services; idle, then beside the
//! spinners, with the sandbox's busy lane and, as the baseline in the same run, without
//! it (every guest in the executor's shared run queue, as before the lane). Then the
//! share: a CPU-bound job of a third tenant (about 70 ms here), alone and beside the spinners
//! (the lane takes tenants in turn, so the job should take about twice as long, not
//! seventeen times).

use std::time::{Duration, Instant};

use serde_json::json;
use solo_kernel::{Caller, DeployRequest, KernelConfig};
use solo_proto::v1 as pb;
use solo_sandbox::SandboxConfig;
use solo_types::{Format, ServiceId, TenantId};

use crate::stats::{Samples, r2};
use crate::{kerr, report};

const SPINNERS: usize = 8;

/// Latency figures of one phase, in milliseconds.
struct Phase {
    p50: f64,
    p99: f64,
    max: f64,
}

/// The job's wall time alone and beside the spinners, in milliseconds.
struct Job {
    alone: f64,
    beside: f64,
}

impl Job {
    fn json(&self) -> serde_json::Value {
        json!({
            "alone_ms": r2(self.alone), "beside_spinners_ms": r2(self.beside),
            "slowdown": r2(self.beside / self.alone),
        })
    }
}

const JOB: &str = r#"{"mode":"work","n":40000000}"#;

impl Phase {
    fn of(mut s: Samples) -> Self {
        Self {
            p50: s.quantile_us(0.5) / 1000.0,
            p99: s.quantile_us(0.99) / 1000.0,
            max: s.quantile_us(1.0) / 1000.0,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({ "p50_ms": r2(self.p50), "p99_ms": r2(self.p99), "max_ms": r2(self.max) })
    }
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let (idle, busy, job) = measure(secs, SandboxConfig::default().busy_lanes)?;
    let (base_idle, base_busy, base_job) = measure(secs, 1_000_000)?;
    report(&json!({
        "scenario": "fairness.other_tenant_call",
        "spinners": { "js": SPINNERS, "wasm": SPINNERS, "cpu_ms_per_message": 30_000 },
        "idle": idle.json(),
        "with_spinners": busy.json(),
        "baseline": {
            "name": "the same, without the busy lane",
            "idle": base_idle.json(),
            "with_spinners": base_busy.json(),
            "share_job": base_job.json(),
        },
        "share_job": job.json(),
        "ratio_p99": r2(busy.p99 / base_busy.p99),
        "target": { "p99_ms": 10, "max_ms": 50 },
    }));
    Ok(())
}

/// Another tenant's calls, idle and beside the spinners, on a server whose busy lane
/// has `lanes` permits.
fn measure(secs: Duration, lanes: usize) -> anyhow::Result<(Phase, Phase, Job)> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let s = server.block_on(crate::gateway::serve_with(
        KernelConfig::default(),
        SandboxConfig {
            max_instances: 100,
            busy_lanes: lanes,
            ..SandboxConfig::default()
        },
    ))?;
    let (kernel, admin) = (s.kernel.clone(), Caller::admin(TenantId::new("admin")?));
    server.block_on(async {
        kernel
            .deploy(
                &admin,
                DeployRequest::new(
                    ServiceId::new("echo")?,
                    Format::Js,
                    solo_guests::js("echo").into_bytes(),
                ),
            )
            .await
            .map_err(kerr)
    })?;
    let profile = s.admin_profile()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c = client.block_on(profile.connect())?;
    let mut timed = |for_: Duration| -> anyhow::Result<Samples> {
        client.block_on(async {
            let mut lat = Samples::default();
            let t0 = Instant::now();
            while t0.elapsed() < for_ {
                let t = Instant::now();
                c.call(pb::CallRequest {
                    service_id: "echo".into(),
                    request: r#"{"op":"echo","n":1}"#.into(),
                    timeout_ms: 5000,
                })
                .await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        })
    };
    timed(Duration::from_millis(300))?;
    let idle = Phase::of(timed(secs)?);
    let quiet = Caller::tenant(TenantId::new("quiet")?);
    let job_id = ServiceId::new("job")?;
    let mut req = DeployRequest::new(job_id.clone(), Format::Wasm, solo_guests::wasm("spinner"));
    req.cpu_ms_per_message = Some(30_000);
    server.block_on(kernel.deploy(&quiet, req)).map_err(kerr)?;
    let run_job = || -> anyhow::Result<f64> {
        let t = Instant::now();
        server
            .block_on(kernel.call(&quiet, &job_id, JOB, Some(Duration::from_secs(60))))
            .map_err(kerr)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    run_job()?;
    let job_alone = run_job()?;

    let a = Caller::tenant(TenantId::new("noisy")?);
    for i in 0..SPINNERS * 2 {
        let (format, code): (Format, Vec<u8>) = if i % 2 == 0 {
            (Format::Js, solo_guests::js("spinner").into_bytes())
        } else {
            (Format::Wasm, solo_guests::wasm("spinner"))
        };
        let id = ServiceId::new(format!("spin-{i}"))?;
        let mut req = DeployRequest::new(id.clone(), format, code);
        req.cpu_ms_per_message = Some(30_000);
        req.message_timeout_ms = Some(30_000);
        let (k, a) = (kernel.clone(), a.clone());
        server.block_on(async { k.deploy(&a, req).await.map_err(kerr) })?;
        server.spawn(async move {
            let _ = k
                .call(&a, &id, r#"{"mode":"spin"}"#, Some(Duration::from_secs(30)))
                .await;
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let busy = Phase::of(timed(secs)?);
    let job = Job {
        alone: job_alone,
        beside: run_job()?,
    };
    drop(c);
    server.shutdown_background();
    Ok((idle, busy, job))
}
