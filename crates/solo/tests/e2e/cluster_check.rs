//! A checker in the spirit of Jepsen for cluster mode: two clients deploy, kill, put
//! secrets, grant, register and call, each operation through the next node in turn (a
//! standby forwards it to the active node), while a schedule kills (`kill -9`) and pauses
//! (`SIGSTOP` past the lease) the active Solo node and kills NATS servers. Afterwards
//! every acknowledged write is present, every acknowledged kill took effect, the vault
//! decrypts every acknowledged secret, the chain verifies, and the log shows every start
//! made under the starting node's own lease. The log is compacted every 30 entries
//! meanwhile, so nodes that come back start from the latest copy of a view.
//! `CLUSTER_CHECK_FAULTS=N` runs a longer schedule (default 4 faults).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use solo_client::Solo;
use solo_cluster::testing::{NatsCluster, share_identity};
use solo_types::api::{GrantRequest, KillOptions, ListFilter, RegisterRequest};
use solo_types::{EventFilter, EventQuery, Format, Permissions, Resource, ServiceId};

use crate::harness::{SOLO, admin_profile_of, counter_js};

const LEASE_MS: u64 = 2_000;
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients running the workload at once.
const CLIENTS: usize = 2;

/// One `solo server` node on a data directory that outlives its processes.
struct Node {
    data: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    lines: Option<std::sync::mpsc::Receiver<String>>,
    /// Whether the running process said it listens (it became the active node).
    listening: bool,
    /// How often a node that lost its lease was started again.
    restarts: usize,
}

impl Node {
    fn new(data: PathBuf, config: PathBuf) -> Self {
        Self {
            data,
            config,
            child: None,
            lines: None,
            listening: false,
            restarts: 0,
        }
    }

