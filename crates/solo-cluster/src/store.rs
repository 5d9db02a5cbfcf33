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

use async_nats::jetstream;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use solo_store::{
    Commit, EventFilter, EventLog, EventPage, EventQuery, Kv, KvRead, RedbStore, StoreError,
    StoreOptions, Subscription, VerifyReport, WriteBatch,
};
use solo_types::NewEvent;
use tokio::sync::{mpsc, oneshot, watch};

mod apply;
mod publish;

use crate::ClusterOptions;
use crate::check::{self, ClusterError};
use crate::compact::{self, Compaction};
use crate::lease::{LEASE_TABLE, Lease, LeaseOp};
use crate::membership::{Heartbeat, Membership};
use apply::run_applier;
use publish::{Log, run_publisher};

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
    /// Set when the applier met a gap in the log (compacted past this view): it stopped.
    behind: watch::Sender<bool>,
}

impl Shared {
    fn answer(&self, batch: &str, result: Result<Applied, StoreError>) {
        if let Some(tx) = self.waiters.lock().remove(batch) {
            let _ = tx.send(result);
        }
    }

    /// The durable marker: the last applied sequence and where reading resumes.
    fn marker(&self) -> Result<(u64, u64), StoreError> {
        read_marker(self.view.snapshot()?.as_ref())
    }
}

