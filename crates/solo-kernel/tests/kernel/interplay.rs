//! Services together: calls between them, their data and logs, quotas, a thousand at
//! once, a crash storm, and the system tree around them.

use super::*;

#[tokio::test]
async fn services_call_each_other_and_a_cycle_ends_in_a_timeout() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("echo", Format::Wasm, "echo"))
        .await
        .unwrap();
    let relay = r#"
        export async function handleCall(req) {
            return await solo.call(req.to, req.body, { timeoutMs: req.timeout || 1000 });
        }
    "#;
    for id in ["relay-a", "relay-b"] {
        k.deploy(
            &a,
            DeployRequest::new(sid(id), Format::Js, relay.as_bytes().to_vec()),
        )
        .await
        .unwrap();
    }
    let reply = k
        .call(
            &a,
            &sid("relay-a"),
            r#"{"to":"echo","body":{"hi":1}}"#,
            Some(SECOND * 2),
        )
        .await
        .unwrap();
    assert_eq!(reply, r#"{"hi":1}"#);
    // relay-a calls relay-b, which calls relay-a: busy, so that inner call times out.
    let t = Instant::now();
    let err = k
        .call(
            &a,
            &sid("relay-a"),
            r#"{"to":"relay-b","timeout":2000,"body":{"to":"relay-a","timeout":300,"body":1}}"#,
            Some(SECOND * 5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, KernelError::ServiceError(ref m) if m.message.contains("did not answer")),
        "{err}"
    );
    assert!(t.elapsed() < SECOND * 3, "{:?}", t.elapsed());
    // Another tenant's service cannot be reached by name.
    let b = tenant("b");
    k.deploy(
        &b,
        DeployRequest::new(sid("relay"), Format::Js, relay.as_bytes().to_vec()),
    )
    .await
    .unwrap();
    let err = k
        .call(&b, &sid("relay"), r#"{"to":"echo","body":1}"#, Some(SECOND))
        .await
        .unwrap_err();
    assert!(
        matches!(err, KernelError::ServiceError(ref m) if m.message.contains("not found")),
        "{err}"
    );
}

#[tokio::test]
async fn kv_is_durable_per_service_and_removed_with_it() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    for (id, f) in [("notes-w", Format::Wasm), ("notes-j", Format::Js)] {
        k.deploy(&a, req(id, f, "kv-notes")).await.unwrap();
        k.call(
            &a,
            &sid(id),
            r#"{"op":"put","key":"k1","value":"v1"}"#,
            Some(SECOND),
        )
        .await
        .unwrap();
    }
    // Same key, separate stores.
    k.call(
        &a,
        &sid("notes-j"),
        r#"{"op":"put","key":"k1","value":"other"}"#,
        Some(SECOND),
    )
    .await
    .unwrap();
    let got = k
        .call(
            &a,
            &sid("notes-w"),
            r#"{"op":"get","key":"k1"}"#,
            Some(SECOND),
        )
        .await
        .unwrap();
    assert_eq!(got, r#"{"value":"v1"}"#);
    k.kill(&a, &sid("notes-w"), KillOptions::default())
        .await
        .unwrap();
    k.deploy(&a, req("notes-w", Format::Wasm, "kv-notes"))
        .await
        .unwrap();
    let got = k
        .call(
            &a,
            &sid("notes-w"),
            r#"{"op":"get","key":"k1"}"#,
            Some(SECOND),
        )
        .await
        .unwrap();
    assert_eq!(
        got, r#"{"value":null}"#,
        "a killed service's data goes with it"
    );
}

#[tokio::test]
async fn logs_are_kept_and_followed() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let js = r#"export function handleCall(r) { solo.log("info", "got " + JSON.stringify(r)); return r; }"#;
    k.deploy(
        &a,
        DeployRequest::new(sid("talk"), Format::Js, js.as_bytes().to_vec()),
    )
    .await
    .unwrap();
    k.call(&a, &sid("talk"), "1", Some(SECOND)).await.unwrap();
    let (backlog, mut live) = k.follow_logs(&a, &sid("talk"), 100, 0).unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].message, "got 1");
    k.call(&a, &sid("talk"), "2", Some(SECOND)).await.unwrap();
    assert_eq!(live.next().await.unwrap().message, "got 2");
    assert_eq!(k.logs(&a, &sid("talk"), 1).unwrap()[0].message, "got 2");
}

