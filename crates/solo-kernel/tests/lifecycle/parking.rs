//! Parking: an awake service idle past `park_after_ms` gives up its actor's task and
//! keeps its instance (still `running`, its state in memory); the next message resumes
//! it. A parked service is swapped, killed, hibernated and stopped like any other.

use std::time::{Duration, Instant};

use solo_types::ServiceState;

use super::hibernation::{deploy, inc};
use super::*;

/// Services park after `park_ms` idle; hibernation after `sleep_ms` (0: never).
fn parking(park_ms: u64, sleep_ms: u64) -> KernelConfig {
    let mut c = KernelConfig::default();
    c.service_defaults.park_after_ms = park_ms;
    c.service_defaults.hibernate_after_ms = sleep_ms;
    c
}

fn tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until the runtime holds at most `most` tasks.
async fn until_tasks_at_most(most: usize, what: &str) {
    let t0 = Instant::now();
    while tasks() > most {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} tasks {what}, expected at most {most}",
            tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 20 counters (wasm and JavaScript) idle past the limit leave the runtime with about as
/// many tasks as before they were deployed, yet stay `running` with their instance and
/// its memory: each next call is answered from the state in that memory (no snapshot is
/// taken or restored: hibernation is off), and none of this is a crash, a sleep or a
/// wake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_awake_service_gives_up_its_task_and_keeps_its_instance() {
    let s = open_with(tempfile::tempdir().unwrap(), parking(50, 0)).await;
    let k = &s.kernel;
    deploy(k, "first", Format::Wasm, wasm("counter")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = tasks();
    for i in 0..20 {
        let (format, code) = if i % 4 == 0 {
            (Format::Js, js("counter"))
        } else {
            (Format::Wasm, wasm("counter"))
        };
        deploy(k, &format!("c{i}"), format, code).await;
        inc(k, &format!("c{i}"), i).await;
    }
    until_tasks_at_most(before + 2, "with 20 services parked").await;
    let uptimes: Vec<u64> = (0..20)
        .map(|i| {
            let st = k.status(&alice(), &sid(&format!("c{i}"))).unwrap();
            assert_eq!(st.state, ServiceState::Running, "c{i} is still running");
            assert!(st.memory_bytes > 0, "c{i} keeps its instance");
            st.uptime_ms
        })
        .collect();
    for round in 1..=2 {
        for i in 0..20 {
            assert_eq!(inc(k, &format!("c{i}"), 1).await, i + round);
        }
        // Each call resumed an actor: they park again.
        until_tasks_at_most(before + 2, "parked again").await;
    }
    for (i, was) in uptimes.iter().enumerate() {
        let st = k.status(&alice(), &sid(&format!("c{i}"))).unwrap();
        assert!(st.uptime_ms > *was, "c{i}: parking is no restart");
        assert_eq!(st.restarts, 0);
    }
    for kind in [
        kinds::SERVICE_CRASHED,
        kinds::SERVICE_HIBERNATED,
        kinds::SERVICE_WOKE,
    ] {
        assert!(events(k, kind).is_empty(), "no {kind}");
    }
}

/// A parked service is swapped (resumed for it, the state carried over), stopped by a
/// graceful kill with its snapshot, by a forced kill at once, and by the server's
/// shutdown with its snapshot kept for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_service_is_swapped_killed_and_stopped_with_its_state() {
    let config = parking(30, 0);
    let s = open_with(tempfile::tempdir().unwrap(), config.clone()).await;
    let k = &s.kernel;
    deploy(k, "first", Format::Wasm, wasm("counter")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = tasks();
    for id in ["swapped", "graceful", "forced", "kept"] {
        deploy(k, id, Format::Wasm, wasm("counter")).await;
        inc(k, id, 4).await;
    }
    until_tasks_at_most(before + 1, "with 4 services parked").await;

    k.hot_swap(&alice(), swap("swapped", Format::Js, counter_variant("")))
        .await
        .unwrap();
    assert_eq!(inc(k, "swapped", 1).await, 5, "swapped with its state");

    let killed = k
        .kill(&alice(), &sid("graceful"), KillOptions::default())
        .await
        .unwrap();
    assert!(
        killed.snapshot_bytes.is_some_and(|n| n > 0),
        "a graceful kill takes the snapshot: {killed:?}"
    );
    let killed = k
        .kill(
            &alice(),
            &sid("forced"),
            KillOptions {
                force: true,
                ..KillOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(killed.snapshot_bytes, None, "a forced kill takes none");
    for id in ["graceful", "forced"] {
        assert!(k.status(&alice(), &sid(id)).is_err(), "{id} is gone");
    }

    // Parked again before the stop: the shutdown stops it with its snapshot.
    tokio::time::sleep(Duration::from_millis(400)).await;
    until_tasks_at_most(before + 1, "parked before the stop").await;
    s.kernel.shutdown().await;
    s.store.close().await;
    let Solo { kernel, store, dir } = s;
    drop((kernel, store));
    let s = open_with(dir, config).await;
    let k = &s.kernel;
    assert_eq!(
        inc(k, "kept", 1).await,
        5,
        "restored from the stop's snapshot"
    );
    assert_eq!(inc(k, "swapped", 1).await, 6);
}

/// A parked service idle past the hibernation limit is resumed to hibernate, and wakes
/// with its state; one whose code keeps no state says once why it stays awake, however
/// often it parks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_service_hibernates_when_idle_long_enough() {
    let s = open_with(tempfile::tempdir().unwrap(), parking(30, 300)).await;
    let k = &s.kernel;
    deploy(k, "c", Format::Wasm, wasm("counter")).await;
    deploy(k, "echo", Format::Js, js("echo")).await;
    assert_eq!(inc(k, "c", 3).await, 3);
    let t0 = Instant::now();
    while k.status(&alice(), &sid("c")).unwrap().state != ServiceState::Hibernated {
        assert!(t0.elapsed() < Duration::from_secs(10), "c never slept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "not before its limit"
    );
    assert_eq!(inc(k, "c", 1).await, 4, "woken with its state");
    for _ in 0..3 {
        assert_eq!(call(k, "echo", "1").await.unwrap(), "1");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        k.status(&alice(), &sid("echo")).unwrap().state,
        ServiceState::Running
    );
    let said = k
        .logs(&alice(), &sid("echo"), 50)
        .unwrap()
        .iter()
        .filter(|l| l.message.contains("stays awake when idle"))
        .count();
    assert_eq!(said, 1, "said once");
}

/// Calls racing the actor's parking and resuming (a 1 ms limit, callers pausing 0 to
/// 3 ms) are each answered once, in order per caller: no increment is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_parking_are_each_answered_once() {
    let s = Arc::new(open_with(tempfile::tempdir().unwrap(), parking(1, 0)).await);
    for i in 0..8 {
        deploy(&s.kernel, &format!("c{i}"), Format::Wasm, wasm("counter")).await;
    }
    let mut callers = Vec::new();
    for c in 0..16u64 {
        let s = Arc::clone(&s);
        callers.push(tokio::spawn(async move {
            let id = format!("c{}", c % 8);
            let mut last = 0;
            for n in 0..40u64 {
                let v = inc(&s.kernel, &id, 1).await;
                assert!(v > last, "{id}: {v} after {last}");
                last = v;
                let pause = (c * 7 + n * 13) % 4;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    for i in 0..8 {
        assert_eq!(value(&s.kernel, &format!("c{i}")).await, 80);
    }
    assert!(events(&s.kernel, kinds::SERVICE_CRASHED).is_empty());
}
