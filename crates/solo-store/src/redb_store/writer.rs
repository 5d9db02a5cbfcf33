//! The single writer thread: group commit through the write-ahead log.
//!
//! It blocks for one request, then takes every request already queued (up to a cap),
//! lingering briefly for the callers the previous commit answered, and makes the whole
//! group durable with one WAL record and one `fdatasync`. It then applies the group to
//! redb without an fsync and answers every caller. Requests that arrive meanwhile form
//! the next group, so under load each fsync is shared by many callers.
//!
//! A checkpoint (a durable redb commit, after which the WAL starts over) replaces the
//! WAL write for the group that finds the WAL full or the checkpoint interval passed, and
//! runs at close.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use solo_types::{Event, NewEvent, metric_names as m};
use tokio::sync::{broadcast, oneshot};

use super::{
    CHUNKS, INDEX, META, META_APPLIED_SEQ, NAMES, index_key, kind_name, kv_table_name, secs_since,
    service_name, tenant_name,
};
use crate::chunk::{ChunkBuilder, Runs};
use crate::codec::{self, Stamp};
use crate::wal::{self, Wal};
use crate::{Commit, Op, StoreError};

/// The most events one group commit carries; more wait for the next commit.
const MAX_GROUP_EVENTS: usize = 16_384;
/// The most requests one group commit carries.
const MAX_GROUP_REQUESTS: usize = 8192;
/// The longest a group waits for the callers of the previous commit to come back.
const MAX_LINGER: Duration = Duration::from_micros(200);
/// How often redb is made durable (bounding WAL replay and redb's unsynced pages).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

pub(super) type Reply = oneshot::Sender<Result<Commit, StoreError>>;

/// Lets a lingering writer sleep until enough requests are queued, woken once by the
/// request that completes the count instead of by every arrival.
#[derive(Default)]
pub(super) struct Gate {
    /// Requests sent and not yet taken by the writer (briefly negative when the writer
    /// takes a request before its sender has counted it).
    queued: AtomicIsize,
    /// How many queued requests the writer is waiting for (0 when it is not waiting).
    want: AtomicUsize,
    writer: OnceLock<std::thread::Thread>,
}

impl Gate {
    /// Called by a sender after it queued a request.
    pub(super) fn arrived(&self) {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let want = self.want.load(Ordering::Acquire);
        if want != 0
            && queued >= isize::try_from(want).unwrap_or(isize::MAX)
            && self
                .want
                .compare_exchange(want, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
    }

    /// Registers the writer thread.
    pub(super) fn set_writer(&self, t: std::thread::Thread) {
        let _ = self.writer.set(t);
    }

    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until `n` requests are queued or `until` passes.
    fn wait_for(&self, n: usize, until: Instant) {
        self.want.store(n, Ordering::Release);
        let n = isize::try_from(n).unwrap_or(isize::MAX);
        while self.queued.load(Ordering::Acquire) < n {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::park_timeout(until - now);
        }
        self.want.store(0, Ordering::Release);
    }
}

pub(super) enum Msg {
    Commit {
        ops: Vec<Op>,
        events: Vec<Prepared>,
        /// The wall clock to stamp the events from (a replicated batch), or `None` for
        /// this host's clocks.
        at: Option<i64>,
        reply: Reply,
    },
    /// Try to leave the failed state (see `recover.rs`).
    Recover(oneshot::Sender<Result<(), StoreError>>),
    /// Copy the store file (after a checkpoint) to the path; answers its size.
    CopyTo(PathBuf, oneshot::Sender<Result<u64, StoreError>>),
    Close(oneshot::Sender<()>),
}

/// An event encoded by its caller: everything but the stamp and the hash.
pub(super) struct Prepared {
    body: Vec<u8>,
    names: Vec<String>,
    event: NewEvent,
    /// The index, within the same request, of the event that caused this one; its id is
    /// patched into the body's last 8 bytes (the causation) once assigned.
    cause: Option<usize>,
}

impl Prepared {
    pub(super) fn new(event: NewEvent, cause: Option<usize>) -> Self {
        Self {
            cause,
            body: codec::encode_body(&event),
            names: names_of(
                event.tenant.as_ref().map(solo_types::TenantId::as_str),
                event.service.as_ref().map(solo_types::ServiceId::as_str),
                &event.kind,
            ),
            event,
        }
    }
}

/// The index names of an event.
pub(super) fn names_of(tenant: Option<&str>, service: Option<&str>, kind: &str) -> Vec<String> {
    let mut names = Vec::with_capacity(3);
    if let Some(t) = tenant {
        names.push(tenant_name(t));
        if let Some(s) = service {
            names.push(service_name(t, s));
        }
    }
    names.push(kind_name(kind));
    names
}

/// A stamped, hashed event record and the index names it goes under.
pub(super) struct Staged {
    pub(super) record: Vec<u8>,
    pub(super) names: Vec<String>,
}

#[derive(Clone)]
pub(super) struct ChainState {
    pub(super) next_id: u64,
    pub(super) last_hash: [u8; 32],
}

/// Assigns timestamps that never decrease along the log, across restarts too.
pub(super) struct Clock {
    base: Instant,
    base_mono: u64,
    last_ts: i64,
    last_mono: u64,
}

impl Clock {
    /// A clock continuing after an event stamped `(last_ts, last_mono)`.
    pub(super) fn new(last_ts: i64, last_mono: u64) -> Self {
        Self {
            base: Instant::now(),
            base_mono: last_mono.saturating_add(1),
            last_ts,
            last_mono,
        }
    }

