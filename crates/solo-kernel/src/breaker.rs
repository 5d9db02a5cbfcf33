//! The circuit breaker, per service, for calls: consecutive crashes or timeouts open it
//! (calls then fail fast with `circuit_breaker_open`); after the open period one probe is
//! let through at a time, and enough successes in a row close it. The state machine is
//! pure ([`Breaker`]: the clock is an argument) and tested on a fake clock.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use solo_types::{Code, NewEvent, ServiceId, TenantId, kinds, metric_names as m};

use crate::error::KernelError;
use crate::tunables::{Key, Tunables};

/// The breaker's settings at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerSettings {
    pub(crate) failures: u32,
    pub(crate) open_for: Duration,
    pub(crate) close_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool, successes: u32 },
}

/// How a call that the breaker let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The service answered (an answer that is an error included).
    Success,
    /// It crashed or did not answer in time.
    Failure,
    /// The call never reached it (a full mailbox, a refusal).
    Neutral,
}

/// A change worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

/// One service's circuit breaker; the clock is passed in.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    /// Whether a call may go through now; the error is how long until it might.
    pub(crate) fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen {
                    probing: true,
                    successes: 0,
                };
                Ok(())
            }
            BreakerState::Open { until } => Err(until - now),
            BreakerState::HalfOpen { probing: true, .. } => Err(Duration::from_secs(1)),
            BreakerState::HalfOpen {
                probing: false,
                successes,
            } => {
                self.state = BreakerState::HalfOpen {
                    probing: true,
                    successes,
                };
                Ok(())
            }
        }
    }

    /// Records how a call it let through ended.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        outcome: Outcome,
        s: BreakerSettings,
    ) -> Option<Transition> {
        use BreakerState as S;
        let (next, transition) = match (self.state, outcome) {
            (S::Closed { failures }, Outcome::Failure) if failures + 1 >= s.failures => (
                S::Open {
                    until: now + s.open_for,
                },
                Some(Transition::Opened),
            ),
            (S::Closed { failures }, Outcome::Failure) => (
                S::Closed {
                    failures: failures + 1,
                },
                None,
            ),
            (S::Closed { .. }, Outcome::Success) => (S::Closed { failures: 0 }, None),
            (S::HalfOpen { successes, .. }, Outcome::Success) if successes + 1 >= s.close_after => {
                (S::Closed { failures: 0 }, Some(Transition::Closed))
            }
            (S::HalfOpen { successes, .. }, Outcome::Success) => (
                S::HalfOpen {
                    probing: false,
                    successes: successes + 1,
                },
                None,
            ),
            (S::HalfOpen { .. }, Outcome::Failure) => (
                S::Open {
                    until: now + s.open_for,
                },
                Some(Transition::Opened),
            ),
            (S::HalfOpen { successes, .. }, Outcome::Neutral) => (
                S::HalfOpen {
                    probing: false,
                    successes,
                },
                None,
            ),
            (state, _) => (state, None),
        };
        self.state = next;
        transition
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }
}

/// One service's breaker, as the call path uses it.
#[derive(Debug, Default)]
pub(crate) struct ServiceBreaker(Mutex<Breaker>);

impl BreakerSettings {
    /// The settings in force now.
    pub(crate) fn current(t: &Tunables) -> Self {
        Self {
            failures: u32::try_from(t.get(Key::BreakerFailures)).unwrap_or(u32::MAX),
            open_for: Duration::from_secs(t.get(Key::BreakerOpenSeconds)),
            close_after: u32::try_from(t.get(Key::BreakerCloseAfter)).unwrap_or(u32::MAX),
        }
    }
}

impl ServiceBreaker {
    /// Whether a call may go through at `now`; refuses with `circuit_breaker_open`.
    pub(crate) fn allow(&self, now: Instant, service: &ServiceId) -> Result<(), KernelError> {
        self.0
            .lock()
            .allow(now)
            .map_err(|wait| KernelError::Refused {
                code: Code::Unavailable,
                reason: "circuit_breaker_open",
                message: format!(
                    "service {service} keeps failing; its circuit breaker is open for {} s more",
                    wait.as_secs().max(1)
                ),
            })
    }

    /// Records how a call ended; a transition comes back as the event to record.
    pub(crate) fn record(
        &self,
        now: Instant,
        outcome: Outcome,
        s: BreakerSettings,
        tenant: &TenantId,
        service: &ServiceId,
    ) -> Option<NewEvent> {
        let t = self.0.lock().record(now, outcome, s)?;
        let (kind, value) = match t {
            Transition::Opened => (kinds::CIRCUIT_BREAKER_OPENED, 1.0),
            Transition::Closed => (kinds::CIRCUIT_BREAKER_CLOSED, 0.0),
        };
        metrics::gauge!(m::BREAKER_OPEN, "service" => service.to_string()).set(value);
        Some(NewEvent::service(kind, tenant, service).payload(json!({
            "service_id": service,
            "failures": s.failures,
            "open_seconds": s.open_for.as_secs(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BreakerSettings = BreakerSettings {
        failures: 5,
        open_for: Duration::from_secs(30),
        close_after: 2,
    };

    #[test]
    fn a_breaker_opens_probes_and_closes_on_a_fake_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        // Four failures: still closed; a success resets the count.
        for _ in 0..4 {
            assert!(b.allow(at(0)).is_ok());
            assert_eq!(b.record(at(0), Outcome::Failure, S), None);
        }
        assert_eq!(b.record(at(0), Outcome::Success, S), None);
        for _ in 0..4 {
            b.record(at(0), Outcome::Failure, S);
        }
        // The fifth in a row opens it.
        assert_eq!(
            b.record(at(1), Outcome::Failure, S),
            Some(Transition::Opened)
        );
        assert_eq!(b.allow(at(2)), Err(Duration::from_secs(29)));
        assert!(b.allow(at(30)).is_err());
        // After 30 s one probe goes through, and only one.
        assert!(b.allow(at(31)).is_ok());
        assert!(b.allow(at(31)).is_err());
        assert_eq!(b.record(at(31), Outcome::Success, S), None);
        // A second success in a row closes it.
        assert!(b.allow(at(32)).is_ok());
        assert_eq!(
            b.record(at(32), Outcome::Success, S),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(b.allow(at(32)).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_neutral_one_frees_the_slot() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.record(at(0), Outcome::Failure, S);
        }
        assert!(b.allow(at(30)).is_ok());
        assert_eq!(
            b.record(at(30), Outcome::Failure, S),
            Some(Transition::Opened)
        );
        assert!(b.allow(at(40)).is_err());
        assert!(b.allow(at(60)).is_ok());
        // The probe never reached the service: another may go.
        assert_eq!(b.record(at(60), Outcome::Neutral, S), None);
        assert!(b.allow(at(60)).is_ok());
    }
}
