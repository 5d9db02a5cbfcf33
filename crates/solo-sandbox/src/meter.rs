//! CPU accounting for one instance: the time spent *inside* the guest.
//!
//! [`Metered`] wraps the future that runs a guest entry point and adds up the time spent
//! in its `poll` calls: guest code runs only while it is polled, so time spent waiting
//! on host calls, or yielded to other tasks, is never counted. The CPU check (the epoch
//! callback) reads the meter while the guest runs and stops it once the message's budget
//! is spent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::lane::{BUSY_AFTER, LaneSeat, Permits};

/// The CPU meter of one instance.
#[derive(Debug)]
pub(crate) struct Meter {
    base: Instant,
    /// Nanoseconds used by the current message in completed polls.
    used: AtomicU64,
    /// When the current poll began (ns since `base`), or 0 when not polling.
    poll_started: AtomicU64,
    /// The current message's budget in ns.
    limit: AtomicU64,
    /// Nanoseconds used by all messages.
    total: AtomicU64,
    /// Set when a check found the budget spent.
    tripped: AtomicBool,
    /// Set by [`Interrupt::interrupt`]: every check fails from then on.
    interrupted: AtomicBool,
    /// A wall-clock deadline (ns since `base`; 0 = none) set by [`Interrupt::deadline`].
    deadline: AtomicU64,
    /// The seat in the busy lane a busy message runs in, if any (see [`crate::lane`]).
    lane: Option<LaneSeat>,
    /// Epoch ticks the current message has seen past its budget.
    over_ticks: AtomicU32,
}

