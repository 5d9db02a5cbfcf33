//! Soak: mixed load for N minutes against the real `solo server` process (gRPC over
//! mutual TLS, four tenants): steady calls, a churn of deploys, calls, hot swaps and
//! kills, secret puts, reads and deletes, watches reconnecting where they left off, and
//! every few seconds a service that logs a megabyte and replies two. Each minute prints
//! the server process's resident memory, its open files and that minute's call p99; the
//! summary compares the last minute with the first after warm-up (the target: under 5 %
//! growth, no upward trend of p99). The server is the `solo` binary beside this one, on
//! its defaults but for a 16 MiB store cache (`SOAK_CACHE_MB`), so that the cache is
//! full after warm-up: it fills as the store grows and then stays at its size (`[store]
//! cache_mb`, 64 MiB by default), which is bounded growth, not a leak. Extra `SOLO_*` or
//! allocator variables in the environment reach the server.
//! `SOAK_SKIP=big,churn,secrets,watch` (any of them) leaves parts of the load out, to
//! find what a growth comes from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use solo_client::Solo;
use solo_types::api::{DeployRequest, KillOptions, SwapMode, SwapRequest, WatchRequest};
use solo_types::{EventFilter, Format, ServiceId, TenantId};

use crate::report;
use crate::stats::{Samples, r2};

const TENANTS: [&str; 4] = ["ana", "ben", "cai", "dee"];

/// Logs about a megabyte, replies about two.
const BIG: &str = r#"
export function handleCall(r) {
  const line = "x".repeat(1000);
  for (let i = 0; i < 1000; i++) solo.log("info", line);
  return { blob: "y".repeat(2 * 1024 * 1024) };
}"#;

/// What the load did, shared by its tasks.
#[derive(Default)]
struct Load {
    calls: Mutex<Samples>,
    ops: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Load {
    fn done<T, E: std::fmt::Display>(&self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ops.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock() = Some(e.to_string());
                None
            }
        }
    }
}

fn sid(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap_or_else(|e| unreachable!("{e}"))
}

/// Process `pid`'s resident memory in KiB and its open files.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    (rss, fds)
}

/// A `solo server` child process on 127.0.0.1 port 0, killed when dropped.
struct Server {
    child: std::process::Child,
    dir: tempfile::TempDir,
    grpc: String,
}

