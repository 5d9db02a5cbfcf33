//! Solo's sandbox: WebAssembly components under wasmtime, and JavaScript in the JS runner
//! (QuickJS compiled to a component, run by the same wasmtime), behind one [`Instance`]
//! trait, so the kernel never cares which one it runs.
//!
//! [`Sandbox::compile`] validates code and turns it into a reusable [`Artifact`] (cached
//! by the SHA-256 of the code); [`Sandbox::instantiate`] makes an isolated instance with
//! its [`Limits`] and a [`HostApi`] supplied by the caller.
//!
//! Architecture invariant: this is the only crate allowed `unsafe`, each use with a
//! `// SAFETY:` note. Guest code reaches the outside world only through [`HostApi`].
#![allow(unsafe_code)]

mod artifact;
mod error;
mod host;
mod js;
mod lane;
mod meter;
pub mod testing;
mod wasm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use artifact::{Artifact, CodeHash, Format};
pub use error::{
    CallError, CompileError, Crash, CrashKind, GuestError, InstantiateError, SandboxError,
};
pub use host::{
    GuestCaller, GuestIdentity, HostApi, HostError, HttpRequest, HttpResponse, HttpSlot, Level,
};
pub use meter::Interrupt;

/// How the per-message CPU deadline is enforced for WebAssembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimiter {
    /// Epoch interruption: a ticker thread advances the engine's epoch every
    /// millisecond; a running guest checks its CPU meter at each tick and yields to the
    /// executor. Cheap; the deadline is accurate to about one tick.
    Epoch,
    /// Fuel metering: every instruction costs fuel. Deterministic, but slows guest code.
    Fuel,
}

/// Memory mappings one instance slot may hold once it has been used: two from the start
/// (its fiber stack and guard page) and about 4.4 after use (its linear memory split
/// into accessible and reserved parts, the copy-on-write image, tables), rounded up.
pub const MAPPINGS_PER_SLOT: u64 = 7;
/// Memory mappings left to the rest of the process (threads, heap, files).
pub const MAPPINGS_RESERVED: u64 = 8_192;

/// The most instance slots a process can use under Linux's `vm.max_map_count` of
/// `limit` (beyond it, the kernel refuses new mappings and a guest meets `ENOMEM`):
/// `wanted`, or fewer (at least 64).
pub fn slots_within_map_count(wanted: u32, limit: u64) -> u32 {
    let fit = limit.saturating_sub(MAPPINGS_RESERVED) / MAPPINGS_PER_SLOT;
    wanted.min(u32::try_from(fit).unwrap_or(u32::MAX).max(64))
}

/// Engine-wide settings, fixed when the sandbox is created.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The most WebAssembly instances alive at once (the pooling allocator's size).
    pub max_instances: u32,
    /// The most memory any one instance may be given (the pool's slot size).
    pub max_memory_bytes: u64,
    pub cpu: CpuLimiter,
    /// The largest code accepted, per format.
    pub max_wasm_bytes: usize,
    pub max_js_bytes: usize,
    /// Where compiled components (the JS runner among them) are kept across restarts;
    /// `None` keeps them in memory only. The directory must be trusted: its files are
    /// loaded as machine code.
    pub cache_dir: Option<PathBuf>,
    /// How many guests that compute for long (past 2 ms of CPU in one message) run at
    /// once, under either CPU limiter; keep it below the executor's threads so that one
    /// stays free for the rest. Default: one fewer than the machine's cores, at least one.
    pub busy_lanes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_instances: 10_000,
            max_memory_bytes: 256 << 20,
            cpu: CpuLimiter::Epoch,
            max_wasm_bytes: 32 << 20,
            max_js_bytes: 4 << 20,
            cache_dir: None,
            busy_lanes: lane::default_permits(),
        }
    }
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap (for JavaScript, the runner's memory: QuickJS's heap and more).
    pub memory_bytes: u64,
    /// CPU time one message (or init, snapshot, restore) may use.
    pub cpu_per_message: Duration,
    /// The largest reply a call may return.
    pub max_reply_bytes: usize,
    /// Instances with the same key take turns in the busy lane as one (the kernel gives
    /// each tenant its own key), so many busy services of one owner get that owner's
    /// share of the lane, not all of it.
    pub share: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_per_message: Duration::from_millis(1000),
            max_reply_bytes: 4 << 20,
            share: 0,
        }
    }
}

/// Resource readings of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Linear memory in use, in bytes.
    pub memory_bytes: u64,
    /// CPU time consumed by all messages so far.
    pub cpu_time: Duration,
    /// Messages handled (calls and casts).
    pub messages: u64,
}

