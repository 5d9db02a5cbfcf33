//! The kernel's inputs and answers: the plain types every face shares (defined in
//! `solo_types::api`, so a client can use them without the kernel), the event query,
//! and the few types only the kernel hands out. No crate above the kernel needs the
//! store's types.

use futures::stream::BoxStream;

pub use solo_types::api::*;
pub use solo_types::{Event, EventFilter, EventPage, EventQuery, Order};

use crate::error::KernelError;

/// Events as they are appended, after a replay from an id; ends when the kernel stops.
pub type EventStream = BoxStream<'static, Result<Event, KernelError>>;

/// A service's log lines as they are written; ends when the service goes away.
pub type LogStream = BoxStream<'static, LogLine>;

/// What recovery at start did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub recovered: usize,
    pub failed: usize,
}
