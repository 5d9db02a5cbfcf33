//! End-to-end isolation and identity, from the attacker's side: another tenant's
//! certificate, a stolen, expired or forged token, and clients that connect and say
//! nothing.

use std::time::Duration;

use serde_json::{Value, json};
use solo_client::Flags;
use solo_proto::v1 as pb;
use tonic::Code;

use crate::harness::{Server, counter_js, echo_js, reason};
use crate::{call, deploy_js};

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_other() {
    let s = Server::start();
    let mut alice = s.tenant("alice").await;
    let mut bob = s.tenant("bob").await;
    alice.deploy(deploy_js("notes", echo_js())).await.unwrap();
    alice
        .put_secret(pb::PutSecretRequest {
            name: "key".into(),
            value: b"alice's".to_vec(),
        })
        .await
        .unwrap();

    let id = || "notes".to_string();
    let nf = |r: Result<tonic::Status, tonic::Status>| {
        let e = r.unwrap_or_else(|e| e);
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    };
    nf(bob
        .status(pb::StatusRequest { service_id: id() })
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .call(call("notes", json!(1)))
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .cast(pb::CastRequest {
            service_id: id(),
            message: "1".into(),
        })
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .kill(pb::KillRequest {
            service_id: id(),
            timeout_ms: 0,
            force: true,
        })
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .logs(pb::LogsRequest {
            service_id: id(),
            tail: 10,
            follow: false,
            ..pb::LogsRequest::default()
        })
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .watch(pb::WatchRequest {
            service_id: id(),
            include_logs: true,
            ..pb::WatchRequest::default()
        })
        .await
        .map(|_| tonic::Status::ok("")));
    nf(bob
        .get_secret(pb::GetSecretRequest { name: "key".into() })
        .await
        .map(|_| tonic::Status::ok("")));
    assert!(
        bob.list_secrets(pb::ListSecretsRequest {})
            .await
            .unwrap()
            .into_inner()
            .names
            .is_empty()
    );
    assert_eq!(
        bob.list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    // Bob's events hold nothing of Alice's, and asking for hers is refused.
    let events = bob
        .query_events(pb::QueryEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.iter().all(|e| e.tenant == "bob"), "{events:?}");
    let e = bob
        .query_events(pb::QueryEventsRequest {
            tenant: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // `x-solo-tenant` from a tenant is ignored: Bob still acts as Bob.
    let bob_as_alice = s.profile_with(Flags {
        tenant: Some("alice".into()),
        ..{
            let (cert, key) = s.issue("bob", false);
            Flags {
                cert: Some(cert),
                key: Some(key),
                ..Flags::default()
            }
        }
    });
    let mut sneaky = bob_as_alice.connect().await.unwrap();
    assert_eq!(
        sneaky
            .list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    let e = sneaky
        .status(pb::StatusRequest { service_id: id() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Bob's deploy of the same id is his own service.
    bob.deploy(deploy_js("notes", counter_js())).await.unwrap();
    let r = alice
        .call(call("notes", json!({"a": 1})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Value>(&r.reply).unwrap(),
        json!({"a": 1}),
        "alice's is still the echo"
    );

    // Alice's capabilities are invisible to Bob, and her token does not work for him.
    let alice_token = alice
        .grant_capability(pb::GrantCapabilityRequest {
            resource: "service:notes".into(),
            permissions: vec!["call".into()],
            ttl_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(
        bob.list_capabilities(pb::ListCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities
            .is_empty()
    );
    let v = bob
        .verify_capability(pb::VerifyCapabilityRequest {
            token: alice_token.clone(),
            resource: "service:notes".into(),
            permission: "call".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    assert!(
        v.capability.is_none(),
        "no details of another tenant's capability"
    );
    // Exactly what an unknown token answers: bob learns nothing about alice's token.
    let forged = bob
        .verify_capability(pb::VerifyCapabilityRequest {
            token: format!("solo_{}", "Q".repeat(43)),
            resource: "service:notes".into(),
            permission: "call".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v, forged);
    // Revoking it is a no-op that confirms nothing (as for an unknown token).
    let r = bob
        .revoke_capability(pb::RevokeCapabilityRequest {
            token: alice_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revoked, 0);
    let v = alice
        .verify_capability(pb::VerifyCapabilityRequest {
            token: alice_token.clone(),
            resource: "service:notes".into(),
            permission: "call".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "bob's revoke did not touch alice's token");
    let e = bob
        .attenuate_capability(pb::AttenuateCapabilityRequest {
            token: alice_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Deleting "her" secret deletes nothing of hers.
    let d = bob
        .delete_secret(pb::DeleteSecretRequest { name: "key".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.existed);
    let v = alice
        .get_secret(pb::GetSecretRequest { name: "key".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.value, b"alice's");
    // Bob's view of the tree holds no other tenant.
    let tree = bob
        .system_tree(pb::SystemTreeRequest {})
        .await
        .unwrap()
        .into_inner()
        .tree_json;
    assert!(!tree.contains("alice"), "{tree}");

    // Admin-only RPCs by a tenant.
    for e in [
        bob.shutdown(pb::ShutdownRequest { grace_period_ms: 1 })
            .await
            .map(|_| ())
            .unwrap_err(),
        bob.metrics(pb::MetricsRequest {})
            .await
            .map(|_| ())
            .unwrap_err(),
        bob.verify_events(pb::VerifyEventsRequest {})
            .await
            .map(|_| ())
            .unwrap_err(),
        bob.set_config(pb::SetConfigRequest {
            key: "limits.max_per_tenant".into(),
            value: "1".into(),
        })
        .await
        .map(|_| ())
        .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert_eq!(reason(&e), "admin_only");
    }
    // The admin may act for Alice.
    let mut admin_as_alice = s
        .profile_with(Flags {
            tenant: Some("alice".into()),
            data_dir: None,
            ..{
                let (cert, key) = s.issue("ops", true);
                Flags {
                    cert: Some(cert),
                    key: Some(key),
                    ..Flags::default()
                }
            }
        })
        .connect()
        .await
        .unwrap();
    let st = admin_as_alice
        .status(pb::StatusRequest { service_id: id() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.format, "js");
    // And the server is still running after all that.
    assert_eq!(
        bob.health(pb::HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .status,
        "ok"
    );
}

/// What a connection attempt with `profile` ends in: the error text.
async fn refusal(profile: solo_client::Profile) -> String {
    match profile.connect().await {
        Err(e) => e.to_string(),
        Ok(mut c) => match c.list(pb::ListRequest::default()).await {
            Ok(_) => panic!("the server accepted the connection"),
            Err(e) => format!("{:?}: {}", e.code(), solo_client::describe_status(&e)),
        },
    }
}

#[tokio::test]
async fn certificates_and_tokens_are_checked() {
    let s = Server::start();
    // No certificate and no token.
    let anon = s.profile_with(Flags {
        token: Some("x".into()),
        ..Flags::default()
    });
    let anon = solo_client::Profile {
        credentials: Default::default(),
        ..anon
    };
    let mut c = anon.connect().await.unwrap();
    let e = c.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // A certificate from another CA, and an expired one from the right CA: the client
    // refuses to use them (with a clear message), and the server refuses them when an
    // attacker uses them anyway.
    let other = tempfile::tempdir().unwrap();
    solo_gateway::pki::init(other.path(), &[]).unwrap();
    let certs = other.path().join("certs");
    let foreign = Flags {
        cert: Some(certs.join("admin.pem")),
        key: Some(certs.join("admin-key.pem")),
        endpoint: Some(s.grpc.clone()),
        ca: Some(s.ca()),
        ..Flags::default()
    };
    let err = solo_client::Profile::resolve(&foreign, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not issued by this Solo CA"), "{err}");

    let ca =
        solo_gateway::pki::Ca::load(&solo_gateway::pki::CertPaths::new(&s.data_dir())).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = ca
        .issue_client(
            "mallory",
            false,
            Some((
                now - time::Duration::days(10),
                now - time::Duration::days(1),
            )),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), &key).unwrap();
    let expired = Flags {
        cert: Some(dir.path().join("c.pem")),
        key: Some(dir.path().join("k.pem")),
        endpoint: Some(s.grpc.clone()),
        ca: Some(s.ca()),
        ..Flags::default()
    };
    let err = solo_client::Profile::resolve(&expired, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired"), "{err}");

    let base = s.admin_profile();
    let foreign_identity = (
        std::fs::read(certs.join("admin.pem")).unwrap(),
        std::fs::read(certs.join("admin-key.pem")).unwrap(),
    );
    for identity in [foreign_identity, (cert.into_bytes(), key.into_bytes())] {
        let attacker = solo_client::Profile {
            identity: Some(identity),
            ..base.clone()
        };
        let err = refusal(attacker.clone()).await;
        assert!(!err.is_empty());
        // Over REST as well.
        let rest = s.rest(&attacker);
        let r = rest.req(reqwest::Method::GET, "/v1/services").send().await;
        assert!(
            r.is_err(),
            "the REST listener accepted the certificate: {r:?}"
        );
    }

    // A bearer token granting `call` on one service, and nothing else.
    let mut alice = s.tenant("alice").await;
    alice.deploy(deploy_js("echo", echo_js())).await.unwrap();
    alice.deploy(deploy_js("other", echo_js())).await.unwrap();
    let token = alice
        .grant_capability(pb::GrantCapabilityRequest {
            resource: "service:echo".into(),
            permissions: vec!["call".into()],
            ttl_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut agent = s
        .profile_with(Flags {
            token: Some(token.clone()),
            ..Flags::default()
        })
        .connect()
        .await
        .unwrap();
    let r = agent
        .call(call("echo", json!("hi")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reply, "\"hi\"");
    for e in [
        agent
            .call(call("other", json!(1)))
            .await
            .map(|_| ())
            .unwrap_err(),
        agent
            .status(pb::StatusRequest {
                service_id: "echo".into(),
            })
            .await
            .map(|_| ())
            .unwrap_err(),
        agent
            .deploy(deploy_js("mine", echo_js()))
            .await
            .map(|_| ())
            .unwrap_err(),
        agent
            .list_secrets(pb::ListSecretsRequest {})
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::NotFound),
            "{e:?}"
        );
    }
    // Over REST too.
    let mut rest = s.rest(&s.profile_with(Flags {
        token: Some(token.clone()),
        ..Flags::default()
    }));
    rest.token = Some(token.clone());
    let (code, body) = rest.post("/v1/services/echo/call", &json!(7)).await;
    assert_eq!((code, &body["reply"]), (200, &json!(7)));
    let (code, _) = rest.get("/v1/services/echo").await;
    assert!(code == 403 || code == 404, "{code}");
    // Revoked: refused as unauthenticated.
    alice
        .revoke_capability(pb::RevokeCapabilityRequest {
            token: token.clone(),
        })
        .await
        .unwrap();
    let e = agent.call(call("echo", json!("hi"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(reason(&e), "capability_revoked");
    let (code, body) = rest.post("/v1/services/echo/call", &json!(7)).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("capability_revoked"))
    );
    // A made-up token.
    rest.token = Some("solo_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let (code, body) = rest.post("/v1/services/echo/call", &json!(7)).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("capability_not_found"))
    );
    // Each refusal is on the record: the revoked token in alice's log, with the address
    // it came from, by hash and never itself.
    let mut denied = serde_json::Value::Null;
    for _ in 0..50 {
        denied = s.cli_json(&[
            "events",
            "--of-tenant",
            "alice",
            "--kind",
            "capability_denied",
        ]);
        let found = denied["events"].as_array().unwrap().iter().any(|e| {
            e["payload"]["reason"] == "revoked"
                && e["payload"]["source"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:"))
        });
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = denied.to_string();
    assert!(text.contains("\"revoked\""), "{text}");
    assert!(!text.contains(&token));
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_block_service() {
    let s = Server::start();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(&s.grpc).await.unwrap());
    }
    let started = std::time::Instant::now();
    let mut c = s.admin().await;
    c.deploy(deploy_js("echo", echo_js())).await.unwrap();
    for i in 0..20 {
        c.call(call("echo", json!(i))).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    c.health(pb::HealthRequest {}).await.unwrap();
}

/// Finishes a TLS handshake without a client certificate and returns the socket, which
/// then says nothing.
fn silent_tls(addr: &str, config: &std::sync::Arc<rustls::ClientConfig>) -> std::net::TcpStream {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::clone(config), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    sock
}

/// Whether the server has closed `sock` (a read ends or fails rather than timing out).
fn closed_by_server(sock: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Four hundred clients finish the TLS handshake without a certificate and say nothing,
/// on a server whose open-file limit is 256: the silent ones give way to clients that
/// work, the server closes them once their first-request deadline passes, and the accept
/// loop never runs out of descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_starve_the_server() {
    let (s, _) = Server::start_limited(
        tempfile::tempdir().unwrap(),
        &[("SOLO_CONNECTIONS__FIRST_REQUEST_TIMEOUT_MS", "3000")],
        &[],
        Some(256),
    );
    let mut c = s.admin().await;
    c.deploy(deploy_js("echo", echo_js())).await.unwrap();

    let ca = std::fs::read(s.ca()).unwrap();
    let config = std::sync::Arc::new(solo_client::rustls_config(&ca, None).unwrap());
    let grpc = s.grpc.clone();
    let http = s.http.clone();
    let mut silent = tokio::task::spawn_blocking(move || {
        (0..400)
            .map(|i| silent_tls(if i % 2 == 0 { &grpc } else { &http }, &config))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // The connection opened before the flood still works, and so does a new one.
    c.call(call("echo", json!("old"))).await.unwrap();
    let mut fresh = s.admin().await;
    for i in 0..5 {
        fresh.call(call("echo", json!(i))).await.unwrap();
    }
    let rest = s.rest(&s.admin_profile());
    let (status, _) = rest.get("/v1/services").await;
    assert_eq!(status, 200);

    // Past the first-request deadline every silent connection has been closed.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let open = tokio::task::spawn_blocking(move || {
        silent
            .iter_mut()
            .map(closed_by_server)
            .filter(|closed| !closed)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(open, 0, "silent connections still open");
    c.call(call("echo", json!("after"))).await.unwrap();

    let text = c
        .metrics(pb::MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .text;
    let counted = |reason: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("solo_gateway_connections_closed_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(counted("evicted") >= 1.0, "{text}");
    assert!(counted("silent") >= 1.0, "{text}");
    let stderr = s.stderr();
    assert!(
        !stderr.contains("cannot accept connections"),
        "the server ran out of descriptors: {stderr}"
    );
}
