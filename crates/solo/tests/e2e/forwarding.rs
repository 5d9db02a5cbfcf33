//! Cluster mode end to end, a standby forwarding: each request a client sends to a
//! standby is served by the active node as the client's own (status, list and the tree
//! name it), a client's claim to be someone else gets it nothing, a certificate of
//! another CA is refused, and a call in flight when the active node dies is answered
//! `unavailable` (`owner_lost`) to a raw gRPC client.

use std::time::{Duration, Instant};

use solo_cluster::testing::NatsCluster;
use solo_types::Format;
use solo_types::api::{DeployRequest, ListFilter};

use crate::cluster::{
    LEASE_MS, Saved, active_and_standby, count, inc_until_answered, nodes_until, profile_of,
    server_info,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_clients_requests_to_the_active_node() {
    let nats = NatsCluster::start(3, true);
    let (mut a, b) = active_and_standby(&nats, Saved::Checkpoint).await;
    let counter = solo_types::ServiceId::new("counter").unwrap();
    // Named through the standby, answered by the active node.
    let via_b = profile_of(&b.data_dir(), None).open().await.unwrap();
    let r = via_b
        .call(&counter, r#"{"op":"inc","by":1}"#, None)
        .await
        .unwrap();
    assert_eq!(count(&r), 6);
    assert!(via_b.whoami().await.unwrap().admin);
    // Status, list and the tree name the node that runs the service.
    assert_eq!(
        via_b.status(&counter).await.unwrap().node.as_deref(),
        Some("a")
    );
    let listed = via_b.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed.services[0].node.as_deref(), Some("a"));
    assert_eq!(via_b.tree().await.unwrap().node.as_deref(), Some("a"));
    assert_eq!(via_b.health().await.unwrap().node.as_deref(), Some("a"));

    // A client cannot pass itself off through the standby: b names the client its own
    // TLS verified, whatever the client's `x-solo-forwarded-*` headers claim.
    let out = tempfile::tempdir().unwrap();
    let cert = solo_gateway::pki::issue(&a.data_dir(), "mallory", false, out.path()).unwrap();
    let key = out.path().join("mallory-key.pem");
    let mallory = profile_of(
        &b.data_dir(),
        Some((std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap())),
    );
    let anonymous = solo_client::Profile {
        identity: None,
        ..profile_of(&b.data_dir(), None)
    };
    let b_http = format!("https://{}", server_info(&b.data_dir()).http);
    for (who, expected) in [(&mallory, 200), (&anonymous, 401)] {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(who.rustls_config().unwrap())
            .build()
            .unwrap();
        let (status, body) = crate::harness::send(
            http.get(format!("{b_http}/v1/whoami"))
                .header("x-solo-forwarded-peer", "admin admin")
                .header("x-solo-forwarded-remote", "10.9.9.9:1")
                .header("x-solo-tenant", "victim"),
        )
        .await;
        assert_eq!(status, expected, "{body}");
        if expected == 200 {
            assert_eq!(
                (body["tenant"].as_str(), body.get("admin")),
                (Some("mallory"), None)
            );
        }
    }

    // A certificate of another CA is refused by the standby as by the active node.
    let other = tempfile::tempdir().unwrap();
    solo_gateway::pki::init(other.path(), &[]).unwrap();
    let certs = other.path().join("certs");
    let foreign = (
        std::fs::read(certs.join("admin.pem")).unwrap(),
        std::fs::read(certs.join("admin-key.pem")).unwrap(),
    );
    let stranger = profile_of(&b.data_dir(), Some(foreign));
    let refused = match stranger.open().await {
        Err(e) => e.to_string(),
        Ok(c) => c.whoami().await.unwrap_err().to_string(),
    };
    assert!(!refused.is_empty());
    let r = via_b.call(&counter, r#"{"op":"get"}"#, None).await.unwrap();
    assert_eq!(count(&r), 6, "the standby still serves the admin");
    eprintln!("a foreign certificate at the standby: {refused}");

    // A call in flight through the standby when the active node dies fails as
    // `unavailable` (`owner_lost`), which a client may retry: even a raw gRPC client
    // reads that status, not a broken connection.
    let spin = solo_types::ServiceId::new("spin").unwrap();
    let mut d = DeployRequest::new(
        spin.clone(),
        Format::Js,
        solo_guests::js("spinner").into_bytes(),
    );
    (d.cpu_ms_per_message, d.message_timeout_ms) = (Some(30_000), Some(30_000));
    via_b.deploy(&d).await.unwrap();
    let mut raw = profile_of(&b.data_dir(), None).connect().await.unwrap();
    let in_flight = tokio::spawn(async move {
        raw.call(solo_proto::v1::CallRequest {
            service_id: spin.to_string(),
            request: "{}".into(),
            timeout_ms: 30_000,
        })
        .await
    });

    // The active node dies: b has nobody to forward to until it takes over, then b
    // answers itself, with the checkpointed count.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    a.kill9();
    let killed = Instant::now();
    let lost = in_flight.await.unwrap().unwrap_err();
    assert_eq!(lost.code(), tonic::Code::Unavailable, "{lost:?}");
    assert_eq!(
        lost.metadata()
            .get(solo_proto::REASON_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("owner_lost"),
        "{lost:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(5), "{lost:?}");
    // Until b takes over (a's lease has at least 1.3 s to run), a new request through b
    // is refused, retryably, by b itself: it cannot reach a.
    let early = killed.elapsed() < Duration::from_millis(1_000);
    let asked = match profile_of(&b.data_dir(), None).open().await {
        Ok(c) => c.whoami().await.map(|_| ()),
        Err(e) => Err(e.failure()),
    };
    match asked {
        Err(e) if e.reason == "no_active_node" => {
            assert_eq!(e.code, solo_types::Code::Unavailable);
        }
        other => assert!(!early, "{other:?}"),
    }
    let (b, _) = b.wait(Duration::from_secs(30));
    let r = inc_until_answered(&b, killed).await;
    assert_eq!(count(&r), 7);
    // b is active now, and a, killed, has stopped beating.
    let b_now = profile_of(&b.data_dir(), None).open().await.unwrap();
    let nodes = nodes_until(&b_now, |n| n.len() == 2 && !n[0].beating).await;
    assert_eq!(
        (nodes[0].role.as_str(), nodes[1].role.as_str()),
        ("standby", "active")
    );
    assert!(
        nodes[1].beating && nodes[0].last_seen_ms >= LEASE_MS,
        "{nodes:?}"
    );
}
