//! Failover scenario: two `solo server` nodes over three NATS servers (3 synced
//! replicas, a 2 s lease). The active node is killed with `kill -9` and the time until
//! the standby answers a call to a counter is measured, round after round (the killed
//! node comes back as the next standby). The baseline, in the same run: a single
//! embedded node killed with `kill -9` and restarted on its data directory at once, to
//! its first answered call. First, with both nodes up: calls to the counter named
//! through the standby (which forwards each request to the active node) against the same calls made to the
//! active node directly. Then mode `tenants` (every node serving the tenants placed on
//! it), on a log of its own: a call across nodes (through the node the tenant is not
//! on) against a local one, and `kill -9` of the node serving the tenant to the first
//! call the other node answers (it places the tenant on itself and recovers it).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_client::{Flags, Profile};
use solo_cluster::testing::{NatsCluster, share_identity};
use solo_types::Format;
use solo_types::api::DeployRequest;

use crate::kernel::sid;
use crate::report;
use crate::stats::{Samples, r2};

const LEASE_MS: u64 = 2_000;
const ROUNDS: usize = 5;
/// Calls per side in the forwarding comparison.
const FORWARDED_CALLS: usize = 2_000;

/// A `solo server` process and the lines it prints.
struct Node {
    child: Child,
    data: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn spawn(data: &Path, config: Option<&Path>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(crate::mcp::solo_bin()?);
        cmd.args([
            "server",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .env_remove("SOLO_MASTER_KEY")
        .env("SOLO_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            data: data.to_path_buf(),
            lines: rx,
        })
    }

    /// Waits until the node listens (a standby does once it is active).
    fn listening(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow::anyhow!("the node did not listen within {within:?}"))?;
            if line.starts_with("http listening on ") {
                return Ok(());
            }
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Calls the counter through `data`'s node until it answers; the time it took.
async fn first_answer(data: &Path, since: Instant) -> anyhow::Result<Duration> {
    loop {
        let attempt = async {
            let solo = open(data).await?;
            solo.call(&sid("counter"), r#"{"op":"inc"}"#, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        if attempt.await.is_ok() {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(60),
            "no answer in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the node whose data directory is `data`.
async fn open(data: &Path) -> anyhow::Result<solo_client::Solo> {
    let profile = Profile::resolve(
        &Flags {
            data_dir: Some(data.to_path_buf()),
            ..Flags::default()
        },
        &[],
    )?;
    Ok(profile.open().await?)
}

async fn deploy_counter(data: &Path) -> anyhow::Result<()> {
    let solo = open(data).await?;
    let d = DeployRequest::new(
        sid("counter"),
        Format::Js,
        solo_guests::js("counter").into_bytes(),
    );
    solo.deploy(&d).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// `n` calls to the counter through `data`'s node, one connection, one at a time.
async fn timed_calls(data: &Path, n: usize) -> anyhow::Result<Samples> {
    let solo = open(data).await?;
    let mut samples = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        solo.call(&sid("counter"), r#"{"op":"get"}"#, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Calls through the standby (which forwards each request) and to the active node
/// directly, interleaved in rounds so both see the same machine.
async fn forwarded_vs_direct(active: &Path, standby: &Path) -> anyhow::Result<(Samples, Samples)> {
    // The standby forwards once the active node has recorded its listeners.
    let since = Instant::now();
    while timed_calls(standby, 1).await.is_err() {
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(30),
            "the standby did not forward within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut forwarded, mut direct) = (Samples::default(), Samples::default());
    for _ in 0..4 {
        direct.extend(timed_calls(active, FORWARDED_CALLS / 4).await?);
        forwarded.extend(timed_calls(standby, FORWARDED_CALLS / 4).await?);
    }
    Ok((forwarded, direct))
}

fn node_config(root: &Path, nats: &NatsCluster, id: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        nats.solo_config(id, LEASE_MS, None) + "mode = \"active\"\n",
    )?;
    Ok(path)
}

/// What mode `tenants` measured: calls across nodes, local calls, failovers.
struct Tenants {
    across: Samples,
    local: Samples,
    failover: Samples,
}

/// Mode `tenants` on its own log (stream `TENANTS`): nodes ta and tb both serving; the
/// admin's counter is placed on ta, where it is deployed.
fn tenants_mode(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    nats: &NatsCluster,
) -> anyhow::Result<Tenants> {
    let ids = ["ta", "tb"];
    let data: Vec<PathBuf> = ids.iter().map(|id| root.join(id)).collect();
    let mut configs = Vec::new();
    for id in ids {
        let path = root.join(format!("{id}.toml"));
        let config =
            nats.solo_config(id, LEASE_MS, None) + "stream = \"TENANTS\"\nmode = \"tenants\"\n";
        std::fs::write(&path, config)?;
        configs.push(path);
    }
    let first = Node::spawn(&data[0], Some(&configs[0]))?;
    first.listening(Duration::from_secs(60))?;
    rt.block_on(deploy_counter(&data[0]))?;
    share_identity(&data[0], &data[1])?;
    let second = Node::spawn(&data[1], Some(&configs[1]))?;
    second.listening(Duration::from_secs(60))?;
    let mut nodes = [Some(first), Some(second)];
    let (mut across, mut local) = (Samples::default(), Samples::default());
    for _ in 0..4 {
        local.extend(rt.block_on(timed_calls(&data[0], FORWARDED_CALLS / 4))?);
        across.extend(rt.block_on(timed_calls(&data[1], FORWARDED_CALLS / 4))?);
    }
    let mut failover = Samples::default();
    let mut owner = 0;
    for _ in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(LEASE_MS));
        if let Some(n) = nodes[owner].as_mut() {
            n.kill9();
        }
        let killed = Instant::now();
        let other = 1 - owner;
        failover.push(rt.block_on(first_answer(&data[other], killed))?);
        let back = Node::spawn(&data[owner], Some(&configs[owner]))?;
        back.listening(Duration::from_secs(60))?;
        nodes[owner] = Some(back);
        owner = other;
    }
    Ok(Tenants {
        across,
        local,
        failover,
    })
}

pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let root = tempfile::tempdir()?;

    // The cluster: a active, b standing by; each round kills the active node.
    let nats = NatsCluster::start(3, true);
    let ids = ["a", "b"];
    let data: Vec<PathBuf> = ids.iter().map(|id| root.path().join(id)).collect();
    let configs: Vec<PathBuf> = ids
        .iter()
        .map(|id| node_config(root.path(), &nats, id))
        .collect::<anyhow::Result<_>>()?;
    let mut nodes: Vec<Option<Node>> = vec![None, None];
    let first = Node::spawn(&data[0], Some(&configs[0]))?;
    first.listening(Duration::from_secs(60))?;
    rt.block_on(deploy_counter(&data[0]))?;
    share_identity(&data[0], &data[1])?;
    nodes[0] = Some(first);
    nodes[1] = Some(Node::spawn(&data[1], Some(&configs[1]))?);
    let (mut forwarded, mut direct) = rt.block_on(forwarded_vs_direct(&data[0], &data[1]))?;
    let mut cluster = Samples::default();
    let mut active = 0;
    for _ in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(LEASE_MS));
        let standby = 1 - active;
        if let Some(n) = nodes[active].as_mut() {
            n.kill9();
        }
        let killed = Instant::now();
        if let Some(n) = &nodes[standby] {
            n.listening(Duration::from_secs(60))?;
        }
        cluster.push(rt.block_on(first_answer(&data[standby], killed))?);
        nodes[active] = Some(Node::spawn(&data[active], Some(&configs[active]))?);
        active = standby;
    }
    drop(nodes);
    let mut tenants = tenants_mode(&rt, root.path(), &nats)?;

    // The baseline: one embedded node, killed and restarted at once.
    let single = root.path().join("single");
    let mut node = Node::spawn(&single, None)?;
    node.listening(Duration::from_secs(60))?;
    rt.block_on(deploy_counter(&single))?;
    let mut restart = Samples::default();
    for _ in 0..ROUNDS {
        node.kill9();
        let killed = Instant::now();
        node = Node::spawn(&single, None)?;
        node.listening(Duration::from_secs(60))?;
        restart.push(rt.block_on(first_answer(&node.data, killed))?);
    }

    let ms = |s: &mut Samples, q: f64| r2(s.quantile_us(q) / 1000.0);
    let us = |s: &mut Samples, q: f64| r2(s.quantile_us(q));
    report(&json!({
        "scenario": "cluster.forward",
        "calls": FORWARDED_CALLS,
        "through_the_standby_us": { "p50": us(&mut forwarded, 0.5), "p99": us(&mut forwarded, 0.99) },
        "baseline": {
            "name": "the same calls to the active node directly",
            "direct_us": { "p50": us(&mut direct, 0.5), "p99": us(&mut direct, 0.99) },
        },
    }));
    report(&json!({
        "scenario": "cluster.tenants.call",
        "calls": FORWARDED_CALLS,
        "across_nodes_us": { "p50": us(&mut tenants.across, 0.5), "p99": us(&mut tenants.across, 0.99) },
        "baseline": {
            "name": "the same calls through the node serving the tenant",
            "local_us": { "p50": us(&mut tenants.local, 0.5), "p99": us(&mut tenants.local, 0.99) },
        },
    }));
    report(&json!({
        "scenario": "cluster.tenants.failover",
        "lease_ms": LEASE_MS,
        "rounds": ROUNDS,
        "kill_to_first_call_ms": { "p50": ms(&mut tenants.failover, 0.5), "max": ms(&mut tenants.failover, 1.0) },
        "baseline": {
            "name": "one embedded node: kill -9, restart at once, first call",
            "kill_to_first_call_ms": { "p50": ms(&mut restart, 0.5), "max": ms(&mut restart, 1.0) },
        },
    }));
    report(&json!({
        "scenario": "cluster.failover",
        "lease_ms": LEASE_MS,
        "rounds": ROUNDS,
        "kill_to_first_call_ms": { "p50": ms(&mut cluster, 0.5), "max": ms(&mut cluster, 1.0) },
        "baseline": {
            "name": "one embedded node: kill -9, restart at once, first call",
            "kill_to_first_call_ms": { "p50": ms(&mut restart, 0.5), "max": ms(&mut restart, 1.0) },
        },
    }));
    Ok(())
}
