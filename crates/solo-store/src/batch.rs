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
    /// The wall clock (ns since the epoch) to stamp the events from, set on a batch every
    /// replica applies: see [`WriteBatch::stamped_at`].
    pub(crate) at: Option<i64>,
    /// The lease `(scope, epoch)` the writer holds: a replicated log applies the batch
    /// only while that is still the lease's epoch. See [`WriteBatch::fenced`].
    pub(crate) fence: Option<(String, u64)>,
}

/// The version byte of [`WriteBatch::to_bytes`].
const WIRE_VERSION: u8 = 1;

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

    /// A batch of these events only (an `EventLog::append`).
    pub fn from_events(events: Vec<NewEvent>) -> Self {
        Self {
            events,
            ..Self::default()
        }
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

    /// Stamps this batch's events from the wall clock `at_ns` (clamped so that the log's
    /// clocks never go back) instead of the applying host's clocks, so that replicas
    /// applying the same batches in the same order assign the same ids, stamps and chain
    /// hashes.
    pub fn stamped_at(&mut self, at_ns: i64) -> &mut Self {
        self.at = Some(at_ns);
        self
    }

    /// Makes the batch conditional on the writer still holding lease `scope` at `epoch`
    /// (its fencing token) when a replicated log applies it: a writer that lost the lease
    /// (paused, partitioned, expired) is refused with [`StoreError::Fenced`] and writes
    /// nothing. The embedded store, which has one writer, ignores it.
    pub fn fenced(&mut self, scope: impl Into<String>, epoch: u64) -> &mut Self {
        self.fence = Some((scope.into(), epoch));
        self
    }

    /// The fence set by [`WriteBatch::fenced`], if any.
    pub fn fence(&self) -> Option<(&str, u64)> {
        self.fence.as_ref().map(|(s, e)| (s.as_str(), *e))
    }

    /// The wall clock set by [`WriteBatch::stamped_at`], if any.
    pub fn at(&self) -> Option<i64> {
        self.at
    }

    /// The batch as bytes [`WriteBatch::from_bytes`] reads back (a replicated log's
    /// entry): version 1, the stamp clock, the in-batch causes, then the operations and
    /// event bodies in the WAL's group encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bodies: Vec<Vec<u8>> = self.events.iter().map(crate::codec::encode_body).collect();
        let group = crate::wal::encode_group(self.ops.iter(), bodies.iter().map(Vec::as_slice));
        let mut out = Vec::with_capacity(16 + 8 * self.in_batch_causes.len() + group.len());
        out.push(WIRE_VERSION);
        match self.at {
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&at.to_be_bytes());
            }
            None => out.push(0),
        }
        match &self.fence {
            Some((scope, epoch)) => {
                out.push(1);
                let len = u32::try_from(scope.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(scope.as_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            None => out.push(0),
        }
        let n = u32::try_from(self.in_batch_causes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for &(event, cause) in &self.in_batch_causes {
            out.extend_from_slice(&u32::try_from(event).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&u32::try_from(cause).unwrap_or(u32::MAX).to_be_bytes());
        }
        out.extend_from_slice(&group);
        out
    }

    /// Reads bytes written by [`WriteBatch::to_bytes`], checking everything a batch built
    /// through the methods above would satisfy (table names, sizes, causes that point
    /// back).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadBatch(why.to_string());
        let (&version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if version != WIRE_VERSION {
            return Err(bad(&format!("version {version} is not supported")));
        }
        let (&flag, mut rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let mut take = |n: usize| -> Result<&[u8], StoreError> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let at = match flag {
            0 => None,
            1 => Some(i64::from_be_bytes(
                take(8)?.try_into().map_err(|_| bad("truncated"))?,
            )),
            f => return Err(bad(&format!("bad clock flag {f}"))),
        };
        let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let fence = match take(1)?[0] {
            0 => None,
            1 => {
                let len = u32_at(take(4)?);
                let scope = String::from_utf8(take(len)?.to_vec())
                    .map_err(|_| bad("a fence scope is not UTF-8"))?;
                let epoch = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("truncated"))?);
                Some((scope, epoch))
            }
            f => return Err(bad(&format!("bad fence flag {f}"))),
        };
        let n_causes = u32_at(take(4)?);
        let mut in_batch_causes = Vec::with_capacity(n_causes.min(1024));
        for _ in 0..n_causes {
            let pair = take(8)?;
            in_batch_causes.push((u32_at(&pair[..4]), u32_at(&pair[4..])));
        }
        let group = crate::wal::decode_group(rest).map_err(|e| bad(&e.0))?;
        let mut batch = WriteBatch {
            at,
            fence,
            ..WriteBatch::default()
        };
        for op in group.ops {
            match op {
                Op::Put { table, key, value } => batch.put(&table, key, value)?,
                Op::Delete { table, key } => batch.delete(&table, key)?,
                Op::DeletePrefix { table, prefix } => batch.delete_prefix(&table, prefix)?,
            };
        }
        for body in &group.records {
            let event = crate::codec::decode_body(body).map_err(|e| bad(&e.0))?;
            batch.events.push(event);
        }
        for &(event, cause) in &in_batch_causes {
            if cause >= event || event >= batch.events.len() {
                return Err(bad("an in-batch cause does not point back"));
            }
        }
        batch.in_batch_causes = in_batch_causes;
        Ok(batch)
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

    fn sample() -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put("deployments", b"t/s".to_vec(), b"record".to_vec())
            .unwrap()
            .delete("kv", b"gone".to_vec())
            .unwrap()
            .delete_prefix("kv", b"p/".to_vec())
            .unwrap();
        let mut e = NewEvent::system("service_deployed", "t/s");
        e.payload = serde_json::json!({"version": 2});
        b.event(e);
        let caused = NewEvent::system("service_started", "t/s");
        b.event_caused_by(caused, 0);
        b.stamped_at(1_700_000_000_000_000_000);
        b.fenced("svc/t/s", 7);
        b
    }

    #[test]
    fn bytes_round_trip() {
        let b = sample();
        let back = WriteBatch::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back.ops(), b.ops());
        assert_eq!(back.events(), b.events());
        assert_eq!(back.in_batch_causes, b.in_batch_causes);
        assert_eq!(back.at(), Some(1_700_000_000_000_000_000));
        assert_eq!(back.fence(), Some(("svc/t/s", 7)));
        let plain = WriteBatch::new();
        let back = WriteBatch::from_bytes(&plain.to_bytes()).unwrap();
        assert!(back.is_empty() && back.at().is_none());
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let good = sample().to_bytes();
        for n in 0..good.len() {
            let err = WriteBatch::from_bytes(&good[..n]).unwrap_err();
            assert!(matches!(err, StoreError::BadBatch(_)), "{n}: {err}");
        }
        let mut newer = good.clone();
        newer[0] = 9;
        assert!(WriteBatch::from_bytes(&newer).is_err());
        // A cause that points forward, and a bad table name, are refused.
        let mut b = sample();
        b.in_batch_causes = vec![(0, 1)];
        assert!(WriteBatch::from_bytes(&b.to_bytes()).is_err());
        let mut b = WriteBatch::new();
        b.ops.push(Op::Put {
            table: "Bad-Name".into(),
            key: vec![],
            value: vec![],
        });
        assert!(matches!(
            WriteBatch::from_bytes(&b.to_bytes()),
            Err(StoreError::InvalidTable(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = WriteBatch::from_bytes(&bytes);
            let mut with_header = vec![WIRE_VERSION, 0, 0];
            with_header.extend_from_slice(&bytes);
            let _ = WriteBatch::from_bytes(&with_header);
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
