//! Parking: an awake service idle for `service_defaults.park_after_ms` gives up its
//! actor's task and leaves its instance in the entry's `ready` (still `running`, still
//! holding its pool slot and its state in memory); whoever queues the next envelope
//! resumes the actor with that instance (`hibernate::post`). A parked service has no
//! task for a kill or the kernel's shutdown to stop, so they stop its instance here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use solo_sandbox::Instance;
use solo_supervisor::ChildCtx;

use crate::actor;
use crate::core::Core;
use crate::entry::ServiceEntry;
use crate::hibernate;

/// Parks an idle awake actor: its instance goes to the entry's `ready` and, with
/// nothing queued, the actor goes dormant (`None`: no task until a sender resumes it).
/// Whoever takes the instance out of `ready` owns it: the actor itself when an envelope
/// came in meanwhile (`Some`), or a kill or the kernel's shutdown once no task runs.
pub(crate) fn park(
    entry: &ServiceEntry,
    ctx: &ChildCtx,
    mut instance: Box<dyn Instance>,
) -> Option<Box<dyn Instance>> {
    if ctx.shutdown.is_cancelled() {
        return Some(instance); // serve stops it gracefully
    }
    // What only a running call needs (its fiber stack's pages) goes back to the system.
    instance.release_idle_memory();
    *entry.ready.lock() = Some(instance);
    entry.parked.store(true, Ordering::SeqCst);
    // Marked before the last look, as for a hibernated actor.
    entry.dormant.store(true, Ordering::SeqCst);
    if entry.mailbox.is_empty() && !ctx.shutdown.is_cancelled() {
        return None;
    }
    // A sender that saw the mark asked the supervisor to resume it; the supervisor
    // starts it again at once if it goes dormant later.
    entry.dormant.store(false, Ordering::SeqCst);
    take_parked(entry)
}

/// The instance a parked actor left in `ready`, taken by whoever stops or resumes it.
pub(crate) fn take_parked(entry: &ServiceEntry) -> Option<Box<dyn Instance>> {
    if !entry.parked.swap(false, Ordering::SeqCst) {
        return None;
    }
    entry.ready.lock().take()
}

/// Stops a parked service's instance (its actor holds no task): a graceful stop takes
/// its snapshot first, as an actor's would.
pub(crate) async fn stop_parked(k: &Core, entry: &Arc<ServiceEntry>, graceful: bool) {
    let Some(mut instance) = take_parked(entry) else {
        return;
    };
    if graceful {
        actor::stop_gracefully(&k.me, entry, instance.as_mut()).await;
    }
    drop(instance);
    hibernate::mark_gone(k, entry);
}

/// Stops the tree (each service's actor takes its snapshot, tenants first), then the
/// parked services, which have no task to stop: once no actor runs, their instances are
/// the kernel's to stop gracefully, all at once.
pub(crate) async fn shutdown(k: &Core) {
    if let Some(t) = k.tree.get() {
        t.shutdown().await;
    }
    let parked: Vec<Arc<ServiceEntry>> = hibernate::awake(k)
        .filter(|e| e.parked.load(Ordering::SeqCst))
        .collect();
    futures::future::join_all(parked.iter().map(|e| stop_parked(k, e, true))).await;
}

/// How long an awake service idles before its actor parks, or `None` when none does.
pub(crate) fn park_after(k: &Core) -> Option<Duration> {
    hibernate::unless_zero(k.config.service_defaults.park_after_ms)
}
