//! Fuzzing the protobuf side: any bytes decoded as any message, and requests built from
//! arbitrary field values, converted into the operations' inputs (and answers into the
//! client's values) give a value or an error, never a panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use prost::Message;
use solo_proto::convert as cv;
use solo_proto::v1 as pb;
use solo_types::api;

/// Decodes `bytes` as `$ty` and converts what decodes with `$conv`.
macro_rules! decode_and_convert {
    ($bytes:expr, $($ty:ty => $conv:expr),+ $(,)?) => {
        $(
            if let Ok(m) = <$ty>::decode($bytes) {
                let _ = $conv(m);
            }
        )+
    };
}

fn every_message(bytes: &[u8]) {
    decode_and_convert!(bytes,
        pb::DeployRequest => api::DeployRequest::try_from,
        pb::HotSwapRequest => api::SwapRequest::try_from,
        pb::GrantCapabilityRequest => api::GrantRequest::try_from,
        pb::AttenuateCapabilityRequest => cv::decode_attenuate,
        pb::VerifyCapabilityRequest => cv::decode_verify,
        pb::CallRequest => cv::decode_call,
        pb::KillRequest => cv::decode_kill,
        pb::ListRequest => api::ListFilter::try_from,
        pb::LogsRequest => cv::LogsQuery::try_from,
        pb::WatchRequest => api::WatchRequest::try_from,
        pb::QueryEventsRequest => solo_types::query::EventQuery::try_from,
        pb::RegisterServiceRequest => api::RegisterRequest::from,
        // Answers, as a client decodes them from a server.
        pb::DeployResponse => api::Deployed::try_from,
        pb::StatusResponse => solo_types::ServiceStatus::try_from,
        pb::ListResponse => api::ServiceList::try_from,
        pb::Event => solo_types::Event::try_from,
        pb::QueryEventsResponse => solo_types::query::EventPage::try_from,
        pb::GrantCapabilityResponse => api::Granted::try_from,
        pb::VerifyCapabilityResponse => api::Verification::try_from,
        pb::SystemTreeResponse => api::TreeNode::try_from,
        pb::WhoAmIResponse => api::Identity::try_from,
        pb::ListToolsResponse => api::ServiceTools::try_from,
        pb::DiscoveredService => api::Discovered::try_from,
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "a",
            "echo",
            "kernel",
            "service:a",
            "*",
            "call",
            "deploy",
            "js",
            "wasm",
            "swap",
            "replace",
            "permanent",
            "{}",
            "null",
            "[1,2]",
            "{\"a\":1}",
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9_:.*{}\\[\\]\",-]{0,40}",
        any::<String>(),
    ]
}

fn deploy() -> impl Strategy<Value = pb::DeployRequest> {
    (
        (
            text(),
            text(),
            -1i32..5,
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        (text(), text(), any::<u32>(), any::<u32>(), any::<u32>()),
        (
            prop::collection::vec(text(), 0..3),
            proptest::option::of((text(), text(), text())),
        ),
    )
        .prop_map(
            |((id, code, format, bytes), (config, restart, a, b, c), (secrets, tool))| {
                pb::DeployRequest {
                    service_id: id,
                    code,
                    format,
                    code_bytes: bytes,
                    config_json: config,
                    restart,
                    max_restarts: a,
                    max_seconds: b,
                    memory_mb: c,
                    cpu_ms_per_message: a,
                    mailbox: b,
                    secrets,
                    tool: tool.map(|(name, description, schema)| pb::ToolSpec {
                        name,
                        description,
                        input_schema_json: schema,
                    }),
                    ..pb::DeployRequest::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(solo_types::fuzz::cases()))]

    #[test]
    fn any_bytes_as_any_message_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        every_message(&bytes);
    }

    #[test]
    fn arbitrary_deploys_convert_or_are_refused(d in deploy()) {
        let _ = api::DeployRequest::try_from(d.clone());
        // And the same fields as a swap.
        let swap = pb::HotSwapRequest {
            service_id: d.service_id,
            code: d.code,
            format: d.format,
            code_bytes: d.code_bytes,
            mode: d.restart,
            rollback_window_ms: d.max_restarts,
        };
        let _ = api::SwapRequest::try_from(swap);
    }

    #[test]
    fn arbitrary_capability_requests_convert_or_are_refused(
        token in text(), resource in text(), perms in prop::collection::vec(text(), 0..4),
        ttl in any::<i64>(),
    ) {
        let _ = api::GrantRequest::try_from(pb::GrantCapabilityRequest {
            resource: resource.clone(),
            permissions: perms.clone(),
            ttl_seconds: ttl,
        });
        let _ = cv::decode_attenuate(pb::AttenuateCapabilityRequest {
            token: token.clone(),
            resource: resource.clone(),
            permissions: perms.clone(),
            ttl_seconds: ttl,
        });
        let _ = cv::decode_verify(pb::VerifyCapabilityRequest {
            token,
            resource,
            permission: perms.first().cloned().unwrap_or_default(),
        });
    }

    #[test]
    fn arbitrary_queries_convert_or_are_refused(
        ids in (any::<u64>(), any::<u64>()), names in (text(), text(), text()),
        ts in (any::<i64>(), any::<i64>()), limit in any::<u32>(), desc in any::<bool>(),
    ) {
        let _ = solo_types::query::EventQuery::try_from(pb::QueryEventsRequest {
            after_id: ids.0,
            before_id: ids.1,
            tenant: names.0.clone(),
            service_id: names.1.clone(),
            kind: names.2.clone(),
            since_ts: ts.0,
            until_ts: ts.1,
            limit,
            descending: desc,
        });
        let _ = api::WatchRequest::try_from(pb::WatchRequest {
            service_id: names.1,
            include_logs: desc,
            after_id: ids.0,
            kind: names.2,
            tenant: names.0,
        });
    }
}