#[tokio::test]
async fn a_startup_that_hangs_fails_the_deploy() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let js = "export function init() { for (;;) {} }\nexport function handleCall(r) { return r; }";
    let mut r = DeployRequest::new(sid("slow"), Format::Js, js.as_bytes().to_vec());
    r.startup_timeout_ms = Some(200);
    r.cpu_ms_per_message = Some(60_000);
    let t = Instant::now();
    let err = k.deploy(&a, r).await.unwrap_err();
    assert!(err.to_string().contains("startup_timeout"), "{err}");
    assert!(t.elapsed() < SECOND * 3);
    let failed = events_of(k, &a, kinds::SERVICE_DEPLOYMENT_FAILED);
    assert_eq!(failed[0].payload["stage"], "startup_timeout");
}

#[tokio::test]
async fn the_tenant_service_quota_is_enforced() {
    let mut config = KernelConfig::default();
    config.limits.max_services_per_tenant = 2;
    let s = solo_with(config).await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("one", Format::Js, "echo")).await.unwrap();
    k.deploy(&a, req("two", Format::Js, "echo")).await.unwrap();
    let err = k
        .deploy(&a, req("three", Format::Js, "echo"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "quota_exceeded");
    // Another tenant has its own quota; a kill frees a place.
    k.deploy(&tenant("b"), req("one", Format::Js, "echo"))
        .await
        .unwrap();
    k.kill(&a, &sid("one"), KillOptions::default())
        .await
        .unwrap();
    k.deploy(&a, req("three", Format::Js, "echo"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_deploys() {
    let mut config = KernelConfig::default();
    config.limits.max_services_per_tenant = 2000;
    config.limits.max_memory_mb_per_tenant = 1 << 20;
    let s = solo_with(config).await;
    let k = &s.kernel;
    let a = tenant("a");
    let code = code(Format::Wasm, "echo");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (k, a, code) = (k.clone(), a.clone(), Arc::clone(&code));
        tasks.push(tokio::spawn(async move {
            k.deploy(
                &a,
                DeployRequest::new(sid(&format!("svc-{i}")), Format::Wasm, code),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        k.list(
            &a,
            &ListFilter {
                limit: 1000,
                ..ListFilter::default()
            }
        )
        .unwrap()
        .total,
        1000
    );
    assert_eq!(events_of(k, &a, kinds::SERVICE_DEPLOYED).len(), 1000);
    assert_eq!(
        k.call(&a, &sid("svc-999"), "9", Some(SECOND))
            .await
            .unwrap(),
        "9"
    );
    let report = k
        .verify_events(&Caller::admin(a.tenant_id().clone()))
        .await
        .unwrap();
    assert_eq!(report.first_broken_id, None);
    assert_eq!(report.checked, report.last_id);
    assert_eq!(s.store.verify().unwrap().first_broken, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_storm_in_one_tenant_leaves_another_tenants_calls_fast() {
    let s = solo().await;
    let k = &s.kernel;
    let (a, b) = (tenant("stormy"), tenant("calm"));
    k.deploy(&b, req("echo", Format::Wasm, "echo"))
        .await
        .unwrap();
    let mut baseline = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        k.call(&b, &sid("echo"), "1", Some(SECOND)).await.unwrap();
        baseline.push(t.elapsed());
    }
    for i in 0..100 {
        k.deploy(&a, req(&format!("crash-{i}"), Format::Wasm, "crasher"))
            .await
            .unwrap();
    }
    let storm = {
        let (k, a) = (k.clone(), a.clone());
        tokio::spawn(async move {
            for round in 0..6 {
                for i in 0..100 {
                    let _ = k.cast(&a, &sid(&format!("crash-{i}")), r#"{"mode":"panic"}"#);
                }
                let _ = round;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut during = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        k.call(&b, &sid("echo"), "1", Some(SECOND)).await.unwrap();
        during.push(t.elapsed());
    }
    storm.await.unwrap();
    baseline.sort();
    during.sort();
    let p99 = during[during.len() * 99 / 100];
    // A debug build sharing two cores with the other tests: the bound catches
    // starvation (a blocked runtime shows seconds), not noise. The release benchmark
    // measures the ratio.
    assert!(
        p99 < Duration::from_millis(250),
        "p99 during the storm {p99:?}, before {:?}",
        baseline[baseline.len() * 99 / 100]
    );
    // The storm really happened.
    let crashes = events_of(k, &a, kinds::SERVICE_CRASHED).len();
    assert!(crashes >= 100, "{crashes} crashes");
}

#[tokio::test]
async fn a_component_panic_restarts_the_components_after_it_and_nothing_else() {
    let s = solo().await;
    let k = &s.kernel;
    let admin = Caller::admin(TenantId::new("ops").unwrap());
    let a = tenant("a");
    k.deploy(&a, req("c", Format::Js, "counter")).await.unwrap();
    k.call(&a, &sid("c"), r#"{"op":"inc","by":3}"#, Some(SECOND))
        .await
        .unwrap();
    let before = s.store.last_id();

    assert!(k.inject_fault("capabilities"));
    let mut sub = k
        .watch(
            &admin,
            before,
            EventFilter {
                kind: Some(kinds::COMPONENT_RESTARTED.into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    let mut restarted = Vec::new();
    let first = SYSTEM_COMPONENTS
        .iter()
        .position(|c| *c == "capabilities")
        .unwrap();
    while restarted.len() < SYSTEM_COMPONENTS.len() - first {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        restarted.push(e.payload["component"].as_str().unwrap().to_string());
    }
    let mut expect: Vec<String> = SYSTEM_COMPONENTS[first..]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expect.sort();
    restarted.sort();
    assert_eq!(restarted, expect);
    let tree = k.tree(&admin).unwrap();
    let system = &tree.children[0];
    assert_eq!(system.name, "system");
    for c in &system.children {
        let after = SYSTEM_COMPONENTS.iter().position(|n| *n == c.name).unwrap() >= first;
        assert_eq!(c.restarts, u32::from(after), "{}", c.name);
        assert_eq!(c.state, "running");
    }
    // The service kept its state: it was never restarted.
    assert_eq!(
        k.call(&a, &sid("c"), r#"{"op":"get"}"#, Some(SECOND))
            .await
            .unwrap(),
        r#"{"value":3}"#
    );
    assert_eq!(k.status(&a, &sid("c")).unwrap().restarts, 0);
    // The tenant's subtree is visible, with its service.
    let tenants = &tree.children[1];
    assert_eq!(tenants.children[0].name, "a");
    assert_eq!(tenants.children[0].children[0].name, "c");
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_subtree() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(&tenant("a"), req("x", Format::Js, "echo"))
        .await
        .unwrap();
    k.deploy(&tenant("b"), req("y", Format::Js, "echo"))
        .await
        .unwrap();
    let tree = k.tree(&tenant("b")).unwrap();
    let names: Vec<&str> = tree.children[1]
        .children
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["b"]);
}

/// Every limit hit leaves a `resource_violation` before the crash or refusal it explains.
#[tokio::test]
async fn limits_leave_a_resource_violation_before_what_they_cause() {
    let mut config = KernelConfig::default();
    config.limits.max_services_per_tenant = 4;
    let s = solo_with(config).await;
    let k = &s.kernel;
    let a = tenant("a");
    let violations = |service: &str| -> Vec<Event> {
        events_of(k, &a, kinds::RESOURCE_VIOLATION)
            .into_iter()
            .filter(|e| e.service.as_ref().map(ServiceId::as_str) == Some(service))
            .collect()
    };
    // Memory: the wasm hog asks for more than its 16 MiB.
    let mut r = req("hog", Format::Wasm, "hog");
    r.memory_mb = Some(16);
    k.deploy(&a, r).await.unwrap();
    let _ = k.call(&a, &sid("hog"), "{}", Some(SECOND * 5)).await;
    let crashed = next_event(k, &a, 0, kinds::SERVICE_CRASHED, "hog").await;
    let v = violations("hog");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].id < crashed.id, "recorded before the crash");
    assert_eq!(v[0].payload["kind"], "memory");
    assert_eq!(v[0].payload["limit"], 16 << 20);
    assert!(v[0].payload["observed"].as_u64().unwrap() > 16 << 20);
    // CPU: the JS spinner runs out of its 50 ms.
    let mut r = req("spin", Format::Js, "spinner");
    r.cpu_ms_per_message = Some(50);
    k.deploy(&a, r).await.unwrap();
    let _ = k.call(&a, &sid("spin"), "{}", Some(SECOND * 5)).await;
    let crashed = next_event(k, &a, 0, kinds::SERVICE_CRASHED, "spin").await;
    let v = violations("spin");
    assert_eq!(v[0].payload["kind"], "cpu");
    assert_eq!(v[0].payload["limit"], 50);
    assert!(v[0].payload["observed"].as_u64().unwrap() >= 50, "{v:?}");
    assert!(v[0].id < crashed.id);
    // Mailbox: a wasm spinner with room for one, flooded; sampled.
    let mut r = req("busy", Format::Wasm, "spinner");
    r.cpu_ms_per_message = Some(60_000);
    r.mailbox = Some(1);
    k.deploy(&a, r).await.unwrap();
    k.cast(&a, &sid("busy"), "{}").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    k.cast(&a, &sid("busy"), "{}").unwrap();
    let mut refused = 0;
    for _ in 0..100 {
        if k.cast(&a, &sid("busy"), "{}").is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 100);
    let v = next_event(k, &a, 0, kinds::RESOURCE_VIOLATION, "busy").await;
    assert_eq!(v.payload["kind"], "mailbox");
    assert_eq!(v.payload["limit"], 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(violations("busy").len() <= 2, "sampled");
    k.kill(
        &a,
        &sid("busy"),
        KillOptions {
            force: true,
            ..KillOptions::default()
        },
    )
    .await
    .unwrap();
    // Quota: the fifth service of a tenant allowed four.
    for id in ["q1", "q2"] {
        k.deploy(&a, req(id, Format::Js, "echo")).await.unwrap();
    }
    let err = k
        .deploy(&a, req("q3", Format::Js, "echo"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "quota_exceeded");
    let v = next_event(k, &a, 0, kinds::RESOURCE_VIOLATION, "q3").await;
    assert_eq!(v.payload["kind"], "quota");
    assert_eq!(
        (v.payload["limit"].as_u64(), v.payload["observed"].as_u64()),
        (Some(4), Some(5))
    );
}

/// An exception in a JavaScript service names its line and column, and carries the
/// stack, on every face (the kernel's failure is what every face encodes).
#[tokio::test]
async fn a_guest_exception_names_its_line_and_column() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let code = "export function handleCall(r) {\n  const o = undefined;\n  return lookup(o);\n}\nfunction lookup(o) { return o.y; }\n";
    k.deploy(
        &a,
        DeployRequest::new(sid("oops"), Format::Js, code.as_bytes().to_vec()),
    )
    .await
    .unwrap();
    let err = k
        .call(&a, &sid("oops"), "{}", Some(SECOND))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "service_error");
    let text = err.to_string();
    assert!(text.contains("(at line 5, column"), "{text}");
    let f = solo_types::api::Failure::from(&err);
    let stack = f.details.as_ref().unwrap()["stack"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stack.contains("lookup") && stack.contains("handleCall"),
        "{stack}"
    );
    // The service is healthy: an error is not a crash.
    assert_eq!(
        k.status(&a, &sid("oops")).unwrap().state,
        ServiceState::Running
    );
}

/// A message that is never answered (a component asleep in the host) uses no CPU, so
/// only its wall-clock deadline ends it: a crash of kind `timeout`, the instance
/// replaced, the service serving again. A JavaScript promise that can never settle is
/// answered at once: nothing is left in the runner that could settle it.
#[tokio::test]
async fn a_message_past_its_wall_clock_deadline_is_a_timeout_crash() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("hang-js", Format::Js, "crasher"))
        .await
        .unwrap();
    let t = Instant::now();
    match k
        .call(&a, &sid("hang-js"), r#"{"mode":"hang"}"#, Some(SECOND * 5))
        .await
    {
        Err(KernelError::ServiceError(e)) => assert!(e.message.contains("never settle"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());
    assert_eq!(
        k.status(&a, &sid("hang-js")).unwrap().state,
        ServiceState::Running
    );
    let id = "hang-wasm";
    let mut r = req(id, Format::Wasm, "crasher");
    r.message_timeout_ms = Some(300);
    k.deploy(&a, r).await.unwrap();
    let t = Instant::now();
    let err = k
        .call(&a, &sid(id), r#"{"mode":"sleep"}"#, Some(SECOND * 5))
        .await
        .unwrap_err();
    assert!(t.elapsed() < SECOND * 3, "{:?}", t.elapsed());
    let KernelError::ServiceCrashed(report) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(report.kind, "timeout");
    next_event(k, &a, 0, kinds::SERVICE_RESTARTED, id).await;
    assert_eq!(
        k.call(&a, &sid(id), r#"{"mode":"ok"}"#, Some(SECOND))
            .await
            .unwrap(),
        "\"ok\""
    );
    // The deadline has a server-wide maximum.
    let mut r = req("greedy", Format::Js, "echo");
    r.message_timeout_ms = Some(3_600_000);
    let e = k.deploy(&a, r).await.unwrap_err();
    assert!(e.to_string().contains("message_timeout_ms"), "{e}");
}
