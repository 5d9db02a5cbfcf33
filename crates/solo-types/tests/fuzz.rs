//! Fuzzing every REST body type and its conversion into an operation's input: any JSON
//! (shaped like the bodies, with their field names, or not) and any bytes give a value
//! or an error, never a panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::Value;
use solo_types::api::{
    AttenuateBody, ConfigBody, DeployBody, DeployRequest, GrantBody, GrantRequest, ListFilter,
    ListParams, RegisterRequest, RevokeBody, SecretBody, ShutdownBody, SwapBody, VerifyBody,
};

/// The field names of the bodies, so that generated objects reach past the parser.
const FIELDS: &[&str] = &[
    "service_id",
    "code",
    "code_base64",
    "format",
    "config",
    "restart",
    "max_restarts",
    "max_seconds",
    "memory_mb",
    "cpu_ms_per_message",
    "mailbox",
    "startup_timeout_ms",
    "message_timeout_ms",
    "secrets",
    "tool",
    "name",
    "description",
    "input_schema",
    "dry_run",
    "mode",
    "rollback_window_ms",
    "resource",
    "permissions",
    "ttl_seconds",
    "token",
    "permission",
    "value",
    "key",
    "limit",
    "offset",
    "state",
    "version",
    "metadata",
    "grace_period_ms",
    "service_name",
];

/// Values the conversions look for, among arbitrary ones.
const WORDS: &[&str] = &[
    "js",
    "wasm",
    "swap",
    "replace",
    "permanent",
    "transient",
    "temporary",
    "kernel",
    "service:a",
    "secret:x",
    "events",
    "*",
    "call",
    "deploy",
    "kill",
    "running",
    "AGFzbQ==",
    "AGFzbQEAAAA=",
    "a",
    "-",
    "export function handleCall(r) { return r; }",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS).prop_map(Value::from),
        "[a-zA-Z0-9_:.*+/=-]{0,40}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(FIELDS).prop_map(String::from),
                    any::<String>()
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of the bodies' fields.
fn body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS), json(), 0..10)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// Parses `v` as every body type and converts what parses.
fn every_body(v: &Value) {
    if let Ok(b) = serde_json::from_value::<DeployBody>(v.clone()) {
        let _ = DeployRequest::try_from(b);
    }
    if let Ok(b) = serde_json::from_value::<SwapBody>(v.clone()) {
        let _ = b.clone().into_request("a");
        let _ = b.into_request("../x");
    }
    if let Ok(b) = serde_json::from_value::<SecretBody>(v.clone()) {
        let _ = b.bytes();
    }
    if let Ok(b) = serde_json::from_value::<GrantBody>(v.clone()) {
        let _ = GrantRequest::try_from(b);
    }
    if let Ok(b) = serde_json::from_value::<AttenuateBody>(v.clone()) {
        let _ = b.narrowing();
    }
    if let Ok(b) = serde_json::from_value::<ListParams>(v.clone()) {
        let _ = ListFilter::try_from(b);
    }
    if let Ok(b) = serde_json::from_value::<ConfigBody>(v.clone()) {
        let _ = b.value_text();
    }
    let _ = serde_json::from_value::<VerifyBody>(v.clone());
    let _ = serde_json::from_value::<RevokeBody>(v.clone());
    let _ = serde_json::from_value::<RegisterRequest>(v.clone());
    let _ = serde_json::from_value::<ShutdownBody>(v.clone());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(solo_types::fuzz::cases()))]

    #[test]
    fn bodies_shaped_like_requests_never_panic(v in body()) {
        every_body(&v);
    }

    #[test]
    fn any_json_never_panics(v in json()) {
        every_body(&v);
    }

    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            every_body(&v);
        }
        let _ = serde_json::from_slice::<DeployBody>(&bytes);
        let _ = serde_json::from_slice::<SwapBody>(&bytes);
    }
}
