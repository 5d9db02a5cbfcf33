//! Latency samples and the figures quoted from them (medians and tails, never means).

use std::time::Duration;

/// Collected latencies of one configuration.
#[derive(Debug, Default)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// The `q` quantile (0.0..=1.0) in microseconds.
    pub fn quantile_us(&mut self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        self.nanos.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let idx = ((self.nanos.len() - 1) as f64 * q).round() as usize;
        self.nanos[idx] as f64 / 1000.0
    }
}

/// Rounds to 2 decimals for printing.
pub fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A throughput run's figures: calls per second and the latency median and tail.
pub struct Figures {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Figures {
    /// The figures of `all`, collected over `elapsed`.
    pub fn of(mut all: Samples, elapsed: Duration) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = all.len() as f64 / elapsed.as_secs_f64();
        Self {
            rate,
            p50: all.quantile_us(0.5),
            p99: all.quantile_us(0.99),
        }
    }
}
