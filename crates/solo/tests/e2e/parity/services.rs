//! Parity of the service operations: deploy, status, list, call, cast, swap, logs, kill.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use solo_types::ServiceStatus;
use solo_types::api::*;

use super::{Faces, first_sse, js, raw, same, same_refusal, sid};

/// An echo that logs what it was sent.
const TALKER: &str = r#"export function handleCall(r) { solo.log("info", "got " + JSON.stringify(r).length); return r; }"#;

fn talker() -> String {
    TALKER.to_string()
}

pub(super) async fn services_and_calls(f: &Faces) {
    use Method as M;
    // deploy
    let g = f.grpc.deploy(&js("p-grpc", &talker())).await.unwrap();
    let r: Deployed = f
        .ok(
            M::POST,
            "/v1/services",
            Some(json!({"service_id": "p-rest", "code": talker()})),
        )
        .await;
    let (mut g2, mut r2) = (g.clone(), r.clone());
    (g2.service_id, r2.service_id) = (sid("x"), sid("x"));
    same("deploy", &g2, &r2);
    let again: Deployed = f
        .ok(
            M::POST,
            "/v1/services",
            Some(json!({"service_id": "p-grpc", "code": talker()})),
        )
        .await;
    same(
        "idempotent deploy",
        &f.grpc.deploy(&js("p-grpc", &talker())).await.unwrap(),
        &again,
    );
    for (body, why) in [
        (json!({"service_id": "p grpc", "code": "1"}), "a bad id"),
        (
            json!({"service_id": "x", "code": "1", "format": "elixir_source"}),
            "elixir",
        ),
        (
            json!({"service_id": "p-grpc", "code": "export function handleCall(r) { return 1; }"}),
            "a different existing one",
        ),
        (
            json!({"service_id": "x", "code": "1", "memory_mb": 100_000}),
            "too much memory",
        ),
        (
            json!({"service_id": "x", "code": "syntax error ("}),
            "bad code",
        ),
        (
            json!({"service_id": "x", "code": "1", "tool": {"name": "solo_x", "description": "d", "input_schema": {"type": "object"}}}),
            "a tool with a reserved name",
        ),
    ] {
        let pb = solo_proto::v1::DeployRequest {
            service_id: body["service_id"].as_str().unwrap().into(),
            code: body["code"].as_str().unwrap().into(),
            // ELIXIR_SOURCE, or inferred from the code.
            format: i32::from(body.get("format").is_some()),
            memory_mb: body["memory_mb"]
                .as_u64()
                .map_or(0, |m| u32::try_from(m).unwrap()),
            tool: body.get("tool").map(|t| solo_proto::v1::ToolSpec {
                name: t["name"].as_str().unwrap().into(),
                description: t["description"].as_str().unwrap().into(),
                input_schema_json: t["input_schema"].to_string(),
            }),
            ..Default::default()
        };
        same_refusal(
            &format!("deploy {why}"),
            raw(f.grpc.raw().deploy(pb).await),
            f.send(M::POST, "/v1/services", Some(body)).await,
        );
    }

    // status, list
    let (gs, rs): (ServiceStatus, ServiceStatus) = (
        f.grpc.status(&sid("p-grpc")).await.unwrap(),
        f.ok(M::GET, "/v1/services/p-grpc", None).await,
    );
    same("status", &gs, &rs);
    same_refusal(
        "status of nothing",
        f.grpc.status(&sid("nope")).await,
        f.send(M::GET, "/v1/services/nope", None).await,
    );
    let filter = ListFilter {
        limit: 10,
        ..ListFilter::default()
    };
    let rl: ServiceList = f.ok(M::GET, "/v1/services?limit=10", None).await;
    same("list", &f.grpc.list(&filter).await.unwrap(), &rl);
    let pb = solo_proto::v1::ListRequest {
        state: "dancing".into(),
        ..Default::default()
    };
    same_refusal(
        "list by a bad state",
        raw(f.grpc.raw().list(pb).await),
        f.send(M::GET, "/v1/services?state=dancing", None).await,
    );

    // call (a reply deeper than any parser's recursion limit keeps its type), cast
    let deep = format!("{}7{}", "[".repeat(300), "]".repeat(300));
    let g = f.grpc.call(&sid("p-grpc"), &deep, None).await.unwrap();
    let (status, body) = f.send(M::POST, "/v1/services/p-grpc/call", None).await;
    assert_eq!(status, 400, "an empty body is not JSON: {body}");
    let resp = f
        .rest
        .req(M::POST, "/v1/services/p-grpc/call")
        .body(deep.clone())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert_eq!(text, format!("{{\"reply\":{deep}}}"));
    assert_eq!(g, deep);
    let rest_bad = crate::harness::send(
        f.rest
            .req(M::POST, "/v1/services/p-grpc/call")
            .body("{not json"),
    )
    .await;
    same_refusal(
        "a call that is not JSON",
        f.grpc.call(&sid("p-grpc"), "{not json", None).await,
        rest_bad,
    );
    same_refusal(
        "a call with too long a timeout",
        f.grpc
            .call(&sid("p-grpc"), "1", Some(Duration::from_secs(3600)))
            .await,
        f.send(
            M::POST,
            "/v1/services/p-grpc/call?timeout_ms=3600000",
            Some(json!(1)),
        )
        .await,
    );
    same_refusal(
        "a call to nothing",
        f.grpc.call(&sid("nope"), "1", None).await,
        f.send(M::POST, "/v1/services/nope/call", Some(json!(1)))
            .await,
    );
    let rc: Accepted = f
        .ok(M::POST, "/v1/services/p-grpc/cast", Some(json!({"x": 1})))
        .await;
    same(
        "cast",
        &f.grpc.cast(&sid("p-grpc"), "{\"x\":1}").await.unwrap(),
        &rc,
    );
    let rest_bad =
        crate::harness::send(f.rest.req(M::POST, "/v1/services/p-grpc/cast").body("[")).await;
    same_refusal(
        "a cast that is not JSON",
        f.grpc.cast(&sid("p-grpc"), "[").await,
        rest_bad,
    );

    // swap (the same code: unchanged), logs
    let swap = SwapRequest {
        service_id: sid("p-grpc"),
        format: solo_types::Format::Js,
        code: talker().into_bytes().into(),
        mode: SwapMode::Swap,
        rollback_window: None,
    };
    let rw: Swapped = f
        .ok(
            M::POST,
            "/v1/services/p-grpc/swap",
            Some(json!({"code": talker()})),
        )
        .await;
    same("swap", &f.grpc.swap(&swap).await.unwrap(), &rw);
    let bad_mode = f
        .send(
            M::POST,
            "/v1/services/p-grpc/swap",
            Some(json!({"code": "1", "mode": "sideways"})),
        )
        .await;
    let pb = solo_proto::v1::HotSwapRequest {
        service_id: "p-grpc".into(),
        code: "1".into(),
        mode: "sideways".into(),
        ..Default::default()
    };
    same_refusal(
        "a swap in a bad mode",
        raw(f.grpc.raw().hot_swap(pb).await),
        bad_mode,
    );
    let rl: LogLines = f.ok(M::GET, "/v1/services/p-grpc/logs?tail=0", None).await;
    same("logs", &f.grpc.logs(&sid("p-grpc"), 0).await.unwrap(), &rl);
    same_refusal(
        "logs of nothing",
        f.grpc.logs(&sid("nope"), 5).await,
        f.send(M::GET, "/v1/services/nope/logs", None).await,
    );

    // a followed log: the first past line, on both feeds
    let mut g = f.grpc.follow_logs(&sid("p-grpc"), 1, 0).await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(10), g.next())
        .await
        .expect("a past log line")
        .unwrap()
        .unwrap();
    let resp = f
        .rest
        .req(M::GET, "/v1/services/p-grpc/logs?follow=true&tail=1")
        .send()
        .await
        .unwrap();
    let r: LogLine = first_sse(resp).await;
    assert_eq!(g, r, "a followed log");

    // kill
    let rk: Killed = f.ok(M::DELETE, "/v1/services/p-rest", None).await;
    let gk = f
        .grpc
        .kill(&sid("p-grpc"), KillOptions::default())
        .await
        .unwrap();
    let (mut gk, mut rk) = (gk, rk);
    (gk.service_id, rk.service_id) = (sid("x"), sid("x"));
    same("kill", &gk, &rk);
    same_refusal(
        "a kill of nothing",
        f.grpc.kill(&sid("nope"), KillOptions::default()).await,
        f.send(M::DELETE, "/v1/services/nope", None).await,
    );
}
