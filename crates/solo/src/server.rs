//! `solo server`: load the config, open the data directory, run until a signal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use solo_client::ServerInfo;
use solo_gateway::pki::{self, CertPaths};
use solo_gateway::{Gateway, GatewayConfig, TlsFiles};
use solo_kernel::{Kernel, KernelOptions};
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{RedbStore, Store};
use solo_types::{NewEvent, kinds};
use solo_vault::{KeySource, MasterKey, Vault};

use crate::config::{self, Config, FlagOverrides, LogFormat};

/// Flags of `solo server`; each overrides the config file and the environment.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// A TOML config file (also `SOLO_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:50051; port 0 picks one).
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    /// HTTPS listen address (default 127.0.0.1:8080; port 0 picks one).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// Plaintext Prometheus listener on loopback (unset by default).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log filter, such as `info` or `debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration and where each value came from, then exit.
    #[arg(long)]
    print_config: bool,
}

/// The configured connection cap, lowered to three quarters of the open-file limit when
/// that is smaller: the rest is for the store, the artifact cache and the listeners.
fn connection_cap(configured: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return configured;
    };
    let budget = usize::try_from(limit / 4 * 3).unwrap_or(usize::MAX).max(1);
    if budget < configured {
        tracing::info!(
            configured,
            open_file_limit = limit,
            cap = budget,
            "connections.max_open lowered to fit the open-file limit"
        );
        return budget;
    }
    configured
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`), if it is finite.
#[allow(unsafe_code)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` through a valid pointer to a local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?}; use text or json")),
    }
}

