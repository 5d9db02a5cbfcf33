//! The busy lane: how guests that compute for long share the executor with everything
//! else.
//!
//! A message that has used more than [`BUSY_AFTER`] of CPU is busy: each time it is
//! polled it first takes a permit of the lane (the semaphore serves waiters in order),
//! runs until it yields (at the next epoch tick, or when it waits on the host), and
//! gives the permit back (see [`crate::meter::Metered`]). The lane has fewer permits than
//! the executor has threads, so however many guests spin, a thread stays free for the
//! gateway, the kernel and short messages: another tenant's call waits for a thread,
//! never behind the spinners. Time spent waiting for the lane is not CPU time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// CPU time after which a message is busy: short messages (almost all of them) never
/// touch the lane.
pub(crate) const BUSY_AFTER: Duration = Duration::from_millis(2);

/// The lane's permits.
pub(crate) type BusyLane = Arc<Semaphore>;

/// A lane with `permits` permits (at least one).
pub(crate) fn new(permits: usize) -> BusyLane {
    Arc::new(Semaphore::new(permits.clamp(1, Semaphore::MAX_PERMITS)))
}

/// The lane's default width: one thread fewer than the machine has, at least one.
pub(crate) fn default_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}
