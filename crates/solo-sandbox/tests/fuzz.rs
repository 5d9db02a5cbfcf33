//! Fuzzing the JSON bridge into guests: any JSON a caller may send crosses into a
//! JavaScript guest and back unchanged (QuickJS parses it into values, the echo returns
//! them, the host stringifies them), and into a component as the same text; any text
//! that is not JSON is refused as an error the instance survives. Never a panic.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{Format, Instance, Limits, Sandbox, SandboxConfig};

/// JSON without floats and with integers JavaScript holds exactly, so that a round trip
/// through a JS number must give back the same value.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "__proto__",
            "constructor",
            "toString",
            "",
            "\u{0}",
            "\u{2028}"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    any::<String>(),
                    prop::sample::select(vec!["__proto__", "0", "1", "length", "constructor"])
                        .prop_map(String::from),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

async fn echo(sandbox: &Arc<Sandbox>, format: Format) -> Box<dyn Instance> {
    let code: Arc<[u8]> = match format {
        Format::Wasm => solo_guests::wasm("echo").into(),
        Format::Js => solo_guests::js("echo").into_bytes().into(),
    };
    let artifact = sandbox.compile(format, code).await.unwrap();
    let limits = Limits {
        memory_bytes: 32 << 20,
        cpu_per_message: Duration::from_millis(500),
        max_reply_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut inst = sandbox
        .instantiate(&artifact, limits, Arc::new(MemoryHost::new()))
        .await
        .unwrap();
    inst.init("{}").await.unwrap();
    inst
}

#[test]
fn json_crosses_into_guests_and_back_unchanged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let js = RefCell::new(rt.block_on(echo(&sandbox, Format::Js)));
    let wasm = RefCell::new(rt.block_on(echo(&sandbox, Format::Wasm)));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(
        solo_types::fuzz::cases() / 2,
    ));
    runner
        .run(&json(), |v| {
            let text = v.to_string();
            for (name, inst) in [("js", &js), ("wasm", &wasm)] {
                let reply = rt
                    .block_on(inst.borrow_mut().call(&text))
                    .map_err(|e| TestCaseError::fail(format!("{name}: {text}: {e:?}")))?;
                let back: Value = serde_json::from_str(&reply)
                    .map_err(|e| TestCaseError::fail(format!("{name}: {reply}: {e}")))?;
                prop_assert_eq!(&back, &v, "{}", name);
            }
            Ok(())
        })
        .unwrap();

    // Text that is not JSON is an error, and the instance serves the next call.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(
        solo_types::fuzz::cases() / 4,
    ));
    runner
        .run(&any::<String>(), |text| {
            if serde_json::from_str::<Value>(&text).is_err() {
                let mut js = js.borrow_mut();
                prop_assert!(rt.block_on(js.call(&text)).is_err());
                prop_assert_eq!(rt.block_on(js.call("[1]")).unwrap(), "[1]");
            }
            Ok(())
        })
        .unwrap();
}
