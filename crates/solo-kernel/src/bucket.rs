//! A token bucket whose rate and burst are given at each take, so a rate an admin changes
//! at run time applies at once: a service's custom events and a tenant's requests use it.

use std::time::{Duration, Instant};

/// The tokens left and when they were last refilled; full until first used.
#[derive(Debug, Default)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// Takes a token at `now` (refilling `rate` a second, `burst` at most), or says how
    /// long until there is one.
    pub(crate) fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), Duration> {
        self.tokens = match self.last {
            Some(last) => {
                (self.tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(burst)
            }
            None => burst,
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}
