//! Leases decided by the log: who holds a scope (a service, a node's role), until when,
//! and at which epoch, the fencing token every write under the lease carries.
//!
//! A lease request is an entry of the log like any write, and every node's applier
//! decides it the same way, in log order, against the entry's timestamp (the one the
//! stream's leader gave it when it stored it), so every node agrees on every lease at
//! every point of the log without a second consensus. A batch fenced at `(scope, epoch)`
//! applies only if, at its place in the log, `scope` is held at `epoch` and has not
//! expired: a node that was paused past its lease's end and comes back writes nothing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use solo_store::{KvRead, StoreError, WriteBatch};
use solo_types::NewEvent;

/// The view's table of leases, by scope.
pub(crate) const LEASE_TABLE: &str = "cluster_leases";

/// A lease as the log decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub scope: String,
    pub holder: String,
    /// Grows by one each time the lease changes hands or is taken again after it lapsed:
    /// the fencing token.
    pub epoch: u64,
    /// When the lease lapses unless renewed, in the stream's clock (ns since the epoch);
    /// 0 once released.
    pub expires_ns: i64,
}

/// A lease request: one log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum LeaseOp {
    /// Take the lease (or renew it, if `holder` holds it and it has not lapsed).
    Acquire {
        scope: String,
        holder: String,
        ttl_ms: u64,
    },
    /// Give the lease up, if `holder` still holds it at `epoch`.
    Release {
        scope: String,
        holder: String,
        epoch: u64,
    },
}

/// Every lease, as of the last entry the applier decided.
#[derive(Default)]
pub(crate) struct Leases {
    map: HashMap<String, Lease>,
}

impl Leases {
    /// The leases the view holds (as of its last applied entry).
    pub(crate) fn load(snap: &dyn KvRead) -> Result<Self, StoreError> {
        let mut map = HashMap::new();
        let mut start = Vec::new();
        loop {
            let page = snap.range(
                LEASE_TABLE,
                std::ops::Bound::Excluded(start.as_slice()),
                std::ops::Bound::Unbounded,
                1024,
            )?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            for (_, v) in page {
                if let Ok(lease) = serde_json::from_slice::<Lease>(&v) {
                    map.insert(lease.scope.clone(), lease);
                }
            }
        }
        Ok(Self { map })
    }

