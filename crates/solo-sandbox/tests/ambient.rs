//! No ambient authority, from a hostile guest's side: the `intruder` example tries every
//! door (files, the environment, arguments, the network, name lookup, processes,
//! `/proc`; in JavaScript, system modules, Node's and QuickJS's globals, network APIs and
//! timers) and each attempt must fail with an error the guest can read.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{Format, Limits, Sandbox, SandboxConfig};

#[tokio::test]
async fn every_door_is_closed_in_both_formats() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    for (format, code) in [
        (
            Format::Wasm,
            Arc::<[u8]>::from(solo_guests::wasm("intruder")),
        ),
        (
            Format::Js,
            Arc::<[u8]>::from(solo_guests::js("intruder").into_bytes()),
        ),
    ] {
        let artifact = sandbox.compile(format, code).await.unwrap();
        let limits = Limits {
            memory_bytes: 32 << 20,
            cpu_per_message: Duration::from_secs(5),
            ..Limits::default()
        };
        let host = MemoryHost::new();
        let mut inst = sandbox
            .instantiate(&artifact, limits, Arc::new(host.clone()))
            .await
            .unwrap();
        inst.init("{}").await.unwrap();
        let reply = inst.call("{}").await.unwrap();
        let doors: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&reply).unwrap();
        assert!(doors.len() >= 10, "{format}: {reply}");
        let open: Vec<_> = doors
            .iter()
            .filter(|(_, v)| !v.as_str().unwrap_or("").starts_with("denied:"))
            .collect();
        assert!(open.is_empty(), "{format}: open doors {open:?}");
        println!("{format}: {reply}");
        // The instance survived every attempt.
        assert!(inst.call("{}").await.is_ok(), "{format}");
    }
}
