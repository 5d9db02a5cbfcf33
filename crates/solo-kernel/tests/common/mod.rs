//! What the kernel's integration tests share: a real store in a directory, a real
//! sandbox, ids, and queries of the event log by kind.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use solo_kernel::{Caller, Kernel};
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{EventFilter, EventQuery, RedbStore, StoreOptions};
use solo_types::{Event, ServiceId, TenantId};

/// One sandbox per test binary (its pool is large); the first call's size wins.
pub fn sandbox(max_instances: u32) -> Arc<Sandbox> {
    static S: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(S.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            max_instances,
            ..SandboxConfig::default()
        })
        .unwrap()
    }))
}

/// The store `solo server` keeps in `dir`, with a small write-ahead log.
pub fn store(dir: &Path) -> Arc<RedbStore> {
    Arc::new(
        RedbStore::open_with(
            dir.join("solo.redb"),
            StoreOptions {
                wal_bytes: 4 << 20,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    )
}

pub fn tenant(s: &str) -> Caller {
    Caller::tenant(TenantId::new(s).unwrap())
}

pub fn sid(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap()
}

/// The events of one kind that `caller` may see, oldest first.
pub fn events_of(k: &Kernel, caller: &Caller, kind: &str) -> Vec<Event> {
    k.events(
        caller,
        EventQuery {
            filter: EventFilter {
                kind: Some(kind.into()),
                ..EventFilter::default()
            },
            limit: 10_000,
            ..EventQuery::default()
        },
    )
    .unwrap()
    .events
}
