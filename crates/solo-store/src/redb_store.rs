//! The embedded backend: one redb file, one group-committing writer thread, MVCC reads.
//!
//! Tables:
//! * `event_chunks`: first id → a chunk holding the events of one commit ([`crate::chunk`]);
//! * `event_index`: `(name number << 64 | chunk first id)` → the positions in that chunk of
//!   the events with that name, where a name is a tenant (`t/T`), a service (`s/T/S`) or
//!   a kind (`k/K`);
//! * `event_names`: name → its number;
//! * `meta`: the format version; `kv.<name>`: one per key-value table.
//!
//! Timestamps never decrease along the log, so a time range becomes an id range by
//! binary search rather than a fourth index.

mod reader;
mod recover;
mod writer;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use futures::future::BoxFuture;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageBackend,
    TableDefinition,
};
use solo_types::{Event, NewEvent};
use tokio::sync::{broadcast, oneshot};

use crate::codec::{self, GENESIS_HASH};
use crate::subscribe::{EventSource, Subscription};
use crate::{Commit, EventFilter, EventLog, Kv, KvRead, StoreError, VerifyReport, WriteBatch};
use crate::{EventPage, EventQuery};

use crate::wal::{self, Wal, WalRecord};
use writer::{ChainState, Clock, Gate, Msg, Prepared, Staged, Writer, apply_group, names_of};

/// The store format this build writes and the newest it reads.
pub const FORMAT_VERSION: u64 = 1;

const CHUNKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("event_chunks");
const INDEX: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("event_index");
const NAMES: TableDefinition<'_, &str, u64> = TableDefinition::new("event_names");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const META_FORMAT: &str = "format_version";
const META_APPLIED_SEQ: &str = "applied_seq";

fn kv_table_name(name: &str) -> String {
    format!("kv.{name}")
}

fn index_key(name: u64, chunk_first: u64) -> u128 {
    (u128::from(name) << 64) | u128::from(chunk_first)
}

fn tenant_name(t: &str) -> String {
    format!("t/{t}")
}

fn service_name(t: &str, s: &str) -> String {
    format!("s/{t}/{s}")
}

fn kind_name(k: &str) -> String {
    format!("k/{k}")
}

/// The database readers use: `None` while a recovery reopens it.
type DbSlot = Arc<parking_lot::RwLock<Option<Arc<Database>>>>;
/// Why the store takes no writes, while it does not.
type FaultSlot = Arc<parking_lot::Mutex<Option<String>>>;
/// Opens the database again (for a recovery).
type Reopen = Box<dyn FnMut() -> Result<Database, StoreError> + Send>;

/// Tuning for [`RedbStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// How many committed batches live subscribers may fall behind before they switch to
    /// catching up from disk.
    pub live_buffer: usize,
    /// The write-ahead log's preallocated size; a full log triggers a checkpoint.
    pub wal_bytes: u64,
    /// Space held back in a file next to the store and given up when a write fails, so
    /// the store can reopen (and serve reads) on a full disk (0: none). Replaying the WAL
    /// may grow redb by about twice the WAL's size.
    pub reserve_bytes: u64,
    /// Whether a commit is synced to disk before it is answered (on by default). Off only
    /// for a store that something else keeps durable and can rebuild, such as a cluster
    /// node's view of the replicated log: a crash of the machine then loses the commits
    /// since the last checkpoint (every 5 s, or sooner when the WAL is full), never part of
    /// one, and never a checkpoint.
    pub sync_commits: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            live_buffer: 1024,
            wal_bytes: 32 << 20,
            reserve_bytes: 8 << 20,
            sync_commits: true,
        }
    }
}

