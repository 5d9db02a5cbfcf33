//! The store traits over the replicated log: writes go to the stream, reads to the local
//! view that an applier task keeps in step with it.
//!
//! A write batch becomes one or more stream messages (parts of at most [`PART_BYTES`],
//! each with a `Nats-Msg-Id`, so a publish retried after a lost acknowledgement is stored
//! once). A batch takes effect at the position of its last part: every node's applier
//! reassembles it there and commits it to its view together with a marker (the last
//! applied sequence and where to resume reading), in one local transaction, so a node
//! that restarts applies each batch exactly once. The writer waits for its own node's
//! applier to reach the batch and answers with the ids the view assigned, which every
//! node assigns alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
    context::PublishErrorKind,
    message::PublishMessage,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use parking_lot::Mutex;
use solo_store::{
    Commit, EventFilter, EventLog, EventPage, EventQuery, Kv, KvRead, RedbStore, StoreError,
    Subscription, VerifyReport, WriteBatch,
};
use solo_types::NewEvent;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ClusterOptions;
use crate::check::{self, ClusterError};
use crate::lease::{LEASE_TABLE, Lease, LeaseOp, Leases};

/// The largest part of a batch one stream message carries (NATS's default message limit
/// is 1 MiB).
pub const PART_BYTES: usize = 256 << 10;
/// How many stream entries a batch's parts may span before an incomplete batch (its
/// writer died between parts) is dropped, alike on every node.
const MAX_PART_SPAN: u64 = 100_000;
/// How many local commits the applier keeps in flight (the view groups them).
const MAX_IN_FLIGHT: usize = 256;
/// The view's table of the applier's marker.
const MARKER_TABLE: &str = "cluster_view";
const HDR_BATCH: &str = "Solo-Batch";
const HDR_PART: &str = "Solo-Part";
/// `lease` on a lease request; absent on a write batch.
const HDR_KIND: &str = "Solo-Kind";

/// What a writer hears once its entry is applied here: the commit, and the lease when
/// the entry was a lease request.
#[derive(Debug)]
struct Applied {
    commit: Commit,
    lease: Option<Lease>,
}

type Answer = oneshot::Sender<Result<Applied, StoreError>>;

/// What the writers and the applier share.
struct Shared {
    view: RedbStore,
    /// Writers waiting for their batch to be applied, by batch id.
    waiters: Mutex<HashMap<String, Answer>>,
    /// Every stream entry up to this sequence has been applied (or set aside) here.
    applied: watch::Sender<u64>,
    /// Why the applier is stalled, while it is.
    fault: Mutex<Option<String>>,
}

impl Shared {
    fn answer(&self, batch: &str, result: Result<Applied, StoreError>) {
        if let Some(tx) = self.waiters.lock().remove(batch) {
            let _ = tx.send(result);
        }
    }

    /// The durable marker: the last applied sequence and where reading resumes.
    fn marker(&self) -> Result<(u64, u64), StoreError> {
        let snap = self.view.snapshot()?;
        let read = |key: &[u8]| -> Result<Option<u64>, StoreError> {
            Ok(snap
                .get(MARKER_TABLE, key)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_be_bytes))
        };
        let applied = read(b"applied")?.unwrap_or(0);
        let resume = read(b"resume")?.unwrap_or(applied + 1);
        Ok((applied, resume))
    }
}

/// Aborts a task of the store (the applier, the publisher) when the store goes.
struct Applier(tokio::task::JoinHandle<()>);