    fn stamp(&mut self) -> (i64, u64) {
        let wall = solo_types::clock::system_now_ns();
        let mono = self
            .base_mono
            .saturating_add(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        self.last_ts = self.last_ts.max(wall);
        self.last_mono = self.last_mono.max(mono);
        (self.last_ts, self.last_mono)
    }

    /// A stamp that depends only on `wall` and the previous stamp, so that every replica
    /// applying the same batches in the same order stamps them alike: the wall clock never
    /// decreases, and the monotonic clock advances by at least 1 ns and follows the wall
    /// clock when it is ahead.
    fn stamp_at(&mut self, wall: i64) -> (i64, u64) {
        self.last_ts = self.last_ts.max(wall);
        let wall_ns = u64::try_from(self.last_ts).unwrap_or(0);
        self.last_mono = self.last_mono.saturating_add(1).max(wall_ns);
        (self.last_ts, self.last_mono)
    }
}

pub(super) struct Writer {
    /// `None` only while a recovery is reopening the file.
    pub(super) db: Option<Arc<Database>>,
    /// The database readers use; emptied while a recovery reopens it.
    pub(super) slot: super::DbSlot,
    pub(super) path: PathBuf,
    pub(super) rx: mpsc::Receiver<Msg>,
    pub(super) chain: ChainState,
    pub(super) clock: Clock,
    pub(super) names: HashMap<String, u64>,
    pub(super) live: broadcast::Sender<Arc<[Event]>>,
    pub(super) last_id: Arc<AtomicU64>,
    pub(super) wal: Wal,
    /// The sequence number the next group gets (redb's `applied_seq` + 1 when idle).
    pub(super) next_seq: u64,
    pub(super) last_checkpoint: Instant,
    /// Set after a failed write, until a recovery succeeds.
    pub(super) failed: Option<super::recover::Failed>,
    /// The failure's cause, for [`crate::Kv::fault`].
    pub(super) fault: super::FaultSlot,
    /// Opens the file again, for a recovery; `None` for a store over a backend it cannot
    /// reopen.
    pub(super) reopen: Option<super::Reopen>,
    pub(super) reserve: crate::reserve::Reserve,
    pub(super) wal_bytes: u64,
    pub(super) sync_commits: bool,
    pub(super) gate: Arc<Gate>,
}

struct Request {
    ops: Vec<Op>,
    events: Vec<Prepared>,
    at: Option<i64>,
    reply: Reply,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut closing: Option<oneshot::Sender<()>> = None;
        // Callers answered by one commit usually come straight back, so a group waits
        // briefly for about as many requests as the previous one carried.
        let mut last_requests = 1usize;
        let mut last_commit = Duration::ZERO;
        let mut recoveries = Vec::new();
        let mut copies = Vec::new();
        while closing.is_none() {
            let Ok(first) = self.rx.recv() else { break };
            self.gate.taken();
            let linger_until = Instant::now() + (last_commit / 2).min(MAX_LINGER);
            let mut group: Vec<Request> = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            loop {
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Commit {
                            ops,
                            events: ev,
                            at,
                            reply,
                        } => {
                            events += ev.len();
                            group.push(Request {
                                ops,
                                events: ev,
                                at,
                                reply,
                            });
                        }
                        Msg::Recover(reply) => recoveries.push(reply),
                        Msg::CopyTo(dest, reply) => copies.push((dest, reply)),
                        Msg::Close(done) => {
                            closing = Some(done);
                            break;
                        }
                    }
                    if events < MAX_GROUP_EVENTS && group.len() < MAX_GROUP_REQUESTS {
                        next = self.rx.try_recv().ok();
                        if next.is_some() {
                            self.gate.taken();
                        }
                    }
                }
                let full = events >= MAX_GROUP_EVENTS || group.len() >= MAX_GROUP_REQUESTS;
                if closing.is_some() || full || group.len() >= last_requests {
                    break;
                }
                if Instant::now() >= linger_until {
                    break;
                }
                self.gate
                    .wait_for(last_requests - group.len(), linger_until);
                match self.rx.try_recv() {
                    Ok(msg) => {
                        self.gate.taken();
                        next = Some(msg);
                    }
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                last_requests = group.len();
                let started = Instant::now();
                self.commit_group(group);
                last_commit = started.elapsed();
            }
            for reply in recoveries.drain(..) {
                let _ = reply.send(self.recover());
            }
            for (dest, reply) in copies.drain(..) {
                let _ = reply.send(self.copy_to(&dest));
            }
        }
        if self.failed.is_none()
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "final store checkpoint failed");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn fail(group: Vec<Request>, e: &StoreError) {
        for req in group {
            let _ = req.reply.send(Err(e.clone()));
        }
    }

