//! Sandbox scenario: compile, instantiate, call and idle memory for wasm and JS, each
//! beside raw wasmtime / native rquickjs doing the same work without Solo's layer (for
//! JS, without the wasm sandbox: native QuickJS is kept here only, as the baseline); a
//! JS deploy and a compute-bound JS call against native; and the cost of epoch
//! interruption versus fuel on a compute-bound guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{CpuLimiter, Format, Instance, Limits, Sandbox, SandboxConfig};
use wasmtime::component::{Component, Linker};

use crate::report;
use crate::stats::{Samples, r2};

pub(crate) fn limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        cpu_per_message: Duration::from_secs(10),
        max_reply_bytes: 4 << 20,
        ..Limits::default()
    }
}

/// How many memory mappings this process has (bounded by `vm.max_map_count`).
fn maps() -> u64 {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64)
}

/// Resident memory of this process in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Memory only this process holds (`Private_Clean` + `Private_Dirty` of
/// `/proc/self/smaps_rollup`), in bytes: unlike the RSS, it does not count a shared
/// page once per mapping (every instance of a component maps its copy-on-write memory
/// image, whose unwritten pages all instances share).
pub fn private() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// The echo component with a custom section appended, so its hash is new.
fn unique_component(base: &[u8], n: u64) -> Vec<u8> {
    let name = b"solo-bench";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    let mut out = base.to_vec();
    out.push(0); // custom section
    out.push(u8::try_from(size).unwrap_or(0));
    out.push(u8::try_from(name.len()).unwrap_or(0));
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn ratio(solo: f64, base: f64) -> f64 {
    r2(solo / base)
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        wasm(secs).await?;
        js(secs).await?;
        js_compute().await?;
        cpu_limiters().await?;
        idle_memory().await
    })
}

fn raw_engine(pooling: bool) -> anyhow::Result<wasmtime::Engine> {
    let mut c = wasmtime::Config::new();
    c.wasm_component_model(true);
    if pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(11_000)
            .total_core_instances(88_000)
            .max_core_instances_per_component(16)
            .total_memories(22_000)
            .total_tables(88_000)
            .max_tables_per_component(16)
            .total_stacks(11_000)
            .max_memory_size(256 << 20);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(256 << 20)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 << 10)
            .memory_init_cow(true);
    }
    Ok(wasmtime::Engine::new(&c)?)
}

