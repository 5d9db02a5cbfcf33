//! A service's actor: a child of its tenant's supervisor that starts (or takes) an
//! instance and handles one message at a time until it is stopped or the instance
//! crashes; between two messages it applies hot swaps (`swap_apply.rs`) and hibernates
//! when idle (`hibernate.rs`), sleeping with no instance until a message. Also the start of an
//! instance (within the startup timeout), the supervisor's child spec for a service, and
//! the recording of a service's crashes and what its supervisor decided.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use solo_sandbox::{Artifact, CallError, Crash, Instance, InstantiateError, Level};
use solo_store::WriteBatch;
use solo_supervisor::{ChildCtx, ChildSpec, Exit, Intensity, RestartType, SupervisorEvent};
use solo_types::{
    CrashReport, RestartPolicy, ServiceId, ServiceState, TenantId, metric_names as m,
};
use tokio::sync::oneshot;

use crate::core::Core;
use crate::entry::{Envelope, ServiceEntry};
use crate::error::KernelError;
use crate::error::Stage;
use crate::hibernate;
use crate::host;
use crate::park;
use crate::records;
use crate::swap_apply::{Rollback, apply_swap, roll_back, swap_succeeded};
use crate::tunables::Key;

/// One incarnation of a service's actor: start (or take, or leave asleep) an instance,
/// then handle messages until the supervisor stops it or the instance crashes; while it
/// idles past the hibernation limit it sleeps with no instance, and the next message
/// wakes it.
pub(crate) async fn run(kernel: Weak<Core>, entry: Arc<ServiceEntry>, ctx: ChildCtx) -> Exit {
    let ready = entry.ready.lock().take();
    // Resumed after parking: the instance is the one it parked with, still counted awake.
    let mut resumed = ready.is_some() && entry.parked.swap(false, Ordering::AcqRel);
    let mut instance = match ready {
        Some(i) => Some(i),
        // Hibernated (or recovered asleep): the next message wakes it.
        None if entry.asleep.load(Ordering::Acquire) => None,
        None => {
            let Some(k) = kernel.upgrade() else {
                return Exit::Shutdown;
            };
            entry.set_state(ServiceState::Starting);
            match Box::pin(start_instance(&k, &entry)).await {
                Ok(i) => Some(i),
                Err(report) => {
                    let why = format!("{}: {}", report.kind, report.message);
                    entry.note_crash(report);
                    return Exit::Crashed(why);
                }
            }
        }
    };
    let mut first = None;
    loop {
        if let Some(awake) = instance.take() {
            // Boxed, as is the wake below: a sleeping actor's future holds neither.
            let served = Box::pin(serve(&kernel, &entry, &ctx, awake, first.take(), resumed));
            crate::entry::SERVE_FUTURE_BYTES
                .store(std::mem::size_of_val(&*served), Ordering::Relaxed);
            if !resumed && let Some(k) = kernel.upgrade() {
                hibernate::mark_awake(&k, &entry);
            }
            resumed = false;
            let served = served.await;
            // A parked instance still holds its slot: only the others leave the awake.
            if !matches!(served, Served::Parked(_))
                && let Some(k) = kernel.upgrade()
            {
                hibernate::mark_gone(&k, &entry);
            }
            match served {
                Served::Exit(exit) => return exit,
                Served::Asleep => hibernate::fell_asleep(&entry),
                Served::Parked(parked) => match park::park(&entry, &ctx, parked) {
                    Some(back) => {
                        (instance, resumed) = (Some(back), true);
                        continue;
                    }
                    None => return Exit::Dormant,
                },
            }
        } else {
            entry.set_state(ServiceState::Hibernated);
        }
        // Asleep: a request to hibernate is already met, and with nothing queued the
        // actor goes dormant (no task) until a sender resumes it.
        let envelope = loop {
            if ctx.shutdown.is_cancelled() {
                return Exit::Shutdown;
            }
            match entry.mailbox.try_recv() {
                Some(env) if matches!(*env, Envelope::Hibernate) => {
                    entry.asked_to_sleep.store(false, Ordering::SeqCst);
                }
                Some(env) => break env,
                None => {
                    // Marked before the last look, so a sender that queues after it
                    // sees the mark and resumes the actor.
                    entry.dormant.store(true, Ordering::SeqCst);
                    if entry.mailbox.is_empty() {
                        return Exit::Dormant;
                    }
                    entry.dormant.store(false, Ordering::SeqCst);
                }
            }
        };
        let Some(k) = kernel.upgrade() else {
            return Exit::Shutdown;
        };
        match Box::pin(hibernate::wake(&k, &entry)).await {
            Ok(i) => {
                instance = Some(i);
                first = Some(envelope);
            }
            // Every slot busy: this message is refused, and the service sleeps on.
            Err(report) if report.kind == hibernate::NO_INSTANCE_SLOT => {
                hibernate::refuse_for_now(&entry, *envelope, &report.message);
            }
            Err(report) => {
                let why = format!("{}: {}", report.kind, report.message);
                let crash = Crash {
                    kind: solo_sandbox::CrashKind::Internal,
                    message: why.clone(),
                    backtrace: None,
                    observed: None,
                };
                entry.note_crash(report);
                if let Envelope::Call { reply, .. } = *envelope {
                    answer_crashed(Some((reply, crash)));
                }
                return Exit::Crashed(why);
            }
        }
    }
}

