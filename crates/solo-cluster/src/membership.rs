//! Who is in the cluster: every node, active or standby, puts a heartbeat (its name, its
//! listeners, its version, when it started, how far its view has applied the log) into a replicated key-value bucket beside
//! the log, every period, and reads everybody's back. A node whose last heartbeat is
//! older than a lease has stopped beating (dead, paused or cut off from NATS); the
//! bucket forgets it after [`FORGET_AFTER_LEASES`] leases.
//!
//! Membership is advisory: it tells an operator which standbys could take over, and
//! compaction how far the live nodes have applied the log (its floor). It decides
//! nothing that safety rests on: who is active is the log's lease, and a node missing
//! here may still hold it; a node compacted past because its heartbeats were late meets
//! a gap and starts again from a copy of a view, never skipping an entry. So the bucket
//! is not held to the log's standard of safety (a heartbeat lost in a crash is replaced
//! by the next one), a bucket that cannot be opened yet (no quorum at start) is asked
//! for again each period, and a write that fails is retried at the next period rather
//! than refused.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::check::ClusterError;

/// How many leases a silent node stays in the bucket (shown as not beating) before the
/// bucket forgets it.
pub const FORGET_AFTER_LEASES: u32 = 30;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    /// Where clients reach the node (`host:port`), when it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    pub version: String,
    /// UTC ms.
    pub started_ms: u64,
    /// The last entry of the log the node's view had applied when it beat.
    #[serde(default)]
    pub applied: u64,
    /// Where the node's reader would resume if it started again (earlier than
    /// `applied + 1` while a large batch's parts are still arriving): the log must keep
    /// the entries from here for it. 0 from a node that does not say.
    #[serde(default)]
    pub resume: u64,
}

impl Heartbeat {
    /// The first entry of the log this node still needs.
    pub fn needs_from(&self) -> u64 {
        if self.resume > 0 {
            self.resume.min(self.applied + 1)
        } else {
            self.applied + 1
        }
    }
}

/// A node as last heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub beat: Heartbeat,
    /// When NATS stored its last heartbeat (UTC ns).
    pub seen_ns: i64,
}

impl Member {
    /// How long ago (ns, by `now`) its last heartbeat was stored.
    pub fn age_ns(&self, now: i64) -> i64 {
        now.saturating_sub(self.seen_ns).max(0)
    }