impl Drop for Applier {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The event log and key-value store of a cluster node.
pub struct JetStreamStore {
    shared: Arc<Shared>,
    node_id: String,
    log: Log,
    _applier: Applier,
    _publisher: Applier,
}

impl JetStreamStore {
    /// Connects, checks the log is safe to write (see [`check`]), opens the local view and
    /// waits until it has applied everything the log held when the node started.
    pub async fn open(opts: ClusterOptions) -> Result<Self, ClusterError> {
        let mut connect = async_nats::ConnectOptions::new().name(format!("solo-{}", opts.node_id));
        if let Some(tls) = &opts.tls {
            for file in [&tls.ca_file, &tls.cert_file, &tls.key_file] {
                if !file.is_file() {
                    return Err(ClusterError::Connect {
                        urls: opts.nats_urls.join(","),
                        detail: format!("TLS file {} cannot be read", file.display()),
                    });
                }
            }
            connect = connect
                .require_tls(true)
                .add_root_certificates(tls.ca_file.clone())
                .add_client_certificate(tls.cert_file.clone(), tls.key_file.clone());
        }
        let client = connect
            .connect(opts.nats_urls.as_slice())
            .await
            .map_err(|e| ClusterError::Connect {
                urls: opts.nats_urls.join(","),
                detail: e.to_string(),
            })?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(opts.ack_timeout)
            .build(client);
        let stream = check::ensure_stream(&js, &opts).await?;
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| ClusterError::Stream {
            stream: opts.stream.clone(),
            detail: format!("create {}: {e}", opts.data_dir.display()),
        })?;
        let view = RedbStore::open(opts.data_dir.join("view.redb"))?;
        let shared = Arc::new(Shared {
            view,
            waiters: Mutex::new(HashMap::new()),
            applied: watch::channel(0).0,
            fault: Mutex::new(None),
        });
        let (applied, _) = shared.marker()?;
        shared.applied.send_replace(applied);
        let target = stream
            .get_info()
            .await
            .map_err(|e| ClusterError::Stream {
                stream: opts.stream.clone(),
                detail: e.to_string(),
            })?
            .state
            .last_sequence;
        let subject = opts.subject();
        let applier = Applier(tokio::spawn(run_applier(
            Arc::clone(&shared),
            stream,
            subject.clone(),
        )));
        let mut applied = shared.applied.subscribe();
        let _ = applied.wait_for(|a| *a >= target).await;
        tracing::info!(
            stream = %opts.stream,
            applied = target,
            "the local view has caught up with the cluster's log"
        );
        let (outbox, queued) = mpsc::unbounded_channel();
        let publisher = Applier(tokio::spawn(run_publisher(
            Arc::clone(&shared),
            js,
            subject,
            opts.retry_for,
            queued,
        )));
        Ok(Self {
            log: Log {
                shared: Arc::clone(&shared),
                outbox,
                wait_for: opts.retry_for + opts.apply_timeout,
            },
            shared,
            node_id: opts.node_id.clone(),
            _applier: applier,
            _publisher: publisher,
        })
    }