async fn wasm(secs: Duration) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 2000,
        ..SandboxConfig::default()
    })?;
    let echo = solo_guests::wasm("echo");
    let raw = raw_engine(true)?;

    // Compile: a new hash every time, so the cache never answers.
    let (mut solo_c, mut raw_c) = (Samples::default(), Samples::default());
    for n in 0..15u64 {
        let code = unique_component(&echo, n);
        let t = Instant::now();
        sandbox.compile(Format::Wasm, code.clone().into()).await?;
        solo_c.push(t.elapsed());
        let t = Instant::now();
        Component::new(&raw, &code)?;
        raw_c.push(t.elapsed());
    }
    let (s, b) = (solo_c.quantile_us(0.5), raw_c.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.compile", "format": "wasm", "code_bytes": echo.len(),
        "p50_us": r2(s),
        "baseline": { "name": "raw wasmtime Component::new", "p50_us": r2(b) },
        "ratio": ratio(s, b),
    }));

    // Instantiate a cached artifact.
    let artifact = sandbox.compile(Format::Wasm, echo.clone().into()).await?;
    let host = Arc::new(MemoryHost::new());
    let component = Component::new(&raw, &echo)?;
    let mut linker: Linker<()> = Linker::new(&raw);
    linker.define_unknown_imports_as_traps(&component)?;
    let pre = linker.instantiate_pre(&component)?;
    let (mut solo_i, mut raw_i) = (Samples::default(), Samples::default());
    let deadline = Instant::now() + secs;
    while Instant::now() < deadline {
        let t = Instant::now();
        let inst = sandbox
            .instantiate(&artifact, limits(), host.clone())
            .await?;
        solo_i.push(t.elapsed());
        drop(inst);
        let t = Instant::now();
        let mut store = wasmtime::Store::new(&raw, ());
        pre.instantiate_async(&mut store).await?;
        raw_i.push(t.elapsed());
        drop(store);
    }
    let (s, b) = (solo_i.quantile_us(0.5), raw_i.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.instantiate", "format": "wasm",
        "p50_us": r2(s), "p99_us": r2(solo_i.quantile_us(0.99)),
        "baseline": { "name": "raw wasmtime InstancePre::instantiate_async, pooled", "p50_us": r2(b) },
        "ratio": ratio(s, b), "target_p50_us": 50,
    }));

    // Call round trip into echo.
    let mut inst = sandbox
        .instantiate(&artifact, limits(), host.clone())
        .await?;
    inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut store = wasmtime::Store::new(&raw, ());
    let instance = pre.instantiate_async(&mut store).await?;
    let iface = component
        .get_export_index(None, "solo:service/handler@0.1.0")
        .ok_or_else(|| anyhow::anyhow!("no handler export"))?;
    let func_idx = component
        .get_export_index(Some(&iface), "handle-call")
        .ok_or_else(|| anyhow::anyhow!("no handle-call export"))?;
    let func =
        instance.get_typed_func::<(&str,), (Result<String, String>,)>(&mut store, &func_idx)?;
    let request = r#"{"op":"echo","payload":"sixty-four bytes of request, more or less...."}"#;
    let (solo_rate, mut solo_lat) = call_loop(secs, inst.as_mut(), request).await?;
    let mut raw_lat = Samples::default();
    let t0 = Instant::now();
    while t0.elapsed() < secs {
        let t = Instant::now();
        let (reply,) = func.call_async(&mut store, (request,)).await?;
        reply.map_err(|e| anyhow::anyhow!(e))?;
        raw_lat.push(t.elapsed());
    }
    #[allow(clippy::cast_precision_loss)]
    let raw_rate = raw_lat.len() as f64 / t0.elapsed().as_secs_f64();
    let (s, b) = (solo_lat.quantile_us(0.5), raw_lat.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.call", "format": "wasm",
        "p50_us": r2(s), "p99_us": r2(solo_lat.quantile_us(0.99)), "calls_per_sec": solo_rate.round(),
        "baseline": { "name": "raw wasmtime typed call of handle-call", "p50_us": r2(b), "calls_per_sec": raw_rate.round() },
        "ratio": ratio(s, b),
    }));
    Ok(())
}

/// Calls `inst` with `request` for `secs`; returns calls/s and latencies.
async fn call_loop(
    secs: Duration,
    inst: &mut dyn Instance,
    request: &str,
) -> anyhow::Result<(f64, Samples)> {
    let mut lat = Samples::default();
    let t0 = Instant::now();
    while t0.elapsed() < secs {
        let t = Instant::now();
        inst.call(request)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lat.push(t.elapsed());
    }
    #[allow(clippy::cast_precision_loss)]
    Ok((lat.len() as f64 / t0.elapsed().as_secs_f64(), lat))
}

