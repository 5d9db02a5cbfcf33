//! Chunks: the events of one group commit stored as one record, and the compact index
//! entries that point into them.
//!
//! A chunk (version 1) is `0x01 ‖ count u32 ‖ end offsets u32 × count ‖ records`, all
//! big-endian; record `i` holds event `first_id + i` and spans from the previous end
//! offset to its own. Storing a commit's events as one value, and one index entry per
//! distinct tenant, service and kind in it, turns a commit of N events into a handful of
//! B-tree inserts instead of 4·N; redb's cost is per insert and per dirty page.
//!
//! An index entry's value lists the positions of its matching events in the chunk as
//! runs: `(start u16, len u16)` pairs, big-endian.

use crate::codec::DecodeError;

/// The chunk format this build writes.
pub const CHUNK_VERSION: u8 = 1;
/// The most events in one chunk (positions must fit in u16).
pub const MAX_CHUNK_EVENTS: usize = 4096;
/// A chunk is closed once its records pass this size.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Builds one chunk.
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    ends: Vec<u32>,
    records: Vec<u8>,
}

impl ChunkBuilder {
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.ends.len() >= MAX_CHUNK_EVENTS || self.records.len() >= MAX_CHUNK_BYTES
    }

    /// Adds one record; returns its position.
    pub fn push(&mut self, record: &[u8]) -> u16 {
        let pos = u16::try_from(self.ends.len()).unwrap_or(u16::MAX);
        self.records.extend_from_slice(record);
        self.ends
            .push(u32::try_from(self.records.len()).unwrap_or(u32::MAX));
        pos
    }

    /// The encoded chunk; the builder is empty afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 4 * self.ends.len() + self.records.len());
        out.push(CHUNK_VERSION);
        out.extend_from_slice(&u32::try_from(self.ends.len()).unwrap_or(0).to_be_bytes());
        for e in &self.ends {
            out.extend_from_slice(&e.to_be_bytes());
        }
        out.extend_from_slice(&self.records);
        self.ends.clear();
        self.records.clear();
        out
    }
}

/// A read-only view of an encoded chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    count: usize,
    ends: &'a [u8],
    records: &'a [u8],
}

impl<'a> ChunkView<'a> {
    /// Checks the header; each record is bounds-checked when it is read.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 5 {
            return Err(DecodeError("chunk shorter than its header".into()));
        }
        if bytes[0] != CHUNK_VERSION {
            return Err(DecodeError(format!(
                "chunk version {} is not supported (this build reads {CHUNK_VERSION})",
                bytes[0]
            )));
        }
        let count = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let table_len = count
            .checked_mul(4)
            .filter(|n| 5 + n <= bytes.len())
            .ok_or_else(|| DecodeError(format!("chunk claims {count} records, too many")))?;
        Ok(Self {
            count,
            ends: &bytes[5..5 + table_len],
            records: &bytes[5 + table_len..],
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn end(&self, i: usize) -> usize {
        let b = &self.ends[i * 4..i * 4 + 4];
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(usize::MAX)
    }

    /// Record `i`, if the chunk has it.
    pub fn record(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.count {
            return None;
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        if start > end {
            return None;
        }
        self.records.get(start..end)
    }
}

/// Collects positions into runs.
#[derive(Debug, Default, Clone)]
pub struct Runs {
    runs: Vec<(u16, u16)>,
}

impl Runs {
    pub fn push(&mut self, pos: u16) {
        if let Some((start, len)) = self.runs.last_mut()
            && u32::from(*start) + u32::from(*len) == u32::from(pos)
        {
            *len += 1;
            return;
        }
        self.runs.push((pos, 1));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.runs.len() * 4);
        for (s, l) in &self.runs {
            out.extend_from_slice(&s.to_be_bytes());
            out.extend_from_slice(&l.to_be_bytes());
        }
        out
    }
}

/// The positions an encoded index entry lists, in ascending order.
pub fn decode_runs(bytes: &[u8]) -> Result<Vec<u16>, DecodeError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(DecodeError(
            "index entry length is not a multiple of 4".into(),
        ));
    }
    let mut out = Vec::new();
    for r in bytes.chunks_exact(4) {
        let start = u16::from_be_bytes([r[0], r[1]]);
        let len = u16::from_be_bytes([r[2], r[3]]);
        let end = start
            .checked_add(len)
            .ok_or_else(|| DecodeError("index run overflows".into()))?;
        out.extend(start..end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_round_trip() {
        let mut b = ChunkBuilder::default();
        assert_eq!(b.push(b"one"), 0);
        assert_eq!(b.push(b""), 1);
        assert_eq!(b.push(b"three"), 2);
        let bytes = b.finish();
        assert!(b.is_empty());
        let v = ChunkView::parse(&bytes).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.record(0), Some(&b"one"[..]));
        assert_eq!(v.record(1), Some(&b""[..]));
        assert_eq!(v.record(2), Some(&b"three"[..]));
        assert_eq!(v.record(3), None);
    }

    #[test]
    fn runs_round_trip() {
        let mut r = Runs::default();
        for p in [0, 1, 2, 5, 6, 9] {
            r.push(p);
        }
        assert_eq!(r.encode().len(), 12);
        assert_eq!(decode_runs(&r.encode()).unwrap(), vec![0, 1, 2, 5, 6, 9]);
        assert!(decode_runs(&[0, 1, 2]).is_err());
        assert!(decode_runs(&[0xff, 0xff, 0, 2]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(solo_types::fuzz::cases()))]

        #[test]
        fn arbitrary_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = ChunkView::parse(&bytes) {
                for i in 0..v.len().min(64) {
                    let _ = v.record(i);
                }
            }
            let _ = decode_runs(&bytes);
        }
    }
}
