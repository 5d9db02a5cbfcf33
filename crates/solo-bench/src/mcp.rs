//! MCP scenario: one tool call round trip (the echo service, offered as the tool `echo`),
//! over Streamable HTTP at `/mcp` (mutual TLS, HTTP/2, stateless) and over stdio through
//! a real `solo mcp` process, beside the same call over gRPC in the same run. The stdio
//! figure needs the `solo` binary next to this one (`cargo build --release -p solo`). Two
//! more figures place the cost: the same call over REST (same HTTP client) and
//! `solo_whoami` over MCP (the SDK's cost with no service call).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use solo_client::Profile;
use solo_kernel::{Caller, DeployRequest};
use solo_proto::v1 as pb;
use solo_types::{Format, ServiceId, TenantId, ToolSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::gateway::{Setup, https_client, serve};
use crate::report;
use crate::stats::{Figures, Samples, r2};

const REQUEST: &str = r#"{"op":"echo","n":1}"#;
const CONCURRENCY: [usize; 2] = [1, 16];

fn tool_call(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "op": "echo", "n": 1 } },
    })
}

/// `solo_whoami` over MCP: the SDK's own cost per request, with no service call.
fn whoami_call() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "solo_whoami", "arguments": {} },
    })
}

async fn setup() -> anyhow::Result<Setup> {
    let s = serve(solo_kernel::KernelConfig::default()).await?;
    let admin = Caller::admin(TenantId::new("admin")?);
    let mut req = DeployRequest::new(
        ServiceId::new("echo")?,
        Format::Wasm,
        solo_guests::wasm("echo"),
    );
    req.tool = Some(ToolSpec {
        name: "echo".into(),
        description: "Replies with its arguments.".into(),
        input_schema: json!({ "type": "object" }),
    });
    s.kernel
        .deploy(&admin, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(s)
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let s = setup().await?;
        let profile = s.admin_profile()?;
        let url = format!("https://{}/mcp", s.gateway.http_addr());
        for n in CONCURRENCY {
            let grpc = grpc(&profile, n, secs).await?;
            let whoami = if n == 1 {
                Some(http(&profile, &url, whoami_call(), n, secs).await?)
            } else {
                None
            };
            let base = format!("https://{}", s.gateway.http_addr());
            let rest = crate::gateway::rest(&profile, &base, n, secs).await?;
            let stdio = if n == 1 {
                Some(stdio(&s, secs).await?)
            } else {
                None
            };
            let http = http(&profile, &url, tool_call(1), n, secs).await?;
            report(&json!({
                "scenario": "mcp.tool_call", "format": "wasm", "streams": n,
                "http": { "calls_per_sec": http.rate.round(), "p50_us": r2(http.p50), "p99_us": r2(http.p99) },
                "stdio": stdio.map(|f| json!({
                    "calls_per_sec": f.rate.round(), "p50_us": r2(f.p50), "p99_us": r2(f.p99),
                })),
                "http_solo_whoami": whoami.map(|f| json!({
                    "calls_per_sec": f.rate.round(), "p50_us": r2(f.p50), "p99_us": r2(f.p99),
                })),
                "rest_call": { "calls_per_sec": rest.rate.round(), "p50_us": r2(rest.p50), "p99_us": r2(rest.p99) },
                "baseline": {
                    "name": "the same call over gRPC (tonic, same TLS), same run",
                    "calls_per_sec": grpc.rate.round(), "p50_us": r2(grpc.p50), "p99_us": r2(grpc.p99),
                },
                "ratio_http_p50": r2(http.p50 / grpc.p50),
                "ratio_http_rate": r2(grpc.rate / http.rate),
                "target": { "http_within_x_of_grpc": 1.5 },
            }));
        }
        s.gateway.drain(Duration::from_secs(1)).await;
        s.kernel.shutdown().await;
        Ok(())
    })
}

/// `n` tasks calling in a loop over one connection, each call timed by `call`.
async fn timed<C, F, E>(n: usize, secs: Duration, client: C, call: F) -> anyhow::Result<Figures>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> E + Clone + Send + 'static,
    E: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    for _ in 0..100 {
        call(client.clone()).await?;
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, call) = (client.clone(), call.clone());
        tasks.spawn(async move {
            let mut lat = Samples::default();
            while t0.elapsed() < secs {
                let t = Instant::now();
                call(client.clone()).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Samples::default();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(Figures::of(all, t0.elapsed()))
}

async fn grpc(profile: &Profile, n: usize, secs: Duration) -> anyhow::Result<Figures> {
    let client = profile.connect().await?;
    timed(n, secs, client, |mut c| async move {
        c.call(pb::CallRequest {
            service_id: "echo".into(),
            request: REQUEST.into(),
            timeout_ms: 5000,
        })
        .await?;
        Ok(())
    })
    .await
}

async fn http(
    profile: &Profile,
    url: &str,
    body: Value,
    n: usize,
    secs: Duration,
) -> anyhow::Result<Figures> {
    let client = https_client(profile)?;
    let url = url.to_string();
    timed(n, secs, client, move |c| {
        let (url, body) = (url.clone(), body.clone());
        async move {
            let r = c
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
            let answer: Value = r.json().await?;
            anyhow::ensure!(answer["result"]["isError"] == false, "{answer}");
            Ok(())
        }
    })
    .await
}

/// The `solo` binary beside this one.
pub(crate) fn solo_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("solo");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p solo)",
        bin.display()
    );
    Ok(bin)
}

/// One `solo mcp` process, called one request at a time (stdio has one session).
async fn stdio(s: &Setup, secs: Duration) -> anyhow::Result<Figures> {
    let mut child = tokio::process::Command::new(solo_bin()?)
        .arg("mcp")
        .env("SOLO_DATA_DIR", s.dir.path())
        .env("SOLO_ENDPOINT", s.gateway.grpc_addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut lines = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .lines();
    let mut send = async |v: Value| -> anyhow::Result<()> {
        stdin.write_all(format!("{v}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    };
    send(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "solo-bench", "version": "0" } },
    }))
    .await?;
    lines.next_line().await?;
    send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await?;
    let mut lat = Samples::default();
    let mut id = 0;
    let mut t0 = Instant::now();
    let mut warm = 100;
    while t0.elapsed() < secs {
        id += 1;
        let t = Instant::now();
        send(tool_call(id)).await?;
        // Notifications (tools/list_changed) may come between answers.
        loop {
            let line = lines
                .next_line()
                .await?
                .ok_or_else(|| anyhow::anyhow!("solo mcp ended"))?;
            let v: Value = serde_json::from_str(&line)?;
            if v["id"] == id {
                anyhow::ensure!(v["result"]["isError"] == false, "{v}");
                break;
            }
        }
        if warm > 0 {
            warm -= 1;
            t0 = Instant::now();
            continue;
        }
        lat.push(t.elapsed());
    }
    let elapsed = t0.elapsed();
    drop(stdin);
    child.kill().await?;
    Ok(Figures::of(lat, elapsed))
}
