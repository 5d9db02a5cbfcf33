//! The JavaScript backend: embedded QuickJS (QuickJS-ng through `rquickjs`).
//!
//! One runtime and one context per instance, with a heap limit, a stack limit and an
//! interrupt handler that stops a message once its CPU budget is spent. The module's
//! exports `init`, `handleCall`, `handleCast`, `snapshot` and `restore` are the entry
//! points; values cross as JSON. The only global beyond the language itself is `solo`,
//! the host API: there is no `require`, `fetch`, `process`, file, socket or timer.
//!
//! Functions of `solo` that wait (`kvGet`, `kvPut`, `kvDelete`, `kvList`, `secret`,
//! `call`) return promises; their waiting is not counted as CPU time.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rquickjs::{
    AsyncContext, AsyncRuntime, CatchResultExt, CaughtError, Context, Ctx, Exception, Function,
    Module, Object, Runtime, Value,
};

mod api;

use crate::artifact::{Artifact, Backend, CodeHash, Format};
use crate::meter::{Meter, Metered};
use crate::{
    CallError, CompileError, Crash, CrashKind, GuestError, HostApi, Instance, InstanceStats,
    InstantiateError, Limits, SandboxConfig,
};
use api::{HOST_FUNCTIONS, install_host, to_json};

/// The JS stack limit (QuickJS counts it on the host thread's stack).
const STACK_BYTES: usize = 256 << 10;
/// Limits for loading a module once at compile time, to find its exports.
const COMPILE_MEMORY: usize = 32 << 20;
const COMPILE_CPU: Duration = Duration::from_millis(500);
/// How often (in messages) the heap size reported in stats is refreshed.
const MEMORY_REFRESH: u64 = 64;

/// Runs JavaScript on threads of its own: QuickJS cannot yield in the middle of a
/// computation, so a guest spinning until its CPU budget runs out holds its thread; it
/// must never be one of the threads the kernel and the gateway run on.
pub(crate) struct JsEngine {
    exec: Option<tokio::runtime::Runtime>,
}

impl Drop for JsEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.exec.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) struct JsArtifact {
    source: Arc<str>,
    has_init: bool,
    has_cast: bool,
    has_state: bool,
}

/// The entry points a module exports.
struct Exports {
    init: bool,
    call: bool,
    cast: bool,
    snapshot: bool,
    restore: bool,
}

impl JsEngine {
    pub(crate) fn new(config: &SandboxConfig) -> Result<Self, crate::SandboxError> {
        let threads = config.js_threads.max(1);
        let exec = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("solo-js")
            .enable_time()
            .build()
            .map_err(|e| {
                crate::SandboxError::Engine(format!("start the JavaScript threads: {e}"))
            })?;
        Ok(Self { exec: Some(exec) })
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, InstantiateError> {
        self.exec
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| InstantiateError::Internal("the JavaScript threads are stopped".into()))
    }

    /// Checks the syntax and finds the exports by loading the module once in a throwaway
    /// runtime with tight limits (module top-level code runs there, with no host API).
    pub(crate) fn compile(&self, hash: CodeHash, code: &[u8]) -> Result<Artifact, CompileError> {
        let source = std::str::from_utf8(code)
            .map_err(|e| CompileError::JsLoad(format!("the source is not UTF-8: {e}")))?;
        let exports = probe(source)?;
        if !exports.call {
            return Err(CompileError::JsMissingExport {
                name: "handleCall".into(),
                needed: "handleCall (and optionally init, handleCast, snapshot, restore)".into(),
            });
        }
        let has_state = exports.snapshot && exports.restore;
        Ok(Artifact::new(
            hash,
            Format::Js,
            code.len(),
            has_state,
            Backend::Js(JsArtifact {
                source: Arc::from(source),
                has_init: exports.init,
                has_cast: exports.cast,
                has_state,
            }),
        ))
    }

