//! A checker in the spirit of Jepsen for cluster mode, run in both modes: two clients
//! deploy, kill, put secrets, grant, register and call, each operation through the next
//! node in turn (forwarded to the node that serves it), while a schedule kills
//! (`kill -9`) and pauses (`SIGSTOP` past the lease) Solo nodes and kills NATS servers.
//! In mode `active` both clients are the admin and the faults hit the active node; in
//! mode `tenants` the clients are two tenants with certificates of their own, placed on
//! different nodes, and each fault hits the node serving one of them. Afterwards every
//! acknowledged write is present, every acknowledged kill took effect, the vault decrypts
//! every acknowledged secret, the chain verifies, and the log shows every start made
//! where it was allowed (`verify.rs`). The log is compacted every 30 entries meanwhile,
//! so nodes that come back start from the latest copy of a view.
//! `CLUSTER_CHECK_FAULTS=N` runs a longer schedule (default 4 faults).

mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use solo_client::{Flags, Profile, Solo};
use solo_cluster::testing::{NatsCluster, share_identity};
use solo_types::api::{GrantRequest, KillOptions, RegisterRequest};
use solo_types::{Format, Permissions, Resource, ServiceId};

use crate::harness::{SOLO, counter_js};

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

/// Waits until node `i` listens, supervising them all meanwhile.
fn wait_node(nodes: &mut [Node], i: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        for n in nodes.iter_mut() {
            n.supervise();
        }
        if nodes[i].listening {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} did not start within {within:?}; the end of its stderr:\n{}",
            nodes[i].tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the clients were told succeeded. Client `me`'s ids are `me` modulo `CLIENTS`.
#[derive(Default)]
struct Acked {
    deployed: BTreeSet<usize>,
    killed: BTreeSet<usize>,
    secrets: BTreeSet<usize>,
    registered: BTreeSet<usize>,
    /// Each grant with the client that made it.
    granted: BTreeSet<(usize, String)>,
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

/// The cluster's mode under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Active,
    Tenants,
}

/// Whom a client connects as: the admin (`None`), or a tenant's certificate and key.
type Who = Option<(PathBuf, PathBuf)>;

/// A profile for `who` to the node whose data directory is `data`.
fn profile_of(data: &Path, who: &Who) -> Option<Profile> {
    let flags = Flags {
        data_dir: Some(data.to_path_buf()),
        cert: who.as_ref().map(|w| w.0.clone()),
        key: who.as_ref().map(|w| w.1.clone()),
        ..Flags::default()
    };
    Profile::resolve(&flags, &[]).ok()
}

/// A client of the first node that answers, trying them from the `turn`-th on (any node
/// forwards to the one serving the request; one that is starting or paused does not
/// answer).
async fn client(nodes: &[PathBuf], turn: usize, who: &Who) -> Option<Solo> {
    let n = nodes.len();
    for data in (0..n).map(|k| &nodes[(turn + k) % n]) {
        let Some(profile) = profile_of(data, who) else {
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

/// A client for `who` through any node, waiting up to a minute for one to answer.
async fn some_client(nodes: &[PathBuf], who: &Who) -> Solo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = client(nodes, 0, who).await {
            return s;
        }
        assert!(Instant::now() < deadline, "no node answers a client");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Client `me`'s operations, as `who`, until `stop`.
async fn workload(
    me: usize,
    nodes: Vec<PathBuf>,
    who: Who,
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
        let Some(solo) = client(&nodes, n + n / 6, &who).await else {
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
                            .find(|d| {
                                *d % CLIENTS == me
                                    && !a.killed.contains(d)
                                    && !a.kill_unknown.contains(d)
                            })
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
            Ok(Ok(Ack::Granted(hash))) => drop(a.granted.insert((me, hash))),
            Ok(Ok(Ack::Called)) => a.called += 1,
            Ok(Ok(Ack::Nothing)) => {}
            Ok(Err(e)) => {
                a.unknown += 1;
                if a.failures.len() < 12 {
                    a.failures.push(format!("client {me}, op {}: {e}", n % 6));
                }
            }
            Err(_) => {
                a.unknown += 1;
                if a.failures.len() < 12 {
                    a.failures
                        .push(format!("client {me}, op {}: timed out", n % 6));
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
    check(Mode::Active).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_mode_tenants_acknowledged_writes_survive_killed_and_paused_nodes() {
    check(Mode::Tenants).await;
}

const IDS: [&str; 2] = ["a", "b"];

async fn check(mode: Mode) {
    let faults: usize = std::env::var("CLUSTER_CHECK_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut nats = NatsCluster::start(3, true);
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = IDS
        .iter()
        .map(|id| {
            let config = root.path().join(format!("{id}.toml"));
            // Compaction every 30 entries: nodes coming back start from copies of a view.
            let toml = nats.solo_config(id, LEASE_MS, None)
                + "compact_every = 30\n"
                + match mode {
                    Mode::Active => "mode = \"active\"\n",
                    Mode::Tenants => "mode = \"tenants\"\n",
                };
            std::fs::write(&config, toml).unwrap();
            Node::new(root.path().join(id), config)
        })
        .collect();
    nodes[0].spawn();
    wait_active(&mut nodes[..1], None, Duration::from_secs(60));
    share_identity(&nodes[0].data, &nodes[1].data).unwrap();
    nodes[1].spawn();
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.data.clone()).collect();
    let whos: Vec<Who> = match mode {
        Mode::Active => vec![None; CLIENTS],
        Mode::Tenants => {
            // Both nodes start first: each tenant's first request places it on the node
            // it reaches, alice's on a and bob's on b.
            wait_node(&mut nodes, 1, Duration::from_secs(60));
            let out = root.path().join("clients");
            ["alice", "bob"]
                .iter()
                .map(|t| {
                    let cert = solo_gateway::pki::issue(&dirs[0], t, false, &out).unwrap();
                    Some((cert, out.join(format!("{t}-key.pem"))))
                })
                .collect()
        }
    };
    // The service registrations name, and grants cover; never killed.
    for (me, who) in whos.iter().enumerate() {
        let first = client(&dirs, me, who).await.unwrap();
        let anchor = solo_types::api::DeployRequest::new(
            ServiceId::new("anchor").unwrap(),
            Format::Js,
            counter_js().into_bytes(),
        );
        first.deploy(&anchor).await.unwrap();
        if mode == Mode::Active {
            break;
        }
    }

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(Mutex::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|me| {
            tokio::spawn(workload(
                me,
                dirs.clone(),
                whos[me].clone(),
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();

    for f in 0..faults {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let victim = match mode {
            Mode::Active => wait_active(&mut nodes, None, Duration::from_secs(30)),
            Mode::Tenants => {
                let v = serving(&dirs, &whos[f % CLIENTS])
                    .await
                    .unwrap_or(f % IDS.len());
                wait_node(&mut nodes, v, Duration::from_secs(30));
                v
            }
        };
        match f % 3 {
            0 => {
                nodes[victim].kill9();
                match mode {
                    Mode::Active => {
                        wait_active(&mut nodes, Some(victim), Duration::from_secs(30));
                    }
                    // Its tenants move once its lease lapses.
                    Mode::Tenants => {
                        tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
                    }
                }
                nodes[victim].spawn();
            }
            1 => {
                let pid = nodes[victim].pid();
                signal(pid, libc::SIGSTOP);
                match mode {
                    Mode::Active => {
                        wait_active(&mut nodes, Some(victim), Duration::from_secs(30));
                    }
                    Mode::Tenants => {
                        tokio::time::sleep(Duration::from_millis(2 * LEASE_MS + 500)).await;
                    }
                }
                signal(pid, libc::SIGCONT);
                let code = nodes[victim].wait_exit(Duration::from_secs(15));
                assert_eq!(code, Some(3), "a node that lost its lease exits with 3");
                nodes[victim].spawn();
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
    match mode {
        Mode::Active => drop(wait_active(&mut nodes, None, Duration::from_secs(60))),
        Mode::Tenants => {
            for i in 0..nodes.len() {
                wait_node(&mut nodes, i, Duration::from_secs(60));
            }
        }
    }
    let a = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "checker, mode {mode:?}: {faults} faults; acknowledged {} deploys, {} kills, {} \
         secrets, {} registrations, {} grants, {} calls answered; {} operations with an \
         unknown outcome",
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
    verify::progress_and_compaction(&a, &dirs);
    for (me, who) in whos.iter().enumerate() {
        let solo = some_client(&dirs, who).await;
        verify::acknowledged(&solo, &a, me).await;
    }
    let admin = some_client(&dirs, &None).await;
    let v = admin.verify_events().await.unwrap();
    assert!(v.ok, "the chain verifies: {:?}", v.reason);
    match mode {
        Mode::Active => verify::only_the_lease_holder_starts(&admin).await,
        Mode::Tenants => verify::only_the_placed_node_starts(&admin).await,
    }
}

/// The index of the node serving `who`'s anchor, asked through any node.
async fn serving(dirs: &[PathBuf], who: &Who) -> Option<usize> {
    let solo = client(dirs, 0, who).await?;
    let anchor = ServiceId::new("anchor").unwrap();
    let status = tokio::time::timeout(OP_TIMEOUT, solo.status(&anchor))
        .await
        .ok()?
        .ok()?;
    IDS.iter()
        .position(|id| status.node.as_deref() == Some(*id))
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}
