//! Hibernation from outside: the admin turns it on at runtime, an idle counter shows
//! `hibernated` in `status` and `list`, survives `kill -9` asleep, and its next call
//! wakes it with its count.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Server;

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
