//! The busy lane: how guests that compute for long share the executor with everything
//! else, and how tenants share it with each other.
//!
//! A message that has used more than [`BUSY_AFTER`] of CPU is busy: each time it is
//! polled it first takes a permit of the lane, runs until it yields (at the next epoch
//! tick, or when it waits on the host), and gives the permit back (see
//! [`crate::meter::Metered`]). The lane has fewer permits than the executor has threads,
//! so however many guests spin, a thread stays free for the gateway, the kernel and
//! short messages: another tenant's call waits for a thread, never behind the spinners.
//! Time spent waiting for the lane is not CPU time.
//!
//! Tenants take turns: a busy message first takes a permit of its share (one semaphore
//! per [`crate::Limits::share`] key, the kernel's key for the tenant, with as many
//! permits as the lane), then one of the lane. Both semaphores serve waiters in order,
//! so a share never has more waiters in the lane's queue than the lane has permits: a
//! tenant with sixteen spinning services and a tenant with one get a slice each in turn,
//! not sixteen to one.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// CPU time after which a message is busy: short messages (almost all of them) never
/// touch the lane.
pub(crate) const BUSY_AFTER: Duration = Duration::from_millis(2);

/// The lane's permits and the shares' semaphores.
#[derive(Debug)]
pub(crate) struct BusyLane {
    lane: Arc<Semaphore>,
    permits: usize,
    shares: Mutex<HashMap<u64, Weak<Semaphore>>>,
}

/// One share's way into the lane.
#[derive(Debug, Clone)]
pub(crate) struct LaneSeat {
    lane: Arc<Semaphore>,
    share: Arc<Semaphore>,
}

/// The permits one poll of a busy message holds.
pub(crate) type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl BusyLane {
    /// A lane with `permits` permits (at least one).
    pub(crate) fn new(permits: usize) -> Arc<Self> {
        let permits = permits.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            lane: Arc::new(Semaphore::new(permits)),
            permits,
            shares: Mutex::default(),
        })
    }

    /// The seat of share `key`, made on first use and forgotten when no instance holds
    /// it any more.
    pub(crate) fn seat(&self, key: u64) -> LaneSeat {
        let mut shares = self.shares.lock();
        let share = match shares.get(&key).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                if shares.len() >= 64 && shares.len().is_power_of_two() {
                    shares.retain(|_, s| s.strong_count() > 0);
                }
                let s = Arc::new(Semaphore::new(self.permits));
                shares.insert(key, Arc::downgrade(&s));
                s
            }
        };
        LaneSeat {
            lane: Arc::clone(&self.lane),
            share,
        }
    }

    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.lane.available_permits()
    }
}

impl LaneSeat {
    /// Waits for this share's turn, then for the lane.
    pub(crate) async fn acquire(self) -> Option<Permits> {
        let share = self.share.acquire_owned().await.ok()?;
        let lane = self.lane.acquire_owned().await.ok()?;
        Some((share, lane))
    }
}

/// The lane's default width: one thread fewer than the machine has, at least one.
pub(crate) fn default_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three busy messages of one share and one of another, through a one-permit lane:
    /// the lone one is served every other turn, not behind the three.
    #[tokio::test]
    async fn shares_take_turns() {
        let lane = BusyLane::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let first = lane.seat(1).acquire().await.unwrap();
        for (key, name) in [(1, 'a'), (1, 'a'), (1, 'a'), (2, 'b')] {
            let (seat, order) = (lane.seat(key), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    let p = seat.clone().acquire().await.unwrap();
                    order.lock().push(name);
                    tokio::task::yield_now().await;
                    drop(p);
                    tokio::task::yield_now().await;
                }
            }));
            tokio::task::yield_now().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order: String = order.lock().iter().collect();
        // b's three turns come among the first six, one in every two.
        let b_turns: Vec<usize> = order.match_indices('b').map(|(i, _)| i).collect();
        assert_eq!(b_turns.len(), 3, "{order}");
        assert!(b_turns[2] <= 6, "b waited behind a's queue: {order}");
        assert_eq!(lane.available(), 1);
    }
}
