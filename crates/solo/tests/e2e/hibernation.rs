//! Hibernation from outside: the admin turns it on at runtime, an idle counter shows
//! `hibernated` in `status` and `list`, survives `kill -9` asleep, and its next call
//! wakes it with its count; a wake storm cut short by `kill -9`, and `kill -9` while
//! services hibernate, lose nothing that was acknowledged; checkpoints carry an awake
//! service's state through `kill -9`; an idle counter parks and a graceful stop saves it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, counter_js};
use crate::{call, deploy_js};

fn state(s: &Server) -> String {
    s.cli_json(&["status", "counter"])["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn until_hibernated(s: &Server) {
    let t0 = Instant::now();
    while state(s) != "hibernated" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never hibernated: {}",
            state(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_idle_counter_hibernates_survives_kill_9_asleep_and_wakes_with_its_count() {
    let s = Server::start();
    s.cli_json(&["config", "set", "services.hibernate_after_ms", "300"]);
    s.cli_json(&["deploy", "examples/js/counter.js"]);
    for _ in 0..3 {
        s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    }
    until_hibernated(&s);
    let v = s.cli_json(&["list", "--state", "hibernated"]);
    assert_eq!(v["services"][0]["service_id"], "counter", "{v}");
    let v = s.cli_json(&["call", "counter", r#"{"op":"get"}"#]);
    assert_eq!(v, json!({"value": 3}));
    assert_eq!(state(&s), "running");
    // The wake's event is written after the call is answered.
    let t0 = Instant::now();
    let mut v = s.cli_json(&["events", "--kind", "service_woke"]);
    while v["events"][0].is_null() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        v = s.cli_json(&["events", "--kind", "service_woke"]);
    }
    assert_eq!(v["events"][0]["payload"]["snapshot_bytes"], 1);

    // Asleep again, then killed without warning: it comes back asleep, with its count.
    until_hibernated(&s);
    let mut s = s;
    s.kill9();
    let s = s.restart();
    assert_eq!(state(&s), "hibernated");
    let v = s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    assert_eq!(v, json!({"value": 4}));
}

/// `services.checkpoint_every_ms`: an awake counter's state is saved a period after
/// its messages, so `kill -9` of the server loses at most that period's increments (not,
/// as without it, everything since the service last hibernated or stopped).
#[test]
fn checkpoints_carry_an_awake_counters_state_through_kill_9() {
    let s = Server::start();
    s.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]);
    s.cli_json(&["deploy", "examples/js/counter.js"]);
    for _ in 0..3 {
        s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&s), "running", "awake: the idle limit is 5 minutes");
    let mut s = s;
    s.kill9();
    let s = s.restart();
    let v = s.cli_json(&["call", "counter", r#"{"op":"get"}"#]);
    assert_eq!(v, json!({"value": 3}), "restored from its checkpoint");
    let v = s.cli_json(&["config", "show"]).to_string();
    assert!(v.contains("services.checkpoint_every_ms"), "{v}");
}

fn hibernated(s: &Server) -> usize {
    s.cli_json(&["list", "--state", "hibernated"])["services"]
        .as_array()
        .map_or(0, Vec::len)
}

fn count(reply: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(reply).unwrap()["value"]
        .as_i64()
        .unwrap()
}

/// A server whose services hibernate after 300 ms idle, with `n` JS counters `c0`..,
/// each incremented by `by(i)` once (checked); the client and the counts.
async fn counters(
    n: usize,
    by: impl Fn(usize) -> usize,
) -> (Server, solo_client::Client, Vec<i64>) {
    let s = Server::start();
    s.cli_json(&["config", "set", "services.hibernate_after_ms", "300"]);
    let c = s.admin().await;
    let mut counts = Vec::new();
    for i in 0..n {
        let id = format!("c{i}");
        c.clone()
            .deploy(deploy_js(&id, counter_js()))
            .await
            .unwrap();
        let by = i64::try_from(by(i)).unwrap();
        let r = c
            .clone()
            .call(call(&id, json!({"op": "inc", "by": by})))
            .await
            .unwrap();
        assert_eq!(count(&r.into_inner().reply), by);
        counts.push(by);
    }
    (s, c, counts)
}

/// A wake storm cut by `kill -9`: 40 hibernated counters with known counts are all
/// called at once, and the server is killed without warning while they wake. Every
/// call gets exactly one answer (a count, or an error; none hangs). After a restart
/// every counter is there and answers, each with the count its last snapshot holds (the
/// count it hibernated with; an increment acknowledged after a wake lives in memory
/// until the service hibernates or stops again, as on any crash), and the log's chain
/// verifies. Then the same storm without the kill: every call is answered with the
/// next count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_storm_cut_by_kill_9_loses_nothing_acknowledged() {
    const N: usize = 40;
    let (s, c, before) = counters(N, |i| i % 5 + 1).await;
    let t0 = Instant::now();
    while hibernated(&s) < N {
        assert!(t0.elapsed() < Duration::from_secs(30), "not all hibernated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let storm = |c: &solo_client::Client| {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..N {
            let mut c = c.clone();
            calls.spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    c.call(call(&format!("c{i}"), json!({"op": "inc"}))),
                )
                .await
                .expect("a call in the storm was never answered");
                (i, r.map(|r| count(&r.into_inner().reply)))
            });
        }
        calls
    };
    let mut calls = storm(&c);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut s = s;
    s.kill9();
    let (mut woke, mut refused) = (0, 0);
    while let Some(r) = calls.join_next().await {
        let (i, r) = r.unwrap();
        match r {
            Ok(v) => {
                assert_eq!(v, before[i] + 1, "c{i} answered a count from nowhere");
                woke += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!(woke + refused, N);
    eprintln!("storm cut by kill -9: {woke} calls answered, {refused} refused");

    let s = s.restart();
    let c = s.admin().await;
    for (i, b) in before.iter().enumerate() {
        let r = c
            .clone()
            .call(call(&format!("c{i}"), json!({"op": "get"})))
            .await
            .unwrap_or_else(|e| panic!("c{i} after the restart: {e}"));
        assert_eq!(count(&r.into_inner().reply), *b, "c{i}");
    }
    assert_eq!(s.cli_json(&["events", "verify"])["ok"], true);

    // The same storm, all asleep again, uncut: every call wakes its counter once.
    let t0 = Instant::now();
    while hibernated(&s) < N {
        assert!(t0.elapsed() < Duration::from_secs(30), "not all hibernated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut calls = storm(&c);
    while let Some(r) = calls.join_next().await {
        let (i, r) = r.unwrap();
        let v = r.unwrap_or_else(|e| panic!("c{i} in the storm: {e}"));
        assert_eq!(v, before[i] + 1, "c{i}");
    }
}

/// `kill -9` while services hibernate: 40 counters go to sleep one after another and
/// the server is killed once some of them have. After a restart each one answers with
/// either the count it hibernated with or, if its snapshot had not committed yet, the
/// count it starts with (nothing was saved); never anything else. Every counter that
/// `list` showed hibernated before the kill has its count: `hibernated` is shown only
/// once the snapshot is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_services_hibernate_keeps_every_saved_count() {
    const N: usize = 40;
    let (s, _, before) = counters(N, |i| i + 1).await;
    let t0 = Instant::now();
    let asleep = loop {
        let v = s.cli_json(&["list", "--state", "hibernated"]);
        let ids: Vec<String> = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service_id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= N / 4 {
            break ids;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "none hibernated");
    };
    let mut s = s;
    s.kill9();
    let s = s.restart();
    let c = s.admin().await;
    let mut saved = 0;
    for (i, b) in before.iter().enumerate() {
        let id = format!("c{i}");
        let r = c
            .clone()
            .call(call(&id, json!({"op": "get"})))
            .await
            .unwrap_or_else(|e| panic!("{id} after the restart: {e}"));
        let v = count(&r.into_inner().reply);
        assert!(v == *b || v == 0, "{id}: {v}, neither {b} nor 0");
        if asleep.contains(&id) {
            assert_eq!(v, *b, "{id} was listed hibernated");
        }
        saved += usize::from(v == *b);
    }
    eprintln!(
        "kill -9 while hibernating: {} listed asleep, {saved} of {N} with their count",
        asleep.len()
    );
    assert_eq!(s.cli_json(&["events", "verify"])["ok"], true);
}

/// `[sandbox] max_instances` sizes the pool: with 16 slots, 24 counters deploy and
/// answer, the least recently used hibernating to make room, each keeping its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_services_than_instance_slots_take_turns() {
    let (s, _) = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[("SOLO_SANDBOX__MAX_INSTANCES", "16")],
        &[],
    );
    let c = s.admin().await;
    for i in 0..24 {
        let id = format!("c{i}");
        c.clone()
            .deploy(deploy_js(&id, counter_js()))
            .await
            .unwrap();
        let by = json!({"op": "inc", "by": i});
        c.clone().call(call(&id, by)).await.unwrap();
    }
    assert!(hibernated(&s) > 0, "24 counters awake in 16 slots");
    for i in 0..24 {
        let r = c
            .clone()
            .call(call(&format!("c{i}"), json!({"op": "get"})))
            .await
            .unwrap_or_else(|e| panic!("c{i}: {e}"));
        assert_eq!(count(&r.into_inner().reply), i);
    }
}

/// An idle counter parks (its actor gives up its task a second after its last message):
/// it stays `running`, the gauge `solo_services_parked` counts it, its next call is
/// answered from the same memory, and a graceful stop of the server takes its snapshot
/// although no task of its runs, so the next start has its count.
#[tokio::test]
async fn an_idle_counter_parks_keeps_its_count_and_a_graceful_stop_saves_it() {
    let mut s = Server::start();
    s.cli_json(&["deploy", "examples/js/counter.js"]);
    for _ in 0..3 {
        s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    }
    let admin = s.rest(&s.admin_profile());
    let parked = || async {
        let text = admin.text("/metrics").await;
        text.lines()
            .find(|l| l.starts_with("solo_services_parked "))
            .map(|l| l.trim_start_matches("solo_services_parked ").to_string())
    };
    let t0 = Instant::now();
    while parked().await.as_deref() != Some("1") {
        assert!(t0.elapsed() < Duration::from_secs(10), "never parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state(&s), "running");
    let v = s.cli_json(&["call", "counter", r#"{"op":"inc"}"#]);
    assert_eq!(v, json!({"value": 4}), "the same instance, resumed");
    // Parked again (a second), and the gauge sampled since (each second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let t0 = Instant::now();
    while parked().await.as_deref() != Some("1") {
        assert!(t0.elapsed() < Duration::from_secs(10), "never parked again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(s.terminate(Duration::from_secs(20)).success());
    let s = s.restart();
    assert_eq!(state(&s), "running");
    let v = s.cli_json(&["call", "counter", r#"{"op":"get"}"#]);
    assert_eq!(v, json!({"value": 4}), "the graceful stop saved it");
}
