//! Parity of events, discovery, secrets, capabilities and the system operations.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use solo_types::api::*;
use solo_types::{EventPage, EventQuery, Permission, Resource};

use super::{Faces, first_sse, js, raw, same, same_refusal};
use crate::harness::echo_js;

pub(super) async fn events_and_discovery(f: &Faces, admin: &Faces) {
    use Method as M;
    // events: a fixed window of the log
    let last = f
        .grpc
        .events(&EventQuery {
            limit: 1,
            order: solo_types::Order::Descending,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let before = last.events[0].id + 1;
    let q = EventQuery {
        before_id: Some(before),
        limit: 20,
        order: solo_types::Order::Descending,
        ..EventQuery::default()
    };
    let rp: EventPage = f
        .ok(
            M::GET,
            &format!("/v1/events?before_id={before}&limit=20&order=desc"),
            None,
        )
        .await;
    let gp = f.grpc.events(&q).await.unwrap();
    assert_eq!(
        serde_json::to_value(&gp).unwrap(),
        serde_json::to_value(&rp).unwrap(),
        "events"
    );
    let other = EventQuery {
        filter: event_filter(Some("someone-else"), None, None).unwrap(),
        ..EventQuery::default()
    };
    same_refusal(
        "another tenant's events",
        f.grpc.events(&other).await,
        f.send(M::GET, "/v1/events?tenant=someone-else", None).await,
    );
    same_refusal(
        "a verification by a tenant",
        f.grpc.verify_events().await,
        f.send(M::GET, "/v1/events/verify", None).await,
    );
    let rv: LogVerification = admin.ok(M::GET, "/v1/events/verify", None).await;
    same("verify", &admin.grpc.verify_events().await.unwrap(), &rv);

    // watch: the first event after a point, on both feeds
    let w = WatchRequest {
        after_id: before - 2,
        ..WatchRequest::default()
    };
    let g = f
        .grpc
        .watch(&w)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let resp = f
        .rest
        .req(M::GET, &format!("/v1/events?after_id={}", before - 2))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let r: solo_types::Event = first_sse(resp).await;
    assert_eq!(g, r, "the first event of a watch");
    let other = WatchRequest {
        filter: event_filter(Some("someone-else"), None, None).unwrap(),
        ..WatchRequest::default()
    };
    let rest = f
        .rest
        .req(M::GET, "/v1/events?tenant=someone-else")
        .header("accept", "text/event-stream");
    same_refusal(
        "a watch of another tenant",
        f.grpc.watch(&other).await.map(|_| ()),
        crate::harness::send(rest).await,
    );

    // discovery
    f.grpc.deploy(&js("d-echo", &echo_js())).await.unwrap();
    let reg = RegisterRequest {
        service_id: "d-echo".into(),
        name: "echo".into(),
        version: "1".into(),
        metadata: BTreeMap::from([("region".into(), "eu".into())]),
        ttl_seconds: 0,
    };
    let g = f.grpc.register(&reg).await.unwrap();
    let r: Registered = f
        .ok(
            M::POST,
            "/v1/discovery",
            Some(serde_json::to_value(&reg).unwrap()),
        )
        .await;
    assert_eq!(g, r, "re-registering keeps the handle");
    let bad = RegisterRequest {
        name: "a/b".into(),
        ..reg.clone()
    };
    same_refusal(
        "a bad name",
        f.grpc.register(&bad).await,
        f.send(
            M::POST,
            "/v1/discovery",
            Some(serde_json::to_value(&bad).unwrap()),
        )
        .await,
    );
    let filters = BTreeMap::from([("region".to_string(), "eu".to_string())]);
    let rd: Registrations = f
        .ok(M::GET, "/v1/discovery?name=echo&region=eu", None)
        .await;
    same(
        "discover",
        &f.grpc.discover("echo", &filters).await.unwrap(),
        &rd,
    );
    let ra: Registrations = f.ok(M::GET, "/v1/discovery", None).await;
    same(
        "registrations",
        &f.grpc.registrations(None).await.unwrap(),
        &ra,
    );
    // Deregistering: the same answer the first time (over one face) and the second
    // (over the other, idempotent); then nothing is found.
    let handle = &g.service_handle;
    let gd = f.grpc.deregister(handle).await.unwrap();
    assert!(gd.deregistered);
    let rd: Deregistered = f
        .ok(M::DELETE, &format!("/v1/discovery/{handle}"), None)
        .await;
    same(
        "deregister again",
        &f.grpc.deregister(handle).await.unwrap(),
        &rd,
    );
    assert!(!rd.deregistered);
    assert!(
        f.grpc
            .discover("echo", &filters)
            .await
            .unwrap()
            .services
            .is_empty()
    );
}

pub(super) async fn access(f: &Faces, admin: &Faces) {
    use Method as M;
    // secrets
    let g = f.grpc.put_secret("k-grpc", b"v1").await.unwrap();
    let r: SecretStored = f
        .ok(M::PUT, "/v1/secrets/k-rest", Some(json!({"value": "v1"})))
        .await;
    same(
        "put a secret",
        &SecretStored {
            name: "k".into(),
            ..g
        },
        &SecretStored {
            name: "k".into(),
            ..r
        },
    );
    let rs: Secret = f.ok(M::GET, "/v1/secrets/k-grpc", None).await;
    same(
        "get a secret",
        &f.grpc.get_secret("k-grpc").await.unwrap(),
        &rs,
    );
    same_refusal(
        "a missing secret",
        f.grpc.get_secret("nope").await,
        f.send(M::GET, "/v1/secrets/nope", None).await,
    );
    same_refusal(
        "a bad name",
        f.grpc.put_secret("a b", b"v").await,
        f.send(M::PUT, "/v1/secrets/a%20b", Some(json!({"value": "v"})))
            .await,
    );
    let rn: SecretNames = f.ok(M::GET, "/v1/secrets", None).await;
    same("list secrets", &f.grpc.list_secrets().await.unwrap(), &rn);
    let rd: SecretDeleted = f.ok(M::DELETE, "/v1/secrets/k-rest", None).await;
    same(
        "delete a secret",
        &SecretDeleted {
            name: "k".into(),
            ..f.grpc.delete_secret("k-grpc").await.unwrap()
        },
        &SecretDeleted {
            name: "k".into(),
            ..rd
        },
    );
    same_refusal(
        "a rotation by a tenant",
        f.grpc.rotate_secrets().await,
        f.send(M::POST, "/v1/secrets/rotate", None).await,
    );
    let rr: Rotated = admin.ok(M::POST, "/v1/secrets/rotate", None).await;
    same("rotate", &admin.grpc.rotate_secrets().await.unwrap(), &rr);

    // capabilities
    let grant = GrantRequest {
        resource: Resource::Events,
        permissions: permissions_named(&["read".into()]).unwrap(),
        ttl_seconds: Some(600),
    };
    let g = f.grpc.grant(&grant).await.unwrap();
    let r: Granted = f
        .ok(
            M::POST,
            "/v1/capabilities",
            Some(json!({"resource": "events", "permissions": ["read"], "ttl_seconds": 600})),
        )
        .await;
    same("grant", &g, &r);
    same_refusal(
        "a bad resource",
        raw(f
            .grpc
            .raw()
            .grant_capability(solo_proto::v1::GrantCapabilityRequest {
                resource: "moon".into(),
                permissions: vec!["read".into()],
                ttl_seconds: 0,
            })
            .await),
        f.send(
            M::POST,
            "/v1/capabilities",
            Some(json!({"resource": "moon", "permissions": ["read"]})),
        )
        .await,
    );
    let rv: Verification = f
        .ok(
            M::POST,
            "/v1/capabilities/verify",
            Some(json!({"token": g.token.expose(), "resource": "events", "permission": "read"})),
        )
        .await;
    same(
        "verify",
        &f.grpc
            .verify(r.token.expose(), &Resource::Events, Permission::Read)
            .await
            .unwrap(),
        &rv,
    );
    let wider = Narrowing {
        permissions: Some(permissions_named(&["kill".into()]).unwrap()),
        ..Narrowing::default()
    };
    same_refusal(
        "a wider attenuation",
        f.grpc.attenuate(g.token.expose(), &wider).await,
        f.send(
            M::POST,
            "/v1/capabilities/attenuate",
            Some(json!({"token": g.token.expose(), "permissions": ["kill"]})),
        )
        .await,
    );
    let ra: Granted = f
        .ok(
            M::POST,
            "/v1/capabilities/attenuate",
            Some(json!({"token": r.token.expose(), "ttl_seconds": 60})),
        )
        .await;
    let ga = f
        .grpc
        .attenuate(
            g.token.expose(),
            &Narrowing {
                ttl_seconds: Some(60),
                ..Narrowing::default()
            },
        )
        .await
        .unwrap();
    let (mut ga, mut ra) = (ga, ra);
    (ga.info.parent, ra.info.parent) = (None, None);
    same("attenuate", &ga, &ra);
    let rl: CapList = f.ok(M::GET, "/v1/capabilities", None).await;
    let gl = f.grpc.list_capabilities().await.unwrap();
    assert_eq!(
        gl.capabilities.len(),
        rl.capabilities.len(),
        "list capabilities"
    );
    let rr: Revoked = f
        .ok(
            M::POST,
            "/v1/capabilities/revoke",
            Some(json!({"token": r.token.expose()})),
        )
        .await;
    same(
        "revoke",
        &f.grpc.revoke(g.token.expose()).await.unwrap(),
        &rr,
    );
}

pub(super) async fn system(f: &Faces, admin: &Faces, anon: &Faces) {
    use Method as M;
    let rh: Health = anon.ok(M::GET, "/health", None).await;
    same("anonymous health", &anon.grpc.health().await.unwrap(), &rh);
    assert_eq!(rh.version, None, "no details without credentials");
    let rh: Health = f.ok(M::GET, "/health", None).await;
    same("a tenant's health", &f.grpc.health().await.unwrap(), &rh);
    let rw: Identity = f.ok(M::GET, "/v1/whoami", None).await;
    same("whoami", &f.grpc.whoami().await.unwrap(), &rw);
    let rs: ServiceTools = f.ok(M::GET, "/v1/tools", None).await;
    same("service tools", &f.grpc.service_tools().await.unwrap(), &rs);
    same_refusal(
        "whoami without credentials",
        anon.grpc.whoami().await,
        anon.send(M::GET, "/v1/whoami", None).await,
    );
    let rt: TreeNode = f.ok(M::GET, "/v1/system/tree", None).await;
    same("tree", &f.grpc.tree().await.unwrap(), &rt);
    same_refusal(
        "metrics by a tenant",
        f.grpc.metrics().await,
        f.send(M::GET, "/metrics", None).await,
    );
    assert!(
        admin
            .grpc
            .metrics()
            .await
            .unwrap()
            .text
            .contains("solo_calls_total")
    );
    let rc: RuntimeConfig = admin.ok(M::GET, "/v1/system/config", None).await;
    same("get config", &admin.grpc.get_config().await.unwrap(), &rc);
    same_refusal(
        "config by a tenant",
        f.grpc.get_config().await,
        f.send(M::GET, "/v1/system/config", None).await,
    );
    let rs: ConfigChange = admin
        .ok(
            M::PUT,
            "/v1/system/config",
            Some(json!({"key": "breaker.failures", "value": 5})),
        )
        .await;
    same(
        "set config",
        &admin
            .grpc
            .set_config("breaker.failures", "5")
            .await
            .unwrap(),
        &rs,
    );
    same_refusal(
        "an unknown key",
        admin.grpc.set_config("nope", "1").await,
        admin
            .send(
                M::PUT,
                "/v1/system/config",
                Some(json!({"key": "nope", "value": 1})),
            )
            .await,
    );
    same_refusal(
        "a shutdown by a tenant",
        f.grpc.shutdown(None).await,
        f.send(M::POST, "/v1/system/shutdown", None).await,
    );
    same_refusal(
        "a shutdown with too long a grace",
        admin.grpc.shutdown(Some(Duration::from_secs(3600))).await,
        admin
            .send(
                M::POST,
                "/v1/system/shutdown",
                Some(json!({"grace_period_ms": 3_600_000})),
            )
            .await,
    );
    same_refusal(
        "no credentials",
        anon.grpc.list(&ListFilter::default()).await,
        anon.send(M::GET, "/v1/services", None).await,
    );
}
