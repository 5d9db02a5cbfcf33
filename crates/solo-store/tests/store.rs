//! The store's public contract: appends, reads, subscriptions, key-value, faults.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::ReadableTable;

use solo_store::{
    EventFilter, EventLog, EventQuery, Kv, Order, RedbStore, StoreError, StoreOptions, WriteBatch,
};
use solo_types::{NewEvent, ServiceId, TenantId};

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn service(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap()
}

fn ev(kind: &str, t: &str, s: Option<&str>, n: u64) -> NewEvent {
    let e = match s {
        Some(s) => NewEvent::service(kind, &tenant(t), &service(s)),
        None => NewEvent::tenant(kind, &tenant(t)),
    };
    e.payload(serde_json::json!({ "n": n }))
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("solo.redb")
}

fn open(path: &Path) -> RedbStore {
    RedbStore::open(path).unwrap()
}

#[tokio::test]
async fn ids_are_dense_from_one_and_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        assert_eq!(store.last_id(), 0);
        let ids = store
            .append(vec![ev("a", "t1", None, 1), ev("b", "t1", None, 2)])
            .await
            .unwrap();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            store.append(vec![ev("c", "t1", None, 3)]).await.unwrap(),
            vec![3]
        );
        assert_eq!(store.last_id(), 3);
    }
    let store = open(&path);
    assert_eq!(store.last_id(), 3);
    assert_eq!(
        store.append(vec![ev("d", "t1", None, 4)]).await.unwrap(),
        vec![4]
    );
    let report = store.verify().unwrap();
    assert_eq!(report.checked, 4);
    assert_eq!(report.first_broken, None);
    let page = store.read(&EventQuery::default()).unwrap();
    let kinds: Vec<_> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["a", "b", "c", "d"]);
    // Clocks never go backwards along the log, across the restart too.
    for w in page.events.windows(2) {
        assert!(w[0].ts <= w[1].ts);
        assert!(w[0].mono <= w[1].mono);
    }
}

#[tokio::test]
async fn concurrent_appenders_share_commits_and_get_unique_dense_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    let mut tasks = Vec::new();
    for t in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let batch = (0..(i % 3 + 1)).map(|j| ev("x", "t1", None, t * 1000 + i * 10 + j));
                let got = store.append(batch.collect()).await.unwrap();
                // A request's events get consecutive ids.
                for w in got.windows(2) {
                    assert_eq!(w[1], w[0] + 1);
                }
                ids.extend(got);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected);
    assert_eq!(store.verify().unwrap().first_broken, None);
}

