//! Leases decided by the log: who holds a scope (a service, a node's role), until when,
//! and at which epoch, the fencing token every write under the lease carries.
//!
//! A lease request is an entry of the log like any write, and every node's applier
//! decides it the same way, in log order, against the entry's timestamp (the one the
//! stream's leader gave it when it stored it), so every node agrees on every lease at
//! every point of the log without a second consensus. A batch fenced at `(scope, epoch)`
//! applies only if, at its place in the log, `scope` is held at `epoch` and has not
//! expired: a node that was paused past its lease's end and comes back writes nothing.
//!
//! A lease may be held **under** another lease of the same holder (a tenant's under its
//! node's): it has no end of its own and lapses with that lease, or once that lease is
//! taken again at another epoch. Renewing a node's lease so renews everything placed on
//! the node in one entry, however many scopes it holds, and a node paused past its own
//! lease is fenced out of all of them at once. Any node may ask for a lease on another
//! node's behalf (placement): the log decides it as if the holder had asked.

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
    /// 0 once released. For a lease held under another, that lease's end, as of the
    /// entry that decided or read it.
    pub expires_ns: i64,
    /// The lease this one is held under, and at which epoch: it lasts as long as its
    /// holder holds that lease at that epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under: Option<(String, u64)>,
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
        /// Held under this lease of `holder`'s instead of for `ttl_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        under: Option<String>,
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
            Some(l) if self.end(l) < now => Err(fenced(match &l.under {
                Some((parent, _)) if self.end(l) == 0 => {
                    format!("{parent}, which it was held under, changed hands or was released")
                }
                _ => format!(
                    "it lapsed {} ms before this write reached the log",
                    (now - self.end(l)) / 1_000_000
                ),
            })),
            Some(_) => Ok(()),
        }
    }

    /// When `lease` lapses: its own end, or that of the lease it is held under while
    /// its holder holds that one at the same epoch (0 otherwise, and once released).
    pub(crate) fn end(&self, lease: &Lease) -> i64 {
        match &lease.under {
            None => lease.expires_ns,
            Some(_) if lease.expires_ns == 0 => 0,
            Some((parent, epoch)) => resolve_end(lease, self.map.get(parent), *epoch),
        }
    }

    /// `lease` as a caller reads it: `expires_ns` is when it lapses.
    fn resolved(&self, lease: &Lease) -> Lease {
        Lease {
            expires_ns: self.end(lease),
            ..lease.clone()
        }
    }

    /// Decides an acquisition: the lease to record and whether it changed hands.
    fn acquire(
        &self,
        scope: String,
        holder: String,
        ttl_ms: u64,
        under: Option<String>,
        now: i64,
    ) -> Result<(Lease, bool), StoreError> {
        let parent = match under {
            None => None,
            Some(parent) => match self.map.get(&parent) {
                Some(p) if p.holder == holder && p.under.is_none() && p.expires_ns >= now => {
                    Some((parent, p.epoch))
                }
                held => {
                    return Err(StoreError::Fenced {
                        epoch: held.map_or(0, |p| p.epoch),
                        detail: format!(
                            "{holder} does not hold it, so cannot hold {scope} under it"
                        ),
                        scope: parent,
                    });
                }
            },
        };
        let existing = self.map.get(&scope).filter(|l| self.end(l) >= now);
        match existing {
            Some(l) if l.holder != holder => Err(StoreError::LeaseHeld {
                scope,
                holder: l.holder.clone(),
            }),
            Some(l) => {
                // Renewed: the same epoch, held on as asked now.
                let expires_ns = if parent.is_some() {
                    i64::MAX
                } else {
                    now.saturating_add(ttl_ns(ttl_ms))
                };
                Ok((
                    Lease {
                        expires_ns,
                        under: parent,
                        ..l.clone()
                    },
                    false,
                ))
            }
            None => Ok((
                Lease {
                    epoch: self.map.get(&scope).map_or(1, |l| l.epoch + 1),
                    expires_ns: if parent.is_some() {
                        i64::MAX
                    } else {
                        now.saturating_add(ttl_ns(ttl_ms))
                    },
                    scope,
                    holder,
                    under: parent,
                },
                true,
            )),
        }
    }

    /// Every lease `holder` holds (as the applier last decided them, each resolved).
    pub(crate) fn held_by(&self, holder: &str) -> Vec<Lease> {
        let mut held: Vec<Lease> = self
            .map
            .values()
            .filter(|l| l.holder == holder && self.end(l) != 0)
            .map(|l| self.resolved(l))
            .collect();
        held.sort_by(|a, b| a.scope.cmp(&b.scope));
        held
    }

    /// Every lease whose scope starts with `prefix`, resolved, lapsed ones too (not
    /// released ones).
    pub(crate) fn with_prefix(&self, prefix: &str) -> Vec<Lease> {
        let mut found: Vec<Lease> = self
            .map
            .values()
            .filter(|l| l.scope.starts_with(prefix) && self.end(l) != 0)
            .map(|l| self.resolved(l))
            .collect();
        found.sort_by(|a, b| a.scope.cmp(&b.scope));
        found
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
                under,
            } => self.acquire(scope, holder, ttl_ms, under, now),
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
                let under = lease.under.clone();
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
                            "under": under.map(|(scope, _)| scope),
                        }),
                    ));
                }
                let answer = self.resolved(&lease);
                self.map.insert(lease.scope.clone(), lease);
                (batch, Ok(answer))
            }
            Err(e) => (batch, Err(e)),
        }
    }
}

