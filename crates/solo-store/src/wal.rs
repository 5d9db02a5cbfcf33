//! The write-ahead log in front of redb: one sequential write and one `fdatasync` per
//! group commit.
//!
//! A group commit is durable once its WAL record is synced; it is then applied to redb
//! with a non-durable commit (no fsync), and redb is made durable at checkpoints (when
//! the WAL is full, every second, and at close), after which the WAL is reused from the
//! start. On open, records newer than redb's `applied_seq` are replayed.
//!
//! File layout (version 1): a 4 KiB header (`SOLOWAL\0`, version u32 BE), then records
//! `magic u32 ‖ len u32 ‖ seq u64 ‖ crc32 u32 ‖ reserved u32 ‖ payload`, where the CRC
//! covers `len ‖ seq ‖ payload`. The file is zero-filled to its capacity when created so
//! that appends never allocate blocks or change the file size, which keeps `fdatasync`
//! to a data flush.
//!
//! Reading stops at the first record that is torn, fails its CRC, or does not continue the
//! sequence (`seq` of the previous + 1): after a checkpoint the log restarts at the
//! header and anything beyond the new records belongs to an older, already applied
//! stretch with lower sequence numbers.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::codec::DecodeError;
use crate::{MAX_VALUE_BYTES, Op};

const FILE_MAGIC: &[u8; 8] = b"SOLOWAL\0";
/// The WAL format this build writes and the newest it reads.
pub const WAL_VERSION: u32 = 1;
const HEADER_LEN: u64 = 4096;
const RECORD_MAGIC: u32 = 0x534c_5752;
const RECORD_HEADER: usize = 24;
const PAYLOAD_VERSION: u8 = 1;

/// The WAL of a store file.
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    offset: u64,
    capacity: u64,
    /// Whether [`Wal::append`] syncs each record (see [`crate::StoreOptions::sync_commits`]).
    sync: bool,
}

/// One record read back at open.
pub(crate) struct WalRecord {
    pub(crate) seq: u64,
    pub(crate) payload: Vec<u8>,
}

impl Wal {
    /// The WAL file that belongs to the store at `db_path`.
    pub(crate) fn path_for(db_path: &Path) -> PathBuf {
        db_path.with_extension("wal")
    }

