//! The sandbox's contract, in both formats: entry points, state, host API, limits, and
//! every bad input of issue 3 (each a typed error naming the cause; none affects the host
//! or another instance).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{
    Artifact, CallError, CompileError, CrashKind, Format, Instance, InstantiateError, Limits,
    Sandbox, SandboxConfig,
};

/// One sandbox per test process: compiled examples are shared through its cache.
fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            max_instances: 1000,
            ..SandboxConfig::default()
        })
        .unwrap()
    }))
}

fn code(format: Format, name: &str) -> Arc<[u8]> {
    match format {
        Format::Wasm => solo_guests::wasm(name).into(),
        Format::Js => solo_guests::js(name).into_bytes().into(),
    }
}

async fn compile(format: Format, name: &str) -> Artifact {
    sandbox().compile(format, code(format, name)).await.unwrap()
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        cpu_per_message: Duration::from_millis(300),
        max_reply_bytes: 1 << 20,
        ..Limits::default()
    }
}

async fn start(format: Format, name: &str, host: &MemoryHost) -> Box<dyn Instance> {
    start_with(format, name, host, limits()).await
}

async fn start_with(
    format: Format,
    name: &str,
    host: &MemoryHost,
    limits: Limits,
) -> Box<dyn Instance> {
    let artifact = compile(format, name).await;
    let mut inst = sandbox()
        .instantiate(&artifact, limits, Arc::new(host.clone()))
        .await
        .unwrap();
    inst.init("{}").await.unwrap();
    inst
}

fn crash_kind(r: Result<String, CallError>) -> CrashKind {
    match r {
        Err(CallError::Crash(c)) => c.kind,
        other => panic!("expected a crash, got {other:?}"),
    }
}

const BOTH: [Format; 2] = [Format::Wasm, Format::Js];

#[tokio::test]
async fn echo_in_both_formats() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut inst = start(f, "echo", &host).await;
        let reply = inst.call(r#"{"hello":"world","n":[1,2]}"#).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v, serde_json::json!({"hello":"world","n":[1,2]}), "{f}");
        let stats = inst.stats();
        assert_eq!(stats.messages, 1, "{f}");
        assert!(stats.memory_bytes > 0, "{f}");
        assert!(stats.cpu_time > Duration::ZERO, "{f}");
    }
}

