//! spinner: never returns from a call (an infinite loop), unless asked `{"mode":"ok"}`.

use serde_json::Value;

struct Spinner;

impl solo_sdk::Service for Spinner {
    fn handle_call(request: String) -> Result<String, String> {
        let v: Value = serde_json::from_str(&request).unwrap_or(Value::Null);
        if v.get("mode").and_then(Value::as_str) == Some("ok") {
            return Ok("\"ok\"".into());
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

solo_sdk::service!(Spinner);