#[tokio::test]
async fn queries_by_tenant_service_kind_time_with_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    let mut batch = Vec::new();
    for n in 0..30 {
        let (t, s) = match n % 3 {
            0 => ("t1", Some("s1")),
            1 => ("t1", Some("s2")),
            _ => ("t2", Some("s1")),
        };
        let kind = if n % 2 == 0 { "even" } else { "custom.odd" };
        batch.push(ev(kind, t, s, n));
    }
    batch.push(NewEvent::system("system_started", "solo"));
    store.append(batch).await.unwrap();

    let q = |f: EventFilter| EventQuery {
        filter: f,
        limit: 1000,
        ..EventQuery::default()
    };
    let ids = |page: solo_store::EventPage| page.events.iter().map(|e| e.id).collect::<Vec<_>>();

    let t1 = store
        .read(&q(EventFilter {
            tenant: Some(tenant("t1")),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(t1.events.len(), 20);
    assert!(t1.events.iter().all(|e| e.tenant == Some(tenant("t1"))));

    let t1s2 = store
        .read(&q(EventFilter {
            tenant: Some(tenant("t1")),
            service: Some(service("s2")),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(
        ids(t1s2),
        (1..=30).filter(|n| n % 3 == 2).collect::<Vec<_>>()
    );

    let even = store
        .read(&q(EventFilter {
            kind: Some("even".into()),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(even.events.len(), 15);

    let custom = store
        .read(&q(EventFilter {
            kind: Some("custom.*".into()),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(custom.events.len(), 15);

    let t2_even = store
        .read(&q(EventFilter {
            tenant: Some(tenant("t2")),
            kind: Some("even".into()),
            ..Default::default()
        }))
        .unwrap();
    assert!(
        t2_even
            .events
            .iter()
            .all(|e| e.kind == "even" && e.tenant == Some(tenant("t2")))
    );
    assert_eq!(t2_even.events.len(), 5);

    // Paging with a cursor, ascending then descending, sees every event exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .read(&EventQuery {
                after_id: cursor,
                limit: 7,
                ..EventQuery::default()
            })
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (1..=31).collect::<Vec<_>>());
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .read(&EventQuery {
                before_id: cursor,
                limit: 4,
                order: Order::Descending,
                filter: EventFilter {
                    tenant: Some(tenant("t1")),
                    ..Default::default()
                },
                ..EventQuery::default()
            })
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expect: Vec<u64> = (1..=30).filter(|n| n % 3 != 0).collect();
    expect.reverse();
    assert_eq!(seen, expect);

    // Time range: the events' own timestamps bound an id range.
    let all = store.read(&q(EventFilter::default())).unwrap().events;
    let (from, to) = (all[5].ts, all[20].ts);
    let ranged = store
        .read(&EventQuery {
            since_ts: Some(from),
            until_ts: Some(to),
            limit: 1000,
            ..EventQuery::default()
        })
        .unwrap();
    assert!(!ranged.events.is_empty());
    assert!(ranged.events.iter().all(|e| e.ts >= from && e.ts < to));
    let expected = all.iter().filter(|e| e.ts >= from && e.ts < to).count();
    assert_eq!(ranged.events.len(), expected);
}

#[tokio::test]
async fn subscribe_replays_then_follows_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    for n in 0..50 {
        store.append(vec![ev("x", "t1", None, n)]).await.unwrap();
    }
    let mut sub = store.subscribe(10, EventFilter::default());
    // Appends race the switch from replay to live.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 50..300 {
                store
                    .append(vec![ev("x", "t1", None, n), ev("y", "t2", None, n)])
                    .await
                    .unwrap();
            }
        })
    };
    let mut expected = 11;
    while expected <= 550 {
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(e.id, expected, "gap or duplicate");
        expected += 1;
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn filtered_subscription_sees_only_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    store
        .append(vec![ev("x", "t1", None, 0), ev("x", "t2", None, 0)])
        .await
        .unwrap();
    let mut sub = store.subscribe(
        0,
        EventFilter {
            tenant: Some(tenant("t2")),
            ..Default::default()
        },
    );
    store
        .append(vec![ev("x", "t1", None, 1), ev("x", "t2", None, 1)])
        .await
        .unwrap();
    let a = sub.next().await.unwrap().unwrap();
    let b = sub.next().await.unwrap().unwrap();
    assert_eq!((a.id, b.id), (2, 4));
    assert!([a, b].iter().all(|e| e.tenant == Some(tenant("t2"))));
}

#[tokio::test]
async fn slow_subscriber_is_bounded_and_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_with(
        db_path(&dir),
        StoreOptions {
            live_buffer: 4,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut sub = store.subscribe(0, EventFilter::default());
    // Let the subscription reach live mode, then append far more batches than the live
    // buffer holds without reading: appenders must not block.
    store.append(vec![ev("x", "t1", None, 0)]).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().id, 1);
    for n in 1..200 {
        store.append(vec![ev("x", "t1", None, n)]).await.unwrap();
    }
    for expected in 2..=200 {
        assert_eq!(sub.next().await.unwrap().unwrap().id, expected);
    }
    assert!(sub.catchups() >= 1, "the subscriber should have lagged");
}

#[tokio::test]
async fn kv_tables_get_put_delete_range_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        let mut b = WriteBatch::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            b.put("notes", k, format!("v{k}")).unwrap();
        }
        b.put("other", "a/1", "x").unwrap();
        b.event(ev("kv_written", "t1", None, 0));
        let commit = store.commit(b).await.unwrap();
        assert_eq!(commit.event_ids, vec![1]);

        let snap = store.snapshot().unwrap();
        assert_eq!(snap.get("notes", b"a/2").unwrap(), Some(b"va/2".to_vec()));
        assert_eq!(snap.get("notes", b"zz").unwrap(), None);
        assert_eq!(snap.get("missing_table", b"a").unwrap(), None);
        let a = snap.scan_prefix("notes", b"a/", 100).unwrap();
        assert_eq!(a.len(), 3);
        let limited = snap
            .range("notes", Bound::Excluded(&b"a/1"[..]), Bound::Unbounded, 2)
            .unwrap();
        let keys: Vec<_> = limited.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"a/2"[..], &b"a/3"[..]]);

        let mut b = WriteBatch::new();
        b.delete("notes", "b/1").unwrap();
        b.delete_prefix("notes", "a/").unwrap();
        b.put("notes", "c", "new").unwrap();
        store.commit(b).await.unwrap();
        // The old snapshot is unchanged (MVCC).
        assert_eq!(snap.scan_prefix("notes", b"a/", 100).unwrap().len(), 3);
    }
    let store = open(&path);
    let snap = store.snapshot().unwrap();
    let all = snap.scan_prefix("notes", b"", 100).unwrap();
    assert_eq!(all, vec![(b"c".to_vec(), b"new".to_vec())]);
    assert_eq!(store.get("other", b"a/1").unwrap(), Some(b"x".to_vec()));
    assert!(matches!(
        store.get("Bad-Name", b"a"),
        Err(StoreError::InvalidTable(_))
    ));
}

