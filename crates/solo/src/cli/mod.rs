//! The client commands of `solo`, one file per group: each resolves a profile, calls one
//! operation through the typed client (`solo_client::Solo`) or follows one stream, and
//! prints lines and tables for people or, with `--json`, the answer's one JSON shape
//! (the shape REST returns). A failure is one `error: reason: message` line on stderr,
//! or with `--json` one JSON document (`{"error", "code", "message", ...}`) on stdout;
//! the exit code is non-zero either way.

mod caps;
mod certs;
mod egress;
mod events;
mod secrets;
mod services;
mod system;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use solo_client::{ClientError, Solo};
use solo_types::Code;
use solo_types::api::Failure;

use crate::Global;
use crate::output;

pub use certs::{CertsCmd, InitArgs, certs, init};

/// Every client command.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Deploy a service from a JavaScript file or a WebAssembly component.
    Deploy(services::DeployArgs),
    /// List your services.
    List(services::ListArgs),
    /// Show one service.
    Status(services::IdArg),
    /// Call a service with a JSON request and print its reply.
    Call(services::CallArgs),
    /// Send a service a JSON message without waiting for an answer.
    Cast(services::CastArgs),
    /// Replace a running service's code, keeping its state.
    Swap(services::SwapArgs),
    /// Stop a service.
    Kill(services::KillArgs),
    /// Print a service's log lines.
    Logs(services::LogsArgs),
    /// Follow events as they happen.
    Watch(events::WatchArgs),
    /// Query the event log, or verify its hash chain (`solo events verify`).
    Events(events::EventsArgs),
    /// Keep secrets for your services.
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Grant, check and revoke capability tokens.
    #[command(subcommand)]
    Caps(caps::CapsCmd),
    /// Where services may send HTTP requests (admins set each tenant's rules).
    #[command(subcommand)]
    Egress(egress::EgressCmd),
    /// Register one of your services under a name, for discovery (again to renew).
    Register(system::RegisterArgs),
    /// Remove a service's registration under a name.
    Deregister(system::DeregisterArgs),
    /// Find registered services: all of yours, or the live ones under NAME whose
    /// metadata matches every --filter.
    Discover(system::DiscoverArgs),
    /// Is the server up? (With credentials: its version, uptime and your services.)
    Health,
    /// Who you are to the server: tenant, role, a token's scope, your quotas.
    Whoami,
    /// The services offered as tools (MCP) that you may call.
    Tools,
    /// Prometheus metrics (admin).
    Metrics,
    /// The supervision tree.
    Tree(system::TreeArgs),
    /// Show the runtime-tunable settings, or change one (admin).
    #[command(subcommand)]
    Config(system::ConfigCmd),
    /// Stop the server gracefully (admin).
    Shutdown(system::ShutdownArgs),
}

/// A connected client and how to print.
pub(crate) struct Cmd {
    pub(crate) client: Solo,
    pub(crate) json: bool,
}

impl Cmd {
    /// Prints `v` as JSON with `--json`, else runs `human`.
    pub(crate) fn out<T: Serialize>(&self, v: &T, human: impl FnOnce(&T)) {
        if self.json {
            output::json(&serde_json::to_value(v).unwrap_or_default());
        } else {
            human(v);
        }
    }
}

