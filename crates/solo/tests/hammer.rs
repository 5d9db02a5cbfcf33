//! Two bad neighbours at once, alone in their own test binary so that no other test
//! shares the two cores while it measures: carol saturates the CPU with spinning JS and
//! wasm services, and mallory hammers from 32 streams without ever waiting out a retry
//! hint, while bob's calls (at a steady pace within his rate) stay fast. Mallory is
//! refused for her rate, and once she ignores the hints her refusals are held, so her
//! hammering costs the server little.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{Server, call, echo_js, workspace_root};
use serde_json::json;
use solo_proto::v1 as pb;
use tonic::Code;

fn deploy(id: &str, code: Vec<u8>, format: pb::deploy_request::DeployFormat) -> pb::DeployRequest {
    pb::DeployRequest {
        service_id: id.into(),
        code_bytes: code,
        format: format as i32,
        cpu_ms_per_message: 60_000,
        message_timeout_ms: 60_000,
        ..pb::DeployRequest::default()
    }
}

/// Bob's p99 over `n` calls, one every 12 ms (his rate is 100 a second).
async fn paced_p99(c: &mut solo_client::Client, n: usize) -> Duration {
    let mut every = tokio::time::interval(Duration::from_millis(12));
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        every.tick().await;
        let t = Instant::now();
        c.call(call("echo", json!({ "op": "echo", "n": i })))
            .await
            .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    took[(n - 1) * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_tenant_and_a_hammering_tenant_leave_another_tenants_calls_fast() {
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[
            ("SOLO_LIMITS__RATE_PER_TENANT", "100"),
            ("SOLO_LIMITS__BURST_PER_TENANT", "100"),
        ],
    );
    let (carol, mallory) = (s.tenant("carol").await, s.tenant("mallory").await);
    let mut bob = s.tenant("bob").await;
    let js = pb::deploy_request::DeployFormat::Javascript;
    bob.deploy(deploy("echo", echo_js().into_bytes(), js))
        .await
        .unwrap();
    mallory
        .clone()
        .deploy(deploy("echo", echo_js().into_bytes(), js))
        .await
        .unwrap();
    paced_p99(&mut bob, 30).await;
    let alone = paced_p99(&mut bob, 250).await;

    // Carol: four JS and four wasm services spinning for a minute each.
    let spinner_js = std::fs::read(workspace_root().join("examples/js/spinner.js")).unwrap();
    let wasm = pb::deploy_request::DeployFormat::WasmComponent;
    let mut spinning = Vec::new();
    for i in 0..8 {
        let id = format!("spin-{i}");
        let (code, format) = if i % 2 == 0 {
            (spinner_js.clone(), js)
        } else {
            (solo_guests::wasm("spinner"), wasm)
        };
        let mut c = carol.clone();
        c.deploy(deploy(&id, code, format)).await.unwrap();
        spinning.push(tokio::spawn(async move {
            let _ = c
                .call(pb::CallRequest {
                    service_id: id,
                    request: json!({ "mode": "spin" }).to_string(),
                    timeout_ms: 60_000,
                })
                .await;
        }));
    }
    // Mallory: 32 streams on a thread of their own, never waiting.
    let (stop, refused, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let hammer = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..32 {
        let (mut c, stop, refused, served) = (
            mallory.clone(),
            stop.clone(),
            refused.clone(),
            served.clone(),
        );
        hammer.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.call(call("echo", json!(1))).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(e)
                        if e.code() == Code::ResourceExhausted
                            && harness::reason(&e) == "rate_limited"
                            && e.metadata().get("retry-after").is_some() =>
                    {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    // Anything else is a failure of the test (counted, not hidden).
                    Err(_) => served.fetch_add(1 << 32, Ordering::Relaxed),
                };
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let loaded = paced_p99(&mut bob, 250).await;
    let hammered_for = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    hammer.shutdown_background();
    for s in spinning {
        s.abort();
    }

    let (refused, served) = (
        refused.load(Ordering::Relaxed),
        served.load(Ordering::Relaxed),
    );
    assert_eq!(
        served >> 32,
        0,
        "mallory met another refusal than rate_limited"
    );
    println!(
        "bob's p99 alone {alone:?}, beside the spinners and the hammer {loaded:?}; \
         mallory served {served}, refused {refused} in {hammered_for:.1} s"
    );
    assert!(refused > 0, "mallory was refused for her rate");
    // Held refusals: 32 streams get about 32 answers a second, not thousands.
    #[allow(clippy::cast_precision_loss)]
    let refusal_rate = refused as f64 / hammered_for;
    assert!(refusal_rate < 500.0, "{refusal_rate:.0} refusals a second");
    // Fast: within 2x of the p99 alone or under the 50 ms the fairness target allows
    // any call. (This debug build shares the two cores with the test's own clients and
    // the spinning thread; it measures 15-26 ms here. The release benchmark, `solo-bench
    // noisy`, reports the ratio: within 2x beside the hammer. Starvation would be
    // seconds.)
    let bound = (alone * 2).max(Duration::from_millis(50));
    assert!(
        loaded <= bound,
        "bob's p99 went from {alone:?} to {loaded:?} beside a spinning and a hammering tenant"
    );
    let v = s.cli_json(&["config", "show"]);
    assert_eq!(v["values"]["limits.rate_per_tenant"], 100);
}
