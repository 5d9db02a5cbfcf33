//! One deployed service: its entry (spec, mailbox, state, stats, log) and the actor that
//! runs its instance, one message at a time, as a child of its tenant's supervisor.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use solo_sandbox::{Artifact, CallError, Crash, Instance, InstanceStats, Interrupt, Level, Limits};
use solo_supervisor::{ChildCtx, Exit};
use solo_types::{
    CrashReport, DeploySpec, Format, ServiceId, ServiceState, ServiceStatus, TenantId,
};
use tokio::sync::{mpsc, oneshot};

use crate::KernelInner;
use crate::logs::LogRing;

/// A message in a service's mailbox.
pub(crate) enum Envelope {
    Call {
        request: String,
        reply: oneshot::Sender<Result<String, CallError>>,
        /// After this, nobody waits for the answer: the message is skipped.
        deadline: Instant,
    },
    Cast {
        message: String,
    },
    /// Replace the code between two messages (a hot swap).
    Swap {
        plan: Box<SwapPlan>,
        reply: oneshot::Sender<Result<SwapApplied, SwapRefused>>,
    },
}

/// The new code of a hot swap, compiled and checked.
pub(crate) struct SwapPlan {
    pub(crate) code: Code,
    pub(crate) code_bytes: Arc<[u8]>,
    /// A crash of the new version within this window rolls back to the old one.
    pub(crate) rollback_window: Duration,
}

/// A swap the actor applied.
#[derive(Debug, Clone)]
pub(crate) struct SwapApplied {
    pub(crate) version: u64,
    pub(crate) code_hash: String,
    pub(crate) event_id: u64,
    pub(crate) snapshot_bytes: Option<usize>,
    pub(crate) state_carried: bool,
}

/// Why the actor did not apply a swap: the stage and the reason (the old version keeps
/// serving).
#[derive(Debug, Clone)]
pub(crate) struct SwapRefused {
    pub(crate) stage: &'static str,
    pub(crate) error: crate::KernelError,
}

/// The old version, kept through the rollback window.
struct Rollback {
    old: Box<dyn Instance>,
    old_code: Code,
    deadline: Instant,
}

/// The number of log lines a crash report carries.
const CRASH_LOG_LINES: usize = 20;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn state_from(v: u8) -> ServiceState {
    match v {
        0 => ServiceState::Deployed,
        1 => ServiceState::Starting,
        2 => ServiceState::Running,
        3 => ServiceState::Crashed,
        4 => ServiceState::Failed,
        5 => ServiceState::DeploymentFailed,
        6 => ServiceState::Stopping,
        _ => ServiceState::Undeployed,
    }
}

fn state_to(s: ServiceState) -> u8 {
    match s {
        ServiceState::Deployed => 0,
        ServiceState::Starting => 1,
        ServiceState::Running => 2,
        ServiceState::Crashed => 3,
        ServiceState::Failed => 4,
        ServiceState::DeploymentFailed => 5,
        ServiceState::Stopping => 6,
        ServiceState::Undeployed => 7,
    }
}

/// A token bucket: `rate` per second, `burst` at most.
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            burst: rate * 10.0,
            state: Mutex::new((rate * 10.0, Instant::now())),
        }
    }

    pub(crate) fn take(&self) -> bool {
        let mut s = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The code a service runs now; a hot swap replaces it.
#[derive(Clone)]
pub(crate) struct Code {
    pub(crate) artifact: Artifact,
    pub(crate) hash: String,
    pub(crate) format: Format,
    pub(crate) version: u64,
}

/// Where a service's history starts: 1 for a deploy, the stored record on recovery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct History {
    pub(crate) version: u64,
    pub(crate) deployed_at: i64,
    pub(crate) deployed_event: u64,
}

