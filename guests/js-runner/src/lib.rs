//! js-runner: QuickJS compiled to a Solo component, so JavaScript runs inside wasmtime
//! (memory limited by wasmtime, CPU by epochs) instead of in the server process.
//!
//! It implements the `js-runner` world of `wit/solo.wit`: the host hands it the
//! service's source through `js-host.source`; `js-module.load` compiles and evaluates
//! the module and names its exports; the handler and state exports run the JS
//! contract's entry points (`init`, `handleCall`, `handleCast`, `snapshot`, `restore`;
//! promises are settled by running QuickJS's job queue) with the `solo` host API of
//! `host.rs`. QuickJS's heap limit sits below the instance's memory limit, and its
//! interrupt handler asks the host whether to stop, so that when the engine stops a
//! script (out of memory, CPU budget spent) or a cast throws, the runner can report it
//! through `js-host.crash` with the JavaScript stack before the host ends the instance.

mod host;

use std::cell::RefCell;

use rquickjs::{
    CatchResultExt, CaughtError, Context, Function, Module, Persistent, Runtime, Value,
};

#[allow(clippy::all, unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "js-runner",
        path: "../../wit",
        with: {
            "solo:service/host@0.1.0": solo_sdk::bindings::solo::service::host,
        },
    });
}

use bindings::exports::solo::service::{handler, js_module, state};
use bindings::solo::service::js_host;

/// The service's runtime, context and exports, kept between messages.
struct Js {
    // Dropped after the context and the exports.
    _rt: Runtime,
    ctx: Context,
    exports: Persistent<rquickjs::Object<'static>>,
}

thread_local! {
    static JS: RefCell<Option<Js>> = const { RefCell::new(None) };
}

/// The deepest JSON the runner parses: QuickJS has no stack limit on WASI, so deeper
/// nesting from a caller would overflow the component's stack inside `JSON.parse` and
/// end the instance. Deeper JSON is refused as not JSON.
pub(crate) const MAX_JSON_DEPTH: usize = 1000;

/// Whether `text` nests arrays and objects deeper than [`MAX_JSON_DEPTH`] (brackets in
/// strings do not count).
pub(crate) fn too_deep(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A JavaScript failure: its message and stack (empty when there is none).
struct Thrown {
    message: String,
    stack: String,
    /// What the engine stopped, if it was the engine and not the script.
    engine: Option<&'static str>,
    /// The argument was refused before the call (not JSON, or nested too deep).
    argument: bool,
}

/// The prefix of the error for an argument that is not JSON (the host answers it as a
/// bad request).
const NOT_JSON: &str = "the argument is not JSON: ";

impl Thrown {
    fn plain(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            stack: String::new(),
            engine: None,
            argument: false,
        }
    }

    fn bad_argument(detail: &str) -> Self {
        Self {
            argument: true,
            ..Self::plain(format!("{NOT_JSON}{detail}"))
        }
    }

    /// The message with the stack under it, as a guest error carries it.
    fn text(&self) -> String {
        if self.stack.is_empty() {
            self.message.clone()
        } else {
            format!("{}\n{}", self.message, self.stack)
        }
    }

    /// Ends the instance through the host when the engine stopped the script; otherwise
    /// gives the error back.
    fn or_crash(self) -> Self {
        if let Some(kind) = self.engine {
            js_host::crash(kind, &self.message, &self.stack);
        }
        self
    }
}

fn caught(e: &CaughtError<'_>) -> Thrown {
    match e {
        CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_default();
            let name: Option<String> = ex.get("name").ok();
            let engine = match (name.as_deref(), message.as_str()) {
                (Some("InternalError"), "interrupted") => Some("cpu_limit"),
                (Some("InternalError"), m) if m.contains("out of memory") => Some("memory_limit"),
                _ => None,
            };
            Thrown {
                message: if message.is_empty() {
                    "an exception without a message".into()
                } else {
                    message
                },
                stack: ex.stack().unwrap_or_default().trim_end().to_string(),
                engine,
                argument: false,
            }
        }
        CaughtError::Value(v) => Thrown::plain(value_text(v)),
        CaughtError::Error(rquickjs::Error::Allocation) => Thrown {
            engine: Some("memory_limit"),
            ..Thrown::plain("out of memory")
        },
        CaughtError::Error(e) => Thrown::plain(e.to_string()),
    }
}