/// Runs a client command on a fresh runtime.
pub fn run(g: &Global, cmd: ClientCmd) -> anyhow::Result<()> {
    let profile = g.profile()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        let client = profile.open().await?;
        let c = Cmd {
            client,
            json: g.json,
        };
        match cmd {
            ClientCmd::Deploy(a) => services::deploy(&c, a).await,
            ClientCmd::List(a) => services::list(&c, a).await,
            ClientCmd::Status(a) => services::status(&c, a).await,
            ClientCmd::Call(a) => services::call(&c, a).await,
            ClientCmd::Cast(a) => services::cast(&c, a).await,
            ClientCmd::Swap(a) => services::swap(&c, a).await,
            ClientCmd::Kill(a) => services::kill(&c, a).await,
            ClientCmd::Logs(a) => services::logs(&c, a).await,
            ClientCmd::Watch(a) => events::watch(&c, a).await,
            ClientCmd::Events(a) => events::events(&c, a).await,
            ClientCmd::Secrets(s) => secrets::run(&c, s).await,
            ClientCmd::Caps(s) => caps::run(&c, s).await,
            ClientCmd::Egress(s) => egress::run(&c, s).await,
            ClientCmd::Register(a) => system::register(&c, a).await,
            ClientCmd::Deregister(a) => system::deregister(&c, a).await,
            ClientCmd::Discover(a) => system::discover(&c, a).await,
            ClientCmd::Health => system::health(&c).await,
            ClientCmd::Whoami => system::whoami(&c).await,
            ClientCmd::Tools => system::tools(&c).await,
            ClientCmd::Metrics => system::metrics(&c).await,
            ClientCmd::Tree(a) => system::tree(&c, a, &profile).await,
            ClientCmd::Config(s) => system::config(&c, s).await,
            ClientCmd::Shutdown(a) => system::shutdown(&c, a).await,
        }
    })
}

/// A refusal the CLI makes itself, before asking the server.
pub(crate) fn refuse(reason: &str, message: impl Into<String>) -> anyhow::Error {
    Failure::invalid(reason, message).into()
}

/// Checks that `text` is JSON.
pub(crate) fn check_json(what: &str, text: &str) -> anyhow::Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| {
            refuse(
                "invalid_json",
                format!("the {what} is not JSON: {e} (argument {text:?})"),
            )
        })
}

pub(crate) fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Failure::invalid("file_unreadable", format!("read {}: {e}", path.display())).into()
    })
}

pub(crate) fn data_dir(g: &Global) -> PathBuf {
    g.data_dir
        .clone()
        .or_else(|| std::env::var_os("SOLO_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./solo-data"))
}

/// Any error of a command as the failure every face reports.
pub fn failure_of(e: &anyhow::Error) -> Failure {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return f.clone();
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return c.failure();
    }
    Failure::new(Code::Internal, "client_error", format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// clap's own consistency check of the whole command line (duplicate ids, ...).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_a_help_line() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&crate::Cli::command(), "solo", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }

    /// The global options are listed under their own heading, not among each command's.
    #[test]
    fn global_options_have_their_own_heading() {
        use clap::CommandFactory;
        let mut cmd = crate::Cli::command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("deploy")
            .unwrap()
            .render_help()
            .to_string();
        let (own, global) = help.split_once("Global options:").unwrap();
        assert!(
            own.contains("--memory-mb") && !own.contains("--endpoint"),
            "{help}"
        );
        assert!(
            global.contains("--endpoint") && global.contains("--json"),
            "{help}"
        );
    }

    /// Positional arguments must not share an id with a global flag (a revoked token
    /// would otherwise become the caller's credentials).
    #[test]
    fn positionals_do_not_alias_global_flags() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["solo", "caps", "revoke", "solo_x"]).unwrap();
        assert_eq!(cli.global.token, None);
        let cli = crate::Cli::try_parse_from(["solo", "certs", "issue", "alice"]).unwrap();
        assert_eq!(cli.global.tenant, None);
        let cli =
            crate::Cli::try_parse_from(["solo", "config", "set", "limits.max_total", "5"]).unwrap();
        assert_eq!(cli.global.key, None);
        let cli = crate::Cli::try_parse_from([
            "solo", "--token", "t", "caps", "verify", "solo_x", "events", "read",
        ])
        .unwrap();
        assert_eq!(cli.global.token.as_deref(), Some("t"));
    }

    #[test]
    fn failures_have_one_shape() {
        let f = failure_of(&refuse("invalid_json", "no"));
        assert_eq!(
            (f.code, f.reason.as_str()),
            (Code::InvalidArgument, "invalid_json")
        );
        let f = failure_of(&anyhow::anyhow!("odd"));
        assert_eq!(f.reason, "client_error");
    }
}
