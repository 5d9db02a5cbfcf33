//! The on-disk record of one event: its canonical bytes, then its chain hash.
//!
//! Canonical bytes, version 1 (all integers big-endian, strings length-prefixed u32):
//! `0x01 ‖ id u64 ‖ ts i64 ‖ mono u64 ‖ kind ‖ tenant ("" = system) ‖ service flag u8
//! [‖ service] ‖ subject ‖ payload (JSON text) ‖ causation flag u8 [‖ causation u64]`.
//! The record is `canonical ‖ hash`, with `hash = SHA-256(previous hash ‖ canonical)`
//! and the previous hash of event 1 all zeroes. The hash covers the exact stored bytes,
//! so verification never depends on re-serializing JSON.

use sha2::{Digest, Sha256};
use solo_types::{Event, NewEvent, ServiceId, TenantId};

/// The version byte every canonical encoding starts with.
pub const RECORD_VERSION: u8 = 1;
/// The hash that precedes event 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The clocks and id the store assigns to an event when it appends it.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub id: u64,
    pub ts: i64,
    pub mono: u64,
}

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Encodes `event` with its stamp into canonical bytes.
pub fn canonical_bytes(stamp: Stamp, event: &NewEvent) -> Vec<u8> {
    let body = encode_body(event);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    push_header(&mut out, stamp);
    out.extend_from_slice(&body);
    out
}

/// The length of the stamp header that starts the canonical bytes.
pub const HEADER_LEN: usize = 1 + 8 + 8 + 8;

/// Writes the version byte and the stamp: the part of the canonical bytes only the
/// writer knows.
pub fn push_header(out: &mut Vec<u8>, stamp: Stamp) {
    out.push(RECORD_VERSION);
    out.extend_from_slice(&stamp.id.to_be_bytes());
    out.extend_from_slice(&stamp.ts.to_be_bytes());
    out.extend_from_slice(&stamp.mono.to_be_bytes());
}

/// Encodes everything after the stamp header: the part the caller can prepare before the
/// event reaches the writer.
pub fn encode_body(event: &NewEvent) -> Vec<u8> {
    let payload = serde_json::to_vec(&event.payload).unwrap_or_else(|_| b"null".to_vec());
    let mut out = Vec::with_capacity(32 + event.kind.len() + event.subject.len() + payload.len());
    put_str(&mut out, event.kind.as_bytes());
    put_str(
        &mut out,
        event
            .tenant
            .as_ref()
            .map_or(&b""[..], |t| t.as_str().as_bytes()),
    );
    match &event.service {
        Some(s) => {
            out.push(1);
            put_str(&mut out, s.as_str().as_bytes());
        }
        None => out.push(0),
    }
    put_str(&mut out, event.subject.as_bytes());
    put_str(&mut out, &payload);
    match event.causation_id {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.to_be_bytes());
        }
        None => out.push(0),
    }
    out
}

/// The chain hash of an event whose canonical bytes are `canonical`.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Lengths are bounded by the store's value cap (far below 4 GiB).
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Splits a stored record into canonical bytes and hash.
pub fn split_record(record: &[u8]) -> Result<(&[u8], [u8; 32]), DecodeError> {
    if record.len() < 33 {
        return Err(DecodeError(format!(
            "record is {} bytes, shorter than any event",
            record.len()
        )));
    }
    let (canonical, hash) = record.split_at(record.len() - 32);
    let mut h = [0u8; 32];
    h.copy_from_slice(hash);
    Ok((canonical, h))
}

/// Decodes a stored record into an event.
pub fn decode_record(record: &[u8]) -> Result<Event, DecodeError> {
    let (canonical, hash) = split_record(record)?;
    let mut r = Reader { buf: canonical };
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError(format!(
            "record version {version} is not supported (this build reads version {RECORD_VERSION})"
        )));
    }
    let id = r.u64()?;
    let ts = i64::from_be_bytes(r.array()?);
    let mono = r.u64()?;
    let new = read_body(&mut r)?;
    Ok(Event {
        id,
        ts,
        mono,
        kind: new.kind,
        tenant: new.tenant,
        service: new.service,
        subject: new.subject,
        payload: new.payload,
        causation_id: new.causation_id,
        hash,
    })
}

