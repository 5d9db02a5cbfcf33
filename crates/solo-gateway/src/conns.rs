//! The gateway's open connections: how many may be open at once, how long one may stay
//! silent, and which one gives way when every slot is taken.
//!
//! Every accepted socket takes a slot in the [`Table`] before its TLS handshake, and
//! gives it back when it closes. A connection that has not completed a request within
//! `first_request` of its handshake is closed, and so is one that has had nothing in
//! flight for `idle` (an open stream, such as a watch, is something in flight). When
//! every slot is taken, the connection that gives way is the one without a client
//! certificate and with nothing in flight that has been quiet longest, preferring one that
//! never completed a request; when there is none, the newcomer is closed at once. A client
//! that opens sockets and says nothing can so neither keep them nor crowd out the clients
//! that work, and the cap keeps the process clear of its open-file limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use solo_types::metric_names as m;
use tokio_util::sync::CancellationToken;

/// How many connections may be open and how long they may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most (handshaking ones included).
    pub max_open: usize,
    /// A connection that has not completed a request this long after its handshake is
    /// closed.
    pub first_request: Duration,
    /// A connection with nothing in flight for this long is closed (gracefully).
    pub idle: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_open: 4096,
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// Why the gateway closes a connection it did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// No request completed within `first_request` of the handshake.
    Silent,
    /// Nothing in flight for `idle`.
    Idle,
    /// Gave way to a newer connection at the cap.
    Evicted,
}

impl Closing {
    fn label(self) -> &'static str {
        match self {
            Closing::Silent => "silent",
            Closing::Idle => "idle",
            Closing::Evicted => "evicted",
        }
    }

    /// Counts the closing in the metrics.
    pub(crate) fn count(self) {
        ::metrics::counter!(m::GATEWAY_CONNECTIONS_CLOSED, "reason" => self.label()).increment(1);
    }
}

/// The open connections.
pub(crate) struct Table {
    limits: ConnLimits,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    epoch: Instant,
}

/// One open connection's standing.
pub(crate) struct Conn {
    id: u64,
    certified: AtomicBool,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// Milliseconds since the table's epoch when a request last started or ended (or the
    /// connection was accepted, or finished its handshake).
    quiet_since: AtomicU64,
    evicted: CancellationToken,
}

/// A connection's slot; given back when dropped.
pub(crate) struct Slot {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

/// One request in flight on a connection; ends when dropped (with the response body).
pub(crate) struct InFlight {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Table {
    pub(crate) fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How many connections are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// A slot for a connection just accepted, making room by evicting if every slot is
    /// taken; `None` when nothing can give way (the newcomer is then closed).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            certified: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            quiet_since: AtomicU64::new(self.now_ms()),
            evicted: CancellationToken::new(),
        });
        let mut open = self.open.lock();
        if open.len() >= self.limits.max_open {
            let victim = open
                .values()
                .filter(|c| {
                    !c.certified.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Relaxed) == 0
                })
                .min_by_key(|c| {
                    (
                        c.served.load(Ordering::Relaxed) > 0,
                        c.quiet_since.load(Ordering::Relaxed),
                    )
                })
                .map(|c| c.id);
            let Some(victim) = victim else {
                ::metrics::counter!(m::GATEWAY_CONNECTIONS_CLOSED, "reason" => "refused")
                    .increment(1);
                return None;
            };
            if let Some(c) = open.remove(&victim) {
                c.evicted.cancel();
                Closing::Evicted.count();
            }
        }
        open.insert(conn.id, Arc::clone(&conn));
        Some(Slot {
            table: Arc::clone(self),
            conn,
        })
    }
}

impl Slot {
    /// The handshake is done: the silence clock starts now, and a connection that
    /// presented a client certificate no longer gives way to newcomers when it is idle.
    pub(crate) fn handshaken(&self, certified: bool) {
        self.conn.certified.store(certified, Ordering::Relaxed);
        self.conn
            .quiet_since
            .store(self.table.now_ms(), Ordering::Relaxed);
    }

    /// Cancelled when this connection gave way to a newer one.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.conn.evicted
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub(crate) fn begin(&self) -> InFlight {
        self.conn.in_flight.fetch_add(1, Ordering::Relaxed);
        self.conn
            .quiet_since
            .store(self.table.now_ms(), Ordering::Relaxed);
        InFlight {
            conn: Arc::clone(&self.conn),
            table: Arc::clone(&self.table),
        }
    }