/// A thrown value that is not an `Error`, as text.
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

/// Finds `service:LINE:COL` in a QuickJS stack.
fn position(stack: &str) -> (u32, u32) {
    let Some(at) = stack.find("service:") else {
        return (0, 0);
    };
    let mut parts = stack[at + "service:".len()..].split(|c: char| !c.is_ascii_digit());
    let line = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let column = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (line, column)
}

/// Compiles and evaluates the module once; the names of the functions it exports.
fn load() -> Result<Vec<String>, js_module::LoadError> {
    let failed = |t: Thrown, syntax: bool| {
        let (line, column) = if syntax { position(&t.stack) } else { (0, 0) };
        js_module::LoadError {
            syntax,
            message: t.message,
            stack: t.stack,
            line,
            column,
        }
    };
    let internal = |e: rquickjs::Error| failed(Thrown::plain(e.to_string()), false);
    if let Some(names) = JS.with(|js| js.borrow().as_ref().map(export_names)) {
        return names.map_err(internal);
    }
    let source = js_host::source();
    let rt = Runtime::new().map_err(internal)?;
    rt.set_memory_limit(usize::try_from(js_host::heap_limit()).unwrap_or(usize::MAX));
    rt.set_interrupt_handler(Some(Box::new(js_host::interrupted)));
    let ctx = Context::full(&rt).map_err(internal)?;
    let exports = ctx.with(|ctx| {
        host::install(&ctx)
            .catch(&ctx)
            .map_err(|e| failed(caught(&e), false))?;
        let declared = Module::declare(ctx.clone(), "service", source)
            .catch(&ctx)
            .map_err(|e| {
                let syntax = matches!(&e, CaughtError::Exception(ex)
                    if ex.get::<_, String>("name").is_ok_and(|n| n == "SyntaxError"));
                failed(caught(&e).or_crash(), syntax)
            })?;
        host::set_loading(true);
        let evaluated = declared
            .eval()
            .catch(&ctx)
            .map_err(|e| caught(&e))
            .and_then(|(module, done)| settle(done.into_value()).map(|_| module));
        host::set_loading(false);
        let module = evaluated.map_err(|t| failed(t.or_crash(), false))?;
        let ns = module.namespace().map_err(internal)?;
        Ok::<_, js_module::LoadError>(Persistent::save(&ctx, ns))
    })?;
    let js = Js {
        _rt: rt,
        ctx,
        exports,
    };
    let names = export_names(&js).map_err(internal);
    JS.with(|cell| *cell.borrow_mut() = Some(js));
    names
}

/// The exported functions of a loaded module.
fn export_names(js: &Js) -> rquickjs::Result<Vec<String>> {
    js.ctx.with(|ctx| {
        let ns = js.exports.clone().restore(&ctx)?;
        let mut names = Vec::new();
        for entry in ns.props::<String, Value>() {
            let (name, value) = entry?;
            if value.is_function() {
                names.push(name);
            }
        }
        Ok(names)
    })
}