#[tokio::test]
async fn counter_state_survives_snapshot_and_restore_across_formats() {
    for (from, to) in [
        (Format::Wasm, Format::Wasm),
        (Format::Js, Format::Js),
        (Format::Js, Format::Wasm),
        (Format::Wasm, Format::Js),
    ] {
        let host = MemoryHost::new();
        let mut old = start(from, "counter", &host).await;
        assert!(old.has_state());
        old.call(r#"{"op":"inc","by":40}"#).await.unwrap();
        old.cast(r#"{"op":"inc","by":2}"#).await.unwrap();
        let snap = old.snapshot().await.unwrap().unwrap();
        let mut new = start(to, "counter", &host).await;
        new.restore(&snap).await.unwrap();
        let reply = new.call(r#"{"op":"get"}"#).await.unwrap();
        assert_eq!(reply.replace(' ', ""), r#"{"value":42}"#, "{from} -> {to}");
    }
}

#[tokio::test]
async fn init_receives_the_config() {
    for f in BOTH {
        let host = MemoryHost::new();
        let artifact = compile(f, "counter").await;
        let mut inst = sandbox()
            .instantiate(&artifact, limits(), Arc::new(host.clone()))
            .await
            .unwrap();
        inst.init(r#"{"start":7}"#).await.unwrap();
        let reply = inst.call(r#"{"op":"inc"}"#).await.unwrap();
        assert_eq!(reply.replace(' ', ""), r#"{"value":8}"#, "{f}");
    }
}

#[tokio::test]
async fn guest_errors_are_not_crashes() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut inst = start(f, "crasher", &host).await;
        match inst.call(r#"{"mode":"error"}"#).await {
            Err(CallError::Guest(e)) => assert!(e.message.contains("asked to fail"), "{f}: {e}"),
            other => panic!("{f}: {other:?}"),
        }
        // Still healthy.
        assert_eq!(
            inst.call(r#"{"mode":"ok"}"#).await.unwrap(),
            "\"ok\"",
            "{f}"
        );
    }
}

#[tokio::test]
async fn kv_notes_uses_the_host_kv() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut inst = start(f, "kv-notes", &host).await;
        inst.call(r#"{"op":"put","key":"a/1","value":"one"}"#)
            .await
            .unwrap();
        inst.call(r#"{"op":"put","key":"a/2","value":"two"}"#)
            .await
            .unwrap();
        inst.call(r#"{"op":"put","key":"b/1","value":"three"}"#)
            .await
            .unwrap();
        let got = inst.call(r#"{"op":"get","key":"a/2"}"#).await.unwrap();
        assert_eq!(got.replace(' ', ""), r#"{"value":"two"}"#, "{f}");
        let list = inst.call(r#"{"op":"list","prefix":"a/"}"#).await.unwrap();
        assert_eq!(list.replace(' ', ""), r#"{"keys":["a/1","a/2"]}"#, "{f}");
        inst.call(r#"{"op":"delete","key":"a/1"}"#).await.unwrap();
        let missing = inst.call(r#"{"op":"get","key":"a/1"}"#).await.unwrap();
        assert_eq!(missing.replace(' ', ""), r#"{"value":null}"#, "{f}");
        assert_eq!(host.kv().len(), 2, "{f}");
    }
}

#[tokio::test]
async fn waiting_on_the_host_is_not_cpu_time() {
    // Each host call takes 200 ms; the CPU budget is 50 ms. Waiting must not count.
    for f in BOTH {
        let host = MemoryHost::new();
        host.set_delay(Duration::from_millis(200));
        let tight = Limits {
            cpu_per_message: Duration::from_millis(50),
            ..limits()
        };
        let mut inst = start_with(f, "kv-notes", &host, tight).await;
        let t = Instant::now();
        inst.call(r#"{"op":"put","key":"k","value":"v"}"#)
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(
            inst.stats().cpu_time < Duration::from_millis(50),
            "{f}: {:?}",
            inst.stats()
        );
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_deadline_and_poisons_only_its_instance() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut healthy = start(f, "echo", &host).await;
        let tight = Limits {
            cpu_per_message: Duration::from_millis(100),
            ..limits()
        };
        let mut spinner = start_with(f, "spinner", &host, tight).await;
        let t = Instant::now();
        let kind = crash_kind(spinner.call("{}").await);
        let took = t.elapsed();
        assert_eq!(kind, CrashKind::CpuLimit, "{f}");
        assert!(
            took >= Duration::from_millis(100),
            "{f}: stopped too early, {took:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "{f}: stopped too late, {took:?}"
        );
        // The instance is poisoned...
        assert_eq!(
            crash_kind(spinner.call(r#"{"mode":"ok"}"#).await),
            CrashKind::Poisoned,
            "{f}"
        );
        // ...and the host and other instances keep working.
        assert_eq!(healthy.call("1").await.unwrap(), "1", "{f}");
        let mut fresh = start_with(f, "spinner", &host, tight).await;
        assert_eq!(
            fresh.call(r#"{"mode":"ok"}"#).await.unwrap(),
            "\"ok\"",
            "{f}"
        );
    }
}

#[tokio::test]
async fn spinning_instances_do_not_starve_each_other() {
    // Two spinners on a current-thread runtime: the epoch yields let both reach their
    // own deadline rather than one running while the other waits.
    let host = MemoryHost::new();
    let tight = Limits {
        cpu_per_message: Duration::from_millis(100),
        ..limits()
    };
    let mut a = start_with(Format::Wasm, "spinner", &host, tight).await;
    let mut b = start_with(Format::Wasm, "spinner", &host, tight).await;
    let t = Instant::now();
    let (ra, rb) = tokio::join!(a.call("{}"), b.call("{}"));
    assert_eq!(crash_kind(ra), CrashKind::CpuLimit);
    assert_eq!(crash_kind(rb), CrashKind::CpuLimit);
    // Interleaved, both finish in about the sum of their budgets.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn unbounded_allocation_stops_at_the_memory_limit() {
    for f in BOTH {
        let host = MemoryHost::new();
        let small = Limits {
            memory_bytes: 16 << 20,
            cpu_per_message: Duration::from_secs(5),
            ..limits()
        };
        let mut hog = start_with(f, "hog", &host, small).await;
        assert_eq!(
            crash_kind(hog.call("{}").await),
            CrashKind::MemoryLimit,
            "{f}"
        );
        assert!(hog.stats().memory_bytes <= 16 << 20, "{f}");
    }
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    for (f, request) in [
        (Format::Wasm, r#"{"mode":"recurse"}"#),
        (Format::Js, r#"{"mode":"crash"}"#),
    ] {
        let host = MemoryHost::new();
        let mut inst = start(f, "crasher", &host).await;
        assert_eq!(
            crash_kind(inst.call(request).await),
            CrashKind::StackOverflow,
            "{f}"
        );
    }
}

#[tokio::test]
async fn a_panic_is_a_trap_with_a_backtrace_and_the_panic_message_in_the_log() {
    let host = MemoryHost::new();
    let mut inst = start(Format::Wasm, "crasher", &host).await;
    match inst.call(r#"{"mode":"panic"}"#).await {
        Err(CallError::Crash(c)) => {
            assert_eq!(c.kind, CrashKind::Trap);
            let bt = c.backtrace.unwrap_or_default();
            assert!(bt.contains("crasher"), "backtrace names the guest: {bt}");
        }
        other => panic!("{other:?}"),
    }
    let logs = host.logs();
    assert!(
        logs.iter().any(|(_, l)| l.contains("asked to panic")),
        "the panic message reaches the log: {logs:?}"
    );
}

#[tokio::test]
async fn an_exception_in_a_cast_crashes_the_instance() {
    for (f, msg) in [
        (Format::Wasm, r#"{"mode":"panic"}"#),
        (Format::Js, r#"{"mode":"crash"}"#),
    ] {
        let host = MemoryHost::new();
        let mut inst = start(f, "crasher", &host).await;
        match inst.cast(msg).await {
            Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::Trap, "{f}"),
            other => panic!("{f}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_reply_that_is_not_utf8_is_an_invalid_reply() {
    let host = MemoryHost::new();
    let mut inst = start(Format::Wasm, "crasher", &host).await;
    assert_eq!(
        crash_kind(inst.call(r#"{"mode":"bad-utf8"}"#).await),
        CrashKind::InvalidReply
    );
}

#[tokio::test]
async fn an_oversized_reply_is_refused_and_the_instance_lives_on() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut inst = start(f, "crasher", &host).await;
        match inst.call(r#"{"mode":"big","size":2000000}"#).await {
            Err(CallError::ReplyTooLarge { size, limit }) => {
                assert!(size > limit, "{f}");
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("{f}: {other:?}"),
        }
        assert_eq!(
            inst.call(r#"{"mode":"ok"}"#).await.unwrap(),
            "\"ok\"",
            "{f}"
        );
    }
}

#[tokio::test]
async fn init_failures_are_reported() {
    for f in BOTH {
        let host = MemoryHost::new();
        let artifact = compile(f, "crasher").await;
        let mut inst = sandbox()
            .instantiate(&artifact, limits(), Arc::new(host.clone()))
            .await
            .unwrap();
        match inst.init(r#"{"fail_init":true}"#).await {
            Err(CallError::Guest(e)) => {
                assert!(e.message.contains("asked to fail in init"), "{f}: {e}")
            }
            other => panic!("{f}: {other:?}"),
        }
    }
    let host = MemoryHost::new();
    let artifact = compile(Format::Wasm, "crasher").await;
    let mut inst = sandbox()
        .instantiate(&artifact, limits(), Arc::new(host.clone()))
        .await
        .unwrap();
    match inst.init(r#"{"panic_init":true}"#).await {
        Err(CallError::Crash(c)) => assert_eq!(c.kind, CrashKind::Trap),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn instances_share_no_memory_even_when_a_pool_slot_is_reused() {
    for f in BOTH {
        let host = MemoryHost::new();
        let mut a = start(f, "counter", &host).await;
        let mut b = start(f, "counter", &host).await;
        a.call(r#"{"op":"inc","by":5}"#).await.unwrap();
        assert_eq!(
            b.call(r#"{"op":"get"}"#).await.unwrap().replace(' ', ""),
            r#"{"value":0}"#
        );
        drop(a);
        // New instances may take the freed slot; they start from the initial state.
        for _ in 0..3 {
            let mut c = start(f, "counter", &host).await;
            assert_eq!(
                c.call(r#"{"op":"get"}"#).await.unwrap().replace(' ', ""),
                r#"{"value":0}"#,
                "{f}"
            );
        }
    }
}

#[tokio::test]
async fn host_api_log_emit_secret_and_call() {
    let host = MemoryHost::new();
    host.set_secret("api_key", b"s3cret");
    host.on_call(|target, request| Ok(format!("{{\"to\":\"{target}\",\"got\":{request}}}")));
    let js = r#"
        export async function handleCall(req) {
            solo.log("info", "hello from js");
            solo.log("just a message");
            solo.emit("thing_happened", { n: 1 });
            const s = await solo.secret("api_key");
            const reply = await solo.call("other", { x: 1 }, { timeoutMs: 1000 });
            solo.cast("other", { y: 2 });
            let missing;
            try { await solo.secret("nope"); } catch (e) { missing = e.code; }
            return { secret: s, reply, missing, now: solo.now() > 1.6e12 };
        }
    "#;
    let artifact = sandbox()
        .compile(Format::Js, js.as_bytes().into())
        .await
        .unwrap();
    let mut inst = sandbox()
        .instantiate(&artifact, limits(), Arc::new(host.clone()))
        .await
        .unwrap();
    inst.init("{}").await.unwrap();
    let reply: serde_json::Value = serde_json::from_str(&inst.call("{}").await.unwrap()).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({
            "secret": "s3cret",
            "reply": {"to": "other", "got": {"x": 1}},
            "missing": "not_found",
            "now": true,
        })
    );
    let logs: Vec<String> = host.logs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(logs, ["hello from js", "just a message"]);
    assert_eq!(
        host.events(),
        vec![(
            "custom.thing_happened".to_string(),
            r#"{"n":1}"#.to_string()
        )]
    );
    assert_eq!(
        host.casts(),
        vec![("other".to_string(), r#"{"y":2}"#.to_string())]
    );
}

#[tokio::test]
async fn the_host_api_is_unavailable_while_a_module_loads() {
    let js = "solo.log('at top level');\nexport function handleCall(r) { return r; }";
    let err = sandbox()
        .compile(Format::Js, js.as_bytes().into())
        .await
        .unwrap_err();
    match err {
        CompileError::JsLoad(m) => {
            assert!(m.contains("cannot be used while the module loads"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn js_has_no_ambient_authority() {
    // `fetch` is there, but goes through the host, which refuses what its egress rules
    // do not allow (this host allows nothing).
    let js = r#"
        export async function handleCall() {
            const present = ["require", "process", "setTimeout", "std", "os", "Deno", "XMLHttpRequest"]
                .filter((n) => typeof globalThis[n] !== "undefined");
            try {
                await fetch("http://127.0.0.1:22/");
                present.push("fetch reached the network");
            } catch (e) {
                if (!(e instanceof TypeError) || e.code !== "host_not_allowed") present.push(String(e));
            }
            return present;
        }
    "#;
    let artifact = sandbox()
        .compile(Format::Js, js.as_bytes().into())
        .await
        .unwrap();
    let mut inst = sandbox()
        .instantiate(&artifact, limits(), Arc::new(MemoryHost::new()))
        .await
        .unwrap();
    assert_eq!(inst.call("{}").await.unwrap(), "[]");
}

#[tokio::test]
async fn js_requests_must_be_json() {
    let host = MemoryHost::new();
    let mut inst = start(Format::Js, "echo", &host).await;
    match inst.call("not json").await {
        Err(CallError::BadRequest(m)) => assert!(m.contains("not JSON"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(inst.call("[1]").await.unwrap(), "[1]");
}

/// Compiles `code` and returns the error.
async fn refuse(format: Format, code: &[u8]) -> CompileError {
    sandbox().compile(format, code.into()).await.unwrap_err()
}

#[tokio::test]
async fn bad_code_is_refused_with_the_cause() {
    assert_eq!(refuse(Format::Wasm, b"").await, CompileError::Empty);
    assert_eq!(refuse(Format::Js, b"").await, CompileError::Empty);
    assert!(matches!(
        refuse(Format::Wasm, b"not wasm at all").await,
        CompileError::InvalidWasm(_)
    ));
    let mut truncated = solo_guests::wasm("echo");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        refuse(Format::Wasm, &truncated).await,
        CompileError::InvalidWasm(_)
    ));
    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    assert_eq!(refuse(Format::Wasm, &core).await, CompileError::CoreModule);
    let big = vec![0u8; 50 << 20];
    assert!(matches!(
        refuse(Format::Wasm, &big).await,
        CompileError::TooLarge { size, .. } if size == 50 << 20
    ));
    assert!(matches!(
        refuse(Format::Js, &big).await,
        CompileError::TooLarge { .. }
    ));
}

#[tokio::test]
async fn a_foreign_import_is_named() {
    let evil = wat::parse_str(
        r#"(component
            (import "evil:net/sockets" (instance (export "connect" (func))))
        )"#,
    )
    .unwrap();
    match refuse(Format::Wasm, &evil).await {
        CompileError::ForbiddenImport { name } => assert_eq!(name, "evil:net/sockets"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_component_without_the_handler_is_refused() {
    let empty = wat::parse_str("(component)").unwrap();
    match refuse(Format::Wasm, &empty).await {
        CompileError::MissingExport { name, .. } => {
            assert_eq!(name, "solo:service/handler@0.1.0");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn js_syntax_errors_have_a_line_and_column() {
    let js = "export function handleCall(r) {\n  return r +;\n}\n";
    match refuse(Format::Js, js.as_bytes()).await {
        CompileError::JsSyntax {
            line,
            column,
            message,
        } => {
            assert_eq!(line, 2, "{message}");
            assert!(column > 0, "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn js_without_handle_call_or_that_throws_while_loading_is_refused() {
    match refuse(Format::Js, b"export function handle(r) { return r; }").await {
        CompileError::JsMissingExport { name, .. } => assert_eq!(name, "handleCall"),
        other => panic!("{other:?}"),
    }
    match refuse(
        Format::Js,
        b"throw new Error('boom');\nexport function handleCall(){}",
    )
    .await
    {
        CompileError::JsLoad(m) => assert!(m.contains("boom"), "{m}"),
        other => panic!("{other:?}"),
    }
    match refuse(Format::Js, b"for(;;){}\nexport function handleCall(){}").await {
        CompileError::JsLoad(_) => {}
        other => panic!("{other:?}"),
    }
    match refuse(Format::Js, &[0xff, 0xfe, 0x00]).await {
        CompileError::JsLoad(m) => assert!(m.contains("UTF-8"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn js_that_throws_in_init_fails_init() {
    let host = MemoryHost::new();
    let artifact = compile(Format::Js, "crasher").await;
    let mut inst = sandbox()
        .instantiate(&artifact, limits(), Arc::new(host))
        .await
        .unwrap();
    match inst.init(r#"{"fail_init":true}"#).await {
        Err(CallError::Guest(e)) => assert!(e.message.contains("asked to fail in init"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn compiles_are_cached_by_code_hash() {
    let a = compile(Format::Wasm, "echo").await;
    let b = compile(Format::Wasm, "echo").await;
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.hash().to_hex(), {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(solo_guests::wasm("echo")))
    });
    assert!(sandbox().cached(&a.hash()).is_some());
    assert!(!a.has_state() || a.format() == Format::Wasm);
}

#[tokio::test]
async fn memory_above_the_sandbox_maximum_is_refused() {
    let artifact = compile(Format::Wasm, "echo").await;
    let huge = Limits {
        memory_bytes: 1 << 40,
        ..limits()
    };
    let err = sandbox()
        .instantiate(&artifact, huge, Arc::new(MemoryHost::new()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, InstantiateError::LimitTooHigh { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn compiled_components_are_reused_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        max_instances: 10,
        cache_dir: Some(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    let first = Sandbox::new(config.clone()).unwrap();
    first
        .compile(Format::Wasm, code(Format::Wasm, "echo"))
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    drop(first);
    // A fresh sandbox loads it; a corrupted file is discarded and recompiled.
    let second = Sandbox::new(config.clone()).unwrap();
    let a = second
        .compile(Format::Wasm, code(Format::Wasm, "echo"))
        .await
        .unwrap();
    let mut inst = second
        .instantiate(&a, limits(), Arc::new(MemoryHost::new()))
        .await
        .unwrap();
    assert_eq!(inst.call("5").await.unwrap(), "5");
    let path = files[0].as_ref().unwrap().path();
    std::fs::write(&path, b"garbage").unwrap();
    let third = Sandbox::new(config).unwrap();
    let b = third
        .compile(Format::Wasm, code(Format::Wasm, "echo"))
        .await
        .unwrap();
    let mut inst = third
        .instantiate(&b, limits(), Arc::new(MemoryHost::new()))
        .await
        .unwrap();
    assert_eq!(inst.call("6").await.unwrap(), "6");
}
