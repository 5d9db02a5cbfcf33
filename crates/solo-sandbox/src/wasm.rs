//! The WebAssembly backend: wasmtime, component model, async.
//!
//! * One [`Engine`] with a pooling allocator sized for `max_instances`, copy-on-write
//!   memory images, and memory reservations of `max_memory_bytes` (not the default
//!   4 GiB), so that 10,000 instances fit in the address space.
//! * One [`Linker`] with WASI 0.2 (an empty context: no preopens, env, args or network;
//!   stdout and stderr go to the service log) and `solo:service/host`.
//! * Per artifact, a `ServicePre` (an `InstancePre`), so instantiation does no linking.
//! * Per instance, one [`Store`] with a [`ResourceLimiter`] for memory and, for CPU,
//!   either an epoch deadline checked against the instance's [`Meter`] every tick
//!   (yielding to the executor each time; past 2 ms of CPU a message resumes only in
//!   the busy lane of [`crate::lane`]) or fuel.
//! * Compiled components are cached in memory (by [`crate::artifact::Cache`]) and,
//!   when a cache directory is configured, on disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline, WasmBacktrace,
};

use crate::artifact::{Artifact, Backend, CodeHash, Format};
use crate::lane::BusyLane;
use crate::meter::{Meter, Metered};
use crate::{
    CallError, CompileError, CpuLimiter, Crash, CrashKind, GuestError, HostApi, Instance,
    InstanceStats, InstantiateError, Limits, SandboxConfig, SandboxError,
};

