//! Log compaction end to end (three NATS servers, `cluster.compact_every = 20`): the
//! active node compacts the log once it is long, never past what a beating node has
//! applied; a standby paused meanwhile finds, when it wakes, the log compacted past its
//! view and stops with status 3 rather than skip entries; a node that joins afterwards
//! starts from the latest copy of a view, and takes over with the services' state when
//! the active node is killed.

use std::time::{Duration, Instant};

use serde_json::json;
use solo_cluster::testing::NatsCluster;

use crate::cluster::{count, forwarding, plaintext_metrics, signal, spawn_node_tls};
use crate::harness::{call, counter_js};

const COMPACT: &[(&str, &str)] = &[("SOLO_CLUSTER__COMPACT_EVERY", "20")];

/// The value of metric `name` (a plain gauge or counter line) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_from_the_latest_copy_once_the_log_is_compacted() {
    let nats = NatsCluster::start(3, true);
    let (a, _) = spawn_node_tls(&nats, "a", None, None, COMPACT).wait(Duration::from_secs(60));
    let mut b = spawn_node_tls(&nats, "b", Some(&a.data_dir()), None, COMPACT);
    let _ = forwarding(&b).await;
    a.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]);
    let admin = a.admin().await;
    admin
        .clone()
        .deploy(crate::deploy_js("counter", counter_js()))
        .await
        .unwrap();

    // b pauses past a lease: no longer beating, it no longer holds compaction back.
    let applied_at_pause = metric(
        &plaintext_metrics(&a.data_dir()),
        "solo_cluster_applied_sequence",
    )
    .unwrap();
    signal(b.pid(), libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    for n in 0..25 {
        let r = admin
            .clone()
            .call(call("counter", json!({"op": "inc"})))
            .await
            .unwrap();
        assert_eq!(count(&r.into_inner().reply), n + 1);
        let every = (200 + n).to_string();
        a.cli_json(&[
            "config",
            "set",
            "services.checkpoint_every_ms",
            every.as_str(),
        ]);
    }
    let since = Instant::now();
    loop {
        let text = plaintext_metrics(&a.data_dir());
        let first = metric(&text, "solo_cluster_log_first_sequence").unwrap_or(0.0);
        if first > applied_at_pause + 1.0 {
            assert!(
                text.contains("solo_cluster_compactions_total{outcome=\"ok\"}"),
                "{text}"
            );
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no compaction:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // b wakes to a log that goes on past a gap: it stops rather than skip entries.
    signal(b.pid(), libc::SIGCONT);
    let status = b.wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{}", b.stderr());
    assert!(
        b.stderr().contains("compacted past this node's view"),
        "{}",
        b.stderr()
    );

    // A node joining now starts from the copy, and takes over with the counter's count.
    let d = spawn_node_tls(&nats, "d", Some(&a.data_dir()), None, COMPACT);
    let via_d = forwarding(&d).await;
    assert!(
        d.stderr().contains("starts from the latest copy"),
        "{}",
        d.stderr()
    );
    let counter = solo_types::ServiceId::new("counter").unwrap();
    via_d.status(&counter).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await; // past the checkpoint
    let mut a = a;
    a.kill9();
    let (d, _) = d.wait(Duration::from_secs(30));
    let r = d
        .admin()
        .await
        .call(call("counter", json!({"op": "inc"})))
        .await
        .unwrap();
    assert_eq!(count(&r.into_inner().reply), 26);
    let verify = d.cli_json(&["events", "verify"]);
    assert_eq!(verify["ok"], json!(true), "{verify}");
}