/// Everything the kernel knows about one deployed service.
pub(crate) struct ServiceEntry {
    pub(crate) tenant: TenantId,
    pub(crate) id: ServiceId,
    /// The deploy spec; after a hot swap its `format` is the first version's (the
    /// current format is in `code`).
    pub(crate) spec: DeploySpec,
    pub(crate) config_json: String,
    code: Mutex<Code>,
    pub(crate) deployed_at: i64,
    pub(crate) deployed_event: AtomicU64,
    pub(crate) mailbox: mpsc::Sender<Envelope>,
    pub(crate) inbox: tokio::sync::Mutex<mpsc::Receiver<Envelope>>,
    state: AtomicU8,
    pub(crate) restarts: AtomicU32,
    messages: AtomicU64,
    cpu_ns: AtomicU64,
    memory_bytes: AtomicU64,
    started: Mutex<Option<Instant>>,
    last_error: Mutex<Option<CrashReport>>,
    /// A crash the next supervisor event should record.
    pending_crash: Mutex<Option<CrashReport>>,
    pub(crate) logs: LogRing,
    interrupt: Mutex<Option<Interrupt>>,
    /// The first instance, started by `deploy`, for the actor's first incarnation.
    pub(crate) ready: Mutex<Option<Box<dyn Instance>>>,
    /// The size of the snapshot a graceful stop took.
    pub(crate) final_snapshot: Mutex<Option<usize>>,
    pub(crate) emits: Bucket,
    pub(crate) breaker: Mutex<crate::flow::Breaker>,
}

