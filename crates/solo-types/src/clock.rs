//! One clock for everything that tells time: the UTC wall clock in nanoseconds and a
//! monotonic instant. It is injected, so TTLs, samplers and circuit breakers are tested
//! on a [`FakeClock`] that a test moves forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// UTC nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
    /// A monotonic instant, for durations and deadlines.
    fn now(&self) -> Instant;
}

/// A clock shared by every part that tells time.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        system_now_ns()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The machine's clocks, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The UTC wall clock in nanoseconds (0 before 1970, saturated after 2262).
pub fn system_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A clock that stands still until a test moves it: both readings advance together,
/// and only by [`FakeClock::advance`].
#[derive(Debug)]
pub struct FakeClock {
    wall_at_start: i64,
    mono_at_start: Instant,
    elapsed_ns: AtomicU64,
}

impl FakeClock {
    /// A clock reading the current time, frozen.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            wall_at_start: system_now_ns(),
            mono_at_start: Instant::now(),
            elapsed_ns: AtomicU64::new(0),
        })
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_ns.fetch_add(ns, Ordering::AcqRel);
    }

    fn elapsed(&self) -> u64 {
        self.elapsed_ns.load(Ordering::Acquire)
    }
}

impl Clock for FakeClock {
    fn now_ns(&self) -> i64 {
        self.wall_at_start
            .saturating_add(i64::try_from(self.elapsed()).unwrap_or(i64::MAX))
    }

    fn now(&self) -> Instant {
        self.mono_at_start + Duration::from_nanos(self.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told() {
        let c = FakeClock::new();
        let (w, m) = (c.now_ns(), c.now());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!((c.now_ns(), c.now()), (w, m));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ns() - w, 2_000_000_000);
        assert_eq!(c.now() - m, Duration::from_secs(2));
    }

    #[test]
    fn the_system_clock_moves() {
        let c = system();
        let a = c.now_ns();
        assert!(a > 1_600_000_000_000_000_000);
        assert!(c.now() <= Instant::now());
    }
}