async fn js(secs: Duration) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 10,
        ..SandboxConfig::default()
    })?;
    let echo = solo_guests::js("echo");

    // The runner: its size, and its first compile (with the first module's check).
    let t = Instant::now();
    sandbox
        .compile(
            Format::Js,
            format!("{echo}\n// first\n").into_bytes().into(),
        )
        .await?;
    report(&json!({
        "scenario": "sandbox.js_runner",
        "component_bytes": solo_guests::JS_RUNNER.len(),
        "first_compile_ms": r2(t.elapsed().as_secs_f64() * 1000.0),
    }));

    // Deploy with the runner compiled: check the module, instantiate, load, init.
    let (mut solo_d, mut raw_d) = (Samples::default(), Samples::default());
    for n in 0..200u64 {
        let code = format!("{echo}\n// deploy {n}\n");
        let t = Instant::now();
        let artifact = sandbox
            .compile(Format::Js, code.clone().into_bytes().into())
            .await?;
        let mut inst = sandbox
            .instantiate(&artifact, limits(), Arc::new(MemoryHost::new()))
            .await?;
        inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        solo_d.push(t.elapsed());
        drop(inst);
        let t = Instant::now();
        let rt = rquickjs::Runtime::new()?;
        let ctx = rquickjs::Context::full(&rt)?;
        ctx.with(|ctx| -> rquickjs::Result<()> {
            let (_m, p) = rquickjs::Module::declare(ctx, "m", code)?.eval()?;
            p.finish::<()>()
        })?;
        raw_d.push(t.elapsed());
    }
    let (s, b) = (solo_d.quantile_us(0.5), raw_d.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.deploy", "format": "js",
        "p50_us": r2(s), "p99_us": r2(solo_d.quantile_us(0.99)),
        "baseline": { "name": "native rquickjs: runtime, context, module declared and evaluated", "p50_us": r2(b) },
        "ratio": ratio(s, b),
        "target_p50_us": 2000,
    }));

    let (mut solo_c, mut raw_c) = (Samples::default(), Samples::default());
    for n in 0..50u64 {
        let code = format!("{echo}\n// {n}\n");
        let t = Instant::now();
        sandbox
            .compile(Format::Js, code.clone().into_bytes().into())
            .await?;
        solo_c.push(t.elapsed());
        let t = Instant::now();
        let rt = rquickjs::Runtime::new()?;
        let ctx = rquickjs::Context::full(&rt)?;
        ctx.with(|ctx| rquickjs::Module::declare(ctx, "m", code).map(|_| ()))?;
        raw_c.push(t.elapsed());
    }
    let (s, b) = (solo_c.quantile_us(0.5), raw_c.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.compile", "format": "js",
        "p50_us": r2(s),
        "baseline": { "name": "raw rquickjs runtime + context + Module::declare", "p50_us": r2(b) },
        "ratio": ratio(s, b),
    }));

    let artifact = sandbox
        .compile(Format::Js, echo.clone().into_bytes().into())
        .await?;
    let host = Arc::new(MemoryHost::new());
    let (mut solo_i, mut raw_i) = (Samples::default(), Samples::default());
    let deadline = Instant::now() + secs;
    while Instant::now() < deadline {
        let t = Instant::now();
        let inst = sandbox
            .instantiate(&artifact, limits(), host.clone())
            .await?;
        solo_i.push(t.elapsed());
        drop(inst);
        let t = Instant::now();
        let rt = rquickjs::AsyncRuntime::new()?;
        let ctx = rquickjs::AsyncContext::full(&rt).await?;
        raw_i.push(t.elapsed());
        drop((ctx, rt));
    }
    let (s, b) = (solo_i.quantile_us(0.5), raw_i.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.instantiate", "format": "js",
        "p50_us": r2(s), "p99_us": r2(solo_i.quantile_us(0.99)),
        "baseline": { "name": "raw rquickjs AsyncRuntime + AsyncContext::full", "p50_us": r2(b) },
        "ratio": ratio(s, b),
    }));

    let mut inst = sandbox
        .instantiate(&artifact, limits(), host.clone())
        .await?;
    inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = r#"{"op":"echo","payload":"sixty-four bytes of request, more or less...."}"#;
    let (solo_rate, mut solo_lat) = call_loop(secs, inst.as_mut(), request).await?;
    // Raw: the same module in a plain context; parse, call, stringify.
    let rt = rquickjs::Runtime::new()?;
    let ctx = rquickjs::Context::full(&rt)?;
    let mut raw_lat = Samples::default();
    let t0 = Instant::now();
    ctx.with(|ctx| -> anyhow::Result<()> {
        let (m, p) = rquickjs::Module::declare(ctx.clone(), "m", echo.as_str())?.eval()?;
        p.finish::<()>()?;
        let f: rquickjs::Function<'_> = m.get("handleCall")?;
        while t0.elapsed() < secs {
            let t = Instant::now();
            let v = ctx.json_parse(request)?;
            let out: rquickjs::Value<'_> = f.call((v,))?;
            let _ = ctx.json_stringify(out)?;
            raw_lat.push(t.elapsed());
        }
        Ok(())
    })?;
    #[allow(clippy::cast_precision_loss)]
    let raw_rate = raw_lat.len() as f64 / t0.elapsed().as_secs_f64();
    let (s, b) = (solo_lat.quantile_us(0.5), raw_lat.quantile_us(0.5));
    report(&json!({
        "scenario": "sandbox.call", "format": "js",
        "p50_us": r2(s), "p99_us": r2(solo_lat.quantile_us(0.99)), "calls_per_sec": solo_rate.round(),
        "baseline": { "name": "raw rquickjs: JSON.parse, call, JSON.stringify", "p50_us": r2(b), "calls_per_sec": raw_rate.round() },
        "ratio": ratio(s, b),
    }));
    Ok(())
}