/// The embedded store. Cheap to clone; the file closes when the last clone (and the last
/// subscription) is dropped.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: DbSlot,
    fault: FaultSlot,
    tx: mpsc::Sender<Msg>,
    gate: Arc<Gate>,
    writer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    last_id: Arc<AtomicU64>,
    live: broadcast::Sender<Arc<[Event]>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("last_id", &self.last_id())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the store file at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let file_path = path.clone();
        Self::open_reopenable(
            path,
            move || {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&file_path)
                    .map_err(|e| StoreError::io(file_path.clone(), "open", &e))?;
                redb::backends::FileBackend::new(file)
                    .map_err(|e| StoreError::redb(&file_path, "open", e))
            },
            options,
        )
    }

    /// Opens a store over any redb storage backend; `path` names it in errors. A store
    /// opened this way cannot recover from a failed write without a restart.
    pub fn open_backend(
        path: PathBuf,
        backend: impl StorageBackend,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let db = build_db(&path, backend, options.cache_bytes)?;
        Self::open_db(path, db, None, options)
    }

    /// Opens a store over the backends `make` returns: one now, and a fresh one each time
    /// the store reopens itself to recover from a failed write.
    pub fn open_reopenable<B: StorageBackend>(
        path: PathBuf,
        mut make: impl FnMut() -> Result<B, StoreError> + Send + 'static,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let db = build_db(&path, make()?, options.cache_bytes)?;
        let (again, cache) = (path.clone(), options.cache_bytes);
        let reopen: Reopen = Box::new(move || build_db(&again, make()?, cache));
        Self::open_db(path, db, Some(reopen), options)
    }

    fn open_db(
        path: PathBuf,
        db: Database,
        reopen: Option<Reopen>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let mut init = init_file(&path, &db)?;
        let (wal, records) = Wal::open(Wal::path_for(&path), options.wal_bytes)?;
        let wal = wal.syncing(options.sync_commits);
        replay(&db, &path, wal.path(), &mut init, records)?;
        let reserve = crate::reserve::Reserve::new(&path, options.reserve_bytes);
        if let Err(e) = reserve.ensure() {
            tracing::warn!(error = %e, "no space reserve: on a full disk the store will not serve reads until space returns");
        }
        let last_id = Arc::new(AtomicU64::new(init.chain.next_id - 1));
        let (live, _) = broadcast::channel(options.live_buffer.max(1));
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(Gate::default());
        let slot: DbSlot = Arc::new(parking_lot::RwLock::new(Some(Arc::clone(&db))));
        let fault: FaultSlot = Arc::default();
        let writer = Writer {
            db: Some(db),
            slot: Arc::clone(&slot),
            path: path.clone(),
            rx,
            chain: init.chain,
            clock: init.clock,
            names: init.names,
            live: live.clone(),
            last_id: Arc::clone(&last_id),
            wal,
            next_seq: init.applied_seq + 1,
            last_checkpoint: Instant::now(),
            failed: None,
            fault: Arc::clone(&fault),
            reopen,
            reserve,
            wal_bytes: options.wal_bytes,
            sync_commits: options.sync_commits,
            gate: Arc::clone(&gate),
        };
        let handle = std::thread::Builder::new()
            .name("solo-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io(path.clone(), "spawn writer thread", &e))?;
        gate.set_writer(handle.thread().clone());
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                db: slot,
                fault,
                tx,
                gate,
                writer: parking_lot::Mutex::new(Some(handle)),
                last_id,
                live,
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Commits everything queued so far, then stops the writer. Later writes fail with
    /// [`StoreError::Closed`]; reads keep working until the store is dropped.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The write-ahead log beside the store file at `db_path`: a copy made by
    /// [`RedbStore::copy_to`] must not be opened with another file's WAL beside it.
    pub fn wal_path(db_path: &Path) -> PathBuf {
        Wal::path_for(db_path)
    }

    /// Writes a consistent copy of the store file to `dest`, synced, and answers its size:
    /// the writer makes the store durable first (so the copy needs no WAL) and copies
    /// before it takes the next write (writes wait meanwhile; reads do not). The copy opens
    /// as a store of its own (for a cluster node that starts from another's view).
    pub fn copy_to(&self, dest: impl Into<PathBuf>) -> BoxFuture<'static, Result<u64, StoreError>> {
        let dest = dest.into();
        self.ask(|reply| Msg::CopyTo(dest, reply))
    }

    /// The size of the store file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.inner.path).map_or(0, |m| m.len())
    }

    fn submit(&self, batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>> {
        // Encoding happens here, on the caller's thread, so the single writer only stamps,
        // hashes and inserts.
        let mut causes = vec![None; batch.events.len()];
        for (event, cause) in batch.in_batch_causes {
            if let Some(slot) = causes.get_mut(event) {
                *slot = Some(cause);
            }
        }
        let events = batch
            .events
            .into_iter()
            .zip(causes)
            .map(|(e, cause)| Prepared::new(e, cause))
            .collect();
        let at = batch.at;
        self.ask(|reply| Msg::Commit {
            ops: batch.ops,
            events,
            at,
            reply,
        })
    }

    /// Sends the writer the message `msg` builds around a reply channel, and resolves
    /// with the writer's answer (`Closed` once the writer is gone).
    fn ask<T: Send + 'static>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Msg,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.tx.send(msg(reply)).is_ok();
        if sent {
            self.inner.gate.arrived();
        }
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

/// Opens redb over `backend`. A plain open may panic on a file altered behind redb's
/// back; checking the integrity on open turns that into an error, and catch_unwind is the
/// last guard.
fn build_db(
    path: &Path,
    backend: impl StorageBackend,
    cache_bytes: usize,
) -> Result<Database, StoreError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(true);
        builder.create_with_backend(backend)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::redb(path, "open", e)),
        Err(panic) => Err(StoreError::Corrupted {
            path: path.to_path_buf(),
            detail: format!("redb failed while opening it: {}", panic_text(&panic)),
        }),
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (close_tx, _close_rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Close(close_tx));
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

