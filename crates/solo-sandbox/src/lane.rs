//! The busy lane: how guests that compute for long share the executor with everything
//! else.
//!
//! A message that has used more than [`BUSY_AFTER`] of CPU goes on running only while
//! it holds a permit of the lane, one epoch tick at a time, in turn with the other busy
//! guests (the semaphore serves them in order). The lane has fewer permits than the
//! executor has threads, so however many guests spin, a thread stays free for the
//! gateway, the kernel and short messages: another tenant's call waits for a thread,
//! never behind the spinners. A guest holds its permit only while it runs: it gives it
//! back at each tick, and whenever it waits on the host or finishes (see
//! [`crate::meter::Metered`]). Time spent waiting for the lane is not CPU time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::UpdateDeadline;

use crate::meter::Meter;

/// CPU time after which a message is busy: short messages (almost all of them) never
/// touch the lane.
pub(crate) const BUSY_AFTER: Duration = Duration::from_millis(2);

pub(crate) struct BusyLane {
    permits: Arc<Semaphore>,
}

impl BusyLane {
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// A tick of a guest with budget left: a short message yields and goes on; a busy
    /// one gives back its permit and queues for its next slice.
    pub(crate) fn next_slice(&self, meter: &Arc<Meter>) -> UpdateDeadline {
        if meter.used() < BUSY_AFTER {
            return UpdateDeadline::Yield(1);
        }
        meter.release_lane();
        let (meter, permits) = (Arc::clone(meter), Arc::clone(&self.permits));
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Ok(permit) = permits.acquire_owned().await {
                    meter.hold_lane(permit);
                }
            }),
        )
    }
}

/// The lane's default width: one thread fewer than the machine has, at least one.
pub(crate) fn default_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}
