//! The `solo` binary: `solo server` runs the kernel; the other commands are its clients.

// A command-line tool writes its results to stdout.
#![allow(clippy::print_stdout)]

mod cli;
mod cluster;
mod config;
mod mcp;
mod output;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "solo",
    version,
    about = "Solo: a user-level operating system for LLM agents",
    after_help = "The client commands find the server and their credentials from the flags, then \
                  SOLO_ENDPOINT / SOLO_CERT / SOLO_KEY / SOLO_CA / SOLO_TOKEN / SOLO_TENANT / SOLO_NODE, then the \
                  data directory (--data-dir, SOLO_DATA_DIR, ./solo-data), so right after `solo server` \
                  they need no flags."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Print JSON (one document, or one per line for streams) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The data directory (default ./solo-data; also SOLO_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's gRPC address, HOST:PORT (also SOLO_ENDPOINT); for a cluster, several
    /// separated by commas, tried in order until one connects.
    #[arg(long, global = true, value_name = "HOST:PORT[,...]")]
    pub endpoint: Option<String>,
    /// A client certificate, PEM (also SOLO_CERT).
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key, PEM (also SOLO_KEY).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The Solo CA certificate, PEM (also SOLO_CA).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A capability token to act with instead of a certificate (prefer SOLO_TOKEN: a
    /// flag is visible to other users of the machine).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Admins only: act for this tenant (also SOLO_TENANT).
    #[arg(long, global = true, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Admins only, on a cluster of mode tenants: ask this node, whichever node the
    /// endpoint names (its tree, its health, its metrics; also SOLO_NODE).
    #[arg(long, global = true, value_name = "NODE")]
    pub node: Option<String>,
}

impl Global {
    /// The server and credentials to use: flags, then `SOLO_*`, then the data directory.
    pub fn profile(&self) -> Result<solo_client::Profile, solo_client::ClientError> {
        let flags = solo_client::Flags {
            endpoint: self.endpoint.clone(),
            data_dir: self.data_dir.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            token: self.token.clone(),
            tenant: self.tenant.clone(),
            node: self.node.clone(),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        solo_client::Profile::resolve(&flags, &env)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground (logs to stderr; stops on SIGTERM or ctrl-c).
    Server(server::ServerArgs),
    /// Create the CA, the server certificate and the admin certificate in the data
    /// directory (`solo server` does this on first start).
    Init(cli::InitArgs),
    /// Issue client certificates.
    #[command(subcommand)]
    Certs(cli::CertsCmd),
    #[command(flatten)]
    Client(cli::ClientCmd),
    /// Serve MCP on stdin and stdout for a local agent: Solo's operations as tools, your
    /// services offered as tools, your events and logs as resources. Add
    /// {"command": "solo", "args": ["mcp"]} to the agent's MCP servers.
    Mcp,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let as_json = cli.global.json;
    let result = match cli.command {
        Command::Server(args) => server::run(args, cli.global.data_dir.clone()),
        Command::Init(args) => cli::init(&cli.global, &args),
        Command::Certs(cmd) => cli::certs(&cli.global, cmd),
        Command::Client(cmd) => cli::run(&cli.global, cmd),
        Command::Mcp => mcp::run(&cli.global),
        Command::Version => {
            println!("solo {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::fail(&e, as_json);
            ExitCode::FAILURE
        }
    }
}
