//! The JavaScript backend: every JavaScript service runs in the JS runner
//! (`guests/js-runner`, QuickJS-ng compiled to a WebAssembly component) under wasmtime,
//! with the same memory limit, CPU budget and host API as any component. No interpreter
//! of guest code runs in the server process.
//!
//! The runner is compiled once per sandbox (from the disk cache when there is one). A
//! JavaScript artifact is the runner plus the service's source and what its module
//! exports: compiling loads the module once in a throwaway instance with tight limits and
//! a host API that refuses every call, which checks the syntax (with line and column)
//! and finds the entry points (`handleCall`, and optionally `init`, `handleCast`,
//! `snapshot`, `restore`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::artifact::{Artifact, Backend, CodeHash, Format};
use crate::wasm::{Runner, WasmEngine};
use crate::{
    CallError, CompileError, CrashKind, GuestCaller, GuestError, GuestIdentity, HostApi, HostError,
    Instance, InstantiateError, Level, Limits,
};

/// Limits for loading a module once at compile time, to check it and find its exports.
const COMPILE_LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    cpu_per_message: Duration::from_millis(500),
    max_reply_bytes: 1 << 20,
    // Every compile's check takes turns in the busy lane as one share.
    share: u64::MAX,
};

/// The prefix of the runner's error for an argument that is not JSON.
const NOT_JSON: &str = "the argument is not JSON: ";

/// The runner, compiled on first use.
#[derive(Default)]
pub(crate) struct JsEngine {
    runner: tokio::sync::OnceCell<Arc<Runner>>,
}

pub(crate) struct JsArtifact {
    runner: Arc<Runner>,
    source: Arc<str>,
    has_state: bool,
}

