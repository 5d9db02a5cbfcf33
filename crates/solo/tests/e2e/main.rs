//! End-to-end tests: the real `solo` binary, driven over gRPC, REST and its own CLI.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod cluster;
mod cluster_check;
mod compaction;
mod crash;
mod egress;
mod fairness;
mod faults;
mod forwarding;
mod harness;
mod hibernation;
mod lifecycle;
mod mcp;
mod parity;
mod security;
mod tenants;

use std::time::Duration;

use futures::StreamExt;
use harness::{Server, call, counter_js, echo_js, reason};
use serde_json::{Value, json};
use solo_client::Flags;
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

#[tokio::test]
async fn grpc_deploy_call_list_status_kill() {
    let s = Server::start();
    let mut c = s.admin().await;
    let d = c
        .deploy(deploy_js("counter", counter_js()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.status, "ok");
    assert!(d.created);
    assert_eq!(d.version, 1);
    let r = c
        .call(call("counter", json!({"op": "inc", "by": 2})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Value>(&r.reply).unwrap(),
        json!({"value": 2})
    );
    c.cast(pb::CastRequest {
        service_id: "counter".into(),
        message: json!({"op": "inc"}).to_string(),
    })
    .await
    .unwrap();

    let l = c
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total, 1);
    assert_eq!(l.services[0].service_id, "counter");
    assert_eq!(l.services[0].state, "running");
    let st = c
        .status(pb::StatusRequest {
            service_id: "counter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.alive);
    assert_eq!(st.format, "js");
    assert!(st.messages >= 1);

    let k = c
        .kill(pb::KillRequest {
            service_id: "counter".into(),
            timeout_ms: 0,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.status, "ok");
    let e = c
        .status(pb::StatusRequest {
            service_id: "counter".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "not_found");
}

#[tokio::test]
async fn grpc_refuses_bad_deploys_clearly() {
    let s = Server::start();
    let mut c = s.admin().await;
    let mut elixir = deploy_js("ex", "defmodule X do end".into());
    elixir.format = pb::deploy_request::DeployFormat::ElixirSource as i32;
    let e = c.deploy(elixir).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "unsupported_format");
    assert!(e.message().contains("elixir"), "{}", e.message());

    let mut unknown = deploy_js("ex", "export function handleCall(r) { return r }".into());
    unknown.format = 42;
    let e = c.deploy(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("42"), "{}", e.message());

    let e = c.deploy(deploy_js("Bad Id!", echo_js())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = c
        .deploy(deploy_js("broken", "export function (".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Nothing was left behind by the refusals.
    let l = c
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total, 0);
}

#[tokio::test]
async fn rest_lifecycle_and_refusals() {
    let s = Server::start();
    let admin = s.rest(&s.admin_profile());

    let (code, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "echo", "code": echo_js()}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["service_id"], "echo");
    let (code, body) = admin
        .post("/v1/services/echo/call", &json!({"hello": [1, 2]}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reply"], json!({"hello": [1, 2]}));
    let (code, body) = admin.post("/v1/services/echo/cast", &json!({"x": 1})).await;
    assert_eq!(code, 202, "{body}");
    let (code, body) = admin.get("/v1/services?limit=10").await;
    assert_eq!(code, 200);
    assert_eq!(body["total"], 1);
    let (code, body) = admin.get("/v1/services/echo").await;
    assert_eq!(code, 200);
    assert_eq!(body["state"], "running");

    // A guest's exception names its line and column and carries its stack; a deploy
    // that failed says so in status until the id is deployed again.
    let thrower = "export function handleCall(r) {\n  return r.a.b;\n}\n";
    let (code, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "thrower", "code": thrower}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = admin.post("/v1/services/thrower/call", &json!({})).await;
    assert_eq!(body["error"], "service_error", "{code} {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("(at line 2, column"),
        "{body}"
    );
    assert!(
        body["details"]["stack"]
            .as_str()
            .unwrap()
            .contains("handleCall"),
        "{body}"
    );
    let broken = "export function init(c) { throw new Error('no database'); }\nexport function handleCall(r) { return r; }";
    let (code, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "broken", "code": broken}),
        )
        .await;
    assert!(code >= 400, "{code} {body}");
    let (code, body) = admin.get("/v1/services/broken").await;
    assert_eq!(body["error"], "deployment_failed", "{code} {body}");
    assert!(
        body["message"].as_str().unwrap().contains("no database"),
        "{body}"
    );

    // Malformed JSON: 400, naming the position.
    let (code, body) = harness::send(
        admin
            .req(reqwest::Method::POST, "/v1/services")
            .header("content-type", "application/json")
            .body("{\"service_id\": \"x\",\n  \"code\": }"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"], "invalid_json");
    assert!(
        body["message"].as_str().unwrap().contains("line 2"),
        "{body}"
    );
    // An unknown field is named.
    let (code, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "x", "code": "1", "colour": "red"}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    // Elixir is refused clearly.
    let (code, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "x", "code": "1", "format": "elixir_source"}),
        )
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("unsupported_format"))
    );
    // A 10 MiB body is over the limit.
    let big = "x".repeat(10 << 20);
    let (code, body) = admin
        .post("/v1/services", &json!({"service_id": "big", "code": big}))
        .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"], "body_too_large");
    let (code, body) = admin.get("/v1/services?limit=ten").await;
    assert_eq!((code, body["error"].as_str()), (400, Some("invalid_query")));
    let (code, body) = admin.get("/v1/nothing-here").await;
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")));
    let resp = admin
        .req(reqwest::Method::PATCH, "/v1/services")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Health needs no credentials; metrics needs an admin.
    let anon = s.rest(&s.profile_with(Flags {
        token: Some("solo_not_a_real_token".into()),
        ..Flags::default()
    }));
    let anon = harness::Rest {
        token: None,
        ..anon
    };
    let (code, body) = anon.get("/health").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    let (code, body) = anon.get("/v1/services").await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "unauthenticated");
    let resp = admin
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("solo_deployments_total"), "{text}");
    let alice = s.rest(&s.tenant_profile("alice"));
    let (code, body) = alice.get("/metrics").await;
    assert_eq!((code, body["error"].as_str()), (403, Some("admin_only")));

    let (code, body) = admin.delete("/v1/services/echo?timeout_ms=2000").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = admin.get("/v1/services/echo").await;
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn oversized_grpc_messages_are_refused() {
    let s = Server::start();
    let mut c = s.admin().await;
    let big = "x".repeat(10 << 20);
    let e = c.deploy(deploy_js("big", big)).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(
        e.message().contains("too large") || e.message().contains("limit"),
        "{e:?}"
    );
    // The connection and the server carry on.
    c.health(pb::HealthRequest {}).await.unwrap();
    assert_eq!(
        c.list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
}

#[tokio::test]
async fn the_plaintext_metrics_listener_serves_prometheus_text() {
    let (s, lines) = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[],
        &["--metrics-addr", "127.0.0.1:0"],
    );
    let addr = lines
        .iter()
        .find_map(|l| l.strip_prefix("metrics listening on "))
        .unwrap_or_else(|| panic!("{lines:?}"))
        .to_string();
    let mut c = s.admin().await;
    c.deploy(deploy_js("echo", echo_js())).await.unwrap();
    c.call(call("echo", json!(1))).await.unwrap();
    let http = s.rest(&s.admin_profile()).http;
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("solo_calls_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("solo_call_seconds_bucket"), "{text}");
    // The plaintext listener serves nothing else.
    let r = http
        .get(format!("http://{addr}/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn logs_over_rest_and_sse_resume() {
    let s = Server::start();
    let admin = s.rest(&s.admin_profile());
    let code =
        "export function handleCall(r) { solo.log('info', 'got ' + JSON.stringify(r)); return r; }";
    let (st, body) = admin
        .post(
            "/v1/services",
            &json!({"service_id": "talker", "code": code, "format": "js"}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    for i in 1..=3 {
        admin.post("/v1/services/talker/call", &json!(i)).await;
    }
    let (st, body) = admin.get("/v1/services/talker/logs?tail=10").await;
    assert_eq!(st, 200, "{body}");
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[2]["message"], "got 3");

    // Follow as SSE from after line 2: line 3, then a new one.
    let resp = admin
        .req(reqwest::Method::GET, "/v1/services/talker/logs?follow=true")
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    admin.post("/v1/services/talker/call", &json!(4)).await;
    let mut text = String::new();
    while !text.contains("got 4") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("id: 3\n") && text.contains("got 3"), "{text}");
    assert!(!text.contains("got 2"), "{text}");
    drop(body);
    let (st, _) = admin.get("/health").await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn watch_resumes_over_grpc_and_sse() {
    let s = Server::start();
    let mut c = s.admin().await;
    c.deploy(deploy_js("counter", counter_js())).await.unwrap();
    for _ in 0..3 {
        c.call(call("counter", json!({"op": "inc"}))).await.unwrap();
    }
    let all = c
        .query_events(pb::QueryEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(all.len() >= 3, "{all:?}");
    let resume_after = all[1].id;

    // gRPC: replay after an id, then live.
    let mut w = c
        .watch(pb::WatchRequest {
            after_id: resume_after,
            ..pb::WatchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.id, resume_after + 1);
    c.kill(pb::KillRequest {
        service_id: "counter".into(),
        timeout_ms: 0,
        force: false,
    })
    .await
    .unwrap();
    let mut saw_kill = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        if e.unwrap().event_type == "service_killed" {
            saw_kill = true;
            break;
        }
    }
    assert!(saw_kill);
    // The client goes away mid-stream.
    drop(w);

    // SSE with Last-Event-ID.
    let rest = s.rest(&s.admin_profile());
    let resp = rest
        .req(reqwest::Method::GET, "/v1/events")
        .header("accept", "text/event-stream")
        .header("last-event-id", resume_after.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains(&format!("id: {}\n", resume_after + 1)) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains(&format!("id: {resume_after}\n")), "{text}");
    // Disconnect mid-stream; the server keeps serving.
    drop(body);
    c.health(pb::HealthRequest {}).await.unwrap();
    let (code, _) = rest.get("/v1/services").await;
    assert_eq!(code, 200);
}

#[test]
fn sigterm_stops_cleanly_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir, &[]);
    let out = s.cli(&["deploy", "examples/js/counter.js"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = s.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; stderr:\n{}", s.stderr());
    assert!(!s.data_dir().join("server.json").exists());
    // A client now says the server is not running.
    let out = s.cli(&["list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.lines().count() == 1,
        "{err}"
    );

    // Started again on the same directory, the log shows the clean stop.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let s2 = Server::start_in(dir, &[]);
    let v = s2.cli_json(&["events", "--kind", "system_shutdown_complete"]);
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    let v = s2.cli_json(&["events", "--kind", "system_shutdown_started"]);
    assert_eq!(v["events"][0]["payload"]["reason"], "SIGTERM");
}

#[test]
fn shutdown_rpc_stops_the_server() {
    let mut s = Server::start();
    let out = s.cli(&["shutdown", "--grace-ms", "2000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = s.child.take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit; {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

/// The README's quick start, command by command, and `--json` everywhere.
#[test]
fn the_cli_quick_start_and_json_output() {
    let s = Server::start();
    // solo deploy examples/js/counter.js
    let v = s.cli_json(&["deploy", "examples/js/counter.js"]);
    assert_eq!(v["service_id"], "counter");
    assert_eq!(v["created"], true);
    // solo call counter '{"op":"inc"}'
    let v = s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    assert_eq!(v, json!({"value": 1}));
    let out = s.cli(&["call", "counter", r#"{"op":"inc"}"#]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"value\": 2"));
    // solo list / status
    let v = s.cli_json(&["list"]);
    assert_eq!(v["services"][0]["service_id"], "counter");
    let out = s.cli(&["list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    // An embedded server is no cluster node: no node column, no `node` key.
    assert!(
        table.contains("counter") && !table.contains("NODE"),
        "{table}"
    );
    let v = s.cli_json(&["status", "counter"]);
    assert_eq!(v["state"], "running");
    assert!(v.get("node").is_none(), "{v}");
    assert_eq!(v["messages"], 2);
    // solo watch (streams as JSON lines; replay from the start, stop after a few)
    let mut child = std::process::Command::new(harness::SOLO)
        .args(["--json", "watch", "--since", "0"])
        .env("SOLO_DATA_DIR", s.data_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event_type"], "system_started");
    // Then the deploy (after the start's log check, which races it).
    let kinds: Vec<String> = (0..2)
        .map(|_| {
            let e: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            e["event_type"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(kinds.contains(&"service_deployed".to_string()), "{kinds:?}");
    let _ = child.kill();
    let _ = child.wait();
    // The rest of the commands, as JSON.
    assert_eq!(s.cli_json(&["health"])["status"], "ok");
    let tree = s.cli_json(&["tree"]);
    assert_eq!(tree["name"], "solo");
    // Every node's tree, on one server: the one tree.
    let all = s.cli_json(&["tree", "--all"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all[0]["name"], "solo");
    let v = s.cli_json(&["events", "--kind", "service_deployed"]);
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(s.cli_json(&["events", "verify"])["ok"], true);
    let v = s.cli_json(&["logs", "counter"]);
    let _ = v;
    s.cli_json(&["secrets", "set", "api-key", "s3cret"]);
    assert_eq!(
        s.cli_json(&["secrets", "list"])["names"],
        json!(["api-key"])
    );
    assert_eq!(
        s.cli_json(&["secrets", "get", "api-key"])["value"],
        "s3cret"
    );
    let g = s.cli_json(&["caps", "grant", "service:counter", "call"]);
    let token = g["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("solo_"));
    let v = s.cli_json(&["caps", "verify", &token, "service:counter", "call"]);
    assert_eq!(v["valid"], true);
    assert_eq!(
        s.cli_json(&["caps", "list"])["capabilities"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The token alone (no certificate) calls the service through the CLI.
    let out = s.cli_env(
        &["--json", "call", "counter", r#"{"op":"get"}"#],
        &[("SOLO_TOKEN", &token)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.cli_json(&["caps", "revoke", &token])["revoked"], 1);
    assert!(
        s.cli_json(&["metrics"])["text"]
            .as_str()
            .unwrap()
            .contains("solo_calls_total")
    );
    assert_eq!(s.cli_json(&["secrets", "rm", "api-key"])["existed"], true);
    assert_eq!(s.cli_json(&["kill", "counter"])["service_id"], "counter");

    // A failure: non-zero exit, one line naming the reason.
    let out = s.cli(&["status", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not_found"), "{err}");
    let out = s.cli(&["call", "counter", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not JSON"));

    // certs issue: a tenant's certificate that works with the CLI.
    let out_dir = s.dir.path().join("carol");
    let v = s.cli_json(&[
        "certs",
        "issue",
        "carol",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let (cert, key) = (
        v["cert"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    );
    let out = s.cli_env(
        &["--json", "list"],
        &[("SOLO_CERT", &cert), ("SOLO_KEY", &key)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], 0, "carol sees none of the admin's services");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