    /// Resolves when the connection should be closed, and why.
    pub(crate) async fn watch(&self) -> Closing {
        let limits = self.table.limits;
        loop {
            let busy = self.conn.in_flight.load(Ordering::Relaxed) > 0;
            let served = self.conn.served.load(Ordering::Relaxed) > 0;
            let limit = if served {
                limits.idle
            } else {
                limits.first_request
            };
            let wait = if busy {
                limit
            } else {
                let since = self.conn.quiet_since.load(Ordering::Relaxed);
                let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                let now = self.table.now_ms();
                let deadline = since.saturating_add(limit_ms);
                if now >= deadline {
                    return if served {
                        Closing::Idle
                    } else {
                        Closing::Silent
                    };
                }
                Duration::from_millis(deadline - now)
            };
            tokio::select! {
                _ = self.conn.evicted.cancelled() => return Closing::Evicted,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.open.lock().remove(&self.conn.id);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.served.fetch_add(1, Ordering::Relaxed);
        self.conn
            .quiet_since
            .store(self.table.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs accept failures (out of file descriptors, mostly) at most once per interval, with
/// how many there were since the last line, instead of once per failure.
pub(crate) struct AcceptFailures {
    interval: Duration,
    last_logged: Option<Instant>,
    since: u64,
}

impl AcceptFailures {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_logged: None,
            since: 0,
        }
    }

    /// Records one failure; answers whether it was logged.
    pub(crate) fn record(&mut self, error: &std::io::Error) -> bool {
        ::metrics::counter!(m::GATEWAY_ACCEPT_FAILURES).increment(1);
        self.since += 1;
        let due = self
            .last_logged
            .is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            tracing::warn!(
                error = %error,
                failures = self.since,
                "cannot accept connections (logged at most once per {:?})",
                self.interval
            );
            self.last_logged = Some(Instant::now());
            self.since = 0;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_open: usize) -> Arc<Table> {
        Table::new(ConnLimits {
            max_open,
            first_request: Duration::from_millis(200),
            idle: Duration::from_millis(400),
        })
    }

    #[test]
    fn at_the_cap_the_quietest_connection_without_a_certificate_gives_way() {
        let t = table(3);
        let certified = t.admit().unwrap();
        certified.handshaken(true);
        let worked = t.admit().unwrap();
        worked.handshaken(false);
        drop(worked.begin());
        let silent = t.admit().unwrap();
        silent.handshaken(false);
        // Full: the silent one (never served) goes first, then the one that worked.
        let a = t.admit().unwrap();
        assert!(silent.evicted().is_cancelled());
        assert!(!worked.evicted().is_cancelled());
        let _b = t.admit().unwrap();
        assert!(a.evicted().is_cancelled());
        assert!(!worked.evicted().is_cancelled());
        assert!(!certified.evicted().is_cancelled());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_busy_or_certified_table_refuses_the_newcomer() {
        let t = table(2);
        let c = t.admit().unwrap();
        c.handshaken(true);
        let busy = t.admit().unwrap();
        busy.handshaken(false);
        let _req = busy.begin();
        assert!(t.admit().is_none());
        assert_eq!(t.len(), 2);
        drop(c);
        assert!(t.admit().is_some());
    }

    #[tokio::test]
    async fn silence_idleness_and_work_in_flight() {
        let t = table(8);
        let silent = t.admit().unwrap();
        silent.handshaken(false);
        let started = Instant::now();
        assert_eq!(silent.watch().await, Closing::Silent);
        assert!(started.elapsed() >= Duration::from_millis(190));

        let worked = t.admit().unwrap();
        worked.handshaken(true);
        let req = worked.begin();
        // A request in flight (an open stream) keeps the connection however long it takes.
        let held = tokio::time::timeout(Duration::from_millis(600), worked.watch()).await;
        assert!(held.is_err(), "closed with a request in flight");
        drop(req);
        let started = Instant::now();
        assert_eq!(worked.watch().await, Closing::Idle);
        assert!(started.elapsed() >= Duration::from_millis(390));
    }

    #[test]
    fn accept_failures_are_logged_once_per_interval() {
        let mut f = AcceptFailures::new(Duration::from_secs(60));
        let e = std::io::Error::from_raw_os_error(24);
        let logged = (0..300).filter(|_| f.record(&e)).count();
        assert_eq!(logged, 1);
    }
}
