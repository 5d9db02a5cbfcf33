//! The kernel's contract: deploy, call, cast, status, list, kill, crash reports,
//! restarts and their intensity, tenant isolation, quotas, and the system tree. No
//! network: the kernel is driven in process over a real store and a real sandbox.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod interplay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use solo_kernel::{
    Caller, DeployRequest, Kernel, KernelConfig, KernelError, KernelOptions, KillOptions,
    ListFilter, SYSTEM_COMPONENTS,
};
use solo_store::{EventFilter, EventLog, EventQuery};
use solo_types::{Event, Format, RestartPolicy, ServiceId, ServiceState, TenantId, kinds};

use common::{events_of, sid, tenant};

struct Solo {
    kernel: Kernel,
    store: Arc<solo_store::RedbStore>,
    _dir: tempfile::TempDir,
}

async fn solo_with(config: KernelConfig) -> Solo {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store(dir.path());
    let kernel = Kernel::start(
        store.clone(),
        common::sandbox(4000),
        config,
        KernelOptions::default(),
    )
    .await
    .unwrap();
    Solo {
        kernel,
        store,
        _dir: dir,
    }
}

async fn solo() -> Solo {
    solo_with(KernelConfig::default()).await
}

fn code(format: Format, name: &str) -> Arc<[u8]> {
    match format {
        Format::Wasm => solo_guests::wasm(name).into(),
        Format::Js => solo_guests::js(name).into_bytes().into(),
    }
}

fn req(id: &str, format: Format, name: &str) -> DeployRequest {
    DeployRequest::new(sid(id), format, code(format, name))
}

const SECOND: Duration = Duration::from_secs(1);

