//! The supervisor task: runs children as tokio tasks and applies the restart policy.
//!
//! One closed event loop per supervisor, taking one `enum` of commands. A child is a
//! [`StartFn`](crate::StartFn) called once per incarnation; its future's output (or its
//! panic) is its exit. A child is stopped by cancelling its token and, after its shutdown timeout,
//! aborting its task. Stopping one child on request never blocks the loop; stopping a
//! group (for `rest_for_one` and `one_for_all`) stops them in reverse start order. A
//! child with nothing to do may go dormant ([`Exit::Dormant`]): it holds no task until
//! [`Supervisor::resume_child`] starts its next incarnation.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::child::{
    ChildCtx, ChildInfo, ChildSpec, ChildState, Exit, SupervisorError, SupervisorEvent,
    SupervisorExit, SupervisorSpec,
};
use crate::policy::{Decision, RestartHistory, Strategy, decide};

enum Cmd {
    Add(ChildSpec, oneshot::Sender<Result<(), SupervisorError>>),
    Terminate {
        name: String,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    Terminated(u64),
    Resume(String),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to a running supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    name: String,
    cmd: mpsc::UnboundedSender<Cmd>,
    children: Arc<Mutex<Infos>>,
}

/// What readers see of the children, by id (ids grow, so this is start order); updated
/// child by child where one changes, so adding or removing one of many is cheap.
type Infos = BTreeMap<u64, ChildInfo>;

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Starts a supervisor and its children, in order.
    pub fn start(
        spec: SupervisorSpec,
        children: Vec<ChildSpec>,
    ) -> (Self, JoinHandle<SupervisorExit>) {
        let (cmd, rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        let infos = Arc::new(Mutex::new(Infos::new()));
        let mut runner = Runner {
            spec: spec.clone(),
            children: Vec::new(),
            by_name: HashMap::new(),
            history: RestartHistory::default(),
            next_id: 0,
            exit_tx,
            cmd_tx: cmd.clone(),
            infos: Arc::clone(&infos),
        };
        for child in children {
            runner.add(child);
        }
        runner.publish();
        let handle = tokio::spawn(runner.run(rx, exit_rx));
        (
            Self {
                name: spec.name,
                cmd,
                children: infos,
            },
            handle,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds and starts a child.
    pub async fn add_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Add(spec, tx))
            .map_err(|_| SupervisorError::Stopped)?;
        rx.await.map_err(|_| SupervisorError::Stopped)?
    }

    /// Stops a child and removes it: its token is cancelled, and after `timeout` (or its
    /// own shutdown timeout) its task is aborted. `Some(ZERO)` aborts at once.
    pub async fn terminate_child(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Terminate {
                name: name.to_string(),
                timeout,
                reply: tx,
            })
            .map_err(|_| SupervisorError::Stopped)?;
        rx.await.map_err(|_| SupervisorError::Stopped)?
    }

    /// Starts the next incarnation of a dormant child; a running one that goes dormant
    /// after this is started again at once. Does nothing to a child in another state,
    /// or to none.
    pub fn resume_child(&self, name: &str) {
        let _ = self.cmd.send(Cmd::Resume(name.to_string()));
    }

    /// Stops every child in reverse start order, then the supervisor.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The children, in start order.
    pub fn children(&self) -> Vec<ChildInfo> {
        self.children.lock().values().cloned().collect()
    }
}

struct Child {
    id: u64,
    spec: ChildSpec,
    state: ChildState,
    incarnation: u32,
    restarts: u32,
    history: RestartHistory,
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
    /// Set while the child is being stopped: its exit is expected, not a crash.
    stopping: bool,
    /// A resume came while it ran: if it goes dormant, it starts again at once.
    resume: bool,
}

