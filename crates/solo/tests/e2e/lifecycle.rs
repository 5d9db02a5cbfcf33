//! Behaviour across restarts and upgrades, over the real binary: hot swap and a restart
//! that keep the counter's value, SIGTERM with calls in flight, `kill -9` during a
//! storm of deploys, and discovery.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use solo_proto::v1 as pb;
use tonic::Code;

use crate::harness::{Server, counter_js, echo_js};
use crate::{call, deploy_js};

/// The README's hot swap and restart, command by command.
#[test]
fn a_hot_swap_and_a_restart_keep_the_count() {
    let s = Server::start();
    s.cli_json(&["deploy", "examples/js/counter.js"]);
    for _ in 0..3 {
        s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    }
    // solo swap counter examples/js/counter-v2.js
    let v = s.cli_json(&["swap", "counter", "examples/js/counter-v2.js"]);
    assert_eq!(v["version"], 2);
    assert_eq!(v["state_carried"], true);
    let out = s.cli(&["swap", "counter", "examples/js/counter-v2.js"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already runs"));
    // solo call counter '{"op":"dec"}'
    let v = s.cli_json(&["call", "counter", r#"{"op":"dec"}"#]);
    assert_eq!(v, json!({"value": 2, "version": 2}));
    // A swap to code that does not compile changes nothing.
    let bad = s.dir.path().join("bad.js");
    std::fs::write(&bad, "export function (").unwrap();
    let out = s.cli(&["swap", "counter", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_code"));
    assert_eq!(s.cli_json(&["status", "counter"])["version"], 2);

    // Stop (SIGTERM, as ctrl-c) and start again: the count and the version are kept.
    let mut s = s;
    assert!(s.terminate(Duration::from_secs(30)).success());
    let s = s.restart();
    let v = s.cli_json(&["call", "counter", r#"{"op":"get"}"#]);
    assert_eq!(v, json!({"value": 2, "version": 2}));
    let v = s.cli_json(&["events", "--kind", "service_recovered"]);
    assert_eq!(v["events"][0]["payload"]["snapshot_bytes"], 1);
    // Over gRPC and REST too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = s.admin().await;
        let r = c
            .hot_swap(pb::HotSwapRequest {
                service_id: "counter".into(),
                code: counter_js(),
                format: pb::deploy_request::DeployFormat::Javascript as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.version, r.method.as_str(), r.state_carried), (3, "swap", true));
        let e = c
            .hot_swap(pb::HotSwapRequest {
                service_id: "nope".into(),
                code: counter_js(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let rest = s.rest(&s.admin_profile());
        let (code, body) = rest
            .post(
                "/v1/services/counter/swap",
                &json!({"code": std::fs::read_to_string(crate::harness::workspace_root().join("examples/js/counter-v2.js")).unwrap(), "mode": "replace"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!((body["method"].as_str(), body["version"].as_u64()), (Some("replace"), Some(4)));
        let (_, body) = rest.post("/v1/services/counter/call", &json!({"op": "get"})).await;
        assert_eq!(body["reply"]["value"], 0, "replace does not carry state");
    });
}

#[test]
fn sigterm_lets_calls_in_flight_finish() {
    let mut s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let mut c = s.admin().await;
        // Each call takes about 10 ms of CPU.
        let slow = r#"export function handleCall(r) {
            const end = Date.now() + 10; while (Date.now() < end) {} return r; }"#;
        c.deploy(deploy_js("slow", slow.into())).await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..100 {
            let mut c = c.clone();
            calls.spawn(async move { c.call(call("slow", json!(i))).await });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.signal_term();
        let mut results = Vec::new();
        while let Some(r) = calls.join_next().await {
            results.push(r.unwrap());
        }
        results
    });
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", s.stderr());
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok,
        100,
        "every call in flight was answered: {:?}",
        results.iter().find(|r| r.is_err())
    );
    // The stop is in the log, and new work was refused only after it began.
    let s = s.restart();
    let v = s.cli_json(&["events", "--kind", "system_shutdown_complete"]);
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
}

#[test]
fn kill_9_during_deploys_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SOLO_LIMITS__MAX_SERVICES_PER_TENANT", "5000"),
        ("SOLO_LIMITS__MAX_MEMORY_MB_PER_TENANT", "10000000"),
    ];
    let mut s = Server::start_in(dir, &env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (deployed, kill_sent, killed) = rt.block_on(async {
        let c = s.admin().await;
        let acked =
            // (deploys acknowledged, kills sent, kills acknowledged)
            std::sync::Arc::new(parking_lot::Mutex::new((
                BTreeSet::new(),
                BTreeSet::new(),
                BTreeSet::new(),
            )));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let (mut c, acked) = (c.clone(), std::sync::Arc::clone(&acked));
            tasks.spawn(async move {
                for i in 0..125 {
                    let id = format!("s{w}-{i}");
                    let mut d = deploy_js(&id, echo_js());
                    d.memory_mb = 8;
                    if c.deploy(d).await.is_err() {
                        return;
                    }
                    acked.lock().0.insert(id.clone());
                    if c.call(call(&id, json!(i))).await.is_err() {
                        return;
                    }
                    if i % 5 == 0 {
                        let k = pb::KillRequest {
                            service_id: id.clone(),
                            timeout_ms: 0,
                            force: false,
                        };
                        acked.lock().1.insert(id.clone());
                        if c.kill(k).await.is_err() {
                            return;
                        }
                        acked.lock().2.insert(id);
                    }
                }
            });
        }
        // Let some hundreds through, then pull the plug.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if acked.lock().0.len() >= 300 {
                break;
            }
        }
        s.kill9();
        while tasks.join_next().await.is_some() {}
        let a = acked.lock();
        (a.0.clone(), a.1.clone(), a.2.clone())
    });
    assert!(deployed.len() >= 300);
    let s = Server::start_in(
        std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap()),
        &env,
    );
    let v = s.cli_json(&["list", "--limit", "1000"]);
    let running: BTreeSet<String> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["service_id"].as_str().unwrap().to_string())
        .collect();
    for id in &deployed {
        if killed.contains(id) {
            assert!(!running.contains(id), "{id} was killed and came back");
        } else if kill_sent.contains(id) {
            // A kill in flight when the plug was pulled may or may not have
            // been made durable: either outcome is correct.
        } else {
            assert!(running.contains(id), "{id} was acknowledged and is missing");
        }
    }
    // The log is intact: ids dense, the chain unbroken.
    let v = s.cli_json(&["events", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    // Every recovered service answers.
    let id = running.iter().next().unwrap();
    let r = s.cli_json(&["call", id, "7"]);
    assert_eq!(r, json!(7));
}

#[tokio::test]
async fn discovery_over_grpc_rest_and_the_cli() {
    let s = Server::start();
    let mut alice = s.tenant("alice").await;
    for id in ["echo-eu", "echo-us"] {
        alice.deploy(deploy_js(id, echo_js())).await.unwrap();
    }
    let r = alice
        .register_service(pb::RegisterServiceRequest {
            service_id: "echo-eu".into(),
            service_name: "echo".into(),
            version: "1.2.0".into(),
            metadata: [("region".to_string(), "eu".to_string())].into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.registered);
    assert_eq!(r.service_handle.len(), 32);
    let rest = s.rest(&s.tenant_profile("alice"));
    let (code, body) = rest
        .post(
            "/v1/discovery",
            &json!({"service_id": "echo-us", "service_name": "echo", "metadata": {"region": "us"}, "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let found = alice
        .discover_service(pb::DiscoverServiceRequest {
            service_name: "echo".into(),
            filters: [("region".to_string(), "eu".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_id, "echo-eu");
    assert!(found[0].alive);
    let (_, body) = rest.get("/v1/discovery?name=echo&region=us").await;
    assert_eq!(body["services"][0]["service_id"], "echo-us");
    // TTL 1 s: gone after 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = alice
        .get_services(pb::GetServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total_count, 1);
    // Bob sees nothing and cannot register Alice's service.
    let mut bob = s.tenant("bob").await;
    let all = bob
        .get_services(pb::GetServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total_count, 0);
    let e = bob
        .register_service(pb::RegisterServiceRequest {
            service_id: "echo-eu".into(),
            service_name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The CLI (as the admin, who has none; then as alice).
    let v = s.cli_json(&["discover"]);
    assert_eq!(v["total_count"], 0);
    let (cert, key) = s.issue("alice", false);
    let (cert, key) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    let out = s.cli_env(
        &["--json", "discover", "echo", "--filter", "region=eu"],
        &[("SOLO_CERT", &cert), ("SOLO_KEY", &key)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["service_id"], "echo-eu");
    assert_eq!(v["total_count"], 1);
}

/// The deploy options the spec has, the swap's rollback window and registration, from
/// the CLI.
#[test]
fn the_cli_sets_restart_intensity_startup_timeout_rollback_window_and_registers() {
    let s = Server::start();
    s.cli_json(&[
        "deploy",
        "examples/js/counter.js",
        "--max-restarts",
        "2",
        "--max-seconds",
        "10",
        "--startup-timeout-ms",
        "3000",
    ]);
    let v = s.cli_json(&["events", "--kind", "service_deployed"]);
    let p = &v["events"][0]["payload"];
    assert_eq!(
        p["restart_limits"],
        json!({"max_restarts": 2, "max_seconds": 10})
    );
    assert_eq!(p["limits"]["startup_timeout_ms"], 3000);
    // A window over the limit is refused and changes nothing; one within it is taken.
    let out = s.cli(&[
        "swap",
        "counter",
        "examples/js/counter-v2.js",
        "--rollback-window-ms",
        "700000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rollback window of 700000 ms"), "{err}");
    assert_eq!(s.cli_json(&["status", "counter"])["version"], 1);
    let v = s.cli_json(&[
        "swap",
        "counter",
        "examples/js/counter-v2.js",
        "--rollback-window-ms",
        "200",
    ]);
    assert_eq!(v["version"], 2);
    // solo register NAME --service ID --meta K=V --ttl S, then discover finds it.
    let v = s.cli_json(&[
        "register",
        "counting",
        "--service",
        "counter",
        "--meta",
        "region=eu",
        "--ttl",
        "60",
    ]);
    assert_eq!(v["registered"], true);
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    let v = s.cli_json(&["discover", "counting", "--filter", "region=eu"]);
    assert_eq!(v["services"][0]["service_id"], "counter");
    let out = s.cli(&[
        "register",
        "x",
        "--service",
        "counter",
        "--meta",
        "noequals",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--meta \"noequals\""));
    let out = s.cli(&["register", "x", "--service", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    // solo deregister NAME --service ID: gone from discovery; again, refused clearly.
    let v = s.cli_json(&["deregister", "counting", "--service", "counter"]);
    assert_eq!(v["deregistered"], true);
    let v = s.cli_json(&["discover", "counting"]);
    assert_eq!(v["total_count"], 0);
    let out = s.cli(&["deregister", "counting", "--service", "counter"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not registered as counting"));
}

/// A small disk takes a small write-ahead log (`[store] wal_mb`); a deploy bigger than the
/// log still lands (it is committed to the database directly), and survives a restart.
#[test]
fn a_small_write_ahead_log_is_enough() {
    let s = Server::start_in(tempfile::tempdir().unwrap(), &[("SOLO_STORE__WAL_MB", "1")]);
    let wal = std::fs::metadata(s.data_dir().join("solo.wal"))
        .unwrap()
        .len();
    assert!(wal <= (1 << 20) + 4096, "the log is {wal} bytes");
    // A component of about 1.5 MiB: more than the whole log.
    let big = s.data_dir().join("big.js");
    let filler = "x".repeat(1_500_000);
    std::fs::write(
        &big,
        format!(
            "const pad = \"{filler}\";\nexport function handleCall(r) {{ return pad.length; }}\n"
        ),
    )
    .unwrap();
    s.cli_json(&["deploy", big.to_str().unwrap(), "--id", "big"]);
    assert_eq!(s.cli_json(&["call", "big", "{}"]), json!(1_500_000));
    // kill -9 and start again: acknowledged means durable, whichever way it was written.
    let s = s.restart();
    assert_eq!(s.cli_json(&["call", "big", "{}"]), json!(1_500_000));
}
