//! Egress scenario: one HTTP GET to a server on 127.0.0.1, sent from inside a service
//! called through the kernel (JavaScript `fetch`, and a component using `wstd` over
//! `wasi:http`), beside baselines measured in the same run: the same call without the
//! request (what a call costs by itself), a bare hyper client opening a fresh
//! connection per request (what Solo's client does: no connection is shared between
//! services), a bare `reqwest` client keeping its connection alive, and Solo's egress
//! client alone (policy, resolve, address check, connect). What Solo adds to a
//! request is the service's call with the request, minus the call alone, minus the
//! bare fresh-connection request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use solo_egress::testing::TestServer;
use solo_kernel::{Caller, DeployRequest, EgressConfig, KernelConfig};
use solo_types::{Format, ServiceId, TenantId};

use crate::report;
use crate::stats::{Samples, r2};

const FETCH_JS: &str = r#"
export async function handleCall(r) {
  if (!r.url) return "ok";
  const res = await fetch(r.url);
  return { status: res.status, text: await res.text() };
}"#;

/// Runs `one` again and again for `secs`; the p50 and p99 in µs.
async fn timed<F, Fut>(secs: Duration, mut one: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..50 {
        one().await?;
    }
    let mut s = Samples::default();
    let end = Instant::now() + secs;
    while Instant::now() < end {
        let t = Instant::now();
        one().await?;
        s.push(t.elapsed());
    }
    Ok((s.quantile_us(0.5), s.quantile_us(0.99)))
}

/// A GET on a fresh connection with hyper, as bare as it gets.
async fn bare_get(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/hello")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let body = send.send_request(req).await?.into_body().collect().await?;
    anyhow::ensure!(body.to_bytes().as_ref() == b"hello");
    Ok(())
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(secs))
}

async fn measure(secs: Duration) -> anyhow::Result<()> {
    let server = TestServer::start(None).await?;
    let addr = server.addr;
    let url = format!("http://{addr}/hello");
    let config = KernelConfig {
        egress: EgressConfig {
            rate_per_tenant: 0,
            ..EgressConfig::default()
        },
        ..KernelConfig::default()
    };
    let s = crate::gateway::serve(config).await?;
    let k = &s.kernel;
    let tenant = TenantId::new("bench")?;
    let rule = format!("http://{addr}");
    k.change_egress(
        &Caller::admin(TenantId::new("admin")?),
        &tenant,
        std::slice::from_ref(&rule),
        true,
    )
    .await?;
    let me = Caller::tenant(tenant);
    let deploy = |id: &str, format, code: Vec<u8>| {
        let mut d = DeployRequest::new(
            ServiceId::new(id).unwrap_or_else(|e| unreachable!("{e}")),
            format,
            code,
        );
        d.egress = vec![rule.clone()];
        d
    };
    k.deploy(&me, deploy("js", Format::Js, FETCH_JS.as_bytes().to_vec()))
        .await?;
    k.deploy(
        &me,
        deploy("wasm", Format::Wasm, solo_guests::wasm("fetcher")),
    )
    .await?;
    k.deploy(&me, deploy("echo", Format::Wasm, solo_guests::wasm("echo")))
        .await?;

    let call = |id: &'static str, request: String| {
        let (k, me) = (k.clone(), me.clone());
        move || {
            let (k, me, request) = (k.clone(), me.clone(), request.clone());
            async move {
                let sid = ServiceId::new(id)?;
                k.call(&me, &sid, &request, None)
                    .await
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            }
        }
    };
    let fetch = json!({ "url": url }).to_string();
    let js_alone = timed(secs, call("js", "{}".into())).await?;
    let js_fetch = timed(secs, call("js", fetch.clone())).await?;
    let wasm_alone = timed(secs, call("echo", "{}".into())).await?;
    let wasm_fetch = timed(secs, call("wasm", fetch)).await?;
    let bare = timed(secs, || bare_get(addr)).await?;
    // Plain HTTP; the TLS settings only give reqwest its crypto provider.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(s.admin_profile()?.rustls_config()?)
        .build()?;
    let kept = timed(secs, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = http.get(&url).send().await?.bytes().await?;
            anyhow::ensure!(body.as_ref() == b"hello");
            Ok(())
        }
    })
    .await?;
    let client = Arc::new(
        solo_egress::Client::new(solo_egress::EgressLimits::default(), &[])
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    let rules: Arc<[_]> = solo_egress::parse_rules(&[rule])?.into();
    let policy = solo_egress::Policy {
        tenant: Arc::clone(&rules),
        service: rules,
    };
    let engine = timed(secs, || {
        let (client, policy, url) = (Arc::clone(&client), policy.clone(), url.clone());
        async move {
            let r = client
                .send(
                    solo_egress::Request {
                        method: solo_egress::Method::GET,
                        url,
                        headers: Vec::new(),
                        body: Bytes::new(),
                        secret_headers: Vec::new(),
                    },
                    &policy,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(r.body.as_ref() == b"hello");
            Ok(())
        }
    })
    .await?;
    let row = |name: &str, (p50, p99): (f64, f64)| json!({ "case": name, "p50_us": r2(p50), "p99_us": r2(p99) });
    let added = |with: (f64, f64), alone: (f64, f64)| r2(with.0 - alone.0 - bare.0);
    report(&json!({
        "scenario": "egress",
        "cases": [
            row("js: call with fetch", js_fetch),
            row("js: call alone", js_alone),
            row("wasm (wstd, wasi:http): call with a request", wasm_fetch),
            row("wasm: call alone (echo)", wasm_alone),
            row("solo_egress::Client::send alone", engine),
            row("baseline: bare hyper, fresh connection", bare),
            row("baseline: reqwest, kept alive", kept),
        ],
        "solo_adds_p50_us": { "js": added(js_fetch, js_alone), "wasm": added(wasm_fetch, wasm_alone),
                              "client_alone": r2(engine.0 - bare.0) },
        "target": { "solo_adds_p50_us": 150 },
    }));
    Ok(())
}
