//! Hibernation: a service idle for `services.hibernate_after_ms` whose code exports
//! `snapshot`/`restore` has its snapshot saved durably and its instance given back to
//! the sandbox's pool. Its actor then waits on the mailbox with no instance; the next
//! message wakes it (a new instance, `init`, `restore` of the saved state, then the
//! message), and messages that arrive meanwhile wait in the mailbox in order. The
//! kernel's `hibernation` component finds the idle ones (`sweep`) and asks each with an
//! `Envelope::Hibernate`, so an idle actor needs no timer (and a parked one no task)
//! to be put to sleep. A wake
//! that fails is a crash at start: the supervisor's restart policy applies, and the
//! restarted actor wakes from the same saved state.
//!
//! Beyond the pool: only awake services hold an instance slot. A start (deploy, wake,
//! restart) that finds every slot taken asks the least recently used idle awake
//! services to hibernate and tries again until its startup timeout; when none can, it
//! is refused with `no_instance_slot` (`RESOURCE_EXHAUSTED`), which is not a crash.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use solo_sandbox::{CallError, Crash, Instance, Level};
use solo_store::WriteBatch;
use solo_types::{CrashReport, ServiceState, metric_names as m};

use crate::actor;
use crate::core::Core;
use crate::entry::{Envelope, ServiceEntry};
use crate::mailbox::Full;
use crate::records;
use crate::tunables::Key;

/// The largest snapshot a service hibernates with; a larger one keeps it awake (the
/// same cap as a reply).
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 4 << 20;

/// `service_hibernated` and `service_woke` events written per second, over all services.
const EVENTS_PER_SECOND: u32 = 5;

/// The reason (and crash-report kind) of a start refused because every instance slot is
/// taken by a service that cannot hibernate now.
pub(crate) const NO_INSTANCE_SLOT: &str = "no_instance_slot";

/// Milliseconds on the process's monotonic clock, for `last_active`.
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn awake_key(entry: &Arc<ServiceEntry>) -> usize {
    Arc::as_ptr(entry) as usize
}

/// Counts `entry` among the awake (its instance holds a pool slot).
pub(crate) fn mark_awake(k: &Core, entry: &Arc<ServiceEntry>) {
    entry.last_active.store(now_ms(), Ordering::Relaxed);
    k.awake.insert(awake_key(entry), Arc::downgrade(entry));
}

/// `entry`'s instance is gone (asleep, crashed or stopped).
pub(crate) fn mark_gone(k: &Core, entry: &Arc<ServiceEntry>) {
    k.awake.remove(&awake_key(entry));
}

/// Runs `attempt` again while it fails for want of an instance slot (`exhausted`),
/// asking the least recently used to hibernate between tries, for at most `wait` from
/// the first such failure (what came before, such as the one-off compile of the
/// JavaScript runner, is no wait for room) or until nobody can; returns the last
/// outcome.
pub(crate) async fn with_room<T, E, F>(
    k: &Core,
    wait: Duration,
    exhausted: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut deadline = None;
    loop {
        match attempt().await {
            Err(e)
                if exhausted(&e)
                    && Instant::now() + Duration::from_millis(10)
                        < *deadline.get_or_insert_with(|| Instant::now() + wait)
                    && make_room(k).await =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => return other,
        }
    }
}

/// Why a start found no slot, for its refusal.
pub(crate) fn no_room(why: &str) -> String {
    format!("every instance slot is taken and no idle service could hibernate to make room ({why})")
}

/// Compiles `code`, making room in the pool when checking it needs a slot (a JavaScript
/// module is loaded once to check it), for at most the startup timeout.
pub(crate) async fn compile(
    k: &Core,
    format: solo_types::Format,
    code: Arc<[u8]>,
) -> Result<solo_sandbox::Artifact, solo_sandbox::CompileError> {
    let limit = Duration::from_millis(u64::from(k.config.service_defaults.startup_timeout_ms));
    let exhausted =
        |e: &solo_sandbox::CompileError| matches!(e, solo_sandbox::CompileError::Exhausted(_));
    with_room(k, limit, exhausted, || {
        k.sandbox.compile(format, Arc::clone(&code))
    })
    .await
}

/// The refusal for a failed compile: a full pool is `no_instance_slot`, not bad code.
pub(crate) fn compile_refused(e: solo_sandbox::CompileError) -> crate::error::KernelError {
    match e {
        solo_sandbox::CompileError::Exhausted(why) => crate::error::KernelError::Refused {
            code: solo_types::Code::ResourceExhausted,
            reason: NO_INSTANCE_SLOT,
            message: no_room(&why),
        },
        other => crate::error::KernelError::Compile(other),
    }
}

