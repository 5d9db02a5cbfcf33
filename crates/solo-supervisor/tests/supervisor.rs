//! The supervisor runner: strategies, restart types, intensity, escalation, shutdown
//! order, termination and dormant children, driven by children that crash (or go
//! dormant) on command.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use solo_supervisor::{
    ChildSpec, ChildState, Exit, Intensity, RestartType, Strategy, Supervisor, SupervisorEvent,
    SupervisorExit, SupervisorSpec,
};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
enum Action {
    Crash,
    Panic,
    Exit,
    Dormant,
}

/// A log of what happened, shared by the children and the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// A child that logs its starts and stops and obeys actions sent to it.
fn child(
    name: &str,
    restart: RestartType,
    log: &Log,
) -> (ChildSpec, mpsc::UnboundedSender<Action>) {
    let (tx, rx) = mpsc::unbounded_channel::<Action>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let log = log.clone();
    let n = name.to_string();
    let spec = ChildSpec {
        name: name.to_string(),
        restart,
        shutdown_timeout: Duration::from_secs(1),
        intensity: None,
        backoff: None,
        start: Arc::new(move |ctx| {
            let (rx, log, n) = (Arc::clone(&rx), log.clone(), n.clone());
            Box::pin(async move {
                log.push(format!("start {n}#{}", ctx.incarnation));
                let mut rx = rx.lock().await;
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => {
                        log.push(format!("stop {n}"));
                        Exit::Shutdown
                    }
                    action = rx.recv() => match action {
                        Some(Action::Crash) => Exit::Crashed(format!("{n} crashed")),
                        Some(Action::Panic) => panic!("{n} panicked on purpose"),
                        Some(Action::Exit) | None => Exit::Normal,
                        Some(Action::Dormant) => Exit::Dormant,
                    },
                }
            })
        }),
    };
    (spec, tx)
}

fn spec(
    strategy: Strategy,
    intensity: Intensity,
    events: &Arc<Mutex<Vec<SupervisorEvent>>>,
) -> SupervisorSpec {
    let events = Arc::clone(events);
    SupervisorSpec {
        name: "sup".into(),
        strategy,
        intensity,
        on_event: Arc::new(move |e| events.lock().push(e)),
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Starts children a, b, c, d; crashes b; returns what happened.
async fn crash_b(strategy: Strategy) -> Vec<String> {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    let mut children = Vec::new();
    for n in ["a", "b", "c", "d"] {
        let (c, tx) = child(n, RestartType::Permanent, &log);
        children.push(c);
        senders.push(tx);
    }
    let (sup, _h) = Supervisor::start(
        spec(strategy, Intensity::new(5, Duration::from_secs(5)), &events),
        children,
    );
    settle().await;
    log.take();
    senders[1].send(Action::Crash).unwrap();
    settle().await;
    let got = log.take();
    let restarted: Vec<String> = events
        .lock()
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildRestarted { child, .. } => Some(child.clone()),
            _ => None,
        })
        .collect();
    assert!(restarted.contains(&"b".to_string()));
    sup.shutdown().await;
    got
}

#[tokio::test]
async fn one_for_one_restarts_only_the_crashed_child() {
    assert_eq!(crash_b(Strategy::OneForOne).await, ["start b#1"]);
}

#[tokio::test]
async fn rest_for_one_restarts_the_crashed_child_and_those_after_it() {
    assert_eq!(
        crash_b(Strategy::RestForOne).await,
        ["stop d", "stop c", "start b#1", "start c#1", "start d#1"]
    );
}

#[tokio::test]
async fn one_for_all_restarts_everyone() {
    assert_eq!(
        crash_b(Strategy::OneForAll).await,
        [
            "stop d",
            "stop c",
            "stop a",
            "start a#1",
            "start b#1",
            "start c#1",
            "start d#1"
        ]
    );
}

#[tokio::test]
async fn a_panic_is_a_crash() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (c, tx) = child("p", RestartType::Permanent, &log);
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        vec![c],
    );
    settle().await;
    tx.send(Action::Panic).unwrap();
    settle().await;
    let reasons: Vec<String> = events
        .lock()
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildRestarted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("panicked on purpose"), "{reasons:?}");
    assert_eq!(sup.children()[0].restarts, 1);
}

