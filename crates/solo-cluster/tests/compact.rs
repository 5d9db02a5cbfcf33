//! Log compaction against real NATS servers on loopback: the log is purged before the
//! latest copy of a view, never past what a live node has applied; a new node, and one
//! whose view is older than the log's first entry, start from the copy with the same
//! ids, hashes and state; a copy that cannot be used is refused and the old view kept.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use solo_cluster::testing::{NatsCluster, all_events, tick};
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_store::{EventLog, Kv, WriteBatch};

fn opts(cluster: &NatsCluster, dir: &std::path::Path) -> ClusterOptions {
    let mut o = ClusterOptions::new(cluster.client_urls(), cluster.monitor_urls(), dir.into());
    o.ack_timeout = Duration::from_secs(2);
    o
}

/// Writes `n` batches through `store`, each a key and an event.
async fn write(store: &JetStreamStore, from: u64, n: u64) {
    for i in from..from + n {
        let mut batch = WriteBatch::new();
        batch
            .put("state", i.to_be_bytes().to_vec(), b"v".to_vec())
            .unwrap();
        batch.event(tick(i));
        store.commit(batch).await.unwrap();
    }
}

/// Opens node `dir` and waits until it has applied what `like` has.
async fn caught_up(
    cluster: &NatsCluster,
    dir: &std::path::Path,
    like: &JetStreamStore,
) -> JetStreamStore {
    let node = JetStreamStore::open(opts(cluster, dir)).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        node.wait_applied(like.applied_sequence()),
    )
    .await
    .unwrap();
    node
}

/// Node `behind` writes 3 batches and goes (its view will be older than the log's first
/// entry once the log is compacted); then node `active` opens and is returned.
async fn left_behind_then_active(
    cluster: &NatsCluster,
    behind: &std::path::Path,
    active: &std::path::Path,
) -> JetStreamStore {
    {
        let c = JetStreamStore::open(opts(cluster, behind)).await.unwrap();
        write(&c, 0, 3).await;
    }
    JetStreamStore::open(opts(cluster, active)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_from_the_latest_copy_of_a_view_once_the_log_is_compacted() {
    let cluster = NatsCluster::start(3, true);
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = left_behind_then_active(&cluster, dc.path(), da.path()).await;
    write(&a, 3, 30).await;
    let mut big = WriteBatch::new();
    big.put("blobs", b"big".to_vec(), vec![7u8; 700 << 10])
        .unwrap();
    big.event(tick(99));
    a.commit(big).await.unwrap();
    assert_eq!(a.first_sequence().await.unwrap(), 1);

    // Never past what a live node has applied: here, one at entry 5.
    let partial = a.compact(5).await.unwrap();
    assert_eq!(partial.first_kept, 6);
    assert_eq!(a.first_sequence().await.unwrap(), 6);
    assert!(partial.bytes > 700 << 10, "{partial:?}");
    // Then as far as the copy allows.
    let done = a.compact(u64::MAX).await.unwrap();
    assert!(done.first_kept > 33, "{done:?}");
    assert_eq!(a.first_sequence().await.unwrap(), done.first_kept);
    assert!(
        !da.path().join("view.copy.redb").exists(),
        "the copy is removed"
    );
    write(&a, 33, 5).await;

    // A new node and the old one start from the copy, with the same ids, hashes and
    // state, and go on writing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for dir in [db.path(), dc.path()] {
        let node = caught_up(&cluster, dir, &a).await;
        assert_eq!(all_events(&node), all_events(&a));
        assert!(node.last_id() >= 39, "{}", node.last_id());
        assert!(node.verify().unwrap().first_broken.is_none());
        for i in 0..38u64 {
            assert_eq!(
                node.get("state", &i.to_be_bytes()).unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
        assert_eq!(node.get("blobs", b"big").unwrap().unwrap().len(), 700 << 10);
        let id = node.append(vec![tick(200)]).await.unwrap()[0];
        a.wait_applied(node.applied_sequence()).await;
        assert_eq!(a.last_id(), id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_cannot_be_used_is_refused_and_the_old_view_kept() {
    let cluster = NatsCluster::start(3, true);
    let (da, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = left_behind_then_active(&cluster, dc.path(), da.path()).await;
    write(&a, 3, 10).await;
    a.compact(u64::MAX).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // What node c's view holds, read from its file.
    let held = || {
        let view = solo_store::RedbStore::open(dc.path().join("view.redb")).unwrap();
        (
            view.last_id(),
            view.get("state", &2u64.to_be_bytes()).unwrap(),
        )
    };
    let old_view = held();
    assert_eq!(old_view, (3, Some(b"v".to_vec())));

    // Garbage in place of the copy (written by hand: Solo writes none).
    let client = async_nats::connect(cluster.client_urls()[0].as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = js
        .get_object_store(solo_cluster::compact::bucket_name("SOLO"))
        .await
        .unwrap();
    let meta = async_nats::jetstream::object_store::ObjectMetadata {
        name: "view".into(),
        metadata: [("resume".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    bucket
        .put(meta, &mut &b"not a store file at all"[..])
        .await
        .unwrap();
    let err = JetStreamStore::open(opts(&cluster, dc.path()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("compacted") && err.contains("does not open as a view"),
        "{err}"
    );
    assert_eq!(held(), old_view);
    assert!(!dc.path().join("view.next.redb").exists());

    // The log purged past the copy: refused too, saying which entry it needs.
    a.compact(u64::MAX).await.unwrap();
    let stream = js.get_stream("SOLO").await.unwrap();
    write(&a, 13, 2).await;
    stream.purge().sequence(a.applied_sequence()).await.unwrap();
    let err = JetStreamStore::open(opts(&cluster, dc.path()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("which was purged"), "{err}");
    assert_eq!(held(), old_view);

    // The next compaction writes a copy that serves.
    a.compact(u64::MAX).await.unwrap();
    let c = caught_up(&cluster, dc.path(), &a).await;
    assert_eq!(all_events(&c), all_events(&a));
}
