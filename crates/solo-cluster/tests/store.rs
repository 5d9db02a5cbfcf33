//! The replicated store against real NATS servers on loopback: nodes agree on every id
//! and hash, restart without applying anything twice, read again what their view lost,
//! carry batches larger than a NATS message, refuse an unsafe log, and ride out the loss
//! of NATS servers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use solo_cluster::check::ClusterError;
use solo_cluster::testing::{NatsCluster, all_events, tick};
use solo_cluster::{ClusterOptions, JetStreamStore};
use solo_store::{EventLog, Kv, StoreError, WriteBatch};

fn opts(cluster: &NatsCluster, dir: &std::path::Path, replicas: usize) -> ClusterOptions {
    let mut o = ClusterOptions::new(cluster.client_urls(), cluster.monitor_urls(), dir.into());
    o.replicas = replicas;
    o.ack_timeout = Duration::from_secs(2);
    o
}

/// Waits until both nodes have applied the log as far as either has.
async fn settle(a: &JetStreamStore, b: &JetStreamStore) {
    let target = a.applied_sequence().max(b.applied_sequence());
    tokio::time::timeout(Duration::from_secs(20), async {
        a.wait_applied(target).await;
        b.wait_applied(target).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_writing_at_once_agree_on_every_id_and_hash() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
        .await
        .unwrap();
    let b = JetStreamStore::open(opts(&cluster, db.path(), 3))
        .await
        .unwrap();
    let mut writes = Vec::new();
    for n in 0..60u64 {
        let store = if n % 2 == 0 { &a } else { &b };
        let mut batch = WriteBatch::new();
        batch
            .put("state", n.to_be_bytes().to_vec(), b"v".to_vec())
            .unwrap();
        let first = batch.next_event_index();
        batch.event(tick(n));
        batch.event_caused_by(tick(n + 1000), first);
        writes.push(store.commit(batch));
    }
    let mut ids = Vec::new();
    for w in writes {
        let commit = w.await.unwrap();
        assert_eq!(commit.event_ids.len(), 2);
        assert_eq!(commit.event_ids[1], commit.event_ids[0] + 1);
        ids.extend(commit.event_ids);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=120).collect::<Vec<u64>>(), "dense ids, each once");
    settle(&a, &b).await;
    let (ea, eb) = (all_events(&a), all_events(&b));
    assert_eq!(ea.len(), 120);
    assert_eq!(ea, eb, "the same events, stamps and hashes on both nodes");
    for e in &ea {
        if e.id % 2 == 0 {
            assert_eq!(e.causation_id, Some(e.id - 1));
        }
    }
    for store in [&a, &b] {
        let report = store.verify().unwrap();
        assert_eq!((report.checked, report.first_broken), (120, None));
        for n in 0..60u64 {
            assert_eq!(
                store.get("state", &n.to_be_bytes()).unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_restarts_applies_each_batch_exactly_once() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = JetStreamStore::open(opts(&cluster, db.path(), 3))
        .await
        .unwrap();
    {
        let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
            .await
            .unwrap();
        for n in 0..10 {
            a.append(vec![tick(n)]).await.unwrap();
        }
    }
    // While node a is down, node b writes, one batch spanning several messages.
    for n in 10..20 {
        b.append(vec![tick(n)]).await.unwrap();
    }
    let mut big = WriteBatch::new();
    big.put("blobs", b"big".to_vec(), vec![7u8; 700 << 10])
        .unwrap();
    big.event(tick(99));
    b.commit(big).await.unwrap();
    let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
        .await
        .unwrap();
    // Open returns once the view has caught up with the log as it was at start.
    assert_eq!(a.last_id(), 21);
    assert_eq!(all_events(&a), all_events(&b));
    assert_eq!(a.get("blobs", b"big").unwrap().unwrap().len(), 700 << 10);
    assert!(a.verify().unwrap().first_broken.is_none());
}

/// Copies the view's files (the store file and its WAL) from one directory to another.
fn copy_view(from: &std::path::Path, to: &std::path::Path) {
    for name in ["view.redb", "view.wal"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_lost_its_last_commits_reads_them_again_from_the_log() {
    // The view does not sync its commits (the log is what makes a write durable): a crash
    // of the machine may take its last commits, and the node's own acknowledged writes
    // among them. Here the loss is made by putting back the view's files as they were.
    let cluster = NatsCluster::start(3, true);
    let (da, older) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reopen = || JetStreamStore::open(opts(&cluster, da.path(), 3));
    {
        let a = reopen().await.unwrap();
        assert!(!opts(&cluster, da.path(), 3).sync_view, "off by default");
        for n in 0..10 {
            a.append(vec![tick(n)]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    copy_view(da.path(), older.path());
    let before = {
        let a = reopen().await.unwrap();
        for n in 10..20 {
            let mut batch = WriteBatch::new();
            batch.put("state", vec![n as u8], b"v".to_vec()).unwrap();
            batch.event(tick(n));
            assert_eq!(a.commit(batch).await.unwrap().event_ids, vec![n + 1]);
        }
        all_events(&a)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    copy_view(older.path(), da.path());
    let a = reopen().await.unwrap();
    assert_eq!(
        a.last_id(),
        20,
        "the lost commits are applied again at start"
    );
    assert_eq!(
        all_events(&a),
        before,
        "with the same ids, stamps and hashes"
    );
    for n in 10..20u8 {
        assert_eq!(a.get("state", &[n]).unwrap().as_deref(), Some(&b"v"[..]));
    }
    assert!(a.verify().unwrap().first_broken.is_none());
    a.append(vec![tick(20)]).await.unwrap();
    assert_eq!(a.last_id(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_nats_message_applies_whole_on_every_node() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
        .await
        .unwrap();
    let b = JetStreamStore::open(opts(&cluster, db.path(), 3))
        .await
        .unwrap();
    let value: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
    let mut batch = WriteBatch::new();
    batch.put("code", b"svc".to_vec(), value.clone()).unwrap();
    batch.event(tick(1));
    // Small writes from the other node interleave with the big one's parts.
    let small = async {
        for n in 0..20 {
            b.append(vec![tick(n)]).await.unwrap();
        }
    };
    let (big, ()) = tokio::join!(a.commit(batch), small);
    big.unwrap();
    settle(&a, &b).await;
    for store in [&a, &b] {
        assert_eq!(store.get("code", b"svc").unwrap().unwrap(), value);
        assert_eq!(store.last_id(), 21);
    }
    assert_eq!(all_events(&a), all_events(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_log_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Servers that acknowledge before they sync.
    let lazy = NatsCluster::start(3, false);
    let err = JetStreamStore::open(opts(&lazy, dir.path(), 3))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClusterError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("sync_interval: always"), "{err}");
    drop(lazy);

    let cluster = NatsCluster::start(3, true);
    // No monitoring endpoint: syncing cannot be checked.
    let mut blind = opts(&cluster, dir.path(), 3);
    blind.monitor_urls.clear();
    let err = JetStreamStore::open(blind).await.err().unwrap();
    assert!(err.to_string().contains("cannot be checked"), "{err}");
    // A log created with one replica is refused by a node configured for three.
    let mut single = opts(&cluster, dir.path(), 1);
    single.stream = "THIN".into();
    JetStreamStore::open(single.clone()).await.unwrap();
    single.replicas = 3;
    let err = JetStreamStore::open(single).await.err().unwrap();
    assert!(err.to_string().contains("keeps 1 replica(s)"), "{err}");
    // Nothing listening.
    let mut nowhere = opts(&cluster, dir.path(), 3);
    nowhere.nats_urls = vec!["nats://127.0.0.1:1".into()];
    let err = JetStreamStore::open(nowhere).await.err().unwrap();
    assert!(matches!(err, ClusterError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_log_entry_is_skipped_alike_on_every_node() {
    let cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
        .await
        .unwrap();
    a.append(vec![tick(1)]).await.unwrap();
    let client = async_nats::connect(cluster.client_urls()[0].as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    for junk in [&b""[..], b"\x01\x00garbage", b"\x09"] {
        js.publish("solo.log", bytes::Bytes::copy_from_slice(junk))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    a.append(vec![tick(2)]).await.unwrap();
    let b = JetStreamStore::open(opts(&cluster, db.path(), 3))
        .await
        .unwrap();
    settle(&a, &b).await;
    assert_eq!(a.last_id(), 2);
    assert_eq!(all_events(&a), all_events(&b));
    assert!(b.verify().unwrap().first_broken.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_one_lost_nats_server_and_are_refused_without_a_quorum() {
    let mut cluster = NatsCluster::start(3, true);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&cluster, dir.path(), 3);
    o.retry_for = Duration::from_secs(25);
    let store = JetStreamStore::open(o).await.unwrap();
    let mut acked = 0u64;
    for n in 0..5 {
        store.append(vec![tick(n)]).await.unwrap();
        acked += 1;
    }
    // One of three down: writes go on (after a leader election if it led).
    cluster.kill(0);
    for n in 5..10 {
        store.append(vec![tick(n)]).await.unwrap();
        acked += 1;
    }
    // Two of three down: no quorum, writes are refused clearly once the retries run out.
    cluster.kill(1);
    let started = std::time::Instant::now();
    let err = store.append(vec![tick(100)]).await.unwrap_err();
    assert!(matches!(err, StoreError::ClusterUnavailable(_)), "{err}");
    assert!(err.is_unavailable());
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "retried first"
    );
    // One comes back: writes resume.
    cluster.restart(1);
    for n in 10..15 {
        store.append(vec![tick(n)]).await.unwrap();
        acked += 1;
    }
    let events = all_events(&store);
    let ns: Vec<u64> = events
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    for n in 0..15 {
        assert!(ns.contains(&n), "acknowledged write {n} is present");
    }
    assert!(events.len() as u64 >= acked);
    assert!(store.verify().unwrap().first_broken.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_one_nats_server_is_down() {
    let mut cluster = NatsCluster::start(3, true);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = JetStreamStore::open(opts(&cluster, da.path(), 3))
        .await
        .unwrap();
    a.append(vec![tick(1)]).await.unwrap();
    // One server of three down: its syncing cannot be checked, the other two hold a
    // majority of the replicas and are checked, so a node still starts.
    let urls = cluster.client_urls();
    cluster.kill(2);
    let mut o = opts(&cluster, db.path(), 3);
    o.nats_urls = urls[..2].to_vec();
    let b = JetStreamStore::open(o).await.unwrap();
    b.append(vec![tick(2)]).await.unwrap();
    assert_eq!(b.last_id(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_nats_over_tls_with_their_own_certificate_and_nothing_else_gets_in() {
    let files = solo_cluster::testing::TlsFiles::generate();
    let cluster = NatsCluster::start_with(3, true, Some(&files));
    let dir = tempfile::tempdir().unwrap();
    let tls = |cert: &std::path::Path, key: &std::path::Path| solo_cluster::NatsTls {
        ca_file: files.ca.clone(),
        cert_file: cert.to_path_buf(),
        key_file: key.to_path_buf(),
    };
    let mut o = opts(&cluster, dir.path(), 3);
    o.tls = Some(tls(&files.client_cert, &files.client_key));
    let store = JetStreamStore::open(o.clone()).await.unwrap();
    store.append(vec![tick(1)]).await.unwrap();
    assert_eq!(store.last_id(), 1);
    drop(store);
    // Without TLS, with another CA's certificate, or with a missing file: refused.
    for (name, bad) in [
        ("plaintext", None),
        (
            "a foreign certificate",
            Some(tls(&files.foreign_cert, &files.foreign_key)),
        ),
        (
            "a missing key",
            Some(tls(&files.client_cert, &dir.path().join("nowhere.pem"))),
        ),
    ] {
        let mut o = o.clone();
        o.tls = bad;
        o.retry_for = Duration::from_secs(2);
        let err = JetStreamStore::open(o).await.err().unwrap();
        assert!(matches!(err, ClusterError::Connect { .. }), "{name}: {err}");
    }
}