impl JsEngine {
    /// The compiled runner (compiled now, on a blocking thread, the first time).
    async fn runner(
        &self,
        wasm: &Arc<WasmEngine>,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Arc<Runner>, CompileError> {
        let wasm = Arc::clone(wasm);
        let cache_dir = cache_dir.map(std::path::Path::to_path_buf);
        self.runner
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || wasm.compile_runner(cache_dir.as_deref()))
                    .await
                    .map_err(|e| {
                        CompileError::Internal(format!("the runner's compile task failed: {e}"))
                    })?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Checks the source and finds its exports by loading it once.
    pub(crate) async fn compile(
        &self,
        wasm: &Arc<WasmEngine>,
        cache_dir: Option<&std::path::Path>,
        hash: CodeHash,
        code: &[u8],
    ) -> Result<Artifact, CompileError> {
        let source: Arc<str> = std::str::from_utf8(code)
            .map_err(|e| CompileError::JsLoad(format!("the source is not UTF-8: {e}")))?
            .into();
        let runner = self.runner(wasm, cache_dir).await?;
        let mut probe = wasm
            .instantiate_js(
                &runner,
                Arc::clone(&source),
                false,
                COMPILE_LIMITS,
                Arc::new(Loading),
            )
            .await
            .map_err(|e| match e {
                InstantiateError::Crashed(c) => CompileError::JsLoad(c.to_string()),
                InstantiateError::Exhausted(why) => CompileError::Exhausted(why),
                other => CompileError::Internal(other.to_string()),
            })?;
        let exports = match probe.load().await {
            Ok(Ok(names)) => names,
            Ok(Err(e)) if e.syntax => {
                return Err(CompileError::JsSyntax {
                    message: e.message,
                    line: e.line,
                    column: e.column,
                });
            }
            Ok(Err(e)) => return Err(CompileError::JsLoad(e.message)),
            Err(e) => return Err(CompileError::JsLoad(e.to_string())),
        };
        let has = |name: &str| exports.iter().any(|e| e == name);
        if !has("handleCall") {
            return Err(CompileError::JsMissingExport {
                name: "handleCall".into(),
                needed: "handleCall (and optionally init, handleCast, snapshot, restore)".into(),
            });
        }
        let has_state = has("snapshot") && has("restore");
        Ok(Artifact::new(
            hash,
            Format::Js,
            code.len(),
            has_state,
            Backend::Js(JsArtifact {
                runner,
                source,
                has_state,
            }),
        ))
    }

    /// An instance of the runner with the service's module loaded (its top-level code
    /// run); `init` comes after.
    pub(crate) async fn instantiate(
        wasm: &WasmEngine,
        artifact: &JsArtifact,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<Box<dyn Instance>, InstantiateError> {
        let mut instance = wasm
            .instantiate_js(
                &artifact.runner,
                Arc::clone(&artifact.source),
                artifact.has_state,
                limits,
                host,
            )
            .await?;
        match instance.load().await {
            Ok(Ok(_)) => Ok(Box::new(instance)),
            Ok(Err(e)) => Err(InstantiateError::Crashed(crate::Crash {
                kind: CrashKind::Trap,
                message: format!("uncaught exception: {}", e.message),
                backtrace: (!e.stack.is_empty()).then_some(e.stack),
                observed: None,
            })),
            Err(CallError::Crash(c)) => Err(InstantiateError::Crashed(c)),
            Err(e) => Err(InstantiateError::Internal(e.to_string())),
        }
    }
}

/// The crash kind and message for the runner's report of a stopped script (`cpu_limit`
/// is the meter's to say: a report of it with the budget not spent is a trap).
pub(crate) fn crash_kind(
    c: &crate::wasm::JsCrash,
    limits: &Limits,
    memory_near_limit: bool,
) -> (CrashKind, String) {
    match c.kind.as_str() {
        "memory_limit" if memory_near_limit => (
            CrashKind::MemoryLimit,
            format!(
                "the guest ran out of memory at its limit of {} bytes",
                limits.memory_bytes
            ),
        ),
        _ => (CrashKind::Trap, c.message.clone()),
    }
}

/// A JavaScript service's error: the exception's message with its stack under it, or
/// an argument that is not JSON.
pub(crate) fn guest_error(text: String) -> CallError {
    if let Some(detail) = text.strip_prefix(NOT_JSON) {
        return CallError::BadRequest(format!("the request is not JSON: {detail}"));
    }
    match text.split_once('\n') {
        Some((message, stack)) => CallError::Guest(GuestError::thrown(
            message.to_string(),
            Some(stack.to_string()),
        )),
        None => CallError::Guest(GuestError::thrown(text, None)),
    }
}

/// The host API while a module loads at compile time: every call is refused.
struct Loading;

const WHILE_LOADING: &str =
    "the solo host API cannot be used while the module loads; use it in init or a handler";

fn refused<T: Send + 'static>() -> BoxFuture<'static, Result<T, HostError>> {
    Box::pin(async { Err(HostError::new("unavailable", WHILE_LOADING)) })
}

impl HostApi for Loading {
    fn log(&self, _level: Level, _message: &str) {}
    fn emit(&self, _kind: &str, _payload: &str) -> Result<(), HostError> {
        Err(HostError::new("unavailable", WHILE_LOADING))
    }
    fn kv_get(&self, _key: &str) -> BoxFuture<'static, Result<Option<Vec<u8>>, HostError>> {
        refused()
    }
    fn kv_put(&self, _key: &str, _value: Vec<u8>) -> BoxFuture<'static, Result<(), HostError>> {
        refused()
    }
    fn kv_delete(&self, _key: &str) -> BoxFuture<'static, Result<(), HostError>> {
        refused()
    }
    fn kv_list(&self, _prefix: &str) -> BoxFuture<'static, Result<Vec<String>, HostError>> {
        refused()
    }
    fn secret(&self, _name: &str) -> BoxFuture<'static, Result<Vec<u8>, HostError>> {
        refused()
    }
    fn call(
        &self,
        _target: &str,
        _request: String,
        _timeout: Duration,
        _token: Option<String>,
    ) -> BoxFuture<'static, Result<String, HostError>> {
        refused()
    }
    fn cast(
        &self,
        _target: &str,
        _message: String,
        _token: Option<String>,
    ) -> Result<(), HostError> {
        Err(HostError::new("unavailable", WHILE_LOADING))
    }
    fn whoami(&self) -> GuestIdentity {
        GuestIdentity::default()
    }
    fn caller(&self) -> Option<GuestCaller> {
        None
    }
}