    /// Opens or creates the WAL; returns it and its readable records in order.
    pub(crate) fn open(path: PathBuf, capacity: u64) -> Result<(Self, Vec<WalRecord>), StoreError> {
        let io = |op: &'static str, e: std::io::Error| StoreError::io(path.clone(), op, &e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        let capacity = capacity.max(HEADER_LEN * 2);
        if len < HEADER_LEN {
            // New (or cut short before its header was ever synced: nothing in it was
            // acknowledged, since records come after the header).
            let mut header = vec![0u8; usize::try_from(HEADER_LEN).unwrap_or(4096)];
            header[..8].copy_from_slice(FILE_MAGIC);
            header[8..12].copy_from_slice(&WAL_VERSION.to_be_bytes());
            file.write_all_at(&header, 0)
                .map_err(|e| io("write header", e))?;
            zero_fill(&file, HEADER_LEN, capacity).map_err(|e| io("preallocate", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
            sync_dir(&path);
            let wal = Self {
                file,
                path,
                offset: HEADER_LEN,
                capacity,
                sync: true,
            };
            return Ok((wal, Vec::new()));
        }
        let mut header = [0u8; 12];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io("read header", e))?;
        if &header[..8] != FILE_MAGIC {
            return Err(StoreError::Corrupted {
                path,
                detail: "not a solo write-ahead log (bad magic)".into(),
            });
        }
        let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if version > WAL_VERSION {
            return Err(StoreError::UnsupportedFormat {
                path,
                found: u64::from(version),
                supported: u64::from(WAL_VERSION),
            });
        }
        if len < capacity {
            zero_fill(&file, len, capacity).map_err(|e| io("preallocate", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
        }
        let records = read_records(&file, len.max(capacity)).map_err(|e| io("read", e))?;
        let wal = Self {
            file,
            path,
            offset: HEADER_LEN,
            capacity: len.max(capacity),
            sync: true,
        };
        Ok((wal, records))
    }

    /// Whether a payload of `len` bytes fits before the end of the preallocated space.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.offset + (RECORD_HEADER + len) as u64 <= self.capacity
    }

    /// Whether each appended record is synced (on by default). Off, a record reaches the
    /// disk when the kernel writes it back: a crash of the process loses nothing, a crash
    /// of the machine may lose the records since the last checkpoint (a replay stops at
    /// the first one torn or missing, so never part of one).
    pub(crate) fn syncing(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Writes one record and syncs it (unless [`Wal::syncing`] turned that off). The
    /// record is durable when this returns `Ok`; the answer is where it starts, for
    /// [`Wal::invalidate`].
    pub(crate) fn append(&mut self, seq: u64, payload: &[u8]) -> Result<u64, StoreError> {
        let len = u32::try_from(payload.len()).map_err(|_| StoreError::TooLarge {
            what: "group commit",
            size: payload.len(),
            limit: u32::MAX as usize,
        })?;
        let mut buf = Vec::with_capacity(RECORD_HEADER + payload.len());
        buf.extend_from_slice(&RECORD_MAGIC.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(&crc(len, seq, payload).to_be_bytes());
        buf.extend_from_slice(&0u32.to_be_bytes());
        buf.extend_from_slice(payload);
        let io = |op: &'static str, e: std::io::Error| StoreError::io(self.path.clone(), op, &e);
        self.file
            .write_all_at(&buf, self.offset)
            .map_err(|e| io("write", e))?;
        if self.sync {
            self.file.sync_data().map_err(|e| io("sync", e))?;
        }
        let at = self.offset;
        self.offset += buf.len() as u64;
        Ok(at)
    }

    /// Unwrites the record starting at `at` (its magic is zeroed and synced), so a replay
    /// stops before it: for a group whose commit failed after its record was written, and
    /// was answered as failed. Also called when the write or the sync of the record itself
    /// failed, when whether it reached the disk is unknown.
    pub(crate) fn invalidate(&mut self, at: u64) -> Result<(), StoreError> {
        let io = |op: &'static str, e: std::io::Error| StoreError::io(self.path.clone(), op, &e);
        self.file
            .write_all_at(&[0u8; 4], at)
            .map_err(|e| io("invalidate a record", e))?;
        self.file.sync_data().map_err(|e| io("sync", e))?;
        self.offset = self.offset.min(at);
        Ok(())
    }

    /// Where the next record goes.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Starts over at the header: everything written so far is applied durably in redb.
    pub(crate) fn reset(&mut self) {
        self.offset = HEADER_LEN;
    }

    /// The WAL file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_be_bytes());
    h.update(&seq.to_be_bytes());
    h.update(payload);
    h.finalize()
}

fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
}

/// Reads records from the header on while they are intact and contiguous.
fn read_records(file: &File, len: u64) -> std::io::Result<Vec<WalRecord>> {
    let mut out: Vec<WalRecord> = Vec::new();
    let mut at = HEADER_LEN;
    let mut head = [0u8; RECORD_HEADER];
    while at + RECORD_HEADER as u64 <= len {
        file.read_exact_at(&mut head, at)?;
        let field = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if field(0) != RECORD_MAGIC {
            break;
        }
        let plen = field(4);
        let seq = u64::from_be_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let end = at + RECORD_HEADER as u64 + u64::from(plen);
        if end > len
            || usize::try_from(plen).unwrap_or(usize::MAX) > 2 * MAX_VALUE_BYTES + (64 << 20)
        {
            break;
        }
        if let Some(prev) = out.last()
            && prev.seq.checked_add(1) != Some(seq)
        {
            break;
        }
        let mut payload = vec![0u8; usize::try_from(plen).unwrap_or(0)];
        file.read_exact_at(&mut payload, at + RECORD_HEADER as u64)?;
        if crc(plen, seq, &payload) != field(16) {
            break;
        }
        out.push(WalRecord { seq, payload });
        at = end;
    }
    Ok(out)
}

/// Encodes a group's key-value operations and stamped event records.
pub(crate) fn encode_group<'a>(
    ops: impl Iterator<Item = &'a Op>,
    records: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = vec![PAYLOAD_VERSION];
    let mut body = Vec::new();
    let mut n_ops = 0u32;
    for op in ops {
        n_ops += 1;
        match op {
            Op::Put { table, key, value } => {
                body.push(1);
                put_bytes(&mut body, table.as_bytes());
                put_bytes(&mut body, key);
                put_bytes(&mut body, value);
            }
            Op::Delete { table, key } => {
                body.push(2);
                put_bytes(&mut body, table.as_bytes());
                put_bytes(&mut body, key);
            }
            Op::DeletePrefix { table, prefix } => {
                body.push(3);
                put_bytes(&mut body, table.as_bytes());
                put_bytes(&mut body, prefix);
            }
        }
    }
    out.extend_from_slice(&n_ops.to_be_bytes());
    out.extend_from_slice(&body);
    let mut n_events = 0u32;
    let mut events = Vec::new();
    for r in records {
        n_events += 1;
        put_bytes(&mut events, r);
    }
    out.extend_from_slice(&n_events.to_be_bytes());
    out.extend_from_slice(&events);
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

/// A group decoded from its WAL payload.
pub(crate) struct DecodedGroup {
    pub(crate) ops: Vec<Op>,
    pub(crate) records: Vec<Vec<u8>>,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("wal group truncated".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()?;
        Ok(self
            .take(usize::try_from(n).unwrap_or(usize::MAX))?
            .to_vec())
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError("bad table name".into()))
    }
}

/// Decodes a group payload written by [`encode_group`].
pub(crate) fn decode_group(payload: &[u8]) -> Result<DecodedGroup, DecodeError> {
    let mut c = Cursor(payload);
    if c.take(1)?[0] != PAYLOAD_VERSION {
        return Err(DecodeError("unsupported wal payload version".into()));
    }
    let n_ops = c.u32()?;
    let mut ops = Vec::new();
    for _ in 0..n_ops {
        let tag = c.take(1)?[0];
        let table = c.string()?;
        let op = match tag {
            1 => Op::Put {
                table,
                key: c.bytes()?,
                value: c.bytes()?,
            },
            2 => Op::Delete {
                table,
                key: c.bytes()?,
            },
            3 => Op::DeletePrefix {
                table,
                prefix: c.bytes()?,
            },
            t => return Err(DecodeError(format!("unknown wal op {t}"))),
        };
        ops.push(op);
    }
    let n_events = c.u32()?;
    let mut records = Vec::new();
    for _ in 0..n_events {
        records.push(c.bytes()?);
    }
    if !c.0.is_empty() {
        return Err(DecodeError("trailing bytes after a wal group".into()));
    }
    Ok(DecodedGroup { ops, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_payload_round_trip() {
        let ops = [
            Op::Put {
                table: "t".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::Delete {
                table: "t".into(),
                key: b"x".to_vec(),
            },
            Op::DeletePrefix {
                table: "u".into(),
                prefix: b"p/".to_vec(),
            },
        ];
        let records: [&[u8]; 2] = [b"one", b"two"];
        let payload = encode_group(ops.iter(), records.iter().copied());
        let g = decode_group(&payload).unwrap();
        assert_eq!(g.ops, ops);
        assert_eq!(g.records, vec![b"one".to_vec(), b"two".to_vec()]);
        for n in 0..payload.len() {
            assert!(decode_group(&payload[..n]).is_err());
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wal");
        {
            let (mut wal, recs) = Wal::open(path.clone(), 1 << 16).unwrap();
            assert!(recs.is_empty());
            for seq in 1..=5 {
                wal.append(seq, format!("payload {seq}").as_bytes())
                    .unwrap();
            }
        }
        // Tear the last record.
        let bytes = std::fs::read(&path).unwrap();
        let needle = b"payload 5";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"X", (at + 3) as u64).unwrap();
        let (mut wal, recs) = Wal::open(path.clone(), 1 << 16).unwrap();
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(recs[2].payload, b"payload 3");

        // After a reset, new records replace the old sequence from the start, and the
        // stale tail is not read as a continuation.
        wal.reset();
        wal.append(10, b"ten").unwrap();
        drop(wal);
        let (_, recs) = Wal::open(path, 1 << 16).unwrap();
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [10]);
    }

    #[test]
    fn a_foreign_file_or_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wal");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let err = Wal::open(path.clone(), 1 << 16).err().unwrap();
        assert!(err.to_string().contains("x.wal"), "{err}");
        let mut header = vec![0u8; 8192];
        header[..8].copy_from_slice(FILE_MAGIC);
        header[8..12].copy_from_slice(&9u32.to_be_bytes());
        std::fs::write(&path, header).unwrap();
        let err = Wal::open(path, 1 << 16).err().unwrap();
        assert!(
            matches!(err, StoreError::UnsupportedFormat { found: 9, .. }),
            "{err}"
        );
    }

    /// A record with the right magic and, when `good_crc`, the right CRC, around any
    /// length, sequence and payload.
    fn record(seq: u64, len: u32, payload: &[u8], good_crc: bool) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&RECORD_MAGIC.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(&seq.to_be_bytes());
        let c = if good_crc { crc(len, seq, payload) } else { 7 };
        r.extend_from_slice(&c.to_be_bytes());
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(payload);
        r
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            solo_types::fuzz::cases()
        ))]

