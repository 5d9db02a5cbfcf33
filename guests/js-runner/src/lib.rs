//! js-runner: QuickJS compiled to a Solo component, so JavaScript runs inside wasmtime
//! (memory limited by wasmtime, CPU by epochs) instead of in the server process.
//!
//! It takes the service's source in its init config, as `{"source": "...", "config":
//! ...}`, and runs the JS contract's entry points (`init`, `handleCall`, `handleCast`,
//! `snapshot`, `restore`; promises are settled by running QuickJS's job queue) with the
//! `solo` host API of `host.rs`. Loading the source through a host function, and moving
//! the JavaScript format onto this runner, are the next steps.

mod host;

use std::cell::RefCell;

use rquickjs::{CatchResultExt, Context, Ctx, Function, Module, Persistent, Runtime, Value};

/// The service's runtime, context and exports, kept between messages.
struct Js {
    ctx: Context,
    exports: Persistent<rquickjs::Object<'static>>,
}

thread_local! {
    static JS: RefCell<Option<Js>> = const { RefCell::new(None) };
}

struct Runner;

/// An exception or a failed conversion, as text naming what it can (the message, and for
/// an exception its stack).
fn describe<'js>(ctx: &Ctx<'js>, e: rquickjs::Error) -> String {
    match rquickjs::CaughtError::from_error(ctx, e) {
        rquickjs::CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_default();
            match ex.stack() {
                Some(stack) if !stack.is_empty() => format!("{message}\n{stack}"),
                _ => message,
            }
        }
        rquickjs::CaughtError::Value(v) => ctx
            .json_stringify(v)
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| "a value was thrown".into()),
        rquickjs::CaughtError::Error(e) => e.to_string(),
    }
}

/// Settles `v` if it is a promise (running the job queue), and gives the value.
fn settle<'js>(v: Value<'js>) -> rquickjs::Result<Value<'js>> {
    match v.as_promise() {
        Some(p) => p.finish::<Value>(),
        None => Ok(v),
    }
}

/// Calls export `name` with `arg` (JSON text) and answers the result as JSON text
/// (`None`: no such export).
fn run(name: &str, arg: Option<&str>) -> Result<Option<String>, String> {
    JS.with(|js| {
        let js = js.borrow();
        let js = js.as_ref().ok_or("the service was not initialized")?;
        js.ctx.with(|ctx| {
            let exports = js
                .exports
                .clone()
                .restore(&ctx)
                .map_err(|e| e.to_string())?;
            let f: Option<Function> = exports.get(name).map_err(|e| e.to_string())?;
            let Some(f) = f else { return Ok(None) };
            let out = (|| {
                let out = match arg {
                    Some(text) => f.call::<_, Value>((ctx.json_parse(text)?,))?,
                    None => f.call::<_, Value>(())?,
                };
                settle(out)
            })()
            .map_err(|e| describe(&ctx, e))?;
            let text = ctx
                .json_stringify(out)
                .map_err(|e| describe(&ctx, e))?
                .map(|s| s.to_string())
                .transpose()
                .map_err(|e| e.to_string())?;
            Ok(Some(text.unwrap_or_else(|| "null".into())))
        })
    })
}

impl solo_sdk::Service for Runner {
    fn init(config: String) -> Result<(), String> {
        let parsed: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("the config is not JSON: {e}"))?;
        let source = parsed["source"]
            .as_str()
            .ok_or("the config names no `source`")?
            .to_string();
        let service_config = parsed
            .get("config")
            .cloned()
            .unwrap_or_default()
            .to_string();
        let rt = Runtime::new().map_err(|e| e.to_string())?;
        let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
        let exports = ctx.with(|ctx| {
            host::install(&ctx).catch(&ctx).map_err(|e| e.to_string())?;
            let declared = Module::declare(ctx.clone(), "service", source)
                .catch(&ctx)
                .map_err(|e| e.to_string())?;
            let (module, done) = declared.eval().catch(&ctx).map_err(|e| e.to_string())?;
            done.finish::<()>().catch(&ctx).map_err(|e| e.to_string())?;
            let ns = module.namespace().map_err(|e| e.to_string())?;
            Ok::<_, String>(Persistent::save(&ctx, ns))
        })?;
        JS.with(|js| *js.borrow_mut() = Some(Js { ctx, exports }));
        run("init", Some(&service_config)).map(|_| ())
    }

    fn handle_call(request: String) -> Result<String, String> {
        run("handleCall", Some(&request))?.ok_or_else(|| "the service exports no handleCall".into())
    }

    fn handle_cast(message: String) {
        let _ = run("handleCast", Some(&message));
    }

    /// The JS `snapshot` export's result as JSON text; none without the export, or when
    /// it answers `null` or `undefined`.
    fn snapshot() -> Option<Vec<u8>> {
        match run("snapshot", None) {
            Ok(Some(json)) if json != "null" => Some(json.into_bytes()),
            _ => None,
        }
    }

    /// Gives the JS `restore` export the snapshot, parsed when it is JSON (a snapshot of
    /// another format's service is passed as a string).
    fn restore(state: Vec<u8>) -> Result<(), String> {
        let text = String::from_utf8_lossy(&state);
        let json = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => text.into_owned(),
            Err(_) => serde_json::Value::String(text.into_owned()).to_string(),
        };
        run("restore", Some(&json)).map(|_| ())
    }
}

solo_sdk::service!(Runner);
