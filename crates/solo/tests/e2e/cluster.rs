//! Cluster mode end to end: three NATS servers and two or three `solo server` nodes on
//! loopback. One node is active, the others wait; killing the active node (`kill -9`)
//! hands its services to a standby with the state their last checkpoint saved, and an
//! active node paused past its lease is fenced out and exits when it wakes. A standby
//! forwards clients' requests to the active node (`forwarding.rs`), so deploys, calls, swaps
//! and kills go through any node. Without a NATS quorum writes are refused, and resume
//! when a server returns.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use solo_cluster::testing::{NatsCluster, TlsFiles, share_identity};
use solo_types::Format;
use solo_types::api::{DeployRequest, KillOptions, SwapMode, SwapRequest};

use crate::harness::{SOLO, Server, Starting, admin_profile_of, call, counter_js};

pub(crate) const LEASE_MS: u64 = 2_000;

/// Starts node `id` on `dir` (its `data/` holding the certificates and master key every
/// node shares, copied from `shared` when given).
pub(crate) fn spawn_node(nats: &NatsCluster, id: &str, shared: Option<&Path>) -> Starting {
    spawn_node_tls(nats, id, shared, None, &[])
}

/// Like `spawn_node`, reaching NATS over TLS with `tls`'s client certificate, with `env`
/// added to the process's environment. Both start nodes of mode `active` (`env` may set
/// `SOLO_CLUSTER__MODE`).
pub(crate) fn spawn_node_tls(
    nats: &NatsCluster,
    id: &str,
    shared: Option<&Path>,
    tls: Option<&TlsFiles>,
    env: &[(&str, &str)],
) -> Starting {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("certs")).unwrap();
    if let Some(from) = shared {
        share_identity(from, &data).unwrap();
    }
    // Mode `active` unless `env` asks for another (the environment wins over the file).
    std::fs::write(
        dir.path().join("solo.toml"),
        nats.solo_config(id, LEASE_MS, tls) + "mode = \"active\"\n",
    )
    .unwrap();
    start_node(dir, env)
}

/// Starts a node again on `node`'s data directory and configuration (after it exited),
/// as its service manager would.
pub(crate) fn respawn(mut node: Server, env: &[(&str, &str)]) -> Starting {
    node.kill9();
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    start_node(dir, env)
}

