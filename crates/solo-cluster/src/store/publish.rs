//! The write path: a node's writes queued in call order, grouped while an entry is in
//! flight, and published (in parts when large) with retries while the log has no leader.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use futures::future::BoxFuture;
use solo_store::{Commit, StoreError, WriteBatch};
use tokio::sync::{mpsc, oneshot};

use super::{Applied, HDR_BATCH, HDR_KIND, HDR_PART, PART_BYTES, Shared};
use crate::lease::{Lease, LeaseOp};

pub(super) struct Waiting(Arc<Shared>, String);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.lock().remove(&self.1);
    }
}

/// A write on its way to the log.
pub(super) struct Outgoing {
    pub(super) id: String,
    pub(super) bytes: Bytes,
    pub(super) kind: Option<&'static str>,
}

/// The largest group of writes one entry carries, and how many.
const GROUP_BYTES: usize = 256 << 10;
const GROUP_MAX: usize = 1024;

/// Where a writer's entries go: the publisher's queue, in call order.
#[derive(Clone)]
pub(super) struct Log {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: mpsc::UnboundedSender<Outgoing>,
    /// How long a writer waits for its entry to be published and applied here.
    pub(super) wait_for: Duration,
}

impl Log {
    /// Queues a batch (at once, so writes reach the log in the order they were made)
    /// and answers with its commit once this node has applied it.
    pub(super) fn write(
        &self,
        mut batch: WriteBatch,
    ) -> BoxFuture<'static, Result<Commit, StoreError>> {
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
    pub(super) fn lease(&self, op: LeaseOp) -> BoxFuture<'static, Result<Lease, StoreError>> {
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
    pub(super) fn submit(
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
pub(super) async fn run_publisher(
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
        metrics::counter!(solo_types::metric_names::CLUSTER_PUBLISH_RETRIES).increment(1);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

pub(super) fn batch_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes the batches of one group entry: their count, then each one's id and bytes,
/// lengths as u32 big-endian.
pub(super) fn encode_group(members: &[Outgoing]) -> Bytes {
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
