//! The checker's verdicts: the workload made progress and the log was compacted, every
//! acknowledged write is present and every acknowledged kill took effect, and the log
//! shows each service start made where it was allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use solo_client::Solo;
use solo_types::api::ListFilter;
use solo_types::{EventFilter, EventQuery};

use super::{Acked, CLIENTS};

/// The nodes' stderr, the last lines of each, newest first.
fn tails(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| {
            let log = std::fs::read_to_string(d.with_extension("stderr")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!("{}:\n{}", d.display(), tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The workload got writes acknowledged, and the log was compacted meanwhile.
pub fn progress_and_compaction(a: &Acked, dirs: &[PathBuf]) {
    assert!(
        a.deployed.len() >= 3,
        "the workload made progress; the nodes' logs (newest first):\n{}",
        tails(dirs)
    );
    let logs: String = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.with_extension("stderr")).unwrap_or_default())
        .collect();
    let compactions = logs.matches("compacted the cluster's log").count();
    println!(
        "compactions: {compactions}; nodes started from a copy of a view: {}",
        logs.matches("starts from the latest copy").count()
    );
    assert!(
        compactions > 0,
        "the log was compacted meanwhile:\n{}",
        tails(dirs)
    );
}

/// Client `me`'s acknowledged writes are all present through `solo` (a client as the
/// same identity), and its acknowledged kills took effect.
pub async fn acknowledged(solo: &Solo, a: &Acked, me: usize) {
    let mine = |i: &&usize| **i % CLIENTS == me;
    let listed: BTreeSet<String> = solo
        .list(&ListFilter {
            limit: 1000,
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.service_id.as_str().to_string())
        .collect();
    for d in a.deployed.iter().filter(mine) {
        let present = listed.contains(&format!("s{d}"));
        if a.killed.contains(d) {
            assert!(!present, "s{d}'s acknowledged kill is lost");
        } else if !a.kill_unknown.contains(d) {
            assert!(present, "s{d}'s acknowledged deploy is lost");
        }
    }
    for k in a.secrets.iter().filter(mine) {
        let s = solo.get_secret(&format!("k{k}")).await.unwrap();
        assert_eq!(s.value.expose(), format!("v{k}").as_bytes(), "secret k{k}");
    }
    let names: BTreeSet<String> = solo
        .registrations(None)
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|r| r.service_name)
        .collect();
    for r in a.registered.iter().filter(mine) {
        assert!(
            names.contains(&format!("name{r}")),
            "registration name{r} is lost"
        );
    }
    let caps: BTreeSet<String> = solo
        .list_capabilities()
        .await
        .unwrap()
        .capabilities
        .into_iter()
        .map(|c| c.hash)
        .collect();
    for (_, g) in a.granted.iter().filter(|(by, _)| *by == me) {
        assert!(caps.contains(g), "grant {g} is lost");
    }
}

/// The events of `kinds`, in the log's order.
async fn log_of(solo: &Solo, kinds: &[&str]) -> Vec<solo_types::Event> {
    let mut log = Vec::new();
    for kind in kinds {
        let q = EventQuery {
            filter: EventFilter {
                kind: Some((*kind).into()),
                ..EventFilter::default()
            },
            limit: EventQuery::MAX_LIMIT,
            ..EventQuery::default()
        };
        log.extend(solo.events(&q).await.unwrap().events);
    }
    log.sort_by_key(|e| e.id);
    log
}

/// Mode `active`: no node started its services without the lease: each
/// `system_started` names the node the last lease event before it handed the lease to.
pub async fn only_the_lease_holder_starts(solo: &Solo) {
    let mut holder: Option<String> = None;
    let mut starts = 0;
    for e in &log_of(solo, &["lease_*", "system_started"]).await {
        let field = |k: &str| e.payload[k].as_str().map(str::to_string);
        match e.kind.as_str() {
            "lease_acquired" => holder = field("holder"),
            "lease_released" => holder = None,
            "system_started" => {
                let node = field("node");
                assert!(node.is_some(), "a cluster node names itself: {e:?}");
                assert_eq!(node, holder, "event {} started without the lease", e.id);
                starts += 1;
            }
            _ => {}
        }
    }
    assert!(starts >= 2, "{starts} starts in the log");
    println!("{starts} starts in the log, each under its own lease");
}

/// Mode `tenants`: no service ran on a node its tenant was not placed on: every
/// `service_started` and `service_recovered` names the node that the tenant's latest
/// placement before it (`lease_acquired` of `tenant/<id>`) named. Prints how often a
/// tenant moved.
pub async fn only_the_placed_node_starts(solo: &Solo) {
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    let (mut starts, mut moves) = (0, 0);
    let log = log_of(
        solo,
        &["lease_acquired", "service_started", "service_recovered"],
    )
    .await;
    for e in &log {
        let field = |k: &str| e.payload[k].as_str().map(str::to_string);
        if e.kind == "lease_acquired" {
            if let (Some(t), Some(holder)) = (e.subject.strip_prefix("tenant/"), field("holder"))
                && placed
                    .insert(t.to_string(), holder.clone())
                    .is_some_and(|h| h != holder)
            {
                moves += 1;
            }
            continue;
        }
        let tenant = e.tenant.as_ref().map(|t| t.as_str().to_string());
        let Some(tenant) = tenant else {
            panic!("a service event names its tenant: {e:?}");
        };
        assert_eq!(
            field("node").as_ref(),
            placed.get(&tenant),
            "event {} ({}) of tenant {tenant} ran on a node it was not placed on",
            e.id,
            e.kind
        );
        starts += 1;
    }
    assert!(starts >= 3, "{starts} starts in the log");
    assert!(moves >= 1, "no tenant moved: the faults missed them");
    println!("{starts} starts in the log, each on its tenant's node; {moves} moves");
}
