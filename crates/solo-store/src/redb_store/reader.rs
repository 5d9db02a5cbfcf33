//! Reads: paged queries over the chunks and the name index, and chain verification.

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};
use solo_types::Event;

use super::{CHUNKS, INDEX, Inner, NAMES, index_key, kind_name, service_name, tenant_name};
use crate::chunk::{ChunkView, decode_runs};
use crate::codec::{self, GENESIS_HASH, Stamp};
use crate::{BrokenLink, EventFilter, StoreError, VerifyReport};
use crate::{EventPage, EventQuery, Order};

/// Finds records by id, keeping the last chunk it loaded.
struct Fetcher<'a> {
    inner: &'a Inner,
    chunks: &'a ReadOnlyTable<u64, &'static [u8]>,
    current: Option<(u64, usize, redb::AccessGuard<'static, &'static [u8]>)>,
}

impl<'a> Fetcher<'a> {
    fn new(inner: &'a Inner, chunks: &'a ReadOnlyTable<u64, &'static [u8]>) -> Self {
        Self {
            inner,
            chunks,
            current: None,
        }
    }

    fn corrupted(&self, detail: String) -> StoreError {
        StoreError::Corrupted {
            path: self.inner.path.clone(),
            detail,
        }
    }

    fn decode_err(&self, id: u64, e: codec::DecodeError) -> StoreError {
        StoreError::Decode {
            path: self.inner.path.clone(),
            id,
            detail: e.0,
        }
    }

    /// Calls `f` with the record of event `id`.
    fn with_record<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&[u8]) -> Result<T, codec::DecodeError>,
    ) -> Result<T, StoreError> {
        let cached =
            matches!(&self.current, Some((first, n, _)) if *first <= id && id < first + *n as u64);
        if !cached {
            let (k, v) = self
                .chunks
                .range(..=id)
                .map_err(|e| self.inner.read_err(e))?
                .next_back()
                .ok_or_else(|| self.corrupted(format!("event {id} is missing from a dense log")))?
                .map_err(|e| self.inner.read_err(e))?;
            let first = k.value();
            let n = ChunkView::parse(v.value())
                .map_err(|e| self.decode_err(first, e))?
                .len();
            self.current = Some((first, n, v));
        }
        let Some((first, n, guard)) = &self.current else {
            return Err(self.corrupted(format!("event {id} is missing")));
        };
        if id >= first + *n as u64 {
            return Err(self.corrupted(format!("event {id} is missing from a dense log")));
        }
        let view = ChunkView::parse(guard.value()).map_err(|e| self.decode_err(id, e))?;
        let index = usize::try_from(id - first).unwrap_or(usize::MAX);
        let record = view
            .record(index)
            .ok_or_else(|| self.corrupted(format!("event {id} has a bad offset in its chunk")))?;
        f(record).map_err(|e| self.decode_err(id, e))
    }

    fn event(&mut self, id: u64) -> Result<Event, StoreError> {
        let event = self.with_record(id, codec::decode_record)?;
        if event.id != id {
            return Err(self.corrupted(format!("the record at event {id} claims id {}", event.id)));
        }
        Ok(event)
    }

    fn stamp(&mut self, id: u64) -> Result<Stamp, StoreError> {
        self.with_record(id, codec::decode_stamp)
    }
}

/// Accumulates one page.
struct Page<'f> {
    filter: &'f EventFilter,
    limit: usize,
    scanned: usize,
    page: EventPage,
}

impl Page<'_> {
    /// Considers event `id`; true when the page is complete.
    fn visit(&mut self, fetch: &mut Fetcher<'_>, id: u64) -> Result<bool, StoreError> {
        self.scanned += 1;
        let event = fetch.event(id)?;
        if self.filter.matches(&event) {
            self.page.events.push(event);
        }
        if self.page.events.len() >= self.limit || self.scanned >= EventQuery::SCAN_BUDGET {
            self.page.next_cursor = Some(id);
            return Ok(true);
        }
        Ok(false)
    }
}