    fn spawn(&mut self) {
        use std::io::BufRead;
        let mut child = Command::new(SOLO)
            .args([
                "server",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .env_remove("SOLO_MASTER_KEY")
            .env("SOLO_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.data.with_extension("stderr"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
        self.listening = false;
    }

    /// The end of this node's stderr, newest first.
    fn tail(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("stderr"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Notes whether the process listens, and starts it again if it exited because it
    /// lost the lease (status 3), as a service manager would (`Restart=on-failure`). Any
    /// other exit fails the check.
    fn supervise(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Some(lines) = &self.lines {
            while let Ok(line) = lines.try_recv() {
                if line.starts_with("http listening on ") {
                    self.listening = true;
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(
                status.code(),
                Some(3),
                "a node exited other than by losing its lease ({status}); the end of its \
                 stderr:\n{}",
                self.tail()
            );
            self.restarts += 1;
            self.spawn();
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.listening = false;
    }

    /// Waits for the process to exit by itself (a node that lost its lease).
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take().unwrap();
        self.listening = false;
        crate::harness::wait_child(&mut c, within).map(|s| s.code().unwrap_or(-1))
    }
}

/// Waits until one node (other than `except`, which may be paused) listens, supervising
/// them all meanwhile; returns its index.
fn wait_active(nodes: &mut [Node], except: Option<usize>, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, n) in nodes.iter_mut().enumerate() {
            if Some(i) == except {
                continue;
            }
            n.supervise();
            if n.listening {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node took over within {within:?}; the ends of their stderr:\n{}",
            nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.data.display(), n.tail()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the client was told succeeded.
#[derive(Default)]
struct Acked {
    deployed: BTreeSet<usize>,
    killed: BTreeSet<usize>,
    secrets: BTreeSet<usize>,
    registered: BTreeSet<usize>,
    granted: BTreeSet<String>,
    /// Calls answered.
    called: usize,
    /// Kills whose outcome is unknown: the service may or may not be gone.
    kill_unknown: BTreeSet<usize>,
    unknown: usize,
    /// A sample of the failures, for the report.
    failures: Vec<String>,
}

fn sid(i: usize) -> ServiceId {
    ServiceId::new(format!("s{i}")).unwrap()
}

/// A client of the first node that answers, trying them from the `turn`-th on (a
/// standby forwards to the active node; one that is starting or paused does not answer).
async fn client(nodes: &[PathBuf], turn: usize) -> Option<Solo> {
    let n = nodes.len();
    for data in (0..n).map(|k| &nodes[(turn + k) % n]) {
        let Some(profile) = admin_profile_of(data) else {
            continue;
        };
        if let Ok(Ok(solo)) = tokio::time::timeout(Duration::from_secs(2), profile.open()).await
            && matches!(
                tokio::time::timeout(Duration::from_secs(2), solo.whoami()).await,
                Ok(Ok(_))
            )
        {
            return Some(solo);
        }
    }
    None
}

/// Client `me`'s operations until `stop`: its ids are `me` modulo `CLIENTS`.
async fn workload(
    me: usize,
    nodes: Vec<PathBuf>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<Mutex<bool>>,
) {
    let code = counter_js().into_bytes();
    let anchor = ServiceId::new("anchor").unwrap();
    let mut n = 0usize;
    while !*stop.lock().unwrap() {
        n += 1;
        let i = n * CLIENTS + me;
        // Each kind of operation goes through every node in turn.
        let Some(solo) = client(&nodes, n + n / 6).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let op = async {
            match n % 6 {
                0 => {
                    let d = solo_types::api::DeployRequest::new(sid(i), Format::Js, code.clone());
                    solo.deploy(&d).await.map(|_| Ack::Deployed(i))
                }
                1 => solo
                    .put_secret(&format!("k{i}"), format!("v{i}").as_bytes())
                    .await
                    .map(|_| Ack::Secret(i)),
                2 => {
                    let victim = {
                        let a = acked.lock().unwrap();
                        a.deployed
                            .iter()
                            .find(|d| !a.killed.contains(d) && !a.kill_unknown.contains(d))
                            .copied()
                    };
                    match victim {
                        Some(v) => {
                            // Until it is answered, its outcome is unknown.
                            acked.lock().unwrap().kill_unknown.insert(v);
                            solo.kill(&sid(v), KillOptions::default())
                                .await
                                .map(|_| Ack::Killed(v))
                        }
                        None => Ok(Ack::Nothing),
                    }
                }
                3 => solo
                    .register(&RegisterRequest {
                        service_id: "anchor".into(),
                        name: format!("name{i}"),
                        ..RegisterRequest::default()
                    })
                    .await
                    .map(|_| Ack::Registered(i)),
                4 => solo
                    .call(&anchor, r#"{"op":"inc"}"#, None)
                    .await
                    .map(|_| Ack::Called),
                _ => solo
                    .grant(&GrantRequest {
                        resource: Resource::Service(anchor.clone()),
                        permissions: Permissions::parse(["call"]).unwrap(),
                        ttl_seconds: Some(3600),
                    })
                    .await
                    .map(|g| Ack::Granted(g.info.hash)),
            }
        };
        let outcome = tokio::time::timeout(OP_TIMEOUT, op).await;
        let mut a = acked.lock().unwrap();
        match outcome {
            Ok(Ok(Ack::Deployed(i))) => drop(a.deployed.insert(i)),
            Ok(Ok(Ack::Secret(i))) => drop(a.secrets.insert(i)),
            Ok(Ok(Ack::Killed(i))) => {
                a.kill_unknown.remove(&i);
                a.killed.insert(i);
            }
            Ok(Ok(Ack::Registered(i))) => drop(a.registered.insert(i)),
            Ok(Ok(Ack::Granted(hash))) => drop(a.granted.insert(hash)),
            Ok(Ok(Ack::Called)) => a.called += 1,
            Ok(Ok(Ack::Nothing)) => {}
            Ok(Err(e)) => {
                a.unknown += 1;
                if a.failures.len() < 12 {
                    a.failures.push(format!("op {}: {e}", n % 6));
                }
            }
            Err(_) => {
                a.unknown += 1;
                if a.failures.len() < 12 {
                    a.failures.push(format!("op {}: timed out", n % 6));
                }
            }
        }
    }
}

/// An acknowledged operation.
enum Ack {
    Deployed(usize),
    Secret(usize),
    Killed(usize),
    Registered(usize),
    Granted(String),
    Called,
    Nothing,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_killed_and_paused_nodes_and_lost_nats_servers() {
    let faults: usize = std::env::var("CLUSTER_CHECK_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut nats = NatsCluster::start(3, true);
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| {
            let config = root.path().join(format!("{id}.toml"));
            // Compaction every 30 entries: nodes coming back start from copies of a view.
            let toml = nats.solo_config(id, LEASE_MS, None) + "compact_every = 30\n";
            std::fs::write(&config, toml).unwrap();
            Node::new(root.path().join(id), config)
        })
        .collect();
    nodes[0].spawn();
    wait_active(&mut nodes[..1], None, Duration::from_secs(60));
    share_identity(&nodes[0].data, &nodes[1].data).unwrap();
    nodes[1].spawn();
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.data.clone()).collect();
    // The service registrations name; never killed.
    let first = client(&dirs, 0).await.unwrap();
    let anchor = solo_types::api::DeployRequest::new(
        ServiceId::new("anchor").unwrap(),
        Format::Js,
        counter_js().into_bytes(),
    );
    first.deploy(&anchor).await.unwrap();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(Mutex::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|me| {
            tokio::spawn(workload(
                me,
                dirs.clone(),
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();

    for f in 0..faults {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let active = wait_active(&mut nodes, None, Duration::from_secs(30));
        match f % 3 {
            0 => {
                nodes[active].kill9();
                wait_active(&mut nodes, Some(active), Duration::from_secs(30));
                nodes[active].spawn();
            }
            1 => {
                let pid = nodes[active].pid();
                signal(pid, libc::SIGSTOP);
                wait_active(&mut nodes, Some(active), Duration::from_secs(30));
                signal(pid, libc::SIGCONT);
                let code = nodes[active].wait_exit(Duration::from_secs(15));
                assert_eq!(code, Some(3), "a node that lost its lease exits with 3");
                nodes[active].spawn();
            }
            _ => {
                let victim = f % 3;
                nats.kill(victim);
                tokio::time::sleep(Duration::from_secs(2)).await;
                nats.restart(victim);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop.lock().unwrap() = true;
    // A node that lost its lease stops by itself within the lease's time; let it.
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
    for l in load {
        l.await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let solo = loop {
        wait_active(&mut nodes, None, Duration::from_secs(60));
        if let Some(s) = client(&dirs, 0).await {
            break s;
        }
        assert!(Instant::now() < deadline, "no node answers a client");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let a = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "checker: {faults} faults; acknowledged {} deploys, {} kills, {} secrets, {} \
         registrations, {} grants, {} calls answered; {} operations with an unknown outcome",
        a.deployed.len(),
        a.killed.len(),
        a.secrets.len(),
        a.registered.len(),
        a.granted.len(),
        a.called,
        a.unknown
    );
    println!(
        "node restarts after a lost lease (besides the faults): {}",
        nodes.iter().map(|n| n.restarts).sum::<usize>()
    );
    println!("a sample of the failures: {:#?}", a.failures);
    let tails = || {
        dirs.iter()
            .map(|d| {
                let log = std::fs::read_to_string(d.with_extension("stderr")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!("{}:\n{}", d.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        a.deployed.len() >= 3,
        "the workload made progress; the nodes' logs (newest first):\n{}",
        tails()
    );
    let logs: String = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.with_extension("stderr")).unwrap_or_default())
        .collect();
    let compactions = logs.matches("compacted the cluster's log").count();
    println!(
        "compactions: {compactions}; nodes started from a copy of a view: {}",
        logs.matches("starts from the latest copy").count()
    );
    assert!(
        compactions > 0,
        "the log was compacted meanwhile:\n{}",
        tails()
    );
    let listed: BTreeSet<String> = solo
        .list(&ListFilter {
            limit: 1000,
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.service_id.as_str().to_string())
        .collect();
    for d in &a.deployed {
        let present = listed.contains(&format!("s{d}"));
        if a.killed.contains(d) {
            assert!(!present, "s{d}'s acknowledged kill is lost");
        } else if !a.kill_unknown.contains(d) {
            assert!(present, "s{d}'s acknowledged deploy is lost");
        }
    }
    for k in &a.secrets {
        let s = solo.get_secret(&format!("k{k}")).await.unwrap();
        assert_eq!(s.value.expose(), format!("v{k}").as_bytes(), "secret k{k}");
    }
    let names: BTreeSet<String> = solo
        .registrations(None)
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|r| r.service_name)
        .collect();
    for r in &a.registered {
        assert!(
            names.contains(&format!("name{r}")),
            "registration name{r} is lost"
        );
    }
    let caps: BTreeSet<String> = solo
        .list_capabilities()
        .await
        .unwrap()
        .capabilities
        .into_iter()
        .map(|c| c.hash)
        .collect();
    for g in &a.granted {
        assert!(caps.contains(g), "grant {g} is lost");
    }
    let v = solo.verify_events().await.unwrap();
    assert!(v.ok, "the chain verifies: {:?}", v.reason);
    only_the_lease_holder_starts(&solo).await;
}

/// Checks from the log that no node started its services without the lease: each
/// `system_started` names the node the last lease event before it handed the lease to.
async fn only_the_lease_holder_starts(solo: &Solo) {
    let of_kind = |kind: &str| EventQuery {
        filter: EventFilter {
            kind: Some(kind.into()),
            ..EventFilter::default()
        },
        limit: EventQuery::MAX_LIMIT,
        ..EventQuery::default()
    };
    let mut log = Vec::new();
    for kind in ["lease_*", "system_started"] {
        log.extend(solo.events(&of_kind(kind)).await.unwrap().events);
    }
    log.sort_by_key(|e| e.id);
    let mut holder: Option<String> = None;
    let mut starts = 0;
    for e in &log {
        let field = |k: &str| e.payload[k].as_str().map(str::to_string);
        match e.kind.as_str() {
            "lease_acquired" => holder = field("holder"),
            "lease_released" => holder = None,
            "system_started" => {
                let node = field("node");
                assert!(node.is_some(), "a cluster node names itself: {e:?}");
                assert_eq!(node, holder, "event {} started without the lease", e.id);
                starts += 1;
            }
            _ => {}
        }
    }
    assert!(starts >= 2, "{starts} starts in the log");
    println!("{starts} starts in the log, each under its own lease");
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}
