//! The restart decision: a pure function of the child's policy, its restart history and
//! the time. No IO, no clock of its own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a supervisor restarts its children when one exits abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that exited.
    OneForOne,
    /// Restart the child that exited and every child started after it.
    RestForOne,
    /// Restart every child.
    OneForAll,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartType {
    /// Always, whatever the exit (except when its supervisor stops it).
    Permanent,
    /// Only after an abnormal exit (a crash).
    Transient,
    /// Never.
    Temporary,
}

impl RestartType {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartType::Permanent => "permanent",
            RestartType::Transient => "transient",
            RestartType::Temporary => "temporary",
        }
    }
}

/// How a child's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It returned of its own accord.
    Normal,
    /// Its supervisor asked it to stop.
    Shutdown,
    /// It crashed (an error or a panic).
    Crashed,
}

/// At most `max_restarts` restarts within `window`; one more gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub window: Duration,
}

impl Intensity {
    pub const fn new(max_restarts: u32, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
        }
    }
}

/// Delays restarts: `initial · factor^(restarts in the window)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

/// The times of recent restarts (those inside the intensity window matter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartHistory {
    times: VecDeque<Instant>,
}

impl RestartHistory {
    /// Records a restart at `now`, forgetting those older than `window`.
    pub fn record(&mut self, now: Instant, window: Duration) {
        self.prune(now, window);
        self.times.push_back(now);
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(t) = self.times.front() {
            if now.saturating_duration_since(*t) >= window {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    /// Restarts within `window` before `now`.
    pub fn recent(&self, now: Instant, window: Duration) -> usize {
        self.times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < window)
            .count()
    }
}

/// What to do about an exited child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start it again after `delay`.
    Restart { delay: Duration },
    /// Leave it stopped; nothing went wrong (a normal or requested exit, or a
    /// temporary child).
    Stop,
    /// Restarting again would exceed the intensity: give up on it.
    GiveUp,
}

/// The restart decision for a child of type `restart` that exited with `exit`, given its
/// restart `history` (or its supervisor's, for supervisor-wide intensity) at `now`.
pub fn decide(
    restart: RestartType,
    exit: ExitKind,
    intensity: Intensity,
    backoff: Option<Backoff>,
    history: &RestartHistory,
    now: Instant,
) -> Decision {
    let wants_restart = match (restart, exit) {
        (_, ExitKind::Shutdown) | (RestartType::Temporary, _) => false,
        (RestartType::Permanent, _) => true,
        (RestartType::Transient, ExitKind::Crashed) => true,
        (RestartType::Transient, ExitKind::Normal) => false,
    };
    if !wants_restart {
        return Decision::Stop;
    }
    let recent = history.recent(now, intensity.window);
    if recent >= intensity.max_restarts as usize {
        return Decision::GiveUp;
    }
    let delay = backoff.map_or(Duration::ZERO, |b| {
        let exp = i32::try_from(recent).unwrap_or(i32::MAX);
        let d = b.initial.as_secs_f64() * b.factor.max(1.0).powi(exp);
        Duration::from_secs_f64(d.min(b.max.as_secs_f64()).max(0.0))
    });
    Decision::Restart { delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Applies `exits` (at second offsets) to one child; returns the decisions.
    fn run(
        restart: RestartType,
        intensity: Intensity,
        backoff: Option<Backoff>,
        exits: &[(u64, ExitKind)],
    ) -> Vec<Decision> {
        let base = Instant::now();
        let mut history = RestartHistory::default();
        exits
            .iter()
            .map(|(at, exit)| {
                let now = base + S * u32::try_from(*at).unwrap();
                let d = decide(restart, *exit, intensity, backoff, &history, now);
                if matches!(d, Decision::Restart { .. }) {
                    history.record(now, intensity.window);
                }
                d
            })
            .collect()
    }

    const RESTART: Decision = Decision::Restart {
        delay: Duration::ZERO,
    };

    #[test]
    fn restart_types_table() {
        use ExitKind::*;
        use RestartType::*;
        let i = Intensity::new(10, 60 * S);
        let table = [
            (Permanent, Normal, RESTART),
            (Permanent, Crashed, RESTART),
            (Permanent, Shutdown, Decision::Stop),
            (Transient, Normal, Decision::Stop),
            (Transient, Crashed, RESTART),
            (Transient, Shutdown, Decision::Stop),
            (Temporary, Normal, Decision::Stop),
            (Temporary, Crashed, Decision::Stop),
            (Temporary, Shutdown, Decision::Stop),
        ];
        for (restart, exit, expect) in table {
            assert_eq!(
                run(restart, i, None, &[(0, exit)]),
                vec![expect],
                "{restart:?} {exit:?}"
            );
        }
    }

    #[test]
    fn intensity_gives_up_after_max_restarts_within_the_window() {
        use ExitKind::Crashed;
        let i = Intensity::new(3, 5 * S);
        // 4 crashes within 5 s: three restarts, then give up.
        let got = run(
            RestartType::Permanent,
            i,
            None,
            &[(0, Crashed), (1, Crashed), (2, Crashed), (3, Crashed)],
        );
        assert_eq!(got, vec![RESTART, RESTART, RESTART, Decision::GiveUp]);
    }

    #[test]
    fn old_restarts_fall_out_of_the_window() {
        use ExitKind::Crashed;
        let i = Intensity::new(3, 5 * S);
        let got = run(
            RestartType::Permanent,
            i,
            None,
            &[
                (0, Crashed),
                (1, Crashed),
                (2, Crashed),
                (6, Crashed),
                (7, Crashed),
            ],
        );
        // At t=6 the restarts at 0 and 1 are more than 5 s old.
        assert_eq!(got, vec![RESTART, RESTART, RESTART, RESTART, RESTART]);
        let got = run(
            RestartType::Permanent,
            i,
            None,
            &[(0, Crashed), (1, Crashed), (2, Crashed), (4, Crashed)],
        );
        assert_eq!(got[3], Decision::GiveUp);
    }

    #[test]
    fn zero_intensity_never_restarts() {
        let got = run(
            RestartType::Permanent,
            Intensity::new(0, 5 * S),
            None,
            &[(0, ExitKind::Crashed)],
        );
        assert_eq!(got, vec![Decision::GiveUp]);
    }

    #[test]
    fn backoff_grows_with_recent_restarts_and_is_capped() {
        use ExitKind::Crashed;
        let b = Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(500),
        };
        let got = run(
            RestartType::Permanent,
            Intensity::new(10, 60 * S),
            Some(b),
            &[
                (0, Crashed),
                (1, Crashed),
                (2, Crashed),
                (3, Crashed),
                (4, Crashed),
            ],
        );
        let delays: Vec<u128> = got
            .iter()
            .map(|d| match d {
                Decision::Restart { delay } => delay.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }
}
