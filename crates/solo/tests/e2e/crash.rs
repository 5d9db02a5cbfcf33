//! `kill -9` at random instants during mixed load, twenty times over one data directory:
//! after every restart each acknowledged write is there, each acknowledged deletion is
//! gone, the chain verifies and the vault decrypts every secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use solo_proto::v1 as pb;

use crate::harness::{Server, echo_js, reason};
use crate::{call, deploy_js};

/// What became of a write the test sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Acknowledged: must be there after any crash.
    Done,
    /// Its removal (a kill, a delete, a revocation, a deregistration) was sent but not
    /// acknowledged: either outcome is correct.
    Removing,
    /// Its removal was acknowledged: must be gone after any crash.
    Removed,
}

/// Every acknowledged write, across all rounds.
#[derive(Default)]
struct Ledger {
    services: BTreeMap<String, Fate>,
    secrets: BTreeMap<String, (Vec<u8>, Fate)>,
    tokens: BTreeMap<String, Fate>,
    handles: BTreeMap<String, Fate>,
}

type Shared = Arc<Mutex<Ledger>>;

/// A pseudo-random number from the clock (no seed to keep: every run differs).
fn jitter(range: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % range
}

async fn services(mut c: solo_client::Client, round: usize, l: Shared) {
    for i in 0.. {
        let id = format!("r{round}-{i}");
        let mut d = deploy_js(&id, echo_js());
        d.memory_mb = 8;
        if c.deploy(d).await.is_err() {
            return;
        }
        l.lock().services.insert(id.clone(), Fate::Done);
        if i % 3 == 0 {
            l.lock().services.insert(id.clone(), Fate::Removing);
            let k = pb::KillRequest {
                service_id: id.clone(),
                ..pb::KillRequest::default()
            };
            if c.kill(k).await.is_err() {
                return;
            }
            l.lock().services.insert(id, Fate::Removed);
        }
    }
}

async fn secrets(mut c: solo_client::Client, round: usize, l: Shared) {
    for i in 0u32.. {
        let name = format!("r{round}-{i}");
        let value =
            format!("value {round} {i} {}", "x".repeat((i % 7) as usize * 100)).into_bytes();
        let put = pb::PutSecretRequest {
            name: name.clone(),
            value: value.clone(),
        };
        if c.put_secret(put).await.is_err() {
            return;
        }
        l.lock()
            .secrets
            .insert(name.clone(), (value.clone(), Fate::Done));
        if i % 4 == 1 {
            l.lock()
                .secrets
                .insert(name.clone(), (value.clone(), Fate::Removing));
            let del = pb::DeleteSecretRequest { name: name.clone() };
            if c.delete_secret(del).await.is_err() {
                return;
            }
            l.lock().secrets.insert(name, (value, Fate::Removed));
        }
    }
}

async fn capabilities(mut c: solo_client::Client, l: Shared) {
    for i in 0u32.. {
        let grant = pb::GrantCapabilityRequest {
            resource: "service:anchor".into(),
            permissions: vec!["call".into()],
            ttl_seconds: 86_400,
        };
        let Ok(r) = c.grant_capability(grant).await else {
            return;
        };
        let token = r.into_inner().token;
        l.lock().tokens.insert(token.clone(), Fate::Done);
        if i % 3 == 2 {
            l.lock().tokens.insert(token.clone(), Fate::Removing);
            let revoke = pb::RevokeCapabilityRequest {
                token: token.clone(),
            };
            if c.revoke_capability(revoke).await.is_err() {
                return;
            }
            l.lock().tokens.insert(token, Fate::Removed);
        }
    }
}

async fn registrations(mut c: solo_client::Client, l: Shared) {
    for i in 0u32.. {
        let reg = pb::RegisterServiceRequest {
            service_id: "anchor".into(),
            service_name: "crash".into(),
            version: format!("{i}"),
            ..pb::RegisterServiceRequest::default()
        };
        let Ok(r) = c.register_service(reg).await else {
            return;
        };
        let handle = r.into_inner().service_handle;
        l.lock().handles.insert(handle.clone(), Fate::Done);
        if i % 2 == 1 {
            l.lock().handles.insert(handle.clone(), Fate::Removing);
            let dereg = pb::DeregisterServiceRequest {
                service_handle: handle.clone(),
            };
            if c.deregister_service(dereg).await.is_err() {
                return;
            }
            l.lock().handles.insert(handle, Fate::Removed);
        }
    }
}

