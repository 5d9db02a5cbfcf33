//! Leases decided by the log, against real NATS servers: one holder at a time, taken
//! over only once lapsed, and a lapsed holder's fenced writes refused on every node.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use solo_cluster::testing::NatsCluster;
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_store::{EventFilter, EventLog, EventQuery, Kv, StoreError, WriteBatch};

async fn node(cluster: &NatsCluster, dir: &std::path::Path, id: &str) -> JetStreamStore {
    let mut o = ClusterOptions::new(cluster.client_urls(), cluster.monitor_urls(), dir.into());
    o.node_id = id.into();
    JetStreamStore::open(o).await.unwrap()
}

fn put(key: &str, scope: &str, epoch: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put("state", key.as_bytes().to_vec(), b"v".to_vec())
        .unwrap();
    b.fenced(scope, epoch);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lets_its_lease_lapse_is_fenced_out_on_every_node() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&cluster, da.path(), "a").await;
    let b = node(&cluster, db.path(), "b").await;
    let scope = "svc/t1/s1";
    let ttl = Duration::from_millis(1500);

    let lease = a.acquire(scope, ttl).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("a", 1));
    a.commit(put("before", scope, 1)).await.unwrap();
    // b is refused while a's lease runs, and cannot write under it.
    let err = b.acquire(scope, ttl).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseHeld { ref holder, .. } if holder == "a"),
        "{err}"
    );
    let err = b.commit(put("intruder", scope, 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    // a renews: same epoch, later end.
    let renewed = a.acquire(scope, ttl).await.unwrap();
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.expires_ns > lease.expires_ns);

    // a stops renewing (a pause); once the lease lapses b takes it at a new epoch.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let taken = b.acquire(scope, ttl).await.unwrap();
    assert_eq!((taken.holder.as_str(), taken.epoch), ("b", 2));
    b.commit(put("after", scope, 2)).await.unwrap();
    // a comes back: its write under epoch 1 is refused, and so is its renewal.
    let err = a.commit(put("stale", scope, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { epoch: 1, .. }), "{err}");
    assert_eq!(err.code(), solo_types::Code::FailedPrecondition);
    assert!(a.acquire(scope, ttl).await.is_err());
    let target = b.applied_sequence().max(a.applied_sequence());
    a.wait_applied(target).await;
    b.wait_applied(target).await;
    for n in [&a, &b] {
        assert!(n.get("state", b"before").unwrap().is_some());
        assert!(n.get("state", b"after").unwrap().is_some());
        assert!(
            n.get("state", b"stale").unwrap().is_none(),
            "the fenced write is nowhere"
        );
        assert!(n.get("state", b"intruder").unwrap().is_none());
        assert_eq!(n.lease(scope).unwrap().unwrap().holder, "b");
    }
    // The log records each change of hands, with growing epochs.
    let acquired: Vec<(String, u64)> = a
        .read(&EventQuery {
            filter: EventFilter {
                kind: Some("lease_acquired".into()),
                ..EventFilter::default()
            },
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap()
        .events
        .iter()
        .map(|e| {
            (
                e.payload["holder"].as_str().unwrap().to_string(),
                e.payload["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(acquired, vec![("a".into(), 1), ("b".into(), 2)]);

    // b gives it up: a may take it at once, at epoch 3.
    b.release(&taken).await.unwrap();
    assert_eq!(a.acquire(scope, ttl).await.unwrap().epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_for_a_lease_get_one_holder_per_epoch() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&cluster, da.path(), "a").await;
    let b = node(&cluster, db.path(), "b").await;
    let ttl = Duration::from_secs(30);
    for round in 0..10 {
        let scope = format!("svc/t/race{round}");
        let (ra, rb) = tokio::join!(a.acquire(&scope, ttl), b.acquire(&scope, ttl));
        let winners: Vec<_> = [ra, rb].into_iter().filter_map(Result::ok).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one holder");
        assert_eq!(winners[0].epoch, 1);
    }
}

/// Writes queued together travel in one log entry; each is still decided on its own: a
/// stale fence refuses only its own batch, and every writer gets its own ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fence_refuses_only_its_own_batch_in_a_group() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&cluster, da.path(), "a").await;
    let b = node(&cluster, db.path(), "b").await;
    let scope = "svc/t1/grouped";
    let lease = a.acquire(scope, Duration::from_secs(30)).await.unwrap();
    // Submitted without waiting, so the publisher groups them.
    let writes: Vec<_> = (0..30u64)
        .map(|n| {
            let mut batch = put(
                &format!("k{n}"),
                scope,
                if n % 3 == 0 { 99 } else { lease.epoch },
            );
            batch.event(solo_types::NewEvent::system("custom.n", format!("n{n}")));
            a.commit(batch)
        })
        .collect();
    let mut ids = Vec::new();
    for (n, w) in writes.into_iter().enumerate() {
        match w.await {
            Ok(commit) => {
                assert_ne!(n % 3, 0, "write {n} had a stale fence");
                assert_eq!(commit.event_ids.len(), 1);
                ids.extend(commit.event_ids);
            }
            Err(e) => {
                assert_eq!(n % 3, 0, "write {n}: {e}");
                assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
            }
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "each writer has its own event id");
    let target = a.applied_sequence();
    b.wait_applied(target).await;
    for n in 0..30u64 {
        let present = b
            .get("state", format!("k{n}").as_bytes())
            .unwrap()
            .is_some();
        assert_eq!(present, n % 3 != 0, "k{n}");
    }
    for id in ids {
        let e = &b
            .read(&EventQuery {
                after_id: Some(id - 1),
                limit: 1,
                ..EventQuery::default()
            })
            .unwrap()
            .events[0];
        assert_eq!(e.id, id);
        assert_eq!(e.kind, "custom.n");
    }
}

/// Tenants placed on nodes: held under each node's own lease, renewed with it in one
/// entry, and lost with it at once when the node stops renewing (a pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_placed_on_a_node_live_and_lapse_with_its_lease() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&cluster, da.path(), "a").await;
    let b = node(&cluster, db.path(), "b").await;
    let ttl = Duration::from_millis(1500);
    a.acquire("node/a", ttl).await.unwrap();
    b.acquire("node/b", ttl).await.unwrap();
    // b places two tenants on a (placement), a places one on itself.
    let mut epochs = Vec::new();
    for t in ["t1", "t2"] {
        let l = b
            .place(&format!("tenant/{t}"), "a", "node/a")
            .await
            .unwrap();
        assert_eq!(
            (l.holder.as_str(), l.under.clone()),
            ("a", Some(("node/a".into(), 1)))
        );
        epochs.push(l.epoch);
    }
    a.place("tenant/t3", "a", "node/a").await.unwrap();
    // Refused: a tenant held elsewhere, a node lease the holder does not hold.
    let err = b.place("tenant/t1", "b", "node/b").await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseHeld { ref holder, .. } if holder == "a"),
        "{err}"
    );
    let err = b.place("tenant/t9", "b", "node/a").await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");

    // Renewing node/a alone keeps its tenants past the first lease's end.
    for _ in 0..4 {
        tokio::time::sleep(ttl / 3).await;
        a.acquire("node/a", ttl).await.unwrap();
        b.acquire("node/b", ttl).await.unwrap();
    }
    a.commit(put("t1-kept", "tenant/t1", epochs[0]))
        .await
        .unwrap();
    let held: Vec<String> = b
        .leases_held_by("a")
        .unwrap()
        .into_iter()
        .map(|l| l.scope)
        .collect();
    assert_eq!(held, ["node/a", "tenant/t1", "tenant/t2", "tenant/t3"]);

    // a stops renewing: every tenant on it lapses with node/a, b takes t1 over.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    b.acquire("node/b", ttl).await.unwrap();
    let taken = b.place("tenant/t1", "b", "node/b").await.unwrap();
    assert_eq!(taken.epoch, epochs[0] + 1);
    for (t, epoch) in [("t1", epochs[0]), ("t2", epochs[1])] {
        let err = a
            .commit(put(&format!("{t}-stale"), &format!("tenant/{t}"), epoch))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    }
    // a, back, holds node/a again at a new epoch, and none of its old tenants.
    assert_eq!(a.acquire("node/a", ttl).await.unwrap().epoch, 2);
    let t2 = a.lease("tenant/t2").unwrap().unwrap();
    assert_eq!(t2.expires_ns, 0, "t2 was held under node/a's first epoch");
    let target = a.applied_sequence().max(b.applied_sequence());
    a.wait_applied(target).await;
    b.wait_applied(target).await;
    for n in [&a, &b] {
        assert!(n.get("state", b"t1-kept").unwrap().is_some());
        assert!(n.get("state", b"t1-stale").unwrap().is_none());
        assert!(n.get("state", b"t2-stale").unwrap().is_none());
        assert_eq!(n.lease("tenant/t1").unwrap().unwrap().holder, "b");
    }
}