    /// The database, or why there is none (a recovery is under way).
    fn db(&self) -> Result<&Arc<Database>, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Poisoned {
            path: self.path.clone(),
        })
    }

    /// Makes redb durable (a checkpoint, so the copy needs no WAL), then copies the file
    /// to `dest` and syncs the copy, before the next write; answers the copy's size.
    fn copy_to(&mut self, dest: &std::path::Path) -> Result<u64, StoreError> {
        if self.failed.is_some() {
            return Err(self.unavailable());
        }
        self.checkpoint()?;
        let io = |op: &'static str, e: std::io::Error| StoreError::io(dest.to_path_buf(), op, &e);
        let bytes = std::fs::copy(&self.path, dest).map_err(|e| io("copy the store file", e))?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("sync", e))?;
        Ok(bytes)
    }

    /// Makes redb durable up to the last applied group and starts the WAL over.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e: redb::Error| StoreError::redb(&path, "checkpoint", e);
        let txn = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let applied = self.next_seq - 1;
            meta.insert(META_APPLIED_SEQ, applied.to_be_bytes().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.wal.reset();
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn commit_group(&mut self, mut group: Vec<Request>) {
        if self.failed.is_some() {
            Self::fail(group, &self.unavailable());
            return;
        }
        let started = Instant::now();
        let first_id = self.chain.next_id;
        let mut chain = self.chain.clone();
        let mut staged = Vec::new();
        let mut ids = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        for req in &mut group {
            let mut req_ids: Vec<u64> = Vec::with_capacity(req.events.len());
            for mut prepared in std::mem::take(&mut req.events) {
                let id = chain.next_id;
                if let Some(cause_id) = prepared.cause.and_then(|c| req_ids.get(c).copied()) {
                    let n = prepared.body.len();
                    prepared.body[n - 8..].copy_from_slice(&cause_id.to_be_bytes());
                    prepared.event.causation_id = Some(cause_id);
                }
                let (ts, mono) = match req.at {
                    Some(at) => self.clock.stamp_at(at),
                    None => self.clock.stamp(),
                };
                let stamp = Stamp { id, ts, mono };
                let mut record = Vec::with_capacity(codec::HEADER_LEN + prepared.body.len() + 32);
                codec::push_header(&mut record, stamp);
                record.extend_from_slice(&prepared.body);
                let hash = codec::chain_hash(&chain.last_hash, &record);
                record.extend_from_slice(&hash);
                chain.next_id += 1;
                chain.last_hash = hash;
                req_ids.push(id);
                // Always built (the fields are moved, not copied): whether anyone listens
                // is decided after the commit, when a new subscriber's replay already
                // sees this group, so a subscriber can never fall between the two.
                events.push(stamped(stamp, prepared.event, hash));
                staged.push(Staged {
                    record,
                    names: prepared.names,
                });
            }
            ids.push(req_ids);
        }

        let seq = self.next_seq;
        let payload = wal::encode_group(
            group.iter().flat_map(|r| r.ops.iter()),
            staged.iter().map(|s| s.record.as_slice()),
        );
        let checkpoint =
            !self.wal.has_room(payload.len()) || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        // Where this group's record starts: if anything below fails, the record is
        // unwritten before writes resume, since the callers are told the group failed.
        let record_at = (!checkpoint).then(|| self.wal.offset());
        if !checkpoint && let Err(e) = self.wal.append(seq, &payload) {
            self.fail_store(&e, record_at, false);
            Self::fail(group, &self.refusal(&e));
            return;
        }
        let db = match self.db() {
            Ok(db) => Arc::clone(db),
            Err(e) => {
                self.fail_store(&e, record_at, true);
                Self::fail(group, &self.refusal(&e));
                return;
            }
        };
        let ops: Vec<&Op> = group.iter().flat_map(|r| r.ops.iter()).collect();
        let applied = apply_group(
            &db,
            &self.path,
            &self.names,
            ops.into_iter(),
            &staged,
            first_id,
            seq,
            checkpoint,
        );
        let new_names = match applied {
            Ok(n) => n,
            Err(e) => {
                self.fail_store(&e, record_at, true);
                Self::fail(group, &self.refusal(&e));
                return;
            }
        };
        if checkpoint {
            self.wal.reset();
            self.last_checkpoint = Instant::now();
        }
        self.next_seq += 1;
        self.chain = chain;
        self.names.extend(new_names);
        self.last_id
            .store(self.chain.next_id - 1, Ordering::Release);
        metrics::counter!(m::STORE_COMMITS).increment(1);
        metrics::counter!(m::EVENTS_APPENDED).increment(staged.len() as u64);
        metrics::histogram!(m::STORE_COMMIT_SECONDS).record(secs_since(started));
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!(m::STORE_BATCH_EVENTS).record(staged.len() as f64);
        if !events.is_empty() && self.live.receiver_count() > 0 {
            let _ = self.live.send(events.into());
        }
        for (req, event_ids) in group.into_iter().zip(ids) {
            let _ = req.reply.send(Ok(Commit { event_ids }));
        }
    }
}