/// Starts `solo server` on `dir`'s `data/` and `solo.toml`, with `env`.
fn start_node(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Starting {
    let data = dir.path().join("data");
    let config = dir.path().join("solo.toml");
    let stderr_log = dir.path().join("server.stderr");
    let child = Command::new(SOLO)
        .args([
            "server",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env_remove("SOLO_MASTER_KEY")
        .env("SOLO_LOG_LEVEL", "info")
        .env("SOLO_METRICS_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stderr_log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    Starting::new(child, dir, stderr_log)
}

pub(crate) fn count(reply: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(reply).unwrap()["value"]
        .as_i64()
        .unwrap()
}

/// How the counter's count reaches the log before the active node goes.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Saved {
    /// It hibernates.
    Hibernated,
    /// It stays awake, and a checkpoint saves it.
    Checkpoint,
}

/// Node a active with a counter at 5 (its count in a snapshot, `saved` as said), node b
/// waiting.
pub(crate) async fn active_and_standby(nats: &NatsCluster, saved: Saved) -> (Server, Starting) {
    let (a, _) = spawn_node(nats, "a", None).wait(Duration::from_secs(60));
    match saved {
        Saved::Hibernated => a.cli_json(&["config", "set", "services.hibernate_after_ms", "300"]),
        Saved::Checkpoint => a.cli_json(&["config", "set", "services.checkpoint_every_ms", "200"]),
    };
    let c = a.admin().await;
    c.clone()
        .deploy(crate::deploy_js("counter", counter_js()))
        .await
        .unwrap();
    let r = c
        .clone()
        .call(call("counter", json!({"op": "inc", "by": 5})))
        .await
        .unwrap();
    assert_eq!(count(&r.into_inner().reply), 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    while saved == Saved::Hibernated
        && a.cli_json(&["list", "--state", "hibernated"])["services"]
            .as_array()
            .map_or(0, Vec::len)
            == 0
    {
        assert!(Instant::now() < deadline, "the counter did not hibernate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if saved == Saved::Checkpoint {
        // Past the checkpoint, still awake.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let listed = a.cli_json(&["list", "--state", "running"]);
        assert_eq!(listed["services"][0]["service_id"], "counter", "{listed}");
        assert_eq!(listed["services"][0]["node"], "a", "{listed}");
        let table = String::from_utf8_lossy(&a.cli(&["list"]).stdout).into_owned();
        assert!(table.contains("NODE"), "{table}");
        let tree = String::from_utf8_lossy(&a.cli(&["tree"]).stdout).into_owned();
        assert!(tree.contains("on node a"), "{tree}");
    }
    let b = spawn_node(nats, "b", Some(&a.data_dir()));
    assert!(
        !b.printed_within(Duration::from_millis(LEASE_MS + 1_000)),
        "a standby does not listen while the active node holds the lease"
    );
    (a, b)
}

/// Increments the counter through `node` until it answers (within 30 s of `killed`).
pub(crate) async fn inc_until_answered(node: &Server, killed: Instant) -> String {
    let c = node.admin().await;
    loop {
        match c
            .clone()
            .call(call("counter", json!({"op": "inc", "by": 1})))
            .await
        {
            Ok(r) => return r.into_inner().reply,
            Err(e) => {
                assert!(killed.elapsed() < Duration::from_secs(30), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_active_node_is_killed() {
    let nats = NatsCluster::start(3, true);
    let (mut a, b) = active_and_standby(&nats, Saved::Checkpoint).await;
    let a_grpc = a.grpc.clone();
    a.kill9();
    let killed = Instant::now();
    let (b, _) = b.wait(Duration::from_secs(30));
    let reply = inc_until_answered(&b, killed).await;
    let failover = killed.elapsed();
    println!("failover: kill -9 of the active node to the first answered call: {failover:?}");
    assert_eq!(count(&reply), 6, "the counter came back from its snapshot");
    // A client given both nodes' addresses passes over the dead one.
    let both = format!("{a_grpc},{}", b.grpc);
    let out = b.cli_env(&["--json", "whoami"], &[("SOLO_ENDPOINT", &both)]);
    assert!(out.status.success(), "{out:?}");
    let out = b.cli_env(&["whoami"], &[("SOLO_ENDPOINT", &a_grpc)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );
    // The chain the standby applied from the log verifies, and records the hand-over.
    let verify = b.cli_json(&["events", "verify"]);
    assert_eq!(verify["ok"], json!(true), "{verify}");
    let events = b.cli_json(&["events", "--kind", "lease_acquired", "--limit", "10"]);
    let holders: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["holder"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(holders, vec!["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_node_paused_past_its_lease_is_fenced_out_and_exits() {
    let nats = NatsCluster::start(3, true);
    let (a, b) = active_and_standby(&nats, Saved::Hibernated).await;
    let pid = a.child.as_ref().unwrap().id();
    signal(pid, libc::SIGSTOP);
    let (b, _) = b.wait(Duration::from_secs(30));
    signal(pid, libc::SIGCONT);
    let mut a = a;
    let status = a.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{}", a.stderr());
    assert!(
        a.stderr()
            .contains("lost the cluster's active lease or its place in the log"),
        "{}",
        a.stderr()
    );
    let c = b.admin().await;
    let r = c
        .clone()
        .call(call("counter", json!({"op": "inc", "by": 1})))
        .await
        .unwrap();
    assert_eq!(count(&r.into_inner().reply), 6);
    let verify = b.cli_json(&["events", "verify"]);
    assert_eq!(verify["ok"], json!(true), "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_nats_over_tls_with_its_own_certificate() {
    let files = TlsFiles::generate();
    let nats = NatsCluster::start_with(3, true, Some(&files));
    let (a, _) = spawn_node_tls(&nats, "a", None, Some(&files), &[]).wait(Duration::from_secs(60));
    let c = a.admin().await;
    c.clone()
        .deploy(crate::deploy_js("counter", counter_js()))
        .await
        .unwrap();
    let r = c
        .clone()
        .call(call("counter", json!({"op": "inc", "by": 2})))
        .await
        .unwrap();
    assert_eq!(count(&r.into_inner().reply), 2);
    // Without its certificate the node cannot reach NATS: it says so and stops.
    let mut plain = spawn_node(&nats, "b", Some(&a.data_dir()));
    let status = plain.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(!status.success());
}

#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), sig);
    }
}

/// A client of the node whose data directory is `data` (its `server.json` and the
/// shared admin certificate), with the identity `identity` in place of the admin's.
pub(crate) fn profile_of(
    data: &Path,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> solo_client::Profile {
    let p = admin_profile_of(data).unwrap();
    match identity {
        Some(id) => solo_client::Profile {
            identity: Some(id),
            ..p
        },
        None => p,
    }
}

/// MCP through a standby: the official MCP Python SDK's Streamable HTTP client, with two
/// tenants' certificates, reaches the active node through b's forwarding and sees only its
/// own tools, services and events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_drives_mcp_through_a_standby_with_the_python_sdk() {
    let nats = NatsCluster::start(3, true);
    let (a, _) = spawn_node(&nats, "a", None).wait(Duration::from_secs(60));
    let b = spawn_node(&nats, "b", Some(&a.data_dir()));
    forwarding(&b).await;
    let env = crate::mcp::http_env_at(&a, &server_info(&b.data_dir()).http);
    tokio::task::spawn_blocking(move || crate::mcp::agent("http_tenants", &env))
        .await
        .unwrap();
}

/// The addresses the node on `data` listens on (a standby's too).
pub(crate) fn server_info(data: &Path) -> solo_client::ServerInfo {
    serde_json::from_slice(&std::fs::read(data.join(solo_client::SERVER_FILE)).unwrap()).unwrap()
}

/// `solo mcp` naming every node goes on through another when the active node dies: the
/// session is the same, the counter's count is the checkpointed one, and a subscription
/// to the event log made before goes on through the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_mcp_naming_every_node_goes_on_when_the_active_node_dies() {
    let nats = NatsCluster::start(3, true);
    let (mut a, b) = active_and_standby(&nats, Saved::Checkpoint).await;
    let c = spawn_node(&nats, "c", Some(&a.data_dir()));
    forwarding(&b).await;
    forwarding(&c).await;
    // Whichever of b and c takes over serves on its own listeners; the other forwards to them.
    let every = format!(
        "{},{},{}",
        a.grpc,
        server_info(&b.data_dir()).grpc,
        server_info(&c.data_dir()).grpc
    );
    let mut mcp = Command::new(SOLO)
        .arg("mcp")
        .env_clear()
        .env("SOLO_DATA_DIR", a.data_dir())
        .env("SOLO_ENDPOINT", &every)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = mcp.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(mcp.stdout.take().unwrap());
    // The newest event id each resources/updated notification named, as they come.
    let updates = std::cell::RefCell::new(Vec::<u64>::new());
    let mut ask = |id: u64, method: &str, params: serde_json::Value| {
        use std::io::{BufRead, Write};
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{msg}").unwrap();
        if id == 1 {
            writeln!(
                stdin,
                r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
            )
            .unwrap();
        }
        loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let v = serde_json::from_str::<serde_json::Value>(&line).unwrap();
            if v.get("id").is_some() {
                return v;
            }
            if v["method"] == "notifications/resources/updated" {
                let last = v["params"]["_meta"]["solo/last_id"].as_u64().unwrap();
                updates.borrow_mut().push(last);
            }
        }
    };
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}});
    assert_eq!(
        ask(1, "initialize", init)["result"]["serverInfo"]["name"],
        "solo"
    );
    let r = ask(1000, "resources/subscribe", json!({"uri": "solo://events"}));
    assert!(r.get("error").is_none(), "{r}");
    let inc = json!({"name": "solo_call",
        "arguments": {"service_id": "counter", "request": {"op": "inc", "by": 1}}});
    let r = ask(2, "tools/call", inc.clone());
    assert_eq!(r["result"]["structuredContent"]["value"], 6, "{r}");
    tokio::time::sleep(Duration::from_millis(1_000)).await; // past the checkpoint

    a.kill9();
    let killed = Instant::now();
    let mut id = 3;
    let r = loop {
        let r = ask(id, "tools/call", inc.clone());
        if r["result"]["isError"] != json!(true) {
            break r;
        }
        assert!(killed.elapsed() < Duration::from_secs(45), "{r}");
        id += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r["result"]["structuredContent"]["value"], 7, "{r}");
    // An event written through the new node reaches the subscription made before.
    let before = updates.borrow().iter().max().copied().unwrap_or(0);
    let kill = json!({"name": "solo_kill", "arguments": {"service_id": "counter"}});
    let r = ask(1001, "tools/call", kill);
    assert_ne!(r["result"]["isError"], json!(true), "{r}");
    let since = Instant::now();
    for ping in 1002.. {
        if updates.borrow().iter().any(|id| *id > before) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "{:?}",
            updates.borrow()
        );
        ask(ping, "ping", json!({}));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stdin);
    let status = crate::harness::wait_child(&mut mcp, Duration::from_secs(10));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut mcp.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("the session goes on"), "{err}");
    assert!(status.is_some_and(|s| s.success()), "{status:?} {err}");
}

/// The cluster's nodes as health through `client` lists them, once `ready` (within 15 s).
pub(crate) async fn nodes_until(
    client: &solo_client::Solo,
    ready: impl Fn(&[solo_types::api::ClusterNode]) -> bool,
) -> Vec<solo_types::api::ClusterNode> {
    let since = Instant::now();
    loop {
        let nodes = client.health().await.map(|h| h.nodes).unwrap_or_default();
        if ready(&nodes) {
            return nodes;
        }
        assert!(since.elapsed() < Duration::from_secs(15), "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /metrics` from the plaintext listener the node in `data` recorded.
pub(crate) fn plaintext_metrics(data: &Path) -> String {
    use std::io::{Read, Write};
    let addr = server_info(data).metrics.expect("a metrics listener");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// A client of standby `node` once it forwards to the active node (within 30 s).
pub(crate) async fn forwarding(node: &Starting) -> solo_client::Solo {
    let since = Instant::now();
    loop {
        if let Some(p) = admin_profile_of(&node.data_dir())
            && let Ok(c) = p.open().await
            && c.whoami().await.is_ok()
        {
            return c;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "no forwarding");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_takes_deploys_calls_swaps_and_kills() {
    let nats = NatsCluster::start(3, true);
    let (a, _) = spawn_node(&nats, "a", None).wait(Duration::from_secs(60));
    let b = spawn_node(&nats, "b", Some(&a.data_dir()));
    let c = spawn_node(&nats, "c", Some(&a.data_dir()));
    let via_a = profile_of(&a.data_dir(), None).open().await.unwrap();
    let (via_b, via_c) = (forwarding(&b).await, forwarding(&c).await);
    let tally = solo_types::ServiceId::new("tally").unwrap();

    // Health, asked through c, lists every node: a active, b and c standing by, all
    // beating, each with the listener it takes clients on.
    let nodes = nodes_until(&via_c, |n| n.len() == 3 && n.iter().all(|n| n.beating)).await;
    let roles: Vec<_> = nodes
        .iter()
        .map(|n| (n.node.as_str(), n.role.as_str()))
        .collect();
    assert_eq!(roles, [("a", "active"), ("b", "standby"), ("c", "standby")]);
    assert_eq!(
        nodes[1].grpc.as_deref(),
        Some(server_info(&b.data_dir()).grpc.as_str())
    );
    assert!(nodes.iter().all(|n| n.applied_sequence > 0), "{nodes:?}");
    // The active node's metrics say the same, with its lease and its view; a standby
    // serves its own on its metrics listener, with what it forwarded.
    let since = Instant::now();
    loop {
        let standby = plaintext_metrics(&b.data_dir());
        let missing = [
            "solo_cluster_active 0",
            "solo_cluster_nodes_beating 3",
            "solo_cluster_applied_sequence ",
            "solo_cluster_forwarded_requests_total{outcome=\"forwarded\"} ",
        ]
        .into_iter()
        .find(|line| !standby.contains(line));
        let Some(line) = missing else { break };
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "{line} in\n{standby}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = a.rest(&a.admin_profile()).text("/metrics").await;
    for line in [
        "solo_cluster_active 1",
        "solo_cluster_nodes_beating 3",
        "solo_cluster_lease_epoch ",
        "solo_cluster_applied_sequence ",
        "solo_cluster_lease_renewals_total{outcome=\"ok\"} ",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let shown = Command::new(SOLO)
        .arg("health")
        .env("SOLO_DATA_DIR", c.data_dir())
        .env_remove("SOLO_ENDPOINT")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("ROLE") && text.contains("standby") && text.contains("active"),
        "{text}"
    );

    // Deployed through b, called through a and c.
    let js = solo_guests::js("counter").into_bytes();
    via_b
        .deploy(&DeployRequest::new(tally.clone(), Format::Js, js))
        .await
        .unwrap();
    via_a
        .call(&tally, r#"{"op":"inc","by":2}"#, None)
        .await
        .unwrap();
    let r = via_c.call(&tally, r#"{"op":"inc"}"#, None).await.unwrap();
    assert_eq!(count(&r), 3);

    // Swapped to WebAssembly through c, its count carried; a sees the new version.
    let swapped = via_c
        .swap(&SwapRequest {
            service_id: tally.clone(),
            format: Format::Wasm,
            code: solo_guests::wasm("counter").into(),
            mode: SwapMode::Swap,
            rollback_window: None,
        })
        .await
        .unwrap();
    assert_eq!((swapped.version, swapped.state_carried), (2, true));
    let r = via_b.call(&tally, r#"{"op":"get"}"#, None).await.unwrap();
    assert_eq!(count(&r), 3);
    let st = via_a.status(&tally).await.unwrap();
    assert_eq!(
        (st.format, st.version, st.node.as_deref()),
        (Format::Wasm, 2, Some("a"))
    );

    // Killed through b: gone for every node.
    via_b.kill(&tally, KillOptions::default()).await.unwrap();
    for node in [&via_a, &via_b, &via_c] {
        assert!(node.status(&tally).await.is_err());
    }
    assert!(via_c.verify_events().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_nats_quorum_writes_are_refused_and_resume_when_a_server_returns() {
    let mut nats = NatsCluster::start(3, true);
    let (mut a, b) = active_and_standby(&nats, Saved::Checkpoint).await;
    nats.kill(1);
    nats.kill(2);
    // The active node cannot renew its lease without a quorum: it stops, status 3.
    let status = a.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{}", a.stderr());
    // No node is active: a write through the standby is refused as unavailable.
    let d = DeployRequest::new(
        solo_types::ServiceId::new("late").unwrap(),
        Format::Js,
        solo_guests::js("counter").into_bytes(),
    );
    let refused = match profile_of(&b.data_dir(), None).open().await {
        Err(e) => e.failure(),
        Ok(c) => c.deploy(&d).await.unwrap_err(),
    };
    assert_eq!(
        (refused.code, refused.reason.as_str(), refused.retry_after),
        (solo_types::Code::Unavailable, "no_active_node", Some(1)),
        "{refused:?}"
    );
    println!("a write without a quorum: {}", refused.message);
    // Over HTTPS too: the JSON error, 503, retry after a second.
    let info = server_info(&b.data_dir());
    let tls = profile_of(&b.data_dir(), None).rustls_config().unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let r = http
        .get(format!("https://{}/v1/health", info.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_active_node", "{body}");
    // One server returns: the standby takes over, with the checkpointed count, and
    // writes resume.
    nats.restart(1);
    let back = Instant::now();
    let (b, _) = b.wait(Duration::from_secs(60));
    let r = inc_until_answered(&b, back).await;
    assert_eq!(count(&r), 6);
    println!(
        "quorum back to the first answered call: {:?}",
        back.elapsed()
    );
    let c = profile_of(&b.data_dir(), None).open().await.unwrap();
    c.deploy(&d).await.unwrap();
    assert!(c.verify_events().await.unwrap().ok);
}
