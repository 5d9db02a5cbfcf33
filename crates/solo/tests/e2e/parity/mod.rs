//! REST and gRPC are two codecs of one operation table: every operation through both
//! faces gives the same answer (decoded into the same `solo_types::api` type) and the
//! same refusal (code and reason), and a flood is shed on both.

use futures::StreamExt;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use solo_client::Solo;
use solo_types::api::*;
use solo_types::{Code, ServiceId};

use crate::harness::{Rest, Server};

mod others;
mod services;

/// The HTTP status each code maps to (the gateway's table, from outside).
pub(super) fn http_of(f: &Failure) -> u16 {
    match (f.code, f.reason.as_str()) {
        (_, "body_too_large") => 413,
        (Code::InvalidArgument, _) => 400,
        (Code::Unauthenticated, _) => 401,
        (Code::PermissionDenied, _) => 403,
        (Code::NotFound, _) => 404,
        (Code::AlreadyExists | Code::FailedPrecondition, _) => 409,
        (Code::ResourceExhausted, _) => 429,
        (Code::DeadlineExceeded, _) => 504,
        (Code::Unavailable, _) => 503,
        (Code::DataLoss | Code::Internal, _) => 500,
    }
}

/// The two faces as one tenant (or admin) sees them.
pub(super) struct Faces {
    pub(super) grpc: Solo,
    pub(super) rest: Rest,
}

/// What differs between two answers to the same question asked twice: ids of the
/// events each wrote, clocks, tokens and their hashes.
const VOLATILE: &[&str] = &[
    "event_id",
    "uptime_ms",
    "timestamp",
    "token",
    "hash",
    "created_at",
    "expires_at",
    "checked",
    "last_id",
    "memory_bytes",
    "cpu_time_us",
];

pub(super) fn normalized(v: &impl serde::Serialize) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in VOLATILE {
                    if m.contains_key(*k) {
                        m.insert((*k).to_string(), Value::Null);
                    }
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap();
    strip(&mut v);
    v
}

/// The same answer, as far as two askings can give the same.
pub(super) fn same<T: serde::Serialize>(what: &str, grpc: &T, rest: &T) {
    assert_eq!(
        normalized(grpc),
        normalized(rest),
        "{what}: gRPC and REST differ"
    );
}

/// The same refusal: code and reason; REST's status is the code's.
pub(super) fn same_refusal(
    what: &str,
    grpc: Result<impl std::fmt::Debug, Failure>,
    rest: (u16, Value),
) {
    let g = grpc.expect_err(&format!("{what}: gRPC accepted it"));
    let (status, body) = rest;
    let r: Failure = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("{what}: REST did not refuse ({status} {body}): {e}"));
    assert_eq!(
        (g.code, g.reason.as_str()),
        (r.code, r.reason.as_str()),
        "{what}: gRPC refused with {g:?}, REST with {r:?}"
    );
    assert_eq!(status, http_of(&r), "{what}: {r:?}");
}

impl Faces {
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self.rest.req(method, path);
        let r = match body {
            Some(b) => r.json(&b),
            None => r,
        };
        crate::harness::send(r).await
    }

    /// A REST answer decoded as `T`; panics with the body on a refusal.
    pub(super) async fn ok<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> T {
        let (status, v) = self.send(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{path}: {e}: {v}"))
    }
}

/// A raw gRPC answer as the typed client reports a refusal.
pub(super) fn raw<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), Failure> {
    r.map(|_| ()).map_err(|s| solo_client::failure(&s))
}

/// The data of the first whole event of an SSE response (keep-alives carry none).
pub(super) async fn first_sse<T: DeserializeOwned>(resp: reqwest::Response) -> T {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    loop {
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
        let whole = match text.rfind("\n\n") {
            Some(end) => &text[..end],
            None => continue,
        };
        if let Some(data) = whole.lines().find_map(|l| l.strip_prefix("data:")) {
            return serde_json::from_str(data.trim()).unwrap();
        }
    }
}

pub(super) fn sid(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap()
}

pub(super) fn js(id: &str, code: &str) -> DeployRequest {
    DeployRequest::new(sid(id), solo_types::Format::Js, code.as_bytes().to_vec())
}

/// With one request of alice's in flight and a limit of one, her next is shed on both
/// faces, with the same reason and a retry hint.
async fn a_flood_is_shed_on_both(f: &Faces, admin: &Faces) {
    // A call that waits for itself: in flight, using no CPU, until its inner call
    // times out.
    let selfish = r#"export async function handleCall(r) {
        try { await solo.call("selfish", r, { timeoutMs: 3000 }); } catch (e) {}
        return r; }"#;
    f.grpc.deploy(&js("selfish", selfish)).await.unwrap();
    let held = f.grpc.clone();
    let busy = tokio::spawn(async move { held.call(&sid("selfish"), "1", None).await });
    // In flight once its inner call waits in the mailbox.
    while f.grpc.status(&sid("selfish")).await.unwrap().mailbox_len == 0 {
        assert!(!busy.is_finished(), "the held call ended early");
        tokio::task::yield_now().await;
    }
    admin
        .grpc
        .set_config("limits.max_per_tenant", "1")
        .await
        .unwrap();
    let resp = f
        .rest
        .req(Method::GET, "/v1/services")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let rest = crate::harness::send(f.rest.req(Method::GET, "/v1/services")).await;
    let grpc = f.grpc.list(&ListFilter::default()).await;
    assert_eq!(grpc.as_ref().err().and_then(|e| e.retry_after), Some(1));
    same_refusal("a flood", grpc, rest);
    busy.await.unwrap().unwrap();
    admin
        .grpc
        .set_config("limits.max_per_tenant", "100")
        .await
        .unwrap();
}

async fn faces(s: &Server, p: solo_client::Profile) -> Faces {
    Faces {
        rest: s.rest(&p),
        grpc: p.open().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_and_refuses_alike_on_both_faces() {
    let s = Server::start();
    let alice = faces(&s, s.tenant_profile("alice")).await;
    let admin = faces(&s, s.admin_profile()).await;
    // No certificate and no token.
    let mut anon_profile = s.profile_with(solo_client::Flags {
        token: Some("solo_placeholder".into()),
        ..solo_client::Flags::default()
    });
    anon_profile.credentials = solo_client::Credentials::default();
    let anon = Faces {
        rest: Rest {
            token: None,
            ..s.rest(&anon_profile)
        },
        grpc: anon_profile.open().await.unwrap(),
    };
    services::services_and_calls(&alice).await;
    others::events_and_discovery(&alice, &admin).await;
    others::access(&alice, &admin).await;
    others::system(&alice, &admin, &anon).await;
    a_flood_is_shed_on_both(&alice, &admin).await;
}
