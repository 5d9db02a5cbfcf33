//! counter: a number that survives hot swaps and restarts through snapshot/restore.
//!
//! Calls: `{"op":"inc","by":N}` (by defaults to 1) and `{"op":"get"}`, both replying
//! `{"value":N}`. A cast `{"op":"inc"}` increments without a reply. The deploy config
//! `{"start":N}` sets the initial value.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};

static VALUE: AtomicI64 = AtomicI64::new(0);

struct Counter;

fn apply(message: &str) -> Result<i64, String> {
    let v: Value = serde_json::from_str(message).map_err(|e| format!("bad request: {e}"))?;
    match v.get("op").and_then(Value::as_str) {
        Some("inc") => {
            let by = v.get("by").and_then(Value::as_i64).unwrap_or(1);
            Ok(VALUE.fetch_add(by, Ordering::SeqCst) + by)
        }
        Some("get") => Ok(VALUE.load(Ordering::SeqCst)),
        other => Err(format!("unknown op {other:?}; use inc or get")),
    }
}

impl solo_sdk::Service for Counter {
    fn init(config: String) -> Result<(), String> {
        let v: Value = serde_json::from_str(&config).unwrap_or(Value::Null);
        VALUE.store(
            v.get("start").and_then(Value::as_i64).unwrap_or(0),
            Ordering::SeqCst,
        );
        Ok(())
    }

    fn handle_call(request: String) -> Result<String, String> {
        apply(&request).map(|value| json!({ "value": value }).to_string())
    }

    fn handle_cast(message: String) {
        if let Err(e) = apply(&message) {
            solo_sdk::log(solo_sdk::Level::Warn, &e);
        }
    }

    fn snapshot() -> Option<Vec<u8>> {
        Some(VALUE.load(Ordering::SeqCst).to_string().into_bytes())
    }

    fn restore(state: Vec<u8>) -> Result<(), String> {
        let text = String::from_utf8(state).map_err(|_| "snapshot is not UTF-8".to_string())?;
        let value = text
            .parse()
            .map_err(|e| format!("bad snapshot {text:?}: {e}"))?;
        VALUE.store(value, Ordering::SeqCst);
        Ok(())
    }
}

solo_sdk::service!(Counter);