    pub(crate) async fn instantiate(
        &self,
        artifact: &JsArtifact,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<Box<dyn Instance>, InstantiateError> {
        let internal = |e: rquickjs::Error| InstantiateError::Internal(e.to_string());
        let rt = AsyncRuntime::new().map_err(internal)?;
        rt.set_memory_limit(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX))
            .await;
        rt.set_max_stack_size(STACK_BYTES).await;
        let meter = Meter::new();
        let m = Arc::clone(&meter);
        rt.set_interrupt_handler(Some(Box::new(move || m.over_budget())))
            .await;
        let ctx = AsyncContext::full(&rt).await.map_err(internal)?;
        let exec = self.handle()?;
        let mut instance = JsInstance {
            exec,
            rt,
            ctx,
            has_init: artifact.has_init,
            has_cast: artifact.has_cast,
            has_state: artifact.has_state,
            limits,
            meter,
            messages: 0,
            memory_bytes: 0,
            poisoned: None,
        };
        instance.meter.begin(limits.cpu_per_message);
        let source = Arc::clone(&artifact.source);
        let ctx = instance.ctx.clone();
        let load = async move {
            ctx.async_with(async move |ctx| {
                install_host(&ctx, host)
                    .map_err(|e| describe(&ctx, Err::<(), _>(e).catch(&ctx)))?;
                let loaded = async {
                    let module = Module::declare(ctx.clone(), "service", &*source)?;
                    let (module, promise) = module.eval()?;
                    promise.into_future::<()>().await?;
                    module.namespace()
                }
                .await
                .catch(&ctx);
                match loaded.and_then(|ns| hide_exports(&ctx, ns).catch(&ctx)) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(describe_caught(&e)),
                }
            })
            .await
        };
        let loaded = instance
            .exec
            .spawn(Metered::new(Arc::clone(&instance.meter), load))
            .await
            .map_err(|e| InstantiateError::Internal(format!("the module load task failed: {e}")))?;
        match loaded {
            Ok(()) => {
                instance.refresh_memory().await;
                Ok(Box::new(instance))
            }
            Err(thrown) => Err(InstantiateError::Crashed(instance.crash_from(thrown))),
        }
    }
}

/// Loads the module once to check its syntax and list its exports.
fn probe(source: &str) -> Result<Exports, CompileError> {
    let internal = |e: rquickjs::Error| CompileError::Internal(e.to_string());
    let rt = Runtime::new().map_err(internal)?;
    rt.set_memory_limit(COMPILE_MEMORY);
    rt.set_max_stack_size(STACK_BYTES);
    let started = std::time::Instant::now();
    rt.set_interrupt_handler(Some(Box::new(move || started.elapsed() > COMPILE_CPU)));
    let ctx = Context::full(&rt).map_err(internal)?;
    ctx.with(|ctx| {
        // The host API does not exist while a module loads: using it at top level fails
        // the load with a clear message.
        let stub = Object::new(ctx.clone()).map_err(internal)?;
        let unavailable = Function::new(ctx.clone(), |ctx: Ctx<'_>| -> rquickjs::Result<()> {
            Err(Exception::throw_message(
                &ctx,
                "the solo host API cannot be used while the module loads; use it in init or a handler",
            ))
        })
        .map_err(internal)?;
        for name in HOST_FUNCTIONS {
            stub.set(*name, unavailable.clone()).map_err(internal)?;
        }
        ctx.globals().set("solo", stub).map_err(internal)?;

        let declared = Module::declare(ctx.clone(), "service", source).catch(&ctx);
        let module = match declared {
            Ok(m) => m,
            Err(e) => return Err(syntax_error(&e)),
        };
        let evaluated = module
            .eval()
            .and_then(|(m, p)| p.finish::<()>().map(|()| m))
            .catch(&ctx);
        let module = evaluated.map_err(|e| CompileError::JsLoad(describe_caught(&e).message))?;
        let ns = module.namespace().map_err(internal)?;
        let is_fn = |name: &str| ns.get::<_, Value<'_>>(name).is_ok_and(|v| v.is_function());
        Ok(Exports {
            init: is_fn("init"),
            call: is_fn("handleCall"),
            cast: is_fn("handleCast"),
            snapshot: is_fn("snapshot"),
            restore: is_fn("restore"),
        })
    })
}