mod bindings {
    wasmtime::component::bindgen!({
        world: "service",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

mod http;
mod runner;
mod stack;
mod state;

pub(crate) use runner::Runner;
use runner::{JsParts, runner_bindings};
pub(crate) use state::JsCrash;
use state::{MemoryLimitExceeded, State};

/// The export every service must have, and its functions.
const HANDLER: &str = "solo:service/handler@0.1.0";
const HANDLER_FUNCS: [&str; 3] = ["init", "handle-call", "handle-cast"];
/// The optional state export.
const STATE: &str = "solo:service/state@0.1.0";
/// Ticks a JavaScript script past its budget has to stop at its own interrupt check.
const JS_STOP_GRACE_TICKS: u32 = 20;
/// How often the epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Fuel granted per millisecond of CPU budget (about one wasm instruction per
/// nanosecond on this class of machine), and how often a fuelled guest yields.
const FUEL_PER_MS: u64 = 1_000_000;
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;
pub(crate) struct WasmEngine {
    engine: Engine,
    linker: Linker<State>,
    cpu: CpuLimiter,
    ticker: Option<Ticker>,
    lane: Arc<BusyLane>,
    /// The admin's maximum CPU budget of one message, in ms (see
    /// [`crate::Sandbox::set_max_cpu_per_message`]).
    max_cpu_ms: Arc<AtomicU64>,
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop.store(true, Ordering::Relaxed);
        }
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

pub(crate) struct WasmArtifact {
    pre: bindings::ServicePre<State>,
    state: Option<StateExports>,
}

#[derive(Clone, Copy)]
struct StateExports {
    snapshot: ComponentExportIndex,
    restore: ComponentExportIndex,
}

impl WasmEngine {
    pub(crate) fn new(config: &SandboxConfig) -> Result<Self, SandboxError> {
        let err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let n = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .max_core_instances_per_component(16)
            .total_memories(n.saturating_mul(2))
            .max_memories_per_component(4)
            .total_tables(n.saturating_mul(8))
            .max_tables_per_component(16)
            .total_stacks(n)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
        let mut c = Config::new();
        c.wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .memory_reservation(config.max_memory_bytes)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 << 10)
            .max_wasm_stack(1 << 20)
            .async_stack_size(stack::STACK_SIZE);
        match config.cpu {
            CpuLimiter::Epoch => c.epoch_interruption(true),
            CpuLimiter::Fuel => c.consume_fuel(true),
        };
        let engine = Engine::new(&c).map_err(err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
        bindings::Service::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(err)?;
        // Only the runner may import this: `compile` refuses any other component that does.
        runner_bindings::solo::service::js_host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(err)?;
        let ticker = match config.cpu {
            CpuLimiter::Epoch => {
                let stop = Arc::new(AtomicBool::new(false));
                let (engine, flag) = (engine.clone(), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name("solo-epoch".into())
                    .spawn(move || {
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(EPOCH_TICK);
                            engine.increment_epoch();
                        }
                    })
                    .map_err(|e| SandboxError::Engine(format!("start the epoch ticker: {e}")))?;
                Some(Ticker { stop })
            }
            CpuLimiter::Fuel => None,
        };
        Ok(Self {
            engine,
            linker,
            cpu: config.cpu,
            ticker,
            lane: BusyLane::new(config.busy_lanes),
            max_cpu_ms: Arc::new(AtomicU64::new(u64::MAX)),
        })
    }

    /// Sets the most CPU time one message may use, whatever its instance's limits say.
    pub(crate) fn set_max_cpu_per_message(&self, max: Duration) {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_cpu_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn compile(
        &self,
        hash: CodeHash,
        code: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<Artifact, CompileError> {
        check_header(code)?;
        let component = self.load_or_compile(hash, code, cache_dir)?;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let allowed = name.starts_with("solo:service/host@0.1.")
                || (name.starts_with("wasi:") && name.contains("@0.2."));
            if !allowed {
                return Err(CompileError::ForbiddenImport {
                    name: name.to_string(),
                });
            }
        }
        let needed = format!("{HANDLER} with {}", HANDLER_FUNCS.join(", "));
        let handler = ty
            .exports(&self.engine)
            .find(|(name, _)| *name == HANDLER)
            .map(|(_, item)| item.ty);
        match handler {
            Some(wasmtime::component::types::ComponentItem::ComponentInstance(inst)) => {
                let names: Vec<&str> = inst.exports(&self.engine).map(|(n, _)| n).collect();
                if let Some(missing) = HANDLER_FUNCS.iter().find(|f| !names.contains(f)) {
                    return Err(CompileError::MissingExport {
                        name: (*missing).to_string(),
                        needed,
                    });
                }
            }
            _ => {
                return Err(CompileError::MissingExport {
                    name: HANDLER.to_string(),
                    needed,
                });
            }
        }
        let (pre, state) = self.link(&component)?;
        Ok(Artifact::new(
            hash,
            Format::Wasm,
            code.len(),
            state.is_some(),
            Backend::Wasm(WasmArtifact { pre, state }),
        ))
    }

    /// Links a compiled component: its instance template and its state exports.
    fn link(
        &self,
        component: &Component,
    ) -> Result<(bindings::ServicePre<State>, Option<StateExports>), CompileError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .and_then(bindings::ServicePre::new)
            .map_err(|e| CompileError::Link(format!("{e:#}")))?;
        let state = component.get_export_index(None, STATE).and_then(|iface| {
            Some(StateExports {
                snapshot: component.get_export_index(Some(&iface), "snapshot")?,
                restore: component.get_export_index(Some(&iface), "restore")?,
            })
        });
        Ok((pre, state))
    }

    /// Names the engine settings compiled code depends on.
    fn compat_tag(&self) -> u64 {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut compat);
        std::hash::Hasher::finish(&compat)
    }

    /// A compiled component from the disk cache, or compiled now (and stored there).
    fn load_or_compile(
        &self,
        hash: CodeHash,
        code: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<Component, CompileError> {
        let cached = cache_dir.map(|dir| {
            let tag = self.compat_tag();
            dir.join(format!("{}-{tag:016x}.cwasm", hash.to_hex()))
        });
        // Read the file rather than map it: a mapped file changed underneath would fault.
        if let Some(path) = &cached
            && let Ok(bytes) = std::fs::read(path)
        {
            // SAFETY: the cache directory is Solo's own (see `SandboxConfig::cache_dir`):
            // its files were written by `serialize` below for this engine configuration
            // (the file name carries the engine's compatibility hash), and wasmtime
            // checks the header before trusting the rest.
            match unsafe { Component::deserialize(&self.engine, &bytes) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding a cached component");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let component = Component::new(&self.engine, code)
            .map_err(|e| CompileError::InvalidWasm(format!("{e:#}")))?;
        if let Some(path) = &cached
            && let Ok(bytes) = component.serialize()
            && let Err(e) = write_atomically(path, &bytes)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not cache a compiled component");
        }
        Ok(component)
    }

    pub(crate) async fn instantiate(
        &self,
        artifact: &WasmArtifact,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<Box<dyn Instance>, InstantiateError> {
        let instance = self
            .start(&artifact.pre, artifact.state, None, limits, host)
            .await?;
        Ok(Box::new(instance))
    }

    async fn start(
        &self,
        pre: &bindings::ServicePre<State>,
        state: Option<StateExports>,
        js: Option<JsParts>,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<WasmInstance, InstantiateError> {
        let meter = Meter::in_lane(Some(self.lane.seat(limits.share)));
        let mut data = State::new(host, limits.memory_bytes);
        data.js = js.as_ref().map(|j| state::JsHost {
            source: Arc::clone(&j.source),
            meter: Arc::clone(&meter),
        });
        // A script past its budget is given a few ticks to stop by itself (QuickJS asks
        // the host at its interrupt checks, and the runner reports the JS stack) before
        // the epoch stops it.
        let grace = if js.is_some() { JS_STOP_GRACE_TICKS } else { 0 };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        // Runs on the call's fiber: where its stack is, for `release_idle_memory`.
        store.call_hook(|mut cx, hook| {
            if matches!(hook, CallHook::CallingWasm) {
                cx.data_mut().stack.note();
            }
            Ok(())
        });
        match self.cpu {
            CpuLimiter::Epoch => {
                let m = Arc::clone(&meter);
                store.epoch_deadline_callback(move |mut cx| {
                    cx.data_mut().stack.note();
                    if !m.over_budget() || m.tick_over() <= grace {
                        Ok(UpdateDeadline::Yield(1))
                    } else {
                        Ok(UpdateDeadline::Interrupt)
                    }
                });
            }
            CpuLimiter::Fuel => {
                store
                    .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
                    .map_err(|e| InstantiateError::Internal(format!("{e:#}")))?;
            }
        }
        let mut instance = WasmInstance {
            store,
            instance: None,
            service: None,
            state,
            js_load: js.map(|j| j.load),
            limits,
            max_cpu_ms: Arc::clone(&self.max_cpu_ms),
            meter,
            cpu: self.cpu,
            messages: 0,
            poisoned: None,
        };
        instance
            .prepare()
            .map_err(|e| InstantiateError::Internal(e.to_string()))?;
        let fut = pre.instance_pre().instantiate_async(&mut instance.store);
        let result = Metered::new(Arc::clone(&instance.meter), fut).await;
        instance.store.data_mut().stack.settle();
        let result = result.and_then(|inst| {
            bindings::Service::new(&mut instance.store, &inst).map(|service| (inst, service))
        });
        match result {
            Ok((inst, service)) => {
                instance.instance = Some(inst);
                instance.service = Some(service);
                Ok(instance)
            }
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("pooling allocator") || text.contains("maximum") {
                    return Err(InstantiateError::Exhausted(text));
                }
                Err(InstantiateError::Crashed(instance.classify(e)))
            }
        }
    }
}

fn check_header(code: &[u8]) -> Result<(), CompileError> {
    if code.len() < 8 || &code[..4] != b"\0asm" {
        return Err(CompileError::InvalidWasm(
            "the code does not start with the WebAssembly magic bytes".into(),
        ));
    }
    match code[4..8] {
        [0x01, 0x00, 0x00, 0x00] => Err(CompileError::CoreModule),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => Err(CompileError::InvalidWasm(format!(
            "unknown WebAssembly version or layer {:02x?}",
            &code[4..8]
        ))),
    }
}

/// The function a backtrace shows calling itself over and over at the top, if any.
fn recursing_function(backtrace: &str) -> Option<String> {
    let frames: Vec<&str> = backtrace
        .lines()
        .filter_map(|l| l.split_once(" - ").map(|(_, f)| f.trim()))
        .take(10)
        .collect();
    let top = *frames.first()?;
    let repeats = frames.iter().filter(|f| **f == top).count();
    (frames.len() >= 8 && repeats >= 8).then(|| top.to_string())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(crate) struct WasmInstance {
    store: Store<State>,
    instance: Option<wasmtime::component::Instance>,
    service: Option<bindings::Service>,
    state: Option<StateExports>,
    /// The runner's `load`, for a JavaScript service.
    js_load: Option<ComponentExportIndex>,
    limits: Limits,
    max_cpu_ms: Arc<AtomicU64>,
    meter: Arc<Meter>,
    cpu: CpuLimiter,
    messages: u64,
    poisoned: Option<Crash>,
}

impl WasmInstance {
    /// The CPU budget of one message: the instance's, within the admin's maximum.
    fn budget(&self) -> Duration {
        let max = Duration::from_millis(self.max_cpu_ms.load(Ordering::Relaxed));
        self.limits.cpu_per_message.min(max)
    }

    /// Readies the store for one entry point call.
    fn prepare(&mut self) -> Result<(), CallError> {
        if let Some(c) = &self.poisoned {
            return Err(CallError::Crash(Crash {
                kind: CrashKind::Poisoned,
                message: format!("the instance crashed earlier ({c}) and cannot run again"),
                backtrace: None,
                observed: None,
            }));
        }
        let budget = self.budget();
        self.meter.begin(budget);
        self.store.data_mut().stack.begin();
        match self.cpu {
            CpuLimiter::Epoch => self.store.set_epoch_deadline(1),
            CpuLimiter::Fuel => {
                let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
                self.store
                    .set_fuel(ms.saturating_mul(FUEL_PER_MS))
                    .map_err(|e| CallError::crash(CrashKind::Internal, format!("{e:#}")))?;
            }
        }
        Ok(())
    }

    /// Turns a wasmtime error into a crash report and poisons the instance.
    fn classify(&mut self, e: wasmtime::Error) -> Crash {
        let backtrace = e
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| bt.to_string())
            .filter(|s| !s.trim().is_empty());
        let trap = e.downcast_ref::<Trap>().copied();
        let limit_ms = self.budget().as_millis();
        let mut observed = None;
        let js_crash = e.downcast_ref::<JsCrash>();
        let backtrace = match js_crash {
            Some(c) if !c.stack.is_empty() => Some(c.stack.clone()),
            _ => backtrace,
        };
        let (kind, message) = if self.meter.interrupted() {
            (
                CrashKind::Interrupted,
                "the instance was interrupted by its owner".to_string(),
            )
        } else if self.meter.tripped() || trap == Some(Trap::OutOfFuel) {
            observed = u64::try_from(self.meter.used().as_millis()).ok();
            (
                CrashKind::CpuLimit,
                format!("the message used more than its CPU budget of {limit_ms} ms"),
            )
        } else if let Some(c) = js_crash {
            // A script can throw what looks like QuickJS's out-of-memory error; only a
            // memory near its limit (QuickJS's heap limit is at least half of it) is one.
            let near_limit = self.store.data().limiter.current * 2 >= self.limits.memory_bytes;
            crate::js::crash_kind(c, &self.limits, near_limit)
        } else if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
            observed = u64::try_from(m.desired).ok();
            (CrashKind::MemoryLimit, m.to_string())
        } else if self.store.data().limiter.exceeded {
            (
                CrashKind::MemoryLimit,
                format!(
                    "the guest ran out of memory at its limit of {} bytes",
                    self.limits.memory_bytes
                ),
            )
        } else if trap == Some(Trap::StackOverflow) {
            (
                CrashKind::StackOverflow,
                "the guest's stack overflowed (unbounded recursion?)".to_string(),
            )
        } else if trap == Some(Trap::MemoryOutOfBounds)
            && let Some(f) = backtrace.as_deref().and_then(recursing_function)
        {
            // Languages like Rust keep a shadow stack in linear memory: when it
            // overflows, the guest writes below address 0, an out-of-bounds access.
            (
                CrashKind::StackOverflow,
                format!(
                    "the guest's stack overflowed: {f} calls itself without end (an \
                     out-of-bounds access below its stack)"
                ),
            )
        } else if let Some(t) = trap {
            (CrashKind::Trap, t.to_string())
        } else {
            let text = format!("{e:#}");
            if text.contains("utf-8") || text.contains("UTF-8") {
                (
                    CrashKind::InvalidReply,
                    format!("the guest's reply cannot be read: {text}"),
                )
            } else {
                (CrashKind::Trap, text)
            }
        };
        let crash = Crash {
            kind,
            message,
            backtrace,
            observed,
        };
        self.poisoned = Some(crash.clone());
        crash
    }

    /// After a call's future completed (its fiber finished): its result as ours.
    fn finish<T>(&mut self, r: wasmtime::Result<T>) -> Result<T, CallError> {
        self.store.data_mut().stack.settle();
        r.map_err(|e| CallError::Crash(self.classify(e)))
    }

    /// An error the guest returned: for a JavaScript service, the exception's message
    /// and stack (or a request that is not JSON).
    fn guest_error(&self, message: String) -> CallError {
        if self.js_load.is_some() {
            crate::js::guest_error(message)
        } else {
            CallError::Guest(GuestError::new(message))
        }
    }

    fn service(&self) -> Result<&bindings::Service, CallError> {
        self.service
            .as_ref()
            .ok_or_else(|| CallError::crash(CrashKind::Internal, "the instance never started"))
    }
}

impl Instance for WasmInstance {
    fn init<'a>(&'a mut self, config: &'a str) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            self.prepare()?;
            let handler = self.service()?.solo_service_handler().clone();
            let fut = handler.call_init(&mut self.store, config);
            let r = Metered::new(Arc::clone(&self.meter), fut).await;
            let r = self.finish(r)?;
            r.map_err(|m| self.guest_error(m))
        })
    }

    fn call<'a>(&'a mut self, request: &'a str) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            self.prepare()?;
            let handler = self.service()?.solo_service_handler().clone();
            let fut = handler.call_handle_call(&mut self.store, request);
            let r = Metered::new(Arc::clone(&self.meter), fut).await;
            self.messages += 1;
            let reply = self.finish(r)?;
            let reply = reply.map_err(|m| self.guest_error(m))?;
            if reply.len() > self.limits.max_reply_bytes {
                return Err(CallError::ReplyTooLarge {
                    size: reply.len(),
                    limit: self.limits.max_reply_bytes,
                });
            }
            Ok(reply)
        })
    }

    fn cast<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            self.prepare()?;
            let handler = self.service()?.solo_service_handler().clone();
            let fut = handler.call_handle_cast(&mut self.store, message);
            let r = Metered::new(Arc::clone(&self.meter), fut).await;
            self.messages += 1;
            self.finish(r)
        })
    }

    fn has_state(&self) -> bool {
        self.state.is_some()
    }

    fn snapshot(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CallError>> {
        Box::pin(async move {
            let Some(exports) = self.state else {
                return Ok(None);
            };
            self.prepare()?;
            let instance = self.instance.ok_or_else(|| {
                CallError::crash(CrashKind::Internal, "the instance never started")
            })?;
            let func = instance
                .get_typed_func::<(), (Option<Vec<u8>>,)>(&mut self.store, &exports.snapshot)
                .map_err(|e| CallError::crash(CrashKind::Internal, format!("{e:#}")))?;
            let fut = func.call_async(&mut self.store, ());
            let r = Metered::new(Arc::clone(&self.meter), fut).await;
            Ok(self.finish(r)?.0)
        })
    }

    fn restore<'a>(&'a mut self, state: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let Some(exports) = self.state else {
                return Err(CallError::Guest(GuestError::new(
                    "the service does not export restore",
                )));
            };
            self.prepare()?;
            let instance = self.instance.ok_or_else(|| {
                CallError::crash(CrashKind::Internal, "the instance never started")
            })?;
            let func = instance
                .get_typed_func::<(&[u8],), (Result<(), String>,)>(
                    &mut self.store,
                    &exports.restore,
                )
                .map_err(|e| CallError::crash(CrashKind::Internal, format!("{e:#}")))?;
            let fut = func.call_async(&mut self.store, (state,));
            let r = Metered::new(Arc::clone(&self.meter), fut).await;
            let r = self.finish(r)?.0;
            r.map_err(|m| self.guest_error(m))
        })
    }

    fn stats(&self) -> InstanceStats {
        InstanceStats {
            memory_bytes: self.store.data().limiter.current,
            cpu_time: self.meter.total(),
            messages: self.messages,
        }
    }

    fn release_idle_memory(&mut self) -> usize {
        self.store.data_mut().stack.release()
    }

    fn interrupt_handle(&self) -> crate::Interrupt {
        crate::Interrupt(Arc::clone(&self.meter))
    }
}