    /// The last stream sequence this node has applied.
    pub fn applied_sequence(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Waits until this node has applied the log up to `sequence`.
    pub async fn wait_applied(&self, sequence: u64) {
        let mut rx = self.shared.applied.subscribe();
        let _ = rx.wait_for(|a| *a >= sequence).await;
    }

    fn log(&self) -> Log {
        self.log.clone()
    }

    /// This node's name: the holder of the leases it takes.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Takes lease `scope` for this node for `ttl`, or renews it if this node holds it
    /// and it has not lapsed; refused with [`StoreError::LeaseHeld`] while another node
    /// holds it. The lease's epoch is the fencing token of the writes made under it
    /// ([`WriteBatch::fenced`]).
    pub async fn acquire(&self, scope: &str, ttl: Duration) -> Result<Lease, StoreError> {
        self.log()
            .lease(LeaseOp::Acquire {
                scope: scope.to_string(),
                holder: self.node_id.clone(),
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            })
            .await
    }

    /// Gives `lease` up, so another node may take it at once.
    pub async fn release(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.log()
            .lease(LeaseOp::Release {
                scope: lease.scope.clone(),
                holder: lease.holder.clone(),
                epoch: lease.epoch,
            })
            .await
    }

    /// Lease `scope` as this node's view last saw it.
    pub fn lease(&self, scope: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self
            .shared
            .view
            .get(LEASE_TABLE, scope.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The local view, for inspection.
    pub fn view(&self) -> &RedbStore {
        &self.shared.view
    }
}

/// Removes a writer's waiter when the writer gives up.
struct Waiting(Arc<Shared>, String);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.lock().remove(&self.1);
    }
}

/// A write on its way to the log.
struct Outgoing {
    id: String,
    bytes: Bytes,
    kind: Option<&'static str>,
}

/// The largest group of writes one entry carries, and how many.
const GROUP_BYTES: usize = 256 << 10;
const GROUP_MAX: usize = 1024;

/// Where a writer's entries go: the publisher's queue, in call order.
#[derive(Clone)]
struct Log {
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// How long a writer waits for its entry to be published and applied here.
    wait_for: Duration,
}

impl Log {
    /// Queues a batch (at once, so writes reach the log in the order they were made)
    /// and answers with its commit once this node has applied it.
    fn write(&self, mut batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>> {
        if batch.is_empty() {
            return Box::pin(async { Ok(Commit::default()) });
        }
        if batch.at().is_none() {
            batch.stamped_at(solo_types::clock::system_now_ns());
        }
        let pending = self.submit(Bytes::from(batch.to_bytes()), None);
        Box::pin(async move { pending.await.map(|a| a.commit) })
    }

    /// Asks the log for a lease decision and answers with the lease.
    fn lease(&self, op: LeaseOp) -> BoxFuture<'static, Result<Lease, StoreError>> {
        let bytes = match serde_json::to_vec(&op) {
            Ok(b) => b,
            Err(e) => return Box::pin(async move { Err(StoreError::BadBatch(e.to_string())) }),
        };
        let pending = self.submit(Bytes::from(bytes), Some("lease"));
        Box::pin(async move {
            pending
                .await?
                .lease
                .ok_or_else(|| StoreError::BadBatch("a lease entry applied without a lease".into()))
        })
    }

    /// Queues one entry and waits until this node applied it.
    fn submit(
        &self,
        bytes: Bytes,
        kind: Option<&'static str>,
    ) -> BoxFuture<'static, Result<Applied, StoreError>> {
        let id = batch_id();
        let (tx, rx) = oneshot::channel();
        self.shared.waiters.lock().insert(id.clone(), tx);
        let waiting = Waiting(Arc::clone(&self.shared), id.clone());
        let sent = self.outbox.send(Outgoing { id, bytes, kind }).is_ok();
        let wait_for = self.wait_for;
        Box::pin(async move {
            let waiting = waiting;
            if !sent {
                return Err(StoreError::Closed);
            }
            match tokio::time::timeout(wait_for, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(StoreError::Closed),
                Err(_) => Err(StoreError::ClusterUnavailable(format!(
                    "the write was not applied on this node within {wait_for:?}; it may still \
                     be committed{}",
                    waiting
                        .0
                        .fault
                        .lock()
                        .as_ref()
                        .map(|f| format!(" ({f})"))
                        .unwrap_or_default()
                ))),
            }
        })
    }
}

