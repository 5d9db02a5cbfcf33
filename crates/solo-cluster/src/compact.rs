//! Log compaction: a node's view copied to the cluster's object store, the log's entries
//! before that copy purged, and a node whose view is older than the log's first entry
//! started from the copy instead.
//!
//! The copy is the view's own store file, taken by its writer between two commits (so it
//! holds the applier's marker: the sequence from which it needs the log). It goes to the
//! object store bucket `<stream>_VIEW` (as replicated as the log) as object `view`,
//! replacing the one before, with that sequence in its metadata; only then are the
//! entries before it purged. A purge never passes the lowest sequence a live node has
//! applied, and an applier that meets a gap in the log (a purge past it, or any hole)
//! stops rather than skip entries: its node must start again from the copy.

use std::collections::HashMap;
use std::path::Path;

use async_nats::jetstream::{self, object_store, stream::StorageType};
use solo_store::{Kv, RedbStore, StoreOptions};

use crate::check::ClusterError;

/// The object holding the latest copy of a view.
const OBJECT: &str = "view";
/// The copy's metadata: the log sequence from which (at least) it needs the log.
const RESUME_KEY: &str = "resume";

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// The log's first entry now: everything before it was purged.
    pub first_kept: u64,
    /// The size of the view's copy in bytes.
    pub bytes: u64,
}

/// The object store bucket of the view's copies for log stream `stream`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_VIEW")
}

/// The bucket, created on first use.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, String> {
    let name = bucket_name(stream);
    if let Ok(b) = js.get_object_store(&name).await {
        return Ok(b);
    }
    js.create_object_store(object_store::Config {
        bucket: name,
        description: Some("Solo: the latest copy of a node's view of the log".into()),
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("the object store of view copies: {e}"))
}

/// Uploads the view's copy at `file`, which needs the log from `resume`, unless the
/// bucket already holds a newer one (a node that lost its lease compacting late).
pub(crate) async fn upload(
    bucket: &object_store::ObjectStore,
    file: &Path,
    resume: u64,
) -> Result<(), String> {
    if let Ok(info) = bucket.info(OBJECT).await
        && let Some(held) = info
            .metadata
            .get(RESUME_KEY)
            .and_then(|v| v.parse::<u64>().ok())
        && held > resume
    {
        return Err(format!(
            "the object store holds a newer copy (from entry {held}) than this node's \
             (from entry {resume})"
        ));
    }
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("open {}: {e}", file.display()))?;
    let meta = object_store::ObjectMetadata {
        name: OBJECT.into(),
        description: Some("a copy of a Solo node's view of the log".into()),
        metadata: HashMap::from([(RESUME_KEY.to_string(), resume.to_string())]),
        ..Default::default()
    };
    bucket
        .put(meta, &mut f)
        .await
        .map(|_| ())
        .map_err(|e| format!("upload the view's copy: {e}"))
}

/// Replaces the view at `view_path` with the latest copy from the object store, after
/// checking that the copy opens as a store and needs nothing the log no longer holds
/// (`first`, the log's first entry). The old view stays untouched until then; the swap
/// (the old WAL removed, the copy renamed over the file) leaves, at any crash, either
/// the old view at its last checkpoint or the copy, both consistent with their markers.
pub(crate) async fn install(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
    view_path: &Path,
    first: u64,
    retry_for: std::time::Duration,
) -> Result<(), ClusterError> {
    let err = |detail: String| ClusterError::Stream {
        stream: stream.to_string(),
        detail: format!(
            "the log was compacted (it starts at entry {first}) past this node's view, and \
             its latest copy cannot be used: {detail}"
        ),
    };
    let next = view_path.with_extension("next.redb");
    // Fetching is retried a while (a NATS server restarting, an election): only what
    // the copy holds is final.
    let deadline = tokio::time::Instant::now() + retry_for;
    loop {
        match fetch(js, stream, replicas, &next).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "the latest copy of a view cannot be fetched yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(err(e)),
        }
    }
    // A WAL left beside it by an earlier attempt belongs to another file.
    let _ = std::fs::remove_file(RedbStore::wal_path(&next));
    let needs = match marker_of(&next) {
        Ok(resume) => resume,
        Err(e) => {
            let _ = std::fs::remove_file(&next);
            return Err(err(format!("it does not open as a view: {e}")));
        }
    };
    let _ = std::fs::remove_file(RedbStore::wal_path(&next));
    if needs < first {
        let _ = std::fs::remove_file(&next);
        return Err(err(format!(
            "it needs the log from entry {needs}, which was purged; the active node \
             writes a newer copy at its next compaction"
        )));
    }
    let io = |op: &str, e: std::io::Error| err(format!("{op}: {e}"));
    match std::fs::remove_file(RedbStore::wal_path(view_path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove the old WAL", e));
        }
        _ => {}
    }
    std::fs::rename(&next, view_path).map_err(|e| io("put the copy in place", e))?;
    if let Some(dir) = view_path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the view's directory", e))?;
    }
    tracing::info!(
        first,
        needs,
        "this node's view starts from the latest copy in the object store"
    );
    Ok(())
}

/// Fetches the latest copy to `to`, synced.
async fn fetch(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
    to: &Path,
) -> Result<(), String> {
    let bucket = bucket(js, stream, replicas).await?;
    let mut object = bucket
        .get(OBJECT)
        .await
        .map_err(|e| format!("fetch it: {e}"))?;
    let mut f = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("create {}: {e}", to.display()))?;
    // The client checks the object's digest as it reads to the end.
    tokio::io::copy(&mut object, &mut f)
        .await
        .map_err(|e| format!("fetch it: {e}"))?;
    f.sync_all()
        .await
        .map_err(|e| format!("sync {}: {e}", to.display()))
}

/// The sequence from which the view in the store file at `path` needs the log.
fn marker_of(path: &Path) -> Result<u64, solo_store::StoreError> {
    let store = RedbStore::open_with(
        path,
        StoreOptions {
            cache_bytes: 1 << 20,
            wal_bytes: 64 << 10,
            reserve_bytes: 0,
            sync_commits: false,
            ..StoreOptions::default()
        },
    )?;
    let marker = crate::store::read_marker(store.snapshot()?.as_ref())?;
    Ok(marker.1)
}
