//! Fairness from outside: one tenant's spinning JavaScript services do not stall another
//! tenant's calls through the gateway. The spinners run in the sandbox's busy lane,
//! which leaves one of the server's threads to the gateway, the kernel and short
//! messages. (`solo-bench kernel` reports the figures; the bounds here are loose enough
//! for a shared CI machine, and far below what the calls took before the lane.)

use std::time::{Duration, Instant};

use serde_json::json;
use solo_proto::v1 as pb;

use crate::harness::{Server, echo_js, workspace_root};
use crate::{call, deploy_js};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_spinning_js_services_do_not_stall_another_tenants_calls() {
    let s = Server::start();
    let (mut a, mut b) = (s.tenant("a").await, s.tenant("b").await);
    b.deploy(deploy_js("echo", echo_js())).await.unwrap();
    let mut timed = async |n: usize| {
        let mut took = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            b.call(call("echo", json!({ "op": "echo", "n": i })))
                .await
                .unwrap();
            took.push(t.elapsed());
        }
        took.sort();
        took
    };
    timed(20).await;
    let idle = timed(100).await;

    let spinner = std::fs::read_to_string(workspace_root().join("examples/js/spinner.js")).unwrap();
    let mut spinning = Vec::new();
    for i in 0..8 {
        let id = format!("spin-{i}");
        a.deploy(pb::DeployRequest {
            cpu_ms_per_message: 20_000,
            message_timeout_ms: 30_000,
            ..deploy_js(&id, spinner.clone())
        })
        .await
        .unwrap();
        let mut a = a.clone();
        spinning.push(tokio::spawn(async move {
            let _ = a
                .call(pb::CallRequest {
                    timeout_ms: 30_000,
                    ..call(&id, json!({ "mode": "spin" }))
                })
                .await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = timed(300).await;
    for task in &spinning {
        task.abort();
    }
    let q = |v: &[Duration], q: f64| v[(v.len() - 1) * (q * 100.0) as usize / 100];
    let (idle_p50, p50, p99) = (q(&idle, 0.5), q(&busy, 0.5), q(&busy, 0.99));
    println!("idle p50 {idle_p50:?}; with 8 spinners p50 {p50:?} p99 {p99:?}");
    // Measured here in a debug build: idle p50 1.2 ms; with the spinners 1.3 ms (p99
    // 4.1 ms), and without the busy lane 5.4 ms (p99 12.7 ms).
    assert!(
        p50 < idle_p50 * 5 / 2 + Duration::from_millis(1),
        "p50 {p50:?}"
    );
    // The median (above) tells the lane from its absence even on a busy CI machine;
    // this tail bound catches a return of the stalls spinners once caused (seconds).
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
}

/// Hostile JavaScript: each escape or exhaustion attempt stops inside its own instance,
/// with its crash kind, while another tenant's calls, timed before, during and after,
/// all succeed and stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_stop_inside_their_own_instance() {
    const HOSTILE: &str = r#"
        export function init(c) { if (c && c.spin) for (;;) {} }
        export function handleCall(r) {
          switch (r.mode) {
            case "spin": for (;;) {}
            case "bomb": { const a = []; for (;;) a.push(new Array(100000).fill(r)); }
            case "deep": { const f = (n) => f(n + 1) + 1; return f(0); }
            case "regex": return /^(a+)+$/.test("a".repeat(40) + "b");
            case "huge": return "x".repeat(16 << 20);
            case "pollute": {
              Object.prototype.toJSON = () => "polluted";
              Array.prototype.push = () => 0;
              try { solo.call = async () => "stolen"; } catch (e) {}
              try { Object.setPrototypeOf(solo, { kvGet: () => "stolen" }); } catch (e) {}
              return { frozen: Object.isFrozen(solo) };
            }
            default: return "ok";
          }
        }
    "#;
    let s = Server::start();
    let (mut evil, mut good) = (s.tenant("evil").await, s.tenant("good").await);
    good.deploy(deploy_js("echo", echo_js())).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = {
        let (stop, mut good) = (stop.clone(), good.clone());
        tokio::spawn(async move {
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let reply = good
                    .call(call("echo", json!({ "op": "echo", "n": [1, 2] })))
                    .await
                    .unwrap()
                    .into_inner();
                took.push(t.elapsed());
                // Another tenant's prototypes are its own.
                assert_eq!(reply.reply, r#"{"n":[1,2],"op":"echo"}"#);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // An infinite loop in init fails the deploy.
    let refused = evil
        .deploy(pb::DeployRequest {
            config_json: r#"{"spin":true}"#.into(),
            cpu_ms_per_message: 300,
            ..deploy_js("spin-init", HOSTILE.into())
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("cpu_limit"), "{refused:?}");
    evil.deploy(deploy_js("hostile", HOSTILE.into()))
        .await
        .unwrap();
    for (mode, expected) in [
        ("spin", "cpu_limit"),
        ("bomb", "memory_limit"),
        ("deep", "stack_overflow"),
        ("regex", "cpu_limit"),
        ("huge", "reply"),
    ] {
        // Callers that wait long: on a loaded machine the CPU budget's worth of work
        // (1 s) can take many times as long in wall time.
        let e = evil
            .call(pb::CallRequest {
                timeout_ms: 30_000,
                ..call("hostile", json!({ "mode": mode }))
            })
            .await
            .unwrap_err();
        assert!(e.message().contains(expected), "{mode}: {e:?}");
        // The service comes back (restarted after a crash) and answers.
        let mut answered = false;
        for _ in 0..50 {
            if evil
                .call(call("hostile", json!({ "mode": "ok" })))
                .await
                .is_ok()
            {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answered, "{mode}: the service did not come back");
    }
    let polluted = evil
        .call(call("hostile", json!({ "mode": "pollute" })))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        polluted.reply, "\"polluted\"",
        "its own replies, and only those"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut took = timer.await.unwrap();
    took.sort();
    let (p99, max) = (took[(took.len() - 1) * 99 / 100], took[took.len() - 1]);
    println!(
        "{} calls of another tenant: p99 {p99:?}, max {max:?}",
        took.len()
    );
    // Loose for a shared CI machine (here: p99 9 ms, max 13 ms in a debug build), and
    // far below a hostile script's CPU budget (1 s), which a stalled call would wait.
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(max < Duration::from_millis(500), "max {max:?}");
}