/// Publishes queued writes in order, one entry at a time: all the plain batches waiting
/// when it is free go together in one group entry (as the embedded store groups
/// concurrent commits into one fsync); a lease request goes alone.
async fn run_publisher(
    shared: Arc<Shared>,
    js: jetstream::Context,
    subject: String,
    retry_for: Duration,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut held: Option<Outgoing> = None;
    loop {
        let first = match held.take() {
            Some(o) => o,
            None => match rx.recv().await {
                Some(o) => o,
                None => return,
            },
        };
        let mut group = vec![first];
        if group[0].kind.is_none() {
            let mut size = group[0].bytes.len();
            while size < GROUP_BYTES && group.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(o) if o.kind.is_none() => {
                        size += o.bytes.len();
                        group.push(o);
                    }
                    Ok(o) => {
                        held = Some(o);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let published = if group.len() == 1 {
            let o = &group[0];
            publish_entry(&js, &subject, &o.id, o.kind, o.bytes.clone(), retry_for).await
        } else {
            let id = batch_id();
            publish_entry(
                &js,
                &subject,
                &id,
                Some("group"),
                encode_group(&group),
                retry_for,
            )
            .await
        };
        if let Err(e) = published {
            for o in &group {
                shared.answer(&o.id, Err(e.clone()));
            }
        }
    }
}

/// Publishes one entry, in parts if it is larger than a part.
async fn publish_entry(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    kind: Option<&str>,
    bytes: Bytes,
    retry_for: Duration,
) -> Result<u64, StoreError> {
    let n = bytes.len().div_ceil(PART_BYTES).max(1);
    let mut last = 0;
    for part in 0..n {
        let chunk = bytes.slice(
            (part * PART_BYTES).min(bytes.len())..((part + 1) * PART_BYTES).min(bytes.len()),
        );
        last = publish(js, subject, id, (part + 1, n), kind, chunk, retry_for).await?;
    }
    Ok(last)
}

/// Publishes one part, retrying with the same message id while the log has no leader or
/// no quorum (the stream's duplicate window makes a retried part land once).
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    (part, of): (usize, usize),
    kind: Option<&str>,
    payload: Bytes,
    retry_for: Duration,
) -> Result<u64, StoreError> {
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut delay = Duration::from_millis(50);
    let mut timed_out = false;
    loop {
        let mut message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{id}.{part}"))
            .header(HDR_BATCH, id)
            .header(HDR_PART, format!("{part}/{of}"));
        if let Some(kind) = kind {
            message = message.header(HDR_KIND, kind);
        }
        let outcome = match js.send_publish(subject.to_string(), message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let e = match outcome {
            Ok(ack) => return Ok(ack.sequence),
            Err(e) => e,
        };
        timed_out |= e.kind() == PublishErrorKind::TimedOut;
        let retryable = matches!(
            e.kind(),
            PublishErrorKind::TimedOut
                | PublishErrorKind::StreamNotFound
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::Other
        );
        if !retryable || tokio::time::Instant::now() + delay > deadline {
            let outcome = if timed_out {
                "an acknowledgement was lost, so the write may still be committed"
            } else {
                "the write was not committed"
            };
            return Err(StoreError::ClusterUnavailable(format!(
                "{e} (retried for {retry_for:?}; {outcome})"
            )));
        }
        tracing::debug!(error = %e, "the log refused a write; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

fn batch_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A batch whose parts are still arriving.
struct Partial {
    first_seq: u64,
    parts: Vec<Option<Bytes>>,
}

/// One stream entry's outcome, in stream order.
type Step = BoxFuture<'static, (u64, Vec<(String, Result<Applied, StoreError>)>)>;

/// Applies the log to the view for as long as the store lives, restarting from the
/// durable marker after a failure.
async fn run_applier(shared: Arc<Shared>, stream: jetstream::stream::Stream, subject: String) {
    let mut careful_until = 0;
    loop {
        let result = match shared.marker() {
            Ok((applied, resume)) => {
                apply_from(&shared, &stream, &subject, applied, resume, careful_until).await
            }
            Err(e) => Err((0, e.to_string())),
        };
        if let Err((at, why)) = result {
            tracing::warn!(error = %why, "applying the cluster's log stalled; retrying");
            *shared.fault.lock() = Some(why);
            careful_until = careful_until.max(at);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = shared.view.recover().await;
        }
    }
}

/// Reads the log from `resume` and applies each completed batch after `applied`. Up to
/// `careful_until`, one commit at a time, so that a batch the view refuses on its own is
/// told apart from a failure of the view. Returns where and why it stopped.
async fn apply_from(
    shared: &Arc<Shared>,
    stream: &jetstream::stream::Stream,
    subject: &str,
    applied: u64,
    resume: u64,
    careful_until: u64,
) -> Result<(), (u64, String)> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: resume.max(1),
            },
            // Short pulls: heartbeats every second, so a consumer lost with its NATS
            // server is noticed and recreated within about two (the default is 30 s).
            max_expires: Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .map_err(|e| (resume, format!("read the log: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| (resume, format!("read the log: {e}")))?;
    let mut leases = shared
        .view
        .snapshot()
        .and_then(|snap| Leases::load(snap.as_ref()))
        .map_err(|e| (resume, format!("read the leases: {e}")))?;
    let mut partials: HashMap<String, Partial> = HashMap::new();
    let mut in_flight: FuturesOrdered<Step> = FuturesOrdered::new();
    let mut seen = resume.saturating_sub(1);
    loop {
        let limit = if seen < careful_until {
            1
        } else {
            MAX_IN_FLIGHT
        };
        tokio::select! {
            Some((seq, done)) = in_flight.next(), if !in_flight.is_empty() => {
                for (batch, result) in done {
                    match result {
                        Err(e) if e.is_unavailable() || matches!(e, StoreError::Io { .. }
                            | StoreError::Poisoned { .. } | StoreError::Corrupted { .. }) => {
                            return Err((seq, e.to_string()));
                        }
                        result => shared.answer(&batch, result),
                    }
                }
                *shared.fault.lock() = None;
                shared.applied.send_replace(seq);
            }
            next = messages.next(), if in_flight.len() < limit => {
                let message = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err((seen, format!("read the log: {e}"))),
                    None => return Err((seen, "the log's consumer ended".into())),
                };
                let (seq, now) = match message.info() {
                    Ok(info) => (
                        info.stream_sequence,
                        i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                    ),
                    Err(e) => return Err((seen, format!("a log entry without its sequence: {e}"))),
                };
                if seq <= seen {
                    continue;
                }
                seen = seq;
                partials.retain(|_, p| p.first_seq + MAX_PART_SPAN >= seq);
                let step = match assemble(&mut partials, seq, &message) {
                    Some((batch, bytes)) if seq > applied => {
                        let resume = partials.values().map(|p| p.first_seq).min().unwrap_or(seq + 1);
                        let kind = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(HDR_KIND))
                            .map(|k| k.as_str().to_string());
                        match kind.as_deref() {
                            Some("lease") => {
                                let (decided, outcome) = decide_lease(&mut leases, &bytes, now);
                                apply(&shared.view, seq, resume, batch, decided, outcome)
                            }
                            Some("group") => apply_group(&shared.view, seq, resume, &leases, &bytes, now),
                            _ => {
                                let (decided, outcome) = decide_batch(&leases, &bytes, now);
                                apply(&shared.view, seq, resume, batch, decided, outcome)
                            }
                        }
                    }
                    Some((batch, _)) => {
                        // Applied before this node restarted; its writer, if it is still
                        // waiting here, lost its answer with the failed local commit.
                        if shared.waiters.lock().contains_key(&batch) {
                            shared.answer(&batch, Err(StoreError::ClusterUnavailable(format!(
                                "the write was committed (log sequence {seq}), but this node's \
                                 view failed while applying it"
                            ))));
                        }
                        ready(seq)
                    }
                    None => ready(seq),
                };
                in_flight.push_back(step);
            }
        }
    }
}

fn ready(seq: u64) -> Step {
    Box::pin(async move { (seq, Vec::new()) })
}

/// Files one entry's part; returns the batch id and its bytes once every part is in.
fn assemble(
    partials: &mut HashMap<String, Partial>,
    seq: u64,
    message: &jetstream::Message,
) -> Option<(String, Vec<u8>)> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let batch = header(HDR_BATCH).unwrap_or_else(|| format!("unnamed-{seq}"));
    let (part, of) = header(HDR_PART)
        .and_then(|p| {
            let (a, b) = p.split_once('/')?;
            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
        })
        .filter(|&(a, b)| a >= 1 && a <= b && b <= 1 << 16)
        .unwrap_or((1, 1));
    if of == 1 {
        return Some((batch, message.payload.to_vec()));
    }
    let entry = partials.entry(batch.clone()).or_insert_with(|| Partial {
        first_seq: seq,
        parts: vec![None; of],
    });
    if entry.parts.len() != of {
        // Parts that disagree on their count: the batch is malformed.
        partials.remove(&batch);
        return Some((batch, Vec::new()));
    }
    entry.parts[part - 1] = Some(message.payload.clone());
    if entry.parts.iter().any(Option::is_none) {
        return None;
    }
    let done = partials.remove(&batch)?;
    let bytes = done.parts.into_iter().flatten().flatten().collect();
    Some((batch, bytes))
}

/// A write batch's fate at time `now`: the batch to commit (empty when refused) and why
/// it was refused, if it was.
fn decide_batch(
    leases: &Leases,
    bytes: &[u8],
    now: i64,
) -> (WriteBatch, Result<Option<Lease>, StoreError>) {
    match WriteBatch::from_bytes(bytes) {
        Ok(batch) => match batch.fence() {
            Some((scope, epoch)) => match leases.check(scope, epoch, now) {
                Ok(()) => (batch, Ok(None)),
                Err(e) => (WriteBatch::new(), Err(e)),
            },
            None => (batch, Ok(None)),
        },
        Err(e) => {
            tracing::warn!(error = %e, "a log entry cannot be read; it is skipped");
            (WriteBatch::new(), Err(e))
        }
    }
}

/// A lease request's outcome at time `now`, and the batch recording it.
fn decide_lease(
    leases: &mut Leases,
    bytes: &[u8],
    now: i64,
) -> (WriteBatch, Result<Option<Lease>, StoreError>) {
    match serde_json::from_slice::<LeaseOp>(bytes) {
        Ok(op) => {
            let (batch, outcome) = leases.decide(op, now);
            (batch, outcome.map(Some))
        }
        Err(e) => (
            WriteBatch::new(),
            Err(StoreError::BadBatch(format!(
                "a lease request cannot be read: {e}"
            ))),
        ),
    }
}

/// Encodes the batches of one group entry: their count, then each one's id and bytes,
/// lengths as u32 big-endian.
fn encode_group(members: &[Outgoing]) -> Bytes {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    let mut out = Vec::with_capacity(
        4 + members
            .iter()
            .map(|m| 8 + m.id.len() + m.bytes.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&len(members.len()));
    for m in members {
        out.extend_from_slice(&len(m.id.len()));
        out.extend_from_slice(m.id.as_bytes());
        out.extend_from_slice(&len(m.bytes.len()));
        out.extend_from_slice(&m.bytes);
    }
    Bytes::from(out)
}

/// Reads a group entry; `None` if it is malformed.
fn decode_group(bytes: &[u8]) -> Option<Vec<(String, &[u8])>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn len(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    let mut rest = bytes;
    let n = len(&mut rest)?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let id_len = len(&mut rest)?;
        let id = String::from_utf8(take(&mut rest, id_len)?.to_vec()).ok()?;
        let body_len = len(&mut rest)?;
        out.push((id, take(&mut rest, body_len)?));
    }
    rest.is_empty().then_some(out)
}

/// Applies the batches of one group entry in one local commit (with the marker), each
/// decided on its own (a stale fence refuses only its batch), and answers each writer
/// with its own event ids.
fn apply_group(
    view: &RedbStore,
    seq: u64,
    resume: u64,
    leases: &Leases,
    bytes: &[u8],
    now: i64,
) -> Step {
    let Some(members) = decode_group(bytes) else {
        tracing::warn!(seq, "a group entry cannot be read; it is skipped");
        return apply(
            view,
            seq,
            resume,
            String::new(),
            WriteBatch::new(),
            Ok(None),
        );
    };
    let mut merged = WriteBatch::new();
    let mut at = i64::MIN;
    // Per member: its id and either the range of its events in the merged batch or why
    // it was refused.
    let mut fates: Vec<(String, Result<std::ops::Range<usize>, StoreError>)> = Vec::new();
    for (id, member) in members {
        let (batch, outcome) = decide_batch(leases, member, now);
        match outcome {
            Ok(_) => {
                at = at.max(batch.at().unwrap_or(now));
                let first = merged.next_event_index();
                let n = batch.events().len();
                merged.extend(batch);
                fates.push((id, Ok(first..first + n)));
            }
            Err(e) => fates.push((id, Err(e))),
        }
    }
    if at != i64::MIN {
        merged.stamped_at(at);
    }
    let commit = apply(view, seq, resume, String::new(), merged, Ok(None));
    Box::pin(async move {
        let (seq, mut done) = commit.await;
        let whole = done.pop().map_or(Err(StoreError::Closed), |(_, r)| r);
        let answers = fates
            .into_iter()
            .map(|(id, fate)| {
                let answer = match (&whole, fate) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), Err(refused)) => Err(refused),
                    (Ok(applied), Ok(range)) => Ok(Applied {
                        commit: Commit {
                            event_ids: applied
                                .commit
                                .event_ids
                                .get(range)
                                .unwrap_or_default()
                                .to_vec(),
                        },
                        lease: None,
                    }),
                };
                (id, answer)
            })
            .collect::<Vec<_>>();
        (seq, answers)
    })
}

