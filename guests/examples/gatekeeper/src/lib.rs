//! gatekeeper: serves only callers that present a capability token with `call` on a
//! named resource (the deploy config's `"resource"`, by default this service itself).
//!
//! Request: `{"token": "solo_...", "name": "..."}`. The answer greets the name and says
//! who asked (as the kernel, not the request, tells it); a missing or refused token is
//! an error naming the reason. `"repeat": N` verifies the token N times (at most a
//! million), which the capability benchmark uses to time `verify` from inside a guest.

use std::sync::OnceLock;

use serde_json::{Value, json};

struct Gatekeeper;

/// The resource a caller's token must allow `call` on, from the config.
static GUARDED: OnceLock<String> = OnceLock::new();

fn guarded() -> String {
    GUARDED
        .get()
        .cloned()
        .unwrap_or_else(|| format!("service:{}", solo_sdk::whoami().service_id))
}

impl solo_sdk::Service for Gatekeeper {
    fn init(config: String) -> Result<(), String> {
        let config: Value = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        if let Some(r) = config.get("resource").and_then(Value::as_str) {
            let _ = GUARDED.set(r.to_string());
        }
        Ok(())
    }

    fn handle_call(request: String) -> Result<String, String> {
        let request: Value = serde_json::from_str(&request).map_err(|e| e.to_string())?;
        let Some(token) = request.get("token").and_then(Value::as_str) else {
            return Err("refused: present a capability token as \"token\"".into());
        };
        let resource = guarded();
        let repeat = request.get("repeat").and_then(Value::as_u64).unwrap_or(1);
        for _ in 0..repeat.clamp(1, 1_000_000) {
            solo_sdk::verify(token, &resource, "call")
                .map_err(|reason| format!("refused: the token was refused ({reason})"))?;
        }
        let caller = solo_sdk::caller()
            .map(|c| json!({"kind": c.kind, "tenant": c.tenant, "service_id": c.service_id}));
        let name = request.get("name").and_then(Value::as_str).unwrap_or("you");
        Ok(json!({"hello": name, "guarded": resource, "caller": caller}).to_string())
    }
}

solo_sdk::service!(Gatekeeper);
