//! Gateway scenario: `Call` to a WebAssembly echo service over mutual TLS, through gRPC
//! and through REST, with 1, 16 and 64 concurrent streams on one connection; beside the
//! same tonic client against a bare tonic echo server on the same TLS settings, and the
//! kernel's in-process call. Client and server share the process (and its 2 cores).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solo_client::{Flags, Profile};
use solo_gateway::pki::{self, CertPaths};
use solo_gateway::{Gateway, GatewayConfig, TlsFiles};
use solo_kernel::{Caller, DeployRequest, Kernel, KernelConfig, KernelOptions};
use solo_proto::v1 as pb;
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{RedbStore, StoreOptions};
use solo_types::{Format, ServiceId, TenantId};

use crate::report;
use crate::stats::{Figures, Samples, r2};

const REQUEST: &str = r#"{"op":"echo","n":1}"#;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// A kernel behind a gateway on 127.0.0.1 port 0, with fresh certificates in a
/// temporary data directory.
pub(crate) struct Setup {
    pub(crate) kernel: Kernel,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) dir: tempfile::TempDir,
}

impl Setup {
    /// The admin's client profile: the certificates in the data directory, the gRPC
    /// address.
    pub(crate) fn admin_profile(&self) -> anyhow::Result<Profile> {
        Ok(Profile::resolve(
            &Flags {
                data_dir: Some(self.dir.path().to_path_buf()),
                endpoint: Some(self.gateway.grpc_addr().to_string()),
                ..Flags::default()
            },
            &[],
        )?)
    }

    /// A client profile of `tenant`, whose certificate is issued now by the setup's CA.
    pub(crate) fn tenant_profile(&self, tenant: &str) -> anyhow::Result<Profile> {
        tenant_profile(
            self.dir.path(),
            &self.gateway.grpc_addr().to_string(),
            tenant,
        )
    }
}

/// A client profile of `tenant` for the server at `endpoint` whose data directory (and
/// CA) is `dir`, with a certificate issued now.
pub(crate) fn tenant_profile(
    dir: &std::path::Path,
    endpoint: &str,
    tenant: &str,
) -> anyhow::Result<Profile> {
    let clients = dir.join("clients");
    pki::issue(dir, tenant, false, &clients)?;
    Ok(Profile::resolve(
        &Flags {
            endpoint: Some(endpoint.to_string()),
            cert: Some(clients.join(format!("{tenant}.pem"))),
            key: Some(clients.join(format!("{tenant}-key.pem"))),
            ca: Some(CertPaths::new(dir).ca()),
            data_dir: Some(dir.join("none")),
            ..Flags::default()
        },
        &[],
    )?)
}

pub(crate) async fn serve(config: KernelConfig) -> anyhow::Result<Setup> {
    let sandbox = SandboxConfig {
        max_instances: 100,
        ..SandboxConfig::default()
    };
    serve_with(config, sandbox).await
}

/// [`serve`] with a sandbox of `sandbox`'s settings.
pub(crate) async fn serve_with(
    config: KernelConfig,
    sandbox: SandboxConfig,
) -> anyhow::Result<Setup> {
    serve_on(config, sandbox, StoreOptions::default()).await
}

/// [`serve_with`] on a store with `store`'s settings.
pub(crate) async fn serve_on(
    config: KernelConfig,
    sandbox: SandboxConfig,
    store: StoreOptions,
) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    pki::init(dir.path(), &[])?;
    let store = Arc::new(RedbStore::open_with(dir.path().join("solo.redb"), store)?);
    let sandbox = Sandbox::new(sandbox)?;
    let tls = TlsFiles::load(&CertPaths::new(dir.path()))?;
    let gateway = Gateway::bind(
        GatewayConfig {
            grpc_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            ..GatewayConfig::default()
        },
        &tls,
    )
    .await?;
    let mut components = HashMap::new();
    components.insert("gateway", gateway.component());
    let dyn_store: Arc<dyn solo_store::Store> = store.clone();
    let vault =
        solo_vault::Vault::open(dyn_store, solo_vault::MasterKey::generate()?, "bench").await?;
    let kernel = Kernel::start(
        store,
        sandbox,
        config,
        KernelOptions {
            components,
            vault: Some(Arc::new(vault)),
            ..KernelOptions::default()
        },
    )
    .await?;
    gateway.attach(kernel.clone());
    Ok(Setup {
        kernel,
        gateway,
        dir,
    })
}