struct Init {
    chain: ChainState,
    clock: Clock,
    names: HashMap<String, u64>,
    /// The last group applied durably to redb.
    applied_seq: u64,
}

/// Creates the tables, checks the format version and reads the chain's tail and names.
fn init_file(path: &Path, db: &Database) -> Result<Init, StoreError> {
    let err = |e: redb::Error| StoreError::redb(path, "initialize", e);
    let corrupted = |detail: String| StoreError::Corrupted {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    let init;
    {
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| err(e.into()))?;
        txn.open_table(INDEX).map_err(|e| err(e.into()))?;
        let names_table = txn.open_table(NAMES).map_err(|e| err(e.into()))?;
        let stored = meta
            .get(META_FORMAT)
            .map_err(|e| err(e.into()))?
            .map(|v| v.value().to_vec());
        match stored {
            Some(bytes) => {
                let found = <[u8; 8]>::try_from(bytes.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupted("the format version record is malformed".into()))?;
                if found > FORMAT_VERSION {
                    return Err(StoreError::UnsupportedFormat {
                        path: path.to_path_buf(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            None => {
                if chunks.len().map_err(|e| err(e.into()))? > 0 {
                    return Err(corrupted(
                        "the file holds events but no format version".into(),
                    ));
                }
                meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        let applied_seq = match meta.get(META_APPLIED_SEQ).map_err(|e| err(e.into()))? {
            None => 0,
            Some(v) => <[u8; 8]>::try_from(v.value())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupted("the applied sequence record is malformed".into()))?,
        };
        let mut names = HashMap::new();
        for entry in names_table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            names.insert(k.value().to_string(), v.value());
        }
        let last = chunks.last().map_err(|e| err(e.into()))?;
        init = match last {
            None => Init {
                chain: ChainState {
                    next_id: 1,
                    last_hash: GENESIS_HASH,
                },
                clock: Clock::new(i64::MIN, 0),
                names,
                applied_seq,
            },
            Some((first, chunk)) => {
                let first = first.value();
                let view = crate::chunk::ChunkView::parse(chunk.value())
                    .map_err(|e| corrupted(format!("the last chunk (event {first}): {e}")))?;
                let n = view.len();
                let record = n
                    .checked_sub(1)
                    .and_then(|i| view.record(i))
                    .ok_or_else(|| corrupted(format!("the last chunk (event {first}) is empty")))?;
                let decode = |e: codec::DecodeError| StoreError::Decode {
                    path: path.to_path_buf(),
                    id: first + n as u64 - 1,
                    detail: e.0,
                };
                let stamp = codec::decode_stamp(record).map_err(decode)?;
                let (_, hash) = codec::split_record(record).map_err(decode)?;
                Init {
                    chain: ChainState {
                        next_id: stamp.id + 1,
                        last_hash: hash,
                    },
                    clock: Clock::new(stamp.ts, stamp.mono),
                    names,
                    applied_seq,
                }
            }
        };
    }
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(init)
}

/// Applies the WAL's groups that redb has not made durable, and makes them durable.
fn replay(
    db: &Database,
    path: &Path,
    wal_path: &Path,
    init: &mut Init,
    records: Vec<WalRecord>,
) -> Result<(), StoreError> {
    let corrupted = |detail: String| StoreError::Corrupted {
        path: wal_path.to_path_buf(),
        detail,
    };
    let pending: Vec<WalRecord> = records
        .into_iter()
        .filter(|r| r.seq > init.applied_seq)
        .collect();
    let Some(first) = pending.first() else {
        return Ok(());
    };
    if first.seq != init.applied_seq + 1 {
        return Err(corrupted(format!(
            "the log resumes at group {} but the store has applied only up to {}",
            first.seq, init.applied_seq
        )));
    }
    let n = pending.len();
    tracing::info!(groups = n, wal = %wal_path.display(), "replaying the write-ahead log");
    for (i, rec) in pending.into_iter().enumerate() {
        let group = wal::decode_group(&rec.payload)
            .map_err(|e| corrupted(format!("group {}: {e}", rec.seq)))?;
        let mut staged = Vec::with_capacity(group.records.len());
        let mut chain = init.chain.clone();
        let mut last_stamp = None;
        for record in group.records {
            let event = codec::decode_record(&record)
                .map_err(|e| corrupted(format!("group {}: {e}", rec.seq)))?;
            let (canonical, hash) = codec::split_record(&record)
                .map_err(|e| corrupted(format!("group {}: {e}", rec.seq)))?;
            if event.id != chain.next_id || codec::chain_hash(&chain.last_hash, canonical) != hash {
                return Err(corrupted(format!(
                    "group {}: event {} does not continue the chain at {}",
                    rec.seq, event.id, chain.next_id
                )));
            }
            chain.next_id += 1;
            chain.last_hash = hash;
            last_stamp = Some((event.ts, event.mono));
            staged.push(Staged {
                names: names_of(
                    event.tenant.as_ref().map(solo_types::TenantId::as_str),
                    event.service.as_ref().map(solo_types::ServiceId::as_str),
                    &event.kind,
                ),
                record,
            });
        }
        let new = apply_group(
            db,
            path,
            &init.names,
            group.ops.iter(),
            &staged,
            init.chain.next_id,
            rec.seq,
            i + 1 == n,
        )?;
        init.names.extend(new);
        init.chain = chain;
        if let Some((ts, mono)) = last_stamp {
            init.clock = Clock::new(ts, mono);
        }
        init.applied_seq = rec.seq;
    }
    Ok(())
}

impl Inner {
    fn read_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::redb(&self.path, "read", e)
    }

    /// The database to read from, unless a recovery is reopening it.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| StoreError::Poisoned {
            path: self.path.clone(),
        })
    }
}

impl EventSource for Inner {
    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.read_page(query)
    }
}