        /// Any group payload decodes or is refused; a leading version byte gets it past
        /// the first check.
        #[test]
        fn arbitrary_group_payloads_never_panic(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            versioned in proptest::prelude::any::<bool>(),
        ) {
            if versioned {
                bytes.insert(0, PAYLOAD_VERSION);
            }
            let _ = decode_group(&bytes);
        }

        /// A log of records with arbitrary lengths, sequences, CRCs and payloads (and
        /// garbage after them) opens to the intact prefix, never a panic or a huge
        /// allocation, and every record read back decodes or is refused.
        #[test]
        fn arbitrary_logs_open_to_their_intact_prefix(
            records in proptest::collection::vec(
                (
                    0u64..6,
                    proptest::option::of(proptest::prelude::any::<u32>()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                    proptest::prelude::any::<bool>(),
                ),
                0..6,
            ),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.wal");
            let mut bytes = vec![0u8; usize::try_from(HEADER_LEN).unwrap()];
            bytes[..8].copy_from_slice(FILE_MAGIC);
            bytes[8..12].copy_from_slice(&WAL_VERSION.to_be_bytes());
            for (seq, len, payload, good) in &records {
                let len = len.unwrap_or(u32::try_from(payload.len()).unwrap());
                bytes.extend(record(*seq, len, payload, *good));
            }
            bytes.extend(&tail);
            std::fs::write(&path, &bytes).unwrap();
            if let Ok((_, recs)) = Wal::open(path, 8192) {
                proptest::prop_assert!(recs.len() <= records.len());
                for r in recs {
                    let _ = decode_group(&r.payload);
                }
            }
        }
    }
}
