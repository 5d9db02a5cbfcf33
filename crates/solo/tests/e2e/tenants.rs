//! Cluster mode `tenants` end to end: three NATS servers and three Solo nodes, each
//! serving the tenants placed on it. A tenant's first request places it on the node it
//! reached; any node forwards a tenant's requests (calls, swaps) to the node serving it; a service's
//! call to another tenant's service on another node crosses nodes; `kill -9` of a
//! node moves its tenants to the survivors, each service back with its last checkpoint,
//! while the other tenants go on undisturbed; a node paused past its lease loses its
//! tenants to the others and exits when it wakes, its writes fenced out.

use std::time::{Duration, Instant};

use serde_json::json;
use solo_cluster::testing::NatsCluster;
use solo_types::api::{GrantRequest, SwapMode, SwapRequest};
use solo_types::{Format, Permissions, Resource, ServiceId};

use crate::cluster::{count, respawn, signal, spawn_node_tls};
use crate::harness::{Server, call, counter_js};

const TENANTS: [(&str, &str); 1] = [("SOLO_CLUSTER__MODE", "tenants")];

fn node(nats: &NatsCluster, id: &str, shared: Option<&Server>) -> Server {
    let shared = shared.map(Server::data_dir);
    spawn_node_tls(nats, id, shared.as_deref(), None, &TENANTS)
        .wait(Duration::from_secs(60))
        .0
}

/// `tenant`'s counter through `node`: the reply to `op`.
async fn counter(node: &Server, tenant: &str, op: serde_json::Value) -> Result<i64, tonic::Status> {
    let mut c = node.tenant(tenant).await;
    let r = c.call(call("counter", op)).await?;
    Ok(count(&r.into_inner().reply))
}

/// Which node runs `tenant`'s counter, asked through `node`.
async fn runs_on(node: &Server, tenant: &str) -> String {
    let v = node
        .rest(&node.tenant_profile(tenant))
        .get("/v1/services/counter")
        .await
        .1;
    v["node"].as_str().unwrap_or_default().to_string()
}