impl Meter {
    /// A meter whose busy messages run in `lane`.
    pub(crate) fn in_lane(lane: Option<LaneSeat>) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            used: AtomicU64::new(0),
            poll_started: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            deadline: AtomicU64::new(0),
            lane,
            over_ticks: AtomicU32::new(0),
        })
    }

    /// Counts an epoch tick past the budget; how many the current message has seen.
    pub(crate) fn tick_over(&self) -> u32 {
        self.over_ticks.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn now(&self) -> u64 {
        // At least 1, so that 0 can mean "not polling".
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Starts a message with a budget of `limit`.
    pub(crate) fn begin(&self, limit: Duration) {
        self.used.store(0, Ordering::Relaxed);
        self.tripped.store(false, Ordering::Relaxed);
        self.over_ticks.store(0, Ordering::Relaxed);
        self.limit.store(
            u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// CPU time of the current message so far.
    pub(crate) fn used(&self) -> Duration {
        let mut ns = self.used.load(Ordering::Relaxed);
        let started = self.poll_started.load(Ordering::Relaxed);
        if started != 0 {
            ns += self.now().saturating_sub(started);
        }
        Duration::from_nanos(ns)
    }

    /// Whether the current message has spent its budget (or the instance was
    /// interrupted); remembers a `true`.
    pub(crate) fn over_budget(&self) -> bool {
        if self.interrupted.load(Ordering::Relaxed) {
            return true;
        }
        let deadline = self.deadline.load(Ordering::Relaxed);
        if deadline != 0 && self.now() >= deadline {
            self.interrupted.store(true, Ordering::Relaxed);
            return true;
        }
        let over = u64::try_from(self.used().as_nanos()).unwrap_or(u64::MAX)
            >= self.limit.load(Ordering::Relaxed);
        if over {
            self.tripped.store(true, Ordering::Relaxed);
        }
        over
    }

    /// Whether a check stopped the current message for its budget.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// Whether the owner interrupted the instance.
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// CPU time of all messages.
    pub(crate) fn total(&self) -> Duration {
        Duration::from_nanos(self.total.load(Ordering::Relaxed))
    }

    fn enter(&self) {
        self.poll_started.store(self.now(), Ordering::Relaxed);
    }

    fn leave(&self) {
        let started = self.poll_started.swap(0, Ordering::Relaxed);
        if started != 0 {
            let spent = self.now().saturating_sub(started);
            self.used.fetch_add(spent, Ordering::Relaxed);
            self.total.fetch_add(spent, Ordering::Relaxed);
        }
    }
}

/// Stops an instance's running guest code at its next check, for a forced kill: within
/// an epoch tick for a component; a JavaScript script stops at QuickJS's next interrupt
/// check, or at the latest 20 ticks later. A guest waiting for the busy lane stops once
/// it runs again.
#[derive(Debug, Clone)]
pub struct Interrupt(pub(crate) Arc<Meter>);

impl Interrupt {
    /// Makes the instance's current and every later message stop with a crash.
    pub fn interrupt(&self) {
        self.0.interrupted.store(true, Ordering::Relaxed);
    }

    /// Interrupts the instance once `deadline` passes (checked while guest code runs,
    /// so it stops a guest that never yields); `None` clears it.
    pub fn deadline(&self, deadline: Option<Instant>) {
        let ns = deadline.map_or(0, |d| {
            u64::try_from(d.saturating_duration_since(self.0.base).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.0.deadline.store(ns, Ordering::Relaxed);
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<Permits>> + Send>>;

/// A future whose time in `poll` is charged to a [`Meter`], and which, once its message
/// is busy, runs only while it holds a permit of the meter's busy lane.
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<Meter>,
    acquiring: Option<Acquire>,
}

impl<F> Metered<F> {
    pub(crate) fn new(meter: Arc<Meter>, inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            meter,
            acquiring: None,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if this.acquiring.is_none()
            && let Some(lane) = &this.meter.lane
            && this.meter.used() >= BUSY_AFTER
        {
            this.acquiring = Some(Box::pin(lane.clone().acquire()));
        }
        // Held for this poll only: the guest gives its slice back whenever it stops
        // running (it yields at a tick, waits on the host, or is done).
        let _permit = match this.acquiring.as_mut() {
            Some(acquire) => match acquire.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    this.acquiring = None;
                    permit
                }
            },
            None => None,
        };
        this.meter.enter();
        let out = this.inner.as_mut().poll(cx);
        this.meter.leave();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_is_not_counted() {
        let meter = Meter::in_lane(None);
        meter.begin(Duration::from_millis(50));
        Metered::new(Arc::clone(&meter), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
        })
        .await;
        assert!(
            meter.used() < Duration::from_millis(10),
            "{:?}",
            meter.used()
        );
        assert!(!meter.over_budget());
    }

    #[tokio::test]
    async fn busy_time_is_counted_and_trips_the_budget() {
        let meter = Meter::in_lane(None);
        meter.begin(Duration::from_millis(5));
        Metered::new(Arc::clone(&meter), async {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(10) {
                std::hint::spin_loop();
            }
        })
        .await;
        assert!(meter.used() >= Duration::from_millis(10));
        assert!(meter.over_budget());
        assert!(meter.tripped());
        assert!(meter.total() >= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn a_busy_message_runs_only_with_a_permit_of_the_lane() {
        let lane = crate::lane::BusyLane::new(1);
        let meter = Meter::in_lane(Some(lane.seat(7)));
        meter.begin(Duration::from_secs(10));
        // A short message does not touch the lane, even when it is full.
        let held = lane
            .seat(8)
            .acquire()
            .await
            .unwrap_or_else(|| unreachable!());
        Metered::new(Arc::clone(&meter), async {
            let t = Instant::now();
            while t.elapsed() < BUSY_AFTER + Duration::from_millis(1) {
                std::hint::spin_loop();
            }
        })
        .await;
        // Now busy: the next poll waits for the lane without running the guest.
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let mut busy = Box::pin(Metered::new(Arc::clone(&meter), async move {
            r.store(true, Ordering::Relaxed);
        }));
        assert!(futures::poll!(busy.as_mut()).is_pending());
        assert!(!ran.load(Ordering::Relaxed));
        drop(held);
        busy.await;
        assert!(ran.load(Ordering::Relaxed));
        // The permit went back when the poll returned.
        assert_eq!(lane.available(), 1);
    }
}
