//! Crash test: a child process appends from several tasks and prints each acknowledged
//! id; the parent kills it with SIGKILL at random moments, reopens the store and checks
//! that every acknowledged write is there, ids are dense and the hash chain verifies.
//! Every other round the child commits without syncing (`StoreOptions::sync_commits`
//! off, as a cluster node's view does): a killed process must lose nothing then either,
//! since what it wrote is in the kernel's page cache.
//!
//! This is a `harness = false` test: the same binary is the child when
//! `SOLO_STORE_CRASH_CHILD` names a store file.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use solo_store::{EventLog, EventQuery, Kv, RedbStore, StoreOptions, WriteBatch};
use solo_types::{NewEvent, TenantId};

const CHILD_ENV: &str = "SOLO_STORE_CRASH_CHILD";
/// `0` when the child commits without syncing.
const SYNC_ENV: &str = "SOLO_STORE_CRASH_SYNC";
const ROUNDS: usize = 20;
const TASKS: u64 = 8;

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    parent();
    println!("crash test: {ROUNDS} rounds of kill -9 passed");
}

fn child(path: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = StoreOptions {
            sync_commits: std::env::var(SYNC_ENV).as_deref() != Ok("0"),
            ..StoreOptions::default()
        };
        let store = RedbStore::open_with(path, options).unwrap();
        let tenant = TenantId::new("crash").unwrap();
        println!("ready");
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let event = |n: u64| {
                        NewEvent::tenant("crash_write", &tenant)
                            .payload(serde_json::json!({ "task": task, "i": i, "n": n }))
                    };
                    if i % 5 == 0 {
                        let key = format!("{task}-{i}");
                        let mut b = WriteBatch::new();
                        b.put("crash", key.clone(), vec![7u8; 100]).unwrap();
                        b.event(event(0));
                        let commit = store.commit(b).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "kv {key} {}", commit.event_ids[0]).unwrap();
                    } else {
                        let events = (0..(i % 3 + 1)).map(event).collect();
                        let ids = store.append(events).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        for id in ids {
                            writeln!(out, "ack {id}").unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.redb");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked_events: Vec<u64> = Vec::new();
    let mut acked_keys: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &path)
            .env(SYNC_ENV, if round % 2 == 0 { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut events = Vec::new();
            let mut keys = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split(' ').collect();
                match parts.as_slice() {
                    ["ready"] => {
                        let _ = ready_tx.send(());
                    }
                    ["ack", id] => {
                        if let Ok(id) = id.parse() {
                            events.push(id);
                        }
                    }
                    ["kv", key, id] => {
                        if let Ok(id) = id.parse() {
                            keys.push(((*key).to_string(), id));
                            events.push(id);
                        }
                    }
                    // A line cut short by the kill is not an acknowledgement.
                    _ => {}
                }
            }
            (events, keys)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not start");
        std::thread::sleep(Duration::from_millis(rng.random_range(5..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (events, keys) = reader.join().unwrap();
        acked_events.extend(events);
        acked_keys.extend(keys);

        let store = RedbStore::open(&path).unwrap();
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_broken, None,
            "round {round}: hash chain broken"
        );
        assert_eq!(
            report.checked, report.last_id,
            "round {round}: ids not dense"
        );
        let last = store.last_id();
        let max_acked = acked_events.iter().copied().max().unwrap_or(0);
        assert!(
            last >= max_acked,
            "round {round}: acknowledged id {max_acked} lost (log ends at {last})"
        );
        // Every acknowledged id is readable (the log is dense, so spot-check a sample
        // plus the newest ones).
        for &id in acked_events.iter().rev().take(50) {
            let page = store
                .read(&EventQuery {
                    after_id: Some(id - 1),
                    limit: 1,
                    ..EventQuery::default()
                })
                .unwrap();
            assert_eq!(page.events.first().map(|e| e.id), Some(id));
        }
        let snap = store.snapshot().unwrap();
        for (key, id) in &acked_keys {
            assert!(
                snap.get("crash", key.as_bytes()).unwrap().is_some(),
                "round {round}: acknowledged key {key} (event {id}) lost"
            );
        }
        println!(
            "round {round}: {} acknowledged events, log ends at {last}",
            acked_events.len()
        );
    }
    assert!(
        acked_events.len() > ROUNDS,
        "the child acknowledged too little to test anything"
    );
}
