//! Kernels sharing one store as cluster nodes do: a kernel serves only the tenants
//! placed on it, takes one on (adopt) with its services and their last snapshots, and
//! applies the configuration and egress changes another kernel makes (follow).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use solo_kernel::{Caller, DeployRequest, Kernel, KernelConfig, KernelOptions, Recovery, Serves};
use solo_store::Store;
use solo_types::{Code, Format, TenantId, kinds};

use crate::common::{self, sid, tenant};
use crate::{alice, events, js, value};

/// The tenants placed on a node, as its placement watch would keep them.
type Placed = Arc<parking_lot::RwLock<HashSet<TenantId>>>;

fn serving(placed: &Placed) -> Serves {
    let placed = Arc::clone(placed);
    Arc::new(move |t: &TenantId| placed.read().contains(t))
}

async fn node(store: Arc<dyn Store>, name: &str, serves: Option<Serves>) -> Kernel {
    Kernel::start(
        store,
        common::sandbox(500),
        KernelConfig::default(),
        KernelOptions {
            node: Some(name.into()),
            serves,
            ..KernelOptions::default()
        },
    )
    .await
    .unwrap()
}

fn bob() -> Caller {
    tenant("bob")
}

fn admin() -> Caller {
    Caller::admin(TenantId::new("ops").unwrap())
}

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn counter_at(k: &Kernel, who: &Caller, n: i64) {
    k.deploy(who, DeployRequest::new(sid("c"), Format::Js, js("counter")))
        .await
        .unwrap();
    let inc = format!(r#"{{"op":"inc","by":{n}}}"#);
    k.call(who, &sid("c"), &inc, Some(Duration::from_secs(5)))
        .await
        .unwrap();
}

async fn bobs_value(k: &Kernel) -> i64 {
    let r = k
        .call(
            &bob(),
            &sid("c"),
            r#"{"op":"get"}"#,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&r).unwrap()["value"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_serves_the_tenants_placed_on_it_and_adopts_one_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = common::store(dir.path());
    // A node serving everyone runs alice's and bob's counters, and stops (snapshots kept).
    let first = node(Arc::clone(&store), "n1", None).await;
    counter_at(&first, &alice(), 3).await;
    counter_at(&first, &bob(), 5).await;
    first
        .deploy(
            &bob(),
            DeployRequest::new(sid("d"), Format::Js, js("counter")),
        )
        .await
        .unwrap();
    // What a cluster places, by load: each tenant with its running services.
    let deployed = first.deployed_tenants().unwrap();
    assert_eq!(
        deployed
            .iter()
            .map(|(t, n)| (t.as_str(), *n))
            .collect::<Vec<_>>(),
        [("alice", 1), ("bob", 2)]
    );
    first
        .kill(&bob(), &sid("d"), solo_kernel::KillOptions::default())
        .await
        .unwrap();
    assert_eq!(first.deployed_tenants().unwrap()[&t("bob")], 1);
    first.shutdown().await;
    drop(first);

    // Another node, on which only alice is placed, brings back only hers.
    let placed = Placed::default();
    placed.write().insert(t("alice"));
    let k = node(Arc::clone(&store), "n2", Some(serving(&placed))).await;
    assert_eq!(
        k.recovery(),
        Recovery {
            recovered: 1,
            failed: 0
        }
    );
    assert_eq!(value(&k, "c").await, 3);
    assert!(k.status(&bob(), &sid("c")).is_err(), "bob's runs nowhere");
    // Bob's requests are refused, retryably; alice's and an admin's are admitted.
    let e = k.admit(&bob()).unwrap_err();
    assert_eq!(
        (e.code(), e.reason()),
        (Code::Unavailable, "not_placed_here")
    );
    assert!(e.to_string().contains("n2"), "{e}");
    drop(k.admit(&alice()).unwrap());
    drop(k.admit(&admin()).unwrap());

    // Bob is placed here: adopting him brings back his counter with its snapshot.
    placed.write().insert(t("bob"));
    drop(k.admit(&bob()).unwrap());
    let r = k.adopt(&t("bob")).await.unwrap();
    assert_eq!((r.recovered, r.failed), (1, 0));
    assert_eq!(bobs_value(&k).await, 5);
    // Adopting again starts nothing twice; alice's counter was left alone.
    let r = k.adopt(&t("bob")).await.unwrap();
    assert_eq!((r.recovered, r.failed), (0, 0));
    let r = k.adopt(&t("alice")).await.unwrap();
    assert_eq!((r.recovered, r.failed), (0, 0));
    assert_eq!(value(&k, "c").await, 3);
    // Two starts at n1 and n2 and one adoption: three service_recovered for the pair.
    let recovered = events(&k, kinds::SERVICE_RECOVERED);
    let of = |who: &str| {
        recovered
            .iter()
            .filter(|e| e.tenant.as_ref().is_some_and(|t| t.as_str() == who))
            .count()
    };
    assert_eq!((of("alice"), of("bob")), (1, 1));
    // The log says where each service began to run: deployed on n1, recovered on n2.
    let nodes = |kind: &str| -> Vec<String> {
        events(&k, kind)
            .iter()
            .map(|e| e.payload["node"].as_str().unwrap_or("none").to_string())
            .collect()
    };
    assert_eq!(nodes(kinds::SERVICE_STARTED), ["n1", "n1", "n1"]);
    assert_eq!(nodes(kinds::SERVICE_RECOVERED), ["n2", "n2"]);
    k.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_follows_the_changes_another_makes_to_config_and_egress() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = common::store(dir.path());
    let system = node(Arc::clone(&store), "n1", None).await;
    let other = Arc::new(node(Arc::clone(&store), "n2", None).await);
    let following = tokio::spawn({
        let other = Arc::clone(&other);
        async move { other.follow().await }
    });

    let key = "limits.max_per_tenant";
    let before = other.runtime_config(&admin()).unwrap().values[key];
    system.set_config(&admin(), key, "7").await.unwrap();
    system
        .change_egress(&admin(), &t("bob"), &["api.example.com:443".into()], true)
        .await
        .unwrap();
    let mut seen = (before, Vec::new());
    for _ in 0..200 {
        let rules = other.egress_rules(&admin(), Some(&t("bob"))).unwrap();
        seen = (
            other.runtime_config(&admin()).unwrap().values[key],
            rules.into_iter().flat_map(|r| r.rules).collect(),
        );
        if seen.0 == 7 && !seen.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(before, 7);
    assert_eq!(seen, (7, vec!["https://api.example.com:443".to_string()]));
    // And a removal too.
    system
        .change_egress(&admin(), &t("bob"), &["api.example.com:443".into()], false)
        .await
        .unwrap();
    let mut left = vec![String::new()];
    for _ in 0..200 {
        left = other
            .egress_rules(&admin(), Some(&t("bob")))
            .unwrap()
            .into_iter()
            .flat_map(|r| r.rules)
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(left.is_empty(), "{left:?}");

    // A token bob grants through one node routes to bob from the other at once; a
    // token nobody granted routes nowhere.
    let granted = system
        .grant_capability(
            &bob(),
            solo_kernel::GrantRequest {
                resource: solo_types::Resource::Any,
                permissions: solo_types::Permissions::parse(["read"]).unwrap(),
                ttl_seconds: Some(60),
            },
        )
        .await
        .unwrap();
    assert_eq!(other.token_tenant(granted.token.expose()), Some(t("bob")));
    assert_eq!(
        other.token_tenant(&format!("solo_{}", "x".repeat(43))),
        None
    );
    following.abort();
    system.shutdown().await;
    other.shutdown().await;
}
