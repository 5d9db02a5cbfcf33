//! Leaving the failed state without a restart.
//!
//! A failed write (a full disk, an I/O error) puts the writer in the failed state: the
//! group that hit it is answered with the error, every later write is refused with
//! [`StoreError::Unavailable`], and the cause is what [`crate::Kv::fault`] reports. Reads
//! go on while redb can still read. A recovery, asked for by [`crate::Kv::recover`] (the
//! kernel's `event_store` component asks with backoff), then:
//!
//! 1. unwrites the failed group's WAL record, if it had one, because its callers were
//!    told it failed;
//! 2. if redb was hit (it fails every later operation, reads included, after an I/O
//!    error), gives up the space reserve, closes redb and opens it again exactly as a
//!    start does: redb returns to its last durable commit and the WAL's groups since are
//!    replayed, after which the log must end at the last acknowledged event, hash
//!    included;
//! 3. takes the space reserve back, which succeeds only once the disk has room again.
//!
//! A step that fails leaves the store failed and is tried again at the next recovery;
//! nothing acknowledged is touched by any step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use solo_types::metric_names as m;

use super::writer::Writer;
use crate::StoreError;
use crate::wal::Wal;

/// What a failed write left to repair (the failure itself, in words, is in the fault
/// slot readers see).
pub(crate) struct Failed {
    /// The failed group's WAL record, still to be unwritten.
    wal_record: Option<u64>,
    /// redb saw the failure and must be reopened.
    db_broken: bool,
}

impl Writer {
    /// Enters (or deepens) the failed state after `e`.
    pub(super) fn fail_store(&mut self, e: &StoreError, wal_record: Option<u64>, db_broken: bool) {
        metrics::counter!(m::STORE_COMMIT_FAILURES).increment(1);
        match &mut self.failed {
            Some(f) => {
                f.wal_record = f.wal_record.or(wal_record);
                f.db_broken |= db_broken;
            }
            None => {
                tracing::error!(error = %e, "a store write failed; writes are refused until the store recovers");
                metrics::gauge!(m::STORE_AVAILABLE).set(0.0);
                *self.fault.lock() = Some(e.to_string());
                self.failed = Some(Failed {
                    wal_record,
                    db_broken,
                });
            }
        }
    }

    /// What the callers of the group that hit `e` are told: a full disk as such,
    /// anything else as the store being unavailable, naming the cause.
    pub(super) fn refusal(&self, e: &StoreError) -> StoreError {
        match e {
            StoreError::NoSpace { .. } => e.clone(),
            _ => StoreError::Unavailable {
                path: self.path.clone(),
                cause: e.to_string(),
            },
        }
    }

    /// The refusal a write meets while the store is failed.
    pub(super) fn unavailable(&self) -> StoreError {
        StoreError::Unavailable {
            path: self.path.clone(),
            cause: self.fault.lock().clone().unwrap_or_default(),
        }
    }

    /// One recovery attempt; `Ok` when the store takes writes again.
    pub(super) fn recover(&mut self) -> Result<(), StoreError> {
        let Some(f) = &self.failed else {
            return Ok(());
        };
        let (wal_record, db_broken) = (f.wal_record, f.db_broken);
        if let Some(at) = wal_record {
            self.wal.invalidate(at)?;
            if let Some(f) = &mut self.failed {
                f.wal_record = None;
            }
        }
        if db_broken {
            self.reopen_db()?;
            if let Some(f) = &mut self.failed {
                f.db_broken = false;
            }
        }
        self.reserve.ensure()?;
        self.failed = None;
        *self.fault.lock() = None;
        metrics::gauge!(m::STORE_AVAILABLE).set(1.0);
        tracing::info!(path = %self.path.display(), "the store recovered and takes writes again");
        Ok(())
    }

    /// Closes redb and opens it again as a start does, checking that the log still ends
    /// at the last acknowledged event.
    fn reopen_db(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let Some(reopen) = self.reopen.as_mut() else {
            return Err(StoreError::Unavailable {
                path,
                cause: "this store is over a storage backend it cannot reopen; restart solo".into(),
            });
        };
        // The reserve's space lets redb's recovery and the replay write on a full disk.
        self.reserve.release();
        *self.slot.write() = None;
        if let Some(old) = self.db.take() {
            // A reader in the middle of a query holds the database a moment longer.
            let until = Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(&old) > 1 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let db = Arc::new(reopen()?);
        let mut init = super::init_file(&path, &db)?;
        let (wal, records) = Wal::open(Wal::path_for(&path), self.wal_bytes)?;
        let wal = wal.syncing(self.sync_commits);
        super::replay(&db, &path, wal.path(), &mut init, records)?;
        if init.chain.next_id != self.chain.next_id || init.chain.last_hash != self.chain.last_hash
        {
            return Err(StoreError::Corrupted {
                path,
                detail: format!(
                    "reopened, the log ends at event {} but event {} was acknowledged",
                    init.chain.next_id - 1,
                    self.chain.next_id - 1
                ),
            });
        }
        self.wal = wal;
        self.names = init.names;
        self.next_seq = init.applied_seq + 1;
        self.last_checkpoint = Instant::now();
        *self.slot.write() = Some(Arc::clone(&db));
        self.db = Some(db);
        Ok(())
    }
}