impl Inner {
    pub(super) fn read_page(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.read_err(e))?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| self.read_err(e))?;
        let snapshot_last_id = match chunks.last().map_err(|e| self.read_err(e))? {
            None => 0,
            Some((k, v)) => {
                let first = k.value();
                let n = ChunkView::parse(v.value())
                    .map_err(|e| StoreError::Decode {
                        path: self.path.clone(),
                        id: first,
                        detail: e.0,
                    })?
                    .len();
                (first + n as u64).saturating_sub(1)
            }
        };
        let mut fetch = Fetcher::new(self, &chunks);
        let mut page = Page {
            filter: &q.filter,
            limit: match q.limit {
                0 => 100,
                n => n.min(EventQuery::MAX_LIMIT),
            },
            scanned: 0,
            page: EventPage {
                snapshot_last_id,
                ..EventPage::default()
            },
        };

        let mut lo = q.after_id.map_or(1, |a| a.saturating_add(1)).max(1);
        let mut hi = q
            .before_id
            .map_or(snapshot_last_id, |b| b.saturating_sub(1))
            .min(snapshot_last_id);
        // The first id whose ts is >= `ts` (snapshot_last_id + 1 if none).
        let mut first_at_or_after = |ts: i64| -> Result<u64, StoreError> {
            let (mut a, mut b) = (1u64, snapshot_last_id + 1);
            while a < b {
                let mid = a + (b - a) / 2;
                if fetch.stamp(mid)?.ts < ts {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            Ok(a)
        };
        if let Some(since) = q.since_ts {
            lo = lo.max(first_at_or_after(since)?);
        }
        if let Some(until) = q.until_ts {
            hi = hi.min(first_at_or_after(until)?.saturating_sub(1));
        }
        if lo > hi {
            return Ok(page.page);
        }

        let f = &q.filter;
        let name = match (&f.tenant, &f.service, &f.kind) {
            (Some(t), Some(s), _) => Some(service_name(t.as_str(), s.as_str())),
            (Some(t), None, _) => Some(tenant_name(t.as_str())),
            (None, _, Some(k)) if !k.ends_with('*') => Some(kind_name(k)),
            _ => None,
        };
        let desc = q.order == Order::Descending;
        let Some(name) = name else {
            if desc {
                for id in (lo..=hi).rev() {
                    if page.visit(&mut fetch, id)? {
                        break;
                    }
                }
            } else {
                for id in lo..=hi {
                    if page.visit(&mut fetch, id)? {
                        break;
                    }
                }
            }
            return Ok(page.page);
        };

        let names = txn.open_table(NAMES).map_err(|e| self.read_err(e))?;
        let Some(no) = names
            .get(name.as_str())
            .map_err(|e| self.read_err(e))?
            .map(|v| v.value())
        else {
            return Ok(page.page); // nothing was ever logged under this name
        };
        // The chunk holding `lo` may start before it.
        let start_chunk = chunks
            .range(..=lo)
            .map_err(|e| self.read_err(e))?
            .next_back()
            .transpose()
            .map_err(|e| self.read_err(e))?
            .map_or(lo, |(k, _)| k.value());
        let index = txn.open_table(INDEX).map_err(|e| self.read_err(e))?;
        let range = index
            .range(index_key(no, start_chunk)..=index_key(no, hi))
            .map_err(|e| self.read_err(e))?;
        let entries: Box<dyn Iterator<Item = _>> = if desc {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        'outer: for entry in entries {
            let (k, v) = entry.map_err(|e| self.read_err(e))?;
            let chunk_first = u64::try_from(k.value() & u128::from(u64::MAX)).unwrap_or(0);
            let mut positions = decode_runs(v.value()).map_err(|e| StoreError::Decode {
                path: self.path.clone(),
                id: chunk_first,
                detail: format!("index entry: {e}"),
            })?;
            if desc {
                positions.reverse();
            }
            for pos in positions {
                let id = chunk_first + u64::from(pos);
                if id < lo || id > hi {
                    continue;
                }
                if page.visit(&mut fetch, id)? {
                    break 'outer;
                }
            }
        }
        Ok(page.page)
    }

    pub(super) fn verify(&self) -> Result<VerifyReport, StoreError> {
        let txn = self.db()?.begin_read().map_err(|e| self.read_err(e))?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| self.read_err(e))?;
        let mut report = VerifyReport {
            checked: 0,
            last_id: 0,
            first_broken: None,
        };
        let mut prev = GENESIS_HASH;
        let mut expected = 1u64;
        'chunks: for entry in chunks.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = entry.map_err(|e| self.read_err(e))?;
            let first = k.value();
            let mut broken = |reason: String| {
                report.first_broken = Some(BrokenLink {
                    id: expected,
                    reason,
                });
            };
            if first != expected {
                broken(format!(
                    "event {expected} is missing (the next chunk starts at {first})"
                ));
                break;
            }
            let view = match ChunkView::parse(v.value()) {
                Ok(view) => view,
                Err(e) => {
                    broken(format!("its chunk cannot be decoded: {e}"));
                    break;
                }
            };
            for i in 0..view.len() {
                let id = expected;
                let mut broken = |reason: String| {
                    report.first_broken = Some(BrokenLink { id, reason });
                };
                let Some(record) = view.record(i) else {
                    broken("its record has a bad offset".into());
                    break 'chunks;
                };
                let checked = codec::split_record(record).and_then(|(canonical, hash)| {
                    Ok((canonical, hash, codec::decode_record(record)?))
                });
                match checked {
                    Err(e) => {
                        broken(format!("cannot be decoded: {e}"));
                        break 'chunks;
                    }
                    Ok((_, _, decoded)) if decoded.id != id => {
                        broken(format!("the record claims id {}", decoded.id));
                        break 'chunks;
                    }
                    Ok((canonical, hash, _)) => {
                        if codec::chain_hash(&prev, canonical) != hash {
                            broken(
                                "hash mismatch: the event or its predecessor was altered".into(),
                            );
                            break 'chunks;
                        }
                        prev = hash;
                    }
                }
                report.checked += 1;
                report.last_id = id;
                expected += 1;
            }
        }
        Ok(report)
    }
}
