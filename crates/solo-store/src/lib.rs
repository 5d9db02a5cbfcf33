//! Solo's durable event log and transactional key-value store.
//!
//! The kernel depends on the [`EventLog`] and [`Kv`] traits only. [`RedbStore`] is the
//! embedded backend: one redb file, one writer thread that group-commits concurrent
//! writers into shared fsync'd transactions, and lock-free MVCC reads.
//!
//! Architecture invariant: a write (an event append or a key-value batch) is
//! acknowledged only after the transaction holding it is durable on disk.

mod batch;
mod chunk;
pub mod codec;
mod error;
mod redb_store;
mod reserve;
mod subscribe;
pub mod testing;
mod wal;

use std::ops::Bound;

use futures::future::BoxFuture;
use solo_types::NewEvent;

pub use batch::{MAX_VALUE_BYTES, Op, WriteBatch, validate_table_name};
pub use error::StoreError;
pub use redb_store::{FORMAT_VERSION, RedbStore, StoreOptions};
pub use solo_types::query::{EventFilter, EventPage, EventQuery, Order};
pub use subscribe::{EventSource, Subscription};

/// The result of a durable commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Commit {
    /// The ids assigned to the batch's events, in order (consecutive).
    pub event_ids: Vec<u64>,
}

/// The outcome of walking the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many events were checked.
    pub checked: u64,
    /// The last id in the log (0 when empty).
    pub last_id: u64,
    /// The first event where the chain breaks, if any.
    pub first_broken: Option<BrokenLink>,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub id: u64,
    pub reason: String,
}

/// The append-only, hash-chained event log.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` atomically; resolves with their ids once they are durable.
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>>;

    /// One page of events matching `query`.
    fn read(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// The highest durable id (0 when the log is empty).
    fn last_id(&self) -> u64;

    /// Replays events after `after_id` that match `filter`, then delivers live appends,
    /// with no gap and no duplicate.
    fn subscribe(&self, after_id: u64, filter: EventFilter) -> Subscription;

    /// Walks the whole chain and reports the first broken link.
    fn verify(&self) -> Result<VerifyReport, StoreError>;
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A consistent read-only view of the key-value tables.
pub trait KvRead: Send {
    /// The value under `key` in `table`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries of `table` in key order within the bounds.
    fn range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// Up to `limit` entries of `table` whose key starts with `prefix`.
    fn scan_prefix(&self, table: &str, prefix: &[u8], limit: usize) -> Result<Entries, StoreError> {
        match prefix_end(prefix) {
            Some(end) => self.range(table, Bound::Included(prefix), Bound::Excluded(&end), limit),
            None => self.range(table, Bound::Included(prefix), Bound::Unbounded, limit),
        }
    }
}

/// Named tables of byte keys and values, written in durable, group-committed batches.
pub trait Kv: Send + Sync + 'static {
    /// A read transaction: a consistent snapshot of every table.
    fn snapshot(&self) -> Result<Box<dyn KvRead>, StoreError>;

    /// Applies `batch` (its key-value operations and its events) atomically; resolves once
    /// it is durable.
    fn commit(&self, batch: WriteBatch) -> BoxFuture<'static, Result<Commit, StoreError>>;

    /// Why the store takes no writes, while it does not (a failed write it has not yet
    /// recovered from); `None` when it is healthy.
    fn fault(&self) -> Option<String> {
        None
    }

    /// Tries once to leave the failed state; `Ok` when the store takes writes again (or
    /// never stopped). Safe to call at any time.
    fn recover(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Reads one value (a snapshot of its own).
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.snapshot()?.get(table, key)
    }
}

/// Both halves of the store, as the kernel sees it.
pub trait Store: EventLog + Kv {}
impl<T: EventLog + Kv> Store for T {}

/// The smallest key greater than every key starting with `prefix`, if one exists.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_table() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