/// Checks every acknowledged write of every round so far against the restarted server.
async fn check(s: &Server, l: &Ledger) {
    let mut c = s.admin().await;
    let listed = c
        .list(pb::ListRequest {
            limit: 10_000,
            ..pb::ListRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let running: std::collections::BTreeSet<String> =
        listed.services.into_iter().map(|x| x.service_id).collect();
    for (id, fate) in &l.services {
        match fate {
            Fate::Done => assert!(
                running.contains(id),
                "service {id} was acknowledged and is missing"
            ),
            Fate::Removed => assert!(
                !running.contains(id),
                "service {id} was killed and came back"
            ),
            Fate::Removing => {}
        }
    }
    for (name, (value, fate)) in &l.secrets {
        let got = c
            .get_secret(pb::GetSecretRequest { name: name.clone() })
            .await;
        match (fate, got) {
            (Fate::Done, Ok(r)) => assert!(r.into_inner().value == *value, "secret {name} changed"),
            (Fate::Done, Err(e)) => panic!("secret {name} was acknowledged: {}", reason(&e)),
            (Fate::Removed, Ok(_)) => panic!("secret {name} was deleted and came back"),
            (Fate::Removed, Err(e)) => assert_eq!(e.code(), tonic::Code::NotFound),
            (Fate::Removing, _) => {}
        }
    }
    for (token, fate) in &l.tokens {
        let v = c
            .verify_capability(pb::VerifyCapabilityRequest {
                token: token.clone(),
                resource: "service:anchor".into(),
                permission: "call".into(),
            })
            .await
            .unwrap()
            .into_inner();
        match fate {
            Fate::Done => assert!(v.valid, "a granted token is refused: {}", v.reason),
            Fate::Removed => assert!(!v.valid, "a revoked token is valid again"),
            Fate::Removing => {}
        }
    }
    let regs = c
        .get_services(pb::GetServicesRequest {
            service_name: "crash".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let handles: std::collections::BTreeSet<String> = regs
        .services
        .into_iter()
        .map(|x| x.service_handle)
        .collect();
    for (handle, fate) in &l.handles {
        match fate {
            Fate::Done => assert!(handles.contains(handle), "registration {handle} is missing"),
            Fate::Removed => assert!(!handles.contains(handle), "registration {handle} came back"),
            Fate::Removing => {}
        }
    }
    let verified = c
        .verify_events(pb::VerifyEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    c.call(call("anchor", json!("alive"))).await.unwrap();
}

#[test]
fn every_acknowledged_write_survives_kill_9_at_any_instant() {
    let rounds: usize = std::env::var("SOLO_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let env = [
        ("SOLO_LIMITS__MAX_SERVICES_PER_TENANT", "10000"),
        ("SOLO_LIMITS__MAX_MEMORY_MB_PER_TENANT", "10000000"),
    ];
    let mut s = Server::start_in(tempfile::tempdir().unwrap(), &env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        s.admin()
            .await
            .deploy(deploy_js("anchor", echo_js()))
            .await
            .unwrap();
    });
    let ledger: Shared = Arc::default();
    let mut writes = 0;
    for round in 0..rounds {
        rt.block_on(async {
            let c = s.admin().await;
            let mut tasks = tokio::task::JoinSet::new();
            tasks.spawn(services(c.clone(), round, Arc::clone(&ledger)));
            tasks.spawn(secrets(c.clone(), round, Arc::clone(&ledger)));
            tasks.spawn(capabilities(c.clone(), Arc::clone(&ledger)));
            tasks.spawn(registrations(c, Arc::clone(&ledger)));
            tokio::time::sleep(Duration::from_millis(150 + jitter(600))).await;
            s.kill9();
            while tasks.join_next().await.is_some() {}
        });
        s = Server::start_in(
            std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap()),
            &env,
        );
        let l = ledger.lock();
        rt.block_on(check(&s, &l));
        writes = l.services.len() + l.secrets.len() + l.tokens.len() + l.handles.len();
    }
    println!("{rounds} rounds of kill -9, {writes} acknowledged writes checked after each");
    assert!(
        writes > rounds * 4,
        "too little load to mean anything: {writes}"
    );
}
