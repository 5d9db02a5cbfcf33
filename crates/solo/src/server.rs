//! `solo server`: load the config, open the data directory, run until a signal.

use std::path::PathBuf;

use anyhow::Context;
use solo_store::{EventLog, RedbStore};
use solo_types::{NewEvent, kinds};

use crate::config::{self, FlagOverrides, LogFormat};

/// Flags of `solo server`; each overrides the config file and the environment.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// A TOML config file (also `SOLO_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store, keys and certificates live (default ./solo-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?}; use text or json")),
    }
}

/// Runs the server until SIGTERM or ctrl-c.
#[allow(clippy::print_stdout)]
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let flags = FlagOverrides {
        data_dir: args.data_dir,
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
    rt.block_on(async move {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data directory {}", cfg.data_dir.display()))?;
        let store = RedbStore::open(cfg.data_dir.join("solo.redb"))?;
        store
            .append(vec![
                NewEvent::system(kinds::SYSTEM_STARTED, "solo")
                    .payload(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
            ])
            .await?;
        tracing::info!(data_dir = %cfg.data_dir.display(), "solo started");
        wait_for_signal().await?;
        tracing::info!("shutting down");
        store
            .append(vec![NewEvent::system(
                kinds::SYSTEM_SHUTDOWN_STARTED,
                "solo",
            )])
            .await?;
        store
            .append(vec![NewEvent::system(
                kinds::SYSTEM_SHUTDOWN_COMPLETE,
                "solo",
            )])
            .await?;
        store.close().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("wait for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
