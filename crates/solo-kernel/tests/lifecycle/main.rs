//! Hot swap, recovery at start and the refusal of new work while stopping: the kernel
//! in process over a real store (reopened to cross a restart) and a real sandbox.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod components;
mod flow;
mod hibernation;
mod node;
mod parking;
mod placement;

use std::sync::Arc;
use std::time::Duration;

use solo_kernel::{
    Caller, DeployRequest, Kernel, KernelConfig, KernelError, KernelOptions, KillOptions,
    ListFilter, SwapMethod, SwapMode, SwapRequest,
};
use solo_store::{EventLog, RedbStore, Store};
use solo_types::clock::{FakeClock, SharedClock};
use solo_types::{Event, Format, TenantId, kinds};

use common::{events_of, sid, tenant};

struct Solo {
    kernel: Kernel,
    store: Arc<RedbStore>,
    dir: tempfile::TempDir,
}

async fn open(dir: tempfile::TempDir) -> Solo {
    open_with(dir, KernelConfig::default()).await
}

async fn open_with(dir: tempfile::TempDir, config: KernelConfig) -> Solo {
    open_on(dir, config, None).await
}

/// A kernel telling time by `clock` (the machine's when `None`).
async fn open_on(
    dir: tempfile::TempDir,
    config: KernelConfig,
    clock: Option<Arc<FakeClock>>,
) -> Solo {
    let store = common::store(dir.path());
    let dyn_store: Arc<dyn Store> = store.clone();
    let kernel = Kernel::start(
        dyn_store,
        common::sandbox(500),
        config,
        KernelOptions {
            clock: clock.map(|c| c as SharedClock),
            ..KernelOptions::default()
        },
    )
    .await
    .unwrap();
    Solo { kernel, store, dir }
}

/// A kernel on a new directory telling time by a fake clock, and the clock.
async fn clocked(config: KernelConfig) -> (Solo, Arc<FakeClock>) {
    let clock = FakeClock::new();
    let s = open_on(
        tempfile::tempdir().unwrap(),
        config,
        Some(Arc::clone(&clock)),
    )
    .await;
    (s, clock)
}

async fn solo() -> Solo {
    open(tempfile::tempdir().unwrap()).await
}

/// Stops the kernel as `solo server` does, and starts a new one on the same files.
async fn restart(s: Solo) -> Solo {
    s.kernel.shutdown().await;
    s.store.close().await;
    let Solo { kernel, store, dir } = s;
    drop(kernel);
    drop(store);
    open(dir).await
}

fn alice() -> Caller {
    tenant("alice")
}

fn js(name: &str) -> Arc<[u8]> {
    solo_guests::js(name).into_bytes().into()
}

fn wasm(name: &str) -> Arc<[u8]> {
    solo_guests::wasm(name).into()
}

async fn call(k: &Kernel, id: &str, req: &str) -> Result<String, KernelError> {
    k.call(&alice(), &sid(id), req, Some(Duration::from_secs(5)))
        .await
}

