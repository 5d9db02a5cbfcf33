//! The noisy neighbour, alone in its own test binary so that no other test shares the
//! two cores while it measures: one tenant floods ten times its in-flight limit, over
//! gRPC and then over REST, while another tenant's p99 on the same face is compared with
//! its unloaded p99. Both faces shed the flood the same way.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use harness::{Server, call, echo_js};
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

async fn timed_rest_calls(c: &harness::Rest, id: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = std::time::Instant::now();
        let (code, body) = c.post(&format!("/v1/services/{id}/call"), &json!(i)).await;
        assert_eq!(code, 200, "{body}");
        out.push(t.elapsed());
    }
    out
}

/// One request of alice's flood: how long the server says to wait when it sheds it.
type Flooder = Arc<dyn Fn() -> BoxFuture<'static, Option<u64>> + Send + Sync>;

/// Alice keeps 100 calls going, ten times her in-flight limit, through `flooder`,
/// waiting out each retry hint, while `measure` takes bob's p99 up to three times, until
/// one is within `bound` of `unloaded`; returns the best p99 and how many were shed.
/// A stall holds for as long as the flood does, so it fails all three; a scheduler
/// hiccup on the two shared cores does not.
async fn under_flood<F, Fut>(flooder: Flooder, unloaded: Duration, measure: F) -> (Duration, u64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let shed = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (f, stop, shed) = (Arc::clone(&flooder), stop.clone(), shed.clone());
        flood.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(secs) = f().await {
                    shed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(measure().await);
        if best <= bound(unloaded) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    (best, shed.load(Ordering::Relaxed))
}

/// Within 2x of the unloaded p99, with 50 ms of absolute slack: this test is a debug
/// build whose flooding client (100 tasks handling refusals) shares the two cores with
/// the server, and bob's p99 beside it measured 15 to 35 ms from one run to the next on
/// this machine (the busy lane keeps bob's calls moving; alice's calls spin on the wall
/// clock, so her CPU stays bounded too). What the test guards is that bob is not stalled
/// behind the flood (a stall is a queue of alice's calls: hundreds of ms); the release
/// benchmark (`solo-bench noisy`) reports the ratio.
fn bound(unloaded: Duration) -> Duration {
    (unloaded * 2).max(unloaded + Duration::from_millis(50))
}

fn within_bound(face: &str, unloaded: Duration, loaded: Duration, shed: u64) {
    assert!(shed > 0, "the {face} flood was shed");
    println!("{face}: bob's p99 unloaded {unloaded:?}, under the flood {loaded:?}");
    assert!(
        loaded <= bound(unloaded),
        "{face}: bob's p99 went from {unloaded:?} to {loaded:?} under alice's flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_neighbour_is_shed_on_both_faces_while_the_other_tenant_stays_fast() {
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[("SOLO_LIMITS__MAX_PER_TENANT", "10")],
    );
    let alice = s.tenant("alice").await;
    let mut bob = s.tenant("bob").await;
    let slow = r#"export function handleCall(r) {
        const end = Date.now() + 2; while (Date.now() < end) {} return r; }"#;
    alice
        .clone()
        .deploy(deploy_js("slow", slow.into()))
        .await
        .unwrap();
    bob.deploy(deploy_js("echo", echo_js())).await.unwrap();

    // Over gRPC.
    timed_calls(&mut bob, "echo", 50).await;
    let unloaded = p99(timed_calls(&mut bob, "echo", 500).await);
    let grpc: Flooder = Arc::new(move || {
        let mut c = alice.clone();
        Box::pin(async move {
            match c.call(call("slow", json!(1))).await {
                Ok(_) => None,
                Err(e) if e.code() == Code::ResourceExhausted => {
                    assert_eq!(harness::reason(&e), "load_shed");
                    let hint = e
                        .metadata()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok());
                    Some(hint.and_then(|v| v.parse().ok()).expect("a retry hint"))
                }
                Err(e) => panic!("{e:?}"),
            }
        })
    });
    let (loaded, shed) = under_flood(grpc, unloaded, || {
        let mut b = bob.clone();
        async move { p99(timed_calls(&mut b, "echo", 500).await) }
    })
    .await;
    within_bound("gRPC", unloaded, loaded, shed);

    // Over REST: the same limits, the same refusal, the same hint.
    let bob_rest = s.rest(&s.tenant_profile("bob"));
    let alice_rest = Arc::new(s.rest(&s.tenant_profile("alice")));
    timed_rest_calls(&bob_rest, "echo", 50).await;
    let unloaded = p99(timed_rest_calls(&bob_rest, "echo", 500).await);
    let rest: Flooder = Arc::new(move || {
        let c = Arc::clone(&alice_rest);
        Box::pin(async move {
            let resp = c
                .req(reqwest::Method::POST, "/v1/services/slow/call")
                .json(&json!(1))
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 => None,
                429 => {
                    let hint = resp.headers().get("retry-after").cloned();
                    let body: serde_json::Value = resp.json().await.unwrap();
                    assert_eq!(body["error"], "load_shed", "{body}");
                    let hint = hint.and_then(|v| v.to_str().ok()?.parse().ok());
                    Some(hint.expect("a retry hint"))
                }
                other => panic!("{other}: {}", resp.text().await.unwrap_or_default()),
            }
        })
    });
    let (loaded, shed) = under_flood(rest, unloaded, || async {
        p99(timed_rest_calls(&bob_rest, "echo", 500).await)
    })
    .await;
    within_bound("REST", unloaded, loaded, shed);

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
