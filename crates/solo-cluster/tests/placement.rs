//! Placing tenants on live nodes against real NATS servers: spread by load, kept while
//! the node keeps its lease, placed again on the survivors once it lapses, and one node
//! per tenant when two placers race.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use solo_cluster::placement::node_scope;
use solo_cluster::testing::NatsCluster;
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_types::clock::system_now_ns;

async fn node(cluster: &NatsCluster, dir: &std::path::Path, id: &str) -> JetStreamStore {
    let mut o = ClusterOptions::new(cluster.client_urls(), cluster.monitor_urls(), dir.into());
    o.node_id = id.into();
    JetStreamStore::open(o).await.unwrap()
}

/// Tenant → node, as `n`'s view holds the placements.
fn where_placed(n: &JetStreamStore) -> BTreeMap<String, String> {
    n.placements(system_now_ns())
        .unwrap()
        .into_iter()
        .flat_map(|(node, tenants)| tenants.into_iter().map(move |t| (t, node.clone())))
        .collect()
}

async fn settle(nodes: &[&JetStreamStore]) {
    let target = nodes
        .iter()
        .map(|n| n.applied_sequence())
        .max()
        .unwrap_or(0);
    for n in nodes {
        n.wait_applied(target).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_spread_over_live_nodes_and_move_when_one_lapses() {
    let cluster = NatsCluster::start(3, true);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(&cluster, dirs[0].path(), "a").await;
    let b = node(&cluster, dirs[1].path(), "b").await;
    let c = node(&cluster, dirs[2].path(), "c").await;
    let ttl = Duration::from_millis(1500);
    for n in [&a, &b, &c] {
        n.acquire(&node_scope(n.node_id()), ttl).await.unwrap();
    }
    // Each placer plans from its own view: let every view see every node first.
    settle(&[&a, &b, &c]).await;
    let wanted: BTreeMap<String, usize> = [("t1", 3), ("t2", 3), ("t3", 3), ("t4", 1), ("t5", 1)]
        .iter()
        .map(|(t, n)| ((*t).to_string(), *n))
        .collect();
    // Any node places; the heaviest go first, one per node, then the light ones.
    let placed = b.place_tenants(&wanted, system_now_ns()).await.unwrap();
    assert_eq!(placed.len(), 5);
    settle(&[&a, &b, &c]).await;
    let on = where_placed(&c);
    assert_eq!(
        on.iter()
            .map(|(t, n)| (t.as_str(), n.as_str()))
            .collect::<Vec<_>>(),
        [
            ("t1", "a"),
            ("t2", "b"),
            ("t3", "c"),
            ("t4", "a"),
            ("t5", "b")
        ]
    );
    // Placing again changes nothing.
    assert!(
        a.place_tenants(&wanted, system_now_ns())
            .await
            .unwrap()
            .is_empty()
    );

    // c stops renewing; a and b renew. Once c's lease lapses, its tenant goes to the
    // less loaded survivor, and nothing else moves.
    for _ in 0..5 {
        tokio::time::sleep(ttl / 3).await;
        a.acquire(&node_scope("a"), ttl).await.unwrap();
        b.acquire(&node_scope("b"), ttl).await.unwrap();
    }
    settle(&[&a, &b]).await;
    let live = a.placements(system_now_ns()).unwrap();
    assert_eq!(live.keys().collect::<Vec<_>>(), ["a", "b"]);
    let placed = a.place_tenants(&wanted, system_now_ns()).await.unwrap();
    assert_eq!(
        placed
            .iter()
            .map(|l| (l.scope.as_str(), l.holder.as_str()))
            .collect::<Vec<_>>(),
        [("tenant/t3", "a")]
    );
    assert!(placed[0].epoch > 1, "placed again at a new epoch");
    settle(&[&a, &b]).await;
    let on = where_placed(&b);
    assert_eq!(on["t3"], "a");
    assert_eq!((on["t1"].as_str(), on["t2"].as_str()), ("a", "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_placers_put_each_tenant_on_one_node() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&cluster, da.path(), "a").await;
    let b = node(&cluster, db.path(), "b").await;
    let ttl = Duration::from_secs(10);
    a.acquire(&node_scope("a"), ttl).await.unwrap();
    b.acquire(&node_scope("b"), ttl).await.unwrap();
    settle(&[&a, &b]).await;
    let wanted: BTreeMap<String, usize> =
        (0..40).map(|i| (format!("t{i:02}"), 1 + i % 3)).collect();
    let now = system_now_ns();
    let (pa, pb) = tokio::join!(a.place_tenants(&wanted, now), b.place_tenants(&wanted, now));
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    // Both planned the same moves from the same view: the second placement of a tenant
    // on the same node holds the first (same epoch), none moved a tenant elsewhere.
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for l in pa.iter().chain(&pb) {
        let first = seen
            .entry(l.scope.clone())
            .or_insert_with(|| (l.holder.clone(), l.epoch));
        assert_eq!(*first, (l.holder.clone(), 1), "{}", l.scope);
    }
    assert_eq!(seen.len(), 40);
    settle(&[&a, &b]).await;
    let on = where_placed(&a);
    assert_eq!(on, where_placed(&b));
    assert_eq!(on.len(), 40);
    let on_a = on.values().filter(|n| *n == "a").count();
    assert!((15..=25).contains(&on_a), "{on_a} of 40 on a");
}