    /// Checks a fence at time `now`.
    pub(crate) fn check(&self, scope: &str, epoch: u64, now: i64) -> Result<(), StoreError> {
        let fenced = |detail: String| StoreError::Fenced {
            scope: scope.to_string(),
            epoch,
            detail,
        };
        match self.map.get(scope) {
            None => Err(fenced("nobody holds it".into())),
            Some(l) if l.epoch != epoch => Err(fenced(format!(
                "{} holds it at epoch {}",
                l.holder, l.epoch
            ))),
            Some(l) if l.expires_ns < now => Err(fenced(format!(
                "it lapsed {} ms before this write reached the log",
                (now - l.expires_ns) / 1_000_000
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Decides `op` at time `now`: the batch recording the outcome (the lease's new state
    /// and, when it changes hands, an event), and the outcome.
    pub(crate) fn decide(
        &mut self,
        op: LeaseOp,
        now: i64,
    ) -> (WriteBatch, Result<Lease, StoreError>) {
        let mut batch = WriteBatch::new();
        batch.stamped_at(now);
        let outcome = match op {
            LeaseOp::Acquire {
                scope,
                holder,
                ttl_ms,
            } => {
                let ttl = i64::try_from(ttl_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
                let expires_ns = now.saturating_add(ttl);
                match self.map.get(&scope) {
                    Some(l) if l.expires_ns >= now && l.holder != holder => {
                        Err(StoreError::LeaseHeld {
                            scope,
                            holder: l.holder.clone(),
                        })
                    }
                    Some(l) if l.expires_ns >= now => Ok((
                        Lease {
                            expires_ns,
                            ..l.clone()
                        },
                        false,
                    )),
                    held => Ok((
                        Lease {
                            epoch: held.map_or(1, |l| l.epoch + 1),
                            scope,
                            holder,
                            expires_ns,
                        },
                        true,
                    )),
                }
            }
            LeaseOp::Release {
                scope,
                holder,
                epoch,
            } => match self.map.get(&scope) {
                Some(l) if l.holder == holder && l.epoch == epoch => Ok((
                    Lease {
                        expires_ns: 0,
                        ..l.clone()
                    },
                    true,
                )),
                _ => Err(StoreError::Fenced {
                    scope,
                    epoch,
                    detail: "it is not this holder's at that epoch any more".into(),
                }),
            },
        };
        match outcome {
            Ok((lease, changed)) => {
                let value = serde_json::to_vec(&lease).unwrap_or_default();
                // Scope strings come from Solo, never from tenants; a bad one only fails
                // this entry.
                if let Err(e) = batch.put(LEASE_TABLE, lease.scope.as_bytes().to_vec(), value) {
                    return (WriteBatch::new(), Err(e));
                }
                if changed {
                    let kind = if lease.expires_ns == 0 {
                        "lease_released"
                    } else {
                        "lease_acquired"
                    };
                    batch.event(NewEvent::system(kind, lease.scope.clone()).payload(
                        serde_json::json!({
                            "holder": lease.holder,
                            "epoch": lease.epoch,
                        }),
                    ));
                }
                self.map.insert(lease.scope.clone(), lease.clone());
                (batch, Ok(lease))
            }
            Err(e) => (batch, Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn acquire(l: &mut Leases, holder: &str, now: i64) -> Result<Lease, StoreError> {
        l.decide(
            LeaseOp::Acquire {
                scope: "svc/t/s".into(),
                holder: holder.into(),
                ttl_ms: 1_000,
            },
            now,
        )
        .1
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_over_only_after_it_lapses() {
        let mut l = Leases::default();
        let a = acquire(&mut l, "a", 10 * S).unwrap();
        assert_eq!((a.epoch, a.expires_ns), (1, 11 * S));
        assert!(matches!(
            acquire(&mut l, "b", 10 * S + 5),
            Err(StoreError::LeaseHeld { .. })
        ));
        let renewed = acquire(&mut l, "a", 10 * S + S / 2).unwrap();
        assert_eq!(renewed.epoch, 1);
        assert!(l.check("svc/t/s", 1, 11 * S).is_ok());
        // Lapsed: a's fenced writes are refused, b takes over at a new epoch.
        assert!(matches!(
            l.check("svc/t/s", 1, 12 * S),
            Err(StoreError::Fenced { .. })
        ));
        let b = acquire(&mut l, "b", 12 * S).unwrap();
        assert_eq!(b.epoch, 2);
        assert!(matches!(
            l.check("svc/t/s", 1, 12 * S),
            Err(StoreError::Fenced { .. })
        ));
        assert!(l.check("svc/t/s", 2, 12 * S).is_ok());
        // a, back from a pause, cannot renew or release b's lease.
        assert!(acquire(&mut l, "a", 12 * S + 1).is_err());
        let (_, released) = l.decide(
            LeaseOp::Release {
                scope: "svc/t/s".into(),
                holder: "a".into(),
                epoch: 1,
            },
            12 * S + 2,
        );
        assert!(released.is_err());
        // b releases; the next taker gets a new epoch at once.
        let (_, released) = l.decide(
            LeaseOp::Release {
                scope: "svc/t/s".into(),
                holder: "b".into(),
                epoch: 2,
            },
            12 * S + 3,
        );
        assert_eq!(released.unwrap().expires_ns, 0);
        assert_eq!(acquire(&mut l, "a", 12 * S + 4).unwrap().epoch, 3);
        // Taken again after its own lease lapsed: a new epoch too.
        assert_eq!(acquire(&mut l, "a", 20 * S).unwrap().epoch, 4);
        assert!(matches!(
            l.check("other", 1, 0),
            Err(StoreError::Fenced { .. })
        ));
    }
}