/// How [`serve`] ended.
enum Served {
    Exit(Exit),
    /// Hibernated: the state is saved and the instance gone.
    Asleep,
    /// Idle past `park_after_ms` with nothing pending: the actor may give up its task.
    Parked(Box<dyn Instance>),
}

/// Handles messages with `instance` (`first` before any in the mailbox) until the
/// supervisor stops the actor, the instance crashes, it is asked to hibernate, or it
/// idles long enough to park (`resumed`: it did before, and is running already).
async fn serve(
    kernel: &Weak<Core>,
    entry: &Arc<ServiceEntry>,
    ctx: &ChildCtx,
    mut instance: Box<dyn Instance>,
    mut first: Option<Box<Envelope>>,
    resumed: bool,
) -> Served {
    if !resumed {
        *entry.interrupt.lock() = Some(instance.interrupt_handle());
        *entry.started.lock() = Some(Instant::now());
        entry
            .memory_bytes
            .store(instance.stats().memory_bytes, Ordering::Relaxed);
        entry.set_state(ServiceState::Running);
    }

    // Boxed: a service outside a rollback window holds 8 bytes for it, not 150.
    let mut pending: Option<Box<Rollback>> = None;
    let mut last_message = Instant::now();
    // When it first handled a message since its state was last saved: a checkpoint is
    // due `services.checkpoint_every_ms` after it.
    let mut dirty_since: Option<Instant> = None;
    loop {
        // Hibernation is the kernel's `hibernation` component's to ask for (an
        // `Envelope::Hibernate`), so that a parked actor needs no timer of its own.
        let (park_at, checkpoint_at) = match (pending.is_none(), kernel.upgrade()) {
            (true, Some(k)) => {
                let checkpoint_at =
                    dirty_since.and_then(|t| hibernate::checkpoint_every(&k).map(|d| t + d));
                // Not while a checkpoint is due: it is taken first, then the actor parks.
                let park_at = park::park_after(&k)
                    .filter(|_| checkpoint_at.is_none())
                    .map(|d| last_message + d);
                (park_at, checkpoint_at)
            }
            _ => (None, None),
        };
        // One timer (an idle service holds one): the end of a swap's rollback window,
        // or else the earlier of the next checkpoint and parking.
        let timer = match &pending {
            Some(rb) => Some(rb.deadline),
            None => match (park_at, checkpoint_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        let envelope = match first.take() {
            Some(e) => e,
            None => tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => {
                    if let Some(rb) = pending.take() {
                        Box::pin(swap_succeeded(kernel, entry, *rb)).await;
                    }
                    Box::pin(stop_gracefully(kernel, entry, instance.as_mut())).await;
                    return Served::Exit(Exit::Shutdown);
                }
                // A message that is already there goes first: before sleeping, and
                // inside the rollback window it arrived in.
                env = entry.mailbox.recv() => env,
                () = until(timer) => {
                    if let Some(rb) = pending.take() {
                        Box::pin(swap_succeeded(kernel, entry, *rb)).await;
                        continue;
                    }
                    let Some(k) = kernel.upgrade() else { continue };
                    if checkpoint_at.is_some_and(|t| t <= Instant::now()) {
                        dirty_since = None;
                        let saved = Box::pin(hibernate::checkpoint(&k, entry, instance.as_mut()));
                        if let hibernate::Outcome::Crashed(crash) = saved.await {
                            return crashed_saving(&k, entry, &crash);
                        }
                        continue;
                    }
                    if park_at.is_some_and(|t| t <= Instant::now()) {
                        return Served::Parked(instance);
                    }
                    continue;
                }
            },
        };
        // Asked to make room in the pool: hibernate now if it can.
        if matches!(*envelope, Envelope::Hibernate) {
            entry.asked_to_sleep.store(false, Ordering::SeqCst);
            let Some(k) = kernel.upgrade() else { continue };
            if pending.is_some() || !instance.has_state() {
                continue;
            }
            let since =
                hibernate::now_ms().saturating_sub(entry.last_active.load(Ordering::Relaxed));
            match Box::pin(try_sleep(
                &k,
                entry,
                instance.as_mut(),
                Duration::from_millis(since),
            ))
            .await
            {
                Some(served) => return served,
                None => {
                    // Not again until its next message.
                    entry.stay_awake.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        }
        entry
            .last_active
            .store(hibernate::now_ms(), Ordering::Relaxed);
        last_message = Instant::now();
        if instance.has_state() {
            entry.stay_awake.store(false, Ordering::Relaxed);
            dirty_since.get_or_insert(last_message);
        }
        let before = instance.stats();
        // A call that crashed the instance is answered once the crash is noted, so a
        // caller that sees `service_crashed` then finds it in `status` too.
        let mut crashed_call = None;
        let outcome = match *envelope {
            Envelope::Call {
                request,
                reply,
                deadline,
                from,
            } => {
                if reply.is_closed() || Instant::now() >= deadline {
                    continue; // nobody waits for this answer any more
                }
                *entry.current_caller.lock() = Some(from);
                let r = within_deadline(entry, instance.call(&request)).await;
                *entry.current_caller.lock() = None;
                match r {
                    Err(CallError::Crash(c)) => {
                        crashed_call = Some((reply, c.clone()));
                        Some(c)
                    }
                    r => {
                        let _ = reply.send(r);
                        None
                    }
                }
            }
            Envelope::Cast { message, from } => {
                *entry.current_caller.lock() = Some(from);
                let r = within_deadline(entry, instance.cast(&message)).await;
                *entry.current_caller.lock() = None;
                match r {
                    Err(CallError::Crash(c)) => Some(c),
                    Err(e) => {
                        entry.logs.push(Level::Warn, &format!("cast failed: {e}"));
                        None
                    }
                    Ok(()) => None,
                }
            }
            Envelope::Hibernate => None, // handled above
            Envelope::Swap { plan, reply } => {
                if let Some(rb) = pending.take() {
                    Box::pin(swap_succeeded(kernel, entry, *rb)).await;
                }
                match Box::pin(apply_swap(kernel, entry, &mut instance, plan)).await {
                    Ok((rb, applied)) => {
                        pending = Some(Box::new(rb));
                        let _ = reply.send(Ok(applied));
                        None
                    }
                    Err((refused, crash)) => {
                        let _ = reply.send(Err(refused));
                        crash
                    }
                }
            }
        };
        entry.record_stats(before, instance.stats());
        if let Some(crash) = outcome {
            if let Some(k) = kernel.upgrade() {
                note_limit(&k, entry, &crash);
            }
            let report = entry.crash_report(&crash);
            // A crash inside the rollback window: back to the old version, whose state
            // is the snapshot the swap carried over.
            if let Some(rb) = pending.take() {
                instance = Box::pin(roll_back(kernel, entry, *rb, &report)).await;
                answer_crashed(crashed_call);
                continue;
            }
            let why = format!("{}: {}", report.kind, report.message);
            entry.note_crash(report);
            answer_crashed(crashed_call);
            return Served::Exit(Exit::Crashed(why));
        }
    }
}

/// Hibernates if it can: `None` when it stays awake (its log says why).
async fn try_sleep(
    k: &Core,
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
    idle: Duration,
) -> Option<Served> {
    match hibernate::hibernate(k, entry, instance, idle).await {
        hibernate::Outcome::Asleep => Some(Served::Asleep),
        hibernate::Outcome::Awake => None,
        hibernate::Outcome::Crashed(crash) => Some(crashed_saving(k, entry, &crash)),
    }
}

/// The end of an instance that crashed while its state was being saved.
fn crashed_saving(k: &Core, entry: &ServiceEntry, crash: &Crash) -> Served {
    note_limit(k, entry, crash);
    let report = entry.crash_report(crash);
    let why = format!("{}: {}", report.kind, report.message);
    entry.note_crash(report);
    Served::Exit(Exit::Crashed(why))
}

/// Answers a call whose message crashed the instance.
fn answer_crashed(call: Option<(oneshot::Sender<Result<String, CallError>>, Crash)>) {
    if let Some((reply, crash)) = call {
        let _ = reply.send(Err(CallError::Crash(crash)));
    }
}

/// Resolves at `deadline`, never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Takes a snapshot, if the service exports one, before a graceful stop. A snapshot of
/// nothing removes an older one, so the next start does not restore state the service
/// no longer has.
pub(crate) async fn stop_gracefully(
    kernel: &Weak<Core>,
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
) {
    if !instance.has_state() {
        return;
    }
    match instance.snapshot().await {
        Ok(state) => {
            *entry.final_snapshot.lock() = state.as_ref().map(Vec::len);
            if let Some(k) = kernel.upgrade()
                && let Err(e) = save_snapshot(&k, entry, state).await
            {
                tracing::warn!(tenant = %entry.tenant, service = %entry.id, error = %e, "could not save a snapshot");
            }
        }
        Err(e) => {
            entry.logs.push(
                Level::Warn,
                &format!("snapshot before stopping failed: {e}"),
            );
        }
    }
}

/// Starts an instance of `entry`'s code: instantiate and init, within the startup
/// timeout.
pub(crate) async fn start_instance(
    k: &Core,
    entry: &Arc<ServiceEntry>,
) -> Result<Box<dyn Instance>, CrashReport> {
    let code = entry.code();
    start_instance_of(k, entry, &code.artifact, code.authority).await
}

/// Starts an instance of `artifact` for `entry` (the new code of a hot swap).
pub(crate) async fn start_instance_of(
    k: &Core,
    entry: &Arc<ServiceEntry>,
    artifact: &Artifact,
    authority: Option<crate::caller::TokenScope>,
) -> Result<Box<dyn Instance>, CrashReport> {
    let host = Arc::new(host::KernelHost::new(
        k.me.clone(),
        Arc::clone(entry),
        authority,
    ));
    let timeout = entry.startup_timeout();
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        entry.report(
            "startup_timeout",
            &format!(
                "the service did not start within {} ms",
                entry.spec.limits.startup_timeout_ms
            ),
            None,
        )
    };
    let start = async {
        // Every slot taken: the least recently used hibernate to make room.
        let exhausted = |e: &InstantiateError| matches!(e, InstantiateError::Exhausted(_));
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut instance = hibernate::with_room(k, wait, exhausted, || {
            let host: Arc<dyn solo_sandbox::HostApi> = host.clone();
            k.sandbox.instantiate(artifact, entry.limits(), host)
        })
        .await
        .map_err(|e| match e {
            InstantiateError::Exhausted(why) => {
                entry.report(hibernate::NO_INSTANCE_SLOT, &hibernate::no_room(&why), None)
            }
            InstantiateError::Crashed(c) => entry.report(c.kind.as_str(), &c.message, c.backtrace),
            other => entry.report("internal", &other.to_string(), None),
        })?;
        // The deadline stops an init that never yields (a JS loop), which a timer
        // alone could not.
        let interrupt = instance.interrupt_handle();
        interrupt.deadline(Some(deadline));
        let init = instance.init(&entry.config_json).await;
        interrupt.deadline(None);
        init.map_err(|e| match e {
            CallError::Crash(c) if c.kind == solo_sandbox::CrashKind::Interrupted => timed_out(),
            CallError::Crash(c) => {
                note_limit(k, entry, &c);
                entry.report(
                    c.kind.as_str(),
                    &format!("init crashed: {}", c.message),
                    c.backtrace,
                )
            }
            CallError::Guest(msg) => entry.report(
                "init_failed",
                &format!("init returned an error: {msg}"),
                None,
            ),
            other => entry.report("init_failed", &other.to_string(), None),
        })?;
        Ok(instance)
    };
    match tokio::time::timeout(timeout, start).await {
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    }
}

/// The supervisor's child spec for `entry`'s actor.
pub(crate) fn child_spec(k: &Core, entry: &Arc<ServiceEntry>) -> ChildSpec {
    let spec = &entry.spec;
    let (me, e) = (k.me.clone(), Arc::clone(entry));
    ChildSpec {
        name: entry.id.to_string(),
        restart: match spec.restart {
            RestartPolicy::Permanent => RestartType::Permanent,
            RestartPolicy::Transient => RestartType::Transient,
            RestartPolicy::Temporary => RestartType::Temporary,
        },
        shutdown_timeout: Duration::from_secs(5),
        intensity: Some(Intensity::new(
            spec.max_restarts,
            Duration::from_secs(u64::from(spec.max_seconds)),
        )),
        backoff: match k.config.service_defaults.restart_backoff_ms {
            0 => None,
            ms => Some(solo_supervisor::Backoff {
                initial: Duration::from_millis(u64::from(ms)),
                factor: 2.0,
                max: Duration::from_secs(5).max(Duration::from_millis(u64::from(ms))),
            }),
        },
        start: Arc::new(move |ctx| {
            let actor = run(me.clone(), Arc::clone(&e), ctx);
            crate::entry::ACTOR_FUTURE_BYTES
                .store(std::mem::size_of_val(&actor), Ordering::Relaxed);
            Box::pin(actor)
        }),
    }
}

/// Runs one message under the service's wall-clock deadline: a message not answered by
/// then (a reply that never settles, a guest blocked in a host call) is a crash of kind
/// `timeout`; the caller's actor then drops the instance and its supervisor decides.
pub(crate) async fn within_deadline<T>(
    entry: &ServiceEntry,
    message: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let limit = entry.message_timeout();
    match tokio::time::timeout(limit, message).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Crash(Crash {
            kind: solo_sandbox::CrashKind::Timeout,
            message: format!(
                "the message was not answered within {} ms of wall-clock time",
                limit.as_millis()
            ),
            backtrace: None,
            observed: None,
        })),
    }
}

