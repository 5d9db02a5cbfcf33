//! What a supervisor and its children exchange: a child's spec and start function, its
//! exit, the supervisor's policy and events, and the states observers see.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::Supervisor;
use crate::policy::{Backoff, ExitKind, Intensity, RestartType, Strategy};

/// How a child's future ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It finished of its own accord.
    Normal,
    /// It stopped because its token was cancelled.
    Shutdown,
    /// It failed; the text says why (a panic's message, for a panic).
    Crashed(String),
    /// It has nothing to do until someone calls [`Supervisor::resume_child`]: its task
    /// ends, which is neither a restart nor counted against any intensity, and the
    /// resume starts its next incarnation (at once, if the resume came first).
    Dormant,
}

impl Exit {
    pub(crate) fn kind(&self) -> ExitKind {
        match self {
            Exit::Normal | Exit::Dormant => ExitKind::Normal,
            Exit::Shutdown => ExitKind::Shutdown,
            Exit::Crashed(_) => ExitKind::Crashed,
        }
    }
}

/// What a child gets when it starts.
#[derive(Debug, Clone)]
pub struct ChildCtx {
    pub name: String,
    /// 0 for the first start, then one more per restart.
    pub incarnation: u32,
    /// Cancelled when the supervisor wants the child to stop.
    pub shutdown: CancellationToken,
}

/// Starts one incarnation of a child.
pub type StartFn = Arc<dyn Fn(ChildCtx) -> BoxFuture<'static, Exit> + Send + Sync>;

/// A child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub restart: RestartType,
    /// How long the child may take to stop once asked, before it is aborted.
    pub shutdown_timeout: Duration,
    /// The child's own intensity: exceeding it stops this child for good
    /// ([`SupervisorEvent::ChildFailed`]). Without one, the child's restarts count
    /// against the supervisor's intensity, and exceeding that escalates.
    pub intensity: Option<Intensity>,
    pub backoff: Option<Backoff>,
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// What a supervisor tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorEvent {
    /// A child exited and was (or will be, after `delay`) started again.
    ChildRestarted {
        supervisor: String,
        child: String,
        incarnation: u32,
        reason: String,
        delay: Duration,
    },
    /// A child will not be restarted: its intensity is exhausted, or it is temporary
    /// and crashed.
    ChildFailed {
        supervisor: String,
        child: String,
        reason: String,
    },
    /// The supervisor's own intensity is exhausted: it stopped its children and exits.
    Escalated { supervisor: String, reason: String },
}

/// The supervisor's policy and where its events go.
#[derive(Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub on_event: Arc<dyn Fn(SupervisorEvent) + Send + Sync>,
}

/// A child's state, for observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    Running,
    /// Waiting out a backoff before its next start.
    Restarting,
    /// Exited and not restarted (a normal exit of a transient child, for example).
    Stopped,
    /// Given up on.
    Failed,
    /// No task until it is resumed ([`Exit::Dormant`]).
    Dormant,
}

/// A snapshot of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    pub name: String,
    pub state: ChildState,
    pub restarts: u32,
}

/// How a supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorExit {
    Shutdown,
    Escalated(String),
}

/// Why a request to a supervisor failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    /// A child with that name exists.
    Exists(String),
    /// No child with that name.
    NoSuchChild(String),
    /// The supervisor has stopped.
    Stopped,
}

impl std::fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorError::Exists(n) => write!(f, "a child named {n} exists"),
            SupervisorError::NoSuchChild(n) => write!(f, "no child named {n}"),
            SupervisorError::Stopped => f.write_str("the supervisor has stopped"),
        }
    }
}

impl std::error::Error for SupervisorError {}
