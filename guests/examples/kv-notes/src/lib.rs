//! kv-notes: notes kept in the service's durable key-value store.
//!
//! Calls: `{"op":"put","key":K,"value":V}`, `{"op":"get","key":K}`,
//! `{"op":"delete","key":K}`, `{"op":"list","prefix":P}`.

use serde_json::{Value, json};
use solo_sdk::kv;

struct Notes;

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field {name:?}"))
}

fn host_err(e: solo_sdk::HostError) -> String {
    format!("{}: {}", e.code, e.message)
}

impl solo_sdk::Service for Notes {
    fn handle_call(request: String) -> Result<String, String> {
        let v: Value = serde_json::from_str(&request).map_err(|e| format!("bad request: {e}"))?;
        match v.get("op").and_then(Value::as_str) {
            Some("put") => {
                kv::put(field(&v, "key")?, field(&v, "value")?.as_bytes()).map_err(host_err)?;
                Ok(json!({ "ok": true }).to_string())
            }
            Some("get") => {
                let value = kv::get(field(&v, "key")?).map_err(host_err)?;
                let value = value.map(|b| String::from_utf8_lossy(&b).into_owned());
                Ok(json!({ "value": value }).to_string())
            }
            Some("delete") => {
                kv::delete(field(&v, "key")?).map_err(host_err)?;
                Ok(json!({ "ok": true }).to_string())
            }
            Some("list") => {
                let prefix = v.get("prefix").and_then(Value::as_str).unwrap_or("");
                let keys = kv::list(prefix).map_err(host_err)?;
                Ok(json!({ "keys": keys }).to_string())
            }
            other => Err(format!(
                "unknown op {other:?}; use put, get, delete or list"
            )),
        }
    }
}

solo_sdk::service!(Notes);
