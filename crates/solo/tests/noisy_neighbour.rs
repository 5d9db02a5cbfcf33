//! The noisy neighbour, alone in its own test binary so that no other test shares the
//! two cores while it measures: one tenant floods ten times its in-flight limit while
//! another tenant's p99 is compared with its unloaded p99.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use harness::{Server, echo_js};
use serde_json::json;
use solo_proto::v1 as pb;
use tonic::Code;

fn deploy_js(id: &str, code: String) -> pb::DeployRequest {
    pb::DeployRequest {
        service_id: id.into(),
        code,
        format: pb::deploy_request::DeployFormat::Javascript as i32,
        ..pb::DeployRequest::default()
    }
}

fn call(id: &str, request: serde_json::Value) -> pb::CallRequest {
    pb::CallRequest {
        service_id: id.into(),
        request: request.to_string(),
        timeout_ms: 5000,
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() - 1) * 99 / 100]
}

async fn timed_calls(c: &mut solo_client::Client, id: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = std::time::Instant::now();
        c.call(call(id, json!(i))).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_neighbour_is_shed_while_the_other_tenant_stays_fast() {
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[("SOLO_LIMITS__MAX_PER_TENANT", "10")],
    );
    let mut alice = s.tenant("alice").await;
    let mut bob = s.tenant("bob").await;
    let slow = r#"export function handleCall(r) {
        const end = Date.now() + 2; while (Date.now() < end) {} return r; }"#;
    alice.deploy(deploy_js("slow", slow.into())).await.unwrap();
    bob.deploy(deploy_js("echo", echo_js())).await.unwrap();
    timed_calls(&mut bob, "echo", 50).await;
    let unloaded = p99(timed_calls(&mut bob, "echo", 500).await);

    // Alice keeps 100 calls going: ten times her in-flight limit.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (mut c, stop, shed) = (alice.clone(), stop.clone(), shed.clone());
        flood.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.call(call("slow", json!(1))).await {
                    Ok(_) => {}
                    // Shed: wait as long as the server's retry hint says.
                    Err(e) if e.code() == Code::ResourceExhausted => {
                        assert_eq!(harness::reason(&e), "load_shed");
                        shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let secs = e
                            .metadata()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .expect("a retry hint");
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = p99(timed_calls(&mut bob, "echo", 500).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    assert!(
        shed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the flood was shed"
    );
    // Within 2x of the unloaded p99. The flooding client shares the two cores with the
    // server here, and millisecond tails on them are scheduler noise, so 10 ms of
    // absolute slack; starvation would be seconds. The benchmark reports the ratio.
    let bound = (unloaded * 2).max(unloaded + Duration::from_millis(10));
    println!("bob's p99: unloaded {unloaded:?}, under the flood {loaded:?}");
    assert!(
        loaded <= bound,
        "bob's p99 went from {unloaded:?} to {loaded:?} under alice's flood"
    );
    // The sampled events are there, and the limit can be changed at run time.
    let v = s.cli_json(&["events", "--of-tenant", "alice", "--kind", "load_shed"]);
    assert!(!v["events"].as_array().unwrap().is_empty());
    let v = s.cli_json(&["config", "set", "limits.max_per_tenant", "200"]);
    // The same JSON shape as REST's answer: numbers.
    assert_eq!(
        (v["previous"].as_u64(), v["value"].as_u64()),
        (Some(10), Some(200))
    );
    let v = s.cli_json(&["config", "show"]);
    assert_eq!(v["values"]["limits.max_per_tenant"], 200);
    assert_eq!(v["pressure"], "normal");
    let rest = s.rest(&s.admin_profile());
    let resp = rest
        .req(reqwest::Method::PUT, "/v1/system/config")
        .json(&json!({"key": "breaker.failures", "value": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (code, body) = s
        .rest(&s.tenant_profile("alice"))
        .get("/v1/system/config")
        .await;
    assert_eq!((code, body["error"].as_str()), (403, Some("admin_only")));
}
