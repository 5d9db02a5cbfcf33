//! Hibernation: an idle service with snapshot/restore sleeps with no instance and wakes
//! on its next message with its state; what wakes it, what does not, what fails.

use std::time::Duration;

use solo_types::{ServiceState, ServiceStatus};

use super::*;

/// A kernel whose services hibernate after 150 ms idle.
fn sleepy() -> KernelConfig {
    let mut c = KernelConfig::default();
    c.service_defaults.hibernate_after_ms = 150;
    c
}

fn status(k: &Kernel, id: &str) -> ServiceStatus {
    k.status(&alice(), &sid(id)).unwrap()
}

async fn until_state(k: &Kernel, id: &str, want: ServiceState) -> ServiceStatus {
    for _ in 0..400 {
        let st = status(k, id);
        if st.state == want {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never became {want}: {:?}", status(k, id).state);
}

pub(super) async fn deploy(k: &Kernel, id: &str, format: Format, code: Arc<[u8]>) {
    k.deploy(&alice(), DeployRequest::new(sid(id), format, code))
        .await
        .unwrap();
}

pub(super) async fn inc(k: &Kernel, id: &str, by: i64) -> i64 {
    let r = call(k, id, &format!(r#"{{"op":"inc","by":{by}}}"#))
        .await
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&r).unwrap()["value"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_service_hibernates_and_its_next_call_wakes_it_with_its_state() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    deploy(k, "c", Format::Wasm, wasm("counter")).await;
    assert_eq!(inc(k, "c", 5).await, 5);
    let st = until_state(k, "c", ServiceState::Hibernated).await;
    assert_eq!(st.memory_bytes, 0, "no instance while asleep");
    // Status does not wake it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(status(k, "c").state, ServiceState::Hibernated);
    let slept = wait_for(k, kinds::SERVICE_HIBERNATED, 1).await;
    assert_eq!(slept[0].payload["snapshot_bytes"], 1);
    assert_eq!(inc(k, "c", 2).await, 7, "woken with its state");
    assert_eq!(status(k, "c").state, ServiceState::Running);
    let woke = wait_for(k, kinds::SERVICE_WOKE, 1).await;
    assert_eq!(woke[0].payload["snapshot_bytes"], 1);
    // And again: each idle spell puts it to sleep, each message wakes it.
    until_state(k, "c", ServiceState::Hibernated).await;
    assert_eq!(value(k, "c").await, 7);
    assert!(
        events(k, kinds::SERVICE_CRASHED).is_empty(),
        "sleeping is not crashing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrive_while_it_wakes_are_handled_in_order_and_a_storm_is_answered() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    for i in 0..20 {
        deploy(k, &format!("c{i}"), Format::Wasm, wasm("counter")).await;
    }
    for i in 0..20 {
        until_state(k, &format!("c{i}"), ServiceState::Hibernated).await;
    }
    // Casts queue behind the one that wakes the service; the call comes after them.
    for _ in 0..50 {
        k.cast(&alice(), &sid("c0"), r#"{"op":"inc"}"#).unwrap();
    }
    assert_eq!(value(k, "c0").await, 50);
    // A wake storm: every other service called at once, each answered exactly once.
    let mut calls = tokio::task::JoinSet::new();
    for i in 1..20 {
        for _ in 0..3 {
            let k = k.clone();
            calls.spawn(async move { inc(&k, &format!("c{i}"), 1).await });
        }
    }
    let mut answers = Vec::new();
    while let Some(r) = calls.join_next().await {
        answers.push(r.unwrap());
    }
    assert_eq!(answers.len(), 57);
    for i in 1..20 {
        assert_eq!(value(k, &format!("c{i}")).await, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_keep_its_state_stays_awake_and_says_why() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    // No snapshot/restore (a JS module without the exports): it never sleeps.
    deploy(k, "echo", Format::Js, js("echo")).await;
    // A snapshot over the limit: it tries, stays awake and logs why.
    let big: Arc<[u8]> = br#"let v = "x".repeat(5 << 20);
export function handleCall(r) { return r; }
export function snapshot() { return v; }
export function restore(s) { v = s; }
"#
    .to_vec()
    .into();
    deploy(k, "big", Format::Js, big).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(status(k, "echo").state, ServiceState::Running);
    assert_eq!(status(k, "big").state, ServiceState::Running);
    for id in ["echo", "big"] {
        let logs = k.logs(&alice(), &sid(id), 10).unwrap();
        assert!(
            logs.iter().any(|l| l.message.contains("stays awake")),
            "{id}: {logs:?}"
        );
    }
    assert_eq!(call(k, "big", "1").await.unwrap(), "1");
    // A component built with the SDK exports both; one that keeps nothing (`snapshot`
    // answers none) sleeps and wakes with what `init` builds.
    deploy(k, "wasm-echo", Format::Wasm, wasm("echo")).await;
    until_state(k, "wasm-echo", ServiceState::Hibernated).await;
    assert_eq!(call(k, "wasm-echo", "[1]").await.unwrap(), "[1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_crashes_on_wake_is_a_crash_at_start() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    deploy(k, "picky", Format::Js, picky()).await;
    until_state(k, "picky", ServiceState::Hibernated).await;
    let e = call(k, "picky", "1").await.unwrap_err();
    assert!(
        matches!(e, KernelError::ServiceCrashed(_)),
        "the waking call is answered, as crashed: {e:?}"
    );
    wait_for(k, kinds::SERVICE_RESTARTED, 1).await;
    // Restarted by its supervisor, asleep again with the same state, and the crash on
    // record.
    let st = until_state(k, "picky", ServiceState::Hibernated).await;
    let report = st.last_error.unwrap();
    assert!(report.message.contains("restore"), "{report:?}");
    assert_eq!(st.restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_and_kill_of_a_hibernated_service() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    deploy(k, "c", Format::Wasm, wasm("counter")).await;
    inc(k, "c", 41).await;
    until_state(k, "c", ServiceState::Hibernated).await;
    // A swap wakes it and carries its state to the new code.
    let swapped = k
        .hot_swap(&alice(), swap("c", Format::Js, js("counter")))
        .await
        .unwrap();
    assert_eq!(swapped.version, 2);
    assert_eq!(inc(k, "c", 1).await, 42);
    until_state(k, "c", ServiceState::Hibernated).await;
    // A kill of a sleeping service needs no instance: its saved state is its last.
    let killed = k
        .kill(&alice(), &sid("c"), KillOptions::default())
        .await
        .unwrap();
    assert_eq!(killed.snapshot_bytes, Some(2));
    assert!(k.status(&alice(), &sid("c")).is_err());
    // A new deployment of the id starts from nothing.
    deploy(k, "c", Format::Wasm, wasm("counter")).await;
    assert_eq!(value(k, "c").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_hibernated_services_asleep() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    deploy(k, "sleeper", Format::Wasm, wasm("counter")).await;
    inc(k, "sleeper", 3).await;
    until_state(k, "sleeper", ServiceState::Hibernated).await;
    s.kernel.shutdown().await;
    s.store.close().await;
    let Solo { kernel, store, dir } = s;
    drop((kernel, store));
    // Hibernation off now: those asleep stay asleep, and wake on their next message.
    let s = open(dir).await;
    let k = &s.kernel;
    assert_eq!(k.recovery().recovered, 1);
    let st = status(k, "sleeper");
    assert_eq!(st.state, ServiceState::Hibernated);
    assert_eq!(st.memory_bytes, 0);
    assert_eq!(inc(k, "sleeper", 1).await, 4);
    assert_eq!(status(k, "sleeper").state, ServiceState::Running);
}

/// A hibernated service holds no task: 20 counters asleep leave the runtime with about
/// as many tasks as before they were deployed (one each while awake), and each wakes on
/// its next call with its count, its actor resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_service_holds_no_task() {
    let s = open_with(tempfile::tempdir().unwrap(), sleepy()).await;
    let k = &s.kernel;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    deploy(k, "first", Format::Wasm, wasm("counter")).await;
    until_state(k, "first", ServiceState::Hibernated).await;
    let before = tasks();
    for i in 0..20 {
        deploy(k, &format!("c{i}"), Format::Wasm, wasm("counter")).await;
        inc(k, &format!("c{i}"), i).await;
    }
    for i in 0..20 {
        until_state(k, &format!("c{i}"), ServiceState::Hibernated).await;
    }
    let t0 = std::time::Instant::now();
    while tasks() > before + 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} tasks with 20 services asleep, {before} before",
            tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..20 {
        assert_eq!(inc(k, &format!("c{i}"), 1).await, i + 1);
    }
}

/// Checkpoints save an awake service's state between messages without putting it to
/// sleep; it still hibernates when idle and wakes with its state. A JS snapshot that
/// throws ends the instance, as it does on hibernation, and the supervisor restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_leave_hibernation_and_wakes_as_they_were() {
    let mut c = sleepy();
    c.service_defaults.hibernate_after_ms = 400;
    c.service_defaults.checkpoint_every_ms = 50;
    let s = open_with(tempfile::tempdir().unwrap(), c).await;
    let k = &s.kernel;
    deploy(k, "c", Format::Wasm, wasm("counter")).await;
    assert_eq!(inc(k, "c", 5).await, 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(k, "c").state,
        ServiceState::Running,
        "a checkpoint does not sleep"
    );
    assert!(events(k, kinds::SERVICE_HIBERNATED).is_empty());
    assert_eq!(inc(k, "c", 1).await, 6);
    until_state(k, "c", ServiceState::Hibernated).await;
    assert_eq!(inc(k, "c", 2).await, 8, "woken with its state");

    let refuses: Arc<[u8]> = br#"export function handleCall(r) { return r; }
export function snapshot() { throw new Error("not now"); }
export function restore(s) {}
"#
    .to_vec()
    .into();
    deploy(k, "refuses", Format::Js, refuses).await;
    assert_eq!(call(k, "refuses", "1").await.unwrap(), "1");
    let crashed = wait_for(k, kinds::SERVICE_CRASHED, 1).await;
    assert!(
        crashed[0].payload.to_string().contains("in snapshot"),
        "{:?}",
        crashed[0].payload
    );
    until_state(k, "refuses", ServiceState::Running).await;
    assert_eq!(call(k, "refuses", "2").await.unwrap(), "2");
}

/// A kernel whose sandbox has `slots` instance slots, hibernating only to make room.
async fn small_pool(slots: u32) -> Solo {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store(dir.path());
    let dyn_store: Arc<dyn Store> = store.clone();
    let sandbox = solo_sandbox::Sandbox::new(solo_sandbox::SandboxConfig {
        max_instances: slots,
        ..solo_sandbox::SandboxConfig::default()
    })
    .unwrap();
    let mut config = KernelConfig::default();
    config.service_defaults.hibernate_after_ms = 600_000;
    config.service_defaults.startup_timeout_ms = 2_000;
    let kernel = Kernel::start(dyn_store, sandbox, config, KernelOptions::default())
        .await
        .unwrap();
    Solo { kernel, store, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_beyond_the_pool_take_turns_and_a_full_pool_refuses_clearly() {
    let s = small_pool(4).await;
    let k = &s.kernel;
    // Three times as many counters as slots: the least recently used sleep to make
    // room, and every one keeps its own count through its turns.
    for i in 0..12 {
        deploy(k, &format!("c{i}"), Format::Wasm, wasm("counter")).await;
        inc(k, &format!("c{i}"), i).await;
    }
    for round in 1..=2 {
        for i in 0..12 {
            assert_eq!(inc(k, &format!("c{i}"), 100).await, i + 100 * round);
        }
    }
    let asleep = (0..12)
        .filter(|i| status(k, &format!("c{i}")).state == ServiceState::Hibernated)
        .count();
    assert!(asleep >= 8, "only the awake hold slots: {asleep} asleep");
    assert!(events(k, kinds::SERVICE_CRASHED).is_empty());

    // Four services that cannot sleep take every slot: a deploy is refused clearly,
    // and a call that would wake a counter too; nothing else changes.
    for i in 0..4 {
        deploy(k, &format!("wide{i}"), Format::Js, js("echo")).await;
    }
    let e = k
        .deploy(
            &alice(),
            DeployRequest::new(sid("one-more"), Format::Wasm, wasm("counter")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "no_instance_slot", "{e:?}");
    assert_eq!(e.code(), solo_types::Code::ResourceExhausted);
    let e = call(k, "c0", r#"{"op":"get"}"#).await.unwrap_err();
    assert_eq!(e.reason(), "no_instance_slot", "{e:?}");
    assert_eq!(status(k, "c0").state, ServiceState::Hibernated);
    // Room again: the counter wakes with its count.
    k.kill(&alice(), &sid("wide0"), KillOptions::default())
        .await
        .unwrap();
    assert_eq!(value(k, "c0").await, 200);
}