/// Runs the server until SIGTERM, ctrl-c or an admin's `Shutdown`.
#[allow(clippy::print_stdout)]
pub fn run(args: ServerArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let flags = FlagOverrides {
        data_dir,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        metrics_addr: args.metrics_addr,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let loaded = config::load(args.config.as_deref(), std::env::vars(), &flags)?;
    if args.print_config {
        print!("{}", loaded.describe());
        return Ok(());
    }
    let cfg = loaded.config;
    init_tracing(&cfg.log_level, cfg.log_format);
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(serve(cfg))
}

/// The sandbox's instance slots: `configured`, or else the sandbox's default lowered to
/// what `vm.max_map_count` allows; with a warning saying how to get more when the
/// number does not fit.
fn instance_slots(configured: Option<u32>) -> u32 {
    let wanted = configured.unwrap_or(SandboxConfig::default().max_instances);
    let Some(limit) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return wanted;
    };
    let fits = solo_sandbox::slots_within_map_count(wanted, limit);
    if fits < wanted {
        let slots = if configured.is_some() { wanted } else { fits };
        tracing::warn!(
            slots,
            fits,
            max_map_count = limit,
            "more instance slots than vm.max_map_count fits (each used slot holds about 7 \
             memory mappings; past it, starting an instance fails); raise it with sysctl"
        );
        return slots;
    }
    wanted
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let data_dir = &cfg.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    if pki::init(data_dir, &cfg.tls.server_names)?.created {
        tracing::info!(dir = %CertPaths::new(data_dir).dir.display(), "created the CA, the server and the admin certificates");
    }
    let tls = TlsFiles::load(&CertPaths::new(data_dir))?;
    let gateway = Gateway::bind(
        GatewayConfig {
            grpc_addr: cfg.grpc_addr,
            http_addr: cfg.http_addr,
            metrics_addr: cfg.metrics_addr,
            max_request_bytes: cfg.max_request_bytes,
            mcp_allowed_hosts: cfg.mcp_hosts(),
            mcp_allowed_origins: cfg.mcp.allowed_origins.clone(),
            handshake_timeout: Duration::from_millis(cfg.connections.handshake_timeout_ms),
            connections: solo_gateway::ConnLimits {
                max_open: connection_cap(cfg.connections.max_open),
                first_request: Duration::from_millis(cfg.connections.first_request_timeout_ms),
                idle: Duration::from_millis(cfg.connections.idle_timeout_ms),
            },
        },
        &tls,
    )
    .await?;
    // One node: the store in the data directory. A cluster: the replicated log, once this
    // node is the active one (a standby's gateway forwards its requests meanwhile).
    let (dyn_store, embedded, active, node) = if cfg.cluster.enabled()
        && cfg.cluster.mode == crate::cluster::ClusterMode::Tenants
    {
        let node = crate::cluster::tenants::join(&cfg.cluster, data_dir, &gateway, &tls).await?;
        gateway.route_by_tenant(node.routing());
        (Arc::clone(&node.store), None, None, Some(node))
    } else if cfg.cluster.enabled() {
        let active = crate::cluster::become_active(&cfg.cluster, data_dir, &gateway, &tls).await?;
        (Arc::clone(&active.store), None, Some(active), None)
    } else {
        let store = Arc::new(
            RedbStore::open_with(
                data_dir.join("solo.redb"),
                solo_store::StoreOptions {
                    wal_bytes: cfg.store.wal_mb << 20,
                    cache_bytes: usize::try_from(cfg.store.cache_mb << 20).unwrap_or(usize::MAX),
                    reserve_bytes: cfg.store.reserve_mb() << 20,
                    ..solo_store::StoreOptions::default()
                },
            )
            .with_context(|| format!("open the store in {}", data_dir.display()))?,
        );
        (store.clone() as Arc<dyn Store>, Some(store), None, None)
    };
    let store = Arc::clone(&dyn_store);
    let env_key = std::env::var("SOLO_MASTER_KEY").ok();
    let (master, source) = MasterKey::load_or_create(data_dir, env_key.as_deref())?;
    let origin = match &source {
        KeySource::Env => "SOLO_MASTER_KEY".to_string(),
        KeySource::File(p) | KeySource::Created(p) => p.display().to_string(),
    };
    let vault = Vault::open(Arc::clone(&dyn_store), master, &origin).await?;
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(data_dir.join("cache")),
        max_instances: instance_slots(cfg.sandbox.max_instances),
        ..SandboxConfig::default()
    })?;
    let mut components = HashMap::new();
    components.insert("gateway", gateway.component());
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let egress = egress_client(&cfg.egress)?;
    let kernel = Kernel::start(
        dyn_store,
        sandbox,
        cfg.kernel(),
        KernelOptions {
            components,
            vault: Some(Arc::new(vault)),
            data_dir: Some(data_dir.clone()),
            clock: None,
            on_shutdown: Some(Arc::new(move |grace| {
                let _ = stop_tx.send(grace);
            })),
            egress: Some(Arc::new(egress)),
            node: (active.is_some() || node.is_some())
                .then(|| cfg.cluster.node_id.clone())
                .flatten(),
            members: match &node {
                Some(n) => Some(n.members()),
                None => active.as_ref().and_then(crate::cluster::Active::members),
            },
            // The active node of mode `active` serves every tenant; a node of mode
            // `tenants` those placed on it.
            serves: node.as_ref().map(crate::cluster::tenants::Node::serves),
            // A service's call to a tenant served on another node goes there.
            elsewhere: node.as_ref().map(crate::cluster::tenants::Node::elsewhere),
        },
    )
    .await?;
    if let Some(n) = &node {
        n.run(&kernel);
    }
    gateway.attach(kernel.clone());
    let info = ServerInfo {
        grpc: gateway.grpc_addr().to_string(),
        http: gateway.http_addr().to_string(),
        metrics: gateway.metrics_addr().map(|a| a.to_string()),
        pid: std::process::id(),
    };
    let server_file = data_dir.join(solo_client::SERVER_FILE);
    std::fs::write(&server_file, serde_json::to_vec(&info)?)
        .with_context(|| format!("write {}", server_file.display()))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "grpc listening on {}", info.grpc)?;
        writeln!(out, "http listening on {}", info.http)?;
        if let Some(m) = gateway.metrics_addr() {
            writeln!(out, "metrics listening on {m}")?;
        }
        out.flush()?;
    }
    tracing::info!(data_dir = %data_dir.display(), grpc = %info.grpc, http = %info.http, "solo started");
    if let Some(active) = &active {
        let host = cfg.cluster.advertise_host.as_deref();
        if let Err(e) = active
            .advertise(gateway.grpc_addr(), gateway.http_addr(), host)
            .await
        {
            tracing::warn!(error = %e, "standbys cannot forward clients to this node");
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let (grace, why) = tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("wait for ctrl-c")?; (DEFAULT_GRACE, "interrupt") }
        _ = term.recv() => (DEFAULT_GRACE, "SIGTERM"),
        g = stop_rx.recv() => (g.unwrap_or(DEFAULT_GRACE), "shutdown request"),
        () = kernel.fatal() => (DEFAULT_GRACE, "fatal"),
    };
    tracing::info!(
        reason = why,
        grace_ms = grace.as_millis() as u64,
        "shutting down"
    );
    store
        .append(vec![
            NewEvent::system(kinds::SYSTEM_SHUTDOWN_STARTED, "solo").payload(
                serde_json::json!({ "reason": why, "grace_ms": grace.as_millis() as u64 }),
            ),
        ])
        .await?;
    gateway.drain(grace).await;
    kernel.shutdown().await;
    store
        .append(vec![NewEvent::system(
            kinds::SYSTEM_SHUTDOWN_COMPLETE,
            "solo",
        )])
        .await?;
    if let Some(embedded) = embedded {
        embedded.close().await;
    }
    if let Some(active) = active {
        active.release().await;
    }
    if let Some(node) = node {
        node.release().await;
    }
    // Only our own record: another server may have started on this directory since.
    if std::fs::read(&server_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<ServerInfo>(&b).ok())
        .is_some_and(|i| i.pid == std::process::id())
    {
        let _ = std::fs::remove_file(&server_file);
    }
    tracing::info!("stopped");
    if why == "fatal" {
        anyhow::bail!("the supervision tree gave up; see the log above");
    }
    Ok(())
}

const DEFAULT_GRACE: Duration = Duration::from_secs(5);

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The client services' requests leave through: the Mozilla roots, and the certificates
/// of `egress.extra_ca_file` if set (a file that cannot be read or holds none is an
/// error at start, not a surprise at the first request).
fn egress_client(c: &solo_kernel::EgressConfig) -> anyhow::Result<solo_egress::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = Vec::new();
    if let Some(path) = &c.extra_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("egress.extra_ca_file {}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.push(
                cert.map_err(|e| anyhow::anyhow!("egress.extra_ca_file {}: {e}", path.display()))?,
            );
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "egress.extra_ca_file {} holds no certificate",
            path.display()
        );
    }
    solo_egress::Client::new(c.limits(), &roots).map_err(|e| anyhow::anyhow!("egress: {e}"))
}
