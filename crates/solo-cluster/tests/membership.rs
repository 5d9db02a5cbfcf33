//! Cluster membership against real NATS servers: every node's heartbeat is read back by
//! every node, listeners and all, and a node that stops beating ages.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use solo_cluster::testing::NatsCluster;
use solo_cluster::{ClusterOptions, Heartbeat, JetStreamStore, Member, Membership};
use solo_store::{Kv, WriteBatch};

async fn node(cluster: &NatsCluster, dir: &std::path::Path, id: &str) -> JetStreamStore {
    let mut o = ClusterOptions::new(cluster.client_urls(), cluster.monitor_urls(), dir.into());
    o.node_id = id.into();
    JetStreamStore::open(o).await.unwrap()
}

fn beat(id: &str) -> Heartbeat {
    Heartbeat {
        node: id.into(),
        grpc: None,
        http: None,
        version: "test".into(),
        started_ms: 1,
        applied: 0,
        resume: 0,
    }
}

/// What `m` reads once `ready` holds of it (within 10 s).
async fn until(m: &Membership, ready: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    let since = Instant::now();
    loop {
        let seen = m.members();
        if ready(&seen) {
            return seen;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_every_heartbeat_and_a_silent_node_ages() {
    let cluster = NatsCluster::start(3, true);
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_millis(1_000);
    let a = node(&cluster, &dir.path().join("a"), "a").await;
    let b = node(&cluster, &dir.path().join("b"), "b").await;
    // Something in the log, so each heartbeat has a sequence to say.
    let mut batch = WriteBatch::new();
    batch.put("t", b"k".to_vec(), b"v".to_vec()).unwrap();
    a.commit(batch).await.unwrap();
    b.wait_applied(a.applied_sequence()).await;
    let ma = a.membership(lease, beat("a"));
    let mb = b.membership(lease, beat("b"));
    ma.listening(Some("127.0.0.1:1".into()), Some("127.0.0.1:2".into()));
    let run_a = tokio::spawn(std::sync::Arc::clone(&ma).run());
    let run_b = tokio::spawn(std::sync::Arc::clone(&mb).run());

    // Each reads both, sorted by name, with what each said about itself and how far
    // its view had applied the log.
    let applied = a.applied_sequence();
    assert!(applied > 0);
    for m in [&ma, &mb] {
        let seen = until(m, |s| s.len() == 2 && s.iter().all(|m| m.beat.applied > 0)).await;
        assert_eq!(seen[0].beat.node, "a");
        assert_eq!(seen[0].beat.grpc.as_deref(), Some("127.0.0.1:1"));
        assert!(seen.iter().all(|m| m.beat.applied >= applied), "{seen:?}");
        // Each says where its reader resumes: right after what it applied, idle.
        let seen = until(m, |s| s.len() == 2 && s.iter().all(|m| m.beat.resume > 0)).await;
        for m in &seen {
            assert_eq!(m.beat.resume, m.beat.applied + 1, "{m:?}");
            assert_eq!(m.beat.needs_from(), m.beat.applied + 1);
        }
        assert_eq!(
            seen[1].beat,
            Heartbeat {
                applied: seen[1].beat.applied,
                resume: seen[1].beat.resume,
                ..beat("b")
            }
        );
    }

    // b stops beating: a keeps hearing itself, and b's last heartbeat grows old.
    run_b.abort();
    tokio::time::sleep(lease * 2).await;
    let seen = until(&ma, |s| {
        let now = solo_types::clock::system_now_ns();
        s.len() == 2 && s[0].seen_ns > now - 2_000_000_000 && s[1].seen_ns < now - 1_500_000_000
    })
    .await;
    assert_eq!(seen[1].beat.node, "b");
    run_a.abort();
}
