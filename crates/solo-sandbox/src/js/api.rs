//! The `solo` object a JavaScript service sees: the host API over [`HostApi`], each
//! function checking its arguments and turning a failed host call into an exception
//! with the host's `code`. The functions that wait return promises.

use std::sync::Arc;
use std::time::Duration;

use rquickjs::prelude::{Async, Opt};
use rquickjs::{Coerced, Ctx, Exception, Function, IntoJs, Object, Value};

use crate::{HostApi, HostError, Level};

pub(super) const HOST_FUNCTIONS: &[&str] = &[
    "log", "emit", "now", "kvGet", "kvPut", "kvDelete", "kvList", "secret", "call", "cast",
    "whoami", "caller", "verify",
];

/// An exception for a failed host call, with the machine-readable `code` attached.
fn host_exception(ctx: &Ctx<'_>, e: &HostError) -> rquickjs::Error {
    match Exception::from_message(ctx.clone(), &e.message) {
        Ok(ex) => {
            let _ = ex.set("code", e.code.as_str());
            ctx.throw(ex.into_value())
        }
        Err(err) => err,
    }
}

pub(super) fn to_json<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> rquickjs::Result<String> {
    Ok(match ctx.json_stringify(v)? {
        Some(s) => s.to_string()?,
        None => "null".to_string(),
    })
}

/// Defines the `solo` global over `host`.
pub(super) fn install_host<'js>(ctx: &Ctx<'js>, host: Arc<dyn HostApi>) -> rquickjs::Result<()> {
    let solo = Object::new(ctx.clone())?;

    let h = Arc::clone(&host);
    solo.set(
        "log",
        Function::new(
            ctx.clone(),
            move |first: Coerced<String>, second: Opt<Coerced<String>>| match second.0 {
                Some(msg) => h.log(Level::parse_lenient(&first.0), &msg.0),
                None => h.log(Level::Info, &first.0),
            },
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "emit",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, kind: String, payload: Opt<Value<'js>>| -> rquickjs::Result<()> {
                let payload = match payload.0 {
                    Some(v) => to_json(&ctx, v)?,
                    None => "null".into(),
                };
                h.emit(&kind, &payload)
                    .map_err(|e| host_exception(&ctx, &e))
            },
        )?,
    )?;

    let h = Arc::clone(&host);
    #[allow(clippy::cast_precision_loss)]
    solo.set(
        "now",
        Function::new(ctx.clone(), move || h.now_ns() as f64 / 1e6)?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "kvGet",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, key: String| {
                let fut = h.kv_get(&key);
                async move {
                    match fut.await {
                        // A missing key is `null`, not `undefined`, so it survives JSON.
                        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned().into_js(&ctx),
                        Ok(None) => Ok(Value::new_null(ctx.clone())),
                        Err(e) => Err(host_exception(&ctx, &e)),
                    }
                }
            }),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "kvPut",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, key: String, value: Coerced<String>| {
                let fut = h.kv_put(&key, value.0.into_bytes());
                async move { fut.await.map_err(|e| host_exception(&ctx, &e)) }
            }),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "kvDelete",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, key: String| {
                let fut = h.kv_delete(&key);
                async move { fut.await.map_err(|e| host_exception(&ctx, &e)) }
            }),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "kvList",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, prefix: Opt<String>| {
                let fut = h.kv_list(prefix.0.as_deref().unwrap_or(""));
                async move { fut.await.map_err(|e| host_exception(&ctx, &e)) }
            }),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "secret",
        Function::new(
            ctx.clone(),
            Async(move |ctx: Ctx<'js>, name: String| {
                let fut = h.secret(&name);
                async move {
                    match fut.await {
                        Ok(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
                        Err(e) => Err(host_exception(&ctx, &e)),
                    }
                }
            }),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "call",
        Function::new(
            ctx.clone(),
            Async(
                move |ctx: Ctx<'js>,
                      target: String,
                      request: Value<'js>,
                      options: Opt<Object<'js>>| {
                    let prepared = to_json(&ctx, request).map(|req| {
                        let timeout = options
                            .0
                            .as_ref()
                            .and_then(|o| o.get::<_, Option<f64>>("timeoutMs").ok().flatten())
                            .unwrap_or(5000.0);
                        let token = options
                            .0
                            .as_ref()
                            .and_then(|o| o.get::<_, Option<String>>("token").ok().flatten());
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let timeout = Duration::from_millis(timeout.clamp(0.0, 3.6e6) as u64);
                        h.call(&target, req, timeout, token)
                    });
                    async move {
                        let reply = prepared?.await.map_err(|e| host_exception(&ctx, &e))?;
                        ctx.json_parse(reply)
                    }
                },
            ),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "whoami",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            let i = h.whoami();
            let v = serde_json::json!({
                "tenant": i.tenant, "serviceId": i.service_id, "version": i.version,
            });
            ctx.json_parse(v.to_string())
        })?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "caller",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            let v = h.caller().map_or(serde_json::Value::Null, |c| {
                serde_json::json!({
                    "kind": c.kind, "tenant": c.tenant,
                    "serviceId": c.service_id, "tokenHash": c.token_hash,
                })
            });
            ctx.json_parse(v.to_string())
        })?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "verify",
        Function::new(
            ctx.clone(),
            Async(
                move |ctx: Ctx<'js>, token: String, resource: String, permission: String| {
                    let pending = h.verify(&token, &resource, &permission);
                    async move {
                        let v = match pending.await {
                            Ok(()) => serde_json::json!({ "valid": true }),
                            Err(reason) => serde_json::json!({ "valid": false, "reason": reason }),
                        };
                        ctx.json_parse(v.to_string())
                    }
                },
            ),
        )?,
    )?;

    let h = Arc::clone(&host);
    solo.set(
        "cast",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  target: String,
                  message: Value<'js>,
                  options: Opt<Object<'js>>|
                  -> rquickjs::Result<()> {
                let message = to_json(&ctx, message)?;
                let token = options
                    .0
                    .as_ref()
                    .and_then(|o| o.get::<_, Option<String>>("token").ok().flatten());
                h.cast(&target, message, token)
                    .map_err(|e| host_exception(&ctx, &e))
            },
        )?,
    )?;

    ctx.globals().set("solo", solo)
}