/// Commits one decided entry (with the marker; only the marker when it was refused) to
/// the view, and answers its writer with the outcome.
fn apply(
    view: &RedbStore,
    seq: u64,
    resume: u64,
    batch_id: String,
    mut batch: WriteBatch,
    outcome: Result<Option<Lease>, StoreError>,
) -> Step {
    let marker = batch
        .put(
            MARKER_TABLE,
            b"applied".to_vec(),
            seq.to_be_bytes().to_vec(),
        )
        .and_then(|b| {
            b.put(
                MARKER_TABLE,
                b"resume".to_vec(),
                resume.to_be_bytes().to_vec(),
            )
        })
        .map(|_| ());
    let commit = view.commit(batch);
    Box::pin(async move {
        let result = match (marker, commit.await, outcome) {
            (Err(e), _, _) | (_, Err(e), _) => Err(e),
            (Ok(()), Ok(_), Err(refused)) => Err(refused),
            (Ok(()), Ok(commit), Ok(lease)) => Ok(Applied { commit, lease }),
        };
        (seq, vec![(batch_id, result)])
    })
}

impl EventLog for JetStreamStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let mut batch = WriteBatch::new();
        for e in events {
            batch.event(e);
        }
        let commit = self.commit(batch);
        Box::pin(async move { commit.await.map(|c| c.event_ids) })
    }

    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.shared.view.read(query)
    }

    fn last_id(&self) -> u64 {
        self.shared.view.last_id()
    }

    fn subscribe(&self, after_id: u64, filter: EventFilter) -> Subscription {
        self.shared.view.subscribe(after_id, filter)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.shared.view.verify()
    }
}

impl Kv for JetStreamStore {
    fn snapshot(&self) -> Result<Box<dyn KvRead>, StoreError> {
        self.shared.view.snapshot()
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>> {
        self.log.write(batch)
    }

    fn fault(&self) -> Option<String> {
        self.shared
            .fault
            .lock()
            .clone()
            .or_else(|| self.shared.view.fault())
    }

    fn recover(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.shared.view.recover()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn group_entries_round_trip_and_malformed_ones_are_refused() {
        let members: Vec<Outgoing> = (0..3)
            .map(|i| Outgoing {
                id: format!("id{i}"),
                bytes: Bytes::from(vec![i as u8; i * 10]),
                kind: None,
            })
            .collect();
        let bytes = encode_group(&members);
        let back = decode_group(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        for (i, (id, body)) in back.iter().enumerate() {
            assert_eq!(id, &format!("id{i}"));
            assert_eq!(*body, &members[i].bytes[..]);
        }
        for n in 0..bytes.len() {
            assert!(decode_group(&bytes[..n]).is_none(), "truncated at {n}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_group(&longer).is_none());
        assert!(decode_group(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
