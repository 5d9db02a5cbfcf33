//! Sampling for events that a guest or a client can cause at will (a full mailbox, a
//! refused quota): at most a few a second per window; the rest are counted, and the
//! count goes into the next event written.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One rate window.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// The second the window started, how many were admitted in it, and how many were
    /// dropped since the last one admitted.
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl Window {
    /// Whether one more may be written at `now`, with at most `per_second`: `Some(n)`,
    /// where `n` were dropped since the last one written, or `None` to drop it.
    pub(crate) fn admit(&self, now: Instant, per_second: u32) -> Option<u64> {
        let mut s = self.state.lock();
        let (start, admitted, dropped) = s.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *admitted = 0;
        }
        if *admitted >= per_second {
            *dropped += 1;
            return None;
        }
        *admitted += 1;
        Some(std::mem::take(dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_a_second_and_the_rest_are_counted() {
        let w = Window::default();
        let t0 = Instant::now();
        assert_eq!(w.admit(t0, 2), Some(0));
        assert_eq!(w.admit(t0, 2), Some(0));
        for _ in 0..5 {
            assert_eq!(w.admit(t0, 2), None);
        }
        let t1 = t0 + Duration::from_millis(1001);
        assert_eq!(w.admit(t1, 2), Some(5));
        assert_eq!(w.admit(t1, 2), Some(0));
        assert_eq!(w.admit(t1, 2), None);
    }
}
