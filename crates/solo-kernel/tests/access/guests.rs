//! Capabilities inside services: a guest learns who it is and who called it (as the
//! kernel says, never the request), and verifies tokens presented to it; the
//! gatekeeper example in both formats, from the attacker's side.

use super::*;

async fn grant_call(k: &Kernel, owner: &Caller, on: &str) -> String {
    grant(k, owner, Resource::Service(sid(on)), &["call"], 600)
        .await
        .token
        .expose()
        .to_string()
}

#[tokio::test]
async fn a_service_serves_only_callers_with_a_token_it_verifies() {
    let s = solo().await;
    let k = &s.kernel;
    let (alice, bob) = (tenant("alice"), tenant("bob"));
    let relay = br#"export async function handleCall(r) { return await solo.call(r.to, r.body, { token: r.token }); }"#;
    k.deploy(
        &alice,
        DeployRequest::new(sid("relay"), Format::Js, relay.to_vec()),
    )
    .await
    .unwrap();
    k.deploy(
        &bob,
        DeployRequest::new(sid("relay"), Format::Js, relay.to_vec()),
    )
    .await
    .unwrap();
    for (id, format, code) in [
        ("gk-wasm", Format::Wasm, solo_guests::wasm("gatekeeper")),
        (
            "gk-js",
            Format::Js,
            solo_guests::js("gatekeeper").into_bytes(),
        ),
    ] {
        k.deploy(&alice, DeployRequest::new(sid(id), format, code))
            .await
            .unwrap();
        let good = grant_call(k, &alice, id).await;
        let other = grant_call(k, &alice, "relay").await;
        let bobs = grant_call(k, &bob, "relay").await;
        let ask = |token: &str| {
            let req = serde_json::json!({ "token": token, "name": "Ada" }).to_string();
            let (k, alice, id) = (k.clone(), alice.clone(), sid(id));
            async move { k.call(&alice, &id, &req, Some(SEC)).await }
        };
        // The right token: served, and the caller is the tenant, as the kernel says.
        let ok: serde_json::Value = serde_json::from_str(&ask(&good).await.unwrap()).unwrap();
        assert_eq!(ok["hello"], "Ada", "{id}");
        assert_eq!(ok["guarded"], format!("service:{id}"), "{id}");
        assert_eq!(ok["caller"]["kind"], "tenant", "{id}");
        assert_eq!(ok["caller"]["tenant"], "alice", "{id}");
        // A token for something else, another tenant's, a revoked one, garbage: a
        // denial reason, never a crash.
        for (token, reason) in [
            (other.as_str(), "resource_mismatch"),
            (bobs.as_str(), "not_found"),
            ("garbage", "not_found"),
            ("", "not_found"),
        ] {
            let e = ask(token).await.unwrap_err();
            assert_eq!(e.reason(), "service_error", "{id}");
            assert!(e.to_string().contains(reason), "{id}: {e}");
        }
        k.revoke_capability(&alice, &good).await.unwrap();
        assert!(
            ask(&good)
                .await
                .unwrap_err()
                .to_string()
                .contains("revoked")
        );
        assert_eq!(k.status(&alice, &sid(id)).unwrap().restarts, 0, "{id}");
        // Through a service of the tenant: the caller is that service.
        let fresh = grant_call(k, &alice, id).await;
        let body = serde_json::json!({ "token": fresh });
        let req = serde_json::json!({ "to": id, "body": body }).to_string();
        let via: serde_json::Value = serde_json::from_str(
            &k.call(&alice, &sid("relay"), &req, Some(SEC))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(via["caller"]["kind"], "service", "{id}");
        assert_eq!(via["caller"]["service_id"], "relay", "{id}");
        // From another tenant's service, with alice's token for the call: bob's relay.
        let req = serde_json::json!({ "to": format!("alice/{id}"), "body": body, "token": fresh })
            .to_string();
        let via: serde_json::Value =
            serde_json::from_str(&k.call(&bob, &sid("relay"), &req, Some(SEC)).await.unwrap())
                .unwrap();
        assert_eq!(via["caller"]["tenant"], "bob", "{id}");
        assert_eq!(via["caller"]["service_id"], "relay", "{id}");
    }
    // A guest's denials are recorded like any verify (sampled): another tenant's token
    // and garbage as unknown-token attempts, the wrong resource in alice's log.
    let denied = events_of(k, &alice, kinds::CAPABILITY_DENIED);
    assert!(
        denied
            .iter()
            .any(|e| e.payload["reason"] == "resource_mismatch")
    );
    assert!(!system_denials(k).is_empty());
    assert!(
        !all_events_text(k).contains("solo_"),
        "no token in any event"
    );
}

#[tokio::test]
async fn a_guest_flooding_verify_is_sampled_in_the_log() {
    let s = solo().await;
    let k = &s.kernel;
    let alice = tenant("alice");
    let flood = br#"export async function handleCall(r) {
        let denied = 0;
        for (let i = 0; i < 2000; i++) {
            const v = await solo.verify("solo_" + "A".repeat(43), "events", "read");
            if (!v.valid) denied++;
        }
        return { denied, me: solo.whoami() };
    }"#;
    k.deploy(
        &alice,
        DeployRequest::new(sid("flood"), Format::Js, flood.to_vec()),
    )
    .await
    .unwrap();
    let before = system_denials(k).len();
    let r: serde_json::Value = serde_json::from_str(
        &k.call(&alice, &sid("flood"), "{}", Some(Duration::from_secs(10)))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r["denied"], 2000);
    assert_eq!(
        r["me"],
        serde_json::json!({"tenant": "alice", "serviceId": "flood", "version": 1})
    );
    let written = system_denials(k).len() - before;
    assert!(
        (1..=100).contains(&written),
        "{written} events for 2000 denials"
    );
}
