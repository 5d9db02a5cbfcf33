//! The read path: the applier that follows the log and applies each entry to the view
//! (reassembling parts, deciding fences and leases), alike on every node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use solo_store::{Commit, Kv, RedbStore, StoreError, WriteBatch};
use solo_types::metric_names as m;

use super::{
    Applied, HDR_BATCH, HDR_KIND, HDR_PART, MARKER_TABLE, MAX_IN_FLIGHT, MAX_PART_SPAN, Shared,
};
use crate::lease::{Lease, LeaseOp, Leases};

/// A batch whose parts are still arriving.
struct Partial {
    first_seq: u64,
    parts: Vec<Option<Bytes>>,
}

/// One stream entry's outcome, in stream order.
type Step = BoxFuture<'static, (u64, Vec<(String, Result<Applied, StoreError>)>)>;

/// Applies the log to the view for as long as the store lives, restarting from the
/// durable marker after a failure.
pub(super) async fn run_applier(
    shared: Arc<Shared>,
    stream: jetstream::stream::Stream,
    subject: String,
) {
    let mut careful_until = 0;
    loop {
        let result = match shared.marker() {
            Ok((applied, resume)) => {
                apply_from(&shared, &stream, &subject, applied, resume, careful_until).await
            }
            Err(e) => Err((0, e.to_string())),
        };
        if let Err((at, why)) = result {
            if *shared.behind.borrow() {
                tracing::error!(error = %why, "applying the cluster's log stopped");
                *shared.fault.lock() = Some(why);
                return;
            }
            tracing::warn!(error = %why, "applying the cluster's log stalled; retrying");
            *shared.fault.lock() = Some(why);
            careful_until = careful_until.max(at);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = shared.view.recover().await;
        }
    }
}

/// How often an idle applier checks that its reader has not fallen behind the log.
///
/// After NATS loses and regains its quorum, the client's ordered consumer may sit in its
/// own retry backoff (10 s a try, each try waiting for its request's timeout) well after
/// the log is readable again: seen here as 45 s before a standby noticed the log moved.
/// Reading again from the marker is cheap; waiting is a longer failover.
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Whether the log holds an entry past `seen` (asked briefly: no answer says no).
async fn behind(stream: &jetstream::stream::Stream, seen: u64) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), stream.get_info()).await {
        Ok(Ok(info)) => info.state.last_sequence > seen,
        _ => false,
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
    let mut watchdog = tokio::time::interval(STALL_CHECK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watchdog.tick().await;
    let mut seen_at_tick = seen;
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
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 entries
                metrics::gauge!(m::CLUSTER_APPLIED_SEQUENCE).set(seq as f64);
            }
            _ = watchdog.tick() => {
                if seen == seen_at_tick && in_flight.is_empty() && behind(stream, seen).await {
                    return Err((seen, "the log's reader fell behind the log; reading again".into()));
                }
                seen_at_tick = seen;
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
                if seq > seen + 1 {
                    // The log has no holes but a compacted prefix: entries this view
                    // needs are gone, and going on would skip them.
                    shared.behind.send_replace(true);
                    return Err((seen, format!(
                        "the log was compacted past this node's view (it needs entry {}, \
                         the log goes on at {seq}); start the node again to load the \
                         latest copy of a view",
                        seen + 1
                    )));
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

/// Reads a group entry; `None` if it is malformed.
pub(super) fn decode_group(bytes: &[u8]) -> Option<Vec<(String, &[u8])>> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::publish::{Outgoing, encode_group};

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