/// A compute-bound JavaScript call: integer arithmetic, small objects, strings.
const JS_WORK: &str = r#"
export function handleCall(r) {
  let h = 0;
  const kept = [];
  for (let i = 0; i < r.n; i++) {
    h = (h * 31 + i) | 0;
    if (i % 64 === 0) kept.push({ i, s: "k" + i });
  }
  return { h, kept: kept.length };
}
"#;

/// A compute-bound JavaScript call in the runner, beside native QuickJS.
async fn js_compute() -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 10,
        ..SandboxConfig::default()
    })?;
    let request = r#"{"n":2000000}"#;
    let artifact = sandbox
        .compile(Format::Js, JS_WORK.as_bytes().into())
        .await?;
    let mut inst = sandbox
        .instantiate(&artifact, limits(), Arc::new(MemoryHost::new()))
        .await?;
    inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut solo, mut raw) = (Samples::default(), Samples::default());
    let rt = rquickjs::Runtime::new()?;
    let ctx = rquickjs::Context::full(&rt)?;
    for _ in 0..15 {
        let t = Instant::now();
        let reply = inst
            .call(request)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        solo.push(t.elapsed());
        let t = Instant::now();
        let native = ctx.with(|ctx| -> rquickjs::Result<String> {
            let (m, p) = rquickjs::Module::declare(ctx.clone(), "w", JS_WORK)?.eval()?;
            p.finish::<()>()?;
            let f: rquickjs::Function<'_> = m.get("handleCall")?;
            let out: rquickjs::Value<'_> = f.call((ctx.json_parse(request)?,))?;
            Ok(ctx
                .json_stringify(out)?
                .map(|s| s.to_string())
                .transpose()?
                .unwrap_or_default())
        })?;
        raw.push(t.elapsed());
        anyhow::ensure!(reply == native, "runner {reply} != native {native}");
    }
    let (s, b) = (
        solo.quantile_us(0.5) / 1000.0,
        raw.quantile_us(0.5) / 1000.0,
    );
    report(&json!({
        "scenario": "sandbox.js_compute", "work": "2M iterations: integer arithmetic, 31k small objects and strings",
        "p50_ms": r2(s),
        "baseline": { "name": "native rquickjs, same module and call", "p50_ms": r2(b) },
        "ratio": ratio(s, b),
        "target_ratio": 3,
    }));
    Ok(())
}

/// Epoch interruption versus fuel on a compute-bound call.
async fn cpu_limiters() -> anyhow::Result<()> {
    let code: Arc<[u8]> = solo_guests::wasm("spinner").into();
    let mut figures = Vec::new();
    for cpu in [CpuLimiter::Epoch, CpuLimiter::Fuel] {
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 10,
            cpu,
            ..SandboxConfig::default()
        })?;
        let artifact = sandbox.compile(Format::Wasm, code.clone()).await?;
        let mut inst = sandbox
            .instantiate(&artifact, limits(), Arc::new(MemoryHost::new()))
            .await?;
        let mut lat = Samples::default();
        for _ in 0..15 {
            let t = Instant::now();
            inst.call(r#"{"mode":"work","n":20000000}"#)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            lat.push(t.elapsed());
        }
        figures.push(lat.quantile_us(0.5) / 1000.0);
    }
    report(&json!({
        "scenario": "sandbox.cpu_limiter", "work": "20M iterations in the spinner guest",
        "epoch_p50_ms": r2(figures[0]),
        "baseline": { "name": "fuel metering", "p50_ms": r2(figures[1]) },
        "ratio": ratio(figures[0], figures[1]),
        "chosen": "epoch",
    }));
    Ok(())
}

