//! spinner: never returns from a call (an infinite loop), unless asked `{"mode":"ok"}`
//! or `{"mode":"work","n":N}` (N iterations of arithmetic, then replies the result).

use serde_json::Value;

struct Spinner;

fn work(n: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(0x0100_0000_01b3);
    }
    x
}

impl solo_sdk::Service for Spinner {
    fn handle_call(request: String) -> Result<String, String> {
        let v: Value = serde_json::from_str(&request).unwrap_or(Value::Null);
        match v.get("mode").and_then(Value::as_str) {
            Some("ok") => return Ok("\"ok\"".into()),
            Some("work") => {
                let n = v.get("n").and_then(Value::as_u64).unwrap_or(1_000_000);
                return Ok(work(n).to_string());
            }
            _ => {}
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

solo_sdk::service!(Spinner);