#[tokio::test]
async fn verify_reports_the_first_altered_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        for n in 0..10 {
            store.append(vec![ev("x", "t1", None, n)]).await.unwrap();
        }
    }
    // Alter event 6's payload behind the store's back, keeping the record well formed.
    {
        let db = redb::Database::open(&path).unwrap();
        let table: redb::TableDefinition<'_, u64, &[u8]> =
            redb::TableDefinition::new("event_chunks");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let (first, mut chunk) = {
                let (k, v) = t.range(..=6u64).unwrap().next_back().unwrap().unwrap();
                (k.value(), v.value().to_vec())
            };
            let needle = b"{\"n\":5}";
            let at = chunk
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            chunk[at + 5] = b'9';
            t.insert(first, chunk.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(&path);
    let report = store.verify().unwrap();
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.id, 6);
    assert!(broken.reason.contains("hash mismatch"), "{}", broken.reason);
}

#[tokio::test]
async fn a_newer_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(open(&path));
    {
        let db = redb::Database::open(&path).unwrap();
        let meta: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
        let txn = db.begin_write().unwrap();
        txn.open_table(meta)
            .unwrap()
            .insert("format_version", 99u64.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(
        err,
        StoreError::UnsupportedFormat { found: 99, .. }
    ));
    let msg = err.to_string();
    assert!(msg.contains("solo.redb") && msg.contains("99"), "{msg}");
}

#[tokio::test]
async fn truncated_and_corrupted_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        for n in 0..200 {
            store.append(vec![ev("x", "t1", None, n)]).await.unwrap();
        }
    }
    let original = std::fs::read(&path).unwrap();

    // Garbage header.
    let mut bad = original.clone();
    bad[..64].fill(0x5a);
    std::fs::write(&path, &bad).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("solo.redb"), "{err}");

    // Truncated to a fraction of its length.
    std::fs::write(&path, &original[..original.len() / 3]).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("solo.redb"), "{err}");

    // Flipped bytes all through the file: an error or an intact log, never a panic.
    for seed in 0..8u64 {
        let mut bad = original.clone();
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        for _ in 0..16 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let at = usize::try_from(x >> 33).unwrap() % bad.len();
            bad[at] ^= 0xff;
        }
        std::fs::write(&path, &bad).unwrap();
        if let Ok(store) = RedbStore::open(&path) {
            // Whatever survived must be readable or reported, not panic.
            let _ = store.verify();
            let _ = store.read(&EventQuery::default());
        }
    }
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let err = RedbStore::open(not_a_dir.join("solo.redb")).unwrap_err();
    assert!(err.to_string().contains("file/solo.redb"), "{err}");
}