async fn value(k: &Kernel, id: &str) -> i64 {
    let r = call(k, id, r#"{"op":"get"}"#).await.unwrap();
    serde_json::from_str::<serde_json::Value>(&r).unwrap()["value"]
        .as_i64()
        .unwrap()
}

fn swap(id: &str, format: Format, code: Arc<[u8]>) -> SwapRequest {
    SwapRequest {
        service_id: sid(id),
        format,
        code,
        mode: SwapMode::Swap,
        rollback_window: Some(Duration::from_millis(300)),
    }
}

/// Every event of `kind`, as an admin sees them (tenants' and the system's).
fn events(k: &Kernel, kind: &str) -> Vec<Event> {
    events_of(k, &Caller::admin(TenantId::new("ops").unwrap()), kind)
}

async fn wait_for(k: &Kernel, kind: &str, n: usize) -> Vec<Event> {
    for _ in 0..200 {
        let e = events(k, kind);
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} {kind} events");
}

/// A JS service with state whose `restore` always throws.
fn picky() -> Arc<[u8]> {
    br#"let v = 1;
export function handleCall(r) { return r; }
export function snapshot() { return v; }
export function restore(s) { throw new Error("unreadable"); }
"#
    .to_vec()
    .into()
}

/// The JS counter with another body (same snapshot format: the bare number).
fn counter_variant(extra: &str) -> Arc<[u8]> {
    format!(
        r#"let value = 0;
export function init(config) {{ value = 0; }}
export function handleCall(r) {{
  {extra}
  if (r.op === "inc") value += r.by || 1;
  return {{ value }};
}}
export function snapshot() {{ return value; }}
export function restore(state) {{ value = state; }}
"#
    )
    .into_bytes()
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_carries_the_state_across_formats_and_succeeds() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Js, js("counter")),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        call(k, "c", r#"{"op":"inc"}"#).await.unwrap();
    }
    // JS to WebAssembly: both export snapshot/restore with the same bytes.
    let out = k
        .hot_swap(&alice(), swap("c", Format::Wasm, wasm("counter")))
        .await
        .unwrap();
    assert_eq!(
        (out.version, out.method, out.state_carried),
        (2, SwapMethod::Swap, true)
    );
    assert_eq!(value(k, "c").await, 5);
    let st = k.status(&alice(), &sid("c")).unwrap();
    assert_eq!((st.version, st.format), (2, Format::Wasm));
    assert_eq!(st.code_hash, out.code_hash);
    let started = events(k, kinds::HOT_SWAP_STARTED);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].payload["from_version"], 1);
    assert_eq!(started[0].payload["to_version"], 2);
    let ok = wait_for(k, kinds::HOT_SWAP_SUCCEEDED, 1).await;
    assert_eq!(ok[0].payload["method"], "swap");
    // The same code again is a no-op.
    let again = k
        .hot_swap(&alice(), swap("c", Format::Wasm, wasm("counter")))
        .await
        .unwrap();
    assert_eq!((again.method, again.version), (SwapMethod::Unchanged, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_swaps_leave_the_old_version_serving() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Js, js("counter")),
    )
    .await
    .unwrap();
    call(k, "c", r#"{"op":"inc","by":7}"#).await.unwrap();

    // Code that does not compile.
    let e = k
        .hot_swap(
            &alice(),
            swap("c", Format::Js, b"export function (".to_vec().into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::Compile(_)), "{e:?}");
    // Code that traps in restore.
    let bad_restore: Arc<[u8]> = br#"let v = 0;
export function handleCall(r) { return { value: v }; }
export function snapshot() { return v; }
export function restore(s) { throw new Error("this version cannot read the old state"); }
"#
    .to_vec()
    .into();
    let e = k
        .hot_swap(&alice(), swap("c", Format::Js, bad_restore))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("restore"), "{e}");
    // WebAssembly that does not validate.
    let e = k
        .hot_swap(
            &alice(),
            swap("c", Format::Wasm, b"\0asm\x0d\0\x01\0junk".to_vec().into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::Compile(_)), "{e:?}");

    let failed = events(k, kinds::HOT_SWAP_FAILED);
    let stages: Vec<&str> = failed
        .iter()
        .map(|e| e.payload["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["compile", "restore", "compile"]);
    assert_eq!(
        value(k, "c").await,
        7,
        "the old version still serves, state intact"
    );
    assert_eq!(k.status(&alice(), &sid("c")).unwrap().version, 1);

    // Unknown and another tenant's services.
    let e = k
        .hot_swap(&alice(), swap("nope", Format::Js, js("counter")))
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::NotFound(_)), "{e:?}");
    let bob = Caller::tenant(TenantId::new("bob").unwrap());
    let e = k
        .hot_swap(&bob, swap("c", Format::Js, js("echo")))
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::NotFound(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_the_rollback_window_rolls_back_with_the_same_state() {
    let s = solo().await;
    let k = &s.kernel;
    let mut d = DeployRequest::new(sid("c"), Format::Js, counter_variant(""));
    d.cpu_ms_per_message = Some(100);
    k.deploy(&alice(), d).await.unwrap();
    call(k, "c", r#"{"op":"inc","by":3}"#).await.unwrap();
    // The new version spins (and is stopped by its CPU limit) on "boom".
    let spinning = counter_variant(r#"if (r.op === "boom") { while (true) {} }"#);
    let mut req = swap("c", Format::Js, spinning);
    req.rollback_window = Some(Duration::from_secs(5));
    let out = k.hot_swap(&alice(), req).await.unwrap();
    assert_eq!(out.version, 2);
    call(k, "c", r#"{"op":"inc"}"#).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let e = call(k, "c", r#"{"op":"boom"}"#).await.unwrap_err();
    assert!(matches!(e, KernelError::ServiceCrashed(_)), "{e:?}");
    // Back on version 1, with the state the swap carried (3), not version 2's (4).
    let rolled = wait_for(k, kinds::HOT_SWAP_ROLLED_BACK, 1).await;
    assert_eq!(rolled[0].payload["from_version"], 2);
    assert_eq!(rolled[0].payload["to_version"], 1);
    assert_eq!(value(k, "c").await, 3);
    let st = k.status(&alice(), &sid("c")).unwrap();
    assert_eq!(st.version, 1);
    assert!(events(k, kinds::HOT_SWAP_SUCCEEDED).is_empty());
    // The rollback is durable: a restart brings back version 1.
    let s = restart(s).await;
    assert_eq!(s.kernel.status(&alice(), &sid("c")).unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_rollback_window_restarts_the_new_version() {
    let s = solo().await;
    let k = &s.kernel;
    let mut d = DeployRequest::new(sid("c"), Format::Js, counter_variant(""));
    d.cpu_ms_per_message = Some(100);
    k.deploy(&alice(), d).await.unwrap();
    let spinning = counter_variant(r#"if (r.op === "boom") { while (true) {} }"#);
    let mut req = swap("c", Format::Js, spinning);
    req.rollback_window = Some(Duration::from_millis(200));
    k.hot_swap(&alice(), req).await.unwrap();
    // The window closes without a crash: the old version is gone.
    wait_for(k, kinds::HOT_SWAP_SUCCEEDED, 1).await;
    let e = call(k, "c", r#"{"op":"boom"}"#).await.unwrap_err();
    assert!(matches!(e, KernelError::ServiceCrashed(_)), "{e:?}");
    // A crash now is an ordinary crash of version 2: restarted, not rolled back.
    wait_for(k, kinds::SERVICE_RESTARTED, 1).await;
    assert!(events(k, kinds::HOT_SWAP_ROLLED_BACK).is_empty());
    assert_eq!(k.status(&alice(), &sid("c")).unwrap().version, 2);
    call(k, "c", r#"{"op":"inc"}"#).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_window_is_30_seconds_unless_asked_and_at_most_10_minutes() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Js, counter_variant("")),
    )
    .await
    .unwrap();
    assert_eq!(
        solo_kernel::DEFAULT_ROLLBACK_WINDOW,
        Duration::from_secs(30)
    );
    let mut req = swap("c", Format::Js, counter_variant("// v2"));
    req.rollback_window = Some(Duration::from_secs(601));
    let e = k.hot_swap(&alice(), req).await.unwrap_err();
    assert!(matches!(e, KernelError::InvalidArgument(_)), "{e:?}");
    assert_eq!(k.status(&alice(), &sid("c")).unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_during_a_swap_are_answered_exactly_once() {
    let s = solo().await;
    let k = s.kernel.clone();
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Wasm, wasm("counter")),
    )
    .await
    .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let k = k.clone();
        calls.spawn(async move { call(&k, "c", r#"{"op":"inc"}"#).await });
    }
    let out = k
        .hot_swap(&alice(), swap("c", Format::Js, js("counter")))
        .await
        .unwrap();
    assert!(out.state_carried);
    let mut ok = 0;
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 300);
    assert_eq!(value(&k, "c").await, 300, "every increment counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_restarts_under_the_same_id_without_state() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Js, js("counter")),
    )
    .await
    .unwrap();
    call(k, "c", r#"{"op":"inc","by":4}"#).await.unwrap();
    let mut req = swap("c", Format::Wasm, wasm("counter"));
    req.mode = SwapMode::Replace;
    let out = k.hot_swap(&alice(), req).await.unwrap();
    assert_eq!(
        (out.method, out.version, out.state_carried),
        (SwapMethod::Replace, 2, false)
    );
    assert_eq!(value(k, "c").await, 0);
    assert_eq!(k.status(&alice(), &sid("c")).unwrap().format, Format::Wasm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_restarts_what_runs_with_its_last_snapshot_once() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("counter"), Format::Js, js("counter")),
    )
    .await
    .unwrap();
    k.deploy(
        &alice(),
        DeployRequest::new(sid("echo"), Format::Wasm, wasm("echo")),
    )
    .await
    .unwrap();
    k.deploy(
        &alice(),
        DeployRequest::new(sid("gone"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
    // Killed and deployed again: it comes back. Killed: it does not.
    k.kill(&alice(), &sid("echo"), KillOptions::default())
        .await
        .unwrap();
    k.deploy(
        &alice(),
        DeployRequest::new(sid("echo"), Format::Wasm, wasm("echo")),
    )
    .await
    .unwrap();
    k.kill(&alice(), &sid("gone"), KillOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        call(k, "counter", r#"{"op":"inc"}"#).await.unwrap();
    }
    // A swapped service comes back on its new version.
    k.hot_swap(&alice(), swap("counter", Format::Wasm, wasm("counter")))
        .await
        .unwrap();
    let deployed_before = events(k, kinds::SERVICE_DEPLOYED).len();

    let s = restart(s).await;
    let k = &s.kernel;
    assert_eq!(k.recovery().recovered, 2);
    assert_eq!(k.recovery().failed, 0);
    let mut ids: Vec<String> = k
        .list(&alice(), &ListFilter::default())
        .unwrap()
        .services
        .iter()
        .map(|s| s.service_id.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["counter", "echo"]);
    assert_eq!(
        value(k, "counter").await,
        3,
        "restored from the shutdown snapshot"
    );
    let st = k.status(&alice(), &sid("counter")).unwrap();
    assert_eq!((st.version, st.format), (2, Format::Wasm));
    assert_eq!(call(k, "echo", r#"{"x":1}"#).await.unwrap(), r#"{"x":1}"#);
    let recovered = events(k, kinds::SERVICE_RECOVERED);
    assert_eq!(recovered.len(), 2);
    let deployed: Vec<u64> = events(k, kinds::SERVICE_DEPLOYED)
        .iter()
        .map(|e| e.id)
        .collect();
    for r in &recovered {
        let original = r.payload["original_event_id"].as_u64().unwrap();
        assert!(deployed.contains(&original), "{r:?}");
    }

    // Again: idempotent, and still no new deployment.
    call(k, "counter", r#"{"op":"inc"}"#).await.unwrap();
    let s = restart(s).await;
    let k = &s.kernel;
    assert_eq!(k.recovery().recovered, 2);
    assert_eq!(value(k, "counter").await, 4);
    assert_eq!(events(k, kinds::SERVICE_DEPLOYED).len(), deployed_before);
    assert_eq!(events(k, kinds::SERVICE_RECOVERED).len(), 4);
    let report = s.store.verify().unwrap();
    assert!(report.first_broken.is_none());
    // Each start checked the log and said so.
    let verified = wait_for(k, kinds::EVENT_LOG_VERIFIED, 3).await;
    assert!(
        verified.iter().all(|e| e.payload["ok"] == true),
        "{verified:?}"
    );
    // `system_started` opens every boot: each check comes after its own start.
    let started = events(k, kinds::SYSTEM_STARTED);
    assert_eq!(started.len(), 3);
    assert_eq!(started[0].id, 1, "the first event of a new log");
    for (st, v) in started.iter().zip(&verified) {
        assert!(st.id < v.id, "{st:?} before {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_failure_is_recorded_and_the_others_come_back() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("ok"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
    // A service whose state its code can no longer read after a restart.
    k.deploy(
        &alice(),
        DeployRequest::new(sid("picky"), Format::Js, picky()),
    )
    .await
    .unwrap();
    let s = restart(s).await;
    let k = &s.kernel;
    assert_eq!((k.recovery().recovered, k.recovery().failed), (1, 1));
    let failed = events(k, kinds::SERVICE_RECOVERY_FAILED);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].payload["reason"]
            .as_str()
            .unwrap()
            .contains("restore")
    );
    assert_eq!(call(k, "ok", "1").await.unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_refuses_new_work_with_a_reason() {
    let s = solo().await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("e"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
    k.stop_accepting();
    let e = call(k, "e", "1").await.unwrap_err();
    assert_eq!(
        (e.code(), e.reason()),
        (solo_types::Code::Unavailable, "shutting_down")
    );
    let e = k
        .deploy(
            &alice(),
            DeployRequest::new(sid("f"), Format::Js, js("echo")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "shutting_down");
}

fn register(id: &str, name: &str, meta: &[(&str, &str)], ttl: i64) -> solo_kernel::RegisterRequest {
    solo_kernel::RegisterRequest {
        service_id: id.into(),
        name: name.into(),
        version: "1.0".into(),
        metadata: meta
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ttl_seconds: ttl,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_registers_filters_expires_and_survives_a_restart() {
    let (s, clock) = clocked(KernelConfig::default()).await;
    let k = &s.kernel;
    for id in ["eu", "us", "short"] {
        k.deploy(
            &alice(),
            DeployRequest::new(sid(id), Format::Wasm, wasm("echo")),
        )
        .await
        .unwrap();
    }
    let eu = k
        .register_service(&alice(), register("eu", "echo", &[("region", "eu")], 0))
        .await
        .unwrap();
    assert_eq!(eu.service_handle.len(), 32);
    assert!(eu.service_handle.bytes().all(|b| b.is_ascii_hexdigit()));
    k.register_service(&alice(), register("us", "echo", &[("region", "us")], 0))
        .await
        .unwrap();
    k.register_service(&alice(), register("short", "echo", &[("region", "eu")], 1))
        .await
        .unwrap();
    // Re-registering replaces, keeping the handle.
    let again = k
        .register_service(
            &alice(),
            register("eu", "echo", &[("region", "eu"), ("tier", "gold")], 0),
        )
        .await
        .unwrap();
    assert_eq!(again.service_handle, eu.service_handle);

    let filter = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    };
    let found = k
        .discover(&alice(), "echo", &filter(&[("region", "eu")]))
        .unwrap();
    let mut ids: Vec<String> = found.iter().map(|d| d.service_id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["eu", "short"]);
    let gold = k
        .discover(
            &alice(),
            "echo",
            &filter(&[("region", "eu"), ("tier", "gold")]),
        )
        .unwrap();
    assert_eq!(gold.len(), 1);
    assert_eq!(k.registrations(&alice(), None).unwrap().len(), 3);
    // Another tenant sees none of it, and cannot register alice's services.
    let bob = Caller::tenant(TenantId::new("bob").unwrap());
    assert!(k.discover(&bob, "echo", &filter(&[])).unwrap().is_empty());
    let e = k
        .register_service(&bob, register("eu", "echo", &[], 0))
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::NotFound(_)), "{e:?}");
    // Bad input.
    for bad in [
        register("eu", "", &[], 0),
        register("eu", "a/b", &[], 0),
        register("eu", "echo", &[], -1),
    ] {
        let e = k.register_service(&alice(), bad).await.unwrap_err();
        assert!(matches!(e, KernelError::InvalidArgument(_)), "{e:?}");
    }

    // TTL 1 s: gone after 2 s (on the kernel's clock), with an event.
    assert_eq!(k.registrations(&alice(), Some("echo")).unwrap().len(), 3);
    clock.advance(Duration::from_secs(2));
    assert_eq!(k.registrations(&alice(), Some("echo")).unwrap().len(), 2);
    let gone = wait_for(k, kinds::SERVICE_DEREGISTERED, 1).await;
    assert_eq!(gone[0].payload["reason"], "expired");

    // A service can call another by its registered name.
    let relay = br#"export async function handleCall(r) { return await solo.call(r.to, r.body); }"#;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("relay"), Format::Js, relay.to_vec()),
    )
    .await
    .unwrap();
    k.register_service(&alice(), register("us", "echo-us", &[], 0))
        .await
        .unwrap();
    let reply = call(k, "relay", r#"{"to":"echo-us","body":{"x":2}}"#)
        .await
        .unwrap();
    assert_eq!(reply, r#"{"x":2}"#);

    // A killed service's registrations go with it.
    k.kill(&alice(), &sid("us"), KillOptions::default())
        .await
        .unwrap();
    let names: Vec<String> = k
        .registrations(&alice(), None)
        .unwrap()
        .iter()
        .map(|d| d.service_id.to_string())
        .collect();
    assert_eq!(names, ["eu"]);

    // Registrations persist across a restart.
    let s = restart(s).await;
    let found = s.kernel.discover(&alice(), "echo", &filter(&[])).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_handle, eu.service_handle);
    assert!(found[0].alive);
}