/// A view's marker: the last sequence it applied and where reading resumes.
pub(crate) fn read_marker(snap: &dyn KvRead) -> Result<(u64, u64), StoreError> {
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
    js: jetstream::Context,
    /// The log's stream (for its state and compaction's purge).
    log_stream: jetstream::stream::Stream,
    /// The log's stream and replicas, which the membership bucket is named and kept by.
    stream: String,
    replicas: usize,
    data_dir: std::path::PathBuf,
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
        let state = stream
            .get_info()
            .await
            .map_err(|e| ClusterError::Stream {
                stream: opts.stream.clone(),
                detail: e.to_string(),
            })?
            .state;
        let view_path = opts.data_dir.join("view.redb");
        let open_view = || {
            RedbStore::open_with(
                &view_path,
                StoreOptions {
                    sync_commits: opts.sync_view,
                    ..StoreOptions::default()
                },
            )
        };
        let mut view = open_view()?;
        if state.first_sequence > read_marker(view.snapshot()?.as_ref())?.1 {
            // The log no longer holds what this view needs: start from the latest copy.
            view.close().await;
            drop(view);
            compact::install(
                &js,
                &opts.stream,
                opts.replicas,
                &view_path,
                state.first_sequence,
                opts.retry_for,
            )
            .await?;
            view = open_view()?;
        }
        let shared = Arc::new(Shared {
            view,
            waiters: Mutex::new(HashMap::new()),
            applied: watch::channel(0).0,
            fault: Mutex::new(None),
            behind: watch::channel(false).0,
        });
        let (applied, _) = shared.marker()?;
        shared.applied.send_replace(applied);
        let target = state.last_sequence;
        let subject = opts.subject();
        let log_stream = stream.clone();
        let applier = Applier(tokio::spawn(run_applier(
            Arc::clone(&shared),
            stream,
            subject.clone(),
        )));
        let mut applied = shared.applied.subscribe();
        let mut behind = shared.behind.subscribe();
        tokio::select! {
            _ = applied.wait_for(|a| *a >= target) => {}
            _ = behind.wait_for(|b| *b) => {
                // Compacted past this view while it caught up: start again, from the
                // newer copy.
                return Err(ClusterError::FellBehind(
                    shared.fault.lock().clone().unwrap_or_default(),
                ));
            }
        }
        tracing::info!(
            stream = %opts.stream,
            applied = target,
            "the local view has caught up with the cluster's log"
        );
        let (outbox, queued) = mpsc::unbounded_channel();
        let publisher = Applier(tokio::spawn(run_publisher(
            Arc::clone(&shared),
            js.clone(),
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
            js,
            log_stream,
            stream: opts.stream.clone(),
            replicas: opts.replicas,
            data_dir: opts.data_dir.clone(),
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
                under: None,
            })
            .await
    }

    /// Places `scope` on node `holder` under its lease `under` (a tenant on a node): held
    /// for as long as `holder` holds `under` at its present epoch, so renewing `under`
    /// renews it. This node may ask for itself or, placing, for another. Refused with
    /// [`StoreError::LeaseHeld`] while `scope` is held elsewhere, and with
    /// [`StoreError::Fenced`] unless `holder` holds `under` (a lease of its own).
    pub async fn place(&self, scope: &str, holder: &str, under: &str) -> Result<Lease, StoreError> {
        self.log()
            .lease(LeaseOp::Acquire {
                scope: scope.to_string(),
                holder: holder.to_string(),
                ttl_ms: 0,
                under: Some(under.to_string()),
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

    /// Lease `scope` as this node's view last saw it (held under another: lapsing with
    /// it, `expires_ns` 0 once that one changed hands).
    pub fn lease(&self, scope: &str) -> Result<Option<Lease>, StoreError> {
        let snap = self.shared.view.snapshot()?;
        let read = |scope: &str| -> Result<Option<Lease>, StoreError> {
            Ok(snap
                .get(LEASE_TABLE, scope.as_bytes())?
                .and_then(|v| serde_json::from_slice(&v).ok()))
        };
        let Some(mut lease) = read(scope)? else {
            return Ok(None);
        };
        if let Some((parent, epoch)) = &lease.under
            && lease.expires_ns != 0
        {
            lease.expires_ns = crate::lease::resolve_end(&lease, read(parent)?.as_ref(), *epoch);
        }
        Ok(Some(lease))
    }

    /// Every lease `holder` holds as this node's view last saw them, by scope (each
    /// with its end; lapsed ones too, so the caller judges them against its clock).
    pub fn leases_held_by(&self, holder: &str) -> Result<Vec<Lease>, StoreError> {
        let snap = self.shared.view.snapshot()?;
        Ok(crate::lease::Leases::load(snap.as_ref())?.held_by(holder))
    }

    /// The cluster's membership through bucket `<stream>_NODES` (as replicated as the
    /// log), this node beating as `me` twice a lease once [`Membership::run`] runs.
    pub fn membership(&self, lease: Duration, me: Heartbeat) -> Arc<Membership> {
        let bucket = format!("{}_NODES", self.stream);
        let applied = self.shared.applied.subscribe();
        let shared = Arc::clone(&self.shared);
        let resume = Arc::new(move || shared.marker().ok().map(|(_, resume)| resume));
        Membership::new(
            self.js.clone(),
            bucket,
            self.replicas,
            lease,
            me,
            applied,
            resume,
        )
    }

    /// The local view, for inspection.
    pub fn view(&self) -> &RedbStore {
        &self.shared.view
    }

    /// Waits until this node's applier has stopped at a gap in the log: the log was
    /// compacted past what this view had applied (it fell behind while not counted as a
    /// live node), and the node must start again, from the latest copy of a view.
    pub async fn fell_behind_the_log(&self) {
        let mut behind = self.shared.behind.subscribe();
        let _ = behind.wait_for(|b| *b).await;
    }

    /// The log's first entry (everything before it was compacted away).
    pub async fn first_sequence(&self) -> Result<u64, ClusterError> {
        self.log_stream
            .get_info()
            .await
            .map(|info| info.state.first_sequence)
            .map_err(|e| ClusterError::Stream {
                stream: self.stream.clone(),
                detail: e.to_string(),
            })
    }

    /// Compacts the log: copies this node's view to the cluster's object store (see
    /// [`compact`]), then purges the log's entries before what the copy needs, but none
    /// past `floor + 1`, where `floor` is one before the first entry a live node still needs
    /// ([`crate::Heartbeat::needs_from`]).
    pub async fn compact(&self, floor: u64) -> Result<Compaction, ClusterError> {
        let err = |detail: String| ClusterError::Stream {
            stream: self.stream.clone(),
            detail,
        };
        // Read before the copy: the copy's own marker is the same or later, so it needs
        // nothing before this.
        let (_, resume) = self.shared.marker()?;
        let copy = self.data_dir.join("view.copy.redb");
        let bytes = self.shared.view.copy_to(copy.clone()).await?;
        let done = async {
            let bucket = compact::bucket(&self.js, &self.stream, self.replicas)
                .await
                .map_err(err)?;
            compact::upload(&bucket, &copy, resume).await.map_err(err)?;
            let first_kept = resume.min(floor.saturating_add(1));
            self.log_stream
                .purge()
                .sequence(first_kept)
                .await
                .map_err(|e| err(format!("purge the log before entry {first_kept}: {e}")))?;
            Ok(Compaction { first_kept, bytes })
        }
        .await;
        let _ = std::fs::remove_file(&copy);
        done
    }
}

/// Removes a writer's waiter when the writer gives up.
impl EventLog for JetStreamStore {
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let commit = self.commit(WriteBatch::from_events(events));
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