/// When a lease held under `parent` at `epoch` lapses, `parent` being what the log holds
/// for that scope: 0 once `parent` is released, taken again or held by another.
pub(crate) fn resolve_end(lease: &Lease, parent: Option<&Lease>, epoch: u64) -> i64 {
    match parent {
        Some(p) if p.epoch == epoch && p.holder == lease.holder && p.under.is_none() => {
            p.expires_ns
        }
        _ => 0,
    }
}

fn ttl_ns(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
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
                under: None,
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

    fn place(
        l: &mut Leases,
        scope: &str,
        holder: &str,
        under: &str,
        now: i64,
    ) -> Result<Lease, StoreError> {
        l.decide(
            LeaseOp::Acquire {
                scope: scope.into(),
                holder: holder.into(),
                ttl_ms: 0,
                under: Some(under.into()),
            },
            now,
        )
        .1
    }

    fn node(l: &mut Leases, holder: &str, now: i64) -> Lease {
        l.decide(
            LeaseOp::Acquire {
                scope: format!("node/{holder}"),
                holder: holder.into(),
                ttl_ms: 1_000,
                under: None,
            },
            now,
        )
        .1
        .unwrap()
    }

    #[test]
    fn leases_held_under_a_node_lease_are_renewed_and_lost_with_it() {
        let mut l = Leases::default();
        node(&mut l, "a", 10 * S);
        node(&mut l, "b", 10 * S);
        let x = place(&mut l, "tenant/x", "a", "node/a", 10 * S).unwrap();
        assert_eq!(
            (x.epoch, x.expires_ns, x.under.clone()),
            (1, 11 * S, Some(("node/a".into(), 1)))
        );
        // Placing it again on its holder changes nothing; on another node is refused while held.
        assert_eq!(
            place(&mut l, "tenant/x", "a", "node/a", 10 * S + 1)
                .unwrap()
                .epoch,
            1
        );
        assert!(matches!(
            place(&mut l, "tenant/x", "b", "node/b", 10 * S + 2),
            Err(StoreError::LeaseHeld { ref holder, .. }) if holder == "a"
        ));
        // Only under a lease the holder holds itself, and not under a lease held under another.
        assert!(matches!(
            place(&mut l, "tenant/y", "b", "node/a", 10 * S + 3),
            Err(StoreError::Fenced { ref scope, .. }) if scope == "node/a"
        ));
        assert!(place(&mut l, "tenant/y", "a", "tenant/x", 10 * S + 3).is_err());
        assert!(place(&mut l, "tenant/y", "a", "node/none", 10 * S + 3).is_err());

        // Renewing the node's lease renews what it holds under it.
        node(&mut l, "a", 10 * S + S / 2);
        assert!(l.check("tenant/x", 1, 11 * S + S / 4).is_ok());
        assert_eq!(
            l.held_by("a")
                .iter()
                .map(|l| (l.scope.as_str(), l.expires_ns))
                .collect::<Vec<_>>(),
            vec![("node/a", 11 * S + S / 2), ("tenant/x", 11 * S + S / 2)]
        );

        // a's node lease lapses: so does tenant/x, and b may take it at a new epoch.
        assert!(matches!(
            l.check("tenant/x", 1, 12 * S),
            Err(StoreError::Fenced { .. })
        ));
        node(&mut l, "b", 12 * S);
        assert_eq!(
            place(&mut l, "tenant/x", "b", "node/b", 12 * S)
                .unwrap()
                .epoch,
            2
        );
        // a back from its pause takes its node lease again (a new epoch): tenant/x is not
        // its any more, and neither are its writes under epoch 1.
        assert_eq!(node(&mut l, "a", 12 * S + 1).epoch, 2);
        assert!(matches!(
            l.check("tenant/x", 1, 12 * S + 2),
            Err(StoreError::Fenced { .. })
        ));
        assert!(l.check("tenant/x", 2, 12 * S + 2).is_ok());
        assert!(place(&mut l, "tenant/x", "a", "node/a", 12 * S + 3).is_err());

        // Held under node/a at epoch 1, tenant/z would not survive node/a's new epoch.
        let z = place(&mut l, "tenant/z", "a", "node/a", 12 * S + 4).unwrap();
        assert_eq!(z.under, Some(("node/a".into(), 2)));
        let (_, released) = l.decide(
            LeaseOp::Release {
                scope: "node/a".into(),
                holder: "a".into(),
                epoch: 2,
            },
            12 * S + 5,
        );
        released.unwrap();
        let err = l.check("tenant/z", z.epoch, 12 * S + 6).unwrap_err();
        assert!(
            err.to_string().contains("changed hands or was released"),
            "{err}"
        );
        assert!(l.held_by("a").is_empty(), "{:?}", l.held_by("a"));
        // Taken again after the node's lease changed hands: a new epoch.
        node(&mut l, "a", 12 * S + 7);
        assert_eq!(
            place(&mut l, "tenant/z", "a", "node/a", 12 * S + 8)
                .unwrap()
                .epoch,
            z.epoch + 1
        );
    }
}