fn syntax_error(e: &CaughtError<'_>) -> CompileError {
    match e {
        CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_else(|| "syntax error".into());
            let line = ex.get::<_, Option<u32>>("lineNumber").ok().flatten();
            let column = ex.get::<_, Option<u32>>("columnNumber").ok().flatten();
            let (line, column) = match (line, column) {
                (Some(l), Some(c)) => (l, c),
                _ => position_from_stack(ex.stack().as_deref().unwrap_or("")),
            };
            CompileError::JsSyntax {
                message,
                line,
                column,
            }
        }
        other => CompileError::JsSyntax {
            message: other.to_string(),
            line: 0,
            column: 0,
        },
    }
}

/// Finds `service:LINE:COL` in a QuickJS stack trace.
fn position_from_stack(stack: &str) -> (u32, u32) {
    let Some(at) = stack.find("service:") else {
        return (0, 0);
    };
    let mut parts = stack[at + "service:".len()..].split(|c: char| !c.is_ascii_digit());
    let line = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let column = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (line, column)
}

/// A JavaScript failure, described for a crash report or a guest error.
struct Thrown {
    message: String,
    stack: Option<String>,
}

fn describe_caught(e: &CaughtError<'_>) -> Thrown {
    match e {
        CaughtError::Exception(ex) => Thrown {
            message: ex
                .message()
                .unwrap_or_else(|| "an exception without a message".into()),
            stack: ex.stack().filter(|s| !s.trim().is_empty()),
        },
        CaughtError::Value(v) => Thrown {
            message: value_text(v),
            stack: None,
        },
        CaughtError::Error(e) => Thrown {
            message: e.to_string(),
            stack: None,
        },
    }
}

fn describe<T>(_ctx: &Ctx<'_>, r: Result<T, CaughtError<'_>>) -> Thrown {
    match r {
        Ok(_) => Thrown {
            message: "no error".into(),
            stack: None,
        },
        Err(e) => describe_caught(&e),
    }
}

fn value_text(v: &Value<'_>) -> String {
    if let Some(s) = v.as_string() {
        return s.to_string().unwrap_or_default();
    }
    v.ctx()
        .json_stringify(v.clone())
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| format!("a thrown {}", v.type_name()))
}

/// Where an instance keeps its module's namespace: a global the guest cannot change.
const EXPORTS_GLOBAL: &str = "__soloExports";

/// Stores the namespace as a non-writable, non-configurable, non-enumerable global.
fn hide_exports<'js>(ctx: &Ctx<'js>, ns: Object<'js>) -> rquickjs::Result<()> {
    let object: Object<'js> = ctx.globals().get("Object")?;
    let define: Function<'js> = object.get("defineProperty")?;
    let descriptor = Object::new(ctx.clone())?;
    descriptor.set("value", ns)?;
    descriptor.set("writable", false)?;
    descriptor.set("configurable", false)?;
    descriptor.set("enumerable", false)?;
    define.call::<_, ()>((ctx.globals(), EXPORTS_GLOBAL, descriptor))
}

struct JsInstance {
    exec: tokio::runtime::Handle,
    rt: AsyncRuntime,
    ctx: AsyncContext,
    has_init: bool,
    has_cast: bool,
    has_state: bool,
    limits: Limits,
    meter: Arc<Meter>,
    messages: u64,
    memory_bytes: u64,
    poisoned: Option<Crash>,
}

/// How an entry point ended.
enum Outcome {
    /// It returned this JSON.
    Returned(String),
    /// It threw (or the engine stopped it).
    Threw(Thrown),
    /// The request could not be turned into a JS value.
    BadRequest(String),
}

impl JsInstance {
    fn check_poisoned(&self) -> Result<(), CallError> {
        match &self.poisoned {
            Some(c) => Err(CallError::Crash(Crash {
                kind: CrashKind::Poisoned,
                message: format!("the instance crashed earlier ({c}) and cannot run again"),
                backtrace: None,
                observed: None,
            })),
            None => Ok(()),
        }
    }