async fn setup() -> anyhow::Result<Setup> {
    let s = serve(KernelConfig::default()).await?;
    let admin = Caller::admin(TenantId::new("admin")?);
    s.kernel
        .deploy(
            &admin,
            DeployRequest::new(
                ServiceId::new("echo")?,
                Format::Wasm,
                solo_guests::wasm("echo"),
            ),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(s)
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let s = setup().await?;
        let profile = s.admin_profile()?;
        let bare_addr = bare_server(s.dir.path()).await?;
        let bare_profile = Profile {
            endpoint: bare_addr.to_string(),
            ..profile.clone()
        };
        // On a worker thread, as a gateway handler runs it (not on `block_on`'s thread).
        let kernel = s.kernel.clone();
        let in_process = tokio::spawn(async move { in_process(&kernel, secs).await }).await??;
        for n in CONCURRENCY {
            let solo = grpc(&profile, n, secs).await?;
            let bare = grpc(&bare_profile, n, secs).await?;
            report(&json!({
                "scenario": "gateway.grpc_call", "format": "wasm", "streams": n,
                "calls_per_sec": solo.rate.round(), "p50_us": r2(solo.p50), "p99_us": r2(solo.p99),
                "baseline": {
                    "name": "the same tonic client against a bare tonic echo server (same TLS)",
                    "calls_per_sec": bare.rate.round(), "p50_us": r2(bare.p50), "p99_us": r2(bare.p99),
                },
                "in_process_call_p50_us": r2(in_process),
                "ratio_rate": r2(bare.rate / solo.rate),
                "target": { "calls_per_sec_at_64": 25_000, "p99_ms": 10, "within_x_of_bare": 1.5 },
            }));
        }
        let http = format!("https://{}", s.gateway.http_addr());
        for n in CONCURRENCY {
            let solo = rest(&profile, &http, n, secs).await?;
            let bare = grpc(&bare_profile, n, secs).await?;
            report(&json!({
                "scenario": "gateway.rest_call", "format": "wasm", "streams": n,
                "calls_per_sec": solo.rate.round(), "p50_us": r2(solo.p50), "p99_us": r2(solo.p99),
                "baseline": {
                    "name": "bare tonic echo server over the same TLS (gRPC)",
                    "calls_per_sec": bare.rate.round(), "p50_us": r2(bare.p50), "p99_us": r2(bare.p99),
                },
                "in_process_call_p50_us": r2(in_process),
                "ratio_rate": r2(bare.rate / solo.rate),
            }));
        }
        s.gateway.drain(Duration::from_secs(1)).await;
        s.kernel.shutdown().await;
        Ok(())
    })
}

async fn in_process(kernel: &Kernel, secs: Duration) -> anyhow::Result<f64> {
    let admin = Caller::admin(TenantId::new("admin")?);
    let id = ServiceId::new("echo")?;
    let mut lat = Samples::default();
    let t0 = Instant::now();
    while t0.elapsed() < secs.min(Duration::from_secs(1)) {
        let t = Instant::now();
        kernel
            .call(&admin, &id, REQUEST, Some(Duration::from_secs(5)))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lat.push(t.elapsed());
    }
    Ok(lat.quantile_us(0.5))
}

/// `n` tasks each calling in a loop over one shared connection.
async fn grpc(profile: &Profile, n: usize, secs: Duration) -> anyhow::Result<Figures> {
    let client = profile.connect().await?;
    // Warm up the connection.
    let mut c = client.clone();
    for _ in 0..100 {
        c.call(call_request()).await?;
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut c = client.clone();
        tasks.spawn(async move {
            let mut lat = Samples::default();
            while t0.elapsed() < secs {
                let t = Instant::now();
                c.call(call_request()).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(lat)
        });
    }
    let mut all = Samples::default();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(Figures::of(all, t0.elapsed()))
}

fn call_request() -> pb::CallRequest {
    pb::CallRequest {
        service_id: "echo".into(),
        request: REQUEST.into(),
        timeout_ms: 5000,
    }
}

/// An HTTP/2 client with the profile's client certificate.
pub(crate) fn https_client(profile: &Profile) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(profile.rustls_config()?)
        .http2_prior_knowledge()
        .build()?)
}

/// `n` streams calling the echo service over REST (HTTP/2, JSON) on one connection.
pub(crate) async fn rest(
    profile: &Profile,
    base: &str,
    n: usize,
    secs: Duration,
) -> anyhow::Result<Figures> {
    let client = https_client(profile)?;
    let url = format!("{base}/v1/services/echo/call");
    let body: serde_json::Value = serde_json::from_str(REQUEST)?;
    for _ in 0..100 {
        client
            .post(&url)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            let mut lat = Samples::default();
            while t0.elapsed() < secs {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                r.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, reqwest::Error>(lat)
        });
    }
    let mut all = Samples::default();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(Figures::of(all, t0.elapsed()))
}

/// A bare tonic server answering `solo.v1.SoloKernel/Call` with the request, on the
/// Solo server certificate and requiring a client certificate from the Solo CA.
async fn bare_server(dir: &std::path::Path) -> anyhow::Result<std::net::SocketAddr> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let paths = CertPaths::new(dir);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(paths.server())?,
            std::fs::read(paths.server_key())?,
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(paths.ca())?));
    let svc = tower::service_fn(|req: axum::http::Request<axum::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
        Ok::<_, Infallible>(grpc.unary(EchoCall, req).await)
    });
    let router = axum::Router::new().route_service("/solo.v1.SoloKernel/Call", svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .tls_config(tls)?
        .add_routes(tonic::service::Routes::from(router));
    tokio::spawn(async move {
        // TCP_NODELAY, as the gateway sets it: without it the baseline's tail is
        // Nagle's 40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = server.serve_with_incoming(incoming).await {
            eprintln!("the bare server stopped: {e}");
        }
    });
    Ok(addr)
}

#[derive(Clone, Copy)]
struct EchoCall;

impl tonic::server::UnaryService<pb::CallRequest> for EchoCall {
    type Response = pb::CallResponse;
    type Future = Ready<Result<tonic::Response<pb::CallResponse>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<pb::CallRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(pb::CallResponse {
            reply: req.into_inner().request,
        })))
    }
}