/// A crash at a limit (CPU, memory) is first a `resource_violation`, queued before the
/// crash it explains is recorded.
pub(crate) fn note_limit(k: &Core, entry: &ServiceEntry, crash: &Crash) {
    let l = &entry.spec.limits;
    let (kind, limit, unit) = match crash.kind {
        solo_sandbox::CrashKind::CpuLimit => (
            "cpu",
            u64::from(l.cpu_ms_per_message).min(k.tunables.get(Key::MaxCpuMs)),
            "ms",
        ),
        solo_sandbox::CrashKind::MemoryLimit => ("memory", u64::from(l.memory_mb) << 20, "bytes"),
        _ => return,
    };
    let e = records::violation(&entry.tenant, &entry.id, kind, limit, crash.observed, unit);
    k.record_later(vec![e], "a resource violation");
}

/// Records a service's crash and what its supervisor decided, in one commit.
pub(crate) fn on_supervisor_event(k: &Core, tenant: &TenantId, e: SupervisorEvent) {
    let (child, failed, reason) = match &e {
        SupervisorEvent::ChildRestarted { child, reason, .. } => (child, None, reason),
        SupervisorEvent::ChildFailed { child, reason, .. } => (child, Some(reason.clone()), reason),
        SupervisorEvent::Escalated { .. } => return,
    };
    let Some(entry) = ServiceId::new(child.clone())
        .ok()
        .and_then(|s| k.running(tenant, &s))
    else {
        return;
    };
    let report = entry
        .take_pending_crash()
        .unwrap_or_else(|| entry.report("internal", reason, None));
    let mut batch = WriteBatch::new();
    batch.event(records::crashed(tenant, &entry.id, &report));
    match failed {
        None => {
            let n = entry.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            batch.event_caused_by(records::restarted(tenant, &entry.id, n), 0);
            metrics::counter!(m::RESTARTS).increment(1);
        }
        Some(why) => {
            entry.set_state(ServiceState::Failed);
            batch.event_caused_by(records::failed(tenant, &entry.id, &why), 0);
            entry.drain(&format!("service {} failed: {why}", entry.id));
        }
    }
    let fut = k.store.commit(batch);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::error!(error = %e, "could not record a service crash");
        }
    });
}

/// Keeps the snapshot a graceful stop took, for the next start (which starts the
/// service awake: it was awake when it stopped).
async fn save_snapshot(
    k: &Core,
    entry: &ServiceEntry,
    state: Option<Vec<u8>>,
) -> Result<(), KernelError> {
    let key = records::deployment_key(&entry.tenant, &entry.id);
    let mut batch = WriteBatch::new();
    batch
        .delete(records::HIBERNATED, key.clone())
        .stage("save the snapshot")?;
    match state {
        Some(s) => batch.put(records::SNAPSHOTS, key, s),
        None => batch.delete(records::SNAPSHOTS, key),
    }
    .stage("save the snapshot")?;
    k.store.commit(batch).await.stage("save the snapshot")?;
    Ok(())
}