impl ServiceEntry {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        tenant: TenantId,
        spec: DeploySpec,
        code_hash: String,
        artifact: Artifact,
        log_lines: usize,
        emits_per_second: u32,
        history: Option<History>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(spec.limits.mailbox.max(1) as usize);
        let config_json = spec.config.to_string();
        let history = history.unwrap_or(History {
            version: 1,
            deployed_at: now_ns(),
            deployed_event: 0,
        });
        Arc::new(Self {
            tenant,
            id: spec.service_id.clone(),
            config_json,
            code: Mutex::new(Code {
                artifact,
                hash: code_hash,
                format: spec.format,
                version: history.version,
            }),
            deployed_at: history.deployed_at,
            deployed_event: AtomicU64::new(history.deployed_event),
            mailbox: tx,
            inbox: tokio::sync::Mutex::new(rx),
            state: AtomicU8::new(state_to(ServiceState::Starting)),
            restarts: AtomicU32::new(0),
            messages: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            started: Mutex::new(None),
            last_error: Mutex::new(None),
            pending_crash: Mutex::new(None),
            logs: LogRing::new(log_lines),
            interrupt: Mutex::new(None),
            ready: Mutex::new(None),
            final_snapshot: Mutex::new(None),
            emits: Bucket::new(emits_per_second),
            breaker: Mutex::new(crate::flow::Breaker::default()),
            spec,
        })
    }

    pub(crate) fn state(&self) -> ServiceState {
        state_from(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: ServiceState) {
        self.state.store(state_to(s), Ordering::Release);
    }

    pub(crate) fn artifact(&self) -> Artifact {
        self.code.lock().artifact.clone()
    }

    /// The code running now.
    pub(crate) fn code(&self) -> Code {
        self.code.lock().clone()
    }

    pub(crate) fn code_hash(&self) -> String {
        self.code.lock().hash.clone()
    }

    pub(crate) fn version(&self) -> u64 {
        self.code.lock().version
    }

    pub(crate) fn set_code(&self, code: Code) {
        *self.code.lock() = code;
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            memory_bytes: u64::from(self.spec.limits.memory_mb) << 20,
            cpu_per_message: Duration::from_millis(u64::from(self.spec.limits.cpu_ms_per_message)),
            max_reply_bytes: 4 << 20,
        }
    }

    pub(crate) fn startup_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.limits.startup_timeout_ms))
    }

    /// Stops the running guest at once (a forced kill).
    pub(crate) fn interrupt(&self) {
        if let Some(i) = self.interrupt.lock().as_ref() {
            i.interrupt();
        }
    }

    fn record_stats(&self, before: InstanceStats, after: InstanceStats) {
        self.messages.fetch_add(
            after.messages.saturating_sub(before.messages),
            Ordering::Relaxed,
        );
        let cpu = after.cpu_time.saturating_sub(before.cpu_time);
        self.cpu_ns.fetch_add(
            u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.memory_bytes
            .store(after.memory_bytes, Ordering::Relaxed);
    }

    /// A crash report for `crash`, with the last log lines.
    pub(crate) fn report(
        &self,
        kind: &str,
        message: &str,
        backtrace: Option<String>,
    ) -> CrashReport {
        CrashReport {
            kind: kind.to_string(),
            message: message.to_string(),
            backtrace,
            log_tail: self
                .logs
                .tail(CRASH_LOG_LINES)
                .into_iter()
                .map(|l| format!("[{}] {}", l.level, l.message))
                .collect(),
            at: now_ns(),
        }
    }

    fn crash_report(&self, crash: &Crash) -> CrashReport {
        self.report(crash.kind.as_str(), &crash.message, crash.backtrace.clone())
    }

    /// Remembers a crash: status shows it, and the supervisor's event records it.
    pub(crate) fn note_crash(&self, report: CrashReport) {
        self.set_state(ServiceState::Crashed);
        *self.last_error.lock() = Some(report.clone());
        *self.pending_crash.lock() = Some(report);
    }

    pub(crate) fn take_pending_crash(&self) -> Option<CrashReport> {
        self.pending_crash.lock().take()
    }

    pub(crate) fn last_error(&self) -> Option<CrashReport> {
        self.last_error.lock().clone()
    }

    pub(crate) fn status(&self) -> ServiceStatus {
        let uptime = self.started.lock().map_or(0, |t| {
            u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        let code = self.code();
        ServiceStatus {
            service_id: self.id.clone(),
            state: self.state(),
            format: code.format,
            code_hash: code.hash,
            version: code.version,
            uptime_ms: uptime,
            restarts: self.restarts.load(Ordering::Relaxed),
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            mailbox_len: (self.mailbox.max_capacity() - self.mailbox.capacity()) as u64,
            messages: self.messages.load(Ordering::Relaxed),
            cpu_time_us: self.cpu_ns.load(Ordering::Relaxed) / 1000,
            last_error: self.last_error(),
            restart: self.spec.restart,
            limits: self.spec.limits,
            deployed_at: self.deployed_at,
        }
    }

    /// Answers every queued message with `why`.
    pub(crate) fn drain(&self, why: &str) {
        if let Ok(mut inbox) = self.inbox.try_lock() {
            while let Ok(env) = inbox.try_recv() {
                match env {
                    Envelope::Call { reply, .. } => {
                        let _ = reply.send(Err(CallError::Guest(why.to_string())));
                    }
                    Envelope::Swap { reply, .. } => {
                        let _ = reply.send(Err(SwapRefused {
                            stage: "start",
                            error: crate::KernelError::Unavailable(why.to_string()),
                        }));
                    }
                    Envelope::Cast { .. } => {}
                }
            }
        }
    }
}

/// One incarnation of a service's actor: start (or take) an instance, then handle
/// messages until the supervisor stops it or the instance crashes.
pub(crate) async fn run(
    kernel: Weak<KernelInner>,
    entry: Arc<ServiceEntry>,
    ctx: ChildCtx,
) -> Exit {
    let ready = entry.ready.lock().take();
    let mut instance = match ready {
        Some(i) => i,
        None => {
            let Some(k) = kernel.upgrade() else {
                return Exit::Shutdown;
            };
            entry.set_state(ServiceState::Starting);
            match k.start_instance(&entry).await {
                Ok(i) => i,
                Err(report) => {
                    let why = format!("{}: {}", report.kind, report.message);
                    entry.note_crash(report);
                    return Exit::Crashed(why);
                }
            }
        }
    };
    *entry.interrupt.lock() = Some(instance.interrupt_handle());
    *entry.started.lock() = Some(Instant::now());
    entry
        .memory_bytes
        .store(instance.stats().memory_bytes, Ordering::Relaxed);
    entry.set_state(ServiceState::Running);

    let mut inbox = entry.inbox.lock().await;
    let mut pending: Option<Rollback> = None;
    loop {
        let window = pending.as_ref().map(|r| r.deadline);
        let envelope = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => {
                if let Some(rb) = pending.take() {
                    swap_succeeded(&kernel, &entry, rb).await;
                }
                stop_gracefully(&kernel, &entry, instance.as_mut()).await;
                return Exit::Shutdown;
            }
            () = until(window) => {
                if let Some(rb) = pending.take() {
                    swap_succeeded(&kernel, &entry, rb).await;
                }
                continue;
            }
            env = inbox.recv() => env,
        };
        let Some(envelope) = envelope else {
            return Exit::Shutdown;
        };
        let before = instance.stats();
        let outcome = match envelope {
            Envelope::Call {
                request,
                reply,
                deadline,
            } => {
                if reply.is_closed() || Instant::now() >= deadline {
                    continue; // nobody waits for this answer any more
                }
                let r = instance.call(&request).await;
                let crash = match &r {
                    Err(CallError::Crash(c)) => Some(c.clone()),
                    _ => None,
                };
                let _ = reply.send(r);
                crash
            }
            Envelope::Cast { message } => match instance.cast(&message).await {
                Err(CallError::Crash(c)) => Some(c),
                Err(e) => {
                    entry.logs.push(Level::Warn, &format!("cast failed: {e}"));
                    None
                }
                Ok(()) => None,
            },
            Envelope::Swap { plan, reply } => {
                if let Some(rb) = pending.take() {
                    swap_succeeded(&kernel, &entry, rb).await;
                }
                match apply_swap(&kernel, &entry, &mut instance, *plan).await {
                    Ok((rb, applied)) => {
                        pending = Some(rb);
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
            let report = entry.crash_report(&crash);
            // A crash inside the rollback window: back to the old version, whose state
            // is the snapshot the swap carried over.
            if let Some(rb) = pending.take() {
                instance = roll_back(&kernel, &entry, rb, &report).await;
                continue;
            }
            let why = format!("{}: {}", report.kind, report.message);
            entry.note_crash(report);
            return Exit::Crashed(why);
        }
    }
}

/// Resolves at `deadline`, never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Snapshot the old instance, start the new code and restore the snapshot into it,
/// record the new version, then switch. On any failure the old instance keeps serving;
/// a crash of the old instance while taking its snapshot is returned to be handled as
/// a crash.
async fn apply_swap(
    kernel: &Weak<KernelInner>,
    entry: &Arc<ServiceEntry>,
    instance: &mut Box<dyn Instance>,
    plan: SwapPlan,
) -> Result<(Rollback, SwapApplied), (SwapRefused, Option<Crash>)> {
    use crate::KernelError as E;
    let refuse = |stage: &'static str, error: E| (SwapRefused { stage, error }, None);
    let Some(k) = kernel.upgrade() else {
        return Err(refuse("start", E::shutting_down()));
    };
    let carry = instance.has_state() && plan.code.artifact.has_state();
    let state = if carry {
        match instance.snapshot().await {
            Ok(s) => s,
            Err(CallError::Crash(c)) => {
                let msg = format!("the old version crashed taking its snapshot: {}", c.message);
                return Err((
                    SwapRefused {
                        stage: "snapshot",
                        error: E::FailedPrecondition(msg),
                    },
                    Some(c),
                ));
            }
            Err(e) => {
                return Err(refuse(
                    "snapshot",
                    E::FailedPrecondition(format!("the old version's snapshot failed: {e}")),
                ));
            }
        }
    } else {
        None
    };
    let mut new = k
        .start_instance_of(entry, &plan.code.artifact)
        .await
        .map_err(|r| {
            refuse(
                "start",
                E::InvalidArgument(format!(
                    "the new version failed to start: {}: {}",
                    r.kind, r.message
                )),
            )
        })?;
    if let Some(state) = &state
        && let Err(e) = new.restore(state).await
    {
        return Err(refuse(
            "restore",
            E::InvalidArgument(format!(
                "the new version could not restore the old version's state: {e}"
            )),
        ));
    }
    let old_code = entry.code();
    let snapshot_bytes = state.as_ref().map(Vec::len);
    let event = crate::records::swap_started(
        &entry.tenant,
        &entry.id,
        (old_code.version, &old_code.hash),
        (plan.code.version, &plan.code.hash),
        "swap",
        snapshot_bytes,
    );
    let event_id = k
        .persist_code(entry, &plan.code, Some(&plan.code_bytes), vec![event])
        .await
        .map_err(|e| refuse("record", e))?;
    let old = std::mem::replace(instance, new);
    entry.set_code(plan.code.clone());
    *entry.interrupt.lock() = Some(instance.interrupt_handle());
    entry
        .memory_bytes
        .store(instance.stats().memory_bytes, Ordering::Relaxed);
    let applied = SwapApplied {
        version: plan.code.version,
        code_hash: plan.code.hash.clone(),
        event_id,
        snapshot_bytes,
        state_carried: carry,
    };
    let rb = Rollback {
        old,
        old_code,
        deadline: Instant::now() + plan.rollback_window,
    };
    Ok((rb, applied))
}

/// The rollback window passed without a crash: the old version goes.
async fn swap_succeeded(kernel: &Weak<KernelInner>, entry: &ServiceEntry, rb: Rollback) {
    drop(rb.old);
    let Some(k) = kernel.upgrade() else { return };
    let e = crate::records::swap_succeeded(&entry.tenant, &entry.id, entry.version(), "swap");
    if let Err(err) = k.store.append(vec![e]).await {
        tracing::warn!(service = %entry.id, error = %err, "could not record a hot swap's success");
    }
}

/// Goes back to the old version and records why.
async fn roll_back(
    kernel: &Weak<KernelInner>,
    entry: &Arc<ServiceEntry>,
    rb: Rollback,
    report: &CrashReport,
) -> Box<dyn Instance> {
    let from = entry.version();
    let instance = rb.old;
    entry.set_code(rb.old_code.clone());
    *entry.interrupt.lock() = Some(instance.interrupt_handle());
    *entry.last_error.lock() = Some(report.clone());
    entry.logs.push(
        Level::Warn,
        &format!(
            "version {from} crashed within its rollback window ({}: {}); rolled back to version {}",
            report.kind, report.message, rb.old_code.version
        ),
    );
    if let Some(k) = kernel.upgrade() {
        let e = crate::records::swap_rolled_back(
            &entry.tenant,
            &entry.id,
            from,
            rb.old_code.version,
            report,
        );
        if let Err(err) = k.persist_code(entry, &rb.old_code, None, vec![e]).await {
            tracing::warn!(service = %entry.id, error = %err, "could not record a rollback");
        }
    }
    instance
}

/// Takes a snapshot, if the service exports one, before a graceful stop.
async fn stop_gracefully(
    kernel: &Weak<KernelInner>,
    entry: &ServiceEntry,
    instance: &mut dyn Instance,
) {
    if !instance.has_state() {
        return;
    }
    match instance.snapshot().await {
        Ok(Some(state)) => {
            *entry.final_snapshot.lock() = Some(state.len());
            if let Some(k) = kernel.upgrade()
                && let Err(e) = k.save_snapshot(entry, state).await
            {
                tracing::warn!(tenant = %entry.tenant, service = %entry.id, error = %e, "could not save a snapshot");
            }
        }
        Ok(None) => {}
        Err(e) => {
            entry.logs.push(
                Level::Warn,
                &format!("snapshot before stopping failed: {e}"),
            );
        }
    }
}
