//! Event queries: filters, id and time bounds, paging. The store serves them; every face
//! builds them, so they live here, below both.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::ids::{ServiceId, TenantId};

/// Which events a query or a subscription wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's events (served from the tenant index).
    pub tenant: Option<TenantId>,
    /// Only this service's events; needs `tenant` to use the service index.
    pub service: Option<ServiceId>,
    /// Only this kind; a kind ending in `*` matches by prefix (`custom.*`).
    pub kind: Option<String>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(t) = &self.tenant
            && event.tenant.as_ref() != Some(t)
        {
            return false;
        }
        if let Some(s) = &self.service
            && event.service.as_ref() != Some(s)
        {
            return false;
        }
        if let Some(k) = &self.kind {
            return match k.strip_suffix('*') {
                Some(prefix) => event.kind.starts_with(prefix),
                None => &event.kind == k,
            };
        }
        true
    }
}

/// The direction of a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// One page of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub filter: EventFilter,
    /// Only ids greater than this (exclusive; the cursor of an ascending read).
    pub after_id: Option<u64>,
    /// Only ids smaller than this (exclusive; the cursor of a descending read).
    pub before_id: Option<u64>,
    /// Only events with `ts >= since_ts` (UTC ns).
    pub since_ts: Option<i64>,
    /// Only events with `ts < until_ts` (UTC ns).
    pub until_ts: Option<i64>,
    /// At most this many events (capped at [`EventQuery::MAX_LIMIT`]).
    pub limit: usize,
    pub order: Order,
}

impl EventQuery {
    /// The most events one page returns.
    pub const MAX_LIMIT: usize = 10_000;
    /// The most records one page examines before it returns with a cursor.
    pub const SCAN_BUDGET: usize = 100_000;
}

/// Events and where to continue (as JSON: `{"events", "next_cursor"}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass this as `after_id` (ascending) or `before_id` (descending) for the next page;
    /// `None` when the read reached the end of the log as of its snapshot.
    pub next_cursor: Option<u64>,
    /// The highest id this read's snapshot held (the end of the log when it began).
    #[serde(skip)]
    pub snapshot_last_id: u64,
}
