//! Hibernation: a service idle for `services.hibernate_after_ms` whose code exports
//! `snapshot`/`restore` has its snapshot saved durably and its instance given back to
//! the sandbox's pool. Its actor then waits on the mailbox with no instance; the next
//! message wakes it (a new instance, `init`, `restore` of the saved state, then the
//! message), and messages that arrive meanwhile wait in the mailbox in order. A wake
//! that fails is a crash at start: the supervisor's restart policy applies, and the
//! restarted actor wakes from the same saved state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use solo_sandbox::{CallError, Crash, Instance, Level};
use solo_store::WriteBatch;
use solo_types::{CrashReport, ServiceState, metric_names as m};

use crate::actor;
use crate::core::Core;
use crate::entry::ServiceEntry;
use crate::records;
use crate::tunables::Key;

/// The largest snapshot a service hibernates with; a larger one keeps it awake (the
/// same cap as a reply).
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 4 << 20;

/// `service_hibernated` and `service_woke` events written per second, over all services.
const EVENTS_PER_SECOND: u32 = 5;

/// How long a service may idle before it hibernates, or `None` when none does.
pub(crate) fn idle_limit(k: &Core) -> Option<Duration> {
    match k.tunables.get(Key::HibernateAfterMs) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// What an attempt to hibernate came to.
pub(crate) enum Outcome {
    /// The state is saved: the instance may go.
    Asleep,
    /// It stays awake, for the reason in its log.
    Awake,
    /// The guest crashed taking its snapshot.
    Crashed(Crash),
}

/// Takes `instance`'s snapshot and saves it durably (with a sampled event), so the
/// instance can be dropped. A snapshot of nothing removes an older saved one, so a wake
/// never restores state the service no longer has.
pub(crate) async fn hibernate(
    k: &Core,
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
    idle: Duration,
) -> Outcome {
    let state = match actor::within_deadline(entry, instance.snapshot()).await {
        Ok(s) => s,
        Err(CallError::Crash(c)) => return Outcome::Crashed(c),
        Err(e) => {
            entry.logs.push(
                Level::Warn,
                &format!("stays awake: its snapshot for hibernation failed: {e}"),
            );
            return Outcome::Awake;
        }
    };
    let bytes = state.as_ref().map_or(0, Vec::len);
    if bytes > MAX_SNAPSHOT_BYTES {
        entry.logs.push(
            Level::Warn,
            &format!(
                "stays awake: its snapshot is {bytes} bytes, over the {MAX_SNAPSHOT_BYTES} a \
                 hibernated service may keep"
            ),
        );
        return Outcome::Awake;
    }
    let key = records::deployment_key(&entry.tenant, &entry.id);
    let mut batch = WriteBatch::new();
    let stage = || -> Result<(), solo_store::StoreError> {
        batch.put(records::HIBERNATED, key.clone(), Vec::new())?;
        match state {
            Some(s) => batch.put(records::SNAPSHOTS, key, s)?,
            None => batch.delete(records::SNAPSHOTS, key)?,
        };
        Ok(())
    };
    let staged = stage();
    if let Some(suppressed) = k.sleep_events.admit(Instant::now(), EVENTS_PER_SECOND) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        batch.event(records::hibernated(
            &entry.tenant,
            &entry.id,
            bytes,
            idle_ms,
            suppressed,
        ));
    }
    let saved = match staged {
        Ok(()) => k.store.commit(batch).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        tracing::warn!(tenant = %entry.tenant, service = %entry.id, error = %e, "could not save a hibernating service's state");
        entry.logs.push(
            Level::Warn,
            "stays awake: its state could not be saved for hibernation",
        );
        return Outcome::Awake;
    }
    *entry.final_snapshot.lock() = Some(bytes);
    metrics::counter!(m::HIBERNATIONS).increment(1);
    Outcome::Asleep
}

/// Marks `entry` hibernated once its instance is gone.
pub(crate) fn fell_asleep(entry: &ServiceEntry) {
    entry.asleep.store(true, Ordering::Release);
    *entry.interrupt.lock() = None;
    *entry.started.lock() = None;
    entry.memory_bytes.store(0, Ordering::Relaxed);
    entry.set_state(ServiceState::Hibernated);
}

/// Wakes a hibernated service: a new instance, `init`, then `restore` of its saved
/// state. On failure, the crash report of a crash at start.
pub(crate) async fn wake(
    k: &Core,
    entry: &Arc<ServiceEntry>,
) -> Result<Box<dyn Instance>, CrashReport> {
    let t0 = Instant::now();
    entry.set_state(ServiceState::Starting);
    let woken = async {
        let key = records::deployment_key(&entry.tenant, &entry.id);
        let state = k.store.get(records::SNAPSHOTS, &key).map_err(|e| {
            entry.report(
                "wake_failed",
                &format!("its saved state could not be read: {e}"),
                None,
            )
        })?;
        let mut instance = actor::start_instance(k, entry).await?;
        if let Some(state) = &state
            && instance.has_state()
        {
            actor::within_deadline(entry, instance.restore(state))
                .await
                .map_err(|e| match e {
                    CallError::Crash(c) => {
                        actor::note_limit(k, entry, &c);
                        entry.report(
                            c.kind.as_str(),
                            &format!("restore crashed on wake: {}", c.message),
                            c.backtrace,
                        )
                    }
                    other => entry.report(
                        "restore_failed",
                        &format!("restore refused the saved state on wake: {other}"),
                        None,
                    ),
                })?;
        }
        Ok((instance, state.as_ref().map(Vec::len)))
    };
    let (instance, bytes) = match woken.await {
        Ok(w) => w,
        Err(report) => {
            metrics::counter!(m::WAKES, "outcome" => "failed").increment(1);
            return Err(report);
        }
    };
    entry.asleep.store(false, Ordering::Release);
    *entry.final_snapshot.lock() = None;
    let took = t0.elapsed();
    metrics::counter!(m::WAKES, "outcome" => "ok").increment(1);
    metrics::histogram!(m::WAKE_SECONDS).record(took.as_secs_f64());
    if let Some(suppressed) = k.sleep_events.admit(Instant::now(), EVENTS_PER_SECOND) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let e = records::woke(&entry.tenant, &entry.id, us, bytes, suppressed);
        k.record_later(vec![e], "a wake");
    }
    Ok(instance)
}