struct Runner {
    spec: SupervisorSpec,
    children: Vec<Child>,
    by_name: HashMap<String, u64>,
    history: RestartHistory,
    next_id: u64,
    exit_tx: mpsc::UnboundedSender<(u64, u32, Exit)>,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    infos: Arc<Mutex<Infos>>,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

impl Runner {
    /// Publishes every child (after a change that may touch several).
    fn publish(&self) {
        *self.infos.lock() = self
            .children
            .iter()
            .map(|c| {
                let info = ChildInfo {
                    name: c.spec.name.clone(),
                    state: c.state,
                    restarts: c.restarts,
                };
                (c.id, info)
            })
            .collect();
    }

    /// Child `id`'s place: children stay in id order (added at the end, removed in
    /// place), so a binary search finds it.
    fn index(&self, id: u64) -> Option<usize> {
        self.children.binary_search_by_key(&id, |c| c.id).ok()
    }

    /// Publishes child `id` alone (added or changed), or its removal.
    fn publish_one(&self, id: u64) {
        let mut infos = self.infos.lock();
        match self.index(id).map(|i| &self.children[i]) {
            Some(c) => {
                infos.insert(
                    id,
                    ChildInfo {
                        name: c.spec.name.clone(),
                        state: c.state,
                        restarts: c.restarts,
                    },
                );
            }
            None => {
                infos.remove(&id);
            }
        }
    }

    /// Whether an exit is one asked for (a stop) or of an earlier incarnation.
    fn expected(&self, id: u64, incarnation: u32) -> bool {
        self.index(id)
            .map(|i| &self.children[i])
            .is_none_or(|c| c.stopping || c.incarnation != incarnation)
    }

    fn add(&mut self, spec: ChildSpec) {
        let id = self.next_id;
        self.next_id += 1;
        self.by_name.insert(spec.name.clone(), id);
        self.children.push(Child {
            id,
            spec,
            state: ChildState::Stopped,
            incarnation: 0,
            restarts: 0,
            history: RestartHistory::default(),
            token: CancellationToken::new(),
            handle: None,
            stopping: false,
            resume: false,
        });
        let i = self.children.len() - 1;
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let child = &mut self.children[i];
        child.token = CancellationToken::new();
        child.stopping = false;
        child.resume = false;
        child.state = ChildState::Running;
        let ctx = ChildCtx {
            name: child.spec.name.clone(),
            incarnation: child.incarnation,
            shutdown: child.token.clone(),
        };
        let fut = (child.spec.start)(ctx);
        let (id, incarnation, tx) = (child.id, child.incarnation, self.exit_tx.clone());
        child.handle = Some(tokio::spawn(async move {
            let exit = AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Exit::Crashed(panic_text(&*p)));
            let _ = tx.send((id, incarnation, exit));
        }));
    }