#[tokio::test]
async fn the_same_file_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let _store = open(&path);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err}");
}

/// A file backend that runs out of space after a byte budget, like a full disk.
#[derive(Debug)]
struct FullDisk {
    inner: redb::backends::FileBackend,
    budget: Arc<std::sync::atomic::AtomicI64>,
}

impl FullDisk {
    fn charge(&self, n: usize) -> std::io::Result<()> {
        let left = self.budget.fetch_sub(
            i64::try_from(n).unwrap(),
            std::sync::atomic::Ordering::SeqCst,
        );
        if left < i64::try_from(n).unwrap() {
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FullDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let cur = self.inner.len()?;
        if len > cur {
            self.charge(usize::try_from(len - cur).unwrap())?;
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.charge(data.len())?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
}

#[tokio::test]
async fn a_full_disk_fails_writes_clearly_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let budget = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let acked: HashSet<u64>;
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let backend = FullDisk {
            inner: redb::backends::FileBackend::new(file).unwrap(),
            budget: Arc::clone(&budget),
        };
        // A small write-ahead log, so that checkpoints (durable redb commits) run often.
        let options = StoreOptions {
            wal_bytes: 128 << 10,
            ..StoreOptions::default()
        };
        let store = RedbStore::open_backend(path.clone(), backend, options).unwrap();
        let mut ok = HashSet::new();
        for n in 0..20 {
            ok.extend(store.append(vec![ev("x", "t1", None, n)]).await.unwrap());
        }
        budget.store(64 * 1024, std::sync::atomic::Ordering::SeqCst);
        let mut failure = None;
        for n in 20..2000 {
            let big = ev("x", "t1", None, n).payload(serde_json::json!({"pad": "p".repeat(4096)}));
            match store.append(vec![big]).await {
                Ok(ids) => ok.extend(ids),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let err = failure.expect("the disk should have filled up");
        assert!(
            matches!(
                err,
                StoreError::NoSpace { .. }
                    | StoreError::Poisoned { .. }
                    | StoreError::Unavailable { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("solo.redb"), "{err}");
        acked = ok;
    }
    let store = open(&path);
    let report = store.verify().unwrap();
    assert_eq!(report.first_broken, None);
    for id in &acked {
        let page = store
            .read(&EventQuery {
                after_id: Some(id - 1),
                limit: 1,
                ..EventQuery::default()
            })
            .unwrap();
        assert_eq!(page.events[0].id, *id, "acknowledged event {id} was lost");
    }
    assert!(store.last_id() >= acked.len() as u64);
}

#[tokio::test]
async fn writes_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    store.append(vec![ev("x", "t1", None, 0)]).await.unwrap();
    store.close().await;
    let err = store
        .append(vec![ev("x", "t1", None, 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed));
    assert_eq!(store.read(&EventQuery::default()).unwrap().events.len(), 1);
}

/// Reads every page of `query` by following cursors.
fn read_all(store: &RedbStore, mut query: EventQuery) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let page = store.read(&query).unwrap();
        out.extend(page.events.iter().map(|e| e.id));
        match (page.next_cursor, query.order) {
            (None, _) => return out,
            (Some(c), Order::Ascending) => query.after_id = Some(c),
            (Some(c), Order::Descending) => query.before_id = Some(c),
        }
    }
}

#[tokio::test]
async fn indexed_reads_agree_with_a_full_scan_across_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    // One batch larger than a chunk, then many small commits.
    let big: Vec<_> = (0..5000)
        .map(|n| {
            ev(
                ["a", "b"][n % 2],
                ["t1", "t2", "t3"][n % 3],
                Some(["s1", "s2"][n % 4 / 2]),
                n as u64,
            )
        })
        .collect();
    store.append(big).await.unwrap();
    for n in 0..60u64 {
        let t = ["t1", "t2", "t3"][(n % 3) as usize];
        store
            .append(vec![ev("a", t, Some("s1"), n), ev("c", t, None, n)])
            .await
            .unwrap();
    }
    let all = store
        .read(&EventQuery {
            limit: EventQuery::MAX_LIMIT,
            ..EventQuery::default()
        })
        .unwrap()
        .events;
    assert_eq!(all.len(), 5120);
    let filters = [
        EventFilter {
            tenant: Some(tenant("t2")),
            ..Default::default()
        },
        EventFilter {
            tenant: Some(tenant("t1")),
            service: Some(service("s1")),
            ..Default::default()
        },
        EventFilter {
            kind: Some("c".into()),
            ..Default::default()
        },
        EventFilter {
            tenant: Some(tenant("t3")),
            kind: Some("a".into()),
            ..Default::default()
        },
        EventFilter {
            tenant: Some(tenant("nobody")),
            ..Default::default()
        },
    ];
    for filter in filters {
        for (after, before) in [(None, None), (Some(4090), None), (Some(100), Some(5005))] {
            let model: Vec<u64> = all
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.id)
                .filter(|id| after.is_none_or(|a| *id > a) && before.is_none_or(|b| *id < b))
                .collect();
            for order in [Order::Ascending, Order::Descending] {
                let got = read_all(
                    &store,
                    EventQuery {
                        filter: filter.clone(),
                        after_id: after,
                        before_id: before,
                        limit: 333,
                        order,
                        ..EventQuery::default()
                    },
                );
                let mut expect = model.clone();
                if order == Order::Descending {
                    expect.reverse();
                }
                assert_eq!(got, expect, "{filter:?} {after:?} {before:?} {order:?}");
            }
        }
    }
    assert_eq!(store.verify().unwrap().checked, 5120);
}

#[tokio::test]
async fn an_event_can_name_an_earlier_event_of_its_batch_as_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        store.append(vec![ev("x", "t1", None, 0)]).await.unwrap();
        let mut sub = store.subscribe(1, EventFilter::default());
        let mut b = WriteBatch::new();
        b.event(ev("deployed", "t1", Some("s"), 1));
        let i = b.event_caused_by(ev("started", "t1", Some("s"), 2), 0);
        b.event_caused_by(ev("ready", "t1", Some("s"), 3), i);
        let ids = store.commit(b).await.unwrap().event_ids;
        assert_eq!(ids, vec![2, 3, 4]);
        let live: Vec<_> = [sub.next().await, sub.next().await, sub.next().await]
            .into_iter()
            .map(|e| e.unwrap().unwrap().causation_id)
            .collect();
        assert_eq!(live, vec![None, Some(2), Some(3)]);
    }
    let store = open(&path);
    assert_eq!(store.verify().unwrap().first_broken, None);
    let page = store.read(&EventQuery::default()).unwrap();
    let causes: Vec<_> = page.events.iter().map(|e| e.causation_id).collect();
    assert_eq!(causes, vec![None, None, Some(2), Some(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_joining_during_a_commit_misses_nothing() {
    // Regression: a subscriber that joined while a commit with no listeners was in
    // flight could replay from before the commit and then wait for a broadcast that was
    // never sent. Each round starts a commit, subscribes a moment later (the moment
    // varies, to land inside the commit), and nothing else is appended.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    for round in 0..1500u64 {
        let last = store.last_id();
        let pending = store.append(vec![ev("x", "t1", None, round)]);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_micros(round % 400) {
            std::hint::spin_loop();
        }
        let mut sub = store.subscribe(last, EventFilter::default());
        // Start replaying now, while the commit may be in flight.
        let waiter = tokio::spawn(async move {
            tokio::time::timeout(std::time::Duration::from_secs(2), sub.next()).await
        });
        let id = pending.await.unwrap()[0];
        let got = waiter
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("round {round}: event {id} never arrived"))
            .unwrap()
            .unwrap();
        assert_eq!(got.id, id);
    }
}

/// Replicas apply the same batches, read back from bytes, in the same order: stamped from
/// the batches' own clocks, they end with identical events (ids, stamps and chain hashes),
/// whatever their own clocks and however their commits are grouped.
#[tokio::test]
async fn replicas_applying_the_same_stamped_batches_agree_on_every_hash() {
    let mut wire = Vec::new();
    for n in 0..40u64 {
        let mut b = WriteBatch::new();
        b.put("state", n.to_be_bytes().to_vec(), vec![1; 3])
            .unwrap();
        let first = b.next_event_index();
        b.event(ev("a", "t1", Some("s1"), n));
        b.event_caused_by(ev("b", "t2", None, n), first);
        // One clock steps back: the log's clocks must not.
        let at = if n == 20 {
            5
        } else {
            1_000_000 + i64::try_from(n).unwrap() * 1_000
        };
        b.stamped_at(at);
        wire.push(b.to_bytes());
    }
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut logs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let store = open(&db_path(dir));
        if i == 0 {
            for bytes in &wire {
                store
                    .commit(WriteBatch::from_bytes(bytes).unwrap())
                    .await
                    .unwrap();
            }
        } else {
            // Submitted all at once, so the writer groups them.
            let commits: Vec<_> = wire
                .iter()
                .map(|bytes| store.commit(WriteBatch::from_bytes(bytes).unwrap()))
                .collect();
            for c in commits {
                c.await.unwrap();
            }
        }
        let page = store
            .read(&EventQuery {
                limit: 1000,
                ..EventQuery::default()
            })
            .unwrap();
        assert_eq!(page.events.len(), 80);
        assert!(store.verify().unwrap().first_broken.is_none());
        logs.push(page.events);
    }
    assert_eq!(logs[0], logs[1]);
    for pair in logs[0].windows(2) {
        assert!(pair[1].ts >= pair[0].ts && pair[1].mono > pair[0].mono);
    }
    assert_eq!(logs[0][1].causation_id, Some(1));
}