/// Waits (by subscription, not polling) for the first event of `kind` about `service`
/// after `after_id`.
async fn next_event(
    k: &Kernel,
    caller: &Caller,
    after_id: u64,
    kind: &str,
    service: &str,
) -> Event {
    let mut sub = k
        .watch(
            caller,
            after_id,
            EventFilter {
                kind: Some(kind.to_string()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = sub.next().await.unwrap().unwrap();
            if e.service.as_ref().map(ServiceId::as_str) == Some(service) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event for {service} after {after_id}"))
}

#[tokio::test]
async fn deploy_call_status_list_and_kill_in_both_formats() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("agent_a");
    for (id, f) in [("echo-wasm", Format::Wasm), ("echo-js", Format::Js)] {
        let d = k.deploy(&a, req(id, f, "echo")).await.unwrap();
        assert!(d.created);
        assert_eq!(d.code_hash.len(), 64);
        assert_eq!(
            k.call(&a, &sid(id), r#"{"x":1}"#, Some(SECOND))
                .await
                .unwrap()
                .replace(' ', ""),
            r#"{"x":1}"#
        );
        let st = k.status(&a, &sid(id)).unwrap();
        assert_eq!(st.state, ServiceState::Running);
        assert_eq!(st.format, f);
        assert_eq!(st.version, 1);
        assert_eq!(st.messages, 1);
        assert!(st.memory_bytes > 0, "{st:?}");
        assert!(st.cpu_time_us > 0, "{st:?}");
        assert_eq!(st.restarts, 0);
    }
    let list = k.list(&a, &ListFilter::default()).unwrap();
    assert_eq!(list.total, 2);
    let names: Vec<&str> = list
        .services
        .iter()
        .map(|s| s.service_id.as_str())
        .collect();
    assert_eq!(names, ["echo-js", "echo-wasm"]);

    // Events: deployed, then started caused by it.
    let deployed = events_of(k, &a, kinds::SERVICE_DEPLOYED);
    let started = events_of(k, &a, kinds::SERVICE_STARTED);
    assert_eq!(deployed.len(), 2);
    assert_eq!(started[0].causation_id, Some(deployed[0].id));
    assert_eq!(deployed[0].payload["format"], "wasm");

    let killed = k
        .kill(&a, &sid("echo-wasm"), KillOptions::default())
        .await
        .unwrap();
    assert!(!killed.forced);
    assert!(matches!(
        k.status(&a, &sid("echo-wasm")),
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.call(&a, &sid("echo-wasm"), "1", Some(SECOND)).await,
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.kill(&a, &sid("echo-wasm"), KillOptions::default()).await,
        Err(KernelError::NotFound(_))
    ));
    assert_eq!(k.list(&a, &ListFilter::default()).unwrap().total, 1);
    assert_eq!(events_of(k, &a, kinds::SERVICE_KILLED).len(), 1);
    k.shutdown().await;
}

#[tokio::test]
async fn deploying_the_same_id_twice() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("svc", Format::Js, "echo")).await.unwrap();
    // Identical: an idempotent success, no second deploy event.
    let again = k.deploy(&a, req("svc", Format::Js, "echo")).await.unwrap();
    assert!(!again.created);
    assert_eq!(events_of(k, &a, kinds::SERVICE_DEPLOYED).len(), 1);
    // Different code or settings: already exists.
    let err = k
        .deploy(&a, req("svc", Format::Js, "counter"))
        .await
        .unwrap_err();
    assert!(matches!(err, KernelError::AlreadyExists(_)), "{err}");
    let mut r = req("svc", Format::Js, "echo");
    r.memory_mb = Some(32);
    assert!(matches!(
        k.deploy(&a, r).await,
        Err(KernelError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn dry_run_checks_everything_and_starts_nothing() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("svc", Format::Wasm, "counter");
    r.dry_run = true;
    let d = k.deploy(&a, r).await.unwrap();
    assert!(d.dry_run && d.has_state);
    assert_eq!(k.list(&a, &ListFilter::default()).unwrap().total, 0);
    let mut bad = DeployRequest::new(
        sid("bad"),
        Format::Js,
        b"export function handleCall( {".to_vec(),
    );
    bad.dry_run = true;
    assert!(matches!(
        k.deploy(&a, bad).await,
        Err(KernelError::Compile(_))
    ));
    assert!(events_of(k, &a, kinds::SERVICE_DEPLOYED).is_empty());
}

#[tokio::test]
async fn bad_specs_and_code_are_refused_with_reasons() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("svc", Format::Js, "echo");
    r.memory_mb = Some(0);
    assert!(
        matches!(k.deploy(&a, r).await, Err(KernelError::InvalidArgument(m)) if m.contains("memory_mb"))
    );
    let mut r = req("svc", Format::Js, "echo");
    r.mailbox = Some(0);
    assert!(
        matches!(k.deploy(&a, r).await, Err(KernelError::InvalidArgument(m)) if m.contains("mailbox"))
    );
    let mut r = req("svc", Format::Js, "echo");
    r.secrets = vec!["bad name".into()];
    assert!(
        matches!(k.deploy(&a, r).await, Err(KernelError::InvalidArgument(m)) if m.contains("secret"))
    );

    // Code that does not compile: refused, recorded, and the id is free again.
    let bad = DeployRequest::new(sid("svc"), Format::Wasm, b"\0asm\x01\0\0\0".to_vec());
    let err = k.deploy(&a, bad).await.unwrap_err();
    assert!(matches!(err, KernelError::Compile(_)), "{err}");
    let failed = events_of(k, &a, kinds::SERVICE_DEPLOYMENT_FAILED);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload["stage"], "compile");

    // Init that fails: refused with the guest's message.
    let mut r = req("svc", Format::Wasm, "crasher");
    r.config = Some(serde_json::json!({"fail_init": true}));
    let err = k.deploy(&a, r).await.unwrap_err();
    assert!(err.to_string().contains("asked to fail in init"), "{err}");
    // After failed deploys, the same id deploys fine.
    k.deploy(&a, req("svc", Format::Js, "echo")).await.unwrap();
    assert_eq!(
        k.call(&a, &sid("svc"), "2", Some(SECOND)).await.unwrap(),
        "2"
    );
    // Replies must be JSON too: a guest that answers other text is refused as such.
    k.deploy(&a, req("liar", Format::Wasm, "crasher"))
        .await
        .unwrap();
    let e = k
        .call(&a, &sid("liar"), r#"{"mode":"not-json"}"#, Some(SECOND))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.reason()),
        (solo_types::Code::FailedPrecondition, "invalid_reply")
    );
    // Requests must be JSON (an invalid argument, whose reason says so).
    let e = k
        .call(&a, &sid("svc"), "not json", Some(SECOND))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.reason()),
        (solo_types::Code::InvalidArgument, "invalid_json")
    );
}