impl EventLog for RedbStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let fut = self.submit(WriteBatch::from_events(events));
        Box::pin(async move { fut.await.map(|c| c.event_ids) })
    }

    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.inner.read_page(query)
    }

    fn last_id(&self) -> u64 {
        self.inner.last_id.load(Ordering::Acquire)
    }

    fn subscribe(&self, after_id: u64, filter: EventFilter) -> Subscription {
        let rx = self.inner.live.subscribe();
        Subscription::new(
            Arc::clone(&self.inner) as Arc<dyn EventSource>,
            rx,
            after_id,
            filter,
        )
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify()
    }
}

type KvTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

struct Snapshot {
    inner: Arc<Inner>,
    txn: redb::ReadTransaction,
}

impl Snapshot {
    fn table(&self, table: &str) -> Result<Option<KvTable>, StoreError> {
        crate::validate_table_name(table)?;
        let full = kv_table_name(table);
        let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(&full);
        match self.txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.inner.read_err(e)),
        }
    }
}

impl KvRead for Snapshot {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(t) = self.table(table)? else {
            return Ok(None);
        };
        Ok(t.get(key)
            .map_err(|e| self.inner.read_err(e))?
            .map(|v| v.value().to_vec()))
    }

    fn range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<crate::Entries, StoreError> {
        let Some(t) = self.table(table)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in t
            .range::<&[u8]>((start, end))
            .map_err(|e| self.inner.read_err(e))?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(|e| self.inner.read_err(e))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

impl Kv for RedbStore {
    fn snapshot(&self) -> Result<Box<dyn KvRead>, StoreError> {
        let txn = self
            .inner
            .db()?
            .begin_read()
            .map_err(|e| self.inner.read_err(e))?;
        Ok(Box::new(Snapshot {
            inner: Arc::clone(&self.inner),
            txn,
        }))
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>> {
        self.submit(batch)
    }

    fn fault(&self) -> Option<String> {
        self.inner.fault.lock().clone()
    }

    fn recover(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.ask(Msg::Recover)
    }
}

/// Seconds since `start`, for metrics.
fn secs_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