    /// Whether it beat within the last `lease`, by `now`.
    pub fn beating(&self, now: i64, lease: Duration) -> bool {
        self.age_ns(now) < i64::try_from(lease.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// Reads where the node's reader would resume (`None` if its view cannot say).
pub(crate) type Resume = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// This node's heartbeats and what it last read of everybody's.
pub struct Membership {
    js: jetstream::Context,
    bucket: String,
    replicas: usize,
    lease: Duration,
    /// The node's applied sequence, said in each heartbeat.
    applied: watch::Receiver<u64>,
    /// Where the node's reader resumes (its view's marker), said in each heartbeat.
    resume: Resume,
    me: Mutex<Heartbeat>,
    members: Mutex<Vec<Member>>,
}

impl Membership {
    /// Membership through bucket `bucket`, kept by `replicas` servers, with heartbeats
    /// twice a lease once [`Membership::run`] runs (which opens the bucket, creating it on
    /// first use, and keeps trying while it cannot).
    pub(crate) fn new(
        js: jetstream::Context,
        bucket: String,
        replicas: usize,
        lease: Duration,
        me: Heartbeat,
        applied: watch::Receiver<u64>,
        resume: Resume,
    ) -> Arc<Self> {
        Arc::new(Self {
            js,
            bucket,
            replicas,
            lease,
            applied,
            resume,
            me: Mutex::new(me),
            members: Mutex::new(Vec::new()),
        })
    }

    async fn open(&self) -> Result<kv::Store, ClusterError> {
        if let Ok(kv) = self.js.get_key_value(&self.bucket).await {
            return Ok(kv);
        }
        let created = self
            .js
            .create_key_value(kv::Config {
                bucket: self.bucket.clone(),
                description: "Solo's cluster membership: one heartbeat per node".into(),
                history: 1,
                max_age: self.lease * FORGET_AFTER_LEASES,
                num_replicas: self.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await;
        match created {
            Ok(kv) => Ok(kv),
            // Another node created it meanwhile.
            Err(e) => self
                .js
                .get_key_value(&self.bucket)
                .await
                .map_err(|_| ClusterError::Stream {
                    stream: format!("KV_{}", self.bucket),
                    detail: e.to_string(),
                }),
        }
    }

    /// Where this node listens, from its next heartbeat on.
    pub fn listening(&self, grpc: Option<String>, http: Option<String>) {
        let mut me = self.me.lock();
        me.grpc = grpc;
        me.http = http;
    }

    /// Every node heard from, by name, as of the last read.
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().clone()
    }

    /// Opens the bucket, then beats and reads every period, until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let every = self.lease / 2;
        let mut warned = false;
        let kv = loop {
            match self.open().await {
                Ok(kv) => break kv,
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "cannot open the membership bucket yet; health lists no nodes until it opens");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(every).await;
        };
        loop {
            if let Err(e) = self.beat(&kv).await {
                tracing::debug!(error = %e, "no heartbeat this period");
            }
            match self.read(&kv).await {
                Ok(members) => {
                    let now = solo_types::clock::system_now_ns();
                    let beating = members
                        .iter()
                        .filter(|m| m.beating(now, self.lease))
                        .count();
                    #[allow(clippy::cast_precision_loss)] // a handful of nodes
                    metrics::gauge!(solo_types::metric_names::CLUSTER_NODES_BEATING)
                        .set(beating as f64);
                    *self.members.lock() = members;
                }
                Err(e) => tracing::debug!(error = %e, "could not read the cluster's members"),
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn beat(&self, kv: &kv::Store) -> Result<(), String> {
        let mut me = self.me.lock().clone();
        me.applied = *self.applied.borrow();
        me.resume = (self.resume)().unwrap_or(0);
        let value = serde_json::to_vec(&me).map_err(|e| e.to_string())?;
        kv.put(&me.node, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn read(&self, kv: &kv::Store) -> Result<Vec<Member>, String> {
        let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
        let mut members = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| e.to_string())?;
            let Some(entry) = kv.entry(&key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            // A value no Solo wrote (tenants never reach NATS) is skipped.
            let Ok(beat) = serde_json::from_slice::<Heartbeat>(&entry.value) else {
                continue;
            };
            let seen_ns = i64::try_from(entry.created.unix_timestamp_nanos()).unwrap_or(0);
            members.push(Member { beat, seen_ns });
        }
        members.sort_by(|a, b| a.beat.node.cmp(&b.beat.node));
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_node_needs_the_log_from_where_its_reader_resumes() {
        let beat = |applied, resume| Heartbeat {
            node: "a".into(),
            grpc: None,
            http: None,
            version: "v".into(),
            started_ms: 0,
            applied,
            resume,
        };
        // Idle: right after what it applied.
        assert_eq!(beat(10, 11).needs_from(), 11);
        // A large batch's first parts at 7 and 8 wait for the rest: from 7.
        assert_eq!(beat(10, 7).needs_from(), 7);
        // A node of an earlier version says nothing: after what it applied.
        assert_eq!(beat(10, 0).needs_from(), 11);
        // Said later than applied (never by this build): no later than applied + 1.
        assert_eq!(beat(10, 50).needs_from(), 11);
        // An older heartbeat without the field reads as 0.
        let old: Heartbeat =
            serde_json::from_str(r#"{"node":"a","version":"v","started_ms":0,"applied":10}"#)
                .unwrap();
        assert_eq!(old.needs_from(), 11);
    }
}