/// Asks the least recently used idle awake services (an eighth of those that could, at
/// least one) to hibernate, so a start finds a slot; false when none could. Room made
/// in the last few milliseconds counts as made, and so does a service already asked
/// (by the `hibernation` component, say) that has not yet taken the envelope (a parked
/// one is being resumed for it): the caller retries.
pub(crate) async fn make_room(k: &Core) -> bool {
    let mut last = k.making_room.lock().await;
    if last.is_some_and(|t| t.elapsed() < Duration::from_millis(5)) {
        return true;
    }
    let mut coming = false;
    let mut idle: Vec<(u64, Arc<ServiceEntry>)> = awake(k)
        .filter_map(|e| {
            if e.state() != ServiceState::Running || !e.can_hibernate() {
                return None;
            }
            if e.asked_to_sleep.load(Ordering::SeqCst) {
                coming = true;
                return None;
            }
            let idle = e.mailbox.is_empty();
            idle.then(|| (e.last_active.load(Ordering::Relaxed), e))
        })
        .collect();
    if idle.is_empty() {
        return coming;
    }
    let n = (idle.len() / 8).max(1);
    if n < idle.len() {
        idle.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        idle.truncate(n);
    }
    for (_, e) in idle {
        ask_to_sleep(k, &e);
    }
    *last = Some(Instant::now());
    true
}

/// Queues an `Envelope::Hibernate` for `e` unless one is queued already (the actor
/// clears `asked_to_sleep` when it takes it).
fn ask_to_sleep(k: &Core, e: &ServiceEntry) {
    if !e.asked_to_sleep.swap(true, Ordering::SeqCst)
        && post(k, e, Box::new(Envelope::Hibernate)).is_err()
    {
        e.asked_to_sleep.store(false, Ordering::SeqCst);
    }
}

/// How long a service may idle before it hibernates, or `None` when none does.
pub(crate) fn idle_limit(k: &Core) -> Option<Duration> {
    unless_zero(k.tunables.get(Key::HibernateAfterMs))
}

/// A period in milliseconds that 0 turns off.
pub(crate) fn unless_zero(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// The awake services (those whose entry is still alive).
pub(crate) fn awake(k: &Core) -> impl Iterator<Item = Arc<ServiceEntry>> + '_ {
    k.awake.iter().filter_map(|r| r.value().upgrade())
}

