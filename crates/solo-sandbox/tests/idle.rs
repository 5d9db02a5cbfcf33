//! An idle instance hands its fiber stack's pages back to the system and takes them
//! again on its next call, state and all, in both formats; a call cut short (its future
//! dropped, its stack back in the pool) leaves nothing to hand back.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{Format, Instance, Limits, Sandbox, SandboxConfig};

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            max_instances: 100,
            ..SandboxConfig::default()
        })
        .unwrap()
    }))
}

async fn start(format: Format, name: &str, cpu: Duration) -> Box<dyn Instance> {
    let code: Arc<[u8]> = match format {
        Format::Wasm => solo_guests::wasm(name).into(),
        Format::Js => solo_guests::js(name).into_bytes().into(),
    };
    let artifact = sandbox().compile(format, code).await.unwrap();
    let limits = Limits {
        memory_bytes: 32 << 20,
        cpu_per_message: cpu,
        ..Limits::default()
    };
    let mut inst = sandbox()
        .instantiate(&artifact, limits, Arc::new(MemoryHost::new()))
        .await
        .unwrap();
    inst.init("{}").await.unwrap();
    inst
}

async fn value(inst: &mut Box<dyn Instance>) -> String {
    let reply = inst.call(r#"{"op":"get"}"#).await.unwrap();
    reply.replace(' ', "")
}

#[tokio::test]
async fn an_idle_instance_hands_back_its_stack_pages_and_calls_on_with_its_state() {
    for f in [Format::Wasm, Format::Js] {
        let mut c = start(f, "counter", Duration::from_secs(1)).await;
        let first = c.release_idle_memory();
        assert!(
            (4096..=2 << 20).contains(&first),
            "{f}: init's stack pages: {first} bytes"
        );
        assert_eq!(c.release_idle_memory(), 0, "{f}: released once");
        for _ in 0..50 {
            c.call(r#"{"op":"inc","by":1}"#).await.unwrap();
            assert!(c.release_idle_memory() >= 4096, "{f}: each call's pages");
        }
        assert_eq!(value(&mut c).await, r#"{"value":50}"#, "{f}");
        c.release_idle_memory();
        let snap = c.snapshot().await.unwrap().unwrap();
        c.release_idle_memory();
        let mut d = start(f, "counter", Duration::from_secs(1)).await;
        d.restore(&snap).await.unwrap();
        assert_eq!(value(&mut d).await, r#"{"value":50}"#, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_releasing_between_calls_on_many_threads_keep_their_own_state() {
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let f = if i % 4 == 3 { Format::Js } else { Format::Wasm };
        tasks.push(tokio::spawn(async move {
            let mut c = start(f, "counter", Duration::from_secs(5)).await;
            for _ in 0..100 {
                c.call(&format!(r#"{{"op":"inc","by":{i}}}"#))
                    .await
                    .unwrap();
                c.release_idle_memory();
                tokio::task::yield_now().await;
            }
            (i, value(&mut c).await)
        }));
    }
    for t in tasks {
        let (i, v) = t.await.unwrap();
        assert_eq!(v, format!(r#"{{"value":{}}}"#, i * 100));
    }
}

#[tokio::test]
async fn a_call_cut_short_hands_back_nothing() {
    let mut spinner = start(Format::Wasm, "spinner", Duration::from_secs(10)).await;
    spinner.release_idle_memory();
    let cut = tokio::time::timeout(Duration::from_millis(50), spinner.call("{}")).await;
    assert!(cut.is_err(), "the spinner was still running");
    assert_eq!(spinner.release_idle_memory(), 0);
    // wasmtime will not enter an instance left mid-call again; its owner drops it.
    assert!(spinner.call(r#"{"mode":"ok"}"#).await.is_err());
    drop(spinner);
    let mut fresh = start(Format::Wasm, "spinner", Duration::from_secs(10)).await;
    assert_eq!(fresh.call(r#"{"mode":"ok"}"#).await.unwrap(), "\"ok\"");
    assert!(fresh.release_idle_memory() >= 4096);
}
