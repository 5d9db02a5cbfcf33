//! Solo's benchmark harness. Each scenario prints one JSON object per line with its
//! figures and, beside them, a baseline measured in the same run.
//!
//! Run with `cargo run --release -p solo-bench -- <scenario>`; `--help` lists them.

// The harness reports on stdout.
#![allow(clippy::print_stdout)]

mod breakdown;
mod cluster;
mod density;
mod egress;
mod failover;
mod fairness;
mod gateway;
mod kernel;
mod lifecycle;
mod mcp;
mod million;
mod noisy;
mod sandbox;
mod security;
mod soak;
mod stats;
mod store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "solo-bench",
    about = "Solo's benchmarks, each beside a baseline"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Seconds to run each measured configuration.
    #[arg(long, default_value_t = 3.0, global = true)]
    seconds: f64,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Durable event appends with 1, 8 and 64 concurrent appenders vs raw redb.
    Store,
    /// Compile, instantiate, call and idle memory, wasm and JS, vs raw wasmtime/rquickjs.
    Sandbox,
    /// Deploy, call, restart and idle memory through the kernel, vs the bare sandbox.
    Kernel,
    /// Capability verify and grant, vault put and get, vs bare SHA-256 and AES-GCM.
    Security,
    /// Calls over gRPC and REST with mutual TLS at 1/16/64 streams, vs bare tonic.
    Gateway,
    /// Hot swap, recovery and shutdown with 1,000 services.
    Lifecycle,
    /// A tool call over MCP (Streamable HTTP, and stdio through `solo mcp`) vs gRPC.
    Mcp,
    /// Another tenant's call beside 8 spinning JS and 8 spinning wasm services, with and
    /// without the busy lane.
    Fairness,
    /// Another tenant's call beside a patient flood, a client hammering without waiting,
    /// and the hammer beside 16 spinning services, vs the same tenant alone.
    Noisy,
    /// Where an idle wasm service's memory goes, part by part, 10,000 services per stage.
    Density,
    /// N wasm counters (a million) over T tenants, hibernated after idling: deploy rate,
    /// memory per service, wake latency, stop and start with N records. Not part of
    /// `all`.
    Million {
        #[arg(long, default_value_t = 1_000_000)]
        services: usize,
        #[arg(long, default_value_t = 1_000)]
        tenants: usize,
    },
    /// An HTTP request from inside a JS and a wasm service to a loopback server, vs bare
    /// hyper and reqwest clients.
    Egress,
    /// Mixed load (calls, deploys, swaps, kills, secrets, watches, big logs and replies)
    /// for N minutes: memory, open files and call p99 per minute. Not part of `all`.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds in a reported "minute" (for a quick look).
        #[arg(long, default_value_t = 60)]
        minute_seconds: u64,
    },
    /// Durable appends on the replicated log (three NATS servers, 3 replicas, synced)
    /// vs the embedded store, at 1, 8 and 64 appenders.
    Cluster,
    /// Calls through a cluster's standby (forwarded) vs to the active node directly; then
    /// kill -9 of the active node to the standby's first answered call (2 s lease), vs
    /// an embedded node restarted at once. Needs `target/release/solo`.
    Failover,
    /// Every scenario in turn.
    All,
    /// (internal) Measures idle memory in a fresh process.
    #[command(hide = true)]
    IdleProbe { which: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secs = std::time::Duration::from_secs_f64(cli.seconds);
    match cli.scenario {
        Scenario::Store => store::run(secs)?,
        Scenario::Cluster => cluster::run(secs)?,
        Scenario::Failover => failover::run()?,
        Scenario::Sandbox => sandbox::run(secs)?,
        Scenario::Kernel => kernel::run(secs)?,
        Scenario::Security => security::run(secs)?,
        Scenario::Gateway => gateway::run(secs)?,
        Scenario::Lifecycle => lifecycle::run(secs)?,
        Scenario::Mcp => mcp::run(secs)?,
        Scenario::Fairness => fairness::run(secs)?,
        Scenario::Noisy => noisy::run(secs)?,
        Scenario::Egress => egress::run(secs)?,
        Scenario::Density => density::run()?,
        Scenario::Million { services, tenants } => million::run(services, tenants.max(1))?,
        Scenario::Soak {
            minutes,
            minute_seconds,
        } => soak::run(minutes, std::time::Duration::from_secs(minute_seconds))?,
        Scenario::IdleProbe { ref which } => sandbox::idle_probe(which)?,
        Scenario::All => {
            store::run(secs)?;
            cluster::run(secs)?;
            sandbox::run(secs)?;
            kernel::run(secs)?;
            security::run(secs)?;
            gateway::run(secs)?;
            lifecycle::run(secs)?;
            mcp::run(secs)?;
            fairness::run(secs)?;
            noisy::run(secs)?;
            egress::run(secs)?;
            density::run()?;
        }
    }
    Ok(())
}

/// Prints one scenario's result as a JSON line.
pub fn report(value: &serde_json::Value) {
    println!("{value}");
}

/// Runs `work` on a worker of a two-thread runtime, as a gateway handler runs: the
/// thread of `block_on` is outside the pool, and every hop to a worker would cross
/// threads.
pub fn on_worker<F>(work: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move { tokio::spawn(work).await? })
}

/// A kernel error as an `anyhow` error.
pub fn kerr(e: solo_kernel::KernelError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