/// How often the `hibernation` component looks for idle services: a quarter of the
/// idle limit, between 10 ms and 1 s.
pub(crate) fn sweep_every(k: &Core) -> Duration {
    idle_limit(k).map_or(Duration::from_secs(1), |l| {
        (l / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    })
}

/// The `hibernation` component's look: each awake service idle past the limit is asked
/// to hibernate (a parked one is resumed for it); one whose code cannot carry its state
/// says once in its log why it stays awake.
pub(crate) fn sweep(k: &Core) {
    let Some(limit) = idle_limit(k) else {
        return;
    };
    let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms();
    let idle: Vec<Arc<ServiceEntry>> = awake(k)
        .filter(|e| {
            e.state() == ServiceState::Running
                && !e.stay_awake.load(Ordering::Relaxed)
                && now.saturating_sub(e.last_active.load(Ordering::Relaxed)) >= limit
                && e.mailbox.is_empty()
        })
        .collect();
    for e in idle {
        if e.can_hibernate() {
            ask_to_sleep(k, &e);
        } else {
            e.stay_awake.store(true, Ordering::Relaxed);
            e.logs.push(
                Level::Info,
                "stays awake when idle: its code exports no snapshot/restore, so it could \
                 not wake with its state",
            );
        }
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
    let state = match take_snapshot(entry, instance, "stays awake", "hibernation").await {
        Ok(s) => s,
        Err(outcome) => return outcome,
    };
    let bytes = state.as_ref().map_or(0, Vec::len);
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

/// `instance`'s snapshot, within the service's message deadline and size cap; on
/// failure, what became of the attempt (its log says why, starting with `then`).
async fn take_snapshot(
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
    then: &str,
    purpose: &str,
) -> Result<Option<Vec<u8>>, Outcome> {
    let state = match actor::within_deadline(entry, instance.snapshot()).await {
        Ok(s) => s,
        Err(CallError::Crash(c)) => return Err(Outcome::Crashed(c)),
        Err(e) => {
            entry.logs.push(
                Level::Warn,
                &format!("{then}: its snapshot for {purpose} failed: {e}"),
            );
            return Err(Outcome::Awake);
        }
    };
    let bytes = state.as_ref().map_or(0, Vec::len);
    if bytes > MAX_SNAPSHOT_BYTES {
        entry.logs.push(
            Level::Warn,
            &format!(
                "{then}: its snapshot is {bytes} bytes, over the {MAX_SNAPSHOT_BYTES} a \
                 service may keep"
            ),
        );
        return Err(Outcome::Awake);
    }
    Ok(state)
}

/// How long after a message an awake service's state is saved, or `None` when it is
/// saved only when it hibernates or stops.
pub(crate) fn checkpoint_every(k: &Core) -> Option<Duration> {
    unless_zero(k.tunables.get(Key::CheckpointEveryMs))
}

/// Saves an awake service's snapshot durably without putting it to sleep, so that the
/// node's recovery after a `kill -9` (or a standby taking over) restores it rather than
/// an older one. `Crashed` when the guest crashed taking it; `Awake` otherwise (a
/// failure to take or save it is in the service's log, and the last saved one stays).
pub(crate) async fn checkpoint(
    k: &Core,
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
) -> Outcome {
    let state = match take_snapshot(entry, instance, "no checkpoint", "a checkpoint").await {
        Ok(s) => s,
        Err(outcome) => return outcome,
    };
    let key = records::deployment_key(&entry.tenant, &entry.id);
    let mut batch = WriteBatch::new();
    let staged = match state {
        Some(s) => batch.put(records::SNAPSHOTS, key, s),
        None => batch.delete(records::SNAPSHOTS, key),
    };
    let saved = match staged {
        Ok(_) => k.store.commit(batch).await.map(drop),
        Err(e) => Err(e),
    };
    match saved {
        Ok(()) => metrics::counter!(m::CHECKPOINTS).increment(1),
        Err(e) => {
            tracing::warn!(tenant = %entry.tenant, service = %entry.id, error = %e, "could not save a service's checkpoint");
            entry
                .logs
                .push(Level::Warn, "no checkpoint: its state could not be saved");
        }
    }
    Outcome::Awake
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

/// Refuses a message that could not wake its service (no instance slot): a call and a
/// swap are answered, a cast is dropped with a log line.
pub(crate) fn refuse_for_now(entry: &ServiceEntry, envelope: Envelope, why: &str) {
    // Asleep again before the answer, so a caller that then asks sees it.
    entry.set_state(ServiceState::Hibernated);
    let why = format!("service {} could not wake: {why}", entry.id);
    match envelope {
        Envelope::Call { reply, .. } => {
            let _ = reply.send(Err(CallError::Unavailable(why)));
        }
        Envelope::Swap { reply, .. } => {
            let _ = reply.send(Err(crate::entry::SwapRefused {
                stage: "start",
                error: crate::error::KernelError::Refused {
                    code: solo_types::Code::ResourceExhausted,
                    reason: NO_INSTANCE_SLOT,
                    message: why,
                },
            }));
        }
        Envelope::Cast { .. } => entry
            .logs
            .push(Level::Warn, &format!("cast dropped: {why}")),
        Envelope::Hibernate => {}
    }
}

/// Queues `envelope` for `entry`, resuming its actor if it is dormant.
pub(crate) fn post(k: &Core, entry: &ServiceEntry, envelope: Box<Envelope>) -> Result<(), Full> {
    entry.mailbox.try_send(envelope)?;
    resume_if_dormant(k, entry);
    Ok(())
}

/// Queues `envelope` for `entry`, waiting for room, resuming its actor if dormant.
pub(crate) async fn post_waiting(k: &Core, entry: &ServiceEntry, envelope: Box<Envelope>) {
    entry.mailbox.send(envelope).await;
    resume_if_dormant(k, entry);
}

/// After queueing: a dormant actor (asleep, no task) gets its next incarnation. Exactly
/// one sender sees the mark; an actor that finds the envelope first clears it, and a
/// resume that arrives while it runs only starts it again if it goes dormant.
fn resume_if_dormant(k: &Core, entry: &ServiceEntry) {
    if entry.dormant.swap(false, Ordering::SeqCst)
        && let Some(t) = k.tenants.get(&entry.tenant)
    {
        t.supervisor.resume_child(entry.id.as_str());
    }
}
