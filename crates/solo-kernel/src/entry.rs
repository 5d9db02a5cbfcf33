//! One deployed service's entry: its spec, code, mailbox, state, counters, log ring and
//! breaker. The actor that runs its instance is in `actor.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use solo_sandbox::{
    Artifact, CallError, Crash, GuestCaller, Instance, InstanceStats, Interrupt, Limits,
};
use solo_types::clock::system_now_ns;
use solo_types::{
    CrashReport, DeploySpec, Format, ServiceId, ServiceState, ServiceStatus, TenantId,
};
use tokio::sync::oneshot;

use crate::breaker::ServiceBreaker;
use crate::bucket::TokenBucket;
use crate::caller::TokenScope;
use crate::logs::LogRing;
use crate::mailbox::Mailbox;

/// The size of the latest actor future started (its state machine, boxed in its task).
pub(crate) static ACTOR_FUTURE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The size of the latest awake phase's future (boxed while the service is awake).
pub(crate) static SERVE_FUTURE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What one idle service's kernel state is made of, in bytes, for the density
/// benchmark: the fixed-size parts each service allocates when it is deployed (the
/// actor's once one has started). Heap beside them (the spec's strings, the maps'
/// slots, the supervisor's child) is what a measurement finds on top.
pub fn footprint() -> Vec<(&'static str, usize)> {
    vec![
        ("service entry", std::mem::size_of::<ServiceEntry>()),
        ("actor future", ACTOR_FUTURE_BYTES.load(Ordering::Relaxed)),
        (
            "awake phase's future (none while hibernated)",
            SERVE_FUTURE_BYTES.load(Ordering::Relaxed),
        ),
    ]
}

/// A message in a service's mailbox (boxed in the channel).
pub(crate) enum Envelope {
    Call {
        request: String,
        reply: oneshot::Sender<Result<String, CallError>>,
        /// After this, nobody waits for the answer: the message is skipped.
        deadline: Instant,
        from: GuestCaller,
    },
    Cast {
        message: String,
        from: GuestCaller,
    },
    /// Hibernate now if it can (sent to the least recently used to make room in the
    /// pool); ignored by a sleeping service.
    Hibernate,
    /// Replace the code between two messages (a hot swap).
    Swap {
        plan: SwapPlan,
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
    pub(crate) error: crate::error::KernelError,
}

/// The number of log lines a crash report carries.
const CRASH_LOG_LINES: usize = 20;

fn state_from(v: u8) -> ServiceState {
    match v {
        0 => ServiceState::Deployed,
        1 => ServiceState::Starting,
        2 => ServiceState::Running,
        3 => ServiceState::Crashed,
        4 => ServiceState::Failed,
        5 => ServiceState::DeploymentFailed,
        6 => ServiceState::Stopping,
        8 => ServiceState::Hibernated,
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
        ServiceState::Hibernated => 8,
    }
}

/// The busy-lane share of a tenant's services: one key per tenant, so a tenant's busy
/// services take their turns in the lane as one.
fn share_of(tenant: &TenantId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish()
}

/// A token bucket of a fixed rate, with a burst of ten times the rate.
pub(crate) struct Bucket {
    rate: f64,
    state: Mutex<TokenBucket>,
}

impl Bucket {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            state: Mutex::default(),
        }
    }

    pub(crate) fn take(&self) -> bool {
        let mut s = self.state.lock();
        s.take(Instant::now(), self.rate, self.rate * 10.0).is_ok()
    }
}