/// A running service instance: one message at a time.
///
/// After any [`CallError::Crash`] the instance is poisoned: every later call reports the
/// same crash, and the owner should drop it and start a new one.
pub trait Instance: Send {
    /// Runs the guest's `init` with the deploy config (JSON text).
    fn init<'a>(&'a mut self, config: &'a str) -> BoxFuture<'a, Result<(), CallError>>;
    /// Sends a request (JSON text) and returns the reply (JSON text).
    fn call<'a>(&'a mut self, request: &'a str) -> BoxFuture<'a, Result<String, CallError>>;
    /// Sends a fire-and-forget message (JSON text).
    fn cast<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), CallError>>;
    /// Whether the guest exports `snapshot`/`restore`.
    fn has_state(&self) -> bool;
    /// The guest's state, when it exports `snapshot` and has something to carry.
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CallError>>;
    /// Hands a snapshot to the guest's `restore`.
    fn restore<'a>(&'a mut self, state: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>>;
    /// Current resource readings.
    fn stats(&self) -> InstanceStats;
    /// A handle that stops the guest's running code from another task.
    fn interrupt_handle(&self) -> Interrupt;
    /// Hands back to the system memory the instance needs only while a call runs (the
    /// resident pages of its fiber stack), for an owner that leaves it idle; the next
    /// call takes them again. Returns the bytes handed back.
    fn release_idle_memory(&mut self) -> usize {
        0
    }
}

/// The engine, the JS runner and the artifact cache.
pub struct Sandbox {
    config: SandboxConfig,
    wasm: Arc<wasm::WasmEngine>,
    js: js::JsEngine,
    cache: artifact::Cache,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates the engine (the JS runner is compiled on first use).
    pub fn new(config: SandboxConfig) -> Result<Arc<Self>, SandboxError> {
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| SandboxError::CacheDir {
                path: dir.clone(),
                detail: e.to_string(),
            })?;
        }
        Ok(Arc::new(Self {
            wasm: Arc::new(wasm::WasmEngine::new(&config)?),
            js: js::JsEngine::default(),
            cache: artifact::Cache::default(),
            config,
        }))
    }

    /// Sets the most CPU time one message may use, whatever the instance's
    /// [`Limits::cpu_per_message`]: running instances apply it from their next message.
    pub fn set_max_cpu_per_message(&self, max: Duration) {
        self.wasm.set_max_cpu_per_message(max);
    }

    /// The settings this sandbox was created with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Validates and compiles `code`, or returns the cached artifact of the same code.
    /// Compiling a component runs on a blocking thread; JavaScript is loaded once in an
    /// instance of the runner.
    pub async fn compile(
        self: &Arc<Self>,
        format: Format,
        code: Arc<[u8]>,
    ) -> Result<Artifact, CompileError> {
        let hash = CodeHash::of(format, &code);
        if let Some(a) = self.cache.get(&hash) {
            return Ok(a);
        }
        let cell = self.cache.cell(hash);
        let this = Arc::clone(self);
        cell.get_or_try_init(|| async move {
            this.check_size(format, &code)?;
            match format {
                Format::Wasm => {
                    let wasm = Arc::clone(&this.wasm);
                    let cache_dir = this.config.cache_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        wasm.compile(hash, &code, cache_dir.as_deref())
                    })
                    .await
                    .map_err(|e| CompileError::Internal(format!("the compile task failed: {e}")))?
                }
                Format::Js => {
                    let cache_dir = this.config.cache_dir.as_deref();
                    this.js.compile(&this.wasm, cache_dir, hash, &code).await
                }
            }
        })
        .await
        .cloned()
        .inspect_err(|_| self.cache.forget_failed(&hash))
    }

    /// A compiled artifact, if this code was compiled before.
    pub fn cached(&self, hash: &CodeHash) -> Option<Artifact> {
        self.cache.get(hash)
    }

    fn check_size(&self, format: Format, code: &[u8]) -> Result<(), CompileError> {
        if code.is_empty() {
            return Err(CompileError::Empty);
        }
        let limit = match format {
            Format::Wasm => self.config.max_wasm_bytes,
            Format::Js => self.config.max_js_bytes,
        };
        if code.len() > limit {
            return Err(CompileError::TooLarge {
                size: code.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Starts an instance of `artifact` with `limits`; guest code reaches the outside
    /// world only through `host`. Runs no guest entry point (call [`Instance::init`]).
    pub async fn instantiate(
        &self,
        artifact: &Artifact,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<Box<dyn Instance>, InstantiateError> {
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(InstantiateError::LimitTooHigh {
                what: "memory",
                requested: limits.memory_bytes,
                max: self.config.max_memory_bytes,
            });
        }
        match artifact.backend() {
            artifact::Backend::Wasm(w) => self.wasm.instantiate(w, limits, host).await,
            artifact::Backend::Js(j) => {
                js::JsEngine::instantiate(&self.wasm, j, limits, host).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_fits_the_map_count() {
        // Linux's default of 65,530 leaves room for 8,191 slots, not 10,000.
        assert_eq!(slots_within_map_count(10_000, 65_530), 8_191);
        // A raised limit keeps what was asked; a tiny one still leaves a few.
        assert_eq!(slots_within_map_count(10_000, 1 << 20), 10_000);
        assert_eq!(slots_within_map_count(10_000, 100), 64);
        assert_eq!(slots_within_map_count(10, 100), 10);
    }
}