    /// Stops child `i` and waits for it (up to its timeout, then aborts it).
    async fn stop(&mut self, i: usize, timeout: Option<Duration>) {
        let child = &mut self.children[i];
        child.stopping = true;
        child.token.cancel();
        let timeout = timeout.unwrap_or(child.spec.shutdown_timeout);
        if let Some(h) = child.handle.take() {
            stop_task(h, timeout).await;
        }
        child.state = ChildState::Stopped;
    }

    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut exits: mpsc::UnboundedReceiver<(u64, u32, Exit)>,
    ) -> SupervisorExit {
        let mut timers: futures::stream::FuturesUnordered<BoxFuture<'static, u64>> =
            futures::stream::FuturesUnordered::new();
        let mut terminations: HashMap<u64, oneshot::Sender<Result<(), SupervisorError>>> =
            HashMap::new();
        loop {
            tokio::select! {
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else {
                        self.stop_all().await;
                        return SupervisorExit::Shutdown;
                    };
                    match cmd {
                        Cmd::Add(spec, reply) => {
                            if self.by_name.contains_key(&spec.name) {
                                let _ = reply.send(Err(SupervisorError::Exists(spec.name)));
                            } else {
                                self.add(spec);
                                self.publish_one(self.next_id - 1);
                                let _ = reply.send(Ok(()));
                            }
                        }
                        Cmd::Terminate { name, timeout, reply } => {
                            let Some(i) = self.by_name.get(&name).and_then(|id| self.index(*id)) else {
                                let _ = reply.send(Err(SupervisorError::NoSuchChild(name)));
                                continue;
                            };
                            // Stop it off the loop, so a slow child does not hold up others.
                            let child = &mut self.children[i];
                            child.stopping = true;
                            child.token.cancel();
                            let id = child.id;
                            let timeout = timeout.unwrap_or(child.spec.shutdown_timeout);
                            let handle = child.handle.take();
                            let tx = self.cmd_tx.clone();
                            terminations.insert(id, reply);
                            tokio::spawn(async move {
                                if let Some(h) = handle {
                                    stop_task(h, timeout).await;
                                }
                                let _ = tx.send(Cmd::Terminated(id));
                            });
                        }
                        Cmd::Terminated(id) => {
                            if let Some(i) = self.index(id) {
                                let child = self.children.remove(i);
                                self.by_name.remove(&child.spec.name);
                            }
                            self.publish_one(id);
                            if let Some(reply) = terminations.remove(&id) {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        Cmd::Resume(name) => {
                            let Some(i) = self.by_name.get(&name).and_then(|id| self.index(*id)) else {
                                continue;
                            };
                            match self.children[i].state {
                                ChildState::Dormant => {
                                    self.spawn(i);
                                    self.publish_one(self.children[i].id);
                                }
                                ChildState::Running => self.children[i].resume = true,
                                _ => {}
                            }
                        }
                        Cmd::Shutdown(done) => {
                            self.stop_all().await;
                            self.publish();
                            let _ = done.send(());
                            return SupervisorExit::Shutdown;
                        }
                    }
                }
                Some((id, incarnation, exit)) = exits.recv() => {
                    if self.expected(id, incarnation) {
                        continue; // a stop we asked for: nothing readers see changes
                    }
                    if exit == Exit::Dormant {
                        // One child changes (of possibly very many going dormant).
                        self.on_exit(id, incarnation, exit, &mut timers).await;
                        self.publish_one(id);
                        continue;
                    }
                    if let Some(reason) = self.on_exit(id, incarnation, exit, &mut timers).await {
                        self.publish();
                        return SupervisorExit::Escalated(reason);
                    }
                    self.publish();
                }
                Some(id) = timers.next(), if !timers.is_empty() => {
                    if let Some(i) = self.index(id)
                        && self.children[i].state == ChildState::Restarting
                    {
                        self.restart_group(i);
                    }
                    self.publish();
                }
            }
        }
    }

    /// Handles an exit; returns the reason when the supervisor must escalate.
    async fn on_exit(
        &mut self,
        id: u64,
        incarnation: u32,
        exit: Exit,
        timers: &mut futures::stream::FuturesUnordered<BoxFuture<'static, u64>>,
    ) -> Option<String> {
        let i = self.index(id)?;
        let child = &mut self.children[i];
        if child.stopping || child.incarnation != incarnation {
            return None; // an exit we asked for, or of an earlier incarnation
        }
        child.handle = None;
        if exit == Exit::Dormant {
            if child.resume {
                self.spawn(i);
            } else {
                child.state = ChildState::Dormant;
            }
            return None;
        }
        let now = Instant::now();
        let (intensity, own) = match child.spec.intensity {
            Some(i) => (i, true),
            None => (self.spec.intensity, false),
        };
        let history = if own { &child.history } else { &self.history };
        let decision = decide(
            child.spec.restart,
            exit.kind(),
            intensity,
            child.spec.backoff,
            history,
            now,
        );
        let reason = match &exit {
            Exit::Normal => "exited normally".to_string(),
            Exit::Shutdown => "shut down".to_string(),
            Exit::Crashed(r) => r.clone(),
            Exit::Dormant => "went dormant".to_string(),
        };
        match decision {
            Decision::Stop => {
                child.state = if matches!(exit, Exit::Crashed(_)) {
                    ChildState::Failed
                } else {
                    ChildState::Stopped
                };
                if matches!(exit, Exit::Crashed(_)) {
                    (self.spec.on_event)(SupervisorEvent::ChildFailed {
                        supervisor: self.spec.name.clone(),
                        child: child.spec.name.clone(),
                        reason: format!(
                            "{reason} (a {} child is not restarted)",
                            child.spec.restart.as_str()
                        ),
                    });
                }
                None
            }
            Decision::GiveUp if own => {
                child.state = ChildState::Failed;
                (self.spec.on_event)(SupervisorEvent::ChildFailed {
                    supervisor: self.spec.name.clone(),
                    child: child.spec.name.clone(),
                    reason: format!(
                        "{reason}; more than {} restarts in {:?}",
                        intensity.max_restarts, intensity.window
                    ),
                });
                None
            }
            Decision::GiveUp => {
                let why = format!(
                    "{} {reason}; more than {} restarts in {:?}",
                    child.spec.name, intensity.max_restarts, intensity.window
                );
                (self.spec.on_event)(SupervisorEvent::Escalated {
                    supervisor: self.spec.name.clone(),
                    reason: why.clone(),
                });
                self.stop_all().await;
                Some(why)
            }
            Decision::Restart { delay } => {
                if own {
                    child.history.record(now, intensity.window);
                } else {
                    self.history.record(now, intensity.window);
                }
                let child = &mut self.children[i];
                child.restarts += 1;
                child.incarnation += 1;
                (self.spec.on_event)(SupervisorEvent::ChildRestarted {
                    supervisor: self.spec.name.clone(),
                    child: child.spec.name.clone(),
                    incarnation: child.incarnation,
                    reason,
                    delay,
                });
                self.stop_siblings(i).await;
                if delay.is_zero() {
                    self.restart_group(i);
                } else {
                    self.children[i].state = ChildState::Restarting;
                    timers.push(Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        id
                    }));
                }
                None
            }
        }
    }

    /// The children the strategy restarts with child `i`, besides `i`.
    fn siblings(&self, i: usize) -> Vec<usize> {
        match self.spec.strategy {
            Strategy::OneForOne => Vec::new(),
            Strategy::RestForOne => (i + 1..self.children.len()).collect(),
            Strategy::OneForAll => (0..self.children.len()).filter(|j| *j != i).collect(),
        }
    }

    async fn stop_siblings(&mut self, i: usize) {
        for j in self.siblings(i).into_iter().rev() {
            if self.children[j].state == ChildState::Running {
                self.stop(j, None).await;
            }
        }
    }

    /// Starts child `i` and, per the strategy, its siblings, in start order.
    fn restart_group(&mut self, i: usize) {
        let mut group = self.siblings(i);
        group.push(i);
        group.sort_unstable();
        for j in group {
            if j != i {
                let sib = &mut self.children[j];
                if matches!(sib.state, ChildState::Failed) {
                    continue;
                }
                sib.restarts += 1;
                sib.incarnation += 1;
                (self.spec.on_event)(SupervisorEvent::ChildRestarted {
                    supervisor: self.spec.name.clone(),
                    child: sib.spec.name.clone(),
                    incarnation: sib.incarnation,
                    reason: format!(
                        "restarted with {} ({:?})",
                        self.children[i].spec.name, self.spec.strategy
                    ),
                    delay: Duration::ZERO,
                });
            }
            self.spawn(j);
        }
    }

    async fn stop_all(&mut self) {
        for i in (0..self.children.len()).rev() {
            if self.children[i].handle.is_some() {
                self.stop(i, None).await;
            }
        }
    }
}

/// Waits up to `timeout` for a task to finish, then aborts it and waits for that.
async fn stop_task(mut handle: JoinHandle<()>, timeout: Duration) {
    if tokio::time::timeout(timeout, &mut handle).await.is_err() {
        handle.abort();
        let _ = handle.await;
    }
}
