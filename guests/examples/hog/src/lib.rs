//! hog: allocates memory without bound when called (1 MiB at a time), unless asked
//! `{"mode":"ok"}`.

use serde_json::Value;

struct Hog;

impl solo_sdk::Service for Hog {
    fn handle_call(request: String) -> Result<String, String> {
        let v: Value = serde_json::from_str(&request).unwrap_or(Value::Null);
        if v.get("mode").and_then(Value::as_str) == Some("ok") {
            return Ok("\"ok\"".into());
        }
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

solo_sdk::service!(Hog);
