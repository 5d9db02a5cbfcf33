//! A write batch: key-value operations and events committed together, atomically.

use solo_types::NewEvent;

use crate::StoreError;

/// The largest single value (or event) the store accepts.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// One key-value operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: String,
        key: Vec<u8>,
    },
    /// Deletes every key that starts with `prefix`.
    DeletePrefix {
        table: String,
        prefix: Vec<u8>,
    },
}

/// Operations and events applied in one atomic, durable step.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    pub(crate) events: Vec<NewEvent>,
    /// `(event, cause)`: event `event` was caused by the earlier event `cause` of this
    /// batch, whose id is not known until the commit.
    pub(crate) in_batch_causes: Vec<(usize, usize)>,
}

/// Checks a table name: 1-64 characters of `[a-z0-9_]`.
pub fn validate_table_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidTable(name.to_string()))
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `value` under `key` in `table`.
    pub fn put(
        &mut self,
        table: &str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, StoreError> {
        validate_table_name(table)?;
        let (key, value) = (key.into(), value.into());
        if key.len() + value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge {
                what: "key and value",
                size: key.len() + value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        self.ops.push(Op::Put {
            table: table.to_string(),
            key,
            value,
        });
        Ok(self)
    }

    /// Deletes `key` from `table` (a no-op if absent).
    pub fn delete(
        &mut self,
        table: &str,
        key: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, StoreError> {
        validate_table_name(table)?;
        self.ops.push(Op::Delete {
            table: table.to_string(),
            key: key.into(),
        });
        Ok(self)
    }

    /// Deletes every key of `table` that starts with `prefix`.
    pub fn delete_prefix(
        &mut self,
        table: &str,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, StoreError> {
        validate_table_name(table)?;
        self.ops.push(Op::DeletePrefix {
            table: table.to_string(),
            prefix: prefix.into(),
        });
        Ok(self)
    }

    /// Appends `event` to the log in the same transaction.
    pub fn event(&mut self, event: NewEvent) -> &mut Self {
        self.events.push(event);
        self
    }

    /// Appends `event`, caused by this batch's event number `cause` (an index into the
    /// events added so far). Returns the new event's index.
    ///
    /// # Panics
    /// If `cause` is not an earlier event of this batch: a bug in the caller.
    pub fn event_caused_by(&mut self, mut event: NewEvent, cause: usize) -> usize {
        assert!(
            cause < self.events.len(),
            "an in-batch cause must come first"
        );
        event.causation_id = Some(0);
        self.events.push(event);
        let index = self.events.len() - 1;
        self.in_batch_causes.push((index, cause));
        index
    }

    /// The index the next event will have.
    pub fn next_event_index(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The events, in order.
    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }

    /// Takes the ops and events of `other` after this batch's own.
    pub fn extend(&mut self, other: WriteBatch) {
        let offset = self.events.len();
        self.ops.extend(other.ops);
        self.events.extend(other.events);
        self.in_batch_causes.extend(
            other
                .in_batch_causes
                .into_iter()
                .map(|(e, c)| (e + offset, c + offset)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for good in ["a", "deployments", "service_kv", &"x".repeat(64)] {
            assert!(validate_table_name(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a-b", "a.b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(validate_table_name(bad), Err(StoreError::InvalidTable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn oversized_value_is_refused() {
        let mut b = WriteBatch::new();
        let err = b
            .put("t", vec![0; 1], vec![0; MAX_VALUE_BYTES])
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        assert!(b.is_empty());
    }
}