/// The code a service runs now; a hot swap replaces it.
#[derive(Clone)]
pub(crate) struct Code {
    pub(crate) artifact: Artifact,
    pub(crate) hash: String,
    pub(crate) format: Format,
    pub(crate) version: u64,
    /// The scope of the token that deployed (or swapped in) this code: its instances
    /// act with no more; `None` when the tenant itself did.
    pub(crate) authority: Option<TokenScope>,
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
    /// Boxed envelopes, nothing allocated while it is empty.
    pub(crate) mailbox: Mailbox,
    state: AtomicU8,
    pub(crate) restarts: AtomicU32,
    messages: AtomicU64,
    cpu_ns: AtomicU64,
    pub(crate) memory_bytes: AtomicU64,
    pub(crate) started: Mutex<Option<Instant>>,
    /// Boxed, as is the pending crash: most services never crash, and a report is
    /// 104 bytes.
    pub(crate) last_error: Mutex<Option<Box<CrashReport>>>,
    /// A crash the next supervisor event should record.
    pending_crash: Mutex<Option<Box<CrashReport>>>,
    pub(crate) logs: LogRing,
    pub(crate) interrupt: Mutex<Option<Interrupt>>,
    /// The first instance, started by `deploy`, for the actor's first incarnation.
    pub(crate) ready: Mutex<Option<Box<dyn Instance>>>,
    /// The size of the snapshot a graceful stop took.
    pub(crate) final_snapshot: Mutex<Option<usize>>,
    pub(crate) emits: Bucket,
    pub(crate) breaker: ServiceBreaker,
    /// `resource_violation` events for a full mailbox, sampled.
    pub(crate) mailbox_full: crate::sampler::Window,
    /// Who sent the message being handled, for the guest's `caller()`.
    pub(crate) current_caller: Mutex<Option<GuestCaller>>,
    /// The service's HTTP requests out of Solo in flight.
    pub(crate) egress_in_flight: AtomicU32,
    /// Hibernated: its state is in the store and no instance runs; the next message
    /// (or the next start of its actor) wakes it.
    pub(crate) asleep: AtomicBool,
    /// Asleep with an empty mailbox, its actor has no task: whoever queues the next
    /// envelope resumes it (`hibernate::post`).
    pub(crate) dormant: AtomicBool,
    /// Awake and idle past `service_defaults.park_after_ms`, its actor gave up its task
    /// and left its instance in `ready`: the next envelope resumes it with that instance.
    pub(crate) parked: AtomicBool,
    /// It stays awake when idle until its next message: an attempt to hibernate failed,
    /// or its code cannot carry its state (its log says so once).
    pub(crate) stay_awake: AtomicBool,
    /// An `Envelope::Hibernate` is queued for it and not yet taken.
    pub(crate) asked_to_sleep: AtomicBool,
    /// When it last handled a message, in ms of the process's clock: the least recent
    /// hibernates first when the pool is full.
    pub(crate) last_active: AtomicU64,
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
        authority: Option<TokenScope>,
    ) -> Arc<Self> {
        let config_json = spec.config.to_string();
        let history = history.unwrap_or(History {
            version: 1,
            deployed_at: system_now_ns(),
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
                authority,
            }),
            deployed_at: history.deployed_at,
            deployed_event: AtomicU64::new(history.deployed_event),
            mailbox: Mailbox::new(spec.limits.mailbox as usize),
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
            mailbox_full: crate::sampler::Window::default(),
            current_caller: Mutex::new(None),
            egress_in_flight: AtomicU32::new(0),
            asleep: AtomicBool::new(false),
            dormant: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            stay_awake: AtomicBool::new(false),
            asked_to_sleep: AtomicBool::new(false),
            last_active: AtomicU64::new(0),
            breaker: ServiceBreaker::default(),
            spec,
        })
    }

    pub(crate) fn state(&self) -> ServiceState {
        state_from(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: ServiceState) {
        self.state.store(state_to(s), Ordering::Release);
    }

    /// Hands a started instance (init done) to the actor: the service is running from
    /// now on, and messages sent before the actor picks it up wait in the mailbox.
    pub(crate) fn hand_over(&self, instance: Box<dyn Instance>) {
        *self.ready.lock() = Some(instance);
        self.set_state(ServiceState::Running);
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

    /// Whether its code can carry its state through a hibernation.
    pub(crate) fn can_hibernate(&self) -> bool {
        self.code.lock().artifact.has_state()
    }

    pub(crate) fn set_code(&self, code: Code) {
        *self.code.lock() = code;
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            memory_bytes: u64::from(self.spec.limits.memory_mb) << 20,
            cpu_per_message: Duration::from_millis(u64::from(self.spec.limits.cpu_ms_per_message)),
            max_reply_bytes: 4 << 20,
            share: share_of(&self.tenant),
        }
    }

    pub(crate) fn startup_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.limits.startup_timeout_ms))
    }

    /// How long one message may take before it is a crash of kind `timeout`.
    pub(crate) fn message_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.limits.message_timeout_ms))
    }

    /// Stops the running guest at once (a forced kill).
    pub(crate) fn interrupt(&self) {
        if let Some(i) = self.interrupt.lock().as_ref() {
            i.interrupt();
        }
    }

    pub(crate) fn record_stats(&self, before: InstanceStats, after: InstanceStats) {
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
            at: system_now_ns(),
        }
    }

    pub(crate) fn crash_report(&self, crash: &Crash) -> CrashReport {
        self.report(crash.kind.as_str(), &crash.message, crash.backtrace.clone())
    }

    /// Remembers a crash: status shows it, and the supervisor's event records it.
    pub(crate) fn note_crash(&self, report: CrashReport) {
        self.set_state(ServiceState::Crashed);
        *self.last_error.lock() = Some(Box::new(report.clone()));
        *self.pending_crash.lock() = Some(Box::new(report));
    }

    pub(crate) fn take_pending_crash(&self) -> Option<CrashReport> {
        self.pending_crash.lock().take().map(|r| *r)
    }

    pub(crate) fn last_error(&self) -> Option<CrashReport> {
        self.last_error.lock().as_deref().cloned()
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
            mailbox_len: self.mailbox.len() as u64,
            messages: self.messages.load(Ordering::Relaxed),
            cpu_time_us: self.cpu_ns.load(Ordering::Relaxed) / 1000,
            last_error: self.last_error(),
            restart: self.spec.restart,
            limits: self.spec.limits,
            deployed_at: self.deployed_at,
            tool: self.spec.tool.clone(),
            node: None,
        }
    }

    /// Answers every queued message with `why`.
    pub(crate) fn drain(&self, why: &str) {
        while let Some(env) = self.mailbox.try_recv() {
            match *env {
                Envelope::Call { reply, .. } => {
                    let _ = reply.send(Err(CallError::Guest(solo_sandbox::GuestError::new(why))));
                }
                Envelope::Swap { reply, .. } => {
                    let _ = reply.send(Err(SwapRefused {
                        stage: "start",
                        error: crate::error::KernelError::Unavailable(why.to_string()),
                    }));
                }
                Envelope::Cast { .. } | Envelope::Hibernate => {}
            }
        }
    }
}