#[tokio::test]
async fn exceeding_the_intensity_escalates_and_stops_every_child() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (a, _ta) = child("a", RestartType::Permanent, &log);
    let (b, tb) = child("b", RestartType::Permanent, &log);
    let (_sup, handle) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(2, Duration::from_secs(60)),
            &events,
        ),
        vec![a, b],
    );
    for _ in 0..3 {
        settle().await;
        tb.send(Action::Crash).unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(exit, SupervisorExit::Escalated(ref r) if r.contains("b crashed")),
        "{exit:?}"
    );
    assert!(log.take().contains(&"stop a".to_string()));
    assert!(matches!(
        events.lock().last(),
        Some(SupervisorEvent::Escalated { .. })
    ));
}

#[tokio::test]
async fn a_child_with_its_own_intensity_fails_alone() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (a, ta) = child("a", RestartType::Permanent, &log);
    let (mut b, tb) = child("b", RestartType::Permanent, &log);
    b.intensity = Some(Intensity::new(1, Duration::from_secs(60)));
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(100, Duration::from_secs(60)),
            &events,
        ),
        vec![a, b],
    );
    settle().await;
    tb.send(Action::Crash).unwrap();
    settle().await;
    tb.send(Action::Crash).unwrap();
    settle().await;
    let children = sup.children();
    assert_eq!(children[1].state, ChildState::Failed);
    assert_eq!(children[0].state, ChildState::Running);
    assert!(
        events
            .lock()
            .iter()
            .any(|e| matches!(e, SupervisorEvent::ChildFailed { child, .. } if child == "b"))
    );
    // The other child still works and restarts.
    ta.send(Action::Crash).unwrap();
    settle().await;
    assert_eq!(sup.children()[0].restarts, 1);
}

#[tokio::test]
async fn restart_types_decide_what_comes_back() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (t, tt) = child("temp", RestartType::Temporary, &log);
    let (r, tr) = child("trans", RestartType::Transient, &log);
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        vec![t, r],
    );
    settle().await;
    tt.send(Action::Crash).unwrap();
    tr.send(Action::Exit).unwrap();
    settle().await;
    let states: Vec<ChildState> = sup.children().iter().map(|c| c.state).collect();
    assert_eq!(states, [ChildState::Failed, ChildState::Stopped]);
}

#[tokio::test]
async fn shutdown_stops_children_in_reverse_start_order() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (children, _senders): (Vec<ChildSpec>, Vec<_>) = ["a", "b", "c"]
        .iter()
        .map(|n| child(n, RestartType::Permanent, &log))
        .unzip();
    let (sup, handle) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        children,
    );
    settle().await;
    log.take();
    sup.shutdown().await;
    assert_eq!(log.take(), ["stop c", "stop b", "stop a"]);
    assert_eq!(handle.await.unwrap(), SupervisorExit::Shutdown);
}

#[tokio::test]
async fn terminating_a_stuck_child_aborts_it_without_holding_up_the_others() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    // A child that ignores its token.
    let stuck = ChildSpec {
        name: "stuck".into(),
        restart: RestartType::Permanent,
        shutdown_timeout: Duration::from_millis(300),
        intensity: None,
        backoff: None,
        start: Arc::new(|_| {
            Box::pin(async {
                futures::future::pending::<()>().await;
                Exit::Normal
            })
        }),
    };
    let (other, t_other) = child("other", RestartType::Permanent, &log);
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        vec![stuck, other],
    );
    settle().await;
    let started = tokio::time::Instant::now();
    let sup2 = sup.clone();
    let kill = tokio::spawn(async move { sup2.terminate_child("stuck", None).await });
    // While the stuck child is being stopped, the other child crashes and comes back.
    settle().await;
    t_other.send(Action::Crash).unwrap();
    settle().await;
    assert!(log.take().contains(&"start other#1".to_string()));
    kill.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let names: Vec<String> = sup.children().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["other"]);
    assert_eq!(
        sup.terminate_child("stuck", None).await,
        Err(solo_supervisor::SupervisorError::NoSuchChild(
            "stuck".into()
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_the_restart() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (mut c, tx) = child("slow", RestartType::Permanent, &log);
    c.backoff = Some(solo_supervisor::Backoff {
        initial: Duration::from_secs(2),
        factor: 2.0,
        max: Duration::from_secs(60),
    });
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(60)),
            &events,
        ),
        vec![c],
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    log.take();
    tx.send(Action::Crash).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sup.children()[0].state, ChildState::Restarting);
    assert!(log.take().is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(log.take(), ["start slow#1"]);
}

