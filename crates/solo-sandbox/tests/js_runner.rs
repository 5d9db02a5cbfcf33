//! The JavaScript runner: QuickJS compiled to a component (`guests/js-runner`), running
//! the JS contract inside wasmtime, where the memory limit and the CPU budget are
//! wasmtime's, as for any component. (The JavaScript format still runs on the in-process
//! engine; moving it onto this runner is the rest of the work.)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{
    Artifact, CallError, CrashKind, Format, Instance, Limits, Sandbox, SandboxConfig,
};

/// The runner, compiled once per test process.
async fn compiled() -> &'static (Arc<Sandbox>, Artifact) {
    static RUNNER: tokio::sync::OnceCell<(Arc<Sandbox>, Artifact)> =
        tokio::sync::OnceCell::const_new();
    RUNNER
        .get_or_init(|| async {
            let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
            let code: Arc<[u8]> = solo_guests::wasm("js-runner").into();
            let artifact = sandbox.compile(Format::Wasm, code).await.unwrap();
            (sandbox, artifact)
        })
        .await
}

async fn runner(source: &str) -> Result<Box<dyn Instance>, String> {
    runner_on(source, &MemoryHost::new()).await
}

async fn runner_on(source: &str, host: &MemoryHost) -> Result<Box<dyn Instance>, String> {
    let (sandbox, artifact) = compiled().await;
    let limits = Limits {
        memory_bytes: 32 << 20,
        cpu_per_message: Duration::from_millis(300),
        max_reply_bytes: 1 << 20,
    };
    let mut inst = sandbox
        .instantiate(artifact, limits, Arc::new(host.clone()))
        .await
        .unwrap();
    let config = serde_json::json!({ "source": source, "config": { "start": 7 } });
    inst.init(&config.to_string())
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(inst)
}

#[tokio::test]
async fn the_js_contract_runs_inside_wasmtime() {
    // The counter example, unchanged: module exports, state, init with its config
    // (`start`).
    let mut c = runner(&solo_guests::js("counter")).await.unwrap();
    c.call(r#"{"op":"inc","by":5}"#).await.unwrap();
    assert_eq!(c.call(r#"{"op":"get"}"#).await.unwrap(), r#"{"value":12}"#);

    let source = r#"
        let start = 0;
        export function init(config) { start = config.start; }
        export async function handleCall(r) {
            await null;
            if (r.throw) throw new TypeError("bad " + r.throw);
            if (r.spin) for (;;) {}
            if (r.bomb) { const a = []; for (;;) a.push(new Array(100000).fill(1)); }
            if (r.deep) { const f = (n) => f(n + 1) + 1; return f(0); }
            return { x: r.x * 2 + start };
        }
    "#;
    let mut s = runner(source).await.unwrap();
    // Async functions settle; init got its config.
    assert_eq!(s.call(r#"{"x":21}"#).await.unwrap(), r#"{"x":49}"#);
    // An exception is a guest error with its message and JS stack.
    match s.call(r#"{"throw":"input"}"#).await {
        Err(CallError::Guest(e)) => {
            assert!(e.message.contains("bad input"), "{e:?}");
            assert!(e.message.contains("handleCall"), "{e:?}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
    assert_eq!(s.call(r#"{"x":1}"#).await.unwrap(), r#"{"x":9}"#);
    // A spinning guest is stopped by wasmtime's epochs, a memory bomb by its memory
    // limit.
    match s.call(r#"{"spin":true}"#).await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::CpuLimit),
        other => panic!("expected a cpu_limit crash, got {other:?}"),
    }
    let mut s = runner(source).await.unwrap();
    match s.call(r#"{"bomb":true}"#).await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::MemoryLimit),
        other => panic!("expected a memory_limit crash, got {other:?}"),
    }

    // Unbounded recursion overflows the component's stack: a crash of kind
    // stack_overflow (its backtrace is QuickJS's wasm frames, not yet the JS stack).
    let mut s = runner(source).await.unwrap();
    match s.call(r#"{"deep":true}"#).await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::StackOverflow),
        other => panic!("expected a stack_overflow crash, got {other:?}"),
    }

    // A syntax error is refused at init, naming line and column.
    let Err(e) = runner("export function handleCall(r) { return r; ").await else {
        panic!("a syntax error was taken");
    };
    assert!(
        e.contains("unexpected token") && e.contains("service:1:43"),
        "{e}"
    );
}

#[tokio::test]
async fn the_solo_host_api_and_state_work_on_the_runner() {
    // The kv-notes example, unchanged.
    let host = MemoryHost::new();
    let mut kv = runner_on(&solo_guests::js("kv-notes"), &host)
        .await
        .unwrap();
    kv.call(r#"{"op":"put","key":"a","value":"1"}"#)
        .await
        .unwrap();
    assert_eq!(
        kv.call(r#"{"op":"get","key":"a"}"#).await.unwrap(),
        r#"{"value":"1"}"#
    );
    assert_eq!(
        kv.call(r#"{"op":"get","key":"b"}"#).await.unwrap(),
        r#"{"value":null}"#
    );
    assert_eq!(
        kv.call(r#"{"op":"list","prefix":""}"#).await.unwrap(),
        r#"{"keys":["a"]}"#
    );

    // The rest of the API, with the same names and shapes as the in-process engine.
    host.set_secret("api", b"s3cret");
    host.on_call(|target, request| Ok(format!(r#"{{"to":"{target}","got":{request}}}"#)));
    let source = r#"
        export async function handleCall(r) {
            solo.log("warn", "careful");
            solo.log("plain");
            solo.emit("seen", { n: 1 });
            const reply = await solo.call("other", { q: 1 });
            let missing;
            try { await solo.secret("nope"); } catch (e) { missing = e.code; }
            let frozen = false;
            try { solo.secret = () => "stolen"; } catch (e) { frozen = true; }
            return {
                secret: await solo.secret("api"),
                reply,
                missing,
                frozen: frozen || Object.isFrozen(solo),
                me: typeof solo.whoami().tenant,
                now: solo.now() > 0,
            };
        }
    "#;
    let mut s = runner_on(source, &host).await.unwrap();
    let reply: serde_json::Value = serde_json::from_str(&s.call("{}").await.unwrap()).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({
            "secret": "s3cret",
            "reply": { "to": "other", "got": { "q": 1 } },
            "missing": "not_found",
            "frozen": true,
            "me": "string",
            "now": true,
        })
    );
    let logs = host.logs();
    assert!(logs.iter().any(|(_, m)| m == "careful"), "{logs:?}");
    assert!(logs.iter().any(|(_, m)| m == "plain"), "{logs:?}");
    let events = host.events();
    assert!(
        events
            .iter()
            .any(|(k, p)| k.ends_with("seen") && p == r#"{"n":1}"#),
        "{events:?}"
    );

    // State: the counter's snapshot restores into a new instance.
    let mut a = runner(&solo_guests::js("counter")).await.unwrap();
    a.call(r#"{"op":"inc","by":5}"#).await.unwrap();
    let snap = a.snapshot().await.unwrap().expect("a snapshot");
    let mut b = runner(&solo_guests::js("counter")).await.unwrap();
    b.restore(&snap).await.unwrap();
    assert_eq!(b.call(r#"{"op":"get"}"#).await.unwrap(), r#"{"value":12}"#);
}