/// Applies one group to redb: its key-value operations, its event records as chunks with
/// their index entries, and `applied_seq`. Durable only when `durable`. Returns the index
/// names it numbered.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_group<'a>(
    db: &Database,
    path: &std::path::Path,
    known: &HashMap<String, u64>,
    ops: impl Iterator<Item = &'a Op>,
    staged: &[Staged],
    first_id: u64,
    seq: u64,
    durable: bool,
) -> Result<HashMap<String, u64>, StoreError> {
    let err = |e: redb::Error| StoreError::redb(path, "commit", e);
    let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(|e| err(redb::Error::from(e)))?;
    }
    let mut new_names = HashMap::new();
    {
        let mut chunks = txn.open_table(CHUNKS).map_err(|e| err(e.into()))?;
        let mut index = txn.open_table(INDEX).map_err(|e| err(e.into()))?;
        let mut names = txn.open_table(NAMES).map_err(|e| err(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let mut kv = KvTables::new(&txn);
        for op in ops {
            kv.apply(op).map_err(err)?;
        }
        let mut next_name = (known.len() + 1) as u64;
        let mut pending = PendingChunk {
            first: first_id,
            builder: ChunkBuilder::default(),
            runs: BTreeMap::new(),
        };
        for (i, s) in staged.iter().enumerate() {
            let pos = pending.builder.push(&s.record);
            for name in &s.names {
                let no = match known.get(name).or_else(|| new_names.get(name)) {
                    Some(no) => *no,
                    None => {
                        let no = next_name;
                        next_name += 1;
                        names.insert(name.as_str(), no).map_err(|e| err(e.into()))?;
                        new_names.insert(name.clone(), no);
                        no
                    }
                };
                pending.runs.entry(no).or_default().push(pos);
            }
            if pending.builder.is_full() {
                pending.flush(&mut chunks, &mut index).map_err(err)?;
                pending.first = first_id + i as u64 + 1;
            }
        }
        pending.flush(&mut chunks, &mut index).map_err(err)?;
        meta.insert(META_APPLIED_SEQ, seq.to_be_bytes().as_slice())
            .map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(new_names)
}

struct PendingChunk {
    first: u64,
    builder: ChunkBuilder,
    runs: BTreeMap<u64, Runs>,
}

impl PendingChunk {
    fn flush(
        &mut self,
        chunks: &mut redb::Table<'_, u64, &'static [u8]>,
        index: &mut redb::Table<'_, u128, &'static [u8]>,
    ) -> Result<(), redb::Error> {
        if self.builder.is_empty() {
            return Ok(());
        }
        chunks.insert(self.first, self.builder.finish().as_slice())?;
        for (name, runs) in std::mem::take(&mut self.runs) {
            index.insert(index_key(name, self.first), runs.encode().as_slice())?;
        }
        Ok(())
    }
}

fn stamped(stamp: Stamp, new: NewEvent, hash: [u8; 32]) -> Event {
    Event {
        id: stamp.id,
        ts: stamp.ts,
        mono: stamp.mono,
        kind: new.kind,
        tenant: new.tenant,
        service: new.service,
        subject: new.subject,
        payload: new.payload,
        causation_id: new.causation_id,
        hash,
    }
}

/// The key-value tables a group commit touches, each opened once per transaction.
struct KvTables<'txn> {
    txn: &'txn WriteTransaction,
    open: HashMap<String, redb::Table<'txn, &'static [u8], &'static [u8]>>,
}

impl<'txn> KvTables<'txn> {
    fn new(txn: &'txn WriteTransaction) -> Self {
        Self {
            txn,
            open: HashMap::new(),
        }
    }

    fn table(
        &mut self,
        name: &str,
    ) -> Result<&mut redb::Table<'txn, &'static [u8], &'static [u8]>, redb::Error> {
        if !self.open.contains_key(name) {
            let full = kv_table_name(name);
            let def: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new(&full);
            let table = self.txn.open_table(def)?;
            self.open.insert(name.to_string(), table);
        }
        Ok(self
            .open
            .get_mut(name)
            .expect("the table was inserted just above"))
    }

    fn apply(&mut self, op: &Op) -> Result<(), redb::Error> {
        match op {
            Op::Put { table, key, value } => {
                self.table(table)?
                    .insert(key.as_slice(), value.as_slice())?;
            }
            Op::Delete { table, key } => {
                self.table(table)?.remove(key.as_slice())?;
            }
            Op::DeletePrefix { table, prefix } => {
                let t = self.table(table)?;
                match crate::prefix_end(prefix) {
                    Some(end) => t.retain_in(prefix.as_slice()..end.as_slice(), |_, _| false)?,
                    None => t.retain_in(prefix.as_slice().., |_, _| false)?,
                }
            }
        }
        Ok(())
    }
}