#[tokio::test]
async fn dynamic_children_can_be_added_and_names_are_unique() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        Vec::new(),
    );
    let (a, _t) = child("a", RestartType::Permanent, &log);
    sup.add_child(a.clone()).await.unwrap();
    assert_eq!(
        sup.add_child(a).await,
        Err(solo_supervisor::SupervisorError::Exists("a".into()))
    );
    settle().await;
    assert_eq!(log.take(), ["start a#0"]);
}

/// Children added and removed one by one (as a tenant's services are) stay listed in
/// start order, and each is still found by its exits after removals before it.
#[tokio::test]
async fn many_children_added_and_removed_stay_in_order_and_are_found() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (sup, _h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(5, Duration::from_secs(5)),
            &events,
        ),
        Vec::new(),
    );
    let mut senders = Vec::new();
    for i in 0..60 {
        let (c, tx) = child(&format!("c{i}"), RestartType::Permanent, &log);
        sup.add_child(c).await.unwrap();
        senders.push(tx);
    }
    for i in (0..60).step_by(3) {
        sup.terminate_child(&format!("c{i}"), None).await.unwrap();
    }
    let names: Vec<String> = sup.children().into_iter().map(|c| c.name).collect();
    let want: Vec<String> = (0..60)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("c{i}"))
        .collect();
    assert_eq!(names, want);
    settle().await;
    log.take();
    // The last child crashes: found past forty removals, restarted alone.
    senders[59].send(Action::Crash).unwrap();
    settle().await;
    assert_eq!(log.take(), ["start c59#1"]);
    let last = sup.children().pop().unwrap();
    assert_eq!((last.name.as_str(), last.restarts), ("c59", 1));
}

/// A dormant child holds no task and is not a restart (however often, whatever the
/// intensity): `resume_child` starts it again; a resume that comes while it runs starts
/// it again at once when it goes dormant; a dormant child is terminated, and shut down,
/// with no task to stop.
#[tokio::test]
async fn a_dormant_child_waits_for_a_resume_without_a_task() {
    let log = Log::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (a, ta) = child("a", RestartType::Permanent, &log);
    let (b, tb) = child("b", RestartType::Permanent, &log);
    let (sup, h) = Supervisor::start(
        spec(
            Strategy::OneForOne,
            Intensity::new(1, Duration::from_secs(5)),
            &events,
        ),
        vec![a, b],
    );
    settle().await;
    assert_eq!(log.take(), ["start a#0", "start b#0"]);
    for _ in 0..3 {
        ta.send(Action::Dormant).unwrap();
        settle().await;
        assert_eq!(sup.children()[0].state, ChildState::Dormant);
        assert!(log.take().is_empty());
        sup.resume_child("a");
        settle().await;
        assert_eq!(log.take(), ["start a#0"]);
        assert_eq!(sup.children()[0].state, ChildState::Running);
    }
    sup.resume_child("a");
    sup.resume_child("nobody");
    ta.send(Action::Dormant).unwrap();
    settle().await;
    assert_eq!(log.take(), ["start a#0"], "resumed while running");
    assert_eq!(sup.children()[0].state, ChildState::Running);
    assert_eq!(sup.children()[0].restarts, 0);
    assert!(events.lock().is_empty(), "{:?}", events.lock());

    ta.send(Action::Dormant).unwrap();
    tb.send(Action::Dormant).unwrap();
    settle().await;
    sup.terminate_child("a", None).await.unwrap();
    let left: Vec<String> = sup.children().into_iter().map(|c| c.name).collect();
    assert_eq!(left, ["b"]);
    sup.shutdown().await;
    assert_eq!(h.await.unwrap(), SupervisorExit::Shutdown);
    assert!(log.take().is_empty(), "a dormant child has nothing to stop");
}
