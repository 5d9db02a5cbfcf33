//! The `solo` object a JavaScript service sees, over the component's host imports, with
//! the JS contract's names and shapes (`log`, `emit`, `now`, `kvGet`, `kvPut`,
//! `kvDelete`, `kvList`, `secret`, `call`, `cast`, `whoami`, `caller`, `verify`), and
//! a global `fetch` with the WHATWG shape (`Headers`, `Response`) over `host.http`. Host
//! calls are synchronous imports here, so the functions the contract makes asynchronous
//! are wrapped in `async` functions by a small prelude, and answer settled promises. A
//! failed host call throws an `Error` with the host's `code`; every function throws
//! while the module's top-level code runs.

use std::sync::atomic::{AtomicBool, Ordering};

use rquickjs::prelude::Opt;
use rquickjs::{Coerced, Ctx, Exception, Function, IntoJs, Object, Value};
use solo_sdk::bindings::solo::service::host;

/// Where the natives wait for the prelude, which removes the global.
const NATIVES: &str = "__soloHost";

const PRELUDE: &str = r#"(() => {
  const h = globalThis.__soloHost;
  delete globalThis.__soloHost;
  const ready = h.ready;
  const now = (f) => (...args) => { ready(); return f(...args); };
  const later = (f) => now(async (...args) => f(...args));
  const solo = {
    log: now(h.log), emit: now(h.emit), now: now(h.now), cast: now(h.cast),
    whoami: now(h.whoami), caller: now(h.caller),
    kvGet: later(h.kvGet), kvPut: later(h.kvPut), kvDelete: later(h.kvDelete),
    kvList: later(h.kvList), secret: later(h.secret), call: later(h.call),
    verify: later(h.verify),
  };
  Object.defineProperty(globalThis, "solo", {
    value: Object.freeze(solo), writable: false, configurable: false, enumerable: false,
  });

  class Headers {
    #m = new Map();
    constructor(init) {
      if (init == null) return;
      const pairs = init instanceof Headers ? [...init]
        : Array.isArray(init) ? init
        : typeof init[Symbol.iterator] === "function" ? [...init]
        : Object.entries(init);
      for (const [k, v] of pairs) this.append(k, v);
    }
    append(k, v) {
      k = String(k).toLowerCase(); v = String(v);
      const old = this.#m.get(k);
      this.#m.set(k, old === undefined ? v : old + ", " + v);
    }
    set(k, v) { this.#m.set(String(k).toLowerCase(), String(v)); }
    get(k) { const v = this.#m.get(String(k).toLowerCase()); return v === undefined ? null : v; }
    has(k) { return this.#m.has(String(k).toLowerCase()); }
    delete(k) { this.#m.delete(String(k).toLowerCase()); }
    forEach(f, self) { for (const [k, v] of this) f.call(self, v, k, this); }
    *entries() { yield* [...this.#m.entries()].sort((a, b) => a[0] < b[0] ? -1 : 1); }
    keys() { return [...this.entries()].map((e) => e[0])[Symbol.iterator](); }
    values() { return [...this.entries()].map((e) => e[1])[Symbol.iterator](); }
    [Symbol.iterator]() { return this.entries(); }
  }

  class Response {
    #raw; #used = false;
    constructor(raw, requested) {
      this.#raw = raw;
      this.status = raw.status;
      this.statusText = "";
      this.ok = raw.status >= 200 && raw.status < 300;
      this.headers = new Headers(raw.headers);
      this.url = raw.url;
      this.redirected = raw.url !== requested;
      this.type = "basic";
    }
    get bodyUsed() { return this.#used; }
    #take() {
      if (this.#used) throw new TypeError("the body of this response was already read");
      this.#used = true;
      return this.#raw;
    }
    async text() { return this.#take().text(); }
    async json() { return JSON.parse(this.#take().text()); }
    async arrayBuffer() { return this.#take().bytes(); }
    async bytes() { return new Uint8Array(this.#take().bytes()); }
  }

  // Bytes cross to the host as a string of char codes 0-255 (QuickJS has no safe way
  // to lend the host an ArrayBuffer's bytes).
  const binary = (u8) => {
    let s = "";
    for (let i = 0; i < u8.length; i += 8192) s += String.fromCharCode.apply(null, u8.subarray(i, i + 8192));
    return { bin: s };
  };
  const bodyOf = (b) => {
    if (b == null) return "";
    if (typeof b === "string") return b;
    if (b instanceof ArrayBuffer) return binary(new Uint8Array(b));
    if (ArrayBuffer.isView(b)) return binary(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    return String(b);
  };

  async function fetch(input, init) {
    ready();
    init = init ?? {};
    const url = typeof input === "string" ? input
      : input && typeof input.url === "string" ? input.url
      : input && typeof input.href === "string" ? input.href : String(input);
    const method = String(init.method ?? (input && input.method) ?? "GET").toUpperCase();
    const headers = [...new Headers(init.headers ?? (input && input.headers))];
    let raw;
    try {
      raw = h.http(method, url, headers, bodyOf(init.body));
    } catch (e) {
      const t = new TypeError(e.message);
      t.code = e.code;
      throw t;
    }
    return new Response(raw, url);
  }

  // `Response` stays private: the runner makes them, not services.
  for (const [name, value] of Object.entries({ fetch, Headers })) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }
})();"#;

/// Whether the module is loading: its top-level code may not use the host API (it runs
/// at compile time too, when the service has no identity yet).
static LOADING: AtomicBool = AtomicBool::new(false);

/// Marks the module as loading (`true`) or loaded.
pub fn set_loading(loading: bool) {
    LOADING.store(loading, Ordering::Relaxed);
}

/// An exception for a failed host call, with the machine-readable `code` attached.
fn thrown(ctx: &Ctx<'_>, e: &solo_sdk::HostError) -> rquickjs::Error {
    match Exception::from_message(ctx.clone(), &e.message) {
        Ok(ex) => {
            let _ = ex.set("code", e.code.as_str());
            ctx.throw(ex.into_value())
        }
        Err(err) => err,
    }
}

fn to_json<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> rquickjs::Result<String> {
    Ok(match ctx.json_stringify(v)? {
        Some(s) => s.to_string()?,
        None => "null".to_string(),
    })
}

fn level(name: &str) -> host::Level {
    match name.to_ascii_lowercase().as_str() {
        "trace" => host::Level::Trace,
        "debug" => host::Level::Debug,
        "warn" | "warning" => host::Level::Warn,
        "error" => host::Level::Error,
        _ => host::Level::Info,
    }
}

/// The token in a call's or cast's options, if any.
fn token(options: &Opt<Object<'_>>) -> Option<String> {
    options
        .0
        .as_ref()
        .and_then(|o| o.get::<_, Option<String>>("token").ok().flatten())
}

/// Installs `solo` in `ctx`'s globals.
pub fn install<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let h = Object::new(ctx.clone())?;
    h.set(
        "ready",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| -> rquickjs::Result<()> {
            if LOADING.load(Ordering::Relaxed) {
                return Err(Exception::throw_message(
                    &ctx,
                    "the solo host API cannot be used while the module loads; use it in init or a handler",
                ));
            }
            Ok(())
        })?,
    )?;
    h.set(
        "log",
        Function::new(
            ctx.clone(),
            |first: Coerced<String>, second: Opt<Coerced<String>>| match second.0 {
                Some(msg) => host::log(level(&first.0), &msg.0),
                None => host::log(host::Level::Info, &first.0),
            },
        )?,
    )?;
    h.set(
        "emit",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, kind: String, payload: Opt<Value<'js>>| -> rquickjs::Result<()> {
                let payload = match payload.0 {
                    Some(v) => to_json(&ctx, v)?,
                    None => "null".into(),
                };
                host::emit(&kind, &payload).map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    #[allow(clippy::cast_precision_loss)]
    h.set(
        "now",
        Function::new(ctx.clone(), || host::now() as f64 / 1e6)?,
    )?;
    h.set(
        "kvGet",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, key: String| -> rquickjs::Result<Value<'js>> {
                // A missing key is `null`, not `undefined`, so it survives JSON.
                match host::kv_get(&key).map_err(|e| thrown(&ctx, &e))? {
                    Some(b) => String::from_utf8_lossy(&b).into_owned().into_js(&ctx),
                    None => Ok(Value::new_null(ctx.clone())),
                }
            },
        )?,
    )?;
    h.set(
        "kvPut",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, key: String, value: Coerced<String>| -> rquickjs::Result<()> {
                host::kv_put(&key, value.0.as_bytes()).map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    h.set(
        "kvDelete",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, key: String| -> rquickjs::Result<()> {
                host::kv_delete(&key).map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    h.set(
        "kvList",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, prefix: Opt<String>| -> rquickjs::Result<Vec<String>> {
                host::kv_list(prefix.0.as_deref().unwrap_or("")).map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    h.set(
        "secret",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, name: String| -> rquickjs::Result<String> {
                host::secret(&name)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    h.set(
        "call",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             target: String,
             request: Value<'js>,
             options: Opt<Object<'js>>|
             -> rquickjs::Result<Value<'js>> {
                let request = to_json(&ctx, request)?;
                let timeout = options
                    .0
                    .as_ref()
                    .and_then(|o| o.get::<_, Option<f64>>("timeoutMs").ok().flatten())
                    .unwrap_or(5000.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let timeout = timeout.clamp(0.0, 3.6e6) as u32;
                let reply = host::call(&target, &request, timeout, token(&options).as_deref())
                    .map_err(|e| thrown(&ctx, &e))?;
                if crate::too_deep(&reply) {
                    return Err(Exception::throw_message(
                        &ctx,
                        &format!(
                            "the reply of {target} is nested deeper than {} levels",
                            crate::MAX_JSON_DEPTH
                        ),
                    ));
                }
                ctx.json_parse(reply)
            },
        )?,
    )?;
    h.set(
        "cast",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             target: String,
             message: Value<'js>,
             options: Opt<Object<'js>>|
             -> rquickjs::Result<()> {
                let message = to_json(&ctx, message)?;
                host::cast(&target, &message, token(&options).as_deref())
                    .map_err(|e| thrown(&ctx, &e))
            },
        )?,
    )?;
    h.set(
        "http",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             method: String,
             url: String,
             headers: Vec<Vec<String>>,
             body: Value<'js>|
             -> rquickjs::Result<Object<'js>> {
                let body = match (body.as_string(), body.as_object()) {
                    (Some(s), _) => s.to_string()?.into_bytes(),
                    (None, Some(o)) => {
                        let bin: String = o.get("bin")?;
                        bin.chars()
                            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                            .collect()
                    }
                    (None, None) => Vec::new(),
                };
                let headers = headers
                    .into_iter()
                    .filter_map(|mut kv| {
                        let v = kv.pop()?;
                        Some((kv.pop()?, v))
                    })
                    .collect();
                let r = host::http(&host::HttpRequest {
                    method,
                    url,
                    headers,
                    body,
                })
                .map_err(|e| thrown(&ctx, &e))?;
                let o = Object::new(ctx.clone())?;
                o.set("status", r.status)?;
                o.set("url", r.url)?;
                let pairs: Vec<Vec<String>> =
                    r.headers.into_iter().map(|(k, v)| vec![k, v]).collect();
                o.set("headers", pairs)?;
                let body = std::rc::Rc::new(r.body);
                let text = std::rc::Rc::clone(&body);
                o.set(
                    "text",
                    Function::new(ctx.clone(), move || {
                        String::from_utf8_lossy(&text).into_owned()
                    })?,
                )?;
                o.set(
                    "bytes",
                    Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
                        rquickjs::ArrayBuffer::new_copy(ctx, body.as_slice())
                    })?,
                )?;
                Ok(o)
            },
        )?,
    )?;
    h.set(
        "whoami",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            let i = host::whoami();
            let o = Object::new(ctx.clone())?;
            o.set("tenant", i.tenant)?;
            o.set("serviceId", i.service_id)?;
            #[allow(clippy::cast_precision_loss)]
            o.set("version", i.version as f64)?;
            Ok::<_, rquickjs::Error>(o)
        })?,
    )?;
    h.set(
        "caller",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| {
            let Some(c) = host::caller() else {
                return Ok(Value::new_null(ctx.clone()));
            };
            let o = Object::new(ctx.clone())?;
            o.set("kind", c.kind)?;
            o.set("tenant", c.tenant)?;
            o.set("serviceId", c.service_id)?;
            o.set("tokenHash", c.token_hash)?;
            Ok::<_, rquickjs::Error>(o.into_value())
        })?,
    )?;
    h.set(
        "verify",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, token: String, resource: String, permission: String| {
                let o = Object::new(ctx.clone())?;
                match host::verify(&token, &resource, &permission) {
                    Ok(()) => o.set("valid", true)?,
                    Err(reason) => {
                        o.set("valid", false)?;
                        o.set("reason", reason)?;
                    }
                }
                Ok::<_, rquickjs::Error>(o)
            },
        )?,
    )?;
    ctx.globals().set(NATIVES, h)?;
    ctx.eval::<(), _>(PRELUDE)
}