impl Server {
    fn start(cache_mb: usize) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let mut child = std::process::Command::new(crate::mcp::solo_bin()?)
            .args([
                "server",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("SOLO_STORE__CACHE_MB", cache_mb.to_string())
            .env("SOLO_LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = std::io::BufReader::new(out).lines();
        let grpc = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(a) = line?.strip_prefix("grpc listening on ") {
                        break a.to_string();
                    }
                }
                None => anyhow::bail!("the server ended before it listened"),
            }
        };
        // Keep reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, dir, grpc })
    }

    fn tenant_profile(&self, tenant: &str) -> anyhow::Result<solo_client::Profile> {
        crate::gateway::tenant_profile(self.dir.path(), &self.grpc, tenant)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(minutes: u64, minute: Duration) -> anyhow::Result<()> {
    let cache_mb: usize = std::env::var("SOAK_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let s = Server::start(cache_mb)?;
    let pid = s.child.id();
    let dir = s.dir.path();
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut solos = Vec::new();
    for t in TENANTS {
        let p = s.tenant_profile(t)?;
        solos.push(load_rt.block_on(p.open())?);
    }
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let echo = solo_guests::js("echo");
    for (i, solo) in solos.iter().enumerate() {
        let d = DeployRequest::new(sid("echo"), Format::Js, echo.clone().into_bytes());
        load_rt
            .block_on(solo.deploy(&d))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if i == 0 {
            let d = DeployRequest::new(sid("big"), Format::Js, BIG.as_bytes().to_vec());
            load_rt
                .block_on(solo.deploy(&d))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    for (i, solo) in solos.iter().enumerate() {
        spawn_workers(&load_rt, i, TENANTS[i], solo.clone(), &load, &stop);
    }

    let (rss0, fds0) = rss_and_fds(pid);
    let mut rows = Vec::new();
    for m in 1..=minutes {
        std::thread::sleep(minute);
        let mut calls = std::mem::take(&mut *load.calls.lock());
        let (rss, fds) = rss_and_fds(pid);
        let store = std::fs::metadata(dir.join("solo.redb")).map_or(0, |m| m.len() >> 10);
        let row = json!({
            "scenario": "soak.minute", "minute": m,
            "rss_kib": rss, "open_files": fds, "store_kib": store,
            "calls": calls.len(), "call_p50_us": r2(calls.quantile_us(0.5)),
            "call_p99_us": r2(calls.quantile_us(0.99)),
            "ops": load.ops.swap(0, Ordering::Relaxed),
            "errors": load.errors.swap(0, Ordering::Relaxed),
            "last_error": load.last_error.lock().take(),
        });
        report(&row);
        rows.push((rss, fds, calls.quantile_us(0.99)));
    }
    stop.store(true, Ordering::Relaxed);
    load_rt.shutdown_timeout(Duration::from_secs(5));
    drop(s);

    // Warm-up: the first minute (or the only one).
    #[allow(clippy::cast_precision_loss)]
    let growth = |a: u64, b: u64| r2((b as f64 - a as f64) / a.max(1) as f64 * 100.0);
    let first = rows.get(1).or(rows.first()).copied().unwrap_or((0, 0, 0.0));
    let after = &rows[1.min(rows.len())..];
    let half = after.len() / 2;
    let last = rows.last().copied().unwrap_or(first);
    report(&json!({
        "scenario": "soak.summary", "minutes": minutes,
        "before_load": { "rss_kib": rss0, "open_files": fds0 },
        "after_warmup": { "rss_kib": first.0, "open_files": first.1, "call_p99_us": r2(first.2) },
        "last_minute": { "rss_kib": last.0, "open_files": last.1, "call_p99_us": r2(last.2) },
        "rss_growth_pct": growth(first.0, last.0),
        "open_files_growth_pct": growth(first.1 as u64, last.1 as u64),
        "p99_ratio": r2(last.2 / first.2),
        // Minute p99s are noisy on a shared machine: the trend is the median of the
        // second half of the minutes after warm-up against the first half's.
        "p99_trend": r2(median_p99(&after[half..]) / median_p99(&after[..half])),
        "target": { "growth_pct": 5 },
    }));
    Ok(())
}

/// The median of the minutes' p99s.
fn median_p99(rows: &[(u64, usize, f64)]) -> f64 {
    let mut v: Vec<f64> = rows.iter().map(|r| r.2).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One tenant's share of the load: two callers of its echo, and one of churn, secrets
/// or watches by turn (the first tenant also calls the big service now and then).
fn spawn_workers(
    rt: &tokio::runtime::Runtime,
    i: usize,
    tenant: &'static str,
    solo: Solo,
    load: &Arc<Load>,
    stop: &Arc<AtomicBool>,
) {
    for _ in 0..2 {
        let (solo, load, stop) = (solo.clone(), Arc::clone(load), Arc::clone(stop));
        rt.spawn(async move {
            let id = sid("echo");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let r = solo.call(&id, &json!({ "n": n }).to_string(), None).await;
                if load.done(r).is_some() {
                    load.calls.lock().push(t.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    let (load, stop) = (Arc::clone(load), Arc::clone(stop));
    rt.spawn(async move {
        let seen = AtomicU64::new(0);
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let skip = std::env::var("SOAK_SKIP").unwrap_or_default();
            match (i + usize::try_from(round).unwrap_or(0)) % 3 {
                0 if !skip.contains("churn") => churn(&solo, &load, round).await,
                1 if !skip.contains("secrets") => secrets(&solo, &load, round).await,
                2 if !skip.contains("watch") => watch(&solo, &load, tenant, &seen).await,
                _ => {}
            }
            if i == 0 && round.is_multiple_of(10) && !skip.contains("big") {
                let r = solo.call(&sid("big"), "{}", None).await;
                load.done(r);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Deploy, call, swap (JS to wasm, carrying nothing), call, kill.
async fn churn(solo: &Solo, load: &Load, round: u64) {
    let id = sid(&format!("churn-{}", round % 8));
    let counter = solo_guests::js("counter").into_bytes();
    let d = DeployRequest::new(id.clone(), Format::Js, counter);
    if load.done(solo.deploy(&d).await).is_none() {
        return;
    }
    load.done(solo.call(&id, r#"{"op":"inc"}"#, None).await);
    let swap = SwapRequest {
        service_id: id.clone(),
        format: Format::Wasm,
        code: solo_guests::wasm("echo").into(),
        mode: SwapMode::Replace,
        rollback_window: None,
    };
    load.done(solo.swap(&swap).await);
    load.done(solo.call(&id, r#"{"op":"echo"}"#, None).await);
    load.done(solo.kill(&id, KillOptions::default()).await);
}

/// Put, read, list and delete a secret.
async fn secrets(solo: &Solo, load: &Load, round: u64) {
    let name = format!("key-{}", round % 16);
    let value = format!("value of round {round}").into_bytes();
    load.done(solo.put_secret(&name, &value).await);
    load.done(solo.get_secret(&name).await);
    load.done(solo.list_secrets().await);
    load.done(solo.delete_secret(&name).await);
}

/// Reconnects a watch of the tenant's events where it left off (as an agent's watcher
/// does), reads what is new for a moment and drops it.
async fn watch(solo: &Solo, load: &Load, tenant: &str, seen: &AtomicU64) {
    let req = WatchRequest {
        after_id: seen.load(Ordering::Relaxed),
        filter: EventFilter {
            tenant: TenantId::new(tenant).ok(),
            ..EventFilter::default()
        },
        include_logs: false,
    };
    if let Some(mut feed) = load.done(solo.watch(&req).await) {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(Ok(e)) = feed.next().await {
                seen.fetch_max(e.id, Ordering::Relaxed);
            }
        })
        .await;
    }
}
