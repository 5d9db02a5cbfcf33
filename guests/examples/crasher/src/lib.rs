//! crasher: misbehaves on demand, to exercise crash handling.
//!
//! Calls `{"mode": M}` where M is `ok` (replies `"ok"`), `error` (a service error),
//! `panic` (a Rust panic: the instance traps), `trap` (`unreachable`), `recurse`
//! (unbounded recursion: stack overflow), `bad-utf8` (a reply that is not UTF-8),
//! `big` (a reply of `size` bytes, default 2 MiB), `not-json` (a reply that is text but
//! not JSON), `log` (logs `lines` lines, then panics), `sleep` (blocks an hour in a WASI
//! sleep, using no CPU). A cast `{"mode":"panic"}` panics too. Config `{"fail_init": true}` makes
//! `init` fail; `{"panic_init": true}` makes it panic.

use serde_json::Value;

struct Crasher;

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let x = [depth; 64];
    std::hint::black_box(&x);
    recurse(depth + 1) + x[3]
}

fn mode(message: &str) -> (String, Value) {
    let v: Value = serde_json::from_str(message).unwrap_or(Value::Null);
    let m = v
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("ok")
        .to_string();
    (m, v)
}

impl solo_sdk::Service for Crasher {
    fn init(config: String) -> Result<(), String> {
        let v: Value = serde_json::from_str(&config).unwrap_or(Value::Null);
        if v.get("panic_init").and_then(Value::as_bool) == Some(true) {
            panic!("asked to panic in init");
        }
        if v.get("fail_init").and_then(Value::as_bool) == Some(true) {
            return Err("asked to fail in init".into());
        }
        Ok(())
    }

    fn handle_call(request: String) -> Result<String, String> {
        let (m, v) = mode(&request);
        match m.as_str() {
            "ok" => Ok("\"ok\"".into()),
            "error" => Err("asked to fail".into()),
            "panic" => panic!("asked to panic"),
            // Blocks in the host (a WASI sleep): no CPU used, so only the message's
            // wall-clock deadline ends it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok("\"woke\"".into())
            }
            "trap" => {
                #[cfg(target_family = "wasm")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_family = "wasm"))]
                std::process::abort();
            }
            "recurse" => Ok(recurse(0).to_string()),
            // SAFETY: deliberately invalid, to test the host's checks on replies.
            #[allow(unsafe_code)]
            "bad-utf8" => Ok(unsafe { String::from_utf8_unchecked(vec![b'"', 0xff, 0xfe, b'"']) }),
            "not-json" => Ok("this is not JSON".into()),
            "big" => {
                let size = v.get("size").and_then(Value::as_u64).unwrap_or(2 << 20);
                Ok(format!(
                    "\"{}\"",
                    "x".repeat(usize::try_from(size).unwrap_or(0))
                ))
            }
            "log" => {
                let lines = v.get("lines").and_then(Value::as_u64).unwrap_or(30);
                for i in 0..lines {
                    solo_sdk::log(solo_sdk::Level::Info, &format!("line {i}"));
                }
                panic!("asked to panic after logging");
            }
            other => Err(format!("unknown mode {other}")),
        }
    }

    fn handle_cast(message: String) {
        if mode(&message).0 == "panic" {
            panic!("asked to panic in a cast");
        }
    }
}

solo_sdk::service!(Crasher);