/// Decodes the bytes [`encode_body`] wrote.
pub fn decode_body(body: &[u8]) -> Result<NewEvent, DecodeError> {
    read_body(&mut Reader { buf: body })
}

/// Reads an event's body, which must end the buffer.
fn read_body(r: &mut Reader<'_>) -> Result<NewEvent, DecodeError> {
    let kind = r.string("kind")?;
    let tenant = r.string("tenant")?;
    let tenant = if tenant.is_empty() {
        None
    } else {
        Some(TenantId::new(tenant).map_err(|e| DecodeError(e.to_string()))?)
    };
    let service = match r.u8()? {
        0 => None,
        1 => Some(ServiceId::new(r.string("service")?).map_err(|e| DecodeError(e.to_string()))?),
        f => return Err(DecodeError(format!("bad service flag {f}"))),
    };
    let subject = r.string("subject")?;
    let payload_bytes = r.bytes()?;
    let payload = serde_json::from_slice(payload_bytes)
        .map_err(|e| DecodeError(format!("payload is not JSON: {e}")))?;
    let causation_id = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        f => return Err(DecodeError(format!("bad causation flag {f}"))),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the event",
            r.buf.len()
        )));
    }
    Ok(NewEvent {
        kind,
        tenant,
        service,
        subject,
        payload,
        causation_id,
    })
}

/// Reads only the id and timestamps of a record (for binary searches by time).
pub fn decode_stamp(record: &[u8]) -> Result<Stamp, DecodeError> {
    let (canonical, _) = split_record(record)?;
    let mut r = Reader { buf: canonical };
    if r.u8()? != RECORD_VERSION {
        return Err(DecodeError("unsupported record version".into()));
    }
    Ok(Stamp {
        id: r.u64()?,
        ts: i64::from_be_bytes(r.array()?),
        mono: r.u64()?,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!(
                "record truncated: needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = u32::from_be_bytes(self.array()?);
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NewEvent {
        NewEvent::service(
            "service_started",
            &TenantId::new("t1").unwrap(),
            &ServiceId::new("s1").unwrap(),
        )
        .payload(serde_json::json!({"b": [1, 2], "a": "x"}))
        .caused_by(Some(9))
    }

    fn record(stamp: Stamp, e: &NewEvent) -> Vec<u8> {
        let c = canonical_bytes(stamp, e);
        let h = chain_hash(&GENESIS_HASH, &c);
        [c, h.to_vec()].concat()
    }

    #[test]
    fn round_trip() {
        let stamp = Stamp {
            id: 5,
            ts: -3,
            mono: 77,
        };
        let e = sample();
        let decoded = decode_record(&record(stamp, &e)).unwrap();
        assert_eq!(decoded.id, 5);
        assert_eq!(decoded.ts, -3);
        assert_eq!(decoded.mono, 77);
        assert_eq!(decoded.kind, e.kind);
        assert_eq!(decoded.tenant, e.tenant);
        assert_eq!(decoded.service, e.service);
        assert_eq!(decoded.subject, e.subject);
        assert_eq!(decoded.payload, e.payload);
        assert_eq!(decoded.causation_id, Some(9));
        let s = decode_stamp(&record(stamp, &e)).unwrap();
        assert_eq!((s.id, s.ts, s.mono), (5, -3, 77));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let r = record(
            Stamp {
                id: 1,
                ts: 1,
                mono: 1,
            },
            &sample(),
        );
        for n in 0..r.len() {
            assert!(
                decode_record(&r[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(solo_types::fuzz::cases()))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_record(&bytes);
            let _ = decode_stamp(&bytes);
        }
    }
}
