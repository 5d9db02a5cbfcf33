//! The JS runner on the engine: compiling it once, an instance of it per JavaScript
//! service (with the source it asks for), and loading the service's module.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, ComponentExportIndex};

use super::state::State;
use super::{STATE, StateExports, WasmEngine, WasmInstance, bindings};
use crate::artifact::{CodeHash, Format};
use crate::meter::Metered;
use crate::{CallError, CompileError, CrashKind, HostApi, InstantiateError, Limits};

/// The JS runner's world: its own imports and exports over the service's host API.
pub(crate) mod runner_bindings {
    wasmtime::component::bindgen!({
        world: "js-runner",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "solo:service/host": super::bindings::solo::service::host },
    });
}

use runner_bindings::exports::solo::service::js_module::LoadError;

/// The JS runner's module loader.
const JS_MODULE: &str = "solo:service/js-module@0.1.0";

/// The JS runner, compiled and linked: every JavaScript service is an instance of it.
pub(crate) struct Runner {
    pre: bindings::ServicePre<State>,
    state: StateExports,
    load: ComponentExportIndex,
}

/// What makes an instance of the runner a JavaScript service.
pub(super) struct JsParts {
    pub(super) source: Arc<str>,
    pub(super) load: ComponentExportIndex,
}

impl WasmEngine {
    /// Compiles the JS runner: from this process's earlier compile for a compatible
    /// engine (tests and benchmarks make many sandboxes), from the disk cache, or now.
    pub(crate) fn compile_runner(&self, cache_dir: Option<&Path>) -> Result<Runner, CompileError> {
        static COMPILED: parking_lot::Mutex<Vec<(u64, Arc<[u8]>)>> =
            parking_lot::Mutex::new(Vec::new());
        let tag = self.compat_tag();
        let earlier = COMPILED
            .lock()
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, b)| Arc::clone(b));
        // SAFETY: the bytes were serialized in this process by `Component::serialize`
        // for an engine with the same compatibility hash, and wasmtime checks the header.
        let component = match earlier
            .and_then(|b| unsafe { Component::deserialize(&self.engine, &b) }.ok())
        {
            Some(c) => c,
            None => {
                let code = solo_guests::JS_RUNNER;
                let c = self.load_or_compile(CodeHash::of(Format::Wasm, code), code, cache_dir)?;
                if let Ok(bytes) = c.serialize() {
                    COMPILED.lock().push((tag, bytes.into()));
                }
                c
            }
        };
        let missing = |what: &str| {
            CompileError::Internal(format!("the JavaScript runner has no {what} export"))
        };
        let (pre, state) = self.link(&component)?;
        let load = component
            .get_export_index(None, JS_MODULE)
            .and_then(|i| component.get_export_index(Some(&i), "load"))
            .ok_or_else(|| missing(JS_MODULE))?;
        Ok(Runner {
            pre,
            state: state.ok_or_else(|| missing(STATE))?,
            load,
        })
    }

    /// An instance of the JS runner for a service with `source`; its state exports are
    /// offered when the module has `snapshot` and `restore`.
    pub(crate) async fn instantiate_js(
        &self,
        runner: &Runner,
        source: Arc<str>,
        has_state: bool,
        limits: Limits,
        host: Arc<dyn HostApi>,
    ) -> Result<WasmInstance, InstantiateError> {
        let js = JsParts {
            source,
            load: runner.load,
        };
        let state = has_state.then_some(runner.state);
        self.start(&runner.pre, state, Some(js), limits, host).await
    }
}

impl WasmInstance {
    /// Loads a JavaScript service's module: the names of its exported functions, or why
    /// it did not load.
    pub(crate) async fn load(&mut self) -> Result<Result<Vec<String>, LoadError>, CallError> {
        let index = self
            .js_load
            .ok_or_else(|| CallError::crash(CrashKind::Internal, "not a JavaScript instance"))?;
        self.prepare()?;
        let instance = self
            .instance
            .ok_or_else(|| CallError::crash(CrashKind::Internal, "the instance never started"))?;
        let func = instance
            .get_typed_func::<(), (Result<Vec<String>, LoadError>,)>(&mut self.store, &index)
            .map_err(|e| CallError::crash(CrashKind::Internal, format!("{e:#}")))?;
        let fut = func.call_async(&mut self.store, ());
        let r = Metered::new(Arc::clone(&self.meter), fut).await;
        Ok(self.finish(r)?.0)
    }
}