/// Increments `tenant`'s counter through `node` until it answers (within 30 s).
async fn inc_until_answered(node: &Server, tenant: &str) -> i64 {
    let since = Instant::now();
    loop {
        match counter(node, tenant, json!({"op": "inc", "by": 1})).await {
            Ok(n) => return n,
            Err(e) => {
                assert!(since.elapsed() < Duration::from_secs(30), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `(holder, epoch)` of every placement of `tenant`, oldest first, from the log.
fn placements(node: &Server, tenant: &str) -> Vec<(String, u64)> {
    let v = node.cli_json(&["events", "--kind", "lease_acquired", "--limit", "100"]);
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == format!("tenant/{tenant}"))
        .map(|e| {
            (
                e["payload"]["holder"].as_str().unwrap().to_string(),
                e["payload"]["epoch"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Calls or casts `to` with `body` and `token`, answering a refusal as `denied: <reason>`.
const RELAY: &str = r#"export async function handleCall(r) {
  try {
    if (r.cast) { solo.cast(r.to, r.body, { token: r.token }); return "cast"; }
    return await solo.call(r.to, r.body, { timeoutMs: 3000, token: r.token });
  } catch (e) { return "denied: " + e.code; }
}"#;

/// A token `tenant` grants through `node` to call its `service`, for ten minutes.
async fn grant_call(node: &Server, tenant: &str, service: &str) -> String {
    let granted = node
        .tenant_profile(tenant)
        .open()
        .await
        .unwrap()
        .grant(&GrantRequest {
            resource: Resource::Service(ServiceId::new(service).unwrap()),
            permissions: Permissions::parse(["call"]).unwrap(),
            ttl_seconds: Some(600),
        })
        .await
        .unwrap();
    granted.token.expose().to_string()
}

/// A service of alice's on a calls and casts to bob's counter on b with a token bob
/// granted (asked through c): the call crosses nodes, b verifies the token; a token bob
/// never granted, alice's own, or none, is refused. Bob's count goes from 7 to 8 by the
/// cast.
async fn across_nodes(a: &Server, b: &Server, c: &Server) {
    let token = grant_call(b, "bob", "counter").await;
    a.tenant("alice")
        .await
        .deploy(crate::deploy_js("relay", RELAY.into()))
        .await
        .unwrap();
    let relay = |body: serde_json::Value| async move {
        let mut alice = c.tenant("alice").await;
        let r = alice.call(call("relay", body)).await.unwrap();
        serde_json::from_str::<serde_json::Value>(&r.into_inner().reply).unwrap()
    };
    let get = json!({"op": "get"});
    let got = relay(json!({"to": "bob/counter", "body": get, "token": token})).await;
    assert_eq!(got["value"], 7, "{got}");
    // alice's own token for her relay does not open bob's counter: refused on a, before
    // anything crosses.
    let alices = json!(grant_call(a, "alice", "relay").await);
    for bad in [json!("solo_not_a_token"), alices, serde_json::Value::Null] {
        let got = relay(json!({"to": "bob/counter", "body": get, "token": bad})).await;
        assert!(
            got.as_str().is_some_and(|s| s.starts_with("denied: ")),
            "{got}"
        );
    }
    let inc = json!({"op": "inc", "by": 1});
    let got = relay(json!({"to": "bob/counter", "body": inc, "token": token, "cast": true})).await;
    assert_eq!(got, "cast");
    let since = Instant::now();
    while counter(c, "bob", get.clone()).await.unwrap() != 8 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the cast reached bob's counter"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_their_tenants_and_a_dead_nodes_tenants_move() {
    let nats = NatsCluster::start(3, true);
    let mut a = node(&nats, "a", None);
    let b = node(&nats, "b", Some(&a));
    let c = node(&nats, "c", Some(&a));
    // Set through a, followed by every node: services save a checkpoint 200 ms after
    // their messages.
    a.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Alice comes to a and bob to b: each is placed where it came first.
    for (n, who, by) in [(&a, "alice", 5), (&b, "bob", 7)] {
        n.tenant(who)
            .await
            .deploy(crate::deploy_js("counter", counter_js()))
            .await
            .unwrap();
        let got = counter(n, who, json!({"op": "inc", "by": by}))
            .await
            .unwrap();
        assert_eq!(got, by);
    }
    // Any node answers for either: c forwards alice's call to a and bob's to b.
    assert_eq!(counter(&c, "alice", json!({"op": "get"})).await.unwrap(), 5);
    assert_eq!(counter(&c, "bob", json!({"op": "get"})).await.unwrap(), 7);
    assert_eq!(counter(&a, "bob", json!({"op": "get"})).await.unwrap(), 7);
    assert_eq!(runs_on(&c, "alice").await, "a");
    assert_eq!(runs_on(&a, "bob").await, "b");
    across_nodes(&a, &b, &c).await;
    // Bob's counter swapped to WebAssembly through a (b serves bob), its count carried.
    let swapped = a
        .tenant_profile("bob")
        .open()
        .await
        .unwrap()
        .swap(&SwapRequest {
            service_id: ServiceId::new("counter").unwrap(),
            format: Format::Wasm,
            code: solo_guests::wasm("counter").into(),
            mode: SwapMode::Swap,
            rollback_window: None,
        })
        .await
        .unwrap();
    assert_eq!((swapped.version, swapped.state_carried), (2, true));
    assert_eq!(counter(&c, "bob", json!({"op": "get"})).await.unwrap(), 8);
    // Health through any node lists the three serving.
    let health = c.cli_json(&["health"]);
    let roles: Vec<_> = health["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["serving", "serving", "serving"], "{health}");
    // An admin asks any node for one node's tree (--node): a's holds alice, b's bob.
    for (n, here, not) in [("a", "alice", "bob"), ("b", "bob", "alice")] {
        let tree = c.cli_json(&["--node", n, "tree"]).to_string();
        assert!(tree.contains(&format!("\"node\":\"{n}\"")), "{tree}");
        assert!(tree.contains(&format!("\"{here}\"")), "{tree}");
        assert!(!tree.contains(&format!("\"{not}\"")), "{tree}");
    }
    // Or every serving node's, one after another.
    let all = c.cli_json(&["tree", "--all"]);
    let on: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(on, ["a", "b", "c"], "{all}");
    let nowhere = c.cli(&["--node", "zz", "tree"]);
    assert!(!nowhere.status.success());
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert!(said.contains("not a live node"), "{said}");

    // a dies with alice's counter checkpointed; alice answers again from c or b.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    a.kill9();
    let killed = Instant::now();
    let back = inc_until_answered(&c, "alice").await;
    println!(
        "tenants failover: kill -9 to alice's first answered call: {:?}",
        killed.elapsed()
    );
    assert_eq!(back, 6, "alice's counter came back from its checkpoint");
    let now_on = runs_on(&b, "alice").await;
    assert!(now_on == "b" || now_on == "c", "{now_on}");
    // Bob was never disturbed, and the chain verifies from any node.
    assert_eq!(counter(&c, "bob", json!({"op": "get"})).await.unwrap(), 8);
    let verify = b.cli_json(&["events", "verify"]);
    assert_eq!(verify["ok"], json!(true), "{verify}");
    // No service ran on two nodes at once: alice's counter and relay were recovered
    // once each, by the node they moved to, after a's lease lapsed.
    let recovered = b.cli_json(&["events", "--kind", "service_recovered", "--limit", "10"]);
    let on: Vec<&str> = recovered["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(on, [now_on.as_str(); 2], "{recovered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_loses_its_tenants_and_exits_when_it_wakes() {
    let nats = NatsCluster::start(3, true);
    let mut a = node(&nats, "a", None);
    let b = node(&nats, "b", Some(&a));
    a.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]);
    a.tenant("alice")
        .await
        .deploy(crate::deploy_js("counter", counter_js()))
        .await
        .unwrap();
    assert_eq!(
        counter(&a, "alice", json!({"op": "inc", "by": 5}))
            .await
            .unwrap(),
        5
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // a stops; once its lease lapses, alice is placed on b and answers there.
    let pid = a.child.as_ref().unwrap().id();
    signal(pid, libc::SIGSTOP);
    assert_eq!(inc_until_answered(&b, "alice").await, 6);
    assert_eq!(runs_on(&b, "alice").await, "b");
    // a wakes: its lease is gone, and it leaves rather than serve alice twice.
    signal(pid, libc::SIGCONT);
    let status = a.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{}", a.stderr());
    // From the log: alice was held by one node at a time, a then b at a new epoch, and
    // her counter was recovered once; her count went on from b's copy.
    assert_eq!(
        placements(&b, "alice"),
        [("a".to_string(), 1), ("b".to_string(), 2)]
    );
    let recovered = b.cli_json(&["events", "--kind", "service_recovered", "--limit", "10"]);
    assert_eq!(
        recovered["events"].as_array().unwrap().len(),
        1,
        "{recovered}"
    );
    assert_eq!(counter(&b, "alice", json!({"op": "get"})).await.unwrap(), 6);
    let verify = b.cli_json(&["events", "verify"]);
    assert_eq!(verify["ok"], json!(true), "{verify}");
}

/// Two NATS servers of three die: the node cannot renew its lease and stops (status 3);
/// started again while there is no quorum it waits for the log, and once a server
/// returns it serves alice again with her checkpointed count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_nats_quorum_a_node_stops_and_serves_again_once_a_server_returns() {
    let mut nats = NatsCluster::start(3, true);
    let mut a = node(&nats, "a", None);
    a.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]);
    a.tenant("alice")
        .await
        .deploy(crate::deploy_js("counter", counter_js()))
        .await
        .unwrap();
    assert_eq!(inc_until_answered(&a, "alice").await, 1);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    nats.kill(1);
    nats.kill(2);
    // Its lease cannot be renewed without a quorum: it stops, status 3.
    let status = a.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{}", a.stderr());
    // Started again meanwhile (as its service manager would), it waits for the log to
    // be reachable, neither serving nor exiting.
    let mut starting = respawn(a, &TENANTS);
    let since = Instant::now();
    while !starting.stderr().contains("cannot be reached yet") {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "{}",
            starting.stderr()
        );
        assert_eq!(starting.exited(), None, "{}", starting.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!starting.printed_within(Duration::from_secs(2)));
    assert_eq!(starting.exited(), None, "{}", starting.stderr());
    nats.restart(1);
    let back = Instant::now();
    let (a, _) = starting.wait(Duration::from_secs(60));
    assert_eq!(inc_until_answered(&a, "alice").await, 2);
    println!(
        "quorum back to alice's first answered call: {:?}",
        back.elapsed()
    );
}