    async fn refresh_memory(&mut self) {
        self.memory_bytes =
            u64::try_from(self.rt.memory_usage().await.memory_used_size).unwrap_or(0);
    }

    /// Classifies a throw that the engine caused (CPU, memory, stack) as a crash; `None`
    /// for an ordinary exception from the guest's own code.
    fn engine_crash(&self, t: &Thrown) -> Option<Crash> {
        let m = t.message.to_ascii_lowercase();
        let kind = if self.meter.interrupted() {
            CrashKind::Interrupted
        } else if self.meter.tripped() || m.contains("interrupted") {
            CrashKind::CpuLimit
        } else if m.contains("out of memory") {
            CrashKind::MemoryLimit
        } else if m.contains("stack overflow") || m.contains("call stack size") {
            CrashKind::StackOverflow
        } else {
            return None;
        };
        let message = match kind {
            CrashKind::Interrupted => "the instance was interrupted by its owner".to_string(),
            CrashKind::CpuLimit => format!(
                "the message used more than its CPU budget of {} ms",
                self.limits.cpu_per_message.as_millis()
            ),
            CrashKind::MemoryLimit => format!(
                "the guest ran out of memory at its limit of {} bytes",
                self.limits.memory_bytes
            ),
            _ => "the guest's stack overflowed (unbounded recursion?)".into(),
        };
        let observed = match kind {
            CrashKind::CpuLimit => u64::try_from(self.meter.used().as_millis()).ok(),
            _ => None,
        };
        Some(Crash {
            kind,
            message,
            backtrace: t.stack.clone(),
            observed,
        })
    }

    /// A crash from any throw (used where nobody can receive an error).
    fn crash_from(&mut self, t: Thrown) -> Crash {
        let crash = self.engine_crash(&t).unwrap_or(Crash {
            kind: CrashKind::Trap,
            message: format!("uncaught exception: {}", t.message),
            backtrace: t.stack,
            observed: None,
        });
        self.poisoned = Some(crash.clone());
        crash
    }

    /// Runs export `name` with `arg` (JSON text, or no argument) and awaits its result.
    async fn invoke(
        &mut self,
        name: &'static str,
        arg: Option<String>,
    ) -> Result<Outcome, CallError> {
        self.check_poisoned()?;
        self.meter.begin(self.limits.cpu_per_message);
        let ctx = self.ctx.clone();
        let fut = async move {
            ctx.async_with(async move |ctx| {
                let run = async {
                    let ns: Object<'_> = ctx.globals().get(EXPORTS_GLOBAL)?;
                    let f: Function<'_> = ns.get(name)?;
                    let out: Value<'_> = match arg {
                        Some(text) => {
                            let value = match ctx.json_parse(text).catch(&ctx) {
                                Ok(v) => v,
                                Err(e) => return Ok(Err(describe_caught(&e).message)),
                            };
                            f.call((value,))?
                        }
                        None => f.call(())?,
                    };
                    let out = match out.as_promise() {
                        Some(p) => p.clone().into_future::<Value<'_>>().await?,
                        None => out,
                    };
                    to_json(&ctx, out).map(Ok)
                }
                .await
                .catch(&ctx);
                match run {
                    Ok(Ok(json)) => Outcome::Returned(json),
                    Ok(Err(bad)) => Outcome::BadRequest(bad),
                    Err(e) => Outcome::Threw(describe_caught(&e)),
                }
            })
            .await
        };
        let outcome = self
            .exec
            .spawn(Metered::new(Arc::clone(&self.meter), fut))
            .await
            .map_err(|e| {
                CallError::crash(
                    CrashKind::Internal,
                    format!("the JavaScript task failed: {e}"),
                )
            })?;
        if matches!(name, "handleCall" | "handleCast") {
            self.messages += 1;
        }
        if self.messages % MEMORY_REFRESH == 1 {
            self.refresh_memory().await;
        }
        Ok(outcome)
    }
}