/// RSS growth per idle instance, for 10,000 instances of echo, each measured in a fresh
/// process so that one measurement's freed memory does not hide the next one's growth.
async fn idle_memory() -> anyhow::Result<()> {
    let per = |v: &serde_json::Value| v["bytes_per_instance"].as_f64().unwrap_or(f64::NAN);
    // wasm: Solo's instance after init, beside raw wasmtime after the same first call;
    // and both before any call, which isolates the sandbox layer's own cost.
    let solo = probe_in_child("solo-wasm")?;
    let solo_bare = probe_in_child("solo-wasm-noinit")?;
    let raw_called = probe_in_child("raw-wasm-call")?;
    let raw_bare = probe_in_child("raw-wasm")?;
    report(&json!({
        "scenario": "sandbox.idle_memory", "format": "wasm", "instances": IDLE_N,
        "bytes_per_instance": solo["bytes_per_instance"],
        "private_bytes_per_instance": solo["private_bytes_per_instance"],
        "state": "instantiated and init'd",
        "bytes_per_instance_instantiated_only": solo_bare["bytes_per_instance"],
        "memory_mappings_per_instance": solo["maps"],
        "baseline": {
            "name": "raw wasmtime, same component, pooled, after the same first call",
            "bytes_per_instance": raw_called["bytes_per_instance"],
            "instantiated_only": raw_bare["bytes_per_instance"],
        },
        "ratio": ratio(per(&solo), per(&raw_called)),
        "target_bytes": 16 * 1024,
    }));
    let solo = probe_in_child("solo-js")?;
    let raw = probe_in_child("raw-js")?;
    report(&json!({
        "scenario": "sandbox.idle_memory", "format": "js", "instances": IDLE_N,
        "bytes_per_instance": solo["bytes_per_instance"],
        "private_bytes_per_instance": solo["private_bytes_per_instance"],
        "state": "instantiated and init'd",
        "baseline": { "name": "raw rquickjs Runtime + Context::full", "bytes_per_instance": raw["bytes_per_instance"] },
        "ratio": ratio(per(&solo), per(&raw)),
        "ratio_private": ratio(solo["private_bytes_per_instance"].as_f64().unwrap_or(f64::NAN), per(&raw)),
        "target_bytes": 256 * 1024,
    }));
    Ok(())
}

const IDLE_N: usize = 10_000;

/// How long the idle probes' services idle before their actors park (shorter than the
/// default second so that they park while the deploys go on).
const PARK_MS: u64 = 20;

/// Runs `solo-bench idle-probe <which>` in a fresh process and returns its JSON.
pub(crate) fn probe_in_child(which: &str) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["idle-probe", which])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "idle probe {which} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Runs in a child process: creates `IDLE_N` instances and prints the RSS growth.
pub fn idle_probe(which: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = rt.block_on(async {
        match which {
            "solo-wasm" => solo_idle(Format::Wasm).await,
            "solo-js" => solo_idle(Format::Js).await,
            "solo-wasm-noinit" => solo_idle_noinit().await,
            "raw-wasm-call" => raw_wasm_call_idle().await,
            // The store's page cache as `solo server` has it by default, and nearly none.
            // Parked (no task) as they are by default once idle, and holding a task.
            "kernel-wasm" => crate::kernel::idle_probe(64 << 20, PARK_MS).await,
            "kernel-wasm-small-cache" => crate::kernel::idle_probe(1 << 20, PARK_MS).await,
            "kernel-wasm-unparked" => crate::kernel::idle_probe(64 << 20, 0).await,
            "kernel-wasm-hibernated" => crate::density::hibernated_probe().await,
            "kernel-wasm-parked-calls" => crate::density::parked_probe().await,
            "raw-wasm" => raw_wasm_idle().await,
            "raw-js" => raw_js_idle(),
            "js-breakdown" => crate::breakdown::js().await,
            "wasm-breakdown" => crate::breakdown::wasm().await,
            other => Err(anyhow::anyhow!("unknown idle probe {other}")),
        }
    })?;
    report(&figures);
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
async fn solo_idle(format: Format) -> anyhow::Result<serde_json::Value> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 10_100,
        ..SandboxConfig::default()
    })?;
    let host = Arc::new(MemoryHost::new());
    let code: Arc<[u8]> = match format {
        Format::Wasm => solo_guests::wasm("echo").into(),
        Format::Js => solo_guests::js("echo").into_bytes().into(),
    };
    let artifact = sandbox.compile(format, code).await?;
    drop(
        sandbox
            .instantiate(&artifact, limits(), host.clone())
            .await?,
    );
    let (before, maps_before, private_before) = (rss(), maps(), private());
    let mut all: Vec<Box<dyn Instance>> = Vec::with_capacity(IDLE_N);
    for _ in 0..IDLE_N {
        let mut inst = sandbox
            .instantiate(&artifact, limits(), host.clone())
            .await?;
        inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        all.push(inst);
    }
    let idle = rss().saturating_sub(before) / IDLE_N as u64;
    let idle_private = private().saturating_sub(private_before) / IDLE_N as u64;
    let maps_per = maps().saturating_sub(maps_before) as f64 / IDLE_N as f64;
    // What a parked service's instance hands back: its fiber stack's pages.
    let released: usize = all.iter_mut().map(|i| i.release_idle_memory()).sum();
    let after_release = rss().saturating_sub(before) / IDLE_N as u64;
    for inst in &mut all {
        inst.call("1").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let after_call = rss().saturating_sub(before) / IDLE_N as u64;
    Ok(json!({
        "bytes_per_instance": idle, "private_bytes_per_instance": idle_private,
        "after_release": after_release, "released_per_instance": released / IDLE_N,
        "after_call": after_call, "maps": r2(maps_per),
    }))
}

