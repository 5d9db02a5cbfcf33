//! The supervision tree (`docs/design.md`, "Supervision"):
//!
//! ```text
//! solo (root, one_for_one)
//! ├── system (rest_for_one): event_store monitor capabilities vault discovery
//! │                          telemetry gateway
//! └── tenants (dynamic, one_for_one)
//!     └── one supervisor per tenant (one_for_one, created on first deploy)
//!         └── its services
//! ```
//!
//! A system component is a long-running task. A panic or error in one is handled by the
//! system supervisor with `rest_for_one`: the components after it restart, those before
//! it do not (3 restarts in 5 s at most, then the system supervisor escalates to the
//! root, which restarts it whole). Services live in the tenants' subtree and are never
//! touched by a component's restart.
//!
//! Each component is a loop that owns a piece of work and rebuilds what it needs when it
//! restarts. Work with no loop of its own (deploying, admission and load shedding, the
//! discovery registry's bookkeeping) runs inside the operation that needs it, with its
//! state loaded from the store at start, so it is no component: a placeholder the tree
//! restarts while restoring nothing would only mislead an operator reading the tree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use solo_supervisor::{
    ChildInfo, ChildSpec, ChildState, Exit, Intensity, RestartType, Strategy, Supervisor,
    SupervisorEvent, SupervisorExit, SupervisorSpec,
};
use solo_types::api::TreeNode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The system components, in start order.
pub const SYSTEM_COMPONENTS: [&str; 8] = [
    "event_store",
    "monitor",
    "capabilities",
    "vault",
    "discovery",
    "telemetry",
    "hibernation",
    "gateway",
];

/// What a system component's task gets.
#[derive(Debug, Clone)]
pub struct ComponentCtx {
    /// Cancelled when the component must stop.
    pub shutdown: CancellationToken,
    pub incarnation: u32,
}

/// A system component's task: runs until `shutdown` is cancelled; an `Err` or a panic
/// is a crash.
pub type ComponentBody =
    Arc<dyn Fn(ComponentCtx) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

fn state_name(s: ChildState) -> &'static str {
    match s {
        ChildState::Running => "running",
        ChildState::Restarting => "restarting",
        ChildState::Stopped => "stopped",
        ChildState::Failed => "failed",
        ChildState::Dormant => "dormant",
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::OneForOne => "one_for_one",
        Strategy::RestForOne => "rest_for_one",
        Strategy::OneForAll => "one_for_all",
    }
}

/// The root and the two subtrees.
pub(crate) struct Tree {
    root: Supervisor,
    system: Arc<Mutex<Option<Supervisor>>>,
    tenants: Supervisor,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    faults: HashMap<&'static str, Arc<Notify>>,
    pub(crate) fatal: Arc<Notify>,
}

/// Where the tree reports restarts and escalations.
pub(crate) type OnEvent = Arc<dyn Fn(SupervisorEvent) + Send + Sync>;