impl Instance for JsInstance {
    fn init<'a>(&'a mut self, config: &'a str) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if !self.has_init {
                return self.check_poisoned();
            }
            match self.invoke("init", Some(config.to_string())).await? {
                Outcome::Returned(_) => Ok(()),
                Outcome::BadRequest(e) => Err(CallError::BadRequest(format!(
                    "the config is not JSON: {e}"
                ))),
                Outcome::Threw(t) => match self.engine_crash(&t) {
                    Some(c) => {
                        self.poisoned = Some(c.clone());
                        Err(CallError::Crash(c))
                    }
                    None => Err(CallError::Guest(GuestError::thrown(t.message, t.stack))),
                },
            }
        })
    }

    fn call<'a>(&'a mut self, request: &'a str) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move {
            match self.invoke("handleCall", Some(request.to_string())).await? {
                Outcome::Returned(reply) if reply.len() > self.limits.max_reply_bytes => {
                    Err(CallError::ReplyTooLarge {
                        size: reply.len(),
                        limit: self.limits.max_reply_bytes,
                    })
                }
                Outcome::Returned(reply) => Ok(reply),
                Outcome::BadRequest(e) => Err(CallError::BadRequest(format!(
                    "the request is not JSON: {e}"
                ))),
                Outcome::Threw(t) => match self.engine_crash(&t) {
                    Some(c) => {
                        self.poisoned = Some(c.clone());
                        Err(CallError::Crash(c))
                    }
                    None => Err(CallError::Guest(GuestError::thrown(t.message, t.stack))),
                },
            }
        })
    }

    fn cast<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if !self.has_cast {
                self.check_poisoned()?;
                self.messages += 1;
                return Ok(());
            }
            match self.invoke("handleCast", Some(message.to_string())).await? {
                Outcome::Returned(_) => Ok(()),
                Outcome::BadRequest(e) => Err(CallError::BadRequest(format!(
                    "the message is not JSON: {e}"
                ))),
                // An exception in a cast has nobody to go back to: it crashes the instance.
                Outcome::Threw(t) => Err(CallError::Crash(self.crash_from(t))),
            }
        })
    }

    fn has_state(&self) -> bool {
        self.has_state
    }

    fn snapshot(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, CallError>> {
        Box::pin(async move {
            if !self.has_state {
                return Ok(None);
            }
            match self.invoke("snapshot", None).await? {
                Outcome::Returned(json) if json == "null" => Ok(None),
                Outcome::Returned(json) => Ok(Some(json.into_bytes())),
                Outcome::BadRequest(e) => Err(CallError::BadRequest(e)),
                Outcome::Threw(t) => Err(CallError::Crash(self.crash_from(t))),
            }
        })
    }

    fn restore<'a>(&'a mut self, state: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            if !self.has_state {
                return Err(CallError::Guest(GuestError::new(
                    "the service does not export restore",
                )));
            }
            // A snapshot is JSON; bytes that are not (from a service in another format)
            // arrive as a string.
            let text = std::str::from_utf8(state).ok();
            let arg = match text {
                Some(t) if serde_json::from_str::<serde_json::Value>(t).is_ok() => t.to_string(),
                _ => serde_json::Value::String(String::from_utf8_lossy(state).into_owned())
                    .to_string(),
            };
            match self.invoke("restore", Some(arg)).await? {
                Outcome::Returned(_) => Ok(()),
                Outcome::BadRequest(e) => Err(CallError::BadRequest(e)),
                Outcome::Threw(t) => match self.engine_crash(&t) {
                    Some(c) => {
                        self.poisoned = Some(c.clone());
                        Err(CallError::Crash(c))
                    }
                    None => Err(CallError::Guest(GuestError::thrown(t.message, t.stack))),
                },
            }
        })
    }

    fn stats(&self) -> InstanceStats {
        InstanceStats {
            memory_bytes: self.memory_bytes,
            cpu_time: self.meter.total(),
            messages: self.messages,
        }
    }

    fn interrupt_handle(&self) -> crate::Interrupt {
        crate::Interrupt(Arc::clone(&self.meter))
    }
}