async fn solo_idle_noinit() -> anyhow::Result<serde_json::Value> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 10_100,
        ..SandboxConfig::default()
    })?;
    let host = Arc::new(MemoryHost::new());
    let artifact = sandbox
        .compile(Format::Wasm, solo_guests::wasm("echo").into())
        .await?;
    drop(
        sandbox
            .instantiate(&artifact, limits(), host.clone())
            .await?,
    );
    let before = rss();
    let mut all: Vec<Box<dyn Instance>> = Vec::with_capacity(IDLE_N);
    for _ in 0..IDLE_N {
        all.push(
            sandbox
                .instantiate(&artifact, limits(), host.clone())
                .await?,
        );
    }
    Ok(json!({ "bytes_per_instance": rss().saturating_sub(before) / IDLE_N as u64 }))
}

async fn raw_wasm_call_idle() -> anyhow::Result<serde_json::Value> {
    let engine = raw_engine(true)?;
    let component = Component::new(&engine, solo_guests::wasm("echo"))?;
    let mut linker: Linker<()> = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let pre = linker.instantiate_pre(&component)?;
    let iface = component
        .get_export_index(None, "solo:service/handler@0.1.0")
        .ok_or_else(|| anyhow::anyhow!("no handler"))?;
    let idx = component
        .get_export_index(Some(&iface), "init")
        .ok_or_else(|| anyhow::anyhow!("no init"))?;
    let mut stores = Vec::with_capacity(IDLE_N);
    let before = rss();
    for _ in 0..IDLE_N {
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = pre.instantiate_async(&mut store).await?;
        let f = instance.get_typed_func::<(&str,), (Result<(), String>,)>(&mut store, &idx)?;
        let _ = f.call_async(&mut store, ("{}",)).await?;
        stores.push(store);
    }
    Ok(json!({ "bytes_per_instance": rss().saturating_sub(before) / IDLE_N as u64 }))
}

async fn raw_wasm_idle() -> anyhow::Result<serde_json::Value> {
    let engine = raw_engine(true)?;
    let component = Component::new(&engine, solo_guests::wasm("echo"))?;
    let mut linker: Linker<()> = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let pre = linker.instantiate_pre(&component)?;
    let mut stores = Vec::with_capacity(IDLE_N);
    let before = rss();
    for _ in 0..IDLE_N {
        let mut store = wasmtime::Store::new(&engine, ());
        pre.instantiate_async(&mut store).await?;
        stores.push(store);
    }
    Ok(json!({ "bytes_per_instance": rss().saturating_sub(before) / IDLE_N as u64 }))
}

fn raw_js_idle() -> anyhow::Result<serde_json::Value> {
    let mut all = Vec::with_capacity(IDLE_N);
    let before = rss();
    for _ in 0..IDLE_N {
        let rt = rquickjs::Runtime::new()?;
        let ctx = rquickjs::Context::full(&rt)?;
        all.push((ctx, rt));
    }
    Ok(json!({ "bytes_per_instance": rss().saturating_sub(before) / IDLE_N as u64 }))
}