impl Tree {
    /// Starts the tree with `bodies` for the system components (missing ones idle).
    pub(crate) fn start(
        mut bodies: HashMap<&'static str, ComponentBody>,
        on_event: OnEvent,
    ) -> Self {
        let faults: HashMap<&'static str, Arc<Notify>> = SYSTEM_COMPONENTS
            .iter()
            .map(|n| (*n, Arc::new(Notify::new())))
            .collect();
        let components: Vec<(&'static str, ComponentBody)> = SYSTEM_COMPONENTS
            .iter()
            .map(|n| (*n, bodies.remove(n).unwrap_or_else(idle)))
            .collect();

        let system_slot: Arc<Mutex<Option<Supervisor>>> = Arc::new(Mutex::new(None));
        let system_child = {
            let (slot, faults, on_event) = (
                Arc::clone(&system_slot),
                faults.clone(),
                Arc::clone(&on_event),
            );
            ChildSpec {
                name: "system".into(),
                restart: RestartType::Permanent,
                shutdown_timeout: Duration::from_secs(30),
                intensity: None,
                backoff: None,
                start: Arc::new(move |ctx| {
                    let children = components
                        .iter()
                        .map(|(name, body)| {
                            component_child(name, Arc::clone(body), Arc::clone(&faults[name]))
                        })
                        .collect();
                    let (sup, handle) = Supervisor::start(
                        SupervisorSpec {
                            name: "system".into(),
                            strategy: Strategy::RestForOne,
                            intensity: Intensity::new(3, Duration::from_secs(5)),
                            on_event: Arc::clone(&on_event),
                        },
                        children,
                    );
                    *slot.lock() = Some(sup.clone());
                    Box::pin(watch_supervisor(sup, handle, ctx.shutdown))
                }),
            }
        };

        let (tenants, tenants_handle) = Supervisor::start(
            SupervisorSpec {
                name: "tenants".into(),
                strategy: Strategy::OneForOne,
                intensity: Intensity::new(u32::MAX, Duration::from_secs(1)),
                on_event: Arc::clone(&on_event),
            },
            Vec::new(),
        );
        let tenants_handle = Arc::new(Mutex::new(Some(tenants_handle)));
        let tenants_child = {
            let (sup, handle) = (tenants.clone(), tenants_handle);
            ChildSpec {
                name: "tenants".into(),
                restart: RestartType::Temporary,
                shutdown_timeout: Duration::from_secs(60),
                intensity: None,
                backoff: None,
                start: Arc::new(move |ctx| {
                    let (sup, handle) = (sup.clone(), handle.lock().take());
                    Box::pin(async move {
                        match handle {
                            Some(h) => watch_supervisor(sup, h, ctx.shutdown).await,
                            None => {
                                Exit::Crashed("the tenants supervisor cannot be restarted".into())
                            }
                        }
                    })
                }),
            }
        };

        let fatal = Arc::new(Notify::new());
        let root_events = {
            let (on_event, fatal) = (on_event, Arc::clone(&fatal));
            Arc::new(move |e: SupervisorEvent| {
                if matches!(e, SupervisorEvent::Escalated { .. }) {
                    fatal.notify_waiters();
                    fatal.notify_one();
                }
                on_event(e);
            })
        };
        let (root, root_handle) = Supervisor::start(
            SupervisorSpec {
                name: "solo".into(),
                strategy: Strategy::OneForOne,
                intensity: Intensity::new(3, Duration::from_secs(60)),
                on_event: root_events,
            },
            vec![system_child, tenants_child],
        );
        let fatal2 = Arc::clone(&fatal);
        tokio::spawn(async move {
            if let Ok(SupervisorExit::Escalated(_)) = root_handle.await {
                fatal2.notify_waiters();
                fatal2.notify_one();
            }
        });
        Self {
            root,
            system: system_slot,
            tenants,
            faults,
            fatal,
        }
    }

    pub(crate) fn tenants(&self) -> &Supervisor {
        &self.tenants
    }

    /// Stops the tenants' services, then the system components.
    pub(crate) async fn shutdown(&self) {
        self.root.shutdown().await;
    }

    /// Makes a component panic (for fault-injection tests).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn inject_fault(&self, component: &str) -> bool {
        match self.faults.get(component) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// A snapshot of the tree. `tenant_trees` fills in each tenant's services.
    pub(crate) fn snapshot(
        &self,
        tenant_trees: impl Fn(&str) -> Vec<TreeNode>,
        only_tenant: Option<&str>,
    ) -> TreeNode {
        let leaf = |c: &ChildInfo, kind: &str| TreeNode {
            name: c.name.clone(),
            kind: kind.into(),
            strategy: None,
            state: state_name(c.state).into(),
            restarts: c.restarts,
            node: None,
            children: Vec::new(),
        };
        let roots = self.root.children();
        let system = self.system.lock().clone();
        let mut children = Vec::new();
        for c in &roots {
            let mut node = leaf(c, "supervisor");
            if c.name == "system" {
                node.strategy = Some(strategy_name(Strategy::RestForOne).into());
                if let Some(sys) = &system {
                    node.children = sys.children().iter().map(|c| leaf(c, "worker")).collect();
                }
            } else {
                node.strategy = Some(strategy_name(Strategy::OneForOne).into());
                node.children = self
                    .tenants
                    .children()
                    .iter()
                    .filter(|t| only_tenant.is_none_or(|o| o == t.name))
                    .map(|t| {
                        let mut n = leaf(t, "supervisor");
                        n.strategy = Some(strategy_name(Strategy::OneForOne).into());
                        n.children = tenant_trees(&t.name);
                        n
                    })
                    .collect();
            }
            children.push(node);
        }
        TreeNode {
            name: "solo".into(),
            kind: "supervisor".into(),
            strategy: Some(strategy_name(Strategy::OneForOne).into()),
            state: "running".into(),
            restarts: 0,
            node: None,
            children,
        }
    }
}

/// Runs a supervisor as a child: stops it when asked; an escalation is a crash.
async fn watch_supervisor(
    sup: Supervisor,
    mut handle: tokio::task::JoinHandle<SupervisorExit>,
    shutdown: CancellationToken,
) -> Exit {
    tokio::select! {
        () = shutdown.cancelled() => {
            sup.shutdown().await;
            let _ = handle.await;
            Exit::Shutdown
        }
        exit = &mut handle => match exit {
            Ok(SupervisorExit::Shutdown) => Exit::Shutdown,
            Ok(SupervisorExit::Escalated(why)) => Exit::Crashed(why),
            Err(e) => Exit::Crashed(format!("the supervisor failed: {e}")),
        }
    }
}

fn component_child(name: &'static str, body: ComponentBody, fault: Arc<Notify>) -> ChildSpec {
    ChildSpec {
        name: name.into(),
        restart: RestartType::Permanent,
        shutdown_timeout: Duration::from_secs(10),
        intensity: None,
        backoff: None,
        start: Arc::new(move |ctx| {
            let (body, fault) = (Arc::clone(&body), Arc::clone(&fault));
            Box::pin(async move {
                let token = ctx.shutdown.clone();
                let run = body(ComponentCtx {
                    shutdown: token.clone(),
                    incarnation: ctx.incarnation,
                });
                tokio::select! {
                    r = run => match r {
                        Ok(()) if token.is_cancelled() => Exit::Shutdown,
                        Ok(()) => Exit::Normal,
                        Err(e) => Exit::Crashed(e),
                    },
                    () = fault.notified() => panic!("fault injected into {name}"),
                }
            })
        }),
    }
}

/// A component with nothing to do yet: waits for its shutdown.
fn idle() -> ComponentBody {
    Arc::new(|ctx| {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    })
}