/// Settles `v` if it is a promise (running the job queue), and gives the value. A
/// promise still pending once the queue is empty can never settle: the host answers
/// every call before it returns, and there are no timers.
///
/// A job that QuickJS stopped (the CPU budget spent) leaves its promise pending too; the
/// job's exception is gone by then, so that report carries no JS stack.
fn settle(v: Value<'_>) -> Result<Value<'_>, Thrown> {
    let Some(p) = v.as_promise() else {
        return Ok(v);
    };
    match p.finish::<Value>() {
        Err(rquickjs::Error::WouldBlock) if js_host::interrupted() => Err(Thrown {
            engine: Some("cpu_limit"),
            ..Thrown::plain("interrupted")
        }),
        Err(rquickjs::Error::WouldBlock) => Err(Thrown::plain(
            "the promise can never settle: nothing is left that could settle it",
        )),
        other => other.catch(v.ctx()).map_err(|e| caught(&e)),
    }
}

/// Calls export `name` with `arg` (JSON text) and answers its result as JSON text
/// (`None`: no such export). A request that is not JSON is refused before the call.
fn run(name: &str, arg: Option<&str>) -> Result<Option<String>, Thrown> {
    JS.with(|js| {
        let js = js.borrow();
        let js = js
            .as_ref()
            .ok_or_else(|| Thrown::plain("the service was not initialized"))?;
        js.ctx.with(|ctx| {
            let exports = js
                .exports
                .clone()
                .restore(&ctx)
                .map_err(|e| Thrown::plain(e.to_string()))?;
            let f: Option<Function> = exports
                .get(name)
                .map_err(|e| Thrown::plain(e.to_string()))?;
            let Some(f) = f else { return Ok(None) };
            let arg = match arg {
                Some(text) if too_deep(text) => {
                    return Err(Thrown::bad_argument(&format!(
                        "nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
                Some(text) => Some(ctx.json_parse(text).catch(&ctx).map_err(|e| {
                    let t = caught(&e);
                    if t.engine.is_some() {
                        t.or_crash()
                    } else {
                        Thrown::bad_argument(&t.message)
                    }
                })?),
                None => None,
            };
            let out = match arg {
                Some(v) => f.call::<_, Value>((v,)),
                None => f.call::<_, Value>(()),
            }
            .catch(&ctx)
            .map_err(|e| caught(&e))
            .and_then(settle)
            .and_then(|v| {
                ctx.json_stringify(v)
                    .and_then(|s| s.map(|s| s.to_string()).transpose())
                    .catch(&ctx)
                    .map_err(|e| caught(&e))
            })
            .map_err(Thrown::or_crash)?;
            Ok(Some(out.unwrap_or_else(|| "null".into())))
        })
    })
}

struct Runner;

impl js_module::Guest for Runner {
    fn load() -> Result<Vec<String>, js_module::LoadError> {
        load()
    }
}

impl handler::Guest for Runner {
    fn init(config: String) -> Result<(), String> {
        load().map_err(|e| {
            if e.stack.is_empty() {
                e.message
            } else {
                format!("{}\n{}", e.message, e.stack)
            }
        })?;
        run("init", Some(&config)).map(|_| ()).map_err(|t| t.text())
    }

    fn handle_call(request: String) -> Result<String, String> {
        run("handleCall", Some(&request))
            .map_err(|t| t.text())?
            .ok_or_else(|| "the service exports no handleCall".into())
    }

    /// An exception in a cast has nobody to go back to: it ends the instance. A message
    /// refused before the call (nested too deep) is logged and dropped.
    fn handle_cast(message: String) {
        match run("handleCast", Some(&message)) {
            Ok(_) => {}
            Err(t) if t.argument => solo_sdk::log(
                solo_sdk::Level::Warn,
                &format!("a cast was dropped: {}", t.message),
            ),
            Err(t) => js_host::crash(
                "exception",
                &format!("uncaught exception: {}", t.message),
                &t.stack,
            ),
        }
    }
}

impl state::Guest for Runner {
    /// The JS `snapshot` export's result as JSON text; none without the export, or when
    /// it answers `null` or `undefined`. An exception ends the instance (nobody can take
    /// a failed snapshot).
    fn snapshot() -> Option<Vec<u8>> {
        match run("snapshot", None) {
            Ok(Some(json)) if json != "null" => Some(json.into_bytes()),
            Ok(_) => None,
            Err(t) => {
                js_host::crash(
                    "exception",
                    &format!("uncaught exception in snapshot: {}", t.message),
                    &t.stack,
                );
                None
            }
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
        run("restore", Some(&json))
            .map(|_| ())
            .map_err(|t| t.text())
    }
}

bindings::export!(Runner with_types_in bindings);