#[tokio::test]
async fn another_tenants_service_is_not_found_on_every_path() {
    let s = solo().await;
    let k = &s.kernel;
    let (a, b) = (tenant("alice"), tenant("bob"));
    k.deploy(&a, req("shared-name", Format::Js, "counter"))
        .await
        .unwrap();
    k.deploy(&b, req("shared-name", Format::Js, "counter"))
        .await
        .unwrap();
    k.deploy(&a, req("only-a", Format::Js, "echo"))
        .await
        .unwrap();
    let only_a = sid("only-a");
    assert!(matches!(
        k.status(&b, &only_a),
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.call(&b, &only_a, "1", Some(SECOND)).await,
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.cast(&b, &only_a, "1"),
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.logs(&b, &only_a, 10),
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.kill(&b, &only_a, KillOptions::default()).await,
        Err(KernelError::NotFound(_))
    ));
    // Same id in two tenants: independent state; killing one leaves the other.
    k.call(
        &a,
        &sid("shared-name"),
        r#"{"op":"inc","by":5}"#,
        Some(SECOND),
    )
    .await
    .unwrap();
    assert_eq!(
        k.call(&b, &sid("shared-name"), r#"{"op":"get"}"#, Some(SECOND))
            .await
            .unwrap(),
        r#"{"value":0}"#
    );
    k.kill(&a, &sid("shared-name"), KillOptions::default())
        .await
        .unwrap();
    assert!(
        k.call(&b, &sid("shared-name"), r#"{"op":"get"}"#, Some(SECOND))
            .await
            .is_ok()
    );
    // Each tenant sees only its own events.
    let b_events = k.events(&b, EventQuery::default()).unwrap().events;
    assert!(!b_events.is_empty());
    assert!(
        b_events
            .iter()
            .all(|e| e.tenant.as_ref().map(TenantId::as_str) == Some("bob"))
    );
    assert_eq!(k.list(&b, &ListFilter::default()).unwrap().total, 1);
}

#[tokio::test]
async fn a_crash_loop_stops_at_its_intensity_with_a_crash_report() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("bystander", Format::Js, "echo"))
        .await
        .unwrap();
    let mut r = req("crashy", Format::Wasm, "crasher");
    r.max_restarts = Some(2);
    r.max_seconds = Some(60);
    k.deploy(&a, r).await.unwrap();
    let crashy = sid("crashy");
    let mut last = 0;
    for round in 0..3 {
        let err = k
            .call(
                &a,
                &crashy,
                r#"{"mode":"log","lines":30}"#,
                Some(SECOND * 5),
            )
            .await
            .unwrap_err();
        let KernelError::ServiceCrashed(report) = err else {
            panic!("round {round}: {err}");
        };
        assert_eq!(report.kind, "trap");
        assert_eq!(report.log_tail.len(), 20, "{:?}", report.log_tail);
        assert!(
            report
                .log_tail
                .iter()
                .any(|l| l.contains("asked to panic after logging")),
            "{:?}",
            report.log_tail
        );
        assert!(
            report
                .backtrace
                .as_deref()
                .unwrap_or("")
                .contains("crasher")
        );
        let kind = if round < 2 {
            kinds::SERVICE_RESTARTED
        } else {
            kinds::SERVICE_FAILED
        };
        let e = next_event(k, &a, last, kind, "crashy").await;
        last = e.id;
        // The restart (or failure) names the crash as its cause.
        let crash = k
            .events(
                &a,
                EventQuery {
                    after_id: e.causation_id.map(|c| c - 1),
                    limit: 1,
                    ..EventQuery::default()
                },
            )
            .unwrap()
            .events
            .remove(0);
        assert_eq!(crash.kind, kinds::SERVICE_CRASHED);
        assert_eq!(crash.payload["reason"]["kind"], "trap");
    }
    let st = k.status(&a, &crashy).unwrap();
    assert_eq!(st.state, ServiceState::Failed);
    assert_eq!(st.restarts, 2);
    assert_eq!(st.last_error.unwrap().kind, "trap");
    assert!(matches!(
        k.call(&a, &crashy, r#"{"mode":"ok"}"#, Some(SECOND)).await,
        Err(KernelError::FailedPrecondition(_))
    ));
    // Others are unaffected, and a failed service can be killed and redeployed.
    assert_eq!(
        k.call(&a, &sid("bystander"), "7", Some(SECOND))
            .await
            .unwrap(),
        "7"
    );
    k.kill(&a, &crashy, KillOptions::default()).await.unwrap();
    k.deploy(&a, req("crashy", Format::Wasm, "crasher"))
        .await
        .unwrap();
    assert_eq!(
        k.call(&a, &crashy, r#"{"mode":"ok"}"#, Some(SECOND))
            .await
            .unwrap(),
        "\"ok\""
    );
}

#[tokio::test]
async fn a_restarted_service_keeps_its_mailbox_and_serves_again() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("c", Format::Js, "crasher")).await.unwrap();
    let c = sid("c");
    // A cast that crashes it, then calls queued behind it: served by the new instance.
    k.cast(&a, &c, r#"{"mode":"crash"}"#).unwrap();
    let reply = k
        .call(&a, &c, r#"{"mode":"ok"}"#, Some(SECOND * 5))
        .await
        .unwrap();
    assert_eq!(reply, "\"ok\"");
    let st = k.status(&a, &c).unwrap();
    assert_eq!(st.restarts, 1);
    assert_eq!(st.state, ServiceState::Running);
}

#[tokio::test]
async fn restart_policies() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("temp", Format::Wasm, "crasher");
    r.restart = Some(RestartPolicy::Temporary);
    k.deploy(&a, r).await.unwrap();
    let _ = k
        .call(&a, &sid("temp"), r#"{"mode":"panic"}"#, Some(SECOND * 5))
        .await;
    next_event(k, &a, 0, kinds::SERVICE_FAILED, "temp").await;
    assert_eq!(
        k.status(&a, &sid("temp")).unwrap().state,
        ServiceState::Failed
    );

    let mut r = req("trans", Format::Wasm, "crasher");
    r.restart = Some(RestartPolicy::Transient);
    k.deploy(&a, r).await.unwrap();
    let _ = k
        .call(&a, &sid("trans"), r#"{"mode":"panic"}"#, Some(SECOND * 5))
        .await;
    next_event(k, &a, 0, kinds::SERVICE_RESTARTED, "trans").await;
    assert_eq!(
        k.call(&a, &sid("trans"), r#"{"mode":"ok"}"#, Some(SECOND))
            .await
            .unwrap(),
        "\"ok\""
    );
}

#[tokio::test]
async fn a_service_that_never_answers_times_out_and_can_still_be_killed() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("spin", Format::Wasm, "spinner");
    r.cpu_ms_per_message = Some(60_000);
    r.mailbox = Some(2);
    k.deploy(&a, r).await.unwrap();
    let spin = sid("spin");
    let t = Instant::now();
    let err = k
        .call(&a, &spin, "{}", Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(err, KernelError::DeadlineExceeded(_)), "{err}");
    assert!(
        t.elapsed() < SECOND,
        "the caller must be freed: {:?}",
        t.elapsed()
    );
    // Its mailbox fills up while it spins.
    k.cast(&a, &spin, "{}").unwrap();
    k.cast(&a, &spin, "{}").unwrap();
    let full = k.cast(&a, &spin, "{}").unwrap_err();
    assert_eq!(full.reason(), "mailbox_full");
    // A graceful kill waits out its timeout, then forces.
    let t = Instant::now();
    let killed = k
        .kill(
            &a,
            &spin,
            KillOptions {
                timeout: Some(Duration::from_millis(300)),
                force: false,
            },
        )
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(killed.snapshot_bytes, None);
    assert!(matches!(k.status(&a, &spin), Err(KernelError::NotFound(_))));
}

#[tokio::test]
async fn a_forced_kill_interrupts_a_busy_js_service_at_once() {
    // Also shows that a spinning JS guest never holds the caller's (here: the test's
    // single) thread: it yields at every epoch tick, as any component does.
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("spin", Format::Js, "spinner");
    r.cpu_ms_per_message = Some(60_000);
    k.deploy(&a, r).await.unwrap();
    let caller = {
        let (k, a) = (k.clone(), a.clone());
        tokio::spawn(async move {
            k.call(&a, &sid("spin"), "{}", Some(Duration::from_secs(30)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    k.kill(
        &a,
        &sid("spin"),
        KillOptions {
            timeout: Some(SECOND),
            force: true,
        },
    )
    .await
    .unwrap();
    assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());
    let r = caller.await.unwrap();
    assert!(r.is_err());
}

#[tokio::test]
async fn graceful_kill_finishes_the_current_message_and_takes_a_snapshot() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    k.deploy(&a, req("counter", Format::Wasm, "counter"))
        .await
        .unwrap();
    k.call(&a, &sid("counter"), r#"{"op":"inc","by":41}"#, Some(SECOND))
        .await
        .unwrap();
    let killed = k
        .kill(&a, &sid("counter"), KillOptions::default())
        .await
        .unwrap();
    assert_eq!(killed.snapshot_bytes, Some(2));
    let e = &events_of(k, &a, kinds::SERVICE_KILLED)[0];
    assert_eq!(e.payload["snapshot_bytes"], 2);
}

#[tokio::test]
async fn deploy_during_kill_of_the_same_id_is_refused() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("a");
    let mut r = req("x", Format::Wasm, "spinner");
    r.cpu_ms_per_message = Some(60_000);
    k.deploy(&a, r).await.unwrap();
    let _busy = {
        let (k, a) = (k.clone(), a.clone());
        tokio::spawn(async move {
            k.call(&a, &sid("x"), "{}", Some(Duration::from_secs(30)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killing = {
        let (k, a) = (k.clone(), a.clone());
        tokio::spawn(async move {
            k.kill(
                &a,
                &sid("x"),
                KillOptions {
                    timeout: Some(Duration::from_millis(500)),
                    force: false,
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = k
        .deploy(&a, req("x", Format::Js, "echo"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, KernelError::FailedPrecondition(ref m) if m.contains("being killed")),
        "{err}"
    );
    killing.await.unwrap().unwrap();
    k.deploy(&a, req("x", Format::Js, "echo")).await.unwrap();
}
