//! Subscriptions: replay from the log, then follow live commits, with no gap and no
//! duplicate.
//!
//! A subscription joins the live broadcast *before* it replays, so nothing committed
//! during the replay is missed; live batches it already replayed are skipped by id. A
//! subscriber that falls more than the live buffer behind is not waited for: the broadcast
//! drops its oldest batches for that subscriber only, and the subscription notices the
//! lag and catches up from the durable log from its last delivered id. Appenders never
//! block on subscribers, and a subscriber's memory is bounded by the live buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use solo_types::{Event, metric_names as m};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{EventFilter, EventPage, EventQuery, StoreError};

/// Where a subscription replays from.
pub trait EventSource: Send + Sync + 'static {
    /// One page of events.
    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError>;
}

const REPLAY_PAGE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Replay,
    Live,
}

/// A stream of events in id order: first those already in the log, then live ones.
pub struct Subscription {
    source: Arc<dyn EventSource>,
    rx: broadcast::Receiver<Arc<[Event]>>,
    filter: EventFilter,
    /// Every id below this has been delivered or skipped.
    next_id: u64,
    buffer: VecDeque<Event>,
    mode: Mode,
    catchups: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("next_id", &self.next_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription delivering events with ids greater than `after_id`.
    pub fn new(
        source: Arc<dyn EventSource>,
        rx: broadcast::Receiver<Arc<[Event]>>,
        after_id: u64,
        filter: EventFilter,
    ) -> Self {
        Self {
            source,
            rx,
            filter,
            next_id: after_id.saturating_add(1),
            buffer: VecDeque::new(),
            mode: Mode::Replay,
            catchups: 0,
        }
    }

    /// How many times this subscriber fell behind the live buffer and caught up from the
    /// log.
    pub fn catchups(&self) -> u64 {
        self.catchups
    }

    /// The next event; `None` once the store is closed and everything was delivered.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            match self.mode {
                Mode::Replay => {
                    if let Err(e) = self.replay_page() {
                        return Some(Err(e));
                    }
                }
                Mode::Live => match self.rx.recv().await {
                    Ok(batch) => self.take_live(&batch),
                    Err(RecvError::Lagged(_)) => {
                        self.catchups += 1;
                        metrics::counter!(m::SUBSCRIBER_CATCHUPS).increment(1);
                        self.mode = Mode::Replay;
                    }
                    Err(RecvError::Closed) => {
                        // The writer is gone; deliver whatever reached the log first.
                        if let Err(e) = self.replay_page() {
                            return Some(Err(e));
                        }
                        if self.buffer.is_empty() {
                            return None;
                        }
                    }
                },
            }
        }
    }

    fn replay_page(&mut self) -> Result<(), StoreError> {
        let page = self.source.read(&EventQuery {
            filter: self.filter.clone(),
            after_id: Some(self.next_id - 1),
            limit: REPLAY_PAGE,
            ..EventQuery::default()
        })?;
        match page.next_cursor {
            Some(cursor) => self.next_id = cursor + 1,
            None => {
                self.next_id = self.next_id.max(page.snapshot_last_id + 1);
                self.mode = Mode::Live;
            }
        }
        self.buffer.extend(page.events);
        Ok(())
    }

    fn take_live(&mut self, batch: &[Event]) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        if last.id < self.next_id {
            return; // already replayed
        }
        if first.id > self.next_id {
            // Committed before we joined the broadcast but after our replay's snapshot
            // cannot happen; a gap means we missed batches, so read them from the log.
            self.mode = Mode::Replay;
            return;
        }
        for e in batch {
            if e.id >= self.next_id && self.filter.matches(e) {
                self.buffer.push_back(e.clone());
            }
        }
        self.next_id = last.id + 1;
    }

    /// This subscription as a `Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Event, StoreError>> + Send {
        futures::stream::unfold(self, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        })
    }
}