#[tokio::test]
async fn a_copy_of_the_file_opens_as_the_store_it_was_while_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    for n in 0..50u64 {
        let mut b = WriteBatch::new();
        b.put("kv", n.to_be_bytes().to_vec(), b"v".to_vec())
            .unwrap();
        b.event(ev("tick", "t1", None, n));
        store.commit(b).await.unwrap();
    }
    // Writers keep going while the copy is made; the copy holds a prefix of their writes.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 50..100u64 {
                store.append(vec![ev("tick", "t1", None, n)]).await.unwrap();
            }
        })
    };
    let copy = dir.path().join("copy.redb");
    let bytes = store.copy_to(copy.clone()).await.unwrap();
    assert_eq!(bytes, std::fs::metadata(&copy).unwrap().len());
    writer.await.unwrap();
    let copied = open(&copy);
    let n = copied.last_id();
    assert!((50..=100).contains(&n), "{n}");
    let all = |s: &RedbStore| {
        s.read(&EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .unwrap()
        .events
    };
    assert_eq!(all(&copied)[..], all(&store)[..n as usize]);
    assert_eq!(
        copied.get("kv", &49u64.to_be_bytes()).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(copied.verify().unwrap().first_broken.is_none());
    // The copy is a store of its own: it continues its chain.
    assert_eq!(
        copied
            .append(vec![ev("tick", "t1", None, 0)])
            .await
            .unwrap(),
        vec![n + 1]
    );
    // A copy to a place that cannot be written is a clear error; the store goes on.
    let err = store
        .copy_to(dir.path().join("missing/copy.redb"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("copy.redb"), "{err}");
    store.append(vec![ev("tick", "t1", None, 0)]).await.unwrap();
}
