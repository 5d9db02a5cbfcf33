//! The JavaScript runner: QuickJS compiled to a component (`guests/js-runner`), running
//! every JavaScript service inside wasmtime, where the memory limit and the CPU budget
//! are wasmtime's, as for any component. (`sandbox.rs` runs the JS contract in both
//! formats; this file covers what is the runner's own.)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{
    CallError, CompileError, CrashKind, Format, Instance, Limits, Sandbox, SandboxConfig,
};

/// One sandbox per test process.
fn sandbox() -> &'static Arc<Sandbox> {
    static SANDBOX: std::sync::OnceLock<Arc<Sandbox>> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig::default()).unwrap())
}

async fn runner(source: &str) -> Result<Box<dyn Instance>, String> {
    runner_on(source, &MemoryHost::new()).await
}

async fn runner_on(source: &str, host: &MemoryHost) -> Result<Box<dyn Instance>, String> {
    let sandbox = sandbox();
    let artifact = sandbox
        .compile(Format::Js, source.as_bytes().into())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let limits = Limits {
        memory_bytes: 32 << 20,
        cpu_per_message: Duration::from_millis(300),
        max_reply_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut inst = sandbox
        .instantiate(&artifact, limits, Arc::new(host.clone()))
        .await
        .unwrap();
    inst.init(r#"{"start":7}"#)
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
            if (r.spin) for (;;) {}
            await null;
            if (r.throw) throw new TypeError("bad " + r.throw);
            if (r.later) for (;;) {}
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
            assert!(e.stack.unwrap_or_default().contains("at handleCall"));
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
    assert_eq!(s.call(r#"{"x":1}"#).await.unwrap(), r#"{"x":9}"#);
    // A spinning script is stopped once its CPU budget is spent, a memory bomb at its
    // heap limit (below the instance's memory limit): both crash reports carry the JS
    // stack, because QuickJS stops the script (asking the host at its interrupt checks)
    // before wasmtime has to.
    match s.call(r#"{"spin":true}"#).await {
        Err(CallError::Crash(c)) => {
            assert_eq!(c.kind, CrashKind::CpuLimit);
            let stack = c.backtrace.unwrap_or_default();
            assert!(stack.contains("at handleCall (service:"), "{stack}");
        }
        other => panic!("expected a cpu_limit crash, got {other:?}"),
    }
    // After an `await` the spin runs in a job of QuickJS's queue, whose stopped
    // exception QuickJS drops: the same crash, without the JS stack.
    let mut s = runner(source).await.unwrap();
    match s.call(r#"{"later":true}"#).await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::CpuLimit),
        other => panic!("expected a cpu_limit crash, got {other:?}"),
    }
    let mut s = runner(source).await.unwrap();
    match s.call(r#"{"bomb":true}"#).await {
        Err(CallError::Crash(c)) => {
            assert_eq!(c.kind, CrashKind::MemoryLimit);
            let stack = c.backtrace.unwrap_or_default();
            assert!(stack.contains("at handleCall (service:"), "{stack}");
        }
        other => panic!("expected a memory_limit crash, got {other:?}"),
    }
    // A script that keeps its CPU budget's end from QuickJS (a catch-all around a
    // spin cannot catch the interrupt) is stopped all the same.
    let mut s =
        runner("export function handleCall(r) { for (;;) { try { for (;;) {} } catch (e) {} } }")
            .await
            .unwrap();
    match s.call("{}").await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::CpuLimit),
        other => panic!("expected a cpu_limit crash, got {other:?}"),
    }

    // Unbounded recursion overflows the component's stack (QuickJS keeps no stack limit
    // of its own on WASI): a crash of kind stack_overflow, with the runner's frames.
    let mut s = runner(source).await.unwrap();
    match s.call(r#"{"deep":true}"#).await {
        Err(CallError::Crash(c)) => {
            assert_eq!(c.kind, CrashKind::StackOverflow);
            let trace = c.backtrace.unwrap_or_default();
            assert!(trace.contains("JS_CallInternal"), "{trace}");
        }
        other => panic!("expected a stack_overflow crash, got {other:?}"),
    }

    // An exception in a cast has nobody to go back to: the instance crashes, and the
    // report carries the JavaScript stack.
    let mut s = runner(
        "export function handleCall(r) { return r; }\n\
         export function handleCast(m) { if (m.bad) throw new RangeError('cast ' + m.bad); }",
    )
    .await
    .unwrap();
    s.cast(r#"{"ok":1}"#).await.unwrap();
    match s.cast(r#"{"bad":"input"}"#).await {
        Err(CallError::Crash(c)) => {
            assert_eq!(c.kind, CrashKind::Trap);
            assert!(c.message.contains("cast input"), "{}", c.message);
            let stack = c.backtrace.unwrap_or_default();
            assert!(stack.contains("at handleCast (service:2:"), "{stack}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }

    // A syntax error is refused at compile, naming line and column.
    let Err(e) = runner("export function handleCall(r) { return r; ").await else {
        panic!("a syntax error was taken");
    };
    assert!(
        e.contains("JsSyntax") && e.contains("line: 1") && e.contains("column: 43"),
        "{e}"
    );
}

#[tokio::test]
async fn the_runner_is_not_a_service_and_its_interfaces_are_not_for_services() {
    // Deployed as a component, the runner is refused: it imports `js-host`, which only
    // the runner's own instances are given.
    let code: Arc<[u8]> = solo_guests::JS_RUNNER.into();
    match sandbox().compile(Format::Wasm, code).await {
        Err(CompileError::ForbiddenImport { name }) => assert!(name.contains("js-host"), "{name}"),
        other => panic!("expected a forbidden import, got {other:?}"),
    }
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

    // The rest of the API, with the contract's names and shapes.
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

#[tokio::test]
async fn json_nested_too_deep_is_refused_without_harm() {
    // QuickJS has no stack limit on WASI: nesting this deep would overflow the
    // component's stack inside JSON.parse. The runner refuses it as not JSON.
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let host = MemoryHost::new();
    let mut echo = runner_on(
        "export function handleCall(r) { return r; }\n\
         export function handleCast(m) { solo.log('cast taken'); }",
        &host,
    )
    .await
    .unwrap();
    assert_eq!(echo.call(&deep(1000)).await.unwrap(), deep(1000));
    match echo.call(&deep(100_000)).await {
        Err(CallError::BadRequest(m)) => assert!(m.contains("deeper than 1000"), "{m}"),
        other => panic!("expected a bad request, got {other:?}"),
    }
    // Brackets inside strings do not count.
    let quoted = serde_json::Value::String("[".repeat(5000)).to_string();
    assert_eq!(echo.call(&quoted).await.unwrap(), quoted);
    // A cast that deep is dropped (and logged), and the instance lives on.
    echo.cast(&deep(100_000)).await.unwrap();
    assert_eq!(echo.call("[1]").await.unwrap(), "[1]");
    assert!(
        host.logs()
            .iter()
            .any(|(_, m)| m.contains("a cast was dropped")),
        "{:?}",
        host.logs()
    );

    // A reply that deep, from a service this one calls, is an error the script sees.
    host.on_call(move |_, _| Ok(deep(100_000)));
    let mut caller = runner_on(
        "export async function handleCall(r) {\n\
           try { await solo.call('other', {}); return 'taken'; } catch (e) { return e.message; }\n\
         }",
        &host,
    )
    .await
    .unwrap();
    let said = caller.call("{}").await.unwrap();
    assert!(said.contains("nested deeper than 1000"), "{said}");
}

#[tokio::test]
async fn the_runners_reports_are_checked_and_bounded() {
    // A spin inside a top-level `await` is stopped like any other: the module does not
    // load, for its CPU budget.
    let e = runner(
        "await (async () => { await null; for (;;) {} })();\n\
         export function handleCall(r) { return r; }",
    )
    .await
    .err()
    .expect("the module loaded");
    assert!(e.contains("JsLoad") && e.contains("cpu_limit"), "{e}");

    // A script that throws what looks like QuickJS's out-of-memory error, far from its
    // memory limit, has crashed, but not at its memory limit.
    let mut s = runner(
        "export function handleCall(r) {\n\
           throw Object.assign(new Error('out of memory'), { name: 'InternalError' });\n\
         }",
    )
    .await
    .unwrap();
    match s.call("{}").await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::Trap, "{c:?}"),
        other => panic!("expected a crash, got {other:?}"),
    }

    // A crash report is cut to a bounded size, whatever the script wrote into it.
    let mut s = runner(
        "export function handleCall(r) { return r; }\n\
         export function handleCast(m) { throw new Error('x'.repeat(1 << 20)); }",
    )
    .await
    .unwrap();
    match s.cast("{}").await {
        Err(CallError::Crash(c)) => {
            assert!(c.message.len() <= (16 << 10) + 8, "{}", c.message.len());
            assert!(c.message.ends_with('…'));
        }
        other => panic!("expected a crash, got {other:?}"),
    }
}
